#include "account/account.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account/normalize.h"
#include "core/log.h"
#include "core/metrics.h"

struct sesame_account {
    atomic_int refs;
    char *name;        /* section name */
    char *plugin_name; /* the plugin's own name */
    void *handle;      /* dlopen */
    const struct sesame_plugin *plugin;
    const struct sesame_plugin_host *host;
    void *state;
};

/* ---- host table --------------------------------------------------------- */

static void SESAME_PRINTF(2, 3)
host_log(enum sesame_plugin_log_level level, const char *fmt, ...)
{
    enum sesame_log_level l = level <= SESAME_PLUGIN_LOG_DEBUG ? (enum sesame_log_level)level
                                                               : SESAME_LOG_DEBUG;
    if (!sesame_log_enabled(l))
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    sesame_log(l, "%s", buf);
}

static void *
host_alloc(size_t n)
{
    return sesame_malloc(n);
}

static void
host_free(void *p)
{
    free(p);
}

static const struct sesame_plugin_host default_host = {
    .abi_version = SESAME_PLUGIN_ABI_VERSION,
    .log = host_log,
    .alloc = host_alloc,
    .free = host_free,
};

const struct sesame_plugin_host *
sesame_account_default_host(void)
{
    return &default_host;
}

/* ---- loading ------------------------------------------------------------ */

static bool
short_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

char *
sesame_account_plugin_path(const char *plugin, char **err)
{
    if (plugin == NULL || plugin[0] == '\0') {
        sesame_err_set(err, "no plugin named");
        return NULL;
    }
    if (plugin[0] == '/')
        return sesame_strdup(plugin);
    if (!short_name_ok(plugin)) {
        sesame_err_set(err, "plugin \"%s\": not a short name ([a-z0-9_-]) or an absolute path",
                       plugin);
        return NULL;
    }
    const char *dir = getenv("SESAME_PLUGIN_DIR");
    if (dir == NULL || dir[0] == '\0')
        dir = SESAME_PKGLIBDIR;
    return sesame_asprintf("%s/sesame_%s.so", dir, plugin);
}

/* A printable copy of a plugin-provided name, or NULL if it is unusable. */
static char *
safe_name(const char *name)
{
    if (name == NULL)
        return NULL;
    size_t n = strnlen(name, 65);
    if (n == 0 || n > 64)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (name[i] < 0x21 || name[i] > 0x7e || name[i] == '"')
            return NULL;
    return sesame_strndup(name, n);
}

static char *
where(const char *file, const struct sesame_conf_accounts *conf)
{
    const char *name = conf->name ? conf->name : "?";
    if (file != NULL)
        return sesame_asprintf("%s:%d: accounts %s", file, conf->line, name);
    return sesame_asprintf("accounts %s", name);
}

struct sesame_account *
sesame_account_load(const char *file, const struct sesame_conf_accounts *conf,
                    const struct sesame_plugin_host *host, char **err)
{
    struct sesame_account *acct = NULL;
    struct sesame_plugin_option *opts = NULL;
    char *at = where(file, conf);
    char *perr = NULL;
    char *path = sesame_account_plugin_path(conf->plugin, &perr);
    void *handle = NULL;
    if (host == NULL)
        host = &default_host;
    if (path == NULL) {
        sesame_err_set(err, "%s: %s", at, perr);
        goto fail;
    }

    dlerror();
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *e = dlerror();
        sesame_err_set(err, "%s: cannot load plugin \"%s\": %s", at, conf->plugin,
                       e ? e : "unknown dlopen error");
        goto fail;
    }
    dlerror();
    void *sym = dlsym(handle, SESAME_PLUGIN_ENTRY_SYMBOL);
    if (sym == NULL) {
        const char *e = dlerror();
        sesame_err_set(err, "%s: plugin \"%s\" (%s) has no %s symbol: %s", at, conf->plugin, path,
                       SESAME_PLUGIN_ENTRY_SYMBOL, e ? e : "symbol is NULL");
        goto fail;
    }
    sesame_plugin_entry_fn entry = (sesame_plugin_entry_fn)sym;
    const struct sesame_plugin *p = entry();
    if (p == NULL) {
        sesame_err_set(err, "%s: plugin \"%s\" (%s): %s returned NULL", at, conf->plugin, path,
                       SESAME_PLUGIN_ENTRY_SYMBOL);
        goto fail;
    }
    char *pname = safe_name(p->name);
    if (p->abi_version != SESAME_PLUGIN_ABI_VERSION) {
        sesame_err_set(err, "%s: plugin \"%s\" (%s) has ABI version %d, this sesame expects version %d",
                       at, pname ? pname : conf->plugin, path, p->abi_version,
                       SESAME_PLUGIN_ABI_VERSION);
        free(pname);
        goto fail;
    }
    if (pname == NULL || p->init == NULL || p->resolve == NULL || p->destroy == NULL) {
        sesame_err_set(err, "%s: plugin \"%s\" (%s): incomplete plugin table (name, init, resolve "
                       "and destroy are required)", at, conf->plugin, path);
        free(pname);
        goto fail;
    }

    opts = sesame_calloc(conf->noptions ? conf->noptions : 1, sizeof(*opts));
    for (size_t i = 0; i < conf->noptions; i++) {
        opts[i].key = conf->options[i].key;
        opts[i].value = conf->options[i].value;
        opts[i].line = conf->options[i].line;
    }
    void *state = NULL;
    char *ierr = NULL;
    if (p->init(opts, conf->noptions, host, &state, &ierr) != 0) {
        sesame_err_set(err, "%s: plugin \"%s\": %s", at, pname,
                       ierr ? ierr : "initialisation failed");
        host->free(ierr);
        free(pname);
        goto fail;
    }
    host->free(ierr); /* a plugin may leave a message even on success */

    acct = sesame_calloc(1, sizeof(*acct));
    atomic_init(&acct->refs, 1);
    acct->name = sesame_strdup(conf->name ? conf->name : "?");
    acct->plugin_name = pname;
    acct->handle = handle;
    acct->plugin = p;
    acct->host = host;
    acct->state = state;
    free(opts);
    free(path);
    free(perr);
    free(at);
    return acct;

