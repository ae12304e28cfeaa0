/*
 * session.h - citizen sessions stored in Redis, one store per worker.
 *
 * Session id: 32 bytes from the CSPRNG; the cookie carries them as 43
 * base64url characters. A new id is issued at every login (the previous
 * session, if any, is destroyed in the same transaction).
 *
 * Storage: the Redis key is conf->redis.prefix + "s:" + hex(SHA-256(raw id)),
 * so a Redis dump yields no usable cookie. The value is
 *     version (1) || key id (1) || nonce (12) || AES-256-GCM ciphertext || tag (16)
 * with a fresh random nonce at every write and the Redis key as additional
 * authenticated data (a value moved to another key does not open).
 *
 * Keys. A session record (version 2) is sealed under a key of its own,
 *     HMAC-SHA256(conf->session.secret, "sesame session v2" || raw id),
 * derived from both the server secret and the cookie: Redis holds only
 * SHA-256(raw id), so a Redis dump plus the secret file decrypts no session;
 * the cookie is needed as well. Pending logins and hop tickets (version 1,
 * short-lived, sesame_session_seal) are sealed under the secret itself. The
 * key id byte is derived from the server secret in both cases;
 * conf->session.previous_secret is also accepted for reading during a key
 * rotation. Revocation and erasure need no decryption: they delete keys
 * through the account index. A session value of version 1 (written before
 * records had their own key) is refused and deleted when presented.
 *
 * The plaintext is compact JSON with one-letter names, followed (when there
 * is one) by a newline and the raw ID token. A value that fails to open is
 * "no session" (logged at warn, without the key or the value).
 *
 * Expiry: a session ends when now - last_seen > inactivity_timeout or when
 * now >= expires (absolute, at most created + max_lifetime). last_seen is
 * written back at most once per touch_interval (SET ... XX, so a write-back
 * never resurrects a destroyed session); the Redis TTL is always
 * min(inactivity_timeout, expires - now), so nothing outlives its session.
 * The effective inactivity limit thus lies between inactivity_timeout -
 * touch_interval and inactivity_timeout.
 *
 * Revocation: each account has an index key, prefix + "a:" + tenant + ":" +
 * account, holding the hashes of its sessions (expiring with max_lifetime).
 * destroy and revoke_account delete the sessions in Redis and PUBLISH their
 * hashes on prefix + "revoked".
 *
 * Trees (territories, gate/hop.h): a session signed in at a territory gets a
 * random tree id (record field `tree`); every member-tenant session derived
 * from it records the same tree id and the id of that territory session
 * (`parent`, the cookie id, inside the encrypted record). The layout of the
 * session keys, all under prefix P (in one place: plugins/redis/store.c,
 * which revokes sessions from sesame-accounts, follows it):
 *   P s:HASH               the sealed record of the session whose cookie id
 *                          hashes to HASH (hex SHA-256 of the raw id)
 *   P a:TENANT:ACCOUNT     set of the HASHes of an account's sessions
 *   P a:@tree:TREE         set of the HASHes of the sessions of a tree (the
 *                          territory session and every session derived
 *                          from it, on every member tenant)
 *   P at:TENANT:ACCOUNT    set of the TREE ids of an account's sessions that
 *                          belong to a tree (for admin revocation: revoking
 *                          an account of a member tenant ends each tree)
 *   P l:SHA256(state)      a pending login, hop or territory ticket (login_put)
 *   P revoked              the pub/sub channel of revoked HASHes
 * create adds a session with a tree to a:@tree:TREE and at:TENANT:ACCOUNT
 * (PEXPIRE max_lifetime, like a:), destroy removes it from a:@tree:TREE;
 * sesame_session_revoke_account(st, "@tree", TREE) ends a whole tree on every
 * instance (it publishes the revocations). Entries of sessions that ended
 * otherwise stay until the set expires; they name nothing.
 *
 * In-process cache (conf->session.cache_ttl_ms > 0): decoded records, at most
 * SESAME_SESSION_CACHE_MAX entries (least recently used evicted), each kept at
 * most cache_ttl_ms. It is consulted only while the pub/sub subscription to
 * the "revoked" channel is active, entries are evicted when their hash is
 * published there, and it is flushed whole each time the subscription is
 * (re)made. Revocation bound: effective on every instance as soon as the
 * PUBLISH is delivered (immediate in practice); at worst cache_ttl_ms after
 * the deletion in Redis (a message lost on a connection that has not been
 * noticed dead yet). With the cache off, revocation is immediate.
 *
 * Operations follow the return convention of core/common.h: SESAME_AGAIN
 * means the callback will report the result (exactly once, from the event
 * loop, never from inside the call) unless sesame_session_cancel is called
 * first; any other return value means no callback. In callbacks, status is
 * SESAME_OK, SESAME_DECLINED (not found) or SESAME_ERROR (Redis unavailable or
 * failed: the caller answers 503 and sets no cookie).
 *
 * A store belongs to one worker thread and is used only from it.
 */
