#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <event2/buffer.h>
#include <pthread.h>

#include "pages/page.h"

#define HOME "https://www.ville-a.example/"
#define CONTACT "https://www.ville-a.example/contact"
#define LEGAL "https://www.ville-a.example/mentions-legales"
#define FC_INFO "https://franceconnect.gouv.fr/"

static const struct sesame_page_provider sample_providers[] = {
    {.name = "agents", .label = "ProConnect", .brand = SESAME_PAGE_BRAND_PROCONNECT},
    {.name = "fc", .label = "FranceConnect", .brand = SESAME_PAGE_BRAND_FRANCECONNECT},
};
static const char *const sample_claims[] = {"given_name", "family_name", "birthdate", "email"};

static struct sesame_page_ctx
sample_ctx(void)
{
    struct sesame_page_ctx c;
    memset(&c, 0, sizeof(c));
    c.tenant = "ville-a";
    c.tenant_name = "Ville de Saint-Éloi";
    c.accent_color = "#0b6e4f";
    c.has_logo = true;
    c.home_url = HOME;
    c.contact_url = CONTACT;
    c.legal_url = LEGAL;
    c.prefix = "/sesame/";
    c.request_id = "req-7f3a9c";
    c.return_to = "/demarches/etat-civil?x=1";
    c.providers = sample_providers;
    c.nproviders = 2;
    c.claims = sample_claims;
    c.nclaims = 4;
    c.csrf_token = "csrf-token-123";
    c.reason = "Ce service est réservé aux personnes majeures.";
    return c;
}

/* Renders a page into a malloc'd NUL-terminated string. */
static char *
render(const struct sesame_pages *p, enum sesame_page_id id, const struct sesame_page_ctx *c)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    assert_int_equal(sesame_page_render(p, id, c, b), SESAME_OK);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static size_t
count(const char *hay, const char *needle)
{
    size_t n = 0, l = strlen(needle);
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + l, needle))
        n++;
    return n;
}

static void
write_file(const char *dir, const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static char *
make_dir(void)
{
    char tmpl[] = "/tmp/sesame-pages-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void
remove_dir(char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static bool
valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p >> 5) == 6 ? 1 : (*p >> 4) == 14 ? 2 : (*p >> 3) == 30 ? 3 : -1;
        if (n < 0)
            return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
    }
    return true;
}

/* The text a browser sees in an attribute or text node: the entities
 * the escaper writes, decoded. */
static char *
decode(const char *h)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#39;", '\''},
                {"&#47;", '/'}};
    char *d = malloc(strlen(h) + 1);
    assert_non_null(d);
    size_t n = 0;
    while (*h) {
        size_t k;
        for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++)
            if (strncmp(h, ents[k].ent, strlen(ents[k].ent)) == 0)
                break;
        if (k < sizeof(ents) / sizeof(ents[0])) {
            d[n++] = ents[k].c;
            h += strlen(ents[k].ent);
        } else {
            d[n++] = *h++;
        }
    }
    d[n] = '\0';
    return d;
}

/* True when the decoded document contains needle. */
static bool
dhas(const char *h, const char *needle)
{
    char *d = decode(h);
    bool found = strstr(d, needle) != NULL;
    free(d);
    return found;
}

/* Every URL in href/src/action is a same-origin path ("/x", "#x") or one of
 * the allowed absolute URLs; with text_scan, no other http(s) URL appears
 * anywhere, not even as text. */
static void
check_urls(const char *html, const char *const *allowed, size_t nallowed, bool text_scan)
{
    static const char *const attrs[] = {"href=\"", "src=\"", "action=\""};
    for (size_t a = 0; a < 3; a++) {
        for (const char *p = strstr(html, attrs[a]); p != NULL; p = strstr(p + 1, attrs[a])) {
            const char *v = p + strlen(attrs[a]);
            const char *end = strchr(v, '"');
            assert_non_null(end);
            char *raw = strndup(v, (size_t)(end - v));
            char *dv = decode(raw);
            free(raw);
            v = dv;
            size_t len = strlen(dv);
            bool ok = (len > 0 && v[0] == '#') ||
                      (len > 1 && v[0] == '/' && v[1] != '/' && v[1] != '\\') ||
                      (len == 1 && v[0] == '/');
            for (size_t i = 0; i < nallowed && !ok; i++)
                ok = strlen(allowed[i]) == len && memcmp(v, allowed[i], len) == 0;
            if (!ok)
                fail_msg("URL not allowed: %s", dv);
            free(dv);
        }
    }
    if (!text_scan)
        return;
    char *doc = decode(html);
    for (const char *p = doc; (p = strcasestr(p, "http")) != NULL; p++) {
        if (strncasecmp(p, "http://", 7) != 0 && strncasecmp(p, "https://", 8) != 0)
            continue;
        bool ok = false;
        for (size_t i = 0; i < nallowed && !ok; i++)
            ok = strncmp(p, allowed[i], strlen(allowed[i])) == 0;
        if (!ok)
            fail_msg("external URL: %.40s", p);
    }
    free(doc);
}

static size_t
css_size(const struct sesame_pages *p, const char *accent)
{
    struct sesame_page_asset a;
    assert_int_equal(sesame_page_asset(p, "sesame.css", &a), SESAME_OK);
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sesame_page_theme_css(accent, b), SESAME_OK);
    size_t n = a.len + evbuffer_get_length(b);
    evbuffer_free(b);
    return n;
}

