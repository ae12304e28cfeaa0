/*
 * httpc.c - libcurl multi interface driven by libevent (socket and timer
 * callbacks), with the security settings of httpc.h applied to every call.
 */
#include "oidc/httpc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "core/util.h"

#define MAX_URL 8192
#define MAX_HEADER_LINE 8192
#define MAX_TIMEOUT_MS (3600u * 1000u)

struct sock {
    struct event ev;
    curl_socket_t fd;
    struct sesame_httpc *h;
    struct sock *prev, *next;
};

enum call_state {
    CALL_FAILED_SETUP = 0, /* never reached curl: fail_ev delivers the error */
    CALL_RUNNING,          /* in the multi handle */
    CALL_DONE,             /* finished, waiting in h->done for delivery */
};

struct sesame_httpc_call {
    struct sesame_httpc *h;
    enum call_state state;
    CURL *easy;
    struct curl_slist *hdrs;
    struct event *fail_ev;
    char *error;           /* setup error, or the transport error once done */
    bool timed_out;
    CURLcode result;
    char *buf;
    size_t len, cap, max;
    bool too_large;
    char errbuf[CURL_ERROR_SIZE];
    sesame_httpc_cb cb;
    void *arg;
    struct sesame_httpc_call *prev, *next; /* h->calls or h->done */
};

struct sesame_httpc {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct sesame_httpc_call *calls; /* setup-failed and running calls */
    struct sesame_httpc_call *done;  /* finished, being delivered */
    size_t ncalls;
    struct sock *socks;
    bool closing;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void
global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- lists ---------------------------------------------------------------- */

static void
list_push(struct sesame_httpc_call **head, struct sesame_httpc_call *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void
list_unlink(struct sesame_httpc_call **head, struct sesame_httpc_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void
call_unlink(struct sesame_httpc_call *c)
{
    struct sesame_httpc *h = c->h;
    list_unlink(c->state == CALL_DONE ? &h->done : &h->calls, c);
    h->ncalls--;
}

static void
call_free(struct sesame_httpc_call *c)
{
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->hdrs);
    if (c->fail_ev)
        event_free(c->fail_ev);
    free(c->error);
    free(c->buf);
    free(c);
}

/* ---- delivery ------------------------------------------------------------- */

static void
trim_copy(char *out, size_t cap, const char *in)
{
    while (*in == ' ' || *in == '\t')
        in++;
    size_t n = strlen(in);
    while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, in, n);
    out[n] = '\0';
}

/* Unlinks c, calls its callback with its outcome, frees it. */
static void
deliver(struct sesame_httpc_call *c)
{
    struct sesame_httpc_response r = {0};
    char ctype[SESAME_HTTPC_MAX_CONTENT_TYPE + 1];
    call_unlink(c);
    if (c->state == CALL_FAILED_SETUP || c->error != NULL) {
        r.error = c->error ? c->error : "HTTP call failed";
    } else if (c->result != CURLE_OK) {
        if (c->too_large || c->result == CURLE_FILESIZE_EXCEEDED)
            c->error = sesame_asprintf("response larger than %zu bytes", c->max);
        else if (c->errbuf[0] != '\0')
            c->error = sesame_strdup(c->errbuf);
        else
            c->error = sesame_strdup(curl_easy_strerror(c->result));
        r.error = c->error;
        r.timed_out = c->result == CURLE_OPERATION_TIMEDOUT;
    } else {
        long status = 0;
        char *ct = NULL;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
        r.status = status;
        if (ct != NULL) {
            trim_copy(ctype, sizeof(ctype), ct);
            r.content_type = ctype;
        }
        r.body = c->buf ? c->buf : "";
        r.body_len = c->len;
    }
    if (r.error != NULL) {
        r.status = 0;
        r.body = "";
        r.body_len = 0;
    }
    c->cb(c->arg, &r);
    call_free(c);
}

/* Moves every finished transfer to h->done, then delivers them one by one
 * (a callback may cancel another finished call: it is then unlinked from
 * h->done and never delivered). */
static void
check_done(struct sesame_httpc *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        struct sesame_httpc_call *c = (struct sesame_httpc_call *)(void *)priv;
        curl_multi_remove_handle(h->multi, e);
        if (c == NULL)
            continue;
        list_unlink(&h->calls, c);
        c->state = CALL_DONE;
        c->result = rc;
        list_push(&h->done, c);
    }
    while (h->done != NULL) {
        struct sesame_httpc_call *c = h->done;
        while (c->next != NULL) /* oldest first */
            c = c->next;
        deliver(c);
    }
}

static void
fail_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deliver(arg);
}

/* ---- libcurl <-> libevent ------------------------------------------------- */

