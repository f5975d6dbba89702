/*
 * fuzz_parse_common.h: the checks shared by the libFuzzer targets of the text parsers
 * (processors/parse_text.c): fuzz_parse_json.c, fuzz_parse_logfmt.c, fuzz_parse_kv.c,
 * fuzz_parse_csv.c. Each target defines a parse function and an encoder, then calls
 * check_parser() from LLVMFuzzerTestOneInput.
 *
 * The checks, any violation aborts:
 * - the parse returns 0 or -EINVAL; on -EINVAL the offset is inside the input (0 .. size)
 *   and the message is not empty; names never hold a NUL byte;
 * - a second parse of the same input with the scratch left dirty by the first gives the
 *   same fields, return and offset (nothing depends on stale scratch bytes);
 * - round trip: when the parse succeeds, the fields written back in the format (every
 *   value quoted and escaped) parse again to exactly the same fields.
 */
#ifndef FUZZ_PARSE_COMMON_H
#define FUZZ_PARSE_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse_text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A growable byte buffer: the fields as (name_len, name, val_len, val), or encoded text. */
typedef struct fbuf {
    uint8_t *p;
    size_t len, cap;
} fbuf;

static inline void fb_put(fbuf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        if (!b->p) {
            abort();
        }
        b->cap = cap;
    }
    if (n) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

static inline void fb_byte(fbuf *b, uint8_t c)
{
    fb_put(b, &c, 1);
}

static int record_field(void *arg, const char *name, size_t name_len, const uint8_t *val,
                        size_t val_len)
{
    fbuf *b = arg;
    if (memchr(name, '\0', name_len)) {
        abort();
    }
    fb_put(b, &name_len, sizeof(name_len));
    fb_put(b, name, name_len);
    fb_put(b, &val_len, sizeof(val_len));
    fb_put(b, val, val_len);
    return 0;
}

/* Walks the recorded fields: returns 1 and the next one, or 0 at the end. */
static inline int next_field(const fbuf *b, size_t *at, const uint8_t **name, size_t *name_len,
                             const uint8_t **val, size_t *val_len)
{
    if (*at >= b->len) {
        return 0;
    }
    memcpy(name_len, b->p + *at, sizeof(*name_len));
    *at += sizeof(*name_len);
    *name = b->p + *at;
    *at += *name_len;
    memcpy(val_len, b->p + *at, sizeof(*val_len));
    *at += sizeof(*val_len);
    *val = b->p + *at;
    *at += *val_len;
    return 1;
}

/* Writes `n` bytes as the inside of a JSON string: '"', '\\' and controls escaped. */
static inline void put_json_escaped(fbuf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            fb_byte(b, '\\');
            fb_byte(b, p[i]);
        } else if (p[i] < 0x20) {
            char u[8];
            snprintf(u, sizeof(u), "\\u%04x", p[i]);
            fb_put(b, u, 6);
        } else {
            fb_byte(b, p[i]);
        }
    }
}

typedef int (*parse_call)(const uint8_t *in, size_t n, const void *opt, parse_scratch *sc,
                          fbuf *out, parse_error *err);
typedef void (*encode_call)(const fbuf *fields, const void *opt, fbuf *out);

static void check_parser(const uint8_t *data, size_t size, parse_call parse, encode_call encode,
                         const void *opt)
{
    parse_scratch sc = {0};
    fbuf first = {0};
    fbuf second = {0};
    parse_error e1;
    parse_error e2;
    int rc1 = parse(data, size, opt, &sc, &first, &e1);
    if (rc1 != 0 && rc1 != -EINVAL) {
        abort();
    }
    if (rc1 == -EINVAL && (e1.offset > size || e1.message[0] == '\0')) {
        abort();
    }
    int rc2 = parse(data, size, opt, &sc, &second, &e2);
    if (rc2 != rc1 || first.len != second.len ||
        (first.len && memcmp(first.p, second.p, first.len) != 0)) {
        abort();
    }
    if (rc1 == -EINVAL && (e1.offset != e2.offset || strcmp(e1.message, e2.message) != 0)) {
        abort();
    }
    if (rc1 == 0) {
        fbuf text = {0};
        fbuf again = {0};
        encode(&first, opt, &text);
        if (parse(text.p ? text.p : (const uint8_t *)"", text.len, opt, &sc, &again, &e2) != 0 ||
            again.len != first.len || (first.len && memcmp(first.p, again.p, first.len) != 0)) {
            abort();
        }
        free(text.p);
        free(again.p);
    }
    free(first.p);
    free(second.p);
    parse_scratch_free(&sc);
}

#endif
