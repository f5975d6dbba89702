/*
 * framing.c: newline and RFC 6587 octet-counting framing.
 *
 * Invariants: frames are handed out in stream order; a frame is never
 * longer than max_bytes; the carry buffer never grows beyond max_bytes, so
 * a connection costs at most max_bytes + 1 of memory whatever the peer sends.
 * A frame that lies wholly inside one feed is passed to the callback in
 * place (no copy). Empty messages (an empty line, a lone CR) are skipped.
 * Octet counting here is "LEN SP MSG" with LEN in 1..999999999 and no
 * leading zero; in auto mode a frame that starts with a digit but has no
 * valid header falls back to being a line, so plain lines that start with
 * digits still arrive whole.
 *
 * It does not: read sockets, parse syslog, or guess an encoding.
 */
#include "framing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
    FR_START = 0, /* between messages */
    FR_LEN = 1,   /* reading the decimal length of an octet-counted message */
    FR_BODY = 2,  /* inside an octet-counted message: `want` bytes to go */
    FR_LINE = 3,  /* inside a newline-terminated message */
};

#define FR_DISCARD 0x100u  /* internal flag: dropping the rest of a truncated message */
#define FR_SPLITTED 0x200u /* internal flag: this message was already counted as split */
#define FR_MAX_DIGITS 9u

void sock_framer_init(sock_framer *f, sock_frame_mode mode, sock_frame_long on_long,
                      size_t max_bytes)
{
    memset(f, 0, sizeof(*f));
    f->mode = mode;
    f->on_long = on_long;
    f->max_bytes = max_bytes ? max_bytes : 1;
    f->state = FR_START;
}

void sock_framer_free(sock_framer *f)
{
    if (f == NULL) {
        return;
    }
    free(f->buf);
    f->buf = NULL;
    f->len = 0;
    f->cap = 0;
}

/* Makes room for `need` bytes in the carry buffer (need <= max_bytes). */
static int fr_reserve(sock_framer *f, size_t need)
{
    if (need <= f->cap) {
        return 0;
    }
    size_t cap = f->cap ? f->cap * 2 : 256;
    if (cap < need) {
        cap = need;
    }
    if (cap > f->max_bytes + 1) {
        cap = f->max_bytes + 1; /* +1: a CR held back in line mode */
    }
    uint8_t *b = realloc(f->buf, cap);
    if (b == NULL) {
        return -ENOMEM;
    }
    f->buf = b;
    f->cap = cap;
    return 0;
}

static int fr_emit(sock_framer *f, const uint8_t *p, size_t n, unsigned flags, sock_frame_fn fn,
                   void *arg)
{
    f->frames++;
    return fn(arg, p, n, flags);
}

/* Appends bytes of the message in progress, emitting max_bytes pieces
 * (split) or cutting the message (truncate) when it gets too long. */
