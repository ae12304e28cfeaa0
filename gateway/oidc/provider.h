/*
 * provider.h - the runtime of one configured OpenID Connect provider: its
 * metadata (discovery or explicit endpoints), its signing keys (JWKS), and
 * the relying-party operations of the authorization code flow: authorize
 * URL, code exchange, ID token and userinfo validation, end-session URL.
 *
 * Sharing. A runtime (struct sesame_provider) is shared by every worker
 * thread and reference-counted. Its settings are copied from the
 * configuration when it is built and never change; what it fetches
 * (metadata, key set) is held as immutable snapshots swapped under a mutex.
 * Runtimes live in a process-wide registry keyed by provider name that
 * survives configuration reloads (sesame_provider_registry_get).
 *
 * Asynchrony. Every network call goes through the caller's sesame_httpc
 * (the worker's own, see httpc.h): nothing blocks. The asynchronous
 * operations (ensure, exchange, validate) return a handle that can be
 * cancelled, and call their callback exactly once otherwise, on the thread
 * of that httpc's event base, from its event loop (never from inside the
 * starting call). Operations of several workers that need the same fetch
 * (metadata, JWKS) share it: the fetch runs on the httpc of the worker that
 * started it and the others are woken through their own event base, which
 * requires evthread_use_pthreads() to have been called before the event
 * bases were created (the daemon does it in main).
 *
 * Metadata. With `discovery on`, the document at
 * ISSUER/.well-known/openid-configuration is fetched; it is refused unless
 * it is a JSON object (no duplicate names) whose "issuer" equals the
 * configured issuer byte for byte and whose endpoints (authorization, token,
 * jwks_uri required; userinfo and end_session optional) are absolute https
 * URLs with a host, without fragment, spaces or control characters.
 * Endpoints given explicitly in the configuration override the document's.
 * Metadata and keys are refreshed in the background (oidc/refresher.h,
 * sesame_provider_upkeep) at 75 to 90 % of discovery_refresh, at random;
 * an operation that still finds them older than discovery_refresh (no
 * refresher, or it failed) waits for a refetch. When a refresh fails the
 * last good copy stays in use (a warning is logged) and the next attempt
 * waits min(discovery_refresh, 60 s).
 *
 * Keys. The JWKS at jwks_uri is parsed by sesame_jose_keyset_parse. A token
 * signed with an unknown kid causes one JWKS refetch (shared by concurrent
 * operations, and at most one per jwks_refetch_interval per runtime), then
 * one retry; after that the token is refused.
 *
 * Nothing here logs tokens, codes, secrets or claims; error texts name the
 * failed check only.
 */
#ifndef SESAME_OIDC_PROVIDER_H
#define SESAME_OIDC_PROVIDER_H

#include <jansson.h>

#include "config/config.h"
#include "core/common.h"
#include "oidc/httpc.h"
#include "oidc/jose.h"

struct sesame_provider;    /* a provider runtime, shared, refcounted */
struct sesame_provider_op; /* one asynchronous operation in flight */

/* Why an operation failed. */
enum sesame_provider_status {
    SESAME_PROVIDER_OK = 0,
    SESAME_PROVIDER_UNAVAILABLE,       /* unreachable, TLS failure, timeout, HTTP 5xx, or no
                                          usable metadata / keys */
    SESAME_PROVIDER_REJECTED,          /* the token endpoint refused the request (HTTP 4xx:
                                          invalid_grant, invalid_client...) */
    SESAME_PROVIDER_BAD_RESPONSE,      /* an answer of the wrong shape: not JSON, wrong
                                          Content-Type, missing field, token_type not Bearer */
    SESAME_PROVIDER_INVALID_TOKEN,     /* the ID token failed decryption, signature or claims */
    SESAME_PROVIDER_UNKNOWN_KEY,       /* signed with a kid unknown even after the refetch
                                          (or the refetch was rate-limited) */
    SESAME_PROVIDER_ACR_TOO_LOW,       /* the acr is below the level required */
    SESAME_PROVIDER_USERINFO_INVALID,  /* userinfo refused: status, format, signature, claims */
    SESAME_PROVIDER_USERINFO_MISMATCH, /* userinfo sub differs from the ID token's */
    SESAME_PROVIDER_MISCONFIGURED,     /* the provider cannot serve: endpoint missing, key file */
};

