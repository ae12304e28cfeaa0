/*
 * store.h - citizen accounts kept in Redis: the data layout and every
 * operation on it. Shared by the `redis` account plugin (sesame_redis.so)
 * and the `sesame-accounts` tool, which both link this file. It uses
 * synchronous hiredis calls: callers run it on worker threads or in tools.
 *
 * Layout (P = the `prefix` option, T = tenant, ID = account id, H(...) =
 * keyed hash, see "Encryption" below):
 *   P acct:T:id:ID        hash   the account: id, created (unix s), origin
 *                                (import|created), linked (unix s of the last
 *                                link); imported records also hold homonym
 *                                and pivot (keyed hashes of the homonym key
 *                                and of the full pivot key,
 *                                account/normalize.h) and data: the sealed
 *                                JSON of the personal data as the commune
 *                                wrote it (family_name, given_name,
 *                                birthdate, birthplace, birthcountry) and of
 *                                the attributes released to upstreams.
 *                                Accounts created at sign-in hold no
 *                                personal data: the sub link is all they need.
 *   P acct:T:subs:ID      hash   links: field "PROVIDER:" H(sub) -> the sealed
 *                                sub of that provider
 *   P acct:T:sub:HS       string ID (the sub index), HS = H(provider, sub)
 *   P acct:T:group:HH     set    ids of imported accounts whose homonym key
 *                                (normalised names + birthdate) hashes to HH
 *   P acct:T:created      zset   every ID of the tenant, scored by its
 *                                creation time (unix s)
 *   P acct:T:signin       zset   IDs scored by their last sign-in (unix s),
 *                                written by every resolve that finds, links
 *                                or creates the account
 *   P acct:T:key          string a check value of the key (a keyed hash),
 *                                stored by the first write: with another
 *                                key_file, resolve and the tool refuse to
 *                                work instead of finding nobody (and creating
 *                                a second account for everyone)
 * Names, birth data, attributes and subs never appear in clear, neither in
 * key names nor in values. Tenants are separate namespaces: nothing is
 * shared between them, and the keyed hashes include the tenant, so the same
 * person has unrelated hashes in two communes.
 *
 * Encryption: the `key_file` option names a file whose first line holds at
 * least 32 characters of secret. Two keys are derived from it with
 * HMAC-SHA256: an AES-256-GCM key for sealed values, stored as
 * base64url(version 1 || nonce (12) || ciphertext || tag (16)) with the
 * Redis key name and field as additional data (a value moved elsewhere does
 * not open), and an HMAC-SHA256 key for the index hashes (hex), so that a
 * Redis dump cannot be searched with a list of names, birthdates or subs.
 * Lookups (by sub, by pivot) compute the keyed hash and never decrypt
 * anything but the one record found. The key cannot be rotated in place:
 * the hashes depend on it (import again under a new key).
 *
 * Sessions (owned by the session module, S = its prefix; the layout is in
 * gateway/session/session.h):
 *   S s:HASH                the session; S a:T:ID a set of its HASHes;
 *   S at:T:ID               the territory trees the account has sessions in,
 *   S a:@tree:TREE          the HASHes of a tree's sessions (every commune);
 *   erasure and revocation DEL each S s:HASH of the account and of its
 *   trees, and the sets, and PUBLISH each HASH on "S revoked".
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
 * Whenever an account is returned, its last sign-in is set to now.
 *
 * Records of the previous layout (clear names, SHA-256 indexes) are not
 * read: this is the first release with accounts, an import is redone.
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

/* Keys derived from key_file (see "Encryption"). */
#define SESAME_STORE_KEY_MIN 32   /* characters of secret in key_file, at least */
struct sesame_store_keys {
    unsigned char seal[32];   /* AES-256-GCM */
    unsigned char index[32];  /* HMAC-SHA256 of the index hashes */
    bool set;
};

/* The plugin's options (also the tool's), all owned. */
struct sesame_store_options {
    struct sesame_store_server server;
    char *prefix;          /* default "sesame:" */
    char *session_prefix;  /* default: prefix */
    bool match_pivot;      /* match = pivot */
    enum sesame_store_policy policy;
    size_t max_idle;       /* idle connections kept by the plugin */
    struct sesame_store_keys keys; /* key_file; every account operation needs it */
};

/* Parses "host:port", "[v6]:port", "host" (port 6379), "/unix/path" or
 * "unix:/unix/path" into
 * srv (host/port/unix_path replaced). Returns SESAME_OK or SESAME_ERROR. */
int sesame_store_parse_address(struct sesame_store_server *srv, const char *text, char **err);

/* Reads a secret: the first line of the file, without its line end,
 * 1..512 bytes. Returns a malloc'd string or NULL with *err. */
char *sesame_store_read_secret(const char *path, char **err);

/* Reads key_file (first line, at least SESAME_STORE_KEY_MIN characters)
 * and derives the keys into k. Returns SESAME_OK or SESAME_ERROR with *err
 * (never the key). */
int sesame_store_load_key(struct sesame_store_keys *k, const char *path, char **err);

/* Fills o from the options of an `[accounts NAME]` section:
 *   key_file = PATH                     (the records' key, see "Encryption";
 *                                        the plugin refuses to start without
 *                                        it: sesame_store_options_check)
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

/* SESAME_OK when o can serve accounts (a key is loaded), else SESAME_ERROR
 * with *err saying how to make a key. */
int sesame_store_options_check(const struct sesame_store_options *o, char **err);

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

