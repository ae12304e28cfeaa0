/*
 * config.h - the configuration model and its loader.
 *
 * A configuration is loaded whole from one file, validated whole, and then
 * never modified: workers share it read-only. Reload (SIGHUP) builds a new
 * sesame_conf and swaps it in; the old one is freed when its last reference
 * is dropped (sesame_conf_ref / sesame_conf_unref).
 *
 * File format (documented for admins in conf/sesame.conf.example):
 *   # comment
 *   [server]                      a section
 *   [tenant ville-a]              a named section
 *   key = value                   a setting; repeatable keys append
 * Durations: 500ms 30s 10m 8h 2d. Sizes: 512 64k 32m 1g. Booleans: on/off.
 * Durations are kept in milliseconds and honoured to the millisecond (convert
 * them with sesame_util_timeval_ms, never "ms / 1000"); the keys where 0 would
 * mean "never" or "at once" refuse 0 at load.
 * Secrets are never written inline: *_file keys name a file holding them,
 * and a secret file readable or writable by other users (mode & 0006) is
 * refused (group-readable is fine: a sesame group).
 *
 * Everything that can be checked without contacting anybody is checked at
 * load (sesame -t): what needs OpenSSL or jose (key files, pages, plugins)
 * by gate/runtime.c, the rest here; see sesame_conf_load.
 */
#ifndef SESAME_CONFIG_CONFIG_H
#define SESAME_CONFIG_CONFIG_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "core/common.h"
#include "core/log.h"

#define SESAME_CONF_DEFAULT_PATH "/etc/sesame/sesame.conf"
#define SESAME_CONF_HSTS_DEFAULT "max-age=31536000"

struct sesame_listen {
    char *text;                  /* as written, for messages */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool tls;
    bool redirect;               /* plain HTTP that only redirects to https (http/tls.h) */
};

struct sesame_cidr {
    struct sockaddr_storage net; /* AF_INET or AF_INET6 */
    int prefix;
};

/* A rate limit: at most `count` events per `period_ms`, in bursts of up to
 * `count` (a bucket of `count` tokens refilled evenly over the period; see
 * gate/ratelimit.h). Written "N/PERIOD" ("20/m", "600/10m") or "off";
 * count 0 means off. */
struct sesame_conf_rate {
    uint64_t count;
    uint64_t period_ms;
};

struct sesame_conf_server {
    struct sesame_listen *listen;
    size_t nlisten;
    struct sesame_listen *metrics_listen; /* plain HTTP /metrics and /ready (http/ops.h),
                                             never one of `listen`; NULL: off */
    int workers;                    /* 0 in the file means "auto" and is resolved at load */
    char *tls_certificate;          /* path, for tls listeners */
    char *tls_certificate_key;      /* path */
    bool ocsp_stapling;             /* staple OCSP responses of certificates naming a responder */
    uint64_t header_timeout_ms;     /* whole request head must arrive within this */
    uint64_t body_timeout_ms;       /* max gap between two reads of a request body */
    uint64_t idle_timeout_ms;       /* keep-alive idle */
    uint64_t websocket_idle_timeout_ms; /* a WebSocket with no byte either way is closed */
    uint64_t websocket_recheck_ms;  /* an open WebSocket's session is checked again this often */
    uint64_t upstream_connect_timeout_ms;
    uint64_t upstream_read_timeout_ms;
    uint64_t upstream_idle_timeout_ms; /* pooled upstream connection lifetime when idle */
    uint64_t shutdown_timeout_ms;   /* drain limit on SIGTERM */
    uint64_t max_request_line;      /* bytes; 414 past it */
    uint64_t max_header_size;       /* bytes for all header lines; 431 past it */
    uint64_t max_headers;           /* header count; 431 past it */
    uint64_t max_body_size;         /* bytes; 413 past it */
    uint64_t preserve_post_max;     /* form POSTs kept across a re-login up to this (gate/replay.h);
                                       0: off */
    uint64_t preserve_post_ttl_ms;  /* how long a kept form POST waits for the sign-in */
    uint64_t max_connections;       /* per worker */
    uint64_t upstream_pool_size;    /* idle connections kept per upstream per worker */
    struct sesame_cidr *trusted_proxies;
    size_t ntrusted_proxies;
    bool via;
    char *error_log;                /* path, "stderr" or "off" */
    char *access_log;               /* path, "stderr", "stdout" or "off" */
    enum sesame_log_level log_level;
    char *prefix;                   /* reserved path prefix, "/sesame/" */
    char *pid_file;                 /* NULL: none */
    char *templates_dir;            /* platform templates directory, NULL: built-in */
    char *assertion_key_file;       /* EC P-256 PEM signing upstream assertions, NULL: none */
    char *plugin_dir;               /* where account plugins named by short name live */
    int plugin_threads;             /* worker pool size for account plugins */
    uint64_t plugin_timeout_ms;
    /* The audit trail (audit/audit.h). */
    char *audit_log;                /* journal path, NULL: off */
    char *audit_key_file;           /* EC P-256 or Ed25519 PEM signing its checkpoints */
    uint64_t audit_checkpoint_lines; /* a checkpoint every N lines, or (0) every: */
    uint64_t audit_checkpoint_ms;   /* this much time when lines are pending */
    bool audit_syslog;              /* also send each line to syslog */
    struct sesame_conf_rate client_signin_rate; /* sign-ins started per client address */
    uint64_t client_signin_table;   /* client addresses the limit tracks (fixed memory) */
};

