/* Unit tests of gate/ratelimit.h: the bucket table (rates, bounded memory,
 * eviction) and the client address behind trusted proxies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "gate/ratelimit.h"

static void
key_of(unsigned char key[SESAME_RATELIMIT_KEY_LEN], unsigned n)
{
    memset(key, 0, SESAME_RATELIMIT_KEY_LEN);
    memcpy(key, &n, sizeof(n));
}

static void
test_burst_then_steady_rate(void **state)
{
    (void)state;
    struct sesame_ratelimit_table *t = sesame_ratelimit_table_new(16);
    struct sesame_conf_rate r = {5, 60000}; /* 5/m: one every 12 s */
    unsigned char k[SESAME_RATELIMIT_KEY_LEN];
    key_of(k, 1);
    uint64_t now = 1000000;
    for (int i = 0; i < 5; i++)
        assert_int_equal(sesame_ratelimit_take(t, k, &r, now), 0);
    uint64_t wait = sesame_ratelimit_take(t, k, &r, now);
    assert_int_equal(wait, 12000);
    /* a refusal takes nothing: the wait does not grow */
    assert_int_equal(sesame_ratelimit_take(t, k, &r, now), 12000);
    assert_int_equal(sesame_ratelimit_take(t, k, &r, now + 11999), 1);
    assert_int_equal(sesame_ratelimit_take(t, k, &r, now + 12000), 0);
    assert_true(sesame_ratelimit_take(t, k, &r, now + 12000) > 0);
    /* a whole period idle: the burst is back, no more */
    now += 12000 + 60000;
    for (int i = 0; i < 5; i++)
        assert_int_equal(sesame_ratelimit_take(t, k, &r, now), 0);
    assert_true(sesame_ratelimit_take(t, k, &r, now) > 0);
    sesame_ratelimit_table_free(t);
}

static void
test_off_and_independent_keys(void **state)
{
    (void)state;
    struct sesame_ratelimit_table *t = sesame_ratelimit_table_new(16);
    struct sesame_conf_rate off = {0, 0}, one = {1, 1000};
    unsigned char a[SESAME_RATELIMIT_KEY_LEN], b[SESAME_RATELIMIT_KEY_LEN];
    key_of(a, 1);
    key_of(b, 2);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sesame_ratelimit_take(t, a, &off, 5), 0);
    struct sesame_ratelimit_stats st;
    sesame_ratelimit_table_stats(t, &st);
    assert_int_equal(st.used, 0); /* off does not touch the table */
    assert_int_equal(sesame_ratelimit_take(t, a, &one, 5), 0);
    assert_true(sesame_ratelimit_take(t, a, &one, 5) > 0);
    assert_int_equal(sesame_ratelimit_take(t, b, &one, 5), 0); /* another client */
    /* refund: the token taken comes back */
    sesame_ratelimit_refund(t, b, &one);
    assert_int_equal(sesame_ratelimit_take(t, b, &one, 5), 0);
    assert_true(sesame_ratelimit_take(t, b, &one, 5) > 0);
    /* fractional intervals: 7 per minute */
    struct sesame_conf_rate seven = {7, 60000};
    unsigned char c[SESAME_RATELIMIT_KEY_LEN];
    key_of(c, 3);
    for (int i = 0; i < 7; i++)
        assert_int_equal(sesame_ratelimit_take(t, c, &seven, 0), 0);
    assert_int_equal(sesame_ratelimit_take(t, c, &seven, 0), 8572); /* 60000/7 rounded up */
    sesame_ratelimit_table_free(t);
}

static void
test_bounded_memory(void **state)
{
    (void)state;
    struct sesame_ratelimit_table *t = sesame_ratelimit_table_new(64);
    struct sesame_conf_rate r = {2, 60000};
    unsigned char k[SESAME_RATELIMIT_KEY_LEN];
    for (unsigned i = 0; i < 100000; i++) {
        key_of(k, i);
        assert_int_equal(sesame_ratelimit_take(t, k, &r, 1000), 0);
    }
    struct sesame_ratelimit_stats st;
    sesame_ratelimit_table_stats(t, &st);
    assert_int_equal(st.capacity, 64);
    assert_int_equal(st.used, 64);
    assert_int_equal(st.evicted_idle + st.evicted_active, 100000 - 64);
    assert_int_equal(st.evicted_active, 100000 - 64); /* all of them had taken a token */
    /* the table's memory is fixed at creation: about 48 bytes a bucket */
    assert_true(sesame_ratelimit_table_bytes(16384) < 16384 * 64);
    assert_true(sesame_ratelimit_table_bytes(16384) >= 16384 * 40);
    /* the most recent keys are still there, limited */
    key_of(k, 99999);
    assert_int_equal(sesame_ratelimit_take(t, k, &r, 1000), 0);
    assert_true(sesame_ratelimit_take(t, k, &r, 1000) > 0);
    sesame_ratelimit_table_free(t);
}

