/*
 * test_canon.c - unit tests of the canonical request path and Host value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/canon.h"

/* A string literal and its length (literals may hold NUL bytes). */
#define S(lit) lit, (sizeof(lit) - 1)

#define GUARD 0x5a

/* Reasons of canon.c, compared exactly. */
#define R_START "path does not start with '/'"
#define R_NUL "NUL byte in path"
#define R_CTL "control byte in path"
#define R_SP "space in path"
#define R_8BIT "non-ASCII byte in path"
#define R_BSL "backslash in path"
#define R_HASH "'#' in path"
#define R_QM "'?' in path"
#define R_PCT "invalid percent escape"
#define R_SEP "encoded separator"
#define R_ECTL "encoded control byte"
#define R_DBL "double encoding"
#define R_UTF8 "invalid UTF-8"
#define R_ROOT "dot segment above the root"
#define R_PARAM "dot segment with parameters"
#define R_WIN "dot segment with trailing dots or spaces"

struct path_case {
    const char *in;
    size_t len;
    const char *out;    /* NULL: error */
    const char *reason; /* expected reason when out is NULL */
};

#define OK(in, out) {S(in), out, NULL}
#define KO(in, reason) {S(in), NULL, reason}

static const struct path_case path_cases[] = {
    /* the brief's examples */
    OK("/static/../private", "/private"),
    OK("/static/%2e%2e/private", "/private"),
    OK("/static/%2E%2E/private", "/private"),
    OK("//private", "/private"),
    OK("/./private", "/private"),
    OK("/%72equired", "/required"),
    KO("/a%2Fb", R_SEP),
    KO("/a%2fb", R_SEP),
    KO("/a%5Cb", R_SEP),
    KO("/a\\b", R_BSL),
    KO("/%00", R_ECTL),
    KO("/a%0a", R_ECTL),
    KO("/%zz", R_PCT),
    KO("/%4", R_PCT),
    KO("/%", R_PCT),
    KO("/..", R_ROOT),
    KO("/a/../..", R_ROOT),
    KO("/%C0%AE%C0%AE/", R_UTF8),
    KO("/%ED%A0%80", R_UTF8),
    KO("/%F4%90%80%80", R_UTF8),
    OK("/caf%c3%a9", "/caf%C3%A9"),
    OK("/a%3bb", "/a%3Bb"),
    KO("/a/..;/b", R_PARAM),
    KO("/%252e%252e/", R_DBL),
    OK("/100%25", "/100%25"),
    OK("/", "/"),
    OK("/a/b/c/../../d", "/a/d"),
    OK("/a/./b/", "/a/b/"),
    KO("/a?b", R_QM),
    KO("/a#b", R_HASH),

    /* rule 1: the start */
    KO("", R_START),
    KO("a", R_START),
    KO("*", R_START),
    KO("a/b", R_START),
    KO("http://h/", R_START),
    KO(" /", R_START),
    KO("\\a", R_START),
    KO("%2F", R_START),
    KO(".", R_START),

    /* rule 2: raw bytes */
    KO("/a\0b", R_NUL),
    KO("/\0", R_NUL),
    KO("/a\tb", R_CTL),
    KO("/a\nb", R_CTL),
    KO("/a\rb", R_CTL),
    KO("/\x01", R_CTL),
    KO("/\x1f", R_CTL),
    KO("/a\x7f", R_CTL),
    KO("/a b", R_SP),
    KO("/a ", R_SP),
    KO("/caf\xc3\xa9", R_8BIT),
    KO("/\x80", R_8BIT),
    KO("/\xff", R_8BIT),
    KO("/a/\\", R_BSL),
    KO("/\\/", R_BSL),
    KO("/?", R_QM),
    KO("/a/?x=1", R_QM),
    KO("/#", R_HASH),
    KO("/a#/../b", R_HASH),
    OK("/a:b@c", "/a:b@c"),
    OK("/a=b&c+d,e!$'()*", "/a=b&c+d,e!$'()*"),
    OK("/~user/", "/~user/"),
    OK("/a-b_c.d~e", "/a-b_c.d~e"),
    OK("/a\"<>[]^`{|}", "/a\"<>[]^`{|}"),
    OK("/a;b", "/a;b"),
    OK("/a;b/c;d=1", "/a;b/c;d=1"),
    OK("/;", "/;"),
    OK("/;x/..", "/"),
    OK("/ABC/Def", "/ABC/Def"),

    /* rule 3: escapes */
    KO("/%g0", R_PCT),
    KO("/%0g", R_PCT),
    KO("/a%", R_PCT),
    KO("/a%2", R_PCT),
    KO("/%%", R_PCT),
    KO("/%%41", R_PCT),
    KO("/%-1", R_PCT),
    KO("/% 1", R_PCT),
    KO("/%+1", R_PCT),
    KO("/%x41", R_PCT),
    KO("/%\x80\x80", R_PCT),
    KO("/a%/b", R_PCT),
    KO("/a%2/b", R_PCT),
    OK("/%41%42%43", "/ABC"),
    OK("/%61%62%63", "/abc"),
    OK("/%30%39", "/09"),
    OK("/%2D%2d%5F%5f%7E%7e%2E", "/--__~~."),
    OK("/%7euser", "/~user"),
    KO("/a%2F", R_SEP),
    KO("/%2f..", R_SEP),
    KO("/a/..%2f..", R_SEP),
    KO("/%5c", R_SEP),
    KO("/%5C..%5C", R_SEP),
    KO("/%01", R_ECTL),
    KO("/%09", R_ECTL),
    KO("/%0D%0A", R_ECTL),
    KO("/%0d", R_ECTL),
    KO("/%1F", R_ECTL),
    KO("/%1f", R_ECTL),
    KO("/%7F", R_ECTL),
    KO("/%7f", R_ECTL),
    OK("/a%20b", "/a%20b"),
    OK("/a%20", "/a%20"),
    OK("/%3A%3a", "/%3A%3A"),
    OK("/%3F", "/%3F"),
    OK("/%3f", "/%3F"),
    OK("/%23", "/%23"),
    OK("/%40", "/%40"),
    OK("/%21%24%26%27%28%29%2A%2B%2C%3B%3D", "/%21%24%26%27%28%29%2A%2B%2C%3B%3D"),
    OK("/%2a%2b%2c%3d", "/%2A%2B%2C%3D"),
    OK("/%22%3C%3E", "/%22%3C%3E"),
    OK("/%7b%7d%7c%5e%60", "/%7B%7D%7C%5E%60"),
    OK("/%5b%5d", "/%5B%5D"),
    /* %25 */
    OK("/%25", "/%25"),
    OK("/%25a", "/%25a"),
    OK("/%25ag", "/%25ag"),
    OK("/%25/41", "/%25/41"),
    OK("/%25zz", "/%25zz"),
    OK("/%25g1", "/%25g1"),
    OK("/%25%25", "/%25%25"),
    OK("/%25-41", "/%25-41"),
    OK("/%25%7e41", "/%25~41"),
    OK("/a%25", "/a%25"),
    KO("/%2525", R_DBL),
    KO("/%2541", R_DBL),
    KO("/%252E", R_DBL),
    KO("/%252f", R_DBL),
    KO("/%25Ab", R_DBL),
    KO("/%25%32%65", R_DBL),
    KO("/%25%34%31", R_DBL),
    KO("/%25%341", R_DBL),
    KO("/%254%31", R_DBL),
    KO("/%25%", R_PCT),
    /* UTF-8 */
    OK("/%c3%a9%e2%82%ac", "/%C3%A9%E2%82%AC"),
    OK("/%F0%9F%98%80", "/%F0%9F%98%80"),
    OK("/%C2%80", "/%C2%80"),
    OK("/%DF%BF", "/%DF%BF"),
    OK("/%E0%A0%80", "/%E0%A0%80"),
    OK("/%ED%9F%BF", "/%ED%9F%BF"),
    OK("/%EE%80%80", "/%EE%80%80"),
    OK("/%EF%BF%BF", "/%EF%BF%BF"),
    OK("/%F0%90%80%80", "/%F0%90%80%80"),
    OK("/%F4%8F%BF%BF", "/%F4%8F%BF%BF"),
    OK("/%f3%bf%bf%bf", "/%F3%BF%BF%BF"),
    OK("/%c3%a9/%c3%a9", "/%C3%A9/%C3%A9"),
    OK("/%C3%A9a", "/%C3%A9a"),
    OK("/%C3%A9%41", "/%C3%A9A"),
    OK("/%C3%A9%20", "/%C3%A9%20"),
    OK("/%C3%A9%C3%A9", "/%C3%A9%C3%A9"),
    KO("/%C0%AE", R_UTF8),
    KO("/%C1%81", R_UTF8),
    KO("/%C0%80", R_UTF8),
    KO("/%E0%80%AE", R_UTF8),
    KO("/%E0%9F%BF", R_UTF8),
    KO("/%F0%80%80%AE", R_UTF8),
    KO("/%F0%8F%BF%BF", R_UTF8),
    KO("/%ED%BF%BF", R_UTF8),
    KO("/%ed%a0%80", R_UTF8),
    KO("/%F4%90%80%80", R_UTF8),
    KO("/%F5%80%80%80", R_UTF8),
    KO("/%F8%88%80%80%80", R_UTF8),
    KO("/%FE", R_UTF8),
    KO("/%FF", R_UTF8),
    KO("/%80", R_UTF8),
    KO("/%BF", R_UTF8),
    KO("/a%A9", R_UTF8),
    KO("/%C3", R_UTF8),
    KO("/%C3/", R_UTF8),
    KO("/%C3a", R_UTF8),
    KO("/%C3%41", R_UTF8),
    KO("/%C3%2F", R_UTF8),
    KO("/%C3%", R_PCT),
    KO("/%E2%82", R_UTF8),
    KO("/%E2%82/%AC", R_UTF8),
    KO("/%C3%A9%A9", R_UTF8),
    KO("/%F0%9F%98", R_UTF8),
    KO("/%F0%9F%98x", R_UTF8),
    KO("/%C3%C3", R_UTF8),

    /* rule 4: segments */
    OK("/a", "/a"),
    OK("/a/", "/a/"),
    OK("/a//", "/a/"),
    OK("//", "/"),
    OK("///", "/"),
    OK("//a///b", "/a/b"),
    OK("//a///b//", "/a/b/"),
    OK("/a/b/..", "/a/"),
    OK("/a/.", "/a/"),
    OK("/.", "/"),
    OK("/./", "/"),
    OK("/./.", "/"),
    OK("/.//.", "/"),
    OK("/a/..", "/"),
    OK("/a/../", "/"),
    OK("/a/../b", "/b"),
    OK("/a/b/../c/./d/../e", "/a/c/e"),
    OK("/a/b/c/../../../d", "/d"),
    OK("/a/b/../../c/", "/c/"),
    OK("/a//../b", "/b"),
    OK("/a/.//b", "/a/b"),
    OK("/a/..//b", "/b"),
    OK("/a/./../b", "/b"),
    OK("/..a", "/..a"),
    OK("/a..", "/a.."),
    OK("/.a", "/.a"),
    OK("/a./", "/a./"),
    OK("/a.b/..c/", "/a.b/..c/"),
    KO("/%2e%2e%2e", R_WIN),
    OK("/%2e", "/"),
    OK("/%2e/", "/"),
    OK("/a/%2e", "/a/"),
    OK("/a/%2E%2E", "/"),
    OK("/a/b/%2e%2E/", "/a/"),
    OK("/static/.%2e/private", "/private"),
    OK("/static/%2e./private", "/private"),
    OK("/static/%2E%2e/private", "/private"),
    OK("/a/b/c/d/e/../../../../f", "/a/f"),
    OK("/a;x/../b", "/b"),
    KO("/../", R_ROOT),
    KO("/a/.../b", R_WIN),
    KO("/.../", R_WIN),
    KO("/..../", R_WIN),
    KO("/%2e%2e%2e%2e", R_WIN),
    KO("/static/..%20/private", R_WIN),
    KO("/static/.%20./private", R_WIN),
    KO("/a/.%20", R_WIN),
    OK("/a/%20", "/a/%20"),
    OK("/a/%20x", "/a/%20x"),
    KO("/../a", R_ROOT),
    KO("/%2e%2e/x", R_ROOT),
    KO("/%2E%2E", R_ROOT),
    KO("/.%2E/", R_ROOT),
    KO("/%2e./", R_ROOT),
    KO("/a/b/../../..", R_ROOT),
    KO("/./..", R_ROOT),
    KO("/%2e/%2e%2e/", R_ROOT),
    KO("//..", R_ROOT),
    KO("/a/..//..", R_ROOT),
    KO("/a/../../b/c", R_ROOT),
    KO("/..;", R_PARAM),
    KO("/..;x=1", R_PARAM),
    KO("/.;", R_PARAM),
    KO("/.;/a", R_PARAM),
    KO("/a/.;x/b", R_PARAM),
    KO("/a/%2e%2e;/b", R_PARAM),
    KO("/a/.%2e;jsessionid=1/b", R_PARAM),
    KO("/a/..%3b/b", R_PARAM),
    KO("/a/..%3B", R_PARAM),
    KO("/a/.%3bx", R_PARAM),
    KO("/a/%2e;", R_PARAM),
    KO("/a/..;/..;/b", R_PARAM),
    OK("/a/...;/b", "/a/...;/b"),
    OK("/a/;../b", "/a/;../b"),
    OK("/a/x..;/b", "/a/x..;/b"),
    OK("/a/..x;/b", "/a/..x;/b"),
    OK("/a/..%20;", "/a/..%20;"),
    OK("/a/%3B..", "/a/%3B.."),
};

