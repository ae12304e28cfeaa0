#include "core/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"

/* Slots of a shard: a counter or gauge series takes one, a histogram series
 * one per bucket (the last is +Inf) and one for the sum (microseconds). */
#define MAX_SLOTS 16384
#define MAX_SHARDS 512
#define TABLE_SIZE 8192 /* open addressing, a power of two >= 2 * MAX_SERIES */

enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM, K_INFO };

struct bound {
    uint64_t us;
    const char *text; /* seconds, as rendered in le="..." */
};

static const struct bound request_bounds[] = {
    {1000, "0.001"},     {2500, "0.0025"},    {5000, "0.005"},   {10000, "0.01"},
    {25000, "0.025"},    {50000, "0.05"},     {100000, "0.1"},   {250000, "0.25"},
    {500000, "0.5"},     {1000000, "1"},      {2500000, "2.5"},  {5000000, "5"},
    {10000000, "10"},
};

static const struct bound redis_bounds[] = {
    {100, "0.0001"},  {250, "0.00025"}, {500, "0.0005"},   {1000, "0.001"},   {2500, "0.0025"},
    {5000, "0.005"},  {10000, "0.01"},  {25000, "0.025"},  {50000, "0.05"},   {100000, "0.1"},
    {250000, "0.25"}, {500000, "0.5"},  {1000000, "1"},
};

struct family {
    const char *name;
    const char *help;
    enum kind kind;
    int nlabels;
    const char *labels[3];
    const struct bound *bounds;
    size_t nbounds;
    bool by_function; /* gauge computed at scrape time */
};

#define NB(a) a, SESAME_ARRAY_LEN(a)

static const struct family families[SESAME_M_COUNT] = {
    [SESAME_M_BUILD_INFO] = {"sesame_build_info", "Version of the running sesame (always 1).",
                             K_INFO, 1, {"version"}, NULL, 0, false},
    [SESAME_M_REQUESTS] = {"sesame_requests_total",
                           "Requests answered, by tenant, route and status class.", K_COUNTER, 3,
                           {"tenant", "route", "status"}, NULL, 0, false},
    [SESAME_M_REQUEST_DURATION] = {"sesame_request_duration_seconds",
                                   "Time from the request head to the end of the response.",
                                   K_HISTOGRAM, 0, {NULL}, NB(request_bounds), false},
    [SESAME_M_UPSTREAM_DURATION] = {"sesame_upstream_duration_seconds",
                                    "Time from forwarding a request to the upstream's response head.",
                                    K_HISTOGRAM, 0, {NULL}, NB(request_bounds), false},
    [SESAME_M_UPSTREAM_CONNECT_ERRORS] = {"sesame_upstream_connect_errors_total",
                                          "Upstream connections that could not be opened (refused, "
                                          "timed out, TLS failure), by tenant and route.",
                                          K_COUNTER, 2, {"tenant", "route"}, NULL, 0, false},
    [SESAME_M_UPSTREAM_OPENED] = {"sesame_upstream_connections_opened_total",
                                  "Upstream connections opened (not taken from the pool).",
                                  K_COUNTER, 0, {NULL}, NULL, 0, false},
    [SESAME_M_UPSTREAM_POOL_IDLE] = {"sesame_upstream_pool_idle_connections",
                                     "Idle upstream connections kept for reuse, all workers.",
                                     K_GAUGE, 0, {NULL}, NULL, 0, false},
    [SESAME_M_CLIENT_CONNECTIONS] = {"sesame_client_connections", "Open client connections.",
                                     K_GAUGE, 0, {NULL}, NULL, 0, false},
    [SESAME_M_SIGNIN_REDIRECTS] = {"sesame_signin_redirects_total",
                                   "Browsers sent to a provider to sign in, by provider.",
                                   K_COUNTER, 1, {"provider"}, NULL, 0, false},
    [SESAME_M_SIGNINS] = {"sesame_signins_total",
                          "Sign-in callbacks, by provider, outcome (success, refused, error) and "
                          "reason.",
                          K_COUNTER, 3, {"provider", "outcome", "reason"}, NULL, 0, false},
    [SESAME_M_REDIS_DURATION] = {"sesame_redis_command_duration_seconds",
                                 "Time from issuing a Redis command to its reply.", K_HISTOGRAM, 0,
                                 {NULL}, NB(redis_bounds), false},
    [SESAME_M_REDIS_ERRORS] = {"sesame_redis_command_errors_total",
                               "Redis commands that got no usable reply (Redis down, connection "
                               "lost, timeout, server not usable).",
                               K_COUNTER, 0, {NULL}, NULL, 0, false},
    [SESAME_M_REDIS_RECONNECTS] = {"sesame_redis_reconnects_total",
                                   "Redis connections re-established after a loss.", K_COUNTER, 0,
                                   {NULL}, NULL, 0, false},
    [SESAME_M_REDIS_DOWN] = {"sesame_redis_disconnected_workers",
                             "Workers whose Redis connection is not established.", K_GAUGE, 0,
                             {NULL}, NULL, 0, false},
    [SESAME_M_SESSION_CACHE] = {"sesame_session_cache_lookups_total",
                                "Session lookups in the workers' memory cache, by result (hit, "
                                "miss: asked Redis).",
                                K_COUNTER, 1, {"result"}, NULL, 0, false},
    [SESAME_M_PLUGIN_CALLS] = {"sesame_plugin_calls_total",
                               "Account plugin calls, by [accounts] section and result (found, "
                               "none, error, timeout).",
                               K_COUNTER, 2, {"accounts", "result"}, NULL, 0, false},
    [SESAME_M_PLUGIN_QUEUE] = {"sesame_plugin_queue_length",
                               "Account plugin calls waiting for a plugin thread.", K_GAUGE, 0,
                               {NULL}, NULL, 0, true},
    [SESAME_M_READY] = {"sesame_ready", "1 when /sesame/ready answers 200, else 0.", K_GAUGE, 0,
                        {NULL}, NULL, 0, true},
    [SESAME_M_DROPPED] = {"sesame_metrics_series_dropped_total",
                          "Observations not recorded because the label registry is full.",
                          K_COUNTER, 0, {NULL}, NULL, 0, false},
};

