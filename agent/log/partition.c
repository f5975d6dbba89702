/*
 * partition.c: a partition's segment array and the reader side: read by
 * offset, offset for a timestamp, partition info, skipping a corrupt batch.
 *
 * Invariants: segments ascend by base offset and the last one is the active
 * segment the writer appends to. Readers take part->lock for reading across
 * the segment lookup and their preads, and never look past a segment's
 * durable_size or the partition's durable_end; the writer takes the lock
 * for writing only to change the array (roll, delete) or an index array.
 * Reads verify batch headers, not CRCs (decoding does that).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log_int.h"

spool__part *spool__part_get(spool_plog *log, int topic, int32_t partition)
{
    if (log == NULL || topic < 0 || (size_t)topic >= log->ntopics || partition < 0 ||
        partition >= log->topics[topic].conf.partitions) {
        return NULL;
    }
    return &log->topics[topic].parts[partition];
}

int spool__part_add_bad(spool__part *p, const spool__bad *b)
{
    for (size_t i = 0; i < p->nbad; i++) {
        if (b->off_from < p->bad[i].off_to && p->bad[i].off_from < b->off_to) {
            return 0; /* already known */
        }
    }
    spool__bad *n = realloc(p->bad, (p->nbad + 1) * sizeof(*n));
    if (n == NULL) {
        return -ENOMEM;
    }
    p->bad = n;
    p->bad[p->nbad++] = *b;
    return 0;
}

int spool_plog_bad_range_get(spool_plog *log, int topic, int32_t partition, size_t k,
                             spool_plog_bad_range *out)
{
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL || out == NULL) {
        return -EINVAL;
    }
    int rc = -ENOENT;
    pthread_rwlock_rdlock(&p->lock);
    if (k < p->nbad) {
        const spool__bad *b = &p->bad[k];
        *out = (spool_plog_bad_range){.from_offset = b->off_from,
                                      .to_offset = b->off_to,
                                      .segment_base = b->seg_base,
                                      .from_pos = b->pos_from,
                                      .to_pos = b->pos_to,
                                      .moved = b->moved};
        rc = 0;
    }
    pthread_rwlock_unlock(&p->lock);
    return rc;
}

int spool__part_roll(spool_plog *log, spool__part *p)
{
    spool__seg *s;
    int rc = spool__seg_create(log, p, p->end, &s);
    if (rc < 0) {
        return rc;
    }
    pthread_rwlock_wrlock(&p->lock);
    rc = spool__part_push(p, s);
    pthread_rwlock_unlock(&p->lock);
    if (rc < 0) {
        spool__seg_free(log, s);
        return rc;
    }
    spool_log_debug(NULL, "log: %s/%d: rolled to segment %020" PRId64,
                    log->topics[p->topic].conf.name, p->partition, p->end);
    return 0;
}

void spool__part_drop_first(spool_plog *log, spool__part *p)
{
    char path[4096];
    pthread_rwlock_wrlock(&p->lock);
    spool__seg *s = p->segs[0];
    memmove(p->segs, p->segs + 1, (p->nsegs - 1) * sizeof(*p->segs));
    p->nsegs--;
    pthread_rwlock_unlock(&p->lock);
    p->bytes -= s->size;
    spool__seg_path(path, sizeof(path), p->dir, s->base, ".log");
    unlink(path);
    spool__seg_path(path, sizeof(path), p->dir, s->base, ".index");
    unlink(path);
    spool__seg_free(log, s);
}

/* Index of the segment holding offset (the last with base <= offset), 0 if
 * offset is below the first. Caller holds the lock; nsegs > 0. */
