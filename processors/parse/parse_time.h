/*
 * parse_time.h: timestamps of the `parse` processor (`timestamp: {field, format}`): text to
 * milliseconds since the Unix epoch. Formats: "rfc3339", "unix" (seconds, with an
 * optional fraction), "unix_ms", "unix_us", "unix_ns", or a strptime(3) format with two
 * additions: `%f` reads a fraction of a second (1 to 9 digits) and `%z` also accepts "Z"
 * and "+hh:mm". A time without a zone is UTC; a format without a year (syslog's
 * "%b %d %H:%M:%S") takes the year that puts the time closest before `now` (at most one
 * day ahead of it, for clocks a little apart).
 *
 * Compiled once (parse_time_compile, from check or init), then used on the processor
 * thread without allocation. Threads: any; a compiled format is read-only.
 */
#ifndef SPOOL_PARSE_TIME_H
#define SPOOL_PARSE_TIME_H

#include <stddef.h>
#include <stdint.h>

typedef enum parse_time_kind {
    PARSE_TIME_RFC3339,
    PARSE_TIME_UNIX,    /* seconds */
    PARSE_TIME_UNIX_MS, /* milliseconds */
    PARSE_TIME_UNIX_US, /* microseconds */
    PARSE_TIME_UNIX_NS, /* nanoseconds */
    PARSE_TIME_STRPTIME,
} parse_time_kind;

#define PARSE_TIME_FMT_MAX 128 /* bytes of a strptime format, NUL included */
#define PARSE_TIME_TEXT_MAX 96 /* longest timestamp text a strptime format reads */

typedef struct parse_time_format {
    parse_time_kind kind;
    char before[PARSE_TIME_FMT_MAX]; /* strptime: the format up to %f (all of it if none) */
    char after[PARSE_TIME_FMT_MAX];  /* strptime: the format after %f ("" if none) */
    int has_frac;                    /* strptime: the format has %f */
    int fast;                        /* strptime: every conversion is read by hand */
    char whole[PARSE_TIME_FMT_MAX];  /* strptime: the format as given */
} parse_time_format;

/*
 * Compiles `text`. 0, or -EINVAL with a one-line reason in why (e.g. "unknown conversion
 * '%Q' at position 4 of the format") and in *column the 1-based position in text it is
 * about (0 = the whole format; column may be NULL). Pure.
 */
int parse_time_compile(const char *text, parse_time_format *out, char *why, size_t why_cap,
                       size_t *column);

/*
 * Reads the time in s (len bytes, need not be NUL-terminated) into *ms. `now_ms` is used
 * only by formats without a year. 0, or -EINVAL with a one-line reason in why. No
 * allocation.
 */
int parse_time(const parse_time_format *f, const uint8_t *s, size_t len, int64_t now_ms,
               int64_t *ms, char *why, size_t why_cap);

#endif
