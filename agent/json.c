/*
 * json.c: JSON string escaping, hand-written because it runs on every
 * record of the json formats. Valid UTF-8 passes through unchanged; each
 * byte of an invalid or truncated sequence becomes \u00XX, so bytes are
 * never dropped (a reader sees the Latin-1 character of the byte).
 */
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
                PUT('0');
                PUT('0');
                PUT(hex[c >> 4]);
                PUT(hex[c & 15]);
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
