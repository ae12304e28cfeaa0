#include "oidc/jose.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "core/util.h"

#define MAX_KID 256          /* bytes of a kid */
#define MAX_AUD 64           /* entries of an aud array */
#define MAX_APX 512          /* decoded bytes of apu / apv */
#define MAX_EC_COORD 66      /* P-521 */
#define MAX_RSA_BYTES 1024   /* 8192 bits */
#define MIN_RSA_BITS 2048
#define MAX_NUMERIC_DATE 253402300799LL /* 9999-12-31T23:59:59Z */
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16
#define CEK_LEN 32

/* ---- Algorithms --------------------------------------------------------- */

enum key_type { KT_RSA = 1, KT_EC = 2 };

enum jws_family { FAM_EC, FAM_RSA, FAM_PSS, FAM_HMAC };

struct jws_alg {
    const char *name;
    unsigned bit;            /* enum sesame_alg */
    enum jws_family family;
    const char *md;          /* digest name for OpenSSL */
    size_t len;              /* EC: coordinate bytes; HMAC: output bytes; RSA: hash bytes */
};

static const struct jws_alg jws_algs[] = {
    {"ES256", SESAME_ALG_ES256, FAM_EC, "SHA256", 32},
    {"ES384", SESAME_ALG_ES384, FAM_EC, "SHA384", 48},
    {"ES512", SESAME_ALG_ES512, FAM_EC, "SHA512", 66},
    {"RS256", SESAME_ALG_RS256, FAM_RSA, "SHA256", 32},
    {"RS384", SESAME_ALG_RS384, FAM_RSA, "SHA384", 48},
    {"RS512", SESAME_ALG_RS512, FAM_RSA, "SHA512", 64},
    {"PS256", SESAME_ALG_PS256, FAM_PSS, "SHA256", 32},
    {"PS384", SESAME_ALG_PS384, FAM_PSS, "SHA384", 48},
    {"PS512", SESAME_ALG_PS512, FAM_PSS, "SHA512", 64},
    {"HS256", SESAME_ALG_HS256, FAM_HMAC, "SHA256", 32},
    {"HS384", SESAME_ALG_HS384, FAM_HMAC, "SHA384", 48},
    {"HS512", SESAME_ALG_HS512, FAM_HMAC, "SHA512", 64},
};

#define RSA_JWS_ALGS                                                                               \
    (SESAME_ALG_RS256 | SESAME_ALG_RS384 | SESAME_ALG_RS512 | SESAME_ALG_PS256 |                 \
     SESAME_ALG_PS384 | SESAME_ALG_PS512)

enum jwe_alg_bit { JWE_RSA_OAEP = 1 << 0, JWE_RSA_OAEP_256 = 1 << 1, JWE_ECDH_ES = 1 << 2 };

struct jwe_alg {
    const char *name;
    unsigned bit;
    enum key_type type;
    const char *md; /* OAEP digest */
};

static const struct jwe_alg jwe_algs[] = {
    {"RSA-OAEP", JWE_RSA_OAEP, KT_RSA, "SHA1"},
    {"RSA-OAEP-256", JWE_RSA_OAEP_256, KT_RSA, "SHA256"},
    {"ECDH-ES", JWE_ECDH_ES, KT_EC, NULL},
};

struct ec_curve {
    const char *crv;   /* JWK name */
    const char *group; /* OpenSSL group name */
    int nid;
    size_t coord;
};

static const struct ec_curve ec_curves[] = {
    {"P-256", "prime256v1", NID_X9_62_prime256v1, 32},
    {"P-384", "secp384r1", NID_secp384r1, 48},
    {"P-521", "secp521r1", NID_secp521r1, 66},
};

static const struct jws_alg *
jws_alg_by_name(const char *name)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(jws_algs); i++)
        if (strcmp(jws_algs[i].name, name) == 0)
            return &jws_algs[i];
    return NULL;
}

static const struct jws_alg *
jws_alg_by_bit(unsigned bit)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(jws_algs); i++)
        if (jws_algs[i].bit == bit)
            return &jws_algs[i];
    return NULL;
}

static const struct jwe_alg *
jwe_alg_by_name(const char *name)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(jwe_algs); i++)
        if (strcmp(jwe_algs[i].name, name) == 0)
            return &jwe_algs[i];
    return NULL;
}

static const struct ec_curve *
curve_by_crv(const char *crv)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(ec_curves); i++)
        if (strcmp(ec_curves[i].crv, crv) == 0)
            return &ec_curves[i];
    return NULL;
}

unsigned
sesame_jose_alg_from_name(const char *name)
{
    if (name == NULL)
        return 0;
    const struct jws_alg *a = jws_alg_by_name(name);
    return a ? a->bit : 0;
}

/* ---- Keys --------------------------------------------------------------- */

struct sesame_jose_key {
    EVP_PKEY *pkey;
    enum key_type type;
    const struct ec_curve *curve; /* EC keys */
    char *kid;                    /* NULL: none */
    unsigned jws_algs;            /* enum sesame_alg bits it verifies (or signs, if private) */
    unsigned jwe_algs;            /* enum jwe_alg_bit bits it decrypts (private keys) */
    const char *use;              /* "sig", "enc" or NULL; static */
    const char *alg;              /* alg published in the JWKS or NULL; static */
    bool priv;
};

struct sesame_jose_keyset {
    struct sesame_jose_key **keys;
    size_t n;
};

void
sesame_jose_key_free(struct sesame_jose_key *key)
{
    if (key == NULL)
        return;
    EVP_PKEY_free(key->pkey);
    free(key->kid);
    free(key);
}

const char *
sesame_jose_key_kid(const struct sesame_jose_key *key)
{
    return key ? key->kid : NULL;
}

bool
sesame_jose_key_is_private(const struct sesame_jose_key *key)
{
    return key != NULL && key->priv;
}

struct sesame_jose_keyset *
sesame_jose_keyset_new(void)
{
    return sesame_calloc(1, sizeof(struct sesame_jose_keyset));
}

void
sesame_jose_keyset_free(struct sesame_jose_keyset *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        sesame_jose_key_free(ks->keys[i]);
    free(ks->keys);
    free(ks);
}

int
sesame_jose_keyset_add(struct sesame_jose_keyset *ks, struct sesame_jose_key *key, char **err)
{
    if (ks == NULL || key == NULL) {
        sesame_jose_key_free(key);
        return sesame_err_set(err, "jose: no key to add");
    }
    if (ks->n >= SESAME_JOSE_MAX_KEYS) {
        sesame_jose_key_free(key);
        return sesame_err_set(err, "jose: a key set holds at most %d keys", SESAME_JOSE_MAX_KEYS);
    }
    ks->keys = sesame_realloc(ks->keys, (ks->n + 1) * sizeof(*ks->keys));
    ks->keys[ks->n++] = key;
    return SESAME_OK;
}

size_t
sesame_jose_keyset_count(const struct sesame_jose_keyset *ks)
{
    return ks ? ks->n : 0;
}

const struct sesame_jose_key *
sesame_jose_keyset_get(const struct sesame_jose_keyset *ks, size_t i)
{
    if (ks == NULL || i >= ks->n)
        return NULL;
    return ks->keys[i];
}

const struct sesame_jose_key *
sesame_jose_keyset_signing_key(const struct sesame_jose_keyset *ks, unsigned alg)
{
    for (size_t i = 0; ks != NULL && i < ks->n; i++)
        if (ks->keys[i]->priv && (ks->keys[i]->jws_algs & alg) != 0)
            return ks->keys[i];
    return NULL;
}

/* ---- base64url and JSON helpers ----------------------------------------- */

/* Decodes exactly n characters of strict, unpadded base64url into a new
 * buffer (NUL-terminated for convenience). Returns NULL when invalid. */
static unsigned char *
b64_decode(const char *s, size_t n, size_t *outlen)
{
    if (memchr(s, '=', n) != NULL)
        return NULL;
    unsigned char *out = sesame_malloc(n * 3 / 4 + 2);
    long r = sesame_util_b64url_decode(out, s, n);
    if (r < 0) {
        free(out);
        return NULL;
    }
    out[r] = '\0';
    *outlen = (size_t)r;
    return out;
}

