/*
 * test_stream_runtime.c: the log writer's atomic direct lane the stream
 * runtime commits through (agent/writer.c, streams/runtime.c): a batch with
 * a position and records for several topics lands with every record in its
 * own topic and its key's partition and the position durable when the call
 * answers; a batch with no records still moves its position; a refused
 * batch records neither records nor position. (The runtime itself, kill -9
 * included, is tested end to end by tests/integration/test_streams.py.)
 * Threaded (the writer's thread): spool-test-labels: threaded
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"
#include "svc_harness.h"

static int64_t position_of(harness *h, const char *source)
{
    uint8_t buf[8];
    size_t len = 0;
    if (spool_plog_position_get(h->svc.log, source, buf, sizeof(buf), &len) < 0 || len != 8) {
        return -1;
    }
    int64_t v;
    memcpy(&v, buf, 8);
    return v;
}

static spool_batch *keyed_batch(spool_instance *in, int n, const char *late_topic)
{
    spool_batch *b = spool_batch_create(in);
    assert_non_null(b);
    for (int i = 0; i < n; i++) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        spool_record r = {.key = (const uint8_t *)key,
                          .key_len = (int32_t)strlen(key),
                          .value = (const uint8_t *)val,
                          .value_len = (int32_t)strlen(val),
                          .partition = -1,
                          .offset = -1};
        assert_int_equal(spool_batch_append(b, &r), 0);
        if (late_topic && i % 5 == 0) {
            assert_int_equal(spool_batch_set_topic(b, (size_t)i, late_topic), 0);
        }
    }
    return b;
}

/* Records to two topics, by key over 4 partitions, and a position: one commit. */
static void records_and_position_in_one_commit(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "alerts", 4, 0);
    h_topic(h, "late", 1, 0);
    h_start(h, 5000);
    spool_instance *in = h_input(h, "stream.s", 0);

    spool_batch *b = keyed_batch(in, 40, "late");
    int64_t pos = 1234;
    assert_int_equal(spool_batch_set_position(b, "auth/0", &pos, sizeof(pos)), 0);
    assert_int_equal(spool__writer_append_direct(&h->svc, b), 0);
    /* Durable when it answered: the position and every record. */
    assert_int_equal(position_of(h, "stream.s/auth/0"), 1234);
    assert_int_equal(h_topic_end(h, 0), 32);
    assert_int_equal(h_end(h, 1, 0), 8);
    /* Each record in its key's partition, not all in one. */
    int64_t total = 0;
    int nonempty = 0;
    for (int32_t p = 0; p < 4; p++) {
        char **vals;
        size_t n = h_values(h, 0, p, &vals);
        for (size_t i = 0; i < n; i++) {
            int k = atoi(vals[i] + 1);
            char key[32];
            snprintf(key, sizeof(key), "k%d", k);
            assert_int_equal(spool_partition_for_key(key, strlen(key), 4), p);
        }
        total += (int64_t)n;
        nonempty += n > 0;
        h_free_values(vals, n);
    }
    assert_int_equal(total, 32);
    assert_true(nonempty > 1);

    h_stop(h);
    spool__instance_free(in);
    h_free(h);
}

/* A read that emits nothing still moves the stream's position. */
static void empty_batch_moves_position(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "alerts", 1, 0);
    h_start(h, 5000);
    spool_instance *in = h_input(h, "stream.s", 0);
    for (int64_t pos = 10; pos <= 30; pos += 10) {
        spool_batch *b = spool_batch_create(in);
        assert_non_null(b);
        assert_int_equal(spool_batch_set_position(b, "auth/1", &pos, sizeof(pos)), 0);
        assert_int_equal(spool__writer_append_direct(&h->svc, b), 0);
        assert_int_equal(position_of(h, "stream.s/auth/1"), pos);
    }
    assert_int_equal(h_end(h, 0, 0), 0);
    h_stop(h);
    spool__instance_free(in);
    h_free(h);
}

/* A full topic refuses: nothing of the batch is recorded, the position stays. */
static void refused_batch_records_nothing(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "full", 1, 16 << 10);
    h_start(h, 5000);
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, 0), 0);
    spool_instance *in = h_input(h, "stream.s", 0);
    int64_t pos = 0;
    int rc = 0;
    for (int k = 0; k < 200 && rc == 0; k++) {
        spool_batch *b = h_batch(in, "x", k * 10, 10, 400, NULL);
        pos = k + 1;
        assert_int_equal(spool_batch_set_position(b, "auth/0", &pos, sizeof(pos)), 0);
        rc = spool__writer_append_direct(&h->svc, b);
    }
    assert_int_equal(rc, -EAGAIN);
    int64_t end = h_end(h, 0, 0);
    assert_int_equal(position_of(h, "stream.s/auth/0"), pos - 1);
    assert_int_equal(end, (pos - 1) * 10);
    h_stop(h);
    spool__instance_free(in);
    h_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(records_and_position_in_one_commit),
        cmocka_unit_test(empty_batch_moves_position),
        cmocka_unit_test(refused_batch_records_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
