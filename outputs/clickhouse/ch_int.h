/*
 * ch_int.h: internals shared by the files of the `clickhouse` output (not an
 * API): the column mapping and the pure parts (ch_rows.c: column types from
 * DESCRIBE TABLE, JSONEachRow rows, the server's error classification),
 * which unit tests drive without a server.
 */
#ifndef SPOOL_CH_INT_H
#define SPOOL_CH_INT_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

/* How a field is written into its column, from the column's type. */
enum ch_kind {
    CH_KIND_STRING = 0,   /* any type: the field's text as a JSON string, parsed by the server */
    CH_KIND_DATETIME = 1, /* DateTime: `timestamp` as Unix seconds */
    CH_KIND_DATE = 2,     /* Date: `timestamp` as YYYY-MM-DD (UTC) */
};

typedef struct ch_column {
    const char *column; /* the table's column (the option's key) */
    const char *field;  /* the record field it takes (the option's value) */
    size_t field_len;   /* bytes of field */
    int kind;           /* CH_KIND_* (set by the table check) */
    int nullable;       /* Nullable(...): a missing field is null, else left out (default) */
} ch_column;

/* Sets col's kind and nullable from a ClickHouse type name ("DateTime",
 * "Nullable(String)", "DateTime('UTC')", ...). */
void ch_column_set_type(ch_column *col, const char *type);
/* Appends one JSONEachRow object for record r of `topic`, with a newline.
 * 0 or -ENOMEM (out->len then unspecified: the caller resets the buffer). */
int ch_row(spool_buf *out, const ch_column *cols, size_t ncols, const spool_record *r,
           const char *topic);
/* The ClickHouse error code in a response body ("Code: 27, ..."), or -1. */
int ch_error_code(const char *body, size_t len);
/* SPOOL_OK, SPOOL_RETRY or SPOOL_REJECT for an HTTP status (0: no
 * response, a transport error) and the error code of its body. */
int ch_classify(long status, int code);
/* 1 if s is a plain identifier ([A-Za-z_][A-Za-z0-9_]*), else 0. */
int ch_ident_ok(const char *s, size_t len);

#endif /* SPOOL_CH_INT_H */
