/*
 * ready.h - readiness: whether this instance can sign citizens in and serve
 * their sessions now (GET <prefix>ready on the tenant hosts, GET /ready on
 * the metrics listener). Liveness stays <prefix>health ("ok" while the
 * process answers).
 *
 * Not ready (503, with Retry-After) when
 *   - Redis is configured and a worker has no established Redis connection
 *     (the Redis clients' own connection state, core/metrics.h
 *     SESAME_M_REDIS_DOWN: a closed connection is noticed at once, an
 *     unresponsive server within a second of idle PING plus
 *     [redis] command_timeout);
 *   - a configured provider has no metadata or key set loaded yet
 *     (oidc/provider.h sesame_provider_loaded). Metadata is fetched on
 *     demand: a check that finds none asks the main thread to fetch it (at
 *     most once a second), so
 *     the first probe after start may answer 503 and the next ones 200.
 * The body is short JSON: {"status":"ready"} or
 *   {"status":"not ready","problems":["redis: not connected (2 of 2 workers)",
 *    "provider franceconnect: no metadata loaded"]}
 */
#ifndef SESAME_GATE_READY_H
#define SESAME_GATE_READY_H

#include <event2/buffer.h>
#include <event2/event.h>

#include "config/config.h"

struct sesame_ready;

/* Creates the fetcher of missing provider metadata on `base` (the main
 * thread's loop; an HTTPS client of its own). One per process: checks made
 * on any thread wake it. Returns NULL with *err on failure. */
struct sesame_ready *sesame_ready_new(struct event_base *base, char **err);

/* The configuration whose providers are fetched (main thread; a reference
 * is taken; call again after each reload). */
void sesame_ready_set_conf(struct sesame_ready *rd, struct sesame_conf *conf);

/* Cancels the fetches in flight and frees. Accepts NULL. */
void sesame_ready_free(struct sesame_ready *rd);

/* Checks readiness for conf (any thread). Appends the JSON body to `body`
 * (may be NULL) and returns 200 or 503. */
int sesame_ready_check(const struct sesame_conf *conf, struct evbuffer *body);

#endif
