/*
 * jose.h - JOSE for the OpenID Connect flow: key sets (JWKS), JWS
 * verification and signing, ID token and userinfo claim checks, JWE
 * decryption (FranceConnect+), the gateway's own keys and their public JWKS.
 *
 * Pure and synchronous: no I/O except reading key files in
 * sesame_jose_key_load(). Keys and key sets are immutable once built and may
 * be shared read-only by worker threads; every function below is thread-safe
 * on shared key sets.
 *
 * Crypto is done with OpenSSL 3 (EVP) throughout, one key representation
 * (EVP_PKEY) for every operation. cjose 0.6.2 was examined and is not used
 * here: it lacks RSA-OAEP-256, hands keys as the deprecated RSA / EC_KEY
 * types, and imports `alg: none` tokens; one strict parser in this module
 * covers JWS and JWE alike. The unit tests use cjose as an independent
 * implementation to build tokens and to read what this module produces.
 *
 * What is accepted (everything else is refused, fail closed):
 *   JWS  compact form only, exactly three non-empty base64url segments
 *        (unpadded, canonical), at most SESAME_JOSE_MAX_TOKEN bytes; header a
 *        JSON object without duplicate names, `alg` in the caller's allow-list
 *        and never "none"; no `crit`, no `b64`, no `cty`; `typ` absent or
 *        "JWT" / "application/jwt" (case-insensitive): "at+jwt" and other
 *        types are refused so that an access token or a logout token is never
 *        taken for an ID token. Header keys (`jwk`, `jku`, `x5u`, `x5c`) are
 *        ignored: keys come only from the key set given by the caller.
 *        ES256/384/512 signatures are raw R||S of exactly 64/96/132 bytes
 *        (DER is refused); RSA signatures are exactly the modulus size; RSA
 *        keys have 2048 to 8192 bits. HS256/384/512 use only the caller's
 *        secret (never a key of the set, so a public key can never serve as
 *        an HMAC secret), which must be at least as long as the hash.
 *   JWE  compact form, exactly five segments; `alg` RSA-OAEP, RSA-OAEP-256
 *        or ECDH-ES (direct key agreement, P-256); `enc` A256GCM only (96-bit
 *        IV, 128-bit tag); no `zip`, no `crit`; `cty` absent or "JWT"; `typ`
 *        is not looked at (the inner JWS's is). RSA1_5 and every other
 *        alg/enc is refused.
 */
#ifndef SESAME_OIDC_JOSE_H
#define SESAME_OIDC_JOSE_H

#include <jansson.h>

#include "config/config.h"
#include "core/common.h"

/* Returned by sesame_jose_verify() (and the userinfo helper) when the token
 * names a `kid` absent from the key set, or has no `kid` and no key fits its
 * alg: the caller may refetch the provider's JWKS once and retry. Distinct
 * from the SESAME_* codes of core/common.h. */
#define SESAME_JOSE_UNKNOWN_KID (-20)

#define SESAME_JOSE_MAX_TOKEN (64 * 1024)  /* bytes of a compact JWS or JWE */
#define SESAME_JOSE_MAX_KEYS 64            /* entries of a JWKS "keys" array */
#define SESAME_JOSE_MAX_JWKS (1024 * 1024) /* bytes of a JWKS document */
#define SESAME_JOSE_MAX_KEY_FILE (64 * 1024)
#define SESAME_JOSE_MAX_SUB 255            /* bytes of the `sub` claim */
#define SESAME_JOSE_DEFAULT_MAX_AGE 600    /* seconds, when expect.max_age_s <= 0 */

/* One public or private key with its kid and the algorithms it may serve. */
struct sesame_jose_key;
/* An ordered list of keys; owns them. */
struct sesame_jose_keyset;

/* ---- Key sets ----------------------------------------------------------- */

/* Parses a provider's JWKS document (json, len bytes, need not be
 * NUL-terminated) into a key set of signature-verification keys.
 * Kept: kty EC (P-256, P-384, P-521, x and y of exactly the field size) and
 * RSA (2048..8192 bits), with `use` absent or "sig", `key_ops` absent or
 * holding "verify", `alg` absent or a JWS alg matching the key type (the key
 * then serves only that alg). Skipped: other kty and curves, use=enc, oct
 * keys, keys that fail to decode or validate. Fails when the document is not
 * a JSON object with a "keys" array, holds more than SESAME_JOSE_MAX_KEYS
 * entries, is longer than SESAME_JOSE_MAX_JWKS, or yields no usable key.
 * Returns a new key set (caller frees) or NULL with *err set. */
struct sesame_jose_keyset *sesame_jose_keyset_parse(const char *json, size_t len, char **err);

/* Returns a new empty key set, for the gateway's own keys. */
struct sesame_jose_keyset *sesame_jose_keyset_new(void);

