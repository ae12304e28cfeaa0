/*
 * test_audit.c - the audit journal: rendering, the hash chain and its
 * checkpoints (ES256 and Ed25519), tamper detection (a byte changed, a line
 * removed, two lines swapped, a line inserted, the last checkpoint removed,
 * a line rewritten with the chain recomputed), rotation (by the daemon and
 * by another writer), several writers, the daemon's queue (threads, drops
 * counted, time checkpoints), keys, configuration keys, show's filter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit/audit.h"
#include "config/config.h"
#include "core/util.h"

static char tmpdir[] = "/tmp/sesame-audit-XXXXXX";
static char es_key[600], ed_key[600], es_pub[600], ed_pub[600];
static int counter;

static char *
path_of(const char *name)
{
    return sesame_asprintf("%s/%s", tmpdir, name);
}

/* A fresh journal path for each test. */
static char *
new_journal(void)
{
    char name[64];
    snprintf(name, sizeof(name), "j%d/audit.log", ++counter);
    char *dir = sesame_asprintf("%s/j%d", tmpdir, counter);
    assert_int_equal(mkdir(dir, 0700), 0);
    free(dir);
    return path_of(name);
}

static void
write_key(EVP_PKEY *pk, const char *priv, const char *pub)
{
    FILE *f = fopen(priv, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    chmod(priv, 0600);
    if (pub) {
        f = fopen(pub, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_PUBKEY(f, pk), 1);
        fclose(f);
    }
}

static int
setup(void **state)
{
    (void)state;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(es_key, sizeof(es_key), "%s/es.pem", tmpdir);
    snprintf(es_pub, sizeof(es_pub), "%s/es.pub", tmpdir);
    snprintf(ed_key, sizeof(ed_key), "%s/ed.pem", tmpdir);
    snprintf(ed_pub, sizeof(ed_pub), "%s/ed.pub", tmpdir);
    EVP_PKEY *es = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (es == NULL || ed == NULL)
        return -1;
    write_key(es, es_key, es_pub);
    write_key(ed, ed_key, ed_pub);
    EVP_PKEY_free(es);
    EVP_PKEY_free(ed);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- file helpers ---------------------------------------------------- */

struct lines {
    char **v;
    size_t n;
};

static struct lines
read_lines(const char *path)
{
    struct lines l = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        l.v = sesame_realloc(l.v, (l.n + 1) * sizeof(char *));
        l.v[l.n++] = sesame_strdup(line);
    }
    free(line);
    fclose(f);
    return l;
}

static void
write_lines(const char *path, const struct lines *l)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < l->n; i++)
        fputs(l->v[i], f);
    fclose(f);
}

static void
lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static struct sesame_audit_settings
settings(const char *path, const char *key, uint64_t every)
{
    struct sesame_audit_settings s = {.path = path, .key_file = key, .checkpoint_lines = every,
                                      .program = "test"};
    return s;
}

static char *
body(int i)
{
    char acct[32];
    snprintf(acct, sizeof(acct), "acct-%03d", i);
    struct sesame_audit_kv kv[] = {{"acr", "eidas1", 0}};
    struct sesame_audit_event ev = {.event = "signin", .tenant = "ville-a", .account = acct,
                                    .provider = "franceconnect", .outcome = "success",
                                    .detail = kv, .ndetail = 1};
    return sesame_audit_render(&ev, 1796407200123LL + i);
}

static void
append_n(struct sesame_audit_journal *j, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char *b = body(i), *err = NULL;
        size_t w = 0;
        int rc = sesame_audit_journal_append(j, &b, 1, 0, &w, &err);
        if (rc != SESAME_OK)
            fprintf(stderr, "%s\n", err);
        assert_int_equal(rc, SESAME_OK);
        assert_int_equal(w, 1);
        free(b);
    }
}

