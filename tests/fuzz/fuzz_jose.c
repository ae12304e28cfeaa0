/*
 * fuzz_jose.c - fuzz harness for gateway/oidc/jose.c: every input is taken
 * as a compact token (JWE decrypted first, then the JWS verified and its
 * claims checked as an ID token and as userinfo), as a provider JWKS
 * document, and as a gateway private key, against a fixed key set. Invariants
 * broken call abort().
 *
 * The keys below are fixed test keys for this harness and its seeds only;
 * they protect nothing.
 *
 * Under libFuzzer (clang), from the top of the source tree:
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *       -Igateway -Iinclude tests/fuzz/fuzz_jose.c gateway/oidc/jose.c \
 *       gateway/core/common.c gateway/core/util.c \
 *       $(pkg-config --cflags --libs openssl jansson) -o /tmp/fuzz_jose
 *   mkdir -p /tmp/fuzz-jose && cp -r tests/fuzz/corpus/jose/. /tmp/fuzz-jose/
 *   /tmp/fuzz_jose -max_len=8192 -max_total_time=600 /tmp/fuzz-jose
 * (new inputs land in /tmp/fuzz-jose; a crash is written to ./crash-*, replay
 * it with `/tmp/fuzz_jose crash-...`; copy small, interesting inputs back
 * into tests/fuzz/corpus/jose/.)
 *
 * Standalone (-DSESAME_FUZZ_STANDALONE, built by make check under the
 * sanitizers of the build): main() runs the harness over every file named on
 * the command line (a directory stands for the files in it), or, with no
 * argument, over $SESAME_SRCDIR/tests/fuzz/corpus/jose. Exit status 0 when
 * every input ran, 1 when an input could not be read or a seed marked
 * "ok-" did not verify (the seeds must keep reaching the deep paths).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oidc/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Fixed clock and expectations shared with the seeds. */
#define FUZZ_NOW ((int64_t)1790000000)
#define FUZZ_ISS "https://fcp-low.sbx.dev-franceconnect.fr/api/v2"
#define FUZZ_CLIENT "fuzz-client"
#define FUZZ_NONCE "fuzz-nonce-0123456789abcdefghijklmnopqrstuvwxyz"
#define FUZZ_SECRET "fuzz-client-secret-0123456789abcdefghijklmnopqrstuvwxyz"

static const char ec_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDUYt9HQCUwmIvIR+\n"
    "xtz3zs2P05OimLpCiHWaMSiETxuhRANCAATdc4O/XSHpayYwri0c2boZgoo89NtU\n"
    "DEUTb4gfjkTAqBj6YlcvrkOLCZzd2CYLZA8qwUTCWhnAlJEvvNshCCmo\n"
    "-----END PRIVATE KEY-----\n";

