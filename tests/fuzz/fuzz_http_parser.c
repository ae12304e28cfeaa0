/*
 * fuzz_http_parser.c - fuzz harness for gateway/http/parser.c: the request
 * parser, the response parser and the chunked decoder, each with checked
 * invariants (an invariant broken calls abort()).
 *
 * Under libFuzzer (clang), from the top of the source tree:
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *       -Igateway -Iinclude tests/fuzz/fuzz_http_parser.c gateway/http/parser.c \
 *       -o /tmp/fuzz_http_parser
 *   mkdir -p /tmp/fuzz-http && cp -r tests/fuzz/corpus/http/. /tmp/fuzz-http/
 *   /tmp/fuzz_http_parser -max_len=4096 -max_total_time=600 /tmp/fuzz-http
 * (new inputs land in /tmp/fuzz-http; a crash is written to ./crash-*, replay
 * it with `/tmp/fuzz_http_parser crash-...`; copy small, interesting inputs
 * back into tests/fuzz/corpus/http/.)
 *
 * Standalone (-DSESAME_FUZZ_STANDALONE, built by make check under the
 * sanitizers of the build): main() runs the harness over every file named on
 * the command line (a directory stands for the files in it), or, with no
 * argument, over $SESAME_SRCDIR/tests/fuzz/corpus/http. Exit status 0 when
 * every input ran, 1 when an input could not be read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static struct sesame_http_request req_a, req_b;
static struct sesame_http_response resp_a, resp_b;

static const struct sesame_http_limits small_limits = {
    .max_request_line = 48,
    .max_header_size = 160,
    .max_headers = 4,
};

static bool
inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static void
check_head(const struct sesame_http_head *h, const char *buf, size_t len, size_t max_head)
{
    CHECK(h->head_len >= 4 && h->head_len <= len && h->head_len <= max_head);
    CHECK(memcmp(buf + h->head_len - 4, "\r\n\r\n", 4) == 0);
    CHECK(h->version_minor == 0 || h->version_minor == 1);
    CHECK(h->nheaders <= SESAME_HTTP_MAX_HEADERS);
    CHECK(!(h->chunked && h->content_length >= 0));
    CHECK(h->content_length >= -1);
    CHECK(!(h->chunked && h->version_minor == 0));
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct sesame_http_header *f = &h->headers[i];
        CHECK(f->name_len > 0 && inside(f->name, f->name_len, buf, h->head_len));
        CHECK(inside(f->value, f->value_len, buf, h->head_len));
        for (size_t k = 0; k < f->value_len; k++) {
            unsigned char c = (unsigned char)f->value[k];
            CHECK(c == '\t' || c >= 0x20);
            CHECK(c != 0x7f);
        }
        CHECK(sesame_http_find_header(h, "x-fuzz") == NULL ||
              sesame_http_find_header(h, "X-FUZZ") != NULL);
    }
    CHECK(h->nconnection_tokens <= 16);
    for (size_t i = 0; i < h->nconnection_tokens; i++)
        CHECK(h->connection_tokens[i].n > 0 &&
              inside(h->connection_tokens[i].p, h->connection_tokens[i].n, buf, h->head_len));
}

static void
fuzz_request(const char *buf, size_t len, const struct sesame_http_limits *lim, size_t max_head,
             size_t split)
{
    int rc = sesame_http_parse_request(buf, len, lim, &req_a);
    if (rc == SESAME_OK) {
        struct sesame_http_request *r = &req_a;
        CHECK(r->error_status == 0 && r->error_reason == NULL);
        check_head(&r->h, buf, len, max_head);
        CHECK(r->method_len > 0 && inside(r->method_text, r->method_len, buf, r->h.head_len));
        CHECK(r->target_len > 0 && inside(r->target, r->target_len, buf, r->h.head_len));
        for (size_t k = 0; k < r->target_len; k++) {
            unsigned char c = (unsigned char)r->target[k];
            CHECK(c > 0x20 && c < 0x7f && c != '#');
        }
        if (r->path != NULL)
            CHECK(r->path_len > 0 && r->path[0] == '/');
        if (r->query != NULL)
            CHECK(inside(r->query, r->query_len, buf, r->h.head_len));
        CHECK(r->h.version_minor == 0 || r->host != NULL);
        if (r->host != NULL)
            CHECK(r->host_len > 0 && inside(r->host, r->host_len, buf, r->h.head_len));
        CHECK(!r->asterisk_form || r->method == SESAME_HTTP_OPTIONS);
        /* The bytes after the head do not matter; any shorter prefix is incomplete. */
        CHECK(sesame_http_parse_request(buf, r->h.head_len, lim, &req_b) == SESAME_OK);
        CHECK(req_b.h.head_len == r->h.head_len && req_b.h.nheaders == r->h.nheaders &&
              req_b.h.content_length == r->h.content_length && req_b.host == r->host);
        CHECK(sesame_http_parse_request(buf, r->h.head_len - 1, lim, &req_b) == SESAME_AGAIN);
        if (split < r->h.head_len)
            CHECK(sesame_http_parse_request(buf, split, lim, &req_b) == SESAME_AGAIN);
        (void)sesame_http_request_body_kind(r);
    } else if (rc == SESAME_ERROR) {
        int s = req_a.error_status;
        CHECK(s == 400 || s == 414 || s == 431 || s == 501 || s == 505);
        CHECK(req_a.error_reason != NULL);
    } else {
        CHECK(rc == SESAME_AGAIN);
        CHECK(len < max_head);
        CHECK(req_a.error_status == 0);
    }
    /* need_parse: skipping a parse never hides an answer. */
    if (split > 0 && split < len &&
        sesame_http_parse_request(buf, split, lim, &req_b) == SESAME_AGAIN &&
        !sesame_http_need_parse(buf, split, len, lim))
        CHECK(rc == SESAME_AGAIN);
}

