/*
 * provider.c - provider runtimes: settings copied from the configuration,
 * cached metadata and keys behind a mutex, shared fetch jobs, and the
 * asynchronous ensure / exchange / validate operations.
 */
#include "oidc/provider.h"

#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "core/log.h"
#include "core/util.h"

#define MAX_ARG 4096         /* bytes of redirect_uri, state, nonce, code... */
#define MAX_ENDPOINT 2048    /* bytes of an endpoint URL */
#define MAX_RETRY_MS 60000u  /* cap of the wait after a failed refresh */
#define ASSERTION_LIFETIME 60
#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

enum ep { EP_AUTHZ = 0, EP_TOKEN, EP_USERINFO, EP_JWKS, EP_END, EP_COUNT };

static const char *const ep_names[EP_COUNT] = {
    "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
    "end_session_endpoint",
};

/* Claims of the ID token that userinfo never overrides. */
static const char *const protocol_claims[] = {
    "iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "acr", "amr", "auth_time", "azp",
    "at_hash", "c_hash", "sid", "jti",
};

/* ---- Snapshots -------------------------------------------------------------- */

struct meta {
    atomic_int refs;
    char *ep[EP_COUNT]; /* from the discovery document; NULL when absent */
};

struct keys {
    atomic_int refs;
    struct sesame_jose_keyset *ks;
    char *source; /* the jwks_uri it came from */
};

static struct meta *
meta_ref(struct meta *m)
{
    if (m)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

static void
meta_unref(struct meta *m)
{
    if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (int i = 0; i < EP_COUNT; i++)
        free(m->ep[i]);
    free(m);
}

static struct keys *
keys_ref(struct keys *k)
{
    if (k)
        atomic_fetch_add(&k->refs, 1);
    return k;
}

static void
keys_unref(struct keys *k)
{
    if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    sesame_jose_keyset_free(k->ks);
    free(k->source);
    free(k);
}

/* ---- Settings --------------------------------------------------------------- */

struct stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct settings {
    char *name, *issuer;
    bool discovery;
    uint64_t refresh_ms;
    char *ep[EP_COUNT]; /* explicit endpoints, NULL when not configured */
    char *client_id;
    char *client_secret; /* NULL for private_key_jwt without a secret */
    enum sesame_token_auth token_auth;
    char *private_key_file;
    struct sesame_jose_key *signing_key; /* private_key_jwt */
    char *scopes_raw, *acr_raw;          /* as configured (for comparison) */
    char *scopes, *acr_values;           /* words joined by single spaces; acr may be NULL */
    unsigned algs;
    enum sesame_userinfo_format userinfo;
    bool pkce;
    char **params;                       /* as configured */
    size_t nparams;
    char *params_query;                  /* "&name=value..." encoded, or "" */
    char *ca_file;
    char **dec_files;
    size_t ndec;
    struct sesame_jose_keyset *dec_keys; /* never NULL once built */
    char **stamp_paths;                  /* private_key_file then dec_files */
    struct stamp *stamps;
    size_t nstamps;
    uint64_t leeway_ms, timeout_ms, refetch_ms;
    uint64_t probe_ms;                   /* probe_interval; 0: no probe while available */
};

/* ---- Runtime, operations, jobs --------------------------------------------- */

struct job;

struct sesame_provider {
    atomic_int refs;
    struct settings s;
    pthread_mutex_t mu;
    /* under mu: */
    struct meta *meta;
    uint64_t meta_at, meta_retry_at;
    struct keys *keys;
    uint64_t keys_at, keys_retry_at;
    uint64_t jwks_attempts;     /* JWKS fetches finished (success or not) */
    bool forced_ever;
    uint64_t forced_at;         /* last unknown-kid refetch */
    struct job *job;            /* the fetch in flight, if any */
    struct sesame_provider_op *waiters;
    char *meta_error, *keys_error;
    /* availability and background upkeep (see provider.h, oidc/refresher.h) */
    unsigned fails;             /* consecutive failed calls */
    bool down;                  /* the last SESAME_PROVIDER_DOWN_AFTER calls failed */
    bool fetch_failed;          /* the last metadata or JWKS fetch failed */
    int64_t changed_at;         /* wall clock of the last change of `down` */
    char health_error[256];     /* the last failure */
    uint64_t meta_due, keys_due;/* background refresh times, jittered */
    uint64_t probe_at;          /* next background probe */
};

enum op_kind { OP_ENSURE, OP_EXCHANGE, OP_VALIDATE };

enum op_stage {
    ST_ENSURE = 0,
    ST_TOKEN,
    ST_IDTOKEN,
    ST_USERINFO,
    ST_USERINFO_CHECK,
};

enum step { STEP_NEXT, STEP_WAIT, STEP_DONE };

struct sesame_provider_op {
    struct sesame_provider *rt;
    struct sesame_httpc *httpc;
    struct event *ev;
    enum op_kind kind;
    enum op_stage stage;
    bool waiting;                          /* in rt->waiters (under rt->mu) */
    struct sesame_provider_op *wprev, *wnext;
    bool ensure_waited;
    bool recheck, rechecked;               /* sesame_provider_ensure_available */
    bool kid_seen, kid_retried;
    uint64_t kid_attempts;
    struct sesame_httpc_call *call;
    sesame_provider_ensure_cb ensure_cb;
    sesame_provider_exchange_cb exchange_cb;
    sesame_provider_validate_cb validate_cb;
    void *arg;
    /* exchange */
    char *code, *redirect_uri, *verifier;
    /* validate */
    char *id_token, *access_token;
    char *nonce, *min_acr;
    int64_t now;
    char *id_plain;                        /* the JWS inside (or the id_token itself) */
    json_t *id_claims;
    char *ui_body;                         /* userinfo answer */
    size_t ui_len;
    char *ui_plain;
    int waits;                             /* jobs waited for */
    enum sesame_provider_status early_st;  /* refused at creation: reported at start */
    char *early_err;
};

struct job {
    struct sesame_provider *rt;
    struct sesame_httpc *httpc;
    struct sesame_httpc_call *call;
    bool do_meta;
    bool force_keys;                       /* under rt->mu */
    bool keys_stage;
};

/* ---- Small helpers ------------------------------------------------------------ */

static bool
str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static char *
dup_or_null(const char *s)
{
    return s ? sesame_strdup(s) : NULL;
}

static void
append(char **buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    *buf = sesame_realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

static bool
unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

void
sesame_provider_percent_encode(char **buf, size_t *len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        if (!unreserved((unsigned char)s[i]))
            extra += 2;
    *buf = sesame_realloc(*buf, *len + n + extra + 1);
    char *o = *buf + *len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    *len += n + extra;
}

/* Appends "<sep>name=<encoded value>". */
static void
add_param(char **buf, size_t *len, const char *sep, const char *name, const char *value)
{
    append(buf, len, sep);
    sesame_provider_percent_encode(buf, len, name);
    append(buf, len, "=");
    sesame_provider_percent_encode(buf, len, value);
}

/* Words of s (spaces and tabs) joined by single spaces; NULL when none. */
static char *
normalize_words(const char *s)
{
    if (s == NULL)
        return NULL;
    char *out = sesame_malloc(strlen(s) + 1);
    size_t n = 0;
    for (const char *p = s; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        if (n > 0)
            out[n++] = ' ';
        while (*p && *p != ' ' && *p != '\t')
            out[n++] = *p++;
    }
    out[n] = '\0';
    if (n == 0) {
        free(out);
        return NULL;
    }
    return out;
}

static bool
arg_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strnlen(s, MAX_ARG + 1) <= MAX_ARG;
}

/* The media type of a Content-Type value equals `type` (case-insensitive). */
static bool
media_type_is(const char *ctype, const char *type)
{
    if (ctype == NULL)
        return false;
    size_t n = strcspn(ctype, ";");
    while (n > 0 && (ctype[n - 1] == ' ' || ctype[n - 1] == '\t'))
        n--;
    return sesame_util_ascii_ieq(ctype, n, type);
}

/* An absolute https URL with a host, printable ASCII, no fragment, no
 * userinfo, at most MAX_ENDPOINT bytes. */
static bool
https_url_ok(const char *u)
{
    size_t n = strnlen(u, MAX_ENDPOINT + 1);
    if (n > MAX_ENDPOINT || n <= 8 || strncasecmp(u, "https://", 8) != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c <= 0x20 || c >= 0x7f || c == '#' || c == '\\')
            return false;
    }
    const char *host = u + 8;
    size_t alen = strcspn(host, "/?");
    if (alen == 0 || host[0] == ':' || memchr(host, '@', alen) != NULL)
        return false;
    return true;
}

