/*
 * tail_file.c: one tailed file: identity, open/close, reading, truncation,
 * copies.
 *
 * A file is read with read() in blocks of `read_buffer` bytes into the
 * input's one read buffer and fed to its splitter, which appends complete
 * records to the input's current batch (one copy: into the batch). The
 * file's position (splitter emit_off: the end of its last emitted record)
 * goes with the batch that holds those records, so the log and the
 * position store always agree. With the position go a hash of the file's
 * first bytes and of the bytes just before the position (bk_*, kept up to
 * date from the blocks read).
 *
 * Invariants: f->read_off == f->sp.off; while open, the fd's file offset is
 * read_off (text files; a compressed file read decompressed is read with
 * pread and its offsets are in the decompressed stream). An open fd is
 * always the file of (dev, ino): a reopen by path checks the identity and
 * the fingerprint. A size below read_off, another beginning, or other bytes
 * before the position mean the file was truncated (copytruncate, `> file`):
 * it is marked (trunc_pending) and restarts at 0 after the next scan, which
 * finds its copy if the globs match it.
 *
 * Copies: a file read from 0 whose beginning and bytes before a followed
 * file's position are that file's is a copy of it (copy_of): it is not read
 * while the original still holds that content; when the original is
 * truncated (or finished) the copy continues from the original's position,
 * first (prio), and the original's new content waits for it (after).
 * Order: a file never gets ahead of its `after` while that one has unread
 * bytes (checked before and after each block), bounded in time.
 *
 * Not done here: deciding which files exist, rotation (tail_scan.c), the
 * loop and the batch (tail.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tail.h"

#define TAIL_ORDER_WAIT_MS 30000 /* a successor waits for its predecessor at most this long */

typedef struct emit_arg {
    tail_rt *rt;
    tail_file *f;
} emit_arg;

/* The splitter's emit: one record into the current batch. */
static int file_emit(void *arg, const uint8_t *p, size_t n)
{
    emit_arg *a = arg;
    spool_record r = {
        .key = NULL,
        .key_len = -1,
        .value = p,
        .value_len = (int32_t)n,
        .headers = a->f->hdrs,
        .header_count = 3,
        .timestamp = a->rt->now_wall_ms,
        .partition = -1,
        .offset = -1,
    };
    int rc = tail_batch_get(a->rt);
    if (rc < 0) {
        return rc;
    }
    return spool_batch_append(a->rt->batch, &r);
}

static void set_header(spool_header *h, const char *k, const char *v)
{
    h->key = k;
    h->key_len = (uint32_t)strlen(k);
    h->value = (const uint8_t *)v;
    h->value_len = (int32_t)strlen(v);
}

tail_file *tail_file_new(tail_rt *rt, const char *path, const char *real, const struct stat *st)
{
    if (rt->nfiles == rt->cap_files) {
        size_t cap = rt->cap_files ? rt->cap_files * 2 : 64;
        tail_file **nf = realloc(rt->files, cap * sizeof(*nf));
        if (!nf) {
            return NULL;
        }
        rt->files = nf;
        rt->cap_files = cap;
    }
    tail_file *f = calloc(1, sizeof(*f));
    if (!f) {
        return NULL;
    }
    f->path = strdup(path);
    f->real = strdup(real ? real : path);
    if (!f->path || !f->real) {
        free(f->path);
        free(f->real);
        free(f);
        return NULL;
    }
    f->fd = -1;
    f->bk_off = -1;
    f->dz_done_size = -1;
    f->size_seen = (int64_t)st->st_size;
    f->dev = (uint64_t)st->st_dev;
    f->ino = (uint64_t)st->st_ino;
    tail_pos_source(f->dev, f->ino, f->source, sizeof(f->source));
    set_header(&f->hdrs[0], "host", spool_hostname());
    set_header(&f->hdrs[1], "path", f->path);
    set_header(&f->hdrs[2], "input", spool_instance_name(rt->ins));
    f->last_grow_ms = rt->now_ms;
    f->last_use_ms = rt->now_ms;
    rt->files[rt->nfiles++] = f;
    return f;
}

void tail_file_close(tail_rt *rt, tail_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
        rt->nopen--;
        if (rt->c_open) {
            spool_gauge_set(rt->c_open, rt->nopen);
        }
    }
}

void tail_file_update_back(tail_file *f)
{
    int64_t e = f->sp.emit_off;
    if (f->bk_off == e) {
        return;
    }
    f->bk_off = e;
    if (f->kind == TAIL_KIND_GZIP || f->kind == TAIL_KIND_ZSTD) {
        f->bk_len = 0; /* the file's bytes are not the stream's: only from blocks read */
        return;
    }
    if (f->fd < 0 || tail_back_hash(f->fd, e, &f->bk_hash, &f->bk_len) < 0) {
        f->bk_len = 0; /* unknown: the checks that need it are skipped */
    }
}

/* bk_* from the block just fed (blk holds the file's bytes from blk_off),
 * else from the file. */
static void update_back_from(tail_file *f, const uint8_t *blk, int64_t blk_off, size_t n)
{
    int64_t e = f->sp.emit_off;
    if (f->kind == TAIL_KIND_GZIP || f->kind == TAIL_KIND_ZSTD) {
        /* Positions in a decompressed stream are trusted by identity alone:
         * compressed files are not rewritten in place. */
        f->bk_off = e;
        f->bk_len = 0;
        return;
    }
    int64_t want = e < TAIL_FP_MAX ? e : TAIL_FP_MAX;
    if (f->bk_off != e && e - want >= blk_off && e <= blk_off + (int64_t)n) {
        f->bk_hash = tail_fnv1a(blk + (e - want - blk_off), (size_t)want);
        f->bk_len = (uint32_t)want;
        f->bk_off = e;
        return;
    }
    tail_file_update_back(f);
}

