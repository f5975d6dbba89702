/*
 * test_codec.c: unit tests of agent/codec: CRC-32C vectors and chaining,
 * zigzag varint boundaries and rejection of truncated/over-long input,
 * murmur2 against Kafka's vectors and librdkafka's partitioner, a
 * RecordBatch v2 built by hand from the spec, encode/decode round trips
 * (null key, empty and null values, 1 MiB value, 100 headers, many records,
 * none/zstd/gzip), corruption and truncation, view stability across many
 * decodes into one spool_rb_decoded, and a small random-mutation loop.
 * Prints (does not assert) a rough throughput figure.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "codec/codec.h"
#include "codec/codec_internal.h"

/* xorshift64*, deterministic pseudo-random numbers for the tests. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Recomputes the CRC of the batch at b (after a deliberate edit). */
static void fix_crc(uint8_t *b, size_t len)
{
    put_be32(b + SPOOL_RB_CRC_OFFSET,
             spool_crc32c(0, b + SPOOL_RB_ATTR_OFFSET, len - SPOOL_RB_ATTR_OFFSET));
}

/* ------------------------------------------------------------------ CRC */

static void test_crc32c_vector(void **state)
{
    (void)state;
    assert_int_equal(spool_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(spool__crc32c_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(spool_crc32c(0, "", 0), 0);
    /* 32 zero bytes: the iSCSI (RFC 3720) vector. */
    uint8_t zeros[32] = {0};
    assert_int_equal(spool_crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
    uint8_t ones[32];
    memset(ones, 0xff, sizeof(ones));
    assert_int_equal(spool_crc32c(0, ones, sizeof(ones)), 0x62A8AB43u);
}

static void test_crc32c_chaining(void **state)
{
    (void)state;
    size_t n = 4099;
    uint8_t *buf = test_malloc(n + 8);
    for (size_t i = 0; i < n + 8; i++) {
        buf[i] = (uint8_t)rnd();
    }
    for (int iter = 0; iter < 300; iter++) {
        size_t off = rnd() % 8; /* unaligned starts */
        size_t len = rnd() % n;
        size_t cut = len ? rnd() % len : 0;
        uint32_t whole = spool_crc32c(0, buf + off, len);
        uint32_t chained =
            spool_crc32c(spool_crc32c(0, buf + off, cut), buf + off + cut, len - cut);
        assert_int_equal(whole, chained);
        assert_int_equal(whole, spool__crc32c_sw(0, buf + off, len));
    }
    test_free(buf);
}

/* Buffers of three 4 KiB streams and more take the three-way hardware
 * loop (joined by polynomial shifts): it must agree with the table
 * version and with chaining through pieces too short for it. */
static void test_crc32c_long(void **state)
{
    (void)state;
    size_t n = 3 * 4096 * 5 + 100;
    uint8_t *buf = test_malloc(n + 8);
    for (size_t i = 0; i < n + 8; i++) {
        buf[i] = (uint8_t)rnd();
    }
    for (int iter = 0; iter < 40; iter++) {
        size_t off = rnd() % 8;
        size_t len = iter < 4 ? 3 * 4096 * (size_t)(iter + 1) + (size_t)iter : rnd() % n;
        uint32_t whole = spool_crc32c(0, buf + off, len);
        assert_int_equal(whole, spool__crc32c_sw(0, buf + off, len));
        uint32_t chained = 0;
        for (size_t at = 0; at < len; at += 1000) {
            chained = spool_crc32c(chained, buf + off + at, len - at < 1000 ? len - at : 1000);
        }
        assert_int_equal(whole, chained);
    }
    test_free(buf);
}

/* spool__copy: every length from 0 to 40 at every alignment copies
 * exactly n bytes and touches nothing around them. */
static void test_copy_short(void **state)
{
    (void)state;
    uint8_t src[64], dst[80];
    for (size_t i = 0; i < sizeof(src); i++) {
        src[i] = (uint8_t)(i * 7 + 1);
    }
    for (size_t n = 0; n <= 40; n++) {
        for (size_t a = 0; a < 8; a++) {
            memset(dst, 0xEE, sizeof(dst));
            spool__copy(dst + 8 + a, src + a, n);
            for (size_t i = 0; i < sizeof(dst); i++) {
                int inside = i >= 8 + a && i < 8 + a + n;
                assert_int_equal(dst[i], inside ? src[a + (i - 8 - a)] : 0xEE);
            }
        }
    }
}

/* ------------------------------------------------------------- varints */

/* The inline helpers of the batch codec agree with the public functions
 * on every length boundary. */
static void test_varint_inline(void **state)
{
    (void)state;
    int64_t vals[200];
    size_t nv = 0;
    vals[nv++] = 0;
    vals[nv++] = INT64_MAX;
    vals[nv++] = INT64_MIN;
    for (int b = 0; b < 63; b++) {
        int64_t v = (int64_t)1 << b;
        vals[nv++] = v;
        vals[nv++] = v - 1;
        vals[nv++] = -v;
    }
    for (size_t i = 0; i < nv; i++) {
        uint8_t a[10], b[10];
        int64_t v = vals[i];
        assert_int_equal(spool__varlong_size(v), spool_varlong_size(v));
        assert_int_equal(spool__varlong_put(a, v), spool_varlong_encode(b, v));
        assert_memory_equal(a, b, spool_varlong_size(v));
        int32_t v32 = (int32_t)v;
        size_t n = spool_varint_encode(b, v32);
        assert_int_equal(spool__varint_size(v32), n);
        assert_int_equal(spool__varint_put(a, v32), n);
        assert_memory_equal(a, b, n);
        for (size_t cut = 0; cut <= n; cut++) {
            int32_t x = 0, y = 0;
            size_t got = spool__varint_get(b, cut, &x);
            assert_int_equal(got, spool_varint_decode(b, cut, &y));
            assert_int_equal(x, y);
        }
    }
}

static void check_varint(int32_t v, const uint8_t *bytes, size_t n)
{
    uint8_t b[5];
    int32_t out = 0;
    assert_int_equal(spool_varint_encode(b, v), n);
    assert_memory_equal(b, bytes, n);
    assert_int_equal(spool_varlong_size(v), n);
    assert_int_equal(spool_varint_decode(b, n, &out), n);
    assert_int_equal(out, v);
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_equal(spool_varint_decode(b, cut, &out), 0); /* truncated */
    }
    int64_t l = 0;
    assert_int_equal(spool_varlong_decode(b, n, &l), n); /* same wire form */
    assert_int_equal(l, v);
}

static void test_varint_boundaries(void **state)
{
    (void)state;
    check_varint(0, (const uint8_t[]){0x00}, 1);
    check_varint(-1, (const uint8_t[]){0x01}, 1);
    check_varint(1, (const uint8_t[]){0x02}, 1);
    check_varint(63, (const uint8_t[]){0x7e}, 1);
    check_varint(-64, (const uint8_t[]){0x7f}, 1);
    check_varint(64, (const uint8_t[]){0x80, 0x01}, 2);
    check_varint(-65, (const uint8_t[]){0x81, 0x01}, 2);
    check_varint(8191, (const uint8_t[]){0xfe, 0x7f}, 2);
    check_varint(8192, (const uint8_t[]){0x80, 0x80, 0x01}, 3);
    check_varint(INT32_MAX, (const uint8_t[]){0xfe, 0xff, 0xff, 0xff, 0x0f}, 5);
    check_varint(INT32_MIN, (const uint8_t[]){0xff, 0xff, 0xff, 0xff, 0x0f}, 5);
}

static void test_varint_rejects(void **state)
{
    (void)state;
    int32_t v;
    int64_t l;
    const uint8_t six[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    assert_int_equal(spool_varint_decode(six, sizeof(six), &v), 0);
    const uint8_t high[] = {0xff, 0xff, 0xff, 0xff, 0x1f}; /* bit 32 set */
    assert_int_equal(spool_varint_decode(high, sizeof(high), &v), 0);
    const uint8_t nonmin[] = {0x80, 0x00}; /* 0, non-minimal: accepted like Kafka */
    assert_int_equal(spool_varint_decode(nonmin, 2, &v), 2);
    assert_int_equal(v, 0);
    assert_int_equal(spool_varint_decode(nonmin, 1, &v), 0);
    uint8_t eleven[11];
    memset(eleven, 0x80, sizeof(eleven));
    eleven[10] = 0;
    assert_int_equal(spool_varlong_decode(eleven, sizeof(eleven), &l), 0);
    uint8_t big[10];
    memset(big, 0xff, sizeof(big));
    big[9] = 0x02; /* bit 64 */
    assert_int_equal(spool_varlong_decode(big, sizeof(big), &l), 0);
    assert_int_equal(spool_varlong_decode(big, 0, &l), 0);
}

static void test_varlong_boundaries(void **state)
{
    (void)state;
    const int64_t vals[] = {0,
                            -1,
                            1,
                            63,
                            64,
                            -64,
                            -65,
                            8191,
                            8192,
                            INT32_MAX,
                            INT32_MIN,
                            (int64_t)INT32_MAX + 1,
                            (int64_t)INT32_MIN - 1,
                            INT64_MAX,
                            INT64_MIN,
                            INT64_MAX - 1,
                            INT64_MIN + 1,
                            1700000000000};
    const size_t sizes[] = {1, 1, 1, 1, 2, 1, 2, 2, 3, 5, 5, 5, 5, 10, 10, 10, 10, 6};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint8_t b[10];
        int64_t out = 0;
        size_t n = spool_varlong_encode(b, vals[i]);
        assert_int_equal(n, sizes[i]);
        assert_int_equal(spool_varlong_size(vals[i]), n);
        assert_int_equal(spool_varlong_decode(b, n, &out), n);
        assert_true(out == vals[i]);
        for (size_t cut = 0; cut < n; cut++) {
            assert_int_equal(spool_varlong_decode(b, cut, &out), 0);
        }
    }
    uint8_t b[10];
    spool_varlong_encode(b, INT64_MIN);
    const uint8_t min_bytes[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_memory_equal(b, min_bytes, 10);
    /* Random round trips. */
    for (int i = 0; i < 10000; i++) {
        int64_t v = (int64_t)(rnd() >> (rnd() % 64));
        v = (rnd() & 1) ? v : -v;
        int64_t out;
        size_t n = spool_varlong_encode(b, v);
        assert_int_equal(spool_varlong_decode(b, n, &out), n);
        assert_true(out == v);
    }
}

/* ------------------------------------------------------------- murmur2 */

static void test_murmur2_kafka_vectors(void **state)
{
    (void)state;
    /* From Kafka's UtilsTest.testMurmur2 (Java ints). */
    static const struct {
        const char *key;
        int32_t hash;
    } cases[] = {
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"a-little-bit-longer-string", -1486304829},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
        {"abc", 479470107},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal((int32_t)spool_murmur2(cases[i].key, strlen(cases[i].key)), cases[i].hash);
    }
    assert_int_equal(spool_partition_for_key("x", 1, 0), -1);
}

static void test_murmur2_vs_librdkafka(void **state)
{
    (void)state;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err)), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(rk);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, "codec-test", NULL);
    assert_non_null(rkt);
    uint8_t key[300];
    for (int i = 0; i < 10000; i++) {
        size_t len = (i < 300) ? (size_t)i : rnd() % sizeof(key);
        for (size_t j = 0; j < len; j++) {
            key[j] = (uint8_t)rnd();
        }
        int32_t n = (int32_t)(1 + rnd() % ((i & 1) ? 7 : 1000));
        int32_t want = rd_kafka_msg_partitioner_murmur2(rkt, key, len, n, NULL, NULL);
        assert_int_equal(spool_partition_for_key(key, len, n), want);
    }
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
}