struct sesame_conf_redis {
    char *host;                     /* NULL when sentinels are used */
    int port;
    char *unix_socket;              /* alternative to host/port */
    char **sentinels;               /* "host:port" strings */
    size_t nsentinels;
    char *master_name;
    char *password;                 /* read from password_file at load */
    int database;
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    char *prefix;                   /* key prefix, "sesame:" */
};

#define SESAME_SESSION_KEY_LEN 32

struct sesame_conf_session {
    char *cookie_name;
    unsigned char secret[SESAME_SESSION_KEY_LEN];          /* read from secret_file */
    unsigned char previous_secret[SESAME_SESSION_KEY_LEN]; /* from previous_secret_file */
    bool has_previous_secret;
    uint64_t inactivity_timeout_ms;
    uint64_t max_lifetime_ms;
    uint64_t touch_interval_ms;     /* minimum gap between two last-seen write-backs */
    uint64_t cache_ttl_ms;          /* in-process cache of decoded sessions; 0 = off */
    uint64_t login_timeout_ms;      /* lifetime of a pending login (state/nonce) */
};

enum sesame_token_auth {
    SESAME_AUTH_CLIENT_SECRET_POST = 0,
    SESAME_AUTH_CLIENT_SECRET_BASIC,
    SESAME_AUTH_PRIVATE_KEY_JWT,
};

enum sesame_userinfo_format {
    SESAME_USERINFO_JWT = 0,
    SESAME_USERINFO_JSON,
    SESAME_USERINFO_OFF,
};

/* Bit set of JWS algorithms a provider may use. */
enum sesame_alg {
    SESAME_ALG_ES256 = 1 << 0,
    SESAME_ALG_ES384 = 1 << 1,
    SESAME_ALG_ES512 = 1 << 2,
    SESAME_ALG_RS256 = 1 << 3,
    SESAME_ALG_RS384 = 1 << 4,
    SESAME_ALG_RS512 = 1 << 5,
    SESAME_ALG_PS256 = 1 << 6,
    SESAME_ALG_PS384 = 1 << 7,
    SESAME_ALG_PS512 = 1 << 8,
    SESAME_ALG_HS256 = 1 << 9,
    SESAME_ALG_HS384 = 1 << 10,
    SESAME_ALG_HS512 = 1 << 11,
};

