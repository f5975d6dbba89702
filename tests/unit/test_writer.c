/*
 * test_writer.c: the log writer stage (agent/writer.c) with a real log in
 * a temporary directory: one blocked topic never blocks another, parked
 * batches land in order once the topic frees up, ENOSPC through the log's
 * I/O table and ENOMEM push back without loss or duplicates, the direct
 * lane answers at once, and the shutdown deadline bounds the stop and
 * counts what a source without positions lost. Threaded: run under TSan.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"
#include "svc_harness.h"

/* ---- an I/O table that fails writes to one topic's files ---- */

static _Atomic int fail_enospc; /* 1: writes to topic "a" fail with ENOSPC */
static _Atomic int fds_a[1024]; /* 1: fd belongs to topics/a/ */

static int fio_open(const char *path, int flags, int mode)
{
    int fd = open(path, flags | O_CLOEXEC, mode);
    if (fd >= 0 && fd < 1024) {
        atomic_store(&fds_a[fd], strstr(path, "/topics/a/") != NULL);
    }
    return fd;
}

static long fio_pwrite(int fd, const void *buf, size_t len, int64_t off)
{
    if (atomic_load(&fail_enospc) && fd >= 0 && fd < 1024 && atomic_load(&fds_a[fd])) {
        errno = ENOSPC;
        return -1;
    }
    return spool_plog_io_posix.pwrite(fd, buf, len, off);
}

static spool_plog_io failing_io;

/* ---- helpers ---- */

static int writer_blocked(void *arg)
{
    harness *h = arg;
    return atomic_load(&h->svc.writer_blocked);
}

static int writer_clear(void *arg)
{
    harness *h = arg;
    return !atomic_load(&h->svc.writer_blocked);
}

/* Checks that partition 0 of `topic` holds prefix-first .. prefix-(first+n-1)
 * exactly once and in order. */
static void expect_sequence(harness *h, int topic, const char *prefix, int first, int n)
{
    char **vals;
    size_t got = h_values(h, topic, 0, &vals);
    assert_int_equal(got, (size_t)n);
    for (int i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof(want), "%s-%08d", prefix, first + i);
        assert_int_equal(strncmp(vals[i], want, strlen(want)), 0);
    }
    h_free_values(vals, got);
}

/* Fills topic `full` (one partition, 64 KiB, held by a consumer at 0)
 * until the writer parks it; returns the number of records submitted. */
static int fill_until_blocked(harness *h, spool_instance *in)
{
    int sent = 0;
    for (int k = 0; k < 64 && !atomic_load(&h->svc.writer_blocked); k++) {
        spool_batch *b = h_batch(in, "full", sent, 50, 400, NULL);
        int rc = spool_input_submit(in, b, 2000);
        if (rc == 0) {
            sent += 50;
        } else {
            assert_int_equal(rc, -EAGAIN); /* gated: the topic is parked */
            spool_batch_destroy(b);
        }
        /* Let the writer see it before the next one (bounded). */
        h_wait_records(h, 0, sent, 200);
    }
    assert_true(h_wait(writer_blocked, h, 10000));
    return sent;
}

/* ---- tests ---- */

/* A full topic (on_full: block) parks; another topic keeps being written;
 * the parked batches land in order once an output moves on. */
static void full_topic_does_not_block_another(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "full", 1, 64 << 10);
    h_topic(h, "free", 1, 0);
    h_start(h, 5000);
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, 0), 0);
    spool_instance *a = h_input(h, "in-full", 0), *b = h_input(h, "in-free", 1);

    int sent = fill_until_blocked(h, a);
    char reason[256];
    assert_int_equal(spool_service_health(&h->svc, reason, sizeof(reason)), 0);
    assert_non_null(strstr(reason, "topic full"));
    /* Parked batches are not yet in the log; a submit to the topic is gated. */
    assert_true(h_topic_end(h, 0) < sent);
    spool_batch *g = h_batch(a, "gated", 0, 1, 0, NULL);
    assert_int_equal(spool_input_submit(a, g, 50), -EAGAIN);
    spool_batch_destroy(g);

    /* The other topic flows meanwhile. */
    for (int k = 0; k < 10; k++) {
        assert_int_equal(spool_input_submit(b, h_batch(b, "free", k * 100, 100, 0, NULL), 2000), 0);
    }
    assert_true(h_wait_records(h, 1, 1000, 10000));
    expect_sequence(h, 1, "free", 0, 1000);

    /* An output delivers everything: retention makes room, the parked
     * batches land, in order, and the topic's inputs resume. */
    int64_t end = h_end(h, 0, 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, end), 0);
    assert_true(h_wait(writer_clear, h, 10000));
    assert_true(h_wait_records(h, 0, sent, 10000));
    assert_int_equal(h_end(h, 0, 0), sent);

    spool__instance_free(a);
    spool__instance_free(b);
    h_free(h);
}

