/*
 * ops.h - the supervision listener (`[server] metrics_listen`): a separate,
 * plain-HTTP listener on the main thread's event loop, never one of the
 * citizens' listeners, answering
 *   GET|HEAD /metrics   200, the Prometheus text exposition (0.0.4)
 *   GET|HEAD /ready     200 or 503 (with Retry-After), short JSON
 *   GET|HEAD /health    200 "ok" (liveness)
 *   anything else       404, or 405 for another method
 * One request per connection (Connection: close). Bounded: request heads
 * of at most 8 KiB received within 5 s, at most 64 connections at once.
 * What the answers contain is the caller's (handlers): the HTTP layer knows
 * nothing of metrics or readiness.
 */
#ifndef SESAME_HTTP_OPS_H
#define SESAME_HTTP_OPS_H

#include <event2/buffer.h>
#include <event2/event.h>

#include "config/config.h"

struct sesame_ops_handlers {
    /* Appends the exposition to body. */
    void (*metrics)(struct evbuffer *body, void *arg);
    /* Appends the JSON readiness to body; returns 200 or 503. */
    int (*ready)(struct evbuffer *body, void *arg);
    void *arg;
};

struct sesame_ops;

/* Listens on addr (without SO_REUSEPORT: one socket, this process's). h is
 * copied. Returns NULL with *err ("metrics_listen = ADDR: cannot listen:
 * ...") on failure. */
struct sesame_ops *sesame_ops_new(struct event_base *base, const struct sesame_listen *addr,
                                  const struct sesame_ops_handlers *h, char **err);

/* Stops listening and closes every connection. Accepts NULL. */
void sesame_ops_free(struct sesame_ops *ops);

#endif
