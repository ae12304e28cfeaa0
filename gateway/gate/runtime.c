#include "gate/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include "core/log.h"
#include "http/canon.h"
#include "http/tls.h"
#include "oidc/provider.h"

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
    sesame_tls_unref(rt->tls);
    free(rt);
}

/* Adds p (NULL: nothing) to the sign-in providers of t, once; sets
 * *overflow when the page could not show it (more than
 * SESAME_PAGE_MAX_PROVIDERS, refused at load). */
static void
add_provider(struct sesame_runtime_tenant *t, const struct sesame_conf_provider *p, bool *overflow)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < t->nproviders; i++)
        if (strcmp(t->providers[i].name, p->name) == 0)
            return;
    if (t->nproviders == SESAME_PAGE_MAX_PROVIDERS) {
        *overflow = true;
        return;
    }
    struct sesame_page_provider *pp = &t->providers[t->nproviders++];
    pp->name = p->name;
    pp->label = NULL;
    pp->brand = sesame_page_provider_brand(p->name, p->issuer);
    pp->scopes = p->scopes; /* what the sign-in page says it transmits */
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

/* bad[i] is set for each provider i whose decryption keys were refused. */
static int
build_jwks(struct sesame_runtime *rt, const struct sesame_conf *conf, bool *bad, char **errors)
{
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    int rc = SESAME_OK;
    char *err = NULL;
    if (conf->server.assertion_key_file) {
        rt->assertion_key = sesame_jose_key_load(conf->server.assertion_key_file, "ES256", &err);
        struct sesame_jose_key *pub =
            rt->assertion_key ? sesame_jose_key_load(conf->server.assertion_key_file, "ES256", &err) : NULL;
        if (pub == NULL || sesame_jose_keyset_add(ks, pub, &err) != SESAME_OK) {
            sesame_err_append(errors, "%s:%d: assertion_key_file: %s", conf->path,
                      sesame_conf_key_line(conf, &conf->server, "assertion_key_file"),
                      err ? err : "unusable key");
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
                sesame_err_append(errors, "%s:%d: decryption_key_files: %s", conf->path,
                          sesame_conf_key_line(conf, p, "decryption_key_files"),
                          err ? err : "unusable key");
                bad[i] = true;
                rc = SESAME_ERROR;
            }
            free(err);
            err = NULL;
        }
    }
    rt->jwks_json = sesame_jose_keyset_export(ks, &err);
    if (rt->jwks_json == NULL) {
        sesame_err_append(errors, "%s: cannot export the public keys: %s", conf->path, err ? err : "?");
        rc = SESAME_ERROR;
    } else {
        rt->jwks_len = strlen(rt->jwks_json);
    }
    free(err);
    sesame_jose_keyset_free(ks);
    return rc;
}

/* A CA bundle is read by libcurl / the upstream TLS context only at the
 * first connection: load it now the same way (X509_STORE_load_locations,
 * what SSL_CTX_load_verify_locations does). Returns NULL when usable, else
 * a static reason. */
static const char *
ca_file_problem(const char *path)
{
    ERR_clear_error();
    X509_STORE *st = X509_STORE_new();
    bool ok = st != NULL && X509_STORE_load_locations(st, path, NULL) == 1;
    X509_STORE_free(st);
    const char *why = NULL;
    if (!ok) {
        unsigned long e = ERR_peek_last_error();
        why = e ? ERR_reason_error_string(e) : NULL;
        if (why == NULL)
            why = "no PEM certificate in it";
    }
    ERR_clear_error();
    return why;
}

static int
check_ca_files(const struct sesame_conf *conf, char **errors)
{
    int rc = SESAME_OK;
    for (size_t i = 0; i < conf->nproviders; i++) {
        const struct sesame_conf_provider *p = conf->providers[i];
        const char *why = p->ca_file ? ca_file_problem(p->ca_file) : NULL;
        if (why) {
            sesame_err_append(errors, "%s:%d: ca_file: [provider %s] %s is not a usable CA bundle (%s)",
                      conf->path, sesame_conf_key_line(conf, p, "ca_file"), p->name, p->ca_file,
                      why);
            rc = SESAME_ERROR;
        }
    }
    for (size_t i = 0; i < conf->nroutes; i++) {
        const struct sesame_conf_route *r = conf->routes[i];
        const char *why = r->upstream.ca_file ? ca_file_problem(r->upstream.ca_file) : NULL;
        if (why) {
            sesame_err_append(errors, "%s:%d: upstream_ca_file: [route %s] %s is not a usable CA bundle (%s)",
                      conf->path, sesame_conf_key_line(conf, r, "upstream_ca_file"), r->name,
                      r->upstream.ca_file, why);
            rc = SESAME_ERROR;
        }
    }
    return rc;
}

/* A route's path must be canonical (http/canon.h): requests are matched on
 * their canonical path, so a prefix like "/a/../b", "//a" or "/%61" could
 * never match what its writer meant. */