static void
sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_httpc *h = arg;
    int flags = 0, running = 0;
    if (what & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    check_done(h);
}

static void
timer_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sesame_httpc *h = arg;
    int running = 0;
    (void)fd;
    (void)what;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void
sock_remove(struct sesame_httpc *h, struct sock *sk)
{
    event_del(&sk->ev);
    if (sk->prev)
        sk->prev->next = sk->next;
    else
        h->socks = sk->next;
    if (sk->next)
        sk->next->prev = sk->prev;
    free(sk);
}

static int
socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct sesame_httpc *h = userp;
    struct sock *sk = socketp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            curl_multi_assign(h->multi, s, NULL);
            sock_remove(h, sk);
        }
        return 0;
    }
    if (sk == NULL) {
        sk = sesame_calloc(1, sizeof(*sk));
        sk->fd = s;
        sk->h = h;
        sk->next = h->socks;
        if (h->socks)
            h->socks->prev = sk;
        h->socks = sk;
        curl_multi_assign(h->multi, s, sk);
    } else {
        event_del(&sk->ev);
    }
    short kind = EV_PERSIST;
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    event_assign(&sk->ev, h->base, s, kind, sock_event_cb, h);
    event_add(&sk->ev, NULL);
    return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct sesame_httpc *h = userp;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(h->timer);
    } else {
        struct timeval tv = sesame_util_timeval_ms((uint64_t)timeout_ms);
        evtimer_add(h->timer, &tv);
    }
    return 0;
}

/* ---- calls ---------------------------------------------------------------- */

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct sesame_httpc_call *c = userdata;
    size_t n = size * nmemb;
    if (n > c->max || c->len > c->max - n) {
        c->too_large = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        if (cap > c->max + 1)
            cap = c->max + 1;
        c->buf = sesame_realloc(c->buf, cap);
        c->cap = cap;
    }
    memcpy(c->buf + c->len, ptr, n);
    c->len += n;
    c->buf[c->len] = '\0';
    return n;
}

static bool
header_ok(const char *line)
{
    size_t n = strnlen(line, MAX_HEADER_LINE + 1);
    if (n == 0 || n > MAX_HEADER_LINE)
        return false;
    const char *colon = strchr(line, ':');
    if (colon == NULL || colon == line)
        return false;
    for (const char *p = line; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '\r' || ch == '\n' || (ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
        if (p < colon && (ch <= 0x20 || ch >= 0x7f))
            return false;
    }
    return true;
}

/* Checks the request; returns NULL when usable, else a static reason. */
static const char *
request_problem(const struct sesame_httpc_request *rq)
{
    if (rq->url == NULL)
        return "no URL";
    size_t ulen = strnlen(rq->url, MAX_URL + 1);
    if (ulen > MAX_URL)
        return "URL too long";
    if (ulen < 9 || strncasecmp(rq->url, "https://", 8) != 0)
        return "only https URLs are allowed";
    for (const char *p = rq->url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "URL holds a space, a control or a non-ASCII character";
    if (rq->method != SESAME_HTTPC_GET && rq->method != SESAME_HTTPC_POST)
        return "unsupported method";
    if (rq->nheaders > SESAME_HTTPC_MAX_HEADERS || (rq->nheaders > 0 && rq->headers == NULL))
        return "too many request headers";
    for (size_t i = 0; i < rq->nheaders; i++)
        if (rq->headers[i] == NULL || !header_ok(rq->headers[i]))
            return "malformed request header";
    if (rq->body == NULL && rq->body_len > 0)
        return "body length without a body";
    return NULL;
}

#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (curl_easy_setopt(e, opt, val) != CURLE_OK) {                                           \
            problem = "libcurl refused option " #opt;                                              \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Builds the easy handle of c; returns NULL or a static reason. */
static const char *
setup_easy(struct sesame_httpc_call *c, const struct sesame_httpc_request *rq)
{
    const char *problem = NULL;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return "libcurl could not create a handle";
    c->easy = e;
    uint64_t timeout = rq->timeout_ms ? rq->timeout_ms : SESAME_HTTPC_DEFAULT_TIMEOUT_MS;
    if (timeout > MAX_TIMEOUT_MS)
        timeout = MAX_TIMEOUT_MS;

    SETOPT(CURLOPT_URL, rq->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (rq->ca_file != NULL) {
        SETOPT(CURLOPT_CAINFO, rq->ca_file);
        SETOPT(CURLOPT_CAPATH, (char *)NULL);
    }
    SETOPT(CURLOPT_PROXY, ""); /* "" disables proxies, including the environment's */
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)timeout);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)timeout);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max);
    SETOPT(CURLOPT_USERAGENT, "Sesame");
    SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
    SETOPT(CURLOPT_WRITEDATA, c);
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(CURLOPT_PRIVATE, (void *)c);
    SETOPT(CURLOPT_VERBOSE, 0L);

    for (size_t i = 0; i < rq->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(c->hdrs, rq->headers[i]);
        if (l == NULL) {
            problem = "out of memory";
            goto fail;
        }
        c->hdrs = l;
    }
    if (rq->method == SESAME_HTTPC_POST) {
        struct curl_slist *l = curl_slist_append(c->hdrs, "Expect:");
        if (l == NULL) {
            problem = "out of memory";
            goto fail;
        }
        c->hdrs = l;
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        SETOPT(CURLOPT_COPYPOSTFIELDS, rq->body ? rq->body : "");
    } else {
        SETOPT(CURLOPT_HTTPGET, 1L);
    }
    if (c->hdrs != NULL)
        SETOPT(CURLOPT_HTTPHEADER, c->hdrs);
    return NULL;
