/*
 * accounts.c - `sesame-accounts`, the administration tool of the `redis`
 * account plugin: import pre-registered citizens, show, find, link, unlink
 * and delete (erase) accounts, revoke the sessions of an account. It links
 * the plugin's store code directly.
 *
 * Usage: see usage() below. Exit status: 0 done, 1 failure, 2 usage error,
 * 3 no such account / no linked account.
 *
 * `revoke` needs only the sessions' server: with -c, a configuration with a
 * [redis] section and no [accounts] section using the redis plugin is enough
 * (the tenant is then the configuration's only tenant, or --tenant).
 *
 * CSV import format (UTF-8, one citizen per line, RFC 4180 quoting: a field
 * may be enclosed in double quotes, "" inside quotes is one quote; a quoted
 * field cannot span lines):
 *     family_name,given_name,birthdate,birthplace,birthcountry[,account_id][,attr=value...]
 *   - birthdate YYYY-MM-DD; birthplace the 5-character INSEE code, empty when
 *     born abroad; birthcountry the 5-digit INSEE code (99100 = France);
 *   - account_id: optional (empty or absent: a random id is generated); a
 *     sixth field holding '=' is an attribute, not an id;
 *   - attr=value: attributes released to upstream services (at most 32;
 *     name [A-Za-z0-9_.-]{1,64}, value up to 512 bytes);
 *   - blank lines and lines starting with '#' are skipped, as is a first
 *     line starting with "family_name" (a header) and a UTF-8 BOM.
 * Every bad row is reported with its line number and nothing is imported
 * unless every row is good. Ids already in Redis are bad rows.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config/config.h"
#include "core/common.h"
#include "core/util.h"
#include "../../plugins/redis/store.h"

#define EXIT_USAGE 2
#define EXIT_NOTFOUND 3
#define MAX_FILE (64u * 1024 * 1024)
#define MAX_FIELDS (7 + SESAME_PLUGIN_ATTRS_MAX)

static void
usage(FILE *out)
{
    fputs("Usage: sesame-accounts [OPTIONS] COMMAND [ARGS]\n"
          "Administration of the citizen accounts of the redis account plugin.\n"
          "\n"
          "Commands:\n"
          "  import FILE.csv                 import pre-registered citizens (all or nothing)\n"
          "  show ACCOUNT_ID                 print an account, its links, attributes, sessions\n"
          "  find-sub PROVIDER SUB           print the account linked to a provider's sub\n"
          "  link ACCOUNT_ID PROVIDER SUB    link an identity to an account by hand\n"
          "  unlink ACCOUNT_ID               remove every link of an account, revoke its sessions\n"
          "  delete ACCOUNT_ID               erase an account, its indexes and its sessions\n"
          "  revoke ACCOUNT_ID               revoke every session of an account (the account\n"
          "                                  stays; needs only the [redis] section)\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE         sesame configuration (default " SESAME_CONF_DEFAULT_PATH
          ",\n"
          "                            unless --address is given)\n"
          "  -a, --accounts NAME       the [accounts NAME] section to use (needed when several)\n"
          "  -t, --tenant NAME         the tenant (default: the only tenant using the section)\n"
          "      --address ADDR        Redis of the accounts: host:port, [v6]:port or /path.sock\n"
          "      --prefix TEXT         key prefix of the accounts (default \"sesame:\")\n"
          "      --session-prefix TEXT key prefix of the sessions (default: [redis] prefix,\n"
          "                            or the accounts prefix without a configuration)\n"
          "      --password-file FILE  Redis password, first line of FILE\n"
          "      --database N          Redis database number\n"
          "  -h, --help                this text\n"
          "Options given on the command line override the configuration file.\n"
          "\n"
          "CSV of pre-registered citizens (UTF-8, comma-separated, \"quoted\" fields allowed):\n"
          "  family_name,given_name,birthdate,birthplace,birthcountry[,account_id][,name=value...]\n"
          "  birthdate YYYY-MM-DD; birthplace INSEE code, empty if born abroad; birthcountry\n"
          "  INSEE code (99100 = France); account_id optional (generated when empty);\n"
          "  name=value attributes (at most 32). Lines starting with # and a header line\n"
          "  starting with family_name are skipped. Nothing is imported if a line is bad.\n"
          "Exit status: 0 done, 1 failure, 2 usage error, 3 no such account.\n",
          out);
}

struct cli {
    const char *config;
    const char *accounts;
    const char *tenant;
    const char *address;
    const char *prefix;
    const char *session_prefix;
    const char *password_file;
    const char *database;
    bool sessions_only; /* the command uses only the sessions' server */
};