static const char *const signin_reasons[SESAME_SIGNIN_COUNT] = {
    [SESAME_SIGNIN_SUCCESS] = "none",
    [SESAME_SIGNIN_STATE] = "state",
    [SESAME_SIGNIN_ISS] = "iss",
    [SESAME_SIGNIN_CANCELLED] = "cancelled",
    [SESAME_SIGNIN_PROVIDER_ERROR] = "provider_error",
    [SESAME_SIGNIN_REJECTED] = "rejected",
    [SESAME_SIGNIN_BAD_RESPONSE] = "bad_response",
    [SESAME_SIGNIN_INVALID_TOKEN] = "invalid_token",
    [SESAME_SIGNIN_UNKNOWN_KEY] = "unknown_key",
    [SESAME_SIGNIN_ACR_TOO_LOW] = "acr_too_low",
    [SESAME_SIGNIN_USERINFO] = "userinfo",
    [SESAME_SIGNIN_NO_ACCOUNT] = "no_account",
    [SESAME_SIGNIN_ACCOUNT_DENIED] = "account_denied",
    [SESAME_SIGNIN_PROVIDER_UNAVAILABLE] = "provider_unavailable",
    [SESAME_SIGNIN_REDIS_UNAVAILABLE] = "redis_unavailable",
    [SESAME_SIGNIN_PLUGIN_ERROR] = "plugin_error",
    [SESAME_SIGNIN_INTERNAL] = "internal",
};

const char *
sesame_metrics_signin_reason(enum sesame_metrics_signin r)
{
    return (unsigned)r < SESAME_SIGNIN_COUNT ? signin_reasons[r] : "internal";
}

const char *
sesame_metrics_signin_outcome(enum sesame_metrics_signin r)
{
    if (r == SESAME_SIGNIN_SUCCESS)
        return "success";
    if (r >= SESAME_SIGNIN_PROVIDER_UNAVAILABLE)
        return "error";
    return "refused";
}

/* ------------------------------------------------------------------------
 * Shards
 */

struct shard {
    bool shared; /* written by several threads: atomic read-modify-write */
    _Atomic uint64_t v[MAX_SLOTS];
};

static struct shard fallback = {.shared = true};
static struct shard *shards[MAX_SHARDS];
static atomic_int nshards;
static _Thread_local struct shard *self;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

void
sesame_metrics_thread_attach(void)
{
    if (self != NULL)
        return;
    pthread_mutex_lock(&mu);
    int n = atomic_load_explicit(&nshards, memory_order_relaxed);
    if (n < MAX_SHARDS) {
        struct shard *s = sesame_calloc(1, sizeof(*s));
        shards[n] = s;
        atomic_store_explicit(&nshards, n + 1, memory_order_release);
        self = s;
    } else {
        self = &fallback;
    }
    pthread_mutex_unlock(&mu);
}