/* Positions f at off (file offset), its splitter empty. */
static void file_seek(tail_file *f, int64_t off)
{
    tail_split_reset(&f->sp, off);
    f->read_off = off;
    if (f->fd >= 0) {
        lseek(f->fd, off, SEEK_SET);
    }
    tail_file_update_back(f);
}

static int64_t fd_size(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* 1 if f's bytes are read through a decompressor. */
static int is_compressed(const tail_file *f)
{
    return f->kind == TAIL_KIND_GZIP || f->kind == TAIL_KIND_ZSTD;
}

/* What a candidate copy holds, in o's terms. */
typedef struct copy_view {
    int64_t k; /* its (decompressed) bytes, at most o's position when compressed */
    int fp_ok; /* fp_hash is over o->fp_len bytes */
    uint64_t fp_hash;
    uint64_t w_hash; /* the min(k, TAIL_FP_MAX) bytes before m = min(k, o's position) */
    uint32_t w_len;
} copy_view;

typedef struct probe {
    uint32_t head_want;
    uint8_t head[TAIL_FP_MAX];
    uint32_t head_len;
    int64_t limit; /* bytes of interest: the window ends here at most */
    int64_t pos;   /* stream offset after the bytes taken */
    uint8_t win[2 * TAIL_FP_MAX];
    size_t win_len;
} probe;

static int probe_take(void *arg, const uint8_t *p, size_t n)
{
    probe *pr = arg;
    if (pr->pos >= pr->limit) {
        return 0;
    }
    if ((int64_t)n > pr->limit - pr->pos) {
        n = (size_t)(pr->limit - pr->pos);
    }
    if (pr->head_len < pr->head_want) {
        size_t h = pr->head_want - pr->head_len < n ? pr->head_want - pr->head_len : n;
        memcpy(pr->head + pr->head_len, p, h);
        pr->head_len += (uint32_t)h;
    }
    size_t keep = n < TAIL_FP_MAX ? n : TAIL_FP_MAX;
    if (pr->win_len + keep > sizeof(pr->win)) {
        size_t drop = pr->win_len + keep - TAIL_FP_MAX;
        drop = drop < pr->win_len ? drop : pr->win_len;
        memmove(pr->win, pr->win + drop, pr->win_len - drop);
        pr->win_len -= drop;
    }
    memcpy(pr->win + pr->win_len, p + n - keep, keep);
    pr->win_len += keep;
    pr->pos += (int64_t)n;
    return 0;
}

/* Fills v for candidate c against o. 0, or -1 if c cannot be read. */
static int view_of(tail_rt *rt, tail_file *c, const tail_file *o, copy_view *v)
{
    int64_t e = o->sp.emit_off;
    memset(v, 0, sizeof(*v));
    if (!is_compressed(c)) {
        v->k = fd_size(c->fd);
        if (v->k < 0) {
            return -1;
        }
        uint32_t len;
        if (v->k >= (int64_t)o->fp_len &&
            tail_fingerprint(c->fd, o->fp_len, &v->fp_hash, &len) == 0 && len == o->fp_len) {
            v->fp_ok = 1;
        }
        int64_t m = v->k < e ? v->k : e;
        return tail_back_hash(c->fd, m, &v->w_hash, &v->w_len) == 0 ? 0 : -1;
    }
    /* Decompressed from its beginning up to o's position (once per look). */
    tail_dz *z = tail_dz_new(c->kind);
    probe *pr = calloc(1, sizeof(*pr));
    if (!z || !pr) {
        tail_dz_free(z);
        free(pr);
        return -1;
    }
    pr->head_want = o->fp_len;
    pr->limit = e;
    int r;
    do {
        r = tail_dz_run(z, c->fd, rt->rbuf, rt->rbuf_cap, rt->rbuf_cap * 16, probe_take, pr);
    } while (r == 1 && pr->pos < pr->limit);
    tail_dz_free(z);
    if (r < 0) {
        free(pr);
        return -1;
    }
    v->k = pr->pos;
    if (pr->head_len == o->fp_len) {
        v->fp_ok = 1;
        v->fp_hash = tail_fnv1a(pr->head, pr->head_len);
    }
    v->w_len = (uint32_t)(v->k < TAIL_FP_MAX ? v->k : TAIL_FP_MAX);
    v->w_hash = tail_fnv1a(pr->win + pr->win_len - v->w_len, v->w_len);
    free(pr);
    return 0;
}

/* 1 if o's bytes before k hash to (w_len, w_hash): o's own bytes while it
 * has them (live), else those of a plain copy of o held for it (it holds
 * o's bytes as they were: checked against o when it was linked). */
static int prefix_of(tail_rt *rt, tail_file *o, int live, int64_t k, uint32_t w_len,
                     uint64_t w_hash)
{
    uint64_t h;
    uint32_t len;
    if (live && tail_back_hash(o->fd, k, &h, &len) == 0 && len == w_len && h == w_hash) {
        return 1;
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *x = rt->files[i];
        if (x->copy_of == o && x->fd >= 0 && !is_compressed(x) &&
            tail_back_hash(x->fd, k, &h, &len) == 0 && len == w_len && h == w_hash) {
            return 1;
        }
    }
    return 0;
}

/* 1 if a plain copy of o is held for it (it has o's old bytes). */
static int has_held_copy(tail_rt *rt, const tail_file *o)
{
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *x = rt->files[i];
        if (x->copy_of == o && x->fd >= 0 && !is_compressed(x)) {
            return 1;
        }
    }
    return 0;
}

