/*
 * test_helpers_wire.c: the RecordBatch side of spool/wire.h: a batch
 * encoded (plain and zstd) is sized by spool_wire_batch_size with its
 * compression, read back by a spool_wire_reader with every field, cut at
 * min_offset, refused when truncated or bit-flipped (CRC), and the
 * reader's reset keeps or frees memory as asked. Also the JSON body
 * encoder's two shapes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "spool/wire.h"

static spool_record rec(const char *k, const char *v, const spool_header *h, uint32_t nh,
                        int64_t ts)
{
    spool_record r = {0};
    r.key = (const uint8_t *)k;
    r.key_len = k ? (int32_t)strlen(k) : -1;
    r.value = (const uint8_t *)v;
    r.value_len = v ? (int32_t)strlen(v) : -1;
    r.headers = h;
    r.header_count = nh;
    r.timestamp = ts;
    return r;
}

static void batch_roundtrip(int compression)
{
    spool_header h[1] = {{"host", 4, (const uint8_t *)"web-1", 5}};
    spool_record in[3] = {
        rec("k1", "first line", h, 1, 1700000000001),
        rec(NULL, "second line second line second line", NULL, 0, 1700000000002),
        rec("k3", NULL, NULL, 0, 0),
    };
    spool_buf b = {0};
    assert_int_equal(spool_wire_batch_encode(&b, 100, in, 3, 1700000000999, compression, 3), 0);
    int comp = -1;
    long n = spool_wire_batch_size(b.data, b.len, 1, &comp);
    assert_int_equal(n, (long)b.len);
    assert_true(comp == SPOOL_COMPRESS_NONE || comp == compression);
    assert_int_equal(spool_wire_batch_size(b.data, b.len - 1, 0, NULL), 0); /* need more */

    spool_wire_reader *rd = spool_wire_reader_create();
    assert_non_null(rd);
    assert_int_equal(spool_wire_reader_read(rd, b.data, b.len, 7, -1), 3);
    size_t count = 0;
    const spool_record *out = spool_wire_reader_records(rd, &count);
    assert_int_equal(count, 3);
    assert_int_equal(out[0].offset, 100);
    assert_int_equal(out[2].offset, 102);
    assert_int_equal(out[1].partition, 7);
    assert_memory_equal(out[0].key, "k1", 2);
    assert_int_equal(out[1].key_len, -1);
    assert_int_equal(out[2].value_len, -1);
    assert_memory_equal(out[1].value, in[1].value, (size_t)in[1].value_len);
    assert_int_equal(out[0].header_count, 1);
    assert_memory_equal(out[0].headers[0].value, "web-1", 5);
    assert_int_equal(out[0].timestamp, 1700000000001);
    assert_int_equal(out[2].timestamp, 1700000000999); /* 0 was stamped */

    /* min_offset skips, and records accumulate until a reset. */
    assert_int_equal(spool_wire_reader_read(rd, b.data, b.len, 7, 102), 1);
    spool_wire_reader_records(rd, &count);
    assert_int_equal(count, 4);
    spool_wire_reader_reset(rd, SIZE_MAX);
    spool_wire_reader_records(rd, &count);
    assert_int_equal(count, 0);

    /* A flipped bit in the records: the CRC says so; the reader is unchanged. */
    b.data[b.len - 2] ^= 0x10;
    assert_int_equal(spool_wire_batch_size(b.data, b.len, 1, NULL), -EBADMSG);
    assert_int_equal(spool_wire_reader_read(rd, b.data, b.len, 0, -1), -EBADMSG);
    spool_wire_reader_records(rd, &count);
    assert_int_equal(count, 0);
    spool_wire_reader_reset(rd, 0); /* frees */
    spool_wire_reader_destroy(rd);
    spool_buf_free(&b);
}

static void test_batch_plain(void **state)
{
    (void)state;
    batch_roundtrip(SPOOL_COMPRESS_NONE);
}

static void test_batch_zstd(void **state)
{
    (void)state;
    batch_roundtrip(SPOOL_COMPRESS_ZSTD);
}

static void test_bad_header(void **state)
{
    (void)state;
    uint8_t junk[80];
    memset(junk, 0, sizeof(junk));
    junk[11] = 68; /* batchLength, so the whole batch is 80 bytes */
    junk[16] = 1;  /* magic 1: not a v2 batch */
    assert_int_equal(spool_wire_batch_size(junk, sizeof(junk), 0, NULL), -EBADMSG);
    spool_buf b = {0};
    assert_int_equal(spool_wire_batch_encode(&b, 0, NULL, 0, 0, SPOOL_COMPRESS_NONE, 0), -EINVAL);
    assert_int_equal(b.len, 0);
}

static void test_json_bodies(void **state)
{
    (void)state;
    spool_record in[2] = {rec(NULL, "a", NULL, 0, 1), rec(NULL, "b", NULL, 0, 2)};
    spool_buf b = {0};
    assert_int_equal(spool_wire_json_encode(&b, SPOOL_WIRE_JSON, in, 2, NULL), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data,
                        "[{\"key\":null,\"value\":\"a\",\"headers\":{},\"timestamp\":1,"
                        "\"partition\":0,\"offset\":0},{\"key\":null,\"value\":\"b\","
                        "\"headers\":{},\"timestamp\":2,\"partition\":0,\"offset\":0}]");
    b.len = 0;
    assert_int_equal(spool_wire_json_encode(&b, SPOOL_WIRE_NDJSON, in, 2, "t"), 0);
    size_t lines = 0;
    for (size_t i = 0; i < b.len; i++) {
        lines += b.data[i] == '\n';
    }
    assert_int_equal(lines, 2);
    assert_int_equal(b.data[b.len - 1], '\n');
    spool_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_plain),
        cmocka_unit_test(test_batch_zstd),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_json_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
