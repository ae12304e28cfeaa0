/*
 * log.h - the error log and the access log.
 *
 * Both are line-oriented and written with one write(2) per line, so lines
 * from several worker threads never interleave. Destinations: a file path
 * (opened in append mode), "stderr", or "off". Nothing logged here may carry a
 * cookie, a token, a secret or a query string: callers pass only what an
 * audit needs.
 *
 * The journal. With error_log = journal, or when the process runs under
 * systemd with the default error_log = stderr (JOURNAL_STREAM names the
 * stream stderr is connected to), error-log messages are sent to journald
 * with sd_journal_send: PRIORITY (error 3, warn 4, info 6, debug 7),
 * SYSLOG_IDENTIFIER=sesame, MESSAGE, and, where the message names them,
 * REQUEST_ID ("request ID" followed by ':' or a space, the convention of
 * every per-request message) and SESAME_TENANT ("tenant NAME"). A message
 * the journal does not take is written to stderr instead.
 *
 * Log files are reopened by sesame_log_reopen (SIGUSR1, after logrotate
 * renamed them) without reading the configuration.
 */
#ifndef SESAME_CORE_LOG_H
#define SESAME_CORE_LOG_H

#include "core/common.h"

enum sesame_log_level {
    SESAME_LOG_ERROR = 0,
    SESAME_LOG_WARN = 1,
    SESAME_LOG_INFO = 2,
    SESAME_LOG_DEBUG = 3,
};

/* Parses "error", "warn", "info", "debug". Returns SESAME_OK or SESAME_ERROR. */
int sesame_log_parse_level(const char *s, enum sesame_log_level *out);

/* Opens the destinations: error_log is a path, "stderr", "journal" or "off"
 * (NULL: stderr); access_log a path, "stderr", "stdout" or "off". May be
 * called again with other destinations; the old descriptors are closed once
 * the new ones are open. On failure the old destinations stay in use and
 * *err says why. */
int sesame_log_open(const char *error_log, const char *access_log, enum sesame_log_level level,
                    char **err);

/* Reopens the destinations last opened (same paths: after a rotation the
 * files are created anew). On failure the old descriptors stay and *err
 * says why. */
int sesame_log_reopen(char **err);

/* True when error_log, access_log are the destinations currently open (the
 * strings compared; NULL error_log is "stderr", NULL access_log "off"). */
bool sesame_log_same_destinations(const char *error_log, const char *access_log);

/* Changes the level without reopening anything. */
void sesame_log_set_level(enum sesame_log_level level);

/* True when error-log messages go to the journal. */
bool sesame_log_to_journal(void);

/* The journal fields of a message (see above): copies the request id and
 * the tenant named in msg into request_id and tenant (each "" when absent;
 * at most 64 characters of [A-Za-z0-9._-], a request id holding a digit). */
void sesame_log_fields(const char *msg, char request_id[65], char tenant[65]);

/* Closes both destinations (falls back to stderr for errors). */
void sesame_log_close(void);

bool sesame_log_enabled(enum sesame_log_level level);

/* Writes one error-log line: "2026-11-28T11:00:00Z [level] message". The
 * message is sanitised: control characters are replaced by '?'. */
void sesame_log(enum sesame_log_level level, const char *fmt, ...) SESAME_PRINTF(2, 3);

#define sesame_log_error(...) sesame_log(SESAME_LOG_ERROR, __VA_ARGS__)
#define sesame_log_warn(...) sesame_log(SESAME_LOG_WARN, __VA_ARGS__)
#define sesame_log_info(...) sesame_log(SESAME_LOG_INFO, __VA_ARGS__)
#define sesame_log_debug(...)                                                                      \
    do {                                                                                           \
        if (sesame_log_enabled(SESAME_LOG_DEBUG))                                                  \
            sesame_log(SESAME_LOG_DEBUG, __VA_ARGS__);                                             \
    } while (0)

/* Writes one access-log line (already JSON, without the newline). */
void sesame_log_access(const char *json_line, size_t len);
bool sesame_log_access_enabled(void);

/* Appends to buf (capacity cap, current length *len) the JSON string literal
 * for s (n bytes), with quotes, escaping quotes, backslashes, control and
 * non-UTF-8 bytes. Truncates silently at the capacity. */
void sesame_log_json_string(char *buf, size_t cap, size_t *len, const char *s, size_t n);

#endif
