/* What the sign-in page says is shared, from real configurations: loaded
 * (sesame_conf_load), built (sesame_runtime_attach) and rendered as
 * gate.c's serve_signin does (the tenant's providers, or those the query
 * names, and the claims its routes release). Every list of the page is
 * compared whole, in order: what each provider transmits (its scopes,
 * aliases expanded) and what the commune's services receive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "config/config.h"
#include "gate/runtime.h"
#include "pages/page.h"

static char tmpdir[] = "/tmp/sesame-signin-XXXXXX";

static const char *
write_private(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    return path;
}

#define FC_ISSUER "https://fcp.integ01.dev-franceconnect.fr/api/v2"

/* A configuration: [server], [redis], [session], then `tail` (providers,
 * one tenant "ville", its routes); every provider uses the secret file
 * SECRET. */
static struct sesame_conf *
load(const char *tail)
{
    char key[512], secret[512];
    snprintf(key, sizeof(key), "%s", write_private("session.key", "0123456789abcdef0123456789abcdef0123"));
    snprintf(secret, sizeof(secret), "%s", write_private("p.secret", "secret-0123456789abcdef"));
    size_t cap = strlen(tail) * 2 + 4096;
    char *text = malloc(cap);
    int n = snprintf(text, cap,
                     "[server]\nlisten = 127.0.0.1:8080\n[redis]\n[session]\nsecret_file = %s\n", key);
    /* SECRET in the tail stands for the secret file */
    for (const char *p = tail; *p;) {
        const char *s = strstr(p, "SECRET");
        size_t len = s ? (size_t)(s - p) : strlen(p);
        n += snprintf(text + n, cap - (size_t)n, "%.*s%s", (int)len, p, s ? secret : "");
        p += len + (s ? 6 : 0);
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/sesame.conf", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    char *errors = NULL;
    struct sesame_conf *c = sesame_conf_load(path, &errors);
    if (c == NULL)
        fail_msg("configuration refused: %s", errors ? errors : "?");
    if (sesame_runtime_attach(c, &errors) != SESAME_OK)
        fail_msg("runtime refused: %s", errors ? errors : "?");
    free(errors);
    return c;
}

/* The lines of `what`: a paragraph's text, then " => " and the items of the
 * list that follows it, "; "-separated, with the entities of the page
 * decoded. One line per list; a paragraph with no list gives its text alone
 * when it is the services' "confirmation" sentence. */
static void
decode(char *s)
{
    static const struct {
        const char *from, *to;
    } ents[] = {{"&nbsp;", " "}, {"&#39;", "'"}, {"&#47;", "/"}, {"&amp;", "&"}};
    for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
        char *p;
        while ((p = strstr(s, ents[i].from)) != NULL) {
            size_t fl = strlen(ents[i].from), tl = strlen(ents[i].to);
            memcpy(p, ents[i].to, tl);
            memmove(p + tl, p + fl, strlen(p + fl) + 1);
        }
    }
}

/* "TEXT => a; b; c\n" for each <p>TEXT</p> followed by <ul class="claims">,
 * and "TEXT\n" for a <p> that mentions "reçoivent" or "reçoit" without a
 * list after it: the whole "what is shared" part of the page. */
static char *
shared_lists(const char *html)
{
    const char *start = strstr(html, "<h2>");
    assert_non_null(start);
    char *out = calloc(1, 8192);
    size_t n = 0;
    for (const char *p = strstr(start, "<p>"); p != NULL; p = strstr(p, "<p>")) {
        p += 3;
        const char *e = strstr(p, "</p>");
        assert_non_null(e);
        char para[1024];
        snprintf(para, sizeof(para), "%.*s", (int)(e - p), p);
        decode(para);
        const char *after = e + 4;
        while (*after == '\n')
            after++;
        if (strncmp(after, "<ul class=\"claims\">", 19) == 0) {
            n += (size_t)snprintf(out + n, 8192 - n, "%s =>", para);
            const char *end = strstr(after, "</ul>");
            int k = 0;
            for (const char *li = strstr(after, "<li>"); li != NULL && li < end;
                 li = strstr(li, "<li>")) {
                li += 4;
                const char *le = strstr(li, "</li>");
                char item[512];
                snprintf(item, sizeof(item), "%.*s", (int)(le - li), li);
                decode(item);
                n += (size_t)snprintf(out + n, 8192 - n, "%s %s", k++ ? ";" : "", item);
                li = le;
            }
            n += (size_t)snprintf(out + n, 8192 - n, "\n");
            p = end;
        } else if (strstr(para, "reçoi") != NULL) {
            n += (size_t)snprintf(out + n, 8192 - n, "%s\n", para);
            p = e;
        } else {
            p = e;
        }
    }
    return out;
}

