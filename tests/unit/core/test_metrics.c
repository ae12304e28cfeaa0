/*
 * test_metrics.c - core/metrics.h: per-thread shards summed exactly, label
 * sets, histograms, gauges, and the text exposition.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <pthread.h>

#include "core/metrics.h"

static char *
render(void)
{
    struct evbuffer *b = evbuffer_new();
    sesame_metrics_render(b);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* The value of the sample line starting with `prefix` followed by a space. */
static long long
sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return atoll(p + n + 1);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return -1;
}

#define THREADS 4
#define PER_THREAD 100000

static void *
counting_thread(void *arg)
{
    if (arg != NULL)
        sesame_metrics_thread_attach();
    for (int i = 0; i < PER_THREAD; i++) {
        sesame_metrics_request("ville-a", "a-home", 200, 1500);
        sesame_metrics_gauge_add(SESAME_M_CLIENT_CONNECTIONS, 1);
        sesame_metrics_gauge_add(SESAME_M_CLIENT_CONNECTIONS, -1);
    }
    sesame_metrics_gauge_add(SESAME_M_CLIENT_CONNECTIONS, 1);
    return NULL;
}

/* Threads with their own shard and threads on the shared fallback shard:
 * every increment is counted once. */
static void
test_sums_across_threads(void **state)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, counting_thread, i % 2 ? (void *)1 : NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(sesame_metrics_value(SESAME_M_REQUESTS, "ville-a", "a-home", "2xx"),
                     THREADS * PER_THREAD);
    assert_int_equal(sesame_metrics_value(SESAME_M_REQUEST_DURATION, NULL, NULL, NULL),
                     THREADS * PER_THREAD);
    assert_int_equal(sesame_metrics_value(SESAME_M_CLIENT_CONNECTIONS, NULL, NULL, NULL), THREADS);
    sesame_metrics_gauge_add(SESAME_M_CLIENT_CONNECTIONS, -THREADS);
    char *text = render();
    assert_int_equal(sample(text, "sesame_requests_total{tenant=\"ville-a\",route=\"a-home\",status=\"2xx\"}"),
                     THREADS * PER_THREAD);
    /* 1.5 ms falls in the 2.5 ms bucket, not in the 1 ms one */
    assert_int_equal(sample(text, "sesame_request_duration_seconds_bucket{le=\"0.001\"}"), 0);
    assert_int_equal(sample(text, "sesame_request_duration_seconds_bucket{le=\"0.0025\"}"),
                     THREADS * PER_THREAD);
    assert_int_equal(sample(text, "sesame_request_duration_seconds_bucket{le=\"+Inf\"}"),
                     THREADS * PER_THREAD);
    assert_non_null(strstr(text, "sesame_request_duration_seconds_sum 600.000000\n"));
    assert_int_equal(sample(text, "sesame_client_connections"), 0);
    free(text);
}

static void
test_labels_and_format(void **state)
{
    sesame_metrics_signin("franceconnect", SESAME_SIGNIN_SUCCESS);
    sesame_metrics_signin("franceconnect", SESAME_SIGNIN_ACR_TOO_LOW);
    sesame_metrics_signin("franceconnect", SESAME_SIGNIN_ACR_TOO_LOW);
    sesame_metrics_signin(NULL, SESAME_SIGNIN_STATE);
    sesame_metrics_signin("fc", SESAME_SIGNIN_REDIS_UNAVAILABLE);
    sesame_metrics_request(NULL, NULL, 0, 10);
    sesame_metrics_add(SESAME_M_PLUGIN_CALLS, "ci\"t\\o\nyens", "found", NULL, 1);
    sesame_metrics_observe_us(SESAME_M_REDIS_DURATION, 50);
    sesame_metrics_observe_us(SESAME_M_REDIS_DURATION, 2000000);
    char *text = render();
    assert_int_equal(
        sample(text, "sesame_signins_total{provider=\"franceconnect\",outcome=\"success\",reason=\"none\"}"), 1);
    assert_int_equal(sample(text, "sesame_signins_total{provider=\"franceconnect\",outcome=\"refused\","
                                  "reason=\"acr_too_low\"}"),
                     2);
    assert_int_equal(
        sample(text, "sesame_signins_total{provider=\"(none)\",outcome=\"refused\",reason=\"state\"}"), 1);
    assert_int_equal(sample(text, "sesame_signins_total{provider=\"fc\",outcome=\"error\","
                                  "reason=\"redis_unavailable\"}"),
                     1);
    assert_int_equal(
        sample(text, "sesame_requests_total{tenant=\"(none)\",route=\"(none)\",status=\"aborted\"}"), 1);
    /* label values escaped as the text format says */
    assert_int_equal(
        sample(text, "sesame_plugin_calls_total{accounts=\"ci\\\"t\\\\o\\nyens\",result=\"found\"}"), 1);
    assert_int_equal(sample(text, "sesame_redis_command_duration_seconds_bucket{le=\"0.0001\"}"), 1);
    assert_int_equal(sample(text, "sesame_redis_command_duration_seconds_bucket{le=\"1\"}"), 1);
    assert_int_equal(sample(text, "sesame_redis_command_duration_seconds_bucket{le=\"+Inf\"}"), 2);
    assert_int_equal(sample(text, "sesame_redis_command_duration_seconds_count"), 2);
    assert_non_null(strstr(text, "sesame_redis_command_duration_seconds_sum 2.000050\n"));
    /* every family is declared, unlabelled ones start at 0 */
    assert_non_null(strstr(text, "# TYPE sesame_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE sesame_request_duration_seconds histogram\n"));
    assert_non_null(strstr(text, "# TYPE sesame_client_connections gauge\n"));
    assert_int_equal(sample(text, "sesame_redis_reconnects_total"), 0);
    assert_int_equal(sample(text, "sesame_plugin_queue_length"), 0);
    assert_non_null(strstr(text, "sesame_build_info{version=\""));
    free(text);
}

static double
seven(void *arg)
{
    return 7;
}

static void
test_gauge_function(void **state)
{
    sesame_metrics_gauge_fn_set(SESAME_M_PLUGIN_QUEUE, seven, NULL);
    char *text = render();
    assert_int_equal(sample(text, "sesame_plugin_queue_length"), 7);
    free(text);
    sesame_metrics_gauge_fn_set(SESAME_M_PLUGIN_QUEUE, NULL, NULL);
}

/* Past SESAME_METRICS_MAX_SERIES label sets, new ones are counted as
 * dropped; the existing ones keep counting. */
static void
test_registry_bound(void **state)
{
    char name[32];
    for (int i = 0; i < SESAME_METRICS_MAX_SERIES + 10; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        sesame_metrics_add(SESAME_M_SIGNIN_REDIRECTS, name, NULL, NULL, 1);
    }
    assert_true(sesame_metrics_value(SESAME_M_DROPPED, NULL, NULL, NULL) >= 10);
    sesame_metrics_request("ville-a", "a-home", 200, 1500);
    assert_int_equal(sesame_metrics_value(SESAME_M_REQUESTS, "ville-a", "a-home", "2xx"),
                     THREADS * PER_THREAD + 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_across_threads),
        cmocka_unit_test(test_labels_and_format),
        cmocka_unit_test(test_gauge_function),
        cmocka_unit_test(test_registry_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
