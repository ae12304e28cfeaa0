#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "config/config.h"
#include "gate/runtime.h"

static char tmpdir[] = "/tmp/sesame-conf-XXXXXX";

static const char *
write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Collects "section.key" for every "key = " or "# key = " line of the example. */
static char *
example_keys(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024], section[64] = "";
    size_t cap = 65536, len = 0;
    char *out = calloc(1, cap);
    bool plugin_options = false;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '[') {
            sscanf(line + 1, "%63[a-z]", section);
            plugin_options = false;
            continue;
        }
        if (strncmp(line, "# -- plugin options", 19) == 0)
            plugin_options = true;
        if (plugin_options || section[0] == '\0')
            continue;
        const char *p = line;
        if (p[0] == '#' && p[1] == ' ')
            p += 2;
        char key[64];
        int n = 0;
        if (sscanf(p, "%63[a-z0-9_] =%n", key, &n) == 1 && n > 0 && p[n - 1] == '=' &&
            (p[n] == ' ' || p[n] == '\n')) {
            char entry[160];
            snprintf(entry, sizeof(entry), "%s.%s\n", section, key);
            if (strstr(out, entry) == NULL) {
                assert_true(len + strlen(entry) < cap);
                strcpy(out + len, entry);
                len += strlen(entry);
            }
        }
    }
    fclose(f);
    return out;
}

static void
test_example_documents_every_key(void **state)
{
    const char *src = getenv("SESAME_SRCDIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/conf/sesame.conf.example", src ? src : ".");
    char *doc = example_keys(path);
    const char *code = sesame_conf_known_keys();
    int missing = 0;
    /* every key of the code is documented */
    char *copy = strdup(code);
    for (char *k = strtok(copy, "\n"); k; k = strtok(NULL, "\n")) {
        char entry[160];
        snprintf(entry, sizeof(entry), "%s\n", k);
        if (strstr(doc, entry) == NULL) {
            fprintf(stderr, "key %s exists in the code but not in conf/sesame.conf.example\n", k);
            missing++;
        }
    }
    free(copy);
    /* every documented key exists */
    copy = strdup(doc);
    for (char *k = strtok(copy, "\n"); k; k = strtok(NULL, "\n")) {
        char entry[160];
        snprintf(entry, sizeof(entry), "%s\n", k);
        if (strstr(code, entry) == NULL) {
            fprintf(stderr, "key %s is documented but unknown to the code\n", k);
            missing++;
        }
    }
    free(copy);
    free(doc);
    assert_int_equal(missing, 0);
}

static const char *minimal =
    "[server]\nlisten = 127.0.0.1:8080\n"
    "[tenant a]\npublic_url = http://a.localhost:8080\nhosts = a.localhost www.a.localhost\n"
    "[tenant b]\npublic_url = http://b.localhost:8080\n"
    "[route a-root]\ntenant = a\nupstream = http://127.0.0.1:9000\naccess = public\n"
    "[route a-x]\ntenant = a\npath = /x\nupstream = http://127.0.0.1:9001\naccess = public\n"
    "[route a-x-www]\ntenant = a\nhost = www.a.localhost\npath = /x\nupstream = http://127.0.0.1:9002\naccess = public\n"
    "[route a-xy]\ntenant = a\npath = /x/y/\nupstream = http://127.0.0.1:9003\naccess = public\n"
    "[route b-root]\ntenant = b\nupstream = http://127.0.0.1:9004\naccess = public\n";

static void
test_defaults_and_lookup(void **state)
{
    char *errors = NULL;
    struct sesame_conf *c = sesame_conf_load(write_file("min.conf", minimal), &errors);
    if (c == NULL)
        fprintf(stderr, "%s", errors);
    assert_non_null(c);
    assert_int_equal(c->server.header_timeout_ms, 10000);
    assert_int_equal(c->server.max_body_size, 32 * 1024 * 1024);
    assert_string_equal(c->server.prefix, "/sesame/");
    assert_true(c->server.workers >= 1);
    assert_string_equal(c->tenants[1]->hosts[0], "b.localhost");
    assert_false(c->tenants[0]->cookie_secure);

    const struct sesame_conf_tenant *a = sesame_conf_find_tenant(c, "A.LOCALHOST", 11);
    assert_ptr_equal(a, c->tenants[0]);
    assert_null(sesame_conf_find_tenant(c, "c.localhost", 11));
    struct { const char *host, *path, *route; } cases[] = {
        {"a.localhost", "/", "a-root"},          {"a.localhost", "/x", "a-x"},
        {"a.localhost", "/x/z", "a-x"},          {"a.localhost", "/xz", "a-root"},
        {"www.a.localhost", "/x/1", "a-x-www"},  {"a.localhost", "/x/y/1", "a-xy"},
        {"a.localhost", "/x/y", "a-x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct sesame_conf_route *r = sesame_conf_find_route(
            c, a, cases[i].host, strlen(cases[i].host), cases[i].path, strlen(cases[i].path));
        assert_non_null(r);
        assert_string_equal(r->name, cases[i].route);
    }
    sesame_conf_unref(c);
}

