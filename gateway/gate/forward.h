/*
 * forward.h - forward-auth mode: a front end (nginx auth_request, Traefik
 * ForwardAuth, HAProxy, Caddy forward_auth) asks Sésame whether a request it
 * is about to proxy itself may go through, and with which identity.
 *
 *   GET <prefix>auth    (HEAD too), from a peer in [server] trusted_proxies
 *   only (any other peer: 403, logged). The original request is given by
 *     X-Original-URL: https://host/path?query   or   /path?query
 *   or by X-Forwarded-Uri (/path?query) with X-Forwarded-Host and
 *   X-Forwarded-Proto; the host is, in that order, the authority of an
 *   absolute X-Original-URL, X-Forwarded-Host, the Host header. Neither
 *   header, a malformed URL or host, or a path that canonicalisation refuses
 *   (http/canon.h, the same rules as proxied requests): 400.
 *   The tenant, the route and the decision are those of a proxied request on
 *   that canonical host and path (gate/gate.h): the request's own Cookie,
 *   Accept, X-Requested-With and Sec-Fetch-Mode headers are the citizen's
 *   (the front end passes them). Answers:
 *     200  let through; on a route that is not public and with a session,
 *          the route's identity headers (X-Sesame-*, identity.h) for the
 *          front end to copy onto the proxied request. Also for a path under
 *          the reserved prefix (Sésame's own pages, no identity).
 *     401  a script (gate.h: sesame_gate_is_api): JSON
 *          {"status":401,"error":...,"signin":URL}, and X-Sesame-Signin: URL;
 *          with `?signin=401` in the auth request, a browser navigation too,
 *          with X-Sesame-Redirect: URL (nginx, whose auth_request turns every
 *          other status into 500: its error_page 401 sends the browser there).
 *     302  a browser navigation (default): Location is the sign-in URL, as a
 *          proxied route would answer (Traefik, HAProxy, Caddy pass it on).
 *     403  a condition of the route fails (HTML page or JSON), no tenant for
 *          the host, or no route for the path (fail closed, logged).
 *     503  the session store is unavailable.
 */
#ifndef SESAME_GATE_FORWARD_H
#define SESAME_GATE_FORWARD_H

#include "http/server.h"

/* req->forward_auth values. */
enum { SESAME_FORWARD_OFF = 0, SESAME_FORWARD_302 = 1, SESAME_FORWARD_401 = 2 };

/* Handles GET <prefix>auth (before any tenant is chosen). Ends the request. */
void sesame_forward_auth(struct sesame_req *req);

/* The decision allows the request: 200 with req->upstream_headers (the
 * identity) as response headers. Ends the request. */
void sesame_forward_allow(struct sesame_req *req);

/* The decision asks for a sign-in at `url` (the sign-in URL the proxied
 * route would redirect to; why: an optional reason). Ends the request. */
void sesame_forward_signin(struct sesame_req *req, const char *url, const char *why);

#endif