static void
run_path_case(const struct path_case *c)
{
    size_t len = c->len;
    /* the input in an exactly sized block, so that ASan catches reads past it */
    char *in = malloc(len > 0 ? len : 1);
    assert_non_null(in);
    memcpy(in, c->in, len);
    /* out: len + 1 bytes for the result, then a guard byte */
    char *out = malloc(len + 2);
    assert_non_null(out);
    memset(out, GUARD, len + 2);
    size_t n = 12345;
    const char *why = NULL;
    int rc = sesame_canon_path(in, len, out, &n, &why);
    if (out[len + 1] != (char)GUARD)
        fail_msg("%s: byte written past len + 1", c->in);
    if (c->out == NULL) {
        if (rc != SESAME_ERROR)
            fail_msg("\"%s\" accepted as \"%s\", expected error \"%s\"", c->in, out, c->reason);
        assert_non_null(why);
        if (strcmp(why, c->reason) != 0)
            fail_msg("\"%s\": reason \"%s\", expected \"%s\"", c->in, why, c->reason);
        assert_int_equal(n, 0);
        assert_int_equal(out[0], '\0');
    } else {
        if (rc != SESAME_OK)
            fail_msg("\"%s\" refused (%s), expected \"%s\"", c->in, why, c->out);
        if (n != strlen(c->out) || strcmp(out, c->out) != 0)
            fail_msg("\"%s\" -> \"%s\", expected \"%s\"", c->in, out, c->out);
        assert_true(n <= len);
        assert_int_equal(out[n], '\0');
        /* idempotent */
        char *again = malloc(n + 2);
        assert_non_null(again);
        memset(again, GUARD, n + 2);
        size_t n2 = 0;
        char *copy = malloc(n > 0 ? n : 1);
        assert_non_null(copy);
        memcpy(copy, out, n);
        why = NULL;
        if (sesame_canon_path(copy, n, again, &n2, &why) != SESAME_OK)
            fail_msg("\"%s\" -> \"%s\" is refused again (%s)", c->in, out, why);
        if (n2 != n || strcmp(again, out) != 0)
            fail_msg("\"%s\" -> \"%s\" -> \"%s\": not idempotent", c->in, out, again);
        assert_int_equal(again[n + 1], (char)GUARD);
        free(copy);
        free(again);
    }
    /* in place: same answer */
    char *ip = malloc(len + 2);
    assert_non_null(ip);
    memcpy(ip, c->in, len);
    ip[len] = (char)GUARD;
    ip[len + 1] = (char)GUARD;
    size_t n3 = 12345;
    const char *why3 = NULL;
    int rc3 = sesame_canon_path(ip, len, ip, &n3, &why3);
    assert_int_equal(rc3, rc);
    assert_int_equal(ip[len + 1], (char)GUARD);
    if (rc == SESAME_OK) {
        assert_int_equal(n3, n);
        assert_string_equal(ip, out);
    } else {
        assert_string_equal(why3, c->reason);
    }
    free(ip);
    free(in);
    free(out);
}

