#include "session/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

#define VALUE_VERSION 1  /* sealed under the server secret */
#define RECORD_VERSION 2 /* a session record, under its own key */
#define RECORD_LABEL "sesame session v2"
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN (2 + NONCE_LEN)
#define HASH_HEX_LEN 64
#define CACHE_BUCKETS 16384 /* power of two */
#define STATE_MIN 22
#define STATE_MAX 128
#define ACCOUNT_MAX 512

/* ---- records ---- */

struct sesame_session *
sesame_session_new(void)
{
    struct sesame_session *s = sesame_calloc(1, sizeof(*s));
    s->refs = 1;
    return s;
}

struct sesame_session *
sesame_session_ref(struct sesame_session *s)
{
    s->refs++;
    return s;
}

void
sesame_session_free(struct sesame_session *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    free(s->tenant);
    free(s->account);
    free(s->provider);
    free(s->acr);
    if (s->id_token) {
        OPENSSL_cleanse(s->id_token, strlen(s->id_token));
        free(s->id_token);
    }
    json_decref(s->claims);
    json_decref(s->attributes);
    free(s->tree);
    if (s->parent) {
        OPENSSL_cleanse(s->parent, strlen(s->parent));
        free(s->parent);
    }
    free(s);
}

/* ---- key derivation ---- */

static bool
id_decode(const char *cookie_id, unsigned char raw[32])
{
    if (cookie_id == NULL || strnlen(cookie_id, SESAME_SESSION_ID_LEN + 1) != SESAME_SESSION_ID_LEN)
        return false;
    unsigned char buf[SESAME_SESSION_ID_LEN];
    long n = sesame_util_b64url_decode(buf, cookie_id, SESAME_SESSION_ID_LEN);
    if (n != 32)
        return false;
    memcpy(raw, buf, 32);
    return true;
}

int
sesame_session_key(const char *prefix, const char *cookie_id, char *key, size_t keysize,
                   unsigned char hash[32])
{
    unsigned char raw[32], h[32];
    if (!id_decode(cookie_id, raw))
        return SESAME_DECLINED;
    sesame_util_sha256(raw, sizeof(raw), h);
    OPENSSL_cleanse(raw, sizeof(raw));
    char hex[HASH_HEX_LEN + 1];
    sesame_util_hex(hex, h, sizeof(h));
    int n = snprintf(key, keysize, "%ss:%s", prefix ? prefix : "", hex);
    if (n < 0 || (size_t)n >= keysize)
        return SESAME_ERROR;
    if (hash != NULL)
        memcpy(hash, h, sizeof(h));
    return SESAME_OK;
}

static char *
key_from_hash(const char *prefix, const unsigned char hash[32])
{
    char hex[HASH_HEX_LEN + 1];
    sesame_util_hex(hex, hash, 32);
    return sesame_asprintf("%ss:%s", prefix, hex);
}

static char *
index_key(const char *prefix, const char *tenant, const char *account)
{
    return sesame_asprintf("%sa:%s:%s", prefix, tenant, account);
}

static bool
hex_decode32(const char *s, size_t len, unsigned char out[32])
{
    if (len != HASH_HEX_LEN)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + (size_t)k];
            int d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else
                return false;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return true;
}

/* ---- JSON ---- */

static void
set_str(json_t *o, const char *k, const char *v)
{
    if (v != NULL)
        json_object_set_new(o, k, json_string(v));
}

/* The record is compact JSON, then, when there is an ID token, a newline and
 * the token as is: the token (about 1 KB, needed only at logout) then costs a
 * copy, not a JSON string decode, on every session load. */
char *
sesame_session_serialize(const struct sesame_session *s, size_t *len)
{
    if (s->tenant == NULL || s->account == NULL)
        return NULL;
    if (s->id_token != NULL) {
        for (const char *p = s->id_token; *p; p++)
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
                return NULL; /* compact JWS/JWE: printable ASCII only */
    }
    json_t *o = json_object();
    set_str(o, "t", s->tenant);
    set_str(o, "a", s->account);
    set_str(o, "p", s->provider);
    set_str(o, "r", s->acr);
    json_object_set_new(o, "c", json_integer(s->created_ms));
    json_object_set_new(o, "l", json_integer(s->last_seen_ms));
    json_object_set_new(o, "e", json_integer(s->expires_ms));
    if (s->claims != NULL)
        json_object_set(o, "k", s->claims);
    if (s->attributes != NULL)
        json_object_set(o, "x", s->attributes);
    set_str(o, "tree", s->tree);
    set_str(o, "parent", s->parent);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL)
        return NULL; /* a string that is not valid UTF-8 */
    size_t n = strlen(text);
    if (s->id_token != NULL) {
        size_t t = strlen(s->id_token);
        text = sesame_realloc(text, n + 1 + t + 1);
        text[n] = '\n';
        memcpy(text + n + 1, s->id_token, t + 1);
        n += 1 + t;
    }
    *len = n;
    return text;
}

static bool
get_str(json_t *o, const char *k, bool required, char **out)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL)
        return !required;
    if (!json_is_string(v))
        return false;
    *out = sesame_strndup(json_string_value(v), json_string_length(v));
    return true;
}

static bool
get_int(json_t *o, const char *k, int64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static bool
get_obj(json_t *o, const char *k, json_t **out)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL)
        return true;
    if (!json_is_object(v))
        return false;
    *out = json_incref(v);
    return true;
}

struct sesame_session *
sesame_session_parse(const char *json, size_t len)
{
    /* compact JSON never holds a raw newline: the first one ends it */
    const char *nl = memchr(json, '\n', len);
    size_t jlen = nl ? (size_t)(nl - json) : len;
    json_error_t jerr;
    json_t *o = json_loadb(json, jlen, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL)
        return NULL;
    struct sesame_session *s = sesame_session_new();
    bool ok = json_is_object(o) && get_str(o, "t", true, &s->tenant) &&
              get_str(o, "a", true, &s->account) && get_str(o, "p", false, &s->provider) &&
              get_str(o, "r", false, &s->acr) && get_int(o, "c", &s->created_ms) &&
              get_int(o, "l", &s->last_seen_ms) && get_int(o, "e", &s->expires_ms) &&
              get_obj(o, "k", &s->claims) && get_obj(o, "x", &s->attributes) &&
              get_str(o, "tree", false, &s->tree) && get_str(o, "parent", false, &s->parent);
    json_decref(o);
    if (ok && nl != NULL) {
        const char *t = nl + 1;
        size_t tlen = len - jlen - 1;
        for (size_t i = 0; i < tlen && ok; i++)
            ok = (unsigned char)t[i] > 0x20 && (unsigned char)t[i] < 0x7f;
        if (ok && tlen > 0)
            s->id_token = sesame_strndup(t, tlen);
        else
            ok = false;
    }
    if (!ok) {
        sesame_session_free(s);
        return NULL;
    }
    return s;
}

