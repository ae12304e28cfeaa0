#include "gate/backchannel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "core/log.h"
#include "core/url.h"
#include "core/util.h"
#include "gate/gate.h"
#include "oidc/jose.h"
#include "oidc/provider.h"
#include "session/redis.h"
#include "session/session.h"

#define FORM_MAX (SESAME_JOSE_MAX_TOKEN + 256)
#define EVENT "http://schemas.openid.net/event/backchannel-logout"

/* The index of (provider, kind, value): hex SHA-256, the "account" of
 * tenant "@bcl" in the session store's index keys. */
static void
index_name(const char *provider, const char *kind, const char *value, char out[65])
{
    char *msg = sesame_asprintf("%s\n%s\n%s", provider, kind, value);
    unsigned char h[32];
    sesame_util_sha256(msg, strlen(msg), h);
    free(msg);
    sesame_util_hex(out, h, 32);
}

void
sesame_backchannel_index(struct sesame_req *req, const char *provider, const char *sub,
                         const char *sid, const char *cookie_id)
{
    struct sesame_redis *redis = sesame_gate_redis(req);
    char key[512];
    unsigned char hash[32];
    if (redis == NULL || provider == NULL || sub == NULL ||
        sesame_session_key(req->conf->redis.prefix, cookie_id, key, sizeof(key), hash) != SESAME_OK)
        return;
    char hex[65], life[24];
    sesame_util_hex(hex, hash, 32);
    snprintf(life, sizeof(life), "%llu", (unsigned long long)req->conf->session.max_lifetime_ms);
    const char *kinds[2] = {"sub", "sid"};
    const char *values[2] = {sub, sid};
    for (int i = 0; i < 2; i++) {
        if (values[i] == NULL || values[i][0] == '\0')
            continue;
        char name[65];
        index_name(provider, kinds[i], values[i], name);
        char *idx = sesame_asprintf("%sa:@bcl:%s", req->conf->redis.prefix, name);
        const char *sadd[] = {"SADD", idx, hex};
        const char *pexp[] = {"PEXPIRE", idx, life};
        struct sesame_redis_cmd cmds[2] = {{3, sadd, NULL}, {3, pexp, NULL}};
        sesame_redis_transaction(redis, NULL, NULL, cmds, 2);
        free(idx);
    }
}

/* ---- the endpoint ---- */

struct bcl {
    struct sesame_provider *rt;
    struct sesame_provider_op *pop;
    struct sesame_redis_op *rop;
    struct sesame_session_op *sop;
    const struct sesame_conf_provider *provider;
    char *token;
    char index[65];
    const char *kind;
    bool front;                      /* front-channel: answer_frame() */
};

static void
bcl_free(struct sesame_req *req)
{
    struct bcl *b = req->ext;
    if (b->pop)
        sesame_provider_cancel(b->pop);
    if (b->rop)
        sesame_redis_cancel(b->rop);
    if (b->sop)
        sesame_session_cancel(b->sop);
    if (b->rt)
        sesame_provider_unref(b->rt);
    free(b->token);
    free(b);
    req->ext = NULL;
    req->ext_free = NULL;
}

static void
answer(struct sesame_req *req, int status, const char *error)
{
    struct evbuffer *body = evbuffer_new();
    if (error)
        evbuffer_add_printf(body, "{\"error\":\"%s\"}", error);
    sesame_server_respond(req, status, error ? "application/json" : NULL,
                          "Cache-Control: no-store\r\n", body);
    evbuffer_free(body);
}

static void
refuse(struct sesame_req *req, const char *why)
{
    sesame_log_warn("request %s: back-channel logout token refused: %s", req->request_id, why);
    answer(req, 400, "invalid_request");
}

/* The unverified claims of a compact JWS, to find the provider (verified
 * afterwards). */
