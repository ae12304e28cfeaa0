#include "gate/hop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "core/log.h"
#include "core/url.h"
#include "core/util.h"
#include "gate/flow.h"
#include "gate/gate.h"
#include "gate/runtime.h"
#include "oidc/jose.h"
#include "oidc/returnto.h"

#define NONCE_LEN SESAME_SESSION_ID_LEN
#define MAX_URL 2100

static const char refused_reason[] =
    "Ce lien de connexion a déjà servi, a expiré ou a été ouvert dans un autre navigateur. "
    "Revenez à la page que vous vouliez consulter et réessayez.";

/* The host name of a "scheme://host[:port]" URL into out; false if malformed. */
static bool
url_host(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return false;
    p += 3;
    size_t n = strcspn(p, ":/?#");
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        out[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] - 'A' + 'a') : p[i];
    out[n] = '\0';
    return true;
}

static void
hop_cookie_name(const struct sesame_req *req, char out[128])
{
    snprintf(out, 128, "%s_hop", req->conf->session.cookie_name);
}

const struct sesame_conf_tenant *
sesame_hop_signin_tenant(const struct sesame_req *req)
{
    return req->tenant->territory ? req->tenant->territory : req->tenant;
}

bool
sesame_hop_needed(const struct sesame_req *req)
{
    if (req->tenant != NULL && req->tenant->territory != NULL)
        return true;
    if (req->tenant == NULL || req->tenant->cookie_domain != NULL || req->canon.host_len == 0)
        return false;
    char pub[256];
    if (!url_host(req->tenant->public_url, pub, sizeof(pub)))
        return false;
    return strlen(pub) != req->canon.host_len || memcmp(pub, req->canon.authority, req->canon.host_len) != 0;
}

static char *
drain_string(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = sesame_malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* B for this request's host, hop cookie n and return path r[0..rlen) (at
 * most MAX_URL bytes; carried base64url-encoded so that B stays a plain URL
 * that return_to validation accepts). NULL when r is too long. */
static char *
back_url(const struct sesame_req *req, const char *n, const char *r, size_t rlen)
{
    if (rlen > MAX_URL)
        return NULL;
    const char *pub = req->tenant->public_url;
    const char *sep = strstr(pub, "://");
    char *enc = sesame_malloc(sesame_util_b64url_len(rlen) + 1);
    sesame_util_b64url_encode(enc, r, rlen);
    char *url = sesame_asprintf("%.*s://%s%shop?n=%s&r=%s", (int)(sep - pub), pub, req->canon.authority,
                                req->conf->server.prefix, n, enc);
    free(enc);
    return url;
}

/* Decodes the r parameter (base64url) into out (NUL-terminated); false
 * when malformed or not a safe relative path. */
static bool
decode_r(const char *enc, char out[MAX_URL + 1])
{
    size_t n = strlen(enc);
    if (n == 0 || n > sesame_util_b64url_len(MAX_URL))
        return false;
    long len = sesame_util_b64url_decode(out, enc, n);
    if (len <= 0 || len > MAX_URL)
        return false;
    out[len] = '\0';
    return memchr(out, '\0', (size_t)len) == NULL && sesame_returnto_is_safe_path(out, (size_t)len);
}

char *
sesame_hop_back_url(struct sesame_req *req)
{
    char cname[128], n[NONCE_LEN + 1];
    hop_cookie_name(req, cname);
    if (sesame_gate_cookie(req, cname, n) != SESAME_OK &&
        sesame_util_random_token(n, sizeof(n), 32) != SESAME_OK)
        return NULL;
    sesame_gate_set_cookie(req, cname, n, (int64_t)sesame_util_ms_to_s_ceil(req->conf->session.login_timeout_ms));
    struct evbuffer *r = evbuffer_new();
    evbuffer_add(r, req->canon.path, req->canon.path_len);
    if (req->msg.query) {
        evbuffer_add(r, "?", 1);
        evbuffer_add(r, req->msg.query, req->msg.query_len);
    }
    char *path = drain_string(r);
    size_t plen = strlen(path);
    char *url = plen <= MAX_URL ? back_url(req, n, path, plen) : back_url(req, n, "/", 1);
    free(path);
    return url;
}

