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

#endif /* SPOOL_CODEC_INTERNAL_H */
