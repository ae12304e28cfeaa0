/*
 * test_provider.c - offline unit tests of the provider runtime: percent
 * encoding, PKCE, authorize / end-session URLs, token request forms per
 * client authentication method, metadata checks, settings checks and the
 * registry. Network operations are covered by test_provider_live.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/util.h"
#include "oidc/provider.h"
#include "test_provider_mockfc.h"

static char *tmpdir;

/* ---- configuration helpers ---------------------------------------------------- */

static char *
xs(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct sesame_conf_provider *
conf_new(const char *name)
{
    struct sesame_conf_provider *p = calloc(1, sizeof(*p));
    p->name = xs(name);
    p->issuer = xs("https://op.example/api/v2");
    p->discovery = true;
    p->discovery_refresh_ms = 3600 * 1000;
    p->client_id = xs("client one");
    p->client_secret = xs("s&cr\xc3\xa9 t x");
    p->token_auth = SESAME_AUTH_CLIENT_SECRET_POST;
    p->scopes = xs("openid  given_name\tfamily_name");
    p->acr_values = xs("eidas1");
    p->signing_algs = SESAME_ALG_ES256 | SESAME_ALG_RS256;
    p->userinfo = SESAME_USERINFO_JWT;
    p->leeway_ms = 60000;
    p->http_timeout_ms = 5000;
    p->jwks_refetch_interval_ms = 60000;
    return p;
}

static void
conf_add_param(struct sesame_conf_provider *p, const char *kv)
{
    p->authorize_params = realloc(p->authorize_params, (p->nauthorize_params + 1) * sizeof(char *));
    p->authorize_params[p->nauthorize_params++] = xs(kv);
}

static void
conf_add_dec(struct sesame_conf_provider *p, const char *path)
{
    p->decryption_key_files =
        realloc(p->decryption_key_files, (p->ndecryption_key_files + 1) * sizeof(char *));
    p->decryption_key_files[p->ndecryption_key_files++] = xs(path);
}


static const char *DOC =
    "{\"issuer\":\"https://op.example/api/v2\","
    "\"authorization_endpoint\":\"https://op.example/api/v2/authorize\","
    "\"token_endpoint\":\"https://op.example/api/v2/token\","
    "\"userinfo_endpoint\":\"https://op.example/api/v2/userinfo\","
    "\"jwks_uri\":\"https://op.example/api/v2/jwks\","
    "\"end_session_endpoint\":\"https://op.example/api/v2/session/end\"}";

static struct sesame_provider *
get_rt(const struct sesame_conf_provider *p)
{
    char *err = NULL;
    struct sesame_provider *rt = sesame_provider_registry_get(p, &err);
    if (rt == NULL)
        fprintf(stderr, "registry_get: %s\n", err);
    assert_non_null(rt);
    free(err);
    return rt;
}

static struct sesame_provider *
get_rt_with_doc(const struct sesame_conf_provider *p)
{
    struct sesame_provider *rt = get_rt(p);
    char *err = NULL;
    assert_int_equal(sesame_provider_set_metadata(rt, DOC, strlen(DOC), &err), SESAME_OK);
    return rt;
}

/* Writes a fresh EC P-256 (or RSA 2048) private key as PKCS#8 PEM. */
static char *
write_key(const char *name, bool rsa)
{
    EVP_PKEY *k = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                      : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(k);
    return strdup(path);
}

static int
teardown_registry(void **state)
{
    (void)state;
    sesame_provider_registry_clear();
    return 0;
}

/* ---- percent-encoding and PKCE -------------------------------------------------- */

static char *
enc(const char *s)
{
    char *b = NULL;
    size_t n = 0;
    sesame_provider_percent_encode(&b, &n, s);
    assert_int_equal(n, strlen(b));
    return b;
}

static void
test_percent_encode(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"AZaz09-._~", "AZaz09-._~"},
        {" ", "%20"},
        {"a+b", "a%2Bb"},
        {"/?#[]@!$&'()*,;=:%", "%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2C%3B%3D%3A%25"},
        {"\xc3\xa9", "%C3%A9"},
        {"\r\n\t\x7f", "%0D%0A%09%7F"},
        {"{\"a\":1}", "%7B%22a%22%3A1%7D"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = enc(cases[i].in);
        assert_string_equal(b, cases[i].out);
        free(b);
    }
    /* appends */
    char *b = strdup("x=");
    size_t n = 2;
    sesame_provider_percent_encode(&b, &n, "a b");
    assert_string_equal(b, "x=a%20b");
    assert_int_equal(n, 7);
    free(b);
}