/* Appends key to ks and takes ownership of it (also on failure, where key is
 * freed). Only while ks is not yet shared with other threads. Fails when ks
 * holds SESAME_JOSE_MAX_KEYS keys. The key stays valid as long as ks. */
int sesame_jose_keyset_add(struct sesame_jose_keyset *ks, struct sesame_jose_key *key, char **err);

/* Number of keys held (0 for NULL). */
size_t sesame_jose_keyset_count(const struct sesame_jose_keyset *ks);

/* The i-th key (NULL when out of range). Owned by ks. */
const struct sesame_jose_key *sesame_jose_keyset_get(const struct sesame_jose_keyset *ks, size_t i);

/* The first private key of ks that can sign with the JWS alg `alg` (one
 * enum sesame_alg bit), or NULL. Owned by ks. */
const struct sesame_jose_key *sesame_jose_keyset_signing_key(const struct sesame_jose_keyset *ks,
                                                             unsigned alg);

/* Returns the public JWKS document of ks as a malloc'd NUL-terminated JSON
 * string (caller frees): {"keys":[...]} with kty, crv/x/y or n/e, kid, and,
 * when the key has them, use and alg. Private parts are never written.
 * Returns NULL with *err set on failure. */
char *sesame_jose_keyset_export(const struct sesame_jose_keyset *ks, char **err);

void sesame_jose_keyset_free(struct sesame_jose_keyset *ks);

/* ---- The gateway's own keys ---------------------------------------------- */

/* Loads a private key from the file at `path` (at most
 * SESAME_JOSE_MAX_KEY_FILE bytes): PEM (PKCS#8, "EC PRIVATE KEY" or "RSA
 * PRIVATE KEY", unencrypted) or a private JWK (JSON object with "d").
 * `alg` says what the key is for, and so its `use`:
 *   "ES256" (EC P-256), "RS256" / "PS256" (RSA)       use=sig, signing;
 *   "ECDH-ES" (EC P-256), "RSA-OAEP" / "RSA-OAEP-256" (RSA)   use=enc;
 *   NULL: a JWK's own "alg" member when it has one, else "ECDH-ES" for an
 *   EC key, "RSA-OAEP" for an RSA key. A JWK whose "alg" differs from a
 *   non-NULL `alg` is refused.
 * The key then serves only that alg. kid is the RFC 7638 thumbprint
 * (base64url SHA-256). RSA keys have 2048..8192 bits.
 * Returns a new key (caller frees or hands it to a key set) or NULL with *err
 * set (the message names the path, never key material). */
struct sesame_jose_key *sesame_jose_key_load(const char *path, const char *alg, char **err);

/* Same from memory: data (len bytes) holds the PEM or JWK text. */
struct sesame_jose_key *sesame_jose_key_parse(const char *data, size_t len, const char *alg,
                                              char **err);

/* The key's kid (NUL-terminated, owned by the key), or NULL when a JWKS key
 * had none. */
const char *sesame_jose_key_kid(const struct sesame_jose_key *key);

/* The key's RFC 7638 thumbprint (base64url SHA-256 of its canonical public
 * JWK), malloc'd (caller frees); NULL on failure. For gateway keys it equals
 * the kid. */
char *sesame_jose_key_thumbprint(const struct sesame_jose_key *key);

/* True when the key holds a private part. */
bool sesame_jose_key_is_private(const struct sesame_jose_key *key);

void sesame_jose_key_free(struct sesame_jose_key *key);

/* ---- JWS ---------------------------------------------------------------- */

/* Verifies the compact JWS `compact` (len bytes, need not be NUL-terminated)
 * and returns its payload. See the top of this file for what is accepted.
 * allowed_algs: enum sesame_alg bits. hs_secret / hs_len: the provider's
 * client secret for HS* (NULL/0: HS* refused even when allowed).
 * Key choice: with a `kid`, only keys of that kid (never "the first key"),
 * and one of them must fit the alg; without a `kid`, exactly one key of the
 * set must fit the alg. keys may be NULL (treated as empty).
 * The payload is parsed only after the signature verified, and must be a
 * JSON object without duplicate names.
 * Returns SESAME_OK and stores the claims in *claims_out (caller
 * json_decref's); SESAME_JOSE_UNKNOWN_KID (see above); or SESAME_ERROR with
 * *err set. The message never quotes token content. */
int sesame_jose_verify(const char *compact, size_t len, const struct sesame_jose_keyset *keys,
                       unsigned allowed_algs, const unsigned char *hs_secret, size_t hs_len,
                       json_t **claims_out, char **err);

