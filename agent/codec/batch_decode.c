/*
 * batch_decode.c: RecordBatch v2 decoding into a reusable spool_rb_decoded.
 *
 * Every length is bounds-checked against the batch (or the decompressed
 * records section): no read past `len`, negative lengths other than -1
 * (null) rejected, each record must consume exactly its declared length and
 * the section exactly recordCount records. On any error the spool_rb_decoded
 * is rolled back to its state before the call.
 *
 * View stability: record key/value/header views point into the caller's
 * batch bytes (uncompressed batches) or into d->scratch (decompressed
 * ones), and record->headers points into d->headers. When scratch or the
 * header array must grow, a new block is allocated, the old contents are
 * copied, every existing view into the old block is rebased onto the new
 * one, and only then is the old block freed. So all views of every record
 * in d stay valid across any number of decode calls, until reset or free.
 * Control batches (attributes bit 5) yield no records.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec_internal.h"

#define BATCH_ATTR_COMPRESSION 0x07
#define BATCH_ATTR_CONTROL 0x20
#define MIN_RECORD_SIZE 7 /* length + attrs + ts + offset + key + value + header count */

/* Moves pointer p from [old, old + n) to the same place in nu, if inside. */
static inline const void *rebase(const void *p, const uint8_t *old, size_t n, const uint8_t *nu)
{
    uintptr_t u = (uintptr_t)p;
    uintptr_t o = (uintptr_t)old;
    if (p && u >= o && u < o + n) {
        return nu + (u - o);
    }
    return p;
}

int spool__decoded_scratch_reserve(spool_rb_decoded *d, size_t extra)
{
    spool_buf *s = &d->scratch;
    if (extra <= s->cap - s->len) {
        return 0;
    }
    if (extra > SIZE_MAX / 2 - s->len) {
        return -ENOMEM;
    }
    size_t cap = s->cap ? s->cap * 2 : 4096;
    if (cap < s->len + extra) {
        cap = s->len + extra;
    }
    uint8_t *nu = malloc(cap);
    if (!nu) {
        return -ENOMEM;
    }
    uint8_t *old = s->data;
    if (s->len > 0) {
        memcpy(nu, old, s->len);
        for (size_t i = 0; i < d->count; i++) {
            spool_record *r = &d->records[i];
            r->key = rebase(r->key, old, s->len, nu);
            r->value = rebase(r->value, old, s->len, nu);
        }
        for (size_t i = 0; i < d->header_count; i++) {
            spool_header *h = &d->headers[i];
            h->key = rebase(h->key, old, s->len, nu);
            h->value = rebase(h->value, old, s->len, nu);
        }
    }
    free(old);
    s->data = nu;
    s->cap = cap;
    return 0;
}

static int headers_reserve(spool_rb_decoded *d, size_t extra)
{
    if (extra <= d->header_cap - d->header_count) {
        return 0;
    }
    if (extra > SIZE_MAX / (4 * sizeof(spool_header)) - d->header_count) {
        return -ENOMEM;
    }
    size_t cap = d->header_cap ? d->header_cap * 2 : 64;
    if (cap < d->header_count + extra) {
        cap = d->header_count + extra;
    }
    spool_header *nu = malloc(cap * sizeof(*nu));
    if (!nu) {
        return -ENOMEM;
    }
    spool_header *old = d->headers;
    if (d->header_count > 0) {
        memcpy(nu, old, d->header_count * sizeof(*nu));
        for (size_t i = 0; i < d->count; i++) {
            spool_record *r = &d->records[i];
            if (r->header_count > 0) {
                r->headers = nu + (r->headers - old);
            }
        }
    }
    free(old);
    d->headers = nu;
    d->header_cap = cap;
    return 0;
}

static int records_reserve(spool_rb_decoded *d, size_t extra)
{
    if (extra <= d->cap - d->count) {
        return 0;
    }
    if (extra > SIZE_MAX / (4 * sizeof(spool_record)) - d->count) {
        return -ENOMEM;
    }
    size_t cap = d->cap ? d->cap * 2 : 64;
    if (cap < d->count + extra) {
        cap = d->count + extra;
    }
    spool_record *nu = realloc(d->records, cap * sizeof(*nu));
    if (!nu) {
        return -ENOMEM;
    }
    d->records = nu;
    d->cap = cap;
    return 0;
}