static void
test_trusted_proxies(void **state)
{
    char text[2048];
    snprintf(text, sizeof(text), "%s[server]\n", "");
    char *errors = NULL;
    char conf[4096];
    snprintf(conf, sizeof(conf), "%s", minimal);
    char *p = strstr(conf, "listen = 127.0.0.1:8080\n");
    assert_non_null(p);
    memmove(p + 44, p, strlen(p) + 1);
    memcpy(p, "trusted_proxies = 10.1.0.0/16 ::1 192.0.2.7\n", 44);
    struct sesame_conf *c = sesame_conf_load(write_file("tp.conf", conf), &errors);
    if (c == NULL)
        fprintf(stderr, "%s", errors);
    assert_non_null(c);
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.200.3", &in.sin_addr);
    assert_true(sesame_conf_is_trusted_proxy(c, (struct sockaddr *)&in));
    inet_pton(AF_INET, "10.2.0.1", &in.sin_addr);
    assert_false(sesame_conf_is_trusted_proxy(c, (struct sockaddr *)&in));
    inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
    assert_true(sesame_conf_is_trusted_proxy(c, (struct sockaddr *)&in));
    inet_pton(AF_INET, "192.0.2.8", &in.sin_addr);
    assert_false(sesame_conf_is_trusted_proxy(c, (struct sockaddr *)&in));
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    assert_true(sesame_conf_is_trusted_proxy(c, (struct sockaddr *)&in6));
    sesame_conf_unref(c);
}

/* A secret file other users cannot read, as the loader requires. */
static const char *
write_private(const char *name, const char *text)
{
    const char *path = write_file(name, text);
    assert_int_equal(chmod(path, 0600), 0);
    return path;
}

static char *
signin_conf(const char *tail)
{
    static char secret[512], key[512];
    snprintf(secret, sizeof(secret), "%s", write_private("fc.secret", "secret-0123456789abcdef"));
    snprintf(key, sizeof(key), "%s",
             write_private("session.key", "0123456789abcdef0123456789abcdef0123"));
    char *text = NULL;
    int n = asprintf(&text,
                     "[server]\nlisten = 127.0.0.1:8080\n"
                     "[redis]\n"
                     "[session]\nsecret_file = %s\n"
                     "[provider fc]\nissuer = https://fc.example/api/v2\nclient_id = a\n"
                     "client_secret_file = %s\n"
                     "[provider agent]\nissuer = https://agent.example\nclient_id = b\n"
                     "client_secret_file = %s\n"
                     "[provider autre]\nissuer = https://autre.example\nclient_id = c\n"
                     "client_secret_file = %s\nscopes = openid email\n"
                     "%s",
                     key, secret, secret, secret, tail);
    assert_true(n > 0);
    return text;
}

static struct sesame_conf *
load_text(const char *name, const char *text)
{
    char *errors = NULL;
    struct sesame_conf *c = sesame_conf_load(write_file(name, text), &errors);
    if (c == NULL)
        fprintf(stderr, "%s", errors);
    free(errors);
    return c;
}

static const struct sesame_conf_route *
route_named(const struct sesame_conf *c, const char *name)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (strcmp(c->routes[i]->name, name) == 0)
            return c->routes[i];
    fail_msg("no route %s", name);
    return NULL;
}

static void
assert_providers(struct sesame_conf_provider *const *v, size_t n, const char *names)
{
    char buf[256] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? " " : "", v[i]->name);
    assert_string_equal(buf, names);
}