static void
fuzz_response(const char *buf, size_t len, const struct sesame_http_limits *lim, size_t max_head,
              size_t split)
{
    int rc = sesame_http_parse_response(buf, len, lim, &resp_a);
    if (rc == SESAME_OK) {
        struct sesame_http_response *r = &resp_a;
        CHECK(r->error_reason == NULL);
        check_head(&r->h, buf, len, max_head);
        CHECK(r->status >= 100 && r->status <= 599);
        CHECK(r->reason != NULL && inside(r->reason, r->reason_len, buf, r->h.head_len));
        enum sesame_http_body_kind k = sesame_http_response_body_kind(r, false);
        CHECK(sesame_http_response_body_kind(r, true) == SESAME_BODY_NONE);
        if (k == SESAME_BODY_CHUNKED)
            CHECK(r->h.chunked);
        if (k == SESAME_BODY_LENGTH)
            CHECK(r->h.content_length >= 0);
        CHECK(sesame_http_parse_response(buf, r->h.head_len - 1, lim, &resp_b) == SESAME_AGAIN);
        if (split < r->h.head_len)
            CHECK(sesame_http_parse_response(buf, split, lim, &resp_b) == SESAME_AGAIN);
    } else if (rc == SESAME_ERROR) {
        CHECK(resp_a.error_reason != NULL);
    } else {
        CHECK(rc == SESAME_AGAIN && len < max_head);
    }
    if (split > 0 && split < len &&
        sesame_http_parse_response(buf, split, lim, &resp_b) == SESAME_AGAIN &&
        !sesame_http_need_parse(buf, split, len, lim))
        CHECK(rc == SESAME_AGAIN);
}

struct decoded {
    int rc;
    size_t consumed;
    size_t out_len;
    uint64_t hash;
};

/* Decodes buf offering `step` more bytes each time no progress is made
 * (0: everything at once). */
static void
decode(const char *buf, size_t len, size_t step, struct decoded *d)
{
    struct sesame_http_chunked c;
    sesame_http_chunked_init(&c);
    size_t pos = 0, avail = step == 0 || step > len ? len : step;
    d->out_len = 0;
    d->hash = 1469598103934665603ULL;
    for (;;) {
        size_t consumed, off, dl;
        int rc = sesame_http_chunked_feed(&c, buf + pos, avail - pos, &consumed, &off, &dl);
        CHECK(consumed <= avail - pos);
        CHECK(dl == 0 || off + dl <= consumed);
        for (size_t k = 0; k < dl; k++)
            d->hash = (d->hash ^ (unsigned char)buf[pos + off + k]) * 1099511628211ULL;
        d->out_len += dl;
        if (rc == SESAME_ERROR) {
            d->rc = rc;
            d->consumed = pos;
            CHECK(sesame_http_chunked_feed(&c, buf, len, &consumed, &off, &dl) == SESAME_ERROR);
            return;
        }
        pos += consumed;
        if (rc == SESAME_OK) {
            d->rc = rc;
            d->consumed = pos;
            CHECK(sesame_http_chunked_feed(&c, buf, len, &consumed, &off, &dl) == SESAME_OK &&
                  consumed == 0);
            return;
        }
        CHECK(rc == SESAME_AGAIN);
        if (consumed == 0) {
            CHECK(pos == avail || avail < len);
            if (avail == len) {
                d->rc = rc;
                d->consumed = pos;
                return;
            }
            avail = step == 0 || avail + step > len ? len : avail + step;
        }
    }
}

static void
fuzz_chunked(const char *buf, size_t len, size_t step)
{
    struct decoded one, bytewise, stepped;
    decode(buf, len, 0, &one);
    decode(buf, len, 1, &bytewise);
    decode(buf, len, step, &stepped);
    CHECK(one.out_len <= len);
    CHECK(one.rc == bytewise.rc && one.rc == stepped.rc);
    if (one.rc == SESAME_OK) {
        CHECK(one.consumed == bytewise.consumed && one.consumed == stepped.consumed);
        CHECK(one.consumed >= 5);
        CHECK(memcmp(buf + one.consumed - 2, "\r\n", 2) == 0);
    }
    if (one.rc != SESAME_ERROR) {
        CHECK(one.out_len == bytewise.out_len && one.out_len == stepped.out_len);
        CHECK(one.hash == bytewise.hash && one.hash == stepped.hash);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exactly sized copy so that ASan sees any read past the end. */
    char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL)
        return 0;
    if (size > 0)
        memcpy(buf, data, size);
    size_t split = size > 0 ? (size_t)data[0] * 7 % size : 0;
    size_t step = size > 1 ? 1 + (size_t)data[size - 1] % 13 : 1;

    fuzz_request(buf, size, NULL, SESAME_HTTP_DEFAULT_MAX_HEADER_SIZE, split);
    fuzz_request(buf, size, &small_limits, small_limits.max_header_size, split);
    fuzz_response(buf, size, NULL, SESAME_HTTP_DEFAULT_MAX_HEADER_SIZE, split);
    fuzz_response(buf, size, &small_limits, small_limits.max_header_size, split);
    fuzz_chunked(buf, size, step);
    /* A body after a valid head is fed to the chunked decoder too. */
    if (sesame_http_parse_request(buf, size, NULL, &req_a) == SESAME_OK && req_a.h.chunked)
        fuzz_chunked(buf + req_a.h.head_len, size - req_a.h.head_len, step);
    free(buf);
    return 0;
}

#ifdef SESAME_FUZZ_STANDALONE
#define SESAME_FUZZ_CORPUS "http"
#include "standalone.h"
#endif
