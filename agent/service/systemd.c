/*
 * systemd.c: spool's side of the sd_notify protocol (READY, STOPPING,
 * RELOADING, STATUS, WATCHDOG), over libsystemd.
 *
 * Invariants: the environment is never unset (unset_environment = 0), so
 * every call may be repeated and made from any thread; outside systemd
 * (NOTIFY_SOCKET unset) sd_notify returns 0 and so does every wrapper.
 * Not done here: deciding when to ping the watchdog (the core knows whether
 * a stage is stuck) and logging (callers decide whether a failure matters).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "service/systemd.h"

#define SD_STATUS_MAX 256 /* bytes of STATUS= text we send */

int spool_sd_ready(void)
{
    return sd_notify(0, "READY=1");
}

int spool_sd_stopping(void)
{
    return sd_notify(0, "STOPPING=1");
}

int spool_sd_reloading(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) {
        return -errno;
    }
    unsigned long long usec =
        (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
    return sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
}

int spool_sd_status(const char *fmt, ...)
{
    char text[SD_STATUS_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    /* One assignment per line in the protocol: a newline would start a new
     * (bogus) assignment. */
    for (char *p = text; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    return sd_notifyf(0, "STATUS=%s", text);
}

int spool_sd_watchdog_enabled(int64_t *interval_ms)
{
    uint64_t usec = 0;
    int rc = sd_watchdog_enabled(0, &usec);
    if (rc <= 0) {
        if (interval_ms) {
            *interval_ms = 0;
        }
        return rc;
    }
    if (interval_ms) {
        *interval_ms = (int64_t)(usec / 1000);
    }
    return 1;
}

int spool_sd_watchdog_ping(void)
{
    return sd_notify(0, "WATCHDOG=1");
}
