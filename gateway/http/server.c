#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "core/worker.h"
#include "http/canon.h"
#include "http/dispatch.h"
#include "http/ocsp.h"
#include "http/proxy.h"
#include "http/tls.h"

enum timer_phase { PHASE_NONE, PHASE_IDLE, PHASE_HEAD };

/* Input buffered beyond a request head: pipelined requests and body bytes
 * wait there; past it the connection stops reading until it drains. */
#define READ_HIGH_WATER (64 * 1024)

struct sesame_conn {
    struct sesame_server *server;
    struct bufferevent *bev;
    struct sockaddr_storage peer;
    char peer_ip[48];
    bool tls;
    bool redirect;                /* on a redirect listener (http/tls.h) */
    struct event *timer;
    enum timer_phase phase;
    struct sesame_req *req;       /* current request, NULL between requests */
    size_t scanned;               /* input bytes already searched for a line end */
    bool seen_eol;                /* a CR or LF is among them */
    bool closing;                 /* close once the output is flushed */
    unsigned nrequests;
    struct sesame_conn *prev, *next;
};

struct listener {
    struct evconnlistener *l;
    bool tls;
    bool redirect;
};

struct sesame_server {
    struct sesame_worker *worker;
    struct event_base *base;
    struct listener *listeners;
    size_t nlisteners;
    struct sesame_tls *tls;       /* certificates of the tls listeners (http/tls.h) */
    bool ocsp_started;
    struct sesame_conn *conns;    /* doubly linked list of open connections */
    size_t nconns;
    bool draining;
};

static void conn_free(struct sesame_conn *c);
static void conn_process(struct sesame_conn *c);
static void conn_readcb(struct bufferevent *bev, void *arg);
static void conn_eventcb(struct bufferevent *bev, short what, void *arg);

/* ------------------------------------------------------------------------
 * TLS
 */

/* The certificate set is built (and checked) with the configuration's
 * runtime, once for every worker: a reload whose certificates do not load is
 * refused before it gets here. */
int
sesame_server_reload_tls(struct sesame_server *s, const struct sesame_conf *conf, char **err)
{
    struct sesame_tls *t = sesame_dispatch_tls(conf);
    if (t == NULL)
        return SESAME_OK; /* no tls listener in conf: the running set stays */
    sesame_tls_unref(s->tls);
    s->tls = sesame_tls_ref(t);
    return SESAME_OK;
}

/* ------------------------------------------------------------------------
 * Connections
 */

static void
set_phase(struct sesame_conn *c, enum timer_phase phase, uint64_t ms)
{
    c->phase = phase;
    if (phase == PHASE_NONE) {
        evtimer_del(c->timer);
        return;
    }
    struct timeval tv = sesame_util_timeval_ms(ms);
    evtimer_add(c->timer, &tv);
}

static struct sesame_conf *
worker_conf(struct sesame_conn *c)
{
    return c->server->worker->conf;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_conn *c = arg;
    if (c->phase == PHASE_HEAD)
        sesame_log_info("client %s: request head not received within header_timeout, closing",
                        c->peer_ip);
    conn_free(c);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct listener *li = NULL;
    struct sesame_server *s = arg;
    for (size_t i = 0; i < s->nlisteners; i++)
        if (s->listeners[i].l == l)
            li = &s->listeners[i];
    struct sesame_conf *conf = s->worker->conf;
    if (s->draining || li == NULL || s->nconns >= conf->server.max_connections) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct bufferevent *bev;
    if (li->tls) {
        SSL *ssl = sesame_tls_ssl_new(s->tls);
        if (ssl == NULL) {
            evutil_closesocket(fd);
            return;
        }
        bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        evutil_closesocket(fd);
        return;
    }
    struct sesame_conn *c = sesame_calloc(1, sizeof(*c));
    c->server = s;
    c->bev = bev;
    c->tls = li->tls;
    c->redirect = li->redirect;
    memcpy(&c->peer, sa, (size_t)salen < sizeof(c->peer) ? (size_t)salen : sizeof(c->peer));
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer_ip, sizeof(c->peer_ip));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer_ip, sizeof(c->peer_ip));
    else
        snprintf(c->peer_ip, sizeof(c->peer_ip), "unix");
    c->timer = evtimer_new(s->base, timer_cb, c);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    sesame_metrics_gauge_add(SESAME_M_CLIENT_CONNECTIONS, 1);
    bufferevent_setcb(bev, conn_readcb, NULL, conn_eventcb, c);
    struct timeval wtv = sesame_util_timeval_ms(conf->server.idle_timeout_ms);
    bufferevent_set_timeouts(bev, NULL, &wtv);
    bufferevent_setwatermark(bev, EV_READ, 0, conf->server.max_header_size + READ_HIGH_WATER);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    set_phase(c, PHASE_HEAD, conf->server.header_timeout_ms);
}

