/*
 * test_provider_live.c - the provider runtime against the mock FranceConnect
 * (tests/mockfc/mockfc.py) over HTTPS on loopback, driven by a libevent
 * loop: discovery and JWKS, full sign-ins for each client authentication
 * method and signing algorithm (and encrypted tokens), every misbehaviour
 * scenario refused by validate, unknown kid and key rotation, rate-limited
 * and shared JWKS refetches, timeouts and errors of the token endpoint, the
 * last good metadata kept while discovery is down, untrusted TLS, operations
 * shared across threads, cancellation, end-session URL.
 *
 * The mock's authorize step is done with a plain blocking libcurl GET
 * (autologin on), which yields the code from the Location header.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "core/util.h"
#include "oidc/provider.h"
#include "test_provider_mockfc.h"

#define RU "https://127.0.0.1:1/sesame/callback"
#define PLR "https://127.0.0.1:1/sesame/logout/callback"
#define LOGIN "marie"

static struct mockfc mock;
static char *tmpdir;
static char *key_assert, *key_enc_ec, *key_enc_rsa; /* PEM paths */
static struct event_base *base;
static struct sesame_httpc *httpc;

/* ---- helpers ------------------------------------------------------------------------ */

static void
run_until(struct event_base *b, const bool *flag)
{
    while (!*flag) {
        int rc = event_base_loop(b, EVLOOP_ONCE);
        if (rc != 0 && !*flag)
            fail_msg("event loop ran dry before the callback");
    }
}

static char *
xs(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct sesame_conf_provider *
conf_new(const char *name, const char *client_id)
{
    struct sesame_conf_provider *p = calloc(1, sizeof(*p));
    p->name = xs(name);
    p->issuer = xs(mock.issuer);
    p->discovery = true;
    p->discovery_refresh_ms = 3600 * 1000;
    p->client_id = xs(client_id);
    char secret[128];
    snprintf(secret, sizeof(secret), "secret-%s-0123456789abcdef0123456789", client_id);
    p->client_secret = xs(secret);
    p->token_auth = SESAME_AUTH_CLIENT_SECRET_POST;
    p->scopes = xs("openid given_name family_name birthdate gender birthplace birthcountry "
                   "email preferred_username");
    p->acr_values = xs("eidas1");
    p->signing_algs = SESAME_ALG_ES256 | SESAME_ALG_RS256;
    p->userinfo = SESAME_USERINFO_JWT;
    p->ca_file = xs(mock.ca_file);
    p->leeway_ms = 60000;
    p->http_timeout_ms = 5000;
    p->jwks_refetch_interval_ms = 0;
    return p;
}


static struct sesame_provider *
get_rt(const struct sesame_conf_provider *p)
{
    char *err = NULL;
    struct sesame_provider *rt = sesame_provider_registry_get(p, &err);
    if (rt == NULL)
        fail_msg("registry_get: %s", err);
    return rt;
}

struct ensure_res {
    bool done;
    int calls;
    enum sesame_provider_status st;
    char *err;
};

static void
on_ensure(void *arg, enum sesame_provider_status st, const char *err)
{
    struct ensure_res *r = arg;
    r->done = true;
    r->calls++;
    r->st = st;
    r->err = err ? strdup(err) : NULL;
}

static enum sesame_provider_status
ensure(struct sesame_provider *rt, char **errout)
{
    struct ensure_res r = {0};
    assert_non_null(sesame_provider_ensure(rt, httpc, on_ensure, &r));
    assert_false(r.done);
    run_until(base, &r.done);
    assert_int_equal(r.calls, 1);
    if (errout)
        *errout = r.err;
    else
        free(r.err);
    return r.st;
}

struct login {
    /* exchange */
    bool ex_done;
    enum sesame_provider_status ex_st;
    char *ex_err;
    char *id_token, *access_token;
    int64_t expires_in;
    /* validate */
    bool va_done;
    int va_calls;
    enum sesame_provider_status va_st;
    char *va_err;
    json_t *claims;
    char *raw_id_token, *sub, *acr;
    /* inputs */
    char state[64], nonce[64];
    char *code;
    struct sesame_provider *rt; /* for callbacks that chain operations */
};

static void
login_clear(struct login *l)
{
    free(l->ex_err);
    free(l->id_token);
    free(l->access_token);
    free(l->va_err);
    json_decref(l->claims);
    free(l->raw_id_token);
    free(l->sub);
    free(l->acr);
    free(l->code);
    memset(l, 0, sizeof(*l));
}

static void
on_exchange(void *arg, const struct sesame_provider_tokens *t, enum sesame_provider_status st,
            const char *err)
{
    struct login *l = arg;
    l->ex_done = true;
    l->ex_st = st;
    l->ex_err = err ? strdup(err) : NULL;
    if (st == SESAME_PROVIDER_OK) {
        assert_non_null(t);
        assert_null(err);
        l->id_token = strdup(t->id_token);
        l->access_token = strdup(t->access_token);
        l->expires_in = t->expires_in;
        assert_string_equal(t->token_type, "Bearer");
    } else {
        assert_null(t);
        assert_non_null(err);
    }
}

static void
on_validate(void *arg, const struct sesame_provider_identity *id, enum sesame_provider_status st,
            const char *err)
{
    struct login *l = arg;
    l->va_done = true;
    l->va_calls++;
    l->va_st = st;
    l->va_err = err ? strdup(err) : NULL;
    if (st == SESAME_PROVIDER_OK) {
        assert_non_null(id);
        assert_null(err);
        l->claims = json_incref(id->claims);
        l->raw_id_token = xs(id->id_token);
        l->sub = xs(id->sub);
        l->acr = xs(id->acr);
    } else {
        assert_null(id);
        assert_non_null(err);
    }
}

/* Authorize (blocking, autologin) and exchange the code. */
static void
authorize_and_exchange(struct sesame_provider *rt, struct login *l)
{
    assert_int_equal(sesame_util_random_token(l->state, sizeof(l->state), 32), SESAME_OK);
    assert_int_equal(sesame_util_random_token(l->nonce, sizeof(l->nonce), 32), SESAME_OK);
    char *err = NULL;
    char *url = sesame_provider_authorize_url(rt, RU, l->state, l->nonce, NULL, NULL, &err);
    if (url == NULL)
        fail_msg("authorize_url: %s", err);
    l->code = mockfc_authorize_code(&mock, url, l->state);
    free(url);
    assert_non_null(sesame_provider_exchange(rt, httpc, l->code, RU, NULL, on_exchange, l));
    run_until(base, &l->ex_done);
}

static void
start_validate(struct sesame_provider *rt, struct login *l, const char *min_acr)
{
    struct sesame_provider_tokens t = {.id_token = l->id_token,
                                       .access_token = l->access_token,
                                       .token_type = "Bearer",
                                       .expires_in = l->expires_in};
    struct sesame_provider_expect e = {.nonce = l->nonce, .min_acr = min_acr};
    assert_non_null(sesame_provider_validate(rt, httpc, &t, &e, on_validate, l));
}

/* No token, code or secret in an error text. */
static void
assert_no_secret(const struct login *l, const char *text)
{
    if (text == NULL)
        return;
    const char *secrets[] = {l->code, l->id_token, l->access_token, l->nonce};
    for (size_t i = 0; i < 4; i++) {
        if (secrets[i] == NULL || strlen(secrets[i]) < 16)
            continue;
        char head[17];
        memcpy(head, secrets[i], 16);
        head[16] = '\0';
        if (strstr(text, head) != NULL)
            fail_msg("error text quotes a secret: %s", text);
    }
    assert_null(strstr(text, "secret-client"));
}

/* A whole sign-in: ensure, authorize, exchange, validate. */
static void
sign_in(struct sesame_provider *rt, const char *min_acr, struct login *l)
{
    char *err = NULL;
    enum sesame_provider_status st = ensure(rt, &err);
    if (st != SESAME_PROVIDER_OK)
        fail_msg("ensure: %s", err);
    authorize_and_exchange(rt, l);
    assert_no_secret(l, l->ex_err);
    if (l->ex_st != SESAME_PROVIDER_OK)
        return;
    start_validate(rt, l, min_acr);
    assert_false(l->va_done);
    run_until(base, &l->va_done);
    assert_int_equal(l->va_calls, 1);
    assert_no_secret(l, l->va_err);
}

static char *
expected_sub(const char *client_id, const char *login)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s%s", client_id, login);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)buf, strlen(buf), md);
    char *out = malloc(2 * SHA256_DIGEST_LENGTH + 3);
    sesame_util_hex(out, md, sizeof(md));
    strcat(out, "v1");
    return out;
}

