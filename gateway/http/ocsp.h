/*
 * ocsp.h - OCSP stapling: a cache of OCSP responses, one per server
 * certificate that names a responder, filled by one background thread and
 * read by the TLS handshakes of every worker.
 *
 * Nothing here blocks a worker loop: responses are fetched (HTTP POST with
 * libcurl, at most OCSP_FETCH_TIMEOUT) by the fetcher thread only, and a
 * handshake copies the cached response under a short mutex. A response is
 * stapled only when it was verified (signed by the certificate's issuer or a
 * responder it delegated, status "good", thisUpdate/nextUpdate valid) and
 * has not expired; otherwise, or when the certificate names no responder,
 * the handshake goes on without a staple. Responses are refreshed halfway to
 * their nextUpdate (at most one hour apart); failures are retried with a
 * growing delay (30 s to 10 min) while the last good response is kept until
 * it expires.
 *
 * Entries are keyed by the SHA-256 of the certificate: a reload that keeps a
 * certificate keeps its cached response. The fetcher runs only between
 * sesame_ocsp_start() and the matching sesame_ocsp_stop() (the daemon's
 * servers), never in `sesame -t`.
 */
#ifndef SESAME_HTTP_OCSP_H
#define SESAME_HTTP_OCSP_H

#include <openssl/ssl.h>

struct sesame_ocsp;

/* The stapling entry of the certificate in use in ctx (its chain must hold
 * the issuer), with one reference; NULL when the certificate names no OCSP
 * responder (http:// or https:// in its Authority Information Access) or its
 * issuer is not in the chain. Installs the status callback on ctx. */
struct sesame_ocsp *sesame_ocsp_attach(SSL_CTX *ctx);

void sesame_ocsp_unref(struct sesame_ocsp *o);

/* Starts the fetcher thread (first call) / stops and joins it (when the last
 * start is balanced). Main thread only. */
void sesame_ocsp_start(void);
void sesame_ocsp_stop(void);

#endif
