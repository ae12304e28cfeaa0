#include "core/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
oom(void)
{
    static const char msg[] = "sesame: out of memory\n";
    fwrite(msg, 1, sizeof(msg) - 1, stderr);
    abort();
}

void *
sesame_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom();
    return p;
}

void *
sesame_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom();
    return p;
}

void *
sesame_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom();
    return q;
}

char *
sesame_strdup(const char *s)
{
    return sesame_strndup(s, strlen(s));
}

char *
sesame_strndup(const char *s, size_t n)
{
    char *p = sesame_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *vasprintf_or_die(const char *fmt, va_list ap) SESAME_PRINTF(1, 0);

static char *
vasprintf_or_die(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        oom();
    char *p = sesame_malloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *
sesame_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = vasprintf_or_die(fmt, ap);
    va_end(ap);
    return p;
}

void
sesame_err_append(char **errors, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = vasprintf_or_die(fmt, ap);
    va_end(ap);
    size_t old = *errors ? strlen(*errors) : 0, n = strlen(line);
    *errors = sesame_realloc(*errors, old + n + 2);
    memcpy(*errors + old, line, n);
    (*errors)[old + n] = '\n';
    (*errors)[old + n + 1] = '\0';
    free(line);
}

int
sesame_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
sesame_err_set(char **err, const char *fmt, ...)
{
    if (err == NULL || *err != NULL)
        return SESAME_ERROR;
    va_list ap;
    va_start(ap, fmt);
    *err = vasprintf_or_die(fmt, ap);
    va_end(ap);
    return SESAME_ERROR;
}