static void
test_path_table(void **state)
{
    (void)state;
    size_t ok = 0, ko = 0;
    for (size_t i = 0; i < SESAME_ARRAY_LEN(path_cases); i++) {
        run_path_case(&path_cases[i]);
        if (path_cases[i].out != NULL)
            ok++;
        else
            ko++;
    }
    print_message("%zu path cases (%zu accepted, %zu refused)\n", ok + ko, ok, ko);
    assert_true(ok + ko >= 120);
}

/* Every octet as "/%XX" in both cases of hex, and raw as "/x". */
static void
test_path_every_octet(void **state)
{
    (void)state;
    static const char hexu[] = "0123456789ABCDEF";
    static const char hexl[] = "0123456789abcdef";
    for (int b = 0; b < 256; b++) {
        for (int lc = 0; lc < 2; lc++) {
            const char *hx = lc ? hexl : hexu;
            char in[5] = {'/', '%', hx[b >> 4], hx[b & 15], 0};
            char out[6];
            memset(out, GUARD, sizeof(out));
            size_t n = 0;
            const char *why = NULL;
            int rc = sesame_canon_path(in, 4, out, &n, &why);
            assert_int_equal(out[5], (char)GUARD);
            bool unres = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
                         (b >= '0' && b <= '9') || b == '-' || b == '_' || b == '~';
            if (b == '/' || b == '\\') {
                assert_int_equal(rc, SESAME_ERROR);
                assert_string_equal(why, R_SEP);
            } else if (b < 0x20 || b == 0x7f) {
                assert_int_equal(rc, SESAME_ERROR);
                assert_string_equal(why, R_ECTL);
            } else if (b >= 0x80) {
                /* a single octet >= 0x80 is never complete UTF-8 */
                assert_int_equal(rc, SESAME_ERROR);
                assert_string_equal(why, R_UTF8);
            } else if (b == '.') {
                assert_int_equal(rc, SESAME_OK);
                assert_string_equal(out, "/");
            } else if (unres) {
                assert_int_equal(rc, SESAME_OK);
                assert_int_equal(n, 2);
                assert_int_equal(out[1], (char)b);
                assert_int_equal(out[2], '\0');
            } else {
                assert_int_equal(rc, SESAME_OK);
                assert_int_equal(n, 4);
                assert_int_equal(out[1], '%');
                assert_int_equal(out[2], hexu[b >> 4]);
                assert_int_equal(out[3], hexu[b & 15]);
            }
        }
        /* raw */
        char in[3] = {'/', (char)b, 'x'};
        char out[4];
        size_t n = 0;
        const char *why = NULL;
        int rc = sesame_canon_path(in, 3, out, &n, &why);
        bool refused = b <= 0x20 || b >= 0x7f || b == '\\' || b == '#' || b == '?' || b == '%';
        assert_int_equal(rc, refused ? SESAME_ERROR : SESAME_OK);
        if (refused)
            assert_non_null(why);
        else if (b == '/')
            assert_string_equal(out, "/x");
        else
            assert_memory_equal(out, in, 4 - 1);
    }
}

