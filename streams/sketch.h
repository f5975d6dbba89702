/*
 * streams/sketch.h: the two sketches of stream views (docs/streams.md,
 * "What the engine computes").
 *
 * sx_hll: HyperLogLog with p = 12 (4096 one-byte registers, 64-bit hash),
 * standard error 1.04 / sqrt(4096) = 1.625%; linear counting below 2.5 m.
 * sx_dds: a DDSketch-style quantile sketch with relative accuracy 1%: a
 * value x > 0 goes to bucket ceil(log(x) / log(gamma)), gamma = 1.01 / 0.99,
 * and a bucket answers 2 gamma^i / (gamma + 1), within 1% of every value in
 * it; negative values mirror, zero has its own count. At most SX_DDS_MAX_BINS
 * buckets per sign: past that the lowest buckets collapse into one (only the
 * lowest quantiles lose accuracy). Both are mergeable (register max, bucket
 * sum). Pure, no I/O; one owner at a time.
 */
#ifndef SPOOL_STREAMS_SKETCH_H
#define SPOOL_STREAMS_SKETCH_H

#include <stddef.h>
#include <stdint.h>

#define SX_HLL_P 12
#define SX_HLL_M (1u << SX_HLL_P)
#define SX_DDS_ALPHA 0.01
#define SX_DDS_MAX_BINS 2048

/* 64-bit hash of bytes (seeded), used by the HLL and the key table. */
uint64_t sx_hash64(const void *p, size_t len, uint64_t seed);

typedef struct sx_hll {
    uint8_t reg[SX_HLL_M]; /* max rank seen per register */
} sx_hll;

void sx_hll_clear(sx_hll *h);
void sx_hll_add(sx_hll *h, const void *p, size_t len);
void sx_hll_merge(sx_hll *dst, const sx_hll *src);
double sx_hll_estimate(const sx_hll *h);

/* One sign's buckets: counts[i] is bucket (offset + i). */
typedef struct sx_dds_store {
    uint64_t *counts; /* n buckets, heap */
    uint32_t n;       /* buckets in use */
    uint32_t cap;     /* buckets allocated */
    int32_t offset;   /* index of counts[0] */
} sx_dds_store;

typedef struct sx_dds {
    sx_dds_store pos; /* values > 0 */
    sx_dds_store neg; /* values < 0, by |x| */
    uint64_t zero;    /* values == 0 (and |x| below the smallest bucket) */
    uint64_t total;   /* all values */
} sx_dds;

/* A zeroed sx_dds is empty. clear keeps the allocations. */
void sx_dds_clear(sx_dds *d);
void sx_dds_free(sx_dds *d);
/* Adds a finite value: 0 or -ENOMEM (d unchanged). */
int sx_dds_add(sx_dds *d, double x);
int sx_dds_merge(sx_dds *dst, const sx_dds *src);
/* The q-quantile (0 <= q <= 1): within 1% of the value of rank floor(q (n - 1))
 * (0-based, ascending). NAN when empty. */
double sx_dds_quantile(const sx_dds *d, double q);
/* Bytes the sketch holds on the heap. */
size_t sx_dds_bytes(const sx_dds *d);
/* The bucket index of x > 0 and the value a bucket answers (for tests). */
int32_t sx_dds_index(double x);
double sx_dds_value(int32_t index);
/* Replaces a store's contents (restore): n counts for buckets offset.. 0 or -ENOMEM. */
int sx_dds_store_set(sx_dds_store *s, int32_t offset, const uint64_t *counts, uint32_t n);

#endif