static void
req_free(struct sesame_req *req)
{
    if (req == NULL)
        return;
    if (req->ext_free)
        req->ext_free(req);
    if (req->proxy)
        sesame_proxy_abort(req);
    if (req->upstream_headers)
        evbuffer_free(req->upstream_headers);
    if (req->response_headers)
        evbuffer_free(req->response_headers);
    sesame_conf_unref(req->conf);
    free(req->body);
    free(req->canon.path); /* authority shares the allocation */
    free(req->head);
    free(req);
}

static void
conn_free(struct sesame_conn *c)
{
    struct sesame_server *s = c->server;
    if (c->req) {
        /* Detach the request first: whoever completes it later (the proxy
         * now, or an asynchronous step) sees req->conn == NULL and only
         * logs and frees it. */
        struct sesame_req *req = c->req;
        c->req = NULL;
        req->conn = NULL;
        req->aborted = true;
        if (req->proxy)
            sesame_proxy_client_gone(req);
        else if (req->body_cb) {
            req->body_cb = NULL;
            sesame_server_request_done(req);
        }
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    sesame_metrics_gauge_add(SESAME_M_CLIENT_CONNECTIONS, -1);
    event_free(c->timer);
    bufferevent_free(c->bev);
    free(c);
    if (s->draining && s->nconns == 0)
        sesame_worker_drained(s->worker);
}

static void
conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct sesame_conn *c = arg;
    if ((what & BEV_EVENT_EOF) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) && c->req != NULL &&
        !c->closing && c->req->body_cb == NULL) {
        /* The client finished sending (half-close) while its request is being
         * answered: answer, then close. */
        c->req->close_after = true;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)) {
        if ((what & BEV_EVENT_ERROR) && c->tls) {
            unsigned long e;
            while ((e = bufferevent_get_openssl_error(bev)) != 0)
                sesame_log_debug("client %s: TLS error %s", c->peer_ip, ERR_reason_error_string(e));
        }
        conn_free(c);
    }
}

#define LINGER_MAX_BYTES (1024 * 1024)
#define LINGER_SECONDS 2

/* Lingering close: after the last response byte, the unread input the
 * client may still be sending is read and discarded for a short while, so
 * that the kernel does not reset the connection and destroy the response
 * before the client reads it. */
static void
linger_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    c->scanned += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->scanned > LINGER_MAX_BYTES)
        conn_free(c);
}

static void
closing_writecb(struct bufferevent *bev, void *arg)
{
    struct sesame_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (c->tls) {
        conn_free(c);
        return;
    }
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    c->scanned = 0;
    bufferevent_setcb(bev, linger_readcb, NULL, conn_eventcb, c);
    struct timeval tv = {LINGER_SECONDS, 0};
    bufferevent_set_timeouts(bev, &tv, NULL);
    bufferevent_enable(bev, EV_READ);
    linger_readcb(bev, c);
}

/* Flushes the output then closes. */
static void
conn_close_after_flush(struct sesame_conn *c)
{
    c->closing = true;
    set_phase(c, PHASE_NONE, 0);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, closing_writecb, conn_eventcb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    /* give a lingering client at most idle_timeout to read what is left */
    struct timeval tv = sesame_util_timeval_ms(worker_conf(c)->server.idle_timeout_ms);
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    closing_writecb(c->bev, c);
}

static void
conn_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_conn *c = arg;
    conn_process(c);
}

