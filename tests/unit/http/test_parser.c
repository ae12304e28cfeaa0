/*
 * test_parser.c - unit tests of the strict HTTP/1.x parser and chunked decoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/parser.h"

/* A string literal and its length (literals may hold NUL bytes). */
#define S(lit) lit, (sizeof(lit) - 1)

/* Copies b[0..n) into an exactly sized heap block, so that ASan catches any
 * read past the end. */
static char *
dup_exact(const char *b, size_t n)
{
    char *p = malloc(n > 0 ? n : 1);
    assert_non_null(p);
    memcpy(p, b, n);
    return p;
}

static int
parse_req(const char *raw, size_t n, const struct sesame_http_limits *lim,
          struct sesame_http_request *req)
{
    char *b = dup_exact(raw, n);
    int rc = sesame_http_parse_request(b, n, lim, req);
    free(b);
    return rc;
}

static int
parse_resp(const char *raw, size_t n, const struct sesame_http_limits *lim,
           struct sesame_http_response *resp)
{
    char *b = dup_exact(raw, n);
    int rc = sesame_http_parse_response(b, n, lim, resp);
    free(b);
    return rc;
}

static bool
span_eq(const char *p, size_t n, const char *s)
{
    if (s == NULL)
        return p == NULL;
    return p != NULL && n == strlen(s) && memcmp(p, s, n) == 0;
}

/* Offset of p in buf, or a marker for NULL or a pointer outside buf. */
static long long
rel(const char *p, const char *buf, size_t len)
{
    if (p == NULL)
        return -1;
    if (p >= buf && p <= buf + len)
        return (long long)(p - buf);
    return -2 - (long long)(uintptr_t)p % 1000000; /* static storage, e.g. "/" */
}

static void
assert_same_head(const struct sesame_http_head *a, const char *ab, const struct sesame_http_head *b,
                 const char *bb, size_t len)
{
    assert_int_equal(a->version_minor, b->version_minor);
    assert_int_equal(a->nheaders, b->nheaders);
    for (size_t i = 0; i < a->nheaders; i++) {
        assert_int_equal(rel(a->headers[i].name, ab, len), rel(b->headers[i].name, bb, len));
        assert_int_equal(a->headers[i].name_len, b->headers[i].name_len);
        assert_int_equal(rel(a->headers[i].value, ab, len), rel(b->headers[i].value, bb, len));
        assert_int_equal(a->headers[i].value_len, b->headers[i].value_len);
    }
    assert_true(a->content_length == b->content_length);
    assert_int_equal(a->chunked, b->chunked);
    assert_int_equal(a->keep_alive, b->keep_alive);
    assert_int_equal(a->connection_upgrade, b->connection_upgrade);
    assert_int_equal(a->nconnection_tokens, b->nconnection_tokens);
    for (size_t i = 0; i < a->nconnection_tokens; i++) {
        assert_int_equal(rel(a->connection_tokens[i].p, ab, len),
                         rel(b->connection_tokens[i].p, bb, len));
        assert_int_equal(a->connection_tokens[i].n, b->connection_tokens[i].n);
    }
    assert_int_equal(a->head_len, b->head_len);
}

static void
assert_same_request(const struct sesame_http_request *a, const char *ab,
                    const struct sesame_http_request *b, const char *bb, size_t len)
{
    assert_same_head(&a->h, ab, &b->h, bb, len);
    assert_int_equal(a->method, b->method);
    assert_int_equal(rel(a->method_text, ab, len), rel(b->method_text, bb, len));
    assert_int_equal(a->method_len, b->method_len);
    assert_int_equal(rel(a->target, ab, len), rel(b->target, bb, len));
    assert_int_equal(a->target_len, b->target_len);
    assert_int_equal(rel(a->path, ab, len), rel(b->path, bb, len));
    assert_int_equal(a->path_len, b->path_len);
    assert_int_equal(rel(a->query, ab, len), rel(b->query, bb, len));
    assert_int_equal(a->query_len, b->query_len);
    assert_int_equal(rel(a->host, ab, len), rel(b->host, bb, len));
    assert_int_equal(a->host_len, b->host_len);
    assert_int_equal(a->absolute_form, b->absolute_form);
    assert_int_equal(a->asterisk_form, b->asterisk_form);
    assert_int_equal(a->expect_continue, b->expect_continue);
    assert_int_equal(a->error_status, b->error_status);
}

/* ------------------------------------------------------------------ */
/* Valid requests                                                      */

struct valid_req {
    const char *raw;
    size_t len;
    enum sesame_http_method method;
    const char *path;   /* NULL: none expected */
    const char *query;  /* NULL: none */
    const char *host;   /* NULL: none */
    int64_t cl;
    bool chunked;
    bool keep_alive;
    int minor;
    size_t nheaders;
};

