/*
 * redis.h - asynchronous Redis client, one per worker thread.
 *
 * Threading: a client belongs to the worker thread that created it and is
 * used only from that thread, through the worker's event_base. Nothing here
 * blocks the loop: host names are resolved with evdns, connects are
 * non-blocking, and every command is pipelined on one connection.
 *
 * Connection life:
 *   - On every (re)connect the client sends AUTH (when a password is set),
 *     SELECT (when database != 0), ROLE (with Sentinel: the node must say
 *     "master") and PING; only then is the client "up" and the commands
 *     issued meanwhile are written. Connect, resolution and this handshake
 *     together are bounded by conf->connect_timeout_ms.
 *   - After any error (connect failure, handshake failure, EOF, protocol
 *     error, a command timing out, a -READONLY, -LOADING, -MASTERDOWN or
 *     -NOAUTH reply) the connection is dropped, never reused, and a new one
 *     is attempted after an exponential backoff (100 ms doubling to 5 s,
 *     reset when a handshake succeeds). An idle connection is checked with a
 *     PING every second, so a dead server is noticed without traffic.
 *   - While the client is down (waiting for its backoff), commands fail fast:
 *     their callback gets NULL on the next loop iteration. While a connection
 *     attempt is in progress, commands wait for it (bounded by their own
 *     timeout and by a cap of SESAME_REDIS_MAX_WAITING commands).
 *   - Sentinel (conf->nsentinels > 0): before each connect the sentinels are
 *     asked in turn (SENTINEL get-master-addr-by-name conf->master_name); the
 *     answer is verified with ROLE. The client also keeps a subscription to
 *     "+switch-master" on one sentinel and moves to the new master when it is
 *     announced. Sentinels are contacted without AUTH.
 *   - Pub/sub uses a second connection to the same server, opened once the
 *     main connection is up and re-subscribed after every reconnect.
 *
 * Metrics (core/metrics.h): the latency of every command that has a callback
 * (idle PINGs included), the commands whose callback got NULL, and the main
 * connections re-established after a loss.
 *
 * The process must ignore SIGPIPE (hiredis writes with write(2)).
 */
#ifndef SESAME_SESSION_REDIS_H
#define SESAME_SESSION_REDIS_H

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "config/config.h"
#include "core/common.h"

/* Commands waiting for a connection attempt beyond this many fail at once. */
#define SESAME_REDIS_MAX_WAITING 10000

struct sesame_redis;
struct sesame_redis_op;

/* Result of a command. `reply` is NULL when the command failed: client down,
 * connection lost, timeout, or a reply that showed the server unusable
 * (-READONLY, -LOADING, -MASTERDOWN, -NOAUTH). Any other reply, error replies
 * included, is passed as is. The reply belongs to the client and is freed
 * when the callback returns. Called on the worker's thread, exactly once per
 * command that was not cancelled, never from inside the call that issued the
 * command. */
typedef void (*sesame_redis_cb)(const redisReply *reply, void *arg);

/* A pub/sub message on a subscribed channel; `msg` is `len` bytes, not
 * NUL-terminated, and only valid during the call. */
typedef void (*sesame_redis_message_cb)(const char *msg, size_t len, void *arg);
/* Called each time the subscription is (re)established on a new connection:
 * messages published while it was down were lost. */
typedef void (*sesame_redis_subscribed_cb)(void *arg);

/* One command of a transaction. */
struct sesame_redis_cmd {
    int argc;
    const char **argv;
    const size_t *argvlen;
};

/* Creates a client on `base` and starts connecting. `conf` is borrowed and
 * must outlive the client. Returns NULL (and logs why) when the configuration
 * cannot be used (unparsable sentinel address, no host, socket or sentinel). */
struct sesame_redis *sesame_redis_new(struct event_base *base,
                                      const struct sesame_conf_redis *conf);

/* Closes every connection. Commands still outstanding are cancelled: their
 * callbacks are never called. Must not be called from inside a callback of
 * this client. Accepts NULL. */
void sesame_redis_free(struct sesame_redis *r);

/* Issues one command (argv[i] is argvlen[i] bytes, binary-safe; argvlen NULL
 * means NUL-terminated strings; the arguments are copied before returning).
 * cb may be NULL when the result does not matter. Returns a handle valid
 * until the callback runs or sesame_redis_cancel is called; never NULL. The
 * callback gets NULL
 * when no reply came within conf->command_timeout_ms (the connection is then
 * replaced, so no late reply is ever delivered). */
struct sesame_redis_op *sesame_redis_command(struct sesame_redis *r, sesame_redis_cb cb, void *arg,
                                             int argc, const char **argv, const size_t *argvlen);

/* Issues MULTI, the `ncmds` commands, EXEC, back to back on the connection,
 * all or none: if one of them cannot be written the connection is dropped
 * before EXEC is sent, so the server discards the transaction. The callback
 * gets EXEC's reply (an array of the commands' replies, or an error such as
 * EXECABORT) or NULL as for sesame_redis_command. */
struct sesame_redis_op *sesame_redis_transaction(struct sesame_redis *r, sesame_redis_cb cb,
                                                 void *arg, const struct sesame_redis_cmd *cmds,
                                                 size_t ncmds);

/* Cancels a command whose callback has not run yet: the callback will never
 * run and `op` becomes invalid. The command may still reach the server. */
void sesame_redis_cancel(struct sesame_redis_op *op);

/* True when the main connection is established and its handshake succeeded. */
bool sesame_redis_is_up(const struct sesame_redis *r);

/* Told, on the worker's thread, each time the main connection comes up
 * (its handshake succeeded: up true) and each time an established one is
 * lost (up false). A dead server is noticed at once when its connection
 * closes (the process stopped, a reset), else by the idle PING sent every
 * second plus command_timeout. cb NULL: no more calls. */
typedef void (*sesame_redis_state_cb)(bool up, void *arg);
void sesame_redis_set_state_cb(struct sesame_redis *r, sesame_redis_state_cb cb, void *arg);

/* Subscribes to `channel` (copied) on the pub/sub connection. `on_message` is
 * called for each message; `on_subscribed` (may be NULL) each time the
 * subscription is (re)made on a new connection. Returns SESAME_OK, or
 * SESAME_ERROR when the channel is already subscribed on this client. */
int sesame_redis_subscribe(struct sesame_redis *r, const char *channel,
                           sesame_redis_message_cb on_message,
                           sesame_redis_subscribed_cb on_subscribed, void *arg);

/* Stops delivering messages of `channel` (the server-side subscription ends
 * with the connection). */
void sesame_redis_unsubscribe(struct sesame_redis *r, const char *channel);

/* True when every subscription is currently active: no message published from
 * now on can be missed until this turns false. */
bool sesame_redis_subscribed(const struct sesame_redis *r);

/* Parses "host:port" or "[v6]:port" into a malloc'd host and a port.
 * Returns SESAME_OK or SESAME_ERROR. */
int sesame_redis_parse_hostport(const char *s, char **host, int *port);

#endif