static int
check_route_paths(const struct sesame_conf *conf, char **errors)
{
    int rc = SESAME_OK;
    for (size_t i = 0; i < conf->nroutes; i++) {
        const struct sesame_conf_route *r = conf->routes[i];
        char *out = sesame_malloc(r->path_len + 1);
        size_t n;
        const char *why = NULL;
        if (sesame_canon_path(r->path, r->path_len, out, &n, &why) != SESAME_OK) {
            sesame_err_append(errors, "%s:%d: path: [route %s] '%s' is refused as a request path would be (%s)",
                      conf->path, sesame_conf_key_line(conf, r, "path"), r->name, r->path, why);
            rc = SESAME_ERROR;
        } else if (n != r->path_len || memcmp(out, r->path, n) != 0) {
            sesame_err_append(errors, "%s:%d: path: [route %s] '%s' is not canonical: write '%s'", conf->path,
                      sesame_conf_key_line(conf, r, "path"), r->name, r->path, out);
            rc = SESAME_ERROR;
        }
        free(out);
    }
    return rc;
}

/* What the provider runtime (oidc/provider.c) would only find at the first
 * sign-in: the private_key_jwt signing key, then every other check of
 * sesame_provider_registry_get (through sesame_provider_check, the same
 * code), unless a more precise message was given already. */
static int
check_providers(const struct sesame_conf *conf, const bool *bad, char **errors)
{
    int rc = SESAME_OK;
    for (size_t i = 0; i < conf->nproviders; i++) {
        const struct sesame_conf_provider *p = conf->providers[i];
        bool reported = bad[i];
        if (p->token_auth == SESAME_AUTH_PRIVATE_KEY_JWT && p->private_key_file != NULL) {
            /* the client assertion is signed ES256 with an EC key, RS256 with an RSA key */
            char *e1 = NULL, *e2 = NULL;
            struct sesame_jose_key *k = sesame_jose_key_load(p->private_key_file, "ES256", &e1);
            if (k == NULL)
                k = sesame_jose_key_load(p->private_key_file, "RS256", &e2);
            if (k == NULL) {
                sesame_err_append(errors, "%s:%d: private_key_file: [provider %s] cannot sign the client "
                          "assertion of private_key_jwt: %s", conf->path,
                          sesame_conf_key_line(conf, p, "private_key_file"), p->name,
                          e1 ? e1 : "unusable key");
                reported = true;
                rc = SESAME_ERROR;
            }
            sesame_jose_key_free(k);
            free(e1);
            free(e2);
        }
        if (reported)
            continue;
        char *err = NULL;
        if (sesame_provider_check(p, &err) != SESAME_OK) {
            sesame_err_append(errors, "%s:%d: provider: %s", conf->path, p->line, err ? err : "unusable");
            rc = SESAME_ERROR;
        }
        free(err);
    }
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
        sesame_err_append(errors, "%s: templates_dir: %s", conf->path, err ? err : "cannot load the pages");
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
            sesame_err_append(errors, "%s: tenant %s: templates_dir: %s", conf->path, ct->name,
                      err ? err : "cannot load the pages");
            rc = SESAME_ERROR;
        }
        free(err);
        err = NULL;
        if (ct->logo_file) {
            t->logo = sesame_page_logo_load(ct->logo_file, &err);
            if (t->logo == NULL) {
                sesame_err_append(errors, "%s: tenant %s: logo_file: %s", conf->path, ct->name,
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
                sesame_err_append(errors, "%s", err ? err : "cannot load the account plugin");
                rc = SESAME_ERROR;
            }
            free(err);
            err = NULL;
        }
        /* sign-in providers: the default one, the tenant's others, then every
         * provider of every route that signs in */
        bool overflow = false;
        add_provider(t, ct->provider, &overflow);
        for (size_t j = 0; j < ct->nproviders; j++)
            add_provider(t, ct->providers[j], &overflow);
        for (size_t j = 0; j < conf->nroutes; j++) {
            const struct sesame_conf_route *r = conf->routes[j];
            if (r->tenant != ct) {
                /* a territory's sign-in page lists what its communes receive */
                if (ct->is_territory && r->tenant->territory == ct)
                    for (size_t k = 0; k < r->nclaims; k++)
                        add_claim(t, r->claims[k]);
                continue;
            }
            if (r->access != SESAME_ACCESS_PUBLIC) {
                add_provider(t, r->provider, &overflow);
                for (size_t k = 0; k < r->nproviders; k++)
                    add_provider(t, r->providers[k], &overflow);
            }
            for (size_t k = 0; k < r->nclaims; k++)
                add_claim(t, r->claims[k]);
        }
        if (overflow) {
            sesame_err_append(errors, "%s:%d: providers: [tenant %s] its routes sign in with more than %d "
                      "providers, more than its sign-in page can offer",
                      conf->path, sesame_conf_key_line(conf, ct, "providers"), ct->name,
                      SESAME_PAGE_MAX_PROVIDERS);
            rc = SESAME_ERROR;
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
    bool *bad = sesame_calloc(conf->nproviders ? conf->nproviders : 1, sizeof(bool));
    if (build_jwks(rt, conf, bad, errors) != SESAME_OK)
        rc = SESAME_ERROR;
    if (check_providers(conf, bad, errors) != SESAME_OK)
        rc = SESAME_ERROR;
    if (check_ca_files(conf, errors) != SESAME_OK)
        rc = SESAME_ERROR;
    if (check_route_paths(conf, errors) != SESAME_OK)
        rc = SESAME_ERROR;
    bool tls = false;
    for (size_t i = 0; i < conf->server.nlisten; i++)
        tls |= conf->server.listen[i].tls;
    if (tls && (rt->tls = sesame_tls_new(conf, errors)) == NULL)
        rc = SESAME_ERROR;
    free(bad);
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