/* A token of an OAuth error code, safe to log: [A-Za-z0-9_.-]{1,64}. */
static bool
error_code_ok(const char *s)
{
    size_t n = strnlen(s, 65);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static bool
printable_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* Decodes %XX escapes (nothing else); NULL when an escape is malformed or
 * decodes to NUL. */
static char *
percent_decode(const char *s)
{
    size_t n = strlen(s);
    char *out = sesame_malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int a = i + 2 < n ? sesame_hexval((unsigned char)s[i + 1]) : -1;
        int b = i + 2 < n ? sesame_hexval((unsigned char)s[i + 2]) : -1;
        if (a < 0 || b < 0 || (a == 0 && b == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(a * 16 + b);
        i += 2;
    }
    *o = '\0';
    return out;
}

static uint64_t
retry_delay(const struct settings *s)
{
    return s->refresh_ms < MAX_RETRY_MS ? s->refresh_ms : MAX_RETRY_MS;
}

/* ---- Settings from the configuration ----------------------------------------- */

static void
settings_clear(struct settings *s)
{
    free(s->name);
    free(s->issuer);
    for (int i = 0; i < EP_COUNT; i++)
        free(s->ep[i]);
    free(s->client_id);
    if (s->client_secret) {
        OPENSSL_cleanse(s->client_secret, strlen(s->client_secret));
        free(s->client_secret);
    }
    free(s->private_key_file);
    sesame_jose_key_free(s->signing_key);
    free(s->scopes_raw);
    free(s->acr_raw);
    free(s->scopes);
    free(s->acr_values);
    for (size_t i = 0; i < s->nparams; i++)
        free(s->params[i]);
    free(s->params);
    free(s->params_query);
    free(s->ca_file);
    for (size_t i = 0; i < s->ndec; i++)
        free(s->dec_files[i]);
    free(s->dec_files);
    sesame_jose_keyset_free(s->dec_keys);
    for (size_t i = 0; i < s->nstamps; i++)
        free(s->stamp_paths[i]);
    free(s->stamp_paths);
    free(s->stamps);
    memset(s, 0, sizeof(*s));
}

static int
stamp_of(const char *path, struct stamp *st)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return SESAME_ERROR;
    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    st->size = sb.st_size;
    st->mtime = sb.st_mtim;
    return SESAME_OK;
}

static bool
stamp_eq(const struct stamp *a, const struct stamp *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Reads a decryption key file (bounded) and loads it: for the alg named by
 * the "alg" member of a JWK file (RSA-OAEP, RSA-OAEP-256, ECDH-ES), else
 * jose's default (ECDH-ES for EC keys, RSA-OAEP for RSA keys). */
static struct sesame_jose_key *
load_decryption_key(const char *path, char **err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return sesame_err_set(err, "%s: cannot open the key file: %s", path, strerror(errno)),
               NULL;
    size_t cap = SESAME_JOSE_MAX_KEY_FILE + 1;
    char *buf = sesame_malloc(cap);
    size_t n = fread(buf, 1, cap, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    struct sesame_jose_key *k = NULL;
    if (bad) {
        sesame_err_set(err, "%s: cannot read the key file", path);
    } else if (n >= cap) {
        sesame_err_set(err, "%s: key file longer than %d bytes", path, SESAME_JOSE_MAX_KEY_FILE);
    } else {
        const char *alg = NULL;
        char algbuf[16] = "";
        size_t off = 0;
        while (off < n && isspace((unsigned char)buf[off]))
            off++;
        if (off < n && buf[off] == '{') {
            json_t *j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
            const char *a = json_string_value(json_object_get(j, "alg"));
            if (a != NULL && (strcmp(a, "RSA-OAEP") == 0 || strcmp(a, "RSA-OAEP-256") == 0 ||
                              strcmp(a, "ECDH-ES") == 0)) {
                snprintf(algbuf, sizeof(algbuf), "%s", a);
                alg = algbuf;
            }
            json_decref(j);
        }
        char *why = NULL;
        k = sesame_jose_key_parse(buf, n, alg, &why);
        if (k == NULL)
            sesame_err_set(err, "%s: %s", path, why ? why : "key refused");
        free(why);
    }
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return k;
}

static bool
param_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static int
build_params(struct settings *s, char **err)
{
    char *q = NULL;
    size_t qlen = 0;
    append(&q, &qlen, "");
    for (size_t i = 0; i < s->nparams; i++) {
        const char *w = s->params[i];
        const char *eq = strchr(w, '=');
        size_t nl = eq ? (size_t)(eq - w) : 0;
        if (eq == NULL || !param_name_ok(w, nl)) {
            free(q);
            return sesame_err_set(err, "[provider %s] authorize_params: '%s' is not name=value "
                                       "with a name of letters, digits, '_', '.' or '-'",
                                  s->name, w);
        }
        /* parameters the gateway sets itself: the list is the loader's, which
         * refuses them already at load */
        if (sesame_conf_reserved_authorize_param(w, nl)) {
            free(q);
            return sesame_err_set(err, "[provider %s] authorize_params: %.*s is set by the "
                                       "gateway itself", s->name, (int)nl, w);
        }
        for (size_t j = 0; j < i; j++) {
            const char *o = s->params[j];
            if (strncmp(o, w, nl) == 0 && o[nl] == '=') {
                free(q);
                return sesame_err_set(err, "[provider %s] authorize_params: %.*s is repeated",
                                      s->name, (int)nl, w);
            }
        }
        char *value = percent_decode(eq + 1);
        if (value == NULL) {
            free(q);
            return sesame_err_set(err, "[provider %s] authorize_params: bad %%XX escape in the "
                                       "value of %.*s", s->name, (int)nl, w);
        }
        char *name = sesame_strndup(w, nl);
        add_param(&q, &qlen, "&", name, value);
        free(name);
        free(value);
    }
    s->params_query = q;
    return SESAME_OK;
}

static int
settings_build(struct settings *s, const struct sesame_conf_provider *p, char **err)
{
    memset(s, 0, sizeof(*s));
    if (p->name == NULL || p->issuer == NULL || p->client_id == NULL)
        return sesame_err_set(err, "provider: name, issuer and client_id are required");
    s->name = sesame_strdup(p->name);
    s->issuer = sesame_strdup(p->issuer);
    s->discovery = p->discovery;
    s->refresh_ms = p->discovery_refresh_ms;
    s->ep[EP_AUTHZ] = dup_or_null(p->authorization_endpoint);
    s->ep[EP_TOKEN] = dup_or_null(p->token_endpoint);
    s->ep[EP_USERINFO] = dup_or_null(p->userinfo_endpoint);
    s->ep[EP_JWKS] = dup_or_null(p->jwks_uri);
    s->ep[EP_END] = dup_or_null(p->end_session_endpoint);
    s->client_id = sesame_strdup(p->client_id);
    s->client_secret = dup_or_null(p->client_secret);
    s->token_auth = p->token_auth;
    s->private_key_file = dup_or_null(p->private_key_file);
    s->scopes_raw = dup_or_null(p->scopes);
    s->acr_raw = dup_or_null(p->acr_values);
    s->scopes = normalize_words(p->scopes);
    s->acr_values = normalize_words(p->acr_values);
    s->algs = p->signing_algs;
    s->userinfo = p->userinfo;
    s->pkce = p->pkce;
    s->nparams = p->nauthorize_params;
    s->params = sesame_calloc(s->nparams ? s->nparams : 1, sizeof(char *));
    for (size_t i = 0; i < s->nparams; i++)
        s->params[i] = sesame_strdup(p->authorize_params[i]);
    s->ca_file = dup_or_null(p->ca_file);
    s->ndec = p->ndecryption_key_files;
    s->dec_files = sesame_calloc(s->ndec ? s->ndec : 1, sizeof(char *));
    for (size_t i = 0; i < s->ndec; i++)
        s->dec_files[i] = sesame_strdup(p->decryption_key_files[i]);
    s->leeway_ms = p->leeway_ms;
    s->timeout_ms = p->http_timeout_ms;
    s->refetch_ms = p->jwks_refetch_interval_ms;
    s->probe_ms = p->probe_interval_ms;

    if (!s->discovery && (s->ep[EP_AUTHZ] == NULL || s->ep[EP_TOKEN] == NULL ||
                          s->ep[EP_JWKS] == NULL)) {
        sesame_err_set(err, "[provider %s] without discovery needs authorization_endpoint, "
                            "token_endpoint and jwks_uri", s->name);
        goto fail;
    }
    if (!s->discovery && s->userinfo != SESAME_USERINFO_OFF && s->ep[EP_USERINFO] == NULL) {
        sesame_err_set(err, "[provider %s] without discovery needs userinfo_endpoint (or "
                            "userinfo = off)", s->name);
        goto fail;
    }
    if (s->scopes == NULL) {
        sesame_err_set(err, "[provider %s] has no scopes", s->name);
        goto fail;
    }
    if (s->algs == 0 ||
        ((s->algs & ~(unsigned)(SESAME_ALG_HS256 | SESAME_ALG_HS384 | SESAME_ALG_HS512)) == 0 &&
         s->client_secret == NULL)) {
        sesame_err_set(err, "[provider %s] has no usable signing_algs", s->name);
        goto fail;
    }
    if (build_params(s, err) != SESAME_OK)
        goto fail;

    s->nstamps = (s->private_key_file ? 1 : 0) + s->ndec;
    s->stamp_paths = sesame_calloc(s->nstamps ? s->nstamps : 1, sizeof(char *));
    s->stamps = sesame_calloc(s->nstamps ? s->nstamps : 1, sizeof(struct stamp));
    size_t si = 0;
    if (s->private_key_file)
        s->stamp_paths[si++] = sesame_strdup(s->private_key_file);
    for (size_t i = 0; i < s->ndec; i++)
        s->stamp_paths[si++] = sesame_strdup(s->dec_files[i]);
    for (size_t i = 0; i < s->nstamps; i++) {
        if (stamp_of(s->stamp_paths[i], &s->stamps[i]) != SESAME_OK) {
            sesame_err_set(err, "[provider %s] %s: %s", s->name, s->stamp_paths[i],
                           strerror(errno));
            goto fail;
        }
    }

    if (s->token_auth == SESAME_AUTH_PRIVATE_KEY_JWT) {
        if (s->private_key_file == NULL) {
            sesame_err_set(err, "[provider %s] private_key_jwt needs private_key_file", s->name);
            goto fail;
        }
        char *e1 = NULL, *e2 = NULL;
        s->signing_key = sesame_jose_key_load(s->private_key_file, "ES256", &e1);
        if (s->signing_key == NULL)
            s->signing_key = sesame_jose_key_load(s->private_key_file, "RS256", &e2);
        if (s->signing_key == NULL) {
            sesame_err_set(err, "[provider %s] private_key_file: %s", s->name,
                           e1 ? e1 : "unusable key");
            free(e1);
            free(e2);
            goto fail;
        }
        free(e1);
        free(e2);
    } else if (s->client_secret == NULL) {
        sesame_err_set(err, "[provider %s] %s needs a client secret", s->name,
                       s->token_auth == SESAME_AUTH_CLIENT_SECRET_BASIC ? "client_secret_basic"
                                                                         : "client_secret_post");
        goto fail;
    }

    s->dec_keys = sesame_jose_keyset_new();
    for (size_t i = 0; i < s->ndec; i++) {
        char *why = NULL;
        struct sesame_jose_key *k = load_decryption_key(s->dec_files[i], &why);
        if (k == NULL || sesame_jose_keyset_add(s->dec_keys, k, &why) != SESAME_OK) {
            sesame_err_set(err, "[provider %s] decryption_key_files: %s", s->name,
                           why ? why : "unusable key");
            free(why);
            goto fail;
        }
    }
    return SESAME_OK;
fail:
    settings_clear(s);
    return SESAME_ERROR;
}

static bool
settings_match(const struct settings *s, const struct sesame_conf_provider *p)
{
    if (!str_eq(s->issuer, p->issuer) || s->discovery != p->discovery ||
        s->refresh_ms != p->discovery_refresh_ms ||
        !str_eq(s->ep[EP_AUTHZ], p->authorization_endpoint) ||
        !str_eq(s->ep[EP_TOKEN], p->token_endpoint) ||
        !str_eq(s->ep[EP_USERINFO], p->userinfo_endpoint) ||
        !str_eq(s->ep[EP_JWKS], p->jwks_uri) ||
        !str_eq(s->ep[EP_END], p->end_session_endpoint) || !str_eq(s->client_id, p->client_id) ||
        s->token_auth != p->token_auth || !str_eq(s->private_key_file, p->private_key_file) ||
        !str_eq(s->scopes_raw, p->scopes) || !str_eq(s->acr_raw, p->acr_values) ||
        s->algs != p->signing_algs || s->userinfo != p->userinfo || s->pkce != p->pkce ||
        !str_eq(s->ca_file, p->ca_file) || s->leeway_ms != p->leeway_ms ||
        s->timeout_ms != p->http_timeout_ms || s->refetch_ms != p->jwks_refetch_interval_ms ||
        s->probe_ms != p->probe_interval_ms ||
        s->nparams != p->nauthorize_params || s->ndec != p->ndecryption_key_files)
        return false;
    if ((s->client_secret == NULL) != (p->client_secret == NULL) ||
        (s->client_secret != NULL && !sesame_util_ct_streq(s->client_secret, p->client_secret)))
        return false;
    for (size_t i = 0; i < s->nparams; i++)
        if (!str_eq(s->params[i], p->authorize_params[i]))
            return false;
    for (size_t i = 0; i < s->ndec; i++)
        if (!str_eq(s->dec_files[i], p->decryption_key_files[i]))
            return false;
    for (size_t i = 0; i < s->nstamps; i++) {
        struct stamp now;
        if (stamp_of(s->stamp_paths[i], &now) != SESAME_OK || !stamp_eq(&now, &s->stamps[i]))
            return false;
    }
    return true;
}

/* Cached metadata and keys stay valid across these settings. */
static bool
cache_compatible(const struct settings *a, const struct settings *b)
{
    return str_eq(a->issuer, b->issuer) && str_eq(a->client_id, b->client_id) &&
           a->discovery == b->discovery && str_eq(a->ep[EP_JWKS], b->ep[EP_JWKS]) &&
           str_eq(a->ca_file, b->ca_file);
}

/* ---- Runtime ------------------------------------------------------------------ */

struct sesame_provider *
sesame_provider_ref(struct sesame_provider *rt)
{
    if (rt)
        atomic_fetch_add(&rt->refs, 1);
    return rt;
}

void
sesame_provider_unref(struct sesame_provider *rt)
{
    if (rt == NULL || atomic_fetch_sub(&rt->refs, 1) != 1)
        return;
    meta_unref(rt->meta);
    keys_unref(rt->keys);
    free(rt->meta_error);
    free(rt->keys_error);
    pthread_mutex_destroy(&rt->mu);
    settings_clear(&rt->s);
    free(rt);
}

const char *
sesame_provider_name(const struct sesame_provider *rt)
{
    return rt->s.name;
}

const char *
sesame_provider_issuer(const struct sesame_provider *rt)
{
    return rt->s.issuer;
}

bool
sesame_provider_pkce(const struct sesame_provider *rt)
{
    return rt->s.pkce;
}

bool
sesame_provider_loaded(struct sesame_provider *rt)
{
    if (rt == NULL)
        return false;
    pthread_mutex_lock(&rt->mu);
    bool ok = rt->meta != NULL && rt->keys != NULL;
    pthread_mutex_unlock(&rt->mu);
    return ok;
}

const struct sesame_jose_keyset *
sesame_provider_decryption_keys(const struct sesame_provider *rt)
{
    return rt->s.dec_keys;
}

const char *
sesame_provider_status_name(enum sesame_provider_status st)
{
    switch (st) {
    case SESAME_PROVIDER_OK: return "ok";
    case SESAME_PROVIDER_UNAVAILABLE: return "unavailable";
    case SESAME_PROVIDER_REJECTED: return "rejected";
    case SESAME_PROVIDER_BAD_RESPONSE: return "bad_response";
    case SESAME_PROVIDER_INVALID_TOKEN: return "invalid_token";
    case SESAME_PROVIDER_UNKNOWN_KEY: return "unknown_key";
    case SESAME_PROVIDER_ACR_TOO_LOW: return "acr_too_low";
    case SESAME_PROVIDER_USERINFO_INVALID: return "userinfo_invalid";
    case SESAME_PROVIDER_USERINFO_MISMATCH: return "userinfo_mismatch";
    case SESAME_PROVIDER_MISCONFIGURED: return "misconfigured";
    }
    return "unknown";
}

static const char *
endpoint(const struct sesame_provider *rt, const struct meta *m, enum ep e)
{
    if (rt->s.ep[e] != NULL)
        return rt->s.ep[e];
    return m ? m->ep[e] : NULL;
}

static struct meta *
current_meta(struct sesame_provider *rt)
{
    pthread_mutex_lock(&rt->mu);
    struct meta *m = meta_ref(rt->meta);
    pthread_mutex_unlock(&rt->mu);
    return m;
}

static struct keys *
current_keys(struct sesame_provider *rt)
{
    pthread_mutex_lock(&rt->mu);
    struct keys *k = keys_ref(rt->keys);
    pthread_mutex_unlock(&rt->mu);
    return k;
}

/* ---- Availability ------------------------------------------------------------- */

#define CONFIRM_MS 500u /* after a first failure, the next probe comes this soon */

/* A background refresh time for a copy fetched now: at 75 to 90 % of
 * `refresh`, at random, so that instances and providers do not refresh in
 * step. */
static uint64_t
due_after(uint64_t now, uint64_t refresh)
{
    uint64_t r = 0;
    (void)sesame_util_random(&r, sizeof(r));
    uint64_t spread = refresh / 20 * 3; /* 15 % */
    return now + refresh / 4 * 3 + (spread ? r % (spread + 1) : 0);
}

/* rt->mu held. */
static bool
usable_locked(const struct sesame_provider *rt)
{
    return endpoint(rt, rt->meta, EP_AUTHZ) != NULL && endpoint(rt, rt->meta, EP_TOKEN) != NULL &&
           endpoint(rt, rt->meta, EP_JWKS) != NULL && rt->keys != NULL;
}

/* rt->mu held. */
static bool
available_locked(const struct sesame_provider *rt)
{
    return !rt->down && (usable_locked(rt) || !rt->fetch_failed);
}

enum health_event { HE_NONE, HE_FAILED, HE_DOWN, HE_UP };

/* Records the outcome of one call; rt->mu held. Returns what changed, for
 * health_log once the lock is released. */
static enum health_event
health_record_locked(struct sesame_provider *rt, bool ok, const char *why)
{
    uint64_t now = sesame_util_mono_ms();
    if (ok) {
        rt->fails = 0;
        rt->health_error[0] = '\0';
        rt->probe_at = rt->s.probe_ms ? now + rt->s.probe_ms : UINT64_MAX;
        if (!rt->down)
            return HE_NONE;
        rt->down = false;
        rt->changed_at = sesame_util_now();
        rt->keys_due = now; /* its keys may have changed meanwhile: refresh them next */
        return HE_UP;
    }
    if (rt->fails < UINT_MAX)
        rt->fails++;
    snprintf(rt->health_error, sizeof(rt->health_error), "%s", why ? why : "call failed");
    rt->probe_at = now + (rt->fails < SESAME_PROVIDER_DOWN_AFTER ? CONFIRM_MS
                                                                 : SESAME_PROVIDER_DOWN_PROBE_MS);
    if (rt->down)
        return HE_NONE;
    if (rt->fails < SESAME_PROVIDER_DOWN_AFTER)
        return HE_FAILED;
    rt->down = true;
    rt->changed_at = sesame_util_now();
    return HE_DOWN;
}

static void
health_log(const struct sesame_provider *rt, enum health_event ev, const char *why)
{
    if (ev == HE_DOWN)
        sesame_log_warn("provider %s unavailable: its last %d calls failed (%s); the sign-in "
                        "page says so and sign-ins are answered 503 until it answers again",
                        rt->s.name, SESAME_PROVIDER_DOWN_AFTER, why ? why : "?");
    else if (ev == HE_UP)
        sesame_log_warn("provider %s available again", rt->s.name);
}

/* Records a call made by an operation (token, userinfo). */
static void
health_call(struct sesame_provider *rt, bool ok, const char *why)
{
    pthread_mutex_lock(&rt->mu);
    enum health_event ev = health_record_locked(rt, ok, why);
    pthread_mutex_unlock(&rt->mu);
    health_log(rt, ev, why);
}

/* A call that ended because our own client was being freed (shutdown) says
 * nothing about the provider. */
static bool
client_closed(const struct sesame_httpc_response *r)
{
    return r->error != NULL && strcmp(r->error, "HTTP client shut down") == 0;
}

void
sesame_provider_get_health(struct sesame_provider *rt, struct sesame_provider_health *out)
{
    memset(out, 0, sizeof(*out));
    out->available = true;
    if (rt == NULL)
        return;
    pthread_mutex_lock(&rt->mu);
    out->available = available_locked(rt);
    out->loaded = usable_locked(rt);
    out->failures = rt->fails;
    out->changed_at = rt->changed_at;
    snprintf(out->error, sizeof(out->error), "%s", rt->health_error);
    pthread_mutex_unlock(&rt->mu);
}

bool
sesame_provider_available(struct sesame_provider *rt)
{
    if (rt == NULL)
        return false;
    pthread_mutex_lock(&rt->mu);
    bool ok = available_locked(rt);
    pthread_mutex_unlock(&rt->mu);
    return ok;
}

/* Parses and checks a discovery document against the settings. */
static struct meta *
meta_parse(const struct settings *s, const char *json, size_t len, char **err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return sesame_err_set(err, "discovery document is not a JSON object"), NULL;
    }
    struct meta *m = sesame_calloc(1, sizeof(*m));
    atomic_init(&m->refs, 1);
    const char *iss = json_string_value(json_object_get(doc, "issuer"));
    if (iss == NULL || strcmp(iss, s->issuer) != 0) {
        sesame_err_set(err, "discovery document: issuer does not match the configured issuer");
        goto fail;
    }
    for (int i = 0; i < EP_COUNT; i++) {
        json_t *v = json_object_get(doc, ep_names[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_string(v) || !https_url_ok(json_string_value(v))) {
            sesame_err_set(err, "discovery document: %s is not an absolute https URL",
                           ep_names[i]);
            goto fail;
        }
        m->ep[i] = sesame_strdup(json_string_value(v));
    }
    for (int i = 0; i < EP_COUNT; i++) {
        bool required = i == EP_AUTHZ || i == EP_TOKEN || i == EP_JWKS ||
                        (i == EP_USERINFO && s->userinfo != SESAME_USERINFO_OFF);
        if (required && m->ep[i] == NULL && s->ep[i] == NULL) {
            sesame_err_set(err, "discovery document: %s is missing", ep_names[i]);
            goto fail;
        }
    }
    json_decref(doc);
    return m;
fail:
    json_decref(doc);
    meta_unref(m);
    return NULL;
}

static void
install_meta(struct sesame_provider *rt, struct meta *m)
{
    pthread_mutex_lock(&rt->mu);
    meta_unref(rt->meta);
    rt->meta = m;
    rt->meta_at = sesame_util_mono_ms();
    rt->meta_retry_at = 0;
    rt->meta_due = due_after(rt->meta_at, rt->s.refresh_ms);
    free(rt->meta_error);
    rt->meta_error = NULL;
    pthread_mutex_unlock(&rt->mu);
}

static struct keys *
keys_parse(const char *json, size_t len, const char *source, char **err)
{
    struct sesame_jose_keyset *ks = sesame_jose_keyset_parse(json, len, err);
    if (ks == NULL)
        return NULL;
    struct keys *k = sesame_calloc(1, sizeof(*k));
    atomic_init(&k->refs, 1);
    k->ks = ks;
    k->source = dup_or_null(source);
    return k;
}

/* Called with rt->mu held. */
static void
install_keys_locked(struct sesame_provider *rt, struct keys *k)
{
    keys_unref(rt->keys);
    rt->keys = k;
    rt->keys_at = sesame_util_mono_ms();
    rt->keys_retry_at = 0;
    rt->keys_due = due_after(rt->keys_at, rt->s.refresh_ms);
    free(rt->keys_error);
    rt->keys_error = NULL;
}

int
sesame_provider_set_metadata(struct sesame_provider *rt, const char *json, size_t len, char **err)
{
    char *why = NULL;
    struct meta *m = meta_parse(&rt->s, json, len, &why);
    if (m == NULL) {
        sesame_err_set(err, "provider %s: %s", rt->s.name, why);
        free(why);
        return SESAME_ERROR;
    }
    install_meta(rt, m);
    return SESAME_OK;
}

int
sesame_provider_set_jwks(struct sesame_provider *rt, const char *json, size_t len, char **err)
{
    char *why = NULL;
    struct meta *m = current_meta(rt);
    struct keys *k = keys_parse(json, len, endpoint(rt, m, EP_JWKS), &why);
    meta_unref(m);
    if (k == NULL) {
        sesame_err_set(err, "provider %s: JWKS refused: %s", rt->s.name, why);
        free(why);
        return SESAME_ERROR;
    }
    pthread_mutex_lock(&rt->mu);
    install_keys_locked(rt, k);
    rt->jwks_attempts++;
    pthread_mutex_unlock(&rt->mu);
    return SESAME_OK;
}

/* ---- Registry ----------------------------------------------------------------- */

struct reg_entry {
    char *name;
    struct sesame_provider *rt;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct reg_entry *reg;
static size_t nreg;

struct sesame_provider *
sesame_provider_registry_get(const struct sesame_conf_provider *p, char **err)
{
    if (p == NULL || p->name == NULL) {
        sesame_err_set(err, "provider: no configuration");
        return NULL;
    }
    pthread_mutex_lock(&reg_mu);
    struct reg_entry *e = NULL;
    for (size_t i = 0; i < nreg; i++)
        if (strcmp(reg[i].name, p->name) == 0)
            e = &reg[i];
    if (e != NULL && settings_match(&e->rt->s, p)) {
        struct sesame_provider *rt = sesame_provider_ref(e->rt);
        pthread_mutex_unlock(&reg_mu);
        return rt;
    }
    struct sesame_provider *rt = sesame_calloc(1, sizeof(*rt));
    if (settings_build(&rt->s, p, err) != SESAME_OK) {
        pthread_mutex_unlock(&reg_mu);
        free(rt);
        return NULL;
    }
    atomic_init(&rt->refs, 1);
    pthread_mutex_init(&rt->mu, NULL);
    if (e != NULL) {
        struct sesame_provider *old = e->rt;
        if (cache_compatible(&old->s, &rt->s)) {
            pthread_mutex_lock(&old->mu);
            rt->meta = meta_ref(old->meta);
            rt->meta_at = old->meta_at;
            rt->keys = keys_ref(old->keys);
            rt->keys_at = old->keys_at;
            rt->forced_ever = old->forced_ever;
            rt->forced_at = old->forced_at;
            rt->meta_due = old->meta_due;
            rt->keys_due = old->keys_due;
            rt->fails = old->fails;
            rt->down = old->down;
            rt->fetch_failed = old->fetch_failed;
            rt->changed_at = old->changed_at;
            memcpy(rt->health_error, old->health_error, sizeof(rt->health_error));
            pthread_mutex_unlock(&old->mu);
        }
        e->rt = rt;
        sesame_provider_unref(old);
    } else {
        reg = sesame_realloc(reg, (nreg + 1) * sizeof(*reg));
        reg[nreg].name = sesame_strdup(p->name);
        reg[nreg].rt = rt;
        nreg++;
    }
    sesame_provider_ref(rt);
    pthread_mutex_unlock(&reg_mu);
    return rt;
}

int
sesame_provider_check(const struct sesame_conf_provider *p, char **err)
{
    if (p == NULL || p->name == NULL)
        return sesame_err_set(err, "provider: no configuration");
    struct settings s;
    if (settings_build(&s, p, err) != SESAME_OK)
        return SESAME_ERROR;
    settings_clear(&s);
    return SESAME_OK;
}

void
sesame_provider_registry_clear(void)
{
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < nreg; i++) {
        free(reg[i].name);
        sesame_provider_unref(reg[i].rt);
    }
    free(reg);
    reg = NULL;
    nreg = 0;
    pthread_mutex_unlock(&reg_mu);
}

void
sesame_provider_registry_sync(const struct sesame_conf *conf)
{
    for (size_t i = 0; i < conf->nproviders; i++) {
        char *err = NULL;
        struct sesame_provider *rt = sesame_provider_registry_get(conf->providers[i], &err);
        if (rt == NULL)
            sesame_log_error("provider %s: %s", conf->providers[i]->name, err ? err : "unusable");
        free(err);
        sesame_provider_unref(rt);
    }
    pthread_mutex_lock(&reg_mu);
    size_t kept = 0;
    for (size_t i = 0; i < nreg; i++) {
        if (sesame_conf_find_provider(conf, reg[i].name) != NULL) {
            reg[kept++] = reg[i];
            continue;
        }
        free(reg[i].name);
        sesame_provider_unref(reg[i].rt);
    }
    nreg = kept;
    pthread_mutex_unlock(&reg_mu);
}

size_t
sesame_provider_registry_list(struct sesame_provider ***out)
{
    pthread_mutex_lock(&reg_mu);
    struct sesame_provider **v = sesame_calloc(nreg ? nreg : 1, sizeof(*v));
    for (size_t i = 0; i < nreg; i++)
        v[i] = sesame_provider_ref(reg[i].rt);
    size_t n = nreg;
    pthread_mutex_unlock(&reg_mu);
    *out = v;
    return n;
}

int
sesame_provider_health(const char *name, struct sesame_provider_health *out)
{
    struct sesame_provider *rt = NULL;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < nreg && name != NULL; i++)
        if (strcmp(reg[i].name, name) == 0)
            rt = sesame_provider_ref(reg[i].rt);
    pthread_mutex_unlock(&reg_mu);
    sesame_provider_get_health(rt, out);
    if (rt == NULL)
        return SESAME_DECLINED;
    sesame_provider_unref(rt);
    return SESAME_OK;
}

static struct job *job_new_locked(struct sesame_provider *rt, struct sesame_httpc *httpc,
                                  bool do_meta, bool force_keys);
static void job_step(struct job *job);

uint64_t
sesame_provider_upkeep(struct sesame_provider *rt, struct sesame_httpc *httpc, uint64_t now)
{
    const struct settings *s = &rt->s;
    struct job *job = NULL;
    pthread_mutex_lock(&rt->mu);
    /* keys are due only once there is a JWKS endpoint (metadata first) */
    bool jwks = endpoint(rt, rt->meta, EP_JWKS) != NULL;
    uint64_t next = rt->probe_at;
    if (jwks && rt->keys_due < next)
        next = rt->keys_due;
    if (s->discovery && rt->meta_due < next)
        next = rt->meta_due;
    if (rt->job != NULL) {
        next = now + 1000; /* a fetch is in flight: look again when it is done */
    } else {
        bool probe = now >= rt->probe_at;
        bool do_meta = s->discovery && (now >= rt->meta_due || probe);
        bool do_keys = jwks && (now >= rt->keys_due || (probe && !s->discovery));
        if (do_meta || do_keys) {
            job = job_new_locked(rt, httpc, do_meta, do_keys);
            if (probe) /* until the outcome sets the next one */
                rt->probe_at = now + SESAME_PROVIDER_DOWN_PROBE_MS;
            next = now + 1000;
        }
    }
    pthread_mutex_unlock(&rt->mu);
    if (job)
        job_step(job);
    return next;
}

/* ---- URLs ------------------------------------------------------------------------ */

char *
sesame_provider_authorize_url(struct sesame_provider *rt, const char *redirect_uri,
                              const char *state, const char *nonce, const char *acr_values,
                              const char *code_challenge, char **err)
{
    if (!arg_ok(redirect_uri) || !arg_ok(state) || !arg_ok(nonce)) {
        sesame_err_set(err, "authorize URL: redirect_uri, state and nonce are required "
                            "(at most %d bytes each)", MAX_ARG);
        return NULL;
    }
    if (acr_values != NULL && !arg_ok(acr_values)) {
        sesame_err_set(err, "authorize URL: acr_values is empty or too long");
        return NULL;
    }
    if (rt->s.pkce && (!arg_ok(code_challenge) || strlen(code_challenge) > 128)) {
        sesame_err_set(err, "authorize URL: provider %s uses PKCE: a code_challenge is required",
                       rt->s.name);
        return NULL;
    }
    struct meta *m = current_meta(rt);
    const char *authz = endpoint(rt, m, EP_AUTHZ);
    if (authz == NULL) {
        meta_unref(m);
        sesame_err_set(err, "provider %s: metadata not available yet", rt->s.name);
        return NULL;
    }
    char *u = NULL;
    size_t n = 0;
    append(&u, &n, authz);
    const char *sep = strchr(authz, '?') ? "&" : "?";
    meta_unref(m);
    add_param(&u, &n, sep, "response_type", "code");
    add_param(&u, &n, "&", "client_id", rt->s.client_id);
    add_param(&u, &n, "&", "redirect_uri", redirect_uri);
    add_param(&u, &n, "&", "scope", rt->s.scopes);
    add_param(&u, &n, "&", "state", state);
    add_param(&u, &n, "&", "nonce", nonce);
    const char *acr = acr_values ? acr_values : rt->s.acr_values;
    if (acr != NULL)
        add_param(&u, &n, "&", "acr_values", acr);
    if (rt->s.pkce) {
        add_param(&u, &n, "&", "code_challenge", code_challenge);
        add_param(&u, &n, "&", "code_challenge_method", "S256");
    }
    append(&u, &n, rt->s.params_query);
    return u;
}

char *
sesame_provider_pkce_challenge(const char *verifier)
{
    if (verifier == NULL)
        return NULL;
    size_t n = strnlen(verifier, 129);
    if (n < 43 || n > 128)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!unreserved((unsigned char)verifier[i]))
            return NULL;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)verifier, n, md);
    char *out = sesame_malloc(sesame_util_b64url_len(sizeof(md)) + 1);
    sesame_util_b64url_encode(out, md, sizeof(md));
    return out;
}

