/*
 * segment.c: one segment of a partition: a .log file of whole RecordBatch v2
 * batches named by its base offset, and a sparse .index of (relative
 * offset u32, position u32) big-endian pairs, one every index_interval_bytes
 * and always one for the first batch, kept in memory too.
 *
 * Invariants: an index entry always points at the start of a batch whose
 * base offset is base + rel; entries ascend in both fields. The .index file
 * is a cache: it is not synced, and recovery rebuilds it when it is missing
 * or does not match the .log. Readers never look past durable_size.
 * This file does not decide what is durable or what to cut (recovery.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log_int.h"

void spool__seg_path(char *buf, size_t cap, const char *dir, int64_t base, const char *ext)
{
    snprintf(buf, cap, "%s/%020" PRId64 "%s", dir, base, ext);
}

static spool__seg *seg_new(int64_t base)
{
    spool__seg *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->base = base;
    s->fd = -1;
    s->index_fd = -1;
    s->end = base;
    s->max_ts = -1;
    s->created_ms = spool_now_ms();
    s->last_index_pos = -1;
    return s;
}

int spool__seg_create(spool_plog *log, spool__part *p, int64_t base, spool__seg **out)
{
    char path[4096];
    int rc = 0;
    spool__seg *s = seg_new(base);
    if (s == NULL) {
        return -ENOMEM;
    }
    spool__seg_path(path, sizeof(path), p->dir, base, ".log");
    s->fd = log->io->open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
    if (s->fd < 0) {
        rc = -errno;
        goto fail;
    }
    spool__seg_path(path, sizeof(path), p->dir, base, ".index");
    s->index_fd = log->io->open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
    if (s->index_fd < 0) {
        rc = -errno;
        goto fail;
    }
    p->dir_dirty = 1;
    *out = s;
    return 0;
fail:
    spool__seg_free(log, s);
    return rc;
}

int spool__seg_open(spool_plog *log, spool__part *p, int64_t base, spool__seg **out)
{
    char path[4096];
    struct stat st;
    int rc = 0;
    spool__seg *s = seg_new(base);
    if (s == NULL) {
        return -ENOMEM;
    }
    spool__seg_path(path, sizeof(path), p->dir, base, ".log");
    s->fd = log->io->open(path, log->read_only ? O_RDONLY : O_RDWR, 0);
    if (s->fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (fstat(s->fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    s->size = st.st_size;
    s->synced_size = st.st_size;
    s->created_ms = spool_now_ms();
    *out = s;
    return 0;
fail:
    spool__seg_free(log, s);
    return rc;
}

void spool__seg_free(spool_plog *log, spool__seg *s)
{
    if (s == NULL) {
        return;
    }
    if (s->fd >= 0) {
        log->io->close(s->fd);
    }
    if (s->index_fd >= 0) {
        log->io->close(s->index_fd);
    }
    free(s->idx);
    free(s);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

int spool__seg_index_add(spool_plog *log, spool__seg *s, int64_t offset, int64_t pos)
{
    if (s->nidx == s->idx_cap) {
        size_t cap = s->idx_cap ? s->idx_cap * 2 : 64;
        spool__idx_entry *n = realloc(s->idx, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        s->idx = n;
        s->idx_cap = cap;
    }
    s->idx[s->nidx].rel = (uint32_t)(offset - s->base);
    s->idx[s->nidx].pos = (uint32_t)pos;
    s->nidx++;
    s->last_index_pos = pos;
    if (s->index_fd >= 0 && s->idx_on_disk == s->nidx - 1) {
        uint8_t e[8];
        put32(e, (uint32_t)(offset - s->base));
        put32(e + 4, (uint32_t)pos);
        /* The index is a cache: a failed write only makes it stale. */
        if (log->io->pwrite(s->index_fd, e, 8, (int64_t)s->idx_on_disk * 8) == 8) {
            s->idx_on_disk++;
        }
    }
    return 0;
}

int spool__seg_index_write(spool_plog *log, spool__seg *s)
{
    if (log->read_only || s->index_fd < 0) {
        return 0;
    }
    size_t n = s->nidx * 8;
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->nidx; i++) {
        put32(buf + i * 8, s->idx[i].rel);
        put32(buf + i * 8 + 4, s->idx[i].pos);
    }
    int rc = 0;
    if (log->io->ftruncate(s->index_fd, 0) < 0 ||
        (n > 0 && log->io->pwrite(s->index_fd, buf, n, 0) != (long)n)) {
        rc = -EIO;
    } else {
        s->idx_on_disk = s->nidx;
    }
    free(buf);
    return rc;
}

int spool__seg_index_load(spool_plog *log, spool__part *p, spool__seg *s, int64_t file_size)
{
    char path[4096];
    struct stat st;
    int ok = 0;
    uint8_t *buf = NULL;
    spool__seg_path(path, sizeof(path), p->dir, s->base, ".index");
    int fd = log->io->open(path, log->read_only ? O_RDONLY : O_RDWR | O_CREAT, 0640);
    if (fd < 0) {
        return 0;
    }
    if (!log->read_only) {
        s->index_fd = fd;
    }
    if (fstat(fd, &st) < 0 || st.st_size % 8 != 0 || st.st_size == 0) {
        goto out;
    }
    buf = malloc((size_t)st.st_size);
    if (buf == NULL || log->io->pread(fd, buf, (size_t)st.st_size, 0) != (long)st.st_size) {
        goto out;
    }
    s->nidx = 0;
    for (int64_t i = 0; i < st.st_size / 8; i++) {
        uint32_t rel = get32(buf + i * 8);
        uint32_t pos = get32(buf + i * 8 + 4);
        if ((i == 0 && (rel != 0 || pos != 0)) || (int64_t)pos >= file_size ||
            (i > 0 && (rel <= s->idx[i - 1].rel || pos <= s->idx[i - 1].pos))) {
            s->nidx = 0;
            goto out;
        }
        if (spool__seg_index_add(log, s, s->base + rel, pos) < 0) {
            s->nidx = 0;
            goto out;
        }
    }
    s->idx_on_disk = s->nidx;
    ok = 1;
out:
    free(buf);
    if (log->read_only) {
        log->io->close(fd);
    }
    if (!ok) {
        s->nidx = 0;
        s->idx_on_disk = 0;
        s->last_index_pos = -1;
    }
    return ok;
}