static const uint8_t empty_bytes[1];

/* A cursor over [p, end). Every read checks the bound. */
typedef struct cursor {
    const uint8_t *p;
    const uint8_t *end;
} cursor;

static inline int cur_varint(cursor *c, int32_t *v)
{
    size_t n = spool__varint_get(c->p, (size_t)(c->end - c->p), v);
    c->p += n;
    return n ? 0 : -EBADMSG;
}

static inline int cur_varlong(cursor *c, int64_t *v)
{
    /* One or two bytes: the usual timestamp delta (under 8 s). */
    size_t left = (size_t)(c->end - c->p);
    if (left >= 1 && c->p[0] < 0x80) {
        uint64_t z = c->p[0];
        *v = (int64_t)((z >> 1) ^ (0u - (z & 1)));
        c->p++;
        return 0;
    }
    if (left >= 2 && c->p[1] < 0x80) {
        uint64_t z = (uint64_t)(c->p[0] & 0x7f) | (uint64_t)c->p[1] << 7;
        *v = (int64_t)((z >> 1) ^ (0u - (z & 1)));
        c->p += 2;
        return 0;
    }
    size_t n = spool_varlong_decode(c->p, (size_t)(c->end - c->p), v);
    c->p += n;
    return n ? 0 : -EBADMSG;
}

/* Reads a length-prefixed byte string; -1 is null (*out NULL), nullable=0
 * rejects it. */
static inline int cur_bytes(cursor *c, int nullable, const uint8_t **out, int32_t *len)
{
    if (cur_varint(c, len) < 0) {
        return -EBADMSG;
    }
    if (*len == -1 && nullable) {
        *out = NULL;
        return 0;
    }
    if (*len < 0 || (size_t)*len > (size_t)(c->end - c->p)) {
        return -EBADMSG;
    }
    /* An empty string gets a static address, never one past the section's
     * end, so every view lies strictly inside the block it was taken from. */
    *out = *len > 0 ? c->p : empty_bytes;
    c->p += *len;
    return 0;
}

/* Which headers get a view: all (keep NULL) or those named keep. */
typedef struct keep_spec {
    const char *keep;
    size_t keep_len;
} keep_spec;

/* Decodes one record at c into d (appended unless its offset is below
 * min_offset). */
static int decode_record(cursor *c, const spool_rb_info *bi, int32_t partition, int64_t min_offset,
                         const keep_spec *ks, spool_rb_decoded *d)
{
    int32_t rlen;
    if (cur_varint(c, &rlen) < 0 || rlen < MIN_RECORD_SIZE - 1 ||
        (size_t)rlen > (size_t)(c->end - c->p)) {
        return -EBADMSG;
    }
    cursor rc = {c->p, c->p + rlen};
    c->p += rlen;
    int64_t ts_delta;
    int32_t off_delta;
    int32_t hcount;
    const uint8_t *key;
    const uint8_t *value;
    int32_t key_len;
    int32_t value_len;
    rc.p++; /* record attributes: unused */
    if (cur_varlong(&rc, &ts_delta) < 0 || cur_varint(&rc, &off_delta) < 0 ||
        cur_bytes(&rc, 1, &key, &key_len) < 0 || cur_bytes(&rc, 1, &value, &value_len) < 0 ||
        cur_varint(&rc, &hcount) < 0) {
        return -EBADMSG;
    }
    /* Each header takes at least two bytes: this bounds the reservation. */
    if (hcount < 0 || (size_t)hcount > (size_t)(rc.end - rc.p) / 2) {
        return -EBADMSG;
    }
    int rv = headers_reserve(d, (size_t)hcount);
    if (rv < 0) {
        return rv;
    }
    size_t first = d->header_count;
    size_t kept = 0;
    for (int32_t i = 0; i < hcount; i++) {
        const uint8_t *hk;
        const uint8_t *hv;
        int32_t hk_len;
        int32_t hv_len;
        if (cur_bytes(&rc, 0, &hk, &hk_len) < 0 || cur_bytes(&rc, 1, &hv, &hv_len) < 0) {
            return -EBADMSG;
        }
        if (ks->keep &&
            ((size_t)hk_len != ks->keep_len || memcmp(hk, ks->keep, ks->keep_len) != 0)) {
            continue; /* checked, not kept */
        }
        spool_header *h = &d->headers[first + kept++];
        h->key = (const char *)hk;
        h->key_len = (uint32_t)hk_len;
        h->value = hv;
        h->value_len = hv_len;
    }
    hcount = (int32_t)kept;
    if (rc.p != rc.end) {
        return -EBADMSG; /* the record's length disagrees with its fields */
    }
    int64_t offset = (int64_t)((uint64_t)bi->base_offset + (uint64_t)(int64_t)off_delta);
    if (offset < min_offset) {
        return 0;
    }
    spool_record *r = &d->records[d->count];
    r->key = key;
    r->key_len = key_len;
    r->value = value;
    r->value_len = value_len;
    r->headers = hcount > 0 ? &d->headers[first] : NULL;
    r->header_count = (uint32_t)hcount;
    r->timestamp = (int64_t)((uint64_t)bi->base_timestamp + (uint64_t)ts_delta);
    r->partition = partition;
    r->offset = offset;
    d->header_count = first + (size_t)hcount;
    d->count++;
    return 1;
}

