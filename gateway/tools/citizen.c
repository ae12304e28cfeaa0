#include "tools/citizen.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#define PER_PAGE_DEFAULT 50
#define PER_PAGE_MAX 1000

/* ---- small helpers ------------------------------------------------------ */

void
sesame_citizen_iso8601(int64_t t, char out[32])
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t <= 0 || gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "never");
}

static json_t *
json_time(int64_t t)
{
    if (t <= 0)
        return json_null();
    char buf[32];
    sesame_citizen_iso8601(t, buf);
    return json_string(buf);
}

int
sesame_citizen_parse_period(const char *s, int64_t *seconds)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-' || s[0] == '+' || v < 0)
        return SESAME_ERROR;
    int64_t mult;
    if (strcmp(end, "s") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60;
    else if (strcmp(end, "h") == 0)
        mult = 3600;
    else if (strcmp(end, "d") == 0)
        mult = 86400;
    else if (strcmp(end, "y") == 0)
        mult = 365 * 86400;
    else
        return SESAME_ERROR;
    if (v > INT64_MAX / mult / 2)
        return SESAME_ERROR;
    *seconds = (int64_t)v * mult;
    return SESAME_OK;
}

/* ---- arguments ---------------------------------------------------------- */

static const char *const command_names[] = {"list", "search", "export", "purge"};

bool
sesame_citizen_is_command(const char *name, enum sesame_citizen_cmd *cmd)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(command_names); i++) {
        if (strcmp(name, command_names[i]) == 0) {
            *cmd = (enum sesame_citizen_cmd)i;
            return true;
        }
    }
    return false;
}

static int
usage_error(FILE *err, const char *cmd, const char *msg, const char *what)
{
    fprintf(err, "sesame-accounts: %s: %s%s%s\n", cmd, msg, what ? " " : "", what ? what : "");
    return SESAME_CITIZEN_EXIT_USAGE;
}

