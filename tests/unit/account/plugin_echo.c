/*
 * A test plugin whose answer depends on the sub:
 *   found-X   FOUND "acct-X" with attributes tenant=<tenant>, claims=<count>
 *   deny      NONE, deny           link      NONE, link_only
 *   error     ERROR "echo says no"  bad-id    FOUND with an invalid id
 *   bad-attr  FOUND with an attribute holding a control character
 *   garbage   an unknown status     fail      returns -1 without a result
 *   block     reads one byte from the `block_fd` option's descriptor, then
 *             FOUND "acct-block"
 * Options: block_fd = N; fail = MESSAGE (init fails with it). Others refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sesame/plugin.h>

struct state {
    int block_fd;
};

static int
init(const struct sesame_plugin_option *opts, size_t nopts, const struct sesame_plugin_host *host,
     void **statep, char **err)
{
    struct state *st = malloc(sizeof(*st));
    if (st == NULL)
        return -1;
    st->block_fd = -1;
    for (size_t i = 0; i < nopts; i++) {
        const char *msg = NULL;
        if (strcmp(opts[i].key, "block_fd") == 0) {
            st->block_fd = atoi(opts[i].value);
            continue;
        }
        msg = strcmp(opts[i].key, "fail") == 0 ? opts[i].value : "unknown option";
        *err = host->alloc(strlen(msg) + 1);
        memcpy(*err, msg, strlen(msg) + 1);
        free(st);
        return -1;
    }
    *statep = st;
    return 0;
}

static int
resolve(void *arg, const struct sesame_plugin_identity *id, struct sesame_plugin_result *res)
{
    struct state *st = arg;
    const char *sub = id->sub;
    if (strncmp(sub, "found-", 6) == 0) {
        char acct[64], count[16];
        snprintf(acct, sizeof(acct), "acct-%s", sub + 6);
        snprintf(count, sizeof(count), "%zu", id->nclaims);
        sesame_plugin_result_found(res, acct);
        sesame_plugin_result_attr(res, "tenant", id->tenant);
        sesame_plugin_result_attr(res, "claims", count);
    } else if (strcmp(sub, "deny") == 0) {
        sesame_plugin_result_none(res, SESAME_PLUGIN_REASON_DENY);
    } else if (strcmp(sub, "link") == 0) {
        sesame_plugin_result_none(res, SESAME_PLUGIN_REASON_LINK_ONLY);
    } else if (strcmp(sub, "error") == 0) {
        sesame_plugin_result_error(res, "echo says no");
    } else if (strcmp(sub, "bad-id") == 0) {
        sesame_plugin_result_found(res, "bad id!");
    } else if (strcmp(sub, "bad-attr") == 0) {
        sesame_plugin_result_found(res, "acct-x");
        sesame_plugin_result_attr(res, "note", "a\nb");
    } else if (strcmp(sub, "garbage") == 0) {
        res->status = (enum sesame_plugin_status)77;
    } else if (strcmp(sub, "fail") == 0) {
        return -1;
    } else if (strcmp(sub, "block") == 0) {
        char c;
        if (st->block_fd < 0 || read(st->block_fd, &c, 1) != 1) {
            sesame_plugin_result_error(res, "cannot block");
            return 0;
        }
        sesame_plugin_result_found(res, "acct-block");
    } else {
        sesame_plugin_result_error(res, "unknown test sub");
    }
    return 0;
}

static void
destroy(void *arg)
{
    free(arg);
}

static const struct sesame_plugin plugin = {
    .abi_version = SESAME_PLUGIN_ABI_VERSION,
    .name = "echo",
    .init = init,
    .resolve = resolve,
    .destroy = destroy,
};

SESAME_PLUGIN_EXPORT const struct sesame_plugin *sesame_plugin_entry(void);

SESAME_PLUGIN_EXPORT const struct sesame_plugin *
sesame_plugin_entry(void)
{
    return &plugin;
}
