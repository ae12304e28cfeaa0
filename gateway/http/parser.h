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
 *
 * Transfer-Encoding, precisely. All Transfer-Encoding fields of a message form
 * one comma-separated list of codings, read left to right; the first problem
 * met decides the answer:
 *   - a malformed list (empty element, element that is not a token, e.g.
 *     "chunked;x=1" or "chunked,,") is 400;
 *   - a syntactically valid coding other than "chunked" (gzip, identity...)
 *     is 501 in a request, so "gzip, chunked" and "chunked, gzip" are 501;
 *   - "chunked" listed a second time (in the same field or in another one)
 *     is 400, so "chunked, chunked" is 400.
 * In a response every one of these is an error (the proxy answers 502).
 * Transfer-Encoding in any HTTP/1.0 message is an error (RFC 9112 6.1).
 *
 * Request-target forms: origin-form ("/path?query"), absolute-form
 * ("http://" or "https://" authority [path] [?query]; the scheme is
 * case-insensitive; userinfo is refused; the authority becomes req->host and
 * an HTTP/1.1 request still needs a valid Host header), asterisk-form ("*",
 * OPTIONS only) and authority-form ("host:port", CONNECT only). A '#' or any
 * byte <= 0x20, 0x7f or >= 0x80 in the target is 400.
 *
 * Host values (Host header, absolute-form authority, CONNECT target): a
 * reg-name or IPv4 address made of ALPHA DIGIT "-" "." "_" "~" (1 to 255
 * bytes; percent-encoding and sub-delims are refused) or an IPv6 literal
 * "[" HEXDIG / ":" / "." "]", then an optional ":" port of 1 to 5 digits
 * <= 65535 (required for CONNECT).
 *
 * Cost: one pass over buf, no allocation. A caller that appends bytes to a
 * buffer and parses again should use sesame_http_need_parse() to skip parses
 * that cannot change the answer, so that a client trickling a head byte by
 * byte costs a number of parses bounded by its number of lines.
 */
#ifndef SESAME_HTTP_PARSER_H
#define SESAME_HTTP_PARSER_H

#include "core/common.h"

/* A NULL limits pointer or a zero field means the default below. */
struct sesame_http_limits {
    size_t max_request_line;  /* bytes of the request line (or a response's status
                               * line) without CRLF; 414 past it. Values above
                               * max_header_size act as max_header_size. */
    size_t max_header_size;   /* bytes of the whole head: leading empty lines, request
                               * line, header lines and the final CRLF; 431 past it */
    size_t max_headers;       /* number of header fields; 431 past it (values above
                               * SESAME_HTTP_MAX_HEADERS act as SESAME_HTTP_MAX_HEADERS) */
};

#define SESAME_HTTP_MAX_HEADERS 256
#define SESAME_HTTP_DEFAULT_MAX_REQUEST_LINE 8192
#define SESAME_HTTP_DEFAULT_MAX_HEADER_SIZE 32768
#define SESAME_HTTP_DEFAULT_MAX_HEADERS 100

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

/* Fields common to requests and responses.
 * keep_alive: HTTP/1.1 unless Connection lists "close"; HTTP/1.0 only when
 * Connection lists "keep-alive" and not "close". It does not account for the
 * body: a response read until close cannot be kept alive whatever it says.
 * connection_tokens: at most 16, more is an error (400); empty list elements
 * are skipped; every token (close and keep-alive included) is listed, in
 * order, across all Connection fields. */
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
    const char *path;         /* origin-form path (or the path of an absolute-form target:
                               * a static "/" when that target has none); NULL for the
                               * asterisk and authority forms */
    size_t path_len;
    const char *query;        /* after '?', NULL when none */
    size_t query_len;
    const char *host;         /* Host header value (or absolute-form authority), NULL when absent */
    size_t host_len;
    bool absolute_form;
    bool asterisk_form;       /* "OPTIONS *" */
    bool expect_continue;     /* Expect: 100-continue (other Expect values are left
                               * to the caller, found with sesame_http_find_header) */
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
 * lines (CRLF) before the request line are ignored, at most 4 of them (a
 * fifth is 400); they count in head_len and in max_header_size. Errors are
 * reported as soon as the bytes received prove them, complete head or not;
 * limits are checked on incomplete lines too. On SESAME_AGAIN and SESAME_OK,
 * error_status is 0 and error_reason NULL. The result depends only on
 * buf[0..len), never on an earlier call. */
