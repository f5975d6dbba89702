/*
 * test_output.c: the output runner (agent/output.c) against a fake output
 * plugin and a real log in a temporary directory, with the real writer:
 * in-order commit with completions arriving out of order from another
 * thread, retries, max_in_flight over several partitions, rejection into a
 * full dead-letter topic (kept, retried, never blocking the writer), and a
 * cursor that cannot be saved; records refused one by one
 * (spool_output_reject_record) reaching the dead-letter topic exactly;
 * stream ticks (header spool.tick) never reaching flush().
 * Threaded: run under TSan.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"
#include "svc_harness.h"

/* ---- the fake output ---- */

enum { FM_OK, FM_PENDING, FM_REJECT, FM_REJECT_P0, FM_MARK };

typedef struct fchunk {
    int32_t partition;
    int64_t first, next;
} fchunk;

static struct {
    pthread_mutex_t mu;
    int mode;
    int retry_first;          /* answer RETRY to this many flushes first */
    const char *retry_reason; /* given with those retries (NULL = none) */
    int flushes;
    int inflight, max_inflight;
    const spool_chunk *pending[64];
    size_t npending;
    fchunk ok[4096]; /* accepted chunks, in acceptance order */
    size_t nok;
    int mark_then_retry;     /* FM_MARK: mark every record, then answer RETRY, this many times */
    int mark_pending;        /* FM_MARK: answer PENDING, mark and complete from another thread */
    int64_t delivered[4096]; /* offsets of the records of accepted chunks */
    size_t ndelivered;
    int ticks_seen;             /* records with a spool.tick header handed to flush() */
    int headers_seen;           /* records with any header handed to flush() */
    const spool_chunk *seen[8]; /* distinct chunks (runner slots) flush() was handed */
    size_t nseen;
} F = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void f_reset(int mode)
{
    pthread_mutex_lock(&F.mu);
    F.mode = mode;
    F.retry_first = 0;
    F.retry_reason = NULL;
    F.flushes = 0;
    F.inflight = F.max_inflight = 0;
    F.npending = 0;
    F.nok = 0;
    F.mark_then_retry = 0;
    F.mark_pending = 0;
    F.ndelivered = 0;
    F.ticks_seen = 0;
    F.headers_seen = 0;
    F.nseen = 0;
    pthread_mutex_unlock(&F.mu);
}

/* FM_MARK: records whose offset is a multiple of 3 are refused one by one. */
static void f_mark(spool_instance *ins, const spool_chunk *c)
{
    for (size_t i = 0; i < c->count; i++) {
        if (c->records[i].offset % 3 == 0) {
            char why[64];
            snprintf(why, sizeof(why), "bad record %lld", (long long)c->records[i].offset);
            assert_int_equal(spool_output_reject_record(ins, c, i, why), 0);
        }
    }
    assert_int_equal(spool_output_reject_record(ins, c, c->count, "x"), -EINVAL);
}

static void f_accept(const spool_chunk *c)
{
    F.ok[F.nok++] = (fchunk){c->partition, c->first_offset, c->next_offset};
    for (size_t i = 0; i < c->count; i++) {
        if (F.ndelivered < sizeof(F.delivered) / sizeof(F.delivered[0])) {
            F.delivered[F.ndelivered++] = c->records[i].offset;
        }
        F.ticks_seen += spool_record_header(&c->records[i], "spool.tick") != NULL;
        F.headers_seen += c->records[i].header_count > 0;
    }
}