static const char rsa_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDYVG0dmbS9pBHs\n"
    "udVK7jh3CwtilhmKkMCR2itR66q6j+FiRSOX5zL4xJaosFphOlV01OLeaUY28iXI\n"
    "YiydUHL2xNKq+pTdxSIvfOOK4q6VaL6CPSZ0YtfTYZqQ+mT2ij5DcDevF4QEYwbC\n"
    "PrqXT4w83LkNqidKcyzB5Gqp7mwkjg9vgt7EpiSQEn4ugN+W/M6Md3sxbH7kgUUf\n"
    "AFKiCZyceU0vobnx3xT74y0SXNaPdczHONudJO6JaqFL/jylFDEgu5yzLzO92qcD\n"
    "QqB5A7B8Esgw2CmWW2HEGyDn6m7CVGcQ6wAzjqe9TcXWNNmDCpNBMXNkTJfrYI43\n"
    "GggbUKgNAgMBAAECggEAC03KD9hmxdwLZbvGJe6xu6Kzmxitx/xNW7GzPsoaNzpq\n"
    "dAiZ1geqNa6MEs94QYlbSsoO+sE0fo2DpOdgXm4EO9nIClAitD3nTeTwPOMgbUU2\n"
    "YzbPyhgaH/0DJx02Zl2N6Fc2SatoZhRIl6DQfjSVZt6/urOP7wd6qL0HR87iDrzW\n"
    "+WC8TU0NB+AcNWbN/Ir1TIIF2jNxF99hwA9biHL1Ju/fTz23zTOUOPeuBOpftE7e\n"
    "s+rm2vjVoTuy4ZXfGqpJEgCg1r3cQ/LijUAZtjNEY+//QkKDpEvz0AKqKIc1UvzU\n"
    "yHLO055TETaPo4m0VF/xhwtLdikVhC6CLJKVlDcMTwKBgQD25uACJ6g9LMKKCBsE\n"
    "Hu474Ts7Q3A9N6h1uu2L4c0SNXw3DFu/RhTQnFcP/FOqPxDHLVnWR4ooOdc7GXUk\n"
    "vdHWorDMSP+MLgbpZs+JtTCRC4+wYKaGKp3u0sfr2v251pmNsDfBLhqsp9rnQfXi\n"
    "q0ZuPS5Ds87mYL15j1dbKQIj0wKBgQDgTScNpmwH/KAMQftNQhZvIA3WSJEluwPS\n"
    "nBgwbqRBmS9g4n7m+qDu2XsSA+DVZbHB7QdeTYRNk2RLc3qmwh0us5b0fnekvEIK\n"
    "0skPfb44zb2TENZB134ynk+RqHaaqsF7bTcE+q1N6PWqR77X417IlN1I7DeY2jZc\n"
    "E/ysqZj4nwKBgQCvfc6++V0VjlkAL160gR+oJCErsHV4rbTpaWIqyOYwCSAvKHOV\n"
    "8sQcuuMPE7SMD6NnTw7JxbOnf+VBtoiTAvDBdIXhzgkFpDl5cIAXS1gn4GXTYf86\n"
    "4dO7ysobFF6/1o7yLMyUXKbNDcoEEdgpsr+u34Gg0Y9AJIbIfmADBZTlzQKBgBS6\n"
    "DGnOfx0d0wxO7JHvEXOjWqP6gK8j4O6NTg7rqnIFXcNuKpvdfRGVNzIq+ZO+mfZ5\n"
    "mLy2HQuuGw591U+jkF7IaaKeLSAj5VZqs/mifPlyyZnVbHcZGqhCyMeE8bDJJqfp\n"
    "J7RmFa2lYU4i4xfAAvo2B1y9t0WApJVNo4OxCFmxAoGAdULxj/u06wOqQk3VDOzx\n"
    "GWtiCfxI4fyV5DBR11GzE0TXOKt397cezLIGilg6640Zi+o6lpaq/nCFx4SZJDBo\n"
    "BfP+35b3c7z41tzFVKj1kNictQdiJWC7rbRPYv7DePfkBppYgy6f5bI8gUytAusH\n"
    "nRp34JaqRI6VEwPg8pEUekA=\n"
    "-----END PRIVATE KEY-----\n";

static struct sesame_jose_keyset *provider; /* public: EC (ES256) and RSA */
static struct sesame_jose_keyset *gateway;  /* private: ECDH-ES, RSA-OAEP, RSA-OAEP-256 */
static int last_verify = SESAME_ERROR;      /* for the standalone seed check */

static struct sesame_jose_key *
must_key(const char *pem, const char *alg)
{
    char *err = NULL;
    struct sesame_jose_key *k = sesame_jose_key_parse(pem, strlen(pem), alg, &err);
    if (k == NULL) {
        fprintf(stderr, "fuzz_jose: %s\n", err ? err : "key");
        abort();
    }
    return k;
}

static void
init(void)
{
    if (provider != NULL)
        return;
    struct sesame_jose_keyset *signers = sesame_jose_keyset_new();
    CHECK(sesame_jose_keyset_add(signers, must_key(ec_pem, "ES256"), NULL) == SESAME_OK);
    CHECK(sesame_jose_keyset_add(signers, must_key(rsa_pem, "RS256"), NULL) == SESAME_OK);
    char *jwks = sesame_jose_keyset_export(signers, NULL);
    CHECK(jwks != NULL);
    provider = sesame_jose_keyset_parse(jwks, strlen(jwks), NULL);
    CHECK(provider != NULL && sesame_jose_keyset_count(provider) == 2);
    free(jwks);
    sesame_jose_keyset_free(signers);
    gateway = sesame_jose_keyset_new();
    CHECK(sesame_jose_keyset_add(gateway, must_key(ec_pem, "ECDH-ES"), NULL) == SESAME_OK);
    CHECK(sesame_jose_keyset_add(gateway, must_key(rsa_pem, "RSA-OAEP"), NULL) == SESAME_OK);
    CHECK(sesame_jose_keyset_add(gateway, must_key(rsa_pem, "RSA-OAEP-256"), NULL) == SESAME_OK);
}

static void
fuzz_claims(const json_t *claims)
{
    struct sesame_jose_expect e = {
        .issuer = FUZZ_ISS,
        .client_id = FUZZ_CLIENT,
        .nonce = FUZZ_NONCE,
        .min_acr = "eidas1",
        .now = FUZZ_NOW,
        .leeway_s = 60,
        .max_age_s = 600,
    };
    char *err = NULL;
    int rc = sesame_jose_check_id_token(claims, &e, &err);
    CHECK((rc == SESAME_OK && err == NULL) || (rc == SESAME_ERROR && err != NULL));
    free(err);
    err = NULL;
    rc = sesame_jose_check_userinfo(claims, claims, &e, &err);
    CHECK((rc == SESAME_OK && err == NULL) || (rc == SESAME_ERROR && err != NULL));
    free(err);
}

