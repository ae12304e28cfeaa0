#include "config/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "audit/audit.h"
#include "core/util.h"
#include "http/parser.h"
#include "oidc/jose.h"

/* ------------------------------------------------------------------------
 * Loader state: errors accumulate; parsing goes on after an error so that
 * `sesame -t` reports every problem at once.
 */

#define MAX_LINE 4096
#define MAX_SECRET_FILE 4096

enum section_kind {
    SEC_SERVER, SEC_REDIS, SEC_SESSION, SEC_PROVIDER, SEC_TENANT, SEC_ROUTE, SEC_ACCOUNTS, SEC_TERRITORY
};

struct loader {
    const char *file;
    char *errors;
    size_t errors_len;
    int nerrors;
    int last_line;
    struct sesame_conf *conf;
    /* references resolved once every section is read */
    struct ref {
        char **name;              /* points into a struct: the name read */
        void **target;            /* where the resolved pointer goes */
        int kind;                 /* 'p' provider, 'a' accounts, 't' tenant, 'T' territory */
        int line;
        const char *key;
        bool required;
    } *refs;
    size_t nrefs;
    struct seen {                 /* where each section and each of its keys was written */
        const void *obj;
        enum section_kind kind;
        int line;                 /* the section header */
        int *key_lines;           /* per item, 0: default */
    } *seen;
    size_t nseen;
    struct plist {                /* a `providers` list, resolved once every section is read */
        void *obj;                /* the tenant or route */
        char **names;
        size_t n;
        int line;
    } *plists;
    size_t nplists;
};

/* What sesame_conf_key_line reads after load (conf->lines). */
struct conf_lines {
    struct seen *seen;
    size_t nseen;
};

static bool valid_section_name(const char *s);

static void SESAME_PRINTF(4, 5)
conf_error(struct loader *L, int line, const char *key, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *entry = sesame_asprintf("%s:%d: %s: %s\n", L->file, line, key, msg);
    size_t n = strlen(entry);
    L->errors = sesame_realloc(L->errors, L->errors_len + n + 1);
    memcpy(L->errors + L->errors_len, entry, n + 1);
    L->errors_len += n;
    L->nerrors++;
    free(entry);
}

/* ------------------------------------------------------------------------
 * Value parsers. Each setter takes the object, the value text and the line,
 * reports its own error (naming the key) and returns SESAME_OK/SESAME_ERROR.
 */

struct item;
typedef int (*setter_fn)(struct loader *L, void *obj, const struct item *it, const char *value,
                         int line);

struct item {
    const char *key;
    setter_fn set;
    size_t offset;
    const char *def;              /* default value text, NULL: none */
    long arg;                     /* setter-specific */
    const char *const *names;     /* set_enum: the accepted words, NULL-terminated */
};

#define FIELD(obj, it, type) ((type *)((char *)(obj) + (it)->offset))

static int
set_string(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char **f = FIELD(obj, it, char *);
    if (value[0] == '\0' && it->arg == 0) {
        conf_error(L, line, it->key, "a value is required");
        return SESAME_ERROR;
    }
    free(*f);
    *f = sesame_strdup(value);
    return SESAME_OK;
}

/* it->arg: 0 when 0 is a meaningful value of the key (off, no tolerance...),
 * DUR_NONZERO when 0 would mean "never" or "at once" and is refused. */
#define DUR_NONZERO 1

static int
set_duration(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    uint64_t ms;
    if (sesame_util_parse_duration(value, &ms) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s' is not a duration (examples: 500ms, 30s, 10m, 8h, 2d)",
                   value);
        return SESAME_ERROR;
    }
    if (ms == 0 && it->arg == DUR_NONZERO) {
        conf_error(L, line, it->key, "must be longer than 0 (examples: 500ms, 30s, 10m)");
        return SESAME_ERROR;
    }
    *FIELD(obj, it, uint64_t) = ms;
    return SESAME_OK;
}

static int
set_size(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    uint64_t v;
    if (sesame_util_parse_size(value, &v) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s' is not a size (examples: 512, 64k, 32m, 1g)", value);
        return SESAME_ERROR;
    }
    if (it->arg > 0 && v > (uint64_t)it->arg) {
        conf_error(L, line, it->key, "'%s' is too large (at most %ld)", value, it->arg);
        return SESAME_ERROR;
    }
    if (v == 0) {
        conf_error(L, line, it->key, "must be greater than zero");
        return SESAME_ERROR;
    }
    *FIELD(obj, it, uint64_t) = v;
    return SESAME_OK;
}

static int
set_bool(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (sesame_util_parse_bool(value, FIELD(obj, it, bool)) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s' is not on or off", value);
        return SESAME_ERROR;
    }
    return SESAME_OK;
}

static int
parse_int(const char *value, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < lo || v > hi || !isdigit((unsigned char)value[0]))
        return SESAME_ERROR;
    *out = v;
    return SESAME_OK;
}

static int
set_int(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    long v;
    if (parse_int(value, 0, it->arg, &v) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s' is not a whole number between 0 and %ld", value, it->arg);
        return SESAME_ERROR;
    }
    *FIELD(obj, it, int) = (int)v;
    return SESAME_OK;
}

static int
set_workers(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (strcmp(value, "auto") == 0) {
        *FIELD(obj, it, int) = 0;
        return SESAME_OK;
    }
    long v;
    if (parse_int(value, 1, 256, &v) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s' must be auto or a number from 1 to 256", value);
        return SESAME_ERROR;
    }
    *FIELD(obj, it, int) = (int)v;
    return SESAME_OK;
}

static int
set_log_level(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (sesame_log_parse_level(value, FIELD(obj, it, enum sesame_log_level)) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s' must be error, warn, info or debug", value);
        return SESAME_ERROR;
    }
    return SESAME_OK;
}

/* An enum field (stored as int-sized enum) chosen among it->names: the value
 * is the word's index. */
static int
set_enum(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char list[256] = "";
    for (size_t i = 0; it->names[i]; i++) {
        if (strcmp(value, it->names[i]) == 0) {
            *FIELD(obj, it, int) = (int)i;
            return SESAME_OK;
        }
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                 i == 0 ? "" : it->names[i + 1] ? ", " : " or ", it->names[i]);
    }
    conf_error(L, line, it->key, "'%s' must be %s", value, list);
    return SESAME_ERROR;
}

static const char *const token_auth_names[] = {"client_secret_post", "client_secret_basic",
                                               "private_key_jwt", NULL};
static const char *const userinfo_names[] = {"jwt", "json", "off", NULL};
static const char *const access_names[] = {"public", "optional", "required", NULL};
static const char *const encoding_names[] = {"percent", "raw", "base64url", NULL};
static const char *const session_cookie_names[] = {"persistent", "browser", NULL};

/* Splits a space-separated list into a malloc'd vector. */
static char **
split_words(const char *value, size_t *n)
{
    char **v = NULL;
    size_t count = 0;
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        v = sesame_realloc(v, (count + 1) * sizeof(*v));
        v[count++] = sesame_strndup(s, (size_t)(p - s));
    }
    *n = count;
    return v;
}

static void
free_words(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Appends the words of value to a (char **, size_t) pair at it->offset. */
static int
set_words(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char ***vec = FIELD(obj, it, char **);
    size_t *n = (size_t *)((char *)vec + sizeof(char **));
    size_t add;
    char **w = split_words(value, &add);
    if (add == 0 && it->arg == 0) {
        conf_error(L, line, it->key, "a value is required");
        return SESAME_ERROR;
    }
    *vec = sesame_realloc(*vec, (*n + add) * sizeof(char *));
    for (size_t i = 0; i < add; i++)
        (*vec)[(*n)++] = w[i];
    free(w);
    return SESAME_OK;
}

/* Replaces the list instead of appending (keys that are not repeatable). */
static int
set_words_once(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char ***vec = FIELD(obj, it, char **);
    size_t *n = (size_t *)((char *)vec + sizeof(char **));
    free_words(*vec, *n);
    *vec = NULL;
    *n = 0;
    return set_words(L, obj, it, value, line);
}

static int
parse_hostport(const char *text, const char *default_port, struct sockaddr_storage *ss,
               socklen_t *len, char **errmsg)
{
    char host[256], port[16];
    const char *colon;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL || (size_t)(end - text - 1) >= sizeof(host)) {
            *errmsg = sesame_strdup("bad IPv6 address");
            return SESAME_ERROR;
        }
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] != '\0' && end[1] != ':') {
            *errmsg = sesame_strdup("unexpected text after the IPv6 address");
            return SESAME_ERROR;
        }
    } else {
        colon = strrchr(text, ':');
        size_t hl = colon ? (size_t)(colon - text) : strlen(text);
        if (hl >= sizeof(host) || hl == 0) {
            *errmsg = sesame_strdup("missing or too long host");
            return SESAME_ERROR;
        }
        memcpy(host, text, hl);
        host[hl] = '\0';
    }
    const char *ps = colon ? colon + 1 : default_port;
    long pv;
    if (ps == NULL || parse_int(ps, 1, 65535, &pv) != SESAME_OK) {
        *errmsg = sesame_strdup("missing or invalid port (1-65535)");
        return SESAME_ERROR;
    }
    snprintf(port, sizeof(port), "%ld", pv);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        *errmsg = sesame_asprintf("cannot resolve '%s': %s", host, gai_strerror(rc));
        return SESAME_ERROR;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return SESAME_OK;
}

static int
set_listen(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_server *s = obj;
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_ERROR;
    struct sesame_listen l = {0};
    char *msg = NULL;
    if (nw < 1 || nw > 2 || (nw == 2 && strcmp(w[1], "tls") != 0 && strcmp(w[1], "redirect") != 0)) {
        conf_error(L, line, it->key,
                   "expected ADDRESS:PORT optionally followed by tls or redirect, got '%s'", value);
        goto out;
    }
    if (parse_hostport(w[0], NULL, &l.addr, &l.addrlen, &msg) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s': %s", w[0], msg);
        goto out;
    }
    l.tls = nw == 2 && strcmp(w[1], "tls") == 0;
    l.redirect = nw == 2 && strcmp(w[1], "redirect") == 0;
    l.text = sesame_strdup(w[0]);
    s->listen = sesame_realloc(s->listen, (s->nlisten + 1) * sizeof(*s->listen));
    s->listen[s->nlisten++] = l;
    rc = SESAME_OK;
out:
    free(msg);
    free_words(w, nw);
    return rc;
}

/* metrics_listen = ADDRESS:PORT (plain HTTP, for the supervision only). */
static int
set_metrics_listen(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_server *s = obj;
    struct sesame_listen l = {0};
    char *msg = NULL;
    if (strchr(value, ' ') != NULL || parse_hostport(value, NULL, &l.addr, &l.addrlen, &msg) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s': %s", value, msg ? msg : "expected ADDRESS:PORT (plain HTTP)");
        free(msg);
        return SESAME_ERROR;
    }
    l.text = sesame_strdup(value);
    if (s->metrics_listen) {
        free(s->metrics_listen->text);
        free(s->metrics_listen);
    }
    s->metrics_listen = sesame_malloc(sizeof(l));
    *s->metrics_listen = l;
    return SESAME_OK;
}

/* Whether two socket addresses would bind the same port on a common address
 * (equal, or a wildcard of the same family, or [::] on the same port). */
static bool
addresses_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    in_port_t pa = a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
                                           : ((const struct sockaddr_in6 *)a)->sin6_port;
    in_port_t pb = b->ss_family == AF_INET ? ((const struct sockaddr_in *)b)->sin_port
                                           : ((const struct sockaddr_in6 *)b)->sin6_port;
    if (pa != pb)
        return false;
    static const struct in6_addr any6 = IN6ADDR_ANY_INIT;
    if ((a->ss_family == AF_INET6 &&
         memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &any6, sizeof(any6)) == 0) ||
        (b->ss_family == AF_INET6 &&
         memcmp(&((const struct sockaddr_in6 *)b)->sin6_addr, &any6, sizeof(any6)) == 0))
        return true;
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        in_addr_t x = ((const struct sockaddr_in *)a)->sin_addr.s_addr;
        in_addr_t y = ((const struct sockaddr_in *)b)->sin_addr.s_addr;
        return x == y || x == htonl(INADDR_ANY) || y == htonl(INADDR_ANY);
    }
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

static int
parse_cidr(const char *text, struct sesame_cidr *c)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n >= sizeof(buf))
        return SESAME_ERROR;
    memcpy(buf, text, n);
    buf[n] = '\0';
    memset(c, 0, sizeof(*c));
    int max;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&c->net;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&c->net;
    if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        max = 128;
    } else {
        return SESAME_ERROR;
    }
    long p = max;
    if (slash && parse_int(slash + 1, 0, max, &p) != SESAME_OK)
        return SESAME_ERROR;
    c->prefix = (int)p;
    return SESAME_OK;
}

/* A rate (struct sesame_conf_rate): "off", or "N/PERIOD" with N from 1 to
 * 1000000 and PERIOD a unit (s, m, h, d: one of it) or a duration ("10m"),
 * from 1 s to 1 d. */
