#include "gate/gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <pthread.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/url.h"
#include "core/util.h"
#include "gate/backchannel.h"
#include "gate/flow.h"
#include "gate/forward.h"
#include "gate/hop.h"
#include "gate/identity.h"
#include "gate/ready.h"
#include "gate/replay.h"
#include "gate/runtime.h"
#include "http/proxy.h"
#include "http/tunnel.h"
#include "oidc/httpc.h"
#include "oidc/provider.h"
#include "oidc/refresher.h"
#include "oidc/returnto.h"
#include "pages/page.h"

#define RETIRE_SECONDS 30

static void install_tunnel_check(void);

/* ------------------------------------------------------------------------
 * Per-worker state
 */

struct bundle {
    struct sesame_conf *conf;     /* reference: redis and store borrow it */
    struct sesame_redis *redis;
    struct sesame_session_store *store;
    struct event *retire_timer;
    struct sesame_gate_worker *owner;
    struct bundle *next_retired;
    bool redis_down;              /* counted in SESAME_M_REDIS_DOWN (current bundle only) */
};

struct sesame_gate_worker {
    struct sesame_worker *w;
    struct bundle *cur;
    struct bundle *retired;       /* replaced bundles waiting for their timer */
    struct sesame_httpc *httpc;
};

/* The current bundle's Redis connection state, for readiness. */
static void
bundle_count_down(struct bundle *b, bool down)
{
    if (b->redis_down == down)
        return;
    b->redis_down = down;
    sesame_metrics_gauge_add(SESAME_M_REDIS_DOWN, down ? 1 : -1);
}

static void
redis_state_cb(bool up, void *arg)
{
    bundle_count_down(arg, !up);
}

/* A bundle that is no longer current stops counting. */
static void
bundle_uncount(struct bundle *b)
{
    if (b->redis)
        sesame_redis_set_state_cb(b->redis, NULL, NULL);
    bundle_count_down(b, false);
}

static void
bundle_free(struct bundle *b)
{
    if (b == NULL)
        return;
    bundle_uncount(b);
    if (b->owner) { /* unlink from the retired list */
        struct bundle **pp = &b->owner->retired;
        while (*pp && *pp != b)
            pp = &(*pp)->next_retired;
        if (*pp)
            *pp = b->next_retired;
    }
    sesame_session_store_free(b->store);
    sesame_redis_free(b->redis);
    if (b->retire_timer)
        event_free(b->retire_timer);
    sesame_conf_unref(b->conf);
    free(b);
}

static struct bundle *
bundle_new(struct sesame_worker *w, struct sesame_conf *conf)
{
    struct bundle *b = sesame_calloc(1, sizeof(*b));
    b->conf = sesame_conf_ref(conf);
    if (conf->has_redis) {
        b->redis = sesame_redis_new(w->base, &conf->redis);
        if (b->redis) {
            b->store = sesame_session_store_new(b->redis, conf);
            bundle_count_down(b, !sesame_redis_is_up(b->redis));
            sesame_redis_set_state_cb(b->redis, redis_state_cb, b);
        }
    }
    return b;
}

static void
retire_cb(evutil_socket_t fd, short what, void *arg)
{
    bundle_free(arg);
}

int
sesame_gate_worker_init(struct sesame_worker *w, char **err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_tunnel_check);
    struct sesame_gate_worker *g = sesame_calloc(1, sizeof(*g));
    g->w = w;
    g->cur = bundle_new(w, w->conf);
    if (w->conf->has_redis && g->cur->store == NULL) {
        bundle_free(g->cur);
        free(g);
        return sesame_err_set(err, "cannot create the Redis client or the session store");
    }
    g->httpc = sesame_httpc_new(w->base, err);
    if (g->httpc == NULL) {
        bundle_free(g->cur);
        free(g);
        return SESAME_ERROR;
    }
    w->ext = g;
    return SESAME_OK;
}

void
sesame_gate_worker_reload(struct sesame_worker *w)
{
    struct sesame_gate_worker *g = w->ext;
    if (g == NULL)
        return;
    /* the background refresher follows the providers of the new
     * configuration (idempotent: every worker says it) */
    sesame_refresher_watch(w->conf);
    struct bundle *old = g->cur;
    struct bundle *b = bundle_new(w, w->conf);
    if (w->conf->has_redis && b->store == NULL) {
        sesame_log_error("reload: worker %d cannot create its session store; keeping the previous one",
                         w->id);
        bundle_free(b);
        return;
    }
    g->cur = b;
    bundle_uncount(old);
    /* Operations in flight on the old store finish within the Redis command
     * timeout; it is freed well after that. */
    old->owner = g;
    old->next_retired = g->retired;
    g->retired = old;
    old->retire_timer = evtimer_new(w->base, retire_cb, old);
    struct timeval tv = {RETIRE_SECONDS, 0};
    evtimer_add(old->retire_timer, &tv);
}