static void
make_request_id(struct sesame_req *req, struct sesame_worker *w)
{
    const struct sesame_http_header *h = NULL;
    if (req->conf->server.ntrusted_proxies > 0 &&
        sesame_conf_is_trusted_proxy(req->conf, sesame_server_peer(req)))
        h = sesame_http_find_header(&req->msg.h, "X-Request-Id");
    if (h && h->value_len > 0 && h->value_len <= SESAME_REQUEST_ID_MAX) {
        bool ok = true;
        for (size_t i = 0; i < h->value_len && ok; i++) {
            char ch = h->value[i];
            ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 ch == '-' || ch == '_' || ch == '.';
        }
        if (ok) {
            memcpy(req->request_id, h->value, h->value_len);
            req->request_id[h->value_len] = '\0';
            return;
        }
    }
    snprintf(req->request_id, sizeof(req->request_id), "%s%08llx", w->id_prefix,
             (unsigned long long)++w->request_counter);
}

static void
respond_parse_error(struct sesame_conn *c, struct sesame_req *req)
{
    sesame_log_info("client %s: request refused (%d): %s", c->peer_ip, req->msg.error_status,
                    req->msg.error_reason ? req->msg.error_reason : "invalid request");
    req->close_after = true;
    req->msg.method = SESAME_HTTP_GET; /* the error page has a body */
    sesame_server_respond_error(req, req->msg.error_status ? req->msg.error_status : 400, NULL);
}

/* Whether token t[0..n) (a Connection option, case-insensitive, '_' read as
 * '-') names a header the client may not make hop-by-hop: one that frames
 * the message, chooses its authority, carries the session, or that Sésame
 * itself writes for the upstream. */
