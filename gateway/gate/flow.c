#include "gate/flow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "account/account.h"
#include "account/pool.h"
#include "audit/audit.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/url.h"
#include "core/util.h"
#include "gate/backchannel.h"
#include "gate/gate.h"
#include "gate/identity.h"
#include "gate/ratelimit.h"
#include "gate/runtime.h"
#include "oidc/jose.h"
#include "oidc/provider.h"
#include "oidc/refresher.h"
#include "oidc/returnto.h"
#include "pages/page.h"

#define MAX_PARAM 2048
#define LOGOUT_FORM_MAX 4096

static struct sesame_pool *plugin_pool;

static double
plugin_queue_length(void *arg)
{
    return plugin_pool ? (double)sesame_pool_queued(plugin_pool) : 0;
}

int
sesame_flow_start(const struct sesame_conf *conf, char **err)
{
    plugin_pool = sesame_pool_new((size_t)conf->server.plugin_threads, 1024, err);
    if (plugin_pool)
        sesame_metrics_gauge_fn_set(SESAME_M_PLUGIN_QUEUE, plugin_queue_length, NULL);
    if (plugin_pool == NULL || sesame_ratelimit_start(conf, err) != SESAME_OK ||
        sesame_refresher_start(conf, err) != SESAME_OK)
        return SESAME_ERROR;
    return SESAME_OK;
}

void
sesame_flow_stop(void)
{
    sesame_metrics_gauge_fn_set(SESAME_M_PLUGIN_QUEUE, NULL, NULL);
    sesame_pool_free(plugin_pool);
    plugin_pool = NULL;
    sesame_refresher_stop();
    sesame_ratelimit_stop();
}

/* ------------------------------------------------------------------------
 * Per-request state of a flow step
 */

/* What a validated sign-in gives (copied out of the provider's callback). */
struct login_result {
    json_t *claims;
    char *id_token;
    char *sub;
    char *acr;
};

static void
login_result_free(struct login_result *r)
{
    if (r == NULL)
        return;
    json_decref(r->claims);
    if (r->id_token) {
        OPENSSL_cleanse(r->id_token, strlen(r->id_token));
        free(r->id_token);
    }
    free(r->sub);
    free(r->acr);
    free(r);
}

struct flow {
    struct sesame_req *req;
    struct sesame_provider *rt;               /* provider runtime (reference) */
    const struct sesame_conf_provider *provider;
    struct sesame_session_op *sop;
    struct sesame_provider_op *pop;
    struct sesame_account_req *aop;
    /* login */
    char state[48];
    char nonce[48];
    char verifier[48];
    char binding[SESAME_SESSION_ID_LEN + 1];
    char *return_to;
    char acr[16];
    /* callback */
    json_t *blob;
    struct login_result *result;
    char *redirect_uri;
    char previous_id[SESAME_SESSION_ID_LEN + 1];
    struct sesame_session *session;
    /* territories (gate/hop.h): the tree of the session made, and for a
     * session derived from a territory session, that session's id and end */
    char *tree;
    char *parent;
    int64_t expires_ms;
    /* logout of a session of a tree: the territory session's ID token */
    char *hint;
};

static void
flow_free(struct sesame_req *req)
{
    struct flow *f = req->ext;
    if (f == NULL)
        return;
    if (f->sop)
        sesame_session_cancel(f->sop);
    if (f->pop)
        sesame_provider_cancel(f->pop);
    if (f->aop)
        sesame_account_cancel(f->aop);
    sesame_provider_unref(f->rt);
    free(f->return_to);
    json_decref(f->blob);
    login_result_free(f->result);
    free(f->redirect_uri);
    sesame_session_free(f->session);
    free(f->tree);
    if (f->parent) {
        OPENSSL_cleanse(f->parent, strlen(f->parent));
        free(f->parent);
    }
    if (f->hint) {
        OPENSSL_cleanse(f->hint, strlen(f->hint));
        free(f->hint);
    }
    free(f);
    req->ext = NULL;
    req->ext_free = NULL;
}

static struct flow *
flow_new(struct sesame_req *req)
{
    struct flow *f = sesame_calloc(1, sizeof(*f));
    f->req = req;
    req->ext = f;
    req->ext_free = flow_free;
    return f;
}

/* The request vanished while a step was pending: end it without writing. */
static bool
gone(struct sesame_req *req)
{
    if (!req->aborted)
        return false;
    sesame_server_request_done(req);
    return true;
}

/* First step of every completion callback: clears the handle of the
 * operation that just finished and returns the flow, or NULL when the
 * request was abandoned meanwhile (it is then ended and freed). */
enum op_kind { OP_SESSION, OP_PROVIDER, OP_ACCOUNT };

static struct flow *
resume(void *arg, enum op_kind kind)
{
    struct sesame_req *req = arg;
    struct flow *f = req->ext;
    if (kind == OP_SESSION)
        f->sop = NULL;
    else if (kind == OP_PROVIDER)
        f->pop = NULL;
    else
        f->aop = NULL;
    return gone(req) ? NULL : f;
}

static const struct sesame_conf_provider *
tenant_provider(const struct sesame_req *req, const char *name)
{
    const struct sesame_runtime_tenant *t = sesame_runtime_tenant(req->conf, req->tenant);
    if (name && name[0]) {
        for (size_t i = 0; i < t->nproviders; i++)
            if (strcmp(t->providers[i].name, name) == 0)
                return sesame_conf_find_provider(req->conf, name);
        return NULL; /* a provider this tenant does not offer */
    }
    if (req->tenant->provider)
        return req->tenant->provider;
    return t->nproviders ? sesame_conf_find_provider(req->conf, t->providers[0].name) : NULL;
}

static char *
callback_url(const struct sesame_req *req, const char *what)
{
    return sesame_asprintf("%s%s%s", req->tenant->public_url, req->conf->server.prefix, what);
}

