#include "session/redis.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/dns.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HEALTH_INTERVAL_MS 1000
#define DEFAULT_TIMEOUT_MS 1000

enum link_role {
    ROLE_DATA,         /* the main connection: commands */
    ROLE_PUBSUB,       /* subscriptions of the users of this client */
    ROLE_QUERY,        /* one SENTINEL get-master-addr-by-name */
    ROLE_SENTINEL_SUB, /* subscription to +switch-master on a sentinel */
};

enum link_state {
    LINK_RESOLVING,
    LINK_CONNECTING, /* TCP connect and handshake */
    LINK_READY,
    LINK_CLOSING,    /* dead: waiting for the reaper to free it */
};

enum hs_step { HS_AUTH, HS_SELECT, HS_ROLE, HS_PING };

struct link;

/* Owned by an evdns request; outlives the link if the link closes first. */
struct dns_ctx {
    struct link *link; /* NULL once the link is gone */
    int port;
};

struct link {
    struct sesame_redis *r;
    enum link_role role;
    enum link_state state;
    redisAsyncContext *ac;   /* NULL once hiredis freed it */
    struct dns_ctx *dns;
    struct event *timer;     /* resolution + connect + handshake deadline */
    char *host;              /* NULL: conf->unix_socket */
    int port;
    char *name;              /* "host:port" for messages */
    enum hs_step steps[4];
    int nsteps, hs_done;
    int subs_pending;        /* subscribe confirmations still expected */
    bool query_ok;
    struct link *reap_next;
};

enum op_where { OP_NONE, OP_WAITING, OP_INFLIGHT, OP_DEFERRED };

struct sesame_redis_op {
    struct sesame_redis *r;
    sesame_redis_cb cb;      /* NULL: internal command, result ignored */
    void *arg;
    uint64_t deadline;       /* monotonic ms */
    uint64_t start_us;       /* issued at, for the latency histogram */
    uint64_t gen;            /* deferred batch */
    char *cmd;               /* formatted command until written */
    size_t cmdlen;
    struct sesame_redis_op *prev, *next;
    enum op_where where;
    bool cancelled;
    bool done;               /* the callback has run or is running */
    bool in_hiredis;         /* hiredis holds a pointer to it */
};

struct oplist {
    struct sesame_redis_op *head, *tail;
};

struct sub {
    char *channel;
    size_t len;
    sesame_redis_message_cb on_message;
    sesame_redis_subscribed_cb on_subscribed;
    void *arg;
    bool active;
    struct sub *next;
};

struct sesame_redis {
    struct event_base *base;
    const struct sesame_conf_redis *conf;
    uint64_t command_timeout;
    uint64_t connect_timeout;
    struct evdns_base *dns;
    bool freeing;

    /* main connection */
    struct link *data;
    struct event *data_retry;
    uint64_t data_backoff;
    char *master_host;       /* current address; NULL with a unix socket */
    int master_port;

    /* sentinels */
    char **s_host;
    int *s_port;
    size_t ns;
    size_t s_next;           /* next sentinel to ask */
    size_t s_tried;          /* failures in the current round */
    bool round_active;       /* a round of sentinel queries is under way */
    struct link *query;
    struct link *ssub;
    struct event *ssub_retry;
    uint64_t ssub_backoff;
    size_t ssub_next;

    /* pub/sub */
    struct link *psub;
    struct event *psub_retry;
    uint64_t psub_backoff;
    struct sub *subs;

    /* commands */
    struct oplist waiting, inflight, deferred;
    size_t nwaiting;
    uint64_t defer_gen;
    struct event *op_timer;
    struct event *deferred_ev;
    struct event *health;
    uint64_t last_activity;
    bool was_up;             /* the main connection has been up once */
    sesame_redis_state_cb on_state;
    void *state_arg;

    struct link *reap;
    struct event *reap_ev;
};

static void link_start(struct link *l);
static void link_close(struct link *l, const char *why);
static void data_start(struct sesame_redis *r);
static void psub_open(struct sesame_redis *r);

/* ---- small helpers ---- */

static const char *
role_name(enum link_role role)
{
    switch (role) {
    case ROLE_DATA:
        return "redis";
    case ROLE_PUBSUB:
        return "redis pub/sub";
    case ROLE_QUERY:
        return "redis sentinel";
    case ROLE_SENTINEL_SUB:
        return "redis sentinel subscription";
    }
    return "redis";
}

static void
timer_after(struct event *ev, uint64_t ms)
{
    struct timeval tv = sesame_util_timeval_ms(ms);
    evtimer_add(ev, &tv);
}

static uint64_t
next_backoff(uint64_t *b)
{
    uint64_t cur = *b;
    *b = cur * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cur * 2;
    return cur;
}

