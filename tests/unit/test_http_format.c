/*
 * test_http_format.c: the JSON record shape shared by the http output
 * (encoder) and the http input (reader): round trips, the exact bytes of
 * one record, ndjson and arrays, plain string lines, unknown fields,
 * escapes and surrogates, and one-line errors with their line numbers.
 * Also the http input's pure helpers: bearer tokens (file format, re-read
 * on mtime change) and bounded decompression (zstd, gzip).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "../../inputs/http/http_in.h"
#include "spool/wire.h"

/* Collected records, deep-copied so they outlive the callback. */
typedef struct got {
    char key[256];
    int32_t key_len;
    char value[1024];
    int32_t value_len;
    char hk[8][64];
    char hv[8][64];
    int32_t hv_len[8];
    uint32_t nh;
    int64_t ts;
} got;

typedef struct sink {
    got recs[16];
    size_t n;
    int fail_at; /* return -EINTR on this record index, -1 never */
} sink;

static int collect(void *arg, const spool_record *r)
{
    sink *s = arg;
    if ((int)s->n == s->fail_at) {
        return -EINTR;
    }
    assert_true(s->n < 16);
    got *g = &s->recs[s->n++];
    memset(g, 0, sizeof(*g));
    g->key_len = r->key_len;
    if (r->key_len > 0) {
        memcpy(g->key, r->key, (size_t)r->key_len);
    }
    g->value_len = r->value_len;
    if (r->value_len > 0) {
        memcpy(g->value, r->value, (size_t)r->value_len);
    }
    g->nh = r->header_count;
    for (uint32_t i = 0; i < r->header_count && i < 8; i++) {
        memcpy(g->hk[i], r->headers[i].key, r->headers[i].key_len);
        g->hv_len[i] = r->headers[i].value_len;
        if (r->headers[i].value_len > 0) {
            memcpy(g->hv[i], r->headers[i].value, (size_t)r->headers[i].value_len);
        }
    }
    g->ts = r->timestamp;
    return 0;
}

static long parse(const char *text, sink *s, char *err, size_t errcap)
{
    spool_wire_parser p;
    memset(&p, 0, sizeof(p));
    memset(s, 0, sizeof(*s));
    s->fail_at = -1;
    long n =
        spool_wire_json_parse(&p, (const uint8_t *)text, strlen(text), collect, s, err, errcap);
    spool_wire_parser_free(&p);
    return n;
}

static spool_record mkrec(const char *key, const char *value, const spool_header *h, uint32_t nh,
                          int64_t ts, int32_t partition, int64_t offset)
{
    spool_record r = {
        .key = (const uint8_t *)key,
        .key_len = key ? (int32_t)strlen(key) : -1,
        .value = (const uint8_t *)value,
        .value_len = value ? (int32_t)strlen(value) : -1,
        .headers = h,
        .header_count = nh,
        .timestamp = ts,
        .partition = partition,
        .offset = offset,
    };
    return r;
}

static void test_encode_exact(void **state)
{
    spool_header h[2] = {
        {"host", 4, (const uint8_t *)"web-1", 5},
        {"nul", 3, NULL, -1},
    };
    spool_record r = mkrec("k1", "line \"one\"\n", h, 2, 1700000000123, 3, 42);
    spool_buf b = {0};
    assert_int_equal(spool_json_append_record(&b, &r, "app"), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data,
                        "{\"key\":\"k1\",\"value\":\"line \\\"one\\\"\\n\",\"headers\":{\"host\":"
                        "\"web-1\",\"nul\":null},\"timestamp\":1700000000123,\"topic\":\"app\","
                        "\"partition\":3,\"offset\":42}");
    spool_buf_free(&b);

    spool_record nokey = mkrec(NULL, "v", NULL, 0, 5, 0, 0);
    assert_int_equal(spool_json_append_record(&b, &nokey, NULL), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data, "{\"key\":null,\"value\":\"v\",\"headers\":{},"
                                        "\"timestamp\":5,\"partition\":0,\"offset\":0}");
    spool_buf_free(&b);
}