static json_t *
peek_claims(const char *jws)
{
    const char *d1 = strchr(jws, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (d2 == NULL || d2 - d1 - 1 <= 0)
        return NULL;
    size_t n = (size_t)(d2 - d1 - 1);
    char *raw = sesame_malloc(n * 3 / 4 + 2);
    long len = sesame_util_b64url_decode(raw, d1 + 1, n);
    json_t *o = len > 0 ? json_loadb(raw, (size_t)len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(raw);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static bool
aud_has(const json_t *aud, const char *client_id)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), client_id) == 0;
    if (!json_is_array(aud) || json_array_size(aud) == 0)
        return false;
    size_t i;
    json_t *v;
    bool found = false;
    json_array_foreach(aud, i, v) {
        if (!json_is_string(v))
            return false;
        if (strcmp(json_string_value(v), client_id) == 0)
            found = true;
    }
    return found;
}

/* The origin (scheme://host[:port]) of an https URL into out; false when it
 * has none. */
static bool
url_origin(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return false;
    size_t n = (size_t)(p + 3 - url) + strcspn(p + 3, "/?#");
    if (n >= cap)
        return false;
    memcpy(out, url, n);
    out[n] = '\0';
    return true;
}

/* The answer of a front-channel logout: an empty page that only the
 * provider's origin may frame. */
static void
answer_frame(struct sesame_req *req, const struct sesame_conf_provider *p)
{
    char origin[300], headers[512];
    url_origin(p->issuer, origin, sizeof(origin));
    snprintf(headers, sizeof(headers),
             "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
             "Content-Security-Policy: default-src 'none'; frame-ancestors %s\r\n",
             origin);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add_printf(body, "<!doctype html><html lang=\"fr\"><title>Déconnexion</title></html>\n");
    sesame_server_respond(req, 200, "text/html; charset=utf-8", headers, body);
    evbuffer_free(body);
}

