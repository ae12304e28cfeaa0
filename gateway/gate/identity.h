/*
 * identity.h - what an upstream learns about the citizen, and whether a
 * route lets the citizen in. Pure functions over a session record.
 *
 * Headers (per route, prefix route->header_prefix, "X-Sesame-" by default):
 *   <prefix>Account     the account id, encoded like the claims
 *   <prefix>Acr         the eIDAS level of the sign-in
 *   <prefix>Provider    the provider's configuration name
 *   <prefix>Given-Name  one header per claim listed by the route (claim name
 *                       with '_' as '-' and words capitalised); values encoded
 *                       per route->header_encoding: percent (RFC 3986, UTF-8),
 *                       raw (only when the value has no control character and
 *                       is valid UTF-8, else percent), base64url.
 *   <prefix>Assertion   when route->assertion: an ES256 JWT (see below).
 * A claim absent from the session is not sent. Non-string claims are sent as
 * compact JSON.
 */
#ifndef SESAME_GATE_IDENTITY_H
#define SESAME_GATE_IDENTITY_H

#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "config/config.h"
#include "oidc/jose.h"
#include "session/session.h"

/* Appends the identity header lines ("Name: value\r\n") for route r and
 * session s to out. */
void sesame_identity_headers(const struct sesame_conf_route *r, const struct sesame_session *s,
                             struct evbuffer *out);

/* Age in whole years on the local date of `now` for a "YYYY-MM-DD" birthdate;
 * -1 when the date is missing or malformed (conditions then fail closed). */
int sesame_identity_age(const char *birthdate, time_t now);

/* Checks every condition of r. Returns true when all hold; otherwise false
 * with *failed pointing to the first failing condition. */
bool sesame_identity_allowed(const struct sesame_conf_route *r, const struct sesame_session *s,
                             time_t now, const struct sesame_cond **failed);

/* The claims a tenant keeps in its sessions: those its routes release or test
 * (claims, age conditions -> birthdate, claim conditions), plus given_name
 * and family_name (shown on Sésame's pages). Returns a new object with those
 * members of `claims` (never NULL). */
json_t *sesame_identity_kept_claims(const struct sesame_conf *conf,
                                    const struct sesame_conf_tenant *tenant, const json_t *claims);

/* Signed assertion for route r: {"iss": tenant public URL, "sub": account,
 * "aud": route name, "acr", "iat", "exp": iat + 60, "jti": random, and the
 * claims the route lists}. Returns a malloc'd compact JWS or NULL with *err. */
char *sesame_identity_assertion(const struct sesame_conf_route *r, const struct sesame_session *s,
                                const struct sesame_jose_key *key, time_t now, char **err);

/* Header name for a claim: "given_name" -> "Given-Name" (into out, cap bytes). */
void sesame_identity_header_name(const char *claim, char *out, size_t cap);

#endif
