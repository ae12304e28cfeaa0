#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "config/config.h"

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

int
main(void)
{
    assert_non_null(mkdtemp(tmpdir));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_documents_every_key),
        cmocka_unit_test(test_defaults_and_lookup),
        cmocka_unit_test(test_trusted_proxies),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
