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
