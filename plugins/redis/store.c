#include "store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "account/normalize.h"
#include "core/util.h"

#define DEFAULT_PREFIX "sesame:"
#define DEFAULT_TIMEOUT_MS 2000
#define MAX_PREFIX 64
#define IMPORT_MAX_ATTRS SESAME_PLUGIN_ATTRS_MAX
#define SEAL_VERSION 1
#define SEAL_NONCE 12
#define SEAL_TAG 16
#define SEAL_MAX (64 * 1024)   /* plaintext bytes of one sealed value, at most */
#define BATCH 256              /* records read per round trip when scanning */

/* ---- small helpers ------------------------------------------------------ */

bool
sesame_store_account_id_ok(const char *s)
{
    return sesame_plugin_word_ok(s, SESAME_PLUGIN_ACCOUNT_ID_MAX, "._~@:+-");
}

/* A new random account id (16 bytes, base64url) that does not start with
 * '-' or '_', so that it is never read as a command-line option. */
static int
new_account_id(char out[32])
{
    for (int tries = 0; tries < 64; tries++) {
        if (sesame_util_random_token(out, 32, 16) != SESAME_OK)
            return SESAME_ERROR;
        if (out[0] != '-' && out[0] != '_')
            return SESAME_OK;
    }
    return SESAME_ERROR;
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

static char *
base_key(const struct sesame_store_options *o, const char *tenant)
{
    return sesame_asprintf("%sacct:%s:", o->prefix, tenant);
}

static bool
is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
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

/* A score or a decimal field as seconds (0 when absent or malformed). */
static int64_t
seconds_of(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (is_str(r)) {
        char *end;
        double d = strtod(r->str, &end);
        if (end == r->str || d < 0 || d > 9e15)
            return 0;
        return (int64_t)d;
    }
    return 0;
}

/* ---- keys, keyed hashes, sealed values ---------------------------------- */

static void
hmac256(const unsigned char *key, size_t keylen, const void *msg, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), key, (int)keylen, msg, n, out, &len) == NULL || len != 32)
        abort(); /* HMAC-SHA256 cannot fail short of a broken libcrypto */
}

int
sesame_store_load_key(struct sesame_store_keys *k, const char *path, char **err)
{
    memset(k, 0, sizeof(*k));
    char *e = NULL;
    char *secret = sesame_store_read_secret(path, &e);
    if (secret == NULL) {
        sesame_err_set(err, "%s", e);
        free(e);
        return SESAME_ERROR;
    }
    size_t n = strlen(secret);
    int rc = SESAME_OK;
    if (n < SESAME_STORE_KEY_MIN) {
        rc = sesame_err_set(err, "the key in %s is too short: it needs at least %d characters "
                            "(create one with: head -c 32 /dev/urandom | base64 > %s)", path,
                            SESAME_STORE_KEY_MIN, path);
    } else {
        static const char seal_label[] = "sesame accounts v1 record sealing";
        static const char index_label[] = "sesame accounts v1 index hashing";
        hmac256((unsigned char *)secret, n, seal_label, sizeof(seal_label) - 1, k->seal);
        hmac256((unsigned char *)secret, n, index_label, sizeof(index_label) - 1, k->index);
        k->set = true;
    }
    OPENSSL_cleanse(secret, n);
    free(secret);
    return rc;
}

/* Hex of H(kind, tenant, a[, b]) = HMAC(index key, kind 0 tenant 0 a [0 b]). */
static void
keyed_hash(const struct sesame_store_options *o, const char *kind, const char *tenant,
           const char *a, size_t alen, const char *b, char out[65])
{
    size_t kl = strlen(kind), tl = strlen(tenant), bl = b ? strlen(b) : 0;
    size_t n = kl + 1 + tl + 1 + alen + (b ? 1 + bl : 0);
    char *msg = sesame_malloc(n);
    size_t p = 0;
    memcpy(msg + p, kind, kl + 1);
    p += kl + 1;
    memcpy(msg + p, tenant, tl + 1);
    p += tl + 1;
    memcpy(msg + p, a, alen);
    p += alen;
    if (b != NULL) {
        msg[p++] = '\0';
        memcpy(msg + p, b, bl);
    }
    unsigned char md[32];
    hmac256(o->keys.index, sizeof(o->keys.index), msg, n, md);
    OPENSSL_cleanse(msg, n);
    free(msg);
    sesame_util_hex(out, md, 32);
}

/* AES-256-GCM. Not sesame_util_aes256gcm: the plugin links its own copy of
 * core/util.c, whose cached algorithms would be lost (and reported as
 * leaks) when the daemon unloads the plugin. */
static const EVP_CIPHER *
aes256gcm(void)
{
    return EVP_aes_256_gcm();
}

/* Seals plain (n bytes) with aad. Returns a malloc'd base64url text, or
 * NULL (CSPRNG or cipher failure, or n too large). */
static char *
seal(const struct sesame_store_options *o, const char *aad, const void *plain, size_t n)
{
    if (n > SEAL_MAX)
        return NULL;
    size_t total = 1 + SEAL_NONCE + n + SEAL_TAG;
    unsigned char *buf = sesame_malloc(total);
    buf[0] = SEAL_VERSION;
    unsigned char *nonce = buf + 1, *ct = buf + 1 + SEAL_NONCE;
    char *text = NULL;
    int len;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || sesame_util_random(nonce, SEAL_NONCE) != SESAME_OK ||
        EVP_EncryptInit_ex(ctx, aes256gcm(), NULL, o->keys.seal, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        (n > 0 && EVP_EncryptUpdate(ctx, ct, &len, plain, (int)n) != 1) ||
        EVP_EncryptFinal_ex(ctx, ct + n, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, ct + n) != 1)
        goto done;
    text = sesame_malloc(sesame_util_b64url_len(total) + 1);
    sesame_util_b64url_encode(text, buf, total);
done:
    EVP_CIPHER_CTX_free(ctx);
    free(buf);
    return text;
}

/* Opens what seal wrote with the same aad. Returns the malloc'd,
 * NUL-terminated plaintext (*n bytes), or NULL when it does not open. */
