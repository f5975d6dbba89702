/*
 * test_stream_engine.c: the stream engine (streams/engine*.c) against small
 * reference implementations written here: brute force over the whole event
 * list, with plain arrays, no hashing, no heap, no pruning. Streams are
 * generated from a seeded PRNG (several seeds) with out-of-order and late
 * records; the engine's emitted sequence (what, when: after which input
 * record, in which order) must equal the reference's exactly (quantiles and
 * distinct counts within their sketches' stated errors). Snapshots: restore
 * at many cut points continues with the identical sequence, and corrupt or
 * foreign images are refused.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"
#include "spool/spool.h"

/* ---- generated events ---------------------------------------------------- */

typedef struct tev {
    int64_t ts;
    int key, ok, v, s, step;
    char kbuf[16], okbuf[4], vbuf[16], sbuf[16], stepbuf[4], value[24];
    spool_header h[5];
    spool_record r;
} tev;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dULL;
}
static int64_t rndn(int64_t n)
{
    return (int64_t)(rnd() % (uint64_t)n);
}

static void hset(spool_header *h, const char *k, const char *v)
{
    h->key = k;
    h->key_len = (uint32_t)strlen(k);
    h->value = (const uint8_t *)v;
    h->value_len = (int32_t)strlen(v);
}

static tev *gen(uint64_t seed, size_t n, int nkeys, int64_t lateness, int64_t step_ms)
{
    tev *e = calloc(n, sizeof(*e));
    assert_non_null(e);
    rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
    int64_t base = 1000000;
    for (size_t i = 0; i < n; i++) {
        /* Multiples of 250 ms: equal timestamps and spans of exactly
         * `within` or the lateness happen, so the boundaries are tested. */
        base += 250 * rndn(step_ms / 250 + 1);
        e[i].ts = base;
        if (rndn(5) == 0) {
            e[i].ts = base - 250 * rndn((2 * lateness) / 250 + 2); /* out of order, some late */
        }
        e[i].key = (int)rndn(nkeys);
        e[i].ok = rndn(3) != 0;
        e[i].v = (int)rndn(1000) - 100;
        e[i].s = (int)rndn(60);
        e[i].step = (int)rndn(3);
        snprintf(e[i].kbuf, sizeof(e[i].kbuf), "key%02d", e[i].key);
        snprintf(e[i].okbuf, sizeof(e[i].okbuf), "%d", e[i].ok);
        snprintf(e[i].vbuf, sizeof(e[i].vbuf), "%d", e[i].v);
        snprintf(e[i].sbuf, sizeof(e[i].sbuf), "s%d", e[i].s);
        snprintf(e[i].stepbuf, sizeof(e[i].stepbuf), "%c", 'a' + e[i].step);
        snprintf(e[i].value, sizeof(e[i].value), "line%zu", i);
        hset(&e[i].h[0], "k", e[i].kbuf);
        hset(&e[i].h[1], "ok", e[i].okbuf);
        hset(&e[i].h[2], "v", e[i].vbuf);
        hset(&e[i].h[3], "s", e[i].sbuf);
        hset(&e[i].h[4], "step", e[i].stepbuf);
        e[i].r = (spool_record){.key = NULL,
                                .key_len = -1,
                                .value = (const uint8_t *)e[i].value,
                                .value_len = (int32_t)strlen(e[i].value),
                                .headers = e[i].h,
                                .header_count = 5,
                                .timestamp = e[i].ts,
                                .partition = 0,
                                .offset = (int64_t)i};
    }
    return e;
}

/* ---- what was emitted ---------------------------------------------------- */

typedef struct out {
    size_t at;       /* input index after which it came (n = the final tick) */
    char line[1024]; /* exact part */
    double avg, distinct, p99;
    int has_avg, has_p99;
} out;

typedef struct outs {
    out *v;
    size_t n, cap;
    size_t at;
} outs;

static out *outs_push(outs *o)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->v = realloc(o->v, o->cap * sizeof(*o->v));
        assert_non_null(o->v);
    }
    out *x = &o->v[o->n++];
    memset(x, 0, sizeof(*x));
    x->at = o->at;
    return x;
}

static const char *hv(const spool_record *r, const char *name, char *buf, size_t cap)
{
    const spool_header *h = spool_record_header(r, name);
    if (h == NULL) {
        return "-";
    }
    if (h->value == NULL) {
        return "null";
    }
    snprintf(buf, cap, "%.*s", (int)h->value_len, (const char *)h->value);
    return buf;
}

