/*
 * httpc.h - asynchronous HTTPS client for calls to identity providers
 * (discovery, JWKS, token, userinfo): one libcurl multi handle per worker,
 * driven by the worker's libevent loop. Nothing here blocks the loop: name
 * resolution runs in libcurl's resolver threads, sockets and timers are
 * watched by the event base.
 *
 * Security, not configurable:
 *   - https only (any other scheme fails before a connection is made);
 *   - the peer certificate and host name are always verified, against
 *     ca_file alone when the request names one, else the system store;
 *   - TLS 1.2 or later;
 *   - redirects are never followed (a 3xx is returned as such);
 *   - no proxy, whatever the environment says (http_proxy & co are ignored);
 *   - no cookies, no compression, no .netrc, no signals (CURLOPT_NOSIGNAL);
 *   - the response body is bounded (max_response).
 * Nothing is logged here: neither URLs, headers nor bodies.
 *
 * Threading: a struct sesame_httpc belongs to the thread running its event
 * base; every function below is called on that thread, and callbacks run on
 * it, from the event loop (never from inside sesame_httpc_fetch).
 */
#ifndef SESAME_OIDC_HTTPC_H
#define SESAME_OIDC_HTTPC_H

#include <event2/event.h>

#include "core/common.h"

#define SESAME_HTTPC_DEFAULT_MAX_RESPONSE (1024 * 1024) /* bytes */
#define SESAME_HTTPC_DEFAULT_TIMEOUT_MS 10000
#define SESAME_HTTPC_MAX_HEADERS 16      /* extra request headers */
#define SESAME_HTTPC_MAX_CONTENT_TYPE 255 /* bytes kept of the Content-Type value */

struct sesame_httpc;      /* one per worker thread */
struct sesame_httpc_call; /* one request in flight */

enum sesame_httpc_method {
    SESAME_HTTPC_GET = 0,
    SESAME_HTTPC_POST,
};

/* A request. Everything is copied by sesame_httpc_fetch(): the caller may
 * free it as soon as the call returns. */
struct sesame_httpc_request {
    enum sesame_httpc_method method;
    const char *url;              /* absolute https URL */
    const char *const *headers;   /* "Name: value" lines, without CR/LF */
    size_t nheaders;              /* at most SESAME_HTTPC_MAX_HEADERS */
    const char *body;             /* POST: form body (application/x-www-form-urlencoded) */
    size_t body_len;
    uint64_t timeout_ms;          /* whole call, connection included; 0: default */
    const char *ca_file;          /* PEM bundle of trusted CAs; NULL: the system store */
    size_t max_response;          /* body bytes; 0: SESAME_HTTPC_DEFAULT_MAX_RESPONSE */
};

/* The outcome of a call. Owned by the client; valid during the callback only
 * (copy what must outlive it). */
struct sesame_httpc_response {
    const char *error;        /* NULL when an HTTP response arrived, else why not
                                 (transport, TLS, timeout, size limit, shut down) */
    bool timed_out;           /* the error is the timeout */
    long status;              /* HTTP status; 0 when error is set */
    const char *content_type; /* Content-Type value as received (trimmed), NULL if absent */
    const char *body;         /* NUL-terminated (the NUL is not counted) */
    size_t body_len;
};

typedef void (*sesame_httpc_cb)(void *arg, const struct sesame_httpc_response *resp);

/* Creates a client driven by `base` (initialises libcurl once per process).
 * Returns NULL with *err set on failure. */
struct sesame_httpc *sesame_httpc_new(struct event_base *base, char **err);

/* Frees the client (not from inside one of its callbacks). Calls still in
 * flight are completed first: their callbacks run from here with error
 * "HTTP client shut down" (a new call started from such a callback is
 * refused: sesame_httpc_fetch returns NULL). Callers that do not want that
 * cancel their calls before; provider operations (provider.h) using this
 * client must be cancelled before. Accepts NULL. */
void sesame_httpc_free(struct sesame_httpc *h);

/* The event base the client runs on. */
struct event_base *sesame_httpc_base(const struct sesame_httpc *h);

/* Starts a request. `cb(arg, resp)` will be called exactly once, from the
 * event loop, unless the call is cancelled first. Invalid requests (not
 * https, too many headers, header with CR/LF) are reported the same way,
 * through the callback, on the next loop iteration.
 * Returns the call handle, valid until the callback starts or the call is
 * cancelled; NULL (and cb never called) only while the client is being
 * freed. */
struct sesame_httpc_call *sesame_httpc_fetch(struct sesame_httpc *h,
                                             const struct sesame_httpc_request *rq,
                                             sesame_httpc_cb cb, void *arg);

/* Cancels a call in flight: its connection is dropped and its callback is
 * never called. Not from inside that call's own callback. Accepts NULL. */
void sesame_httpc_cancel(struct sesame_httpc_call *call);

/* Number of calls in flight (for tests and shutdown). */
size_t sesame_httpc_pending(const struct sesame_httpc *h);

#endif
