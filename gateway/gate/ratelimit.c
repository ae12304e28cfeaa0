/*
 * ratelimit.c - sign-in rate limits: a fixed-size table of GCRA buckets
 * (hash chains and an LRU list over one array), the client address behind
 * trusted proxies, and the 429 answer.
 */
#include "gate/ratelimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "gate/gate.h"
#include "http/server.h"
#include "pages/page.h"

#define NIL UINT32_MAX
#define MAX_XFF_HEADERS 16
#define MAX_XFF_ENTRY 64         /* bytes of one X-Forwarded-For entry */
#define TENANT_TABLE 4096        /* tenant buckets (more than any configuration has) */
#define WARN_EVERY_MS 60000u

/* ---- The bucket table ----------------------------------------------------------- */

struct entry {
    unsigned char key[SESAME_RATELIMIT_KEY_LEN];
    uint64_t tat;                /* theoretical arrival time, microseconds (monotonic) */
    uint32_t prev, next;         /* LRU list: head most recent */
    uint32_t hnext;              /* hash chain */
};

struct sesame_ratelimit_table {
    struct entry *e;
    size_t cap, used;
    uint32_t *buckets;
    size_t mask;                 /* nbuckets - 1 (a power of two) */
    uint32_t head, tail;
    uint64_t k0, k1;             /* SipHash key, random */
    uint64_t evicted_idle, evicted_active;
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t
load64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* SipHash-2-4 of a 16-byte key: chains an attacker cannot aim at. */
static uint64_t
siphash16(const struct sesame_ratelimit_table *t, const unsigned char *in)
{
    uint64_t v0 = t->k0 ^ 0x736f6d6570736575ULL, v1 = t->k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = t->k0 ^ 0x6c7967656e657261ULL, v3 = t->k1 ^ 0x7465646279746573ULL;
    for (int i = 0; i < 2; i++) {
        uint64_t m = load64(in + 8 * i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)16 << 56;
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static size_t
buckets_for(size_t capacity)
{
    size_t n = 1;
    while (n < capacity)
        n <<= 1;
    return n;
}

size_t
sesame_ratelimit_table_bytes(size_t capacity)
{
    if (capacity == 0)
        capacity = 1;
    return sizeof(struct sesame_ratelimit_table) + capacity * sizeof(struct entry) +
           buckets_for(capacity) * sizeof(uint32_t);
}

struct sesame_ratelimit_table *
sesame_ratelimit_table_new(size_t capacity)
{
    if (capacity == 0)
        capacity = 1;
    if (capacity >= NIL)
        capacity = NIL - 1;
    struct sesame_ratelimit_table *t = sesame_calloc(1, sizeof(*t));
    t->cap = capacity;
    t->e = sesame_calloc(capacity, sizeof(*t->e));
    size_t nb = buckets_for(capacity);
    t->buckets = sesame_malloc(nb * sizeof(uint32_t));
    for (size_t i = 0; i < nb; i++)
        t->buckets[i] = NIL;
    t->mask = nb - 1;
    t->head = t->tail = NIL;
    uint64_t k[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    (void)sesame_util_random(k, sizeof(k)); /* on failure the fixed key still works */
    t->k0 = k[0];
    t->k1 = k[1];
    return t;
}

void
sesame_ratelimit_table_free(struct sesame_ratelimit_table *t)
{
    if (t == NULL)
        return;
    free(t->e);
    free(t->buckets);
    free(t);
}

static void
lru_unlink(struct sesame_ratelimit_table *t, uint32_t i)
{
    struct entry *e = &t->e[i];
    if (e->prev != NIL)
        t->e[e->prev].next = e->next;
    else
        t->head = e->next;
    if (e->next != NIL)
        t->e[e->next].prev = e->prev;
    else
        t->tail = e->prev;
    e->prev = e->next = NIL;
}

static void
lru_push_front(struct sesame_ratelimit_table *t, uint32_t i)
{
    struct entry *e = &t->e[i];
    e->prev = NIL;
    e->next = t->head;
    if (t->head != NIL)
        t->e[t->head].prev = i;
    t->head = i;
    if (t->tail == NIL)
        t->tail = i;
}

static uint32_t
find(const struct sesame_ratelimit_table *t, const unsigned char *key, size_t *bucket)
{
    *bucket = (size_t)siphash16(t, key) & t->mask;
    for (uint32_t i = t->buckets[*bucket]; i != NIL; i = t->e[i].hnext)
        if (memcmp(t->e[i].key, key, SESAME_RATELIMIT_KEY_LEN) == 0)
            return i;
    return NIL;
}

static void
chain_remove(struct sesame_ratelimit_table *t, uint32_t i)
{
    size_t b = (size_t)siphash16(t, t->e[i].key) & t->mask;
    uint32_t *pp = &t->buckets[b];
    while (*pp != NIL && *pp != i)
        pp = &t->e[*pp].hnext;
    if (*pp == i)
        *pp = t->e[i].hnext;
    t->e[i].hnext = NIL;
}

/* Emission interval and burst tolerance of r, in microseconds. */
static void
rate_params(const struct sesame_conf_rate *r, uint64_t *interval, uint64_t *tolerance)
{
    uint64_t period = r->period_ms * 1000;
    uint64_t t = period / r->count;
    if (t == 0)
        t = 1;
    *interval = t;
    *tolerance = period > t ? period - t : 0;
}

uint64_t
sesame_ratelimit_take(struct sesame_ratelimit_table *t, const unsigned char *key,
                      const struct sesame_conf_rate *r, uint64_t now_ms)
{
    if (t == NULL || key == NULL || r == NULL || r->count == 0 || r->period_ms == 0)
        return 0;
    uint64_t now = now_ms * 1000, interval, tolerance;
    rate_params(r, &interval, &tolerance);
    size_t b;
    uint32_t i = find(t, key, &b);
    if (i == NIL) {
        if (t->used < t->cap) {
            i = (uint32_t)t->used++;
        } else {
            i = t->tail; /* the least recently used */
            if (t->e[i].tat <= now)
                t->evicted_idle++;
            else
                t->evicted_active++;
            lru_unlink(t, i);
            chain_remove(t, i);
        }
        memcpy(t->e[i].key, key, SESAME_RATELIMIT_KEY_LEN);
        t->e[i].tat = now; /* a full bucket */
        t->e[i].hnext = t->buckets[b];
        t->buckets[b] = i;
        lru_push_front(t, i);
    } else if (t->head != i) {
        lru_unlink(t, i);
        lru_push_front(t, i);
    }
    struct entry *e = &t->e[i];
    uint64_t tat = e->tat > now ? e->tat : now;
    if (tat - now > tolerance) {
        uint64_t wait_us = tat - now - tolerance;
        return (wait_us + 999) / 1000;
    }
    e->tat = tat + interval;
    return 0;
}

void
sesame_ratelimit_refund(struct sesame_ratelimit_table *t, const unsigned char *key,
                        const struct sesame_conf_rate *r)
{
    if (t == NULL || key == NULL || r == NULL || r->count == 0 || r->period_ms == 0)
        return;
    size_t b;
    uint32_t i = find(t, key, &b);
    if (i == NIL)
        return;
    uint64_t interval, tolerance;
    rate_params(r, &interval, &tolerance);
    t->e[i].tat = t->e[i].tat > interval ? t->e[i].tat - interval : 0;
}

void
sesame_ratelimit_table_stats(const struct sesame_ratelimit_table *t,
                             struct sesame_ratelimit_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (t == NULL)
        return;
    out->capacity = t->cap;
    out->used = t->used;
    out->evicted_idle = t->evicted_idle;
    out->evicted_active = t->evicted_active;
}

/* ---- Client addresses ---------------------------------------------------------- */

int
sesame_ratelimit_addr_key(const struct sockaddr *addr, unsigned char key[SESAME_RATELIMIT_KEY_LEN])
{
    memset(key, 0, SESAME_RATELIMIT_KEY_LEN);
    if (addr == NULL)
        return SESAME_ERROR;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &a->sin_addr, 4);
        return SESAME_OK;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            memcpy(key, &a->sin6_addr, 16);
            return SESAME_OK;
        }
        memcpy(key, &a->sin6_addr, 8); /* the /64 */
        return SESAME_OK;
    }
    return SESAME_ERROR;
}

/* Parses one X-Forwarded-For entry: an IPv4 or IPv6 address, possibly
 * "[v6]", "[v6]:port" or "v4:port". */
static bool
parse_entry(const char *s, size_t n, struct sockaddr_storage *out)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= MAX_XFF_ENTRY)
        return false;
    char buf[MAX_XFF_ENTRY];
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *host = buf;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return false;
        *close = '\0';
        host = buf + 1;
    } else {
        char *colon = strchr(buf, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL)
            *colon = '\0'; /* v4:port */
    }
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