/* A closed journal: journal_opened, n events, checkpoints every `every`. */
static char *
make_journal(const char *key, uint64_t every, int n)
{
    char *path = new_journal(), *err = NULL;
    struct sesame_audit_settings s = settings(path, key, every);
    struct sesame_audit_journal *j = sesame_audit_journal_open(&s, true, &err);
    if (j == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(j);
    append_n(j, 0, n);
    sesame_audit_journal_close(j);
    return path;
}

/* Verifies the files with key; returns the bad line (0: valid). */
static uint64_t
verify(const char *const *files, size_t n, const char *key, const char *expect_in_error,
       size_t *bad_file)
{
    struct sesame_audit_verify v;
    int rc = sesame_audit_verify_files(files, n, &key, 1, &v);
    uint64_t bad = v.bad_line;
    if (rc == SESAME_OK) {
        assert_null(v.error);
        bad = 0;
    } else {
        assert_non_null(v.error);
        if (expect_in_error && strstr(v.error, expect_in_error) == NULL)
            fail_msg("expected \"%s\" in: %s", expect_in_error, v.error);
        if (bad_file)
            *bad_file = v.bad_file;
        if (bad == 0)
            bad = UINT64_MAX;
    }
    sesame_audit_verify_clear(&v);
    return bad;
}

static uint64_t
verify1(const char *file, const char *key, const char *expect)
{
    return verify(&file, 1, key, expect, NULL);
}

static bool
is_event(const char *line, const char *event)
{
    char want[64];
    snprintf(want, sizeof(want), "\"event\":\"%s\"", event);
    return strstr(line, want) != NULL;
}

static char *
hex_sha256(const char *s, size_t n)
{
    unsigned char h[32];
    sesame_util_sha256(s, n, h);
    char *out = sesame_malloc(65);
    sesame_util_hex(out, h, 32);
    return out;
}

/* Sets line's prev to `prev` (NULL: keep) and recomputes its hash, as an
 * attacker without the key can; returns its new hash (malloc'd). */
static char *
rehash(char **line, const char *prev)
{
    char *s = *line;
    size_t n = strlen(s);
    assert_true(n > 140);
    size_t hat = n - 1 - 2 - 64 - 9; /* ,"hash":"...."}\n */
    if (prev)
        memcpy(s + hat - 1 - 64, prev, 64);
    char *content = sesame_malloc(hat + 1);
    memcpy(content, s, hat);
    content[hat] = '}';
    char *h = hex_sha256(content, hat + 1);
    free(content);
    memcpy(s + hat + 9, h, 64);
    return h;
}

/* ---- rendering --------------------------------------------------------- */

static void
test_render_fields_in_order(void **state)
{
    (void)state;
    struct sesame_audit_kv kv[] = {{"acr", "eidas1", 0}, {"sessions", NULL, 3}, {"Bad-Key", "x", 0},
                                   {"error", "a\"b\\c\n", 0}};
    struct sesame_audit_event ev = {.event = "signin", .tenant = "ville-a", .account = "m-001",
                                    .provider = "franceconnect", .outcome = "refused",
                                    .reason = "acr_too_low", .operator = "agent",
                                    .client = "192.0.2.1", .detail = kv, .ndetail = 4};
    char *b = sesame_audit_render(&ev, 1796407200123LL);
    assert_string_equal(b, "\"time\":\"2026-12-04T18:00:00.123Z\",\"event\":\"signin\","
                           "\"tenant\":\"ville-a\",\"account\":\"m-001\",\"provider\":"
                           "\"franceconnect\",\"outcome\":\"refused\",\"reason\":\"acr_too_low\","
                           "\"operator\":\"agent\",\"client\":\"192.0.2.1\",\"detail\":{\"acr\":"
                           "\"eidas1\",\"sessions\":3,\"error\":\"a\\\"b\\\\c\\u000a\"}");
    free(b);
    struct sesame_audit_event bare = {.event = "logout"};
    b = sesame_audit_render(&bare, 0);
    assert_string_equal(b, "\"time\":\"1970-01-01T00:00:00.000Z\",\"event\":\"logout\"");
    free(b);
    struct sesame_audit_event none = {0};
    assert_null(sesame_audit_render(&none, 0));
}

/* ---- chain and checkpoints ------------------------------------------------ */

static void
check_chain(const char *key, const char *pub)
{
    char *path = make_journal(key, 4, 10);
    struct lines l = read_lines(path);
    /* journal_opened (1), events, a checkpoint at each seq multiple of 4,
     * a final checkpoint */
    assert_true(is_event(l.v[0], "journal_opened"));
    assert_non_null(strstr(l.v[0], "\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\""));
    size_t events = 0, cps = 0;
    for (size_t i = 0; i < l.n; i++) {
        char want[32];
        snprintf(want, sizeof(want), "{\"seq\":%zu,", i + 1);
        assert_true(strncmp(l.v[i], want, strlen(want)) == 0);
        if (is_event(l.v[i], "checkpoint")) {
            cps++;
            assert_non_null(strstr(l.v[i], "\"sig\":\""));
            assert_true((i + 1) % 4 == 0 || i + 1 == l.n);
        } else if (is_event(l.v[i], "signin")) {
            events++;
            assert_null(strstr(l.v[i], "\"sig\""));
        }
    }
    assert_int_equal(events, 10);
    assert_true(is_event(l.v[l.n - 1], "checkpoint"));
    assert_int_equal(cps, 4); /* seq 4, 8, 12 and the final one */
    /* FILE.pub is the public key */
    char *pubfile = sesame_asprintf("%s.pub", path);
    struct sesame_audit_verify v;
    const char *k = pubfile;
    assert_int_equal(sesame_audit_verify_files((const char *const *)&path, 1, &k, 1, &v), SESAME_OK);
    assert_int_equal(v.lines, l.n);
    assert_int_equal(v.checkpoints, cps);
    assert_int_equal(v.first_seq, 1);
    assert_int_equal(v.last_seq, l.n);
    assert_true(v.from_start);
    sesame_audit_verify_clear(&v);
    assert_int_equal(verify1(path, pub, NULL), 0);
    /* the other key does not verify it */
    assert_int_not_equal(verify1(path, pub == es_pub ? ed_pub : es_pub, "bad signature"), 0);
    free(pubfile);
    lines_free(&l);
    free(path);
}

static void
test_chain_es256(void **state)
{
    (void)state;
    check_chain(es_key, es_pub);
}

static void
test_chain_ed25519(void **state)
{
    (void)state;
    check_chain(ed_key, ed_pub);
}

/* ---- tampering ---------------------------------------------------------- */

/* A journal of 12 events, checkpoints every 5: lines 5, 10, 15 and the last. */
static char *
tamper_base(struct lines *l)
{
    char *path = make_journal(es_key, 5, 12);
    *l = read_lines(path);
    assert_int_equal(verify1(path, es_pub, NULL), 0);
    return path;
}

static void
test_one_byte_changed(void **state)
{
    (void)state;
    struct lines l;
    char *path = tamper_base(&l);
    size_t targets[] = {1, 3, 5, 9, l.n};
    for (size_t t = 0; t < SESAME_ARRAY_LEN(targets); t++) {
        size_t k = targets[t];
        struct lines m = read_lines(path);
        char *p = strstr(m.v[k - 1], "\"time\":\"2");
        assert_non_null(p);
        p[12] = p[12] == '9' ? '8' : '9'; /* a digit of the year or month */
        char *copy = path_of("tampered.log");
        write_lines(copy, &m);
        assert_int_equal(verify1(copy, es_pub, "changed"), k);
        free(copy);
        lines_free(&m);
    }
    lines_free(&l);
    free(path);
}

static void
test_line_removed(void **state)
{
    (void)state;
    struct lines l;
    char *path = tamper_base(&l);
    for (size_t k = 2; k < l.n; k++) {
        struct lines m = read_lines(path);
        free(m.v[k - 1]);
        memmove(&m.v[k - 1], &m.v[k], (m.n - k) * sizeof(char *));
        m.n--;
        char *copy = path_of("removed.log");
        write_lines(copy, &m);
        assert_int_equal(verify1(copy, es_pub, "removed"), k);
        free(copy);
        lines_free(&m);
    }
    /* the first line of the file */
    struct lines m = read_lines(path);
    free(m.v[0]);
    memmove(&m.v[0], &m.v[1], (m.n - 1) * sizeof(char *));
    m.n--;
    char *copy = path_of("removed.log");
    write_lines(copy, &m);
    assert_int_equal(verify1(copy, es_pub, "removed"), 1);
    free(copy);
    lines_free(&m);
    lines_free(&l);
    free(path);
}

static void
test_two_lines_swapped(void **state)
{
    (void)state;
    struct lines l;
    char *path = tamper_base(&l);
    for (size_t k = 2; k + 1 <= l.n; k++) {
        struct lines m = read_lines(path);
        char *t = m.v[k - 1];
        m.v[k - 1] = m.v[k];
        m.v[k] = t;
        char *copy = path_of("swapped.log");
        write_lines(copy, &m);
        uint64_t bad = verify1(copy, es_pub, k + 1 == l.n ? NULL : "reordered");
        assert_int_equal(bad, k);
        free(copy);
        lines_free(&m);
    }
    lines_free(&l);
    free(path);
}

static void
test_line_inserted(void **state)
{
    (void)state;
    struct lines l;
    char *path = tamper_base(&l);
    for (size_t k = 2; k <= l.n; k++) {
        /* a copy of another line */
        struct lines m = read_lines(path);
        m.v = sesame_realloc(m.v, (m.n + 1) * sizeof(char *));
        memmove(&m.v[k], &m.v[k - 1], (m.n - k + 1) * sizeof(char *));
        m.v[k - 1] = sesame_strdup(l.v[k == 3 ? 5 : 2]);
        m.n++;
        char *copy = path_of("inserted.log");
        write_lines(copy, &m);
        assert_int_equal(verify1(copy, es_pub, NULL), k);
        lines_free(&m);
        /* a forged line that chains from the line before it */
        m = read_lines(path);
        char *forged = sesame_strdup(l.v[2]);
        size_t seq = 0;
        sscanf(l.v[k - 2], "{\"seq\":%zu,", &seq);
        char *rest = strchr(forged, ',');
        char *line = sesame_asprintf("{\"seq\":%zu%s", seq + 1, rest);
        free(forged);
        memcpy(strstr(line, "acct-"), "fake-", 5); /* an event that never happened */
        const char *pv = strstr(l.v[k - 2], "\"hash\":\"") + 8;
        char prev[65];
        memcpy(prev, pv, 64);
        prev[64] = '\0';
        free(rehash(&line, prev));
        m.v = sesame_realloc(m.v, (m.n + 1) * sizeof(char *));
        memmove(&m.v[k], &m.v[k - 1], (m.n - k + 1) * sizeof(char *));
        m.v[k - 1] = line;
        m.n++;
        write_lines(copy, &m);
        assert_int_equal(verify1(copy, es_pub, "inserted"), k);
        free(copy);
        lines_free(&m);
    }
    lines_free(&l);
    free(path);
}

static void
test_last_checkpoint_removed(void **state)
{
    (void)state;
    struct lines l;
    char *path = tamper_base(&l);
    /* lines 5, 10, 15 and the last are checkpoints */
    assert_true(is_event(l.v[14], "checkpoint"));
    assert_true(is_event(l.v[l.n - 1], "checkpoint"));
    l.n--;
    char *copy = path_of("nolast.log");
    write_lines(copy, &l);
    l.n++;
    assert_int_equal(verify1(copy, es_pub, "unsigned"), 16);
    /* every checkpoint removed: nothing is signed from line 1 */
    struct lines m = {0};
    for (size_t i = 0; i < l.n; i++) {
        if (is_event(l.v[i], "checkpoint"))
            continue;
        m.v = sesame_realloc(m.v, (m.n + 1) * sizeof(char *));
        m.v[m.n++] = l.v[i];
    }
    write_lines(copy, &m);
    free(m.v);
    assert_int_not_equal(verify1(copy, es_pub, NULL), 0);
    free(copy);
    lines_free(&l);
    free(path);
}

/* An attacker rewrites line k and recomputes the whole chain after it: the
 * next checkpoint's signature no longer holds. */
static void
test_rewritten_chain_fails_signature(void **state)
{
    (void)state;
    struct lines l;
    char *path = tamper_base(&l);
    char *p = strstr(l.v[6], "acct-");
    assert_non_null(p);
    p[5] = 'X';
    char *copy = path_of("rewritten.log");
    /* only line 7 rehashed: line 8 does not chain to it */
    struct lines m = read_lines(path);
    free(m.v[6]);
    m.v[6] = sesame_strdup(l.v[6]);
    free(rehash(&m.v[6], NULL));
    write_lines(copy, &m);
    assert_int_equal(verify1(copy, es_pub, "rewritten"), 7);
    /* the whole chain recomputed: the checkpoint at line 10 fails */
    char *h = NULL;
    for (size_t i = 6; i < m.n; i++) {
        char *nh = rehash(&m.v[i], h);
        free(h);
        h = nh;
    }
    free(h);
    write_lines(copy, &m);
    assert_int_equal(verify1(copy, es_pub, "bad signature"), 10);
    free(copy);
    lines_free(&m);
    lines_free(&l);
    free(path);
}

static void
test_torn_last_line(void **state)
{
    (void)state;
    char *path = make_journal(es_key, 100, 3), *err = NULL;
    FILE *f = fopen(path, "a");
    fputs("{\"seq\":99,\"time\":\"2026", f); /* a crash in the middle of a write */
    fclose(f);
    struct sesame_audit_settings s = settings(path, es_key, 100);
    struct sesame_audit_journal *j = sesame_audit_journal_open(&s, false, &err);
    assert_non_null(j);
    append_n(j, 10, 2);
    sesame_audit_journal_close(j);
    struct lines l = read_lines(path);
    /* the fragment became a line of its own, the chain went on around it */
    assert_int_equal(verify1(path, es_pub, "malformed"), 6);
    lines_free(&l);
    free(path);
}

/* ---- rotation and several writers ----------------------------------------- */

static void
test_rotation_by_the_daemon(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    char *old = sesame_asprintf("%s.1", path);
    struct sesame_audit_settings s = settings(path, es_key, 1000);
    struct sesame_audit_journal *j = sesame_audit_journal_open(&s, true, &err);
    assert_non_null(j);
    append_n(j, 0, 3);
    assert_int_equal(rename(path, old), 0); /* logrotate */
    assert_int_equal(sesame_audit_journal_reopen(j, &err), SESAME_OK);
    /* the old file was ended with a checkpoint, the new one started */
    struct lines lo = read_lines(old), ln = read_lines(path);
    assert_true(is_event(lo.v[lo.n - 1], "checkpoint"));
    assert_int_equal(ln.n, 2); /* journal_opened, and the checkpoint of the reopen */
    assert_true(is_event(ln.v[0], "journal_opened"));
    lines_free(&lo);
    lines_free(&ln);
    append_n(j, 3, 2);
    sesame_audit_journal_close(j);
    const char *both[] = {old, path};
    assert_int_equal(verify(both, 2, es_pub, NULL, NULL), 0);
    assert_int_equal(verify1(old, es_pub, NULL), 0);
    assert_int_equal(verify1(path, es_pub, NULL), 0); /* continues an earlier chain */
    const char *reversed[] = {path, old};
    size_t bad_file = 0;
    assert_int_equal(verify(reversed, 2, es_pub, "does not continue", &bad_file), 1);
    assert_int_equal(bad_file, 1);
    /* a file missing in between */
    char *older = sesame_asprintf("%s.2", path);
    assert_int_equal(rename(old, older), 0);
    assert_int_equal(rename(path, old), 0);
    j = sesame_audit_journal_open(&s, true, &err);
    append_n(j, 5, 1);
    sesame_audit_journal_close(j);
    const char *gap[] = {older, path};
    assert_int_equal(verify(gap, 2, es_pub, "a file is missing", &bad_file), 1);
    const char *all[] = {older, old, path};
    assert_int_equal(verify(all, 3, es_pub, NULL, NULL), 0);
    free(older);
    free(old);
    free(path);
}

/* The tool writes first into the new file (no handle on the old one): its
 * journal_opened continues from FILE.head; the daemon, finding its file
 * renamed and no longer the end of the chain, leaves it as it is. */
static void
test_rotation_seen_by_another_writer(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    char *old = sesame_asprintf("%s.1", path);
    struct sesame_audit_settings s = settings(path, es_key, 1000);
    struct sesame_audit_journal *daemon = sesame_audit_journal_open(&s, true, &err);
    assert_non_null(daemon);
    append_n(daemon, 0, 2);
    assert_int_equal(rename(path, old), 0);
    struct sesame_audit_journal *tool = sesame_audit_journal_open(&s, false, &err);
    assert_non_null(tool);
    append_n(tool, 100, 1);
    sesame_audit_journal_close(tool);
    append_n(daemon, 2, 2);
    sesame_audit_journal_close(daemon);
    struct lines lo = read_lines(old);
    assert_int_equal(lo.n, 3); /* untouched: journal_opened and two events */
    lines_free(&lo);
    const char *both[] = {old, path};
    assert_int_equal(verify(both, 2, es_pub, NULL, NULL), 0);
    free(old);
    free(path);
}

static void
test_interleaved_writers(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    struct sesame_audit_settings s = settings(path, es_key, 7);
    struct sesame_audit_journal *a = sesame_audit_journal_open(&s, true, &err);
    struct sesame_audit_journal *b = sesame_audit_journal_open(&s, false, &err);
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 20; i++)
        append_n(i % 3 ? a : b, i, 1);
    sesame_audit_journal_close(b);
    sesame_audit_journal_close(a);
    assert_int_equal(verify1(path, es_pub, NULL), 0);
    free(path);
}