/* Every two-octet and three-octet escape sequence against a reference
 * well-formedness check (Unicode table 3-7). */
static bool
ref_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            k = 1;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            k = 2;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07;
            k = 3;
        } else {
            return false;
        }
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static void
test_path_utf8_exhaustive(void **state)
{
    (void)state;
    static const char hx[] = "0123456789ABCDEF";
    /* lead byte >= 0x80 followed by every second byte >= 0x80 */
    for (int a = 0x80; a < 256; a++) {
        for (int b = 0x80; b < 256; b++) {
            unsigned char raw[2] = {(unsigned char)a, (unsigned char)b};
            char in[7] = {'/', '%', hx[a >> 4], hx[a & 15], '%', hx[b >> 4], hx[b & 15]};
            char out[8];
            size_t n = 0;
            const char *why = NULL;
            int rc = sesame_canon_path(in, 7, out, &n, &why);
            assert_int_equal(rc, ref_utf8(raw, 2) ? SESAME_OK : SESAME_ERROR);
            if (rc == SESAME_OK)
                assert_memory_equal(out, in, 7);
            else
                assert_string_equal(why, R_UTF8);
        }
    }
    /* three-byte sequences: every lead E0..EF and second byte, a fixed third byte;
     * and four-byte sequences: every lead F0..F7 and second byte */
    for (int a = 0xE0; a < 0xF8; a++) {
        for (int b = 0x00; b < 256; b++) {
            if (b < 0x80 && (b < 0x20 || b == '/' || b == '\\' || b == 0x7f || b == '%'))
                continue;
            unsigned char raw[4] = {(unsigned char)a, (unsigned char)b, 0x80, 0x80};
            size_t nraw = a < 0xF0 ? 3 : 4;
            char in[1 + 12];
            size_t k = 0;
            in[k++] = '/';
            for (size_t j = 0; j < nraw; j++) {
                in[k++] = '%';
                in[k++] = hx[raw[j] >> 4];
                in[k++] = hx[raw[j] & 15];
            }
            char out[sizeof(in) + 1];
            size_t n = 0;
            const char *why = NULL;
            int rc = sesame_canon_path(in, k, out, &n, &why);
            assert_int_equal(rc, ref_utf8(raw, nraw) ? SESAME_OK : SESAME_ERROR);
        }
    }
}