static void
test_every_page(void **state)
{
    char *err = NULL;
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, &err);
    assert_null(err);
    assert_non_null(p);
    struct sesame_page_ctx c = sample_ctx();
    size_t css = css_size(p, c.accent_color);
    const char *allowed[] = {FC_INFO, HOME, CONTACT, LEGAL};
    for (int id = 0; id < SESAME_PAGE_COUNT; id++) {
        char *h = render(p, (enum sesame_page_id)id, &c);
        assert_true(strncmp(h, "<!DOCTYPE html>\n<html lang=\"fr\">", 31) == 0);
        assert_int_equal(count(h, "<html"), 1);
        assert_int_equal(count(h, "<h1>"), 1);
        assert_int_equal(count(h, "<h1"), 1);
        assert_int_equal(count(h, "<main"), 1);
        assert_int_equal(count(h, "<header"), 1);
        assert_int_equal(count(h, "<footer"), 1);
        assert_int_equal(count(h, "<title>"), 1);
        assert_non_null(strstr(h, "<meta charset=\"utf-8\">"));
        assert_non_null(strstr(h, "<meta name=\"viewport\" content=\"width=device-width, "
                                  "initial-scale=1\">"));
        assert_non_null(strstr(h, "<a class=\"skip-link\" href=\"#contenu\">"));
        assert_non_null(strstr(h, "<main id=\"contenu\""));
        assert_true(dhas(h, "<link rel=\"stylesheet\" href=\"/sesame/static/sesame.css\">"));
        assert_true(dhas(h, "<link rel=\"stylesheet\" href=\"/sesame/static/theme/ville-a.css\">"));
        assert_true(dhas(h, "<img src=\"/sesame/static/logo/ville-a\" alt=\"\">"));
        assert_non_null(strstr(h, "<meta name=\"theme-color\" content=\"#0b6e4f\">"));
        if (id == SESAME_PAGE_POST_KEPT) /* its one script (test_resume_script) */
            assert_int_equal(count(h, "<script"), 1);
        else
            assert_null(strcasestr(h, "<script"));
        assert_null(strcasestr(h, "style="));
        assert_null(strcasestr(h, "<style"));
        assert_null(strstr(h, "{{"));
        assert_null(strstr(h, "}}"));
        assert_true(valid_utf8(h));
        /* the page's own title in <title> and <h1> */
        const char *title = sesame_page_title((enum sesame_page_id)id);
        char want[256];
        snprintf(want, sizeof(want), "<title>%s - Ville de Saint-Éloi</title>", title);
        assert_true(dhas(h, want));
        /* the commune's links, on every page */
        assert_true(dhas(h, "href=\"" HOME "\""));
        assert_true(dhas(h, "href=\"" CONTACT "\""));
        assert_true(dhas(h, "href=\"" LEGAL "\""));
        check_urls(h, allowed, 4, true);
        /* the request id only on error pages, nothing else technical */
        bool error = sesame_page_http_status((enum sesame_page_id)id) >= 400;
        assert_int_equal(strstr(h, "req-7f3a9c") != NULL, error);
        /* with its assets (stylesheet, theme, largest logo) under 50 KB */
        assert_true(strlen(h) + css + SESAME_PAGE_MAX_LOGO < 50 * 1024);
        free(h);
    }
    sesame_pages_free(p);
}

static void
test_sign_in(void **state)
{
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    assert_non_null(p);
    struct sesame_page_ctx c = sample_ctx();
    c.return_to = "/démarches?a=1&b=\"2\"";
    char *h = render(p, SESAME_PAGE_SIGN_IN, &c);
    /* the FranceConnect button first, then "ou", then ProConnect */
    const char *fc = strstr(h, "<a class=\"fc-button\" href=\"&#47;sesame&#47;login?return_to="
                               "%2Fd%C3%A9marches%3Fa%3D1%26b%3D%222%22&amp;provider=fc\">"
                               "<span class=\"fc-login\">S'identifier avec</span> "
                               "<span class=\"fc-brand\">FranceConnect</span></a>");
    assert_non_null(fc);
    const char *info = strstr(h, "<a href=\"" FC_INFO "\" target=\"_blank\" rel=\"noopener\">"
                                 "Qu'est-ce que FranceConnect ?<span class=\"new-window\"> "
                                 "(nouvelle fenêtre)</span></a>");
    assert_non_null(info);
    const char *ou = strstr(h, "<p class=\"or\"><span>ou</span></p>");
    const char *pc = strstr(h, "provider=agents\"><span class=\"fc-login\">S'identifier avec"
                               "</span> <span class=\"fc-brand\">ProConnect</span>");
    assert_non_null(ou);
    assert_non_null(pc);
    assert_true(fc < info && info < ou && ou < pc);
    assert_int_equal(count(h, "<p class=\"or\">"), 1);
    /* what the commune receives, in French */
    assert_non_null(strstr(h, "<li>vos prénoms</li>"));
    assert_non_null(strstr(h, "<li>votre nom de naissance</li>"));
    assert_non_null(strstr(h, "<li>votre date de naissance</li>"));
    assert_non_null(strstr(h, "<li>votre adresse e-mail</li>"));
    assert_null(strstr(h, "given_name"));
    free(h);

    /* a generic provider alone: no FranceConnect link, no "ou" */
    static const struct sesame_page_provider generic[] = {
        {.name = "oidc", .label = "le portail des agents", .brand = SESAME_PAGE_BRAND_GENERIC}};
    c.providers = generic;
    c.nproviders = 1;
    c.claims = NULL;
    c.nclaims = 0;
    c.return_to = NULL;
    h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_non_null(strstr(h, "<a class=\"button\" href=\"&#47;sesame&#47;login?provider=oidc\">"
                              "Se connecter avec le portail des agents</a>"));
    assert_null(strstr(h, "franceconnect.gouv.fr"));
    assert_null(strstr(h, "class=\"or\""));
    assert_null(strstr(h, "<ul class=\"claims\">"));
    assert_non_null(strstr(h, "sans votre nom ni vos coordonnées"));
    free(h);

    /* no provider at all */
    c.nproviders = 0;
    h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_null(strstr(h, "login?"));
    assert_non_null(strstr(h, "La connexion n'est pas possible pour le moment."));
    free(h);
    sesame_pages_free(p);
}

static void
test_claims(void **state)
{
    assert_string_equal(sesame_page_claim_label("given_name"), "vos prénoms");
    assert_string_equal(sesame_page_claim_label("birthplace"), "votre commune de naissance");
    assert_null(sesame_page_claim_label("identite_pivot"));
    assert_null(sesame_page_claim_label("x-unknown"));
    assert_null(sesame_page_claim_label(NULL));

    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    static const char *const claims[] = {"openid", "identite_pivot", "birthdate", "idp_birthdate",
                                         "x-secret-thing", "x-other", NULL};
    c.claims = claims;
    c.nclaims = 7;
    char *h = render(p, SESAME_PAGE_SIGN_IN, &c);
    const char *list = strstr(h, "<ul class=\"claims\">");
    assert_non_null(list);
    /* the pivot identity once each, dates merged, unknown claims named
     * generically and once, "openid" omitted */
    char *items = strndup(list, (size_t)(strstr(list, "</ul>") - list));
    assert_int_equal(count(items, "<li>"), 7);
    free(items);
    assert_int_equal(count(h, "<li>votre date de naissance</li>"), 1);
    assert_int_equal(count(h, "<li>d&#39;autres informations vous concernant</li>"), 1);
    assert_non_null(strstr(h, "<li>votre pays de naissance</li>"));
    assert_null(strstr(h, "x-secret-thing"));
    assert_null(strstr(h, "openid"));
    free(h);
    sesame_pages_free(p);
}