/* ---- AES-256-GCM ---- */

/* The value layout is version (1) || key id (1) || nonce (12) || ciphertext
 * || tag (16). VALUE_VERSION: sealed under the server secret itself
 * (sesame_session_seal: pending logins, hop tickets). RECORD_VERSION: a
 * session record, sealed under a key of its own (record_key). The key id is
 * that of the server secret in both cases, so that a rotation tries only the
 * secret the value was written with. */

static unsigned char
key_id(const unsigned char key[SESAME_SESSION_KEY_LEN])
{
    static const char label[] = "sesame session key id";
    unsigned char buf[sizeof(label) - 1 + SESAME_SESSION_KEY_LEN], h[32];
    memcpy(buf, label, sizeof(label) - 1);
    memcpy(buf + sizeof(label) - 1, key, SESAME_SESSION_KEY_LEN);
    sesame_util_sha256(buf, sizeof(buf), h);
    OPENSSL_cleanse(buf, sizeof(buf));
    return h[0];
}

/* The key of one session record: HMAC-SHA256(secret, RECORD_LABEL || raw
 * id). Redis holds only SHA-256(raw id): without the cookie, the secret
 * alone derives nothing. */
static bool
record_key(const unsigned char secret[SESAME_SESSION_KEY_LEN], const unsigned char raw[32],
           unsigned char out[SESAME_SESSION_KEY_LEN])
{
    unsigned char msg[sizeof(RECORD_LABEL) - 1 + 32];
    memcpy(msg, RECORD_LABEL, sizeof(RECORD_LABEL) - 1);
    memcpy(msg + sizeof(RECORD_LABEL) - 1, raw, 32);
    unsigned int len = 0;
    bool ok = HMAC(EVP_sha256(), secret, SESAME_SESSION_KEY_LEN, msg, sizeof(msg), out, &len) !=
                  NULL &&
              len == SESAME_SESSION_KEY_LEN;
    OPENSSL_cleanse(msg, sizeof(msg));
    return ok;
}

/* Seals plain under `key` into a malloc'd value of `version` whose key id is
 * kid. */
static int
seal_with(unsigned char version, unsigned char kid, const unsigned char key[SESAME_SESSION_KEY_LEN],
          const void *aad, size_t aadlen, const void *plain, size_t plainlen, unsigned char **out,
          size_t *outlen)
{
    if (plainlen > SESAME_SESSION_VALUE_MAX || aadlen > INT32_MAX)
        return SESAME_ERROR;
    size_t total = HEADER_LEN + plainlen + TAG_LEN;
    unsigned char *buf = sesame_malloc(total);
    buf[0] = version;
    buf[1] = kid;
    unsigned char *nonce = buf + 2;
    unsigned char *ct = buf + HEADER_LEN;
    int result = SESAME_ERROR;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n;
    if (ctx == NULL || sesame_util_random(nonce, NONCE_LEN) != SESAME_OK)
        goto done;
    if (EVP_EncryptInit_ex(ctx, sesame_util_aes256gcm(), NULL, key, nonce) != 1)
        goto done;
    if (aadlen > 0 && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1)
        goto done;
    if (plainlen > 0 && EVP_EncryptUpdate(ctx, ct, &n, plain, (int)plainlen) != 1)
        goto done;
    if (EVP_EncryptFinal_ex(ctx, ct + plainlen, &n) != 1)
        goto done;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + plainlen) != 1)
        goto done;
    result = SESAME_OK;
done:
    EVP_CIPHER_CTX_free(ctx);
    if (result != SESAME_OK) {
        OPENSSL_cleanse(buf, total);
        free(buf);
        return SESAME_ERROR;
    }
    *out = buf;
    *outlen = total;
    return SESAME_OK;
}

static bool
gcm_open(const unsigned char key[SESAME_SESSION_KEY_LEN], const unsigned char *nonce,
         const void *aad, size_t aadlen, const unsigned char *ct, size_t ctlen,
         const unsigned char *tag, unsigned char *out)
{
    bool ok = false;
    int n;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return false;
    if (EVP_DecryptInit_ex(ctx, sesame_util_aes256gcm(), NULL, key, nonce) != 1)
        goto done;
    if (aadlen > 0 && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1)
        goto done;
    if (ctlen > 0 && EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) != 1)
        goto done;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag) != 1)
        goto done;
    ok = EVP_DecryptFinal_ex(ctx, out + ctlen, &n) == 1;
done:
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

/* Opens a value of `version` under the current or the previous secret (raw
 * NULL), or under the record keys they derive for raw. */
static int
open_with(const struct sesame_conf_session *conf, unsigned char version,
          const unsigned char *raw, const void *aad, size_t aadlen, const unsigned char *in,
          size_t inlen, char **plain, size_t *plainlen)
{
    if (in == NULL || inlen < HEADER_LEN + TAG_LEN ||
        inlen > HEADER_LEN + SESAME_SESSION_VALUE_MAX + TAG_LEN || aadlen > INT32_MAX ||
        in[0] != version)
        return SESAME_DECLINED;
    size_t ctlen = inlen - HEADER_LEN - TAG_LEN;
    const unsigned char *nonce = in + 2, *ct = in + HEADER_LEN, *tag = in + HEADER_LEN + ctlen;
    unsigned char *out = sesame_malloc(ctlen + 1);
    const unsigned char *secrets[2] = {conf->secret,
                                       conf->has_previous_secret ? conf->previous_secret : NULL};
    for (size_t i = 0; i < 2; i++) {
        if (secrets[i] == NULL || key_id(secrets[i]) != in[1])
            continue;
        unsigned char derived[SESAME_SESSION_KEY_LEN];
        const unsigned char *key = secrets[i];
        if (raw != NULL) {
            if (!record_key(secrets[i], raw, derived))
                continue;
            key = derived;
        }
        bool ok = gcm_open(key, nonce, aad, aadlen, ct, ctlen, tag, out);
        OPENSSL_cleanse(derived, sizeof(derived));
        if (ok) {
            out[ctlen] = '\0';
            *plain = (char *)out;
            *plainlen = ctlen;
            return SESAME_OK;
        }
    }
    OPENSSL_cleanse(out, ctlen + 1);
    free(out);
    return SESAME_DECLINED;
}

int
sesame_session_seal(const struct sesame_conf_session *conf, const void *aad, size_t aadlen,
                    const void *plain, size_t plainlen, unsigned char **out, size_t *outlen)
{
    return seal_with(VALUE_VERSION, key_id(conf->secret), conf->secret, aad, aadlen, plain,
                     plainlen, out, outlen);
}