/* Long and deep paths. */
static void
test_path_long(void **state)
{
    (void)state;
    size_t reps = 50000;
    size_t len = 2 * reps;
    char *in = malloc(len + 1);
    char *out = malloc(len + 1);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < reps; i++)
        memcpy(in + 2 * i, "/a", 2);
    size_t n = 0;
    const char *why = NULL;
    assert_int_equal(sesame_canon_path(in, len, out, &n, &why), SESAME_OK);
    assert_int_equal(n, len);
    assert_memory_equal(out, in, len);

    /* "/a" * k then "/.." * k: back to the root; one more ".." climbs above it */
    size_t k = 20000;
    size_t m = 0;
    char *deep = malloc(5 * k + 4);
    char *dout = malloc(5 * k + 4);
    assert_non_null(deep);
    assert_non_null(dout);
    for (size_t i = 0; i < k; i++) {
        memcpy(deep + m, "/a", 2);
        m += 2;
    }
    for (size_t i = 0; i < k; i++) {
        memcpy(deep + m, "/..", 3);
        m += 3;
    }
    assert_int_equal(sesame_canon_path(deep, m, dout, &n, &why), SESAME_OK);
    assert_string_equal(dout, "/");
    memcpy(deep + m, "/..", 3);
    assert_int_equal(sesame_canon_path(deep, m + 3, dout, &n, &why), SESAME_ERROR);
    assert_string_equal(why, R_ROOT);

    /* many slashes */
    memset(in, '/', len);
    assert_int_equal(sesame_canon_path(in, len, out, &n, &why), SESAME_OK);
    assert_string_equal(out, "/");
    free(in);
    free(out);
    free(deep);
    free(dout);
}

