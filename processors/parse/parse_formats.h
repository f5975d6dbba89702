/*
 * parse_formats.h: the line formats of the `parse` processor that are not generic text
 * syntaxes: syslog (RFC 3164 and RFC 5424) and web server access logs (Apache common and
 * combined, nginx combined). Hand-written single-pass scanners with the same contract as
 * processors/parse_text.h: pure functions over a byte buffer that call an emit callback
 * once per field, in input order, and fail with a negative errno and a parse_error
 * naming the byte offset where they stopped.
 *
 * Threads: any; one scratch per thread.
 */
#ifndef SPOOL_PARSE_FORMATS_H
#define SPOOL_PARSE_FORMATS_H

#include "../parse_text.h"

/*
 * Syslog. With a leading <PRI> (0-191) the fields `facility` and `severity` are emitted
 * as names ("local0", "err"). Then, when a version number follows the PRI, RFC 5424:
 * `time`, `host`, `app`, `procid`, `msgid` (each left out when it is the nil value "-"),
 * structured data as `sd` (its raw text) and one field per parameter,
 * `sd.<SD-ID>.<PARAM>` (value unescaped: \" \\ \]), and `message` (a leading UTF-8 BOM
 * removed). Otherwise RFC 3164 as syslog daemons write it, with or without <PRI>:
 * `time` ("Mmm dd hh:mm:ss", or an RFC 3339 timestamp as rsyslog's high precision
 * format writes it), `host` (left out when the token after the time is already the tag),
 * `app` and `procid` from the tag `app[procid]:` and `message` (the rest). Errors: a bad
 * <PRI>, a missing timestamp, a malformed header or structured data.
 * Returns 0, -EINVAL with *err filled, -ENOMEM, or the callback's non-zero return.
 */
int parse_syslog(const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit, void *arg,
                 parse_error *err);

typedef enum parse_access_kind {
    PARSE_ACCESS_COMMON,   /* Apache %h %l %u %t "%r" %>s %b */
    PARSE_ACCESS_COMBINED, /* common + "%{Referer}i" "%{User-agent}i" */
    PARSE_ACCESS_NGINX,    /* nginx `combined`: $remote_addr - $remote_user [...] ... */
} parse_access_kind;

/*
 * An access log line: `client`, `ident` (Apache only), `user`, `time` (the text between
 * the brackets), `request` (as written, escapes kept), and when the request has the form
 * "METHOD TARGET [PROTOCOL]" also `method`, `path` and `protocol`; `status`, `size`,
 * and for the combined formats `referer` and `agent`. Values are the text as logged
 * ("-" included). Trailing blanks and a line end are allowed; other trailing bytes are an
 * error. Returns 0, -EINVAL with *err filled, or the callback's non-zero return.
 */
int parse_access(const uint8_t *in, size_t n, parse_access_kind kind, parse_emit_fn emit, void *arg,
                 parse_error *err);

#endif
