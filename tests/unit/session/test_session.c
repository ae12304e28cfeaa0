/* Unit tests of the session module's pure parts: the value codec, record
 * serialisation, key derivation, cookie parsing and Set-Cookie building, and
 * the sentinel address parser of the Redis client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/util.h"

#include "session/redis.h"
#include "session/session.h"

/* bytes 0x00..0x1f, base64url */
static const char ID0[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
/* SHA-256 of bytes 0x00..0x1f, computed independently */
static const char ID0_SHA256[] = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd";
static const char ID1[] = "ZZECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

static void
make_conf(struct sesame_conf_session *c, unsigned char fill)
{
    memset(c, 0, sizeof(*c));
    memset(c->secret, fill, sizeof(c->secret));
}

/* True when `val` (version || key id || nonce || ciphertext || tag) opens
 * under `key` with the NUL-terminated aad: AES-256-GCM done here directly. */
static bool
gcm_decrypts(const unsigned char key[32], const char *aad, const unsigned char *val, size_t vlen)
{
    if (vlen < 2 + 12 + 16)
        return false;
    size_t ctlen = vlen - 2 - 12 - 16;
    unsigned char *out = malloc(ctlen + 1);
    int n;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, val + 2) == 1 &&
              EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
              EVP_DecryptUpdate(ctx, out, &n, val + 14, (int)ctlen) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)(val + 14 + ctlen)) == 1 &&
              EVP_DecryptFinal_ex(ctx, out + ctlen, &n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    free(out);
    return ok;
}

/* ---- codec ---- */

static void
test_seal_open_round_trip(void **state)
{
    (void)state;
    struct sesame_conf_session c;
    make_conf(&c, 0x11);
    const char *aad = "sesame:s:abcd";
    const char *msg = "{\"t\":\"ville-a\",\"a\":\"42\"}";
    unsigned char *val;
    size_t vlen;
    assert_int_equal(sesame_session_seal(&c, aad, strlen(aad), msg, strlen(msg), &val, &vlen),
                     SESAME_OK);
    assert_int_equal(vlen, 2 + 12 + strlen(msg) + 16);
    assert_int_equal(val[0], 1);
    /* the plaintext does not appear in the value */
    assert_null(memmem(val, vlen, "ville-a", 7));
    char *plain;
    size_t plen;
    assert_int_equal(sesame_session_open(&c, aad, strlen(aad), val, vlen, &plain, &plen),
                     SESAME_OK);
    assert_int_equal(plen, strlen(msg));
    assert_string_equal(plain, msg);
    free(plain);

    /* a fresh nonce each time: same input, different values */
    unsigned char *val2;
    size_t vlen2;
    assert_int_equal(sesame_session_seal(&c, aad, strlen(aad), msg, strlen(msg), &val2, &vlen2),
                     SESAME_OK);
    assert_int_equal(vlen, vlen2);
    assert_memory_not_equal(val + 2, val2 + 2, 12);
    assert_memory_not_equal(val + 14, val2 + 14, vlen - 14);
    free(val);
    free(val2);

    /* empty plaintext works too */
    assert_int_equal(sesame_session_seal(&c, aad, strlen(aad), "", 0, &val, &vlen), SESAME_OK);
    assert_int_equal(sesame_session_open(&c, aad, strlen(aad), val, vlen, &plain, &plen),
                     SESAME_OK);
    assert_int_equal(plen, 0);
    free(plain);
    free(val);
}

