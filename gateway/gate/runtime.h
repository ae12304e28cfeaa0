/*
 * runtime.h - everything built once from a valid configuration and shared
 * read-only by the workers: each tenant's pages, logo, theme and account
 * plugin; the assertion signing key; the public JWKS of the gateway.
 *
 * Built by the main thread after sesame_conf_load (also by `sesame -t`, so
 * that a broken template or plugin fails the check) and owned by the
 * configuration (conf->runtime), freed with it.
 *
 * Building it also checks, with OpenSSL and jose, what would otherwise fail
 * only at the first sign-in or request: the private_key_jwt signing key and
 * the decryption keys load, every check of sesame_provider_registry_get
 * passes (sesame_provider_check), the CA bundles (ca_file,
 * upstream_ca_file) hold a certificate, the TLS certificates and keys load
 * and match (and each tenant's covers its hosts).
 */
#ifndef SESAME_GATE_RUNTIME_H
#define SESAME_GATE_RUNTIME_H

#include "account/account.h"
#include "config/config.h"
#include "oidc/jose.h"
#include "pages/page.h"

struct sesame_runtime_tenant {
    const struct sesame_conf_tenant *conf;
    struct sesame_pages *pages;
    struct sesame_page_logo *logo;           /* NULL: none */
    char *theme_css;                         /* the tenant's theme stylesheet */
    size_t theme_len;
    struct sesame_account *accounts;         /* NULL: the provider's sub is the account */
    /* sign-in page: the tenant's providers (its default one, its
     * `providers`, and every provider of each of its routes that sign in),
     * FranceConnect first */
    struct sesame_page_provider providers[SESAME_PAGE_MAX_PROVIDERS];
    size_t nproviders;
    const char *claims[SESAME_PAGE_MAX_CLAIMS]; /* claim names released to its routes */
    size_t nclaims;
};

struct sesame_runtime {
    struct sesame_runtime_tenant *tenants;   /* same order as conf->tenants */
    size_t ntenants;
    struct sesame_pages *pages;              /* platform pages (unknown host) */
    struct sesame_jose_key *assertion_key;   /* NULL: none */
    char *jwks_json;                         /* public keys published at <prefix>jwks.json */
    size_t jwks_len;
    struct sesame_tls *tls;                  /* certificates of the tls listeners (http/tls.h),
                                                NULL: no tls listener */
};

/* Builds the runtime of conf and attaches it (conf->runtime). On failure
 * returns SESAME_ERROR and appends to *errors one line per problem,
 * "FILE:LINE: key: message" where possible. */
int sesame_runtime_attach(struct sesame_conf *conf, char **errors);

static inline const struct sesame_runtime *
sesame_runtime_of(const struct sesame_conf *conf)
{
    return (const struct sesame_runtime *)conf->runtime;
}

/* The runtime of a tenant of conf (never NULL for a tenant of conf). */
const struct sesame_runtime_tenant *sesame_runtime_tenant(const struct sesame_conf *conf,
                                                          const struct sesame_conf_tenant *t);

#endif
