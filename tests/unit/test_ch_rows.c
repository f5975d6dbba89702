/*
 * test_ch_rows.c: the clickhouse output's pure parts (ch_rows.c): column
 * kinds from ClickHouse type names, JSONEachRow rows (escaping, the
 * timestamp per column kind, Nullable and left-out columns), error codes
 * read from a response and their classification, identifiers.
 * spool-test-requires: clickhouse
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../outputs/clickhouse/ch_int.h"

static void test_types(void **state)
{
    ch_column c = {0};
    ch_column_set_type(&c, "DateTime");
    assert_int_equal(c.kind, CH_KIND_DATETIME);
    assert_int_equal(c.nullable, 0);
    ch_column_set_type(&c, "Nullable(DateTime('UTC'))");
    assert_int_equal(c.kind, CH_KIND_DATETIME);
    assert_int_equal(c.nullable, 1);
    ch_column_set_type(&c, "Date");
    assert_int_equal(c.kind, CH_KIND_DATE);
    ch_column_set_type(&c, "DateTime64(3)");
    assert_int_equal(c.kind, CH_KIND_STRING);
    ch_column_set_type(&c, "LowCardinality(String)");
    assert_int_equal(c.kind, CH_KIND_STRING);
    ch_column_set_type(&c, "Nullable(UInt64)");
    assert_int_equal(c.kind, CH_KIND_STRING);
    assert_int_equal(c.nullable, 1);
}

static void test_row(void **state)
{
    spool_header h[1] = {
        {.key = "host", .key_len = 4, .value = (const uint8_t *)"w\"1\\", .value_len = 4},
    };
    spool_record r = {.key = NULL,
                      .key_len = -1,
                      .value = (const uint8_t *)"a\tb\n\xc3\xa9",
                      .value_len = 6,
                      .headers = h,
                      .header_count = 1,
                      .timestamp = 1764604800123LL};
    ch_column cols[] = {
        {"ts", "timestamp", 9, CH_KIND_DATETIME, 0}, {"day", "timestamp", 9, CH_KIND_DATE, 0},
        {"ms", "timestamp", 9, CH_KIND_STRING, 0},   {"msg", "value", 5, CH_KIND_STRING, 0},
        {"host", "host", 4, CH_KIND_STRING, 0},      {"k", "key", 3, CH_KIND_STRING, 1},
        {"gone", "absent", 6, CH_KIND_STRING, 0},
    };
    spool_buf b = {0};
    assert_int_equal(ch_row(&b, cols, 7, &r, "t"), 0);
    static const char want[] =
        "{\"ts\":\"1764604800\",\"day\":\"2025-12-01\",\"ms\":\"1764604800123\","
        "\"msg\":\"a\\tb\\n\xc3\xa9\",\"host\":\"w\\\"1\\\\\",\"k\":null}\n";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    /* Only left-out columns: an empty object is still a row. */
    b.len = 0;
    assert_int_equal(ch_row(&b, &cols[6], 1, &r, "t"), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "{}\n", 3);
    spool_buf_free(&b);
}

static void test_errors(void **state)
{
    static const char body[] =
        "Code: 27, e.displayText() = DB::Exception: Cannot parse input, e.what() = DB::Exception";
    assert_int_equal(ch_error_code(body, strlen(body)), 27);
    assert_int_equal(ch_error_code("oops", 4), -1);
    assert_int_equal(ch_error_code("Code: x", 7), -1);
    assert_int_equal(ch_classify(200, -1), SPOOL_OK);
    assert_int_equal(ch_classify(500, 27), SPOOL_REJECT); /* a parse error */
    assert_int_equal(ch_classify(400, 6), SPOOL_REJECT);  /* newer servers: 400 */
    assert_int_equal(ch_classify(500, 241), SPOOL_RETRY); /* memory limit */
    assert_int_equal(ch_classify(404, 60), SPOOL_RETRY);  /* unknown table */
    assert_int_equal(ch_classify(401, 192), SPOOL_RETRY); /* unknown user */
    assert_int_equal(ch_classify(413, -1), SPOOL_REJECT); /* too large for a proxy */
    assert_int_equal(ch_classify(429, -1), SPOOL_RETRY);  /* throttled */
    assert_int_equal(ch_classify(503, -1), SPOOL_RETRY);  /* a proxy, no server */
    assert_int_equal(ch_classify(0, -1), SPOOL_RETRY);    /* no answer */
}

static void test_idents(void **state)
{
    assert_true(ch_ident_ok("logs_2", 6));
    assert_true(ch_ident_ok("_x", 2));
    assert_false(ch_ident_ok("2x", 2));
    assert_false(ch_ident_ok("a b", 3));
    assert_false(ch_ident_ok("a`", 2));
    assert_false(ch_ident_ok("", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_row),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_idents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