static char *
b64_encode(const void *in, size_t n)
{
    char *out = sesame_malloc(sesame_util_b64url_len(n) + 1);
    sesame_util_b64url_encode(out, in, n);
    return out;
}

/* Parses a JSON object, refusing duplicate names and trailing data. */
static json_t *
parse_object(const void *buf, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Member `name` of obj as a string; NULL when absent or not a string. */
static const char *
get_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* Decodes the base64url string member `name` into a new buffer of length
 * *len, with 1 <= *len <= max. NULL when absent, invalid or out of bounds. */
static unsigned char *
get_b64(const json_t *obj, const char *name, size_t max, size_t *len)
{
    const char *s = get_str(obj, name);
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    if (n == 0 || n > (max * 4) / 3 + 4)
        return NULL;
    unsigned char *out = b64_decode(s, n, len);
    if (out != NULL && (*len == 0 || *len > max)) {
        free(out);
        return NULL;
    }
    return out;
}

static void
free_secret(unsigned char *p, size_t n)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, n);
        free(p);
    }
}

/* ---- Building EVP keys from JWK members --------------------------------- */

static bool
check_pkey(EVP_PKEY *pkey, bool priv)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = c != NULL && EVP_PKEY_public_check(c) == 1 && (!priv || EVP_PKEY_check(c) == 1);
    EVP_PKEY_CTX_free(c);
    return ok;
}

static EVP_PKEY *
pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, bool priv)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    if (pkey != NULL && !check_pkey(pkey, priv)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    return pkey;
}

/* EC key from affine coordinates (each exactly curve->coord bytes) and, when
 * d is not NULL, the private scalar. Validates the point. */
static EVP_PKEY *
ec_pkey(const struct ec_curve *curve, const unsigned char *x, const unsigned char *y,
        const unsigned char *d, size_t dlen)
{
    unsigned char point[1 + 2 * MAX_EC_COORD];
    point[0] = 0x04;
    memcpy(point + 1, x, curve->coord);
    memcpy(point + 1 + curve->coord, y, curve->coord);
    BIGNUM *bd = d ? BN_secure_new() : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld == NULL || (d != NULL && (bd == NULL || BN_bin2bn(d, (int)dlen, bd) == NULL)))
        goto out;
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve->group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
                                         1 + 2 * curve->coord) != 1 ||
        (bd != NULL && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bd) != 1))
        goto out;
    pkey = pkey_fromdata("EC", bld, d != NULL);
out:
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(bd);
    return pkey;
}

static const char *const rsa_priv_members[] = {"d", "p", "q", "dp", "dq", "qi"};
static const char *const rsa_priv_params[] = {
    OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,   OSSL_PKEY_PARAM_RSA_FACTOR2,
    OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
};

/* Builds an EVP key from a JWK object (kty EC or RSA). With priv, the private
 * members are required. Returns NULL with *why set to a static reason. */
static EVP_PKEY *
jwk_pkey(const json_t *jwk, bool priv, enum key_type *type, const struct ec_curve **curve,
         const char **why)
{
    const char *kty = get_str(jwk, "kty");
    EVP_PKEY *pkey = NULL;
    *curve = NULL;
    if (kty != NULL && strcmp(kty, "EC") == 0) {
        const char *crv = get_str(jwk, "crv");
        const struct ec_curve *c = crv ? curve_by_crv(crv) : NULL;
        if (c == NULL) {
            *why = "unsupported EC curve";
            return NULL;
        }
        size_t xl = 0, yl = 0, dl = 0;
        unsigned char *x = get_b64(jwk, "x", c->coord, &xl);
        unsigned char *y = get_b64(jwk, "y", c->coord, &yl);
        unsigned char *d = priv ? get_b64(jwk, "d", c->coord, &dl) : NULL;
        if (x == NULL || y == NULL || xl != c->coord || yl != c->coord ||
            (priv && (d == NULL || dl != c->coord)))
            *why = "EC key with malformed x, y or d";
        else if ((pkey = ec_pkey(c, x, y, d, dl)) == NULL)
            *why = "EC key not on its curve";
        free(x);
        free(y);
        free_secret(d, dl);
        *type = KT_EC;
        *curve = c;
        return pkey;
    }
    if (kty != NULL && strcmp(kty, "RSA") == 0) {
        size_t nl = 0, el = 0;
        unsigned char *n = get_b64(jwk, "n", MAX_RSA_BYTES + 1, &nl);
        unsigned char *e = get_b64(jwk, "e", 8, &el);
        BIGNUM *bn = NULL, *be = NULL, *bp[SESAME_ARRAY_LEN(rsa_priv_members)] = {0};
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        *why = "RSA key with malformed n, e or private members";
        if (n == NULL || e == NULL || bld == NULL)
            goto rsa_out;
        bn = BN_bin2bn(n, (int)nl, NULL);
        be = BN_bin2bn(e, (int)el, NULL);
        if (bn == NULL || be == NULL || BN_num_bits(bn) < MIN_RSA_BITS ||
            BN_num_bits(bn) > MAX_RSA_BYTES * 8) {
            *why = "RSA key size outside 2048..8192 bits";
            goto rsa_out;
        }
        if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1)
            goto rsa_out;
        for (size_t i = 0; priv && i < SESAME_ARRAY_LEN(rsa_priv_members); i++) {
            size_t l = 0;
            unsigned char *v = get_b64(jwk, rsa_priv_members[i], MAX_RSA_BYTES, &l);
            if (v == NULL)
                goto rsa_out;
            bp[i] = BN_secure_new();
            bool ok = bp[i] != NULL && BN_bin2bn(v, (int)l, bp[i]) != NULL;
            free_secret(v, l);
            if (!ok || OSSL_PARAM_BLD_push_BN(bld, rsa_priv_params[i], bp[i]) != 1)
                goto rsa_out;
        }
        pkey = pkey_fromdata("RSA", bld, priv);
        if (pkey == NULL)
            *why = "RSA key fails validation";
    rsa_out:
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn);
        BN_free(be);
        for (size_t i = 0; i < SESAME_ARRAY_LEN(bp); i++)
            BN_clear_free(bp[i]);
        free(n);
        free(e);
        *type = KT_RSA;
        return pkey;
    }
    *why = "unsupported kty";
    return NULL;
}

/* Public members of a key, base64url: EC x and y, RSA n and e. */
static int
public_parts(const struct sesame_jose_key *k, char **a, char **b)
{
    BIGNUM *p1 = NULL, *p2 = NULL;
    int rc = SESAME_ERROR;
    *a = *b = NULL;
    if (k->type == KT_EC) {
        unsigned char x[MAX_EC_COORD], y[MAX_EC_COORD];
        size_t cl = k->curve->coord;
        if (EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, &p1) != 1 ||
            EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &p2) != 1 ||
            BN_bn2binpad(p1, x, (int)cl) < 0 || BN_bn2binpad(p2, y, (int)cl) < 0)
            goto out;
        *a = b64_encode(x, cl);
        *b = b64_encode(y, cl);
    } else {
        unsigned char buf[MAX_RSA_BYTES];
        if (EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_N, &p1) != 1 ||
            EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_E, &p2) != 1 ||
            BN_num_bytes(p1) > (int)sizeof(buf) || BN_num_bytes(p2) > (int)sizeof(buf))
            goto out;
        int l = BN_bn2bin(p1, buf);
        *a = b64_encode(buf, (size_t)l);
        l = BN_bn2bin(p2, buf);
        *b = b64_encode(buf, (size_t)l);
    }
    rc = SESAME_OK;
out:
    BN_free(p1);
    BN_free(p2);
    return rc;
}