/* A territory's sign-in page names its communes, escaped; other pages and
 * tenants do not. */
static void
test_communes(void **state)
{
    (void)state;
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    char *h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_null(strstr(h, "class=\"communes\""));
    assert_non_null(strstr(h, "reçoit</h2>"));
    free(h);
    static const char *const communes[] = {"Ville d'Arbre", "Mairie <de> Cerisier", "", NULL};
    c.communes = communes;
    c.ncommunes = 4;
    h = render(p, SESAME_PAGE_SIGN_IN, &c);
    const char *list = strstr(h, "<ul class=\"communes\">");
    assert_non_null(list);
    char *items = strndup(list, (size_t)(strstr(list, "</ul>") - list));
    assert_int_equal(count(items, "<li>"), 2); /* empty and NULL names skipped */
    assert_non_null(strstr(items, "<li>Ville d&#39;Arbre</li>"));
    assert_non_null(strstr(items, "<li>Mairie &lt;de&gt; Cerisier</li>"));
    free(items);
    assert_non_null(strstr(h, "Ce que chaque commune reçoit"));
    assert_non_null(strstr(h, "ferme la connexion dans toutes"));
    free(h);
    h = render(p, SESAME_PAGE_SIGNED_OUT, &c);
    assert_null(strstr(h, "Cerisier"));
    free(h);
    sesame_pages_free(p);
}

/* What the providers shown transmit (gate/test_signin_page.c checks it over
 * whole configurations): providers with the same information share one
 * list, a provider without scopes is in none and then filters nothing. */
static void
test_sources(void **state)
{
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    static const struct sesame_page_provider three[] = {
        {.name = "a", .label = "Portail A", .scopes = "openid email"},
        {.name = "b", .label = "Portail B", .scopes = "email openid"},
        {.name = "c", .label = "Portail C", .scopes = "openid email email"},
    };
    static const char *const claims[] = {"email", "family_name", "acr"};
    c.providers = three;
    c.nproviders = 3;
    c.claims = claims;
    c.nclaims = 3;
    char *h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_non_null(strstr(h, "<p>Si vous vous identifiez avec Portail A, Portail B ou Portail C, "
                              "Ville de Saint-Éloi reçoit&nbsp;:</p>\n<ul class=\"claims\">\n"
                              "<li>votre adresse e-mail</li>\n<li>un numéro de connexion, propre à "
                              "ce service, qui ne dit rien de vous</li>\n</ul>"));
    assert_int_equal(count(h, "Si vous vous identifiez avec"), 1);
    /* family_name is transmitted by none of them: not listed; acr is the
     * protocol's, always there */
    assert_non_null(strstr(h, "reçoivent seulement&nbsp;:</p>\n<ul class=\"claims\">\n"
                              "<li>votre adresse e-mail</li>\n<li>le niveau de sécurité de votre "
                              "connexion</li>\n</ul>"));
    free(h);
    /* one provider without scopes: in no list, and nothing is filtered */
    static const struct sesame_page_provider mixed[] = {
        {.name = "a", .label = "Portail A", .scopes = "openid email"},
        {.name = "x", .label = "Portail X"},
    };
    c.providers = mixed;
    c.nproviders = 2;
    h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_int_equal(count(h, "Si vous vous identifiez avec"), 1);
    assert_null(strstr(h, "identifiez avec Portail X"));
    assert_non_null(strstr(h, "<li>votre nom de naissance</li>"));
    free(h);
    sesame_pages_free(p);
}

static const char *const hostile[] = {
    "<script>alert(1)</script>",
    "\" onmouseover=\"alert(1)",
    "\"onmouseover=alert(1) x=\"",
    "' onfocus='alert(1)",
    "{{title}}{{{tenant_name}}}{{#providers}}",
    "javascript:alert(1)",
    "//evil.example/x",
    "/\\evil.example",
    "https://evil.example/<b>",
    "a\r\nSet-Cookie: x=1\x01\x7f\xc2\x85",
    "\xff\xfe invalid \xc3",
};

static void
check_hostile_output(const char *h)
{
    /* no script but the POST_KEPT page's own (test_resume_script) */
    for (const char *t = strcasestr(h, "<script"); t != NULL; t = strcasestr(t + 1, "<script"))
        assert_true(strncmp(t, "<script>" SESAME_PAGE_RESUME_SCRIPT "</script>",
                            strlen("<script>" SESAME_PAGE_RESUME_SCRIPT "</script>")) == 0);
    assert_null(strstr(h, "onmouseover=\""));
    assert_null(strstr(h, "\" onmouseover"));
    assert_null(strstr(h, "\"onmouseover"));
    assert_null(strstr(h, "' onfocus"));
    assert_null(strstr(h, "<b>"));
    assert_null(strstr(h, "\r"));
    assert_null(strstr(h, "\x01"));
    assert_null(strstr(h, "\xc2\x85"));
    assert_true(valid_utf8(h));
    /* every attribute value is closed by the quote the template opened:
     * a tag never holds an unexpected attribute */
    for (const char *t = strchr(h, '<'); t != NULL; t = strchr(t + 1, '<')) {
        const char *e = strchr(t, '>');
        assert_non_null(e);
        size_t quotes = 0;
        for (const char *q = t; q < e; q++)
            quotes += *q == '"';
        assert_int_equal(quotes % 2, 0);
        assert_null(memchr(t + 1, '<', (size_t)(e - t - 1)));
    }
}