static void
test_tamper_refused(void **state)
{
    (void)state;
    struct sesame_conf_session c;
    make_conf(&c, 0x22);
    const char *aad = "k";
    const char *msg = "some session payload";
    unsigned char *val;
    size_t vlen;
    assert_int_equal(sesame_session_seal(&c, aad, 1, msg, strlen(msg), &val, &vlen), SESAME_OK);
    char *plain = NULL;
    size_t plen;
    for (size_t i = 0; i < vlen; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            val[i] ^= (unsigned char)(1u << bit);
            assert_int_equal(sesame_session_open(&c, aad, 1, val, vlen, &plain, &plen),
                             SESAME_DECLINED);
            val[i] ^= (unsigned char)(1u << bit);
        }
    }
    /* truncated, extended, empty */
    assert_int_equal(sesame_session_open(&c, aad, 1, val, vlen - 1, &plain, &plen),
                     SESAME_DECLINED);
    unsigned char *longer = malloc(vlen + 1);
    memcpy(longer, val, vlen);
    longer[vlen] = 0;
    assert_int_equal(sesame_session_open(&c, aad, 1, longer, vlen + 1, &plain, &plen),
                     SESAME_DECLINED);
    free(longer);
    assert_int_equal(sesame_session_open(&c, aad, 1, val, 0, &plain, &plen), SESAME_DECLINED);
    assert_int_equal(sesame_session_open(&c, aad, 1, val, 29, &plain, &plen), SESAME_DECLINED);
    assert_int_equal(sesame_session_open(&c, aad, 1, NULL, 100, &plain, &plen), SESAME_DECLINED);
    assert_null(plain);
    /* untouched still opens */
    assert_int_equal(sesame_session_open(&c, aad, 1, val, vlen, &plain, &plen), SESAME_OK);
    free(plain);
    free(val);
}

static void
test_wrong_key_refused(void **state)
{
    (void)state;
    struct sesame_conf_session a, b;
    make_conf(&a, 0x33);
    make_conf(&b, 0x34);
    unsigned char *val;
    size_t vlen;
    assert_int_equal(sesame_session_seal(&a, "k", 1, "hello", 5, &val, &vlen), SESAME_OK);
    char *plain = NULL;
    size_t plen;
    assert_int_equal(sesame_session_open(&b, "k", 1, val, vlen, &plain, &plen), SESAME_DECLINED);
    /* whatever the key id byte says, another key does not open it */
    for (int id = 0; id < 256; id++) {
        val[1] = (unsigned char)id;
        assert_int_equal(sesame_session_open(&b, "k", 1, val, vlen, &plain, &plen),
                         SESAME_DECLINED);
    }
    assert_null(plain);
    free(val);
}

static void
test_previous_key_accepted(void **state)
{
    (void)state;
    struct sesame_conf_session old, rotated, dropped;
    make_conf(&old, 0x44);
    make_conf(&rotated, 0x45);
    memcpy(rotated.previous_secret, old.secret, sizeof(old.secret));
    rotated.has_previous_secret = true;
    make_conf(&dropped, 0x45);
    unsigned char *val;
    size_t vlen;
    assert_int_equal(sesame_session_seal(&old, "k", 1, "before", 6, &val, &vlen), SESAME_OK);
    char *plain;
    size_t plen;
    assert_int_equal(sesame_session_open(&rotated, "k", 1, val, vlen, &plain, &plen), SESAME_OK);
    assert_string_equal(plain, "before");
    free(plain);
    plain = NULL;
    assert_int_equal(sesame_session_open(&dropped, "k", 1, val, vlen, &plain, &plen),
                     SESAME_DECLINED);
    free(val);
    /* new writes use the new key: the old configuration cannot read them */
    assert_int_equal(sesame_session_seal(&rotated, "k", 1, "after", 5, &val, &vlen), SESAME_OK);
    assert_int_equal(sesame_session_open(&old, "k", 1, val, vlen, &plain, &plen),
                     SESAME_DECLINED);
    assert_int_equal(sesame_session_open(&dropped, "k", 1, val, vlen, &plain, &plen), SESAME_OK);
    free(plain);
    free(val);
}

static void
test_aad_binding(void **state)
{
    (void)state;
    struct sesame_conf_session c;
    make_conf(&c, 0x55);
    const char *k1 = "sesame:s:1111", *k2 = "sesame:s:2222";
    unsigned char *val;
    size_t vlen;
    assert_int_equal(sesame_session_seal(&c, k1, strlen(k1), "x", 1, &val, &vlen), SESAME_OK);
    char *plain = NULL;
    size_t plen;
    assert_int_equal(sesame_session_open(&c, k2, strlen(k2), val, vlen, &plain, &plen),
                     SESAME_DECLINED);
    assert_int_equal(sesame_session_open(&c, k1, strlen(k1) - 1, val, vlen, &plain, &plen),
                     SESAME_DECLINED);
    assert_int_equal(sesame_session_open(&c, "", 0, val, vlen, &plain, &plen), SESAME_DECLINED);
    assert_null(plain);
    assert_int_equal(sesame_session_open(&c, k1, strlen(k1), val, vlen, &plain, &plen),
                     SESAME_OK);
    free(plain);
    free(val);
}