/*
 * 1 if c can be a copy of o (or, compressed, the compression of one): the
 * same beginning, and either the same bytes before o's position (a
 * complete copy), or the same bytes as o at c's end (a copy being made, or
 * a .gz being written: c is a prefix of o), compared with o's bytes while
 * o has them, else with a plain copy held for o (logrotate's .gz of it,
 * seen partly written after o was truncated). A truncated o is compared
 * with what was recorded of it.
 */
static int copy_consistent(tail_rt *rt, tail_file *c, tail_file *o)
{
    if (c->fd < 0 || o->fp_len == 0 || o->sp.emit_off <= 0 || is_compressed(o)) {
        return 0;
    }
    copy_view v;
    if (view_of(rt, c, o, &v) < 0 || v.k <= 0) {
        return 0;
    }
    int live = !o->trunc_pending && o->fd >= 0;
    int64_t e = o->sp.emit_off;
    if (v.fp_ok ? v.fp_hash != o->fp_hash
                : v.k >= (int64_t)o->fp_len || (!live && !has_held_copy(rt, o))) {
        return 0;
    }
    if (v.k < e) {
        /* a prefix of o so far (the bytes before its end are o's): if the
         * beginning was too short to compare, the window covers all of it */
        return prefix_of(rt, o, live, v.k, v.w_len, v.w_hash);
    }
    if (live) {
        tail_file_update_back(o);
    }
    return o->bk_off == e && o->bk_len > 0 && v.w_len == o->bk_len && v.w_hash == o->bk_hash;
}

/* `orig` is truncated or gone: its copies continue from where it was read
 * (what it held past that point is in them), before it is read again.
 * Returns the number of copies continued. */
static int resolve_copies(tail_rt *rt, tail_file *orig)
{
    /* One copy continues (an uncompressed one if there is: logrotate's
     * compress makes a .gz of the copy and deletes the copy); the others are
     * copies of that one. */
    tail_file *first = NULL;
    for (int plain = 1; plain >= 0 && !first; plain--) {
        for (size_t i = 0; i < rt->nfiles && !first; i++) {
            tail_file *c = rt->files[i];
            if (c->copy_of != orig || is_compressed(c) == plain) {
                continue;
            }
            c->copy_of = NULL;
            c->dirty = 1;
            if (copy_consistent(rt, c, orig)) {
                first = c;
            } else {
                spool_log_debug(rt->ins, "%s: not a copy of %s after all; reading it", c->path,
                                orig->path);
            }
        }
    }
    if (!first) {
        return 0;
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        if (rt->files[i]->copy_of == orig) {
            rt->files[i]->copy_of = first;
        }
    }
    /* Its old content is now read from `first` only: a copy found later (the
     * .gz logrotate makes of `first`) is compared with `first`, not linked to
     * orig and continued from orig's position a second time. */
    orig->continued = orig->trunc_pending;
    int64_t k = is_compressed(first) ? INT64_MAX : fd_size(first->fd);
    int64_t off = orig->sp.emit_off < k ? orig->sp.emit_off : k;
    file_seek(first, off);
    if (!is_compressed(first) && first->fp_len < TAIL_FP_MAX) {
        /* Followed since it was created empty (logrotate's copy), maybe
         * continued at its end with nothing to read: its beginning is what
         * a copy of it (its .gz) is told by, and its position's identity. */
        tail_fingerprint(first->fd, TAIL_FP_MAX, &first->fp_hash, &first->fp_len);
    }
    first->prio = 1;
    tail_file_touch(rt, first);
    if (orig->state == TAIL_ACTIVE) {
        orig->after = first; /* its new content comes after the copy's tail */
        orig->after_since_ms = rt->now_ms;
    }
    spool_log_info(rt->ins,
                   "%s: a copy of %s (copytruncate); continuing it from offset %" PRId64
                   ", where %s was read",
                   first->path, orig->path, off, orig->path);
    return 1;
}

/* f is new (read from 0) and not empty: a copy of a followed file? 1 if
 * linked, 0 if not, -1 if it cannot be told yet (compressed, being written). */
static int link_copy(tail_rt *rt, tail_file *f)
{
    probe *head = NULL;
    if (is_compressed(f)) {
        /* its decompressed beginning, once: most candidates differ there */
        tail_dz *z = tail_dz_new(f->kind);
        head = calloc(1, sizeof(*head));
        if (z && head) {
            head->head_want = TAIL_FP_MAX;
            head->limit = TAIL_FP_MAX;
        }
        int r = z && head
                    ? tail_dz_run(z, f->fd, rt->rbuf, rt->rbuf_cap, TAIL_FP_MAX, probe_take, head)
                    : -ENOMEM;
        if (r == 0 && head->head_len < TAIL_FP_MAX && !tail_dz_complete(z)) {
            r = -EAGAIN; /* still being compressed: too little to compare yet */
        }
        tail_dz_free(z);
        if (r < 0) {
            free(head);
            return r == -EAGAIN ? -1 : 0;
        }
    }
    /* A plain f's beginning, read once: o's whose fingerprint differs are
     * passed over without reading f again (10,000 new files would otherwise
     * cost 10,000 x 10,000 stat+pread pairs). Shorter than o's fingerprint,
     * f may be a copy being made: copy_consistent looks. */
    uint64_t pre[TAIL_FP_MAX + 1];
    uint32_t pre_len = 0;
    int have_pre = !head && tail_head_hashes(f->fd, pre, &pre_len) == 0;
    int linked = 0;
    for (size_t i = 0; i < rt->nfiles && !linked; i++) {
        tail_file *o = rt->files[i];
        if (o == f || o->copy_of || o->copy_check || o->continued || o->kind == TAIL_KIND_SKIP ||
            o->fp_len == 0 || o->sp.emit_off <= 0 ||
            (head &&
             (head->head_len < o->fp_len || tail_fnv1a(head->head, o->fp_len) != o->fp_hash)) ||
            (have_pre && pre_len >= o->fp_len && pre[o->fp_len] != o->fp_hash) ||
            !copy_consistent(rt, f, o)) {
            continue;
        }
        linked = 1;
        f->copy_of = o;
        spool_log_debug(rt->ins,
                        "%s: same content as %s (read up to offset %" PRId64 "): a "
                        "copy, held until %s is truncated",
                        f->path, o->path, o->sp.emit_off, o->path);
        if (o->trunc_pending) {
            resolve_copies(rt, o); /* its old content is gone: continue it here now */
        }
    }
    free(head);
    return linked;
}