static void
provider_unavailable(struct sesame_req *req, const struct sesame_conf_provider *p, const char *why)
{
    sesame_log_warn("request %s: provider %s unavailable: %s", req->request_id, p ? p->name : "?",
                    why ? why : "?");
    struct sesame_page_ctx ctx = {0};
    struct sesame_page_provider pp = {
        .name = p ? p->name : "",
        .brand = p ? sesame_page_provider_brand(p->name, p->issuer) : SESAME_PAGE_BRAND_GENERIC};
    ctx.providers = &pp;
    ctx.nproviders = 1;
    ctx.return_to = "/";
    char retry[16];
    snprintf(retry, sizeof(retry), "%d", SESAME_PROVIDER_RETRY_AFTER_S);
    sesame_server_add_header(&req->response_headers, "Retry-After", retry);
    sesame_gate_page(req, 503, SESAME_PAGE_PROVIDER_UNAVAILABLE, &ctx);
}

/* The audit journal's reason of a refused sign-in (audit/audit.h). */
static const char *
audit_reason(enum sesame_metrics_signin r)
{
    switch (r) {
    case SESAME_SIGNIN_STATE: return "state_expired";
    case SESAME_SIGNIN_ISS: return "iss_mismatch";
    case SESAME_SIGNIN_CANCELLED: return "cancelled";
    case SESAME_SIGNIN_PROVIDER_ERROR: return "provider_error";
    case SESAME_SIGNIN_REJECTED: return "code_rejected";
    case SESAME_SIGNIN_BAD_RESPONSE: return "response_invalid";
    case SESAME_SIGNIN_INVALID_TOKEN:
    case SESAME_SIGNIN_UNKNOWN_KEY: return "token_invalid";
    case SESAME_SIGNIN_ACR_TOO_LOW: return "acr_too_low";
    case SESAME_SIGNIN_USERINFO: return "userinfo_invalid";
    case SESAME_SIGNIN_NO_ACCOUNT: return "no_account";
    case SESAME_SIGNIN_ACCOUNT_DENIED: return "account_denied";
    case SESAME_SIGNIN_PROVIDER_UNAVAILABLE: return "provider_unavailable";
    case SESAME_SIGNIN_REDIS_UNAVAILABLE: return "store_unavailable";
    case SESAME_SIGNIN_PLUGIN_ERROR: return "account_error";
    default: return "internal_error";
    }
}

/* The client address in the audit journal, for tenants that ask for it. */
static const char *
audit_client(const struct sesame_req *req)
{
    return req->tenant && req->tenant->audit_client_address ? req->client_ip : NULL;
}

/* Counts the outcome of a sign-in callback (core/metrics.h) and records it
 * in the audit journal: the session made, or the refusal with its reason
 * (`reason` when finer than the outcome's; `error`: the provider's error
 * code). */
static void
signin_audited(struct sesame_req *req, enum sesame_metrics_signin r, const char *reason,
               const char *error)
{
    const struct flow *f = req->ext;
    sesame_metrics_signin(f && f->provider ? f->provider->name : NULL, r);
    if (!sesame_audit_enabled())
        return;
    const struct sesame_session *s = r == SESAME_SIGNIN_SUCCESS && f ? f->session : NULL;
    struct sesame_audit_kv kv[2];
    size_t n = 0;
    if (s && s->acr)
        kv[n++] = (struct sesame_audit_kv){"acr", s->acr, 0};
    if (error) /* a word of the OAuth error codes, or "other" */
        kv[n++] = (struct sesame_audit_kv){
            "error", strlen(error) <= 40 && strspn(error, "abcdefghijklmnopqrstuvwxyz_") == strlen(error)
                         ? error : "other", 0};
    struct sesame_audit_event ev = {
        .event = "signin",
        .tenant = req->tenant ? req->tenant->name : NULL,
        .account = s ? s->account : NULL,
        .provider = f && f->provider ? f->provider->name : NULL,
        .outcome = r == SESAME_SIGNIN_SUCCESS ? "success" : "refused",
        .reason = r == SESAME_SIGNIN_SUCCESS ? NULL : reason ? reason : audit_reason(r),
        .client = audit_client(req),
        .detail = kv,
        .ndetail = n,
    };
    sesame_audit_event(&ev);
}

static void
signin_outcome(struct sesame_req *req, enum sesame_metrics_signin r)
{
    signin_audited(req, r, NULL, NULL);
}

/* A sign-in that cannot go on (expired, replayed, forged): 400 page.
 * reason: the audit journal's (NULL: why's). */
static void
login_refused_because(struct sesame_req *req, enum sesame_metrics_signin why, const char *reason,
                      const char *log_reason)
{
    signin_audited(req, why, reason, NULL);
    sesame_log_info("request %s: sign-in refused: %s", req->request_id, log_reason);
    sesame_gate_error(req, 400,
                      "Votre connexion n'a pas pu aboutir : elle a expiré, a déjà servi ou a été "
                      "ouverte dans un autre navigateur. Revenez à l'accueil et connectez-vous à nouveau.");
}

static void
login_refused_as(struct sesame_req *req, enum sesame_metrics_signin why, const char *log_reason)
{
    login_refused_because(req, why, NULL, log_reason);
}

static void
login_refused(struct sesame_req *req, const char *reason, const char *log_reason)
{
    login_refused_because(req, SESAME_SIGNIN_STATE, reason, log_reason);
}

/* The sign-in outcome of a failed provider operation. */
static enum sesame_metrics_signin
provider_outcome(enum sesame_provider_status st)
{
    switch (st) {
    case SESAME_PROVIDER_UNAVAILABLE:
    case SESAME_PROVIDER_MISCONFIGURED:
        return SESAME_SIGNIN_PROVIDER_UNAVAILABLE;
    case SESAME_PROVIDER_REJECTED:
        return SESAME_SIGNIN_REJECTED;
    case SESAME_PROVIDER_INVALID_TOKEN:
        return SESAME_SIGNIN_INVALID_TOKEN;
    case SESAME_PROVIDER_UNKNOWN_KEY:
        return SESAME_SIGNIN_UNKNOWN_KEY;
    case SESAME_PROVIDER_ACR_TOO_LOW:
        return SESAME_SIGNIN_ACR_TOO_LOW;
    case SESAME_PROVIDER_USERINFO_INVALID:
    case SESAME_PROVIDER_USERINFO_MISMATCH:
        return SESAME_SIGNIN_USERINFO;
    default:
        return SESAME_SIGNIN_BAD_RESPONSE;
    }
}

