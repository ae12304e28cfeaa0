/*
 * store.h - citizen accounts kept in Redis: the data layout and every
 * operation on it. Shared by the `redis` account plugin (sesame_redis.so)
 * and the `sesame-accounts` tool, which both link this file. It uses
 * synchronous hiredis calls: callers run it on worker threads or in tools.
 *
 * Layout (P = the `prefix` option, T = tenant, ID = account id):
 *   P acct:T:id:ID          hash   the account record: id, created (unix s),
 *                                  origin (import|created), linked (unix s of
 *                                  the last link); imported records also
 *                                  hold family_name, given_name, birthdate,
 *                                  birthplace, birthcountry (as the commune
 *                                  wrote them), homonym, pivot. Accounts
 *                                  created at sign-in hold no personal data:
 *                                  the sub link is all they need.
 *   P acct:T:attrs:ID       hash   attributes released to upstreams
 *   P acct:T:subs:ID        set    linked identities "PROVIDER:SUB"
 *   P acct:T:sub:PROVIDER:SUB string ID (the sub index)
 *   P acct:T:group:H        set    ids of imported accounts whose homonym
 *                                  key (normalised names + birthdate) hashes
 *                                  to H (SHA-256 hex)
 * "homonym" and "pivot" in the record are SHA-256 hex of the homonym key and
 * of the full pivot key (account/normalize.h): names never appear in key
 * names. Tenants are separate namespaces: nothing is shared between them.
 * Sessions (owned by the session module, S = its prefix):
 *   S s:HASH                the session; S a:T:ID a set of its HASHes;
 *   erasure DELs each S s:HASH and the set, and PUBLISHes each HASH on
 *   "S revoked".
 *
 * Matching (sesame_store_resolve), atomically in one Lua script:
 *   1. the sub index: found -> that account;
 *   2. with match = pivot, the homonym group of the identity: exactly one
 *      imported account whose full pivot equals the identity's, and not yet
 *      linked to another sub of the same provider -> link and return it;
 *      two or more accounts in the group (homonyms, whatever their
 *      birthplaces) -> never linked automatically (an agent links by hand);
 *   3. otherwise the policy: create (new random id, sub indexed), link-only
 *      or deny (no account).
 */
#ifndef SESAME_PLUGINS_REDIS_STORE_H
#define SESAME_PLUGINS_REDIS_STORE_H

#include <hiredis/hiredis.h>
#include <sesame/plugin.h>

#include "core/common.h"

enum sesame_store_policy {
    SESAME_STORE_CREATE = 0,
    SESAME_STORE_LINK_ONLY,
    SESAME_STORE_DENY,
};

/* Where the Redis server is and how to log in. */
struct sesame_store_server {
    char *host;          /* NULL with unix_path */
    int port;
    char *unix_path;     /* NULL with host */
    char *username;      /* NULL: AUTH with the password only */
    char *password;      /* NULL: no AUTH */
    int database;
    uint64_t timeout_ms; /* connect and each command */
};

/* The plugin's options (also the tool's), all owned. */
struct sesame_store_options {
    struct sesame_store_server server;
    char *prefix;          /* default "sesame:" */
    char *session_prefix;  /* default: prefix */
    bool match_pivot;      /* match = pivot */
    enum sesame_store_policy policy;
    size_t max_idle;       /* idle connections kept by the plugin */
};

/* Parses "host:port", "[v6]:port", "host" (port 6379), "/unix/path" or
 * "unix:/unix/path" into
 * srv (host/port/unix_path replaced). Returns SESAME_OK or SESAME_ERROR. */
int sesame_store_parse_address(struct sesame_store_server *srv, const char *text, char **err);

/* Reads a secret: the first line of the file, without its line end,
 * 1..512 bytes. Returns a malloc'd string or NULL with *err. */
char *sesame_store_read_secret(const char *path, char **err);

/* Fills o from the options of an `[accounts NAME]` section:
 *   address = host:port | [v6]:port | /path.sock | unix:/path.sock
 *                                       (default 127.0.0.1:6379)
 *   username = NAME, password_file = PATH, database = 0..1023
 *   timeout = DURATION                  (connect and command, default 2s)
 *   prefix = TEXT                       (default "sesame:")
 *   session_prefix = TEXT               (the sessions' prefix, default: prefix;
 *                                        the plugin's erase hook revokes
 *                                        sessions in this same Redis)
 *   match = sub | pivot                 (default sub)
 *   policy = create | link-only | deny  (default create)
 *   connections = N                     (idle connections kept, 1..64, default 4)
 * Unknown keys are errors. On error *err reads "line N: key: message".
 * o must be zeroed or freed before; on error it is left for
 * sesame_store_options_free. */
