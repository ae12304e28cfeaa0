/*
 * http_plugin.c - the `http` account plugin (sesame_http.so): asks the
 * commune's citizen-relations software, over HTTPS, which account an
 * identity belongs to. The protocol (request, signature, answers) is
 * documented in plugins/http/README.md.
 *
 * Options of the `[accounts NAME]` section:
 *   url = https://...          (required; only https)
 *   secret_file = PATH         (required; first line, at least 32 bytes)
 *   timeout = DURATION         (each attempt, default 3s, at most 60s)
 *   ca_file = PATH             (trust anchors; default: the system store)
 * TLS peers are always verified (certificate chain and host name).
 * One retry, with a fresh timestamp and signature, after a network error
 * (connection refused or cut, TLS handshake cut, nothing received) or a 5xx
 * answer; no retry
 * after a 4xx, an invalid answer or a timeout (a second wait would double
 * the delay the citizen sees and the load on a struggling service).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <sesame/plugin.h>

#include "core/common.h"
#include "core/util.h"

#define DEFAULT_TIMEOUT_MS 3000
#define MAX_ANSWER (64 * 1024)
#define MIN_SECRET 32

struct state {
    const struct sesame_plugin_host *host;
    char *url;
    char *secret;
    size_t secretlen;
    char *ca_file;
    uint64_t timeout_ms;
};

static void
destroy(void *arg)
{
    struct state *st = arg;
    if (st == NULL)
        return;
    if (st->secret != NULL) {
        explicit_bzero(st->secret, st->secretlen);
        free(st->secret);
    }
    free(st->url);
    free(st->ca_file);
    free(st);
    curl_global_cleanup();
}

static char *
read_secret(const char *path, size_t *len, char **err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        sesame_err_set(err, "cannot open %s", path);
        return NULL;
    }
    char buf[1026];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    size_t l = strcspn(buf, "\r\n");
    char *s = NULL;
    if (l < MIN_SECRET || l > 1024)
        sesame_err_set(err, "%s: the secret must be %d to 1024 bytes on its first line", path,
                       MIN_SECRET);
    else
        s = sesame_strndup(buf, l);
    explicit_bzero(buf, sizeof(buf));
    *len = l;
    return s;
}

static int
init(const struct sesame_plugin_option *opts, size_t nopts, const struct sesame_plugin_host *host,
     void **statep, char **errp)
{
    struct state *st = sesame_calloc(1, sizeof(*st));
    st->host = host;
    st->timeout_ms = DEFAULT_TIMEOUT_MS;
    char *err = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        free(st);
        *errp = sesame_plugin_strdup(host, "cannot initialise libcurl");
        return -1;
    }
    for (size_t i = 0; i < nopts && err == NULL; i++) {
        const char *k = opts[i].key, *v = opts[i].value;
        int line = opts[i].line;
        if (strcmp(k, "url") == 0 && st->url == NULL) {
            if (strncmp(v, "https://", 8) != 0 || strlen(v) > 2048 || strlen(v) <= 8)
                sesame_err_set(&err, "line %d: url: must be an https:// URL (at most 2048 bytes)",
                               line);
            else
                st->url = sesame_strdup(v);
        } else if (strcmp(k, "secret_file") == 0 && st->secret == NULL) {
            char *e = NULL;
            st->secret = read_secret(v, &st->secretlen, &e);
            if (st->secret == NULL)
                sesame_err_set(&err, "line %d: secret_file: %s", line, e);
            free(e);
        } else if (strcmp(k, "timeout") == 0) {
            if (sesame_util_parse_duration(v, &st->timeout_ms) != SESAME_OK ||
                st->timeout_ms == 0 || st->timeout_ms > 60000)
                sesame_err_set(&err, "line %d: timeout: a duration from 1ms to 60s", line);
        } else if (strcmp(k, "ca_file") == 0 && st->ca_file == NULL) {
            FILE *f = fopen(v, "re");
            if (f == NULL)
                sesame_err_set(&err, "line %d: ca_file: cannot open %s", line, v);
            else
                fclose(f);
            st->ca_file = sesame_strdup(v);
        } else if (strcmp(k, "url") == 0 || strcmp(k, "secret_file") == 0 ||
                   strcmp(k, "ca_file") == 0) {
            sesame_err_set(&err, "line %d: %s: given twice", line, k);
        } else {
            sesame_err_set(&err, "line %d: %s: unknown option of the http plugin", line, k);
        }
    }
    if (err == NULL && st->url == NULL)
        sesame_err_set(&err, "url: missing");
    if (err == NULL && st->secret == NULL)
        sesame_err_set(&err, "secret_file: missing");
    if (err != NULL) {
        *errp = sesame_plugin_strdup(host, err);
        free(err);
        destroy(st);
        return -1;
    }
    *statep = st;
    return 0;
}

/* ---- request ------------------------------------------------------------ */

