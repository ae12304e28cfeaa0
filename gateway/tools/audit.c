/*
 * audit.c - `sesame-audit`: verifies Sésame's audit journals offline with
 * only the public key, and prints the lines about an account, a tenant, an
 * event or a period (for an agent answering a citizen's request). The
 * journal format is in gateway/audit/audit.h; see usage() for the manual.
 */
#include "config.h"

#include <getopt.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/common.h"

#define EXIT_BAD 1
#define EXIT_USAGE 2

static void
usage(FILE *out)
{
    fputs("NAME\n"
          "    sesame-audit - verify and search the audit journal of Sésame\n"
          "\n"
          "SYNOPSIS\n"
          "    sesame-audit verify [--key FILE.pub]... [--quiet] FILE...\n"
          "    sesame-audit show [--account ID] [--tenant NAME] [--event EVENT]\n"
          "                      [--since DATE] [--until DATE] FILE...\n"
          "    sesame-audit --help | --version\n"
          "\n"
          "DESCRIPTION\n"
          "    The journal ([server] audit_log) holds one JSON line per event: sign-ins and\n"
          "    their refusals, accounts created, linked, unlinked or erased, sessions\n"
          "    revoked, logouts, configurations loaded or refused, every sesame-accounts\n"
          "    command with its operator. Each line carries the SHA-256 hash of the line\n"
          "    before (\"prev\") and its own (\"hash\"); checkpoint lines are signed with the\n"
          "    audit key (ES256 or Ed25519), whose public key the daemon publishes as\n"
          "    FILE.pub. The chain continues across rotated files.\n"
          "\n"
          "COMMANDS\n"
          "    verify FILE...\n"
          "        Checks the files in the order given, oldest first (audit.log.2\n"
          "        audit.log.1 audit.log): every hash, the chain from line to line and\n"
          "        from file to file, every checkpoint signature, and that the last line\n"
          "        is a checkpoint. Needs only the public key. On success prints a\n"
          "        summary and exits 0. Otherwise prints the first bad line as\n"
          "            FILE:LINE: reason\n"
          "        and exits 1. Reasons: \"changed\" (the line does not match its hash,\n"
          "        or the line named was rewritten with its hash recomputed), \"removed\"\n"
          "        (lines or a file missing before this line), \"reordered\" (this line and\n"
          "        the next are swapped), \"inserted\" (not part of the chain), \"bad\n"
          "        signature\", \"unsigned\" (lines after the last checkpoint: it was\n"
          "        removed, or the journal is still being written; the daemon signs every\n"
          "        audit_checkpoint, at rotation, on SIGUSR1 and when it stops), \"malformed\".\n"
          "        Compressed rotated files must be uncompressed first.\n"
          "\n"
          "    show FILE...\n"
          "        Prints the lines that match every option given, as they are (JSON\n"
          "        lines, for jq or a spreadsheet). Exits 0 when a line matched, 1 when\n"
          "        none did. It does not verify: run verify first when it matters.\n"
          "\n"
          "OPTIONS\n"
          "    -k, --key FILE.pub   a public key (PEM); repeat it for journals signed by\n"
          "                         several keys (a checkpoint names its key by id). By\n"
          "                         default FILE.pub and FILE.pub.* next to each file given\n"
          "                         (a rotation suffix .N or -DATE removed).\n"
          "    -q, --quiet          verify: print nothing on success\n"
          "    -a, --account ID     show: the lines of this account id\n"
          "    -t, --tenant NAME    show: the lines of this tenant\n"
          "    -e, --event EVENT    show: the lines of this event (signin, account_erased...)\n"
          "    -s, --since DATE     show: from DATE (2026-12-04, 2026-12-04T18:00, ...T18:00:00,\n"
          "                         ...T18:00:00.123; UTC), inclusive\n"
          "    -u, --until DATE     show: until DATE, inclusive at its precision\n"
          "                         (--until 2026-12-04 includes the whole day)\n"
          "    -h, --help           this manual\n"
          "    -V, --version        print \"sesame-audit VERSION\"\n"
          "\n"
          "EXIT STATUS\n"
          "    0 verified (verify) or a line matched (show); 1 the journal does not verify\n"
          "    (verify) or nothing matched (show); 2 usage error or unreadable file.\n"
          "\n"
          "EXAMPLES\n"
          "    sesame-audit verify /var/log/sesame/audit.log.1 /var/log/sesame/audit.log\n"
          "    sesame-audit verify --key /srv/archives/audit.pub audit-2026-11.log\n"
          "    sesame-audit show --account marie-001 --since 2026-01-01 audit.log*\n"
          "    sesame-audit show --tenant ville-a --event account_erased audit.log\n"
          "\n"
          "SEE ALSO\n"
          "    sesame(8), sesame-accounts(8), sesame.conf(5): audit_log, audit_key_file,\n"
          "    audit_checkpoint, audit_syslog, audit_client_address.\n",
          out);
}

struct keys {
    char **v;
    size_t n;
};

static void
keys_add(struct keys *k, const char *path)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i], path) == 0)
            return;
    k->v = sesame_realloc(k->v, (k->n + 1) * sizeof(char *));
    k->v[k->n++] = sesame_strdup(path);
}

