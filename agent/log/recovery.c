/*
 * recovery.c: brings one partition back on open, and (read_only) extends it
 * to a newer checkpoint.
 *
 * Steps: list the segments; trust a closed segment's index only when the
 * batches after its last entry parse to the end of the file with valid
 * CRCs, else rescan it; always rescan the last segment. A bad batch is a
 * torn tail (cut, warned) when it is the end of the last non-empty segment
 * and nothing valid follows, or lies beyond the checkpoint (never
 * committed); otherwise it is corruption: the bytes up to the next valid
 * batch are copied to <segment>.log.corrupt and spliced out of the segment
 * (the rest of the segment when no valid batch follows), logged as an error;
 * the offsets they held stay a gap a reader is told about. Then everything
 * beyond the checkpoint's end offset is cut (info), so the source positions
 * in the checkpoint describe exactly the data kept. A read_only log never
 * writes: it only bounds what it shows. Never aborts on bad bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log_int.h"

#define SCAN_CHUNK (1 << 20)

enum { SCAN_CLEAN = 0, SCAN_INCOMPLETE = 1, SCAN_BAD = 2, SCAN_STOPPED = 3 };

typedef struct scan_result {
    int64_t pos; /* where the scan stopped */
    int64_t end; /* one past the last offset of the last good batch */
    int why;     /* SCAN_* */
} scan_result;

/*
 * read_only: offsets [from, to) are missing before position pos of s.
 * Offsets are dense in a partition spool wrote, so a gap is data that was
 * lost (the tail of a crash before a sync) or moved aside as corrupt by an
 * earlier `spool run`: a reader must be told.
 */
static void ro_note_gap(spool_plog *log, spool__part *p, spool__seg *s, int64_t pos, int64_t from,
                        int64_t to)
{
    if (!log->read_only || to <= from) {
        return;
    }
    char path[4096];
    spool__seg_path(path, sizeof(path), p->dir, s->base, ".log.corrupt");
    spool__bad b = {.seg_base = s->base,
                    .pos_from = pos,
                    .pos_to = pos,
                    .off_from = from,
                    .off_to = to,
                    .moved = access(path, F_OK) == 0};
    (void)spool__part_add_bad(p, &b); /* out of memory: the range goes unnamed */
}

/*
 * Scans batches of s from `from` (whose batch must start at offset >= expect)
 * to file_size, verifying CRCs, stopping before a batch with base >= stop.
 * Adds index entries past the last one, updates end and max_ts.
 */
static int scan_batches(spool_plog *log, spool__part *p, spool__seg *s, int64_t from,
                        int64_t expect, int64_t file_size, int64_t stop, scan_result *res)
{
    spool_buf buf = {0};
    int rc = 0;
    int64_t pos = from;
    res->why = SCAN_CLEAN;
    res->end = expect;
    while (pos < file_size) {
        size_t want = (size_t)(file_size - pos < SCAN_CHUNK ? file_size - pos : SCAN_CHUNK);
        if (buf.cap < want && (rc = spool_buf_reserve(&buf, want)) < 0) {
            goto out;
        }
        long n = log->io->pread(s->fd, buf.data, want, pos);
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        size_t off = 0;
        for (;;) {
            spool_rb_info info;
            long r = spool_rb_parse_header(buf.data + off, (size_t)n - off, 1, &info);
            if (r > 0 && info.base_offset < res->end) {
                r = -EBADMSG; /* offsets must increase */
            }
            if (r > 0 && info.base_offset >= stop) {
                res->why = SCAN_STOPPED;
                pos += (int64_t)off;
                goto out;
            }
            if (r > 0) {
                int64_t at = pos + (int64_t)off;
                if (info.base_offset > res->end) {
                    ro_note_gap(log, p, s, at, res->end, info.base_offset);
                }
                if (at > s->last_index_pos && spool__seg_index_due(log, p, s, at)) {
                    pthread_rwlock_wrlock(&p->lock);
                    rc = spool__seg_index_add(log, s, info.base_offset, at);
                    pthread_rwlock_unlock(&p->lock);
                    if (rc < 0) {
                        goto out;
                    }
                }
                res->end = info.base_offset + info.last_offset_delta + 1;
                if (info.max_timestamp > s->max_ts) {
                    s->max_ts = info.max_timestamp;
                }
                off += (size_t)r;
                if (off == (size_t)n) {
                    break;
                }
                continue;
            }
            if (r < 0) {
                res->why = SCAN_BAD;
                pos += (int64_t)off;
                goto out;
            }
            /* r == 0: the batch continues past what we read. */
            if (pos + (int64_t)n >= file_size) {
                res->why = SCAN_INCOMPLETE;
                pos += (int64_t)off;
                goto out;
            }
            if (off == 0) {
                /* One batch larger than the buffer: size it from its header. */
                spool_rb_info hi;
                long sz = spool__seg_peek(log, s, pos, INT64_MAX, &hi);
                if (sz <= 0) {
                    res->why = SCAN_BAD;
                    goto out;
                }
                if (pos + sz > file_size) {
                    res->why = SCAN_INCOMPLETE;
                    goto out;
                }
                if ((rc = spool_buf_reserve(&buf, (size_t)sz)) < 0) {
                    goto out;
                }
                n = log->io->pread(s->fd, buf.data, (size_t)sz, pos);
                if (n != sz) {
                    res->why = SCAN_INCOMPLETE;
                    goto out;
                }
                continue;
            }
            break;
        }
        pos += (int64_t)off;
    }
out:
    res->pos = pos < file_size ? pos : file_size;
    if (res->why == SCAN_CLEAN && pos < file_size) {
        res->why = SCAN_INCOMPLETE;
    }
    spool_buf_free(&buf);
    return rc;
}

