/*
 * checkpoint.c: the commit point. Two slots, state/checkpoint.0 and .1,
 * written alternately (slot = sequence & 1), each:
 *   "SPCK" | version u32 (1) | sequence u64 | payload length u32 |
 *   CRC-32C u32 (of the 20 bytes before it, then the payload) | payload
 * payload: partitions u32, then per partition: topic length u16, topic,
 *   partition i32, end offset i64, bytes i64; positions u32, then per
 *   position: source length u16, source, position length u32, position.
 * All integers big-endian. A torn slot fails its CRC and the other slot
 * (the previous commit) is used. Also the small position table type.
 * It does not sync the data the checkpoint describes (log.c does, first).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log_int.h"

#define CKPT_MAGIC 0x5350434bu /* "SPCK" */
#define CKPT_VERSION 1
#define CKPT_HEADER 24
#define CKPT_MAX (256u << 20)

/* ---- position tables ---- */

/* Positions are looked up by source on every batch that carries one, so
 * the table keeps a hash index (FNV-1a, linear probing) beside its array.
 * Removal is rare (a rotated file finished): it rebuilds the index. */
static uint32_t pos_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static int pos_index_rebuild(spool__pos_table *t, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2 + 2) {
        cap *= 2;
    }
    uint32_t *idx = calloc(cap, sizeof(*idx));
    if (idx == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < t->count; i++) {
        size_t h = pos_hash(t->items[i].source) & (cap - 1);
        while (idx[h]) {
            h = (h + 1) & (cap - 1);
        }
        idx[h] = (uint32_t)i + 1;
    }
    free(t->index);
    t->index = idx;
    t->index_cap = cap;
    return 0;
}

const spool__pos *spool__pos_table_find(const spool__pos_table *t, const char *source)
{
    if (t->index_cap == 0) {
        return NULL;
    }
    size_t h = pos_hash(source) & (t->index_cap - 1);
    while (t->index[h]) {
        const spool__pos *e = &t->items[t->index[h] - 1];
        if (strcmp(e->source, source) == 0) {
            return e;
        }
        h = (h + 1) & (t->index_cap - 1);
    }
    return NULL;
}

int spool__pos_table_set(spool__pos_table *t, const char *source, const void *pos, size_t len)
{
    spool__pos *e = (spool__pos *)spool__pos_table_find(t, source);
    if (len == 0) {
        if (e != NULL) {
            free(e->source);
            free(e->data);
            *e = t->items[--t->count];
            return pos_index_rebuild(t, t->count);
        }
        return 0;
    }
    uint8_t *data = malloc(len);
    if (data == NULL) {
        return -ENOMEM;
    }
    memcpy(data, pos, len);
    if (e == NULL) {
        if (t->count == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 16;
            spool__pos *n = realloc(t->items, cap * sizeof(*n));
            if (n == NULL) {
                free(data);
                return -ENOMEM;
            }
            t->items = n;
            t->cap = cap;
        }
        if ((t->count + 1) * 2 >= t->index_cap && pos_index_rebuild(t, t->count + 1) < 0) {
            free(data);
            return -ENOMEM;
        }
        e = &t->items[t->count];
        e->source = strdup(source);
        if (e->source == NULL) {
            free(data);
            return -ENOMEM;
        }
        size_t h = pos_hash(source) & (t->index_cap - 1);
        while (t->index[h]) {
            h = (h + 1) & (t->index_cap - 1);
        }
        t->index[h] = (uint32_t)t->count + 1;
        t->count++;
    } else {
        free(e->data);
    }
    e->data = data;
    e->len = len;
    return 0;
}

void spool__pos_table_free(spool__pos_table *t)
{
    for (size_t i = 0; i < t->count; i++) {
        free(t->items[i].source);
        free(t->items[i].data);
    }
    free(t->items);
    free(t->index);
    memset(t, 0, sizeof(*t));
}

/* Copies src (whose sources are unique) without a lookup per entry. */
static int pos_table_copy(spool__pos_table *dst, const spool__pos_table *src)
{
    memset(dst, 0, sizeof(*dst));
    if (src->count == 0) {
        return 0;
    }
    dst->items = calloc(src->count, sizeof(*dst->items));
    if (dst->items == NULL) {
        return -ENOMEM;
    }
    dst->cap = src->count;
    for (size_t i = 0; i < src->count; i++) {
        spool__pos *d = &dst->items[i];
        d->source = strdup(src->items[i].source);
        d->data = malloc(src->items[i].len);
        dst->count = i + 1;
        if (d->source == NULL || d->data == NULL) {
            spool__pos_table_free(dst);
            return -ENOMEM;
        }
        memcpy(d->data, src->items[i].data, src->items[i].len);
        d->len = src->items[i].len;
    }
    if (pos_index_rebuild(dst, dst->count) < 0) {
        spool__pos_table_free(dst);
        return -ENOMEM;
    }
    return 0;
}

