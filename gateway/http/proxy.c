#include "http/proxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "core/worker.h"
#include "http/tls.h"
#include "http/tunnel.h"

#define HIGH_WATER (1024 * 1024)
#define LOW_WATER (256 * 1024)
#define MAX_RESPONSE_HEAD (64 * 1024)

/* ------------------------------------------------------------------------
 * Pool
 */

struct upconn {
    struct bufferevent *bev;
    struct bucket *bucket;
    struct upconn *next;          /* in the bucket's idle list */
    struct upconn *prev;
};

struct bucket {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool tls;
    char *tls_name;               /* certificate name checked, NULL for plain */
    char *ca_file;                /* NULL: system store */
    struct upconn *idle;
    size_t nidle;
    struct bucket *next;
    struct sesame_upstream_pool *pool;
};

/* TLS client contexts, one per CA file (NULL: the system store). */
struct tls_ctx {
    char *ca_file;
    SSL_CTX *ctx;
    struct tls_ctx *next;
};

struct sesame_upstream_pool {
    struct event_base *base;
    struct bucket *buckets;
    struct tls_ctx *tls;
    uint64_t opened;
};

struct sesame_upstream_pool *
sesame_upstream_pool_new(struct event_base *base)
{
    struct sesame_upstream_pool *p = sesame_calloc(1, sizeof(*p));
    p->base = base;
    return p;
}

static void
upconn_free(struct upconn *u)
{
    if (u == NULL)
        return;
    bufferevent_free(u->bev);
    free(u);
}

static void
idle_unlink(struct upconn *u)
{
    struct bucket *b = u->bucket;
    if (u->prev)
        u->prev->next = u->next;
    else
        b->idle = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    b->nidle--;
    sesame_metrics_gauge_add(SESAME_M_UPSTREAM_POOL_IDLE, -1);
}

void
sesame_upstream_pool_free(struct sesame_upstream_pool *pool)
{
    if (pool == NULL)
        return;
    struct bucket *b = pool->buckets;
    while (b) {
        struct bucket *nb = b->next;
        while (b->idle) {
            struct upconn *u = b->idle;
            idle_unlink(u);
            upconn_free(u);
        }
        free(b->tls_name);
        free(b->ca_file);
        free(b);
        b = nb;
    }
    while (pool->tls) {
        struct tls_ctx *t = pool->tls;
        pool->tls = t->next;
        SSL_CTX_free(t->ctx);
        free(t->ca_file);
        free(t);
    }
    free(pool);
}

uint64_t
sesame_upstream_pool_opened(const struct sesame_upstream_pool *pool)
{
    return pool ? pool->opened : 0;
}

static bool
str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static struct bucket *
bucket_for(struct sesame_upstream_pool *pool, const struct sesame_upstream_addr *u)
{
    for (struct bucket *b = pool->buckets; b; b = b->next)
        if (b->addrlen == u->addrlen && memcmp(&b->addr, &u->addr, u->addrlen) == 0 &&
            b->tls == u->tls && (!u->tls || (str_eq(b->tls_name, u->tls_name) &&
                                              str_eq(b->ca_file, u->ca_file))))
            return b;
    struct bucket *b = sesame_calloc(1, sizeof(*b));
    memcpy(&b->addr, &u->addr, u->addrlen);
    b->addrlen = u->addrlen;
    b->tls = u->tls;
    if (u->tls) {
        b->tls_name = sesame_strdup(u->tls_name);
        b->ca_file = u->ca_file ? sesame_strdup(u->ca_file) : NULL;
    }
    b->pool = pool;
    b->next = pool->buckets;
    pool->buckets = b;
    return b;
}

/* The TLS client context for ca_file: TLS 1.2 or later, peer certificate
 * always verified (there is no switch to turn that off). */
static SSL_CTX *
tls_ctx_for(struct sesame_upstream_pool *pool, const char *ca_file)
{
    for (struct tls_ctx *t = pool->tls; t; t = t->next)
        if (str_eq(t->ca_file, ca_file))
            return t->ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        sesame_log_error("upstream TLS: cannot load the CA %s", ca_file ? ca_file : "store");
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct tls_ctx *t = sesame_calloc(1, sizeof(*t));
    t->ca_file = ca_file ? sesame_strdup(ca_file) : NULL;
    t->ctx = ctx;
    t->next = pool->tls;
    pool->tls = t;
    return ctx;
}

/* An idle connection that receives anything (EOF, data) or times out is dropped. */
static void
idle_readcb(struct bufferevent *bev, void *arg)
{
    struct upconn *u = arg;
    idle_unlink(u);
    upconn_free(u);
}

static void
idle_eventcb(struct bufferevent *bev, short what, void *arg)
{
    idle_readcb(bev, arg);
}

static void
pool_put(struct upconn *u, const struct sesame_conf *conf)
{
    struct bucket *b = u->bucket;
    if (b->nidle >= conf->server.upstream_pool_size) {
        upconn_free(u);
        return;
    }
    bufferevent_setcb(u->bev, idle_readcb, NULL, idle_eventcb, u);
    struct timeval tv = sesame_util_timeval_ms(conf->server.upstream_idle_timeout_ms);
    bufferevent_set_timeouts(u->bev, &tv, NULL);
    bufferevent_setwatermark(u->bev, EV_READ, 0, 0);
    bufferevent_enable(u->bev, EV_READ);
    u->next = b->idle;
    u->prev = NULL;
    if (b->idle)
        b->idle->prev = u;
    b->idle = u;
    b->nidle++;
    sesame_metrics_gauge_add(SESAME_M_UPSTREAM_POOL_IDLE, 1);
}

