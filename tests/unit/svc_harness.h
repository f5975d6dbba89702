/*
 * svc_harness.h: a running service for unit tests of the pipeline and the
 * output runner (test_writer.c, test_output.c): a real log in a temporary
 * directory, the real processor and writer threads, fake inputs. Header
 * only (static functions); include after cmocka.h and core.h.
 */
#ifndef SVC_HARNESS_H
#define SVC_HARNESS_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "service/http_api.h"

#define H_MAX_TOPICS 4
#define H_FN static __attribute__((unused)) /* each test uses a subset */

typedef struct harness {
    char dir[64];
    spool_topic_conf topics[H_MAX_TOPICS];
    size_t ntopics;
    spool_service_conf conf;
    spool_service svc;
    const spool_plog_io *io;
    int started;
} harness;

H_FN int h_input_run(spool_instance *ins, void *ctx)
{
    (void)ins;
    (void)ctx;
    return 0;
}

static const spool_plugin h_input_plugin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "fake_in",
    .run = h_input_run,
};

H_FN spool_topic_conf *h_topic(harness *h, const char *name, int32_t partitions, int64_t max_bytes)
{
    spool_topic_conf *t = &h->topics[h->ntopics++];
    memset(t, 0, sizeof(*t));
    t->name = (char *)name;
    t->partitions = partitions;
    t->segment_bytes = max_bytes ? max_bytes / 4 : 1 << 20;
    t->max_bytes = max_bytes;
    t->fsync_mode = SPOOL_FSYNC_NEVER;
    t->on_full = SPOOL_ON_FULL_BLOCK;
    t->index_interval_bytes = 4096;
    return t;
}

H_FN harness *h_new(void)
{
    harness *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    snprintf(h->dir, sizeof(h->dir), "/tmp/spool-unit-XXXXXX");
    assert_non_null(mkdtemp(h->dir));
    return h;
}

/* Opens the log and starts the processor and writer threads. */
H_FN void h_start(harness *h, int64_t shutdown_timeout_ms)
{
    spool_plog *log = NULL;
    spool_plog_options lo = {0};
    h->conf.data_dir = h->dir;
    h->conf.memory_limit = 64 << 20;
    h->conf.shutdown_timeout = shutdown_timeout_ms;
    h->conf.topics = h->topics;
    h->conf.ntopics = h->ntopics;
    lo.data_dir = h->dir;
    lo.topics = h->topics;
    lo.topic_count = h->ntopics;
    lo.io = h->io;
    assert_int_equal(spool_plog_open(&lo, &log), 0);
    memset(&h->svc, 0, sizeof(h->svc));
    h->svc.conf = &h->conf;
    h->svc.log = log;
    assert_int_equal(spool__pipeline_start(&h->svc), 0);
    h->started = 1;
}

H_FN spool_instance *h_input(harness *h, const char *name, int topic)
{
    spool_instance *ins = spool__instance_new(&h_input_plugin, SPOOL_PLUGIN_INPUT, 0, name);
    assert_non_null(ins);
    ins->svc = &h->svc;
    ins->topic = topic;
    return ins;
}

/* A batch of n records "<prefix>-<first+i>", optionally with a position. */
H_FN spool_batch *h_batch(spool_instance *ins, const char *prefix, int first, int n, size_t pad,
                          const char *pos)
{
    spool_batch *b = spool_batch_create(ins);
    char val[4096];
    assert_non_null(b);
    assert_true(pad < sizeof(val) - 64);
    for (int i = 0; i < n; i++) {
        int len = snprintf(val, sizeof(val), "%s-%08d", prefix, first + i);
        memset(val + len, 'p', pad);
        spool_record r = {
            .key_len = -1, .value = (const uint8_t *)val, .value_len = (int32_t)(len + (int)pad)};
        assert_int_equal(spool_batch_append(b, &r), 0);
    }
    if (pos) {
        assert_int_equal(spool_batch_set_position(b, "src", pos, strlen(pos)), 0);
    }
    return b;
}

H_FN int64_t h_end(harness *h, int topic, int32_t partition)
{
    spool_partition_info pi;
    assert_int_equal(spool_plog_partition_info(h->svc.log, topic, partition, &pi), 0);
    return pi.end_offset;
}

