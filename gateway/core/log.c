#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

/* error_fd: a descriptor, -1 (off) or JOURNAL_FD. */
#define JOURNAL_FD (-2)

static atomic_int error_fd = 2;
static atomic_int access_fd = -1;
static atomic_int log_level = SESAME_LOG_INFO;

/* The destinations as last opened (for sesame_log_reopen), under open_mu. */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static char *cur_error, *cur_access;

static const char *level_names[] = {"error", "warn", "info", "debug"};

int
sesame_log_parse_level(const char *s, enum sesame_log_level *out)
{
    for (size_t i = 0; i < SESAME_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum sesame_log_level)i;
            return SESAME_OK;
        }
    }
    return SESAME_ERROR;
}

/* True when stderr is the journal stream systemd connected it to
 * (JOURNAL_STREAM is "DEV:INODE" of that stream, inherited by children whose
 * stderr may have been redirected since: compared with fd 2). */
static bool
stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static int
open_dest(const char *dest, int *fd, bool journal_ok, char **err)
{
    if (dest == NULL || strcmp(dest, "off") == 0) {
        *fd = -1;
        return SESAME_OK;
    }
    if (journal_ok && (strcmp(dest, "journal") == 0 ||
                       (strcmp(dest, "stderr") == 0 && stderr_is_journal()))) {
        *fd = JOURNAL_FD;
        return SESAME_OK;
    }
    if (strcmp(dest, "stderr") == 0) {
        *fd = 2;
        return SESAME_OK;
    }
    if (strcmp(dest, "stdout") == 0) {
        *fd = 1;
        return SESAME_OK;
    }
    int f = open(dest, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (f < 0)
        return sesame_err_set(err, "cannot open log file %s: %s", dest, strerror(errno));
    *fd = f;
    return SESAME_OK;
}

static void
close_dest(int fd)
{
    if (fd > 2)
        close(fd);
}

int
sesame_log_open(const char *error_log, const char *access_log, enum sesame_log_level level,
                char **err)
{
    int efd, afd;
    const char *e = error_log ? error_log : "stderr";
    const char *a = access_log ? access_log : "off";
    pthread_mutex_lock(&open_mu);
    if (open_dest(e, &efd, true, err) != SESAME_OK) {
        pthread_mutex_unlock(&open_mu);
        return SESAME_ERROR;
    }
    if (open_dest(a, &afd, false, err) != SESAME_OK) {
        close_dest(efd);
        pthread_mutex_unlock(&open_mu);
        return SESAME_ERROR;
    }
    char *ne = sesame_strdup(e), *na = sesame_strdup(a);
    free(cur_error);
    free(cur_access);
    cur_error = ne;
    cur_access = na;
    int old_e = atomic_exchange(&error_fd, efd);
    int old_a = atomic_exchange(&access_fd, afd);
    atomic_store(&log_level, (int)level);
    /* Another thread may be writing to the old descriptors right now; a write
     * to a closed or reused fd would misdirect a line. Keep old file fds open
     * for a short grace period instead of racing: leak at most one fd pair per
     * reload, closed on the next reload. */
    static int pending[2] = {-1, -1};
    close_dest(pending[0]);
    close_dest(pending[1]);
    pending[0] = old_e != efd ? old_e : -1;
    pending[1] = old_a != afd ? old_a : -1;
    pthread_mutex_unlock(&open_mu);
    return SESAME_OK;
}

int
sesame_log_reopen(char **err)
{
    pthread_mutex_lock(&open_mu);
    char *e = cur_error ? sesame_strdup(cur_error) : NULL;
    char *a = cur_access ? sesame_strdup(cur_access) : NULL;
    pthread_mutex_unlock(&open_mu);
    int rc = sesame_log_open(e, a, (enum sesame_log_level)atomic_load(&log_level), err);
    free(e);
    free(a);
    return rc;
}

bool
sesame_log_same_destinations(const char *error_log, const char *access_log)
{
    pthread_mutex_lock(&open_mu);
    bool same = cur_error != NULL && cur_access != NULL &&
                strcmp(cur_error, error_log ? error_log : "stderr") == 0 &&
                strcmp(cur_access, access_log ? access_log : "off") == 0;
    pthread_mutex_unlock(&open_mu);
    return same;
}

void
sesame_log_set_level(enum sesame_log_level level)
{
    atomic_store(&log_level, (int)level);
}

bool
sesame_log_to_journal(void)
{
    return atomic_load(&error_fd) == JOURNAL_FD;
}

void
sesame_log_close(void)
{
    int e = atomic_exchange(&error_fd, 2);
    if (e >= 0)
        close_dest(e);
    close_dest(atomic_exchange(&access_fd, -1));
    pthread_mutex_lock(&open_mu);
    free(cur_error);
    free(cur_access);
    cur_error = cur_access = NULL;
    pthread_mutex_unlock(&open_mu);
}

bool
sesame_log_enabled(enum sesame_log_level level)
{
    int fd = atomic_load(&error_fd);
    return (int)level <= atomic_load(&log_level) && (fd >= 0 || fd == JOURNAL_FD);
}

static bool
field_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '_' || c == '.';
}

