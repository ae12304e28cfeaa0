#include "gate/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/log.h"

static void
add_error(char **errors, const char *fmt, ...) SESAME_PRINTF(2, 3);

static void
add_error(char **errors, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    size_t old = *errors ? strlen(*errors) : 0, n = strlen(line);
    *errors = sesame_realloc(*errors, old + n + 2);
    memcpy(*errors + old, line, n);
    (*errors)[old + n] = '\n';
    (*errors)[old + n + 1] = '\0';
}

static void
runtime_free(void *arg)
{
    struct sesame_runtime *rt = arg;
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->ntenants; i++) {
        struct sesame_runtime_tenant *t = &rt->tenants[i];
        sesame_pages_free(t->pages);
        sesame_page_logo_free(t->logo);
        free(t->theme_css);
        sesame_account_unref(t->accounts);
    }
    free(rt->tenants);
    sesame_pages_free(rt->pages);
    sesame_jose_key_free(rt->assertion_key);
    free(rt->jwks_json);
    free(rt);
}

static void
add_provider(struct sesame_runtime_tenant *t, const struct sesame_conf_provider *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < t->nproviders; i++)
        if (strcmp(t->providers[i].name, p->name) == 0)
            return;
    if (t->nproviders == SESAME_PAGE_MAX_PROVIDERS)
        return;
    struct sesame_page_provider *pp = &t->providers[t->nproviders++];
    pp->name = p->name;
    pp->label = NULL;
    pp->brand = sesame_page_provider_brand(p->name, p->issuer);
}

static void
add_claim(struct sesame_runtime_tenant *t, const char *claim)
{
    for (size_t i = 0; i < t->nclaims; i++)
        if (strcmp(t->claims[i], claim) == 0)
            return;
    if (t->nclaims < SESAME_PAGE_MAX_CLAIMS)
        t->claims[t->nclaims++] = claim;
}

/* Account plugins named by short name live in server.plugin_dir, unless
 * SESAME_PLUGIN_DIR says otherwise (build tree, tests). */
static struct sesame_account *
load_accounts(const struct sesame_conf *conf, const struct sesame_conf_accounts *a, char **err)
{
    struct sesame_conf_accounts copy = *a;
    char *path = NULL;
    if (a->plugin[0] != '/' && getenv("SESAME_PLUGIN_DIR") == NULL) {
        path = sesame_asprintf("%s/sesame_%s.so", conf->server.plugin_dir, a->plugin);
        copy.plugin = path;
    }
    struct sesame_account *acct = sesame_account_load(conf->path, &copy, NULL, err);
    free(path);
    return acct;
}

static int
build_jwks(struct sesame_runtime *rt, const struct sesame_conf *conf, char **errors)
{
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    int rc = SESAME_OK;
    char *err = NULL;
    if (conf->server.assertion_key_file) {
        rt->assertion_key = sesame_jose_key_load(conf->server.assertion_key_file, "ES256", &err);
        struct sesame_jose_key *pub =
            rt->assertion_key ? sesame_jose_key_load(conf->server.assertion_key_file, "ES256", &err) : NULL;
        if (pub == NULL || sesame_jose_keyset_add(ks, pub, &err) != SESAME_OK) {
            add_error(errors, "%s: assertion_key_file: %s", conf->path, err ? err : "unusable key");
            rc = SESAME_ERROR;
        }
        free(err);
        err = NULL;
    }
    for (size_t i = 0; i < conf->nproviders; i++) {
        const struct sesame_conf_provider *p = conf->providers[i];
        for (size_t j = 0; j < p->ndecryption_key_files; j++) {
            struct sesame_jose_key *k = sesame_jose_key_load(p->decryption_key_files[j], NULL, &err);
            if (k == NULL || sesame_jose_keyset_add(ks, k, &err) != SESAME_OK) {
                add_error(errors, "%s:%d: decryption_key_files: %s", conf->path, p->line,
                          err ? err : "unusable key");
                rc = SESAME_ERROR;
            }
            free(err);
            err = NULL;
        }
    }
    rt->jwks_json = sesame_jose_keyset_export(ks, &err);
    if (rt->jwks_json == NULL) {
        add_error(errors, "%s: cannot export the public keys: %s", conf->path, err ? err : "?");
        rc = SESAME_ERROR;
    } else {
        rt->jwks_len = strlen(rt->jwks_json);
    }
    free(err);
    sesame_jose_keyset_free(ks);
    return rc;
}