static size_t seg_lookup(const spool__part *p, int64_t offset)
{
    size_t lo = 0, hi = p->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->segs[mid]->base <= offset) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static uint32_t be32(const uint8_t *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static int64_t be64(const uint8_t *b)
{
    return (int64_t)(((uint64_t)be32(b) << 32) | be32(b + 4));
}

/* Reads batches of s from pos (a batch start) into out; see spool_plog_read. */
static long read_from(spool_plog *log, spool__part *p, spool__seg *s, int64_t pos, int64_t limit,
                      int64_t durable_end, size_t max_bytes, spool_buf *out, int64_t *next)
{
    spool_rb_info info;
    long first = spool__seg_peek(log, s, pos, limit, &info);
    if (first <= 0 || info.base_offset >= durable_end) {
        if (first < 0) {
            return -EBADMSG; /* the caller reports it, with its own context */
        }
        return 0;
    }
    size_t want = (size_t)(limit - pos);
    if (want > max_bytes) {
        want = max_bytes;
    }
    if (want < (size_t)first) {
        want = (size_t)first;
    }
    int rc = spool_buf_reserve(out, want);
    if (rc < 0) {
        return rc;
    }
    uint8_t *dst = out->data + out->len;
    long n = log->io->pread(s->fd, dst, want, pos);
    if (n < first) {
        return n < 0 ? -errno : -EIO;
    }
    size_t used = 0;
    int64_t after = *next;
    while (used + SPOOL__BATCH_PEEK <= (size_t)n) {
        const uint8_t *b = dst + used;
        int32_t blen = (int32_t)be32(b + 8);
        int64_t base = be64(b);
        int32_t delta = (int32_t)be32(b + 23);
        if (b[16] != 2 || blen < SPOOL_RB_HEADER_SIZE - SPOOL_RB_LOG_OVERHEAD ||
            blen > SPOOL__MAX_BATCH || delta < 0 || base >= durable_end) {
            break;
        }
        size_t sz = (size_t)blen + SPOOL_RB_LOG_OVERHEAD;
        if (used + sz > (size_t)n) {
            break;
        }
        used += sz;
        after = base + delta + 1;
    }
    if (used == 0) {
        return -EBADMSG;
    }
    out->len += used;
    *next = after;
    return (long)used;
}

long spool_plog_read(spool_plog *log, int topic, int32_t partition, int64_t offset,
                     size_t max_bytes, spool_buf *out, int64_t *next)
{
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL || out == NULL || next == NULL) {
        return -EINVAL;
    }
    *next = offset;
    int64_t durable_end = atomic_load(&p->durable_end);
    if (offset >= durable_end) {
        return 0;
    }
    long rc = 0;
    pthread_rwlock_rdlock(&p->lock);
    if (p->nsegs == 0) {
        goto out;
    }
    int64_t want = offset;
    for (size_t i = seg_lookup(p, offset); i < p->nsegs; i++) {
        spool__seg *s = p->segs[i];
        int64_t limit = atomic_load(&s->durable_size);
        int64_t pos;
        if (want < s->base) {
            want = s->base;
        }
        if (want >= durable_end) {
            break;
        }
        int frc = spool__seg_find(log, s, want, limit, &pos);
        if (frc < 0 && frc != -EBADMSG) {
            rc = frc;
            goto out;
        }
        /* Never into a range recovery found unreadable (read_only logs). */
        for (size_t k = 0; k < p->nbad; k++) {
            const spool__bad *b = &p->bad[k];
            if (b->seg_base != s->base || b->pos_to <= b->pos_from) {
                continue;
            }
            if (pos >= b->pos_from && pos < b->pos_to && pos < limit) {
                rc = -EBADMSG;
                goto out;
            }
            if (b->pos_from > pos && b->pos_from < limit) {
                limit = b->pos_from;
            }
        }
        if (pos >= limit) {
            continue;
        }
        rc = read_from(log, p, s, pos, limit, durable_end, max_bytes, out, next);
        if (rc != 0) {
            goto out;
        }
    }
out:
    pthread_rwlock_unlock(&p->lock);
    return rc;
}

