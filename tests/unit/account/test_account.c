#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <unistd.h>

#include <event2/thread.h>

#include "account/account.h"
#include "core/metrics.h"

static char plugin_dir[4096];

static char *
plugin_path(const char *name)
{
    return sesame_asprintf("%s/%s.so", plugin_dir, name);
}

static struct sesame_account *
load(const char *plugin, struct sesame_conf_kv *opts, size_t nopts, char **err)
{
    struct sesame_conf_accounts conf = {
        .name = "citizens",
        .plugin = (char *)plugin,
        .options = opts,
        .noptions = nopts,
        .line = 12,
    };
    return sesame_account_load("sesame.conf", &conf, NULL, err);
}

static void
test_missing_file(void **state)
{
    char *err = NULL;
    assert_null(load("/nonexistent/sesame_nothing.so", NULL, 0, &err));
    assert_non_null(err);
    const char *want = "sesame.conf:12: accounts citizens: cannot load plugin "
                       "\"/nonexistent/sesame_nothing.so\": /nonexistent/sesame_nothing.so: "
                       "cannot open shared object file: No such file or directory";
    assert_string_equal(err, want);
    free(err);
}

static void
test_missing_symbol(void **state)
{
    char *path = plugin_path("plugin_nosym");
    char *want = sesame_asprintf("sesame.conf:12: accounts citizens: plugin \"%s\" (%s) has no "
                                 "sesame_plugin_entry symbol: %s: undefined symbol: "
                                 "sesame_plugin_entry", path, path, path);
    char *err = NULL;
    assert_null(load(path, NULL, 0, &err));
    assert_string_equal(err, want);
    free(err);
    free(want);
    free(path);
}

static void
test_wrong_abi(void **state)
{
    char *path = plugin_path("plugin_badabi");
    char *want = sesame_asprintf("sesame.conf:12: accounts citizens: plugin \"badabi\" (%s) has "
                                 "ABI version 999, this sesame expects version 1", path);
    char *err = NULL;
    assert_null(load(path, NULL, 0, &err));
    assert_string_equal(err, want);
    free(err);
    free(want);
    free(path);
}

static void
test_plugin_path(void **state)
{
    char *err = NULL;
    setenv("SESAME_PLUGIN_DIR", "/opt/x", 1);
    char *p = sesame_account_plugin_path("redis", &err);
    assert_string_equal(p, "/opt/x/sesame_redis.so");
    free(p);
    unsetenv("SESAME_PLUGIN_DIR");
    p = sesame_account_plugin_path("http", &err);
    assert_string_equal(p, SESAME_PKGLIBDIR "/sesame_http.so");
    free(p);
    p = sesame_account_plugin_path("/a/b.so", &err);
    assert_string_equal(p, "/a/b.so");
    free(p);
    assert_null(sesame_account_plugin_path("../evil", &err));
    assert_string_equal(err, "plugin \"../evil\": not a short name ([a-z0-9_-]) or an absolute path");
    free(err);
    err = NULL;
    assert_null(sesame_account_plugin_path("Redis", &err));
    free(err);
    err = NULL;

    /* The message of a short name gives the file it looked for. */
    setenv("SESAME_PLUGIN_DIR", "/nonexistent", 1);
    assert_null(load("redis", NULL, 0, &err));
    assert_non_null(strstr(err, "sesame.conf:12: accounts citizens: cannot load plugin \"redis\": "
                                "/nonexistent/sesame_redis.so: cannot open shared object file"));
    free(err);
    unsetenv("SESAME_PLUGIN_DIR");

    /* Without a file name, messages start at the section. */
    err = NULL;
    struct sesame_conf_accounts conf = {.name = "c", .plugin = "../x", .line = 3};
    assert_null(sesame_account_load(NULL, &conf, NULL, &err));
    assert_string_equal(err, "accounts c: plugin \"../x\": not a short name ([a-z0-9_-]) or an "
                             "absolute path");
    free(err);
}

static void
test_init_error(void **state)
{
    char *path = plugin_path("plugin_echo");
    struct sesame_conf_kv opts[] = {{"fail", "database: not a number", 14}};
    char *err = NULL;
    assert_null(load(path, opts, 1, &err));
    assert_string_equal(err, "sesame.conf:12: accounts citizens: plugin \"echo\": database: not "
                             "a number");
    free(err);
    err = NULL;
    struct sesame_conf_kv unknown[] = {{"colour", "blue", 13}};
    assert_null(load(path, unknown, 1, &err));
    assert_string_equal(err, "sesame.conf:12: accounts citizens: plugin \"echo\": unknown option");
    free(err);
    free(path);
}

