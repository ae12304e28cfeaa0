/*
 * tls.h - the TLS side of Sésame's listeners: one certificate per commune
 * chosen by SNI, HSTS, and the plain-HTTP listener that redirects to https.
 *
 * Certificates. A configuration with a tls listener has one certificate set
 * (struct sesame_tls), built once on the main thread when the configuration
 * is loaded (so that `sesame -t`, and a reload, refuse a certificate or key
 * that does not load, with FILE:LINE) and shared by every worker: the
 * [server] tls_certificate is the default, and each tenant with its own
 * tls_certificate / tls_certificate_key gets its own SSL_CTX, chosen when the
 * client's SNI names one of the tenant's hosts (case-insensitive, one
 * trailing dot ignored). No SNI, or a name no tenant certificate covers:
 * the default. A tenant's certificate must be valid for every one of its
 * hosts (checked at load). Every context: TLS 1.2 or later, ECDHE with
 * AES-GCM or ChaCha20, no compression, no renegotiation; OCSP stapling of
 * each certificate naming a responder (http/ocsp.h) unless [server]
 * ocsp_stapling = off.
 *
 * A set is reference-counted: the configuration's runtime holds one, and
 * every TLS connection holds one for its lifetime (a handshake running
 * across a reload keeps its certificates).
 *
 * HSTS. Every response sent on a TLS listener (Sésame's pages and proxied
 * responses) carries Strict-Transport-Security with the tenant's `hsts`
 * value (default max-age=31536000; `hsts = off`: none); a request with no
 * tenant (unknown host, refused before routing) gets the default. An
 * upstream's own Strict-Transport-Security is replaced by Sésame's over TLS
 * (passed through only with hsts = off), and never sent over plain HTTP.
 *
 * Redirect listener (`listen = ADDRESS:PORT redirect`). Plain HTTP that
 * never proxies: a request for a tenant host is answered 301 (GET, HEAD) or
 * 308 (other methods, which keep their method and body) to
 *   https://<canonical host>[:port]<canonical path>[?query as sent]
 * where the port is the one of the tenant's public_url when it is https://,
 * else the port of the first tls listener, omitted when 443. An unknown host
 * gets 404, a request that is not canonical 400 (as on the other
 * listeners). <prefix>health is answered there too (liveness checks of load
 * balancers that probe port 80); nothing else is served.
 */
#ifndef SESAME_HTTP_TLS_H
#define SESAME_HTTP_TLS_H

#include <openssl/ssl.h>

#include "config/config.h"

struct sesame_tls;
struct sesame_req;

/* Builds the certificate set of conf. On failure returns NULL and appends
 * one line per problem to *errors, "FILE:LINE: key: message". */
struct sesame_tls *sesame_tls_new(const struct sesame_conf *conf, char **errors);

struct sesame_tls *sesame_tls_ref(struct sesame_tls *t);
void sesame_tls_unref(struct sesame_tls *t);

/* A server-side SSL for a new connection (default certificate until the SNI
 * chooses), holding a reference to t until it is freed. NULL on failure. */
SSL *sesame_tls_ssl_new(struct sesame_tls *t);

/* The Strict-Transport-Security value for the response to req, or NULL when
 * none is sent (plain HTTP, hsts = off). */
const char *sesame_tls_hsts(const struct sesame_req *req);

/* Answers a request that arrived on a redirect listener (see above). Ends
 * the request. */
void sesame_tls_redirect(struct sesame_req *req);

#endif
