#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include <event2/thread.h>

#include "account/pool.h"

/* One test job: its own pipe to block on, and what happened to it. */
struct job {
    int block[2];            /* the job reads one byte from block[0] when blocking */
    int started[2];          /* the job writes one byte here when it starts */
    bool blocking;
    atomic_bool ran;
    pthread_t job_thread;
    pthread_t done_thread;
    int ndone;
    enum sesame_pool_status status;
    int nrelease;
    bool done_before_release;
    bool unblock_on_timeout; /* done(TIMEOUT) writes to block[1] */
    struct job *unblock_other; /* done writes to this job's block[1] */
};

static pthread_t main_thread;

static void
job_init(struct job *j, bool blocking)
{
    memset(j, 0, sizeof(*j));
    assert_int_equal(pipe(j->block), 0);
    assert_int_equal(pipe(j->started), 0);
    j->blocking = blocking;
    atomic_init(&j->ran, false);
}

static void
job_close(struct job *j)
{
    close(j->block[0]);
    close(j->block[1]);
    close(j->started[0]);
    close(j->started[1]);
}

static void
unblock(struct job *j)
{
    assert_int_equal(write(j->block[1], "x", 1), 1);
}

static void
wait_started(struct job *j)
{
    char c;
    assert_int_equal(read(j->started[0], &c, 1), 1);
}

static void
run_job(void *arg)
{
    struct job *j = arg;
    j->job_thread = pthread_self();
    atomic_store(&j->ran, true);
    if (write(j->started[1], "s", 1) != 1)
        abort();
    if (j->blocking) {
        char c;
        if (read(j->block[0], &c, 1) != 1)
            abort();
    }
}

static void
on_done(enum sesame_pool_status status, void *arg)
{
    struct job *j = arg;
    j->done_thread = pthread_self();
    j->ndone++;
    j->status = status;
    if (status == SESAME_POOL_TIMEOUT && j->unblock_on_timeout)
        unblock(j);
    if (j->unblock_other != NULL)
        unblock(j->unblock_other);
}

static void
on_release(void *arg)
{
    struct job *j = arg;
    j->nrelease++;
    j->done_before_release = j->ndone == 1;
}

static struct event_base *
new_base(void)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    return base;
}

static void
test_done_on_caller_thread(void **state)
{
    struct event_base *base = new_base();
    struct sesame_pool *pool = sesame_pool_new(2, 8, NULL);
    assert_non_null(pool);
    struct job j;
    job_init(&j, false);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &j, 5000),
                     SESAME_AGAIN);
    /* The pool keeps the loop alive until the job is collected, then the
     * loop ends by itself (no event left). */
    assert_int_equal(event_base_dispatch(base), 1);
    assert_true(atomic_load(&j.ran));
    assert_int_equal(j.ndone, 1);
    assert_int_equal(j.status, SESAME_POOL_DONE);
    assert_int_equal(j.nrelease, 1);
    assert_true(j.done_before_release);
    assert_true(pthread_equal(j.done_thread, main_thread));
    assert_false(pthread_equal(j.job_thread, main_thread));
    sesame_pool_free(pool);
    job_close(&j);
    event_base_free(base);
}

static void
test_no_deadline(void **state)
{
    struct event_base *base = new_base();
    struct sesame_pool *pool = sesame_pool_new(1, 8, NULL);
    struct job j;
    job_init(&j, true);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &j, 0),
                     SESAME_AGAIN);
    wait_started(&j);
    unblock(&j);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(j.ndone, 1);
    assert_int_equal(j.status, SESAME_POOL_DONE);
    assert_int_equal(j.nrelease, 1);
    sesame_pool_free(pool);
    job_close(&j);
    event_base_free(base);
}

static void
test_timeout(void **state)
{
    struct event_base *base = new_base();
    struct sesame_pool *pool = sesame_pool_new(1, 8, NULL);
    struct job j;
    job_init(&j, true);
    /* The job blocks until done(TIMEOUT) unblocks it: the deadline must
     * fire while the job still runs, whatever the machine's speed. */
    j.unblock_on_timeout = true;
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &j, 20),
                     SESAME_AGAIN);
    wait_started(&j); /* the deadline is checked only once the loop runs */
    assert_int_equal(event_base_dispatch(base), 1);
    assert_true(atomic_load(&j.ran));
    assert_int_equal(j.ndone, 1); /* the late end is not reported again */
    assert_int_equal(j.status, SESAME_POOL_TIMEOUT);
    assert_int_equal(j.nrelease, 1);
    assert_true(j.done_before_release);
    assert_true(pthread_equal(j.done_thread, main_thread));
    sesame_pool_free(pool);
    job_close(&j);
    event_base_free(base);
}

