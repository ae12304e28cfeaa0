/* Live tests of the Redis client and the session store against real
 * redis-server processes (and redis-server --sentinel for Sentinel) on free
 * loopback ports. Every process is killed at the end, even on failure
 * (teardown, atexit, and PR_SET_PDEATHSIG in case this process dies). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "core/log.h"
#include "core/util.h"
#include "session/redis.h"
#include "session/session.h"

/* Hang guards only: no test asserts on how long something took. */
#define GUARD_MS 10000
#define FAILOVER_GUARD_MS 60000

/* ---- processes ---- */

#define MAX_PROCS 16

struct server {
    int port;
    char conf[512];
    pid_t pid;
    bool sentinel;
};

static pid_t procs[MAX_PROCS];
static char tmpdir[256];

static void
track(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i] == 0) {
            procs[i] = pid;
            return;
        }
    }
    fail_msg("too many processes");
}

static void
reap(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] == pid)
            procs[i] = 0;
}

static void
kill_all(void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        reap(procs[i]);
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
cleanup_at_exit(void)
{
    kill_all();
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void
msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Writes a config file for a server on a free port; `extra` is appended. */
static void
server_init(struct server *s, bool sentinel, const char *extra)
{
    memset(s, 0, sizeof(*s));
    s->port = free_port();
    s->sentinel = sentinel;
    char dir[400];
    snprintf(dir, sizeof(dir), "%s/%d", tmpdir, s->port);
    mkdir(dir, 0700);
    snprintf(s->conf, sizeof(s->conf), "%s/redis.conf", dir);
    FILE *f = fopen(s->conf, "w");
    assert_non_null(f);
    fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s/log\n", s->port, dir, dir);
    if (!sentinel)
        fprintf(f, "save \"\"\nappendonly yes\nappendfsync always\n");
    if (extra)
        fputs(extra, f);
    fclose(f);
}

static bool
ping_ok(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c != NULL && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        /* -NOAUTH also proves the server is up */
        ok = r != NULL && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR);
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

static void
server_start(struct server *s)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 1);
        if (s->sentinel)
            execlp("redis-server", "redis-server", s->conf, "--sentinel", (char *)NULL);
        else
            execlp("redis-server", "redis-server", s->conf, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    track(pid);
    uint64_t end = sesame_util_mono_ms() + GUARD_MS;
    while (!ping_ok(s->port)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            fail_msg("redis-server on port %d exited at start", s->port);
        if (sesame_util_mono_ms() > end)
            fail_msg("redis-server on port %d did not start", s->port);
        msleep(20);
    }
}

static void
server_kill(struct server *s)
{
    reap(s->pid);
    s->pid = 0;
}

/* A plain synchronous connection for checks from the test itself. */
static redisContext *
sync_conn(int port, const char *password, int db)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *r;
    if (password) {
        r = redisCommand(c, "AUTH %s", password);
        assert_int_equal(r->type, REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    if (db) {
        r = redisCommand(c, "SELECT %d", db);
        assert_int_equal(r->type, REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    return c;
}

/* ---- event loop ---- */

struct env {
    struct event_base *base;
    struct event *tick;
    struct sesame_conf conf;
    struct server srv;
    struct sesame_redis *r;
    char *sentinels[3];
};

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

typedef bool (*pred_fn)(void *arg);

static bool
run_until(struct env *e, pred_fn pred, void *arg, int guard_ms)
{
    uint64_t end = sesame_util_mono_ms() + (uint64_t)guard_ms;
    while (!pred(arg)) {
        if (sesame_util_mono_ms() > end)
            return false;
        event_base_loop(e->base, EVLOOP_ONCE);
    }
    return true;
}

static void
run_for(struct env *e, int ms)
{
    uint64_t end = sesame_util_mono_ms() + (uint64_t)ms;
    while (sesame_util_mono_ms() < end)
        event_base_loop(e->base, EVLOOP_ONCE);
}

static bool
pred_flag(void *arg)
{
    return *(bool *)arg;
}

static bool
pred_up(void *arg)
{
    return sesame_redis_is_up(arg);
}

static bool
pred_down(void *arg)
{
    return !sesame_redis_is_up(arg);
}

static bool
pred_subscribed(void *arg)
{
    return sesame_redis_subscribed(arg);
}

static void
conf_defaults(struct sesame_conf *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->has_redis = true;
    c->redis.host = (char *)"127.0.0.1";
    c->redis.port = port;
    c->redis.connect_timeout_ms = 1000;
    c->redis.command_timeout_ms = 1000;
    c->redis.prefix = (char *)"sesame:";
    c->session.cookie_name = (char *)"sesame";
    memset(c->session.secret, 0x5e, sizeof(c->session.secret));
    c->session.inactivity_timeout_ms = 30 * 60 * 1000;
    c->session.max_lifetime_ms = 8 * 3600 * 1000;
    c->session.touch_interval_ms = 60 * 1000;
    c->session.cache_ttl_ms = 0;
    c->session.login_timeout_ms = 600 * 1000;
}

static struct env *
env_new(const char *extra)
{
    struct env *e = calloc(1, sizeof(*e));
    e->base = event_base_new();
    e->tick = event_new(e->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 20000};
    event_add(e->tick, &tv);
    server_init(&e->srv, false, extra);
    server_start(&e->srv);
    conf_defaults(&e->conf, e->srv.port);
    return e;
}

static void
env_connect(struct env *e)
{
    e->r = sesame_redis_new(e->base, &e->conf.redis);
    assert_non_null(e->r);
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
}

static void
env_free(struct env *e)
{
    sesame_redis_free(e->r);
    server_kill(&e->srv);
    event_free(e->tick);
    event_base_free(e->base);
    for (int i = 0; i < 3; i++)
        free(e->sentinels[i]);
    free(e);
}

/* ---- Redis command helper ---- */

struct cmd_result {
    bool done;
    int calls;
    bool null;
    int type;
    long long integer;
    char str[256];
    size_t elements;
};

static void
on_cmd(const redisReply *reply, void *arg)
{
    struct cmd_result *res = arg;
    res->calls++;
    res->done = true;
    res->null = reply == NULL;
    if (reply == NULL)
        return;
    res->type = reply->type;
    res->integer = reply->integer;
    res->elements = reply->elements;
    if (reply->str)
        snprintf(res->str, sizeof(res->str), "%.*s", (int)reply->len, reply->str);
}

static struct cmd_result
cmd(struct env *e, int argc, const char **argv)
{
    struct cmd_result res;
    memset(&res, 0, sizeof(res));
    sesame_redis_command(e->r, on_cmd, &res, argc, argv, NULL);
    assert_false(res.done); /* never from inside the call */
    assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
    return res;
}

/* ---- Redis client tests ---- */

static void
test_redis_auth_select_pipeline(void **state)
{
    (void)state;
    struct env *e = env_new("requirepass \"s3cr3t pass\"\n");
    e->conf.redis.password = (char *)"s3cr3t pass";
    e->conf.redis.database = 3;
    env_connect(e);

    const char *set[] = {"SET", "k", "v\0binary"};
    size_t setlens[] = {3, 1, 8};
    struct cmd_result res;
    memset(&res, 0, sizeof(res));
    sesame_redis_command(e->r, on_cmd, &res, 3, set, setlens);
    assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
    assert_false(res.null);
    assert_string_equal(res.str, "OK");

    /* the key went to database 3, binary-safe */
    redisContext *c = sync_conn(e->srv.port, "s3cr3t pass", 3);
    redisReply *r = redisCommand(c, "STRLEN k");
    assert_int_equal(r->integer, 8);
    freeReplyObject(r);
    redisFree(c);
    c = sync_conn(e->srv.port, "s3cr3t pass", 0);
    r = redisCommand(c, "EXISTS k");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    redisFree(c);

    /* 200 pipelined commands answer in order, each exactly once */
    struct cmd_result many[200];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *argv[] = {"ECHO", v};
        sesame_redis_command(e->r, on_cmd, &many[i], 2, argv, NULL);
    }
    assert_true(run_until(e, pred_flag, &many[199].done, GUARD_MS));
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        assert_int_equal(many[i].calls, 1);
        assert_string_equal(many[i].str, v);
    }

    /* an error reply is passed through */
    const char *bad[] = {"INCR", "k"};
    res = cmd(e, 2, bad);
    assert_false(res.null);
    assert_int_equal(res.type, REDIS_REPLY_ERROR);
    env_free(e);
}

static void
test_redis_wrong_password(void **state)
{
    (void)state;
    struct env *e = env_new("requirepass right\n");
    e->conf.redis.password = (char *)"wrong";
    e->r = sesame_redis_new(e->base, &e->conf.redis);
    assert_non_null(e->r);
    run_for(e, 300);
    assert_false(sesame_redis_is_up(e->r));
    const char *argv[] = {"PING"};
    struct cmd_result res = cmd(e, 1, argv);
    assert_true(res.null);
    assert_int_equal(res.calls, 1);
    env_free(e);
}

static void
test_redis_down_fails_fast(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.redis.command_timeout_ms = 60000; /* a queued command would hang */
    e->conf.redis.port = free_port();         /* nobody listens there */
    e->r = sesame_redis_new(e->base, &e->conf.redis);
    assert_non_null(e->r);
    run_for(e, 200);
    for (int i = 0; i < 5; i++) {
        const char *argv[] = {"PING"};
        struct cmd_result res;
        memset(&res, 0, sizeof(res));
        sesame_redis_command(e->r, on_cmd, &res, 1, argv, NULL);
        assert_false(res.done);
        assert_true(run_until(e, pred_flag, &res.done, 3000));
        assert_true(res.null);
    }
    env_free(e);
}

static void
test_redis_restart(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.redis.command_timeout_ms = 60000;
    env_connect(e);
    const char *set[] = {"SET", "survivor", "yes"};
    assert_string_equal(cmd(e, 3, set).str, "OK");

    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, e->r, GUARD_MS));
    const char *get[] = {"GET", "survivor"};
    struct cmd_result res = cmd(e, 2, get);
    assert_true(res.null);

    /* same port, same data directory: the append-only file brings it back */
    server_start(&e->srv);
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
    res = cmd(e, 2, get);
    assert_false(res.null);
    assert_string_equal(res.str, "yes");
    env_free(e);
}

