#include "gate/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/log.h"
#include "core/url.h"
#include "core/util.h"
#include "gate/gate.h"
#include "pages/page.h"
#include "session/redis.h"

#define REPLAY_VERSION 'R'
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN (1 + NONCE_LEN)
#define ID_LEN SESAME_SESSION_ID_LEN
#define RESUME_FORM_MAX 1024
#define REPLAY_LABEL "sesame replay v1"

/* ---- helpers ---- */

static const struct sesame_http_header *
content_type(const struct sesame_req *req)
{
    return sesame_http_find_header(&req->msg.h, "Content-Type");
}

static bool
type_is(const struct sesame_http_header *h, const char *lit)
{
    size_t n = strlen(lit);
    return h != NULL && h->value_len >= n && strncasecmp(h->value, lit, n) == 0 &&
           (h->value_len == n || h->value[n] == ';' || h->value[n] == ' ');
}

bool
sesame_replay_wanted(const struct sesame_req *req)
{
    if (req->msg.method != SESAME_HTTP_POST || req->conf->server.preserve_post_max == 0 ||
        sesame_gate_is_api(req))
        return false;
    const struct sesame_http_header *ct = content_type(req);
    return type_is(ct, "application/x-www-form-urlencoded") || type_is(ct, "multipart/form-data");
}

static char *
replay_key(const struct sesame_conf *conf, const char *id)
{
    unsigned char h[32];
    char hex[65];
    sesame_util_sha256(id, strlen(id), h);
    sesame_util_hex(hex, h, 32);
    size_t n = strlen(conf->redis.prefix) + 2 + 64 + 1;
    char *key = sesame_malloc(n);
    snprintf(key, n, "%sr:%s", conf->redis.prefix, hex);
    return key;
}

static bool
derive(const unsigned char secret[SESAME_SESSION_KEY_LEN], unsigned char out[32])
{
    unsigned int len = 0;
    return HMAC(EVP_sha256(), secret, SESAME_SESSION_KEY_LEN, (const unsigned char *)REPLAY_LABEL,
                sizeof(REPLAY_LABEL) - 1, out, &len) != NULL &&
           len == 32;
}

static int
seal(const struct sesame_conf_session *conf, const char *aad, const void *plain, size_t plen,
     unsigned char **out, size_t *outlen)
{
    unsigned char key[32];
    if (plen > INT32_MAX || !derive(conf->secret, key))
        return SESAME_ERROR;
    size_t total = HEADER_LEN + plen + TAG_LEN;
    unsigned char *buf = sesame_malloc(total);
    buf[0] = REPLAY_VERSION;
    unsigned char *ct = buf + HEADER_LEN;
    int rc = SESAME_ERROR, n;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx != NULL && sesame_util_random(buf + 1, NONCE_LEN) == SESAME_OK &&
        EVP_EncryptInit_ex(ctx, sesame_util_aes256gcm(), NULL, key, buf + 1) == 1 &&
        EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
        (plen == 0 || EVP_EncryptUpdate(ctx, ct, &n, plain, (int)plen) == 1) &&
        EVP_EncryptFinal_ex(ctx, ct + plen, &n) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + plen) == 1)
        rc = SESAME_OK;
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc != SESAME_OK) {
        free(buf);
        return SESAME_ERROR;
    }
    *out = buf;
    *outlen = total;
    return SESAME_OK;
}

/* Opens a value under the current or the previous secret: a malloc'd
 * plaintext (NUL-terminated, *plen bytes) or NULL. */