static bool
is_numeric_host(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static bool
reply_is_fatal(const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ERROR || reply->str == NULL)
        return false;
    static const char *fatal[] = {"READONLY", "LOADING", "MASTERDOWN", "NOAUTH"};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(fatal); i++) {
        size_t n = strlen(fatal[i]);
        if ((size_t)reply->len >= n && strncmp(reply->str, fatal[i], n) == 0)
            return true;
    }
    return false;
}

static bool
reply_str_eq(const redisReply *r, const char *s)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           (size_t)r->len == strlen(s) && strncasecmp(r->str, s, (size_t)r->len) == 0;
}

int
sesame_redis_parse_hostport(const char *s, char **host, int *port)
{
    if (s == NULL)
        return SESAME_ERROR;
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return SESAME_ERROR;
        h = s + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || strchr(s, ':') != colon)
            return SESAME_ERROR;
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen > 255)
        return SESAME_ERROR;
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5)
        return SESAME_ERROR;
    long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return SESAME_ERROR;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return SESAME_ERROR;
    *host = sesame_strndup(h, hlen);
    *port = (int)v;
    return SESAME_OK;
}

/* ---- operation lists ---- */

static struct oplist *
list_of(struct sesame_redis *r, enum op_where w)
{
    switch (w) {
    case OP_WAITING:
        return &r->waiting;
    case OP_INFLIGHT:
        return &r->inflight;
    case OP_DEFERRED:
        return &r->deferred;
    case OP_NONE:
        break;
    }
    return NULL;
}

static void
op_append(struct sesame_redis_op *op, enum op_where w)
{
    struct oplist *l = list_of(op->r, w);
    op->where = w;
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    if (w == OP_WAITING)
        op->r->nwaiting++;
}

static void
op_unlink(struct sesame_redis_op *op)
{
    struct oplist *l = list_of(op->r, op->where);
    if (l == NULL)
        return;
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    if (op->where == OP_WAITING)
        op->r->nwaiting--;
    op->prev = op->next = NULL;
    op->where = OP_NONE;
}

static void
op_free(struct sesame_redis_op *op)
{
    if (op->cmd)
        redisFreeCommand(op->cmd);
    free(op);
}

/* Frees the op once nobody refers to it: delivered or cancelled, in no list,
 * and not held by hiredis. */
static void
op_maybe_free(struct sesame_redis_op *op)
{
    if (op->where == OP_NONE && !op->in_hiredis)
        op_free(op);
}

/* Queues a NULL result for the next loop iteration. */
static void
op_defer(struct sesame_redis_op *op)
{
    struct sesame_redis *r = op->r;
    op_unlink(op);
    if (op->cmd) {
        redisFreeCommand(op->cmd);
        op->cmd = NULL;
    }
    op->gen = r->defer_gen;
    op_append(op, OP_DEFERRED);
    event_active(r->deferred_ev, EV_TIMEOUT, 0);
}

static void
defer_all(struct oplist *l)
{
    while (l->head)
        op_defer(l->head);
}

static void
on_deferred(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sesame_redis *r = arg;
    uint64_t gen = ++r->defer_gen;
    struct sesame_redis_op *op;
    while ((op = r->deferred.head) != NULL && op->gen != gen) {
        op_unlink(op);
        op->done = true;
        if (!op->cancelled && op->cb != NULL) {
            sesame_metrics_inc(SESAME_M_REDIS_ERRORS);
            op->cb(NULL, op->arg);
        }
        op_maybe_free(op);
    }
    if (r->deferred.head)
        event_active(r->deferred_ev, EV_TIMEOUT, 0);
}

static bool
connecting(const struct sesame_redis *r)
{
    return r->data != NULL || r->round_active;
}

static void
arm_op_timer(struct sesame_redis *r)
{
    if (evtimer_pending(r->op_timer, NULL))
        return;
    uint64_t d = UINT64_MAX;
    if (r->waiting.head)
        d = r->waiting.head->deadline;
    if (r->inflight.head && r->inflight.head->deadline < d)
        d = r->inflight.head->deadline;
    if (d == UINT64_MAX)
        return;
    uint64_t now = sesame_util_mono_ms();
    timer_after(r->op_timer, d > now ? d - now : 0);
}

static void
on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sesame_redis *r = arg;
    uint64_t now = sesame_util_mono_ms();
    struct sesame_redis_op *op;
    while ((op = r->waiting.head) != NULL && op->deadline <= now)
        op_defer(op);
    if ((op = r->inflight.head) != NULL && op->deadline <= now && r->data != NULL)
        link_close(r->data, "command timed out");
    arm_op_timer(r);
}

