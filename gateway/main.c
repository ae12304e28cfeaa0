/*
 * main.c - the sesame daemon: command line, configuration check, signals.
 *
 *   sesame [-c FILE]        run in the foreground (systemd, containers)
 *   sesame -t [-c FILE]     check the configuration and exit
 *
 * Signals: SIGTERM/SIGINT drain in-flight requests then exit; SIGHUP reloads
 * the configuration (a bad one is refused and the running one kept) and
 * reopens the log files.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config/config.h"
#include "core/log.h"
#include "core/worker.h"
#include "gate/flow.h"
#include "gate/runtime.h"
#include "oidc/provider.h"

static const char *conf_path = SESAME_CONF_DEFAULT_PATH;
static struct sesame_conf *running;

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: sesame [-t] [-c FILE]\n"
            "  -c FILE  configuration file (default %s)\n"
            "  -t       check the configuration, print every problem as FILE:LINE: key: message,\n"
            "           and exit (0 when valid)\n"
            "  -h       this help\n"
            "  -v       version\n",
            SESAME_CONF_DEFAULT_PATH);
}

/* Loads the configuration and builds its runtime (pages, plugins, keys).
 * Returns NULL with every problem in *errors. */
static struct sesame_conf *
load_all(const char *path, char **errors)
{
    struct sesame_conf *c = sesame_conf_load(path, errors);
    if (c == NULL)
        return NULL;
    if (sesame_runtime_attach(c, errors) != SESAME_OK) {
        sesame_conf_unref(c);
        return NULL;
    }
    return c;
}

static void
log_errors(const char *errors)
{
    const char *p = errors;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        sesame_log_error("%.*s", n, p);
        p = nl ? nl + 1 : NULL;
    }
}

static bool
same_listeners(const struct sesame_conf *a, const struct sesame_conf *b)
{
    if (a->server.nlisten != b->server.nlisten || a->server.workers != b->server.workers)
        return false;
    for (size_t i = 0; i < a->server.nlisten; i++) {
        const struct sesame_listen *x = &a->server.listen[i], *y = &b->server.listen[i];
        if (x->tls != y->tls || x->addrlen != y->addrlen || memcmp(&x->addr, &y->addr, x->addrlen) != 0)
            return false;
    }
    return true;
}

static void
on_reload(evutil_socket_t sig, short what, void *arg)
{
    sesame_log_info("SIGHUP: reloading %s", conf_path);
    char *errors = NULL;
    struct sesame_conf *c = load_all(conf_path, &errors);
    if (c == NULL) {
        sesame_log_error("reload refused, the running configuration stays in use:");
        log_errors(errors);
        free(errors);
        return;
    }
    if (!same_listeners(running, c))
        sesame_log_warn("reload: listen addresses and workers change only at restart");
    char *err = NULL;
    if (sesame_log_open(c->server.error_log, c->server.access_log, c->server.log_level, &err) != SESAME_OK) {
        sesame_log_error("reload: %s (keeping the current log files)", err);
        free(err);
    }
    sesame_workers_publish_conf(c);
    sesame_conf_unref(running);
    running = c;
    sesame_log_info("configuration reloaded");
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    sesame_log_info("signal %d: finishing in-flight requests, then exiting", (int)sig);
    event_base_loopbreak(base);
}

static int
write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        sesame_log_error("cannot write pid_file %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    return 0;
}

int
main(int argc, char **argv)
{
    bool check_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:thv")) != -1) {
        switch (opt) {
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("sesame %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    evthread_use_pthreads();
    char *errors = NULL;
    running = load_all(conf_path, &errors);
    if (running == NULL) {
        fputs(errors ? errors : "configuration invalid\n", stderr);
        free(errors);
        return 1;
    }
    if (check_only) {
        printf("%s: configuration OK\n", conf_path);
        sesame_conf_unref(running);
        return 0;
    }
    char *err = NULL;
    if (sesame_log_open(running->server.error_log, running->server.access_log,
                        running->server.log_level, &err) != SESAME_OK) {
        fprintf(stderr, "%s\n", err);
        free(err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Block the handled signals in the worker threads: only the main loop
     * receives them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    if (sesame_flow_start(running, &err) != SESAME_OK ||
        sesame_workers_start(running, running->server.workers, &err) != SESAME_OK) {
        sesame_log_error("%s", err);
        fprintf(stderr, "%s\n", err);
        free(err);
        return 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (running->server.pid_file)
        write_pid_file(running->server.pid_file);

    struct event_base *base = event_base_new();
    struct event *ev_term = evsignal_new(base, SIGTERM, on_stop, base);
    struct event *ev_int = evsignal_new(base, SIGINT, on_stop, base);
    struct event *ev_hup = evsignal_new(base, SIGHUP, on_reload, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);
    for (size_t i = 0; i < running->server.nlisten; i++)
        sesame_log_info("listening on %s%s", running->server.listen[i].text,
                        running->server.listen[i].tls ? " (tls)" : "");
    sesame_log_info("sesame %s started with %d worker(s)", PACKAGE_VERSION, running->server.workers);
    event_base_dispatch(base);

    sesame_workers_stop();
    sesame_flow_stop();
    sesame_provider_registry_clear();
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    event_base_free(base);
    if (running->server.pid_file)
        unlink(running->server.pid_file);
    sesame_log_info("stopped");
    sesame_conf_unref(running);
    sesame_log_close();
    return 0;
}
