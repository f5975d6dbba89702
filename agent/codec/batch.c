/*
 * batch.c: RecordBatch v2 (magic 2) encoding and header parsing.
 *
 * Encoding makes two passes over the records and no allocation beyond
 * the output buffer's growth: the first pass stamps timestamps (0 ->
 * now_ms), finds base/max timestamps and computes each record's size once
 * (kept in the output buffer's spare room); then the buffer is reserved
 * for the exact encoded size and every field is written in place (varints
 * directly, no per-record allocation). With compression, the raw records are written past the
 * compression bound in the same reservation and compressed into place; if
 * compression does not shrink them, the batch is written uncompressed
 * (attributes say so). Fixed fields: timestampType CreateTime, producerId
 * -1, producerEpoch -1, baseSequence -1, partitionLeaderEpoch -1, no
 * transactional or control bits. Decoding lives in batch_decode.c.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec_internal.h"

static inline void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static inline size_t varint_size(int32_t v)
{
    return spool__varint_size(v);
}

static inline int64_t stamp(const spool_record *r, int64_t now_ms)
{
    return r->timestamp != 0 ? r->timestamp : now_ms;
}

/* Body size of record i (everything after its length varint), or 0 if a
 * field is invalid. A body is at least 7 bytes, so 0 is never valid. */
static uint64_t record_body_size(const spool_record *r, size_t i, int64_t delta)
{
    uint64_t s = 1 + spool__varlong_size(delta) + varint_size((int32_t)i);
    if (r->key_len < -1 || r->value_len < -1 || (r->key_len > 0 && !r->key) ||
        (r->value_len > 0 && !r->value) || r->header_count > INT32_MAX ||
        (r->header_count > 0 && !r->headers)) {
        return 0;
    }
    s += varint_size(r->key_len) + (r->key_len > 0 ? (uint64_t)r->key_len : 0);
    s += varint_size(r->value_len) + (r->value_len > 0 ? (uint64_t)r->value_len : 0);
    s += varint_size((int32_t)r->header_count);
    for (uint32_t h = 0; h < r->header_count; h++) {
        const spool_header *hd = &r->headers[h];
        if (hd->key_len > INT32_MAX || hd->value_len < -1 || (hd->key_len > 0 && !hd->key) ||
            (hd->value_len > 0 && !hd->value)) {
            return 0;
        }
        s += varint_size((int32_t)hd->key_len) + hd->key_len;
        s += varint_size(hd->value_len) + (hd->value_len > 0 ? (uint64_t)hd->value_len : 0);
    }
    return s;
}

static inline uint8_t *put_bytes(uint8_t *p, const void *src, int32_t len)
{
    p += spool__varint_put(p, len);
    if (len > 0) {
        spool__copy(p, src, (size_t)len);
        p += len;
    }
    return p;
}

/* Writes records in their uncompressed form at p; returns the end.
 * sizes holds each record's body size (uint32, native order, unaligned),
 * computed by the first pass. */
static uint8_t *write_records(uint8_t *p, const spool_record *recs, size_t n, int64_t now_ms,
                              int64_t base_ts, const uint8_t *sizes)
{
    for (size_t i = 0; i < n; i++) {
        const spool_record *r = &recs[i];
        int64_t delta = (int64_t)((uint64_t)stamp(r, now_ms) - (uint64_t)base_ts);
        uint32_t body;
        memcpy(&body, sizes + i * sizeof(body), sizeof(body));
        p += spool__varint_put(p, (int32_t)body);
        *p++ = 0; /* record attributes: unused */
        p += spool__varlong_put(p, delta);
        p += spool__varint_put(p, (int32_t)i);
        p = put_bytes(p, r->key, r->key_len);
        p = put_bytes(p, r->value, r->value_len);
        p += spool__varint_put(p, (int32_t)r->header_count);
        for (uint32_t h = 0; h < r->header_count; h++) {
            const spool_header *hd = &r->headers[h];
            p = put_bytes(p, hd->key, (int32_t)hd->key_len);
            p = put_bytes(p, hd->value, hd->value_len);
        }
    }
    return p;
}