/* ------------------------------------------------ hand-built RecordBatch */

/* Two records, built from the v2 spec byte by byte (not by the encoder).
 * CRC computed independently (bitwise CRC-32C in Python). */
static const uint8_t hand_batch[] = {
    0, 0, 0, 0, 0, 0, 0, 100,                       /* baseOffset 100 */
    0, 0, 0, 90,                                    /* batchLength: 102 - 12 */
    0, 0, 0, 0,                                     /* partitionLeaderEpoch 0 */
    2,                                              /* magic */
    0x90, 0x48, 0x36, 0xe3,                         /* crc */
    0, 0,                                           /* attributes: no compression */
    0, 0, 0, 1,                                     /* lastOffsetDelta 1 */
    0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00,       /* baseTimestamp 1700000000000 */
    0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x69, 0x2c,       /* maxTimestamp 1700000000300 */
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* producerId -1 */
    0xff, 0xff,                                     /* producerEpoch -1 */
    0xff, 0xff, 0xff, 0xff,                         /* baseSequence -1 */
    0, 0, 0, 2,                                     /* recordCount 2 */
    /* record 0 */
    0x22,                          /* length 17 */
    0x00,                          /* attributes */
    0x00,                          /* timestampDelta 0 */
    0x00,                          /* offsetDelta 0 */
    0x04, 'k', '1',                /* key "k1" */
    0x0a, 'h', 'e', 'l', 'l', 'o', /* value "hello" */
    0x02,                          /* 1 header */
    0x02, 'h', 0x02, 'v',          /* h=v */
    /* record 1 */
    0x2c,                                /* length 22 */
    0x00,                                /* attributes */
    0xd8, 0x04,                          /* timestampDelta 300 */
    0x02,                                /* offsetDelta 1 */
    0x01,                                /* key null (-1) */
    0x0a, 'w', 'o', 'r', 'l', 'd',       /* value "world" */
    0x04,                                /* 2 headers */
    0x02, 'a', 0x01,                     /* a = null */
    0x04, 'b', 'b', 0x06, 'x', 'y', 'z', /* bb = xyz */
};