static char *
open_value(const struct sesame_conf_session *conf, const char *aad, const unsigned char *in,
           size_t inlen, size_t *plen)
{
    if (inlen < HEADER_LEN + TAG_LEN || in[0] != REPLAY_VERSION || inlen > INT32_MAX)
        return NULL;
    size_t ctlen = inlen - HEADER_LEN - TAG_LEN;
    unsigned char *out = sesame_malloc(ctlen + 1);
    const unsigned char *secrets[2] = {conf->secret, conf->has_previous_secret ? conf->previous_secret : NULL};
    for (size_t i = 0; i < 2; i++) {
        unsigned char key[32];
        if (secrets[i] == NULL || !derive(secrets[i], key))
            continue;
        int n;
        bool ok = false;
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        if (ctx != NULL && EVP_DecryptInit_ex(ctx, sesame_util_aes256gcm(), NULL, key, in + 1) == 1 &&
            EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
            (ctlen == 0 || EVP_DecryptUpdate(ctx, out, &n, in + HEADER_LEN, (int)ctlen) == 1) &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                (void *)(in + HEADER_LEN + ctlen)) == 1 &&
            EVP_DecryptFinal_ex(ctx, out + ctlen, &n) == 1)
            ok = true;
        EVP_CIPHER_CTX_free(ctx);
        OPENSSL_cleanse(key, sizeof(key));
        if (ok) {
            out[ctlen] = '\0';
            *plen = ctlen;
            return (char *)out;
        }
    }
    free(out);
    return NULL;
}

static void
kept_cookie_name(const struct sesame_req *req, char *out, size_t cap)
{
    snprintf(out, cap, "%s_kept", req->conf->session.cookie_name);
}

/* ---- per-request state ---- */

struct replay {
    struct sesame_redis_op *op;
    char id[ID_LEN + 1];
    char binding[ID_LEN + 1];
    char *key;
    const char *acr;       /* borrowed from the route (lives with req->conf) */
    bool direct;
    bool take;             /* POST resume: GET (checked), then GETDEL */
    bool taking;           /* the GETDEL was sent */
};

static void
replay_free(struct sesame_req *req)
{
    struct replay *r = req->ext;
    if (r->op)
        sesame_redis_cancel(r->op);
    free(r->key);
    free(r);
    req->ext = NULL;
    req->ext_free = NULL;
}

static struct replay *
replay_attach(struct sesame_req *req)
{
    if (req->ext_free)
        req->ext_free(req); /* the access state of gate.c (no operation in flight) */
    struct replay *r = sesame_calloc(1, sizeof(*r));
    req->ext = r;
    req->ext_free = replay_free;
    return r;
}

/* ---- keeping ---- */

static void
too_large(struct sesame_req *req)
{
    struct sesame_page_ctx ctx = {0};
    ctx.reason = "Ce que vous avez saisi est trop volumineux pour être conservé pendant que vous vous "
                 "identifiez à nouveau (votre session avait pris fin). Après une nouvelle identification, "
                 "revenez au formulaire et envoyez-le de nouveau, avec un fichier plus petit si vous "
                 "en joigniez un.";
    req->close_after = true;
    if (sesame_gate_is_api(req)) {
        sesame_gate_error(req, 413, NULL);
        return;
    }
    sesame_gate_page(req, 413, SESAME_PAGE_ERROR_413, &ctx);
}

static void
stored_cb(const redisReply *reply, void *arg)
{
    struct sesame_req *req = arg;
    struct replay *r = req->ext;
    r->op = NULL;
    if (req->aborted) {
        sesame_server_request_done(req);
        return;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        sesame_log_warn("request %s: kept form not stored", req->request_id);
        sesame_gate_error(req, 503, NULL);
        return;
    }
    char cname[128];
    kept_cookie_name(req, cname, sizeof(cname));
    sesame_gate_set_cookie(req, cname, r->binding,
                           (int64_t)sesame_util_ms_to_s_ceil(req->conf->server.preserve_post_ttl_ms));
    /* the sign-in comes back to <prefix>resume?id=ID: the URL is built for
     * that path as if it had been requested */
    char *path = req->canon.path;
    size_t plen = req->canon.path_len;
    const char *query = req->msg.query;
    size_t qlen = req->msg.query_len;
    size_t n = strlen(req->conf->server.prefix) + 7;
    char *rpath = sesame_malloc(n);
    snprintf(rpath, n, "%sresume", req->conf->server.prefix);
    char rquery[8 + ID_LEN];
    snprintf(rquery, sizeof(rquery), "id=%s", r->id);
    req->canon.path = rpath;
    req->canon.path_len = strlen(rpath);
    req->msg.query = rquery;
    req->msg.query_len = strlen(rquery);
    char *url = sesame_gate_signin_url(req, r->acr, r->direct);
    req->canon.path = path;
    req->canon.path_len = plen;
    req->msg.query = query;
    req->msg.query_len = qlen;
    free(rpath);
    if (url == NULL) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    sesame_log_info("request %s: form kept (%zu bytes) across the sign-in", req->request_id,
                    req->body_len);
    sesame_server_redirect(req, 303, url);
    free(url);
}