char *
sesame_provider_end_session_url(struct sesame_provider *rt, const char *id_token_hint,
                                const char *state, const char *post_logout_redirect_uri)
{
    struct meta *m = current_meta(rt);
    const char *end = endpoint(rt, m, EP_END);
    if (end == NULL) {
        meta_unref(m);
        return NULL;
    }
    char *u = NULL;
    size_t n = 0;
    append(&u, &n, end);
    const char *sep = strchr(end, '?') ? "&" : "?";
    meta_unref(m);
    if (id_token_hint) {
        add_param(&u, &n, sep, "id_token_hint", id_token_hint);
        sep = "&";
    }
    if (state) {
        add_param(&u, &n, sep, "state", state);
        sep = "&";
    }
    if (post_logout_redirect_uri)
        add_param(&u, &n, sep, "post_logout_redirect_uri", post_logout_redirect_uri);
    return u;
}

/* ---- Token request ------------------------------------------------------------ */

void
sesame_provider_token_request_clear(struct sesame_provider_token_request *rq)
{
    if (rq == NULL)
        return;
    if (rq->body) {
        OPENSSL_cleanse(rq->body, strlen(rq->body));
        free(rq->body);
    }
    if (rq->authorization) {
        OPENSSL_cleanse(rq->authorization, strlen(rq->authorization));
        free(rq->authorization);
    }
    rq->body = rq->authorization = NULL;
}

