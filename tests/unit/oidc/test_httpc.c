/*
 * test_httpc.c - live tests of the asynchronous HTTPS client against the
 * mock FranceConnect (tests/mockfc/mockfc.py) on a loopback port: GET and
 * POST, TLS trust (the mock's CA, another CA, the system store), https-only,
 * no redirects, no proxy from the environment, size limit, timeout,
 * cancellation, invalid requests and shutdown with calls in flight.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "oidc/httpc.h"
#include "test_provider_mockfc.h"

static struct mockfc mock;
static char *other_ca; /* a CA that did not sign the mock's certificate */
static char *other_dir;

struct result {
    bool done;
    int calls;
    char *error;
    bool timed_out;
    long status;
    char *ctype;
    char *body;
    size_t body_len;
};

static void
result_clear(struct result *r)
{
    free(r->error);
    free(r->ctype);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static void
on_response(void *arg, const struct sesame_httpc_response *resp)
{
    struct result *r = arg;
    r->calls++;
    r->done = true;
    r->error = resp->error ? strdup(resp->error) : NULL;
    r->timed_out = resp->timed_out;
    r->status = resp->status;
    r->ctype = resp->content_type ? strdup(resp->content_type) : NULL;
    r->body = malloc(resp->body_len + 1);
    memcpy(r->body, resp->body, resp->body_len + 1); /* NUL-terminated by contract */
    r->body_len = resp->body_len;
}

/* Runs the loop until *flag; fails when the loop has nothing left to wait
 * for (the callback would then never come). */
static void
run_until(struct event_base *base, const bool *flag)
{
    while (!*flag) {
        int rc = event_base_loop(base, EVLOOP_ONCE);
        if (rc != 0 && !*flag)
            fail_msg("event loop ran dry before the callback");
    }
}

struct fixture {
    struct event_base *base;
    struct sesame_httpc *h;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    char *err = NULL;
    f->h = sesame_httpc_new(f->base, &err);
    assert_non_null(f->h);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    sesame_httpc_free(f->h);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void
fetch(struct fixture *f, const struct sesame_httpc_request *rq, struct result *r)
{
    struct sesame_httpc_call *c = sesame_httpc_fetch(f->h, rq, on_response, r);
    assert_non_null(c);
    assert_false(r->done); /* never called from inside fetch */
    run_until(f->base, &r->done);
    assert_int_equal(r->calls, 1);
    assert_int_equal(sesame_httpc_pending(f->h), 0);
}

static char *
url(const char *path)
{
    char *u = NULL;
    assert_true(asprintf(&u, "%s%s", mock.base, path) > 0);
    return u;
}

/* ---- tests ----------------------------------------------------------------------- */

static void
test_get_discovery(void **state)
{
    struct fixture *f = *state;
    char *u = url("/api/v2/.well-known/openid-configuration");
    const char *hdrs[] = {"Accept: application/json"};
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u, .headers = hdrs,
                                      .nheaders = 1, .ca_file = mock.ca_file};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_null(r.error);
    assert_int_equal(r.status, 200);
    assert_non_null(r.ctype);
    assert_int_equal(strncmp(r.ctype, "application/json", 16), 0);
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "issuer")), mock.issuer);
    json_decref(doc);
    result_clear(&r);
    free(u);
}

static void
test_post_form(void **state)
{
    struct fixture *f = *state;
    long since = mockfc_seq(&mock);
    char *u = url("/api/v2/token");
    const char *body = "grant_type=authorization_code&code=nope&redirect_uri=https%3A%2F%2Frp"
                       "&client_id=client-es256&client_secret=wrong";
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_POST, .url = u, .body = body,
                                      .body_len = strlen(body), .ca_file = mock.ca_file};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_null(r.error);
    assert_int_equal(r.status, 401); /* the mock read the form: bad client credentials */
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), "invalid_client");
    json_decref(doc);
    json_t *rec = mockfc_last(&mock, "token", since);
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "method")), "POST");
    json_t *params = json_object_get(rec, "params");
    assert_string_equal(json_string_value(json_object_get(params, "grant_type")),
                        "authorization_code");
    assert_string_equal(json_string_value(json_object_get(params, "redirect_uri")), "https://rp");
    assert_string_equal(json_string_value(json_object_get(rec, "client_auth")),
                        "client_secret_post");
    json_decref(rec);
    result_clear(&r);
    free(u);
}

static void
test_untrusted_ca(void **state)
{
    struct fixture *f = *state;
    char *u = url("/api/v2/jwks");
    long since = mockfc_seq(&mock);
    /* another CA */
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u, .ca_file = other_ca};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_non_null(r.error);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.body_len, 0);
    result_clear(&r);
    /* the system store */
    rq.ca_file = NULL;
    fetch(f, &rq, &r);
    assert_non_null(r.error);
    assert_int_equal(r.status, 0);
    result_clear(&r);
    /* nothing reached the mock's application */
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 0);
    /* a CA file that does not exist fails too */
    rq.ca_file = "/nonexistent/ca.pem";
    fetch(f, &rq, &r);
    assert_non_null(r.error);
    result_clear(&r);
    free(u);
}

