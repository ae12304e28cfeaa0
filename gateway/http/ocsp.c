#include "http/ocsp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "core/common.h"
#include "core/log.h"

#define OCSP_FETCH_TIMEOUT_MS 10000
#define OCSP_CONNECT_TIMEOUT_MS 5000
#define OCSP_MAX_RESPONSE (64 * 1024)
#define OCSP_REFRESH_MAX 3600         /* seconds between two fetches at most */
#define OCSP_REFRESH_MIN 60           /* ... and at least, after a success */
#define OCSP_RETRY_MIN 30             /* first retry after a failure, doubled up to: */
#define OCSP_RETRY_MAX 600
#define OCSP_NO_NEXT_UPDATE 3600      /* lifetime of a response without nextUpdate */
#define OCSP_CLOCK_LEEWAY 300         /* seconds of clock skew accepted on thisUpdate */

struct sesame_ocsp {
    int refs;                     /* under reg_lock */
    unsigned char hash[32];       /* SHA-256 of the certificate: the registry key */
    char *url;                    /* the responder */
    char *subject;                /* the certificate's subject, for messages */
    X509 *issuer;
    OCSP_CERTID *id;
    /* The cached response, read by handshakes on every worker. */
    pthread_mutex_t lock;
    unsigned char *der;           /* NULL: none */
    int der_len;
    time_t expires;               /* not stapled from then on */
    /* The fetcher's schedule, under reg_lock. */
    time_t next_fetch;
    int failures;                 /* consecutive */
    struct sesame_ocsp *next;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cond = PTHREAD_COND_INITIALIZER;
static struct sesame_ocsp *entries;
static int holders;
static bool thread_running;
static pthread_t fetcher;
static atomic_bool stopping;

/* ------------------------------------------------------------------------
 * Handshakes
 */

static int
status_cb(SSL *ssl, void *arg)
{
    struct sesame_ocsp *o = arg;
    unsigned char *copy = NULL;
    int len = 0;
    pthread_mutex_lock(&o->lock);
    if (o->der != NULL && time(NULL) < o->expires) {
        copy = OPENSSL_memdup(o->der, (size_t)o->der_len);
        len = o->der_len;
    }
    pthread_mutex_unlock(&o->lock);
    if (copy == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    SSL_set_tlsext_status_ocsp_resp(ssl, copy, len); /* takes copy */
    return SSL_TLSEXT_ERR_OK;
}

/* ------------------------------------------------------------------------
 * Registry
 */

static void
entry_free(struct sesame_ocsp *o)
{
    OCSP_CERTID_free(o->id);
    X509_free(o->issuer);
    free(o->url);
    free(o->subject);
    OPENSSL_free(o->der);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

/* The first http:// or https:// OCSP responder named by cert, or NULL. */
static char *
responder_url(X509 *cert)
{
    STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(cert);
    char *url = NULL;
    for (int i = 0; urls != NULL && i < sk_OPENSSL_STRING_num(urls) && url == NULL; i++) {
        const char *u = sk_OPENSSL_STRING_value(urls, i);
        if (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0)
            url = sesame_strdup(u);
    }
    X509_email_free(urls);
    return url;
}

struct sesame_ocsp *
sesame_ocsp_attach(SSL_CTX *ctx)
{
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (leaf == NULL)
        return NULL;
    char *url = responder_url(leaf);
    if (url == NULL)
        return NULL;
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(ctx, &chain);
    X509 *issuer = NULL;
    for (int i = 0; chain != NULL && i < sk_X509_num(chain) && issuer == NULL; i++)
        if (X509_check_issued(sk_X509_value(chain, i), leaf) == X509_V_OK)
            issuer = sk_X509_value(chain, i);
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof(subject));
    if (issuer == NULL) {
        sesame_log_debug("OCSP: %s: the issuer certificate is not in the chain file, no stapling",
                         subject);
        free(url);
        return NULL;
    }
    unsigned char hash[32];
    unsigned int hl = 0;
    if (X509_digest(leaf, EVP_sha256(), hash, &hl) != 1 || hl != sizeof(hash)) {
        free(url);
        ERR_clear_error();
        return NULL;
    }
    pthread_mutex_lock(&reg_lock);
    struct sesame_ocsp *o = entries;
    while (o != NULL && (memcmp(o->hash, hash, sizeof(hash)) != 0 || strcmp(o->url, url) != 0))
        o = o->next;
    if (o != NULL) {
        o->refs++;
        free(url);
    } else {
        OCSP_CERTID *id = OCSP_cert_to_id(NULL, leaf, issuer);
        if (id == NULL) {
            pthread_mutex_unlock(&reg_lock);
            free(url);
            ERR_clear_error();
            return NULL;
        }
        o = sesame_calloc(1, sizeof(*o));
        o->refs = 1;
        memcpy(o->hash, hash, sizeof(hash));
        o->url = url;
        o->subject = sesame_strdup(subject);
        X509_up_ref(issuer);
        o->issuer = issuer;
        o->id = id;
        pthread_mutex_init(&o->lock, NULL);
        o->next = entries;
        entries = o;
        pthread_cond_broadcast(&reg_cond); /* a new certificate: fetch now */
    }
    pthread_mutex_unlock(&reg_lock);
    SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, o);
    return o;
}

void
sesame_ocsp_unref(struct sesame_ocsp *o)
{
    if (o == NULL)
        return;
    pthread_mutex_lock(&reg_lock);
    if (--o->refs > 0) {
        pthread_mutex_unlock(&reg_lock);
        return;
    }
    struct sesame_ocsp **pp = &entries;
    while (*pp != NULL && *pp != o)
        pp = &(*pp)->next;
    if (*pp == o)
        *pp = o->next;
    pthread_mutex_unlock(&reg_lock);
    entry_free(o);
}

/* ------------------------------------------------------------------------
 * Fetching (the fetcher thread only)
 */

struct body {
    unsigned char *p;
    size_t n;
    bool too_big;
};

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb;
    if (b->n + n > OCSP_MAX_RESPONSE) {
        b->too_big = true;
        return 0;
    }
    b->p = sesame_realloc(b->p, b->n + n);
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return n;
}

