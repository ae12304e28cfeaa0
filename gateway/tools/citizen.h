/*
 * citizen.h - what `sesame-accounts` answers when a citizen exercises a
 * right (RGPD articles 15 and 17) and when the retention period runs out:
 *
 *   list   [--tenant T] [--page N] [--per-page K] [--by last-signin|created]
 *          every account of the tenant, paged; no personal data
 *   search [--tenant T] (--name "NAMES" | --birthdate YYYY-MM-DD)...
 *          imported citizens whose names (normalised as for pivot matching)
 *          or birthdate match
 *   export [--tenant T] [--audit-log FILE] ACCOUNT
 *          one JSON document: the account, its links, its active sessions
 *          and its audit events
 *   purge  [--tenant T] --inactive-since DURATION [--dry-run]
 *          erases the accounts with no sign-in for DURATION, with their
 *          links, index entries and sessions
 *
 * Listings are tab-separated with a header row, after one "# " summary line.
 * Dates are ISO 8601 in UTC ("2026-03-01T09:30:00Z"), "never" when absent
 * (null in JSON).
 *
 * The audit journal (`[server] audit_log`, JSON lines with event, tenant,
 * account and time: audit/audit.h) is read from the file and its rotated
 * siblings FILE.*
 * (compressed ones are skipped and named in the notes); export keeps the
 * lines whose tenant and account are the exported ones.
 *
 * Sessions: found through the account's session index. Their records are
 * sealed under a key derived from the citizen's cookie (session/session.h),
 * which no administrator holds: export lists each active session with the
 * latest time it can last (its Redis TTL), and the audit events tell the
 * sign-ins (time, provider, level).
 */
#ifndef SESAME_TOOLS_CITIZEN_H
#define SESAME_TOOLS_CITIZEN_H

#include <stdio.h>

#include <hiredis/hiredis.h>

#include "core/common.h"
#include "../../plugins/redis/store.h"

/* Exit statuses, as for the whole tool. */
#define SESAME_CITIZEN_EXIT_FAILURE 1
#define SESAME_CITIZEN_EXIT_USAGE 2
#define SESAME_CITIZEN_EXIT_NOTFOUND 3

/* Called after each account erased by purge, e.g. to audit it. */
typedef void (*sesame_citizen_erased_fn)(void *arg, const char *tenant, const char *account,
                                         size_t nsessions);

struct sesame_citizen_ctx {
    redisContext *accounts; /* the accounts' server */
    redisContext *sessions; /* the sessions' server (may be the same) */
    const struct sesame_store_options *opts;
    const char *tenant;
    const char *audit_log;              /* the journal, NULL: none */
    FILE *out;                          /* results */
    FILE *err;                          /* messages */
    int64_t now;                        /* unix s */
    sesame_citizen_erased_fn on_erased; /* may be NULL */
    void *hook_arg;
};

enum sesame_citizen_cmd {
    SESAME_CITIZEN_LIST = 0,
    SESAME_CITIZEN_SEARCH,
    SESAME_CITIZEN_EXPORT,
    SESAME_CITIZEN_PURGE,
};

/* A command line of one of these commands, parsed. Strings are borrowed
 * from argv. */
struct sesame_citizen_args {
    enum sesame_citizen_cmd cmd;
    const char *tenant;         /* --tenant, NULL: the tool's */
    long page, per_page;        /* list: 1.., 1..1000 (default 1, 50) */
    enum sesame_store_order by; /* list (default last sign-in) */
    const char *name;           /* search */
    const char *birthdate;      /* search */
    const char *account;        /* export */
    const char *audit_log;      /* export --audit-log, NULL: the configured one */
    int64_t inactive_s;         /* purge */
    bool dry_run;               /* purge */
};

/* True when `name` is one of these commands (cmd set). */
bool sesame_citizen_is_command(const char *name, enum sesame_citizen_cmd *cmd);

/* Parses the arguments after the command name. Returns 0, or
 * SESAME_CITIZEN_EXIT_USAGE after a message on err. */
int sesame_citizen_parse(enum sesame_citizen_cmd cmd, int argc, char **argv, struct sesame_citizen_args *a,
                         FILE *err);

/* Runs the command. Returns the exit status. */
int sesame_citizen_run(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a);

/* Each command, for the tests. */
int sesame_citizen_list(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a);
int sesame_citizen_search(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a);
int sesame_citizen_export(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a);
int sesame_citizen_purge(const struct sesame_citizen_ctx *ctx, const struct sesame_citizen_args *a);

/* "2026-03-01T09:30:00Z" (UTC) into out; "never" for t <= 0. */
void sesame_citizen_iso8601(int64_t t, char out[32]);

/* A retention period: a number and a unit, s m h d (days) or y (365 days);
 * a bare number is refused (too easy to mistake). Returns SESAME_OK or
 * SESAME_ERROR. */
int sesame_citizen_parse_period(const char *s, int64_t *seconds);

#endif