/* RFC 7638 thumbprint: base64url(SHA-256(canonical JWK)). */
static char *
thumbprint(const struct sesame_jose_key *k)
{
    char *a, *b;
    if (public_parts(k, &a, &b) != SESAME_OK)
        return NULL;
    char *canon = k->type == KT_EC
                      ? sesame_asprintf("{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                                        k->curve->crv, a, b)
                      : sesame_asprintf("{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", b, a);
    unsigned char md[32];
    unsigned int mdlen = 0;
    char *out = NULL;
    if (EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32)
        out = b64_encode(md, mdlen);
    free(canon);
    free(a);
    free(b);
    return out;
}

char *
sesame_jose_key_thumbprint(const struct sesame_jose_key *key)
{
    return key ? thumbprint(key) : NULL;
}

/* ---- Provider JWKS ------------------------------------------------------ */

static bool
key_ops_allow_verify(const json_t *ops)
{
    if (ops == NULL)
        return true;
    if (!json_is_array(ops))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(ops, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), "verify") == 0)
            return true;
    }
    return false;
}

/* Turns one JWKS entry into a verification key, or NULL to skip it. */
static struct sesame_jose_key *
jwks_entry(const json_t *jwk)
{
    if (!json_is_object(jwk))
        return NULL;
    const json_t *use = json_object_get(jwk, "use");
    if (use != NULL && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return NULL;
    if (!key_ops_allow_verify(json_object_get(jwk, "key_ops")))
        return NULL;
    const json_t *kid = json_object_get(jwk, "kid");
    if (kid != NULL && (!json_is_string(kid) || json_string_length(kid) == 0 ||
                        json_string_length(kid) > MAX_KID))
        return NULL;
    const json_t *alg = json_object_get(jwk, "alg");
    if (alg != NULL && !json_is_string(alg))
        return NULL;

    enum key_type type;
    const struct ec_curve *curve;
    const char *why = NULL;
    EVP_PKEY *pkey = jwk_pkey(jwk, false, &type, &curve, &why);
    if (pkey == NULL)
        return NULL;
    unsigned algs = 0;
    if (type == KT_RSA) {
        algs = RSA_JWS_ALGS;
    } else {
        for (size_t i = 0; i < SESAME_ARRAY_LEN(jws_algs); i++)
            if (jws_algs[i].family == FAM_EC && jws_algs[i].len == curve->coord)
                algs = jws_algs[i].bit;
    }
    if (alg != NULL) {
        unsigned bit = sesame_jose_alg_from_name(json_string_value(alg));
        if ((bit & algs) == 0) {
            EVP_PKEY_free(pkey);
            return NULL;
        }
        algs = bit;
    }
    struct sesame_jose_key *k = sesame_calloc(1, sizeof(*k));
    k->pkey = pkey;
    k->type = type;
    k->curve = curve;
    k->kid = kid ? sesame_strdup(json_string_value(kid)) : NULL;
    k->jws_algs = algs;
    k->use = use ? "sig" : NULL;
    k->alg = alg ? jws_alg_by_bit(algs)->name : NULL;
    return k;
}

struct sesame_jose_keyset *
sesame_jose_keyset_parse(const char *json, size_t len, char **err)
{
    if (json == NULL || len == 0) {
        sesame_err_set(err, "jwks: empty document");
        return NULL;
    }
    if (len > SESAME_JOSE_MAX_JWKS) {
        sesame_err_set(err, "jwks: document longer than %d bytes", SESAME_JOSE_MAX_JWKS);
        return NULL;
    }
    json_t *doc = parse_object(json, len);
    if (doc == NULL) {
        sesame_err_set(err, "jwks: not a JSON object");
        return NULL;
    }
    const json_t *arr = json_object_get(doc, "keys");
    struct sesame_jose_keyset *ks = NULL;
    if (!json_is_array(arr)) {
        sesame_err_set(err, "jwks: no \"keys\" array");
        goto out;
    }
    if (json_array_size(arr) > SESAME_JOSE_MAX_KEYS) {
        sesame_err_set(err, "jwks: more than %d keys", SESAME_JOSE_MAX_KEYS);
        goto out;
    }
    ks = sesame_jose_keyset_new();
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v) {
        struct sesame_jose_key *k = jwks_entry(v);
        if (k != NULL)
            sesame_jose_keyset_add(ks, k, NULL);
    }
    if (ks->n == 0) {
        sesame_err_set(err, "jwks: no usable signature key (EC P-256/384/521 or RSA >= 2048)");
        sesame_jose_keyset_free(ks);
        ks = NULL;
    }
out:
    json_decref(doc);
    return ks;
}

char *
sesame_jose_keyset_export(const struct sesame_jose_keyset *ks, char **err)
{
    json_t *doc = json_object();
    json_t *arr = json_array();
    json_object_set_new(doc, "keys", arr);
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        const struct sesame_jose_key *k = ks->keys[i];
        char *a, *b;
        if (public_parts(k, &a, &b) != SESAME_OK) {
            json_decref(doc);
            sesame_err_set(err, "jwks: cannot export a key");
            return NULL;
        }
        json_t *o = json_object();
        if (k->type == KT_EC) {
            json_object_set_new(o, "kty", json_string("EC"));
            json_object_set_new(o, "crv", json_string(k->curve->crv));
            json_object_set_new(o, "x", json_string(a));
            json_object_set_new(o, "y", json_string(b));
        } else {
            json_object_set_new(o, "kty", json_string("RSA"));
            json_object_set_new(o, "n", json_string(a));
            json_object_set_new(o, "e", json_string(b));
        }
        free(a);
        free(b);
        if (k->kid)
            json_object_set_new(o, "kid", json_string(k->kid));
        if (k->use)
            json_object_set_new(o, "use", json_string(k->use));
        if (k->alg)
            json_object_set_new(o, "alg", json_string(k->alg));
        json_array_append_new(arr, o);
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (s == NULL)
        sesame_err_set(err, "jwks: cannot serialise");
    return s;
}

/* ---- Gateway keys ------------------------------------------------------- */

static int
no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static const struct ec_curve *
pkey_curve(EVP_PKEY *pkey)
{
    char name[64];
    size_t nl = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name),
                                       &nl) != 1)
        return NULL;
    int nid = OBJ_sn2nid(name);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(name);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(ec_curves); i++)
        if (ec_curves[i].nid == nid)
            return &ec_curves[i];
    return NULL;
}

/* Wraps a private pkey (taking ownership) as a gateway key for `alg`. */
static struct sesame_jose_key *
gateway_key(EVP_PKEY *pkey, const char *alg, char **err)
{
    struct sesame_jose_key *k = sesame_calloc(1, sizeof(*k));
    k->pkey = pkey;
    k->priv = true;
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        k->type = KT_RSA;
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < MIN_RSA_BITS || bits > MAX_RSA_BYTES * 8) {
            sesame_err_set(err, "RSA key of %d bits (2048..8192 required)", bits);
            goto fail;
        }
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        k->type = KT_EC;
        k->curve = pkey_curve(pkey);
        if (k->curve == NULL || k->curve->coord != 32) {
            sesame_err_set(err, "EC key not on P-256");
            goto fail;
        }
    } else {
        sesame_err_set(err, "key type is neither EC nor RSA");
        goto fail;
    }
    if (alg == NULL)
        alg = k->type == KT_EC ? "ECDH-ES" : "RSA-OAEP";
    const struct jws_alg *ja = jws_alg_by_name(alg);
    const struct jwe_alg *ea = jwe_alg_by_name(alg);
    if (ja != NULL && ((ja->family == FAM_EC && k->type == KT_EC && ja->len == 32) ||
                       ((ja->family == FAM_RSA || ja->family == FAM_PSS) && k->type == KT_RSA)) &&
        (ja->bit & (SESAME_ALG_ES256 | SESAME_ALG_RS256 | SESAME_ALG_PS256)) != 0) {
        k->jws_algs = ja->bit;
        k->use = "sig";
        k->alg = ja->name;
    } else if (ea != NULL && ea->type == k->type) {
        k->jwe_algs = ea->bit;
        k->use = "enc";
        k->alg = ea->name;
    } else {
        sesame_err_set(err, "alg %s does not fit this %s key (ES256, RS256, PS256, ECDH-ES, "
                            "RSA-OAEP, RSA-OAEP-256)",
                       alg, k->type == KT_EC ? "EC" : "RSA");
        goto fail;
    }
    k->kid = thumbprint(k);
    if (k->kid == NULL) {
        sesame_err_set(err, "cannot compute the key thumbprint");
        goto fail;
    }
    return k;