static bool
parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int
sesame_citizen_parse(enum sesame_citizen_cmd cmd, int argc, char **argv, struct sesame_citizen_args *a,
                     FILE *err)
{
    memset(a, 0, sizeof(*a));
    a->cmd = cmd;
    a->page = 1;
    a->per_page = PER_PAGE_DEFAULT;
    a->by = SESAME_STORE_BY_LAST_SIGNIN;
    const char *name = command_names[cmd];
    bool has_period = false;
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = NULL;
        char key[32];
        const char *eq = strncmp(opt, "--", 2) == 0 ? strchr(opt, '=') : NULL;
        if (eq != NULL && (size_t)(eq - opt) < sizeof(key)) {
            snprintf(key, sizeof(key), "%.*s", (int)(eq - opt), opt);
            opt = key;
            val = eq + 1;
        }
        bool takes_value = strcmp(opt, "--tenant") == 0 || strcmp(opt, "-t") == 0 ||
                           strcmp(opt, "--page") == 0 || strcmp(opt, "--per-page") == 0 ||
                           strcmp(opt, "--by") == 0 || strcmp(opt, "--name") == 0 ||
                           strcmp(opt, "--birthdate") == 0 || strcmp(opt, "--audit-log") == 0 ||
                           strcmp(opt, "--inactive-since") == 0;
        if (takes_value && val == NULL) {
            if (i + 1 >= argc)
                return usage_error(err, name, "missing value after", opt);
            val = argv[++i];
        }
        if (strcmp(opt, "--tenant") == 0 || strcmp(opt, "-t") == 0) {
            a->tenant = val;
        } else if (cmd == SESAME_CITIZEN_LIST && strcmp(opt, "--page") == 0) {
            if (!parse_long(val, 1, 1000000000L, &a->page))
                return usage_error(err, name, "--page: a number from 1", NULL);
        } else if (cmd == SESAME_CITIZEN_LIST && strcmp(opt, "--per-page") == 0) {
            if (!parse_long(val, 1, PER_PAGE_MAX, &a->per_page))
                return usage_error(err, name, "--per-page: a number in 1..1000", NULL);
        } else if (cmd == SESAME_CITIZEN_LIST && strcmp(opt, "--by") == 0) {
            if (strcmp(val, "last-signin") == 0)
                a->by = SESAME_STORE_BY_LAST_SIGNIN;
            else if (strcmp(val, "created") == 0)
                a->by = SESAME_STORE_BY_CREATED;
            else
                return usage_error(err, name, "--by: last-signin or created", NULL);
        } else if (cmd == SESAME_CITIZEN_SEARCH && strcmp(opt, "--name") == 0) {
            a->name = val;
        } else if (cmd == SESAME_CITIZEN_SEARCH && strcmp(opt, "--birthdate") == 0) {
            a->birthdate = val;
        } else if (cmd == SESAME_CITIZEN_EXPORT && strcmp(opt, "--audit-log") == 0) {
            a->audit_log = val;
        } else if (cmd == SESAME_CITIZEN_PURGE && strcmp(opt, "--inactive-since") == 0) {
            if (sesame_citizen_parse_period(val, &a->inactive_s) != SESAME_OK)
                return usage_error(err, name,
                                   "--inactive-since: a number and a unit, s m h d "
                                   "or y (e.g. 3y, 1095d)",
                                   NULL);
            has_period = true;
        } else if (cmd == SESAME_CITIZEN_PURGE && strcmp(opt, "--dry-run") == 0 && val == NULL) {
            a->dry_run = true;
        } else if (cmd == SESAME_CITIZEN_EXPORT && opt[0] != '-' && a->account == NULL) {
            a->account = opt;
        } else {
            return usage_error(err, name, opt[0] == '-' ? "unknown option" : "unexpected argument", opt);
        }
    }
    if (cmd == SESAME_CITIZEN_SEARCH && a->name == NULL && a->birthdate == NULL)
        return usage_error(err, name, "give --name \"NAMES\", --birthdate YYYY-MM-DD or both", NULL);
    if (cmd == SESAME_CITIZEN_EXPORT && a->account == NULL)
        return usage_error(err, name, "takes 1 argument (ACCOUNT_ID)", NULL);
    if (cmd == SESAME_CITIZEN_PURGE && !has_period)
        return usage_error(err, name, "give --inactive-since DURATION (e.g. 3y)", NULL);
    return 0;
}

static int
fail(const struct sesame_citizen_ctx *ctx, const char *what, char *err)
{
    fprintf(ctx->err, "sesame-accounts: %s%s%s\n", what ? what : "", what ? ": " : "", err ? err : "failed");
    free(err);
    return SESAME_CITIZEN_EXIT_FAILURE;
}

/* ---- list --------------------------------------------------------------- */

int
sesame_citizen_list(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a)
{
    struct sesame_store_entry *e = NULL;
    size_t n = 0;
    char *err = NULL;
    if (sesame_store_list(ctx->accounts, ctx->opts, ctx->tenant, a->by, &e, &n, &err) != SESAME_OK)
        return fail(ctx, NULL, err);
    size_t per = (size_t)a->per_page, page = (size_t)a->page;
    size_t pages = n ? (n + per - 1) / per : 1;
    size_t start = (page - 1) * per;
    size_t count = start < n ? (n - start < per ? n - start : per) : 0;
    if (count > 0 &&
        sesame_store_describe(ctx->accounts, ctx->opts, ctx->tenant, e + start, count, &err) != SESAME_OK) {
        sesame_store_entries_free(e, n);
        return fail(ctx, NULL, err);
    }
    fprintf(ctx->out, "# tenant %s: %zu account%s, by %s, page %zu of %zu, %zu per page\n", ctx->tenant, n,
            n == 1 ? "" : "s", a->by == SESAME_STORE_BY_CREATED ? "creation" : "last sign-in", page, pages,
            per);
    fprintf(ctx->out, "account\torigin\tcreated\tlast_signin\tlinks\tsessions\n");
    int status = 0;
    for (size_t i = start; i < start + count; i++) {
        long long nsessions = 0;
        if (sesame_store_count_sessions(ctx->sessions, ctx->opts->session_prefix, ctx->tenant, e[i].id,
                                        &nsessions, &err) != SESAME_OK) {
            status = fail(ctx, "sessions", err);
            break;
        }
        char created[32], last[32];
        sesame_citizen_iso8601(e[i].created, created);
        sesame_citizen_iso8601(e[i].last_signin, last);
        fprintf(ctx->out, "%s\t%s\t%s\t%s\t%zu\t%lld\n", e[i].id, e[i].origin, created, last, e[i].nlinks,
                nsessions);
    }
    sesame_store_entries_free(e, n);
    return status;
}

