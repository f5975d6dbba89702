/*
 * systemd.h: thin wrappers over libsystemd's sd_notify protocol for
 * `spool run` under a Type=notify unit. Every call is a no-op returning 0
 * when NOTIFY_SOCKET is unset (not started by systemd, or a test), so the
 * core calls them unconditionally. All are safe from any thread: each call
 * sends one datagram on a socket of its own. Errors are returned, never
 * logged here; a failed notification is not fatal to the agent.
 */
#ifndef SPOOL_SERVICE_SYSTEMD_H
#define SPOOL_SERVICE_SYSTEMD_H

#include <stdint.h>

#include "spool/spool.h" /* SPOOL_PRINTF */

/* READY=1: recovery done, every stage started (also sent again at the end of
 * a reload). Returns 1 if sent, 0 if not under systemd, or -errno. */
int spool_sd_ready(void);

/* STOPPING=1: shutdown has begun. Same returns. */
int spool_sd_stopping(void);

/* RELOADING=1 with MONOTONIC_USEC (as systemd >= 253 expects; older ones
 * ignore it): a reload has begun; call spool_sd_ready() when it is over,
 * whether the new config was applied or rejected. Same returns. */
int spool_sd_reloading(void);

/* STATUS=<text>: one line for `systemctl status`; newlines become spaces and
 * the text is cut at 256 bytes. Same returns. */
int spool_sd_status(const char *fmt, ...) SPOOL_PRINTF(1, 2);

/* Whether systemd expects watchdog pings from this process (WATCHDOG_USEC
 * set and WATCHDOG_PID, if set, is ours). Returns 1 and sets *interval_ms
 * to the full timeout (ping at least every half of it), 0 if not enabled,
 * or -errno for a malformed environment. interval_ms may be NULL. */
int spool_sd_watchdog_enabled(int64_t *interval_ms);

/* WATCHDOG=1: the agent is alive. Call it only when every stage has made
 * progress (or is idle) since the last ping, so a stuck stage gets the
 * service restarted. Same returns as spool_sd_ready. */
int spool_sd_watchdog_ping(void);

#endif /* SPOOL_SERVICE_SYSTEMD_H */