static void
test_providers_resolution(void **state)
{
    char *text = signin_conf(
        /* a: provider only; b: providers only; c: both */
        "[tenant a]\npublic_url = http://a.localhost:8080\nprovider = fc\n"
        "[tenant b]\npublic_url = http://b.localhost:8080\nproviders = agent fc\n"
        "[tenant c]\npublic_url = http://c.localhost:8080\nprovider = fc\nproviders = agent fc\n"
        "[tenant d]\npublic_url = http://d.localhost:8080\n"
        "[route a-tenant]\ntenant = a\nupstream = http://127.0.0.1:9000\n"
        "[route a-one]\ntenant = a\npath = /one\nupstream = http://127.0.0.1:9000\nprovider = agent\n"
        "[route a-choose]\ntenant = a\npath = /choose\nupstream = http://127.0.0.1:9000\n"
        "providers = autre agent\nclaims = email\n"
        "[route a-both]\ntenant = a\npath = /both\nupstream = http://127.0.0.1:9000\n"
        "providers = fc autre\nprovider = autre\n"
        "[route b-tenant]\ntenant = b\nupstream = http://127.0.0.1:9000\n"
        "[route c-tenant]\ntenant = c\nupstream = http://127.0.0.1:9000\n"
        "[route d-public]\ntenant = d\nupstream = http://127.0.0.1:9000\naccess = public\n");
    struct sesame_conf *c = load_text("providers.conf", text);
    free(text);
    assert_non_null(c);
    const struct sesame_conf_tenant *a = c->tenants[0], *b = c->tenants[1], *t3 = c->tenants[2],
                                    *d = c->tenants[3];
    assert_string_equal(a->provider->name, "fc");
    assert_providers(a->providers, a->nproviders, "fc");
    assert_string_equal(b->provider->name, "agent"); /* the first of providers */
    assert_providers(b->providers, b->nproviders, "agent fc");
    assert_string_equal(t3->provider->name, "fc");
    assert_providers(t3->providers, t3->nproviders, "agent fc");
    assert_null(d->provider);
    assert_int_equal(d->nproviders, 0);

    const struct sesame_conf_route *r = route_named(c, "a-tenant");
    assert_null(r->provider);
    assert_providers(r->providers, r->nproviders, "fc");
    r = route_named(c, "a-one");
    assert_string_equal(r->provider->name, "agent");
    assert_providers(r->providers, r->nproviders, "agent");
    r = route_named(c, "a-choose");
    assert_null(r->provider); /* the citizen chooses */
    assert_providers(r->providers, r->nproviders, "autre agent");
    r = route_named(c, "a-both");
    assert_string_equal(r->provider->name, "autre");
    assert_providers(r->providers, r->nproviders, "fc autre");
    r = route_named(c, "b-tenant");
    assert_providers(r->providers, r->nproviders, "agent fc");
    r = route_named(c, "d-public");
    assert_int_equal(r->nproviders, 0);

    /* key lines survive the load */
    assert_int_equal(sesame_conf_key_line(c, c->providers[2], "scopes"), 18);
    assert_int_equal(sesame_conf_key_line(c, c->providers[2], "leeway"), 14);
    assert_int_equal(sesame_conf_key_line(c, &c->server, "listen"), 2);

    /* the sign-in page offers every provider of the routes that sign in */
    char *errors = NULL;
    if (sesame_runtime_attach(c, &errors) != SESAME_OK)
        fail_msg("runtime: %s", errors ? errors : "?");
    const struct sesame_runtime_tenant *rt = sesame_runtime_tenant(c, a);
    char names[256] = "";
    for (size_t i = 0; i < rt->nproviders; i++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? " " : "",
                 rt->providers[i].name);
    assert_string_equal(names, "fc agent autre");
    sesame_conf_unref(c);
}

/* A [territory NAME] is a tenant "@NAME" (config.h): its host is its
 * public_url's, its members are listed, a member naming no provider gets
 * the territory's. */