static void
test_https_only(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "http://127.0.0.1:1/", "ftp://127.0.0.1/", "file:///etc/passwd", "127.0.0.1/x",
        "https://", "https://127.0.0.1/a b", "gopher://127.0.0.1/",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = bad[i]};
        struct result r = {0};
        fetch(f, &rq, &r);
        assert_non_null(r.error);
        assert_int_equal(r.status, 0);
        result_clear(&r);
    }
    /* the mock's port spoken in clear: refused before any connection */
    char *u = NULL;
    assert_true(asprintf(&u, "http://127.0.0.1:%d/api/v2/jwks", mock.port) > 0);
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_non_null(r.error);
    assert_non_null(strstr(r.error, "https"));
    result_clear(&r);
    free(u);
}

static void
test_no_redirect(void **state)
{
    struct fixture *f = *state;
    mockfc_autologin(&mock, "marie");
    long since = mockfc_seq(&mock);
    char *u = url("/api/v2/authorize?response_type=code&client_id=client-es256"
                  "&redirect_uri=https%3A%2F%2F127.0.0.1%3A1%2Fcb&scope=openid"
                  "&state=0123456789abcdef0123456789abcdef&nonce=0123456789abcdef0123456789ab"
                  "&acr_values=eidas1");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                      .ca_file = mock.ca_file};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_null(r.error);
    assert_int_equal(r.status, 302); /* returned as such, not followed */
    assert_int_equal(mockfc_count(&mock, "authorize", since, 302), 1);
    result_clear(&r);
    free(u);
    mockfc_autologin(&mock, NULL);
}

static void
test_no_proxy_from_environment(void **state)
{
    struct fixture *f = *state;
    /* a proxy that does not exist: were it used, the call would fail */
    setenv("https_proxy", "http://127.0.0.1:1", 1);
    setenv("HTTPS_PROXY", "http://127.0.0.1:1", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:1", 1);
    char *u = url("/api/v2/jwks");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                      .ca_file = mock.ca_file};
    struct result r = {0};
    fetch(f, &rq, &r);
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    assert_null(r.error);
    assert_int_equal(r.status, 200);
    result_clear(&r);
    free(u);
}

static void
test_max_response(void **state)
{
    struct fixture *f = *state;
    char *u = url("/api/v2/jwks");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                      .ca_file = mock.ca_file, .max_response = 64};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_non_null(r.error);
    assert_non_null(strstr(r.error, "larger than 64 bytes"));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.body_len, 0);
    result_clear(&r);
    /* a limit above the size: fine */
    rq.max_response = 256 * 1024;
    fetch(f, &rq, &r);
    assert_null(r.error);
    assert_true(r.body_len > 64);
    result_clear(&r);
    free(u);
}

static void
test_timeout(void **state)
{
    struct fixture *f = *state;
    json_t *extra = json_pack("{s:i}", "seconds", 5);
    mockfc_scenario(&mock, "token_slow", extra);
    json_decref(extra);
    char *u = url("/api/v2/token");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_POST, .url = u, .body = "a=b",
                                      .body_len = 3, .ca_file = mock.ca_file, .timeout_ms = 300};
    struct result r = {0};
    fetch(f, &rq, &r);
    mockfc_scenario(&mock, "none", NULL);
    assert_non_null(r.error);
    assert_true(r.timed_out);
    assert_int_equal(r.status, 0);
    result_clear(&r);
    free(u);
}

static void
test_cancel(void **state)
{
    struct fixture *f = *state;
    char *u = url("/api/v2/jwks");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                      .ca_file = mock.ca_file};
    struct result cancelled = {0}, other = {0}, failed = {0};
    struct sesame_httpc_call *c = sesame_httpc_fetch(f->h, &rq, on_response, &cancelled);
    assert_non_null(c);
    /* an invalid request cancelled before its error is delivered */
    struct sesame_httpc_request bad = {.method = SESAME_HTTPC_GET, .url = "http://x/"};
    struct sesame_httpc_call *cb = sesame_httpc_fetch(f->h, &bad, on_response, &failed);
    assert_non_null(cb);
    assert_int_equal(sesame_httpc_pending(f->h), 2);
    sesame_httpc_cancel(cb);
    assert_int_equal(sesame_httpc_pending(f->h), 1);
    /* let the first one start connecting, then cancel it */
    event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(cancelled.calls, 0);
    sesame_httpc_cancel(c);
    sesame_httpc_cancel(NULL);
    assert_int_equal(sesame_httpc_pending(f->h), 0);
    /* another call completes; the cancelled ones never call back */
    fetch(f, &rq, &other);
    assert_int_equal(other.status, 200);
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(failed.calls, 0);
    result_clear(&other);
    free(u);
}