void
sesame_hop_restart(struct sesame_req *req)
{
    struct sesame_gate_signin_query q;
    if (sesame_gate_signin_query_read(req, &q) != SESAME_OK) {
        sesame_gate_error(req, 400, NULL);
        return;
    }
    const char *rt = q.return_to;
    const char *r = rt[0] && sesame_returnto_is_safe_path(rt, strlen(rt)) ? rt : "/";
    char cname[128], n[NONCE_LEN + 1];
    hop_cookie_name(req, cname);
    if (sesame_gate_cookie(req, cname, n) != SESAME_OK &&
        sesame_util_random_token(n, sizeof(n), 32) != SESAME_OK) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    sesame_gate_set_cookie(req, cname, n, (int64_t)sesame_util_ms_to_s_ceil(req->conf->session.login_timeout_ms));
    char *back = back_url(req, n, r, strlen(r));
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s%ssso?return_to=", sesame_hop_signin_tenant(req)->public_url,
                        req->conf->server.prefix);
    sesame_url_encode(b, back, strlen(back));
    free(back);
    sesame_gate_signin_query_append(b, &q, false);
    char *loc = drain_string(b);
    sesame_server_redirect(req, 302, loc);
    free(loc);
}

/* ------------------------------------------------------------------------
 * sso: at the sign-in host
 */

struct sso {
    struct sesame_session_op *op;
    const struct sesame_conf_tenant *target; /* the tenant of B: req->tenant, or at a
                                                territory's host one of its members */
    char *back;                      /* B, checked */
    char host[256];                  /* H, lower-case */
    char nonce[NONCE_LEN + 1];
    char sid[SESAME_SESSION_ID_LEN + 1];
    char ticket[NONCE_LEN + 1];
    struct sesame_gate_signin_query q; /* return_to, acr, provider(s) as asked */
};

static void
sso_free(struct sesame_req *req)
{
    struct sso *x = req->ext;
    if (x == NULL)
        return;
    if (x->op)
        sesame_session_cancel(x->op);
    free(x->back);
    free(x);
    req->ext = NULL;
    req->ext_free = NULL;
}

static bool
gone(struct sesame_req *req)
{
    if (!req->aborted)
        return false;
    sesame_server_request_done(req);
    return true;
}

/* No usable session at the sign-in host: the normal sign-in, ending at B. */
static void
sso_signin(struct sesame_req *req, struct sso *x)
{
    bool direct = !req->tenant->sign_in_page;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s%s%s?return_to=", req->tenant->public_url, req->conf->server.prefix,
                        direct ? "login" : "signin");
    sesame_url_encode(b, x->back, strlen(x->back));
    sesame_gate_signin_query_append(b, &x->q, direct);
    char *url = drain_string(b);
    sesame_server_redirect(req, 302, url);
    free(url);
}

static void
minted(int status, void *arg)
{
    struct sesame_req *req = arg;
    struct sso *x = req->ext;
    x->op = NULL;
    if (gone(req))
        return;
    if (status != SESAME_OK) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    char *url = sesame_asprintf("%s&ticket=%s", x->back, x->ticket);
    sesame_log_info("request %s: tenant %s: hop ticket for host %s of tenant %s", req->request_id,
                    req->tenant->name, x->host, x->target->name);
    sesame_server_redirect(req, 302, url);
    free(url);
}

static void
mint(struct sesame_req *req, struct sso *x)
{
    if (sesame_util_random_token(x->ticket, sizeof(x->ticket), 32) != SESAME_OK) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    json_t *blob = json_pack("{s:s, s:s, s:s, s:s, s:s}", "k",
                             req->tenant->is_territory ? "territory" : "hop", "t", x->target->name,
                             "h", x->host, "n", x->nonce, "s", x->sid);
    struct sesame_session_store *st = sesame_gate_store(req);
    int rc = st && blob ? sesame_session_login_put(st, x->ticket, blob, SESAME_HOP_TICKET_MS, minted, req, &x->op)
                        : SESAME_ERROR;
    json_decref(blob);
    if (rc != SESAME_AGAIN)
        sesame_gate_error(req, 503, NULL);
}

static bool
provider_admitted(const struct sso *x, const char *p)
{
    if (p == NULL)
        return false;
    if (x->q.provider[0])
        return strcmp(x->q.provider, p) == 0;
    if (!x->q.providers[0])
        return true;
    size_t n = strlen(p);
    for (const char *s = x->q.providers; *s;) {
        while (*s == ' ')
            s++;
        size_t w = strcspn(s, " ");
        if (w == n && memcmp(s, p, n) == 0)
            return true;
        s += w;
    }
    return false;
}