static const struct valid_req valid_reqs[] = {
    {S("GET / HTTP/1.1\r\nHost: ville-a.fr\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, "ville-a.fr", -1,
     false, true, 1, 1},
    {S("GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: ville-a.fr:8443\r\nAccept: */*\r\n\r\n"),
     SESAME_HTTP_GET, "/a/b", "x=1&y=%20", "ville-a.fr:8443", -1, false, true, 1, 2},
    {S("GET /? HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_GET, "/", "", "a", -1, false, true, 1, 1},
    {S("POST /form HTTP/1.1\r\nHost: a.fr\r\nContent-Length: 12\r\n\r\n"), SESAME_HTTP_POST,
     "/form", NULL, "a.fr", 12, false, true, 1, 2},
    {S("POST /form HTTP/1.1\r\nHost: a.fr\r\nContent-Length: 0\r\n\r\n"), SESAME_HTTP_POST, "/form",
     NULL, "a.fr", 0, false, true, 1, 2},
    {S("POST /form HTTP/1.1\r\nHost: a.fr\r\ncontent-length:\t 007 \t\r\n\r\n"), SESAME_HTTP_POST,
     "/form", NULL, "a.fr", 7, false, true, 1, 2},
    {S("POST / HTTP/1.1\r\nHost: a.fr\r\nContent-Length: 9223372036854775807\r\n\r\n"),
     SESAME_HTTP_POST, "/", NULL, "a.fr", INT64_MAX, false, true, 1, 2},
    {S("PUT /up HTTP/1.1\r\nHost: a.fr\r\nTransfer-Encoding: chunked\r\n\r\n"), SESAME_HTTP_PUT,
     "/up", NULL, "a.fr", -1, true, true, 1, 2},
    {S("PUT /up HTTP/1.1\r\nHost: a.fr\r\nTRANSFER-ENCODING:  ChUnKeD  \r\n\r\n"), SESAME_HTTP_PUT,
     "/up", NULL, "a.fr", -1, true, true, 1, 2},
    {S("GET / HTTP/1.1\r\nHost: a.fr\r\nConnection: close\r\n\r\n"), SESAME_HTTP_GET, "/", NULL,
     "a.fr", -1, false, false, 1, 2},
    {S("GET / HTTP/1.0\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, NULL, -1, false, false, 0, 0},
    {S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, NULL, -1,
     false, true, 0, 1},
    {S("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, NULL,
     -1, false, false, 0, 1},
    {S("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, "a", -1, false,
     true, 1, 1},
    {S("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, "a", -1,
     false, true, 1, 1},
    {S("HEAD /x HTTP/1.1\r\nHost: 192.168.0.1\r\n\r\n"), SESAME_HTTP_HEAD, "/x", NULL,
     "192.168.0.1", -1, false, true, 1, 1},
    {S("DELETE /x HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"), SESAME_HTTP_DELETE, "/x", NULL,
     "[2001:db8::1]:443", -1, false, true, 1, 1},
    {S("PATCH /x HTTP/1.1\r\nHost: [::ffff:1.2.3.4]\r\n\r\n"), SESAME_HTTP_PATCH, "/x", NULL,
     "[::ffff:1.2.3.4]", -1, false, true, 1, 1},
    {S("TRACE / HTTP/1.1\r\nHost: a_b~c-d.e\r\n\r\n"), SESAME_HTTP_TRACE, "/", NULL, "a_b~c-d.e",
     -1, false, true, 1, 1},
    {S("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_OPTIONS, NULL, NULL, "a", -1, false,
     true, 1, 1},
    {S("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_OPTIONS, "/x", NULL, "a", -1, false,
     true, 1, 1},
    {S("CONNECT a.fr:443 HTTP/1.1\r\nHost: a.fr:443\r\n\r\n"), SESAME_HTTP_CONNECT, NULL, NULL,
     "a.fr:443", -1, false, true, 1, 1},
    {S("PROPFIND /dav HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_OTHER, "/dav", NULL, "a", -1,
     false, true, 1, 1},
    {S("get / HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_OTHER, "/", NULL, "a", -1, false, true, 1,
     1},
    {S("M-S.E_A~R!C#H$%&'*+^`| / HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_OTHER, "/", NULL, "a",
     -1, false, true, 1, 1},
    /* absolute-form: the authority wins over Host */
    {S("GET http://ville-a.fr/p?q=1 HTTP/1.1\r\nHost: other.fr\r\n\r\n"), SESAME_HTTP_GET, "/p",
     "q=1", "ville-a.fr", -1, false, true, 1, 1},
    {S("GET HTTPS://Ville-A.fr:8443 HTTP/1.1\r\nHost: x\r\n\r\n"), SESAME_HTTP_GET, "/", NULL,
     "Ville-A.fr:8443", -1, false, true, 1, 1},
    {S("GET http://a.fr?z HTTP/1.1\r\nHost: a.fr\r\n\r\n"), SESAME_HTTP_GET, "/", "z", "a.fr", -1,
     false, true, 1, 1},
    {S("GET http://a.fr/ HTTP/1.0\r\n\r\n"), SESAME_HTTP_GET, "/", NULL, "a.fr", -1, false, false,
     0, 0},
    /* values: obs-text allowed, empty value allowed, HTAB inside */
    {S("GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n"),
     SESAME_HTTP_GET, "/", NULL, "a", -1, false, true, 1, 4},
    {S("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"),
     SESAME_HTTP_GET, "/", NULL, "a", 3, false, true, 1, 3},
    {S("GET /%7e~!$&'()*+,;=:@/x HTTP/1.1\r\nHost: a\r\n\r\n"), SESAME_HTTP_GET,
     "/%7e~!$&'()*+,;=:@/x", NULL, "a", -1, false, true, 1, 1},
};

static void
check_valid_request(const struct valid_req *v, struct sesame_http_request *req)
{
    char *b = dup_exact(v->raw, v->len);
    int rc = sesame_http_parse_request(b, v->len, NULL, req);
    if (rc != SESAME_OK)
        print_error("unexpected failure (%d %s) for: %s\n", req->error_status,
                    req->error_reason ? req->error_reason : "-", v->raw);
    assert_int_equal(rc, SESAME_OK);
    assert_int_equal(req->error_status, 0);
    assert_null(req->error_reason);
    assert_int_equal(req->h.head_len, v->len);
    assert_int_equal(req->method, v->method);
    assert_true(span_eq(req->path, req->path_len, v->path));
    assert_true(span_eq(req->query, req->query_len, v->query));
    assert_true(span_eq(req->host, req->host_len, v->host));
    assert_true(req->h.content_length == v->cl);
    assert_int_equal(req->h.chunked, v->chunked);
    assert_int_equal(req->h.keep_alive, v->keep_alive);
    assert_int_equal(req->h.version_minor, v->minor);
    assert_int_equal(req->h.nheaders, v->nheaders);
    free(b);
}

static void
test_valid_requests(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(valid_reqs); i++)
        check_valid_request(&valid_reqs[i], req);
    free(req);
}

static void
test_request_fields(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    const char raw[] = "POST /login?next=%2F HTTP/1.1\r\n"
                       "Host: ville-a.fr\r\n"
                       "Connection: keep-alive, Upgrade, , X-Hop\r\n"
                       "Connection: TE\r\n"
                       "Expect: 100-continue\r\n"
                       "Content-Length: 5\r\n"
                       "Cookie:   a=b  \r\n"
                       "\r\n"
                       "hello";
    assert_int_equal(parse_req(raw, sizeof(raw) - 1, NULL, req), SESAME_OK);
    /* The parsed fields point into the buffer: parse in place. */
    assert_int_equal(sesame_http_parse_request(raw, sizeof(raw) - 1, NULL, req), SESAME_OK);
    assert_int_equal(req->h.head_len, sizeof(raw) - 1 - 5);
    assert_true(span_eq(req->method_text, req->method_len, "POST"));
    assert_true(span_eq(req->target, req->target_len, "/login?next=%2F"));
    assert_true(span_eq(req->path, req->path_len, "/login"));
    assert_true(span_eq(req->query, req->query_len, "next=%2F"));
    assert_false(req->absolute_form);
    assert_false(req->asterisk_form);
    assert_true(req->expect_continue);
    assert_true(req->h.connection_upgrade);
    assert_true(req->h.keep_alive);
    assert_int_equal(req->h.nconnection_tokens, 4);
    assert_true(span_eq(req->h.connection_tokens[0].p, req->h.connection_tokens[0].n,
                        "keep-alive"));
    assert_true(span_eq(req->h.connection_tokens[1].p, req->h.connection_tokens[1].n, "Upgrade"));
    assert_true(span_eq(req->h.connection_tokens[2].p, req->h.connection_tokens[2].n, "X-Hop"));
    assert_true(span_eq(req->h.connection_tokens[3].p, req->h.connection_tokens[3].n, "TE"));
    const struct sesame_http_header *f = sesame_http_find_header(&req->h, "cookie");
    assert_non_null(f);
    assert_true(span_eq(f->value, f->value_len, "a=b"));
    f = sesame_http_find_header(&req->h, "CONTENT-LENGTH");
    assert_non_null(f);
    assert_true(span_eq(f->value, f->value_len, "5"));
    assert_null(sesame_http_find_header(&req->h, "Content-Type"));
    assert_null(sesame_http_find_header(&req->h, "Cooki"));
    assert_int_equal(sesame_http_request_body_kind(req), SESAME_BODY_LENGTH);

    assert_int_equal(sesame_http_parse_request(S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), NULL, req),
                     SESAME_OK);
    assert_int_equal(sesame_http_request_body_kind(req), SESAME_BODY_NONE);
    assert_false(req->expect_continue);
    assert_int_equal(req->h.nconnection_tokens, 0);
    assert_int_equal(
        sesame_http_parse_request(
            S("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), NULL, req),
        SESAME_OK);
    assert_int_equal(sesame_http_request_body_kind(req), SESAME_BODY_CHUNKED);
    /* Absolute-form without a path: the path is "/". */
    assert_int_equal(sesame_http_parse_request(S("GET http://a.fr HTTP/1.1\r\nHost: b\r\n\r\n"),
                                               NULL, req),
                     SESAME_OK);
    assert_true(req->absolute_form);
    assert_true(span_eq(req->path, req->path_len, "/"));
    assert_null(req->query);
    assert_true(span_eq(req->host, req->host_len, "a.fr"));
    /* Asterisk form. */
    assert_int_equal(
        sesame_http_parse_request(S("OPTIONS * HTTP/1.1\r\nHost: b\r\n\r\n"), NULL, req),
        SESAME_OK);
    assert_true(req->asterisk_form);
    assert_null(req->path);
    assert_true(span_eq(req->target, req->target_len, "*"));
    free(req);
}

/* ------------------------------------------------------------------ */
/* Invalid requests                                                    */

struct bad_req {
    const char *raw;
    size_t len;
    int status;
};

#define H11 "GET / HTTP/1.1\r\nHost: a\r\n"
#define P11 "POST / HTTP/1.1\r\nHost: a\r\n"

static const struct bad_req bad_reqs[] = {
    /* request line */
    {S(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\tx\r\nHost: a\r\n\r\n"), 400},
    {S("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET / \r\nHost: a\r\n\r\n"), 400},
    {S("GET /\r\nHost: a\r\n\r\n"), 400},
    {S("GET\r\nHost: a\r\n\r\n"), 400},
    {S("/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET / http/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/11\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/2\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505},
    {S("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505},
    {S("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505},
    {S("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505},
    {S("GET a HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("OPTIONS ** HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET ftp://a.fr/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http:/a.fr/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http://user@a.fr/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http://a.fr:99999/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http://a.fr:/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http://a%2efr/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("GET http://a.fr/ HTTP/1.1\r\n\r\n"), 400}, /* still needs Host */
    {S("CONNECT a.fr HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    /* line endings */
    {S("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\nX: y\n\r\n"), 400},
    {S("GET / HTTP/1.1\rHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\nX\r: b\r\n\r\n"), 400},
    {S("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("\r\n\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {S("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    /* header names */
    {S(H11 "X-Foo : bar\r\n\r\n"), 400},
    {S(H11 "X-Foo\t: bar\r\n\r\n"), 400},
    {S(H11 ": bar\r\n\r\n"), 400},
    {S(H11 "X Foo: bar\r\n\r\n"), 400},
    {S(H11 "X(Foo): bar\r\n\r\n"), 400},
    {S(H11 "X/Foo: bar\r\n\r\n"), 400},
    {S(H11 "X-Foo\x00: bar\r\n\r\n"), 400},
    {S(H11 "X-F\xc3\xa9: bar\r\n\r\n"), 400},
    {S(H11 "NoColon\r\n\r\n"), 400},
    {S(H11 "X-Foo;: bar\r\n\r\n"), 400},
    /* header values */
    {S(H11 "X-Foo: b\x00r\r\n\r\n"), 400},
    {S(H11 "X-Foo: b\x01r\r\n\r\n"), 400},
    {S(H11 "X-Foo: b\x7fr\r\n\r\n"), 400},
    {S(H11 "X-Foo: b\x1br\r\n\r\n"), 400},
    {S(H11 "X-Foo: bar\x0b\r\n\r\n"), 400},
    /* obs-fold */
    {S(H11 "X-Foo: bar\r\n baz\r\n\r\n"), 400},
    {S(H11 "X-Foo: bar\r\n\tbaz\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked\r\n , gzip\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: gzip\r\n ,chunked\r\n\r\n"), 501}, /* first problem wins */
    /* Host */
    {S("GET / HTTP/1.1\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400},
    {S("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a%2eb\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a:\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: :80\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: []\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: [v1.x]\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: caf\xc3\xa9.fr\r\n\r\n"), 400},
    {S("GET / HTTP/1.1\r\nHost: a\x00.fr\r\n\r\n"), 400},
    /* Content-Length */
    {S(P11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"), 400},
    {S(P11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400},
    {S(P11 "Content-Length: 5, 5\r\n\r\n"), 400},
    {S(P11 "Content-Length: 5,5\r\n\r\n"), 400},
    {S(P11 "Content-Length: +5\r\n\r\n"), 400},
    {S(P11 "Content-Length: -5\r\n\r\n"), 400},
    {S(P11 "Content-Length: 5 5\r\n\r\n"), 400},
    {S(P11 "Content-Length: 0x5\r\n\r\n"), 400},
    {S(P11 "Content-Length: 5a\r\n\r\n"), 400},
    {S(P11 "Content-Length: 5.0\r\n\r\n"), 400},
    {S(P11 "Content-Length: 1e3\r\n\r\n"), 400},
    {S(P11 "Content-Length:\r\n\r\n"), 400},
    {S(P11 "Content-Length: \r\n\r\n"), 400},
    {S(P11 "Content-Length: 9223372036854775808\r\n\r\n"), 400},
    {S(P11 "Content-Length: 99999999999999999999999999\r\n\r\n"), 400},
    {S(P11 "Content-Length: 18446744073709551621\r\n\r\n"), 400},
    {S(P11 "Content-Length: \xd9\xa5\r\n\r\n"), 400},
    /* Content-Length with Transfer-Encoding, both orders */
    {S(P11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"), 400},
    /* Transfer-Encoding */
    {S(P11 "Transfer-Encoding: gzip\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: identity\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: chunked, gzip\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: gzip, chunked\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: xchunked\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: chunkedx\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), 501},
    {S(P11 "Transfer-Encoding: chunked, chunked\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked,\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: ,chunked\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding:\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked;q=1\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: \"chunked\"\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chun ked\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: chunked\x0b\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding: \xff" "chunked\r\n\r\n"), 400},
    {S(P11 "Transfer-Encoding : chunked\r\n\r\n"), 400},
    {S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {S("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    /* Connection */
    {S(H11 "Connection: a b\r\n\r\n"), 400},
    {S(H11 "Connection: a;b\r\n\r\n"), 400},
    {S(H11 "Connection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\r\n\r\n"), 400},
    {S(H11 "Connection: a,b,c,d,e,f,g,h\r\nConnection: i,j,k,l,m,n,o,p,q\r\n\r\n"), 400},
};

static void
test_invalid_requests(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(bad_reqs); i++) {
        const struct bad_req *c = &bad_reqs[i];
        int rc = parse_req(c->raw, c->len, NULL, req);
        if (rc != SESAME_ERROR || req->error_status != c->status)
            print_error("case %zu: rc %d status %d (%s), expected %d\n", i, rc, req->error_status,
                        req->error_reason ? req->error_reason : "-", c->status);
        assert_int_equal(rc, SESAME_ERROR);
        assert_int_equal(req->error_status, c->status);
        assert_non_null(req->error_reason);
        /* No prefix of an invalid head is accepted. */
        for (size_t k = 0; k < c->len; k++) {
            rc = parse_req(c->raw, k, NULL, req);
            assert_true(rc == SESAME_AGAIN || rc == SESAME_ERROR);
        }
    }
    free(req);
}

/* Host names: 255 bytes at most (port excluded). */
static void
test_host_length(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    char buf[512];
    for (size_t hl = 254; hl <= 256; hl++) {
        size_t n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: ");
        memset(buf + n, 'h', hl);
        n += hl;
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ":8080\r\n\r\n");
        int rc = parse_req(buf, n, NULL, req);
        assert_int_equal(rc, hl <= 255 ? SESAME_OK : SESAME_ERROR);
        if (rc == SESAME_OK)
            assert_int_equal(req->host_len, hl + 5);
    }
    free(req);
}

/* The reason given for the main smuggling vectors. */
static void
test_error_reasons(void **state)
{
    static const struct {
        const char *raw;
        size_t len;
        const char *reason;
    } cases[] = {
        {S(H11 "X-Foo: bar\r\n baz\r\n\r\n"), "obsolete line folding"},
        {S(H11 "X-Foo : bar\r\n\r\n"), "whitespace before colon"},
        {S(H11 ": bar\r\n\r\n"), "empty header name"},
        {S(H11 "X@: bar\r\n\r\n"), "invalid header name"},
        {S(H11 "X: \x01\r\n\r\n"), "control character in header value"},
        {S("GET / HTTP/1.1\nHost: a\r\n\r\n"), "bare LF"},
        {S("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), "bare CR"},
        {S(P11 "Content-Length: 1\r\nContent-Length: 1\r\n\r\n"), "duplicate Content-Length"},
        {S(P11 "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
         "Content-Length with Transfer-Encoding"},
        {S(P11 "Transfer-Encoding: chunked, chunked\r\n\r\n"), "chunked applied twice"},
        {S(P11 "Transfer-Encoding: gzip\r\n\r\n"), "unsupported Transfer-Encoding"},
        {S("GET / HTTP/1.1\r\n\r\n"), "missing Host"},
        {S(H11 "Host: b\r\n\r\n"), "duplicate Host"},
    };
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(cases); i++) {
        assert_int_equal(parse_req(cases[i].raw, cases[i].len, NULL, req), SESAME_ERROR);
        assert_string_equal(req->error_reason, cases[i].reason);
    }
    free(req);
}

/* Two requests back to back: the first head ends at head_len, the second
 * starts there (no bytes of the second are taken by the first). */
static void
test_pipelined(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    const char raw[] = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                       "GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(sesame_http_parse_request(raw, sizeof(raw) - 1, NULL, req), SESAME_OK);
    size_t next = req->h.head_len + (size_t)req->h.content_length;
    assert_int_equal(sesame_http_parse_request(raw + next, sizeof(raw) - 1 - next, NULL, req),
                     SESAME_OK);
    assert_true(span_eq(req->path, req->path_len, "/b"));
    assert_int_equal(next + req->h.head_len, sizeof(raw) - 1);
    free(req);
}

/* ------------------------------------------------------------------ */
/* Incremental feeding                                                 */

/* Feeds raw in two steps through one growing buffer: the first k bytes
 * (SESAME_AGAIN expected), then all of it. The result must match the
 * one-shot parse field by field. */
static void
check_every_split(const char *raw, size_t n)
{
    struct sesame_http_request *ref = malloc(sizeof(*ref));
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(ref);
    assert_non_null(req);
    char *one = dup_exact(raw, n);
    assert_int_equal(sesame_http_parse_request(one, n, NULL, ref), SESAME_OK);
    for (size_t k = 0; k < n; k++) {
        char *b = dup_exact(raw, k);
        assert_int_equal(sesame_http_parse_request(b, k, NULL, req), SESAME_AGAIN);
        assert_int_equal(req->error_status, 0);
        b = realloc(b, n);
        assert_non_null(b);
        memcpy(b + k, raw + k, n - k);
        assert_int_equal(sesame_http_parse_request(b, n, NULL, req), SESAME_OK);
        assert_same_request(ref, one, req, b, n);
        free(b);
    }
    free(one);
    free(ref);
    free(req);
}

static void
test_incremental_requests(void **state)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(valid_reqs); i++)
        check_every_split(valid_reqs[i].raw, valid_reqs[i].len);
    const char big[] = "POST /path/to/resource?with=query&and=more HTTP/1.1\r\n"
                       "Host: ville-a.fr\r\n"
                       "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Firefox/115.0\r\n"
                       "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n"
                       "Cookie: sesame=abcdef0123456789; lang=fr\r\n"
                       "Connection: keep-alive\r\n"
                       "Transfer-Encoding: chunked\r\n"
                       "\r\n";
    check_every_split(big, sizeof(big) - 1);
}

/* Trickles every test request byte by byte and checks that whenever
 * sesame_http_need_parse() says a parse may be skipped, parsing anyway
 * answers SESAME_AGAIN. */
static void
check_need_parse(const char *raw, size_t n, const struct sesame_http_limits *lim, size_t *skipped)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    int prev_rc = SESAME_AGAIN;
    size_t prev = 0;
    for (size_t k = 1; k <= n && prev_rc == SESAME_AGAIN; k++) {
        char *b = dup_exact(raw, k);
        bool need = sesame_http_need_parse(b, prev, k, lim);
        int rc = sesame_http_parse_request(b, k, lim, req);
        if (!need) {
            assert_int_equal(rc, SESAME_AGAIN);
            (*skipped)++;
        }
        prev_rc = rc;
        prev = k;
        free(b);
    }
    free(req);
}

static void
test_need_parse(void **state)
{
    size_t skipped = 0;
    struct sesame_http_limits small = {.max_request_line = 20, .max_header_size = 64,
                                       .max_headers = 3};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(valid_reqs); i++) {
        check_need_parse(valid_reqs[i].raw, valid_reqs[i].len, NULL, &skipped);
        check_need_parse(valid_reqs[i].raw, valid_reqs[i].len, &small, &skipped);
    }
    for (size_t i = 0; i < SESAME_ARRAY_LEN(bad_reqs); i++) {
        check_need_parse(bad_reqs[i].raw, bad_reqs[i].len, NULL, &skipped);
        check_need_parse(bad_reqs[i].raw, bad_reqs[i].len, &small, &skipped);
    }
    const char lead[] = "\r\n\r\n\r\n\r\n"
                        "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n";
    check_need_parse(lead, sizeof(lead) - 1, &small, &skipped);
    /* Most of the bytes of a head are skippable. */
    assert_true(skipped > 1000);

    const char *b = "GET /abc HTTP/1.1\r\nHost: aaaa";
    assert_true(sesame_http_need_parse(b, 0, 5, NULL));
    assert_false(sesame_http_need_parse(b, 4, 8, NULL));
    assert_true(sesame_http_need_parse(b, 8, 19, NULL));   /* CR LF */
    assert_true(sesame_http_need_parse(b, 17, 18, NULL));  /* CR */
    assert_true(sesame_http_need_parse(b, 18, 19, NULL));  /* LF */
    assert_true(sesame_http_need_parse("\rG", 1, 2, NULL));  /* after a CR */
    assert_false(sesame_http_need_parse(b, 20, 25, NULL));
    assert_true(sesame_http_need_parse(b, 25, 25, NULL));
    struct sesame_http_limits tiny = {.max_request_line = 6, .max_header_size = 24};
    assert_true(sesame_http_need_parse(b, 4, 7, &tiny));   /* request line limit */
    assert_false(sesame_http_need_parse(b, 20, 23, &tiny));
    assert_true(sesame_http_need_parse(b, 20, 24, &tiny)); /* head limit */
}

/* ------------------------------------------------------------------ */
/* Limits                                                              */

static char *
make_request_line(size_t content_len)
{
    /* "GET /aaa...a HTTP/1.1" of exactly content_len bytes, then CRLF. */
    size_t fixed = strlen("GET / HTTP/1.1");
    assert_true(content_len >= fixed);
    char *b = malloc(content_len + 2);
    assert_non_null(b);
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', content_len - fixed);
    memcpy(b + 5 + content_len - fixed, " HTTP/1.1\r\n", 11);
    return b;
}

static void
test_limits_request_line(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    struct sesame_http_limits lim = {.max_request_line = 100, .max_header_size = 1000,
                                     .max_headers = 10};
    /* exactly at the limit */
    char *b = make_request_line(100);
    char *full = malloc(102 + 11);
    assert_non_null(full);
    memcpy(full, b, 102);
    memcpy(full + 102, "Host: a\r\n\r\n", 11);
    assert_int_equal(sesame_http_parse_request(full, 113, &lim, req), SESAME_OK);
    /* incomplete but within: AGAIN at every length, CR included */
    for (size_t k = 0; k <= 101; k++)
        assert_int_equal(sesame_http_parse_request(b, k, &lim, req), SESAME_AGAIN);
    free(b);
    free(full);
    /* one byte over */
    b = make_request_line(101);
    assert_int_equal(sesame_http_parse_request(b, 103, &lim, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 414);
    /* detected as soon as 101 bytes of the line are there, without CRLF */
    assert_int_equal(sesame_http_parse_request(b, 100, &lim, req), SESAME_AGAIN);
    assert_int_equal(sesame_http_parse_request(b, 101, &lim, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 414);
    free(b);
    /* leading empty lines do not count in the request line */
    char lead[4 + 102];
    b = make_request_line(100);
    memcpy(lead, "\r\n\r\n", 4);
    memcpy(lead + 4, b, 102);
    for (size_t k = 0; k <= sizeof(lead); k++)
        assert_int_equal(sesame_http_parse_request(lead, k, &lim, req), SESAME_AGAIN);
    free(b);
    /* a 1 MB request line without CRLF fails at the limit */
    size_t big = 1 << 20;
    b = malloc(big);
    assert_non_null(b);
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', big - 5);
    assert_int_equal(sesame_http_parse_request(b, big, &lim, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 414);
    assert_int_equal(sesame_http_parse_request(b, big, NULL, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 414);
    assert_int_equal(sesame_http_parse_request(b, SESAME_HTTP_DEFAULT_MAX_REQUEST_LINE, NULL, req),
                     SESAME_AGAIN);
    assert_int_equal(
        sesame_http_parse_request(b, SESAME_HTTP_DEFAULT_MAX_REQUEST_LINE + 1, NULL, req),
        SESAME_ERROR);
    assert_int_equal(req->error_status, 414);
    free(b);
    free(req);
}

static void
test_limits_head(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    struct sesame_http_limits lim = {.max_request_line = 100, .max_header_size = 200,
                                     .max_headers = 10};
    /* A head of exactly 200 bytes. */
    char head[200];
    const char *start = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
    size_t sl = strlen(start);
    memcpy(head, start, sl);
    memset(head + sl, 'p', 200 - sl - 4);
    memcpy(head + 196, "\r\n\r\n", 4);
    assert_int_equal(parse_req(head, 200, &lim, req), SESAME_OK);
    assert_int_equal(req->h.head_len, 200);
    for (size_t k = 0; k < 200; k++)
        assert_int_equal(parse_req(head, k, &lim, req), SESAME_AGAIN);
    /* One more byte of value: 431, as soon as 200 bytes are there. */
    char over[201];
    memcpy(over, head, 196);
    over[196] = 'p';
    memcpy(over + 197, "\r\n\r\n", 4);
    assert_int_equal(parse_req(over, 201, &lim, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    assert_int_equal(parse_req(over, 200, &lim, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    assert_int_equal(parse_req(over, 199, &lim, req), SESAME_AGAIN);
    /* A 1 MB header line without CRLF fails at the limit (default limits too). */
    size_t big = 1 << 20;
    char *b = malloc(big);
    assert_non_null(b);
    memcpy(b, start, sl);
    memset(b + sl, 'x', big - sl);
    assert_int_equal(sesame_http_parse_request(b, big, &lim, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    assert_int_equal(sesame_http_parse_request(b, big, NULL, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    assert_int_equal(
        sesame_http_parse_request(b, SESAME_HTTP_DEFAULT_MAX_HEADER_SIZE - 1, NULL, req),
        SESAME_AGAIN);
    assert_int_equal(sesame_http_parse_request(b, SESAME_HTTP_DEFAULT_MAX_HEADER_SIZE, NULL, req),
                     SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    free(b);
    /* A request line limit above the head limit acts as the head limit, and
     * a first line running past the head limit gives 431. */
    struct sesame_http_limits l2 = {.max_request_line = 1000, .max_header_size = 50};
    char *rl = make_request_line(60);
    assert_int_equal(parse_req(rl, 62, &l2, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    assert_int_equal(parse_req(rl, 49, &l2, req), SESAME_AGAIN);
    /* Absurdly large limits do not wrap around. */
    struct sesame_http_limits huge = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    assert_int_equal(parse_req(rl, 62, &huge, req), SESAME_AGAIN);
    assert_int_equal(parse_req(S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), &huge, req), SESAME_OK);
    free(rl);
    free(req);
}

static void
test_limits_header_count(void **state)
{
    struct sesame_http_request *req = malloc(sizeof(*req));
    assert_non_null(req);
    char buf[16384];
    for (size_t max = 1; max <= SESAME_HTTP_MAX_HEADERS + 5; max += 37) {
        struct sesame_http_limits lim = {.max_headers = max, .max_header_size = sizeof(buf)};
        size_t eff = max > SESAME_HTTP_MAX_HEADERS ? SESAME_HTTP_MAX_HEADERS : max;
        for (size_t count = eff; count <= eff + 1; count++) {
            size_t n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\n");
            for (size_t i = 1; i < count; i++)
                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-H%zu: v\r\n", i);
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
            int rc = parse_req(buf, n, &lim, req);
            if (count == eff) {
                assert_int_equal(rc, SESAME_OK);
                assert_int_equal(req->h.nheaders, count);
            } else {
                assert_int_equal(rc, SESAME_ERROR);
                assert_int_equal(req->error_status, 431);
                /* without the final CRLF: already refused */
                assert_int_equal(parse_req(buf, n - 2, &lim, req), SESAME_ERROR);
            }
        }
    }
    /* default: 100 */
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 1; i <= SESAME_HTTP_DEFAULT_MAX_HEADERS; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-H%zu: v\r\n", i);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
    assert_int_equal(parse_req(buf, n, NULL, req), SESAME_ERROR);
    assert_int_equal(req->error_status, 431);
    free(req);
}

/* ------------------------------------------------------------------ */
/* Responses                                                           */

struct resp_case {
    const char *raw;
    size_t len;
    int rc;
    int status;
    const char *reason;
    enum sesame_http_body_kind kind;      /* for a GET */
    enum sesame_http_body_kind head_kind; /* for a HEAD */
    bool keep_alive;
};

static const struct resp_case resp_cases[] = {
    {S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), SESAME_OK, 200, "OK", SESAME_BODY_LENGTH,
     SESAME_BODY_NONE, true},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), SESAME_OK, 200, "OK",
     SESAME_BODY_CHUNKED, SESAME_BODY_NONE, true},
    {S("HTTP/1.1 200 OK\r\n\r\n"), SESAME_OK, 200, "OK", SESAME_BODY_UNTIL_CLOSE,
     SESAME_BODY_NONE, true},
    {S("HTTP/1.0 200 OK\r\n\r\n"), SESAME_OK, 200, "OK", SESAME_BODY_UNTIL_CLOSE, SESAME_BODY_NONE,
     false},
    {S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"), SESAME_OK, 200,
     "OK", SESAME_BODY_LENGTH, SESAME_BODY_NONE, true},
    {S("HTTP/1.1 204 No Content\r\n\r\n"), SESAME_OK, 204, "No Content", SESAME_BODY_NONE,
     SESAME_BODY_NONE, true},
    {S("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"), SESAME_OK, 204, "No Content",
     SESAME_BODY_NONE, SESAME_BODY_NONE, true},
    {S("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"), SESAME_OK, 304,
     "Not Modified", SESAME_BODY_NONE, SESAME_BODY_NONE, true},
    {S("HTTP/1.1 100 Continue\r\n\r\n"), SESAME_OK, 100, "Continue", SESAME_BODY_NONE,
     SESAME_BODY_NONE, true},
    {S("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
     SESAME_OK, 101, "Switching Protocols", SESAME_BODY_NONE, SESAME_BODY_NONE, true},
    {S("HTTP/1.1 302 Found\r\nLocation: /x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
     SESAME_OK, 302, "Found", SESAME_BODY_LENGTH, SESAME_BODY_NONE, false},
    {S("HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n"), SESAME_OK, 200, "", SESAME_BODY_LENGTH,
     SESAME_BODY_NONE, true},
    {S("HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n"), SESAME_OK, 200, "", SESAME_BODY_LENGTH,
     SESAME_BODY_NONE, true},
    {S("HTTP/1.1 599 Tr\xc3\xa8s\tbien  \r\n\r\n"), SESAME_OK, 599, "Tr\xc3\xa8s\tbien  ",
     SESAME_BODY_UNTIL_CLOSE, SESAME_BODY_NONE, true},
    {S("HTTP/1.1 404 Not Found\r\nContent-Length: 9223372036854775807\r\n\r\n"), SESAME_OK, 404,
     "Not Found", SESAME_BODY_LENGTH, SESAME_BODY_NONE, true},
    /* errors */
    {S("HTTP/1.1 600 Bad\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 099 Bad\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 2000 Bad\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 20 Bad\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 2x0 Bad\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1  200 OK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1\t200 OK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/2 200 OK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/2.0 200 OK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("http/1.1 200 OK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 O\x01K\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 O\rK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nA: b\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\n\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("\r\nHTTP/1.1 200 OK\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nA : b\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"), SESAME_ERROR, 0,
     NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
     SESAME_ERROR, 0, NULL, 0, 0, false},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), SESAME_ERROR, 0, NULL, 0,
     0, false},
    {S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), SESAME_ERROR, 0, NULL,
     0, 0, false},
    {S("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0,
     false},
    {S("HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n"), SESAME_ERROR, 0, NULL, 0, 0, false},
};

static void
test_responses(void **state)
{
    struct sesame_http_response *resp = malloc(sizeof(*resp));
    assert_non_null(resp);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(resp_cases); i++) {
        const struct resp_case *c = &resp_cases[i];
        int rc = parse_resp(c->raw, c->len, NULL, resp);
        if (rc != c->rc)
            print_error("response case %zu: rc %d (%s)\n", i, rc,
                        resp->error_reason ? resp->error_reason : "-");
        assert_int_equal(rc, c->rc);
        if (rc == SESAME_ERROR) {
            assert_non_null(resp->error_reason);
            for (size_t k = 0; k < c->len; k++) {
                rc = parse_resp(c->raw, k, NULL, resp);
                assert_true(rc == SESAME_AGAIN || rc == SESAME_ERROR);
            }
            continue;
        }
        char *b = dup_exact(c->raw, c->len);
        assert_int_equal(sesame_http_parse_response(b, c->len, NULL, resp), SESAME_OK);
        assert_null(resp->error_reason);
        assert_int_equal(resp->status, c->status);
        assert_true(span_eq(resp->reason, resp->reason_len, c->reason));
        assert_int_equal(resp->h.head_len, c->len);
        assert_int_equal(sesame_http_response_body_kind(resp, false), c->kind);
        assert_int_equal(sesame_http_response_body_kind(resp, true), c->head_kind);
        assert_int_equal(resp->h.keep_alive, c->keep_alive);
        /* every split */
        struct sesame_http_response *r2 = malloc(sizeof(*r2));
        assert_non_null(r2);
        for (size_t k = 0; k < c->len; k++) {
            char *p = dup_exact(c->raw, k);
            assert_int_equal(sesame_http_parse_response(p, k, NULL, r2), SESAME_AGAIN);
            p = realloc(p, c->len);
            assert_non_null(p);
            memcpy(p + k, c->raw + k, c->len - k);
            assert_int_equal(sesame_http_parse_response(p, c->len, NULL, r2), SESAME_OK);
            assert_same_head(&resp->h, b, &r2->h, p, c->len);
            assert_int_equal(r2->status, resp->status);
            assert_int_equal(rel(r2->reason, p, c->len), rel(resp->reason, b, c->len));
            assert_int_equal(r2->reason_len, resp->reason_len);
            free(p);
        }
        free(r2);
        free(b);
    }
    /* Limits apply to responses too. */
    struct sesame_http_limits lim = {.max_request_line = 20, .max_header_size = 60,
                                     .max_headers = 2};
    assert_int_equal(parse_resp(S("HTTP/1.1 200 OK But Too Long\r\n\r\n"), &lim, resp),
                     SESAME_ERROR);
    assert_string_equal(resp->error_reason, "status line too long");
    assert_int_equal(parse_resp(S("HTTP/1.1 200 OK\nA: 1\r\n\r\n"), &lim, resp), SESAME_ERROR);
    assert_string_equal(resp->error_reason, "bare LF");
    assert_int_equal(parse_resp(S("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), &lim, resp),
                     SESAME_ERROR);
    assert_int_equal(parse_resp(S("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"), &lim, resp),
                     SESAME_OK);
    assert_int_equal(
        parse_resp(S("HTTP/1.1 200 OK\r\nA: 111111111111111111111111111111111111111111\r\n\r\n"),
                   &lim, resp),
        SESAME_ERROR);
    free(resp);
}

/* ------------------------------------------------------------------ */
/* Chunked decoder                                                     */

struct dec {
    int rc;
    size_t consumed; /* total */
    char out[8192];
    size_t out_len;
};

/* Decodes in[0..n) offering `step` new bytes at a time (0: all at once). */
static void
decode(const char *raw, size_t n, size_t step, struct dec *d)
{
    char *in = dup_exact(raw, n);
    struct sesame_http_chunked c;
    sesame_http_chunked_init(&c);
    size_t pos = 0, avail = step == 0 ? n : (step < n ? step : n);
    d->out_len = 0;
    d->rc = SESAME_AGAIN;
    for (;;) {
        size_t consumed = 99, off = 99, dl = 99;
        int rc = sesame_http_chunked_feed(&c, in + pos, avail - pos, &consumed, &off, &dl);
        assert_true(consumed <= avail - pos);
        if (dl > 0) {
            assert_true(off + dl <= consumed);
            assert_true(d->out_len + dl <= sizeof(d->out));
            memcpy(d->out + d->out_len, in + pos + off, dl);
            d->out_len += dl;
        }
        if (rc == SESAME_ERROR) {
            d->rc = rc;
            break;
        }
        pos += consumed;
        if (rc == SESAME_OK) {
            d->rc = rc;
            /* the end is sticky */
            assert_int_equal(sesame_http_chunked_feed(&c, in + pos, n - pos, &consumed, &off, &dl),
                             SESAME_OK);
            assert_int_equal(consumed, 0);
            assert_int_equal(dl, 0);
            break;
        }
        assert_int_equal(rc, SESAME_AGAIN);
        if (consumed == 0) {
            if (avail == n) {
                d->rc = SESAME_AGAIN; /* incomplete */
                break;
            }
            avail = step == 0 ? n : (avail + step < n ? avail + step : n);
        }
    }
    d->consumed = pos;
    if (d->rc == SESAME_ERROR) {
        /* errors are sticky */
        size_t consumed, off, dl;
        assert_int_equal(sesame_http_chunked_feed(&c, "0\r\n\r\n", 5, &consumed, &off, &dl),
                         SESAME_ERROR);
    }
    free(in);
}

struct chunk_case {
    const char *raw;
    size_t len;
    int rc;
    const char *payload;  /* for OK */
    size_t payload_len;
    size_t consumed;      /* for OK: where the message ends */
};

#define CK_OK(raw, payload, end) {S(raw), SESAME_OK, S(payload), end}
#define CK_BAD(raw) {S(raw), SESAME_ERROR, NULL, 0, 0}
#define CK_MORE(raw) {S(raw), SESAME_AGAIN, NULL, 0, 0}

static const struct chunk_case chunk_cases[] = {
    CK_OK("5\r\nhello\r\n0\r\n\r\n", "hello", 15),
    CK_OK("0\r\n\r\n", "", 5),
    CK_OK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 26),
    CK_OK("a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij", 35),
    CK_OK("0005\r\nhello\r\n000\r\n\r\n", "hello", 20),
    CK_OK("0000000000000005\r\nhello\r\n0\r\n\r\n", "hello", 30),
    CK_OK("5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello", 31),
    CK_OK("5 ;a=\"b c\"\r\nhello\r\n0\t;x\r\n\r\n", "hello", 27),
    CK_OK("5\r\nhello\r\n0\r\nX-Trailer: v\r\nX-Other:\r\n\r\n", "hello", 39),
    CK_OK("3\r\n\r\n\r\r\n0\r\n\r\n", "\r\n\r", 13),
    CK_OK("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "hello", 15),
    CK_OK("1\r\n\x00\r\n0\r\n\r\n", "\x00", 11),
    CK_MORE("5\r\nhel"),
    CK_MORE("5\r\nhello\r\n0\r\n"),
    CK_MORE("5\r\nhello\r\n0\r\nX: y\r\n"),
    CK_MORE("ffffffffffffffff\r\nabc"),
    CK_MORE(""),
    /* sizes */
    CK_BAD("+5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("-5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("0x5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD(" 5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("\t5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5 \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("g\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("\r\nhello\r\n0\r\n\r\n"),
    CK_BAD(";x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("\r\n\r\n"),
    CK_BAD(";x\r\n\r\n"),
    CK_BAD("5\r\nhello\r\n\r\n\r\n"),
    CK_BAD("00000000000000005\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("10000000000000000\r\n"),
    CK_BAD("5,5\r\nhello\r\n0\r\n\r\n"),
    /* line endings */
    CK_BAD("5\nhello\r\n0\r\n\r\n"),
    CK_BAD("5\rhello\r\n0\r\n\r\n"),
    CK_BAD("5\r\nhello\n0\r\n\r\n"),
    CK_BAD("5\r\nhelloX\r\n0\r\n\r\n"),
    CK_BAD("5\r\nhelloX\n0\r\n\r\n"),
    CK_BAD("5\r\nhello\rX0\r\n\r\n"),
    CK_BAD("5\r\nhello0\r\n\r\n"),
    CK_BAD("5\r\nhello\r\n0\n\r\n"),
    CK_BAD("5\r\nhello\r\n0\r\n\n"),
    CK_BAD("5\r\nhello\r\n0\r\n\r\r"),
    CK_BAD("5;x\nhello\r\n0\r\n\r\n"),
    /* extensions */
    CK_BAD("5;a\x01\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a\x7f\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a\x00\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5 x\r\nhello\r\n0\r\n\r\n"),
    /* trailers */
    CK_BAD("0\r\n X: y\r\n\r\n"),
    CK_BAD("0\r\nX: y\r\n\tz\r\n\r\n"),
    CK_BAD("0\r\nX y\r\n\r\n"),
    CK_BAD("0\r\nX : y\r\n\r\n"),
    CK_BAD("0\r\n: y\r\n\r\n"),
    CK_BAD("0\r\nX: y\n\r\n"),
    CK_BAD("0\r\nX: y\r\r\n\r\n"),
    CK_BAD("0\r\nX: \x00\r\n\r\n"),
    CK_BAD("0\r\nX\n"),
};

static void
test_chunked(void **state)
{
    struct dec *one = malloc(sizeof(*one));
    struct dec *other = malloc(sizeof(*other));
    assert_non_null(one);
    assert_non_null(other);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(chunk_cases); i++) {
        const struct chunk_case *c = &chunk_cases[i];
        decode(c->raw, c->len, 0, one);
        if (one->rc != c->rc)
            print_error("chunk case %zu: rc %d, expected %d\n", i, one->rc, c->rc);
        assert_int_equal(one->rc, c->rc);
        if (c->rc == SESAME_OK) {
            assert_int_equal(one->consumed, c->consumed);
            assert_int_equal(one->out_len, c->payload_len);
            assert_memory_equal(one->out, c->payload, one->out_len);
        }
        /* byte by byte, and every other step size: same answer */
        for (size_t step = 1; step <= c->len; step++) {
            decode(c->raw, c->len, step, other);
            assert_int_equal(other->rc, one->rc);
            if (one->rc == SESAME_OK) {
                assert_int_equal(other->consumed, one->consumed);
                assert_int_equal(other->out_len, one->out_len);
                assert_memory_equal(other->out, one->out, one->out_len);
            }
        }
    }
    free(one);
    free(other);
}

static void
test_chunked_limits(void **state)
{
    struct dec *d = malloc(sizeof(*d));
    assert_non_null(d);
    size_t n = SESAME_CHUNKED_MAX_LINE + SESAME_CHUNKED_MAX_TRAILERS + 64;
    char *b = malloc(n);
    assert_non_null(b);

    /* size line of exactly SESAME_CHUNKED_MAX_LINE bytes: accepted */
    size_t k = 0;
    b[k++] = '1';
    b[k++] = ';';
    memset(b + k, 'e', SESAME_CHUNKED_MAX_LINE - 2);
    k += SESAME_CHUNKED_MAX_LINE - 2;
    memcpy(b + k, "\r\nx\r\n0\r\n\r\n", 10);
    decode(b, k + 10, 0, d);
    assert_int_equal(d->rc, SESAME_OK);
    assert_int_equal(d->out_len, 1);
    /* one more byte: refused, even before the CR arrives */
    memset(b + 2, 'e', SESAME_CHUNKED_MAX_LINE - 1);
    k = SESAME_CHUNKED_MAX_LINE + 1;
    decode(b, k, 0, d);
    assert_int_equal(d->rc, SESAME_ERROR);
    decode(b, k, 7, d);
    assert_int_equal(d->rc, SESAME_ERROR);

    /* trailers of exactly SESAME_CHUNKED_MAX_TRAILERS bytes (final CRLF
     * included): accepted; one more: refused */
    for (int extra = 0; extra <= 1; extra++) {
        k = 0;
        memcpy(b, "0\r\n", 3);
        k = 3;
        size_t tr = SESAME_CHUNKED_MAX_TRAILERS + (size_t)extra;
        /* "X: vvvv\r\n" + "\r\n" */
        memcpy(b + k, "X: ", 3);
        memset(b + k + 3, 'v', tr - 3 - 4);
        memcpy(b + k + tr - 4, "\r\n\r\n", 4);
        k += tr;
        decode(b, k, 0, d);
        assert_int_equal(d->rc, extra ? SESAME_ERROR : SESAME_OK);
        /* without the end: refused as soon as the limit is passed */
        if (extra) {
            memset(b + 3 + 3, 'v', n - 6);
            decode(b, n, 0, d);
            assert_int_equal(d->rc, SESAME_ERROR);
        }
    }

    /* the largest size is accepted and counted down */
    struct sesame_http_chunked c;
    sesame_http_chunked_init(&c);
    size_t consumed, off, dl;
    assert_int_equal(
        sesame_http_chunked_feed(&c, S("FFFFFFFFFFFFFFFF\r\nabc"), &consumed, &off, &dl),
        SESAME_AGAIN);
    assert_int_equal(consumed, 21);
    assert_int_equal(off, 18);
    assert_int_equal(dl, 3);
    assert_true(c.remaining == UINT64_MAX - 3);
    /* the data slice is bounded by the chunk size */
    sesame_http_chunked_init(&c);
    assert_int_equal(sesame_http_chunked_feed(&c, S("3\r\nabcdef"), &consumed, &off, &dl),
                     SESAME_AGAIN);
    assert_int_equal(off, 3);
    assert_int_equal(dl, 3);
    assert_int_equal(consumed, 6);
    assert_int_equal(sesame_http_chunked_feed(&c, S("def"), &consumed, &off, &dl), SESAME_ERROR);
    free(b);
    free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),
        cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_invalid_requests),
        cmocka_unit_test(test_error_reasons),
        cmocka_unit_test(test_host_length),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_incremental_requests),
        cmocka_unit_test(test_need_parse),
        cmocka_unit_test(test_limits_request_line),
        cmocka_unit_test(test_limits_head),
        cmocka_unit_test(test_limits_header_count),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