static void
test_bad_requests(void **state)
{
    struct fixture *f = *state;
    char *u = url("/api/v2/jwks");
    const char *inject[] = {"X-A: 1\r\nX-B: 2"};
    const char *noname[] = {": v"};
    const char *spacename[] = {"X A: v"};
    const char *const *sets[] = {inject, noname, spacename};
    for (size_t i = 0; i < 3; i++) {
        struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                          .headers = sets[i], .nheaders = 1,
                                          .ca_file = mock.ca_file};
        struct result r = {0};
        fetch(f, &rq, &r);
        assert_non_null(r.error);
        assert_non_null(strstr(r.error, "header"));
        result_clear(&r);
    }
    const char *many[SESAME_HTTPC_MAX_HEADERS + 1];
    for (size_t i = 0; i < SESAME_HTTPC_MAX_HEADERS + 1; i++)
        many[i] = "X-A: 1";
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u, .headers = many,
                                      .nheaders = SESAME_HTTPC_MAX_HEADERS + 1,
                                      .ca_file = mock.ca_file};
    struct result r = {0};
    fetch(f, &rq, &r);
    assert_non_null(r.error);
    result_clear(&r);
    rq.nheaders = SESAME_HTTPC_MAX_HEADERS;
    fetch(f, &rq, &r);
    assert_null(r.error);
    assert_int_equal(r.status, 200);
    result_clear(&r);
    free(u);
}

static void
test_concurrent(void **state)
{
    struct fixture *f = *state;
    char *u = url("/api/v2/.well-known/openid-configuration");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                      .ca_file = mock.ca_file};
    struct result r[6];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 6; i++)
        assert_non_null(sesame_httpc_fetch(f->h, &rq, on_response, &r[i]));
    assert_int_equal(sesame_httpc_pending(f->h), 6);
    for (int i = 0; i < 6; i++) {
        run_until(f->base, &r[i].done);
        assert_null(r[i].error);
        assert_int_equal(r[i].status, 200);
        assert_int_equal(r[i].calls, 1);
        result_clear(&r[i]);
    }
    assert_int_equal(sesame_httpc_pending(f->h), 0);
    free(u);
}

struct refetch {
    struct result r;
    struct sesame_httpc *h;
    bool refetch_null;
};

/* During shutdown a callback cannot start another call. */
static void
on_response_refetch(void *arg, const struct sesame_httpc_response *resp)
{
    struct refetch *rf = arg;
    on_response(&rf->r, resp);
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = "https://127.0.0.1/"};
    rf->refetch_null = sesame_httpc_fetch(rf->h, &rq, on_response, &rf->r) == NULL;
}

static void
test_free_with_calls_in_flight(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    char *err = NULL;
    struct sesame_httpc *h = sesame_httpc_new(base, &err);
    assert_non_null(h);
    char *u = url("/api/v2/jwks");
    struct sesame_httpc_request rq = {.method = SESAME_HTTPC_GET, .url = u,
                                      .ca_file = mock.ca_file};
    struct result a = {0};
    struct refetch b = {.h = h};
    assert_non_null(sesame_httpc_fetch(h, &rq, on_response, &a));
    assert_non_null(sesame_httpc_fetch(h, &rq, on_response_refetch, &b));
    sesame_httpc_free(h);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.r.calls, 1);
    assert_true(b.refetch_null);
    assert_non_null(a.error);
    assert_non_null(strstr(a.error, "shut down"));
    assert_non_null(b.r.error);
    result_clear(&a);
    result_clear(&b.r);
    event_base_free(base);
    free(u);
    sesame_httpc_free(NULL);
}

static void
test_new_without_base(void **state)
{
    (void)state;
    char *err = NULL;
    assert_null(sesame_httpc_new(NULL, &err));
    assert_non_null(err);
    free(err);
}

/* ---- group ------------------------------------------------------------------------- */

static int
group_setup(void **state)
{
    (void)state;
    evthread_use_pthreads();
    json_t *clients = json_pack("[{s:s, s:s, s:[s]}]", "client_id", "client-es256",
                                "client_secret", "secret-es256-0123456789abcdef0123456789",
                                "redirect_uris", "https://127.0.0.1:1/cb");
    mockfc_start(&mock, clients, "fc");
    json_decref(clients);
    /* another CA, made by the mock's own PKI script */
    other_dir = mockfc_tempdir("otherca");
    char script[2048];
    const char *src = getenv("SESAME_SRCDIR");
    snprintf(script, sizeof(script), "%s/tests/mockfc/pki.py",
             src && *src ? src : SESAME_TEST_SRCDIR);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1);
        execl("/usr/bin/python3", "/usr/bin/python3", script, "--dir", other_dir, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    assert_true(asprintf(&other_ca, "%s/ca.pem", other_dir) > 0);
    if (access(other_ca, R_OK) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    mockfc_stop(&mock);
    mockfc_rmtree(other_dir);
    free(other_dir);
    free(other_ca);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_discovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untrusted_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_redirect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_proxy_from_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test(test_free_with_calls_in_flight),
        cmocka_unit_test(test_new_without_base),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