int sesame_store_options_parse(struct sesame_store_options *o, const struct sesame_plugin_option *opts,
                               size_t nopts, char **err);
void sesame_store_options_free(struct sesame_store_options *o);

/* Connects, authenticates and selects the database, with the timeouts set.
 * Returns the context or NULL with *err (never the password). */
redisContext *sesame_store_connect(const struct sesame_store_server *srv, char **err);

/* A log function with the signature of sesame_plugin_host.log (NULL: silent). */
typedef void (*sesame_store_log_fn)(enum sesame_plugin_log_level level, const char *fmt, ...)
    SESAME_PRINTF(2, 3);

/* Resolves an identity (already checked by the host: tenant, provider, sub
 * and claims within bounds) into res, see "Matching" above.
 * Returns SESAME_OK when res holds the outcome (FOUND, NONE or a data
 * ERROR), or SESAME_ERROR when the connection failed (res holds the error;
 * the caller drops the connection). */
int sesame_store_resolve(redisContext *c, const struct sesame_store_options *o,
                         sesame_store_log_fn log, const struct sesame_plugin_identity *id,
                         struct sesame_plugin_result *res);

/* One pre-registered citizen to import (all borrowed). */
struct sesame_store_import {
    int line;                   /* source line, for messages */
    const char *family_name, *given_name, *birthdate, *birthplace, *birthcountry;
    const char *account_id;     /* NULL: a random id is generated */
    const struct sesame_plugin_kv *attrs;
    size_t nattrs;
};

/* Validates every record (pivot fields, id and attribute syntax, duplicate
 * ids in the batch, ids already in Redis) and, only if all are valid, writes
 * them in one MULTI/EXEC transaction guarded by WATCH (nothing is written if
 * one record is bad or if a record appeared meanwhile). On success, ids[i]
 * receives the (given or generated) id of recs[i], malloc'd; ids must hold n
 * pointers. Returns SESAME_OK, or SESAME_ERROR with *err listing every bad
 * record, one per line: "line N: message". */
int sesame_store_import(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                        const struct sesame_store_import *recs, size_t n, char **ids, char **err);

/* An account as stored (for display). */
struct sesame_store_account {
    struct sesame_plugin_kv *fields;  /* the record hash (owned strings) */
    size_t nfields;
    char **links;                     /* "PROVIDER:SUB" */
    size_t nlinks;
    struct sesame_plugin_kv *attrs;
    size_t nattrs;
};

/* Reads an account. Returns SESAME_OK, SESAME_DECLINED when it does not
 * exist, or SESAME_ERROR with *err. */
int sesame_store_get(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                     const char *account_id, struct sesame_store_account *out, char **err);
void sesame_store_account_free(struct sesame_store_account *a);

/* The account linked to PROVIDER:SUB. Returns SESAME_OK with a malloc'd
 * *account_id, SESAME_DECLINED when none, SESAME_ERROR with *err. */
int sesame_store_find_sub(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                          const char *provider, const char *sub, char **account_id, char **err);

/* Links PROVIDER:SUB to an existing account by hand (e.g. after homonyms
 * were refused). Fails if the account does not exist (SESAME_DECLINED) or
 * the sub is already linked to another account (SESAME_ERROR). */
int sesame_store_link(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                      const char *account_id, const char *provider, const char *sub, char **err);

/* Removes every link (sub index entries and the link set) of an account,
 * keeping the account. *nlinks receives the count removed. Returns
 * SESAME_OK, SESAME_DECLINED (no such account) or SESAME_ERROR. Sessions are
 * not touched: callers revoke them (sesame_store_revoke_sessions) on the
 * sessions' server. Note: an imported account is linked again by pivot at
 * the person's next sign-in when match = pivot. */
int sesame_store_unlink(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                        const char *account_id, size_t *nlinks, char **err);

/* Erasure: deletes the record, its attributes, its links, the sub index
 * entries pointing to it and its homonym group membership, atomically.
 * Returns SESAME_OK, SESAME_DECLINED when there was no record (the indexes
 * are cleaned anyway), or SESAME_ERROR. */
int sesame_store_erase(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                       const char *account_id, char **err);

/* Revokes every session of an account (layout above, S = session_prefix),
 * atomically. *nsessions receives the count. Returns SESAME_OK or
 * SESAME_ERROR. */
int sesame_store_revoke_sessions(redisContext *c, const char *session_prefix, const char *tenant,
                                 const char *account_id, size_t *nsessions, char **err);

/* Number of sessions in the account's session index. */
int sesame_store_count_sessions(redisContext *c, const char *session_prefix, const char *tenant,
                                const char *account_id, long long *n, char **err);

/* Syntax checks shared with the tool. */
bool sesame_store_account_id_ok(const char *s);
bool sesame_store_name_ok(const char *s); /* tenant and provider names */

#endif