int
sesame_runtime_attach(struct sesame_conf *conf, char **errors)
{
    struct sesame_runtime *rt = sesame_calloc(1, sizeof(*rt));
    int rc = SESAME_OK;
    char *err = NULL;
    rt->pages = sesame_pages_load(conf->server.templates_dir, NULL, &err);
    if (rt->pages == NULL) {
        add_error(errors, "%s: templates_dir: %s", conf->path, err ? err : "cannot load the pages");
        rc = SESAME_ERROR;
    }
    free(err);
    err = NULL;
    rt->ntenants = conf->ntenants;
    rt->tenants = sesame_calloc(conf->ntenants ? conf->ntenants : 1, sizeof(*rt->tenants));
    for (size_t i = 0; i < conf->ntenants; i++) {
        const struct sesame_conf_tenant *ct = conf->tenants[i];
        struct sesame_runtime_tenant *t = &rt->tenants[i];
        t->conf = ct;
        t->pages = sesame_pages_load(conf->server.templates_dir, ct->templates_dir, &err);
        if (t->pages == NULL) {
            add_error(errors, "%s: tenant %s: templates_dir: %s", conf->path, ct->name,
                      err ? err : "cannot load the pages");
            rc = SESAME_ERROR;
        }
        free(err);
        err = NULL;
        if (ct->logo_file) {
            t->logo = sesame_page_logo_load(ct->logo_file, &err);
            if (t->logo == NULL) {
                add_error(errors, "%s: tenant %s: logo_file: %s", conf->path, ct->name,
                          err ? err : "unusable logo");
                rc = SESAME_ERROR;
            }
            free(err);
            err = NULL;
        }
        struct evbuffer *css = evbuffer_new();
        if (sesame_page_theme_css(ct->accent_color, css) == SESAME_OK) {
            t->theme_len = evbuffer_get_length(css);
            t->theme_css = sesame_malloc(t->theme_len + 1);
            evbuffer_remove(css, t->theme_css, t->theme_len);
            t->theme_css[t->theme_len] = '\0';
        }
        evbuffer_free(css);
        if (ct->accounts) {
            t->accounts = load_accounts(conf, ct->accounts, &err);
            if (t->accounts == NULL) {
                add_error(errors, "%s", err ? err : "cannot load the account plugin");
                rc = SESAME_ERROR;
            }
            free(err);
            err = NULL;
        }
        add_provider(t, ct->provider);
        for (size_t j = 0; j < conf->nroutes; j++) {
            const struct sesame_conf_route *r = conf->routes[j];
            if (r->tenant != ct)
                continue;
            if (r->access != SESAME_ACCESS_PUBLIC)
                add_provider(t, r->provider);
            for (size_t k = 0; k < r->nclaims; k++)
                add_claim(t, r->claims[k]);
        }
        /* FranceConnect first, as its guidelines ask */
        for (size_t j = 1; j < t->nproviders; j++) {
            if (t->providers[j].brand == SESAME_PAGE_BRAND_FRANCECONNECT) {
                struct sesame_page_provider tmp = t->providers[0];
                t->providers[0] = t->providers[j];
                t->providers[j] = tmp;
                break;
            }
        }
    }
    if (build_jwks(rt, conf, errors) != SESAME_OK)
        rc = SESAME_ERROR;
    if (rc != SESAME_OK) {
        runtime_free(rt);
        return SESAME_ERROR;
    }
    conf->runtime = rt;
    conf->runtime_free = runtime_free;
    return SESAME_OK;
}

const struct sesame_runtime_tenant *
sesame_runtime_tenant(const struct sesame_conf *conf, const struct sesame_conf_tenant *t)
{
    const struct sesame_runtime *rt = sesame_runtime_of(conf);
    for (size_t i = 0; i < rt->ntenants; i++)
        if (rt->tenants[i].conf == t)
            return &rt->tenants[i];
    return NULL;
}
