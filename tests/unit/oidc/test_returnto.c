/*
 * test_returnto.c - unit tests of the return_to validator (open redirects).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oidc/returnto.h"

/* A string literal and its length. */
#define S_LIT(lit) lit, (sizeof(lit) - 1)

static const char *const hosts_a[] = {"ville-a.fr", "www.ville-a.fr"};
#define PUB_A "https://ville-a.fr"

static const char *const hosts_dev[] = {"localhost", "127.0.0.1"};
#define PUB_DEV "http://localhost:8080"

/* The check over an exactly sized heap copy (ASan sees any overread). */
static char *
check_n(const char *v, size_t n, const char *const *hosts, size_t nhosts, const char *pub)
{
    char *b = malloc(n > 0 ? n : 1);
    assert_non_null(b);
    memcpy(b, v, n);
    char *r = sesame_returnto_check(b, n, hosts, nhosts, pub);
    bool safe = sesame_returnto_is_safe_path(b, n);
    /* a safe path is always accepted, whatever the hosts */
    if (safe)
        assert_non_null(r);
    free(b);
    return r;
}

static void
expect_refused_n(const char *v, size_t n)
{
    char *r = check_n(v, n, hosts_a, 2, PUB_A);
    if (r != NULL)
        print_error("accepted: \"%.*s\"\n", (int)n, v);
    assert_null(r);
    r = check_n(v, n, hosts_dev, 2, PUB_DEV);
    if (r != NULL)
        print_error("accepted (dev): \"%.*s\"\n", (int)n, v);
    assert_null(r);
}

static void
expect_refused(const char *v)
{
    expect_refused_n(v, strlen(v));
}

static void
expect_accepted(const char *v, const char *const *hosts, size_t nhosts, const char *pub)
{
    size_t n = strlen(v);
    char *r = check_n(v, n, hosts, nhosts, pub);
    if (r == NULL)
        print_error("refused: \"%s\"\n", v);
    assert_non_null(r);
    assert_string_equal(r, v);
    free(r);
}

/* Open-redirect payloads: each one must be refused for the tenant ville-a.fr
 * (https) and for a local http tenant. */