static int
set_rate(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_rate *r = FIELD(obj, it, struct sesame_conf_rate);
    if (strcmp(value, "off") == 0) {
        r->count = 0;
        r->period_ms = 0;
        return SESAME_OK;
    }
    const char *slash = strchr(value, '/');
    char num[16], period[32];
    long n = 0;
    uint64_t ms = 0;
    bool ok = slash != NULL && (size_t)(slash - value) < sizeof(num) &&
              strlen(slash + 1) + 2 < sizeof(period);
    if (ok) {
        memcpy(num, value, (size_t)(slash - value));
        num[slash - value] = '\0';
        /* a bare unit means one of it: "20/m" is 20 per minute */
        snprintf(period, sizeof(period), "%s%s", isdigit((unsigned char)slash[1]) ? "" : "1",
                 slash + 1);
        ok = parse_int(num, 1, 1000000, &n) == SESAME_OK &&
             sesame_util_parse_duration(period, &ms) == SESAME_OK && ms >= 1000 &&
             ms <= 86400000;
    }
    if (!ok) {
        conf_error(L, line, it->key,
                   "'%s' is not a rate: off, or COUNT/PERIOD with COUNT from 1 to 1000000 and "
                   "PERIOD from 1s to 1d (examples: 20/m, 600/10m, 5/s)", value);
        return SESAME_ERROR;
    }
    r->count = (uint64_t)n;
    r->period_ms = ms;
    return SESAME_OK;
}

static int
set_cidrs(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_server *s = obj;
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    for (size_t i = 0; i < nw; i++) {
        struct sesame_cidr c;
        if (parse_cidr(w[i], &c) != SESAME_OK) {
            conf_error(L, line, it->key, "'%s' is not an IP address or network (10.0.0.0/8, ::1)", w[i]);
            rc = SESAME_ERROR;
            continue;
        }
        s->trusted_proxies = sesame_realloc(s->trusted_proxies,
                                            (s->ntrusted_proxies + 1) * sizeof(c));
        s->trusted_proxies[s->ntrusted_proxies++] = c;
    }
    free_words(w, nw);
    return rc;
}

static int
read_small_file(const char *path, char **out, size_t *outlen, char **msg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *msg = sesame_asprintf("cannot read %s: %s", path, strerror(errno));
        return SESAME_ERROR;
    }
    char *buf = sesame_malloc(MAX_SECRET_FILE + 1);
    size_t n = fread(buf, 1, MAX_SECRET_FILE + 1, f);
    bool err = ferror(f);
    fclose(f);
    if (err || n > MAX_SECRET_FILE) {
        OPENSSL_cleanse(buf, MAX_SECRET_FILE + 1);
        free(buf);
        *msg = sesame_asprintf(err ? "cannot read %s" : "%s is larger than 4 KiB", path);
        return SESAME_ERROR;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return SESAME_OK;
}

/* A file holding a secret or a private key must not be readable or writable
 * by other users: the configuration is shared with many, the secrets only
 * with the sesame user (and a group of it, so group access is fine). */
static int
check_private_file(struct loader *L, int line, const char *key, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return SESAME_OK; /* unreadable: reported by the caller */
    if ((st.st_mode & 0006) == 0)
        return SESAME_OK;
    conf_error(L, line, key, "%s is %s by other users (chmod 600 it)", path,
               (st.st_mode & 0004) ? "readable" : "writable");
    return SESAME_ERROR;
}

/* A *_file key whose content is stored, not the path (it->arg: minimum length). */
static int
set_secret_file(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char **f = FIELD(obj, it, char *);
    char *content, *msg = NULL;
    size_t n;
    if (read_small_file(value, &content, &n, &msg) != SESAME_OK) {
        conf_error(L, line, it->key, "%s", msg);
        free(msg);
        return SESAME_ERROR;
    }
    if (n < (size_t)it->arg || n == 0) {
        conf_error(L, line, it->key, "the secret in %s is too short (at least %ld characters)", value,
                   it->arg > 0 ? it->arg : 1);
        OPENSSL_cleanse(content, n);
        free(content);
        return SESAME_ERROR;
    }
    if (check_private_file(L, line, it->key, value) != SESAME_OK) {
        OPENSSL_cleanse(content, n);
        free(content);
        return SESAME_ERROR;
    }
    if (*f) {
        OPENSSL_cleanse(*f, strlen(*f));
        free(*f);
    }
    *f = content;
    return SESAME_OK;
}

/* it->arg of set_readable_path(s): PATH_PRIVATE for a private key, which
 * other users must not read (check_private_file). */
#define PATH_PRIVATE 1

/* A path that must name a readable file now. */
static int
set_readable_path(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (access(value, R_OK) != 0) {
        conf_error(L, line, it->key, "cannot read %s: %s", value, strerror(errno));
        return SESAME_ERROR;
    }
    if (it->arg == PATH_PRIVATE && check_private_file(L, line, it->key, value) != SESAME_OK)
        return SESAME_ERROR;
    struct item required = *it;
    required.arg = 0;
    return set_string(L, obj, &required, value, line);
}

/* audit_log = FILE | off: a file (the journal needs one, never stderr). */
static int
set_audit_log(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char **f = FIELD(obj, it, char *);
    free(*f);
    *f = NULL;
    if (strcmp(value, "off") == 0)
        return SESAME_OK;
    if (value[0] == '\0' || strcmp(value, "stderr") == 0 || strcmp(value, "stdout") == 0) {
        conf_error(L, line, it->key, "a file path or off (the journal is a file)");
        return SESAME_ERROR;
    }
    *f = sesame_strdup(value);
    return SESAME_OK;
}

/* audit_key_file: a private key other users cannot read, EC P-256 or Ed25519. */
static int
set_audit_key(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (set_readable_path(L, obj, it, value, line) != SESAME_OK)
        return SESAME_ERROR;
    char *err = NULL;
    if (sesame_audit_key_check(value, &err) != SESAME_OK) {
        conf_error(L, line, it->key, "%s", err);
        free(err);
        return SESAME_ERROR;
    }
    return SESAME_OK;
}

/* audit_checkpoint = N (lines) | DURATION (5m): both forms. */
static int
set_audit_checkpoint(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_server *s = obj;
    uint64_t v = 0;
    if (value[0] != '\0' && strspn(value, "0123456789") == strlen(value)) {
        if (sesame_util_parse_size(value, &v) != SESAME_OK || v == 0 || v > 1000000) {
            conf_error(L, line, it->key, "'%s': a line count from 1 to 1000000, or a duration "
                       "(5m)", value);
            return SESAME_ERROR;
        }
        s->audit_checkpoint_lines = v;
        s->audit_checkpoint_ms = 0;
        return SESAME_OK;
    }
    if (sesame_util_parse_duration(value, &v) != SESAME_OK || v < 1000) {
        conf_error(L, line, it->key, "'%s': a line count (1000) or a duration of at least 1s "
                   "(30s, 5m, 1h)", value);
        return SESAME_ERROR;
    }
    s->audit_checkpoint_lines = 0;
    s->audit_checkpoint_ms = v;
    return SESAME_OK;
}