int spool_plog_skip_corrupt(spool_plog *log, int topic, int32_t partition, int64_t offset,
                            int64_t *next)
{
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL || next == NULL) {
        return -EINVAL;
    }
    int64_t durable_end = atomic_load(&p->durable_end);
    *next = durable_end;
    pthread_rwlock_wrlock(&p->lock);
    for (size_t k = 0; k < p->nbad; k++) {
        if (offset >= p->bad[k].off_from && offset < p->bad[k].off_to) {
            *next = p->bad[k].off_to; /* a range recovery found */
            goto unlock;
        }
    }
    if (p->nsegs > 0) {
        size_t i = seg_lookup(p, offset);
        spool__seg *s = p->segs[i];
        int64_t limit = atomic_load(&s->durable_size);
        int64_t pos;
        spool_rb_info info;
        if (i + 1 < p->nsegs) {
            *next = p->segs[i + 1]->base;
        }
        spool__bad b = {.seg_base = s->base, .off_from = offset, .pos_to = limit};
        (void)spool__seg_find(log, s, offset > s->base ? offset : s->base, limit, &pos);
        b.pos_from = pos;
        long sz = pos < limit ? spool__seg_peek(log, s, pos, limit, &info) : 0;
        if (sz > 0) {
            int64_t after = info.base_offset + info.last_offset_delta + 1;
            if (after > offset && after < *next) {
                *next = after;
                b.pos_to = pos + sz;
            }
        } else if (pos < limit) {
            /* A broken header: the next valid batch in the segment, if any. */
            int64_t nbase = 0;
            int64_t q = spool__seg_resync(log, s, pos + 1, limit, offset + 1, &nbase);
            if (q > 0 && nbase < *next) {
                *next = nbase;
                b.pos_to = q;
            }
        }
        b.off_to = *next;
        if (log->read_only && b.off_to > b.off_from) {
            (void)spool__part_add_bad(p, &b); /* for the reader's report */
        }
    }
unlock:
    pthread_rwlock_unlock(&p->lock);
    if (*next <= offset) {
        *next = offset + 1 < durable_end ? offset + 1 : durable_end;
    }
    return 0;
}

int spool_plog_offset_for_time(spool_plog *log, int topic, int32_t partition, int64_t ts_ms,
                               int64_t *offset)
{
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL || offset == NULL) {
        return -EINVAL;
    }
    int64_t durable_end = atomic_load(&p->durable_end);
    int rc = 0;
    spool_rb_decoded d = {0};
    uint8_t *buf = NULL;
    *offset = durable_end;
    pthread_rwlock_rdlock(&p->lock);
    for (size_t i = 0; i < p->nsegs; i++) {
        spool__seg *s = p->segs[i];
        int64_t max_ts = atomic_load(&s->max_ts);
        if (max_ts >= 0 && max_ts < ts_ms && i + 1 < p->nsegs) {
            continue;
        }
        int64_t limit = atomic_load(&s->durable_size);
        for (int64_t pos = 0; pos < limit;) {
            spool_rb_info info;
            long n = spool__seg_peek(log, s, pos, limit, &info);
            if (n <= 0 || info.base_offset >= durable_end) {
                break;
            }
            if (info.max_timestamp >= ts_ms) {
                /* The first record at or after ts_ms is in this batch. */
                uint8_t *nb = realloc(buf, (size_t)n);
                if (nb == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                buf = nb;
                *offset = info.base_offset;
                spool_rb_decoded_reset(&d);
                if (log->io->pread(s->fd, buf, (size_t)n, pos) == n &&
                    spool_rb_decode(buf, (size_t)n, partition, 0, &d) > 0) {
                    for (size_t k = 0; k < d.count; k++) {
                        if (d.records[k].timestamp >= ts_ms) {
                            *offset = d.records[k].offset;
                            break;
                        }
                    }
                }
                goto out;
            }
            pos += n;
        }
    }
out:
    pthread_rwlock_unlock(&p->lock);
    spool_rb_decoded_free(&d);
    free(buf);
    return rc;
}

int spool_plog_partition_info(spool_plog *log, int topic, int32_t partition,
                              spool_partition_info *info)
{
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL || info == NULL) {
        return -EINVAL;
    }
    memset(info, 0, sizeof(*info));
    info->end_offset = atomic_load(&p->durable_end);
    info->dropped = atomic_load(&p->dropped);
    pthread_rwlock_rdlock(&p->lock);
    info->begin_offset = p->nsegs ? p->segs[0]->base : info->end_offset;
    for (size_t i = 0; i < p->nsegs; i++) {
        info->bytes += atomic_load(&p->segs[i]->durable_size);
    }
    info->segments = (int32_t)p->nsegs;
    pthread_rwlock_unlock(&p->lock);
    if (info->begin_offset > info->end_offset) {
        info->begin_offset = info->end_offset;
    }
    return 0;
}