static void
test_redis_timeout(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.redis.command_timeout_ms = 300;
    env_connect(e);
    kill(e->srv.pid, SIGSTOP);
    const char *argv[] = {"SET", "late", "1"};
    struct cmd_result res = cmd(e, 3, argv);
    assert_true(res.null);
    assert_false(sesame_redis_is_up(e->r));
    kill(e->srv.pid, SIGCONT);
    /* the connection was replaced; the late reply never comes */
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
    run_for(e, 100);
    assert_int_equal(res.calls, 1);
    const char *ping[] = {"PING"};
    res = cmd(e, 1, ping);
    assert_false(res.null);
    assert_string_equal(res.str, "PONG");
    env_free(e);
}

static void
test_redis_cancel(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct cmd_result a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    const char *argv[] = {"PING"};
    struct sesame_redis_op *op = sesame_redis_command(e->r, on_cmd, &a, 1, argv, NULL);
    sesame_redis_command(e->r, on_cmd, &b, 1, argv, NULL);
    sesame_redis_cancel(op);
    assert_true(run_until(e, pred_flag, &b.done, GUARD_MS));
    run_for(e, 50);
    assert_int_equal(a.calls, 0);
    /* cancelled while down: never called either */
    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, e->r, GUARD_MS));
    memset(&b, 0, sizeof(b));
    op = sesame_redis_command(e->r, on_cmd, &a, 1, argv, NULL);
    sesame_redis_cancel(op);
    sesame_redis_command(e->r, on_cmd, &b, 1, argv, NULL);
    assert_true(run_until(e, pred_flag, &b.done, GUARD_MS));
    assert_int_equal(a.calls, 0);
    /* outstanding at free: never called */
    memset(&a, 0, sizeof(a));
    sesame_redis_command(e->r, on_cmd, &a, 1, argv, NULL);
    env_free(e);
    assert_int_equal(a.calls, 0);
}

static void
test_redis_transaction(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    const char *set[] = {"SET", "t1", "a"};
    const char *incr[] = {"INCR", "t2"};
    struct sesame_redis_cmd cmds[] = {{3, set, NULL}, {2, incr, NULL}};
    struct cmd_result res;
    memset(&res, 0, sizeof(res));
    sesame_redis_transaction(e->r, on_cmd, &res, cmds, 2);
    assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
    assert_false(res.null);
    assert_int_equal(res.type, REDIS_REPLY_ARRAY);
    assert_int_equal(res.elements, 2);
    assert_int_equal(res.calls, 1);
    /* an invalid command aborts the whole transaction */
    const char *bad[] = {"SET", "t1"};
    struct sesame_redis_cmd cmds2[] = {{3, set, NULL}, {2, bad, NULL}};
    memset(&res, 0, sizeof(res));
    sesame_redis_transaction(e->r, on_cmd, &res, cmds2, 2);
    assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
    assert_int_equal(res.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(res.str, "EXECABORT"));
    /* down: the result is NULL, once */
    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, e->r, GUARD_MS));
    memset(&res, 0, sizeof(res));
    sesame_redis_transaction(e->r, on_cmd, &res, cmds, 2);
    assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
    assert_true(res.null);
    run_for(e, 50);
    assert_int_equal(res.calls, 1);
    env_free(e);
}

struct sub_state {
    int subscribed;
    int messages;
    char last[64];
};

static void
on_sub_msg(const char *msg, size_t len, void *arg)
{
    struct sub_state *s = arg;
    s->messages++;
    snprintf(s->last, sizeof(s->last), "%.*s", (int)len, msg);
}

static void
on_sub_made(void *arg)
{
    ((struct sub_state *)arg)->subscribed++;
}

static bool
pred_messages(void *arg)
{
    return ((struct sub_state *)arg)->messages > 0;
}

static void
publish(int port, const char *channel, const char *msg)
{
    redisContext *c = sync_conn(port, NULL, 0);
    redisReply *r = redisCommand(c, "PUBLISH %s %s", channel, msg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    redisFree(c);
}

static void
test_redis_pubsub(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct sub_state s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(sesame_redis_subscribe(e->r, "chan", on_sub_msg, on_sub_made, &s),
                     SESAME_OK);
    assert_int_equal(sesame_redis_subscribe(e->r, "chan", on_sub_msg, on_sub_made, &s),
                     SESAME_ERROR);
    assert_true(run_until(e, pred_subscribed, e->r, GUARD_MS));
    assert_int_equal(s.subscribed, 1);
    publish(e->srv.port, "chan", "hello");
    assert_true(run_until(e, pred_messages, &s, GUARD_MS));
    assert_string_equal(s.last, "hello");

    /* after a restart the subscription is made again and says so */
    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, e->r, GUARD_MS));
    assert_false(sesame_redis_subscribed(e->r));
    server_start(&e->srv);
    assert_true(run_until(e, pred_subscribed, e->r, GUARD_MS));
    assert_int_equal(s.subscribed, 2);
    s.messages = 0;
    publish(e->srv.port, "chan", "again");
    assert_true(run_until(e, pred_messages, &s, GUARD_MS));
    assert_string_equal(s.last, "again");
    sesame_redis_unsubscribe(e->r, "chan");
    env_free(e);
}

/* ---- session helpers ---- */

struct sres {
    bool done;
    int calls;
    int status;
    struct sesame_session *s;
    char cookie[SESAME_SESSION_ID_LEN + 1];
    size_t count;
    json_t *blob;
};