static void file_kind(tail_rt *rt, tail_file *f);

int tail_file_check_copy(tail_rt *rt, tail_file *f)
{
    if (!f->copy_check || fd_size(f->fd) <= 0) {
        return 0;
    }
    if (f->kind == TAIL_KIND_UNKNOWN) {
        file_kind(rt, f);
    }
    if (f->kind == TAIL_KIND_UNKNOWN) {
        return 0; /* too short to tell yet */
    }
    if (f->kind == TAIL_KIND_SKIP) {
        f->copy_check = 0;
        return 0;
    }
    f->copy_check = 0;
    int r = link_copy(rt, f);
    if (r < 0) {
        f->copy_check = 1; /* not known yet */
    }
    return r;
}

/* Before reading f: a new file may be a copy (held); a held copy that grew
 * is checked again. Returns 1 if f is not to be read now, 2 if not yet but
 * it is to be looked at again soon (being written), 0 to read it. */
static int copy_hold(tail_rt *rt, tail_file *f)
{
    if (f->copy_check) {
        if (fd_size(f->fd) <= 0) {
            return 1; /* empty: nothing to tell it by (nor to read) */
        }
        f->copy_check = 0;
        int r = link_copy(rt, f);
        if (r < 0) {
            /* Being compressed: held and looked at again next cycle (its last
             * writes may come without an event), at most rotate_wait. */
            if (!f->undecided_ms) {
                f->undecided_ms = rt->now_ms;
            }
            if (rt->now_ms - f->undecided_ms < rt->ctx->rotate_wait_ms) {
                f->copy_check = 1;
                return 2;
            }
            return 0;
        }
        return r && f->copy_of;
    }
    if (f->copy_of) {
        tail_file *o = f->copy_of;
        if (is_compressed(f) || copy_consistent(rt, f, o)) {
            return 1; /* (a compressed one is compared once: it is costly) */
        }
        f->copy_of = NULL;
        spool_log_debug(rt->ins, "%s: no longer the same as %s: not a copy, reading it", f->path,
                        o->path);
    }
    return 0;
}

int tail_file_must_wait(tail_rt *rt, tail_file *f)
{
    if (!f->after) {
        return 0;
    }
    /* Bounded: two writers appending to both files at once have no order to keep. */
    if (rt->now_ms - f->after_since_ms > rt->ctx->rotate_wait_ms + TAIL_ORDER_WAIT_MS) {
        f->after = NULL;
        return 0;
    }
    /* Any file before it (an empty one between them waits for nothing). */
    int depth = 0;
    for (tail_file *x = f->after; x && x != f && depth < 64; x = x->after, depth++) {
        struct stat st;
        if (x->copy_of || x->trunc_pending || x->fd < 0) {
            continue;
        }
        if (is_compressed(x) ? !x->copy_check && !x->eof
                             : x->kind <= TAIL_KIND_TEXT && fstat(x->fd, &st) == 0 &&
                                   (int64_t)st.st_size > x->read_off) {
            /* (compressed: not read to the end of its input yet; a .gz that
             * continues a truncated file is read before that file's new lines) */
            return 1;
        }
    }
    return 0;
}

void tail_file_free(tail_rt *rt, tail_file *f, int forget)
{
    if (!f) {
        return;
    }
    for (size_t i = 0; i < rt->ntouched; i++) {
        if (rt->touched[i] == f) {
            rt->touched[i] = rt->touched[--rt->ntouched];
            break;
        }
    }
    if (forget) {
        /* Finished for good: its copies continue from where it was read
         * (not when the input stops: the positions say it all). */
        tail_batch_forget(rt, f->source);
        resolve_copies(rt, f);
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        if (rt->files[i]->after == f) {
            rt->files[i]->after = NULL;
        }
        if (rt->files[i]->copy_of == f) {
            rt->files[i]->copy_of = NULL; /* the input stops: no pointer to a freed file */
        }
    }
    tail_file_close(rt, f);
    for (size_t i = 0; i < rt->nfiles; i++) {
        if (rt->files[i] == f) {
            memmove(&rt->files[i], &rt->files[i + 1], (rt->nfiles - i - 1) * sizeof(f));
            rt->nfiles--;
            break;
        }
    }
    tail_split_free(&f->sp);
    tail_dz_free(f->dz);
    free(f->path);
    free(f->real);
    free(f->renamed_from);
    free(f);
}

int tail_file_touch(tail_rt *rt, tail_file *f)
{
    if (f->in_batch) {
        return 0;
    }
    if (rt->ntouched == rt->cap_touched) {
        size_t cap = rt->cap_touched ? rt->cap_touched * 2 : 64;
        tail_file **t = realloc(rt->touched, cap * sizeof(*t));
        if (!t) {
            return -ENOMEM;
        }
        rt->touched = t;
        rt->cap_touched = cap;
    }
    rt->touched[rt->ntouched++] = f;
    f->in_batch = 1;
    return 0;
}