static int
set_readable_dir(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct stat st;
    if (stat(value, &st) != 0 || !S_ISDIR(st.st_mode)) {
        conf_error(L, line, it->key, "%s is not a readable directory", value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static int
set_readable_paths(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    for (size_t i = 0; i < nw; i++) {
        if (access(w[i], R_OK) != 0) {
            conf_error(L, line, it->key, "cannot read %s: %s", w[i], strerror(errno));
            rc = SESAME_ERROR;
        } else if (it->arg == PATH_PRIVATE &&
                   check_private_file(L, line, it->key, w[i]) != SESAME_OK) {
            rc = SESAME_ERROR;
        }
    }
    free_words(w, nw);
    struct item required = *it;
    required.arg = 0;
    return rc == SESAME_OK ? set_words(L, obj, &required, value, line) : rc;
}

/* Session keys: the file holds at least 32 characters of secret (for
 * instance `head -c 32 /dev/urandom | base64`); the AES key is SHA-256 of a
 * label and that content. */
static int
derive_session_key(const char *content, size_t n, unsigned char out[SESAME_SESSION_KEY_LEN])
{
    static const char label[] = "sesame session key v1";
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, label, sizeof(label)) && EVP_DigestUpdate(ctx, content, n) &&
             EVP_DigestFinal_ex(ctx, out, &len) && len == SESAME_SESSION_KEY_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? SESAME_OK : SESAME_ERROR;
}

static int
set_session_key(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_session *s = obj;
    char *content, *msg = NULL;
    size_t n;
    if (read_small_file(value, &content, &n, &msg) != SESAME_OK) {
        conf_error(L, line, it->key, "%s", msg);
        free(msg);
        return SESAME_ERROR;
    }
    int rc = SESAME_OK;
    if (n < 32) {
        conf_error(L, line, it->key,
                   "the key in %s is too short: it needs at least 32 characters "
                   "(create one with: head -c 32 /dev/urandom | base64 > %s)", value, value);
        rc = SESAME_ERROR;
    } else if (check_private_file(L, line, it->key, value) != SESAME_OK) {
        rc = SESAME_ERROR;
    } else {
        bool prev = it->arg != 0;
        rc = derive_session_key(content, n, prev ? s->previous_secret : s->secret);
        if (rc != SESAME_OK)
            conf_error(L, line, it->key, "cannot derive the session key");
        else if (prev)
            s->has_previous_secret = true;
    }
    OPENSSL_cleanse(content, n);
    free(content);
    return rc;
}

static int
set_redis_address(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_redis *r = obj;
    if (strncmp(value, "unix:", 5) == 0) {
        free(r->unix_socket);
        r->unix_socket = sesame_strdup(value + 5);
        return SESAME_OK;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    char *msg = NULL;
    if (parse_hostport(value, "6379", &ss, &len, &msg) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s': %s", value, msg);
        free(msg);
        return SESAME_ERROR;
    }
    const char *colon = value[0] == '[' ? strstr(value, "]:") : strrchr(value, ':');
    size_t hl = colon ? (size_t)(colon - value) + (value[0] == '[' ? 1 : 0) : strlen(value);
    free(r->host);
    if (value[0] == '[')
        r->host = sesame_strndup(value + 1, hl - 2);
    else
        r->host = sesame_strndup(value, hl);
    /* the port was checked by parse_hostport: 1 to 65535 */
    r->port = colon ? (int)strtol(colon + (value[0] == '[' ? 2 : 1), NULL, 10) : 6379;
    return SESAME_OK;
}

static int
set_sentinels(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    for (size_t i = 0; i < nw; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        char *msg = NULL;
        if (parse_hostport(w[i], NULL, &ss, &len, &msg) != SESAME_OK) {
            conf_error(L, line, it->key, "'%s': %s", w[i], msg);
            rc = SESAME_ERROR;
        }
        free(msg);
    }
    free_words(w, nw);
    return rc == SESAME_OK ? set_words(L, obj, it, value, line) : rc;
}

static const struct {
    const char *name;
    unsigned bit;
} alg_names[] = {
    {"ES256", SESAME_ALG_ES256}, {"ES384", SESAME_ALG_ES384}, {"ES512", SESAME_ALG_ES512},
    {"RS256", SESAME_ALG_RS256}, {"RS384", SESAME_ALG_RS384}, {"RS512", SESAME_ALG_RS512},
    {"PS256", SESAME_ALG_PS256}, {"PS384", SESAME_ALG_PS384}, {"PS512", SESAME_ALG_PS512},
    {"HS256", SESAME_ALG_HS256}, {"HS384", SESAME_ALG_HS384}, {"HS512", SESAME_ALG_HS512},
};

static int
set_algs(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t nw;
    char **w = split_words(value, &nw);
    unsigned bits = 0;
    int rc = SESAME_OK;
    for (size_t i = 0; i < nw; i++) {
        size_t j;
        if (strcasecmp(w[i], "none") == 0) {
            conf_error(L, line, it->key, "'none' is never accepted: unsigned tokens prove nothing");
            rc = SESAME_ERROR;
            continue;
        }
        for (j = 0; j < SESAME_ARRAY_LEN(alg_names); j++) {
            if (strcmp(w[i], alg_names[j].name) == 0) {
                bits |= alg_names[j].bit;
                break;
            }
        }
        if (j == SESAME_ARRAY_LEN(alg_names)) {
            conf_error(L, line, it->key, "unknown algorithm '%s'", w[i]);
            rc = SESAME_ERROR;
        } else if (sesame_jose_alg_from_name(w[i]) != alg_names[j].bit) {
            /* the verifier (oidc/jose.c) is the authority on what is checked */
            conf_error(L, line, it->key, "'%s' is not supported by the token verifier", w[i]);
            rc = SESAME_ERROR;
        }
    }
    free_words(w, nw);
    if (rc == SESAME_OK && bits == 0) {
        conf_error(L, line, it->key, "at least one algorithm is required");
        rc = SESAME_ERROR;
    }
    if (rc == SESAME_OK)
        *FIELD(obj, it, unsigned) = bits;
    return rc;
}

static int
set_https_url(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (strncmp(value, "https://", 8) != 0 || value[8] == '\0' || strchr(value, ' ')) {
        conf_error(L, line, it->key,
                   "'%s' must be an https:// URL (connections to providers are always TLS-verified)",
                   value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static bool
is_local_host(const char *h, size_t n)
{
    return (n == 9 && strncmp(h, "localhost", 9) == 0) || (n == 9 && strncmp(h, "127.0.0.1", 9) == 0) ||
           (n == 5 && strncmp(h, "[::1]", 5) == 0) ||
           (n > 10 && strncmp(h + n - 10, ".localhost", 10) == 0);
}

static int
set_public_url(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_tenant *t = obj;
    bool https = strncmp(value, "https://", 8) == 0;
    bool http = strncmp(value, "http://", 7) == 0;
    const char *h = value + (https ? 8 : 7);
    size_t hl = strcspn(h, ":/");
    if ((!https && !http) || hl == 0 || strpbrk(value, " \t\"'<>\\") != NULL ||
        (h[hl] == '/' && h[hl + 1] != '\0') || (h[hl] == ':' && strchr(h + hl, '/') != NULL)) {
        conf_error(L, line, it->key,
                   "'%s' must be scheme://host[:port] with no path (https://www.ville.fr)", value);
        return SESAME_ERROR;
    }
    if (http && !is_local_host(h, hl)) {
        conf_error(L, line, it->key,
                   "'%s' must use https: plain http is only for localhost tests", value);
        return SESAME_ERROR;
    }
    free(t->public_url);
    size_t n = strlen(value);
    if (value[n - 1] == '/')
        n--;
    t->public_url = sesame_strndup(value, n);
    t->cookie_secure = https;
    return SESAME_OK;
}

static bool
valid_hostname(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!(isalnum(c) || c == '-' || c == '.'))
            return false;
    }
    return h[0] != '.' && h[0] != '-';
}

static int
set_hosts(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    for (size_t i = 0; i < nw; i++) {
        for (char *p = w[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!valid_hostname(w[i])) {
            conf_error(L, line, it->key, "'%s' is not a host name (no port, no scheme)", w[i]);
            rc = SESAME_ERROR;
        }
    }
    free_words(w, nw);
    if (rc != SESAME_OK)
        return rc;
    rc = set_words(L, obj, it, value, line);
    char ***vec = FIELD(obj, it, char **);
    size_t *cnt = (size_t *)((char *)vec + sizeof(char **));
    for (size_t i = 0; i < *cnt; i++)
        for (char *p = (*vec)[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return rc;
}

static int
set_host(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    char *h = sesame_strdup(value);
    for (char *p = h; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    int rc = SESAME_OK;
    if (!valid_hostname(h)) {
        conf_error(L, line, it->key, "'%s' is not a host name (no port, no scheme)", value);
        rc = SESAME_ERROR;
    } else {
        rc = set_string(L, obj, it, h, line);
    }
    free(h);
    return rc;
}

static int
set_color(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    bool ok = strlen(value) == 7 && value[0] == '#';
    for (size_t i = 1; ok && i < 7; i++)
        ok = isxdigit((unsigned char)value[i]);
    if (!ok) {
        conf_error(L, line, it->key, "'%s' must be a colour written #RRGGBB", value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static int
set_url(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if ((strncmp(value, "https://", 8) != 0 && strncmp(value, "http://", 7) != 0 &&
         strncmp(value, "mailto:", 7) != 0 && value[0] != '/') ||
        strpbrk(value, " \t\"'<>\\") != NULL) {
        conf_error(L, line, it->key, "'%s' must be an https://, http://, mailto: URL or a path", value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static int
set_prefix(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t n = strlen(value);
    bool ok = n >= 3 && value[0] == '/' && value[n - 1] == '/' && n < 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)value[i]) || value[i] == '/' || value[i] == '-' ||
             value[i] == '_' || value[i] == '.';
    if (!ok) {
        conf_error(L, line, it->key, "'%s' must look like /sesame/ (letters, digits, - _ .)", value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static int
set_path(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_route *r = obj;
    bool ok = value[0] == '/' && strlen(value) < 1024;
    for (const char *p = value; ok && *p; p++)
        ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && *p != '?' && *p != '#';
    if (!ok) {
        conf_error(L, line, it->key, "'%s' must be a path starting with / (no query, no spaces)", value);
        return SESAME_ERROR;
    }
    int rc = set_string(L, obj, it, value, line);
    r->path_len = strlen(r->path);
    return rc;
}

static int
set_upstream(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_upstream_addr *u = FIELD(obj, it, struct sesame_upstream_addr);
    bool tls = strncmp(value, "https://", 8) == 0;
    if (!tls && strncmp(value, "http://", 7) != 0) {
        conf_error(L, line, it->key,
                   "'%s' must be an http:// or https:// URL (http://127.0.0.1:8081)", value);
        return SESAME_ERROR;
    }
    const char *hp = value + (tls ? 8 : 7);
    size_t n = strcspn(hp, "/");
    if (hp[n] == '/' && hp[n + 1] != '\0') {
        conf_error(L, line, it->key, "'%s': the upstream URL takes no path", value);
        return SESAME_ERROR;
    }
    char *auth = sesame_strndup(hp, n);
    char *msg = NULL;
    if (parse_hostport(auth, tls ? "443" : "80", &u->addr, &u->addrlen, &msg) != SESAME_OK) {
        conf_error(L, line, it->key, "'%s': %s", value, msg);
        free(msg);
        free(auth);
        return SESAME_ERROR;
    }
    free(u->text);
    free(u->host);
    free(u->tls_name);
    u->text = sesame_strdup(value);
    u->host = auth;
    u->tls = tls;
    /* the name in the certificate: the host without port or brackets */
    const char *h = auth[0] == '[' ? auth + 1 : auth;
    size_t hl = auth[0] == '[' ? strcspn(h, "]") : strcspn(h, ":");
    u->tls_name = sesame_strndup(h, hl);
    return SESAME_OK;
}

/* upstream_ca_file: stored in the route's upstream address. */
static int
set_upstream_ca(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_route *r = obj;
    if (access(value, R_OK) != 0) {
        conf_error(L, line, it->key, "cannot read %s: %s", value, strerror(errno));
        return SESAME_ERROR;
    }
    free(r->upstream.ca_file);
    r->upstream.ca_file = sesame_strdup(value);
    return SESAME_OK;
}

static int
set_acr(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    if (strcmp(value, "eidas1") != 0 && strcmp(value, "eidas2") != 0 && strcmp(value, "eidas3") != 0) {
        conf_error(L, line, it->key, "'%s' must be eidas1, eidas2 or eidas3", value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static int
set_header_prefix(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t n = strlen(value);
    bool ok = n >= 2 && n < 64 && value[n - 1] == '-';
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)value[i]) || value[i] == '-';
    if (!ok) {
        conf_error(L, line, it->key, "'%s' must be letters, digits and dashes ending with - (X-Sesame-)",
                   value);
        return SESAME_ERROR;
    }
    return set_string(L, obj, it, value, line);
}

static bool
valid_claim_name(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

static int
set_claims(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    for (size_t i = 0; i < nw; i++) {
        if (!valid_claim_name(w[i])) {
            conf_error(L, line, it->key, "'%s' is not a claim name", w[i]);
            rc = SESAME_ERROR;
        }
    }
    free_words(w, nw);
    return rc == SESAME_OK ? set_words_once(L, obj, it, value, line) : rc;
}

/* require = age >= 18 | attribute.NAME = VALUE | claim.NAME = VALUE */
static int
set_require(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_route *r = obj;
    struct sesame_cond c = {0};
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_ERROR;
    long num;
    if (nw == 3 && strcmp(w[0], "age") == 0 && strcmp(w[1], ">=") == 0 &&
        parse_int(w[2], 0, 150, &num) == SESAME_OK) {
        c.op = SESAME_COND_AGE_GE;
        c.number = num;
        rc = SESAME_OK;
    } else if (nw == 3 && strcmp(w[1], "=") == 0 &&
               (strncmp(w[0], "attribute.", 10) == 0 || strncmp(w[0], "claim.", 6) == 0)) {
        bool attr = w[0][0] == 'a';
        const char *name = w[0] + (attr ? 10 : 6);
        if (valid_claim_name(name)) {
            c.op = attr ? SESAME_COND_ATTR_EQ : SESAME_COND_CLAIM_EQ;
            c.name = sesame_strdup(name);
            c.value = sesame_strdup(w[2]);
            rc = SESAME_OK;
        }
    }
    free_words(w, nw);
    if (rc != SESAME_OK) {
        conf_error(L, line, it->key,
                   "'%s' is not a condition (age >= 18, attribute.NAME = VALUE, claim.NAME = VALUE)",
                   value);
        return rc;
    }
    c.text = sesame_strdup(value);
    c.line = line;
    r->conds = sesame_realloc(r->conds, (r->nconds + 1) * sizeof(c));
    r->conds[r->nconds++] = c;
    return SESAME_OK;
}

bool
sesame_conf_reserved_authorize_param(const char *name, size_t len)
{
    static const char *const reserved[] = {
        "response_type", "client_id",      "redirect_uri",          "scope",
        "state",         "nonce",          "acr_values",            "code_challenge",
        "code_challenge_method", "response_mode", "request",        "request_uri",
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(reserved); i++)
        if (strlen(reserved[i]) == len && memcmp(reserved[i], name, len) == 0)
            return true;
    return false;
}

static bool
is_param_name_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '.' || c == '-';
}

/* authorize_params = name=value ...: what the provider runtime would refuse
 * at the first sign-in (oidc/provider.c build_params), refused here. */
static int
set_authorize_params(struct loader *L, void *obj, const struct item *it, const char *value,
                     int line)
{
    struct sesame_conf_provider *p = obj;
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    if (nw == 0) {
        conf_error(L, line, it->key, "a value is required (name=value, e.g. prompt=login)");
        rc = SESAME_ERROR;
    }
    for (size_t i = 0; i < nw; i++) {
        const char *eq = strchr(w[i], '=');
        size_t nl = eq ? (size_t)(eq - w[i]) : 0;
        bool ok = eq != NULL && nl > 0 && nl <= 64;
        for (size_t j = 0; ok && j < nl; j++)
            ok = is_param_name_char((unsigned char)w[i][j]);
        if (!ok) {
            conf_error(L, line, it->key,
                       "'%s' is not name=value with a name of letters, digits, '_', '.' or '-' "
                       "(a space in a value is written %%20)", w[i]);
            rc = SESAME_ERROR;
            continue;
        }
        if (sesame_conf_reserved_authorize_param(w[i], nl)) {
            conf_error(L, line, it->key,
                       "%.*s is a parameter Sésame sets itself: it cannot be given here", (int)nl,
                       w[i]);
            rc = SESAME_ERROR;
            continue;
        }
        bool twice = false;
        for (size_t j = 0; j < p->nauthorize_params && !twice; j++)
            twice = strncmp(p->authorize_params[j], w[i], nl) == 0 &&
                    p->authorize_params[j][nl] == '=';
        for (size_t j = 0; j < i && !twice; j++)
            twice = strncmp(w[j], w[i], nl) == 0 && w[j][nl] == '=';
        if (twice) {
            conf_error(L, line, it->key, "%.*s is given twice", (int)nl, w[i]);
            rc = SESAME_ERROR;
            continue;
        }
        for (const unsigned char *v = (const unsigned char *)eq + 1; *v; v++) {
            if (*v < 0x20 || *v == 0x7f) {
                conf_error(L, line, it->key, "the value of %.*s holds a control character",
                           (int)nl, w[i]);
                rc = SESAME_ERROR;
                break;
            }
            if (*v == '%' && (!isxdigit(v[1]) || !isxdigit(v[2]) || (v[1] == '0' && v[2] == '0'))) {
                conf_error(L, line, it->key,
                           "the value of %.*s has a bad %%XX escape (a %% is written %%25)",
                           (int)nl, w[i]);
                rc = SESAME_ERROR;
                break;
            }
        }
    }
    free_words(w, nw);
    if (rc != SESAME_OK)
        return rc;
    struct item required = *it;
    required.arg = 0;
    return set_words(L, obj, &required, value, line);
}

/* providers = a b c (tenants and routes): names checked now, resolved once
 * every section is read (resolve_providers). */
static int
set_providers(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    size_t nw;
    char **w = split_words(value, &nw);
    int rc = SESAME_OK;
    if (nw == 0) {
        conf_error(L, line, it->key, "a value is required: one or more [provider NAME] names");
        rc = SESAME_ERROR;
    }
    for (size_t i = 0; i < nw; i++) {
        if (!valid_section_name(w[i])) {
            conf_error(L, line, it->key, "'%s' is not a provider name", w[i]);
            rc = SESAME_ERROR;
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(w[i], w[j]) == 0) {
                conf_error(L, line, it->key, "provider '%s' is listed twice", w[i]);
                rc = SESAME_ERROR;
                break;
            }
        }
    }
    if (rc != SESAME_OK) {
        free_words(w, nw);
        return rc;
    }
    L->plists = sesame_realloc(L->plists, (L->nplists + 1) * sizeof(*L->plists));
    L->plists[L->nplists++] = (struct plist){obj, w, nw, line};
    return SESAME_OK;
}

static char *trim(char *s);

/* hsts = off | max-age=SECONDS[; includeSubDomains][; preload] (tenants):
 * the Strict-Transport-Security value, stored written the canonical way. */
static int
set_hsts(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    struct sesame_conf_tenant *t = obj;
    if (strcmp(value, "off") == 0) {
        free(t->hsts);
        t->hsts = NULL;
        t->hsts_off = true;
        return SESAME_OK;
    }
    long age = -1;
    bool sub = false, preload = false, ok = true;
    char *copy = sesame_strdup(value), *save = NULL;
    for (char *d = strtok_r(copy, ";", &save); d && ok; d = strtok_r(NULL, ";", &save)) {
        d = trim(d);
        if (strncasecmp(d, "max-age=", 8) == 0 && age < 0 && strlen(d + 8) <= 10)
            ok = parse_int(d + 8, 0, 0x7fffffffL, &age) == SESAME_OK;
        else if (strcasecmp(d, "includeSubDomains") == 0 && !sub)
            sub = true;
        else if (strcasecmp(d, "preload") == 0 && !preload)
            preload = true;
        else
            ok = false;
    }
    free(copy);
    if (!ok || age < 0) {
        conf_error(L, line, it->key,
                   "'%s' must be off or max-age=SECONDS, optionally followed by "
                   "; includeSubDomains and ; preload (max-age=31536000)", value);
        return SESAME_ERROR;
    }
    if (preload && (!sub || age < 31536000)) {
        conf_error(L, line, it->key,
                   "'%s': preload needs includeSubDomains and a max-age of at least 31536000 "
                   "(one year), as the browsers' preload lists do", value);
        return SESAME_ERROR;
    }
    free(t->hsts);
    t->hsts = sesame_asprintf("max-age=%ld%s%s", age, sub ? "; includeSubDomains" : "",
                              preload ? "; preload" : "");
    t->hsts_off = false;
    return SESAME_OK;
}

/* Keys that would hold a secret inline: refused with the reason. */
static int
refuse_inline_secret(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    conf_error(L, line, it->key,
               "secrets are never written in the configuration file (it is read by many and "
               "copied to backups): put the secret in a file readable only by sesame and use %s_file",
               it->key);
    return SESAME_ERROR;
}

#define OFF(type, field) offsetof(type, field)

/* Markers for keys handled specially (references resolved after parsing). */
static int
set_ref(struct loader *L, void *obj, const struct item *it, const char *value, int line)
{
    return set_string(L, obj, it, value, line);
}

/* ------------------------------------------------------------------------
 * Section tables. Every key lists its default; the example configuration
 * documents exactly these keys (tests/unit/config checks both ways).
 */

#define S struct sesame_conf_server
static const struct item server_items[] = {
    {"listen", set_listen, 0, NULL, 0, NULL},
    {"metrics_listen", set_metrics_listen, 0, NULL, 0, NULL},
    {"workers", set_workers, OFF(S, workers), "auto", 0, NULL},
    {"tls_certificate", set_readable_path, OFF(S, tls_certificate), NULL, 0, NULL},
    {"tls_certificate_key", set_readable_path, OFF(S, tls_certificate_key), NULL, PATH_PRIVATE, NULL},
    {"ocsp_stapling", set_bool, OFF(S, ocsp_stapling), "on", 0, NULL},
    {"header_timeout", set_duration, OFF(S, header_timeout_ms), "10s", DUR_NONZERO, NULL},
    {"body_timeout", set_duration, OFF(S, body_timeout_ms), "30s", DUR_NONZERO, NULL},
    {"idle_timeout", set_duration, OFF(S, idle_timeout_ms), "60s", DUR_NONZERO, NULL},
    {"websocket_idle_timeout", set_duration, OFF(S, websocket_idle_timeout_ms), "10m", DUR_NONZERO, NULL},
    {"websocket_recheck", set_duration, OFF(S, websocket_recheck_ms), "30s", DUR_NONZERO, NULL},
    {"upstream_connect_timeout", set_duration, OFF(S, upstream_connect_timeout_ms), "5s", DUR_NONZERO, NULL},
    {"upstream_read_timeout", set_duration, OFF(S, upstream_read_timeout_ms), "60s", DUR_NONZERO, NULL},
    {"upstream_idle_timeout", set_duration, OFF(S, upstream_idle_timeout_ms), "30s", DUR_NONZERO, NULL},
    {"shutdown_timeout", set_duration, OFF(S, shutdown_timeout_ms), "30s", 0, NULL},
    {"max_request_line", set_size, OFF(S, max_request_line), "8k", 1 << 20, NULL},
    {"max_header_size", set_size, OFF(S, max_header_size), "32k", 1 << 20, NULL},
    {"max_headers", set_size, OFF(S, max_headers), "100", SESAME_HTTP_MAX_HEADERS, NULL},
    {"max_body_size", set_size, OFF(S, max_body_size), "32m", 0, NULL},
    {"preserve_post_max", set_size, OFF(S, preserve_post_max), "1m", 0, NULL},
    {"preserve_post_ttl", set_duration, OFF(S, preserve_post_ttl_ms), "10m", 0, NULL},
    {"max_connections", set_size, OFF(S, max_connections), "10000", 1000000, NULL},
    {"upstream_pool_size", set_size, OFF(S, upstream_pool_size), "64", 100000, NULL},
    {"trusted_proxies", set_cidrs, 0, NULL, 0, NULL},
    {"via", set_bool, OFF(S, via), "off", 0, NULL},
    {"error_log", set_string, OFF(S, error_log), "stderr", 0, NULL},
    {"access_log", set_string, OFF(S, access_log), "stdout", 0, NULL},
    {"log_level", set_log_level, OFF(S, log_level), "info", 0, NULL},
    {"prefix", set_prefix, OFF(S, prefix), "/sesame/", 0, NULL},
    {"pid_file", set_string, OFF(S, pid_file), NULL, 0, NULL},
    {"templates_dir", set_readable_dir, OFF(S, templates_dir), NULL, 0, NULL},
    {"assertion_key_file", set_readable_path, OFF(S, assertion_key_file), NULL, PATH_PRIVATE, NULL},
    {"plugin_dir", set_string, OFF(S, plugin_dir), SESAME_PKGLIBDIR, 0, NULL},
    {"plugin_threads", set_int, OFF(S, plugin_threads), "4", 64, NULL},
    {"plugin_timeout", set_duration, OFF(S, plugin_timeout_ms), "5s", DUR_NONZERO, NULL},
    {"audit_log", set_audit_log, OFF(S, audit_log), NULL, 0, NULL},
    {"audit_key_file", set_audit_key, OFF(S, audit_key_file), NULL, PATH_PRIVATE, NULL},
    {"audit_checkpoint", set_audit_checkpoint, 0, "1000", 0, NULL},
    {"audit_syslog", set_bool, OFF(S, audit_syslog), "off", 0, NULL},
    {"client_signin_rate", set_rate, OFF(S, client_signin_rate), "60/m", 0, NULL},
    {"client_signin_table", set_size, OFF(S, client_signin_table), "16384", 1 << 24, NULL},
};
#undef S

#define R struct sesame_conf_redis
static const struct item redis_items[] = {
    {"address", set_redis_address, 0, "127.0.0.1:6379", 0, NULL},
    {"sentinels", set_sentinels, OFF(R, sentinels), NULL, 0, NULL},
    {"master_name", set_string, OFF(R, master_name), NULL, 0, NULL},
    {"password", refuse_inline_secret, 0, NULL, 0, NULL},
    {"password_file", set_secret_file, OFF(R, password), NULL, 0, NULL},
    {"database", set_int, OFF(R, database), "0", 255, NULL},
    {"connect_timeout", set_duration, OFF(R, connect_timeout_ms), "1s", DUR_NONZERO, NULL},
    {"command_timeout", set_duration, OFF(R, command_timeout_ms), "1s", DUR_NONZERO, NULL},
    {"prefix", set_string, OFF(R, prefix), "sesame:", 0, NULL},
};
#undef R

#define SS struct sesame_conf_session
static const struct item session_items[] = {
    {"cookie_name", set_string, OFF(SS, cookie_name), "sesame", 0, NULL},
    {"secret", refuse_inline_secret, 0, NULL, 0, NULL},
    {"secret_file", set_session_key, 0, NULL, 0, NULL},
    {"previous_secret_file", set_session_key, 0, NULL, 1, NULL},
    {"inactivity_timeout", set_duration, OFF(SS, inactivity_timeout_ms), "30m", DUR_NONZERO, NULL},
    {"max_lifetime", set_duration, OFF(SS, max_lifetime_ms), "12h", DUR_NONZERO, NULL},
    {"touch_interval", set_duration, OFF(SS, touch_interval_ms), "60s", 0, NULL},
    {"cache_ttl", set_duration, OFF(SS, cache_ttl_ms), "5s", 0, NULL},
    {"login_timeout", set_duration, OFF(SS, login_timeout_ms), "10m", DUR_NONZERO, NULL},
};
#undef SS

#define P struct sesame_conf_provider
static const struct item provider_items[] = {
    {"issuer", set_https_url, OFF(P, issuer), NULL, 0, NULL},
    {"discovery", set_bool, OFF(P, discovery), "on", 0, NULL},
    {"discovery_refresh", set_duration, OFF(P, discovery_refresh_ms), "1h", DUR_NONZERO, NULL},
    {"authorization_endpoint", set_https_url, OFF(P, authorization_endpoint), NULL, 0, NULL},
    {"token_endpoint", set_https_url, OFF(P, token_endpoint), NULL, 0, NULL},
    {"userinfo_endpoint", set_https_url, OFF(P, userinfo_endpoint), NULL, 0, NULL},
    {"jwks_uri", set_https_url, OFF(P, jwks_uri), NULL, 0, NULL},
    {"end_session_endpoint", set_https_url, OFF(P, end_session_endpoint), NULL, 0, NULL},
    {"client_id", set_string, OFF(P, client_id), NULL, 0, NULL},
    {"client_secret", refuse_inline_secret, 0, NULL, 0, NULL},
    {"client_secret_file", set_secret_file, OFF(P, client_secret), NULL, 0, NULL},
    {"token_auth", set_enum, OFF(P, token_auth), "client_secret_post", 0, token_auth_names},
    {"private_key_file", set_readable_path, OFF(P, private_key_file), NULL, PATH_PRIVATE, NULL},
    {"scopes", set_string, OFF(P, scopes), "openid given_name family_name birthdate", 0, NULL},
    {"acr_values", set_string, OFF(P, acr_values), "eidas1", 0, NULL},
    {"signing_algs", set_algs, OFF(P, signing_algs), "ES256 RS256", 0, NULL},
    {"userinfo", set_enum, OFF(P, userinfo), "jwt", 0, userinfo_names},
    {"pkce", set_bool, OFF(P, pkce), "off", 0, NULL},
    {"authorize_params", set_authorize_params, OFF(P, authorize_params), NULL, 0, NULL},
    {"ca_file", set_readable_path, OFF(P, ca_file), NULL, 0, NULL},
    {"decryption_key_files", set_readable_paths, OFF(P, decryption_key_files), NULL, PATH_PRIVATE, NULL},
    {"leeway", set_duration, OFF(P, leeway_ms), "60s", 0, NULL},
    {"http_timeout", set_duration, OFF(P, http_timeout_ms), "5s", DUR_NONZERO, NULL},
    {"jwks_refetch_interval", set_duration, OFF(P, jwks_refetch_interval_ms), "60s", 0, NULL},
    {"probe_interval", set_duration, OFF(P, probe_interval_ms), "10s", 0, NULL},
};
#undef P

#define T struct sesame_conf_tenant
static const struct item tenant_items[] = {
    {"display_name", set_string, OFF(T, display_name), NULL, 0, NULL},
    {"name_in_sentence", set_string, OFF(T, name_in_sentence), NULL, 0, NULL},
    {"hosts", set_hosts, OFF(T, hosts), NULL, 0, NULL},
    {"public_url", set_public_url, 0, NULL, 0, NULL},
    {"provider", set_ref, 0, NULL, 'p', NULL},
    {"providers", set_providers, 0, NULL, 0, NULL},
    {"accounts", set_ref, 0, NULL, 'a', NULL},
    {"cookie_domain", set_host, OFF(T, cookie_domain), NULL, 0, NULL},
    {"logo_file", set_readable_path, OFF(T, logo_file), NULL, 0, NULL},
    {"accent_color", set_color, OFF(T, accent_color), "#000091", 0, NULL},
    {"contact_url", set_url, OFF(T, contact_url), NULL, 0, NULL},
    {"legal_url", set_url, OFF(T, legal_url), NULL, 0, NULL},
    {"templates_dir", set_readable_dir, OFF(T, templates_dir), NULL, 0, NULL},
    {"sign_in_page", set_bool, OFF(T, sign_in_page), "on", 0, NULL},
    {"audit_client_address", set_bool, OFF(T, audit_client_address), "off", 0, NULL},
    {"session_cookie", set_enum, OFF(T, session_cookie), "persistent", 0, session_cookie_names},
    {"signin_rate", set_rate, OFF(T, signin_rate), "600/m", 0, NULL},
    {"tls_certificate", set_readable_path, OFF(T, tls_certificate), NULL, 0, NULL},
    {"tls_certificate_key", set_readable_path, OFF(T, tls_certificate_key), NULL, PATH_PRIVATE, NULL},
    {"hsts", set_hsts, 0, NULL, 0, NULL},
    {"territory", set_ref, 0, NULL, 'T', NULL},
};

/* [territory NAME]: a struct sesame_conf_tenant too (is_territory, named
 * "@NAME"), so that the sign-in flow runs unchanged at its host. */
static const struct item territory_items[] = {
    {"public_url", set_public_url, 0, NULL, 0, NULL},
    {"provider", set_ref, 0, NULL, 'p', NULL},
    {"providers", set_providers, 0, NULL, 0, NULL},
    {"display_name", set_string, OFF(T, display_name), NULL, 0, NULL},
    {"name_in_sentence", set_string, OFF(T, name_in_sentence), NULL, 0, NULL},
    {"accent_color", set_color, OFF(T, accent_color), "#000091", 0, NULL},
    {"contact_url", set_url, OFF(T, contact_url), NULL, 0, NULL},
    {"legal_url", set_url, OFF(T, legal_url), NULL, 0, NULL},
};
#undef T

#define RT struct sesame_conf_route
static const struct item route_items[] = {
    {"tenant", set_ref, 0, NULL, 't', NULL},
    {"host", set_host, OFF(RT, host), NULL, 0, NULL},
    {"path", set_path, OFF(RT, path), "/", 0, NULL},
    {"upstream", set_upstream, OFF(RT, upstream), NULL, 0, NULL},
    {"upstream_ca_file", set_upstream_ca, 0, NULL, 0, NULL},
    {"preserve_host", set_bool, OFF(RT, preserve_host), "on", 0, NULL},
    {"access", set_enum, OFF(RT, access), "required", 0, access_names},
    {"acr", set_acr, OFF(RT, acr), NULL, 0, NULL},
    {"provider", set_ref, 0, NULL, 'p', NULL},
    {"providers", set_providers, 0, NULL, 0, NULL},
    {"claims", set_claims, OFF(RT, claims), NULL, 0, NULL},
    {"header_prefix", set_header_prefix, OFF(RT, header_prefix), "X-Sesame-", 0, NULL},
    {"header_encoding", set_enum, OFF(RT, header_encoding), "percent", 0, encoding_names},
    {"assertion", set_bool, OFF(RT, assertion), "off", 0, NULL},
    {"keep_cookie", set_bool, OFF(RT, keep_cookie), "off", 0, NULL},
    {"require", set_require, 0, NULL, 0, NULL},
    {"deny_message", set_string, OFF(RT, deny_message), NULL, 0, NULL},
};
#undef RT

static const struct item accounts_items[] = {
    {"plugin", set_string, offsetof(struct sesame_conf_accounts, plugin), NULL, 0, NULL},
};

static const struct section_def {
    const char *name;
    bool named;
    const struct item *items;
    size_t nitems;
} sections[] = {
    [SEC_SERVER] = {"server", false, server_items, SESAME_ARRAY_LEN(server_items)},
    [SEC_REDIS] = {"redis", false, redis_items, SESAME_ARRAY_LEN(redis_items)},
    [SEC_SESSION] = {"session", false, session_items, SESAME_ARRAY_LEN(session_items)},
    [SEC_PROVIDER] = {"provider", true, provider_items, SESAME_ARRAY_LEN(provider_items)},
    [SEC_TENANT] = {"tenant", true, tenant_items, SESAME_ARRAY_LEN(tenant_items)},
    [SEC_ROUTE] = {"route", true, route_items, SESAME_ARRAY_LEN(route_items)},
    [SEC_ACCOUNTS] = {"accounts", true, accounts_items, SESAME_ARRAY_LEN(accounts_items)},
    [SEC_TERRITORY] = {"territory", true, territory_items, SESAME_ARRAY_LEN(territory_items)},
};


static char *known_keys;
static pthread_once_t known_keys_once = PTHREAD_ONCE_INIT;

static void
build_known_keys(void)
{
    size_t len = 0;
    for (size_t s = 0; s < SESAME_ARRAY_LEN(sections); s++)
        for (size_t i = 0; i < sections[s].nitems; i++)
            len += strlen(sections[s].name) + strlen(sections[s].items[i].key) + 2;
    known_keys = sesame_malloc(len + 1);
    size_t o = 0;
    for (size_t s = 0; s < SESAME_ARRAY_LEN(sections); s++)
        for (size_t i = 0; i < sections[s].nitems; i++)
            if (sections[s].items[i].set != refuse_inline_secret) /* refused, not settings */
                o += (size_t)snprintf(known_keys + o, len + 1 - o, "%s.%s\n", sections[s].name,
                                      sections[s].items[i].key);
    known_keys[o] = '\0';
}

const char *
sesame_conf_known_keys(void)
{
    pthread_once(&known_keys_once, build_known_keys);
    return known_keys;
}

/* ------------------------------------------------------------------------
 * Sections
 */

struct section {
    enum section_kind kind;
    void *obj;
    int line;
    int *key_lines;               /* line where each item was set, 0: default */
};

static void *
new_section_object(struct loader *L, enum section_kind kind, const char *name, int line)
{
    struct sesame_conf *c = L->conf;
    switch (kind) {
    case SEC_SERVER:
        return &c->server;
    case SEC_REDIS:
        c->has_redis = true;
        return &c->redis;
    case SEC_SESSION:
        return &c->session;
    case SEC_PROVIDER: {
        struct sesame_conf_provider *p = sesame_calloc(1, sizeof(*p));
        p->name = sesame_strdup(name);
        p->file = c->path;
        p->line = line;
        c->providers = sesame_realloc(c->providers, (c->nproviders + 1) * sizeof(p));
        c->providers[c->nproviders++] = p;
        return p;
    }
    case SEC_TENANT: {
        struct sesame_conf_tenant *t = sesame_calloc(1, sizeof(*t));
        t->name = sesame_strdup(name);
        c->tenants = sesame_realloc(c->tenants, (c->ntenants + 1) * sizeof(t));
        c->tenants[c->ntenants++] = t;
        return t;
    }
    case SEC_ROUTE: {
        struct sesame_conf_route *r = sesame_calloc(1, sizeof(*r));
        r->name = sesame_strdup(name);
        c->routes = sesame_realloc(c->routes, (c->nroutes + 1) * sizeof(r));
        c->routes[c->nroutes++] = r;
        return r;
    }
    case SEC_TERRITORY: {
        struct sesame_conf_tenant *t = sesame_calloc(1, sizeof(*t));
        t->name = sesame_asprintf("@%s", name);
        t->is_territory = true;
        t->sign_in_page = true;
        c->tenants = sesame_realloc(c->tenants, (c->ntenants + 1) * sizeof(t));
        c->tenants[c->ntenants++] = t;
        return t;
    }
    case SEC_ACCOUNTS: {
        struct sesame_conf_accounts *a = sesame_calloc(1, sizeof(*a));
        a->name = sesame_strdup(name);
        a->line = line;
        c->accounts = sesame_realloc(c->accounts, (c->naccounts + 1) * sizeof(a));
        c->accounts[c->naccounts++] = a;
        return a;
    }
    }
    return NULL;
}

static bool
repeatable(const struct item *it)
{
    return it->set == set_listen || it->set == set_cidrs || it->set == set_require ||
           it->set == set_sentinels || it->set == set_hosts || it->set == set_readable_paths ||
           it->set == set_words || it->set == set_authorize_params;
}

static void
add_ref(struct loader *L, void **target, int kind, const char *name, int line, const char *key)
{
    L->refs = sesame_realloc(L->refs, (L->nrefs + 1) * sizeof(*L->refs));
    struct ref *r = &L->refs[L->nrefs++];
    r->name = sesame_malloc(sizeof(char *));
    *r->name = sesame_strdup(name);
    r->target = target;
    r->kind = kind;
    r->line = line;
    r->key = key;
    r->required = true;
}

static void
apply_item(struct loader *L, struct section *sec, const struct item *it, const char *value, int line)
{
    if (it->set == set_ref) {
        void **target = NULL;
        if (sec->kind == SEC_TENANT || sec->kind == SEC_TERRITORY) {
            struct sesame_conf_tenant *t = sec->obj;
            target = it->arg == 'p'   ? (void **)&t->provider
                     : it->arg == 'T' ? (void **)&t->territory
                                      : (void **)&t->accounts;
        } else {
            struct sesame_conf_route *r = sec->obj;
            target = it->arg == 't' ? (void **)&r->tenant : (void **)&r->provider;
        }
        add_ref(L, target, (int)it->arg, value, line, it->key);
        return;
    }
    it->set(L, sec->obj, it, value, line);
}

static void
open_section(struct loader *L, struct section *sec, enum section_kind kind, const char *name, int line)
{
    sec->kind = kind;
    sec->line = line;
    sec->obj = new_section_object(L, kind, name, line);
    const struct section_def *d = &sections[kind];
    sec->key_lines = sesame_calloc(d->nitems, sizeof(int));
    L->seen = sesame_realloc(L->seen, (L->nseen + 1) * sizeof(*L->seen));
    L->seen[L->nseen].obj = sec->obj;
    L->seen[L->nseen].kind = kind;
    L->seen[L->nseen].line = line;
    L->seen[L->nseen].key_lines = sec->key_lines; /* owned by L->seen */
    L->nseen++;
    for (size_t i = 0; i < d->nitems; i++) {
        const struct item *it = &d->items[i];
        if (it->def != NULL)
            apply_item(L, sec, it, it->def, line);
    }
    /* a territory is a tenant with the defaults of every tenant key it does
     * not have (signin_rate, session_cookie...) */
    for (size_t i = 0; kind == SEC_TERRITORY && i < SESAME_ARRAY_LEN(tenant_items); i++) {
        const struct item *it = &tenant_items[i];
        bool own = false;
        for (size_t j = 0; j < d->nitems && !own; j++)
            own = strcmp(d->items[j].key, it->key) == 0;
        if (it->def != NULL && !own)
            it->set(L, sec->obj, it, it->def, line);
    }
}

/* Line of the section header of `obj`. */
static int
section_line(const struct loader *L, const void *obj)
{
    for (size_t i = 0; i < L->nseen; i++)
        if (L->seen[i].obj == obj)
            return L->seen[i].line;
    return 0;
}

/* Line where `key` was set in the section of `obj`, or `fallback`. */
static int
key_line(const struct loader *L, const void *obj, const char *key, int fallback)
{
    for (size_t i = 0; i < L->nseen; i++) {
        if (L->seen[i].obj != obj)
            continue;
        const struct section_def *d = &sections[L->seen[i].kind];
        for (size_t j = 0; j < d->nitems; j++)
            if (strcmp(d->items[j].key, key) == 0 && L->seen[i].key_lines[j] != 0)
                return L->seen[i].key_lines[j];
    }
    return fallback;
}

static bool
valid_section_name(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static bool
section_seen(struct loader *L, enum section_kind kind, const char *name)
{
    struct sesame_conf *c = L->conf;
    switch (kind) {
    case SEC_PROVIDER:
        for (size_t i = 0; i < c->nproviders; i++)
            if (strcmp(c->providers[i]->name, name) == 0)
                return true;
        return false;
    case SEC_TENANT:
        for (size_t i = 0; i < c->ntenants; i++)
            if (strcmp(c->tenants[i]->name, name) == 0)
                return true;
        return false;
    case SEC_ROUTE:
        for (size_t i = 0; i < c->nroutes; i++)
            if (strcmp(c->routes[i]->name, name) == 0)
                return true;
        return false;
    case SEC_ACCOUNTS:
        for (size_t i = 0; i < c->naccounts; i++)
            if (strcmp(c->accounts[i]->name, name) == 0)
                return true;
        return false;
    case SEC_TERRITORY:
        for (size_t i = 0; i < c->ntenants; i++)
            if (c->tenants[i]->is_territory && strcmp(c->tenants[i]->name + 1, name) == 0)
                return true;
        return false;
    default:
        return false;
    }
}

static void
parse_header(struct loader *L, struct section *sec, char *text, int line, bool seen_single[3])
{
    size_t n = strlen(text);
    if (n < 2 || text[n - 1] != ']') {
        conf_error(L, line, "section", "a section header is written [name] or [kind name]");
        sec->obj = NULL;
        return;
    }
    text[n - 1] = '\0';
    char *inner = trim(text + 1);
    char *sp = strpbrk(inner, " \t");
    char *name = NULL;
    if (sp) {
        *sp = '\0';
        name = trim(sp + 1);
    }
    for (size_t k = 0; k < SESAME_ARRAY_LEN(sections); k++) {
        if (strcmp(inner, sections[k].name) != 0)
            continue;
        if (sections[k].named) {
            if (name == NULL || !valid_section_name(name)) {
                conf_error(L, line, inner,
                           "this section needs a name of letters, digits, - _ . ([%s ville-a])", inner);
                sec->obj = NULL;
                return;
            }
            if (section_seen(L, (enum section_kind)k, name)) {
                conf_error(L, line, inner, "[%s %s] is defined twice", inner, name);
                sec->obj = NULL;
                return;
            }
        } else {
            if (name != NULL) {
                conf_error(L, line, inner, "[%s] takes no name", inner);
                sec->obj = NULL;
                return;
            }
            if (seen_single[k]) {
                conf_error(L, line, inner, "[%s] is defined twice", inner);
                sec->obj = NULL;
                return;
            }
            seen_single[k] = true;
        }
        open_section(L, sec, (enum section_kind)k, name, line);
        return;
    }
    conf_error(L, line, inner,
               "unknown section (known: server, redis, session, provider, tenant, route, accounts, "
               "territory)");
    sec->obj = NULL;
}

static void
parse_setting(struct loader *L, struct section *sec, char *text, int line)
{
    char *eq = strchr(text, '=');
    if (eq == NULL) {
        conf_error(L, line, trim(text), "expected key = value");
        return;
    }
    *eq = '\0';
    char *key = trim(text);
    char *value = trim(eq + 1);
    size_t vn = strlen(value);
    if (vn >= 2 && value[0] == '"' && value[vn - 1] == '"') {
        value[vn - 1] = '\0';
        value++;
    }
    for (char *p = key; *p; p++) {
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_')) {
            conf_error(L, line, key, "a key is written in lower case letters, digits and _");
            return;
        }
    }
    if (*key == '\0') {
        conf_error(L, line, "key", "missing key before =");
        return;
    }
    if (sec->obj == NULL) {
        if (sec->line == 0)
            conf_error(L, line, key, "setting outside any section (start with [server])");
        return; /* the broken header was already reported */
    }
    const struct section_def *d = &sections[sec->kind];
    for (size_t i = 0; i < d->nitems; i++) {
        const struct item *it = &d->items[i];
        if (strcmp(it->key, key) != 0)
            continue;
        if (sec->key_lines[i] != 0 && !repeatable(it)) {
            conf_error(L, line, key, "given twice in this section (first at line %d)", sec->key_lines[i]);
            return;
        }
        sec->key_lines[i] = line;
        apply_item(L, sec, it, value, line);
        return;
    }
    if (sec->kind == SEC_ACCOUNTS) {
        struct sesame_conf_accounts *a = sec->obj;
        for (size_t i = 0; i < a->noptions; i++) {
            if (strcmp(a->options[i].key, key) == 0) {
                conf_error(L, line, key, "given twice in this section (first at line %d)",
                           a->options[i].line);
                return;
            }
        }
        if (strcmp(key, "secret") == 0 || strcmp(key, "password") == 0) {
            struct item it = {key, NULL, 0, NULL, 0, NULL};
            refuse_inline_secret(L, NULL, &it, value, line);
            return;
        }
        size_t kl = strlen(key);
        static const char *const private_suffixes[] = {"secret_file", "password_file", "key_file"};
        for (size_t i = 0; i < SESAME_ARRAY_LEN(private_suffixes); i++) {
            size_t sl = strlen(private_suffixes[i]);
            if (kl >= sl && strcmp(key + kl - sl, private_suffixes[i]) == 0 &&
                check_private_file(L, line, key, value) != SESAME_OK)
                return;
        }
        a->options = sesame_realloc(a->options, (a->noptions + 1) * sizeof(*a->options));
        a->options[a->noptions].key = sesame_strdup(key);
        a->options[a->noptions].value = sesame_strdup(value);
        a->options[a->noptions].line = line;
        a->noptions++;
        return;
    }
    conf_error(L, line, key, "unknown key in [%s]", d->name);
}

/* ------------------------------------------------------------------------
 * Cross-section validation
 */

static void
resolve_refs(struct loader *L)
{
    struct sesame_conf *c = L->conf;
    for (size_t i = 0; i < L->nrefs; i++) {
        struct ref *r = &L->refs[i];
        const char *name = *r->name;
        void *found = NULL;
        const char *what = "";
        if (r->kind == 'p') {
            what = "provider";
            for (size_t j = 0; j < c->nproviders && !found; j++)
                if (strcmp(c->providers[j]->name, name) == 0)
                    found = c->providers[j];
        } else if (r->kind == 'a') {
            what = "accounts";
            for (size_t j = 0; j < c->naccounts && !found; j++)
                if (strcmp(c->accounts[j]->name, name) == 0)
                    found = c->accounts[j];
        } else if (r->kind == 'T') {
            what = "territory";
            for (size_t j = 0; j < c->ntenants && !found; j++)
                if (c->tenants[j]->is_territory && strcmp(c->tenants[j]->name + 1, name) == 0)
                    found = c->tenants[j];
        } else {
            what = "tenant";
            for (size_t j = 0; j < c->ntenants && !found; j++)
                if (!c->tenants[j]->is_territory && strcmp(c->tenants[j]->name, name) == 0)
                    found = c->tenants[j];
        }
        if (found == NULL)
            conf_error(L, r->line, r->key, "no [%s %s] section is defined", what, name);
        *r->target = found;
    }
}

static bool
has_plist(const struct loader *L, const void *obj)
{
    for (size_t i = 0; i < L->nplists; i++)
        if (L->plists[i].obj == obj)
            return true;
    return false;
}

static enum section_kind
seen_kind(const struct loader *L, const void *obj)
{
    for (size_t i = 0; i < L->nseen; i++)
        if (L->seen[i].obj == obj)
            return L->seen[i].kind;
    return SEC_SERVER;
}

/* `providers` lists: names to [provider NAME] sections. */
static void
resolve_providers(struct loader *L)
{
    struct sesame_conf *c = L->conf;
    for (size_t i = 0; i < L->nplists; i++) {
        struct plist *pl = &L->plists[i];
        struct sesame_conf_provider **v = sesame_calloc(pl->n ? pl->n : 1, sizeof(*v));
        size_t n = 0;
        for (size_t j = 0; j < pl->n; j++) {
            struct sesame_conf_provider *found = NULL;
            for (size_t k = 0; k < c->nproviders && !found; k++)
                if (strcmp(c->providers[k]->name, pl->names[j]) == 0)
                    found = c->providers[k];
            if (found == NULL)
                conf_error(L, pl->line, "providers", "unknown provider '%s'", pl->names[j]);
            else
                v[n++] = found;
        }
        if (seen_kind(L, pl->obj) == SEC_TENANT || seen_kind(L, pl->obj) == SEC_TERRITORY) {
            struct sesame_conf_tenant *t = pl->obj;
            t->providers = v;
            t->nproviders = n;
        } else {
            struct sesame_conf_route *r = pl->obj;
            r->providers = v;
            r->nproviders = n;
        }
    }
}

static bool
provider_in(struct sesame_conf_provider *const *v, size_t n, const struct sesame_conf_provider *p)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == p)
            return true;
    return false;
}

static struct sesame_conf_provider **
provider_list_copy(struct sesame_conf_provider *const *v, size_t n)
{
    struct sesame_conf_provider **out = sesame_calloc(n ? n : 1, sizeof(*out));
    if (n)
        memcpy(out, v, n * sizeof(*out));
    return out;
}

/* Writes the names of the n providers of v into buf: "a, b and c". */
static const char *
provider_names(char *buf, size_t size, struct sesame_conf_provider *const *v, size_t n)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t o = strlen(buf);
        snprintf(buf + o, size - o, "%s%s", i == 0 ? "" : i + 1 == n ? " and " : ", ", v[i]->name);
    }
    return buf;
}

/* ------------------------------------------------------------------------
 * Scopes and claims
 */

const char *
sesame_conf_scope_claims(const char *scope)
{
    static const struct {
        const char *scope, *claims;
    } aliases[] = {
        {"openid", "sub"},
        {"profile", "given_name family_name birthdate gender preferred_username"},
        {"birth", "birthplace birthcountry"},
        {"identite_pivot", "given_name family_name birthdate gender birthplace birthcountry"},
        /* FranceConnect's phone scope answers phone_number */
        {"phone", "phone phone_number"},
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(aliases); i++)
        if (strcmp(scope, aliases[i].scope) == 0)
            return aliases[i].claims;
    return NULL;
}

static bool
word_in(const char *words, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = words; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, " \t");
        if (len == n && memcmp(p, w, n) == 0)
            return true;
        p += len;
    }
    return false;
}

bool
sesame_conf_scopes_ask(const char *scopes, const char *claim)
{
    if (scopes == NULL || claim == NULL)
        return false;
    size_t nw;
    char **w = split_words(scopes, &nw);
    bool found = false;
    for (size_t i = 0; i < nw && !found; i++) {
        const char *alias = sesame_conf_scope_claims(w[i]);
        found = alias ? word_in(alias, claim) : strcmp(w[i], claim) == 0;
    }
    free_words(w, nw);
    return found;
}

/* Claims of the ID token itself, whatever the scopes. */
static bool
protocol_claim(const char *claim)
{
    static const char *const names[] = {
        "iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "acr", "amr", "auth_time", "azp",
        "at_hash", "c_hash", "sid", "jti",
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(names); i++)
        if (strcmp(names[i], claim) == 0)
            return true;
    return false;
}

bool
sesame_conf_protocol_claim(const char *claim)
{
    return claim != NULL && protocol_claim(claim);
}

bool
sesame_conf_identity_claim(const struct sesame_conf_provider *p, const char *claim)
{
    return p != NULL && claim != NULL && !protocol_claim(claim) &&
           sesame_conf_scopes_ask(p->scopes, claim);
}

/* True when at least one of the providers is asked for claim (and so a
 * citizen signed in with it may have it). */
static bool
some_provider_asks(struct sesame_conf_provider *const *v, size_t n, const char *claim)
{
    if (protocol_claim(claim))
        return true;
    for (size_t i = 0; i < n; i++)
        if (sesame_conf_scopes_ask(v[i]->scopes, claim))
            return true;
    return false;
}

static const char *
accounts_option(const struct sesame_conf_accounts *a, const char *key)
{
    for (size_t i = 0; i < a->noptions; i++)
        if (strcmp(a->options[i].key, key) == 0)
            return a->options[i].value;
    return NULL;
}

/* The redis plugin with match = pivot links pre-registered citizens by
 * their identité pivot (plugins/redis/store.c identity_hashes, gender left
 * out). */
static bool
accounts_match_pivot(const struct sesame_conf_accounts *a)
{
    if (a->plugin == NULL)
        return false;
    const char *base = strrchr(a->plugin, '/');
    base = base ? base + 1 : a->plugin;
    bool redis = strcmp(a->plugin, "redis") == 0 || strcmp(base, "sesame_redis.so") == 0;
    const char *match = accounts_option(a, "match");
    return redis && match != NULL && strcmp(match, "pivot") == 0;
}

static const char *const pivot_claims[] = {"given_name", "family_name", "birthdate", "birthplace",
                                           "birthcountry"};

/* Every provider a citizen of tenant t may sign in with must ask for the
 * claims of the identité pivot when t's accounts match by pivot: without
 * them nobody is ever linked to a pre-registered account. */
static void
check_pivot_scopes(struct loader *L, const struct sesame_conf_tenant *t)
{
    struct sesame_conf *c = L->conf;
    if (t->accounts == NULL || !accounts_match_pivot(t->accounts))
        return;
    /* the tenant's providers, then those of its routes that sign in */
    struct sesame_conf_provider **v = NULL;
    size_t n = 0;
    for (size_t pass = 0; pass <= c->nroutes; pass++) {
        struct sesame_conf_provider *const *list = t->providers;
        size_t len = t->nproviders;
        if (pass > 0) {
            const struct sesame_conf_route *r = c->routes[pass - 1];
            if (r->tenant != t || r->access == SESAME_ACCESS_PUBLIC)
                continue;
            list = r->providers;
            len = r->nproviders;
        }
        for (size_t i = 0; i < len; i++) {
            if (provider_in(v, n, list[i]))
                continue;
            v = sesame_realloc(v, (n + 1) * sizeof(*v));
            v[n++] = list[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct sesame_conf_provider *p = v[i];
        char missing[256] = "";
        for (size_t j = 0; j < SESAME_ARRAY_LEN(pivot_claims); j++)
            if (!sesame_conf_scopes_ask(p->scopes, pivot_claims[j]))
                snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                         missing[0] ? " " : "", pivot_claims[j]);
        if (missing[0] == '\0')
            continue;
        bool already = false; /* one message per provider and accounts section */
        for (size_t k = 0; k < c->ntenants && c->tenants[k] != t && !already; k++) {
            const struct sesame_conf_tenant *o = c->tenants[k];
            if (o->accounts != t->accounts)
                continue;
            already = provider_in(o->providers, o->nproviders, p);
            for (size_t m = 0; m < c->nroutes && !already; m++)
                already = c->routes[m]->tenant == o &&
                          c->routes[m]->access != SESAME_ACCESS_PUBLIC &&
                          provider_in(c->routes[m]->providers, c->routes[m]->nproviders, p);
        }
        if (already)
            continue;
        conf_error(L, key_line(L, p, "scopes", p->line), "scopes",
                   "[provider %s] does not ask for %s, which [accounts %s] (match = pivot) of "
                   "[tenant %s] needs to link citizens by identité pivot: add these scopes or "
                   "identite_pivot", p->name, missing, t->accounts->name, t->name);
    }
    free(v);
}

/* A claim released by a route, or tested by one of its conditions, must be
 * asked for by the scopes of one of the route's providers: otherwise the
 * header is never sent, the condition never holds. */
static void
check_route_claims(struct loader *L, const struct sesame_conf_route *r)
{
    if (r->nproviders == 0)
        return;
    char names[512];
    for (size_t i = 0; i < r->nclaims; i++) {
        if (some_provider_asks(r->providers, r->nproviders, r->claims[i]))
            continue;
        conf_error(L, key_line(L, r, "claims", section_line(L, r)), "claims",
                   "[route %s] releases the claim %s, which the scopes of %s never ask for",
                   r->name, r->claims[i], provider_names(names, sizeof(names), r->providers,
                                                         r->nproviders));
    }
    for (size_t i = 0; i < r->nconds; i++) {
        const struct sesame_cond *cd = &r->conds[i];
        const char *claim = cd->op == SESAME_COND_AGE_GE   ? "birthdate"
                            : cd->op == SESAME_COND_CLAIM_EQ ? cd->name
                                                             : NULL;
        if (claim == NULL || some_provider_asks(r->providers, r->nproviders, claim))
            continue;
        conf_error(L, cd->line ? cd->line : section_line(L, r), "require",
                   "[route %s]: '%s' needs the claim %s, which the scopes of %s never ask for",
                   r->name, cd->text, claim,
                   provider_names(names, sizeof(names), r->providers, r->nproviders));
    }
}

/* cookie_domain: the cookie must reach every host of the tenant, and a
 * top-level domain would hand it to every site under it. */
static void
check_cookie_domain(struct loader *L, const struct sesame_conf_tenant *t)
{
    const char *d = t->cookie_domain;
    if (d == NULL)
        return;
    int line = key_line(L, t, "cookie_domain", section_line(L, t));
    if (strchr(d, '.') == NULL || d[strlen(d) - 1] == '.') {
        conf_error(L, line, "cookie_domain",
                   "'%s' is a top-level domain: the session cookie would go to every site "
                   "under it (give the commune's domain, ville-arbre.fr)", d);
        return;
    }
    size_t dl = strlen(d);
    for (size_t i = 0; i < t->nhosts; i++) {
        const char *h = t->hosts[i];
        size_t hl = strlen(h);
        bool ok = strcmp(h, d) == 0 ||
                  (hl > dl + 1 && h[hl - dl - 1] == '.' && strcmp(h + hl - dl, d) == 0);
        if (!ok)
            conf_error(L, line, "cookie_domain", "'%s' is not a parent of host '%s'", d, h);
    }
}

/* "[tenant NAME]" or "[territory NAME]", for messages. */
static const char *
tenant_label(const struct sesame_conf_tenant *t, char *buf, size_t size)
{
    snprintf(buf, size, t->is_territory ? "[territory %s]" : "[tenant %s]",
             t->name + (t->is_territory ? 1 : 0));
    return buf;
}

/* Territories (gate/hop.h): each needs a provider; each member tenant gets
 * the territory's providers when it names none, and may accept only
 * providers the territory signs in with (a session of another could never
 * come from the territory). Fills territory->members. */
static void
check_territories(struct loader *L)
{
    struct sesame_conf *c = L->conf;
    char names[512];
    for (size_t i = 0; i < c->ntenants; i++) {
        const struct sesame_conf_tenant *t = c->tenants[i];
        if (t->is_territory && t->nproviders == 0 && !has_plist(L, t))
            conf_error(L, section_line(L, t), "provider",
                       "[territory %s] needs a provider (provider = NAME or providers = A B): the "
                       "one its citizens sign in with, registered with its public_url",
                       t->name + 1);
    }
    for (size_t i = 0; i < c->ntenants; i++) {
        struct sesame_conf_tenant *m = c->tenants[i];
        struct sesame_conf_tenant *t = m->territory;
        if (t == NULL)
            continue;
        t->members = sesame_realloc(t->members, (t->nmembers + 1) * sizeof(*t->members));
        t->members[t->nmembers++] = m;
        if (m->nproviders == 0 && m->provider == NULL && !has_plist(L, m)) {
            m->providers = provider_list_copy(t->providers, t->nproviders);
            m->nproviders = t->nproviders;
            m->provider = t->provider;
            continue;
        }
        const char *key = has_plist(L, m) ? "providers" : "provider";
        for (size_t j = 0; j < m->nproviders; j++)
            if (!provider_in(t->providers, t->nproviders, m->providers[j]))
                conf_error(L, key_line(L, m, key, section_line(L, m)), key,
                           "[tenant %s] joins [territory %s], which does not sign in with '%s' "
                           "(it signs in with %s)", m->name, t->name + 1, m->providers[j]->name,
                           provider_names(names, sizeof(names), t->providers, t->nproviders));
    }
}

/* A route of a member tenant accepts only sessions the territory can give. */
static void
check_route_territory(struct loader *L, const struct sesame_conf_route *r)
{
    const struct sesame_conf_tenant *t = r->tenant->territory;
    /* (a route naming none has its tenant's, checked with the tenant) */
    if (t == NULL || r->access == SESAME_ACCESS_PUBLIC || (!has_plist(L, r) && r->provider == NULL))
        return;
    char names[512];
    const char *key = has_plist(L, r) ? "providers" : "provider";
    for (size_t j = 0; j < r->nproviders; j++)
        if (!provider_in(t->providers, t->nproviders, r->providers[j]))
            conf_error(L, key_line(L, r, key, section_line(L, r)), key,
                       "[route %s] of [tenant %s] accepts '%s', but [territory %s] does not sign "
                       "in with it (it signs in with %s)", r->name, r->tenant->name,
                       r->providers[j]->name, t->name + 1,
                       provider_names(names, sizeof(names), t->providers, t->nproviders));
}

static bool
route_in_tenant_host(const struct sesame_conf_route *r)
{
    for (size_t i = 0; i < r->tenant->nhosts; i++)
        if (strcmp(r->tenant->hosts[i], r->host) == 0)
            return true;
    return false;
}

static void
validate(struct loader *L, int last_line)
{
    struct sesame_conf *c = L->conf;
    const char *f = L->file;
    (void)f;
    if (c->server.nlisten == 0)
        conf_error(L, last_line, "server",
                   "no listen address: add [server] with listen = ADDRESS:PORT");
    bool tls = false;
    for (size_t i = 0; i < c->server.nlisten; i++)
        tls |= c->server.listen[i].tls;
    if (tls && (c->server.tls_certificate == NULL || c->server.tls_certificate_key == NULL))
        conf_error(L, last_line, "tls_certificate",
                   "a tls listen address needs tls_certificate and tls_certificate_key in [server]");
    for (size_t i = 0; c->server.metrics_listen && i < c->server.nlisten; i++)
        if (addresses_overlap(&c->server.metrics_listen->addr, &c->server.listen[i].addr))
            conf_error(L, key_line(L, &c->server, "metrics_listen", last_line), "metrics_listen",
                       "%s is also listen = %s: the metrics are never served on the citizens' "
                       "listeners (choose another port, e.g. 127.0.0.1:9464)",
                       c->server.metrics_listen->text, c->server.listen[i].text);
    if (c->server.audit_log && c->server.audit_key_file == NULL)
        conf_error(L, key_line(L, &c->server, "audit_log", last_line), "audit_log",
                   "the journal needs audit_key_file (an EC P-256 or Ed25519 private key) to "
                   "sign its checkpoints");
    if (c->server.audit_syslog && c->server.audit_log == NULL)
        conf_error(L, key_line(L, &c->server, "audit_syslog", last_line), "audit_syslog",
                   "audit_syslog copies the journal: set audit_log too");
    if (c->server.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->server.workers = n > 0 ? (int)(n > 256 ? 256 : n) : 1;
    }

    for (size_t i = 0; i < c->nproviders; i++) {
        struct sesame_conf_provider *p = c->providers[i];
        if (p->issuer == NULL)
            conf_error(L, p->line, "issuer", "[provider %s] needs an issuer", p->name);
        if (p->client_id == NULL)
            conf_error(L, p->line, "client_id", "[provider %s] needs a client_id", p->name);
        /* the acr_values are the minimum level of every route that names none
         * (oidc/provider.c takes their lowest eIDAS level): with none known,
         * every sign-in would be refused */
        if (p->acr_values != NULL) {
            size_t na;
            char **a = split_words(p->acr_values, &na);
            bool known = false;
            for (size_t j = 0; j < na; j++)
                known |= sesame_jose_acr_rank(a[j]) > 0;
            free_words(a, na);
            if (!known)
                conf_error(L, key_line(L, p, "acr_values", p->line), "acr_values",
                           "[provider %s]: '%s' holds no eIDAS level (eidas1, eidas2, eidas3): "
                           "every sign-in would be refused", p->name, p->acr_values);
        }
        if (p->http_timeout_ms > 3600 * 1000)
            conf_error(L, key_line(L, p, "http_timeout", p->line), "http_timeout",
                       "[provider %s]: at most 1h", p->name);
        int auth_line = key_line(L, p, "token_auth", p->line);
        if (p->token_auth == SESAME_AUTH_PRIVATE_KEY_JWT) {
            /* that the key loads and signs is checked by gate/runtime.c */
            if (p->private_key_file == NULL)
                conf_error(L, auth_line, "private_key_file",
                           "[provider %s] uses private_key_jwt and needs private_key_file", p->name);
        } else if (p->client_secret == NULL) {
            conf_error(L, auth_line, "client_secret_file",
                       "[provider %s] needs client_secret_file (token_auth = %s)", p->name,
                       token_auth_names[p->token_auth]);
        }
        unsigned hs = SESAME_ALG_HS256 | SESAME_ALG_HS384 | SESAME_ALG_HS512;
        if ((p->signing_algs & hs) != 0 && p->client_secret == NULL) {
            char list[64] = "";
            for (size_t j = 0; j < SESAME_ARRAY_LEN(alg_names); j++)
                if ((alg_names[j].bit & hs & p->signing_algs) != 0)
                    snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                             list[0] ? " " : "", alg_names[j].name);
            conf_error(L, key_line(L, p, "signing_algs", p->line), "signing_algs",
                       "[provider %s]: %s tokens are verified with the client secret, and the "
                       "provider has no client_secret_file", p->name, list);
        }
        if (!p->discovery && (p->authorization_endpoint == NULL || p->token_endpoint == NULL ||
                              p->jwks_uri == NULL))
            conf_error(L, key_line(L, p, "discovery", p->line), "discovery",
                       "[provider %s] has discovery off: give authorization_endpoint, "
                       "token_endpoint and jwks_uri", p->name);
        else if (!p->discovery && p->userinfo != SESAME_USERINFO_OFF && p->userinfo_endpoint == NULL)
            conf_error(L, key_line(L, p, "discovery", p->line), "userinfo_endpoint",
                       "[provider %s] has discovery off: give userinfo_endpoint (or userinfo = off)",
                       p->name);
        size_t nw;
        char **w = split_words(p->scopes ? p->scopes : "", &nw);
        bool openid = false;
        for (size_t j = 0; j < nw; j++)
            openid |= strcmp(w[j], "openid") == 0;
        free_words(w, nw);
        if (!openid)
            conf_error(L, key_line(L, p, "scopes", p->line), "scopes", "[provider %s]: scopes must contain openid", p->name);
    }

    bool needs_session = false;
    for (size_t i = 0; i < c->ntenants; i++) {
        struct sesame_conf_tenant *t = c->tenants[i];
        int line = section_line(L, t);
        char label[160];
        tenant_label(t, label, sizeof(label));
        if (t->public_url == NULL)
            conf_error(L, line, "public_url", "%s needs public_url", label);
        if (t->display_name == NULL)
            t->display_name = sesame_strdup(t->name + (t->is_territory ? 1 : 0));
        if (t->nhosts == 0 && t->public_url != NULL) {
            const char *h = strstr(t->public_url, "://") + 3;
            size_t hl = strcspn(h, ":/");
            t->hosts = sesame_malloc(sizeof(char *));
            t->hosts[0] = sesame_strndup(h, hl);
            for (char *p = t->hosts[0]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            t->nhosts = 1;
        }
        for (size_t j = 0; j < t->nhosts; j++) {
            for (size_t k = 0; k < i; k++)
                for (size_t m = 0; m < c->tenants[k]->nhosts; m++)
                    if (strcmp(c->tenants[k]->hosts[m], t->hosts[j]) == 0) {
                        char other[160];
                        tenant_label(c->tenants[k], other, sizeof(other));
                        conf_error(L, key_line(L, t, "hosts", key_line(L, t, "public_url", line)), "hosts",
                                   t->is_territory || c->tenants[k]->is_territory
                                       ? "host %s is the sign-in host of a territory and cannot also be "
                                         "a host of a tenant: it already belongs to %s"
                                       : "host %s already belongs to %s",
                                   t->hosts[j], other);
                    }
            for (size_t k = 0; k < j; k++)
                if (strcmp(t->hosts[k], t->hosts[j]) == 0)
                    conf_error(L, line, "hosts", "host %s is listed twice", t->hosts[j]);
        }
        check_cookie_domain(L, t);
        if ((t->tls_certificate == NULL) != (t->tls_certificate_key == NULL))
            conf_error(L, key_line(L, t, t->tls_certificate ? "tls_certificate" : "tls_certificate_key",
                                   line),
                       t->tls_certificate ? "tls_certificate_key" : "tls_certificate",
                       "[tenant %s] gives one of tls_certificate and tls_certificate_key: both are "
                       "needed", t->name);
        /* the effective providers: `providers`, else `provider` */
        if (has_plist(L, t)) {
            if (t->provider != NULL && !provider_in(t->providers, t->nproviders, t->provider)) {
                char names[512];
                conf_error(L, key_line(L, t, "provider", line), "provider",
                           "'%s' is not one of the tenant's providers (%s)", t->provider->name,
                           provider_names(names, sizeof(names), t->providers, t->nproviders));
            } else if (t->provider == NULL && t->nproviders > 0) {
                t->provider = t->providers[0];
            }
        } else if (t->provider != NULL) {
            t->providers = provider_list_copy(&t->provider, 1);
            t->nproviders = 1;
        }
    }
    check_territories(L);
    size_t ncommunes = 0;
    for (size_t i = 0; i < c->ntenants; i++)
        ncommunes += c->tenants[i]->is_territory ? 0 : 1;
    if (ncommunes == 0)
        conf_error(L, last_line, "tenant", "no [tenant NAME] section: at least one commune is needed");
    if (c->nroutes == 0)
        conf_error(L, last_line, "route", "no [route NAME] section: nothing would be served");

    for (size_t i = 0; i < c->nroutes; i++) {
        struct sesame_conf_route *r = c->routes[i];
        int line = section_line(L, r);
        if (r->upstream.text == NULL)
            conf_error(L, line, "upstream", "[route %s] needs an upstream", r->name);
        if (r->tenant == NULL) {
            bool has_ref = false;
            for (size_t j = 0; j < L->nrefs; j++)
                has_ref |= L->refs[j].target == (void **)&r->tenant;
            if (!has_ref)
                conf_error(L, line, "tenant", "[route %s] needs a tenant", r->name);
            continue;
        }
        /* the effective providers: `providers`, else `provider`, else the tenant's */
        if (has_plist(L, r)) {
            if (r->provider != NULL && !provider_in(r->providers, r->nproviders, r->provider)) {
                char names[512];
                conf_error(L, key_line(L, r, "provider", line), "provider",
                           "'%s' is not one of the route's providers (%s)", r->provider->name,
                           provider_names(names, sizeof(names), r->providers, r->nproviders));
            }
        } else if (r->provider != NULL) {
            r->providers = provider_list_copy(&r->provider, 1);
            r->nproviders = 1;
        } else {
            r->providers = provider_list_copy(r->tenant->providers, r->tenant->nproviders);
            r->nproviders = r->tenant->nproviders;
        }
        check_route_territory(L, r);
        if (r->upstream.ca_file && !r->upstream.tls)
            conf_error(L, key_line(L, r, "upstream_ca_file", line), "upstream_ca_file",
                       "[route %s]: upstream_ca_file is for https:// upstreams only", r->name);
        if (r->host != NULL && !route_in_tenant_host(r))
            conf_error(L, key_line(L, r, "host", line), "host", "%s is not one of the hosts of [tenant %s]", r->host,
                       r->tenant->name);
        for (size_t j = 0; j < i; j++) {
            const struct sesame_conf_route *o = c->routes[j];
            bool same_host = (o->host == NULL && r->host == NULL) ||
                             (o->host && r->host && strcmp(o->host, r->host) == 0);
            if (o->tenant == r->tenant && same_host && o->path && r->path &&
                strcmp(o->path, r->path) == 0)
                conf_error(L, line, "path", "[route %s] duplicates [route %s] (same tenant, host and path)",
                           r->name, o->name);
        }
        if (r->access != SESAME_ACCESS_PUBLIC) {
            needs_session = true;
            if (r->nproviders == 0 && !has_plist(L, r))
                conf_error(L, line, "provider",
                           "[route %s] is not public but neither it nor [tenant %s] names a provider",
                           r->name, r->tenant->name);
        }
        check_route_claims(L, r);
        if (r->assertion && c->server.assertion_key_file == NULL)
            conf_error(L, key_line(L, r, "assertion", line), "assertion", "[route %s] asks for an assertion: set assertion_key_file in [server]",
                       r->name);
    }
    for (size_t i = 0; i < c->ntenants; i++)
        check_pivot_scopes(L, c->tenants[i]);
    for (size_t i = 0; i < c->naccounts; i++)
        if (c->accounts[i]->plugin == NULL)
            conf_error(L, c->accounts[i]->line, "plugin", "[accounts %s] needs a plugin (redis, http or a path)",
                       c->accounts[i]->name);
    if (needs_session) {
        if (!c->has_redis)
            conf_error(L, last_line, "redis", "routes require sign-in: a [redis] section is needed for sessions");
        bool key = false;
        for (size_t i = 0; i < SESAME_SESSION_KEY_LEN; i++)
            key |= c->session.secret[i] != 0;
        if (!key)
            conf_error(L, last_line, "secret_file", "routes require sign-in: [session] needs secret_file");
    }
    if (c->redis.nsentinels > 0 && c->redis.master_name == NULL)
        conf_error(L, last_line, "master_name", "[redis] lists sentinels: master_name is required");
    if (c->session.touch_interval_ms >= c->session.inactivity_timeout_ms)
        conf_error(L, last_line, "touch_interval", "must be shorter than inactivity_timeout");
}

/* ------------------------------------------------------------------------
 * Load / free
 */

static void
free_provider(struct sesame_conf_provider *p)
{
    free(p->name);
    free(p->issuer);
    free(p->authorization_endpoint);
    free(p->token_endpoint);
    free(p->userinfo_endpoint);
    free(p->jwks_uri);
    free(p->end_session_endpoint);
    free(p->client_id);
    if (p->client_secret) {
        OPENSSL_cleanse(p->client_secret, strlen(p->client_secret));
        free(p->client_secret);
    }
    free(p->private_key_file);
    free(p->scopes);
    free(p->acr_values);
    free_words(p->authorize_params, p->nauthorize_params);
    free(p->ca_file);
    free_words(p->decryption_key_files, p->ndecryption_key_files);
    free(p);
}

static void
free_tenant(struct sesame_conf_tenant *t)
{
    free(t->name);
    free(t->display_name);
    free(t->name_in_sentence);
    free_words(t->hosts, t->nhosts);
    free(t->public_url);
    free(t->providers);
    free(t->cookie_domain);
    free(t->logo_file);
    free(t->accent_color);
    free(t->contact_url);
    free(t->legal_url);
    free(t->templates_dir);
    free(t->members);
    free(t->tls_certificate);
    free(t->tls_certificate_key);
    free(t->hsts);
    free(t);
}

static void
free_route(struct sesame_conf_route *r)
{
    free(r->name);
    free(r->host);
    free(r->path);
    free(r->upstream.text);
    free(r->upstream.host);
    free(r->upstream.port_text);
    free(r->upstream.tls_name);
    free(r->upstream.ca_file);
    free(r->acr);
    free(r->providers);
    free_words(r->claims, r->nclaims);
    free(r->header_prefix);
    for (size_t i = 0; i < r->nconds; i++) {
        free(r->conds[i].name);
        free(r->conds[i].value);
        free(r->conds[i].text);
    }
    free(r->conds);
    free(r->deny_message);
    free(r);
}

static void
free_accounts(struct sesame_conf_accounts *a)
{
    free(a->name);
    free(a->plugin);
    for (size_t i = 0; i < a->noptions; i++) {
        free(a->options[i].key);
        free(a->options[i].value);
    }
    free(a->options);
    free(a);
}

static void
conf_free(struct sesame_conf *c)
{
    if (c == NULL)
        return;
    if (c->runtime && c->runtime_free)
        c->runtime_free(c->runtime);
    struct sesame_conf_server *s = &c->server;
    for (size_t i = 0; i < s->nlisten; i++)
        free(s->listen[i].text);
    free(s->listen);
    if (s->metrics_listen) {
        free(s->metrics_listen->text);
        free(s->metrics_listen);
    }
    free(s->tls_certificate);
    free(s->tls_certificate_key);
    free(s->trusted_proxies);
    free(s->error_log);
    free(s->access_log);
    free(s->prefix);
    free(s->pid_file);
    free(s->templates_dir);
    free(s->assertion_key_file);
    free(s->audit_log);
    free(s->audit_key_file);
    free(s->plugin_dir);
    struct sesame_conf_redis *r = &c->redis;
    free(r->host);
    free(r->unix_socket);
    free_words(r->sentinels, r->nsentinels);
    free(r->master_name);
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->prefix);
    free(c->session.cookie_name);
    OPENSSL_cleanse(c->session.secret, sizeof(c->session.secret));
    OPENSSL_cleanse(c->session.previous_secret, sizeof(c->session.previous_secret));
    for (size_t i = 0; i < c->nproviders; i++)
        free_provider(c->providers[i]);
    free(c->providers);
    for (size_t i = 0; i < c->ntenants; i++)
        free_tenant(c->tenants[i]);
    free(c->tenants);
    for (size_t i = 0; i < c->nroutes; i++)
        free_route(c->routes[i]);
    free(c->routes);
    for (size_t i = 0; i < c->naccounts; i++)
        free_accounts(c->accounts[i]);
    free(c->accounts);
    struct conf_lines *lines = c->lines;
    if (lines) {
        for (size_t i = 0; i < lines->nseen; i++)
            free(lines->seen[i].key_lines);
        free(lines->seen);
        free(lines);
    }
    free(c->path);
    free(c);
}

struct sesame_conf *
sesame_conf_load(const char *path, char **errors)
{
    struct loader L = {0};
    L.file = path;
    L.conf = sesame_calloc(1, sizeof(*L.conf));
    atomic_init(&L.conf->refs, 1);
    L.conf->path = sesame_strdup(path);
    L.file = L.conf->path;

    /* The singleton sections exist with their defaults even when absent. */
    struct section sec = {0};
    bool seen_single[3] = {false, false, false};
    for (enum section_kind k = SEC_SERVER; k <= SEC_SESSION; k++) {
        open_section(&L, &sec, k, NULL, 0);
    }
    L.conf->has_redis = false;
    sec.key_lines = NULL;
    sec.obj = NULL;
    sec.line = 0;

    FILE *f = fopen(path, "r");
    int line = 0;
    if (f == NULL) {
        conf_error(&L, 0, "file", "cannot open: %s", strerror(errno));
    } else {
        char buf[MAX_LINE + 2];
        bool skipping = false;
        while (fgets(buf, sizeof(buf), f) != NULL) {
            size_t n = strlen(buf);
            bool complete = n > 0 && buf[n - 1] == '\n';
            if (skipping) {
                skipping = !complete;
                continue;
            }
            line++;
            if (!complete && !feof(f)) {
                conf_error(&L, line, "line", "longer than %d characters", MAX_LINE);
                skipping = true;
                continue;
            }
            if (memchr(buf, '\0', n) != NULL || strlen(buf) != n) {
                conf_error(&L, line, "line", "contains a NUL byte");
                continue;
            }
            char *t = trim(buf);
            if (*t == '\0' || *t == '#' || *t == ';')
                continue;
            if (*t == '[')
                parse_header(&L, &sec, t, line, seen_single);
            else
                parse_setting(&L, &sec, t, line);
        }
        if (ferror(f))
            conf_error(&L, line, "file", "read error: %s", strerror(errno));
        fclose(f);
        if (!seen_single[SEC_SERVER])
            conf_error(&L, line, "server", "section [server] is missing");
        resolve_refs(&L);
        resolve_providers(&L);
        validate(&L, line);
    }
    /* kept for sesame_conf_key_line */
    struct conf_lines *lines = sesame_calloc(1, sizeof(*lines));
    lines->seen = L.seen;
    lines->nseen = L.nseen;
    L.conf->lines = lines;
    for (size_t i = 0; i < L.nplists; i++)
        free_words(L.plists[i].names, L.plists[i].n);
    free(L.plists);
    for (size_t i = 0; i < L.nrefs; i++) {
        free(*L.refs[i].name);
        free(L.refs[i].name);
    }
    free(L.refs);
    if (L.nerrors > 0) {
        conf_free(L.conf);
        if (errors)
            *errors = L.errors;
        else
            free(L.errors);
        return NULL;
    }
    free(L.errors);
    return L.conf;
}

struct sesame_conf *
sesame_conf_ref(struct sesame_conf *conf)
{
    if (conf)
        atomic_fetch_add(&conf->refs, 1);
    return conf;
}

void
sesame_conf_unref(struct sesame_conf *conf)
{
    if (conf && atomic_fetch_sub(&conf->refs, 1) == 1)
        conf_free(conf);
}

/* ------------------------------------------------------------------------
 * Lookups (hot path: no allocation)
 */

static bool
host_eq(const char *conf_host, const char *h, size_t n)
{
    return strlen(conf_host) == n && strncasecmp(conf_host, h, n) == 0;
}

const struct sesame_conf_tenant *
sesame_conf_find_tenant(const struct sesame_conf *conf, const char *host, size_t hostlen)
{
    for (size_t i = 0; i < conf->ntenants; i++) {
        const struct sesame_conf_tenant *t = conf->tenants[i];
        for (size_t j = 0; j < t->nhosts; j++)
            if (host_eq(t->hosts[j], host, hostlen))
                return t;
    }
    return NULL;
}

/* A prefix matches at a segment boundary: "/a" matches "/a", "/a/x", not "/ab". */
static bool
prefix_matches(const char *prefix, size_t plen, const char *path, size_t len)
{
    if (plen > len || memcmp(prefix, path, plen) != 0)
        return false;
    return plen == len || prefix[plen - 1] == '/' || path[plen] == '/';
}

const struct sesame_conf_route *
sesame_conf_find_route(const struct sesame_conf *conf, const struct sesame_conf_tenant *tenant,
                       const char *host, size_t hostlen, const char *path, size_t pathlen)
{
    const struct sesame_conf_route *best = NULL;
    size_t best_len = 0;
    bool best_host = false;
    for (size_t i = 0; i < conf->nroutes; i++) {
        const struct sesame_conf_route *r = conf->routes[i];
        if (r->tenant != tenant)
            continue;
        bool specific = r->host != NULL;
        if (specific && !host_eq(r->host, host, hostlen))
            continue;
        if (!prefix_matches(r->path, r->path_len, path, pathlen))
            continue;
        if (best == NULL || r->path_len > best_len || (r->path_len == best_len && specific && !best_host)) {
            best = r;
            best_len = r->path_len;
            best_host = specific;
        }
    }
    return best;
}

bool
sesame_conf_is_trusted_proxy(const struct sesame_conf *conf, const struct sockaddr *addr)
{
    for (size_t i = 0; i < conf->server.ntrusted_proxies; i++) {
        const struct sesame_cidr *c = &conf->server.trusted_proxies[i];
        const unsigned char *a, *n;
        int bits = c->prefix;
        if (addr->sa_family == AF_INET && c->net.ss_family == AF_INET) {
            a = (const unsigned char *)&((const struct sockaddr_in *)addr)->sin_addr;
            n = (const unsigned char *)&((const struct sockaddr_in *)&c->net)->sin_addr;
        } else if (addr->sa_family == AF_INET6 && c->net.ss_family == AF_INET6) {
            a = (const unsigned char *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
            n = (const unsigned char *)&((const struct sockaddr_in6 *)&c->net)->sin6_addr;
        } else {
            continue;
        }
        int full = bits / 8, rest = bits % 8;
        if (memcmp(a, n, (size_t)full) != 0)
            continue;
        if (rest && ((a[full] ^ n[full]) & (0xff << (8 - rest))) != 0)
            continue;
        return true;
    }
    return false;
}

int
sesame_conf_key_line(const struct sesame_conf *conf, const void *section, const char *key)
{
    const struct conf_lines *lines = conf->lines;
    if (lines == NULL)
        return 0;
    int header = 0;
    for (size_t i = 0; i < lines->nseen; i++) {
        const struct seen *s = &lines->seen[i];
        if (s->obj != section)
            continue;
        if (s->line != 0)
            header = s->line;
        const struct section_def *d = &sections[s->kind];
        for (size_t j = 0; j < d->nitems; j++)
            if (strcmp(d->items[j].key, key) == 0 && s->key_lines[j] != 0)
                return s->key_lines[j];
    }
    if (key != NULL) {
        /* an option of an [accounts] section */
        for (size_t i = 0; i < conf->naccounts; i++) {
            const struct sesame_conf_accounts *a = conf->accounts[i];
            if (a != section)
                continue;
            for (size_t j = 0; j < a->noptions; j++)
                if (strcmp(a->options[j].key, key) == 0)
                    return a->options[j].line;
        }
    }
    return header;
}

const struct sesame_conf_provider *
sesame_conf_find_provider(const struct sesame_conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->nproviders; i++)
        if (strcmp(conf->providers[i]->name, name) == 0)
            return conf->providers[i];
    return NULL;
}