static bool
connection_token_forbidden(const char *t, size_t n)
{
    static const char *const exact[] = {"host", "content-length", "transfer-encoding", "cookie",
                                        "forwarded"};
    static const char *const prefixes[] = {"x-forwarded-", "x-sesame-"};
    char low[64];
    if (n >= sizeof(low))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i] == '_' ? '-' : t[i];
        low[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    low[n] = '\0';
    for (size_t i = 0; i < SESAME_ARRAY_LEN(exact); i++)
        if (strcmp(low, exact[i]) == 0)
            return true;
    for (size_t i = 0; i < SESAME_ARRAY_LEN(prefixes); i++)
        if (strncmp(low, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* Builds req->canon from req->msg (see server.h): the canonical path of the
 * target and the one authority of the request (the absolute-form authority
 * when there is one, else the Host header). Returns SESAME_OK, or
 * SESAME_ERROR with *why (static) for a request that must be refused (400):
 * a path that stays ambiguous, an invalid authority, a Connection header
 * naming a protected header. Asterisk and authority forms get no path (the
 * application refuses them). */
static int
canonicalize(struct sesame_req *req, const char **why)
{
    const struct sesame_http_request *m = &req->msg;
    for (size_t i = 0; i < m->h.nconnection_tokens; i++) {
        if (connection_token_forbidden(m->h.connection_tokens[i].p, m->h.connection_tokens[i].n)) {
            *why = "Connection names a protected header";
            return SESAME_ERROR;
        }
    }
    size_t plen = m->path ? m->path_len : 0;
    size_t alen = m->host ? m->host_len : 0;
    req->canon.path = sesame_malloc(plen + 1 + alen + 1);
    req->canon.path[0] = '\0';
    req->canon.authority = req->canon.path + plen + 1;
    req->canon.authority[0] = '\0';
    if (m->path && sesame_canon_path(m->path, m->path_len, req->canon.path, &req->canon.path_len,
                                     why) != SESAME_OK)
        return SESAME_ERROR;
    if (m->host && sesame_canon_host(m->host, m->host_len, req->canon.authority,
                                     &req->canon.authority_len, &req->canon.host_len, why) != SESAME_OK)
        return SESAME_ERROR;
    return SESAME_OK;
}

/* Parses the next request head if one is complete in the input buffer. */
static void
conn_process(struct sesame_conn *c)
{
    if (c->req != NULL || c->closing)
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    struct sesame_conf *conf = worker_conf(c);
    if (c->phase != PHASE_HEAD)
        set_phase(c, PHASE_HEAD, conf->server.header_timeout_ms);
    size_t cap = conf->server.max_header_size + 4;
    size_t n = len < cap ? len : cap;
    struct sesame_http_limits limits = {
        .max_request_line = conf->server.max_request_line,
        .max_header_size = conf->server.max_header_size,
        .max_headers = conf->server.max_headers,
    };
    /* Parse only when it can decide something: a CR or LF arrived since the
     * last attempt, the request line outgrew its limit, or the head reached
     * its limit. A client trickling bytes then costs a search of the new
     * bytes, not a copy and a parse. */
    if (n < cap) {
        bool eol = false;
        if (c->scanned < n) {
            struct evbuffer_ptr start;
            evbuffer_ptr_set(in, &start, c->scanned, EVBUFFER_PTR_SET);
            eol = evbuffer_search(in, "\n", 1, &start).pos >= 0 ||
                  evbuffer_search(in, "\r", 1, &start).pos >= 0;
        }
        c->seen_eol |= eol;
        bool line_too_long = !c->seen_eol && n > conf->server.max_request_line;
        if (!eol && !line_too_long) {
            c->scanned = n;
            return;
        }
    }
    struct sesame_req *req = sesame_calloc(1, sizeof(*req));
    req->conn = c;
    req->conf = sesame_conf_ref(conf);
    req->tls = c->tls;
    req->start_ms = sesame_util_mono_ms();
    req->start_us = sesame_metrics_now_us();
    memcpy(req->client_ip, c->peer_ip, sizeof(req->client_ip));
    req->head = sesame_malloc(n);
    req->head_cap = n;
    evbuffer_copyout(in, req->head, n);
    int rc = sesame_http_parse_request(req->head, n, &limits, &req->msg);
    if (rc == SESAME_AGAIN) {
        c->scanned = n;
        req_free(req);
        return;
    }
    c->req = req;
    c->nrequests++;
    c->scanned = 0;
    c->seen_eol = false;
    make_request_id(req, c->server->worker);
    if (rc != SESAME_OK) {
        evbuffer_drain(in, len);
        respond_parse_error(c, req);
        return;
    }
    evbuffer_drain(in, req->msg.h.head_len);
    set_phase(c, PHASE_NONE, 0);
    bool draining = c->server->draining;
    if (!req->msg.h.keep_alive || draining)
        req->close_after = true;
    const char *why = NULL;
    if (canonicalize(req, &why) != SESAME_OK) {
        sesame_log_info("request %s: client %s: request refused (400): %s", req->request_id, c->peer_ip,
                        why);
        req->close_after = true;
        sesame_server_respond_error(req, 400, NULL);
        return;
    }
    /* Reading stays enabled (no system call per request to toggle it): what
     * the client sends next waits in the input buffer, bounded by the read
     * high-watermark, until this request is done. */
    if (c->redirect)
        sesame_tls_redirect(req);
    else
        sesame_dispatch_request(req);
}

/* ------------------------------------------------------------------------
 * Responses
 */

static const char *
reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

const char *sesame_server_reason(int status);
const char *
sesame_server_reason(int status)
{
    return reason_phrase(status);
}

void
sesame_server_add_header(struct evbuffer **buf, const char *name, const char *value)
{
    if (*buf == NULL)
        *buf = evbuffer_new();
    evbuffer_add_printf(*buf, "%s: %s\r\n", name, value);
}

static bool
request_has_unread_body(const struct sesame_req *req)
{
    return !req->body_consumed && (req->msg.h.chunked || req->msg.h.content_length > 0);
}

static void
body_finish(struct sesame_req *req, int status, int http_status)
{
    struct sesame_conn *c = req->conn;
    if (c) {
        bufferevent_disable(c->bev, EV_READ);
        bufferevent_setcb(c->bev, conn_readcb, NULL, conn_eventcb, c);
    }
    sesame_server_body_cb cb = req->body_cb;
    req->body_cb = NULL;
    if (status != SESAME_OK)
        req->close_after = true;
    cb(req, status, http_status, req->body, req->body_len);
}

static void
body_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_req *req = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t want = (size_t)req->msg.h.content_length - req->body_len;
    size_t n = evbuffer_get_length(in);
    if (n > want)
        n = want;
    evbuffer_remove(in, req->body + req->body_len, n);
    req->body_len += n;
    if (req->body_len == (size_t)req->msg.h.content_length) {
        req->body[req->body_len] = '\0';
        req->body_consumed = true;
        body_finish(req, SESAME_OK, 200);
    }
}

static void
body_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct sesame_req *req = arg;
    struct sesame_conn *c = req->conn;
    if (what & BEV_EVENT_TIMEOUT) {
        body_finish(req, SESAME_ERROR, 408);
        return;
    }
    conn_eventcb(bev, what, c);
}

void
sesame_server_read_body(struct sesame_req *req, size_t max, sesame_server_body_cb cb)
{
    struct sesame_conn *c = req->conn;
    req->body_cb = cb;
    if (c == NULL || req->aborted) {
        req->body_cb = NULL;
        sesame_server_request_done(req);
        return;
    }
    if (req->msg.h.chunked) {
        body_finish(req, SESAME_ERROR, 400);
        return;
    }
    if (req->msg.h.content_length < 0 || (uint64_t)req->msg.h.content_length > max) {
        body_finish(req, SESAME_ERROR, req->msg.h.content_length < 0 ? 400 : 413);
        return;
    }
    req->body = sesame_malloc((size_t)req->msg.h.content_length + 1);
    req->body_len = 0;
    if (req->msg.h.content_length == 0) {
        req->body[0] = '\0';
        req->body_consumed = true;
        body_finish(req, SESAME_OK, 200);
        return;
    }
    if (req->msg.expect_continue)
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    bufferevent_setcb(c->bev, body_readcb, NULL, body_eventcb, req);
    struct timeval tv = sesame_util_timeval_ms(req->conf->server.body_timeout_ms);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        body_readcb(c->bev, req);
}

void
sesame_server_send_plain(struct bufferevent *bev, struct evbuffer *data)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (evbuffer_get_length(out) == 0) {
        evutil_socket_t fd = bufferevent_getfd(bev);
        if (fd >= 0)
            evbuffer_write(data, fd); /* on EAGAIN or an error the rest is queued below */
    }
    if (evbuffer_get_length(data) > 0)
        evbuffer_add_buffer(out, data);
}