static int f_flush(spool_instance *ins, void *ctx, const spool_chunk *c)
{
    (void)ctx;
    pthread_mutex_lock(&F.mu);
    F.flushes++;
    size_t k = 0;
    while (k < F.nseen && F.seen[k] != c) {
        k++;
    }
    if (k == F.nseen && F.nseen < sizeof(F.seen) / sizeof(F.seen[0])) {
        F.seen[F.nseen++] = c;
    }
    if (F.retry_first > 0) {
        F.retry_first--;
        const char *why = F.retry_reason;
        pthread_mutex_unlock(&F.mu);
        if (why) {
            spool_output_set_reject_reason(ins, why);
        }
        return SPOOL_RETRY;
    }
    if (F.mode == FM_REJECT || (F.mode == FM_REJECT_P0 && c->partition == 0)) {
        pthread_mutex_unlock(&F.mu);
        spool_output_set_reject_reason(ins, "the test says no");
        return SPOOL_REJECT;
    }
    if (F.mode == FM_MARK && F.mark_then_retry > 0) {
        F.mark_then_retry--;
        pthread_mutex_unlock(&F.mu);
        for (size_t i = 0; i < c->count; i++) {
            assert_int_equal(spool_output_reject_record(ins, c, i, "all bad"), 0);
        }
        return SPOOL_RETRY; /* clears the marks */
    }
    if (F.mode == FM_MARK && !F.mark_pending) {
        f_accept(c);
        pthread_mutex_unlock(&F.mu);
        f_mark(ins, c);
        return SPOOL_OK;
    }
    if (F.mode == FM_PENDING || F.mode == FM_MARK) {
        F.pending[F.npending++] = c;
        F.inflight++;
        if (F.inflight > F.max_inflight) {
            F.max_inflight = F.inflight;
        }
        pthread_mutex_unlock(&F.mu);
        return SPOOL_PENDING;
    }
    f_accept(c);
    pthread_mutex_unlock(&F.mu);
    return SPOOL_OK;
}

/* Completes pending chunk i (from the calling thread, not the runner). */
static void f_complete(spool_instance *ins, size_t i)
{
    pthread_mutex_lock(&F.mu);
    const spool_chunk *c = F.pending[i];
    F.pending[i] = NULL;
    f_accept(c);
    F.inflight--;
    int mark = F.mode == FM_MARK;
    pthread_mutex_unlock(&F.mu);
    if (mark) {
        f_mark(ins, c);
    }
    spool_output_complete(ins, c, SPOOL_OK, NULL);
}

static const spool_plugin fake_out = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "fake_out",
    .flush = f_flush,
};

/* ---- helpers ---- */

/* The next outputs ask for values only (spool_output_values_only). */
static int out_values_only;

static spool_instance *out_new(harness *h, const char *topic, int64_t max_records,
                               int64_t max_in_flight, const char *dead_letter)
{
    spool_instance *o = spool__instance_new(&fake_out, SPOOL_PLUGIN_OUTPUT, 0, "fake");
    assert_non_null(o);
    o->svc = &h->svc;
    o->out.topics.items = calloc(1, sizeof(char *));
    o->out.topics.items[0] = strdup(topic);
    o->out.topics.count = 1;
    o->out.max_records = max_records;
    o->out.max_bytes = 1 << 20;
    o->out.linger = 0;
    o->out.max_in_flight = max_in_flight;
    o->out.max_retry_time = 0;
    o->out.retry_backoff = 5;
    o->out.retry_backoff_max = 20;
    o->out.dead_letter_topic = dead_letter ? strdup(dead_letter) : NULL;
    if (out_values_only) {
        spool_output_values_only(o); /* as the plugin's init would */
    }
    assert_int_equal(spool__output_start(&h->svc, o), 0);
    return o;
}

/* Stops the pipeline, then lets the runner drain (at most drain_ms). */
static void out_stop(harness *h, spool_instance *o, int64_t drain_ms)
{
    h_stop(h);
    h->started = 0;
    h->svc.drain_deadline = spool_monotonic_ms() + drain_ms;
    atomic_store(&h->svc.draining, 1);
    spool_plog_wake(h->svc.log);
    spool__output_join(&h->svc, o);
    spool__output_free(o);
    spool__instance_free(o);
    spool_queue_destroy(&h->svc.in_queue);
    spool_queue_destroy(&h->svc.write_queue);
    spool__metric_unregister_labels("stage=\"processors\"");
    spool__metric_unregister_labels("stage=\"log_writer\"");
}

static int64_t cursor_of(harness *h, int topic, int32_t partition)
{
    return spool_plog_cursor_get(h->svc.log, "output.fake", topic, partition);
}

typedef struct cursor_q {
    harness *h;
    int topic;
    int64_t want;
} cursor_q;

static int cursor_reached(void *arg)
{
    cursor_q *q = arg;
    int64_t sum = 0;
    for (int32_t p = 0; p < q->h->topics[q->topic].partitions; p++) {
        sum += cursor_of(q->h, q->topic, p);
    }
    return sum >= q->want;
}

