/*
 * account.h - account plugins as the daemon sees them: loading (dlopen, ABI
 * check, init with the `[accounts NAME]` options) and resolving identities
 * on the worker pool.
 *
 * The plugin ABI itself is documented in include/sesame/plugin.h.
 *
 * Plugin lookup: `plugin = redis` loads "$SESAME_PLUGIN_DIR/sesame_redis.so",
 * where SESAME_PLUGIN_DIR defaults to the install directory (pkglibdir) and
 * may be set in the environment (e.g. "<builddir>/.libs" in the build tree).
 * A short name is [a-z0-9_-]{1,64}. `plugin = /abs/path.so` loads that file.
 * Relative paths are refused.
 */
#ifndef SESAME_ACCOUNT_ACCOUNT_H
#define SESAME_ACCOUNT_ACCOUNT_H

#include <event2/event.h>
#include <sesame/plugin.h>

#include "account/pool.h"
#include "config/config.h"
#include "core/common.h"

/* Bounds of an identity handed to resolve (longer claims are refused). */
#define SESAME_ACCOUNT_MAX_CLAIMS 64
#define SESAME_ACCOUNT_MAX_CLAIM_NAME 64
#define SESAME_ACCOUNT_MAX_CLAIM_VALUE 4096
#define SESAME_ACCOUNT_MAX_SUB 256

/* A loaded, initialised plugin. Reference-counted: jobs in flight hold a
 * reference, so freeing it during a reload is safe. */
struct sesame_account;

/* Resolves the file name of a plugin: a copy of an absolute path, or
 * "$SESAME_PLUGIN_DIR/sesame_NAME.so" for a short name. Returns a malloc'd
 * path, or NULL with *err ("plugin \"x/y\": not a short name or an absolute
 * path"). */
char *sesame_account_plugin_path(const char *plugin, char **err);

/* Loads the plugin named by conf->plugin, checks its ABI version, and calls
 * its init with conf->options. `file` is the configuration file name used in
 * messages (NULL: messages start at "accounts NAME:"). host is the table
 * given to the plugin (NULL: the daemon's own, logging to the error log).
 * Returns the account backend with one reference, or NULL with *err set to
 * one line "FILE:LINE: accounts NAME: message", e.g.
 *   sesame.conf:40: accounts citizens: plugin "old" (/usr/lib/sesame/sesame_old.so)
 *       has ABI version 2, this sesame expects version 1
 * dlerror()'s text is included when dlopen or dlsym fails. */
struct sesame_account *sesame_account_load(const char *file, const struct sesame_conf_accounts *conf,
                                           const struct sesame_plugin_host *host, char **err);

/* Name of the `[accounts NAME]` section, and the plugin's own name. */
const char *sesame_account_name(const struct sesame_account *acct);
const char *sesame_account_plugin_name(const struct sesame_account *acct);

/* The daemon's host table (logs through core/log, allocates with
 * sesame_malloc). Static storage. */
const struct sesame_plugin_host *sesame_account_default_host(void);

struct sesame_account *sesame_account_ref(struct sesame_account *acct);
/* Drops a reference; the last one calls the plugin's destroy, then dlclose.
 * Accepts NULL. */
void sesame_account_unref(struct sesame_account *acct);

/* Checks an identity against the bounds above (sub 1..256 printable ASCII,
 * tenant/provider [A-Za-z0-9._-]{1,64}, claim names [A-Za-z0-9_.-]{1,64},
 * values UTF-8 without controls). Returns SESAME_OK or SESAME_ERROR with
 * *err (the message names the field, never its value). */
int sesame_account_check_identity(const struct sesame_plugin_identity *id, char **err);

/* Calls the plugin's resolve synchronously (blocks; worker threads and tools
 * only). The identity is checked first; res is zeroed, filled, then
 * validated: a malformed answer becomes SESAME_PLUGIN_RESULT_ERROR. Always
 * leaves res in a valid state. */
void sesame_account_resolve(struct sesame_account *acct, const struct sesame_plugin_identity *id,
                            struct sesame_plugin_result *res);

/* Calls the plugin's erase (blocks). Returns SESAME_OK, SESAME_DECLINED when
 * the plugin has no erase, or SESAME_ERROR with *err. */
int sesame_account_erase(struct sesame_account *acct, const char *tenant, const char *account_id,
                         char **err);

/* Called on the caller's event_base thread with the outcome: res is always
 * valid (FOUND, NONE or ERROR; a timeout or a full queue is an ERROR whose
 * text says so) and is borrowed for the duration of the call. */
typedef void (*sesame_account_done_fn)(const struct sesame_plugin_result *res, void *arg);

/* A resolve in flight, for cancellation. */
struct sesame_account_req;

/* Resolves on the pool: the identity is copied (the caller's may go away),
 * the plugin runs on a worker thread, and done runs on base's thread, once.
 * Must be called on base's thread. If req is not NULL it receives a handle,
 * valid until done runs or the request is cancelled.
 * Returns SESAME_AGAIN when accepted; SESAME_ERROR when the identity is
 * malformed or the pool refuses the job (queue full): done is then not called
 * and *err says why. */
int sesame_account_resolve_async(struct sesame_account *acct, struct sesame_pool *pool,
                                 struct event_base *base, const struct sesame_plugin_identity *id,
                                 uint64_t timeout_ms, sesame_account_done_fn done, void *arg,
                                 struct sesame_account_req **req, char **err);

/* Cancels a request before its done ran (base thread only): done will not
 * be called; the plugin call itself ends in the background. */
void sesame_account_cancel(struct sesame_account_req *req);

#endif
