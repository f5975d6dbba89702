/*
 * test_pg_copy.c: the postgresql output's COPY text encoder (pg_copy.c):
 * escaping of backslash, newline, carriage return and tab; a missing field
 * as \N; the timestamp as ISO 8601 UTC for timestamp columns and as ms
 * elsewhere; bytea as \\x hex; identifier quoting; a buffer that grows
 * across many rows. spool-test-requires: postgresql
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../outputs/postgresql/pg_int.h"

static void expect_buf(spool_buf *b, const char *want)
{
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
}

static void test_escape(void **state)
{
    spool_buf b = {0};
    static const uint8_t in[] = "a\\b\tc\nd\re\\N \xc3\xa9";
    assert_int_equal(pg_copy_escape(&b, in, sizeof(in) - 1), 0);
    expect_buf(&b, "a\\\\b\\tc\\nd\\re\\\\N \xc3\xa9");
    b.len = 0;
    assert_int_equal(pg_copy_escape(&b, (const uint8_t *)"\\.", 2), 0);
    expect_buf(&b, "\\\\."); /* never the end-of-data marker */
    spool_buf_free(&b);
}

static void test_row_fields(void **state)
{
    spool_header h[2] = {
        {.key = "host", .key_len = 4, .value = (const uint8_t *)"web\t1", .value_len = 5},
        {.key = "nul", .key_len = 3, .value = NULL, .value_len = -1},
    };
    spool_record r = {.key = NULL,
                      .key_len = -1,
                      .value = (const uint8_t *)"line\n2",
                      .value_len = 6,
                      .headers = h,
                      .header_count = 2,
                      .timestamp = 1764604800123LL,
                      .partition = 0,
                      .offset = 7};
    pg_column cols[] = {
        {"ts", "timestamp", 9, PG_KIND_TS},  {"ms", "timestamp", 9, PG_KIND_TEXT},
        {"msg", "value", 5, PG_KIND_TEXT},   {"k", "key", 3, PG_KIND_TEXT},
        {"host", "host", 4, PG_KIND_TEXT},   {"n", "nul", 3, PG_KIND_TEXT},
        {"none", "absent", 6, PG_KIND_TEXT}, {"raw", "value", 5, PG_KIND_BYTEA},
        {"topic", "topic", 5, PG_KIND_TEXT},
    };
    spool_buf b = {0};
    assert_int_equal(pg_copy_row(&b, cols, 9, &r, "app"), 0);
    expect_buf(&b, "2025-12-01 16:00:00.123+00\t1764604800123\tline\\n2\t\\N\tweb\\t1\t\\N\t\\N\t"
                   "\\\\x6c696e650a32\tapp\n");
    spool_buf_free(&b);
}

static void test_format_ts(void **state)
{
    char buf[48];
    pg_format_ts(buf, sizeof(buf), 0);
    assert_string_equal(buf, "1970-01-01 00:00:00.000+00");
    pg_format_ts(buf, sizeof(buf), -1);
    assert_string_equal(buf, "1969-12-31 23:59:59.999+00");
    pg_format_ts(buf, sizeof(buf), 951782400005LL); /* a leap day */
    assert_string_equal(buf, "2000-02-29 00:00:00.005+00");
}

static void test_quote(void **state)
{
    spool_buf b = {0};
    assert_int_equal(pg_quote_table(&b, "Logs"), 0);
    assert_int_equal(spool_buf_append(&b, " ", 1), 0);
    assert_int_equal(pg_quote_table(&b, "s.t\"x"), 0);
    expect_buf(&b, "\"Logs\" \"s\".\"t\"\"x\"");
    spool_buf_free(&b);
}

static void test_many_rows_grow(void **state)
{
    spool_record r = {.key_len = -1, .value = (const uint8_t *)"\\\\\\\\", .value_len = 4};
    pg_column col = {"v", "value", 5, PG_KIND_TEXT};
    spool_buf b = {0};
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(pg_copy_row(&b, &col, 1, &r, NULL), 0);
    }
    assert_int_equal(b.len, 10000 * 9);
    assert_memory_equal(b.data + 9 * 9999, "\\\\\\\\\\\\\\\\\n", 9);
    spool_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),         cmocka_unit_test(test_row_fields),
        cmocka_unit_test(test_format_ts),      cmocka_unit_test(test_quote),
        cmocka_unit_test(test_many_rows_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
