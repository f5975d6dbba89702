/*
 * buf.c: spool_buf, a growable byte buffer (data/len/cap). Growth doubles
 * the capacity so appends are amortised O(1). A zeroed struct is an empty
 * buffer; spool_buf_free returns it to that state. Not thread-safe: one
 * owner at a time.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

int spool_buf_reserve(spool_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) {
        return -ENOMEM;
    }
    size_t need = b->len + extra;
    if (need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int spool_buf_append(spool_buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    int rc = spool_buf_reserve(b, n);
    if (rc < 0) {
        return rc;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int spool_buf_printf(spool_buf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(room ? (char *)b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    if ((size_t)n >= room) { /* did not fit (with its NUL): grow, format again */
        int rc = spool_buf_reserve(b, (size_t)n + 1);
        if (rc < 0) {
            if (room) {
                b->data[b->len] = '\0';
            }
            return rc;
        }
        va_start(ap, fmt);
        vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

void spool_buf_free(spool_buf *b)
{
    if (!b) {
        return;
    }
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
