/*
 * parse_text.c: the json, logfmt, kv and csv parsers of the `parse` processor
 * (parse_text.h). Hand-written single-pass scanners: this is the hot path of `parse`.
 *
 * Invariants:
 * - Every read is bounds-checked against the input length; the input need not be
 *   NUL-terminated.
 * - A field's name and value point into the input when no byte of them changes, else into
 *   the scratch, addressed by offset until the emit call (the scratch may move when it
 *   grows). Scratch use during a parse is bounded by the input length plus the JSON
 *   nesting (a dotted path, a key and a value are disjoint parts of the input), and each
 *   parse reserves that up front: after the first lines of the largest size, nothing is
 *   allocated.
 * - JSON recursion is bounded by PARSE_JSON_MAX_DEPTH.
 * - An error is reported with the offset of the byte that made it one (for an
 *   unterminated string or quote: the opening quote), through one helper, bad_input().
 *
 * Not done: UTF-8 validation (bytes are passed through), JSON numbers are checked against
 * the grammar but not converted, csv records spanning several input lines (the caller
 * frames records; a quoted newline inside one buffer is fine).
 */
#include "parse_text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#ifndef PARSE_REALLOC
#define PARSE_REALLOC(p, n) realloc((p), (n))
#define PARSE_FREE(p) free(p)
#endif

#define SCRATCH_MIN 256 /* bytes of the first scratch allocation */

/* One parse's state, shared by the four formats. */
typedef struct pctx {
    const uint8_t *in;
    size_t n;
    size_t pos; /* next byte to read */
    parse_scratch *sc;
    parse_emit_fn emit;
    void *arg;
    parse_error *err;
} pctx;

/* Where a name or value lives until it is emitted. */
typedef struct span {
    int in_scratch; /* 1: off is in sc->data; 0: off is in the input */
    size_t off;
    size_t len;
    int escaped; /* json_string: 1 when the string held an escape */
} span;

static const uint8_t *span_ptr(const pctx *c, const span *s)
{
    return s->in_scratch ? c->sc->data + s->off : c->in + s->off;
}

void parse_scratch_free(parse_scratch *sc)
{
    if (!sc) {
        return;
    }
    if (sc->data) {
        PARSE_FREE(sc->data);
    }
    sc->data = NULL;
    sc->len = 0;
    sc->cap = 0;
}

/* Makes room for `extra` more bytes after sc->len: 0 or -ENOMEM. */
static int sc_reserve(parse_scratch *sc, size_t extra)
{
    if (extra <= sc->cap - sc->len) {
        return 0;
    }
    if (extra > SIZE_MAX / 2 - sc->len) {
        return -ENOMEM;
    }
    size_t need = sc->len + extra;
    size_t cap = sc->cap ? sc->cap : SCRATCH_MIN;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t *d = PARSE_REALLOC(sc->data, cap);
    if (!d) {
        return -ENOMEM;
    }
    sc->data = d;
    sc->cap = cap;
    return 0;
}

static int sc_append(parse_scratch *sc, const void *p, size_t len)
{
    int rc = sc_reserve(sc, len);
    if (rc) {
        return rc;
    }
    if (len) {
        memcpy(sc->data + sc->len, p, len);
        sc->len += len;
    }
    return 0;
}

/* Starts a parse: resets the scratch and reserves what the parse can use. */
static int begin(pctx *c, const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit,
                 void *arg, parse_error *err)
{
    c->in = in;
    c->n = n;
    c->pos = 0;
    c->sc = sc;
    c->emit = emit;
    c->arg = arg;
    c->err = err;
    if (err) {
        err->offset = 0;
        err->message[0] = '\0';
    }
    sc->len = 0;
    if (n > SIZE_MAX / 2 - 2 * PARSE_JSON_MAX_DEPTH) {
        return -ENOMEM;
    }
    return sc_reserve(sc, n + 2 * PARSE_JSON_MAX_DEPTH);
}