static void on_op_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Writes op on the ready main connection. */
static void
op_send(struct sesame_redis_op *op)
{
    struct sesame_redis *r = op->r;
    struct link *l = r->data;
    if (redisAsyncFormattedCommand(l->ac, on_op_reply, op, op->cmd, op->cmdlen) != REDIS_OK) {
        link_close(l, "cannot write a command");
        op_defer(op);
        return;
    }
    redisFreeCommand(op->cmd);
    op->cmd = NULL;
    op->in_hiredis = true;
    op_append(op, OP_INFLIGHT);
}

static void
op_issue(struct sesame_redis_op *op)
{
    struct sesame_redis *r = op->r;
    if (op->cmd == NULL)
        op_defer(op);
    else if (r->data != NULL && r->data->state == LINK_READY)
        op_send(op);
    else if (connecting(r) && r->nwaiting < SESAME_REDIS_MAX_WAITING)
        op_append(op, OP_WAITING);
    else
        op_defer(op);
    arm_op_timer(r);
}

static struct sesame_redis_op *
op_new(struct sesame_redis *r, sesame_redis_cb cb, void *arg, uint64_t deadline, int argc,
       const char **argv, const size_t *argvlen)
{
    struct sesame_redis_op *op = sesame_calloc(1, sizeof(*op));
    op->r = r;
    op->cb = cb;
    op->arg = arg;
    op->deadline = deadline;
    op->start_us = sesame_metrics_now_us();
    if (argc > 0 && argv != NULL) {
        char *cmd = NULL;
        int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
        if (n > 0) {
            op->cmd = cmd;
            op->cmdlen = (size_t)n;
        } else if (cmd) {
            redisFreeCommand(cmd);
        }
    }
    return op;
}

static void
on_op_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    struct sesame_redis_op *op = privdata;
    struct sesame_redis *r = op->r;
    redisReply *reply = reply_;
    op->in_hiredis = false;
    if (r->freeing) {
        op_unlink(op);
        op_free(op);
        return;
    }
    if (op->where != OP_INFLIGHT) {
        /* Its connection was dropped already: the result was or will be
         * NULL, and this late reply is ignored. */
        op_maybe_free(op);
        return;
    }
    if (reply == NULL || reply_is_fatal(reply)) {
        if (reply != NULL)
            sesame_log_warn("redis %s: server unusable (%.*s)", r->data ? r->data->name : "",
                            reply->len > 60 ? 60 : (int)reply->len, reply->str);
        if (r->data != NULL)
            link_close(r->data, reply ? "server not usable" : "connection lost");
        else
            op_defer(op);
        return;
    }
    r->last_activity = sesame_util_mono_ms();
    op_unlink(op);
    op->done = true;
    if (op->cb != NULL)
        sesame_metrics_observe_us(SESAME_M_REDIS_DURATION, sesame_metrics_now_us() - op->start_us);
    if (!op->cancelled && op->cb != NULL)
        op->cb(reply, op->arg);
    op_free(op);
}

/* ---- public command API ---- */

static uint64_t
deadline_now(const struct sesame_redis *r)
{
    return sesame_util_mono_ms() + r->command_timeout;
}

struct sesame_redis_op *
sesame_redis_command(struct sesame_redis *r, sesame_redis_cb cb, void *arg, int argc,
                     const char **argv, const size_t *argvlen)
{
    struct sesame_redis_op *op = op_new(r, cb, arg, deadline_now(r), argc, argv, argvlen);
    op_issue(op);
    return op;
}

struct sesame_redis_op *
sesame_redis_transaction(struct sesame_redis *r, sesame_redis_cb cb, void *arg,
                         const struct sesame_redis_cmd *cmds, size_t ncmds)
{
    uint64_t deadline = deadline_now(r);
    /* Build every command first: if one cannot be formatted, nothing is
     * sent. */
    struct sesame_redis_op **ops = sesame_calloc(ncmds + 2, sizeof(*ops));
    static const char *multi[] = {"MULTI"};
    static const char *exec[] = {"EXEC"};
    bool ok = ncmds > 0;
    ops[0] = op_new(r, NULL, NULL, deadline, 1, multi, NULL);
    for (size_t i = 0; i < ncmds; i++) {
        ops[i + 1] = op_new(r, NULL, NULL, deadline, cmds[i].argc, cmds[i].argv, cmds[i].argvlen);
        ok = ok && ops[i + 1]->cmd != NULL;
    }
    struct sesame_redis_op *result = op_new(r, cb, arg, deadline, 1, exec, NULL);
    ops[ncmds + 1] = result;
    ok = ok && ops[0]->cmd != NULL && result->cmd != NULL;
    if (!ok) {
        for (size_t i = 0; i < ncmds + 1; i++)
            op_free(ops[i]);
        free(ops);
        redisFreeCommand(result->cmd);
        result->cmd = NULL;
        op_issue(result); /* fails on the next iteration */
        return result;
    }
    for (size_t i = 0; i < ncmds + 2; i++) {
        /* Once the connection is gone, the rest fails as a whole: op_issue
         * defers every op when nothing is ready or waiting. */
        op_issue(ops[i]);
    }
    free(ops);
    return result;
}

