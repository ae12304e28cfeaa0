/*
 * Live tests of list, search, export and purge (tools/citizen.h) against a
 * real redis-server on a free loopback port, with accounts imported and
 * resolved through the store and sessions written as the session module
 * writes them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "core/util.h"
#include "session/session.h"
#include "tools/citizen.h"

#define TENANT "ville-a"

static int redis_port;
static pid_t redis_pid = -1;
static char dir[] = "/tmp/sesame-test-citizen-XXXXXX";
static char key_file[128], journal[128];
static struct sesame_store_options opts;
static struct sesame_conf_session session_conf;

/* ---- redis-server ------------------------------------------------------- */

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        abort();
    close(fd);
    return ntohs(sa.sin_port);
}

static redisContext *
connect_plain(void)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

static void
cmd(const char *fmt, ...)
{
    redisContext *c = connect_plain();
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    redisFree(c);
}

static long long
rint_cmd(const char *fmt, ...)
{
    redisContext *c = connect_plain();
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        abort();
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
}

static int
group_setup(void **state)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    redis_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", dir, "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        redisContext *c = connect_plain();
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                break;
        }
        usleep(10000);
    }
    snprintf(key_file, sizeof(key_file), "%s/accounts.key", dir);
    snprintf(journal, sizeof(journal), "%s/audit.log", dir);
    write_file(key_file, "YWNjb3VudHMta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3\n");
    char *err = NULL;
    if (sesame_store_options_parse(&opts, NULL, 0, &err) != SESAME_OK ||
        sesame_store_load_key(&opts.keys, key_file, &err) != SESAME_OK)
        return -1;
    free(opts.prefix);
    free(opts.session_prefix);
    opts.prefix = sesame_strdup("t:");
    opts.session_prefix = sesame_strdup("s:");
    for (size_t i = 0; i < sizeof(session_conf.secret); i++)
        session_conf.secret[i] = (unsigned char)(i * 7 + 1);
    return 0;
}

static int
group_teardown(void **state)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
    sesame_store_options_free(&opts);
    unlink(key_file);
    unlink(journal);
    char rotated[160];
    snprintf(rotated, sizeof(rotated), "%s.1", journal);
    unlink(rotated);
    snprintf(rotated, sizeof(rotated), "%s.2.gz", journal);
    unlink(rotated);
    rmdir(dir);
    return 0;
}

