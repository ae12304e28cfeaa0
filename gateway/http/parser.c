/*
 * parser.c - strict HTTP/1.x head parser and chunked decoder (see parser.h).
 *
 * The head parser is stateless: each call scans buf once from the start,
 * finding line ends with memchr inside a window bounded by the limits, so an
 * unterminated line is refused as soon as it passes a limit.
 */
#include "http/parser.h"

#include <string.h>

/* Character classes. */
#define C_TCHAR 1  /* RFC 9110 token character */
#define C_TARGET 2 /* request-target byte: 0x21..0x7e except '#' */
#define C_FVALUE 4 /* field-value byte: HTAB, SP, VCHAR, obs-text */
#define C_HOST 8   /* reg-name byte we accept: ALPHA DIGIT - . _ ~ */
#define C_DIGIT 16
#define C_HEX 32

static const unsigned char cclass[256] = {
    /* 00 */  0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0,
    /* 10 */  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    /* 20 */  4,  7,  6,  5,  7,  7,  7,  7,  6,  6,  7,  7,  6, 15, 15,  6,
    /* 30 */ 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,  6,  6,  6,  6,  6,  6,
    /* 40 */  6, 47, 47, 47, 47, 47, 47, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    /* 50 */ 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6,  6,  6,  7, 15,
    /* 60 */  7, 47, 47, 47, 47, 47, 47, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    /* 70 */ 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6,  7,  6, 15,  0,
    /* 80 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* 90 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* a0 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* b0 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* c0 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* d0 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* e0 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    /* f0 */  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
};

#define IS(c, cls) ((cclass[(unsigned char)(c)] & (cls)) != 0)

#define MAX_LEADING_EMPTY_LINES 4
#define MAX_CONNECTION_TOKENS 16 /* SESAME_ARRAY_LEN of connection_tokens */
#define MAX_HOST_NAME 255

/* Effective limits. */
struct lim {
    size_t request_line;
    size_t header_size;
    size_t headers;
};

/* State of one head parse. */
struct pstate {
    const char *buf;
    size_t len;
    struct lim lim;
    struct sesame_http_head *h;
    struct sesame_http_request *req; /* NULL for a response */
    int status;                      /* error status (requests) */
    const char *reason;              /* error reason */
    bool te_seen;
    bool host_seen;
    bool conn_close;
    bool conn_keepalive;
    const char *target_host;         /* absolute-form or CONNECT authority */
    size_t target_host_len;
};

static void
effective_limits(const struct sesame_http_limits *in, struct lim *out)
{
    out->request_line = SESAME_HTTP_DEFAULT_MAX_REQUEST_LINE;
    out->header_size = SESAME_HTTP_DEFAULT_MAX_HEADER_SIZE;
    out->headers = SESAME_HTTP_DEFAULT_MAX_HEADERS;
    if (in != NULL) {
        if (in->max_request_line > 0)
            out->request_line = in->max_request_line;
        if (in->max_header_size > 0)
            out->header_size = in->max_header_size;
        if (in->max_headers > 0)
            out->headers = in->max_headers;
    }
    if (out->header_size > SIZE_MAX / 4) /* keeps index arithmetic from wrapping */
        out->header_size = SIZE_MAX / 4;
    if (out->headers > SESAME_HTTP_MAX_HEADERS)
        out->headers = SESAME_HTTP_MAX_HEADERS;
    if (out->request_line > out->header_size)
        out->request_line = out->header_size;
}

static int
fail(struct pstate *ps, int status, const char *reason)
{
    ps->status = status;
    ps->reason = reason;
    return SESAME_ERROR;
}

/* Case-insensitive comparison of s[0..n) with a lower-case literal made of
 * letters, digits and '-'. */
static bool
lit_ieq(const char *s, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

#define LIT_IEQ(s, n, lit) lit_ieq((s), (n), lit, sizeof(lit) - 1)

/* Validates a port: 1 to 5 digits, <= 65535. */
static bool
valid_port(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!IS(s[i], C_DIGIT))
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v <= 65535;
}