struct answer {
    char *buf;
    size_t len;
    bool too_long;
};

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct answer *a = arg;
    size_t n = size * nmemb;
    if (a->len + n > MAX_ANSWER) {
        a->too_long = true;
        return 0; /* aborts the transfer */
    }
    a->buf = sesame_realloc(a->buf, a->len + n + 1);
    memcpy(a->buf + a->len, ptr, n);
    a->len += n;
    a->buf[a->len] = '\0';
    return n;
}

static char *
identity_json(const struct sesame_plugin_identity *id)
{
    json_t *claims = json_object();
    for (size_t i = 0; i < id->nclaims; i++)
        json_object_set_new(claims, id->claims[i].key, json_string(id->claims[i].value));
    json_t *root = json_pack("{s:s, s:s, s:s, s:o}", "tenant", id->tenant, "provider",
                             id->provider, "sub", id->sub, "claims", claims);
    if (root == NULL)
        return NULL;
    char *body = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return body;
}

/* Writes "v1=" + hex HMAC-SHA256(secret, timestamp "." body) into out. */
static bool
sign(const struct state *st, const char *ts, const char *body, char out[3 + 64 + 1])
{
    size_t tl = strlen(ts), bl = strlen(body);
    char *msg = sesame_malloc(tl + 1 + bl);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, bl);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool ok = HMAC(EVP_sha256(), st->secret, (int)st->secretlen, (const unsigned char *)msg,
                   tl + 1 + bl, md, &mdlen) != NULL && mdlen == 32;
    free(msg);
    if (!ok)
        return false;
    memcpy(out, "v1=", 3);
    sesame_util_hex(out + 3, md, 32);
    return true;
}

enum outcome { SENT, RETRYABLE, FINAL };

/* One attempt. On SENT, *status and a holds the answer. Otherwise res holds
 * the error. */
static enum outcome
attempt(const struct state *st, const char *body, long *status, struct answer *a,
        struct sesame_plugin_result *res)
{
    char ts[32], hdr_ts[64], sig[3 + 64 + 1], hdr_sig[96];
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    if (!sign(st, ts, body, sig)) {
        sesame_plugin_result_error(res, "account service: cannot sign the request");
        return FINAL;
    }
    snprintf(hdr_ts, sizeof(hdr_ts), "X-Sesame-Timestamp: %s", ts);
    snprintf(hdr_sig, sizeof(hdr_sig), "X-Sesame-Signature: %s", sig);

    CURL *h = curl_easy_init();
    if (h == NULL) {
        sesame_plugin_result_error(res, "account service: cannot create a request");
        return FINAL;
    }
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    hdrs = curl_slist_append(hdrs, hdr_ts);
    hdrs = curl_slist_append(hdrs, hdr_sig);
    curl_easy_setopt(h, CURLOPT_URL, st->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (st->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, st->ca_file);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)st->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)st->timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sesame-accounts-http/1");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);

    if (cc == CURLE_OK)
        return *status >= 500 ? RETRYABLE : SENT;
    if (a->too_long) {
        sesame_plugin_result_error(res, "account service: answer longer than %d bytes",
                                   MAX_ANSWER);
        return FINAL;
    }
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        sesame_plugin_result_error(res, "account service: no answer within %llu ms",
                                   (unsigned long long)st->timeout_ms);
        return FINAL;
    }
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR: /* connection cut during the handshake */
        sesame_plugin_result_error(res, "account service unreachable: %s",
                                   curl_easy_strerror(cc));
        return RETRYABLE;
    default: /* TLS verification failures and the like */
        sesame_plugin_result_error(res, "account service: %s", curl_easy_strerror(cc));
        return FINAL;
    }
}

