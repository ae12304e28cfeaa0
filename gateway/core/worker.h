/*
 * worker.h - worker threads: one event loop per core, each with its own
 * listeners (SO_REUSEPORT), upstream connection pools and Redis connection.
 *
 * The current configuration is published by the main thread
 * (sesame_worker_publish_conf) and picked up by each worker at the next
 * request; objects a worker derives from the configuration are rebuilt on
 * the worker's own thread when it is told of a new one.
 */
#ifndef SESAME_CORE_WORKER_H
#define SESAME_CORE_WORKER_H

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>

#include "config/config.h"

struct sesame_server;
struct sesame_upstream_pool;

struct sesame_worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    struct sesame_server *server;
    struct sesame_upstream_pool *upstreams;
    struct sesame_conf *conf;           /* the worker's current reference */
    struct event *reload_ev;            /* activated from the main thread */
    struct event *stop_ev;
    struct event *drain_timer;
    bool draining;
    uint64_t request_counter;
    struct event *heartbeat_ev;         /* for the systemd watchdog, when it is on */
    _Atomic uint64_t heartbeat_ms;      /* monotonic ms of the last heartbeat */
    char id_prefix[12];                 /* random, for request ids */
    void *ext;                          /* per-worker state of the dispatch layer */
};

/* Starts `n` workers serving `conf` (each takes a reference). On failure
 * (listeners cannot bind, TLS files unusable) nothing keeps running and
 * *err says why. */
int sesame_workers_start(struct sesame_conf *conf, int n, char **err);

/* Publishes a new configuration to every worker (each takes a reference). */
void sesame_workers_publish_conf(struct sesame_conf *conf);

/* Drains every worker (stop accepting, finish in-flight requests, at most
 * conf->server.shutdown_timeout_ms), then joins the threads. */
void sesame_workers_stop(void);

/* Starts, on every worker, a timer recording every period_ms that its event
 * loop runs (main thread, after sesame_workers_start; for the watchdog). */
void sesame_workers_heartbeat_start(uint64_t period_ms);

/* True when every worker's heartbeat is at most max_age_ms old; otherwise
 * *stalled is the id of a worker that is late. */
bool sesame_workers_alive(uint64_t max_age_ms, int *stalled);

/* Called by a worker when its server has no connection left during a drain. */
void sesame_worker_drained(struct sesame_worker *w);

/* Hooks of the dispatch layer, called on the worker's thread: when it starts
 * (after the base exists), when a new configuration was published, and when
 * it stops. Defined in dispatch.c. */
int sesame_dispatch_worker_init(struct sesame_worker *w, char **err);
void sesame_dispatch_worker_reload(struct sesame_worker *w);
void sesame_dispatch_worker_free(struct sesame_worker *w);

#endif
