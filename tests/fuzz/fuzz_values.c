/*
 * fuzz_values.c - fuzz harness for the small parsers that read what a client
 * sends besides the HTTP head: the Cookie header (session cookie lookup),
 * query strings (sign-in parameters) and return_to URLs.
 *
 * The first input byte chooses the parser, the rest is its input. Invariants
 * checked (abort on violation): a found session cookie is 43 base64url
 * characters; a decoded query value has no NUL and fits its buffer; an
 * accepted return_to is either a path starting with a single '/' and no
 * backslash, or a URL on one of the tenant's hosts.
 *
 * libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Igateway \
 *     tests/fuzz/fuzz_values.c gateway/session/session.c gateway/session/redis.c \
 *     gateway/core/[a-z]*.c gateway/oidc/returnto.c $(pkg-config --cflags --libs openssl \
 *     jansson hiredis libevent) -o /tmp/fuzz_values && /tmp/fuzz_values tests/fuzz/corpus/values
 * Standalone (-DSESAME_FUZZ_STANDALONE, run by make check): replays the corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "oidc/returnto.h"
#include "session/session.h"

static void
check_cookie(const char *data, size_t len)
{
    char out[SESAME_SESSION_ID_LEN + 1];
    if (sesame_session_cookie_find(data, len, "sesame", out) == SESAME_OK) {
        if (strlen(out) != SESAME_SESSION_ID_LEN)
            abort();
        for (size_t i = 0; i < SESAME_SESSION_ID_LEN; i++) {
            char c = out[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_'))
                abort();
        }
    }
}

static void
check_query(const char *data, size_t len)
{
    char out[256];
    static const char *names[] = {"return_to", "state", "code", "error", "iss", "csrf"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        memset(out, 'x', sizeof(out));
        int rc = sesame_url_query_get(data, len, names[i], out, sizeof(out));
        if (rc == SESAME_OK && strnlen(out, sizeof(out)) == sizeof(out))
            abort();
    }
    (void)sesame_url_query_unique(data, len);
}

static void
check_return_to(const char *data, size_t len)
{
    static const char *const hosts[] = {"ville-a.fr", "www.ville-a.fr"};
    char *r = sesame_returnto_check(data, len, hosts, 2, "https://ville-a.fr");
    if (r == NULL)
        return;
    if (r[0] == '/') {
        if (r[1] == '/' || r[1] == '\\' || strchr(r, '\\') != NULL)
            abort();
    } else {
        /* scheme and host compare case-insensitively, as browsers do */
        size_t n = strlen(r);
        char *low = malloc(n + 1);
        if (low == NULL)
            abort();
        for (size_t i = 0; i <= n; i++)
            low[i] = (char)((r[i] >= 'A' && r[i] <= 'Z') ? r[i] - 'A' + 'a' : r[i]);
        size_t pl = strncmp(low, "https://ville-a.fr", 18) == 0       ? 18
                    : strncmp(low, "https://www.ville-a.fr", 22) == 0 ? 22
                                                                       : 0;
        if (pl == 0)
            abort();
        char next = low[pl];
        if (next != '\0' && next != '/' && next != '?' && next != '#' && next != ':')
            abort();
        if (strchr(low, '\\') != NULL || strchr(low, '@') != NULL)
            abort();
        free(low);
    }
    free(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0:
        check_cookie(in, len);
        break;
    case 1:
        check_query(in, len);
        break;
    default:
        check_return_to(in, len);
        break;
    }
    return 0;
}

#ifdef SESAME_FUZZ_STANDALONE
#define SESAME_FUZZ_CORPUS "values"
#include "standalone.h"
#endif
