/*
 * redis_plugin.c - the `redis` account plugin (sesame_redis.so): citizen
 * accounts in Redis, see store.h for the layout, the encryption and the
 * matching rules and store.h (sesame_store_options_parse) for the options
 * (key_file is required).
 *
 * Connections: resolve may run on several worker threads at once; each call
 * takes an idle connection from a small mutex-protected list (or opens one)
 * and gives it back afterwards, unless it failed: a broken connection is
 * dropped, so a restarted Redis is reconnected to on the next call.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sesame/plugin.h>

#include "store.h"

struct state {
    struct sesame_store_options opts;
    const struct sesame_plugin_host *host;
    pthread_mutex_t lock;
    redisContext **idle;
    size_t nidle;
};

static void
destroy(void *arg)
{
    struct state *st = arg;
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->nidle; i++)
        redisFree(st->idle[i]);
    free(st->idle);
    pthread_mutex_destroy(&st->lock);
    sesame_store_options_free(&st->opts);
    free(st);
}

static int
init(const struct sesame_plugin_option *opts, size_t nopts, const struct sesame_plugin_host *host,
     void **statep, char **errp)
{
    struct state *st = sesame_calloc(1, sizeof(*st));
    pthread_mutex_init(&st->lock, NULL);
    st->host = host;
    char *err = NULL;
    if (sesame_store_options_parse(&st->opts, opts, nopts, &err) != SESAME_OK ||
        sesame_store_options_check(&st->opts, &err) != SESAME_OK) {
        *errp = sesame_plugin_strdup(host, err);
        free(err);
        destroy(st);
        return -1;
    }
    st->idle = sesame_calloc(st->opts.max_idle, sizeof(redisContext *));
    /* Redis may be down when the daemon starts: connections are opened on
     * demand, and `sesame -t` checks the options only. */
    *statep = st;
    return 0;
}

static redisContext *
take(struct state *st, char **err)
{
    redisContext *c = NULL;
    pthread_mutex_lock(&st->lock);
    if (st->nidle > 0)
        c = st->idle[--st->nidle];
    pthread_mutex_unlock(&st->lock);
    return c ? c : sesame_store_connect(&st->opts.server, err);
}

static void
give_back(struct state *st, redisContext *c)
{
    if (c->err) {
        redisFree(c);
        return;
    }
    pthread_mutex_lock(&st->lock);
    if (st->nidle < st->opts.max_idle) {
        st->idle[st->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&st->lock);
    if (c != NULL)
        redisFree(c);
}

static int
resolve(void *arg, const struct sesame_plugin_identity *id, struct sesame_plugin_result *res)
{
    struct state *st = arg;
    char *err = NULL;
    redisContext *c = take(st, &err);
    if (c == NULL) {
        st->host->log(SESAME_PLUGIN_LOG_ERROR, "accounts redis: %s", err);
        sesame_plugin_result_error(res, "account store unavailable: %s", err);
        free(err);
        return 0;
    }
    if (sesame_store_resolve(c, &st->opts, st->host->log, id, res) != SESAME_OK) {
        /* A pooled connection may have died with a Redis restart: one retry
         * on a fresh connection. */
        redisFree(c);
        c = sesame_store_connect(&st->opts.server, &err);
        if (c == NULL) {
            st->host->log(SESAME_PLUGIN_LOG_ERROR, "accounts redis: %s", err);
            sesame_plugin_result_error(res, "account store unavailable: %s", err);
            free(err);
            return 0;
        }
        memset(res, 0, sizeof(*res));
        if (sesame_store_resolve(c, &st->opts, st->host->log, id, res) != SESAME_OK)
            st->host->log(SESAME_PLUGIN_LOG_ERROR, "accounts redis: %s", res->error);
    }
    give_back(st, c);
    return 0;
}

static int
erase(void *arg, const char *tenant, const char *account_id, char **errp)
{
    struct state *st = arg;
    char *err = NULL;
    redisContext *c = take(st, &err);
    int rc = SESAME_ERROR;
    if (c != NULL) {
        size_t nsessions = 0;
        rc = sesame_store_erase(c, &st->opts, tenant, account_id, &err);
        if (rc != SESAME_ERROR)
            rc = sesame_store_revoke_sessions(c, st->opts.session_prefix, tenant, account_id,
                                              &nsessions, &err);
        give_back(st, c);
    }
    if (rc == SESAME_ERROR) {
        *errp = sesame_plugin_strdup(st->host, err ? err : "erasure failed");
        free(err);
        return -1;
    }
    return 0;
}

static const struct sesame_plugin plugin = {
    .abi_version = SESAME_PLUGIN_ABI_VERSION,
    .name = "redis",
    .init = init,
    .resolve = resolve,
    .destroy = destroy,
    .erase = erase,
};

SESAME_PLUGIN_EXPORT const struct sesame_plugin *sesame_plugin_entry(void);

SESAME_PLUGIN_EXPORT const struct sesame_plugin *
sesame_plugin_entry(void)
{
    return &plugin;
}
