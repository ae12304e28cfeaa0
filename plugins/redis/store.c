#include "store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/evp.h>

#include "account/normalize.h"
#include "core/util.h"

#define DEFAULT_PREFIX "sesame:"
#define DEFAULT_TIMEOUT_MS 2000
#define MAX_PREFIX 64
#define IMPORT_MAX_ATTRS SESAME_PLUGIN_ATTRS_MAX

/* ---- small helpers ------------------------------------------------------ */

bool
sesame_store_account_id_ok(const char *s)
{
    return sesame_plugin_word_ok(s, SESAME_PLUGIN_ACCOUNT_ID_MAX, "._~@:+-");
}

bool
sesame_store_name_ok(const char *s)
{
    return sesame_plugin_word_ok(s, 64, "._-");
}

static bool
sub_ok(const char *s)
{
    size_t n = s ? strnlen(s, 257) : 0;
    if (n == 0 || n > 256)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    return true;
}

static bool
prefix_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > MAX_PREFIX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return false;
    return true;
}

static void
sha256_hex(const char *s, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        abort(); /* SHA-256 cannot fail short of a broken libcrypto */
    sesame_util_hex(out, md, 32);
}

static char *
base_key(const struct sesame_store_options *o, const char *tenant)
{
    return sesame_asprintf("%sacct:%s:", o->prefix, tenant);
}

/* Runs one command. Returns the reply, or NULL with *err (connection
 * failures leave c->err set; error replies do not). */
static redisReply *
run(redisContext *c, int argc, const char **argv, char **err)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (r == NULL) {
        sesame_err_set(err, "redis: %s", c->err ? c->errstr : "no reply");
        if (c->err == 0)
            c->err = REDIS_ERR_OTHER;
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        sesame_err_set(err, "redis: %.*s", (int)(r->len > 200 ? 200 : r->len), r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static char *
now_text(void)
{
    return sesame_asprintf("%lld", (long long)time(NULL));
}

/* ---- options and connection --------------------------------------------- */

int
sesame_store_parse_address(struct sesame_store_server *srv, const char *text, char **err)
{
    free(srv->host);
    free(srv->unix_path);
    srv->host = srv->unix_path = NULL;
    srv->port = 0;
    size_t n = strlen(text);
    if (n == 0 || n > 255)
        return sesame_err_set(err, "empty or longer than 255 bytes");
    if (strncmp(text, "unix:", 5) == 0)
        text += 5;
    if (text[0] == '/') {
        srv->unix_path = sesame_strdup(text);
        return SESAME_OK;
    }
    const char *host = text, *port = NULL;
    size_t hostlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close == text + 1)
            return sesame_err_set(err, "unterminated [IPv6] address");
        host = text + 1;
        hostlen = (size_t)(close - host);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return sesame_err_set(err, "expected ':' after ']'");
    } else {
        const char *colon = strrchr(text, ':');
        if (colon != NULL && strchr(text, ':') != colon)
            return sesame_err_set(err, "IPv6 addresses go in brackets: [::1]:6379");
        hostlen = colon ? (size_t)(colon - text) : n;
        port = colon ? colon + 1 : NULL;
    }
    if (hostlen == 0)
        return sesame_err_set(err, "no host");
    long p = 6379;
    if (port != NULL) {
        char *end;
        errno = 0;
        p = strtol(port, &end, 10);
        if (errno != 0 || end == port || *end != '\0' || p < 1 || p > 65535)
            return sesame_err_set(err, "port is not a number in 1..65535");
    }
    srv->host = sesame_strndup(host, hostlen);
    srv->port = (int)p;
    return SESAME_OK;
}

char *
sesame_store_read_secret(const char *path, char **err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        sesame_err_set(err, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[514];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        sesame_err_set(err, "cannot read %s", path);
        return NULL;
    }
    buf[n] = '\0';
    size_t len = strcspn(buf, "\r\n");
    if (len == n && n == sizeof(buf) - 1) {
        sesame_err_set(err, "%s: secret longer than 512 bytes", path);
        return NULL;
    }
    if (len == 0 || len > 512) {
        sesame_err_set(err, "%s: %s", path, len ? "secret longer than 512 bytes" : "empty secret");
        return NULL;
    }
    return sesame_strndup(buf, len);
}

void
sesame_store_options_free(struct sesame_store_options *o)
{
    if (o == NULL)
        return;
    free(o->server.host);
    free(o->server.unix_path);
    free(o->server.username);
    if (o->server.password != NULL) {
        explicit_bzero(o->server.password, strlen(o->server.password));
        free(o->server.password);
    }
    free(o->prefix);
    free(o->session_prefix);
    memset(o, 0, sizeof(*o));
}

static const char *const known_keys[] = {
    "address", "username", "password_file", "database", "timeout", "prefix", "session_prefix",
    "match", "policy", "connections",
};