/* Validates uri-host [":" port] as restricted in parser.h. */
static bool
valid_host(const char *s, size_t n, bool port_required)
{
    size_t i = 0;
    if (n == 0)
        return false;
    if (s[0] == '[') {
        bool colon = false;
        for (i = 1; i < n && s[i] != ']'; i++) {
            if (s[i] == ':')
                colon = true;
            else if (!IS(s[i], C_HEX) && s[i] != '.')
                return false;
        }
        if (i >= n || !colon || i < 3 || i > 46)
            return false;
        i++; /* past ']' */
    } else {
        while (i < n && IS(s[i], C_HOST))
            i++;
        if (i == 0 || i > MAX_HOST_NAME)
            return false;
    }
    if (i == n)
        return !port_required;
    if (s[i] != ':')
        return false;
    return valid_port(s + i + 1, n - i - 1);
}

/* Finds the CRLF ending the line that starts at `start`, whose LF must lie
 * below index `end` (else `st`/`why`). Sets *cr to the index of the CR. */
static int
find_line(struct pstate *ps, size_t start, size_t end, int st, const char *why, size_t *cr)
{
    size_t stop = ps->len < end ? ps->len : end;
    const char *lf = start < stop ? memchr(ps->buf + start, '\n', stop - start) : NULL;
    if (lf == NULL) {
        if (ps->len >= end)
            return fail(ps, st, why);
        return SESAME_AGAIN;
    }
    size_t i = (size_t)(lf - ps->buf);
    if (i == start || ps->buf[i - 1] != '\r')
        return fail(ps, 400, "bare LF");
    *cr = i - 1;
    return SESAME_OK;
}

/* Finds the end of the first line (request or status line) starting at
 * `start`: 414 when its content exceeds the request-line limit, 431 when it
 * runs past the head limit. */
static int
find_first_line(struct pstate *ps, size_t start, size_t *cr)
{
    size_t rl_end = start + ps->lim.request_line + 2; /* LF index must be below */
    size_t end = rl_end < ps->lim.header_size ? rl_end : ps->lim.header_size;
    size_t stop = ps->len < end ? ps->len : end;
    const char *lf = start < stop ? memchr(ps->buf + start, '\n', stop - start) : NULL;
    if (lf == NULL) {
        size_t avail = stop > start ? stop - start : 0;
        size_t content_min = avail;
        if (avail > 0 && ps->buf[stop - 1] == '\r')
            content_min--;
        if (content_min > ps->lim.request_line)
            return fail(ps, 414, "request line too long");
        if (ps->len >= ps->lim.header_size)
            return fail(ps, 431, "head too large");
        return SESAME_AGAIN;
    }
    size_t i = (size_t)(lf - ps->buf);
    if (i == start || ps->buf[i - 1] != '\r')
        return fail(ps, 400, "bare LF");
    *cr = i - 1;
    return SESAME_OK;
}

/* Parses "HTTP/" DIGIT "." DIGIT at s[0..8). Returns SESAME_OK, or an error
 * with 400 (malformed) or 505 (other version). */
static int
parse_version(struct pstate *ps, const char *s, size_t n)
{
    if (n != 8 || memcmp(s, "HTTP/", 5) != 0 || !IS(s[5], C_DIGIT) || s[6] != '.' ||
        !IS(s[7], C_DIGIT))
        return fail(ps, 400, "malformed HTTP version");
    if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
        return fail(ps, 505, "HTTP version not supported");
    ps->h->version_minor = s[7] - '0';
    return SESAME_OK;
}

static int
parse_content_length(struct pstate *ps, const char *v, size_t n)
{
    if (ps->h->content_length >= 0)
        return fail(ps, 400, "duplicate Content-Length");
    if (ps->te_seen)
        return fail(ps, 400, "Content-Length with Transfer-Encoding");
    if (n == 0)
        return fail(ps, 400, "empty Content-Length");
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!IS(v[i], C_DIGIT))
            return fail(ps, 400, "invalid Content-Length");
        int d = v[i] - '0';
        if (x > (INT64_MAX - d) / 10)
            return fail(ps, 400, "Content-Length overflow");
        x = x * 10 + d;
    }
    ps->h->content_length = x;
    return SESAME_OK;
}