/* Whether the peer closed an idle connection (or sent unexpected bytes). */
static bool
still_alive(struct upconn *u)
{
    char c;
    evutil_socket_t fd = bufferevent_getfd(u->bev);
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Takes an idle connection to addr, or opens one. An idle connection the
 * upstream closed is normally seen by its read callback and dropped; when
 * `probe` is set (a request with a body, which cannot be retried on another
 * connection) the socket is also probed for a close not yet processed. */
static struct upconn *
pool_get(struct sesame_upstream_pool *pool, const struct sesame_upstream_addr *addr, bool probe,
         bool *reused)
{
    struct bucket *b = bucket_for(pool, addr);
    while (b->idle) {
        struct upconn *u = b->idle;
        idle_unlink(u);
        if (evbuffer_get_length(bufferevent_get_input(u->bev)) == 0 && (!probe || still_alive(u))) {
            *reused = true;
            return u;
        }
        upconn_free(u);
    }
    struct bufferevent *bev;
    if (addr->tls) {
        SSL_CTX *ctx = tls_ctx_for(pool, addr->ca_file);
        SSL *ssl = ctx ? SSL_new(ctx) : NULL;
        if (ssl == NULL)
            return NULL;
        unsigned char ip[16];
        bool literal = inet_pton(AF_INET, addr->tls_name, ip) == 1 ||
                       inet_pton(AF_INET6, addr->tls_name, ip) == 1;
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), addr->tls_name)
                         : (SSL_set_tlsext_host_name(ssl, addr->tls_name) == 1 &&
                            SSL_set1_host(ssl, addr->tls_name) == 1);
        if (!ok) {
            SSL_free(ssl);
            return NULL;
        }
        bev = bufferevent_openssl_socket_new(pool->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev) /* a response read until close may end without close_notify */
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(pool->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL)
        return NULL;
    if (bufferevent_socket_connect(bev, (const struct sockaddr *)&addr->addr, (int)addr->addrlen) != 0) {
        bufferevent_free(bev);
        return NULL;
    }
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct upconn *u = sesame_calloc(1, sizeof(*u));
    u->bev = bev;
    u->bucket = b;
    pool->opened++;
    sesame_metrics_inc(SESAME_M_UPSTREAM_OPENED);
    *reused = false;
    return u;
}

/* ------------------------------------------------------------------------
 * Proxy state
 */

