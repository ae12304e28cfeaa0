/*
 * replay.h - nothing lost on re-login: a form POST that arrives on a
 * required route without a valid session is kept, and sent again after the
 * sign-in.
 *
 * Kept: a browser navigation (not a script: those still get 401) POSTing
 * application/x-www-form-urlencoded or multipart/form-data with a
 * Content-Length of at most server.preserve_post_max (default 1 MiB; 0
 * turns the feature off). Larger: the 413 page saying so (nothing is lost
 * silently: the citizen is told to go back and send it again after signing
 * in).
 *
 * Storage: Redis key prefix + "r:" + hex(SHA-256(id)), id 32 random bytes
 * (43 base64url characters), for server.preserve_post_ttl (default 10 min),
 * value version 'R' (1) || nonce (12) || AES-256-GCM ciphertext || tag (16)
 * under HMAC-SHA256(session secret, "sesame replay v1") (the previous secret
 * is tried too), the Redis key as additional data. Plaintext: a JSON line
 * {"t": tenant, "u": canonical path?query, "c": Content-Type, "b": binding}
 * then the body, byte for byte (a multipart body keeps its boundary).
 * Binding: the cookie "<session cookie>_kept" (random, reused while
 * present, SameSite=Lax): only the browser that sent the form can see or
 * send it again, and a cross-site POST cannot trigger the resend.
 *
 * Journey: the POST is answered 303 to the sign-in with return_to
 * <prefix>resume?id=ID; after sign-in, GET <prefix>resume?id=ID shows the
 * "Votre saisie a été conservée" page (the record is read, not taken), whose
 * form POSTs id to <prefix>resume; that POST checks the record, then takes it (GETDEL:
 * exactly once) and the request continues as the original one: POST to the
 * original path and query, with the original Content-Type and body, through
 * the normal route decision (session, access rules, identity headers) and
 * proxy. No script: the page has a button (the pages' CSP allows no script).
 */
#ifndef SESAME_GATE_REPLAY_H
#define SESAME_GATE_REPLAY_H

#include <stdbool.h>

#include "http/server.h"

/* Whether a request that needs a sign-in is a form POST to keep (or to
 * refuse with the 413 page when too large). */
bool sesame_replay_wanted(const struct sesame_req *req);

/* Keeps the form and sends the browser to sign in (`acr`, `direct` as for
 * sesame_gate_signin_url). Takes over the request: releases req->ext. */
void sesame_replay_keep(struct sesame_req *req, const char *acr, bool direct);

/* GET and POST <prefix>resume. */
void sesame_replay_resume(struct sesame_req *req);

#endif