/* Appends [from, to) of segment s to fd, through buf (SCAN_CHUNK bytes). */
static int copy_range(spool_plog *log, const spool__seg *s, int fd, uint8_t *buf, int64_t from,
                      int64_t to)
{
    for (int64_t at = from; at < to;) {
        size_t want = (size_t)(to - at < SCAN_CHUNK ? to - at : SCAN_CHUNK);
        long n = log->io->pread(s->fd, buf, want, at);
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;
        }
        if (write(fd, buf, (size_t)n) != n) {
            return -errno;
        }
        at += n;
    }
    return 0;
}

/* Copies [pos, size) of s to <segment>.log.corrupt (a fresh name). */
static int move_aside(spool_plog *log, spool__part *p, spool__seg *s, int64_t pos, int64_t size,
                      char *name, size_t cap)
{
    char base[4096];
    int rc = 0;
    spool__seg_path(base, sizeof(base), p->dir, s->base, ".log.corrupt");
    snprintf(name, cap, "%s", base);
    for (int i = 1; access(name, F_OK) == 0 && i < 1000; i++) {
        snprintf(name, cap, "%s.%d", base, i);
    }
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        return -errno;
    }
    uint8_t *buf = malloc(SCAN_CHUNK);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    rc = copy_range(log, s, fd, buf, pos, size);
    if (rc == 0 && fsync(fd) < 0) {
        rc = -errno;
    }
out:
    free(buf);
    close(fd);
    return rc;
}

/*
 * Rewrites the segment file of s without [from, to) (already saved by
 * move_aside): a new file is written, synced and renamed over the old one,
 * so a crash leaves one or the other. s->fd then refers to the new file.
 */
static int splice_out(spool_plog *log, spool__part *p, spool__seg *s, int64_t from, int64_t to)
{
    char path[4096], tmp[4200];
    int rc = 0;
    spool__seg_path(path, sizeof(path), p->dir, s->base, ".log");
    snprintf(tmp, sizeof(tmp), "%s.splice", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        return -errno;
    }
    uint8_t *buf = malloc(SCAN_CHUNK);
    int64_t size = s->size;
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    rc = copy_range(log, s, fd, buf, 0, from);
    if (rc == 0) {
        rc = copy_range(log, s, fd, buf, to, size);
    }
    if (rc < 0) {
        goto out;
    }
    if (fsync(fd) < 0 || rename(tmp, path) < 0) {
        rc = -errno;
        goto out;
    }
    int nfd = log->io->open(path, O_RDWR, 0);
    if (nfd < 0) {
        rc = -errno;
        goto out;
    }
    log->io->close(s->fd);
    s->fd = nfd;
    s->size = size - (to - from);
    s->synced_size = s->size;
    /* Renamed: done. Without the directory sync a crash may bring the old
     * file back, and the next recovery splices it again. */
    (void)spool__fsync_dir(p->dir);
out:
    free(buf);
    close(fd);
    if (rc < 0) {
        unlink(tmp);
    }
    return rc;
}