void
sesame_redis_cancel(struct sesame_redis_op *op)
{
    if (op == NULL || op->done)
        return;
    op->cancelled = true;
    if (op->where == OP_WAITING || op->where == OP_DEFERRED)
        op_unlink(op);
    op_maybe_free(op);
}

bool
sesame_redis_is_up(const struct sesame_redis *r)
{
    return r != NULL && r->data != NULL && r->data->state == LINK_READY;
}

void
sesame_redis_set_state_cb(struct sesame_redis *r, sesame_redis_state_cb cb, void *arg)
{
    r->on_state = cb;
    r->state_arg = arg;
}

/* ---- links ---- */

static void
on_link_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    link_close(arg, "connect timed out");
}

static struct link *
link_new(struct sesame_redis *r, enum link_role role, const char *host, int port)
{
    struct link *l = sesame_calloc(1, sizeof(*l));
    l->r = r;
    l->role = role;
    l->state = LINK_RESOLVING;
    l->timer = evtimer_new(r->base, on_link_timeout, l);
    if (host != NULL) {
        l->host = sesame_strdup(host);
        l->port = port;
        l->name = strchr(host, ':') ? sesame_asprintf("[%s]:%d", host, port)
                                    : sesame_asprintf("%s:%d", host, port);
    } else {
        l->name = sesame_strdup(r->conf->unix_socket);
    }
    return l;
}

static void
link_destroy(struct link *l)
{
    l->state = LINK_CLOSING; /* the callbacks run by redisAsyncFree do nothing */
    if (l->ac != NULL) {
        redisAsyncContext *ac = l->ac;
        redisAsyncFree(ac); /* runs the pending callbacks with NULL */
        l->ac = NULL;
    }
    if (l->dns != NULL)
        l->dns->link = NULL;
    event_free(l->timer);
    free(l->host);
    free(l->name);
    free(l);
}

static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sesame_redis *r = arg;
    struct link *l;
    while ((l = r->reap) != NULL) {
        r->reap = l->reap_next;
        link_destroy(l);
    }
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct link *l = ac->data;
    if (status == REDIS_OK)
        return;
    /* hiredis frees the context when this returns. */
    l->ac = NULL;
    if (l->state != LINK_CLOSING)
        link_close(l, ac->c.errstr[0] ? ac->c.errstr : "connect failed");
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct link *l = ac->data;
    l->ac = NULL;
    if (l->state != LINK_CLOSING)
        link_close(l, status == REDIS_OK ? "connection closed"
                                         : (ac->c.errstr[0] ? ac->c.errstr : "connection lost"));
}

static void
link_ready(struct link *l)
{
    struct sesame_redis *r = l->r;
    l->state = LINK_READY;
    evtimer_del(l->timer);
    switch (l->role) {
    case ROLE_DATA: {
        sesame_log_info("%s: connected to %s", role_name(l->role), l->name);
        if (r->was_up)
            sesame_metrics_inc(SESAME_M_REDIS_RECONNECTS);
        r->was_up = true;
        if (r->on_state)
            r->on_state(true, r->state_arg);
        r->data_backoff = BACKOFF_MIN_MS;
        r->last_activity = sesame_util_mono_ms();
        struct sesame_redis_op *op;
        while (r->data == l && l->state == LINK_READY && (op = r->waiting.head) != NULL) {
            op_unlink(op);
            op_send(op);
        }
        psub_open(r);
        break;
    }
    case ROLE_PUBSUB:
        r->psub_backoff = BACKOFF_MIN_MS;
        break;
    case ROLE_SENTINEL_SUB:
        r->ssub_backoff = BACKOFF_MIN_MS;
        break;
    case ROLE_QUERY:
        break;
    }
}

static void
on_handshake(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    struct link *l = privdata;
    redisReply *reply = reply_;
    if (l->state == LINK_CLOSING || l->r->freeing)
        return;
    if (reply == NULL) {
        link_close(l, "connection lost during the handshake");
        return;
    }
    static const char *step_names[] = {"AUTH", "SELECT", "ROLE", "PING"};
    enum hs_step step = l->steps[l->hs_done++];
    if (reply->type == REDIS_REPLY_ERROR) {
        sesame_log_warn("%s %s: %s refused: %.*s", role_name(l->role), l->name, step_names[step],
                        reply->len > 80 ? 80 : (int)reply->len, reply->str);
        link_close(l, "handshake refused");
        return;
    }
    if (step == HS_ROLE &&
        (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
         !reply_str_eq(reply->element[0], "master"))) {
        sesame_log_warn("%s %s: not a master", role_name(l->role), l->name);
        link_close(l, "not a master");
        return;
    }
    if (l->hs_done == l->nsteps && l->subs_pending == 0)
        link_ready(l);
}

