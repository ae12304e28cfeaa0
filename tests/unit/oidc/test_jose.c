#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <pthread.h>

#include "core/util.h"
#include "oidc/jose.h"
#include "test_jose_util.h"

#define ISS "https://fcp-low.sbx.dev-franceconnect.fr/api/v2"
#define CLIENT "211286433e39cce01db448d80181bdfd005554b19cd51b3fe7943f6b3b86ab6e"
#define NONCE "n-0S6_WzA2Mj-Qxx4R1hTfGsWq9EBKlmNc0vYpTz3"
#define SUB "b6048e95bb134ec5b1d1e1fa69f287172e91722b9354d637a1bcf2ebb0fd2ef5v1"
#define SECRET "c2e6a42dfc8e1a9c3b0e4f7d5a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
#define NOW ((int64_t)1790000000)
#define ALLOW (SESAME_ALG_ES256 | SESAME_ALG_RS256)

static struct sesame_jose_keyset *g_ks; /* provider keys: ec1, ec2, rsa1 */

/* ---- helpers ------------------------------------------------------------ */

#define assert_err(err, text)                                                                      \
    do {                                                                                           \
        assert_non_null(err);                                                                      \
        if (strstr((err), (text)) == NULL)                                                         \
            fail_msg("error \"%s\" lacks \"%s\"", (err), (text));                                  \
    } while (0)

static char *
jwks_of(json_t *keys_array)
{
    json_t *doc = json_pack("{s:o}", "keys", keys_array);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

static int
group_setup(void **state)
{
    tj_keys_init();
    json_t *arr = json_array();
    json_array_append_new(arr, tj_jwk_json(tj_ec, false, "ec1", NULL, NULL));
    json_array_append_new(arr, tj_jwk_json(tj_ec2, false, "ec2", "ES256", "sig"));
    json_array_append_new(arr, tj_jwk_json(tj_rsa, false, "rsa1", NULL, "sig"));
    json_array_append_new(arr, tj_jwk_json(tj_ec, false, "enc1", "ECDH-ES", "enc"));
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "kty", "oct", "kid", "oct1", "k",
                                         "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"));
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s}", "kty", "OKP", "crv", "Ed25519",
                                         "kid", "okp1", "x",
                                         "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"));
    json_array_append_new(arr, tj_jwk_json(tj_rsa1024, false, "small", NULL, NULL));
    char *jwks = jwks_of(arr);
    char *err = NULL;
    g_ks = sesame_jose_keyset_parse(jwks, strlen(jwks), &err);
    free(jwks);
    if (g_ks == NULL) {
        fprintf(stderr, "group setup: %s\n", err ? err : "?");
        free(err);
        return -1;
    }
    return 0;
}

static int
group_teardown(void **state)
{
    sesame_jose_keyset_free(g_ks);
    tj_keys_free();
    return 0;
}

static json_t *
good_claims(void)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:s,s:s,s:s}", "iss", ISS, "aud", CLIENT, "exp",
                     (json_int_t)(NOW + 60), "iat", (json_int_t)(NOW - 5), "auth_time",
                     (json_int_t)(NOW - 10), "nonce", NONCE, "sub", SUB, "acr", "eidas1");
}

static struct sesame_jose_expect
expect(void)
{
    struct sesame_jose_expect e = {
        .issuer = ISS,
        .client_id = CLIENT,
        .nonce = NONCE,
        .min_acr = NULL,
        .now = NOW,
        .leeway_s = 60,
        .max_age_s = 600,
    };
    return e;
}

/* Signs claims (json_t, borrowed) with header text. */
static char *
sign(const char *hdr, const json_t *claims, EVP_PKEY *k, const char *alg)
{
    char *p = json_dumps(claims, JSON_COMPACT);
    char *tok = tj_jws(hdr, p, k, alg, TJ_SIG_RAW);
    free(p);
    return tok;
}

static int
verify_tok(const char *tok, unsigned allow, json_t **out, char **err)
{
    return sesame_jose_verify(tok, strlen(tok), g_ks, allow, NULL, 0, out, err);
}

/* Expects tok to be refused with SESAME_ERROR and an error containing text. */
static void
expect_refused(const char *tok, unsigned allow, const char *text)
{
    char *err = NULL;
    json_t *claims = (json_t *)0x1;
    assert_int_equal(verify_tok(tok, allow, &claims, &err), SESAME_ERROR);
    assert_null(claims);
    assert_err(err, text);
    free(err);
}

static void
expect_claims_refused(const json_t *claims, const struct sesame_jose_expect *e, const char *text)
{
    char *err = NULL;
    assert_int_equal(sesame_jose_check_id_token(claims, e, &err), SESAME_ERROR);
    assert_err(err, text);
    free(err);
}

/* ---- key sets ------------------------------------------------------------ */

static void
test_keyset_parse(void **state)
{
    assert_int_equal(sesame_jose_keyset_count(g_ks), 3);
    assert_string_equal(sesame_jose_key_kid(sesame_jose_keyset_get(g_ks, 0)), "ec1");
    assert_string_equal(sesame_jose_key_kid(sesame_jose_keyset_get(g_ks, 1)), "ec2");
    assert_string_equal(sesame_jose_key_kid(sesame_jose_keyset_get(g_ks, 2)), "rsa1");
    assert_false(sesame_jose_key_is_private(sesame_jose_keyset_get(g_ks, 0)));
    assert_null(sesame_jose_keyset_get(g_ks, 3));
    assert_null(sesame_jose_keyset_signing_key(g_ks, SESAME_ALG_ES256));
}

static void
test_keyset_refusals(void **state)
{
    char *err = NULL;
    static const char *bad[] = {
        "", "[]", "{}", "{\"keys\":{}}", "{\"keys\":[]}", "{\"keys\":[1,\"a\",null]}",
        "{\"keys\":[]} trailing", "{\"keys\":[],\"keys\":[]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(sesame_jose_keyset_parse(bad[i], strlen(bad[i]), &err));
        assert_non_null(err);
        free(err);
        err = NULL;
    }
    assert_null(sesame_jose_keyset_parse(NULL, 0, &err));
    free(err);
    err = NULL;

    /* More than 64 entries: refused whole. */
    json_t *arr = json_array();
    for (int i = 0; i < SESAME_JOSE_MAX_KEYS + 1; i++)
        json_array_append_new(arr, tj_jwk_json(tj_ec, false, "k", NULL, NULL));
    char *s = jwks_of(arr);
    assert_null(sesame_jose_keyset_parse(s, strlen(s), &err));
    assert_err(err, "more than 64");
    free(err);
    err = NULL;
    free(s);

    /* Exactly 64: accepted. */
    arr = json_array();
    for (int i = 0; i < SESAME_JOSE_MAX_KEYS; i++)
        json_array_append_new(arr, tj_jwk_json(tj_ec, false, "k", NULL, NULL));
    s = jwks_of(arr);
    struct sesame_jose_keyset *ks = sesame_jose_keyset_parse(s, strlen(s), &err);
    assert_non_null(ks);
    assert_int_equal(sesame_jose_keyset_count(ks), 64);
    sesame_jose_keyset_free(ks);
    free(s);

    /* Only unusable keys: an error, not an empty set. */
    arr = json_array();
    json_array_append_new(arr, tj_jwk_json(tj_ec, false, "e", "ECDH-ES", "enc"));
    json_array_append_new(arr, tj_jwk_json(tj_rsa1024, false, "small", NULL, NULL));
    json_array_append_new(arr, tj_jwk_json(tj_ec, false, "ops", NULL, NULL));
    json_object_set_new(json_array_get(arr, 2), "key_ops", json_pack("[s]", "encrypt"));
    /* EC point moved off the curve. */
    json_t *off = tj_jwk_json(tj_ec, false, "off", NULL, NULL);
    char *y = tj_b64("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10"
                     "\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x20",
                     32);
    json_object_set_new(off, "y", json_string(y));
    free(y);
    json_array_append_new(arr, off);
    /* x one byte short. */
    json_t *shortx = tj_jwk_json(tj_ec, false, "short", NULL, NULL);
    json_object_set_new(shortx, "x", json_string("AAAA"));
    json_array_append_new(arr, shortx);
    /* alg not fitting the key type. */
    json_array_append_new(arr, tj_jwk_json(tj_ec, false, "mis", "RS256", NULL));
    json_array_append_new(arr, tj_jwk_json(tj_rsa, false, "mis2", "ES256", NULL));
    s = jwks_of(arr);
    assert_null(sesame_jose_keyset_parse(s, strlen(s), &err));
    assert_err(err, "no usable");
    free(err);
    err = NULL;
    free(s);

    /* Oversized document. */
    size_t big = SESAME_JOSE_MAX_JWKS + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    assert_null(sesame_jose_keyset_parse(huge, big, &err));
    assert_err(err, "longer than");
    free(err);
    free(huge);
}

static void
test_thumbprint_rfc7638(void **state)
{
    /* RFC 7638 section 3.1. */
    static const char jwks[] =
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78Lh"
        "Wx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9"
        "yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6q"
        "MQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw"
        "0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\","
        "\"kid\":\"2011-04-29\"}]}";
    char *err = NULL;
    struct sesame_jose_keyset *ks = sesame_jose_keyset_parse(jwks, strlen(jwks), &err);
    assert_non_null(ks);
    char *tp = sesame_jose_key_thumbprint(sesame_jose_keyset_get(ks, 0));
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(tp);
    sesame_jose_keyset_free(ks);
}