static int
flush(void **state)
{
    cmd("FLUSHALL");
    unlink(journal);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

struct person {
    const char *id, *sub;
    const char *family_name, *given_name, *birthdate, *birthplace, *birthcountry;
};

static const struct person marie = {"acct-marie", "a1b2v1", "MARTIN", "Marie Claire Odile",
                                    "1962-08-24", "75107",  "99100"};
static const struct person jean = {"acct-jean", "c3d4v1", "D'ALMEIDA-LÉVÊQUE", "Jean-Baptiste", "1979-03-02",
                                   "33063",     "99100"};
static const struct person karim = {"acct-karim", "k5k5v1", "BENALI", "Karim Yanis",
                                    "1985-11-30", "",       "99352"};
static const struct person paola = {"acct-paola", "p7p7v1", "SANTUCCI", "Paola Maria",
                                    "1990-01-09", "2A004",  "99100"};
static const struct person louis = {"acct-louis", "l9l9v1", "MARTIN", "Louis",
                                    "1962-08-24", "69383",  "99100"};

static void
import(const struct person *const *people, size_t n)
{
    redisContext *c = connect_plain();
    struct sesame_store_import recs[8];
    struct sesame_plugin_kv attrs[] = {{"quartier", "Centre-ville"}};
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        recs[i] = (struct sesame_store_import){(int)i + 1,
                                               people[i]->family_name,
                                               people[i]->given_name,
                                               people[i]->birthdate,
                                               people[i]->birthplace,
                                               people[i]->birthcountry,
                                               people[i]->id,
                                               attrs,
                                               1};
    char *ids[8] = {NULL}, *err = NULL;
    if (sesame_store_import(c, &opts, TENANT, recs, n, ids, &err) != SESAME_OK)
        fail_msg("import: %s", err);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    redisFree(c);
}

/* A sign-in of p through the store (match = pivot, link-only). */
static void
sign_in(const struct person *p, const char *tenant)
{
    redisContext *c = connect_plain();
    struct sesame_plugin_kv claims[] = {
        {"given_name", p->given_name}, {"family_name", p->family_name},   {"birthdate", p->birthdate},
        {"birthplace", p->birthplace}, {"birthcountry", p->birthcountry},
    };
    struct sesame_plugin_identity id = {tenant, "fc", p->sub, claims, 5};
    struct sesame_plugin_result res = {0};
    struct sesame_store_options o = opts;
    o.match_pivot = true;
    o.policy = SESAME_STORE_LINK_ONLY;
    assert_int_equal(sesame_store_resolve(c, &o, NULL, &id, &res), SESAME_OK);
    assert_int_equal(res.status, SESAME_PLUGIN_RESULT_FOUND);
    redisFree(c);
}

/* A session of `account` written as the session module writes it; returns
 * its cookie id (static buffer of the caller). */
static void
add_session(const char *account, const char *acr, int64_t created_s, char cookie[44])
{
    unsigned char raw[32];
    assert_int_equal(sesame_util_random(raw, sizeof(raw)), SESAME_OK);
    sesame_util_b64url_encode(cookie, raw, sizeof(raw));
    char key[128];
    unsigned char hash[32];
    assert_int_equal(sesame_session_key(opts.session_prefix, cookie, key, sizeof(key), hash), SESAME_OK);
    struct sesame_session *s = sesame_session_new();
    s->tenant = sesame_strdup(TENANT);
    s->account = sesame_strdup(account);
    s->provider = sesame_strdup("fc");
    s->acr = sesame_strdup(acr);
    s->created_ms = created_s * 1000;
    s->last_seen_ms = (created_s + 60) * 1000;
    s->expires_ms = (created_s + 3600) * 1000;
    s->id_token = sesame_strdup("eyJhbGciOiJFUzI1NiJ9.ID-TOKEN-PAYLOAD.SIG");
    s->claims = json_pack("{s:s}", "family_name", "SECRET-CLAIM");
    size_t len = 0;
    char *plain = sesame_session_serialize(s, &len);
    unsigned char *val = NULL;
    size_t vlen = 0;
    assert_int_equal(
        sesame_session_record_seal(&session_conf, cookie, key, strlen(key), plain, len, &val, &vlen),
        SESAME_OK);
    redisContext *c = connect_plain();
    redisReply *r = redisCommand(c, "SET %s %b EX 3600", key, val, vlen);
    freeReplyObject(r);
    char hex[65];
    sesame_util_hex(hex, hash, 32);
    r = redisCommand(c, "SADD %sa:%s:%s %s", opts.session_prefix, TENANT, account, hex);
    freeReplyObject(r);
    redisFree(c);
    free(plain);
    free(val);
    sesame_session_free(s);
}

struct run {
    int status;
    char *out, *err;
};

static struct run
run_cmd(enum sesame_citizen_cmd which, const char *const *argv, int argc, const char *audit_log)
{
    struct run r = {0};
    size_t olen = 0, elen = 0;
    FILE *out = open_memstream(&r.out, &olen), *err = open_memstream(&r.err, &elen);
    struct sesame_citizen_args a;
    r.status = sesame_citizen_parse(which, argc, (char **)argv, &a, err);
    if (r.status == 0) {
        redisContext *c = connect_plain();
        struct sesame_citizen_ctx ctx = {
            .accounts = c,
            .sessions = c,
            .opts = &opts,
            .tenant = a.tenant ? a.tenant : TENANT,
            .audit_log = audit_log,
            .out = out,
            .err = err,
            .now = (int64_t)time(NULL),
        };
        r.status = sesame_citizen_run(&ctx, &a);
        redisFree(c);
    }
    fclose(out);
    fclose(err);
    return r;
}

static void
run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* ---- list --------------------------------------------------------------- */

static void
test_list_pages_and_orders(void **state)
{
    const struct person *people[] = {&marie, &jean, &karim, &paola, &louis};
    import(people, 5);
    /* creation times 1000..5000 s; jean and paola signed in, jean last */
    for (size_t i = 0; i < 5; i++)
        cmd("ZADD t:acct:" TENANT ":created %d %s", (int)(i + 1) * 1000, people[i]->id);
    sign_in(&jean, TENANT);
    cmd("ZADD t:acct:" TENANT ":signin 9000 acct-jean");
    cmd("ZADD t:acct:" TENANT ":signin 8000 acct-paola");
    cmd("SADD s:a:" TENANT ":acct-jean h1 h2");

    const char *p1[] = {"--per-page", "2"};
    struct run r = run_cmd(SESAME_CITIZEN_LIST, p1, 2, NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "# tenant ville-a: 5 accounts, by last sign-in, page 1 of 3, 2 per page\n"
                               "account\torigin\tcreated\tlast_signin\tlinks\tsessions\n"
                               "acct-jean\timport\t1970-01-01T00:33:20Z\t1970-01-01T02:30:00Z\t1\t2\n"
                               "acct-paola\timport\t1970-01-01T01:06:40Z\t1970-01-01T02:13:20Z\t0\t0\n");
    run_free(&r);
    /* then the never signed in, newest first */
    const char *p2[] = {"--per-page=2", "--page", "2"};
    r = run_cmd(SESAME_CITIZEN_LIST, p2, 3, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "page 2 of 3"));
    assert_non_null(strstr(r.out, "\nacct-louis\timport\t1970-01-01T01:23:20Z\tnever\t0\t0\n"
                                  "acct-karim\t"));
    run_free(&r);
    const char *p3[] = {"--per-page", "2", "--page", "3"};
    r = run_cmd(SESAME_CITIZEN_LIST, p3, 4, NULL);
    assert_non_null(strstr(r.out, "\nacct-marie\t"));
    assert_null(strstr(r.out, "acct-karim"));
    run_free(&r);
    const char *p4[] = {"--per-page", "2", "--page", "4"};
    r = run_cmd(SESAME_CITIZEN_LIST, p4, 4, NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "# tenant ville-a: 5 accounts, by last sign-in, page 4 of 3, 2 per page\n"
                               "account\torigin\tcreated\tlast_signin\tlinks\tsessions\n");
    run_free(&r);
    /* by creation, newest first; names never appear in a listing */
    const char *p5[] = {"--by", "created"};
    r = run_cmd(SESAME_CITIZEN_LIST, p5, 2, NULL);
    const char *order[] = {"acct-louis", "acct-paola", "acct-karim", "acct-jean", "acct-marie"};
    const char *at = r.out;
    for (size_t i = 0; i < 5; i++) {
        at = strstr(at, order[i]);
        assert_non_null(at);
    }
    assert_null(strstr(r.out, "MARTIN"));
    assert_non_null(strstr(r.out, "by creation, page 1 of 1, 50 per page"));
    run_free(&r);
    /* another tenant is empty */
    const char *p6[] = {"--tenant", "ville-b"};
    r = run_cmd(SESAME_CITIZEN_LIST, p6, 2, NULL);
    assert_non_null(strstr(r.out, "# tenant ville-b: 0 accounts"));
    run_free(&r);
}

