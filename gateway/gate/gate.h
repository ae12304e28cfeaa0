/*
 * gate.h - access control in front of the routes, and Sésame's own endpoints
 * under the reserved prefix (sign-in flow, logout, me, jwks.json, static,
 * health: liveness, ready: readiness as gate/ready.h says).
 *
 * Per worker: a Redis client and a session store (rebuilt when a reload
 * changes the configuration; the previous ones retire for a grace period so
 * that operations in flight complete), and an HTTPS client for providers.
 *
 * Route access (route->access):
 *   public    forwarded, no session looked up, no identity passed;
 *   optional  identity passed when a valid session exists (Redis down: sent
 *             anonymously);
 *   required  no session: a browser navigation is redirected to the sign-in
 *             page (or straight to the provider when the tenant has
 *             sign_in_page = off; through the hop of gate/hop.h on a host
 *             that does not share the sign-in host's cookie); a script
 *             request (fetch/XHR/API) gets 401 JSON. A session of a provider
 *             the route does not accept (route->providers), or below
 *             route->acr: the same, asking for an accepted provider and that
 *             level (an optional route forwards such a request anonymously).
 *             Condition failing: 403 page with the route's deny_message.
 *             Redis unavailable: 503 (JSON for scripts), never a redirect.
 * Every decision uses the canonical request (req->canon, http/server.h).
 */
#ifndef SESAME_GATE_GATE_H
#define SESAME_GATE_GATE_H

#include "core/worker.h"
#include "http/server.h"
#include "session/session.h"

struct sesame_httpc;

struct sesame_gate_worker;

int sesame_gate_worker_init(struct sesame_worker *w, char **err);
void sesame_gate_worker_reload(struct sesame_worker *w);
void sesame_gate_worker_free(struct sesame_worker *w);

/* The session store and HTTPS client of the request's worker (NULL when the
 * configuration has no Redis, or the connection is gone). */
struct sesame_session_store *sesame_gate_store(struct sesame_req *req);
struct sesame_httpc *sesame_gate_httpc(struct sesame_req *req);
/* The Redis client of the request's worker (NULL as for the store), for
 * the keys kept outside the session store (gate/replay.h, gate/backchannel.h). */
struct sesame_redis *sesame_gate_redis(struct sesame_req *req);

/* Handles a request for req->route (tenant and route set). */
void sesame_gate_route(struct sesame_req *req);

/* Handles a request under the reserved prefix; rest is the path after it. */
void sesame_gate_internal(struct sesame_req *req, const char *rest, size_t rlen);

/* Answers with the page for `status` (or JSON for script requests). */
void sesame_gate_error(struct sesame_req *req, int status, const char *reason);

/* True for requests made by scripts (fetch/XHR/API clients): JSON answers,
 * never redirects. */
bool sesame_gate_is_api(const struct sesame_req *req);

/* Finds a cookie of the request (all Cookie headers examined; a name present
 * with two different values is ambiguous and treated as absent). Returns
 * SESAME_OK with the value in out, or SESAME_DECLINED. */
int sesame_gate_cookie(const struct sesame_req *req, const char *name,
                       char out[SESAME_SESSION_ID_LEN + 1]);

/* Adds a Set-Cookie header to the response of req (value NULL deletes). */
void sesame_gate_set_cookie(struct sesame_req *req, const char *name, const char *value,
                            int64_t max_age_s);

/* Renders page `id` for the request's tenant with ctx completed from the
 * tenant (name, colours, links, prefix, request id) and sends it with
 * `status` and the security headers. */
struct sesame_page_ctx;
void sesame_gate_page(struct sesame_req *req, int status, int page_id, struct sesame_page_ctx *ctx);
/* Same, with CSP form-action also allowing form_origin ("https://host[:port]"),
 * for a form whose submission is redirected there (logout). */
void sesame_gate_page_origin(struct sesame_req *req, int status, int page_id,
                             struct sesame_page_ctx *ctx, const char *form_origin);

/* The URL that starts a sign-in for the current request (its canonical path
 * and query as return_to), with the route's minimum acr (NULL: none) and its
 * providers: <public_url><prefix>signin (login when `direct`), or, on a host
 * of the tenant that does not share the cookie of the sign-in host, the hop
 * through <public_url><prefix>sso (gate/hop.h; sets the hop cookie on the
 * response). Malloc'd; NULL on failure. */
char *sesame_gate_signin_url(struct sesame_req *req, const char *acr, bool direct);

/* The sign-in parameters that Sésame's endpoints pass on to each other
 * (signin, sso, the hop): return_to as sent, the level, the providers. */
struct sesame_gate_signin_query {
    char return_to[2100];
    char acr[33];
    char provider[128];              /* the one provider named, "" when none */
    char providers[1024];            /* several, space-separated, "" when none */
};

/* Reads them from the request's query string; each is optional ("" when
 * absent). Returns SESAME_OK, or SESAME_ERROR for a repeated parameter or a
 * value that is malformed or too long (the caller answers 400). */
int sesame_gate_signin_query_read(const struct sesame_req *req, struct sesame_gate_signin_query *q);

/* Appends q's level and providers to a URL being built: "&acr=ACR" when
 * set, then "&provider=NAME" (the one named, or with `direct` the first of
 * several) or "&providers=A%20B". return_to is the caller's. */
void sesame_gate_signin_query_append(struct evbuffer *b, const struct sesame_gate_signin_query *q,
                                     bool direct);

/* Appends the sign-in parameters of route r to a URL being built:
 * "&acr=ACR" when acr is given, then "&provider=NAME" (the route's provider,
 * or its only accepted one, or its first when `direct`) or
 * "&providers=A%20B" (the citizen chooses among them). r may be NULL. */
void sesame_gate_add_signin_params(struct evbuffer *b, const struct sesame_conf_route *r,
                                   const char *acr, bool direct);

/* Checks a return_to value (query-decoded, NUL-terminated) for the
 * request's tenant: sesame_returnto_check on its hosts and public URL; at a
 * territory's host, also an absolute URL on the hosts of one of its member
 * tenants (with that member's public URL). Returns a malloc'd copy, or NULL
 * when refused (the caller uses the home page). */
char *sesame_gate_return_to(const struct sesame_req *req, const char *rt);

/* Whether route r accepts a session signed in with provider `provider`
 * (r->providers; false for NULL arguments). */
bool sesame_gate_route_accepts(const struct sesame_conf_route *r, const char *provider);

#endif