static struct sesame_account *
load_echo(int block_fd)
{
    char *path = plugin_path("plugin_echo");
    char fd[16];
    snprintf(fd, sizeof(fd), "%d", block_fd);
    struct sesame_conf_kv opts[] = {{"block_fd", fd, 13}};
    char *err = NULL;
    struct sesame_account *acct = load(path, opts, 1, &err);
    if (acct == NULL)
        fail_msg("%s", err);
    free(path);
    assert_string_equal(sesame_account_name(acct), "citizens");
    assert_string_equal(sesame_account_plugin_name(acct), "echo");
    return acct;
}

static const struct sesame_plugin_kv claims[] = {
    {"given_name", "Jean-Baptiste"},
    {"family_name", "D'ALMEIDA-LÉVÊQUE"},
};

static void
resolve_sub(struct sesame_account *acct, const char *sub, struct sesame_plugin_result *res)
{
    struct sesame_plugin_identity id = {"ville-a", "fc", sub, claims, 2};
    sesame_account_resolve(acct, &id, res);
}

static void
test_resolve_outcomes(void **state)
{
    struct sesame_account *acct = load_echo(-1);
    struct sesame_plugin_result res;

    resolve_sub(acct, "found-42", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(res.account_id, "acct-42");
    assert_int_equal(res.nattributes, 2);
    assert_string_equal(res.attributes[0].name, "tenant");
    assert_string_equal(res.attributes[0].value, "ville-a");
    assert_string_equal(res.attributes[1].value, "2");

    resolve_sub(acct, "deny", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(res.reason, SESAME_PLUGIN_REASON_DENY);
    resolve_sub(acct, "link", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(res.reason, SESAME_PLUGIN_REASON_LINK_ONLY);

    resolve_sub(acct, "error", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "echo says no");

    /* malformed answers fail closed */
    resolve_sub(acct, "bad-id", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "account plugin echo: malformed account id");
    assert_string_equal(res.account_id, "");
    resolve_sub(acct, "bad-attr", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "account plugin echo: malformed attribute #1");
    resolve_sub(acct, "garbage", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "account plugin echo: unknown result status 77");
    resolve_sub(acct, "fail", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "account plugin failed without a reason");

    /* the identity is checked before the plugin sees it */
    resolve_sub(acct, "found-a b", &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "identity: sub holds a character outside printable ASCII");
    struct sesame_plugin_kv bad[] = {{"given_name", "Jean\nBaptiste"}};
    struct sesame_plugin_identity id = {"ville-a", "fc", "found-1", bad, 1};
    sesame_account_resolve(acct, &id, &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "identity: claim given_name: value missing, too long or not "
                                   "UTF-8 text");
    struct sesame_plugin_identity id2 = {"ville a", "fc", "found-1", NULL, 0};
    sesame_account_resolve(acct, &id2, &res);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(res.error, "identity: tenant name missing or malformed");

    char *err = NULL;
    assert_int_equal(sesame_account_erase(acct, "ville-a", "acct-1", &err), SESAME_DECLINED);
    sesame_account_unref(acct);
}

struct outcome {
    int calls;
    pthread_t thread;
    struct sesame_plugin_result res;
    struct event_base *base;
};

static void
on_resolved(const struct sesame_plugin_result *res, void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->thread = pthread_self();
    o->res = *res;
}

static void
test_resolve_async(void **state)
{
    int block[2];
    assert_int_equal(pipe(block), 0);
    struct event_base *base = event_base_new();
    struct sesame_pool *pool = sesame_pool_new(2, 4, NULL);
    struct sesame_account *acct = load_echo(block[0]);

    /* found, on the caller's thread; the identity is copied */
    struct outcome o1 = {0};
    char *sub = sesame_strdup("found-7");
    struct sesame_plugin_identity id = {"ville-a", "fc", sub, claims, 2};
    char *err = NULL;
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &id, 5000, on_resolved, &o1,
                                                  NULL, &err),
                     SESAME_AGAIN);
    memset(sub, 'x', strlen(sub));
    free(sub);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(o1.calls, 1);
    assert_true(pthread_equal(o1.thread, pthread_self()));
    assert_int_equal(o1.res.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(o1.res.account_id, "acct-7");

    /* a plugin that blocks past the timeout: an error at the deadline */
    struct outcome o2 = {0};
    struct sesame_plugin_identity idb = {"ville-a", "fc", "block", NULL, 0};
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &idb, 30, on_resolved, &o2,
                                                  NULL, &err),
                     SESAME_AGAIN);
    /* the plugin is released only after the loop has reported the timeout */
    while (o2.calls == 0)
        assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
    assert_int_equal(o2.calls, 1);
    assert_int_equal(o2.res.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_string_equal(o2.res.error, "account plugin echo: no answer within 30 ms");
    assert_int_equal(write(block[1], "x", 1), 1);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(o2.calls, 1);

    /* cancelled: done is not called */
    struct outcome o3 = {0};
    struct sesame_account_req *req = NULL;
    struct sesame_plugin_identity idc = {"ville-a", "fc", "found-9", NULL, 0};
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &idc, 0,
                                                  on_resolved, &o3, &req, &err),
                     SESAME_AGAIN);
    sesame_account_cancel(req);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(o3.calls, 0);

    /* a malformed identity is refused at once */
    struct sesame_plugin_identity bad = {"ville-a", "f c", "found-1", NULL, 0};
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &bad, 0, on_resolved, &o3,
                                                  NULL, &err),
                     SESAME_ERROR);
    assert_string_equal(err, "identity: provider name missing or malformed");
    free(err);

    /* the account stays alive while jobs hold it: unref first, then the job ends */
    struct outcome o4 = {0};
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &idb, 0, on_resolved, &o4,
                                                  NULL, &err),
                     SESAME_AGAIN);
    sesame_account_unref(acct);
    assert_int_equal(write(block[1], "x", 1), 1);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(o4.calls, 1);
    assert_string_equal(o4.res.account_id, "acct-block");
    /* every call that ran is counted (core/metrics.h), by section and result */
    assert_int_equal(sesame_metrics_value(SESAME_M_PLUGIN_CALLS, "citizens", "found", NULL), 3);
    assert_int_equal(sesame_metrics_value(SESAME_M_PLUGIN_CALLS, "citizens", "timeout", NULL), 1);

    sesame_pool_free(pool);
    event_base_free(base);
    close(block[0]);
    close(block[1]);
}