static void
on_load(int status, struct sesame_session *s, void *arg)
{
    struct sres *r = arg;
    r->calls++;
    r->done = true;
    r->status = status;
    r->s = s;
}

static void
on_create(int status, const char *cookie, void *arg)
{
    struct sres *r = arg;
    r->calls++;
    r->done = true;
    r->status = status;
    if (cookie)
        snprintf(r->cookie, sizeof(r->cookie), "%s", cookie);
}

static void
on_done(int status, void *arg)
{
    struct sres *r = arg;
    r->calls++;
    r->done = true;
    r->status = status;
}

static void
on_count(int status, size_t n, void *arg)
{
    struct sres *r = arg;
    r->calls++;
    r->done = true;
    r->status = status;
    r->count = n;
}

static void
on_take(int status, json_t *blob, void *arg)
{
    struct sres *r = arg;
    r->calls++;
    r->done = true;
    r->status = status;
    r->blob = blob;
}

static int
finish(struct env *e, int rc, struct sres *res)
{
    if (rc != SESAME_AGAIN)
        return rc;
    assert_false(res->done);
    assert_true(run_until(e, pred_flag, &res->done, GUARD_MS));
    assert_int_equal(res->calls, 1);
    return res->status;
}

static int
do_load(struct env *e, struct sesame_session_store *st, const char *cookie, const char *tenant,
        struct sesame_session **out)
{
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op = NULL;
    *out = NULL;
    int rc = sesame_session_load(st, cookie, tenant, on_load, &res, out, &op);
    if (rc == SESAME_AGAIN) {
        rc = finish(e, rc, &res);
        *out = res.s;
    }
    if (rc == SESAME_OK)
        assert_non_null(*out);
    else
        assert_null(*out);
    return rc;
}

static int
do_create(struct env *e, struct sesame_session_store *st, struct sesame_session *s,
          const char *prev, char cookie[SESAME_SESSION_ID_LEN + 1])
{
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    int rc = finish(e, sesame_session_create(st, s, prev, on_create, &res, &op), &res);
    snprintf(cookie, SESAME_SESSION_ID_LEN + 1, "%s", res.cookie);
    return rc;
}

static int
do_destroy(struct env *e, struct sesame_session_store *st, const char *cookie)
{
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    return finish(e, sesame_session_destroy(st, cookie, on_done, &res, &op), &res);
}

static int
do_revoke(struct env *e, struct sesame_session_store *st, const char *tenant, const char *account,
          size_t *count)
{
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    int rc = finish(e, sesame_session_revoke_account(st, tenant, account, on_count, &res, &op),
                    &res);
    *count = res.count;
    return rc;
}

static struct sesame_session *
make_record(const char *tenant, const char *account)
{
    struct sesame_session *s = sesame_session_new();
    s->tenant = strdup(tenant);
    s->account = strdup(account);
    s->provider = strdup("franceconnect");
    s->acr = strdup("eidas1");
    s->id_token = strdup("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJl");
    s->claims = json_pack("{s:s, s:s, s:s, s:s}", "given_name", "Angela Claire Louise",
                          "family_name", "DUBOIS", "birthdate", "1962-08-24", "email",
                          "wossewodda-3728@yopmail.com");
    s->attributes = json_pack("{s:s}", "quartier", "Centre");
    return s;
}

static redisReply *
raw_get(struct env *e, const char *key)
{
    redisContext *c = sync_conn(e->srv.port, NULL, 0);
    redisReply *r = redisCommand(c, "GET %s", key);
    redisFree(c);
    return r;
}

static long long
raw_int(struct env *e, const char *fmt, const char *a, const char *b)
{
    redisContext *c = sync_conn(e->srv.port, NULL, 0);
    redisReply *r = redisCommand(c, fmt, a, b);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void
key_of(const char *cookie, char *key, size_t cap, char hex[65])
{
    unsigned char hash[32];
    assert_int_equal(sesame_session_key("sesame:", cookie, key, cap, hash), SESAME_OK);
    if (hex)
        sesame_util_hex(hex, hash, 32);
}

/* ---- session tests ---- */

static void
test_session_create_load(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    assert_non_null(st);
    struct sesame_session *s = make_record("ville-a", "account-1");
    char cookie[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);
    assert_int_equal(strlen(cookie), SESAME_SESSION_ID_LEN);
    assert_true(s->created_ms > 0);
    assert_int_equal(s->last_seen_ms, s->created_ms);
    assert_int_equal(s->expires_ms, s->created_ms + (int64_t)e->conf.session.max_lifetime_ms);

    struct sesame_session *got;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_OK);
    assert_string_equal(got->account, "account-1");
    assert_string_equal(got->provider, "franceconnect");
    assert_string_equal(got->acr, "eidas1");
    assert_string_equal(got->id_token, s->id_token);
    assert_true(json_equal(got->claims, s->claims));
    assert_true(json_equal(got->attributes, s->attributes));
    assert_int_equal(got->created_ms, s->created_ms);
    assert_int_equal(got->expires_ms, s->expires_ms);
    sesame_session_free(got);

    /* a second instance (its own client and store) accepts the same cookie */
    struct sesame_redis *r2 = sesame_redis_new(e->base, &e->conf.redis);
    assert_true(run_until(e, pred_up, r2, GUARD_MS));
    struct sesame_session_store *st2 = sesame_session_store_new(r2, &e->conf);
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_OK);
    assert_string_equal(got->account, "account-1");
    sesame_session_free(got);

    /* another tenant never gets it */
    assert_int_equal(do_load(e, st, cookie, "ville-b", &got), SESAME_DECLINED);

    /* the stored value: no plaintext, TTL set, indexed by account */
    char key[128], hex[65];
    key_of(cookie, key, sizeof(key), hex);
    redisReply *raw = raw_get(e, key);
    assert_int_equal(raw->type, REDIS_REPLY_STRING);
    static const char *secrets[] = {"Angela", "DUBOIS", "1962", "yopmail", "account-1",
                                    "ville-a", "eyJ", "Centre", "eidas1"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        assert_null(memmem(raw->str, raw->len, secrets[i], strlen(secrets[i])));
    print_message("stored session value: %zu bytes for this record\n", raw->len);
    /* the secret alone opens nothing (a Redis dump plus session.key); the
     * cookie is needed too */
    char *plain = NULL;
    size_t plen;
    assert_int_equal(sesame_session_open(&e->conf.session, key, strlen(key),
                                         (const unsigned char *)raw->str, raw->len, &plain, &plen),
                     SESAME_DECLINED);
    assert_int_equal(sesame_session_record_open(&e->conf.session, cookie, key, strlen(key),
                                                (const unsigned char *)raw->str, raw->len, &plain,
                                                &plen),
                     SESAME_OK);
    assert_non_null(memmem(plain, plen, "DUBOIS", 6));
    free(plain);
    freeReplyObject(raw);
    long long pttl = raw_int(e, "PTTL %s", key, NULL);
    assert_true(pttl > 0 && pttl <= (long long)e->conf.session.inactivity_timeout_ms);
    assert_int_equal(raw_int(e, "SISMEMBER %s %s", "sesame:a:ville-a:account-1", hex), 1);
    pttl = raw_int(e, "PTTL %s", "sesame:a:ville-a:account-1", NULL);
    assert_true(pttl > 0 && pttl <= (long long)e->conf.session.max_lifetime_ms);

    /* one character changed: refused */
    char altered[SESAME_SESSION_ID_LEN + 1];
    memcpy(altered, cookie, sizeof(altered));
    altered[3] = altered[3] == 'A' ? 'B' : 'A';
    assert_int_equal(do_load(e, st, altered, "ville-a", &got), SESAME_DECLINED);
    /* invalid cookie: declined at once, no round trip */
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(sesame_session_load(st, "short", "ville-a", on_load, &res, &got, &op),
                     SESAME_DECLINED);

    /* the value moved under another session's key does not open */
    char cookie2[SESAME_SESSION_ID_LEN + 1];
    struct sesame_session *s2 = make_record("ville-a", "account-2");
    assert_int_equal(do_create(e, st, s2, NULL, cookie2), SESAME_OK);
    char key2[128];
    key_of(cookie2, key2, sizeof(key2), NULL);
    redisContext *c = sync_conn(e->srv.port, NULL, 0);
    redisReply *rr = redisCommand(c, "COPY %s %s REPLACE", key, key2);
    assert_int_equal(rr->integer, 1);
    freeReplyObject(rr);
    redisFree(c);
    assert_int_equal(do_load(e, st, cookie2, "ville-a", &got), SESAME_DECLINED);

    /* a wrong secret reads nothing */
    struct sesame_conf other = e->conf;
    memset(other.session.secret, 0x77, sizeof(other.session.secret));
    struct sesame_session_store *st3 = sesame_session_store_new(r2, &other);
    assert_int_equal(do_load(e, st3, cookie, "ville-a", &got), SESAME_DECLINED);
    /* ... unless the old secret is kept as the previous one */
    memcpy(other.session.previous_secret, e->conf.session.secret, SESAME_SESSION_KEY_LEN);
    other.session.has_previous_secret = true;
    assert_int_equal(do_load(e, st3, cookie, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);

    /* a value of the former format (sealed under the secret alone) at a
     * session key is refused and deleted */
    unsigned char *v1;
    size_t v1len;
    size_t jlen;
    char *json = sesame_session_serialize(s, &jlen);
    assert_int_equal(sesame_session_seal(&e->conf.session, key, strlen(key), json, jlen, &v1,
                                         &v1len),
                     SESAME_OK);
    free(json);
    c = sync_conn(e->srv.port, NULL, 0);
    rr = redisCommand(c, "SET %s %b", key, v1, v1len);
    freeReplyObject(rr);
    redisFree(c);
    free(v1);
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_DECLINED);
    const char *ping[] = {"PING"};
    cmd(e, 1, ping); /* the deletion was sent before */
    assert_int_equal(raw_int(e, "EXISTS %s", key, NULL), 0);

    sesame_session_free(s);
    sesame_session_free(s2);
    sesame_session_store_free(st3);
    sesame_session_store_free(st2);
    sesame_session_store_free(st);
    sesame_redis_free(r2);
    env_free(e);
}