/* Whether sessions of provider p may open tenant t: one of the providers
 * its sign-in page offers (its own, its routes'). */
static bool
tenant_accepts(const struct sesame_req *req, const struct sesame_conf_tenant *t, const char *p)
{
    const struct sesame_runtime_tenant *rt = sesame_runtime_tenant(req->conf, t);
    for (size_t i = 0; p && rt && i < rt->nproviders; i++)
        if (strcmp(rt->providers[i].name, p) == 0)
            return true;
    return false;
}

static void
sso_decide(struct sesame_req *req, struct sso *x, int status, struct sesame_session *s)
{
    if (status == SESAME_ERROR) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    bool ok = status == SESAME_OK && s != NULL && provider_admitted(x, s->provider) &&
              tenant_accepts(req, x->target, s->provider) &&
              (!x->q.acr[0] || sesame_jose_acr_rank(s->acr) >= sesame_jose_acr_rank(x->q.acr));
    if (ok)
        mint(req, x);
    else
        sso_signin(req, x);
}

static void
sso_loaded(int status, struct sesame_session *s, void *arg)
{
    struct sesame_req *req = arg;
    struct sso *x = req->ext;
    x->op = NULL;
    if (gone(req)) {
        sesame_session_free(s);
        return;
    }
    sso_decide(req, x, status, s);
    sesame_session_free(s);
}

/* Checks B: an absolute URL on another host of the tenant (at a territory's
 * host: on a host of one of its members), path <prefix>hop, with a
 * well-formed n. Fills x->target, x->back, x->host, x->nonce. */
static bool
check_back(struct sesame_req *req, struct sso *x, const char *rt)
{
    const struct sesame_conf_tenant *t = req->tenant;
    if (t->is_territory) {
        for (size_t i = 0; i < req->tenant->nmembers && x->back == NULL; i++) {
            t = req->tenant->members[i];
            x->back = sesame_returnto_check(rt, strlen(rt), (const char *const *)t->hosts, t->nhosts,
                                            t->public_url);
            if (x->back != NULL && strstr(x->back, "://") == NULL) {
                free(x->back); /* a path: on the territory's host, not a member's */
                x->back = NULL;
            }
        }
    } else {
        x->back = sesame_returnto_check(rt, strlen(rt), (const char *const *)t->hosts, t->nhosts,
                                        t->public_url);
    }
    x->target = t;
    if (x->back == NULL || strstr(x->back, "://") == NULL || !url_host(x->back, x->host, sizeof(x->host)))
        return false;
    char pub[256];
    if (!req->tenant->is_territory &&
        (!url_host(t->public_url, pub, sizeof(pub)) || strcmp(pub, x->host) == 0))
        return false;
    const char *path = strchr(strstr(x->back, "://") + 3, '/');
    if (path == NULL)
        return false;
    const char *q = strchr(path, '?');
    const char *prefix = req->conf->server.prefix;
    size_t pl = strlen(prefix);
    if (q == NULL || (size_t)(q - path) != pl + 3 || memcmp(path, prefix, pl) != 0 ||
        memcmp(path + pl, "hop", 3) != 0 || strchr(q, '#') != NULL)
        return false;
    q++;
    if (!sesame_url_query_unique(q, strlen(q)) ||
        sesame_url_query_get(q, strlen(q), "n", x->nonce, sizeof(x->nonce)) != SESAME_OK ||
        strlen(x->nonce) != NONCE_LEN)
        return false;
    char enc[MAX_URL * 2], r[MAX_URL + 1];
    return sesame_url_query_get(q, strlen(q), "r", enc, sizeof(enc)) == SESAME_OK && decode_r(enc, r) &&
           strstr(q, "ticket=") == NULL;
}