long spool__seg_peek(spool_plog *log, spool__seg *s, int64_t pos, int64_t limit,
                     spool_rb_info *info)
{
    uint8_t h[SPOOL__BATCH_PEEK];
    if (limit - pos < SPOOL__BATCH_PEEK) {
        return 0; /* no batch is shorter than its header: incomplete */
    }
    long n = log->io->pread(s->fd, h, sizeof(h), pos);
    if (n < 0) {
        return -errno;
    }
    if (n < (long)sizeof(h)) {
        return 0;
    }
    int32_t blen = (int32_t)get32(h + 8);
    if (h[16] != 2 || blen < SPOOL_RB_HEADER_SIZE - SPOOL_RB_LOG_OVERHEAD ||
        blen > SPOOL__MAX_BATCH) {
        return -EBADMSG;
    }
    memset(info, 0, sizeof(*info));
    info->base_offset = (int64_t)get64(h);
    info->batch_length = blen;
    info->crc = get32(h + 17);
    info->attributes = (int16_t)((h[21] << 8) | h[22]);
    info->last_offset_delta = (int32_t)get32(h + 23);
    info->base_timestamp = (int64_t)get64(h + 27);
    info->max_timestamp = (int64_t)get64(h + 35);
    if (info->last_offset_delta < 0) {
        return -EBADMSG;
    }
    long size = (long)blen + SPOOL_RB_LOG_OVERHEAD;
    if (pos + size > limit) {
        return 0;
    }
    return size;
}

int spool__seg_find(spool_plog *log, spool__seg *s, int64_t offset, int64_t limit, int64_t *pos)
{
    int64_t at = 0;
    if (offset > s->base && s->nidx > 0) {
        size_t lo = 0, hi = s->nidx;
        uint64_t rel = (uint64_t)(offset - s->base);
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (s->idx[mid].rel <= rel) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        at = s->idx[lo].rel <= rel ? s->idx[lo].pos : 0;
    }
    while (at < limit) {
        spool_rb_info info = {0};
        long n = spool__seg_peek(log, s, at, limit, &info);
        if (n <= 0) {
            *pos = at;
            return n == 0 ? 0 : (int)n;
        }
        if (info.base_offset + info.last_offset_delta >= offset) {
            break;
        }
        at += n;
    }
    *pos = at < limit ? at : limit;
    return 0;
}

int spool__seg_index_due(spool_plog *log, spool__part *p, spool__seg *s, int64_t pos)
{
    int64_t every = log->topics[p->topic].conf.index_interval_bytes;
    return s->last_index_pos < 0 || pos - s->last_index_pos >= (every > 0 ? every : 4096);
}

int64_t spool__seg_resync(spool_plog *log, spool__seg *s, int64_t from, int64_t limit,
                          int64_t min_base, int64_t *base)
{
    const size_t win = 1 << 20;
    const size_t hdr = SPOOL_RB_HEADER_SIZE;
    uint8_t *buf = malloc(win + hdr);
    uint8_t *batch = NULL;
    int64_t found = -1;
    if (buf == NULL) {
        return -1;
    }
    /* Windows of `win` candidate positions, each read with the header bytes
     * of its last candidate; a candidate that looks like a header is read
     * whole and its CRC checked. */
    for (int64_t at = from; found < 0 && at + (int64_t)hdr <= limit; at += (int64_t)win) {
        size_t want = limit - at < (int64_t)(win + hdr - 1) ? (size_t)(limit - at) : win + hdr - 1;
        long n = log->io->pread(s->fd, buf, want, at);
        if (n < (long)hdr) {
            break;
        }
        for (size_t q = 0; q + hdr <= (size_t)n && q < win; q++) {
            const uint8_t *b = buf + q;
            if (b[16] != 2) {
                continue;
            }
            int64_t bo =
                (int64_t)(((uint64_t)b[0] << 56) | ((uint64_t)b[1] << 48) | ((uint64_t)b[2] << 40) |
                          ((uint64_t)b[3] << 32) | ((uint64_t)b[4] << 24) | ((uint64_t)b[5] << 16) |
                          ((uint64_t)b[6] << 8) | b[7]);
            uint32_t blen =
                ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
            int64_t pos = at + (int64_t)q;
            size_t sz = (size_t)blen + SPOOL_RB_LOG_OVERHEAD;
            if (bo < min_base || blen > SPOOL__MAX_BATCH || sz < hdr || pos + (int64_t)sz > limit) {
                continue;
            }
            uint8_t *nb = realloc(batch, sz);
            if (nb == NULL) {
                goto out;
            }
            batch = nb;
            spool_rb_info info;
            if (log->io->pread(s->fd, batch, sz, pos) == (long)sz &&
                spool_rb_parse_header(batch, sz, 1, &info) == (long)sz) {
                found = pos;
                *base = bo;
                break;
            }
        }
    }
out:
    free(batch);
    free(buf);
    return found;
}