static socklen_t
addr_len(const struct sockaddr *a)
{
    return a->sa_family == AF_INET ? (socklen_t)sizeof(struct sockaddr_in)
                                   : (socklen_t)sizeof(struct sockaddr_in6);
}

static void
addr_text(const struct sockaddr *a, char text[48])
{
    text[0] = '\0';
    if (a->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, text, 48);
    else if (a->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, text, 48);
}

int
sesame_ratelimit_client(const struct sesame_conf *conf, const struct sockaddr *peer,
                        const char *const *xff, const size_t *xff_len, size_t nxff,
                        struct sockaddr_storage *out, char text[48])
{
    if (peer == NULL || (peer->sa_family != AF_INET && peer->sa_family != AF_INET6))
        return SESAME_ERROR;
    memset(out, 0, sizeof(*out));
    memcpy(out, peer, addr_len(peer));
    if (conf != NULL && conf->server.ntrusted_proxies > 0 &&
        sesame_conf_is_trusted_proxy(conf, peer)) {
        /* right to left over the entries of every header, the last header
         * last */
        bool stop = false;
        for (size_t h = nxff; h-- > 0 && !stop;) {
            const char *v = xff[h];
            size_t end = xff_len[h];
            while (!stop) {
                size_t start = end;
                while (start > 0 && v[start - 1] != ',')
                    start--;
                struct sockaddr_storage a;
                if (!parse_entry(v + start, end - start, &a)) {
                    stop = true; /* not an address: keep the last one read */
                    break;
                }
                memcpy(out, &a, sizeof(a));
                if (!sesame_conf_is_trusted_proxy(conf, (const struct sockaddr *)&a)) {
                    stop = true; /* the client */
                    break;
                }
                if (start == 0)
                    break; /* next header to the left */
                end = start - 1;
            }
        }
    }
    if (text != NULL)
        addr_text((const struct sockaddr *)out, text);
    return SESAME_OK;
}

