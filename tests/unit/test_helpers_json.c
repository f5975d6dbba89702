/*
 * test_helpers_json.c: the one JSON escaper and record encoder (spool.h):
 * escape vectors (ASCII, quotes, controls, valid UTF-8 kept, every kind of
 * invalid UTF-8 -> \ufffd), the length contract with a small dst, and the
 * exact bytes of spool_json_append_record (field order, null key/value,
 * escaped topic and header names).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "spool/spool.h"

static void expect_escape(const char *in, size_t n, const char *want)
{
    char out[256];
    size_t m = spool_json_escape(out, sizeof(out), (const uint8_t *)in, n);
    assert_true(m < sizeof(out));
    out[m] = '\0';
    assert_string_equal(out, want);
}

static void test_escape_vectors(void **state)
{
    (void)state;
    expect_escape("plain", 5, "plain");
    expect_escape("a\"b\\c", 5, "a\\\"b\\\\c");
    expect_escape("\n\r\t\b\f", 5, "\\n\\r\\t\\b\\f");
    expect_escape("\x01\x1f", 2, "\\u0001\\u001f");
    expect_escape("nul\0x", 5, "nul\\u0000x");
    /* Valid UTF-8 passes through: 2, 3 and 4 byte sequences. */
    expect_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
                  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* Invalid: a lone continuation byte, 0xff, a bad second byte, an
     * overlong '/', a surrogate, past U+10FFFF, truncated at the end. */
    expect_escape("\x80", 1, "\\ufffd");
    expect_escape("\xff\xfe", 2, "\\ufffd\\ufffd");
    expect_escape("\xc3\x28", 2, "\\ufffd(");
    expect_escape("\xc0\xaf", 2, "\\ufffd\\ufffd");
    expect_escape("\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd");
    expect_escape("\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd");
    expect_escape("ok\xe2\x82", 4, "ok\\ufffd\\ufffd");
}

/* The escaper scans 8 bytes at a time: one byte to escape at every
 * position of strings of every length up to 40 (word-aligned or not, first,
 * last), and long runs of the plain bytes next to the ones it must catch
 * (0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7e, 0x7f) passed through unchanged. */
static void test_escape_every_position(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } special[] = {
        {"\"", 1, "\\\""},      {"\\", 1, "\\\\"},           {"\n", 1, "\\n"},
        {"\x1f", 1, "\\u001f"}, {"\0", 1, "\\u0000"},        {"\xff", 1, "\\ufffd"},
        {"\x80", 1, "\\ufffd"}, {"\xc3\xa9", 2, "\xc3\xa9"},
    };
    char in[64], want[128];
    for (size_t len = 1; len <= 40; len++) {
        for (size_t k = 0; k < len; k++) {
            for (size_t s = 0; s < sizeof(special) / sizeof(special[0]); s++) {
                size_t n = 0, w = 0;
                for (size_t i = 0; i < len; i++) {
                    if (i == k) {
                        memcpy(in + n, special[s].in, special[s].n);
                        n += special[s].n;
                        memcpy(want + w, special[s].out, strlen(special[s].out));
                        w += strlen(special[s].out);
                    } else {
                        in[n++] = (char)('a' + i % 26);
                        want[w++] = (char)('a' + i % 26);
                    }
                }
                want[w] = '\0';
                expect_escape(in, n, want);
            }
        }
    }
    static const char edge[] = " !#[]~\x7f";
    for (size_t len = 1; len <= 40; len++) {
        for (size_t i = 0; i < len; i++) {
            in[i] = edge[i % (sizeof(edge) - 1)];
        }
        in[len] = '\0';
        expect_escape(in, len, in);
    }
}

static void test_escape_length_contract(void **state)
{
    (void)state;
    char small[4];
    /* The return is the full length; dst holds a prefix. */
    assert_int_equal(spool_json_escape(small, sizeof(small), (const uint8_t *)"\xff", 1), 6);
    assert_memory_equal(small, "\\uff", 4);
    assert_int_equal(spool_json_escape(NULL, 0, (const uint8_t *)"abc\n", 4), 5);
}