static const char *const payloads[] = {
    /* protocol-relative and slash tricks */
    "//evil.com",
    "//evil.com/",
    "//evil.com/%2f..",
    "///evil.com",
    "////evil.com",
    "/\\evil.com",
    "/\\/evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "\\evil.com",
    "/.//evil.com",
    "/..//evil.com",
    "/../evil.com",
    "/./evil.com",
    "/a/../../evil.com",
    "/a/..",
    "/a/.",
    "/%2e%2e//evil.com",
    "/%2E%2E/evil.com",
    "/.%2e/evil.com",
    "/%2e/evil.com",
    "/x//evil.com",
    "/x/\\evil.com",
    /* encoded separators */
    "%2f%2fevil.com",
    "%2F%2Fevil.com",
    "/%2f%2fevil.com",
    "/%2F%2Fevil.com",
    "/%2fevil.com",
    "/%2Fevil.com",
    "/%5cevil.com",
    "/%5Cevil.com",
    "/%5c%5cevil.com",
    "%5c%5cevil.com",
    "/%252f%252fevil.com",
    "/%25%32%66evil.com",
    "/x?next=%2F%2Fevil.com",
    /* encoded or raw whitespace and control characters */
    "/%09/evil.com",
    "/%0a/evil.com",
    "/%0d/evil.com",
    "/%0d%0aSet-Cookie:x=y",
    "/%0D%0ALocation:%20https://evil.com",
    "/%00/evil.com",
    "/%00",
    "/%20/evil.com",
    "/%7f",
    "/%1f",
    "/ /evil.com",
    " /evil.com",
    "/evil.com ",
    "\t//evil.com",
    "/\t/evil.com",
    "/\r\n/evil.com",
    "/x\r\nSet-Cookie: a=b",
    "/x\nLocation: https://evil.com",
    "/x\r",
    "\r\n//evil.com",
    "/x\x0b",
    "/x\x7f",
    /* invalid percent-encoding */
    "/%",
    "/%2",
    "/%zz",
    "/%g0",
    "/%%32%66",
    "/x%",
    /* @ tricks */
    "/@evil.com",
    "/%40evil.com",
    "/x@evil.com",
    "@evil.com",
    /* other schemes */
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "javascript://ville-a.fr/%0aalert(1)",
    "javascript:%2f%2fville-a.fr",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://ville-a.fr/",
    "ws://ville-a.fr/",
    "wss://ville-a.fr/",
    "mailto:a@ville-a.fr",
    /* foreign hosts */
    "https://evil.com",
    "https://evil.com/",
    "http://evil.com",
    "https://ville-a.fr.evil.com",
    "https://ville-a.fr.evil.com/",
    "https://evil-ville-a.fr",
    "https://evilville-a.fr",
    "https://ville-a.fx/",
    "https://ville-a.f/",
    "https://ville-a/",
    "https://www.ville-a.f",
    "https://ville-b.fr/",
    "https://ville-a.frr/",
    "https://wwwville-a.fr/",
    "https://ville-a.fr@evil.com",
    "https://ville-a.fr:443@evil.com",
    "https://ville-a.fr%40evil.com",
    "https://evil.com#@ville-a.fr",
    "https://evil.com?@ville-a.fr",
    "https://evil.com/ville-a.fr",
    "https://evil.com\\@ville-a.fr",
    "https://evil.com\\.ville-a.fr",
    "https://ville-a.fr\\@evil.com",
    "https://ville-a.fr\\evil.com",
    "https://ville-a.fr%2f@evil.com",
    "https://ville-a.fr%2F%2Fevil.com",
    "https://ville-a.fr%5c@evil.com",
    "https://ville-a.fr;@evil.com",
    "https://ville-a.fr&@evil.com",
    "https://user:pass@ville-a.fr/",
    "https://@ville-a.fr/",
    "https:/evil.com",
    "https:evil.com",
    "https:/ville-a.fr",
    "https:ville-a.fr",
    "https:///evil.com",
    "https:////evil.com",
    "https:\\\\evil.com",
    "https:/\\evil.com",
    "https://",
    "https:///",
    "https://:443/",
    "evil.com",
    "ville-a.fr",
    "ville-a.fr/compte",
    "www.evil.com",
    ".",
    "..",
    "",
    /* trailing dot and odd host forms */
    "https://ville-a.fr.",
    "https://ville-a.fr./",
    "https://.ville-a.fr/",
    "https://ville-a.fr..",
    "https://ville-a..fr/",
    "https://ville-a.fr%2e/",
    "https://ville-a%2efr/",
    "https://%76ille-a.fr/",
    "https://ville-a.fr%00.evil.com",
    "https://ville-a.fr\t/",
    "https://ville-a.fr /",
    "https://[::1]/",
    "https://127.0.0.1/",
    "https://2130706433/",
    "https://0x7f.1/",
    /* ports */
    "https://ville-a.fr:8443/",
    "https://ville-a.fr:80/",
    "https://ville-a.fr:/",
    "https://ville-a.fr:0443/",
    "https://ville-a.fr:443443/",
    "https://ville-a.fr:99999/",
    "https://ville-a.fr:-443/",
    "https://ville-a.fr:443:443/",
    "https://ville-a.fr:https/",
    /* http when the public URL is https */
    "http://ville-a.fr",
    "http://ville-a.fr/",
    "http://ville-a.fr:443/",
    "HTTP://ville-a.fr/",
    /* unicode look-alikes: raw UTF-8 and IDN */
    "https://ville-\xc3\xa0.fr/",
    "https://vill\xd0\xb5-a.fr/",
    "https://ville\xe2\x80\x90" "a.fr/",
    "https://ville-a\xe3\x80\x82" "fr/",
    "https://ville-a.fr\xef\xbc\x8f@evil.com",
    "https://xn--vill-a-3we.fr/",
    "https://xn--ville-a-9ya.fr/",
    "/\xe2\x80\xae/moc.live",
    "/d\xc3\xa9marches",
    "\xef\xbc\x8f\xef\xbc\x8f" "evil.com",
    "/\xef\xbc\x8f" "evil.com",
    "//\xe2\x80\x8b" "evil.com",
    /* paths of absolute URLs follow the path rules too */
    "https://ville-a.fr//evil.com",
    "https://ville-a.fr/..//evil.com",
    "https://ville-a.fr/%2f%2fevil.com",
    "https://ville-a.fr/\\evil.com",
    "https://ville-a.fr/%0d%0aSet-Cookie:a=b",
    "https://ville-a.fr/a b",
};