static int
parse_transfer_encoding(struct pstate *ps, const char *v, size_t n)
{
    if (ps->h->version_minor == 0)
        return fail(ps, 400, "Transfer-Encoding in HTTP/1.0");
    if (ps->h->content_length >= 0)
        return fail(ps, 400, "Content-Length with Transfer-Encoding");
    ps->te_seen = true;
    size_t i = 0;
    for (;;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t s = i;
        while (i < n && IS(v[i], C_TCHAR))
            i++;
        size_t e = i;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (e == s || (i < n && v[i] != ','))
            return fail(ps, 400, "malformed Transfer-Encoding");
        if (!LIT_IEQ(v + s, e - s, "chunked"))
            return fail(ps, 501, "unsupported Transfer-Encoding");
        if (ps->h->chunked)
            return fail(ps, 400, "chunked applied twice");
        ps->h->chunked = true;
        if (i == n)
            return SESAME_OK;
        i++; /* past ',' */
    }
}

static int
parse_connection(struct pstate *ps, const char *v, size_t n)
{
    struct sesame_http_head *h = ps->h;
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t s = i;
        while (i < n && IS(v[i], C_TCHAR))
            i++;
        size_t e = i;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] != ',')
            return fail(ps, 400, "malformed Connection");
        i++; /* past ',' (or the end) */
        if (e == s)
            continue; /* empty list element */
        if (h->nconnection_tokens == MAX_CONNECTION_TOKENS)
            return fail(ps, 400, "too many Connection tokens");
        h->connection_tokens[h->nconnection_tokens].p = v + s;
        h->connection_tokens[h->nconnection_tokens].n = e - s;
        h->nconnection_tokens++;
        if (LIT_IEQ(v + s, e - s, "close"))
            ps->conn_close = true;
        else if (LIT_IEQ(v + s, e - s, "keep-alive"))
            ps->conn_keepalive = true;
        else if (LIT_IEQ(v + s, e - s, "upgrade"))
            h->connection_upgrade = true;
    }
    return SESAME_OK;
}

/* Parses the field line buf[s..e) (CR at e). */
static int
parse_field(struct pstate *ps, size_t s, size_t e)
{
    const char *b = ps->buf;
    struct sesame_http_head *h = ps->h;
    if (b[s] == ' ' || b[s] == '\t')
        return fail(ps, 400, "obsolete line folding");
    size_t i = s;
    while (i < e && IS(b[i], C_TCHAR))
        i++;
    if (i == e || b[i] != ':') {
        if (i < e && (b[i] == ' ' || b[i] == '\t'))
            return fail(ps, 400, "whitespace before colon");
        return fail(ps, 400, "invalid header name");
    }
    if (i == s)
        return fail(ps, 400, "empty header name");
    size_t name_len = i - s;
    size_t vs = i + 1;
    for (size_t k = vs; k < e; k++) {
        if (!IS(b[k], C_FVALUE))
            return fail(ps, 400, "control character in header value");
    }
    while (vs < e && (b[vs] == ' ' || b[vs] == '\t'))
        vs++;
    size_t ve = e;
    while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
        ve--;
    if (h->nheaders >= ps->lim.headers)
        return fail(ps, 431, "too many headers");
    struct sesame_http_header *f = &h->headers[h->nheaders++];
    f->name = b + s;
    f->name_len = name_len;
    f->value = b + vs;
    f->value_len = ve - vs;

    const char *v = f->value;
    size_t vn = f->value_len;
    switch (name_len) {
    case 4:
        if (ps->req != NULL && LIT_IEQ(f->name, name_len, "host")) {
            if (ps->host_seen)
                return fail(ps, 400, "duplicate Host");
            ps->host_seen = true;
            if (!valid_host(v, vn, false))
                return fail(ps, 400, "invalid Host");
            ps->req->host = v;
            ps->req->host_len = vn;
        }
        break;
    case 6:
        if (ps->req != NULL && LIT_IEQ(f->name, name_len, "expect") &&
            LIT_IEQ(v, vn, "100-continue"))
            ps->req->expect_continue = true;
        break;
    case 10:
        if (LIT_IEQ(f->name, name_len, "connection"))
            return parse_connection(ps, v, vn);
        break;
    case 14:
        if (LIT_IEQ(f->name, name_len, "content-length"))
            return parse_content_length(ps, v, vn);
        break;
    case 17:
        if (LIT_IEQ(f->name, name_len, "transfer-encoding"))
            return parse_transfer_encoding(ps, v, vn);
        break;
    default:
        break;
    }
    return SESAME_OK;
}