static void
test_expired_in_queue_not_started(void **state)
{
    struct event_base *base = new_base();
    struct sesame_pool *pool = sesame_pool_new(1, 8, NULL);
    struct job a, b;
    job_init(&a, true);
    job_init(&b, false);
    b.unblock_other = &a; /* b's timeout releases a, then b is dequeued */
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &a, 0),
                     SESAME_AGAIN);
    wait_started(&a);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &b, 10),
                     SESAME_AGAIN);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(b.ndone, 1);
    assert_int_equal(b.status, SESAME_POOL_TIMEOUT);
    assert_int_equal(b.nrelease, 1);
    assert_false(atomic_load(&b.ran));
    assert_int_equal(a.ndone, 1);
    assert_int_equal(a.status, SESAME_POOL_DONE);
    assert_int_equal(a.nrelease, 1);
    sesame_pool_free(pool);
    job_close(&a);
    job_close(&b);
    event_base_free(base);
}

static void
test_queue_full(void **state)
{
    struct event_base *base = new_base();
    struct sesame_pool *pool = sesame_pool_new(1, 1, NULL);
    struct job a, b, c;
    job_init(&a, true);
    job_init(&b, false);
    job_init(&c, false);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &a, 0),
                     SESAME_AGAIN);
    wait_started(&a); /* a holds the only thread */
    assert_int_equal(sesame_pool_queued(pool), 0);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &b, 0),
                     SESAME_AGAIN);
    assert_int_equal(sesame_pool_queued(pool), 1);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &c, 0),
                     SESAME_ERROR);
    unblock(&a);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(a.ndone, 1);
    assert_int_equal(b.ndone, 1);
    assert_int_equal(b.status, SESAME_POOL_DONE);
    /* a refused job is never called back */
    assert_int_equal(c.ndone, 0);
    assert_int_equal(c.nrelease, 0);
    assert_false(atomic_load(&c.ran));
    sesame_pool_free(pool);
    job_close(&a);
    job_close(&b);
    job_close(&c);
    event_base_free(base);
}

struct freeer {
    struct sesame_pool *pool;
    struct job *blocked;
};

/* Waits until sesame_pool_free has taken the queue, then lets the running
 * job end so that the join completes. */
static void *
unblock_when_drained(void *arg)
{
    struct freeer *f = arg;
    while (sesame_pool_queued(f->pool) != 0)
        sched_yield();
    unblock(f->blocked);
    return NULL;
}

static void
test_free_cancels_queued(void **state)
{
    struct event_base *base = new_base();
    struct sesame_pool *pool = sesame_pool_new(1, 4, NULL);
    struct job a, b;
    job_init(&a, true);
    job_init(&b, false);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &a, 0),
                     SESAME_AGAIN);
    wait_started(&a);
    assert_int_equal(sesame_pool_submit(pool, base, run_job, on_done, on_release, &b, 0),
                     SESAME_AGAIN);
    struct freeer f = {pool, &a};
    pthread_t helper;
    assert_int_equal(pthread_create(&helper, NULL, unblock_when_drained, &f), 0);
    sesame_pool_free(pool);
    pthread_join(helper, NULL);
    assert_int_equal(event_base_dispatch(base), 1);
    assert_int_equal(a.ndone, 1);
    assert_int_equal(a.status, SESAME_POOL_DONE);
    assert_int_equal(b.ndone, 1);
    assert_int_equal(b.status, SESAME_POOL_CANCELLED);
    assert_int_equal(b.nrelease, 1);
    assert_false(atomic_load(&b.ran));
    job_close(&a);
    job_close(&b);
    event_base_free(base);
}

static void
test_bad_arguments(void **state)
{
    char *err = NULL;
    assert_null(sesame_pool_new(0, 4, &err));
    assert_non_null(strstr(err, "thread count"));
    free(err);
    err = NULL;
    assert_null(sesame_pool_new(2, 0, &err));
    assert_non_null(strstr(err, "queue size"));
    free(err);
    struct sesame_pool *pool = sesame_pool_new(1, 1, NULL);
    assert_int_equal(sesame_pool_submit(pool, NULL, run_job, NULL, NULL, NULL, 0), SESAME_ERROR);
    sesame_pool_free(pool);
    sesame_pool_free(NULL);
}

int
main(void)
{
    evthread_use_pthreads();
    main_thread = pthread_self();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_done_on_caller_thread),
        cmocka_unit_test(test_no_deadline),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_expired_in_queue_not_started),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_free_cancels_queued),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
