/*
 * audit.c - the audit journal: keys, line rendering, the locked append with
 * its hash chain and signed checkpoints, rotation, the daemon's queue and
 * writer thread, the tools' synchronous mode. The format and the rules are
 * in audit.h; verify.c reads what this file writes.
 */
#include "config.h"

#include "audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config/config.h"
#include "core/log.h"
#include "core/util.h"

#define BODY_MAX (32 * 1024)   /* a rendered event, escapes included */
#define TAIL_MAX (64 * 1024)   /* the longest last line read back */
#define KEY_FILE_MAX (16 * 1024)
#define BATCH 256              /* events the writer appends under one lock */

static const char zero_hash[SESAME_AUDIT_HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* ------------------------------------------------------------------------
 * Time and JSON helpers
 */

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
format_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

struct out {
    char *buf;
    size_t cap, len;
};

static void
put_raw(struct out *o, const char *s)
{
    size_t n = strlen(s);
    if (o->len + n + 1 < o->cap) {
        memcpy(o->buf + o->len, s, n);
        o->len += n;
    }
}

static void
put_str(struct out *o, const char *s)
{
    sesame_log_json_string(o->buf, o->cap - 1, &o->len, s, strnlen(s, SESAME_AUDIT_MAX_VALUE));
}

static void
put_field(struct out *o, const char *name, const char *value)
{
    if (value == NULL)
        return;
    if (o->len > 0)
        put_raw(o, ",");
    put_raw(o, "\"");
    put_raw(o, name);
    put_raw(o, "\":");
    put_str(o, value);
}

static bool
detail_key_ok(const char *k)
{
    if (k == NULL || k[0] == '\0' || strlen(k) > 32)
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

char *
sesame_audit_render(const struct sesame_audit_event *ev, int64_t time_ms)
{
    if (ev == NULL || ev->event == NULL || ev->event[0] == '\0')
        return NULL;
    char t[32];
    format_time(time_ms, t);
    struct out o = {sesame_malloc(BODY_MAX), BODY_MAX, 0};
    put_field(&o, "time", t);
    put_field(&o, "event", ev->event);
    put_field(&o, "tenant", ev->tenant);
    put_field(&o, "account", ev->account);
    put_field(&o, "provider", ev->provider);
    put_field(&o, "outcome", ev->outcome);
    put_field(&o, "reason", ev->reason);
    put_field(&o, "operator", ev->operator);
    put_field(&o, "client", ev->client);
    size_t n = ev->detail ? ev->ndetail : 0;
    if (n > SESAME_AUDIT_MAX_DETAIL)
        n = SESAME_AUDIT_MAX_DETAIL;
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sesame_audit_kv *kv = &ev->detail[i];
        if (!detail_key_ok(kv->key))
            continue;
        put_raw(&o, written++ == 0 ? ",\"detail\":{" : ",");
        put_str(&o, kv->key);
        put_raw(&o, ":");
        if (kv->str) {
            put_str(&o, kv->str);
        } else {
            char num[32];
            snprintf(num, sizeof(num), "%lld", kv->num);
            put_raw(&o, num);
        }
    }
    if (written > 0)
        put_raw(&o, "}");
    o.buf[o.len] = '\0';
    return sesame_realloc(o.buf, o.len + 1);
}

/* ------------------------------------------------------------------------
 * Keys
 */

struct sesame_audit_key {
    EVP_PKEY *pkey;
    bool eddsa;
    bool private;
    char kid[33];
};

static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Reads a small file (a key) into memory; NULL with *err. */
static char *
read_small(const char *path, size_t max, size_t *len, char **err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        sesame_err_set(err, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = sesame_malloc(max + 1);
    size_t n = fread(buf, 1, max + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || n > max) {
        OPENSSL_cleanse(buf, max + 1);
        free(buf);
        sesame_err_set(err, bad ? "cannot read %s" : "%s is too large for a key", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static struct sesame_audit_key *
key_from_pkey(EVP_PKEY *pk, bool priv, const char *path, char **err)
{
    bool eddsa = EVP_PKEY_is_a(pk, "ED25519");
    if (!eddsa) {
        char group[64] = "";
        size_t gl = 0;
        if (!EVP_PKEY_is_a(pk, "EC") ||
            !EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &gl) ||
            strcmp(group, "prime256v1") != 0) {
            EVP_PKEY_free(pk);
            sesame_err_set(err, "%s: not an EC P-256 (ES256) or Ed25519 key", path);
            return NULL;
        }
    }
    unsigned char *der = NULL;
    int dl = i2d_PUBKEY(pk, &der);
    if (dl <= 0) {
        EVP_PKEY_free(pk);
        sesame_err_set(err, "%s: cannot encode the public key", path);
        return NULL;
    }
    struct sesame_audit_key *k = sesame_calloc(1, sizeof(*k));
    unsigned char h[32];
    sesame_util_sha256(der, (size_t)dl, h);
    OPENSSL_free(der);
    sesame_util_hex(k->kid, h, 16);
    k->pkey = pk;
    k->eddsa = eddsa;
    k->private = priv;
    return k;
}

static struct sesame_audit_key *
key_load(const char *path, bool want_private, char **err)
{
    size_t len = 0;
    char *pem = read_small(path, KEY_FILE_MAX, &len, err);
    if (pem == NULL)
        return NULL;
    EVP_PKEY *pk = NULL;
    bool priv = false;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!want_private)
        pk = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    if (pk == NULL) {
        BIO_free(bio);
        bio = BIO_new_mem_buf(pem, (int)len);
        pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
        priv = pk != NULL;
    }
    BIO_free(bio);
    OPENSSL_cleanse(pem, len);
    free(pem);
    ERR_clear_error();
    if (pk == NULL) {
        sesame_err_set(err, "%s: no %s key in PEM form (an unencrypted \"PRIVATE KEY\"%s)", path,
                       want_private ? "private" : "public",
                       want_private ? "" : " or \"PUBLIC KEY\"");
        return NULL;
    }
    return key_from_pkey(pk, priv, path, err);
}

struct sesame_audit_key *
sesame_audit_key_load_private(const char *path, char **err)
{
    return key_load(path, true, err);
}

struct sesame_audit_key *
sesame_audit_key_load_public(const char *path, char **err)
{
    return key_load(path, false, err);
}

int
sesame_audit_key_check(const char *path, char **err)
{
    struct sesame_audit_key *k = sesame_audit_key_load_private(path, err);
    if (k == NULL)
        return SESAME_ERROR;
    sesame_audit_key_free(k);
    return SESAME_OK;
}

const char *
sesame_audit_key_alg(const struct sesame_audit_key *k)
{
    return k->eddsa ? "EdDSA" : "ES256";
}

const char *
sesame_audit_key_id(const struct sesame_audit_key *k)
{
    return k->kid;
}

char *
sesame_audit_key_public_pem(const struct sesame_audit_key *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (bio && PEM_write_bio_PUBKEY(bio, k->pkey) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0)
            out = sesame_strndup(data, (size_t)n);
    }
    BIO_free(bio);
    return out;
}

char *
sesame_audit_key_sign(const struct sesame_audit_key *k, const void *msg, size_t n)
{
    if (k == NULL || !k->private)
        return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char raw[64], der[160];
    char *out = NULL;
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, k->eddsa ? NULL : EVP_sha256(), NULL, k->pkey) != 1)
        goto done;
    if (k->eddsa) {
        size_t rl = sizeof(raw);
        if (EVP_DigestSign(ctx, raw, &rl, msg, n) != 1 || rl != sizeof(raw))
            goto done;
    } else {
        size_t dl = sizeof(der);
        if (EVP_DigestSign(ctx, der, &dl, msg, n) != 1)
            goto done;
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
        if (es == NULL)
            goto done;
        const BIGNUM *r = NULL, *s = NULL;
        ECDSA_SIG_get0(es, &r, &s);
        bool ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
        ECDSA_SIG_free(es);
        if (!ok)
            goto done;
    }
    out = sesame_malloc(sesame_util_b64url_len(sizeof(raw)) + 1);
    sesame_util_b64url_encode(out, raw, sizeof(raw));
done:
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return out;
}