/* Parses the header lines from `p` to the empty line. */
static int
parse_fields(struct pstate *ps, size_t p)
{
    for (;;) {
        size_t cr;
        int rc = find_line(ps, p, ps->lim.header_size, 431, "head too large", &cr);
        if (rc != SESAME_OK)
            return rc;
        if (cr == p) {
            ps->h->head_len = cr + 2;
            break;
        }
        rc = parse_field(ps, p, cr);
        if (rc != SESAME_OK)
            return rc;
        p = cr + 2;
    }
    struct sesame_http_head *h = ps->h;
    if (h->version_minor == 1)
        h->keep_alive = !ps->conn_close;
    else
        h->keep_alive = ps->conn_keepalive && !ps->conn_close;
    return SESAME_OK;
}

static void
head_init(struct sesame_http_head *h)
{
    h->version_minor = 0;
    h->nheaders = 0;
    h->content_length = -1;
    h->chunked = false;
    h->keep_alive = false;
    h->connection_upgrade = false;
    h->nconnection_tokens = 0;
    h->head_len = 0;
}

static enum sesame_http_method
method_of(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return SESAME_HTTP_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return SESAME_HTTP_PUT;
        break;
    case 4:
        if (memcmp(m, "HEAD", 4) == 0)
            return SESAME_HTTP_HEAD;
        if (memcmp(m, "POST", 4) == 0)
            return SESAME_HTTP_POST;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return SESAME_HTTP_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return SESAME_HTTP_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return SESAME_HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return SESAME_HTTP_OPTIONS;
        if (memcmp(m, "CONNECT", 7) == 0)
            return SESAME_HTTP_CONNECT;
        break;
    default:
        break;
    }
    return SESAME_HTTP_OTHER;
}

/* Splits t[0..n), which starts with '/', into path and query. */
static void
split_path(struct sesame_http_request *req, const char *t, size_t n)
{
    const char *q = memchr(t, '?', n);
    if (q == NULL) {
        req->path = t;
        req->path_len = n;
    } else {
        req->path = t;
        req->path_len = (size_t)(q - t);
        req->query = q + 1;
        req->query_len = n - req->path_len - 1;
    }
}

/* Classifies and splits the request-target (already known to hold only
 * C_TARGET bytes). */
static int
parse_target(struct pstate *ps)
{
    struct sesame_http_request *req = ps->req;
    const char *t = req->target;
    size_t n = req->target_len;
    if (req->method == SESAME_HTTP_CONNECT) {
        if (!valid_host(t, n, true))
            return fail(ps, 400, "invalid CONNECT target");
        ps->target_host = t;
        ps->target_host_len = n;
        return SESAME_OK;
    }
    if (t[0] == '/') {
        split_path(req, t, n);
        return SESAME_OK;
    }
    if (n == 1 && t[0] == '*') {
        if (req->method != SESAME_HTTP_OPTIONS)
            return fail(ps, 400, "asterisk target without OPTIONS");
        req->asterisk_form = true;
        return SESAME_OK;
    }
    size_t skip;
    if (n >= 7 && LIT_IEQ(t, 7, "http://"))
        skip = 7;
    else if (n >= 8 && LIT_IEQ(t, 8, "https://"))
        skip = 8;
    else
        return fail(ps, 400, "invalid request-target");
    size_t a = skip, b = skip;
    while (b < n && t[b] != '/' && t[b] != '?')
        b++;
    if (!valid_host(t + a, b - a, false))
        return fail(ps, 400, "invalid absolute-form authority");
    req->absolute_form = true;
    ps->target_host = t + a;
    ps->target_host_len = b - a;
    if (b < n && t[b] == '/') {
        split_path(req, t + b, n - b);
    } else {
        req->path = "/";
        req->path_len = 1;
        if (b < n) {
            req->query = t + b + 1;
            req->query_len = n - b - 1;
        }
    }
    return SESAME_OK;
}