static char *
unseal(const struct sesame_store_options *o, const char *aad, const char *text, size_t tlen,
       size_t *n)
{
    if (tlen < 4 || tlen > sesame_util_b64url_len(1 + SEAL_NONCE + SEAL_MAX + SEAL_TAG))
        return NULL;
    unsigned char *buf = sesame_malloc(tlen * 3 / 4 + 1);
    long blen = sesame_util_b64url_decode(buf, text, tlen);
    char *out = NULL;
    if (blen < 1 + SEAL_NONCE + SEAL_TAG || buf[0] != SEAL_VERSION) {
        free(buf);
        return NULL;
    }
    size_t ctlen = (size_t)blen - 1 - SEAL_NONCE - SEAL_TAG;
    const unsigned char *nonce = buf + 1, *ct = buf + 1 + SEAL_NONCE, *tag = ct + ctlen;
    out = sesame_malloc(ctlen + 1);
    int len;
    bool ok = false;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx != NULL &&
        EVP_DecryptInit_ex(ctx, aes256gcm(), NULL, o->keys.seal, nonce) == 1 &&
        EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
        (ctlen == 0 || EVP_DecryptUpdate(ctx, (unsigned char *)out, &len, ct, (int)ctlen) == 1) &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, (void *)tag) == 1 &&
        EVP_DecryptFinal_ex(ctx, (unsigned char *)out + ctlen, &len) == 1)
        ok = true;
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(buf, (size_t)blen);
    free(buf);
    if (!ok) {
        OPENSSL_cleanse(out, ctlen + 1);
        free(out);
        return NULL;
    }
    out[ctlen] = '\0';
    *n = ctlen;
    return out;
}

/* Additional data of a record's sealed personal data. */
static char *
data_aad(const char *base, const char *id)
{
    return sesame_asprintf("%sid:%s\n" "data", base, id);
}

/* Additional data of a sealed sub: the sub index key it belongs to. */
static char *
link_aad(const char *base, const char *subhash)
{
    return sesame_asprintf("%ssub:%s", base, subhash);
}

/* The tenant's key check value: the first 16 bytes of H("key check"), hex.
 * Stored at P acct:T:key by the first write, it tells records written
 * under another key_file from absent ones. */
static void
key_check_value(const struct sesame_store_options *o, const char *tenant, char out[33])
{
    char full[65];
    keyed_hash(o, "key check", tenant, "", 0, NULL, full);
    memcpy(out, full, 32);
    out[32] = '\0';
}

static const char key_mismatch[] =
    "the key_file is not the key the records of this tenant were written with";

/* SESAME_OK when the tenant's records were written under o's key or there
 * are none yet (with claim: the check value is then stored). */
static int
check_key(redisContext *c, const struct sesame_store_options *o, const char *tenant, bool claim,
          char **err)
{
    char value[33];
    key_check_value(o, tenant, value);
    char *key = sesame_asprintf("%sacct:%s:key", o->prefix, tenant);
    const char *get[] = {"GET", key};
    redisReply *r = run(c, 2, get, err);
    int rc = SESAME_ERROR;
    if (r == NULL)
        goto done;
    if (r->type == REDIS_REPLY_STRING) {
        rc = strcmp(r->str, value) == 0 ? SESAME_OK : sesame_err_set(err, "%s", key_mismatch);
    } else if (claim) {
        const char *set[] = {"SET", key, value, "NX"};
        redisReply *s2 = run(c, 4, set, err);
        if (s2 != NULL) {
            freeReplyObject(s2);
            rc = SESAME_OK;
        }
    } else {
        rc = SESAME_OK;
    }
    freeReplyObject(r);
done:
    free(key);
    return rc;
}

static void
free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
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
    free_secret(o->server.password);
    free(o->prefix);
    free(o->session_prefix);
    OPENSSL_cleanse(&o->keys, sizeof(o->keys));
    memset(o, 0, sizeof(*o));
}

