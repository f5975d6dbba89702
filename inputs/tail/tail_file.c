/*
 * tail_file.c: one tailed file: identity, open/close, reading, truncation.
 *
 * A file is read with read() in blocks of `read_buffer` bytes into the
 * input's one read buffer and fed to its splitter, which appends complete
 * records to the input's current batch (one copy: into the batch). The
 * file's position (splitter emit_off: the end of its last emitted record)
 * goes with the batch that holds those records, so the log and the
 * position store always agree.
 *
 * Invariants: f->read_off == f->sp.off; while open, the fd's file offset is
 * read_off. An open fd is always the file of (dev, ino): a reopen by path
 * checks the identity and the fingerprint. A size below read_off means the
 * file was truncated (copytruncate, `> file`): reading restarts at 0 after
 * the partial line held so far is emitted.
 *
 * Not done here: deciding which files exist, rotation (tail_scan.c), the
 * loop and the batch (tail.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tail.h"

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
        tail_batch_forget(rt, f->source);
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
    free(f->path);
    free(f->real);
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

/* Restarts f at offset 0 (truncated, or rewritten while closed). */
static int file_restart(tail_rt *rt, tail_file *f, const char *why)
{
    emit_arg a = {rt, f};
    rt->now_wall_ms = spool_now_ms();
    int r = tail_split_flush_partial(&f->sp, &rt->split, rt->now_ms, file_emit, &a);
    if (r == 0) {
        r = tail_split_flush_record(&f->sp, &rt->split, file_emit, &a);
    }
    if (r < 0) {
        return r;
    }
    spool_log_info(rt->ins, "%s: %s at offset %" PRId64 ", reading it again from the beginning",
                   f->path, why, f->read_off);
    rt->truncations++;
    if (rt->c_trunc) {
        spool_counter_add(rt->c_trunc, 1);
    }
    tail_split_reset(&f->sp, 0);
    f->read_off = 0;
    f->fp_len = 0;
    f->fp_hash = tail_fnv1a(NULL, 0);
    if (f->fd >= 0 && lseek(f->fd, 0, SEEK_SET) < 0) {
        return -errno;
    }
    return tail_file_touch(rt, f);
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
            return file_restart(rt, f, "beginning of the file changed");
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
        spool_log_warn(rt->ins, "%s: line longer than max_line_bytes (%" PRId64 "), %s "
                       "(warned once per file)", f->path, rt->ctx->max_line_bytes,
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

int tail_file_read(tail_rt *rt, tail_file *f, size_t budget)
{
    int r;
    if (f->fd < 0) {
        r = tail_file_open(rt, f);
        if (r < 0) {
            if (r != -ENOENT && r != -ESTALE) {
                spool_log_warn(rt->ins, "%s: cannot open: %s", f->path, strerror(-r));
            }
            return 0;
        }
    }
    f->last_use_ms = rt->now_ms;
    struct stat st;
    if (fstat(f->fd, &st) == 0 && st.st_size < f->read_off) {
        r = file_restart(rt, f, "file truncated");
        if (r < 0) {
            return r;
        }
    } else if (f->fp_len > 0 && f->read_off > 0 && !same_beginning(f)) {
        /* Truncated and rewritten past read_off between two looks (copytruncate
         * under a fast writer): the beginning of the file is no longer the same. */
        r = file_restart(rt, f, "file truncated and rewritten");
        if (r < 0) {
            return r;
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
            return 0;
        }
        if (f->fp_len > 0 && !same_beginning(f)) {
            /* Truncated while this block was read: it may hold the new
             * content at the old offset. Drop it and start again at 0 (a
             * duplicate would be worse than the copytruncate loss). */
            r = file_restart(rt, f, "file truncated and rewritten while read");
            if (r < 0) {
                return r;
            }
            continue;
        }
        rt->now_wall_ms = spool_now_ms();
        int64_t emit_before = f->sp.emit_off;
        uint64_t long_before = f->sp.long_lines;
        r = tail_split_feed(&f->sp, &rt->split, rt->rbuf, (size_t)n, rt->now_ms, file_emit, &a);
        f->read_off += n;
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
        note_long_lines(rt, f, long_before);
        if (f->sp.emit_off != emit_before) {
            if ((r = tail_file_touch(rt, f)) < 0) {
                return r;
            }
        }
        if (rt->batch && (spool_batch_bytes(rt->batch) >= (1u << 20) ||
                          spool_batch_count(rt->batch) >= 10000)) {
            if ((r = tail_batch_submit(rt)) < 0) {
                return r;
            }
        }
        total += (size_t)n;
        if ((size_t)n < rt->rbuf_cap) {
            f->eof = 1; /* a short read: at the end for now; an event says when it grows */
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