static void
fuzz_verify(const char *tok, size_t len)
{
    json_t *claims = NULL;
    char *err = NULL;
    int rc = sesame_jose_verify(tok, len, provider, 0xfffu, (const unsigned char *)FUZZ_SECRET,
                                strlen(FUZZ_SECRET), &claims, &err);
    last_verify = rc;
    if (rc == SESAME_OK) {
        CHECK(err == NULL && json_is_object(claims));
        CHECK(len <= SESAME_JOSE_MAX_TOKEN && !sesame_jose_is_jwe(tok, len));
        size_t dots = 0;
        for (size_t i = 0; i < len; i++)
            dots += tok[i] == '.';
        CHECK(dots == 2);
        fuzz_claims(claims);
    } else {
        CHECK(rc == SESAME_ERROR || rc == SESAME_JOSE_UNKNOWN_KID);
        CHECK(claims == NULL && err != NULL);
    }
    json_decref(claims);
    free(err);
}

static void
fuzz_token(const char *buf, size_t size)
{
    if (!sesame_jose_is_jwe(buf, size)) {
        fuzz_verify(buf, size);
        return;
    }
    char *plain = NULL, *err = NULL;
    size_t plen = 0;
    int rc = sesame_jose_decrypt(buf, size, gateway, &plain, &plen, &err);
    if (rc == SESAME_OK) {
        CHECK(err == NULL && plain != NULL && strlen(plain) == plen && plen < size);
        /* The plaintext is exactly sized for ASan, as the input. */
        char *inner = malloc(plen > 0 ? plen : 1);
        CHECK(inner != NULL);
        memcpy(inner, plain, plen);
        fuzz_verify(inner, plen);
        free(inner);
    } else {
        CHECK(rc == SESAME_ERROR && plain == NULL && err != NULL);
        last_verify = SESAME_ERROR;
    }
    free(plain);
    free(err);
}

static void
fuzz_jwks(const char *buf, size_t size)
{
    char *err = NULL;
    struct sesame_jose_keyset *ks = sesame_jose_keyset_parse(buf, size, &err);
    if (ks == NULL) {
        CHECK(err != NULL);
        free(err);
        return;
    }
    size_t n = sesame_jose_keyset_count(ks);
    CHECK(err == NULL && n >= 1 && n <= SESAME_JOSE_MAX_KEYS);
    char *doc = sesame_jose_keyset_export(ks, NULL);
    CHECK(doc != NULL);
    struct sesame_jose_keyset *again = sesame_jose_keyset_parse(doc, strlen(doc), NULL);
    CHECK(again != NULL && sesame_jose_keyset_count(again) == n);
    sesame_jose_keyset_free(again);
    free(doc);
    sesame_jose_keyset_free(ks);
}

static void
fuzz_key(const char *buf, size_t size)
{
    static const char *algs[] = {NULL, "ES256", "RS256", "RSA-OAEP-256"};
    char *err = NULL;
    struct sesame_jose_key *k = sesame_jose_key_parse(buf, size, algs[size % 4], &err);
    if (k == NULL) {
        CHECK(err != NULL);
        free(err);
        return;
    }
    CHECK(err == NULL && sesame_jose_key_is_private(k) && sesame_jose_key_kid(k) != NULL);
    char *tp = sesame_jose_key_thumbprint(k);
    CHECK(tp != NULL && strcmp(tp, sesame_jose_key_kid(k)) == 0);
    free(tp);
    sesame_jose_key_free(k);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    /* An exactly sized copy so that ASan sees any read past the end. */
    char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL)
        return 0;
    if (size > 0)
        memcpy(buf, data, size);
    fuzz_token(buf, size);
    fuzz_jwks(buf, size);
    fuzz_key(buf, size);
    free(buf);
    return 0;
}

#ifdef SESAME_FUZZ_STANDALONE
/* A seed named ok-* must keep verifying: the seeds must reach the deep paths. */
static int
check_ok_seed(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, "ok-", 3) == 0 && last_verify != SESAME_OK) {
        fprintf(stderr, "%s: seed no longer verifies\n", path);
        return -1;
    }
    return 0;
}
#define SESAME_FUZZ_CORPUS "jose"
#define SESAME_FUZZ_BEFORE() (last_verify = SESAME_ERROR)
#define SESAME_FUZZ_AFTER(path) check_ok_seed(path)
#include "standalone.h"
#endif