static int fr_add(sock_framer *f, const uint8_t *p, size_t n, sock_frame_fn fn, void *arg)
{
    while (n > 0) {
        if (f->cur_flags & FR_DISCARD) {
            f->dropped_bytes += n;
            return 0;
        }
        if (f->len == f->max_bytes && f->state == FR_LINE && p[0] == '\r') {
            /* Maybe the CR of a CR LF: hold it (one byte over) until we know. */
            int rc = fr_reserve(f, f->len + 1);
            if (rc < 0) {
                return rc;
            }
            f->buf[f->len++] = '\r';
            p++;
            n--;
            continue;
        }
        if (f->len >= f->max_bytes) {
            /* At least one more byte: the message is longer than max_bytes. */
            int rc;
            size_t extra = f->len - f->max_bytes; /* a held CR */
            if (f->on_long == SOCK_LONG_SPLIT) {
                if (!(f->cur_flags & FR_SPLITTED)) {
                    f->split_msgs++;
                    f->cur_flags |= FR_SPLITTED;
                }
                rc = fr_emit(f, f->buf, f->max_bytes, SOCK_FRAME_F_SPLIT, fn, arg);
                memmove(f->buf, f->buf + f->max_bytes, extra);
                f->len = extra;
            } else {
                f->truncated_msgs++;
                f->dropped_bytes += extra;
                rc = fr_emit(f, f->buf, f->max_bytes, SOCK_FRAME_F_TRUNCATED, fn, arg);
                f->len = 0;
                f->cur_flags |= FR_DISCARD;
            }
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        size_t take = f->max_bytes - f->len; /* len < max_bytes here */
        if (take > n) {
            take = n;
        }
        int rc = fr_reserve(f, f->len + take);
        if (rc < 0) {
            return rc;
        }
        memcpy(f->buf + f->len, p, take);
        f->len += take;
        p += take;
        n -= take;
    }
    return 0;
}

/* Ends the message in progress: hands out what the carry buffer holds. */
static int fr_end(sock_framer *f, int strip_cr, unsigned flags, sock_frame_fn fn, void *arg)
{
    int rc = 0;
    if (!(f->cur_flags & FR_DISCARD)) {
        size_t n = f->len;
        if (strip_cr && n > 0 && f->buf[n - 1] == '\r') {
            n--;
        }
        if (n > f->max_bytes) {
            /* A held-back CR that turned out to be content: one byte over. */
            if (f->on_long == SOCK_LONG_SPLIT) {
                if (!(f->cur_flags & FR_SPLITTED)) {
                    f->split_msgs++;
                }
                rc = fr_emit(f, f->buf, f->max_bytes, SOCK_FRAME_F_SPLIT, fn, arg);
                if (rc == 0) {
                    rc = fr_emit(f, f->buf + f->max_bytes, n - f->max_bytes, flags, fn, arg);
                }
            } else {
                f->truncated_msgs++;
                f->dropped_bytes += n - f->max_bytes;
                rc = fr_emit(f, f->buf, f->max_bytes, SOCK_FRAME_F_TRUNCATED | flags, fn, arg);
            }
        } else if (n > 0) {
            rc = fr_emit(f, f->buf, n, flags, fn, arg);
        }
    }
    f->len = 0;
    f->cur_flags = 0;
    f->state = FR_START;
    return rc;
}

/* Newline mode over p[0..n): returns bytes consumed via *used. */
static int fr_line(sock_framer *f, const uint8_t *p, size_t n, size_t *used, sock_frame_fn fn,
                   void *arg)
{
    const uint8_t *lf = memchr(p, '\n', n);
    if (lf == NULL) {
        *used = n;
        return fr_add(f, p, n, fn, arg);
    }
    size_t seg = (size_t)(lf - p);
    *used = seg + 1;
    if (f->len == 0 && f->cur_flags == 0) {
        size_t m = seg;
        if (m > 0 && p[m - 1] == '\r') {
            m--;
        }
        if (m <= f->max_bytes) {
            f->state = FR_START;
            return m > 0 ? fr_emit(f, p, m, 0, fn, arg) : 0;
        }
    }
    /* The line began in an earlier feed, or is too long: go through the buffer. */
    if (seg > 0 && p[seg - 1] == '\r') {
        seg--; /* a CR right before the LF is not part of the line */
        int rc = fr_add(f, p, seg, fn, arg);
        if (rc != 0) {
            return rc;
        }
        return fr_end(f, 0, 0, fn, arg);
    }
    int rc = fr_add(f, p, seg, fn, arg);
    if (rc != 0) {
        return rc;
    }
    return fr_end(f, 1, 0, fn, arg);
}

/* Octet-counting header: digits then one space. */
static int fr_len(sock_framer *f, const uint8_t *p, size_t n, size_t *used, sock_frame_fn fn,
                  void *arg)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c >= '0' && c <= '9' && f->hdr_digits < FR_MAX_DIGITS) {
            f->hdr = f->hdr * 10 + (size_t)(c - '0');
            f->hdr_digits++;
            i++;
            continue;
        }
        if (c == ' ' && f->hdr > 0) {
            f->want = f->hdr;
            f->state = FR_BODY;
            f->cur_flags = 0;
            f->len = 0;
            *used = i + 1;
            return 0;
        }
        /* Not an octet-counting header. */
        if (f->mode == SOCK_FRAME_OCTET) {
            f->errors++;
            *used = i;
            return -EPROTO;
        }
        /* Auto mode: what looked like a length is the start of a line. */
        char digits[FR_MAX_DIGITS + 1];
        size_t nd = f->hdr_digits;
        size_t v = f->hdr;
        for (size_t k = nd; k > 0; k--) {
            digits[k - 1] = (char)('0' + v % 10);
            v /= 10;
        }
        f->state = FR_LINE;
        f->len = 0;
        f->cur_flags = 0;
        *used = i;
        return fr_add(f, (const uint8_t *)digits, nd, fn, arg);
    }
    *used = n;
    return 0;
}

