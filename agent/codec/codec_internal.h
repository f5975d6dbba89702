/*
 * codec_internal.h: helpers shared by the codec's own files (spool__
 * prefix). Not for use outside agent/codec/ except by its unit test.
 */
#ifndef SPOOL_CODEC_INTERNAL_H
#define SPOOL_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

/* Table-only CRC-32C (the fallback), for tests to compare with the fast one. */
uint32_t spool__crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Worst-case compressed size of n bytes for `compression` (NONE: n). */
size_t spool__compress_bound(int compression, size_t n);

/*
 * Compresses src[0..n) into dst (capacity cap; src and dst must not
 * overlap). Returns bytes written, or -EIO / -ENOMEM / -EINVAL (unknown
 * compression). zstd reuses a per-thread context.
 */
long spool__compress(int compression, int level, uint8_t *dst, size_t cap, const uint8_t *src,
                     size_t n);

/*
 * Decompresses src[0..n) (a zstd stream or a gzip/zlib stream) into fresh
 * bytes appended to the scratch area of d, which may move (and rebases
 * every view of d into it). Output beyond SPOOL_RB_MAX_DECOMPRESSED is
 * -EBADMSG. Returns the offset in d->scratch where the output starts and
 * sets *out_len, or -EBADMSG / -ENOMEM / -ENOTSUP.
 */
long spool__decompress(int compression, const uint8_t *src, size_t n, spool_rb_decoded *d,
                       size_t *out_len);

/* Grows d->scratch to hold `extra` more bytes, rebasing views into it. */
int spool__decoded_scratch_reserve(spool_rb_decoded *d, size_t extra);

/*
 * Inline varint helpers for the batch encoder and decoder (each record
 * has about ten varints): the same results as spool_varint_encode,
 * spool_varlong_size and spool_varint_decode, without a call per field.
 */
static inline size_t spool__zz_size(uint64_t z)
{
    if (z < 0x80) {
        return 1; /* most lengths and deltas of a record */
    }
    if (z < 0x4000) {
        return 2; /* a line's length, a record's */
    }
    /* 7 bits a byte: bytes = ceil(bits / 7). */
    unsigned bits = 64u - (unsigned)__builtin_clzll(z | 1);
    return (bits + 6) / 7;
}

static inline size_t spool__varlong_size(int64_t v)
{
    return spool__zz_size(((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline size_t spool__varint_size(int32_t v)
{
    return spool__zz_size(((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

static inline size_t spool__zz_put(uint8_t *dst, uint64_t z)
{
    if (z < 0x80) {
        dst[0] = (uint8_t)z;
        return 1;
    }
    if (z < 0x4000) {
        dst[0] = (uint8_t)(z | 0x80);
        dst[1] = (uint8_t)(z >> 7);
        return 2;
    }
    size_t n = 0;
    while (z >= 0x80) {
        dst[n++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    dst[n++] = (uint8_t)z;
    return n;
}

static inline size_t spool__varint_put(uint8_t *dst, int32_t v)
{
    return spool__zz_put(dst, ((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

static inline size_t spool__varlong_put(uint8_t *dst, int64_t v)
{
    return spool__zz_put(dst, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* spool_varint_decode with the one- and two-byte forms inline. */
static inline size_t spool__varint_get(const uint8_t *src, size_t len, int32_t *out)
{
    uint32_t u;
    size_t n;
    if (len >= 1 && src[0] < 0x80) {
        u = src[0];
        n = 1;
    } else if (len >= 2 && src[1] < 0x80) {
        u = (uint32_t)(src[0] & 0x7f) | (uint32_t)src[1] << 7;
        n = 2;
    } else {
        return spool_varint_decode(src, len, out);
    }
    *out = (int32_t)((u >> 1) ^ (0u - (u & 1)));
    return n;
}

#endif /* SPOOL_CODEC_INTERNAL_H */
