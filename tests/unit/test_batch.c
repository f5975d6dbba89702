/*
 * test_batch.c: the record mutation API processors use (spool.h,
 * "Processors: changing records"): each mutation and the getters after it,
 * pointer validity across arena growth during process(), drop and emit
 * order, the drop metric, the memory account, and the split by topic after
 * the chain (positions recorded by the part written last, the durable
 * handle done when every part is).
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
#include "metrics.h"
#include "svc_harness.h"

static int64_t drop_value;

static void find_drop(void *arg, const spool_metric_sample *s)
{
    (void)arg;
    if (strcmp(s->name, "spool_processor_dropped_total") == 0 &&
        strcmp(s->labels, "processor=\"proc1\",reason=\"noise\"") == 0) {
        drop_value = s->value;
    }
}

static spool_topic_conf topics[3];
static spool_service_conf conf;
static spool_service svc;
static spool_instance ins, proc;

static void setup_service(void)
{
    memset(topics, 0, sizeof(topics));
    topics[0].name = "main";
    topics[1].name = "audit";
    topics[2].name = "debug";
    conf.topics = topics;
    conf.ntopics = 3;
    svc.conf = &conf;
    ins.svc = &svc;
    ins.name = "in";
    ins.topic = 0;
    proc.svc = &svc;
    proc.name = "proc1";
}

static void add(spool_batch *b, const char *value, const char *hk, const char *hv)
{
    spool_header h = {hk, hk ? (uint32_t)strlen(hk) : 0, (const uint8_t *)hv,
                      hv ? (int32_t)strlen(hv) : -1};
    spool_record r = {0};
    r.key_len = -1;
    r.value = (const uint8_t *)value;
    r.value_len = (int32_t)strlen(value);
    r.headers = hk ? &h : NULL;
    r.header_count = hk ? 1 : 0;
    r.timestamp = 1000;
    assert_int_equal(spool_batch_append(b, &r), 0);
}

static void assert_value(spool_batch *b, size_t i, const char *v)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    assert_int_equal(r.value_len, (int32_t)strlen(v));
    assert_memory_equal(r.value, v, strlen(v));
}

static void test_value_timestamp(void **state)
{
    (void)state;
    spool_batch *b = spool_batch_create(&ins);
    add(b, "hello", NULL, NULL);
    size_t bytes0 = spool_batch_bytes(b);
    spool__batch_begin_process(b, &proc);
    assert_int_equal(spool_batch_set_value(b, 0, "hi", 2), 0);
    assert_value(b, 0, "hi");
    assert_int_equal(spool_batch_bytes(b), bytes0 - 3);
    assert_int_equal(spool_batch_set_value(b, 0, NULL, 0), 0);
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_null(r.value);
    assert_int_equal(r.value_len, -1);
    assert_int_equal(spool_batch_set_timestamp(b, 0, 42), 0);
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.timestamp, 42);
    assert_int_equal(spool_batch_set_value(b, 1, "x", 1), -EINVAL);
    assert_int_equal(spool__batch_end_process(b), 0);
    spool_batch_destroy(b);
}

static void test_headers(void **state)
{
    (void)state;
    spool_batch *b = spool_batch_create(&ins);
    add(b, "a", "path", "/var/log/x");
    add(b, "b", "path", "/var/log/y");
    spool__batch_begin_process(b, &proc);
    assert_int_equal(spool_batch_add_header(b, 0, "env", "prod", 4), 0);
    assert_int_equal(spool_batch_add_header(b, 0, "env", "dev", 3), 0);
    assert_int_equal(spool_batch_set_header(b, 0, "path", "/p", 2), 0);
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.header_count, 3);
    assert_memory_equal(r.headers[0].key, "path", 4); /* set keeps the position */
    assert_memory_equal(r.headers[0].value, "/p", 2);
    assert_memory_equal(r.headers[1].value, "prod", 4);
    assert_memory_equal(r.headers[2].value, "dev", 3);
    const spool_header *h = spool_batch_header(b, 0, "env");
    assert_non_null(h);
    assert_memory_equal(h->value, "prod", 4);
    assert_int_equal(spool_batch_remove_header(b, 0, "env"), 0);
    assert_null(spool_batch_header(b, 0, "env"));
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.header_count, 1);
    assert_int_equal(spool_batch_set_header(b, 0, "new", NULL, 0), 0);
    h = spool_batch_header(b, 0, "new");
    assert_non_null(h);
    assert_null(h->value);
    assert_int_equal(h->value_len, -1);
    assert_int_equal(spool_batch_remove_header(b, 0, "absent"), 0);
    /* record 1 untouched */
    h = spool_batch_header(b, 1, "path");
    assert_non_null(h);
    assert_memory_equal(h->value, "/var/log/y", 10);
    assert_int_equal(spool__batch_end_process(b), 0);
    spool_batch_destroy(b);
}

