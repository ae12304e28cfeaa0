/*
 * systemd.h - the service manager's notifications (sd_notify(3) through
 * libsystemd), for `Type=notify` (conf/sesame.service).
 *
 * Every call is a no-op when the process was not started by systemd (no
 * NOTIFY_SOCKET in the environment), so the daemon behaves the same by hand,
 * in a container or under a test. Messages sent:
 *   READY=1           once the workers listen, and after each reload
 *   RELOADING=1       with MONOTONIC_USEC, when a SIGHUP reload starts
 *   STOPPING=1        when SIGTERM/SIGINT starts the drain
 *   WATCHDOG=1        every half WatchdogSec, while every worker's event loop
 *                     answers (sesame_systemd_watchdog_usec gives the period)
 *   STATUS=...        a line for `systemctl status`
 */
#ifndef SESAME_CORE_SYSTEMD_H
#define SESAME_CORE_SYSTEMD_H

#include "core/common.h"

/* READY=1 with STATUS=status (may be NULL). */
void sesame_systemd_ready(const char *status);

/* RELOADING=1 and MONOTONIC_USEC=<CLOCK_MONOTONIC now>. */
void sesame_systemd_reloading(void);

/* STOPPING=1 with STATUS=status (may be NULL). */
void sesame_systemd_stopping(const char *status);

/* STATUS=status alone. */
void sesame_systemd_status(const char *status);

/* The watchdog period asked by systemd (WATCHDOG_USEC, for this process),
 * in microseconds; 0 when there is none. */
uint64_t sesame_systemd_watchdog_usec(void);

/* WATCHDOG=1. */
void sesame_systemd_watchdog(void);

#endif