static int capture(void *arg, const spool_record *ev)
{
    outs *o = arg;
    out *x = outs_push(o);
    char b[12][64];
    const char *kind = hv(ev, "stream.kind", b[0], 64);
    if (strcmp(kind, "view") == 0) {
        snprintf(x->line, sizeof(x->line),
                 "view %.*s ts=%lld n=%s ws=%s we=%s sum=%s min=%s max=%s last=%s",
                 (int)ev->key_len, (const char *)ev->key, (long long)ev->timestamp,
                 hv(ev, "count", b[1], 64), hv(ev, "window_start", b[2], 64),
                 hv(ev, "window_end", b[3], 64), hv(ev, "sum_v", b[4], 64),
                 hv(ev, "min_v", b[5], 64), hv(ev, "max_v", b[6], 64), hv(ev, "last_s", b[7], 64));
        const char *a = hv(ev, "avg_v", b[8], 64);
        x->has_avg = strcmp(a, "null") != 0;
        x->avg = x->has_avg ? strtod(a, NULL) : 0;
        x->distinct = strtod(hv(ev, "distinct_s", b[9], 64), NULL);
        const char *p = hv(ev, "p99_v", b[10], 64);
        x->has_p99 = strcmp(p, "null") != 0;
        x->p99 = x->has_p99 ? strtod(p, NULL) : 0;
    } else {
        snprintf(x->line, sizeof(x->line), "%s %.*s ts=%lld n=%s first=%s last=%s k=%s val=%.*s",
                 kind, (int)ev->key_len, (const char *)ev->key, (long long)ev->timestamp,
                 hv(ev, "count", b[1], 64), hv(ev, "first_ts", b[2], 64),
                 hv(ev, "last_ts", b[3], 64), hv(ev, "k", b[4], 64), (int)ev->value_len,
                 (const char *)ev->value);
    }
    return 0;
}

/* ---- running the engine -------------------------------------------------- */

static sx_def *compile(const char *const *kv)
{
    sx_opt o[32];
    size_t n = 0;
    for (; kv[2 * n]; n++) {
        o[n].name = kv[2 * n];
        o[n].value = kv[2 * n + 1];
    }
    sx_def *d = NULL;
    sx_error err;
    int rc = sx_def_compile(o, n, &d, &err);
    if (rc) {
        fprintf(stderr, "compile: %s:%zu: %s\n", err.option, err.column, err.message);
    }
    assert_int_equal(rc, 0);
    return d;
}

#define TICK_PAST 10000000

/* Runs the events through the engine, snapshotting and restoring into a
 * fresh state after event `cut` - 1 (cut 0: never). */
static void run_engine(const sx_def *d, tev *e, size_t n, size_t cut, outs *o)
{
    sx_state *s = sx_state_new(d);
    assert_non_null(s);
    int64_t maxts = 0;
    for (size_t i = 0; i < n; i++) {
        if (cut && i == cut) {
            spool_buf img = {0}, again = {0};
            assert_int_equal(sx_snapshot(s, &img), 0);
            sx_state_free(s);
            s = sx_state_new(d);
            assert_non_null(s);
            assert_int_equal(sx_restore(s, img.data, img.len), 0);
            assert_int_equal(sx_snapshot(s, &again), 0);
            assert_int_equal(again.len, img.len);
            assert_memory_equal(again.data, img.data, img.len);
            spool_buf_free(&img);
            spool_buf_free(&again);
        }
        o->at = i;
        int rc = sx_process(s, &e[i].r, "in", capture, o);
        assert_true(rc >= 0);
        if (e[i].ts > maxts) {
            maxts = e[i].ts;
        }
    }
    o->at = n;
    assert_int_equal(sx_advance(s, maxts + TICK_PAST, capture, o), 0);
    sx_state_free(s);
}

/* ---- the reference: common time rules ------------------------------------ */

typedef struct ref {
    int has;
    int64_t max;
    int64_t late;
} ref;

/* 1 if event applies (not skipped, not late); moves the clock either way as
 * the engine does: skipped records move it, late ones do not. */
static int ref_admit(ref *t, const tev *e, int skipped)
{
    if (skipped) {
        if (!t->has || e->ts > t->max) {
            t->max = e->ts;
            t->has = 1;
        }
        return 0;
    }
    if (t->has && e->ts < t->max - t->late) {
        return 0;
    }
    return 1;
}

static void ref_clock(ref *t, int64_t ts)
{
    if (!t->has || ts > t->max) {
        t->max = ts;
        t->has = 1;
    }
}

static void ref_line_pattern(outs *o, const char *kind, const tev *src, int64_t ts, long n,
                             int64_t first, int64_t last)
{
    out *x = outs_push(o);
    snprintf(x->line, sizeof(x->line), "%s %s ts=%lld n=%ld first=%lld last=%lld k=%s val=%s", kind,
             src->kbuf, (long long)ts, n, (long long)first, (long long)last, src->kbuf, src->value);
}

static void compare(const outs *a, const outs *b, int approx)
{
    if (a->n != b->n) {
        fprintf(stderr, "engine emitted %zu, reference %zu\n", a->n, b->n);
        for (size_t i = 0; i < a->n && i < b->n; i++) {
            if (strcmp(a->v[i].line, b->v[i].line) || a->v[i].at != b->v[i].at) {
                fprintf(stderr, "first difference at %zu:\n  %zu %s\n  %zu %s\n", i, a->v[i].at,
                        a->v[i].line, b->v[i].at, b->v[i].line);
                break;
            }
        }
    }
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i].line, b->v[i].line) || a->v[i].at != b->v[i].at) {
            fprintf(stderr, "#%zu\n  engine %zu %s\n  ref    %zu %s\n", i, a->v[i].at, a->v[i].line,
                    b->v[i].at, b->v[i].line);
        }
        assert_string_equal(a->v[i].line, b->v[i].line);
        assert_int_equal(a->v[i].at, b->v[i].at);
        if (!approx) {
            continue;
        }
        assert_int_equal(a->v[i].has_avg, b->v[i].has_avg);
        assert_true(a->v[i].avg == b->v[i].avg);
        /* HLL: 1.625% standard error; 3 sigma, +1 for tiny sets. */
        assert_true(fabs(a->v[i].distinct - b->v[i].distinct) <=
                    3 * 0.01625 * b->v[i].distinct + 1);
        assert_int_equal(a->v[i].has_p99, b->v[i].has_p99);
        if (a->v[i].has_p99 && fabs(a->v[i].p99 - b->v[i].p99) > 0.01 * fabs(b->v[i].p99) + 1e-9) {
            fprintf(stderr, "p99 %g vs exact %g\n", a->v[i].p99, b->v[i].p99);
            fail();
        }
    }
}

