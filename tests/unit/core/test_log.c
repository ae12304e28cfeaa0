/*
 * test_log.c - core/log.h: reopening after a rotation, destinations kept on
 * a reload, the journal chosen under systemd, and the journal fields read
 * from a message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"

static char dir[] = "/tmp/sesame-test-log-XXXXXX";

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void
test_reopen_after_rename(void **state)
{
    char path[256], rotated[256], access[256];
    snprintf(path, sizeof(path), "%s/error.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/error.log.1", dir);
    snprintf(access, sizeof(access), "%s/access.log", dir);
    char *err = NULL;
    assert_int_equal(sesame_log_open(path, access, SESAME_LOG_INFO, &err), SESAME_OK);
    sesame_log_info("before rotation");
    assert_int_equal(rename(path, rotated), 0);
    sesame_log_info("still in the rotated file");
    assert_int_equal(sesame_log_reopen(&err), SESAME_OK);
    sesame_log_info("after rotation");
    assert_non_null(strstr(slurp(rotated), "still in the rotated file"));
    assert_null(strstr(slurp(rotated), "after rotation"));
    assert_non_null(strstr(slurp(path), "[info] after rotation"));
    /* a reload naming the same files is not a reopen */
    assert_true(sesame_log_same_destinations(path, access));
    assert_false(sesame_log_same_destinations(path, "off"));
    assert_false(sesame_log_same_destinations("stderr", access));
    sesame_log_set_level(SESAME_LOG_ERROR);
    sesame_log_info("not written");
    assert_null(strstr(slurp(path), "not written"));
    sesame_log_set_level(SESAME_LOG_INFO);
    /* a reopen that fails keeps the current file */
    char sub[256];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    char inner[300];
    snprintf(inner, sizeof(inner), "%s/error.log", sub);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(sesame_log_open(inner, "off", SESAME_LOG_INFO, &err), SESAME_OK);
    assert_int_equal(unlink(inner), 0);
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(sesame_log_reopen(&err), SESAME_ERROR);
    assert_non_null(strstr(err, "cannot open log file"));
    free(err);
    sesame_log_close();
    unlink(path);
    unlink(rotated);
    unlink(access);
}

static void
test_journal_under_systemd(void **state)
{
    struct stat st;
    assert_int_equal(fstat(2, &st), 0);
    char js[64];
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    char *err = NULL;
    setenv("JOURNAL_STREAM", js, 1);
    assert_int_equal(sesame_log_open("stderr", "off", SESAME_LOG_INFO, &err), SESAME_OK);
    assert_true(sesame_log_to_journal());
    /* journald absent here: the message goes to stderr instead of nowhere */
    sesame_log_info("request 0123abcd: to the journal or stderr");
    /* a stderr redirected elsewhere than the inherited stream: no journal */
    setenv("JOURNAL_STREAM", "1:2", 1);
    assert_int_equal(sesame_log_open("stderr", "off", SESAME_LOG_INFO, &err), SESAME_OK);
    assert_false(sesame_log_to_journal());
    unsetenv("JOURNAL_STREAM");
    assert_int_equal(sesame_log_open("journal", "off", SESAME_LOG_INFO, &err), SESAME_OK);
    assert_true(sesame_log_to_journal());
    assert_true(sesame_log_enabled(SESAME_LOG_INFO));
    assert_true(sesame_log_same_destinations("journal", NULL));
    sesame_log_close();
}

static void
test_fields(void **state)
{
    char rid[65], tenant[65];
    sesame_log_fields("request 1a2b3c4d0100000001: provider fc unavailable", rid, tenant);
    assert_string_equal(rid, "1a2b3c4d0100000001");
    assert_string_equal(tenant, "");
    sesame_log_fields("login: request 9f00 tenant ville-a provider fc account x acr eidas1", rid, tenant);
    assert_string_equal(rid, "9f00");
    assert_string_equal(tenant, "ville-a");
    sesame_log_fields("request 77: tenant ville-b: hop ticket for host h", rid, tenant);
    assert_string_equal(rid, "77");
    assert_string_equal(tenant, "ville-b");
    /* words that are not ids: no digit, or not ended by ':' or a space */
    sesame_log_fields("client 127.0.0.1: request refused (400): bad", rid, tenant);
    assert_string_equal(rid, "");
    sesame_log_fields("request abc1/2: x", rid, tenant);
    assert_string_equal(rid, "");
    sesame_log_fields("subrequest 12: x", rid, tenant);
    assert_string_equal(rid, "");
    char longid[200];
    memset(longid, '1', sizeof(longid));
    memcpy(longid, "request ", 8);
    longid[90] = ':';
    longid[91] = '\0';
    sesame_log_fields(longid, rid, tenant);
    assert_string_equal(rid, "");
}

int
main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen_after_rename),
        cmocka_unit_test(test_journal_under_systemd),
        cmocka_unit_test(test_fields),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(dir);
    return rc;
}