static int bad_input(pctx *c, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad_input(pctx *c, size_t offset, const char *fmt, ...)
{
    if (c->err) {
        va_list ap;
        va_start(ap, fmt);
        c->err->offset = offset;
        vsnprintf(c->err->message, sizeof(c->err->message), fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* The byte at `at` for a message: 'x', byte 0x07, or the end of the line. */
static const char *describe(const pctx *c, size_t at, char *buf, size_t cap)
{
    if (at >= c->n) {
        return "the end of the line";
    }
    uint8_t b = c->in[at];
    if (b >= 0x20 && b < 0x7f) {
        snprintf(buf, cap, "'%c'", b);
    } else {
        snprintf(buf, cap, "byte 0x%02x", b);
    }
    return buf;
}

static inline int emit_span(pctx *c, const span *name, const span *val)
{
    return c->emit(c->arg, (const char *)span_ptr(c, name), name->len, span_ptr(c, val), val->len);
}

static int emit_true(pctx *c, const span *name)
{
    return c->emit(c->arg, (const char *)span_ptr(c, name), name->len, (const uint8_t *)"true", 4);
}

/* ---- JSON strings (also logfmt's quoted values) ---- */

/* 1 for the bytes that end a run of plain string bytes: '"', '\\' and controls. */
static const uint8_t str_stop[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1,
    [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1,
    [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, ['"'] = 1,  ['\\'] = 1,
};

/* The index of the first byte at or after i that is '"', '\\' or a control, or n. */
static inline size_t plain_run(const uint8_t *in, size_t i, size_t n)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
    const __m128i ctl = _mm_set1_epi8(0x1f);
    while (n - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                         _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask) {
            return i + (size_t)__builtin_ctz(mask);
        }
        i += 16;
    }
#endif
    while (n - i >= 4) {
        if (str_stop[in[i]]) {
            return i;
        }
        if (str_stop[in[i + 1]]) {
            return i + 1;
        }
        if (str_stop[in[i + 2]]) {
            return i + 2;
        }
        if (str_stop[in[i + 3]]) {
            return i + 3;
        }
        i += 4;
    }
    while (i < n && !str_stop[in[i]]) {
        i++;
    }
    return i;
}

enum { SCAN_VALIDATE, SCAN_AUTO, SCAN_SCRATCH };

static int hex4(const uint8_t *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t b = p[i];
        v <<= 4;
        if (b >= '0' && b <= '9') {
            v |= (uint32_t)(b - '0');
        } else if ((b | 0x20) >= 'a' && (b | 0x20) <= 'f') {
            v |= (uint32_t)((b | 0x20) - 'a' + 10);
        } else {
            return 0;
        }
    }
    *out = v;
    return 1;
}

static size_t utf8_put(uint8_t *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (uint8_t)(0xc0 | (cp >> 6));
        d[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (uint8_t)(0xe0 | (cp >> 12));
        d[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (uint8_t)(0xf0 | (cp >> 18));
    d[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Decodes the \u escape at `i` (the backslash) into *cp, a pair of surrogates included.
 * Returns the bytes consumed (6 or 12), or an error.
 */
static int json_unicode(pctx *c, size_t i, uint32_t *cp, size_t *used)
{
    const uint8_t *in = c->in;
    uint32_t hi;
    if (c->n - i < 6 || !hex4(in + i + 2, &hi)) {
        return bad_input(c, i, "invalid \\u escape: expected 4 hex digits");
    }
    if (hi >= 0xdc00 && hi <= 0xdfff) {
        return bad_input(c, i, "unpaired surrogate \\u%04x (a low surrogate without a high one)",
                         (unsigned)hi);
    }
    if (hi < 0xd800 || hi > 0xdbff) {
        *cp = hi;
        *used = 6;
        return 0;
    }
    uint32_t lo;
    if (c->n - i < 12 || in[i + 6] != '\\' || in[i + 7] != 'u' || !hex4(in + i + 8, &lo) ||
        lo < 0xdc00 || lo > 0xdfff) {
        return bad_input(c, i,
                         "unpaired surrogate \\u%04x (a high surrogate must be followed by a "
                         "\\u escape of a low one)",
                         (unsigned)hi);
    }
    *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
    *used = 12;
    return 0;
}

/*
 * Reads the JSON string whose opening quote is at c->pos and leaves c->pos after its
 * closing quote. SCAN_VALIDATE only checks it; SCAN_AUTO points *out into the input when
 * it has no escape, else unescapes it into the scratch; SCAN_SCRATCH always copies it to
 * the scratch (at sc->len, which it advances).
 */
static int json_string(pctx *c, int mode, span *out)
{
    const uint8_t *in = c->in;
    size_t n = c->n;
    size_t open = c->pos;
    size_t i = plain_run(in, open + 1, n);
    if (i < n && in[i] == '"' && mode != SCAN_SCRATCH) {
        out->in_scratch = 0;
        out->off = open + 1;
        out->len = i - open - 1;
        out->escaped = 0;
        c->pos = i + 1;
        return 0;
    }
    int escaped = 0;
    parse_scratch *sc = c->sc;
    size_t start = sc->len;
    int copy = mode != SCAN_VALIDATE;
    if (copy) {
        /* Unescaped bytes are never more than their source: one reservation. */
        int rc = sc_reserve(sc, n - open);
        if (rc) {
            return rc;
        }
        memcpy(sc->data + sc->len, in + open + 1, i - open - 1);
        sc->len += i - open - 1;
    }
    for (;;) {
        if (i >= n) {
            return bad_input(c, open, "unterminated string");
        }
        uint8_t b = in[i];
        if (b == '"') {
            break;
        }
        if (b < 0x20) {
            return bad_input(c, i, "control byte 0x%02x in a string (it must be escaped)", b);
        }
        if (b != '\\') {
            size_t run = plain_run(in, i + 1, n);
            if (copy) {
                memcpy(sc->data + sc->len, in + i, run - i);
                sc->len += run - i;
            }
            i = run;
            continue;
        }
        if (i + 1 >= n) {
            return bad_input(c, open, "unterminated string");
        }
        escaped = 1;
        uint8_t e = in[i + 1];
        uint8_t lit;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            lit = e;
            break;
        case 'b':
            lit = '\b';
            break;
        case 'f':
            lit = '\f';
            break;
        case 'n':
            lit = '\n';
            break;
        case 'r':
            lit = '\r';
            break;
        case 't':
            lit = '\t';
            break;
        case 'u': {
            uint32_t cp = 0;
            size_t used = 0;
            int rc = json_unicode(c, i, &cp, &used);
            if (rc) {
                return rc;
            }
            if (copy) {
                sc->len += utf8_put(sc->data + sc->len, cp);
            }
            i += used;
            continue;
        }
        default: {
            char d[16];
            return bad_input(c, i, "invalid escape: backslash followed by %s",
                             describe(c, i + 1, d, sizeof(d)));
        }
        }
        if (copy) {
            sc->data[sc->len++] = lit;
        }
        i += 2;
    }
    out->in_scratch = 1;
    out->off = start;
    out->len = sc->len - start;
    out->escaped = escaped;
    c->pos = i + 1;
    return 0;
}

/* ---- JSON ---- */

static inline void json_ws(pctx *c)
{
    if (c->pos < c->n && c->in[c->pos] > ' ') {
        return;
    }
    while (c->pos < c->n) {
        uint8_t b = c->in[c->pos];
        if (b != ' ' && b != '\t' && b != '\n' && b != '\r') {
            break;
        }
        c->pos++;
    }
}

static int is_digit(uint8_t b)
{
    return b >= '0' && b <= '9';
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? at c->pos. */
static int json_number(pctx *c)
{
    const uint8_t *in = c->in;
    size_t n = c->n;
    size_t i = c->pos;
    char d[16];
    if (in[i] == '-') {
        i++;
    }
    if (i < n && in[i] == '0') {
        i++;
    } else if (i < n && is_digit(in[i])) {
        while (i < n && is_digit(in[i])) {
            i++;
        }
    } else {
        return bad_input(c, i, "invalid number: expected a digit, found %s",
                         describe(c, i, d, sizeof(d)));
    }
    if (i < n && in[i] == '.') {
        i++;
        if (i >= n || !is_digit(in[i])) {
            return bad_input(c, i, "invalid number: expected a digit after '.', found %s",
                             describe(c, i, d, sizeof(d)));
        }
        while (i < n && is_digit(in[i])) {
            i++;
        }
    }
    if (i < n && (in[i] == 'e' || in[i] == 'E')) {
        i++;
        if (i < n && (in[i] == '+' || in[i] == '-')) {
            i++;
        }
        if (i >= n || !is_digit(in[i])) {
            return bad_input(c, i, "invalid number: expected a digit in the exponent, found %s",
                             describe(c, i, d, sizeof(d)));
        }
        while (i < n && is_digit(in[i])) {
            i++;
        }
    }
    c->pos = i;
    return 0;
}

static int json_literal(pctx *c)
{
    const uint8_t *p = c->in + c->pos;
    size_t left = c->n - c->pos;
    size_t len = 0;
    if (left >= 4 && memcmp(p, "true", 4) == 0) {
        len = 4;
    } else if (left >= 5 && memcmp(p, "false", 5) == 0) {
        len = 5;
    } else if (left >= 4 && memcmp(p, "null", 4) == 0) {
        len = 4;
    }
    if (len) {
        c->pos += len;
        return 0;
    }
    char d[16];
    return bad_input(c, c->pos, "expected a value, found %s", describe(c, c->pos, d, sizeof(d)));
}

static int json_skip_value(pctx *c, size_t depth);

/* Checks the array or object at c->pos (depth: its own level) without emitting. */
static int json_skip_container(pctx *c, size_t depth)
{
    size_t open = c->pos;
    uint8_t close = c->in[open] == '[' ? ']' : '}';
    char d[16];
    if (depth > PARSE_JSON_MAX_DEPTH) {
        return bad_input(c, open, "nested deeper than %d levels", PARSE_JSON_MAX_DEPTH);
    }
    c->pos++;
    json_ws(c);
    if (c->pos < c->n && c->in[c->pos] == close) {
        c->pos++;
        return 0;
    }
    for (;;) {
        int rc;
        if (close == '}') {
            span key;
            if (c->pos >= c->n || c->in[c->pos] != '"') {
                return bad_input(c, c->pos, "expected a key (a string), found %s",
                                 describe(c, c->pos, d, sizeof(d)));
            }
            if ((rc = json_string(c, SCAN_VALIDATE, &key))) {
                return rc;
            }
            json_ws(c);
            if (c->pos >= c->n || c->in[c->pos] != ':') {
                return bad_input(c, c->pos, "expected ':' after a key, found %s",
                                 describe(c, c->pos, d, sizeof(d)));
            }
            c->pos++;
            json_ws(c);
        }
        if ((rc = json_skip_value(c, depth))) {
            return rc;
        }
        json_ws(c);
        if (c->pos < c->n && c->in[c->pos] == ',') {
            c->pos++;
            json_ws(c);
            continue;
        }
        if (c->pos < c->n && c->in[c->pos] == close) {
            c->pos++;
            return 0;
        }
        return bad_input(c, c->pos, "expected ',' or '%c', found %s", close,
                         describe(c, c->pos, d, sizeof(d)));
    }
}

/* Checks the value at c->pos, inside a container at `depth`, without emitting. */
static int json_skip_value(pctx *c, size_t depth)
{
    if (c->pos >= c->n) {
        return bad_input(c, c->pos, "expected a value, found the end of the line");
    }
    uint8_t b = c->in[c->pos];
    if (b == '"') {
        span s;
        return json_string(c, SCAN_VALIDATE, &s);
    }
    if (b == '{' || b == '[') {
        return json_skip_container(c, depth + 1);
    }
    if (b == '-' || is_digit(b)) {
        return json_number(c);
    }
    return json_literal(c);
}

/*
 * Emits the members of the object at c->pos (depth: its level, 1 at the top). The scratch
 * holds the dotted path of the enclosing objects ("http.") in [0, sc->len). Sets *empty
 * when the object has no member.
 */
static int json_object(pctx *c, size_t depth, int *empty)
{
    parse_scratch *sc = c->sc;
    const size_t base = sc->len;
    char d[16];
    int rc;
    c->pos++;
    json_ws(c);
    *empty = 0;
    if (c->pos < c->n && c->in[c->pos] == '}') {
        c->pos++;
        *empty = 1;
        return 0;
    }
    for (;;) {
        if (c->pos >= c->n || c->in[c->pos] != '"') {
            return bad_input(c, c->pos, "expected a key (a string), found %s",
                             describe(c, c->pos, d, sizeof(d)));
        }
        size_t key_at = c->pos;
        span key;
        if ((rc = json_string(c, base ? SCAN_SCRATCH : SCAN_AUTO, &key))) {
            return rc;
        }
        if (key.escaped && memchr(sc->data + key.off, '\0', key.len)) {
            return bad_input(c, key_at, "a key holds a NUL character (\\u0000)");
        }
        /* The field's name: the path and the key, contiguous in the scratch, or the key
         * alone in the input (a top-level key without escapes). */
        span name = {.in_scratch = key.in_scratch,
                     .off = key.in_scratch ? 0 : key.off,
                     .len = base + key.len};
        json_ws(c);
        if (c->pos >= c->n || c->in[c->pos] != ':') {
            return bad_input(c, c->pos, "expected ':' after a key, found %s",
                             describe(c, c->pos, d, sizeof(d)));
        }
        c->pos++;
        json_ws(c);
        if (c->pos >= c->n) {
            return bad_input(c, c->pos, "expected a value, found the end of the line");
        }
        uint8_t b = c->in[c->pos];
        size_t vstart = c->pos;
        span val = {.in_scratch = 0, .off = vstart, .len = 0};
        if (b == '"') {
            rc = json_string(c, SCAN_AUTO, &val);
        } else if (b == '{') {
            if (depth + 1 > PARSE_JSON_MAX_DEPTH) {
                return bad_input(c, vstart, "nested deeper than %d levels", PARSE_JSON_MAX_DEPTH);
            }
            if (!name.in_scratch && (rc = sc_append(sc, c->in + key.off, key.len))) {
                return rc;
            }
            if ((rc = sc_append(sc, ".", 1))) {
                return rc;
            }
            int sub_empty;
            if ((rc = json_object(c, depth + 1, &sub_empty))) {
                return rc;
            }
            if (sub_empty) {
                name.in_scratch = 1;
                name.off = 0;
                val.off = vstart;
                val.len = c->pos - vstart;
                if ((rc = emit_span(c, &name, &val))) {
                    return rc;
                }
            }
            goto next;
        } else if (b == '[') {
            rc = json_skip_container(c, depth + 1);
        } else if (b == '-' || is_digit(b)) {
            rc = json_number(c);
        } else {
            rc = json_literal(c);
        }
        if (rc) {
            return rc;
        }
        if (b != '"') {
            val.len = c->pos - vstart;
        }
        if ((rc = emit_span(c, &name, &val))) {
            return rc;
        }
    next:
        sc->len = base;
        json_ws(c);
        if (c->pos < c->n && c->in[c->pos] == ',') {
            c->pos++;
            json_ws(c);
            continue;
        }
        if (c->pos < c->n && c->in[c->pos] == '}') {
            c->pos++;
            return 0;
        }
        return bad_input(c, c->pos, "expected ',' or '}' after a value, found %s",
                         describe(c, c->pos, d, sizeof(d)));
    }
}

int parse_json(const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit, void *arg,
               parse_error *err)
{
    pctx c;
    char d[16];
    int rc = begin(&c, in, n, sc, emit, arg, err);
    if (rc) {
        return rc;
    }
    json_ws(&c);
    if (c.pos >= n || in[c.pos] != '{') {
        return bad_input(&c, c.pos, "expected a JSON object ('{'), found %s",
                         describe(&c, c.pos, d, sizeof(d)));
    }
    int empty;
    if ((rc = json_object(&c, 1, &empty))) {
        return rc;
    }
    json_ws(&c);
    if (c.pos < n) {
        return bad_input(&c, c.pos, "unexpected %s after the JSON object",
                         describe(&c, c.pos, d, sizeof(d)));
    }
    return 0;
}

/* ---- logfmt ---- */

int parse_logfmt(const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit, void *arg,
                 parse_error *err)
{
    pctx c;
    char d[16];
    int rc = begin(&c, in, n, sc, emit, arg, err);
    if (rc) {
        return rc;
    }
    size_t i = 0;
    for (;;) {
        while (i < n && in[i] <= ' ') {
            i++;
        }
        if (i >= n) {
            return 0;
        }
        size_t start = i;
        while (i < n && in[i] > ' ' && in[i] != '=' && in[i] != '"') {
            i++;
        }
        span key = {.in_scratch = 0, .off = start, .len = i - start};
        if (i < n && in[i] == '"') {
            return bad_input(&c, i, "unexpected '\"' in a key");
        }
        if (i < n && in[i] == '=' && key.len == 0) {
            return bad_input(&c, i, "unexpected '=': a key is missing");
        }
        if (i >= n || in[i] != '=') {
            if ((rc = emit_true(&c, &key))) {
                return rc;
            }
            continue;
        }
        i++;
        span val = {.in_scratch = 0, .off = i, .len = 0};
        if (i < n && in[i] == '"') {
            c.pos = i;
            sc->len = 0;
            if ((rc = json_string(&c, SCAN_AUTO, &val))) {
                return rc;
            }
            i = c.pos;
        } else {
            while (i < n && in[i] > ' ') {
                if (in[i] == '=' || in[i] == '"') {
                    return bad_input(&c, i, "unexpected %s in an unquoted value (quote the value)",
                                     describe(&c, i, d, sizeof(d)));
                }
                i++;
            }
            val.len = i - val.off;
        }
        if ((rc = emit_span(&c, &key, &val))) {
            return rc;
        }
    }
}

/* ---- kv ---- */

/*
 * Reads the quoted key or value whose opening quote is at `at`: a backslash escapes the
 * quote or a backslash, other bytes stay. Sets *out and *end (after the closing quote).
 */
static int kv_quoted(pctx *c, size_t at, span *out, size_t *end)
{
    const uint8_t *in = c->in;
    uint8_t q = in[at];
    size_t i = at + 1;
    int escaped = 0;
    while (i < c->n && in[i] != q) {
        if (in[i] == '\\' && i + 1 < c->n && (in[i + 1] == q || in[i + 1] == '\\')) {
            escaped = 1;
            i++;
        }
        i++;
    }
    if (i >= c->n) {
        return bad_input(c, at, "unterminated quote");
    }
    *end = i + 1;
    if (!escaped) {
        *out = (span){.in_scratch = 0, .off = at + 1, .len = i - at - 1};
        return 0;
    }
    parse_scratch *sc = c->sc;
    int rc = sc_reserve(sc, i - at);
    if (rc) {
        return rc;
    }
    out->in_scratch = 1;
    out->off = sc->len;
    out->escaped = 1;
    for (size_t j = at + 1; j < i; j++) {
        if (in[j] == '\\' && (in[j + 1] == q || in[j + 1] == '\\')) {
            j++;
        }
        sc->data[sc->len++] = in[j];
    }
    out->len = sc->len - out->off;
    return 0;
}

int parse_kv(const uint8_t *in, size_t n, const parse_kv_options *opt, parse_scratch *sc,
             parse_emit_fn emit, void *arg, parse_error *err)
{
    pctx c;
    char d[16];
    uint8_t fs = opt && opt->field_sep ? (uint8_t)opt->field_sep : ' ';
    uint8_t ks = opt && opt->kv_sep ? (uint8_t)opt->kv_sep : '=';
    int rc = begin(&c, in, n, sc, emit, arg, err);
    if (rc) {
        return rc;
    }
    if (fs == ks || fs == '"' || fs == '\'' || ks == '"' || ks == '\'' || ks == ' ' ||
        (fs == ' ' && ks == '\t')) {
        return bad_input(&c, 0, "invalid separators: field '%c', key/value '%c'", fs, ks);
    }
    /* Byte classes, so each scanning loop does one lookup per byte. */
    enum { KV_PLAIN, KV_FS, KV_KS, KV_NUL };
    uint8_t cls[256];
    memset(cls, KV_PLAIN, sizeof(cls));
    cls[0] = KV_NUL;
    cls[fs] = KV_FS;
    if (fs == ' ') {
        cls['\t'] = KV_FS;
    }
    cls[ks] = KV_KS;
#define KV_BLANK(b) ((b) == ' ' || (b) == '\t')
#define KV_FSEP(b) (cls[(b)] == KV_FS)
    size_t i = 0;
    for (;;) {
        sc->len = 0;
        while (i < n && (KV_FSEP(in[i]) || KV_BLANK(in[i]))) {
            i++;
        }
        if (i >= n) {
            return 0;
        }
        size_t start = i;
        span key;
        if (in[i] == '"' || in[i] == '\'') {
            if ((rc = kv_quoted(&c, i, &key, &i))) {
                return rc;
            }
            if (memchr(span_ptr(&c, &key), '\0', key.len)) {
                return bad_input(&c, start, "a key holds a NUL byte");
            }
            if (i < n && in[i] != ks && !KV_FSEP(in[i])) {
                return bad_input(&c, i, "expected '%c' or a separator after a quoted key, found %s",
                                 ks, describe(&c, i, d, sizeof(d)));
            }
        } else {
            while (i < n && cls[in[i]] == KV_PLAIN) {
                i++;
            }
            if (i < n && cls[in[i]] == KV_NUL) {
                return bad_input(&c, start, "a key holds a NUL byte");
            }
            size_t end = i;
            while (end > start && KV_BLANK(in[end - 1])) {
                end--;
            }
            key = (span){.in_scratch = 0, .off = start, .len = end - start};
        }
        if (key.len == 0) {
            return bad_input(&c, start, "empty key");
        }
        if (i >= n || in[i] != ks) {
            if ((rc = emit_true(&c, &key))) {
                return rc;
            }
            continue;
        }
        i++;
        while (fs != ' ' && i < n && KV_BLANK(in[i]) && !KV_FSEP(in[i])) {
            i++;
        }
        span val;
        if (i < n && (in[i] == '"' || in[i] == '\'')) {
            if ((rc = kv_quoted(&c, i, &val, &i))) {
                return rc;
            }
            while (i < n && KV_BLANK(in[i]) && !KV_FSEP(in[i])) {
                i++;
            }
            if (i < n && !KV_FSEP(in[i])) {
                return bad_input(&c, i, "expected a separator after a quoted value, found %s",
                                 describe(&c, i, d, sizeof(d)));
            }
        } else {
            size_t vstart = i;
            while (i < n && !KV_FSEP(in[i])) {
                i++;
            }
            size_t end = i;
            while (end > vstart && KV_BLANK(in[end - 1])) {
                end--;
            }
            val = (span){.in_scratch = 0, .off = vstart, .len = end - vstart};
        }
        if ((rc = emit_span(&c, &key, &val))) {
            return rc;
        }
    }
#undef KV_BLANK
#undef KV_FSEP
}

/* ---- csv ---- */

int parse_csv(const uint8_t *in, size_t n, const parse_csv_options *opt, parse_scratch *sc,
              parse_emit_fn emit, void *arg, parse_error *err)
{
    pctx c;
    char d[16];
    uint8_t sep = opt && opt->sep ? (uint8_t)opt->sep : ',';
    int rc = begin(&c, in, n, sc, emit, arg, err);
    if (rc) {
        return rc;
    }
    if (sep == '"' || sep == '\n' || sep == '\r') {
        return bad_input(&c, 0, "invalid separator: byte 0x%02x", sep);
    }
    if (n > 0 && in[n - 1] == '\n') {
        n--;
        if (n > 0 && in[n - 1] == '\r') {
            n--;
        }
        c.n = n;
    }
    size_t i = 0;
    for (size_t col = 0;; col++) {
        span val;
        sc->len = 0;
        if (i < n && in[i] == '"') {
            size_t open = i;
            int doubled = 0;
            for (i++;; i += 2) {
                const uint8_t *q = memchr(in + i, '"', n - i);
                if (!q) {
                    return bad_input(&c, open, "unterminated quote");
                }
                i = (size_t)(q - in);
                if (i + 1 >= n || in[i + 1] != '"') {
                    break;
                }
                doubled = 1;
            }
            if (!doubled) {
                val = (span){.in_scratch = 0, .off = open + 1, .len = i - open - 1};
            } else {
                /* Fewer bytes than the input: begin() reserved them. */
                val = (span){.in_scratch = 1, .off = 0, .len = 0};
                for (size_t j = open + 1; j < i; j++) {
                    sc->data[sc->len++] = in[j];
                    if (in[j] == '"') {
                        j++;
                    }
                }
                val.len = sc->len;
            }
            i++;
            if (i < n && in[i] != sep) {
                return bad_input(&c, i, "expected a separator after the closing quote, found %s",
                                 describe(&c, i, d, sizeof(d)));
            }
        } else {
            size_t start = i;
            while (i < n && in[i] != sep) {
                if (in[i] == '"') {
                    return bad_input(&c, i,
                                     "'\"' in an unquoted field (quote the field and double "
                                     "the quote)");
                }
                if (in[i] == '\n') {
                    return bad_input(&c, i, "a newline outside quotes (more than one record)");
                }
                i++;
            }
            val = (span){.in_scratch = 0, .off = start, .len = i - start};
        }
        const char *name;
        size_t name_len;
        char gen[24];
        if (opt && col < opt->n_columns) {
            name = opt->columns[col];
            name_len = strlen(name);
        } else {
            /* "_N" without snprintf: digits written backwards from the end of gen. */
            size_t at = sizeof(gen);
            for (size_t v = col + 1; v; v /= 10) {
                gen[--at] = (char)('0' + v % 10);
            }
            gen[--at] = '_';
            name = gen + at;
            name_len = sizeof(gen) - at;
        }
        if ((rc = emit(arg, name, name_len, span_ptr(&c, &val), val.len))) {
            return rc;
        }
        if (i >= n) {
            return 0;
        }
        i++; /* the separator */
    }
}
