/*
 * render_all - renders every page Sésame serves for a sample commune into a
 * directory, to look at them in a browser or run an accessibility checker.
 *
 *   render_all OUTDIR [TENANT_TEMPLATES_DIR]
 *
 * Writes OUTDIR/<page>.html (sign-in.html, error-404.html, ...), plus the
 * assets at the URLs the pages use: OUTDIR/sesame/static/sesame.css,
 * OUTDIR/sesame/static/theme/ville-a.css, OUTDIR/sesame/static/logo/ville-a
 * (an SVG). The URLs are absolute paths, so serve OUTDIR over HTTP, e.g.
 * `python3 -m http.server -d OUTDIR 8000`, then open
 * http://127.0.0.1:8000/sign-in.html. Exits 0 on success.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>

#include "pages/page.h"

static const char logo_svg[] =
    "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 48 48\" width=\"48\" height=\"48\">"
    "<rect width=\"48\" height=\"48\" rx=\"8\" fill=\"#0b6e4f\"/>"
    "<path d=\"M10 34 L24 12 L38 34 Z\" fill=\"#ffffff\"/></svg>\n";

static int
mkdirs(const char *path)
{
    char buf[4096];
    if (strlen(path) >= sizeof(buf))
        return -1;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int
write_bytes(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "render_all: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int
write_buffer(const char *dir, const char *name, struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    int rc = write_bytes(dir, name, evbuffer_pullup(b, -1), n);
    evbuffer_drain(b, n);
    return rc;
}

int
main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: render_all OUTDIR [TENANT_TEMPLATES_DIR]\n");
        return 2;
    }
    const char *out = argv[1];
    char *err = NULL;
    struct sesame_pages *p = sesame_pages_load(NULL, argc == 3 ? argv[2] : NULL, &err);
    if (p == NULL) {
        fprintf(stderr, "render_all: %s\n", err);
        free(err);
        return 1;
    }
    static const struct sesame_page_provider providers[] = {
        {.name = "franceconnect",
         .label = "FranceConnect",
         .brand = SESAME_PAGE_BRAND_FRANCECONNECT,
         .scopes = "openid identite_pivot email"},
        {.name = "proconnect",
         .label = "ProConnect",
         .brand = SESAME_PAGE_BRAND_PROCONNECT,
         .scopes = "openid given_name usual_name email uid siret"},
    };
    static const char *const claims[] = {"given_name", "family_name", "birthdate", "birthplace",
                                         "email"};
    struct sesame_page_ctx c;
    memset(&c, 0, sizeof(c));
    c.tenant = "ville-a";
    c.tenant_name = "Ville de Saint-Éloi";
    c.accent_color = "#0b6e4f";
    c.has_logo = true;
    c.home_url = "/";
    c.contact_url = "/contact";
    c.legal_url = "/mentions-legales";
    c.prefix = "/sesame/";
    c.request_id = "7f3a9c2e-51";
    c.return_to = "/demarches/etat-civil";
    c.providers = providers;
    c.nproviders = 2;
    c.claims = claims;
    c.nclaims = 5;
    c.csrf_token = "exemple-de-jeton";
    c.cancel_url = "/demarches/etat-civil";
    c.reason = "Ce service est réservé aux personnes majeures.";

    char dir[4096];
    int rc = 0;
    struct evbuffer *b = evbuffer_new();
    if (mkdirs(out) != 0) {
        fprintf(stderr, "render_all: cannot create %s\n", out);
        return 1;
    }
    for (int id = 0; id < SESAME_PAGE_COUNT && rc == 0; id++) {
        if (sesame_page_render(p, (enum sesame_page_id)id, &c, b) != SESAME_OK)
            rc = -1;
        else
            rc = write_buffer(out, sesame_page_file((enum sesame_page_id)id), b);
    }
    struct sesame_page_asset css;
    snprintf(dir, sizeof(dir), "%s/sesame/static/theme", out);
    if (rc == 0 && mkdirs(dir) == 0 && sesame_page_theme_css(c.accent_color, b) == SESAME_OK)
        rc = write_buffer(dir, "ville-a.css", b);
    snprintf(dir, sizeof(dir), "%s/sesame/static/logo", out);
    if (rc == 0 && mkdirs(dir) == 0)
        rc = write_bytes(dir, "ville-a", logo_svg, sizeof(logo_svg) - 1);
    snprintf(dir, sizeof(dir), "%s/sesame/static", out);
    if (rc == 0 && sesame_page_asset(p, "sesame.css", &css) == SESAME_OK)
        rc = write_bytes(dir, "sesame.css", css.data, css.len);
    evbuffer_free(b);
    sesame_pages_free(p);
    if (rc != 0)
        return 1;
    printf("render_all: %d pages written to %s\n", SESAME_PAGE_COUNT, out);
    return 0;
}