/* Session records: a key per cookie, HMAC-SHA256(secret, "sesame session v2"
 * || raw id), so that the secret alone (with everything Redis holds: the
 * value, SHA-256 of the id in the key name) opens nothing. */
static void
test_record_key_per_cookie(void **state)
{
    (void)state;
    struct sesame_conf_session c;
    make_conf(&c, 0x66);
    char key[128];
    unsigned char hash[32];
    assert_int_equal(sesame_session_key("sesame:", ID0, key, sizeof(key), hash), SESAME_OK);
    const char *msg = "{\"t\":\"ville-a\",\"a\":\"42\",\"k\":{\"family_name\":\"DUBOIS\"}}";
    unsigned char *val;
    size_t vlen;
    assert_int_equal(sesame_session_record_seal(&c, ID0, key, strlen(key), msg, strlen(msg), &val,
                                                &vlen),
                     SESAME_OK);
    assert_int_equal(vlen, 2 + 12 + strlen(msg) + 16);
    assert_int_equal(val[0], 2);
    assert_null(memmem(val, vlen, "DUBOIS", 6));
    char *plain = NULL;
    size_t plen;
    /* with the cookie: opens */
    assert_int_equal(sesame_session_record_open(&c, ID0, key, strlen(key), val, vlen, &plain,
                                                &plen),
                     SESAME_OK);
    assert_string_equal(plain, msg);
    free(plain);
    plain = NULL;
    /* the documented derivation, computed here independently */
    unsigned char raw[32], rk[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (unsigned char)i;
    unsigned char label_id[17 + 32];
    memcpy(label_id, "sesame session v2", 17);
    memcpy(label_id + 17, raw, 32);
    unsigned int rklen = 0;
    assert_non_null(HMAC(EVP_sha256(), c.secret, 32, label_id, sizeof(label_id), rk, &rklen));
    assert_int_equal(rklen, 32);
    assert_true(gcm_decrypts(rk, key, val, vlen));
    /* what a Redis dump plus the secret gives opens nothing: the secret as
     * the key (former format), the record key derived from the key name's
     * hash instead of the id, the hash itself as a key */
    assert_false(gcm_decrypts(c.secret, key, val, vlen));
    unsigned char from_hash[17 + 32], hk[32];
    memcpy(from_hash, "sesame session v2", 17);
    memcpy(from_hash + 17, hash, 32);
    assert_non_null(HMAC(EVP_sha256(), c.secret, 32, from_hash, sizeof(from_hash), hk, &rklen));
    assert_false(gcm_decrypts(hk, key, val, vlen));
    assert_false(gcm_decrypts(hash, key, val, vlen));
    assert_int_equal(sesame_session_open(&c, key, strlen(key), val, vlen, &plain, &plen),
                     SESAME_DECLINED);
    char hash_as_id[SESAME_SESSION_ID_LEN + 1];
    sesame_util_b64url_encode(hash_as_id, hash, 32);
    assert_int_equal(sesame_session_record_open(&c, hash_as_id, key, strlen(key), val, vlen,
                                                &plain, &plen),
                     SESAME_DECLINED);
    /* another cookie, another key name, an invalid id: nothing */
    assert_int_equal(sesame_session_record_open(&c, ID1, key, strlen(key), val, vlen, &plain,
                                                &plen),
                     SESAME_DECLINED);
    assert_int_equal(sesame_session_record_open(&c, ID0, "sesame:s:0", 10, val, vlen, &plain,
                                                &plen),
                     SESAME_DECLINED);
    assert_int_equal(sesame_session_record_open(&c, "short", key, strlen(key), val, vlen, &plain,
                                                &plen),
                     SESAME_DECLINED);
    assert_null(plain);
    /* rotation: the previous secret still derives the key of old records */
    struct sesame_conf_session rotated, dropped;
    make_conf(&rotated, 0x67);
    memcpy(rotated.previous_secret, c.secret, sizeof(c.secret));
    rotated.has_previous_secret = true;
    make_conf(&dropped, 0x67);
    assert_int_equal(sesame_session_record_open(&rotated, ID0, key, strlen(key), val, vlen, &plain,
                                                &plen),
                     SESAME_OK);
    free(plain);
    plain = NULL;
    assert_int_equal(sesame_session_record_open(&dropped, ID0, key, strlen(key), val, vlen,
                                                &plain, &plen),
                     SESAME_DECLINED);
    free(val);
    /* a value of the former format (sealed under the secret itself) is not
     * a record, and a record is not such a value */
    assert_int_equal(sesame_session_seal(&c, key, strlen(key), msg, strlen(msg), &val, &vlen),
                     SESAME_OK);
    assert_int_equal(sesame_session_record_open(&c, ID0, key, strlen(key), val, vlen, &plain,
                                                &plen),
                     SESAME_DECLINED);
    val[0] = 2;
    assert_int_equal(sesame_session_record_open(&c, ID0, key, strlen(key), val, vlen, &plain,
                                                &plen),
                     SESAME_DECLINED);
    assert_null(plain);
    free(val);
    assert_int_equal(sesame_session_record_seal(&c, "short", key, strlen(key), msg, strlen(msg),
                                                &val, &vlen),
                     SESAME_ERROR);
}

/* ---- records ---- */

static void
test_record_round_trip(void **state)
{
    (void)state;
    struct sesame_session *s = sesame_session_new();
    s->tenant = strdup("ville-a");
    s->account = strdup("acc-1");
    s->provider = strdup("fc");
    s->acr = strdup("eidas1");
    s->created_ms = 1700000000000;
    s->last_seen_ms = 1700000001000;
    s->expires_ms = 1700028800000;
    s->id_token = strdup("eyJ.eyJ.sig");
    s->claims = json_pack("{s:s, s:s, s:{s:s}}", "given_name", "Angela Claire Louise",
                          "birthdate", "1962-08-24", "address", "city", "Paris");
    s->attributes = json_pack("{s:b}", "resident", 1);
    size_t len;
    char *json = sesame_session_serialize(s, &len);
    assert_non_null(json);
    assert_int_equal(len, strlen(json));
    struct sesame_session *p = sesame_session_parse(json, len);
    assert_non_null(p);
    assert_string_equal(p->tenant, "ville-a");
    assert_string_equal(p->account, "acc-1");
    assert_string_equal(p->provider, "fc");
    assert_string_equal(p->acr, "eidas1");
    assert_int_equal(p->created_ms, 1700000000000);
    assert_int_equal(p->last_seen_ms, 1700000001000);
    assert_int_equal(p->expires_ms, 1700028800000);
    assert_string_equal(p->id_token, "eyJ.eyJ.sig");
    assert_true(json_equal(p->claims, s->claims));
    assert_true(json_equal(p->attributes, s->attributes));
    free(json);
    sesame_session_free(p);

    /* optional fields may be absent */
    struct sesame_session *m = sesame_session_new();
    m->tenant = strdup("t");
    m->account = strdup("a");
    json = sesame_session_serialize(m, &len);
    p = sesame_session_parse(json, len);
    assert_non_null(p);
    assert_null(p->provider);
    assert_null(p->id_token);
    assert_null(p->claims);
    free(json);
    sesame_session_free(p);

    /* tenant and account are required */
    free(m->account);
    m->account = NULL;
    assert_null(sesame_session_serialize(m, &len));
    sesame_session_free(m);

    /* references */
    sesame_session_ref(s);
    assert_int_equal(s->refs, 2);
    sesame_session_free(s);
    assert_int_equal(s->refs, 1);
    sesame_session_free(s);
    sesame_session_free(NULL);
}

static void
test_record_parse_refuses(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "null",
        "[]",
        "\"x\"",
        "{",
        "{\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1}",                 /* no tenant */
        "{\"t\":\"x\",\"c\":1,\"l\":1,\"e\":1}",                 /* no account */
        "{\"t\":1,\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1}",         /* tenant not a string */
        "{\"t\":\"x\",\"a\":\"1\",\"l\":1,\"e\":1}",             /* no created */
        "{\"t\":\"x\",\"a\":\"1\",\"c\":\"1\",\"l\":1,\"e\":1}", /* created not a number */
        "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1.5}",   /* not an integer */
        "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1,\"k\":[]}",
        "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1,\"x\":\"s\"}",
        "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1}\n",        /* empty ID token */
        "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1}\nab cd",   /* space in it */
        "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1}\na\nb",   /* two lines */
        "{\"t\":\"x\",\"t\":\"y\",\"a\":\"1\",\"c\":1,\"l\":1,\"e\":1}", /* duplicate */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sesame_session *s = sesame_session_parse(bad[i], strlen(bad[i]));
        if (s != NULL)
            fail_msg("accepted: %s", bad[i]);
    }
    const char *good = "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":2,\"e\":3}";
    struct sesame_session *s = sesame_session_parse(good, strlen(good));
    assert_non_null(s);
    assert_null(s->id_token);
    sesame_session_free(s);
    const char *with_token = "{\"t\":\"x\",\"a\":\"1\",\"c\":1,\"l\":2,\"e\":3}\neyJ.a-b_c.d";
    s = sesame_session_parse(with_token, strlen(with_token));
    assert_non_null(s);
    assert_string_equal(s->id_token, "eyJ.a-b_c.d");
    sesame_session_free(s);
}