enum body_kind { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

enum up_state { UP_CONNECTING, UP_WAIT_HEAD, UP_BODY, UP_DONE };

struct sesame_proxy {
    struct sesame_req *req;
    struct sesame_worker *worker;
    struct upconn *up;
    bool reused;
    bool retried;
    enum up_state state;
    /* request body, client -> upstream */
    enum body_kind req_body;
    uint64_t req_remaining;
    uint64_t req_total;
    struct sesame_http_chunked req_chunked;
    bool req_body_done;
    /* response, upstream -> client */
    struct sesame_http_response *resp;
    char *resp_head;
    enum body_kind resp_body;
    uint64_t resp_remaining;
    struct sesame_http_chunked resp_chunked;
    bool client_chunked;          /* re-encode the response as chunked for the client */
    bool upstream_reusable;
    bool got_bytes;               /* any response byte received */
    struct evbuffer *staging;     /* response bytes produced by one callback, sent together */
    uint64_t start_us;            /* forwarding started, for the upstream duration */
    bool websocket;               /* a WebSocket handshake (sesame_proxy_upgrade) */
    struct sesame_tunnel *tunnel; /* after the upstream's 101 (http/tunnel.h) */
};

static void up_readcb(struct bufferevent *bev, void *arg);
static void up_writecb(struct bufferevent *bev, void *arg);
static void up_eventcb(struct bufferevent *bev, short what, void *arg);
static void client_readcb(struct bufferevent *bev, void *arg);
static void client_writecb(struct bufferevent *bev, void *arg);
static void client_eventcb(struct bufferevent *bev, short what, void *arg);
static void send_request(struct sesame_proxy *p);

static void
proxy_release(struct sesame_proxy *p, bool keep_upstream)
{
    if (p->up) {
        if (keep_upstream && p->req && p->req->conf)
            pool_put(p->up, p->req->conf);
        else
            upconn_free(p->up);
        p->up = NULL;
    }
    sesame_tunnel_free(p->tunnel);
    free(p->resp);
    free(p->resp_head);
    if (p->staging)
        evbuffer_free(p->staging);
    free(p);
}

/* Sends what the current callback produced for the client. */
static void
flush_client(struct sesame_proxy *p)
{
    if (evbuffer_get_length(p->staging) > 0)
        sesame_server_send(p->req, p->staging);
}

void
sesame_proxy_abort(struct sesame_req *req)
{
    struct sesame_proxy *p = req->proxy;
    if (p == NULL)
        return;
    req->proxy = NULL;
    proxy_release(p, false);
}

/* Ends the proxied request. */
static void
finish(struct sesame_proxy *p, bool keep_upstream)
{
    struct sesame_req *req = p->req;
    req->proxy = NULL;
    struct bufferevent *cb = sesame_server_client_bev(req);
    if (cb) {
        bufferevent_setwatermark(cb, EV_WRITE, 0, 0);
        bufferevent_setcb(cb, NULL, NULL, NULL, NULL);
    }
    proxy_release(p, keep_upstream && !req->aborted);
    sesame_server_request_done(req);
}

/* Fails before the response head reached the client: error page. */
static void
fail(struct sesame_proxy *p, int status, const char *why)
{
    struct sesame_req *req = p->req;
    sesame_log_warn("request %s: tenant %s route %s: upstream %s: %s", req->request_id,
                    req->route ? req->route->tenant->name : "?", req->route ? req->route->name : "?",
                    req->route ? req->route->upstream.text : "?", why);
    if (status == 502 && p->state == UP_CONNECTING && req->route)
        sesame_metrics_add(SESAME_M_UPSTREAM_CONNECT_ERRORS, req->route->tenant->name,
                           req->route->name, NULL, 1);
    if (req->head_sent || req->aborted) {
        req->close_after = true;
        finish(p, false);
        return;
    }
    req->proxy = NULL;
    struct bufferevent *cb = sesame_server_client_bev(req);
    if (cb) {
        bufferevent_setwatermark(cb, EV_WRITE, 0, 0);
        bufferevent_setcb(cb, NULL, NULL, NULL, NULL);
        bufferevent_disable(cb, EV_READ);
    }
    if (!p->req_body_done && p->req_body != BODY_NONE)
        req->close_after = true;
    proxy_release(p, false);
    sesame_server_respond_error(req, status, NULL);
}

void
sesame_proxy_client_gone(struct sesame_req *req)
{
    struct sesame_proxy *p = req->proxy;
    if (p == NULL)
        return;
    finish(p, false);
}

/* ------------------------------------------------------------------------
 * Request head
 */

static bool
name_is(const struct sesame_http_header *h, const char *lit)
{
    return sesame_util_ascii_ieq(h->name, h->name_len, lit);
}

bool
sesame_proxy_header_has_prefix(const char *name, size_t len, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (len < pl)
        return false;
    for (size_t i = 0; i < pl; i++) {
        char a = name[i] == '_' ? '-' : name[i];
        char b = prefix[i] == '_' ? '-' : prefix[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (char)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

static bool
listed_in_connection(const struct sesame_http_head *h, const struct sesame_http_header *hd)
{
    for (size_t i = 0; i < h->nconnection_tokens; i++)
        if (h->connection_tokens[i].n == hd->name_len &&
            strncasecmp(h->connection_tokens[i].p, hd->name, hd->name_len) == 0)
            return true;
    return false;
}

static bool
hop_by_hop(const struct sesame_http_header *h)
{
    static const char *names[] = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                                  "transfer-encoding", "upgrade", "proxy-authorization",
                                  "proxy-authenticate", "content-length"};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(names); i++)
        if (name_is(h, names[i]))
            return true;
    return false;
}

/* Copies a Cookie header without Sésame's own cookies (the session cookie
 * and every cookie whose name starts with "<session cookie name>_"). */
static void
add_filtered_cookie(struct evbuffer *out, const struct sesame_http_header *h, const char *cname)
{
    size_t cl = strlen(cname);
    const char *p = h->value, *end = h->value + h->value_len;
    bool first = true;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi ? semi : end;
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        size_t nlen = eq ? (size_t)(eq - s) : (size_t)(e - s);
        while (nlen > 0 && (s[nlen - 1] == ' ' || s[nlen - 1] == '\t'))
            nlen--;
        bool ours = (nlen == cl && memcmp(s, cname, cl) == 0) ||
                    (nlen > cl && memcmp(s, cname, cl) == 0 && s[cl] == '_');
        if (!ours && e > s) {
            if (first)
                evbuffer_add(out, "Cookie: ", 8);
            else
                evbuffer_add(out, "; ", 2);
            evbuffer_add(out, s, (size_t)(e - s));
            first = false;
        }
        p = semi ? semi + 1 : end;
    }
    if (!first)
        evbuffer_add(out, "\r\n", 2);
}

static void
build_request_head(struct sesame_proxy *p, struct evbuffer *out)
{
    struct sesame_req *req = p->req;
    const struct sesame_http_request *m = &req->msg;
    const struct sesame_conf_route *route = req->route;
    const struct sesame_conf *conf = req->conf;
    bool trusted = conf->server.ntrusted_proxies > 0 &&
                   sesame_conf_is_trusted_proxy(conf, sesame_server_peer(req));
    const char *cookie = conf->session.cookie_name;

    /* The request line carries the canonical path Sésame decided on (and the
     * query as sent), always in origin form. */
    evbuffer_add(out, m->method_text, m->method_len);
    evbuffer_add(out, " ", 1);
    evbuffer_add(out, req->canon.path, req->canon.path_len);
    if (m->query) {
        evbuffer_add(out, "?", 1);
        evbuffer_add(out, m->query, m->query_len);
    }
    evbuffer_add(out, " HTTP/1.1\r\n", 11);

    const struct sesame_http_header *xff = NULL, *xfp = NULL, *xfh = NULL;
    for (size_t i = 0; i < m->h.nheaders; i++) {
        const struct sesame_http_header *h = &m->h.headers[i];
        if (hop_by_hop(h) || listed_in_connection(&m->h, h))
            continue;
        /* Names with '_' are dropped (as nginx does by default): CGI-style
         * upstreams map '-' and '_' to the same variable, so X_Forwarded_For
         * or X_Sesame_Account would pass for the headers Sésame sets. */
        if (memchr(h->name, '_', h->name_len) != NULL)
            continue;
        if (sesame_proxy_header_has_prefix(h->name, h->name_len, route->header_prefix) ||
            sesame_proxy_header_has_prefix(h->name, h->name_len, "X-Sesame-"))
            continue;
        if (name_is(h, "x-forwarded-for")) {
            if (trusted && xff == NULL)
                xff = h;
            continue;
        }
        if (name_is(h, "x-forwarded-proto")) {
            if (trusted && xfp == NULL)
                xfp = h;
            continue;
        }
        if (name_is(h, "x-forwarded-host")) {
            if (trusted && xfh == NULL)
                xfh = h;
            continue;
        }
        if (name_is(h, "forwarded") || name_is(h, "x-request-id") || name_is(h, "x-real-ip") ||
            name_is(h, "expect") || name_is(h, "via"))
            continue;
        if (name_is(h, "host"))
            continue; /* exactly one Host, written below from the canonical authority */
        if (name_is(h, "cookie") && !route->keep_cookie) {
            add_filtered_cookie(out, h, cookie);
            continue;
        }
        evbuffer_add(out, h->name, h->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (!route->preserve_host)
        evbuffer_add_printf(out, "Host: %s\r\n", route->upstream.host);
    else
        evbuffer_add_printf(out, "Host: %.*s\r\n", (int)req->canon.authority_len, req->canon.authority);
    if (xff)
        evbuffer_add_printf(out, "X-Forwarded-For: %.*s, %s\r\n", (int)xff->value_len, xff->value,
                            req->client_ip);
    else
        evbuffer_add_printf(out, "X-Forwarded-For: %s\r\n", req->client_ip);
    if (xfp)
        evbuffer_add_printf(out, "X-Forwarded-Proto: %.*s\r\n", (int)xfp->value_len, xfp->value);
    else
        evbuffer_add_printf(out, "X-Forwarded-Proto: %s\r\n", req->tls ? "https" : "http");
    if (xfh)
        evbuffer_add_printf(out, "X-Forwarded-Host: %.*s\r\n", (int)xfh->value_len, xfh->value);
    else
        evbuffer_add_printf(out, "X-Forwarded-Host: %.*s\r\n", (int)req->canon.authority_len,
                            req->canon.authority);
    evbuffer_add_printf(out, "X-Request-Id: %s\r\n", req->request_id);
    if (conf->server.via)
        evbuffer_add(out, "Via: 1.1 sesame\r\n", 17);
    if (p->req_body == BODY_LENGTH)
        evbuffer_add_printf(out, "Content-Length: %llu\r\n", (unsigned long long)p->req_remaining);
    else if (p->req_body == BODY_CHUNKED)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    if (p->websocket)
        evbuffer_add(out, "Connection: Upgrade\r\nUpgrade: websocket\r\n", 41);
    if (req->upstream_headers)
        evbuffer_add(out, evbuffer_pullup(req->upstream_headers, -1),
                     evbuffer_get_length(req->upstream_headers)); /* kept for a retry */
    evbuffer_add(out, "\r\n", 2);
}

/* ------------------------------------------------------------------------
 * Request body, client -> upstream
 */

static void
body_too_large(struct sesame_proxy *p)
{
    struct sesame_req *req = p->req;
    sesame_log_info("request %s: body larger than max_body_size", req->request_id);
    req->close_after = true;
    if (req->head_sent) {
        finish(p, false);
        return;
    }
    req->proxy = NULL;
    struct bufferevent *cb = sesame_server_client_bev(req);
    if (cb) {
        bufferevent_setcb(cb, NULL, NULL, NULL, NULL);
        bufferevent_disable(cb, EV_READ);
    }
    proxy_release(p, false);
    sesame_server_respond_error(req, 413, NULL);
}

/* Moves what the client sent of the body to the upstream. Returns false
 * when the proxy was finished (the caller must not touch p). */
static bool
pump_request_body(struct sesame_proxy *p)
{
    struct bufferevent *cb = sesame_server_client_bev(p->req);
    if (cb == NULL || p->req_body_done || p->up == NULL)
        return true;
    struct evbuffer *in = bufferevent_get_input(cb);
    struct evbuffer *out = bufferevent_get_output(p->up->bev);
    uint64_t max = p->req->conf->server.max_body_size;
    if (p->req_body == BODY_LENGTH) {
        size_t n = evbuffer_get_length(in);
        if (n > p->req_remaining)
            n = (size_t)p->req_remaining;
        if (n > 0) {
            evbuffer_remove_buffer(in, out, n);
            p->req_remaining -= n;
        }
        if (p->req_remaining == 0)
            p->req_body_done = true;
    } else if (p->req_body == BODY_CHUNKED) {
        for (;;) {
            size_t avail = evbuffer_get_length(in);
            if (avail == 0)
                break;
            size_t take = avail < 65536 ? avail : 65536;
            const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)take);
            size_t consumed = 0, off = 0, dlen = 0;
            int rc = sesame_http_chunked_feed(&p->req_chunked, data, take, &consumed, &off, &dlen);
            if (rc == SESAME_ERROR) {
                sesame_log_info("request %s: malformed chunked request body", p->req->request_id);
                struct sesame_req *req = p->req;
                req->close_after = true;
                if (!req->head_sent) {
                    req->proxy = NULL;
                    bufferevent_setcb(cb, NULL, NULL, NULL, NULL);
                    bufferevent_disable(cb, EV_READ);
                    proxy_release(p, false);
                    sesame_server_respond_error(req, 400, NULL);
                } else {
                    finish(p, false);
                }
                return false;
            }
            if (dlen > 0) {
                p->req_total += dlen;
                if (p->req_total > max) {
                    body_too_large(p);
                    return false;
                }
                evbuffer_add_printf(out, "%zx\r\n", dlen);
                evbuffer_add(out, data + off, dlen);
                evbuffer_add(out, "\r\n", 2);
            }
            evbuffer_drain(in, consumed);
            if (rc == SESAME_OK) {
                evbuffer_add(out, "0\r\n\r\n", 5);
                p->req_body_done = true;
                break;
            }
            if (consumed == 0)
                break;
        }
    }
    if (p->req_body_done) {
        bufferevent_disable(cb, EV_READ);
    } else if (evbuffer_get_length(out) > HIGH_WATER) {
        bufferevent_disable(cb, EV_READ); /* resumed by up_writecb */
    } else {
        bufferevent_enable(cb, EV_READ);
    }
    return true;
}

/* ------------------------------------------------------------------------
 * Response, upstream -> client
 */

static bool
response_header_dropped(const struct sesame_proxy *p, const struct sesame_http_header *h)
{
    if (hop_by_hop(h) || listed_in_connection(&p->resp->h, h))
        return true;
    /* Sésame's HSTS replaces the upstream's; none over plain HTTP (tls.h) */
    if (name_is(h, "strict-transport-security") && (!p->req->tls || sesame_tls_hsts(p->req) != NULL))
        return true;
    if (name_is(h, "set-cookie")) {
        /* An upstream may not set Sésame's own cookies. */
        const char *cname = p->req->conf->session.cookie_name;
        size_t cl = strlen(cname);
        const char *v = h->value;
        size_t vl = h->value_len;
        size_t i = 0;
        while (i < vl && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (vl - i >= cl && memcmp(v + i, cname, cl) == 0 &&
            (i + cl == vl || v[i + cl] == '=' || v[i + cl] == '_' || v[i + cl] == ' '))
            return true;
    }
    return false;
}

static void
write_response_head(struct sesame_proxy *p, struct evbuffer *out)
{
    struct sesame_req *req = p->req;
    const struct sesame_http_response *r = p->resp;
    evbuffer_add_printf(out, "HTTP/1.1 %d %.*s\r\n", r->status, (int)r->reason_len, r->reason);
    for (size_t i = 0; i < r->h.nheaders; i++) {
        const struct sesame_http_header *h = &r->h.headers[i];
        if (response_header_dropped(p, h))
            continue;
        evbuffer_add(out, h->name, h->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    bool client_11 = req->msg.h.version_minor >= 1;
    switch (p->resp_body) {
    case BODY_LENGTH:
        evbuffer_add_printf(out, "Content-Length: %llu\r\n", (unsigned long long)p->resp_remaining);
        break;
    case BODY_CHUNKED:
    case BODY_UNTIL_CLOSE:
        if (client_11) {
            p->client_chunked = true;
            evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
        } else {
            req->close_after = true;
        }
        break;
    case BODY_NONE:
        if (r->status != 204 && r->status != 304 && req->msg.method != SESAME_HTTP_HEAD)
            evbuffer_add(out, "Content-Length: 0\r\n", 19);
        else {
            /* HEAD or 304: pass the upstream's Content-Length through */
            const struct sesame_http_header *cl = sesame_http_find_header(&r->h, "Content-Length");
            if (cl)
                evbuffer_add_printf(out, "Content-Length: %.*s\r\n", (int)cl->value_len, cl->value);
        }
        break;
    }
    if (req->conf->server.via)
        evbuffer_add(out, "Via: 1.1 sesame\r\n", 17);
    const char *hsts = sesame_tls_hsts(req);
    if (hsts)
        evbuffer_add_printf(out, "Strict-Transport-Security: %s\r\n", hsts);
    if (req->response_headers)
        evbuffer_add_buffer(out, req->response_headers);
    if (req->close_after || sesame_server_draining(req))
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (!client_11)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
    sesame_server_head_sent(req, r->status);
}

static void
response_complete(struct sesame_proxy *p)
{
    if (p->client_chunked)
        evbuffer_add(p->staging, "0\r\n\r\n", 5);
    flush_client(p);
    p->state = UP_DONE;
    bool reusable = p->upstream_reusable && p->req_body_done &&
                    evbuffer_get_length(bufferevent_get_input(p->up->bev)) == 0;
    if (!p->req_body_done)
        p->req->close_after = true; /* the rest of the body is still on the client connection */
    finish(p, reusable);
}

/* Moves response body bytes to the client. Returns false when finished. */
static bool
pump_response_body(struct sesame_proxy *p)
{
    struct bufferevent *cb = sesame_server_client_bev(p->req);
    struct evbuffer *in = bufferevent_get_input(p->up->bev);
    if (cb == NULL) {
        finish(p, false);
        return false;
    }
    struct evbuffer *out = p->staging;
    if (p->resp_body == BODY_LENGTH) {
        size_t n = evbuffer_get_length(in);
        if (n > p->resp_remaining)
            n = (size_t)p->resp_remaining;
        if (n > 0) {
            evbuffer_remove_buffer(in, out, n);
            p->resp_remaining -= n;
            p->req->bytes_out += n;
        }
        if (p->resp_remaining == 0) {
            response_complete(p);
            return false;
        }
    } else if (p->resp_body == BODY_CHUNKED) {
        for (;;) {
            size_t avail = evbuffer_get_length(in);
            if (avail == 0)
                break;
            size_t take = avail < 65536 ? avail : 65536;
            const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)take);
            size_t consumed = 0, off = 0, dlen = 0;
            int rc = sesame_http_chunked_feed(&p->resp_chunked, data, take, &consumed, &off, &dlen);
            if (rc == SESAME_ERROR) {
                sesame_log_warn("request %s: upstream sent a malformed chunked body", p->req->request_id);
                p->req->close_after = true;
                finish(p, false);
                return false;
            }
            if (dlen > 0) {
                if (p->client_chunked)
                    evbuffer_add_printf(out, "%zx\r\n", dlen);
                evbuffer_add(out, data + off, dlen);
                if (p->client_chunked)
                    evbuffer_add(out, "\r\n", 2);
                p->req->bytes_out += dlen;
            }
            evbuffer_drain(in, consumed);
            if (rc == SESAME_OK) {
                response_complete(p);
                return false;
            }
            if (consumed == 0)
                break;
        }
    } else if (p->resp_body == BODY_UNTIL_CLOSE) {
        size_t n = evbuffer_get_length(in);
        if (n > 0) {
            if (p->client_chunked)
                evbuffer_add_printf(out, "%zx\r\n", n);
            p->req->bytes_out += n;
            evbuffer_remove_buffer(in, out, n);
            if (p->client_chunked)
                evbuffer_add(out, "\r\n", 2);
        }
    }
    flush_client(p);
    if (evbuffer_get_length(bufferevent_get_output(cb)) > HIGH_WATER)
        bufferevent_disable(p->up->bev, EV_READ); /* resumed by client_writecb */
    return true;
}

/* The upstream accepted the WebSocket handshake: the 101 goes to the client,
 * then the connection is a tunnel until either side closes. */
static void tunnel_end(void *arg, enum sesame_tunnel_end why);

static void
start_tunnel(struct sesame_proxy *p)
{
    struct sesame_req *req = p->req;
    const struct sesame_http_response *r = p->resp;
    const struct sesame_http_header *up = sesame_http_find_header(&r->h, "Upgrade");
    if (up == NULL || !r->h.connection_upgrade ||
        !sesame_util_ascii_ieq(up->value, up->value_len, "websocket")) {
        fail(p, 502, "101 without Upgrade: websocket");
        return;
    }
    struct bufferevent *cb = sesame_server_client_bev(req);
    if (cb == NULL) {
        finish(p, false);
        return;
    }
    req->upstream_ms = sesame_util_mono_ms() - req->start_ms;
    req->close_after = true; /* the connection ends with the tunnel */
    struct evbuffer *out = p->staging;
    evbuffer_add_printf(out, "HTTP/1.1 101 %.*s\r\n", (int)r->reason_len, r->reason);
    for (size_t i = 0; i < r->h.nheaders; i++) {
        const struct sesame_http_header *h = &r->h.headers[i];
        if (response_header_dropped(p, h) || name_is(h, "content-length"))
            continue;
        evbuffer_add(out, h->name, h->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, h->value, h->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    evbuffer_add(out, "Upgrade: websocket\r\nConnection: Upgrade\r\n", 41);
    if (req->response_headers)
        evbuffer_add_buffer(out, req->response_headers);
    evbuffer_add(out, "\r\n", 2);
    sesame_server_head_sent(req, 101);
    flush_client(p);
    struct bufferevent *ub = p->up->bev;
    free(p->up); /* the tunnel owns the connection now; never pooled */
    p->up = NULL;
    p->state = UP_BODY;
    const struct sesame_conf_server *sv = &req->conf->server;
    p->tunnel = sesame_tunnel_start(p->worker->base, req, cb, ub, sv->websocket_idle_timeout_ms,
                                    sv->websocket_recheck_ms, HIGH_WATER, tunnel_end, p);
}

static void
tunnel_end(void *arg, enum sesame_tunnel_end why)
{
    struct sesame_proxy *p = arg;
    static const char *const whys[] = {"the client closed", "the upstream closed", "idle timeout",
                                       "the session is no longer valid"};
    p->req->bytes_out += sesame_tunnel_bytes_out(p->tunnel);
    sesame_log_info("request %s: WebSocket closed: %s (%llu bytes in, %llu out)", p->req->request_id,
                    whys[why], (unsigned long long)sesame_tunnel_bytes_in(p->tunnel),
                    (unsigned long long)sesame_tunnel_bytes_out(p->tunnel));
    p->req->close_after = true;
    finish(p, false);
}

static void
handle_response_head(struct sesame_proxy *p)
{
    struct evbuffer *in = bufferevent_get_input(p->up->bev);
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        size_t n = len < MAX_RESPONSE_HEAD ? len : MAX_RESPONSE_HEAD;
        if (p->resp == NULL)
            p->resp = sesame_malloc(sizeof(*p->resp));
        free(p->resp_head);
        p->resp_head = sesame_malloc(n);
        evbuffer_copyout(in, p->resp_head, n);
        struct sesame_http_limits lim = {MAX_RESPONSE_HEAD, MAX_RESPONSE_HEAD, SESAME_HTTP_MAX_HEADERS};
        memset(p->resp, 0, sizeof(*p->resp));
        int rc = sesame_http_parse_response(p->resp_head, n, &lim, p->resp);
        if (rc == SESAME_AGAIN)
            return;
        if (rc != SESAME_OK) {
            fail(p, 502, p->resp->error_reason ? p->resp->error_reason : "invalid response head");
            return;
        }
        evbuffer_drain(in, p->resp->h.head_len);
        if (p->resp->status >= 100 && p->resp->status < 200) {
            if (p->resp->status == 101 && p->websocket) {
                start_tunnel(p);
                return;
            }
            if (p->resp->status == 101) {
                fail(p, 502, "unexpected 101 Switching Protocols");
                return;
            }
            continue; /* interim responses are not forwarded */
        }
        break;
    }
    struct sesame_req *req = p->req;
    req->upstream_ms = sesame_util_mono_ms() - req->start_ms;
    sesame_metrics_observe_us(SESAME_M_UPSTREAM_DURATION, sesame_metrics_now_us() - p->start_us);
    switch (sesame_http_response_body_kind(p->resp, req->msg.method == SESAME_HTTP_HEAD)) {
    case SESAME_BODY_NONE:
        p->resp_body = BODY_NONE;
        break;
    case SESAME_BODY_LENGTH:
        p->resp_body = BODY_LENGTH;
        p->resp_remaining = (uint64_t)p->resp->h.content_length;
        if (p->resp_remaining == 0)
            p->resp_body = BODY_NONE;
        break;
    case SESAME_BODY_CHUNKED:
        p->resp_body = BODY_CHUNKED;
        sesame_http_chunked_init(&p->resp_chunked);
        break;
    case SESAME_BODY_UNTIL_CLOSE:
        p->resp_body = BODY_UNTIL_CLOSE;
        break;
    }
    p->upstream_reusable = p->resp->h.keep_alive && p->resp_body != BODY_UNTIL_CLOSE;
    struct bufferevent *cb = sesame_server_client_bev(req);
    if (cb == NULL) {
        finish(p, false);
        return;
    }
    if (!p->req_body_done && p->req_body != BODY_NONE) {
        /* The upstream answered before the whole body was sent: stop
         * forwarding, and do not reuse either connection. */
        req->close_after = true;
        p->upstream_reusable = false;
        bufferevent_disable(cb, EV_READ);
    }
    write_response_head(p, p->staging);
    p->state = UP_BODY;
    struct timeval tv = sesame_util_timeval_ms(req->conf->server.upstream_read_timeout_ms);
    bufferevent_set_timeouts(p->up->bev, &tv, NULL);
    if (p->resp_body == BODY_NONE) {
        response_complete(p);
        return;
    }
    pump_response_body(p);
}

/* ------------------------------------------------------------------------
 * Callbacks
 */

static void
up_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_proxy *p = arg;
    p->got_bytes = true;
    if (p->state == UP_CONNECTING)
        p->state = UP_WAIT_HEAD;
    if (p->state == UP_WAIT_HEAD)
        handle_response_head(p);
    else if (p->state == UP_BODY)
        pump_response_body(p);
}

static void
up_writecb(struct bufferevent *bev, void *arg)
{
    struct sesame_proxy *p = arg;
    if (!p->req_body_done && p->state != UP_BODY)
        pump_request_body(p);
}

static bool
can_retry(const struct sesame_proxy *p)
{
    return p->reused && !p->retried && !p->got_bytes && p->req_body == BODY_NONE;
}

static void
up_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct sesame_proxy *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (p->state == UP_CONNECTING)
            p->state = UP_WAIT_HEAD;
        struct timeval tv = sesame_util_timeval_ms(p->req->conf->server.upstream_read_timeout_ms);
        bufferevent_set_timeouts(bev, &tv, NULL);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (p->state == UP_CONNECTING)
            fail(p, 502, "connect timeout");
        else if (p->state == UP_WAIT_HEAD)
            fail(p, 504, "no response within upstream_read_timeout");
        else {
            p->req->close_after = true;
            sesame_log_warn("request %s: upstream stalled while sending the body", p->req->request_id);
            finish(p, false);
        }
        return;
    }
    if (what & BEV_EVENT_EOF && p->state == UP_BODY && p->resp_body == BODY_UNTIL_CLOSE) {
        pump_response_body(p);
        if (p->req->proxy == p) {
            p->upstream_reusable = false;
            response_complete(p);
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (p->state != UP_BODY && can_retry(p)) {
            p->retried = true;
            upconn_free(p->up);
            p->up = NULL;
            send_request(p);
            return;
        }
        if (p->state == UP_BODY) {
            sesame_log_warn("request %s: upstream closed in the middle of the body", p->req->request_id);
            p->req->close_after = true;
            finish(p, false);
            return;
        }
        int err = EVUTIL_SOCKET_ERROR();
        unsigned long tls_err = p->req->route->upstream.tls ? bufferevent_get_openssl_error(bev) : 0;
        char tls_msg[256] = "";
        if (tls_err)
            ERR_error_string_n(tls_err, tls_msg, sizeof(tls_msg));
        fail(p, 502, tls_err                    ? tls_msg
                     : p->state == UP_CONNECTING ? evutil_socket_error_to_string(err)
                                                 : "connection closed before the response");
    }
}

static void
client_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_proxy *p = arg;
    pump_request_body(p);
}