/* Closes the least recently used active file other than `keep`. */
static void evict_one(tail_rt *rt, const tail_file *keep)
{
    tail_file *lru = NULL;
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        if (f == keep || f->fd < 0 || f->state != TAIL_ACTIVE) {
            continue;
        }
        if (!lru || f->last_use_ms < lru->last_use_ms) {
            lru = f;
        }
    }
    if (lru) {
        tail_file_close(rt, lru);
    }
}

/*
 * A copy of f that the globs do not match (copytruncate's app.log.1): the
 * bytes f had past its position are there. Returns how many, or -1 if no
 * such copy is found next to f (name: f's name and a suffix).
 */
static int64_t unread_in_copy(const tail_file *f, char *name, size_t cap)
{
    if (f->fp_len == 0 || f->bk_len == 0 || f->bk_off != f->sp.emit_off) {
        return -1;
    }
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", f->real);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        return -1;
    }
    *slash = '\0';
    const char *base = slash + 1;
    size_t bl = strlen(base);
    DIR *d = opendir(dir[0] ? dir : "/");
    if (!d) {
        return -1;
    }
    int64_t best = -1;
    int tried = 0;
    struct dirent *de;
    while (best < 0 && tried < 64 && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, base, bl) != 0 || de->d_name[bl] == '\0') {
            continue;
        }
        tried++;
        if (strlen(dir) + strlen(de->d_name) + 2 > sizeof(path)) {
            continue;
        }
        memcpy(path, dir, strlen(dir));
        path[strlen(dir)] = '/';
        memcpy(path + strlen(dir) + 1, de->d_name, strlen(de->d_name) + 1);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
            continue;
        }
        struct stat st;
        uint64_t h;
        uint32_t len;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_ino != f->ino &&
            (int64_t)st.st_size >= f->sp.emit_off &&
            tail_fingerprint(fd, f->fp_len, &h, &len) == 0 && len == f->fp_len && h == f->fp_hash &&
            tail_back_hash(fd, f->sp.emit_off, &h, &len) == 0 && len == f->bk_len &&
            h == f->bk_hash) {
            best = (int64_t)st.st_size - f->sp.emit_off;
            snprintf(name, cap, "%s", path);
        }
        close(fd);
    }
    closedir(d);
    return best;
}

/* Restarts f at offset 0 (truncated, or rewritten while closed). */
static int file_restart(tail_rt *rt, tail_file *f, const char *why)
{
    emit_arg a = {rt, f};
    int64_t at = f->sp.emit_off;
    /* A copy continues it already (found after the truncation was seen), or
     * one found now does: its old bytes past `at`, the incomplete line read
     * there too, come from the copy. */
    if (!f->continued && resolve_copies(rt, f) == 0) {
        /* No copy continues it: what it held past its position is lost,
         * the incomplete line read last too. It cannot be told from the
         * first part of a write() read while in progress (the rest written,
         * then the file copied and truncated before spool looked again): it
         * is dropped with the skipped bytes, never emitted as a torn record.
         * (A last line without its newline goes out by flush_partial_after
         * once it has been at the end of the file that long.) A pending
         * multiline record is made of whole lines: it goes out. */
        char copy[PATH_MAX];
        int64_t lost = unread_in_copy(f, copy, sizeof(copy));
        rt->now_wall_ms = spool_now_ms();
        int r = tail_split_flush_record(&f->sp, &rt->split, file_emit, &a);
        if (r < 0) {
            return r;
        }
        if (lost > 0) {
            spool_log_warn(rt->ins,
                           "%s: %s at offset %" PRId64 "; %" PRId64 " bytes written "
                           "before that were not read yet and are skipped (they are in its "
                           "rotated copy %s): add the rotated copies to `paths` (e.g. %s*) and "
                           "spool continues them from the copy",
                           f->path, why, at, lost, copy, f->path);
        } else if (lost < 0 && f->size_seen > at) {
            spool_log_warn(rt->ins,
                           "%s: %s at offset %" PRId64 "; at least %" PRId64 " bytes "
                           "written before that were not read yet and are skipped: if it is "
                           "rotated by copytruncate, add the rotated copies to `paths` (e.g. "
                           "%s*) and spool continues them from the copy",
                           f->path, why, at, f->size_seen - at, f->path);
        } else {
            spool_log_info(rt->ins,
                           "%s: %s at offset %" PRId64 ", reading it again from the "
                           "beginning",
                           f->path, why, at);
        }
    }
    rt->truncations++;
    if (rt->c_trunc) {
        spool_counter_add(rt->c_trunc, 1);
    }
    tail_split_reset(&f->sp, 0);
    f->continued = 0;
    f->read_off = 0;
    f->fp_len = 0;
    f->fp_hash = tail_fnv1a(NULL, 0);
    f->bk_off = -1;
    f->size_seen = 0;
    f->kind = TAIL_KIND_UNKNOWN;
    if (f->fd >= 0 && lseek(f->fd, 0, SEEK_SET) < 0) {
        return -errno;
    }
    tail_file_update_back(f);
    return tail_file_touch(rt, f);
}

/* Truncation seen: f restarts after the next scan, which finds its copy if
 * the globs match it (so the copy's tail is read before f's new content). */
static void truncation_seen(tail_rt *rt, tail_file *f, const char *why)
{
    if (!f->trunc_pending) {
        f->trunc_pending = 1;
        f->trunc_why = why;
        f->trunc_ms = rt->now_ms;
        rt->need_rescan = 1;
    }
}

int tail_file_restart_pending(tail_rt *rt, tail_file *f)
{
    if (!f->trunc_pending) {
        return 0;
    }
    int r = file_restart(rt, f, f->trunc_why);
    if (r == 0) {
        f->trunc_pending = 0;
    }
    return r;
}

