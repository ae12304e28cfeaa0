#include "http/dispatch.h"

#include <string.h>

#include "gate/gate.h"

void
sesame_dispatch_error_page(struct sesame_req *req, int status, const char *reason)
{
    sesame_gate_error(req, status, reason);
}

/* Host header without the port, e.g. "ville-a.fr:8443" -> "ville-a.fr". */
static size_t
host_without_port(const char *h, size_t n)
{
    if (n > 0 && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        return e ? (size_t)(e - h) + 1 : n;
    }
    const char *colon = memchr(h, ':', n);
    return colon ? (size_t)(colon - h) : n;
}

void
sesame_dispatch_request(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    if (m->method == SESAME_HTTP_CONNECT || m->method == SESAME_HTTP_TRACE || m->asterisk_form) {
        sesame_gate_error(req, 405, NULL);
        return;
    }
    if (m->host == NULL) {
        sesame_gate_error(req, 400, NULL);
        return;
    }
    size_t hl = host_without_port(m->host, m->host_len);
    req->tenant = sesame_conf_find_tenant(req->conf, m->host, hl);
    if (req->tenant == NULL) {
        sesame_gate_error(req, 404, NULL);
        return;
    }
    const char *prefix = req->conf->server.prefix;
    size_t pl = strlen(prefix);
    if (m->path_len >= pl && memcmp(m->path, prefix, pl) == 0) {
        sesame_gate_internal(req, m->path + pl, m->path_len - pl);
        return;
    }
    req->route = sesame_conf_find_route(req->conf, req->tenant, m->host, hl, m->path, m->path_len);
    if (req->route == NULL) {
        sesame_gate_error(req, 404, NULL);
        return;
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
