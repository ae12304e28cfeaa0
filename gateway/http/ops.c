#include "http/ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "core/log.h"
#include "core/util.h"
#include "http/parser.h"
#include "http/server.h"

#define OPS_MAX_HEAD 8192
#define OPS_TIMEOUT_MS 5000
#define OPS_MAX_CONNS 64

struct ops_conn {
    struct sesame_ops *ops;
    struct bufferevent *bev;
    bool answered;
    struct ops_conn *prev, *next;
};

struct sesame_ops {
    struct event_base *base;
    struct evconnlistener *l;
    struct sesame_ops_handlers h;
    struct ops_conn *conns;
    size_t nconns;
};

static void
conn_free(struct ops_conn *c)
{
    struct sesame_ops *ops = c->ops;
    if (c->prev)
        c->prev->next = c->next;
    else
        ops->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ops->nconns--;
    bufferevent_free(c->bev);
    free(c);
}

static void
flushed_cb(struct bufferevent *bev, void *arg)
{
    struct ops_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

const char *sesame_server_reason(int status); /* http/server.c */

static void
respond(struct ops_conn *c, int status, const char *type, const char *extra, struct evbuffer *body,
        bool head_only)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = body ? evbuffer_get_length(body) : 0;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\nConnection: close\r\n%s",
                        status, sesame_server_reason(status), type, len, extra ? extra : "");
    if (status == 503)
        evbuffer_add_printf(out, "Retry-After: %d\r\n", SESAME_SERVER_RETRY_AFTER_S);
    evbuffer_add(out, "\r\n", 2);
    if (body && !head_only)
        evbuffer_add_buffer(out, body);
    c->answered = true;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, flushed_cb, NULL, c);
    bufferevent_enable(c->bev, EV_WRITE);
}

static void
respond_text(struct ops_conn *c, int status, const char *extra, const char *text, bool head_only)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    respond(c, status, "text/plain; charset=utf-8", extra, b, head_only);
    evbuffer_free(b);
}

static bool
path_is(const struct sesame_http_request *m, const char *lit)
{
    return m->path != NULL && m->path_len == strlen(lit) && memcmp(m->path, lit, m->path_len) == 0;
}

static void
handle(struct ops_conn *c, const struct sesame_http_request *m)
{
    struct sesame_ops *ops = c->ops;
    bool head = m->method == SESAME_HTTP_HEAD;
    bool known = path_is(m, "/metrics") || path_is(m, "/ready") || path_is(m, "/health");
    if (!known) {
        respond_text(c, 404, NULL, "not found: GET /metrics, /ready or /health\n", head);
        return;
    }
    if (m->method != SESAME_HTTP_GET && !head) {
        respond_text(c, 405, "Allow: GET, HEAD\r\n", "method not allowed\n", false);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (path_is(m, "/metrics")) {
        if (ops->h.metrics)
            ops->h.metrics(body, ops->h.arg);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, body, head);
    } else if (path_is(m, "/ready")) {
        int status = ops->h.ready ? ops->h.ready(body, ops->h.arg) : 200;
        respond(c, status, "application/json", NULL, body, head);
    } else {
        evbuffer_add(body, "ok\n", 3);
        respond(c, 200, "text/plain; charset=utf-8", NULL, body, head);
    }
    evbuffer_free(body);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct ops_conn *c = arg;
    if (c->answered)
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    size_t n = len < OPS_MAX_HEAD ? len : OPS_MAX_HEAD;
    char *buf = sesame_malloc(n);
    evbuffer_copyout(in, buf, n);
    struct sesame_http_request *m = sesame_calloc(1, sizeof(*m));
    struct sesame_http_limits lim = {OPS_MAX_HEAD, OPS_MAX_HEAD, 64};
    int rc = sesame_http_parse_request(buf, n, &lim, m);
    if (rc == SESAME_OK)
        handle(c, m);
    else if (rc != SESAME_AGAIN || len >= OPS_MAX_HEAD)
        respond_text(c, m->error_status ? m->error_status : 400, NULL, "bad request\n", false);
    free(m);
    free(buf);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct sesame_ops *ops = arg;
    if (ops->nconns >= OPS_MAX_CONNS) {
        evutil_closesocket(fd);
        return;
    }
    struct bufferevent *bev = bufferevent_socket_new(ops->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    struct ops_conn *c = sesame_calloc(1, sizeof(*c));
    c->ops = ops;
    c->bev = bev;
    c->next = ops->conns;
    if (ops->conns)
        ops->conns->prev = c;
    ops->conns = c;
    ops->nconns++;
    struct timeval tv = sesame_util_timeval_ms(OPS_TIMEOUT_MS);
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setcb(bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(bev, EV_READ);
}

struct sesame_ops *
sesame_ops_new(struct event_base *base, const struct sesame_listen *addr,
               const struct sesame_ops_handlers *h, char **err)
{
    struct sesame_ops *ops = sesame_calloc(1, sizeof(*ops));
    ops->base = base;
    ops->h = *h;
    ops->l = evconnlistener_new_bind(base, accept_cb, ops,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                     64, (const struct sockaddr *)&addr->addr, (int)addr->addrlen);
    if (ops->l == NULL) {
        sesame_err_set(err, "metrics_listen = %s: cannot listen: %s", addr->text, strerror(errno));
        free(ops);
        return NULL;
    }
    return ops;
}

void
sesame_ops_free(struct sesame_ops *ops)
{
    if (ops == NULL)
        return;
    evconnlistener_free(ops->l);
    while (ops->conns)
        conn_free(ops->conns);
    free(ops);
}