int tail_file_open(tail_rt *rt, tail_file *f)
{
    if (f->fd >= 0) {
        return 0;
    }
    if (f->state != TAIL_ACTIVE) {
        return -ENOENT; /* a rotated file cannot be found by its path again */
    }
    while (rt->nopen >= rt->ctx->max_open_files) {
        int before = rt->nopen;
        evict_one(rt, f);
        if (rt->nopen == before) {
            return -EMFILE;
        }
    }
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_dev != f->dev || (uint64_t)st.st_ino != f->ino) {
        close(fd);
        return -ESTALE; /* another file is at the path now: the next scan sorts it out */
    }
    f->fd = fd;
    rt->nopen++;
    if (rt->c_open) {
        spool_gauge_set(rt->c_open, rt->nopen);
    }
    if (f->fp_len > 0) {
        uint64_t h;
        uint32_t len;
        if (tail_fingerprint(fd, f->fp_len, &h, &len) == 0 &&
            (len != f->fp_len || h != f->fp_hash)) {
            truncation_seen(rt, f, "beginning of the file changed");
            return 0;
        }
    }
    if (f->fp_len < TAIL_FP_MAX) {
        tail_fingerprint(fd, TAIL_FP_MAX, &f->fp_hash, &f->fp_len);
    }
    if (lseek(fd, f->read_off, SEEK_SET) < 0) {
        return -errno;
    }
    return 0;
}

/* Keeps the fingerprint growing with a young file. */
static void update_fingerprint(tail_file *f)
{
    if (f->fp_len >= TAIL_FP_MAX || f->read_off <= (int64_t)f->fp_len) {
        return;
    }
    uint64_t h;
    uint32_t len;
    if (tail_fingerprint(f->fd, TAIL_FP_MAX, &h, &len) == 0) {
        f->fp_hash = h;
        f->fp_len = len;
    }
}

static void note_long_lines(tail_rt *rt, tail_file *f, uint64_t before)
{
    uint64_t n = f->sp.long_lines - before;
    if (n == 0) {
        return;
    }
    if (rt->c_long) {
        spool_counter_add(rt->c_long, n);
    }
    if (!f->warned_long) {
        f->warned_long = 1;
        spool_log_warn(rt->ins,
                       "%s: line longer than max_line_bytes (%" PRId64 "), %s "
                       "(warned once per file)",
                       f->path, rt->ctx->max_line_bytes,
                       rt->split.truncate ? "truncated" : "split");
    }
}

/* 0 if the first fp_len bytes of the file are no longer the fingerprinted ones. */
static int same_beginning(tail_file *f)
{
    uint64_t h;
    uint32_t len;
    if (tail_fingerprint(f->fd, f->fp_len, &h, &len) < 0) {
        return 1; /* cannot tell: trust the size checks */
    }
    return len == f->fp_len && h == f->fp_hash;
}

/* 0 if the bytes before the position are no longer the ones read there. */
static int same_back(tail_file *f, int64_t size)
{
    if (f->bk_len == 0 || f->bk_off != f->sp.emit_off || f->bk_off > size) {
        return 1;
    }
    uint64_t h;
    uint32_t len;
    if (tail_back_hash(f->fd, f->bk_off, &h, &len) < 0) {
        return 1;
    }
    return len == f->bk_len && h == f->bk_hash;
}

/* A compressed format's name if p (n bytes, the file's beginning) starts
 * with its magic; *partial = 1 if p is too short to tell. */
static const char *compressed_magic(const uint8_t *p, size_t n, int *partial)
{
    static const struct {
        const char *name;
        uint8_t m[6];
        size_t len;
    } magic[] = {
        {"gzip", {0x1f, 0x8b}, 2},
        {"bzip2", {'B', 'Z', 'h'}, 3},
        {"xz", {0xfd, '7', 'z', 'X', 'Z', 0x00}, 6},
        {"zstd", {0x28, 0xb5, 0x2f, 0xfd}, 4},
    };
    *partial = 0;
    for (size_t i = 0; i < sizeof(magic) / sizeof(magic[0]); i++) {
        size_t k = n < magic[i].len ? n : magic[i].len;
        if (memcmp(p, magic[i].m, k) != 0) {
            continue;
        }
        if (k == magic[i].len) {
            return magic[i].name;
        }
        *partial = 1;
    }
    return NULL;
}

int tail_compressed_fd(int fd)
{
    uint8_t b[6];
    int partial;
    ssize_t n = pread(fd, b, sizeof(b), 0);
    return n > 0 && compressed_magic(b, (size_t)n, &partial) != NULL;
}

/* Looks at f's first bytes: text, or compressed (read decompressed, or
 * skipped; said once). */
static void file_kind(tail_rt *rt, tail_file *f)
{
    uint8_t b[6];
    ssize_t n = pread(f->fd, b, sizeof(b), 0);
    if (n <= 0) {
        return; /* empty: not known yet */
    }
    int partial;
    const char *what = compressed_magic(b, (size_t)n, &partial);
    if (!what) {
        if (!partial) {
            f->kind = TAIL_KIND_TEXT;
        }
        return;
    }
    int gz = strcmp(what, "gzip") == 0, zst = strcmp(what, "zstd") == 0;
    if (rt->ctx->decompress && (gz || zst)) {
        f->kind = gz ? TAIL_KIND_GZIP : TAIL_KIND_ZSTD;
        spool_log_info(rt->ins, "%s: %s-compressed (by its first bytes), read decompressed",
                       f->path, what);
        return;
    }
    f->kind = TAIL_KIND_SKIP;
    if (rt->ctx->decompress) {
        spool_log_info(rt->ins,
                       "%s: %s-compressed (by its first bytes), not read: spool reads "
                       "gzip and zstd only (no %s library); `exclude` it to silence this",
                       f->path, what, what);
    } else {
        spool_log_info(rt->ins,
                       "%s: %s-compressed (by its first bytes), not read: compressed "
                       "files are skipped (`decompress: true` reads gzip and zstd); `exclude` "
                       "them to silence this",
                       f->path, what);
    }
}

