/*
 * pool.h - a fixed pool of worker threads for blocking jobs (account
 * plugins), reporting back on the event loop that asked.
 *
 * A job runs on a worker thread; its `done` callback runs later on the
 * thread that runs the caller's event_base, exactly once, with the job's
 * status. A job that outlives its timeout is reported as timed out at the
 * deadline; when it ends, its late result is discarded. The queue of jobs
 * waiting for a thread is bounded: when full, submit fails at once.
 *
 * Requirements: evthread_use_pthreads() was called before the caller's
 * event_base was created (main does it at start; tests must too), and that
 * base outlives every job submitted with it (free the pool, then run the
 * base once more to collect the cancelled jobs, then free the base).
 * While a job is in flight, the pool keeps an event pending on the caller's
 * base, so event_base_dispatch() does not return before the job is over.
 */
#ifndef SESAME_ACCOUNT_POOL_H
#define SESAME_ACCOUNT_POOL_H

#include <event2/event.h>

#include "core/common.h"

struct sesame_pool;

enum sesame_pool_status {
    SESAME_POOL_DONE = 0,      /* the job ran to its end within the timeout */
    SESAME_POOL_TIMEOUT = 1,   /* the deadline passed first (the job may still run) */
    SESAME_POOL_CANCELLED = 2, /* the pool was freed before the job started */
};

/* Runs on a worker thread; may block. */
typedef void (*sesame_pool_job_fn)(void *arg);
/* Runs on the caller's event_base thread, exactly once per accepted job.
 * On SESAME_POOL_TIMEOUT the job may still be running with arg: done must
 * not free arg (release does, once the job is over). */
typedef void (*sesame_pool_done_fn)(enum sesame_pool_status status, void *arg);
/* Runs on the caller's event_base thread, exactly once per accepted job,
 * after done, once the job has ended or will never start: frees arg. */
typedef void (*sesame_pool_release_fn)(void *arg);

/* Creates a pool of `threads` workers (1..256) with room for `max_queue`
 * waiting jobs (1..1000000). Returns NULL with *err on failure. */
struct sesame_pool *sesame_pool_new(size_t threads, size_t max_queue, char **err);

/* Submits a job. Must be called on caller_base's thread. timeout_ms = 0
 * means no deadline. done and release may be NULL.
 * Returns SESAME_AGAIN when accepted (done and release will be called), or
 * SESAME_ERROR at once, calling nothing, when the queue is full, the pool is
 * shutting down, or the events could not be created. */
int sesame_pool_submit(struct sesame_pool *pool, struct event_base *caller_base,
                       sesame_pool_job_fn job, sesame_pool_done_fn done,
                       sesame_pool_release_fn release, void *arg, uint64_t timeout_ms);

/* Number of jobs waiting for a thread (for tests and statistics). */
size_t sesame_pool_queued(struct sesame_pool *pool);

/* Stops the pool: jobs not started yet are cancelled (their done runs with
 * SESAME_POOL_CANCELLED when their base runs again), running jobs are waited
 * for, threads are joined. Must not be called from a job. Accepts NULL. */
void sesame_pool_free(struct sesame_pool *pool);

#endif
