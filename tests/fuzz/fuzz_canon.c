/*
 * fuzz_canon.c - fuzz harness for the canonical request path and Host value
 * (http/canon.h).
 *
 * The whole input is given to sesame_canon_path and to sesame_canon_host.
 * Invariants checked (abort on violation), for an accepted path: the result
 * is NUL-terminated, no longer than the input, starts with '/', contains no
 * "//", "/./" or "/../", does not end in "/." or "/..", holds only bytes
 * 0x21..0x7e and no backslash, every '%' starts an escape of two upper-case
 * hex digits that does not encode an unreserved octet, no "%25" is followed
 * by two hex digits, canonicalising it again gives it back unchanged, and
 * canonicalising in place gives the same answer; a refused path has a reason
 * and nothing is written past out[len]. For an accepted Host: no upper-case
 * letter, no longer than the input, the name part ends before the ':' of the
 * port, idempotent, and the same in place.
 *
 * libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Igateway \
 *     tests/fuzz/fuzz_canon.c gateway/http/canon.c -o /tmp/fuzz_canon && \
 *     /tmp/fuzz_canon tests/fuzz/corpus/canon
 * Standalone (-DSESAME_FUZZ_STANDALONE, run by make check): replays the corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/canon.h"

#define GUARD 0x5a

static bool
is_hex_upper(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int
hv(char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

static bool
unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static void
check_path_result(const char *r, size_t n)
{
    if (n == 0 || r[0] != '/' || r[n] != '\0' || strlen(r) != n)
        abort();
    if (strstr(r, "//") != NULL || strstr(r, "/./") != NULL || strstr(r, "/../") != NULL)
        abort();
    if ((n >= 2 && strcmp(r + n - 2, "/.") == 0) || (n >= 3 && strcmp(r + n - 3, "/..") == 0))
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)r[i];
        if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '?' || c == '#')
            abort();
        if (c != '%')
            continue;
        if (i + 2 >= n)
            abort();
        if (!is_hex_upper(r[i + 1]) || !is_hex_upper(r[i + 2]))
            abort();
        unsigned char b = (unsigned char)(hv(r[i + 1]) * 16 + hv(r[i + 2]));
        if (unreserved(b) || b < 0x20 || b == 0x7f || b == '/' || b == '\\')
            abort();
        if (b == '%' && i + 4 < n && strchr("0123456789ABCDEFabcdef", r[i + 3]) != NULL &&
            strchr("0123456789ABCDEFabcdef", r[i + 4]) != NULL)
            abort();
    }
}

static void
check_path(const char *data, size_t len)
{
    /* exactly len + 1 bytes for the result, then a guard byte */
    char *out = malloc(len + 2);
    char *again = malloc(len + 2);
    char *inplace = malloc(len + 2);
    if (out == NULL || again == NULL || inplace == NULL)
        abort();
    memset(out, GUARD, len + 2);
    size_t n = (size_t)-1;
    const char *why = NULL;
    int rc = sesame_canon_path(data, len, out, &n, &why);
    if (out[len + 1] != (char)GUARD)
        abort();
    if (len > 0)
        memcpy(inplace, data, len);
    size_t n2 = (size_t)-1;
    const char *why2 = NULL;
    int rc2 = sesame_canon_path(inplace, len, inplace, &n2, &why2);
    if (rc2 != rc)
        abort();
    if (rc != SESAME_OK) {
        if (rc != SESAME_ERROR || why == NULL || why2 == NULL || n != 0 || out[0] != '\0')
            abort();
        goto done;
    }
    if (n > len)
        abort();
    check_path_result(out, n);
    if (n2 != n || memcmp(inplace, out, n + 1) != 0)
        abort();
    size_t n3 = (size_t)-1;
    memset(again, GUARD, len + 2);
    if (sesame_canon_path(out, n, again, &n3, &why) != SESAME_OK || n3 != n ||
        memcmp(again, out, n + 1) != 0 || again[n + 1] != (char)GUARD)
        abort();
done:
    free(out);
    free(again);
    free(inplace);
}

static void
check_host(const char *data, size_t len)
{
    char *out = malloc(len + 2);
    char *again = malloc(len + 2);
    if (out == NULL || again == NULL)
        abort();
    memset(out, GUARD, len + 2);
    size_t n = (size_t)-1, name = (size_t)-1;
    const char *why = NULL;
    int rc = sesame_canon_host(data, len, out, &n, &name, &why);
    if (out[len + 1] != (char)GUARD)
        abort();
    if (rc != SESAME_OK) {
        if (rc != SESAME_ERROR || why == NULL || n != 0 || name != 0 || out[0] != '\0')
            abort();
        goto done;
    }
    if (n > len || name == 0 || name > n || out[n] != '\0' || strlen(out) != n)
        abort();
    if (name < n && out[name] != ':')
        abort();
    if (out[0] != '[' && out[name - 1] == '.')
        abort();
    for (size_t i = 0; i < n; i++)
        if (out[i] >= 'A' && out[i] <= 'Z')
            abort();
    size_t n2 = (size_t)-1, name2 = (size_t)-1;
    memset(again, GUARD, len + 2);
    /* idempotent: only one trailing dot is removed and "x.." is refused, so a
     * canonical name never ends in '.' */
    if (sesame_canon_host(out, n, again, &n2, &name2, &why) != SESAME_OK)
        abort();
    if (n2 != n || name2 != name || memcmp(again, out, n + 1) != 0)
        abort();
    /* in place */
    if (len > 0)
        memcpy(again, data, len);
    if (sesame_canon_host(again, len, again, &n2, &name2, &why) != SESAME_OK || n2 != n ||
        name2 != name || memcmp(again, out, n + 1) != 0)
        abort();
done:
    free(out);
    free(again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    check_path(in, size);
    check_host(in, size);
    return 0;
}

#ifdef SESAME_FUZZ_STANDALONE
#define SESAME_FUZZ_CORPUS "canon"
#include "standalone.h"
#endif