/* Short stable name of a status ("ok", "unavailable", ...), for logs. */
const char *sesame_provider_status_name(enum sesame_provider_status st);

/* ---- Registry and runtime -------------------------------------------------- */

/* Returns a new reference (sesame_provider_unref) to the runtime of
 * provider p->name, creating or replacing it as needed:
 *   - same settings as the current runtime (every field of p compared, and
 *     the key files unchanged on disk: inode, size, mtime): that runtime;
 *   - a setting changed: a new runtime from p, which takes over the cached
 *     metadata and keys unless the issuer, client_id, discovery flag,
 *     jwks_uri or ca_file changed (then it starts empty);
 * runtimes replaced stay valid while referenced. Reads the key files
 * (private_key_file, decryption_key_files) when it builds a runtime, and
 * checks what the loader does not: the client secret or key the token_auth
 * needs, at least one signing alg (HS* alone only with a secret), explicit
 * authorization, token, jwks (and userinfo unless off) endpoints when
 * discovery is off, and authorize_params ("name=value": a name of letters,
 * digits, '_', '.', '-', not one of the parameters the gateway sets, not
 * repeated; a value whose %XX escapes are valid: it is decoded, then
 * re-encoded in the URL, so "prompt=login%20consent" sends a space).
 * Thread-safe; cheap when nothing changed (string compares and a stat() per
 * key file).
 * Returns NULL with *err set when p is unusable. */
struct sesame_provider *sesame_provider_registry_get(const struct sesame_conf_provider *p,
                                                     char **err);

/* Runs the checks sesame_provider_registry_get runs when it builds a
 * runtime (the same code: settings, authorize_params, key files loaded),
 * without touching the registry. For the load-time check (gate/runtime.c,
 * sesame -t), so that a provider that would be refused at the first sign-in
 * is refused at load. Returns SESAME_OK, or SESAME_ERROR with *err set. */
int sesame_provider_check(const struct sesame_conf_provider *p, char **err);

/* Drops the registry's references (at shutdown, after the workers stopped). */
void sesame_provider_registry_clear(void);

struct sesame_provider *sesame_provider_ref(struct sesame_provider *rt);
/* Drops a reference; the last one frees the runtime. Accepts NULL. */
void sesame_provider_unref(struct sesame_provider *rt);

/* The configured name and issuer (owned by the runtime). */
const char *sesame_provider_name(const struct sesame_provider *rt);
const char *sesame_provider_issuer(const struct sesame_provider *rt);

/* True when the runtime sends PKCE (the provider's `pkce` setting). */
bool sesame_provider_pkce(const struct sesame_provider *rt);

/* True when a copy of the metadata and of the key set is held (however old:
 * a stale copy still serves while a refresh is attempted). For readiness
 * (gate/ready.h). Thread-safe. */
bool sesame_provider_loaded(struct sesame_provider *rt);

/* ---- Availability ------------------------------------------------------------- */

/* Every HTTP call to the provider is recorded: discovery, JWKS, token,
 * userinfo, and the background probes. A call failed when no HTTP answer
 * came (refused, TLS failure, timeout) or the answer was a 5xx (for
 * discovery and JWKS also any other status than 200, or a document
 * refused); any other answer (a token endpoint 4xx included) shows that the
 * provider answers. A provider is unavailable
 *   - once its last SESAME_PROVIDER_DOWN_AFTER calls failed, or
 *   - while it holds no usable metadata and keys and the last attempt to
 *     fetch them failed;
 * and available again after the next call that succeeds. The refresher
 * probes it half a second after a first failure, and every
 * SESAME_PROVIDER_DOWN_PROBE_MS while it is unavailable, so that it comes
 * back by itself. Both transitions are logged, once (warnings); the probes
 * of a provider known to be down log at debug level only.
 * While unavailable, the sign-in page shows it as "momentanément
 * indisponible" (its "Réessayer" link starts the sign-in), and
 * <prefix>login asks the provider again (sesame_provider_ensure_available)
 * and answers the 503 provider-unavailable page (gate/flow.c) instead of
 * sending the citizen to it when it still does not answer. */
