#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/url.h"

static void
test_query_get(void **state)
{
    char out[64];
    const char *q = "return_to=%2Fdemarches%3Fa%3D1&provider=fc&acr=&x=a+b";
    assert_int_equal(sesame_url_query_get(q, strlen(q), "return_to", out, sizeof(out)), SESAME_OK);
    assert_string_equal(out, "/demarches?a=1");
    assert_int_equal(sesame_url_query_get(q, strlen(q), "provider", out, sizeof(out)), SESAME_OK);
    assert_string_equal(out, "fc");
    assert_int_equal(sesame_url_query_get(q, strlen(q), "acr", out, sizeof(out)), SESAME_OK);
    assert_string_equal(out, "");
    assert_int_equal(sesame_url_query_get(q, strlen(q), "x", out, sizeof(out)), SESAME_OK);
    assert_string_equal(out, "a b");
    assert_int_equal(sesame_url_query_get(q, strlen(q), "absent", out, sizeof(out)), SESAME_DECLINED);
    assert_int_equal(sesame_url_query_get(q, strlen(q), "return", out, sizeof(out)), SESAME_DECLINED);
    assert_int_equal(sesame_url_query_get(NULL, 0, "x", out, sizeof(out)), SESAME_DECLINED);
    const char *dup = "state=a&code=1&state=b";
    assert_int_equal(sesame_url_query_get(dup, strlen(dup), "state", out, sizeof(out)), SESAME_ERROR);
    const char *bad[] = {"x=%zz", "x=%2", "x=%", "x=a%00b"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(sesame_url_query_get(bad[i], strlen(bad[i]), "x", out, sizeof(out)), SESAME_ERROR);
    char small[4];
    assert_int_equal(sesame_url_query_get("x=abcd", 6, "x", small, sizeof(small)), SESAME_ERROR);
}

static void
test_unique(void **state)
{
    assert_true(sesame_url_query_unique("a=1&b=2", 7));
    assert_false(sesame_url_query_unique("a=1&b=2&a=3", 11));
    assert_false(sesame_url_query_unique("code=1&code", 11));
    assert_true(sesame_url_query_unique(NULL, 0));
    char many[1024] = "";
    for (int i = 0; i < 70; i++) {
        char p[16];
        snprintf(p, sizeof(p), "%sp%d=1", i ? "&" : "", i);
        strcat(many, p);
    }
    assert_false(sesame_url_query_unique(many, strlen(many)));
}

static void
test_encode(void **state)
{
    char *s = sesame_url_encode_str("Marie Claire/é?&=~._-");
    assert_string_equal(s, "Marie%20Claire%2F%C3%A9%3F%26%3D~._-");
    free(s);
    char out[32];
    assert_int_equal(sesame_url_decode("a%2Fb+c", 7, out, sizeof(out)), 5);
    assert_string_equal(out, "a/b+c");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_get),
        cmocka_unit_test(test_unique),
        cmocka_unit_test(test_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