struct sesame_conf_provider {
    char *name;
    const char *file;               /* config file and line, for runtime messages */
    int line;
    char *issuer;
    bool discovery;                 /* fetch /.well-known/openid-configuration */
    uint64_t discovery_refresh_ms;
    char *authorization_endpoint;   /* explicit endpoints override discovery */
    char *token_endpoint;
    char *userinfo_endpoint;
    char *jwks_uri;
    char *end_session_endpoint;
    char *client_id;
    char *client_secret;            /* read from client_secret_file */
    enum sesame_token_auth token_auth;
    char *private_key_file;         /* for private_key_jwt (PEM) */
    char *scopes;                   /* space-separated, contains "openid"; the claims
                                       they ask for: sesame_conf_scope_claims */
    char *acr_values;               /* space-separated, may be NULL */
    unsigned signing_algs;          /* enum sesame_alg bits, never 0; HS* only with a
                                       client secret */
    enum sesame_userinfo_format userinfo;
    bool pkce;                      /* send PKCE S256 */
    char **authorize_params;        /* extra "name=value" parameters (checked at load:
                                       name of [A-Za-z0-9_.-], not reserved (see
                                       sesame_conf_reserved_authorize_param), not
                                       repeated; value with valid %XX escapes) */
    size_t nauthorize_params;
    char *ca_file;                  /* NULL: system trust store */
    char **decryption_key_files;    /* JWE private keys (PEM or JWK) */
    size_t ndecryption_key_files;
    uint64_t leeway_ms;
    uint64_t http_timeout_ms;
    uint64_t jwks_refetch_interval_ms; /* rate limit of the unknown-kid refetch */
    uint64_t probe_interval_ms;     /* background availability probe; 0: off */
};

/* [tenant] session_cookie: how long the browser keeps the cookies Sésame sets
 * (the session's, and those of a sign-in or a hop under way). */
enum sesame_session_cookie {
    SESAME_COOKIE_PERSISTENT = 0,   /* Max-Age: kept across browser restarts, up to
                                       max_lifetime (login_timeout for the others) */
    SESAME_COOKIE_BROWSER,          /* no Max-Age: gone when the browser is closed
                                       (shared computers) */
};

struct sesame_conf_tenant {
    char *name;
    char *display_name;
    char *name_in_sentence;         /* the name as it reads inside a sentence, with its
                                       article ("la ville d'Arbre"); NULL: display_name */
    char **hosts;                   /* lower-case host names (no port) */
    size_t nhosts;
    char *public_url;               /* scheme://host[:port], no trailing slash */
    struct sesame_conf_provider *provider;      /* the default provider to sign in with
                                                   (`provider`, else the first of
                                                   `providers`); NULL: none */
    /* `providers = a b c`: the providers whose sessions this tenant's requests
     * accept. The effective list after load, never empty on a tenant that has
     * a provider: `providers` when given (then `provider` is one of them),
     * else just `provider`; empty only when the tenant names no provider. */
    struct sesame_conf_provider **providers;
    size_t nproviders;
    struct sesame_conf_accounts *accounts;      /* NULL: the provider's sub is the account */
    char *cookie_domain;            /* NULL: host-only cookie; else equal to or a parent
                                       of every host (never a bare TLD) */
    bool cookie_secure;             /* false only for plain-HTTP localhost public URLs */
    char *logo_file;
    char *accent_color;             /* "#RRGGBB" */
    char *contact_url;
    char *legal_url;
    char *templates_dir;            /* per-tenant overrides, NULL: none */
    bool sign_in_page;              /* true: show the sign-in page; false: go to the provider */
    bool audit_client_address;      /* the audit journal records the client's address */
    enum sesame_session_cookie session_cookie; /* lifetime of the cookies Sésame sets */
    struct sesame_conf_rate signin_rate; /* sign-ins started on the tenant, all clients */
    /* Territories (one sign-in for several communes on their own domains,
     * gate/hop.h). A [territory NAME] section is loaded as a tenant too, in
     * conf->tenants: is_territory, named "@NAME" (no tenant name starts with
     * '@'), hosts = the host of its public_url (never a host of a tenant),
     * no route, no accounts (its sessions' account is the provider's sub),
     * sign_in_page on; `members` lists the tenants that join it. A member
     * tenant (`territory = NAME`) has `territory` set; its providers, when it
     * names none, are the territory's, and it (and each of its routes)
     * accepts only providers of the territory. */
    struct sesame_conf_tenant *territory;
    bool is_territory;
    struct sesame_conf_tenant **members;
    size_t nmembers;
    char *tls_certificate;          /* path: this commune's certificate chain, chosen by SNI for
                                       its hosts (both or neither); NULL: [server]'s */
    char *tls_certificate_key;      /* path */
    char *hsts;                     /* Strict-Transport-Security value sent over TLS,
                                       NULL: the default SESAME_CONF_HSTS_DEFAULT */
    bool hsts_off;                  /* hsts = off: none sent */
};

