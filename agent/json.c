/*
 * json.c: the one JSON string escaper and the one record -> JSON encoder
 * (spool.h), hand-written because they run on every record of the json
 * formats (file, tcp, stdout, http ndjson/json). Valid UTF-8 passes through
 * unchanged; each byte of an invalid or truncated sequence becomes \ufffd,
 * so the output is always valid UTF-8 and one bad byte never hides the rest.
 * The escaped length is at most 6 bytes per input byte. Pure, any thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "spool/spool.h"

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. */
static size_t utf8_valid(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are invalid. */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
        return 0;
    }
    return len;
}

/* 1 if none of the 8 bytes at p needs escaping (each in 0x20..0x7f and
 * neither '"' nor '\\'), 0 if one may (the byte loop then decides). SWAR:
 * a byte's high bit is set in the mask if the byte is >= 0x80, below 0x20
 * ("has less"), or equal to '"' or '\\' ("has zero" after the xor); each
 * test is exact as "some byte matches" once the >= 0x80 bytes are out. */
static inline int plain8(const uint8_t *p)
{
    const uint64_t ones = 0x0101010101010101ULL;
    uint64_t x, q, b;
    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    return ((x | ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) &
            (ones * 0x80)) == 0;
}

size_t spool_json_escape(char *dst, size_t cap, const uint8_t *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o < cap) {                                                                             \
            dst[o] = (char)(ch);                                                                   \
        }                                                                                          \
        o++;                                                                                       \
    } while (0)
    size_t i = 0;
    while (i < len) {
        uint8_t c = src[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            /* Fast path: a run of plain ASCII. */
            size_t j = i + 1;
            while (j + 8 <= len && plain8(src + j)) {
                j += 8;
            }
            while (j < len && src[j] >= 0x20 && src[j] < 0x80 && src[j] != '"' && src[j] != '\\') {
                j++;
            }
            size_t run = j - i;
            if (o + run <= cap) {
                memcpy(dst + o, src + i, run);
            } else if (o < cap) {
                memcpy(dst + o, src + i, cap - o);
            }
            o += run;
            i = j;
            continue;
        }
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT(c);
            i++;
        } else if (c < 0x20) {
            PUT('\\');
            switch (c) {
            case '\n':
                PUT('n');
                break;
            case '\r':
                PUT('r');
                break;
            case '\t':
                PUT('t');
                break;
            case '\b':
                PUT('b');
                break;
            case '\f':
                PUT('f');
                break;
            default:
                PUT('u');
                PUT('0');
                PUT('0');
                PUT(hex[c >> 4]);
                PUT(hex[c & 15]);
            }
            i++;
        } else {
            size_t n = utf8_valid(src + i, len - i);
            if (n == 0) {
                PUT('\\');
                PUT('u');
                PUT('f');
                PUT('f');
                PUT('f');
                PUT('d');
                i++;
            } else {
                for (size_t k = 0; k < n; k++) {
                    PUT(src[i + k]);
                }
                i += n;
            }
        }
    }
#undef PUT
    return o;
}

int spool_json_append_string(spool_buf *out, const void *src, size_t len)
{
    /* Most text needs no escaping: try in the space there is first. */
    size_t len0 = out->len;
    int rc = spool_buf_reserve(out, len + 2);
    if (rc < 0) {
        return rc;
    }
    out->data[out->len++] = '"';
    size_t room = out->cap - out->len;
    size_t need = spool_json_escape((char *)out->data + out->len, room, src, len);
    if (need + 1 > room) {
        rc = spool_buf_reserve(out, need + 1);
        if (rc < 0) {
            out->len = len0;
            return rc;
        }
        room = out->cap - out->len;
        need = spool_json_escape((char *)out->data + out->len, room, src, len);
    }
    out->len += need;
    out->data[out->len++] = '"';
    return 0;
}

#define PUT_LIT(out, lit) spool_buf_append((out), (lit), sizeof(lit) - 1)

static int put_bytes_or_null(spool_buf *out, const uint8_t *s, int32_t n)
{
    if (n < 0 || (s == NULL && n > 0)) {
        return PUT_LIT(out, "null");
    }
    return spool_json_append_string(out, s ? s : (const uint8_t *)"", (size_t)n);
}

static int put_int(spool_buf *out, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    return spool_buf_append(out, tmp, (size_t)n);
}

