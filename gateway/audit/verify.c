/*
 * verify.c - offline verification of audit journals (sesame-audit verify)
 * and the filter of sesame-audit show. Reads what audit.c writes: the line
 * format and the chain rules are in audit.h.
 *
 * Verification streams the files in the order given, one line of lookahead:
 * each line must match its own hash, follow the previous line (seq + 1, prev
 * = its hash), each file must start with journal_opened, each checkpoint's
 * signature must hold with the key it names, and the last line must be a
 * checkpoint. The first failure is reported, naming the line:
 *   changed     the line does not match its hash (a byte changed), or the
 *               line before was rewritten with its hash recomputed
 *   removed     seq jumps: lines are missing before this line
 *   reordered   this line and the next are swapped, or seq goes backwards
 *   inserted    the next line continues from the line before this one
 *   bad signature, unsigned (lines after the last checkpoint), malformed.
 */
#include "audit/audit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/util.h"

#define MAX_LINE (1024 * 1024)
#define HKEY ",\"hash\":\""
#define PKEY ",\"prev\":\""
#define SKEY ",\"sig\":\""

struct vline {
    size_t file;
    uint64_t lineno;
    char *raw;
    size_t len;
    const char *why;       /* malformed: why (NULL: well formed) */
    bool hash_found;       /* it ends with a hash field */
    bool hash_ok;          /* which matches its bytes */
    uint64_t seq;
    char hash[SESAME_AUDIT_HASH_HEX + 1];
    char prev[SESAME_AUDIT_HASH_HEX + 1];
    char event[40];
    char time[32];
    char kid[40];
    bool checkpoint;
    uint64_t dropped;
    size_t hash_at, prev_at, sig_at, sig_len; /* byte offsets of the fields */
    bool has_sig;
};

static void
vline_clear(struct vline *v)
{
    free(v->raw);
    memset(v, 0, sizeof(*v));
}

