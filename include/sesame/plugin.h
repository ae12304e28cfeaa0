/*
 * sesame/plugin.h - the account plugin ABI (version 1).
 *
 * An account plugin maps an identity given by a provider (tenant, provider,
 * `sub` and claims) to a local citizen account. It is a shared object that
 * exports one symbol:
 *
 *     const struct sesame_plugin *sesame_plugin_entry(void);
 *
 * The daemon dlopen()s it with RTLD_NOW | RTLD_LOCAL, calls the entry, and
 * refuses the plugin unless `abi_version` equals SESAME_PLUGIN_ABI_VERSION.
 * The first two fields of struct sesame_plugin (abi_version, name) keep their
 * place in every future version, so a host can always name a plugin of
 * another version in its error message. Any other change to a structure of
 * this header bumps SESAME_PLUGIN_ABI_VERSION.
 *
 * Threads: init and destroy run once, on the main thread. resolve and erase
 * may run concurrently on several worker threads with the same state, and
 * may block (network, disk): the daemon never calls them on its event loop,
 * and gives up waiting after a timeout (a late answer is discarded; the call
 * itself is not interrupted, so a plugin bounds its own I/O with timeouts).
 *
 * Memory: everything the host passes is borrowed for the duration of the
 * call. Results are written into the fixed-size struct the host provides.
 * Error texts returned through `char **err` are allocated with host->alloc
 * and freed by the host with host->free.
 *
 * Text: every string is NUL-terminated UTF-8. A plugin never logs secrets,
 * tokens or personal data (names, birth data, sub, e-mail): only counts,
 * tenant and plugin names, and failure causes.
 *
 * Building a plugin: `#include <sesame/plugin.h>`, then
 *     cc -shared -fPIC my_plugin.c -o sesame_mine.so
 * and `plugin = /path/to/sesame_mine.so` in an `[accounts NAME]` section.
 */
#ifndef SESAME_PLUGIN_H
#define SESAME_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SESAME_PLUGIN_ABI_VERSION 1

/* Name of the symbol every plugin exports. */
#define SESAME_PLUGIN_ENTRY_SYMBOL "sesame_plugin_entry"

#if defined(__GNUC__)
#define SESAME_PLUGIN_EXPORT __attribute__((visibility("default")))
#define SESAME_PLUGIN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SESAME_PLUGIN_EXPORT
#define SESAME_PLUGIN_PRINTF(f, a)
#endif

/* Bounds of a result. Lengths are in bytes, without the terminating NUL. */
#define SESAME_PLUGIN_ACCOUNT_ID_MAX 128   /* account id: 1..128 bytes */
#define SESAME_PLUGIN_ATTRS_MAX 32         /* attributes per account */
#define SESAME_PLUGIN_ATTR_NAME_MAX 64     /* attribute name */
#define SESAME_PLUGIN_ATTR_VALUE_MAX 512   /* attribute value */
#define SESAME_PLUGIN_ERROR_MAX 255        /* error text of a failed resolve */

/* Log levels of host->log. */
enum sesame_plugin_log_level {
    SESAME_PLUGIN_LOG_ERROR = 0,
    SESAME_PLUGIN_LOG_WARN = 1,
    SESAME_PLUGIN_LOG_INFO = 2,
    SESAME_PLUGIN_LOG_DEBUG = 3,
};

/* What the daemon offers to a plugin. Valid from init until destroy returns. */
struct sesame_plugin_host {
    int abi_version;  /* SESAME_PLUGIN_ABI_VERSION of the host */
    /* Writes one line to the daemon's error log (thread-safe). The host adds
     * the time and level; control characters are replaced. */
    void (*log)(enum sesame_plugin_log_level level, const char *fmt, ...) SESAME_PLUGIN_PRINTF(2, 3);
    /* Allocates n bytes; never returns NULL (the daemon aborts on OOM). */
    void *(*alloc)(size_t n);
    /* Frees what alloc returned; accepts NULL. */
    void (*free)(void *p);
};

