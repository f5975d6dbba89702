/*
 * retention.c: deletes whole segments from the front of a partition: by
 * age (the segment's largest timestamp older than retention_ms), by size
 * (while the rest still holds retention_bytes), and to make room under
 * max_bytes. Never the active segment, never a segment with data not yet
 * published, and never a segment holding offsets at or above the lowest
 * cursor of the registered consumers (a consumer that committed nothing for
 * a partition holds all of it), except on_full: drop_oldest at max_bytes,
 * where the records dropped before delivery are counted and logged.
 * Writer thread only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "log/log_int.h"

/* 1 if segs[0] may go; respect_cursors = 0 for drop_oldest. */
static int first_deletable(spool__part *p, int64_t min_cursor, int respect_cursors)
{
    if (p->nsegs < 2) {
        return 0;
    }
    spool__seg *s = p->segs[0];
    if (atomic_load(&s->durable_size) != atomic_load(&s->size) ||
        p->segs[1]->base > atomic_load(&p->durable_end)) {
        return 0;
    }
    if (!respect_cursors || min_cursor == INT64_MAX) {
        return 1;
    }
    return min_cursor >= 0 && p->segs[1]->base <= min_cursor;
}

int spool_plog_retention_run(spool_plog *log, int force)
{
    if (log->read_only) {
        return -EROFS;
    }
    int64_t mono = spool_monotonic_ms();
    if (!force && mono - log->last_retention_ms < 1000) {
        return 0;
    }
    log->last_retention_ms = mono;
    int64_t now = spool_now_ms();
    int rc = 0;
    for (size_t t = 0; t < log->ntopics; t++) {
        const spool_topic_conf *c = &log->topics[t].conf;
        for (int32_t i = 0; i < c->partitions; i++) {
            spool__part *p = &log->topics[t].parts[i];
            spool__seg *a = p->segs[p->nsegs - 1];
            if (c->segment_ms > 0 && atomic_load(&a->size) > 0 &&
                now - a->created_ms >= c->segment_ms && (rc = spool__part_roll(log, p)) < 0) {
                return rc;
            }
            int64_t minc = spool__cursor_min(log, (int)t, i);
            while (p->nsegs > 1) {
                spool__seg *s = p->segs[0];
                int64_t max_ts = atomic_load(&s->max_ts);
                int aged = c->retention_ms > 0 && max_ts >= 0 && max_ts < now - c->retention_ms;
                int big = c->retention_bytes > 0 &&
                          p->bytes - atomic_load(&s->size) >= c->retention_bytes;
                if (!(aged || big) || !first_deletable(p, minc, 1)) {
                    break;
                }
                spool_log_info(NULL,
                               "log: %s/%d: retention (%s) deleted segment %020" PRId64
                               " (offsets %" PRId64 "..%" PRId64 ")",
                               c->name, i, aged ? "age" : "bytes", s->base, s->base,
                               p->segs[1]->base - 1);
                spool__part_drop_first(log, p);
            }
        }
    }
    return 0;
}

int spool__retention_make_room(spool_plog *log, spool__part *p, int64_t need)
{
    const spool_topic_conf *c = &log->topics[p->topic].conf;
    int64_t minc = spool__cursor_min(log, p->topic, p->partition);
    while (p->bytes + need > c->max_bytes && first_deletable(p, minc, 1)) {
        spool__part_drop_first(log, p);
    }
    if (p->bytes + need <= c->max_bytes) {
        return 0;
    }
    if (c->on_full != SPOOL_ON_FULL_DROP_OLDEST) {
        return -EAGAIN;
    }
    int64_t dropped = 0, from = -1, to = -1;
    while (p->bytes + need > c->max_bytes && first_deletable(p, minc, 0)) {
        spool__seg *s = p->segs[0];
        int64_t next = p->segs[1]->base;
        int64_t first = (minc >= 0 && minc > s->base) ? minc : s->base;
        if (next > first) {
            dropped += next - first;
            from = from < 0 ? first : from;
            to = next - 1;
        }
        spool__part_drop_first(log, p);
    }
    if (dropped > 0) {
        atomic_fetch_add(&p->dropped, dropped);
        spool_log_warn(NULL,
                       "log: %s/%d: full (max_bytes %" PRId64 "), on_full drop_oldest: "
                       "dropped %" PRId64 " undelivered records (offsets %" PRId64 "..%" PRId64
                       "), %" PRId64 " dropped since start",
                       c->name, p->partition, c->max_bytes, dropped, from, to,
                       (int64_t)atomic_load(&p->dropped));
    }
    /* What cannot be dropped yet (unpublished) is kept: the limit is exceeded
     * by at most what the writer appended since its last commit. */
    return 0;
}
