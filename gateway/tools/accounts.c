/*
 * accounts.c - `sesame-accounts`, the administration tool of the `redis`
 * account plugin: import pre-registered citizens, show, find, link, unlink
 * and delete (erase) accounts, revoke the sessions of an account, and answer
 * a citizen's requests: list, search, export, purge (tools/citizen.h). It
 * links the plugin's store code directly, and needs the plugin's key_file
 * (records are encrypted, plugins/redis/store.h).
 *
 * Usage: see usage() below. Exit status: 0 done, 1 failure, 2 usage error,
 * 3 no such account / no linked account.
 *
 * `revoke` needs only the sessions' server: with -c, a configuration with a
 * [redis] section and no [accounts] section using the redis plugin is enough
 * (the tenant is then the configuration's only tenant, or --tenant).
 *
 * CSV import format (tools/csv.h: UTF-8 or Windows-1252, ',' or ';' as the
 * first line shows, one citizen per line, RFC 4180 quoting: a field may be
 * enclosed in double quotes, "" inside quotes is one quote; a quoted field
 * cannot span lines):
 *     family_name,given_name,birthdate,birthplace,birthcountry[,account_id][,attr=value...]
 *   - birthdate YYYY-MM-DD, a calendar date not in the future ("00" for an
 *     unknown day or month and day); birthplace the 5-character INSEE code,
 *     empty when born abroad; birthcountry the 5-digit INSEE code (99100 =
 *     France);
 *   - account_id: optional (empty or absent: a random id is generated); a
 *     sixth field holding '=' is an attribute, not an id;
 *   - attr=value: attributes released to upstream services (at most 32;
 *     name [A-Za-z0-9_.-]{1,64}, value up to 512 bytes); empty fields after
 *     the sixth are ignored (spreadsheets pad rows);
 *   - blank lines and lines starting with '#' are skipped, as is a first
 *     line starting with "family_name" (a header) and a UTF-8 BOM.
 * Every bad row is reported with its line number and nothing is imported
 * unless every row is good. Ids already in Redis are bad rows, and so are
 * persons already registered (same normalised names, birth date and place)
 * or given twice.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit/audit.h"
#include "config/config.h"
#include "core/common.h"
#include "core/util.h"
#include "tools/citizen.h"
#include "tools/csv.h"
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
          "A citizen's data on request and retention:\n"
          "  list [--page N] [--per-page K] [--by last-signin|created]\n"
          "                                  every account of the tenant, paged (50 per page)\n"
          "  search [--name \"NAMES\"] [--birthdate YYYY-MM-DD]\n"
          "                                  imported citizens by name (compared without case,\n"
          "                                  accents or hyphens, as at sign-in) or birthdate\n"
          "  export [--audit-log FILE] ACCOUNT_ID\n"
          "                                  everything held on an account, as one JSON document\n"
          "                                  (account, links, sessions, audit events)\n"
          "  purge --inactive-since DURATION [--dry-run]\n"
          "                                  erase the accounts with no sign-in for DURATION\n"
          "                                  (e.g. 3y, 1095d), with their indexes and sessions\n"
          "  These commands also take --tenant NAME after the command name. Dates are\n"
          "  ISO 8601 (UTC).\n"
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
          "      --key-file FILE       the key of the account records (the plugin's key_file)\n"
          "  -V, --version             print \"sesame-accounts VERSION\" and exit\n"
          "  -h, --help                this text\n"
          "Options given on the command line override the configuration file.\n"
          "\n"
          "CSV of pre-registered citizens (UTF-8 or Windows-1252 as Excel writes it, separated\n"
          "by , or ; as the first line shows, \"quoted\" fields allowed):\n"
          "  family_name,given_name,birthdate,birthplace,birthcountry[,account_id][,name=value...]\n"
          "  birthdate YYYY-MM-DD (not in the future; 00 for an unknown day or month and\n"
          "  day); birthplace INSEE code, empty if born abroad; birthcountry\n"
          "  INSEE code (99100 = France); account_id optional (generated when empty);\n"
          "  name=value attributes (at most 32). Lines starting with # and a header line\n"
          "  starting with family_name are skipped. Nothing is imported if a line is bad,\n"
          "  and a person already registered (same names, birth date and place) is bad.\n"
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
    const char *key_file;
    bool sessions_only; /* the command uses only the sessions' server */
};