fail:
    sesame_jose_key_free(k);
    return NULL;
}

struct sesame_jose_key *
sesame_jose_key_parse(const char *data, size_t len, const char *alg, char **err)
{
    if (data == NULL || len == 0 || len > SESAME_JOSE_MAX_KEY_FILE) {
        sesame_err_set(err, "key: empty or longer than %d bytes", SESAME_JOSE_MAX_KEY_FILE);
        return NULL;
    }
    size_t off = 0;
    while (off < len && isspace((unsigned char)data[off]))
        off++;
    EVP_PKEY *pkey = NULL;
    char jwk_alg[16] = "";
    if (off < len && data[off] == '{') {
        json_t *jwk = parse_object(data, len);
        enum key_type type;
        const struct ec_curve *curve;
        const char *why = "not a JSON object";
        const json_t *ja = json_object_get(jwk, "alg");
        if (ja != NULL && (!json_is_string(ja) || json_string_length(ja) >= sizeof(jwk_alg)))
            why = "alg member is not a known alg";
        else if (jwk != NULL)
            pkey = jwk_pkey(jwk, true, &type, &curve, &why);
        if (pkey != NULL && ja != NULL)
            memcpy(jwk_alg, json_string_value(ja), json_string_length(ja) + 1);
        json_decref(jwk);
        if (pkey == NULL) {
            sesame_err_set(err, "key: private JWK refused: %s", why);
            return NULL;
        }
        if (jwk_alg[0] != '\0' && alg != NULL && strcmp(alg, jwk_alg) != 0) {
            EVP_PKEY_free(pkey);
            sesame_err_set(err, "key: the JWK's alg differs from %s", alg);
            return NULL;
        }
        if (jwk_alg[0] != '\0')
            alg = jwk_alg;
    } else {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        if (bio != NULL)
            pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, no_password, NULL, NULL, NULL);
        BIO_free(bio);
        ERR_clear_error();
        if (pkey == NULL) {
            sesame_err_set(err, "key: not an unencrypted PEM private key or a private JWK");
            return NULL;
        }
    }
    char *why = NULL;
    struct sesame_jose_key *k = gateway_key(pkey, alg, &why);
    if (k == NULL) {
        sesame_err_set(err, "key: %s", why ? why : "refused");
        free(why);
    }
    return k;
}

struct sesame_jose_key *
sesame_jose_key_load(const char *path, const char *alg, char **err)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (f == NULL) {
        sesame_err_set(err, "%s: cannot open the key file", path ? path : "(null)");
        return NULL;
    }
    size_t cap = SESAME_JOSE_MAX_KEY_FILE + 1;
    char *buf = sesame_malloc(cap);
    size_t n = fread(buf, 1, cap, f);
    bool rderr = ferror(f) != 0;
    fclose(f);
    struct sesame_jose_key *k = NULL;
    if (rderr) {
        sesame_err_set(err, "%s: cannot read the key file", path);
    } else if (n == cap) {
        sesame_err_set(err, "%s: key file longer than %d bytes", path, SESAME_JOSE_MAX_KEY_FILE);
    } else {
        char *why = NULL;
        k = sesame_jose_key_parse(buf, n, alg, &why);
        if (k == NULL)
            sesame_err_set(err, "%s: %s", path, why ? why : "refused");
        free(why);
    }
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return k;
}

/* ---- Compact serialisation ---------------------------------------------- */

struct seg {
    const char *p;
    size_t n;
};

/* Splits s at '.' into at most max segments. Returns the number of segments,
 * or max + 1 when there are more. */
static size_t
split(const char *s, size_t len, struct seg *segs, size_t max)
{
    size_t count = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (count == max)
                return max + 1;
            segs[count].p = s + start;
            segs[count].n = i - start;
            count++;
            start = i + 1;
        }
    }
    return count;
}

bool
sesame_jose_is_jwe(const char *compact, size_t len)
{
    struct seg s[5];
    return compact != NULL && len > 0 && len <= SESAME_JOSE_MAX_TOKEN &&
           split(compact, len, s, 5) == 5;
}

/* ---- JWS ---------------------------------------------------------------- */

static bool
typ_ok(const json_t *hdr)
{
    const json_t *typ = json_object_get(hdr, "typ");
    if (typ == NULL)
        return true;
    const char *t = json_string_value(typ);
    return t != NULL && (strcasecmp(t, "JWT") == 0 || strcasecmp(t, "application/jwt") == 0);
}

/* Reads and checks a JWS header. On success *alg is the table entry and *kid
 * the kid (owned by hdr) or NULL. */
static int
jws_header(const json_t *hdr, unsigned allowed, const struct jws_alg **alg, const char **kid,
           char **err)
{
    const char *name = get_str(hdr, "alg");
    if (name == NULL)
        return sesame_err_set(err, "jws: header has no alg");
    if (strcasecmp(name, "none") == 0)
        return sesame_err_set(err, "jws: alg none refused");
    const struct jws_alg *a = jws_alg_by_name(name);
    if (a == NULL)
        return sesame_err_set(err, "jws: unsupported alg");
    if ((allowed & a->bit) == 0)
        return sesame_err_set(err, "jws: alg %s is not allowed for this provider", a->name);
    if (json_object_get(hdr, "crit") != NULL)
        return sesame_err_set(err, "jws: crit header refused");
    if (json_object_get(hdr, "b64") != NULL)
        return sesame_err_set(err, "jws: b64 header refused");
    if (json_object_get(hdr, "cty") != NULL)
        return sesame_err_set(err, "jws: cty header refused (nested tokens are not accepted)");
    if (!typ_ok(hdr))
        return sesame_err_set(err, "jws: typ must be JWT when present");
    const json_t *k = json_object_get(hdr, "kid");
    if (k != NULL && (!json_is_string(k) || json_string_length(k) == 0 ||
                      json_string_length(k) > MAX_KID))
        return sesame_err_set(err, "jws: kid is malformed");
    *alg = a;
    *kid = k ? json_string_value(k) : NULL;
    return SESAME_OK;
}

static bool
key_fits_jws(const struct sesame_jose_key *k, const struct jws_alg *a)
{
    if ((k->jws_algs & a->bit) == 0)
        return false;
    switch (a->family) {
    case FAM_EC:
        return k->type == KT_EC && k->curve != NULL && k->curve->coord == a->len;
    case FAM_RSA:
    case FAM_PSS:
        return k->type == KT_RSA;
    default:
        return false;
    }
}

static int
select_jws_key(const struct sesame_jose_keyset *ks, const char *kid, const struct jws_alg *a,
               const struct sesame_jose_key **out, char **err)
{
    size_t nkid = 0, nfit = 0;
    const struct sesame_jose_key *found = NULL;
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        const struct sesame_jose_key *k = ks->keys[i];
        if (kid != NULL) {
            if (k->kid == NULL || strcmp(k->kid, kid) != 0)
                continue;
            nkid++;
        }
        if (key_fits_jws(k, a)) {
            nfit++;
            found = k;
        }
    }
    if (kid != NULL && nkid == 0) {
        sesame_err_set(err, "jws: no key with this kid (the provider's JWKS may have rotated)");
        return SESAME_JOSE_UNKNOWN_KID;
    }
    if (kid != NULL && nfit == 0)
        return sesame_err_set(err, "jws: the key named by kid does not fit alg %s", a->name);
    if (kid == NULL && nfit == 0) {
        sesame_err_set(err, "jws: no kid and no key fits alg %s", a->name);
        return SESAME_JOSE_UNKNOWN_KID;
    }
    if (nfit > 1)
        return sesame_err_set(err, kid ? "jws: several keys share this kid for alg %s"
                                       : "jws: no kid and several keys fit alg %s",
                              a->name);
    *out = found;
    return SESAME_OK;
}

