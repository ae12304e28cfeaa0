#include "test_jose_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "core/util.h"

EVP_PKEY *tj_ec, *tj_ec2, *tj_ec384, *tj_rsa, *tj_rsa1024;

static void
die(const char *what)
{
    fprintf(stderr, "test_jose_util: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die("malloc");
    return p;
}

void
tj_keys_init(void)
{
    if (tj_ec != NULL)
        return;
    tj_ec = EVP_EC_gen("P-256");
    tj_ec2 = EVP_EC_gen("P-256");
    tj_ec384 = EVP_EC_gen("P-384");
    tj_rsa = EVP_RSA_gen(2048);
    tj_rsa1024 = EVP_RSA_gen(1024);
    if (!tj_ec || !tj_ec2 || !tj_ec384 || !tj_rsa || !tj_rsa1024)
        die("key generation");
}

void
tj_keys_free(void)
{
    EVP_PKEY_free(tj_ec);
    EVP_PKEY_free(tj_ec2);
    EVP_PKEY_free(tj_ec384);
    EVP_PKEY_free(tj_rsa);
    EVP_PKEY_free(tj_rsa1024);
    tj_ec = tj_ec2 = tj_ec384 = tj_rsa = tj_rsa1024 = NULL;
}

char *
tj_b64(const void *p, size_t n)
{
    char *out = xmalloc(sesame_util_b64url_len(n) + 1);
    sesame_util_b64url_encode(out, p, n);
    return out;
}

char *
tj_b64s(const char *s)
{
    return tj_b64(s, strlen(s));
}

unsigned char *
tj_unb64(const char *s, size_t len, size_t *n)
{
    unsigned char *out = xmalloc(len * 3 / 4 + 2);
    long r = sesame_util_b64url_decode(out, s, len);
    if (r < 0)
        die("base64url decode");
    *n = (size_t)r;
    return out;
}

static char *
bn_b64(EVP_PKEY *k, const char *param, int pad)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
        die(param);
    unsigned char buf[1024];
    int n = pad > 0 ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    if (n < 0)
        die("bn2bin");
    return tj_b64(buf, (size_t)n);
}

static void
set_b64(json_t *o, const char *name, char *v)
{
    json_object_set_new(o, name, json_string(v));
    free(v);
}

json_t *
tj_jwk_json(EVP_PKEY *k, bool priv, const char *kid, const char *alg, const char *use)
{
    json_t *o = json_object();
    if (EVP_PKEY_is_a(k, "EC")) {
        int bits = EVP_PKEY_get_bits(k);
        int coord = (bits + 7) / 8;
        json_object_set_new(o, "kty", json_string("EC"));
        json_object_set_new(o, "crv", json_string(bits == 256 ? "P-256" : bits == 384 ? "P-384"
                                                                                       : "P-521"));
        set_b64(o, "x", bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, coord));
        set_b64(o, "y", bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, coord));
        if (priv)
            set_b64(o, "d", bn_b64(k, OSSL_PKEY_PARAM_PRIV_KEY, coord));
    } else {
        json_object_set_new(o, "kty", json_string("RSA"));
        set_b64(o, "n", bn_b64(k, OSSL_PKEY_PARAM_RSA_N, 0));
        set_b64(o, "e", bn_b64(k, OSSL_PKEY_PARAM_RSA_E, 0));
        if (priv) {
            set_b64(o, "d", bn_b64(k, OSSL_PKEY_PARAM_RSA_D, 0));
            set_b64(o, "p", bn_b64(k, OSSL_PKEY_PARAM_RSA_FACTOR1, 0));
            set_b64(o, "q", bn_b64(k, OSSL_PKEY_PARAM_RSA_FACTOR2, 0));
            set_b64(o, "dp", bn_b64(k, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0));
            set_b64(o, "dq", bn_b64(k, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0));
            set_b64(o, "qi", bn_b64(k, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0));
        }
    }
    if (kid)
        json_object_set_new(o, "kid", json_string(kid));
    if (alg)
        json_object_set_new(o, "alg", json_string(alg));
    if (use)
        json_object_set_new(o, "use", json_string(use));
    return o;
}

