/*
 * test_refresher.c - provider availability and background upkeep against
 * the mock FranceConnect: jittered refresh times, failures counted until
 * the provider is unavailable, the recheck of sesame_provider_ensure_available,
 * recovery, health by name, registry sync, and the refresher thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "core/util.h"
#include "oidc/provider.h"
#include "oidc/refresher.h"
#include "test_provider_mockfc.h"

static struct mockfc mock;
static struct event_base *base;
static struct sesame_httpc *httpc;

static char *
xs(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct sesame_conf_provider *
conf_new(const char *name, uint64_t refresh_ms, uint64_t probe_ms)
{
    struct sesame_conf_provider *p = calloc(1, sizeof(*p));
    p->name = xs(name);
    p->issuer = xs(mock.issuer);
    p->discovery = true;
    p->discovery_refresh_ms = refresh_ms;
    p->client_id = xs("client-health");
    p->client_secret = xs("secret-client-health-0123456789");
    p->token_auth = SESAME_AUTH_CLIENT_SECRET_POST;
    p->scopes = xs("openid given_name");
    p->acr_values = xs("eidas1");
    p->signing_algs = SESAME_ALG_ES256 | SESAME_ALG_RS256;
    p->userinfo = SESAME_USERINFO_JWT;
    p->ca_file = xs(mock.ca_file);
    p->leeway_ms = 60000;
    p->http_timeout_ms = 5000;
    p->probe_interval_ms = probe_ms;
    return p;
}

static struct sesame_provider *
get_rt(const struct sesame_conf_provider *p)
{
    char *err = NULL;
    struct sesame_provider *rt = sesame_provider_registry_get(p, &err);
    if (rt == NULL)
        fail_msg("registry_get: %s", err);
    return rt;
}

/* Runs the loop until the fetch started by upkeep is over (the runtime
 * asks to be called again later than in a second). */