struct clock {
    int64_t now;
};

static int64_t
wall_clock_ms_for_tests(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
fake_now(void *arg)
{
    return ((struct clock *)arg)->now;
}

static void
test_session_touch_and_inactivity(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.session.inactivity_timeout_ms = 60000;
    e->conf.session.touch_interval_ms = 10000;
    e->conf.session.max_lifetime_ms = 3600000;
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct clock clk = {.now = 1700000000000};
    sesame_session_store_set_clock(st, fake_now, &clk);
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1], key[128];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);
    key_of(cookie, key, sizeof(key), NULL);
    redisReply *v0 = raw_get(e, key);

    /* within the touch interval: no write-back */
    clk.now += 9000;
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_OK);
    assert_int_equal(got->last_seen_ms, 1700000000000);
    sesame_session_free(got);
    const char *ping[] = {"PING"};
    cmd(e, 1, ping); /* any write-back was sent before this */
    redisReply *v1 = raw_get(e, key);
    assert_int_equal(v0->len, v1->len);
    assert_memory_equal(v0->str, v1->str, v0->len);
    freeReplyObject(v1);

    /* past it: written back once */
    clk.now += 2000;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_OK);
    assert_int_equal(got->last_seen_ms, clk.now);
    sesame_session_free(got);
    cmd(e, 1, ping);
    v1 = raw_get(e, key);
    assert_false(v0->len == v1->len && memcmp(v0->str, v1->str, v0->len) == 0);
    freeReplyObject(v1);
    freeReplyObject(v0);
    long long pttl = raw_int(e, "PTTL %s", key, NULL);
    assert_true(pttl > 0 && pttl <= 60000);
    /* another store (a fresh process) sees the new last_seen */
    struct sesame_session_store *st2 = sesame_session_store_new(e->r, &e->conf);
    sesame_session_store_set_clock(st2, fake_now, &clk);
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_OK);
    assert_int_equal(got->last_seen_ms, clk.now);
    sesame_session_free(got);

    /* idle longer than the inactivity timeout: gone, and deleted */
    clk.now += 60001;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_DECLINED);
    cmd(e, 1, ping);
    assert_int_equal(raw_int(e, "EXISTS %s", key, NULL), 0);
    sesame_session_free(s);
    sesame_session_store_free(st2);
    sesame_session_store_free(st);
    env_free(e);
}

static void
test_session_absolute_expiry(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.session.inactivity_timeout_ms = 5000;
    e->conf.session.touch_interval_ms = 1000;
    e->conf.session.max_lifetime_ms = 10000;
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct clock clk = {.now = wall_clock_ms_for_tests()};
    sesame_session_store_set_clock(st, fake_now, &clk);
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1], key[128];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);
    key_of(cookie, key, sizeof(key), NULL);
    const char *ping[] = {"PING"};
    struct sesame_session *got;
    /* active every 3 s: the inactivity timeout never hits */
    for (int i = 0; i < 3; i++) {
        clk.now += 3000;
        assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_OK);
        sesame_session_free(got);
    }
    /* t0 + 9 s: the TTL is the remaining lifetime, not the inactivity */
    cmd(e, 1, ping);
    long long pttl = raw_int(e, "PTTL %s", key, NULL);
    assert_true(pttl > 0 && pttl <= 1000);
    /* t0 + 10 s: over */
    clk.now += 1000;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_DECLINED);
    /* a caller-given earlier end is kept; a later one is capped */
    struct sesame_session *s2 = make_record("ville-a", "acc");
    s2->expires_ms = clk.now + 2000;
    assert_int_equal(do_create(e, st, s2, NULL, cookie), SESAME_OK);
    assert_int_equal(s2->expires_ms, clk.now + 2000);
    s2->expires_ms = clk.now + 999999999;
    assert_int_equal(do_create(e, st, s2, NULL, cookie), SESAME_OK);
    assert_int_equal(s2->expires_ms, clk.now + 10000);
    sesame_session_free(s2);
    sesame_session_free(s);
    sesame_session_store_free(st);
    env_free(e);
}

static bool
pred_key_gone(void *arg)
{
    void **a = arg;
    struct env *e = a[0];
    return raw_int(e, "EXISTS %s", a[1], NULL) == 0;
}

static void
test_session_real_ttl(void **state)
{
    (void)state;
    /* short real durations: Redis itself drops an idle session */
    struct env *e = env_new(NULL);
    e->conf.session.inactivity_timeout_ms = 300;
    e->conf.session.touch_interval_ms = 100;
    e->conf.session.max_lifetime_ms = 5000;
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1], key[128];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);
    key_of(cookie, key, sizeof(key), NULL);
    void *a[] = {e, key};
    assert_true(run_until(e, pred_key_gone, a, GUARD_MS));
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_DECLINED);
    sesame_session_free(s);
    sesame_session_store_free(st);
    env_free(e);
}

static void
test_session_destroy_and_relogin(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct sesame_session *s = make_record("ville-a", "acc");
    char c1[SESAME_SESSION_ID_LEN + 1], c2[SESAME_SESSION_ID_LEN + 1], key1[128], hex1[65];
    assert_int_equal(do_create(e, st, s, NULL, c1), SESAME_OK);
    key_of(c1, key1, sizeof(key1), hex1);

    /* a new login issues a new id and destroys the previous session */
    assert_int_equal(do_create(e, st, s, c1, c2), SESAME_OK);
    assert_string_not_equal(c1, c2);
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, c1, "ville-a", &got), SESAME_DECLINED);
    assert_int_equal(do_load(e, st, c2, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);

    /* logout */
    char key2[128], hex2[65];
    key_of(c2, key2, sizeof(key2), hex2);
    assert_int_equal(do_destroy(e, st, c2), SESAME_OK);
    assert_int_equal(do_load(e, st, c2, "ville-a", &got), SESAME_DECLINED);
    assert_int_equal(raw_int(e, "EXISTS %s", key2, NULL), 0);
    const char *ping[] = {"PING"};
    cmd(e, 1, ping); /* the index clean-up was sent before */
    assert_int_equal(raw_int(e, "SISMEMBER %s %s", "sesame:a:ville-a:acc", hex2), 0);
    /* destroying again is harmless; an invalid id is declined at once */
    assert_int_equal(do_destroy(e, st, c2), SESAME_OK);
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(sesame_session_destroy(st, "nope", on_done, &res, &op), SESAME_DECLINED);
    sesame_session_free(s);
    sesame_session_store_free(st);
    env_free(e);
}

