/*
 * canon.c - canonical request path and Host value (rules in canon.h).
 *
 * The path is read once, left to right. Each segment is written normalised
 * (escapes of unreserved octets decoded, other escapes upper-cased) at the
 * end of out, then looked at as a whole: a dot segment is taken back off,
 * and ".." also takes back the segment before it. out always holds a prefix
 * of the result that ends in '/' between two segments, and never holds more
 * bytes than were read from the input, which is why the result fits in len
 * bytes and why out may be the input itself.
 */
#include "http/canon.h"

static bool
is_hex(unsigned char c)
{
    return sesame_hexval(c) >= 0;
}

static bool
is_alpha_digit(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool
is_unreserved(unsigned char c)
{
    return is_alpha_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static const char hexdigits[] = "0123456789ABCDEF";

static int
fail(char *out, size_t *out_len, const char **why, const char *reason)
{
    if (out != NULL)
        out[0] = '\0';
    if (out_len != NULL)
        *out_len = 0;
    if (why != NULL)
        *why = reason;
    return SESAME_ERROR;
}

/* True when path[*j..len) starts with a hex digit, raw or as a valid escape
 * of one; advances *j past it. */
static bool
next_is_hex(const char *path, size_t len, size_t *j)
{
    size_t k = *j;
    if (k >= len)
        return false;
    unsigned char c = (unsigned char)path[k];
    if (is_hex(c)) {
        *j = k + 1;
        return true;
    }
    if (c == '%' && len - k >= 3) {
        int h = sesame_hexval((unsigned char)path[k + 1]);
        int l = sesame_hexval((unsigned char)path[k + 2]);
        if (h >= 0 && l >= 0 && is_hex((unsigned char)(h * 16 + l))) {
            *j = k + 3;
            return true;
        }
    }
    return false;
}

/* UTF-8 state across consecutive escapes of octets >= 0x80: the number of
 * continuation bytes still expected and the range allowed for the next one
 * (Unicode table 3-7, which excludes overlong forms, surrogates and code
 * points above U+10FFFF). */
struct utf8 {
    int need;
    unsigned char lo, hi;
};

/* Feeds one octet >= 0x80; false when the sequence is ill-formed. */
static bool
utf8_feed(struct utf8 *u, unsigned char b)
{
    if (u->need > 0) {
        if (b < u->lo || b > u->hi)
            return false;
        u->need--;
        u->lo = 0x80;
        u->hi = 0xBF;
        return true;
    }
    u->lo = 0x80;
    u->hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        u->need = 1;
    } else if (b == 0xE0) {
        u->need = 2;
        u->lo = 0xA0;
    } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
        u->need = 2;
    } else if (b == 0xED) {
        u->need = 2;
        u->hi = 0x9F;
    } else if (b == 0xF0) {
        u->need = 3;
        u->lo = 0x90;
    } else if (b >= 0xF1 && b <= 0xF3) {
        u->need = 3;
    } else if (b == 0xF4) {
        u->need = 3;
        u->hi = 0x8F;
    } else {
        return false; /* 80..C1 (stray continuation, overlong lead) or F5..FF */
    }
    return true;
}

/* Reason for a raw byte that may not appear in a path, NULL when it may. */
static const char *
raw_refused(unsigned char c)
{
    if (c == '\0')
        return "NUL byte in path";
    if (c < 0x20 || c == 0x7f)
        return "control byte in path";
    if (c == ' ')
        return "space in path";
    if (c >= 0x80)
        return "non-ASCII byte in path";
    if (c == '\\')
        return "backslash in path";
    if (c == '#')
        return "'#' in path";
    if (c == '?')
        return "'?' in path";
    return NULL;
}

/* True when the normalised segment s[0..n) is "." or ".." followed by a ';'
 * (raw or as the escape "%3B"). */
static bool
dot_with_params(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && s[k] == '.' && k < 3)
        k++;
    if (k == 0 || k > 2 || k == n)
        return false;
    if (s[k] == ';')
        return true;
    return s[k] == '%' && n - k >= 3 && s[k + 1] == '3' && s[k + 2] == 'B';
}

/* True when the normalised segment s[0..n) is made only of dots and
 * encoded spaces ("%20"), with at least one dot, and is neither "." nor
 * "..": "...", "..%20", ".%20." are read as ".." or "." by backends that trim
 * trailing dots and spaces from file names (Windows, IIS). */
static bool
dots_and_spaces(const char *s, size_t n)
{
    size_t dots = 0;
    for (size_t k = 0; k < n;) {
        if (s[k] == '.') {
            dots++;
            k++;
        } else if (n - k >= 3 && s[k] == '%' && s[k + 1] == '2' && s[k + 2] == '0') {
            k += 3;
        } else {
            return false;
        }
    }
    return dots > 0;
}

