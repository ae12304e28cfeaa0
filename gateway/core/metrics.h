/*
 * metrics.h - Prometheus metrics: counters, gauges and histograms kept per
 * thread and summed when scraped, rendered in the text exposition format
 * 0.0.4 (served by http/ops.h on `[server] metrics_listen`).
 *
 * Hot path. Every thread that calls sesame_metrics_thread_attach() (each
 * worker, at start) gets its own shard: an array of 64-bit slots written
 * only by that thread, with a relaxed atomic load and a relaxed atomic store
 * (on x86-64 and arm64 a plain load, add and store: no lock, no locked
 * instruction, no shared cache line). Threads without a shard (the main
 * thread, the plugin pool, unit tests) share one fallback shard updated with
 * relaxed atomic fetch-and-add. A scrape sums the shards with relaxed atomic
 * loads: each value is exact, but a scrape that runs while a histogram is
 * observed may see its bucket before its count (the next scrape agrees).
 *
 * Labels. A labelled metric is looked up by its label values in a registry
 * that only grows: the first use of a label set takes a mutex to add it,
 * every later use is a lock-free hash lookup. Label values come from the
 * configuration (tenant, route, provider and accounts names) or from fixed
 * sets defined here (status class, sign-in outcome and reason, cache and
 * plugin results), never from a request, so the number of series is bounded
 * by the configuration. Past SESAME_METRICS_MAX_SERIES label sets (a
 * configuration reloaded with new names many times over), new label sets
 * are not recorded and sesame_metrics_series_dropped_total counts them.
 *
 * Every metric is documented for admins in README.md ("Metrics").
 */
#ifndef SESAME_CORE_METRICS_H
#define SESAME_CORE_METRICS_H

#include <event2/buffer.h>

#include "core/common.h"

#define SESAME_METRICS_MAX_SERIES 4096

/* The metric families, in the order they are rendered. */
enum sesame_metric {
    SESAME_M_BUILD_INFO = 0,         /* gauge {version} = 1 */
    SESAME_M_REQUESTS,               /* counter {tenant, route, status} */
    SESAME_M_REQUEST_DURATION,       /* histogram, seconds */
    SESAME_M_UPSTREAM_DURATION,      /* histogram, seconds to the upstream response head */
    SESAME_M_UPSTREAM_CONNECT_ERRORS, /* counter {tenant, route} */
    SESAME_M_UPSTREAM_OPENED,        /* counter: upstream connections opened */
    SESAME_M_UPSTREAM_POOL_IDLE,     /* gauge: idle pooled upstream connections */
    SESAME_M_CLIENT_CONNECTIONS,     /* gauge: open client connections */
    SESAME_M_SIGNIN_REDIRECTS,       /* counter {provider}: browsers sent to the provider */
    SESAME_M_SIGNINS,                /* counter {provider, outcome, reason}: callbacks */
    SESAME_M_REDIS_DURATION,         /* histogram, seconds per command */
    SESAME_M_REDIS_ERRORS,           /* counter: commands that got no usable reply */
    SESAME_M_REDIS_RECONNECTS,       /* counter: connections re-established after a loss */
    SESAME_M_REDIS_DOWN,             /* gauge (function): workers without a Redis connection */
    SESAME_M_SESSION_CACHE,          /* counter {result}: hit, miss */
    SESAME_M_PLUGIN_CALLS,           /* counter {accounts, result}: found, none, error, timeout */
    SESAME_M_PLUGIN_QUEUE,           /* gauge (function): plugin calls waiting for a thread */
    SESAME_M_READY,                  /* gauge (function): 1 when /ready answers 200 */
    SESAME_M_DROPPED,                /* counter: label sets not recorded (registry full) */
    SESAME_M_COUNT
};

/* Label values of SESAME_M_REQUESTS "route" for requests without a route. */
#define SESAME_METRICS_ROUTE_INTERNAL "(sesame)" /* under the reserved prefix */
#define SESAME_METRICS_NONE "(none)"             /* no tenant or no route matched */

/* Outcomes of a sign-in callback: the "reason" label; the "outcome" label is
 * derived (success, refused: the answer or the citizen's browser was
 * refused, error: Sésame or a service it needs failed). */