static void test_hand_built_batch(void **state)
{
    (void)state;
    assert_int_equal(sizeof(hand_batch), 102);
    spool_rb_info bi;
    assert_int_equal(spool_rb_parse_header(hand_batch, sizeof(hand_batch), 1, &bi), 102);
    assert_int_equal(bi.base_offset, 100);
    assert_int_equal(bi.batch_length, 90);
    assert_int_equal(bi.crc, 0x904836e3u);
    assert_int_equal(bi.attributes, 0);
    assert_int_equal(bi.last_offset_delta, 1);
    assert_true(bi.base_timestamp == 1700000000000);
    assert_true(bi.max_timestamp == 1700000000300);
    assert_int_equal(bi.record_count, 2);

    spool_rb_decoded d = {0};
    assert_int_equal(spool_rb_decode(hand_batch, sizeof(hand_batch), 3, 0, &d), 2);
    assert_int_equal(d.count, 2);
    const spool_record *r = &d.records[0];
    assert_int_equal(r->key_len, 2);
    assert_memory_equal(r->key, "k1", 2);
    assert_int_equal(r->value_len, 5);
    assert_memory_equal(r->value, "hello", 5);
    assert_int_equal(r->offset, 100);
    assert_int_equal(r->partition, 3);
    assert_true(r->timestamp == 1700000000000);
    assert_int_equal(r->header_count, 1);
    assert_int_equal(r->headers[0].key_len, 1);
    assert_memory_equal(r->headers[0].key, "h", 1);
    assert_int_equal(r->headers[0].value_len, 1);
    assert_memory_equal(r->headers[0].value, "v", 1);
    r = &d.records[1];
    assert_null(r->key);
    assert_int_equal(r->key_len, -1);
    assert_int_equal(r->value_len, 5);
    assert_memory_equal(r->value, "world", 5);
    assert_int_equal(r->offset, 101);
    assert_true(r->timestamp == 1700000000300);
    assert_int_equal(r->header_count, 2);
    assert_memory_equal(r->headers[0].key, "a", 1);
    assert_null(r->headers[0].value);
    assert_int_equal(r->headers[0].value_len, -1);
    assert_int_equal(r->headers[1].key_len, 2);
    assert_memory_equal(r->headers[1].key, "bb", 2);
    assert_int_equal(r->headers[1].value_len, 3);
    assert_memory_equal(r->headers[1].value, "xyz", 3);

    /* min_offset skips the first record. */
    spool_rb_decoded_reset(&d);
    assert_int_equal(spool_rb_decode(hand_batch, sizeof(hand_batch), 0, 101, &d), 1);
    assert_int_equal(d.records[0].offset, 101);
    assert_int_equal(d.header_count, 2);
    spool_rb_decoded_reset(&d);
    assert_int_equal(spool_rb_decode(hand_batch, sizeof(hand_batch), 0, 102, &d), 0);
    spool_rb_decoded_free(&d);
}