static void
revoked_cb(int status, size_t count, void *arg)
{
    struct sesame_req *req = arg;
    struct bcl *b = req->ext;
    b->sop = NULL;
    if (req->aborted) {
        sesame_server_request_done(req);
        return;
    }
    if (status != SESAME_OK) {
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    sesame_log_info("request %s: %s-channel logout from provider %s: %zu session(s) by %s revoked",
                    req->request_id, b->front ? "front" : "back", b->provider->name, count, b->kind);
    if (b->front)
        answer_frame(req, b->provider);
    else
        answer(req, 200, NULL);
}

static void
jti_cb(const redisReply *reply, void *arg)
{
    struct sesame_req *req = arg;
    struct bcl *b = req->ext;
    b->rop = NULL;
    if (req->aborted) {
        sesame_server_request_done(req);
        return;
    }
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    if (reply->type != REDIS_REPLY_STATUS) { /* nil: the jti was already used */
        refuse(req, "jti already used (replay)");
        return;
    }
    struct sesame_session_store *st = sesame_gate_store(req);
    int rc = st ? sesame_session_revoke_account(st, "@bcl", b->index, revoked_cb, req, &b->sop)
                : SESAME_ERROR;
    if (rc != SESAME_AGAIN)
        answer(req, 503, "temporarily_unavailable");
}

/* The logout-token rules on verified claims; NULL when they hold, else why. */
static const char *
check_claims(const struct sesame_conf_provider *p, const json_t *c, int64_t now)
{
    int64_t leeway = (int64_t)sesame_util_ms_to_s_ceil(p->leeway_ms);
    const json_t *iss = json_object_get(c, "iss");
    if (!json_is_string(iss) || strcmp(json_string_value(iss), p->issuer) != 0)
        return "iss";
    if (!aud_has(json_object_get(c, "aud"), p->client_id))
        return "aud";
    const json_t *azp = json_object_get(c, "azp");
    if (azp != NULL && (!json_is_string(azp) || strcmp(json_string_value(azp), p->client_id) != 0))
        return "azp";
    const json_t *iat = json_object_get(c, "iat");
    if (!json_is_integer(iat) && !json_is_real(iat))
        return "iat missing";
    if ((int64_t)json_number_value(iat) > now + leeway)
        return "iat in the future";
    if ((int64_t)json_number_value(iat) < now - 86400 - leeway)
        return "iat too old";
    const json_t *exp = json_object_get(c, "exp");
    if (exp != NULL && (!json_is_number(exp) || (int64_t)json_number_value(exp) <= now - leeway))
        return "exp";
    const json_t *events = json_object_get(c, "events");
    if (!json_is_object(events) || !json_is_object(json_object_get(events, EVENT)))
        return "events";
    if (json_object_get(c, "nonce") != NULL)
        return "nonce present";
    const json_t *jti = json_object_get(c, "jti");
    if (!json_is_string(jti) || json_string_length(jti) == 0 || json_string_length(jti) > 256)
        return "jti";
    const json_t *sub = json_object_get(c, "sub"), *sid = json_object_get(c, "sid");
    if ((sub != NULL && (!json_is_string(sub) || json_string_length(sub) == 0)) ||
        (sid != NULL && (!json_is_string(sid) || json_string_length(sid) == 0)))
        return "sub or sid not a string";
    if (sub == NULL && sid == NULL)
        return "neither sub nor sid";
    return NULL;
}

static void
ready_cb(void *arg, enum sesame_provider_status st, const char *err)
{
    struct sesame_req *req = arg;
    struct bcl *b = req->ext;
    b->pop = NULL;
    if (req->aborted) {
        sesame_server_request_done(req);
        return;
    }
    if (st != SESAME_PROVIDER_OK) {
        sesame_log_warn("request %s: back-channel logout: provider %s keys unavailable: %s",
                        req->request_id, b->provider->name, err ? err : "?");
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    json_t *claims = NULL;
    char *why = NULL;
    int rc = sesame_provider_verify_jws(b->rt, b->token, &claims, &why);
    if (rc != SESAME_OK) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", rc == SESAME_JOSE_UNKNOWN_KID ? "unknown kid"
                                                                       : why ? why : "signature");
        free(why);
        refuse(req, buf);
        return;
    }
    int64_t now = sesame_util_now();
    const char *bad = check_claims(b->provider, claims, now);
    if (bad) {
        json_decref(claims);
        refuse(req, bad);
        return;
    }
    const char *sid = json_string_value(json_object_get(claims, "sid"));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    b->kind = sid ? "sid" : "sub";
    index_name(b->provider->name, b->kind, sid ? sid : sub, b->index);
    /* jti: once, for as long as the token could be presented */
    const json_t *exp = json_object_get(claims, "exp");
    int64_t ttl = BACKCHANNEL_JTI_TTL_S;
    if (json_is_number(exp) && (int64_t)json_number_value(exp) - now + 60 > ttl)
        ttl = (int64_t)json_number_value(exp) - now + 60;
    char *m = sesame_asprintf("%s\n%s", b->provider->issuer,
                              json_string_value(json_object_get(claims, "jti")));
    json_decref(claims);
    unsigned char h[32];
    char hex[65], ttlbuf[24];
    sesame_util_sha256(m, strlen(m), h);
    free(m);
    sesame_util_hex(hex, h, 32);
    snprintf(ttlbuf, sizeof(ttlbuf), "%lld", (long long)ttl);
    char *key = sesame_asprintf("%sbj:%s", req->conf->redis.prefix, hex);
    struct sesame_redis *redis = sesame_gate_redis(req);
    if (redis == NULL) {
        free(key);
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    const char *argv[] = {"SET", key, "1", "EX", ttlbuf, "NX"};
    b->rop = sesame_redis_command(redis, jti_cb, req, 6, argv, NULL);
    free(key);
}

static void
form_cb(struct sesame_req *req, int status, int http_status, const char *data, size_t len)
{
    if (status != SESAME_OK) {
        answer(req, http_status, "invalid_request");
        return;
    }
    char *tok = sesame_malloc(FORM_MAX + 1);
    if (sesame_url_query_get(data, len, "logout_token", tok, FORM_MAX + 1) != SESAME_OK ||
        tok[0] == '\0') {
        free(tok);
        refuse(req, "no logout_token");
        return;
    }
    json_t *peek = peek_claims(tok);
    const char *iss = json_string_value(json_object_get(peek, "iss"));
    const json_t *aud = json_object_get(peek, "aud");
    const struct sesame_conf_provider *p = NULL;
    for (size_t i = 0; iss && i < req->tenant->nproviders && p == NULL; i++) {
        const struct sesame_conf_provider *c = req->tenant->providers[i];
        if (strcmp(c->issuer, iss) == 0 && aud_has(aud, c->client_id))
            p = c;
    }
    json_decref(peek);
    if (p == NULL) {
        free(tok);
        refuse(req, "no provider of this tenant has that iss and aud");
        return;
    }
    char *err = NULL;
    struct sesame_provider *rt = sesame_provider_registry_get(p, &err);
    struct sesame_httpc *h = sesame_gate_httpc(req);
    if (rt == NULL || h == NULL) {
        sesame_log_warn("request %s: back-channel logout: provider %s unusable: %s", req->request_id,
                        p->name, err ? err : "no HTTPS client");
        free(err);
        free(tok);
        if (rt)
            sesame_provider_unref(rt);
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    struct bcl *b = sesame_calloc(1, sizeof(*b));
    b->rt = rt;
    b->provider = p;
    b->token = tok;
    req->ext = b;
    req->ext_free = bcl_free;
    b->pop = sesame_provider_ensure(rt, h, ready_cb, req);
}

void
sesame_backchannel_logout(struct sesame_req *req)
{
    if (sesame_gate_store(req) == NULL) {
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    const struct sesame_http_header *ct = sesame_http_find_header(&req->msg.h, "Content-Type");
    if (ct == NULL || ct->value_len < 33 ||
        !sesame_util_ascii_ieq(ct->value, 33, "application/x-www-form-urlencoded")) {
        answer(req, 400, "invalid_request");
        return;
    }
    sesame_server_read_body(req, FORM_MAX * 3 + 64, form_cb);
}

/* ---- front-channel logout ---- */


void
sesame_frontchannel_logout(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    char iss[1024] = "", sid[256] = "";
    if (!sesame_url_query_unique(m->query, m->query_len) ||
        sesame_url_query_get(m->query, m->query_len, "iss", iss, sizeof(iss)) != SESAME_OK ||
        sesame_url_query_get(m->query, m->query_len, "sid", sid, sizeof(sid)) != SESAME_OK ||
        iss[0] == '\0' || sid[0] == '\0') {
        refuse(req, "front-channel logout without iss and sid");
        return;
    }
    const struct sesame_conf_provider *p = NULL;
    for (size_t i = 0; i < req->tenant->nproviders && p == NULL; i++)
        if (strcmp(req->tenant->providers[i]->issuer, iss) == 0)
            p = req->tenant->providers[i];
    struct sesame_session_store *st = sesame_gate_store(req);
    if (p == NULL) {
        refuse(req, "front-channel logout: no provider of this tenant has that iss");
        return;
    }
    if (st == NULL) {
        answer(req, 503, "temporarily_unavailable");
        return;
    }
    struct bcl *b = sesame_calloc(1, sizeof(*b));
    b->provider = p;
    b->kind = "sid";
    b->front = true;
    index_name(p->name, "sid", sid, b->index);
    req->ext = b;
    req->ext_free = bcl_free;
    if (sesame_session_revoke_account(st, "@bcl", b->index, revoked_cb, req, &b->sop) != SESAME_AGAIN) {
        b->sop = NULL;
        answer(req, 503, "temporarily_unavailable");
    }
}
