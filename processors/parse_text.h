/*
 * parse_text.h: the text parsers of the `parse` processor (issue 15): json, logfmt, kv
 * and csv, as pure functions over a byte buffer. They know nothing of records: each
 * calls an emit callback once per field, in input order, and the caller turns fields
 * into headers. A failure returns a negative errno and a message with the byte offset
 * where the parser stopped (the `parse_error` header says why).
 *
 * Memory: names and values point into the input when they can be used as they are, and
 * into a caller-owned scratch buffer when they must be built (unescaped strings, dotted
 * names of nested JSON, csv's "_N" names). The scratch grows to the largest line seen and
 * is then reused, so steady state allocates nothing. Either pointer is valid only during
 * the callback that receives it (the scratch may move when it grows).
 *
 * Fields already emitted stay emitted when a later byte is an error: the caller decides
 * whether to keep them (on_error: keep) or throw the record's new headers away.
 *
 * Threads: any; one scratch per thread.
 */
#ifndef SPOOL_PARSE_TEXT_H
#define SPOOL_PARSE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#define PARSE_JSON_MAX_DEPTH 64 /* nesting of objects and arrays a json line may have */

/* Caller-owned scratch space. Zero-initialise; free with parse_scratch_free. */
typedef struct parse_scratch {
    uint8_t *data; /* NULL until first needed */
    size_t len;    /* bytes in use during one parse */
    size_t cap;    /* bytes allocated */
} parse_scratch;

/* Why a parse failed. No allocation: the message is truncated to fit. */
typedef struct parse_error {
    size_t offset;     /* 0-based byte offset in the input where the error was found */
    char message[128]; /* one line, no trailing period, e.g. "expected ':' after a key" */
} parse_error;

/*
 * Receives one field. `name` is name_len bytes (no NUL terminator, never contains NUL);
 * `val` is val_len bytes (may contain any byte, NUL included for json's \u0000). Both are
 * valid only during the call. Return 0 to go on; a non-zero return stops the parse and is
 * returned by it (use a negative errno, e.g. -ENOMEM).
 */
typedef int (*parse_emit_fn)(void *arg, const char *name, size_t name_len, const uint8_t *val,
                             size_t val_len);

/*
 * JSON: the line must be one object (surrounding whitespace allowed, trailing bytes are an
 * error). Nested objects are flattened to dotted names ({"http":{"status":500}} gives
 * http.status = 500; an empty object gives its name = {}); strings are unescaped
 * (\uXXXX, surrogate pairs included, to UTF-8; an invalid escape or an unpaired surrogate
 * is an error, and so is \u0000 in a key); numbers, true, false and null are emitted as
 * their literal text; arrays as their raw JSON text. Nesting deeper than
 * PARSE_JSON_MAX_DEPTH is an error. Duplicate names are all emitted, in order, and
 * {"a.b":1} and {"a":{"b":1}} both give a.b. Bytes of strings are not checked to be UTF-8.
 * Returns 0, -EINVAL with *err filled, -ENOMEM (scratch growth), or the callback's
 * non-zero return.
 */
int parse_json(const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit, void *arg,
               parse_error *err);

/*
 * logfmt, as go-logfmt reads it: `key=value key2="quoted \" value" flag`. Keys are runs of
 * bytes above space other than '=' and '"'; a bare key is emitted with the value "true";
 * `key=` with an empty value; quoted values are unescaped as JSON strings. A '"' or '=' in
 * an unquoted value, a key starting with '=', an unterminated quote or a bad escape is an
 * error. Returns as parse_json does.
 */
int parse_logfmt(const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit, void *arg,
                 parse_error *err);

/* Separators of parse_kv. Zero-initialised means the defaults. The two must differ, and
 * neither may be a quote; kv_sep may not be a space (parse_kv refuses them: -EINVAL). */
typedef struct parse_kv_options {
    char field_sep; /* between pairs; 0 = ' ' (a space separator also accepts tabs) */
    char kv_sep;    /* between key and value; 0 = '=' */
} parse_kv_options;

/*
 * key/value pairs: `a=1 b="two words" c`. Runs of field separators and blanks between
 * pairs are skipped, and so are blanks around kv_sep when the field separator is not a
 * space. A key without a value separator is emitted with the value "true"; the value runs
 * to the next field separator (it may hold kv_sep: `a=b=c` gives a = b=c). Keys and values
 * may be quoted with '"' or '\'': inside, a backslash escapes the quote or a backslash,
 * and other bytes (other backslashes included) are kept as they are. An empty key, a NUL
 * byte in a key, an unterminated quote, or bytes after a closing quote other than a
 * separator is an error. `opt` may be NULL. Returns as parse_json does.
 */
int parse_kv(const uint8_t *in, size_t n, const parse_kv_options *opt, parse_scratch *sc,
             parse_emit_fn emit, void *arg, parse_error *err);

/* Columns and separator of parse_csv. */
typedef struct parse_csv_options {
    char sep;                   /* field separator; 0 = ','; not '"', '\n' or '\r' */
    const char *const *columns; /* names of the first n_columns fields, NUL-terminated */
    size_t n_columns;
} parse_csv_options;

/*
 * One CSV record (RFC 4180): fields separated by `sep`; a field may be quoted with '"',
 * and then holds separators, newlines and doubled quotes ("" is one "). A single trailing
 * "\n" or "\r\n" is ignored. Field i (0-based) is named columns[i]; fields beyond the
 * named columns are named "_N", N their 1-based position (`_4`), so no data is dropped;
 * named columns without a field are not emitted. Errors: a '"' inside an unquoted field,
 * bytes between a closing quote and the next separator, an unterminated quote, a newline
 * outside quotes (more than one record), a separator that is a quote or a line end.
 * Returns as parse_json does.
 */
int parse_csv(const uint8_t *in, size_t n, const parse_csv_options *opt, parse_scratch *sc,
              parse_emit_fn emit, void *arg, parse_error *err);

/* Frees the scratch's memory and zeroes it. Accepts NULL. */
void parse_scratch_free(parse_scratch *sc);

#endif