/* Interprets a 200 answer. */
static void
parse_answer(const struct answer *a, struct sesame_plugin_result *res)
{
    json_error_t jerr;
    json_t *root = a->buf ? json_loadb(a->buf, a->len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(root)) {
        sesame_plugin_result_error(res, "account service: answer is not a JSON object");
        json_decref(root);
        return;
    }
    json_t *id = json_object_get(root, "account_id");
    json_t *account = json_object_get(root, "account");
    if (json_is_string(id) && account == NULL) {
        if (sesame_plugin_result_found(res, json_string_value(id)) != 0)
            goto bad;
        json_t *attrs = json_object_get(root, "attributes");
        if (attrs != NULL && !json_is_object(attrs))
            goto bad;
        const char *k;
        json_t *v;
        json_object_foreach(attrs, k, v) {
            if (!json_is_string(v) || sesame_plugin_result_attr(res, k, json_string_value(v)) != 0)
                goto bad;
        }
        json_decref(root);
        return;
    }
    if (id == NULL && json_is_null(account)) {
        const char *reason = json_string_value(json_object_get(root, "reason"));
        if (reason != NULL && strcmp(reason, "link_only") == 0)
            sesame_plugin_result_none(res, SESAME_PLUGIN_REASON_LINK_ONLY);
        else if (reason != NULL && strcmp(reason, "deny") == 0)
            sesame_plugin_result_none(res, SESAME_PLUGIN_REASON_DENY);
        else
            goto bad;
        json_decref(root);
        return;
    }
bad:
    json_decref(root);
    memset(res, 0, sizeof(*res));
    sesame_plugin_result_error(res, "account service: invalid answer");
}

static int
resolve(void *arg, const struct sesame_plugin_identity *id, struct sesame_plugin_result *res)
{
    struct state *st = arg;
    char *body = identity_json(id);
    if (body == NULL) {
        sesame_plugin_result_error(res, "account service: cannot encode the identity");
        return 0;
    }
    for (int round = 0; round < 2; round++) {
        struct answer a = {NULL, 0, false};
        long status = 0;
        memset(res, 0, sizeof(*res));
        enum outcome o = attempt(st, body, &status, &a, res);
        if (o == RETRYABLE && status >= 500)
            sesame_plugin_result_error(res, "account service answered HTTP %ld", status);
        if (o == SENT) {
            if (status == 200)
                parse_answer(&a, res);
            else
                sesame_plugin_result_error(res, "account service answered HTTP %ld", status);
        }
        free(a.buf);
        if (o != RETRYABLE)
            break;
        if (round == 0)
            st->host->log(SESAME_PLUGIN_LOG_WARN, "accounts http: %s; retrying once", res->error);
    }
    if (res->status == SESAME_PLUGIN_RESULT_ERROR)
        st->host->log(SESAME_PLUGIN_LOG_ERROR, "accounts http: %s", res->error);
    free(body);
    return 0;
}

static const struct sesame_plugin plugin = {
    .abi_version = SESAME_PLUGIN_ABI_VERSION,
    .name = "http",
    .init = init,
    .resolve = resolve,
    .destroy = destroy,
    .erase = NULL,
};

SESAME_PLUGIN_EXPORT const struct sesame_plugin *sesame_plugin_entry(void);

SESAME_PLUGIN_EXPORT const struct sesame_plugin *
sesame_plugin_entry(void)
{
    return &plugin;
}