/* Signs `claims` (a JSON object) with `key`, which must be a private EC
 * P-256 key loaded for "ES256". Header: {"alg":"ES256","typ":"JWT","kid":..}.
 * Signature: raw R||S, 64 bytes. Returns the malloc'd compact JWS (caller
 * frees) or NULL with *err set. */
char *sesame_jose_sign_es256(const json_t *claims, const struct sesame_jose_key *key, char **err);

/* Same with the alg the key was loaded for: ES256, RS256 or PS256 (for
 * private_key_jwt with an RSA key). */
char *sesame_jose_sign(const json_t *claims, const struct sesame_jose_key *key, char **err);

/* Parses a JWS alg name ("ES256", ...) into its enum sesame_alg bit; 0 when
 * unknown (and for "none"). */
unsigned sesame_jose_alg_from_name(const char *name);

/* ---- ID token and userinfo claims ----------------------------------------- */

struct sesame_jose_expect {
    const char *issuer;    /* required: `iss` must equal it exactly */
    const char *client_id; /* required: in `aud`; `azp` must equal it */
    const char *nonce;     /* required for ID tokens: `nonce` must equal it */
    const char *min_acr;   /* eidas1 < eidas2 < eidas3; NULL: no minimum */
    int64_t now;           /* seconds since the epoch */
    int64_t leeway_s;      /* clock skew tolerated on exp / iat / nbf (< 0: 0) */
    int64_t max_age_s;     /* iat not older than this (<= 0: DEFAULT_MAX_AGE) */
};

/* Checks the claims of a verified ID token against e:
 * iss exact; aud a string or a non-empty array of strings containing
 * client_id; azp required when aud has several values and equal to client_id
 * whenever present; exp a NumericDate with exp > now - leeway; nbf, if
 * present, <= now + leeway; iat present, <= now + leeway and
 * >= now - max_age - leeway; nonce present and equal (constant time); sub a
 * non-empty string of at most SESAME_JOSE_MAX_SUB bytes; acr, when min_acr is
 * set, present with sesame_jose_acr_rank(acr) >= rank(min_acr) (unknown
 * values fail; an unknown min_acr fails too); acr, when present, a string.
 * Returns SESAME_OK or SESAME_ERROR with *err naming the failed check (claim
 * names only, never claim values). */
int sesame_jose_check_id_token(const json_t *claims, const struct sesame_jose_expect *e,
                               char **err);

/* Rank of an eIDAS acr value: "eidas1" 1, "eidas2" 2, "eidas3" 3, anything
 * else (and NULL) 0. */
int sesame_jose_acr_rank(const char *acr);

/* Checks userinfo claims (from a verified JWT or from plain JSON when the
 * provider is configured so): an object whose `sub` is a string equal to the
 * `sub` of id_claims (the ID token's verified claims); when present, `iss`
 * equals e->issuer, `aud` contains e->client_id (as in ID tokens), `exp` is
 * not past (with e->leeway_s). nonce/iat/acr are not checked.
 * Returns SESAME_OK or SESAME_ERROR with *err set. */
int sesame_jose_check_userinfo(const json_t *userinfo, const json_t *id_claims,
                               const struct sesame_jose_expect *e, char **err);

/* Verifies a signed userinfo JWT like sesame_jose_verify(), then checks it
 * with sesame_jose_check_userinfo(). Same returns as sesame_jose_verify()
 * (including SESAME_JOSE_UNKNOWN_KID); on SESAME_OK *claims_out holds the
 * userinfo claims (caller json_decref's). */
int sesame_jose_verify_userinfo(const char *compact, size_t len,
                                const struct sesame_jose_keyset *keys, unsigned allowed_algs,
                                const unsigned char *hs_secret, size_t hs_len,
                                const json_t *id_claims, const struct sesame_jose_expect *e,
                                json_t **claims_out, char **err);

/* ---- JWE ---------------------------------------------------------------- */

/* True when compact (len bytes) has the shape of a compact JWE (five
 * segments), false for a JWS or anything else. Does not validate it. */
bool sesame_jose_is_jwe(const char *compact, size_t len);

/* Decrypts the compact JWE `compact` (len bytes) with the private keys of
 * `keys` that were loaded for the JWE's alg: by `kid` when the header has
 * one, else the only key loaded for that alg. See the top of this file for
 * what is accepted. A failed RSA unwrap continues with a random key so that
 * every failure after the header looks the same.
 * Returns SESAME_OK and stores in *plain_out the malloc'd NUL-terminated
 * plaintext (caller frees; for FranceConnect+ the inner JWS to pass to
 * sesame_jose_verify), its length in *plain_len if not NULL; or SESAME_ERROR
 * with *err set. Plaintexts holding a NUL byte are refused. */
int sesame_jose_decrypt(const char *compact, size_t len, const struct sesame_jose_keyset *keys,
                        char **plain_out, size_t *plain_len, char **err);

#endif