static char *
client_assertion(const struct settings *s, const char *aud, char **err)
{
    char jti[64];
    if (sesame_util_random_token(jti, sizeof(jti), 32) != SESAME_OK) {
        sesame_err_set(err, "client assertion: no randomness");
        return NULL;
    }
    int64_t now = sesame_util_now();
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "iss", s->client_id, "sub",
                               s->client_id, "aud", aud, "jti", jti, "iat", (json_int_t)now,
                               "exp", (json_int_t)(now + ASSERTION_LIFETIME));
    if (claims == NULL) {
        sesame_err_set(err, "client assertion: cannot build the claims");
        return NULL;
    }
    char *why = NULL;
    char *jwt = sesame_jose_sign(claims, s->signing_key, &why);
    json_decref(claims);
    if (jwt == NULL) {
        sesame_err_set(err, "client assertion: %s", why ? why : "signing failed");
        free(why);
    }
    return jwt;
}

int
sesame_provider_token_request(struct sesame_provider *rt, const char *code,
                              const char *redirect_uri, const char *code_verifier,
                              struct sesame_provider_token_request *out, char **err)
{
    const struct settings *s = &rt->s;
    out->body = out->authorization = NULL;
    if (!arg_ok(code) || !arg_ok(redirect_uri) ||
        (code_verifier != NULL && !arg_ok(code_verifier)))
        return sesame_err_set(err, "token request: code and redirect_uri are required (at most "
                                   "%d bytes each)", MAX_ARG);
    struct meta *m = current_meta(rt);
    const char *token_ep = endpoint(rt, m, EP_TOKEN);
    if (token_ep == NULL) {
        meta_unref(m);
        return sesame_err_set(err, "provider %s: metadata not available yet", s->name);
    }
    char *b = NULL;
    size_t n = 0;
    add_param(&b, &n, "", "grant_type", "authorization_code");
    add_param(&b, &n, "&", "code", code);
    add_param(&b, &n, "&", "redirect_uri", redirect_uri);
    if (code_verifier)
        add_param(&b, &n, "&", "code_verifier", code_verifier);
    switch (s->token_auth) {
    case SESAME_AUTH_CLIENT_SECRET_POST:
        add_param(&b, &n, "&", "client_id", s->client_id);
        add_param(&b, &n, "&", "client_secret", s->client_secret);
        break;
    case SESAME_AUTH_CLIENT_SECRET_BASIC: {
        char *cred = NULL;
        size_t cl = 0;
        sesame_provider_percent_encode(&cred, &cl, s->client_id);
        append(&cred, &cl, ":");
        sesame_provider_percent_encode(&cred, &cl, s->client_secret);
        size_t elen = 4 * ((cl + 2) / 3) + 1;
        static const char basic[] = "Authorization: Basic ";
        char *hdr = sesame_malloc(sizeof(basic) + elen);
        memcpy(hdr, basic, sizeof(basic));
        EVP_EncodeBlock((unsigned char *)hdr + sizeof(basic) - 1, (const unsigned char *)cred, (int)cl);
        OPENSSL_cleanse(cred, cl);
        free(cred);
        out->authorization = hdr;
        break;
    }
    case SESAME_AUTH_PRIVATE_KEY_JWT: {
        char *jwt = client_assertion(s, token_ep, err);
        if (jwt == NULL) {
            meta_unref(m);
            free(b);
            return SESAME_ERROR;
        }
        add_param(&b, &n, "&", "client_id", s->client_id);
        add_param(&b, &n, "&", "client_assertion_type", ASSERTION_TYPE);
        add_param(&b, &n, "&", "client_assertion", jwt);
        free(jwt);
        break;
    }
    }
    meta_unref(m);
    out->body = b;
    return SESAME_OK;
}

