/*
 * claim.h - refusing to start on an address another process already serves.
 *
 * The workers' listeners use SO_REUSEPORT so that each has its own accept
 * queue; the kernel then lets any other socket of the same user that also
 * sets SO_REUSEPORT bind the same address, and a second `sesame` would
 * silently share the traffic. Before the workers bind, every address is
 * claimed:
 *   1. a lock: an abstract AF_UNIX socket named after the address
 *      ("\0sesame-listen:ADDRESS:PORT"), bound for the life of the process.
 *      Abstract names are unique in a network namespace (the same one as
 *      the ports) and vanish with the process, crash included: no stale
 *      lock file, a restart right after a stop works. Two instances started
 *      at the same moment cannot both take it;
 *   2. a probe: a TCP socket bound to the address *without* SO_REUSEPORT
 *      (with SO_REUSEADDR, so that connections of a previous instance in
 *      TIME_WAIT do not count), closed at once. It fails with EADDRINUSE
 *      when anything listens there, a sesame of another build, nginx with
 *      reuseport or any other program, or on an overlapping wildcard
 *      address.
 * Only then do the workers bind with SO_REUSEPORT, sharing the port among
 * this process's own sockets. No BPF program is needed.
 */
#ifndef SESAME_HTTP_CLAIM_H
#define SESAME_HTTP_CLAIM_H

#include "config/config.h"

/* Claims every address of conf (server.listen and server.metrics_listen).
 * On failure nothing stays claimed and *err names the address, e.g.
 * "listen = 127.0.0.1:8080: the address is already served by another
 * process (another sesame?); refusing to share it". Main thread, once. */
int sesame_claim_addresses(const struct sesame_conf *conf, char **err);

/* Releases the locks (at stop, once the listeners are closing). */
void sesame_claim_release(void);

#endif
