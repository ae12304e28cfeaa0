/*
 * main.c - the sesame daemon: command line, configuration check, signals.
 *
 *   sesame [-c FILE]        run in the foreground (systemd, containers)
 *   sesame -t [-c FILE]     check the configuration and exit
 *
 * Signals: SIGTERM/SIGINT drain in-flight requests then exit; SIGHUP reloads
 * the configuration only (a bad one is refused and the running one kept; log
 * files are opened anew only when their paths changed); SIGUSR1 reopens the
 * log files only (logrotate), never reading the configuration.
 *
 * Under systemd (Type=notify, core/systemd.h): READY=1 once the workers
 * listen, RELOADING=1 then READY=1 around a reload, STOPPING=1 at SIGTERM,
 * WATCHDOG=1 every half WatchdogSec while every worker's loop runs.
 * A listen address another process already serves is refused at start
 * (http/claim.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "audit/audit.h"
#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/systemd.h"
#include "core/util.h"
#include "core/worker.h"
#include "gate/flow.h"
#include "gate/ready.h"
#include "gate/runtime.h"
#include "http/claim.h"
#include "http/ops.h"
#include "oidc/provider.h"

static const char *conf_path = SESAME_CONF_DEFAULT_PATH;
static struct sesame_conf *running;
static struct sesame_ready *ready;
static uint64_t watchdog_period_ms;
static bool watchdog_stalled;

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: sesame [-t] [-c FILE]\n"
            "       sesame -V | -h\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "  -t, --test         check the configuration, print every problem as\n"
            "                     FILE:LINE: key: message, and exit (0 when valid)\n"
            "  -V, -v, --version  print \"sesame VERSION\" and exit\n"
            "  -h, --help         this help\n",
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
        if (x->tls != y->tls || x->redirect != y->redirect || x->addrlen != y->addrlen ||
            memcmp(&x->addr, &y->addr, x->addrlen) != 0)
            return false;
    }
    return true;
}

static bool
same_metrics_listen(const struct sesame_conf *a, const struct sesame_conf *b)
{
    const struct sesame_listen *x = a->server.metrics_listen, *y = b->server.metrics_listen;
    if (x == NULL || y == NULL)
        return x == y;
    return x->addrlen == y->addrlen && memcmp(&x->addr, &y->addr, x->addrlen) == 0;
}

static void
on_reload(evutil_socket_t sig, short what, void *arg)
{
    sesame_systemd_reloading();
    sesame_log_info("SIGHUP: reloading %s", conf_path);
    char *errors = NULL;
    struct sesame_conf *c = load_all(conf_path, &errors);
    if (c == NULL) {
        sesame_log_error("reload refused, the running configuration stays in use:");
        log_errors(errors);
        sesame_audit_config_refused(conf_path, errors, "reload");
        free(errors);
        sesame_systemd_ready("reload refused: the running configuration stays in use");
        return;
    }
    if (!same_listeners(running, c) || !same_metrics_listen(running, c))
        sesame_log_warn("reload: listen addresses, metrics_listen and workers change only at restart");
    /* A reload is not a log rotation (SIGUSR1): the files are opened again
     * only when the configuration names other ones. */
    if (sesame_log_same_destinations(c->server.error_log, c->server.access_log)) {
        sesame_log_set_level(c->server.log_level);
    } else {
        char *err = NULL;
        if (sesame_log_open(c->server.error_log, c->server.access_log, c->server.log_level, &err) !=
            SESAME_OK) {
            sesame_log_error("reload: %s (keeping the current log files)", err);
            free(err);
        }
    }
    sesame_workers_publish_conf(c);
    sesame_conf_unref(running);
    running = c;
    sesame_ready_set_conf(ready, c);
    sesame_audit_config_loaded(c, "reload");
    sesame_log_info("configuration reloaded");
    sesame_systemd_ready("configuration reloaded");
}

static void
on_reopen(evutil_socket_t sig, short what, void *arg)
{
    char *err = NULL;
    sesame_audit_reopen(); /* the audit journal: its writer ends the rotated file */
    if (sesame_log_reopen(&err) != SESAME_OK) {
        sesame_log_error("SIGUSR1: %s (keeping the current log files)", err);
        free(err);
        return;
    }
    sesame_log_info("SIGUSR1: log files reopened");
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    sesame_systemd_stopping("finishing in-flight requests");
    sesame_log_info("signal %d: finishing in-flight requests, then exiting", (int)sig);
    /* the listeners close now: another instance may claim the addresses */
    sesame_claim_release();
    event_base_loopbreak(base);
}

