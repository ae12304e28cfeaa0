#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/util.h"

static void
test_duration(void **state)
{
    uint64_t ms;
    assert_int_equal(sesame_util_parse_duration("30s", &ms), SESAME_OK);
    assert_int_equal(ms, 30000);
    assert_int_equal(sesame_util_parse_duration("10m", &ms), SESAME_OK);
    assert_int_equal(ms, 600000);
    assert_int_equal(sesame_util_parse_duration("8h", &ms), SESAME_OK);
    assert_int_equal(ms, 8 * 3600000ULL);
    assert_int_equal(sesame_util_parse_duration("250ms", &ms), SESAME_OK);
    assert_int_equal(ms, 250);
    assert_int_equal(sesame_util_parse_duration("2d", &ms), SESAME_OK);
    assert_int_equal(ms, 2 * 86400000ULL);
    assert_int_equal(sesame_util_parse_duration("7", &ms), SESAME_OK);
    assert_int_equal(ms, 7000);
    assert_int_equal(sesame_util_parse_duration("", &ms), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_duration("-1s", &ms), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_duration("10 s", &ms), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_duration("10x", &ms), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_duration("99999999999999999999s", &ms), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_duration("999999999999999d", &ms), SESAME_ERROR);
}

static void
test_timeval_ms(void **state)
{
    struct timeval tv = sesame_util_timeval_ms(0);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 0);
    tv = sesame_util_timeval_ms(1);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 1000);
    tv = sesame_util_timeval_ms(500);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 500000);
    tv = sesame_util_timeval_ms(999);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 999000);
    tv = sesame_util_timeval_ms(1000);
    assert_int_equal(tv.tv_sec, 1);
    assert_int_equal(tv.tv_usec, 0);
    tv = sesame_util_timeval_ms(1500);
    assert_int_equal(tv.tv_sec, 1);
    assert_int_equal(tv.tv_usec, 500000);
    tv = sesame_util_timeval_ms(2 * 86400000ULL + 7);
    assert_int_equal(tv.tv_sec, 2 * 86400);
    assert_int_equal(tv.tv_usec, 7000);
    /* what the configuration can hold does not overflow */
    tv = sesame_util_timeval_ms(UINT64_MAX);
    assert_true(tv.tv_sec > 0);
    assert_true(tv.tv_usec >= 0 && tv.tv_usec < 1000000);

    assert_int_equal(sesame_util_ms_to_s_ceil(0), 0);
    assert_int_equal(sesame_util_ms_to_s_ceil(1), 1);
    assert_int_equal(sesame_util_ms_to_s_ceil(500), 1);
    assert_int_equal(sesame_util_ms_to_s_ceil(1000), 1);
    assert_int_equal(sesame_util_ms_to_s_ceil(1001), 2);
    assert_int_equal(sesame_util_ms_to_s_ceil(60000), 60);
}

static void
test_size(void **state)
{
    uint64_t b;
    assert_int_equal(sesame_util_parse_size("64k", &b), SESAME_OK);
    assert_int_equal(b, 65536);
    assert_int_equal(sesame_util_parse_size("32M", &b), SESAME_OK);
    assert_int_equal(b, 32 * 1024 * 1024);
    assert_int_equal(sesame_util_parse_size("512", &b), SESAME_OK);
    assert_int_equal(b, 512);
    assert_int_equal(sesame_util_parse_size("1g", &b), SESAME_OK);
    assert_int_equal(b, 1024ULL * 1024 * 1024);
    assert_int_equal(sesame_util_parse_size("1t", &b), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_size("k", &b), SESAME_ERROR);
    assert_int_equal(sesame_util_parse_size("99999999999999999g", &b), SESAME_ERROR);
}

static void
test_bool(void **state)
{
    bool v;
    assert_int_equal(sesame_util_parse_bool("on", &v), SESAME_OK);
    assert_true(v);
    assert_int_equal(sesame_util_parse_bool("No", &v), SESAME_OK);
    assert_false(v);
    assert_int_equal(sesame_util_parse_bool("maybe", &v), SESAME_ERROR);
}

static void
test_ct_equal(void **state)
{
    assert_true(sesame_util_ct_streq("abc", "abc"));
    assert_false(sesame_util_ct_streq("abc", "abd"));
    assert_false(sesame_util_ct_streq("abc", "abcd"));
    assert_false(sesame_util_ct_streq(NULL, "abc"));
    assert_false(sesame_util_ct_streq("abc", NULL));
    assert_false(sesame_util_ct_streq(NULL, NULL));
    assert_true(sesame_util_ct_equal("", 0, "", 0));
}

static void
test_b64url(void **state)
{
    const char *vectors[][2] = {
        {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"},
        {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(vectors); i++) {
        char out[32];
        size_t n = sesame_util_b64url_encode(out, vectors[i][0], strlen(vectors[i][0]));
        assert_string_equal(out, vectors[i][1]);
        assert_int_equal(n, sesame_util_b64url_len(strlen(vectors[i][0])));
        unsigned char dec[32];
        long m = sesame_util_b64url_decode(dec, vectors[i][1], strlen(vectors[i][1]));
        assert_int_equal(m, (long)strlen(vectors[i][0]));
        assert_memory_equal(dec, vectors[i][0], (size_t)m);
    }
    unsigned char dec[32];
    assert_int_equal(sesame_util_b64url_decode(dec, "Zm9v+", 5), -1);
    assert_int_equal(sesame_util_b64url_decode(dec, "Z", 1), -1);
    assert_int_equal(sesame_util_b64url_decode(dec, "Zh", 2), -1); /* non-canonical */
    assert_int_equal(sesame_util_b64url_decode(dec, "Zm 9", 4), -1);
}

static void
test_random_token(void **state)
{
    char a[64], b[64];
    assert_int_equal(sesame_util_random_token(a, sizeof(a), 32), SESAME_OK);
    assert_int_equal(sesame_util_random_token(b, sizeof(b), 32), SESAME_OK);
    assert_int_equal(strlen(a), 43);
    assert_string_not_equal(a, b);
    char small[10];
    assert_int_equal(sesame_util_random_token(small, sizeof(small), 32), SESAME_ERROR);
}

static void
test_sha256(void **state)
{
    unsigned char h[32];
    char hex[65];
    sesame_util_sha256("abc", 3, h);
    sesame_util_hex(hex, h, 32);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sesame_util_sha256("", 0, h);
    sesame_util_hex(hex, h, 32);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_non_null(sesame_util_aes256gcm());
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration), cmocka_unit_test(test_timeval_ms),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_bool),     cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_b64url),   cmocka_unit_test(test_random_token),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