static void
test_path_args(void **state)
{
    (void)state;
    char out[8];
    size_t n = 7;
    const char *why = NULL;
    assert_int_equal(sesame_canon_path(NULL, 0, out, &n, &why), SESAME_ERROR);
    assert_non_null(why);
    assert_int_equal(sesame_canon_path("/", 1, NULL, &n, &why), SESAME_ERROR);
    assert_int_equal(sesame_canon_path("/", 1, out, NULL, &why), SESAME_ERROR);
    /* why may be NULL */
    assert_int_equal(sesame_canon_path(S("/.."), out, &n, NULL), SESAME_ERROR);
    assert_int_equal(sesame_canon_path(S("/a/"), out, &n, NULL), SESAME_OK);
    assert_string_equal(out, "/a/");
    /* the input need not be NUL-terminated: only len bytes are read */
    assert_int_equal(sesame_canon_path("/ab?q=1", 3, out, &n, &why), SESAME_OK);
    assert_string_equal(out, "/ab");
    assert_int_equal(sesame_canon_path("/%2e%2e", 3, out, &n, &why), SESAME_ERROR);
    assert_string_equal(why, R_PCT);
}

struct host_case {
    const char *in;
    size_t len;
    const char *out; /* NULL: error */
    size_t name_len;
};

#define HOK(in, out, nl) {S(in), out, nl}
#define HKO(in) {S(in), NULL, 0}