/* WATCHDOG=1 only while every worker's event loop keeps turning. */
static void
on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    int stalled = -1;
    if (!sesame_workers_alive(watchdog_period_ms, &stalled)) {
        if (!watchdog_stalled)
            sesame_log_error("watchdog: worker %d has not run its event loop for %llu ms: not "
                             "telling systemd it is alive",
                             stalled, (unsigned long long)watchdog_period_ms);
        watchdog_stalled = true;
        return;
    }
    watchdog_stalled = false;
    sesame_systemd_watchdog();
}

static void
ops_metrics(struct evbuffer *body, void *arg)
{
    sesame_metrics_render(body);
}

static int
ops_ready(struct evbuffer *body, void *arg)
{
    return sesame_ready_check(running, body);
}

/* sesame_ready, computed at scrape time on the main thread. */
static double
ready_gauge(void *arg)
{
    return sesame_ready_check(running, NULL) == 200 ? 1 : 0;
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
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:thvV", longopts, NULL)) != -1) {
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
        case 'V':
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
    if (sesame_claim_addresses(running, &err) != SESAME_OK) {
        sesame_log_error("%s", err);
        fprintf(stderr, "sesame: %s\n", err);
        free(err);
        return 1;
    }
    if (sesame_audit_start(running, &err) != SESAME_OK) {
        sesame_log_error("%s", err);
        fprintf(stderr, "sesame: %s\n", err);
        free(err);
        return 1;
    }
    sesame_audit_config_loaded(running, "start");
    signal(SIGPIPE, SIG_IGN);
    /* Block the handled signals in the worker threads: only the main loop
     * receives them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
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
    struct sesame_ops *ops = NULL;
    ready = sesame_ready_new(base, &err);
    if (ready != NULL && running->server.metrics_listen != NULL) {
        struct sesame_ops_handlers h = {ops_metrics, ops_ready, NULL};
        ops = sesame_ops_new(base, running->server.metrics_listen, &h, &err);
    }
    if (ready == NULL || (running->server.metrics_listen != NULL && ops == NULL)) {
        sesame_log_error("%s", err);
        fprintf(stderr, "sesame: %s\n", err);
        free(err);
        sesame_workers_stop();
        sesame_flow_stop();
        sesame_ready_free(ready);
        return 1;
    }
    sesame_ready_set_conf(ready, running);
    sesame_metrics_gauge_fn_set(SESAME_M_READY, ready_gauge, NULL);
    struct event *ev_term = evsignal_new(base, SIGTERM, on_stop, base);
    struct event *ev_int = evsignal_new(base, SIGINT, on_stop, base);
    struct event *ev_hup = evsignal_new(base, SIGHUP, on_reload, NULL);
    struct event *ev_usr1 = evsignal_new(base, SIGUSR1, on_reopen, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);
    event_add(ev_usr1, NULL);
    struct event *ev_watchdog = NULL;
    uint64_t wd_usec = sesame_systemd_watchdog_usec();
    if (wd_usec > 0) {
        watchdog_period_ms = wd_usec / 2000 ? wd_usec / 2000 : 1;
        sesame_workers_heartbeat_start(watchdog_period_ms / 2 ? watchdog_period_ms / 2 : 1);
        ev_watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
        struct timeval tv = sesame_util_timeval_ms(watchdog_period_ms);
        event_add(ev_watchdog, &tv);
    }
    for (size_t i = 0; i < running->server.nlisten; i++)
        sesame_log_info("listening on %s%s", running->server.listen[i].text,
                        running->server.listen[i].tls        ? " (tls)"
                        : running->server.listen[i].redirect ? " (redirect to https)"
                                                             : "");
    if (running->server.metrics_listen)
        sesame_log_info("metrics and readiness on http://%s/metrics and /ready",
                        running->server.metrics_listen->text);
    sesame_log_info("sesame %s started with %d worker(s)", PACKAGE_VERSION, running->server.workers);
    char status[128];
    snprintf(status, sizeof(status), "serving with %d worker(s)", running->server.workers);
    sesame_systemd_ready(status);
    if (wd_usec > 0)
        sesame_systemd_watchdog();
    event_base_dispatch(base);

    sesame_ops_free(ops);
    sesame_workers_stop();
    sesame_flow_stop();
    sesame_audit_stop(); /* after the workers: their last events are written */
    sesame_metrics_gauge_fn_set(SESAME_M_READY, NULL, NULL);
    sesame_ready_free(ready);
    ready = NULL;
    sesame_provider_registry_clear();
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    event_free(ev_usr1);
    if (ev_watchdog)
        event_free(ev_watchdog);
    event_base_free(base);
    if (running->server.pid_file)
        unlink(running->server.pid_file);
    sesame_log_info("stopped");
    sesame_conf_unref(running);
    sesame_log_close();
    return 0;
}
