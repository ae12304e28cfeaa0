/*
 * audit.h - the audit trail: an append-only, tamper-evident journal of JSON
 * lines recording who signed in, which account was created, linked,
 * unlinked or erased and by whom, which sessions were revoked, and which
 * configuration was loaded. One journal per daemon (`[server] audit_log`),
 * shared with the administration tools (sesame-accounts), verified offline
 * by `sesame-audit verify` with only the public key.
 *
 * Line format: one JSON object per line, its fields always in this order,
 * each left out when it does not apply:
 *
 *   {"seq":N,"time":"2026-12-04T18:00:00.123Z","event":"signin","tenant":"ville-a",
 *    "account":"...","provider":"franceconnect","outcome":"success"|"refused",
 *    "reason":"...","operator":"...","client":"...","detail":{...},"dropped":N,
 *    "sig":"...","prev":"<64 hex>","hash":"<64 hex>"}
 *
 *   seq      1, 2, 3... one per line, continued across files (rotation);
 *   time     when the event happened (UTC, milliseconds); lines are in the
 *            order they were written, which may differ by a few
 *            milliseconds between the daemon and a tool;
 *   hash     SHA-256 (lower-case hex) of the line's bytes without its hash
 *            field: the bytes up to `,"hash":` followed by `}`;
 *   prev     the hash of the line before: the previous line of the file or,
 *            on the first line of a file, the last line of the previous
 *            file; 64 zeros on the very first line of a journal;
 *   sig      on checkpoint lines only: the signature with the audit key of
 *            the line's bytes without its sig and hash fields, so of its
 *            seq, time, key id and prev (the hash of everything before).
 *            ES256: base64url of r||s (64 bytes); Ed25519: base64url of the
 *            64-byte signature;
 *   dropped  events lost just before this line (queue full, or the file
 *            could not be written): never lost silently.
 *
 * Events (reason and detail values are words from fixed sets):
 *   signin            outcome success, or refused with a reason: state_expired,
 *                     state_invalid, browser_mismatch, tenant_mismatch,
 *                     callback_malformed, iss_mismatch, provider_error,
 *                     cancelled, provider_unavailable, code_rejected,
 *                     response_invalid, token_invalid, acr_too_low,
 *                     userinfo_invalid, account_denied, no_account,
 *                     account_error, store_unavailable; detail acr, error
 *   account_created   a plugin created the account at sign-in, or an import
 *   account_linked    an identity linked to an existing account (pivot
 *                     match at sign-in, or sesame-accounts link)
 *   account_unlinked  sesame-accounts unlink (detail links, sessions)
 *   account_erased    erasure (detail sessions)
 *   sessions_revoked  every session of an account ended (detail sessions)
 *   logout            a citizen signed out
 *   config_loaded     at start and at each accepted reload (detail file,
 *                     trigger start|reload, tenants, routes)
 *   config_refused    a reload refused (detail file, errors: their count)
 *   accounts_cli      every sesame-accounts command, with operator
 *                     ($SUDO_USER, else the Unix user), detail action, exit
 *   checkpoint        signed (detail alg, kid: the key id)
 *   journal_opened    the first line of every file, and at each daemon
 *                     start (detail program, version, pid, alg, kid)
 * Pseudonymous: an account id and a provider name, never a name, a birth
 * date, a token, a cookie; the client address only for tenants with
 * audit_client_address = on.
 *
 * Tamper evidence: changing, removing, reordering or inserting a line
 * breaks the chain at that line; an attacker who rewrites lines and
 * recomputes the chain cannot sign the next checkpoint. A checkpoint is
 * written every `audit_checkpoint` lines (a line count N: the line whose seq
 * is a multiple of N is a checkpoint) or after that much time when lines
 * are pending (a duration), when a file is rotated and when a writer closes
 * the journal. The public key is published as FILE.pub (PEM); a previous key
 * is kept as FILE.pub.KID when the key changes.
 *
 * Several processes append (the daemon, sesame-accounts): each append takes
 * an exclusive flock on FILE.head (a small file holding the last seq and
 * hash, whose name logrotate leaves alone) and on the journal, reads the
 * last line's seq and hash from the end of the file (never an in-memory
 * copy), writes, records the new head, unlocks. A journal found empty (just
 * rotated) starts with journal_opened chained to FILE.head. A writer holding
 * the previous file (renamed by logrotate) ends it with a checkpoint when it
 * is still the end of the chain. So the chain stays right whoever writes.
 *
 * Threads: the daemon's workers push events (sesame_audit_event) into a
 * bounded queue (a mutex held for the push only) drained by one writer
 * thread; a full queue drops the event, counts it, logs an error (rate
 * limited) and writes the count into the next line. Nothing here ever
 * blocks a worker loop. Tools write synchronously.
 *
 * Return convention: core/common.h.
 */