fail:
    if (handle != NULL)
        dlclose(handle);
    free(opts);
    free(path);
    free(perr);
    free(at);
    return NULL;
}

const char *
sesame_account_name(const struct sesame_account *acct)
{
    return acct->name;
}

const char *
sesame_account_plugin_name(const struct sesame_account *acct)
{
    return acct->plugin_name;
}

struct sesame_account *
sesame_account_ref(struct sesame_account *acct)
{
    atomic_fetch_add(&acct->refs, 1);
    return acct;
}

void
sesame_account_unref(struct sesame_account *acct)
{
    if (acct == NULL || atomic_fetch_sub(&acct->refs, 1) != 1)
        return;
    acct->plugin->destroy(acct->state);
    dlclose(acct->handle);
    free(acct->name);
    free(acct->plugin_name);
    free(acct);
}

/* ---- identities and results --------------------------------------------- */

int
sesame_account_check_identity(const struct sesame_plugin_identity *id, char **err)
{
    if (!sesame_plugin_word_ok(id->tenant, 64, "._-"))
        return sesame_err_set(err, "identity: tenant name missing or malformed");
    if (!sesame_plugin_word_ok(id->provider, 64, "._-"))
        return sesame_err_set(err, "identity: provider name missing or malformed");
    size_t n = id->sub ? strnlen(id->sub, SESAME_ACCOUNT_MAX_SUB + 1) : 0;
    if (n == 0 || n > SESAME_ACCOUNT_MAX_SUB)
        return sesame_err_set(err, "identity: sub missing or longer than %d bytes",
                              SESAME_ACCOUNT_MAX_SUB);
    for (size_t i = 0; i < n; i++)
        if (id->sub[i] < 0x21 || id->sub[i] > 0x7e)
            return sesame_err_set(err, "identity: sub holds a character outside printable ASCII");
    if (id->nclaims > SESAME_ACCOUNT_MAX_CLAIMS)
        return sesame_err_set(err, "identity: more than %d claims", SESAME_ACCOUNT_MAX_CLAIMS);
    for (size_t i = 0; i < id->nclaims; i++) {
        const struct sesame_plugin_kv *kv = &id->claims[i];
        if (!sesame_plugin_word_ok(kv->key, SESAME_ACCOUNT_MAX_CLAIM_NAME, "_.-"))
            return sesame_err_set(err, "identity: claim #%zu: name missing or malformed", i + 1);
        size_t vl = kv->value ? strnlen(kv->value, SESAME_ACCOUNT_MAX_CLAIM_VALUE + 1) : 0;
        if (kv->value == NULL || vl > SESAME_ACCOUNT_MAX_CLAIM_VALUE ||
            !sesame_normalize_utf8_valid(kv->value, vl, false))
            return sesame_err_set(err, "identity: claim %s: value missing, too long or not "
                                  "UTF-8 text", kv->key);
    }
    return SESAME_OK;
}