static void
test_session_revoke_account(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    char ca[3][SESAME_SESSION_ID_LEN + 1], cb_[SESAME_SESSION_ID_LEN + 1],
        cc[SESAME_SESSION_ID_LEN + 1];
    struct sesame_session *a = make_record("ville-a", "citizen-1");
    struct sesame_session *b = make_record("ville-a", "citizen-2");
    struct sesame_session *c = make_record("ville-b", "citizen-1");
    for (int i = 0; i < 3; i++)
        assert_int_equal(do_create(e, st, a, NULL, ca[i]), SESAME_OK);
    assert_int_equal(do_create(e, st, b, NULL, cb_), SESAME_OK);
    assert_int_equal(do_create(e, st, c, NULL, cc), SESAME_OK);
    size_t n;
    assert_int_equal(do_revoke(e, st, "ville-a", "citizen-1", &n), SESAME_OK);
    assert_int_equal(n, 3);
    struct sesame_session *got;
    for (int i = 0; i < 3; i++)
        assert_int_equal(do_load(e, st, ca[i], "ville-a", &got), SESAME_DECLINED);
    assert_int_equal(do_load(e, st, cb_, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);
    /* the same account id in another tenant is another citizen */
    assert_int_equal(do_load(e, st, cc, "ville-b", &got), SESAME_OK);
    sesame_session_free(got);
    assert_int_equal(raw_int(e, "EXISTS %s", "sesame:a:ville-a:citizen-1", NULL), 0);
    assert_int_equal(do_revoke(e, st, "ville-a", "citizen-1", &n), SESAME_OK);
    assert_int_equal(n, 0);
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(sesame_session_revoke_account(st, "ville-a", "", on_count, &res, &op),
                     SESAME_ERROR);
    sesame_session_free(a);
    sesame_session_free(b);
    sesame_session_free(c);
    sesame_session_store_free(st);
    env_free(e);
}

/* Territories (session.h "Trees"): a territory session and the sessions
 * derived from it share a tree; revoking the tree ends them all. */
static void
test_session_tree(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    const char *tree = "TREE-0123456789abcdefghijklmnopqrstuvwxyzAB";
    char ct[SESAME_SESSION_ID_LEN + 1], ca[SESAME_SESSION_ID_LEN + 1], cb_[SESAME_SESSION_ID_LEN + 1],
        co[SESAME_SESSION_ID_LEN + 1], key[128], hex[65];
    struct sesame_session *t = make_record("@agglo", "sub-1");
    t->tree = strdup(tree);
    assert_int_equal(do_create(e, st, t, NULL, ct), SESAME_OK);
    struct sesame_session *a = make_record("ville-a", "acc-a");
    a->tree = strdup(tree);
    a->parent = strdup(ct);
    a->expires_ms = t->expires_ms - 1000; /* never later than the territory's */
    free(a->id_token);
    a->id_token = NULL;
    assert_int_equal(do_create(e, st, a, NULL, ca), SESAME_OK);
    assert_true(a->expires_ms <= t->expires_ms - 1000);
    struct sesame_session *b = make_record("ville-b", "acc-b");
    b->tree = strdup(tree);
    b->parent = strdup(ct);
    assert_int_equal(do_create(e, st, b, NULL, cb_), SESAME_OK);
    struct sesame_session *o = make_record("ville-a", "acc-a"); /* another browser, no tree */
    assert_int_equal(do_create(e, st, o, NULL, co), SESAME_OK);

    /* the record keeps its tree and parent, encrypted */
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, ca, "ville-a", &got), SESAME_OK);
    assert_string_equal(got->tree, tree);
    assert_string_equal(got->parent, ct);
    sesame_session_free(got);
    key_of(ca, key, sizeof(key), hex);
    redisReply *raw = raw_get(e, key);
    assert_int_equal(raw->type, REDIS_REPLY_STRING);
    assert_null(memmem(raw->str, raw->len, tree, strlen(tree)));
    assert_null(memmem(raw->str, raw->len, ct, strlen(ct)));
    freeReplyObject(raw);
    /* the indexes: the tree's sessions, and the trees of an account */
    char tidx[128];
    snprintf(tidx, sizeof(tidx), "sesame:a:@tree:%s", tree);
    assert_int_equal(raw_int(e, "SCARD %s", tidx, NULL), 3);
    assert_int_equal(raw_int(e, "SISMEMBER %s %s", tidx, hex), 1);
    assert_int_equal(raw_int(e, "SISMEMBER %s %s", "sesame:at:ville-a:acc-a", tree), 1);
    assert_int_equal(raw_int(e, "SISMEMBER %s %s", "sesame:at:ville-b:acc-b", tree), 1);
    assert_int_equal(raw_int(e, "SISMEMBER %s %s", "sesame:at:@agglo:sub-1", tree), 1);
    long long pttl = raw_int(e, "PTTL %s", tidx, NULL);
    assert_true(pttl > 0 && pttl <= (long long)e->conf.session.max_lifetime_ms);

    /* destroying one leaves the tree's index */
    assert_int_equal(do_destroy(e, st, cb_), SESAME_OK);
    const char *ping[] = {"PING"};
    cmd(e, 1, ping);
    assert_int_equal(raw_int(e, "SCARD %s", tidx, NULL), 2);

    /* revoking the tree ends the territory session and every derived one */
    size_t n;
    assert_int_equal(do_revoke(e, st, "@tree", tree, &n), SESAME_OK);
    assert_int_equal(n, 2);
    assert_int_equal(do_load(e, st, ct, "@agglo", &got), SESAME_DECLINED);
    assert_int_equal(do_load(e, st, ca, "ville-a", &got), SESAME_DECLINED);
    assert_int_equal(do_load(e, st, co, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);
    assert_int_equal(raw_int(e, "EXISTS %s", tidx, NULL), 0);

    /* a one-time ticket past its lifetime is gone */
    char stt[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(sesame_util_random_token(stt, sizeof(stt), 32), SESAME_OK);
    json_t *blob = json_pack("{s:s}", "k", "territory");
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(finish(e, sesame_session_login_put(st, stt, blob, 50, on_done, &res, &op), &res),
                     SESAME_OK);
    usleep(150 * 1000);
    memset(&res, 0, sizeof(res));
    assert_int_equal(finish(e, sesame_session_login_take(st, stt, on_take, &res, &op), &res),
                     SESAME_DECLINED);
    assert_null(res.blob);
    json_decref(blob);

    sesame_session_free(t);
    sesame_session_free(a);
    sesame_session_free(b);
    sesame_session_free(o);
    sesame_session_store_free(st);
    env_free(e);
}

struct two {
    struct sesame_session_store *st;
    size_t want;
};

static bool
pred_cache_count(void *arg)
{
    struct two *t = arg;
    return sesame_session_cache_count(t->st) == t->want;
}

static void
test_session_cache_revocation(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.session.cache_ttl_ms = 60000;
    env_connect(e);
    /* two instances, each with its own client, store and cache */
    struct sesame_redis *r2 = sesame_redis_new(e->base, &e->conf.redis);
    struct sesame_session_store *st1 = sesame_session_store_new(e->r, &e->conf);
    struct sesame_session_store *st2 = sesame_session_store_new(r2, &e->conf);
    assert_true(run_until(e, pred_subscribed, e->r, GUARD_MS));
    assert_true(run_until(e, pred_subscribed, r2, GUARD_MS));
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(do_create(e, st1, s, NULL, cookie), SESAME_OK);
    assert_int_equal(sesame_session_cache_count(st1), 1);

    /* instance 2: first load from Redis, then from its cache, synchronously */
    struct sesame_session *got;
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);
    assert_int_equal(sesame_session_cache_count(st2), 1);
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(sesame_session_load(st2, cookie, "ville-a", on_load, &res, &got, &op),
                     SESAME_OK);
    assert_string_equal(got->account, "acc");
    sesame_session_free(got);
    /* the cache still checks the tenant */
    assert_int_equal(sesame_session_load(st2, cookie, "ville-b", on_load, &res, &got, &op),
                     SESAME_DECLINED);

    /* logout on instance 1 evicts instance 2's copy through pub/sub */
    assert_int_equal(do_destroy(e, st1, cookie), SESAME_OK);
    struct two t = {st2, 0};
    assert_true(run_until(e, pred_cache_count, &t, GUARD_MS));
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_DECLINED);

    /* revocation of an account likewise */
    assert_int_equal(do_create(e, st1, s, NULL, cookie), SESAME_OK);
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);
    assert_int_equal(sesame_session_cache_count(st2), 1);
    size_t n;
    assert_int_equal(do_revoke(e, st1, "ville-a", "acc", &n), SESAME_OK);
    assert_true(n >= 1);
    assert_true(run_until(e, pred_cache_count, &t, GUARD_MS));
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_DECLINED);

    /* while the subscription is down the cache is not used; it is flushed
     * when the subscription is made again */
    assert_int_equal(do_create(e, st1, s, NULL, cookie), SESAME_OK);
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);
    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, r2, GUARD_MS));
    memset(&res, 0, sizeof(res));
    assert_int_equal(sesame_session_load(st2, cookie, "ville-a", on_load, &res, &got, &op),
                     SESAME_AGAIN);
    assert_int_equal(finish(e, SESAME_AGAIN, &res), SESAME_ERROR);
    server_start(&e->srv);
    assert_true(run_until(e, pred_subscribed, r2, GUARD_MS));
    assert_int_equal(sesame_session_cache_count(st2), 0);
    assert_int_equal(do_load(e, st2, cookie, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);

    sesame_session_free(s);
    sesame_session_store_free(st1);
    sesame_session_store_free(st2);
    sesame_redis_free(r2);
    env_free(e);
}