#ifndef SESAME_AUDIT_AUDIT_H
#define SESAME_AUDIT_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

struct sesame_conf;

#define SESAME_AUDIT_MAX_DETAIL 16     /* detail entries per event */
#define SESAME_AUDIT_MAX_VALUE 256     /* bytes of a field's value, longer ones are cut */
#define SESAME_AUDIT_QUEUE 4096        /* events the daemon's queue holds */
#define SESAME_AUDIT_HASH_HEX 64

/* One entry of an event's detail: a string (str != NULL) or a number. */
struct sesame_audit_kv {
    const char *key;   /* [a-z_]+ */
    const char *str;
    long long num;
};

/* An event. Every string is borrowed for the duration of the call; NULL
 * leaves the field out. */
struct sesame_audit_event {
    const char *event;    /* required */
    const char *tenant;
    const char *account;
    const char *provider;
    const char *outcome;  /* "success" | "refused" */
    const char *reason;
    const char *operator;
    const char *client;
    const struct sesame_audit_kv *detail;
    size_t ndetail;
};

/* ---- Process-wide journal ----------------------------------------------- */

/* Daemon: opens conf's journal (nothing when audit_log is off), publishes
 * FILE.pub, writes journal_opened and starts the writer thread (which
 * blocks every signal). Returns SESAME_OK or SESAME_ERROR with *err (the
 * daemon then refuses to start). Call once, before the workers start. */
int sesame_audit_start(const struct sesame_conf *conf, char **err);

/* Tools: the same journal written synchronously by the calling thread,
 * `program` named in the lines it writes (journal_opened only when it
 * starts a file). Nothing when audit_log is off. */
int sesame_audit_open_tool(const struct sesame_conf *conf, const char *program, char **err);

/* True when a journal is open (callers may skip building an event). */
bool sesame_audit_enabled(void);

/* Records an event, from any thread. Daemon: queued, never blocks;
 * SESAME_ERROR when it was dropped (queue full). Tools: written at once;
 * SESAME_ERROR when it could not be written (logged). SESAME_OK when no
 * journal is open. */
int sesame_audit_event(const struct sesame_audit_event *ev);

/* SIGUSR1 (after logrotate renamed the file): the writer ends the previous
 * file with a checkpoint and starts the new one with journal_opened at once
 * rather than at the next event (any writer notices a rename by itself), and
 * signs the lines pending, so that the journal verifies now. Returns at
 * once. */
void sesame_audit_reopen(void);

/* Writes what is queued, a final checkpoint, and closes (both modes). */
void sesame_audit_stop(void);

/* config_loaded for conf (trigger "start" or "reload"); on a reload, warns
 * that the audit_* settings of [server] change only at restart when they
 * differ from the running ones. */
void sesame_audit_config_loaded(const struct sesame_conf *conf, const char *trigger);

/* config_refused: `errors` holds one problem per line. */
void sesame_audit_config_refused(const char *path, const char *errors, const char *trigger);

/* The operator of a tool: $SUDO_USER when set (and a plain name), else the
 * name of the real user, else "uid:N". Static storage. */
const char *sesame_audit_operator(void);

/* ---- Keys ------------------------------------------------------------------ */

struct sesame_audit_key;

/* Loads an EC P-256 (ES256) or Ed25519 private key (PEM, not encrypted).
 * Returns NULL with *err for anything else. */
struct sesame_audit_key *sesame_audit_key_load_private(const char *path, char **err);
/* Loads a public key (PEM "PUBLIC KEY", or a private key's public half). */
struct sesame_audit_key *sesame_audit_key_load_public(const char *path, char **err);
/* Checks that path holds a usable audit private key (config load). */
int sesame_audit_key_check(const char *path, char **err);
/* "ES256" or "EdDSA". */
const char *sesame_audit_key_alg(const struct sesame_audit_key *k);
/* The key id: the first 16 bytes, in hex, of the SHA-256 of the public
 * key's DER SubjectPublicKeyInfo. */