void
sesame_hop_sso(struct sesame_req *req)
{
    struct sso *x = sesame_calloc(1, sizeof(*x));
    req->ext = x;
    req->ext_free = sso_free;
    if (sesame_gate_signin_query_read(req, &x->q) != SESAME_OK || x->q.return_to[0] == '\0' ||
        req->tenant->territory != NULL || !check_back(req, x, x->q.return_to)) {
        /* (a member of a territory signs in at the territory's host, not its own) */
        sesame_log_info("request %s: sso refused: malformed or foreign return_to", req->request_id);
        sesame_gate_error(req, 400, NULL);
        return;
    }
    if (x->q.acr[0] && sesame_jose_acr_rank(x->q.acr) <= 0)
        x->q.acr[0] = '\0';
    if (sesame_gate_is_api(req)) {
        sesame_gate_error(req, 401, NULL);
        return;
    }
    struct sesame_session_store *st = sesame_gate_store(req);
    if (st == NULL) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (sesame_gate_cookie(req, req->conf->session.cookie_name, x->sid) != SESAME_OK) {
        sso_signin(req, x);
        return;
    }
    struct sesame_session *s = NULL;
    int rc = sesame_session_load(st, x->sid, req->tenant->name, sso_loaded, req, &s, &x->op);
    if (rc == SESAME_AGAIN)
        return;
    x->op = NULL;
    sso_decide(req, x, rc == SESAME_OK ? SESAME_OK : rc == SESAME_ERROR ? SESAME_ERROR : SESAME_DECLINED, s);
    sesame_session_free(s);
}

/* ------------------------------------------------------------------------
 * hop: at the other host
 */

struct redeem {
    struct sesame_session_op *op;
    char sid[SESAME_SESSION_ID_LEN + 1]; /* territory ticket: the territory session */
    char nonce[NONCE_LEN + 1];
    char renc[MAX_URL * 2];          /* r as received (base64url) */
    char r[MAX_URL + 1];             /* decoded: a safe relative path */
};

static void
redeem_free(struct sesame_req *req)
{
    struct redeem *x = req->ext;
    if (x == NULL)
        return;
    if (x->op)
        sesame_session_cancel(x->op);
    free(x);
    req->ext = NULL;
    req->ext_free = NULL;
}

static void
redeem_refused(struct sesame_req *req, const char *why)
{
    sesame_log_info("request %s: hop refused: %s", req->request_id, why);
    sesame_gate_error(req, 400, refused_reason);
}

/* A territory ticket was taken for this member host: M's own sign-in from
 * the territory session's identity. */
static void
territory_loaded(int status, struct sesame_session *s, void *arg)
{
    struct sesame_req *req = arg;
    struct redeem *x = req->ext;
    x->op = NULL;
    if (gone(req)) {
        sesame_session_free(s);
        return;
    }
    if (status == SESAME_ERROR) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (status != SESAME_OK || s == NULL || s->tree == NULL) {
        sesame_session_free(s);
        redeem_refused(req, "the territory session ended meanwhile");
        return;
    }
    if (!tenant_accepts(req, req->tenant, s->provider)) {
        sesame_log_info("request %s: tenant %s does not accept territory sessions of provider %s",
                        req->request_id, req->tenant->name, s->provider ? s->provider : "?");
        sesame_session_free(s);
        sesame_gate_error(req, 403, "Ce service demande une connexion avec un autre compte.");
        return;
    }
    char cname[128];
    hop_cookie_name(req, cname);
    sesame_gate_set_cookie(req, cname, NULL, 0);
    char *r = sesame_strdup(x->r);
    char parent[SESAME_SESSION_ID_LEN + 1];
    memcpy(parent, x->sid, sizeof(parent));
    redeem_free(req); /* the flow takes req->ext */
    struct sesame_flow_identity id = {
        .provider = s->provider,
        .sub = s->account,
        .acr = s->acr,
        .claims = s->claims,
        .tree = s->tree,
        .parent = parent,
        .expires_ms = s->expires_ms,
        .return_to = r,
    };
    sesame_log_info("request %s: tenant %s: signing in on host %.*s from territory %s",
                    req->request_id, req->tenant->name, (int)req->canon.host_len, req->canon.authority,
                    req->tenant->territory->name + 1);
    sesame_flow_derive(req, &id);
    OPENSSL_cleanse(parent, sizeof(parent));
    free(r);
    sesame_session_free(s);
}

static void
redeem_territory(struct sesame_req *req, struct redeem *x)
{
    struct sesame_session_store *st = sesame_gate_store(req);
    struct sesame_session *s = NULL;
    int rc = st ? sesame_session_load(st, x->sid, req->tenant->territory->name, territory_loaded, req, &s,
                                      &x->op)
                : SESAME_ERROR;
    if (rc == SESAME_AGAIN)
        return;
    x->op = NULL;
    territory_loaded(rc == SESAME_OK ? SESAME_OK : rc == SESAME_ERROR ? SESAME_ERROR : SESAME_DECLINED, s,
                     req);
}