/* ---- configuration ------------------------------------------------------ */

struct target {
    struct sesame_store_options opts; /* accounts */
    struct sesame_store_server sessions; /* sessions' server (host NULL and unix NULL: same) */
    bool separate_sessions;
    char *tenant;
};

static void
target_free(struct target *t)
{
    sesame_store_options_free(&t->opts);
    free(t->sessions.host);
    free(t->sessions.unix_path);
    free(t->sessions.username);
    free(t->sessions.password);
    free(t->tenant);
}

static bool
is_redis_plugin(const char *plugin)
{
    if (strcmp(plugin, "redis") == 0)
        return true;
    const char *slash = strrchr(plugin, '/');
    return slash != NULL && strcmp(slash + 1, "sesame_redis.so") == 0;
}

/* Asks the Sentinels for the master's address. */
static int
sentinel_master(const struct sesame_conf_redis *r, struct sesame_store_server *srv, char **err)
{
    for (size_t i = 0; i < r->nsentinels; i++) {
        struct sesame_store_server s = {.timeout_ms = r->connect_timeout_ms ? r->connect_timeout_ms
                                                                           : 2000};
        char *e = NULL;
        if (sesame_store_parse_address(&s, r->sentinels[i], &e) != SESAME_OK) {
            free(e);
            continue;
        }
        redisContext *c = sesame_store_connect(&s, &e);
        free(s.host);
        free(s.unix_path);
        free(e);
        if (c == NULL)
            continue;
        redisReply *rep = redisCommand(c, "SENTINEL get-master-addr-by-name %s", r->master_name);
        if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[1]->type == REDIS_REPLY_STRING) {
            srv->host = sesame_strdup(rep->element[0]->str);
            srv->port = atoi(rep->element[1]->str);
            freeReplyObject(rep);
            redisFree(c);
            return SESAME_OK;
        }
        if (rep)
            freeReplyObject(rep);
        redisFree(c);
    }
    return sesame_err_set(err, "no Sentinel knows the master %s", r->master_name);
}

/* The options and the default tenant from the [accounts] section `acc`
 * (nredis: how many sections use the redis plugin). */
static int
section_target(const struct cli *cli, const struct sesame_conf *conf,
               const struct sesame_conf_accounts *acc, size_t nredis, struct target *t, char **err)
{
    if (cli->accounts == NULL && nredis > 1)
        return sesame_err_set(err, "%s: several [accounts] sections use the redis plugin: choose "
                              "one with -a", cli->config);
    if (acc->plugin == NULL || !is_redis_plugin(acc->plugin))
        return sesame_err_set(err, "%s:%d: accounts %s: not the redis plugin", cli->config,
                              acc->line, acc->name);
    struct sesame_plugin_option *opts = sesame_calloc(acc->noptions + 1, sizeof(*opts));
    for (size_t i = 0; i < acc->noptions; i++) {
        opts[i].key = acc->options[i].key;
        opts[i].value = acc->options[i].value;
        opts[i].line = acc->options[i].line;
    }
    char *e = NULL;
    int prc = sesame_store_options_parse(&t->opts, opts, acc->noptions, &e);
    free(opts);
    if (prc != SESAME_OK) {
        sesame_err_set(err, "%s: accounts %s: %s", cli->config, acc->name, e);
        free(e);
        return SESAME_ERROR;
    }
    if (cli->tenant == NULL) {
        const char *only = NULL;
        size_t n = 0;
        for (size_t i = 0; i < conf->ntenants; i++) {
            if (conf->tenants[i]->accounts == acc) {
                only = conf->tenants[i]->name;
                n++;
            }
        }
        if (n != 1)
            return sesame_err_set(err, "%s: %zu tenants use [accounts %s]: choose one with "
                                  "--tenant", cli->config, n, acc->name);
        t->tenant = sesame_strdup(only);
    }
    return SESAME_OK;
}