static void test_hand_batch_matches_encoder(void **state)
{
    (void)state;
    /* The encoder writes the same records bit for bit (apart from the
     * partitionLeaderEpoch, which it sets to -1, and so the same CRC). */
    spool_header h0[] = {{"h", 1, (const uint8_t *)"v", 1}};
    spool_header h1[] = {{"a", 1, NULL, -1}, {"bb", 2, (const uint8_t *)"xyz", 3}};
    spool_record recs[2] = {
        {(const uint8_t *)"k1", 2, (const uint8_t *)"hello", 5, h0, 1, 1700000000000, -1, -1},
        {NULL, -1, (const uint8_t *)"world", 5, h1, 2, 1700000000300, -1, -1},
    };
    spool_buf out = {0};
    assert_int_equal(spool_rb_encode(&out, 100, recs, 2, 0, SPOOL_COMPRESS_NONE, 0), 0);
    assert_int_equal(out.len, sizeof(hand_batch));
    assert_memory_equal(out.data, hand_batch, 12);
    assert_memory_equal(out.data + 16, hand_batch + 16, sizeof(hand_batch) - 16);
    spool_buf_free(&out);
}

/* --------------------------------------------------------- round trips */

static void assert_same_record(const spool_record *want, const spool_record *got, int64_t offset,
                               int64_t now_ms)
{
    assert_int_equal(got->key_len, want->key_len);
    if (want->key_len < 0) {
        assert_null(got->key);
    } else if (want->key_len > 0) {
        assert_memory_equal(got->key, want->key, (size_t)want->key_len);
    }
    assert_int_equal(got->value_len, want->value_len);
    if (want->value_len < 0) {
        assert_null(got->value);
    } else {
        assert_non_null(got->value);
        if (want->value_len > 0) {
            assert_memory_equal(got->value, want->value, (size_t)want->value_len);
        }
    }
    assert_int_equal(got->header_count, want->header_count);
    for (uint32_t h = 0; h < want->header_count; h++) {
        assert_int_equal(got->headers[h].key_len, want->headers[h].key_len);
        assert_memory_equal(got->headers[h].key, want->headers[h].key, want->headers[h].key_len);
        assert_int_equal(got->headers[h].value_len, want->headers[h].value_len);
        if (want->headers[h].value_len > 0) {
            assert_memory_equal(got->headers[h].value, want->headers[h].value,
                                (size_t)want->headers[h].value_len);
        }
    }
    assert_true(got->timestamp == (want->timestamp ? want->timestamp : now_ms));
    assert_true(got->offset == offset);
}

/* A fixture of varied records: null key, empty value, null value, a 1 MiB
 * value, 100 headers, and many small records. */
typedef struct fixture {
    spool_record *recs;
    size_t n;
    uint8_t *big;          /* 1 MiB value */
    spool_header *headers; /* 100 headers */
    char (*hkeys)[16];
} fixture;

static void fixture_init(fixture *f, size_t n)
{
    f->n = n;
    f->recs = test_calloc(n, sizeof(*f->recs));
    f->big = test_malloc(1 << 20);
    for (size_t i = 0; i < (1u << 20); i++) {
        f->big[i] = (uint8_t)("compressible text "[i % 18] ^ (i >> 14));
    }
    f->headers = test_calloc(100, sizeof(*f->headers));
    f->hkeys = test_calloc(100, sizeof(*f->hkeys));
    for (int h = 0; h < 100; h++) {
        int kl = snprintf(f->hkeys[h], sizeof(f->hkeys[h]), "hdr-%d", h);
        f->headers[h].key = f->hkeys[h];
        f->headers[h].key_len = (uint32_t)kl;
        f->headers[h].value = (h % 3) ? (const uint8_t *)f->hkeys[h] : NULL;
        f->headers[h].value_len = (h % 3) ? kl : -1;
    }
    static const char *const words[] = {"alpha", "beta", "gamma line of text", ""};
    for (size_t i = 0; i < n; i++) {
        spool_record *r = &f->recs[i];
        const char *w = words[i % 4];
        r->key = (i % 5) ? (const uint8_t *)w : NULL;
        r->key_len = (i % 5) ? (int32_t)strlen(w) : -1;
        r->value = (const uint8_t *)w;
        r->value_len = (int32_t)strlen(w);
        r->timestamp = (i % 7) ? 1700000000000 + (int64_t)(i * 37 % 1000) - 500 : 0;
        r->partition = -1;
        r->offset = -1;
    }
    if (n > 1) {
        f->recs[1].value = NULL; /* null value */
        f->recs[1].value_len = -1;
    }
    if (n > 2) {
        f->recs[2].value_len = 0; /* empty value, non-NULL pointer */
    }
    if (n > 3) {
        f->recs[3].value = f->big;
        f->recs[3].value_len = 1 << 20;
    }
    if (n > 4) {
        f->recs[4].headers = f->headers;
        f->recs[4].header_count = 100;
    }
    if (n > 6) {
        f->recs[6].headers = f->headers + 50;
        f->recs[6].header_count = 3;
    }
}

