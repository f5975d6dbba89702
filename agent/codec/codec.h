/*
 * codec.h: the small hot primitives of the Kafka data model, hand-written
 * because they are on every record's path: CRC-32C, zigzag varints,
 * murmur2 (Kafka's default partitioner), and the RecordBatch v2 encoder
 * and decoder (magic 2) with optional zstd compression of the records.
 *
 * RecordBatch v2 layout (all integers big-endian):
 *   baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 |
 *   magic int8 (=2) | crc uint32 (CRC-32C of attributes..end) |
 *   attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 |
 *   maxTimestamp int64 | producerId int64 | producerEpoch int16 |
 *   baseSequence int32 | recordCount int32 | records...
 * Record: length varint | attributes int8 | timestampDelta varlong |
 *   offsetDelta varint | keyLen varint | key | valueLen varint | value |
 *   headerCount varint | (hKeyLen varint | hKey | hValLen varint | hVal)*
 */
#ifndef SPOOL_CODEC_H
#define SPOOL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

#define SPOOL_RB_HEADER_SIZE 61  /* bytes before the first record */
#define SPOOL_RB_LOG_OVERHEAD 12 /* baseOffset + batchLength */
#define SPOOL_RB_CRC_OFFSET 17   /* where the crc field starts */
#define SPOOL_RB_ATTR_OFFSET 21  /* CRC covers from here to the end */
/* Largest decompressed records section spool_rb_decode accepts (bytes). */
#define SPOOL_RB_MAX_DECOMPRESSED ((size_t)64 << 20)

/* enum spool_compression (SPOOL_COMPRESS_*) is public: spool/spool.h. */

/* CRC-32C (Castagnoli). Start with crc = 0; chain calls for pieces:
 * crc32c(crc32c(0, a, n), b, m) == crc32c(0, a||b, n+m). SSE4.2 when the
 * CPU has it, slice-by-8 otherwise. Pure, any thread. */
uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len);

/* Kafka's murmur2 of key (as the Java client and librdkafka compute it). */
uint32_t spool_murmur2(const void *key, size_t len);
/* Kafka's default partition for a key: (murmur2 & 0x7fffffff) % n;
 * -1 if n <= 0. */
int32_t spool_partition_for_key(const void *key, size_t len, int32_t n);

/* Zigzag varints (Kafka/protobuf). Encoders write at most 5 / 10 bytes and
 * return the count. Decoders return bytes read, or 0 if truncated or
 * over-long (more than 5 / 10 bytes, or bits set beyond 32 / 64).
 * Non-minimal encodings that fit are accepted, as Kafka does. */
size_t spool_varint_encode(uint8_t *dst, int32_t v);
size_t spool_varlong_encode(uint8_t *dst, int64_t v);
size_t spool_varint_decode(const uint8_t *src, size_t len, int32_t *out);
size_t spool_varlong_decode(const uint8_t *src, size_t len, int64_t *out);
/* Bytes spool_varlong_encode would write. */
size_t spool_varlong_size(int64_t v);

/* spool_buf (the growable buffer) is public: spool/spool.h. */

/*
 * Appends one RecordBatch v2 holding recs[0..n) to out, with baseOffset
 * base_offset and offsets base_offset + i. Timestamps of 0 are replaced by
 * now_ms. baseTimestamp is the smallest (stamped) timestamp, maxTimestamp
 * the largest. compression is a spool_compression (NONE, ZSTD or GZIP;
 * level is the zstd level, or the zlib level 1-9 for GZIP, else default).
 * If compression does not make the records smaller they are stored
 * uncompressed (the attributes say so). One reservation of out per call, no
 * allocation per record. Returns 0, -EINVAL (n == 0, a length below -1, a
 * NULL pointer with a positive length, or a batch over 2 GiB), -ENOMEM, or
 * -EIO (compressor failure); on error out->len is unchanged. Any thread
 * (zstd contexts are per thread).
 */
int spool_rb_encode(spool_buf *out, int64_t base_offset, const spool_record *recs, size_t n,
                    int64_t now_ms, int compression, int level);

/* The fixed fields of a batch, read without decoding records. */
typedef struct spool_rb_info {
    int64_t base_offset;
    int32_t batch_length; /* bytes after the batchLength field */
    uint32_t crc;
    int16_t attributes;
    int32_t last_offset_delta;
    int64_t base_timestamp; /* ms */
    int64_t max_timestamp;  /* ms */
    int32_t record_count;
} spool_rb_info;

