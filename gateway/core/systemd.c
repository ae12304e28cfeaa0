#include "core/systemd.h"

#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

static void
notify_with_status(const char *state, const char *status)
{
    if (status == NULL) {
        sd_notify(0, state);
        return;
    }
    sd_notifyf(0, "%s\nSTATUS=%s", state, status);
}

void
sesame_systemd_ready(const char *status)
{
    notify_with_status("READY=1", status);
}

void
sesame_systemd_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long us = (unsigned long long)ts.tv_sec * 1000000ull +
                            (unsigned long long)ts.tv_nsec / 1000ull;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", us);
}

void
sesame_systemd_stopping(const char *status)
{
    notify_with_status("STOPPING=1", status);
}

void
sesame_systemd_status(const char *status)
{
    sd_notifyf(0, "STATUS=%s", status);
}

uint64_t
sesame_systemd_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

void
sesame_systemd_watchdog(void)
{
    sd_notify(0, "WATCHDOG=1");
}