void
sesame_gate_worker_free(struct sesame_worker *w)
{
    struct sesame_gate_worker *g = w->ext;
    if (g == NULL)
        return;
    while (g->retired)
        bundle_free(g->retired);
    bundle_free(g->cur);
    sesame_httpc_free(g->httpc);
    free(g);
    w->ext = NULL;
}

struct sesame_session_store *
sesame_gate_store(struct sesame_req *req)
{
    struct sesame_worker *w = sesame_server_worker(req);
    struct sesame_gate_worker *g = w ? w->ext : NULL;
    return g ? g->cur->store : NULL;
}

struct sesame_redis *
sesame_gate_redis(struct sesame_req *req)
{
    struct sesame_worker *w = sesame_server_worker(req);
    struct sesame_gate_worker *g = w ? w->ext : NULL;
    return g && g->cur->store ? g->cur->redis : NULL;
}

struct sesame_httpc *
sesame_gate_httpc(struct sesame_req *req)
{
    struct sesame_worker *w = sesame_server_worker(req);
    struct sesame_gate_worker *g = w ? w->ext : NULL;
    return g ? g->httpc : NULL;
}

/* ------------------------------------------------------------------------
 * Helpers
 */

bool
sesame_gate_is_api(const struct sesame_req *req)
{
    const struct sesame_http_head *h = &req->msg.h;
    if (sesame_http_find_header(h, "X-Requested-With") != NULL)
        return true;
    const struct sesame_http_header *m = sesame_http_find_header(h, "Sec-Fetch-Mode");
    if (m != NULL && !sesame_util_ascii_ieq(m->value, m->value_len, "navigate"))
        return true;
    const struct sesame_http_header *a = sesame_http_find_header(h, "Accept");
    if (a != NULL && a->value_len < 1024) {
        char buf[1024];
        memcpy(buf, a->value, a->value_len);
        buf[a->value_len] = '\0';
        if (strstr(buf, "application/json") != NULL && strstr(buf, "text/html") == NULL)
            return true;
    }
    return false;
}

int
sesame_gate_cookie(const struct sesame_req *req, const char *name, char out[SESAME_SESSION_ID_LEN + 1])
{
    bool found = false;
    out[0] = '\0';
    char v[SESAME_SESSION_ID_LEN + 1];
    for (size_t i = 0; i < req->msg.h.nheaders; i++) {
        const struct sesame_http_header *h = &req->msg.h.headers[i];
        if (!sesame_util_ascii_ieq(h->name, h->name_len, "cookie"))
            continue;
        if (sesame_session_cookie_find(h->value, h->value_len, name, v) != SESAME_OK)
            continue;
        if (found && strcmp(v, out) != 0) {
            out[0] = '\0';
            return SESAME_DECLINED; /* ambiguous */
        }
        memcpy(out, v, sizeof(v));
        found = true;
    }
    return found ? SESAME_OK : SESAME_DECLINED;
}

void
sesame_gate_set_cookie(struct sesame_req *req, const char *name, const char *value, int64_t max_age_s)
{
    char buf[1024];
    if (req->tenant == NULL ||
        sesame_session_set_cookie_header(buf, sizeof(buf), name, value, req->tenant, max_age_s) != SESAME_OK)
        return;
    sesame_server_add_header(&req->response_headers, "Set-Cookie", buf);
}

/* The security headers with form-action extended to `origin` (NULL: the
 * standard one) and a script-src of `script_src` (NULL: none, scripts
 * refused by default-src). Returns a malloc'd header block. */
static char *
security_headers(const char *origin, const char *origin2, const char *script_src)
{
    size_t n;
    const struct sesame_page_header *list = sesame_page_security_header_list(&n);
    char *csp = NULL;
    if (origin) {
        const char *origins[2] = {origin, origin2};
        csp = sesame_page_csp(origins, origin2 ? 2 : 1, NULL);
    }
    struct evbuffer *b = evbuffer_new();
    for (size_t i = 0; i < n; i++) {
        bool is_csp = strcasecmp(list[i].name, "Content-Security-Policy") == 0;
        evbuffer_add_printf(b, "%s: %s", list[i].name, is_csp && csp ? csp : list[i].value);
        if (is_csp && script_src)
            evbuffer_add_printf(b, "; script-src %s", script_src);
        evbuffer_add(b, "\r\n", 2);
    }
    free(csp);
    size_t len = evbuffer_get_length(b);
    char *out = sesame_malloc(len + 1);
    evbuffer_remove(b, out, len);
    out[len] = '\0';
    evbuffer_free(b);
    return out;
}

/* The tenant's name in the URLs of its theme and logo: a territory's
 * without its '@'. */