bool
sesame_audit_key_verify(const struct sesame_audit_key *k, const void *msg, size_t n, const char *sig,
                        size_t siglen)
{
    unsigned char raw[70];
    if (k == NULL || sig == NULL || siglen != sesame_util_b64url_len(64) ||
        sesame_util_b64url_decode(raw, sig, siglen) != 64)
        return false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = false;
    if (ctx == NULL ||
        EVP_DigestVerifyInit(ctx, NULL, k->eddsa ? NULL : EVP_sha256(), NULL, k->pkey) != 1)
        goto done;
    if (k->eddsa) {
        ok = EVP_DigestVerify(ctx, raw, 64, msg, n) == 1;
    } else {
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
        if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            goto done;
        }
        unsigned char *der = NULL;
        int dl = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (dl > 0)
            ok = EVP_DigestVerify(ctx, der, (size_t)dl, msg, n) == 1;
        OPENSSL_free(der);
    }
done:
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

void
sesame_audit_key_free(struct sesame_audit_key *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

/* ------------------------------------------------------------------------
 * One journal
 */

struct sesame_audit_journal {
    char *path, *head_path, *pub_path, *program;
    struct sesame_audit_key *key;
    uint64_t cp_lines, cp_ms;
    bool syslog;
    int fd;                 /* the journal, -1: not open */
    dev_t dev;
    ino_t ino;
    int head_fd;            /* FILE.head, the lock every writer takes */
    uint64_t pending;       /* lines this process wrote since its last checkpoint */
    uint64_t last_cp_ms;    /* monotonic time of that checkpoint */
    bool opened_now;        /* the last lock wrote journal_opened */
    /* the end of the chain, valid while locked */
    uint64_t seq;
    char hash[SESAME_AUDIT_HASH_HEX + 1];
    bool last_cp;
};

static int
write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return SESAME_ERROR;
        }
        buf += w;
        len -= (size_t)w;
    }
    return SESAME_OK;
}

static int
lock_fd(int fd, int op)
{
    while (flock(fd, op) != 0) {
        if (errno != EINTR)
            return SESAME_ERROR;
    }
    return SESAME_OK;
}