static void
test_hostile_values(void **state)
{
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    assert_non_null(p);
    for (size_t k = 0; k < sizeof(hostile) / sizeof(hostile[0]); k++) {
        const char *x = hostile[k];
        struct sesame_page_provider provs[2] = {
            {.name = x, .label = x, .brand = SESAME_PAGE_BRAND_FRANCECONNECT, .scopes = x},
            {.name = x, .label = x, .brand = SESAME_PAGE_BRAND_GENERIC, .scopes = "openid email"},
        };
        const char *claims[2] = {x, "given_name"};
        struct sesame_page_ctx c;
        memset(&c, 0, sizeof(c));
        c.tenant = x;
        c.tenant_name = x;
        c.accent_color = x;
        c.has_logo = true;
        c.home_url = x;
        c.contact_url = x;
        c.legal_url = x;
        c.prefix = x;
        c.request_id = x;
        c.return_to = x;
        c.providers = provs;
        c.nproviders = 2;
        c.claims = claims;
        c.nclaims = 2;
        c.csrf_token = x;
        c.cancel_url = x;
        c.reason = x;
        for (int id = 0; id < SESAME_PAGE_COUNT; id++) {
            char *h = render(p, (enum sesame_page_id)id, &c);
            check_hostile_output(h);
            /* the injected placeholders are shown, never interpreted */
            if (k == 4) {
                assert_non_null(strstr(h, "{{title}}{{{tenant_name}}}{{#providers}}"));
                assert_int_equal(count(h, "{{title}}"), count(h, "{{title}}{{{"));
            }
            /* hostile links are dropped: home falls back to "/" */
            assert_non_null(strstr(h, "<a class=\"brand\" href=\"&#47;\">"));
            assert_true(dhas(h, "<link rel=\"stylesheet\" href=\"/sesame/static/sesame.css\">"));
            const char *allowed[] = {FC_INFO};
            check_urls(h, allowed, 1, false);
            free(h);
        }
    }
    /* the escaped forms are there */
    struct sesame_page_ctx c = sample_ctx();
    c.tenant_name = "<script>alert('x')</script> & \"co\"";
    c.reason = "<b>refusé</b>";
    char *h = render(p, SESAME_PAGE_ERROR_403, &c);
    assert_non_null(strstr(h, "<title>Accès refusé - &lt;script&gt;alert(&#39;x&#39;)&lt;&#47;"
                              "script&gt; &amp; &quot;co&quot;</title>"));
    assert_non_null(strstr(h, "<p class=\"lead\">&lt;b&gt;refusé&lt;&#47;b&gt;</p>"));
    free(h);
    /* a tenant name in a URL path is percent-encoded */
    c.tenant = "a b/../c\"";
    h = render(p, SESAME_PAGE_ERROR_404, &c);
    assert_non_null(
        strstr(h, "href=\"&#47;sesame&#47;static&#47;theme&#47;a%20b%2F..%2Fc%22.css\""));
    free(h);
    sesame_pages_free(p);
}

static void
test_links_and_bounds(void **state)
{
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    c.home_url = "/accueil";
    c.contact_url = "mailto:mairie@ville-a.example";
    c.legal_url = "mailto:x@y.example"; /* not a contact link: dropped */
    c.prefix = "/auth/";
    c.has_logo = false;
    c.accent_color = NULL;
    char *h = render(p, SESAME_PAGE_ERROR_404, &c);
    assert_true(dhas(h, "<a class=\"brand\" href=\"/accueil\"><span>"));
    assert_non_null(strstr(h, "href=\"mailto:mairie@ville-a.example\""));
    assert_null(strstr(h, "x@y.example"));
    assert_null(strstr(h, "Mentions légales"));
    assert_null(strstr(h, "<img"));
    assert_null(strstr(h, "theme-color"));
    assert_true(dhas(h, "href=\"/auth/static/sesame.css\""));
    free(h);

    /* a failing accent colour: the dark default as theme colour */
    c.accent_color = "#ffcc00";
    h = render(p, SESAME_PAGE_ERROR_404, &c);
    assert_non_null(strstr(h, "<meta name=\"theme-color\" content=\"#000091\">"));
    free(h);

    /* over-long values: text cut, URLs and return_to dropped */
    size_t big = 100000;
    char *longv = malloc(big + 1);
    memset(longv, 'a', big);
    longv[big] = '\0';
    char *longurl = malloc(big + 1);
    memcpy(longurl, "https://x/", 10);
    memset(longurl + 10, 'b', big - 10);
    longurl[big] = '\0';
    c = sample_ctx();
    c.tenant_name = longv;
    c.reason = longv;
    c.request_id = longv;
    c.home_url = longurl;
    c.return_to = longurl + 9;
    h = render(p, SESAME_PAGE_ERROR_403, &c);
    assert_true(strlen(h) < 20 * 1024);
    assert_null(strstr(h, "bbbb"));
    assert_non_null(strstr(h, "<a class=\"brand\" href=\"&#47;\">"));
    free(h);
    h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_true(strlen(h) < 20 * 1024);
    assert_non_null(strstr(h, "login?provider=fc\""));
    free(h);
    /* more providers and claims than shown */
    struct sesame_page_provider many[10];
    const char *claims[100];
    for (int i = 0; i < 10; i++)
        many[i] = (struct sesame_page_provider){
            .name = "p", .label = "P", .brand = SESAME_PAGE_BRAND_GENERIC};
    for (int i = 0; i < 100; i++)
        claims[i] = i % 2 ? "given_name" : "family_name";
    c = sample_ctx();
    c.providers = many;
    c.nproviders = 10;
    c.claims = claims;
    c.nclaims = 100;
    h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_int_equal(count(h, "Se connecter avec P<"), SESAME_PAGE_MAX_PROVIDERS);
    assert_int_equal(count(h, "<li>vos prénoms</li>"), 1);
    free(h);
    free(longv);
    free(longurl);
    sesame_pages_free(p);
}