#define SESAME_PROVIDER_DOWN_AFTER 2
#define SESAME_PROVIDER_DOWN_PROBE_MS 2000u
/* Retry-After (seconds) sent with the 503 page of an unavailable provider,
 * and the delay after which the sign-in page reloads itself (Refresh). */
#define SESAME_PROVIDER_RETRY_AFTER_S 15

struct sesame_provider_health {
    bool available;     /* offered for sign-in (see above) */
    bool loaded;        /* usable metadata and keys are held (however old) */
    unsigned failures;  /* consecutive failed calls */
    int64_t changed_at; /* wall-clock seconds of the last change of `available`
                           by failures or recovery; 0: never */
    char error[256];    /* the last failure, for logs ("" after a success) */
};

/* The health of a runtime (rt NULL: available, nothing loaded).
 * Thread-safe, no I/O. */
void sesame_provider_get_health(struct sesame_provider *rt, struct sesame_provider_health *out);
bool sesame_provider_available(struct sesame_provider *rt);

/* The health of the registry's runtime of provider `name`: SESAME_OK, or
 * SESAME_DECLINED (out says available, not loaded) when there is none yet.
 * Thread-safe, no allocation but a reference, no I/O: for the sign-in page
 * and readiness (/sesame/ready). */
int sesame_provider_health(const char *name, struct sesame_provider_health *out);

/* ---- Background upkeep (oidc/refresher.h) ------------------------------------ */

/* Makes the registry hold the providers of conf: a runtime for each, as
 * sesame_provider_registry_get builds or keeps it (one that cannot be built
 * is logged and left out), and drops the runtimes of providers conf does not
 * name (they stay valid while referenced). Thread-safe. */
void sesame_provider_registry_sync(const struct sesame_conf *conf);

/* New references to every runtime of the registry in *out (malloc'd array,
 * the caller unrefs each and frees it); returns their number. */
size_t sesame_provider_registry_list(struct sesame_provider ***out);

/* Starts on httpc (the refresher's) the fetch rt needs at monotonic time
 * now_ms, unless one is in flight: the metadata and/or keys when their
 * background refresh is due, or a probe (the discovery document; the JWKS
 * without discovery) every probe_interval while it is available, sooner
 * after failures (see above). Returns when it wants to be called again
 * (monotonic ms). */
uint64_t sesame_provider_upkeep(struct sesame_provider *rt, struct sesame_httpc *httpc,
                                uint64_t now_ms);

/* The gateway's decryption keys (private, from decryption_key_files; empty
 * set when none), owned by the runtime and valid as long as the caller holds
 * its reference. Publish them with sesame_jose_keyset_export(), which writes
 * public parts only. */
const struct sesame_jose_keyset *sesame_provider_decryption_keys(const struct sesame_provider *rt);

/* Installs a discovery document (json, len bytes) / a JWKS document as if
 * just fetched, after the same checks. For start-up from a known copy and
 * for tests. Returns SESAME_OK or SESAME_ERROR with *err set (the cache is
 * then unchanged). */
int sesame_provider_set_metadata(struct sesame_provider *rt, const char *json, size_t len,
                                 char **err);
int sesame_provider_set_jwks(struct sesame_provider *rt, const char *json, size_t len, char **err);

/* ---- Operations -------------------------------------------------------------- */

/* Cancels an operation: its callback is never called. On the thread that
 * started it, not from inside its own callback. Accepts NULL. */
void sesame_provider_cancel(struct sesame_provider_op *op);

/* Called once the metadata and keys are usable (st OK, err NULL) or cannot
 * be had (st and a reason for the log). */
typedef void (*sesame_provider_ensure_cb)(void *arg, enum sesame_provider_status st,
                                          const char *err);

/* Makes sure metadata and keys are available: from the cache (the callback
 * still comes from the event loop, after this call returned), or after
 * fetching them. Returns the operation
 * handle, valid until the callback starts (never NULL when rt, httpc and cb
 * are given). */
struct sesame_provider_op *sesame_provider_ensure(struct sesame_provider *rt,
                                                  struct sesame_httpc *httpc,
                                                  sesame_provider_ensure_cb cb, void *arg);