/* Converts a raw R||S signature (2 * clen bytes) to DER. */
static unsigned char *
raw_to_der(const unsigned char *sig, size_t clen, int *derlen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)clen, NULL);
    BIGNUM *s = BN_bin2bn(sig + clen, (int)clen, NULL);
    unsigned char *der = NULL;
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    *derlen = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    if (*derlen <= 0) {
        OPENSSL_free(der);
        return NULL;
    }
    return der;
}

static int
set_rsa_padding(EVP_PKEY_CTX *pctx, const struct jws_alg *a)
{
    if (a->family == FAM_PSS)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
                       EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, a->md, NULL) == 1
                   ? SESAME_OK
                   : SESAME_ERROR;
    if (a->family == FAM_RSA)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 ? SESAME_OK
                                                                          : SESAME_ERROR;
    return SESAME_OK;
}

static int
verify_asym(const struct sesame_jose_key *k, const struct jws_alg *a, const char *in,
            size_t inlen, const unsigned char *sig, size_t siglen, char **err)
{
    unsigned char *der = NULL;
    const unsigned char *s = sig;
    size_t slen = siglen;
    if (a->family == FAM_EC) {
        if (siglen != 2 * a->len)
            return sesame_err_set(err, "jws: %s signature must be %zu bytes (raw R||S)", a->name,
                                  2 * a->len);
        int dl = 0;
        der = raw_to_der(sig, a->len, &dl);
        if (der == NULL)
            return sesame_err_set(err, "jws: signature verification failed");
        s = der;
        slen = (size_t)dl;
    } else if (siglen != (size_t)EVP_PKEY_get_size(k->pkey)) {
        return sesame_err_set(err, "jws: %s signature length differs from the key size", a->name);
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = md != NULL &&
              EVP_DigestVerifyInit_ex(md, &pctx, a->md, NULL, NULL, k->pkey, NULL) == 1 &&
              set_rsa_padding(pctx, a) == SESAME_OK &&
              EVP_DigestVerify(md, s, slen, (const unsigned char *)in, inlen) == 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok ? SESAME_OK : sesame_err_set(err, "jws: signature verification failed");
}

static int
verify_hmac(const struct jws_alg *a, const unsigned char *secret, size_t slen, const char *in,
            size_t inlen, const unsigned char *sig, size_t siglen, char **err)
{
    if (secret == NULL || slen == 0)
        return sesame_err_set(err, "jws: %s refused: no client secret configured", a->name);
    if (slen < a->len)
        return sesame_err_set(err, "jws: %s refused: the client secret is shorter than %zu bytes",
                              a->name, a->len);
    if (slen > INT32_MAX)
        return sesame_err_set(err, "jws: client secret too long");
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    const EVP_MD *md = EVP_get_digestbyname(a->md);
    if (md == NULL ||
        HMAC(md, secret, (int)slen, (const unsigned char *)in, inlen, mac, &maclen) == NULL)
        return sesame_err_set(err, "jws: HMAC computation failed");
    bool ok = sesame_util_ct_equal(mac, maclen, sig, siglen);
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok ? SESAME_OK : sesame_err_set(err, "jws: signature verification failed");
}

int
sesame_jose_verify(const char *compact, size_t len, const struct sesame_jose_keyset *keys,
                   unsigned allowed_algs, const unsigned char *hs_secret, size_t hs_len,
                   json_t **claims_out, char **err)
{
    if (claims_out != NULL)
        *claims_out = NULL;
    if (compact == NULL || len == 0)
        return sesame_err_set(err, "jws: empty token");
    if (len > SESAME_JOSE_MAX_TOKEN)
        return sesame_err_set(err, "jws: token longer than %d bytes", SESAME_JOSE_MAX_TOKEN);
    struct seg s[5];
    size_t nseg = split(compact, len, s, 5);
    if (nseg == 5)
        return sesame_err_set(err, "jws: token is an encrypted JWE, decrypt it first");
    if (nseg != 3)
        return sesame_err_set(err, "jws: token must have exactly three segments");
    if (s[0].n == 0 || s[1].n == 0)
        return sesame_err_set(err, "jws: empty header or payload segment");
    if (s[2].n == 0)
        return sesame_err_set(err, "jws: unsigned token refused");

    int rc = SESAME_ERROR;
    size_t hl = 0, pl = 0, sl = 0;
    unsigned char *hbuf = NULL, *pbuf = NULL, *sig = NULL;
    json_t *hdr = NULL, *claims = NULL;
    const struct jws_alg *alg = NULL;
    const char *kid = NULL;

    hbuf = b64_decode(s[0].p, s[0].n, &hl);
    if (hbuf == NULL) {
        sesame_err_set(err, "jws: header is not valid base64url");
        goto out;
    }
    hdr = parse_object(hbuf, hl);
    if (hdr == NULL) {
        sesame_err_set(err, "jws: header is not a JSON object");
        goto out;
    }
    if (jws_header(hdr, allowed_algs, &alg, &kid, err) != SESAME_OK)
        goto out;
    pbuf = b64_decode(s[1].p, s[1].n, &pl);
    if (pbuf == NULL) {
        sesame_err_set(err, "jws: payload is not valid base64url");
        goto out;
    }
    sig = b64_decode(s[2].p, s[2].n, &sl);
    if (sig == NULL) {
        sesame_err_set(err, "jws: signature is not valid base64url");
        goto out;
    }
    size_t inlen = s[1].n + (size_t)(s[1].p - s[0].p);
    if (alg->family == FAM_HMAC) {
        if (verify_hmac(alg, hs_secret, hs_len, compact, inlen, sig, sl, err) != SESAME_OK)
            goto out;
    } else {
        const struct sesame_jose_key *key = NULL;
        int krc = select_jws_key(keys, kid, alg, &key, err);
        if (krc != SESAME_OK) {
            rc = krc;
            goto out;
        }
        if (verify_asym(key, alg, compact, inlen, sig, sl, err) != SESAME_OK)
            goto out;
    }
    claims = parse_object(pbuf, pl);
    if (claims == NULL) {
        sesame_err_set(err, "jws: payload is not a JSON object");
        goto out;
    }
    if (claims_out != NULL) {
        *claims_out = claims;
        claims = NULL;
    }
    rc = SESAME_OK;
out:
    json_decref(claims);
    json_decref(hdr);
    free(hbuf);
    free(pbuf);
    free(sig);
    return rc;
}

/* ---- Signing ------------------------------------------------------------ */

char *
sesame_jose_sign(const json_t *claims, const struct sesame_jose_key *key, char **err)
{
    if (key == NULL || !key->priv || key->jws_algs == 0) {
        sesame_err_set(err, "jws: signing needs a private key loaded for ES256, RS256 or PS256");
        return NULL;
    }
    if (!json_is_object(claims)) {
        sesame_err_set(err, "jws: claims to sign are not a JSON object");
        return NULL;
    }
    const struct jws_alg *a = jws_alg_by_bit(key->jws_algs);
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", a->name, "typ", "JWT", "kid", key->kid);
    char *hjson = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    char *pjson = json_dumps(claims, JSON_COMPACT);
    json_decref(hdr);
    char *out = NULL, *h64 = NULL, *p64 = NULL, *input = NULL;
    unsigned char *sig = NULL;
    EVP_MD_CTX *md = NULL;
    if (hjson == NULL || pjson == NULL) {
        sesame_err_set(err, "jws: cannot serialise the claims");
        goto done;
    }
    h64 = b64_encode(hjson, strlen(hjson));
    p64 = b64_encode(pjson, strlen(pjson));
    input = sesame_asprintf("%s.%s", h64, p64);
    size_t siglen = 0;
    EVP_PKEY_CTX *pctx = NULL;
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit_ex(md, &pctx, a->md, NULL, NULL, key->pkey, NULL) != 1 ||
        set_rsa_padding(pctx, a) != SESAME_OK ||
        EVP_DigestSign(md, NULL, &siglen, (unsigned char *)input, strlen(input)) != 1) {
        sesame_err_set(err, "jws: signing failed");
        goto done;
    }
    sig = sesame_malloc(siglen);
    if (EVP_DigestSign(md, sig, &siglen, (unsigned char *)input, strlen(input)) != 1) {
        sesame_err_set(err, "jws: signing failed");
        goto done;
    }
    char *s64 = NULL;
    if (a->family == FAM_EC) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
        unsigned char raw[2 * MAX_EC_COORD];
        bool ok = es != NULL && BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)a->len) >= 0 &&
                  BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + a->len, (int)a->len) >= 0;
        ECDSA_SIG_free(es);
        if (!ok) {
            sesame_err_set(err, "jws: signing failed");
            goto done;
        }
        s64 = b64_encode(raw, 2 * a->len);
    } else {
        s64 = b64_encode(sig, siglen);
    }
    out = sesame_asprintf("%s.%s", input, s64);
    free(s64);
done:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(sig);
    free(input);
    free(h64);
    free(p64);
    free(hjson);
    free(pjson);
    return out;
}

char *
sesame_jose_sign_es256(const json_t *claims, const struct sesame_jose_key *key, char **err)
{
    if (key == NULL || key->jws_algs != SESAME_ALG_ES256) {
        sesame_err_set(err, "jws: the key was not loaded for ES256");
        return NULL;
    }
    return sesame_jose_sign(claims, key, err);
}

/* ---- Claims ------------------------------------------------------------- */

int
sesame_jose_acr_rank(const char *acr)
{
    if (acr == NULL)
        return 0;
    if (strcmp(acr, "eidas1") == 0)
        return 1;
    if (strcmp(acr, "eidas2") == 0)
        return 2;
    if (strcmp(acr, "eidas3") == 0)
        return 3;
    return 0;
}

/* Reads the NumericDate claim `name`. *present tells whether it exists. */
static int
get_time(const json_t *claims, const char *name, const char *what, bool *present, int64_t *out,
         char **err)
{
    const json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    if (v == NULL)
        return SESAME_OK;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > MAX_NUMERIC_DATE)
            return sesame_err_set(err, "%s: %s is out of range", what, name);
        *out = (int64_t)i;
        return SESAME_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0 && d <= (double)MAX_NUMERIC_DATE))
            return sesame_err_set(err, "%s: %s is out of range", what, name);
        *out = (int64_t)d;
        return SESAME_OK;
    }
    return sesame_err_set(err, "%s: %s is not a number", what, name);
}

/* aud must contain client_id; *count receives the number of audiences. */
static int
check_aud(const json_t *claims, const char *client_id, const char *what, size_t *count,
          char **err)
{
    const json_t *aud = json_object_get(claims, "aud");
    bool match = false;
    if (aud == NULL)
        return sesame_err_set(err, "%s: aud is missing", what);
    if (json_is_string(aud)) {
        *count = 1;
        match = strcmp(json_string_value(aud), client_id) == 0;
    } else if (json_is_array(aud)) {
        *count = json_array_size(aud);
        if (*count == 0 || *count > MAX_AUD)
            return sesame_err_set(err, "%s: aud is an empty or oversized array", what);
        size_t i;
        const json_t *v;
        json_array_foreach(aud, i, v) {
            if (!json_is_string(v))
                return sesame_err_set(err, "%s: aud holds a non-string value", what);
            if (strcmp(json_string_value(v), client_id) == 0)
                match = true;
        }
    } else {
        return sesame_err_set(err, "%s: aud is neither a string nor an array", what);
    }
    if (!match)
        return sesame_err_set(err, "%s: aud does not contain the client_id", what);
    return SESAME_OK;
}

static int
check_iss(const json_t *claims, const char *issuer, const char *what, bool required, char **err)
{
    const json_t *iss = json_object_get(claims, "iss");
    if (iss == NULL && !required)
        return SESAME_OK;
    if (!json_is_string(iss))
        return sesame_err_set(err, "%s: iss is missing or not a string", what);
    if (strcmp(json_string_value(iss), issuer) != 0)
        return sesame_err_set(err, "%s: iss does not match the provider's issuer", what);
    return SESAME_OK;
}

static int
check_exp(const json_t *claims, const struct sesame_jose_expect *e, int64_t leeway,
          const char *what, bool required, char **err)
{
    bool present;
    int64_t exp = 0;
    if (get_time(claims, "exp", what, &present, &exp, err) != SESAME_OK)
        return SESAME_ERROR;
    if (!present)
        return required ? sesame_err_set(err, "%s: exp is missing", what) : SESAME_OK;
    if (!(exp > e->now - leeway))
        return sesame_err_set(err, "%s: exp is past (token expired)", what);
    return SESAME_OK;
}

int
sesame_jose_check_id_token(const json_t *claims, const struct sesame_jose_expect *e, char **err)
{
    static const char what[] = "id_token";
    if (!json_is_object(claims))
        return sesame_err_set(err, "id_token: claims are not a JSON object");
    if (e == NULL || e->issuer == NULL || e->client_id == NULL)
        return sesame_err_set(err, "id_token: no issuer or client_id to check against");
    if (e->nonce == NULL)
        return sesame_err_set(err, "id_token: no nonce to check against");
    int64_t leeway = e->leeway_s > 0 ? e->leeway_s : 0;
    int64_t max_age = e->max_age_s > 0 ? e->max_age_s : SESAME_JOSE_DEFAULT_MAX_AGE;

    if (check_iss(claims, e->issuer, what, true, err) != SESAME_OK)
        return SESAME_ERROR;
    size_t naud = 0;
    if (check_aud(claims, e->client_id, what, &naud, err) != SESAME_OK)
        return SESAME_ERROR;
    const json_t *azp = json_object_get(claims, "azp");
    if (azp == NULL && naud > 1)
        return sesame_err_set(err, "id_token: azp is required when aud has several values");
    if (azp != NULL &&
        (!json_is_string(azp) || strcmp(json_string_value(azp), e->client_id) != 0))
        return sesame_err_set(err, "id_token: azp does not match the client_id");

    if (check_exp(claims, e, leeway, what, true, err) != SESAME_OK)
        return SESAME_ERROR;
    bool present;
    int64_t t = 0;
    if (get_time(claims, "nbf", what, &present, &t, err) != SESAME_OK)
        return SESAME_ERROR;
    if (present && t > e->now + leeway)
        return sesame_err_set(err, "id_token: nbf is in the future");
    if (get_time(claims, "iat", what, &present, &t, err) != SESAME_OK)
        return SESAME_ERROR;
    if (!present)
        return sesame_err_set(err, "id_token: iat is missing");
    if (t > e->now + leeway)
        return sesame_err_set(err, "id_token: iat is in the future");
    if (t < e->now - max_age - leeway)
        return sesame_err_set(err, "id_token: iat is too old");

    const json_t *nonce = json_object_get(claims, "nonce");
    if (!json_is_string(nonce))
        return sesame_err_set(err, "id_token: nonce is missing or not a string");
    if (!sesame_util_ct_equal(json_string_value(nonce), json_string_length(nonce), e->nonce,
                              strlen(e->nonce)))
        return sesame_err_set(err, "id_token: nonce does not match the one sent");

    const json_t *sub = json_object_get(claims, "sub");
    if (!json_is_string(sub))
        return sesame_err_set(err, "id_token: sub is missing or not a string");
    if (json_string_length(sub) == 0)
        return sesame_err_set(err, "id_token: sub is empty");
    if (json_string_length(sub) > SESAME_JOSE_MAX_SUB)
        return sesame_err_set(err, "id_token: sub is longer than %d bytes", SESAME_JOSE_MAX_SUB);

    const json_t *acr = json_object_get(claims, "acr");
    if (acr != NULL && !json_is_string(acr))
        return sesame_err_set(err, "id_token: acr is not a string");
    if (e->min_acr != NULL) {
        int want = sesame_jose_acr_rank(e->min_acr);
        if (want == 0)
            return sesame_err_set(err, "id_token: the required acr level is not an eIDAS level");
        if (acr == NULL)
            return sesame_err_set(err, "id_token: acr is missing (a minimum level is required)");
        int got = sesame_jose_acr_rank(json_string_value(acr));
        if (got == 0)
            return sesame_err_set(err, "id_token: acr is not a known eIDAS level");
        if (got < want)
            return sesame_err_set(err, "id_token: acr is below the required level");
    }
    return SESAME_OK;
}