static void
handshake_cmd(struct link *l, enum hs_step step, int argc, const char **argv, const size_t *lens)
{
    l->steps[l->nsteps++] = step;
    redisAsyncCommandArgv(l->ac, on_handshake, l, argc, argv, lens);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void on_query_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void
link_subscribe(struct link *l, const char *channel, size_t len)
{
    const char *argv[] = {"SUBSCRIBE", channel};
    size_t lens[] = {9, len};
    l->subs_pending++;
    redisAsyncCommandArgv(l->ac, on_sub_reply, l, 2, argv, lens);
}

/* Sends what the role needs before the link is usable. */
static void
link_handshake(struct link *l)
{
    struct sesame_redis *r = l->r;
    const struct sesame_conf_redis *c = r->conf;
    bool to_redis = l->role == ROLE_DATA || l->role == ROLE_PUBSUB;
    if (to_redis && c->password != NULL && c->password[0] != '\0') {
        const char *argv[] = {"AUTH", c->password};
        size_t lens[] = {4, strlen(c->password)};
        handshake_cmd(l, HS_AUTH, 2, argv, lens);
    }
    switch (l->role) {
    case ROLE_DATA: {
        if (c->database != 0) {
            char db[16];
            snprintf(db, sizeof(db), "%d", c->database);
            const char *argv[] = {"SELECT", db};
            size_t lens[] = {6, strlen(db)};
            handshake_cmd(l, HS_SELECT, 2, argv, lens);
        }
        if (r->ns > 0) {
            const char *argv[] = {"ROLE"};
            handshake_cmd(l, HS_ROLE, 1, argv, NULL);
        }
        const char *argv[] = {"PING"};
        handshake_cmd(l, HS_PING, 1, argv, NULL);
        break;
    }
    case ROLE_PUBSUB:
        for (struct sub *s = r->subs; s; s = s->next)
            link_subscribe(l, s->channel, s->len);
        break;
    case ROLE_QUERY: {
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", c->master_name};
        redisAsyncCommandArgv(l->ac, on_query_reply, l, 3, argv, NULL);
        break;
    }
    case ROLE_SENTINEL_SUB:
        link_subscribe(l, "+switch-master", strlen("+switch-master"));
        break;
    }
}

static void
link_attach(struct link *l, redisAsyncContext *ac)
{
    if (ac == NULL) {
        link_close(l, "cannot create a connection");
        return;
    }
    if (ac->err) {
        sesame_log_warn("%s %s: %s", role_name(l->role), l->name, ac->c.errstr);
        redisAsyncFree(ac);
        link_close(l, "connect failed");
        return;
    }
    ac->data = l;
    l->ac = ac;
    if (redisLibeventAttach(ac, l->r->base) != REDIS_OK) {
        link_close(l, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (l->host != NULL)
        redisEnableKeepAlive(&ac->c);
    l->state = LINK_CONNECTING;
    link_handshake(l);
}

static void
on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dns_ctx *ctx = arg;
    struct link *l = ctx->link;
    free(ctx);
    char ip[INET6_ADDRSTRLEN] = "";
    /* The first IPv4 address, else the first IPv6 one. */
    const struct evutil_addrinfo *pick = NULL;
    for (const struct evutil_addrinfo *ai = result == 0 ? res : NULL; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
        if (ai->ai_family == AF_INET6 && pick == NULL)
            pick = ai;
    }
    if (pick != NULL) {
        const void *a = pick->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr;
        if (inet_ntop(pick->ai_family, a, ip, sizeof(ip)) == NULL)
            ip[0] = '\0';
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (l == NULL)
        return;
    l->dns = NULL;
    if (l->state == LINK_CLOSING)
        return;
    if (ip[0] == '\0') {
        sesame_log_warn("%s %s: cannot resolve the host name", role_name(l->role), l->name);
        link_close(l, "cannot resolve the host name");
        return;
    }
    link_attach(l, redisAsyncConnect(ip, l->port));
}

static void
link_start(struct link *l)
{
    struct sesame_redis *r = l->r;
    timer_after(l->timer, r->connect_timeout);
    if (l->host == NULL) {
        link_attach(l, redisAsyncConnectUnix(r->conf->unix_socket));
        return;
    }
    if (is_numeric_host(l->host)) {
        link_attach(l, redisAsyncConnect(l->host, l->port));
        return;
    }
    if (r->dns == NULL) {
        r->dns = evdns_base_new(r->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (r->dns == NULL) {
            link_close(l, "no resolver");
            return;
        }
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    struct dns_ctx *ctx = sesame_calloc(1, sizeof(*ctx));
    ctx->link = l;
    l->dns = ctx;
    /* The callback may run before this returns. */
    evdns_getaddrinfo(r->dns, l->host, NULL, &hints, on_resolved, ctx);
}

static void
schedule(struct event *ev, uint64_t ms)
{
    evtimer_del(ev);
    timer_after(ev, ms);
}

/* Marks the link dead, tells its owner, and hands it to the reaper: the
 * hiredis context is freed on the next loop iteration, never from inside one
 * of its own callbacks. Nothing is written to a closing link. */
static void
link_close(struct link *l, const char *why)
{
    if (l->state == LINK_CLOSING)
        return;
    struct sesame_redis *r = l->r;
    bool was_ready = l->state == LINK_READY;
    l->state = LINK_CLOSING;
    evtimer_del(l->timer);
    if (l->dns != NULL) {
        l->dns->link = NULL;
        l->dns = NULL;
    }
    if (!r->freeing) {
        switch (l->role) {
        case ROLE_DATA:
            if (was_ready)
                sesame_log_warn("%s %s: %s", role_name(l->role), l->name, why);
            else
                sesame_log_info("%s %s: %s", role_name(l->role), l->name, why);
            r->data = NULL;
            if (was_ready && r->on_state)
                r->on_state(false, r->state_arg);
            defer_all(&r->inflight);
            defer_all(&r->waiting);
            if (r->psub != NULL)
                link_close(r->psub, "main connection lost");
            schedule(r->data_retry, next_backoff(&r->data_backoff));
            break;
        case ROLE_PUBSUB:
            if (was_ready)
                sesame_log_warn("%s %s: %s", role_name(l->role), l->name, why);
            r->psub = NULL;
            for (struct sub *s = r->subs; s; s = s->next)
                s->active = false;
            if (r->data != NULL && r->data->state == LINK_READY)
                schedule(r->psub_retry, next_backoff(&r->psub_backoff));
            break;
        case ROLE_QUERY:
            r->query = NULL;
            if (l->query_ok) {
                r->round_active = false;
                r->data = link_new(r, ROLE_DATA, r->master_host, r->master_port);
                link_start(r->data);
                break;
            }
            sesame_log_info("%s %s: %s", role_name(l->role), l->name, why);
            r->s_next = (r->s_next + 1) % r->ns;
            if (++r->s_tried < r->ns) {
                schedule(r->data_retry, 0);
            } else {
                sesame_log_warn("redis: no sentinel gave a master for \"%s\"",
                                r->conf->master_name);
                r->round_active = false;
                defer_all(&r->waiting);
                schedule(r->data_retry, next_backoff(&r->data_backoff));
            }
            break;
        case ROLE_SENTINEL_SUB:
            sesame_log_info("%s %s: %s", role_name(l->role), l->name, why);
            r->ssub = NULL;
            r->ssub_next = (r->ssub_next + 1) % r->ns;
            schedule(r->ssub_retry, next_backoff(&r->ssub_backoff));
            break;
        }
    }
    l->reap_next = r->reap;
    r->reap = l;
    if (!r->freeing)
        event_active(r->reap_ev, EV_TIMEOUT, 0);
}

/* ---- main connection and sentinels ---- */

static void
query_start(struct sesame_redis *r)
{
    r->query = link_new(r, ROLE_QUERY, r->s_host[r->s_next], r->s_port[r->s_next]);
    link_start(r->query);
}

static void
data_start(struct sesame_redis *r)
{
    if (r->data != NULL || r->query != NULL)
        return;
    if (r->ns > 0) {
        if (!r->round_active) {
            r->round_active = true;
            r->s_tried = 0;
        }
        query_start(r);
        return;
    }
    r->data = link_new(r, ROLE_DATA, r->master_host, r->master_port);
    link_start(r->data);
}

static void
on_data_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    data_start(arg);
}

static void
on_query_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    struct link *l = privdata;
    redisReply *reply = reply_;
    if (l->state == LINK_CLOSING || l->r->freeing)
        return;
    struct sesame_redis *r = l->r;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        link_close(l, "the sentinel does not know the master");
        return;
    }
    char portbuf[8];
    const redisReply *h = reply->element[0], *p = reply->element[1];
    if (h->len == 0 || h->len > 255 || p->len == 0 || p->len >= (int)sizeof(portbuf)) {
        link_close(l, "unusable sentinel answer");
        return;
    }
    memcpy(portbuf, p->str, (size_t)p->len);
    portbuf[p->len] = '\0';
    char *end;
    long port = strtol(portbuf, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535) {
        link_close(l, "unusable sentinel answer");
        return;
    }
    free(r->master_host);
    r->master_host = sesame_strndup(h->str, (size_t)h->len);
    r->master_port = (int)port;
    sesame_log_debug("redis sentinel %s: master is %s:%ld", l->name, r->master_host, port);
    l->query_ok = true;
    link_close(l, "done");
}

static void
ssub_start(struct sesame_redis *r)
{
    if (r->ssub != NULL || r->ns == 0)
        return;
    r->ssub = link_new(r, ROLE_SENTINEL_SUB, r->s_host[r->ssub_next], r->s_port[r->ssub_next]);
    link_start(r->ssub);
}

static void
on_ssub_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ssub_start(arg);
}

/* "+switch-master" payload: "<name> <old-ip> <old-port> <new-ip> <new-port>". */
static void
on_switch_master(struct sesame_redis *r, const char *msg, size_t len)
{
    const char *name = r->conf->master_name;
    size_t nlen = strlen(name);
    if (len <= nlen || memcmp(msg, name, nlen) != 0 || msg[nlen] != ' ')
        return;
    sesame_log_info("redis: sentinel announced a new master for \"%s\"", name);
    if (r->data != NULL) {
        link_close(r->data, "master switched");
        /* Reconnect at once rather than after the backoff. */
        schedule(r->data_retry, 0);
    } else if (!r->round_active) {
        schedule(r->data_retry, 0);
    }
}

/* ---- pub/sub ---- */

static struct sub *
find_sub(struct sesame_redis *r, const char *ch, size_t len)
{
    for (struct sub *s = r->subs; s; s = s->next)
        if (s->len == len && memcmp(s->channel, ch, len) == 0)
            return s;
    return NULL;
}

static void
on_sub_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    struct link *l = privdata;
    redisReply *reply = reply_;
    if (reply == NULL || l->state == LINK_CLOSING || l->r->freeing)
        return;
    struct sesame_redis *r = l->r;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *ch = reply->element[1];
    if (reply_str_eq(reply->element[0], "subscribe")) {
        if (l->subs_pending > 0)
            l->subs_pending--;
        if (l->role == ROLE_PUBSUB) {
            struct sub *s = find_sub(r, ch->str, (size_t)ch->len);
            if (s != NULL && !s->active) {
                s->active = true;
                if (s->on_subscribed)
                    s->on_subscribed(s->arg);
            }
        }
        if (l->state == LINK_CONNECTING && l->hs_done == l->nsteps && l->subs_pending == 0)
            link_ready(l);
        return;
    }
    if (!reply_str_eq(reply->element[0], "message") ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *payload = reply->element[2];
    if (l->role == ROLE_SENTINEL_SUB) {
        on_switch_master(r, payload->str, (size_t)payload->len);
        return;
    }
    struct sub *s = find_sub(r, ch->str, (size_t)ch->len);
    if (s != NULL && s->on_message)
        s->on_message(payload->str, (size_t)payload->len, s->arg);
}

static void
psub_open(struct sesame_redis *r)
{
    if (r->freeing || r->subs == NULL || r->psub != NULL || r->data == NULL ||
        r->data->state != LINK_READY)
        return;
    evtimer_del(r->psub_retry);
    r->psub = link_new(r, ROLE_PUBSUB, r->master_host, r->master_port);
    link_start(r->psub);
}

static void
on_psub_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    psub_open(arg);
}

