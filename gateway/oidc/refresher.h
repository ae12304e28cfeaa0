/*
 * refresher.h - background upkeep of the provider runtimes: one thread, with
 * its own event loop and HTTPS client, that never blocks a worker.
 *
 * For each runtime of the registry (oidc/provider.h) it calls
 * sesame_provider_upkeep when that asks, at least once a second: metadata
 * and keys are refreshed before discovery_refresh runs out (jittered), and
 * providers are probed (probe_interval while available, every 2 s while
 * unavailable) so that an unreachable provider is shown as unavailable
 * within seconds and offered again as soon as it answers. Fetches it makes
 * are the runtime's shared fetch jobs: a worker needing the same document
 * waits for it instead of fetching it again.
 *
 * The daemon starts it once before the workers (sesame_flow_start), tells it
 * of each configuration (sesame_refresher_watch: the registry then holds
 * exactly that configuration's providers) and stops it after the workers.
 * evthread_use_pthreads() must have been called before.
 */
#ifndef SESAME_OIDC_REFRESHER_H
#define SESAME_OIDC_REFRESHER_H

#include "config/config.h"
#include "core/common.h"

/* Starts the thread and watches conf's providers (their first fetch starts
 * at once). Returns SESAME_OK, or SESAME_ERROR with *err. Calling it again
 * while it runs only watches conf. */
int sesame_refresher_start(const struct sesame_conf *conf, char **err);

/* Watches the providers of conf (sesame_provider_registry_sync) and wakes
 * the thread so that a new provider is fetched at once. From any thread;
 * cheap when nothing changed. Without a running refresher it only syncs
 * the registry. */
void sesame_refresher_watch(const struct sesame_conf *conf);

/* Stops the thread: fetches in flight end (their waiters are told the
 * client shut down), then it is joined. Idempotent. */
void sesame_refresher_stop(void);

#endif
