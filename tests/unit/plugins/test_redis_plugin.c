/*
 * Live tests of the redis account plugin: a real redis-server on a free
 * loopback port, the plugin loaded with dlopen through the account loader,
 * resolves on the worker pool, and a plain hiredis connection to look at the
 * keys. Test identities are those of ../shared/fc-test-identities.csv.
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

#include <event2/thread.h>
#include <hiredis/hiredis.h>

#include "account/account.h"
#include "../../../plugins/redis/store.h"

#define TENANT "ville-a"

static int redis_port;
static pid_t redis_pid = -1;
static char redis_dir[] = "/tmp/sesame-test-redis-XXXXXX";
static char address[64];
static char key_file[128], other_key_file[128], short_key_file[128];

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
start_redis(void)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", redis_dir, "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    assert_true(redis_pid > 0);
    /* Wait (bounded) until it answers PING. */
    for (int i = 0; i < 1000; i++) {
        redisContext *c = connect_plain();
        if (c != NULL) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return;
        }
        usleep(10000);
    }
    fail_msg("redis-server did not start on port %d", redis_port);
}

static void
stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

static void
write_key(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        abort();
    fprintf(f, "%s\n", text);
    fclose(f);
    chmod(path, 0600);
}

static int
group_setup(void **state)
{
    if (mkdtemp(redis_dir) == NULL)
        return -1;
    redis_port = free_port();
    snprintf(address, sizeof(address), "127.0.0.1:%d", redis_port);
    start_redis();
    snprintf(key_file, sizeof(key_file), "%s/accounts.key", redis_dir);
    snprintf(other_key_file, sizeof(other_key_file), "%s/other.key", redis_dir);
    snprintf(short_key_file, sizeof(short_key_file), "%s/short.key", redis_dir);
    write_key(key_file, "YWNjb3VudHMta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3");
    write_key(other_key_file, "b3RoZXIta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODk=");
    write_key(short_key_file, "too-short");
    const char *b = getenv("SESAME_BUILDDIR");
    char *dir = sesame_asprintf("%s/.libs", b ? b : ".");
    setenv("SESAME_PLUGIN_DIR", dir, 1);
    free(dir);
    return 0;
}

static int
group_teardown(void **state)
{
    stop_redis();
    unlink(key_file);
    unlink(other_key_file);
    unlink(short_key_file);
    rmdir(redis_dir);
    return 0;
}

static int
flush(void **state)
{
    redisContext *c = connect_plain();
    redisReply *r = redisCommand(c, "FLUSHALL");
    freeReplyObject(r);
    redisFree(c);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static long long
rint_cmd(const char *fmt, ...)
{
    redisContext *c = connect_plain();
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static char *
rstr_cmd(const char *fmt, ...)
{
    redisContext *c = connect_plain();
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    char *s = r->type == REDIS_REPLY_STRING ? sesame_strdup(r->str) : NULL;
    freeReplyObject(r);
    redisFree(c);
    return s;
}

static struct sesame_account *
load_plugin_key(const char *match, const char *policy, const char *key)
{
    struct sesame_conf_kv opts[] = {
        {"address", address, 2},
        {"prefix", "t:", 3},
        {"match", (char *)match, 4},
        {"policy", (char *)policy, 5},
        {"timeout", "2s", 6},
        {"key_file", (char *)key, 7},
    };
    struct sesame_conf_accounts conf = {
        .name = "citizens", .plugin = "redis", .options = opts, .noptions = 6, .line = 1};
    char *err = NULL;
    struct sesame_account *acct = sesame_account_load("sesame.conf", &conf, NULL, &err);
    if (acct == NULL)
        fail_msg("%s", err);
    return acct;
}

static struct sesame_account *
load_plugin(const char *match, const char *policy)
{
    return load_plugin_key(match, policy, key_file);
}

/* Store options as the tool builds them: prefix t:, the test key. */
static void
store_options(struct sesame_store_options *o)
{
    char *err = NULL;
    assert_int_equal(sesame_store_options_parse(o, NULL, 0, &err), SESAME_OK);
    free(o->prefix);
    o->prefix = sesame_strdup("t:");
    if (sesame_store_load_key(&o->keys, key_file, &err) != SESAME_OK)
        fail_msg("%s", err);
}

/* The account linked to fc:SUB in TENANT, or NULL. */
static char *
linked_to(const char *sub)
{
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    store_options(&o);
    char *id = NULL, *err = NULL;
    int rc = sesame_store_find_sub(c, &o, TENANT, "fc", sub, &id, &err);
    assert_int_not_equal(rc, SESAME_ERROR);
    sesame_store_options_free(&o);
    redisFree(c);
    return id;
}

/* A test identity: login, then FranceConnect claims. */
struct person {
    const char *sub;
    const char *given_name, *family_name, *birthdate, *birthplace, *birthcountry;
};

static const struct person marie = {"a1b2v1", "Marie Claire Odile", "MARTIN", "1962-08-24",
                                    "75107", "99100"};
static const struct person jean = {"c3d4v1", "Jean-Baptiste", "D'ALMEIDA-LÉVÊQUE", "1979-03-02",
                                   "33063", "99100"};
static const struct person pierre1 = {"p1p1v1", "Pierre", "BERNARD", "1970-04-12", "31555",
                                      "99100"};
static const struct person pierre2 = {"p2p2v1", "Pierre", "BERNARD", "1970-04-12", "67482",
                                      "99100"};
static const struct person karim = {"k5k5v1", "Karim Yanis", "BENALI", "1985-11-30", "",
                                    "99352"};

static void
resolve_as(struct sesame_account *acct, const char *tenant, const struct person *p,
           const char *sub, struct sesame_plugin_result *res)
{
    struct sesame_plugin_kv claims[] = {
        {"given_name", p->given_name},   {"family_name", p->family_name},
        {"birthdate", p->birthdate},     {"birthplace", p->birthplace},
        {"birthcountry", p->birthcountry}, {"email", "someone@example.org"},
    };
    struct sesame_plugin_identity id = {tenant, "fc", sub ? sub : p->sub, claims, 6};
    sesame_account_resolve(acct, &id, res);
}

static void
import(const struct person *const *people, const char *const *ids, size_t n)
{
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    char *err = NULL;
    store_options(&o);
    struct sesame_store_import recs[8];
    struct sesame_plugin_kv attrs[] = {{"quartier", "Centre-ville"}};
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        recs[i] = (struct sesame_store_import){
            .line = (int)i + 1,
            .family_name = people[i]->family_name,
            .given_name = people[i]->given_name,
            .birthdate = people[i]->birthdate,
            .birthplace = people[i]->birthplace,
            .birthcountry = people[i]->birthcountry,
            .account_id = ids[i],
            .attrs = attrs,
            .nattrs = 1,
        };
    }
    char *out[8] = {NULL};
    if (sesame_store_import(c, &o, TENANT, recs, n, out, &err) != SESAME_OK)
        fail_msg("import: %s", err);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(out[i], ids[i]);
        free(out[i]);
    }
    sesame_store_options_free(&o);
    redisFree(c);
}

