/*
 * streams/sketch.c: HyperLogLog (p = 12) and a DDSketch-style relative-error
 * quantile sketch for stream views (see sketch.h for the stated errors).
 *
 * Invariants: an HLL register holds the largest rank (leading zeros + 1 of
 * the 52 hash bits left after the register index) seen for it. A DDS store's
 * counts cover buckets offset .. offset + n - 1, at most SX_DDS_MAX_BINS of
 * them; total is the sum of zero and both stores. Sketches never look at
 * the wall clock and give the same answers for the same values in any
 * order (for the DDS: as long as no buckets had to collapse).
 */
#include "sketch.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t sx_hash64(const void *p, size_t len, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = mix64(seed ^ (len * 0x9e3779b97f4a7c15ULL));
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = mix64(h ^ w) * 0x9e3779b97f4a7c15ULL;
        b += 8;
        len -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++) {
        w |= (uint64_t)b[i] << (8 * i);
    }
    h = mix64(h ^ w ^ ((uint64_t)len << 59));
    return mix64(h);
}

void sx_hll_clear(sx_hll *h)
{
    memset(h->reg, 0, sizeof(h->reg));
}

void sx_hll_add(sx_hll *h, const void *p, size_t len)
{
    uint64_t x = sx_hash64(p, len, 0x5851f42d4c957f2dULL);
    uint32_t idx = (uint32_t)(x >> (64 - SX_HLL_P));
    uint64_t rest = x << SX_HLL_P; /* 52 significant bits, then zeros */
    uint8_t rank = rest == 0 ? (uint8_t)(64 - SX_HLL_P + 1) : (uint8_t)(__builtin_clzll(rest) + 1);
    if (rank > h->reg[idx]) {
        h->reg[idx] = rank;
    }
}

void sx_hll_merge(sx_hll *dst, const sx_hll *src)
{
    for (uint32_t i = 0; i < SX_HLL_M; i++) {
        if (src->reg[i] > dst->reg[i]) {
            dst->reg[i] = src->reg[i];
        }
    }
}

double sx_hll_estimate(const sx_hll *h)
{
    const double m = SX_HLL_M;
    double sum = 0;
    uint32_t zeros = 0;
    for (uint32_t i = 0; i < SX_HLL_M; i++) {
        sum += ldexp(1.0, -(int)h->reg[i]);
        zeros += h->reg[i] == 0;
    }
    double alpha = 0.7213 / (1.0 + 1.079 / m);
    double e = alpha * m * m / sum;
    if (e <= 2.5 * m && zeros > 0) {
        e = m * log(m / zeros); /* linear counting */
    }
    return e;
}

/* ---- DDSketch ---------------------------------------------------------- */

static double dds_gamma(void)
{
    return (1.0 + SX_DDS_ALPHA) / (1.0 - SX_DDS_ALPHA);
}

/* Values of magnitude below this go to the zero bucket (keeps indexes in
 * int32 range and the store small). */
#define DDS_MIN_VALUE 1e-9

int32_t sx_dds_index(double x)
{
    return (int32_t)ceil(log(x) / log(dds_gamma()));
}

double sx_dds_value(int32_t index)
{
    double g = dds_gamma();
    return 2.0 * pow(g, index) / (g + 1.0);
}

void sx_dds_clear(sx_dds *d)
{
    d->pos.n = 0;
    d->neg.n = 0;
    d->zero = 0;
    d->total = 0;
}

void sx_dds_free(sx_dds *d)
{
    free(d->pos.counts);
    free(d->neg.counts);
    memset(d, 0, sizeof(*d));
}

size_t sx_dds_bytes(const sx_dds *d)
{
    return ((size_t)d->pos.cap + d->neg.cap) * sizeof(uint64_t);
}

static int store_reserve(sx_dds_store *s, uint32_t n)
{
    if (n <= s->cap) {
        return 0;
    }
    uint32_t cap = s->cap ? s->cap : 64;
    while (cap < n) {
        cap *= 2;
    }
    uint64_t *c = realloc(s->counts, (size_t)cap * sizeof(uint64_t));
    if (c == NULL) {
        return -ENOMEM;
    }
    s->counts = c;
    s->cap = cap;
    return 0;
}