#ifndef SESAME_SESSION_SESSION_H
#define SESAME_SESSION_SESSION_H

#include <jansson.h>

#include "config/config.h"
#include "core/common.h"
#include "session/redis.h"

/* Characters of a session id in a cookie (base64url of 32 bytes). */
#define SESAME_SESSION_ID_LEN 43
/* Bytes of a Cookie header examined, and cookies examined, at most. */
#define SESAME_SESSION_COOKIE_SCAN_MAX 8192
#define SESAME_SESSION_COOKIE_COUNT_MAX 64
/* Largest stored value accepted, in bytes. */
#define SESAME_SESSION_VALUE_MAX (64 * 1024)
/* Largest number of records kept by a worker's cache. */
#define SESAME_SESSION_CACHE_MAX 10000
/* Largest number of sessions revoked by one revoke_account call. */
#define SESAME_SESSION_REVOKE_MAX 10000

/* A session record. Strings and JSON objects are owned by the record.
 * Records are reference-counted (not atomically: a record stays on the worker
 * thread that made or loaded it). A record returned by load may be shared
 * with the cache and must be treated as read-only (the store itself updates
 * last_seen_ms). */
struct sesame_session {
    int refs;
    char *tenant;            /* tenant name */
    char *account;           /* account id */
    char *provider;          /* provider name, may be NULL */
    char *acr;               /* may be NULL */
    int64_t created_ms;      /* wall clock, ms since the epoch */
    int64_t last_seen_ms;
    int64_t expires_ms;      /* absolute end */
    char *id_token;          /* for logout (id_token_hint), may be NULL */
    json_t *claims;          /* object of the kept claims, may be NULL */
    json_t *attributes;      /* object from the account plugin, may be NULL */
    char *tree;              /* territories: the tree id (43 base64url characters),
                                NULL: none */
    char *parent;            /* a session derived from a territory session: that
                                session's cookie id; NULL otherwise */
};

/* A new, empty record with one reference. */
struct sesame_session *sesame_session_new(void);
/* Adds a reference; returns s. */
struct sesame_session *sesame_session_ref(struct sesame_session *s);
/* Drops a reference; frees the record with the last one. Accepts NULL. */
void sesame_session_free(struct sesame_session *s);

/* ---- pure helpers (no I/O) ---- */

/* Checks a cookie id (exactly SESAME_SESSION_ID_LEN canonical base64url
 * characters) and derives its Redis key, prefix + "s:" + hex(SHA-256(raw)),
 * into key (keysize bytes, NUL-terminated) and, if hash is not NULL, the raw
 * SHA-256 into hash. Returns SESAME_OK, SESAME_DECLINED for an invalid id, or
 * SESAME_ERROR when key is too small. */
int sesame_session_key(const char *prefix, const char *cookie_id, char *key, size_t keysize,
                       unsigned char hash[32]);

/* Serialises a record: compact JSON, then "\n" and the ID token when there is
 * one (malloc'd, NUL-terminated, *len bytes). Returns NULL when tenant or
 * account is missing, or the ID token is not printable ASCII. */
char *sesame_session_serialize(const struct sesame_session *s, size_t *len);
/* Parses what sesame_session_serialize wrote. Returns a new record (one
 * reference) or NULL for anything malformed. */
struct sesame_session *sesame_session_parse(const char *json, size_t len);

/* Encrypts `plain` under conf->secret with `aad` as additional data (version
 * 1: pending logins, hop tickets; never session records). Stores a malloc'd
 * value in *out. Returns SESAME_OK or SESAME_ERROR. */
