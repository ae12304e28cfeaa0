/*
 * flow.h - the OpenID Connect sign-in and sign-out flow under the reserved
 * prefix:
 *   login?return_to=&provider=&acr=   pending login stored in Redis (state,
 *                                     nonce, provider, acr, return URL,
 *                                     browser binding), then 302 to the
 *                                     provider's authorize endpoint;
 *   callback                          state taken (single use), browser
 *                                     binding and iss checked, provider errors
 *                                     shown, code exchanged, tokens validated,
 *                                     account resolved, new session, 303 to
 *                                     the return URL;
 *   logout                            GET: confirmation page (CSRF token);
 *                                     POST: local session destroyed first,
 *                                     then 302 to the provider's end-session;
 *                                     a session of a territory's tree
 *                                     (gate/hop.h, on the territory's host or
 *                                     a member's): the territory session is
 *                                     loaded (its ID token), the local
 *                                     session destroyed, the whole tree
 *                                     revoked (every member's session, on
 *                                     every instance), then the end-session
 *                                     with that ID token and the territory's
 *                                     post-logout URI;
 *   logout/callback                   the signed-out page.
 */
#ifndef SESAME_GATE_FLOW_H
#define SESAME_GATE_FLOW_H

#include <jansson.h>

#include "config/config.h"
#include "http/server.h"

/* Process-wide resources of the flow (the account plugin thread pool).
 * Called once by main before the workers start. */
int sesame_flow_start(const struct sesame_conf *conf, char **err);
void sesame_flow_stop(void);

void sesame_flow_login(struct sesame_req *req);
void sesame_flow_callback(struct sesame_req *req);
void sesame_flow_logout(struct sesame_req *req);
void sesame_flow_logout_callback(struct sesame_req *req);

/* An identity proven elsewhere: a territory session (gate/hop.h). Strings
 * are borrowed for the call. */
struct sesame_flow_identity {
    const char *provider;          /* provider name */
    const char *sub;
    const char *acr;               /* may be NULL */
    const json_t *claims;          /* the identity claims, may be NULL */
    const char *tree;              /* the territory session's tree */
    const char *parent;            /* the territory session's cookie id */
    int64_t expires_ms;            /* the territory session's end */
    const char *return_to;         /* a safe relative path on the request's host */
};

/* Ends a sign-in on the request's tenant from `id` instead of a token
 * exchange, at the step after token validation: the tenant's own accounts
 * plugin maps the identity to its local account, and the tenant's own
 * session is created (claims kept for its routes, ending at the latest at
 * id->expires_ms, recording id->tree and id->parent), replacing the session
 * of the request's cookie, then the cookie is set and the browser sent
 * (303) to return_to. Refusals are answered as at a callback (403 without
 * an account, 503). Takes req->ext: the caller has released its own. */
void sesame_flow_derive(struct sesame_req *req, const struct sesame_flow_identity *id);

/* The CSRF token of the logout form for a session id: base64url of
 * HMAC-SHA256(session key, "logout:" || id), into out (44 bytes). */
void sesame_flow_csrf(const struct sesame_conf *conf, const char *session_id, char out[44]);

#endif