static void
assert_identity(const struct login *l, const char *client_id)
{
    if (l->va_st != SESAME_PROVIDER_OK)
        fail_msg("validate failed (%s): %s", sesame_provider_status_name(l->va_st), l->va_err);
    char *sub = expected_sub(client_id, LOGIN);
    assert_string_equal(l->sub, sub);
    assert_string_equal(json_string_value(json_object_get(l->claims, "sub")), sub);
    free(sub);
    assert_string_equal(l->acr, "eidas1");
    assert_string_equal(l->raw_id_token, l->id_token);
    const json_t *c = l->claims;
    assert_string_equal(json_string_value(json_object_get(c, "iss")), mock.issuer);
    assert_string_equal(json_string_value(json_object_get(c, "aud")), client_id);
    assert_string_equal(json_string_value(json_object_get(c, "nonce")), l->nonce);
    /* userinfo claims merged in */
    assert_string_equal(json_string_value(json_object_get(c, "given_name")), "Marie Claire Odile");
    assert_string_equal(json_string_value(json_object_get(c, "family_name")), "MARTIN");
    assert_string_equal(json_string_value(json_object_get(c, "birthdate")), "1962-08-24");
    assert_string_equal(json_string_value(json_object_get(c, "birthplace")), "75107");
    assert_string_equal(json_string_value(json_object_get(c, "birthcountry")), "99100");
    assert_string_equal(json_string_value(json_object_get(c, "email")),
                        "marie.martin@example.org");
    /* the ID token's protocol claims win over userinfo's (whose iat is later) */
    assert_true(json_is_integer(json_object_get(c, "exp")));
}

static int
teardown_test(void **state)
{
    (void)state;
    mockfc_scenario(&mock, "none", NULL);
    mockfc_autologin(&mock, LOGIN);
    sesame_provider_registry_clear();
    return 0;
}

/* ---- sign-ins that succeed ------------------------------------------------------------ */