static void
test_session_pending_login(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    char stt[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(sesame_util_random_token(stt, sizeof(stt), 32), SESAME_OK);
    json_t *blob = json_pack("{s:s, s:s, s:s}", "nonce", "n-0123456789abcdefghijklmnop",
                             "return_to", "/demarches/etat-civil", "binding", "b1");
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(finish(e, sesame_session_login_put(st, stt, blob, 60000, on_done, &res, &op),
                            &res),
                     SESAME_OK);
    /* stored encrypted, with a TTL, under a hash of the state */
    unsigned char h[32];
    SHA256((const unsigned char *)stt, strlen(stt), h);
    char hex[65], key[128];
    sesame_util_hex(hex, h, 32);
    snprintf(key, sizeof(key), "sesame:l:%s", hex);
    redisReply *raw = raw_get(e, key);
    assert_int_equal(raw->type, REDIS_REPLY_STRING);
    assert_null(memmem(raw->str, raw->len, "etat-civil", 10));
    freeReplyObject(raw);
    long long pttl = raw_int(e, "PTTL %s", key, NULL);
    assert_true(pttl > 0 && pttl <= 60000);
    /* the same state cannot be stored twice */
    memset(&res, 0, sizeof(res));
    assert_int_equal(finish(e, sesame_session_login_put(st, stt, blob, 60000, on_done, &res, &op),
                            &res),
                     SESAME_ERROR);
    /* single use */
    memset(&res, 0, sizeof(res));
    assert_int_equal(finish(e, sesame_session_login_take(st, stt, on_take, &res, &op), &res),
                     SESAME_OK);
    assert_true(json_equal(res.blob, blob));
    json_decref(res.blob);
    memset(&res, 0, sizeof(res));
    assert_int_equal(finish(e, sesame_session_login_take(st, stt, on_take, &res, &op), &res),
                     SESAME_DECLINED);
    assert_null(res.blob);
    /* invalid states are refused at once */
    assert_int_equal(sesame_session_login_take(st, "short", on_take, &res, &op), SESAME_ERROR);
    assert_int_equal(sesame_session_login_put(st, "bad state with spaces and more", blob, 1000,
                                              on_done, &res, &op),
                     SESAME_ERROR);
    /* cancelled: no callback */
    memset(&res, 0, sizeof(res));
    assert_int_equal(sesame_session_login_take(st, stt, on_take, &res, &op), SESAME_AGAIN);
    sesame_session_cancel(op);
    const char *ping[] = {"PING"};
    cmd(e, 1, ping);
    assert_int_equal(res.calls, 0);
    json_decref(blob);
    sesame_session_store_free(st);
    env_free(e);
}

static void
test_session_redis_down_and_back(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.redis.command_timeout_ms = 60000; /* anything waiting would hang */
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1], c2[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);

    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, e->r, GUARD_MS));
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_ERROR);
    assert_int_equal(do_create(e, st, s, cookie, c2), SESAME_ERROR);
    assert_string_equal(c2, "");
    assert_int_equal(do_destroy(e, st, cookie), SESAME_ERROR);
    size_t n;
    assert_int_equal(do_revoke(e, st, "ville-a", "acc", &n), SESAME_ERROR);

    server_start(&e->srv);
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_OK);
    assert_string_equal(got->account, "acc");
    sesame_session_free(got);
    /* an operation outstanding when the store is freed never calls back */
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    assert_int_equal(sesame_session_load(st, cookie, "ville-a", on_load, &res, &got, &op),
                     SESAME_AGAIN);
    sesame_session_store_free(st);
    const char *ping[] = {"PING"};
    cmd(e, 1, ping);
    assert_int_equal(res.calls, 0);
    sesame_session_free(s);
    env_free(e);
}

static void
test_session_timeout_path(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    e->conf.redis.command_timeout_ms = 300;
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1], c2[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);
    kill(e->srv.pid, SIGSTOP);
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_ERROR);
    assert_int_equal(do_create(e, st, s, NULL, c2), SESAME_ERROR);
    kill(e->srv.pid, SIGCONT);
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
    assert_int_equal(do_load(e, st, cookie, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);
    sesame_session_free(s);
    sesame_session_store_free(st);
    env_free(e);
}

static void
test_redis_unix_socket(void **state)
{
    (void)state;
    char extra[512];
    snprintf(extra, sizeof(extra), "unixsocket %s/u.sock\nunixsocketperm 700\n", tmpdir);
    struct env *e = env_new(extra);
    char path[512];
    snprintf(path, sizeof(path), "%s/u.sock", tmpdir);
    e->conf.redis.host = NULL;
    e->conf.redis.unix_socket = path;
    env_connect(e);
    const char *argv[] = {"SET", "via", "unix"};
    assert_string_equal(cmd(e, 3, argv).str, "OK");
    redisReply *r = NULL;
    redisContext *c = sync_conn(e->srv.port, NULL, 0);
    r = redisCommand(c, "GET via");
    assert_string_equal(r->str, "unix");
    freeReplyObject(r);
    redisFree(c);
    env_free(e);
}

static void
test_redis_host_name(void **state)
{
    (void)state;
    /* resolved without blocking (evdns; "localhost" comes from /etc/hosts) */
    struct env *e = env_new(NULL);
    e->conf.redis.host = (char *)"localhost";
    env_connect(e);
    const char *argv[] = {"PING"};
    assert_string_equal(cmd(e, 1, argv).str, "PONG");
    env_free(e);
}

