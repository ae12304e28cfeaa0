/*
 * util.h - small, pure helpers: parsing of durations and sizes, constant-time
 * comparison, CSPRNG tokens, base64url, hex.
 */
#ifndef SESAME_CORE_UTIL_H
#define SESAME_CORE_UTIL_H

#include <sys/time.h>

#include <openssl/evp.h>

#include "core/common.h"

/* Parses a duration such as "500ms", "30s", "10m", "8h", "2d" (a bare number
 * means seconds) into milliseconds. Returns SESAME_OK or SESAME_ERROR. */
int sesame_util_parse_duration(const char *s, uint64_t *ms);

/* Parses a size such as "512", "64k", "32m", "1g" (powers of 1024) into bytes. */
int sesame_util_parse_size(const char *s, uint64_t *bytes);

/* Parses a boolean: on/off, yes/no, true/false, 1/0. */
int sesame_util_parse_bool(const char *s, bool *out);

/* Constant-time comparison of two byte strings. A NULL on either side never
 * compares equal. The time depends only on the lengths. */
bool sesame_util_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
/* Same for NUL-terminated strings. */
bool sesame_util_ct_streq(const char *a, const char *b);

/* Fills buf with n bytes from the OS CSPRNG (OpenSSL RAND_bytes).
 * Returns SESAME_OK or SESAME_ERROR. */
int sesame_util_random(void *buf, size_t n);

/* Writes a random token of `bytes` random bytes, base64url-encoded without
 * padding, NUL-terminated, into out (which holds at least
 * sesame_util_b64url_len(bytes) + 1 bytes). */
int sesame_util_random_token(char *out, size_t outsize, size_t bytes);

/* Length of the unpadded base64url encoding of n bytes. */
size_t sesame_util_b64url_len(size_t n);
/* Encodes n bytes as unpadded base64url into out (NUL-terminated; out must
 * hold sesame_util_b64url_len(n) + 1 bytes). Returns the encoded length. */
size_t sesame_util_b64url_encode(char *out, const void *in, size_t n);
/* Decodes unpadded (or padded) base64url; rejects any other character.
 * out must hold at least len * 3 / 4 + 1 bytes. Returns decoded length or -1. */
long sesame_util_b64url_decode(void *out, const char *in, size_t len);

/* SHA-256 of n bytes into out. The algorithm is fetched from OpenSSL once
 * per process (SHA256() would look it up again at every call). */
void sesame_util_sha256(const void *in, size_t n, unsigned char out[32]);

/* AES-256-GCM, fetched once per process, for EVP_*Init_ex. */
const EVP_CIPHER *sesame_util_aes256gcm(void);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void sesame_util_hex(char *out, const void *in, size_t n);

/* Case-insensitive ASCII comparison of s (length n) with the NUL-terminated lit. */
bool sesame_util_ascii_ieq(const char *s, size_t n, const char *lit);

/* The struct timeval of a duration in milliseconds, exactly (500 ms is
 * {0, 500000}, never rounded to a whole second). Every conversion of a
 * configured duration for libevent or hiredis goes through it: a hand-written
 * "ms / 1000" turns a sub-second duration into 0, which means "no timeout" or
 * "expire at once". Durations beyond what time_t holds are capped. */
struct timeval sesame_util_timeval_ms(uint64_t ms);

/* Whole seconds of a duration in milliseconds, rounded up (500 ms is 1 s),
 * for the APIs that count in seconds: a sub-second setting never becomes 0. */
uint64_t sesame_util_ms_to_s_ceil(uint64_t ms);

/* Current wall-clock time in seconds and monotonic time in milliseconds. */
int64_t sesame_util_now(void);
uint64_t sesame_util_mono_ms(void);

#endif