static void
taken(int status, json_t *blob, void *arg)
{
    struct sesame_req *req = arg;
    struct redeem *x = req->ext;
    x->op = NULL;
    if (gone(req)) {
        json_decref(blob);
        return;
    }
    if (status == SESAME_ERROR) {
        json_decref(blob);
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (blob == NULL) {
        redeem_refused(req, "unknown, expired or used ticket");
        return;
    }
    const char *k = json_string_value(json_object_get(blob, "k"));
    const char *t = json_string_value(json_object_get(blob, "t"));
    const char *h = json_string_value(json_object_get(blob, "h"));
    const char *n = json_string_value(json_object_get(blob, "n"));
    const char *sid = json_string_value(json_object_get(blob, "s"));
    const char *kind = req->tenant->territory ? "territory" : "hop";
    bool ok = k && strcmp(k, kind) == 0 && t && strcmp(t, req->tenant->name) == 0 && h &&
              strlen(h) == req->canon.host_len && memcmp(h, req->canon.authority, req->canon.host_len) == 0 &&
              n && sesame_util_ct_streq(n, x->nonce) && sid && strlen(sid) == SESAME_SESSION_ID_LEN;
    if (!ok) {
        json_decref(blob);
        redeem_refused(req, "ticket of another tenant, host or browser");
        return;
    }
    if (req->tenant->territory) {
        memcpy(x->sid, sid, sizeof(x->sid));
        json_decref(blob);
        redeem_territory(req, x);
        return;
    }
    char cname[128];
    hop_cookie_name(req, cname);
    sesame_gate_set_cookie(req, cname, NULL, 0);
    sesame_gate_set_cookie(req, req->conf->session.cookie_name, sid,
                           (int64_t)sesame_util_ms_to_s_ceil(req->conf->session.max_lifetime_ms));
    json_decref(blob);
    sesame_log_info("request %s: tenant %s: session opened on host %.*s by hop", req->request_id,
                    req->tenant->name, (int)req->canon.host_len, req->canon.authority);
    sesame_server_redirect(req, 303, x->r);
}

void
sesame_hop_redeem(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    struct redeem *x = sesame_calloc(1, sizeof(*x));
    req->ext = x;
    req->ext_free = redeem_free;
    char ticket[160] = "", cname[128], cookie[NONCE_LEN + 1];
    int rt;
    if (!sesame_url_query_unique(m->query, m->query_len) ||
        sesame_url_query_get(m->query, m->query_len, "n", x->nonce, sizeof(x->nonce)) != SESAME_OK ||
        sesame_url_query_get(m->query, m->query_len, "r", x->renc, sizeof(x->renc)) != SESAME_OK ||
        (rt = sesame_url_query_get(m->query, m->query_len, "ticket", ticket, sizeof(ticket))) == SESAME_ERROR ||
        !decode_r(x->renc, x->r)) {
        redeem_refused(req, "malformed parameters");
        return;
    }
    hop_cookie_name(req, cname);
    if (sesame_gate_cookie(req, cname, cookie) != SESAME_OK || !sesame_util_ct_streq(cookie, x->nonce)) {
        redeem_refused(req, "hop cookie missing or different");
        return;
    }
    if (!sesame_hop_needed(req)) {
        redeem_refused(req, "hop on the sign-in host");
        return;
    }
    if (rt != SESAME_OK || ticket[0] == '\0') {
        /* Back from a sign-in that ended here without a ticket: ask again. */
        char *back = back_url(req, x->nonce, x->r, strlen(x->r));
        if (back == NULL) {
            redeem_refused(req, "return path too long");
            return;
        }
        char *url = sesame_asprintf("%s%ssso?return_to=", sesame_hop_signin_tenant(req)->public_url,
                                    req->conf->server.prefix);
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, url, strlen(url));
        sesame_url_encode(b, back, strlen(back));
        free(url);
        free(back);
        char *loc = drain_string(b);
        sesame_server_redirect(req, 302, loc);
        free(loc);
        return;
    }
    struct sesame_session_store *st = sesame_gate_store(req);
    if (st == NULL) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (sesame_session_login_take(st, ticket, taken, req, &x->op) != SESAME_AGAIN) {
        x->op = NULL;
        redeem_refused(req, "malformed ticket");
    }
}
