/*
 * test_sample.c: the `sample` processor (processors/sample/sample.c) and the bounded key table
 * it shares with throttle (processors/keytable.c): 1 in N kept per key, the first of each N,
 * across batches; keys from a template or the record key; eviction at max_keys, counted; the
 * drop metric with reason "sample"; option errors.
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
#include "../../processors/keytable.h"

#define DROPS "spool_processor_dropped_total"

/* Which of b's records survived, as a string of their values. */
static void kept(spool_batch *b, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < spool_batch_count(b); i++) {
        strncat(out, ph_value(b, i), cap - strlen(out) - 1);
    }
}

static void test_one_in_n_per_key(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: sample\n    rate: 3\n    key: \"{{ host }}\"\n");
    int64_t drops0 = ph_metric(h, DROPS, "reason=\"sample\"");
    spool_batch *b = ph_batch(h);
    /* a: 0..6, b: A..D interleaved */
    const char *vals[] = {"0", "A", "1", "2", "B", "3", "C", "4", "D", "5", "6"};
    const char *hosts[] = {"a", "b", "a", "a", "b", "a", "b", "a", "b", "a", "a"};
    for (size_t i = 0; i < 11; i++) {
        ph_add(b, vals[i], NULL, "host", hosts[i], NULL, NULL);
    }
    assert_int_equal(ph_process(h, b), 0);
    char s[64];
    kept(b, s, sizeof(s));
    assert_string_equal(s, "0A3D6"); /* a: 0,3,6 (1st, 4th, 7th); b: A, D (1st, 4th) */
    spool_batch_destroy(b);
    /* The counters carry over to the next batch: a saw 7 (next keep at 9th), b saw 4. */
    b = ph_batch(h);
    const char *v2[] = {"7", "E", "8", "F", "G", "9"};
    const char *h2[] = {"a", "b", "a", "b", "b", "a"};
    for (size_t i = 0; i < 6; i++) {
        ph_add(b, v2[i], NULL, "host", h2[i], NULL, NULL);
    }
    assert_int_equal(ph_process(h, b), 0);
    kept(b, s, sizeof(s));
    assert_string_equal(s, "G9"); /* b's 7th = G, a's 10th = 9 */
    assert_int_equal(ph_metric(h, DROPS, "reason=\"sample\"") - (drops0 < 0 ? 0 : drops0),
                     (11 - 5) + (6 - 2));
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_rate_one_keeps_all(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: sample\n    rate: 1\n");
    spool_batch *b = ph_batch(h);
    for (int i = 0; i < 5; i++) {
        ph_add(b, "x", "k", NULL, NULL, NULL, NULL);
    }
    assert_int_equal(ph_process(h, b), 0);
    assert_int_equal(spool_batch_count(b), 5);
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_record_key_default(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: sample\n    rate: 2\n");
    spool_batch *b = ph_batch(h);
    /* keys k1 k1 k2 k2 k1 none none: keep k1#1, k2#1, k1#3, none#1 */
    ph_add(b, "a", "k1", NULL, NULL, NULL, NULL);
    ph_add(b, "b", "k1", NULL, NULL, NULL, NULL);
    ph_add(b, "c", "k2", NULL, NULL, NULL, NULL);
    ph_add(b, "d", "k2", NULL, NULL, NULL, NULL);
    ph_add(b, "e", "k1", NULL, NULL, NULL, NULL);
    ph_add(b, "f", NULL, NULL, NULL, NULL, NULL);
    ph_add(b, "g", NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(ph_process(h, b), 0);
    char s[64];
    kept(b, s, sizeof(s));
    assert_string_equal(s, "acef");
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_eviction_counted(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: sample\n    rate: 2\n    max_keys: 2\n    key: \"{{ h }}\"\n");
    int64_t ev0 = ph_metric(h, "spool_sample_evictions_total", "name=\"sample.0\"");
    assert_true(ev0 >= 0);
    spool_batch *b = ph_batch(h);
    /* a a(drop) b c(evicts a) a(new: kept) b(evicted? no: b was used after a) */
    ph_add(b, "1", NULL, "h", "a", NULL, NULL); /* a#1 kept */
    ph_add(b, "2", NULL, "h", "a", NULL, NULL); /* a#2 dropped */
    ph_add(b, "3", NULL, "h", "b", NULL, NULL); /* b#1 kept */
    ph_add(b, "4", NULL, "h", "c", NULL, NULL); /* c#1 kept, evicts a (LRU) */
    ph_add(b, "5", NULL, "h", "b", NULL, NULL); /* b#2 dropped */
    ph_add(b, "6", NULL, "h", "a", NULL, NULL); /* a again: new, kept; evicts c */
    ph_add(b, "7", NULL, "h", "b", NULL, NULL); /* b#3 kept */
    assert_int_equal(ph_process(h, b), 0);
    char s[64];
    kept(b, s, sizeof(s));
    assert_string_equal(s, "13467");
    assert_int_equal(ph_metric(h, "spool_sample_evictions_total", "name=\"sample.0\"") - ev0, 2);
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_option_errors(void **state)
{
    (void)state;
    ph *h = ph_load("  - type: sample\n");
    char *e = ph_errors(h);
    assert_non_null(strstr(e, "9:5: processors[0]: missing required option 'rate'"));
    free(e);
    ph_free(h);
    h = ph_load("  - type: sample\n    rate: 2\n    key: \"{{ host\"\n");
    e = ph_errors(h);
    assert_non_null(strstr(e, "11:10: processors[0].key: bad template"));
    free(e);
    ph_free(h);
    h = ph_load("  - type: sample\n    rate: 0\n");
    e = ph_errors(h);
    assert_non_null(strstr(e, "10:11: processors[0].rate: out of range"));
    free(e);
    ph_free(h);
}

/* The key table alone: many keys through a small table, lookups stay right after evictions
 * and index growth (backward-shift deletion keeps every probe run whole). */
static void test_keytable_churn(void **state)
{
    (void)state;
    keytable t;
    keytable_init(&t, 100);
    char key[32];
    int fresh;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++) {
            int n = snprintf(key, sizeof(key), "key-%d", i);
            int64_t *s = keytable_get(&t, key, (size_t)n, &fresh);
            assert_non_null(s);
            assert_int_equal(fresh, 1); /* 1000 keys through 100 slots: always forgotten */
            s[0] = i;
        }
    }
    assert_int_equal(t.count, 100);
    assert_int_equal(t.evictions, 3000 - 100);
    /* The last 100 are all there, with their values. */
    for (int i = 900; i < 1000; i++) {
        int n = snprintf(key, sizeof(key), "key-%d", i);
        int64_t *s = keytable_get(&t, key, (size_t)n, &fresh);
        assert_int_equal(fresh, 0);
        assert_int_equal(s[0], i);
    }
    assert_non_null(keytable_get(&t, "", 0, &fresh)); /* the empty key is a key */
    assert_int_equal(fresh, 1);
    assert_non_null(keytable_get(&t, "", 0, &fresh));
    assert_int_equal(fresh, 0);
    keytable_free(&t);
}

/* The key table against a model LRU (an array ordered by recency): random keys from a space
 * three times the table, 20000 lookups; every answer (fresh or not, the value kept) and every
 * eviction as the model says. Deterministic (a fixed xorshift seed). */
static void test_keytable_model(void **state)
{
    (void)state;
    enum { MAX = 64, SPACE = 192, OPS = 20000 };
    keytable t;
    keytable_init(&t, MAX);
    int model[MAX]; /* keys, most recent first */
    size_t nmodel = 0;
    uint64_t evictions = 0;
    uint32_t x = 2463534242u;
    for (int op = 0; op < OPS; op++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        int k = (int)(x % SPACE);
        char key[16];
        int n = snprintf(key, sizeof(key), "k%d", k);
        size_t at = nmodel;
        for (size_t i = 0; i < nmodel; i++) {
            if (model[i] == k) {
                at = i;
            }
        }
        int want_fresh = at == nmodel;
        if (want_fresh && nmodel == MAX) {
            nmodel--; /* the least recent goes */
            evictions++;
        }
        size_t from = want_fresh ? nmodel : at;
        memmove(&model[1], &model[0], from * sizeof(model[0]));
        model[0] = k;
        if (want_fresh) {
            nmodel++;
        }
        int fresh;
        int64_t *slot = keytable_get(&t, key, (size_t)n, &fresh);
        assert_non_null(slot);
        assert_int_equal(fresh, want_fresh);
        if (!fresh) {
            assert_int_equal(slot[0], k + 1); /* what was stored when it entered */
        }
        slot[0] = k + 1;
    }
    assert_int_equal(t.count, nmodel);
    assert_int_equal(t.evictions, evictions);
    keytable_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_in_n_per_key),   cmocka_unit_test(test_rate_one_keeps_all),
        cmocka_unit_test(test_record_key_default), cmocka_unit_test(test_eviction_counted),
        cmocka_unit_test(test_option_errors),      cmocka_unit_test(test_keytable_churn),
        cmocka_unit_test(test_keytable_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