/* ---- search ------------------------------------------------------------- */

int
sesame_citizen_search(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a)
{
    char **ids = NULL;
    size_t n = 0;
    char *err = NULL;
    if (sesame_store_search(ctx->accounts, ctx->opts, ctx->tenant, a->name, a->birthdate, &ids, &n, &err) !=
        SESAME_OK)
        return fail(ctx, "search", err);
    fprintf(ctx->out, "# tenant %s: %zu imported account%s match%s\n", ctx->tenant, n, n == 1 ? "" : "s",
            n == 1 ? "es" : "");
    fprintf(ctx->out, "account\tfamily_name\tgiven_name\tbirthdate\tbirthplace\tbirthcountry\t"
                      "created\tlast_signin\n");
    int status = n == 0 ? SESAME_CITIZEN_EXIT_NOTFOUND : 0;
    for (size_t i = 0; i < n; i++) {
        struct sesame_store_account acct;
        int rc = sesame_store_get(ctx->accounts, ctx->opts, ctx->tenant, ids[i], &acct, &err);
        if (rc == SESAME_DECLINED)
            continue; /* erased meanwhile */
        if (rc != SESAME_OK) {
            status = fail(ctx, NULL, err);
            err = NULL;
            break;
        }
        char created[32], last[32];
        sesame_citizen_iso8601(acct.created, created);
        sesame_citizen_iso8601(acct.last_signin, last);
        fprintf(ctx->out, "%s", acct.id);
        static const char *const cols[] = {"family_name", "given_name", "birthdate", "birthplace",
                                           "birthcountry"};
        for (size_t k = 0; k < SESAME_ARRAY_LEN(cols); k++) {
            const char *v = sesame_store_account_field(&acct, cols[k]);
            fprintf(ctx->out, "\t%s", v ? v : "");
        }
        fprintf(ctx->out, "\t%s\t%s\n", created, last);
        sesame_store_account_free(&acct);
    }
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return status;
}

/* ---- export ------------------------------------------------------------- */

static void note(json_t *notes, const char *fmt, ...) SESAME_PRINTF(2, 3);

static void
note(json_t *notes, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    json_array_append_new(notes, json_string(buf));
}

static json_t *
account_json(const struct sesame_store_account *acct)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(acct->id));
    json_object_set_new(o, "origin", json_string(acct->origin));
    json_object_set_new(o, "created", json_time(acct->created));
    json_object_set_new(o, "linked", json_time(acct->linked));
    json_object_set_new(o, "last_signin", json_time(acct->last_signin));
    json_t *personal = json_object();
    for (size_t i = 0; i < acct->nfields; i++)
        json_object_set_new(personal, acct->fields[i].key, json_string(acct->fields[i].value));
    json_object_set_new(o, "personal_data", personal);
    json_t *attrs = json_object();
    for (size_t i = 0; i < acct->nattrs; i++)
        json_object_set_new(attrs, acct->attrs[i].key, json_string(acct->attrs[i].value));
    json_object_set_new(o, "attributes", attrs);
    return o;
}

static json_t *
links_json(const struct sesame_store_account *acct)
{
    json_t *links = json_array();
    for (size_t i = 0; acct != NULL && i < acct->nlinks; i++) {
        const char *colon = strchr(acct->links[i], ':');
        if (colon == NULL)
            continue;
        json_array_append_new(links, json_pack("{s:s%, s:s}", "provider", acct->links[i],
                                               (size_t)(colon - acct->links[i]), "sub", colon + 1));
    }
    return links;
}