static const char *
static_name(const struct sesame_conf_tenant *t)
{
    return t->name + (t->is_territory ? 1 : 0);
}

void
sesame_gate_page(struct sesame_req *req, int status, int page_id, struct sesame_page_ctx *ctx)
{
    sesame_gate_page_origin(req, status, page_id, ctx, NULL);
}

void
sesame_gate_page_origin(struct sesame_req *req, int status, int page_id, struct sesame_page_ctx *ctx,
                        const char *form_origin)
{
    const struct sesame_runtime *rt = sesame_runtime_of(req->conf);
    const struct sesame_runtime_tenant *t = req->tenant ? sesame_runtime_tenant(req->conf, req->tenant) : NULL;
    const struct sesame_pages *pages = t ? t->pages : rt->pages;
    char home[1100];
    if (req->tenant) {
        snprintf(home, sizeof(home), "%s/", req->tenant->public_url);
        ctx->tenant = static_name(req->tenant);
        ctx->tenant_name = req->tenant->display_name;
        ctx->tenant_in_sentence = req->tenant->name_in_sentence;
        ctx->accent_color = req->tenant->accent_color;
        ctx->has_logo = t && t->logo;
        ctx->home_url = home;
        ctx->contact_url = req->tenant->contact_url;
        ctx->legal_url = req->tenant->legal_url;
    }
    ctx->prefix = req->conf->server.prefix;
    ctx->request_id = req->request_id;
    struct evbuffer *body = evbuffer_new();
    if (sesame_page_render(pages, (enum sesame_page_id)page_id, ctx, body) != SESAME_OK) {
        evbuffer_free(body);
        sesame_log_error("request %s: cannot render page %d", req->request_id, page_id);
        sesame_server_respond(req, 500, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n", NULL);
        return;
    }
    const char *script_src = sesame_page_script_src((enum sesame_page_id)page_id);
    if (form_origin || script_src) {
        /* a member of a territory: the provider sends the browser on to the
         * territory's host (its post-logout URI), in the same navigation */
        char *headers = security_headers(form_origin,
                                         form_origin && req->tenant && req->tenant->territory
                                             ? req->tenant->territory->public_url
                                             : NULL,
                                         script_src);
        sesame_server_respond(req, status, SESAME_PAGE_CONTENT_TYPE, headers, body);
        free(headers);
    } else {
        sesame_server_respond(req, status, SESAME_PAGE_CONTENT_TYPE, sesame_page_security_headers(), body);
    }
    evbuffer_free(body);
}

void
sesame_gate_error(struct sesame_req *req, int status, const char *reason)
{
    if (sesame_gate_is_api(req) || req->conf->runtime == NULL) {
        const char *msg = reason ? reason : sesame_page_status_title(status);
        json_t *o = json_pack("{s:i, s:s, s:s}", "status", status, "error", msg, "request_id",
                              req->request_id);
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        struct evbuffer *body = evbuffer_new();
        if (text)
            evbuffer_add(body, text, strlen(text));
        free(text);
        sesame_server_respond(req, status, "application/json", "Cache-Control: no-store\r\n", body);
        evbuffer_free(body);
        return;
    }
    struct sesame_page_ctx ctx = {0};
    ctx.reason = reason;
    sesame_gate_page(req, status, sesame_page_for_status(status), &ctx);
}

/* path?query of the current request (canonical path, query as sent), as a
 * return_to value. */
static void
add_return_to(struct evbuffer *out, const struct sesame_req *req)
{
    sesame_url_encode(out, req->canon.path, req->canon.path_len);
    if (req->msg.query) {
        sesame_url_encode(out, "?", 1);
        sesame_url_encode(out, req->msg.query, req->msg.query_len);
    }
}

char *
sesame_gate_return_to(const struct sesame_req *req, const char *rt)
{
    const struct sesame_conf_tenant *t = req->tenant;
    char *safe = sesame_returnto_check(rt, strlen(rt), (const char *const *)t->hosts, t->nhosts,
                                       t->public_url);
    for (size_t i = 0; safe == NULL && i < t->nmembers; i++) {
        const struct sesame_conf_tenant *m = t->members[i];
        safe = sesame_returnto_check(rt, strlen(rt), (const char *const *)m->hosts, m->nhosts,
                                     m->public_url);
        if (safe != NULL && strstr(safe, "://") == NULL) {
            free(safe); /* a path is on the territory's own host: checked above */
            safe = NULL;
        }
    }
    return safe;
}

bool
sesame_gate_route_accepts(const struct sesame_conf_route *r, const char *provider)
{
    if (r == NULL || provider == NULL)
        return false;
    for (size_t i = 0; i < r->nproviders; i++)
        if (strcmp(r->providers[i]->name, provider) == 0)
            return true;
    return false;
}

void
sesame_gate_add_signin_params(struct evbuffer *b, const struct sesame_conf_route *r, const char *acr,
                              bool direct)
{
    if (acr != NULL && acr[0] != '\0') {
        evbuffer_add(b, "&acr=", 5);
        sesame_url_encode(b, acr, strlen(acr));
    }
    if (r == NULL)
        return;
    const struct sesame_conf_provider *one = r->provider;
    if (one == NULL && (r->nproviders == 1 || (direct && r->nproviders > 0)))
        one = r->providers[0];
    if (one != NULL) {
        evbuffer_add(b, "&provider=", 10);
        sesame_url_encode(b, one->name, strlen(one->name));
        return;
    }
    if (r->nproviders > 1) {
        evbuffer_add(b, "&providers=", 11);
        for (size_t i = 0; i < r->nproviders; i++) {
            if (i > 0)
                evbuffer_add(b, "%20", 3);
            sesame_url_encode(b, r->providers[i]->name, strlen(r->providers[i]->name));
        }
    }
}

int
sesame_gate_signin_query_read(const struct sesame_req *req, struct sesame_gate_signin_query *q)
{
    const struct sesame_http_request *m = &req->msg;
    memset(q, 0, sizeof(*q));
    if (!sesame_url_query_unique(m->query, m->query_len) ||
        sesame_url_query_get(m->query, m->query_len, "return_to", q->return_to, sizeof(q->return_to)) ==
            SESAME_ERROR ||
        sesame_url_query_get(m->query, m->query_len, "acr", q->acr, sizeof(q->acr)) == SESAME_ERROR ||
        sesame_url_query_get(m->query, m->query_len, "provider", q->provider, sizeof(q->provider)) ==
            SESAME_ERROR ||
        sesame_url_query_get(m->query, m->query_len, "providers", q->providers, sizeof(q->providers)) ==
            SESAME_ERROR)
        return SESAME_ERROR;
    return SESAME_OK;
}

void
sesame_gate_signin_query_append(struct evbuffer *b, const struct sesame_gate_signin_query *q, bool direct)
{
    if (q->acr[0]) {
        evbuffer_add(b, "&acr=", 5);
        sesame_url_encode(b, q->acr, strlen(q->acr));
    }
    if (q->provider[0] || (direct && q->providers[0])) {
        const char *p = q->provider[0] ? q->provider : q->providers;
        size_t pl = q->provider[0] ? strlen(p) : strcspn(p, " ");
        evbuffer_add(b, "&provider=", 10);
        sesame_url_encode(b, p, pl);
    } else if (q->providers[0]) {
        evbuffer_add(b, "&providers=", 11);
        sesame_url_encode(b, q->providers, strlen(q->providers));
    }
}

char *
sesame_gate_signin_url(struct sesame_req *req, const char *acr, bool direct)
{
    struct evbuffer *b = evbuffer_new();
    if (sesame_hop_needed(req)) {
        char *back = sesame_hop_back_url(req);
        if (back == NULL) {
            evbuffer_free(b);
            return NULL;
        }
        evbuffer_add_printf(b, "%s%ssso?return_to=", sesame_hop_signin_tenant(req)->public_url,
                            req->conf->server.prefix);
        sesame_url_encode(b, back, strlen(back));
        free(back);
    } else {
        evbuffer_add_printf(b, "%s%s%s?return_to=", req->tenant->public_url, req->conf->server.prefix,
                            direct ? "login" : "signin");
        add_return_to(b, req);
    }
    sesame_gate_add_signin_params(b, req->route, acr, direct);
    size_t n = evbuffer_get_length(b);
    char *s = sesame_malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* ------------------------------------------------------------------------
 * Route access
 */

struct access {
    struct sesame_session_op *op;
    bool identified;              /* the identity of a session was passed on */
    sesame_tunnel_check_done done; /* a WebSocket's session check under way */
    void *done_arg;
};

static void
access_free(struct sesame_req *req)
{
    struct access *a = req->ext;
    if (a->op)
        sesame_session_cancel(a->op);
    free(a);
    req->ext = NULL;
    req->ext_free = NULL;
}

/* Sends the citizen to sign in for the route: a browser navigation is
 * redirected, a script gets 401. `acr`: the level the route needs (NULL: the
 * provider's); drop_cookie: the session cookie is dead and is deleted. */
static void
need_signin(struct sesame_req *req, const char *acr, bool drop_cookie, const char *why)
{
    if (drop_cookie)
        sesame_gate_set_cookie(req, req->conf->session.cookie_name, NULL, 0);
    if (req->forward_auth) {
        char *fu = sesame_gate_signin_url(req, acr, !req->tenant->sign_in_page);
        if (fu == NULL)
            sesame_gate_error(req, 500, NULL);
        else
            sesame_forward_signin(req, fu, why);
        free(fu);
        return;
    }
    if (sesame_gate_is_api(req)) {
        sesame_gate_error(req, 401, why);
        return;
    }
    if (sesame_replay_wanted(req)) { /* a form: kept across the sign-in (gate/replay.h) */
        sesame_replay_keep(req, acr, !req->tenant->sign_in_page);
        return;
    }
    char *url = sesame_gate_signin_url(req, acr, !req->tenant->sign_in_page);
    if (url == NULL) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    sesame_server_redirect(req, 302, url);
    free(url);
}

static void
forward(struct sesame_req *req, const struct sesame_session *s)
{
    const struct sesame_conf_route *r = req->route;
    if (s != NULL) {
        if (req->upstream_headers == NULL)
            req->upstream_headers = evbuffer_new();
        sesame_identity_headers(r, s, req->upstream_headers);
        if (r->assertion) {
            const struct sesame_runtime *rt = sesame_runtime_of(req->conf);
            char *err = NULL;
            char *jwt = rt->assertion_key
                            ? sesame_identity_assertion(r, s, rt->assertion_key, time(NULL), &err)
                            : NULL;
            if (jwt == NULL) {
                sesame_log_error("request %s: cannot sign the assertion: %s", req->request_id,
                                 err ? err : "no key");
                free(err);
                sesame_gate_error(req, 500, NULL);
                return;
            }
            evbuffer_add_printf(req->upstream_headers, "%sAssertion: %s\r\n", r->header_prefix, jwt);
            free(jwt);
        }
        if (req->ext_free == access_free)
            ((struct access *)req->ext)->identified = true;
    }
    if (req->forward_auth)
        sesame_forward_allow(req);
    else
        sesame_proxy_start(req);
}

/* Whether session s still lets the citizen use route r (as decide()). */
static bool
still_admitted(const struct sesame_conf_route *r, const struct sesame_session *s)
{
    const struct sesame_cond *failed = NULL;
    return sesame_gate_route_accepts(r, s->provider) &&
           (r->acr == NULL || sesame_jose_acr_rank(s->acr) >= sesame_jose_acr_rank(r->acr)) &&
           sesame_identity_allowed(r, s, time(NULL), &failed);
}

static void
recheck_loaded(int status, struct sesame_session *s, void *arg)
{
    struct sesame_req *req = arg;
    struct access *a = req->ext;
    a->op = NULL;
    /* fail closed: a store that cannot answer cannot say the session lives */
    bool alive = status == SESAME_OK && s != NULL && still_admitted(req->route, s);
    sesame_session_free(s);
    if (!alive)
        sesame_log_info("request %s: WebSocket session %s", req->request_id,
                        status == SESAME_ERROR ? "cannot be checked (store unavailable)"
                                               : "no longer valid");
    a->done(a->done_arg, alive);
}

/* The check of http/tunnel.h: an open WebSocket whose handshake carried an
 * identity is closed once its session is gone or no longer admitted. */
static bool
tunnel_check(struct sesame_req *req, sesame_tunnel_check_done done, void *arg)
{
    if (req->ext_free != access_free || req->route == NULL)
        return false;
    struct access *a = req->ext;
    if (!a->identified || a->op != NULL)
        return false;
    char id[SESAME_SESSION_ID_LEN + 1];
    struct sesame_session_store *st = sesame_gate_store(req);
    if (st == NULL || sesame_gate_cookie(req, req->conf->session.cookie_name, id) != SESAME_OK) {
        done(arg, false);
        return true;
    }
    a->done = done;
    a->done_arg = arg;
    struct sesame_session *s = NULL;
    int rc = sesame_session_load(st, id, req->tenant->name, recheck_loaded, req, &s, &a->op);
    if (rc == SESAME_AGAIN)
        return true;
    a->op = NULL;
    recheck_loaded(rc == SESAME_OK ? SESAME_OK : rc == SESAME_ERROR ? SESAME_ERROR : SESAME_DECLINED, s, req);
    return true;
}

static void
install_tunnel_check(void)
{
    sesame_tunnel_set_check(tunnel_check);
}

/* Decides with the session (NULL: none). Takes no reference. */
static void
decide(struct sesame_req *req, struct sesame_session *s, int status, bool had_cookie)
{
    const struct sesame_conf_route *r = req->route;
    if (status == SESAME_ERROR) {
        if (r->access == SESAME_ACCESS_OPTIONAL) {
            forward(req, NULL);
            return;
        }
        sesame_log_warn("request %s: session store unavailable", req->request_id);
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (s == NULL) {
        if (r->access == SESAME_ACCESS_OPTIONAL) {
            if (had_cookie)
                sesame_gate_set_cookie(req, req->conf->session.cookie_name, NULL, 0);
            forward(req, NULL);
        } else {
            need_signin(req, r->acr, had_cookie, NULL);
        }
        return;
    }
    /* A session proves an identity only for the providers the route accepts,
     * and only at the level it was signed in with. */
    if (!sesame_gate_route_accepts(r, s->provider)) {
        sesame_log_info("request %s: route %s does not accept sessions of provider %s", req->request_id,
                        r->name, s->provider ? s->provider : "?");
        if (r->access == SESAME_ACCESS_OPTIONAL) {
            forward(req, NULL);
            return;
        }
        need_signin(req, r->acr, false, "Ce service demande une connexion avec un autre compte.");
        return;
    }
    const char *need = r->acr;
    if (need && sesame_jose_acr_rank(s->acr) < sesame_jose_acr_rank(need)) {
        if (r->access == SESAME_ACCESS_OPTIONAL) {
            forward(req, NULL);
            return;
        }
        need_signin(req, need, false, "Un niveau de garantie plus élevé est nécessaire.");
        return;
    }
    const struct sesame_cond *failed = NULL;
    if (!sesame_identity_allowed(r, s, time(NULL), &failed)) {
        sesame_log_info("request %s: route %s refused account %s: condition '%s'", req->request_id,
                        r->name, s->account ? s->account : "?", failed ? failed->text : "?");
        sesame_gate_error(req, 403, r->deny_message ? r->deny_message
                                                    : "Vous ne remplissez pas les conditions d'accès à ce service.");
        return;
    }
    forward(req, s);
}

static void
loaded_cb(int status, struct sesame_session *s, void *arg)
{
    struct sesame_req *req = arg;
    struct access *a = req->ext;
    a->op = NULL;
    if (req->aborted) {
        sesame_session_free(s);
        sesame_server_request_done(req);
        return;
    }
    decide(req, status == SESAME_OK ? s : NULL, status == SESAME_ERROR ? SESAME_ERROR : SESAME_OK, true);
    sesame_session_free(s);
}

void
sesame_gate_route(struct sesame_req *req)
{
    const struct sesame_conf_route *r = req->route;
    if (r->access == SESAME_ACCESS_PUBLIC) {
        forward(req, NULL);
        return;
    }
    char id[SESAME_SESSION_ID_LEN + 1];
    if (sesame_gate_cookie(req, req->conf->session.cookie_name, id) != SESAME_OK) {
        decide(req, NULL, SESAME_OK, false);
        return;
    }
    struct sesame_session_store *st = sesame_gate_store(req);
    if (st == NULL) {
        decide(req, NULL, SESAME_ERROR, true);
        return;
    }
    struct access *a = sesame_calloc(1, sizeof(*a));
    req->ext = a;
    req->ext_free = access_free;
    struct sesame_session *s = NULL;
    int rc = sesame_session_load(st, id, req->tenant->name, loaded_cb, req, &s, &a->op);
    if (rc == SESAME_AGAIN)
        return;
    a->op = NULL;
    decide(req, rc == SESAME_OK ? s : NULL, rc == SESAME_ERROR ? SESAME_ERROR : SESAME_OK, true);
    sesame_session_free(s);
}

/* ------------------------------------------------------------------------
 * Internal endpoints
 */

static void
respond_bytes(struct sesame_req *req, int status, const char *type, const char *headers,
              const void *data, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, data, len);
    sesame_server_respond(req, status, type, headers, b);
    evbuffer_free(b);
}

static void
serve_static(struct sesame_req *req, const char *name, size_t n)
{
    const struct sesame_runtime_tenant *t = req->tenant ? sesame_runtime_tenant(req->conf, req->tenant) : NULL;
    char headers[2048];
    const char *theme = "theme/";
    const char *logo = "logo/";
    if (t && n > 6 && memcmp(name, theme, 6) == 0) {
        size_t tl = strlen(static_name(t->conf));
        if (n == 6 + tl + 4 && memcmp(name + 6, static_name(t->conf), tl) == 0 &&
            memcmp(name + 6 + tl, ".css", 4) == 0 && t->theme_css) {
            snprintf(headers, sizeof(headers), "Cache-Control: public, max-age=3600\r\n%s",
                     "X-Content-Type-Options: nosniff\r\n");
            respond_bytes(req, 200, "text/css; charset=utf-8", headers, t->theme_css, t->theme_len);
            return;
        }
    } else if (t && n > 5 && memcmp(name, logo, 5) == 0) {
        size_t tl = strlen(static_name(t->conf));
        if (n == 5 + tl && memcmp(name + 5, static_name(t->conf), tl) == 0 && t->logo) {
            snprintf(headers, sizeof(headers),
                     "Cache-Control: public, max-age=3600\r\nX-Content-Type-Options: nosniff\r\n"
                     "Content-Security-Policy: %s\r\n",
                     t->logo->asset.csp ? t->logo->asset.csp : "default-src 'none'");
            respond_bytes(req, 200, t->logo->asset.content_type, headers, t->logo->asset.data,
                          t->logo->asset.len);
            return;
        }
    } else {
        char asset[128];
        if (n < sizeof(asset)) {
            memcpy(asset, name, n);
            asset[n] = '\0';
            struct sesame_page_asset a;
            const struct sesame_pages *pages = t ? t->pages : sesame_runtime_of(req->conf)->pages;
            if (sesame_page_asset(pages, asset, &a) == SESAME_OK) {
                snprintf(headers, sizeof(headers),
                         "Cache-Control: public, max-age=3600\r\nX-Content-Type-Options: nosniff\r\n"
                         "Content-Security-Policy: %s\r\n",
                         a.csp ? a.csp : "default-src 'none'");
                respond_bytes(req, 200, a.content_type, headers, a.data, a.len);
                return;
            }
        }
    }
    sesame_gate_error(req, 404, NULL);
}

/* Whether `name` is one of the space-separated words of list (NULL or empty
 * list: every name). */
static bool
listed(const char *list, const char *name)
{
    if (list == NULL || list[0] == '\0')
        return true;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && memcmp(p, name, n) == 0)
            return true;
        p = e;
    }
    return false;
}