static void test_append_string(void **state)
{
    (void)state;
    spool_buf b = {0};
    assert_int_equal(spool_buf_append(&b, "x=", 2), 0);
    assert_int_equal(spool_json_append_string(&b, "a\"\xff", 3), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data, "x=\"a\\\"\\ufffd\"");
    spool_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_record_exact_bytes(void **state)
{
    (void)state;
    spool_header h[2] = {
        {"host", 4, (const uint8_t *)"web-1", 5},
        {"we\"ird", 6, NULL, -1},
    };
    spool_record r = {0};
    r.key = (const uint8_t *)"k";
    r.key_len = 1;
    r.value = (const uint8_t *)"line\n";
    r.value_len = 5;
    r.headers = h;
    r.header_count = 2;
    r.timestamp = 1700000000123;
    r.partition = 3;
    r.offset = 42;
    spool_buf b = {0};
    assert_int_equal(spool_json_append_record(&b, &r, "app\"x"), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data,
                        "{\"key\":\"k\",\"value\":\"line\\n\",\"headers\":{\"host\":\"web-1\","
                        "\"we\\\"ird\":null},\"timestamp\":1700000000123,\"topic\":\"app\\\"x\","
                        "\"partition\":3,\"offset\":42}");
    b.len = 0;
    spool_record nothing = {0};
    nothing.key_len = -1;
    nothing.value_len = -1;
    assert_int_equal(spool_json_append_record(&b, &nothing, NULL), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data, "{\"key\":null,\"value\":null,\"headers\":{},"
                                        "\"timestamp\":0,\"partition\":0,\"offset\":0}");
    spool_buf_free(&b);
}

/* Renders r as a field document into a NUL-terminated static string. */
static const char *fields_doc(const spool_header *h, uint32_t n, int flags)
{
    static spool_buf b;
    spool_record r = {.key = NULL,
                      .key_len = -1,
                      .value = (const uint8_t *)"v",
                      .value_len = 1,
                      .headers = h,
                      .header_count = n,
                      .timestamp = 5};
    b.len = 0;
    assert_int_equal(spool_json_append_fields(&b, &r, flags), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    return (const char *)b.data;
}

#define H(k, v)                                                                                    \
    {                                                                                              \
        k, sizeof(k) - 1, (const uint8_t *)(v), (int32_t)sizeof(v) - 1                             \
    }
#define HNULL(k)                                                                                   \
    {                                                                                              \
        k, sizeof(k) - 1, NULL, -1                                                                 \
    }

static void test_fields_document(void **state)
{
    (void)state;
    /* nesting in order of first appearance, typed scalars, strings stay strings */
    spool_header a[] = {H("http.status", "503"),   H("host", "web-1"), H("http.method", "GET"),
                        H("http.req.ms", "1.5e3"), H("ok", "true"),    H("zip", "01234"),
                        H("neg", "-0.5"),          H("bad", "1."),     HNULL("nul")};
    assert_string_equal(fields_doc(a, 9, SPOOL_JSON_TYPED),
                        "{\"timestamp\":5,\"value\":\"v\",\"http\":{\"status\":503,\"method\":"
                        "\"GET\",\"req\":{\"ms\":1.5e3}},\"host\":\"web-1\",\"ok\":true,"
                        "\"zip\":\"01234\",\"neg\":-0.5,\"bad\":\"1.\",\"nul\":null}");
    /* untyped: every value a string */
    assert_string_equal(fields_doc(a, 2, 0),
                        "{\"timestamp\":5,\"value\":\"v\",\"http\":{\"status\":\"503\"},"
                        "\"host\":\"web-1\"}");
    /* a name that is also a leaf stays flat; empty parts stay flat; repeats become arrays;
     * record-part names get an underscore */
    spool_header b[] = {H("a", "1"),          H("a.b", "2"), H("x..y", "3"),
                        H(".z", "4"),         H("t", "p"),   H("t", "q"),
                        H("value", "shadow"), H("c.d", "5"), H("c.d", "6")};
    assert_string_equal(fields_doc(b, 9, SPOOL_JSON_TYPED),
                        "{\"timestamp\":5,\"value\":\"v\",\"a\":1,\"a.b\":2,\"x..y\":3,\".z\":4,"
                        "\"t\":[\"p\",\"q\"],\"_value\":\"shadow\",\"c\":{\"d\":[5,6]}}");
    /* the key is written when present; escaping of names and values */
    spool_header c[] = {H("we\"ird.n\\", "l\n")};
    spool_record r = {.key = (const uint8_t *)"k",
                      .key_len = 1,
                      .value = NULL,
                      .value_len = -1,
                      .headers = c,
                      .header_count = 1,
                      .timestamp = 0};
    spool_buf out = {0};
    assert_int_equal(spool_json_append_fields(&out, &r, SPOOL_JSON_TYPED), 0);
    assert_int_equal(spool_buf_append(&out, "", 1), 0);
    assert_string_equal((char *)out.data, "{\"timestamp\":0,\"key\":\"k\",\"value\":null,"
                                          "\"we\\\"ird\":{\"n\\\\\":\"l\\n\"}}");
    spool_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_vectors),         cmocka_unit_test(test_escape_every_position),
        cmocka_unit_test(test_escape_length_contract), cmocka_unit_test(test_append_string),
        cmocka_unit_test(test_record_exact_bytes),     cmocka_unit_test(test_fields_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
