/*
 * common.h - conventions shared by every Sésame module.
 *
 * Return convention (read this once):
 *   - "syscall-like" functions return SESAME_OK (0) on success and a negative
 *     value otherwise: SESAME_ERROR (-1) for a failure, SESAME_AGAIN (-2) when
 *     the work continues asynchronously and a callback will report the result,
 *     SESAME_DECLINED (-3) when the module does not handle the input (the
 *     caller tries the next candidate).
 *   - constructors return a pointer, NULL on failure.
 *   - predicates return bool.
 * Errors travel up as text: a function that can fail for a reason a human
 * must read takes `char **err` and, on failure, stores a malloc'd message the
 * caller owns and frees (sesame_err_set). The caller decides whether to log.
 * Free functions accept NULL.
 */
#ifndef SESAME_CORE_COMMON_H
#define SESAME_CORE_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESAME_OK 0
#define SESAME_ERROR (-1)
#define SESAME_AGAIN (-2)
#define SESAME_DECLINED (-3)

#define SESAME_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define SESAME_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SESAME_PRINTF(f, a)
#endif

/* Stores a formatted, malloc'd message in *err (if err is not NULL and *err
 * is NULL: the first error wins). Always returns SESAME_ERROR. */
int sesame_err_set(char **err, const char *fmt, ...) SESAME_PRINTF(2, 3);

/* Appends a formatted line (a newline added) to the malloc'd list *errors
 * (NULL: an empty list), for loaders that report every problem at once. */
void sesame_err_append(char **errors, const char *fmt, ...) SESAME_PRINTF(2, 3);

/* The value of a hexadecimal digit (either case), or -1. */
int sesame_hexval(int c);

/* Allocation helpers: abort the process on out-of-memory (a daemon that cannot
 * allocate a few bytes cannot serve safely). */
void *sesame_malloc(size_t n);
void *sesame_calloc(size_t n, size_t size);
void *sesame_realloc(void *p, size_t n);
char *sesame_strdup(const char *s);
char *sesame_strndup(const char *s, size_t n);
/* Returns a malloc'd formatted string; never NULL. */
char *sesame_asprintf(const char *fmt, ...) SESAME_PRINTF(1, 2);

#endif