/* ---- Jobs: shared fetches of metadata and keys ---------------------------------- */

static void job_step(struct job *job);

/* Wakes every waiter; rt->mu held. */
static void
wake_waiters_locked(struct sesame_provider *rt)
{
    while (rt->waiters != NULL) {
        struct sesame_provider_op *op = rt->waiters;
        rt->waiters = op->wnext;
        if (rt->waiters)
            rt->waiters->wprev = NULL;
        op->wnext = op->wprev = NULL;
        op->waiting = false;
        event_active(op->ev, EV_TIMEOUT, 1);
    }
}

/* rt->mu held. */
static void
join_locked(struct sesame_provider *rt, struct sesame_provider_op *op)
{
    op->waiting = true;
    op->wprev = NULL;
    op->wnext = rt->waiters;
    if (rt->waiters)
        rt->waiters->wprev = op;
    rt->waiters = op;
}

/* rt->mu held. Creates the job; the caller runs job_step(job) once the lock
 * is released. */
static struct job *
job_new_locked(struct sesame_provider *rt, struct sesame_httpc *httpc, bool do_meta,
               bool force_keys)
{
    struct job *job = sesame_calloc(1, sizeof(*job));
    job->rt = sesame_provider_ref(rt);
    job->httpc = httpc;
    job->do_meta = do_meta;
    job->force_keys = force_keys;
    rt->job = job;
    return job;
}

static void
job_finish(struct job *job)
{
    struct sesame_provider *rt = job->rt;
    pthread_mutex_lock(&rt->mu);
    rt->job = NULL;
    wake_waiters_locked(rt);
    pthread_mutex_unlock(&rt->mu);
    free(job);
    sesame_provider_unref(rt);
}

static void
job_meta_done(void *arg, const struct sesame_httpc_response *r)
{
    struct job *job = arg;
    struct sesame_provider *rt = job->rt;
    job->call = NULL;
    char *why = NULL;
    struct meta *m = NULL;
    if (r->error != NULL)
        sesame_err_set(&why, "discovery unreachable: %s", r->error);
    else if (r->status != 200)
        sesame_err_set(&why, "discovery answered HTTP %ld", r->status);
    else
        m = meta_parse(&rt->s, r->body, r->body_len, &why);
    if (m != NULL) {
        install_meta(rt, m);
        pthread_mutex_lock(&rt->mu);
        rt->fetch_failed = false;
        enum health_event ev = health_record_locked(rt, true, NULL);
        pthread_mutex_unlock(&rt->mu);
        health_log(rt, ev, NULL);
    } else if (!client_closed(r)) {
        pthread_mutex_lock(&rt->mu);
        bool kept = rt->meta != NULL;
        rt->meta_retry_at = sesame_util_mono_ms() + retry_delay(&rt->s);
        rt->meta_due = rt->meta_retry_at;
        free(rt->meta_error);
        rt->meta_error = sesame_strdup(why ? why : "discovery failed");
        rt->fetch_failed = true;
        enum health_event ev = health_record_locked(rt, false, rt->meta_error);
        pthread_mutex_unlock(&rt->mu);
        /* once it is known to be down, the probes say nothing more until it
         * is back */
        if (ev == HE_NONE)
            sesame_log_debug("provider %s: metadata still unavailable (%s)", rt->s.name,
                             why ? why : "?");
        else if (kept)
            sesame_log_warn("provider %s: metadata refresh failed (%s); keeping the last good "
                            "copy", rt->s.name, why ? why : "?");
        else
            sesame_log_error("provider %s: metadata unavailable (%s)", rt->s.name,
                             why ? why : "?");
        health_log(rt, ev, why);
    }
    free(why);
    job_step(job);
}

static void
job_keys_done(void *arg, const struct sesame_httpc_response *r)
{
    struct job *job = arg;
    struct sesame_provider *rt = job->rt;
    job->call = NULL;
    char *why = NULL;
    struct keys *k = NULL;
    struct meta *m = current_meta(rt);
    if (r->error != NULL)
        sesame_err_set(&why, "JWKS unreachable: %s", r->error);
    else if (r->status != 200)
        sesame_err_set(&why, "JWKS answered HTTP %ld", r->status);
    else
        k = keys_parse(r->body, r->body_len, endpoint(rt, m, EP_JWKS), &why);
    meta_unref(m);
    pthread_mutex_lock(&rt->mu);
    bool kept = rt->keys != NULL;
    rt->jwks_attempts++;
    enum health_event ev = HE_NONE;
    if (k != NULL) {
        install_keys_locked(rt, k);
        rt->fetch_failed = false;
        ev = health_record_locked(rt, true, NULL);
    } else if (!client_closed(r)) {
        rt->keys_retry_at = sesame_util_mono_ms() + retry_delay(&rt->s);
        rt->keys_due = rt->keys_retry_at;
        free(rt->keys_error);
        rt->keys_error = sesame_strdup(why ? why : "JWKS fetch failed");
        rt->fetch_failed = true;
        ev = health_record_locked(rt, false, rt->keys_error);
    }
    pthread_mutex_unlock(&rt->mu);
    if (k == NULL && !client_closed(r)) {
        if (ev == HE_NONE)
            sesame_log_debug("provider %s: JWKS still unavailable (%s)", rt->s.name,
                             why ? why : "?");
        else if (kept)
            sesame_log_warn("provider %s: JWKS refresh failed (%s); keeping the last good copy",
                            rt->s.name, why ? why : "?");
        else
            sesame_log_error("provider %s: JWKS unavailable (%s)", rt->s.name, why ? why : "?");
    }
    health_log(rt, ev, why);
    free(why);
    job_finish(job);
}