static void
test_territory(void **state)
{
    (void)state;
    char *text = signin_conf(
        "[tenant m1]\npublic_url = http://m1.localhost:8080\nterritory = agglo\n"
        "[territory agglo]\npublic_url = http://connexion.agglo.localhost:8080\n"
        "providers = fc agent\n"
        "[tenant m2]\nhosts = m2.localhost www.m2.localhost\npublic_url = http://m2.localhost:8080\n"
        "territory = agglo\nprovider = agent\n"
        "[tenant seul]\npublic_url = http://seul.localhost:8080\nprovider = autre\n"
        "[route m1]\ntenant = m1\nupstream = http://127.0.0.1:9000\nclaims = given_name\n"
        "[route m2]\ntenant = m2\nupstream = http://127.0.0.1:9000\nclaims = family_name\n"
        "[route seul]\ntenant = seul\nupstream = http://127.0.0.1:9000\naccess = public\n");
    struct sesame_conf *c = load_text("territory.conf", text);
    free(text);
    assert_non_null(c);
    const struct sesame_conf_tenant *t =
        sesame_conf_find_tenant(c, "connexion.agglo.localhost", strlen("connexion.agglo.localhost"));
    assert_non_null(t);
    assert_true(t->is_territory);
    assert_string_equal(t->name, "@agglo");
    assert_string_equal(t->display_name, "agglo");
    assert_int_equal(t->nhosts, 1);
    assert_null(t->territory);
    assert_null(t->accounts);
    assert_true(t->sign_in_page);
    /* the tenants' defaults for the keys a territory has not */
    assert_int_equal(t->signin_rate.count, 600);
    assert_int_equal(t->signin_rate.period_ms, 60000);
    assert_providers(t->providers, t->nproviders, "fc agent");
    assert_int_equal(t->nmembers, 2);
    const struct sesame_conf_tenant *m1 = t->members[0], *m2 = t->members[1];
    assert_string_equal(m1->name, "m1");
    assert_string_equal(m2->name, "m2");
    assert_ptr_equal(m1->territory, t);
    assert_ptr_equal(m2->territory, t);
    assert_false(m1->is_territory);
    /* m1 names no provider: the territory's; m2 only one of them */
    assert_providers(m1->providers, m1->nproviders, "fc agent");
    assert_string_equal(m1->provider->name, "fc");
    assert_providers(route_named(c, "m1")->providers, route_named(c, "m1")->nproviders, "fc agent");
    assert_providers(m2->providers, m2->nproviders, "agent");
    const struct sesame_conf_tenant *seul = sesame_conf_find_tenant(c, "seul.localhost", 14);
    assert_null(seul->territory);
    assert_int_equal(seul->nmembers, 0);
    /* the territory's sign-in page lists what its communes receive */
    char *errors = NULL;
    if (sesame_runtime_attach(c, &errors) != SESAME_OK)
        fail_msg("runtime: %s", errors ? errors : "?");
    const struct sesame_runtime_tenant *rt = sesame_runtime_tenant(c, t);
    assert_int_equal(rt->nclaims, 2);
    assert_int_equal(rt->nproviders, 2);
    sesame_conf_unref(c);
}

static void
test_scope_claims(void **state)
{
    assert_true(sesame_conf_scopes_ask("openid", "sub"));
    assert_true(sesame_conf_scopes_ask("openid profile", "gender"));
    assert_true(sesame_conf_scopes_ask("openid profile", "preferred_username"));
    assert_false(sesame_conf_scopes_ask("openid profile", "birthplace"));
    assert_true(sesame_conf_scopes_ask("openid birth", "birthcountry"));
    assert_true(sesame_conf_scopes_ask("openid identite_pivot", "birthplace"));
    assert_true(sesame_conf_scopes_ask("openid identite_pivot", "given_name"));
    assert_false(sesame_conf_scopes_ask("openid identite_pivot", "email"));
    assert_true(sesame_conf_scopes_ask("openid  email", "email"));
    assert_true(sesame_conf_scopes_ask("openid phone", "phone_number"));
    assert_false(sesame_conf_scopes_ask("openid given_name", "given"));
    assert_false(sesame_conf_scopes_ask("openid", "profile"));
    assert_null(sesame_conf_scope_claims("email"));
    assert_string_equal(sesame_conf_scope_claims("birth"), "birthplace birthcountry");
}

/* What account plugins receive: identity claims the scopes ask for, never
 * protocol claims. */
