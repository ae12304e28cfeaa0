/*
 * Live tests of the redis account plugin: a real redis-server on a free
 * loopback port, the plugin loaded with dlopen through the account loader,
 * resolves on the worker pool, and a plain hiredis connection to look at the
 * keys. Test identities are those of /work/shared/fc-test-identities.csv.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
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

static int
group_setup(void **state)
{
    if (mkdtemp(redis_dir) == NULL)
        return -1;
    redis_port = free_port();
    snprintf(address, sizeof(address), "127.0.0.1:%d", redis_port);
    start_redis();
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
load_plugin(const char *match, const char *policy)
{
    struct sesame_conf_kv opts[] = {
        {"address", address, 2},
        {"prefix", "t:", 3},
        {"match", (char *)match, 4},
        {"policy", (char *)policy, 5},
        {"timeout", "2s", 6},
    };
    struct sesame_conf_accounts conf = {
        .name = "citizens", .plugin = "redis", .options = opts, .noptions = 5, .line = 1};
    char *err = NULL;
    struct sesame_account *acct = sesame_account_load("sesame.conf", &conf, NULL, &err);
    if (acct == NULL)
        fail_msg("%s", err);
    return acct;
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
    assert_int_equal(sesame_store_options_parse(&o, NULL, 0, &err), SESAME_OK);
    free(o.prefix);
    o.prefix = sesame_strdup("t:");
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
    char *linked = rstr_cmd("GET t:acct:" TENANT ":sub:fc:%s", marie.sub);
    assert_string_equal(linked, r1.account_id);
    free(linked);
    /* nothing personal is stored for a created account */
    assert_int_equal(rint_cmd("HEXISTS t:acct:" TENANT ":id:%s family_name", r1.account_id), 0);

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
    char *linked = rstr_cmd("GET t:acct:" TENANT ":sub:fc:%s", marie.sub);
    assert_string_equal(linked, "marie-001");
    free(linked);
    assert_int_equal(rint_cmd("SISMEMBER t:acct:" TENANT ":subs:marie-001 fc:%s", marie.sub), 1);

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
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":sub:fc:%s", pierre1.sub), 0);
    assert_int_equal(rint_cmd("EXISTS t:acct:" TENANT ":sub:fc:%s", pierre2.sub), 0);
    assert_int_equal(rint_cmd("SCARD t:acct:" TENANT ":subs:pierre-a"), 0);
    assert_int_equal(rint_cmd("SCARD t:acct:" TENANT ":subs:pierre-b"), 0);
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
    assert_int_equal(rint_cmd("SCARD t:acct:" TENANT ":subs:pierre-a"), 0);
    assert_int_equal(rint_cmd("SCARD t:acct:" TENANT ":subs:pierre-b"), 0);
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
    assert_int_equal(rint_cmd("SCARD t:acct:" TENANT ":subs:pierre-a"), 0);
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

    /* every key of the account is gone; the other session stays */
    rep = redisCommand(c, "KEYS t:*");
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    char keys[4][64];
    assert_int_equal(rep->elements, 2);
    for (size_t i = 0; i < rep->elements; i++)
        snprintf(keys[i], sizeof(keys[i]), "%s", rep->element[i]->str);
    freeReplyObject(rep);
    assert_true((strcmp(keys[0], "t:s:h3") == 0 && strcmp(keys[1], "t:a:" TENANT ":other") == 0) ||
                (strcmp(keys[1], "t:s:h3") == 0 && strcmp(keys[0], "t:a:" TENANT ":other") == 0));
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
    assert_int_equal(sesame_store_options_parse(&o, NULL, 0, &err), SESAME_OK);
    free(o.prefix);
    o.prefix = sesame_strdup("t:");
    struct sesame_plugin_kv badattr[] = {{"bad name", "x"}};
    struct sesame_store_import recs[] = {
        {.line = 2, "MARTIN", "Marie", "1962-08-24", "75107", "99100", "new-1", NULL, 0},
        {.line = 3, "MARTIN", "Marie", "24/08/1962", "75107", "99100", NULL, NULL, 0},
        {.line = 4, "MARTIN", "Marie", "1962-08-24", "75107", "99100", "new-1", NULL, 0},
        {.line = 5, "MARTIN", "Marie", "1962-08-24", "75107", "99100", "bad id", NULL, 0},
        {.line = 6, "MARTIN", "Marie", "1962-08-24", "75107", "99100", NULL, badattr, 1},
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
        {.line = 7, "MARTIN", "Marie", "1962-08-24", "75107", "99100", "fresh", NULL, 0},
        {.line = 8, "MARTIN", "Marie", "1962-08-24", "75107", "99100", "marie-001", NULL, 0},
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
        cmocka_unit_test_setup(test_redis_restart, flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