static const char *const known_keys[] = {
    "address", "username", "password_file", "database", "timeout", "prefix", "session_prefix",
    "match", "policy", "connections", "key_file",
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
        } else if (strcmp(k, "key_file") == 0) {
            if (sesame_store_load_key(&o->keys, v, &e) != SESAME_OK) {
                sesame_err_set(err, "line %d: key_file: %s", line, e);
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

int
sesame_store_options_check(const struct sesame_store_options *o, char **err)
{
    if (o->keys.set)
        return SESAME_OK;
    return sesame_err_set(err, "key_file: missing: the account records are encrypted with the key "
                          "in this file, at least %d characters (create one with: head -c 32 "
                          "/dev/urandom | base64 > /etc/sesame/accounts.key; chmod 600 it)",
                          SESAME_STORE_KEY_MIN);
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


/* ARGV: base, provider, sub hash, mode, homonym hash, pivot hash, policy,
 * new id, now, sealed sub, key check value. Returns {kind, id, sealed data
 * or '', note}. */
static const char resolve_lua[] =
    "local base, prov, sh, now = ARGV[1], ARGV[2], ARGV[3], ARGV[9]\n"
    "local kc = redis.call('GET', base .. 'key')\n"
    "if kc and kc ~= ARGV[11] then return {'wrongkey', '', '', ''} end\n"
    "local function claim_key()\n"
    "  if not kc then redis.call('SET', base .. 'key', ARGV[11]) end\n"
    "end\n"
    "local field = prov .. ':' .. sh\n"
    "local subkey = base .. 'sub:' .. sh\n"
    "local function answer(kind, id, note)\n"
    "  redis.call('ZADD', base .. 'signin', now, id)\n"
    "  return {kind, id, redis.call('HGET', base .. 'id:' .. id, 'data') or '', note}\n"
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
    "      for _, m in ipairs(redis.call('HKEYS', base .. 'subs:' .. cand)) do\n"
    "        if string.sub(m, 1, #prov + 1) == prov .. ':' then taken = true end\n"
    "      end\n"
    "      if taken then\n"
    "        note = 'taken'\n"
    "      else\n"
    "        claim_key()\n"
    "        redis.call('SET', subkey, cand)\n"
    "        redis.call('HSET', base .. 'subs:' .. cand, field, ARGV[10])\n"
    "        redis.call('HSET', rec, 'linked', now)\n"
    "        return answer('linked', cand, '')\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ARGV[7] == 'create' then\n"
    "  local rec = base .. 'id:' .. ARGV[8]\n"
    "  if redis.call('EXISTS', rec) == 1 then return {'collision', '', '', note} end\n"
    "  claim_key()\n"
    "  redis.call('HSET', rec, 'id', ARGV[8], 'created', now, 'origin', 'created')\n"
    "  redis.call('ZADD', base .. 'created', now, ARGV[8])\n"
    "  redis.call('SET', subkey, ARGV[8])\n"
    "  redis.call('HSET', base .. 'subs:' .. ARGV[8], field, ARGV[10])\n"
    "  return answer('created', ARGV[8], note)\n"
    "end\n"
    "return {'none', '', '', note}\n";

static const char *
claim(const struct sesame_plugin_identity *id, const char *name)
{
    for (size_t i = 0; i < id->nclaims; i++)
        if (strcmp(id->claims[i].key, name) == 0)
            return id->claims[i].value;
    return NULL;
}

/* Keyed hashes of a pivot key: its homonym part and the whole. */
static void
pivot_hashes(const struct sesame_store_options *o, const char *tenant, const char *key,
             char homonym[65], char pivot[65])
{
    keyed_hash(o, "homonym", tenant, key, sesame_normalize_homonym_len(key), NULL, homonym);
    keyed_hash(o, "pivot", tenant, key, strlen(key), NULL, pivot);
}

/* Hashes of the identity's homonym key and pivot key; false when the claims
 * do not make a complete pivot. */
static bool
identity_hashes(const struct sesame_store_options *o, const struct sesame_plugin_identity *id,
                char homonym[65], char pivot[65])
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
    pivot_hashes(o, id->tenant, key, homonym, pivot);
    free_secret(key);
    return true;
}

/* The sub index hash of PROVIDER:SUB and the sealed sub for the link. */
static char *
sub_link(const struct sesame_store_options *o, const char *base, const char *tenant,
         const char *provider, const char *sub, char subhash[65])
{
    keyed_hash(o, "sub", tenant, provider, strlen(provider), sub, subhash);
    char *aad = link_aad(base, subhash);
    char *sealed = seal(o, aad, sub, strlen(sub));
    free(aad);
    return sealed;
}

/* The personal data of a record, decrypted: a JSON object (new reference),
 * or NULL when it does not open or is not an object. An empty text is an
 * empty object (an account created at sign-in). */
static json_t *
open_data(const struct sesame_store_options *o, const char *base, const char *id,
          const char *text, size_t len)
{
    if (len == 0)
        return json_object();
    char *aad = data_aad(base, id);
    size_t n = 0;
    char *plain = unseal(o, aad, text, len, &n);
    free(aad);
    if (plain == NULL)
        return NULL;
    json_t *j = json_loadb(plain, n, JSON_REJECT_DUPLICATES, NULL);
    OPENSSL_cleanse(plain, n);
    free(plain);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
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
    if (!o->keys.set) {
        sesame_plugin_result_error(res, "redis accounts: no key_file");
        return SESAME_OK;
    }
    char homonym[65] = "", pivot[65] = "";
    if (o->match_pivot && !identity_hashes(o, id, homonym, pivot)) {
        homonym[0] = pivot[0] = '\0';
        if (log)
            log(SESAME_PLUGIN_LOG_DEBUG, "accounts redis: tenant %s: incomplete identité pivot, "
                "no pivot matching", id->tenant);
    }
    char newid[32];
    if (new_account_id(newid) != SESAME_OK) {
        sesame_plugin_result_error(res, "redis accounts: no randomness for a new account id");
        return SESAME_OK;
    }
    static const char *const policies[] = {"create", "link-only", "deny"};
    char *base = base_key(o, id->tenant);
    char subhash[65];
    char *sealed = sub_link(o, base, id->tenant, id->provider, id->sub, subhash);
    if (sealed == NULL) {
        free(base);
        sesame_plugin_result_error(res, "redis accounts: cannot seal the link");
        return SESAME_OK;
    }
    char *now = now_text();
    char check[33];
    key_check_value(o, id->tenant, check);
    const char *argv[] = {"EVAL", resolve_lua, "0", base, id->provider, subhash,
                          o->match_pivot ? "pivot" : "sub", homonym, pivot,
                          policies[o->policy], newid, now, sealed, check};
    char *err = NULL;
    redisReply *r = run(c, (int)SESAME_ARRAY_LEN(argv), argv, &err);
    free(now);
    free(sealed);
    if (r == NULL) {
        free(base);
        sesame_plugin_result_error(res, "redis accounts: %s", err);
        free(err);
        return c->err ? SESAME_ERROR : SESAME_OK;
    }
    json_t *data = NULL;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || !is_str(r->element[0]) ||
        !is_str(r->element[1]) || !is_str(r->element[2]) || !is_str(r->element[3])) {
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
    if (strcmp(kind, "wrongkey") == 0) {
        if (log)
            log(SESAME_PLUGIN_LOG_ERROR, "accounts redis: tenant %s: %s", id->tenant, key_mismatch);
        sesame_plugin_result_error(res, "redis accounts: %s", key_mismatch);
        goto done;
    }
    if (strcmp(kind, "found") != 0 && strcmp(kind, "linked") != 0 &&
        strcmp(kind, "created") != 0) {
        sesame_plugin_result_error(res, "redis accounts: unexpected reply to the resolve script");
        goto done;
    }
    if (!sesame_store_account_id_ok(acct)) {
        sesame_plugin_result_error(res, "redis accounts: malformed account id in the store");
        goto done;
    }
    data = open_data(o, base, acct, r->element[2]->str, r->element[2]->len);
    if (data == NULL) {
        sesame_plugin_result_error(res, "redis accounts: the account record does not open "
                                   "(another key_file?)");
        goto done;
    }
    if (sesame_plugin_result_found(res, acct) != 0)
        goto done;
    json_t *attrs = json_object_get(data, "attrs");
    if (attrs != NULL && (!json_is_object(attrs) || json_object_size(attrs) >
                                                        SESAME_PLUGIN_ATTRS_MAX)) {
        sesame_plugin_result_error(res, "redis accounts: account has more than %d attributes",
                                   SESAME_PLUGIN_ATTRS_MAX);
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(attrs, k, v) {
        if (!json_is_string(v) || sesame_plugin_result_attr(res, k, json_string_value(v)) != 0) {
            sesame_plugin_result_error(res, "redis accounts: malformed attribute in the account");
            goto done;
        }
    }
    /* what this call did, for the audit journal (plugin.h) */
    res->reason = strcmp(kind, "linked") == 0    ? SESAME_PLUGIN_REASON_LINKED
                  : strcmp(kind, "created") == 0 ? SESAME_PLUGIN_REASON_CREATED
                                                 : SESAME_PLUGIN_REASON_EXISTING;
    if (log && strcmp(kind, "linked") == 0)
        log(SESAME_PLUGIN_LOG_INFO, "accounts redis: tenant %s: identity of provider %s linked to "
            "a pre-registered account by identité pivot", id->tenant, id->provider);
    else if (log && strcmp(kind, "created") == 0)
        log(SESAME_PLUGIN_LOG_INFO, "accounts redis: tenant %s: account created for an identity "
            "of provider %s", id->tenant, id->provider);
done:
    json_decref(data);
    freeReplyObject(r);
    free(base);
    return SESAME_OK;
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

static int
two_digits(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

const char *
sesame_store_birthdate_problem(const char *date)
{
    if (date == NULL || strlen(date) != 10 || date[4] != '-' || date[7] != '-')
        return "not YYYY-MM-DD";
    for (size_t i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (date[i] < '0' || date[i] > '9'))
            return "not YYYY-MM-DD";
    int y = two_digits(date) * 100 + two_digits(date + 2);
    int m = two_digits(date + 5), d = two_digits(date + 8);
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    /* "00" stands for an unknown day, or an unknown month and day (INSEE,
     * FranceConnect); anything else must exist in the calendar. */
    if (m > 12 || (m == 0 && d != 0) ||
        (m > 0 && d > days[m - 1] + (m == 2 && leap ? 1 : 0)))
        return "not a calendar date";
    if (y < 1800)
        return "before 1800";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm) == NULL)
        return "cannot read today's date";
    long today = (tm.tm_year + 1900L) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
    if (y * 10000L + m * 100 + d > today)
        return "in the future";
    return NULL;
}

struct prepared {
    char *id;
    char homonym[65], pivot[65];
    char *data;   /* sealed personal data */
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

/* ARGV: base, homonym hash, pivot hash. Returns the id of the imported
 * account with that pivot, or ''. */
static const char find_person_lua[] =
    "for _, m in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'group:' .. ARGV[2])) do\n"
    "  if redis.call('HGET', ARGV[1] .. 'id:' .. m, 'pivot') == ARGV[3] then return m end\n"
    "end\n"
    "return ''\n";

/* The sealed JSON of an imported citizen's personal data and attributes. */
static char *
seal_import(const struct sesame_store_options *o, const char *base, const char *id,
            const struct sesame_store_import *r)
{
    char place[6] = "";
    for (size_t k = 0; k < 5 && r->birthplace[k]; k++) {
        char ch = r->birthplace[k];
        place[k] = (ch >= 'a' && ch <= 'z') ? (char)(ch - 'a' + 'A') : ch;
        place[k + 1] = '\0';
    }
    json_t *attrs = json_object();
    for (size_t a = 0; a < r->nattrs; a++)
        json_object_set_new(attrs, r->attrs[a].key, json_string(r->attrs[a].value));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "family_name", r->family_name,
                          "given_name", r->given_name, "birthdate", r->birthdate, "birthplace",
                          place, "birthcountry", r->birthcountry, "attrs", attrs);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return NULL;
    char *aad = data_aad(base, id);
    char *sealed = seal(o, aad, text, strlen(text));
    free(aad);
    free_secret(text);
    return sealed;
}

int
sesame_store_import(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                    const struct sesame_store_import *recs, size_t n, char **ids, char **err)
{
    if (!sesame_store_name_ok(tenant))
        return sesame_err_set(err, "tenant name malformed");
    if (sesame_store_options_check(o, err) != SESAME_OK)
        return SESAME_ERROR;
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
        pivot_hashes(o, tenant, key, prep[i].homonym, prep[i].pivot);
        free_secret(key);
        const char *why = sesame_store_birthdate_problem(r->birthdate);
        if (why != NULL) {
            append_line(&bad, r->line, "birthdate: %s", why);
            prep[i].pivot[0] = '\0';
            continue;
        }
        if (r->account_id != NULL) {
            if (!sesame_store_account_id_ok(r->account_id)) {
                append_line(&bad, r->line, "account_id: 1..%d of [A-Za-z0-9._~@:+-]",
                            SESAME_PLUGIN_ACCOUNT_ID_MAX);
                continue;
            }
            prep[i].id = sesame_strdup(r->account_id);
        } else {
            char tok[32];
            if (new_account_id(tok) != SESAME_OK) {
                append_line(&bad, r->line, "no randomness for an account id");
                continue;
            }
            prep[i].id = sesame_strdup(tok);
        }
        bool attrs_ok = r->nattrs <= IMPORT_MAX_ATTRS;
        if (!attrs_ok)
            append_line(&bad, r->line, "more than %d attributes", IMPORT_MAX_ATTRS);
        for (size_t a = 0; a < r->nattrs && a < IMPORT_MAX_ATTRS; a++) {
            const char *k = r->attrs[a].key, *v = r->attrs[a].value;
            if (!sesame_plugin_word_ok(k, SESAME_PLUGIN_ATTR_NAME_MAX, "_.-")) {
                append_line(&bad, r->line, "attribute #%zu: name must be 1..%d of "
                            "[A-Za-z0-9_.-]", a + 1, SESAME_PLUGIN_ATTR_NAME_MAX);
                attrs_ok = false;
            } else if (strlen(v) > SESAME_PLUGIN_ATTR_VALUE_MAX ||
                       !sesame_normalize_utf8_valid(v, strlen(v), false)) {
                append_line(&bad, r->line, "attribute %s: value longer than %d bytes or not "
                            "UTF-8 text", k, SESAME_PLUGIN_ATTR_VALUE_MAX);
                attrs_ok = false;
            }
            for (size_t b = 0; b < a; b++) {
                if (strcmp(r->attrs[b].key, k) == 0) {
                    append_line(&bad, r->line, "attribute %s given twice", k);
                    attrs_ok = false;
                }
            }
        }
        for (size_t j = 0; j < i; j++)
            if (prep[j].id != NULL && strcmp(prep[j].id, prep[i].id) == 0)
                append_line(&bad, r->line, "account_id %s already used on line %d", prep[i].id,
                            recs[j].line);
        for (size_t j = 0; j < i; j++) {
            if (prep[j].pivot[0] != '\0' && strcmp(prep[j].pivot, prep[i].pivot) == 0) {
                append_line(&bad, r->line, "the same person (names, birth date and place) as "
                            "line %d", recs[j].line);
                break;
            }
        }
        if (attrs_ok && bad == NULL && (prep[i].data = seal_import(o, base, prep[i].id, r)) == NULL)
            append_line(&bad, r->line, "cannot encrypt the record");
    }
    if (bad != NULL || check_key(c, o, tenant, true, err) != SESAME_OK)
        goto done;

    /* Guard every record key and homonym group, then check that no id and
     * no person exists yet. */
    for (size_t i = 0; i < n; i++) {
        char *rec = sesame_asprintf("%sid:%s", base, prep[i].id);
        char *group = sesame_asprintf("%sgroup:%s", base, prep[i].homonym);
        const char *watch[] = {"WATCH", rec, group};
        redisAppendCommandArgv(c, 3, watch, NULL);
        const char *exists[] = {"EXISTS", rec};
        redisAppendCommandArgv(c, 2, exists, NULL);
        const char *find[] = {"EVAL", find_person_lua, "0", base, prep[i].homonym,
                              prep[i].pivot};
        redisAppendCommandArgv(c, 6, find, NULL);
        free(group);
        free(rec);
    }
    bool read_failed = false;
    for (size_t i = 0; i < n; i++) {
        redisReply *ex = NULL, *who = NULL;
        int r1 = read_replies(c, 2, &ex, 1, err);
        int r2 = c->err ? SESAME_ERROR : read_replies(c, 1, &who, 0, err);
        if (r1 != SESAME_OK || r2 != SESAME_OK) {
            if (ex)
                freeReplyObject(ex);
            if (who)
                freeReplyObject(who);
            if (c->err)
                goto done;
            read_failed = true;
            continue;
        }
        if (ex->type != REDIS_REPLY_INTEGER || ex->integer != 0)
            append_line(&bad, recs[i].line, "account %s already exists", prep[i].id);
        else if (is_str(who) && who->len > 0)
            append_line(&bad, recs[i].line, "this person (names, birth date and place) is "
                        "already registered: account %s", who->str);
        freeReplyObject(ex);
        freeReplyObject(who);
    }
    if (read_failed)
        goto done_unwatch;
    if (bad != NULL)
        goto done_unwatch;

    char *now = now_text();
    redisAppendCommand(c, "MULTI");
    size_t queued = 1;
    for (size_t i = 0; i < n; i++) {
        char *rec = sesame_asprintf("%sid:%s", base, prep[i].id);
        const char *hset[] = {"HSET", rec, "id", prep[i].id, "created", now, "origin", "import",
                              "homonym", prep[i].homonym, "pivot", prep[i].pivot,
                              "data", prep[i].data};
        redisAppendCommandArgv(c, (int)SESAME_ARRAY_LEN(hset), hset, NULL);
        char *group = sesame_asprintf("%sgroup:%s", base, prep[i].homonym);
        const char *sadd[] = {"SADD", group, prep[i].id};
        redisAppendCommandArgv(c, 3, sadd, NULL);
        char *created = sesame_asprintf("%screated", base);
        const char *zadd[] = {"ZADD", created, now, prep[i].id};
        redisAppendCommandArgv(c, 4, zadd, NULL);
        queued += 3;
        free(created);
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
    for (size_t i = 0; i < n; i++) {
        free(prep[i].id);
        free(prep[i].data);
    }
    free(prep);
    free(base);
    return rc;
}

/* ---- administration ----------------------------------------------------- */

static void
kv_free(struct sesame_plugin_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free_secret((char *)kv[i].key);
        free_secret((char *)kv[i].value);
    }
    free(kv);
}

void
sesame_store_account_free(struct sesame_store_account *a)
{
    if (a == NULL)
        return;
    free(a->id);
    free(a->origin);
    kv_free(a->fields, a->nfields);
    kv_free(a->attrs, a->nattrs);
    for (size_t i = 0; i < a->nlinks; i++)
        free_secret(a->links[i]);
    free(a->links);
    memset(a, 0, sizeof(*a));
}

const char *
sesame_store_account_field(const struct sesame_store_account *a, const char *name)
{
    for (size_t i = 0; i < a->nfields; i++)
        if (strcmp(a->fields[i].key, name) == 0)
            return a->fields[i].value;
    return NULL;
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

static const char *
hash_get(const redisReply *h, const char *field, size_t *len)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        if (is_str(h->element[i]) && is_str(h->element[i + 1]) &&
            strcmp(h->element[i]->str, field) == 0) {
            if (len)
                *len = h->element[i + 1]->len;
            return h->element[i + 1]->str;
        }
    }
    return NULL;
}

static const char *const personal_fields[] = {"family_name", "given_name", "birthdate",
                                              "birthplace", "birthcountry"};

/* Fills a from the record hash, its links hash and its sign-in score. */
static int
decode_account(const struct sesame_store_options *o, const char *base, const char *id,
               const redisReply *rec, const redisReply *subs, const redisReply *signin,
               struct sesame_store_account *a, char **err)
{
    a->id = sesame_strdup(id);
    const char *origin = hash_get(rec, "origin", NULL);
    a->origin = sesame_strdup(origin ? origin : "");
    const char *t = hash_get(rec, "created", NULL);
    a->created = t ? strtoll(t, NULL, 10) : 0;
    t = hash_get(rec, "linked", NULL);
    a->linked = t ? strtoll(t, NULL, 10) : 0;
    a->last_signin = seconds_of(signin);
    size_t dlen = 0;
    const char *dtext = hash_get(rec, "data", &dlen);
    json_t *data = open_data(o, base, id, dtext ? dtext : "", dtext ? dlen : 0);
    if (data == NULL)
        return sesame_err_set(err, "account %s: the record does not open (another key_file?)", id);
    a->fields = sesame_calloc(SESAME_ARRAY_LEN(personal_fields) + 1, sizeof(*a->fields));
    for (size_t i = 0; i < SESAME_ARRAY_LEN(personal_fields); i++) {
        json_t *v = json_object_get(data, personal_fields[i]);
        if (!json_is_string(v))
            continue;
        a->fields[a->nfields].key = sesame_strdup(personal_fields[i]);
        a->fields[a->nfields].value = sesame_strdup(json_string_value(v));
        a->nfields++;
    }
    json_t *attrs = json_object_get(data, "attrs");
    a->attrs = sesame_calloc(json_object_size(attrs) + 1, sizeof(*a->attrs));
    const char *k;
    json_t *v;
    json_object_foreach(attrs, k, v) {
        if (!json_is_string(v))
            continue;
        a->attrs[a->nattrs].key = sesame_strdup(k);
        a->attrs[a->nattrs].value = sesame_strdup(json_string_value(v));
        a->nattrs++;
    }
    json_decref(data);
    a->links = sesame_calloc(subs->elements / 2 + 1, sizeof(char *));
    for (size_t i = 0; i + 1 < subs->elements; i += 2) {
        const redisReply *f = subs->element[i], *val = subs->element[i + 1];
        const char *colon = is_str(f) ? strchr(f->str, ':') : NULL;
        if (colon == NULL || !is_str(val))
            continue;
        char *aad = link_aad(base, colon + 1);
        size_t n = 0;
        char *sub = unseal(o, aad, val->str, val->len, &n);
        free(aad);
        if (sub == NULL)
            return sesame_err_set(err, "account %s: a link does not open (another key_file?)", id);
        a->links[a->nlinks++] = sesame_asprintf("%.*s:%s", (int)(colon - f->str), f->str, sub);
        free_secret(sub);
    }
    return SESAME_OK;
}

int
sesame_store_get(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                 const char *account_id, struct sesame_store_account *out, char **err)
{
    memset(out, 0, sizeof(*out));
    if (check_names(tenant, account_id, err) != SESAME_OK ||
        sesame_store_options_check(o, err) != SESAME_OK)
        return SESAME_ERROR;
    if (check_key(c, o, tenant, false, err) != SESAME_OK)
        return SESAME_ERROR;
    char *base = base_key(o, tenant);
    char *rec = sesame_asprintf("%sid:%s", base, account_id);
    char *subs = sesame_asprintf("%ssubs:%s", base, account_id);
    char *signin = sesame_asprintf("%ssignin", base);
    const char *a1[] = {"HGETALL", rec}, *a2[] = {"HGETALL", subs},
               *a3[] = {"ZSCORE", signin, account_id};
    redisReply *r1 = NULL, *r2 = NULL, *r3 = NULL;
    int rc = SESAME_ERROR;
    if ((r1 = run(c, 2, a1, err)) == NULL || (r2 = run(c, 2, a2, err)) == NULL ||
        (r3 = run(c, 3, a3, err)) == NULL)
        goto done;
    if (r1->type != REDIS_REPLY_ARRAY || r2->type != REDIS_REPLY_ARRAY) {
        sesame_err_set(err, "redis: unexpected reply type");
        goto done;
    }
    if (r1->elements == 0) {
        rc = SESAME_DECLINED;
        goto done;
    }
    rc = decode_account(o, base, account_id, r1, r2, r3, out, err);
    if (rc != SESAME_OK)
        sesame_store_account_free(out);
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
    free(signin);
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
sesame_store_session_hashes(redisContext *c, const char *session_prefix, const char *tenant,
                            const char *account_id, char ***hashes, size_t *n, char **err)
{
    *hashes = NULL;
    *n = 0;
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *idx = sesame_asprintf("%sa:%s:%s", session_prefix, tenant, account_id);
    const char *argv[] = {"SMEMBERS", idx};
    redisReply *r = run(c, 2, argv, err);
    free(idx);
    if (r == NULL)
        return SESAME_ERROR;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return sesame_err_set(err, "redis: unexpected reply type");
    }
    *hashes = sesame_calloc(r->elements + 1, sizeof(char *));
    for (size_t i = 0; i < r->elements; i++)
        if (is_str(r->element[i]))
            (*hashes)[(*n)++] = sesame_strdup(r->element[i]->str);
    freeReplyObject(r);
    return SESAME_OK;
}

int
sesame_store_find_sub(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                      const char *provider, const char *sub, char **account_id, char **err)
{
    *account_id = NULL;
    if (!sesame_store_name_ok(tenant) || !sesame_store_name_ok(provider) || !sub_ok(sub))
        return sesame_err_set(err, "tenant, provider or sub malformed");
    if (sesame_store_options_check(o, err) != SESAME_OK ||
        check_key(c, o, tenant, false, err) != SESAME_OK)
        return SESAME_ERROR;
    char subhash[65];
    keyed_hash(o, "sub", tenant, provider, strlen(provider), sub, subhash);
    char *key = sesame_asprintf("%sacct:%s:sub:%s", o->prefix, tenant, subhash);
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
    const char *argv[10];
    if (nargs > 7)
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

/* ARGV: base, id, sub hash, "PROVIDER:" sub hash, sealed sub, now. */
static const char link_lua[] =
    "local base, id, sh, field, sealed, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]\n"
    "local rec = base .. 'id:' .. id\n"
    "if redis.call('EXISTS', rec) == 0 then return -1 end\n"
    "local k = base .. 'sub:' .. sh\n"
    "local cur = redis.call('GET', k)\n"
    "if cur and cur ~= id and redis.call('EXISTS', base .. 'id:' .. cur) == 1 then return -2 end\n"
    "redis.call('SET', k, id)\n"
    "redis.call('HSET', base .. 'subs:' .. id, field, sealed)\n"
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
    if (sesame_store_options_check(o, err) != SESAME_OK ||
        check_key(c, o, tenant, true, err) != SESAME_OK)
        return SESAME_ERROR;
    char *base = base_key(o, tenant);
    char subhash[65];
    char *sealed = sub_link(o, base, tenant, provider, sub, subhash);
    if (sealed == NULL) {
        free(base);
        return sesame_err_set(err, "cannot seal the link");
    }
    char *field = sesame_asprintf("%s:%s", provider, subhash);
    char *now = now_text();
    const char *args[] = {base, account_id, subhash, field, sealed, now};
    long long v = 0;
    int rc = eval_int(c, link_lua, args, 6, &v, err);
    free(base);
    free(field);
    free(sealed);
    free(now);
    if (rc != SESAME_OK)
        return rc;
    if (v == -1)
        return SESAME_DECLINED;
    if (v == -2)
        return sesame_err_set(err, "this identity is already linked to another account");
    return SESAME_OK;
}

/* Lua: drops the sub index entries of account `id` listed in its links. */
#define DROP_LINKS_LUA                                                             \
    "local links = redis.call('HKEYS', base .. 'subs:' .. id)\n"                   \
    "for _, m in ipairs(links) do\n"                                               \
    "  local sh = string.match(m, '^[^:]*:(.*)$')\n"                               \
    "  if sh then\n"                                                               \
    "    local k = base .. 'sub:' .. sh\n"                                         \
    "    if redis.call('GET', k) == id then redis.call('DEL', k) end\n"            \
    "  end\n"                                                                      \
    "end\n"

static const char unlink_lua[] =
    "local base, id = ARGV[1], ARGV[2]\n"
    "if redis.call('EXISTS', base .. 'id:' .. id) == 0 then return -1 end\n"
    DROP_LINKS_LUA
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

/* ARGV: base, id, cutoff ('' for none). With a cutoff, an account with a
 * sign-in (or, never signed in, a creation) at or after it is kept: -1. */
static const char erase_lua[] =
    "local base, id, cutoff = ARGV[1], ARGV[2], ARGV[3]\n"
    "local rec = base .. 'id:' .. id\n"
    "local existed = redis.call('EXISTS', rec)\n"
    "if cutoff ~= '' then\n"
    "  if existed == 0 then return 0 end\n"
    "  local last = redis.call('ZSCORE', base .. 'signin', id) or\n"
    "               redis.call('ZSCORE', base .. 'created', id) or redis.call('HGET', rec, 'created')\n"
    "  if last and tonumber(last) >= tonumber(cutoff) then return -1 end\n"
    "end\n"
    DROP_LINKS_LUA
    "local h = redis.call('HGET', rec, 'homonym')\n"
    "if h then redis.call('SREM', base .. 'group:' .. h, id) end\n"
    "redis.call('DEL', rec, base .. 'subs:' .. id)\n"
    "redis.call('ZREM', base .. 'created', id)\n"
    "redis.call('ZREM', base .. 'signin', id)\n"
    "return existed\n";

static int
erase(redisContext *c, const struct sesame_store_options *o, const char *tenant,
      const char *account_id, const char *cutoff, long long *v, char **err)
{
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *base = base_key(o, tenant);
    const char *args[] = {base, account_id, cutoff};
    int rc = eval_int(c, erase_lua, args, 3, v, err);
    free(base);
    return rc;
}

int
sesame_store_erase(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                   const char *account_id, char **err)
{
    long long v = 0;
    if (erase(c, o, tenant, account_id, "", &v, err) != SESAME_OK)
        return SESAME_ERROR;
    return v == 1 ? SESAME_OK : SESAME_DECLINED;
}

int
sesame_store_erase_inactive(redisContext *c, const struct sesame_store_options *o,
                            const char *tenant, const char *account_id, int64_t cutoff,
                            char **err)
{
    char text[32];
    snprintf(text, sizeof(text), "%lld", (long long)cutoff);
    long long v = 0;
    if (erase(c, o, tenant, account_id, text, &v, err) != SESAME_OK)
        return SESAME_ERROR;
    return v == 1 ? SESAME_OK : SESAME_DECLINED;
}

/* The account's sessions (S a:T:ID), and every session of each territory
 * tree the account has a session in (S at:T:ID lists the trees, S a:@tree:TREE
 * their sessions: gateway/session/session.h), so that revoking a citizen of a
 * member commune signs them out of every commune of the territory. */
static const char revoke_lua[] =
    "local sp, idx, tidx = ARGV[1], ARGV[2], ARGV[3]\n"
    "local seen, n = {}, 0\n"
    "local function revoke(set)\n"
    "  for _, h in ipairs(redis.call('SMEMBERS', set)) do\n"
    "    if not seen[h] then\n"
    "      seen[h] = true\n"
    "      n = n + 1\n"
    "      redis.call('DEL', sp .. 's:' .. h)\n"
    "      redis.call('PUBLISH', sp .. 'revoked', h)\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', set)\n"
    "end\n"
    "revoke(idx)\n"
    "for _, t in ipairs(redis.call('SMEMBERS', tidx)) do\n"
    "  revoke(sp .. 'a:@tree:' .. t)\n"
    "end\n"
    "redis.call('DEL', tidx)\n"
    "return n\n";

int
sesame_store_revoke_sessions(redisContext *c, const char *session_prefix, const char *tenant,
                             const char *account_id, size_t *nsessions, char **err)
{
    *nsessions = 0;
    if (check_names(tenant, account_id, err) != SESAME_OK)
        return SESAME_ERROR;
    char *idx = sesame_asprintf("%sa:%s:%s", session_prefix, tenant, account_id);
    char *tidx = sesame_asprintf("%sat:%s:%s", session_prefix, tenant, account_id);
    const char *args[] = {session_prefix, idx, tidx};
    long long v = 0;
    int rc = eval_int(c, revoke_lua, args, 3, &v, err);
    free(idx);
    free(tidx);
    if (rc == SESAME_OK)
        *nsessions = (size_t)v;
    return rc;
}

/* ---- listing, search and retention -------------------------------------- */

void
sesame_store_entries_free(struct sesame_store_entry *e, size_t n)
{
    for (size_t i = 0; e != NULL && i < n; i++)
        free(e[i].id);
    free(e);
}

static int
entry_by_id(const void *a, const void *b)
{
    return strcmp(((const struct sesame_store_entry *)a)->id,
                  ((const struct sesame_store_entry *)b)->id);
}

static int
cmp_i64_desc(int64_t a, int64_t b)
{
    return a > b ? -1 : a < b ? 1 : 0;
}

static int
entry_by_signin(const void *pa, const void *pb)
{
    const struct sesame_store_entry *a = pa, *b = pb;
    if ((a->last_signin == 0) != (b->last_signin == 0))
        return a->last_signin == 0 ? 1 : -1;
    int c = cmp_i64_desc(a->last_signin, b->last_signin);
    if (c == 0)
        c = cmp_i64_desc(a->created, b->created);
    return c ? c : strcmp(a->id, b->id);
}

static int
entry_by_created(const void *pa, const void *pb)
{
    const struct sesame_store_entry *a = pa, *b = pb;
    int c = cmp_i64_desc(a->created, b->created);
    return c ? c : strcmp(a->id, b->id);
}

static int64_t
activity(const struct sesame_store_entry *e)
{
    return e->last_signin ? e->last_signin : e->created;
}

static int
entry_by_activity(const void *pa, const void *pb)
{
    const struct sesame_store_entry *a = pa, *b = pb;
    int c = -cmp_i64_desc(activity(a), activity(b));
    return c ? c : strcmp(a->id, b->id);
}

/* Every account of the tenant with its creation and last sign-in times,
 * sorted by id. */
static int
all_entries(redisContext *c, const struct sesame_store_options *o, const char *tenant,
            struct sesame_store_entry **out, size_t *n, char **err)
{
    *out = NULL;
    *n = 0;
    if (!sesame_store_name_ok(tenant))
        return sesame_err_set(err, "tenant name malformed");
    char *created = sesame_asprintf("%sacct:%s:created", o->prefix, tenant);
    char *signin = sesame_asprintf("%sacct:%s:signin", o->prefix, tenant);
    const char *a1[] = {"ZRANGE", created, "0", "-1", "WITHSCORES"};
    const char *a2[] = {"ZRANGE", signin, "0", "-1", "WITHSCORES"};
    redisReply *r1 = NULL, *r2 = NULL;
    int rc = SESAME_ERROR;
    struct sesame_store_entry *e = NULL, *s = NULL;
    size_t ne = 0, ns = 0;
    if ((r1 = run(c, 5, a1, err)) == NULL || (r2 = run(c, 5, a2, err)) == NULL)
        goto done;
    if (r1->type != REDIS_REPLY_ARRAY || r2->type != REDIS_REPLY_ARRAY) {
        sesame_err_set(err, "redis: unexpected reply type");
        goto done;
    }
    e = sesame_calloc(r1->elements / 2 + 1, sizeof(*e));
    for (size_t i = 0; i + 1 < r1->elements; i += 2) {
        if (!is_str(r1->element[i]) || !sesame_store_account_id_ok(r1->element[i]->str))
            continue;
        e[ne].id = sesame_strdup(r1->element[i]->str);
        e[ne].created = seconds_of(r1->element[i + 1]);
        ne++;
    }
    s = sesame_calloc(r2->elements / 2 + 1, sizeof(*s));
    for (size_t i = 0; i + 1 < r2->elements; i += 2) {
        if (!is_str(r2->element[i]))
            continue;
        s[ns].id = r2->element[i]->str; /* borrowed from r2 */
        s[ns].last_signin = seconds_of(r2->element[i + 1]);
        ns++;
    }
    if (ne > 1)
        qsort(e, ne, sizeof(*e), entry_by_id);
    if (ns > 1)
        qsort(s, ns, sizeof(*s), entry_by_id);
    for (size_t i = 0, j = 0; i < ne && j < ns;) {
        int cmp = strcmp(e[i].id, s[j].id);
        if (cmp == 0)
            e[i++].last_signin = s[j++].last_signin;
        else if (cmp < 0)
            i++;
        else
            j++;
    }
    *out = e;
    *n = ne;
    e = NULL;
    rc = SESAME_OK;
done:
    sesame_store_entries_free(e, ne);
    free(s);
    if (r1)
        freeReplyObject(r1);
    if (r2)
        freeReplyObject(r2);
    free(created);
    free(signin);
    return rc;
}

int
sesame_store_list(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                  enum sesame_store_order order, struct sesame_store_entry **out, size_t *n,
                  char **err)
{
    if (all_entries(c, o, tenant, out, n, err) != SESAME_OK)
        return SESAME_ERROR;
    if (*n > 1)
        qsort(*out, *n, sizeof(**out),
              order == SESAME_STORE_BY_CREATED ? entry_by_created : entry_by_signin);
    return SESAME_OK;
}

int
sesame_store_inactive(redisContext *c, const struct sesame_store_options *o,
                      const char *tenant, int64_t cutoff, struct sesame_store_entry **out,
                      size_t *n, char **err)
{
    if (all_entries(c, o, tenant, out, n, err) != SESAME_OK)
        return SESAME_ERROR;
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        if (activity(&(*out)[i]) < cutoff)
            (*out)[kept++] = (*out)[i];
        else
            free((*out)[i].id);
    }
    *n = kept;
    if (kept > 1)
        qsort(*out, kept, sizeof(**out), entry_by_activity);
    return SESAME_OK;
}