static inline void
slot_add(uint32_t i, uint64_t n)
{
    struct shard *s = self;
    if (s == NULL || s->shared) {
        atomic_fetch_add_explicit(&fallback.v[i], n, memory_order_relaxed);
        return;
    }
    /* Single writer: a relaxed load and store, no locked instruction. */
    atomic_store_explicit(&s->v[i], atomic_load_explicit(&s->v[i], memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static uint64_t
slot_sum(uint32_t i)
{
    uint64_t sum = atomic_load_explicit(&fallback.v[i], memory_order_relaxed);
    int n = atomic_load_explicit(&nshards, memory_order_acquire);
    for (int k = 0; k < n; k++)
        sum += atomic_load_explicit(&shards[k]->v[i], memory_order_relaxed);
    return sum;
}

/* ------------------------------------------------------------------------
 * Series registry
 */

struct series {
    enum sesame_metric m;
    char *v[3];
    uint32_t hash;
    uint32_t slot;
};

static _Atomic(struct series *) table[TABLE_SIZE];
static struct series *all[SESAME_METRICS_MAX_SERIES]; /* under mu */
static size_t nall;                                  /* under mu */
static uint32_t next_slot;                           /* under mu */
static atomic_uint plain_slot[SESAME_M_COUNT];       /* slot + 1 of unlabelled families */

static size_t
slots_of(const struct family *f)
{
    return f->kind == K_HISTOGRAM ? f->nbounds + 2 : 1;
}

static uint32_t
hash_of(enum sesame_metric m, const char *const v[3])
{
    uint32_t h = 2166136261u ^ (uint32_t)m;
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)(v[i] ? v[i] : ""); *p; p++)
            h = (h ^ *p) * 16777619u;
        h = (h ^ 0xff) * 16777619u;
    }
    return h;
}

