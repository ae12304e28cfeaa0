/*
 * backchannel.h - OpenID Connect Back-Channel Logout 1.0, and Front-Channel
 * Logout 1.0 (sesame_frontchannel_logout).
 *
 * Endpoint: POST <prefix>backchannel-logout on a tenant's host (the URL to
 * register as the client's backchannel_logout_uri:
 * <public_url><prefix>backchannel-logout), form field logout_token. The
 * provider is the one of the tenant's providers whose issuer is the token's
 * `iss` and whose client_id is in its `aud`.
 *
 * The token is verified like an ID token: signature with the provider's keys
 * and signing_algs (no "none", an unknown kid refused), iss exact, aud
 * containing client_id (azp, when present, equal to it), iat present and not
 * in the future (leeway), exp when present not past; then the logout-token
 * rules: `events` an object with the member
 * "http://schemas.openid.net/event/backchannel-logout", `sid` or `sub` a
 * string, no `nonce`, `jti` a string used once: remembered in Redis
 * (prefix + "bj:" + hex(SHA-256(iss "\n" jti))) until its exp, or for
 * BACKCHANNEL_JTI_TTL_S without exp, whichever is longer, at least that.
 *
 * Sessions: each session signed in with a provider is listed (at sign-in,
 * sesame_backchannel_index) in the set prefix + "a:@bcl:" + hex(SHA-256(
 * provider "\n" "sub" "\n" sub)), and when the ID token has a `sid` in the
 * same kind of set for ("sid", sid); these sets expire with max_lifetime and
 * are read by sesame_session_revoke_account (tenant "@bcl"), which deletes
 * the sessions and publishes the revocations (every instance). A token with
 * `sid` ends that provider session's Sésame sessions, one with only `sub`
 * every session of that subject with that provider, on every tenant.
 *
 * Answers: 200 (Cache-Control: no-store) once revoked (also when no session
 * matched), 400 {"error":"invalid_request"} for a refused token (the reason
 * logged), 503 when Redis or the provider's keys are unavailable (the
 * provider may retry).
 */
#ifndef SESAME_GATE_BACKCHANNEL_H
#define SESAME_GATE_BACKCHANNEL_H

#include "http/server.h"

#define BACKCHANNEL_JTI_TTL_S 600

/* POST <prefix>backchannel-logout. */
void sesame_backchannel_logout(struct sesame_req *req);

/* GET <prefix>frontchannel-logout?iss=ISSUER&sid=SID (OpenID Connect
 * Front-Channel Logout 1.0, the URL to register as the client's
 * frontchannel_logout_uri, with frontchannel_logout_session_required):
 * iss must be the issuer of one of the tenant's providers and sid is
 * required; the sessions listed under that provider's sid are revoked on
 * every instance. The answer is an empty French page (200, no-store) that
 * only the provider's origin may frame (CSP frame-ancestors); 400 without
 * iss and sid or for another issuer, 503 when Redis is unavailable. The
 * request carries no proof: anyone who knows a provider session's sid can
 * end it, as the specification accepts (sids are the provider's random
 * values, never shown to the citizen). */
void sesame_frontchannel_logout(struct sesame_req *req);

/* Lists a new session (its cookie id) under provider+sub and provider+sid
 * (sid may be NULL). Fire and forget. */
void sesame_backchannel_index(struct sesame_req *req, const char *provider, const char *sub,
                              const char *sid, const char *cookie_id);

#endif