static void
request_init(struct sesame_http_request *req)
{
    head_init(&req->h);
    req->method = SESAME_HTTP_OTHER;
    req->method_text = NULL;
    req->method_len = 0;
    req->target = NULL;
    req->target_len = 0;
    req->path = NULL;
    req->path_len = 0;
    req->query = NULL;
    req->query_len = 0;
    req->host = NULL;
    req->host_len = 0;
    req->absolute_form = false;
    req->asterisk_form = false;
    req->expect_continue = false;
    req->error_status = 0;
    req->error_reason = NULL;
}

static int
parse_request(struct pstate *ps)
{
    const char *b = ps->buf;
    struct sesame_http_request *req = ps->req;
    size_t p = 0;
    for (int empty = 0;; empty++) {
        if (p >= ps->len)
            return SESAME_AGAIN;
        if (b[p] == '\n')
            return fail(ps, 400, "bare LF");
        if (b[p] != '\r')
            break;
        if (p + 1 >= ps->len)
            return SESAME_AGAIN;
        if (b[p + 1] != '\n')
            return fail(ps, 400, "bare CR");
        if (empty == MAX_LEADING_EMPTY_LINES)
            return fail(ps, 400, "too many empty lines");
        p += 2;
    }
    size_t cr;
    int rc = find_first_line(ps, p, &cr);
    if (rc != SESAME_OK)
        return rc;

    size_t i = p;
    while (i < cr && IS(b[i], C_TCHAR))
        i++;
    if (i == p || i == cr || b[i] != ' ')
        return fail(ps, 400, "invalid method");
    req->method_text = b + p;
    req->method_len = i - p;
    req->method = method_of(req->method_text, req->method_len);
    size_t t = ++i;
    while (i < cr && IS(b[i], C_TARGET))
        i++;
    if (i == t || i == cr || b[i] != ' ')
        return fail(ps, 400, "invalid request-target");
    req->target = b + t;
    req->target_len = i - t;
    i++;
    rc = parse_version(ps, b + i, cr - i);
    if (rc != SESAME_OK)
        return rc;
    rc = parse_target(ps);
    if (rc != SESAME_OK)
        return rc;

    rc = parse_fields(ps, cr + 2);
    if (rc != SESAME_OK)
        return rc;
    if (req->h.version_minor == 1 && !ps->host_seen)
        return fail(ps, 400, "missing Host");
    if (ps->target_host != NULL) {
        req->host = ps->target_host;
        req->host_len = ps->target_host_len;
    }
    return SESAME_OK;
}

int
sesame_http_parse_request(const char *buf, size_t len, const struct sesame_http_limits *limits,
                          struct sesame_http_request *req)
{
    struct pstate ps = {.buf = buf, .len = len, .h = &req->h, .req = req};
    effective_limits(limits, &ps.lim);
    request_init(req);
    int rc = parse_request(&ps);
    if (rc == SESAME_ERROR) {
        req->error_status = ps.status;
        req->error_reason = ps.reason;
    }
    return rc;
}

static int
parse_response(struct pstate *ps, struct sesame_http_response *resp)
{
    const char *b = ps->buf;
    if (ps->len > 0 && (b[0] == '\r' || b[0] == '\n'))
        return fail(ps, 502, "empty line before status line");
    size_t cr;
    int rc = find_first_line(ps, 0, &cr);
    if (rc == SESAME_ERROR && ps->status == 414)
        return fail(ps, 502, "status line too long");
    if (rc != SESAME_OK)
        return rc;
    if (cr < 12 || b[8] != ' ')
        return fail(ps, 502, "malformed status line");
    rc = parse_version(ps, b, 8);
    if (rc != SESAME_OK)
        return rc;
    if (!IS(b[9], C_DIGIT) || !IS(b[10], C_DIGIT) || !IS(b[11], C_DIGIT) || b[9] < '1' ||
        b[9] > '5')
        return fail(ps, 502, "invalid status code");
    resp->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    if (cr > 12) {
        if (b[12] != ' ')
            return fail(ps, 502, "malformed status line");
        for (size_t i = 13; i < cr; i++) {
            if (!IS(b[i], C_FVALUE))
                return fail(ps, 502, "control character in reason phrase");
        }
        resp->reason = b + 13;
        resp->reason_len = cr - 13;
    } else {
        resp->reason = b + 12;
        resp->reason_len = 0;
    }
    return parse_fields(ps, cr + 2);
}