/* ---- key derivation ---- */

static void
test_key_derivation(void **state)
{
    (void)state;
    char key[128];
    unsigned char hash[32];
    assert_int_equal(sesame_session_key("sesame:", ID0, key, sizeof(key), hash), SESAME_OK);
    char expect[128];
    snprintf(expect, sizeof(expect), "sesame:s:%s", ID0_SHA256);
    assert_string_equal(key, expect);
    assert_int_equal(hash[0], 0x63);
    assert_int_equal(hash[31], 0xdd);
    /* the key does not contain the id */
    assert_null(strstr(key, ID0));
    /* another id, another key */
    char key1[128];
    assert_int_equal(sesame_session_key("sesame:", ID1, key1, sizeof(key1), NULL), SESAME_OK);
    assert_string_not_equal(key, key1);
    /* the prefix is used as given */
    assert_int_equal(sesame_session_key("", ID0, key, sizeof(key), NULL), SESAME_OK);
    assert_string_equal(key + 2, ID0_SHA256);
    assert_memory_equal(key, "s:", 2);
    /* buffer too small */
    assert_int_equal(sesame_session_key("sesame:", ID0, key, 20, NULL), SESAME_ERROR);

    /* invalid ids */
    char bad[64];
    assert_int_equal(sesame_session_key("p:", NULL, key, sizeof(key), NULL), SESAME_DECLINED);
    assert_int_equal(sesame_session_key("p:", "", key, sizeof(key), NULL), SESAME_DECLINED);
    snprintf(bad, sizeof(bad), "%.42s", ID0); /* 42 characters */
    assert_int_equal(sesame_session_key("p:", bad, key, sizeof(key), NULL), SESAME_DECLINED);
    snprintf(bad, sizeof(bad), "%sA", ID0); /* 44 */
    assert_int_equal(sesame_session_key("p:", bad, key, sizeof(key), NULL), SESAME_DECLINED);
    snprintf(bad, sizeof(bad), "%s", ID0);
    bad[5] = '+'; /* not base64url */
    assert_int_equal(sesame_session_key("p:", bad, key, sizeof(key), NULL), SESAME_DECLINED);
    snprintf(bad, sizeof(bad), "%s", ID0);
    bad[42] = '9'; /* non-zero trailing bits: not canonical */
    assert_int_equal(sesame_session_key("p:", bad, key, sizeof(key), NULL), SESAME_DECLINED);
    snprintf(bad, sizeof(bad), "%s", ID0);
    bad[10] = '=';
    assert_int_equal(sesame_session_key("p:", bad, key, sizeof(key), NULL), SESAME_DECLINED);
}

