/*
 * tail_lines.c: cuts the bytes of a file into records.
 *
 * A pure function over buffers (no I/O, no clock of its own), so it is unit
 * tested on byte strings. Lines end at '\n' (memchr); a trailing '\r' is
 * dropped if asked. A line that fits entirely in the fed buffer is passed to
 * emit straight from that buffer; only an incomplete last line is copied
 * (into `carry`) until its newline arrives. Lines longer than max_line are
 * split into max_line pieces or truncated to max_line (then the rest of the
 * line, up to its newline, is dropped). With multiline on, a line matching
 * `ml_start` begins a new record and other lines are appended to the
 * pending one (joined by '\n'); a record is emitted when the next one
 * starts, after ml_max_lines lines, before it would exceed max_line, or when
 * the caller flushes it (timeout, close).
 *
 * Invariant: emit_off is the file offset just past the bytes of the last
 * emitted record (and of any bytes deliberately dropped after it), never
 * past a byte of an incomplete line or of a pending record, so it is the
 * position that may be made durable with the records.
 *
 * Not done here: bytes are not validated or converted (NUL and invalid UTF-8
 * pass through), timestamps and headers are the caller's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tail.h"

/* Keeps small buffers, gives big ones back (a 10 MiB line should not stay). */
static void lbuf_clear(spool_buf *b)
{
    b->len = 0;
    if (b->cap > 1024 * 1024) {
        spool_buf_free(b);
    }
}

void tail_split_reset(tail_splitter *sp, int64_t off)
{
    lbuf_clear(&sp->carry);
    lbuf_clear(&sp->rec);
    sp->discarding = 0;
    sp->long_counted = 0;
    sp->carry_since_ms = 0;
    sp->rec_lines = 0;
    sp->rec_end = off;
    sp->rec_since_ms = 0;
    sp->off = off;
    sp->emit_off = off;
}

void tail_split_free(tail_splitter *sp)
{
    spool_buf_free(&sp->carry);
    spool_buf_free(&sp->rec);
    memset(sp, 0, sizeof(*sp));
}

int tail_split_pending(const tail_splitter *sp)
{
    return sp->emit_off < sp->off;
}

static int emit_record(tail_splitter *sp, const uint8_t *p, size_t n, int64_t end,
                       tail_emit_fn emit, void *arg)
{
    int r = emit(arg, p, n);
    if (r < 0) {
        return r;
    }
    sp->records++;
    sp->emit_off = end;
    return 0;
}

int tail_split_flush_record(tail_splitter *sp, const tail_split_conf *c, tail_emit_fn emit,
                            void *arg)
{
    (void)c;
    if (sp->rec_lines == 0) {
        return 0;
    }
    int r = emit_record(sp, sp->rec.data, sp->rec.len, sp->rec_end, emit, arg);
    sp->rec_lines = 0;
    lbuf_clear(&sp->rec);
    return r;
}

static int ml_is_start(const tail_split_conf *c, const uint8_t *p, size_t n)
{
    int rc = pcre2_match(c->ml_start, (PCRE2_SPTR)p, n, 0, 0, c->ml_md, NULL);
    return rc >= 0;
}

/* One complete line (or piece) that ends at file offset `end`. */
static int put_line(tail_splitter *sp, const tail_split_conf *c, const uint8_t *p, size_t n,
                    int64_t end, int64_t now_ms, tail_emit_fn emit, void *arg)
{
    if (!c->ml_start) {
        return emit_record(sp, p, n, end, emit, arg);
    }
    int r;
    if (sp->rec_lines > 0 && (sp->rec.len + 1 + n > c->max_line || ml_is_start(c, p, n))) {
        r = tail_split_flush_record(sp, c, emit, arg);
        if (r < 0) {
            return r;
        }
    }
    if (sp->rec_lines > 0) {
        r = spool_buf_append(&sp->rec, (const uint8_t *)"\n", 1);
        if (r < 0) {
            return r;
        }
    }
    r = spool_buf_append(&sp->rec, p, n);
    if (r < 0) {
        return r;
    }
    sp->rec_lines++;
    sp->rec_end = end;
    sp->rec_since_ms = now_ms;
    if (c->ml_max_lines && sp->rec_lines >= c->ml_max_lines) {
        return tail_split_flush_record(sp, c, emit, arg);
    }
    return 0;
}

