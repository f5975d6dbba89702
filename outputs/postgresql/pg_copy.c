/*
 * pg_copy.c: the `postgresql` output's row encoder: records to COPY text
 * format rows (https://www.postgresql.org/docs/15/sql-copy.html, "Text
 * Format"), one column per mapped field, into one growing buffer per chunk
 * (no allocation per row once the buffer has grown).
 *
 * Invariants: every backslash, newline, carriage return and tab of a value
 * is escaped, so a value can never end a column, a row or the data (\.);
 * a missing field (no such header, a null key or value) is \N (SQL NULL).
 * Values are not validated here: PostgreSQL parses them for the column's
 * type, and a value it refuses is a data error the output dead-letters.
 * Not done: NUL bytes and invalid UTF-8 pass through and are refused by the
 * server (text columns cannot hold them; map such data to a bytea column).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pg_int.h"

int pg_copy_escape(spool_buf *out, const uint8_t *src, size_t len)
{
    /* Worst case every byte doubles: reserve once, then write in place. */
    if (spool_buf_reserve(out, 2 * len) < 0) {
        return -ENOMEM;
    }
    uint8_t *d = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = src[i];
        switch (ch) {
        case '\\':
            *d++ = '\\';
            *d++ = '\\';
            break;
        case '\n':
            *d++ = '\\';
            *d++ = 'n';
            break;
        case '\r':
            *d++ = '\\';
            *d++ = 'r';
            break;
        case '\t':
            *d++ = '\\';
            *d++ = 't';
            break;
        default:
            *d++ = ch;
        }
    }
    out->len = (size_t)(d - out->data);
    return 0;
}

size_t pg_format_ts(char *buf, size_t cap, int64_t ms)
{
    int64_t secs = ms / 1000;
    int64_t frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    int n = snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    return n < 0 ? 0 : (size_t)n;
}

static int pg_append_bytea(spool_buf *out, const uint8_t *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* In COPY text the bytea input's leading backslash is itself escaped. */
    if (spool_buf_reserve(out, 3 + 2 * len) < 0) {
        return -ENOMEM;
    }
    uint8_t *d = out->data + out->len;
    *d++ = '\\';
    *d++ = '\\';
    *d++ = 'x';
    for (size_t i = 0; i < len; i++) {
        *d++ = (uint8_t)hex[src[i] >> 4];
        *d++ = (uint8_t)hex[src[i] & 15];
    }
    out->len = (size_t)(d - out->data);
    return 0;
}

int pg_copy_row(spool_buf *out, const pg_column *cols, size_t ncols, const spool_record *r,
                const char *topic)
{
    for (size_t i = 0; i < ncols; i++) {
        const pg_column *c = &cols[i];
        if (i > 0 && spool_buf_append(out, "\t", 1) < 0) {
            return -ENOMEM;
        }
        if (c->kind == PG_KIND_TS && c->field_len == 9 && memcmp(c->field, "timestamp", 9) == 0) {
            char ts[48];
            size_t n = pg_format_ts(ts, sizeof(ts), r->timestamp);
            if (spool_buf_append(out, ts, n) < 0) {
                return -ENOMEM;
            }
            continue;
        }
        char scratch[SPOOL_FIELD_SCRATCH];
        const uint8_t *val;
        size_t len;
        if (!spool_record_field(r, topic, c->field, c->field_len, scratch, &val, &len)) {
            if (spool_buf_append(out, "\\N", 2) < 0) {
                return -ENOMEM;
            }
            continue;
        }
        int rc = c->kind == PG_KIND_BYTEA ? pg_append_bytea(out, val, len)
                                          : pg_copy_escape(out, val, len);
        if (rc < 0) {
            return rc;
        }
    }
    return spool_buf_append(out, "\n", 1);
}

int pg_quote_ident(spool_buf *out, const char *name)
{
    if (spool_buf_append(out, "\"", 1) < 0) {
        return -ENOMEM;
    }
    for (const char *p = name; *p; p++) {
        if (*p == '"' && spool_buf_append(out, "\"", 1) < 0) {
            return -ENOMEM;
        }
        if (spool_buf_append(out, p, 1) < 0) {
            return -ENOMEM;
        }
    }
    return spool_buf_append(out, "\"", 1);
}

int pg_quote_table(spool_buf *out, const char *table)
{
    const char *dot = strchr(table, '.');
    if (!dot) {
        return pg_quote_ident(out, table);
    }
    char schema[256];
    size_t n = (size_t)(dot - table);
    if (n >= sizeof(schema)) {
        n = sizeof(schema) - 1;
    }
    memcpy(schema, table, n);
    schema[n] = '\0';
    if (pg_quote_ident(out, schema) < 0 || spool_buf_append(out, ".", 1) < 0) {
        return -ENOMEM;
    }
    return pg_quote_ident(out, dot + 1);
}