/* ---- search ------------------------------------------------------------- */

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void
expect_search(const char *name, const char *birthdate, const char *const *want, size_t nwant)
{
    const char *argv[4];
    int argc = 0;
    if (name) {
        argv[argc++] = "--name";
        argv[argc++] = name;
    }
    if (birthdate) {
        argv[argc++] = "--birthdate";
        argv[argc++] = birthdate;
    }
    struct run r = run_cmd(SESAME_CITIZEN_SEARCH, argv, argc, NULL);
    if (r.status != (nwant ? 0 : 3))
        fail_msg("search %s %s: status %d, %s %s", name ? name : "-", birthdate ? birthdate : "-", r.status,
                 r.out, r.err);
    assert_int_equal(count_lines(r.out), 2 + nwant);
    for (size_t i = 0; i < nwant; i++) {
        char *line = sesame_asprintf("\n%s\t", want[i]);
        if (strstr(r.out, line) == NULL)
            fail_msg("search %s: %s not in\n%s", name ? name : birthdate, want[i], r.out);
        free(line);
    }
    run_free(&r);
}

static void
test_search_normalised_as_pivot(void **state)
{
    const struct person *people[] = {&marie, &jean, &karim, &louis};
    import(people, 4);
    const char *jean_only[] = {"acct-jean"};
    const char *martins[] = {"acct-marie", "acct-louis"};
    const char *marie_only[] = {"acct-marie"};
    /* case, accents, hyphens, apostrophes, word order */
    expect_search("d'almeida-leveque", NULL, jean_only, 1);
    expect_search("D ALMEIDA LÉVÊQUE", NULL, jean_only, 1);
    expect_search("Jean Baptiste D’Almeida", NULL, jean_only, 1);
    expect_search("lévêque", NULL, jean_only, 1);
    expect_search("martin", NULL, martins, 2);
    expect_search("Marie MARTIN", NULL, marie_only, 1);
    expect_search("marie-claire", NULL, marie_only, 1);
    expect_search("Jean Paul", NULL, NULL, 0);
    expect_search("dalmeida", NULL, NULL, 0);
    /* by birthdate, and both */
    expect_search(NULL, "1962-08-24", martins, 2);
    expect_search("louis", "1962-08-24", (const char *[]){"acct-louis"}, 1);
    expect_search("karim", "1962-08-24", NULL, 0);
    /* the row gives the personal data as the commune wrote them */
    const char *argv[] = {"--name", "benali"};
    struct run r = run_cmd(SESAME_CITIZEN_SEARCH, argv, 2, NULL);
    assert_non_null(strstr(r.out, "\nacct-karim\tBENALI\tKarim Yanis\t1985-11-30\t\t99352\t"));
    run_free(&r);
    /* malformed queries */
    const char *bad[] = {"--birthdate", "24/08/1962"};
    r = run_cmd(SESAME_CITIZEN_SEARCH, bad, 2, NULL);
    assert_int_equal(r.status, 1);
    assert_string_equal(r.err, "sesame-accounts: search: birthdate: not YYYY-MM-DD\n");
    run_free(&r);
    const char *dash[] = {"--name", "- '"};
    r = run_cmd(SESAME_CITIZEN_SEARCH, dash, 2, NULL);
    assert_int_equal(r.status, 1);
    run_free(&r);
    r = run_cmd(SESAME_CITIZEN_SEARCH, NULL, 0, NULL);
    assert_int_equal(r.status, 2);
    run_free(&r);
}