/* ENOSPC on one topic's files (the log's I/O table): that topic parks, the
 * other goes on; when the disk has room again every record lands once. */
static void enospc_parks_and_recovers(void **state)
{
    (void)state;
    harness *h = h_new();
    failing_io = spool_plog_io_posix;
    failing_io.open = fio_open;
    failing_io.pwrite = fio_pwrite;
    h->io = &failing_io;
    h_topic(h, "a", 1, 0);
    h_topic(h, "b", 1, 0);
    h_start(h, 5000);
    spool_instance *a = h_input(h, "in-a", 0), *b = h_input(h, "in-b", 1);

    atomic_store(&fail_enospc, 1);
    assert_int_equal(spool_input_submit(a, h_batch(a, "a", 0, 10, 0, "pos"), 2000), 0);
    assert_true(h_wait(writer_blocked, h, 10000));
    /* The topic's inputs are gated now ... */
    spool_batch *g = h_batch(a, "gated", 0, 1, 0, NULL);
    assert_int_equal(spool_input_submit(a, g, 50), -EAGAIN);
    spool_batch_destroy(g);
    /* ... and batches already past the gate park behind the head, in order. */
    for (int k = 1; k < 5; k++) {
        spool_batch *pb = h_batch(a, "a", k * 10, 10, 0, "pos");
        pb->topic = 0;
        assert_int_equal(spool_queue_push(&h->svc.write_queue, &pb->link, 1, 1000), 0);
    }
    char reason[256];
    assert_int_equal(spool_service_health(&h->svc, reason, sizeof(reason)), 0);
    assert_non_null(strstr(reason, "disk is full"));
    for (int k = 0; k < 5; k++) {
        assert_int_equal(spool_input_submit(b, h_batch(b, "b", k * 10, 10, 0, NULL), 2000), 0);
    }
    assert_true(h_wait_records(h, 1, 50, 10000));
    assert_int_equal(h_end(h, 0, 0), 0);

    atomic_store(&fail_enospc, 0);
    assert_true(h_wait_records(h, 0, 50, 10000));
    assert_true(h_wait(writer_clear, h, 10000));
    expect_sequence(h, 0, "a", 0, 50);
    expect_sequence(h, 1, "b", 0, 50);
    char pos[16];
    size_t len = 0;
    assert_int_equal(spool_input_get_position(a, "src", pos, sizeof(pos), &len), 0);
    assert_int_equal(len, 3);

    spool__instance_free(a);
    spool__instance_free(b);
    h_free(h);
}

/* Out of memory before the records or before the positions: the batch is
 * kept and retried, never dropped, never appended twice. */
static void enomem_pushes_back(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "t", 1, 0);
    h_start(h, 5000);
    spool_instance *in = h_input(h, "in", 0);

    atomic_store(&spool__writer_enomem[0], 3);
    assert_int_equal(spool_input_submit(in, h_batch(in, "r", 0, 20, 0, "p1"), 2000), 0);
    assert_true(h_wait_records(h, 0, 20, 10000));
    assert_int_equal(atomic_load(&spool__writer_enomem[0]), 0);

    atomic_store(&spool__writer_enomem[1], 3);
    assert_int_equal(spool_input_submit(in, h_batch(in, "r", 20, 20, 0, "p2"), 2000), 0);
    assert_true(h_wait_records(h, 0, 40, 10000));
    /* The position lands after the retries; the records only once. */
    char pos[16];
    size_t len = 0;
    int64_t until = spool_monotonic_ms() + 10000;
    while (spool_monotonic_ms() < until) {
        if (spool_input_get_position(in, "src", pos, sizeof(pos), &len) == 0 && len == 2 &&
            memcmp(pos, "p2", 2) == 0) {
            break;
        }
        h_wait_records(h, 0, 41, 20); /* bounded pause on the log's clock */
    }
    assert_memory_equal(pos, "p2", 2);
    assert_int_equal(atomic_load(&spool__writer_enomem[1]), 0);
    assert_true(h_wait(writer_clear, h, 10000));
    expect_sequence(h, 0, "r", 0, 40);

    spool__instance_free(in);
    h_free(h);
}

/* The direct lane: appended and committed before it answers; a full topic
 * answers -EAGAIN at once with nothing appended; after the stop,
 * -ESHUTDOWN. */