int spool_rb_decode(const uint8_t *buf, size_t len, int32_t partition, int64_t min_offset,
                    spool_rb_decoded *d)
{
    return spool_rb_decode_keep(buf, len, partition, min_offset, NULL, 0, d);
}

int spool_rb_decode_keep(const uint8_t *buf, size_t len, int32_t partition, int64_t min_offset,
                         const char *keep, size_t keep_len, spool_rb_decoded *d)
{
    keep_spec ks = {keep, keep_len};
    spool_rb_info bi;
    long total = spool_rb_parse_header(buf, len, 1, &bi);
    if (total <= 0) {
        return total == 0 ? -EBADMSG : (int)total;
    }
    size_t count0 = d->count;
    size_t headers0 = d->header_count;
    size_t scratch0 = d->scratch.len;
    int rc = 0;
    int appended = 0;
    if (bi.attributes & BATCH_ATTR_CONTROL) {
        return 0;
    }
    cursor c = {buf + SPOOL_RB_HEADER_SIZE, buf + total};
    int compression = bi.attributes & BATCH_ATTR_COMPRESSION;
    if (compression != SPOOL_COMPRESS_NONE) {
        size_t out_len;
        long at = spool__decompress(compression, c.p, (size_t)(c.end - c.p), d, &out_len);
        if (at < 0) {
            rc = (int)at;
            goto fail;
        }
        c.p = d->scratch.data + at;
        c.end = c.p + out_len;
    }
    if ((size_t)bi.record_count > (size_t)(c.end - c.p) / MIN_RECORD_SIZE) {
        rc = -EBADMSG;
        goto fail;
    }
    rc = records_reserve(d, (size_t)bi.record_count);
    if (rc < 0) {
        goto fail;
    }
    for (int32_t i = 0; i < bi.record_count; i++) {
        rc = decode_record(&c, &bi, partition, min_offset, &ks, d);
        if (rc < 0) {
            goto fail;
        }
        appended += rc;
    }
    if (c.p != c.end) {
        rc = -EBADMSG; /* bytes after the last record */
        goto fail;
    }
    return appended;
fail:
    d->count = count0;
    d->header_count = headers0;
    d->scratch.len = scratch0;
    return rc;
}

void spool_rb_decoded_reset(spool_rb_decoded *d)
{
    d->count = 0;
    d->header_count = 0;
    d->scratch.len = 0;
}

void spool_rb_decoded_free(spool_rb_decoded *d)
{
    if (!d) {
        return;
    }
    free(d->records);
    free(d->headers);
    spool_buf_free(&d->scratch);
    memset(d, 0, sizeof(*d));
}
