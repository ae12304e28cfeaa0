#include "http/tunnel.h"

#include <stdlib.h>

#include <event2/buffer.h>

#include "core/util.h"
#include "http/server.h"

static sesame_tunnel_check_fn check_fn;

struct sesame_tunnel {
    struct sesame_req *req;
    struct bufferevent *client;
    struct bufferevent *up;
    struct event *idle_timer;
    struct event *check_timer;
    uint64_t idle_ms;
    uint64_t check_ms;
    uint64_t last_ms;             /* last byte either way */
    size_t high_water;
    uint64_t bytes_in, bytes_out;
    bool ended;
    sesame_tunnel_end_cb cb;
    void *arg;
};

void
sesame_tunnel_set_check(sesame_tunnel_check_fn fn)
{
    check_fn = fn;
}

static void
end(struct sesame_tunnel *t, enum sesame_tunnel_end why)
{
    if (t->ended)
        return;
    t->ended = true;
    bufferevent_disable(t->up, EV_READ | EV_WRITE);
    t->cb(t->arg, why); /* frees t */
}

/* Moves what `from` read to `to`; stops reading `from` while `to` has more
 * than high_water bytes to write (resumed by to's write callback). */
static void
relay(struct sesame_tunnel *t, struct bufferevent *from, struct bufferevent *to)
{
    struct evbuffer *in = bufferevent_get_input(from);
    size_t n = evbuffer_get_length(in);
    if (n == 0)
        return;
    t->last_ms = sesame_util_mono_ms();
    if (from == t->client)
        t->bytes_in += n;
    else
        t->bytes_out += n;
    bufferevent_write_buffer(to, in);
    if (evbuffer_get_length(bufferevent_get_output(to)) > t->high_water)
        bufferevent_disable(from, EV_READ);
}

static void
client_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_tunnel *t = arg;
    relay(t, t->client, t->up);
}

static void
up_readcb(struct bufferevent *bev, void *arg)
{
    struct sesame_tunnel *t = arg;
    relay(t, t->up, t->client);
}

/* A side drained below the low watermark: the other may read again. */
static void
client_writecb(struct bufferevent *bev, void *arg)
{
    struct sesame_tunnel *t = arg;
    if (!t->ended)
        bufferevent_enable(t->up, EV_READ);
}

static void
up_writecb(struct bufferevent *bev, void *arg)
{
    struct sesame_tunnel *t = arg;
    if (!t->ended)
        bufferevent_enable(t->client, EV_READ);
}

static void
client_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct sesame_tunnel *t = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        relay(t, t->client, t->up);
        end(t, SESAME_TUNNEL_CLIENT_CLOSED);
    }
}

static void
up_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct sesame_tunnel *t = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        relay(t, t->up, t->client); /* flushed to the client before it is closed */
        end(t, SESAME_TUNNEL_UPSTREAM_CLOSED);
    }
}

static void
arm(struct event *ev, uint64_t ms)
{
    struct timeval tv = sesame_util_timeval_ms(ms);
    evtimer_add(ev, &tv);
}

static void
idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_tunnel *t = arg;
    uint64_t now = sesame_util_mono_ms();
    if (now - t->last_ms >= t->idle_ms) {
        end(t, SESAME_TUNNEL_IDLE);
        return;
    }
    arm(t->idle_timer, t->idle_ms - (now - t->last_ms));
}

static void
check_done(void *arg, bool alive)
{
    struct sesame_tunnel *t = arg;
    if (t->ended)
        return;
    if (!alive) {
        end(t, SESAME_TUNNEL_REVOKED);
        return;
    }
    arm(t->check_timer, t->check_ms);
}

static void
check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_tunnel *t = arg;
    if (check_fn == NULL)
        return;
    (void)check_fn(t->req, check_done, t); /* false: nothing to check, no more timer */
}

struct sesame_tunnel *
sesame_tunnel_start(struct event_base *base, struct sesame_req *req, struct bufferevent *client,
                    struct bufferevent *upstream, uint64_t idle_ms, uint64_t check_ms, size_t high_water,
                    sesame_tunnel_end_cb cb, void *arg)
{
    struct sesame_tunnel *t = sesame_calloc(1, sizeof(*t));
    t->req = req;
    t->client = client;
    t->up = upstream;
    t->idle_ms = idle_ms ? idle_ms : 1;
    t->check_ms = check_ms;
    t->high_water = high_water;
    t->cb = cb;
    t->arg = arg;
    t->last_ms = sesame_util_mono_ms();
    bufferevent_set_timeouts(client, NULL, NULL);
    bufferevent_set_timeouts(upstream, NULL, NULL);
    bufferevent_setwatermark(client, EV_WRITE, high_water / 2, 0);
    bufferevent_setwatermark(upstream, EV_WRITE, high_water / 2, 0);
    bufferevent_setcb(client, client_readcb, client_writecb, client_eventcb, t);
    bufferevent_setcb(upstream, up_readcb, up_writecb, up_eventcb, t);
    bufferevent_enable(client, EV_READ | EV_WRITE);
    bufferevent_enable(upstream, EV_READ | EV_WRITE);
    t->idle_timer = evtimer_new(base, idle_cb, t);
    arm(t->idle_timer, t->idle_ms);
    if (check_ms > 0 && check_fn != NULL) {
        t->check_timer = evtimer_new(base, check_cb, t);
        arm(t->check_timer, check_ms);
    }
    /* bytes already read past the handshake, either side */
    relay(t, upstream, client);
    relay(t, client, upstream);
    return t;
}

uint64_t
sesame_tunnel_bytes_in(const struct sesame_tunnel *t)
{
    return t->bytes_in;
}

uint64_t
sesame_tunnel_bytes_out(const struct sesame_tunnel *t)
{
    return t->bytes_out;
}

void
sesame_tunnel_free(struct sesame_tunnel *t)
{
    if (t == NULL)
        return;
    if (t->idle_timer)
        event_free(t->idle_timer);
    if (t->check_timer)
        event_free(t->check_timer);
    bufferevent_setwatermark(t->client, EV_WRITE, 0, 0);
    bufferevent_setcb(t->client, NULL, NULL, NULL, NULL);
    bufferevent_free(t->up);
    free(t);
}