/* The Redis key of a pending login: its state followed by the browser
 * binding, so that only the browser that started the sign-in can find, and
 * so consume, it (a callback URL replayed elsewhere leaves it untouched). */
static void
pending_key(char out[2 * (SESAME_SESSION_ID_LEN + 4) + 1], const char *state, const char *binding)
{
    snprintf(out, 2 * (SESAME_SESSION_ID_LEN + 4) + 1, "%s%s", state, binding);
}

/* The French reason shown when the provider's answer is refused. */
static const char *
refusal_reason(enum sesame_provider_status st)
{
    switch (st) {
    case SESAME_PROVIDER_INVALID_TOKEN:
    case SESAME_PROVIDER_UNKNOWN_KEY:
    case SESAME_PROVIDER_USERINFO_INVALID:
    case SESAME_PROVIDER_USERINFO_MISMATCH:
        return "La réponse de votre fournisseur d'identité n'a pas pu être vérifiée (signature ou "
               "contenu invalide). Par sécurité, la connexion a été refusée.";
    case SESAME_PROVIDER_ACR_TOO_LOW:
        return "Votre fournisseur d'identité a confirmé votre identité avec un niveau de sécurité "
               "inférieur à celui que ce service demande. La connexion a été refusée.";
    case SESAME_PROVIDER_REJECTED:
        return "Votre fournisseur d'identité a refusé de confirmer cette connexion, peut-être parce "
               "qu'elle a expiré. Reconnectez-vous.";
    default:
        return "La réponse de votre fournisseur d'identité est incomplète ou mal formée. Par sécurité, "
               "la connexion a été refusée.";
    }
}

/* ------------------------------------------------------------------------
 * login
 */

static void
login_stored(int status, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (status != SESAME_OK) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    /* Set (or refreshed) only once the pending login is stored, so that it
     * outlives it; a login that could not be stored sets no cookie. */
    char cname[128];
    snprintf(cname, sizeof(cname), "%s_login", req->conf->session.cookie_name);
    sesame_gate_set_cookie(req, cname, f->binding,
                           (int64_t)sesame_util_ms_to_s_ceil(req->conf->session.login_timeout_ms));
    char *redirect_uri = callback_url(req, "callback");
    char *challenge = f->provider->pkce ? sesame_provider_pkce_challenge(f->verifier) : NULL;
    const char *acr = f->acr[0] ? f->acr : f->provider->acr_values;
    char *err = NULL;
    char *url = sesame_provider_authorize_url(f->rt, redirect_uri, f->state, f->nonce, acr, challenge,
                                              &err);
    free(redirect_uri);
    free(challenge);
    if (url == NULL) {
        provider_unavailable(req, f->provider, err);
        free(err);
        return;
    }
    sesame_metrics_add(SESAME_M_SIGNIN_REDIRECTS, f->provider->name, NULL, NULL, 1);
    sesame_server_redirect(req, 302, url);
    free(url);
}

static void
login_ready(void *arg, enum sesame_provider_status status, const char *err)
{
    struct flow *f = resume(arg, OP_PROVIDER);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (status != SESAME_PROVIDER_OK) {
        provider_unavailable(req, f->provider, err);
        return;
    }
    if (sesame_util_random_token(f->state, sizeof(f->state), 32) != SESAME_OK ||
        sesame_util_random_token(f->nonce, sizeof(f->nonce), 32) != SESAME_OK ||
        sesame_util_random_token(f->verifier, sizeof(f->verifier), 32) != SESAME_OK) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    json_t *blob = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "t", req->tenant->name, "p",
                             f->provider->name, "n", f->nonce, "b", f->binding, "r", f->return_to,
                             "v", f->verifier);
    if (f->acr[0])
        json_object_set_new(blob, "a", json_string(f->acr));
    json_object_set_new(blob, "k", json_string("login"));
    struct sesame_session_store *st = sesame_gate_store(req);
    char key[2 * (SESAME_SESSION_ID_LEN + 4) + 1];
    pending_key(key, f->state, f->binding);
    int rc = st ? sesame_session_login_put(st, key, blob, req->conf->session.login_timeout_ms,
                                           login_stored, req, &f->sop)
                : SESAME_ERROR;
    json_decref(blob);
    if (rc != SESAME_AGAIN)
        sesame_gate_error(req, 503, NULL);
}

void
sesame_flow_login(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    char rt[MAX_PARAM], pname[128] = "", acr[16] = "";
    int r1 = sesame_url_query_get(m->query, m->query_len, "return_to", rt, sizeof(rt));
    int r2 = sesame_url_query_get(m->query, m->query_len, "provider", pname, sizeof(pname));
    int r3 = sesame_url_query_get(m->query, m->query_len, "acr", acr, sizeof(acr));
    if (r1 == SESAME_ERROR || r2 == SESAME_ERROR || r3 == SESAME_ERROR) {
        sesame_gate_error(req, 400, NULL);
        return;
    }
    if (sesame_gate_is_api(req)) {
        sesame_gate_error(req, 401, NULL);
        return;
    }
    struct flow *f = flow_new(req);
    f->provider = tenant_provider(req, pname);
    if (f->provider == NULL) {
        sesame_gate_error(req, 404, NULL);
        return;
    }
    if (acr[0] && sesame_jose_acr_rank(acr) > 0)
        snprintf(f->acr, sizeof(f->acr), "%s", acr);
    char *safe = r1 == SESAME_OK ? sesame_gate_return_to(req, rt) : NULL;
    f->return_to = safe ? safe : sesame_strdup("/");
    /* the browser binding, shared by concurrent tabs */
    char cname[128];
    snprintf(cname, sizeof(cname), "%s_login", req->conf->session.cookie_name);
    char existing[SESAME_SESSION_ID_LEN + 1];
    if (sesame_gate_cookie(req, cname, existing) == SESAME_OK) {
        memcpy(f->binding, existing, sizeof(existing));
    } else {
        if (sesame_util_random_token(f->binding, sizeof(f->binding), 32) != SESAME_OK) {
            sesame_gate_error(req, 500, NULL);
            return;
        }
    }
    char *err = NULL;
    f->rt = sesame_provider_registry_get(f->provider, &err);
    struct sesame_httpc *h = sesame_gate_httpc(req);
    if (f->rt == NULL || h == NULL) {
        provider_unavailable(req, f->provider, err ? err : "no HTTPS client");
        free(err);
        return;
    }
    /* the rate limits (gate/ratelimit.h) before anything is stored; then a
     * provider known to be down is asked again rather than trusted: the
     * citizen is never sent to one that does not answer (oidc/provider.h) */
    if (!sesame_ratelimit_signin(req, f->return_to, f->provider->name, f->acr[0] ? f->acr : NULL))
        return;
    f->pop = sesame_provider_ensure_available(f->rt, h, login_ready, req);
}