static void
test_redis_readonly_replica(void **state)
{
    (void)state;
    /* a client pointed at a replica: writes fail as "unavailable" (NULL), the
     * connection is replaced, reads still work */
    struct env *e = env_new(NULL);
    struct server replica;
    char extra[128];
    snprintf(extra, sizeof(extra), "replicaof 127.0.0.1 %d\n", e->srv.port);
    server_init(&replica, false, extra);
    server_start(&replica);
    e->conf.redis.port = replica.port;
    env_connect(e);
    const char *set[] = {"SET", "k", "v"};
    struct cmd_result res = cmd(e, 3, set);
    assert_true(res.null);
    assert_int_equal(res.calls, 1);
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
    const char *get[] = {"GET", "nothing"};
    res = cmd(e, 2, get);
    assert_false(res.null);
    assert_int_equal(res.type, REDIS_REPLY_NIL);
    server_kill(&replica);
    env_free(e);
}

/* A scripted sentinel: answers get-master-addr-by-name with 127.0.0.1 and
 * the port in `answer`, confirms SUBSCRIBE, and can push +switch-master. */
struct fake_sentinel {
    int lfd;
    int port;
    atomic_int answer;
    atomic_int push_to; /* non-zero: announce this port as the new master */
    atomic_int queries;
    int wake[2];
    pthread_t thread;
};

static void
write_all_fd(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

static void *
fake_sentinel_main(void *arg)
{
    struct fake_sentinel *fs = arg;
    struct pollfd p[10];
    int subscribers[8];
    int nsub = 0;
    int nclients = 0;
    p[0].fd = fs->lfd;
    p[0].events = POLLIN;
    p[1].fd = fs->wake[0];
    p[1].events = POLLIN;
    for (;;) {
        if (poll(p, (nfds_t)(2 + nclients), 50) < 0)
            continue;
        if (p[1].revents)
            break;
        int push = atomic_exchange(&fs->push_to, 0);
        if (push) {
            char msg[128], out[256];
            int n = snprintf(msg, sizeof(msg), "mymaster 127.0.0.1 1 127.0.0.1 %d", push);
            int m = snprintf(out, sizeof(out),
                             "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$%d\r\n%s\r\n", n,
                             msg);
            for (int i = 0; i < nsub; i++)
                write_all_fd(subscribers[i], out, (size_t)m);
        }
        if ((p[0].revents & POLLIN) && nclients < 8) {
            int c = accept(fs->lfd, NULL, NULL);
            if (c >= 0) {
                p[2 + nclients].fd = c;
                p[2 + nclients].events = POLLIN;
                p[2 + nclients].revents = 0;
                nclients++;
            }
        }
        for (int i = 0; i < nclients; i++) {
            if (!(p[2 + i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[1024];
            ssize_t n = read(p[2 + i].fd, buf, sizeof(buf) - 1);
            if (n <= 0) {
                for (int k = 0; k < nsub; k++)
                    if (subscribers[k] == p[2 + i].fd)
                        subscribers[k] = subscribers[--nsub];
                close(p[2 + i].fd);
                p[2 + i] = p[2 + nclients - 1];
                nclients--;
                i--;
                continue;
            }
            buf[n] = '\0';
            if (strstr(buf, "get-master-addr-by-name")) {
                atomic_fetch_add(&fs->queries, 1);
                char port[16], out[128];
                int pl = snprintf(port, sizeof(port), "%d", atomic_load(&fs->answer));
                int m = snprintf(out, sizeof(out), "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n", pl,
                                 port);
                write_all_fd(p[2 + i].fd, out, (size_t)m);
            } else if (strstr(buf, "SUBSCRIBE")) {
                static const char ok[] = "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";
                write_all_fd(p[2 + i].fd, ok, sizeof(ok) - 1);
                if (nsub < 8)
                    subscribers[nsub++] = p[2 + i].fd;
            }
        }
    }
    for (int i = 0; i < nclients; i++)
        close(p[2 + i].fd);
    return NULL;
}

static void
fake_sentinel_start(struct fake_sentinel *fs, int answer)
{
    memset(fs, 0, sizeof(*fs));
    fs->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fs->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fs->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fs->lfd, 16), 0);
    socklen_t len = sizeof(a);
    getsockname(fs->lfd, (struct sockaddr *)&a, &len);
    fs->port = ntohs(a.sin_port);
    atomic_store(&fs->answer, answer);
    assert_int_equal(pipe(fs->wake), 0);
    assert_int_equal(pthread_create(&fs->thread, NULL, fake_sentinel_main, fs), 0);
}

static void
fake_sentinel_stop(struct fake_sentinel *fs)
{
    write_all_fd(fs->wake[1], "x", 1);
    pthread_join(fs->thread, NULL);
    close(fs->wake[0]);
    close(fs->wake[1]);
    close(fs->lfd);
}

static bool
pred_queries(void *arg)
{
    return atomic_load(&((struct fake_sentinel *)arg)->queries) >= 3;
}

static void
test_sentinel_role_verified(void **state)
{
    (void)state;
    struct env *e = env_new(NULL); /* the real master */
    struct server replica, other;
    char extra[128];
    snprintf(extra, sizeof(extra), "replicaof 127.0.0.1 %d\n", e->srv.port);
    server_init(&replica, false, extra);
    server_start(&replica);
    server_init(&other, false, NULL); /* another master, for +switch-master */
    server_start(&other);
    struct fake_sentinel fs;
    fake_sentinel_start(&fs, replica.port); /* a lying sentinel */
    char *sentinels[] = {sesame_asprintf("127.0.0.1:%d", fs.port)};
    e->conf.redis.host = NULL;
    e->conf.redis.sentinels = sentinels;
    e->conf.redis.nsentinels = 1;
    e->conf.redis.master_name = (char *)"mymaster";
    e->r = sesame_redis_new(e->base, &e->conf.redis);
    assert_non_null(e->r);
    /* asked again and again, never accepted: ROLE says "slave" */
    assert_true(run_until(e, pred_queries, &fs, GUARD_MS));
    assert_false(sesame_redis_is_up(e->r));
    const char *set[] = {"SET", "where", "master"};
    struct cmd_result res;
    memset(&res, 0, sizeof(res));
    sesame_redis_command(e->r, on_cmd, &res, 3, set, NULL);
    assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
    assert_true(res.null);
    /* the sentinel now tells the truth */
    atomic_store(&fs.answer, e->srv.port);
    assert_true(run_until(e, pred_up, e->r, GUARD_MS));
    assert_string_equal(cmd(e, 3, set).str, "OK");
    redisContext *c = sync_conn(e->srv.port, NULL, 0);
    redisReply *r = redisCommand(c, "GET where");
    assert_string_equal(r->str, "master");
    freeReplyObject(r);
    redisFree(c);
    /* +switch-master: the client moves at once to the announced master */
    atomic_store(&fs.answer, other.port);
    atomic_store(&fs.push_to, other.port);
    const char *set2[] = {"SET", "where", "other"};
    uint64_t end = sesame_util_mono_ms() + GUARD_MS;
    for (;;) {
        run_for(e, 50);
        c = sync_conn(other.port, NULL, 0);
        r = redisCommand(c, "EXISTS where");
        long long exists = r->integer;
        freeReplyObject(r);
        redisFree(c);
        if (exists)
            break;
        assert_true(sesame_util_mono_ms() < end);
        if (sesame_redis_is_up(e->r)) {
            memset(&res, 0, sizeof(res));
            sesame_redis_command(e->r, on_cmd, &res, 3, set2, NULL);
            assert_true(run_until(e, pred_flag, &res.done, GUARD_MS));
        }
    }
    sesame_redis_free(e->r);
    e->r = NULL;
    fake_sentinel_stop(&fs);
    free(sentinels[0]);
    server_kill(&replica);
    server_kill(&other);
    env_free(e);
}

/* ---- Sentinel ---- */

static bool
sentinel_ready(int port, size_t want_sentinels)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return false;
    }
    bool ok = false;
    redisReply *r = redisCommand(c, "SENTINEL sentinels mymaster");
    redisReply *q = redisCommand(c, "SENTINEL replicas mymaster");
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= want_sentinels && q &&
        q->type == REDIS_REPLY_ARRAY && q->elements >= 1)
        ok = true;
    if (r)
        freeReplyObject(r);
    if (q)
        freeReplyObject(q);
    redisFree(c);
    return ok;
}

