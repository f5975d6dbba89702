/*
 * pg_int.h: internals shared by the files of the `postgresql` output (not an
 * API): the instance context, the column mapping, and the COPY text encoder
 * (pg_copy.c), which is pure so that unit tests drive it without a server.
 *
 * Threads: everything runs on the output runner's thread (init on the main
 * thread before the runner starts), except stop(), which runs on the main
 * thread and only touches `cancel` and `stopping`, under `lock`.
 */
#ifndef SPOOL_PG_INT_H
#define SPOOL_PG_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

/* How a field is written into its column, from the column's type. */
enum pg_kind {
    PG_KIND_TEXT = 0,  /* the field's bytes, COPY-escaped (any type PostgreSQL parses) */
    PG_KIND_TS = 1,    /* timestamptz / timestamp / date: `timestamp` as ISO 8601 UTC */
    PG_KIND_BYTEA = 2, /* bytea: the bytes as \x hex */
};

typedef struct pg_column {
    const char *column; /* the table's column (the option's key) */
    const char *field;  /* the record field it takes (the option's value) */
    size_t field_len;   /* bytes of field */
    int kind;           /* PG_KIND_* (set by the table check) */
} pg_column;

/* Appends src (len bytes) escaped for COPY text format: backslash, newline,
 * carriage return and tab as \\ \n \r \t. 0 or -ENOMEM. */
int pg_copy_escape(spool_buf *out, const uint8_t *src, size_t len);
/* Appends one COPY text row (columns separated by tabs, a missing field as
 * \N, ended by a newline) for record r of `topic`. 0 or -ENOMEM (out->len
 * is then unspecified: the caller drops the buffer's contents). */
int pg_copy_row(spool_buf *out, const pg_column *cols, size_t ncols, const spool_record *r,
                const char *topic);
/* Writes ms since the epoch as "YYYY-MM-DD HH:MM:SS.mmm+00" into buf (at
 * least 40 bytes); returns the length. */
size_t pg_format_ts(char *buf, size_t cap, int64_t ms);
/* Appends name as a double-quoted SQL identifier ("a""b"). 0 or -ENOMEM. */
int pg_quote_ident(spool_buf *out, const char *name);
/* Appends a possibly schema-qualified table name ("schema.table", split at
 * the first dot) with each part quoted. 0 or -ENOMEM. */
int pg_quote_table(spool_buf *out, const char *table);

#endif /* SPOOL_PG_INT_H */
