/*
 * proxy.h - forwarding a request to its route's upstream and streaming the
 * response back, over pooled keep-alive connections.
 *
 * Bodies are streamed in both directions with back-pressure (at most about
 * 1 MiB buffered per direction), never held whole. Request bodies are
 * capped by server.max_body_size (413). Framing is rebuilt on each side:
 * chunked bodies are decoded strictly and re-encoded, so a malformed or
 * ambiguous body can never desynchronise the upstream connection.
 *
 * Request headers never forwarded: hop-by-hop ones (and those named in
 * Connection), names containing '_', anything under the identity prefix
 * (whatever its case, '_' or '-'), client X-Forwarded-*, Forwarded,
 * X-Request-Id and X-Real-IP unless the peer is a trusted proxy, Expect, Via,
 * and Sésame's own cookies unless the route keeps them.
 */
#ifndef SESAME_HTTP_PROXY_H
#define SESAME_HTTP_PROXY_H

#include <event2/event.h>

#include "http/server.h"

struct sesame_upstream_pool;

/* Per-worker pool of idle upstream connections, keyed by address. */
struct sesame_upstream_pool *sesame_upstream_pool_new(struct event_base *base);
void sesame_upstream_pool_free(struct sesame_upstream_pool *pool);
/* Connections opened since the pool was created (for tests and stats). */
uint64_t sesame_upstream_pool_opened(const struct sesame_upstream_pool *pool);

/* Forwards req to req->route's upstream with req->upstream_headers added,
 * and answers the client. Ends the request itself (success or error page:
 * 502 unreachable, 504 timeout, 413 body too large). */
void sesame_proxy_start(struct sesame_req *req);

/* The client connection failed while proxying: stop, free the upstream
 * connection, end the request without writing. */
void sesame_proxy_client_gone(struct sesame_req *req);

/* Releases the proxy state of a request being freed. */
void sesame_proxy_abort(struct sesame_req *req);

/* What an Upgrade request asks for: NONE (no Upgrade, or one other than
 * websocket, e.g. h2c: ignored, the request is answered in HTTP/1.1 and
 * Upgrade is not forwarded), WEBSOCKET (GET, HTTP/1.1, Connection: upgrade,
 * Upgrade: websocket, Sec-WebSocket-Key, no body: forwarded with Upgrade,
 * then tunnelled after the upstream's 101, http/tunnel.h), INVALID (a
 * websocket upgrade otherwise, or several Upgrade headers naming it: 400). */
enum { SESAME_PROXY_UPGRADE_NONE, SESAME_PROXY_UPGRADE_WEBSOCKET, SESAME_PROXY_UPGRADE_INVALID };
int sesame_proxy_upgrade(const struct sesame_http_request *m);

/* True when a header name, compared case-insensitively with '_' taken as
 * '-', starts with prefix (e.g. "X-Sesame-"). */
bool sesame_proxy_header_has_prefix(const char *name, size_t len, const char *prefix);

#endif
