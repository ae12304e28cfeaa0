/*
 * dispatch.h - what happens to a parsed request: tenant and route selection,
 * Sésame's own endpoints under the reserved prefix, access control, and
 * forwarding.
 */
#ifndef SESAME_HTTP_DISPATCH_H
#define SESAME_HTTP_DISPATCH_H

#include "http/server.h"

/* Takes a request whose head was parsed; answers or forwards it. */
void sesame_dispatch_request(struct sesame_req *req);

/* Answers with Sésame's error page for `status` (HTML in French for browser
 * navigations, JSON for API calls), with an optional plain-language reason. */
void sesame_dispatch_error_page(struct sesame_req *req, int status, const char *reason);

struct sesame_tls;
/* The TLS certificate set built with conf's runtime (http/tls.h), NULL when
 * conf has no tls listener. */
struct sesame_tls *sesame_dispatch_tls(const struct sesame_conf *conf);

#endif