typedef struct dz_arg {
    tail_rt *rt;
    tail_file *f;
} dz_arg;

/* A block of decompressed bytes: what lies before the position is skipped
 * (a restart decompresses from the beginning), the rest is fed. */
static int dz_block(void *arg, const uint8_t *p, size_t n)
{
    dz_arg *d = arg;
    tail_rt *rt = d->rt;
    tail_file *f = d->f;
    int64_t start = tail_dz_out(f->dz) - (int64_t)n;
    if (start + (int64_t)n <= f->read_off) {
        return 0;
    }
    size_t skip = f->read_off > start ? (size_t)(f->read_off - start) : 0;
    p += skip;
    n -= skip;
    start += (int64_t)skip;
    emit_arg a = {rt, f};
    rt->now_wall_ms = spool_now_ms();
    int64_t emit_before = f->sp.emit_off;
    uint64_t long_before = f->sp.long_lines;
    int r = tail_split_feed(&f->sp, &rt->split, p, n, rt->now_ms, file_emit, &a);
    f->read_off += (int64_t)n;
    if (r < 0) {
        return r;
    }
    f->last_grow_ms = rt->now_ms;
    update_back_from(f, p, start, n);
    note_long_lines(rt, f, long_before);
    if (f->sp.emit_off != emit_before && (r = tail_file_touch(rt, f)) < 0) {
        return r;
    }
    if (rt->batch && tail_batch_full(rt->batch)) {
        return tail_batch_submit(rt);
    }
    return 0;
}

/* Reads a compressed file decompressed; like tail_file_read. */
static int read_compressed(tail_rt *rt, tail_file *f, size_t budget)
{
    if (!f->dz && f->dz_done_size >= 0 && fd_size(f->fd) == f->dz_done_size) {
        f->eof = 1;
        return 0; /* read to its end, unchanged since */
    }
    if (!f->dz && !(f->dz = tail_dz_new(f->kind))) {
        spool_log_error(rt->ins, "%s: out of memory for its decompressor", f->path);
        return 0;
    }
    dz_arg d = {rt, f};
    f->eof = 0;
    int r = tail_dz_run(f->dz, f->fd, rt->rbuf, rt->rbuf_cap, budget, dz_block, &d);
    if (r >= 0) {
        if (r == 0) {
            f->eof = 1;
            f->prio = 0;
            if (tail_dz_complete(f->dz)) {
                /* Complete: its decompressor's memory goes (should it grow,
                 * it is decompressed again up to read_off). */
                tail_dz_free(f->dz);
                f->dz = NULL;
                f->dz_done_size = fd_size(f->fd);
            }
        }
        return r;
    }
    if (r == -ESHUTDOWN) {
        return r;
    }
    if (r == -EBADMSG) {
        spool_log_warn(rt->ins,
                       "%s: corrupt compressed data after %" PRId64 " decompressed "
                       "bytes; the rest of the file is skipped",
                       f->path, f->read_off);
        f->kind = TAIL_KIND_SKIP;
        return 0;
    }
    /* The batch refused a record (memory), or a read error: start over at
     * the last emitted record, decompressing again from the beginning. */
    spool_log_error(rt->ins, "%s: %s; reading again from decompressed offset %" PRId64, f->path,
                    strerror(-r), f->sp.emit_off);
    tail_dz_free(f->dz);
    f->dz = NULL;
    int64_t back = f->sp.emit_off;
    tail_split_reset(&f->sp, back);
    f->read_off = back;
    return 0;
}