static void
test_logout_and_errors(void **state)
{
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    c.cancel_url = "/mon-espace";
    char *h = render(p, SESAME_PAGE_LOGOUT, &c);
    assert_non_null(strstr(h, "<form method=\"post\" action=\"&#47;sesame&#47;logout\">"));
    assert_non_null(strstr(h, "<input type=\"hidden\" name=\"" SESAME_PAGE_CSRF_FIELD
                              "\" value=\"csrf-token-123\">"));
    assert_non_null(strstr(h, "<input type=\"hidden\" name=\"return_to\" "
                              "value=\"&#47;demarches&#47;etat-civil?x=1\">"));
    assert_non_null(strstr(h, "<button type=\"submit\" class=\"button\">Me déconnecter</button>"));
    assert_non_null(
        strstr(h, "<a class=\"button secondary\" href=\"&#47;mon-espace\">Annuler</a>"));
    free(h);
    c.cancel_url = NULL;
    h = render(p, SESAME_PAGE_LOGOUT, &c);
    assert_non_null(strstr(h, "href=\"https:&#47;&#47;www.ville-a.example&#47;\">Annuler</a>"));
    free(h);

    h = render(p, SESAME_PAGE_ERROR_403, &c);
    assert_non_null(strstr(h, "Ce service est réservé aux personnes majeures."));
    assert_non_null(strstr(h, "<span class=\"ref\">req-7f3a9c</span>"));
    free(h);
    c.reason = NULL;
    h = render(p, SESAME_PAGE_ERROR_403, &c);
    assert_non_null(strstr(h, "Vous n'avez pas le droit d'accéder à cette page."));
    free(h);

    h = render(p, SESAME_PAGE_PROVIDER_ACCESS_DENIED, &c);
    assert_non_null(strstr(h, "<h1>Vous avez annulé la connexion</h1>"));
    /* retry with the provider given first (the one that failed) */
    assert_non_null(strstr(h, "<a class=\"button\" href=\"&#47;sesame&#47;login?return_to="
                              "%2Fdemarches%2Fetat-civil%3Fx%3D1&amp;provider=agents\">"
                              "Réessayer</a>"));
    free(h);
    h = render(p, SESAME_PAGE_ERROR_401, &c);
    assert_non_null(strstr(h, "href=\"&#47;sesame&#47;login?return_to=%2Fdemarches%2F"
                              "etat-civil%3Fx%3D1\">M'identifier</a>"));
    free(h);
    h = render(p, SESAME_PAGE_NO_ACCOUNT, &c);
    assert_true(dhas(h, "<a class=\"button\" href=\"" CONTACT "\">"));
    free(h);
    h = render(p, SESAME_PAGE_SIGNED_OUT, &c);
    assert_non_null(strstr(h, "<h1>Déconnexion effectuée</h1>"));
    assert_null(strstr(h, "req-7f3a9c"));
    free(h);

    /* bad arguments */
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sesame_page_render(p, SESAME_PAGE_COUNT, &c, b), SESAME_ERROR);
    assert_int_equal(sesame_page_render(p, (enum sesame_page_id)-1, &c, b), SESAME_ERROR);
    assert_int_equal(sesame_page_render(NULL, SESAME_PAGE_SIGN_IN, &c, b), SESAME_ERROR);
    assert_int_equal(sesame_page_render(p, SESAME_PAGE_SIGN_IN, NULL, b), SESAME_ERROR);
    assert_int_equal(sesame_page_render(p, SESAME_PAGE_SIGN_IN, &c, NULL), SESAME_ERROR);
    assert_int_equal(evbuffer_get_length(b), 0);
    /* an empty context still renders a complete page */
    struct sesame_page_ctx empty;
    memset(&empty, 0, sizeof(empty));
    assert_int_equal(sesame_page_render(p, SESAME_PAGE_ERROR_404, &empty, b), SESAME_OK);
    assert_true(evbuffer_get_length(b) > 500);
    evbuffer_free(b);
    sesame_pages_free(p);
}

static void
test_status_mapping(void **state)
{
    static const int statuses[] = {400, 401, 403, 404, 405, 413, 414, 431, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        enum sesame_page_id id = sesame_page_for_status(statuses[i]);
        assert_int_equal(sesame_page_http_status(id), statuses[i]);
        assert_string_equal(sesame_page_title(id), sesame_page_status_title(statuses[i]));
        char file[32];
        snprintf(file, sizeof(file), "error-%d.html", statuses[i]);
        assert_string_equal(sesame_page_file(id), file);
    }
    assert_int_equal(sesame_page_for_status(418), SESAME_PAGE_ERROR_400);
    assert_int_equal(sesame_page_for_status(507), SESAME_PAGE_ERROR_500);
    assert_string_equal(sesame_page_status_title(404), "Page introuvable");
    assert_string_equal(sesame_page_status_title(503), "Service momentanément indisponible");
    assert_non_null(sesame_page_status_title(299));
    assert_null(sesame_page_file(SESAME_PAGE_COUNT));
    assert_int_equal(sesame_page_for_provider_error("access_denied"),
                     SESAME_PAGE_PROVIDER_ACCESS_DENIED);
    assert_int_equal(sesame_page_for_provider_error("invalid_acr"),
                     SESAME_PAGE_PROVIDER_INVALID_ACR);
    assert_int_equal(sesame_page_for_provider_error("server_error"),
                     SESAME_PAGE_PROVIDER_SERVER_ERROR);
    assert_int_equal(sesame_page_for_provider_error("temporarily_unavailable"),
                     SESAME_PAGE_PROVIDER_UNAVAILABLE);
    assert_int_equal(sesame_page_for_provider_error("invalid_scope"), SESAME_PAGE_PROVIDER_OTHER);
    assert_int_equal(sesame_page_for_provider_error(NULL), SESAME_PAGE_PROVIDER_OTHER);
    assert_string_equal(sesame_page_title(SESAME_PAGE_PROVIDER_ACCESS_DENIED),
                        "Vous avez annulé la connexion");
    assert_int_equal(sesame_page_http_status(SESAME_PAGE_SIGN_IN), 200);
    assert_int_equal(sesame_page_http_status(SESAME_PAGE_PROVIDER_UNAVAILABLE), 503);

    assert_int_equal(sesame_page_provider_brand("fc", "https://oidc.franceconnect.gouv.fr/api/v2"),
                     SESAME_PAGE_BRAND_FRANCECONNECT);
    assert_int_equal(sesame_page_provider_brand(NULL, "https://fcp-low.sbx.dev-franceconnect.fr/x"),
                     SESAME_PAGE_BRAND_FRANCECONNECT);
    assert_int_equal(sesame_page_provider_brand("FranceConnect-mock", "http://127.0.0.1:9999/api"),
                     SESAME_PAGE_BRAND_FRANCECONNECT);
    assert_int_equal(sesame_page_provider_brand("x", "https://evilfranceconnect.gouv.fr/"),
                     SESAME_PAGE_BRAND_GENERIC);
    assert_int_equal(sesame_page_provider_brand("x", "https://franceconnect.gouv.fr.evil.example/"),
                     SESAME_PAGE_BRAND_GENERIC);
    assert_int_equal(sesame_page_provider_brand("x", "https://franceconnect.gouv.fr@evil.example/"),
                     SESAME_PAGE_BRAND_GENERIC);
    assert_int_equal(sesame_page_provider_brand("agents", "https://auth.agentconnect.gouv.fr/v2"),
                     SESAME_PAGE_BRAND_PROCONNECT);
    assert_int_equal(sesame_page_provider_brand("proconnect", NULL), SESAME_PAGE_BRAND_PROCONNECT);
    assert_int_equal(sesame_page_provider_brand(NULL, NULL), SESAME_PAGE_BRAND_GENERIC);
}

