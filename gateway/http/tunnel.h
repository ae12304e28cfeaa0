/*
 * tunnel.h - the bytes of an upgraded connection (WebSocket), relayed both
 * ways without interpretation once the upstream has answered 101.
 *
 * A tunnel owns the upstream bufferevent; the client one stays the server's
 * (its callbacks are the tunnel's while it lives). Each direction buffers at
 * most `high_water` bytes: past it, reading from the other side stops until
 * the writer drains below half. The tunnel ends (end callback, once, never
 * from inside sesame_tunnel_start) when:
 *   - either side closes or fails (what the other side still has to read is
 *     flushed by the server's closing path for the client);
 *   - no byte went either way for idle_ms;
 *   - a periodic check (every check_ms, 0: never) says the session that let
 *     the handshake through is no longer valid (revoked, expired, logged out,
 *     no longer admitted by the route).
 */
#ifndef SESAME_HTTP_TUNNEL_H
#define SESAME_HTTP_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

struct sesame_req;
struct sesame_tunnel;

/* Why a tunnel ended (for the log). */
enum sesame_tunnel_end {
    SESAME_TUNNEL_CLIENT_CLOSED,
    SESAME_TUNNEL_UPSTREAM_CLOSED,
    SESAME_TUNNEL_IDLE,
    SESAME_TUNNEL_REVOKED,
};

typedef void (*sesame_tunnel_end_cb)(void *arg, enum sesame_tunnel_end why);

/* The session check, provided by the access layer (gate/gate.h): starts
 * checking that the session of req still admits it, then calls done(arg,
 * alive) once (possibly before returning; nothing of the tunnel may be used
 * after done). Returns false, without calling done, when the request has
 * nothing to check (public route, anonymous request): checks stop. */
typedef void (*sesame_tunnel_check_done)(void *arg, bool alive);
typedef bool (*sesame_tunnel_check_fn)(struct sesame_req *req, sesame_tunnel_check_done done, void *arg);

/* Installs the session check (once, at start; NULL: none). */
void sesame_tunnel_set_check(sesame_tunnel_check_fn fn);

/* Starts relaying between client and upstream (whose input may already hold
 * bytes sent after the 101: they are relayed at once). Takes ownership of
 * upstream. */
struct sesame_tunnel *sesame_tunnel_start(struct event_base *base, struct sesame_req *req,
                                          struct bufferevent *client, struct bufferevent *upstream,
                                          uint64_t idle_ms, uint64_t check_ms, size_t high_water,
                                          sesame_tunnel_end_cb cb, void *arg);

/* Bytes relayed client -> upstream and upstream -> client. */
uint64_t sesame_tunnel_bytes_in(const struct sesame_tunnel *t);
uint64_t sesame_tunnel_bytes_out(const struct sesame_tunnel *t);

/* Stops and frees: the upstream connection is closed, the client
 * bufferevent's callbacks are cleared. NULL is allowed. */
void sesame_tunnel_free(struct sesame_tunnel *t);

#endif