enum sesame_metrics_signin {
    SESAME_SIGNIN_SUCCESS = 0,      /* success: a session was created */
    SESAME_SIGNIN_STATE,            /* refused: state unknown, expired, replayed, other browser */
    SESAME_SIGNIN_ISS,              /* refused: iss parameter of another issuer */
    SESAME_SIGNIN_CANCELLED,        /* refused: the citizen cancelled at the provider */
    SESAME_SIGNIN_PROVIDER_ERROR,   /* refused: the provider answered an error (access_denied...) */
    SESAME_SIGNIN_REJECTED,         /* refused: the token endpoint refused the code */
    SESAME_SIGNIN_BAD_RESPONSE,     /* refused: answer of the wrong shape, no code */
    SESAME_SIGNIN_INVALID_TOKEN,    /* refused: ID token signature or claims */
    SESAME_SIGNIN_UNKNOWN_KEY,      /* refused: signed with an unknown key */
    SESAME_SIGNIN_ACR_TOO_LOW,      /* refused: level of assurance below the route's */
    SESAME_SIGNIN_USERINFO,         /* refused: userinfo invalid or of another sub */
    SESAME_SIGNIN_NO_ACCOUNT,       /* refused: no account (link-only policy) */
    SESAME_SIGNIN_ACCOUNT_DENIED,   /* refused: the account plugin denied */
    SESAME_SIGNIN_PROVIDER_UNAVAILABLE, /* error: provider unreachable or misconfigured */
    SESAME_SIGNIN_REDIS_UNAVAILABLE,    /* error: Redis unavailable */
    SESAME_SIGNIN_PLUGIN_ERROR,     /* error: account plugin failed or timed out */
    SESAME_SIGNIN_INTERNAL,         /* error: anything else (out of randomness...) */
    SESAME_SIGNIN_COUNT
};

/* Label values of the "reason" and "outcome" labels of a sign-in outcome. */
const char *sesame_metrics_signin_reason(enum sesame_metrics_signin r);
const char *sesame_metrics_signin_outcome(enum sesame_metrics_signin r);

/* Gives the calling thread its own shard (idempotent). Workers call it first
 * thing on their thread. Shards live until the process exits. */
void sesame_metrics_thread_attach(void);

/* Adds n to counter m with the family's label values (NULL for a family
 * with fewer labels; a NULL value of a label the family has is rendered
 * "(none)"). */
void sesame_metrics_add(enum sesame_metric m, const char *l1, const char *l2, const char *l3,
                        uint64_t n);

static inline void
sesame_metrics_inc(enum sesame_metric m)
{
    sesame_metrics_add(m, NULL, NULL, NULL, 1);
}

/* Records one observation of `us` microseconds in histogram m. */
void sesame_metrics_observe_us(enum sesame_metric m, uint64_t us);

/* Adds delta to gauge m (unlabelled). The gauge is the sum of every
 * thread's contributions. */
void sesame_metrics_gauge_add(enum sesame_metric m, int64_t delta);

/* A gauge computed at scrape time (on the scraping thread). */
typedef double (*sesame_metrics_gauge_fn)(void *arg);
void sesame_metrics_gauge_fn_set(enum sesame_metric m, sesame_metrics_gauge_fn fn, void *arg);

/* Counts the outcome of a sign-in callback with provider `provider` (NULL
 * when not known yet). */
void sesame_metrics_signin(const char *provider, enum sesame_metrics_signin r);

/* Counts a request that ended: its tenant and route labels, status (0: no
 * response was sent) and duration. */
void sesame_metrics_request(const char *tenant, const char *route, int status, uint64_t duration_us);

/* Current monotonic time in microseconds. */
uint64_t sesame_metrics_now_us(void);

/* The sum of every shard's value of an unlabelled counter or gauge, or of
 * the labelled series (l1, l2, l3) (for tests and readiness). */
int64_t sesame_metrics_value(enum sesame_metric m, const char *l1, const char *l2, const char *l3);

/* Appends the whole exposition (text format 0.0.4, Content-Type
 * SESAME_METRICS_CONTENT_TYPE) to out. Thread-safe; takes the registry
 * mutex (never held on the hot path except to add a label set). */
void sesame_metrics_render(struct evbuffer *out);

#define SESAME_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
