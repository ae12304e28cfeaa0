/*
 * plugin_driver - loads an account plugin the way the daemon does (dlopen,
 * ABI check, init) and resolves one identity on the worker pool, for the
 * Python integration tests (tests/integration/test_plugins_*.py).
 *
 *   plugin_driver PLUGIN [-o KEY=VALUE]... -t TENANT -p PROVIDER -s SUB
 *                 [-c CLAIM=VALUE]... [-w TIMEOUT_MS]
 *
 * Prints one JSON object on stdout and exits 0:
 *   {"status": "found", "account_id": "...", "attributes": {...}}
 *   {"status": "none", "reason": "deny" | "link_only"}
 *   {"status": "error", "error": "..."}
 * Exits 2 with the loader's message on stderr when the plugin does not load
 * (the pretend file is "driver.conf", section line 1, option N on line N + 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/thread.h>
#include <jansson.h>

#include "account/account.h"
#include "core/log.h"

#define MAX_ITEMS 64

static void
on_resolved(const struct sesame_plugin_result *res, void *arg)
{
    json_t **out = arg;
    switch (res->status) {
    case SESAME_PLUGIN_RESULT_FOUND: {
        json_t *attrs = json_object();
        for (size_t i = 0; i < res->nattributes; i++)
            json_object_set_new(attrs, res->attributes[i].name,
                                json_string(res->attributes[i].value));
        *out = json_pack("{s:s, s:s, s:o}", "status", "found", "account_id", res->account_id,
                         "attributes", attrs);
        break;
    }
    case SESAME_PLUGIN_RESULT_NONE:
        *out = json_pack("{s:s, s:s}", "status", "none", "reason",
                         res->reason == SESAME_PLUGIN_REASON_LINK_ONLY ? "link_only" : "deny");
        break;
    default:
        *out = json_pack("{s:s, s:s}", "status", "error", "error", res->error);
        break;
    }
}

static int
split(char *arg, char **key, char **value)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL)
        return -1;
    *eq = '\0';
    *key = arg;
    *value = eq + 1;
    return 0;
}

int
main(int argc, char **argv)
{
    evthread_use_pthreads();
    if (argc < 2) {
        fprintf(stderr, "usage: plugin_driver PLUGIN [-o K=V]... -t T -p P -s SUB [-c K=V]... "
                        "[-w MS]\n");
        return 2;
    }
    const char *plugin = argv[1];
    struct sesame_conf_kv opts[MAX_ITEMS];
    struct sesame_plugin_kv claims[MAX_ITEMS];
    size_t nopts = 0, nclaims = 0;
    const char *tenant = NULL, *provider = NULL, *sub = NULL;
    unsigned long timeout_ms = 10000;
    int ch;
    optind = 2;
    while ((ch = getopt(argc, argv, "o:t:p:s:c:w:")) != -1) {
        char *k, *v;
        switch (ch) {
        case 'o':
            if (nopts == MAX_ITEMS || split(optarg, &k, &v) != 0)
                return 2;
            /* option i is "on line i + 2" of a pretend file */
            opts[nopts] = (struct sesame_conf_kv){k, v, (int)nopts + 2};
            nopts++;
            break;
        case 'c':
            if (nclaims == MAX_ITEMS || split(optarg, &k, &v) != 0)
                return 2;
            claims[nclaims++] = (struct sesame_plugin_kv){k, v};
            break;
        case 't': tenant = optarg; break;
        case 'p': provider = optarg; break;
        case 's': sub = optarg; break;
        case 'w': timeout_ms = strtoul(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    sesame_log_open("stderr", "off", SESAME_LOG_DEBUG, NULL);
    struct sesame_conf_accounts conf = {.name = "driver", .plugin = (char *)plugin,
                                        .options = opts, .noptions = nopts, .line = 1};
    char *err = NULL;
    struct sesame_account *acct = sesame_account_load("driver.conf", &conf, NULL, &err);
    if (acct == NULL) {
        fprintf(stderr, "%s\n", err);
        free(err);
        return 2;
    }
    struct event_base *base = event_base_new();
    struct sesame_pool *pool = sesame_pool_new(2, 8, &err);
    json_t *out = NULL;
    struct sesame_plugin_identity id = {tenant, provider, sub, claims, nclaims};
    if (sesame_account_resolve_async(acct, pool, base, &id, timeout_ms, on_resolved, &out, NULL,
                                     &err) != SESAME_AGAIN) {
        out = json_pack("{s:s, s:s}", "status", "error", "error", err);
        free(err);
    } else {
        event_base_dispatch(base);
    }
    char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    sesame_account_unref(acct);
    sesame_pool_free(pool);
    event_base_free(base);
    return 0;
}