/* ---- cookies ---- */

static int
find(const char *h, char *out)
{
    return sesame_session_cookie_find(h, strlen(h), "sesame", out);
}

static void
test_cookie_basic(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1];
    char h[512];
    snprintf(h, sizeof(h), "a=b; sesame=%s; c=d", ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    assert_string_equal(out, ID0);
    snprintf(h, sizeof(h), "sesame=%s", ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    snprintf(h, sizeof(h), "x=y;sesame=%s;z", ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    snprintf(h, sizeof(h), " \tsesame = \t%s \t; other=1", ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    assert_string_equal(out, ID0);
    /* the length argument is honoured: the header need not be NUL-terminated */
    snprintf(h, sizeof(h), "sesame=%sXYZ", ID0);
    assert_int_equal(sesame_session_cookie_find(h, strlen(h) - 3, "sesame", out), SESAME_OK);
    assert_int_equal(sesame_session_cookie_find(h, strlen(h), "sesame", out), SESAME_DECLINED);

    /* absent */
    assert_int_equal(find("", out), SESAME_DECLINED);
    assert_string_equal(out, "");
    assert_int_equal(find("a=b; c=d", out), SESAME_DECLINED);
    assert_int_equal(sesame_session_cookie_find(NULL, 10, "sesame", out), SESAME_DECLINED);
    assert_int_equal(sesame_session_cookie_find("x", 1, "", out), SESAME_DECLINED);
    /* other names */
    snprintf(h, sizeof(h), "xsesame=%s; sesame2=%s; SESAME=%s; sesam=%s", ID0, ID0, ID0, ID0);
    assert_int_equal(find(h, out), SESAME_DECLINED);
    /* missing '=' */
    assert_int_equal(find("sesame", out), SESAME_DECLINED);
    snprintf(h, sizeof(h), "sesame; foo; ;;; sesame=%s", ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    /* quoted values are not ours */
    snprintf(h, sizeof(h), "sesame=\"%s\"", ID0);
    assert_int_equal(find(h, out), SESAME_DECLINED);
}

static void
test_cookie_bad_lengths(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1];
    char h[512];
    snprintf(h, sizeof(h), "sesame=%.42s", ID0);
    assert_int_equal(find(h, out), SESAME_DECLINED);
    snprintf(h, sizeof(h), "sesame=%sA", ID0);
    assert_int_equal(find(h, out), SESAME_DECLINED);
    assert_int_equal(find("sesame=", out), SESAME_DECLINED);
    snprintf(h, sizeof(h), "sesame=%s", ID0);
    h[7 + 20] = '.';
    assert_int_equal(find(h, out), SESAME_DECLINED);
    snprintf(h, sizeof(h), "sesame=%s", ID0);
    h[7 + 42] = 'B'; /* non-canonical last character */
    assert_int_equal(find(h, out), SESAME_DECLINED);
    /* a bad value is ignored, a good one with the same name is used */
    snprintf(h, sizeof(h), "sesame=short; sesame=%s; sesame=%sXX", ID0, ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    assert_string_equal(out, ID0);
}

static void
test_cookie_repeated(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1];
    char h[512];
    snprintf(h, sizeof(h), "sesame=%s; sesame=%s", ID0, ID0);
    assert_int_equal(find(h, out), SESAME_OK);
    assert_string_equal(out, ID0);
    snprintf(h, sizeof(h), "sesame=%s; sesame=%s", ID0, ID1);
    assert_int_equal(find(h, out), SESAME_DECLINED);
    assert_string_equal(out, "");
    snprintf(h, sizeof(h), "sesame=%s; a=1; sesame=%s; sesame=%s", ID0, ID0, ID1);
    assert_int_equal(find(h, out), SESAME_DECLINED);
}

static void
test_cookie_many(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1];
    size_t cap = 10000 * 16 + 128;
    char *h = malloc(cap);
    /* 10000 cookies, ours last: beyond the count limit */
    size_t n = 0;
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(h + n, cap - n, "c%d=v; ", i);
    n += (size_t)snprintf(h + n, cap - n, "sesame=%s", ID0);
    assert_int_equal(sesame_session_cookie_find(h, n, "sesame", out), SESAME_DECLINED);
    /* ours first, then 10000 others: found */
    n = (size_t)snprintf(h, cap, "sesame=%s", ID0);
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(h + n, cap - n, "; c%d=v", i);
    assert_int_equal(sesame_session_cookie_find(h, n, "sesame", out), SESAME_OK);
    /* ours 64th: examined; 65th: not */
    n = 0;
    for (int i = 0; i < 63; i++)
        n += (size_t)snprintf(h + n, cap - n, "c%d=v; ", i);
    size_t base = n;
    snprintf(h + n, cap - n, "sesame=%s", ID0);
    assert_int_equal(sesame_session_cookie_find(h, strlen(h), "sesame", out), SESAME_OK);
    n = base + (size_t)snprintf(h + base, cap - base, "c63=v; sesame=%s", ID0);
    assert_int_equal(sesame_session_cookie_find(h, n, "sesame", out), SESAME_DECLINED);
    /* 10000 copies of our own cookie with two values: no crash, bounded */
    n = 0;
    for (int i = 0; i < 10000 && n + 60 < cap; i++)
        n += (size_t)snprintf(h + n, cap - n, "sesame=%s;", i % 2 ? ID0 : ID1);
    assert_int_equal(sesame_session_cookie_find(h, n, "sesame", out), SESAME_DECLINED);
    free(h);
}

static void
test_cookie_huge_header(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1];
    size_t big = 1024 * 1024;
    char *h = malloc(big + 128);
    int pre = snprintf(h, 128, "sesame=%s; junk=", ID0);
    memset(h + pre, 'x', big - (size_t)pre);
    assert_int_equal(sesame_session_cookie_find(h, big, "sesame", out), SESAME_OK);
    /* ours beyond the scan limit */
    memset(h, 'x', big);
    memcpy(h, "junk=", 5);
    h[big - 60] = ';';
    snprintf(h + big - 59, 60, "sesame=%s", ID0);
    assert_int_equal(sesame_session_cookie_find(h, strlen(h), "sesame", out), SESAME_DECLINED);
    /* a longer value cut by the limit exactly after 43 characters */
    size_t limit = SESAME_SESSION_COOKIE_SCAN_MAX;
    memset(h, 'y', big);
    memcpy(h, "a=", 2);
    size_t start = limit - 43 - 7 - 2;
    memcpy(h + start, "; sesame=", 9);
    memcpy(h + start + 9, ID0, 43);
    memcpy(h + start + 9 + 43, "ABCD", 4); /* the value continues past the limit */
    h[start + 9 + 43 + 4] = '\0';
    assert_int_equal(start + 9 + 43, limit);
    assert_int_equal(sesame_session_cookie_find(h, strlen(h), "sesame", out), SESAME_DECLINED);
    /* the same header ending at the limit is whole and accepted */
    assert_int_equal(sesame_session_cookie_find(h, limit, "sesame", out), SESAME_OK);
    free(h);
}

static void
test_cookie_garbage(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1];
    unsigned char buf[300];
    uint32_t x = 12345;
    static const char alphabet[] = ";= \t\"\\,sesameAB0-_\x00\xff\r\n";
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        x = x * 1103515245u + 12345u;
        size_t len = (x >> 8) % sizeof(buf);
        for (; n < len; n++) {
            x = x * 1103515245u + 12345u;
            buf[n] = (unsigned char)alphabet[(x >> 16) % (sizeof(alphabet) - 1)];
        }
        int rc = sesame_session_cookie_find((const char *)buf, len, "sesame", out);
        assert_true(rc == SESAME_DECLINED || rc == SESAME_OK);
        if (rc == SESAME_OK)
            assert_int_equal(strlen(out), SESAME_SESSION_ID_LEN);
        else
            assert_string_equal(out, "");
    }
    /* NUL bytes are just bytes */
    char h[128];
    int n = snprintf(h, sizeof(h), "sesame=%s", ID0);
    h[10] = '\0';
    assert_int_equal(sesame_session_cookie_find(h, (size_t)n, "sesame", out), SESAME_DECLINED);
}