int
sesame_http_parse_response(const char *buf, size_t len, const struct sesame_http_limits *limits,
                           struct sesame_http_response *resp)
{
    struct pstate ps = {.buf = buf, .len = len, .h = &resp->h, .req = NULL};
    effective_limits(limits, &ps.lim);
    head_init(&resp->h);
    resp->status = 0;
    resp->reason = NULL;
    resp->reason_len = 0;
    resp->error_reason = NULL;
    int rc = parse_response(&ps, resp);
    if (rc == SESAME_ERROR)
        resp->error_reason = ps.reason;
    return rc;
}

enum sesame_http_body_kind
sesame_http_response_body_kind(const struct sesame_http_response *resp, bool head_request)
{
    if (head_request || resp->status < 200 || resp->status == 204 || resp->status == 304)
        return SESAME_BODY_NONE;
    if (resp->h.chunked)
        return SESAME_BODY_CHUNKED;
    if (resp->h.content_length >= 0)
        return SESAME_BODY_LENGTH;
    return SESAME_BODY_UNTIL_CLOSE;
}

enum sesame_http_body_kind
sesame_http_request_body_kind(const struct sesame_http_request *req)
{
    if (req->h.chunked)
        return SESAME_BODY_CHUNKED;
    if (req->h.content_length >= 0)
        return SESAME_BODY_LENGTH;
    return SESAME_BODY_NONE;
}

bool
sesame_http_need_parse(const char *buf, size_t prev_len, size_t len,
                       const struct sesame_http_limits *limits)
{
    if (prev_len == 0 || prev_len >= len)
        return true;
    /* A CR just before the new bytes: the next byte decides bare CR or not. */
    if (buf[prev_len - 1] == '\r')
        return true;
    size_t n = len - prev_len;
    if (memchr(buf + prev_len, '\n', n) != NULL || memchr(buf + prev_len, '\r', n) != NULL)
        return true;
    struct lim lim;
    effective_limits(limits, &lim);
    if (len >= lim.header_size)
        return true;
    /* The first line starts at index 8 at most (4 leading CRLFs); an LF at an
     * index >= 8 ends it. Until then its length limit may be reached. */
    if (len > lim.request_line) {
        size_t from = 2 * MAX_LEADING_EMPTY_LINES;
        if (prev_len <= from || memchr(buf + from, '\n', prev_len - from) == NULL)
            return true;
    }
    return false;
}

const struct sesame_http_header *
sesame_http_find_header(const struct sesame_http_head *h, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct sesame_http_header *f = &h->headers[i];
        if (f->name_len != n)
            continue;
        size_t k = 0;
        for (; k < n; k++) {
            unsigned char a = (unsigned char)f->name[k], c = (unsigned char)name[k];
            if (a >= 'A' && a <= 'Z')
                a = (unsigned char)(a + ('a' - 'A'));
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c + ('a' - 'A'));
            if (a != c)
                break;
        }
        if (k == n)
            return f;
    }
    return NULL;
}

/* ---- chunked decoder ---- */

enum {
    CH_SIZE = 0, /* hex digits of chunk-size (line_len counts them) */
    CH_SIZE_WS,  /* BWS after the size: SP/HTAB or ';' */
    CH_EXT,      /* chunk extensions up to the CR */
    CH_SIZE_LF,  /* LF ending the size line */
    CH_DATA,     /* `remaining` bytes of payload */
    CH_DATA_CR,  /* CR after the payload */
    CH_DATA_LF,  /* LF after the payload */
    CH_TR_START, /* start of a trailer line or the final CRLF */
    CH_TR_NAME,  /* trailer field name */
    CH_TR_VALUE, /* trailer field value up to the CR */
    CH_TR_LF,    /* LF ending a trailer line */
    CH_END_LF,   /* LF of the final CRLF */
    CH_DONE,
    CH_ERROR,
};