int
sesame_jose_check_userinfo(const json_t *userinfo, const json_t *id_claims,
                           const struct sesame_jose_expect *e, char **err)
{
    static const char what[] = "userinfo";
    if (!json_is_object(userinfo))
        return sesame_err_set(err, "userinfo: not a JSON object");
    if (e == NULL || e->issuer == NULL || e->client_id == NULL)
        return sesame_err_set(err, "userinfo: no issuer or client_id to check against");
    const char *id_sub = get_str(id_claims, "sub");
    if (id_sub == NULL || id_sub[0] == '\0')
        return sesame_err_set(err, "userinfo: the id_token has no sub to compare with");
    const json_t *sub = json_object_get(userinfo, "sub");
    if (!json_is_string(sub))
        return sesame_err_set(err, "userinfo: sub is missing or not a string");
    if (strcmp(json_string_value(sub), id_sub) != 0)
        return sesame_err_set(err, "userinfo: sub differs from the id_token's sub");
    if (check_iss(userinfo, e->issuer, what, false, err) != SESAME_OK)
        return SESAME_ERROR;
    size_t naud = 0;
    if (json_object_get(userinfo, "aud") != NULL &&
        check_aud(userinfo, e->client_id, what, &naud, err) != SESAME_OK)
        return SESAME_ERROR;
    int64_t leeway = e->leeway_s > 0 ? e->leeway_s : 0;
    if (check_exp(userinfo, e, leeway, what, false, err) != SESAME_OK)
        return SESAME_ERROR;
    return SESAME_OK;
}

int
sesame_jose_verify_userinfo(const char *compact, size_t len,
                            const struct sesame_jose_keyset *keys, unsigned allowed_algs,
                            const unsigned char *hs_secret, size_t hs_len,
                            const json_t *id_claims, const struct sesame_jose_expect *e,
                            json_t **claims_out, char **err)
{
    json_t *claims = NULL;
    if (claims_out != NULL)
        *claims_out = NULL;
    int rc = sesame_jose_verify(compact, len, keys, allowed_algs, hs_secret, hs_len, &claims, err);
    if (rc != SESAME_OK)
        return rc;
    if (sesame_jose_check_userinfo(claims, id_claims, e, err) != SESAME_OK) {
        json_decref(claims);
        return SESAME_ERROR;
    }
    if (claims_out != NULL)
        *claims_out = claims;
    else
        json_decref(claims);
    return SESAME_OK;
}

/* ---- JWE ---------------------------------------------------------------- */

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static bool
md_update_lv(EVP_MD_CTX *md, const void *p, size_t n)
{
    unsigned char be[4];
    put_be32(be, (uint32_t)n);
    return EVP_DigestUpdate(md, be, 4) == 1 && (n == 0 || EVP_DigestUpdate(md, p, n) == 1);
}

/* RFC 7518 4.6.2: Concat KDF (NIST SP 800-56A) with SHA-256, for the direct
 * key agreement mode, keydatalen 256 bits: a single hash round. */
static int
concat_kdf(const unsigned char *z, size_t zlen, const char *enc, const unsigned char *apu,
           size_t apulen, const unsigned char *apv, size_t apvlen, unsigned char out[CEK_LEN])
{
    unsigned char be[4];
    unsigned int outlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    put_be32(be, 1);
    ok = ok && EVP_DigestUpdate(md, be, 4) == 1 && EVP_DigestUpdate(md, z, zlen) == 1 &&
         md_update_lv(md, enc, strlen(enc)) && md_update_lv(md, apu, apulen) &&
         md_update_lv(md, apv, apvlen);
    put_be32(be, CEK_LEN * 8);
    ok = ok && EVP_DigestUpdate(md, be, 4) == 1 && EVP_DigestFinal_ex(md, out, &outlen) == 1 &&
         outlen == CEK_LEN;
    EVP_MD_CTX_free(md);
    return ok ? SESAME_OK : SESAME_ERROR;
}

/* Optional base64url header member (apu / apv): absent is empty. */
static int
header_b64_opt(const json_t *hdr, const char *name, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    const json_t *v = json_object_get(hdr, name);
    if (v == NULL)
        return SESAME_OK;
    if (!json_is_string(v))
        return SESAME_ERROR;
    size_t n = json_string_length(v);
    if (n == 0)
        return SESAME_OK;
    if (n > (MAX_APX * 4) / 3 + 4)
        return SESAME_ERROR;
    *out = b64_decode(json_string_value(v), n, len);
    return *out != NULL && *len <= MAX_APX ? SESAME_OK : SESAME_ERROR;
}

static int
ecdh_es_cek(const struct sesame_jose_key *k, const json_t *hdr, const char *enc,
            unsigned char cek[CEK_LEN], char **err)
{
    const json_t *epk = json_object_get(hdr, "epk");
    if (!json_is_object(epk))
        return sesame_err_set(err, "jwe: ECDH-ES without an epk object");
    const char *kty = get_str(epk, "kty"), *crv = get_str(epk, "crv");
    if (kty == NULL || strcmp(kty, "EC") != 0 || crv == NULL || strcmp(crv, k->curve->crv) != 0)
        return sesame_err_set(err, "jwe: epk is not an EC key on the decryption key's curve");
    if (json_object_get(epk, "d") != NULL)
        return sesame_err_set(err, "jwe: epk holds a private part");
    enum key_type type;
    const struct ec_curve *curve;
    const char *why = NULL;
    EVP_PKEY *peer = jwk_pkey(epk, false, &type, &curve, &why);
    if (peer == NULL)
        return sesame_err_set(err, "jwe: epk refused (%s)", why);
    unsigned char *apu = NULL, *apv = NULL;
    size_t apulen = 0, apvlen = 0;
    unsigned char z[MAX_EC_COORD];
    size_t zlen = sizeof(z);
    int rc = SESAME_ERROR;
    EVP_PKEY_CTX *dctx = NULL;
    if (header_b64_opt(hdr, "apu", &apu, &apulen) != SESAME_OK ||
        header_b64_opt(hdr, "apv", &apv, &apvlen) != SESAME_OK) {
        sesame_err_set(err, "jwe: apu or apv is malformed");
        goto out;
    }
    dctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    if (dctx == NULL || EVP_PKEY_derive_init(dctx) != 1 ||
        EVP_PKEY_derive_set_peer_ex(dctx, peer, 1) != 1 ||
        EVP_PKEY_derive(dctx, z, &zlen) != 1 || zlen != k->curve->coord) {
        sesame_err_set(err, "jwe: ECDH-ES key agreement failed");
        goto out;
    }
    if (concat_kdf(z, zlen, enc, apu, apulen, apv, apvlen, cek) != SESAME_OK) {
        sesame_err_set(err, "jwe: key derivation failed");
        goto out;
    }
    rc = SESAME_OK;
out:
    ERR_clear_error();
    OPENSSL_cleanse(z, sizeof(z));
    EVP_PKEY_CTX_free(dctx);
    EVP_PKEY_free(peer);
    free(apu);
    free(apv);
    return rc;
}

/* RSA-OAEP unwrap. Any failure yields a random CEK (RFC 7516 11.5): the
 * content decryption then fails like any other tampering. */