static bool
hex64(const char *s)
{
    for (int i = 0; i < SESAME_AUDIT_HASH_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool
b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static void
copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* Splits the line into its fields; sets v->why when it is not a journal line. */
static void
parse_vline(struct vline *v)
{
    const char *s = v->raw;
    size_t n = v->len;
    size_t hl = strlen(HKEY), pl = strlen(PKEY), sl = strlen(SKEY);
    if (n < 8 + pl + 65 + hl + 66 || memcmp(s, "{\"seq\":", 7) != 0 ||
        memcmp(s + n - 2, "\"}", 2) != 0) {
        v->why = "not a journal line";
        return;
    }
    v->hash_at = n - 2 - SESAME_AUDIT_HASH_HEX - hl;
    if (memcmp(s + v->hash_at, HKEY, hl) != 0 || !hex64(s + v->hash_at + hl)) {
        v->why = "no hash field at the end of the line";
        return;
    }
    memcpy(v->hash, s + v->hash_at + hl, SESAME_AUDIT_HASH_HEX);
    v->hash_found = true;
    /* its own hash: the bytes before the hash field, then '}' */
    char *content = sesame_malloc(v->hash_at + 1);
    memcpy(content, s, v->hash_at);
    content[v->hash_at] = '}';
    unsigned char h[32];
    char hex[SESAME_AUDIT_HASH_HEX + 1];
    sesame_util_sha256(content, v->hash_at + 1, h);
    free(content);
    sesame_util_hex(hex, h, 32);
    v->hash_ok = strcmp(hex, v->hash) == 0;
    if (v->hash_at < pl + SESAME_AUDIT_HASH_HEX + 1 || s[v->hash_at - 1] != '"') {
        v->why = "no prev field before the hash";
        return;
    }
    v->prev_at = v->hash_at - 1 - SESAME_AUDIT_HASH_HEX - pl;
    if (memcmp(s + v->prev_at, PKEY, pl) != 0 || !hex64(s + v->prev_at + pl)) {
        v->why = "no prev field before the hash";
        return;
    }
    memcpy(v->prev, s + v->prev_at + pl, SESAME_AUDIT_HASH_HEX);
    /* a sig field right before prev (checkpoints) */
    if (v->prev_at > sl && s[v->prev_at - 1] == '"') {
        size_t e = v->prev_at - 1, b = e;
        while (b > 0 && b64url_char(s[b - 1]))
            b--;
        if (b >= sl && memcmp(s + b - sl, SKEY, sl) == 0) {
            v->has_sig = true;
            v->sig_at = b - sl;
            v->sig_len = e - b;
        }
    }
    json_error_t je;
    json_t *o = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        v->why = "not a JSON object";
        return;
    }
    json_t *seq = json_object_get(o, "seq");
    const char *event = json_string_value(json_object_get(o, "event"));
    const char *time = json_string_value(json_object_get(o, "time"));
    const char *hash = json_string_value(json_object_get(o, "hash"));
    const char *prev = json_string_value(json_object_get(o, "prev"));
    json_t *sig = json_object_get(o, "sig");
    json_t *dropped = json_object_get(o, "dropped");
    if (!json_is_integer(seq) || json_integer_value(seq) < 1 || event == NULL || event[0] == '\0' ||
        strlen(event) >= sizeof(v->event) || time == NULL || hash == NULL ||
        strcmp(hash, v->hash) != 0 || prev == NULL || strcmp(prev, v->prev) != 0 ||
        (sig != NULL) != v->has_sig || (dropped != NULL && !json_is_integer(dropped))) {
        json_decref(o);
        v->why = "a field is missing or of the wrong type";
        return;
    }
    v->seq = (uint64_t)json_integer_value(seq);
    copy_str(v->event, sizeof(v->event), event);
    copy_str(v->time, sizeof(v->time), time);
    v->dropped = dropped ? (uint64_t)json_integer_value(dropped) : 0;
    v->checkpoint = strcmp(event, "checkpoint") == 0;
    if (v->checkpoint) {
        const char *kid = json_string_value(json_object_get(json_object_get(o, "detail"), "kid"));
        if (!v->has_sig || kid == NULL || strlen(kid) >= sizeof(v->kid)) {
            json_decref(o);
            v->why = "a checkpoint without its signature or key id";
            return;
        }
        copy_str(v->kid, sizeof(v->kid), kid);
    } else if (v->has_sig) {
        json_decref(o);
        v->why = "a signature on a line that is not a checkpoint";
        return;
    }
    json_decref(o);
}

/* The lines of every file, in order. */
struct reader {
    const char *const *files;
    size_t nfiles, cur;
    FILE *f;
    uint64_t lineno;
};

/* 1: a line in v; 0: the end; -1: an error (out->error set). */
static int
reader_next(struct reader *r, struct vline *v, struct sesame_audit_verify *out)
{
    for (;;) {
        if (r->f == NULL) {
            if (r->cur >= r->nfiles)
                return 0;
            r->f = fopen(r->files[r->cur], "rb");
            if (r->f == NULL) {
                out->error = sesame_asprintf("%s: %s", r->files[r->cur], strerror(errno));
                out->bad_file = r->cur;
                return -1;
            }
            r->lineno = 0;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, r->f);
        if (n < 0) {
            free(line);
            bool bad = ferror(r->f) != 0;
            fclose(r->f);
            r->f = NULL;
            if (bad || r->lineno == 0) {
                out->error = sesame_asprintf("%s: %s", r->files[r->cur],
                                             bad ? "read error" : "empty: not a journal");
                out->bad_file = r->cur;
                return -1;
            }
            r->cur++;
            continue;
        }
        r->lineno++;
        memset(v, 0, sizeof(*v));
        v->file = r->cur;
        v->lineno = r->lineno;
        v->raw = line;
        bool ended = n > 0 && line[n - 1] == '\n';
        v->len = ended ? (size_t)n - 1 : (size_t)n;
        if (!ended)
            v->why = "an incomplete line (no line end): the file was cut";
        else if (v->len > MAX_LINE || memchr(line, '\0', v->len) != NULL)
            v->why = "not a journal line";
        else
            parse_vline(v);
        return 1;
    }
}

static void
reader_close(struct reader *r)
{
    if (r->f)
        fclose(r->f);
    r->f = NULL;
}

static int SESAME_PRINTF(5, 6)
fail(struct sesame_audit_verify *out, const char *const *files, size_t file, uint64_t line,
     const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    out->error = sesame_asprintf("%s:%" PRIu64 ": %s", files[file], line, msg);
    out->bad_file = file;
    out->bad_line = line;
    return SESAME_ERROR;
}

static const struct sesame_audit_key *
find_key(struct sesame_audit_key *const *keys, size_t n, const char *kid)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(sesame_audit_key_id(keys[i]), kid) == 0)
            return keys[i];
    return NULL;
}