static void
test_set_cookie(void **state)
{
    (void)state;
    char buf[512];
    struct sesame_conf_tenant t;
    memset(&t, 0, sizeof(t));
    t.cookie_secure = true;
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "sesame", ID0, &t, 28800),
                     SESAME_OK);
    char expect[512];
    snprintf(expect, sizeof(expect),
             "sesame=%s; Path=/; Max-Age=28800; HttpOnly; SameSite=Lax; Secure", ID0);
    assert_string_equal(buf, expect);
    t.cookie_domain = (char *)"ville-a.fr";
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "sesame", ID0, &t, 60),
                     SESAME_OK);
    snprintf(expect, sizeof(expect),
             "sesame=%s; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure; Domain=ville-a.fr",
             ID0);
    assert_string_equal(buf, expect);
    /* deletion */
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "sesame", NULL, &t, 60),
                     SESAME_OK);
    assert_string_equal(buf, "sesame=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure; "
                             "Domain=ville-a.fr");
    /* plain-HTTP localhost tenant */
    t.cookie_domain = NULL;
    t.cookie_secure = false;
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "s", "v", &t, 1),
                     SESAME_OK);
    assert_string_equal(buf, "s=v; Path=/; Max-Age=1; HttpOnly; SameSite=Lax");
    /* session_cookie = browser: no Max-Age (nor Expires), gone with the
     * browser; deleting still says Max-Age=0 */
    t.session_cookie = SESAME_COOKIE_BROWSER;
    t.cookie_secure = true;
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "sesame", ID0, &t, 28800),
                     SESAME_OK);
    snprintf(expect, sizeof(expect), "sesame=%s; Path=/; HttpOnly; SameSite=Lax; Secure", ID0);
    assert_string_equal(buf, expect);
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "sesame", NULL, &t, 0),
                     SESAME_OK);
    assert_string_equal(buf, "sesame=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure");
    t.session_cookie = SESAME_COOKIE_PERSISTENT;
    t.cookie_secure = false;
    /* refused */
    assert_int_equal(sesame_session_set_cookie_header(buf, 20, "sesame", ID0, &t, 1),
                     SESAME_ERROR);
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "a b", "v", &t, 1),
                     SESAME_ERROR);
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "a;b", "v", &t, 1),
                     SESAME_ERROR);
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "", "v", &t, 1),
                     SESAME_ERROR);
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "a", "v;Domain=x", &t, 1),
                     SESAME_ERROR);
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "a", "v\r\nX: y", &t, 1),
                     SESAME_ERROR);
    t.cookie_domain = (char *)"evil.fr; Path=/x";
    assert_int_equal(sesame_session_set_cookie_header(buf, sizeof(buf), "a", "v", &t, 1),
                     SESAME_ERROR);
}

