#include "gate/ready.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "oidc/httpc.h"
#include "oidc/provider.h"

/* A metadata fetch started by a check that found none. */
struct fetch {
    struct sesame_ready *rd;
    char *name;
    struct sesame_provider *rt;      /* reference */
    struct sesame_provider_op *op;
    struct fetch *next;
};

struct sesame_ready {
    struct event_base *base;
    struct sesame_httpc *httpc;
    struct event *wake;              /* activated by checks on any thread */
    struct sesame_conf *conf;        /* reference */
    struct fetch *fetches;
    uint64_t last_wake_ms;           /* fetches start at most once a second */
};

/* The process's fetcher, for checks made on worker threads. */
static _Atomic(struct sesame_ready *) instance;

static void
fetch_free(struct fetch *f)
{
    struct fetch **pp = &f->rd->fetches;
    while (*pp && *pp != f)
        pp = &(*pp)->next;
    if (*pp)
        *pp = f->next;
    sesame_provider_unref(f->rt);
    free(f->name);
    free(f);
}

static void
fetched(void *arg, enum sesame_provider_status st, const char *err)
{
    struct fetch *f = arg;
    f->op = NULL;
    /* the provider runtime has logged the failure itself */
    if (st != SESAME_PROVIDER_OK)
        sesame_log_debug("ready: provider %s: metadata not loaded: %s", f->name, err ? err : "?");
    fetch_free(f);
}

static bool
fetching(const struct sesame_ready *rd, const char *name)
{
    for (const struct fetch *f = rd->fetches; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return true;
    return false;
}

/* Main thread: starts a fetch for every provider without metadata. */
static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_ready *rd = arg;
    uint64_t now = sesame_util_mono_ms();
    if (rd->conf == NULL || (rd->last_wake_ms != 0 && now - rd->last_wake_ms < 1000))
        return;
    rd->last_wake_ms = now;
    for (size_t i = 0; i < rd->conf->nproviders; i++) {
        const struct sesame_conf_provider *p = rd->conf->providers[i];
        if (fetching(rd, p->name))
            continue;
        struct sesame_provider *rt = sesame_provider_registry_get(p, NULL);
        if (rt == NULL)
            continue;
        if (sesame_provider_loaded(rt)) {
            sesame_provider_unref(rt);
            continue;
        }
        struct fetch *f = sesame_calloc(1, sizeof(*f));
        f->rd = rd;
        f->name = sesame_strdup(p->name);
        f->rt = rt;
        f->next = rd->fetches;
        rd->fetches = f;
        f->op = sesame_provider_ensure(rt, rd->httpc, fetched, f);
        if (f->op == NULL)
            fetch_free(f);
    }
}

struct sesame_ready *
sesame_ready_new(struct event_base *base, char **err)
{
    struct sesame_ready *rd = sesame_calloc(1, sizeof(*rd));
    rd->base = base;
    rd->httpc = sesame_httpc_new(base, err);
    rd->wake = event_new(base, -1, 0, wake_cb, rd);
    if (rd->httpc == NULL || rd->wake == NULL) {
        sesame_ready_free(rd);
        return NULL;
    }
    atomic_store(&instance, rd);
    return rd;
}

void
sesame_ready_set_conf(struct sesame_ready *rd, struct sesame_conf *conf)
{
    struct sesame_conf *old = rd->conf;
    rd->conf = sesame_conf_ref(conf);
    sesame_conf_unref(old);
}

void
sesame_ready_free(struct sesame_ready *rd)
{
    if (rd == NULL)
        return;
    struct sesame_ready *expected = rd;
    atomic_compare_exchange_strong(&instance, &expected, NULL);
    while (rd->fetches) {
        sesame_provider_cancel(rd->fetches->op);
        fetch_free(rd->fetches);
    }
    if (rd->wake)
        event_free(rd->wake);
    sesame_httpc_free(rd->httpc);
    sesame_conf_unref(rd->conf);
    free(rd);
}

int
sesame_ready_check(const struct sesame_conf *conf, struct evbuffer *body)
{
    json_t *problems = json_array();
    if (conf->has_redis) {
        int64_t down = sesame_metrics_value(SESAME_M_REDIS_DOWN, NULL, NULL, NULL);
        if (down > 0) {
            char *t = sesame_asprintf("redis: not connected (%lld of %d workers)", (long long)down,
                                      conf->server.workers);
            json_array_append_new(problems, json_string(t));
            free(t);
        }
    }
    bool missing = false;
    for (size_t i = 0; i < conf->nproviders; i++) {
        const struct sesame_conf_provider *p = conf->providers[i];
        char *err = NULL;
        struct sesame_provider *rt = sesame_provider_registry_get(p, &err);
        char *t = NULL;
        if (rt == NULL)
            t = sesame_asprintf("provider %s: %s", p->name, err ? err : "unusable");
        else if (!sesame_provider_loaded(rt))
            t = sesame_asprintf("provider %s: no metadata loaded", p->name);
        if (t) {
            json_array_append_new(problems, json_string(t));
            missing |= rt != NULL;
        }
        free(t);
        free(err);
        sesame_provider_unref(rt);
    }
    if (missing) {
        struct sesame_ready *rd = atomic_load(&instance);
        if (rd)
            event_active(rd->wake, EV_TIMEOUT, 0);
    }
    int status = json_array_size(problems) == 0 ? 200 : 503;
    if (body) {
        json_t *o = status == 200 ? json_pack("{s:s}", "status", "ready")
                                  : json_pack("{s:s, s:O}", "status", "not ready", "problems", problems);
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text) {
            evbuffer_add(body, text, strlen(text));
            evbuffer_add(body, "\n", 1);
        }
        free(text);
        json_decref(o);
    }
    json_decref(problems);
    return status;
}
