/*
 * spool/wire.h: the agent <-> aggregator wire format, public so that the
 * http output (agent side), the http input (aggregator side) and any other
 * implementation share one definition. docs/protocol.md is the full
 * specification (request, headers, batch layout, responses); this header is
 * its C binding. Everything here is pure (no I/O, no core state): any
 * thread, the caller owns every buffer it passes.
 *
 * A request body is one of:
 *  - SPOOL_WIRE_CT_BATCH: RecordBatch v2 bytes exactly as the agent's log
 *    holds them (one or more batches back to back, CRC-32C checked);
 *  - SPOOL_WIRE_CT_NDJSON: one JSON record per line;
 *  - SPOOL_WIRE_CT_JSON: one JSON array of records.
 * One JSON record is the object spool_json_append_record writes:
 *   {"key":"k"|null,"value":"v"|null,"headers":{"name":"v"|null,...},
 *    "timestamp":1700000000000,"topic":"t","partition":0,"offset":42}
 * A reader takes key, value, headers and timestamp and ignores any other
 * field; a JSON string alone is also a record (its value).
 *
 * Limits: JSON carries text. Bytes that are not valid UTF-8 become U+FFFD,
 * so they do not come back byte-identical; the batch format is byte-exact.
 */
#ifndef SPOOL_WIRE_H
#define SPOOL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The request: POST to this path. */
#define SPOOL_WIRE_PATH "/v1/batches"

/* Content types (the request's Content-Type). */
#define SPOOL_WIRE_CT_BATCH "application/vnd.spool.batch"
#define SPOOL_WIRE_CT_NDJSON "application/x-ndjson"
#define SPOOL_WIRE_CT_JSON "application/json"

/* Request headers: the log range a body holds, and its partition (decimal
 * integers). A receiver keeps only records with First <= offset < Next,
 * so a resent body whose first part was already taken is not duplicated. */
#define SPOOL_WIRE_HDR_FIRST_OFFSET "Spool-First-Offset"
#define SPOOL_WIRE_HDR_NEXT_OFFSET "Spool-Next-Offset"
#define SPOOL_WIRE_HDR_PARTITION "Spool-Partition"
#define SPOOL_WIRE_HDR_TOPIC "Spool-Topic"
/* The sending node's producer id (hex, at most 64 characters): with Topic,
 * Partition, First and Next on a batch body, the receiver appends each
 * source offset once (docs/protocol.md, "Exactly once"). */
#define SPOOL_WIRE_HDR_PRODUCER_ID "Spool-Producer-Id"

enum spool_wire_kind {
    SPOOL_WIRE_NDJSON = 0, /* one object per line */
    SPOOL_WIRE_JSON = 1,   /* one array of objects */
    SPOOL_WIRE_FIELDS = 2, /* one field document per line (spool_json_append_fields);
                            * encode only: not read back by spool_wire_json_parse */
};

/* ------------------------------------------------------------------------ */
/* JSON bodies.                                                             */
/* ------------------------------------------------------------------------ */

/* Appends recs[0..n) to out as `kind` (SPOOL_WIRE_NDJSON: each object and
 * "\n"; SPOOL_WIRE_JSON: "[obj,obj]"; SPOOL_WIRE_FIELDS: each field document,
 * typed, and "\n"), topic as in spool_json_append_record.
 * Returns 0 or -ENOMEM. */
SPOOL_API int spool_wire_json_encode(spool_buf *out, int kind, const spool_record *recs, size_t n,
                                     const char *topic);

/* Called once per parsed record; the view is valid only during the call.
 * Return 0 to go on, a negative errno to stop the parse with that value. */
typedef int (*spool_wire_record_fn)(void *arg, const spool_record *r);

/* Reusable parser state (scratch space, private fields); zero it before
 * first use, free with spool_wire_parser_free. One thread at a time. */
typedef struct spool_wire_parser {
    spool_buf scratch;     /* decoded strings of the current record */
    spool_header *headers; /* header views of the current record */
    size_t header_cap;     /* entries allocated */
    size_t *hoff;          /* offsets of header names/values into scratch */
    size_t hoff_cap;       /* entries allocated (4 per header) */
} spool_wire_parser;

SPOOL_API void spool_wire_parser_free(spool_wire_parser *p);

/*
 * Parses a body of records: if its first non-blank byte is '[' a JSON array
 * of records, otherwise ndjson (blank lines skipped, each other line one
 * record: an object or a string). Calls fn for each record in order.
 * Returns the number of records, -EBADMSG with a one-line reason in err
 * ("line 3: expected ':' after a key") for a malformed body, or the
 * negative value fn returned. Records before an error were already given
 * to fn: callers that need all-or-nothing collect first.
 */
SPOOL_API long spool_wire_json_parse(spool_wire_parser *p, const uint8_t *body, size_t len,
                                     spool_wire_record_fn fn, void *arg, char *err, size_t errcap);

/* ------------------------------------------------------------------------ */
/* RecordBatch v2 bodies (also the bytes of spool_chunk.raw).               */
/* ------------------------------------------------------------------------ */

/* Appends one RecordBatch v2 of recs[0..n) to out, offsets base_offset + i,
 * timestamps of 0 stamped with now_ms, compressed with `compression`
 * (SPOOL_COMPRESS_*, level as spool_compress) when that makes it smaller.
 * 0, -EINVAL (n == 0 or a bad record), -ENOMEM or -EIO; out->len unchanged
 * on error. */
SPOOL_API int spool_wire_batch_encode(spool_buf *out, int64_t base_offset, const spool_record *recs,
                                      size_t n, int64_t now_ms, int compression, int level);

/* Size in bytes of the whole batch starting at buf (its header is read,
 * records are not); 0 if len does not hold all of it yet; -EBADMSG if the
 * header is invalid or, with verify_crc, the CRC-32C does not match.
 * *compression (may be NULL) gets the batch's SPOOL_COMPRESS_* value. */
SPOOL_API long spool_wire_batch_size(const uint8_t *buf, size_t len, int verify_crc,
                                     int *compression);

/* A RecordBatch reader: decodes batches into record views, reusing its
 * memory across calls. One thread at a time; the caller owns it. */
typedef struct spool_wire_reader spool_wire_reader;

/* NULL on ENOMEM. */
SPOOL_API spool_wire_reader *spool_wire_reader_create(void);
SPOOL_API void spool_wire_reader_destroy(spool_wire_reader *rd);
/* Forgets the records read so far; keeps the memory for the next batches
 * unless it holds more than keep_bytes of decompressed records. */
SPOOL_API void spool_wire_reader_reset(spool_wire_reader *rd, size_t keep_bytes);
/*
 * Decodes every record of the complete batch at buf[0..len) (as sized by
 * spool_wire_batch_size; the CRC is checked) and appends them to the
 * reader's records, partition set to `partition`, skipping records with
 * offset < min_offset; control batches yield none. Returns the records
 * appended, -EBADMSG (truncated, bad CRC or a malformed field), -ENOTSUP
 * (snappy or lz4), -ENOMEM; on error the reader is as before the call.
 * Never reads outside buf[0..len).
 */
SPOOL_API int spool_wire_reader_read(spool_wire_reader *rd, const uint8_t *buf, size_t len,
                                     int32_t partition, int64_t min_offset);
/* The records read since the last reset, in order; *count gets how many.
 * The views stay valid until the next reset/destroy and, for uncompressed
 * batches, while the caller's batch bytes live. */
SPOOL_API const spool_record *spool_wire_reader_records(const spool_wire_reader *rd, size_t *count);

#ifdef __cplusplus
}
#endif

#endif /* SPOOL_WIRE_H */