/* ---- the daemon's queue ------------------------------------------------- */

static void *
pusher(void *arg)
{
    int id = *(int *)arg;
    for (int i = 0; i < 200; i++) {
        char acct[32];
        snprintf(acct, sizeof(acct), "t%d-%d", id, i);
        struct sesame_audit_event ev = {.event = "signin", .tenant = "ville-a", .account = acct,
                                        .outcome = "success"};
        assert_int_equal(sesame_audit_event(&ev), SESAME_OK);
    }
    return NULL;
}

static size_t
count_event(const char *path, const char *event)
{
    struct lines l = read_lines(path);
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++)
        n += is_event(l.v[i], event);
    lines_free(&l);
    return n;
}

static void
test_daemon_threads(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    struct sesame_audit_settings s = settings(path, ed_key, 50);
    assert_int_equal(sesame_audit_start_settings(&s, SESAME_AUDIT_QUEUE, &err), SESAME_OK);
    assert_true(sesame_audit_enabled());
    /* a tool writes meanwhile */
    struct sesame_audit_journal *tool = sesame_audit_journal_open(&s, false, &err);
    pthread_t t[4];
    int ids[4] = {0, 1, 2, 3};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, pusher, &ids[i]);
    append_n(tool, 0, 5);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    sesame_audit_journal_close(tool);
    sesame_audit_stop();
    assert_false(sesame_audit_enabled());
    assert_int_equal(count_event(path, "signin"), 805);
    assert_int_equal(verify1(path, ed_pub, NULL), 0);
    /* after stop: nothing recorded, no error */
    struct sesame_audit_event ev = {.event = "logout"};
    assert_int_equal(sesame_audit_event(&ev), SESAME_OK);
    free(path);
}

