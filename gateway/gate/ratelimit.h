/*
 * ratelimit.h - sign-in rate limits: per client address and per tenant, in
 * fixed memory.
 *
 * Why. Every <prefix>login writes a pending sign-in to Redis (state, nonce,
 * return URL: about 400 bytes, at most about 2.7 KB) that lives for
 * login_timeout. Without a limit, a script could fill Redis with them (or
 * send the provider a flood of authorization requests in the commune's
 * name). Two limits apply, both token buckets:
 *   [server] client_signin_rate   per client address (default 60/m);
 *   [tenant] signin_rate          per tenant, all clients (default 600/m).
 * A rate N/P admits bursts of N and then N per P, evenly (one every P/N).
 * Past either limit the citizen gets the French 429 page with Retry-After
 * (JSON for scripts), nothing is written to Redis and the provider is not
 * contacted. So the pending sign-ins of a tenant in Redis are at most
 * N + N x login_timeout / P (6600 with the defaults), whatever the number
 * of addresses used, and those of one client address at most its own
 * N + N x login_timeout / P (660).
 *
 * The client address. The connection's peer, unless it is one of
 * trusted_proxies: then the X-Forwarded-For entries (every such header, in
 * order) are read from the right, skipping trusted proxies, and the first
 * other address is the client (when every entry is a trusted proxy, the
 * left-most). An entry that is not an address ends the walk at the last
 * address read. From any other peer X-Forwarded-For is ignored. IPv4
 * addresses count one by one, IPv6 ones per /64 network (what one
 * subscriber usually gets).
 *
 * Memory. The client buckets live in one process-wide table of
 * client_signin_table entries (fixed at start: sizing it again takes a
 * restart), shared by the workers under a mutex (taken only by sign-ins).
 * A bucket untouched for a whole period is full again, exactly as if it
 * were absent, so forgetting it loses nothing; when the table is full, the
 * least recently used bucket is forgotten (a warning is logged, at most
 * once a minute, when that bucket was not full: the table is too small for
 * the traffic). Tenant buckets live in a table of their own, so that a
 * flood of client addresses never resets them.
 *
 * Buckets are kept as a "theoretical arrival time" (GCRA), one 64-bit
 * number each; changing a rate on reload applies to the buckets as they are.
 */
#ifndef SESAME_GATE_RATELIMIT_H
#define SESAME_GATE_RATELIMIT_H

#include <sys/socket.h>

#include "config/config.h"
#include "core/common.h"

struct sesame_req;

#define SESAME_RATELIMIT_KEY_LEN 16

/* ---- The bucket table ------------------------------------------------------- */

struct sesame_ratelimit_table;

/* A table of `capacity` buckets (at least 1), all memory allocated here;
 * never grows. Not thread-safe: the caller serialises. */
struct sesame_ratelimit_table *sesame_ratelimit_table_new(size_t capacity);
void sesame_ratelimit_table_free(struct sesame_ratelimit_table *t);

/* Takes one token from the bucket of `key` (SESAME_RATELIMIT_KEY_LEN
 * bytes) for rate r at monotonic time now_ms, creating the bucket (full)
 * when it is not in the table. Returns 0 when admitted, else the
 * milliseconds until a token will be available (at least 1); a refused
 * request takes nothing. r->count 0 (off) admits everything without
 * touching the table. */
uint64_t sesame_ratelimit_take(struct sesame_ratelimit_table *t, const unsigned char *key,
                               const struct sesame_conf_rate *r, uint64_t now_ms);

/* Gives back the token taken by the last admitted sesame_ratelimit_take for
 * key (when a second limit then refused the request). */
void sesame_ratelimit_refund(struct sesame_ratelimit_table *t, const unsigned char *key,
                             const struct sesame_conf_rate *r);

struct sesame_ratelimit_stats {
    size_t capacity;
    size_t used;              /* buckets in the table */
    uint64_t evicted_idle;    /* forgotten when full again (nothing lost) */
    uint64_t evicted_active;  /* forgotten while not full: the table is too small */
};
void sesame_ratelimit_table_stats(const struct sesame_ratelimit_table *t,
                                  struct sesame_ratelimit_stats *out);

/* Bytes of memory a table of `capacity` buckets holds (for the docs and
 * tests). */
size_t sesame_ratelimit_table_bytes(size_t capacity);

/* ---- Client addresses ---------------------------------------------------------- */

/* The bucket key of an address: IPv4 (also IPv4-mapped IPv6) as ::ffff:a.b.c.d,
 * IPv6 masked to its /64. Returns SESAME_ERROR for other families. */
int sesame_ratelimit_addr_key(const struct sockaddr *addr, unsigned char key[SESAME_RATELIMIT_KEY_LEN]);

/* The client address of a request as described above: peer, or from the
 * X-Forwarded-For values (xff[0..nxff), in header order) when the peer is a
 * trusted proxy of conf. Writes it into *out (and its text, at most 47
 * bytes, into text when not NULL). Returns SESAME_OK, or SESAME_ERROR when
 * the peer itself is not an IP address. */
int sesame_ratelimit_client(const struct sesame_conf *conf, const struct sockaddr *peer,
                            const char *const *xff, const size_t *xff_len, size_t nxff,
                            struct sockaddr_storage *out, char text[48]);

/* ---- Sign-in admission ----------------------------------------------------------- */

/* Creates the process-wide tables (client_signin_table entries for the
 * clients). Called once before the workers start (sesame_flow_start).
 * Returns SESAME_OK, or SESAME_ERROR with *err. */
int sesame_ratelimit_start(const struct sesame_conf *conf, char **err);
void sesame_ratelimit_stop(void);

/* Applies the sign-in limits to req (its tenant set): returns true when the
 * sign-in may go on; otherwise it has answered 429 (page or JSON, with
 * Retry-After in whole seconds) and logged the refusal (client address or
 * tenant, and the rate), and returns false. return_to, provider and acr
 * (each may be NULL) make the page's "Réessayer" link start the same
 * sign-in again. Without sesame_ratelimit_start everything is admitted. */
bool sesame_ratelimit_signin(struct sesame_req *req, const char *return_to, const char *provider,
                             const char *acr);

#endif