int
sesame_store_options_parse(struct sesame_store_options *o, const struct sesame_plugin_option *opts,
                           size_t nopts, char **err)
{
    memset(o, 0, sizeof(*o));
    o->server.timeout_ms = DEFAULT_TIMEOUT_MS;
    o->policy = SESAME_STORE_CREATE;
    o->max_idle = 4;
    bool seen[SESAME_ARRAY_LEN(known_keys)] = {false};
    for (size_t i = 0; i < nopts; i++) {
        const char *k = opts[i].key, *v = opts[i].value;
        int line = opts[i].line;
        size_t which = SESAME_ARRAY_LEN(known_keys);
        for (size_t j = 0; j < SESAME_ARRAY_LEN(known_keys); j++)
            if (strcmp(k, known_keys[j]) == 0)
                which = j;
        if (which == SESAME_ARRAY_LEN(known_keys))
            return sesame_err_set(err, "line %d: %s: unknown option of the redis plugin", line, k);
        if (seen[which])
            return sesame_err_set(err, "line %d: %s: given twice", line, k);
        seen[which] = true;
        char *e = NULL;
        if (strcmp(k, "address") == 0) {
            if (sesame_store_parse_address(&o->server, v, &e) != SESAME_OK) {
                sesame_err_set(err, "line %d: address: %s", line, e);
                free(e);
                return SESAME_ERROR;
            }
        } else if (strcmp(k, "username") == 0) {
            if (!sesame_plugin_word_ok(v, 128, "._@-"))
                return sesame_err_set(err, "line %d: username: 1..128 of [A-Za-z0-9._@-]", line);
            o->server.username = sesame_strdup(v);
        } else if (strcmp(k, "password_file") == 0) {
            o->server.password = sesame_store_read_secret(v, &e);
            if (o->server.password == NULL) {
                sesame_err_set(err, "line %d: password_file: %s", line, e);
                free(e);
                return SESAME_ERROR;
            }
        } else if (strcmp(k, "database") == 0) {
            char *end;
            errno = 0;
            long d = strtol(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || d < 0 || d > 1023)
                return sesame_err_set(err, "line %d: database: not a number in 0..1023", line);
            o->server.database = (int)d;
        } else if (strcmp(k, "timeout") == 0) {
            uint64_t ms;
            if (sesame_util_parse_duration(v, &ms) != SESAME_OK || ms == 0 || ms > 60000)
                return sesame_err_set(err, "line %d: timeout: a duration from 1ms to 60s", line);
            o->server.timeout_ms = ms;
        } else if (strcmp(k, "prefix") == 0 || strcmp(k, "session_prefix") == 0) {
            if (!prefix_ok(v))
                return sesame_err_set(err, "line %d: %s: at most %d printable characters, no "
                                      "space", line, k, MAX_PREFIX);
            char **dst = strcmp(k, "prefix") == 0 ? &o->prefix : &o->session_prefix;
            *dst = sesame_strdup(v);
        } else if (strcmp(k, "match") == 0) {
            if (strcmp(v, "sub") == 0)
                o->match_pivot = false;
            else if (strcmp(v, "pivot") == 0)
                o->match_pivot = true;
            else
                return sesame_err_set(err, "line %d: match: \"sub\" or \"pivot\"", line);
        } else if (strcmp(k, "policy") == 0) {
            if (strcmp(v, "create") == 0)
                o->policy = SESAME_STORE_CREATE;
            else if (strcmp(v, "link-only") == 0)
                o->policy = SESAME_STORE_LINK_ONLY;
            else if (strcmp(v, "deny") == 0)
                o->policy = SESAME_STORE_DENY;
            else
                return sesame_err_set(err, "line %d: policy: \"create\", \"link-only\" or "
                                      "\"deny\"", line);
        } else { /* connections */
            char *end;
            errno = 0;
            long nconn = strtol(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || nconn < 1 || nconn > 64)
                return sesame_err_set(err, "line %d: connections: a number in 1..64", line);
            o->max_idle = (size_t)nconn;
        }
    }
    if (o->server.host == NULL && o->server.unix_path == NULL) {
        o->server.host = sesame_strdup("127.0.0.1");
        o->server.port = 6379;
    }
    if (o->prefix == NULL)
        o->prefix = sesame_strdup(DEFAULT_PREFIX);
    if (o->session_prefix == NULL)
        o->session_prefix = sesame_strdup(o->prefix);
    return SESAME_OK;
}