int
sesame_session_open(const struct sesame_conf_session *conf, const void *aad, size_t aadlen,
                    const unsigned char *in, size_t inlen, char **plain, size_t *plainlen)
{
    return open_with(conf, VALUE_VERSION, NULL, aad, aadlen, in, inlen, plain, plainlen);
}

/* Seals a session record for the raw id. */
static int
record_seal_raw(const struct sesame_conf_session *conf, const unsigned char raw[32],
                const void *aad, size_t aadlen, const void *plain, size_t plainlen,
                unsigned char **out, size_t *outlen)
{
    unsigned char key[SESAME_SESSION_KEY_LEN];
    if (!record_key(conf->secret, raw, key))
        return SESAME_ERROR;
    int rc = seal_with(RECORD_VERSION, key_id(conf->secret), key, aad, aadlen, plain, plainlen,
                       out, outlen);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int
sesame_session_record_seal(const struct sesame_conf_session *conf, const char *cookie_id,
                           const void *aad, size_t aadlen, const void *plain, size_t plainlen,
                           unsigned char **out, size_t *outlen)
{
    unsigned char raw[32];
    if (!id_decode(cookie_id, raw))
        return SESAME_ERROR;
    int rc = record_seal_raw(conf, raw, aad, aadlen, plain, plainlen, out, outlen);
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

int
sesame_session_record_open(const struct sesame_conf_session *conf, const char *cookie_id,
                           const void *aad, size_t aadlen, const unsigned char *in, size_t inlen,
                           char **plain, size_t *plainlen)
{
    unsigned char raw[32];
    if (!id_decode(cookie_id, raw))
        return SESAME_DECLINED;
    int rc = open_with(conf, RECORD_VERSION, raw, aad, aadlen, in, inlen, plain, plainlen);
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

/* ---- cookies ---- */

static bool
is_b64url(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int
sesame_session_cookie_find(const char *header, size_t len, const char *name,
                           char out[SESAME_SESSION_ID_LEN + 1])
{
    out[0] = '\0';
    if (header == NULL || name == NULL || name[0] == '\0')
        return SESAME_DECLINED;
    size_t nlen = strlen(name);
    bool cut = len > SESAME_SESSION_COOKIE_SCAN_MAX;
    if (cut)
        len = SESAME_SESSION_COOKIE_SCAN_MAX;
    bool found = false, ambiguous = false;
    size_t i = 0;
    for (int count = 0; i < len && count < SESAME_SESSION_COOKIE_COUNT_MAX; count++) {
        const char *p = header + i;
        const char *semi = memchr(p, ';', len - i);
        if (semi == NULL && cut)
            break; /* this pair may continue past the limit */
        size_t plen = semi ? (size_t)(semi - p) : len - i;
        i += plen + 1;
        while (plen > 0 && is_ows(*p)) {
            p++;
            plen--;
        }
        while (plen > 0 && is_ows(p[plen - 1]))
            plen--;
        const char *eq = memchr(p, '=', plen);
        if (eq == NULL)
            continue;
        size_t klen = (size_t)(eq - p);
        while (klen > 0 && is_ows(p[klen - 1]))
            klen--;
        if (klen != nlen || memcmp(p, name, nlen) != 0)
            continue;
        const char *v = eq + 1;
        size_t vlen = plen - (size_t)(v - p);
        while (vlen > 0 && is_ows(*v)) {
            v++;
            vlen--;
        }
        if (vlen != SESAME_SESSION_ID_LEN)
            continue;
        bool valid = true;
        for (size_t k = 0; k < vlen && valid; k++)
            valid = is_b64url((unsigned char)v[k]);
        unsigned char raw[SESAME_SESSION_ID_LEN];
        if (!valid || sesame_util_b64url_decode(raw, v, vlen) != 32)
            continue;
        if (found) {
            if (memcmp(out, v, vlen) != 0)
                ambiguous = true;
        } else {
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            found = true;
        }
    }
    if (!found || ambiguous) {
        out[0] = '\0';
        return SESAME_DECLINED;
    }
    return SESAME_OK;
}

static bool
is_token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 6265 cookie-octet. */
static bool
is_cookie_octet(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
           (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

static bool
all_chars(const char *s, bool (*ok)(unsigned char))
{
    for (; *s; s++)
        if (!ok((unsigned char)*s))
            return false;
    return true;
}

static bool
is_domain_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.';
}

int
sesame_session_set_cookie_header(char *buf, size_t cap, const char *name, const char *value,
                                 const struct sesame_conf_tenant *tenant, int64_t max_age_s)
{
    if (buf == NULL || cap == 0 || name == NULL || name[0] == '\0' ||
        !all_chars(name, is_token_char))
        return SESAME_ERROR;
    if (value != NULL && !all_chars(value, is_cookie_octet))
        return SESAME_ERROR;
    const char *domain = tenant ? tenant->cookie_domain : NULL;
    if (domain != NULL && (domain[0] == '\0' || !all_chars(domain, is_domain_char)))
        return SESAME_ERROR;
    bool secure = tenant == NULL || tenant->cookie_secure;
    if (value == NULL || max_age_s < 0)
        max_age_s = 0;
    /* session_cookie = browser: a cookie that ends with the browser (no
     * Max-Age); a deletion keeps Max-Age=0 */
    bool browser = value != NULL && tenant != NULL && tenant->session_cookie == SESAME_COOKIE_BROWSER;
    char age[40] = "";
    if (!browser)
        snprintf(age, sizeof(age), "; Max-Age=%lld", (long long)(value ? max_age_s : 0));
    int n = snprintf(buf, cap, "%s=%s; Path=/%s; HttpOnly; SameSite=Lax%s%s%s", name,
                     value ? value : "", age, secure ? "; Secure" : "", domain ? "; Domain=" : "",
                     domain ? domain : "");
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = '\0';
        return SESAME_ERROR;
    }
    return SESAME_OK;
}

int
sesame_session_binding(const char *cookie_header, size_t len, const char *name,
                       char out[SESAME_SESSION_ID_LEN + 1], bool *created)
{
    if (sesame_session_cookie_find(cookie_header, len, name, out) == SESAME_OK) {
        *created = false;
        return SESAME_OK;
    }
    if (sesame_util_random_token(out, SESAME_SESSION_ID_LEN + 1, 32) != SESAME_OK) {
        out[0] = '\0';
        return SESAME_ERROR;
    }
    *created = true;
    return SESAME_OK;
}

/* ---- cache ---- */

struct centry {
    unsigned char hash[32];
    struct sesame_session *rec; /* one reference */
    uint64_t born;              /* monotonic ms */
    struct centry *hnext;
    struct centry *lprev, *lnext; /* lprev towards the most recently used */
};

struct cache {
    struct centry **buckets;
    struct centry *mru, *lru;
    size_t count;
};

static size_t
bucket_of(const unsigned char hash[32])
{
    uint32_t v = (uint32_t)hash[0] | (uint32_t)hash[1] << 8 | (uint32_t)hash[2] << 16 |
                 (uint32_t)hash[3] << 24;
    return v & (CACHE_BUCKETS - 1);
}

static void
lru_unlink(struct cache *c, struct centry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        c->mru = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        c->lru = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void
lru_push(struct cache *c, struct centry *e)
{
    e->lprev = NULL;
    e->lnext = c->mru;
    if (c->mru)
        c->mru->lprev = e;
    c->mru = e;
    if (c->lru == NULL)
        c->lru = e;
}

static struct centry **
cache_slot(struct cache *c, const unsigned char hash[32])
{
    struct centry **pp = &c->buckets[bucket_of(hash)];
    while (*pp && memcmp((*pp)->hash, hash, 32) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

static void
cache_remove(struct cache *c, const unsigned char hash[32])
{
    if (c->buckets == NULL)
        return;
    struct centry **pp = cache_slot(c, hash);
    struct centry *e = *pp;
    if (e == NULL)
        return;
    *pp = e->hnext;
    lru_unlink(c, e);
    sesame_session_free(e->rec);
    free(e);
    c->count--;
}

static void
cache_flush(struct cache *c)
{
    while (c->lru)
        cache_remove(c, c->lru->hash);
}

static struct centry *
cache_get(struct cache *c, const unsigned char hash[32], uint64_t ttl)
{
    if (c->buckets == NULL)
        return NULL;
    struct centry *e = *cache_slot(c, hash);
    if (e == NULL)
        return NULL;
    if (sesame_util_mono_ms() - e->born >= ttl) {
        cache_remove(c, hash);
        return NULL;
    }
    lru_unlink(c, e);
    lru_push(c, e);
    return e;
}

static void
cache_put(struct cache *c, const unsigned char hash[32], struct sesame_session *rec)
{
    if (c->buckets == NULL)
        c->buckets = sesame_calloc(CACHE_BUCKETS, sizeof(*c->buckets));
    struct centry **pp = cache_slot(c, hash);
    struct centry *e = *pp;
    if (e != NULL) {
        sesame_session_free(e->rec);
        lru_unlink(c, e);
    } else {
        e = sesame_calloc(1, sizeof(*e));
        memcpy(e->hash, hash, 32);
        *pp = e;
        c->count++;
    }
    e->rec = sesame_session_ref(rec);
    e->born = sesame_util_mono_ms();
    lru_push(c, e);
    while (c->count > SESAME_SESSION_CACHE_MAX)
        cache_remove(c, c->lru->hash);
}

/* ---- the store ---- */

enum op_kind { K_LOAD, K_CREATE, K_DESTROY, K_REVOKE_LIST, K_REVOKE, K_PUT, K_TAKE };

struct sesame_session_op {
    struct sesame_session_store *st;
    enum op_kind kind;
    union {
        sesame_session_load_cb load;
        sesame_session_create_cb create;
        sesame_session_done_cb done;
        sesame_session_count_cb count;
        sesame_session_take_cb take;
    } cb;
    void *arg;
    struct sesame_redis_op *rop;
    char *key;                     /* the Redis key read or written */
    char *tenant;                  /* load: expected tenant */
    char *idx;                     /* revoke: index key */
    unsigned char hash[32];
    struct sesame_session *rec;    /* create: the record stored */
    size_t count;                  /* revoke: sessions listed */
    char cookie[SESAME_SESSION_ID_LEN + 1];
    unsigned char raw[32];         /* load, destroy: the raw id (record key) */
    struct sesame_session_op *prev, *next;
};

struct sesame_session_store {
    struct sesame_redis *redis;
    const struct sesame_conf *conf;
    const char *prefix;
    char *channel;                 /* prefix + "revoked" */
    bool subscribed;               /* this store registered the channel */
    struct cache cache;
    int64_t (*now_ms)(void *arg);
    void *clock_arg;
    struct sesame_session_op *ops; /* outstanding */
};

static int64_t
wall_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
now_ms(const struct sesame_session_store *st)
{
    return st->now_ms(st->clock_arg);
}

static bool
cache_usable(const struct sesame_session_store *st)
{
    return st->conf->session.cache_ttl_ms > 0 && sesame_redis_subscribed(st->redis);
}

static void
evict_payload(struct sesame_session_store *st, const char *msg, size_t len)
{
    if (len == 1 && msg[0] == '*') {
        cache_flush(&st->cache);
        return;
    }
    size_t i = 0;
    while (i < len) {
        const char *sp = memchr(msg + i, ' ', len - i);
        size_t n = sp ? (size_t)(sp - (msg + i)) : len - i;
        unsigned char h[32];
        if (hex_decode32(msg + i, n, h))
            cache_remove(&st->cache, h);
        i += n + 1;
    }
}

static void
on_revoked_message(const char *msg, size_t len, void *arg)
{
    evict_payload(arg, msg, len);
}

static void
on_revoked_subscribed(void *arg)
{
    struct sesame_session_store *st = arg;
    cache_flush(&st->cache);
}

struct sesame_session_store *
sesame_session_store_new(struct sesame_redis *redis, const struct sesame_conf *conf)
{
    if (redis == NULL || conf == NULL)
        return NULL;
    const struct sesame_conf_session *sc = &conf->session;
    if (sc->inactivity_timeout_ms == 0 || sc->max_lifetime_ms == 0) {
        sesame_log_error("session: inactivity_timeout and max_lifetime must be set");
        return NULL;
    }
    struct sesame_session_store *st = sesame_calloc(1, sizeof(*st));
    st->redis = redis;
    st->conf = conf;
    st->prefix = conf->redis.prefix ? conf->redis.prefix : "";
    st->channel = sesame_asprintf("%srevoked", st->prefix);
    st->now_ms = wall_ms;
    if (sc->cache_ttl_ms > 0) {
        if (sesame_redis_subscribe(redis, st->channel, on_revoked_message, on_revoked_subscribed,
                                   st) != SESAME_OK) {
            sesame_log_error("session: the channel %s is already subscribed", st->channel);
            free(st->channel);
            free(st);
            return NULL;
        }
        st->subscribed = true;
    }
    return st;
}

static void
op_release(struct sesame_session_op *op)
{
    struct sesame_session_store *st = op->st;
    if (op->prev)
        op->prev->next = op->next;
    else
        st->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    free(op->key);
    free(op->tenant);
    free(op->idx);
    sesame_session_free(op->rec);
    OPENSSL_cleanse(op->cookie, sizeof(op->cookie));
    OPENSSL_cleanse(op->raw, sizeof(op->raw));
    free(op);
}

void
sesame_session_cancel(struct sesame_session_op *op)
{
    if (op == NULL)
        return;
    sesame_redis_cancel(op->rop);
    op_release(op);
}

void
sesame_session_store_free(struct sesame_session_store *st)
{
    if (st == NULL)
        return;
    while (st->ops)
        sesame_session_cancel(st->ops);
    if (st->subscribed)
        sesame_redis_unsubscribe(st->redis, st->channel);
    cache_flush(&st->cache);
    free(st->cache.buckets);
    free(st->channel);
    free(st);
}

void
sesame_session_store_set_clock(struct sesame_session_store *st, int64_t (*fn)(void *arg),
                               void *arg)
{
    st->now_ms = fn ? fn : wall_ms;
    st->clock_arg = fn ? arg : NULL;
}

size_t
sesame_session_cache_count(const struct sesame_session_store *st)
{
    return st->cache.count;
}

static struct sesame_session_op *
op_new(struct sesame_session_store *st, enum op_kind kind, void *arg)
{
    struct sesame_session_op *op = sesame_calloc(1, sizeof(*op));
    op->st = st;
    op->kind = kind;
    op->arg = arg;
    op->next = st->ops;
    if (st->ops)
        st->ops->prev = op;
    st->ops = op;
    return op;
}

/* Encrypts a record of the raw id `raw` for `key`. */
static int
seal_record(const struct sesame_session_store *st, const struct sesame_session *s, const char *key,
            const unsigned char raw[32], unsigned char **val, size_t *vlen)
{
    size_t jlen;
    char *json = sesame_session_serialize(s, &jlen);
    if (json == NULL)
        return SESAME_ERROR;
    int rc = record_seal_raw(&st->conf->session, raw, key, strlen(key), json, jlen, val, vlen);
    OPENSSL_cleanse(json, jlen);
    free(json);
    return rc;
}

/* The TTL a session should have now, in ms; <= 0 when it has ended. */
static int64_t
session_ttl(const struct sesame_session_store *st, const struct sesame_session *s, int64_t now)
{
    int64_t inactivity = (int64_t)st->conf->session.inactivity_timeout_ms;
    int64_t left = s->expires_ms - now;
    return left < inactivity ? left : inactivity;
}

static bool
session_ended(const struct sesame_session_store *st, const struct sesame_session *s, int64_t now)
{
    return now >= s->expires_ms ||
           now - s->last_seen_ms > (int64_t)st->conf->session.inactivity_timeout_ms;
}

static void
fire_and_forget(struct sesame_session_store *st, int argc, const char **argv, const size_t *lens)
{
    sesame_redis_command(st->redis, NULL, NULL, argc, argv, lens);
}

static void
delete_key(struct sesame_session_store *st, const char *key)
{
    const char *argv[] = {"DEL", key};
    fire_and_forget(st, 2, argv, NULL);
}

/* Writes last_seen back when it is older than touch_interval. SET ... XX: a
 * session destroyed meanwhile stays destroyed. */
static void
maybe_touch(struct sesame_session_store *st, struct sesame_session *s, const char *key,
            const unsigned char raw[32], int64_t now)
{
    if (now - s->last_seen_ms < (int64_t)st->conf->session.touch_interval_ms)
        return;
    int64_t saved = s->last_seen_ms;
    s->last_seen_ms = now;
    int64_t ttl = session_ttl(st, s, now);
    unsigned char *val;
    size_t vlen;
    if (ttl <= 0 || seal_record(st, s, key, raw, &val, &vlen) != SESAME_OK) {
        s->last_seen_ms = saved;
        return;
    }
    char ttlbuf[24];
    snprintf(ttlbuf, sizeof(ttlbuf), "%lld", (long long)ttl);
    const char *argv[] = {"SET", key, (const char *)val, "PX", ttlbuf, "XX"};
    size_t lens[] = {3, strlen(key), vlen, 2, strlen(ttlbuf), 2};
    fire_and_forget(st, 6, argv, lens);
    free(val);
}

static bool
touch_due(const struct sesame_session_store *st, const struct sesame_session *s, int64_t now)
{
    return now - s->last_seen_ms >= (int64_t)st->conf->session.touch_interval_ms;
}

static void
load_done(struct sesame_session_op *op, int status, struct sesame_session *s)
{
    sesame_session_load_cb cb = op->cb.load;
    void *arg = op->arg;
    op->rop = NULL;
    op_release(op);
    cb(status, s, arg);
}

static void
on_load_reply(const redisReply *reply, void *arg)
{
    struct sesame_session_op *op = arg;
    struct sesame_session_store *st = op->st;
    if (reply == NULL) {
        load_done(op, SESAME_ERROR, NULL);
        return;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        load_done(op, SESAME_DECLINED, NULL);
        return;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        sesame_log_warn("session: unexpected reply type %d for a session key", reply->type);
        load_done(op, SESAME_ERROR, NULL);
        return;
    }
    char *plain;
    size_t plen;
    if (open_with(&st->conf->session, RECORD_VERSION, op->raw, op->key, strlen(op->key),
                  (const unsigned char *)reply->str, (size_t)reply->len, &plain,
                  &plen) != SESAME_OK) {
        if (reply->len > 0 && (unsigned char)reply->str[0] == VALUE_VERSION) {
            /* written before records had their own key: readable with the
             * secret alone, so never used again and deleted at once */
            sesame_log_info("session: a session stored in the former format is refused and "
                            "deleted (the citizen signs in again)");
            delete_key(st, op->key);
        } else {
            sesame_log_warn("session: a stored session could not be decrypted (other key or "
                            "altered value); treated as absent");
        }
        load_done(op, SESAME_DECLINED, NULL);
        return;
    }
    struct sesame_session *s = sesame_session_parse(plain, plen);
    OPENSSL_cleanse(plain, plen);
    free(plain);
    if (s == NULL) {
        sesame_log_warn("session: a stored session is malformed; treated as absent");
        load_done(op, SESAME_DECLINED, NULL);
        return;
    }
    if (strcmp(s->tenant, op->tenant) != 0) {
        sesame_session_free(s);
        load_done(op, SESAME_DECLINED, NULL);
        return;
    }
    int64_t now = now_ms(st);
    if (session_ended(st, s, now)) {
        delete_key(st, op->key);
        sesame_session_free(s);
        load_done(op, SESAME_DECLINED, NULL);
        return;
    }
    maybe_touch(st, s, op->key, op->raw, now);
    if (cache_usable(st))
        cache_put(&st->cache, op->hash, s);
    load_done(op, SESAME_OK, s);
}

int
sesame_session_load(struct sesame_session_store *st, const char *cookie_id, const char *tenant,
                    sesame_session_load_cb cb, void *arg, struct sesame_session **out,
                    struct sesame_session_op **opp)
{
    unsigned char raw[32];
    if (tenant == NULL || !id_decode(cookie_id, raw))
        return SESAME_DECLINED;
    unsigned char hash[32];
    sesame_util_sha256(raw, sizeof(raw), hash);
    if (cache_usable(st)) {
        struct centry *e = cache_get(&st->cache, hash, st->conf->session.cache_ttl_ms);
        if (e != NULL) {
            struct sesame_session *s = e->rec;
            int64_t now = now_ms(st);
            if (strcmp(s->tenant, tenant) != 0) {
                OPENSSL_cleanse(raw, sizeof(raw));
                return SESAME_DECLINED;
            }
            if (now >= s->expires_ms) {
                char *key = key_from_hash(st->prefix, hash);
                cache_remove(&st->cache, hash);
                delete_key(st, key);
                free(key);
                OPENSSL_cleanse(raw, sizeof(raw));
                return SESAME_DECLINED;
            }
            if (!session_ended(st, s, now)) {
                if (touch_due(st, s, now)) {
                    char *key = key_from_hash(st->prefix, hash);
                    maybe_touch(st, s, key, raw, now);
                    free(key);
                }
                OPENSSL_cleanse(raw, sizeof(raw));
                sesame_metrics_add(SESAME_M_SESSION_CACHE, "hit", NULL, NULL, 1);
                *out = sesame_session_ref(s);
                return SESAME_OK;
            }
            /* Idle here, but another instance may have seen it since: ask
             * Redis. */
            cache_remove(&st->cache, hash);
        }
        sesame_metrics_add(SESAME_M_SESSION_CACHE, "miss", NULL, NULL, 1);
    }
    char *key = key_from_hash(st->prefix, hash);
    struct sesame_session_op *op = op_new(st, K_LOAD, arg);
    op->cb.load = cb;
    op->key = key;
    op->tenant = sesame_strdup(tenant);
    memcpy(op->hash, hash, 32);
    memcpy(op->raw, raw, 32);
    OPENSSL_cleanse(raw, sizeof(raw));
    const char *argv[] = {"GET", key};
    op->rop = sesame_redis_command(st->redis, on_load_reply, op, 2, argv, NULL);
    *opp = op;
    return SESAME_AGAIN;
}

static bool
exec_ok(const redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_ERROR)
            return false;
    return true;
}

static void
on_create_reply(const redisReply *reply, void *arg)
{
    struct sesame_session_op *op = arg;
    struct sesame_session_store *st = op->st;
    op->rop = NULL;
    int status = SESAME_OK;
    if (!exec_ok(reply)) {
        if (reply != NULL)
            sesame_log_warn("session: storing a new session failed (%s)",
                            reply->type == REDIS_REPLY_ERROR ? "transaction refused"
                                                             : "command refused");
        status = SESAME_ERROR;
    } else if (cache_usable(st)) {
        cache_put(&st->cache, op->hash, op->rec);
    }
    sesame_session_create_cb cb = op->cb.create;
    void *cbarg = op->arg;
    char cookie[SESAME_SESSION_ID_LEN + 1];
    memcpy(cookie, op->cookie, sizeof(cookie));
    op_release(op);
    cb(status, status == SESAME_OK ? cookie : NULL, cbarg);
    OPENSSL_cleanse(cookie, sizeof(cookie));
}

int
sesame_session_create(struct sesame_session_store *st, struct sesame_session *s,
                      const char *previous_id, sesame_session_create_cb cb, void *arg,
                      struct sesame_session_op **opp)
{
    if (s == NULL || s->tenant == NULL || s->account == NULL || s->account[0] == '\0' ||
        strlen(s->account) > ACCOUNT_MAX)
        return SESAME_ERROR;
    const struct sesame_conf_session *sc = &st->conf->session;
    unsigned char raw[32], hash[32];
    if (sesame_util_random(raw, sizeof(raw)) != SESAME_OK)
        return SESAME_ERROR;
    char cookie[SESAME_SESSION_ID_LEN + 1];
    sesame_util_b64url_encode(cookie, raw, sizeof(raw));
    sesame_util_sha256(raw, sizeof(raw), hash);

    int64_t now = now_ms(st);
    int64_t max = now + (int64_t)sc->max_lifetime_ms;
    s->created_ms = now;
    s->last_seen_ms = now;
    if (s->expires_ms <= 0 || s->expires_ms > max)
        s->expires_ms = max;
    int64_t ttl = session_ttl(st, s, now);
    if (ttl <= 0) {
        OPENSSL_cleanse(raw, sizeof(raw));
        OPENSSL_cleanse(cookie, sizeof(cookie));
        return SESAME_ERROR;
    }

    char *key = key_from_hash(st->prefix, hash);
    unsigned char *val;
    size_t vlen;
    int sealed = seal_record(st, s, key, raw, &val, &vlen);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (sealed != SESAME_OK) {
        OPENSSL_cleanse(cookie, sizeof(cookie));
        free(key);
        return SESAME_ERROR;
    }
    char hex[HASH_HEX_LEN + 1], ttlbuf[24], lifebuf[24];
    sesame_util_hex(hex, hash, sizeof(hash));
    snprintf(ttlbuf, sizeof(ttlbuf), "%lld", (long long)ttl);
    snprintf(lifebuf, sizeof(lifebuf), "%llu", (unsigned long long)sc->max_lifetime_ms);
    char *idx = index_key(st->prefix, s->tenant, s->account);

    const char *set_argv[] = {"SET", key, (const char *)val, "PX", ttlbuf};
    size_t set_lens[] = {3, strlen(key), vlen, 2, strlen(ttlbuf)};
    const char *sadd_argv[] = {"SADD", idx, hex};
    const char *pexp_argv[] = {"PEXPIRE", idx, lifebuf};
    struct sesame_redis_cmd cmds[9] = {
        {5, set_argv, set_lens},
        {3, sadd_argv, NULL},
        {3, pexp_argv, NULL},
    };
    size_t ncmds = 3;
    /* a session of a tree: in the tree's index, and the tree in the
     * account's (session.h) */
    char *tidx = s->tree ? index_key(st->prefix, "@tree", s->tree) : NULL;
    char *aidx = s->tree ? sesame_asprintf("%sat:%s:%s", st->prefix, s->tenant, s->account) : NULL;
    const char *tsadd_argv[] = {"SADD", tidx, hex};
    const char *tpexp_argv[] = {"PEXPIRE", tidx, lifebuf};
    const char *asadd_argv[] = {"SADD", aidx, s->tree};
    const char *apexp_argv[] = {"PEXPIRE", aidx, lifebuf};
    if (s->tree) {
        cmds[ncmds++] = (struct sesame_redis_cmd){3, tsadd_argv, NULL};
        cmds[ncmds++] = (struct sesame_redis_cmd){3, tpexp_argv, NULL};
        cmds[ncmds++] = (struct sesame_redis_cmd){3, asadd_argv, NULL};
        cmds[ncmds++] = (struct sesame_redis_cmd){3, apexp_argv, NULL};
    }

    char *prevkey = NULL;
    char prevhex[HASH_HEX_LEN + 1];
    unsigned char prevraw[32], prevhash[32];
    const char *del_argv[] = {"DEL", NULL};
    const char *pub_argv[] = {"PUBLISH", st->channel, prevhex};
    if (previous_id != NULL && id_decode(previous_id, prevraw)) {
        sesame_util_sha256(prevraw, sizeof(prevraw), prevhash);
        OPENSSL_cleanse(prevraw, sizeof(prevraw));
        prevkey = key_from_hash(st->prefix, prevhash);
        del_argv[1] = prevkey;
        sesame_util_hex(prevhex, prevhash, sizeof(prevhash));
        cmds[ncmds++] = (struct sesame_redis_cmd){2, del_argv, NULL};
        cmds[ncmds++] = (struct sesame_redis_cmd){3, pub_argv, NULL};
        cache_remove(&st->cache, prevhash);
    }

    struct sesame_session_op *op = op_new(st, K_CREATE, arg);
    op->cb.create = cb;
    op->key = key;
    op->rec = sesame_session_ref(s);
    memcpy(op->hash, hash, 32);
    memcpy(op->cookie, cookie, sizeof(cookie));
    OPENSSL_cleanse(cookie, sizeof(cookie));
    op->rop = sesame_redis_transaction(st->redis, on_create_reply, op, cmds, ncmds);
    free(val);
    free(idx);
    free(tidx);
    free(aidx);
    free(prevkey);
    *opp = op;
    return SESAME_AGAIN;
}

static void
done_cb(struct sesame_session_op *op, int status)
{
    sesame_session_done_cb cb = op->cb.done;
    void *arg = op->arg;
    op->rop = NULL;
    op_release(op);
    cb(status, arg);
}

static void
on_destroy_reply(const redisReply *reply, void *arg)
{
    struct sesame_session_op *op = arg;
    struct sesame_session_store *st = op->st;
    if (!exec_ok(reply)) {
        done_cb(op, SESAME_ERROR);
        return;
    }
    /* Best effort: drop the hash from the account index. */
    const redisReply *v = reply->elements > 0 ? reply->element[0] : NULL;
    char *plain;
    size_t plen;
    if (v != NULL && v->type == REDIS_REPLY_STRING &&
        open_with(&st->conf->session, RECORD_VERSION, op->raw, op->key, strlen(op->key),
                  (const unsigned char *)v->str, (size_t)v->len, &plain, &plen) == SESAME_OK) {
        struct sesame_session *s = sesame_session_parse(plain, plen);
        OPENSSL_cleanse(plain, plen);
        free(plain);
        if (s != NULL) {
            char hex[HASH_HEX_LEN + 1];
            sesame_util_hex(hex, op->hash, 32);
            char *idx = index_key(st->prefix, s->tenant, s->account);
            const char *argv[] = {"SREM", idx, hex};
            fire_and_forget(st, 3, argv, NULL);
            free(idx);
            if (s->tree) {
                char *tidx = index_key(st->prefix, "@tree", s->tree);
                const char *targv[] = {"SREM", tidx, hex};
                fire_and_forget(st, 3, targv, NULL);
                free(tidx);
            }
            sesame_session_free(s);
        }
    }
    done_cb(op, SESAME_OK);
}

int
sesame_session_destroy(struct sesame_session_store *st, const char *cookie_id,
                       sesame_session_done_cb cb, void *arg, struct sesame_session_op **opp)
{
    unsigned char raw[32], hash[32];
    if (!id_decode(cookie_id, raw))
        return SESAME_DECLINED;
    sesame_util_sha256(raw, sizeof(raw), hash);
    cache_remove(&st->cache, hash);
    struct sesame_session_op *op = op_new(st, K_DESTROY, arg);
    op->cb.done = cb;
    op->key = key_from_hash(st->prefix, hash);
    memcpy(op->hash, hash, 32);
    memcpy(op->raw, raw, 32);
    OPENSSL_cleanse(raw, sizeof(raw));
    char hex[HASH_HEX_LEN + 1];
    sesame_util_hex(hex, hash, sizeof(hash));
    const char *getdel[] = {"GETDEL", op->key};
    const char *pub[] = {"PUBLISH", st->channel, hex};
    struct sesame_redis_cmd cmds[] = {{2, getdel, NULL}, {3, pub, NULL}};
    op->rop = sesame_redis_transaction(st->redis, on_destroy_reply, op, cmds, 2);
    *opp = op;
    return SESAME_AGAIN;
}

static void
count_done(struct sesame_session_op *op, int status, size_t n)
{
    sesame_session_count_cb cb = op->cb.count;
    void *arg = op->arg;
    op->rop = NULL;
    op_release(op);
    cb(status, n, arg);
}

static void
on_revoke_done(const redisReply *reply, void *arg)
{
    struct sesame_session_op *op = arg;
    count_done(op, exec_ok(reply) ? SESAME_OK : SESAME_ERROR, op->count);
}

static void
on_revoke_members(const redisReply *reply, void *arg)
{
    struct sesame_session_op *op = arg;
    struct sesame_session_store *st = op->st;
    op->rop = NULL;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        count_done(op, SESAME_ERROR, 0);
        return;
    }
    size_t max = reply->elements < SESAME_SESSION_REVOKE_MAX ? reply->elements
                                                             : SESAME_SESSION_REVOKE_MAX;
    /* DEL k1..kn ; SREM idx h1..hn ; PUBLISH channel "h1 h2 ..." */
    char **keys = sesame_calloc(max + 1, sizeof(*keys));
    const char **del_argv = sesame_calloc(max + 1, sizeof(*del_argv));
    const char **srem_argv = sesame_calloc(max + 2, sizeof(*srem_argv));
    size_t *srem_lens = sesame_calloc(max + 2, sizeof(*srem_lens));
    char *payload = sesame_malloc(max * (HASH_HEX_LEN + 1) + 1);
    size_t n = 0, plen = 0;
    for (size_t i = 0; i < reply->elements && n < max; i++) {
        const redisReply *m = reply->element[i];
        unsigned char h[32];
        if (m->type != REDIS_REPLY_STRING || !hex_decode32(m->str, (size_t)m->len, h))
            continue;
        keys[n] = key_from_hash(st->prefix, h);
        del_argv[n + 1] = keys[n];
        srem_argv[n + 2] = m->str;
        srem_lens[n + 2] = HASH_HEX_LEN;
        if (plen > 0)
            payload[plen++] = ' ';
        memcpy(payload + plen, m->str, HASH_HEX_LEN);
        plen += HASH_HEX_LEN;
        cache_remove(&st->cache, h);
        n++;
    }
    payload[plen] = '\0';
    if (n == 0) {
        count_done(op, SESAME_OK, 0);
    } else {
        del_argv[0] = "DEL";
        srem_argv[0] = "SREM";
        srem_lens[0] = 4;
        srem_argv[1] = op->idx;
        srem_lens[1] = strlen(op->idx);
        const char *pub[] = {"PUBLISH", st->channel, payload};
        struct sesame_redis_cmd cmds[] = {
            {(int)n + 1, del_argv, NULL},
            {(int)n + 2, srem_argv, srem_lens},
            {3, pub, NULL},
        };
        op->count = n;
        op->rop = sesame_redis_transaction(st->redis, on_revoke_done, op, cmds, 3);
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(del_argv);
    free(srem_argv);
    free(srem_lens);
    free(payload);
}

int
sesame_session_revoke_account(struct sesame_session_store *st, const char *tenant,
                              const char *account, sesame_session_count_cb cb, void *arg,
                              struct sesame_session_op **opp)
{
    if (tenant == NULL || account == NULL || tenant[0] == '\0' || account[0] == '\0' ||
        strlen(tenant) > ACCOUNT_MAX || strlen(account) > ACCOUNT_MAX)
        return SESAME_ERROR;
    struct sesame_session_op *op = op_new(st, K_REVOKE_LIST, arg);
    op->cb.count = cb;
    op->idx = index_key(st->prefix, tenant, account);
    const char *argv[] = {"SMEMBERS", op->idx};
    op->rop = sesame_redis_command(st->redis, on_revoke_members, op, 2, argv, NULL);
    *opp = op;
    return SESAME_AGAIN;
}

/* ---- pending logins ---- */

static char *
login_key(const struct sesame_session_store *st, const char *state)
{
    size_t n = strnlen(state, STATE_MAX + 1);
    if (n < STATE_MIN || n > STATE_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!is_b64url((unsigned char)state[i]))
            return NULL;
    unsigned char h[32];
    sesame_util_sha256((const unsigned char *)state, n, h);
    char hex[HASH_HEX_LEN + 1];
    sesame_util_hex(hex, h, sizeof(h));
    return sesame_asprintf("%sl:%s", st->prefix, hex);
}

static void
on_put_reply(const redisReply *reply, void *arg)
{
    bool ok = reply != NULL && reply->type == REDIS_REPLY_STATUS && reply->len == 2 &&
              memcmp(reply->str, "OK", 2) == 0;
    done_cb(arg, ok ? SESAME_OK : SESAME_ERROR);
}

int
sesame_session_login_put(struct sesame_session_store *st, const char *state, const json_t *blob,
                         uint64_t ttl_ms, sesame_session_done_cb cb, void *arg,
                         struct sesame_session_op **opp)
{
    if (state == NULL || blob == NULL || ttl_ms == 0)
        return SESAME_ERROR;
    char *key = login_key(st, state);
    if (key == NULL)
        return SESAME_ERROR;
    char *json = json_dumps(blob, JSON_COMPACT | JSON_ENCODE_ANY);
    unsigned char *val;
    size_t vlen;
    if (json == NULL) {
        free(key);
        return SESAME_ERROR;
    }
    size_t jlen = strlen(json);
    int rc = sesame_session_seal(&st->conf->session, key, strlen(key), json, jlen, &val, &vlen);
    OPENSSL_cleanse(json, jlen);
    free(json);
    if (rc != SESAME_OK) {
        free(key);
        return SESAME_ERROR;
    }
    char ttlbuf[24];
    snprintf(ttlbuf, sizeof(ttlbuf), "%llu", (unsigned long long)ttl_ms);
    struct sesame_session_op *op = op_new(st, K_PUT, arg);
    op->cb.done = cb;
    op->key = key;
    const char *argv[] = {"SET", key, (const char *)val, "PX", ttlbuf, "NX"};
    size_t lens[] = {3, strlen(key), vlen, 2, strlen(ttlbuf), 2};
    op->rop = sesame_redis_command(st->redis, on_put_reply, op, 6, argv, lens);
    free(val);
    *opp = op;
    return SESAME_AGAIN;
}

static void
on_take_reply(const redisReply *reply, void *arg)
{
    struct sesame_session_op *op = arg;
    struct sesame_session_store *st = op->st;
    int status = SESAME_DECLINED;
    json_t *blob = NULL;
    if (reply == NULL) {
        status = SESAME_ERROR;
    } else if (reply->type == REDIS_REPLY_STRING) {
        char *plain;
        size_t plen;
        if (sesame_session_open(&st->conf->session, op->key, strlen(op->key),
                                (const unsigned char *)reply->str, (size_t)reply->len, &plain,
                                &plen) == SESAME_OK) {
            json_error_t jerr;
            blob = json_loadb(plain, plen, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
            OPENSSL_cleanse(plain, plen);
            free(plain);
        } else {
            sesame_log_warn("session: a pending login could not be decrypted; treated as absent");
        }
        status = blob ? SESAME_OK : SESAME_DECLINED;
    } else if (reply->type != REDIS_REPLY_NIL) {
        status = SESAME_ERROR;
    }
    sesame_session_take_cb cb = op->cb.take;
    void *cbarg = op->arg;
    op->rop = NULL;
    op_release(op);
    cb(status, blob, cbarg);
}

int
sesame_session_login_take(struct sesame_session_store *st, const char *state,
                          sesame_session_take_cb cb, void *arg, struct sesame_session_op **opp)
{
    if (state == NULL)
        return SESAME_ERROR;
    char *key = login_key(st, state);
    if (key == NULL)
        return SESAME_ERROR;
    struct sesame_session_op *op = op_new(st, K_TAKE, arg);
    op->cb.take = cb;
    op->key = key;
    const char *argv[] = {"GETDEL", key};
    op->rop = sesame_redis_command(st->redis, on_take_reply, op, 2, argv, NULL);
    *opp = op;
    return SESAME_AGAIN;
}