static int
rsa_oaep_cek(const struct sesame_jose_key *k, const struct jwe_alg *a, const unsigned char *ek,
             size_t eklen, unsigned char cek[CEK_LEN])
{
    unsigned char buf[MAX_RSA_BYTES];
    size_t outlen = sizeof(buf);
    if (sesame_util_random(cek, CEK_LEN) != SESAME_OK)
        return SESAME_ERROR;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    bool ok = c != NULL && eklen == (size_t)EVP_PKEY_get_size(k->pkey) &&
              EVP_PKEY_decrypt_init(c) == 1 &&
              EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
              EVP_PKEY_CTX_set_rsa_oaep_md_name(c, a->md, NULL) == 1 &&
              EVP_PKEY_CTX_set_rsa_mgf1_md_name(c, a->md, NULL) == 1 &&
              EVP_PKEY_decrypt(c, buf, &outlen, ek, eklen) == 1 && outlen == CEK_LEN;
    if (ok)
        memcpy(cek, buf, CEK_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    EVP_PKEY_CTX_free(c);
    ERR_clear_error();
    return SESAME_OK;
}

static int
aes256gcm_decrypt(const unsigned char cek[CEK_LEN], const unsigned char *iv,
                  const unsigned char *aad, size_t aadlen, const unsigned char *ct, size_t ctlen,
                  const unsigned char *tag, unsigned char *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    bool ok = c != NULL && aadlen <= INT32_MAX && ctlen <= INT32_MAX &&
              EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, GCM_IV_LEN, NULL) == 1 &&
              EVP_DecryptInit_ex(c, NULL, NULL, cek, iv) == 1 &&
              EVP_DecryptUpdate(c, NULL, &l1, aad, (int)aadlen) == 1 &&
              EVP_DecryptUpdate(c, out, &l1, ct, (int)ctlen) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, (void *)tag) == 1 &&
              EVP_DecryptFinal_ex(c, out + l1, &l2) == 1 && (size_t)(l1 + l2) == ctlen;
    EVP_CIPHER_CTX_free(c);
    ERR_clear_error();
    return ok ? SESAME_OK : SESAME_ERROR;
}

static int
select_jwe_key(const struct sesame_jose_keyset *ks, const char *kid, const struct jwe_alg *a,
               const struct sesame_jose_key **out, char **err)
{
    size_t nfit = 0;
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        const struct sesame_jose_key *k = ks->keys[i];
        if (!k->priv || (k->jwe_algs & a->bit) == 0 || k->type != a->type)
            continue;
        if (kid != NULL && (k->kid == NULL || strcmp(k->kid, kid) != 0))
            continue;
        nfit++;
        *out = k;
    }
    if (nfit == 0)
        return sesame_err_set(err, kid ? "jwe: no decryption key with this kid for alg %s"
                                       : "jwe: no decryption key for alg %s",
                              a->name);
    if (nfit > 1)
        return sesame_err_set(err, kid ? "jwe: several decryption keys share this kid"
                                       : "jwe: no kid and several decryption keys fit alg %s",
                              a->name);
    return SESAME_OK;
}

static int
jwe_header(const json_t *hdr, const struct jwe_alg **alg, const char **kid, char **err)
{
    const char *name = get_str(hdr, "alg");
    const char *enc = get_str(hdr, "enc");
    if (name == NULL || enc == NULL)
        return sesame_err_set(err, "jwe: header lacks alg or enc");
    if (strcmp(name, "RSA1_5") == 0)
        return sesame_err_set(err, "jwe: alg RSA1_5 refused");
    const struct jwe_alg *a = jwe_alg_by_name(name);
    if (a == NULL)
        return sesame_err_set(err, "jwe: unsupported alg (RSA-OAEP, RSA-OAEP-256, ECDH-ES only)");
    if (strcmp(enc, "A256GCM") != 0)
        return sesame_err_set(err, "jwe: enc must be A256GCM");
    if (json_object_get(hdr, "zip") != NULL)
        return sesame_err_set(err, "jwe: compressed content (zip) refused");
    if (json_object_get(hdr, "crit") != NULL)
        return sesame_err_set(err, "jwe: crit header refused");
    const json_t *cty = json_object_get(hdr, "cty");
    if (cty != NULL &&
        (!json_is_string(cty) || strcasecmp(json_string_value(cty), "JWT") != 0))
        return sesame_err_set(err, "jwe: cty must be JWT when present");
    const json_t *k = json_object_get(hdr, "kid");
    if (k != NULL && (!json_is_string(k) || json_string_length(k) == 0 ||
                      json_string_length(k) > MAX_KID))
        return sesame_err_set(err, "jwe: kid is malformed");
    *alg = a;
    *kid = k ? json_string_value(k) : NULL;
    return SESAME_OK;
}

int
sesame_jose_decrypt(const char *compact, size_t len, const struct sesame_jose_keyset *keys,
                    char **plain_out, size_t *plain_len, char **err)
{
    if (plain_out != NULL)
        *plain_out = NULL;
    if (plain_len != NULL)
        *plain_len = 0;
    if (compact == NULL || len == 0)
        return sesame_err_set(err, "jwe: empty token");
    if (len > SESAME_JOSE_MAX_TOKEN)
        return sesame_err_set(err, "jwe: token longer than %d bytes", SESAME_JOSE_MAX_TOKEN);
    struct seg s[5];
    if (split(compact, len, s, 5) != 5)
        return sesame_err_set(err, "jwe: token must have exactly five segments");
    if (s[0].n == 0 || s[2].n == 0 || s[3].n == 0 || s[4].n == 0)
        return sesame_err_set(err, "jwe: empty header, iv, ciphertext or tag segment");

    int rc = SESAME_ERROR;
    size_t hl = 0, ekl = 0, ivl = 0, ctl = 0, tagl = 0;
    unsigned char *hbuf = NULL, *ek = NULL, *iv = NULL, *ct = NULL, *tag = NULL, *pt = NULL;
    unsigned char cek[CEK_LEN];
    json_t *hdr = NULL;
    const struct jwe_alg *alg = NULL;
    const char *kid = NULL;
    const struct sesame_jose_key *key = NULL;

    hbuf = b64_decode(s[0].p, s[0].n, &hl);
    hdr = hbuf ? parse_object(hbuf, hl) : NULL;
    if (hdr == NULL) {
        sesame_err_set(err, "jwe: header is not base64url of a JSON object");
        goto out;
    }
    if (jwe_header(hdr, &alg, &kid, err) != SESAME_OK)
        goto out;
    if (select_jwe_key(keys, kid, alg, &key, err) != SESAME_OK)
        goto out;
    ek = b64_decode(s[1].p, s[1].n, &ekl);
    iv = b64_decode(s[2].p, s[2].n, &ivl);
    ct = b64_decode(s[3].p, s[3].n, &ctl);
    tag = b64_decode(s[4].p, s[4].n, &tagl);
    if (ek == NULL || iv == NULL || ct == NULL || tag == NULL) {
        sesame_err_set(err, "jwe: a segment is not valid base64url");
        goto out;
    }
    if (ivl != GCM_IV_LEN || tagl != GCM_TAG_LEN || ctl == 0) {
        sesame_err_set(err, "jwe: A256GCM needs a 12-byte iv and a 16-byte tag");
        goto out;
    }
    if (alg->bit == JWE_ECDH_ES) {
        if (ekl != 0) {
            sesame_err_set(err, "jwe: ECDH-ES with a non-empty encrypted key");
            goto out;
        }
        if (ecdh_es_cek(key, hdr, "A256GCM", cek, err) != SESAME_OK)
            goto out;
    } else if (rsa_oaep_cek(key, alg, ek, ekl, cek) != SESAME_OK) {
        sesame_err_set(err, "jwe: no randomness");
        goto out;
    }
    pt = sesame_malloc(ctl + 1);
    if (aes256gcm_decrypt(cek, iv, (const unsigned char *)s[0].p, s[0].n, ct, ctl, tag, pt) !=
        SESAME_OK) {
        sesame_err_set(err, "jwe: decryption failed");
        goto out;
    }
    if (memchr(pt, '\0', ctl) != NULL) {
        sesame_err_set(err, "jwe: plaintext holds a NUL byte");
        goto out;
    }
    pt[ctl] = '\0';
    if (plain_len != NULL)
        *plain_len = ctl;
    if (plain_out != NULL) {
        *plain_out = (char *)pt;
        pt = NULL;
    }
    rc = SESAME_OK;
out:
    OPENSSL_cleanse(cek, sizeof(cek));
    if (pt != NULL)
        free_secret(pt, ctl + 1);
    json_decref(hdr);
    free(hbuf);
    free(ek);
    free(iv);
    free(ct);
    free(tag);
    return rc;
}
