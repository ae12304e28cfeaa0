#include "http/dispatch.h"

#include <string.h>

#include "core/log.h"
#include "gate/forward.h"
#include "gate/gate.h"
#include "gate/runtime.h"
#include "http/canon.h"
#include "http/proxy.h"

void
sesame_dispatch_error_page(struct sesame_req *req, int status, const char *reason)
{
    sesame_gate_error(req, status, reason);
}

struct sesame_tls *
sesame_dispatch_tls(const struct sesame_conf *conf)
{
    const struct sesame_runtime *rt = sesame_runtime_of(conf);
    return rt ? rt->tls : NULL;
}

/* For an absolute-form request: the tenant named by its Host header must be
 * the one named by the target's authority (RFC 9112 3.2.2 lets the authority
 * win; an upstream reading the Host header must not see another tenant). */
static bool
host_header_agrees(const struct sesame_req *req, const struct sesame_conf_tenant *tenant)
{
    const struct sesame_http_header *h = sesame_http_find_header(&req->msg.h, "host");
    if (h == NULL)
        return req->msg.h.version_minor == 0;
    char buf[300];
    size_t n, hl;
    const char *why;
    if (h->value_len >= sizeof(buf) ||
        sesame_canon_host(h->value, h->value_len, buf, &n, &hl, &why) != SESAME_OK)
        return false;
    return sesame_conf_find_tenant(req->conf, buf, hl) == tenant;
}

void
sesame_dispatch_request(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    const struct sesame_canon_req *c = &req->canon;
    if (m->method == SESAME_HTTP_CONNECT || m->method == SESAME_HTTP_TRACE || m->asterisk_form) {
        sesame_gate_error(req, 405, NULL);
        return;
    }
    if (m->host == NULL || c->authority_len == 0) {
        sesame_gate_error(req, 400, NULL);
        return;
    }
    /* forward-auth names its tenant in the original URL (gate/forward.h) */
    size_t fl = strlen(req->conf->server.prefix);
    if (c->path_len == fl + 4 && memcmp(c->path, req->conf->server.prefix, fl) == 0 &&
        memcmp(c->path + fl, "auth", 4) == 0 && req->conf->has_redis) {
        sesame_forward_auth(req);
        return;
    }
    req->tenant = sesame_conf_find_tenant(req->conf, c->authority, c->host_len);
    if (req->tenant == NULL) {
        /* the unknown-host 404 page links the platform stylesheet: served
         * on any host, like on a tenant's */
        const char *pfx = req->conf->server.prefix;
        size_t pfl = strlen(pfx);
        if (c->path_len > pfl + 7 && memcmp(c->path, pfx, pfl) == 0 &&
            memcmp(c->path + pfl, "static/", 7) == 0 &&
            (m->method == SESAME_HTTP_GET || m->method == SESAME_HTTP_HEAD)) {
            sesame_gate_internal(req, c->path + pfl, c->path_len - pfl);
            return;
        }
        sesame_gate_error(req, 404, NULL);
        return;
    }
    if (m->absolute_form && !host_header_agrees(req, req->tenant)) {
        sesame_log_info("request %s: absolute-form authority and Host name different tenants",
                        req->request_id);
        req->close_after = true;
        sesame_gate_error(req, 400, NULL);
        return;
    }
    const char *prefix = req->conf->server.prefix;
    size_t pl = strlen(prefix);
    if (c->path_len >= pl && memcmp(c->path, prefix, pl) == 0) {
        sesame_gate_internal(req, c->path + pl, c->path_len - pl);
        return;
    }
    req->route = sesame_conf_find_route(req->conf, req->tenant, c->authority, c->host_len, c->path,
                                        c->path_len);
    if (req->route == NULL) {
        sesame_gate_error(req, 404, NULL);
        return;
    }
    for (size_t i = 0; i < m->h.nconnection_tokens; i++) {
        if (sesame_proxy_header_has_prefix(m->h.connection_tokens[i].p, m->h.connection_tokens[i].n,
                                           req->route->header_prefix)) {
            sesame_log_info("request %s: Connection names the identity prefix", req->request_id);
            req->close_after = true;
            sesame_gate_error(req, 400, NULL);
            return;
        }
    }
    sesame_gate_route(req);
}

int
sesame_dispatch_worker_init(struct sesame_worker *w, char **err)
{
    return sesame_gate_worker_init(w, err);
}

void
sesame_dispatch_worker_reload(struct sesame_worker *w)
{
    sesame_gate_worker_reload(w);
}

void
sesame_dispatch_worker_free(struct sesame_worker *w)
{
    sesame_gate_worker_free(w);
}
