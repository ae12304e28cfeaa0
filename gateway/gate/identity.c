#include "gate/identity.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "core/util.h"

void
sesame_identity_header_name(const char *claim, char *out, size_t cap)
{
    size_t o = 0;
    bool start = true;
    for (const char *p = claim; *p && o + 1 < cap; p++) {
        char c = *p == '_' ? '-' : *p;
        if (c == '-') {
            start = true;
        } else if (start) {
            c = (char)toupper((unsigned char)c);
            start = false;
        } else {
            c = (char)tolower((unsigned char)c);
        }
        out[o++] = c;
    }
    out[o] = '\0';
}

static bool
valid_utf8_no_ctl(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
        if (len == 0 || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

static void
add_value(struct evbuffer *out, enum sesame_header_encoding enc, const char *v, size_t n)
{
    if (enc == SESAME_HDR_RAW && valid_utf8_no_ctl(v, n)) {
        evbuffer_add(out, v, n);
    } else if (enc == SESAME_HDR_BASE64URL) {
        char *b = sesame_malloc(sesame_util_b64url_len(n) + 1);
        size_t m = sesame_util_b64url_encode(b, v, n);
        evbuffer_add(out, b, m);
        free(b);
    } else {
        sesame_url_encode(out, v, n);
    }
}

static void
add_header(struct evbuffer *out, const char *prefix, const char *name,
           enum sesame_header_encoding enc, const char *v, size_t n)
{
    evbuffer_add_printf(out, "%s%s: ", prefix, name);
    add_value(out, enc, v, n);
    evbuffer_add(out, "\r\n", 2);
}

void
sesame_identity_headers(const struct sesame_conf_route *r, const struct sesame_session *s,
                        struct evbuffer *out)
{
    const char *prefix = r->header_prefix;
    if (s->account)
        add_header(out, prefix, "Account", r->header_encoding, s->account, strlen(s->account));
    if (s->acr)
        add_header(out, prefix, "Acr", SESAME_HDR_RAW, s->acr, strlen(s->acr));
    if (s->provider)
        add_header(out, prefix, "Provider", SESAME_HDR_RAW, s->provider, strlen(s->provider));
    for (size_t i = 0; i < r->nclaims; i++) {
        json_t *v = s->claims ? json_object_get(s->claims, r->claims[i]) : NULL;
        if (v == NULL || json_is_null(v))
            continue;
        char name[80];
        sesame_identity_header_name(r->claims[i], name, sizeof(name));
        if (json_is_string(v)) {
            add_header(out, prefix, name, r->header_encoding, json_string_value(v),
                       json_string_length(v));
        } else {
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (text) {
                add_header(out, prefix, name, r->header_encoding, text, strlen(text));
                free(text);
            }
        }
    }
}

int
sesame_identity_age(const char *birthdate, time_t now)
{
    int y, m, d;
    char extra;
    if (birthdate == NULL || strlen(birthdate) != 10 ||
        sscanf(birthdate, "%4d-%2d-%2d%c", &y, &m, &d, &extra) != 3 || m < 1 || m > 12 || d < 1 ||
        d > 31 || y < 1850)
        return -1;
    struct tm tm;
    localtime_r(&now, &tm);
    int cy = tm.tm_year + 1900, cm = tm.tm_mon + 1, cd = tm.tm_mday;
    if (y > cy)
        return -1;
    int age = cy - y;
    if (cm < m || (cm == m && cd < d))
        age--;
    return age < 0 ? -1 : age;
}

static const char *
claim_string(const struct sesame_session *s, const char *name)
{
    json_t *v = s->claims ? json_object_get(s->claims, name) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

bool
sesame_identity_allowed(const struct sesame_conf_route *r, const struct sesame_session *s, time_t now,
                        const struct sesame_cond **failed)
{
    for (size_t i = 0; i < r->nconds; i++) {
        const struct sesame_cond *c = &r->conds[i];
        bool ok = false;
        switch (c->op) {
        case SESAME_COND_AGE_GE: {
            int age = sesame_identity_age(claim_string(s, "birthdate"), now);
            ok = age >= 0 && age >= c->number;
            break;
        }
        case SESAME_COND_CLAIM_EQ: {
            const char *v = claim_string(s, c->name);
            ok = v != NULL && strcmp(v, c->value) == 0;
            break;
        }
        case SESAME_COND_ATTR_EQ: {
            json_t *v = s->attributes ? json_object_get(s->attributes, c->name) : NULL;
            ok = json_is_string(v) && strcmp(json_string_value(v), c->value) == 0;
            break;
        }
        }
        if (!ok) {
            if (failed)
                *failed = c;
            return false;
        }
    }
    return true;
}

static void
keep(json_t *out, const json_t *claims, const char *name)
{
    json_t *v = json_object_get(claims, name);
    if (v != NULL)
        json_object_set(out, name, v);
}

json_t *
sesame_identity_kept_claims(const struct sesame_conf *conf, const struct sesame_conf_tenant *tenant,
                            const json_t *claims)
{
    json_t *out = json_object();
    if (!json_is_object(claims))
        return out;
    keep(out, claims, "given_name");
    keep(out, claims, "family_name");
    for (size_t i = 0; i < conf->nroutes; i++) {
        const struct sesame_conf_route *r = conf->routes[i];
        if (r->tenant != tenant)
            continue;
        for (size_t j = 0; j < r->nclaims; j++)
            keep(out, claims, r->claims[j]);
        for (size_t j = 0; j < r->nconds; j++) {
            if (r->conds[j].op == SESAME_COND_AGE_GE)
                keep(out, claims, "birthdate");
            else if (r->conds[j].op == SESAME_COND_CLAIM_EQ)
                keep(out, claims, r->conds[j].name);
        }
    }
    return out;
}

char *
sesame_identity_assertion(const struct sesame_conf_route *r, const struct sesame_session *s,
                          const struct sesame_jose_key *key, time_t now, char **err)
{
    char jti[32];
    if (sesame_util_random_token(jti, sizeof(jti), 16) != SESAME_OK) {
        sesame_err_set(err, "no randomness for jti");
        return NULL;
    }
    json_t *c = json_object();
    json_object_set_new(c, "iss", json_string(r->tenant->public_url));
    json_object_set_new(c, "sub", json_string(s->account ? s->account : ""));
    json_object_set_new(c, "aud", json_string(r->name));
    if (s->acr)
        json_object_set_new(c, "acr", json_string(s->acr));
    json_object_set_new(c, "iat", json_integer((json_int_t)now));
    json_object_set_new(c, "exp", json_integer((json_int_t)now + 60));
    json_object_set_new(c, "jti", json_string(jti));
    for (size_t i = 0; i < r->nclaims; i++) {
        json_t *v = s->claims ? json_object_get(s->claims, r->claims[i]) : NULL;
        if (v)
            json_object_set(c, r->claims[i], v);
    }
    char *jwt = sesame_jose_sign_es256(c, key, err);
    json_decref(c);
    return jwt;
}