static void
test_queue_full(void **state)
{
    int block[2];
    assert_int_equal(pipe(block), 0);
    struct event_base *base = event_base_new();
    struct sesame_pool *pool = sesame_pool_new(1, 1, NULL);
    struct sesame_account *acct = load_echo(block[0]);
    struct sesame_plugin_identity idb = {"ville-a", "fc", "block", NULL, 0};
    struct outcome o[3] = {{0}};
    char *err = NULL;
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &idb, 0, on_resolved, &o[0],
                                                  NULL, &err),
                     SESAME_AGAIN);
    while (sesame_pool_queued(pool) != 0)
        usleep(1000); /* until the worker took the first job */
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &idb, 0, on_resolved, &o[1],
                                                  NULL, &err),
                     SESAME_AGAIN);
    assert_int_equal(sesame_account_resolve_async(acct, pool, base, &idb, 0, on_resolved, &o[2],
                                                  NULL, &err),
                     SESAME_ERROR);
    assert_string_equal(err, "account plugin echo: worker queue full");
    free(err);
    assert_int_equal(write(block[1], "xx", 2), 2);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(o[0].calls, 1);
    assert_int_equal(o[1].calls, 1);
    assert_int_equal(o[2].calls, 0);
    sesame_account_unref(acct);
    sesame_pool_free(pool);
    event_base_free(base);
    close(block[0]);
    close(block[1]);
}

int
main(void)
{
    evthread_use_pthreads();
    const char *b = getenv("SESAME_BUILDDIR");
    snprintf(plugin_dir, sizeof(plugin_dir), "%s/tests/unit/account/.libs", b ? b : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_file),     cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_wrong_abi),        cmocka_unit_test(test_plugin_path),
        cmocka_unit_test(test_init_error),       cmocka_unit_test(test_resolve_outcomes),
        cmocka_unit_test(test_resolve_async),    cmocka_unit_test(test_queue_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