/* ---- export ------------------------------------------------------------- */

static void
write_journal(void)
{
    char *text =
        sesame_asprintf("{\"event\":\"config_loaded\",\"time\":\"2026-01-01T00:00:00Z\"}\n"
                        "{\"event\":\"signin\",\"tenant\":\"ville-a\",\"account\":\"acct-marie\","
                        "\"provider\":\"fc\",\"time\":\"2026-01-02T09:00:00Z\",\"prev\":\"ab\"}\n"
                        "{\"event\":\"signin\",\"tenant\":\"ville-a\",\"account\":\"acct-jean\","
                        "\"time\":\"2026-01-02T09:01:00Z\"}\n"
                        "{\"event\":\"signin\",\"tenant\":\"ville-b\",\"account\":\"acct-marie\","
                        "\"time\":\"2026-01-02T09:02:00Z\"}\n"
                        "not json\n"
                        "{\"event\":\"checkpoint\",\"time\":\"2026-01-02T09:03:00Z\",\"sig\":\"xyz\"}\n"
                        "{\"event\":\"account_linked\",\"tenant\":\"ville-a\",\"account\":\"acct-marie\","
                        "\"time\":\"2026-01-02T09:00:01Z\"}\n");
    write_file(journal, text);
    free(text);
    /* a rotated file, older */
    char *rotated = sesame_asprintf("%s.1", journal);
    write_file(rotated, "{\"event\":\"account_created\",\"tenant\":\"ville-a\",\"account\":"
                        "\"acct-marie\",\"operator\":\"agent\",\"time\":\"2025-12-01T08:00:00Z\"}\n");
    free(rotated);
    rotated = sesame_asprintf("%s.2.gz", journal);
    write_file(rotated, "\x1f\x8b");
    free(rotated);
}