static uint64_t
upkeep_done(struct sesame_provider *rt)
{
    for (int i = 0; i < 500; i++) {
        uint64_t now = sesame_util_mono_ms();
        uint64_t next = sesame_provider_upkeep(rt, httpc, now);
        if (next != now + 1000)
            return next;
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    fail_msg("upkeep never settled");
    return 0;
}

struct ensure_res {
    bool done;
    enum sesame_provider_status st;
};

static void
on_ensure(void *arg, enum sesame_provider_status st, const char *err)
{
    (void)err;
    struct ensure_res *r = arg;
    r->done = true;
    r->st = st;
}

static enum sesame_provider_status
ensure(struct sesame_provider *rt, bool recheck)
{
    struct ensure_res r = {0};
    if (recheck)
        assert_non_null(sesame_provider_ensure_available(rt, httpc, on_ensure, &r));
    else
        assert_non_null(sesame_provider_ensure(rt, httpc, on_ensure, &r));
    while (!r.done)
        event_base_loop(base, EVLOOP_ONCE);
    return r.st;
}

static void
test_background_refresh_is_jittered(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("jitter", 10000, 0);
    struct sesame_provider *rt = get_rt(p);
    struct sesame_provider_health h;
    sesame_provider_get_health(rt, &h);
    assert_true(h.available);
    assert_false(h.loaded);
    long since = mockfc_seq(&mock);
    uint64_t t0 = sesame_util_mono_ms();
    uint64_t next = upkeep_done(rt); /* the first fetch, at once */
    assert_int_equal(mockfc_count(&mock, "discovery", since, 200), 1);
    assert_int_equal(mockfc_count(&mock, "jwks", since, 200), 1);
    sesame_provider_get_health(rt, &h);
    assert_true(h.available);
    assert_true(h.loaded);
    assert_int_equal(h.failures, 0);
    /* no probe (probe_interval 0): the next call is the refresh, at 75 to
     * 90 % of discovery_refresh */
    assert_true(next >= t0 + 7500);
    assert_true(next <= sesame_util_mono_ms() + 9000);
    /* nothing is due before: no fetch */
    since = mockfc_seq(&mock);
    assert_int_equal(sesame_provider_upkeep(rt, httpc, sesame_util_mono_ms()), next);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 0), 0);
    /* when due, both are fetched again, and scheduled again */
    uint64_t again = sesame_provider_upkeep(rt, httpc, next + 2000);
    assert_int_equal(again, next + 3000);
    while (mockfc_count(&mock, "jwks", since, 200) < 1 ||
           mockfc_count(&mock, "discovery", since, 200) < 1)
        event_base_loop(base, EVLOOP_ONCE);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_failures_make_it_unavailable_then_it_recovers(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("flaky", 3600000, 60000);
    struct sesame_provider *rt = get_rt(p);
    upkeep_done(rt);
    assert_true(sesame_provider_available(rt));

    mockfc_scenario(&mock, "discovery_down", NULL); /* 503 on discovery and JWKS */
    /* the next probe is probe_interval away: force it */
    uint64_t now = sesame_util_mono_ms();
    uint64_t next = sesame_provider_upkeep(rt, httpc, now + 61000);
    assert_int_equal(next, now + 61000 + 1000);
    next = upkeep_done(rt);
    struct sesame_provider_health h;
    sesame_provider_get_health(rt, &h);
    /* one failure: still offered (the last good copy serves), probed again
     * half a second later */
    assert_true(h.available);
    assert_int_equal(h.failures, 1);
    assert_non_null(strstr(h.error, "503"));
    assert_true(next <= sesame_util_mono_ms() + 500);
    usleep(550 * 1000);
    next = upkeep_done(rt);
    sesame_provider_get_health(rt, &h);
    assert_false(h.available);
    assert_true(h.loaded);
    assert_int_equal(h.failures, 2);
    assert_true(h.changed_at > 0);
    /* then every 2 s */
    assert_true(next <= sesame_util_mono_ms() + SESAME_PROVIDER_DOWN_PROBE_MS);
    assert_true(next + 100 >= sesame_util_mono_ms() + SESAME_PROVIDER_DOWN_PROBE_MS);
    /* by name, as the sign-in page asks */
    struct sesame_provider_health hn;
    assert_int_equal(sesame_provider_health("flaky", &hn), SESAME_OK);
    assert_false(hn.available);
    assert_int_equal(sesame_provider_health("nobody", &hn), SESAME_DECLINED);
    assert_true(hn.available);
    assert_false(hn.loaded);

    /* a plain ensure serves the cached copy; a sign-in asks again first */
    assert_int_equal(ensure(rt, false), SESAME_PROVIDER_OK);
    long since = mockfc_seq(&mock);
    assert_int_equal(ensure(rt, true), SESAME_PROVIDER_UNAVAILABLE);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 503), 1);

    /* back: the recheck of a sign-in finds it, with no wait for a probe */
    mockfc_scenario(&mock, "none", NULL);
    assert_int_equal(ensure(rt, true), SESAME_PROVIDER_OK);
    sesame_provider_get_health(rt, &h);
    assert_true(h.available);
    assert_int_equal(h.failures, 0);
    assert_string_equal(h.error, "");
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_never_loaded_and_unreachable(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("nowhere", 3600000, 10000);
    free(p->issuer);
    p->issuer = xs("https://127.0.0.1:1/api/v2"); /* nothing listens there */
    struct sesame_provider *rt = get_rt(p);
    assert_true(sesame_provider_available(rt)); /* nothing known yet */
    upkeep_done(rt);
    struct sesame_provider_health h;
    sesame_provider_get_health(rt, &h);
    /* no metadata and it could not be had: unavailable at once */
    assert_false(h.available);
    assert_false(h.loaded);
    assert_int_equal(h.failures, 1);
    assert_int_equal(ensure(rt, true), SESAME_PROVIDER_UNAVAILABLE);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_registry_sync_and_thread(void **state)
{
    (void)state;
    struct sesame_conf_provider *a = conf_new("watched-a", 3600000, 500);
    struct sesame_conf_provider *b = conf_new("watched-b", 3600000, 500);
    struct sesame_conf_provider *list[2] = {a, b};
    struct sesame_conf conf;
    memset(&conf, 0, sizeof(conf));
    conf.providers = list;
    conf.nproviders = 2;
    char *err = NULL;
    assert_int_equal(sesame_refresher_start(&conf, &err), SESAME_OK);
    struct sesame_provider_health h;
    for (int i = 0; i < 500; i++) {
        struct sesame_provider_health hb;
        if (sesame_provider_health("watched-a", &h) == SESAME_OK && h.loaded &&
            sesame_provider_health("watched-b", &hb) == SESAME_OK && hb.loaded)
            break;
        usleep(10000);
    }
    assert_true(h.loaded);
    /* probed every probe_interval by the thread */
    long since = mockfc_seq(&mock);
    usleep(1300 * 1000);
    assert_true(mockfc_count(&mock, "discovery", since, 200) >= 2);
    /* a configuration without b: b leaves the registry and is no longer
     * probed */
    conf.nproviders = 1;
    sesame_refresher_watch(&conf);
    assert_int_equal(sesame_provider_health("watched-b", &h), SESAME_DECLINED);
    struct sesame_provider **rts = NULL;
    size_t n = sesame_provider_registry_list(&rts);
    for (size_t i = 0; i < n; i++)
        sesame_provider_unref(rts[i]);
    free(rts);
    assert_int_equal(n, 1);
    sesame_refresher_stop();
    sesame_refresher_stop(); /* idempotent */
    test_provider_conf_free(a);
    test_provider_conf_free(b);
}

static int
group_setup(void **state)
{
    (void)state;
    evthread_use_pthreads();
    json_t *clients = json_array();
    json_array_append_new(clients,
                          json_pack("{s:s, s:s, s:[s]}", "client_id", "client-health",
                                    "client_secret", "secret-client-health-0123456789",
                                    "redirect_uris", "https://127.0.0.1:1/sesame/callback"));
    mockfc_start(&mock, clients, "fc");
    json_decref(clients);
    base = event_base_new();
    char *err = NULL;
    httpc = sesame_httpc_new(base, &err);
    assert_non_null(httpc);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    sesame_provider_registry_clear();
    sesame_httpc_free(httpc);
    event_base_free(base);
    mockfc_stop(&mock);
    return 0;
}

static int
teardown_test(void **state)
{
    (void)state;
    mockfc_scenario(&mock, "none", NULL);
    sesame_provider_registry_clear();
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, teardown_test)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_background_refresh_is_jittered),
        T(test_failures_make_it_unavailable_then_it_recovers),
        T(test_never_loaded_and_unreachable),
        T(test_registry_sync_and_thread),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