/*
 * Parses the header of the batch at buf. Returns the whole batch size in
 * bytes (12 + batchLength) on success; 0 if len is too short to hold the
 * whole batch (need more bytes); -EBADMSG if the header is invalid (magic
 * not 2 (checked once byte 16 is present), batchLength below 49,
 * recordCount negative) or, with verify_crc, the CRC does not match.
 * info may be NULL. Pure, any thread.
 */
long spool_rb_parse_header(const uint8_t *buf, size_t len, int verify_crc, spool_rb_info *info);

/* Decoded records of one or more batches; reused across calls to avoid
 * allocation per batch. A zeroed struct is empty. Record views point into
 * the caller's batch bytes (uncompressed batches), into `scratch`
 * (decompressed ones) or, for empty strings, into static storage. */
typedef struct spool_rb_decoded {
    spool_record *records; /* count entries */
    size_t count;
    size_t cap;            /* allocated entries of records */
    spool_header *headers; /* storage for all records' headers */
    size_t header_count;
    size_t header_cap;
    spool_buf scratch; /* decompressed record bytes */
} spool_rb_decoded;

/*
 * Decodes every record of the complete batch at buf (whole batch, as sized
 * by spool_rb_parse_header; bytes past it are ignored; CRC is checked)
 * and appends them to d, with partition set to `partition`, skipping
 * records with offset < min_offset. Control batches yield no records.
 * View stability: when d->headers or d->scratch must grow, every earlier
 * record's views into them are rebased onto the new block before the old
 * one is freed, so all records in d stay valid across any number of decode
 * calls, until spool_rb_decoded_reset/free (and, for uncompressed batches,
 * while buf lives). Copy the spool_record structs, not pointers to them:
 * d->records itself may move on the next decode.
 * Returns records appended (>= 0), or -EBADMSG (truncated, bad CRC or any
 * malformed field), -ENOTSUP (snappy or lz4), -ENOMEM; on error d is as it
 * was before the call. Fuzz-safe: never reads outside buf[0..len).
 * One thread per d.
 */
int spool_rb_decode(const uint8_t *buf, size_t len, int32_t partition, int64_t min_offset,
                    spool_rb_decoded *d);
/*
 * spool_rb_decode keeping only the headers named `keep` (keep_len bytes;
 * keep NULL: every header, as spool_rb_decode): the others are checked as
 * strictly but get no view, so a record's header_count counts only those
 * kept. For readers that use keys and values only (an output sending raw
 * values keeps just the stream-tick header to leave ticks out): no header
 * views are built per record.
 */
int spool_rb_decode_keep(const uint8_t *buf, size_t len, int32_t partition, int64_t min_offset,
                         const char *keep, size_t keep_len, spool_rb_decoded *d);
/* Forgets all records (keeps the allocations for reuse). */
void spool_rb_decoded_reset(spool_rb_decoded *d);
/* Frees everything; accepts NULL; d is empty (zeroed) afterwards. */
void spool_rb_decoded_free(spool_rb_decoded *d);

/*
 * Copies n bytes from src to dst (not overlapping) without a call for
 * the short fields of a record (header names and values, lengths up to
 * 16): two overlapping fixed-size moves, never a byte outside [0, n) of
 * either side. Longer runs go to memcpy.
 */
static inline void spool__copy(uint8_t *dst, const void *src, size_t n)
{
    const uint8_t *s = (const uint8_t *)src;
    if (n > 16) {
        __builtin_memcpy(dst, s, n);
    } else if (n >= 8) {
        uint64_t a, b;
        __builtin_memcpy(&a, s, 8);
        __builtin_memcpy(&b, s + n - 8, 8);
        __builtin_memcpy(dst, &a, 8);
        __builtin_memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        __builtin_memcpy(&a, s, 4);
        __builtin_memcpy(&b, s + n - 4, 4);
        __builtin_memcpy(dst, &a, 4);
        __builtin_memcpy(dst + n - 4, &b, 4);
    } else if (n > 0) {
        uint8_t a = s[0], b = s[n / 2], c = s[n - 1];
        dst[0] = a;
        dst[n / 2] = b;
        dst[n - 1] = c;
    }
}

#endif /* SPOOL_CODEC_H */