/* Without an [accounts] section (sessions-only commands): default options,
 * and the configuration's only tenant as the default tenant. */
static int
sessions_target(const struct cli *cli, const struct sesame_conf *conf, struct target *t,
                char **err)
{
    if (sesame_store_options_parse(&t->opts, NULL, 0, err) != SESAME_OK)
        return SESAME_ERROR;
    if (cli->tenant == NULL) {
        if (conf->ntenants != 1)
            return sesame_err_set(err, "%s: %zu tenants: choose one with --tenant", cli->config,
                                  conf->ntenants);
        t->tenant = sesame_strdup(conf->tenants[0]->name);
    }
    return SESAME_OK;
}

static int
load_config(const struct cli *cli, struct target *t, char **err)
{
    char *errors = NULL;
    struct sesame_conf *conf = sesame_conf_load(cli->config, &errors);
    if (conf == NULL) {
        sesame_err_set(err, "%s", errors ? errors : "cannot load the configuration");
        free(errors);
        return SESAME_ERROR;
    }
    int rc = SESAME_ERROR;
    const struct sesame_conf_accounts *acc = NULL;
    size_t nredis = 0;
    for (size_t i = 0; i < conf->naccounts; i++) {
        const struct sesame_conf_accounts *a = conf->accounts[i];
        if (cli->accounts != NULL && strcmp(a->name, cli->accounts) == 0)
            acc = a;
        if (cli->accounts == NULL && a->plugin && is_redis_plugin(a->plugin)) {
            acc = a;
            nredis++;
        }
    }
    /* A sessions-only command needs no [accounts] section, only [redis]. */
    bool no_section = acc == NULL && cli->sessions_only && cli->accounts == NULL &&
                      conf->has_redis;
    if (acc == NULL && !no_section) {
        sesame_err_set(err, "%s: %s", cli->config,
                       cli->accounts ? "no such [accounts] section"
                                     : "no [accounts] section uses the redis plugin");
        goto done;
    }
    if ((no_section ? sessions_target(cli, conf, t, err)
                    : section_target(cli, conf, acc, nredis, t, err)) != SESAME_OK)
        goto done;
    if (conf->has_redis) {
        const struct sesame_conf_redis *r = &conf->redis;
        free(t->opts.session_prefix);
        t->opts.session_prefix = sesame_strdup(r->prefix ? r->prefix : "sesame:");
        t->separate_sessions = true;
        t->sessions.timeout_ms = r->command_timeout_ms ? r->command_timeout_ms : 2000;
        t->sessions.database = r->database;
        if (r->password)
            t->sessions.password = sesame_strdup(r->password);
        if (r->unix_socket) {
            t->sessions.unix_path = sesame_strdup(r->unix_socket);
        } else if (r->host) {
            t->sessions.host = sesame_strdup(r->host);
            t->sessions.port = r->port;
        } else if (sentinel_master(r, &t->sessions, err) != SESAME_OK) {
            goto done;
        }
    }
    rc = SESAME_OK;
done:
    sesame_conf_unref(conf);
    return rc;
}

static int
build_target(const struct cli *cli, struct target *t, char **err)
{
    memset(t, 0, sizeof(*t));
    if (cli->config != NULL) {
        if (load_config(cli, t, err) != SESAME_OK)
            return SESAME_ERROR;
    } else if (sesame_store_options_parse(&t->opts, NULL, 0, err) != SESAME_OK) {
        return SESAME_ERROR;
    }
    char *e = NULL;
    if (cli->address && sesame_store_parse_address(&t->opts.server, cli->address, &e) != SESAME_OK) {
        sesame_err_set(err, "--address: %s", e);
        free(e);
        return SESAME_ERROR;
    }
    if (cli->prefix) {
        bool same = strcmp(t->opts.session_prefix, t->opts.prefix) == 0 && !t->separate_sessions;
        free(t->opts.prefix);
        t->opts.prefix = sesame_strdup(cli->prefix);
        if (same) {
            free(t->opts.session_prefix);
            t->opts.session_prefix = sesame_strdup(cli->prefix);
        }
    }
    if (cli->session_prefix) {
        free(t->opts.session_prefix);
        t->opts.session_prefix = sesame_strdup(cli->session_prefix);
    }
    if (cli->password_file) {
        free(t->opts.server.password);
        t->opts.server.password = sesame_store_read_secret(cli->password_file, &e);
        if (t->opts.server.password == NULL) {
            sesame_err_set(err, "--password-file: %s", e);
            free(e);
            return SESAME_ERROR;
        }
    }
    if (cli->database) {
        char *end;
        errno = 0;
        long d = strtol(cli->database, &end, 10);
        if (errno || end == cli->database || *end || d < 0 || d > 1023)
            return sesame_err_set(err, "--database: a number in 0..1023");
        t->opts.server.database = (int)d;
    }
    if (cli->tenant) {
        free(t->tenant);
        t->tenant = sesame_strdup(cli->tenant);
    }
    if (t->tenant == NULL)
        return sesame_err_set(err, "no tenant: give --tenant NAME");
    if (!sesame_store_name_ok(t->tenant))
        return sesame_err_set(err, "--tenant: [A-Za-z0-9._-]{1,64}");
    return SESAME_OK;
}