static void fixture_free(fixture *f)
{
    test_free(f->recs);
    test_free(f->big);
    test_free(f->headers);
    test_free(f->hkeys);
}

static void round_trip(int compression, int expect_attr, size_t n)
{
    fixture f;
    fixture_init(&f, n);
    const int64_t now = 1800000000000;
    spool_buf out = {0};
    /* Batches of several records go after 3 bytes already in the buffer:
     * the encoder keeps its per-record sizes in the spare room, unaligned. */
    size_t pre = n > 1 ? 3 : 0;
    assert_int_equal(spool_buf_append(&out, "abc", pre), 0);
    assert_int_equal(spool_rb_encode(&out, 5000, f.recs, n, now, compression, 3), 0);
    assert_memory_equal(out.data, "abc", pre);
    out.len -= pre;
    memmove(out.data, out.data + pre, out.len);
    spool_rb_info bi;
    assert_int_equal(spool_rb_parse_header(out.data, out.len, 1, &bi), (long)out.len);
    assert_int_equal(bi.attributes & 7, expect_attr);
    assert_int_equal(bi.record_count, (int32_t)n);
    assert_int_equal(bi.last_offset_delta, (int32_t)n - 1);
    int64_t min_ts = INT64_MAX;
    int64_t max_ts = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        int64_t ts = f.recs[i].timestamp ? f.recs[i].timestamp : now;
        min_ts = ts < min_ts ? ts : min_ts;
        max_ts = ts > max_ts ? ts : max_ts;
    }
    assert_true(bi.base_timestamp == min_ts);
    assert_true(bi.max_timestamp == max_ts);
    spool_rb_decoded d = {0};
    assert_int_equal(spool_rb_decode(out.data, out.len, 7, 0, &d), (int)n);
    for (size_t i = 0; i < n; i++) {
        assert_same_record(&f.recs[i], &d.records[i], 5000 + (int64_t)i, now);
        assert_int_equal(d.records[i].partition, 7);
    }
    spool_rb_decoded_free(&d);
    spool_buf_free(&out);
    fixture_free(&f);
}

/* spool_rb_decode_keep: the same records, with views only for headers of
 * the kept name; a header cut short is still refused. */
static void test_decode_keep(void **state)
{
    (void)state;
    size_t n = 10;
    fixture f;
    fixture_init(&f, n);
    const int64_t now = 1800000000000;
    spool_buf out = {0};
    assert_int_equal(spool_rb_encode(&out, 0, f.recs, n, now, SPOOL_COMPRESS_NONE, 0), 0);
    spool_rb_decoded d = {0};
    assert_int_equal(spool_rb_decode_keep(out.data, out.len, 0, 0, "hdr-51", 6, &d), (int)n);
    for (size_t i = 0; i < n; i++) {
        const spool_record *want = &f.recs[i];
        const spool_record *got = &d.records[i];
        assert_int_equal(got->value_len, want->value_len);
        if (want->value_len > 0) {
            assert_memory_equal(got->value, want->value, (size_t)want->value_len);
        }
        assert_int_equal(got->key_len, want->key_len);
        assert_true(got->offset == (int64_t)i);
        uint32_t expect = (i == 4 || i == 6) ? 1 : 0;
        assert_int_equal(got->header_count, expect);
        if (expect) {
            assert_int_equal(got->headers[0].key_len, 6);
            assert_memory_equal(got->headers[0].key, "hdr-51", 6);
            assert_true(got->headers[0].value == NULL); /* 51 % 3 == 0: a null value */
        }
    }
    /* No name matches: no header at all. */
    spool_rb_decoded_reset(&d);
    assert_int_equal(spool_rb_decode_keep(out.data, out.len, 0, 0, "spool.tick", 10, &d), (int)n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(d.records[i].header_count, 0);
    }
    /* A header key length past its record: refused in keep mode too (the
     * CRC is fixed up so that only the structure is wrong). */
    spool_rb_decoded_reset(&d);
    spool_rb_decoded full = {0};
    assert_int_equal(spool_rb_decode(out.data, out.len, 0, 0, &full), (int)n);
    const uint8_t *hk = (const uint8_t *)full.records[6].headers[0].key;
    size_t at = (size_t)(hk - out.data) - 1; /* the key's length varint */
    out.data[at] = 0x7e;                     /* 63 bytes: past the record */
    uint32_t crc = spool_crc32c(0, out.data + SPOOL_RB_ATTR_OFFSET, out.len - SPOOL_RB_ATTR_OFFSET);
    out.data[SPOOL_RB_CRC_OFFSET] = (uint8_t)(crc >> 24);
    out.data[SPOOL_RB_CRC_OFFSET + 1] = (uint8_t)(crc >> 16);
    out.data[SPOOL_RB_CRC_OFFSET + 2] = (uint8_t)(crc >> 8);
    out.data[SPOOL_RB_CRC_OFFSET + 3] = (uint8_t)crc;
    assert_int_equal(spool_rb_decode_keep(out.data, out.len, 0, 0, "hdr-51", 6, &d), -EBADMSG);
    assert_int_equal(d.count, 0);
    spool_rb_decoded_free(&full);
    spool_rb_decoded_free(&d);
    spool_buf_free(&out);
    fixture_free(&f);
}