int sesame_http_parse_request(const char *buf, size_t len, const struct sesame_http_limits *limits,
                              struct sesame_http_request *req);

/* Parses a response head from buf[0..len). Same return convention and the
 * same header rules as requests (no Host rule, no leading empty lines). The
 * status line is "HTTP/1.0" or "HTTP/1.1", SP, three digits 100..599, then
 * optionally SP and a reason phrase (HTAB, SP, VCHAR, obs-text); its length
 * is bounded by max_request_line. On error resp->error_reason says why (the
 * proxy answers 502). After SESAME_OK, sesame_http_response_body_kind() says
 * how the body is delimited. */
int sesame_http_parse_response(const char *buf, size_t len, const struct sesame_http_limits *limits,
                               struct sesame_http_response *resp);

enum sesame_http_body_kind {
    SESAME_BODY_NONE = 0,     /* 1xx, 204, 304, or a response to HEAD */
    SESAME_BODY_LENGTH,       /* content_length bytes */
    SESAME_BODY_CHUNKED,
    SESAME_BODY_UNTIL_CLOSE,  /* response without length: read until EOF */
};
/* Body delimitation of a parsed response per RFC 9112 6.3. `head_request`
 * says the request was HEAD (no body whatever the headers say). 1xx, 204 and
 * 304 have no body even when they carry Content-Length or Transfer-Encoding. */
enum sesame_http_body_kind sesame_http_response_body_kind(const struct sesame_http_response *resp,
                                                          bool head_request);

/* Body delimitation of a parsed request: SESAME_BODY_CHUNKED,
 * SESAME_BODY_LENGTH (Content-Length present, possibly 0) or SESAME_BODY_NONE;
 * never SESAME_BODY_UNTIL_CLOSE. */
enum sesame_http_body_kind sesame_http_request_body_kind(const struct sesame_http_request *req);

/* For a caller that parsed buf[0..prev_len) with the answer SESAME_AGAIN and
 * has since appended bytes up to len (same limits; works for requests and
 * responses): returns false only when parsing buf[0..len) is certain to
 * answer SESAME_AGAIN again, true when it is worth parsing (a new CR or LF, a
 * limit reachable, or prev_len == 0 or prev_len >= len). Cost: a memchr over
 * the new bytes, plus at most one over the old ones once past the request
 * line limit. */
bool sesame_http_need_parse(const char *buf, size_t prev_len, size_t len,
                            const struct sesame_http_limits *limits);

/* Finds the first header with this case-insensitive name (NUL-terminated);
 * returns NULL when absent. */
const struct sesame_http_header *sesame_http_find_header(const struct sesame_http_head *h,
                                                         const char *name);

/* Chunked transfer-coding decoder, fed incrementally (RFC 9112 7.1).
 * chunk-size: 1 to 16 hex digits (no sign, no "0x", no whitespace before
 * them); then optional chunk extensions: BWS ";" followed by any VCHAR, SP,
 * HTAB or obs-text up to the CR (content not interpreted); the size line
 * without CRLF is at most SESAME_CHUNKED_MAX_LINE bytes. Every chunk's data
 * must be followed by CRLF. Trailer lines must be field lines (token ":"
 * value, no obs-fold, no control character but HTAB); they are checked,
 * bounded by SESAME_CHUNKED_MAX_TRAILERS (all trailer bytes including the
 * final CRLF) and discarded. A bare LF or a bare CR anywhere in the framing
 * is an error. After an error every further call returns SESAME_ERROR; after
 * the end every further call returns SESAME_OK with *consumed == 0. */
struct sesame_http_chunked {
    int state;                /* private */
    uint64_t remaining;       /* private: bytes left in the current chunk */
    size_t line_len;          /* private: bytes of the current size/trailer line */
    size_t trailer_bytes;     /* private */
};

#define SESAME_CHUNKED_MAX_LINE 4096      /* chunk-size line with extensions */
#define SESAME_CHUNKED_MAX_TRAILERS 8192  /* all trailer lines together; trailers are discarded */

/* Prepares c for a new body. */
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