/* ---- CSV ---------------------------------------------------------------- */

struct row {
    int line;
    char *fields[MAX_FIELDS];
    size_t nfields;
};

static void
row_free(struct row *r)
{
    for (size_t i = 0; i < r->nfields; i++)
        free(r->fields[i]);
    r->nfields = 0;
}

static void
add_error(char **errors, int line, const char *msg)
{
    char *next = sesame_asprintf("%s%sline %d: %s", *errors ? *errors : "", *errors ? "\n" : "",
                                 line, msg);
    free(*errors);
    *errors = next;
}

/* Splits one line (without its line end) into fields. */
static int
split_line(const char *s, size_t len, struct row *r, const char **why)
{
    size_t i = 0;
    for (;;) {
        if (r->nfields == MAX_FIELDS) {
            *why = "too many fields";
            return SESAME_ERROR;
        }
        char *buf = sesame_malloc(len + 1);
        size_t o = 0;
        while (i < len && s[i] == ' ')
            i++;
        if (i < len && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) {
                    free(buf);
                    *why = "unterminated quoted field (fields cannot span lines)";
                    return SESAME_ERROR;
                }
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        buf[o++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                buf[o++] = s[i++];
            }
            while (i < len && s[i] == ' ')
                i++;
            if (i < len && s[i] != ',') {
                free(buf);
                *why = "text after a closing quote";
                return SESAME_ERROR;
            }
        } else {
            while (i < len && s[i] != ',') {
                if (s[i] == '"') {
                    free(buf);
                    *why = "quote inside an unquoted field";
                    return SESAME_ERROR;
                }
                buf[o++] = s[i++];
            }
            while (o > 0 && buf[o - 1] == ' ')
                o--;
        }
        buf[o] = '\0';
        if (memchr(buf, '\0', o) != NULL) {
            free(buf);
            *why = "NUL byte";
            return SESAME_ERROR;
        }
        r->fields[r->nfields++] = buf;
        if (i >= len)
            return SESAME_OK;
        i++; /* the comma */
    }
}