static void
keys_glob(struct keys *k, const char *base)
{
    char *pub = sesame_asprintf("%s.pub", base);
    if (access(pub, R_OK) == 0)
        keys_add(k, pub);
    char *pattern = sesame_asprintf("%s.pub.*", base);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++)
            if (strstr(g.gl_pathv[i], ".tmp.") == NULL)
                keys_add(k, g.gl_pathv[i]);
        globfree(&g);
    }
    free(pattern);
    free(pub);
}

/* FILE.pub next to each file, also with a rotation suffix removed
 * (audit.log.1 -> audit.log, audit.log-20261204 -> audit.log). */
static void
default_keys(struct keys *k, char **files, int n)
{
    for (int i = 0; i < n; i++) {
        keys_glob(k, files[i]);
        char *base = sesame_strdup(files[i]);
        char *cut = strrchr(base, '.');
        char *dash = strrchr(base, '-');
        if (dash && (!cut || dash > cut))
            cut = dash;
        char *slash = strrchr(base, '/');
        if (cut && (!slash || cut > slash) && cut[1] && strspn(cut + 1, "0123456789") == strlen(cut + 1)) {
            *cut = '\0';
            keys_glob(k, base);
        }
        free(base);
    }
}

static int
cmd_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"key", required_argument, NULL, 'k'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct keys k = {0};
    bool quiet = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "k:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'k': keys_add(&k, optarg); break;
        case 'q': quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "sesame-audit verify: give the journal files, oldest first\n");
        return EXIT_USAGE;
    }
    char **files = argv + optind;
    int nfiles = argc - optind;
    for (int i = 0; i < nfiles; i++) {
        if (access(files[i], R_OK) != 0) {
            fprintf(stderr, "sesame-audit: cannot read %s\n", files[i]);
            return EXIT_USAGE;
        }
    }
    if (k.n == 0)
        default_keys(&k, files, nfiles);
    if (k.n == 0) {
        fprintf(stderr, "sesame-audit: no public key next to %s: give --key FILE.pub\n", files[0]);
        return EXIT_USAGE;
    }
    struct sesame_audit_verify v;
    int rc = sesame_audit_verify_files((const char *const *)files, (size_t)nfiles,
                                       (const char *const *)k.v, k.n, &v);
    int status = 0;
    if (rc != SESAME_OK) {
        printf("%s\n", v.error ? v.error : "verification failed");
        status = v.bad_line > 0 ? EXIT_BAD : EXIT_USAGE;
    } else if (!quiet) {
        printf("OK: %" PRIu64 " lines in %d file%s, seq %" PRIu64 " to %" PRIu64 ", %" PRIu64
               " signed checkpoint%s, the last at %s\n",
               v.lines, nfiles, nfiles > 1 ? "s" : "", v.first_seq, v.last_seq, v.checkpoints,
               v.checkpoints > 1 ? "s" : "", v.last_checkpoint_time);
        if (!v.from_start)
            printf("note: %s continues a journal begun earlier (its first line has seq %" PRIu64
                   "): give the earlier files too to verify from the start\n", files[0],
                   v.first_seq);
        if (v.dropped > 0)
            printf("warning: %" PRIu64 " event(s) were not recorded (queue full or journal not "
                   "writable): see the daemon's error log\n", v.dropped);
    }
    sesame_audit_verify_clear(&v);
    for (size_t i = 0; i < k.n; i++)
        free(k.v[i]);
    free(k.v);
    return status;
}

static int
cmd_show(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"account", required_argument, NULL, 'a'},
        {"tenant", required_argument, NULL, 't'},
        {"event", required_argument, NULL, 'e'},
        {"since", required_argument, NULL, 's'},
        {"until", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct sesame_audit_filter f = {0};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "a:t:e:s:u:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'a': f.account = optarg; break;
        case 't': f.tenant = optarg; break;
        case 'e': f.event = optarg; break;
        case 's': f.since = optarg; break;
        case 'u': f.until = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if ((f.since && !sesame_audit_date_ok(f.since)) || (f.until && !sesame_audit_date_ok(f.until))) {
        fprintf(stderr, "sesame-audit show: a date is written 2026-12-04, 2026-12-04T18:00, "
                        "2026-12-04T18:00:00 or 2026-12-04T18:00:00.123 (UTC)\n");
        return EXIT_USAGE;
    }
    if (optind >= argc) {
        fprintf(stderr, "sesame-audit show: give the journal files\n");
        return EXIT_USAGE;
    }
    bool matched = false;
    for (int i = optind; i < argc; i++) {
        FILE *in = fopen(argv[i], "rb");
        if (in == NULL) {
            fprintf(stderr, "sesame-audit: cannot read %s\n", argv[i]);
            return EXIT_USAGE;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, in)) > 0) {
            size_t len = (size_t)n;
            if (line[len - 1] == '\n')
                len--;
            if (sesame_audit_filter_match(&f, line, len)) {
                fwrite(line, 1, len, stdout);
                fputc('\n', stdout);
                matched = true;
            }
        }
        free(line);
        fclose(in);
    }
    return matched ? 0 : EXIT_BAD;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sesame-audit %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(argc - 1, argv + 1);
    fprintf(stderr, "sesame-audit: unknown command %s (verify or show; --help)\n", cmd);
    return EXIT_USAGE;
}