/* ---- Sign-in admission ----------------------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct sesame_ratelimit_table *clients, *tenants; /* under mu */
static uint64_t warned_at, warned_active;                 /* under mu */

int
sesame_ratelimit_start(const struct sesame_conf *conf, char **err)
{
    pthread_mutex_lock(&mu);
    sesame_ratelimit_table_free(clients);
    sesame_ratelimit_table_free(tenants);
    clients = sesame_ratelimit_table_new((size_t)conf->server.client_signin_table);
    tenants = sesame_ratelimit_table_new(TENANT_TABLE);
    pthread_mutex_unlock(&mu);
    (void)err;
    return SESAME_OK;
}

void
sesame_ratelimit_stop(void)
{
    pthread_mutex_lock(&mu);
    sesame_ratelimit_table_free(clients);
    sesame_ratelimit_table_free(tenants);
    clients = tenants = NULL;
    pthread_mutex_unlock(&mu);
}

/* "20/m", "600/10m", "5/s", "1/d", "7/1500ms": as a rate is written. */
static void
rate_text(const struct sesame_conf_rate *r, char *buf, size_t n)
{
    static const struct {
        uint64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < SESAME_ARRAY_LEN(units); i++) {
        if (r->period_ms % units[i].ms != 0)
            continue;
        uint64_t k = r->period_ms / units[i].ms;
        if (k == 1)
            snprintf(buf, n, "%llu/%s", (unsigned long long)r->count, units[i].unit);
        else
            snprintf(buf, n, "%llu/%llu%s", (unsigned long long)r->count, (unsigned long long)k,
                     units[i].unit);
        return;
    }
    snprintf(buf, n, "%llu/%llums", (unsigned long long)r->count,
             (unsigned long long)r->period_ms);
}