/* Keeps [0, pos) of s: in memory only when read_only. */
static int cut_segment(spool_plog *log, spool__seg *s, int64_t pos)
{
    if (!log->read_only) {
        if (log->io->ftruncate(s->fd, pos) < 0) {
            return -errno;
        }
        if (log->io->fdatasync(s->fd) < 0) {
            return -errno;
        }
    }
    s->size = pos;
    s->synced_size = pos;
    size_t keep = 0;
    while (keep < s->nidx && s->idx[keep].pos < pos) {
        keep++;
    }
    if (keep != s->nidx) {
        s->nidx = keep;
        s->last_index_pos = keep ? (int64_t)s->idx[keep - 1].pos : -1;
        spool__seg_index_write(log, s);
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Base offsets of the .log files in dir, ascending, at or above `above`. */
static int list_segments(const char *dir, int64_t above, int64_t **out, size_t *n)
{
    DIR *d = opendir(dir);
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    if (d == NULL) {
        return errno == ENOENT ? 0 : -errno;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len != SPOOL__SEG_NAME_LEN + 4 || strcmp(e->d_name + SPOOL__SEG_NAME_LEN, ".log")) {
            continue;
        }
        if (strspn(e->d_name, "0123456789") != SPOOL__SEG_NAME_LEN) {
            continue;
        }
        int64_t base = strtoll(e->d_name, NULL, 10);
        if (base < above) {
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *nb = realloc(*out, cap * sizeof(**out));
            if (nb == NULL) {
                closedir(d);
                free(*out);
                *out = NULL;
                return -ENOMEM;
            }
            *out = nb;
        }
        (*out)[(*n)++] = base;
    }
    closedir(d);
    if (*n > 1) {
        qsort(*out, *n, sizeof(**out), cmp_i64);
    }
    return 0;
}

int spool__part_push(spool__part *p, spool__seg *s)
{
    if (p->nsegs == p->segs_cap) {
        size_t cap = p->segs_cap ? p->segs_cap * 2 : 16;
        spool__seg **n = realloc(p->segs, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        p->segs = n;
        p->segs_cap = cap;
    }
    p->segs[p->nsegs++] = s;
    return 0;
}

/* Removes the last segment and, unless read_only, its files. */
static void drop_last(spool_plog *log, spool__part *p)
{
    spool__seg *s = p->segs[--p->nsegs];
    if (!log->read_only) {
        char path[4096];
        spool__seg_path(path, sizeof(path), p->dir, s->base, ".log");
        unlink(path);
        spool__seg_path(path, sizeof(path), p->dir, s->base, ".index");
        unlink(path);
    }
    spool__seg_free(log, s);
}

/*
 * read_only: the scan of segment i stopped at a bad batch below the
 * checkpoint's end. Records the range up to the next valid batch (an index
 * entry there keeps lookups out of the bad bytes) and scans on from it;
 * without one, the range runs to the next segment (or the checkpoint's
 * end) and the segment is cut, in memory, at the bad batch.
 */
static int ro_skip_bad(spool_plog *log, spool__part *p, size_t i, scan_result *r, int have_ckpt,
                       int64_t ckpt_end)
{
    spool__seg *s = p->segs[i];
    int64_t size = s->size;
    for (int round = 0; round < 1000000; round++) {
        int64_t nbase = 0;
        int64_t q = spool__seg_resync(log, s, r->pos + 1, size, r->end, &nbase);
        spool__bad b = {.seg_base = s->base, .pos_from = r->pos, .off_from = r->end};
        if (q < 0) {
            b.pos_to = size;
            b.off_to = i + 1 < p->nsegs ? p->segs[i + 1]->base : have_ckpt ? ckpt_end : r->end;
            if (b.off_to > b.off_from && spool__part_add_bad(p, &b) < 0) {
                return -ENOMEM;
            }
            s->end = r->end;
            return cut_segment(log, s, r->pos);
        }
        b.pos_to = q;
        b.off_to = nbase;
        int rc = spool__part_add_bad(p, &b);
        if (rc == 0) {
            rc = spool__seg_index_add(log, s, nbase, q);
        }
        if (rc == 0) {
            rc = scan_batches(log, p, s, q, nbase, size, INT64_MAX, r);
        }
        if (rc < 0) {
            return rc;
        }
        s->end = r->end;
        if (r->why == SCAN_CLEAN) {
            return 0;
        }
        if (have_ckpt && r->end >= ckpt_end) {
            return cut_segment(log, s, r->pos); /* beyond the commit point: being written */
        }
    }
    return 0;
}

/* Handles a scan of s that stopped at a bad or incomplete batch: 0 done,
 * 1 when corrupt bytes were spliced out and the segment must be scanned
 * again, or a negative errno. */
static int handle_bad(spool_plog *log, spool__part *p, size_t i, scan_result *r, int have_ckpt,
                      int64_t ckpt_end)
{
    spool__seg *s = p->segs[i];
    const char *topic = log->topics[p->topic].conf.name;
    int64_t size = s->size;
    int last = 1;
    for (size_t j = i + 1; j < p->nsegs; j++) {
        if (p->segs[j]->size > 0) {
            last = 0;
        }
    }
    /* A torn write is the last one: no valid batch follows it anywhere in
     * the segment (one that does proves the bytes between were corrupted). */
    int64_t nbase = 0;
    int64_t q = -1;
    int torn = have_ckpt && r->end >= ckpt_end;
    if (!torn && !log->read_only) {
        q = spool__seg_resync(log, s, r->pos + 1, size, r->end, &nbase);
    }
    if (!torn && last &&
        (log->read_only ? spool__seg_resync(log, s, r->pos + 1, size, r->end, &nbase) < 0
                        : q < 0)) {
        torn = 1;
    }
    if (log->read_only) {
        /* A committed range that cannot be read: record it, read on after it. */
        if (!(have_ckpt ? r->end >= ckpt_end : torn)) {
            return ro_skip_bad(log, p, i, r, have_ckpt, ckpt_end);
        }
        return cut_segment(log, s, r->pos);
    }
    if (torn) {
        spool_log_warn(NULL,
                       "log: %s/%d: torn tail cut at offset %" PRId64 " (segment %020" PRId64
                       ", position %" PRId64 "): %" PRId64 " bytes",
                       topic, p->partition, r->end, s->base, r->pos, size - r->pos);
        log->stats.torn_cuts++;
        log->stats.torn_bytes += size - r->pos;
        return cut_segment(log, s, r->pos);
    }
    char name[4200];
    int rc;
    if (q > r->pos) {
        /* Valid batches follow: only the corrupt bytes go, the rest stays. */
        rc = move_aside(log, p, s, r->pos, q, name, sizeof(name));
        if (rc == 0 && (rc = splice_out(log, p, s, r->pos, q)) == 0) {
            spool_log_error(NULL,
                            "log: %s/%d: corrupt data at offsets %" PRId64 "..%" PRId64
                            " (segment %020" PRId64 ", bytes %" PRId64 "..%" PRId64 "): moved "
                            "to %s; the batches after it are kept",
                            topic, p->partition, r->end, nbase - 1, s->base, r->pos, q - 1, name);
            log->stats.corrupt_moved++;
            log->stats.corrupt_bytes += q - r->pos;
            return 1; /* scan the segment again */
        }
        /* Not spliced: the copy stays, and the whole rest is moved below. */
    }
    rc = move_aside(log, p, s, r->pos, size, name, sizeof(name));
    if (rc < 0) {
        spool_log_error(NULL,
                        "log: %s/%d: corrupt batch at offset %" PRId64 " (segment %020" PRId64
                        ", position %" PRId64 ") and cannot save the rest: %s; cutting",
                        topic, p->partition, r->end, s->base, r->pos, strerror(-rc));
    } else {
        spool_log_error(NULL,
                        "log: %s/%d: corrupt batch at offset %" PRId64 " (segment %020" PRId64
                        ", position %" PRId64 "): %" PRId64 " bytes moved to %s",
                        topic, p->partition, r->end, s->base, r->pos, size - r->pos, name);
    }
    log->stats.corrupt_moved++;
    log->stats.corrupt_bytes += size - r->pos;
    return cut_segment(log, s, r->pos);
}

/* Validates (or rebuilds) the index of s and finds its end and max_ts. */
static int recover_segment(spool_plog *log, spool__part *p, size_t i, int have_ckpt,
                           int64_t ckpt_end)
{
    spool__seg *s = p->segs[i];
    scan_result r;
    int rc;
    int is_last = i + 1 == p->nsegs;
    int64_t stop = INT64_MAX;
    char moved[4096];
    spool__seg_path(moved, sizeof(moved), p->dir, s->base, ".log.corrupt");
    int check_all = log->read_only && access(moved, F_OK) == 0;
    if (!is_last && !check_all && spool__seg_index_load(log, p, s, s->size) && s->nidx > 0) {
        spool__idx_entry e = s->idx[s->nidx - 1];
        rc = scan_batches(log, p, s, e.pos, s->base + e.rel, s->size, stop, &r);
        if (rc < 0) {
            return rc;
        }
        if (r.why == SCAN_CLEAN) {
            s->end = r.end;
            return 0;
        }
    }
    int index_ok = 0;
    if (is_last && !log->read_only) {
        index_ok = spool__seg_index_load(log, p, s, s->size) || s->size == 0; /* opens the fd */
    }
    /* Full scan: rebuild the index from the data; again after corrupt bytes
     * were spliced out of the segment (each round removes some). */
    for (int round = 0; round < 100000; round++) {
        s->nidx = 0;
        s->last_index_pos = -1;
        s->max_ts = -1;
        rc = scan_batches(log, p, s, 0, s->base, s->size, stop, &r);
        if (rc < 0) {
            return rc;
        }
        s->end = r.end;
        if (r.why == SCAN_CLEAN) {
            break;
        }
        if ((rc = handle_bad(log, p, i, &r, have_ckpt, ckpt_end)) < 0) {
            return rc;
        }
        if (rc == 0) {
            break;
        }
    }
    if (!index_ok && !log->read_only) {
        log->stats.index_rebuilt++;
        spool_log_info(NULL, "log: %s/%d: rebuilt the index of segment %020" PRId64,
                       log->topics[p->topic].conf.name, p->partition, s->base);
    }
    return spool__seg_index_write(log, s);
}

/* Position and end of the cut at offset e in s (keeps batches below e). */
static int find_cut(spool_plog *log, spool__seg *s, int64_t e, int64_t *pos, int64_t *end)
{
    int64_t at = 0, last_end = s->base;
    for (size_t k = s->nidx; k-- > 0;) {
        if ((int64_t)s->base + s->idx[k].rel < e) {
            at = s->idx[k].pos;
            last_end = s->base + s->idx[k].rel;
            break;
        }
    }
    int64_t size = s->size;
    while (at < size) {
        spool_rb_info info;
        long n = spool__seg_peek(log, s, at, size, &info);
        if (n <= 0 || info.base_offset + info.last_offset_delta >= e) {
            break;
        }
        last_end = info.base_offset + info.last_offset_delta + 1;
        at += n;
    }
    *pos = at;
    *end = last_end;
    return 0;
}

static int cut_to_checkpoint(spool_plog *log, spool__part *p, int64_t e)
{
    const char *topic = log->topics[p->topic].conf.name;
    int64_t cut = 0;
    int64_t from = p->segs[p->nsegs - 1]->end;
    while (p->nsegs > 1 && p->segs[p->nsegs - 1]->base >= e) {
        cut += p->segs[p->nsegs - 1]->size;
        drop_last(log, p);
    }
    spool__seg *s = p->segs[p->nsegs - 1];
    if (s->end > e) {
        int64_t pos, end;
        find_cut(log, s, e, &pos, &end);
        cut += s->size - pos;
        int rc = cut_segment(log, s, pos);
        if (rc < 0) {
            return rc;
        }
        s->end = end;
    }
    if (cut > 0 && !log->read_only) {
        log->stats.ckpt_cut_bytes += cut;
        spool_log_info(NULL,
                       "log: %s/%d: cut %" PRId64 " uncommitted bytes (offsets %" PRId64
                       "..%" PRId64 ") beyond the checkpoint",
                       topic, p->partition, cut, e, from - 1);
    }
    return 0;
}

int spool__part_recover(spool_plog *log, spool__part *p, int have_ckpt, int64_t ckpt_end)
{
    int64_t *bases = NULL;
    size_t n = 0;
    int rc = list_segments(p->dir, 0, &bases, &n);
    if (rc < 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        spool__seg *s;
        if ((rc = spool__seg_open(log, p, bases[i], &s)) < 0) {
            goto out;
        }
        if ((rc = spool__part_push(p, s)) < 0) {
            spool__seg_free(log, s);
            goto out;
        }
    }
    for (size_t i = 0; i < p->nsegs; i++) {
        if ((rc = recover_segment(log, p, i, have_ckpt, ckpt_end)) < 0) {
            goto out;
        }
    }
    /* Empty trailing segments (a roll just before a crash) go, but one stays. */
    while (!log->read_only && p->nsegs > 1 && p->segs[p->nsegs - 1]->size == 0 &&
           p->segs[p->nsegs - 2]->end >= p->segs[p->nsegs - 1]->base) {
        drop_last(log, p);
    }
    if (p->nsegs > 0 && have_ckpt && (rc = cut_to_checkpoint(log, p, ckpt_end)) < 0) {
        goto out;
    }
    for (size_t i = 1; log->read_only && i < p->nsegs; i++) {
        spool__seg *prev = p->segs[i - 1];
        ro_note_gap(log, p, prev, prev->size, prev->end, p->segs[i]->base);
    }
    int64_t end = p->nsegs ? p->segs[p->nsegs - 1]->end : (have_ckpt ? ckpt_end : 0);
    if (have_ckpt && end < ckpt_end && p->nsegs > 0) {
        spool__seg *last = p->segs[p->nsegs - 1];
        ro_note_gap(log, p, last, last->size, end, ckpt_end);
    }
    if (have_ckpt && end < ckpt_end) {
        if (!log->read_only) {
            log->stats.ckpt_missing++;
            spool_log_warn(NULL,
                           "log: %s/%d: the checkpoint says end offset %" PRId64
                           " but the log holds only up to %" PRId64 " (lost before it was "
                           "synced, or moved aside as corrupt); new records start at %" PRId64,
                           log->topics[p->topic].conf.name, p->partition, ckpt_end, end, ckpt_end);
        }
        end = ckpt_end;
    }
    if (p->nsegs == 0 && !log->read_only) {
        spool__seg *s;
        if ((rc = spool__seg_create(log, p, end, &s)) < 0) {
            goto out;
        }
        if ((rc = spool__part_push(p, s)) < 0) {
            spool__seg_free(log, s);
            goto out;
        }
    }
    p->bytes = 0;
    for (size_t i = 0; i < p->nsegs; i++) {
        p->segs[i]->durable_size = p->segs[i]->size;
        p->segs[i]->synced_size = p->segs[i]->size;
        p->bytes += p->segs[i]->size;
    }
    p->end = end;
    p->durable_end = end;
    p->committed_end = end;
    p->last_sync_ms = spool_monotonic_ms();
out:
    free(bases);
    return rc;
}

int spool__part_refresh(spool_plog *log, spool__part *p, int64_t ckpt_end)
{
    int64_t *bases = NULL;
    size_t n = 0;
    int rc = 0;
    if (ckpt_end <= p->durable_end) {
        return 0;
    }
    int64_t above = p->nsegs ? p->segs[p->nsegs - 1]->base + 1 : 0;
    if ((rc = list_segments(p->dir, above, &bases, &n)) < 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        spool__seg *s;
        if ((rc = spool__seg_open(log, p, bases[i], &s)) < 0) {
            goto out;
        }
        s->size = 0;
        pthread_rwlock_wrlock(&p->lock);
        rc = spool__part_push(p, s);
        pthread_rwlock_unlock(&p->lock);
        if (rc < 0) {
            spool__seg_free(log, s);
            goto out;
        }
    }
    int64_t end = p->durable_end;
    for (size_t i = 0; i < p->nsegs; i++) {
        spool__seg *s = p->segs[i];
        if (i + 1 < p->nsegs && p->segs[i + 1]->base <= end) {
            continue; /* wholly before the old end: already scanned */
        }
        struct stat st;
        if (fstat(s->fd, &st) < 0) {
            continue;
        }
        scan_result r;
        int64_t expect = s->end > s->base ? s->end : s->base;
        if ((rc = scan_batches(log, p, s, s->size, expect, st.st_size, ckpt_end, &r)) < 0) {
            goto out;
        }
        if (r.pos > s->size) {
            s->end = r.end;
            s->size = r.pos;
            s->durable_size = r.pos;
        }
        if (s->end > end) {
            end = s->end;
        }
        if (r.why != SCAN_CLEAN) {
            break; /* stopped at the checkpoint or at a batch being written */
        }
    }
    p->end = end;
    p->durable_end = end;
out:
    free(bases);
    return rc;
}