static void
body_cb(struct sesame_req *req, int status, int http_status, const char *data, size_t len)
{
    struct replay *r = req->ext;
    if (status != SESAME_OK) {
        if (http_status == 413)
            too_large(req);
        else
            sesame_gate_error(req, http_status, NULL);
        return;
    }
    struct sesame_redis *redis = sesame_gate_redis(req);
    if (redis == NULL) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    char cname[128];
    kept_cookie_name(req, cname, sizeof(cname));
    if (sesame_gate_cookie(req, cname, r->binding) != SESAME_OK &&
        sesame_util_random_token(r->binding, sizeof(r->binding), 32) != SESAME_OK) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    if (sesame_util_random_token(r->id, sizeof(r->id), 32) != SESAME_OK) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    const struct sesame_http_header *ct = content_type(req);
    struct evbuffer *target = evbuffer_new();
    evbuffer_add(target, req->canon.path, req->canon.path_len);
    if (req->msg.query) {
        evbuffer_add(target, "?", 1);
        evbuffer_add(target, req->msg.query, req->msg.query_len);
    }
    evbuffer_add(target, "", 1);
    char *ctype = sesame_malloc(ct->value_len + 1);
    memcpy(ctype, ct->value, ct->value_len);
    ctype[ct->value_len] = '\0';
    json_t *meta = json_pack("{s:s, s:s, s:s, s:s}", "t", req->tenant->name, "u",
                             (const char *)evbuffer_pullup(target, -1), "c", ctype, "b", r->binding);
    free(ctype);
    evbuffer_free(target);
    char *line = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    if (line == NULL) {
        sesame_gate_error(req, 400, NULL); /* not UTF-8: not kept */
        return;
    }
    size_t ll = strlen(line);
    size_t plen = ll + 1 + len;
    char *plain = sesame_malloc(plen);
    memcpy(plain, line, ll);
    plain[ll] = '\n';
    memcpy(plain + ll + 1, data, len);
    free(line);
    r->key = replay_key(req->conf, r->id);
    unsigned char *val;
    size_t vlen;
    int rc = seal(&req->conf->session, r->key, plain, plen, &val, &vlen);
    OPENSSL_cleanse(plain, plen);
    free(plain);
    if (rc != SESAME_OK) {
        sesame_gate_error(req, 500, NULL);
        return;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)req->conf->server.preserve_post_ttl_ms);
    const char *argv[] = {"SET", r->key, (const char *)val, "PX", ttl, "NX"};
    size_t lens[] = {3, strlen(r->key), vlen, 2, strlen(ttl), 2};
    r->op = sesame_redis_command(redis, stored_cb, req, 6, argv, lens);
    free(val);
}

void
sesame_replay_keep(struct sesame_req *req, const char *acr, bool direct)
{
    struct replay *r = replay_attach(req);
    r->acr = acr;
    r->direct = direct;
    const struct sesame_conf_server *s = &req->conf->server;
    if (req->msg.h.content_length > 0 && (uint64_t)req->msg.h.content_length > s->preserve_post_max) {
        sesame_log_info("request %s: form of %lld bytes too large to keep across the sign-in",
                        req->request_id, (long long)req->msg.h.content_length);
        too_large(req);
        return;
    }
    sesame_server_read_body(req, (size_t)s->preserve_post_max, body_cb);
}