/* ---- JWS: accepted tokens -------------------------------------------------- */

static void
test_verify_es256_rs256_ps256(void **state)
{
    json_t *c = good_claims();
    struct {
        const char *hdr;
        EVP_PKEY *k;
        const char *alg;
        unsigned allow;
    } ok[] = {
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}", tj_ec, "ES256", ALLOW},
        {"{\"alg\":\"ES256\",\"kid\":\"ec2\"}", tj_ec2, "ES256", ALLOW},
        {"{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"typ\":\"jwt\"}", tj_rsa, "RS256", ALLOW},
        {"{\"alg\":\"RS256\"}", tj_rsa, "RS256", ALLOW}, /* no kid, one RSA key */
        {"{\"alg\":\"PS256\",\"kid\":\"rsa1\",\"typ\":\"application/jwt\"}", tj_rsa, "PS256",
         SESAME_ALG_PS256},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *tok = sign(ok[i].hdr, c, ok[i].k, ok[i].alg);
        json_t *out = NULL;
        char *err = NULL;
        int rc = verify_tok(tok, ok[i].allow, &out, &err);
        if (rc != SESAME_OK)
            fail_msg("case %zu: %s", i, err ? err : "?");
        assert_true(json_equal(out, c));
        struct sesame_jose_expect e = expect();
        assert_int_equal(sesame_jose_check_id_token(out, &e, &err), SESAME_OK);
        json_decref(out);
        free(tok);
    }
    json_decref(c);
}

static void
test_verify_cjose_signed(void **state)
{
    /* Tokens built by an independent implementation (cjose). */
    const char *payload = "{\"sub\":\"x\",\"aud\":\"y\"}";
    struct {
        EVP_PKEY *k;
        const char *alg, *kid;
        unsigned allow;
    } cases[] = {
        {tj_ec, "ES256", "ec1", SESAME_ALG_ES256},
        {tj_rsa, "RS256", "rsa1", SESAME_ALG_RS256},
        {tj_rsa, "PS256", "rsa1", SESAME_ALG_PS256},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cjose_err cerr;
        cjose_jwk_t *jwk = tj_cjose_jwk(cases[i].k, true);
        cjose_header_t *h = cjose_header_new(&cerr);
        cjose_header_set(h, CJOSE_HDR_ALG, cases[i].alg, &cerr);
        cjose_header_set(h, CJOSE_HDR_KID, cases[i].kid, &cerr);
        cjose_jws_t *jws =
            cjose_jws_sign(jwk, h, (const uint8_t *)payload, strlen(payload), &cerr);
        assert_non_null(jws);
        const char *tok = NULL;
        assert_true(cjose_jws_export(jws, &tok, &cerr));
        json_t *out = NULL;
        char *err = NULL;
        int rc = sesame_jose_verify(tok, strlen(tok), g_ks, cases[i].allow, NULL, 0, &out, &err);
        if (rc != SESAME_OK)
            fail_msg("%s: %s", cases[i].alg, err);
        assert_string_equal(json_string_value(json_object_get(out, "sub")), "x");
        json_decref(out);
        cjose_jws_release(jws);
        cjose_header_release(h);
        cjose_jwk_release(jwk);
    }
}

static void
test_verify_hs256_with_secret(void **state)
{
    const char *p = "{\"sub\":\"a\"}";
    char *tok = tj_jws_hs("{\"alg\":\"HS256\"}", p, SECRET, strlen(SECRET), "SHA256");
    json_t *out = NULL;
    char *err = NULL;
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), g_ks, SESAME_ALG_HS256,
                                        (const unsigned char *)SECRET, strlen(SECRET), &out, &err),
                     SESAME_OK);
    json_decref(out);
    /* Allowed but no secret configured. */
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), g_ks, SESAME_ALG_HS256, NULL, 0, &out,
                                        &err),
                     SESAME_ERROR);
    assert_err(err, "no client secret");
    free(err);
    err = NULL;
    /* Secret shorter than the hash. */
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), g_ks, SESAME_ALG_HS256,
                                        (const unsigned char *)"short", 5, &out, &err),
                     SESAME_ERROR);
    assert_err(err, "shorter than 32");
    free(err);
    err = NULL;
    /* Wrong secret. */
    const char other[] = "d2e6a42dfc8e1a9c3b0e4f7d5a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b";
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), g_ks, SESAME_ALG_HS256,
                                        (const unsigned char *)other, strlen(other), &out, &err),
                     SESAME_ERROR);
    assert_err(err, "signature verification failed");
    free(err);
    /* Not in the allow-list even though a secret is given. */
    err = NULL;
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), g_ks, ALLOW,
                                        (const unsigned char *)SECRET, strlen(SECRET), &out, &err),
                     SESAME_ERROR);
    assert_err(err, "not allowed");
    free(err);
    free(tok);
}

/* ---- JWS: refusals ---------------------------------------------------------- */

static void
test_wrong_signature(void **state)
{
    json_t *c = good_claims();
    /* Signed by ec2's key but naming ec1. */
    char *tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", c, tj_ec2, "ES256");
    expect_refused(tok, ALLOW, "signature verification failed");
    free(tok);
    /* Payload changed after signing. */
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", c, tj_ec, "ES256");
    json_object_set_new(c, "sub", json_string("someone-else"));
    char *p = json_dumps(c, JSON_COMPACT);
    char *p64 = tj_b64s(p);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    size_t n = (size_t)(d1 - tok) + 1 + strlen(p64) + strlen(d2) + 1;
    char *forged = malloc(n);
    snprintf(forged, n, "%.*s.%s%s", (int)(d1 - tok), tok, p64, d2);
    expect_refused(forged, ALLOW, "signature verification failed");
    free(forged);
    free(p64);
    free(p);
    /* One bit flipped in the signature. */
    size_t L = strlen(tok);
    tok[L - 3] = tok[L - 3] == 'A' ? 'B' : 'A';
    expect_refused(tok, ALLOW, "signature verification failed");
    free(tok);
    /* RS256 with a changed signature byte. */
    tok = sign("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", c, tj_rsa, "RS256");
    L = strlen(tok);
    tok[L - 5] = tok[L - 5] == 'A' ? 'B' : 'A';
    expect_refused(tok, ALLOW, "signature verification failed");
    free(tok);
    json_decref(c);
}

static void
test_alg_none(void **state)
{
    static const char *hdrs[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}",
                                 "{\"alg\":\"NONE\",\"kid\":\"ec1\"}"};
    for (size_t i = 0; i < 3; i++) {
        char *tok = tj_jws_raw(hdrs[i], "{\"sub\":\"a\"}", "");
        /* Unsigned: the empty third segment is refused first. */
        expect_refused(tok, 0xffffffffu, "unsigned token refused");
        free(tok);
        /* Even with some signature bytes and every alg bit allowed. */
        tok = tj_jws_raw(hdrs[i], "{\"sub\":\"a\"}", "c2ln");
        expect_refused(tok, 0xffffffffu, "alg none refused");
        free(tok);
    }
    /* Two segments only. */
    char *h = tj_b64s("{\"alg\":\"none\"}");
    char *p = tj_b64s("{\"sub\":\"a\"}");
    char two[256];
    snprintf(two, sizeof(two), "%s.%s", h, p);
    expect_refused(two, 0xffffffffu, "exactly three segments");
    free(h);
    free(p);
}

static void
test_alg_not_allowed_and_unknown(void **state)
{
    json_t *c = good_claims();
    char *tok = sign("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", c, tj_rsa, "RS256");
    expect_refused(tok, SESAME_ALG_ES256, "alg RS256 is not allowed");
    free(tok);
    tok = sign("{\"alg\":\"PS256\",\"kid\":\"rsa1\"}", c, tj_rsa, "PS256");
    expect_refused(tok, ALLOW, "alg PS256 is not allowed");
    free(tok);
    tok = tj_jws_raw("{\"alg\":\"EdDSA\"}", "{}", "c2ln");
    expect_refused(tok, 0xffffffffu, "unsupported alg");
    free(tok);
    tok = tj_jws_raw("{\"alg\":256}", "{}", "c2ln");
    expect_refused(tok, 0xffffffffu, "has no alg");
    free(tok);
    tok = tj_jws_raw("{\"kid\":\"ec1\"}", "{}", "c2ln");
    expect_refused(tok, 0xffffffffu, "has no alg");
    free(tok);
    json_decref(c);
}