static void
test_queue_full_drops_are_counted(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    struct sesame_audit_settings s = settings(path, es_key, 1000);
    assert_int_equal(sesame_audit_start_settings(&s, 8, &err), SESAME_OK);
    /* another writer holds the lock: the writer thread waits, the queue fills */
    char *head = sesame_asprintf("%s.head", path);
    int fd = open(head, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    int refused = 0;
    for (int i = 0; i < 100; i++) {
        struct sesame_audit_event ev = {.event = "signin", .outcome = "success"};
        if (sesame_audit_event(&ev) != SESAME_OK)
            refused++;
        if (i == 0)
            usleep(50000); /* let the writer take the first one and block */
    }
    assert_true(refused > 0);
    assert_true(refused <= 100 - 8);
    flock(fd, LOCK_UN);
    close(fd);
    sesame_audit_stop();
    struct sesame_audit_verify v;
    const char *k = es_pub;
    const char *f = path;
    assert_int_equal(sesame_audit_verify_files(&f, 1, &k, 1, &v), SESAME_OK);
    assert_int_equal(v.dropped, (uint64_t)refused);
    sesame_audit_verify_clear(&v);
    assert_int_equal(count_event(path, "signin"), (size_t)(100 - refused));
    free(head);
    free(path);
}

static void
test_time_checkpoint(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    struct sesame_audit_settings s = settings(path, es_key, 0);
    s.checkpoint_ms = 100;
    assert_int_equal(sesame_audit_start_settings(&s, 64, &err), SESAME_OK);
    for (int i = 0; i < 3; i++) {
        struct sesame_audit_event ev = {.event = "logout", .tenant = "ville-a"};
        assert_int_equal(sesame_audit_event(&ev), SESAME_OK);
    }
    /* signed while running, without waiting for the stop */
    bool signed_now = false;
    for (int i = 0; i < 100 && !signed_now; i++) {
        usleep(20000);
        signed_now = verify1(path, es_pub, NULL) == 0 && count_event(path, "logout") == 3;
    }
    assert_true(signed_now);
    size_t cps = count_event(path, "checkpoint");
    usleep(300000); /* nothing new: no more checkpoints */
    assert_int_equal(count_event(path, "checkpoint"), cps);
    sesame_audit_stop();
    assert_int_equal(count_event(path, "checkpoint"), cps);
    free(path);
}

static void
test_reopen_signal(void **state)
{
    (void)state;
    char *path = new_journal(), *err = NULL;
    char *old = sesame_asprintf("%s.1", path);
    struct sesame_audit_settings s = settings(path, es_key, 1000);
    assert_int_equal(sesame_audit_start_settings(&s, 64, &err), SESAME_OK);
    struct sesame_audit_event ev = {.event = "logout", .tenant = "ville-a"};
    sesame_audit_event(&ev);
    for (int i = 0; i < 100 && count_event(path, "logout") == 0; i++)
        usleep(10000);
    assert_int_equal(rename(path, old), 0);
    sesame_audit_reopen();
    for (int i = 0; i < 200 && access(path, F_OK) != 0; i++)
        usleep(10000);
    usleep(50000);
    assert_int_equal(verify1(old, es_pub, NULL), 0); /* ended with a checkpoint */
    sesame_audit_event(&ev);
    sesame_audit_stop();
    const char *both[] = {old, path};
    assert_int_equal(verify(both, 2, es_pub, NULL, NULL), 0);
    free(old);
    free(path);
}

/* ---- keys, settings, configuration --------------------------------------- */

static void
test_keys(void **state)
{
    (void)state;
    char *err = NULL;
    assert_int_equal(sesame_audit_key_check(es_key, &err), SESAME_OK);
    assert_int_equal(sesame_audit_key_check(ed_key, &err), SESAME_OK);
    /* a public key is not a private one */
    assert_int_equal(sesame_audit_key_check(es_pub, &err), SESAME_ERROR);
    free(err);
    err = NULL;
    char *rsa = path_of("rsa.pem"), *p384 = path_of("p384.pem"), *none = path_of("none.pem");
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    write_key(k, rsa, NULL);
    EVP_PKEY_free(k);
    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    write_key(k, p384, NULL);
    EVP_PKEY_free(k);
    assert_int_equal(sesame_audit_key_check(rsa, &err), SESAME_ERROR);
    assert_non_null(strstr(err, "P-256"));
    free(err);
    err = NULL;
    assert_int_equal(sesame_audit_key_check(p384, &err), SESAME_ERROR);
    free(err);
    err = NULL;
    assert_int_equal(sesame_audit_key_check(none, &err), SESAME_ERROR);
    assert_non_null(strstr(err, "cannot read"));
    free(err);
    /* signatures: round trip, any change refused */
    struct sesame_audit_key *priv = sesame_audit_key_load_private(es_key, &err);
    struct sesame_audit_key *pub = sesame_audit_key_load_public(es_pub, &err);
    assert_string_equal(sesame_audit_key_id(priv), sesame_audit_key_id(pub));
    assert_int_equal(strlen(sesame_audit_key_id(pub)), 32);
    assert_string_equal(sesame_audit_key_alg(pub), "ES256");
    char *sig = sesame_audit_key_sign(priv, "abc", 3);
    assert_non_null(sig);
    assert_true(sesame_audit_key_verify(pub, "abc", 3, sig, strlen(sig)));
    assert_false(sesame_audit_key_verify(pub, "abd", 3, sig, strlen(sig)));
    assert_null(sesame_audit_key_sign(pub, "abc", 3));
    free(sig);
    sesame_audit_key_free(priv);
    sesame_audit_key_free(pub);
    free(rsa);
    free(p384);
    free(none);
}

/* A new key: FILE.pub is replaced, the previous one kept as FILE.pub.KID,
 * and the journal verifies with both. */
static void
test_key_change(void **state)
{
    (void)state;
    char *path = make_journal(es_key, 1000, 2), *err = NULL;
    struct sesame_audit_settings s = settings(path, ed_key, 1000);
    struct sesame_audit_journal *j = sesame_audit_journal_open(&s, true, &err);
    assert_non_null(j);
    append_n(j, 2, 2);
    sesame_audit_journal_close(j);
    struct sesame_audit_key *es = sesame_audit_key_load_public(es_pub, &err);
    char *kept = sesame_asprintf("%s.pub.%s", path, sesame_audit_key_id(es));
    char *pub = sesame_asprintf("%s.pub", path);
    assert_int_equal(access(kept, R_OK), 0);
    const char *keys[] = {pub, kept};
    struct sesame_audit_verify v;
    assert_int_equal(sesame_audit_verify_files((const char *const *)&path, 1, keys, 2, &v), SESAME_OK);
    sesame_audit_verify_clear(&v);
    assert_int_not_equal(verify1(path, ed_pub, "which no --key gives"), 0);
    sesame_audit_key_free(es);
    free(kept);
    free(pub);
    free(path);
}

static char *
write_conf(const char *name, const char *text)
{
    char *p = path_of(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static struct sesame_conf *
load(const char *server_lines, char **errors)
{
    char *text = sesame_asprintf("[server]\nlisten = 127.0.0.1:8080\n%s\n"
                                 "[tenant a]\npublic_url = http://a.localhost:8080\n"
                                 "audit_client_address = on\n"
                                 "[tenant b]\npublic_url = http://b.localhost:8080\n"
                                 "[route a]\ntenant = a\nupstream = http://127.0.0.1:9000\n"
                                 "access = public\n", server_lines);
    char *p = write_conf("audit.conf", text);
    *errors = NULL;
    struct sesame_conf *c = sesame_conf_load(p, errors);
    free(p);
    free(text);
    return c;
}

static void
test_configuration_keys(void **state)
{
    (void)state;
    char *errors = NULL;
    struct sesame_conf *c = load("", &errors);
    assert_non_null(c);
    assert_null(c->server.audit_log);
    assert_int_equal(c->server.audit_checkpoint_lines, 1000);
    assert_int_equal(c->server.audit_checkpoint_ms, 0);
    assert_false(c->server.audit_syslog);
    assert_true(c->tenants[0]->audit_client_address);
    assert_false(c->tenants[1]->audit_client_address);
    sesame_conf_unref(c);

    char *lines = sesame_asprintf("audit_log = %s/x.log\naudit_key_file = %s\n"
                                  "audit_checkpoint = 5m\naudit_syslog = on\n", tmpdir, ed_key);
    c = load(lines, &errors);
    free(lines);
    if (c == NULL)
        fprintf(stderr, "%s", errors);
    assert_non_null(c);
    assert_int_equal(c->server.audit_checkpoint_lines, 0);
    assert_int_equal(c->server.audit_checkpoint_ms, 300000);
    assert_true(c->server.audit_syslog);
    sesame_conf_unref(c);

    lines = sesame_asprintf("audit_log = %s/x.log\naudit_key_file = %s\naudit_checkpoint = 250\n",
                            tmpdir, es_key);
    c = load(lines, &errors);
    free(lines);
    assert_non_null(c);
    assert_int_equal(c->server.audit_checkpoint_lines, 250);
    sesame_conf_unref(c);

    struct {
        const char *lines;
        const char *error;
    } bad[] = {
        {"audit_log = %s/x.log\n", "audit_log: the journal needs audit_key_file"},
        {"audit_syslog = on\n", "audit_syslog: audit_syslog copies the journal"},
        {"audit_log = stderr\naudit_key_file = %s/es.pem\n", "audit_log: a file path or off"},
        {"audit_log = %s/x.log\naudit_key_file = %s/es.pub\n", "audit_key_file: "},
        {"audit_log = %s/x.log\naudit_key_file = %s/rsa-open.pem\n", "readable by other users"},
        {"audit_checkpoint = 0\n", "audit_checkpoint: '0'"},
        {"audit_checkpoint = 10ms\n", "audit_checkpoint: '10ms'"},
        {"audit_checkpoint = often\n", "audit_checkpoint: 'often'"},
    };
    char *open_key = path_of("rsa-open.pem");
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    write_key(k, open_key, NULL);
    EVP_PKEY_free(k);
    chmod(open_key, 0644);
    free(open_key);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(bad); i++) {
        /* "%s" in a case stands for the temporary directory */
        char *l = sesame_strdup("");
        for (const char *q = bad[i].lines; *q;) {
            const char *pct = strstr(q, "%s");
            size_t len = pct ? (size_t)(pct - q) : strlen(q);
            char *next = sesame_asprintf("%s%.*s%s", l, (int)len, q, pct ? tmpdir : "");
            free(l);
            l = next;
            q = pct ? pct + 2 : q + len;
        }
        c = load(l, &errors);
        free(l);
        assert_null(c);
        if (strstr(errors, bad[i].error) == NULL)
            fail_msg("case %zu: expected \"%s\" in:\n%s", i, bad[i].error, errors);
        /* FILE:LINE: key: message */
        assert_non_null(strstr(errors, "audit.conf:"));
        free(errors);
    }
}

/* ---- show ------------------------------------------------------------------ */

static void
test_filter_and_dates(void **state)
{
    (void)state;
    const char *line = "{\"seq\":3,\"time\":\"2026-12-04T18:00:00.123Z\",\"event\":\"signin\","
                       "\"tenant\":\"ville-a\",\"account\":\"m-001\",\"prev\":\"x\",\"hash\":\"y\"}";
    size_t n = strlen(line);
    struct sesame_audit_filter f = {0};
    assert_true(sesame_audit_filter_match(&f, line, n));
    f.account = "m-001";
    assert_true(sesame_audit_filter_match(&f, line, n));
    f.tenant = "ville-b";
    assert_false(sesame_audit_filter_match(&f, line, n));
    f.tenant = "ville-a";
    f.event = "signin";
    f.since = "2026-12-04";
    f.until = "2026-12-04";
    assert_true(sesame_audit_filter_match(&f, line, n));
    f.since = "2026-12-04T18:00:01";
    assert_false(sesame_audit_filter_match(&f, line, n));
    f.since = "2026-12-04T18:00";
    f.until = "2026-12-04T17:59Z";
    assert_false(sesame_audit_filter_match(&f, line, n));
    f.until = "2026-12-05";
    assert_true(sesame_audit_filter_match(&f, line, n));
    assert_false(sesame_audit_filter_match(&f, "not json", 8));
    const char *good[] = {"2026-12-04", "2026-12-04T18:00", "2026-12-04T18:00:00",
                          "2026-12-04T18:00:00.123", "2026-12-04T18:00:00Z"};
    const char *badd[] = {"2026-12", "04/12/2026", "2026-12-04 18:00", "2026-12-04T18",
                          "2026-12-04T18:00:00.1", ""};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(good); i++)
        assert_true(sesame_audit_date_ok(good[i]));
    for (size_t i = 0; i < SESAME_ARRAY_LEN(badd); i++)
        assert_false(sesame_audit_date_ok(badd[i]));
}

static void
test_operator(void **state)
{
    (void)state;
    setenv("SUDO_USER", "agent.dupont", 1);
    assert_string_equal(sesame_audit_operator(), "agent.dupont");
    setenv("SUDO_USER", "bad name;rm", 1);
    assert_string_not_equal(sesame_audit_operator(), "bad name;rm");
    unsetenv("SUDO_USER");
    assert_true(strlen(sesame_audit_operator()) > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_fields_in_order),
        cmocka_unit_test(test_chain_es256),
        cmocka_unit_test(test_chain_ed25519),
        cmocka_unit_test(test_one_byte_changed),
        cmocka_unit_test(test_line_removed),
        cmocka_unit_test(test_two_lines_swapped),
        cmocka_unit_test(test_line_inserted),
        cmocka_unit_test(test_last_checkpoint_removed),
        cmocka_unit_test(test_rewritten_chain_fails_signature),
        cmocka_unit_test(test_torn_last_line),
        cmocka_unit_test(test_rotation_by_the_daemon),
        cmocka_unit_test(test_rotation_seen_by_another_writer),
        cmocka_unit_test(test_interleaved_writers),
        cmocka_unit_test(test_daemon_threads),
        cmocka_unit_test(test_queue_full_drops_are_counted),
        cmocka_unit_test(test_time_checkpoint),
        cmocka_unit_test(test_reopen_signal),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_key_change),
        cmocka_unit_test(test_configuration_keys),
        cmocka_unit_test(test_filter_and_dates),
        cmocka_unit_test(test_operator),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