/* One option of the `[accounts NAME]` section, as written (never NULL). */
struct sesame_plugin_option {
    const char *key;
    const char *value;
    int line;         /* line in the configuration file, 0 if unknown */
};

/* One claim, or any other key/value pair. */
struct sesame_plugin_kv {
    const char *key;
    const char *value;
};

/* The identity to resolve. Claims are those the provider released, as
 * strings (e.g. "given_name" = "Marie Claire Odile", "birthplace" = "" when
 * born abroad); non-string claims are absent. */
struct sesame_plugin_identity {
    const char *tenant;    /* configured tenant name, [A-Za-z0-9._-] */
    const char *provider;  /* configured provider name, [A-Za-z0-9._-] */
    const char *sub;       /* the provider's subject identifier */
    const struct sesame_plugin_kv *claims;
    size_t nclaims;
};

/* Outcome of resolve. The zero value is SESAME_PLUGIN_RESULT_ERROR, so a
 * result a plugin forgot to fill fails closed. */
enum sesame_plugin_status {
    SESAME_PLUGIN_RESULT_ERROR = 0,   /* `error` says why (no account decided) */
    SESAME_PLUGIN_RESULT_FOUND = 1,   /* `account_id` and `attributes` are set; `reason`
                                         may say whether it was linked or created */
    SESAME_PLUGIN_RESULT_NONE = 2,    /* no account; `reason` says which policy */
};

/* Why there is no account (SESAME_PLUGIN_RESULT_NONE). */
enum sesame_plugin_reason {
    SESAME_PLUGIN_REASON_DENY = 0,      /* refused: the person may not use the services */
    SESAME_PLUGIN_REASON_LINK_ONLY = 1, /* unknown person; accounts are only linked, never
                                           created: the page explains how to get one */
    /* Optional, with SESAME_PLUGIN_RESULT_FOUND (added within ABI version 1,
     * for the audit journal): what this call did. The host zeroes the result,
     * so a plugin that does not say leaves SESAME_PLUGIN_REASON_EXISTING;
     * hosts that predate these values ignore `reason` on FOUND. No layout
     * change: plugins and hosts of either age keep working together. */
    SESAME_PLUGIN_REASON_EXISTING = 0,  /* an account already linked to this identity (or
                                           not said) */
    SESAME_PLUGIN_REASON_LINKED = 2,    /* an existing account, linked to this identity by
                                           this call (e.g. a pre-registered citizen) */
    SESAME_PLUGIN_REASON_CREATED = 3,   /* an account created by this call */
};

struct sesame_plugin_attribute {
    char name[SESAME_PLUGIN_ATTR_NAME_MAX + 1];   /* [A-Za-z0-9_.-], 1..64 bytes */
    char value[SESAME_PLUGIN_ATTR_VALUE_MAX + 1]; /* UTF-8 without control characters */
};

/* Filled by resolve. The host zeroes it before the call and checks every field
 * after it (NUL-terminated, bounds, charsets): a malformed result is turned
 * into an error. Account ids are 1..128 bytes of [A-Za-z0-9._~@:+-]. */
struct sesame_plugin_result {
    enum sesame_plugin_status status;
    enum sesame_plugin_reason reason;
    char account_id[SESAME_PLUGIN_ACCOUNT_ID_MAX + 1];
    struct sesame_plugin_attribute attributes[SESAME_PLUGIN_ATTRS_MAX];
    size_t nattributes;
    char error[SESAME_PLUGIN_ERROR_MAX + 1]; /* free text, no personal data */
};

/* The table a plugin exports. Functions return 0 on success, -1 on failure. */
struct sesame_plugin {
    int abi_version;  /* SESAME_PLUGIN_ABI_VERSION the plugin was built with */
    const char *name; /* short name for messages, e.g. "redis" */

    /* Parses the options and prepares the plugin. On success stores the
     * plugin's state in *state (passed back to every other call) and returns
     * 0. On failure returns -1 and may store in *err a message allocated with
     * host->alloc, e.g. "database: not a number" (the host frees it and adds
     * the file, line and section). An unknown option is an error. */
    int (*init)(const struct sesame_plugin_option *opts, size_t nopts,
                const struct sesame_plugin_host *host, void **state, char **err);