static void
test_hs256_key_confusion(void **state)
{
    /* The classic attack: HS256 keyed with the provider's public key. */
    char *pem = tj_pem(tj_rsa, false);
    char *jwk = tj_jwk(tj_rsa, false, "rsa1", NULL, NULL);
    const char *secrets[] = {pem, jwk};
    json_t *c = good_claims();
    char *p = json_dumps(c, JSON_COMPACT);
    for (size_t i = 0; i < 2; i++) {
        char *tok = tj_jws_hs("{\"alg\":\"HS256\",\"kid\":\"rsa1\"}", p, secrets[i],
                              strlen(secrets[i]), "SHA256");
        /* Provider allows ES256/RS256 only. */
        expect_refused(tok, ALLOW, "alg HS256 is not allowed");
        /* Even with every alg allowed but no client secret. */
        expect_refused(tok, 0xffffffffu, "no client secret");
        /* HS256 allowed with the real client secret: the public key is not it. */
        char *err = NULL;
        json_t *out = NULL;
        assert_int_equal(sesame_jose_verify(tok, strlen(tok), g_ks, ALLOW | SESAME_ALG_HS256,
                                            (const unsigned char *)SECRET, strlen(SECRET), &out,
                                            &err),
                         SESAME_ERROR);
        assert_null(out);
        assert_err(err, "signature verification failed");
        free(err);
        free(tok);
    }
    free(p);
    json_decref(c);
    free(pem);
    free(jwk);
}

static void
test_kid_selection(void **state)
{
    json_t *c = good_claims();
    char *err = NULL;
    json_t *out = NULL;
    /* Unknown kid: the distinct code, so the caller refetches. */
    char *tok = sign("{\"alg\":\"ES256\",\"kid\":\"rotated\"}", c, tj_ec, "ES256");
    assert_int_equal(verify_tok(tok, ALLOW, &out, &err), SESAME_JOSE_UNKNOWN_KID);
    assert_true(SESAME_JOSE_UNKNOWN_KID < 0 && SESAME_JOSE_UNKNOWN_KID != SESAME_ERROR &&
                SESAME_JOSE_UNKNOWN_KID != SESAME_AGAIN &&
                SESAME_JOSE_UNKNOWN_KID != SESAME_DECLINED);
    assert_null(out);
    assert_err(err, "no key with this kid");
    free(err);
    err = NULL;
    free(tok);
    /* kid names an enc-only key, which was skipped: unknown as well. */
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"enc1\"}", c, tj_ec, "ES256");
    assert_int_equal(verify_tok(tok, ALLOW, &out, &err), SESAME_JOSE_UNKNOWN_KID);
    free(err);
    err = NULL;
    free(tok);
    /* kid present, alg mismatching the key type. */
    tok = sign("{\"alg\":\"RS256\",\"kid\":\"ec1\"}", c, tj_rsa, "RS256");
    expect_refused(tok, ALLOW, "does not fit alg RS256");
    free(tok);
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", c, tj_ec, "ES256");
    expect_refused(tok, ALLOW, "does not fit alg ES256");
    free(tok);
    /* ES384 token naming a P-256 key. */
    tok = sign("{\"alg\":\"ES384\",\"kid\":\"ec1\"}", c, tj_ec384, "ES384");
    expect_refused(tok, ALLOW | SESAME_ALG_ES384, "does not fit alg ES384");
    free(tok);
    /* No kid and two P-256 keys: never "the first key". */
    tok = sign("{\"alg\":\"ES256\"}", c, tj_ec, "ES256");
    expect_refused(tok, ALLOW, "several keys fit");
    free(tok);
    /* No kid and no key fits: treated as unknown (refetch may help). */
    tok = sign("{\"alg\":\"ES384\"}", c, tj_ec384, "ES384");
    assert_int_equal(verify_tok(tok, ALLOW | SESAME_ALG_ES384, &out, &err),
                     SESAME_JOSE_UNKNOWN_KID);
    free(err);
    err = NULL;
    free(tok);
    /* No kid and exactly one EC key in the set: accepted. */
    json_t *arr = json_array();
    json_array_append_new(arr, tj_jwk_json(tj_ec, false, NULL, NULL, NULL));
    json_array_append_new(arr, tj_jwk_json(tj_rsa, false, NULL, NULL, NULL));
    char *jwks = jwks_of(arr);
    struct sesame_jose_keyset *one = sesame_jose_keyset_parse(jwks, strlen(jwks), &err);
    assert_non_null(one);
    tok = sign("{\"alg\":\"ES256\"}", c, tj_ec, "ES256");
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), one, ALLOW, NULL, 0, &out, &err),
                     SESAME_OK);
    json_decref(out);
    free(tok);
    /* A token with a kid against keys without kid: unknown. */
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", c, tj_ec, "ES256");
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), one, ALLOW, NULL, 0, &out, &err),
                     SESAME_JOSE_UNKNOWN_KID);
    free(err);
    err = NULL;
    free(tok);
    /* NULL key set. */
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", c, tj_ec, "ES256");
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), NULL, ALLOW, NULL, 0, &out, &err),
                     SESAME_JOSE_UNKNOWN_KID);
    free(err);
    err = NULL;
    free(tok);
    sesame_jose_keyset_free(one);
    free(jwks);
    /* A JWK restricted by its alg member serves only that alg. */
    arr = json_array();
    json_array_append_new(arr, tj_jwk_json(tj_rsa, false, "rs-only", "RS256", NULL));
    jwks = jwks_of(arr);
    struct sesame_jose_keyset *rs = sesame_jose_keyset_parse(jwks, strlen(jwks), &err);
    assert_non_null(rs);
    tok = sign("{\"alg\":\"PS256\",\"kid\":\"rs-only\"}", c, tj_rsa, "PS256");
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), rs, SESAME_ALG_PS256, NULL, 0, &out,
                                        &err),
                     SESAME_ERROR);
    assert_err(err, "does not fit alg PS256");
    free(err);
    err = NULL;
    free(tok);
    tok = sign("{\"alg\":\"RS256\",\"kid\":\"rs-only\"}", c, tj_rsa, "RS256");
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), rs, SESAME_ALG_RS256, NULL, 0, &out,
                                        &err),
                     SESAME_OK);
    json_decref(out);
    free(tok);
    sesame_jose_keyset_free(rs);
    free(jwks);
    json_decref(c);
}

static void
test_es256_signature_shape(void **state)
{
    json_t *c = good_claims();
    char *p = json_dumps(c, JSON_COMPACT);
    char *tok = tj_jws("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", p, tj_ec, "ES256", TJ_SIG_DER);
    expect_refused(tok, ALLOW, "must be 64 bytes (raw R||S)");
    free(tok);
    tok = tj_jws("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", p, tj_ec, "ES256", TJ_SIG_RAW_PLUS_BYTE);
    expect_refused(tok, ALLOW, "must be 64 bytes");
    free(tok);
    /* RSA signature with a byte less than the modulus. */
    tok = tj_jws("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", p, tj_rsa, "RS256", TJ_SIG_RAW);
    char *d2 = strrchr(tok, '.');
    size_t n;
    unsigned char *sig = tj_unb64(d2 + 1, strlen(d2 + 1), &n);
    char *s64 = tj_b64(sig, n - 1);
    *d2 = '\0';
    size_t tl = strlen(tok) + strlen(s64) + 2;
    char *cut = malloc(tl);
    snprintf(cut, tl, "%s.%s", tok, s64);
    expect_refused(cut, ALLOW, "differs from the key size");
    free(cut);
    free(s64);
    free(sig);
    free(tok);
    free(p);
    json_decref(c);
}