static bool
signature_ok(const struct sesame_audit_key *k, const struct vline *v)
{
    /* signed: the line without its sig and hash fields */
    size_t head = v->sig_at, mid = v->hash_at - v->prev_at;
    char *msg = sesame_malloc(head + mid + 1);
    memcpy(msg, v->raw, head);
    memcpy(msg + head, v->raw + v->prev_at, mid);
    msg[head + mid] = '}';
    bool ok = sesame_audit_key_verify(k, msg, head + mid + 1, v->raw + v->sig_at + strlen(SKEY),
                                      v->sig_len);
    free(msg);
    return ok;
}

/* Checks x, which follows a (NULL: x is the first line read), with n the
 * line after x (NULL: none). */
static int
check_line(struct sesame_audit_verify *out, const char *const *files, const struct vline *a,
           const struct vline *x, const struct vline *n)
{
    if (!x->hash_found)
        return fail(out, files, x->file, x->lineno, "malformed: %s", x->why);
    if (!x->hash_ok)
        return fail(out, files, x->file, x->lineno,
                    "changed: the line does not match its hash (it was modified)");
    if (x->why)
        return fail(out, files, x->file, x->lineno, "malformed: %s", x->why);
    if (x->lineno == 1 && strcmp(x->event, "journal_opened") != 0)
        return fail(out, files, x->file, x->lineno,
                    "removed: the file does not start with journal_opened (lines were removed "
                    "from its start)");
    if (a == NULL || (x->seq == a->seq + 1 && strcmp(x->prev, a->hash) == 0))
        return SESAME_OK;
    if (x->len == a->len && memcmp(x->raw, a->raw, x->len) == 0)
        return fail(out, files, x->file, x->lineno, "inserted: a copy of the line before it");
    if (x->seq == a->seq && strcmp(x->prev, a->prev) == 0)
        return fail(out, files, a->file, a->lineno,
                    "inserted: this line is not part of the chain (the next line continues "
                    "from the line before it)");
    if (n && !n->why && n->hash_ok && n->seq == a->seq + 1 && strcmp(n->prev, a->hash) == 0) {
        if (x->seq == a->seq + 2 && strcmp(x->prev, n->hash) == 0)
            return fail(out, files, x->file, x->lineno,
                        "reordered: this line (seq %" PRIu64 ") and the next (seq %" PRIu64
                        ") are swapped", x->seq, n->seq);
        return fail(out, files, x->file, x->lineno,
                    "inserted: this line is not part of the chain (the next line continues "
                    "from the line before it)");
    }
    if (x->lineno == 1)
        return fail(out, files, x->file, x->lineno,
                    "removed: this file does not continue %s (which ends at seq %" PRIu64
                    "): a file is missing between them, or they are given out of order",
                    files[a->file], a->seq);
    if (x->seq > a->seq + 1)
        return fail(out, files, x->file, x->lineno,
                    "removed: %" PRIu64 " line(s) missing before this line (seq %" PRIu64
                    " follows seq %" PRIu64 ")", x->seq - a->seq - 1, x->seq, a->seq);
    if (x->seq <= a->seq)
        return fail(out, files, x->file, x->lineno,
                    "reordered or inserted: seq %" PRIu64 " follows seq %" PRIu64, x->seq,
                    a->seq);
    return fail(out, files, a->file, a->lineno,
                "changed: the line was rewritten with its hash recomputed (line %" PRIu64
                " does not chain to it)", x->lineno);
}

static int
load_keys(const char *const *paths, size_t n, struct sesame_audit_key ***keys,
          struct sesame_audit_verify *out)
{
    *keys = sesame_calloc(n + 1, sizeof(**keys));
    for (size_t i = 0; i < n; i++) {
        char *err = NULL;
        (*keys)[i] = sesame_audit_key_load_public(paths[i], &err);
        if ((*keys)[i] == NULL) {
            out->error = err;
            return SESAME_ERROR;
        }
    }
    if (n == 0) {
        out->error = sesame_strdup("no public key: give --key FILE.pub");
        return SESAME_ERROR;
    }
    return SESAME_OK;
}