/* ---- encoding helpers ---- */

static int put(spool_buf *b, uint64_t v, int bytes)
{
    uint8_t tmp[8];
    for (int i = 0; i < bytes; i++) {
        tmp[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    }
    return spool_buf_append(b, tmp, (size_t)bytes);
}

typedef struct reader {
    const uint8_t *p;
    size_t left;
    int bad;
} reader;

static uint64_t get(reader *r, int bytes)
{
    uint64_t v = 0;
    if (r->left < (size_t)bytes) {
        r->bad = 1;
        return 0;
    }
    for (int i = 0; i < bytes; i++) {
        v = (v << 8) | r->p[i];
    }
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

static const uint8_t *take(reader *r, size_t n)
{
    if (r->left < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

/* ---- write ---- */

static int build(spool_plog *log, uint64_t seq, spool_buf *b)
{
    int rc = 0;
    size_t nparts = 0;
    for (size_t t = 0; t < log->ntopics; t++) {
        nparts += (size_t)log->topics[t].conf.partitions;
    }
    b->len = 0;
    rc |= spool_buf_append(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", CKPT_HEADER);
    rc |= put(b, nparts, 4);
    for (size_t t = 0; t < log->ntopics; t++) {
        const spool__topic *tp = &log->topics[t];
        size_t tl = strlen(tp->conf.name);
        for (int32_t i = 0; i < tp->conf.partitions; i++) {
            const spool__part *p = &tp->parts[i];
            rc |= put(b, tl, 2);
            rc |= spool_buf_append(b, tp->conf.name, tl);
            rc |= put(b, (uint32_t)i, 4);
            rc |= put(b, (uint64_t)p->end, 8);
            rc |= put(b, (uint64_t)p->bytes, 8);
        }
    }
    const spool__pos_table *pt = &log->pos_staged;
    rc |= put(b, pt->count, 4);
    for (size_t i = 0; i < pt->count; i++) {
        size_t sl = strlen(pt->items[i].source);
        if (sl > 65535) {
            sl = 65535;
        }
        rc |= put(b, sl, 2);
        rc |= spool_buf_append(b, pt->items[i].source, sl);
        rc |= put(b, pt->items[i].len, 4);
        rc |= spool_buf_append(b, pt->items[i].data, pt->items[i].len);
    }
    if (rc != 0) {
        return -ENOMEM;
    }
    size_t plen = b->len - CKPT_HEADER;
    uint8_t *h = b->data;
    spool_buf hb = {.data = h, .len = 0, .cap = CKPT_HEADER};
    put(&hb, CKPT_MAGIC, 4);
    put(&hb, CKPT_VERSION, 4);
    put(&hb, seq, 8);
    put(&hb, plen, 4);
    uint32_t crc = spool_crc32c(0, h, 20);
    crc = spool_crc32c(crc, h + CKPT_HEADER, plen);
    put(&hb, crc, 4);
    return 0;
}

int spool__ckpt_write(spool_plog *log, int sync)
{
    char path[4096];
    /* The buffer stays between commits: a checkpoint holds every position
     * (1.3 MB for 10,000 tailed files), and growing it afresh at each commit
     * (realloc, page faults) was a quarter of the commit's time. */
    spool_buf b = log->ckpt_buf;
    uint64_t seq = log->ckpt_seq + 1;
    int slot = (int)(seq & 1);
    int created = 0;
    int rc = build(log, seq, &b);
    if (rc < 0) {
        goto out;
    }
    if (log->ckpt_fd[slot] < 0) {
        snprintf(path, sizeof(path), "%s/state/checkpoint.%d", log->data_dir, slot);
        created = access(path, F_OK) != 0;
        log->ckpt_fd[slot] = log->io->open(path, O_RDWR | O_CREAT, 0640);
        if (log->ckpt_fd[slot] < 0) {
            rc = -errno;
            goto fail;
        }
    }
    int fd = log->ckpt_fd[slot];
    long w = log->io->pwrite(fd, b.data, b.len, 0);
    if (w != (long)b.len) {
        rc = w < 0 ? -errno : -ENOSPC;
        goto fail;
    }
    if (log->io->ftruncate(fd, (int64_t)b.len) < 0) {
        rc = -errno;
        goto fail;
    }
    if (sync) {
        if (log->io->fdatasync(fd) < 0) {
            rc = -errno;
            goto fail;
        }
        if (created) {
            snprintf(path, sizeof(path), "%s/state", log->data_dir);
            if ((rc = spool__fsync_dir(path)) < 0) {
                goto fail;
            }
        }
    }
    log->ckpt_unsynced = !sync;
    log->ckpt_seq = seq;
    log->ckpt_dirty = 0;
    for (size_t t = 0; t < log->ntopics; t++) {
        for (int32_t i = 0; i < log->topics[t].conf.partitions; i++) {
            log->topics[t].parts[i].committed_end = log->topics[t].parts[i].end;
        }
    }
    if (log->pos_dirty) {
        spool__pos_table copy;
        if (pos_table_copy(&copy, &log->pos_staged) == 0) {
            pthread_mutex_lock(&log->pub_mu);
            spool__pos_table_free(&log->pos_ckpt);
            log->pos_ckpt = copy;
            log->pos_published_dirty = 1;
            pthread_mutex_unlock(&log->pub_mu);
            log->pos_dirty = 0;
        }
    }
    goto out;
fail:
    snprintf(log->last_error, sizeof(log->last_error),
             "cannot write checkpoint slot %d in %s/state: %s", slot, log->data_dir, strerror(-rc));
out:
    log->ckpt_buf = b;
    return rc;
}

/* ---- load ---- */

static int parse(const uint8_t *data, size_t len, spool__ckpt *c)
{
    reader r = {data, len, 0};
    if (get(&r, 4) != CKPT_MAGIC || get(&r, 4) != CKPT_VERSION) {
        return -EBADMSG;
    }
    c->seq = get(&r, 8);
    uint32_t plen = (uint32_t)get(&r, 4);
    uint32_t crc = (uint32_t)get(&r, 4);
    if (r.bad || plen > r.left) {
        return -EBADMSG;
    }
    uint32_t want = spool_crc32c(0, data, 20);
    want = spool_crc32c(want, data + CKPT_HEADER, plen);
    if (want != crc) {
        return -EBADMSG;
    }
    r.left = plen;
    uint32_t np = (uint32_t)get(&r, 4);
    if (r.bad || np > plen / 22) {
        return -EBADMSG;
    }
    c->parts = calloc(np ? np : 1, sizeof(*c->parts));
    if (c->parts == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < np && !r.bad; i++) {
        size_t tl = (size_t)get(&r, 2);
        const uint8_t *tn = take(&r, tl);
        if (tn == NULL) {
            break;
        }
        spool__ckpt_part *cp = &c->parts[c->nparts];
        cp->topic = strndup((const char *)tn, tl);
        if (cp->topic == NULL) {
            return -ENOMEM;
        }
        c->nparts++;
        cp->partition = (int32_t)get(&r, 4);
        cp->end_offset = (int64_t)get(&r, 8);
        cp->size = (int64_t)get(&r, 8);
    }
    uint32_t npos = (uint32_t)get(&r, 4);
    for (uint32_t i = 0; i < npos && !r.bad; i++) {
        size_t sl = (size_t)get(&r, 2);
        const uint8_t *sn = take(&r, sl);
        size_t pl = (size_t)get(&r, 4);
        const uint8_t *pd = take(&r, pl);
        if (r.bad) {
            break;
        }
        char *src = strndup((const char *)sn, sl);
        if (src == NULL) {
            return -ENOMEM;
        }
        int rc = spool__pos_table_set(&c->positions, src, pd, pl);
        free(src);
        if (rc < 0) {
            return rc;
        }
    }
    return r.bad ? -EBADMSG : 0;
}

int spool__ckpt_load(spool_plog *log, spool__ckpt *out)
{
    memset(out, 0, sizeof(*out));
    int found = 0;
    int present = 0;
    for (int slot = 0; slot < 2; slot++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/state/checkpoint.%d", log->data_dir, slot);
        int fd = log->io->open(path, O_RDONLY, 0);
        if (fd < 0) {
            continue;
        }
        present = 1;
        uint8_t *buf = NULL;
        if (fstat(fd, &st) == 0 && st.st_size >= CKPT_HEADER && st.st_size <= CKPT_MAX &&
            (buf = malloc((size_t)st.st_size)) != NULL &&
            log->io->pread(fd, buf, (size_t)st.st_size, 0) == (long)st.st_size) {
            spool__ckpt c = {0};
            int rc = parse(buf, (size_t)st.st_size, &c);
            if (rc == 0 && (!found || c.seq > out->seq)) {
                spool__ckpt_free(out);
                *out = c;
                found = 1;
            } else {
                spool__ckpt_free(&c);
                if (rc == -ENOMEM) {
                    free(buf);
                    log->io->close(fd);
                    return rc;
                }
            }
        }
        free(buf);
        log->io->close(fd);
    }
    out->damaged = present && !found; /* the opener decides what that means */
    return found;
}

void spool__ckpt_free(spool__ckpt *c)
{
    for (size_t i = 0; i < c->nparts; i++) {
        free(c->parts[i].topic);
    }
    free(c->parts);
    spool__pos_table_free(&c->positions);
    memset(c, 0, sizeof(*c));
}

int64_t spool__ckpt_end(const spool__ckpt *c, const char *topic, int32_t partition, int *found)
{
    for (size_t i = 0; i < c->nparts; i++) {
        if (c->parts[i].partition == partition && strcmp(c->parts[i].topic, topic) == 0) {
            *found = 1;
            return c->parts[i].end_offset;
        }
    }
    *found = 0;
    return 0;
}
