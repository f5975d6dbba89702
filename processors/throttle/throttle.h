/*
 * throttle.h: the one hook the `throttle` processor exposes, for its unit tests: the clock it
 * reads (spool_monotonic_ms by default), so that a test decides what time it is.
 */
#ifndef SPOOL_PROCESSORS_THROTTLE_H
#define SPOOL_PROCESSORS_THROTTLE_H

#include <stdint.h>

/* A clock in milliseconds that never goes back. */
typedef int64_t (*throttle_clock_fn)(void);

/* Replaces the clock of every throttle instance; NULL restores spool_monotonic_ms. Call only
 * while no batch is being processed (tests: before and between their process() calls). */
void throttle_set_clock(throttle_clock_fn fn);

#endif /* SPOOL_PROCESSORS_THROTTLE_H */