/* ------------------------------------------------------------------------
 * callback
 */

static void
session_created(int status, const char *cookie_id, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (status != SESAME_OK) {
        signin_outcome(req, SESAME_SIGNIN_REDIS_UNAVAILABLE);
        sesame_log_warn("request %s: session not stored", req->request_id);
        sesame_gate_error(req, 503, NULL);
        return;
    }
    signin_outcome(req, SESAME_SIGNIN_SUCCESS);
    if (f->result) /* for back-channel logout (gate/backchannel.h) */
        sesame_backchannel_index(req, f->provider->name, f->result->sub,
                                 json_string_value(json_object_get(f->result->claims, "sid")), cookie_id);
    sesame_gate_set_cookie(req, req->conf->session.cookie_name, cookie_id,
                           (int64_t)sesame_util_ms_to_s_ceil(req->conf->session.max_lifetime_ms));
    sesame_log_info("login: request %s tenant %s provider %s account %s acr %s", req->request_id,
                    req->tenant->name, f->provider->name, f->session->account,
                    f->session->acr ? f->session->acr : "-");
    /* a callback's pending login, or the return path of sesame_flow_derive */
    const char *rt = f->blob ? json_string_value(json_object_get(f->blob, "r")) : f->return_to;
    sesame_server_redirect(req, 303, rt && rt[0] ? rt : "/");
}

/* What a territory session keeps: every identity claim its provider was
 * asked for (as released), since each member tenant's accounts plugin and
 * routes take what they need from it. */
static json_t *
territory_claims(const struct sesame_conf_provider *p, const json_t *claims)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)claims, k, v) {
        if (json_is_string(v) && sesame_conf_identity_claim(p, k))
            json_object_set(out, k, v);
    }
    return out;
}

static void
create_session(struct sesame_req *req, const char *account, const struct sesame_plugin_result *res)
{
    struct flow *f = req->ext;
    struct sesame_session *s = sesame_session_new();
    const struct login_result *r = f->result;
    s->tenant = sesame_strdup(req->tenant->name);
    s->account = sesame_strdup(account);
    s->provider = sesame_strdup(f->provider->name);
    s->acr = r->acr ? sesame_strdup(r->acr) : NULL;
    s->id_token = r->id_token ? sesame_strdup(r->id_token) : NULL;
    s->claims = req->tenant->is_territory ? territory_claims(f->provider, r->claims)
                                          : sesame_identity_kept_claims(req->conf, req->tenant, r->claims);
    s->tree = f->tree ? sesame_strdup(f->tree) : NULL;
    s->parent = f->parent ? sesame_strdup(f->parent) : NULL;
    if (f->expires_ms > 0)
        s->expires_ms = f->expires_ms; /* sesame_session_create keeps the earlier end */
    if (res && res->nattributes > 0) {
        s->attributes = json_object();
        for (size_t i = 0; i < res->nattributes; i++)
            json_object_set_new(s->attributes, res->attributes[i].name,
                                json_string(res->attributes[i].value));
    }
    f->session = s;
    struct sesame_session_store *st = sesame_gate_store(req);
    int rc = st ? sesame_session_create(st, s, f->previous_id[0] ? f->previous_id : NULL,
                                        session_created, req, &f->sop)
                : SESAME_ERROR;
    if (rc != SESAME_AGAIN) {
        signin_outcome(req, SESAME_SIGNIN_REDIS_UNAVAILABLE);
        sesame_gate_error(req, 503, NULL);
    }
}

static void
account_done(const struct sesame_plugin_result *res, void *arg)
{
    struct flow *f = resume(arg, OP_ACCOUNT);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    switch (res->status) {
    case SESAME_PLUGIN_RESULT_FOUND:
        if (res->reason == SESAME_PLUGIN_REASON_LINKED || res->reason == SESAME_PLUGIN_REASON_CREATED) {
            struct sesame_audit_event ev = {
                .event = res->reason == SESAME_PLUGIN_REASON_CREATED ? "account_created" : "account_linked",
                .tenant = req->tenant->name, .account = res->account_id,
                .provider = f->provider->name, .outcome = "success",
                .detail = &(struct sesame_audit_kv){"by", "signin", 0}, .ndetail = 1};
            sesame_audit_event(&ev);
        }
        create_session(req, res->account_id, res);
        return;
    case SESAME_PLUGIN_RESULT_NONE:
        sesame_log_info("request %s: no account (%s) for this identity", req->request_id,
                        res->reason == SESAME_PLUGIN_REASON_LINK_ONLY ? "link-only" : "deny");
        signin_outcome(req, res->reason == SESAME_PLUGIN_REASON_LINK_ONLY ? SESAME_SIGNIN_NO_ACCOUNT
                                                                           : SESAME_SIGNIN_ACCOUNT_DENIED);
        if (res->reason == SESAME_PLUGIN_REASON_LINK_ONLY) {
            struct sesame_page_ctx ctx = {0};
            sesame_gate_page(req, 403, SESAME_PAGE_NO_ACCOUNT, &ctx);
        } else {
            sesame_gate_error(req, 403, "Votre commune ne vous a pas ouvert l'accès à ce service. "
                                        "Contactez la mairie pour en savoir plus.");
        }
        return;
    default:
        signin_outcome(req, SESAME_SIGNIN_PLUGIN_ERROR);
        sesame_log_error("request %s: account plugin: %s", req->request_id,
                         res->error[0] ? res->error : "error");
        sesame_gate_error(req, 503, NULL);
        return;
    }
}