static char *
read_file(const char *path, size_t *len, char **err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        sesame_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = sesame_malloc(MAX_FILE + 1);
    size_t n = fread(buf, 1, MAX_FILE + 1, f);
    bool bad = ferror(f) != 0;
    if (f != stdin)
        fclose(f);
    if (bad || n > MAX_FILE) {
        free(buf);
        sesame_err_set(err, "%s: %s", path, bad ? "read error" : "larger than 64 MiB");
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int
cmd_import(redisContext *c, const struct target *t, const char *path)
{
    char *err = NULL;
    size_t len;
    char *data = read_file(path, &len, &err);
    if (data == NULL) {
        fprintf(stderr, "sesame-accounts: %s\n", err);
        free(err);
        return 1;
    }
    struct row *rows = NULL;
    size_t nrows = 0, cap = 0;
    char *errors = NULL;
    size_t pos = 0;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        pos = 3;
    int line = 0;
    bool first = true;
    while (pos < len) {
        line++;
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t l = end - pos;
        if (l > 0 && data[pos + l - 1] == '\r')
            l--;
        const char *s = data + pos;
        pos = nl ? end + 1 : len;
        size_t k = 0;
        while (k < l && (s[k] == ' ' || s[k] == '\t'))
            k++;
        if (k == l || s[k] == '#')
            continue;
        if (first && l >= 11 && strncasecmp(s + k, "family_name", 11) == 0) {
            first = false;
            continue;
        }
        first = false;
        if (nrows == cap) {
            cap = cap ? cap * 2 : 64;
            rows = sesame_realloc(rows, cap * sizeof(*rows));
        }
        struct row *r = &rows[nrows];
        memset(r, 0, sizeof(*r));
        r->line = line;
        const char *why = NULL;
        if (split_line(s, l, r, &why) != SESAME_OK) {
            add_error(&errors, line, why);
            row_free(r);
            continue;
        }
        if (r->nfields < 5) {
            add_error(&errors, line, "expected at least 5 fields: family_name,given_name,"
                      "birthdate,birthplace,birthcountry");
            row_free(r);
            continue;
        }
        nrows++;
    }
    free(data);

    struct sesame_store_import *recs = sesame_calloc(nrows + 1, sizeof(*recs));
    struct sesame_plugin_kv *kvs = sesame_calloc(nrows * MAX_FIELDS + 1, sizeof(*kvs));
    for (size_t i = 0; i < nrows; i++) {
        struct row *r = &rows[i];
        struct sesame_store_import *rec = &recs[i];
        rec->line = r->line;
        rec->family_name = r->fields[0];
        rec->given_name = r->fields[1];
        rec->birthdate = r->fields[2];
        rec->birthplace = r->fields[3];
        rec->birthcountry = r->fields[4];
        rec->attrs = &kvs[i * MAX_FIELDS];
        for (size_t f = 5; f < r->nfields; f++) {
            char *eq = strchr(r->fields[f], '=');
            if (f == 5 && eq == NULL) {
                if (r->fields[f][0] != '\0')
                    rec->account_id = r->fields[f];
                continue;
            }
            if (eq == NULL) {
                char msg[64];
                snprintf(msg, sizeof(msg), "field %zu: expected attr=value", f + 1);
                add_error(&errors, r->line, msg);
                continue;
            }
            *eq = '\0';
            kvs[i * MAX_FIELDS + rec->nattrs].key = r->fields[f];
            kvs[i * MAX_FIELDS + rec->nattrs].value = eq + 1;
            rec->nattrs++;
        }
    }
    int status = 1;
    char **ids = sesame_calloc(nrows + 1, sizeof(char *));
    if (errors == NULL && nrows == 0)
        errors = sesame_strdup("no citizen in the file");
    if (errors == NULL) {
        if (sesame_store_import(c, &t->opts, t->tenant, recs, nrows, ids, &err) == SESAME_OK) {
            for (size_t i = 0; i < nrows; i++)
                printf("line %d: account %s\n", recs[i].line, ids[i]);
            printf("imported %zu accounts into tenant %s\n", nrows, t->tenant);
            status = 0;
        } else {
            errors = err;
            err = NULL;
        }
    } else {
        /* Report the store's checks as well, so one run lists every problem. */
        struct sesame_store_import *good = sesame_calloc(nrows + 1, sizeof(*good));
        (void)good;
        free(good);
    }
    if (status != 0) {
        fprintf(stderr, "%s\nsesame-accounts: nothing imported\n", errors);
    }
    for (size_t i = 0; i < nrows; i++) {
        free(ids[i]);
        row_free(&rows[i]);
    }
    free(ids);
    free(recs);
    free(kvs);
    free(rows);
    free(errors);
    return status;
}

/* ---- other commands ----------------------------------------------------- */

static int
cmd_show(redisContext *c, redisContext *sc, const struct target *t, const char *id)
{
    struct sesame_store_account a;
    char *err = NULL;
    int rc = sesame_store_get(c, &t->opts, t->tenant, id, &a, &err);
    if (rc == SESAME_DECLINED) {
        fprintf(stderr, "sesame-accounts: no account %s in tenant %s\n", id, t->tenant);
        return EXIT_NOTFOUND;
    }
    if (rc != SESAME_OK) {
        fprintf(stderr, "sesame-accounts: %s\n", err);
        free(err);
        return 1;
    }
    long long nsessions = 0;
    if (sesame_store_count_sessions(sc, t->opts.session_prefix, t->tenant, id, &nsessions, &err) !=
        SESAME_OK) {
        fprintf(stderr, "sesame-accounts: sessions: %s\n", err);
        free(err);
        sesame_store_account_free(&a);
        return 1;
    }
    printf("tenant: %s\n", t->tenant);
    for (size_t i = 0; i < a.nfields; i++)
        printf("%s: %s\n", a.fields[i].key, a.fields[i].value);
    printf("links: %zu\n", a.nlinks);
    for (size_t i = 0; i < a.nlinks; i++)
        printf("  %s\n", a.links[i]);
    printf("attributes: %zu\n", a.nattrs);
    for (size_t i = 0; i < a.nattrs; i++)
        printf("  %s=%s\n", a.attrs[i].key, a.attrs[i].value);
    printf("sessions: %lld\n", nsessions);
    sesame_store_account_free(&a);
    return 0;
}

static int
cmd_find_sub(redisContext *c, const struct target *t, const char *provider, const char *sub)
{
    char *id = NULL, *err = NULL;
    int rc = sesame_store_find_sub(c, &t->opts, t->tenant, provider, sub, &id, &err);
    if (rc == SESAME_OK) {
        printf("%s\n", id);
        free(id);
        return 0;
    }
    if (rc == SESAME_DECLINED) {
        fprintf(stderr, "sesame-accounts: no account linked to this identity\n");
        return EXIT_NOTFOUND;
    }
    fprintf(stderr, "sesame-accounts: %s\n", err);
    free(err);
    return 1;
}

static int
cmd_link(redisContext *c, const struct target *t, const char *id, const char *provider,
         const char *sub)
{
    char *err = NULL;
    int rc = sesame_store_link(c, &t->opts, t->tenant, id, provider, sub, &err);
    if (rc == SESAME_OK) {
        printf("account %s linked to an identity of provider %s\n", id, provider);
        return 0;
    }
    if (rc == SESAME_DECLINED) {
        fprintf(stderr, "sesame-accounts: no account %s in tenant %s\n", id, t->tenant);
        return EXIT_NOTFOUND;
    }
    fprintf(stderr, "sesame-accounts: %s\n", err);
    free(err);
    return 1;
}

static int
revoke(redisContext *sc, const struct target *t, const char *id, size_t *n)
{
    char *err = NULL;
    if (sesame_store_revoke_sessions(sc, t->opts.session_prefix, t->tenant, id, n, &err) !=
        SESAME_OK) {
        fprintf(stderr, "sesame-accounts: revoking sessions: %s\n", err);
        free(err);
        return 1;
    }
    return 0;
}

static int
cmd_unlink(redisContext *c, redisContext *sc, const struct target *t, const char *id)
{
    char *err = NULL;
    size_t nlinks = 0, nsessions = 0;
    int rc = sesame_store_unlink(c, &t->opts, t->tenant, id, &nlinks, &err);
    if (rc == SESAME_DECLINED) {
        fprintf(stderr, "sesame-accounts: no account %s in tenant %s\n", id, t->tenant);
        return EXIT_NOTFOUND;
    }
    if (rc != SESAME_OK) {
        fprintf(stderr, "sesame-accounts: %s\n", err);
        free(err);
        return 1;
    }
    if (revoke(sc, t, id, &nsessions) != 0)
        return 1;
    printf("account %s: %zu links removed, %zu sessions revoked\n", id, nlinks, nsessions);
    return 0;
}

static int
cmd_revoke(redisContext *sc, const struct target *t, const char *id)
{
    size_t nsessions = 0;
    if (revoke(sc, t, id, &nsessions) != 0)
        return 1;
    printf("account %s: %zu sessions revoked\n", id, nsessions);
    return 0;
}

static int
cmd_delete(redisContext *c, redisContext *sc, const struct target *t, const char *id)
{
    char *err = NULL;
    size_t nsessions = 0;
    int rc = sesame_store_erase(c, &t->opts, t->tenant, id, &err);
    if (rc == SESAME_ERROR) {
        fprintf(stderr, "sesame-accounts: %s\n", err);
        free(err);
        return 1;
    }
    if (revoke(sc, t, id, &nsessions) != 0)
        return 1;
    if (rc == SESAME_DECLINED) {
        fprintf(stderr, "sesame-accounts: no account %s in tenant %s (%zu sessions revoked)\n", id,
                t->tenant, nsessions);
        return EXIT_NOTFOUND;
    }
    printf("account %s deleted, %zu sessions revoked\n", id, nsessions);
    return 0;
}

/* ---- main --------------------------------------------------------------- */

int
main(int argc, char **argv)
{
    enum { OPT_ADDRESS = 256, OPT_PREFIX, OPT_SPREFIX, OPT_PASSWORD, OPT_DATABASE };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"accounts", required_argument, NULL, 'a'},
        {"tenant", required_argument, NULL, 't'},
        {"address", required_argument, NULL, OPT_ADDRESS},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"session-prefix", required_argument, NULL, OPT_SPREFIX},
        {"password-file", required_argument, NULL, OPT_PASSWORD},
        {"database", required_argument, NULL, OPT_DATABASE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct cli cli = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, "+c:a:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': cli.config = optarg; break;
        case 'a': cli.accounts = optarg; break;
        case 't': cli.tenant = optarg; break;
        case OPT_ADDRESS: cli.address = optarg; break;
        case OPT_PREFIX: cli.prefix = optarg; break;
        case OPT_SPREFIX: cli.session_prefix = optarg; break;
        case OPT_PASSWORD: cli.password_file = optarg; break;
        case OPT_DATABASE: cli.database = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    static const struct {
        const char *name;
        int nargs;
    } cmds[] = {{"import", 1}, {"show", 1}, {"find-sub", 2}, {"link", 3}, {"unlink", 1},
                {"delete", 1}, {"revoke", 1}};
    bool known = false;
    for (size_t i = 0; i < SESAME_ARRAY_LEN(cmds); i++) {
        if (strcmp(cmd, cmds[i].name) == 0) {
            known = true;
            if (nargs != cmds[i].nargs) {
                fprintf(stderr, "sesame-accounts: %s takes %d argument%s\n", cmd, cmds[i].nargs,
                        cmds[i].nargs > 1 ? "s" : "");
                return EXIT_USAGE;
            }
        }
    }
    if (!known) {
        fprintf(stderr, "sesame-accounts: unknown command %s\n", cmd);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (cli.config == NULL && cli.address == NULL)
        cli.config = SESAME_CONF_DEFAULT_PATH;
    cli.sessions_only = strcmp(cmd, "revoke") == 0;

    struct target t;
    char *err = NULL;
    if (build_target(&cli, &t, &err) != SESAME_OK) {
        fprintf(stderr, "sesame-accounts: %s\n", err);
        free(err);
        target_free(&t);
        return 1;
    }
    /* c: the accounts' server (not connected for a sessions-only command
     * whose sessions live elsewhere); sc: the sessions' server. */
    redisContext *c = NULL;
    if (!cli.sessions_only || !t.separate_sessions)
        c = sesame_store_connect(&t.opts.server, &err);
    redisContext *sc = c;
    if (t.separate_sessions && (c != NULL || cli.sessions_only))
        sc = sesame_store_connect(&t.sessions, &err);
    if ((c == NULL && !cli.sessions_only) || sc == NULL) {
        fprintf(stderr, "sesame-accounts: %s\n", err);
        free(err);
        if (c)
            redisFree(c);
        target_free(&t);
        return 1;
    }
    int status;
    if (strcmp(cmd, "import") == 0)
        status = cmd_import(c, &t, args[0]);
    else if (strcmp(cmd, "show") == 0)
        status = cmd_show(c, sc, &t, args[0]);
    else if (strcmp(cmd, "find-sub") == 0)
        status = cmd_find_sub(c, &t, args[0], args[1]);
    else if (strcmp(cmd, "link") == 0)
        status = cmd_link(c, &t, args[0], args[1], args[2]);
    else if (strcmp(cmd, "unlink") == 0)
        status = cmd_unlink(c, sc, &t, args[0]);
    else if (strcmp(cmd, "revoke") == 0)
        status = cmd_revoke(sc, &t, args[0]);
    else
        status = cmd_delete(c, sc, &t, args[0]);
    if (sc != c)
        redisFree(sc);
    if (c)
        redisFree(c);
    target_free(&t);
    return status;
}