static void
test_export_everything_and_nothing_else(void **state)
{
    const struct person *people[] = {&marie, &jean};
    import(people, 2);
    sign_in(&marie, TENANT);
    sign_in(&jean, TENANT);
    int64_t now = (int64_t)time(NULL);
    char cookie1[44], cookie2[44], cookie3[44];
    add_session("acct-marie", "eidas1", now - 100, cookie1);
    add_session("acct-marie", "eidas2", now - 50, cookie2);
    add_session("acct-jean", "eidas1", now - 10, cookie3);
    write_journal();

    const char *argv[] = {"acct-marie"};
    struct run r = run_cmd(SESAME_CITIZEN_EXPORT, argv, 1, journal);
    assert_int_equal(r.status, 0);
    json_error_t jerr;
    json_t *doc = json_loads(r.out, 0, &jerr);
    if (doc == NULL)
        fail_msg("not JSON (%s):\n%s", jerr.text, r.out);
    assert_string_equal(json_string_value(json_object_get(doc, "tenant")), TENANT);
    json_t *acct = json_object_get(doc, "account");
    assert_string_equal(json_string_value(json_object_get(acct, "id")), "acct-marie");
    assert_string_equal(json_string_value(json_object_get(acct, "origin")), "import");
    assert_true(json_is_string(json_object_get(acct, "created")));
    assert_true(json_is_string(json_object_get(acct, "last_signin")));
    json_t *pd = json_object_get(acct, "personal_data");
    assert_string_equal(json_string_value(json_object_get(pd, "family_name")), "MARTIN");
    assert_string_equal(json_string_value(json_object_get(pd, "given_name")), "Marie Claire Odile");
    assert_string_equal(json_string_value(json_object_get(pd, "birthdate")), "1962-08-24");
    assert_string_equal(json_string_value(json_object_get(pd, "birthplace")), "75107");
    assert_string_equal(json_string_value(json_object_get(pd, "birthcountry")), "99100");
    assert_string_equal(json_string_value(json_object_get(json_object_get(acct, "attributes"), "quartier")),
                        "Centre-ville");
    json_t *links = json_object_get(doc, "links");
    assert_int_equal(json_array_size(links), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(links, 0), "provider")), "fc");
    assert_string_equal(json_string_value(json_object_get(json_array_get(links, 0), "sub")), "a1b2v1");
    /* both sessions, each by the latest time it can last (their records are
     * sealed with the citizen's cookie: nobody else opens them) */
    json_t *sessions = json_object_get(doc, "sessions");
    assert_int_equal(json_array_size(sessions), 2);
    char soon[32], later[32];
    sesame_citizen_iso8601(now, soon);
    sesame_citizen_iso8601(now + 3605, later);
    for (size_t i = 0; i < 2; i++) {
        json_t *s = json_array_get(sessions, i);
        assert_int_equal(json_object_size(s), 1);
        const char *end = json_string_value(json_object_get(s, "ends_at_the_latest"));
        assert_non_null(end);
        assert_true(strcmp(end, soon) > 0 && strcmp(end, later) < 0);
    }
    assert_non_null(strstr(r.out, "derived from the citizen's own cookie"));
    /* the audit events of this account in this tenant, oldest first, the
     * rotated file included */
    json_t *ev = json_object_get(doc, "audit_events");
    assert_int_equal(json_array_size(ev), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "event")),
                        "account_created");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 1), "event")), "signin");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 2), "event")), "account_linked");
    assert_non_null(strstr(r.out, "compressed journal file not read"));
    /* nothing of anyone else, and no secret: neither cookies, session
     * hashes, the ID token nor the claims of the session */
    static const char *const never[] = {"acct-jean", "c3d4v1",       "ALMEIDA",       "1979-03-02", "ville-b",
                                        "ID-TOKEN",  "SECRET-CLAIM", "config_loaded", "checkpoint"};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(never); i++)
        if (strstr(r.out, never[i]) != NULL)
            fail_msg("export holds %s:\n%s", never[i], r.out);
    const char *cookies[] = {cookie1, cookie2, cookie3};
    for (size_t i = 0; i < 3; i++)
        assert_null(strstr(r.out, cookies[i]));
    redisContext *c = connect_plain();
    redisReply *h = redisCommand(c, "SMEMBERS s:a:" TENANT ":acct-marie");
    for (size_t i = 0; i < h->elements; i++)
        assert_null(strstr(r.out, h->element[i]->str));
    freeReplyObject(h);
    redisFree(c);
    json_decref(doc);
    run_free(&r);

    /* without a journal, the export says so */
    r = run_cmd(SESAME_CITIZEN_EXPORT, argv, 1, NULL);
    assert_int_equal(r.status, 0);
    doc = json_loads(r.out, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(doc, "audit_events")), 0);
    assert_non_null(strstr(r.out, "no audit journal: [server] audit_log is not set"));
    json_decref(doc);
    run_free(&r);

    /* an erased account: what the journal still holds */
    c = connect_plain();
    char *err = NULL;
    assert_int_equal(sesame_store_erase(c, &opts, TENANT, "acct-marie", &err), SESAME_OK);
    redisFree(c);
    r = run_cmd(SESAME_CITIZEN_EXPORT, argv, 1, journal);
    assert_int_equal(r.status, 0);
    doc = json_loads(r.out, 0, NULL);
    assert_true(json_is_null(json_object_get(doc, "account")));
    assert_int_equal(json_array_size(json_object_get(doc, "audit_events")), 3);
    json_decref(doc);
    run_free(&r);
    /* nobody at all */
    const char *nobody[] = {"acct-nobody"};
    r = run_cmd(SESAME_CITIZEN_EXPORT, nobody, 1, journal);
    assert_int_equal(r.status, 3);
    assert_string_equal(r.out, "");
    run_free(&r);
}