static bool
is_hex64(const char *s, size_t n)
{
    if (n != SESAME_AUDIT_HASH_HEX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* FILE.head: "SEQ HASH\n". SESAME_DECLINED when empty (a new journal). */
static int
read_head(struct sesame_audit_journal *j, uint64_t *seq, char hash[SESAME_AUDIT_HASH_HEX + 1])
{
    char buf[128];
    ssize_t n;
    do {
        n = pread(j->head_fd, buf, sizeof(buf) - 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return SESAME_ERROR;
    if (n == 0)
        return SESAME_DECLINED;
    buf[n] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno != 0 || end == buf || *end != ' ' || !is_hex64(end + 1, strcspn(end + 1, "\n")) ||
        end[1 + SESAME_AUDIT_HASH_HEX] != '\n')
        return SESAME_ERROR;
    *seq = v;
    memcpy(hash, end + 1, SESAME_AUDIT_HASH_HEX);
    hash[SESAME_AUDIT_HASH_HEX] = '\0';
    return SESAME_OK;
}

static void
write_head(struct sesame_audit_journal *j)
{
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64 " %s\n", j->seq, j->hash);
    ssize_t w;
    do {
        w = pwrite(j->head_fd, buf, (size_t)n, 0);
    } while (w < 0 && errno == EINTR);
    if (w != n || ftruncate(j->head_fd, n) != 0)
        sesame_log_error("audit: cannot write %s: %s", j->head_path, strerror(errno));
}

struct tail {
    uint64_t seq;
    char hash[SESAME_AUDIT_HASH_HEX + 1];
    bool checkpoint;
};

static int
parse_tail_line(const char *s, size_t n, struct tail *t)
{
    json_t *o = json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
    int rc = SESAME_ERROR;
    if (o == NULL || !json_is_object(o))
        goto done;
    json_t *seq = json_object_get(o, "seq");
    const char *hash = json_string_value(json_object_get(o, "hash"));
    const char *event = json_string_value(json_object_get(o, "event"));
    if (!json_is_integer(seq) || json_integer_value(seq) < 1 || hash == NULL ||
        !is_hex64(hash, strlen(hash)) || event == NULL)
        goto done;
    t->seq = (uint64_t)json_integer_value(seq);
    memcpy(t->hash, hash, SESAME_AUDIT_HASH_HEX + 1);
    t->checkpoint = strcmp(event, "checkpoint") == 0;
    rc = SESAME_OK;
done:
    json_decref(o);
    return rc;
}

/* The last complete line of fd (size bytes). SESAME_DECLINED when there is
 * none; *torn when the file does not end with a line end. */
static int
read_tail(int fd, off_t size, const char *path, struct tail *t, bool *torn, char **err)
{
    *torn = false;
    size_t want = size > TAIL_MAX ? TAIL_MAX : (size_t)size;
    off_t off = size - (off_t)want;
    char *buf = sesame_malloc(want + 1);
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(fd, buf + got, want - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return sesame_err_set(err, "cannot read the end of %s: %s", path,
                                  r < 0 ? strerror(errno) : "shorter than its size");
        }
        got += (size_t)r;
    }
    size_t end = want;
    if (buf[end - 1] != '\n') {
        *torn = true;
        while (end > 0 && buf[end - 1] != '\n')
            end--;
    }
    int rc;
    if (end == 0) {
        rc = off > 0 ? sesame_err_set(err, "%s: its last line is longer than 64 KiB", path)
                     : SESAME_DECLINED;
    } else {
        size_t le = end - 1, ls = le;
        while (ls > 0 && buf[ls - 1] != '\n')
            ls--;
        if (ls == 0 && off > 0)
            rc = sesame_err_set(err, "%s: its last line is longer than 64 KiB", path);
        else if (parse_tail_line(buf + ls, le - ls, t) != SESAME_OK)
            rc = sesame_err_set(err, "%s: its last line is not a journal line", path);
        else
            rc = SESAME_OK;
    }
    free(buf);
    return rc;
}

/* Writes one line: {"seq":..., body, dropped, sig (checkpoints), prev, hash}. */
static int
write_line(struct sesame_audit_journal *j, const char *body, uint64_t dropped, bool checkpoint,
           char **err)
{
    size_t cap = strlen(body) + 512;
    char *buf = sesame_malloc(cap);
    uint64_t seq = j->seq + 1;
    size_t len = (size_t)snprintf(buf, cap, "{\"seq\":%" PRIu64 ",%s", seq, body);
    if (dropped > 0)
        len += (size_t)snprintf(buf + len, cap - len, ",\"dropped\":%" PRIu64, dropped);
    if (checkpoint) {
        /* signed: the line without its sig and hash fields */
        char end[96];
        int el = snprintf(end, sizeof(end), ",\"prev\":\"%s\"}", j->hash);
        char *msg = sesame_malloc(len + (size_t)el);
        memcpy(msg, buf, len);
        memcpy(msg + len, end, (size_t)el);
        char *sig = sesame_audit_key_sign(j->key, msg, len + (size_t)el);
        free(msg);
        if (sig == NULL) {
            free(buf);
            return sesame_err_set(err, "cannot sign a checkpoint with the audit key");
        }
        len += (size_t)snprintf(buf + len, cap - len, ",\"sig\":\"%s\"", sig);
        free(sig);
    }
    len += (size_t)snprintf(buf + len, cap - len, ",\"prev\":\"%s\"", j->hash);
    buf[len] = '}';
    unsigned char h[32];
    sesame_util_sha256(buf, len + 1, h);
    char hex[SESAME_AUDIT_HASH_HEX + 1];
    sesame_util_hex(hex, h, 32);
    len += (size_t)snprintf(buf + len, cap - len, ",\"hash\":\"%s\"}\n", hex);
    if (write_all(j->fd, buf, len) != SESAME_OK) {
        int e = errno;
        free(buf);
        return sesame_err_set(err, "cannot write %s: %s", j->path, strerror(e));
    }
    if (j->syslog)
        syslog(LOG_INFO, "%.*s", (int)(len - 1), buf);
    free(buf);
    j->seq = seq;
    memcpy(j->hash, hex, sizeof(hex));
    j->last_cp = checkpoint;
    if (checkpoint) {
        j->pending = 0;
        j->last_cp_ms = sesame_util_mono_ms();
    } else {
        j->pending++;
    }
    return SESAME_OK;
}

static int
write_event(struct sesame_audit_journal *j, const struct sesame_audit_event *ev, bool checkpoint,
            char **err)
{
    char *body = sesame_audit_render(ev, now_ms());
    int rc = write_line(j, body, 0, checkpoint, err);
    free(body);
    return rc;
}

static int
write_checkpoint(struct sesame_audit_journal *j, char **err)
{
    struct sesame_audit_kv kv[] = {{"alg", sesame_audit_key_alg(j->key), 0},
                                   {"kid", sesame_audit_key_id(j->key), 0}};
    struct sesame_audit_event ev = {.event = "checkpoint", .detail = kv, .ndetail = 2};
    return write_event(j, &ev, true, err);
}

static int
write_opened(struct sesame_audit_journal *j, char **err)
{
    struct sesame_audit_kv kv[] = {{"program", j->program, 0},
                                   {"version", PACKAGE_VERSION, 0},
                                   {"pid", NULL, (long long)getpid()},
                                   {"alg", sesame_audit_key_alg(j->key), 0},
                                   {"kid", sesame_audit_key_id(j->key), 0}};
    struct sesame_audit_event ev = {.event = "journal_opened", .detail = kv,
                                    .ndetail = SESAME_ARRAY_LEN(kv)};
    int rc = write_event(j, &ev, false, err);
    if (rc == SESAME_OK)
        j->opened_now = true;
    return rc;
}

/* The file this process holds was renamed (logrotate) or removed: ends it
 * with a checkpoint when it is still the end of the chain (FILE.head equal
 * to its last line), then closes it. The head lock is held. */
static void
seal_previous(struct sesame_audit_journal *j)
{
    if (lock_fd(j->fd, LOCK_EX) == SESAME_OK) {
        struct stat st;
        struct tail t;
        bool torn = false;
        uint64_t hs = 0;
        char hh[SESAME_AUDIT_HASH_HEX + 1];
        char *err = NULL;
        if (fstat(j->fd, &st) == 0 && st.st_size > 0 &&
            read_tail(j->fd, st.st_size, j->path, &t, &torn, &err) == SESAME_OK && !torn &&
            !t.checkpoint && read_head(j, &hs, hh) == SESAME_OK && hs == t.seq &&
            strcmp(hh, t.hash) == 0) {
            j->seq = t.seq;
            memcpy(j->hash, t.hash, sizeof(j->hash));
            j->last_cp = false;
            if (write_checkpoint(j, &err) == SESAME_OK)
                write_head(j);
        }
        if (err)
            sesame_log_error("audit: ending the rotated journal: %s", err);
        free(err);
        flock(j->fd, LOCK_UN);
    }
    close(j->fd);
    j->fd = -1;
}

/* Takes the locks and finds the end of the chain (see audit.h). */
static int
journal_lock(struct sesame_audit_journal *j, char **err)
{
    j->opened_now = false;
    if (lock_fd(j->head_fd, LOCK_EX) != SESAME_OK)
        return sesame_err_set(err, "cannot lock %s: %s", j->head_path, strerror(errno));
    struct stat ps;
    bool exists = stat(j->path, &ps) == 0;
    if (j->fd >= 0 && (!exists || ps.st_dev != j->dev || ps.st_ino != j->ino))
        seal_previous(j);
    if (j->fd < 0) {
        /* O_NOFOLLOW: a tool run as root never appends through a link planted
         * in the log directory */
        j->fd = open(j->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
        struct stat st;
        if (j->fd < 0 || fstat(j->fd, &st) != 0) {
            sesame_err_set(err, "cannot open %s: %s", j->path, strerror(errno));
            if (j->fd >= 0)
                close(j->fd);
            j->fd = -1;
            flock(j->head_fd, LOCK_UN);
            return SESAME_ERROR;
        }
        j->dev = st.st_dev;
        j->ino = st.st_ino;
    }
    struct stat st;
    if (lock_fd(j->fd, LOCK_EX) != SESAME_OK || fstat(j->fd, &st) != 0) {
        sesame_err_set(err, "cannot lock %s: %s", j->path, strerror(errno));
        flock(j->head_fd, LOCK_UN);
        return SESAME_ERROR;
    }
    struct tail t;
    bool torn = false;
    char *terr = NULL;
    int rc = st.st_size == 0 ? SESAME_DECLINED
                             : read_tail(j->fd, st.st_size, j->path, &t, &torn, &terr);
    if (torn) {
        sesame_log_error("audit: %s ended with an incomplete line (a crash, a full disk?): it "
                         "was ended there; sesame-audit verify will name it", j->path);
        if (write_all(j->fd, "\n", 1) != SESAME_OK)
            sesame_log_error("audit: cannot write %s: %s", j->path, strerror(errno));
    }
    if (rc == SESAME_OK) {
        j->seq = t.seq;
        memcpy(j->hash, t.hash, sizeof(j->hash));
        j->last_cp = t.checkpoint;
        return SESAME_OK;
    }
    if (rc == SESAME_ERROR)
        sesame_log_error("audit: %s; continuing the chain from %s", terr, j->head_path);
    free(terr);
    uint64_t hs = 0;
    char hh[SESAME_AUDIT_HASH_HEX + 1];
    int hr = read_head(j, &hs, hh);
    if (hr == SESAME_OK) {
        j->seq = hs;
        memcpy(j->hash, hh, sizeof(j->hash));
    } else if (hr == SESAME_DECLINED && rc == SESAME_DECLINED) {
        j->seq = 0; /* a new journal */
        memcpy(j->hash, zero_hash, sizeof(j->hash));
    } else {
        flock(j->fd, LOCK_UN);
        flock(j->head_fd, LOCK_UN);
        return sesame_err_set(err, "cannot continue the chain: neither the end of %s nor %s can "
                              "be read", j->path, j->head_path);
    }
    j->last_cp = false;
    if (rc == SESAME_DECLINED && write_opened(j, err) != SESAME_OK) {
        flock(j->fd, LOCK_UN);
        flock(j->head_fd, LOCK_UN);
        return SESAME_ERROR;
    }
    return SESAME_OK;
}

static void
journal_unlock(struct sesame_audit_journal *j)
{
    write_head(j);
    flock(j->fd, LOCK_UN);
    flock(j->head_fd, LOCK_UN);
}

/* Publishes the public key as FILE.pub; a different key already there is
 * kept as FILE.pub.KID. */
static int
publish_key(struct sesame_audit_journal *j, char **err)
{
    char *pem = sesame_audit_key_public_pem(j->key);
    if (pem == NULL)
        return sesame_err_set(err, "cannot export the audit public key");
    size_t len = 0;
    char *e = NULL;
    char *old = read_small(j->pub_path, KEY_FILE_MAX, &len, &e);
    free(e);
    e = NULL;
    int rc = SESAME_OK;
    if (old != NULL && strcmp(old, pem) == 0)
        goto done;
    if (old != NULL) {
        struct sesame_audit_key *ok = sesame_audit_key_load_public(j->pub_path, &e);
        free(e);
        if (ok != NULL) {
            char *keep = sesame_asprintf("%s.%s", j->pub_path, sesame_audit_key_id(ok));
            if (access(keep, F_OK) != 0 && rename(j->pub_path, keep) == 0)
                sesame_log_info("audit: the previous public key is kept as %s", keep);
            free(keep);
            sesame_audit_key_free(ok);
        }
    }
    char *tmp = sesame_asprintf("%s.tmp.%ld", j->pub_path, (long)getpid());
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 || write_all(fd, pem, strlen(pem)) != SESAME_OK || fsync(fd) != 0 ||
        rename(tmp, j->pub_path) != 0) {
        rc = sesame_err_set(err, "cannot write %s: %s", j->pub_path, strerror(errno));
        unlink(tmp);
    }
    if (fd >= 0)
        close(fd);
    free(tmp);
done:
    free(old);
    free(pem);
    return rc;
}

static void
journal_free(struct sesame_audit_journal *j)
{
    if (j->fd >= 0)
        close(j->fd);
    if (j->head_fd >= 0)
        close(j->head_fd);
    sesame_audit_key_free(j->key);
    free(j->path);
    free(j->head_path);
    free(j->pub_path);
    free(j->program);
    free(j);
}

struct sesame_audit_journal *
sesame_audit_journal_open(const struct sesame_audit_settings *s, bool announce, char **err)
{
    if (s->path == NULL || s->key_file == NULL) {
        sesame_err_set(err, "audit: a journal needs a file and a key");
        return NULL;
    }
    struct sesame_audit_journal *j = sesame_calloc(1, sizeof(*j));
    j->fd = j->head_fd = -1;
    j->path = sesame_strdup(s->path);
    j->head_path = sesame_asprintf("%s.head", s->path);
    j->pub_path = sesame_asprintf("%s.pub", s->path);
    j->program = sesame_strdup(s->program ? s->program : "sesame");
    j->cp_lines = s->checkpoint_lines;
    j->cp_ms = s->checkpoint_ms;
    if (j->cp_lines == 0 && j->cp_ms == 0)
        j->cp_lines = 1000;
    j->syslog = s->syslog;
    j->last_cp_ms = sesame_util_mono_ms();
    memcpy(j->hash, zero_hash, sizeof(j->hash));
    j->key = sesame_audit_key_load_private(s->key_file, err);
    if (j->key == NULL)
        goto fail;
    j->head_fd = open(j->head_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (j->head_fd < 0) {
        sesame_err_set(err, "cannot open %s: %s", j->head_path, strerror(errno));
        goto fail;
    }
    if (publish_key(j, err) != SESAME_OK)
        goto fail;
    if (j->syslog)
        openlog("sesame-audit", LOG_PID, LOG_AUTHPRIV);
    if (journal_lock(j, err) != SESAME_OK)
        goto fail;
    int rc = SESAME_OK;
    if (announce && !j->opened_now)
        rc = write_opened(j, err);
    journal_unlock(j);
    if (rc != SESAME_OK)
        goto fail;
    return j;
fail:
    journal_free(j);
    return NULL;
}

int
sesame_audit_journal_append(struct sesame_audit_journal *j, char *const *bodies, size_t n,
                            uint64_t dropped, size_t *written, char **err)
{
    *written = 0;
    if (journal_lock(j, err) != SESAME_OK)
        return SESAME_ERROR;
    int rc = SESAME_OK;
    for (size_t i = 0; i < n && rc == SESAME_OK; i++) {
        if (j->cp_lines > 0 && !j->last_cp && (j->seq + 1) % j->cp_lines == 0)
            rc = write_checkpoint(j, err);
        if (rc == SESAME_OK)
            rc = write_line(j, bodies[i], *written == 0 ? dropped : 0, false, err);
        if (rc == SESAME_OK)
            (*written)++;
    }
    journal_unlock(j);
    return rc;
}

int
sesame_audit_journal_checkpoint(struct sesame_audit_journal *j, char **err)
{
    if (journal_lock(j, err) != SESAME_OK)
        return SESAME_ERROR;
    int rc = j->last_cp ? SESAME_OK : write_checkpoint(j, err);
    journal_unlock(j);
    return rc;
}

int
sesame_audit_journal_reopen(struct sesame_audit_journal *j, char **err)
{
    /* the lock ends a rotated file and starts the new one; then the lines
     * pending in the current one are signed, so that it verifies now */
    return sesame_audit_journal_checkpoint(j, err);
}

uint64_t
sesame_audit_journal_pending(const struct sesame_audit_journal *j, uint64_t *last_ms)
{
    if (last_ms)
        *last_ms = j->last_cp_ms;
    return j->pending;
}

void
sesame_audit_journal_close(struct sesame_audit_journal *j)
{
    if (j == NULL)
        return;
    if (j->pending > 0) {
        char *err = NULL;
        if (sesame_audit_journal_checkpoint(j, &err) != SESAME_OK)
            sesame_log_error("audit: final checkpoint: %s", err);
        free(err);
    }
    journal_free(j);
}

/* ------------------------------------------------------------------------
 * The process-wide journal: the daemon's queue and writer, the tools' mode
 */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char **ring;
    size_t cap, first, count;
    uint64_t dropped;       /* events lost not yet written into a line */
    bool stopping, reopen;
    bool threaded;
    pthread_t thread;
    struct sesame_audit_journal *j;
    /* the settings it runs with, for the reload warning */
    char *path, *key_file;
    uint64_t cp_lines, cp_ms;
    bool syslog;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_bool audit_on;
static atomic_uint_fast64_t last_drop_log;

bool
sesame_audit_enabled(void)
{
    return atomic_load(&audit_on);
}

static void
log_rate_limited(uint64_t dropped, const char *what)
{
    uint64_t now = sesame_util_mono_ms();
    uint_fast64_t last = atomic_load(&last_drop_log);
    if ((last == 0 || now - last >= 1000) && atomic_compare_exchange_strong(&last_drop_log, &last, now))
        sesame_log_error("audit: %s: %" PRIu64 " event(s) not written yet; the count goes into the "
                         "next journal line", what, dropped);
}

static struct timespec
wait_deadline(void)
{
    uint64_t wait_ms = 1000;
    if (A.j && A.j->cp_lines == 0) {
        uint64_t last = 0;
        if (sesame_audit_journal_pending(A.j, &last) > 0) {
            uint64_t now = sesame_util_mono_ms(), due = last + A.j->cp_ms;
            wait_ms = due > now ? due - now : 0;
            if (wait_ms > 1000)
                wait_ms = 1000;
        }
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(wait_ms / 1000);
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *
writer_main(void *arg)
{
    (void)arg;
    char **batch = sesame_calloc(BATCH, sizeof(char *));
    pthread_mutex_lock(&A.mu);
    for (;;) {
        while (A.count == 0 && !A.stopping && !A.reopen) {
            struct timespec ts = wait_deadline();
            if (pthread_cond_timedwait(&A.cv, &A.mu, &ts) == ETIMEDOUT)
                break;
        }
        size_t n = 0;
        while (A.count > 0 && n < BATCH) {
            batch[n++] = A.ring[A.first];
            A.ring[A.first] = NULL;
            A.first = (A.first + 1) % A.cap;
            A.count--;
        }
        uint64_t dropped = n > 0 ? A.dropped : 0;
        if (n > 0)
            A.dropped = 0;
        bool reopen = A.reopen;
        A.reopen = false;
        bool stop = A.stopping && A.count == 0;
        pthread_mutex_unlock(&A.mu);

        char *err = NULL;
        if (reopen && sesame_audit_journal_reopen(A.j, &err) != SESAME_OK) {
            sesame_log_error("audit: reopen: %s", err);
            free(err);
            err = NULL;
        }
        if (n > 0) {
            size_t written = 0;
            if (sesame_audit_journal_append(A.j, batch, n, dropped, &written, &err) != SESAME_OK) {
                pthread_mutex_lock(&A.mu);
                A.dropped += (n - written) + (written > 0 ? 0 : dropped);
                uint64_t d = A.dropped;
                pthread_mutex_unlock(&A.mu);
                sesame_log_error("audit: %s", err);
                log_rate_limited(d, "journal not writable");
                free(err);
                err = NULL;
            }
            for (size_t i = 0; i < n; i++)
                free(batch[i]);
        }
        if (A.j->cp_lines == 0) {
            uint64_t last = 0;
            if (sesame_audit_journal_pending(A.j, &last) > 0 &&
                sesame_util_mono_ms() - last >= A.j->cp_ms &&
                sesame_audit_journal_checkpoint(A.j, &err) != SESAME_OK) {
                sesame_log_error("audit: checkpoint: %s", err);
                free(err);
                err = NULL;
            }
        }
        if (stop)
            break;
        pthread_mutex_lock(&A.mu);
    }
    free(batch);
    return NULL;
}

static void
remember_settings(const struct sesame_audit_settings *s)
{
    A.path = sesame_strdup(s->path);
    A.key_file = sesame_strdup(s->key_file);
    A.cp_lines = s->checkpoint_lines;
    A.cp_ms = s->checkpoint_ms;
    A.syslog = s->syslog;
}

int
sesame_audit_start_settings(const struct sesame_audit_settings *s, size_t queue, char **err)
{
    if (atomic_load(&audit_on))
        return sesame_err_set(err, "audit: already started");
    if (queue == 0)
        queue = 1;
    struct sesame_audit_journal *j = sesame_audit_journal_open(s, true, err);
    if (j == NULL)
        return SESAME_ERROR;
    pthread_mutex_lock(&A.mu);
    A.j = j;
    A.ring = sesame_calloc(queue, sizeof(char *));
    A.cap = queue;
    A.first = A.count = 0;
    A.dropped = 0;
    A.stopping = A.reopen = false;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&A.cv, &ca);
    pthread_condattr_destroy(&ca);
    /* the writer takes no signal: the main loop handles them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&A.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(A.ring);
        A.ring = NULL;
        A.j = NULL;
        pthread_cond_destroy(&A.cv);
        pthread_mutex_unlock(&A.mu);
        sesame_audit_journal_close(j);
        return sesame_err_set(err, "audit: cannot start the writer thread: %s", strerror(rc));
    }
    A.threaded = true;
    remember_settings(s);
    pthread_mutex_unlock(&A.mu);
    atomic_store(&audit_on, true);
    return SESAME_OK;
}

static struct sesame_audit_settings
settings_of(const struct sesame_conf *conf, const char *program)
{
    struct sesame_audit_settings s = {
        .path = conf->server.audit_log,
        .key_file = conf->server.audit_key_file,
        .checkpoint_lines = conf->server.audit_checkpoint_lines,
        .checkpoint_ms = conf->server.audit_checkpoint_ms,
        .syslog = conf->server.audit_syslog,
        .program = program,
    };
    return s;
}

int
sesame_audit_start(const struct sesame_conf *conf, char **err)
{
    if (conf->server.audit_log == NULL)
        return SESAME_OK;
    struct sesame_audit_settings s = settings_of(conf, "sesame");
    return sesame_audit_start_settings(&s, SESAME_AUDIT_QUEUE, err);
}

int
sesame_audit_open_tool(const struct sesame_conf *conf, const char *program, char **err)
{
    if (conf->server.audit_log == NULL || atomic_load(&audit_on))
        return SESAME_OK;
    struct sesame_audit_settings s = settings_of(conf, program);
    struct sesame_audit_journal *j = sesame_audit_journal_open(&s, false, err);
    if (j == NULL)
        return SESAME_ERROR;
    pthread_mutex_lock(&A.mu);
    A.j = j;
    A.threaded = false;
    A.dropped = 0;
    remember_settings(&s);
    pthread_mutex_unlock(&A.mu);
    atomic_store(&audit_on, true);
    return SESAME_OK;
}

int
sesame_audit_event(const struct sesame_audit_event *ev)
{
    if (!atomic_load(&audit_on))
        return SESAME_OK;
    char *body = sesame_audit_render(ev, now_ms());
    if (body == NULL)
        return SESAME_ERROR;
    int rc = SESAME_OK;
    uint64_t dropped = 0;
    pthread_mutex_lock(&A.mu);
    if (A.j == NULL) {
        rc = SESAME_ERROR;
    } else if (!A.threaded) {
        /* a tool: written now, by this thread */
        char *err = NULL;
        size_t written = 0;
        rc = sesame_audit_journal_append(A.j, &body, 1, A.dropped, &written, &err);
        if (written > 0)
            A.dropped = 0;
        else
            A.dropped++;
        if (rc != SESAME_OK)
            sesame_log_error("audit: %s", err);
        free(err);
    } else if (A.stopping || A.count == A.cap) {
        dropped = ++A.dropped;
        rc = SESAME_ERROR;
    } else {
        A.ring[(A.first + A.count) % A.cap] = body;
        A.count++;
        body = NULL;
        pthread_cond_signal(&A.cv);
    }
    pthread_mutex_unlock(&A.mu);
    free(body);
    if (dropped > 0)
        log_rate_limited(dropped, "queue full");
    return rc;
}

void
sesame_audit_reopen(void)
{
    if (!atomic_load(&audit_on))
        return;
    pthread_mutex_lock(&A.mu);
    if (A.threaded) {
        A.reopen = true;
        pthread_cond_signal(&A.cv);
    }
    pthread_mutex_unlock(&A.mu);
}

void
sesame_audit_stop(void)
{
    if (!atomic_load(&audit_on))
        return;
    pthread_mutex_lock(&A.mu);
    bool threaded = A.threaded;
    if (threaded) {
        A.stopping = true;
        pthread_cond_signal(&A.cv);
    }
    pthread_mutex_unlock(&A.mu);
    if (threaded)
        pthread_join(A.thread, NULL);
    pthread_mutex_lock(&A.mu);
    atomic_store(&audit_on, false);
    struct sesame_audit_journal *j = A.j;
    A.j = NULL;
    if (A.dropped > 0)
        sesame_log_error("audit: %" PRIu64 " event(s) could not be written before the journal "
                         "closed", A.dropped);
    for (size_t i = 0; A.ring && i < A.count; i++)
        free(A.ring[(A.first + i) % A.cap]);
    free(A.ring);
    A.ring = NULL;
    A.cap = A.first = A.count = 0;
    A.dropped = 0;
    if (threaded)
        pthread_cond_destroy(&A.cv);
    A.threaded = false;
    A.stopping = false;
    free(A.path);
    free(A.key_file);
    A.path = A.key_file = NULL;
    pthread_mutex_unlock(&A.mu);
    sesame_audit_journal_close(j);
}

/* ------------------------------------------------------------------------
 * Events of the configuration, the operator
 */

static bool
same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

void
sesame_audit_config_loaded(const struct sesame_conf *conf, const char *trigger)
{
    if (!atomic_load(&audit_on))
        return;
    const struct sesame_conf_server *s = &conf->server;
    if (strcmp(trigger, "reload") == 0 &&
        (!same_text(A.path, s->audit_log) || !same_text(A.key_file, s->audit_key_file) ||
         A.cp_lines != s->audit_checkpoint_lines || A.cp_ms != s->audit_checkpoint_ms ||
         A.syslog != s->audit_syslog))
        sesame_log_warn("reload: audit_log, audit_key_file, audit_checkpoint and audit_syslog "
                        "change only at restart (the journal %s stays in use)", A.path);
    struct sesame_audit_kv kv[] = {{"file", conf->path, 0},
                                   {"trigger", trigger, 0},
                                   {"tenants", NULL, (long long)conf->ntenants},
                                   {"routes", NULL, (long long)conf->nroutes}};
    struct sesame_audit_event ev = {.event = "config_loaded", .outcome = "success", .detail = kv,
                                    .ndetail = SESAME_ARRAY_LEN(kv)};
    sesame_audit_event(&ev);
}

void
sesame_audit_config_refused(const char *path, const char *errors, const char *trigger)
{
    if (!atomic_load(&audit_on))
        return;
    long long n = 0;
    for (const char *p = errors; p && *p;) {
        const char *nl = strchr(p, '\n');
        if ((nl ? nl : p + strlen(p)) > p)
            n++;
        p = nl ? nl + 1 : NULL;
    }
    struct sesame_audit_kv kv[] = {{"file", path, 0}, {"trigger", trigger, 0}, {"errors", NULL, n}};
    struct sesame_audit_event ev = {.event = "config_refused", .outcome = "refused",
                                    .reason = "invalid", .detail = kv,
                                    .ndetail = SESAME_ARRAY_LEN(kv)};
    sesame_audit_event(&ev);
}

static bool
user_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._-@$", c) != NULL))
            return false;
    }
    return true;
}

const char *
sesame_audit_operator(void)
{
    static char name[80];
    const char *sudo = getenv("SUDO_USER");
    if (user_name_ok(sudo)) {
        snprintf(name, sizeof(name), "%s", sudo);
        return name;
    }
    struct passwd pw, *res = NULL;
    char buf[2048];
    if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res != NULL &&
        user_name_ok(res->pw_name)) {
        snprintf(name, sizeof(name), "%s", res->pw_name);
        return name;
    }
    snprintf(name, sizeof(name), "uid:%u", (unsigned)getuid());
    return name;
}