static bool
stale(uint64_t now, uint64_t at, uint64_t retry_at, uint64_t refresh)
{
    return now - at >= refresh && now >= retry_at;
}

static void
job_step(struct job *job)
{
    struct sesame_provider *rt = job->rt;
    const struct settings *s = &rt->s;
    struct sesame_httpc_request rq = {
        .method = SESAME_HTTPC_GET,
        .timeout_ms = s->timeout_ms,
        .ca_file = s->ca_file,
    };
    const char *accept[1];
    rq.headers = accept;
    rq.nheaders = 1;
    if (job->do_meta) {
        job->do_meta = false;
        size_t il = strlen(s->issuer);
        while (il > 0 && s->issuer[il - 1] == '/')
            il--;
        char *url = sesame_asprintf("%.*s/.well-known/openid-configuration", (int)il, s->issuer);
        rq.url = url;
        accept[0] = "Accept: application/json";
        job->call = sesame_httpc_fetch(job->httpc, &rq, job_meta_done, job);
        free(url);
        if (job->call == NULL)
            job_finish(job);
        return;
    }
    if (!job->keys_stage) {
        job->keys_stage = true;
        pthread_mutex_lock(&rt->mu);
        const char *jwks = endpoint(rt, rt->meta, EP_JWKS);
        uint64_t now = sesame_util_mono_ms();
        bool fetch = jwks != NULL &&
                     (job->force_keys || rt->keys == NULL ||
                      stale(now, rt->keys_at, rt->keys_retry_at, s->refresh_ms) ||
                      !str_eq(rt->keys->source, jwks));
        char *url = fetch ? sesame_strdup(jwks) : NULL;
        if (!fetch) {
            /* nothing more to do: finish while still holding the lock, so
             * that no op joins a job that will not fetch the keys */
            rt->job = NULL;
            wake_waiters_locked(rt);
            pthread_mutex_unlock(&rt->mu);
            free(job);
            sesame_provider_unref(rt);
            return;
        }
        pthread_mutex_unlock(&rt->mu);
        rq.url = url;
        rq.max_response = SESAME_JOSE_MAX_JWKS;
        accept[0] = "Accept: application/json, application/jwk-set+json";
        job->call = sesame_httpc_fetch(job->httpc, &rq, job_keys_done, job);
        free(url);
        if (job->call == NULL)
            job_finish(job);
        return;
    }
    job_finish(job);
}

/* ---- Operations -------------------------------------------------------------- */

#define HS_ALGS ((unsigned)(SESAME_ALG_HS256 | SESAME_ALG_HS384 | SESAME_ALG_HS512))
#define MAX_WAITS 4 /* jobs an operation may wait for, in all */

static void op_run(struct sesame_provider_op *op);

static void
op_free(struct sesame_provider_op *op)
{
    struct sesame_provider *rt = op->rt;
    if (op->call != NULL)
        sesame_httpc_cancel(op->call);
    pthread_mutex_lock(&rt->mu);
    if (op->waiting) {
        if (op->wprev)
            op->wprev->wnext = op->wnext;
        else
            rt->waiters = op->wnext;
        if (op->wnext)
            op->wnext->wprev = op->wprev;
        op->waiting = false;
    }
    pthread_mutex_unlock(&rt->mu);
    event_free(op->ev);
    char *secrets[] = {op->code, op->verifier, op->id_token, op->access_token, op->id_plain,
                       op->ui_plain};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(secrets); i++) {
        if (secrets[i]) {
            OPENSSL_cleanse(secrets[i], strlen(secrets[i]));
            free(secrets[i]);
        }
    }
    if (op->ui_body) {
        OPENSSL_cleanse(op->ui_body, op->ui_len);
        free(op->ui_body);
    }
    free(op->redirect_uri);
    free(op->nonce);
    free(op->min_acr);
    free(op->early_err);
    json_decref(op->id_claims);
    free(op);
    sesame_provider_unref(rt);
}

void
sesame_provider_cancel(struct sesame_provider_op *op)
{
    if (op != NULL)
        op_free(op);
}

/* Reports a failure to the caller and frees op. Always STEP_DONE. */
static enum step op_fail(struct sesame_provider_op *op, enum sesame_provider_status st,
                         const char *fmt, ...) SESAME_PRINTF(3, 4);

static enum step
op_fail(struct sesame_provider_op *op, enum sesame_provider_status st, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    switch (op->kind) {
    case OP_ENSURE: op->ensure_cb(op->arg, st, msg); break;
    case OP_EXCHANGE: op->exchange_cb(op->arg, NULL, st, msg); break;
    case OP_VALIDATE: op->validate_cb(op->arg, NULL, st, msg); break;
    }
    op_free(op);
    return STEP_DONE;
}

static void
op_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    op_run(arg);
}

static struct sesame_provider_op *
op_new(struct sesame_provider *rt, struct sesame_httpc *httpc, enum op_kind kind, void *arg)
{
    struct sesame_provider_op *op = sesame_calloc(1, sizeof(*op));
    op->rt = sesame_provider_ref(rt);
    op->httpc = httpc;
    op->kind = kind;
    op->arg = arg;
    op->ev = event_new(sesame_httpc_base(httpc), -1, 0, op_wake, op);
    if (op->ev == NULL)
        abort(); /* out of memory, like sesame_malloc */
    event_active(op->ev, EV_TIMEOUT, 1); /* starts on the next loop iteration */
    return op;
}

static enum step
step_ensure(struct sesame_provider_op *op)
{
    struct sesame_provider *rt = op->rt;
    const struct settings *s = &rt->s;
    pthread_mutex_lock(&rt->mu);
    if (op->recheck && !available_locked(rt)) {
        /* known to be down: ask it again (with any fetch in flight) before
         * saying so */
        if (!op->rechecked && op->waits < MAX_WAITS) {
            op->rechecked = true;
            struct job *job = rt->job ? NULL
                                      : job_new_locked(rt, op->httpc, s->discovery,
                                                       !s->discovery || rt->keys == NULL);
            join_locked(rt, op);
            op->waits++;
            pthread_mutex_unlock(&rt->mu);
            if (job)
                job_step(job);
            return STEP_WAIT;
        }
        char why[300];
        snprintf(why, sizeof(why), "%s", rt->health_error[0] ? rt->health_error : "no answer");
        pthread_mutex_unlock(&rt->mu);
        return op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: unavailable (%s)", s->name,
                       why);
    }
    if (!op->ensure_waited && op->waits < MAX_WAITS) {
        uint64_t now = sesame_util_mono_ms();
        const char *jwks = endpoint(rt, rt->meta, EP_JWKS);
        bool do_meta = s->discovery &&
                       (rt->meta == NULL ||
                        stale(now, rt->meta_at, rt->meta_retry_at, s->refresh_ms));
        bool do_keys = rt->keys == NULL ||
                       stale(now, rt->keys_at, rt->keys_retry_at, s->refresh_ms) ||
                       (jwks != NULL && !str_eq(rt->keys->source, jwks));
        if (do_meta || do_keys) {
            struct job *job = rt->job ? NULL : job_new_locked(rt, op->httpc, do_meta, false);
            join_locked(rt, op);
            op->ensure_waited = true;
            op->waits++;
            pthread_mutex_unlock(&rt->mu);
            if (job)
                job_step(job);
            return STEP_WAIT;
        }
    }
    char why[512] = "";
    if (endpoint(rt, rt->meta, EP_AUTHZ) == NULL || endpoint(rt, rt->meta, EP_TOKEN) == NULL ||
        endpoint(rt, rt->meta, EP_JWKS) == NULL)
        snprintf(why, sizeof(why), "%s", rt->meta_error ? rt->meta_error : "no metadata");
    else if (rt->keys == NULL)
        snprintf(why, sizeof(why), "%s", rt->keys_error ? rt->keys_error : "no signing keys");
    pthread_mutex_unlock(&rt->mu);
    if (why[0] != '\0')
        return op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: %s", s->name, why);
    switch (op->kind) {
    case OP_ENSURE:
        op->ensure_cb(op->arg, SESAME_PROVIDER_OK, NULL);
        op_free(op);
        return STEP_DONE;
    case OP_EXCHANGE: op->stage = ST_TOKEN; break;
    case OP_VALIDATE: op->stage = ST_IDTOKEN; break;
    }
    return STEP_NEXT;
}

enum kid_action { KID_RETRY, KID_WAIT, KID_FAIL };

/* After a token named an unknown kid: retry with newer keys, wait for a
 * (shared, rate-limited) JWKS refetch, or give up. */
static enum kid_action
kid_refetch(struct sesame_provider_op *op, const char **why)
{
    struct sesame_provider *rt = op->rt;
    struct job *job = NULL;
    pthread_mutex_lock(&rt->mu);
    if (!op->kid_seen) {
        op->kid_seen = true;
        op->kid_attempts = rt->jwks_attempts;
    }
    if (rt->jwks_attempts > op->kid_attempts) {
        enum kid_action a = op->kid_retried ? KID_FAIL : KID_RETRY;
        op->kid_retried = true;
        pthread_mutex_unlock(&rt->mu);
        *why = "unknown kid, also after a JWKS refetch";
        return a;
    }
    if (op->waits >= MAX_WAITS) {
        pthread_mutex_unlock(&rt->mu);
        *why = "unknown kid";
        return KID_FAIL;
    }
    if (rt->job != NULL) {
        rt->job->force_keys = true;
    } else {
        uint64_t now = sesame_util_mono_ms();
        if (rt->forced_ever && now - rt->forced_at < rt->s.refetch_ms) {
            pthread_mutex_unlock(&rt->mu);
            *why = "unknown kid; JWKS refetch rate-limited (jwks_refetch_interval)";
            return KID_FAIL;
        }
        rt->forced_ever = true;
        rt->forced_at = now;
        job = job_new_locked(rt, op->httpc, false, true);
    }
    join_locked(rt, op);
    op->waits++;
    pthread_mutex_unlock(&rt->mu);
    if (job)
        job_step(job);
    return KID_WAIT;
}