int spool_rb_encode(spool_buf *out, int64_t base_offset, const spool_record *recs, size_t n,
                    int64_t now_ms, int compression, int level)
{
    if (n == 0 || n > INT32_MAX || !recs ||
        (compression != SPOOL_COMPRESS_NONE && compression != SPOOL_COMPRESS_ZSTD &&
         compression != SPOOL_COMPRESS_GZIP)) {
        return -EINVAL;
    }
    int64_t base_ts = stamp(&recs[0], now_ms);
    int64_t max_ts = base_ts;
    for (size_t i = 1; i < n; i++) {
        int64_t ts = stamp(&recs[i], now_ms);
        base_ts = ts < base_ts ? ts : base_ts;
        max_ts = ts > max_ts ? ts : max_ts;
    }
    /* The body sizes of the first pass are kept for the second in out's
     * spare room: first at the batch's place, then (once the batch's size
     * is known and reserved) moved just past it, out of the way of what
     * is written. No allocation beyond out's. */
    size_t len0 = out->len;
    size_t sizes_len = n * sizeof(uint32_t);
    int rc = spool_buf_reserve(out, sizes_len);
    if (rc < 0) {
        return rc;
    }
    uint64_t raw = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t delta = (int64_t)((uint64_t)stamp(&recs[i], now_ms) - (uint64_t)base_ts);
        uint64_t body = record_body_size(&recs[i], i, delta);
        if (body == 0 || body > INT32_MAX) {
            return -EINVAL;
        }
        uint32_t b32 = (uint32_t)body;
        memcpy(out->data + len0 + i * sizeof(b32), &b32, sizeof(b32));
        raw += varint_size((int32_t)body) + body;
        if (raw > INT32_MAX - SPOOL_RB_HEADER_SIZE) {
            return -EINVAL;
        }
    }
    size_t reserve = SPOOL_RB_HEADER_SIZE + (size_t)raw;
    size_t bound = 0;
    if (compression != SPOOL_COMPRESS_NONE) {
        bound = spool__compress_bound(compression, (size_t)raw);
        reserve += bound;
    }
    out->len = len0 + sizes_len; /* keeps the sizes across a reallocation */
    rc = spool_buf_reserve(out, reserve);
    out->len = len0;
    if (rc < 0) {
        return rc;
    }
    /* reserve > 8n >= sizes_len (each record takes at least 7 bytes, plus
     * the header): the ranges do not overlap. */
    const uint8_t *sizes = out->data + len0 + reserve;
    memcpy(out->data + len0 + reserve, out->data + len0, sizes_len);
    uint8_t *hdr = out->data + out->len;
    uint8_t *recs_at = hdr + SPOOL_RB_HEADER_SIZE;
    size_t section = (size_t)raw;
    int attrs = SPOOL_COMPRESS_NONE;
    if (compression == SPOOL_COMPRESS_NONE) {
        write_records(recs_at, recs, n, now_ms, base_ts, sizes);
    } else {
        uint8_t *tmp = recs_at + bound;
        write_records(tmp, recs, n, now_ms, base_ts, sizes);
        long clen = spool__compress(compression, level, recs_at, bound, tmp, (size_t)raw);
        if (clen < 0) {
            return (int)clen;
        }
        if ((size_t)clen < raw) {
            section = (size_t)clen;
            attrs = compression;
        } else {
            memcpy(recs_at, tmp, (size_t)raw); /* did not shrink: store */
        }
    }
    put_be64(hdr + 0, (uint64_t)base_offset);
    put_be32(hdr + 8, (uint32_t)(SPOOL_RB_HEADER_SIZE - SPOOL_RB_LOG_OVERHEAD + section));
    put_be32(hdr + 12, UINT32_MAX);        /* partitionLeaderEpoch -1 */
    hdr[16] = 2;                           /* magic */
    put_be16(hdr + 21, (uint16_t)attrs);   /* attributes */
    put_be32(hdr + 23, (uint32_t)(n - 1)); /* lastOffsetDelta */
    put_be64(hdr + 27, (uint64_t)base_ts); /* baseTimestamp */
    put_be64(hdr + 35, (uint64_t)max_ts);  /* maxTimestamp */
    put_be64(hdr + 43, UINT64_MAX);        /* producerId -1 */
    put_be16(hdr + 51, UINT16_MAX);        /* producerEpoch -1 */
    put_be32(hdr + 53, UINT32_MAX);        /* baseSequence -1 */
    put_be32(hdr + 57, (uint32_t)n);       /* recordCount */
    size_t total = SPOOL_RB_HEADER_SIZE + section;
    put_be32(hdr + SPOOL_RB_CRC_OFFSET,
             spool_crc32c(0, hdr + SPOOL_RB_ATTR_OFFSET, total - SPOOL_RB_ATTR_OFFSET));
    out->len += total;
    return 0;
}

long spool_rb_parse_header(const uint8_t *buf, size_t len, int verify_crc, spool_rb_info *info)
{
    if (len < SPOOL_RB_LOG_OVERHEAD) {
        return 0;
    }
    int32_t blen = (int32_t)get_be32(buf + 8);
    if (blen < SPOOL_RB_HEADER_SIZE - SPOOL_RB_LOG_OVERHEAD ||
        blen > INT32_MAX - SPOOL_RB_LOG_OVERHEAD) {
        return -EBADMSG;
    }
    if (len > 16 && buf[16] != 2) {
        return -EBADMSG; /* wrong magic: known as soon as the byte is here */
    }
    size_t total = SPOOL_RB_LOG_OVERHEAD + (size_t)blen;
    if (len < total) {
        return 0;
    }
    spool_rb_info bi;
    bi.base_offset = (int64_t)get_be64(buf);
    bi.batch_length = blen;
    bi.crc = get_be32(buf + SPOOL_RB_CRC_OFFSET);
    bi.attributes = (int16_t)((uint16_t)buf[21] << 8 | buf[22]);
    bi.last_offset_delta = (int32_t)get_be32(buf + 23);
    bi.base_timestamp = (int64_t)get_be64(buf + 27);
    bi.max_timestamp = (int64_t)get_be64(buf + 35);
    bi.record_count = (int32_t)get_be32(buf + 57);
    if (bi.record_count < 0) {
        return -EBADMSG;
    }
    if (verify_crc &&
        spool_crc32c(0, buf + SPOOL_RB_ATTR_OFFSET, total - SPOOL_RB_ATTR_OFFSET) != bi.crc) {
        return -EBADMSG;
    }
    if (info) {
        *info = bi;
    }
    return (long)total;
}