/* GET <prefix>signin?return_to=&acr=&provider=|providers=: the sign-in page,
 * offering the tenant's providers that the parameters admit (all of them
 * when none is named), each link keeping return_to and acr. */
static void
serve_signin(struct sesame_req *req)
{
    const struct sesame_runtime_tenant *t = sesame_runtime_tenant(req->conf, req->tenant);
    struct sesame_gate_signin_query q;
    if (sesame_gate_signin_query_read(req, &q) != SESAME_OK) {
        sesame_gate_error(req, 400, NULL);
        return;
    }
    const char *acr = q.acr, *one = q.provider, *several = q.providers;
    char *safe = q.return_to[0] ? sesame_gate_return_to(req, q.return_to) : NULL;
    struct sesame_page_provider offered[SESAME_PAGE_MAX_PROVIDERS];
    size_t n = 0;
    bool unavailable = false;
    for (size_t i = 0; i < t->nproviders; i++) {
        bool ok = one[0] ? strcmp(t->providers[i].name, one) == 0 : listed(several, t->providers[i].name);
        if (!ok)
            continue;
        offered[n] = t->providers[i];
        /* a provider whose recent calls failed is shown as momentarily
         * unavailable: a notice and a retry link instead of its button
         * (oidc/provider.h) */
        struct sesame_provider_health hl;
        sesame_provider_health(offered[n].name, &hl);
        offered[n].unavailable = !hl.available;
        unavailable = unavailable || !hl.available;
        n++;
    }
    if (unavailable) { /* the page reloads itself (no script): back when the provider is */
        char refresh[16];
        snprintf(refresh, sizeof(refresh), "%d", 2 * SESAME_PROVIDER_RETRY_AFTER_S);
        sesame_server_add_header(&req->response_headers, "Refresh", refresh);
    }
    struct sesame_page_ctx ctx = {0};
    ctx.return_to = safe ? safe : "/";
    ctx.providers = offered;
    ctx.nproviders = n;
    ctx.acr = acr[0] && sesame_jose_acr_rank(acr) > 0 ? acr : NULL;
    ctx.claims = t->claims;
    ctx.nclaims = t->nclaims;
    /* a territory's page names the communes that will recognise the citizen */
    const char *communes[SESAME_PAGE_MAX_COMMUNES];
    for (size_t i = 0; i < req->tenant->nmembers && ctx.ncommunes < SESAME_PAGE_MAX_COMMUNES; i++)
        communes[ctx.ncommunes++] = req->tenant->members[i]->display_name;
    ctx.communes = communes;
    sesame_gate_page(req, 200, SESAME_PAGE_SIGN_IN, &ctx);
    free(safe);
}

