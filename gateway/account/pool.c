#include "account/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* While a job is in flight its timer stays pending (re-armed with this
 * period after the deadline, or from the start without a deadline) so that
 * the caller's loop keeps running until the job's end is collected. */
#define KEEPALIVE_MS (3600 * 1000)

struct task {
    sesame_pool_job_fn job;
    sesame_pool_done_fn done;
    sesame_pool_release_fn release;
    void *arg;
    struct event *ev_end;   /* activated by the worker when the job is over */
    struct event *ev_timer; /* deadline, then keep-alive */
    bool has_deadline;
    bool delivered;         /* done was called (event_base thread only) */
    atomic_bool timed_out;  /* set on the base thread, read by the worker */
    atomic_int end_status;  /* DONE or CANCELLED, set before ev_end is activated */
    struct task *next;
};

struct sesame_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t *threads;
    size_t nthreads;
    size_t max_queue;
    size_t queued;
    struct task *head, *tail;
    bool stopping;
};

static void
arm(struct event *ev, uint64_t ms)
{
    struct timeval tv = sesame_util_timeval_ms(ms);
    event_add(ev, &tv);
}

static void
deliver(struct task *t, enum sesame_pool_status status)
{
    if (t->delivered)
        return;
    t->delivered = true;
    if (t->done != NULL)
        t->done(status, t->arg);
}

/* Base thread: the job is over (or cancelled). Last word on the task. */
static void
on_end(evutil_socket_t fd, short what, void *arg)
{
    struct task *t = arg;
    deliver(t, (enum sesame_pool_status)atomic_load(&t->end_status));
    event_free(t->ev_timer);
    event_free(t->ev_end);
    if (t->release != NULL)
        t->release(t->arg);
    free(t);
}

/* Base thread: deadline or keep-alive. */
static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct task *t = arg;
    if (t->has_deadline && !t->delivered) {
        atomic_store(&t->timed_out, true);
        deliver(t, SESAME_POOL_TIMEOUT);
    }
    arm(t->ev_timer, KEEPALIVE_MS);
}

static void
finish(struct task *t, enum sesame_pool_status status)
{
    atomic_store(&t->end_status, (int)status);
    /* After this call the base thread may free t at any moment. */
    event_active(t->ev_end, EV_READ, 0);
}

static void *
worker(void *arg)
{
    struct sesame_pool *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->head == NULL && !pool->stopping)
            pthread_cond_wait(&pool->cond, &pool->lock);
        if (pool->head == NULL)
            break; /* stopping and nothing left to take */
        if (pool->stopping)
            break; /* queued jobs are cancelled by sesame_pool_free */
        struct task *t = pool->head;
        pool->head = t->next;
        if (pool->head == NULL)
            pool->tail = NULL;
        pool->queued--;
        pthread_mutex_unlock(&pool->lock);
        /* A job whose deadline passed while it waited is not started. */
        if (!atomic_load(&t->timed_out))
            t->job(t->arg);
        finish(t, SESAME_POOL_DONE);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

struct sesame_pool *
sesame_pool_new(size_t threads, size_t max_queue, char **err)
{
    if (threads < 1 || threads > 256) {
        sesame_err_set(err, "pool: thread count %zu out of range 1..256", threads);
        return NULL;
    }
    if (max_queue < 1 || max_queue > 1000000) {
        sesame_err_set(err, "pool: queue size %zu out of range 1..1000000", max_queue);
        return NULL;
    }
    struct sesame_pool *pool = sesame_calloc(1, sizeof(*pool));
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    pool->max_queue = max_queue;
    pool->threads = sesame_calloc(threads, sizeof(pthread_t));
    for (size_t i = 0; i < threads; i++) {
        int rc = pthread_create(&pool->threads[i], NULL, worker, pool);
        if (rc != 0) {
            sesame_err_set(err, "pool: cannot start thread: %s", strerror(rc));
            sesame_pool_free(pool);
            return NULL;
        }
        pool->nthreads++;
    }
    return pool;
}

int
sesame_pool_submit(struct sesame_pool *pool, struct event_base *caller_base,
                   sesame_pool_job_fn job, sesame_pool_done_fn done,
                   sesame_pool_release_fn release, void *arg, uint64_t timeout_ms)
{
    if (pool == NULL || caller_base == NULL || job == NULL)
        return SESAME_ERROR;
    struct task *t = sesame_calloc(1, sizeof(*t));
    t->job = job;
    t->done = done;
    t->release = release;
    t->arg = arg;
    t->has_deadline = timeout_ms > 0;
    atomic_init(&t->timed_out, false);
    atomic_init(&t->end_status, SESAME_POOL_DONE);
    t->ev_end = event_new(caller_base, -1, 0, on_end, t);
    t->ev_timer = evtimer_new(caller_base, on_timer, t);
    if (t->ev_end == NULL || t->ev_timer == NULL)
        goto fail;

    pthread_mutex_lock(&pool->lock);
    if (pool->stopping || pool->queued >= pool->max_queue) {
        pthread_mutex_unlock(&pool->lock);
        goto fail;
    }
    /* Armed before a worker can see the task, so on_end always finds it set. */
    arm(t->ev_timer, t->has_deadline ? timeout_ms : KEEPALIVE_MS);
    if (pool->tail != NULL)
        pool->tail->next = t;
    else
        pool->head = t;
    pool->tail = t;
    pool->queued++;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    return SESAME_AGAIN;

fail:
    if (t->ev_timer != NULL)
        event_free(t->ev_timer);
    if (t->ev_end != NULL)
        event_free(t->ev_end);
    free(t);
    return SESAME_ERROR;
}

size_t
sesame_pool_queued(struct sesame_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->queued;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void
sesame_pool_free(struct sesame_pool *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    struct task *cancelled = pool->head;
    pool->head = pool->tail = NULL;
    pool->queued = 0;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);

    while (cancelled != NULL) {
        struct task *next = cancelled->next;
        finish(cancelled, SESAME_POOL_CANCELLED);
        cancelled = next;
    }
    for (size_t i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}
