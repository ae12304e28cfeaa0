/*
 * url.h - query strings and percent-encoding (RFC 3986), bounded and strict.
 */
#ifndef SESAME_CORE_URL_H
#define SESAME_CORE_URL_H

#include <event2/buffer.h>

#include "core/common.h"

/* Finds parameter `name` in a query string (without the '?') of `len` bytes
 * and percent-decodes its value ('+' is a space) into out (cap bytes,
 * NUL-terminated). Returns SESAME_OK when present exactly once,
 * SESAME_DECLINED when absent, SESAME_ERROR when present more than once,
 * badly encoded, decoding to a NUL byte, or longer than cap - 1. */
int sesame_url_query_get(const char *query, size_t len, const char *name, char *out, size_t cap);

/* True when no parameter name appears twice in the query (any name). At most
 * 64 parameters are examined; more is "not unique". */
bool sesame_url_query_unique(const char *query, size_t len);

/* Appends s (n bytes) percent-encoded: every byte outside the unreserved set
 * A-Z a-z 0-9 - . _ ~ becomes %XX (upper-case hex). */
void sesame_url_encode(struct evbuffer *out, const char *s, size_t n);

/* Same into a malloc'd NUL-terminated string. */
char *sesame_url_encode_str(const char *s);

/* Percent-decodes s (n bytes) into out (cap bytes, NUL-terminated); '+' stays
 * '+'. Returns the decoded length, or -1 on bad encoding, NUL byte or overflow. */
long sesame_url_decode(const char *s, size_t n, char *out, size_t cap);

#endif
