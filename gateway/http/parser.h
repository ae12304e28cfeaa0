/*
 * parser.h - strict HTTP/1.x message-head parser and chunked-body decoder.
 *
 * Pure functions over a contiguous byte buffer: no allocation, no I/O. The
 * parsed structures point into the caller's buffer, which must stay alive and
 * unchanged while they are used.
 *
 * Strictness (request smuggling defences): every line ends in CRLF (a bare LF
 * or a bare CR is an error); no obsolete line folding; no whitespace between a
 * header name and its colon; header names are RFC 9110 tokens; header values
 * hold no control character other than HTAB; Content-Length is one or more
 * digits, appears at most once, and fits in int64; Content-Length together
 * with Transfer-Encoding is an error; the only Transfer-Encoding accepted is
 * exactly "chunked" (case-insensitive), anything else is 501 (request) or an
 * error (response); Transfer-Encoding in an HTTP/1.0 request is an error; an
 * HTTP/1.1 request needs exactly one Host header; a second Host is an error.
 */
#ifndef SESAME_HTTP_PARSER_H
#define SESAME_HTTP_PARSER_H

#include "core/common.h"

struct sesame_http_limits {
    size_t max_request_line;  /* bytes of the request line without CRLF; 414 past it */
    size_t max_header_size;   /* bytes of the whole head; 431 past it */
    size_t max_headers;       /* number of header fields; 431 past it (<= SESAME_HTTP_MAX_HEADERS) */
};

#define SESAME_HTTP_MAX_HEADERS 256

struct sesame_http_header {
    const char *name;
    size_t name_len;
    const char *value;        /* leading and trailing SP/HTAB removed */
    size_t value_len;
};

enum sesame_http_method {
    SESAME_HTTP_OTHER = 0,    /* any other valid token: forwarded as is */
    SESAME_HTTP_GET,
    SESAME_HTTP_HEAD,
    SESAME_HTTP_POST,
    SESAME_HTTP_PUT,
    SESAME_HTTP_DELETE,
    SESAME_HTTP_OPTIONS,
    SESAME_HTTP_PATCH,
    SESAME_HTTP_CONNECT,      /* parsed but the server refuses it (405) */
    SESAME_HTTP_TRACE,
};

/* Fields common to requests and responses. */
struct sesame_http_head {
    int version_minor;        /* 0 or 1 (HTTP/1.x only) */
    struct sesame_http_header headers[SESAME_HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length;   /* -1 when absent */
    bool chunked;             /* Transfer-Encoding: chunked */
    bool keep_alive;          /* from version and Connection */
    bool connection_upgrade;  /* Connection lists "upgrade" */
    /* Tokens listed in Connection (hop-by-hop header names), pointing into the buffer. */
    struct { const char *p; size_t n; } connection_tokens[16];
    size_t nconnection_tokens;
    size_t head_len;          /* bytes of the head including the final CRLFCRLF */
};

struct sesame_http_request {
    struct sesame_http_head h;
    enum sesame_http_method method;
    const char *method_text;
    size_t method_len;
    const char *target;       /* request-target as sent */
    size_t target_len;
    const char *path;         /* origin-form path (or the path of an absolute-form target) */
    size_t path_len;
    const char *query;        /* after '?', NULL when none */
    size_t query_len;
    const char *host;         /* Host header value (or absolute-form authority), NULL when absent */
    size_t host_len;
    bool absolute_form;
    bool asterisk_form;       /* "OPTIONS *" */
    bool expect_continue;     /* Expect: 100-continue */
    /* On error: the status to answer (400, 414, 431, 501, 505) and a short
     * static English reason for the error log. */
    int error_status;
    const char *error_reason;
};

struct sesame_http_response {
    struct sesame_http_head h;
    int status;               /* 100..599 */
    const char *reason;
    size_t reason_len;
    const char *error_reason; /* on error */
};

/* Parses a request head from buf[0..len).
 * Returns SESAME_OK when a complete, valid head was parsed (req->h.head_len
 * says how many bytes it used), SESAME_AGAIN when more bytes are needed (and
 * no limit is exceeded yet), SESAME_ERROR when the head is invalid or exceeds
 * a limit (req->error_status and req->error_reason say why). Leading empty
 * lines (CRLF) before the request line are ignored, at most 4 of them. */
int sesame_http_parse_request(const char *buf, size_t len, const struct sesame_http_limits *limits,
                              struct sesame_http_request *req);

/* Parses a response head from buf[0..len). Same return convention.
 * `head_request` says the request was HEAD (no body expected whatever the
 * headers say). After SESAME_OK, sesame_http_response_body_kind() says how the
 * body is delimited. */
int sesame_http_parse_response(const char *buf, size_t len, const struct sesame_http_limits *limits,
                               struct sesame_http_response *resp);

enum sesame_http_body_kind {
    SESAME_BODY_NONE = 0,     /* 1xx, 204, 304, or a response to HEAD */
    SESAME_BODY_LENGTH,       /* content_length bytes */
    SESAME_BODY_CHUNKED,
    SESAME_BODY_UNTIL_CLOSE,  /* response without length: read until EOF */
};
enum sesame_http_body_kind sesame_http_response_body_kind(const struct sesame_http_response *resp,
                                                          bool head_request);

/* Finds a header by case-insensitive name; returns NULL when absent. */
const struct sesame_http_header *sesame_http_find_header(const struct sesame_http_head *h,
                                                         const char *name);

/* Chunked transfer-coding decoder, fed incrementally. */
struct sesame_http_chunked {
    int state;                /* private */
    uint64_t remaining;       /* private: bytes left in the current chunk */
    size_t line_len;          /* private: bytes of the current size/trailer line */
    size_t trailer_bytes;     /* private */
};

#define SESAME_CHUNKED_MAX_LINE 4096      /* chunk-size line with extensions */
#define SESAME_CHUNKED_MAX_TRAILERS 8192  /* all trailer lines together; trailers are discarded */

void sesame_http_chunked_init(struct sesame_http_chunked *c);

/* Feeds in[0..len). On return *consumed bytes of input were used and, when
 * *data_len > 0, in[*data_off .. *data_off + *data_len) is body payload (one
 * contiguous slice per call). Returns SESAME_AGAIN when more input is needed
 * (call again with the unconsumed rest plus new bytes), SESAME_OK when the
 * last chunk and the trailers were consumed (the message ends at *consumed),
 * SESAME_ERROR on malformed input (bad hex, size overflow, missing CRLF,
 * bare LF, oversized line or trailers). Call repeatedly while it returns
 * SESAME_AGAIN with *consumed > 0. */
int sesame_http_chunked_feed(struct sesame_http_chunked *c, const char *in, size_t len,
                             size_t *consumed, size_t *data_off, size_t *data_len);

#endif