int
sesame_store_describe(redisContext *c, const struct sesame_store_options *o,
                      const char *tenant, struct sesame_store_entry *e, size_t n, char **err)
{
    if (!sesame_store_name_ok(tenant))
        return sesame_err_set(err, "tenant name malformed");
    char *base = base_key(o, tenant);
    for (size_t i = 0; i < n; i++) {
        char *rec = sesame_asprintf("%sid:%s", base, e[i].id);
        char *subs = sesame_asprintf("%ssubs:%s", base, e[i].id);
        const char *a1[] = {"HGET", rec, "origin"}, *a2[] = {"HLEN", subs};
        redisAppendCommandArgv(c, 3, a1, NULL);
        redisAppendCommandArgv(c, 2, a2, NULL);
        free(rec);
        free(subs);
    }
    free(base);
    int rc = SESAME_OK;
    for (size_t i = 0; i < n; i++) {
        redisReply *origin = NULL, *links = NULL;
        int r1 = read_replies(c, 1, &origin, 0, err);
        int r2 = c->err ? SESAME_ERROR : read_replies(c, 1, &links, 0, err);
        if (r1 != SESAME_OK || r2 != SESAME_OK) {
            if (origin)
                freeReplyObject(origin);
            if (links)
                freeReplyObject(links);
            rc = SESAME_ERROR;
            if (c->err)
                return rc;
            continue;
        }
        snprintf(e[i].origin, sizeof(e[i].origin), "%s", is_str(origin) ? origin->str : "");
        e[i].nlinks = links->type == REDIS_REPLY_INTEGER ? (size_t)links->integer : 0;
        freeReplyObject(origin);
        freeReplyObject(links);
    }
    return rc;
}

