#include "gate/forward.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "core/log.h"
#include "core/url.h"
#include "core/util.h"
#include "gate/gate.h"
#include "http/canon.h"

#define MAX_ORIGINAL 8192

static const struct sesame_http_header *
header(const struct sesame_req *req, const char *name)
{
    return sesame_http_find_header(&req->msg.h, name);
}

/* A Host value as parser.h accepts it: reg-name or IPv4 of ALPHA DIGIT - . _ ~,
 * or "[IPv6]", then an optional ":port". */
static bool
host_syntax_ok(const char *h, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    size_t i = 0;
    if (h[0] == '[') {
        while (i < n && h[i] != ']') {
            char c = h[i];
            if (i > 0 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                           c == ':' || c == '.'))
                return false;
            i++;
        }
        if (i == n || i < 3)
            return false;
        i++;
    } else {
        while (i < n && h[i] != ':') {
            char c = h[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
                  c == '.' || c == '_' || c == '~'))
                return false;
            i++;
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (h[i] != ':' || i + 1 == n || n - i - 1 > 5)
        return false;
    for (i++; i < n; i++)
        if (h[i] < '0' || h[i] > '9')
            return false;
    return true;
}

static void
refuse(struct sesame_req *req, int status, const char *why)
{
    sesame_log_info("request %s: forward-auth from %s refused (%d): %s", req->request_id, req->client_ip,
                    status, why);
    sesame_gate_error(req, status, NULL);
}

void
sesame_forward_auth(struct sesame_req *req)
{
    const struct sesame_conf *conf = req->conf;
    if (req->msg.method != SESAME_HTTP_GET && req->msg.method != SESAME_HTTP_HEAD) {
        sesame_gate_error(req, 405, NULL);
        return;
    }
    if (conf->server.ntrusted_proxies == 0 || !sesame_conf_is_trusted_proxy(conf, sesame_server_peer(req))) {
        refuse(req, 403, "the peer is not in trusted_proxies");
        return;
    }
    char mode[8] = "";
    if (req->msg.query &&
        sesame_url_query_get(req->msg.query, req->msg.query_len, "signin", mode, sizeof(mode)) == SESAME_ERROR) {
        refuse(req, 400, "bad signin parameter");
        return;
    }
    if (mode[0] != '\0' && strcmp(mode, "401") != 0 && strcmp(mode, "302") != 0) {
        refuse(req, 400, "signin must be 401 or 302");
        return;
    }
    /* the original target: X-Original-URL, else X-Forwarded-Uri */
    const char *url = NULL, *host = NULL;
    size_t ulen = 0, hlen = 0;
    const struct sesame_http_header *ou = header(req, "X-Original-URL");
    const struct sesame_http_header *fu = ou ? NULL : header(req, "X-Forwarded-Uri");
    const struct sesame_http_header *u = ou ? ou : fu;
    if (u == NULL || u->value_len == 0 || u->value_len > MAX_ORIGINAL) {
        refuse(req, 400, "no X-Original-URL or X-Forwarded-Uri");
        return;
    }
    url = u->value;
    ulen = u->value_len;
    for (size_t i = 0; i < ulen; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f) {
            refuse(req, 400, "control, space or non-ASCII byte in the original URL");
            return;
        }
    }
    if (ou && ulen > 8 && (memcmp(url, "https://", 8) == 0 || memcmp(url, "http://", 7) == 0)) {
        size_t skip = url[4] == 's' ? 8 : 7;
        host = url + skip;
        const char *slash = memchr(host, '/', ulen - skip);
        const char *q = memchr(host, '?', ulen - skip);
        const char *e = slash && (!q || slash < q) ? slash : q ? q : url + ulen;
        hlen = (size_t)(e - host);
        if (memchr(host, '@', hlen) != NULL) {
            refuse(req, 400, "userinfo in the original URL");
            return;
        }
        ulen -= (size_t)(e - url);
        url = e;
    } else if (url[0] != '/') {
        refuse(req, 400, "the original URL is neither absolute nor a path");
        return;
    }
    if (host == NULL) {
        const struct sesame_http_header *fh = header(req, "X-Forwarded-Host");
        if (fh) {
            host = fh->value;
            hlen = fh->value_len;
        } else {
            host = req->canon.authority;
            hlen = req->canon.authority_len;
        }
    }
    const char *hash = memchr(url, '#', ulen);
    if (hash)
        ulen = (size_t)(hash - url);
    const char *q = memchr(url, '?', ulen);
    size_t plen = q ? (size_t)(q - url) : ulen;
    size_t qlen = q ? ulen - plen - 1 : 0;
    if (!host_syntax_ok(host, hlen)) {
        refuse(req, 400, "invalid original host");
        return;
    }
    /* one allocation, freed with the request: path \0 authority \0 query */
    char *buf = sesame_malloc((plen ? plen : 1) + 1 + hlen + 1 + qlen + 1);
    const char *why = NULL;
    size_t cp_len = 0, ca_len = 0, ch_len = 0;
    char *cpath = buf;
    char *cauth = buf + (plen ? plen : 1) + 1;
    char *cquery = cauth + hlen + 1;
    if (plen == 0) {
        refuse(req, 400, "empty original path");
        free(buf);
        return;
    }
    if (sesame_canon_path(url, plen, cpath, &cp_len, &why) != SESAME_OK ||
        sesame_canon_host(host, hlen, cauth, &ca_len, &ch_len, &why) != SESAME_OK) {
        free(buf);
        refuse(req, 400, why ? why : "refused by canonicalisation");
        return;
    }
    memcpy(cquery, q ? q + 1 : "", qlen);
    cquery[qlen] = '\0';
    free(req->canon.path); /* the auth request's own (authority shares it) */
    req->canon.path = cpath;
    req->canon.path_len = cp_len;
    req->canon.authority = cauth;
    req->canon.authority_len = ca_len;
    req->canon.host_len = ch_len;
    req->msg.query = q ? cquery : NULL;
    req->msg.query_len = qlen;
    req->forward_auth = strcmp(mode, "401") == 0 ? SESAME_FORWARD_401 : SESAME_FORWARD_302;

    req->tenant = sesame_conf_find_tenant(conf, cauth, ch_len);
    if (req->tenant == NULL) {
        refuse(req, 403, "no tenant for the original host");
        return;
    }
    const char *prefix = conf->server.prefix;
    size_t pl = strlen(prefix);
    if (cp_len >= pl && memcmp(cpath, prefix, pl) == 0) {
        sesame_forward_allow(req); /* Sésame's own endpoints: nothing to decide */
        return;
    }
    req->route = sesame_conf_find_route(conf, req->tenant, cauth, ch_len, cpath, cp_len);
    if (req->route == NULL) {
        refuse(req, 403, "no route for the original path");
        return;
    }
    sesame_log_debug("request %s: forward-auth for %s%s route %s", req->request_id, cauth, cpath,
                     req->route->name);
    sesame_gate_route(req);
}

