#include "http/claim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/util.h"

static int *locks;
static size_t nlocks;

/* "ADDRESS:PORT" of a socket address, canonical (the lock's name). */
static void
address_text(const struct sockaddr_storage *a, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        port = ntohs(s->sin_port);
        snprintf(out, cap, "%s:%d", ip, port);
    } else {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        port = ntohs(s->sin6_port);
        snprintf(out, cap, "[%s]:%d", ip, port);
    }
}

static int
port_of(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)a)->sin_port)
                                   : ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

/* The abstract socket "\0sesame-listen:ADDRESS:PORT", bound. Returns the
 * descriptor, or -1 with errno. */
static int
take_lock(const char *text)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    int n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "sesame-listen:%s", text);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (bind(fd, (struct sockaddr *)&un, len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Binds the address without SO_REUSEPORT, then closes. Returns 0 or -1 with
 * errno (EADDRINUSE: something listens there). */
static int
probe(const struct sesame_listen *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = bind(fd, (const struct sockaddr *)&l->addr, l->addrlen);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int
claim_one(const char *key, const struct sesame_listen *l, char **err)
{
    if (port_of(&l->addr) == 0)
        return SESAME_OK; /* an ephemeral port is nobody else's */
    char text[INET6_ADDRSTRLEN + 16];
    address_text(&l->addr, text, sizeof(text));
    int fd = take_lock(text);
    if (fd < 0) {
        if (errno == EADDRINUSE)
            return sesame_err_set(err,
                                  "%s = %s: another sesame already serves %s; refusing to start a "
                                  "second instance on it (stop the other one first)",
                                  key, l->text, text);
        /* no AF_UNIX (a sandbox): the probe alone decides */
    } else {
        locks = sesame_realloc(locks, (nlocks + 1) * sizeof(*locks));
        locks[nlocks++] = fd;
    }
    if (probe(l) != 0) {
        if (errno == EADDRINUSE)
            return sesame_err_set(err,
                                  "%s = %s: the address is already in use by another process "
                                  "(another sesame, or a program listening on %s); refusing to "
                                  "share it",
                                  key, l->text, text);
        return sesame_err_set(err, "%s = %s: cannot listen: %s", key, l->text, strerror(errno));
    }
    return SESAME_OK;
}

int
sesame_claim_addresses(const struct sesame_conf *conf, char **err)
{
    for (size_t i = 0; i < conf->server.nlisten; i++) {
        /* the same address written twice in the file is one claim */
        bool again = false;
        for (size_t j = 0; j < i && !again; j++)
            again = conf->server.listen[j].addrlen == conf->server.listen[i].addrlen &&
                    memcmp(&conf->server.listen[j].addr, &conf->server.listen[i].addr,
                           conf->server.listen[i].addrlen) == 0;
        if (!again && claim_one("listen", &conf->server.listen[i], err) != SESAME_OK)
            goto fail;
    }
    if (conf->server.metrics_listen &&
        claim_one("metrics_listen", conf->server.metrics_listen, err) != SESAME_OK)
        goto fail;
    return SESAME_OK;
fail:
    sesame_claim_release();
    return SESAME_ERROR;
}

void
sesame_claim_release(void)
{
    for (size_t i = 0; i < nlocks; i++)
        close(locks[i]);
    free(locks);
    locks = NULL;
    nlocks = 0;
}