static void test_round_trip_none(void **state)
{
    (void)state;
    round_trip(SPOOL_COMPRESS_NONE, 0, 1);
    round_trip(SPOOL_COMPRESS_NONE, 0, 3);
    round_trip(SPOOL_COMPRESS_NONE, 0, 20000);
}

static void test_round_trip_zstd(void **state)
{
    (void)state;
    round_trip(SPOOL_COMPRESS_ZSTD, SPOOL_COMPRESS_ZSTD, 20000);
    round_trip(SPOOL_COMPRESS_ZSTD, SPOOL_COMPRESS_ZSTD, 10);
    /* One tiny record does not shrink: stored uncompressed. */
    round_trip(SPOOL_COMPRESS_ZSTD, SPOOL_COMPRESS_NONE, 1);
}

static void test_round_trip_gzip(void **state)
{
    (void)state;
    round_trip(SPOOL_COMPRESS_GZIP, SPOOL_COMPRESS_GZIP, 5000);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    spool_buf out = {0};
    spool_record r = {NULL, -1, (const uint8_t *)"v", 1, NULL, 0, 1, -1, -1};
    assert_int_equal(spool_rb_encode(&out, 0, &r, 0, 1, 0, 0), -EINVAL);
    r.key_len = -2;
    assert_int_equal(spool_rb_encode(&out, 0, &r, 1, 1, 0, 0), -EINVAL);
    r.key_len = 3; /* NULL key with a length */
    assert_int_equal(spool_rb_encode(&out, 0, &r, 1, 1, 0, 0), -EINVAL);
    r.key_len = -1;
    assert_int_equal(spool_rb_encode(&out, 0, &r, 1, 1, 99, 0), -EINVAL);
    assert_int_equal(out.len, 0);
    /* Appends: two batches back to back, each parseable in turn. */
    assert_int_equal(spool_rb_encode(&out, 10, &r, 1, 1, 0, 0), 0);
    size_t first = out.len;
    assert_int_equal(spool_rb_encode(&out, 11, &r, 1, 1, SPOOL_COMPRESS_ZSTD, 1), 0);
    assert_int_equal(spool_rb_parse_header(out.data, out.len, 1, NULL), (long)first);
    assert_int_equal(spool_rb_parse_header(out.data + first, out.len - first, 1, NULL),
                     (long)(out.len - first));
    spool_buf_free(&out);
}

/* ------------------------------------------------- corruption, truncation */

static void test_flipped_byte(void **state)
{
    (void)state;
    uint8_t b[sizeof(hand_batch)];
    spool_rb_decoded d = {0};
    for (size_t i = SPOOL_RB_ATTR_OFFSET; i < sizeof(b); i++) {
        memcpy(b, hand_batch, sizeof(b));
        b[i] ^= 0x10;
        assert_int_equal(spool_rb_parse_header(b, sizeof(b), 1, NULL), -EBADMSG);
        assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
        assert_int_equal(d.count, 0);
    }
    /* Bytes before the CRC'd range: baseOffset and epoch are not covered,
     * magic and batchLength are checked. */
    memcpy(b, hand_batch, sizeof(b));
    b[16] = 1;
    assert_int_equal(spool_rb_parse_header(b, sizeof(b), 0, NULL), -EBADMSG);
    memcpy(b, hand_batch, sizeof(b));
    b[11] = 10; /* batchLength below the header */
    assert_int_equal(spool_rb_parse_header(b, sizeof(b), 0, NULL), -EBADMSG);
    spool_rb_decoded_free(&d);
}

static void test_truncated(void **state)
{
    (void)state;
    spool_rb_decoded d = {0};
    for (size_t len = 0; len < sizeof(hand_batch); len++) {
        uint8_t *b = test_malloc(len + 1); /* exact-size copy: ASAN sees overreads */
        memcpy(b, hand_batch, len);
        assert_int_equal(spool_rb_parse_header(b, len, 1, NULL), 0);
        assert_int_equal(spool_rb_decode(b, len, 0, 0, &d), -EBADMSG);
        test_free(b);
    }
    /* Extra bytes after the batch are not part of it. */
    uint8_t more[sizeof(hand_batch) + 5];
    memcpy(more, hand_batch, sizeof(hand_batch));
    assert_int_equal(spool_rb_parse_header(more, sizeof(more), 1, NULL), sizeof(hand_batch));
    assert_int_equal(spool_rb_decode(more, sizeof(more), 0, 0, &d), 2);
    spool_rb_decoded_free(&d);
}