static void test_round_trip_ndjson_and_json(void **state)
{
    spool_header h1[2] = {
        {"host", 4, (const uint8_t *)"h\xc3\xa9", 3}, /* UTF-8 e-acute */
        {"path", 4, (const uint8_t *)"/var/log/a b.log", 16},
    };
    spool_record recs[3] = {
        mkrec("key-1", "tab\there \\ \x01 end", h1, 2, 1, 0, 10),
        mkrec(NULL, "", NULL, 0, 1700000000000, 0, 11),
        mkrec("", NULL, h1, 1, 0, 0, 12),
    };
    for (int kind = SPOOL_WIRE_NDJSON; kind <= SPOOL_WIRE_JSON; kind++) {
        spool_buf b = {0};
        assert_int_equal(spool_wire_json_encode(&b, kind, recs, 3, "t"), 0);
        assert_int_equal(spool_buf_append(&b, "", 1), 0);
        if (kind == SPOOL_WIRE_JSON) {
            assert_int_equal(b.data[0], '[');
        } else {
            /* three lines, each ending in \n */
            int lines = 0;
            for (size_t i = 0; i + 1 < b.len; i++) {
                lines += b.data[i] == '\n';
            }
            assert_int_equal(lines, 3);
        }
        sink s;
        char err[128];
        assert_int_equal(parse((char *)b.data, &s, err, sizeof(err)), 3);
        assert_int_equal(s.recs[0].key_len, 5);
        assert_string_equal(s.recs[0].key, "key-1");
        assert_string_equal(s.recs[0].value, "tab\there \\ \x01 end");
        assert_int_equal(s.recs[0].nh, 2);
        assert_string_equal(s.recs[0].hk[0], "host");
        assert_string_equal(s.recs[0].hv[0], "h\xc3\xa9");
        assert_string_equal(s.recs[0].hv[1], "/var/log/a b.log");
        assert_int_equal(s.recs[0].ts, 1);
        assert_int_equal(s.recs[1].key_len, -1);
        assert_int_equal(s.recs[1].value_len, 0);
        assert_int_equal(s.recs[1].ts, 1700000000000);
        assert_int_equal(s.recs[2].key_len, 0);
        assert_int_equal(s.recs[2].value_len, -1);
        assert_int_equal(s.recs[2].nh, 1);
        spool_buf_free(&b);
    }
}

static void test_plain_strings_blank_lines_unknown_fields(void **state)
{
    sink s;
    char err[128];
    const char *body = "\"just a line\"\n"
                       "\n"
                       "  {\"value\":\"v\",\"extra\":{\"a\":[1,2,{\"b\":null}],\"c\":true},"
                       "\"timestamp\":1.5e3}  \r\n"
                       "{}\n"
                       "\"\\u00e9\\ud83d\\ude00\\/\"";
    assert_int_equal(parse(body, &s, err, sizeof(err)), 4);
    assert_string_equal(s.recs[0].value, "just a line");
    assert_int_equal(s.recs[0].key_len, -1);
    assert_string_equal(s.recs[1].value, "v");
    assert_int_equal(s.recs[1].ts, 1500);
    assert_int_equal(s.recs[2].value_len, -1);
    assert_int_equal(s.recs[2].nh, 0);
    assert_string_equal(s.recs[3].value, "\xc3\xa9\xf0\x9f\x98\x80/");

    assert_int_equal(parse("[]", &s, err, sizeof(err)), 0);
    assert_int_equal(parse("", &s, err, sizeof(err)), 0);
    assert_int_equal(parse(" [ \"a\" , {\"key\":\"k\"} ] ", &s, err, sizeof(err)), 2);
    assert_string_equal(s.recs[1].key, "k");
}