int tail_file_read(tail_rt *rt, tail_file *f, size_t budget)
{
    int r;
    if (f->kind == TAIL_KIND_SKIP) {
        f->eof = 1; /* compressed, not read: nothing to wait for (finished when rotated) */
        return 0;
    }
    if (f->trunc_pending || tail_file_must_wait(rt, f)) {
        return 1; /* after the scan; after its predecessor */
    }
    if (f->fd < 0) {
        r = tail_file_open(rt, f);
        if (r < 0) {
            if (r != -ENOENT && r != -ESTALE) {
                spool_log_warn(rt->ins, "%s: cannot open: %s", f->path, strerror(-r));
            }
            return 0;
        }
        if (f->trunc_pending) {
            return 1;
        }
    }
    if (f->kind == TAIL_KIND_UNKNOWN) {
        file_kind(rt, f);
        if (f->kind == TAIL_KIND_UNKNOWN) {
            /* Empty (or too short to tell): at its end for now. A rotated
             * empty file (logrotate's create, nobody wrote to it) is finished
             * once quiet like any other; else its position would stay, and a
             * restart would take it for the file younger rotated ones follow. */
            f->eof = 1;
            return 0;
        }
        if (f->kind == TAIL_KIND_SKIP) {
            f->eof = 1;
            return 0;
        }
    }
    if (f->copy_check || f->copy_of) {
        r = copy_hold(rt, f);
        if (r) {
            return r == 2; /* a copy held until its original is truncated; or not known yet */
        }
    }
    if (is_compressed(f)) {
        f->last_use_ms = rt->now_ms;
        return read_compressed(rt, f, budget);
    }
    f->last_use_ms = rt->now_ms;
    struct stat st;
    if (fstat(f->fd, &st) == 0) {
        if ((int64_t)st.st_size > f->size_seen) {
            f->size_seen = (int64_t)st.st_size;
        }
        if (st.st_size < f->read_off) {
            truncation_seen(rt, f, "file truncated");
        } else if (f->fp_len > 0 && f->read_off > 0 && !same_beginning(f)) {
            /* Truncated and rewritten past read_off between two looks (copytruncate
             * under a fast writer): the beginning of the file is no longer the same. */
            truncation_seen(rt, f, "file truncated and rewritten");
        } else if (!same_back(f, (int64_t)st.st_size)) {
            /* The same beginning (a constant header) but not the same bytes before
             * the position: truncated and rewritten past it. */
            truncation_seen(rt, f, "file truncated and rewritten past the position");
        }
        if (f->trunc_pending) {
            return 1;
        }
    }
    emit_arg a = {rt, f};
    size_t total = 0;
    f->eof = 0;
    for (;;) {
        ssize_t n = read(f->fd, rt->rbuf, rt->rbuf_cap);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            spool_log_error(rt->ins, "%s: read failed at offset %" PRId64 ": %s", f->path,
                            f->read_off, strerror(errno));
            spool_count(rt->ins, SPOOL_COUNT_ERRORS, 1);
            f->eof = 1;
            return 0;
        }
        if (n == 0) {
            f->eof = 1;
            f->prio = 0;
            return 0;
        }
        if (f->fp_len > 0 && !same_beginning(f)) {
            /* Truncated while this block was read: it may hold the new
             * content at the old offset. Drop it; restart after the scan. */
            truncation_seen(rt, f, "file truncated and rewritten while read");
            return 1;
        }
        if (f->after && tail_file_must_wait(rt, f)) {
            /* Its predecessor grew while this block was read: the block may
             * hold lines written after those. Read that one first. */
            lseek(f->fd, f->read_off, SEEK_SET);
            return 1;
        }
        rt->now_wall_ms = spool_now_ms();
        int64_t emit_before = f->sp.emit_off;
        int64_t blk_off = f->read_off;
        uint64_t long_before = f->sp.long_lines;
        r = tail_split_feed(&f->sp, &rt->split, rt->rbuf, (size_t)n, rt->now_ms, file_emit, &a);
        f->read_off += n;
        if (f->read_off > f->size_seen) {
            /* it grew after the fstat: what was read was on disk (the bytes
             * a truncation skips are counted from here) */
            f->size_seen = f->read_off;
        }
        if (r < 0) {
            /* The batch refused a record (memory): give up this block, read it again. */
            spool_log_error(rt->ins, "%s: cannot queue a record: %s", f->path, strerror(-r));
            int64_t back = f->sp.emit_off;
            tail_split_reset(&f->sp, back);
            f->read_off = back;
            lseek(f->fd, back, SEEK_SET);
            return 0;
        }
        f->last_grow_ms = rt->now_ms;
        update_fingerprint(f);
        update_back_from(f, rt->rbuf, blk_off, (size_t)n);
        note_long_lines(rt, f, long_before);
        if (f->sp.emit_off != emit_before) {
            if ((r = tail_file_touch(rt, f)) < 0) {
                return r;
            }
        }
        if (rt->batch && tail_batch_full(rt->batch)) {
            if ((r = tail_batch_submit(rt)) < 0) {
                return r;
            }
        }
        total += (size_t)n;
        if ((size_t)n < rt->rbuf_cap) {
            f->eof = 1; /* a short read: at the end for now; an event says when it grows */
            f->prio = 0;
            return 0;
        }
        if (total >= budget) {
            return 1;
        }
    }
}

int tail_file_timers(tail_rt *rt, tail_file *f)
{
    emit_arg a = {rt, f};
    int64_t emit_before = f->sp.emit_off;
    int r = 0;
    if (f->trunc_pending) {
        /* Its incomplete line is in the copy that continues it (or a torn
         * piece): the restart decides, never a timer. */
        return 0;
    }
    if (f->sp.carry_since_ms && f->eof &&
        rt->now_ms - f->sp.carry_since_ms >= rt->ctx->flush_partial_after_ms) {
        rt->now_wall_ms = spool_now_ms();
        r = tail_split_flush_partial(&f->sp, &rt->split, rt->now_ms, file_emit, &a);
    }
    if (r == 0 && f->sp.rec_lines && f->eof &&
        rt->now_ms - f->sp.rec_since_ms >= rt->ctx->ml_timeout_ms) {
        rt->now_wall_ms = spool_now_ms();
        r = tail_split_flush_record(&f->sp, &rt->split, file_emit, &a);
    }
    if (r == 0 && f->sp.emit_off != emit_before) {
        tail_file_update_back(f);
        r = tail_file_touch(rt, f);
    }
    return r;
}

int64_t tail_file_next_timer(const tail_rt *rt, const tail_file *f)
{
    int64_t t = INT64_MAX;
    if (f->sp.carry_since_ms) {
        int64_t d = f->sp.carry_since_ms + rt->ctx->flush_partial_after_ms;
        t = d < t ? d : t;
    }
    if (f->sp.rec_lines) {
        int64_t d = f->sp.rec_since_ms + rt->ctx->ml_timeout_ms;
        t = d < t ? d : t;
    }
    if (f->state == TAIL_ROTATED) {
        int64_t d = f->last_grow_ms + rt->ctx->rotate_wait_ms;
        t = d < t ? d : t;
    }
    return t;
}

/* Emits everything f holds (file closing for good). */
int tail_file_finish(tail_rt *rt, tail_file *f)
{
    emit_arg a = {rt, f};
    rt->now_wall_ms = spool_now_ms();
    int r = tail_split_flush_partial(&f->sp, &rt->split, rt->now_ms, file_emit, &a);
    if (r == 0) {
        r = tail_split_flush_record(&f->sp, &rt->split, file_emit, &a);
    }
    return r;
}