/* A complete line from the file, before '\r' stripping. */
static int put_full_line(tail_splitter *sp, const tail_split_conf *c, const uint8_t *p, size_t n,
                         int64_t end, int64_t now_ms, tail_emit_fn emit, void *arg)
{
    if (c->strip_cr && n > 0 && p[n - 1] == '\r') {
        n--;
    }
    return put_line(sp, c, p, n, end, now_ms, emit, arg);
}

/*
 * Takes `n` bytes at file offset `off` that belong to the current line;
 * `complete` says a '\n' follows them (at off + n).
 */
static int take(tail_splitter *sp, const tail_split_conf *c, const uint8_t *p, size_t n,
                int64_t off, int complete, int64_t now_ms, tail_emit_fn emit, void *arg)
{
    int r = 0;
    size_t max = c->max_line;

    if (sp->discarding) {
        /* The truncated head of this line is in carry (or was flushed). */
        if (!complete) {
            return 0;
        }
        sp->discarding = 0;
        if (sp->carry.len > 0) {
            r = put_line(sp, c, sp->carry.data, sp->carry.len, off + n + 1, now_ms, emit, arg);
            lbuf_clear(&sp->carry);
            sp->carry_since_ms = 0;
        } else if (sp->rec_lines == 0) {
            sp->emit_off = off + n + 1; /* only dropped bytes since the last record */
        }
        return r;
    }
    if (sp->carry.len == 0 && complete && n <= max) {
        return put_full_line(sp, c, p, n, off + n + 1, now_ms, emit, arg);
    }
    while (sp->carry.len + n > max) {
        size_t room = max - sp->carry.len;
        if (!sp->long_counted) {
            sp->long_lines++;
            sp->long_counted = 1;
        }
        if (c->truncate) {
            r = spool_buf_append(&sp->carry, p, room);
            if (r < 0) {
                return r;
            }
            if (sp->carry_since_ms == 0) {
                sp->carry_since_ms = now_ms;
            }
            sp->discarding = 1;
            return take(sp, c, NULL, 0, off + n, complete, now_ms, emit, arg);
        }
        if (sp->carry.len == 0) {
            r = put_line(sp, c, p, room, off + room, now_ms, emit, arg);
        } else {
            r = spool_buf_append(&sp->carry, p, room);
            if (r == 0) {
                r = put_line(sp, c, sp->carry.data, sp->carry.len, off + room, now_ms, emit, arg);
            }
            lbuf_clear(&sp->carry);
            sp->carry_since_ms = 0;
        }
        if (r < 0) {
            return r;
        }
        p += room;
        n -= room;
        off += room;
    }
    if (!complete) {
        if (n > 0 && sp->carry.len == 0) {
            sp->carry_since_ms = now_ms;
        }
        return spool_buf_append(&sp->carry, p, n);
    }
    if (sp->carry.len == 0) {
        return put_full_line(sp, c, p, n, off + n + 1, now_ms, emit, arg);
    }
    r = spool_buf_append(&sp->carry, p, n);
    if (r == 0) {
        r = put_full_line(sp, c, sp->carry.data, sp->carry.len, off + n + 1, now_ms, emit, arg);
    }
    lbuf_clear(&sp->carry);
    sp->carry_since_ms = 0;
    return r;
}

int tail_split_feed(tail_splitter *sp, const tail_split_conf *c, const uint8_t *p, size_t n,
                    int64_t now_ms, tail_emit_fn emit, void *arg)
{
    size_t pos = 0;
    while (pos < n) {
        const uint8_t *nl = memchr(p + pos, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - (p + pos)) : n - pos;
        int r = take(sp, c, p + pos, len, sp->off + (int64_t)pos, nl != NULL, now_ms, emit, arg);
        if (nl) {
            sp->long_counted = 0;
        }
        if (r < 0) {
            sp->off += (int64_t)pos;
            return r;
        }
        pos += len + (nl ? 1 : 0);
    }
    sp->off += (int64_t)n;
    return 0;
}

int tail_split_flush_partial(tail_splitter *sp, const tail_split_conf *c, int64_t now_ms,
                             tail_emit_fn emit, void *arg)
{
    if (sp->carry.len == 0) {
        return 0;
    }
    /* The line ends where the fed bytes end; if truncating, the rest of it
     * up to its newline stays discarded. */
    int r = put_line(sp, c, sp->carry.data, sp->carry.len, sp->off, now_ms, emit, arg);
    lbuf_clear(&sp->carry);
    sp->carry_since_ms = 0;
    return r;
}