/* The same for starting a sign-in: when rt is unavailable (see
 * Availability below), the provider is asked again first (the discovery
 * document, or the JWKS without discovery; shared with any fetch in
 * flight): the callback gets SESAME_PROVIDER_UNAVAILABLE if it still does
 * not answer, else what sesame_provider_ensure would give. */
struct sesame_provider_op *sesame_provider_ensure_available(struct sesame_provider *rt,
                                                            struct sesame_httpc *httpc,
                                                            sesame_provider_ensure_cb cb,
                                                            void *arg);

/* Returns the malloc'd authorization URL (caller frees): the authorization
 * endpoint followed by exactly response_type=code, client_id, redirect_uri,
 * scope, state, nonce, acr_values (acr_values when not NULL, else the
 * configured one; left out when both are NULL), code_challenge and
 * code_challenge_method=S256 (only when the provider has pkce on, and then
 * code_challenge is required), then the configured authorize_params; every
 * name and value percent-encoded (RFC 3986 unreserved characters kept).
 * Needs the metadata (after a successful ensure). Returns NULL with *err set
 * when it is missing or an argument is (redirect_uri, state, nonce are
 * required, each at most 4096 bytes). */
char *sesame_provider_authorize_url(struct sesame_provider *rt, const char *redirect_uri,
                                    const char *state, const char *nonce, const char *acr_values,
                                    const char *code_challenge, char **err);

/* Returns the malloc'd S256 code challenge of a PKCE verifier
 * (base64url(SHA-256(verifier)), unpadded), or NULL when verifier is not
 * 43..128 characters of [A-Za-z0-9-._~] (RFC 7636). */
char *sesame_provider_pkce_challenge(const char *verifier);

/* Returns the malloc'd end-session URL with the given parameters (each left
 * out when NULL), or NULL when the provider has no end_session_endpoint (or
 * its metadata was never obtained). */
char *sesame_provider_end_session_url(struct sesame_provider *rt, const char *id_token_hint,
                                      const char *state, const char *post_logout_redirect_uri);

/* The token endpoint's answer. */
struct sesame_provider_tokens {
    const char *id_token;     /* compact JWS or JWE */
    const char *access_token; /* printable ASCII without spaces */
    const char *token_type;   /* "Bearer" in any case */
    int64_t expires_in;       /* seconds; -1 when absent */
};

/* A token request as sent: form body and, for client_secret_basic, the
 * Authorization header line. */
struct sesame_provider_token_request {
    char *body;          /* application/x-www-form-urlencoded */
    char *authorization; /* "Authorization: Basic ..." or NULL */
};

/* Builds the token request for `code`: grant_type=authorization_code, code,
 * redirect_uri (byte-identical to the authorize one), code_verifier (when
 * not NULL), and the client authentication of token_auth:
 *   client_secret_post  client_id and client_secret in the form;
 *   client_secret_basic "Authorization: Basic base64(enc(id):enc(secret))"
 *                       with enc the form encoding; client_id not in the form;
 *   private_key_jwt     client_id, client_assertion_type
 *                       (urn:ietf:params:oauth:client-assertion-type:jwt-bearer)
 *                       and client_assertion: a JWT with iss = sub =
 *                       client_id, aud = the token endpoint, a random jti, iat
 *                       = now, exp = now + 60, signed with private_key_file.
 * Needs the metadata (token endpoint). Fills *out (free with
 * sesame_provider_token_request_clear) and returns SESAME_OK, or
 * SESAME_ERROR with *err set. */
int sesame_provider_token_request(struct sesame_provider *rt, const char *code,
                                  const char *redirect_uri, const char *code_verifier,
                                  struct sesame_provider_token_request *out, char **err);
void sesame_provider_token_request_clear(struct sesame_provider_token_request *rq);

/* Receives the tokens (owned by the operation, valid during the callback:
 * copy them or pass them to sesame_provider_validate, which copies) when st
 * is OK; else t is NULL and err says why (never quoting token content). */
typedef void (*sesame_provider_exchange_cb)(void *arg, const struct sesame_provider_tokens *t,
                                            enum sesame_provider_status st, const char *err);