/* Copies into out the word that follows `key` (at the start of msg or after
 * a space) when it is 1..64 field characters ended by ':', ' ' or the end,
 * and holds a digit when need_digit. */
static void
field_after(const char *msg, const char *key, bool need_digit, char out[65])
{
    out[0] = '\0';
    size_t kl = strlen(key);
    for (const char *p = msg; (p = strstr(p, key)) != NULL; p += kl) {
        if (p != msg && p[-1] != ' ')
            continue;
        const char *v = p + kl;
        size_t n = 0;
        bool digit = false;
        while (n <= 64 && field_char(v[n])) {
            digit |= v[n] >= '0' && v[n] <= '9';
            n++;
        }
        if (n == 0 || n > 64 || (v[n] != '\0' && v[n] != ':' && v[n] != ' ') || (need_digit && !digit))
            continue;
        memcpy(out, v, n);
        out[n] = '\0';
        return;
    }
}

void
sesame_log_fields(const char *msg, char request_id[65], char tenant[65])
{
    field_after(msg, "request ", true, request_id);
    field_after(msg, "tenant ", false, tenant);
}

/* Sends one message to the journal. Returns 0, or < 0 when it did not take it. */
static int
journal_send(enum sesame_log_level level, const char *msg)
{
    static const int priority[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char rid[65], tenant[65];
    sesame_log_fields(msg, rid, tenant);
    char prio[16], message[2100], f_rid[80], f_tenant[80];
    struct iovec iov[5];
    int n = 0;
    snprintf(prio, sizeof(prio), "PRIORITY=%d", priority[level]);
    snprintf(message, sizeof(message), "MESSAGE=%s", msg);
    iov[n++] = (struct iovec){prio, strlen(prio)};
    iov[n++] = (struct iovec){(char *)"SYSLOG_IDENTIFIER=sesame", 24};
    iov[n++] = (struct iovec){message, strlen(message)};
    if (rid[0]) {
        snprintf(f_rid, sizeof(f_rid), "REQUEST_ID=%s", rid);
        iov[n++] = (struct iovec){f_rid, strlen(f_rid)};
    }
    if (tenant[0]) {
        snprintf(f_tenant, sizeof(f_tenant), "SESAME_TENANT=%s", tenant);
        iov[n++] = (struct iovec){f_tenant, strlen(f_tenant)};
    }
    return sd_journal_sendv(iov, n);
}

static void
write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += w;
        len -= (size_t)w;
    }
}

void
sesame_log(enum sesame_log_level level, const char *fmt, ...)
{
    if (!sesame_log_enabled(level))
        return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, " [%s] ", level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t end = n + (size_t)m;
    if (end > sizeof(line) - 2)
        end = sizeof(line) - 2;
    for (size_t i = n; i < end; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            line[i] = '?';
    }
    int fd = atomic_load(&error_fd);
    if (fd == JOURNAL_FD) {
        line[end] = '\0';
        if (journal_send(level, line + n) >= 0)
            return;
        fd = 2; /* the journal is gone: stderr rather than nothing */
    }
    line[end++] = '\n';
    write_all(fd, line, end);
}

bool
sesame_log_access_enabled(void)
{
    return atomic_load(&access_fd) >= 0;
}

void
sesame_log_access(const char *json_line, size_t len)
{
    int fd = atomic_load(&access_fd);
    if (fd < 0)
        return;
    char buf[4096];
    if (len > sizeof(buf) - 1)
        len = sizeof(buf) - 1;
    memcpy(buf, json_line, len);
    buf[len++] = '\n';
    write_all(fd, buf, len);
}

void
sesame_log_json_string(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
    size_t o = *len;
    if (o + 2 > cap)
        return;
    buf[o++] = '"';
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            /* Non-ASCII is escaped byte-wise: the log stays valid JSON even
             * for invalid UTF-8 coming from a client. */
            o += (size_t)snprintf(buf + o, cap - o, "\\u%04x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    *len = o;
}