fail:
    return problem;
}
#undef SETOPT

struct sesame_httpc_call *
sesame_httpc_fetch(struct sesame_httpc *h, const struct sesame_httpc_request *rq,
                   sesame_httpc_cb cb, void *arg)
{
    if (h == NULL || h->closing || cb == NULL || rq == NULL)
        return NULL;
    struct sesame_httpc_call *c = sesame_calloc(1, sizeof(*c));
    c->h = h;
    c->cb = cb;
    c->arg = arg;
    c->max = rq->max_response ? rq->max_response : SESAME_HTTPC_DEFAULT_MAX_RESPONSE;
    c->state = CALL_FAILED_SETUP;
    list_push(&h->calls, c);
    h->ncalls++;

    const char *problem = request_problem(rq);
    if (problem == NULL)
        problem = setup_easy(c, rq);
    if (problem == NULL && curl_multi_add_handle(h->multi, c->easy) != CURLM_OK)
        problem = "libcurl refused the transfer";
    if (problem == NULL) {
        c->state = CALL_RUNNING;
        return c;
    }
    c->error = sesame_strdup(problem);
    c->fail_ev = evtimer_new(h->base, fail_cb, c);
    if (c->fail_ev == NULL)
        abort(); /* out of memory, like sesame_malloc */
    struct timeval now = {0, 0};
    evtimer_add(c->fail_ev, &now);
    return c;
}

void
sesame_httpc_cancel(struct sesame_httpc_call *c)
{
    if (c == NULL)
        return;
    if (c->state == CALL_RUNNING)
        curl_multi_remove_handle(c->h->multi, c->easy);
    call_unlink(c);
    call_free(c);
}

size_t
sesame_httpc_pending(const struct sesame_httpc *h)
{
    return h ? h->ncalls : 0;
}

struct event_base *
sesame_httpc_base(const struct sesame_httpc *h)
{
    return h->base;
}

struct sesame_httpc *
sesame_httpc_new(struct event_base *base, char **err)
{
    if (base == NULL) {
        sesame_err_set(err, "HTTP client: no event base");
        return NULL;
    }
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        sesame_err_set(err, "libcurl initialisation failed: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (v == NULL || v->version_num < 0x075500 || !(v->features & CURL_VERSION_SSL)) {
        sesame_err_set(err, "libcurl 7.85 or later with TLS support is required");
        return NULL;
    }
    struct sesame_httpc *h = sesame_calloc(1, sizeof(*h));
    h->base = base;
    h->multi = curl_multi_init();
    h->timer = evtimer_new(base, timer_event_cb, h);
    if (h->multi == NULL || h->timer == NULL) {
        sesame_err_set(err, "HTTP client: cannot create the libcurl multi handle or its timer");
        goto fail;
    }
    if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 16L) != CURLM_OK) {
        sesame_err_set(err, "HTTP client: libcurl refused a multi option");
        goto fail;
    }
    return h;
fail:
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->timer)
        event_free(h->timer);
    free(h);
    return NULL;
}

void
sesame_httpc_free(struct sesame_httpc *h)
{
    if (h == NULL)
        return;
    h->closing = true;
    while (h->calls != NULL || h->done != NULL) {
        struct sesame_httpc_call *c = h->calls ? h->calls : h->done;
        if (c->state == CALL_RUNNING)
            curl_multi_remove_handle(h->multi, c->easy);
        free(c->error);
        c->error = sesame_strdup("HTTP client shut down");
        deliver(c);
    }
    curl_multi_cleanup(h->multi);
    while (h->socks != NULL)
        sock_remove(h, h->socks);
    event_free(h->timer);
    free(h);
}