int
sesame_audit_verify_files(const char *const *files, size_t nfiles, const char *const *keypaths,
                          size_t nkeys, struct sesame_audit_verify *out)
{
    memset(out, 0, sizeof(*out));
    struct sesame_audit_key **keys = NULL;
    int rc = load_keys(keypaths, nkeys, &keys, out);
    struct reader r = {files, nfiles, 0, NULL, 0};
    struct vline a = {0}, x = {0}, n = {0};
    bool have_a = false, have_x = false, have_n = false;
    uint64_t unsigned_lines = 0, us_line = 0;
    size_t us_file = 0;
    if (rc != SESAME_OK)
        goto done;
    if (nfiles == 0) {
        out->error = sesame_strdup("no journal file given");
        rc = SESAME_ERROR;
        goto done;
    }
    int got = reader_next(&r, &x, out);
    if (got < 0) {
        rc = SESAME_ERROR;
        goto done;
    }
    have_x = got > 0;
    while (have_x) {
        got = reader_next(&r, &n, out);
        if (got < 0) {
            rc = SESAME_ERROR;
            goto done;
        }
        have_n = got > 0;
        rc = check_line(out, files, have_a ? &a : NULL, &x, have_n ? &n : NULL);
        if (rc != SESAME_OK)
            goto done;
        if (!have_a) {
            out->first_seq = x.seq;
            out->from_start = x.seq == 1 && hex64(x.prev) &&
                              strspn(x.prev, "0") == SESAME_AUDIT_HASH_HEX;
        }
        if (x.checkpoint) {
            const struct sesame_audit_key *k = find_key(keys, nkeys, x.kid);
            if (k == NULL) {
                rc = fail(out, files, x.file, x.lineno,
                          "bad signature: signed with key %s, which no --key gives", x.kid);
                goto done;
            }
            if (!signature_ok(k, &x)) {
                rc = fail(out, files, x.file, x.lineno,
                          "bad signature: this checkpoint was not signed by key %s", x.kid);
                goto done;
            }
            out->checkpoints++;
            unsigned_lines = 0;
            copy_str(out->last_checkpoint_time, sizeof(out->last_checkpoint_time), x.time);
        } else {
            if (unsigned_lines++ == 0) {
                us_file = x.file;
                us_line = x.lineno;
            }
        }
        out->lines++;
        out->dropped += x.dropped;
        out->last_seq = x.seq;
        vline_clear(&a);
        a = x;
        have_a = true;
        x = n;
        memset(&n, 0, sizeof(n));
        have_x = have_n;
        have_n = false;
    }
    if (unsigned_lines > 0)
        rc = fail(out, files, us_file, us_line,
                  "unsigned: this line and the %" PRIu64 " after it are covered by no checkpoint "
                  "signature (the last checkpoint was removed, or the journal is still being "
                  "written: the daemon signs every audit_checkpoint, at rotation, on SIGUSR1 and "
                  "at stop)",
                  unsigned_lines - 1);
done:
    reader_close(&r);
    vline_clear(&a);
    vline_clear(&x);
    vline_clear(&n);
    for (size_t i = 0; keys && i < nkeys; i++)
        sesame_audit_key_free(keys[i]);
    free(keys);
    return rc;
}

void
sesame_audit_verify_clear(struct sesame_audit_verify *v)
{
    if (v == NULL)
        return;
    free(v->error);
    memset(v, 0, sizeof(*v));
}

/* ------------------------------------------------------------------------
 * show
 */

bool
sesame_audit_date_ok(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddd";
    if (s == NULL)
        return false;
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == 'Z')
        n--;
    if (n != 10 && n != 16 && n != 19 && n != 23)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

/* Compares the time t with the date d at d's precision. */
static int
cmp_date(const char *t, const char *d)
{
    size_t n = strlen(d);
    if (n > 0 && d[n - 1] == 'Z')
        n--;
    return strncmp(t, d, n);
}

static bool
field_is(json_t *o, const char *name, const char *want)
{
    if (want == NULL)
        return true;
    const char *v = json_string_value(json_object_get(o, name));
    return v != NULL && strcmp(v, want) == 0;
}

bool
sesame_audit_filter_match(const struct sesame_audit_filter *f, const char *line, size_t len)
{
    json_t *o = json_loadb(line, len, 0, NULL);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return false;
    }
    bool ok = field_is(o, "account", f->account) && field_is(o, "tenant", f->tenant) &&
              field_is(o, "event", f->event);
    const char *t = json_string_value(json_object_get(o, "time"));
    if (ok && (f->since || f->until)) {
        ok = t != NULL && (f->since == NULL || cmp_date(t, f->since) >= 0) &&
             (f->until == NULL || cmp_date(t, f->until) <= 0);
    }
    json_decref(o);
    return ok;
}