static int pending_at_least(void *arg)
{
    size_t want = *(size_t *)arg, n = 0;
    pthread_mutex_lock(&F.mu);
    for (size_t i = 0; i < F.npending; i++) {
        n += F.pending[i] != NULL;
    }
    pthread_mutex_unlock(&F.mu);
    return n >= want;
}

static void submit_n(harness *h, spool_instance *in, const char *prefix, int first, int n,
                     int per_batch, size_t pad)
{
    for (int k = 0; k < n; k += per_batch) {
        int m = n - k < per_batch ? n - k : per_batch;
        assert_int_equal(spool_input_submit(in, h_batch(in, prefix, first + k, m, pad, NULL), 5000),
                         0);
    }
    (void)h;
}

/* Chunks accepted for partition p cover [0, end) contiguously, in order. */
static void expect_contiguous(int32_t p, int64_t end)
{
    int64_t at = 0;
    pthread_mutex_lock(&F.mu);
    for (size_t i = 0; i < F.nok; i++) {
        if (F.ok[i].partition == p) {
            assert_int_equal(F.ok[i].first, at);
            at = F.ok[i].next;
        }
    }
    pthread_mutex_unlock(&F.mu);
    assert_int_equal(at, end);
}

/* ---- tests ---- */

/* Four chunks in flight, completed 3, 2, 1 from this thread: the cursor
 * stays before chunk 0; completing 0 moves it past all four. */
static void commits_in_order(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_PENDING);
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 40, 40, 0);
    assert_true(h_wait_records(h, 0, 40, 10000));
    spool_instance *o = out_new(h, "app", 10, 4, NULL);
    size_t four = 4;
    assert_true(h_wait(pending_at_least, &four, 10000));
    assert_int_equal(F.max_inflight, 4);
    for (size_t i = 4; i-- > 1;) {
        f_complete(o, i);
    }
    cursor_q q = {h, 0, 1};
    /* Nothing may commit while chunk 0 is outstanding (a bounded look). */
    assert_false(h_wait(cursor_reached, &q, 300));
    assert_int_equal(cursor_of(h, 0, 0), 0);
    f_complete(o, 0);
    q.want = 40;
    assert_true(h_wait(cursor_reached, &q, 10000));
    assert_int_equal(cursor_of(h, 0, 0), 40);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

/* An output that answers inside flush() has one chunk at a time, so the
 * runner reuses one slot (its buffers stay warm) however large
 * max_in_flight is, rather than filling and keeping every slot (issue 18:
 * four slots of read, decoded and formatted chunks held resident). */
static void sync_output_reuses_one_slot(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_OK);
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 80, 80, 0);
    assert_true(h_wait_records(h, 0, 80, 10000));
    spool_instance *o = out_new(h, "app", 10, 4, NULL);
    cursor_q q = {h, 0, 80};
    assert_true(h_wait(cursor_reached, &q, 10000));
    pthread_mutex_lock(&F.mu);
    int flushes = F.flushes;
    size_t slots = F.nseen;
    pthread_mutex_unlock(&F.mu);
    assert_int_equal(flushes, 8);
    assert_int_equal(slots, 1);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

/* Transient failures are retried, in order, and nothing is skipped. */
static void retries_keep_order(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_OK);
    F.retry_first = 3;
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 30, 10, 0);
    spool_instance *o = out_new(h, "app", 10, 1, NULL);
    cursor_q q = {h, 0, 30};
    assert_true(h_wait(cursor_reached, &q, 10000));
    expect_contiguous(0, 30);
    pthread_mutex_lock(&F.mu);
    int flushes = F.flushes;
    pthread_mutex_unlock(&F.mu);
    assert_true(flushes >= 3 + 3);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

static int output_failing(void *arg)
{
    harness *h = arg;
    char reason[256];
    return !spool_service_health(&h->svc, reason, sizeof(reason)) &&
           strstr(reason, "output fake: destination failing for ") &&
           strstr(reason, "s: connection refused");
}

/* The runner reports a failing destination (and the reason the plugin gave)
 * to the service, which computes /health from it; a delivery clears it. */