static void direct_lane_answers_at_once(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "full", 1, 64 << 10);
    h_topic(h, "dead", 1, 0);
    h_start(h, 5000);
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, 0), 0);
    spool_instance *in = h_input(h, "in", 0), *dl = h_input(h, "dl", 1);

    spool_batch *d = h_batch(dl, "dl", 0, 30, 0, NULL);
    d->topic = 1;
    assert_int_equal(spool__writer_append_direct(&h->svc, d), 0);
    assert_int_equal(h_end(h, 1, 0), 30); /* durable when it answered */

    int sent = fill_until_blocked(h, in);
    (void)sent;
    int64_t end = h_end(h, 0, 0);
    d = h_batch(in, "big", 0, 200, 1000, NULL);
    d->topic = 0;
    int64_t t0 = spool_monotonic_ms();
    assert_int_equal(spool__writer_append_direct(&h->svc, d), -EAGAIN);
    assert_true(spool_monotonic_ms() - t0 < 2000);
    assert_int_equal(h_end(h, 0, 0), end);

    /* A blocked topic does not hold the direct lane for another one. */
    d = h_batch(dl, "dl", 30, 10, 0, NULL);
    d->topic = 1;
    assert_int_equal(spool__writer_append_direct(&h->svc, d), 0);
    expect_sequence(h, 1, "dl", 0, 40);

    h_stop(h);
    d = h_batch(dl, "late", 0, 1, 0, NULL);
    d->topic = 1;
    assert_int_equal(spool__writer_append_direct(&h->svc, d), -ESHUTDOWN);

    spool__instance_free(in);
    spool__instance_free(dl);
    h_free(h);
}

typedef struct blocked_submitter {
    spool_instance *in;
    int rc;
    int64_t returned_at;
} blocked_submitter;

static void *submit_blocked(void *arg)
{
    blocked_submitter *s = arg;
    spool_batch *b = h_batch(s->in, "late", 0, 7, 0, NULL);
    s->rc = spool_input_submit(s->in, b, -1);
    if (s->rc < 0) {
        spool_batch_destroy(b);
    }
    s->returned_at = spool_monotonic_ms();
    return NULL;
}

/* One deadline: a submit blocked at the gate and the writer's parked
 * batches both end by it; records without positions are counted lost, the
 * ones with positions are not (their source reads them again). */
static void shutdown_deadline_bounds_and_counts(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "full", 1, 64 << 10);
    h_start(h, 500);
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, 0), 0);
    spool_instance *in = h_input(h, "stdin-like", 0), *tail = h_input(h, "tail-like", 0);
    int sent = fill_until_blocked(h, in);
    int64_t in_log = h_end(h, 0, 0);
    assert_true(in_log < sent);

    blocked_submitter bs = {.in = in};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, submit_blocked, &bs), 0);
    /* Queued behind the parked head, with a position: not lost, re-read. */
    int64_t before = h_metric(h, "spool_shutdown_lost_records_total", "input=\"tail-like\"");
    spool_batch *tb = h_batch(tail, "t", 0, 5, 0, "pos");
    tb->topic = 0;
    assert_int_equal(spool_queue_push(&h->svc.write_queue, &tb->link, 1, 1000), 0);

    int64_t t0 = spool_monotonic_ms();
    spool__pipeline_begin_stop(&h->svc);
    int64_t deadline = atomic_load(&h->svc.shutdown_deadline);
    assert_true(deadline > 0 && deadline <= t0 + 500);
    spool__pipeline_finish(&h->svc);
    h->started = 0;
    pthread_join(th, NULL);
    int64_t t1 = spool_monotonic_ms();
    assert_true(t1 <= deadline + SPOOL_SHUTDOWN_SLACK_MS);
    assert_int_equal(bs.rc, -ESHUTDOWN);
    assert_true(bs.returned_at <= deadline + SPOOL_SHUTDOWN_SLACK_MS);
    assert_int_equal(atomic_load(&h->svc.writer_done), 1);

    /* Everything submitted is either in the log or counted. */
    int64_t lost = h_metric(h, "spool_shutdown_lost_records_total", "input=\"stdin-like\"");
    assert_int_equal(h_end(h, 0, 0) + lost, sent + 7);
    assert_int_equal(h_metric(h, "spool_shutdown_lost_records_total", "input=\"tail-like\""),
                     before);
    char pos[16];
    size_t len;
    assert_int_equal(spool_input_get_position(tail, "src", pos, sizeof(pos), &len), -ENOENT);

    spool__instance_free(in);
    spool__instance_free(tail);
    h_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_topic_does_not_block_another),
        cmocka_unit_test(enospc_parks_and_recovers),
        cmocka_unit_test(enomem_pushes_back),
        cmocka_unit_test(direct_lane_answers_at_once),
        cmocka_unit_test(shutdown_deadline_bounds_and_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