/* ---- threshold ----------------------------------------------------------- */

#define NEV 1500

static int cmp_ts(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    if (x[0] != y[0]) {
        return x[0] < y[0] ? -1 : 1;
    }
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* At least `count` accepted records of the key whose timestamps span less
 * than `within`, among those since the key's last match, in a window that
 * contains the new record (placed after equal timestamps). Then the key
 * starts over. */
static long ref_threshold(tev *e, size_t n, int64_t late, uint32_t count, int64_t within,
                          int max_keys, outs *o)
{
    ref t = {0, 0, late};
    int64_t(*held)[2] = calloc(NEV * 64, sizeof(*held)); /* per key: (ts, seq) */
    size_t nheld[64] = {0};
    int64_t sorted[NEV][2];
    int lru[64], nlru = 0;
    long evictions = 0;
    for (size_t i = 0; i < n; i++) {
        o->at = i;
        if (!ref_admit(&t, &e[i], !e[i].ok)) {
            continue;
        }
        int k = e[i].key;
        /* max_keys: the least recently updated key is forgotten. */
        int at = -1;
        for (int j = 0; j < nlru; j++) {
            at = lru[j] == k ? j : at;
        }
        if (at < 0 && nlru == max_keys) {
            nheld[lru[0]] = 0;
            evictions++;
            at = 0;
            lru[0] = k;
        } else if (at < 0) {
            at = nlru++;
            lru[at] = k;
        }
        memmove(&lru[at], &lru[at + 1], (size_t)(nlru - at - 1) * sizeof(int));
        lru[nlru - 1] = k;
        held[k * NEV + nheld[k]][0] = e[i].ts;
        held[k * NEV + nheld[k]][1] = (int64_t)i;
        nheld[k]++;
        size_t m = nheld[k];
        memcpy(sorted, &held[k * NEV], m * sizeof(sorted[0]));
        qsort(sorted, m, sizeof(sorted[0]), cmp_ts);
        size_t pos = 0;
        while (sorted[pos][1] != (int64_t)i) {
            pos++;
        }
        for (size_t s0 = pos + 1 >= count ? pos + 1 - count : 0; s0 <= pos && s0 + count <= m;
             s0++) {
            if (sorted[s0 + count - 1][0] - sorted[s0][0] < within) {
                ref_line_pattern(o, "threshold", &e[i], sorted[s0 + count - 1][0], (long)count,
                                 sorted[s0][0], sorted[s0 + count - 1][0]);
                nheld[k] = 0;
                break;
            }
        }
        ref_clock(&t, e[i].ts);
    }
    free(held);
    return evictions;
}

static const char *const threshold_opts[] = {"key",
                                             "{{ k }}",
                                             "when",
                                             "ok == \"1\"",
                                             "pattern.type",
                                             "threshold",
                                             "pattern.count",
                                             "4",
                                             "pattern.within",
                                             "20s",
                                             "allowed_lateness",
                                             "3s",
                                             NULL};

static void threshold_case(const char *count, const char *within_s, int nkeys, size_t min_out)
{
    const char *opts[32];
    size_t n = 0;
    for (; threshold_opts[n]; n++) {
        opts[n] = threshold_opts[n];
        if (n % 2 == 1 && strcmp(threshold_opts[n - 1], "pattern.count") == 0) {
            opts[n] = count;
        }
        if (n % 2 == 1 && strcmp(threshold_opts[n - 1], "pattern.within") == 0) {
            opts[n] = within_s;
        }
    }
    opts[n] = NULL;
    sx_def *d = compile(opts);
    for (uint64_t seed = 1; seed <= 6; seed++) {
        tev *e = gen(seed, NEV, nkeys, 3000, 1500);
        outs a = {0}, b = {0};
        run_engine(d, e, NEV, 0, &a);
        ref_threshold(e, NEV, 3000, (uint32_t)atoi(count), atoi(within_s) * 1000, 1000, &b);
        assert_true(b.n > min_out);
        compare(&a, &b, 0);
        free(a.v);
        free(b.v);
        free(e);
    }
    sx_def_free(d);
}

static void test_threshold_reference(void **st)
{
    threshold_case("4", "20s", 5, 20);
    /* 12 of 20: more timestamps than sx_key holds inline (then on the heap). */
    threshold_case("12", "60s", 3, 5);
    threshold_case("1", "1s", 5, 100);
}

/* max_keys 3 over 5 keys, and 40 over 60 (the engine's candidate list then
 * holds fewer keys than the state): evictions of the least recently updated
 * key, as the reference does them. */
static void eviction_case(const char *max_keys, int nkeys, int64_t step_ms, size_t min_out)
{
    const char *opts[32];
    size_t n = 0;
    for (; threshold_opts[n]; n++) {
        opts[n] = threshold_opts[n];
    }
    opts[n++] = "max_keys";
    opts[n++] = max_keys;
    opts[n] = NULL;
    sx_def *d = compile(opts);
    for (uint64_t seed = 41; seed <= 44; seed++) {
        tev *e = gen(seed, NEV, nkeys, 3000, step_ms);
        outs a = {0}, b = {0};
        sx_state *s = sx_state_new(d);
        for (size_t i = 0; i < NEV; i++) {
            a.at = i;
            assert_true(sx_process(s, &e[i].r, "in", capture, &a) >= 0);
        }
        sx_stats_t stt;
        sx_stats(s, &stt);
        sx_state_free(s);
        long ev = ref_threshold(e, NEV, 3000, 4, 20000, atoi(max_keys), &b);
        assert_true(ev > 50);
        assert_int_equal(stt.evictions, ev);
        assert_int_equal(stt.keys, atoi(max_keys));
        assert_true(b.n >= min_out);
        compare(&a, &b, 0);
        free(a.v);
        free(b.v);
        free(e);
    }
    sx_def_free(d);
}

static void test_threshold_eviction_reference(void **st)
{
    eviction_case("3", 5, 600, 10);
    eviction_case("40", 60, 50, 1);
}

/* ---- sequence ------------------------------------------------------------ */

/* Steps a{3,} b{1,2} c{1}; the run's timestamps (kept whole) must span less
 * than within; a record matching no usable step is ignored; one matching
 * step 0 otherwise restarts the run. */
static void ref_sequence(tev *e, size_t n, int64_t late, int64_t within, outs *o)
{
    const uint32_t mins[3] = {3, 1, 1}, maxs[3] = {UINT32_MAX, 2, UINT32_MAX};
    ref t = {0, 0, late};
    struct {
        int active, step;
        uint32_t cnt;
        int64_t ts[NEV];
        size_t nts;
    } *kst = calloc(64, sizeof(*kst));
    for (size_t i = 0; i < n; i++) {
        o->at = i;
        if (!ref_admit(&t, &e[i], 0)) {
            continue;
        }
        __typeof__(&kst[0]) k = &kst[e[i].key];
        int64_t ts = e[i].ts;
        if (k->active) {
            int64_t lo = ts, hi = ts;
            for (size_t j = 0; j < k->nts; j++) {
                lo = k->ts[j] < lo ? k->ts[j] : lo;
                hi = k->ts[j] > hi ? k->ts[j] : hi;
            }
            if (hi - lo >= within) {
                k->active = 0;
            }
        }
        int done = 0, took = 0;
        if (k->active) {
            if (k->cnt < maxs[k->step] && e[i].step == k->step) {
                k->cnt++;
                took = 1;
            } else if (k->step < 2 && k->cnt >= mins[k->step] && e[i].step == k->step + 1) {
                k->step++;
                k->cnt = 1;
                took = 1;
            }
            if (took) {
                k->ts[k->nts++] = ts;
                done = k->step == 2 && k->cnt == mins[2];
            }
        }
        if (!took && e[i].step == 0) {
            k->active = 1;
            k->step = 0;
            k->cnt = 1;
            k->nts = 0;
            k->ts[k->nts++] = ts;
        }
        if (done) {
            int64_t lo = k->ts[0], hi = k->ts[0];
            for (size_t j = 0; j < k->nts; j++) {
                lo = k->ts[j] < lo ? k->ts[j] : lo;
                hi = k->ts[j] > hi ? k->ts[j] : hi;
            }
            ref_line_pattern(o, "sequence", &e[i], hi, (long)k->nts, lo, hi);
            k->active = 0;
        }
        ref_clock(&t, ts);
    }
    free(kst);
}

static const char *const sequence_opts[] = {"key",
                                            "{{ k }}",
                                            "pattern.type",
                                            "sequence",
                                            "pattern.within",
                                            "40s",
                                            "allowed_lateness",
                                            "2s",
                                            "pattern.steps[0].when",
                                            "step == \"a\"",
                                            "pattern.steps[0].min",
                                            "3",
                                            "pattern.steps[1].when",
                                            "step == \"b\"",
                                            "pattern.steps[1].max",
                                            "2",
                                            "pattern.steps[2].when",
                                            "step == \"c\"",
                                            NULL};

static void test_sequence_reference(void **st)
{
    sx_def *d = compile(sequence_opts);
    for (uint64_t seed = 11; seed <= 16; seed++) {
        tev *e = gen(seed, NEV, 6, 2000, 1500);
        outs a = {0}, b = {0};
        run_engine(d, e, NEV, 0, &a);
        ref_sequence(e, NEV, 2000, 40000, &b);
        assert_true(b.n > 10);
        compare(&a, &b, 0);
        free(a.v);
        free(b.v);
        free(e);
    }
    sx_def_free(d);
}

/* ---- absence ------------------------------------------------------------- */

/* A key's first `a` opens a pending; a `b` with first_ts <= ts < first_ts +
 * within closes it; when the watermark reaches first_ts + within it fires
 * (in order of deadline, then key). */
static void ref_absence_fire(ref *t, int *pend, int64_t *fts, size_t *fidx, tev *e, int64_t within,
                             outs *o)
{
    for (;;) {
        int best = -1;
        for (int k = 0; k < 64; k++) {
            if (pend[k] && fts[k] + within <= t->max - t->late &&
                (best < 0 || fts[k] < fts[best])) {
                best = k; /* equal deadlines: the smaller key (keyNN sorts by k) */
            }
        }
        if (best < 0) {
            return;
        }
        pend[best] = 0;
        ref_line_pattern(o, "absence", &e[fidx[best]], fts[best] + within, 1, fts[best], fts[best]);
    }
}

static void ref_absence(tev *e, size_t n, int64_t late, int64_t within, outs *o)
{
    ref t = {0, 0, late};
    int pend[64] = {0};
    int64_t fts[64];
    size_t fidx[64];
    for (size_t i = 0; i < n; i++) {
        o->at = i;
        if (!ref_admit(&t, &e[i], 0)) {
            continue;
        }
        int k = e[i].key;
        if (pend[k]) {
            if (e[i].step == 1 && e[i].ts >= fts[k] && e[i].ts - fts[k] < within) {
                pend[k] = 0;
            }
        } else if (e[i].step == 0) {
            pend[k] = 1;
            fts[k] = e[i].ts;
            fidx[k] = i;
        }
        ref_clock(&t, e[i].ts);
        ref_absence_fire(&t, pend, fts, fidx, e, within, o);
    }
    o->at = n;
    ref_clock(&t, t.max + TICK_PAST);
    ref_absence_fire(&t, pend, fts, fidx, e, within, o);
}

static const char *const absence_opts[] = {"key",
                                           "{{ k }}",
                                           "pattern.type",
                                           "absence",
                                           "pattern.within",
                                           "7s",
                                           "allowed_lateness",
                                           "2500ms",
                                           "pattern.first",
                                           "step == \"a\"",
                                           "pattern.then",
                                           "step == \"b\"",
                                           NULL};

static void test_absence_reference(void **st)
{
    sx_def *d = compile(absence_opts);
    for (uint64_t seed = 21; seed <= 26; seed++) {
        tev *e = gen(seed, NEV, 20, 2500, 1200);
        outs a = {0}, b = {0};
        run_engine(d, e, NEV, 0, &a);
        ref_absence(e, NEV, 2500, 7000, &b);
        assert_true(b.n > 10);
        compare(&a, &b, 0);
        free(a.v);
        free(b.v);
        free(e);
    }
    sx_def_free(d);
}

/* ---- views --------------------------------------------------------------- */

typedef struct vw {
    int64_t size, every, late;
} vw;

static int64_t fdiv(int64_t a, int64_t b)
{
    return a / b - ((a % b != 0) && (a < 0));
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One window of one key, by brute force over the applied events. */
static void ref_window_emit(const vw *w, tev *e, const int *applied, size_t n, int key,
                            int64_t start, outs *o)
{
    long cnt = 0;
    double sum = 0, mn = 0, mx = 0;
    int64_t first = INT64_MAX, last = INT64_MIN, lts = INT64_MIN;
    const char *lastv = "null";
    double *vals = malloc(n * sizeof(double));
    char seen[64] = {0};
    int distinct = 0;
    for (size_t i = 0; i < n; i++) {
        if (!applied[i] || e[i].key != key || e[i].ts < start || e[i].ts >= start + w->size) {
            continue;
        }
        double v = e[i].v;
        if (cnt == 0 || v < mn) {
            mn = v;
        }
        if (cnt == 0 || v > mx) {
            mx = v;
        }
        sum += v;
        vals[cnt++] = v;
        first = e[i].ts < first ? e[i].ts : first;
        last = e[i].ts > last ? e[i].ts : last;
        if (e[i].ts >= lts) {
            lts = e[i].ts;
            lastv = e[i].sbuf;
        }
        if (!seen[e[i].s]) {
            seen[e[i].s] = 1;
            distinct++;
        }
    }
    qsort(vals, (size_t)cnt, sizeof(double), cmp_dbl);
    out *x = outs_push(o);
    snprintf(x->line, sizeof(x->line),
             "view key%02d ts=%lld n=%ld ws=%lld we=%lld sum=%.0f min=%.0f max=%.0f last=%s", key,
             (long long)(start + w->size), cnt, (long long)start, (long long)(start + w->size), sum,
             mn, mx, lastv);
    x->has_avg = 1;
    x->avg = sum / (double)cnt;
    x->distinct = distinct;
    x->has_p99 = 1;
    x->p99 = vals[(size_t)floor(0.99 * (double)(cnt - 1))];
    free(vals);
}

typedef struct wkey {
    int64_t end;
    int key;
    int64_t start;
} wkey;

static int cmp_wkey(const void *a, const void *b)
{
    const wkey *x = a, *y = b;
    if (x->end != y->end) {
        return x->end < y->end ? -1 : 1;
    }
    return x->key - y->key;
}

/* Every window (key, start) holding an applied event, ending at or before
 * the watermark and not emitted yet, in order of (end, key). state[key][i]
 * marks window start (i + base) * every: 1 candidate now, 2 emitted. */
#define WSLOTS 4096
static void ref_view_close(const vw *w, ref *t, tev *e, const int *applied, size_t n,
                           uint8_t (*state)[WSLOTS], int64_t base, outs *o)
{
    wkey *cand = malloc(n * 64 * sizeof(*cand));
    size_t nc = 0;
    int64_t wm = t->max - t->late;
    for (size_t i = 0; i < n; i++) {
        if (!applied[i]) {
            continue;
        }
        for (int64_t s = fdiv(e[i].ts, w->every) * w->every; s > e[i].ts - w->size; s -= w->every) {
            int64_t slot = s / w->every - base;
            assert_true(slot >= 0 && slot < WSLOTS);
            if (s + w->size > wm || state[e[i].key][slot]) {
                continue;
            }
            state[e[i].key][slot] = 1;
            cand[nc++] = (wkey){s + w->size, e[i].key, s};
        }
    }
    qsort(cand, nc, sizeof(*cand), cmp_wkey);
    for (size_t j = 0; j < nc; j++) {
        ref_window_emit(w, e, applied, n, cand[j].key, cand[j].start, o);
        state[cand[j].key][cand[j].start / w->every - base] = 2;
    }
    free(cand);
}

static void ref_view(const vw *w, tev *e, size_t n, outs *o)
{
    ref t = {0, 0, w->late};
    int *applied = calloc(n, sizeof(int));
    uint8_t(*state)[WSLOTS] = calloc(64, WSLOTS);
    int64_t base = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        int64_t b = fdiv(e[i].ts - w->size, w->every) - 1;
        base = b < base ? b : base;
    }
    for (size_t i = 0; i < n; i++) {
        o->at = i;
        if (!ref_admit(&t, &e[i], e[i].s == 7)) {
            ref_view_close(w, &t, e, applied, n, state, base, o);
            continue;
        }
        applied[i] = 1;
        ref_clock(&t, e[i].ts);
        ref_view_close(w, &t, e, applied, n, state, base, o);
    }
    o->at = n;
    ref_clock(&t, t.max + TICK_PAST);
    ref_view_close(w, &t, e, applied, n, state, base, o);
    free(applied);
    free(state);
}

#define VIEW_AGGS                                                                                  \
    "view.aggregates[0]", "count", "view.aggregates[1]", "sum(v)", "view.aggregates[2]", "min(v)", \
        "view.aggregates[3]", "max(v)", "view.aggregates[4]", "avg(v)", "view.aggregates[5]",      \
        "last(s)", "view.aggregates[6]", "distinct(s)", "view.aggregates[7]", "p99(v)"

static const char *const tumbling_opts[] = {
    "view.group_by", "{{ k }}",          "when", "s != \"s7\"", "view.window.tumbling",
    "10s",           "allowed_lateness", "2s",   VIEW_AGGS,     NULL};
static const char *const hopping_opts[] = {"view.group_by",
                                           "{{ k }}",
                                           "when",
                                           "s != \"s7\"",
                                           "view.window.hopping",
                                           "15s",
                                           "view.window.every",
                                           "5s",
                                           "allowed_lateness",
                                           "3s",
                                           VIEW_AGGS,
                                           NULL};

static void test_view_reference(void **st)
{
    const vw shapes[2] = {{10000, 10000, 2000}, {15000, 5000, 3000}};
    for (int sh = 0; sh < 2; sh++) {
        sx_def *d = compile(sh == 0 ? tumbling_opts : hopping_opts);
        for (uint64_t seed = 31; seed <= 34; seed++) {
            size_t n = 800;
            tev *e = gen(seed, n, 5, shapes[sh].late, 700);
            outs a = {0}, b = {0};
            run_engine(d, e, n, 0, &a);
            ref_view(&shapes[sh], e, n, &b);
            assert_true(b.n > 20);
            compare(&a, &b, 1);
            free(a.v);
            free(b.v);
            free(e);
        }
        sx_def_free(d);
    }
}

/* ---- snapshots ----------------------------------------------------------- */

static void snapshot_cuts(const char *const *opts, size_t n, int nkeys, int64_t late)
{
    sx_def *d = compile(opts);
    tev *e = gen(77, n, nkeys, late, 900);
    outs whole = {0};
    run_engine(d, e, n, 0, &whole);
    assert_true(whole.n > 5);
    for (size_t cut = 1; cut < n; cut += 23) {
        outs part = {0};
        run_engine(d, e, n, cut, &part);
        compare(&whole, &part, 1);
        free(part.v);
    }
    free(whole.v);
    free(e);
    sx_def_free(d);
}

static const char *const threshold12_opts[] = {
    "key", "{{ k }}",          "pattern.type", "threshold", "pattern.count", "12", "pattern.within",
    "60s", "allowed_lateness", "3s",           NULL};

static void test_snapshot_restore_continue(void **st)
{
    snapshot_cuts(threshold_opts, 600, 8, 3000);
    snapshot_cuts(threshold12_opts, 600, 3, 3000);
    snapshot_cuts(sequence_opts, 600, 4, 2000);
    snapshot_cuts(absence_opts, 600, 10, 2500);
    snapshot_cuts(tumbling_opts, 500, 5, 2000);
    snapshot_cuts(hopping_opts, 500, 5, 3000);
}

static void test_snapshot_corrupt_refused(void **st)
{
    sx_def *d = compile(hopping_opts);
    sx_def *other = compile(tumbling_opts);
    tev *e = gen(5, 300, 5, 3000, 900);
    sx_state *s = sx_state_new(d);
    for (size_t i = 0; i < 300; i++) {
        assert_true(sx_process(s, &e[i].r, "in", NULL, NULL) >= 0);
    }
    spool_buf img = {0}, before = {0}, after = {0};
    assert_int_equal(sx_snapshot(s, &img), 0);
    sx_state *t = sx_state_new(d);
    assert_int_equal(sx_restore(t, img.data, img.len), 0);
    assert_int_equal(sx_snapshot(t, &before), 0);
    /* Every byte flipped, every truncation: refused, t unchanged. */
    uint8_t *bad = malloc(img.len);
    for (size_t i = 0; i < img.len; i += (i < 64 ? 1 : 97)) {
        memcpy(bad, img.data, img.len);
        bad[i] ^= 0x20;
        assert_int_equal(sx_restore(t, bad, img.len), -EBADMSG);
        assert_int_equal(sx_restore(t, img.data, i), -EBADMSG);
    }
    assert_int_equal(sx_restore(t, "", 0), -EBADMSG);
    assert_int_equal(sx_snapshot(t, &after), 0);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    /* Another definition's state refuses the image. */
    sx_state *u = sx_state_new(other);
    assert_int_equal(sx_restore(u, img.data, img.len), -EBADMSG);
    free(bad);
    spool_buf_free(&img);
    spool_buf_free(&before);
    spool_buf_free(&after);
    sx_state_free(s);
    sx_state_free(t);
    sx_state_free(u);
    free(e);
    sx_def_free(d);
    sx_def_free(other);
}

/* ---- queries, eviction, compile errors ----------------------------------- */

static void test_query_open_windows(void **st)
{
    static const char *const opts[] = {"view.group_by",
                                       "{{ k }}",
                                       "view.window.tumbling",
                                       "10s",
                                       "view.aggregates[0]",
                                       "count",
                                       "view.aggregates[1]",
                                       "sum(v) as total",
                                       NULL};
    sx_def *d = compile(opts);
    sx_state *s = sx_state_new(d);
    const struct {
        const char *k;
        int64_t ts;
        const char *v;
    } in[] = {{"b", 10000, "1"},
              {"a", 12000, "2"},
              {"a", 19999, "3"},
              {"a", 20000, "4"},
              {"b", 25000, "x"}};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        spool_header h[2];
        hset(&h[0], "k", in[i].k);
        hset(&h[1], "v", in[i].v);
        spool_record r = {
            .key_len = -1, .value_len = -1, .headers = h, .header_count = 2, .timestamp = in[i].ts};
        assert_int_equal(sx_process(s, &r, NULL, NULL, NULL), SX_OK);
    }
    /* Watermark 25000 closed [10000, 20000) of a and b. */
    spool_buf q = {0};
    assert_int_equal(sx_query(s, NULL, 0, 0, &q), 0);
    assert_int_equal(spool_buf_append(&q, "", 1), 0);
    assert_string_equal((char *)q.data,
                        "[{\"key\":\"a\",\"window_start\":20000,\"window_end\":30000,\"count\":1,"
                        "\"total\":4},{\"key\":\"b\",\"window_start\":20000,\"window_end\":30000,"
                        "\"count\":1,\"total\":0}]");
    q.len = 0;
    assert_int_equal(sx_query(s, "b", 0, 0, &q), 0);
    assert_int_equal(spool_buf_append(&q, "", 1), 0);
    assert_string_equal((char *)q.data, "[{\"key\":\"b\",\"window_start\":20000,\"window_end\":"
                                        "30000,\"count\":1,\"total\":0}]");
    q.len = 0;
    assert_int_equal(sx_query(s, NULL, 0, 20000, &q), 0);
    assert_int_equal(spool_buf_append(&q, "", 1), 0);
    assert_string_equal((char *)q.data, "[]");
    q.len = 0;
    assert_int_equal(sx_query(s, "zz", 0, 0, &q), 0);
    assert_int_equal(q.len, 2);
    sx_stats_t stt;
    sx_stats(s, &stt);
    assert_int_equal(stt.keys, 2);
    assert_int_equal(stt.windows, 2);
    assert_int_equal(stt.matches, 2);
    assert_true(stt.bytes > 0);
    spool_buf_free(&q);
    sx_state_free(s);
    sx_def_free(d);
}