static void
test_pkce_challenge(void **state)
{
    (void)state;
    /* expected value computed with Python's hashlib + base64 */
    char *c = sesame_provider_pkce_challenge("dBjftJeZ4CVP-mJ92K9pGlOwuT8XUA7OuWCHD2kiMXv");
    assert_non_null(c);
    assert_string_equal(c, "OYw8Pv6VvU8Fd-g2wu3TraDZi8sgO6SUiNbMYYfRCJg");
    free(c);
    assert_null(sesame_provider_pkce_challenge(NULL));
    assert_null(sesame_provider_pkce_challenge("short"));
    assert_null(sesame_provider_pkce_challenge("dBjftJeZ4CVP-mJ92K9pGlOwuT8XUA7OuWCHD2kiMX+"));
    char longv[130];
    memset(longv, 'a', 129);
    longv[129] = '\0';
    assert_null(sesame_provider_pkce_challenge(longv));
    longv[128] = '\0';
    c = sesame_provider_pkce_challenge(longv);
    assert_non_null(c);
    free(c);
}

/* ---- authorize URL ------------------------------------------------------------- */

static void
test_authorize_url_exact(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("authz");
    conf_add_param(p, "prompt=login%20consent");
    conf_add_param(p, "claims={\"id_token\":{\"amr\":{\"essential\":true}}}");
    struct sesame_provider *rt = get_rt_with_doc(p);
    char *err = NULL;
    char *u = sesame_provider_authorize_url(rt, "https://rp.example/sesame/callback?x=1&y=2",
                                            "st ate/+", "n\xc3\xa9once", NULL, NULL, &err);
    assert_non_null(u);
    assert_string_equal(u, "https://op.example/api/v2/authorize?response_type=code"
                           "&client_id=client%20one"
                           "&redirect_uri=https%3A%2F%2Frp.example%2Fsesame%2Fcallback%3Fx%3D1%26y%3D2"
                           "&scope=openid%20given_name%20family_name"
                           "&state=st%20ate%2F%2B&nonce=n%C3%A9once&acr_values=eidas1"
                           "&prompt=login%20consent"
                           "&claims=%7B%22id_token%22%3A%7B%22amr%22%3A%7B%22essential%22%3Atrue%7D%7D%7D");
    free(u);
    /* acr_values given by the caller wins; a code_challenge is ignored without pkce */
    u = sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", "eidas2 eidas3", "chal",
                                      &err);
    assert_non_null(u);
    assert_non_null(strstr(u, "&acr_values=eidas2%20eidas3&prompt="));
    assert_null(strstr(u, "code_challenge"));
    free(u);
    /* required arguments */
    assert_null(sesame_provider_authorize_url(rt, NULL, "s", "n", NULL, NULL, &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_null(sesame_provider_authorize_url(rt, "https://rp/cb", "", "n", NULL, NULL, &err));
    free(err);
    err = NULL;
    assert_null(sesame_provider_authorize_url(rt, "https://rp/cb", "s", NULL, NULL, NULL, &err));
    free(err);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_authorize_url_pkce_and_query(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("pkce");
    p->pkce = true;
    free(p->acr_values);
    p->acr_values = NULL;
    p->discovery = false;
    p->userinfo = SESAME_USERINFO_OFF;
    p->authorization_endpoint = xs("https://op.example/auth?tenant=a");
    p->token_endpoint = xs("https://op.example/token");
    p->jwks_uri = xs("https://op.example/jwks");
    struct sesame_provider *rt = get_rt(p); /* explicit endpoints: no document needed */
    char *err = NULL;
    assert_null(sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, NULL, &err));
    assert_non_null(strstr(err, "code_challenge"));
    free(err);
    err = NULL;
    char *u = sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, "abc-_", &err);
    assert_non_null(u);
    assert_string_equal(u, "https://op.example/auth?tenant=a&response_type=code"
                           "&client_id=client%20one&redirect_uri=https%3A%2F%2Frp%2Fcb"
                           "&scope=openid%20given_name%20family_name&state=s&nonce=n"
                           "&code_challenge=abc-_&code_challenge_method=S256");
    free(u);
    assert_true(sesame_provider_pkce(rt));
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_authorize_url_needs_metadata(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("nometa");
    struct sesame_provider *rt = get_rt(p);
    char *err = NULL;
    assert_null(sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, NULL, &err));
    assert_non_null(strstr(err, "metadata"));
    free(err);
    assert_null(sesame_provider_end_session_url(rt, "h", "s", "https://rp/out"));
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_explicit_endpoints_win(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("explicit");
    p->authorization_endpoint = xs("https://other.example/authorize");
    p->end_session_endpoint = xs("https://other.example/logout");
    struct sesame_provider *rt = get_rt_with_doc(p);
    char *err = NULL;
    char *u = sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, NULL, &err);
    assert_non_null(u);
    assert_int_equal(strncmp(u, "https://other.example/authorize?response_type=code&", 51), 0);
    free(u);
    u = sesame_provider_end_session_url(rt, NULL, "st", NULL);
    assert_string_equal(u, "https://other.example/logout?state=st");
    free(u);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_end_session_url(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("logout");
    struct sesame_provider *rt = get_rt_with_doc(p);
    char *u = sesame_provider_end_session_url(rt, "eyJ.a.b", "s t", "https://rp.example/out?a=1");
    assert_string_equal(u, "https://op.example/api/v2/session/end?id_token_hint=eyJ.a.b"
                           "&state=s%20t&post_logout_redirect_uri="
                           "https%3A%2F%2Frp.example%2Fout%3Fa%3D1");
    free(u);
    sesame_provider_unref(rt);
    /* a document without end_session_endpoint: NULL */
    struct sesame_conf_provider *q = conf_new("logout2");
    rt = get_rt(q);
    const char *doc = "{\"issuer\":\"https://op.example/api/v2\","
                      "\"authorization_endpoint\":\"https://op.example/a\","
                      "\"token_endpoint\":\"https://op.example/t\","
                      "\"userinfo_endpoint\":\"https://op.example/u\","
                      "\"jwks_uri\":\"https://op.example/k\"}";
    char *err = NULL;
    assert_int_equal(sesame_provider_set_metadata(rt, doc, strlen(doc), &err), SESAME_OK);
    assert_null(sesame_provider_end_session_url(rt, "h", "s", "https://rp/out"));
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
    test_provider_conf_free(q);
}

/* ---- metadata checks ------------------------------------------------------------- */

static void
expect_doc_refused(struct sesame_provider *rt, const char *doc, const char *needle)
{
    char *err = NULL;
    assert_int_equal(sesame_provider_set_metadata(rt, doc, strlen(doc), &err), SESAME_ERROR);
    assert_non_null(err);
    if (needle != NULL && strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
    free(err);
    /* the cache stayed empty */
    err = NULL;
    assert_null(sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, NULL, &err));
    free(err);
}

static void
test_metadata_checks(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("meta");
    struct sesame_provider *rt = get_rt(p);
#define EP(a, t, u, j) "\"authorization_endpoint\":\"" a "\",\"token_endpoint\":\"" t "\"," \
                       "\"userinfo_endpoint\":\"" u "\",\"jwks_uri\":\"" j "\""
#define GOOD EP("https://op.example/a", "https://op.example/t", "https://op.example/u",        \
                "https://op.example/k")
    expect_doc_refused(rt, "{\"issuer\":\"https://op.example/api/v2/\"," GOOD "}", "issuer");
    expect_doc_refused(rt, "{\"issuer\":\"https://OP.example/api/v2\"," GOOD "}", "issuer");
    expect_doc_refused(rt, "{\"issuer\":\"https://op.example/api\"," GOOD "}", "issuer");
    expect_doc_refused(rt, "{" GOOD "}", "issuer");
    expect_doc_refused(rt, "{\"issuer\":1," GOOD "}", "issuer");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\"," EP(
                           "https://op.example/a", "http://op.example/t", "https://op.example/u",
                           "https://op.example/k") "}",
                       "token_endpoint");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\"," EP(
                           "http://op.example/a", "https://op.example/t", "https://op.example/u",
                           "https://op.example/k") "}",
                       "authorization_endpoint");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\"," EP(
                           "https://op.example/a", "https://op.example/t", "https://op.example/u",
                           "ftp://op.example/k") "}",
                       "jwks_uri");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\"," EP(
                           "https://op.example/a#f", "https://op.example/t",
                           "https://op.example/u", "https://op.example/k") "}",
                       "authorization_endpoint");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\"," EP(
                           "https://user@op.example/a", "https://op.example/t",
                           "https://op.example/u", "https://op.example/k") "}",
                       "authorization_endpoint");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\"," EP(
                           "https:///a", "https://op.example/t", "https://op.example/u",
                           "https://op.example/k") "}",
                       "authorization_endpoint");
    expect_doc_refused(rt, "{\"issuer\":\"https://op.example/api/v2\"," GOOD
                           ",\"end_session_endpoint\":\"http://op.example/e\"}",
                       "end_session_endpoint");
    expect_doc_refused(rt, "{\"issuer\":\"https://op.example/api/v2\"," GOOD
                           ",\"end_session_endpoint\":7}",
                       "end_session_endpoint");
    /* required endpoints */
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\","
                       "\"authorization_endpoint\":\"https://op.example/a\","
                       "\"token_endpoint\":\"https://op.example/t\","
                       "\"userinfo_endpoint\":\"https://op.example/u\"}",
                       "jwks_uri");
    expect_doc_refused(rt,
                       "{\"issuer\":\"https://op.example/api/v2\","
                       "\"authorization_endpoint\":\"https://op.example/a\","
                       "\"token_endpoint\":\"https://op.example/t\","
                       "\"jwks_uri\":\"https://op.example/k\"}",
                       "userinfo_endpoint");
    /* malformed JSON, duplicates, not an object */
    expect_doc_refused(rt, "[]", NULL);
    expect_doc_refused(rt, "{\"issuer\":", NULL);
    expect_doc_refused(rt, "{\"issuer\":\"https://evil.example\",\"issuer\":"
                           "\"https://op.example/api/v2\"," GOOD "}", NULL);
    /* a good one is accepted */
    const char *good = "{\"issuer\":\"https://op.example/api/v2\"," GOOD "}";
    char *err = NULL;
    assert_int_equal(sesame_provider_set_metadata(rt, good, strlen(good), &err), SESAME_OK);
    char *u = sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, NULL, &err);
    assert_non_null(u);
    assert_int_equal(strncmp(u, "https://op.example/a?", 21), 0);
    free(u);
    /* a bad document later leaves the good copy in place */
    assert_int_equal(sesame_provider_set_metadata(rt, "{}", 2, &err), SESAME_ERROR);
    free(err);
    err = NULL;
    u = sesame_provider_authorize_url(rt, "https://rp/cb", "s", "n", NULL, NULL, &err);
    assert_non_null(u);
    free(u);
    sesame_provider_unref(rt);

    /* userinfo off: no userinfo endpoint needed; explicit endpoints fill gaps */
    p->userinfo = SESAME_USERINFO_OFF;
    p->jwks_uri = xs("https://op.example/explicit-jwks");
    rt = get_rt(p);
    const char *nouserinfo = "{\"issuer\":\"https://op.example/api/v2\","
                             "\"authorization_endpoint\":\"https://op.example/a\","
                             "\"token_endpoint\":\"https://op.example/t\"}";
    assert_int_equal(sesame_provider_set_metadata(rt, nouserinfo, strlen(nouserinfo), &err),
                     SESAME_OK);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
