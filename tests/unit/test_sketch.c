/*
 * test_sketch.c: the view sketches (streams/sketch.c) within their stated
 * errors. HyperLogLog (p = 12): standard error 1.04 / sqrt(4096) = 1.625%;
 * on 1e5 distinct values each estimate must be within 3 standard errors
 * and the mean error over the seeds within 1 standard error; merging equals
 * adding the union. DDSketch (alpha = 1%): every quantile within 1% of the
 * exact value of rank floor(q (n - 1)), for positive, negative, zero and
 * wide-range values; merging two sketches answers like one over both.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sketch.h"

static uint64_t rs;
static uint64_t rnd(void)
{
    rs ^= rs >> 12;
    rs ^= rs << 25;
    rs ^= rs >> 27;
    return rs * 0x2545f4914f6cdd1dULL;
}
static double unif(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static void test_hll_error(void **st)
{
    const double se = 1.04 / sqrt((double)SX_HLL_M);
    double sum_err = 0;
    int seeds = 8;
    sx_hll *h = malloc(sizeof(*h));
    for (int seed = 1; seed <= seeds; seed++) {
        sx_hll_clear(h);
        char buf[32];
        const int n = 100000;
        for (int i = 0; i < n; i++) {
            int len = snprintf(buf, sizeof(buf), "user-%d-%d", seed, i);
            sx_hll_add(h, buf, (size_t)len);
            if (i % 3 == 0) { /* repeats change nothing */
                sx_hll_add(h, buf, (size_t)len);
            }
        }
        double err = (sx_hll_estimate(h) - n) / n;
        assert_true(fabs(err) <= 3 * se);
        sum_err += fabs(err);
    }
    assert_true(sum_err / seeds <= se);
    /* Small sets: linear counting is near exact. */
    sx_hll_clear(h);
    assert_true(sx_hll_estimate(h) == 0);
    for (int i = 0; i < 100; i++) {
        sx_hll_add(h, &i, sizeof(i));
    }
    assert_true(fabs(sx_hll_estimate(h) - 100) <= 3);
    free(h);
}

static void test_hll_merge(void **st)
{
    sx_hll *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b)), *u = calloc(1, sizeof(*u));
    for (int i = 0; i < 30000; i++) {
        sx_hll_add(i % 2 ? a : b, &i, sizeof(i));
        sx_hll_add(u, &i, sizeof(i));
    }
    sx_hll_merge(a, b);
    assert_memory_equal(a->reg, u->reg, SX_HLL_M);
    free(a);
    free(b);
    free(u);
}

static int cmp_dbl(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static void check_quantiles(const sx_dds *d, double *v, size_t n)
{
    qsort(v, n, sizeof(double), cmp_dbl);
    for (double q = 0; q <= 1.0; q += 0.01) {
        double exact = v[(size_t)floor(q * (double)(n - 1))];
        double est = sx_dds_quantile(d, q);
        if (fabs(est - exact) > SX_DDS_ALPHA * fabs(exact) * (1 + 1e-9)) {
            fprintf(stderr, "q=%g exact=%.17g est=%.17g\n", q, exact, est);
            fail();
        }
    }
    double q99 = v[(size_t)floor(0.99 * (double)(n - 1))];
    assert_true(fabs(sx_dds_quantile(d, 0.99) - q99) <= SX_DDS_ALPHA * fabs(q99) * (1 + 1e-9));
}

static void test_dds_relative_error(void **st)
{
    for (int seed = 1; seed <= 6; seed++) {
        rs = (uint64_t)seed * 0x9e3779b97f4a7c15ULL;
        size_t n = 20000;
        double *v = malloc(n * sizeof(double));
        sx_dds d = {0};
        for (size_t i = 0; i < n; i++) {
            double x;
            switch (seed % 3) {
            case 0: /* latencies: log-uniform over 6 decades */
                x = pow(10, unif() * 6 - 1);
                break;
            case 1: /* mixed signs and zeros */
                x = (rnd() % 10 == 0) ? 0 : (unif() * 2000 - 1000);
                break;
            default: /* integers 1..1000 with heavy repeats */
                x = (double)(rnd() % 1000 + 1);
                break;
            }
            v[i] = x;
            assert_int_equal(sx_dds_add(&d, x), 0);
        }
        assert_int_equal(d.total, n);
        check_quantiles(&d, v, n);
        free(v);
        sx_dds_free(&d);
    }
}

static void test_dds_merge_and_bucket_bound(void **st)
{
    rs = 99;
    size_t n = 10000;
    double *v = malloc(n * sizeof(double));
    sx_dds a = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        v[i] = pow(10, unif() * 4);
        assert_int_equal(sx_dds_add(i % 3 ? &a : &b, v[i]), 0);
    }
    assert_int_equal(sx_dds_merge(&a, &b), 0);
    check_quantiles(&a, v, n);
    /* Every bucket answers within alpha of each value it holds. */
    for (int i = 0; i < 10000; i++) {
        double x = pow(10, unif() * 18 - 9);
        double y = sx_dds_value(sx_dds_index(x));
        assert_true(fabs(y - x) <= SX_DDS_ALPHA * x * (1 + 1e-9));
    }
    assert_true(isnan(sx_dds_quantile(&(sx_dds){0}, 0.5)));
    free(v);
    sx_dds_free(&a);
    sx_dds_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hll_error),
        cmocka_unit_test(test_hll_merge),
        cmocka_unit_test(test_dds_relative_error),
        cmocka_unit_test(test_dds_merge_and_bucket_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