static void failing_output_is_reported(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_OK);
    F.retry_first = 1 << 30;
    F.retry_reason = "connection refused";
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 10, 10, 0);
    spool_instance *o = out_new(h, "app", 10, 1, NULL);
    h->conf.outputs = &o;
    h->conf.noutputs = 1;
    assert_true(h_wait(output_failing, h, 10000));
    pthread_mutex_lock(&F.mu);
    F.retry_first = 0;
    pthread_mutex_unlock(&F.mu);
    cursor_q q = {h, 0, 10};
    assert_true(h_wait(cursor_reached, &q, 10000));
    char reason[256];
    assert_int_equal(spool_service_health(&h->svc, reason, sizeof(reason)), 1);
    assert_string_equal(reason, "ok");
    h->conf.outputs = NULL;
    h->conf.noutputs = 0;
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

/* spool_output_flush_report: the reject reason, one warning per failing
 * stretch, one "delivering again" after it, and every rejection logged. */
static void flush_report_logs_transitions(void **state)
{
    (void)state;
    spool_instance *o = spool__instance_new(&fake_out, SPOOL_PLUGIN_OUTPUT, 0, "fake");
    assert_non_null(o);
    spool_chunk c = {.topic = "app", .partition = 3, .first_offset = 10, .next_offset = 15};
    char path[] = "/tmp/spool-unit-report-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    fflush(stderr);
    assert_true(dup2(fd, 2) == 2);
    int failing = 0;
    int r1 = spool_output_flush_report(o, &c, SPOOL_RETRY, "down", &failing);
    int f1 = failing;
    int r2 = spool_output_flush_report(o, &c, SPOOL_RETRY, "still down", &failing);
    int r3 = spool_output_flush_report(o, &c, 99, "odd", &failing);
    int r4 = spool_output_flush_report(o, &c, SPOOL_OK, NULL, &failing);
    int f4 = failing;
    int r5 = spool_output_flush_report(o, &c, SPOOL_OK, NULL, &failing);
    int r6 = spool_output_flush_report(o, &c, SPOOL_REJECT, "bad row", &failing);
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    assert_int_equal(r1, SPOOL_RETRY);
    assert_int_equal(f1, 1);
    assert_int_equal(r2, SPOOL_RETRY);
    assert_int_equal(r3, SPOOL_RETRY);
    assert_int_equal(r4, SPOOL_OK);
    assert_int_equal(f4, 0);
    assert_int_equal(r5, SPOOL_OK);
    assert_int_equal(r6, SPOOL_REJECT);
    assert_string_equal(o->reject_reason, "bad row");
    char text[4096];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    text[n] = '\0';
    assert_non_null(strstr(text, "down; retrying"));
    assert_null(strstr(text, "still down"));
    assert_null(strstr(text, "odd"));
    const char *again = strstr(text, "delivering again");
    assert_non_null(again);
    assert_null(strstr(again + 1, "delivering again"));
    assert_non_null(strstr(text, "app/3 offsets 10-14 rejected: bad row"));
    spool__instance_free(o);
}

typedef struct completer {
    spool_instance *o;
    harness *h;
    int64_t total;
    _Atomic int stop;
} completer;

/* Completes whatever is pending, oldest first, from its own thread. */
static void *completer_main(void *arg)
{
    completer *c = arg;
    cursor_q q = {c->h, 0, c->total};
    int64_t until = spool_monotonic_ms() + 20000;
    while (!atomic_load(&c->stop) && !cursor_reached(&q) && spool_monotonic_ms() < until) {
        size_t pick = SIZE_MAX;
        pthread_mutex_lock(&F.mu);
        for (size_t i = 0; i < F.npending && pick == SIZE_MAX; i++) {
            if (F.pending[i]) {
                pick = i;
            }
        }
        pthread_mutex_unlock(&F.mu);
        if (pick != SIZE_MAX) {
            f_complete(c->o, pick);
        } else {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Several partitions, max_in_flight 2, completions from another thread:
 * never more than 2 outstanding, every partition delivered in order. */
static void max_in_flight_across_partitions(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 4, 0);
    h_start(h, 2000);
    f_reset(FM_PENDING);
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 400, 25, 0); /* sticky: each batch to the next partition */
    assert_true(h_wait_records(h, 0, 400, 10000));
    spool_instance *o = out_new(h, "app", 7, 2, NULL);
    completer c = {.o = o, .h = h, .total = 400};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, completer_main, &c), 0);
    cursor_q q = {h, 0, 400};
    assert_true(h_wait(cursor_reached, &q, 20000));
    atomic_store(&c.stop, 1);
    pthread_join(th, NULL);
    pthread_mutex_lock(&F.mu);
    int maxf = F.max_inflight;
    pthread_mutex_unlock(&F.mu);
    assert_true(maxf >= 1 && maxf <= 2);
    for (int32_t p = 0; p < 4; p++) {
        expect_contiguous(p, h_end(h, 0, p));
    }
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

