#include "http/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "http/dispatch.h"
#include "http/ocsp.h"
#include "http/server.h"

struct tls_cert {
    SSL_CTX *ctx;
    struct sesame_ocsp *ocsp;     /* NULL: no stapling */
    char *cert_path;              /* as configured, to share one context between tenants */
    char *key_path;
};

struct tls_host {
    char *name;                   /* lower-case */
    size_t cert;                  /* index in certs */
};

struct sesame_tls {
    atomic_int refs;
    struct tls_cert *certs;       /* certs[0]: [server]'s, the default */
    size_t ncerts;
    struct tls_host *hosts;       /* the hosts of tenants with their own certificate */
    size_t nhosts;
};

static int ssl_index = -1;
static pthread_once_t ssl_index_once = PTHREAD_ONCE_INIT;

static void
ssl_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    sesame_tls_unref(ptr);
}

static void
ssl_index_init(void)
{
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, ssl_free_cb);
}

static const char *
openssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unusable";
}

/* SNI: the context of the tenant whose host the client names. */
static int
servername_cb(SSL *ssl, int *alert, void *arg)
{
    const struct sesame_tls *t = SSL_get_ex_data(ssl, ssl_index);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (t == NULL || name == NULL)
        return SSL_TLSEXT_ERR_OK;
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.')
        n--;
    for (size_t i = 0; i < t->nhosts; i++) {
        const struct tls_host *h = &t->hosts[i];
        if (strlen(h->name) == n && strncasecmp(h->name, name, n) == 0) {
            SSL_set_SSL_CTX(ssl, t->certs[h->cert].ctx);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* A server context for one certificate chain and key. On failure returns
 * NULL, *key names the configuration key at fault and *why says why. */
static SSL_CTX *
context_new(const char *cert, const char *keyfile, const char **key, char **why)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        *key = "tls_certificate";
        *why = sesame_strdup("cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1");
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sesame", 6);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        *key = "tls_certificate";
        *why = sesame_asprintf("cannot use the certificate %s (%s)", cert, openssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1) {
        *key = "tls_certificate_key";
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            *why = sesame_asprintf("the key %s does not match the certificate %s", keyfile, cert);
        else
            *why = sesame_asprintf("cannot use the key %s (%s)", keyfile, openssl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *key = "tls_certificate_key";
        *why = sesame_asprintf("the key %s does not match the certificate %s", keyfile, cert);
        goto fail;
    }
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* Index of the context for (cert, keyfile) in t, built if needed; -1 on
 * failure (reported). `owner` is the configuration section of the keys. */
static long
cert_index(struct sesame_tls *t, const struct sesame_conf *conf, const void *owner,
           const char *what, const char *cert, const char *keyfile, bool ocsp, char **errors)
{
    for (size_t i = 0; i < t->ncerts; i++)
        if (strcmp(t->certs[i].cert_path, cert) == 0 && strcmp(t->certs[i].key_path, keyfile) == 0)
            return (long)i;
    const char *key = NULL;
    char *why = NULL;
    SSL_CTX *ctx = context_new(cert, keyfile, &key, &why);
    if (ctx == NULL) {
        sesame_err_append(errors, "%s:%d: %s: %s%s", conf->path, sesame_conf_key_line(conf, owner, key), key,
                  what, why);
        free(why);
        return -1;
    }
    t->certs = sesame_realloc(t->certs, (t->ncerts + 1) * sizeof(*t->certs));
    struct tls_cert *c = &t->certs[t->ncerts];
    c->ctx = ctx;
    c->ocsp = ocsp ? sesame_ocsp_attach(ctx) : NULL;
    c->cert_path = sesame_strdup(cert);
    c->key_path = sesame_strdup(keyfile);
    return (long)t->ncerts++;
}

struct sesame_tls *
sesame_tls_new(const struct sesame_conf *conf, char **errors)
{
    pthread_once(&ssl_index_once, ssl_index_init);
    struct sesame_tls *t = sesame_calloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    bool ok = ssl_index >= 0;
    bool ocsp = conf->server.ocsp_stapling;
    if (conf->server.tls_certificate == NULL || conf->server.tls_certificate_key == NULL ||
        cert_index(t, conf, &conf->server, "", conf->server.tls_certificate,
                   conf->server.tls_certificate_key, ocsp, errors) != 0)
        ok = false; /* a missing [server] certificate is reported by the loader */
    for (size_t i = 0; i < conf->ntenants; i++) {
        const struct sesame_conf_tenant *ct = conf->tenants[i];
        if (ct->tls_certificate == NULL || ct->tls_certificate_key == NULL)
            continue;
        char what[128];
        snprintf(what, sizeof(what), "[tenant %s] ", ct->name);
        long idx = cert_index(t, conf, ct, what, ct->tls_certificate, ct->tls_certificate_key, ocsp,
                              errors);
        if (idx < 0) {
            ok = false;
            continue;
        }
        X509 *leaf = SSL_CTX_get0_certificate(t->certs[idx].ctx);
        for (size_t j = 0; j < ct->nhosts; j++) {
            if (X509_check_host(leaf, ct->hosts[j], strlen(ct->hosts[j]), 0, NULL) != 1) {
                sesame_err_append(errors, "%s:%d: tls_certificate: [tenant %s] the certificate %s is not "
                          "valid for the host %s", conf->path,
                          sesame_conf_key_line(conf, ct, "tls_certificate"), ct->name,
                          ct->tls_certificate, ct->hosts[j]);
                ok = false;
                continue;
            }
            t->hosts = sesame_realloc(t->hosts, (t->nhosts + 1) * sizeof(*t->hosts));
            t->hosts[t->nhosts].name = sesame_strdup(ct->hosts[j]);
            t->hosts[t->nhosts].cert = (size_t)idx;
            t->nhosts++;
        }
    }
    ERR_clear_error();
    if (!ok) {
        sesame_tls_unref(t);
        return NULL;
    }
    return t;
}

struct sesame_tls *
sesame_tls_ref(struct sesame_tls *t)
{
    if (t)
        atomic_fetch_add(&t->refs, 1);
    return t;
}

void
sesame_tls_unref(struct sesame_tls *t)
{
    if (t == NULL || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    for (size_t i = 0; i < t->ncerts; i++) {
        SSL_CTX_free(t->certs[i].ctx);
        sesame_ocsp_unref(t->certs[i].ocsp);
        free(t->certs[i].cert_path);
        free(t->certs[i].key_path);
    }
    free(t->certs);
    for (size_t i = 0; i < t->nhosts; i++)
        free(t->hosts[i].name);
    free(t->hosts);
    free(t);
}

SSL *
sesame_tls_ssl_new(struct sesame_tls *t)
{
    if (t == NULL || t->ncerts == 0)
        return NULL;
    SSL *ssl = SSL_new(t->certs[0].ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_ex_data(ssl, ssl_index, sesame_tls_ref(t)) != 1) {
        sesame_tls_unref(t);
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* ------------------------------------------------------------------------
 * HSTS
 */

const char *
sesame_tls_hsts(const struct sesame_req *req)
{
    if (!req->tls)
        return NULL;
    const struct sesame_conf_tenant *t = req->tenant;
    if (t != NULL && t->hsts_off)
        return NULL;
    return t != NULL && t->hsts != NULL ? t->hsts : SESAME_CONF_HSTS_DEFAULT;
}

/* ------------------------------------------------------------------------
 * Redirect listener
 */

/* The port of https:// URLs for tenant t (see tls.h); 443 when none. */
static int
https_port(const struct sesame_conf *conf, const struct sesame_conf_tenant *t)
{
    if (t->public_url != NULL && strncmp(t->public_url, "https://", 8) == 0) {
        const char *h = t->public_url + 8;
        if (*h == '[')
            h += strcspn(h, "]");
        const char *colon = strchr(h, ':');
        return colon ? (int)strtol(colon + 1, NULL, 10) : 443;
    }
    for (size_t i = 0; i < conf->server.nlisten; i++) {
        const struct sesame_listen *l = &conf->server.listen[i];
        if (!l->tls)
            continue;
        if (l->addr.ss_family == AF_INET)
            return ntohs(((const struct sockaddr_in *)&l->addr)->sin_port);
        if (l->addr.ss_family == AF_INET6)
            return ntohs(((const struct sockaddr_in6 *)&l->addr)->sin6_port);
    }
    return 443;
}

static bool
is_health(const struct sesame_req *req)
{
    const char *prefix = req->conf->server.prefix;
    size_t pl = strlen(prefix);
    return req->canon.path_len == pl + 6 && memcmp(req->canon.path, prefix, pl) == 0 &&
           memcmp(req->canon.path + pl, "health", 6) == 0;
}

void
sesame_tls_redirect(struct sesame_req *req)
{
    const struct sesame_http_request *m = &req->msg;
    const struct sesame_canon_req *c = &req->canon;
    if (m->method == SESAME_HTTP_CONNECT || m->method == SESAME_HTTP_TRACE || m->asterisk_form ||
        m->path == NULL) {
        sesame_server_respond_error(req, 405, NULL);
        return;
    }
    if (m->host == NULL || c->authority_len == 0) {
        sesame_server_respond_error(req, 400, NULL);
        return;
    }
    req->tenant = sesame_conf_find_tenant(req->conf, c->authority, c->host_len);
    if (req->tenant == NULL) {
        sesame_server_respond_error(req, 404, NULL);
        return;
    }
    if (is_health(req)) {
        sesame_dispatch_request(req);
        return;
    }
    int port = https_port(req->conf, req->tenant);
    char portbuf[16] = "";
    if (port != 443)
        snprintf(portbuf, sizeof(portbuf), ":%d", port);
    char *location = sesame_asprintf("https://%.*s%s%.*s%s%.*s", (int)c->host_len, c->authority,
                                     portbuf, (int)c->path_len, c->path, m->query ? "?" : "",
                                     m->query ? (int)m->query_len : 0, m->query ? m->query : "");
    bool get = m->method == SESAME_HTTP_GET || m->method == SESAME_HTTP_HEAD;
    sesame_server_redirect(req, get ? 301 : 308, location);
    free(location);
}