static void
me_loaded(int status, struct sesame_session *s, void *arg)
{
    struct sesame_req *req = arg;
    req->ext = NULL;
    req->ext_free = NULL;
    if (req->aborted) {
        sesame_session_free(s);
        sesame_server_request_done(req);
        return;
    }
    if (status == SESAME_ERROR) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (status != SESAME_OK || s == NULL) {
        sesame_gate_error(req, 401, NULL);
        sesame_session_free(s);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "account", json_string(s->account));
    if (s->acr)
        json_object_set_new(o, "acr", json_string(s->acr));
    if (s->provider)
        json_object_set_new(o, "provider", json_string(s->provider));
    json_object_set_new(o, "claims", s->claims ? json_incref(s->claims) : json_object());
    json_object_set_new(o, "attributes", s->attributes ? json_incref(s->attributes) : json_object());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    sesame_session_free(s);
    respond_bytes(req, 200, "application/json", "Cache-Control: no-store\r\n", text, strlen(text));
    free(text);
}

static void
me_free(struct sesame_req *req)
{
    if (req->ext)
        sesame_session_cancel(req->ext);
    req->ext = NULL;
}

static void
serve_me(struct sesame_req *req)
{
    char id[SESAME_SESSION_ID_LEN + 1];
    struct sesame_session_store *st = sesame_gate_store(req);
    if (st == NULL || sesame_gate_cookie(req, req->conf->session.cookie_name, id) != SESAME_OK) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "{\"status\":401,\"error\":\"not signed in\",\"request_id\":\"%s\"}",
                            req->request_id);
        sesame_server_respond(req, 401, "application/json", "Cache-Control: no-store\r\n", b);
        evbuffer_free(b);
        return;
    }
    struct sesame_session *s = NULL;
    struct sesame_session_op *op = NULL;
    req->ext_free = me_free;
    int rc = sesame_session_load(st, id, req->tenant->name, me_loaded, req, &s, &op);
    if (rc == SESAME_AGAIN) {
        req->ext = op;
        return;
    }
    me_loaded(rc == SESAME_OK ? SESAME_OK : rc == SESAME_ERROR ? SESAME_ERROR : SESAME_DECLINED, s, req);
}