/* Ensures the metadata, then POSTs the token request of
 * sesame_provider_token_request() to the token endpoint. The answer must be
 * 200 with a JSON object (Content-Type application/json) holding token_type
 * Bearer (case-insensitive), id_token and access_token (non-empty strings of
 * at most SESAME_JOSE_MAX_TOKEN bytes; the access token printable ASCII).
 * Returns the operation handle (never NULL when rt, httpc and cb are
 * given). */
struct sesame_provider_op *sesame_provider_exchange(struct sesame_provider *rt,
                                                    struct sesame_httpc *httpc, const char *code,
                                                    const char *redirect_uri,
                                                    const char *code_verifier,
                                                    sesame_provider_exchange_cb cb, void *arg);

/* What the ID token must match. */
struct sesame_provider_expect {
    const char *nonce;   /* required: the nonce sent with the authorization request */
    const char *min_acr; /* the level required: one acr value, or a space-separated list
                            (acr_values) meaning its lowest known level; NULL: no minimum;
                            nothing known (e.g. "eidas0"): every acr refused */
    int64_t now;         /* seconds since the epoch; 0: the current time */
};

/* A validated sign-in. Owned by the operation, valid during the callback:
 * json_incref the claims, copy the strings that must outlive it. */
struct sesame_provider_identity {
    json_t *claims;       /* the ID token's claims, then the userinfo claims added
                             (userinfo values win, except for the protocol claims
                             iss sub aud exp iat nbf nonce acr amr auth_time azp
                             at_hash c_hash sid jti, kept from the ID token) */
    const char *id_token; /* the raw id_token string as received (JWE when it was
                             encrypted), for id_token_hint at logout */
    const char *sub;
    const char *acr;      /* NULL when the ID token has none */
};

typedef void (*sesame_provider_validate_cb)(void *arg, const struct sesame_provider_identity *id,
                                            enum sesame_provider_status st, const char *err);

/* Validates the tokens of an exchange and fetches userinfo:
 *   1. the id_token, decrypted first when it is a JWE (required to be one
 *      when the provider has decryption keys, refused when it has none),
 *      verified with the provider's keys and signing_algs (HS* only with the
 *      client secret, when configured), one JWKS refetch on an unknown kid;
 *   2. its claims checked by sesame_jose_check_id_token (iss, aud/azp, exp,
 *      iat with the provider's leeway, nonce, sub), then the acr ranked
 *      (sesame_jose_acr_rank) at least e->min_acr (SESAME_PROVIDER_ACR_TOO_LOW
 *      otherwise);
 *   3. unless userinfo is off: GET userinfo with "Authorization: Bearer";
 *      200 required. userinfo = jwt: Content-Type application/jwt, decrypted
 *      when JWE (same rule as the id_token), verified with the same keys and
 *      algorithms; userinfo = json: application/json only. Its sub must equal
 *      the ID token's (SESAME_PROVIDER_USERINFO_MISMATCH), then
 *      sesame_jose_check_userinfo.
 * t and e are copied. Returns the operation handle (never NULL when rt, httpc
 * and cb are given). */
struct sesame_provider_op *sesame_provider_validate(struct sesame_provider *rt,
                                                    struct sesame_httpc *httpc,
                                                    const struct sesame_provider_tokens *t,
                                                    const struct sesame_provider_expect *e,
                                                    sesame_provider_validate_cb cb, void *arg);

/* Verifies a compact JWS (NUL-terminated) signed by the provider, e.g. a
 * back-channel logout token (gate/backchannel.h): with the runtime's current
 * keys and signing_algs (HS* with the client secret when configured), as
 * for ID tokens, but synchronously and without fetching (call after a
 * successful sesame_provider_ensure). Returns SESAME_OK with the claims in
 * *claims (caller decrefs), SESAME_JOSE_UNKNOWN_KID, or SESAME_ERROR with
 * *err set. Thread-safe. */
int sesame_provider_verify_jws(struct sesame_provider *rt, const char *jws, json_t **claims,
                               char **err);

/* ---- Helpers ------------------------------------------------------------------ */

/* Appends to *buf (malloc'd, length *len; *buf may be NULL) the
 * percent-encoding of s: RFC 3986 unreserved characters kept, every other
 * byte as %XX (upper-case hex). */
void sesame_provider_percent_encode(char **buf, size_t *len, const char *s);

#endif