/* Views of record 0 survive the arena and view arrays growing (several
 * times) from changes to other records during process(). */
static void test_views_survive_growth(void **state)
{
    (void)state;
    spool_batch *b = spool_batch_create(&ins);
    for (int i = 0; i < 10; i++) {
        add(b, "v", "h", "first");
    }
    int64_t mem0 = spool__mem_reserved();
    spool__batch_begin_process(b, &proc);
    spool_record r0;
    spool_batch_get(b, 0, &r0);
    const spool_header *h0 = spool_batch_header(b, 0, "h");
    uint8_t *big = malloc(300000);
    memset(big, 'x', 300000);
    size_t acap0 = b->acap;
    for (int k = 0; k < 20; k++) {
        assert_int_equal(spool_batch_set_value(b, 1 + (size_t)(k % 9), big, 300000), 0);
        assert_int_equal(spool_batch_add_header(b, 1 + (size_t)(k % 9), "n", "v", 1), 0);
        spool_record rr;
        spool_batch_get(b, 1, &rr);
    }
    assert_true(b->acap > acap0);
    assert_true(b->nretired > 0);
    assert_memory_equal(r0.value, "v", 1);
    assert_memory_equal(r0.headers[0].value, "first", 5);
    assert_memory_equal(h0->value, "first", 5);
    assert_true(spool__mem_reserved() > mem0);
    assert_int_equal(spool__batch_end_process(b), 0);
    assert_int_equal(b->nretired, 0);
    free(big);
    spool_batch_destroy(b);
    spool__batch_pool_trim();
    assert_true(spool__mem_reserved() <= mem0); /* everything given back */
}

static void test_drop_emit_order(void **state)
{
    (void)state;
    spool_batch *b = spool_batch_create(&ins);
    add(b, "r0", NULL, NULL);
    add(b, "r1", NULL, NULL);
    add(b, "r2", NULL, NULL);
    spool__batch_begin_process(b, &proc);
    spool_record e = {0};
    e.key_len = -1;
    e.value = (const uint8_t *)"e1a";
    e.value_len = 3;
    assert_int_equal(spool_batch_emit(b, 1, &e), 0);
    e.value = (const uint8_t *)"e0";
    e.value_len = 2;
    assert_int_equal(spool_batch_emit(b, 0, &e), 0);
    e.value = (const uint8_t *)"e1b";
    e.value_len = 3;
    assert_int_equal(spool_batch_emit(b, 1, &e), 0);
    assert_int_equal(spool_batch_count(b), 3); /* emitted not visible yet */
    assert_int_equal(spool_batch_drop(b, 1, "noise"), 0);
    assert_int_equal(spool_batch_drop(b, 2, "noise"), 0);
    assert_int_equal(spool_batch_set_value(b, 2, "x", 1), -ENOENT);
    assert_int_equal(spool_batch_emit(b, 3, &e), -EINVAL);
    assert_int_equal(spool__batch_end_process(b), 0);
    const char *want[] = {"r0", "e0", "e1a", "e1b"};
    assert_int_equal(spool_batch_count(b), 4);
    for (size_t i = 0; i < 4; i++) {
        assert_value(b, i, want[i]);
    }
    spool_record r;
    spool_batch_get(b, 1, &r);
    assert_true(r.timestamp > 0); /* timestamp 0 = now */
    assert_int_equal(spool_batch_bytes(b), 2 + 2 + 3 + 3);
    /* the metric: one series, counted twice */
    spool_metrics_foreach(&svc, find_drop, NULL);
    assert_int_equal(drop_value, 2);
    spool_batch_destroy(b);
}

static int field_is(const spool_record *r, const char *topic, const char *name, const char *want)
{
    char scratch[SPOOL_FIELD_SCRATCH];
    const uint8_t *v = NULL;
    size_t n = 0;
    if (!spool_record_field(r, topic, name, strlen(name), scratch, &v, &n)) {
        return want == NULL;
    }
    return want && n == strlen(want) && memcmp(v, want, n) == 0;
}