static void test_eviction_bounded(void **st)
{
    static const char *const opts[] = {
        "key", "{{ k }}",  "pattern.type", "threshold", "pattern.count", "1000", "pattern.within",
        "1h",  "max_keys", "10",           NULL};
    sx_def *d = compile(opts);
    sx_state *s = sx_state_new(d);
    tev *e = gen(3, 500, 40, 0, 10);
    for (size_t i = 0; i < 500; i++) {
        assert_true(sx_process(s, &e[i].r, NULL, NULL, NULL) >= 0);
        sx_stats_t stt;
        sx_stats(s, &stt);
        assert_true(stt.keys <= 10);
    }
    sx_stats_t stt;
    sx_stats(s, &stt);
    assert_int_equal(stt.keys, 10);
    assert_true(stt.evictions > 100);
    assert_int_equal(stt.records, 500);
    free(e);
    sx_state_free(s);
    sx_def_free(d);
}

/* Timestamps beyond +-2^62 ms are late, so they cannot move event time to
 * the end of the range (or overflow the windows' arithmetic). */
static void test_extreme_timestamps_late(void **st)
{
    static const char *const opts[] = {"view.window.hopping", "1h", "view.window.every", "1m",
                                       NULL};
    sx_def *d = compile(opts);
    sx_state *s = sx_state_new(d);
    spool_record r = {.key_len = -1, .value_len = -1};
    const int64_t bad[] = {INT64_MAX, INT64_MIN, ((int64_t)1 << 62) + 1};
    for (size_t i = 0; i < 3; i++) {
        r.timestamp = bad[i];
        assert_int_equal(sx_process(s, &r, NULL, NULL, NULL), SX_LATE);
    }
    r.timestamp = 1000;
    assert_int_equal(sx_process(s, &r, NULL, NULL, NULL), SX_OK);
    r.timestamp = -((int64_t)1 << 62);
    assert_int_equal(sx_process(s, &r, NULL, NULL, NULL), SX_LATE); /* below the watermark */
    outs o = {0};
    assert_int_equal(sx_advance(s, INT64_MAX, capture, &o), 0);
    assert_int_equal(o.n, 60); /* the 60 hopping windows holding ts 1000 */
    assert_int_equal(sx_watermark(s), (int64_t)1 << 62);
    sx_stats_t stt;
    sx_stats(s, &stt);
    assert_int_equal(stt.late, 4);
    free(o.v);
    sx_state_free(s);
    sx_def_free(d);
}