/* Decrypts or copies a token according to the provider's decryption keys.
 * Returns NULL with *why (static or in buf) on refusal. */
static char *
unwrap_token(const struct settings *s, const char *what, const char *tok, size_t len, char *buf,
             size_t bufsize, const char **why)
{
    bool jwe = sesame_jose_is_jwe(tok, len);
    size_t ndec = sesame_jose_keyset_count(s->dec_keys);
    if (jwe && ndec == 0) {
        snprintf(buf, bufsize, "%s is encrypted but no decryption key is configured", what);
        *why = buf;
        return NULL;
    }
    if (!jwe && ndec > 0) {
        snprintf(buf, bufsize, "%s is not encrypted although decryption keys are configured",
                 what);
        *why = buf;
        return NULL;
    }
    if (!jwe)
        return sesame_strndup(tok, len);
    char *plain = NULL, *err = NULL;
    if (sesame_jose_decrypt(tok, len, s->dec_keys, &plain, NULL, &err) != SESAME_OK) {
        snprintf(buf, bufsize, "%s decryption failed: %s", what, err ? err : "?");
        free(err);
        *why = buf;
        return NULL;
    }
    return plain;
}

static void
fill_expect(const struct sesame_provider_op *op, struct sesame_jose_expect *e)
{
    memset(e, 0, sizeof(*e));
    e->issuer = op->rt->s.issuer;
    e->client_id = op->rt->s.client_id;
    e->nonce = op->nonce;
    e->min_acr = NULL; /* checked separately, for its own status */
    e->now = op->now;
    /* rounded up: a leeway of 500ms tolerates 1 s, never 0 */
    e->leeway_s = (int64_t)sesame_util_ms_to_s_ceil(op->rt->s.leeway_ms);
    e->max_age_s = 0;
}

/* Verifies a compact JWS with the current keys: SESAME_OK, SESAME_ERROR
 * (why set) or SESAME_JOSE_UNKNOWN_KID. */
static int
verify_jws(struct sesame_provider_op *op, const char *jws, json_t **claims, char **why)
{
    const struct settings *s = &op->rt->s;
    const unsigned char *hs = NULL;
    size_t hsl = 0;
    if ((s->algs & HS_ALGS) != 0 && s->client_secret != NULL) {
        hs = (const unsigned char *)s->client_secret;
        hsl = strlen(s->client_secret);
    }
    struct keys *k = current_keys(op->rt);
    int rc = sesame_jose_verify(jws, strlen(jws), k ? k->ks : NULL, s->algs, hs, hsl, claims, why);
    keys_unref(k);
    return rc;
}

int
sesame_provider_verify_jws(struct sesame_provider *rt, const char *jws, json_t **claims,
                           char **err)
{
    const struct settings *s = &rt->s;
    const unsigned char *hs = NULL;
    size_t hsl = 0;
    if ((s->algs & HS_ALGS) != 0 && s->client_secret != NULL) {
        hs = (const unsigned char *)s->client_secret;
        hsl = strlen(s->client_secret);
    }
    struct keys *k = current_keys(rt);
    int rc = sesame_jose_verify(jws, strlen(jws), k ? k->ks : NULL, s->algs, hs, hsl, claims, err);
    keys_unref(k);
    return rc;
}

/* The lowest known rank among the space-separated acr values of s (an
 * acr_values list means "any of these"); 0 when none is known. */
static int
min_acr_rank(const char *s)
{
    int best = 0;
    char word[32];
    while (s && *s) {
        while (*s == ' ')
            s++;
        size_t n = strcspn(s, " ");
        if (n > 0 && n < sizeof(word)) {
            memcpy(word, s, n);
            word[n] = '\0';
            int r = sesame_jose_acr_rank(word);
            if (r > 0 && (best == 0 || r < best))
                best = r;
        }
        s += n;
    }
    return best;
}

static enum step
step_idtoken(struct sesame_provider_op *op)
{
    const struct settings *s = &op->rt->s;
    char buf[600];
    const char *why = NULL;
    if (op->id_plain == NULL) {
        op->id_plain = unwrap_token(s, "ID token", op->id_token, strlen(op->id_token), buf,
                                    sizeof(buf), &why);
        if (op->id_plain == NULL)
            return op_fail(op, SESAME_PROVIDER_INVALID_TOKEN, "provider %s: %s", s->name, why);
    }
    json_t *claims = NULL;
    char *err = NULL;
    int rc = verify_jws(op, op->id_plain, &claims, &err);
    if (rc == SESAME_JOSE_UNKNOWN_KID) {
        free(err);
        switch (kid_refetch(op, &why)) {
        case KID_RETRY: return STEP_NEXT;
        case KID_WAIT: return STEP_WAIT;
        case KID_FAIL:
            return op_fail(op, SESAME_PROVIDER_UNKNOWN_KEY, "provider %s: ID token refused: %s",
                           s->name, why);
        }
    }
    if (rc != SESAME_OK) {
        snprintf(buf, sizeof(buf), "%s", err ? err : "verification failed");
        free(err);
        return op_fail(op, SESAME_PROVIDER_INVALID_TOKEN, "provider %s: ID token refused: %s",
                       s->name, buf);
    }
    struct sesame_jose_expect e;
    fill_expect(op, &e);
    if (sesame_jose_check_id_token(claims, &e, &err) != SESAME_OK) {
        snprintf(buf, sizeof(buf), "%s", err ? err : "claims refused");
        free(err);
        json_decref(claims);
        return op_fail(op, SESAME_PROVIDER_INVALID_TOKEN, "provider %s: ID token refused: %s",
                       s->name, buf);
    }
    if (op->min_acr != NULL) {
        const char *acr = json_string_value(json_object_get(claims, "acr"));
        int want = min_acr_rank(op->min_acr);
        if (want == 0 || sesame_jose_acr_rank(acr) < want) {
            json_decref(claims);
            return op_fail(op, SESAME_PROVIDER_ACR_TOO_LOW,
                           "provider %s: acr below the level required", s->name);
        }
    }
    op->id_claims = claims;
    op->stage = ST_USERINFO;
    op->kid_seen = op->kid_retried = false;
    return STEP_NEXT;
}

static bool
protected_claim(const char *name)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(protocol_claims); i++)
        if (strcmp(protocol_claims[i], name) == 0)
            return true;
    return false;
}

static enum step
op_succeed_validate(struct sesame_provider_op *op, json_t *userinfo)
{
    json_t *merged = json_copy(op->id_claims);
    if (merged == NULL)
        abort();
    if (userinfo != NULL) {
        const char *key;
        json_t *val;
        json_object_foreach(userinfo, key, val)
        {
            if (!protected_claim(key))
                json_object_set(merged, key, val);
        }
    }
    struct sesame_provider_identity id = {
        .claims = merged,
        .id_token = op->id_token,
        .sub = json_string_value(json_object_get(op->id_claims, "sub")),
        .acr = json_string_value(json_object_get(op->id_claims, "acr")),
    };
    op->validate_cb(op->arg, &id, SESAME_PROVIDER_OK, NULL);
    json_decref(merged);
    json_decref(userinfo);
    op_free(op);
    return STEP_DONE;
}

static void
userinfo_done(void *arg, const struct sesame_httpc_response *r)
{
    struct sesame_provider_op *op = arg;
    const char *name = op->rt->s.name;
    op->call = NULL;
    if (r->error != NULL) {
        if (!client_closed(r))
            health_call(op->rt, false, "userinfo unreachable");
        op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: userinfo unreachable: %s", name,
                r->error);
        return;
    }
    health_call(op->rt, r->status < 500, "userinfo answered HTTP 5xx");
    if (r->status != 200) {
        op_fail(op, r->status >= 500 ? SESAME_PROVIDER_UNAVAILABLE
                                     : SESAME_PROVIDER_USERINFO_INVALID,
                "provider %s: userinfo answered HTTP %ld", name, r->status);
        return;
    }
    bool jwt = op->rt->s.userinfo == SESAME_USERINFO_JWT;
    const char *want = jwt ? "application/jwt" : "application/json";
    if (!media_type_is(r->content_type, want)) {
        op_fail(op, SESAME_PROVIDER_USERINFO_INVALID,
                "provider %s: userinfo answer is not %s (userinfo = %s)", name, want,
                jwt ? "jwt" : "json");
        return;
    }
    op->ui_body = sesame_malloc(r->body_len + 1); /* exact copy: the body may hold NULs */
    memcpy(op->ui_body, r->body, r->body_len);
    op->ui_body[r->body_len] = '\0';
    op->ui_len = r->body_len;
    op->stage = ST_USERINFO_CHECK;
    op_run(op);
}

static enum step
step_userinfo(struct sesame_provider_op *op)
{
    const struct settings *s = &op->rt->s;
    if (s->userinfo == SESAME_USERINFO_OFF)
        return op_succeed_validate(op, NULL);
    struct meta *m = current_meta(op->rt);
    const char *url = endpoint(op->rt, m, EP_USERINFO);
    if (url == NULL) {
        meta_unref(m);
        return op_fail(op, SESAME_PROVIDER_MISCONFIGURED,
                       "provider %s: no userinfo endpoint (set userinfo = off?)", s->name);
    }
    char *auth = sesame_asprintf("Authorization: Bearer %s", op->access_token);
    const char *hdrs[2] = {
        auth, s->userinfo == SESAME_USERINFO_JWT ? "Accept: application/jwt"
                                                 : "Accept: application/json"};
    struct sesame_httpc_request rq = {
        .method = SESAME_HTTPC_GET,
        .url = url,
        .headers = hdrs,
        .nheaders = 2,
        .timeout_ms = s->timeout_ms,
        .ca_file = s->ca_file,
        .max_response = SESAME_JOSE_MAX_TOKEN,
    };
    op->call = sesame_httpc_fetch(op->httpc, &rq, userinfo_done, op);
    OPENSSL_cleanse(auth, strlen(auth));
    free(auth);
    meta_unref(m);
    if (op->call == NULL)
        return op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: HTTP client shut down",
                       s->name);
    return STEP_WAIT;
}