#define MAX_CHUNK_SIZE_DIGITS 16

void
sesame_http_chunked_init(struct sesame_http_chunked *c)
{
    c->state = CH_SIZE;
    c->remaining = 0;
    c->line_len = 0;
    c->trailer_bytes = 0;
}

int
sesame_http_chunked_feed(struct sesame_http_chunked *c, const char *in, size_t len,
                         size_t *consumed, size_t *data_off, size_t *data_len)
{
    *consumed = 0;
    *data_off = 0;
    *data_len = 0;
    if (c->state == CH_DONE)
        return SESAME_OK;
    if (c->state == CH_ERROR)
        return SESAME_ERROR;
    size_t i = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case CH_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > c->remaining)
                n = (size_t)c->remaining;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            *data_off = i;
            *data_len = n;
            *consumed = i + n;
            return SESAME_AGAIN;
        }
        case CH_SIZE: {
            int d = sesame_hexval(ch);
            if (d >= 0) {
                if (c->line_len == MAX_CHUNK_SIZE_DIGITS)
                    goto bad;
                c->remaining = (c->remaining << 4) | (uint64_t)d;
                c->line_len++;
                break;
            }
            if (c->line_len == 0)
                goto bad;
            c->line_len++;
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == ';')
                c->state = CH_EXT;
            else if (ch == ' ' || ch == '\t')
                c->state = CH_SIZE_WS;
            else
                goto bad;
            break;
        }
        case CH_SIZE_WS:
            if (++c->line_len > SESAME_CHUNKED_MAX_LINE)
                goto bad;
            if (ch == ';')
                c->state = CH_EXT;
            else if (ch != ' ' && ch != '\t')
                goto bad;
            break;
        case CH_EXT:
            if (ch == '\r') {
                c->state = CH_SIZE_LF;
                break;
            }
            if (++c->line_len > SESAME_CHUNKED_MAX_LINE || !IS(ch, C_FVALUE))
                goto bad;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                goto bad;
            c->line_len = 0;
            c->state = c->remaining == 0 ? CH_TR_START : CH_DATA;
            break;
        case CH_DATA_CR:
            if (ch != '\r')
                goto bad;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                goto bad;
            c->state = CH_SIZE;
            c->remaining = 0;
            c->line_len = 0;
            break;
        case CH_TR_START:
            if (++c->trailer_bytes > SESAME_CHUNKED_MAX_TRAILERS)
                goto bad;
            if (ch == '\r')
                c->state = CH_END_LF;
            else if (IS(ch, C_TCHAR))
                c->state = CH_TR_NAME;
            else
                goto bad; /* obs-fold, empty name, bare LF, junk */
            break;
        case CH_TR_NAME:
            if (++c->trailer_bytes > SESAME_CHUNKED_MAX_TRAILERS)
                goto bad;
            if (ch == ':')
                c->state = CH_TR_VALUE;
            else if (!IS(ch, C_TCHAR))
                goto bad;
            break;
        case CH_TR_VALUE:
            if (++c->trailer_bytes > SESAME_CHUNKED_MAX_TRAILERS)
                goto bad;
            if (ch == '\r')
                c->state = CH_TR_LF;
            else if (!IS(ch, C_FVALUE))
                goto bad;
            break;
        case CH_TR_LF:
            if (++c->trailer_bytes > SESAME_CHUNKED_MAX_TRAILERS || ch != '\n')
                goto bad;
            c->state = CH_TR_START;
            break;
        case CH_END_LF:
            if (++c->trailer_bytes > SESAME_CHUNKED_MAX_TRAILERS || ch != '\n')
                goto bad;
            c->state = CH_DONE;
            *consumed = i + 1;
            return SESAME_OK;
        default:
            goto bad;
        }
        i++;
    }
    *consumed = i;
    return SESAME_AGAIN;
bad:
    c->state = CH_ERROR;
    *consumed = i;
    return SESAME_ERROR;
}