static void expect_error(const char *const *kv, const char *option, size_t column,
                         const char *needle)
{
    sx_opt o[32];
    size_t n = 0;
    for (; kv[2 * n]; n++) {
        o[n].name = kv[2 * n];
        o[n].value = kv[2 * n + 1];
    }
    sx_def *d = NULL;
    sx_error err;
    assert_int_equal(sx_def_compile(o, n, &d, &err), -EINVAL);
    assert_null(d);
    assert_string_equal(err.option, option);
    assert_int_equal(err.column, column);
    if (strstr(err.message, needle) == NULL) {
        fprintf(stderr, "message: %s\n", err.message);
        fail();
    }
}

static void test_compile_errors(void **st)
{
    const char *const unknown[] = {"pattern.type", "threshold", "pattern.cnt", "3", NULL};
    expect_error(unknown, "pattern.cnt", 0, "did you mean 'pattern.count'?");
    const char *const far[] = {"pattern.type", "threshold", "colour", "red", NULL};
    expect_error(far, "colour", 0, "unknown stream option 'colour'");
    const char *const badexpr[] = {
        "pattern.type",     "absence", "pattern.within", "1m", "pattern.first",
        "a == 1 && b == 2", NULL};
    expect_error(badexpr, "pattern.first", 8, "and");
    const char *const nowithin[] = {"pattern.type", "threshold", "pattern.count", "3", NULL};
    expect_error(nowithin, "pattern.type", 0, "pattern.within");
    const char *const baddur[] = {"view.window.tumbling", "10 parsecs", NULL};
    expect_error(baddur, "view.window.tumbling", 1, "duration");
    const char *const badagg[] = {"view.window.tumbling", "1m", "view.aggregates[0]", "p42(x)",
                                  NULL};
    expect_error(badagg, "view.aggregates[0]", 1, "unknown aggregate");
    const char *const hop[] = {"view.window.hopping", "1m", "view.window.every", "7s", NULL};
    expect_error(hop, "view.window.every", 1, "divide");
    const char *const both[] = {"pattern.type", "threshold", "view.window.tumbling", "1m", NULL};
    expect_error(both, "pattern.type", 0, "not both");
    const char *const gap[] = {
        "pattern.type", "sequence", "pattern.within", "1m", "pattern.steps[1].when",
        "a == 1",       NULL};
    expect_error(gap, "pattern.steps[1].when", 0, "steps[0].when is missing");
    /* The fingerprint follows the options, not their order. */
    const char *const x1[] = {"pattern.type", "threshold", "pattern.count", "3", "pattern.within",
                              "1m",           NULL};
    const char *const x2[] = {"pattern.within", "1m", "pattern.count", "3", "pattern.type",
                              "threshold",      NULL};
    const char *const x3[] = {"pattern.within", "2m", "pattern.count", "3", "pattern.type",
                              "threshold",      NULL};
    sx_def *a = compile(x1), *b = compile(x2), *c = compile(x3);
    assert_true(sx_def_fingerprint(a) == sx_def_fingerprint(b));
    assert_true(sx_def_fingerprint(a) != sx_def_fingerprint(c));
    assert_int_equal(sx_def_is_view(a), 0);
    sx_def_free(a);
    sx_def_free(b);
    sx_def_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_reference),
        cmocka_unit_test(test_threshold_eviction_reference),
        cmocka_unit_test(test_sequence_reference),
        cmocka_unit_test(test_absence_reference),
        cmocka_unit_test(test_view_reference),
        cmocka_unit_test(test_snapshot_restore_continue),
        cmocka_unit_test(test_snapshot_corrupt_refused),
        cmocka_unit_test(test_query_open_windows),
        cmocka_unit_test(test_eviction_bounded),
        cmocka_unit_test(test_extreme_timestamps_late),
        cmocka_unit_test(test_compile_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
