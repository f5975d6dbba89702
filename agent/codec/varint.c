/*
 * varint.c: Kafka's zigzag varints (int32, at most 5 bytes) and varlongs
 * (int64, at most 10 bytes), as in the RecordBatch v2 record format.
 *
 * Decoders are bounds-checked: they never read past `len` and return 0 for
 * a truncated value or an over-long one (more than 5 / 10 bytes, or bits
 * set above bit 31 / 63 in the last byte). Non-minimal encodings that fit
 * (e.g. 0x80 0x00 for 0) are accepted, as Kafka accepts them.
 * Pure functions, thread-safe.
 */
#include <stdint.h>

#include "codec/codec.h"

/* Writes the zigzag-mapped value z, 7 bits a byte, low first. */
static inline size_t put_unsigned(uint8_t *dst, uint64_t z)
{
    size_t n = 0;
    while (z >= 0x80) {
        dst[n++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    dst[n++] = (uint8_t)z;
    return n;
}

/* Reads at most max_bytes; the last of them may hold no bits above
 * last_max. Bytes read, or 0 (truncated or over-long). */
static inline size_t get_unsigned(const uint8_t *src, size_t len, size_t max_bytes,
                                  uint8_t last_max, uint64_t *z)
{
    uint64_t v = 0;
    for (size_t i = 0; i < max_bytes; i++) {
        if (i >= len) {
            return 0; /* truncated */
        }
        uint8_t b = src[i];
        if (i == max_bytes - 1 && b > last_max) {
            return 0; /* continuation bit or bits above the type's width */
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *z = v;
            return i + 1;
        }
    }
    return 0;
}

size_t spool_varint_encode(uint8_t *dst, int32_t v)
{
    return put_unsigned(dst, ((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

size_t spool_varlong_encode(uint8_t *dst, int64_t v)
{
    return put_unsigned(dst, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

size_t spool_varlong_size(int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

size_t spool_varint_decode(const uint8_t *src, size_t len, int32_t *out)
{
    uint64_t z;
    size_t n = get_unsigned(src, len, 5, 0x0f, &z);
    if (n > 0) {
        uint32_t u = (uint32_t)z;
        *out = (int32_t)((u >> 1) ^ (0u - (u & 1)));
    }
    return n;
}

size_t spool_varlong_decode(const uint8_t *src, size_t len, int64_t *out)
{
    uint64_t z;
    size_t n = get_unsigned(src, len, 10, 0x01, &z);
    if (n > 0) {
        *out = (int64_t)((z >> 1) ^ (0u - (z & 1)));
    }
    return n;
}