static void
test_malformed_tokens(void **state)
{
    json_t *c = good_claims();
    char *good = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", c, tj_ec, "ES256");
    size_t gl = strlen(good);
    char buf[4096];
    char *err = NULL;

    /* Extra segments. */
    snprintf(buf, sizeof(buf), "%s.", good);
    expect_refused(buf, ALLOW, "exactly three segments");
    snprintf(buf, sizeof(buf), "%s.AAAA", good);
    expect_refused(buf, ALLOW, "exactly three segments");
    snprintf(buf, sizeof(buf), "%s.a.b.c", good);
    expect_refused(buf, ALLOW, "exactly three segments");
    /* Five segments: a JWE. */
    snprintf(buf, sizeof(buf), "%s.a.b", good);
    expect_refused(buf, ALLOW, "encrypted JWE");
    /* Empty segments. */
    expect_refused("..", ALLOW, "empty header or payload");
    char *d1 = strchr(good, '.');
    snprintf(buf, sizeof(buf), ".%s", d1 + 1);
    expect_refused(buf, ALLOW, "empty header or payload");
    /* Padding, bad characters, non-canonical trailing bits. */
    snprintf(buf, sizeof(buf), "%s=", good);
    expect_refused(buf, ALLOW, "signature is not valid base64url");
    memcpy(buf, good, gl + 1);
    buf[2] = '+';
    expect_refused(buf, ALLOW, "header is not valid base64url");
    memcpy(buf, good, gl + 1);
    buf[(d1 - good) + 3] = '/';
    expect_refused(buf, ALLOW, "payload is not valid base64url");
    memcpy(buf, good, gl + 1);
    buf[(d1 - good) + 3] = '\0'; /* embedded NUL within len */
    assert_int_equal(sesame_jose_verify(buf, gl, g_ks, ALLOW, NULL, 0, NULL, &err),
                     SESAME_ERROR);
    free(err);
    err = NULL;
    char *t = tj_jws_raw("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", "{}", "AB");
    expect_refused(t, ALLOW, "signature is not valid base64url");
    free(t);
    /* Header not a JSON object, or with duplicate names. */
    t = tj_jws_raw("[\"ES256\"]", "{}", "c2ln");
    expect_refused(t, ALLOW, "header is not a JSON object");
    free(t);
    t = tj_jws_raw("{\"alg\":\"ES256\",\"alg\":\"none\"}", "{}", "c2ln");
    expect_refused(t, ALLOW, "header is not a JSON object");
    free(t);
    t = tj_jws_raw("{\"alg\":\"ES256\"", "{}", "c2ln");
    expect_refused(t, ALLOW, "header is not a JSON object");
    free(t);
    /* crit, b64, cty, typ, kid shapes. */
    static const struct {
        const char *hdr, *msg;
    } hdrs[] = {
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"crit\":[\"exp\"],\"exp\":1}", "crit header"},
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"b64\":false}", "b64 header"},
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"cty\":\"JWT\"}", "cty header"},
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"at+jwt\"}", "typ must be JWT"},
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"logout+jwt\"}", "typ must be JWT"},
        {"{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":7}", "typ must be JWT"},
        {"{\"alg\":\"ES256\",\"kid\":7}", "kid is malformed"},
        {"{\"alg\":\"ES256\",\"kid\":\"\"}", "kid is malformed"},
    };
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        t = sign(hdrs[i].hdr, c, tj_ec, "ES256");
        expect_refused(t, ALLOW, hdrs[i].msg);
        free(t);
    }
    /* Payload: not an object, duplicate claims, trailing data (signed correctly). */
    static const char *payloads[] = {"[1]", "\"x\"", "{\"sub\":\"a\",\"sub\":\"b\"}",
                                     "{\"sub\":\"a\"} {}", "{\"sub\":"};
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        t = tj_jws("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", payloads[i], tj_ec, "ES256",
                   TJ_SIG_RAW);
        expect_refused(t, ALLOW, "payload is not a JSON object");
        free(t);
    }
    /* Over-long token. */
    size_t big = SESAME_JOSE_MAX_TOKEN + 1;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    huge[10] = '.';
    huge[20] = '.';
    huge[big] = '\0';
    expect_refused(huge, ALLOW, "longer than");
    free(huge);
    /* Empty and NULL. */
    assert_int_equal(sesame_jose_verify(NULL, 0, g_ks, ALLOW, NULL, 0, NULL, &err), SESAME_ERROR);
    free(err);
    err = NULL;
    assert_int_equal(sesame_jose_verify("", 0, g_ks, ALLOW, NULL, 0, NULL, &err), SESAME_ERROR);
    free(err);
    err = NULL;
    /* The good token still verifies when len excludes nothing, and not when cut. */
    assert_int_equal(sesame_jose_verify(good, gl, g_ks, ALLOW, NULL, 0, NULL, &err), SESAME_OK);
    assert_int_equal(sesame_jose_verify(good, gl - 1, g_ks, ALLOW, NULL, 0, NULL, &err),
                     SESAME_ERROR);
    free(err);
    free(good);
    json_decref(c);
}

/* ---- ID token claims ------------------------------------------------------- */

static void
test_claims_ok_variants(void **state)
{
    struct sesame_jose_expect e = expect();
    json_t *c = good_claims();
    char *err = NULL;
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* aud as an array with one value, azp absent. */
    json_object_set_new(c, "aud", json_pack("[s]", CLIENT));
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* several audiences with azp = client_id. */
    json_object_set_new(c, "aud", json_pack("[s,s]", "other", CLIENT));
    json_object_set_new(c, "azp", json_string(CLIENT));
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* exp just inside the leeway, iat just inside both bounds, real NumericDate. */
    json_object_set_new(c, "exp", json_integer(NOW - 59));
    json_object_set_new(c, "iat", json_real((double)(NOW + 60)));
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    json_object_set_new(c, "iat", json_integer(NOW - 660));
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* acr at and above the minimum. */
    e.min_acr = "eidas1";
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    json_object_set_new(c, "acr", json_string("eidas3"));
    e.min_acr = "eidas2";
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* No minimum: acr may be absent. */
    e.min_acr = NULL;
    json_object_del(c, "acr");
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* sub of exactly 255 bytes. */
    char sub[256];
    memset(sub, 'a', 255);
    sub[255] = '\0';
    json_object_set_new(c, "sub", json_string(sub));
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    /* max_age 0 means the default (600 s). */
    e.max_age_s = 0;
    json_object_set_new(c, "iat", json_integer(NOW - 600));
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_OK);
    assert_null(err);
    json_decref(c);
}

static void
test_claims_refusals(void **state)
{
    struct sesame_jose_expect e = expect();
    json_t *c;
#define REFUSE(mutation, text)                                                                     \
    do {                                                                                           \
        c = good_claims();                                                                         \
        mutation;                                                                                  \
        expect_claims_refused(c, &e, text);                                                        \
        json_decref(c);                                                                            \
    } while (0)
    REFUSE(json_object_set_new(c, "iss", json_string(ISS "/")), "iss does not match");
    REFUSE(json_object_set_new(c, "iss", json_string("https://evil.example")),
           "iss does not match");
    REFUSE(json_object_del(c, "iss"), "iss is missing");
    REFUSE(json_object_set_new(c, "iss", json_integer(1)), "iss is missing or not a string");
    REFUSE(json_object_set_new(c, "aud", json_string("other-client")), "aud does not contain");
    REFUSE(json_object_set_new(c, "aud", json_pack("[s,s]", "a", "b")), "aud does not contain");
    REFUSE(json_object_del(c, "aud"), "aud is missing");
    REFUSE(json_object_set_new(c, "aud", json_array()), "empty or oversized");
    REFUSE(json_object_set_new(c, "aud", json_pack("[s,i]", CLIENT, 1)), "non-string");
    REFUSE(json_object_set_new(c, "aud", json_integer(3)), "neither a string nor an array");
    REFUSE(json_object_set_new(c, "aud", json_pack("[s,s]", CLIENT, "other")),
           "azp is required when aud has several values");
    REFUSE((json_object_set_new(c, "aud", json_pack("[s,s]", CLIENT, "other")),
            json_object_set_new(c, "azp", json_string("other"))),
           "azp does not match");
    REFUSE(json_object_set_new(c, "azp", json_string("other")), "azp does not match");
    REFUSE(json_object_set_new(c, "exp", json_integer(NOW - 60)), "exp is past");
    REFUSE(json_object_set_new(c, "exp", json_integer(NOW - 3600)), "exp is past");
    REFUSE(json_object_del(c, "exp"), "exp is missing");
    REFUSE(json_object_set_new(c, "exp", json_string("tomorrow")), "exp is not a number");
    REFUSE(json_object_set_new(c, "exp", json_integer(-1)), "exp is out of range");
    REFUSE(json_object_set_new(c, "exp", json_real(1e300)), "exp is out of range");
    REFUSE(json_object_set_new(c, "iat", json_integer(NOW + 61)), "iat is in the future");
    REFUSE(json_object_set_new(c, "iat", json_integer(NOW - 661)), "iat is too old");
    REFUSE(json_object_del(c, "iat"), "iat is missing");
    REFUSE(json_object_set_new(c, "nbf", json_integer(NOW + 61)), "nbf is in the future");
    REFUSE(json_object_del(c, "nonce"), "nonce is missing");
    REFUSE(json_object_set_new(c, "nonce", json_integer(5)), "nonce is missing or not a string");
    REFUSE(json_object_set_new(c, "nonce", json_string(NONCE "x")), "nonce does not match");
    REFUSE(json_object_set_new(c, "nonce", json_string("")), "nonce does not match");
    REFUSE(json_object_del(c, "sub"), "sub is missing");
    REFUSE(json_object_set_new(c, "sub", json_null()), "sub is missing or not a string");
    REFUSE(json_object_set_new(c, "sub", json_string("")), "sub is empty");
    char sub[257];
    memset(sub, 'a', 256);
    sub[256] = '\0';
    REFUSE(json_object_set_new(c, "sub", json_string(sub)), "sub is longer than 255");
    REFUSE(json_object_set_new(c, "acr", json_integer(2)), "acr is not a string");
    e.min_acr = "eidas2";
    REFUSE((void)0, "acr is below the required level");
    REFUSE(json_object_del(c, "acr"), "acr is missing");
    REFUSE(json_object_set_new(c, "acr", json_string("EIDAS3")), "not a known eIDAS level");
    REFUSE(json_object_set_new(c, "acr", json_string("eidas2 ")), "not a known eIDAS level");
    e.min_acr = "loa-high";
    REFUSE(json_object_set_new(c, "acr", json_string("eidas3")), "required acr level is not");
    e = expect();
    e.nonce = NULL;
    REFUSE((void)0, "no nonce to check against");
    e = expect();
    e.issuer = NULL;
    REFUSE((void)0, "no issuer or client_id");
    e = expect();
    e.client_id = NULL;
    REFUSE((void)0, "no issuer or client_id");
#undef REFUSE
    e = expect();
    char *err = NULL;
    json_t *arr = json_array();
    assert_int_equal(sesame_jose_check_id_token(arr, &e, &err), SESAME_ERROR);
    assert_err(err, "not a JSON object");
    free(err);
    err = NULL;
    json_decref(arr);
    assert_int_equal(sesame_jose_check_id_token(NULL, &e, &err), SESAME_ERROR);
    free(err);
}