static int dead_refused(void *arg)
{
    harness *h = arg;
    char reason[256];
    return !spool_service_health(&h->svc, reason, sizeof(reason)) && strstr(reason, "topic dead");
}

/* Everything rejected, the dead-letter topic full (on_full: block): the
 * rejected chunk is kept (cursor not moved past it), the writer keeps
 * serving another topic, and once the dead-letter topic has room every
 * record lands there exactly once. */
static void reject_into_full_dead_letter(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_topic(h, "dead", 1, 64 << 10);
    h_topic(h, "other", 1, 0);
    h_start(h, 2000);
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 1, 0, 0), 0);
    f_reset(FM_REJECT);
    spool_instance *in = h_input(h, "in", 0), *oin = h_input(h, "oin", 2);
    submit_n(h, in, "r", 0, 1000, 100, 300);
    assert_true(h_wait_records(h, 0, 1000, 10000));
    spool_instance *o = out_new(h, "app", 50, 1, "dead");
    assert_true(h_wait(dead_refused, h, 10000));
    /* The cursor stands exactly behind what reached the dead-letter topic. */
    int64_t dead = h_end(h, 1, 0);
    assert_true(dead > 0 && dead < 1000);
    assert_int_equal(cursor_of(h, 0, 0), dead);
    /* The writer is not held: another topic is written meanwhile. */
    submit_n(h, oin, "o", 0, 100, 10, 0);
    assert_true(h_wait_records(h, 2, 100, 10000));
    assert_int_equal(cursor_of(h, 0, 0), h_end(h, 1, 0));
    /* Room again: every rejected record lands once, the cursor reaches the end. */
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 1, 0, INT64_MAX / 2), 0);
    cursor_q q = {h, 0, 1000};
    assert_true(h_wait(cursor_reached, &q, 20000));
    assert_int_equal(h_end(h, 1, 0), 1000);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    spool__instance_free(oin);
    h_free(h);
}

/* Partition 0's chunks are rejected into a full dead-letter topic; with two
 * slots, partition 1 is still delivered completely meanwhile. */
static void stuck_dead_letter_holds_only_its_partition(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 2, 0);
    h_topic(h, "dead", 1, 64 << 10);
    h_start(h, 2000);
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 1, 0, 0), 0);
    f_reset(FM_REJECT_P0);
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 2000, 100, 300); /* sticky: batches alternate partitions */
    assert_true(h_wait_records(h, 0, 2000, 10000));
    int64_t end1 = h_end(h, 0, 1);
    assert_true(end1 > 0);
    spool_instance *o = out_new(h, "app", 50, 2, "dead");
    assert_true(h_wait(dead_refused, h, 10000));
    /* Partition 1 gets everything although partition 0 is stuck. */
    int64_t until = spool_monotonic_ms() + 10000;
    while (cursor_of(h, 0, 1) < end1 && spool_monotonic_ms() < until) {
        h_wait_records(h, 0, 1 << 30, 20); /* bounded pause on the log's clock */
    }
    assert_int_equal(cursor_of(h, 0, 1), end1);
    expect_contiguous(1, end1);
    assert_true(cursor_of(h, 0, 0) < h_end(h, 0, 0));
    out_stop(h, o, 500);
    spool__instance_free(in);
    h_free(h);
}

