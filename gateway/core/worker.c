#include "core/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "http/proxy.h"
#include "http/server.h"

static struct sesame_worker *workers;
static int nworkers;
static pthread_mutex_t conf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sesame_conf *published;

static struct sesame_conf *
take_published(void)
{
    pthread_mutex_lock(&conf_lock);
    struct sesame_conf *c = sesame_conf_ref(published);
    pthread_mutex_unlock(&conf_lock);
    return c;
}

static void
reload_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_worker *w = arg;
    struct sesame_conf *c = take_published();
    if (c == w->conf) {
        sesame_conf_unref(c);
        return;
    }
    struct sesame_conf *old = w->conf;
    w->conf = c;
    char *err = NULL;
    if (w->server && sesame_server_reload_tls(w->server, c, &err) != SESAME_OK) {
        sesame_log_error("reload: worker %d keeps its TLS certificate: %s", w->id, err);
        free(err);
    }
    sesame_dispatch_worker_reload(w);
    sesame_conf_unref(old);
}

static void
drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_worker *w = arg;
    sesame_log_warn("worker %d: shutdown_timeout reached with %zu connection(s) still open", w->id,
                    sesame_server_connections(w->server));
    event_base_loopbreak(w->base);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_worker *w = arg;
    if (w->draining)
        return;
    w->draining = true;
    uint64_t ms = w->conf->server.shutdown_timeout_ms;
    struct timeval tv = sesame_util_timeval_ms(ms);
    evtimer_add(w->drain_timer, &tv);
    sesame_server_drain(w->server);
}

void
sesame_worker_drained(struct sesame_worker *w)
{
    if (w->draining)
        event_base_loopbreak(w->base);
}

static void *
worker_main(void *arg)
{
    struct sesame_worker *w = arg;
    sesame_metrics_thread_attach();
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void
heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_worker *w = arg;
    atomic_store(&w->heartbeat_ms, sesame_util_mono_ms());
}

void
sesame_workers_heartbeat_start(uint64_t period_ms)
{
    struct timeval tv = sesame_util_timeval_ms(period_ms ? period_ms : 1);
    for (int i = 0; i < nworkers; i++) {
        struct sesame_worker *w = &workers[i];
        if (w->heartbeat_ev != NULL)
            continue;
        atomic_store(&w->heartbeat_ms, sesame_util_mono_ms());
        w->heartbeat_ev = event_new(w->base, -1, EV_PERSIST, heartbeat_cb, w);
        event_add(w->heartbeat_ev, &tv);
    }
}

bool
sesame_workers_alive(uint64_t max_age_ms, int *stalled)
{
    uint64_t now = sesame_util_mono_ms();
    for (int i = 0; i < nworkers; i++) {
        uint64_t at = atomic_load(&workers[i].heartbeat_ms);
        if (workers[i].heartbeat_ev != NULL && now - at > max_age_ms) {
            if (stalled)
                *stalled = workers[i].id;
            return false;
        }
    }
    return true;
}

static void
worker_free(struct sesame_worker *w)
{
    if (w->base == NULL)
        return;
    sesame_server_free(w->server);
    w->server = NULL;
    sesame_dispatch_worker_free(w);
    sesame_upstream_pool_free(w->upstreams);
    if (w->reload_ev)
        event_free(w->reload_ev);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->heartbeat_ev)
        event_free(w->heartbeat_ev);
    event_base_free(w->base);
    w->base = NULL;
    sesame_conf_unref(w->conf);
    w->conf = NULL;
}

int
sesame_workers_start(struct sesame_conf *conf, int n, char **err)
{
    pthread_mutex_lock(&conf_lock);
    published = sesame_conf_ref(conf);
    pthread_mutex_unlock(&conf_lock);
    workers = sesame_calloc((size_t)n, sizeof(*workers));
    nworkers = n;
    unsigned char rnd[6];
    sesame_util_random(rnd, sizeof(rnd));
    char prefix[16];
    sesame_util_hex(prefix, rnd, 4);
    int i;
    for (i = 0; i < n; i++) {
        struct sesame_worker *w = &workers[i];
        w->id = i;
        snprintf(w->id_prefix, sizeof(w->id_prefix), "%.8s%02x", prefix, i & 0xff);
        w->conf = sesame_conf_ref(conf);
        w->base = event_base_new();
        if (w->base == NULL) {
            sesame_err_set(err, "cannot create an event loop");
            goto fail;
        }
        w->upstreams = sesame_upstream_pool_new(w->base);
        w->reload_ev = event_new(w->base, -1, 0, reload_cb, w);
        w->stop_ev = event_new(w->base, -1, 0, stop_cb, w);
        w->drain_timer = evtimer_new(w->base, drain_timeout_cb, w);
        w->server = sesame_server_new(w, w->base, conf, err);
        if (w->server == NULL)
            goto fail;
        if (sesame_dispatch_worker_init(w, err) != SESAME_OK)
            goto fail;
    }
    for (i = 0; i < n; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            sesame_err_set(err, "cannot start worker thread %d", i);
            /* threads already started are stopped by the caller's exit */
            return SESAME_ERROR;
        }
    }
    return SESAME_OK;
fail:
    for (int j = 0; j < n; j++)
        worker_free(&workers[j]);
    free(workers);
    workers = NULL;
    nworkers = 0;
    return SESAME_ERROR;
}

void
sesame_workers_publish_conf(struct sesame_conf *conf)
{
    pthread_mutex_lock(&conf_lock);
    struct sesame_conf *old = published;
    published = sesame_conf_ref(conf);
    pthread_mutex_unlock(&conf_lock);
    sesame_conf_unref(old);
    for (int i = 0; i < nworkers; i++)
        event_active(workers[i].reload_ev, 0, 0);
}

void
sesame_workers_stop(void)
{
    for (int i = 0; i < nworkers; i++)
        event_active(workers[i].stop_ev, 0, 0);
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    for (int i = 0; i < nworkers; i++)
        worker_free(&workers[i]);
    free(workers);
    workers = NULL;
    nworkers = 0;
    pthread_mutex_lock(&conf_lock);
    sesame_conf_unref(published);
    published = NULL;
    pthread_mutex_unlock(&conf_lock);
}
