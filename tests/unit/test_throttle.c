/*
 * test_throttle.c: the `throttle` processor (processors/throttle/throttle.c) on a clock the
 * test sets (throttle_set_clock): `limit` records per fixed window per key, the window opened
 * by the key's first record and renewed by the first record after it ends, keys independent,
 * eviction at max_keys, the drop metric with reason "throttle", option errors.
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
#include "predact_harness.h"
#include "../../processors/throttle/throttle.h"

#define DROPS "spool_processor_dropped_total"

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

/* Runs one batch of records with header h = hosts[i] at time `now`; returns the kept values
 * (the values are "0", "1", ... in order) as a string. */
static const char *run_at(ph *h, int64_t now, const char *hosts)
{
    static char out[128];
    fake_now = now;
    spool_batch *b = ph_batch(h);
    for (size_t i = 0; hosts[i]; i++) {
        char v[2] = {(char)('0' + i % 10), 0};
        char host[2] = {hosts[i], 0};
        ph_add(b, v, NULL, "h", host, NULL, NULL);
    }
    assert_int_equal(ph_process(h, b), 0);
    out[0] = '\0';
    for (size_t i = 0; i < spool_batch_count(b); i++) {
        strcat(out, ph_value(b, i));
    }
    spool_batch_destroy(b);
    return out;
}

static int setup(void **state)
{
    (void)state;
    throttle_set_clock(fake_clock);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    throttle_set_clock(NULL);
    return 0;
}

static void test_fixed_window(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: throttle\n    limit: 3\n    window: 10s\n    key: \"{{ h }}\"\n");
    int64_t d0 = ph_metric(h, DROPS, "processor=\"throttle.0\",reason=\"throttle\"");
    d0 = d0 < 0 ? 0 : d0;
    /* t=1000: a opens its window [1000, 11000); 3 pass, 2 dropped. */
    assert_string_equal(run_at(h, 1000, "aaaaa"), "012");
    /* t=5000: same window, full: all dropped. */
    assert_string_equal(run_at(h, 5000, "aa"), "");
    /* t=10999: still the same window. */
    assert_string_equal(run_at(h, 10999, "a"), "");
    /* t=11000: the window ended: a new one opens at 11000, to 21000. */
    assert_string_equal(run_at(h, 11000, "aaaa"), "012");
    assert_string_equal(run_at(h, 20999, "a"), "");
    /* A long pause: the next record opens a window at its own time, 50000. */
    assert_string_equal(run_at(h, 50000, "aa"), "01");
    assert_string_equal(run_at(h, 59999, "aa"), "0");
    assert_string_equal(run_at(h, 60000, "a"), "0");
    assert_int_equal(ph_metric(h, DROPS, "processor=\"throttle.0\",reason=\"throttle\"") - d0,
                     2 + 2 + 1 + 1 + 1 + 1);
    ph_free(h);
}

static void test_keys_independent(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: throttle\n    limit: 2\n    window: 1m\n    key: \"{{ h }}\"\n");
    /* a opens at 0, b at 0, c at 30s: each its own window and count. */
    assert_string_equal(run_at(h, 0,
                               "abab"
                               "ab"),
                        "0123");
    assert_string_equal(run_at(h, 30000, "cabc"), "03");
    /* a's and b's windows end at 60000, c's at 90000. */
    assert_string_equal(run_at(h, 60000, "abcab"), "0134");
    ph_free(h);
}

static void test_record_key_default(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: throttle\n    limit: 1\n    window: 1h\n");
    fake_now = 0;
    spool_batch *b = ph_batch(h);
    ph_add(b, "a", "k1", NULL, NULL, NULL, NULL);
    ph_add(b, "b", "k1", NULL, NULL, NULL, NULL);
    ph_add(b, "c", "k2", NULL, NULL, NULL, NULL);
    ph_add(b, "d", NULL, NULL, NULL, NULL, NULL);
    ph_add(b, "e", NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(ph_process(h, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_string_equal(ph_value(b, 0), "a");
    assert_string_equal(ph_value(b, 1), "c");
    assert_string_equal(ph_value(b, 2), "d");
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_eviction(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: throttle\n    limit: 1\n    window: 1h\n    max_keys: 2\n"
                     "    key: \"{{ h }}\"\n");
    int64_t ev0 = ph_metric(h, "spool_throttle_evictions_total", "name=\"throttle.0\"");
    assert_true(ev0 >= 0);
    /* a, b fill the table; c evicts a; a is new again (passes) and evicts b. */
    assert_string_equal(run_at(h, 0,
                               "abca"
                               "c"),
                        "0123");
    assert_int_equal(ph_metric(h, "spool_throttle_evictions_total", "name=\"throttle.0\"") - ev0,
                     2);
    ph_free(h);
}

static void test_option_errors(void **state)
{
    (void)state;
    ph *h = ph_load("  - type: throttle\n    limit: 5\n");
    char *e = ph_errors(h);
    assert_non_null(strstr(e, "9:5: processors[0]: missing required option 'window'"));
    free(e);
    ph_free(h);
    h = ph_load("  - type: throttle\n    limit: 5\n    window: 5 seconds\n");
    e = ph_errors(h);
    assert_non_null(strstr(e, "11:13: processors[0].window:"));
    free(e);
    ph_free(h);
    h = ph_load("  - type: throttle\n    limit: 0\n    window: 1s\n    key: \"{{\"\n");
    e = ph_errors(h);
    assert_non_null(strstr(e, "10:12: processors[0].limit: out of range"));
    free(e);
    ph_free(h);
    h = ph_load("  - type: throttle\n    limit: 1\n    window: 1s\n    key: \"{{\"\n");
    e = ph_errors(h);
    assert_non_null(strstr(e, "12:10: processors[0].key: bad template"));
    free(e);
    ph_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_window),       cmocka_unit_test(test_keys_independent),
        cmocka_unit_test(test_record_key_default), cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_option_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
