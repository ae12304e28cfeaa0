/*
 * returnto.h - validation of the return_to value of a sign-in (open-redirect
 * defence).
 *
 * A return_to value comes from the query string (already percent-decoded
 * once by the caller) and says where to send the citizen after sign-in. It is
 * accepted only when it is a same-site relative path or an absolute URL on
 * one of the tenant's own host names; anything else is refused and the
 * caller sends the citizen to the tenant home page instead.
 *
 * Rules common to every accepted value (all checked on the raw bytes):
 *   - 1 to SESAME_RETURNTO_MAX_LEN bytes, each printable ASCII 0x21..0x7e
 *     (no space, no control character, no NUL, no UTF-8);
 *   - no backslash and no '@' anywhere;
 *   - every '%' starts a valid escape "%" HEXDIG HEXDIG, and no escape
 *     decodes to a control character or space (%00-%20, %7f), '/', '\',
 *     '@' or '%' (no encoded separator, no double encoding); escapes of bytes
 *     >= 0x80 (e.g. %C3%A9) are allowed;
 *   - in the path (up to the first '?' or '#'): no empty segment ("//") and
 *     no "." or ".." segment, in plain or %2e-encoded form.
 */
#ifndef SESAME_OIDC_RETURNTO_H
#define SESAME_OIDC_RETURNTO_H

#include "core/common.h"

#define SESAME_RETURNTO_MAX_LEN 2048

/* True when value[0..len) is a safe relative path: it starts with '/' and
 * follows the common rules above (so it does not start with "//" or "/\").
 * value need not be NUL-terminated; NULL is never safe. */
bool sesame_returnto_is_safe_path(const char *value, size_t len);

/* Checks a return_to value (value[0..len), not necessarily NUL-terminated)
 * against the tenant's host names `hosts` (nhosts NUL-terminated names,
 * compared case-insensitively and exactly: no suffix, no trailing dot) and
 * its public URL (`scheme://host[:port]`, scheme http or https).
 * Accepted: a safe relative path (sesame_returnto_is_safe_path), or an
 * absolute URL "scheme://host[:port][/path][?query][#fragment]" whose scheme
 * (case-insensitive) is the public URL's scheme (so "http" only when the
 * public URL is http), whose host is one of `hosts`, with no userinfo, and
 * whose port (the scheme's default when absent; digits without a leading
 * zero) equals the public URL's port (its scheme's default when absent),
 * following the common rules. With a NULL or malformed public_url only
 * relative paths are accepted.
 * Returns a malloc'd NUL-terminated copy of the value (the caller frees it),
 * or NULL when the value is refused (the caller then uses the tenant home). */
char *sesame_returnto_check(const char *value, size_t len, const char *const *hosts, size_t nhosts,
                            const char *public_url);

#endif