int spool_json_append_record(spool_buf *out, const spool_record *r, const char *topic)
{
    size_t len0 = out->len;
    int rc = PUT_LIT(out, "{\"key\":");
    rc = rc ? rc : put_bytes_or_null(out, r->key, r->key_len);
    rc = rc ? rc : PUT_LIT(out, ",\"value\":");
    rc = rc ? rc : put_bytes_or_null(out, r->value, r->value_len);
    rc = rc ? rc : PUT_LIT(out, ",\"headers\":{");
    for (uint32_t i = 0; rc == 0 && i < r->header_count; i++) {
        const spool_header *h = &r->headers[i];
        if (i > 0) {
            rc = PUT_LIT(out, ",");
        }
        rc = rc ? rc : spool_json_append_string(out, h->key, h->key_len);
        rc = rc ? rc : PUT_LIT(out, ":");
        rc = rc ? rc : put_bytes_or_null(out, h->value, h->value_len);
    }
    rc = rc ? rc : PUT_LIT(out, "},\"timestamp\":");
    rc = rc ? rc : put_int(out, r->timestamp);
    if (topic) {
        rc = rc ? rc : PUT_LIT(out, ",\"topic\":");
        rc = rc ? rc : spool_json_append_string(out, topic, strlen(topic));
    }
    rc = rc ? rc : PUT_LIT(out, ",\"partition\":");
    rc = rc ? rc : put_int(out, r->partition);
    rc = rc ? rc : PUT_LIT(out, ",\"offset\":");
    rc = rc ? rc : put_int(out, r->offset);
    rc = rc ? rc : PUT_LIT(out, "}");
    if (rc < 0) {
        out->len = len0;
    }
    return rc;
}

/* ---- the `fields` document: a record's fields as one JSON object ---- */

/* 1 if s is exactly a JSON number (RFC 8259 grammar), true, false or null. */
static int json_scalar(const uint8_t *s, size_t n)
{
    if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0) ||
        (n == 4 && memcmp(s, "null", 4) == 0)) {
        return 1;
    }
    size_t i = 0;
    if (i < n && s[i] == '-') {
        i++;
    }
    if (i >= n || s[i] < '0' || s[i] > '9') {
        return 0;
    }
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    }
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == d) {
            return 0;
        }
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == d) {
            return 0;
        }
    }
    return i == n;
}

static int put_field_value(spool_buf *out, const spool_header *h, int flags)
{
    if (h->value_len >= 0 && h->value && (flags & SPOOL_JSON_TYPED) &&
        json_scalar(h->value, (size_t)h->value_len)) {
        return spool_buf_append(out, h->value, (size_t)h->value_len);
    }
    return put_bytes_or_null(out, h->value, h->value_len);
}

#define FIELDS_MAX_NESTED 256 /* headers beyond this are written flat */
#define FIELDS_MAX_DEPTH 32

typedef struct fields_walk {
    spool_buf *out;
    const spool_record *r;
    uint8_t done[FIELDS_MAX_NESTED];
    int flags;
    int first; /* no member written yet at the current level */
} fields_walk;

static int reserved_name(const char *s, size_t n)
{
    return (n == 3 && memcmp(s, "key", 3) == 0) || (n == 5 && memcmp(s, "value", 5) == 0) ||
           (n == 9 && memcmp(s, "timestamp", 9) == 0);
}

static int put_name(spool_buf *out, const char *s, size_t n, int underscore)
{
    if (underscore) {
        /* a field named like a record part (ASCII): "_timestamp"; the part keeps its name */
        int rc = PUT_LIT(out, "\"_");
        rc = rc ? rc : spool_buf_append(out, s, n);
        return rc ? rc : PUT_LIT(out, "\":");
    }
    int rc = spool_json_append_string(out, s, n);
    return rc ? rc : PUT_LIT(out, ":");
}

static int put_member_name(fields_walk *w, const char *s, size_t n, int underscore)
{
    int rc = w->first ? 0 : PUT_LIT(w->out, ",");
    w->first = 0;
    return rc ? rc : put_name(w->out, s, n, underscore);
}

/* Writes leaf i under the member name `rest`, merging later headers of the
 * same full name into an array (JSON objects must not repeat a name). */