static bool
replica_synced(int port)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return false;
    }
    redisReply *r = redisCommand(c, "ROLE");
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
              r->element[3]->type == REDIS_REPLY_STRING &&
              strcmp(r->element[3]->str, "connected") == 0;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

static bool
is_master(int port)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return false;
    }
    redisReply *r = redisCommand(c, "ROLE");
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
              strcmp(r->element[0]->str, "master") == 0;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

struct failover {
    struct env *e;
    struct sesame_session_store *st;
    const char *cookie;
    bool ok;
};

static bool
pred_load_works(void *arg)
{
    struct failover *f = arg;
    struct sesame_session *got = NULL;
    struct sres res;
    memset(&res, 0, sizeof(res));
    struct sesame_session_op *op;
    int rc = sesame_session_load(f->st, f->cookie, "ville-a", on_load, &res, &got, &op);
    if (rc == SESAME_AGAIN) {
        while (!res.done)
            event_base_loop(f->e->base, EVLOOP_ONCE);
        rc = res.status;
        got = res.s;
    }
    if (rc == SESAME_OK) {
        assert_string_equal(got->account, "acc");
        sesame_session_free(got);
        return true;
    }
    assert_int_equal(rc, SESAME_ERROR); /* unavailable, never "no session" */
    msleep(100);
    return false;
}

static void
test_sentinel_failover(void **state)
{
    (void)state;
    struct env *e = env_new(NULL); /* the master */
    struct server replica, sentinels[3];
    char extra[256];
    snprintf(extra, sizeof(extra), "replicaof 127.0.0.1 %d\n", e->srv.port);
    server_init(&replica, false, extra);
    server_start(&replica);
    snprintf(extra, sizeof(extra),
             "sentinel monitor mymaster 127.0.0.1 %d 2\n"
             "sentinel down-after-milliseconds mymaster 1000\n"
             "sentinel failover-timeout mymaster 5000\n"
             "sentinel parallel-syncs mymaster 1\n",
             e->srv.port);
    for (int i = 0; i < 3; i++) {
        server_init(&sentinels[i], true, extra);
        server_start(&sentinels[i]);
    }
    uint64_t end = sesame_util_mono_ms() + FAILOVER_GUARD_MS;
    while (!(replica_synced(replica.port) && sentinel_ready(sentinels[0].port, 2) &&
             sentinel_ready(sentinels[1].port, 2) && sentinel_ready(sentinels[2].port, 2))) {
        if (sesame_util_mono_ms() > end)
            fail_msg("the sentinels did not discover each other");
        msleep(200);
    }

    /* the client knows only the sentinels; the first one listed is dead */
    e->conf.redis.host = NULL;
    e->conf.redis.port = 0;
    e->sentinels[0] = sesame_asprintf("127.0.0.1:%d", free_port());
    for (int i = 1; i < 3; i++)
        e->sentinels[i] = sesame_asprintf("127.0.0.1:%d", sentinels[i].port);
    e->conf.redis.sentinels = e->sentinels;
    e->conf.redis.nsentinels = 3;
    e->conf.redis.master_name = (char *)"mymaster";
    e->conf.session.cache_ttl_ms = 5000;
    env_connect(e);
    struct sesame_session_store *st = sesame_session_store_new(e->r, &e->conf);
    struct sesame_session *s = make_record("ville-a", "acc");
    char cookie[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(do_create(e, st, s, NULL, cookie), SESAME_OK);
    redisContext *c = sync_conn(e->srv.port, NULL, 0);
    redisReply *w = redisCommand(c, "WAIT 1 5000");
    assert_int_equal(w->integer, 1);
    freeReplyObject(w);
    redisFree(c);

    /* kill the master: the replica is promoted, the client follows */
    server_kill(&e->srv);
    assert_true(run_until(e, pred_down, e->r, GUARD_MS));
    struct failover f = {e, st, cookie, false};
    assert_true(run_until(e, pred_load_works, &f, FAILOVER_GUARD_MS));
    assert_true(is_master(replica.port));
    /* writes work on the new master */
    char c2[SESAME_SESSION_ID_LEN + 1];
    assert_int_equal(do_create(e, st, s, cookie, c2), SESAME_OK);
    struct sesame_session *got;
    assert_int_equal(do_load(e, st, c2, "ville-a", &got), SESAME_OK);
    sesame_session_free(got);

    sesame_session_free(s);
    sesame_session_store_free(st);
    server_kill(&replica);
    for (int i = 0; i < 3; i++)
        server_kill(&sentinels[i]);
    env_free(e);
}

static void
test_sentinel_misconfigured(void **state)
{
    (void)state;
    struct sesame_conf c;
    conf_defaults(&c, 0);
    c.redis.host = NULL;
    char *bad[] = {(char *)"no-port"};
    c.redis.sentinels = bad;
    c.redis.nsentinels = 1;
    c.redis.master_name = (char *)"m";
    struct event_base *base = event_base_new();
    assert_null(sesame_redis_new(base, &c.redis));
    c.redis.sentinels = NULL;
    c.redis.nsentinels = 0;
    assert_null(sesame_redis_new(base, &c.redis));
    event_base_free(base);
}

static int
teardown(void **state)
{
    (void)state;
    kill_all();
    return 0;
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *dbg = getenv("SESAME_TEST_DEBUG");
    sesame_log_open("stderr", NULL, dbg && *dbg ? SESAME_LOG_DEBUG : SESAME_LOG_WARN, NULL);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sesame-session-live-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    atexit(cleanup_at_exit);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_redis_auth_select_pipeline, teardown),
        cmocka_unit_test_teardown(test_redis_wrong_password, teardown),
        cmocka_unit_test_teardown(test_redis_down_fails_fast, teardown),
        cmocka_unit_test_teardown(test_redis_restart, teardown),
        cmocka_unit_test_teardown(test_redis_timeout, teardown),
        cmocka_unit_test_teardown(test_redis_cancel, teardown),
        cmocka_unit_test_teardown(test_redis_transaction, teardown),
        cmocka_unit_test_teardown(test_redis_pubsub, teardown),
        cmocka_unit_test_teardown(test_redis_unix_socket, teardown),
        cmocka_unit_test_teardown(test_redis_host_name, teardown),
        cmocka_unit_test_teardown(test_redis_readonly_replica, teardown),
        cmocka_unit_test_teardown(test_sentinel_role_verified, teardown),
        cmocka_unit_test_teardown(test_session_create_load, teardown),
        cmocka_unit_test_teardown(test_session_touch_and_inactivity, teardown),
        cmocka_unit_test_teardown(test_session_absolute_expiry, teardown),
        cmocka_unit_test_teardown(test_session_real_ttl, teardown),
        cmocka_unit_test_teardown(test_session_destroy_and_relogin, teardown),
        cmocka_unit_test_teardown(test_session_revoke_account, teardown),
        cmocka_unit_test_teardown(test_session_tree, teardown),
        cmocka_unit_test_teardown(test_session_cache_revocation, teardown),
        cmocka_unit_test_teardown(test_session_pending_login, teardown),
        cmocka_unit_test_teardown(test_session_redis_down_and_back, teardown),
        cmocka_unit_test_teardown(test_session_timeout_path, teardown),
        cmocka_unit_test_teardown(test_sentinel_misconfigured, teardown),
        cmocka_unit_test_teardown(test_sentinel_failover, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