int
sesame_canon_path(const char *path, size_t len, char *out, size_t *out_len, const char **why)
{
    if (path == NULL || out == NULL || out_len == NULL)
        return fail(out, out_len, why, "no path");
    if (len == 0 || path[0] != '/')
        return fail(out, out_len, why, "path does not start with '/'");

    struct utf8 u = {0, 0x80, 0xBF};
    size_t i = 1; /* next input byte */
    size_t o = 1; /* bytes of out in use; invariant o <= i */
    out[0] = '/';
    for (;;) {
        size_t seg = o; /* the segment is written at out[seg..o) */
        while (i < len && path[i] != '/') {
            unsigned char c = (unsigned char)path[i];
            if (c != '%') {
                const char *r = raw_refused(c);
                if (r != NULL)
                    return fail(out, out_len, why, r);
                if (u.need > 0)
                    return fail(out, out_len, why, "invalid UTF-8");
                out[o++] = (char)c;
                i++;
                continue;
            }
            if (len - i < 3)
                return fail(out, out_len, why, "invalid percent escape");
            int h = sesame_hexval((unsigned char)path[i + 1]);
            int l = sesame_hexval((unsigned char)path[i + 2]);
            if (h < 0 || l < 0)
                return fail(out, out_len, why, "invalid percent escape");
            unsigned char b = (unsigned char)(h * 16 + l);
            if (b >= 0x80) {
                if (!utf8_feed(&u, b))
                    return fail(out, out_len, why, "invalid UTF-8");
            } else if (u.need > 0) {
                return fail(out, out_len, why, "invalid UTF-8");
            }
            if (b == '/' || b == '\\')
                return fail(out, out_len, why, "encoded separator");
            if (b < 0x20 || b == 0x7f)
                return fail(out, out_len, why, "encoded control byte");
            if (b == '%') {
                size_t j = i + 3;
                if (next_is_hex(path, len, &j) && next_is_hex(path, len, &j))
                    return fail(out, out_len, why, "double encoding");
            }
            i += 3;
            if (is_unreserved(b)) {
                out[o++] = (char)b;
            } else {
                /* o + 3 <= i: the escape just read is the furthest byte overwritten */
                out[o++] = '%';
                out[o++] = hexdigits[b >> 4];
                out[o++] = hexdigits[b & 15];
            }
        }
        if (u.need > 0)
            return fail(out, out_len, why, "invalid UTF-8"); /* cut by '/' or the end */

        bool last = i >= len;
        size_t n = o - seg;
        bool dot = n == 1 && out[seg] == '.';
        bool dotdot = n == 2 && out[seg] == '.' && out[seg + 1] == '.';
        if (dot) {
            o = seg;
        } else if (dotdot) {
            if (seg == 1)
                return fail(out, out_len, why, "dot segment above the root");
            /* out[seg - 1] is the '/' ending the previous segment: go back to
             * just after the '/' that starts it */
            o = seg - 1;
            while (out[o - 1] != '/')
                o--;
        } else if (n > 0) {
            if (dot_with_params(out + seg, n))
                return fail(out, out_len, why, "dot segment with parameters");
            if (dots_and_spaces(out + seg, n))
                return fail(out, out_len, why, "dot segment with trailing dots or spaces");
            if (!last)
                out[o++] = '/'; /* over the input's '/' at i, or before it */
        }
        if (last)
            break;
        i++; /* past '/' */
    }
    out[o] = '\0';
    *out_len = o;
    return SESAME_OK;
}

#define MAX_HOST_NAME 255 /* as parser.c */

int
sesame_canon_host(const char *host, size_t len, char *out, size_t *out_len, size_t *name_len,
                  const char **why)
{
    if (name_len != NULL)
        *name_len = 0;
    if (host == NULL || out == NULL || out_len == NULL || name_len == NULL)
        return fail(out, out_len, why, "no Host");
    if (len == 0)
        return fail(out, out_len, why, "empty Host");

    size_t end;     /* end of the name as written */
    size_t keep;    /* bytes of the name kept */
    if (host[0] == '[') {
        bool colon = false;
        size_t i;
        for (i = 1; i < len && host[i] != ']'; i++) {
            unsigned char c = (unsigned char)host[i];
            if (c == ':')
                colon = true;
            else if (!is_hex(c) && c != '.')
                return fail(out, out_len, why, "invalid character in IPv6 literal");
        }
        if (i >= len)
            return fail(out, out_len, why, "unterminated IPv6 literal");
        if (!colon || i < 3 || i > 46)
            return fail(out, out_len, why, "invalid IPv6 literal");
        end = i + 1;
        keep = end;
    } else {
        size_t i = 0;
        while (i < len && (is_unreserved((unsigned char)host[i])))
            i++;
        if (i == 0)
            return fail(out, out_len, why, "empty host name");
        if (i > MAX_HOST_NAME)
            return fail(out, out_len, why, "host name too long");
        if (i == 1 && host[0] == '.')
            return fail(out, out_len, why, "host name is only '.'");
        if (i >= 2 && host[i - 1] == '.' && host[i - 2] == '.')
            return fail(out, out_len, why, "host name ends in '..'");
        end = i;
        keep = host[i - 1] == '.' ? i - 1 : i;
    }
    if (end < len) {
        if (host[end] != ':')
            return fail(out, out_len, why, "invalid character in Host");
        size_t p = len - end - 1;
        if (p == 0 || p > 5)
            return fail(out, out_len, why, "invalid port");
        unsigned long v = 0;
        for (size_t k = end + 1; k < len; k++) {
            unsigned char c = (unsigned char)host[k];
            if (c < '0' || c > '9')
                return fail(out, out_len, why, "invalid port");
            v = v * 10 + (unsigned long)(c - '0');
        }
        if (v > 65535)
            return fail(out, out_len, why, "invalid port");
    }

    /* valid: write it (every write lands at or before the byte it copies) */
    size_t o = 0;
    for (size_t k = 0; k < keep; k++)
        out[o++] = (char)lower((unsigned char)host[k]);
    for (size_t k = end; k < len; k++)
        out[o++] = host[k];
    out[o] = '\0';
    *out_len = o;
    *name_len = keep;
    return SESAME_OK;
}