/* The account's active sessions. Their records are sealed under a key
 * derived from the server secret and the citizen's cookie
 * (session/session.h): nobody but the citizen's browser opens them, this
 * tool included, so each session is given by the latest time it can last
 * (its Redis TTL); sign-in times, providers and levels are in the audit
 * events. Never a cookie or a session hash. */
static int
sessions_json(const struct sesame_citizen_ctx *ctx, const char *account, json_t *out, json_t *notes,
              char **err)
{
    char **hashes = NULL;
    size_t n = 0;
    if (sesame_store_session_hashes(ctx->sessions, ctx->opts->session_prefix, ctx->tenant, account, &hashes,
                                    &n, err) != SESAME_OK)
        return SESAME_ERROR;
    int rc = SESAME_OK;
    for (size_t i = 0; i < n && rc == SESAME_OK; i++) {
        char *key = sesame_asprintf("%ss:%s", ctx->opts->session_prefix, hashes[i]);
        const char *pttl[] = {"PTTL", key};
        redisReply *t = redisCommandArgv(ctx->sessions, 2, pttl, NULL);
        if (t == NULL || t->type != REDIS_REPLY_INTEGER) {
            rc = sesame_err_set(err, "redis: %s",
                                ctx->sessions->err ? ctx->sessions->errstr : "cannot read a session");
        } else if (t->integer != -2) { /* -2: ended, the index not cleaned yet */
            int64_t left = t->integer > 0 ? (t->integer + 999) / 1000 : 0;
            json_array_append_new(
                out, json_pack("{s:o}", "ends_at_the_latest", json_time(left ? ctx->now + left : 0)));
        }
        if (t)
            freeReplyObject(t);
        free(key);
    }
    for (size_t i = 0; i < n; i++)
        free(hashes[i]);
    free(hashes);
    if (json_array_size(out) > 0)
        note(notes, "session records are encrypted with a key derived from the citizen's own "
                    "cookie: Sésame cannot read them without it, so each session is given by the "
                    "latest time it can last; sign-ins, providers and levels are in the audit events");
    return rc;
}

struct event {
    json_t *ev;
    size_t seq;
};

static int
event_cmp(const void *pa, const void *pb)
{
    const struct event *a = pa, *b = pb;
    /* seq runs on across rotated files; time when a line has none */
    json_t *sa = json_object_get(a->ev, "seq"), *sb = json_object_get(b->ev, "seq");
    if (json_is_integer(sa) && json_is_integer(sb) && json_integer_value(sa) != json_integer_value(sb))
        return json_integer_value(sa) < json_integer_value(sb) ? -1 : 1;
    json_t *ta = json_object_get(a->ev, "time"), *tb = json_object_get(b->ev, "time");
    int c = 0;
    if (json_is_string(ta) && json_is_string(tb))
        c = strcmp(json_string_value(ta), json_string_value(tb));
    else if (json_is_number(ta) && json_is_number(tb))
        c = json_number_value(ta) < json_number_value(tb)   ? -1
            : json_number_value(ta) > json_number_value(tb) ? 1
                                                            : 0;
    if (c == 0)
        c = a->seq < b->seq ? -1 : a->seq > b->seq ? 1 : 0;
    return c;
}

static bool
compressed(const char *name)
{
    static const char *const suffixes[] = {".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip"};
    size_t n = strlen(name);
    for (size_t i = 0; i < SESAME_ARRAY_LEN(suffixes); i++) {
        size_t l = strlen(suffixes[i]);
        if (n > l && strcmp(name + n - l, suffixes[i]) == 0)
            return true;
    }
    return false;
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The journal and its rotated siblings FILE.*, sorted by name: not its
 * head (FILE.head) or public keys (FILE.pub, FILE.pub.KID), audit/audit.h. */
static char **
journal_files(const char *path, size_t *n, json_t *notes)
{
    char **files = sesame_calloc(2, sizeof(char *));
    size_t cap = 2;
    *n = 0;
    files[(*n)++] = sesame_strdup(path);
    const char *slash = strrchr(path, '/');
    char *dir = slash ? sesame_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : sesame_strdup(".");
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        const char *suffix = de->d_name + blen;
        if (strncmp(de->d_name, base, blen) != 0 || suffix[0] != '.' || suffix[1] == '\0' ||
            strcmp(suffix, ".head") == 0 || strcmp(suffix, ".pub") == 0 || strncmp(suffix, ".pub.", 5) == 0)
            continue;
        char *full = slash ? sesame_asprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, de->d_name)
                           : sesame_strdup(de->d_name);
        if (compressed(de->d_name)) {
            note(notes, "compressed journal file not read: %s", full);
            free(full);
            continue;
        }
        if (*n == cap) {
            cap *= 2;
            files = sesame_realloc(files, cap * sizeof(char *));
        }
        files[(*n)++] = full;
    }
    if (d != NULL)
        closedir(d);
    free(dir);
    if (*n > 2)
        qsort(files + 1, *n - 1, sizeof(char *), name_cmp);
    return files;
}

