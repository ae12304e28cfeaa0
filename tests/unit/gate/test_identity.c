#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "gate/identity.h"

static time_t
date_of(int y, int m, int d)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    tm.tm_hour = 12;
    return mktime(&tm);
}

static void
test_age(void **state)
{
    time_t now = date_of(2026, 11, 28);
    assert_int_equal(sesame_identity_age("2008-11-28", now), 18);
    assert_int_equal(sesame_identity_age("2008-11-29", now), 17);
    assert_int_equal(sesame_identity_age("2012-05-17", now), 14);
    assert_int_equal(sesame_identity_age("1962-08-24", now), 64);
    assert_int_equal(sesame_identity_age("1992-00-00", now), -1);
    assert_int_equal(sesame_identity_age("1992-13-01", now), -1);
    assert_int_equal(sesame_identity_age("2030-01-01", now), -1);
    assert_int_equal(sesame_identity_age("1992-1-1", now), -1);
    assert_int_equal(sesame_identity_age("1992-01-01x", now), -1);
    assert_int_equal(sesame_identity_age(NULL, now), -1);
    assert_int_equal(sesame_identity_age("", now), -1);
}

static void
test_header_name(void **state)
{
    char out[64];
    sesame_identity_header_name("given_name", out, sizeof(out));
    assert_string_equal(out, "Given-Name");
    sesame_identity_header_name("birthdate", out, sizeof(out));
    assert_string_equal(out, "Birthdate");
    sesame_identity_header_name("preferred_username", out, sizeof(out));
    assert_string_equal(out, "Preferred-Username");
}

static struct sesame_session *
session_of(const char *given, const char *family, const char *birthdate)
{
    struct sesame_session *s = sesame_session_new();
    s->account = strdup("acct-1");
    s->acr = strdup("eidas1");
    s->provider = strdup("franceconnect");
    s->claims = json_pack("{s:s, s:s, s:s, s:[s]}", "given_name", given, "family_name", family,
                          "birthdate", birthdate, "amr", "fc");
    s->attributes = json_pack("{s:s}", "quotient", "A");
    return s;
}

static char *
headers_for(struct sesame_conf_route *r, struct sesame_session *s)
{
    struct evbuffer *b = evbuffer_new();
    sesame_identity_headers(r, s, b);
    size_t n = evbuffer_get_length(b);
    char *out = malloc(n + 1);
    evbuffer_remove(b, out, n);
    out[n] = '\0';
    evbuffer_free(b);
    return out;
}

static void
test_headers_encodings(void **state)
{
    char *claims[] = {"given_name", "family_name", "amr", "email"};
    struct sesame_conf_route r = {0};
    r.claims = claims;
    r.nclaims = 4;
    r.header_prefix = "X-Sesame-";
    struct sesame_session *s = session_of("Jean-Baptiste", "D'ALMEIDA-LÉVÊQUE", "1979-03-02");

    r.header_encoding = SESAME_HDR_PERCENT;
    char *h = headers_for(&r, s);
    assert_non_null(strstr(h, "X-Sesame-Account: acct-1\r\n"));
    assert_non_null(strstr(h, "X-Sesame-Acr: eidas1\r\n"));
    assert_non_null(strstr(h, "X-Sesame-Given-Name: Jean-Baptiste\r\n"));
    assert_non_null(strstr(h, "X-Sesame-Family-Name: D%27ALMEIDA-L%C3%89V%C3%8AQUE\r\n"));
    assert_non_null(strstr(h, "X-Sesame-Amr: %5B%22fc%22%5D\r\n"));
    assert_null(strstr(h, "Email")); /* absent claim: no header */
    free(h);

    r.header_encoding = SESAME_HDR_RAW;
    h = headers_for(&r, s);
    assert_non_null(strstr(h, "X-Sesame-Family-Name: D'ALMEIDA-LÉVÊQUE\r\n"));
    free(h);

    r.header_encoding = SESAME_HDR_BASE64URL;
    h = headers_for(&r, s);
    assert_non_null(strstr(h, "X-Sesame-Given-Name: SmVhbi1CYXB0aXN0ZQ\r\n"));
    free(h);

    /* raw never lets a control character through */
    json_object_set_new(s->claims, "given_name", json_string("Eve\r\nX-Sesame-Account: admin"));
    r.header_encoding = SESAME_HDR_RAW;
    h = headers_for(&r, s);
    assert_null(strstr(h, "\r\nX-Sesame-Account: admin"));
    assert_non_null(strstr(h, "Eve%0D%0AX-Sesame-Account%3A%20admin"));
    free(h);
    sesame_session_free(s);
}

static void
test_conditions(void **state)
{
    struct sesame_cond conds[2] = {
        {.op = SESAME_COND_AGE_GE, .number = 18, .text = "age >= 18"},
        {.op = SESAME_COND_ATTR_EQ, .name = "quotient", .value = "A", .text = "attribute.quotient = A"},
    };
    struct sesame_conf_route r = {0};
    r.conds = conds;
    r.nconds = 2;
    time_t now = date_of(2026, 11, 28);
    const struct sesame_cond *failed = NULL;
    struct sesame_session *adult = session_of("Marie", "MARTIN", "1962-08-24");
    assert_true(sesame_identity_allowed(&r, adult, now, &failed));
    struct sesame_session *minor = session_of("Lucie", "MOREAU", "2012-05-17");
    assert_false(sesame_identity_allowed(&r, minor, now, &failed));
    assert_ptr_equal(failed, &conds[0]);
    json_object_set_new(adult->attributes, "quotient", json_string("B"));
    assert_false(sesame_identity_allowed(&r, adult, now, &failed));
    assert_ptr_equal(failed, &conds[1]);
    /* a missing birthdate fails closed */
    json_object_del(minor->claims, "birthdate");
    r.nconds = 1;
    assert_false(sesame_identity_allowed(&r, minor, now, &failed));
    sesame_session_free(adult);
    sesame_session_free(minor);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_age),
        cmocka_unit_test(test_header_name),
        cmocka_unit_test(test_headers_encodings),
        cmocka_unit_test(test_conditions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