static void
test_override(void **state)
{
    char *tenant = make_dir();
    char *platform = make_dir();
    write_file(tenant, "sign-in.html", "<h1>{{title}}</h1><p>Tenant sign-in {{tenant_name}}</p>\n");
    write_file(tenant, "error-404.html", "<h1>{{title}}</h1><p>Tenant 404</p>\n");
    write_file(tenant, "sesame.css", "body { color: #000; }\n");
    write_file(tenant, "logo.png", "not a template: ignored");
    write_file(platform, "error-404.html", "<h1>{{title}}</h1><p>Platform 404</p>\n");
    write_file(platform, "error-500.html", "<h1>{{title}}</h1><p>Platform 500</p>\n");

    struct sesame_pages *builtin = sesame_pages_load(NULL, NULL, NULL);
    char *err = NULL;
    struct sesame_pages *p = sesame_pages_load(platform, tenant, &err);
    assert_null(err);
    assert_non_null(p);
    struct sesame_page_ctx c = sample_ctx();
    char *h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_non_null(strstr(h, "<p>Tenant sign-in Ville de Saint-Éloi</p>"));
    assert_null(strstr(h, "fc-button"));
    assert_non_null(strstr(h, "<html lang=\"fr\">")); /* the built-in layout wraps it */
    free(h);
    h = render(p, SESAME_PAGE_ERROR_404, &c);
    assert_non_null(strstr(h, "Tenant 404"));
    free(h);
    h = render(p, SESAME_PAGE_ERROR_500, &c);
    assert_non_null(strstr(h, "Platform 500"));
    free(h);
    /* the others are the built-in ones, byte for byte */
    for (int id = 0; id < SESAME_PAGE_COUNT; id++) {
        if (id == SESAME_PAGE_SIGN_IN || id == SESAME_PAGE_ERROR_404 || id == SESAME_PAGE_ERROR_500)
            continue;
        char *a = render(p, (enum sesame_page_id)id, &c);
        char *b = render(builtin, (enum sesame_page_id)id, &c);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    struct sesame_page_asset css;
    assert_int_equal(sesame_page_asset(p, "sesame.css", &css), SESAME_OK);
    assert_int_equal(css.len, strlen("body { color: #000; }\n"));
    assert_memory_equal(css.data, "body { color: #000; }\n", css.len);
    assert_string_equal(css.content_type, "text/css; charset=utf-8");
    assert_int_equal(sesame_page_asset(p, "../etc/passwd", &css), SESAME_DECLINED);
    assert_int_equal(sesame_page_asset(builtin, "sesame.css", &css), SESAME_OK);
    assert_non_null(strstr(css.data, ".fc-button:hover"));
    /* a layout override changes every page */
    write_file(tenant, "layout.html",
               "<!DOCTYPE html>\n<html lang=\"fr\"><title>{{title}}</title>"
               "<main>{{>body}}</main><p>custom layout</p></html>\n");
    sesame_pages_free(p);
    p = sesame_pages_load(NULL, tenant, &err);
    assert_null(err);
    h = render(p, SESAME_PAGE_ERROR_503, &c);
    assert_non_null(strstr(h, "custom layout"));
    assert_non_null(strstr(h, "<main><h1>Service momentanément indisponible</h1>"));
    free(h);
    sesame_pages_free(p);
    sesame_pages_free(builtin);
    remove_dir(tenant);
    remove_dir(platform);
}

/* Loads a tenant directory holding one file; returns the error. */
static char *
load_error(const char *name, const char *content)
{
    char *dir = make_dir();
    write_file(dir, name, content);
    char *err = NULL;
    struct sesame_pages *p = sesame_pages_load(NULL, dir, &err);
    assert_null(p);
    assert_non_null(err);
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s/%s:", dir, name);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("error without file name: %s", err);
    char *msg = strdup(err + strlen(prefix));
    free(err);
    remove_dir(dir);
    return msg;
}

static void
expect_error(const char *name, const char *content, const char *want)
{
    char *msg = load_error(name, content);
    if (strncmp(msg, want, strlen(want)) != 0)
        fail_msg("%s: got \"%s\", want \"%s...\"", name, msg, want);
    free(msg);
}

static void
test_broken_override(void **state)
{
    expect_error("sign-in.html", "<h1>{{title}}</h1>\n<p>\n{{nope}}</p>\n",
                 "3: unknown placeholder {{nope}}");
    expect_error("sign-in.html", "<h1>\n{{{tenant_name}}}</h1>", "2: {{{...}}}");
    expect_error("sign-in.html", "<h1>{{title}</h1>", "1: {{ without a closing }}");
    expect_error("sign-in.html", "<h1>{{title}}</h1>\n{{#has_claims}}\n<p>x</p>\n",
                 "2: section {{#has_claims}} is never closed");
    expect_error("sign-in.html", "{{#has_claims}}{{/has_providers}}", "1: {{/has_providers}}");
    expect_error("sign-in.html", "x\n\n{{/title}}", "3: {{/title}} closes no open section");
    expect_error("sign-in.html", "<ul>{{claims}}</ul>", "1: {{claims}} is a list");
    expect_error("sign-in.html", "{{claim}}", "1: {{claim}} is only available inside");
    /* a list inside each item of another list: only inside that list */
    expect_error("sign-in.html", "{{#source_claims}}{{/source_claims}}",
                 "1: {{source_claims}} is only available inside");
    expect_error("sign-in.html", "{{#sources}}{{source_claim}}{{/sources}}",
                 "1: {{source_claim}} is only available inside");
    expect_error("sign-in.html", "{{#providers}}{{claim}}{{/providers}}",
                 "1: {{claim}} is only available inside");
    expect_error("sign-in.html", "{{reason}}", "1: unknown placeholder {{reason}}");
    expect_error("error-404.html", "{{csrf_token}}", "1: unknown placeholder {{csrf_token}}");
    expect_error("error-404.html", "{{>body}}", "1: unknown inclusion {{>body}}");
    expect_error("error-404.html", "{{ title x }}", "1: malformed placeholder");
    expect_error("error-404.html", "{{Title}}", "1: malformed placeholder");
    expect_error("error-404.html", "{{}}", "1: malformed placeholder");
    expect_error("error-404.html", "ok\n\xc3\x28", "2: not valid UTF-8");
    expect_error("layout.html", "<html><main></main></html>", "1: layout.html must contain");
    expect_error("layout.html", "{{>body}}\n{{>body}}", "2: {{>body}} appears twice");
    expect_error("layout.html", "{{#title}}{{>body}}{{/title}}", "1: {{>body}} inside a section");
    expect_error("layout.html", "{{>footer}}{{>body}}", "1: unknown inclusion {{>footer}}");
    expect_error("signin.html", "<h1>{{title}}</h1>", " not a Sésame template");
    expect_error("extra.css", "body{}", " not a Sésame template");
    char *deep = malloc(2000);
    strcpy(deep, "");
    for (int i = 0; i < 9; i++)
        strcat(deep, "{{#title}}");
    for (int i = 0; i < 9; i++)
        strcat(deep, "{{/title}}");
    expect_error("error-404.html", deep, "1: sections nested too deeply");
    free(deep);

    /* a file over the size limit */
    char *big = malloc(SESAME_PAGE_MAX_TEMPLATE + 2);
    memset(big, 'x', SESAME_PAGE_MAX_TEMPLATE + 1);
    big[SESAME_PAGE_MAX_TEMPLATE + 1] = '\0';
    char *msg = load_error("error-404.html", big);
    assert_non_null(strstr(msg, "too large"));
    free(msg);
    free(big);

    /* a directory that does not exist */
    char *err = NULL;
    char *dir;
    struct sesame_pages *p;
    assert_null(sesame_pages_load("/nonexistent/sesame-templates", NULL, &err));
    assert_non_null(strstr(err, "/nonexistent/sesame-templates: cannot open"));
    free(err);
    err = NULL;

    /* nested lists: the outer item's fields stay visible */
    dir = make_dir();
    write_file(dir, "sign-in.html",
               "<h1>{{title}}</h1>{{#providers}}{{#claims}}[{{provider_label}}:{{claim}}]"
               "{{/claims}}{{/providers}}");
    p = sesame_pages_load(NULL, dir, &err);
    assert_null(err);
    struct sesame_page_ctx c = sample_ctx();
    c.nclaims = 1;
    char *h = render(p, SESAME_PAGE_SIGN_IN, &c);
    assert_non_null(strstr(h, "[FranceConnect:vos prénoms][ProConnect:vos prénoms]"));
    free(h);
    sesame_pages_free(p);
    remove_dir(dir);

    /* comments and spaces inside tags are fine */
    dir = make_dir();
    write_file(dir, "error-404.html", "{{! a comment, {{title is not looked at }}"
                                      "<h1>{{ title }}</h1>{{^reference}}x{{/reference}}");
    err = NULL;
    p = sesame_pages_load(NULL, dir, &err);
    assert_null(err);
    h = render(p, SESAME_PAGE_ERROR_404, &c);
    assert_non_null(strstr(h, "<h1>Page introuvable</h1>\n<p class=\"reference\">"));
    free(h);
    sesame_pages_free(p);
    remove_dir(dir);
}

static void
test_platform_dir_is_builtin(void **state)
{
    /* the source templates, loaded from disk, render as the built-in copies */
    char dir[1024];
    const char *src = getenv("SESAME_SRCDIR");
    if (src != NULL) {
        snprintf(dir, sizeof(dir), "%s/gateway/pages/templates", src);
    } else {
        snprintf(dir, sizeof(dir), "%s", __FILE__);
        char *cut = strstr(dir, "tests/unit/pages/test_page.c");
        assert_non_null(cut);
        strcpy(cut, "gateway/pages/templates");
    }
    char *err = NULL;
    struct sesame_pages *disk = sesame_pages_load(dir, NULL, &err);
    if (disk == NULL)
        fail_msg("%s", err);
    struct sesame_pages *builtin = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    for (int id = 0; id < SESAME_PAGE_COUNT; id++) {
        char *a = render(disk, (enum sesame_page_id)id, &c);
        char *b = render(builtin, (enum sesame_page_id)id, &c);
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
    sesame_pages_free(disk);
    sesame_pages_free(builtin);
}

static void
test_security_headers(void **state)
{
    const char *h = sesame_page_security_headers();
    assert_non_null(strstr(h, "Content-Security-Policy: default-src 'none'; style-src 'self'; "
                              "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                              "base-uri 'none'\r\n"));
    assert_non_null(strstr(h, "X-Content-Type-Options: nosniff\r\n"));
    assert_non_null(strstr(h, "Referrer-Policy: no-referrer\r\n"));
    assert_non_null(strstr(h, "X-Frame-Options: DENY\r\n"));
    assert_non_null(strstr(h, "Permissions-Policy: "));
    assert_non_null(strstr(h, "Cache-Control: no-store\r\n"));
    assert_null(strstr(h, "unsafe"));
    size_t n = 0;
    const struct sesame_page_header *list = sesame_page_security_header_list(&n);
    assert_true(n >= 6);
    size_t lines = count(h, "\r\n");
    assert_int_equal(lines, n);
    for (size_t i = 0; i < n; i++) {
        char line[512];
        snprintf(line, sizeof(line), "%s: %s\r\n", list[i].name, list[i].value);
        assert_non_null(strstr(h, line));
    }

    const char *origins[] = {"https://oidc.franceconnect.gouv.fr", "http://127.0.0.1:9090",
                             "https://[::1]:8443"};
    char *err = NULL;
    char *csp = sesame_page_csp(origins, 3, &err);
    assert_non_null(csp);
    assert_string_equal(csp, "default-src 'none'; style-src 'self'; img-src 'self'; form-action "
                             "'self' https://oidc.franceconnect.gouv.fr http://127.0.0.1:9090 "
                             "https://[::1]:8443; frame-ancestors 'none'; base-uri 'none'");
    free(csp);
    csp = sesame_page_csp(NULL, 0, &err);
    assert_string_equal(csp, list[0].value);
    free(csp);
    static const char *const bad[] = {
        "https://x.example/path", "https://x.example; script-src *", "ftp://x.example",
        "https://", "https://x.example:99999999", "https://x .example", "https://'self'",
        "*", "https://x.example/", "https://-x.example"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_null(sesame_page_csp(&bad[i], 1, &err));
        assert_non_null(err);
        free(err);
    }
}

/* The POST_KEPT page holds SESAME_PAGE_RESUME_SCRIPT exactly, in the form it
 * sends, and its script-src is the SHA-256 of that text; no other page has one. */
static void
test_resume_script(void **state)
{
    (void)state;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *script = SESAME_PAGE_RESUME_SCRIPT;
    assert_int_equal(EVP_Digest(script, strlen(script), md, &mdlen, EVP_sha256(), NULL), 1);
    assert_int_equal(mdlen, 32);
    char b64[64];
    EVP_EncodeBlock((unsigned char *)b64, md, (int)mdlen);
    char want[100];
    snprintf(want, sizeof(want), "'sha256-%s'", b64);
    assert_non_null(sesame_page_script_src(SESAME_PAGE_POST_KEPT));
    assert_string_equal(sesame_page_script_src(SESAME_PAGE_POST_KEPT), want);
    for (int id = 0; id < SESAME_PAGE_COUNT; id++)
        if (id != SESAME_PAGE_POST_KEPT)
            assert_null(sesame_page_script_src((enum sesame_page_id)id));
    assert_null(sesame_page_script_src(SESAME_PAGE_COUNT));

    char *err = NULL;
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, &err);
    assert_null(err);
    assert_non_null(p);
    struct sesame_page_ctx c = sample_ctx();
    c.resume_id = "abcdefghijklmnopqrstuvwxyz012345";
    char *h = render(p, SESAME_PAGE_POST_KEPT, &c);
    char tag[200];
    snprintf(tag, sizeof(tag), "<script>%s</script>", script);
    assert_non_null(strstr(h, tag));
    assert_int_equal(count(h, "<script"), 1);
    const char *form = strstr(h, "<form id=\"sesame-resume\" method=\"post\" action=\"");
    assert_non_null(form);
    assert_true(form < strstr(h, tag)); /* the form exists when the script runs */
    free(h);
    sesame_pages_free(p);
}

static char *
theme(const char *accent)
{
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sesame_page_theme_css(accent, b), SESAME_OK);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void
test_theme(void **state)
{
    assert_true(sesame_page_accent_ok("#000000"));
    assert_true(sesame_page_accent_ok("#000091"));
    assert_true(sesame_page_accent_ok("#767676")); /* 4.54:1 */
    assert_false(sesame_page_accent_ok("#777777")); /* 4.48:1 */
    assert_false(sesame_page_accent_ok("#ffffff"));
    assert_false(sesame_page_accent_ok("#ffcc00"));
    assert_false(sesame_page_accent_ok("#00009"));
    assert_false(sesame_page_accent_ok("000091"));
    assert_false(sesame_page_accent_ok("#00009g"));
    assert_false(sesame_page_accent_ok(NULL));

    char *s = theme("#0B6E4F");
    assert_non_null(strstr(s, ":root { --accent: #0b6e4f; }"));
    free(s);
    s = theme("#ffcc00");
    assert_non_null(strstr(s, "/* accent #ffcc00 has a contrast of 1."));
    assert_non_null(strstr(s, "the dark default is used */"));
    assert_non_null(strstr(s, ":root { --accent: #000091; }"));
    free(s);
    s = theme("red;} body{display:none");
    assert_non_null(strstr(s, ":root { --accent: #000091; }"));
    assert_null(strstr(s, "display"));
    free(s);
    s = theme(NULL);
    assert_non_null(strstr(s, ":root { --accent: #000091; }"));
    free(s);
    assert_int_equal(sesame_page_theme_css("#000000", NULL), SESAME_ERROR);
}

static void
test_logo(void **state)
{
    char *dir = make_dir();
    char path[600];
    snprintf(path, sizeof(path), "%s/logo", dir);
    FILE *f = fopen(path, "wb");
    fwrite("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 1, 16, f);
    fclose(f);
    char *err = NULL;
    struct sesame_page_logo *l = sesame_page_logo_load(path, &err);
    assert_non_null(l);
    assert_string_equal(l->asset.content_type, "image/png");
    assert_int_equal(l->asset.len, 16);
    assert_memory_equal(l->asset.data, "\x89PNG", 4);
    sesame_page_logo_free(l);

    write_file(dir, "logo",
               "\xef\xbb\xbf<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    l = sesame_page_logo_load(path, &err);
    assert_non_null(l);
    assert_string_equal(l->asset.content_type, "image/svg+xml");
    assert_non_null(strstr(l->asset.csp, "sandbox"));
    sesame_page_logo_free(l);

    write_file(dir, "logo", "<html><script>alert(1)</script></html>");
    assert_null(sesame_page_logo_load(path, &err));
    assert_non_null(strstr(err, "not a PNG"));
    free(err);
    err = NULL;

    f = fopen(path, "wb");
    fwrite("GIF89a", 1, 6, f);
    for (int i = 0; i < SESAME_PAGE_MAX_LOGO; i++)
        fputc(0, f);
    fclose(f);
    assert_null(sesame_page_logo_load(path, &err));
    assert_non_null(strstr(err, "too large"));
    free(err);
    err = NULL;

    snprintf(path, sizeof(path), "%s/missing", dir);
    assert_null(sesame_page_logo_load(path, &err));
    assert_non_null(strstr(err, "no such file"));
    free(err);
    err = NULL;
    assert_null(sesame_page_logo_load(dir, &err)); /* a directory */
    assert_non_null(err);
    free(err);
    sesame_page_logo_free(NULL);
    sesame_pages_free(NULL);
    remove_dir(dir);
}

struct thread_arg {
    const struct sesame_pages *p;
    const char *expected;
    int ok;
};

static void *
render_many(void *arg)
{
    struct thread_arg *a = arg;
    struct sesame_page_ctx c = sample_ctx();
    a->ok = 1;
    for (int i = 0; i < 200; i++) {
        struct evbuffer *b = evbuffer_new();
        sesame_page_render(a->p, SESAME_PAGE_SIGN_IN, &c, b);
        size_t n = evbuffer_get_length(b);
        const char *s = (const char *)evbuffer_pullup(b, -1);
        if (n != strlen(a->expected) || memcmp(s, a->expected, n) != 0)
            a->ok = 0;
        evbuffer_free(b);
    }
    return NULL;
}

static void
test_threads(void **state)
{
    struct sesame_pages *p = sesame_pages_load(NULL, NULL, NULL);
    struct sesame_page_ctx c = sample_ctx();
    char *expected = render(p, SESAME_PAGE_SIGN_IN, &c);
    pthread_t t[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){p, expected, 0};
        assert_int_equal(pthread_create(&t[i], NULL, render_many, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].ok, 1);
    }
    free(expected);
    sesame_pages_free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_page),
        cmocka_unit_test(test_sign_in),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_communes),
        cmocka_unit_test(test_hostile_values),
        cmocka_unit_test(test_links_and_bounds),
        cmocka_unit_test(test_logout_and_errors),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_override),
        cmocka_unit_test(test_broken_override),
        cmocka_unit_test(test_platform_dir_is_builtin),
        cmocka_unit_test(test_security_headers),
        cmocka_unit_test(test_resume_script),
        cmocka_unit_test(test_theme),
        cmocka_unit_test(test_logo),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