/* ---- tests -------------------------------------------------------------- */

static void
test_create_then_find(void **state)
{
    struct sesame_account *acct = load_plugin("sub", "create");
    struct sesame_plugin_result r1, r2, r3, r4;
    resolve_as(acct, TENANT, &marie, NULL, &r1);
    assert_int_equal(r1.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_int_equal(strlen(r1.account_id), 22);
    char *origin = rstr_cmd("HGET t:acct:" TENANT ":id:%s origin", r1.account_id);
    assert_string_equal(origin, "created");
    free(origin);
    char *linked = linked_to(marie.sub);
    assert_string_equal(linked, r1.account_id);
    free(linked);
    /* nothing personal is stored for a created account */
    assert_int_equal(rint_cmd("HEXISTS t:acct:" TENANT ":id:%s data", r1.account_id), 0);
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:%s", r1.account_id), 1);

    resolve_as(acct, TENANT, &marie, NULL, &r2);
    assert_int_equal(r2.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(r2.account_id, r1.account_id);

    /* another person, another account */
    resolve_as(acct, TENANT, &jean, NULL, &r3);
    assert_int_equal(r3.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_not_equal(r3.account_id, r1.account_id);

    /* tenants are separate namespaces */
    resolve_as(acct, "ville-b", &marie, NULL, &r4);
    assert_int_equal(r4.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_not_equal(r4.account_id, r1.account_id);
    assert_int_equal(rint_cmd("EXISTS t:acct:ville-b:id:%s", r4.account_id), 1);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:%s", r4.account_id), 0);
    sesame_account_unref(acct);
}

struct outcome {
    int calls;
    struct sesame_plugin_result res;
};

static void
on_resolved(const struct sesame_plugin_result *res, void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->res = *res;
}

static void
test_async_on_pool(void **state)
{
    struct sesame_account *acct = load_plugin("sub", "create");
    struct event_base *base = event_base_new();
    struct sesame_pool *pool = sesame_pool_new(4, 16, NULL);
    struct outcome o[8] = {{0}};
    char subs[8][16];
    char *err = NULL;
    for (int i = 0; i < 8; i++) {
        snprintf(subs[i], sizeof(subs[i]), "sub%dv1", i % 4);
        struct sesame_plugin_identity id = {TENANT, "fc", subs[i], NULL, 0};
        assert_int_equal(sesame_account_resolve_async(acct, pool, base, &id, 5000, on_resolved,
                                                      &o[i], NULL, &err),
                         SESAME_AGAIN);
    }
    assert_int_equal(event_base_dispatch(base), 1);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].res.status, SESAME_PLUGIN_RESULT_FOUND);
    }
    /* concurrent first sign-ins of one person make one account */
    for (int i = 0; i < 4; i++)
        assert_string_equal(o[i].res.account_id, o[i + 4].res.account_id);
    assert_int_equal(rint_cmd("EVAL %s 0", "return #redis.call('KEYS', 't:acct:*:id:*')"), 4);
    sesame_pool_free(pool);
    event_base_free(base);
    sesame_account_unref(acct);
}

static void
test_pivot_link(void **state)
{
    const struct person *people[] = {&marie, &jean, &karim};
    const char *ids[] = {"marie-001", "jean-002", "karim-003"};
    import(people, ids, 3);
    struct sesame_account *acct = load_plugin("pivot", "link-only");
    struct sesame_plugin_result r;

    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(r.account_id, "marie-001");
    assert_int_equal(r.nattributes, 1);
    assert_string_equal(r.attributes[0].name, "quartier");
    assert_string_equal(r.attributes[0].value, "Centre-ville");
    char *linked = linked_to(marie.sub);
    assert_string_equal(linked, "marie-001");
    free(linked);
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:marie-001"), 1);

    /* second sign-in: found by sub */
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_string_equal(r.account_id, "marie-001");

    /* accents, hyphens, apostrophes and case: the commune wrote the record
     * differently; and an empty birthplace (born abroad) */
    resolve_as(acct, TENANT, &jean, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(r.account_id, "jean-002");
    resolve_as(acct, TENANT, &karim, NULL, &r);
    assert_string_equal(r.account_id, "karim-003");

    /* a second sub of the same provider with the same pivot is not linked */
    resolve_as(acct, TENANT, &marie, "otherv1", &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(r.reason, SESAME_PLUGIN_REASON_LINK_ONLY);

    /* another tenant does not see this tenant's records */
    resolve_as(acct, "ville-b", &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);

    /* with match = sub, no pivot matching */
    sesame_account_unref(acct);
    acct = load_plugin("sub", "link-only");
    resolve_as(acct, TENANT, &marie, "thirdv1", &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    sesame_account_unref(acct);
}

static void
test_jean_recorded_plainly(void **state)
{
    struct person plain = jean;
    plain.family_name = "D ALMEIDA LEVEQUE";
    plain.given_name = "JEAN BAPTISTE";
    const struct person *people[] = {&plain};
    const char *ids[] = {"jean-100"};
    import(people, ids, 1);
    struct sesame_account *acct = load_plugin("pivot", "deny");
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &jean, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(r.account_id, "jean-100");
    sesame_account_unref(acct);
}

static void
test_homonyms_both_registered(void **state)
{
    const struct person *people[] = {&pierre1, &pierre2};
    const char *ids[] = {"pierre-a", "pierre-b"};
    import(people, ids, 2);
    struct sesame_account *acct = load_plugin("pivot", "link-only");
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &pierre1, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(r.reason, SESAME_PLUGIN_REASON_LINK_ONLY);
    resolve_as(acct, TENANT, &pierre2, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_null(linked_to(pierre1.sub));
    assert_null(linked_to(pierre2.sub));
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:pierre-a"), 0);
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:pierre-b"), 0);
    sesame_account_unref(acct);

    /* with create, each gets a new account, never a pre-registered one */
    acct = load_plugin("pivot", "create");
    struct sesame_plugin_result r1, r2;
    resolve_as(acct, TENANT, &pierre1, NULL, &r1);
    resolve_as(acct, TENANT, &pierre2, NULL, &r2);
    assert_int_equal(r1.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_int_equal(r2.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_not_equal(r1.account_id, "pierre-a");
    assert_string_not_equal(r1.account_id, "pierre-b");
    assert_string_not_equal(r2.account_id, "pierre-a");
    assert_string_not_equal(r2.account_id, "pierre-b");
    assert_string_not_equal(r1.account_id, r2.account_id);
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:pierre-a"), 0);
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:pierre-b"), 0);
    sesame_account_unref(acct);
}

static void
test_homonym_other_birthplace(void **state)
{
    const struct person *people[] = {&pierre1};
    const char *ids[] = {"pierre-a"};
    import(people, ids, 1);
    struct sesame_account *acct = load_plugin("pivot", "link-only");
    struct sesame_plugin_result r;
    /* pierre2 (born elsewhere) signs in first: not linked to pierre1's record */
    resolve_as(acct, TENANT, &pierre2, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(r.reason, SESAME_PLUGIN_REASON_LINK_ONLY);
    assert_int_equal(rint_cmd("HLEN t:acct:" TENANT ":subs:pierre-a"), 0);
    /* pierre1 is */
    resolve_as(acct, TENANT, &pierre1, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    assert_string_equal(r.account_id, "pierre-a");
    /* and pierre2 still is not */
    resolve_as(acct, TENANT, &pierre2, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    sesame_account_unref(acct);
}

static void
test_policies(void **state)
{
    struct sesame_account *acct = load_plugin("pivot", "deny");
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(r.reason, SESAME_PLUGIN_REASON_DENY);
    sesame_account_unref(acct);
    acct = load_plugin("sub", "link-only");
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(r.reason, SESAME_PLUGIN_REASON_LINK_ONLY);
    sesame_account_unref(acct);
    /* nothing was written */
    assert_int_equal(rint_cmd("DBSIZE"), 0);
}

static void
test_erase(void **state)
{
    const struct person *people[] = {&marie};
    const char *ids[] = {"marie-001"};
    import(people, ids, 1);
    struct sesame_account *acct = load_plugin("pivot", "link-only");
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_string_equal(r.account_id, "marie-001");
    /* two sessions as the session module writes them, and one of someone else */
    redisContext *c = connect_plain();
    redisReply *rep;
    rep = redisCommand(c, "MSET t:s:h1 x t:s:h2 y t:s:h3 z");
    freeReplyObject(rep);
    rep = redisCommand(c, "SADD t:a:" TENANT ":marie-001 h1 h2");
    freeReplyObject(rep);
    rep = redisCommand(c, "SADD t:a:" TENANT ":other h3");
    freeReplyObject(rep);
    redisContext *sub = connect_plain();
    rep = redisCommand(sub, "SUBSCRIBE t:revoked");
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    freeReplyObject(rep);

    char *err = NULL;
    assert_int_equal(sesame_account_erase(acct, TENANT, "marie-001", &err), SESAME_OK);

    /* every key of the account is gone (its indexes too); the other session
     * and the tenant's key check stay */
    rep = redisCommand(c, "EVAL %s 0", "local k = redis.call('KEYS', 't:*') table.sort(k) "
                                       "return table.concat(k, ' ')");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "t:a:" TENANT ":other t:acct:" TENANT ":key t:s:h3");
    freeReplyObject(rep);
    /* both revocations were published */
    bool seen1 = false, seen2 = false;
    for (int i = 0; i < 2; i++) {
        void *vr = NULL;
        assert_int_equal(redisGetReply(sub, &vr), REDIS_OK);
        redisReply *m = vr;
        assert_int_equal(m->elements, 3);
        assert_string_equal(m->element[1]->str, "t:revoked");
        seen1 |= strcmp(m->element[2]->str, "h1") == 0;
        seen2 |= strcmp(m->element[2]->str, "h2") == 0;
        freeReplyObject(m);
    }
    assert_true(seen1 && seen2);
    redisFree(sub);
    redisFree(c);

    /* the person is unknown again */
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    /* erasing again is fine */
    assert_int_equal(sesame_account_erase(acct, TENANT, "marie-001", &err), SESAME_OK);
    sesame_account_unref(acct);
}

static void
test_import_all_or_nothing(void **state)
{
    const struct person *people[] = {&marie};
    const char *ids[] = {"marie-001"};
    import(people, ids, 1);
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    char *err = NULL;
    store_options(&o);
    struct sesame_plugin_kv badattr[] = {{"bad name", "x"}};
    struct sesame_store_import recs[] = {
        {.line = 2, "MARTIN", "Anne", "1962-08-24", "75107", "99100", "new-1", NULL, 0},
        {.line = 3, "MARTIN", "Bea", "24/08/1962", "75107", "99100", NULL, NULL, 0},
        {.line = 4, "MARTIN", "Chloe", "1962-08-24", "75107", "99100", "new-1", NULL, 0},
        {.line = 5, "MARTIN", "Dora", "1962-08-24", "75107", "99100", "bad id", NULL, 0},
        {.line = 6, "MARTIN", "Eva", "1962-08-24", "75107", "99100", NULL, badattr, 1},
    };
    char *out[5] = {NULL};
    assert_int_equal(sesame_store_import(c, &o, TENANT, recs, 5, out, &err), SESAME_ERROR);
    assert_string_equal(err, "line 3: birthdate: not YYYY-MM-DD\n"
                             "line 4: account_id new-1 already used on line 2\n"
                             "line 5: account_id: 1..128 of [A-Za-z0-9._~@:+-]\n"
                             "line 6: attribute #1: name must be 1..64 of [A-Za-z0-9_.-]");
    free(err);
    err = NULL;
    /* an id already in Redis */
    struct sesame_store_import again[] = {
        {.line = 7, "MARTIN", "Fanny", "1962-08-24", "75107", "99100", "fresh", NULL, 0},
        {.line = 8, "MARTIN", "Gina", "1962-08-24", "75107", "99100", "marie-001", NULL, 0},
    };
    assert_int_equal(sesame_store_import(c, &o, TENANT, again, 2, out, &err), SESAME_ERROR);
    assert_string_equal(err, "line 8: account marie-001 already exists");
    free(err);
    /* nothing of either batch was written */
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:new-1"), 0);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":id:fresh"), 0);
    /* the connection is still usable */
    redisReply *rep = redisCommand(c, "PING");
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    sesame_store_options_free(&o);
    redisFree(c);
}

static void
test_redis_restart(void **state)
{
    struct sesame_account *acct = load_plugin("sub", "create");
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    stop_redis();
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_non_null(strstr(r.error, "account store unavailable"));
    start_redis();
    /* the pooled connection died: the plugin reconnects (data is gone: new account) */
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    sesame_account_unref(acct);
}

static void
check_init_error(struct sesame_conf_kv *opts, size_t n, const char *want)
{
    struct sesame_conf_accounts conf = {
        .name = "citizens", .plugin = "redis", .options = opts, .noptions = n, .line = 1};
    char *err = NULL;
    assert_null(sesame_account_load("sesame.conf", &conf, NULL, &err));
    assert_string_equal(err, want);
    free(err);
}

static void
test_options(void **state)
{
    struct sesame_conf_kv o1[] = {{"policy", "maybe", 4}};
    check_init_error(o1, 1, "sesame.conf:1: accounts citizens: plugin \"redis\": line 4: policy: "
                            "\"create\", \"link-only\" or \"deny\"");
    struct sesame_conf_kv o2[] = {{"colour", "blue", 5}};
    check_init_error(o2, 1, "sesame.conf:1: accounts citizens: plugin \"redis\": line 5: colour: "
                            "unknown option of the redis plugin");
    struct sesame_conf_kv o3[] = {{"address", "::1:6379", 6}};
    check_init_error(o3, 1, "sesame.conf:1: accounts citizens: plugin \"redis\": line 6: address: "
                            "IPv6 addresses go in brackets: [::1]:6379");
    struct sesame_conf_kv o4[] = {{"password_file", "/nonexistent/pw", 7}};
    check_init_error(o4, 1, "sesame.conf:1: accounts citizens: plugin \"redis\": line 7: "
                            "password_file: cannot open /nonexistent/pw: No such file or "
                            "directory");
    struct sesame_conf_kv o5[] = {{"match", "pivot", 2}, {"match", "sub", 3}};
    check_init_error(o5, 2, "sesame.conf:1: accounts citizens: plugin \"redis\": line 3: match: "
                            "given twice");
    /* the records' key is required, and must be long enough */
    struct sesame_conf_kv o6[] = {{"match", "pivot", 2}};
    check_init_error(o6, 1, "sesame.conf:1: accounts citizens: plugin \"redis\": key_file: "
                            "missing: the account records are encrypted with the key in this "
                            "file, at least 32 characters (create one with: head -c 32 "
                            "/dev/urandom | base64 > /etc/sesame/accounts.key; chmod 600 it)");
    struct sesame_conf_kv o7[] = {{"key_file", short_key_file, 9}};
    char *want = sesame_asprintf("sesame.conf:1: accounts citizens: plugin \"redis\": line 9: "
                                 "key_file: the key in %s is too short: it needs at least 32 "
                                 "characters (create one with: head -c 32 /dev/urandom | base64 "
                                 "> %s)", short_key_file, short_key_file);
    check_init_error(o7, 1, want);
    free(want);

    struct sesame_store_server srv = {0};
    char *err = NULL;
    assert_int_equal(sesame_store_parse_address(&srv, "[::1]:6380", &err), SESAME_OK);
    assert_string_equal(srv.host, "::1");
    assert_int_equal(srv.port, 6380);
    assert_int_equal(sesame_store_parse_address(&srv, "redis.local", &err), SESAME_OK);
    assert_string_equal(srv.host, "redis.local");
    assert_int_equal(srv.port, 6379);
    assert_int_equal(sesame_store_parse_address(&srv, "/run/redis.sock", &err), SESAME_OK);
    assert_null(srv.host);
    assert_string_equal(srv.unix_path, "/run/redis.sock");
    assert_int_equal(sesame_store_parse_address(&srv, "unix:/run/r.sock", &err), SESAME_OK);
    assert_string_equal(srv.unix_path, "/run/r.sock");
    assert_int_equal(sesame_store_parse_address(&srv, "h:0", &err), SESAME_ERROR);
    free(err);
    free(srv.host);
    free(srv.unix_path);
}

/* ---- encryption at rest ------------------------------------------------- */

static void
append(char **buf, size_t *len, const char *s, size_t n)
{
    *buf = sesame_realloc(*buf, *len + n + 2);
    memcpy(*buf + *len, s, n);
    (*buf)[*len + n] = '\n';
    *len += n + 1;
    (*buf)[*len] = '\0';
}

/* What a Redis dump holds: every key name and value (redis-cli --scan, then
 * GET, HGETALL, SMEMBERS or ZRANGE WITHSCORES), one per line. */
static char *
dump_all(void)
{
    redisContext *c = connect_plain();
    char *buf = NULL;
    size_t len = 0;
    append(&buf, &len, "", 0);
    redisReply *keys = redisCommand(c, "KEYS *");
    assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < keys->elements; i++) {
        const char *k = keys->element[i]->str;
        append(&buf, &len, k, keys->element[i]->len);
        redisReply *t = redisCommand(c, "TYPE %s", k);
        redisReply *v = NULL;
        if (strcmp(t->str, "string") == 0)
            v = redisCommand(c, "GET %s", k);
        else if (strcmp(t->str, "hash") == 0)
            v = redisCommand(c, "HGETALL %s", k);
        else if (strcmp(t->str, "set") == 0)
            v = redisCommand(c, "SMEMBERS %s", k);
        else if (strcmp(t->str, "zset") == 0)
            v = redisCommand(c, "ZRANGE %s 0 -1 WITHSCORES", k);
        else
            fail_msg("unexpected type %s of %s", t->str, k);
        if (v->type == REDIS_REPLY_STRING)
            append(&buf, &len, v->str, v->len);
        for (size_t j = 0; v->type == REDIS_REPLY_ARRAY && j < v->elements; j++)
            append(&buf, &len, v->element[j]->str, v->element[j]->len);
        freeReplyObject(v);
        freeReplyObject(t);
    }
    freeReplyObject(keys);
    redisFree(c);
    for (size_t i = 0; i < len; i++)
        if (buf[i] >= 'A' && buf[i] <= 'Z')
            buf[i] = (char)(buf[i] - 'A' + 'a');
    return buf;
}

static bool
is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* True when `word` (lower-case) appears in the dump as a whole token
 * (bounded by characters other than letters and digits). */
static bool
has_token(const char *dump, const char *word)
{
    size_t n = strlen(word), len = strlen(dump);
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(dump + i, word, n) == 0 && (i == 0 || !is_alnum(dump[i - 1])) &&
            !is_alnum(dump[i + n]))
            return true;
    }
    return false;
}

static void
test_dump_has_no_personal_data(void **state)
{
    /* ids that do not spell names, so that any name found is a leak */
    const struct person *people[] = {&marie, &jean, &karim};
    const char *ids[] = {"acct-1", "acct-2", "acct-3"};
    import(people, ids, 3);
    struct sesame_account *acct = load_plugin("pivot", "link-only");
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_string_equal(r.account_id, "acct-1");
    resolve_as(acct, TENANT, &jean, NULL, &r);
    assert_string_equal(r.account_id, "acct-2");
    sesame_account_unref(acct);
    /* an account created at sign-in, linked to its sub */
    acct = load_plugin("sub", "create");
    resolve_as(acct, TENANT, &pierre1, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    char *created = sesame_strdup(r.account_id);

    char *dump = dump_all();
    /* names (as written and normalised), birth data, subs, attributes */
    static const char *const words[] = {
        "martin", "marie", "claire", "odile", "almeida", "lévêque", "leveque", "jean",
        "baptiste", "benali", "karim", "yanis", "bernard", "pierre", "centre",
        "1962", "1979", "1985", "1970", "75107", "33063", "31555", "99100", "99352",
        "a1b2v1", "c3d4v1", "p1p1v1", "quartier",
    };
    for (size_t i = 0; i < SESAME_ARRAY_LEN(words); i++)
        if (has_token(dump, words[i]))
            fail_msg("\"%s\" is in clear in the Redis dump:\n%s", words[i], dump);
    static const char *const dates[] = {"1962-08-24", "1979-03-02", "1985-11-30", "1970-04-12",
                                        "centre-ville"};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(dates); i++)
        if (strstr(dump, dates[i]) != NULL)
            fail_msg("\"%s\" is in clear in the Redis dump", dates[i]);
    free(dump);

    /* lookups still work: by sub (with the attributes), by pivot, by hand */
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_string_equal(r.account_id, "acct-1");
    assert_int_equal(r.nattributes, 1);
    assert_string_equal(r.attributes[0].value, "Centre-ville");
    resolve_as(acct, TENANT, &pierre1, NULL, &r);
    assert_string_equal(r.account_id, created);
    sesame_account_unref(acct);
    acct = load_plugin("pivot", "link-only");
    resolve_as(acct, TENANT, &karim, NULL, &r);
    assert_string_equal(r.account_id, "acct-3");
    sesame_account_unref(acct);
    char *id = linked_to(jean.sub);
    assert_string_equal(id, "acct-2");
    free(id);
    /* and the tool reads the records back in clear */
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    store_options(&o);
    struct sesame_store_account a;
    char *err = NULL;
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-2", &a, &err), SESAME_OK);
    assert_string_equal(sesame_store_account_field(&a, "family_name"), "D'ALMEIDA-LÉVÊQUE");
    assert_string_equal(sesame_store_account_field(&a, "given_name"), "Jean-Baptiste");
    assert_string_equal(sesame_store_account_field(&a, "birthdate"), "1979-03-02");
    assert_string_equal(sesame_store_account_field(&a, "birthplace"), "33063");
    assert_string_equal(sesame_store_account_field(&a, "birthcountry"), "99100");
    assert_string_equal(a.origin, "import");
    assert_int_equal(a.nlinks, 1);
    assert_string_equal(a.links[0], "fc:c3d4v1");
    assert_int_equal(a.nattrs, 1);
    assert_string_equal(a.attrs[0].key, "quartier");
    sesame_store_account_free(&a);
    assert_int_equal(sesame_store_get(c, &o, TENANT, created, &a, &err), SESAME_OK);
    assert_string_equal(a.origin, "created");
    assert_int_equal(a.nfields, 0);
    assert_string_equal(a.links[0], "fc:p1p1v1");
    sesame_store_account_free(&a);
    free(created);
    sesame_store_options_free(&o);
    redisFree(c);
}

static void
test_sealed_values_bound_to_their_key(void **state)
{
    const struct person *people[] = {&marie, &jean};
    const char *ids[] = {"acct-1", "acct-2"};
    import(people, ids, 2);
    /* a record's sealed data moved to another record does not open */
    redisContext *c = connect_plain();
    redisReply *rep = redisCommand(c, "HGET t:acct:" TENANT ":id:acct-1 data");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    redisReply *set = redisCommand(c, "HSET t:acct:" TENANT ":id:acct-2 data %b", rep->str,
                                   rep->len);
    freeReplyObject(set);
    freeReplyObject(rep);
    struct sesame_store_options o;
    store_options(&o);
    struct sesame_store_account a;
    char *err = NULL;
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-2", &a, &err), SESAME_ERROR);
    assert_string_equal(err, "account acct-2: the record does not open (another key_file?)");
    free(err);
    err = NULL;
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-1", &a, &err), SESAME_OK);
    sesame_store_account_free(&a);
    sesame_store_options_free(&o);
    redisFree(c);
}

static void
test_wrong_key_refused(void **state)
{
    const struct person *people[] = {&marie};
    const char *ids[] = {"acct-1"};
    import(people, ids, 1);
    /* another key_file finds nobody by hash: it must say so rather than
     * create a second account for everyone */
    struct sesame_account *acct = load_plugin_key("pivot", "create", other_key_file);
    struct sesame_plugin_result r;
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_non_null(strstr(r.error, "not the key the records of this tenant were written with"));
    resolve_as(acct, TENANT, &jean, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_ERROR);
    assert_int_equal(rint_cmd("ZCARD t:acct:" TENANT ":created"), 1);
    /* another tenant starts with this key */
    resolve_as(acct, "ville-b", &jean, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_FOUND);
    sesame_account_unref(acct);
    /* and the tool refuses too */
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    store_options(&o);
    assert_int_equal(sesame_store_load_key(&o.keys, other_key_file, NULL), SESAME_OK);
    struct sesame_store_account a;
    char *err = NULL, *id = NULL;
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-1", &a, &err), SESAME_ERROR);
    assert_string_equal(err, "the key_file is not the key the records of this tenant were "
                             "written with");
    free(err);
    err = NULL;
    assert_int_equal(sesame_store_find_sub(c, &o, TENANT, "fc", marie.sub, &id, &err),
                     SESAME_ERROR);
    free(err);
    err = NULL;
    struct sesame_store_import rec = {1, "DURAND", "Paul", "1960-10-10", "69383", "99100", NULL,
                                      NULL, 0};
    char *out[1] = {NULL};
    assert_int_equal(sesame_store_import(c, &o, TENANT, &rec, 1, out, &err), SESAME_ERROR);
    free(err);
    sesame_store_options_free(&o);
    redisFree(c);
}

static void
test_last_signin_recorded(void **state)
{
    const struct person *people[] = {&marie};
    const char *ids[] = {"acct-1"};
    import(people, ids, 1);
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    store_options(&o);
    struct sesame_store_account a;
    char *err = NULL;
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-1", &a, &err), SESAME_OK);
    assert_int_equal(a.last_signin, 0); /* imported, never signed in */
    int64_t now = (int64_t)time(NULL);
    assert_true(a.created >= now - 5 && a.created <= now);
    sesame_store_account_free(&a);
    /* a pretend earlier sign-in, then a real one through the plugin */
    freeReplyObject(redisCommand(c, "ZADD t:acct:" TENANT ":signin 1000 acct-1"));
    struct sesame_account *acct = load_plugin("pivot", "link-only");
    struct sesame_plugin_result r;
    int64_t t0 = (int64_t)time(NULL);
    resolve_as(acct, TENANT, &marie, NULL, &r);
    int64_t t1 = (int64_t)time(NULL);
    assert_string_equal(r.account_id, "acct-1");
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-1", &a, &err), SESAME_OK);
    assert_true(a.last_signin >= t0 && a.last_signin <= t1);
    assert_true(a.linked >= t0 && a.linked <= t1);
    sesame_store_account_free(&a);
    /* found by sub the next time: updated again */
    freeReplyObject(redisCommand(c, "ZADD t:acct:" TENANT ":signin 1000 acct-1"));
    resolve_as(acct, TENANT, &marie, NULL, &r);
    assert_int_equal(sesame_store_get(c, &o, TENANT, "acct-1", &a, &err), SESAME_OK);
    assert_true(a.last_signin >= t0);
    sesame_store_account_free(&a);
    /* a refused sign-in records nothing */
    resolve_as(acct, TENANT, &jean, NULL, &r);
    assert_int_equal(r.status, SESAME_PLUGIN_RESULT_NONE);
    assert_int_equal(rint_cmd("ZCARD t:acct:" TENANT ":signin"), 1);
    sesame_account_unref(acct);
    sesame_store_options_free(&o);
    redisFree(c);
}

static void
test_import_dates(void **state)
{
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    store_options(&o);
    char future[16];
    time_t later = time(NULL) + 400 * 86400;
    struct tm tm;
    localtime_r(&later, &tm);
    strftime(future, sizeof(future), "%Y-%m-%d", &tm);
    struct sesame_store_import recs[] = {
        {.line = 1, "MARTIN", "Anne", "1962-02-30", "75107", "99100", NULL, NULL, 0},
        {.line = 2, "MARTIN", "Bea", "1900-02-29", "75107", "99100", NULL, NULL, 0},
        {.line = 3, "MARTIN", "Chloe", "2000-02-29", "75107", "99100", NULL, NULL, 0},
        {.line = 4, "MARTIN", "Dora", "1970-13-01", "75107", "99100", NULL, NULL, 0},
        {.line = 5, "MARTIN", "Eva", "1970-00-05", "75107", "99100", NULL, NULL, 0},
        {.line = 6, "MARTIN", "Fanny", "1970-00-00", "", "99352", NULL, NULL, 0},
        {.line = 7, "MARTIN", "Gina", "1970-05-00", "", "99352", NULL, NULL, 0},
        {.line = 8, "MARTIN", "Hugo", future, "75107", "99100", NULL, NULL, 0},
        {.line = 9, "MARTIN", "Ines", "1750-01-01", "75107", "99100", NULL, NULL, 0},
        {.line = 10, "MARTIN", "Jules", "1984-04-31", "75107", "99100", NULL, NULL, 0},
        {.line = 11, "MARTIN", "Karl", "1984-4-30", "75107", "99100", NULL, NULL, 0},
    };
    char *out[11] = {NULL};
    char *err = NULL;
    assert_int_equal(sesame_store_import(c, &o, TENANT, recs, 11, out, &err), SESAME_ERROR);
    assert_string_equal(err, "line 1: birthdate: not a calendar date\n"
                             "line 2: birthdate: not a calendar date\n"
                             "line 4: birthdate: not a calendar date\n"
                             "line 5: birthdate: not a calendar date\n"
                             "line 8: birthdate: in the future\n"
                             "line 9: birthdate: before 1800\n"
                             "line 10: birthdate: not a calendar date\n"
                             "line 11: birthdate: not YYYY-MM-DD");
    free(err);
    err = NULL;
    assert_int_equal(rint_cmd("DBSIZE"), 0);
    /* leap day, unknown day, unknown month and day: fine */
    struct sesame_store_import good[] = {recs[2], recs[5], recs[6]};
    assert_int_equal(sesame_store_import(c, &o, TENANT, good, 3, out, &err), SESAME_OK);
    for (size_t i = 0; i < 3; i++)
        free(out[i]);
    assert_null(sesame_store_birthdate_problem("2024-02-29"));
    assert_string_equal(sesame_store_birthdate_problem("2023-02-29"), "not a calendar date");
    assert_string_equal(sesame_store_birthdate_problem("2023-06-31"), "not a calendar date");
    assert_string_equal(sesame_store_birthdate_problem("24/08/1962"), "not YYYY-MM-DD");
    sesame_store_options_free(&o);
    redisFree(c);
}

static void
test_import_refuses_persons_already_present(void **state)
{
    redisContext *c = connect_plain();
    struct sesame_store_options o;
    store_options(&o);
    /* the same person written twice, differently; a homonym born elsewhere
     * is another person */
    struct sesame_store_import recs[] = {
        {.line = 2, "D'ALMEIDA-LÉVÊQUE", "Jean-Baptiste", "1979-03-02", "33063", "99100",
         "jean-1", NULL, 0},
        {.line = 3, "BERNARD", "Pierre", "1970-04-12", "31555", "99100", "pierre-a", NULL, 0},
        {.line = 4, "d almeida leveque", "JEAN BAPTISTE", "1979-03-02", "33063", "99100",
         "jean-2", NULL, 0},
        {.line = 5, "BERNARD", "Pierre", "1970-04-12", "67482", "99100", "pierre-b", NULL, 0},
    };
    char *out[4] = {NULL};
    char *err = NULL;
    assert_int_equal(sesame_store_import(c, &o, TENANT, recs, 4, out, &err), SESAME_ERROR);
    assert_string_equal(err, "line 4: the same person (names, birth date and place) as line 2");
    free(err);
    err = NULL;
    assert_int_equal(rint_cmd("DBSIZE"), 0);
    struct sesame_store_import first[] = {recs[0], recs[1], recs[3]};
    assert_int_equal(sesame_store_import(c, &o, TENANT, first, 3, out, &err), SESAME_OK);
    for (size_t i = 0; i < 3; i++)
        free(out[i]);
    /* a later file with a person already registered */
    struct sesame_store_import again[] = {
        {.line = 1, "DURAND", "Paul", "1960-10-10", "69383", "99100", NULL, NULL, 0},
        {.line = 2, "Bernard", "pierre", "1970-04-12", "67482", "99100", NULL, NULL, 0},
    };
    assert_int_equal(sesame_store_import(c, &o, TENANT, again, 2, out, &err), SESAME_ERROR);
    assert_string_equal(err, "line 2: this person (names, birth date and place) is already "
                             "registered: account pierre-b");
    free(err);
    err = NULL;
    assert_int_equal(rint_cmd("ZCARD t:acct:" TENANT ":created"), 3);
    /* another tenant is another register */
    assert_int_equal(sesame_store_import(c, &o, "ville-b", again, 2, out, &err), SESAME_OK);
    free(out[0]);
    free(out[1]);
    sesame_store_options_free(&o);
    redisFree(c);
}

int
main(void)
{
    evthread_use_pthreads();
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_create_then_find, flush),
        cmocka_unit_test_setup(test_async_on_pool, flush),
        cmocka_unit_test_setup(test_pivot_link, flush),
        cmocka_unit_test_setup(test_jean_recorded_plainly, flush),
        cmocka_unit_test_setup(test_homonyms_both_registered, flush),
        cmocka_unit_test_setup(test_homonym_other_birthplace, flush),
        cmocka_unit_test_setup(test_policies, flush),
        cmocka_unit_test_setup(test_erase, flush),
        cmocka_unit_test_setup(test_import_all_or_nothing, flush),
        cmocka_unit_test_setup(test_options, flush),
        cmocka_unit_test_setup(test_dump_has_no_personal_data, flush),
        cmocka_unit_test_setup(test_sealed_values_bound_to_their_key, flush),
        cmocka_unit_test_setup(test_wrong_key_refused, flush),
        cmocka_unit_test_setup(test_last_signin_recorded, flush),
        cmocka_unit_test_setup(test_import_dates, flush),
        cmocka_unit_test_setup(test_import_refuses_persons_already_present, flush),
        cmocka_unit_test_setup(test_redis_restart, flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