/* The sign-in page of tenant "ville" as serve_signin renders it, offering
 * the providers named in `offered` (space-separated) or, NULL, all of the
 * tenant's; returns its shared_lists(). */
static char *
signin_lists(const struct sesame_conf *c, const char *offered)
{
    const struct sesame_conf_tenant *ct = c->tenants[0];
    const struct sesame_runtime_tenant *t = sesame_runtime_tenant(c, ct);
    struct sesame_page_provider shown[SESAME_PAGE_MAX_PROVIDERS];
    size_t n = 0;
    for (size_t i = 0; i < t->nproviders; i++) {
        char word[140];
        snprintf(word, sizeof(word), " %s ", t->providers[i].name);
        char list[512];
        snprintf(list, sizeof(list), " %s ", offered ? offered : "");
        if (offered == NULL || strstr(list, word) != NULL)
            shown[n++] = t->providers[i];
    }
    struct sesame_page_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.tenant = ct->name;
    ctx.tenant_name = ct->display_name;
    ctx.return_to = "/";
    ctx.providers = shown;
    ctx.nproviders = n;
    ctx.claims = t->claims;
    ctx.nclaims = t->nclaims;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sesame_page_render(t->pages, SESAME_PAGE_SIGN_IN, &ctx, b), SESAME_OK);
    size_t len = evbuffer_get_length(b);
    char *html = malloc(len + 1);
    evbuffer_remove(b, html, len);
    html[len] = '\0';
    evbuffer_free(b);
    char *lists = shared_lists(html);
    free(html);
    return lists;
}

#define TENANT "[tenant ville]\ndisplay_name = Ville d'Arbre\npublic_url = http://ville.localhost:8080\n"
#define ROUTE(name, path, extra)                                                                   \
    "[route " name "]\ntenant = ville\npath = " path "\nupstream = http://127.0.0.1:9000\n" extra

#define SUB "un numéro de connexion, propre à ce service, qui ne dit rien de vous"
#define FC_SAYS "Si vous vous identifiez avec FranceConnect, Ville d'Arbre reçoit :"
#define SERVICES "Ses services en ligne reçoivent seulement :"

static void
check(const char *lists, const char *expected)
{
    if (strcmp(lists, expected) != 0)
        fail_msg("the page lists:\n%s\ninstead of:\n%s", lists, expected);
}

/* The case of the issue: the scopes ask for more than the routes release. */
static void
test_scopes_beyond_the_routes(void **state)
{
    struct sesame_conf *c = load(
        "[provider franceconnect]\nissuer = " FC_ISSUER "\nclient_id = a\nclient_secret_file = SECRET\n"
        "scopes = openid given_name family_name birthdate gender birthplace birthcountry\n" TENANT
        "provider = franceconnect\n" ROUTE("demarches", "/demarches", "claims = given_name family_name birthdate\n")
            ROUTE("cantine", "/cantine", "claims = given_name\n"));
    char *l = signin_lists(c, NULL);
    check(l, FC_SAYS " => vos prénoms; votre nom de naissance; votre date de naissance; votre sexe; "
                     "votre commune de naissance; votre pays de naissance; " SUB "\n" SERVICES
                     " => vos prénoms; votre nom de naissance; votre date de naissance\n");
    free(l);
    sesame_conf_unref(c);
}

/* Scope aliases (identite_pivot, profile, birth) are expanded; claims named
 * twice (given_name in identite_pivot and alone) are listed once. */
static void
test_scope_aliases(void **state)
{
    struct sesame_conf *c = load(
        "[provider franceconnect]\nissuer = " FC_ISSUER "\nclient_id = a\nclient_secret_file = SECRET\n"
        "scopes = openid identite_pivot given_name email\n" TENANT "provider = franceconnect\n" ROUTE(
            "etat-civil", "/etat-civil", "claims = given_name\n")
            ROUTE("courrier", "/courrier", "claims = email birthplace\n"));
    char *l = signin_lists(c, NULL);
    check(l, FC_SAYS " => vos prénoms; votre nom de naissance; votre date de naissance; votre sexe; "
                     "votre commune de naissance; votre pays de naissance; votre adresse e-mail; " SUB
                     "\n" SERVICES " => vos prénoms; votre adresse e-mail; votre commune de naissance\n");
    free(l);
    sesame_conf_unref(c);

    c = load("[provider franceconnect]\nissuer = " FC_ISSUER "\nclient_id = a\nclient_secret_file = SECRET\n"
             "scopes = openid profile birth\n" TENANT "provider = franceconnect\n" ROUTE(
                 "sport", "/sport", "claims = preferred_username birthcountry\n"));
    l = signin_lists(c, NULL);
    check(l, FC_SAYS " => vos prénoms; votre nom de naissance; votre date de naissance; votre sexe; "
                     "votre nom d'usage (par exemple le nom d'époux ou d'épouse); votre commune de "
                     "naissance; votre pays de naissance; " SUB "\n" SERVICES
                     " => votre nom d'usage (par exemple le nom d'époux ou d'épouse); votre pays de "
                     "naissance\n");
    free(l);
    sesame_conf_unref(c);
}