int sesame_session_seal(const struct sesame_conf_session *conf, const void *aad, size_t aadlen,
                        const void *plain, size_t plainlen, unsigned char **out, size_t *outlen);
/* Decrypts and authenticates a value written by sesame_session_seal under the
 * current or the previous secret, with the same aad. Stores a malloc'd,
 * NUL-terminated plaintext in *plain. Returns SESAME_OK, or SESAME_DECLINED
 * for a value that does not open (tampered, other key, other aad, unknown
 * version, too short or too long). */
int sesame_session_open(const struct sesame_conf_session *conf, const void *aad, size_t aadlen,
                        const unsigned char *in, size_t inlen, char **plain, size_t *plainlen);

/* Seals a session record for the cookie id `cookie_id` (version 2: under
 * the key HMAC-SHA256(conf->secret, "sesame session v2" || raw id)), with
 * `aad` (the Redis key) as additional data. Returns SESAME_OK with a malloc'd
 * value in *out, or SESAME_ERROR (invalid cookie id, too long). */
int sesame_session_record_seal(const struct sesame_conf_session *conf, const char *cookie_id,
                               const void *aad, size_t aadlen, const void *plain, size_t plainlen,
                               unsigned char **out, size_t *outlen);
/* Opens what sesame_session_record_seal wrote for the same cookie id and aad,
 * under the key derived from the current or the previous secret. Returns
 * SESAME_OK with a malloc'd, NUL-terminated plaintext in *plain, or
 * SESAME_DECLINED (another cookie, tampered, other secret, other aad, a value
 * of sesame_session_seal, invalid cookie id). */
int sesame_session_record_open(const struct sesame_conf_session *conf, const char *cookie_id,
                               const void *aad, size_t aadlen, const unsigned char *in,
                               size_t inlen, char **plain, size_t *plainlen);

/* Finds the cookie `name` in a Cookie header value of `len` bytes (not
 * necessarily NUL-terminated). Examines at most SESAME_SESSION_COOKIE_SCAN_MAX
 * bytes (a pair cut by that limit is ignored) and
 * SESAME_SESSION_COOKIE_COUNT_MAX pairs. Pairs without '=' and values that are
 * not exactly SESAME_SESSION_ID_LEN canonical base64url characters are
 * ignored; the same name with two different valid values is ambiguous.
 * Returns SESAME_OK with the value copied into out (NUL-terminated), or
 * SESAME_DECLINED (absent, invalid or ambiguous; out is then ""). */
int sesame_session_cookie_find(const char *header, size_t len, const char *name,
                               char out[SESAME_SESSION_ID_LEN + 1]);

/* Builds a Set-Cookie header value into buf (cap bytes, NUL-terminated):
 *   name=value; Path=/; Max-Age=N; HttpOnly; SameSite=Lax[; Secure][; Domain=D]
 * Secure unless tenant->cookie_secure is false; Domain when
 * tenant->cookie_domain is set. With tenant->session_cookie
 * SESAME_COOKIE_BROWSER there is no Max-Age (and max_age_s is ignored): the
 * cookie ends with the browser. value NULL deletes the cookie (empty value,
 * Max-Age=0, in both modes). Returns SESAME_OK, or SESAME_ERROR when buf is too small or the
 * name, value or domain holds a character not allowed there. */
int sesame_session_set_cookie_header(char *buf, size_t cap, const char *name, const char *value,
                                     const struct sesame_conf_tenant *tenant, int64_t max_age_s);

/* Browser binding for pending logins: reuses the value of cookie `name` when
 * the header holds a valid one (so concurrent tabs share it), else makes a new
 * random one (*created = true: the caller sets the cookie). Returns SESAME_OK
 * or SESAME_ERROR (CSPRNG failure). */
int sesame_session_binding(const char *cookie_header, size_t len, const char *name,
                           char out[SESAME_SESSION_ID_LEN + 1], bool *created);

/* ---- the store ---- */

struct sesame_session_store;
struct sesame_session_op;

/* `redis` and `conf` are borrowed and must outlive the store. When the cache
 * is on, subscribes to prefix + "revoked" on `redis`. Returns NULL when the
 * configuration cannot be used. */