static void
test_identity_claims(void **state)
{
    struct sesame_conf_provider p;
    memset(&p, 0, sizeof(p));
    p.scopes = (char *)"openid identite_pivot email";
    static const char *const yes[] = {"given_name", "family_name", "birthdate", "gender",
                                      "birthplace", "birthcountry", "email"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_true(sesame_conf_identity_claim(&p, yes[i]));
    static const char *const no[] = {"sub", "nonce", "aud", "iss", "exp", "iat", "auth_time",
                                     "at_hash", "azp", "amr", "acr", "sid", "jti", "nbf", "c_hash",
                                     "preferred_username", "phone", "openid", "identite_pivot"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(sesame_conf_identity_claim(&p, no[i]));
    assert_false(sesame_conf_identity_claim(NULL, "email"));
    assert_false(sesame_conf_identity_claim(&p, NULL));
    /* a protocol claim stays one even when a scope names it */
    p.scopes = (char *)"openid nonce acr email";
    assert_false(sesame_conf_identity_claim(&p, "nonce"));
    assert_false(sesame_conf_identity_claim(&p, "acr"));
    assert_true(sesame_conf_protocol_claim("at_hash"));
    assert_false(sesame_conf_protocol_claim("email"));
    assert_false(sesame_conf_protocol_claim(NULL));
}

/* [tenant] session_cookie: persistent by default, browser, nothing else. */
static void
test_session_cookie(void **state)
{
    char *text = signin_conf("[tenant a]\npublic_url = http://a.localhost:8080\nprovider = fc\n"
                             "[tenant b]\npublic_url = http://b.localhost:8080\nprovider = fc\n"
                             "session_cookie = browser\n"
                             "[route r]\ntenant = a\nupstream = http://127.0.0.1:9000\n");
    struct sesame_conf *c = load_text("cookie.conf", text);
    free(text);
    assert_non_null(c);
    assert_int_equal(c->tenants[0]->session_cookie, SESAME_COOKIE_PERSISTENT);
    assert_int_equal(c->tenants[1]->session_cookie, SESAME_COOKIE_BROWSER);
    sesame_conf_unref(c);
    text = signin_conf("[tenant a]\npublic_url = http://a.localhost:8080\nprovider = fc\n"
                       "session_cookie = session\n");
    char *errors = NULL;
    assert_null(sesame_conf_load(write_file("bad-cookie.conf", text), &errors));
    free(text);
    assert_non_null(errors);
    assert_non_null(strstr(errors, "session_cookie: 'session' must be persistent or browser"));
    free(errors);
}

static void
test_reserved_authorize_params(void **state)
{
    static const char *const reserved[] = {"response_type", "client_id", "redirect_uri", "scope",
                                           "state", "nonce", "acr_values", "code_challenge",
                                           "code_challenge_method", "response_mode", "request",
                                           "request_uri"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        assert_true(sesame_conf_reserved_authorize_param(reserved[i], strlen(reserved[i])));
    assert_false(sesame_conf_reserved_authorize_param("prompt", 6));
    assert_false(sesame_conf_reserved_authorize_param("claims", 6));
    assert_false(sesame_conf_reserved_authorize_param("scopes", 6));
    assert_false(sesame_conf_reserved_authorize_param("scope=x", 7));
    assert_true(sesame_conf_reserved_authorize_param("scope=x", 5));
}

static void
test_sub_second_durations(void **state)
{
    char *text = signin_conf("[tenant a]\npublic_url = http://a.localhost:8080\nprovider = fc\n"
                             "[route r]\ntenant = a\nupstream = http://127.0.0.1:9000\n");
    char *p = strstr(text, "[redis]\n");
    assert_non_null(p);
    char *edited = NULL;
    assert_true(asprintf(&edited, "%.*s[redis]\ncommand_timeout = 250ms\nconnect_timeout = 1ms\n%s",
                         (int)(p - text), text, p + 8) > 0);
    struct sesame_conf *c = load_text("ms.conf", edited);
    assert_non_null(c);
    assert_int_equal(c->redis.command_timeout_ms, 250);
    assert_int_equal(c->redis.connect_timeout_ms, 1);
    sesame_conf_unref(c);
    free(edited);
    free(text);
}

int
main(void)
{
    assert_non_null(mkdtemp(tmpdir));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_documents_every_key),
        cmocka_unit_test(test_defaults_and_lookup),
        cmocka_unit_test(test_trusted_proxies),
        cmocka_unit_test(test_providers_resolution),
        cmocka_unit_test(test_territory),
        cmocka_unit_test(test_scope_claims),
        cmocka_unit_test(test_identity_claims),
        cmocka_unit_test(test_session_cookie),
        cmocka_unit_test(test_reserved_authorize_params),
        cmocka_unit_test(test_sub_second_durations),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
