#include "http/dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/log.h"
#include "core/util.h"
#include "core/worker.h"
#include "http/proxy.h"

/* ------------------------------------------------------------------------
 * Error answers
 */

/* True for requests made by scripts (fetch/XHR/API clients): they get JSON
 * and status codes, never HTML pages or redirects. */
static bool
is_api_request(const struct sesame_req *req)
{
    const struct sesame_http_head *h = &req->msg.h;
    const struct sesame_http_header *x = sesame_http_find_header(h, "X-Requested-With");
    if (x != NULL)
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

static const char *
error_title(int status)
{
    switch (status) {
    case 400: return "Demande incorrecte";
    case 401: return "Connexion nécessaire";
    case 403: return "Accès refusé";
    case 404: return "Page introuvable";
    case 405: return "Méthode non autorisée";
    case 408: return "Délai dépassé";
    case 413: return "Envoi trop volumineux";
    case 414: return "Adresse trop longue";
    case 431: return "Demande trop volumineuse";
    case 501: return "Demande non prise en charge";
    case 502: return "Service indisponible";
    case 503: return "Service momentanément indisponible";
    case 504: return "Le service ne répond pas";
    case 505: return "Version HTTP non prise en charge";
    default: return "Erreur";
    }
}

static const char *
error_text(int status)
{
    switch (status) {
    case 400:
    case 414:
    case 431:
    case 501:
    case 505:
        return "Votre navigateur a envoyé une demande que nous ne pouvons pas lire. "
               "Revenez à l'accueil et réessayez.";
    case 401: return "Vous devez vous identifier pour accéder à ce service.";
    case 403: return "Vous n'avez pas accès à ce service.";
    case 404: return "La page demandée n'existe pas ou a été déplacée.";
    case 405: return "Cette action n'est pas possible sur cette page.";
    case 408: return "L'envoi a pris trop de temps. Réessayez.";
    case 413: return "Le fichier ou le formulaire envoyé est trop volumineux.";
    case 502: return "Le service demandé ne répond pas pour le moment. Réessayez dans quelques minutes.";
    case 503: return "Le service est momentanément indisponible. Réessayez dans quelques minutes.";
    case 504: return "Le service demandé met trop de temps à répondre. Réessayez dans quelques minutes.";
    default: return "Une erreur est survenue. Réessayez dans quelques minutes.";
    }
}

static void
html_escape(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': evbuffer_add(out, "&amp;", 5); break;
        case '<': evbuffer_add(out, "&lt;", 4); break;
        case '>': evbuffer_add(out, "&gt;", 4); break;
        case '"': evbuffer_add(out, "&quot;", 6); break;
        case '\'': evbuffer_add(out, "&#39;", 5); break;
        default: evbuffer_add(out, s, 1);
        }
    }
}

static const char security_headers[] =
    "Content-Security-Policy: default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: same-origin\r\n"
    "Cache-Control: no-store\r\n";

void
sesame_dispatch_error_page(struct sesame_req *req, int status, const char *reason)
{
    struct evbuffer *body = evbuffer_new();
    if (is_api_request(req)) {
        char esc[512];
        size_t n = 0;
        const char *msg = reason ? reason : error_title(status);
        sesame_log_json_string(esc, sizeof(esc), &n, msg, strlen(msg));
        evbuffer_add_printf(body, "{\"status\":%d,\"error\":%.*s,\"request_id\":\"%s\"}", status,
                            (int)n, esc, req->request_id);
        sesame_server_respond(req, status, "application/json", "Cache-Control: no-store\r\n", body);
        evbuffer_free(body);
        return;
    }
    const char *home = req->tenant ? req->tenant->public_url : "/";
    evbuffer_add_printf(body,
                        "<!doctype html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\">"
                        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                        "<title>%s</title></head><body><main><h1>%s</h1><p>",
                        error_title(status), error_title(status));
    html_escape(body, reason ? reason : error_text(status));
    evbuffer_add(body, "</p><p><a href=\"", 16);
    html_escape(body, home);
    evbuffer_add_printf(body, "/\">Retour à l'accueil</a></p><p>Référence : %s</p></main></body></html>\n",
                        req->request_id);
    sesame_server_respond(req, status, "text/html; charset=utf-8", security_headers, body);
    evbuffer_free(body);
}

/* ------------------------------------------------------------------------
 * Dispatch
 */

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

static void
handle_internal(struct sesame_req *req, const char *rest, size_t rlen)
{
    if (rlen == 6 && memcmp(rest, "health", 6) == 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "ok\n", 3);
        sesame_server_respond(req, 200, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n", b);
        evbuffer_free(b);
        return;
    }
    sesame_server_respond_error(req, 404, NULL);
}

void
sesame_dispatch_request(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    if (m->method == SESAME_HTTP_CONNECT || m->method == SESAME_HTTP_TRACE || m->asterisk_form) {
        sesame_server_respond_error(req, 405, NULL);
        return;
    }
    if (m->host == NULL) {
        sesame_server_respond_error(req, 400, NULL);
        return;
    }
    size_t hl = host_without_port(m->host, m->host_len);
    req->tenant = sesame_conf_find_tenant(req->conf, m->host, hl);
    if (req->tenant == NULL) {
        sesame_server_respond_error(req, 404, NULL);
        return;
    }
    const char *prefix = req->conf->server.prefix;
    size_t pl = strlen(prefix);
    if (m->path_len >= pl && memcmp(m->path, prefix, pl) == 0) {
        handle_internal(req, m->path + pl, m->path_len - pl);
        return;
    }
    req->route = sesame_conf_find_route(req->conf, req->tenant, m->host, hl, m->path, m->path_len);
    if (req->route == NULL) {
        sesame_server_respond_error(req, 404, NULL);
        return;
    }
    if (req->route->access != SESAME_ACCESS_PUBLIC) {
        sesame_server_respond_error(req, 503, "La connexion n'est pas encore disponible.");
        return;
    }
    sesame_proxy_start(req);
}

int
sesame_dispatch_worker_init(struct sesame_worker *w, char **err)
{
    return SESAME_OK;
}

void
sesame_dispatch_worker_reload(struct sesame_worker *w)
{
}

void
sesame_dispatch_worker_free(struct sesame_worker *w)
{
}