static bool
is(const char *rest, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(rest, lit, n) == 0;
}

void
sesame_gate_internal(struct sesame_req *req, const char *rest, size_t n)
{
    bool get = req->msg.method == SESAME_HTTP_GET || req->msg.method == SESAME_HTTP_HEAD;
    if (is(rest, n, "health")) {
        respond_bytes(req, 200, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n", "ok\n", 3);
        return;
    }
    if (is(rest, n, "ready")) {
        struct evbuffer *b = evbuffer_new();
        int status = sesame_ready_check(req->conf, b);
        sesame_server_respond(req, status, "application/json", "Cache-Control: no-store\r\n", b);
        evbuffer_free(b);
        return;
    }
    if (n > 7 && memcmp(rest, "static/", 7) == 0 && get) {
        serve_static(req, rest + 7, n - 7);
        return;
    }
    if (is(rest, n, "jwks.json") && get) {
        const struct sesame_runtime *rt = sesame_runtime_of(req->conf);
        respond_bytes(req, 200, "application/json", "Cache-Control: public, max-age=300\r\n", rt->jwks_json,
                      rt->jwks_len);
        return;
    }
    if (!req->conf->has_redis) {
        sesame_gate_error(req, 404, NULL);
        return;
    }
    if ((is(rest, n, "signin") || is(rest, n, "login")) && get && sesame_hop_needed(req)) {
        sesame_hop_restart(req);
        return;
    }
    if (is(rest, n, "signin") && get) {
        serve_signin(req);
        return;
    }
    if (is(rest, n, "me") && get) {
        serve_me(req);
        return;
    }
    if (is(rest, n, "login") && get) {
        sesame_flow_login(req);
        return;
    }
    if (is(rest, n, "callback") && get) {
        sesame_flow_callback(req);
        return;
    }
    if (is(rest, n, "logout") && (get || req->msg.method == SESAME_HTTP_POST)) {
        sesame_flow_logout(req);
        return;
    }
    if (is(rest, n, "logout/callback") && get) {
        sesame_flow_logout_callback(req);
        return;
    }
    if (is(rest, n, "frontchannel-logout") && get) {
        sesame_frontchannel_logout(req);
        return;
    }
    if (is(rest, n, "backchannel-logout") && req->msg.method == SESAME_HTTP_POST) {
        sesame_backchannel_logout(req);
        return;
    }
    if (is(rest, n, "resume") && (get || req->msg.method == SESAME_HTTP_POST)) {
        sesame_replay_resume(req);
        return;
    }
    if (is(rest, n, "sso") && get) {
        sesame_hop_sso(req);
        return;
    }
    if (is(rest, n, "hop") && get) {
        sesame_hop_redeem(req);
        return;
    }
    if (is(rest, n, "login") || is(rest, n, "callback") || is(rest, n, "me") || is(rest, n, "signin") ||
        is(rest, n, "logout/callback") || is(rest, n, "jwks.json") || is(rest, n, "sso") ||
        is(rest, n, "hop") || is(rest, n, "resume") || is(rest, n, "backchannel-logout") ||
        is(rest, n, "frontchannel-logout")) {
        sesame_gate_error(req, 405, NULL);
        return;
    }
    sesame_gate_error(req, 404, NULL);
}