H_FN int64_t h_topic_end(harness *h, int topic)
{
    int64_t n = 0;
    for (int32_t p = 0; p < h->topics[topic].partitions; p++) {
        n += h_end(h, topic, p);
    }
    return n;
}

/* Waits (bounded) until the topic's durable records reach n. */
H_FN int h_wait_records(harness *h, int topic, int64_t n, int64_t timeout_ms)
{
    int64_t until = spool_monotonic_ms() + timeout_ms;
    for (;;) {
        uint64_t gen = spool_plog_generation(h->svc.log, -1);
        if (h_topic_end(h, topic) >= n) {
            return 1;
        }
        int64_t left = until - spool_monotonic_ms();
        if (left <= 0) {
            return 0;
        }
        spool_plog_wait_since(h->svc.log, -1, gen, left < 100 ? left : 100);
    }
}

/* Waits (bounded) for pred(arg). */
H_FN int h_wait(int (*pred)(void *arg), void *arg, int64_t timeout_ms)
{
    int64_t until = spool_monotonic_ms() + timeout_ms;
    while (!pred(arg)) {
        if (spool_monotonic_ms() > until) {
            return 0;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

/* Every record value of a partition, in offset order; returns the count. */
H_FN size_t h_values(harness *h, int topic, int32_t partition, char ***out)
{
    spool_buf raw = {0};
    spool_rb_decoded dec = {0};
    int64_t off = 0, next = 0;
    size_t n = 0, cap = 0;
    char **vals = NULL;
    for (;;) {
        raw.len = 0;
        long rc = spool_plog_read(h->svc.log, topic, partition, off, 1 << 20, &raw, &next);
        assert_true(rc >= 0);
        if (rc == 0 || next == off) {
            break;
        }
        size_t at = 0;
        while (at < raw.len) {
            spool_rb_info bi;
            long sz = spool_rb_parse_header(raw.data + at, raw.len - at, 0, &bi);
            assert_true(sz > 0);
            spool_rb_decoded_reset(&dec);
            assert_true(spool_rb_decode(raw.data + at, (size_t)sz, partition, 0, &dec) >= 0);
            for (size_t i = 0; i < dec.count; i++) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 256;
                    vals = realloc(vals, cap * sizeof(*vals));
                    assert_non_null(vals);
                }
                vals[n++] =
                    strndup((const char *)dec.records[i].value, (size_t)dec.records[i].value_len);
            }
            at += (size_t)sz;
        }
        off = next;
    }
    spool_buf_free(&raw);
    spool_rb_decoded_free(&dec);
    *out = vals;
    return n;
}

H_FN void h_free_values(char **vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(vals[i]);
    }
    free(vals);
}

typedef struct h_metric_q {
    const char *name, *labels;
    int64_t value;
} h_metric_q;

H_FN void h_metric_fn(void *arg, const spool_metric_sample *s)
{
    h_metric_q *q = arg;
    if (strcmp(s->name, q->name) == 0 && strcmp(s->labels, q->labels) == 0) {
        q->value += s->value;
    }
}

H_FN int64_t h_metric(harness *h, const char *name, const char *labels)
{
    h_metric_q q = {name, labels, 0};
    spool_metrics_foreach(&h->svc, h_metric_fn, &q);
    return q.value;
}

/* Stops the pipeline (bounded by the shutdown deadline) and frees all. */
H_FN void h_stop(harness *h)
{
    if (h->started) {
        spool__pipeline_begin_stop(&h->svc);
        spool__pipeline_finish(&h->svc);
    }
}

H_FN void h_free(harness *h)
{
    h_stop(h);
    spool__pipeline_free(&h->svc);
    spool_plog_close(h->svc.log);
    if (h->started) {
        spool_queue_destroy(&h->svc.in_queue);
        spool_queue_destroy(&h->svc.write_queue);
        spool__metric_unregister_labels("stage=\"processors\"");
        spool__metric_unregister_labels("stage=\"log_writer\"");
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", h->dir);
    assert_int_equal(system(cmd), 0);
    free(h);
}

#endif /* SVC_HARNESS_H */