static void
set_error(struct sesame_plugin_result *res, const char *fmt, ...) SESAME_PRINTF(2, 3);

static void
set_error(struct sesame_plugin_result *res, const char *fmt, ...)
{
    memset(res, 0, sizeof(*res));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof(res->error), fmt, ap);
    va_end(ap);
    res->status = SESAME_PLUGIN_RESULT_ERROR;
}

static bool
terminated(const char *buf, size_t size)
{
    return memchr(buf, '\0', size) != NULL;
}

/* Turns whatever the plugin wrote into a well-formed result. */
static void
validate_result(const struct sesame_account *acct, struct sesame_plugin_result *res)
{
    switch (res->status) {
    case SESAME_PLUGIN_RESULT_FOUND:
        if (!terminated(res->account_id, sizeof(res->account_id)) ||
            !sesame_plugin_word_ok(res->account_id, SESAME_PLUGIN_ACCOUNT_ID_MAX, "._~@:+-")) {
            set_error(res, "account plugin %s: malformed account id", acct->plugin_name);
            return;
        }
        if (res->nattributes > SESAME_PLUGIN_ATTRS_MAX) {
            set_error(res, "account plugin %s: too many attributes", acct->plugin_name);
            return;
        }
        for (size_t i = 0; i < res->nattributes; i++) {
            const struct sesame_plugin_attribute *a = &res->attributes[i];
            if (!terminated(a->name, sizeof(a->name)) || !terminated(a->value, sizeof(a->value)) ||
                !sesame_plugin_word_ok(a->name, SESAME_PLUGIN_ATTR_NAME_MAX, "_.-") ||
                !sesame_normalize_utf8_valid(a->value, strlen(a->value), false)) {
                set_error(res, "account plugin %s: malformed attribute #%zu", acct->plugin_name,
                          i + 1);
                return;
            }
            for (size_t j = 0; j < i; j++) {
                if (strcmp(res->attributes[j].name, a->name) == 0) {
                    set_error(res, "account plugin %s: duplicate attribute %s", acct->plugin_name,
                              a->name);
                    return;
                }
            }
        }
        memset(res->error, 0, sizeof(res->error));
        /* linked or created, else "existing" (plugin.h) */
        if (res->reason != SESAME_PLUGIN_REASON_LINKED && res->reason != SESAME_PLUGIN_REASON_CREATED)
            res->reason = SESAME_PLUGIN_REASON_EXISTING;
        return;
    case SESAME_PLUGIN_RESULT_NONE:
        if (res->reason != SESAME_PLUGIN_REASON_DENY &&
            res->reason != SESAME_PLUGIN_REASON_LINK_ONLY) {
            set_error(res, "account plugin %s: unknown reason %d", acct->plugin_name,
                      (int)res->reason);
            return;
        }
        {
            enum sesame_plugin_reason reason = res->reason;
            memset(res, 0, sizeof(*res));
            res->status = SESAME_PLUGIN_RESULT_NONE;
            res->reason = reason;
        }
        return;
    case SESAME_PLUGIN_RESULT_ERROR: {
        char text[SESAME_PLUGIN_ERROR_MAX + 1];
        memcpy(text, res->error, sizeof(text));
        text[SESAME_PLUGIN_ERROR_MAX] = '\0';
        for (char *c = text; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        set_error(res, "%s", text[0] ? text : "account plugin failed without a reason");
        return;
    }
    default:
        set_error(res, "account plugin %s: unknown result status %d", acct->plugin_name,
                  (int)res->status);
        return;
    }
}

void
sesame_account_resolve(struct sesame_account *acct, const struct sesame_plugin_identity *id,
                       struct sesame_plugin_result *res)
{
    char *err = NULL;
    memset(res, 0, sizeof(*res));
    if (sesame_account_check_identity(id, &err) != SESAME_OK) {
        set_error(res, "%s", err);
        free(err);
        return;
    }
    if (acct->plugin->resolve(acct->state, id, res) != 0 &&
        res->status != SESAME_PLUGIN_RESULT_ERROR)
        set_error(res, "account plugin %s failed", acct->plugin_name);
    validate_result(acct, res);
}

int
sesame_account_erase(struct sesame_account *acct, const char *tenant, const char *account_id,
                     char **err)
{
    if (acct->plugin->erase == NULL)
        return SESAME_DECLINED;
    if (!sesame_plugin_word_ok(tenant, 64, "._-") ||
        !sesame_plugin_word_ok(account_id, SESAME_PLUGIN_ACCOUNT_ID_MAX, "._~@:+-"))
        return sesame_err_set(err, "erase: malformed tenant or account id");
    char *perr = NULL;
    if (acct->plugin->erase(acct->state, tenant, account_id, &perr) != 0) {
        sesame_err_set(err, "account plugin %s: %s", acct->plugin_name,
                       perr ? perr : "erasure failed");
        acct->host->free(perr);
        return SESAME_ERROR;
    }
    acct->host->free(perr);
    return SESAME_OK;
}

/* ---- asynchronous resolve ----------------------------------------------- */

struct sesame_account_req {
    struct sesame_account *acct; /* reference */
    struct sesame_plugin_identity id;
    struct sesame_plugin_kv *claims;
    struct sesame_plugin_result res; /* written by the worker only */
    uint64_t timeout_ms;
    sesame_account_done_fn done;
    void *arg;
    bool cancelled;
};

static void
req_job(void *arg)
{
    struct sesame_account_req *req = arg;
    sesame_account_resolve(req->acct, &req->id, &req->res);
}

/* The result label of a plugin call (core/metrics.h SESAME_M_PLUGIN_CALLS). */
static const char *
call_result(enum sesame_pool_status status, const struct sesame_plugin_result *res)
{
    if (status == SESAME_POOL_TIMEOUT)
        return "timeout";
    if (status != SESAME_POOL_DONE)
        return "error";
    switch (res->status) {
    case SESAME_PLUGIN_RESULT_FOUND:
        return "found";
    case SESAME_PLUGIN_RESULT_NONE:
        return "none";
    default:
        return "error";
    }
}

static void
req_done(enum sesame_pool_status status, void *arg)
{
    struct sesame_account_req *req = arg;
    sesame_metrics_add(SESAME_M_PLUGIN_CALLS, req->acct->name, call_result(status, &req->res), NULL,
                       1);
    if (req->cancelled || req->done == NULL)
        return;
    if (status == SESAME_POOL_DONE) {
        req->done(&req->res, req->arg);
        return;
    }
    /* The worker may still be writing req->res: answer from another buffer. */
    struct sesame_plugin_result *res = sesame_malloc(sizeof(*res));
    if (status == SESAME_POOL_TIMEOUT)
        set_error(res, "account plugin %s: no answer within %llu ms", req->acct->plugin_name,
                  (unsigned long long)req->timeout_ms);
    else
        set_error(res, "account plugin %s: cancelled (shutting down)", req->acct->plugin_name);
    req->done(res, req->arg);
    free(res);
}

static void
req_release(void *arg)
{
    struct sesame_account_req *req = arg;
    sesame_account_unref(req->acct);
    free((char *)req->id.tenant);
    free((char *)req->id.provider);
    free((char *)req->id.sub);
    for (size_t i = 0; i < req->id.nclaims; i++) {
        free((char *)req->claims[i].key);
        free((char *)req->claims[i].value);
    }
    free(req->claims);
    free(req);
}

int
sesame_account_resolve_async(struct sesame_account *acct, struct sesame_pool *pool,
                             struct event_base *base, const struct sesame_plugin_identity *id,
                             uint64_t timeout_ms, sesame_account_done_fn done, void *arg,
                             struct sesame_account_req **reqp, char **err)
{
    if (reqp != NULL)
        *reqp = NULL;
    if (sesame_account_check_identity(id, err) != SESAME_OK)
        return SESAME_ERROR;
    struct sesame_account_req *req = sesame_calloc(1, sizeof(*req));
    req->acct = sesame_account_ref(acct);
    req->id.tenant = sesame_strdup(id->tenant);
    req->id.provider = sesame_strdup(id->provider);
    req->id.sub = sesame_strdup(id->sub);
    req->claims = sesame_calloc(id->nclaims ? id->nclaims : 1, sizeof(*req->claims));
    for (size_t i = 0; i < id->nclaims; i++) {
        req->claims[i].key = sesame_strdup(id->claims[i].key);
        req->claims[i].value = sesame_strdup(id->claims[i].value);
    }
    req->id.claims = req->claims;
    req->id.nclaims = id->nclaims;
    req->timeout_ms = timeout_ms;
    req->done = done;
    req->arg = arg;
    if (sesame_pool_submit(pool, base, req_job, req_done, req_release, req, timeout_ms) !=
        SESAME_AGAIN) {
        req_release(req);
        return sesame_err_set(err, "account plugin %s: worker queue full", acct->plugin_name);
    }
    if (reqp != NULL)
        *reqp = req;
    return SESAME_AGAIN;
}

void
sesame_account_cancel(struct sesame_account_req *req)
{
    if (req != NULL)
        req->cancelled = true;
}