/* The plugin's view of an identity: string claims only, and only identity
 * claims the provider's scopes ask for, never protocol claims (nonce, aud,
 * iss, exp, at_hash...): sesame_conf_identity_claim. */
static void
resolve_account(struct sesame_req *req)
{
    struct flow *f = req->ext;
    const struct sesame_runtime_tenant *t = sesame_runtime_tenant(req->conf, req->tenant);
    const struct login_result *r = f->result;
    if (t->accounts == NULL) {
        create_session(req, r->sub, NULL);
        return;
    }
    struct sesame_plugin_kv kv[SESAME_ACCOUNT_MAX_CLAIMS];
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(r->claims, k, v) {
        if (n == SESAME_ACCOUNT_MAX_CLAIMS)
            break;
        if (!json_is_string(v) || strlen(k) > SESAME_ACCOUNT_MAX_CLAIM_NAME ||
            json_string_length(v) > SESAME_ACCOUNT_MAX_CLAIM_VALUE ||
            !sesame_conf_identity_claim(f->provider, k))
            continue;
        kv[n].key = k;
        kv[n].value = json_string_value(v);
        n++;
    }
    struct sesame_plugin_identity id = {req->tenant->name, f->provider->name, r->sub, kv, n};
    char *err = NULL;
    int rc = sesame_account_resolve_async(t->accounts, plugin_pool, sesame_server_worker(req)->base, &id,
                                          req->conf->server.plugin_timeout_ms, account_done, req,
                                          &f->aop, &err);
    if (rc != SESAME_OK && rc != SESAME_AGAIN) {
        signin_outcome(req, SESAME_SIGNIN_PLUGIN_ERROR);
        sesame_log_error("request %s: account plugin: %s", req->request_id, err ? err : "cannot submit");
        free(err);
        sesame_gate_error(req, 503, NULL);
    }
}

/* A sign-in at a territory's host: the new session keeps the tree of the
 * territory session it replaces (so that logging out still ends the sessions
 * the communes derived from that one), else starts a new tree. */
static void
tree_found(int status, struct sesame_session *s, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL) {
        sesame_session_free(s);
        return;
    }
    if (status == SESAME_OK && s != NULL && s->tree != NULL)
        f->tree = sesame_strdup(s->tree);
    sesame_session_free(s);
    if (f->tree == NULL) {
        f->tree = sesame_malloc(SESAME_SESSION_ID_LEN + 1);
        if (sesame_util_random_token(f->tree, SESAME_SESSION_ID_LEN + 1, 32) != SESAME_OK) {
            sesame_gate_error(f->req, 500, NULL);
            return;
        }
    }
    resolve_account(f->req);
}

static void
start_tree(struct sesame_req *req)
{
    struct flow *f = req->ext;
    struct sesame_session_store *st = sesame_gate_store(req);
    struct sesame_session *s = NULL;
    int rc = st && f->previous_id[0]
                 ? sesame_session_load(st, f->previous_id, req->tenant->name, tree_found, req, &s, &f->sop)
                 : SESAME_DECLINED;
    if (rc == SESAME_AGAIN)
        return;
    f->sop = NULL;
    tree_found(rc == SESAME_OK ? SESAME_OK : SESAME_DECLINED, s, req);
}

static void
validated(void *arg, const struct sesame_provider_identity *id, enum sesame_provider_status st,
          const char *err)
{
    struct flow *f = resume(arg, OP_PROVIDER);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (st != SESAME_PROVIDER_OK || id == NULL || id->sub == NULL) {
        signin_outcome(req, provider_outcome(st));
        sesame_log_warn("request %s: provider %s: sign-in refused (%s): %s", req->request_id,
                        f->provider->name, sesame_provider_status_name(st), err ? err : "?");
        if (st == SESAME_PROVIDER_UNAVAILABLE || st == SESAME_PROVIDER_MISCONFIGURED)
            provider_unavailable(req, f->provider, err);
        else
            sesame_gate_error(req, 401, refusal_reason(st));
        return;
    }
    struct login_result *r = sesame_calloc(1, sizeof(*r));
    r->claims = json_incref(id->claims);
    r->id_token = id->id_token ? sesame_strdup(id->id_token) : NULL;
    r->sub = sesame_strdup(id->sub);
    r->acr = id->acr ? sesame_strdup(id->acr) : NULL;
    f->result = r;
    if (req->tenant->is_territory) {
        start_tree(req);
        return;
    }
    resolve_account(req);
}

void
sesame_flow_derive(struct sesame_req *req, const struct sesame_flow_identity *id)
{
    struct flow *f = flow_new(req);
    f->provider = id->provider ? sesame_conf_find_provider(req->conf, id->provider) : NULL;
    if (f->provider == NULL || id->sub == NULL || id->tree == NULL || id->parent == NULL) {
        login_refused(req, "state_invalid", "territory identity incomplete or of a provider no longer configured");
        return;
    }
    struct login_result *r = sesame_calloc(1, sizeof(*r));
    r->claims = id->claims ? json_deep_copy(id->claims) : json_object();
    r->sub = sesame_strdup(id->sub);
    r->acr = id->acr ? sesame_strdup(id->acr) : NULL;
    f->result = r;
    f->return_to = sesame_strdup(id->return_to && id->return_to[0] ? id->return_to : "/");
    f->tree = sesame_strdup(id->tree);
    f->parent = sesame_strdup(id->parent);
    f->expires_ms = id->expires_ms;
    sesame_gate_cookie(req, req->conf->session.cookie_name, f->previous_id);
    resolve_account(req);
}