static const struct host_case host_cases[] = {
    HOK("Ville-A.Localhost:8080", "ville-a.localhost:8080", 17),
    HOK("ville-a.fr.", "ville-a.fr", 10),
    HOK("ville-a.fr.:443", "ville-a.fr:443", 10),
    HOK("VILLE-A.FR.:443", "ville-a.fr:443", 10),
    HOK("[::1]:80", "[::1]:80", 5),
    HOK("[::1]", "[::1]", 5),
    HOK("[2001:DB8::1]", "[2001:db8::1]", 13),
    HOK("[::FFFF:192.0.2.1]:8443", "[::ffff:192.0.2.1]:8443", 18),
    HOK("EXAMPLE.COM", "example.com", 11),
    HOK("example.com", "example.com", 11),
    HOK("127.0.0.1:8080", "127.0.0.1:8080", 9),
    HOK("a", "a", 1),
    HOK("A", "a", 1),
    HOK("a.", "a", 1),
    HOK("a.:1", "a:1", 1),
    HOK("a_B~c-D", "a_b~c-d", 7),
    HOK("A:0", "a:0", 1),
    HOK("a:65535", "a:65535", 1),
    HOK("a:080", "a:080", 1),
    HOK("a:00080", "a:00080", 1),
    HOK(".a", ".a", 2),
    HOK("a..b", "a..b", 4),
    HOK("-", "-", 1),
    HKO(""),
    HKO("."),
    HKO("a.."),
    HKO(".."),
    HKO("..."),
    HKO(".:80"),
    HKO("a..:80"),
    HKO(":80"),
    HKO(":"),
    HKO("a:"),
    HKO("a:65536"),
    HKO("a:99999"),
    HKO("a:123456"),
    HKO("a:8a"),
    HKO("a:-1"),
    HKO("a:+1"),
    HKO("a:80:80"),
    HKO("a b"),
    HKO(" a"),
    HKO("a%41"),
    HKO("a@b"),
    HKO("a/b"),
    HKO("a\\b"),
    HKO("a\0b"),
    HKO("caf\xc3\xa9.fr"),
    HKO("a,b"),
    HKO("[::1"),
    HKO("["),
    HKO("[]"),
    HKO("[:]"),
    HKO("[1]"),
    HKO("[1.2.3.4]"),
    HKO("[::g]"),
    HKO("[::1]x"),
    HKO("[::1]:"),
    HKO("[::1]."),
    HKO("[::1]:65536"),
    HKO("[[::1]]"),
    HKO("[::1%25eth0]"),
    HKO("]"),
};