static int put_leaf(fields_walk *w, size_t i, const char *rest, size_t rest_len, int top)
{
    const spool_header *hs = w->r->headers;
    size_t n = w->r->header_count;
    size_t same = 0;
    for (size_t j = i + 1; j < n; j++) {
        same += !w->done[j] && hs[j].key_len == hs[i].key_len &&
                memcmp(hs[j].key, hs[i].key, hs[i].key_len) == 0;
    }
    int rc = put_member_name(w, rest, rest_len, top && reserved_name(rest, rest_len));
    w->done[i] = 1;
    if (same == 0) {
        return rc ? rc : put_field_value(w->out, &hs[i], w->flags);
    }
    rc = rc ? rc : PUT_LIT(w->out, "[");
    rc = rc ? rc : put_field_value(w->out, &hs[i], w->flags);
    for (size_t j = i + 1; rc == 0 && j < n; j++) {
        if (!w->done[j] && hs[j].key_len == hs[i].key_len &&
            memcmp(hs[j].key, hs[i].key, hs[i].key_len) == 0) {
            w->done[j] = 1;
            rc = PUT_LIT(w->out, ",");
            rc = rc ? rc : put_field_value(w->out, &hs[j], w->flags);
        }
    }
    return rc ? rc : PUT_LIT(w->out, "]");
}

/* 1 if some header (written or not) is named exactly `name` (len bytes). */
static int leaf_named(const fields_walk *w, const char *name, size_t len)
{
    for (size_t j = 0; j < w->r->header_count; j++) {
        if (w->r->headers[j].key_len == len && memcmp(w->r->headers[j].key, name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* 1 if the dotted name has an empty part ("a..b", ".a", "a."). */
static int empty_part(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.') {
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if (s[i] == '.' && s[i - 1] == '.') {
            return 1;
        }
    }
    return 0;
}

/* Writes, in order of first appearance, every unwritten header whose name
 * starts with the plen bytes of `prefix` (which end in '.', or are empty):
 * `a.b.c` becomes {"a":{"b":{"c":...}}}. A name with an empty part, or
 * under a prefix that is itself a field (`a.b` when `a` exists), stays flat
 * from there on: {"a":1,"a.b":2}. */
static int put_level(fields_walk *w, const char *prefix, size_t plen, int depth)
{
    int rc = 0;
    const spool_header *hs = w->r->headers;
    for (size_t i = 0; rc == 0 && i < w->r->header_count; i++) {
        const spool_header *h = &hs[i];
        if (w->done[i] || h->key_len < plen || memcmp(h->key, prefix, plen) != 0) {
            continue;
        }
        const char *rest = h->key + plen;
        size_t rest_len = h->key_len - plen;
        const char *dot = memchr(rest, '.', rest_len);
        size_t comp = dot ? (size_t)(dot - rest) : rest_len;
        if (!dot || depth >= FIELDS_MAX_DEPTH || empty_part(h->key, h->key_len) ||
            leaf_named(w, h->key, plen + comp)) {
            rc = put_leaf(w, i, rest, rest_len, plen == 0);
            continue;
        }
        rc = put_member_name(w, rest, comp, 0);
        rc = rc ? rc : PUT_LIT(w->out, "{");
        w->first = 1;
        rc = rc ? rc : put_level(w, h->key, plen + comp + 1, depth + 1);
        rc = rc ? rc : PUT_LIT(w->out, "}");
        w->first = 0;
    }
    return rc;
}

int spool_json_append_fields(spool_buf *out, const spool_record *r, int flags)
{
    size_t len0 = out->len;
    int rc = PUT_LIT(out, "{\"timestamp\":");
    rc = rc ? rc : put_int(out, r->timestamp);
    if (r->key_len >= 0) {
        rc = rc ? rc : PUT_LIT(out, ",\"key\":");
        rc = rc ? rc : put_bytes_or_null(out, r->key, r->key_len);
    }
    rc = rc ? rc : PUT_LIT(out, ",\"value\":");
    rc = rc ? rc : put_bytes_or_null(out, r->value, r->value_len);
    if (r->header_count > FIELDS_MAX_NESTED) {
        /* too many to track: every field flat, in order */
        for (uint32_t i = 0; rc == 0 && i < r->header_count; i++) {
            const spool_header *h = &r->headers[i];
            rc = PUT_LIT(out, ",");
            rc = rc ? rc : put_name(out, h->key, h->key_len, reserved_name(h->key, h->key_len));
            rc = rc ? rc : put_field_value(out, h, flags);
        }
    } else if (rc == 0) {
        fields_walk w = {.out = out, .r = r, .flags = flags, .first = 0};
        memset(w.done, 0, r->header_count);
        rc = put_level(&w, "", 0, 0);
    }
    rc = rc ? rc : PUT_LIT(out, "}");
    if (rc < 0) {
        out->len = len0;
    }
    return rc;
}
