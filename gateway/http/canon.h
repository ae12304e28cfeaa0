/*
 * canon.h - canonical form of a request path and of a Host value.
 *
 * The gateway decides on the canonical path (which route, which tenant page,
 * whether sign-in is required) and forwards the canonical path, so that the
 * gateway and the backend can never read two different paths out of one
 * request (path confusion: "/static/../private", "/static/%2e%2e/private",
 * "/static/..;/private", "//private"...). Anything ambiguous is refused and
 * the caller answers 400.
 *
 * Pure functions over the caller's bytes: no allocation, no I/O, no global
 * state. The input need not be NUL-terminated.
 *
 * Path rules (sesame_canon_path), exactly:
 *  1. The input is an origin-form path without its query string: it is at
 *     least one byte long and starts with '/'; anything else is an error.
 *  2. Raw bytes refused: '\' (backslash), NUL, every control byte
 *     (0x00-0x1F, 0x7F), SP (0x20, which would split the request line sent
 *     to the backend), every byte >= 0x80, '#' and '?'. Every other byte
 *     0x21-0x7E other than '%' is copied as is.
 *  3. '%' must be followed by two hex digits of either case, else error
 *     ("invalid percent escape"). The octet it encodes decides:
 *     - unreserved (ALPHA DIGIT '-' '.' '_' '~'): written decoded;
 *     - '/' (%2F) or '\' (%5C): error ("encoded separator");
 *     - 0x00-0x1F or 0x7F: error ("encoded control byte");
 *     - '%' (%25) followed by two octets that are both hex digits, each
 *       written raw or percent-encoded ("%252e", "%2541", "%25%32%65"):
 *       error ("double encoding"); any other "%25" stays "%25";
 *     - >= 0x80: each maximal run of consecutive escapes of octets >= 0x80
 *       must be well-formed UTF-8 (Unicode table 3-7): no overlong form
 *       (%C0%AE, %E0%80%AE, %F0%80%80%AE), no surrogate (U+D800-DFFF, %ED%A0%80),
 *       nothing above U+10FFFF (%F4%90%80%80, %F5...), no lead byte without
 *       all its continuation bytes, no stray continuation byte; else error
 *       ("invalid UTF-8"). Valid sequences stay percent-encoded;
 *     - any other octet (SP, reserved characters, characters not allowed
 *       raw: %20 %22 %23 %3A %3B %3F %40 ...) stays percent-encoded.
 *     Every escape kept is written with upper-case hex ("%c3%a9" -> "%C3%A9").
 *  4. Segments are split on the raw '/' (an encoded '/' is refused, so this
 *     is the same as splitting the decoded form) and, left to right:
 *     - empty segments are dropped ("//a///b" -> "/a/b"), but an input ending
 *       in '/' gives a result ending in '/' ("/a/" -> "/a/", "/a//" -> "/a/");
 *     - a "." segment is dropped;
 *     - a ".." segment removes the last segment kept so far (RFC 3986
 *       5.2.4); with none left to remove (climbing above the root: "/..",
 *       "/a/../..", "/%2e%2e/x") it is an error ("dot segment above the root");
 *     - a "." or ".." as the last segment leaves a trailing '/'
 *       ("/a/b/.." -> "/a/", "/a/." -> "/a/", "/." -> "/");
 *     - dot segments are recognised after decoding, so "%2e", "%2E%2e",
 *       ".%2e" are dot segments;
 *     - a segment whose part before its first ';' is "." or "..", and which
 *       holds a ';' (Tomcat path parameters: "..;", "..;x=1", ".;", "%2e%2e;"),
 *       is an error ("dot segment with parameters"); an encoded ';' (%3B)
 *       counts as a ';' for this rule only ("..%3B" is an error too), since
 *       some backends decode before they strip parameters;
 *     - a segment made only of dots and encoded spaces ("%20") that is not
 *       "." or ".." ("...", "..%20", ".%20.") is an error ("dot segment with
 *       trailing dots or spaces"): Windows and IIS trim trailing dots and
 *       spaces from names, and would read it as ".." or ".".
 *  5. Hence the result starts with '/', contains no "//", no "." or ".."
 *     segment, no escape of an unreserved octet, no lower-case hex digit in
 *     an escape, no byte outside 0x21-0x7E, is never longer than the input,
 *     and canonicalising it again returns it unchanged (idempotent).
 *
 * Host rules (sesame_canon_host): the value must be what parser.h accepts
 * (without the CONNECT port requirement): a name of 1 to 255 bytes of ALPHA
 * DIGIT '-' '.' '_' '~', or an IPv6 literal '[' (HEXDIG / ':' / '.', 2 to 45
 * bytes, at least one ':') ']'; then optionally ':' and 1 to 5 digits whose
 * value is <= 65535. Anything else is an error. The result is the value
 * lower-cased (IPv6 hex digits too), with ONE trailing '.' of a name removed
 * ("ville-a.fr." -> "ville-a.fr", "ville-a.fr.:443" -> "ville-a.fr:443"),
 * and the port kept exactly as written (":080" stays ":080"). A name that is
 * only "." or that ends in ".." is an error.
 */
#ifndef SESAME_HTTP_CANON_H
#define SESAME_HTTP_CANON_H

#include "core/common.h"

/* Canonicalises the origin-form path path[0..len) (no query string, starts with '/').
 * out must have room for len + 1 bytes: the result is never longer than the input; it is
 * NUL-terminated and its length stored in *out_len. Returns SESAME_OK, or SESAME_ERROR with
 * *why set to a short static English reason (for the error log); the caller answers 400.
 * Nothing is written past out[len]. out may be path itself (in-place canonicalisation, then
 * path needs len + 1 bytes); any other overlap is undefined. On error out[0] is NUL,
 * *out_len is 0 and the rest of out[0..len] is unspecified. why may be NULL; a NULL path,
 * out or out_len is an error (nothing is written through a NULL pointer). */
int sesame_canon_path(const char *path, size_t len, char *out, size_t *out_len, const char **why);

/* Canonicalises a Host value (already syntax-checked by the parser: reg-name/IPv4 of
 * ALPHA DIGIT - . _ ~, or "[IPv6]", then optional ":port"): lower-cases it, removes ONE trailing
 * dot of the name ("ville-a.fr." -> "ville-a.fr"), keeps ":port" as written. out has room for
 * len + 1 bytes; *out_len = whole result length, *name_len = length of the name part without port.
 * SESAME_ERROR (+ *why) for an empty name, a name that is only ".", a name ending in "..",
 * or anything the parser should not have let through.
 * The result is NUL-terminated; nothing is written past out[len]; out may be host itself.
 * On error out[0] is NUL and *out_len and *name_len are 0. why may be NULL. */
int sesame_canon_host(const char *host, size_t len, char *out, size_t *out_len, size_t *name_len,
                      const char **why);

#endif