/* ---- purge -------------------------------------------------------------- */

static void
test_purge_exactly_the_inactive(void **state)
{
    const struct person *people[] = {&marie, &jean, &karim, &paola};
    import(people, 4);
    sign_in(&marie, TENANT);
    sign_in(&jean, TENANT);
    int64_t now = (int64_t)time(NULL);
    /* marie: last sign-in 400 days ago; jean: yesterday; karim: never, but
     * imported 390 days ago; paola: never, imported today */
    cmd("ZADD t:acct:" TENANT ":signin %lld acct-marie", (long long)(now - 400 * 86400));
    cmd("ZADD t:acct:" TENANT ":signin %lld acct-jean", (long long)(now - 86400));
    cmd("ZADD t:acct:" TENANT ":created %lld acct-karim", (long long)(now - 390 * 86400));
    cmd("ZADD t:acct:" TENANT ":created %lld acct-marie", (long long)(now - 500 * 86400));
    char c1[44], c2[44], c3[44];
    add_session("acct-marie", "eidas1", now - 10, c1);
    add_session("acct-marie", "eidas1", now - 10, c2);
    add_session("acct-jean", "eidas1", now - 10, c3);
    long long keys_before = rint_cmd("DBSIZE");

    /* a dry run erases nothing */
    const char *dry[] = {"--inactive-since", "1y", "--dry-run"};
    struct run r = run_cmd(SESAME_CITIZEN_PURGE, dry, 3, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "would erase acct-marie ("));
    assert_non_null(strstr(r.out, "would erase acct-karim (created "));
    assert_non_null(strstr(r.out, ", last sign-in never)\n"));
    assert_non_null(strstr(r.out, "dry run: 2 accounts of tenant ville-a with no sign-in since "));
    assert_null(strstr(r.out, "acct-jean"));
    assert_null(strstr(r.out, "acct-paola"));
    assert_int_equal(rint_cmd("DBSIZE"), keys_before);
    run_free(&r);

    const char *argv[] = {"--inactive-since", "365d"};
    r = run_cmd(SESAME_CITIZEN_PURGE, argv, 2, NULL);
    assert_int_equal(r.status, 0);
    /* the oldest activity first */
    const char *m = strstr(r.out, "erased acct-marie (");
    const char *k = strstr(r.out, "erased acct-karim (");
    assert_non_null(m);
    assert_non_null(k);
    assert_true(m < k);
    assert_non_null(strstr(r.out, "), 2 sessions revoked\n"));
    assert_non_null(strstr(r.out, "purged 2 accounts of tenant ville-a with no sign-in since "));
    run_free(&r);
    /* exactly those: records, links, sub index, groups, scores, sessions */
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:acct-marie"), 0);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:acct-karim"), 0);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":subs:acct-marie"), 0);
    assert_int_equal(rint_cmd("EXISTS s:a:" TENANT ":acct-marie"), 0);
    assert_int_equal(rint_cmd("ZCARD t:acct:" TENANT ":created"), 2);
    assert_int_equal(rint_cmd("ZCARD t:acct:" TENANT ":signin"), 1);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:acct-jean"), 1);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:acct-paola"), 1);
    assert_int_equal(rint_cmd("SCARD s:a:" TENANT ":acct-jean"), 1);
    assert_int_equal(rint_cmd("EVAL %s 0", "return #redis.call('KEYS', 't:acct:*:sub:*')"), 1);
    assert_int_equal(rint_cmd("EVAL %s 0", "return #redis.call('KEYS', 't:acct:*:group:*')"), 2);
    assert_int_equal(rint_cmd("EVAL %s 0", "return #redis.call('KEYS', 's:s:*')"), 1);
    /* marie is unknown again; jean still signs in */
    redisContext *c = connect_plain();
    char *id = NULL, *err = NULL;
    assert_int_equal(sesame_store_find_sub(c, &opts, TENANT, "fc", marie.sub, &id, &err), SESAME_DECLINED);
    assert_int_equal(sesame_store_find_sub(c, &opts, TENANT, "fc", jean.sub, &id, &err), SESAME_OK);
    assert_string_equal(id, "acct-jean");
    free(id);
    /* a citizen who signs in between the listing and the erasure keeps the
     * account */
    assert_int_equal(sesame_store_erase_inactive(c, &opts, TENANT, "acct-jean", now - 2 * 86400, &err),
                     SESAME_DECLINED);
    assert_int_equal(sesame_store_erase_inactive(c, &opts, TENANT, "acct-paola", now - 86400, &err),
                     SESAME_DECLINED);
    redisFree(c);
    /* a second run finds nothing */
    r = run_cmd(SESAME_CITIZEN_PURGE, argv, 2, NULL);
    assert_non_null(strstr(r.out, "purged 0 accounts"));
    run_free(&r);
}

