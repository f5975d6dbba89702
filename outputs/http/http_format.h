/*
 * http_format.h: the JSON shapes the http output sends and the http input
 * accepts, as pure functions (no I/O, no core state) so they are unit-tested
 * on their own (tests/unit/test_http_format.c).
 *
 * One record is one JSON object (docs/http.md is the user-facing contract):
 *   {"key":"k"|null,"value":"v"|null,"headers":{"name":"v"|null,...},
 *    "timestamp":1700000000000,"topic":"t","partition":0,"offset":42}
 * The output writes all seven fields; the input reads key, value, headers
 * and timestamp, and ignores any other field. A JSON string alone is also a
 * record (its value). `ndjson` is one record per line ("\n"-terminated),
 * `json` is one array of records.
 *
 * Limits (documented): JSON carries text. Keys, values and header values
 * that are not valid UTF-8 are escaped byte by byte as \u00XX (Latin-1, see
 * spool_json_escape), so they do not come back byte-identical through the
 * input; the native `spool` format is byte-exact.
 */
#ifndef SPOOL_HTTP_FORMAT_H
#define SPOOL_HTTP_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "spool/spool.h"

enum httpfmt_kind {
    HTTPFMT_NDJSON = 0, /* one object per line */
    HTTPFMT_JSON = 1,   /* one array of objects */
};

/*
 * Appends one record as a JSON object (no trailing newline) to out.
 * `topic` may be NULL (the field is left out). Returns 0 or -ENOMEM.
 * Any thread; out is the caller's.
 */
int httpfmt_encode_record(spool_buf *out, const spool_record *r, const char *topic);

/*
 * Appends recs[0..n) to out as `kind` (HTTPFMT_NDJSON or HTTPFMT_JSON).
 * Returns 0 or -ENOMEM.
 */
int httpfmt_encode(spool_buf *out, int kind, const spool_record *recs, size_t n, const char *topic);

/* Called once per parsed record; the view is valid only during the call.
 * Return 0 to go on, a negative errno to stop the parse with that value. */
typedef int (*httpfmt_record_fn)(void *arg, const spool_record *r);

/* Reusable parser state (scratch space); zero it before first use. */
typedef struct httpfmt_parser {
    spool_buf scratch;     /* decoded strings of the current record */
    spool_header *headers; /* header views of the current record */
    size_t header_cap;     /* entries allocated */
    size_t *hoff;          /* offsets of header names/values into scratch */
    size_t hoff_cap;       /* entries allocated (4 per header) */
} httpfmt_parser;

void httpfmt_parser_free(httpfmt_parser *p);

/*
 * Parses a body of records: if its first non-blank byte is '[' a JSON array
 * of records, otherwise ndjson (blank lines skipped, each other line one
 * record: an object or a string). Calls fn for each record in order.
 * Returns the number of records, -EBADMSG with a one-line reason in err
 * ("line 3: expected ':' after a key") for a malformed body, or the
 * negative value fn returned. Records before an error were already given
 * to fn: callers that need all-or-nothing collect first.
 */
long httpfmt_parse(httpfmt_parser *p, const uint8_t *body, size_t len, httpfmt_record_fn fn,
                   void *arg, char *err, size_t errcap);

#endif /* SPOOL_HTTP_FORMAT_H */