static void
refuse(struct sesame_req *req, uint64_t wait_ms, bool tenant_limit, const char *client,
       const char *return_to, const char *provider, const char *acr)
{
    char rate[48], retry[24];
    rate_text(tenant_limit ? &req->tenant->signin_rate : &req->conf->server.client_signin_rate,
              rate, sizeof(rate));
    uint64_t s = sesame_util_ms_to_s_ceil(wait_ms);
    if (s == 0)
        s = 1;
    if (tenant_limit)
        sesame_log_info("request %s: sign-in refused (429): tenant %s over signin_rate %s, "
                        "retry in %llu s", req->request_id, req->tenant->name, rate,
                        (unsigned long long)s);
    else
        sesame_log_info("request %s: sign-in refused (429): client %s over client_signin_rate "
                        "%s, retry in %llu s", req->request_id, client[0] ? client : "?", rate,
                        (unsigned long long)s);
    snprintf(retry, sizeof(retry), "%llu", (unsigned long long)s);
    sesame_server_add_header(&req->response_headers, "Retry-After", retry);
    const char *reason =
        tenant_limit
            ? "Beaucoup de personnes essaient de se connecter en ce moment. Pour que le service "
              "reste disponible, les connexions sont ralenties quelques instants."
            : NULL;
    if (sesame_gate_is_api(req)) {
        sesame_gate_error(req, 429, reason);
        return;
    }
    struct sesame_page_ctx ctx = {0};
    struct sesame_page_provider pp = {.name = provider, .brand = SESAME_PAGE_BRAND_GENERIC};
    ctx.reason = reason;
    ctx.return_to = return_to;
    ctx.acr = acr;
    if (provider != NULL) {
        ctx.providers = &pp;
        ctx.nproviders = 1;
    }
    sesame_gate_page(req, 429, SESAME_PAGE_ERROR_429, &ctx);
}

bool
sesame_ratelimit_signin(struct sesame_req *req, const char *return_to, const char *provider,
                        const char *acr)
{
    const struct sesame_conf *conf = req->conf;
    const struct sesame_conf_rate *cr = &conf->server.client_signin_rate;
    const struct sesame_conf_rate *tr = req->tenant ? &req->tenant->signin_rate : NULL;
    if (cr->count == 0 && (tr == NULL || tr->count == 0))
        return true;
    const char *vals[MAX_XFF_HEADERS];
    size_t lens[MAX_XFF_HEADERS], n = 0;
    for (size_t i = 0; i < req->msg.h.nheaders && n < MAX_XFF_HEADERS; i++) {
        const struct sesame_http_header *h = &req->msg.h.headers[i];
        if (sesame_util_ascii_ieq(h->name, h->name_len, "x-forwarded-for")) {
            vals[n] = h->value;
            lens[n++] = h->value_len;
        }
    }
    struct sockaddr_storage client;
    char text[48] = "";
    unsigned char ckey[SESAME_RATELIMIT_KEY_LEN], tkey[32];
    bool have_client =
        sesame_ratelimit_client(conf, sesame_server_peer(req), vals, lens, n, &client, text) ==
            SESAME_OK &&
        sesame_ratelimit_addr_key((const struct sockaddr *)&client, ckey) == SESAME_OK;
    if (req->tenant != NULL) {
        char *label = sesame_asprintf("tenant\n%s", req->tenant->name);
        sesame_util_sha256(label, strlen(label), tkey);
        free(label);
    }
    uint64_t now = sesame_util_mono_ms(), wait = 0;
    bool tenant_limit = false, warn = false;
    struct sesame_ratelimit_stats st;
    pthread_mutex_lock(&mu);
    if (clients == NULL) {
        pthread_mutex_unlock(&mu);
        return true;
    }
    if (have_client)
        wait = sesame_ratelimit_take(clients, ckey, cr, now);
    if (wait == 0 && tr != NULL) {
        wait = sesame_ratelimit_take(tenants, tkey, tr, now);
        if (wait > 0) {
            tenant_limit = true;
            if (have_client)
                sesame_ratelimit_refund(clients, ckey, cr);
        }
    }
    sesame_ratelimit_table_stats(clients, &st);
    if (st.evicted_active > warned_active && (warned_at == 0 || now - warned_at >= WARN_EVERY_MS)) {
        warn = true;
        warned_at = now;
        warned_active = st.evicted_active;
    }
    pthread_mutex_unlock(&mu);
    if (warn)
        sesame_log_warn("client_signin_rate: the table of %zu client addresses is full of "
                        "active ones (%llu forgotten before their bucket refilled): raise "
                        "client_signin_table", st.capacity,
                        (unsigned long long)st.evicted_active);
    if (wait == 0)
        return true;
    refuse(req, wait, tenant_limit, text, return_to, provider, acr);
    return false;
}