/* ---- configuration ------------------------------------------------------ */

struct target {
    struct sesame_store_options opts; /* accounts */
    struct sesame_store_server sessions; /* sessions' server (host NULL and unix NULL: same) */
    bool separate_sessions;
    char *tenant;
    char *audit_log;                    /* [server] audit_log, NULL: none */
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
    free(t->audit_log);
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
            srv->port = (int)strtol(rep->element[1]->str, NULL, 10);
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
        /* communes only: a [territory] is loaded as a tenant too */
        const char *only = NULL;
        size_t n = 0;
        for (size_t i = 0; i < conf->ntenants; i++) {
            if (!conf->tenants[i]->is_territory) {
                only = conf->tenants[i]->name;
                n++;
            }
        }
        if (n != 1)
            return sesame_err_set(err, "%s: %zu tenants: choose one with --tenant", cli->config, n);
        t->tenant = sesame_strdup(only);
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
    /* export reads the citizen's events in the audit journal */
    if (conf->server.audit_log != NULL)
        t->audit_log = sesame_strdup(conf->server.audit_log);
    /* every command is recorded: none runs when the journal cannot be written */
    if (sesame_audit_open_tool(conf, "sesame-accounts", err) != SESAME_OK)
        goto done;
    rc = SESAME_OK;
done:
    sesame_conf_unref(conf);
    return rc;
}

/* Records what a command did in the audit journal, with the operator. */
static void
audit(const char *event, const char *tenant, const char *account, const char *provider,
      const struct sesame_audit_kv *detail, size_t ndetail)
{
    struct sesame_audit_event ev = {.event = event, .tenant = tenant, .account = account,
                                    .provider = provider, .outcome = "success",
                                    .operator = sesame_audit_operator(), .detail = detail,
                                    .ndetail = ndetail};
    sesame_audit_event(&ev);
}