static void test_record_field(void **state)
{
    (void)state;
    spool_header h[3] = {
        {"status", 6, (const uint8_t *)"503", 3},
        {"value", 5, (const uint8_t *)"shadowed", 8},
        {"nullh", 5, NULL, -1},
    };
    spool_record r = {.key = (const uint8_t *)"k1",
                      .key_len = 2,
                      .value = (const uint8_t *)"line",
                      .value_len = 4,
                      .headers = h,
                      .header_count = 3,
                      .timestamp = 1700000000123};
    assert_true(field_is(&r, "app", "status", "503"));
    assert_true(field_is(&r, "app", "value", "line")); /* record parts win over headers */
    assert_true(field_is(&r, "app", "key", "k1"));
    assert_true(field_is(&r, "app", "timestamp", "1700000000123"));
    assert_true(field_is(&r, "app", "topic", "app"));
    assert_true(field_is(&r, NULL, "topic", NULL));
    assert_true(field_is(&r, "app", "nullh", NULL));
    assert_true(field_is(&r, "app", "missing", NULL));
    assert_true(field_is(&r, "app", "statu", NULL)); /* whole names only */
    r.key = NULL;
    r.key_len = -1;
    r.value_len = 0;
    assert_true(field_is(&r, "app", "key", NULL));
    assert_true(field_is(&r, "app", "value", ""));
}