static void
test_payloads_refused(void **state)
{
    size_t n = SESAME_ARRAY_LEN(payloads);
    assert_true(n >= 100);
    for (size_t i = 0; i < n; i++)
        expect_refused(payloads[i]);
}

/* Builds pre + middle + post into buf; returns the length. */
static size_t
build(char *buf, size_t size, const char *pre, const char *mid, size_t midlen, const char *post)
{
    size_t a = strlen(pre), c = strlen(post);
    assert_true(a + midlen + c < size);
    memcpy(buf, pre, a);
    memcpy(buf + a, mid, midlen);
    memcpy(buf + a + midlen, post, c);
    buf[a + midlen + c] = '\0';
    return a + midlen + c;
}

/* Every control byte and DEL, raw and percent-encoded (both cases), in
 * several positions; every byte >= 0x80 raw. */
static void
test_bytes_refused(void **state)
{
    static const char *const spots[][2] = {
        {"/a", "b"}, {"", "/a"}, {"/a", ""}, {"https://ville-a.fr/", ""},
        {"https://ville-a.fr", "/"}, {"https", "://ville-a.fr/"}, {"/", "/evil.com"},
    };
    static const char hex_lower[] = "0123456789abcdef", hex_upper[] = "0123456789ABCDEF";
    char buf[64];
    for (int c = 0; c < 256; c++) {
        if (c > 0x20 && c < 0x7f)
            continue;
        char raw = (char)c;
        for (size_t f = 0; f < SESAME_ARRAY_LEN(spots); f++) {
            size_t n = build(buf, sizeof(buf), spots[f][0], &raw, 1, spots[f][1]);
            expect_refused_n(buf, n);
            if (c >= 0x80)
                continue;
            char enc[3] = {'%', hex_lower[c >> 4], hex_lower[c & 15]};
            n = build(buf, sizeof(buf), spots[f][0], enc, 3, spots[f][1]);
            expect_refused_n(buf, n);
            enc[1] = hex_upper[c >> 4];
            enc[2] = hex_upper[c & 15];
            n = build(buf, sizeof(buf), spots[f][0], enc, 3, spots[f][1]);
            expect_refused_n(buf, n);
        }
    }
}

static void
test_accepted(void **state)
{
    const char *paths[] = {
        "/",
        "/compte",
        "/compte/",
        "/d%C3%A9marches/%C3%A9tat-civil",
        "/a/b/c?x=1&y=two#frag",
        "/?",
        "/#",
        "/search?q=a+b&page=2",
        "/a.b/..c/...",
        "/a/.well-known/x",
        "/x;y=z",
        "/~user/page",
        "/a#//not-a-host",
        "/javascript:alert(1)",
        "/x?a=https:x",
        "/%3Cx%3E",
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(paths); i++) {
        expect_accepted(paths[i], hosts_a, 2, PUB_A);
        expect_accepted(paths[i], NULL, 0, NULL);
        assert_true(sesame_returnto_is_safe_path(paths[i], strlen(paths[i])));
    }
    const char *abs_a[] = {
        "https://ville-a.fr",
        "https://ville-a.fr/",
        "https://ville-a.fr/compte?x=1#top",
        "https://www.ville-a.fr/compte",
        "https://VILLE-A.FR/compte",
        "HTTPS://Ville-A.fr/",
        "https://ville-a.fr:443/compte",
        "https://ville-a.fr?x=1",
        "https://ville-a.fr#top",
        "https://ville-a.fr/d%C3%A9marches",
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(abs_a); i++)
        expect_accepted(abs_a[i], hosts_a, 2, PUB_A);
    const char *abs_dev[] = {
        "http://localhost:8080/",
        "http://localhost:8080",
        "http://127.0.0.1:8080/x?y",
        "HTTP://LocalHost:8080/x",
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(abs_dev); i++)
        expect_accepted(abs_dev[i], hosts_dev, 2, PUB_DEV);
}