/* purge: each account erased (tools/citizen.h). */
static void
audit_erased(void *arg, const char *tenant, const char *account, size_t nsessions)
{
    (void)arg;
    struct sesame_audit_kv kv[] = {{"by", "purge", 0}, {"sessions", NULL, (long long)nsessions}};
    audit("account_erased", tenant, account, NULL, kv, 2);
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
    if (cli->key_file && sesame_store_load_key(&t->opts.keys, cli->key_file, &e) != SESAME_OK) {
        sesame_err_set(err, "--key-file: %s", e);
        free(e);
        return SESAME_ERROR;
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

static void
add_error(char **errors, int line, const char *msg)
{
    char *next = sesame_asprintf("%s%sline %d: %s", *errors ? *errors : "", *errors ? "\n" : "",
                                 line, msg);
    free(*errors);
    *errors = next;
}

struct error_line {
    long line;
    size_t seq;
    char *text;
};

static int
error_line_cmp(const void *pa, const void *pb)
{
    const struct error_line *a = pa, *b = pb;
    if (a->line != b->line)
        return a->line < b->line ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq ? 1 : 0;
}

/* Sorts "line N: ..." messages (one per line) by N, keeping their order
 * within a line. Takes ownership of text. */
static char *
sort_errors(char *text)
{
    size_t n = 1;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    struct error_line *l = sesame_calloc(n, sizeof(*l));
    size_t k = 0;
    char *save = NULL;
    for (char *p = strtok_r(text, "\n", &save); p != NULL; p = strtok_r(NULL, "\n", &save)) {
        l[k].line = strncmp(p, "line ", 5) == 0 ? strtol(p + 5, NULL, 10) : 0;
        l[k].seq = k;
        l[k].text = p;
        k++;
    }
    qsort(l, k, sizeof(*l), error_line_cmp);
    char *out = NULL;
    for (size_t i = 0; i < k; i++) {
        char *next = sesame_asprintf("%s%s%s", out ? out : "", out ? "\n" : "", l[i].text);
        free(out);
        out = next;
    }
    free(l);
    free(text);
    return out ? out : sesame_strdup("");
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
    struct sesame_csv csv;
    char *errors = NULL;
    sesame_csv_parse(data, len, MAX_FIELDS, "family_name", &csv, &errors);
    free(data);
    if (csv.cp1252)
        fprintf(stderr, "sesame-accounts: %s is not UTF-8: read as Windows-1252\n", path);

    size_t nrows = 0;
    struct sesame_store_import *recs = sesame_calloc(csv.nrows + 1, sizeof(*recs));
    struct sesame_plugin_kv *kvs = sesame_calloc(csv.nrows * MAX_FIELDS + 1, sizeof(*kvs));
    for (size_t i = 0; i < csv.nrows; i++) {
        struct sesame_csv_row *r = &csv.rows[i];
        if (r->nfields < 5) {
            add_error(&errors, r->line, "expected at least 5 fields: family_name,given_name,"
                      "birthdate,birthplace,birthcountry");
            continue;
        }
        struct sesame_store_import *rec = &recs[nrows];
        struct sesame_plugin_kv *attrs = &kvs[nrows * MAX_FIELDS];
        nrows++;
        rec->line = r->line;
        rec->family_name = r->fields[0];
        rec->given_name = r->fields[1];
        rec->birthdate = r->fields[2];
        rec->birthplace = r->fields[3];
        rec->birthcountry = r->fields[4];
        rec->attrs = attrs;
        for (size_t f = 5; f < r->nfields; f++) {
            char *eq = strchr(r->fields[f], '=');
            if (f == 5 && eq == NULL) {
                if (r->fields[f][0] != '\0')
                    rec->account_id = r->fields[f];
                continue;
            }
            if (r->fields[f][0] == '\0')
                continue; /* a spreadsheet's padding */
            if (eq == NULL) {
                char msg[64];
                snprintf(msg, sizeof(msg), "field %zu: expected attr=value", f + 1);
                add_error(&errors, r->line, msg);
                continue;
            }
            *eq = '\0';
            attrs[rec->nattrs].key = r->fields[f];
            attrs[rec->nattrs].value = eq + 1;
            rec->nattrs++;
        }
    }
    int status = 1;
    char **ids = sesame_calloc(nrows + 1, sizeof(char *));
    if (errors == NULL && nrows == 0)
        errors = sesame_strdup("no citizen in the file");
    if (errors == NULL) {
        if (sesame_store_import(c, &t->opts, t->tenant, recs, nrows, ids, &err) == SESAME_OK) {
            for (size_t i = 0; i < nrows; i++) {
                printf("line %d: account %s\n", recs[i].line, ids[i]);
                struct sesame_audit_kv kv[] = {{"by", "import", 0}, {"line", NULL, recs[i].line}};
                audit("account_created", t->tenant, ids[i], NULL, kv, 2);
            }
            printf("imported %zu accounts into tenant %s\n", nrows, t->tenant);
            status = 0;
        } else {
            errors = err;
            err = NULL;
        }
    }
    if (status != 0) {
        errors = sort_errors(errors);
        fprintf(stderr, "%s\nsesame-accounts: nothing imported\n", errors);
    }
    for (size_t i = 0; i < nrows; i++)
        free(ids[i]);
    free(ids);
    free(recs);
    free(kvs);
    sesame_csv_free(&csv);
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
    char created[32], linked[32], last[32];
    sesame_citizen_iso8601(a.created, created);
    sesame_citizen_iso8601(a.linked, linked);
    sesame_citizen_iso8601(a.last_signin, last);
    printf("tenant: %s\nid: %s\norigin: %s\ncreated: %s\nlinked: %s\nlast_signin: %s\n",
           t->tenant, a.id, a.origin, created, linked, last);
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
        struct sesame_audit_kv kv = {"by", "sesame-accounts", 0};
        audit("account_linked", t->tenant, id, provider, &kv, 1);
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
    struct sesame_audit_kv kv[] = {{"links", NULL, (long long)nlinks},
                                   {"sessions", NULL, (long long)nsessions}};
    audit("account_unlinked", t->tenant, id, NULL, kv, 2);
    printf("account %s: %zu links removed, %zu sessions revoked\n", id, nlinks, nsessions);
    return 0;
}

static int
cmd_revoke(redisContext *sc, const struct target *t, const char *id)
{
    size_t nsessions = 0;
    if (revoke(sc, t, id, &nsessions) != 0)
        return 1;
    struct sesame_audit_kv kv = {"sessions", NULL, (long long)nsessions};
    audit("sessions_revoked", t->tenant, id, NULL, &kv, 1);
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
    struct sesame_audit_kv kv = {"sessions", NULL, (long long)nsessions};
    if (rc == SESAME_OK || nsessions > 0)
        audit(rc == SESAME_OK ? "account_erased" : "sessions_revoked", t->tenant, id, NULL, &kv, 1);
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
    enum { OPT_ADDRESS = 256, OPT_PREFIX, OPT_SPREFIX, OPT_PASSWORD, OPT_DATABASE, OPT_KEYFILE };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"accounts", required_argument, NULL, 'a'},
        {"tenant", required_argument, NULL, 't'},
        {"address", required_argument, NULL, OPT_ADDRESS},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"session-prefix", required_argument, NULL, OPT_SPREFIX},
        {"password-file", required_argument, NULL, OPT_PASSWORD},
        {"database", required_argument, NULL, OPT_DATABASE},
        {"key-file", required_argument, NULL, OPT_KEYFILE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cli cli = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, "+c:a:t:hV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': cli.config = optarg; break;
        case 'a': cli.accounts = optarg; break;
        case 't': cli.tenant = optarg; break;
        case OPT_ADDRESS: cli.address = optarg; break;
        case OPT_PREFIX: cli.prefix = optarg; break;
        case OPT_SPREFIX: cli.session_prefix = optarg; break;
        case OPT_PASSWORD: cli.password_file = optarg; break;
        case OPT_DATABASE: cli.database = optarg; break;
        case OPT_KEYFILE: cli.key_file = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("sesame-accounts %s\n", PACKAGE_VERSION); return 0;
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
    /* list, search, export, purge parse their own options (tools/citizen.h). */
    enum sesame_citizen_cmd ccmd = SESAME_CITIZEN_LIST;
    struct sesame_citizen_args cargs;
    bool citizen = sesame_citizen_is_command(cmd, &ccmd);
    if (citizen) {
        int st = sesame_citizen_parse(ccmd, nargs, args, &cargs, stderr);
        if (st != 0)
            return st;
        if (cargs.tenant != NULL)
            cli.tenant = cargs.tenant;
    }
    bool known = citizen;
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
    if (!cli.sessions_only && sesame_store_options_check(&t.opts, &err) != SESAME_OK) {
        fprintf(stderr, "sesame-accounts: %s%s\n", err,
                cli.config ? " (in the [accounts] section, or --key-file)" : " (or --key-file)");
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
    if (citizen) {
        struct sesame_citizen_ctx ctx = {
            .accounts = c,
            .sessions = sc,
            .opts = &t.opts,
            .tenant = t.tenant,
            .audit_log = t.audit_log,
            .out = stdout,
            .err = stderr,
            .now = (int64_t)time(NULL),
            .on_erased = audit_erased,
        };
        status = sesame_citizen_run(&ctx, &cargs);
    } else if (strcmp(cmd, "import") == 0)
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
    /* the command itself, whatever it did (exit 0 done, 1 failed, 3 not found) */
    const char *account = citizen ? (ccmd == SESAME_CITIZEN_EXPORT ? cargs.account : NULL)
                          : strcmp(cmd, "import") != 0 && strcmp(cmd, "find-sub") != 0 ? args[0]
                                                                                       : NULL;
    const char *provider = strcmp(cmd, "link") == 0       ? args[1]
                           : strcmp(cmd, "find-sub") == 0 ? args[0]
                                                          : NULL;
    struct sesame_audit_kv kv[] = {{"action", cmd, 0}, {"exit", NULL, status}};
    sesame_audit_event(&(struct sesame_audit_event){
        .event = "accounts_cli", .tenant = t.tenant, .account = account, .provider = provider,
        .outcome = status == 0 ? "success" : "refused",
        .reason = status == 0 ? NULL : status == EXIT_NOTFOUND ? "not_found" : "failed",
        .operator = sesame_audit_operator(), .detail = kv, .ndetail = 2});
    sesame_audit_stop(); /* a final checkpoint */
    if (sc != c)
        redisFree(sc);
    if (c)
        redisFree(c);
    target_free(&t);
    return status;
}
