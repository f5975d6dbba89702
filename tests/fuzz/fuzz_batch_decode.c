/*
 * fuzz_batch_decode.c: libFuzzer target for spool_rb_parse_header and
 * spool_rb_decode (agent/codec), and spool_rb_decode_keep against it.
 * Each input is tried twice: as is (so the CRC and length checks are
 * fuzzed), and with its batchLength, magic and CRC patched to be valid (so
 * the fuzzer reaches the record parser and the decompressors instead of
 * stopping at the CRC). The patched copy is decoded twice into one
 * spool_rb_decoded (exercising growth and view rebasing), then every view
 * is read byte by byte so ASAN sees any view that points outside live
 * memory. Built only with clang (see tests/fuzz/CMakeLists.txt).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

static volatile uint8_t sink;

static void touch(const void *p, int64_t len)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    for (int64_t i = 0; i < len; i++) {
        x ^= b[i];
    }
    sink ^= x;
}

static void check_views(const spool_rb_decoded *d)
{
    for (size_t i = 0; i < d->count; i++) {
        const spool_record *r = &d->records[i];
        if ((r->key == NULL) != (r->key_len == -1) || (r->value == NULL) != (r->value_len == -1)) {
            abort();
        }
        touch(r->key, r->key_len);
        touch(r->value, r->value_len);
        if (r->header_count > 0 && (r->headers < d->headers ||
                                    r->headers + r->header_count > d->headers + d->header_count)) {
            abort();
        }
        for (uint32_t h = 0; h < r->header_count; h++) {
            touch(r->headers[h].key, r->headers[h].key_len);
            touch(r->headers[h].value, r->headers[h].value_len);
        }
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spool_rb_info bi;
    spool_rb_decoded d = {0};
    long total = spool_rb_parse_header(data, size, 0, &bi);
    if (total > 0 && (size_t)total > size) {
        abort();
    }
    long total_crc = spool_rb_parse_header(data, size, 1, &bi);
    int n = spool_rb_decode(data, size, 0, 0, &d);
    if (n >= 0 && (total_crc <= 0 || (size_t)n != d.count)) {
        abort();
    }
    check_views(&d);

    if (size >= SPOOL_RB_HEADER_SIZE && size - SPOOL_RB_LOG_OVERHEAD <= INT32_MAX) {
        uint8_t *b = malloc(size);
        if (!b) {
            goto out;
        }
        memcpy(b, data, size);
        put_be32(b + 8, (uint32_t)(size - SPOOL_RB_LOG_OVERHEAD));
        b[16] = 2;
        put_be32(b + SPOOL_RB_CRC_OFFSET,
                 spool_crc32c(0, b + SPOOL_RB_ATTR_OFFSET, size - SPOOL_RB_ATTR_OFFSET));
        int64_t min_offset = (int64_t)(data[0] & 3) - 1;
        size_t before = d.count;
        n = spool_rb_decode(b, size, 1, min_offset, &d);
        if (n >= 0 && d.count != before + (size_t)n) {
            abort();
        }
        /* Keeping one header name accepts and refuses exactly what the
         * full decode does, with the same records. */
        spool_rb_decoded k = {0};
        int nk = spool_rb_decode_keep(b, size, 1, min_offset, "h", 1, &k);
        if (nk != n && !(nk < 0 && n < 0)) {
            abort();
        }
        check_views(&k);
        spool_rb_decoded_free(&k);
        before = d.count;
        n = spool_rb_decode(b, size, 2, INT64_MIN, &d);
        if (n >= 0 && d.count != before + (size_t)n) {
            abort();
        }
        check_views(&d);
        free(b);
    }
out:
    spool_rb_decoded_free(&d);
    return 0;
}
