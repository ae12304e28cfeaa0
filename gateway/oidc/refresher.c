/*
 * refresher.c - the provider refresher thread: an event loop with one
 * HTTPS client and one timer, calling sesame_provider_upkeep for every
 * runtime of the registry.
 */
#include "oidc/refresher.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/util.h"
#include "oidc/httpc.h"
#include "oidc/provider.h"

#define MIN_WAIT_MS 20u
#define MAX_WAIT_MS 1000u

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bool running;                /* under mu */
static pthread_t thread;
static struct event_base *base;
static struct sesame_httpc *httpc;  /* the thread's */
static struct event *tick_ev, *stop_ev;

static void
tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct sesame_provider **rts = NULL;
    size_t n = sesame_provider_registry_list(&rts);
    uint64_t now = sesame_util_mono_ms(), next = now + MAX_WAIT_MS;
    for (size_t i = 0; i < n; i++) {
        uint64_t at = sesame_provider_upkeep(rts[i], httpc, now);
        if (at < next)
            next = at;
        sesame_provider_unref(rts[i]);
    }
    free(rts);
    uint64_t wait = next > now ? next - now : 0;
    if (wait < MIN_WAIT_MS)
        wait = MIN_WAIT_MS;
    struct timeval tv = sesame_util_timeval_ms(wait);
    evtimer_add(tick_ev, &tv);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_del(tick_ev);
    event_base_loopbreak(base);
}

static void *
thread_main(void *arg)
{
    (void)arg;
    event_base_dispatch(base);
    /* completes the fetches in flight ("HTTP client shut down"): their jobs
     * finish and wake their waiters */
    sesame_httpc_free(httpc);
    httpc = NULL;
    return NULL;
}

int
sesame_refresher_start(const struct sesame_conf *conf, char **err)
{
    pthread_mutex_lock(&mu);
    if (running) {
        pthread_mutex_unlock(&mu);
        sesame_refresher_watch(conf);
        return SESAME_OK;
    }
    sesame_provider_registry_sync(conf);
    base = event_base_new();
    if (base == NULL) {
        pthread_mutex_unlock(&mu);
        return sesame_err_set(err, "provider refresher: cannot create an event base");
    }
    httpc = sesame_httpc_new(base, err);
    if (httpc == NULL) {
        event_base_free(base);
        base = NULL;
        pthread_mutex_unlock(&mu);
        return SESAME_ERROR;
    }
    tick_ev = evtimer_new(base, tick, NULL);
    stop_ev = event_new(base, -1, 0, stop_cb, NULL);
    event_active(tick_ev, EV_TIMEOUT, 1);
    /* signals are the main thread's */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&thread, NULL, thread_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        event_free(tick_ev);
        event_free(stop_ev);
        sesame_httpc_free(httpc);
        event_base_free(base);
        tick_ev = stop_ev = NULL;
        httpc = NULL;
        base = NULL;
        pthread_mutex_unlock(&mu);
        return sesame_err_set(err, "provider refresher: cannot start its thread");
    }
    running = true;
    pthread_mutex_unlock(&mu);
    return SESAME_OK;
}

void
sesame_refresher_watch(const struct sesame_conf *conf)
{
    sesame_provider_registry_sync(conf);
    pthread_mutex_lock(&mu);
    if (running)
        event_active(tick_ev, EV_TIMEOUT, 1);
    pthread_mutex_unlock(&mu);
}

void
sesame_refresher_stop(void)
{
    pthread_mutex_lock(&mu);
    if (!running) {
        pthread_mutex_unlock(&mu);
        return;
    }
    running = false;
    event_active(stop_ev, EV_TIMEOUT, 1);
    pthread_mutex_unlock(&mu);
    pthread_join(thread, NULL);
    event_free(tick_ev);
    event_free(stop_ev);
    tick_ev = stop_ev = NULL;
    event_base_free(base);
    base = NULL;
}