void
sesame_server_send(struct sesame_req *req, struct evbuffer *data)
{
    struct sesame_conn *c = req->conn;
    if (c == NULL) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    if (c->tls)
        bufferevent_write_buffer(c->bev, data);
    else
        sesame_server_send_plain(c->bev, data);
}

/* "Date: <IMF-fixdate>\r\n" for now, formatted once per second per thread. */
static const char *
date_header(void)
{
    static _Thread_local time_t last;
    static _Thread_local char line[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        last = now;
    }
    return line;
}

/* Whether the header block `headers` ("Name: value\r\n" lines, may be NULL)
 * has a line for `name` (case-insensitive). */
static bool
has_header_line(const char *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = headers; p && *p;) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':')
            return true;
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return false;
}

void
sesame_server_respond(struct sesame_req *req, int status, const char *content_type,
                      const char *headers, struct evbuffer *body)
{
    if (req->aborted || req->conn == NULL) {
        sesame_server_request_done(req);
        return;
    }
    struct evbuffer *out = evbuffer_new();
    size_t blen = body ? evbuffer_get_length(body) : 0;
    if (request_has_unread_body(req) && req->proxy == NULL)
        req->close_after = true; /* the unread body would be taken for the next request */
    if (sesame_server_draining(req))
        req->close_after = true;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    evbuffer_add(out, date_header(), strlen(date_header()));
    if (content_type)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
    if (status != 204 && status != 304)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", blen);
    if (headers)
        evbuffer_add(out, headers, strlen(headers));
    const char *hsts = sesame_tls_hsts(req);
    if (hsts)
        evbuffer_add_printf(out, "Strict-Transport-Security: %s\r\n", hsts);
    if (status == 503 && !has_header_line(headers, "Retry-After") &&
        !(req->response_headers &&
          evbuffer_search(req->response_headers, "Retry-After:", 12, NULL).pos >= 0))
        evbuffer_add_printf(out, "Retry-After: %d\r\n", SESAME_SERVER_RETRY_AFTER_S);
    if (req->response_headers)
        evbuffer_add_buffer(out, req->response_headers);
    if (req->close_after)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (req->msg.h.version_minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
    if (body && req->msg.method != SESAME_HTTP_HEAD) {
        evbuffer_add_buffer(out, body);
        req->bytes_out = blen;
    } else if (body) {
        evbuffer_drain(body, blen);
    }
    sesame_server_send(req, out);
    evbuffer_free(out);
    req->status = status;
    req->head_sent = true;
    sesame_server_request_done(req);
}

void
sesame_server_redirect(struct sesame_req *req, int status, const char *location)
{
    struct evbuffer *h = NULL;
    sesame_server_add_header(&h, "Location", location);
    sesame_server_add_header(&h, "Cache-Control", "no-store");
    size_t n = evbuffer_get_length(h);
    char *text = sesame_malloc(n + 1);
    evbuffer_remove(h, text, n);
    text[n] = '\0';
    evbuffer_free(h);
    sesame_server_respond(req, status, NULL, text, NULL);
    free(text);
}

void
sesame_server_respond_error(struct sesame_req *req, int status, const char *reason)
{
    sesame_dispatch_error_page(req, status, reason);
}

/* ------------------------------------------------------------------------
 * Request end
 */

static void
access_log(struct sesame_req *req)
{
    if (!sesame_log_access_enabled())
        return;
    char line[3072];
    size_t n = 0;
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    uint64_t dur = sesame_util_mono_ms() - req->start_ms;
    n += (size_t)snprintf(line + n, sizeof(line) - n, "{\"time\":\"%s\",\"request_id\":", ts);
    sesame_log_json_string(line, sizeof(line), &n, req->request_id, strlen(req->request_id));
    n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"client\":\"%s\",\"tenant\":", req->client_ip);
    const char *t = req->tenant ? req->tenant->name : "";
    sesame_log_json_string(line, sizeof(line), &n, t, strlen(t));
    const char *r = req->route ? req->route->name : "";
    n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"route\":");
    sesame_log_json_string(line, sizeof(line), &n, r, strlen(r));
    n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"method\":");
    if (req->msg.method_text)
        sesame_log_json_string(line, sizeof(line), &n, req->msg.method_text,
                               req->msg.method_len > 16 ? 16 : req->msg.method_len);
    else
        n += (size_t)snprintf(line + n, sizeof(line) - n, "\"\"");
    n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"path\":");
    size_t plen = req->msg.path ? req->msg.path_len : 0;
    sesame_log_json_string(line, sizeof(line), &n, req->msg.path ? req->msg.path : "",
                           plen > 1024 ? 1024 : plen);
    if (n < sizeof(line) - 200)
        n += (size_t)snprintf(line + n, sizeof(line) - n,
                              ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%llu,\"upstream_ms\":%llu}",
                              req->status, (unsigned long long)req->bytes_out,
                              (unsigned long long)dur, (unsigned long long)req->upstream_ms);
    sesame_log_access(line, n);
}