/* Octet-counted body: `want` more bytes. */
static int fr_body(sock_framer *f, const uint8_t *p, size_t n, size_t *used, sock_frame_fn fn,
                   void *arg)
{
    size_t take = f->want < n ? f->want : n;
    *used = take;
    if (f->len == 0 && f->cur_flags == 0 && take == f->want && take <= f->max_bytes) {
        f->want = 0;
        f->state = FR_START;
        return fr_emit(f, p, take, 0, fn, arg);
    }
    int rc = fr_add(f, p, take, fn, arg);
    if (rc != 0) {
        return rc;
    }
    f->want -= take;
    if (f->want == 0) {
        return fr_end(f, 0, 0, fn, arg);
    }
    return 0;
}

int sock_framer_feed(sock_framer *f, const uint8_t *p, size_t n, sock_frame_fn fn, void *arg)
{
    while (n > 0) {
        size_t used = 0;
        int rc = 0;
        switch (f->state) {
        case FR_START: {
            uint8_t c = p[0];
            if (c == '\n' || (c == '\r' && f->mode != SOCK_FRAME_NEWLINE) ||
                (c == ' ' && f->mode != SOCK_FRAME_NEWLINE)) {
                used = 1; /* blank between messages */
                break;
            }
            if (f->mode != SOCK_FRAME_NEWLINE && c >= '1' && c <= '9') {
                f->state = FR_LEN;
                f->hdr = 0;
                f->hdr_digits = 0;
            } else if (f->mode == SOCK_FRAME_OCTET) {
                f->errors++;
                return -EPROTO;
            } else {
                f->state = FR_LINE;
                f->len = 0;
                f->cur_flags = 0;
            }
            continue;
        }
        case FR_LEN:
            rc = fr_len(f, p, n, &used, fn, arg);
            break;
        case FR_BODY:
            rc = fr_body(f, p, n, &used, fn, arg);
            break;
        default:
            rc = fr_line(f, p, n, &used, fn, arg);
            break;
        }
        if (rc != 0) {
            return rc;
        }
        p += used;
        n -= used;
    }
    return 0;
}

int sock_framer_finish(sock_framer *f, sock_frame_fn fn, void *arg)
{
    int rc = 0;
    switch (f->state) {
    case FR_LINE:
        rc = fr_end(f, 1, 0, fn, arg);
        break;
    case FR_BODY:
        if (!(f->cur_flags & FR_DISCARD)) {
            f->truncated_msgs++;
        }
        rc = fr_end(f, 0, SOCK_FRAME_F_INCOMPLETE, fn, arg);
        break;
    case FR_LEN:
        if (f->mode == SOCK_FRAME_OCTET) {
            f->errors++;
        } else {
            /* Digits and then the end: a short line. */
            size_t used = 0;
            rc = fr_len(f, (const uint8_t *)"\n", 1, &used, fn, arg);
            if (rc == 0 && f->state == FR_LINE) {
                rc = fr_end(f, 1, 0, fn, arg);
            }
        }
        break;
    default:
        break;
    }
    f->state = FR_START;
    f->len = 0;
    f->cur_flags = 0;
    f->want = 0;
    return rc;
}

int sock_framer_datagram(sock_framer *f, const uint8_t *p, size_t n, sock_frame_fn fn, void *arg)
{
    if (f->mode != SOCK_FRAME_NONE) {
        int rc = sock_framer_feed(f, p, n, fn, arg);
        int rc2 = sock_framer_finish(f, fn, arg);
        return rc != 0 ? rc : rc2;
    }
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == '\0')) {
        n--;
    }
    if (n == 0) {
        return 0;
    }
    if (n <= f->max_bytes) {
        return fr_emit(f, p, n, 0, fn, arg);
    }
    if (f->on_long == SOCK_LONG_TRUNCATE) {
        f->truncated_msgs++;
        f->dropped_bytes += n - f->max_bytes;
        return fr_emit(f, p, f->max_bytes, SOCK_FRAME_F_TRUNCATED, fn, arg);
    }
    f->split_msgs++;
    while (n > f->max_bytes) {
        int rc = fr_emit(f, p, f->max_bytes, SOCK_FRAME_F_SPLIT, fn, arg);
        if (rc != 0) {
            return rc;
        }
        p += f->max_bytes;
        n -= f->max_bytes;
    }
    return fr_emit(f, p, n, 0, fn, arg);
}