struct sesame_session_store *sesame_session_store_new(struct sesame_redis *redis,
                                                      const struct sesame_conf *conf);
/* Cancels every outstanding operation (no callback) and frees the store.
 * Must not be called from inside one of its callbacks. Accepts NULL. */
void sesame_session_store_free(struct sesame_session_store *st);

/* Replaces the wall clock (ms since the epoch) used for session times; for
 * tests. NULL restores the real clock. */
void sesame_session_store_set_clock(struct sesame_session_store *st,
                                    int64_t (*now_ms)(void *arg), void *arg);

/* Number of records in the cache (for tests and statistics). */
size_t sesame_session_cache_count(const struct sesame_session_store *st);

typedef void (*sesame_session_load_cb)(int status, struct sesame_session *s, void *arg);
typedef void (*sesame_session_create_cb)(int status, const char *cookie_id, void *arg);
typedef void (*sesame_session_done_cb)(int status, void *arg);
typedef void (*sesame_session_count_cb)(int status, size_t count, void *arg);
typedef void (*sesame_session_take_cb)(int status, json_t *blob, void *arg);

/* Loads the session of `cookie_id` for `tenant`. Returns
 *   SESAME_OK: found in the cache, *out holds a reference for the caller;
 *   SESAME_DECLINED: no session (invalid id, other tenant, expired);
 *   SESAME_AGAIN: *op is set, cb(status, s, arg) follows; on SESAME_OK, s is
 *     a reference the callback owns (sesame_session_free), else NULL.
 * A session of another tenant is never returned. An expired session is
 * deleted. A due last-seen write-back is sent without waiting for it. */
int sesame_session_load(struct sesame_session_store *st, const char *cookie_id, const char *tenant,
                        sesame_session_load_cb cb, void *arg, struct sesame_session **out,
                        struct sesame_session_op **op);

/* Stores `s` (tenant and account required) under a new id, with
 * created_ms = last_seen_ms = now and expires_ms = min(s->expires_ms if set,
 * now + max_lifetime); these fields of s are updated. When previous_id is a
 * valid id, that session is destroyed in the same transaction. All or
 * nothing: on SESAME_ERROR nothing was stored and no cookie must be set.
 * Returns SESAME_AGAIN (cb gets the new cookie id, valid during the call) or
 * SESAME_ERROR. Takes a reference on s for the cache: s must not be modified
 * afterwards. */
int sesame_session_create(struct sesame_session_store *st, struct sesame_session *s,
                          const char *previous_id, sesame_session_create_cb cb, void *arg,
                          struct sesame_session_op **op);

/* Destroys a session (GETDEL + PUBLISH, then its index entry). Returns
 * SESAME_AGAIN, or SESAME_DECLINED when cookie_id is not a valid id. */
int sesame_session_destroy(struct sesame_session_store *st, const char *cookie_id,
                           sesame_session_done_cb cb, void *arg, struct sesame_session_op **op);

/* Destroys every session of an account of a tenant (at most
 * SESAME_SESSION_REVOKE_MAX per call); cb gets how many were listed. Returns
 * SESAME_AGAIN, or SESAME_ERROR for an empty or oversized tenant or account. */
int sesame_session_revoke_account(struct sesame_session_store *st, const char *tenant,
                                  const char *account, sesame_session_count_cb cb, void *arg,
                                  struct sesame_session_op **op);

/* Pending logins, keyed by the OIDC state (22 to 128 base64url characters).
 * put stores `blob` (serialised, encrypted) for ttl_ms, refusing to overwrite
 * an existing state; take reads and deletes it in one step (GETDEL: single
 * use), cb gets a new reference to the blob or NULL. Both return SESAME_AGAIN
 * or SESAME_ERROR (invalid state or blob). */
int sesame_session_login_put(struct sesame_session_store *st, const char *state,
                             const json_t *blob, uint64_t ttl_ms, sesame_session_done_cb cb,
                             void *arg, struct sesame_session_op **op);
int sesame_session_login_take(struct sesame_session_store *st, const char *state,
                              sesame_session_take_cb cb, void *arg, struct sesame_session_op **op);

/* Cancels an operation whose callback has not run: it never will. */
void sesame_session_cancel(struct sesame_session_op *op);

#endif