static void
test_binding(void **state)
{
    (void)state;
    char out[SESAME_SESSION_ID_LEN + 1], out2[SESAME_SESSION_ID_LEN + 1];
    char h[256];
    bool created;
    snprintf(h, sizeof(h), "x=1; sesame_login=%s", ID1);
    assert_int_equal(sesame_session_binding(h, strlen(h), "sesame_login", out, &created),
                     SESAME_OK);
    assert_false(created);
    assert_string_equal(out, ID1);
    assert_int_equal(sesame_session_binding("x=1", 3, "sesame_login", out, &created), SESAME_OK);
    assert_true(created);
    assert_int_equal(strlen(out), SESAME_SESSION_ID_LEN);
    char key[128];
    assert_int_equal(sesame_session_key("", out, key, sizeof(key), NULL), SESAME_OK);
    assert_int_equal(sesame_session_binding(NULL, 0, "sesame_login", out2, &created), SESAME_OK);
    assert_true(created);
    assert_string_not_equal(out, out2);
}

static void
test_hostport(void **state)
{
    (void)state;
    char *host;
    int port;
    assert_int_equal(sesame_redis_parse_hostport("127.0.0.1:26379", &host, &port), SESAME_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 26379);
    free(host);
    assert_int_equal(sesame_redis_parse_hostport("[::1]:1", &host, &port), SESAME_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 1);
    free(host);
    assert_int_equal(sesame_redis_parse_hostport("redis.example:65535", &host, &port), SESAME_OK);
    assert_string_equal(host, "redis.example");
    free(host);
    static const char *bad[] = {"", "host", "host:", ":1", "host:0", "host:65536", "host:-1",
                                "host:1x", "::1:6379", "[::1]6379", "[::1]:", "[]:1",
                                "host:123456"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sesame_redis_parse_hostport(bad[i], &host, &port) != SESAME_ERROR)
            fail_msg("accepted: %s", bad[i]);
    assert_int_equal(sesame_redis_parse_hostport(NULL, &host, &port), SESAME_ERROR);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_open_round_trip),
        cmocka_unit_test(test_tamper_refused),
        cmocka_unit_test(test_wrong_key_refused),
        cmocka_unit_test(test_previous_key_accepted),
        cmocka_unit_test(test_aad_binding),
        cmocka_unit_test(test_record_key_per_cookie),
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test(test_record_parse_refuses),
        cmocka_unit_test(test_key_derivation),
        cmocka_unit_test(test_cookie_basic),
        cmocka_unit_test(test_cookie_bad_lengths),
        cmocka_unit_test(test_cookie_repeated),
        cmocka_unit_test(test_cookie_many),
        cmocka_unit_test(test_cookie_huge_header),
        cmocka_unit_test(test_cookie_garbage),
        cmocka_unit_test(test_set_cookie),
        cmocka_unit_test(test_binding),
        cmocka_unit_test(test_hostport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