#undef GOOD
#undef EP
}

static void
test_jwks_install(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("jwks");
    struct sesame_provider *rt = get_rt_with_doc(p);
    char *err = NULL;
    assert_int_equal(sesame_provider_set_jwks(rt, "{\"keys\":[]}", 11, &err), SESAME_ERROR);
    assert_non_null(err);
    free(err);
    err = NULL;
    /* a public key exported by jose */
    char *path = write_key("jwks-ec.pem", false);
    struct sesame_jose_key *k = sesame_jose_key_load(path, "ES256", &err);
    assert_non_null(k);
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    assert_int_equal(sesame_jose_keyset_add(ks, k, &err), SESAME_OK);
    char *jwks = sesame_jose_keyset_export(ks, &err);
    assert_non_null(jwks);
    assert_int_equal(sesame_provider_set_jwks(rt, jwks, strlen(jwks), &err), SESAME_OK);
    free(jwks);
    sesame_jose_keyset_free(ks);
    free(path);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- token requests --------------------------------------------------------------- */

static void
test_token_form_post(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("form-post");
    struct sesame_provider *rt = get_rt_with_doc(p);
    struct sesame_provider_token_request tr;
    char *err = NULL;
    assert_int_equal(sesame_provider_token_request(rt, "c/d+e", "https://rp.example/cb", NULL,
                                                   &tr, &err),
                     SESAME_OK);
    assert_string_equal(tr.body, "grant_type=authorization_code&code=c%2Fd%2Be"
                                 "&redirect_uri=https%3A%2F%2Frp.example%2Fcb"
                                 "&client_id=client%20one&client_secret=s%26cr%C3%A9%20t%20x");
    assert_null(tr.authorization);
    sesame_provider_token_request_clear(&tr);
    assert_null(tr.body);
    /* with a PKCE verifier */
    assert_int_equal(sesame_provider_token_request(rt, "c", "https://rp/cb", "verif-ier", &tr,
                                                   &err),
                     SESAME_OK);
    assert_string_equal(tr.body, "grant_type=authorization_code&code=c"
                                 "&redirect_uri=https%3A%2F%2Frp%2Fcb&code_verifier=verif-ier"
                                 "&client_id=client%20one&client_secret=s%26cr%C3%A9%20t%20x");
    sesame_provider_token_request_clear(&tr);
    /* required arguments */
    assert_int_equal(sesame_provider_token_request(rt, "", "https://rp/cb", NULL, &tr, &err),
                     SESAME_ERROR);
    free(err);
    err = NULL;
    assert_int_equal(sesame_provider_token_request(rt, "c", NULL, NULL, &tr, &err),
                     SESAME_ERROR);
    free(err);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_token_form_basic(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("form-basic");
    p->token_auth = SESAME_AUTH_CLIENT_SECRET_BASIC;
    struct sesame_provider *rt = get_rt_with_doc(p);
    struct sesame_provider_token_request tr;
    char *err = NULL;
    assert_int_equal(sesame_provider_token_request(rt, "code", "https://rp.example/cb", NULL,
                                                   &tr, &err),
                     SESAME_OK);
    assert_string_equal(tr.body, "grant_type=authorization_code&code=code"
                                 "&redirect_uri=https%3A%2F%2Frp.example%2Fcb");
    /* base64("client%20one:s%26cr%C3%A9%20t%20x"), computed with Python */
    assert_string_equal(tr.authorization,
                        "Authorization: Basic Y2xpZW50JTIwb25lOnMlMjZjciVDMyVBOSUyMHQlMjB4");
    sesame_provider_token_request_clear(&tr);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* Value of name in an x-www-form-urlencoded body, decoded. */
static char *
form_value(const char *body, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = body; *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char *out = malloc(len), *o = out;
            for (size_t i = nl + 1; i < len; i++) {
                if (p[i] == '%') {
                    unsigned v;
                    sscanf(p + i + 1, "%2x", &v);
                    *o++ = (char)v;
                    i += 2;
                } else {
                    *o++ = p[i];
                }
            }
            *o = '\0';
            return out;
        }
        p += len + (end ? 1 : 0);
    }
    return NULL;
}

static void
test_token_form_private_key_jwt(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("form-jwt");
    p->token_auth = SESAME_AUTH_PRIVATE_KEY_JWT;
    free(p->client_secret);
    p->client_secret = NULL;
    p->private_key_file = write_key("assertion.pem", false);
    struct sesame_provider *rt = get_rt_with_doc(p);
    struct sesame_provider_token_request tr;
    char *err = NULL;
    int64_t before = sesame_util_now();
    assert_int_equal(sesame_provider_token_request(rt, "code", "https://rp.example/cb", NULL,
                                                   &tr, &err),
                     SESAME_OK);
    assert_null(tr.authorization);
    assert_null(strstr(tr.body, "client_secret"));
    char *v = form_value(tr.body, "grant_type");
    assert_string_equal(v, "authorization_code");
    free(v);
    v = form_value(tr.body, "client_id");
    assert_string_equal(v, "client one");
    free(v);
    v = form_value(tr.body, "client_assertion_type");
    assert_string_equal(v, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    free(v);
    char *jwt = form_value(tr.body, "client_assertion");
    assert_non_null(jwt);

    /* verify it with the public key, through an exported JWKS */
    struct sesame_jose_key *k = sesame_jose_key_load(p->private_key_file, "ES256", &err);
    assert_non_null(k);
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    assert_int_equal(sesame_jose_keyset_add(ks, k, &err), SESAME_OK);
    char *pub = sesame_jose_keyset_export(ks, &err);
    sesame_jose_keyset_free(ks);
    assert_null(strstr(pub, "\"d\""));
    struct sesame_jose_keyset *pubks = sesame_jose_keyset_parse(pub, strlen(pub), &err);
    assert_non_null(pubks);
    json_t *claims = NULL;
    assert_int_equal(sesame_jose_verify(jwt, strlen(jwt), pubks, SESAME_ALG_ES256, NULL, 0,
                                        &claims, &err),
                     SESAME_OK);
    assert_string_equal(json_string_value(json_object_get(claims, "iss")), "client one");
    assert_string_equal(json_string_value(json_object_get(claims, "sub")), "client one");
    assert_string_equal(json_string_value(json_object_get(claims, "aud")),
                        "https://op.example/api/v2/token");
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    assert_non_null(jti);
    assert_true(strlen(jti) >= 32);
    json_int_t iat = json_integer_value(json_object_get(claims, "iat"));
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    assert_true(iat >= before && iat <= sesame_util_now());
    assert_int_equal(exp - iat, 60);
    /* a second assertion has another jti */
    struct sesame_provider_token_request tr2;
    assert_int_equal(sesame_provider_token_request(rt, "code", "https://rp.example/cb", NULL,
                                                   &tr2, &err),
                     SESAME_OK);
    char *jwt2 = form_value(tr2.body, "client_assertion");
    json_t *claims2 = NULL;
    assert_int_equal(sesame_jose_verify(jwt2, strlen(jwt2), pubks, SESAME_ALG_ES256, NULL, 0,
                                        &claims2, &err),
                     SESAME_OK);
    assert_string_not_equal(json_string_value(json_object_get(claims2, "jti")), jti);
    json_decref(claims);
    json_decref(claims2);
    free(jwt);
    free(jwt2);
    free(pub);
    sesame_jose_keyset_free(pubks);
    sesame_provider_token_request_clear(&tr);
    sesame_provider_token_request_clear(&tr2);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_token_request_needs_metadata(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("form-nometa");
    struct sesame_provider *rt = get_rt(p);
    struct sesame_provider_token_request tr;
    char *err = NULL;
    assert_int_equal(sesame_provider_token_request(rt, "c", "https://rp/cb", NULL, &tr, &err),
                     SESAME_ERROR);
    assert_non_null(strstr(err, "metadata"));
    free(err);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- settings and registry ---------------------------------------------------------- */

static void
expect_conf_refused(struct sesame_conf_provider *p, const char *needle)
{
    char *err = NULL;
    struct sesame_provider *rt = sesame_provider_registry_get(p, &err);
    assert_null(rt);
    assert_non_null(err);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
    free(err);
}

static void
test_settings_refused(void **state)
{
    (void)state;
    static const struct {
        const char *param, *needle;
    } bad[] = {
        {"state=x", "set by the gateway"},
        {"redirect_uri=https://evil", "set by the gateway"},
        {"code_challenge_method=plain", "set by the gateway"},
        {"noequal", "name=value"},
        {"=v", "name=value"},
        {"na me=v", "name=value"},
        {"prompt=%zz", "escape"},
        {"prompt=%2", "escape"},
        {"prompt=%00", "escape"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sesame_conf_provider *p = conf_new("bad-params");
        conf_add_param(p, bad[i].param);
        expect_conf_refused(p, bad[i].needle);
        test_provider_conf_free(p);
    }
    struct sesame_conf_provider *p = conf_new("dup-params");
    conf_add_param(p, "prompt=login");
    conf_add_param(p, "prompt=consent");
    expect_conf_refused(p, "repeated");
    test_provider_conf_free(p);

    p = conf_new("no-secret");
    free(p->client_secret);
    p->client_secret = NULL;
    expect_conf_refused(p, "secret");
    test_provider_conf_free(p);

    p = conf_new("no-key");
    p->token_auth = SESAME_AUTH_PRIVATE_KEY_JWT;
    expect_conf_refused(p, "private_key_file");
    p->private_key_file = xs("/nonexistent/key.pem");
    expect_conf_refused(p, "/nonexistent/key.pem");
    test_provider_conf_free(p);

    p = conf_new("no-discovery");
    p->discovery = false;
    p->authorization_endpoint = xs("https://op.example/a");
    expect_conf_refused(p, "token_endpoint");
    p->token_endpoint = xs("https://op.example/t");
    p->jwks_uri = xs("https://op.example/k");
    expect_conf_refused(p, "userinfo_endpoint");
    p->userinfo = SESAME_USERINFO_OFF;
    struct sesame_provider *ok = get_rt(p);
    sesame_provider_unref(ok);
    test_provider_conf_free(p);

    p = conf_new("no-algs");
    p->signing_algs = 0;
    expect_conf_refused(p, "signing_algs");
    test_provider_conf_free(p);

    p = conf_new("bad-dec");
    char *junk = mockfc_write_file(tmpdir, "junk.pem", "not a key\n");
    conf_add_dec(p, junk);
    expect_conf_refused(p, "junk.pem");
    free(junk);
    test_provider_conf_free(p);
}

static void
test_registry_sharing(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("shared");
    struct sesame_provider *a = get_rt_with_doc(p);
    struct sesame_provider *b = get_rt(p);
    assert_ptr_equal(a, b); /* same settings: same runtime */
    assert_string_equal(sesame_provider_name(a), "shared");
    assert_string_equal(sesame_provider_issuer(a), "https://op.example/api/v2");
    sesame_provider_unref(b);

    /* another scope: a new runtime that keeps the cached metadata */
    free(p->scopes);
    p->scopes = xs("openid email");
    struct sesame_provider *c = get_rt(p);
    assert_ptr_not_equal(a, c);
    char *err = NULL;
    char *u = sesame_provider_authorize_url(c, "https://rp/cb", "s", "n", NULL, NULL, &err);
    assert_non_null(u);
    assert_non_null(strstr(u, "&scope=openid%20email&"));
    free(u);
    /* the replaced runtime still works for its holders */
    u = sesame_provider_authorize_url(a, "https://rp/cb", "s", "n", NULL, NULL, &err);
    assert_non_null(strstr(u, "&scope=openid%20given_name%20family_name&"));
    free(u);

    /* another client: a fresh runtime, empty cache */
    free(p->client_id);
    p->client_id = xs("client two");
    struct sesame_provider *d = get_rt(p);
    assert_ptr_not_equal(c, d);
    assert_null(sesame_provider_authorize_url(d, "https://rp/cb", "s", "n", NULL, NULL, &err));
    free(err);
    err = NULL;

    /* another secret (same client): cache kept */
    assert_int_equal(sesame_provider_set_metadata(d, DOC, strlen(DOC), &err), SESAME_OK);
    free(p->client_secret);
    p->client_secret = xs("another secret");
    struct sesame_provider *e = get_rt(p);
    assert_ptr_not_equal(d, e);
    u = sesame_provider_authorize_url(e, "https://rp/cb", "s", "n", NULL, NULL, &err);
    assert_non_null(u);
    free(u);

    /* another issuer: fresh */
    free(p->issuer);
    p->issuer = xs("https://op2.example");
    struct sesame_provider *f = get_rt(p);
    assert_null(sesame_provider_authorize_url(f, "https://rp/cb", "s", "n", NULL, NULL, &err));
    free(err);

    sesame_provider_unref(a);
    sesame_provider_unref(c);
    sesame_provider_unref(d);
    sesame_provider_unref(e);
    sesame_provider_unref(f);
    test_provider_conf_free(p);
}

static void
test_decryption_keys(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("dec");
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(sesame_jose_keyset_count(sesame_provider_decryption_keys(rt)), 0);
    sesame_provider_unref(rt);

    char *ec = write_key("dec-ec.pem", false);
    char *rsa = write_key("dec-rsa.pem", true);
    conf_add_dec(p, ec);
    conf_add_dec(p, rsa);
    rt = get_rt(p);
    const struct sesame_jose_keyset *ks = sesame_provider_decryption_keys(rt);
    assert_int_equal(sesame_jose_keyset_count(ks), 2);
    assert_true(sesame_jose_key_is_private(sesame_jose_keyset_get(ks, 0)));
    char *err = NULL;
    char *pub = sesame_jose_keyset_export(ks, &err);
    assert_non_null(pub);
    assert_null(strstr(pub, "\"d\""));
    assert_non_null(strstr(pub, "\"ECDH-ES\""));
    assert_non_null(strstr(pub, "\"RSA-OAEP\""));
    char *kid0 = strdup(sesame_jose_key_kid(sesame_jose_keyset_get(ks, 0)));
    free(pub);

    /* same files, unchanged: same runtime */
    struct sesame_provider *again = get_rt(p);
    assert_ptr_equal(again, rt);
    sesame_provider_unref(again);

    /* the EC key file replaced by another key: a new runtime with the new key */
    char *fresh = write_key("dec-ec.pem.new", false);
    assert_int_equal(rename(fresh, ec), 0);
    free(fresh);
    struct sesame_provider *rt2 = get_rt(p);
    assert_ptr_not_equal(rt2, rt);
    const char *kid1 = sesame_jose_key_kid(sesame_jose_keyset_get(
        sesame_provider_decryption_keys(rt2), 0));
    assert_string_not_equal(kid0, kid1);
    /* the old runtime's keys stay valid for its holder */
    assert_string_equal(sesame_jose_key_kid(sesame_jose_keyset_get(ks, 0)), kid0);
    free(kid0);
    sesame_provider_unref(rt2);
    sesame_provider_unref(rt);
    free(ec);
    free(rsa);
    test_provider_conf_free(p);
}

static void
test_status_names(void **state)
{
    (void)state;
    assert_string_equal(sesame_provider_status_name(SESAME_PROVIDER_OK), "ok");
    assert_string_equal(sesame_provider_status_name(SESAME_PROVIDER_USERINFO_MISMATCH),
                        "userinfo_mismatch");
    assert_string_equal(sesame_provider_status_name((enum sesame_provider_status)99), "unknown");
}

static int
group_setup(void **state)
{
    (void)state;
    tmpdir = mockfc_tempdir("provider-unit");
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    sesame_provider_registry_clear();
    mockfc_rmtree(tmpdir);
    free(tmpdir);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percent_encode),
        cmocka_unit_test(test_pkce_challenge),
        cmocka_unit_test_teardown(test_authorize_url_exact, teardown_registry),
        cmocka_unit_test_teardown(test_authorize_url_pkce_and_query, teardown_registry),
        cmocka_unit_test_teardown(test_authorize_url_needs_metadata, teardown_registry),
        cmocka_unit_test_teardown(test_explicit_endpoints_win, teardown_registry),
        cmocka_unit_test_teardown(test_end_session_url, teardown_registry),
        cmocka_unit_test_teardown(test_metadata_checks, teardown_registry),
        cmocka_unit_test_teardown(test_jwks_install, teardown_registry),
        cmocka_unit_test_teardown(test_token_form_post, teardown_registry),
        cmocka_unit_test_teardown(test_token_form_basic, teardown_registry),
        cmocka_unit_test_teardown(test_token_form_private_key_jwt, teardown_registry),
        cmocka_unit_test_teardown(test_token_request_needs_metadata, teardown_registry),
        cmocka_unit_test_teardown(test_settings_refused, teardown_registry),
        cmocka_unit_test_teardown(test_registry_sharing, teardown_registry),
        cmocka_unit_test_teardown(test_decryption_keys, teardown_registry),
        cmocka_unit_test(test_status_names),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