/* Every record of the dead-letter partition: "value|reason|offset" each. */
static size_t dead_letters(harness *h, int topic, char ***out)
{
    spool_buf raw = {0};
    spool_rb_decoded dec = {0};
    int64_t off = 0, next = 0;
    size_t n = 0;
    char **vals = calloc(4096, sizeof(*vals));
    assert_non_null(vals);
    for (;;) {
        raw.len = 0;
        long rc = spool_plog_read(h->svc.log, topic, 0, off, 1 << 20, &raw, &next);
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
            assert_true(spool_rb_decode(raw.data + at, (size_t)sz, 0, 0, &dec) >= 0);
            for (size_t i = 0; i < dec.count && n < 4096; i++) {
                const spool_record *r = &dec.records[i];
                const spool_header *why = spool_record_header(r, "dead_letter.reason");
                const spool_header *o = spool_record_header(r, "dead_letter.offset");
                assert_non_null(why);
                assert_non_null(o);
                char line[512];
                snprintf(line, sizeof(line), "%.*s|%.*s|%.*s", (int)r->value_len, r->value,
                         (int)why->value_len, why->value, (int)o->value_len, o->value);
                vals[n++] = strdup(line);
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

/* Records refused one by one (spool_output_reject_record) in chunks the
 * destination otherwise accepted: exactly those reach the dead-letter topic,
 * each with its own reason, once; marks made before a RETRY are dropped. */
static void run_reject_records(int pending, int retries)
{
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_topic(h, "dead", 1, 0);
    h_start(h, 2000);
    f_reset(FM_MARK);
    F.mark_pending = pending;
    F.mark_then_retry = retries;
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 100, 25, 0);
    assert_true(h_wait_records(h, 0, 100, 10000));
    /* Sync answers with retries: one in flight, so acceptance is in order. */
    spool_instance *o = out_new(h, "app", 10, pending ? 2 : 1, "dead");
    completer c = {.o = o, .h = h, .total = 100};
    pthread_t th;
    if (pending) {
        assert_int_equal(pthread_create(&th, NULL, completer_main, &c), 0);
    }
    cursor_q q = {h, 0, 100};
    assert_true(h_wait(cursor_reached, &q, 20000));
    if (pending) {
        atomic_store(&c.stop, 1);
        pthread_join(th, NULL);
    }
    expect_contiguous(0, 100);
    char **vals;
    size_t n = dead_letters(h, 1, &vals);
    assert_int_equal(n, 34); /* offsets 0, 3, ... 99 */
    for (size_t i = 0; i < n; i++) {
        char want[128];
        snprintf(want, sizeof(want), "r-%08zu|bad record %zu|%zu", i * 3, i * 3, i * 3);
        assert_string_equal(vals[i], want);
    }
    h_free_values(vals, n);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

static void reject_records_sync(void **state)
{
    (void)state;
    run_reject_records(0, 0);
}

static void reject_records_pending(void **state)
{
    (void)state;
    run_reject_records(1, 0);
}

static void reject_records_cleared_by_retry(void **state)
{
    (void)state;
    run_reject_records(0, 3);
}

/* No dead_letter_topic: the marked records are counted and skipped; the
 * cursor still moves past every chunk. */
static void reject_records_without_dead_letter(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_MARK);
    spool_instance *in = h_input(h, "in", 0);
    submit_n(h, in, "r", 0, 30, 10, 0);
    spool_instance *o = out_new(h, "app", 10, 1, NULL);
    cursor_q q = {h, 0, 30};
    assert_true(h_wait(cursor_reached, &q, 10000));
    expect_contiguous(0, 30);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

typedef struct file_cursor_q {
    int64_t offset;
} file_cursor_q;

static void on_file_cursor(void *arg, const char *consumer, const char *topic, int32_t partition,
                           int64_t offset)
{
    file_cursor_q *q = arg;
    if (strcmp(consumer, "output.fake") == 0 && strcmp(topic, "app") == 0 && partition == 0) {
        q->offset = offset;
    }
}

typedef struct saved_q {
    harness *h;
    int64_t want;
} saved_q;

static int cursor_saved(void *arg)
{
    saved_q *s = arg;
    file_cursor_q q = {-1};
    spool_plog_cursor_foreach(s->h->svc.log, on_file_cursor, &q);
    return q.offset == s->want;
}

/* The cursor cannot be saved (its directory is gone): delivery goes on;
 * once the directory is back, the cursor is saved. */
static void cursor_save_failure(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_OK);
    char cdir[128], away[128];
    snprintf(cdir, sizeof(cdir), "%s/cursors", h->dir);
    snprintf(away, sizeof(away), "%s/cursors.away", h->dir);
    spool_instance *in = h_input(h, "in", 0);
    spool_instance *o = out_new(h, "app", 10, 1, NULL);
    assert_int_equal(rename(cdir, away), 0);
    FILE *fp = fopen(cdir, "w"); /* a file where the directory was: ENOTDIR */
    assert_non_null(fp);
    fclose(fp);
    submit_n(h, in, "r", 0, 100, 10, 0);
    cursor_q q = {h, 0, 100};
    assert_true(h_wait(cursor_reached, &q, 10000));
    expect_contiguous(0, 100);
    assert_int_equal(unlink(cdir), 0);
    assert_int_equal(rename(away, cdir), 0);
    saved_q s = {h, 100};
    assert_true(h_wait(cursor_saved, &s, 10000));
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
}

/* Records i of [first, first + n) for which is_tick(i) get the header
 * spool.tick, as streams/runtime.c appends them. */
static void submit_ticks(spool_instance *in, int first, int n, int (*is_tick)(int))
{
    spool_batch *b = h_batch(in, "t", first, n, 0, NULL);
    for (int i = 0; i < n; i++) {
        assert_int_equal(spool_batch_set_header(b, (size_t)i, "h", "v", 1), 0);
        if (is_tick(first + i)) {
            assert_int_equal(spool_batch_set_header(b, (size_t)i, "spool.tick", "s", 1), 0);
        }
    }
    assert_int_equal(spool_input_submit(in, b, 5000), 0);
}

static int tick_0_1_7(int i)
{
    return i == 0 || i == 1 || i == 7;
}

static int tick_all(int i)
{
    (void)i;
    return 1;
}

static int tick_none(int i)
{
    (void)i;
    return 0;
}

/* Stream ticks leave a chunk's records but not its offsets: chunk [0, 5)
 * starts at offset 0 with records 2..4; a chunk of ticks only [10, 15) is
 * never flushed; the cursor still moves past all 20 offsets, in order.
 * The same for an output of values only, whose records have no headers. */
static void ticks_case(int values_only)
{
    out_values_only = values_only;
    harness *h = h_new();
    h_topic(h, "app", 1, 0);
    h_start(h, 2000);
    f_reset(FM_OK);
    spool_instance *in = h_input(h, "in", 0);
    submit_ticks(in, 0, 10, tick_0_1_7);
    submit_ticks(in, 10, 5, tick_all);
    submit_ticks(in, 15, 5, tick_none);
    assert_true(h_wait_records(h, 0, 20, 10000));
    spool_instance *o = out_new(h, "app", 5, 2, NULL);
    cursor_q q = {h, 0, 20};
    assert_true(h_wait(cursor_reached, &q, 10000));
    assert_int_equal(cursor_of(h, 0, 0), 20);
    pthread_mutex_lock(&F.mu);
    assert_int_equal(F.ticks_seen, 0);
    assert_int_equal(F.headers_seen, values_only ? 0 : 12);
    assert_int_equal(F.flushes, 3);
    assert_int_equal(F.nok, 3);
    assert_int_equal(F.ok[0].first, 0);
    assert_int_equal(F.ok[0].next, 5);
    assert_int_equal(F.ok[1].first, 5);
    assert_int_equal(F.ok[1].next, 10);
    assert_int_equal(F.ok[2].first, 15);
    assert_int_equal(F.ok[2].next, 20);
    static const int64_t want[] = {2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19};
    assert_int_equal(F.ndelivered, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < F.ndelivered; i++) {
        assert_int_equal(F.delivered[i], want[i]);
    }
    pthread_mutex_unlock(&F.mu);
    out_stop(h, o, 1000);
    spool__instance_free(in);
    h_free(h);
    out_values_only = 0;
}

static void ticks_never_delivered(void **state)
{
    (void)state;
    ticks_case(0);
}

static void ticks_never_delivered_values_only(void **state)
{
    (void)state;
    ticks_case(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commits_in_order),
        cmocka_unit_test(sync_output_reuses_one_slot),
        cmocka_unit_test(retries_keep_order),
        cmocka_unit_test(failing_output_is_reported),
        cmocka_unit_test(flush_report_logs_transitions),
        cmocka_unit_test(max_in_flight_across_partitions),
        cmocka_unit_test(reject_into_full_dead_letter),
        cmocka_unit_test(stuck_dead_letter_holds_only_its_partition),
        cmocka_unit_test(cursor_save_failure),
        cmocka_unit_test(reject_records_sync),
        cmocka_unit_test(reject_records_pending),
        cmocka_unit_test(reject_records_cleared_by_retry),
        cmocka_unit_test(reject_records_without_dead_letter),
        cmocka_unit_test(ticks_never_delivered),
        cmocka_unit_test(ticks_never_delivered_values_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