/* The words of a normalised name (split in place on spaces). */
static size_t
split_words(char *s, char **words, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *p = strtok_r(s, " ", &save); p != NULL && n < max; p = strtok_r(NULL, " ", &save))
        words[n++] = p;
    return n;
}

#define NAME_WORDS_MAX 64

/* True when every word of the query is a word of the record's names. */
static bool
names_match(char **query, size_t nquery, const char *family, const char *given)
{
    char *f = family ? sesame_normalize_name(family, strlen(family), NULL) : NULL;
    char *g = given ? sesame_normalize_name(given, strlen(given), NULL) : NULL;
    char *words[2 * NAME_WORDS_MAX];
    size_t n = 0;
    if (f != NULL)
        n += split_words(f, words, NAME_WORDS_MAX);
    if (g != NULL)
        n += split_words(g, words + n, NAME_WORDS_MAX);
    bool all = n > 0;
    for (size_t i = 0; i < nquery && all; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = strcmp(query[i], words[j]) == 0;
        all = found;
    }
    free_secret(f);
    free_secret(g);
    return all;
}

int
sesame_store_search(redisContext *c, const struct sesame_store_options *o, const char *tenant,
                    const char *name, const char *birthdate, char ***ids, size_t *nids,
                    char **err)
{
    *ids = NULL;
    *nids = 0;
    if (!sesame_store_name_ok(tenant))
        return sesame_err_set(err, "tenant name malformed");
    if (sesame_store_options_check(o, err) != SESAME_OK)
        return SESAME_ERROR;
    if (name == NULL && birthdate == NULL)
        return sesame_err_set(err, "search by name, by birthdate or both");
    if (birthdate != NULL) {
        const char *why = sesame_store_birthdate_problem(birthdate);
        if (why != NULL && strcmp(why, "not YYYY-MM-DD") == 0)
            return sesame_err_set(err, "birthdate: %s", why);
    }
    char *qnorm = NULL;
    char *query[NAME_WORDS_MAX];
    size_t nquery = 0;
    if (name != NULL) {
        char *e = NULL;
        qnorm = sesame_normalize_name(name, strlen(name), &e);
        if (qnorm == NULL) {
            sesame_err_set(err, "name: %s", e);
            free(e);
            return SESAME_ERROR;
        }
        nquery = split_words(qnorm, query, NAME_WORDS_MAX);
        if (nquery == 0) {
            free_secret(qnorm);
            return sesame_err_set(err, "name: no letters to search for");
        }
    }
    struct sesame_store_entry *e = NULL;
    size_t n = 0;
    if (check_key(c, o, tenant, false, err) != SESAME_OK ||
        sesame_store_list(c, o, tenant, SESAME_STORE_BY_CREATED, &e, &n, err) != SESAME_OK) {
        free_secret(qnorm);
        return SESAME_ERROR;
    }
    int rc = SESAME_OK;
    char *base = base_key(o, tenant);
    char **found = sesame_calloc(n + 1, sizeof(char *));
    size_t nfound = 0;
    for (size_t start = 0; start < n && rc == SESAME_OK; start += BATCH) {
        size_t end = start + BATCH < n ? start + BATCH : n;
        for (size_t i = start; i < end; i++) {
            char *rec = sesame_asprintf("%sid:%s", base, e[i].id);
            const char *argv[] = {"HGET", rec, "data"};
            redisAppendCommandArgv(c, 3, argv, NULL);
            free(rec);
        }
        for (size_t i = start; i < end; i++) {
            redisReply *r = NULL;
            if (read_replies(c, 1, &r, 0, err) != SESAME_OK) {
                rc = SESAME_ERROR;
                if (c->err)
                    break;
                continue;
            }
            if (rc == SESAME_OK && is_str(r) && r->len > 0) {
                json_t *data = open_data(o, base, e[i].id, r->str, r->len);
                if (data == NULL) {
                    rc = sesame_err_set(err, "account %s: the record does not open (another "
                                        "key_file?)", e[i].id);
                } else {
                    const char *bd = json_string_value(json_object_get(data, "birthdate"));
                    bool ok = birthdate == NULL || (bd != NULL && strcmp(bd, birthdate) == 0);
                    if (ok && nquery > 0)
                        ok = names_match(
                            query, nquery,
                            json_string_value(json_object_get(data, "family_name")),
                            json_string_value(json_object_get(data, "given_name")));
                    if (ok)
                        found[nfound++] = sesame_strdup(e[i].id);
                    json_decref(data);
                }
            }
            freeReplyObject(r);
        }
    }
    free(base);
    free_secret(qnorm);
    sesame_store_entries_free(e, n);
    if (rc != SESAME_OK) {
        for (size_t i = 0; i < nfound; i++)
            free(found[i]);
        free(found);
        return SESAME_ERROR;
    }
    *ids = found;
    *nids = nfound;
    return SESAME_OK;
}