static json_t *
audit_json(const struct sesame_citizen_ctx *ctx, const char *path, const char *account, json_t *notes)
{
    json_t *out = json_array();
    if (path == NULL) {
        note(notes, "no audit journal: [server] audit_log is not set in the configuration");
        return out;
    }
    size_t nfiles = 0;
    char **files = journal_files(path, &nfiles, notes);
    struct event *ev = NULL;
    size_t nev = 0, cap = 0, seq = 0;
    for (size_t i = 0; i < nfiles; i++) {
        FILE *f = fopen(files[i], "re");
        if (f == NULL) {
            note(notes, "audit journal %s: %s", files[i], strerror(errno));
            continue;
        }
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        while ((len = getline(&line, &lcap, f)) > 0) {
            json_t *j = json_loadb(line, (size_t)len, JSON_DISABLE_EOF_CHECK, NULL);
            const char *t = json_string_value(json_object_get(j, "tenant"));
            const char *a = json_string_value(json_object_get(j, "account"));
            if (t != NULL && a != NULL && strcmp(t, ctx->tenant) == 0 && strcmp(a, account) == 0) {
                if (nev == cap) {
                    cap = cap ? cap * 2 : 64;
                    ev = sesame_realloc(ev, cap * sizeof(*ev));
                }
                ev[nev].ev = j;
                ev[nev].seq = seq;
                nev++;
                j = NULL;
            }
            seq++;
            json_decref(j);
        }
        free(line);
        fclose(f);
    }
    if (nev > 1)
        qsort(ev, nev, sizeof(*ev), event_cmp);
    for (size_t i = 0; i < nev; i++)
        json_array_append_new(out, ev[i].ev);
    free(ev);
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    return out;
}

