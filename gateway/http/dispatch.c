#include "http/dispatch.h"

#include <string.h>

#include "core/log.h"
#include "gate/gate.h"
#include "http/canon.h"
#include "http/proxy.h"

void
sesame_dispatch_error_page(struct sesame_req *req, int status, const char *reason)
{
    sesame_gate_error(req, status, reason);
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
    req->tenant = sesame_conf_find_tenant(req->conf, c->authority, c->host_len);
    if (req->tenant == NULL) {
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