static void test_malformed_fields(void **state)
{
    (void)state;
    uint8_t b[sizeof(hand_batch)];
    spool_rb_decoded d = {0};
    /* key length -2 (zigzag 3) with a valid CRC */
    memcpy(b, hand_batch, sizeof(b));
    b[61 + 4] = 0x03;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* record length one short */
    memcpy(b, hand_batch, sizeof(b));
    b[61] = 0x20;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* recordCount 3 but only 2 records */
    memcpy(b, hand_batch, sizeof(b));
    b[60] = 3;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* recordCount 1: trailing bytes */
    b[60] = 1;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* recordCount negative */
    memcpy(b, hand_batch, sizeof(b));
    b[57] = 0x80;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_parse_header(b, sizeof(b), 1, NULL), -EBADMSG);
    /* header key null (-1) is not allowed */
    memcpy(b, hand_batch, sizeof(b));
    b[61 + 14] = 0x01;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* compression lz4 / snappy: not supported; 5..7: invalid */
    memcpy(b, hand_batch, sizeof(b));
    b[22] = 3;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -ENOTSUP);
    b[22] = 6;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* zstd attribute on bytes that are not zstd */
    b[22] = 4;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    b[22] = 1;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), -EBADMSG);
    /* control batch: no records */
    memcpy(b, hand_batch, sizeof(b));
    b[22] = 0x20;
    fix_crc(b, sizeof(b));
    assert_int_equal(spool_rb_decode(b, sizeof(b), 0, 0, &d), 0);
    assert_int_equal(d.count, 0);
    assert_int_equal(d.header_count, 0);
    spool_rb_decoded_free(&d);
}

/* Random mutations with a fixed-up CRC must never crash (ASAN build). */
static void test_random_mutations(void **state)
{
    (void)state;
    spool_header hs[] = {{"k", 1, (const uint8_t *)"v", 1}};
    spool_record recs[8];
    for (int i = 0; i < 8; i++) {
        recs[i] = (spool_record){
            (const uint8_t *)"key", 3, (const uint8_t *)"value value", 11, hs, 1, 1000 + i, -1, -1};
    }
    spool_rb_decoded d = {0};
    for (int c = 0; c < 3; c++) {
        int comp = c == 0   ? SPOOL_COMPRESS_NONE
                   : c == 1 ? SPOOL_COMPRESS_ZSTD
                            : SPOOL_COMPRESS_GZIP;
        spool_buf out = {0};
        assert_int_equal(spool_rb_encode(&out, 0, recs, 8, 0, comp, 1), 0);
        for (int iter = 0; iter < 3000; iter++) {
            uint8_t *b = test_malloc(out.len);
            memcpy(b, out.data, out.len);
            int flips = 1 + (int)(rnd() % 4);
            for (int k = 0; k < flips; k++) {
                size_t at = SPOOL_RB_HEADER_SIZE - 4 + rnd() % (out.len - 57);
                b[at] = (uint8_t)rnd();
            }
            fix_crc(b, out.len);
            int rc = spool_rb_decode(b, out.len, 0, 0, &d);
            assert_true(rc == -EBADMSG || rc == -ENOTSUP || (rc >= 0 && rc <= 8));
            for (size_t i = 0; i < d.count; i++) { /* touch every view */
                volatile uint8_t sink = 0;
                for (int32_t j = 0; j < d.records[i].value_len; j++) {
                    sink ^= d.records[i].value[j];
                }
                (void)sink;
            }
            spool_rb_decoded_reset(&d);
            test_free(b);
        }
        spool_buf_free(&out);
    }
    spool_rb_decoded_free(&d);
}

/* ----------------------------------------------------- view stability */

static void test_many_batches_one_decoded(void **state)
{
    (void)state;
    /* 60 batches (compressed and not, 1..50 records, up to 40 headers each)
     * decoded into one spool_rb_decoded: scratch and the header array grow many
     * times; every record must still read back correctly at the end. */
    enum { NB = 60 };
    spool_buf bufs[NB];
    memset(bufs, 0, sizeof(bufs));
    char text[4096];
    for (size_t i = 0; i < sizeof(text); i++) {
        text[i] = (char)('a' + (i * 7 + i / 13) % 26);
    }
    spool_header hs[40];
    for (int h = 0; h < 40; h++) {
        hs[h] = (spool_header){text + h, (uint32_t)(1 + h % 9), (const uint8_t *)text + 100 + h,
                               h % 4 ? 5 + h : -1};
        if (hs[h].value_len < 0) {
            hs[h].value = NULL;
        }
    }
    spool_record recs[50];
    size_t counts[NB];
    int64_t next = 0;
    for (int b = 0; b < NB; b++) {
        counts[b] = 1 + (size_t)b * 7 % 50;
        for (size_t i = 0; i < counts[b]; i++) {
            size_t vl = (size_t)(b * 131 + (int)i * 17) % 3000;
            recs[i] = (spool_record){(const uint8_t *)text + i,
                                     (int32_t)(i % 5),
                                     (const uint8_t *)text + b,
                                     (int32_t)vl,
                                     hs,
                                     (uint32_t)((b + (int)i) % 41),
                                     1000 + b,
                                     -1,
                                     -1};
        }
        int comp = b % 3 == 0   ? SPOOL_COMPRESS_NONE
                   : b % 3 == 1 ? SPOOL_COMPRESS_ZSTD
                                : SPOOL_COMPRESS_GZIP;
        assert_int_equal(spool_rb_encode(&bufs[b], next, recs, counts[b], 0, comp, 1), 0);
        next += (int64_t)counts[b];
    }
    spool_rb_decoded d = {0};
    size_t total = 0;
    for (int b = 0; b < NB; b++) {
        assert_int_equal(spool_rb_decode(bufs[b].data, bufs[b].len, b, 0, &d), (int)counts[b]);
        total += counts[b];
    }
    assert_int_equal(d.count, total);
    size_t k = 0;
    for (int b = 0; b < NB; b++) {
        for (size_t i = 0; i < counts[b]; i++, k++) {
            const spool_record *r = &d.records[k];
            size_t vl = (size_t)(b * 131 + (int)i * 17) % 3000;
            assert_int_equal(r->offset, (int64_t)k);
            assert_int_equal(r->partition, b);
            assert_int_equal(r->key_len, (int32_t)(i % 5));
            assert_memory_equal(r->key, text + i, i % 5);
            assert_int_equal(r->value_len, (int32_t)vl);
            assert_memory_equal(r->value, text + b, vl);
            assert_int_equal(r->header_count, (uint32_t)((b + (int)i) % 41));
            for (uint32_t h = 0; h < r->header_count; h++) {
                assert_int_equal(r->headers[h].key_len, hs[h].key_len);
                assert_memory_equal(r->headers[h].key, hs[h].key, hs[h].key_len);
                assert_int_equal(r->headers[h].value_len, hs[h].value_len);
                if (hs[h].value_len > 0) {
                    assert_memory_equal(r->headers[h].value, hs[h].value, (size_t)hs[h].value_len);
                }
            }
        }
    }
    /* A failing decode leaves d as it was. */
    uint8_t bad[sizeof(hand_batch)];
    memcpy(bad, hand_batch, sizeof(bad));
    bad[61] = 0x20;
    fix_crc(bad, sizeof(bad));
    assert_int_equal(spool_rb_decode(bad, sizeof(bad), 0, 0, &d), -EBADMSG);
    assert_int_equal(d.count, total);
    spool_rb_decoded_free(&d);
    spool_rb_decoded_free(NULL);
    for (int b = 0; b < NB; b++) {
        spool_buf_free(&bufs[b]);
    }
}