/* ---- resuming ---- */

/* The kept record, checked against the request: tenant and binding. The
 * metadata in *meta (caller decrefs), the body at *body (inside *plain). */
static bool
record_ok(struct sesame_req *req, struct replay *r, const redisReply *reply, char **plain,
          json_t **meta, const char **body, size_t *blen)
{
    if (reply == NULL || reply->type != REDIS_REPLY_STRING)
        return false;
    size_t plen;
    *plain = open_value(&req->conf->session, r->key, (const unsigned char *)reply->str,
                        (size_t)reply->len, &plen);
    if (*plain == NULL)
        return false;
    char *nl = memchr(*plain, '\n', plen);
    *meta = nl ? json_loadb(*plain, (size_t)(nl - *plain), JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *t = json_string_value(json_object_get(*meta, "t"));
    const char *b = json_string_value(json_object_get(*meta, "b"));
    const char *u = json_string_value(json_object_get(*meta, "u"));
    const char *c = json_string_value(json_object_get(*meta, "c"));
    char cname[128], cookie[ID_LEN + 1];
    kept_cookie_name(req, cname, sizeof(cname));
    if (t == NULL || b == NULL || u == NULL || c == NULL || u[0] != '/' ||
        strcmp(t, req->tenant->name) != 0 || sesame_gate_cookie(req, cname, cookie) != SESAME_OK ||
        !sesame_util_ct_streq(cookie, b)) {
        json_decref(*meta);
        *meta = NULL;
        OPENSSL_cleanse(*plain, plen);
        free(*plain);
        *plain = NULL;
        return false;
    }
    *body = nl + 1;
    *blen = plen - (size_t)(nl + 1 - *plain);
    return true;
}

static void
gone(struct sesame_req *req)
{
    sesame_gate_error(req, 400, "Votre saisie conservée n'est plus disponible : le délai est dépassé, "
                                "elle a déjà été envoyée, ou elle a été faite depuis un autre "
                                "navigateur. Revenez au formulaire pour la saisir de nouveau.");
}

/* Continues the request as the kept POST: its path and query, Content-Type
 * and body (put back in front of the connection's input, where the proxy
 * reads request bodies), then the route decision as for any request. */
static void
continue_as(struct sesame_req *req, const json_t *meta, const char *body, size_t blen)
{
    const char *u = json_string_value(json_object_get(meta, "u"));
    const char *c = json_string_value(json_object_get(meta, "c"));
    const struct sesame_http_header *ct = content_type(req);
    struct bufferevent *bev = sesame_server_client_bev(req);
    if (ct == NULL || bev == NULL) {
        sesame_gate_error(req, 400, NULL);
        return;
    }
    /* strings the request's parsed head points to: kept in req->body, which
     * lives as long as the request */
    size_t ul = strlen(u), cl = strlen(c);
    char *stash = sesame_malloc(ul + cl + 2);
    memcpy(stash, u, ul + 1);
    memcpy(stash + ul + 1, c, cl + 1);
    free(req->body);
    req->body = stash;
    req->body_len = 0;
    req->body_consumed = false; /* the kept body is unread: answered without proxying, the
                                   connection closes */
    char *q = strchr(stash, '?');
    size_t pl = q ? (size_t)(q - stash) : ul;
    free(req->canon.path);
    req->canon.path = sesame_malloc(pl + 1);
    memcpy(req->canon.path, stash, pl);
    req->canon.path[pl] = '\0';
    req->canon.path_len = pl;
    req->msg.query = q ? q + 1 : NULL;
    req->msg.query_len = q ? strlen(q + 1) : 0;
    for (size_t i = 0; i < req->msg.h.nheaders; i++) {
        struct sesame_http_header *h = &req->msg.h.headers[i];
        if (sesame_util_ascii_ieq(h->name, h->name_len, "content-type")) {
            h->value = stash + ul + 1;
            h->value_len = cl;
        }
    }
    req->msg.h.content_length = (int64_t)blen;
    req->msg.h.chunked = false;
    req->msg.expect_continue = false;
    evbuffer_prepend(bufferevent_get_input(bev), body, blen);
    const struct sesame_canon_req *cn = &req->canon;
    req->route = sesame_conf_find_route(req->conf, req->tenant, cn->authority, cn->host_len, cn->path,
                                        cn->path_len);
    if (req->route == NULL) {
        sesame_gate_error(req, 404, NULL);
        return;
    }
    sesame_log_info("request %s: kept form sent again (%zu bytes) to route %s", req->request_id, blen,
                    req->route->name);
    sesame_gate_route(req);
}

static void
fetched_cb(const redisReply *reply, void *arg)
{
    struct sesame_req *req = arg;
    struct replay *r = req->ext;
    r->op = NULL;
    if (req->aborted) {
        sesame_server_request_done(req);
        return;
    }
    if (reply == NULL) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    char *plain = NULL;
    json_t *meta = NULL;
    const char *body = NULL;
    size_t blen = 0;
    if (!record_ok(req, r, reply, &plain, &meta, &body, &blen)) {
        sesame_log_info("request %s: kept form unknown, expired, used or of another browser",
                        req->request_id);
        gone(req);
        return;
    }
    if (r->take && !r->taking) {
        /* this browser's: now taken, once (another browser never consumes it) */
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
        json_decref(meta);
        struct sesame_redis *redis = sesame_gate_redis(req);
        if (redis == NULL) {
            sesame_gate_error(req, 503, NULL);
            return;
        }
        r->taking = true;
        const char *argv[] = {"GETDEL", r->key};
        r->op = sesame_redis_command(redis, fetched_cb, req, 2, argv, NULL);
        return;
    }
    if (!r->take) {
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
        json_decref(meta);
        struct sesame_page_ctx ctx = {0};
        ctx.resume_id = r->id;
        sesame_gate_page(req, 200, SESAME_PAGE_POST_KEPT, &ctx);
        return;
    }
    replay_free(req);
    continue_as(req, meta, body, blen);
    json_decref(meta);
    free(plain);
}

static void
fetch(struct sesame_req *req, struct replay *r, const char *id)
{
    struct sesame_redis *redis = sesame_gate_redis(req);
    if (redis == NULL) {
        sesame_gate_error(req, 503, NULL);
        return;
    }
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->key = replay_key(req->conf, id);
    const char *argv[] = {"GET", r->key};
    r->op = sesame_redis_command(redis, fetched_cb, req, 2, argv, NULL);
}

static bool
valid_id(const char *id)
{
    if (strlen(id) != ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

static void
form_cb(struct sesame_req *req, int status, int http_status, const char *data, size_t len)
{
    struct replay *r = req->ext;
    char id[ID_LEN + 2] = "";
    if (status != SESAME_OK) {
        sesame_gate_error(req, http_status, NULL);
        return;
    }
    if (sesame_url_query_get(data, len, "id", id, sizeof(id)) != SESAME_OK || !valid_id(id)) {
        gone(req);
        return;
    }
    r->take = true;
    fetch(req, r, id);
}

void
sesame_replay_resume(struct sesame_req *req)
{
    struct replay *r = replay_attach(req);
    if (req->msg.method == SESAME_HTTP_POST) {
        sesame_server_read_body(req, RESUME_FORM_MAX, form_cb);
        return;
    }
    char id[ID_LEN + 2] = "";
    if (sesame_url_query_get(req->msg.query, req->msg.query_len, "id", id, sizeof(id)) != SESAME_OK ||
        !valid_id(id)) {
        gone(req);
        return;
    }
    fetch(req, r, id);
}