int
sesame_redis_subscribe(struct sesame_redis *r, const char *channel,
                       sesame_redis_message_cb on_message,
                       sesame_redis_subscribed_cb on_subscribed, void *arg)
{
    size_t len = strlen(channel);
    if (find_sub(r, channel, len) != NULL)
        return SESAME_ERROR;
    struct sub *s = sesame_calloc(1, sizeof(*s));
    s->channel = sesame_strndup(channel, len);
    s->len = len;
    s->on_message = on_message;
    s->on_subscribed = on_subscribed;
    s->arg = arg;
    s->next = r->subs;
    r->subs = s;
    if (r->psub != NULL && r->psub->ac != NULL && r->psub->state != LINK_CLOSING)
        link_subscribe(r->psub, s->channel, s->len);
    else
        psub_open(r);
    return SESAME_OK;
}

void
sesame_redis_unsubscribe(struct sesame_redis *r, const char *channel)
{
    size_t len = strlen(channel);
    for (struct sub **pp = &r->subs; *pp; pp = &(*pp)->next) {
        struct sub *s = *pp;
        if (s->len == len && memcmp(s->channel, channel, len) == 0) {
            *pp = s->next;
            free(s->channel);
            free(s);
            return;
        }
    }
}

bool
sesame_redis_subscribed(const struct sesame_redis *r)
{
    if (r == NULL || r->psub == NULL || r->psub->state != LINK_READY)
        return false;
    for (const struct sub *s = r->subs; s; s = s->next)
        if (!s->active)
            return false;
    return true;
}

