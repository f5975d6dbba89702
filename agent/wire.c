/*
 * wire.c: the agent <-> aggregator wire format (spool/wire.h,
 * docs/protocol.md): JSON bodies (ndjson or one array, records as
 * spool_json_append_record writes them) with a small strict JSON reader
 * that turns the same shape back into records, and RecordBatch v2 bodies
 * through the core's codec (agent/codec) behind a stable public API.
 *
 * Invariants: the encoder emits only valid JSON (strings through
 * spool_json_escape); the reader never reads past `len`, bounds nesting of
 * skipped values (WIRE_MAX_DEPTH) and reports the first error with its
 * line number. It does not allocate per record once its scratch space has
 * grown to the largest record seen.
 *
 * What it does not do: keep numbers other than `timestamp`, or accept
 * anything that is not RFC 8259 JSON (no comments, no trailing commas).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "spool/wire.h"

#define WIRE_MAX_DEPTH 64

/* ---------------------------------------------------------------------- */
/* Encoding.                                                              */
/* ---------------------------------------------------------------------- */

#define PUT_LIT(out, lit) spool_buf_append((out), (lit), sizeof(lit) - 1)

int spool_wire_json_encode(spool_buf *out, int kind, const spool_record *recs, size_t n,
                           const char *topic)
{
    int rc = 0;
    if (kind == SPOOL_WIRE_JSON) {
        rc = PUT_LIT(out, "[");
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (kind == SPOOL_WIRE_JSON && i > 0) {
            rc = PUT_LIT(out, ",");
        }
        if (kind == SPOOL_WIRE_FIELDS) {
            rc = rc ? rc : spool_json_append_fields(out, &recs[i], SPOOL_JSON_TYPED);
        } else {
            rc = rc ? rc : spool_json_append_record(out, &recs[i], topic);
        }
        if (kind != SPOOL_WIRE_JSON) {
            rc = rc ? rc : PUT_LIT(out, "\n");
        }
    }
    if (kind == SPOOL_WIRE_JSON) {
        rc = rc ? rc : PUT_LIT(out, "]");
    }
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Reading.                                                               */
/* ---------------------------------------------------------------------- */

typedef struct jrd {
    const uint8_t *s; /* the whole body */
    size_t end;       /* bytes of s this reader may look at */
    size_t pos;       /* next byte */
    char *err;        /* one-line reason, errcap bytes */
    size_t errcap;
    int failed; /* 1 once err is set */
} jrd;

/* One record's fields as offsets into the parser's scratch buffer. */
typedef struct jrec {
    long key_off, key_len; /* key_len -1 = null/absent */
    long val_off, val_len; /* val_len -1 = null/absent */
    size_t nheaders;
    int64_t timestamp;
} jrec;

static int jfail(jrd *r, const char *what)
{
    if (!r->failed) {
        long line = 1;
        for (size_t i = 0; i < r->pos && i < r->end; i++) {
            if (r->s[i] == '\n') {
                line++;
            }
        }
        snprintf(r->err, r->errcap, "line %ld: %s", line, what);
        r->failed = 1;
    }
    return -EBADMSG;
}

static void jws(jrd *r)
{
    while (r->pos < r->end) {
        uint8_t c = r->s[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            break;
        }
        r->pos++;
    }
}

static int jpeek(jrd *r)
{
    return r->pos < r->end ? r->s[r->pos] : -1;
}

static int jexpect(jrd *r, char c, const char *what)
{
    jws(r);
    if (jpeek(r) != (uint8_t)c) {
        return jfail(r, what);
    }
    r->pos++;
    return 0;
}

static int jliteral(jrd *r, const char *lit)
{
    size_t n = strlen(lit);
    if (r->end - r->pos < n || memcmp(r->s + r->pos, lit, n) != 0) {
        return jfail(r, "invalid literal");
    }
    r->pos += n;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int jhex4(jrd *r, uint32_t *out)
{
    if (r->end - r->pos < 4) {
        return jfail(r, "truncated \\u escape");
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->s[r->pos + i]);
        if (h < 0) {
            return jfail(r, "invalid \\u escape");
        }
        v = v << 4 | (uint32_t)h;
    }
    r->pos += 4;
    *out = v;
    return 0;
}

static int put_utf8(spool_buf *b, uint32_t cp)
{
    uint8_t t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (uint8_t)(0xc0 | cp >> 6);
        t[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (uint8_t)(0xe0 | cp >> 12);
        t[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        t[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        t[0] = (uint8_t)(0xf0 | cp >> 18);
        t[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        t[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        t[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return spool_buf_append(b, t, n);
}

/* Reads a string (at its opening quote) into scratch; off and len locate it.
 * With scratch NULL the string is only skipped. */
static int jstring(jrd *r, spool_buf *scratch, long *off, long *len)
{
    if (jpeek(r) != '"') {
        return jfail(r, "expected a string");
    }
    r->pos++;
    size_t start = scratch ? scratch->len : 0;
    for (;;) {
        /* Copy the run of plain bytes in one go. */
        size_t run = r->pos;
        while (run < r->end && r->s[run] != '"' && r->s[run] != '\\' && r->s[run] >= 0x20) {
            run++;
        }
        if (scratch && run > r->pos && spool_buf_append(scratch, r->s + r->pos, run - r->pos)) {
            return -ENOMEM;
        }
        r->pos = run;
        if (r->pos >= r->end) {
            return jfail(r, "unterminated string");
        }
        uint8_t c = r->s[r->pos++];
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            r->pos--;
            return jfail(r, "control character in a string");
        }
        /* A backslash escape. */
        if (r->pos >= r->end) {
            return jfail(r, "unterminated string");
        }
        uint8_t e = r->s[r->pos++];
        const char *simple = NULL;
        switch (e) {
        case '"':
            simple = "\"";
            break;
        case '\\':
            simple = "\\";
            break;
        case '/':
            simple = "/";
            break;
        case 'b':
            simple = "\b";
            break;
        case 'f':
            simple = "\f";
            break;
        case 'n':
            simple = "\n";
            break;
        case 'r':
            simple = "\r";
            break;
        case 't':
            simple = "\t";
            break;
        case 'u':
            break;
        default:
            r->pos--;
            return jfail(r, "invalid escape in a string");
        }
        if (simple) {
            if (scratch && spool_buf_append(scratch, simple, 1)) {
                return -ENOMEM;
            }
            continue;
        }
        uint32_t cp;
        int rc = jhex4(r, &cp);
        if (rc) {
            return rc;
        }
        if (cp >= 0xd800 && cp < 0xdc00) {
            uint32_t lo = 0;
            if (r->end - r->pos >= 6 && r->s[r->pos] == '\\' && r->s[r->pos + 1] == 'u') {
                r->pos += 2;
                if ((rc = jhex4(r, &lo)) != 0) {
                    return rc;
                }
            }
            if (lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else {
                cp = 0xfffd; /* a lone high surrogate */
                if (lo) {
                    if (scratch && put_utf8(scratch, cp)) {
                        return -ENOMEM;
                    }
                    cp = (lo >= 0xd800 && lo < 0xe000) ? 0xfffd : lo;
                }
            }
        } else if (cp >= 0xdc00 && cp < 0xe000) {
            cp = 0xfffd; /* a lone low surrogate */
        }
        if (scratch && put_utf8(scratch, cp)) {
            return -ENOMEM;
        }
    }
    if (scratch) {
        *off = (long)start;
        *len = (long)(scratch->len - start);
    }
    return 0;
}

/* Reads a number; *out gets it truncated to an integer (ms). */
static int jnumber(jrd *r, int64_t *out)
{
    size_t start = r->pos;
    if (jpeek(r) == '-') {
        r->pos++;
    }
    size_t digits = r->pos;
    while (r->pos < r->end && r->s[r->pos] >= '0' && r->s[r->pos] <= '9') {
        r->pos++;
    }
    if (r->pos == digits) {
        return jfail(r, "invalid number");
    }
    int is_int = 1;
    if (jpeek(r) == '.') {
        is_int = 0;
        r->pos++;
        size_t f = r->pos;
        while (r->pos < r->end && r->s[r->pos] >= '0' && r->s[r->pos] <= '9') {
            r->pos++;
        }
        if (r->pos == f) {
            return jfail(r, "invalid number");
        }
    }
    if (jpeek(r) == 'e' || jpeek(r) == 'E') {
        is_int = 0;
        r->pos++;
        if (jpeek(r) == '+' || jpeek(r) == '-') {
            r->pos++;
        }
        size_t x = r->pos;
        while (r->pos < r->end && r->s[r->pos] >= '0' && r->s[r->pos] <= '9') {
            r->pos++;
        }
        if (r->pos == x) {
            return jfail(r, "invalid number");
        }
    }
    char tmp[64];
    size_t n = r->pos - start;
    if (n >= sizeof(tmp)) {
        return jfail(r, "number too long");
    }
    memcpy(tmp, r->s + start, n);
    tmp[n] = '\0';
    if (out) {
        if (is_int) {
            errno = 0;
            long long v = strtoll(tmp, NULL, 10);
            if (errno == ERANGE) {
                return jfail(r, "number out of range");
            }
            *out = (int64_t)v;
        } else {
            double d = strtod(tmp, NULL);
            if (!(d > -9.2e18 && d < 9.2e18)) {
                return jfail(r, "number out of range");
            }
            *out = (int64_t)d;
        }
    }
    return 0;
}

/* Skips any JSON value. */
static int jskip(jrd *r, int depth)
{
    if (depth > WIRE_MAX_DEPTH) {
        return jfail(r, "nesting too deep");
    }
    jws(r);
    int c = jpeek(r);
    int rc;
    switch (c) {
    case '"':
        return jstring(r, NULL, NULL, NULL);
    case 't':
        return jliteral(r, "true");
    case 'f':
        return jliteral(r, "false");
    case 'n':
        return jliteral(r, "null");
    case '[':
    case '{': {
        char close = c == '[' ? ']' : '}';
        r->pos++;
        jws(r);
        if (jpeek(r) == close) {
            r->pos++;
            return 0;
        }
        for (;;) {
            jws(r);
            if (c == '{') {
                if ((rc = jstring(r, NULL, NULL, NULL)) || (rc = jexpect(r, ':', "expected ':'"))) {
                    return rc;
                }
            }
            if ((rc = jskip(r, depth + 1)) != 0) {
                return rc;
            }
            jws(r);
            if (jpeek(r) == ',') {
                r->pos++;
                continue;
            }
            return jexpect(r, close, c == '[' ? "expected ',' or ']'" : "expected ',' or '}'");
        }
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            return jnumber(r, NULL);
        }
        return jfail(r, c < 0 ? "unexpected end of input" : "unexpected character");
    }
}

/* A string or null into scratch; *len -1 for null. */
static int jstring_or_null(jrd *r, spool_buf *scratch, long *off, long *len)
{
    jws(r);
    if (jpeek(r) == 'n') {
        *off = 0;
        *len = -1;
        return jliteral(r, "null");
    }
    return jstring(r, scratch, off, len);
}

static int hoff_push(spool_wire_parser *p, size_t idx, long a, long b, long c, long d)
{
    if ((idx + 1) * 4 > p->hoff_cap) {
        size_t cap = p->hoff_cap ? p->hoff_cap * 2 : 64;
        while (cap < (idx + 1) * 4) {
            cap *= 2;
        }
        size_t *n = realloc(p->hoff, cap * sizeof(*n));
        if (!n) {
            return -ENOMEM;
        }
        p->hoff = n;
        p->hoff_cap = cap;
    }
    p->hoff[idx * 4] = (size_t)a;
    p->hoff[idx * 4 + 1] = (size_t)b;
    p->hoff[idx * 4 + 2] = (size_t)c;
    p->hoff[idx * 4 + 3] = (size_t)d; /* (size_t)-1 for a null value */
    return 0;
}

static int jheaders(jrd *r, spool_wire_parser *p, jrec *rec)
{
    int rc;
    jws(r);
    if (jpeek(r) == 'n') {
        return jliteral(r, "null");
    }
    if ((rc = jexpect(r, '{', "\"headers\" must be an object")) != 0) {
        return rc;
    }
    jws(r);
    if (jpeek(r) == '}') {
        r->pos++;
        return 0;
    }
    for (;;) {
        long no, nl, vo, vl;
        jws(r);
        if ((rc = jstring(r, &p->scratch, &no, &nl)) != 0) {
            return rc;
        }
        if ((rc = jexpect(r, ':', "expected ':' after a header name")) != 0) {
            return rc;
        }
        jws(r);
        int c = jpeek(r);
        if (c != '"' && c != 'n') {
            return jfail(r, "a header value must be a string or null");
        }
        if ((rc = jstring_or_null(r, &p->scratch, &vo, &vl)) != 0) {
            return rc;
        }
        if ((rc = hoff_push(p, rec->nheaders, no, nl, vo, vl)) != 0) {
            return rc;
        }
        rec->nheaders++;
        jws(r);
        if (jpeek(r) == ',') {
            r->pos++;
            continue;
        }
        return jexpect(r, '}', "expected ',' or '}' in \"headers\"");
    }
}

static int jfield_is(const spool_buf *b, long off, long len, const char *name)
{
    size_t n = strlen(name);
    return (size_t)len == n && memcmp(b->data + off, name, n) == 0;
}

/* Reads one record (an object or a string) at r->pos and calls fn. */
static int jrecord(jrd *r, spool_wire_parser *p, spool_wire_record_fn fn, void *arg)
{
    jrec rec = {.key_len = -1, .val_len = -1};
    int rc;
    p->scratch.len = 0;
    jws(r);
    int c = jpeek(r);
    if (c == '"') {
        if ((rc = jstring(r, &p->scratch, &rec.val_off, &rec.val_len)) != 0) {
            return rc;
        }
    } else if (c == '{') {
        r->pos++;
        jws(r);
        if (jpeek(r) == '}') {
            r->pos++;
        } else {
            for (;;) {
                long fo, fl;
                jws(r);
                size_t mark = p->scratch.len;
                if ((rc = jstring(r, &p->scratch, &fo, &fl)) != 0) {
                    return rc;
                }
                if ((rc = jexpect(r, ':', "expected ':' after a key")) != 0) {
                    return rc;
                }
                jws(r);
                int vc = jpeek(r);
                if (jfield_is(&p->scratch, fo, fl, "key")) {
                    p->scratch.len = mark;
                    if (vc != '"' && vc != 'n') {
                        return jfail(r, "\"key\" must be a string or null");
                    }
                    rc = jstring_or_null(r, &p->scratch, &rec.key_off, &rec.key_len);
                } else if (jfield_is(&p->scratch, fo, fl, "value")) {
                    p->scratch.len = mark;
                    if (vc != '"' && vc != 'n') {
                        return jfail(r, "\"value\" must be a string or null");
                    }
                    rc = jstring_or_null(r, &p->scratch, &rec.val_off, &rec.val_len);
                } else if (jfield_is(&p->scratch, fo, fl, "headers")) {
                    p->scratch.len = mark;
                    rec.nheaders = 0;
                    rc = jheaders(r, p, &rec);
                } else if (jfield_is(&p->scratch, fo, fl, "timestamp")) {
                    p->scratch.len = mark;
                    if (vc == 'n') {
                        rc = jliteral(r, "null");
                        rec.timestamp = 0;
                    } else if (vc == '-' || (vc >= '0' && vc <= '9')) {
                        rc = jnumber(r, &rec.timestamp);
                    } else {
                        return jfail(r, "\"timestamp\" must be a number (ms since the epoch)");
                    }
                } else {
                    p->scratch.len = mark;
                    rc = jskip(r, 1);
                }
                if (rc) {
                    return rc;
                }
                jws(r);
                if (jpeek(r) == ',') {
                    r->pos++;
                    continue;
                }
                if ((rc = jexpect(r, '}', "expected ',' or '}'")) != 0) {
                    return rc;
                }
                break;
            }
        }
    } else {
        return jfail(r, c < 0 ? "unexpected end of input"
                              : "a record must be a JSON object or a JSON string");
    }
    if (rec.timestamp < 0) {
        return jfail(r, "\"timestamp\" must not be negative");
    }

    /* Every string is in scratch now: resolve offsets into views. */
    if (rec.nheaders > p->header_cap) {
        size_t cap = p->header_cap ? p->header_cap : 16;
        while (cap < rec.nheaders) {
            cap *= 2;
        }
        spool_header *h = realloc(p->headers, cap * sizeof(*h));
        if (!h) {
            return -ENOMEM;
        }
        p->headers = h;
        p->header_cap = cap;
    }
    const uint8_t *base = p->scratch.data ? p->scratch.data : (const uint8_t *)"";
    for (size_t i = 0; i < rec.nheaders; i++) {
        size_t *o = &p->hoff[i * 4];
        p->headers[i].key = (const char *)base + o[0];
        p->headers[i].key_len = (uint32_t)o[1];
        if (o[3] == (size_t)-1) {
            p->headers[i].value = NULL;
            p->headers[i].value_len = -1;
        } else {
            p->headers[i].value = base + o[2];
            p->headers[i].value_len = (int32_t)o[3];
        }
    }
    spool_record sr = {
        .key = rec.key_len >= 0 ? base + rec.key_off : NULL,
        .key_len = (int32_t)rec.key_len,
        .value = rec.val_len >= 0 ? base + rec.val_off : NULL,
        .value_len = (int32_t)rec.val_len,
        .headers = p->headers,
        .header_count = (uint32_t)rec.nheaders,
        .timestamp = rec.timestamp,
        .partition = -1,
        .offset = -1,
    };
    return fn(arg, &sr);
}

long spool_wire_json_parse(spool_wire_parser *p, const uint8_t *body, size_t len,
                           spool_wire_record_fn fn, void *arg, char *err, size_t errcap)
{
    char dummy[8];
    if (!err || errcap == 0) {
        err = dummy;
        errcap = sizeof(dummy);
    }
    err[0] = '\0';
    jrd r = {.s = body, .end = len, .pos = 0, .err = err, .errcap = errcap};
    long count = 0;
    int rc;
    jws(&r);
    if (jpeek(&r) == '[') {
        r.pos++;
        jws(&r);
        if (jpeek(&r) == ']') {
            r.pos++;
        } else {
            for (;;) {
                if ((rc = jrecord(&r, p, fn, arg)) != 0) {
                    return rc;
                }
                count++;
                jws(&r);
                if (jpeek(&r) == ',') {
                    r.pos++;
                    continue;
                }
                if ((rc = jexpect(&r, ']', "expected ',' or ']'")) != 0) {
                    return rc;
                }
                break;
            }
        }
        jws(&r);
        if (r.pos != len) {
            return jfail(&r, "unexpected data after the array");
        }
        return count;
    }
    /* ndjson: one record per line; JSON strings cannot hold a raw newline,
     * so splitting on '\n' first is exact. */
    size_t line_start = 0;
    while (line_start < len) {
        const uint8_t *nl = memchr(body + line_start, '\n', len - line_start);
        size_t line_end = nl ? (size_t)(nl - body) : len;
        r.pos = line_start;
        r.end = line_end;
        jws(&r);
        if (r.pos < r.end) {
            if ((rc = jrecord(&r, p, fn, arg)) != 0) {
                return rc;
            }
            count++;
            jws(&r);
            if (r.pos != r.end) {
                return jfail(&r, "unexpected data after the record");
            }
        }
        line_start = line_end + 1;
    }
    return count;
}

void spool_wire_parser_free(spool_wire_parser *p)
{
    if (!p) {
        return;
    }
    spool_buf_free(&p->scratch);
    free(p->headers);
    free(p->hoff);
    memset(p, 0, sizeof(*p));
}

/* ---------------------------------------------------------------------- */
/* RecordBatch v2 bodies.                                                 */
/* ---------------------------------------------------------------------- */

struct spool_wire_reader {
    spool_rb_decoded d;
};

int spool_wire_batch_encode(spool_buf *out, int64_t base_offset, const spool_record *recs, size_t n,
                            int64_t now_ms, int compression, int level)
{
    return spool_rb_encode(out, base_offset, recs, n, now_ms, compression, level);
}

long spool_wire_batch_size(const uint8_t *buf, size_t len, int verify_crc, int *compression)
{
    spool_rb_info info;
    long n = spool_rb_parse_header(buf, len, verify_crc, &info);
    if (n > 0 && compression) {
        *compression = info.attributes & 7;
    }
    return n;
}

spool_wire_reader *spool_wire_reader_create(void)
{
    return calloc(1, sizeof(spool_wire_reader));
}

void spool_wire_reader_destroy(spool_wire_reader *rd)
{
    if (rd) {
        spool_rb_decoded_free(&rd->d);
        free(rd);
    }
}

void spool_wire_reader_reset(spool_wire_reader *rd, size_t keep_bytes)
{
    if (rd->d.scratch.cap > keep_bytes) {
        spool_rb_decoded_free(&rd->d);
    }
    spool_rb_decoded_reset(&rd->d);
}

int spool_wire_reader_read(spool_wire_reader *rd, const uint8_t *buf, size_t len, int32_t partition,
                           int64_t min_offset)
{
    return spool_rb_decode(buf, len, partition, min_offset, &rd->d);
}

const spool_record *spool_wire_reader_records(const spool_wire_reader *rd, size_t *count)
{
    *count = rd->d.count;
    return rd->d.records;
}