static void
test_lru_eviction(void **state)
{
    (void)state;
    struct sesame_ratelimit_table *t = sesame_ratelimit_table_new(3);
    struct sesame_conf_rate r = {1, 60000};
    unsigned char a[SESAME_RATELIMIT_KEY_LEN], b[SESAME_RATELIMIT_KEY_LEN],
        c[SESAME_RATELIMIT_KEY_LEN], d[SESAME_RATELIMIT_KEY_LEN];
    key_of(a, 10);
    key_of(b, 11);
    key_of(c, 12);
    key_of(d, 13);
    assert_int_equal(sesame_ratelimit_take(t, a, &r, 0), 0);
    assert_int_equal(sesame_ratelimit_take(t, b, &r, 0), 0);
    assert_int_equal(sesame_ratelimit_take(t, c, &r, 0), 0);
    /* a is used again (refused): b is now the least recently used */
    assert_true(sesame_ratelimit_take(t, a, &r, 10) > 0);
    assert_int_equal(sesame_ratelimit_take(t, d, &r, 20), 0); /* evicts b, not a */
    struct sesame_ratelimit_stats st;
    sesame_ratelimit_table_stats(t, &st);
    assert_int_equal(st.used, 3);
    assert_int_equal(st.evicted_active, 1);
    assert_true(sesame_ratelimit_take(t, a, &r, 30) > 0); /* a still limited */
    assert_true(sesame_ratelimit_take(t, c, &r, 30) > 0);
    assert_true(sesame_ratelimit_take(t, d, &r, 30) > 0);

    /* buckets idle for a whole period are full again: forgetting them loses
     * nothing, and is counted apart */
    uint64_t later = 10 * 60000;
    unsigned char e[SESAME_RATELIMIT_KEY_LEN];
    key_of(e, 14);
    assert_int_equal(sesame_ratelimit_take(t, e, &r, later), 0);
    sesame_ratelimit_table_stats(t, &st);
    assert_int_equal(st.evicted_active, 1);
    assert_int_equal(st.evicted_idle, 1);
    sesame_ratelimit_table_free(t);
}

static void
test_hash_chains_survive_eviction(void **state)
{
    (void)state;
    /* capacity not a power of two, many evictions: every key still found
     * exactly once (chains stay consistent) */
    struct sesame_ratelimit_table *t = sesame_ratelimit_table_new(5);
    struct sesame_conf_rate r = {3, 60000};
    unsigned char k[SESAME_RATELIMIT_KEY_LEN];
    for (unsigned round = 0; round < 50; round++) {
        for (unsigned i = 0; i < 5; i++) {
            key_of(k, round * 5 + i);
            assert_int_equal(sesame_ratelimit_take(t, k, &r, round), 0);
        }
        for (unsigned i = 0; i < 5; i++) {
            key_of(k, round * 5 + i);
            assert_int_equal(sesame_ratelimit_take(t, k, &r, round), 0);
            assert_int_equal(sesame_ratelimit_take(t, k, &r, round), 0);
            assert_true(sesame_ratelimit_take(t, k, &r, round) > 0);
        }
    }
    sesame_ratelimit_table_free(t);
}

static struct sockaddr_storage
addr(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
    }
    return ss;
}