char *
tj_jwk(EVP_PKEY *k, bool priv, const char *kid, const char *alg, const char *use)
{
    json_t *o = tj_jwk_json(k, priv, kid, alg, use);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

char *
tj_pem(EVP_PKEY *k, bool priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = priv ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
                  : PEM_write_bio_PUBKEY(b, k);
    if (!ok)
        die("PEM write");
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = xmalloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

static char *
join3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
    char *out = xmalloc(n);
    snprintf(out, n, "%s.%s.%s", a, b, c);
    return out;
}

char *
tj_jws_raw(const char *header, const char *payload, const char *sig_b64)
{
    char *h = tj_b64s(header), *p = tj_b64s(payload);
    char *out = join3(h, p, sig_b64);
    free(h);
    free(p);
    return out;
}

char *
tj_jws(const char *header, const char *payload, EVP_PKEY *k, const char *alg, enum tj_sig mode)
{
    char *h = tj_b64s(header), *p = tj_b64s(payload);
    size_t in_n = strlen(h) + strlen(p) + 2;
    char *input = xmalloc(in_n);
    snprintf(input, in_n, "%s.%s", h, p);
    const char *md = "SHA256";
    if (strcmp(alg + 2, "384") == 0)
        md = "SHA384";
    else if (strcmp(alg + 2, "512") == 0)
        md = "SHA512";
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (EVP_DigestSignInit_ex(mctx, &pctx, md, NULL, NULL, k, NULL) != 1)
        die("DigestSignInit");
    if (alg[0] == 'P') {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    size_t slen = 0;
    if (EVP_DigestSign(mctx, NULL, &slen, (unsigned char *)input, strlen(input)) != 1)
        die("DigestSign");
    unsigned char *sig = xmalloc(slen + 1);
    if (EVP_DigestSign(mctx, sig, &slen, (unsigned char *)input, strlen(input)) != 1)
        die("DigestSign");
    EVP_MD_CTX_free(mctx);
    char *s64;
    if (alg[0] == 'E' && mode != TJ_SIG_DER) {
        size_t coord = (size_t)(EVP_PKEY_get_bits(k) + 7) / 8;
        const unsigned char *pp = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &pp, (long)slen);
        unsigned char raw[2 * 66 + 1];
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)coord);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + coord, (int)coord);
        ECDSA_SIG_free(es);
        size_t rl = 2 * coord;
        if (mode == TJ_SIG_RAW_PLUS_BYTE)
            raw[rl++] = 0;
        s64 = tj_b64(raw, rl);
    } else {
        s64 = tj_b64(sig, slen);
    }
    char *out = join3(h, p, s64);
    free(s64);
    free(sig);
    free(input);
    free(h);
    free(p);
    return out;
}

char *
tj_jws_hs(const char *header, const char *payload, const void *secret, size_t slen,
          const char *md)
{
    char *h = tj_b64s(header), *p = tj_b64s(payload);
    size_t in_n = strlen(h) + strlen(p) + 2;
    char *input = xmalloc(in_n);
    snprintf(input, in_n, "%s.%s", h, p);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    if (EVP_Q_mac(NULL, "HMAC", NULL, md, NULL, secret, slen, (unsigned char *)input,
                  strlen(input), mac, sizeof(mac), &maclen) == NULL)
        die("HMAC");
    char *s64 = tj_b64(mac, maclen);
    char *out = join3(h, p, s64);
    free(s64);
    free(input);
    free(h);
    free(p);
    return out;
}

static char *
gcm_finish(const char *h64, const unsigned char *ek, size_t eklen, const unsigned char cek[32],
           const char *plain, size_t pl, size_t tag_len)
{
    unsigned char iv[12], tag[16];
    unsigned char *ct = xmalloc(pl + 16);
    RAND_bytes(iv, sizeof(iv));
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, iv) != 1 ||
        EVP_EncryptUpdate(c, NULL, &l1, (const unsigned char *)h64, (int)strlen(h64)) != 1 ||
        EVP_EncryptUpdate(c, ct, &l1, (const unsigned char *)plain, (int)pl) != 1 ||
        EVP_EncryptFinal_ex(c, ct + l1, &l2) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
        die("AES-GCM encrypt");
    EVP_CIPHER_CTX_free(c);
    char *ek64 = tj_b64(ek, eklen), *iv64 = tj_b64(iv, 12), *ct64 = tj_b64(ct, (size_t)(l1 + l2)),
         *tag64 = tj_b64(tag, tag_len);
    size_t n = strlen(h64) + strlen(ek64) + strlen(iv64) + strlen(ct64) + strlen(tag64) + 5;
    char *out = xmalloc(n);
    snprintf(out, n, "%s.%s.%s.%s.%s", h64, ek64, iv64, ct64, tag64);
    free(ek64);
    free(iv64);
    free(ct64);
    free(tag64);
    free(ct);
    return out;
}

static char *
header_b64(const json_t *hdr)
{
    char *s = json_dumps(hdr, JSON_COMPACT);
    char *h64 = tj_b64s(s);
    free(s);
    return h64;
}