static void
test_claims_messages_quote_no_content(void **state)
{
    /* Errors name the claim, never its value. */
    struct sesame_jose_expect e = expect();
    json_t *c = good_claims();
    json_object_set_new(c, "nonce", json_string("SECRET-NONCE-VALUE"));
    char *err = NULL;
    assert_int_equal(sesame_jose_check_id_token(c, &e, &err), SESAME_ERROR);
    assert_null(strstr(err, "SECRET-NONCE-VALUE"));
    assert_null(strstr(err, NONCE));
    free(err);
    json_decref(c);
}

static void
test_acr_rank(void **state)
{
    assert_int_equal(sesame_jose_acr_rank("eidas1"), 1);
    assert_int_equal(sesame_jose_acr_rank("eidas2"), 2);
    assert_int_equal(sesame_jose_acr_rank("eidas3"), 3);
    assert_int_equal(sesame_jose_acr_rank("eidas4"), 0);
    assert_int_equal(sesame_jose_acr_rank("Eidas1"), 0);
    assert_int_equal(sesame_jose_acr_rank(""), 0);
    assert_int_equal(sesame_jose_acr_rank(NULL), 0);
}

static void
test_id_token_end_to_end(void **state)
{
    /* verify + check, as the OIDC flow does, on a token with a wrong nonce. */
    json_t *c = good_claims();
    json_object_set_new(c, "nonce", json_string("another-login"));
    char *tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}", c, tj_ec, "ES256");
    json_t *out = NULL;
    char *err = NULL;
    assert_int_equal(verify_tok(tok, ALLOW, &out, &err), SESAME_OK);
    struct sesame_jose_expect e = expect();
    assert_int_equal(sesame_jose_check_id_token(out, &e, &err), SESAME_ERROR);
    assert_err(err, "nonce does not match");
    free(err);
    json_decref(out);
    free(tok);
    json_decref(c);
}

/* ---- Userinfo -------------------------------------------------------------- */

static void
test_userinfo(void **state)
{
    json_t *id = good_claims();
    struct sesame_jose_expect e = expect();
    json_t *ui = json_pack("{s:s,s:s,s:s,s:s}", "sub", SUB, "given_name", "Angela Claire Louise",
                           "iss", ISS, "aud", CLIENT);
    char *tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", ui, tj_ec, "ES256");
    json_t *out = NULL;
    char *err = NULL;
    assert_int_equal(sesame_jose_verify_userinfo(tok, strlen(tok), g_ks, ALLOW, NULL, 0, id, &e,
                                                 &out, &err),
                     SESAME_OK);
    assert_string_equal(json_string_value(json_object_get(out, "given_name")),
                        "Angela Claire Louise");
    json_decref(out);
    free(tok);

    /* sub different from the id_token's. */
    json_object_set_new(ui, "sub", json_string("0000v1"));
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", ui, tj_ec, "ES256");
    assert_int_equal(sesame_jose_verify_userinfo(tok, strlen(tok), g_ks, ALLOW, NULL, 0, id, &e,
                                                 &out, &err),
                     SESAME_ERROR);
    assert_null(out);
    assert_err(err, "sub differs");
    free(err);
    err = NULL;
    free(tok);
    /* Unsigned userinfo. */
    tok = tj_jws_raw("{\"alg\":\"none\"}", "{\"sub\":\"" SUB "\"}", "");
    assert_int_equal(sesame_jose_verify_userinfo(tok, strlen(tok), g_ks, ALLOW, NULL, 0, id, &e,
                                                 &out, &err),
                     SESAME_ERROR);
    free(err);
    err = NULL;
    free(tok);
    /* Unknown kid passes the code through. */
    json_object_set_new(ui, "sub", json_string(SUB));
    tok = sign("{\"alg\":\"ES256\",\"kid\":\"new\"}", ui, tj_ec, "ES256");
    assert_int_equal(sesame_jose_verify_userinfo(tok, strlen(tok), g_ks, ALLOW, NULL, 0, id, &e,
                                                 &out, &err),
                     SESAME_JOSE_UNKNOWN_KID);
    free(err);
    err = NULL;
    free(tok);

    /* Plain JSON checks. */
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_OK);
    json_object_set_new(ui, "iss", json_string("https://other.example"));
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_ERROR);
    assert_err(err, "userinfo: iss does not match");
    free(err);
    err = NULL;
    json_object_del(ui, "iss");
    json_object_set_new(ui, "aud", json_string("other"));
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_ERROR);
    assert_err(err, "userinfo: aud does not contain");
    free(err);
    err = NULL;
    json_object_del(ui, "aud");
    json_object_set_new(ui, "exp", json_integer(NOW - 3600));
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_ERROR);
    assert_err(err, "userinfo: exp is past");
    free(err);
    err = NULL;
    json_object_del(ui, "exp");
    /* iss and aud absent: fine. */
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_OK);
    json_object_del(ui, "sub");
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_ERROR);
    assert_err(err, "sub is missing");
    free(err);
    err = NULL;
    /* The id_token has no sub: never equal. */
    json_object_set_new(ui, "sub", json_string(SUB));
    json_object_del(id, "sub");
    assert_int_equal(sesame_jose_check_userinfo(ui, id, &e, &err), SESAME_ERROR);
    assert_err(err, "no sub to compare");
    free(err);
    json_decref(ui);
    json_decref(id);
}

/* ---- Gateway keys ------------------------------------------------------------- */

struct gw {
    struct sesame_jose_keyset *ks;
    const struct sesame_jose_key *sig, *ecdh, *oaep, *oaep256;
};

static struct sesame_jose_key *
load_pem_file(EVP_PKEY *k, const char *alg)
{
    char *pem = tj_pem(k, true);
    char *path = tj_write_temp(pem, strlen(pem));
    char *err = NULL;
    struct sesame_jose_key *key = sesame_jose_key_load(path, alg, &err);
    if (key == NULL)
        fail_msg("load %s: %s", alg ? alg : "(default)", err);
    unlink(path);
    free(path);
    free(pem);
    return key;
}

static void
gw_build(struct gw *g, EVP_PKEY *ec_sig, EVP_PKEY *ec_enc, EVP_PKEY *rsa)
{
    char *err = NULL;
    g->ks = sesame_jose_keyset_new();
    struct sesame_jose_key *k;
    k = load_pem_file(ec_sig, "ES256");
    g->sig = k;
    assert_int_equal(sesame_jose_keyset_add(g->ks, k, &err), SESAME_OK);
    k = load_pem_file(ec_enc, NULL); /* default ECDH-ES */
    g->ecdh = k;
    assert_int_equal(sesame_jose_keyset_add(g->ks, k, &err), SESAME_OK);
    k = load_pem_file(rsa, NULL); /* default RSA-OAEP */
    g->oaep = k;
    assert_int_equal(sesame_jose_keyset_add(g->ks, k, &err), SESAME_OK);
    k = load_pem_file(rsa, "RSA-OAEP-256");
    g->oaep256 = k;
    assert_int_equal(sesame_jose_keyset_add(g->ks, k, &err), SESAME_OK);
}