static void
test_host_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < SESAME_ARRAY_LEN(host_cases); i++) {
        const struct host_case *c = &host_cases[i];
        size_t len = c->len;
        char *in = malloc(len > 0 ? len : 1);
        char *out = malloc(len + 2);
        assert_non_null(in);
        assert_non_null(out);
        memcpy(in, c->in, len);
        memset(out, GUARD, len + 2);
        size_t n = 999, nl = 999;
        const char *why = NULL;
        int rc = sesame_canon_host(in, len, out, &n, &nl, &why);
        assert_int_equal(out[len + 1], (char)GUARD);
        if (c->out == NULL) {
            if (rc != SESAME_ERROR)
                fail_msg("Host \"%s\" accepted as \"%s\"", c->in, out);
            assert_non_null(why);
            assert_int_equal(n, 0);
            assert_int_equal(nl, 0);
            assert_int_equal(out[0], '\0');
        } else {
            if (rc != SESAME_OK)
                fail_msg("Host \"%s\" refused (%s)", c->in, why);
            assert_string_equal(out, c->out);
            assert_int_equal(n, strlen(c->out));
            assert_int_equal(nl, c->name_len);
            /* idempotent */
            char again[300];
            size_t n2 = 0, nl2 = 0;
            assert_int_equal(sesame_canon_host(out, n, again, &n2, &nl2, &why), SESAME_OK);
            assert_string_equal(again, out);
            assert_int_equal(nl2, nl);
            /* in place */
            char *ip = malloc(len + 1);
            assert_non_null(ip);
            memcpy(ip, c->in, len);
            assert_int_equal(sesame_canon_host(ip, len, ip, &n2, &nl2, &why), SESAME_OK);
            assert_string_equal(ip, c->out);
            assert_int_equal(nl2, nl);
            free(ip);
        }
        free(in);
        free(out);
    }
}

static void
test_host_limits(void **state)
{
    (void)state;
    char in[300], out[301];
    size_t n, nl;
    const char *why = NULL;
    memset(in, 'A', sizeof(in));
    assert_int_equal(sesame_canon_host(in, 255, out, &n, &nl, &why), SESAME_OK);
    assert_int_equal(n, 255);
    assert_int_equal(nl, 255);
    assert_int_equal(out[0], 'a');
    assert_int_equal(out[254], 'a');
    assert_int_equal(out[255], '\0');
    /* 255 bytes and a trailing dot: the name as written is too long */
    in[255] = '.';
    assert_int_equal(sesame_canon_host(in, 256, out, &n, &nl, &why), SESAME_ERROR);
    assert_int_equal(sesame_canon_host(in, 256, out, &n, &nl, NULL), SESAME_ERROR);
    in[255] = 'A';
    assert_int_equal(sesame_canon_host(in, 256, out, &n, &nl, &why), SESAME_ERROR);
    assert_non_null(why);
    /* IPv6 literal of 45 bytes inside the brackets, then 46 */
    char v6[60];
    v6[0] = '[';
    memset(v6 + 1, ':', 45);
    v6[46] = ']';
    assert_int_equal(sesame_canon_host(v6, 47, out, &n, &nl, &why), SESAME_OK);
    assert_int_equal(nl, 47);
    v6[46] = ':';
    v6[47] = ']';
    assert_int_equal(sesame_canon_host(v6, 48, out, &n, &nl, &why), SESAME_ERROR);
    /* NULL arguments */
    assert_int_equal(sesame_canon_host(NULL, 0, out, &n, &nl, &why), SESAME_ERROR);
    assert_int_equal(sesame_canon_host("a", 1, NULL, &n, &nl, &why), SESAME_ERROR);
    assert_int_equal(sesame_canon_host("a", 1, out, NULL, &nl, &why), SESAME_ERROR);
    assert_int_equal(sesame_canon_host("a", 1, out, &n, NULL, &why), SESAME_ERROR);
    /* only len bytes are read */
    assert_int_equal(sesame_canon_host("Ab:80", 2, out, &n, &nl, &why), SESAME_OK);
    assert_string_equal(out, "ab");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_table),
        cmocka_unit_test(test_path_every_octet),
        cmocka_unit_test(test_path_utf8_exhaustive),
        cmocka_unit_test(test_path_long),
        cmocka_unit_test(test_path_args),
        cmocka_unit_test(test_host_table),
        cmocka_unit_test(test_host_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