int
sesame_citizen_export(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a)
{
    const char *account = a->account;
    char *err = NULL;
    if (!sesame_store_account_id_ok(account)) {
        fprintf(ctx->err, "sesame-accounts: account id malformed\n");
        return SESAME_CITIZEN_EXIT_FAILURE;
    }
    struct sesame_store_account acct;
    int rc = sesame_store_get(ctx->accounts, ctx->opts, ctx->tenant, account, &acct, &err);
    if (rc == SESAME_ERROR)
        return fail(ctx, NULL, err);
    bool exists = rc == SESAME_OK;
    json_t *notes = json_array();
    json_t *doc = json_object();
    char now[32];
    sesame_citizen_iso8601(ctx->now, now);
    json_object_set_new(doc, "format", json_string("sesame-account-export/1"));
    json_object_set_new(doc, "exported_at", json_string(now));
    json_object_set_new(doc, "tenant", json_string(ctx->tenant));
    json_object_set_new(doc, "account_id", json_string(account));
    json_object_set_new(doc, "account", exists ? account_json(&acct) : json_null());
    json_object_set_new(doc, "links", links_json(exists ? &acct : NULL));
    if (!exists)
        note(notes, "no account %s in tenant %s (never created, or erased)", account, ctx->tenant);
    else if (strcmp(acct.origin, "created") == 0)
        note(notes, "account created at sign-in: Sésame keeps no name or birth data for it");
    json_t *sessions = json_array();
    int status = 0;
    if (sessions_json(ctx, account, sessions, notes, &err) != SESAME_OK)
        status = fail(ctx, "sessions", err);
    json_object_set_new(doc, "sessions", sessions);
    json_t *events = audit_json(ctx, a->audit_log ? a->audit_log : ctx->audit_log, account, notes);
    size_t nevents = json_array_size(events);
    json_object_set_new(doc, "audit_events", events);
    json_object_set_new(doc, "notes", notes);
    if (status == 0) {
        if (!exists && nevents == 0 && json_array_size(sessions) == 0) {
            fprintf(ctx->err, "sesame-accounts: nothing is held on account %s in tenant %s\n", account,
                    ctx->tenant);
            status = SESAME_CITIZEN_EXIT_NOTFOUND;
        } else if (json_dumpf(doc, ctx->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
                   fputc('\n', ctx->out) == EOF) {
            fprintf(ctx->err, "sesame-accounts: cannot write the export\n");
            status = SESAME_CITIZEN_EXIT_FAILURE;
        }
    }
    json_decref(doc);
    if (exists)
        sesame_store_account_free(&acct);
    return status;
}

/* ---- purge -------------------------------------------------------------- */

int
sesame_citizen_purge(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a)
{
    int64_t cutoff = ctx->now - a->inactive_s;
    struct sesame_store_entry *e = NULL;
    size_t n = 0;
    char *err = NULL;
    if (sesame_store_inactive(ctx->accounts, ctx->opts, ctx->tenant, cutoff, &e, &n, &err) != SESAME_OK)
        return fail(ctx, NULL, err);
    char since[32];
    sesame_citizen_iso8601(cutoff, since);
    size_t erased = 0, kept = 0;
    int status = 0;
    for (size_t i = 0; i < n; i++) {
        char created[32], last[32];
        sesame_citizen_iso8601(e[i].created, created);
        sesame_citizen_iso8601(e[i].last_signin, last);
        if (a->dry_run) {
            fprintf(ctx->out, "would erase %s (created %s, last sign-in %s)\n", e[i].id, created, last);
            continue;
        }
        int rc = sesame_store_erase_inactive(ctx->accounts, ctx->opts, ctx->tenant, e[i].id, cutoff, &err);
        if (rc == SESAME_DECLINED) {
            fprintf(ctx->out, "kept %s: signed in meanwhile (or erased already)\n", e[i].id);
            kept++;
            continue;
        }
        size_t nsessions = 0;
        if (rc != SESAME_OK ||
            sesame_store_revoke_sessions(ctx->sessions, ctx->opts->session_prefix, ctx->tenant, e[i].id,
                                         &nsessions, &err) != SESAME_OK) {
            status = fail(ctx, e[i].id, err);
            err = NULL;
            break;
        }
        erased++;
        fprintf(ctx->out, "erased %s (created %s, last sign-in %s), %zu sessions revoked\n", e[i].id, created,
                last, nsessions);
        if (ctx->on_erased != NULL)
            ctx->on_erased(ctx->hook_arg, ctx->tenant, e[i].id, nsessions);
    }
    if (a->dry_run)
        fprintf(ctx->out,
                "dry run: %zu account%s of tenant %s with no sign-in since %s would be "
                "erased\n",
                n, n == 1 ? "" : "s", ctx->tenant, since);
    else if (status == 0)
        fprintf(ctx->out, "purged %zu account%s of tenant %s with no sign-in since %s%s\n", erased,
                erased == 1 ? "" : "s", ctx->tenant, since, kept ? " (the others signed in meanwhile)" : "");
    sesame_store_entries_free(e, n);
    return status;
}

int
sesame_citizen_run(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a)
{
    switch (a->cmd) {
    case SESAME_CITIZEN_LIST: return sesame_citizen_list(ctx, a);
    case SESAME_CITIZEN_SEARCH: return sesame_citizen_search(ctx, a);
    case SESAME_CITIZEN_EXPORT: return sesame_citizen_export(ctx, a);
    case SESAME_CITIZEN_PURGE: return sesame_citizen_purge(ctx, a);
    }
    return SESAME_CITIZEN_EXIT_USAGE;
}