    /* Maps an identity to an account: fills res (status FOUND, NONE or
     * ERROR) and returns 0; returns -1 only when it could not even describe
     * the failure (the host then reports a generic error). May block. */
    int (*resolve)(void *state, const struct sesame_plugin_identity *id,
                   struct sesame_plugin_result *res);

    /* Releases the state. Called once, after every resolve has returned. */
    void (*destroy)(void *state);

    /* Optional (NULL when unsupported). Erasure (RGPD article 17): removes
     * the account, every index pointing to it and every session of it.
     * Returns 0 when done (also when the account did not exist), -1 with
     * *err (host->alloc) on failure. May block. */
    int (*erase)(void *state, const char *tenant, const char *account_id, char **err);
};

/* The entry symbol, for plugins to define:
 *     SESAME_PLUGIN_EXPORT const struct sesame_plugin *sesame_plugin_entry(void)
 *     { return &my_table; }
 * It must return a pointer to static storage and have no side effect. */
typedef const struct sesame_plugin *(*sesame_plugin_entry_fn)(void);

/* --- Helpers compiled into the plugin (header-only) --------------------- */

/* Sets FOUND with the account id. Returns -1 (and sets ERROR) if the id is
 * empty or longer than SESAME_PLUGIN_ACCOUNT_ID_MAX. */
static inline int
sesame_plugin_result_found(struct sesame_plugin_result *res, const char *account_id)
{
    size_t n = account_id ? strlen(account_id) : 0;
    if (n == 0 || n > SESAME_PLUGIN_ACCOUNT_ID_MAX) {
        res->status = SESAME_PLUGIN_RESULT_ERROR;
        snprintf(res->error, sizeof(res->error), "account id empty or too long");
        return -1;
    }
    memcpy(res->account_id, account_id, n + 1);
    res->status = SESAME_PLUGIN_RESULT_FOUND;
    return 0;
}

/* Appends an attribute. Returns -1 (result unchanged) when the table is full
 * or a string is empty/too long. */
static inline int
sesame_plugin_result_attr(struct sesame_plugin_result *res, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (res->nattributes >= SESAME_PLUGIN_ATTRS_MAX || nl == 0 || nl > SESAME_PLUGIN_ATTR_NAME_MAX ||
        vl > SESAME_PLUGIN_ATTR_VALUE_MAX)
        return -1;
    struct sesame_plugin_attribute *a = &res->attributes[res->nattributes++];
    memcpy(a->name, name, nl + 1);
    memcpy(a->value, value, vl + 1);
    return 0;
}

/* Sets NONE with a reason. */
static inline void
sesame_plugin_result_none(struct sesame_plugin_result *res, enum sesame_plugin_reason reason)
{
    res->status = SESAME_PLUGIN_RESULT_NONE;
    res->reason = reason;
}

/* Sets ERROR with a formatted message (truncated to SESAME_PLUGIN_ERROR_MAX). */
static inline void SESAME_PLUGIN_PRINTF(2, 3)
sesame_plugin_result_error(struct sesame_plugin_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof(res->error), fmt, ap);
    va_end(ap);
    res->status = SESAME_PLUGIN_RESULT_ERROR;
}

/* Copies s into memory from host->alloc (the host frees it), e.g. for an
 * error text returned by init or erase. */
static inline char *
sesame_plugin_strdup(const struct sesame_plugin_host *host, const char *s)
{
    size_t n = strlen(s);
    char *p = (char *)host->alloc(n + 1);
    if (p != NULL)
        memcpy(p, s, n + 1);
    return p;
}

/* True when s is 1..max bytes of ASCII letters, digits and characters of
 * `extra` (a tenant, provider or account identifier, a Redis key part...). */
static inline bool
sesame_plugin_word_ok(const char *s, size_t max, const char *extra)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(extra, c) != NULL))
            return false;
    }
    return true;
}

#ifdef __cplusplus
}
#endif

#endif