static int
progress_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    return atomic_load(&stopping) ? 1 : 0; /* abort the transfer at shutdown */
}

/* POSTs the DER request to the responder; the response body in *b. */
static int
post(const char *url, const unsigned char *req, int reqlen, struct body *b, char **why)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return sesame_err_set(why, "cannot initialise libcurl");
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/ocsp-request");
    hdrs = curl_slist_append(hdrs, "Accept: application/ocsp-response");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)reqlen);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)OCSP_FETCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)OCSP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (b->too_big)
        return sesame_err_set(why, "the response is larger than %d bytes", OCSP_MAX_RESPONSE);
    if (rc != CURLE_OK)
        return sesame_err_set(why, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    if (code != 200)
        return sesame_err_set(why, "the responder answered HTTP %ld", code);
    return SESAME_OK;
}

static time_t
asn1_time(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* Fetches and verifies the response for o. On success *der (OPENSSL_malloc)
 * holds it and *expires its end of validity. */
static int
fetch(struct sesame_ocsp *o, time_t now, unsigned char **der, int *der_len, time_t *expires,
      char **why)
{
    int rc = SESAME_ERROR;
    struct body b = {0};
    unsigned char *reqder = NULL;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    X509_STORE *store = NULL;
    STACK_OF(X509) *certs = NULL;
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = OCSP_CERTID_dup(o->id);
    if (req == NULL || id == NULL || OCSP_request_add0_id(req, id) == NULL) {
        OCSP_CERTID_free(id);
        sesame_err_set(why, "cannot build the request");
        goto out;
    }
    int reqlen = i2d_OCSP_REQUEST(req, &reqder);
    if (reqlen <= 0) {
        sesame_err_set(why, "cannot encode the request");
        goto out;
    }
    if (post(o->url, reqder, reqlen, &b, why) != SESAME_OK)
        goto out;
    const unsigned char *p = b.p;
    resp = d2i_OCSP_RESPONSE(NULL, &p, (long)b.n);
    if (resp == NULL) {
        sesame_err_set(why, "the answer is not an OCSP response");
        goto out;
    }
    int st = OCSP_response_status(resp);
    if (st != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        sesame_err_set(why, "the responder answered %s", OCSP_response_status_str(st));
        goto out;
    }
    bs = OCSP_response_get1_basic(resp);
    store = X509_STORE_new();
    certs = sk_X509_new_null();
    if (bs == NULL || store == NULL || certs == NULL || X509_STORE_add_cert(store, o->issuer) != 1 ||
        sk_X509_push(certs, o->issuer) <= 0) {
        sesame_err_set(why, "cannot read the response");
        goto out;
    }
    /* the issuer is the trust anchor, even when it is an intermediate */
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    if (OCSP_basic_verify(bs, certs, store, 0) != 1) {
        unsigned long e = ERR_peek_last_error();
        sesame_err_set(why, "the response is not signed by the issuer or its responder (%s)",
                       e ? ERR_reason_error_string(e) : "?");
        goto out;
    }
    int status = 0, reason = 0;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    if (OCSP_resp_find_status(bs, o->id, &status, &reason, &rev, &thisupd, &nextupd) != 1) {
        sesame_err_set(why, "the response says nothing of this certificate");
        goto out;
    }
    if (status != V_OCSP_CERTSTATUS_GOOD) {
        sesame_err_set(why, "the certificate's status is %s", OCSP_cert_status_str(status));
        goto out;
    }
    if (OCSP_check_validity(thisupd, nextupd, OCSP_CLOCK_LEEWAY, -1) != 1) {
        sesame_err_set(why, "the response is not valid now (thisUpdate/nextUpdate)");
        goto out;
    }
    *expires = nextupd ? asn1_time(nextupd) : now + OCSP_NO_NEXT_UPDATE;
    *der = NULL;
    *der_len = i2d_OCSP_RESPONSE(resp, der);
    if (*der_len <= 0 || *expires <= now) {
        OPENSSL_free(*der);
        *der = NULL;
        sesame_err_set(why, "cannot keep the response");
        goto out;
    }
    rc = SESAME_OK;
out:
    ERR_clear_error();
    sk_X509_free(certs);
    X509_STORE_free(store);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    OPENSSL_free(reqder);
    OCSP_REQUEST_free(req);
    free(b.p);
    return rc;
}

static void
refresh(struct sesame_ocsp *o)
{
    time_t now = time(NULL);
    unsigned char *der = NULL;
    int len = 0;
    time_t expires = 0;
    char *why = NULL;
    int rc = fetch(o, now, &der, &len, &expires, &why);
    if (atomic_load(&stopping)) {
        OPENSSL_free(der);
        free(why);
        return;
    }
    pthread_mutex_lock(&reg_lock);
    int failures = o->failures;
    if (rc == SESAME_OK) {
        time_t half = (expires - now) / 2;
        o->next_fetch = now + (half > OCSP_REFRESH_MAX   ? OCSP_REFRESH_MAX
                               : half < OCSP_REFRESH_MIN ? OCSP_REFRESH_MIN
                                                         : half);
        o->failures = 0;
    } else {
        int delay = OCSP_RETRY_MIN;
        for (int i = 0; i < failures && delay < OCSP_RETRY_MAX; i++)
            delay *= 2;
        o->next_fetch = now + (delay > OCSP_RETRY_MAX ? OCSP_RETRY_MAX : delay);
        o->failures++;
    }
    pthread_mutex_unlock(&reg_lock);

    pthread_mutex_lock(&o->lock);
    bool had = o->der != NULL && now < o->expires;
    if (rc == SESAME_OK) {
        OPENSSL_free(o->der);
        o->der = der;
        o->der_len = len;
        o->expires = expires;
    }
    pthread_mutex_unlock(&o->lock);

    if (rc == SESAME_OK) {
        char until[32];
        struct tm tm;
        gmtime_r(&expires, &tm);
        strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (failures > 0 || !had)
            sesame_log_info("OCSP: stapling the response for %s from %s (valid until %s)",
                            o->subject, o->url, until);
        else
            sesame_log_debug("OCSP: response for %s refreshed (valid until %s)", o->subject, until);
    } else if (failures == 0) {
        sesame_log_warn("OCSP: cannot fetch the response for %s from %s: %s (%s; retrying)",
                        o->subject, o->url, why, had ? "the last response stays stapled until it "
                                                       "expires" : "no staple meanwhile");
    } else {
        sesame_log_debug("OCSP: still cannot fetch the response for %s from %s: %s", o->subject,
                         o->url, why);
    }
    free(why);
}

static void *
fetcher_main(void *arg)
{
    pthread_mutex_lock(&reg_lock);
    while (!atomic_load(&stopping)) {
        time_t now = time(NULL), next = now + OCSP_REFRESH_MAX;
        struct sesame_ocsp *due = NULL;
        for (struct sesame_ocsp *o = entries; o != NULL && due == NULL; o = o->next) {
            if (o->next_fetch <= now)
                due = o;
            else if (o->next_fetch < next)
                next = o->next_fetch;
        }
        if (due != NULL) {
            due->refs++; /* kept while fetching, even if its configuration goes */
            pthread_mutex_unlock(&reg_lock);
            refresh(due);
            sesame_ocsp_unref(due);
            pthread_mutex_lock(&reg_lock);
            continue;
        }
        struct timespec ts = {.tv_sec = next, .tv_nsec = 0};
        pthread_cond_timedwait(&reg_cond, &reg_lock, &ts);
    }
    pthread_mutex_unlock(&reg_lock);
    return NULL;
}

void
sesame_ocsp_start(void)
{
    pthread_mutex_lock(&reg_lock);
    bool first = holders++ == 0;
    pthread_mutex_unlock(&reg_lock);
    if (!first)
        return;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        sesame_log_error("OCSP: cannot initialise libcurl: no stapling");
        return;
    }
    atomic_store(&stopping, false);
    if (pthread_create(&fetcher, NULL, fetcher_main, NULL) != 0) {
        sesame_log_error("OCSP: cannot start the fetcher thread: no stapling");
        curl_global_cleanup();
        return;
    }
    thread_running = true;
}

void
sesame_ocsp_stop(void)
{
    pthread_mutex_lock(&reg_lock);
    bool last = holders > 0 && --holders == 0;
    if (last)
        atomic_store(&stopping, true);
    pthread_cond_broadcast(&reg_cond);
    pthread_mutex_unlock(&reg_lock);
    if (!last || !thread_running)
        return;
    pthread_join(fetcher, NULL);
    thread_running = false;
    curl_global_cleanup();
}
