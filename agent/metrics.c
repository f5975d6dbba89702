/*
 * metrics.c: the registry of counters and gauges behind /metrics.
 *
 * Counters live in a linked list under a mutex (registration is rare: at
 * instance creation); updates are relaxed atomics and take no lock. The
 * per-partition figures (offsets, bytes, segments, lag) are not counters:
 * they are read from the log when an exporter iterates.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "metrics.h"

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static spool_counter *reg_head;
/* Counters of unregistered instances, kept so that the same counter
 * registered again (an unchanged instance across a reload) continues from
 * its value instead of resetting. Gauges are not kept. */
static spool_counter *retired_head;

static void counter_free(spool_counter *c)
{
    free(c->name);
    free(c->help);
    free(c->labels);
    free(c);
}

spool_counter *spool__metric_register(const char *name, const char *help, const char *labels,
                                      int gauge)
{
    spool_counter *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    c->name = strdup(name);
    c->help = strdup(help ? help : "");
    c->labels = strdup(labels ? labels : "");
    c->gauge = gauge;
    if (!c->name || !c->help || !c->labels) {
        free(c->name);
        free(c->help);
        free(c->labels);
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&reg_lock);
    for (spool_counter **pp = &retired_head; !gauge && *pp; pp = &(*pp)->next) {
        spool_counter *old = *pp;
        if (strcmp(old->name, c->name) == 0 && strcmp(old->labels, c->labels) == 0) {
            atomic_store(&c->value, atomic_load(&old->value));
            *pp = old->next;
            counter_free(old);
            break;
        }
    }
    c->next = reg_head;
    reg_head = c;
    pthread_mutex_unlock(&reg_lock);
    return c;
}