redisContext *
sesame_store_connect(const struct sesame_store_server *srv, char **err)
{
    struct timeval tv = sesame_util_timeval_ms(srv->timeout_ms);
    redisContext *c = srv->unix_path ? redisConnectUnixWithTimeout(srv->unix_path, tv)
                                     : redisConnectWithTimeout(srv->host, srv->port, tv);
    const char *where = srv->unix_path ? srv->unix_path : srv->host;
    if (c == NULL) {
        sesame_err_set(err, "redis %s: cannot allocate a connection", where);
        return NULL;
    }
    if (c->err) {
        sesame_err_set(err, "redis %s:%d: %s", where, srv->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        sesame_err_set(err, "redis %s: cannot set the command timeout", where);
        redisFree(c);
        return NULL;
    }
    char *e = NULL;
    if (srv->password != NULL) {
        const char *argv[3] = {"AUTH", srv->username ? srv->username : srv->password,
                               srv->password};
        redisReply *r = run(c, srv->username ? 3 : 2, argv, &e);
        if (r == NULL) {
            sesame_err_set(err, "redis %s: authentication failed: %s", where, e);
            free(e);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    if (srv->database != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", srv->database);
        const char *argv[2] = {"SELECT", db};
        redisReply *r = run(c, 2, argv, &e);
        if (r == NULL) {
            sesame_err_set(err, "redis %s: SELECT %d: %s", where, srv->database, e);
            free(e);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}

/* ---- resolve ------------------------------------------------------------ */

/* ARGV: base, provider, sub, mode, homonym hash, pivot hash, policy, new id,
 * now. Returns {kind, id, {attr k, v, ...}, note}. */
static const char resolve_lua[] =
    "local base, prov, sub = ARGV[1], ARGV[2], ARGV[3]\n"
    "local link = prov .. ':' .. sub\n"
    "local subkey = base .. 'sub:' .. link\n"
    "local function answer(kind, id, note)\n"
    "  return {kind, id, redis.call('HGETALL', base .. 'attrs:' .. id), note}\n"
    "end\n"
    "local id = redis.call('GET', subkey)\n"
    "if id then\n"
    "  if redis.call('EXISTS', base .. 'id:' .. id) == 1 then return answer('found', id, '') end\n"
    "  redis.call('DEL', subkey)\n"
    "end\n"
    "local note = ''\n"
    "if ARGV[4] == 'pivot' and ARGV[5] ~= '' then\n"
    "  local members = redis.call('SMEMBERS', base .. 'group:' .. ARGV[5])\n"
    "  if #members > 1 then\n"
    "    note = 'ambiguous:' .. #members\n"
    "  elseif #members == 1 then\n"
    "    local cand = members[1]\n"
    "    local rec = base .. 'id:' .. cand\n"
    "    if redis.call('HGET', rec, 'pivot') == ARGV[6] then\n"
    "      local taken = false\n"
    "      for _, m in ipairs(redis.call('SMEMBERS', base .. 'subs:' .. cand)) do\n"
    "        if string.sub(m, 1, #prov + 1) == prov .. ':' then taken = true end\n"
    "      end\n"
    "      if taken then\n"
    "        note = 'taken'\n"
    "      else\n"
    "        redis.call('SET', subkey, cand)\n"
    "        redis.call('SADD', base .. 'subs:' .. cand, link)\n"
    "        redis.call('HSET', rec, 'linked', ARGV[9])\n"
    "        return answer('linked', cand, '')\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ARGV[7] == 'create' then\n"
    "  local rec = base .. 'id:' .. ARGV[8]\n"
    "  if redis.call('EXISTS', rec) == 1 then return {'collision', '', {}, note} end\n"
    "  redis.call('HSET', rec, 'id', ARGV[8], 'created', ARGV[9], 'origin', 'created')\n"
    "  redis.call('SET', subkey, ARGV[8])\n"
    "  redis.call('SADD', base .. 'subs:' .. ARGV[8], link)\n"
    "  return answer('created', ARGV[8], note)\n"
    "end\n"
    "return {'none', '', {}, note}\n";

static const char *
claim(const struct sesame_plugin_identity *id, const char *name)
{
    for (size_t i = 0; i < id->nclaims; i++)
        if (strcmp(id->claims[i].key, name) == 0)
            return id->claims[i].value;
    return NULL;
}

/* Hashes of the identity's homonym key and pivot key; false when the claims
 * do not make a complete pivot. */
static bool
identity_hashes(const struct sesame_plugin_identity *id, char homonym[65], char pivot[65])
{
    struct sesame_normalize_pivot p = {
        .family_name = claim(id, "family_name"),
        .given_name = claim(id, "given_name"),
        .birthdate = claim(id, "birthdate"),
        .birthplace = claim(id, "birthplace"),
        .birthcountry = claim(id, "birthcountry"),
    };
    char *e = NULL;
    char *key = sesame_normalize_pivot(&p, &e);
    free(e);
    if (key == NULL)
        return false;
    sha256_hex(key, sesame_normalize_homonym_len(key), homonym);
    sha256_hex(key, strlen(key), pivot);
    explicit_bzero(key, strlen(key));
    free(key);
    return true;
}

static bool
is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

int
sesame_store_resolve(redisContext *c, const struct sesame_store_options *o,
                     sesame_store_log_fn log, const struct sesame_plugin_identity *id,
                     struct sesame_plugin_result *res)
{
    if (!sesame_store_name_ok(id->tenant) || !sesame_store_name_ok(id->provider) ||
        !sub_ok(id->sub)) {
        sesame_plugin_result_error(res, "redis accounts: malformed tenant, provider or sub");
        return SESAME_OK;
    }
    char homonym[65] = "", pivot[65] = "";
    if (o->match_pivot && !identity_hashes(id, homonym, pivot)) {
        homonym[0] = pivot[0] = '\0';
        if (log)
            log(SESAME_PLUGIN_LOG_DEBUG, "accounts redis: tenant %s: incomplete identité pivot, "
                "no pivot matching", id->tenant);
    }
    char newid[32];
    if (sesame_util_random_token(newid, sizeof(newid), 16) != SESAME_OK) {
        sesame_plugin_result_error(res, "redis accounts: no randomness for a new account id");
        return SESAME_OK;
    }
    static const char *const policies[] = {"create", "link-only", "deny"};
    char *base = base_key(o, id->tenant);
    char *now = now_text();
    const char *argv[] = {"EVAL", resolve_lua, "0", base, id->provider, id->sub,
                          o->match_pivot ? "pivot" : "sub", homonym, pivot,
                          policies[o->policy], newid, now};
    char *err = NULL;
    redisReply *r = run(c, (int)SESAME_ARRAY_LEN(argv), argv, &err);
    free(base);
    free(now);
    if (r == NULL) {
        sesame_plugin_result_error(res, "redis accounts: %s", err);
        free(err);
        return c->err ? SESAME_ERROR : SESAME_OK;
    }
    int rc = SESAME_OK;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || !is_str(r->element[0]) ||
        !is_str(r->element[1]) || r->element[2]->type != REDIS_REPLY_ARRAY ||
        !is_str(r->element[3])) {
        sesame_plugin_result_error(res, "redis accounts: unexpected reply to the resolve script");
        goto done;
    }
    const char *kind = r->element[0]->str;
    const char *acct = r->element[1]->str;
    const char *note = r->element[3]->str;
    if (log && strncmp(note, "ambiguous:", 10) == 0)
        log(SESAME_PLUGIN_LOG_WARN, "accounts redis: tenant %s: %s pre-registered accounts share "
            "the names and birthdate of a signing-in person: none linked automatically",
            id->tenant, note + 10);
    else if (log && strcmp(note, "taken") == 0)
        log(SESAME_PLUGIN_LOG_WARN, "accounts redis: tenant %s: the pre-registered account "
            "matching a signing-in person is already linked to another identity of provider %s: "
            "not linked automatically", id->tenant, id->provider);

    if (strcmp(kind, "none") == 0) {
        sesame_plugin_result_none(res, o->policy == SESAME_STORE_LINK_ONLY
                                           ? SESAME_PLUGIN_REASON_LINK_ONLY
                                           : SESAME_PLUGIN_REASON_DENY);
        goto done;
    }
    if (strcmp(kind, "collision") == 0) {
        sesame_plugin_result_error(res, "redis accounts: new account id collision, try again");
        goto done;
    }
    if (strcmp(kind, "found") != 0 && strcmp(kind, "linked") != 0 &&
        strcmp(kind, "created") != 0) {
        sesame_plugin_result_error(res, "redis accounts: unexpected reply to the resolve script");
        goto done;
    }
    if (sesame_plugin_result_found(res, acct) != 0)
        goto done;
    const redisReply *attrs = r->element[2];
    if (attrs->elements % 2 != 0 || attrs->elements / 2 > SESAME_PLUGIN_ATTRS_MAX) {
        sesame_plugin_result_error(res, "redis accounts: account has more than %d attributes",
                                   SESAME_PLUGIN_ATTRS_MAX);
        goto done;
    }
    for (size_t i = 0; i + 1 < attrs->elements; i += 2) {
        if (!is_str(attrs->element[i]) || !is_str(attrs->element[i + 1]) ||
            sesame_plugin_result_attr(res, attrs->element[i]->str, attrs->element[i + 1]->str) !=
                0) {
            sesame_plugin_result_error(res, "redis accounts: malformed attribute in the account");
            goto done;
        }
    }
    if (log && strcmp(kind, "linked") == 0)
        log(SESAME_PLUGIN_LOG_INFO, "accounts redis: tenant %s: identity of provider %s linked to "
            "a pre-registered account by identité pivot", id->tenant, id->provider);
    else if (log && strcmp(kind, "created") == 0)
        log(SESAME_PLUGIN_LOG_INFO, "accounts redis: tenant %s: account created for an identity "
            "of provider %s", id->tenant, id->provider);
done:
    freeReplyObject(r);
    return rc;
}

/* ---- import ------------------------------------------------------------- */

static void
append_line(char **buf, int line, const char *fmt, ...) SESAME_PRINTF(3, 4);

static void
append_line(char **buf, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *next = sesame_asprintf("%s%sline %d: %s", *buf ? *buf : "", *buf ? "\n" : "", line, msg);
    free(*buf);
    *buf = next;
}

struct prepared {
    char *id;
    char homonym[65], pivot[65];
};

/* Reads n replies of pipelined commands, all of them even after an error
 * reply (so the connection stays in step), keeping reply keep_index when
 * keep is not NULL. Returns SESAME_ERROR with *err on the first error reply
 * or a connection failure (then c->err is set and the caller drops c). */
static int
read_replies(redisContext *c, size_t n, redisReply **keep, size_t keep_index, char **err)
{
    int rc = SESAME_OK;
    for (size_t i = 0; i < n; i++) {
        void *vr = NULL;
        if (redisGetReply(c, &vr) != REDIS_OK || vr == NULL) {
            sesame_err_set(err, "redis: %s", c->err ? c->errstr : "no reply");
            if (c->err == 0)
                c->err = REDIS_ERR_OTHER;
            if (keep != NULL && *keep != NULL) {
                freeReplyObject(*keep);
                *keep = NULL;
            }
            return SESAME_ERROR;
        }
        redisReply *r = vr;
        if (r->type == REDIS_REPLY_ERROR) {
            sesame_err_set(err, "redis: %.*s", (int)(r->len > 200 ? 200 : r->len), r->str);
            rc = SESAME_ERROR;
        }
        if (keep != NULL && i == keep_index)
            *keep = r;
        else
            freeReplyObject(r);
    }
    if (rc != SESAME_OK && keep != NULL && *keep != NULL) {
        freeReplyObject(*keep);
        *keep = NULL;
    }
    return rc;
}

static void
unwatch(redisContext *c)
{
    const char *argv[] = {"UNWATCH"};
    char *e = NULL;
    redisReply *r = run(c, 1, argv, &e);
    free(e);
    if (r)
        freeReplyObject(r);
}

int
sesame_store_import(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                    const struct sesame_store_import *recs, size_t n, char **ids, char **err)
{
    if (!sesame_store_name_ok(tenant))
        return sesame_err_set(err, "tenant name malformed");
    char *bad = NULL;
    struct prepared *prep = sesame_calloc(n ? n : 1, sizeof(*prep));
    char *base = base_key(o, tenant);
    int rc = SESAME_ERROR;

    for (size_t i = 0; i < n; i++) {
        const struct sesame_store_import *r = &recs[i];
        struct sesame_normalize_pivot p = {r->family_name, r->given_name, r->birthdate,
                                           r->birthplace, r->birthcountry, NULL};
        char *e = NULL;
        char *key = sesame_normalize_pivot(&p, &e);
        if (key == NULL) {
            append_line(&bad, r->line, "%s", e);
            free(e);
            continue;
        }
        sha256_hex(key, sesame_normalize_homonym_len(key), prep[i].homonym);
        sha256_hex(key, strlen(key), prep[i].pivot);
        free(key);
        if (r->account_id != NULL) {
            if (!sesame_store_account_id_ok(r->account_id)) {
                append_line(&bad, r->line, "account_id: 1..%d of [A-Za-z0-9._~@:+-]",
                            SESAME_PLUGIN_ACCOUNT_ID_MAX);
                continue;
            }
            prep[i].id = sesame_strdup(r->account_id);
        } else {
            char tok[32];
            if (sesame_util_random_token(tok, sizeof(tok), 16) != SESAME_OK) {
                append_line(&bad, r->line, "no randomness for an account id");
                continue;
            }
            prep[i].id = sesame_strdup(tok);
        }
        if (r->nattrs > IMPORT_MAX_ATTRS)
            append_line(&bad, r->line, "more than %d attributes", IMPORT_MAX_ATTRS);
        for (size_t a = 0; a < r->nattrs && a < IMPORT_MAX_ATTRS; a++) {
            const char *k = r->attrs[a].key, *v = r->attrs[a].value;
            if (!sesame_plugin_word_ok(k, SESAME_PLUGIN_ATTR_NAME_MAX, "_.-"))
                append_line(&bad, r->line, "attribute #%zu: name must be 1..%d of "
                            "[A-Za-z0-9_.-]", a + 1, SESAME_PLUGIN_ATTR_NAME_MAX);
            else if (strlen(v) > SESAME_PLUGIN_ATTR_VALUE_MAX ||
                     !sesame_normalize_utf8_valid(v, strlen(v), false))
                append_line(&bad, r->line, "attribute %s: value longer than %d bytes or not "
                            "UTF-8 text", k, SESAME_PLUGIN_ATTR_VALUE_MAX);
            for (size_t b = 0; b < a; b++)
                if (strcmp(r->attrs[b].key, k) == 0)
                    append_line(&bad, r->line, "attribute %s given twice", k);
        }
        for (size_t j = 0; j < i; j++)
            if (prep[j].id != NULL && strcmp(prep[j].id, prep[i].id) == 0)
                append_line(&bad, r->line, "account_id %s already used on line %d", prep[i].id,
                            recs[j].line);
    }
    if (bad != NULL)
        goto done;

    /* Guard every record key, then check none exists yet. */
    for (size_t i = 0; i < n; i++) {
        char *rec = sesame_asprintf("%sid:%s", base, prep[i].id);
        const char *argv[] = {"WATCH", rec};
        redisAppendCommandArgv(c, 2, argv, NULL);
        const char *argv2[] = {"EXISTS", rec};
        redisAppendCommandArgv(c, 2, argv2, NULL);
        free(rec);
    }
    bool read_failed = false;
    for (size_t i = 0; i < n; i++) {
        redisReply *ex = NULL;
        if (read_replies(c, 2, &ex, 1, err) != SESAME_OK) {
            if (c->err)
                goto done;
            read_failed = true;
            continue;
        }
        if (ex->type != REDIS_REPLY_INTEGER || ex->integer != 0)
            append_line(&bad, recs[i].line, "account %s already exists", prep[i].id);
        freeReplyObject(ex);
    }
    if (read_failed)
        goto done_unwatch;
    if (bad != NULL)
        goto done_unwatch;

    char *now = now_text();
    redisAppendCommand(c, "MULTI");
    size_t queued = 1;
    for (size_t i = 0; i < n; i++) {
        const struct sesame_store_import *r = &recs[i];
        char *rec = sesame_asprintf("%sid:%s", base, prep[i].id);
        char place[6] = "";
        for (size_t k = 0; k < 5 && r->birthplace[k]; k++) {
            char ch = r->birthplace[k];
            place[k] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 'a' + 'A') : ch;
            place[k + 1] = '\0';
        }
        const char *hset[] = {"HSET", rec, "id", prep[i].id, "created", now, "origin", "import",
                              "family_name", r->family_name, "given_name", r->given_name,
                              "birthdate", r->birthdate, "birthplace", place,
                              "birthcountry", r->birthcountry, "homonym", prep[i].homonym,
                              "pivot", prep[i].pivot};
        redisAppendCommandArgv(c, (int)SESAME_ARRAY_LEN(hset), hset, NULL);
        char *group = sesame_asprintf("%sgroup:%s", base, prep[i].homonym);
        const char *sadd[] = {"SADD", group, prep[i].id};
        redisAppendCommandArgv(c, 3, sadd, NULL);
        queued += 2;
        if (r->nattrs > 0) {
            char *attrs = sesame_asprintf("%sattrs:%s", base, prep[i].id);
            const char *argv[2 + 2 * IMPORT_MAX_ATTRS];
            argv[0] = "HSET";
            argv[1] = attrs;
            for (size_t a = 0; a < r->nattrs; a++) {
                argv[2 + 2 * a] = r->attrs[a].key;
                argv[3 + 2 * a] = r->attrs[a].value;
            }
            redisAppendCommandArgv(c, (int)(2 + 2 * r->nattrs), argv, NULL);
            queued++;
            free(attrs);
        }
        free(group);
        free(rec);
    }
    free(now);
    redisAppendCommand(c, "EXEC");
    redisReply *exec = NULL;
    if (read_replies(c, queued + 1, &exec, queued, err) != SESAME_OK)
        goto done;
    if (exec->type != REDIS_REPLY_ARRAY) {
        sesame_err_set(err, "an account was created meanwhile: nothing imported, try again");
        freeReplyObject(exec);
        goto done;
    }
    for (size_t i = 0; i < exec->elements; i++) {
        if (exec->element[i]->type == REDIS_REPLY_ERROR) {
            sesame_err_set(err, "redis refused part of the import: %.*s",
                           (int)(exec->element[i]->len > 200 ? 200 : exec->element[i]->len),
                           exec->element[i]->str);
            freeReplyObject(exec);
            goto done;
        }
    }
    freeReplyObject(exec);
    for (size_t i = 0; i < n; i++) {
        ids[i] = prep[i].id;
        prep[i].id = NULL;
    }
    rc = SESAME_OK;
    goto done;

done_unwatch:
    if (c->err == 0)
        unwatch(c);
done:
    if (bad != NULL) {
        sesame_err_set(err, "%s", bad);
        free(bad);
    }
    for (size_t i = 0; i < n; i++)
        free(prep[i].id);
    free(prep);
    free(base);
    return rc;
}

/* ---- administration ----------------------------------------------------- */

static void
kv_from_array(const redisReply *r, struct sesame_plugin_kv **out, size_t *n)
{
    *n = 0;
    *out = sesame_calloc(r->elements / 2 + 1, sizeof(**out));
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        if (!is_str(r->element[i]) || !is_str(r->element[i + 1]))
            continue;
        (*out)[*n].key = sesame_strdup(r->element[i]->str);
        (*out)[*n].value = sesame_strdup(r->element[i + 1]->str);
        (*n)++;
    }
}

void
sesame_store_account_free(struct sesame_store_account *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nfields; i++) {
        free((char *)a->fields[i].key);
        free((char *)a->fields[i].value);
    }
    for (size_t i = 0; i < a->nattrs; i++) {
        free((char *)a->attrs[i].key);
        free((char *)a->attrs[i].value);
    }
    for (size_t i = 0; i < a->nlinks; i++)
        free(a->links[i]);
    free(a->fields);
    free(a->attrs);
    free(a->links);
    memset(a, 0, sizeof(*a));
}

static int
check_names(const char *tenant, const char *account_id, char **err)
{
    if (!sesame_store_name_ok(tenant))
        return sesame_err_set(err, "tenant name malformed");
    if (!sesame_store_account_id_ok(account_id))
        return sesame_err_set(err, "account id malformed");
    return SESAME_OK;
}

int
sesame_store_get(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                 const char *account_id, struct sesame_store_account *out, char **err)
{
    memset(out, 0, sizeof(*out));
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *base = base_key(o, tenant);
    char *rec = sesame_asprintf("%sid:%s", base, account_id);
    char *subs = sesame_asprintf("%ssubs:%s", base, account_id);
    char *attrs = sesame_asprintf("%sattrs:%s", base, account_id);
    const char *a1[] = {"HGETALL", rec}, *a2[] = {"SMEMBERS", subs}, *a3[] = {"HGETALL", attrs};
    redisReply *r1 = NULL, *r2 = NULL, *r3 = NULL;
    int rc = SESAME_ERROR;
    if ((r1 = run(c, 2, a1, err)) == NULL || (r2 = run(c, 2, a2, err)) == NULL ||
        (r3 = run(c, 2, a3, err)) == NULL)
        goto done;
    if (r1->type != REDIS_REPLY_ARRAY || r2->type != REDIS_REPLY_ARRAY ||
        r3->type != REDIS_REPLY_ARRAY) {
        sesame_err_set(err, "redis: unexpected reply type");
        goto done;
    }
    if (r1->elements == 0) {
        rc = SESAME_DECLINED;
        goto done;
    }
    kv_from_array(r1, &out->fields, &out->nfields);
    kv_from_array(r3, &out->attrs, &out->nattrs);
    out->links = sesame_calloc(r2->elements + 1, sizeof(char *));
    for (size_t i = 0; i < r2->elements; i++)
        if (is_str(r2->element[i]))
            out->links[out->nlinks++] = sesame_strdup(r2->element[i]->str);
    rc = SESAME_OK;
done:
    if (r1)
        freeReplyObject(r1);
    if (r2)
        freeReplyObject(r2);
    if (r3)
        freeReplyObject(r3);
    free(base);
    free(rec);
    free(subs);
    free(attrs);
    return rc;
}

int
sesame_store_count_sessions(redisContext *c, const char *session_prefix, const char *tenant,
                            const char *account_id, long long *n, char **err)
{
    *n = 0;
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *idx = sesame_asprintf("%sa:%s:%s", session_prefix, tenant, account_id);
    const char *argv[] = {"SCARD", idx};
    redisReply *r = run(c, 2, argv, err);
    free(idx);
    if (r == NULL)
        return SESAME_ERROR;
    int rc = SESAME_OK;
    if (r->type == REDIS_REPLY_INTEGER)
        *n = r->integer;
    else
        rc = sesame_err_set(err, "redis: unexpected reply type");
    freeReplyObject(r);
    return rc;
}

int
sesame_store_find_sub(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                      const char *provider, const char *sub, char **account_id, char **err)
{
    *account_id = NULL;
    if (!sesame_store_name_ok(tenant) || !sesame_store_name_ok(provider) || !sub_ok(sub))
        return sesame_err_set(err, "tenant, provider or sub malformed");
    char *key = sesame_asprintf("%sacct:%s:sub:%s:%s", o->prefix, tenant, provider, sub);
    const char *argv[] = {"GET", key};
    redisReply *r = run(c, 2, argv, err);
    free(key);
    if (r == NULL)
        return SESAME_ERROR;
    int rc = SESAME_DECLINED;
    if (r->type == REDIS_REPLY_STRING) {
        *account_id = sesame_strdup(r->str);
        rc = SESAME_OK;
    }
    freeReplyObject(r);
    return rc;
}

/* Runs a script returning an integer. */
static int
eval_int(redisContext *c, const char *script, const char **args, size_t nargs, long long *out,
         char **err)
{
    const char *argv[8];
    if (nargs > 5)
        return sesame_err_set(err, "internal: too many script arguments");
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "0";
    for (size_t i = 0; i < nargs; i++)
        argv[3 + i] = args[i];
    redisReply *r = run(c, (int)(3 + nargs), argv, err);
    if (r == NULL)
        return SESAME_ERROR;
    if (r->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return sesame_err_set(err, "redis: unexpected reply to a script");
    }
    *out = r->integer;
    freeReplyObject(r);
    return SESAME_OK;
}

static const char link_lua[] =
    "local base, id, link, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local rec = base .. 'id:' .. id\n"
    "if redis.call('EXISTS', rec) == 0 then return -1 end\n"
    "local k = base .. 'sub:' .. link\n"
    "local cur = redis.call('GET', k)\n"
    "if cur and cur ~= id and redis.call('EXISTS', base .. 'id:' .. cur) == 1 then return -2 end\n"
    "redis.call('SET', k, id)\n"
    "redis.call('SADD', base .. 'subs:' .. id, link)\n"
    "redis.call('HSET', rec, 'linked', now)\n"
    "return 1\n";

int
sesame_store_link(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                  const char *account_id, const char *provider, const char *sub, char **err)
{
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    if (!sesame_store_name_ok(provider) || !sub_ok(sub))
        return sesame_err_set(err, "provider or sub malformed");
    char *base = base_key(o, tenant);
    char *link = sesame_asprintf("%s:%s", provider, sub);
    char *now = now_text();
    const char *args[] = {base, account_id, link, now};
    long long v = 0;
    int rc = eval_int(c, link_lua, args, 4, &v, err);
    free(base);
    free(link);
    free(now);
    if (rc != SESAME_OK)
        return rc;
    if (v == -1)
        return SESAME_DECLINED;
    if (v == -2)
        return sesame_err_set(err, "this identity is already linked to another account");
    return SESAME_OK;
}

static const char unlink_lua[] =
    "local base, id = ARGV[1], ARGV[2]\n"
    "if redis.call('EXISTS', base .. 'id:' .. id) == 0 then return -1 end\n"
    "local links = redis.call('SMEMBERS', base .. 'subs:' .. id)\n"
    "for _, m in ipairs(links) do\n"
    "  local k = base .. 'sub:' .. m\n"
    "  if redis.call('GET', k) == id then redis.call('DEL', k) end\n"
    "end\n"
    "redis.call('DEL', base .. 'subs:' .. id)\n"
    "redis.call('HDEL', base .. 'id:' .. id, 'linked')\n"
    "return #links\n";

int
sesame_store_unlink(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                    const char *account_id, size_t *nlinks, char **err)
{
    *nlinks = 0;
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *base = base_key(o, tenant);
    const char *args[] = {base, account_id};
    long long v = 0;
    int rc = eval_int(c, unlink_lua, args, 2, &v, err);
    free(base);
    if (rc != SESAME_OK)
        return rc;
    if (v < 0)
        return SESAME_DECLINED;
    *nlinks = (size_t)v;
    return SESAME_OK;
}

static const char erase_lua[] =
    "local base, id = ARGV[1], ARGV[2]\n"
    "local rec = base .. 'id:' .. id\n"
    "local existed = redis.call('EXISTS', rec)\n"
    "for _, m in ipairs(redis.call('SMEMBERS', base .. 'subs:' .. id)) do\n"
    "  local k = base .. 'sub:' .. m\n"
    "  if redis.call('GET', k) == id then redis.call('DEL', k) end\n"
    "end\n"
    "local h = redis.call('HGET', rec, 'homonym')\n"
    "if h then redis.call('SREM', base .. 'group:' .. h, id) end\n"
    "redis.call('DEL', rec, base .. 'subs:' .. id, base .. 'attrs:' .. id)\n"
    "return existed\n";

int
sesame_store_erase(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                   const char *account_id, char **err)
{
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *base = base_key(o, tenant);
    const char *args[] = {base, account_id};
    long long v = 0;
    int rc = eval_int(c, erase_lua, args, 2, &v, err);
    free(base);
    if (rc != SESAME_OK)
        return rc;
    return v == 1 ? SESAME_OK : SESAME_DECLINED;
}

static const char revoke_lua[] =
    "local sp, idx = ARGV[1], ARGV[2]\n"
    "local hs = redis.call('SMEMBERS', idx)\n"
    "for _, h in ipairs(hs) do\n"
    "  redis.call('DEL', sp .. 's:' .. h)\n"
    "  redis.call('PUBLISH', sp .. 'revoked', h)\n"
    "end\n"
    "redis.call('DEL', idx)\n"
    "return #hs\n";

int
sesame_store_revoke_sessions(redisContext *c, const char *session_prefix, const char *tenant,
                             const char *account_id, size_t *nsessions, char **err)
{
    *nsessions = 0;
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *idx = sesame_asprintf("%sa:%s:%s", session_prefix, tenant, account_id);
    const char *args[] = {session_prefix, idx};
    long long v = 0;
    int rc = eval_int(c, revoke_lua, args, 2, &v, err);
    free(idx);
    if (rc == SESAME_OK)
        *nsessions = (size_t)v;
    return rc;
}
