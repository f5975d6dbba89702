/*
 * ch_rows.c: the `clickhouse` output's pure parts: a column's kind from its
 * ClickHouse type, records to JSONEachRow rows, and what an error answer
 * means.
 *
 * Invariants: every value is written as a JSON string (ClickHouse 18.16's
 * JSONEachRow parses numbers, dates and dates with times from strings too),
 * escaped by spool_json_append_string, so a row is always valid JSON with
 * one line per record; a missing field is null for a Nullable column and
 * left out otherwise (the column's default). The `timestamp` field becomes
 * Unix seconds for DateTime and a UTC date for Date columns, milliseconds
 * elsewhere. Not done: Array, Map or Tuple columns from one field.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ch_int.h"

void ch_column_set_type(ch_column *col, const char *type)
{
    col->nullable = 0;
    if (strncmp(type, "Nullable(", 9) == 0) {
        col->nullable = 1;
        type += 9;
    }
    if (strncmp(type, "LowCardinality(", 15) == 0) {
        type += 15;
    }
    col->kind = CH_KIND_STRING;
    if (strncmp(type, "DateTime", 8) == 0 &&
        (type[8] == '\0' || type[8] == '(' || type[8] == ')')) {
        col->kind = CH_KIND_DATETIME;
    } else if (strncmp(type, "Date", 4) == 0 && (type[4] == '\0' || type[4] == ')')) {
        col->kind = CH_KIND_DATE;
    }
}

static int ch_append_ts(spool_buf *out, int kind, int64_t ms)
{
    char buf[32];
    int n;
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    if (kind == CH_KIND_DATETIME) {
        n = snprintf(buf, sizeof(buf), "\"%" PRId64 "\"", secs);
    } else if (kind == CH_KIND_DATE) {
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        n = snprintf(buf, sizeof(buf), "\"%04d-%02d-%02d\"", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday);
    } else {
        n = snprintf(buf, sizeof(buf), "\"%" PRId64 "\"", ms);
    }
    return spool_buf_append(out, buf, (size_t)n);
}

int ch_row(spool_buf *out, const ch_column *cols, size_t ncols, const spool_record *r,
           const char *topic)
{
    int first = 1;
    if (spool_buf_append(out, "{", 1) < 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < ncols; i++) {
        const ch_column *c = &cols[i];
        char scratch[SPOOL_FIELD_SCRATCH];
        const uint8_t *val = NULL;
        size_t len = 0;
        int is_ts = c->field_len == 9 && memcmp(c->field, "timestamp", 9) == 0;
        int have =
            is_ts || spool_record_field(r, topic, c->field, c->field_len, scratch, &val, &len);
        if (!have && !c->nullable) {
            continue; /* left out: the column's default */
        }
        size_t clen = strlen(c->column);
        if (spool_buf_reserve(out, clen + 4) < 0) {
            return -ENOMEM;
        }
        if (!first) {
            out->data[out->len++] = ',';
        }
        first = 0;
        out->data[out->len++] = '"';
        memcpy(out->data + out->len, c->column, clen); /* a plain identifier: no escaping */
        out->len += clen;
        out->data[out->len++] = '"';
        out->data[out->len++] = ':';
        int rc;
        if (!have) {
            rc = spool_buf_append(out, "null", 4);
        } else if (is_ts) {
            rc = ch_append_ts(out, c->kind, r->timestamp);
        } else {
            rc = spool_json_append_string(out, val, len);
        }
        if (rc < 0) {
            return -ENOMEM;
        }
    }
    return spool_buf_append(out, "}\n", 2);
}

int ch_error_code(const char *body, size_t len)
{
    static const char tag[] = "Code: ";
    for (size_t i = 0; i + sizeof(tag) - 1 < len; i++) {
        if (memcmp(body + i, tag, sizeof(tag) - 1) == 0) {
            size_t j = i + sizeof(tag) - 1;
            int code = 0;
            int digits = 0;
            while (j < len && body[j] >= '0' && body[j] <= '9' && digits < 6) {
                code = code * 10 + (body[j++] - '0');
                digits++;
            }
            return digits ? code : -1;
        }
    }
    return -1;
}

/* ClickHouse error codes that mean "this data cannot be inserted as it is"
 * (src/Common/ErrorCodes.cpp): parse errors, type mismatches, a null into a
 * non-Nullable column, values out of range. */
static int ch_data_error(int code)
{
    static const int codes[] = {
        6,   /* CANNOT_PARSE_TEXT */
        25,  /* CANNOT_PARSE_ESCAPE_SEQUENCE */
        26,  /* CANNOT_PARSE_QUOTED_STRING */
        27,  /* CANNOT_PARSE_INPUT_ASSERTION_FAILED */
        38,  /* CANNOT_PARSE_DATE */
        41,  /* CANNOT_PARSE_DATETIME */
        53,  /* TYPE_MISMATCH */
        69,  /* ARGUMENT_OUT_OF_BOUND */
        70,  /* CANNOT_CONVERT_TYPE */
        72,  /* CANNOT_PARSE_NUMBER */
        117, /* INCORRECT_DATA */
        131, /* TOO_LARGE_STRING_SIZE */
        349, /* CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN */
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (codes[i] == code) {
            return 1;
        }
    }
    return 0;
}

int ch_classify(long status, int code)
{
    if (status >= 200 && status < 300) {
        return SPOOL_OK;
    }
    if (status > 0 && ch_data_error(code)) {
        return SPOOL_REJECT;
    }
    /* Other client errors without a known code (413: too large): the same
     * request will never pass. Authentication, a missing table (404),
     * timeouts and throttling are the operator's or the server's to fix:
     * retried, the records stay in the log. */
    if (status >= 400 && status < 500 && code < 0 && status != 401 && status != 403 &&
        status != 404 && status != 407 && status != 408 && status != 425 && status != 429) {
        return SPOOL_REJECT;
    }
    return SPOOL_RETRY;
}

int ch_ident_ok(const char *s, size_t len)
{
    if (len == 0 || len > 255) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        if (!alpha && !(i > 0 && ch >= '0' && ch <= '9')) {
            return 0;
        }
    }
    return 1;
}