/* Validates every record (pivot fields; the birthdate a calendar date, not
 * in the future, "00" accepted for an unknown day or month and day as the
 * INSEE writes them; id and attribute syntax; duplicate ids and persons in
 * the batch; ids and persons - same normalised pivot identity - already in
 * Redis) and, only if all are valid, writes them in one MULTI/EXEC
 * transaction guarded by WATCH (nothing is written if one record is bad or
 * if a record or a person appeared meanwhile). On success, ids[i] receives
 * the (given or generated) id of recs[i], malloc'd; ids must hold n
 * pointers. Returns SESAME_OK, or SESAME_ERROR with *err listing every bad
 * record, one per line: "line N: message". Messages never hold a name or a
 * date. */
int sesame_store_import(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                        const struct sesame_store_import *recs, size_t n, char **ids, char **err);

/* Checks a birthdate as the import does (see sesame_store_import) against
 * today's date. Returns NULL when valid, else a static message. */
const char *sesame_store_birthdate_problem(const char *date);

/* An account as stored, decrypted (for display). Every string is owned. */
struct sesame_store_account {
    char *id;
    char *origin;                     /* "import" or "created" */
    int64_t created;                  /* unix s */
    int64_t linked;                   /* unix s of the last link, 0: never */
    int64_t last_signin;              /* unix s, 0: never */
    struct sesame_plugin_kv *fields;  /* personal data of an imported citizen, in
                                         this order: family_name, given_name,
                                         birthdate, birthplace, birthcountry */
    size_t nfields;
    char **links;                     /* "PROVIDER:SUB" */
    size_t nlinks;
    struct sesame_plugin_kv *attrs;
    size_t nattrs;
};

/* The value of field `name` of a->fields, NULL when absent. */
const char *sesame_store_account_field(const struct sesame_store_account *a, const char *name);

/* Reads and decrypts an account. Returns SESAME_OK, SESAME_DECLINED when it
 * does not exist, or SESAME_ERROR with *err (also when a sealed value does
 * not open: another key_file). */
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

/* Erasure: deletes the record, its links, the sub index entries pointing
 * to it, its homonym group membership and its creation and sign-in scores,
 * atomically. Returns SESAME_OK, SESAME_DECLINED when there was no record
 * (the indexes are cleaned anyway), or SESAME_ERROR. */
int sesame_store_erase(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                       const char *account_id, char **err);

/* ---- listing, search and retention ---- */

/* One line of a listing. */
struct sesame_store_entry {
    char *id;
    int64_t created;      /* unix s */
    int64_t last_signin;  /* unix s, 0: never */
    char origin[16];      /* set by sesame_store_describe */
    size_t nlinks;        /* set by sesame_store_describe */
};
void sesame_store_entries_free(struct sesame_store_entry *e, size_t n);

/* Fills origin and nlinks of n entries (one round trip, nothing
 * decrypted). Returns SESAME_OK or SESAME_ERROR with *err. */
int sesame_store_describe(redisContext *c, const struct sesame_store_options *o,
                          const char *tenant, struct sesame_store_entry *e, size_t n, char **err);

enum sesame_store_order {
    SESAME_STORE_BY_LAST_SIGNIN = 0, /* most recent first, never signed in last
                                        (newest first among them) */
    SESAME_STORE_BY_CREATED,         /* newest first */
};

/* Every account of the tenant, in `order` (ties by id). *out (malloc'd,
 * sesame_store_entries_free) receives *n entries. Returns SESAME_OK or
 * SESAME_ERROR with *err. */
int sesame_store_list(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                      enum sesame_store_order order, struct sesame_store_entry **out, size_t *n,
                      char **err);

/* Imported accounts whose personal data match, decrypting the tenant's
 * records in batches (nothing is indexed by name):
 *   - name (NULL: any): normalised as for pivot matching
 *     (sesame_normalize_name: case, accents, hyphens, apostrophes); every
 *     word of it must be one of the words of the record's family and given
 *     names ("martin", "Marie MARTIN" and "marie-claire martin" all find
 *     Marie Claire Odile MARTIN);
 *   - birthdate (NULL: any): YYYY-MM-DD, equal.
 * At least one of them. *ids (malloc'd strings in a malloc'd array, in the
 * order of sesame_store_list by creation) receives *n ids. Returns SESAME_OK
 * or SESAME_ERROR with *err (a malformed query, a record that does not open). */
int sesame_store_search(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                        const char *name, const char *birthdate, char ***ids, size_t *n,
                        char **err);

/* Accounts with no sign-in since `cutoff` (unix s): last sign-in before it,
 * or never signed in and created before it. Same output as
 * sesame_store_list (oldest activity first). */
int sesame_store_inactive(redisContext *c, const struct sesame_store_options *o,
                          const char *tenant, int64_t cutoff, struct sesame_store_entry **out,
                          size_t *n, char **err);

/* sesame_store_erase, only if the account still has had no sign-in since
 * `cutoff` when the script runs (a citizen signing in meanwhile keeps the
 * account). Returns SESAME_OK when erased, SESAME_DECLINED when it was
 * active again or gone, SESAME_ERROR. */
int sesame_store_erase_inactive(redisContext *c, const struct sesame_store_options *o,
                                const char *tenant, const char *account_id, int64_t cutoff,
                                char **err);

/* The hashes of an account's sessions (S a:T:ID), for reading their
 * records. *hashes (malloc'd strings in a malloc'd array) receives *n.
 * Returns SESAME_OK or SESAME_ERROR. */
int sesame_store_session_hashes(redisContext *c, const char *session_prefix, const char *tenant,
                                const char *account_id, char ***hashes, size_t *n, char **err);

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