/* ---- health ---- */

static void
on_ping_reply(const redisReply *reply, void *arg)
{
    (void)reply;
    (void)arg;
}

static void
on_health(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sesame_redis *r = arg;
    if (!sesame_redis_is_up(r) || r->inflight.head != NULL || r->waiting.head != NULL)
        return;
    if (sesame_util_mono_ms() - r->last_activity < HEALTH_INTERVAL_MS)
        return;
    static const char *ping[] = {"PING"};
    sesame_redis_command(r, on_ping_reply, NULL, 1, ping, NULL);
}

/* ---- life cycle ---- */

struct sesame_redis *
sesame_redis_new(struct event_base *base, const struct sesame_conf_redis *conf)
{
    if (conf->nsentinels == 0 && conf->host == NULL && conf->unix_socket == NULL) {
        sesame_log_error("redis: no host, socket or sentinel configured");
        return NULL;
    }
    if (conf->nsentinels > 0 && (conf->master_name == NULL || conf->master_name[0] == '\0')) {
        sesame_log_error("redis: sentinels need a master name");
        return NULL;
    }
    struct sesame_redis *r = sesame_calloc(1, sizeof(*r));
    r->base = base;
    r->conf = conf;
    r->command_timeout = conf->command_timeout_ms ? conf->command_timeout_ms : DEFAULT_TIMEOUT_MS;
    r->connect_timeout = conf->connect_timeout_ms ? conf->connect_timeout_ms : DEFAULT_TIMEOUT_MS;
    r->data_backoff = r->psub_backoff = r->ssub_backoff = BACKOFF_MIN_MS;
    if (conf->nsentinels > 0) {
        r->ns = conf->nsentinels;
        r->s_host = sesame_calloc(r->ns, sizeof(*r->s_host));
        r->s_port = sesame_calloc(r->ns, sizeof(*r->s_port));
        for (size_t i = 0; i < r->ns; i++) {
            if (sesame_redis_parse_hostport(conf->sentinels[i], &r->s_host[i], &r->s_port[i]) !=
                SESAME_OK) {
                sesame_log_error("redis: bad sentinel address \"%s\"", conf->sentinels[i]);
                for (size_t j = 0; j < i; j++)
                    free(r->s_host[j]);
                free(r->s_host);
                free(r->s_port);
                free(r);
                return NULL;
            }
        }
    } else if (conf->unix_socket == NULL) {
        r->master_host = sesame_strdup(conf->host);
        r->master_port = conf->port ? conf->port : 6379;
    }
    r->data_retry = evtimer_new(base, on_data_retry, r);
    r->psub_retry = evtimer_new(base, on_psub_retry, r);
    r->ssub_retry = evtimer_new(base, on_ssub_retry, r);
    r->op_timer = evtimer_new(base, on_op_timer, r);
    r->deferred_ev = event_new(base, -1, 0, on_deferred, r);
    r->reap_ev = event_new(base, -1, 0, on_reap, r);
    r->health = event_new(base, -1, EV_PERSIST, on_health, r);
    timer_after(r->health, HEALTH_INTERVAL_MS);
    data_start(r);
    ssub_start(r);
    return r;
}