static void
client_writecb(struct bufferevent *bev, void *arg)
{
    struct sesame_proxy *p = arg;
    if (p->state == UP_BODY && p->up)
        bufferevent_enable(p->up->bev, EV_READ);
}

static void
client_eventcb(struct bufferevent *bev, short what, void *arg)
{
    /* Errors on the client side are handled by the server: it detaches the
     * request and calls sesame_proxy_client_gone. Timeouts while reading the
     * body end the request. */
    struct sesame_proxy *p = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        sesame_log_info("request %s: client too slow sending the body", p->req->request_id);
        p->req->close_after = true;
        if (p->req->head_sent)
            finish(p, false);
        else
            fail(p, 408, "client body timeout");
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && p->req_body_done) {
        /* half-close after the whole request: answer, then close */
        p->req->close_after = true;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    /* Same as the server would do on error: */
    p->req->aborted = true;
    p->req->close_after = true;
    finish(p, false);
}

static void
send_request(struct sesame_proxy *p)
{
    struct sesame_req *req = p->req;
    const struct sesame_conf *conf = req->conf;
    p->up = pool_get(p->worker->upstreams, &req->route->upstream, p->req_body != BODY_NONE,
                     &p->reused);
    if (p->up == NULL) {
        fail(p, 502, "cannot open a connection");
        return;
    }
    p->state = p->reused ? UP_WAIT_HEAD : UP_CONNECTING;
    bufferevent_setcb(p->up->bev, up_readcb, up_writecb, up_eventcb, p);
    bufferevent_setwatermark(p->up->bev, EV_WRITE, LOW_WATER, 0);
    uint64_t ms = p->reused ? conf->server.upstream_read_timeout_ms : conf->server.upstream_connect_timeout_ms;
    struct timeval tv = sesame_util_timeval_ms(ms);
    bufferevent_set_timeouts(p->up->bev, &tv, &tv);
    struct evbuffer *head = evbuffer_new();
    build_request_head(p, head);
    if (p->reused && !req->route->upstream.tls) {
        /* connected: written at once; its write event stays off unless
         * something is left to write (EV_WRITE is already enabled on a pooled
         * connection, so queued bytes are written when the socket allows) */
        sesame_server_send_plain(p->up->bev, head);
        bufferevent_enable(p->up->bev, EV_READ);
    } else {
        bufferevent_write_buffer(p->up->bev, head);
        bufferevent_enable(p->up->bev, EV_READ | EV_WRITE);
    }
    evbuffer_free(head);
    if (p->req_body != BODY_NONE)
        pump_request_body(p);
}