static void test_errors_have_line_numbers(void **state)
{
    sink s;
    char err[128];
    assert_int_equal(parse("{\"value\":\"a\"}\n{\"value\" \"b\"}\n", &s, err, sizeof(err)),
                     -EBADMSG);
    assert_int_equal(s.n, 1);
    assert_string_equal(err, "line 2: expected ':' after a key");

    assert_int_equal(parse("\"a\"\n\nnot json\n", &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 3: a record must be a JSON object or a JSON string");

    assert_int_equal(parse("{\"value\":\"a\"} x", &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 1: unexpected data after the record");

    assert_int_equal(parse("{\"value\":\"unterminated}\n", &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 1: unterminated string");

    assert_int_equal(parse("{\"value\":3}", &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 1: \"value\" must be a string or null");

    assert_int_equal(parse("{\"headers\":{\"a\":1}}", &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 1: a header value must be a string or null");

    assert_int_equal(parse("{\"timestamp\":\"now\"}", &s, err, sizeof(err)), -EBADMSG);
    assert_int_equal(parse("{\"timestamp\":-5}", &s, err, sizeof(err)), -EBADMSG);
    assert_int_equal(parse("[\"a\",]", &s, err, sizeof(err)), -EBADMSG);
    assert_int_equal(parse("[\"a\"] [", &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 1: unexpected data after the array");
    assert_int_equal(parse("\"bad \\x escape\"", &s, err, sizeof(err)), -EBADMSG);
    assert_int_equal(parse("\"tab\tinside\"", &s, err, sizeof(err)), -EBADMSG);
    assert_int_equal(parse("{\"v\":tru}", &s, err, sizeof(err)), -EBADMSG);

    /* Deep nesting in an ignored field is bounded, not a stack overflow. */
    char deep[400];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof(deep), "{\"x\":");
    for (int i = 0; i < 100; i++) {
        deep[n++] = '[';
    }
    deep[n] = '\0';
    assert_int_equal(parse(deep, &s, err, sizeof(err)), -EBADMSG);
    assert_string_equal(err, "line 1: nesting too deep");
}

static void test_callback_error_stops(void **state)
{
    spool_wire_parser p;
    memset(&p, 0, sizeof(p));
    sink s;
    memset(&s, 0, sizeof(s));
    s.fail_at = 1;
    const char *body = "\"a\"\n\"b\"\n\"c\"\n";
    assert_int_equal(
        spool_wire_json_parse(&p, (const uint8_t *)body, strlen(body), collect, &s, NULL, 0),
        -EINTR);
    assert_int_equal(s.n, 1);
    spool_wire_parser_free(&p);
}

static void test_invalid_utf8_is_escaped(void **state)
{
    /* Invalid UTF-8 becomes U+FFFD; the JSON stays valid and parses. */
    spool_record r = mkrec(NULL,
                           "a\xff"
                           "b",
                           NULL, 0, 1, 0, 0);
    spool_buf b = {0};
    assert_int_equal(spool_wire_json_encode(&b, SPOOL_WIRE_NDJSON, &r, 1, NULL), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_non_null(strstr((char *)b.data, "\"a\\ufffdb\""));
    sink s;
    char err[128];
    assert_int_equal(parse((char *)b.data, &s, err, sizeof(err)), 1);
    assert_string_equal(s.recs[0].value, "a\xef\xbf\xbd"
                                         "b"); /* U+FFFD in UTF-8 */
    spool_buf_free(&b);
}

static void test_many_headers_grow(void **state)
{
    /* A record with 40 headers: parser arrays grow past their first size. */
    spool_buf b = {0};
    assert_int_equal(spool_buf_append(&b, "{\"headers\":{", 12), 0);
    for (int i = 0; i < 40; i++) {
        char t[32];
        int n = snprintf(t, sizeof(t), "%s\"h%d\":\"v%d\"", i ? "," : "", i, i);
        assert_int_equal(spool_buf_append(&b, t, (size_t)n), 0);
    }
    assert_int_equal(spool_buf_append(&b, "}}", 3), 0);
    sink s;
    char err[128];
    assert_int_equal(parse((char *)b.data, &s, err, sizeof(err)), 1);
    assert_int_equal(s.recs[0].nh, 40);
    assert_string_equal(s.recs[0].hk[7], "h7");
    assert_string_equal(s.recs[0].hv[7], "v7");
    spool_buf_free(&b);
}

static void test_tokens_file(void **state)
{
    char path[] = "/tmp/spool-test-tokens-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# agents\n  alpha  \n\nbeta\r\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    httpi_tokens t;
    assert_int_equal(httpi_tokens_init(&t, path), 0);
    assert_int_equal(t.count, 2);
    assert_int_equal(httpi_tokens_check(&t, NULL, NULL), HTTPI_AUTH_MISSING);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Basic abc"), HTTPI_AUTH_MISSING);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer "), HTTPI_AUTH_MISSING);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer alpha"), HTTPI_AUTH_OK);
    assert_int_equal(httpi_tokens_check(&t, NULL, "bearer beta "), HTTPI_AUTH_OK);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer alph"), HTTPI_AUTH_WRONG);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer alphaa"), HTTPI_AUTH_WRONG);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer # agents"), HTTPI_AUTH_WRONG);

    /* Replace the file; the change is seen once a second has passed. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("gamma\n", f);
    fclose(f);
    struct timespec ts[2] = {{.tv_sec = time(NULL) + 10}, {.tv_sec = time(NULL) + 10}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    usleep(1100 * 1000);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer gamma"), HTTPI_AUTH_OK);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer alpha"), HTTPI_AUTH_WRONG);

    /* A vanished file keeps the tokens. */
    unlink(path);
    usleep(1100 * 1000);
    assert_int_equal(httpi_tokens_check(&t, NULL, "Bearer gamma"), HTTPI_AUTH_OK);
    httpi_tokens_destroy(&t);
    httpi_tokens_destroy(&t); /* twice is fine */

    assert_int_equal(httpi_tokens_init(&t, path), -ENOENT);
    httpi_tokens_destroy(&t);
}

/* The http input's decompression: spool_decompress into a cleared buffer. */
static int unpack(int compression, const void *src, size_t len, size_t limit, spool_buf *out)
{
    out->len = 0;
    return spool_decompress(out, compression, src, len, limit);
}

static void test_decompress_bounded(void **state)
{
    size_t n = 200000;
    uint8_t *src = malloc(n);
    assert_non_null(src);
    for (size_t i = 0; i < n; i++) {
        src[i] = (uint8_t)(i % 7 == 0 ? 'a' + i % 26 : 'x');
    }
    spool_buf out = {0};

    /* zstd: exact, over the limit, truncated, garbage, with a reused context. */
    size_t bound = ZSTD_compressBound(n);
    uint8_t *z = malloc(bound);
    size_t zn = ZSTD_compress(z, bound, src, n, 1);
    assert_false(ZSTD_isError(zn));
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn, n, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, src, n);
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn, n, &out), 0);
    assert_int_equal(out.len, n);
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn, n - 1, &out), -EFBIG);
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn / 2, n, &out), -EBADMSG);
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, (const uint8_t *)"nonsense", 8, n, &out),
                     -EBADMSG);
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn, n, &out), 0);
    assert_int_equal(out.len, n);

    /* A streamed frame without its size in the header is bounded as it grows. */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    size_t zn2 = ZSTD_compress2(cc, z, bound, src, n);
    assert_false(ZSTD_isError(zn2));
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn2, n, &out), 0);
    assert_int_equal(out.len, n);
    assert_int_equal(unpack(SPOOL_COMPRESS_ZSTD, z, zn2, 70000, &out), -EFBIG);
    ZSTD_freeCCtx(cc);

    /* gzip. */
    uLongf gl = compressBound(n) + 64;
    uint8_t *g = malloc(gl);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = src;
    zs.avail_in = (uInt)n;
    zs.next_out = g;
    zs.avail_out = (uInt)gl;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t gn = zs.total_out;
    deflateEnd(&zs);
    assert_int_equal(unpack(SPOOL_COMPRESS_GZIP, g, gn, n, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, src, n);
    assert_int_equal(unpack(SPOOL_COMPRESS_GZIP, g, gn, 1000, &out), -EFBIG);
    assert_int_equal(unpack(SPOOL_COMPRESS_GZIP, g, gn - 10, n, &out), -EBADMSG);
    assert_int_equal(unpack(SPOOL_COMPRESS_GZIP, (const uint8_t *)"xxxxxxxx", 8, n, &out),
                     -EBADMSG);

    /* identity */
    assert_int_equal(unpack(SPOOL_COMPRESS_NONE, src, n, n, &out), 0);
    assert_int_equal(out.len, n);
    assert_int_equal(unpack(SPOOL_COMPRESS_NONE, src, n, n - 1, &out), -EFBIG);

    ZSTD_freeDCtx(dc);
    spool_buf_free(&out);
    free(src);
    free(z);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_exact),
        cmocka_unit_test(test_round_trip_ndjson_and_json),
        cmocka_unit_test(test_plain_strings_blank_lines_unknown_fields),
        cmocka_unit_test(test_errors_have_line_numbers),
        cmocka_unit_test(test_callback_error_stops),
        cmocka_unit_test(test_invalid_utf8_is_escaped),
        cmocka_unit_test(test_many_headers_grow),
        cmocka_unit_test(test_tokens_file),
        cmocka_unit_test(test_decompress_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