static void
exchanged(void *arg, const struct sesame_provider_tokens *t, enum sesame_provider_status st,
          const char *err)
{
    struct flow *f = resume(arg, OP_PROVIDER);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (st != SESAME_PROVIDER_OK || t == NULL) {
        validated(arg, NULL, st, err);
        return;
    }
    const char *a = json_string_value(json_object_get(f->blob, "a"));
    struct sesame_provider_expect e = {
        .nonce = json_string_value(json_object_get(f->blob, "n")),
        .min_acr = a ? a : f->provider->acr_values,
        .now = 0,
    };
    f->pop = sesame_provider_validate(f->rt, sesame_gate_httpc(req), t, &e, validated, req);
}

static void
taken(int status, json_t *blob, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL) {
        json_decref(blob);
        return;
    }
    struct sesame_req *req = f->req;
    if (status == SESAME_ERROR) {
        json_decref(blob);
        signin_outcome(req, SESAME_SIGNIN_REDIS_UNAVAILABLE);
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (blob == NULL) {
        login_refused(req, "state_expired", "unknown, expired or already used state, or another browser's");
        return;
    }
    f->blob = blob;
    const char *kind = json_string_value(json_object_get(blob, "k"));
    if (kind == NULL || strcmp(kind, "login") != 0) {
        login_refused(req, "state_invalid", "not a pending login");
        return;
    }
    const struct sesame_http_request *m = &req->msg;
    const char *tenant = json_string_value(json_object_get(blob, "t"));
    const char *pname = json_string_value(json_object_get(blob, "p"));
    const char *binding = json_string_value(json_object_get(blob, "b"));
    char cname[128], cookie[SESAME_SESSION_ID_LEN + 1];
    snprintf(cname, sizeof(cname), "%s_login", req->conf->session.cookie_name);
    if (tenant == NULL || strcmp(tenant, req->tenant->name) != 0) {
        login_refused(req, "tenant_mismatch", "state of another tenant");
        return;
    }
    if (sesame_gate_cookie(req, cname, cookie) != SESAME_OK || !sesame_util_ct_streq(cookie, binding)) {
        login_refused(req, "browser_mismatch", "browser binding cookie missing or different");
        return;
    }
    f->provider = pname ? sesame_conf_find_provider(req->conf, pname) : NULL;
    if (f->provider == NULL) {
        login_refused(req, "provider_unknown", "provider no longer configured");
        return;
    }
    char error[128] = "", iss[1024] = "", code[MAX_PARAM] = "";
    int re = sesame_url_query_get(m->query, m->query_len, "error", error, sizeof(error));
    int ri = sesame_url_query_get(m->query, m->query_len, "iss", iss, sizeof(iss));
    int rc = sesame_url_query_get(m->query, m->query_len, "code", code, sizeof(code));
    if (re == SESAME_ERROR || ri == SESAME_ERROR || rc == SESAME_ERROR) {
        login_refused(req, "callback_malformed", "malformed callback parameters");
        return;
    }
    if (ri == SESAME_OK && strcmp(iss, f->provider->issuer) != 0) {
        login_refused_as(req, SESAME_SIGNIN_ISS, "iss parameter differs from the issuer");
        return;
    }
    if (re == SESAME_OK) {
        sesame_log_info("request %s: provider %s answered error %.64s", req->request_id,
                        f->provider->name, error);
        enum sesame_page_id id = sesame_page_for_provider_error(error);
        struct sesame_page_ctx ctx = {0};
        /* access_denied is also what FranceConnect answers when it refuses
         * the citizen (account disabled, civil registry check failed): only
         * "User auth aborted" means the citizen cancelled. */
        char desc[256] = "";
        int http_status = sesame_page_http_status(id);
        if (id == SESAME_PAGE_PROVIDER_ACCESS_DENIED &&
            (sesame_url_query_get(m->query, m->query_len, "error_description", desc, sizeof(desc)) ==
                 SESAME_OK &&
             strcasecmp(desc, "User auth aborted") != 0)) {
            id = SESAME_PAGE_PROVIDER_OTHER;
            http_status = 403;
            ctx.reason = "Votre fournisseur d'identité a refusé la connexion (par exemple parce que "
                         "votre compte y est désactivé ou que votre identité n'a pas pu être "
                         "vérifiée). Vous n'avez rien annulé : contactez ce fournisseur pour en "
                         "savoir plus.";
        }
        signin_audited(req, id == SESAME_PAGE_PROVIDER_ACCESS_DENIED ? SESAME_SIGNIN_CANCELLED
                                                                    : SESAME_SIGNIN_PROVIDER_ERROR,
                       NULL, error);
        struct sesame_page_provider pp = {
            .name = f->provider->name,
            .brand = sesame_page_provider_brand(f->provider->name, f->provider->issuer)};
        ctx.providers = &pp;
        ctx.nproviders = 1;
        const char *rt = json_string_value(json_object_get(blob, "r"));
        ctx.return_to = rt ? rt : "/";
        ctx.acr = json_string_value(json_object_get(blob, "a"));
        sesame_gate_page(req, http_status, id, &ctx);
        return;
    }
    if (rc != SESAME_OK || code[0] == '\0') {
        login_refused_as(req, SESAME_SIGNIN_BAD_RESPONSE, "callback without code");
        return;
    }
    sesame_gate_cookie(req, req->conf->session.cookie_name, f->previous_id);
    char *err = NULL;
    f->rt = sesame_provider_registry_get(f->provider, &err);
    struct sesame_httpc *h = sesame_gate_httpc(req);
    if (f->rt == NULL || h == NULL) {
        signin_outcome(req, SESAME_SIGNIN_PROVIDER_UNAVAILABLE);
        provider_unavailable(req, f->provider, err ? err : "no HTTPS client");
        free(err);
        return;
    }
    f->redirect_uri = callback_url(req, "callback");
    const char *verifier = f->provider->pkce ? json_string_value(json_object_get(blob, "v")) : NULL;
    f->pop = sesame_provider_exchange(f->rt, h, code, f->redirect_uri, verifier, exchanged, req);
}

