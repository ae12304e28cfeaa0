#include "core/url.h"

#include <stdlib.h>
#include <string.h>

static long
decode(const char *s, size_t n, char *out, size_t cap, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = sesame_hexval(s[i + 1]), l = sesame_hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h << 4 | l);
            i += 2;
            if (c == '\0')
                return -1;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    if (cap == 0)
        return -1;
    out[o] = '\0';
    return (long)o;
}

long
sesame_url_decode(const char *s, size_t n, char *out, size_t cap)
{
    return decode(s, n, out, cap, false);
}

int
sesame_url_query_get(const char *query, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    int found = 0;
    const char *p = query, *end = query ? query + len : NULL;
    if (cap > 0)
        out[0] = '\0';
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ne = eq ? eq : e;
        if ((size_t)(ne - p) == nl && memcmp(p, name, nl) == 0) {
            if (++found > 1)
                return SESAME_ERROR;
            const char *v = eq ? eq + 1 : e;
            if (decode(v, (size_t)(e - v), out, cap, true) < 0)
                return SESAME_ERROR;
        }
        p = amp ? amp + 1 : end;
    }
    return found ? SESAME_OK : SESAME_DECLINED;
}

bool
sesame_url_query_unique(const char *query, size_t len)
{
    struct { const char *p; size_t n; } seen[64];
    size_t count = 0;
    const char *p = query, *end = query ? query + len : NULL;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        size_t n = (size_t)((eq ? eq : e) - p);
        if (count == 64)
            return false;
        for (size_t i = 0; i < count; i++)
            if (seen[i].n == n && memcmp(seen[i].p, p, n) == 0)
                return false;
        seen[count].p = p;
        seen[count].n = n;
        count++;
        p = amp ? amp + 1 : end;
    }
    return true;
}

static bool
unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

void
sesame_url_encode(struct evbuffer *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char buf[256];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 3 > sizeof(buf)) {
            evbuffer_add(out, buf, o);
            o = 0;
        }
        if (unreserved(c)) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    evbuffer_add(out, buf, o);
}

char *
sesame_url_encode_str(const char *s)
{
    struct evbuffer *b = evbuffer_new();
    sesame_url_encode(b, s, strlen(s));
    size_t n = evbuffer_get_length(b);
    char *r = sesame_malloc(n + 1);
    evbuffer_remove(b, r, n);
    r[n] = '\0';
    evbuffer_free(b);
    return r;
}