enum sesame_access {
    SESAME_ACCESS_PUBLIC = 0,
    SESAME_ACCESS_OPTIONAL,
    SESAME_ACCESS_REQUIRED,
};

enum sesame_header_encoding {
    SESAME_HDR_PERCENT = 0,
    SESAME_HDR_RAW,
    SESAME_HDR_BASE64URL,
};

enum sesame_cond_op {
    SESAME_COND_AGE_GE = 0,         /* age_at_least N (from birthdate) */
    SESAME_COND_ATTR_EQ,            /* attribute NAME = VALUE (from the account plugin) */
    SESAME_COND_CLAIM_EQ,           /* claim NAME = VALUE */
};

struct sesame_cond {
    enum sesame_cond_op op;
    char *name;
    char *value;
    long number;
    char *text;                     /* as written, for the 403 page */
    int line;                       /* of its require line, for messages */
};

struct sesame_upstream_addr {
    char *text;                     /* "http://127.0.0.1:9000" as written */
    char *host;                     /* for the Host header when not preserved */
    char *port_text;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool tls;                       /* https:// upstream: TLS, certificate always verified */
    char *tls_name;                 /* host name checked in its certificate (and SNI) */
    char *ca_file;                  /* route's upstream_ca_file, NULL: system store */
};

struct sesame_conf_route {
    char *name;
    struct sesame_conf_tenant *tenant;
    char *host;                     /* NULL: every host of the tenant */
    char *path;                     /* prefix, starts with '/' */
    size_t path_len;
    struct sesame_upstream_addr upstream;
    bool preserve_host;             /* forward the client's Host (default on) */
    enum sesame_access access;
    char *acr;                      /* minimum acr, NULL: the provider's */
    /* `provider`: the provider a sign-in started on this route goes to. NULL
     * when the route names none: with its own `providers`, "let the citizen
     * choose among route->providers"; without, the tenant's default. */
    struct sesame_conf_provider *provider;
    /* The providers whose sessions this route accepts. The effective list
     * after load: the route's `providers` when given (its `provider`, if
     * any, is one of them), else its `provider` alone, else the tenant's
     * effective list. Any configured provider may be listed (not only the
     * tenant's); empty only when neither the route nor its tenant names a
     * provider (then the route is public). */
    struct sesame_conf_provider **providers;
    size_t nproviders;
    char **claims;                  /* claims released to the upstream, each asked by
                                       the scopes of at least one of `providers`
                                       (or a protocol claim: sub, acr, amr...) */
    size_t nclaims;
    char *header_prefix;            /* "X-Sesame-" */
    enum sesame_header_encoding header_encoding;
    bool assertion;                 /* add a signed JWT header */
    bool keep_cookie;               /* forward the session cookie upstream */
    struct sesame_cond *conds;
    size_t nconds;
    char *deny_message;             /* plain French reason shown on the 403 page */
};

/* One key = value given to an account plugin, passed through untouched. */
struct sesame_conf_kv {
    char *key;
    char *value;
    int line;
};

struct sesame_conf_accounts {
    char *name;
    char *plugin;                   /* "redis", "http" or a path to a .so */
    struct sesame_conf_kv *options; /* every other key of the section */
    size_t noptions;
    int line;
};