static void
test_discovery_and_jwks(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("disco", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 200), 1);
    assert_int_equal(mockfc_count(&mock, "jwks", since, 200), 1);
    /* from the cache: no new fetch */
    long since2 = mockfc_seq(&mock);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    assert_int_equal(mockfc_count(&mock, "discovery", since2, 0), 0);
    assert_int_equal(mockfc_count(&mock, "jwks", since2, 0), 0);
    /* the metadata serves the URLs */
    char *err = NULL;
    char *u = sesame_provider_authorize_url(rt, RU, "s", "n", NULL, NULL, &err);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s/authorize?response_type=code&client_id=client-es256&",
             mock.issuer);
    assert_int_equal(strncmp(u, prefix, strlen(prefix)), 0);
    free(u);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_sign_in_es256(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("es256", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    struct login l = {0};
    sign_in(rt, "eidas1", &l);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_OK);
    assert_int_equal(l.expires_in, 60);
    assert_identity(&l, "client-es256");
    /* the mock saw client_secret_post, a valid bearer token, one JWKS fetch */
    json_t *tok = mockfc_last(&mock, "token", since);
    assert_string_equal(json_string_value(json_object_get(tok, "client_auth")),
                        "client_secret_post");
    assert_string_equal(json_string_value(json_object_get(tok, "outcome")), "ok");
    json_decref(tok);
    json_t *ui = mockfc_last(&mock, "userinfo", since);
    assert_true(json_is_true(json_object_get(ui, "token_valid")));
    json_decref(ui);
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 1);
    /* the authorize request carried exactly the FranceConnect parameters */
    json_t *az = mockfc_last(&mock, "authorize", since);
    json_t *params = json_object_get(az, "params");
    assert_int_equal(json_object_size(params), 7);
    json_decref(az);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_sign_in_rs256(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("rs256", "client-rs256");
    struct sesame_provider *rt = get_rt(p);
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-rs256");
    login_clear(&l);
    sesame_provider_unref(rt);
    /* an RS256 client refused when only ES256 is allowed */
    p->signing_algs = SESAME_ALG_ES256;
    free(p->name);
    p->name = xs("rs256-es-only");
    rt = get_rt(p);
    sign_in(rt, NULL, &l);
    assert_int_equal(l.va_st, SESAME_PROVIDER_INVALID_TOKEN);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_sign_in_client_secret_basic(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("basic", "client-basic");
    free(p->client_secret);
    p->client_secret = xs("s3cr&t \xc3\xa9+/=:%");
    p->token_auth = SESAME_AUTH_CLIENT_SECRET_BASIC;
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-basic");
    json_t *tok = mockfc_last(&mock, "token", since);
    assert_string_equal(json_string_value(json_object_get(tok, "client_auth")),
                        "client_secret_basic");
    json_decref(tok);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_sign_in_private_key_jwt(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("pkjwt", "client-jwt");
    free(p->client_secret);
    p->client_secret = NULL;
    p->token_auth = SESAME_AUTH_PRIVATE_KEY_JWT;
    p->private_key_file = xs(key_assert);
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-jwt");
    json_t *tok = mockfc_last(&mock, "token", since);
    assert_string_equal(json_string_value(json_object_get(tok, "client_auth")), "private_key_jwt");
    json_decref(tok);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
add_dec(struct sesame_conf_provider *p, const char *path)
{
    p->decryption_key_files = realloc(p->decryption_key_files,
                                      (p->ndecryption_key_files + 1) * sizeof(char *));
    p->decryption_key_files[p->ndecryption_key_files++] = xs(path);
}

static void
test_sign_in_encrypted(void **state)
{
    (void)state;
    struct {
        const char *name, *client, *key;
    } cases[] = {{"enc-ec", "client-enc-ec", key_enc_ec}, {"enc-rsa", "client-enc-rsa", key_enc_rsa}};
    for (size_t i = 0; i < 2; i++) {
        struct sesame_conf_provider *p = conf_new(cases[i].name, cases[i].client);
        add_dec(p, key_enc_ec);
        add_dec(p, key_enc_rsa);
        struct sesame_provider *rt = get_rt(p);
        struct login l = {0};
        sign_in(rt, NULL, &l);
        assert_identity(&l, cases[i].client);
        assert_true(sesame_jose_is_jwe(l.raw_id_token, strlen(l.raw_id_token)));
        login_clear(&l);

        /* the provider sends plain signed tokens: refused */
        mockfc_scenario(&mock, "fcplus_unencrypted", NULL);
        sign_in(rt, NULL, &l);
        assert_int_equal(l.va_st, SESAME_PROVIDER_INVALID_TOKEN);
        assert_non_null(strstr(l.va_err, "not encrypted"));
        login_clear(&l);
        mockfc_scenario(&mock, "none", NULL);
        sesame_provider_unref(rt);

        /* without decryption keys, an encrypted token is refused */
        free(p->name);
        p->name = xs("enc-nokeys");
        for (size_t k = 0; k < p->ndecryption_key_files; k++)
            free(p->decryption_key_files[k]);
        p->ndecryption_key_files = 0;
        rt = get_rt(p);
        sign_in(rt, NULL, &l);
        assert_int_equal(l.va_st, SESAME_PROVIDER_INVALID_TOKEN);
        login_clear(&l);
        sesame_provider_unref(rt);
        test_provider_conf_free(p);
    }
}

static void
on_exchange_then_validate(void *arg, const struct sesame_provider_tokens *t,
                          enum sesame_provider_status st, const char *err)
{
    struct login *l = arg;
    on_exchange(arg, t, st, err);
    if (st != SESAME_PROVIDER_OK)
        return;
    struct sesame_provider_expect e = {.nonce = l->nonce, .min_acr = "eidas1"};
    /* the tokens are copied by validate: t dies after this callback */
    assert_non_null(sesame_provider_validate(l->rt, httpc, t, &e, on_validate, l));
}

static void
test_validate_chained_in_callback(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("chained", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    struct login l = {0};
    assert_int_equal(sesame_util_random_token(l.state, sizeof(l.state), 32), SESAME_OK);
    assert_int_equal(sesame_util_random_token(l.nonce, sizeof(l.nonce), 32), SESAME_OK);
    char *err = NULL;
    char *url = sesame_provider_authorize_url(rt, RU, l.state, l.nonce, NULL, NULL, &err);
    l.code = mockfc_authorize_code(&mock, url, l.state);
    free(url);
    l.rt = rt;
    assert_non_null(sesame_provider_exchange(rt, httpc, l.code, RU, NULL,
                                             on_exchange_then_validate, &l));
    run_until(base, &l.va_done);
    assert_identity(&l, "client-es256");
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_userinfo_formats(void **state)
{
    (void)state;
    /* userinfo = json: plain JSON accepted */
    struct sesame_conf_provider *p = conf_new("ui-json", "client-es256");
    p->userinfo = SESAME_USERINFO_JSON;
    struct sesame_provider *rt = get_rt(p);
    mockfc_scenario(&mock, "userinfo_unsigned", NULL);
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-es256");
    login_clear(&l);
    /* ...and a signed JWT refused in json mode */
    mockfc_scenario(&mock, "none", NULL);
    sign_in(rt, NULL, &l);
    assert_int_equal(l.va_st, SESAME_PROVIDER_USERINFO_INVALID);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);

    /* userinfo = off: no userinfo call, the ID token's claims only */
    p = conf_new("ui-off", "client-es256");
    p->userinfo = SESAME_USERINFO_OFF;
    rt = get_rt(p);
    long since = mockfc_seq(&mock);
    sign_in(rt, NULL, &l);
    assert_int_equal(l.va_st, SESAME_PROVIDER_OK);
    assert_null(json_object_get(l.claims, "given_name"));
    assert_non_null(l.sub);
    assert_int_equal(mockfc_count(&mock, "userinfo", since, 0), 0);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_explicit_endpoints_without_discovery(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("explicit", "client-es256");
    char u[512];
    p->discovery = false;
    snprintf(u, sizeof(u), "%s/authorize", mock.issuer);
    p->authorization_endpoint = xs(u);
    snprintf(u, sizeof(u), "%s/token", mock.issuer);
    p->token_endpoint = xs(u);
    snprintf(u, sizeof(u), "%s/userinfo", mock.issuer);
    p->userinfo_endpoint = xs(u);
    snprintf(u, sizeof(u), "%s/jwks", mock.issuer);
    p->jwks_uri = xs(u);
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-es256");
    assert_int_equal(mockfc_count(&mock, "discovery", since, 0), 0);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_end_session(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("logout", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-es256");
    char *url = sesame_provider_end_session_url(rt, l.raw_id_token, "logout-state-123", PLR);
    assert_non_null(url);
    long since = mockfc_seq(&mock);
    char *loc = NULL;
    long status = mockfc_request(&mock, "GET", url, NULL, NULL, &loc);
    assert_int_equal(status, 302);
    assert_non_null(loc);
    assert_int_equal(strncmp(loc, PLR "?", strlen(PLR) + 1), 0);
    assert_non_null(strstr(loc, "state=logout-state-123"));
    json_t *rec = mockfc_last(&mock, "session_end", since);
    assert_true(json_is_true(json_object_get(rec, "id_token_hint_valid")));
    json_decref(rec);
    free(loc);
    free(url);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- misbehaviours refused -------------------------------------------------------------- */

static void
expect_refused(const char *scenario, const char *client, enum sesame_provider_status want,
               const char *min_acr)
{
    char name[96];
    snprintf(name, sizeof(name), "sc-%s-%s", scenario, client);
    struct sesame_conf_provider *p = conf_new(name, client);
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    mockfc_scenario(&mock, scenario, NULL);
    struct login l = {0};
    sign_in(rt, min_acr, &l);
    mockfc_scenario(&mock, "none", NULL);
    if (l.ex_st != SESAME_PROVIDER_OK)
        fail_msg("%s: exchange failed: %s", scenario, l.ex_err);
    if (l.va_st != want)
        fail_msg("%s/%s: validate gave %s (%s), expected %s", scenario, client,
                 sesame_provider_status_name(l.va_st), l.va_err ? l.va_err : "no error",
                 sesame_provider_status_name(want));
    assert_null(l.claims);
    login_clear(&l);
    /* the same runtime signs in once the provider behaves */
    sign_in(rt, min_acr, &l);
    assert_identity(&l, client);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

#define REFUSED(sc, st)                                                                            \
    static void test_refused_##sc(void **state)                                                    \
    {                                                                                              \
        (void)state;                                                                               \
        expect_refused(#sc, "client-es256", SESAME_PROVIDER_##st, "eidas1");                       \
    }
REFUSED(bad_signature, INVALID_TOKEN)
REFUSED(wrong_iss, INVALID_TOKEN)
REFUSED(wrong_aud, INVALID_TOKEN)
REFUSED(expired, INVALID_TOKEN)
REFUSED(iat_future, INVALID_TOKEN)
REFUSED(iat_old, INVALID_TOKEN)
REFUSED(missing_sub, INVALID_TOKEN)
REFUSED(missing_iat, INVALID_TOKEN)
REFUSED(missing_nonce, INVALID_TOKEN)
REFUSED(wrong_nonce, INVALID_TOKEN)
REFUSED(alg_none, INVALID_TOKEN)
REFUSED(hs256_pubkey, INVALID_TOKEN)
REFUSED(userinfo_sub_mismatch, USERINFO_MISMATCH)
REFUSED(userinfo_unsigned, USERINFO_INVALID)
REFUSED(userinfo_bad_signature, USERINFO_INVALID)
REFUSED(acr_low, ACR_TOO_LOW)
#undef REFUSED

static void
test_refused_rs256_variants(void **state)
{
    (void)state;
    expect_refused("bad_signature", "client-rs256", SESAME_PROVIDER_INVALID_TOKEN, NULL);
    expect_refused("alg_none", "client-rs256", SESAME_PROVIDER_INVALID_TOKEN, NULL);
    expect_refused("hs256_pubkey", "client-rs256", SESAME_PROVIDER_INVALID_TOKEN, NULL);
    expect_refused("userinfo_sub_mismatch", "client-rs256", SESAME_PROVIDER_USERINFO_MISMATCH,
                   NULL);
}

static void
test_acr_levels(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("acr", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    static const struct {
        const char *min;
        enum sesame_provider_status want;
    } cases[] = {
        {"eidas1", SESAME_PROVIDER_OK},
        {"eidas2 eidas1", SESAME_PROVIDER_OK}, /* a list: its lowest level */
        {"eidas2", SESAME_PROVIDER_ACR_TOO_LOW},
        {"eidas3 eidas2", SESAME_PROVIDER_ACR_TOO_LOW},
        {"eidas0", SESAME_PROVIDER_ACR_TOO_LOW}, /* nothing known: refused */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct login l = {0};
        sign_in(rt, cases[i].min, &l);
        if (l.va_st != cases[i].want)
            fail_msg("min_acr '%s': %s (%s)", cases[i].min, sesame_provider_status_name(l.va_st),
                     l.va_err ? l.va_err : "");
        login_clear(&l);
    }
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_wrong_nonce_expected(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("nonce", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    struct login l = {0};
    authorize_and_exchange(rt, &l);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_OK);
    l.nonce[0] = l.nonce[0] == 'A' ? 'B' : 'A'; /* the caller expects another nonce */
    start_validate(rt, &l, NULL);
    run_until(base, &l.va_done);
    assert_int_equal(l.va_st, SESAME_PROVIDER_INVALID_TOKEN);
    assert_non_null(strstr(l.va_err, "nonce"));
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- keys: unknown kid, rotation, rate limit, sharing ---------------------------------- */

static void
test_unknown_kid_refused(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("kid", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    mockfc_scenario(&mock, "unknown_kid", NULL);
    struct login l = {0};
    authorize_and_exchange(rt, &l);
    long since = mockfc_seq(&mock);
    start_validate(rt, &l, NULL);
    run_until(base, &l.va_done);
    assert_int_equal(l.va_st, SESAME_PROVIDER_UNKNOWN_KEY);
    assert_int_equal(mockfc_count(&mock, "jwks", since, 200), 1); /* exactly one refetch */
    assert_int_equal(mockfc_count(&mock, "userinfo", since, 0), 0);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_rotate_keys_accepted(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("rotate", "client-es256");
    p->jwks_refetch_interval_ms = 3600 * 1000;
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK); /* old keys cached */
    mockfc_scenario(&mock, "rotate_keys", NULL);
    mockfc_scenario(&mock, "none", NULL); /* the rotation stays */
    struct login l = {0};
    authorize_and_exchange(rt, &l);
    long since = mockfc_seq(&mock);
    start_validate(rt, &l, NULL);
    run_until(base, &l.va_done);
    assert_identity(&l, "client-es256");
    assert_int_equal(mockfc_count(&mock, "jwks", since, 200), 1);
    login_clear(&l);
    /* the next sign-in uses the refreshed keys without any fetch */
    since = mockfc_seq(&mock);
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-es256");
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 0);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_refetch_rate_limited(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("ratelimit", "client-es256");
    p->jwks_refetch_interval_ms = 3600 * 1000;
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    mockfc_scenario(&mock, "unknown_kid", NULL);
    struct login a = {0}, b = {0};
    authorize_and_exchange(rt, &a);
    authorize_and_exchange(rt, &b);
    long since = mockfc_seq(&mock);
    start_validate(rt, &a, NULL);
    run_until(base, &a.va_done);
    assert_int_equal(a.va_st, SESAME_PROVIDER_UNKNOWN_KEY);
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 1);
    since = mockfc_seq(&mock);
    start_validate(rt, &b, NULL);
    run_until(base, &b.va_done);
    assert_int_equal(b.va_st, SESAME_PROVIDER_UNKNOWN_KEY);
    assert_non_null(strstr(b.va_err, "rate-limited"));
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 0); /* no second refetch */
    login_clear(&a);
    login_clear(&b);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_concurrent_refetch_shared(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("shared-refetch", "client-es256");
    p->jwks_refetch_interval_ms = 3600 * 1000;
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    mockfc_scenario(&mock, "rotate_keys", NULL);
    mockfc_scenario(&mock, "none", NULL);
    struct login l[3];
    memset(l, 0, sizeof(l));
    for (int i = 0; i < 3; i++)
        authorize_and_exchange(rt, &l[i]);
    long since = mockfc_seq(&mock);
    for (int i = 0; i < 3; i++)
        start_validate(rt, &l[i], NULL);
    for (int i = 0; i < 3; i++) {
        run_until(base, &l[i].va_done);
        assert_identity(&l[i], "client-es256");
        assert_int_equal(l[i].va_calls, 1);
    }
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 1);
    for (int i = 0; i < 3; i++)
        login_clear(&l[i]);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- token endpoint failures ------------------------------------------------------------- */

static void
test_token_slow_times_out(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("slow", "client-es256");
    p->http_timeout_ms = 300;
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    json_t *extra = json_pack("{s:i}", "seconds", 5);
    mockfc_scenario(&mock, "token_slow", extra);
    json_decref(extra);
    struct login l = {0};
    authorize_and_exchange(rt, &l);
    mockfc_scenario(&mock, "none", NULL);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_UNAVAILABLE);
    assert_non_null(strstr(l.ex_err, "token endpoint"));
    assert_no_secret(&l, l.ex_err);
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_token_error(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("tokerr", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    mockfc_scenario(&mock, "token_error", NULL);
    struct login l = {0};
    authorize_and_exchange(rt, &l);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_UNAVAILABLE);
    assert_non_null(strstr(l.ex_err, "HTTP 500"));
    login_clear(&l);
    json_t *extra = json_pack("{s:i}", "status", 503);
    mockfc_scenario(&mock, "token_error", extra);
    json_decref(extra);
    authorize_and_exchange(rt, &l);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_UNAVAILABLE);
    assert_non_null(strstr(l.ex_err, "HTTP 503"));
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_code_refused(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("grant", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    struct login l = {0};
    authorize_and_exchange(rt, &l);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_OK);
    /* the same code again: single use */
    struct login again = {0};
    assert_non_null(sesame_provider_exchange(rt, httpc, l.code, RU, NULL, on_exchange, &again));
    run_until(base, &again.ex_done);
    assert_int_equal(again.ex_st, SESAME_PROVIDER_REJECTED);
    assert_non_null(strstr(again.ex_err, "invalid_grant"));
    assert_no_secret(&l, again.ex_err);
    login_clear(&again);
    login_clear(&l);
    /* another redirect_uri than the one sent */
    authorize_and_exchange(rt, &l); /* consumes a first code normally */
    login_clear(&l);
    assert_int_equal(sesame_util_random_token(l.state, sizeof(l.state), 32), SESAME_OK);
    assert_int_equal(sesame_util_random_token(l.nonce, sizeof(l.nonce), 32), SESAME_OK);
    char *err = NULL;
    char *url = sesame_provider_authorize_url(rt, RU, l.state, l.nonce, NULL, NULL, &err);
    l.code = mockfc_authorize_code(&mock, url, l.state);
    free(url);
    assert_non_null(sesame_provider_exchange(rt, httpc, l.code, RU "/", NULL, on_exchange, &l));
    run_until(base, &l.ex_done);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_REJECTED);
    login_clear(&l);
    /* a client secret the provider does not know */
    sesame_provider_unref(rt);
    free(p->client_secret);
    p->client_secret = xs("wrong-secret");
    rt = get_rt(p);
    authorize_and_exchange(rt, &l);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_REJECTED);
    assert_non_null(strstr(l.ex_err, "invalid_client"));
    assert_null(strstr(l.ex_err, "wrong-secret"));
    login_clear(&l);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- availability ------------------------------------------------------------------------ */

static void
test_discovery_down_keeps_last_good(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("down", "client-es256");
    p->discovery_refresh_ms = 0; /* every ensure refreshes */
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 200), 1);
    mockfc_scenario(&mock, "discovery_down", NULL);
    since = mockfc_seq(&mock);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 503), 1); /* it did try */
    assert_int_equal(mockfc_count(&mock, "jwks", since, 503), 1);
    /* a whole sign-in still works with the last good copy */
    struct login l = {0};
    sign_in(rt, NULL, &l);
    assert_identity(&l, "client-es256");
    login_clear(&l);
    /* a runtime that never had a copy cannot serve */
    struct sesame_conf_provider *q = conf_new("down-fresh", "client-rs256");
    struct sesame_provider *fresh = get_rt(q);
    char *err = NULL;
    assert_int_equal(ensure(fresh, &err), SESAME_PROVIDER_UNAVAILABLE);
    assert_non_null(strstr(err, "503"));
    free(err);
    struct login x = {0};
    assert_non_null(sesame_provider_exchange(fresh, httpc, "code", RU, NULL, on_exchange, &x));
    run_until(base, &x.ex_done);
    assert_int_equal(x.ex_st, SESAME_PROVIDER_UNAVAILABLE);
    login_clear(&x);
    /* back up: the fresh runtime recovers */
    mockfc_scenario(&mock, "none", NULL);
    assert_int_equal(ensure(fresh, NULL), SESAME_PROVIDER_OK);
    sesame_provider_unref(fresh);
    test_provider_conf_free(q);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_untrusted_tls(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("tls", "client-es256");
    free(p->ca_file);
    p->ca_file = NULL; /* the system store does not know the mock's CA */
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    char *err = NULL;
    assert_int_equal(ensure(rt, &err), SESAME_PROVIDER_UNAVAILABLE);
    assert_non_null(strstr(err, "certificate"));
    free(err);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 0), 0);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- operations: cancellation and threads ------------------------------------------------ */

static void
test_cancel(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("cancel", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    /* an ensure cancelled while its fetch is in flight, then one that completes */
    struct ensure_res r1 = {0};
    struct sesame_provider_op *op = sesame_provider_ensure(rt, httpc, on_ensure, &r1);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    sesame_provider_cancel(op);
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    assert_int_equal(r1.calls, 0);
    /* a validate cancelled before it starts, another during userinfo */
    struct login l = {0}, m = {0};
    authorize_and_exchange(rt, &l);
    start_validate(rt, &l, NULL);
    authorize_and_exchange(rt, &m);
    struct sesame_provider_tokens t = {.id_token = m.id_token, .access_token = m.access_token};
    struct sesame_provider_expect e = {.nonce = m.nonce};
    op = sesame_provider_validate(rt, httpc, &t, &e, on_validate, &m);
    /* the first validate finishes; the second is cancelled on the way, unless
     * (on a loaded machine) both answers arrived in the same loop turn: then
     * it completed exactly once and there is nothing left to cancel */
    run_until(base, &l.va_done);
    assert_int_equal(l.va_st, SESAME_PROVIDER_OK);
    bool cancelled = !m.va_done;
    if (cancelled)
        sesame_provider_cancel(op);
    sesame_provider_cancel(NULL);
    /* the loop goes on without calling back the cancelled one */
    assert_int_equal(ensure(rt, NULL), SESAME_PROVIDER_OK);
    assert_int_equal(m.va_calls, cancelled ? 0 : 1);
    assert_int_equal(sesame_httpc_pending(httpc), 0);
    login_clear(&l);
    login_clear(&m);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

static void
test_bad_arguments(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("args", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    struct login l = {0};
    assert_non_null(sesame_provider_exchange(rt, httpc, "", RU, NULL, on_exchange, &l));
    assert_false(l.ex_done);
    run_until(base, &l.ex_done);
    assert_int_equal(l.ex_st, SESAME_PROVIDER_MISCONFIGURED);
    login_clear(&l);
    struct sesame_provider_tokens t = {.id_token = "a.b.c", .access_token = "bad token"};
    struct sesame_provider_expect e = {.nonce = "0123456789abcdef0123456789abcdef"};
    assert_non_null(sesame_provider_validate(rt, httpc, &t, &e, on_validate, &l));
    run_until(base, &l.va_done);
    assert_int_equal(l.va_st, SESAME_PROVIDER_INVALID_TOKEN);
    login_clear(&l);
    assert_null(sesame_provider_ensure(rt, NULL, on_ensure, NULL));
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

struct thread_b {
    struct sesame_provider *rt;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool joined;
    struct ensure_res res;
};

static void
keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void *
thread_b_main(void *arg)
{
    struct thread_b *tb = arg;
    struct event_base *b = event_base_new();
    struct sesame_httpc *h = sesame_httpc_new(b, NULL);
    /* keeps the loop waiting for the cross-thread wake-up */
    struct event *keep = event_new(b, -1, EV_PERSIST, keepalive_cb, NULL);
    struct timeval tv = {60, 0};
    event_add(keep, &tv);
    sesame_provider_ensure(tb->rt, h, on_ensure, &tb->res);
    event_base_loop(b, EVLOOP_ONCE | EVLOOP_NONBLOCK); /* the op runs and joins the fetch */
    pthread_mutex_lock(&tb->mu);
    tb->joined = true;
    pthread_cond_signal(&tb->cv);
    pthread_mutex_unlock(&tb->mu);
    while (!tb->res.done)
        event_base_loop(b, EVLOOP_ONCE);
    event_free(keep);
    sesame_httpc_free(h);
    event_base_free(b);
    return NULL;
}

static void
test_fetch_shared_across_threads(void **state)
{
    (void)state;
    struct sesame_conf_provider *p = conf_new("threads", "client-es256");
    struct sesame_provider *rt = get_rt(p);
    long since = mockfc_seq(&mock);
    /* this thread starts the fetch... */
    struct ensure_res a = {0};
    assert_non_null(sesame_provider_ensure(rt, httpc, on_ensure, &a));
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_false(a.done);
    /* ...another worker thread asks meanwhile and waits for the same fetch */
    struct thread_b tb = {.rt = rt};
    pthread_mutex_init(&tb.mu, NULL);
    pthread_cond_init(&tb.cv, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, thread_b_main, &tb), 0);
    pthread_mutex_lock(&tb.mu);
    while (!tb.joined)
        pthread_cond_wait(&tb.cv, &tb.mu);
    pthread_mutex_unlock(&tb.mu);
    assert_false(tb.res.done);
    run_until(base, &a.done);
    pthread_join(th, NULL);
    assert_int_equal(a.st, SESAME_PROVIDER_OK);
    assert_int_equal(tb.res.st, SESAME_PROVIDER_OK);
    assert_int_equal(tb.res.calls, 1);
    assert_int_equal(mockfc_count(&mock, "discovery", since, 0), 1);
    assert_int_equal(mockfc_count(&mock, "jwks", since, 0), 1);
    pthread_mutex_destroy(&tb.mu);
    pthread_cond_destroy(&tb.cv);
    free(a.err);
    free(tb.res.err);
    sesame_provider_unref(rt);
    test_provider_conf_free(p);
}

/* ---- group -------------------------------------------------------------------------------- */

static char *
write_key(const char *name, bool rsa)
{
    EVP_PKEY *k = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                      : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *path = NULL;
    if (k == NULL || asprintf(&path, "%s/%s", tmpdir, name) < 0)
        abort();
    FILE *f = fopen(path, "w");
    if (f == NULL || PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1)
        abort();
    fclose(f);
    EVP_PKEY_free(k);
    return path;
}

/* The public JWKS of the key at path loaded for alg (kid = thumbprint). */
static json_t *
public_jwks(const char *path, const char *alg)
{
    char *err = NULL;
    struct sesame_jose_key *k = sesame_jose_key_load(path, alg, &err);
    struct sesame_jose_keyset *ks = sesame_jose_keyset_new();
    if (k == NULL || sesame_jose_keyset_add(ks, k, &err) != SESAME_OK)
        abort();
    char *text = sesame_jose_keyset_export(ks, &err);
    sesame_jose_keyset_free(ks);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    return j;
}

static json_t *
client(const char *id, const char *alg)
{
    char secret[128];
    snprintf(secret, sizeof(secret), "secret-%s-0123456789abcdef0123456789", id);
    return json_pack("{s:s, s:s, s:[s], s:[s], s:s}", "client_id", id, "client_secret", secret,
                     "redirect_uris", RU, "post_logout_redirect_uris", PLR,
                     "id_token_signed_response_alg", alg);
}

static int
group_setup(void **state)
{
    (void)state;
    evthread_use_pthreads();
    tmpdir = mockfc_tempdir("provider-live");
    key_assert = write_key("assert-ec.pem", false);
    key_enc_ec = write_key("enc-ec.pem", false);
    key_enc_rsa = write_key("enc-rsa.pem", true);

    json_t *clients = json_array();
    json_array_append_new(clients, client("client-es256", "ES256"));
    json_array_append_new(clients, client("client-rs256", "RS256"));
    json_t *basic = client("client-basic", "ES256");
    json_object_set_new(basic, "client_secret", json_string("s3cr&t \xc3\xa9+/=:%"));
    json_object_set_new(basic, "token_endpoint_auth_method", json_string("client_secret_basic"));
    json_array_append_new(clients, basic);
    json_t *jwt = client("client-jwt", "ES256");
    json_object_del(jwt, "client_secret");
    json_object_set_new(jwt, "token_endpoint_auth_method", json_string("private_key_jwt"));
    json_object_set_new(jwt, "jwks", public_jwks(key_assert, "ES256"));
    json_array_append_new(clients, jwt);
    json_t *encec = client("client-enc-ec", "ES256");
    json_object_set_new(encec, "encryption_alg", json_string("ECDH-ES"));
    json_object_set_new(encec, "jwks", public_jwks(key_enc_ec, "ECDH-ES"));
    json_array_append_new(clients, encec);
    json_t *encrsa = client("client-enc-rsa", "RS256");
    json_object_set_new(encrsa, "encryption_alg", json_string("RSA-OAEP"));
    json_object_set_new(encrsa, "jwks", public_jwks(key_enc_rsa, "RSA-OAEP"));
    json_array_append_new(clients, encrsa);

    mockfc_start(&mock, clients, "fc");
    json_decref(clients);
    mockfc_autologin(&mock, LOGIN);
    base = event_base_new();
    char *err = NULL;
    httpc = sesame_httpc_new(base, &err);
    return httpc ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    sesame_provider_registry_clear();
    sesame_httpc_free(httpc);
    event_base_free(base);
    mockfc_stop(&mock);
    mockfc_rmtree(tmpdir);
    free(tmpdir);
    free(key_assert);
    free(key_enc_ec);
    free(key_enc_rsa);
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, teardown_test)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_discovery_and_jwks),
        T(test_sign_in_es256),
        T(test_sign_in_rs256),
        T(test_sign_in_client_secret_basic),
        T(test_sign_in_private_key_jwt),
        T(test_sign_in_encrypted),
        T(test_validate_chained_in_callback),
        T(test_userinfo_formats),
        T(test_explicit_endpoints_without_discovery),
        T(test_end_session),
        T(test_refused_bad_signature),
        T(test_refused_wrong_iss),
        T(test_refused_wrong_aud),
        T(test_refused_expired),
        T(test_refused_iat_future),
        T(test_refused_iat_old),
        T(test_refused_missing_sub),
        T(test_refused_missing_iat),
        T(test_refused_missing_nonce),
        T(test_refused_wrong_nonce),
        T(test_refused_alg_none),
        T(test_refused_hs256_pubkey),
        T(test_refused_userinfo_sub_mismatch),
        T(test_refused_userinfo_unsigned),
        T(test_refused_userinfo_bad_signature),
        T(test_refused_acr_low),
        T(test_refused_rs256_variants),
        T(test_acr_levels),
        T(test_wrong_nonce_expected),
        T(test_unknown_kid_refused),
        T(test_rotate_keys_accepted),
        T(test_refetch_rate_limited),
        T(test_concurrent_refetch_shared),
        T(test_token_slow_times_out),
        T(test_token_error),
        T(test_code_refused),
        T(test_discovery_down_keeps_last_good),
        T(test_untrusted_tls),
        T(test_cancel),
        T(test_bad_arguments),
        T(test_fetch_shared_across_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