static enum step
step_userinfo_check(struct sesame_provider_op *op)
{
    const struct settings *s = &op->rt->s;
    json_t *uc = NULL;
    char buf[600];
    const char *why = NULL;
    char *err = NULL;
    if (s->userinfo == SESAME_USERINFO_JSON) {
        uc = json_loadb(op->ui_body, op->ui_len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(uc)) {
            json_decref(uc);
            return op_fail(op, SESAME_PROVIDER_USERINFO_INVALID,
                           "provider %s: userinfo is not a JSON object", s->name);
        }
    } else {
        if (op->ui_plain == NULL) {
            const char *b = op->ui_body;
            size_t n = op->ui_len;
            while (n > 0 && isspace((unsigned char)*b))
                b++, n--;
            while (n > 0 && isspace((unsigned char)b[n - 1]))
                n--;
            op->ui_plain = unwrap_token(s, "userinfo", b, n, buf, sizeof(buf), &why);
            if (op->ui_plain == NULL)
                return op_fail(op, SESAME_PROVIDER_USERINFO_INVALID, "provider %s: %s", s->name,
                               why);
        }
        int rc = verify_jws(op, op->ui_plain, &uc, &err);
        if (rc == SESAME_JOSE_UNKNOWN_KID) {
            free(err);
            switch (kid_refetch(op, &why)) {
            case KID_RETRY: return STEP_NEXT;
            case KID_WAIT: return STEP_WAIT;
            case KID_FAIL:
                return op_fail(op, SESAME_PROVIDER_USERINFO_INVALID,
                               "provider %s: userinfo refused: %s", s->name, why);
            }
        }
        if (rc != SESAME_OK) {
            snprintf(buf, sizeof(buf), "%s", err ? err : "verification failed");
            free(err);
            return op_fail(op, SESAME_PROVIDER_USERINFO_INVALID,
                           "provider %s: userinfo refused: %s", s->name, buf);
        }
    }
    const char *usub = json_string_value(json_object_get(uc, "sub"));
    const char *isub = json_string_value(json_object_get(op->id_claims, "sub"));
    if (usub == NULL) {
        json_decref(uc);
        return op_fail(op, SESAME_PROVIDER_USERINFO_INVALID, "provider %s: userinfo has no sub",
                       s->name);
    }
    if (!sesame_util_ct_streq(usub, isub)) {
        json_decref(uc);
        return op_fail(op, SESAME_PROVIDER_USERINFO_MISMATCH,
                       "provider %s: userinfo sub differs from the ID token's", s->name);
    }
    struct sesame_jose_expect e;
    fill_expect(op, &e);
    if (sesame_jose_check_userinfo(uc, op->id_claims, &e, &err) != SESAME_OK) {
        snprintf(buf, sizeof(buf), "%s", err ? err : "claims refused");
        free(err);
        json_decref(uc);
        return op_fail(op, SESAME_PROVIDER_USERINFO_INVALID, "provider %s: userinfo refused: %s",
                       s->name, buf);
    }
    return op_succeed_validate(op, uc);
}

static void
token_done(void *arg, const struct sesame_httpc_response *r)
{
    struct sesame_provider_op *op = arg;
    const char *name = op->rt->s.name;
    op->call = NULL;
    if (r->error != NULL) {
        if (!client_closed(r))
            health_call(op->rt, false, "token endpoint unreachable");
        op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: token endpoint unreachable: %s",
                name, r->error);
        return;
    }
    if (r->status >= 500) {
        health_call(op->rt, false, "token endpoint answered HTTP 5xx");
        op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: token endpoint answered HTTP %ld",
                name, r->status);
        return;
    }
    health_call(op->rt, true, NULL);
    json_t *doc = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (r->status != 200) {
        const char *code = json_string_value(json_object_get(doc, "error"));
        bool show = code != NULL && error_code_ok(code);
        op_fail(op, SESAME_PROVIDER_REJECTED,
                "provider %s: token endpoint refused the request (HTTP %ld%s%s)", name,
                r->status, show ? ", error " : "", show ? code : "");
        json_decref(doc);
        return;
    }
    const char *problem = NULL;
    const char *type = json_string_value(json_object_get(doc, "token_type"));
    json_t *idt = json_object_get(doc, "id_token");
    json_t *at = json_object_get(doc, "access_token");
    if (!media_type_is(r->content_type, "application/json"))
        problem = "Content-Type is not application/json";
    else if (!json_is_object(doc))
        problem = "not a JSON object";
    else if (type == NULL || strcasecmp(type, "Bearer") != 0)
        problem = "token_type is not Bearer";
    else if (!json_is_string(idt) || json_string_length(idt) == 0 ||
             json_string_length(idt) > SESAME_JOSE_MAX_TOKEN ||
             strlen(json_string_value(idt)) != json_string_length(idt))
        problem = "id_token missing or malformed";
    else if (!json_is_string(at) || json_string_length(at) == 0 ||
             json_string_length(at) > SESAME_JOSE_MAX_TOKEN ||
             !printable_token(json_string_value(at), json_string_length(at)) ||
             strlen(json_string_value(at)) != json_string_length(at))
        problem = "access_token missing or malformed";
    if (problem != NULL) {
        json_decref(doc);
        op_fail(op, SESAME_PROVIDER_BAD_RESPONSE, "provider %s: token endpoint answer: %s", name,
                problem);
        return;
    }
    json_t *exp = json_object_get(doc, "expires_in");
    struct sesame_provider_tokens t = {
        .id_token = json_string_value(idt),
        .access_token = json_string_value(at),
        .token_type = type,
        .expires_in = json_is_integer(exp) ? (int64_t)json_integer_value(exp) : -1,
    };
    op->exchange_cb(op->arg, &t, SESAME_PROVIDER_OK, NULL);
    json_decref(doc);
    op_free(op);
}

static enum step
step_token(struct sesame_provider_op *op)
{
    const struct settings *s = &op->rt->s;
    struct sesame_provider_token_request tr;
    char *err = NULL;
    if (sesame_provider_token_request(op->rt, op->code, op->redirect_uri, op->verifier, &tr,
                                      &err) != SESAME_OK) {
        char buf[600];
        snprintf(buf, sizeof(buf), "%s", err ? err : "?");
        free(err);
        return op_fail(op, SESAME_PROVIDER_MISCONFIGURED, "provider %s: %s", s->name, buf);
    }
    struct meta *m = current_meta(op->rt);
    const char *hdrs[2] = {"Accept: application/json", tr.authorization};
    struct sesame_httpc_request rq = {
        .method = SESAME_HTTPC_POST,
        .url = endpoint(op->rt, m, EP_TOKEN),
        .headers = hdrs,
        .nheaders = tr.authorization ? 2 : 1,
        .body = tr.body,
        .body_len = strlen(tr.body),
        .timeout_ms = s->timeout_ms,
        .ca_file = s->ca_file,
        .max_response = 4 * SESAME_JOSE_MAX_TOKEN,
    };
    op->call = sesame_httpc_fetch(op->httpc, &rq, token_done, op);
    meta_unref(m);
    sesame_provider_token_request_clear(&tr);
    if (op->call == NULL)
        return op_fail(op, SESAME_PROVIDER_UNAVAILABLE, "provider %s: HTTP client shut down",
                       s->name);
    return STEP_WAIT;
}

static void
op_run(struct sesame_provider_op *op)
{
    if (op->early_err != NULL) {
        char buf[600];
        snprintf(buf, sizeof(buf), "%s", op->early_err);
        op_fail(op, op->early_st, "provider %s: %s", op->rt->s.name, buf);
        return;
    }
    for (;;) {
        enum step r = STEP_DONE;
        switch (op->stage) {
        case ST_ENSURE: r = step_ensure(op); break;
        case ST_TOKEN: r = step_token(op); break;
        case ST_IDTOKEN: r = step_idtoken(op); break;
        case ST_USERINFO: r = step_userinfo(op); break;
        case ST_USERINFO_CHECK: r = step_userinfo_check(op); break;
        }
        if (r != STEP_NEXT)
            return;
    }
}

struct sesame_provider_op *
sesame_provider_ensure(struct sesame_provider *rt, struct sesame_httpc *httpc,
                       sesame_provider_ensure_cb cb, void *arg)
{
    if (rt == NULL || httpc == NULL || cb == NULL)
        return NULL;
    struct sesame_provider_op *op = op_new(rt, httpc, OP_ENSURE, arg);
    op->ensure_cb = cb;
    return op;
}

struct sesame_provider_op *
sesame_provider_ensure_available(struct sesame_provider *rt, struct sesame_httpc *httpc,
                                 sesame_provider_ensure_cb cb, void *arg)
{
    struct sesame_provider_op *op = sesame_provider_ensure(rt, httpc, cb, arg);
    if (op != NULL)
        op->recheck = true;
    return op;
}

struct sesame_provider_op *
sesame_provider_exchange(struct sesame_provider *rt, struct sesame_httpc *httpc, const char *code,
                         const char *redirect_uri, const char *code_verifier,
                         sesame_provider_exchange_cb cb, void *arg)
{
    if (rt == NULL || httpc == NULL || cb == NULL)
        return NULL;
    struct sesame_provider_op *op = op_new(rt, httpc, OP_EXCHANGE, arg);
    op->exchange_cb = cb;
    if (!arg_ok(code) || !arg_ok(redirect_uri) ||
        (code_verifier != NULL && !arg_ok(code_verifier))) {
        op->early_st = SESAME_PROVIDER_MISCONFIGURED;
        op->early_err = sesame_strdup("exchange: code and redirect_uri are required");
        return op;
    }
    op->code = sesame_strdup(code);
    op->redirect_uri = sesame_strdup(redirect_uri);
    op->verifier = dup_or_null(code_verifier);
    return op;
}

struct sesame_provider_op *
sesame_provider_validate(struct sesame_provider *rt, struct sesame_httpc *httpc,
                         const struct sesame_provider_tokens *t,
                         const struct sesame_provider_expect *e, sesame_provider_validate_cb cb,
                         void *arg)
{
    if (rt == NULL || httpc == NULL || cb == NULL)
        return NULL;
    struct sesame_provider_op *op = op_new(rt, httpc, OP_VALIDATE, arg);
    op->validate_cb = cb;
    if (t == NULL || e == NULL || t->id_token == NULL || t->access_token == NULL ||
        t->id_token[0] == '\0' || strnlen(t->id_token, SESAME_JOSE_MAX_TOKEN + 1) >
                                      SESAME_JOSE_MAX_TOKEN ||
        strnlen(t->access_token, SESAME_JOSE_MAX_TOKEN + 1) > SESAME_JOSE_MAX_TOKEN ||
        !printable_token(t->access_token, strlen(t->access_token)) || !arg_ok(e->nonce)) {
        op->early_st = SESAME_PROVIDER_INVALID_TOKEN;
        op->early_err = sesame_strdup("validate: id_token, access_token and nonce are required");
        return op;
    }
    op->id_token = sesame_strdup(t->id_token);
    op->access_token = sesame_strdup(t->access_token);
    op->nonce = sesame_strdup(e->nonce);
    op->min_acr = dup_or_null(e->min_acr);
    op->now = e->now ? e->now : sesame_util_now();
    return op;
}