void
sesame_flow_callback(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    if (!sesame_url_query_unique(m->query, m->query_len)) {
        login_refused(req, "callback_malformed", "duplicated callback parameters");
        return;
    }
    char state[160];
    if (sesame_url_query_get(m->query, m->query_len, "state", state, sizeof(state)) != SESAME_OK ||
        strlen(state) < 22) {
        login_refused(req, "callback_malformed", "callback without a valid state");
        return;
    }
    char cname[128], binding[SESAME_SESSION_ID_LEN + 1];
    snprintf(cname, sizeof(cname), "%s_login", req->conf->session.cookie_name);
    if (sesame_gate_cookie(req, cname, binding) != SESAME_OK) {
        login_refused(req, "browser_mismatch", "no browser binding cookie (callback from another browser?)");
        return;
    }
    struct sesame_session_store *st = sesame_gate_store(req);
    if (st == NULL) {
        signin_outcome(req, SESAME_SIGNIN_REDIS_UNAVAILABLE);
        sesame_gate_error(req, 503, NULL);
        return;
    }
    struct flow *f = flow_new(req);
    char key[2 * (SESAME_SESSION_ID_LEN + 4) + 1];
    pending_key(key, state, binding);
    int rc = sesame_session_login_take(st, key, taken, req, &f->sop);
    if (rc != SESAME_AGAIN)
        login_refused(req, "state_invalid", "invalid state");
}

/* ------------------------------------------------------------------------
 * logout
 */

void
sesame_flow_csrf(const struct sesame_conf *conf, const char *session_id, char out[44])
{
    unsigned char mac[32];
    unsigned int len = 0;
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "logout:%s", session_id);
    HMAC(EVP_sha256(), conf->session.secret, SESAME_SESSION_KEY_LEN, (const unsigned char *)msg,
         (size_t)n, mac, &len);
    sesame_util_b64url_encode(out, mac, 32);
}

static void
signed_out(struct sesame_req *req)
{
    struct sesame_page_ctx ctx = {0};
    sesame_gate_page(req, 200, SESAME_PAGE_SIGNED_OUT, &ctx);
}

static void
logout_state_stored(int status, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    /* a member of a territory: the provider knows the territory's host */
    const struct sesame_conf_tenant *at = req->tenant->territory ? req->tenant->territory : req->tenant;
    char *post = sesame_asprintf("%s%slogout/callback", at->public_url, req->conf->server.prefix);
    const char *hint = f->hint ? f->hint : f->session->id_token;
    char *url = f->rt ? sesame_provider_end_session_url(f->rt, hint, f->state, post) : NULL;
    free(post);
    if (url == NULL) {
        signed_out(req);
        return;
    }
    sesame_server_redirect(req, 302, url);
    free(url);
}

static void
logout_ready(void *arg, enum sesame_provider_status st, const char *err)
{
    struct flow *f = resume(arg, OP_PROVIDER);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (st != SESAME_PROVIDER_OK || sesame_util_random_token(f->state, sizeof(f->state), 32) != SESAME_OK) {
        sesame_log_warn("request %s: signed out locally only: provider %s: %s", req->request_id,
                        f->session->provider, err ? err : "no state");
        signed_out(req);
        return;
    }
    json_t *blob = json_pack("{s:s, s:s}", "t", req->tenant->name, "k", "logout");
    int rc = sesame_session_login_put(sesame_gate_store(req), f->state, blob,
                                      req->conf->session.login_timeout_ms, logout_state_stored, req,
                                      &f->sop);
    json_decref(blob);
    if (rc != SESAME_AGAIN)
        signed_out(req);
}

static void logout_end_session(struct sesame_req *req);

static void
tree_revoked(int status, size_t count, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (status != SESAME_OK) {
        /* sessions of the tree may still exist: say so rather than pretend */
        sesame_gate_error(req, 503, NULL);
        return;
    }
    sesame_log_info("logout: request %s tenant %s: %zu sessions of its tree ended", req->request_id,
                    req->tenant->name, count);
    logout_end_session(req);
}

static void
logout_destroyed(int status, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL)
        return;
    struct sesame_req *req = f->req;
    if (status == SESAME_ERROR) {
        /* the session may still exist: say so rather than pretend */
        sesame_gate_error(req, 503, NULL);
        return;
    }
    sesame_gate_set_cookie(req, req->conf->session.cookie_name, NULL, 0);
    sesame_log_info("logout: request %s tenant %s account %s", req->request_id, req->tenant->name,
                    f->session->account);
    sesame_audit_event(&(struct sesame_audit_event){
        .event = "logout", .tenant = req->tenant->name, .account = f->session->account,
        .provider = f->session->provider, .outcome = "success", .client = audit_client(req)});
    if (f->session->tree != NULL) {
        int rc = sesame_session_revoke_account(sesame_gate_store(req), "@tree", f->session->tree,
                                               tree_revoked, req, &f->sop);
        if (rc != SESAME_AGAIN)
            sesame_gate_error(req, 503, NULL);
        return;
    }
    logout_end_session(req);
}

/* After the local session (and its tree): the provider's end-session. */
static void
logout_end_session(struct sesame_req *req)
{
    struct flow *f = req->ext;
    const struct sesame_conf_provider *p =
        f->session->provider ? sesame_conf_find_provider(req->conf, f->session->provider) : NULL;
    struct sesame_httpc *h = sesame_gate_httpc(req);
    if (p == NULL || (f->hint ? f->hint : f->session->id_token) == NULL || h == NULL) {
        signed_out(req);
        return;
    }
    f->rt = sesame_provider_registry_get(p, NULL);
    if (f->rt == NULL) {
        signed_out(req);
        return;
    }
    /* the end-session endpoint comes from the metadata: after a restart it
     * may not have been fetched yet */
    f->pop = sesame_provider_ensure(f->rt, h, logout_ready, req);
}

static void logout_destroy(struct sesame_req *req);
static void parent_loaded(int status, struct sesame_session *t, void *arg);