char *
tj_jwe_rsa(EVP_PKEY *k, const json_t *hdr, const char *md, const char *plain)
{
    unsigned char cek[32], ek[512];
    size_t eklen = sizeof(ek);
    RAND_bytes(cek, sizeof(cek));
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (EVP_PKEY_encrypt_init(c) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md_name(c, md, NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(c, md, NULL) != 1 ||
        EVP_PKEY_encrypt(c, ek, &eklen, cek, sizeof(cek)) != 1)
        die("RSA-OAEP encrypt");
    EVP_PKEY_CTX_free(c);
    char *h64 = header_b64(hdr);
    char *out = gcm_finish(h64, ek, eklen, cek, plain, strlen(plain), 16);
    free(h64);
    return out;
}

static void
be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Concat KDF written out as one buffer, independently of the module's
 * streaming version. */
static void
kdf(const unsigned char *z, size_t zlen, const unsigned char *apu, size_t apul,
    const unsigned char *apv, size_t apvl, unsigned char out[32])
{
    size_t n = 4 + zlen + 4 + 7 + 4 + apul + 4 + apvl + 4;
    unsigned char *buf = xmalloc(n), *p = buf;
    be32(p, 1), p += 4;
    memcpy(p, z, zlen), p += zlen;
    be32(p, 7), p += 4;
    memcpy(p, "A256GCM", 7), p += 7;
    be32(p, (uint32_t)apul), p += 4;
    if (apul > 0)
        memcpy(p, apu, apul), p += apul;
    be32(p, (uint32_t)apvl), p += 4;
    if (apvl > 0)
        memcpy(p, apv, apvl), p += apvl;
    be32(p, 256);
    unsigned int ol = 0;
    if (EVP_Digest(buf, n, out, &ol, EVP_sha256(), NULL) != 1)
        die("kdf");
    free(buf);
}

char *
tj_jwe_ecdh(EVP_PKEY *k, const json_t *hdr, const char *plain, size_t tag_len)
{
    return tj_jwe_ecdh_bytes(k, hdr, plain, strlen(plain), tag_len);
}

char *
tj_jwe_ecdh_bytes(EVP_PKEY *k, const json_t *hdr, const char *plain, size_t plain_len,
                  size_t tag_len)
{
    EVP_PKEY *eph = EVP_EC_gen("P-256");
    unsigned char z[32];
    size_t zlen = sizeof(z);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, eph, NULL);
    if (EVP_PKEY_derive_init(c) != 1 || EVP_PKEY_derive_set_peer(c, k) != 1 ||
        EVP_PKEY_derive(c, z, &zlen) != 1)
        die("ECDH");
    EVP_PKEY_CTX_free(c);
    json_t *h = json_deep_copy(hdr);
    if (json_object_get(h, "epk") == NULL)
        json_object_set_new(h, "epk", tj_jwk_json(eph, false, NULL, NULL, NULL));
    EVP_PKEY_free(eph);
    unsigned char *apu = NULL, *apv = NULL;
    size_t apul = 0, apvl = 0;
    /* Invalid apu/apv (to test their refusal) count as empty here. */
    const char *s;
    long r;
    if ((s = json_string_value(json_object_get(h, "apu"))) != NULL) {
        apu = xmalloc(strlen(s) + 1);
        r = sesame_util_b64url_decode(apu, s, strlen(s));
        apul = r > 0 ? (size_t)r : 0;
    }
    if ((s = json_string_value(json_object_get(h, "apv"))) != NULL) {
        apv = xmalloc(strlen(s) + 1);
        r = sesame_util_b64url_decode(apv, s, strlen(s));
        apvl = r > 0 ? (size_t)r : 0;
    }
    unsigned char cek[32];
    kdf(z, zlen, apu, apul, apv, apvl, cek);
    free(apu);
    free(apv);
    char *h64 = header_b64(h);
    json_decref(h);
    char *out = gcm_finish(h64, NULL, 0, cek, plain, plain_len, tag_len);
    free(h64);
    return out;
}

cjose_jwk_t *
tj_cjose_jwk(EVP_PKEY *k, bool priv)
{
    char *s = tj_jwk(k, priv, NULL, NULL, NULL);
    cjose_err cerr;
    cjose_jwk_t *j = cjose_jwk_import(s, strlen(s), &cerr);
    free(s);
    if (j == NULL)
        die("cjose_jwk_import");
    return j;
}

char *
tj_write_temp(const char *data, size_t len)
{
    char tmpl[] = "/tmp/sesame-test-jose-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
        die("mkstemp");
    if (len > 0 && write(fd, data, len) != (ssize_t)len)
        die("write");
    close(fd);
    char *out = xmalloc(sizeof(tmpl));
    memcpy(out, tmpl, sizeof(tmpl));
    return out;
}