/* Adds k to bucket idx, growing the range; past SX_DDS_MAX_BINS the lowest
 * buckets collapse into the lowest one kept. */
static int store_add(sx_dds_store *s, int32_t idx, uint64_t k)
{
    if (s->n == 0) {
        int rc = store_reserve(s, 1);
        if (rc < 0) {
            return rc;
        }
        s->offset = idx;
        s->counts[0] = k;
        s->n = 1;
        return 0;
    }
    int64_t lo = s->offset;
    int64_t hi = (int64_t)s->offset + s->n - 1;
    if (idx >= lo && idx <= hi) {
        s->counts[idx - lo] += k;
        return 0;
    }
    int64_t nlo = idx < lo ? idx : lo;
    int64_t nhi = idx > hi ? idx : hi;
    if (nhi - nlo + 1 > SX_DDS_MAX_BINS) {
        /* Collapse: keep the top SX_DDS_MAX_BINS buckets. */
        nlo = nhi - SX_DDS_MAX_BINS + 1;
    }
    uint32_t nn = (uint32_t)(nhi - nlo + 1);
    int rc = store_reserve(s, nn);
    if (rc < 0) {
        return rc;
    }
    uint64_t *tmp = calloc(nn, sizeof(uint64_t));
    if (tmp == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        int64_t b = lo + i;
        tmp[(b < nlo ? nlo : b) - nlo] += s->counts[i];
    }
    tmp[(idx < nlo ? nlo : idx) - nlo] += k;
    memcpy(s->counts, tmp, (size_t)nn * sizeof(uint64_t));
    free(tmp);
    s->offset = (int32_t)nlo;
    s->n = nn;
    return 0;
}

int sx_dds_add(sx_dds *d, double x)
{
    int rc = 0;
    if (x > DDS_MIN_VALUE) {
        rc = store_add(&d->pos, sx_dds_index(x), 1);
    } else if (x < -DDS_MIN_VALUE) {
        rc = store_add(&d->neg, sx_dds_index(-x), 1);
    } else {
        d->zero++;
    }
    if (rc == 0) {
        d->total++;
    }
    return rc;
}

int sx_dds_merge(sx_dds *dst, const sx_dds *src)
{
    for (uint32_t i = 0; i < src->pos.n; i++) {
        if (src->pos.counts[i] &&
            store_add(&dst->pos, src->pos.offset + (int32_t)i, src->pos.counts[i]) < 0) {
            return -ENOMEM;
        }
    }
    for (uint32_t i = 0; i < src->neg.n; i++) {
        if (src->neg.counts[i] &&
            store_add(&dst->neg, src->neg.offset + (int32_t)i, src->neg.counts[i]) < 0) {
            return -ENOMEM;
        }
    }
    dst->zero += src->zero;
    dst->total += src->total;
    return 0;
}

int sx_dds_store_set(sx_dds_store *s, int32_t offset, const uint64_t *counts, uint32_t n)
{
    int rc = store_reserve(s, n ? n : 1);
    if (rc < 0) {
        return rc;
    }
    if (n) {
        memcpy(s->counts, counts, (size_t)n * sizeof(uint64_t));
    }
    s->n = n;
    s->offset = offset;
    return 0;
}

double sx_dds_quantile(const sx_dds *d, double q)
{
    if (d->total == 0) {
        return NAN;
    }
    if (q < 0) {
        q = 0;
    }
    if (q > 1) {
        q = 1;
    }
    uint64_t rank = (uint64_t)floor(q * (double)(d->total - 1));
    uint64_t seen = 0;
    /* Negative values, most negative (largest |x|) first. */
    for (uint32_t i = d->neg.n; i-- > 0;) {
        seen += d->neg.counts[i];
        if (seen > rank) {
            return -sx_dds_value(d->neg.offset + (int32_t)i);
        }
    }
    seen += d->zero;
    if (seen > rank) {
        return 0.0;
    }
    for (uint32_t i = 0; i < d->pos.n; i++) {
        seen += d->pos.counts[i];
        if (seen > rank) {
            return sx_dds_value(d->pos.offset + (int32_t)i);
        }
    }
    return d->pos.n ? sx_dds_value(d->pos.offset + (int32_t)d->pos.n - 1) : 0.0;
}