void
sesame_proxy_start(struct sesame_req *req)
{
    struct sesame_worker *w = sesame_server_worker(req);
    struct bufferevent *cb = sesame_server_client_bev(req);
    if (w == NULL || cb == NULL) {
        sesame_server_request_done(req);
        return;
    }
    const struct sesame_conf *conf = req->conf;
    struct sesame_proxy *p = sesame_calloc(1, sizeof(*p));
    p->req = req;
    p->worker = w;
    p->staging = evbuffer_new();
    p->start_us = sesame_metrics_now_us();
    if (req->msg.h.chunked) {
        p->req_body = BODY_CHUNKED;
        sesame_http_chunked_init(&p->req_chunked);
    } else if (req->msg.h.content_length > 0) {
        p->req_body = BODY_LENGTH;
        p->req_remaining = (uint64_t)req->msg.h.content_length;
        if (p->req_remaining > conf->server.max_body_size) {
            evbuffer_free(p->staging);
            free(p);
            req->close_after = true;
            sesame_log_info("request %s: Content-Length above max_body_size", req->request_id);
            sesame_server_respond_error(req, 413, NULL);
            return;
        }
    } else {
        p->req_body = BODY_NONE;
    }
    p->req_body_done = p->req_body == BODY_NONE;
    int up = sesame_proxy_upgrade(&req->msg);
    if (up == SESAME_PROXY_UPGRADE_INVALID) {
        evbuffer_free(p->staging);
        free(p);
        req->close_after = true;
        sesame_log_info("request %s: malformed WebSocket handshake", req->request_id);
        sesame_server_respond_error(req, 400, NULL);
        return;
    }
    p->websocket = up == SESAME_PROXY_UPGRADE_WEBSOCKET;
    req->proxy = p;
    if (p->req_body != BODY_NONE) {
        if (req->msg.expect_continue)
            bufferevent_write(cb, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        bufferevent_setcb(cb, client_readcb, client_writecb, client_eventcb, p);
        struct timeval rtv = sesame_util_timeval_ms(conf->server.body_timeout_ms);
        struct timeval wtv = sesame_util_timeval_ms(conf->server.idle_timeout_ms);
        bufferevent_set_timeouts(cb, &rtv, &wtv);
    } else {
        bufferevent_setcb(cb, NULL, client_writecb, client_eventcb, p);
    }
    bufferevent_setwatermark(cb, EV_WRITE, LOW_WATER, 0);
    send_request(p);
}

int
sesame_proxy_upgrade(const struct sesame_http_request *m)
{
    const struct sesame_http_header *up = sesame_http_find_header(&m->h, "Upgrade");
    if (up == NULL || !m->h.connection_upgrade)
        return SESAME_PROXY_UPGRADE_NONE;
    /* only one Upgrade header, naming only "websocket": another protocol
     * (h2c...) is ignored (answered in HTTP/1.1, RFC 9110 7.8) */
    size_t n = 0;
    for (size_t i = 0; i < m->h.nheaders; i++)
        n += sesame_util_ascii_ieq(m->h.headers[i].name, m->h.headers[i].name_len, "upgrade");
    if (n > 1)
        return SESAME_PROXY_UPGRADE_INVALID;
    if (!sesame_util_ascii_ieq(up->value, up->value_len, "websocket"))
        return SESAME_PROXY_UPGRADE_NONE;
    if (m->method != SESAME_HTTP_GET || m->h.version_minor < 1 || m->h.chunked ||
        m->h.content_length > 0 || sesame_http_find_header(&m->h, "Sec-WebSocket-Key") == NULL)
        return SESAME_PROXY_UPGRADE_INVALID;
    return SESAME_PROXY_UPGRADE_WEBSOCKET;
}