/* ---- arguments and helpers ---------------------------------------------- */

static void
expect_usage(enum sesame_citizen_cmd which, const char *const *argv, int argc, const char *msg)
{
    struct run r = run_cmd(which, argv, argc, NULL);
    assert_int_equal(r.status, 2);
    if (strstr(r.err, msg) == NULL)
        fail_msg("wanted %s in %s", msg, r.err);
    run_free(&r);
}

static void
test_arguments(void **state)
{
    expect_usage(SESAME_CITIZEN_LIST, (const char *[]){"--page", "0"}, 2, "--page: a number");
    expect_usage(SESAME_CITIZEN_LIST, (const char *[]){"--per-page", "1001"}, 2, "1..1000");
    expect_usage(SESAME_CITIZEN_LIST, (const char *[]){"--by", "name"}, 2, "last-signin or created");
    expect_usage(SESAME_CITIZEN_LIST, (const char *[]){"--page"}, 1, "missing value after --page");
    expect_usage(SESAME_CITIZEN_LIST, (const char *[]){"--name", "x"}, 2, "unknown option --name");
    expect_usage(SESAME_CITIZEN_EXPORT, NULL, 0, "takes 1 argument");
    expect_usage(SESAME_CITIZEN_EXPORT, (const char *[]){"a", "b"}, 2, "unexpected argument b");
    expect_usage(SESAME_CITIZEN_PURGE, NULL, 0, "give --inactive-since");
    expect_usage(SESAME_CITIZEN_PURGE, (const char *[]){"--inactive-since", "30"}, 2, "a number and a unit");
    expect_usage(SESAME_CITIZEN_PURGE, (const char *[]){"--inactive-since", "-3y"}, 2, "a number and a unit");
    enum sesame_citizen_cmd which;
    assert_true(sesame_citizen_is_command("purge", &which));
    assert_int_equal(which, SESAME_CITIZEN_PURGE);
    assert_false(sesame_citizen_is_command("show", &which));

    int64_t s = 0;
    assert_int_equal(sesame_citizen_parse_period("3y", &s), SESAME_OK);
    assert_int_equal(s, 3 * 365 * 86400);
    assert_int_equal(sesame_citizen_parse_period("1095d", &s), SESAME_OK);
    assert_int_equal(s, 1095 * 86400);
    assert_int_equal(sesame_citizen_parse_period("2s", &s), SESAME_OK);
    assert_int_equal(s, 2);
    assert_int_equal(sesame_citizen_parse_period("3 y", &s), SESAME_ERROR);
    assert_int_equal(sesame_citizen_parse_period("y", &s), SESAME_ERROR);

    char buf[32];
    sesame_citizen_iso8601(1767225600, buf);
    assert_string_equal(buf, "2026-01-01T00:00:00Z");
    sesame_citizen_iso8601(0, buf);
    assert_string_equal(buf, "never");
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_list_pages_and_orders, flush),
        cmocka_unit_test_setup(test_search_normalised_as_pivot, flush),
        cmocka_unit_test_setup(test_export_everything_and_nothing_else, flush),
        cmocka_unit_test_setup(test_purge_exactly_the_inactive, flush),
        cmocka_unit_test_setup(test_arguments, flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
