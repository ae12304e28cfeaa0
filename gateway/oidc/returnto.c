/*
 * returnto.c - return_to validation (see returnto.h).
 */
#include "oidc/returnto.h"

#include <string.h>

static unsigned char
lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Byte-level rules common to every accepted value. */
static bool
chars_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x21 || c > 0x7e || c == '\\' || c == '@')
            return false;
        if (c != '%')
            continue;
        if (n - i < 3)
            return false;
        int hi = sesame_hexval((unsigned char)v[i + 1]), lo = sesame_hexval((unsigned char)v[i + 2]);
        if (hi < 0 || lo < 0)
            return false;
        int d = hi * 16 + lo;
        if (d <= 0x20 || d == 0x7f || d == '/' || d == '\\' || d == '@' || d == '%')
            return false;
        i += 2;
    }
    return true;
}

/* True when seg[0..n) is "." or ".." once %2e escapes are decoded. */
static bool
dot_segment(const char *seg, size_t n)
{
    size_t dots = 0;
    for (size_t i = 0; i < n;) {
        if (seg[i] == '.') {
            i++;
        } else if (n - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                   lower((unsigned char)seg[i + 2]) == 'e') {
            i += 3;
        } else {
            return false;
        }
        dots++;
    }
    return dots == 1 || dots == 2;
}

/* Path rules: p[0..n) starts with '/'; up to the first '?' or '#', no empty
 * segment and no dot segment. */
static bool
path_ok(const char *p, size_t n)
{
    size_t end = 0;
    while (end < n && p[end] != '?' && p[end] != '#')
        end++;
    size_t i = 0;
    while (i < end) {
        /* p[i] == '/' */
        size_t s = i + 1, e = s;
        while (e < end && p[e] != '/')
            e++;
        if (e < end && e == s)
            return false; /* "//" */
        if (dot_segment(p + s, e - s))
            return false;
        i = e;
    }
    return true;
}

bool
sesame_returnto_is_safe_path(const char *value, size_t len)
{
    if (value == NULL || len == 0 || len > SESAME_RETURNTO_MAX_LEN || value[0] != '/')
        return false;
    return chars_ok(value, len) && path_ok(value, len);
}

/* Parses a port: 1 to 5 digits, no leading zero, 1..65535. */
static bool
parse_port(const char *s, size_t n, unsigned *port)
{
    if (n == 0 || n > 5 || s[0] == '0')
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = v;
    return true;
}

/* True when s[0..n) starts with the lower-case literal lit, ignoring ASCII case. */
static bool
prefix_ieq(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (n < k)
        return false;
    for (size_t i = 0; i < k; i++) {
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return false;
    }
    return true;
}

struct origin {
    bool https;
    const char *host;
    size_t host_len;
    unsigned port;
    size_t end; /* index after the authority */
};

/* Parses "http(s)://host[:port]" at the start of s[0..n). The host is made
 * of ALPHA DIGIT '-' '.' only, does not start or end with '.'. */
static bool
parse_origin(const char *s, size_t n, struct origin *o)
{
    size_t i;
    if (prefix_ieq(s, n, "https://")) {
        o->https = true;
        o->port = 443;
        i = 8;
    } else if (prefix_ieq(s, n, "http://")) {
        o->https = false;
        o->port = 80;
        i = 7;
    } else {
        return false;
    }
    size_t hs = i;
    while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                     (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
        i++;
    if (i == hs || s[hs] == '.' || s[i - 1] == '.')
        return false;
    o->host = s + hs;
    o->host_len = i - hs;
    if (i < n && s[i] == ':') {
        size_t ps = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (!parse_port(s + ps, i - ps, &o->port))
            return false;
    }
    if (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#')
        return false; /* '@', '\', ';' or anything else ends no authority of ours */
    o->end = i;
    return true;
}

static bool
host_listed(const char *h, size_t n, const char *const *hosts, size_t nhosts)
{
    if (hosts == NULL)
        return false;
    for (size_t i = 0; i < nhosts; i++) {
        const char *c = hosts[i];
        if (c == NULL || strlen(c) != n)
            continue;
        size_t k = 0;
        while (k < n && lower((unsigned char)h[k]) == lower((unsigned char)c[k]))
            k++;
        if (k == n)
            return true;
    }
    return false;
}

char *
sesame_returnto_check(const char *value, size_t len, const char *const *hosts, size_t nhosts,
                      const char *public_url)
{
    if (value == NULL || len == 0 || len > SESAME_RETURNTO_MAX_LEN)
        return NULL;
    if (value[0] == '/')
        return sesame_returnto_is_safe_path(value, len) ? sesame_strndup(value, len) : NULL;
    if (public_url == NULL || !chars_ok(value, len))
        return NULL;
    struct origin pub, o;
    if (!parse_origin(public_url, strlen(public_url), &pub) || !parse_origin(value, len, &o))
        return NULL;
    if (o.https != pub.https || o.port != pub.port)
        return NULL;
    if (!host_listed(o.host, o.host_len, hosts, nhosts))
        return NULL;
    if (o.end < len && value[o.end] == '/' && !path_ok(value + o.end, len - o.end))
        return NULL;
    return sesame_strndup(value, len);
}