void spool__metric_unregister_labels(const char *labels)
{
    pthread_mutex_lock(&reg_lock);
    spool_counter **pp = &reg_head;
    while (*pp) {
        spool_counter *c = *pp;
        if (strcmp(c->labels, labels) == 0) {
            *pp = c->next;
            if (c->gauge) {
                counter_free(c);
            } else {
                c->next = retired_head;
                retired_head = c;
            }
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

void spool_counter_add(spool_counter *c, uint64_t n)
{
    if (c) {
        atomic_fetch_add_explicit(&c->value, (int64_t)n, memory_order_relaxed);
    }
}

void spool_gauge_set(spool_counter *c, int64_t v)
{
    if (c) {
        atomic_store_explicit(&c->value, v, memory_order_relaxed);
    }
}

void spool_count(spool_instance *ins, spool_counter_kind kind, uint64_t n)
{
    if (ins && kind < SPOOL_COUNT__MAX) {
        spool_counter_add(ins->counters[kind], n);
    }
}

static spool_counter *plugin_metric(spool_instance *ins, const char *name, const char *help,
                                    int gauge)
{
    char full[256], labels[512];
    size_t nl = strlen(name);
    int has_total = nl >= 6 && strcmp(name + nl - 6, "_total") == 0;
    snprintf(full, sizeof(full), "spool_%s_%s%s", ins->plugin->name, name,
             has_total || gauge ? "" : "_total");
    for (char *p = full; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            *p = '_';
        }
    }
    snprintf(labels, sizeof(labels), "kind=\"%s\",plugin=\"%s\",name=\"%s\"",
             ins->kind == SPOOL_PLUGIN_INPUT    ? "input"
             : ins->kind == SPOOL_PLUGIN_OUTPUT ? "output"
                                                : "processor",
             ins->plugin->name, ins->name);
    return spool__metric_register(full, help, labels, gauge);
}

spool_counter *spool_counter_register(spool_instance *ins, const char *name, const char *help)
{
    return plugin_metric(ins, name, help, 0);
}

spool_counter *spool_gauge_register(spool_instance *ins, const char *name, const char *help)
{
    return plugin_metric(ins, name, help, 1);
}

typedef struct sample_vec {
    spool_metric_sample *v;
    char **owned; /* strings to free */
    size_t n, cap, nowned, owned_cap;
} sample_vec;

static void vec_add(sample_vec *sv, const char *name, const char *help, const char *type,
                    const char *labels, int64_t value, int own_labels)
{
    if (sv->n == sv->cap) {
        size_t nc = sv->cap ? sv->cap * 2 : 64;
        spool_metric_sample *nv = realloc(sv->v, nc * sizeof(*nv));
        if (!nv) {
            return;
        }
        sv->v = nv;
        sv->cap = nc;
    }
    if (own_labels) {
        char *l = strdup(labels);
        if (!l) {
            return;
        }
        if (sv->nowned == sv->owned_cap) {
            size_t nc = sv->owned_cap ? sv->owned_cap * 2 : 64;
            char **no = realloc(sv->owned, nc * sizeof(*no));
            if (!no) {
                free(l);
                return;
            }
            sv->owned = no;
            sv->owned_cap = nc;
        }
        sv->owned[sv->nowned++] = l;
        labels = l;
    }
    sv->v[sv->n++] = (spool_metric_sample){name, help, type, labels, value};
}

static int cmp_sample(const void *a, const void *b)
{
    const spool_metric_sample *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static void log_samples(spool_service *svc, sample_vec *sv)
{
    if (!svc || !svc->log) {
        return;
    }
    size_t nt = spool_plog_topic_count(svc->log);
    char labels[512];
    for (size_t t = 0; t < nt; t++) {
        const spool_topic_conf *tc = spool_plog_topic_conf(svc->log, (int)t);
        for (int32_t p = 0; p < tc->partitions; p++) {
            spool_partition_info pi;
            if (spool_plog_partition_info(svc->log, (int)t, p, &pi) < 0) {
                continue;
            }
            snprintf(labels, sizeof(labels), "topic=\"%s\",partition=\"%d\"", tc->name, p);
            vec_add(sv, "spool_partition_begin_offset", "First readable offset of the partition",
                    "gauge", labels, pi.begin_offset, 1);
            vec_add(sv, "spool_partition_end_offset", "One past the last durable offset", "gauge",
                    labels, pi.end_offset, 1);
            vec_add(sv, "spool_partition_bytes", "Bytes on disk", "gauge", labels, pi.bytes, 1);
            vec_add(sv, "spool_partition_segments", "Segment files", "gauge", labels, pi.segments,
                    1);
            vec_add(sv, "spool_partition_dropped_records_total",
                    "Records deleted undelivered by on_full: drop_oldest", "counter", labels,
                    pi.dropped, 1);
            for (size_t o = 0; o < svc->conf->noutputs; o++) {
                spool_instance *out = svc->conf->outputs[o];
                int subscribed = 0;
                for (size_t k = 0; k < out->out.topics.count; k++) {
                    subscribed |= strcmp(out->out.topics.items[k], tc->name) == 0;
                }
                if (!subscribed) {
                    continue;
                }
                char consumer[300];
                snprintf(consumer, sizeof(consumer), "output.%s", out->name);
                int64_t cur = spool_plog_cursor_get(svc->log, consumer, (int)t, p);
                char l2[800];
                snprintf(l2, sizeof(l2), "%s,output=\"%s\"", labels, out->name);
                vec_add(sv, "spool_output_lag_records", "End offset minus the output's cursor",
                        "gauge", l2, pi.end_offset - cur, 1);
            }
        }
    }
}

void spool_metrics_foreach(spool_service *svc, void (*fn)(void *arg, const spool_metric_sample *s),
                           void *arg)
{
    sample_vec sv = {0};
    pthread_mutex_lock(&reg_lock);
    for (spool_counter *c = reg_head; c; c = c->next) {
        vec_add(&sv, c->name, c->help, c->gauge ? "gauge" : "counter", c->labels,
                atomic_load_explicit(&c->value, memory_order_relaxed), 0);
    }
    log_samples(svc, &sv);
    qsort(sv.v, sv.n, sizeof(*sv.v), cmp_sample);
    for (size_t i = 0; i < sv.n; i++) {
        fn(arg, &sv.v[i]);
    }
    pthread_mutex_unlock(&reg_lock);
    for (size_t i = 0; i < sv.nowned; i++) {
        free(sv.owned[i]);
    }
    free(sv.owned);
    free(sv.v);
}