/* Two providers with different scopes: one list each; the services' list
 * keeps only what a provider shown transmits (a route of the other
 * provider releases more). */
static void
test_two_providers(void **state)
{
    struct sesame_conf *c = load(
        "[provider franceconnect]\nissuer = " FC_ISSUER "\nclient_id = a\nclient_secret_file = SECRET\n"
        "scopes = openid identite_pivot\n"
        "[provider agents]\nissuer = https://agents.example\nclient_id = b\nclient_secret_file = SECRET\n"
        "scopes = openid given_name family_name email\n" TENANT
        "providers = franceconnect agents\n" ROUTE("etat-civil", "/etat-civil",
                                                  "provider = franceconnect\nclaims = family_name birthplace\n")
            ROUTE("intranet", "/intranet", "provider = agents\nclaims = email\n"));
    char *l = signin_lists(c, NULL);
    check(l, FC_SAYS " => vos prénoms; votre nom de naissance; votre date de naissance; votre sexe; "
                     "votre commune de naissance; votre pays de naissance; " SUB "\n"
                     "Si vous vous identifiez avec agents, Ville d'Arbre reçoit : => vos prénoms; votre "
                     "nom de naissance; votre adresse e-mail; " SUB "\n" SERVICES
                     " => votre nom de naissance; votre commune de naissance; votre adresse e-mail\n");
    free(l);
    /* the page of one provider only (?provider=agents): what it transmits */
    l = signin_lists(c, "agents");
    check(l, "Si vous vous identifiez avec agents, Ville d'Arbre reçoit : => vos prénoms; votre nom de "
             "naissance; votre adresse e-mail; " SUB "\n" SERVICES
             " => votre nom de naissance; votre adresse e-mail\n");
    free(l);
    l = signin_lists(c, "franceconnect");
    check(l, FC_SAYS " => vos prénoms; votre nom de naissance; votre date de naissance; votre sexe; "
                     "votre commune de naissance; votre pays de naissance; " SUB "\n" SERVICES
                     " => votre nom de naissance; votre commune de naissance\n");
    free(l);
    sesame_conf_unref(c);
}

/* Providers transmitting the same information share one list, named
 * "A ou B" (the order of the scopes does not matter). */
static void
test_same_scopes_one_list(void **state)
{
    struct sesame_conf *c = load(
        "[provider franceconnect]\nissuer = " FC_ISSUER "\nclient_id = a\nclient_secret_file = SECRET\n"
        "scopes = openid given_name family_name\n"
        "[provider proconnect]\nissuer = https://auth.agentconnect.gouv.fr/api/v2\nclient_id = b\n"
        "client_secret_file = SECRET\nscopes = openid family_name given_name\n" TENANT
        "providers = franceconnect proconnect\n" ROUTE("demarches", "/demarches", "claims = family_name\n"));
    char *l = signin_lists(c, NULL);
    check(l, "Si vous vous identifiez avec FranceConnect ou ProConnect, Ville d'Arbre reçoit : => vos "
             "prénoms; votre nom de naissance; " SUB "\n" SERVICES " => votre nom de naissance\n");
    free(l);
    sesame_conf_unref(c);
}

/* Routes releasing nothing: the provider's list, and the services receive
 * only the confirmation. */
static void
test_routes_release_nothing(void **state)
{
    struct sesame_conf *c = load(
        "[provider franceconnect]\nissuer = " FC_ISSUER "\nclient_id = a\nclient_secret_file = SECRET\n"
        "scopes = openid birthdate\n" TENANT "provider = franceconnect\n" ROUTE("rien", "/rien", ""));
    char *l = signin_lists(c, NULL);
    check(l, FC_SAYS " => votre date de naissance; " SUB "\n"
                     "Ses services en ligne reçoivent seulement la confirmation que "
                     "c'est bien vous, sans votre nom ni vos coordonnées.\n");
    free(l);
    sesame_conf_unref(c);
}

int
main(void)
{
    assert_non_null(mkdtemp(tmpdir));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scopes_beyond_the_routes),
        cmocka_unit_test(test_scope_aliases),
        cmocka_unit_test(test_two_providers),
        cmocka_unit_test(test_same_scopes_one_list),
        cmocka_unit_test(test_routes_release_nothing),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