void
sesame_forward_allow(struct sesame_req *req)
{
    struct evbuffer *h = evbuffer_new();
    evbuffer_add(h, "Cache-Control: no-store\r\n", 25);
    if (req->upstream_headers)
        evbuffer_add_buffer(h, req->upstream_headers);
    evbuffer_add(h, "", 1);
    const char *headers = (const char *)evbuffer_pullup(h, -1);
    sesame_server_respond(req, 200, "text/plain; charset=utf-8", headers, NULL);
    evbuffer_free(h);
}

void
sesame_forward_signin(struct sesame_req *req, const char *url, const char *why)
{
    bool api = sesame_gate_is_api(req);
    if (!api && req->forward_auth != SESAME_FORWARD_401) {
        sesame_server_redirect(req, 302, url);
        return;
    }
    struct evbuffer *h = evbuffer_new();
    evbuffer_add_printf(h, "Cache-Control: no-store\r\nX-Sesame-Signin: %s\r\n", url);
    if (!api)
        evbuffer_add_printf(h, "X-Sesame-Redirect: %s\r\n", url);
    evbuffer_add(h, "", 1);
    json_t *o = json_pack("{s:i, s:s, s:s, s:s}", "status", 401, "error",
                          why ? why : "Connexion nécessaire", "signin", url, "request_id", req->request_id);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    struct evbuffer *body = evbuffer_new();
    if (text)
        evbuffer_add(body, text, strlen(text));
    free(text);
    sesame_server_respond(req, 401, "application/json", (const char *)evbuffer_pullup(h, -1), body);
    evbuffer_free(body);
    evbuffer_free(h);
}