static bool
same_value(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static struct series *
find(enum sesame_metric m, const char *const v[3], uint32_t h)
{
    for (uint32_t i = h & (TABLE_SIZE - 1);; i = (i + 1) & (TABLE_SIZE - 1)) {
        struct series *s = atomic_load_explicit(&table[i], memory_order_acquire);
        if (s == NULL)
            return NULL;
        if (s->hash == h && s->m == m && same_value(s->v[0], v[0]) && same_value(s->v[1], v[1]) &&
            same_value(s->v[2], v[2]))
            return s;
    }
}

/* Under mu. NULL when the registry is full. */
static struct series *
insert_locked(enum sesame_metric m, const char *const v[3], uint32_t h)
{
    struct series *s = find(m, v, h);
    if (s != NULL)
        return s;
    size_t need = slots_of(&families[m]);
    if (nall >= SESAME_METRICS_MAX_SERIES || next_slot + need > MAX_SLOTS)
        return NULL;
    s = sesame_calloc(1, sizeof(*s));
    s->m = m;
    for (int i = 0; i < 3; i++)
        s->v[i] = v[i] ? sesame_strdup(v[i]) : NULL;
    s->hash = h;
    s->slot = next_slot;
    next_slot += (uint32_t)need;
    all[nall++] = s;
    uint32_t i = h & (TABLE_SIZE - 1);
    while (atomic_load_explicit(&table[i], memory_order_relaxed) != NULL)
        i = (i + 1) & (TABLE_SIZE - 1);
    atomic_store_explicit(&table[i], s, memory_order_release);
    return s;
}

/* The label values of family m as stored: a missing value of one of its
 * labels is "(none)", the positions it has no label for are NULL. */
static void
normalize(enum sesame_metric m, const char *l1, const char *l2, const char *l3, const char *v[3])
{
    const char *in[3] = {l1, l2, l3};
    for (int i = 0; i < 3; i++)
        v[i] = i < families[m].nlabels ? (in[i] ? in[i] : SESAME_METRICS_NONE) : NULL;
}

static uint32_t dropped_slot(void);

/* The first slot of series (m, labels): lock-free once it exists. Returns
 * UINT32_MAX when it cannot be recorded. */
static uint32_t
slot_of(enum sesame_metric m, const char *l1, const char *l2, const char *l3)
{
    if ((unsigned)m >= SESAME_M_COUNT)
        return UINT32_MAX;
    if (families[m].nlabels == 0) {
        unsigned p = atomic_load_explicit(&plain_slot[m], memory_order_acquire);
        if (p != 0)
            return p - 1;
    }
    const char *v[3];
    normalize(m, l1, l2, l3, v);
    uint32_t h = hash_of(m, v);
    struct series *s = find(m, v, h);
    if (s == NULL) {
        pthread_mutex_lock(&mu);
        s = insert_locked(m, v, h);
        pthread_mutex_unlock(&mu);
        if (s == NULL) {
            if (m != SESAME_M_DROPPED) {
                uint32_t d = dropped_slot();
                if (d != UINT32_MAX)
                    slot_add(d, 1);
            }
            return UINT32_MAX;
        }
    }
    if (families[m].nlabels == 0)
        atomic_store_explicit(&plain_slot[m], s->slot + 1, memory_order_release);
    return s->slot;
}

static uint32_t
dropped_slot(void)
{
    return slot_of(SESAME_M_DROPPED, NULL, NULL, NULL);
}

/* Reserves the slots of every unlabelled family at first use, so that the
 * dropped counter always has room. */
static pthread_once_t plain_once = PTHREAD_ONCE_INIT;

static void
make_plain(void)
{
    for (int m = 0; m < SESAME_M_COUNT; m++)
        if (families[m].nlabels == 0 && families[m].kind != K_INFO && !families[m].by_function)
            (void)slot_of((enum sesame_metric)m, NULL, NULL, NULL);
}

static inline void
ensure_plain(void)
{
    pthread_once(&plain_once, make_plain);
}

/* ------------------------------------------------------------------------
 * Recording
 */

void
sesame_metrics_add(enum sesame_metric m, const char *l1, const char *l2, const char *l3, uint64_t n)
{
    ensure_plain();
    uint32_t i = slot_of(m, l1, l2, l3);
    if (i != UINT32_MAX)
        slot_add(i, n);
}

void
sesame_metrics_observe_us(enum sesame_metric m, uint64_t us)
{
    if ((unsigned)m >= SESAME_M_COUNT || families[m].kind != K_HISTOGRAM)
        return;
    ensure_plain();
    uint32_t i = slot_of(m, NULL, NULL, NULL);
    if (i == UINT32_MAX)
        return;
    const struct family *f = &families[m];
    size_t b = 0;
    while (b < f->nbounds && us > f->bounds[b].us)
        b++;
    slot_add(i + (uint32_t)b, 1);             /* its bucket (f->nbounds: +Inf) */
    slot_add(i + (uint32_t)f->nbounds + 1, us); /* the sum */
}

void
sesame_metrics_gauge_add(enum sesame_metric m, int64_t delta)
{
    /* two's complement: the sum of the shards' uint64 is the int64 sum */
    sesame_metrics_add(m, NULL, NULL, NULL, (uint64_t)delta);
}

static struct {
    sesame_metrics_gauge_fn fn;
    void *arg;
} gauge_fns[SESAME_M_COUNT];

void
sesame_metrics_gauge_fn_set(enum sesame_metric m, sesame_metrics_gauge_fn fn, void *arg)
{
    if ((unsigned)m >= SESAME_M_COUNT)
        return;
    pthread_mutex_lock(&mu);
    gauge_fns[m].fn = fn;
    gauge_fns[m].arg = arg;
    pthread_mutex_unlock(&mu);
}

void
sesame_metrics_signin(const char *provider, enum sesame_metrics_signin r)
{
    sesame_metrics_add(SESAME_M_SIGNINS, provider, sesame_metrics_signin_outcome(r),
                       sesame_metrics_signin_reason(r), 1);
}

void
sesame_metrics_request(const char *tenant, const char *route, int status, uint64_t duration_us)
{
    static const char *const classes[] = {"aborted", "1xx", "2xx", "3xx", "4xx", "5xx"};
    int c = status >= 100 && status < 600 ? status / 100 : 0;
    sesame_metrics_add(SESAME_M_REQUESTS, tenant, route, classes[c], 1);
    sesame_metrics_observe_us(SESAME_M_REQUEST_DURATION, duration_us);
}

uint64_t
sesame_metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t
sesame_metrics_value(enum sesame_metric m, const char *l1, const char *l2, const char *l3)
{
    if ((unsigned)m >= SESAME_M_COUNT)
        return 0;
    const char *v[3];
    normalize(m, l1, l2, l3, v);
    struct series *s = find(m, v, hash_of(m, v));
    if (s == NULL)
        return 0;
    const struct family *f = &families[m];
    if (f->kind != K_HISTOGRAM)
        return (int64_t)slot_sum(s->slot);
    uint64_t count = 0;
    for (size_t b = 0; b <= f->nbounds; b++)
        count += slot_sum(s->slot + (uint32_t)b);
    return (int64_t)count;
}

/* ------------------------------------------------------------------------
 * Exposition
 */

static void
add_label_value(struct evbuffer *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            evbuffer_add(out, "\\\\", 2);
        else if (*p == '"')
            evbuffer_add(out, "\\\"", 2);
        else if (*p == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, p, 1);
    }
}