static void
test_gateway_keys_and_export(void **state)
{
    struct gw g;
    gw_build(&g, tj_ec, tj_ec2, tj_rsa);
    assert_int_equal(sesame_jose_keyset_count(g.ks), 4);
    assert_true(sesame_jose_key_is_private(g.sig));
    assert_ptr_equal(sesame_jose_keyset_signing_key(g.ks, SESAME_ALG_ES256), g.sig);
    assert_null(sesame_jose_keyset_signing_key(g.ks, SESAME_ALG_RS256));
    /* kid = RFC 7638 thumbprint, recomputed here from the public JWK. */
    char *jwk = tj_jwk(tj_ec, false, NULL, NULL, NULL);
    json_t *o = json_loads(jwk, 0, NULL);
    char canon[512];
    snprintf(canon, sizeof(canon), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
             json_string_value(json_object_get(o, "x")),
             json_string_value(json_object_get(o, "y")));
    unsigned char md[32];
    unsigned int mdl = 0;
    EVP_Digest(canon, strlen(canon), md, &mdl, EVP_sha256(), NULL);
    char *want = tj_b64(md, 32);
    assert_string_equal(sesame_jose_key_kid(g.sig), want);
    assert_int_equal(strlen(want), 43);
    free(want);
    json_decref(o);
    free(jwk);
    /* Both OAEP entries share the RSA key's thumbprint. */
    assert_string_equal(sesame_jose_key_kid(g.oaep), sesame_jose_key_kid(g.oaep256));
    char *tp = sesame_jose_key_thumbprint(g.oaep);
    assert_string_equal(tp, sesame_jose_key_kid(g.oaep));
    free(tp);

    char *err = NULL;
    char *doc = sesame_jose_keyset_export(g.ks, &err);
    assert_non_null(doc);
    json_t *j = json_loads(doc, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    json_t *keys = json_object_get(j, "keys");
    assert_int_equal(json_array_size(keys), 4);
    static const char *priv[] = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"};
    static const char *want_use[] = {"sig", "enc", "enc", "enc"};
    static const char *want_alg[] = {"ES256", "ECDH-ES", "RSA-OAEP", "RSA-OAEP-256"};
    for (size_t i = 0; i < 4; i++) {
        json_t *k = json_array_get(keys, i);
        for (size_t m = 0; m < sizeof(priv) / sizeof(priv[0]); m++)
            assert_null(json_object_get(k, priv[m]));
        assert_string_equal(json_string_value(json_object_get(k, "use")), want_use[i]);
        assert_string_equal(json_string_value(json_object_get(k, "alg")), want_alg[i]);
        assert_non_null(json_string_value(json_object_get(k, "kid")));
        /* cjose reads each exported key as a public key. */
        char *one = json_dumps(k, JSON_COMPACT);
        cjose_err cerr;
        cjose_jwk_t *cj = cjose_jwk_import(one, strlen(one), &cerr);
        assert_non_null(cj);
        char *again = cjose_jwk_to_json(cj, true, &cerr);
        assert_non_null(again);
        assert_null(strstr(again, "\"d\""));
        free(again);
        cjose_jwk_release(cj);
        free(one);
    }
    /* The exported text as a whole holds no private member name at all. */
    assert_null(strstr(doc, "\"d\""));
    assert_null(strstr(doc, "\"p\""));
    assert_null(strstr(doc, "\"q\""));
    json_decref(j);

    /* Round trip: sign with the gateway key, verify through the exported JWKS
     * (where only the use=sig key is kept), and with cjose. */
    struct sesame_jose_keyset *pub = sesame_jose_keyset_parse(doc, strlen(doc), &err);
    assert_non_null(pub);
    assert_int_equal(sesame_jose_keyset_count(pub), 1);
    json_t *claims = json_pack("{s:s,s:i}", "sub", "assertion", "n", 1);
    char *tok = sesame_jose_sign_es256(claims, g.sig, &err);
    assert_non_null(tok);
    json_t *out = NULL;
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), pub, SESAME_ALG_ES256, NULL, 0, &out,
                                        &err),
                     SESAME_OK);
    assert_true(json_equal(out, claims));
    json_decref(out);
    /* Header and signature shape. */
    char *d1 = strchr(tok, '.');
    size_t hl;
    unsigned char *h = tj_unb64(tok, (size_t)(d1 - tok), &hl);
    json_t *hdr = json_loadb((char *)h, hl, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(hdr, "typ")), "JWT");
    assert_string_equal(json_string_value(json_object_get(hdr, "kid")), sesame_jose_key_kid(g.sig));
    json_decref(hdr);
    free(h);
    char *d2 = strrchr(tok, '.');
    size_t sl;
    unsigned char *sg = tj_unb64(d2 + 1, strlen(d2 + 1), &sl);
    assert_int_equal(sl, 64);
    free(sg);
    cjose_err cerr;
    cjose_jws_t *cj = cjose_jws_import(tok, strlen(tok), &cerr);
    assert_non_null(cj);
    cjose_jwk_t *cpub = tj_cjose_jwk(tj_ec, false);
    assert_true(cjose_jws_verify(cj, cpub, &cerr));
    cjose_jwk_release(cpub);
    cjose_jws_release(cj);
    free(tok);

    /* Signing refusals. */
    assert_null(sesame_jose_sign_es256(claims, g.oaep, &err));
    assert_err(err, "not loaded for ES256");
    free(err);
    err = NULL;
    assert_null(sesame_jose_sign_es256(claims, sesame_jose_keyset_get(g_ks, 0), &err));
    free(err);
    err = NULL;
    assert_null(sesame_jose_sign(claims, g.ecdh, &err));
    assert_err(err, "signing needs a private key");
    free(err);
    err = NULL;
    json_t *arr = json_array();
    assert_null(sesame_jose_sign_es256(arr, g.sig, &err));
    assert_err(err, "not a JSON object");
    free(err);
    err = NULL;
    json_decref(arr);
    json_decref(claims);
    sesame_jose_keyset_free(pub);
    free(doc);
    sesame_jose_keyset_free(g.ks);
}

static void
test_gateway_rs256_signing(void **state)
{
    struct sesame_jose_key *k = load_pem_file(tj_rsa, "RS256");
    json_t *claims = json_pack("{s:s}", "iss", CLIENT);
    char *err = NULL;
    char *tok = sesame_jose_sign(claims, k, &err);
    assert_non_null(tok);
    /* Verified through the exported public JWKS. */
    json_t *out = NULL;
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    assert_int_equal(sesame_jose_keyset_add(ks, k, &err), SESAME_OK);
    char *doc = sesame_jose_keyset_export(ks, &err);
    struct sesame_jose_keyset *pub = sesame_jose_keyset_parse(doc, strlen(doc), &err);
    assert_non_null(pub);
    assert_int_equal(sesame_jose_verify(tok, strlen(tok), pub, SESAME_ALG_RS256, NULL, 0, &out,
                                        &err),
                     SESAME_OK);
    json_decref(out);
    sesame_jose_keyset_free(pub);
    sesame_jose_keyset_free(ks);
    free(doc);
    free(tok);
    json_decref(claims);
}

