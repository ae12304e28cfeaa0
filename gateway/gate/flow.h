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
 *   logout/callback                   the signed-out page.
 */
#ifndef SESAME_GATE_FLOW_H
#define SESAME_GATE_FLOW_H

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

/* The CSRF token of the logout form for a session id: base64url of
 * HMAC-SHA256(session key, "logout:" || id), into out (44 bytes). */
void sesame_flow_csrf(const struct sesame_conf *conf, const char *session_id, char out[44]);

#endif