/* Counts the request in core/metrics.h: tenant and route names from the
 * configuration, "(sesame)" under the reserved prefix, "(none)" otherwise. */
static void
request_metrics(const struct sesame_req *req)
{
    const char *route = SESAME_METRICS_NONE;
    if (req->route) {
        route = req->route->name;
    } else if (req->tenant && req->canon.path) {
        const char *prefix = req->conf->server.prefix;
        size_t pl = strlen(prefix);
        if (req->canon.path_len >= pl && memcmp(req->canon.path, prefix, pl) == 0)
            route = SESAME_METRICS_ROUTE_INTERNAL;
    }
    sesame_metrics_request(req->tenant ? req->tenant->name : SESAME_METRICS_NONE, route,
                           req->head_sent ? req->status : 0,
                           sesame_metrics_now_us() - req->start_us);
}

void
sesame_server_head_sent(struct sesame_req *req, int status)
{
    req->status = status;
    req->head_sent = true;
}

void
sesame_server_request_done(struct sesame_req *req)
{
    if (req->done)
        return;
    req->done = true;
    access_log(req);
    request_metrics(req);
    struct sesame_conn *c = req->conn;
    if (c == NULL) { /* the connection is already gone */
        req_free(req);
        return;
    }
    c->req = NULL;
    bool close = req->close_after || req->aborted || c->server->draining;
    req_free(req);
    if (close) {
        conn_close_after_flush(c);
        return;
    }
    struct sesame_conf *conf = worker_conf(c);
    bufferevent_setcb(c->bev, conn_readcb, NULL, conn_eventcb, c);
    struct timeval wtv = sesame_util_timeval_ms(conf->server.idle_timeout_ms);
    bufferevent_set_timeouts(c->bev, NULL, &wtv);
    bufferevent_enable(c->bev, EV_READ);
    set_phase(c, PHASE_IDLE, conf->server.idle_timeout_ms);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

struct bufferevent *
sesame_server_client_bev(struct sesame_req *req)
{
    return req->conn ? req->conn->bev : NULL;
}

struct sesame_worker *
sesame_server_worker(struct sesame_req *req)
{
    return req->conn ? req->conn->server->worker : NULL;
}

const struct sockaddr *
sesame_server_peer(const struct sesame_req *req)
{
    return req->conn ? (const struct sockaddr *)&req->conn->peer : NULL;
}

bool
sesame_server_draining(const struct sesame_req *req)
{
    return req->conn && req->conn->server->draining;
}

/* ------------------------------------------------------------------------
 * Server
 */

struct sesame_server *
sesame_server_new(struct sesame_worker *w, struct event_base *base, const struct sesame_conf *conf,
                  char **err)
{
    struct sesame_server *s = sesame_calloc(1, sizeof(*s));
    s->worker = w;
    s->base = base;
    s->listeners = sesame_calloc(conf->server.nlisten, sizeof(*s->listeners));
    bool tls = false;
    for (size_t i = 0; i < conf->server.nlisten; i++)
        tls |= conf->server.listen[i].tls;
    if (tls) {
        if ((s->tls = sesame_tls_ref(sesame_dispatch_tls(conf))) == NULL) {
            sesame_err_set(err, "%s: the TLS certificates are not loaded", conf->path);
            goto fail;
        }
        sesame_ocsp_start();
        s->ocsp_started = true;
    }
    for (size_t i = 0; i < conf->server.nlisten; i++) {
        const struct sesame_listen *l = &conf->server.listen[i];
        struct evconnlistener *el = evconnlistener_new_bind(
            base, accept_cb, s,
            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                LEV_OPT_CLOSE_ON_EXEC,
            1024, (const struct sockaddr *)&l->addr, (int)l->addrlen);
        if (el == NULL) {
            sesame_err_set(err, "%s: listen = %s: cannot listen: %s", conf->path, l->text,
                           strerror(errno));
            goto fail;
        }
        s->listeners[s->nlisteners].l = el;
        s->listeners[s->nlisteners].tls = l->tls;
        s->listeners[s->nlisteners].redirect = l->redirect;
        s->nlisteners++;
    }
    return s;
fail:
    sesame_server_free(s);
    return NULL;
}

void
sesame_server_drain(struct sesame_server *s)
{
    s->draining = true;
    for (size_t i = 0; i < s->nlisteners; i++) {
        evconnlistener_free(s->listeners[i].l);
        s->listeners[i].l = NULL;
    }
    s->nlisteners = 0;
    struct sesame_conn *c = s->conns;
    while (c) {
        struct sesame_conn *next = c->next;
        if (c->req == NULL && !c->closing)
            conn_free(c); /* idle keep-alive connection */
        c = next;
    }
    if (s->nconns == 0)
        sesame_worker_drained(s->worker);
}

size_t
sesame_server_connections(const struct sesame_server *s)
{
    return s ? s->nconns : 0;
}

void
sesame_server_free(struct sesame_server *s)
{
    if (s == NULL)
        return;
    s->draining = false; /* no drained notification while tearing down */
    while (s->conns)
        conn_free(s->conns);
    for (size_t i = 0; i < s->nlisteners; i++)
        if (s->listeners[i].l)
            evconnlistener_free(s->listeners[i].l);
    free(s->listeners);
    sesame_tls_unref(s->tls);
    if (s->ocsp_started)
        sesame_ocsp_stop();
    free(s);
}