static void
test_gateway_key_refusals(void **state)
{
    char *err = NULL;
    /* Missing file. */
    assert_null(sesame_jose_key_load("/nonexistent/sesame/key.pem", NULL, &err));
    assert_err(err, "cannot open");
    free(err);
    err = NULL;
    /* Public key only. */
    char *pub = tj_pem(tj_ec, false);
    assert_null(sesame_jose_key_parse(pub, strlen(pub), NULL, &err));
    assert_err(err, "not an unencrypted PEM private key");
    free(err);
    err = NULL;
    free(pub);
    /* Encrypted PEM: refused without prompting. */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PKCS8PrivateKey(b, tj_ec, EVP_aes_256_cbc(), "pw", 2, NULL,
                                                   NULL),
                     1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    assert_null(sesame_jose_key_parse(data, (size_t)n, NULL, &err));
    assert_err(err, "not an unencrypted PEM private key");
    free(err);
    err = NULL;
    BIO_free(b);
    /* Garbage, empty, oversized. */
    assert_null(sesame_jose_key_parse("hello", 5, NULL, &err));
    free(err);
    err = NULL;
    assert_null(sesame_jose_key_parse("", 0, NULL, &err));
    free(err);
    err = NULL;
    char *big = calloc(1, SESAME_JOSE_MAX_KEY_FILE + 2);
    memset(big, 'A', SESAME_JOSE_MAX_KEY_FILE + 1);
    char *path = tj_write_temp(big, SESAME_JOSE_MAX_KEY_FILE + 1);
    assert_null(sesame_jose_key_load(path, NULL, &err));
    assert_err(err, "longer than");
    free(err);
    err = NULL;
    unlink(path);
    free(path);
    free(big);
    /* Small RSA, P-384, alg not fitting the type. */
    struct {
        EVP_PKEY *k;
        const char *alg, *msg;
    } cases[] = {
        {tj_rsa1024, NULL, "2048..8192"},
        {tj_ec384, NULL, "not on P-256"},
        {tj_ec, "RS256", "does not fit"},
        {tj_ec, "RSA-OAEP", "does not fit"},
        {tj_rsa, "ES256", "does not fit"},
        {tj_rsa, "ECDH-ES", "does not fit"},
        {tj_ec, "ES384", "does not fit"},
        {tj_ec, "HS256", "does not fit"},
        {tj_rsa, "RSA1_5", "does not fit"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *pem = tj_pem(cases[i].k, true);
        struct sesame_jose_key *k = sesame_jose_key_parse(pem, strlen(pem), cases[i].alg, &err);
        if (k != NULL)
            fail_msg("case %zu accepted", i);
        assert_err(err, cases[i].msg);
        free(err);
        err = NULL;
        free(pem);
    }
    /* Key set bound. */
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    char *pem = tj_pem(tj_ec, true);
    for (int i = 0; i < SESAME_JOSE_MAX_KEYS; i++)
        assert_int_equal(
            sesame_jose_keyset_add(ks, sesame_jose_key_parse(pem, strlen(pem), "ES256", NULL),
                                   &err),
            SESAME_OK);
    assert_int_equal(
        sesame_jose_keyset_add(ks, sesame_jose_key_parse(pem, strlen(pem), "ES256", NULL), &err),
        SESAME_ERROR);
    assert_err(err, "at most 64");
    free(err);
    free(pem);
    sesame_jose_keyset_free(ks);
}

static void
test_gateway_key_from_jwk(void **state)
{
    char *err = NULL;
    EVP_PKEY *keys[] = {tj_ec, tj_rsa};
    for (size_t i = 0; i < 2; i++) {
        char *pem = tj_pem(keys[i], true);
        char *jwk = tj_jwk(keys[i], true, NULL, NULL, NULL);
        struct sesame_jose_key *a = sesame_jose_key_parse(pem, strlen(pem), NULL, &err);
        struct sesame_jose_key *b = sesame_jose_key_parse(jwk, strlen(jwk), NULL, &err);
        assert_non_null(a);
        if (b == NULL)
            fail_msg("jwk: %s", err);
        assert_string_equal(sesame_jose_key_kid(a), sesame_jose_key_kid(b));
        assert_true(sesame_jose_key_is_private(b));
        sesame_jose_key_free(a);
        sesame_jose_key_free(b);
        free(pem);
        free(jwk);
    }
    /* A JWK's own alg member is honoured, and must agree with the caller's. */
    char *withalg = tj_jwk(tj_rsa, true, NULL, "RSA-OAEP-256", "enc");
    struct sesame_jose_key *ka = sesame_jose_key_parse(withalg, strlen(withalg), NULL, &err);
    assert_non_null(ka);
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    assert_int_equal(sesame_jose_keyset_add(ks, ka, &err), SESAME_OK);
    char *doc = sesame_jose_keyset_export(ks, &err);
    assert_non_null(strstr(doc, "\"alg\":\"RSA-OAEP-256\""));
    free(doc);
    sesame_jose_keyset_free(ks);
    assert_null(sesame_jose_key_parse(withalg, strlen(withalg), "RSA-OAEP", &err));
    assert_err(err, "differs from RSA-OAEP");
    free(err);
    err = NULL;
    free(withalg);
    withalg = tj_jwk(tj_ec, true, NULL, "A256KW", NULL);
    assert_null(sesame_jose_key_parse(withalg, strlen(withalg), NULL, &err));
    assert_err(err, "does not fit");
    free(err);
    err = NULL;
    free(withalg);
    /* A public JWK, or a JWK whose d belongs to another key, is refused. */
    char *jwk = tj_jwk(tj_ec, false, NULL, NULL, NULL);
    assert_null(sesame_jose_key_parse(jwk, strlen(jwk), NULL, &err));
    assert_err(err, "private JWK refused");
    free(err);
    err = NULL;
    free(jwk);
    json_t *mixed = tj_jwk_json(tj_ec, true, NULL, NULL, NULL);
    json_t *other = tj_jwk_json(tj_ec2, true, NULL, NULL, NULL);
    json_object_set(mixed, "d", json_object_get(other, "d"));
    jwk = json_dumps(mixed, JSON_COMPACT);
    assert_null(sesame_jose_key_parse(jwk, strlen(jwk), NULL, &err));
    assert_err(err, "private JWK refused");
    free(err);
    free(jwk);
    json_decref(mixed);
    json_decref(other);
}

/* ---- JWE ----------------------------------------------------------------------- */

static char *
inner_jws(void)
{
    json_t *c = good_claims();
    char *tok = sign("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}", c, tj_ec, "ES256");
    json_decref(c);
    return tok;
}

static void
expect_plain(const struct sesame_jose_keyset *ks, const char *jwe, const char *want)
{
    char *plain = NULL, *err = NULL;
    size_t pl = 0;
    int rc = sesame_jose_decrypt(jwe, strlen(jwe), ks, &plain, &pl, &err);
    if (rc != SESAME_OK)
        fail_msg("decrypt: %s", err ? err : "?");
    assert_string_equal(plain, want);
    assert_int_equal(pl, strlen(want));
    free(plain);
}

static void
expect_jwe_refused(const struct sesame_jose_keyset *ks, const char *jwe, const char *text)
{
    char *plain = (char *)0x1, *err = NULL;
    assert_int_equal(sesame_jose_decrypt(jwe, strlen(jwe), ks, &plain, NULL, &err), SESAME_ERROR);
    assert_null(plain);
    assert_err(err, text);
    free(err);
}

static char *
cjose_encrypt(EVP_PKEY *k, const char *alg, const char *enc, const char *kid, const char *plain)
{
    cjose_err cerr;
    cjose_jwk_t *jwk = tj_cjose_jwk(k, false);
    cjose_header_t *h = cjose_header_new(&cerr);
    cjose_header_set(h, CJOSE_HDR_ALG, alg, &cerr);
    cjose_header_set(h, CJOSE_HDR_ENC, enc, &cerr);
    if (kid)
        cjose_header_set(h, CJOSE_HDR_KID, kid, &cerr);
    cjose_header_set(h, CJOSE_HDR_CTY, "JWT", &cerr);
    cjose_jwe_t *jwe = cjose_jwe_encrypt(jwk, h, (const uint8_t *)plain, strlen(plain), &cerr);
    if (jwe == NULL)
        fail_msg("cjose encrypt %s/%s: %s", alg, enc, cerr.message);
    char *s = cjose_jwe_export(jwe, &cerr);
    char *out = strdup(s);
    cjose_get_dealloc()(s);
    cjose_jwe_release(jwe);
    cjose_header_release(h);
    cjose_jwk_release(jwk);
    return out;
}

static void
test_jwe_round_trips(void **state)
{
    struct gw g;
    gw_build(&g, tj_ec2, tj_ec, tj_rsa);
    char *inner = inner_jws();
    const char *ecdh_kid = sesame_jose_key_kid(g.ecdh);
    const char *rsa_kid = sesame_jose_key_kid(g.oaep);

    /* cjose, an independent implementation: RSA-OAEP and ECDH-ES. */
    char *jwe = cjose_encrypt(tj_rsa, "RSA-OAEP", "A256GCM", rsa_kid, inner);
    assert_true(sesame_jose_is_jwe(jwe, strlen(jwe)));
    expect_plain(g.ks, jwe, inner);
    free(jwe);
    jwe = cjose_encrypt(tj_ec, "ECDH-ES", "A256GCM", ecdh_kid, inner);
    expect_plain(g.ks, jwe, inner);
    free(jwe);
    /* Without kid: the only key loaded for the alg. */
    jwe = cjose_encrypt(tj_ec, "ECDH-ES", "A256GCM", NULL, inner);
    expect_plain(g.ks, jwe, inner);
    free(jwe);

    /* OpenSSL-built: RSA-OAEP-256, RSA-OAEP, ECDH-ES with apu/apv. */
    json_t *h = json_pack("{s:s,s:s,s:s,s:s}", "alg", "RSA-OAEP-256", "enc", "A256GCM", "kid",
                          rsa_kid, "cty", "JWT");
    jwe = tj_jwe_rsa(tj_rsa, h, "SHA256", inner);
    expect_plain(g.ks, jwe, inner);
    free(jwe);
    json_decref(h);
    h = json_pack("{s:s,s:s}", "alg", "RSA-OAEP", "enc", "A256GCM");
    jwe = tj_jwe_rsa(tj_rsa, h, "SHA1", inner);
    expect_plain(g.ks, jwe, inner);
    free(jwe);
    json_decref(h);
    h = json_pack("{s:s,s:s,s:s,s:s,s:s}", "alg", "ECDH-ES", "enc", "A256GCM", "kid", ecdh_kid,
                  "apu", "QWxpY2U", "apv", "Qm9i");
    jwe = tj_jwe_ecdh(tj_ec, h, inner, 16);
    expect_plain(g.ks, jwe, inner);
    free(jwe);
    json_decref(h);

    /* The FranceConnect+ path: decrypt, then verify the inner JWS and claims. */
    jwe = cjose_encrypt(tj_ec, "ECDH-ES", "A256GCM", ecdh_kid, inner);
    char *plain = NULL, *err = NULL;
    size_t pl = 0;
    assert_int_equal(sesame_jose_decrypt(jwe, strlen(jwe), g.ks, &plain, &pl, &err), SESAME_OK);
    assert_false(sesame_jose_is_jwe(plain, pl));
    json_t *claims = NULL;
    assert_int_equal(sesame_jose_verify(plain, pl, g_ks, ALLOW, NULL, 0, &claims, &err),
                     SESAME_OK);
    struct sesame_jose_expect e = expect();
    assert_int_equal(sesame_jose_check_id_token(claims, &e, &err), SESAME_OK);
    json_decref(claims);
    free(plain);
    free(jwe);
    free(inner);
    sesame_jose_keyset_free(g.ks);
}

static void
test_jwe_refusals(void **state)
{
    struct gw g;
    gw_build(&g, tj_ec2, tj_ec, tj_rsa);
    const char *plain = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
    const char *ecdh_kid = sesame_jose_key_kid(g.ecdh);
    char *jwe;

    /* RSA1_5 and A128GCM (cjose can produce both). */
    jwe = cjose_encrypt(tj_rsa, "RSA1_5", "A256GCM", NULL, plain);
    expect_jwe_refused(g.ks, jwe, "alg RSA1_5 refused");
    free(jwe);
    jwe = cjose_encrypt(tj_rsa, "RSA-OAEP", "A128GCM", NULL, plain);
    expect_jwe_refused(g.ks, jwe, "enc must be A256GCM");
    free(jwe);
    jwe = cjose_encrypt(tj_rsa, "RSA-OAEP", "A256CBC-HS512", NULL, plain);
    expect_jwe_refused(g.ks, jwe, "enc must be A256GCM");
    free(jwe);

    /* Header variants, built with OpenSSL. */
    static const struct {
        const char *hdr, *msg;
    } hdrs[] = {
        {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"zip\":\"DEF\"}", "zip"},
        {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"crit\":[\"x\"],\"x\":1}", "crit"},
        {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"cty\":\"json\"}", "cty must be JWT"},
        {"{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\"}", "unsupported alg"},
        {"{\"alg\":\"dir\",\"enc\":\"A256GCM\"}", "unsupported alg"},
        {"{\"alg\":\"ECDH-ES\"}", "lacks alg or enc"},
        {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"nope\"}",
         "no decryption key with this kid"},
        {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":5}", "kid is malformed"},
        {"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"apu\":\"@@\"}", "apu or apv"},
    };
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        json_t *h = json_loads(hdrs[i].hdr, 0, NULL);
        assert_non_null(h);
        jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
        expect_jwe_refused(g.ks, jwe, hdrs[i].msg);
        free(jwe);
        json_decref(h);
    }

    /* Truncated tag (the CVE-2023-37464 class). */
    json_t *h = json_pack("{s:s,s:s,s:s}", "alg", "ECDH-ES", "enc", "A256GCM", "kid", ecdh_kid);
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 15);
    expect_jwe_refused(g.ks, jwe, "16-byte tag");
    free(jwe);
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 1);
    expect_jwe_refused(g.ks, jwe, "16-byte tag");
    free(jwe);
    /* Tampered ciphertext, tag, and header (AAD). */
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    char *copy = strdup(jwe);
    /* first character of the ciphertext (always 6 full bits) */
    char *ct = strchr(strchr(strchr(copy, '.') + 1, '.') + 1, '.') + 1;
    *ct = *ct == 'A' ? 'B' : 'A';
    expect_jwe_refused(g.ks, copy, "decryption failed");
    /* first character of the tag */
    strcpy(copy, jwe);
    char *tg = strrchr(copy, '.') + 1;
    *tg = *tg == 'A' ? 'B' : 'A';
    expect_jwe_refused(g.ks, copy, "decryption failed");
    /* the protected header is the AAD: a changed header fails too */
    strcpy(copy, jwe);
    char *d = strchr(copy, '.');
    size_t hl64 = (size_t)(d - copy);
    size_t hlen;
    unsigned char *hj = tj_unb64(copy, hl64, &hlen);
    json_t *hh = json_loadb((char *)hj, hlen, 0, NULL);
    json_object_set_new(hh, "cty", json_string("JWT"));
    char *hs = json_dumps(hh, JSON_COMPACT);
    char *h64 = tj_b64s(hs);
    size_t nn = strlen(h64) + strlen(d) + 1;
    char *forged = malloc(nn);
    snprintf(forged, nn, "%s%s", h64, d);
    expect_jwe_refused(g.ks, forged, "decryption failed");
    free(forged);
    free(h64);
    free(hs);
    json_decref(hh);
    free(hj);
    free(copy);
    free(jwe);
    /* Encrypted to another EC key (kid says ours): agreement yields another key. */
    jwe = tj_jwe_ecdh(tj_ec2, h, plain, 16);
    expect_jwe_refused(g.ks, jwe, "decryption failed");
    free(jwe);
    json_decref(h);
    /* epk off the curve (invalid-curve attack), or on another curve. */
    h = json_pack("{s:s,s:s,s:s}", "alg", "ECDH-ES", "enc", "A256GCM", "kid", ecdh_kid);
    json_t *epk = tj_jwk_json(tj_ec2, false, NULL, NULL, NULL);
    json_object_set_new(epk, "y", json_string("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"));
    json_object_set_new(h, "epk", epk);
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    expect_jwe_refused(g.ks, jwe, "epk refused");
    free(jwe);
    json_object_set_new(h, "epk", tj_jwk_json(tj_ec384, false, NULL, NULL, NULL));
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    expect_jwe_refused(g.ks, jwe, "decryption key's curve");
    free(jwe);
    json_object_set_new(h, "epk", json_string("x"));
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    expect_jwe_refused(g.ks, jwe, "without an epk");
    free(jwe);
    json_object_set_new(h, "epk", tj_jwk_json(tj_ec2, true, NULL, NULL, NULL));
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    expect_jwe_refused(g.ks, jwe, "private part");
    free(jwe);
    json_decref(h);

    /* RSA-OAEP-256 token with the wrong OAEP digest; RSA token to another key. */
    h = json_pack("{s:s,s:s}", "alg", "RSA-OAEP-256", "enc", "A256GCM");
    jwe = tj_jwe_rsa(tj_rsa, h, "SHA1", plain);
    expect_jwe_refused(g.ks, jwe, "decryption failed");
    free(jwe);
    json_decref(h);
    /* Segment shapes. */
    expect_jwe_refused(g.ks, "a.b.c.d", "exactly five segments");
    expect_jwe_refused(g.ks, "a.b.c.d.e.f", "exactly five segments");
    expect_jwe_refused(g.ks, "....", "empty header");
    h = json_pack("{s:s,s:s,s:s}", "alg", "ECDH-ES", "enc", "A256GCM", "kid", ecdh_kid);
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    /* Non-empty encrypted key with ECDH-ES. */
    char *d1 = strchr(jwe, '.');
    size_t n = strlen(jwe) + 8;
    char *ek = malloc(n);
    snprintf(ek, n, "%.*s.AAAA%s", (int)(d1 - jwe), jwe, d1 + 1);
    expect_jwe_refused(g.ks, ek, "non-empty encrypted key");
    free(ek);
    /* IV of 16 bytes. */
    char *d2 = strchr(d1 + 1, '.'), *d3 = strchr(d2 + 1, '.');
    n = strlen(jwe) + 16;
    char *iv = malloc(n);
    snprintf(iv, n, "%.*s.AAAAAAAAAAAAAAAAAAAAAA%s", (int)(d2 - jwe), jwe, d3);
    expect_jwe_refused(g.ks, iv, "12-byte iv");
    free(iv);
    free(jwe);
    json_decref(h);
    /* Plaintext with a NUL byte. */
    h = json_pack("{s:s,s:s,s:s}", "alg", "ECDH-ES", "enc", "A256GCM", "kid", ecdh_kid);
    jwe = tj_jwe_ecdh_bytes(tj_ec, h, "abc\0def", 7, 16);
    expect_jwe_refused(g.ks, jwe, "NUL byte");
    free(jwe);
    json_decref(h);
    /* Keys loaded only for signing never decrypt. */
    struct sesame_jose_keyset *sig_only = sesame_jose_keyset_new();
    sesame_jose_keyset_add(sig_only, load_pem_file(tj_ec, "ES256"), NULL);
    h = json_pack("{s:s,s:s}", "alg", "ECDH-ES", "enc", "A256GCM");
    jwe = tj_jwe_ecdh(tj_ec, h, plain, 16);
    expect_jwe_refused(sig_only, jwe, "no decryption key for alg ECDH-ES");
    expect_jwe_refused(g_ks, jwe, "no decryption key");
    expect_jwe_refused(NULL, jwe, "no decryption key");
    free(jwe);
    json_decref(h);
    sesame_jose_keyset_free(sig_only);
    /* A JWE given to verify, and a JWS given to decrypt. */
    assert_false(sesame_jose_is_jwe(plain, strlen(plain)));
    expect_jwe_refused(g.ks, plain, "exactly five segments");
    sesame_jose_keyset_free(g.ks);
}