static void
test_context(void **state)
{
    char *r;
    /* absolute URLs need a public URL and a listed host */
    assert_null(sesame_returnto_check(S_LIT("https://ville-a.fr/"), hosts_a, 2, NULL));
    assert_null(sesame_returnto_check(S_LIT("https://ville-a.fr/"), NULL, 0, PUB_A));
    assert_null(sesame_returnto_check(S_LIT("https://ville-a.fr/"), hosts_a, 0, PUB_A));
    assert_null(
        sesame_returnto_check(S_LIT("https://ville-a.fr/"), hosts_a, 2, "ftp://ville-a.fr"));
    assert_null(sesame_returnto_check(S_LIT("https://ville-a.fr/"), hosts_a, 2, "garbage"));
    /* only the hosts of this tenant */
    static const char *const hosts_b[] = {"ville-b.fr"};
    assert_null(
        sesame_returnto_check(S_LIT("https://ville-a.fr/"), hosts_b, 1, "https://ville-b.fr"));
    /* a trailing or leading dot is refused even when configured so */
    static const char *const hosts_dot[] = {"ville-a.fr.", ".ville-a.fr"};
    assert_null(sesame_returnto_check(S_LIT("https://ville-a.fr./"), hosts_dot, 2, PUB_A));
    assert_null(sesame_returnto_check(S_LIT("https://.ville-a.fr/"), hosts_dot, 2, PUB_A));
    /* the port must be the public URL's */
    assert_null(sesame_returnto_check(S_LIT("http://localhost/"), hosts_dev, 2, PUB_DEV));
    assert_null(sesame_returnto_check(S_LIT("http://localhost:80/"), hosts_dev, 2, PUB_DEV));
    assert_null(sesame_returnto_check(S_LIT("http://localhost:8081/"), hosts_dev, 2, PUB_DEV));
    assert_null(sesame_returnto_check(S_LIT("https://localhost:8080/"), hosts_dev, 2, PUB_DEV));
    r = sesame_returnto_check(S_LIT("https://ville-a.fr:8443/x"), hosts_a, 2,
                              "https://ville-a.fr:8443");
    assert_non_null(r);
    free(r);
    assert_null(sesame_returnto_check(S_LIT("https://ville-a.fr/x"), hosts_a, 2,
                                      "https://ville-a.fr:8443"));
    /* the length argument is honoured: bytes after it are not part of the value */
    r = sesame_returnto_check("/ok//evil.com", 3, NULL, 0, NULL);
    assert_non_null(r);
    assert_string_equal(r, "/ok");
    free(r);
    assert_null(sesame_returnto_check("/ok", 0, NULL, 0, NULL));
    assert_null(sesame_returnto_check(NULL, 5, hosts_a, 2, PUB_A));
    assert_false(sesame_returnto_is_safe_path(NULL, 1));
    assert_false(sesame_returnto_is_safe_path("/", 0));
    /* a NUL inside the length */
    assert_null(sesame_returnto_check("/a\0b", 4, NULL, 0, NULL));
    /* maximum length */
    char *big = malloc(SESAME_RETURNTO_MAX_LEN + 2);
    assert_non_null(big);
    big[0] = '/';
    memset(big + 1, 'a', SESAME_RETURNTO_MAX_LEN);
    r = sesame_returnto_check(big, SESAME_RETURNTO_MAX_LEN, NULL, 0, NULL);
    assert_non_null(r);
    assert_int_equal(strlen(r), SESAME_RETURNTO_MAX_LEN);
    free(r);
    assert_null(sesame_returnto_check(big, SESAME_RETURNTO_MAX_LEN + 1, NULL, 0, NULL));
    assert_false(sesame_returnto_is_safe_path(big, SESAME_RETURNTO_MAX_LEN + 1));
    free(big);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payloads_refused),
        cmocka_unit_test(test_bytes_refused),
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