struct sesame_conf {
    atomic_int refs;
    char *path;
    struct sesame_conf_server server;
    struct sesame_conf_redis redis;
    bool has_redis;
    struct sesame_conf_session session;
    struct sesame_conf_provider **providers;
    size_t nproviders;
    struct sesame_conf_tenant **tenants;
    size_t ntenants;
    struct sesame_conf_route **routes;  /* sorted: host-specific first, longest prefix first */
    size_t nroutes;
    struct sesame_conf_accounts **accounts;
    size_t naccounts;
    /* What is built from the configuration once it is valid (pages, plugins,
     * keys: gate/runtime.h), owned by it and freed with it. */
    void *runtime;
    void (*runtime_free)(void *runtime);
    void *lines;                    /* where each key was written (sesame_conf_key_line) */
};

/* Loads and validates the file at `path`. On success returns the
 * configuration with one reference. On failure returns NULL and stores in
 * *errors every problem found, one per line, each "FILE:LINE: key: message"
 * (the caller frees it). */
struct sesame_conf *sesame_conf_load(const char *path, char **errors);

struct sesame_conf *sesame_conf_ref(struct sesame_conf *conf);
void sesame_conf_unref(struct sesame_conf *conf);

/* Lists every key the loader knows, as "section.key" lines (for the test that
 * keeps conf/sesame.conf.example complete). The string is static. */
const char *sesame_conf_known_keys(void);

/* Route selection: the tenant serving `host` (lower-case, port stripped),
 * then the route of that tenant and host with the longest path prefix
 * matching `path`. Returns NULL when nothing matches. */
const struct sesame_conf_tenant *sesame_conf_find_tenant(const struct sesame_conf *conf,
                                                         const char *host, size_t hostlen);
const struct sesame_conf_route *sesame_conf_find_route(const struct sesame_conf *conf,
                                                       const struct sesame_conf_tenant *tenant,
                                                       const char *host, size_t hostlen,
                                                       const char *path, size_t pathlen);

/* True when addr belongs to one of the server's trusted proxies. */
bool sesame_conf_is_trusted_proxy(const struct sesame_conf *conf, const struct sockaddr *addr);

const struct sesame_conf_provider *sesame_conf_find_provider(const struct sesame_conf *conf,
                                                             const char *name);

/* The line where `key` was written in the section whose object is `section`
 * (&conf->server, &conf->redis, &conf->session, or a provider, tenant, route
 * or accounts of conf); the section header's line when the key was left to
 * its default (0 for [server], [redis], [session] then). For repeatable keys,
 * the last line. For messages "FILE:LINE: key: message" made after load
 * (gate/runtime.c). */
int sesame_conf_key_line(const struct sesame_conf *conf, const void *section, const char *key);

/* The claims a scope word asks for when it is an alias (FranceConnect's),
 * space-separated (static string):
 *   openid          sub
 *   profile         given_name family_name birthdate gender preferred_username
 *   birth           birthplace birthcountry
 *   identite_pivot  given_name family_name birthdate gender birthplace birthcountry
 *   phone           phone phone_number
 * NULL for any other word, which asks for the claim of the same name
 * (given_name, family_name, birthdate, email...). */
const char *sesame_conf_scope_claims(const char *scope);

/* True when the space-separated `scopes` ask for `claim` (see
 * sesame_conf_scope_claims). */
bool sesame_conf_scopes_ask(const char *scopes, const char *claim);

/* True for the claims of the OpenID Connect protocol itself, present in an ID
 * token whatever the scopes: iss, sub, aud, exp, iat, nbf, nonce, acr, amr,
 * auth_time, azp, at_hash, c_hash, sid, jti. */
bool sesame_conf_protocol_claim(const char *claim);

/* True when `claim` is an identity claim that provider p is asked for: its
 * scopes ask for it (sesame_conf_scopes_ask) and it is not a protocol claim.
 * What account plugins receive and what the sign-in page lists. */
bool sesame_conf_identity_claim(const struct sesame_conf_provider *p, const char *claim);

/* True for the names of authorization request parameters the gateway sets
 * itself, refused in authorize_params: response_type, client_id,
 * redirect_uri, scope, state, nonce, acr_values, code_challenge,
 * code_challenge_method (the protocol), response_mode (the callback reads
 * the query), request and request_uri (they would replace every parameter).
 * prompt, login_hint, claims, ui_locales... are allowed. */
bool sesame_conf_reserved_authorize_param(const char *name, size_t len);

#endif