static void
test_addr_keys(void **state)
{
    (void)state;
    unsigned char k1[SESAME_RATELIMIT_KEY_LEN], k2[SESAME_RATELIMIT_KEY_LEN];
    struct sockaddr_storage a = addr("192.0.2.7"), b = addr("::ffff:192.0.2.7");
    assert_int_equal(sesame_ratelimit_addr_key((struct sockaddr *)&a, k1), SESAME_OK);
    assert_int_equal(sesame_ratelimit_addr_key((struct sockaddr *)&b, k2), SESAME_OK);
    assert_memory_equal(k1, k2, SESAME_RATELIMIT_KEY_LEN);
    a = addr("192.0.2.8");
    sesame_ratelimit_addr_key((struct sockaddr *)&a, k2);
    assert_memory_not_equal(k1, k2, SESAME_RATELIMIT_KEY_LEN);
    /* IPv6: one bucket per /64 */
    a = addr("2001:db8:1:2::1");
    b = addr("2001:db8:1:2:ffff:eeee:dddd:cccc");
    sesame_ratelimit_addr_key((struct sockaddr *)&a, k1);
    sesame_ratelimit_addr_key((struct sockaddr *)&b, k2);
    assert_memory_equal(k1, k2, SESAME_RATELIMIT_KEY_LEN);
    b = addr("2001:db8:1:3::1");
    sesame_ratelimit_addr_key((struct sockaddr *)&b, k2);
    assert_memory_not_equal(k1, k2, SESAME_RATELIMIT_KEY_LEN);
    struct sockaddr none = {.sa_family = AF_UNIX};
    assert_int_equal(sesame_ratelimit_addr_key(&none, k1), SESAME_ERROR);
}

static const char *
client_of(const struct sesame_conf *conf, const char *peer, const char *const *xff, size_t n)
{
    static char text[48];
    size_t lens[8];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(xff[i]);
    struct sockaddr_storage p = addr(peer), out;
    assert_int_equal(sesame_ratelimit_client(conf, (struct sockaddr *)&p, xff, lens, n, &out, text),
                     SESAME_OK);
    return text;
}

static void
test_client_address(void **state)
{
    (void)state;
    struct sesame_cidr cidrs[2];
    memset(cidrs, 0, sizeof(cidrs));
    struct sockaddr_storage n1 = addr("127.0.0.1"), n2 = addr("10.0.0.0");
    cidrs[0].net = n1;
    cidrs[0].prefix = 32;
    cidrs[1].net = n2;
    cidrs[1].prefix = 8;
    struct sesame_conf conf;
    memset(&conf, 0, sizeof(conf));
    conf.server.trusted_proxies = cidrs;
    conf.server.ntrusted_proxies = 2;

    const char *one[] = {"198.51.100.9"};
    /* from a peer that is no trusted proxy, X-Forwarded-For is ignored */
    assert_string_equal(client_of(&conf, "203.0.113.5", one, 1), "203.0.113.5");
    /* from a trusted proxy: the right-most address that is not a proxy */
    assert_string_equal(client_of(&conf, "127.0.0.1", one, 1), "198.51.100.9");
    const char *chain[] = {"6.6.6.6, 198.51.100.9 ,10.1.2.3"};
    assert_string_equal(client_of(&conf, "127.0.0.1", chain, 1), "198.51.100.9");
    /* spoofed entries on the left do not matter */
    const char *spoof[] = {"1.1.1.1, 2.2.2.2", "198.51.100.10"};
    assert_string_equal(client_of(&conf, "127.0.0.1", spoof, 2), "198.51.100.10");
    /* every entry a proxy: the left-most */
    const char *proxies[] = {"10.9.9.9, 10.1.1.1"};
    assert_string_equal(client_of(&conf, "127.0.0.1", proxies, 1), "10.9.9.9");
    /* not an address: the walk stops at the last address read */
    const char *junk[] = {"198.51.100.9, garbage, 10.1.1.1"};
    assert_string_equal(client_of(&conf, "127.0.0.1", junk, 1), "10.1.1.1");
    const char *junk_right[] = {"198.51.100.9, unknown"};
    assert_string_equal(client_of(&conf, "127.0.0.1", junk_right, 1), "127.0.0.1");
    const char *empty[] = {""};
    assert_string_equal(client_of(&conf, "127.0.0.1", empty, 1), "127.0.0.1");
    assert_string_equal(client_of(&conf, "127.0.0.1", NULL, 0), "127.0.0.1");
    /* ports and brackets */
    const char *ports[] = {"[2001:db8::5]:4711, 198.51.100.11:8080"};
    assert_string_equal(client_of(&conf, "127.0.0.1", ports, 1), "198.51.100.11");
    const char *v6[] = {"2001:db8::5"};
    assert_string_equal(client_of(&conf, "127.0.0.1", v6, 1), "2001:db8::5");
    /* no trusted proxies at all */
    conf.server.ntrusted_proxies = 0;
    assert_string_equal(client_of(&conf, "127.0.0.1", one, 1), "127.0.0.1");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_steady_rate),
        cmocka_unit_test(test_off_and_independent_keys),
        cmocka_unit_test(test_bounded_memory),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_hash_chains_survive_eviction),
        cmocka_unit_test(test_addr_keys),
        cmocka_unit_test(test_client_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