const char *sesame_audit_key_id(const struct sesame_audit_key *k);
/* The public key as PEM (malloc'd). */
char *sesame_audit_key_public_pem(const struct sesame_audit_key *k);
/* Signs msg: base64url signature (malloc'd), NULL on failure. */
char *sesame_audit_key_sign(const struct sesame_audit_key *k, const void *msg, size_t n);
bool sesame_audit_key_verify(const struct sesame_audit_key *k, const void *msg, size_t n,
                             const char *sig, size_t siglen);
void sesame_audit_key_free(struct sesame_audit_key *k);

/* ---- One journal (the writer's work; used directly by the unit tests) ---- */

struct sesame_audit_settings {
    const char *path;
    const char *key_file;
    uint64_t checkpoint_lines;  /* N > 0: every N lines; 0: by time */
    uint64_t checkpoint_ms;     /* with checkpoint_lines 0 */
    bool syslog;                /* also send each line to syslog (LOG_AUTHPRIV) */
    const char *program;        /* named in journal_opened */
};

struct sesame_audit_journal;

/* Opens the journal (creating FILE and FILE.head, mode 0640), loads the key,
 * publishes FILE.pub. With `announce`, writes journal_opened now; else only
 * when the file is empty. */
struct sesame_audit_journal *sesame_audit_journal_open(const struct sesame_audit_settings *s,
                                                       bool announce, char **err);

/* Renders an event into the body of a line (the fields from time to detail,
 * without braces). NULL when ev->event is missing. */
char *sesame_audit_render(const struct sesame_audit_event *ev, int64_t time_ms);

/* Appends n rendered bodies under the locks, with the checkpoints due, the
 * first one carrying `dropped` when not 0. *written: how many were written
 * (all of them on SESAME_OK). */
int sesame_audit_journal_append(struct sesame_audit_journal *j, char *const *bodies, size_t n,
                                uint64_t dropped, size_t *written, char **err);

/* Writes a checkpoint unless the last line is one. */
int sesame_audit_journal_checkpoint(struct sesame_audit_journal *j, char **err);

/* Checks now whether the file was rotated (see sesame_audit_reopen). */
int sesame_audit_journal_reopen(struct sesame_audit_journal *j, char **err);

/* Lines this process wrote since its last checkpoint, and when that
 * checkpoint was (monotonic ms): the writer's time-based checkpoints. */
uint64_t sesame_audit_journal_pending(const struct sesame_audit_journal *j, uint64_t *last_ms);

/* A final checkpoint (when lines are pending), then closes. Accepts NULL. */
void sesame_audit_journal_close(struct sesame_audit_journal *j);

/* Test hook: starts the daemon mode from settings with a queue of `queue`
 * events (sesame_audit_start uses SESAME_AUDIT_QUEUE). */
int sesame_audit_start_settings(const struct sesame_audit_settings *s, size_t queue, char **err);

/* ---- Verification and search (sesame-audit) ------------------------------ */

struct sesame_audit_verify {
    char *error;          /* the first problem, "FILE:LINE: reason" (malloc'd), NULL: none */
    size_t bad_file;      /* index of its file */
    uint64_t bad_line;    /* its line, 1-based (0: the whole file) */
    uint64_t lines;       /* lines read */
    uint64_t checkpoints; /* signatures checked */
    uint64_t first_seq, last_seq;
    uint64_t dropped;     /* sum of the dropped fields */
    bool from_start;      /* the first line is the start of the journal (prev zeros) */
    char last_checkpoint_time[32];
};

/* Verifies files, in the order given (rotation: oldest first), with the
 * public keys `keys` (PEM files; a checkpoint names its key by id). Returns
 * SESAME_OK when the chain and every signature hold and the last line is a
 * checkpoint; SESAME_ERROR with out->error otherwise (including "unsigned":
 * lines after the last valid checkpoint). out is zeroed first; free with
 * sesame_audit_verify_clear. */
int sesame_audit_verify_files(const char *const *files, size_t nfiles, const char *const *keys,
                              size_t nkeys, struct sesame_audit_verify *out);
void sesame_audit_verify_clear(struct sesame_audit_verify *v);

/* What `sesame-audit show` selects; NULL: any. since/until are dates
 * (2026-12-04, 2026-12-04T18:00, ...T18:00:00, ...T18:00:00.123, with an
 * optional Z, UTC) compared at their own precision, both inclusive. */
struct sesame_audit_filter {
    const char *account;
    const char *tenant;
    const char *event;
    const char *since;
    const char *until;
};

/* True when s is such a date. */
bool sesame_audit_date_ok(const char *s);

/* True when the journal line (without its newline) matches f. */
bool sesame_audit_filter_match(const struct sesame_audit_filter *f, const char *line, size_t len);

#endif
