#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int error_fd = 2;
static atomic_int access_fd = -1;
static atomic_int log_level = SESAME_LOG_INFO;

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

static int
open_dest(const char *dest, int *fd, char **err)
{
    if (dest == NULL || strcmp(dest, "off") == 0) {
        *fd = -1;
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
    if (open_dest(error_log ? error_log : "stderr", &efd, err) != SESAME_OK)
        return SESAME_ERROR;
    if (open_dest(access_log, &afd, err) != SESAME_OK) {
        close_dest(efd);
        return SESAME_ERROR;
    }
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
    return SESAME_OK;
}

void
sesame_log_close(void)
{
    close_dest(atomic_exchange(&error_fd, 2));
    close_dest(atomic_exchange(&access_fd, -1));
}

bool
sesame_log_enabled(enum sesame_log_level level)
{
    return (int)level <= atomic_load(&log_level) && atomic_load(&error_fd) >= 0;
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
    line[end++] = '\n';
    write_all(atomic_load(&error_fd), line, end);
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