/* ---- Threads ----------------------------------------------------------------------- */

struct thread_arg {
    const char *tok;
    int ok;
};

static void *
verify_thread(void *p)
{
    struct thread_arg *a = p;
    for (int i = 0; i < 50; i++) {
        json_t *out = NULL;
        if (sesame_jose_verify(a->tok, strlen(a->tok), g_ks, ALLOW | SESAME_ALG_PS256, NULL, 0,
                               &out, NULL) == SESAME_OK)
            a->ok++;
        json_decref(out);
    }
    return NULL;
}

static void
test_shared_keyset_threads(void **state)
{
    json_t *c = good_claims();
    char *toks[4] = {
        sign("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", c, tj_ec, "ES256"),
        sign("{\"alg\":\"ES256\",\"kid\":\"ec2\"}", c, tj_ec2, "ES256"),
        sign("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", c, tj_rsa, "RS256"),
        sign("{\"alg\":\"PS256\",\"kid\":\"rsa1\"}", c, tj_rsa, "PS256"),
    };
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].tok = toks[i];
        args[i].ok = 0;
        assert_int_equal(pthread_create(&th[i], NULL, verify_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 50);
        free(toks[i]);
    }
    json_decref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyset_parse),
        cmocka_unit_test(test_keyset_refusals),
        cmocka_unit_test(test_thumbprint_rfc7638),
        cmocka_unit_test(test_verify_es256_rs256_ps256),
        cmocka_unit_test(test_verify_cjose_signed),
        cmocka_unit_test(test_verify_hs256_with_secret),
        cmocka_unit_test(test_wrong_signature),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_not_allowed_and_unknown),
        cmocka_unit_test(test_hs256_key_confusion),
        cmocka_unit_test(test_kid_selection),
        cmocka_unit_test(test_es256_signature_shape),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_claims_ok_variants),
        cmocka_unit_test(test_claims_refusals),
        cmocka_unit_test(test_claims_messages_quote_no_content),
        cmocka_unit_test(test_acr_rank),
        cmocka_unit_test(test_id_token_end_to_end),
        cmocka_unit_test(test_userinfo),
        cmocka_unit_test(test_gateway_keys_and_export),
        cmocka_unit_test(test_gateway_rs256_signing),
        cmocka_unit_test(test_gateway_key_refusals),
        cmocka_unit_test(test_gateway_key_from_jwk),
        cmocka_unit_test(test_jwe_round_trips),
        cmocka_unit_test(test_jwe_refusals),
        cmocka_unit_test(test_shared_keyset_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
