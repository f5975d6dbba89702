/*
 * metrics.h: the core's registry of counters and gauges, for exporters
 * (/metrics in the Prometheus text format, `spool topics`).
 *
 * Every instance (input, processor, output) and every core stage owns a
 * fixed set of standard counters (spool_counter_kind) plus the counters a
 * plugin registered. Counters are 64-bit atomics: updates are lock-free
 * from any thread; iteration takes the registry lock only to walk the list.
 */
#ifndef SPOOL_METRICS_H
#define SPOOL_METRICS_H

#include <stdint.h>

#include "spool/spool.h"

struct spool_service;

typedef struct spool_metric_sample {
    const char *name;   /* "spool_input_records_total" */
    const char *help;   /* one line */
    const char *type;   /* "counter" or "gauge" */
    const char *labels; /* preformatted: kind="input",plugin="tail",name="app-logs" ("" for none) */
    int64_t value;
} spool_metric_sample;

/* Calls fn for every sample, grouped by name (all samples of one name are
 * consecutive, so an exporter writes HELP/TYPE once per name): the registry's
 * counters, plus svc's per-partition figures (none when svc is NULL). Any
 * thread. */
void spool_metrics_foreach(struct spool_service *svc,
                           void (*fn)(void *arg, const spool_metric_sample *s), void *arg);

#endif /* SPOOL_METRICS_H */