void
sesame_redis_free(struct sesame_redis *r)
{
    if (r == NULL)
        return;
    r->freeing = true;
    struct sesame_redis_op *op;
    while ((op = r->waiting.head) != NULL) {
        op_unlink(op);
        op_maybe_free(op);
    }
    while ((op = r->deferred.head) != NULL) {
        op_unlink(op);
        op_maybe_free(op);
    }
    for (op = r->inflight.head; op; op = op->next)
        op->cancelled = true;
    struct link *links[] = {r->data, r->psub, r->query, r->ssub};
    r->data = r->psub = r->query = r->ssub = NULL;
    for (size_t i = 0; i < SESAME_ARRAY_LEN(links); i++)
        if (links[i] != NULL)
            link_destroy(links[i]);
    on_reap(-1, 0, r);
    /* Every hiredis context is gone, so every op has been released. */
    while ((op = r->inflight.head) != NULL) {
        op_unlink(op);
        op_maybe_free(op);
    }
    if (r->dns != NULL)
        evdns_base_free(r->dns, 1);
    event_free(r->data_retry);
    event_free(r->psub_retry);
    event_free(r->ssub_retry);
    event_free(r->op_timer);
    event_free(r->deferred_ev);
    event_free(r->reap_ev);
    event_free(r->health);
    while (r->subs) {
        struct sub *s = r->subs;
        r->subs = s->next;
        free(s->channel);
        free(s);
    }
    for (size_t i = 0; i < r->ns; i++)
        free(r->s_host[i]);
    free(r->s_host);
    free(r->s_port);
    free(r->master_host);
    free(r);
}