static void test_split_by_topic(void **state)
{
    (void)state;
    spool_batch *b = spool_batch_create(&ins);
    b->topic = 0;
    for (int i = 0; i < 6; i++) {
        char v[8];
        snprintf(v, sizeof(v), "r%d", i);
        add(b, v, NULL, NULL);
    }
    assert_int_equal(spool_batch_set_position(b, "file", "pos", 3), 0);
    spool__durable *d = spool__durable_new();
    b->durable = d;
    spool__batch_begin_process(b, &proc);
    assert_int_equal(spool_batch_set_topic(b, 1, "audit"), 0);
    assert_int_equal(spool_batch_set_topic(b, 3, "debug"), 0);
    assert_int_equal(spool_batch_set_topic(b, 4, "audit"), 0);
    assert_int_equal(spool_batch_set_topic(b, 5, "nope"), -ENOENT);
    assert_string_equal(spool_batch_topic(b, 4), "audit");
    assert_string_equal(spool_batch_topic(b, 0), "main");
    assert_int_equal(spool__batch_end_process(b), 0);
    spool_batch **parts;
    size_t n;
    assert_int_equal(spool__batch_split(b, &parts, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(parts[0]->topic, 0);
    assert_int_equal(parts[1]->topic, 1);
    assert_int_equal(parts[2]->topic, 2);
    assert_int_equal(spool_batch_count(parts[0]), 3);
    assert_value(parts[0], 0, "r0");
    assert_value(parts[0], 1, "r2");
    assert_value(parts[0], 2, "r5");
    assert_value(parts[1], 0, "r1");
    assert_value(parts[1], 1, "r4");
    assert_value(parts[2], 0, "r3");
    /* Positions: recorded by whichever part the writer finishes last
     * (here the middle one, as if the first part's topic were parked). */
    assert_int_equal(parts[0]->npos + parts[1]->npos + parts[2]->npos, 0);
    assert_true(spool__batch_replayable(parts[0]));
    assert_int_equal(spool__batch_records_written(parts[2]), 0);
    assert_int_equal(spool__batch_records_written(parts[2]), 0); /* idempotent */
    assert_int_equal(parts[2]->npos, 0);
    assert_int_equal(spool__batch_records_written(parts[0]), 0);
    assert_int_equal(parts[0]->npos, 0);
    assert_int_equal(spool__batch_records_written(parts[1]), 0);
    assert_int_equal(parts[1]->npos, 1);
    assert_string_equal(parts[1]->pos[0].source, "in/file");
    assert_memory_equal(parts[1]->pos[0].pos, "pos", 3);
    assert_ptr_equal(parts[0]->durable, d);
    assert_ptr_equal(parts[2]->durable, d);
    /* the writer commits parts one by one: done only after the last */
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(spool__durable_wait(d, 0), -ETIMEDOUT);
        spool__durable_done(parts[k]->durable, 0);
        spool__durable_release(parts[k]->durable);
        parts[k]->durable = NULL;
        spool_batch_destroy(parts[k]);
    }
    assert_int_equal(spool__durable_wait(d, 0), 0);
    spool__durable_release(d);
    free(parts);
}

static void test_split_failure_and_none(void **state)
{
    (void)state;
    spool_batch *b = spool_batch_create(&ins);
    add(b, "a", NULL, NULL);
    add(b, "b", NULL, NULL);
    spool__durable *d = spool__durable_new();
    b->durable = d;
    spool__batch_begin_process(b, &proc);
    assert_int_equal(spool_batch_set_topic(b, 0, "main"), 0); /* its own topic: no split */
    assert_int_equal(spool_batch_set_topic(b, 1, "audit"), 0);
    assert_int_equal(spool_batch_set_topic(b, 1, "main"), 0);
    assert_int_equal(spool__batch_end_process(b), 0);
    spool_batch **parts;
    size_t n;
    assert_int_equal(spool__batch_split(b, &parts, &n), 0);
    assert_null(parts);
    assert_int_equal(n, 1);
    spool_batch *keep = b;
    /* a part given up: the positions are never recorded (freed with the
     * parts), so the source replays */
    b = spool_batch_create(&ins);
    add(b, "a", NULL, NULL);
    add(b, "b", NULL, NULL);
    assert_int_equal(spool_batch_set_position(b, "file", "p", 1), 0);
    spool__batch_begin_process(b, &proc);
    assert_int_equal(spool_batch_set_topic(b, 1, "audit"), 0);
    assert_int_equal(spool__batch_end_process(b), 0);
    assert_int_equal(spool__batch_split(b, &parts, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(spool__batch_records_written(parts[1]), 0);
    assert_int_equal(parts[1]->npos, 0);
    spool_batch_destroy(parts[0]);
    spool_batch_destroy(parts[1]);
    free(parts);
    /* a failing part fails the whole durable submit at once */
    spool__durable_add_part(d);
    assert_int_equal(spool__durable_wait(d, 0), -ETIMEDOUT);
    spool__durable_done(d, -EIO);
    assert_int_equal(spool__durable_wait(d, 0), -EIO);
    spool__durable_release(d); /* the extra part's */
    spool__durable_release(d); /* the submitter's */
    spool_batch_destroy(keep); /* the writer's */
}

/* ---- through the real processor stage and writer ---- */

/* Records "t-0000000N": odd N go to topic "b", N == 2 is dropped, N == 4
 * emits "extra" after itself, every record gets header seen=1. */
static int mut_process(spool_instance *pins, void *ctx, spool_batch *b)
{
    (void)pins;
    (void)ctx;
    size_t n = spool_batch_count(b);
    for (size_t i = 0; i < n; i++) {
        spool_record r;
        spool_batch_get(b, i, &r);
        int k = r.value[r.value_len - 1] - '0';
        if (spool_batch_set_header(b, i, "seen", "1", 1) < 0) {
            return -ENOMEM;
        }
        if (k == 2) {
            spool_batch_drop(b, i, "even-two");
        } else if (k % 2) {
            assert_int_equal(spool_batch_set_topic(b, i, "b"), 0);
        } else if (k == 4) {
            spool_record e = {.key_len = -1, .value = (const uint8_t *)"extra", .value_len = 5};
            assert_int_equal(spool_batch_emit(b, i, &e), 0);
        }
    }
    return 0;
}

static const spool_plugin mut_plugin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "mut",
    .process = mut_process,
};

static void test_pipeline_split(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "a", 1, 0);
    h_topic(h, "b", 1, 0);
    spool_instance *pr = spool__instance_new(&mut_plugin, SPOOL_PLUGIN_PROCESSOR, 0, "mut");
    assert_non_null(pr);
    spool_instance *procs[1] = {pr};
    h->conf.processors = procs;
    h->conf.nprocessors = 1;
    h_start(h, 5000);
    pr->svc = &h->svc;
    spool_instance *in = h_input(h, "src-in", 0);
    /* a durable submit is answered only when both parts are durable */
    assert_int_equal(spool_input_submit_durable(in, h_batch(in, "t", 0, 8, 0, "p8"), 10000), 0);
    assert_int_equal(h_topic_end(h, 0), 4); /* 0 4 extra 6 */
    assert_int_equal(h_topic_end(h, 1), 4); /* 1 3 5 7 */
    char **vals;
    size_t n = h_values(h, 0, 0, &vals);
    const char *want_a[] = {"t-00000000", "t-00000004", "extra", "t-00000006"};
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(vals[i], want_a[i]);
    }
    h_free_values(vals, n);
    n = h_values(h, 1, 0, &vals);
    const char *want_b[] = {"t-00000001", "t-00000003", "t-00000005", "t-00000007"};
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(vals[i], want_b[i]);
    }
    h_free_values(vals, n);
    char pos[16];
    size_t plen = 0;
    assert_int_equal(spool_input_get_position(in, "src", pos, sizeof(pos), &plen), 0);
    assert_int_equal(plen, 2);
    assert_memory_equal(pos, "p8", 2);
    assert_int_equal(
        h_metric(h, "spool_processor_dropped_total", "processor=\"mut\",reason=\"even-two\""), 1);
    h_stop(h);
    spool__instance_free(in);
    spool__instance_free(pr);
    h_free(h);
}