/* {a="x",b="y"[,extra]} or nothing when there is no label. */
static void
add_labels(struct evbuffer *out, const struct family *f, const struct series *s, const char *extra)
{
    if (f->nlabels == 0 && extra == NULL)
        return;
    evbuffer_add(out, "{", 1);
    for (int i = 0; i < f->nlabels; i++) {
        evbuffer_add_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        add_label_value(out, s->v[i]);
        evbuffer_add(out, "\"", 1);
    }
    if (extra)
        evbuffer_add_printf(out, "%s%s", f->nlabels ? "," : "", extra);
    evbuffer_add(out, "}", 1);
}

static void
render_series(struct evbuffer *out, const struct family *f, const struct series *s)
{
    switch (f->kind) {
    case K_COUNTER:
        evbuffer_add_printf(out, "%s", f->name);
        add_labels(out, f, s, NULL);
        evbuffer_add_printf(out, " %llu\n", (unsigned long long)slot_sum(s->slot));
        break;
    case K_GAUGE:
        evbuffer_add_printf(out, "%s", f->name);
        add_labels(out, f, s, NULL);
        evbuffer_add_printf(out, " %lld\n", (long long)(int64_t)slot_sum(s->slot));
        break;
    case K_HISTOGRAM: {
        uint64_t cum = 0;
        char le[64];
        for (size_t b = 0; b <= f->nbounds; b++) {
            cum += slot_sum(s->slot + (uint32_t)b);
            snprintf(le, sizeof(le), "le=\"%s\"", b < f->nbounds ? f->bounds[b].text : "+Inf");
            evbuffer_add_printf(out, "%s_bucket", f->name);
            add_labels(out, f, s, le);
            evbuffer_add_printf(out, " %llu\n", (unsigned long long)cum);
        }
        uint64_t sum = slot_sum(s->slot + (uint32_t)f->nbounds + 1);
        evbuffer_add_printf(out, "%s_sum", f->name);
        add_labels(out, f, s, NULL);
        evbuffer_add_printf(out, " %llu.%06llu\n", (unsigned long long)(sum / 1000000u),
                            (unsigned long long)(sum % 1000000u));
        evbuffer_add_printf(out, "%s_count", f->name);
        add_labels(out, f, s, NULL);
        evbuffer_add_printf(out, " %llu\n", (unsigned long long)cum);
        break;
    }
    case K_INFO:
        break;
    }
}

static const char *
type_name(enum kind k)
{
    switch (k) {
    case K_COUNTER:
        return "counter";
    case K_HISTOGRAM:
        return "histogram";
    case K_GAUGE:
    case K_INFO:
        break;
    }
    return "gauge";
}

void
sesame_metrics_render(struct evbuffer *out)
{
    ensure_plain();
    /* Gauges computed by functions run first, outside the registry lock. */
    double fn_value[SESAME_M_COUNT] = {0};
    for (int m = 0; m < SESAME_M_COUNT; m++) {
        if (!families[m].by_function)
            continue;
        pthread_mutex_lock(&mu);
        sesame_metrics_gauge_fn fn = gauge_fns[m].fn;
        void *arg = gauge_fns[m].arg;
        pthread_mutex_unlock(&mu);
        fn_value[m] = fn ? fn(arg) : 0;
    }
    pthread_mutex_lock(&mu);
    for (int m = 0; m < SESAME_M_COUNT; m++) {
        const struct family *f = &families[m];
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                            type_name(f->kind));
        if (f->kind == K_INFO) {
            evbuffer_add_printf(out, "%s{version=\"%s\"} 1\n", f->name, PACKAGE_VERSION);
            continue;
        }
        if (f->by_function) {
            double v = fn_value[m];
            if (v == (double)(long long)v)
                evbuffer_add_printf(out, "%s %lld\n", f->name, (long long)v);
            else
                evbuffer_add_printf(out, "%s %.17g\n", f->name, v);
            continue;
        }
        for (size_t i = 0; i < nall; i++)
            if (all[i]->m == (enum sesame_metric)m)
                render_series(out, f, all[i]);
    }
    pthread_mutex_unlock(&mu);
}