static void
logout_loaded(int status, struct sesame_session *s, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL) {
        sesame_session_free(s);
        return;
    }
    struct sesame_req *req = f->req;
    if (status == SESAME_ERROR) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    if (status != SESAME_OK || s == NULL) {
        sesame_gate_set_cookie(req, req->conf->session.cookie_name, NULL, 0);
        signed_out(req);
        return;
    }
    f->session = s;
    if (req->msg.method != SESAME_HTTP_POST) {
        char csrf[44];
        sesame_flow_csrf(req->conf, f->previous_id, csrf);
        struct sesame_page_ctx ctx = {0};
        ctx.csrf_token = csrf;
        /* the POST is redirected to the provider's end-session endpoint */
        const struct sesame_conf_provider *p =
            s->provider ? sesame_conf_find_provider(req->conf, s->provider) : NULL;
        char origin[512] = "";
        if (p && p->issuer) {
            const char *h = p->issuer + 8; /* issuers are https:// */
            size_t hl = strcspn(h, "/");
            snprintf(origin, sizeof(origin), "https://%.*s", (int)hl, h);
        }
        sesame_gate_page_origin(req, 200, SESAME_PAGE_LOGOUT, &ctx, origin[0] ? origin : NULL);
        return;
    }
    if (s->parent != NULL && req->tenant->territory != NULL) {
        /* the territory session's ID token, before the tree is revoked */
        struct sesame_session *t = NULL;
        int rc = sesame_session_load(sesame_gate_store(req), s->parent, req->tenant->territory->name,
                                     parent_loaded, req, &t, &f->sop);
        if (rc == SESAME_AGAIN)
            return;
        f->sop = NULL;
        parent_loaded(rc == SESAME_OK ? SESAME_OK : rc == SESAME_ERROR ? SESAME_ERROR : SESAME_DECLINED, t,
                      req);
        return;
    }
    logout_destroy(req);
}

static void
logout_destroy(struct sesame_req *req)
{
    struct flow *f = req->ext;
    int rc = sesame_session_destroy(sesame_gate_store(req), f->previous_id, logout_destroyed, req, &f->sop);
    if (rc != SESAME_AGAIN)
        logout_destroyed(SESAME_ERROR, req);
}

static void
parent_loaded(int status, struct sesame_session *t, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL) {
        sesame_session_free(t);
        return;
    }
    if (status == SESAME_ERROR) {
        sesame_gate_error(f->req, 503, NULL);
        return;
    }
    if (status == SESAME_OK && t != NULL && t->id_token != NULL)
        f->hint = sesame_strdup(t->id_token);
    sesame_session_free(t);
    logout_destroy(f->req);
}

static void
logout_load(struct sesame_req *req)
{
    struct flow *f = req->ext;
    struct sesame_session_store *st = sesame_gate_store(req);
    struct sesame_session *s = NULL;
    int rc = st ? sesame_session_load(st, f->previous_id, req->tenant->name, logout_loaded, req, &s, &f->sop)
                : SESAME_ERROR;
    if (rc == SESAME_AGAIN)
        return;
    f->sop = NULL;
    logout_loaded(rc, s, req);
}

static void
logout_form(struct sesame_req *req, int status, int http_status, const char *data, size_t len)
{
    struct flow *f = req->ext;
    if (gone(req))
        return;
    if (status != SESAME_OK) {
        sesame_gate_error(req, http_status, NULL);
        return;
    }
    char token[128];
    char expected[44];
    sesame_flow_csrf(req->conf, f->previous_id, expected);
    if (sesame_url_query_get(data, len, SESAME_PAGE_CSRF_FIELD, token, sizeof(token)) != SESAME_OK ||
        !sesame_util_ct_streq(token, expected)) {
        sesame_log_info("request %s: logout refused: bad CSRF token", req->request_id);
        sesame_gate_error(req, 403, "Cette demande de déconnexion n'a pas pu être vérifiée. "
                                    "Utilisez le bouton « Se déconnecter » du service.");
        return;
    }
    logout_load(req);
}

void
sesame_flow_logout(struct sesame_req *req)
{
    struct flow *f = flow_new(req);
    if (sesame_gate_cookie(req, req->conf->session.cookie_name, f->previous_id) != SESAME_OK) {
        signed_out(req);
        return;
    }
    if (req->msg.method == SESAME_HTTP_POST) {
        sesame_server_read_body(req, LOGOUT_FORM_MAX, logout_form);
        return;
    }
    logout_load(req);
}

static void
logout_state_taken(int status, json_t *blob, void *arg)
{
    struct flow *f = resume(arg, OP_SESSION);
    if (f == NULL) {
        json_decref(blob);
        return;
    }
    struct sesame_req *req = f->req;
    if (blob == NULL)
        sesame_log_info("request %s: logout callback with an unknown state (tolerated)", req->request_id);
    /* back at a territory's host from a logout started at one of its
     * communes: the signed-out page of that commune, on its own host */
    const char *from = json_string_value(json_object_get(blob, "t"));
    for (size_t i = 0; from && i < req->tenant->nmembers; i++) {
        const struct sesame_conf_tenant *m = req->tenant->members[i];
        if (strcmp(m->name, from) == 0) {
            char *url = sesame_asprintf("%s%slogout/callback", m->public_url, req->conf->server.prefix);
            json_decref(blob);
            sesame_server_redirect(req, 303, url);
            free(url);
            return;
        }
    }
    json_decref(blob);
    signed_out(req);
}

void
sesame_flow_logout_callback(struct sesame_req *req)
{
    char state[160];
    const struct sesame_http_request *m = &req->msg;
    if (sesame_url_query_get(m->query, m->query_len, "state", state, sizeof(state)) != SESAME_OK ||
        strlen(state) < 22) {
        sesame_log_info("request %s: logout callback without state (tolerated)", req->request_id);
        signed_out(req);
        return;
    }
    struct flow *f = flow_new(req);
    struct sesame_session_store *st = sesame_gate_store(req);
    int rc = st ? sesame_session_login_take(st, state, logout_state_taken, req, &f->sop) : SESAME_ERROR;
    if (rc != SESAME_AGAIN)
        signed_out(req);
}