/* Records whose value starts with "tofull" go to topic "full". */
static int route_process(spool_instance *pins, void *ctx, spool_batch *b)
{
    (void)pins;
    (void)ctx;
    for (size_t i = 0; i < spool_batch_count(b); i++) {
        spool_record r;
        spool_batch_get(b, i, &r);
        if (r.value_len >= 6 && memcmp(r.value, "tofull", 6) == 0) {
            assert_int_equal(spool_batch_set_topic(b, i, "full"), 0);
        }
    }
    return 0;
}

static const spool_plugin route_plugin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "route",
    .process = route_process,
};

static int blocked(void *arg)
{
    return atomic_load(&((harness *)arg)->svc.writer_blocked);
}

static spool_instance *pos_in;

static int pos_recorded(void *arg)
{
    char pos[16];
    size_t plen = 0;
    (void)arg;
    return spool_input_get_position(pos_in, "src", pos, sizeof(pos), &plen) == 0;
}

/* One part of a split batch parked behind a full topic: the other part is
 * written, but the batch's position waits until the parked part lands. */
static void test_pipeline_split_parked(void **state)
{
    (void)state;
    harness *h = h_new();
    h_topic(h, "full", 1, 64 << 10);
    h_topic(h, "free", 1, 0);
    spool_instance *pr = spool__instance_new(&route_plugin, SPOOL_PLUGIN_PROCESSOR, 0, "route");
    assert_non_null(pr);
    spool_instance *procs[1] = {pr};
    h->conf.processors = procs;
    h->conf.nprocessors = 1;
    h_start(h, 5000);
    pr->svc = &h->svc;
    assert_int_equal(spool_plog_cursor_register(h->svc.log, "holder"), 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, 0), 0);
    spool_instance *a = h_input(h, "in-full", 0), *c = h_input(h, "in-free", 1);
    int sent = 0;
    for (int k = 0; k < 64 && !blocked(h); k++) {
        spool_batch *b = h_batch(a, "full", sent, 50, 400, NULL);
        int rc = spool_input_submit(a, b, 2000);
        if (rc == 0) {
            sent += 50;
        } else {
            assert_int_equal(rc, -EAGAIN); /* gated: the topic is parked */
            spool_batch_destroy(b);
        }
        h_wait_records(h, 0, sent, 200); /* let the writer see it (bounded) */
    }
    assert_true(h_wait(blocked, h, 10000));

    spool_batch *b = h_batch(c, "tofull", 0, 3, 0, NULL);
    spool_record r = {.key_len = -1, .value = (const uint8_t *)"free-0", .value_len = 6};
    assert_int_equal(spool_batch_append(b, &r), 0);
    assert_int_equal(spool_batch_set_position(b, "src", "p1", 2), 0);
    assert_int_equal(spool_input_submit(c, b, 2000), 0);
    assert_true(h_wait_records(h, 1, 1, 10000));
    pos_in = c;
    assert_false(pos_recorded(NULL)); /* its records in "full" are not in the log yet */

    int64_t end = h_end(h, 0, 0);
    assert_int_equal(spool_plog_cursor_set(h->svc.log, "holder", 0, 0, end), 0);
    assert_true(h_wait(pos_recorded, NULL, 10000));
    assert_true(h_wait_records(h, 0, sent + 3, 10000));
    h_stop(h);
    spool__instance_free(a);
    spool__instance_free(c);
    spool__instance_free(pr);
    h_free(h);
}

int main(void)
{
    setup_service();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_timestamp),        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_views_survive_growth),   cmocka_unit_test(test_drop_emit_order),
        cmocka_unit_test(test_record_field),           cmocka_unit_test(test_split_by_topic),
        cmocka_unit_test(test_split_failure_and_none), cmocka_unit_test(test_pipeline_split),
        cmocka_unit_test(test_pipeline_split_parked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