/* ------------------------------------------------------ not a test */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_throughput_print(void **state)
{
    (void)state;
    /* Informational only: prints rough figures, asserts nothing on speed. */
    enum { N = 1000 };
    spool_record *recs = test_calloc(N, sizeof(*recs));
    char line[200];
    memset(line, 'x', sizeof(line));
    for (int i = 0; i < N; i++) {
        recs[i] = (spool_record){(const uint8_t *)"host-1",
                                 6,
                                 (const uint8_t *)line,
                                 200,
                                 NULL,
                                 0,
                                 1700000000000 + i,
                                 -1,
                                 -1};
    }
    spool_buf out = {0};
    spool_rb_decoded d = {0};
    double t0 = now_s();
    int rounds = 50;
    for (int k = 0; k < rounds; k++) {
        out.len = 0;
        assert_int_equal(spool_rb_encode(&out, 0, recs, N, 0, SPOOL_COMPRESS_NONE, 0), 0);
    }
    double t1 = now_s();
    for (int k = 0; k < rounds; k++) {
        spool_rb_decoded_reset(&d);
        assert_int_equal(spool_rb_decode(out.data, out.len, 0, 0, &d), N);
    }
    double t2 = now_s();
    printf("# codec: encode %.0f krec/s, decode %.0f krec/s (%zu-byte batches)\n",
           rounds * N / (t1 - t0) / 1e3, rounds * N / (t2 - t1) / 1e3, out.len);
    spool_rb_decoded_free(&d);
    spool_buf_free(&out);
    test_free(recs);
}

/* spool_buf_printf: appends after existing bytes, grows past the first
 * guess, keeps a NUL after the text, and formats into spare room in place. */
static void test_buf_printf(void **state)
{
    (void)state;
    spool_buf b = {0};
    assert_int_equal(spool_buf_printf(&b, "%s=%d", "a", 1), 0);
    assert_int_equal(b.len, 3);
    assert_string_equal((const char *)b.data, "a=1");
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(spool_buf_printf(&b, ",%s,", big), 0);
    assert_int_equal(b.len, 3 + 1 + 2999 + 1);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data, "a=1,xx", 6);
    assert_int_equal(b.data[b.len - 1], ',');
    size_t cap = b.cap;
    assert_int_equal(spool_buf_printf(&b, "%c", 'z'), 0); /* fits: no growth */
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.data[b.len - 1], 'z');
    assert_int_equal(spool_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 3 + 1 + 2999 + 1 + 1);
    spool_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vector),
        cmocka_unit_test(test_crc32c_chaining),
        cmocka_unit_test(test_crc32c_long),
        cmocka_unit_test(test_varint_inline),
        cmocka_unit_test(test_copy_short),
        cmocka_unit_test(test_decode_keep),
        cmocka_unit_test(test_varint_boundaries),
        cmocka_unit_test(test_varint_rejects),
        cmocka_unit_test(test_varlong_boundaries),
        cmocka_unit_test(test_murmur2_kafka_vectors),
        cmocka_unit_test(test_murmur2_vs_librdkafka),
        cmocka_unit_test(test_hand_built_batch),
        cmocka_unit_test(test_hand_batch_matches_encoder),
        cmocka_unit_test(test_round_trip_none),
        cmocka_unit_test(test_round_trip_zstd),
        cmocka_unit_test(test_round_trip_gzip),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_flipped_byte),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_malformed_fields),
        cmocka_unit_test(test_random_mutations),
        cmocka_unit_test(test_many_batches_one_decoded),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_throughput_print),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
