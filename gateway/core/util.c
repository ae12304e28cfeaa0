#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <pthread.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

static int
parse_number_suffix(const char *s, uint64_t *num, const char **suffix)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return SESAME_ERROR;
    uint64_t v = 0;
    const char *p = s;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return SESAME_ERROR;
        v = v * 10 + d;
        p++;
    }
    *num = v;
    *suffix = p;
    return SESAME_OK;
}

static int
mul_checked(uint64_t v, uint64_t m, uint64_t *out)
{
    if (m != 0 && v > UINT64_MAX / m)
        return SESAME_ERROR;
    *out = v * m;
    return SESAME_OK;
}

int
sesame_util_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v;
    const char *suf;
    if (parse_number_suffix(s, &v, &suf) != SESAME_OK)
        return SESAME_ERROR;
    uint64_t mult;
    if (strcmp(suf, "ms") == 0)
        mult = 1;
    else if (*suf == '\0' || strcmp(suf, "s") == 0)
        mult = 1000;
    else if (strcmp(suf, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(suf, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(suf, "d") == 0)
        mult = 86400 * 1000;
    else
        return SESAME_ERROR;
    return mul_checked(v, mult, ms);
}

int
sesame_util_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v;
    const char *suf;
    if (parse_number_suffix(s, &v, &suf) != SESAME_OK)
        return SESAME_ERROR;
    uint64_t mult;
    if (*suf == '\0')
        mult = 1;
    else if (strcasecmp(suf, "k") == 0)
        mult = 1024;
    else if (strcasecmp(suf, "m") == 0)
        mult = 1024 * 1024;
    else if (strcasecmp(suf, "g") == 0)
        mult = 1024ULL * 1024 * 1024;
    else
        return SESAME_ERROR;
    return mul_checked(v, mult, bytes);
}

int
sesame_util_parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"on", "yes", "true", "1"};
    static const char *no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return SESAME_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return SESAME_OK;
        }
    }
    return SESAME_ERROR;
}

bool
sesame_util_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (a == NULL || b == NULL || alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

bool
sesame_util_ct_streq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    return sesame_util_ct_equal(a, strlen(a), b, strlen(b));
}

int
sesame_util_random(void *buf, size_t n)
{
    if (n > (size_t)INT32_MAX)
        return SESAME_ERROR;
    return RAND_bytes(buf, (int)n) == 1 ? SESAME_OK : SESAME_ERROR;
}

size_t
sesame_util_b64url_len(size_t n)
{
    return (n / 3) * 4 + ((n % 3) ? (n % 3) + 1 : 0);
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t
sesame_util_b64url_encode(char *out, const void *in, size_t n)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static int
b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long
sesame_util_b64url_decode(void *out, const char *in, size_t len)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    unsigned char *o = out;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-canonical trailing bits */
        return -1;
    return (long)n;
}

int
sesame_util_random_token(char *out, size_t outsize, size_t bytes)
{
    unsigned char buf[128];
    if (bytes > sizeof(buf) || outsize < sesame_util_b64url_len(bytes) + 1)
        return SESAME_ERROR;
    if (sesame_util_random(buf, bytes) != SESAME_OK)
        return SESAME_ERROR;
    sesame_util_b64url_encode(out, buf, bytes);
    OPENSSL_cleanse(buf, sizeof(buf));
    return SESAME_OK;
}

static EVP_MD *sha256_md;
static EVP_CIPHER *aes256gcm_cipher;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void
fetch_algorithms(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    aes256gcm_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

void
sesame_util_sha256(const void *in, size_t n, unsigned char out[32])
{
    pthread_once(&fetch_once, fetch_algorithms);
    unsigned int len = 0;
    if (sha256_md == NULL || EVP_Digest(in, n, out, &len, sha256_md, NULL) != 1 || len != 32)
        abort(); /* the default provider always has SHA-256: this cannot go on without it */
}

const EVP_CIPHER *
sesame_util_aes256gcm(void)
{
    pthread_once(&fetch_once, fetch_algorithms);
    return aes256gcm_cipher ? aes256gcm_cipher : EVP_aes_256_gcm();
}

void
sesame_util_hex(char *out, const void *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

bool
sesame_util_ascii_ieq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n; i++) {
        if (lit[i] == '\0' || tolower((unsigned char)s[i]) != tolower((unsigned char)lit[i]))
            return false;
    }
    return lit[i] == '\0';
}

struct timeval
sesame_util_timeval_ms(uint64_t ms)
{
    struct timeval tv;
    uint64_t sec = ms / 1000;
    /* time_t is signed and at least 32 bits: cap at its largest value */
    uint64_t max = sizeof(time_t) >= 8 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX;
    if (sec > max) {
        tv.tv_sec = (time_t)max;
        tv.tv_usec = 0;
        return tv;
    }
    tv.tv_sec = (time_t)sec;
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

uint64_t
sesame_util_ms_to_s_ceil(uint64_t ms)
{
    return ms / 1000 + (ms % 1000 != 0);
}

int64_t
sesame_util_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

uint64_t
sesame_util_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
