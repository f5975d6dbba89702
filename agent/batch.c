/*
 * batch.c: batches of records built by inputs and carried through the
 * pipeline to the log writer.
 *
 * A batch owns one growable byte arena holding every key, value and header
 * of its records; records and headers refer to it by offset, so the arena
 * may grow (realloc) without invalidating anything. Views with pointers are
 * materialized on demand for readers (processors, the writer). Appending a
 * record costs a memcpy of its bytes and, amortized, no allocation.
 *
 * A batch may carry source positions (tail offsets, journal cursors) that
 * become durable atomically with its records, and a durable-acknowledgement
 * handle for inputs that answer their senders only once data is safe.
 *
 * Memory (memory.c): a batch's footprint (arena and arrays, see
 * batch_footprint) is charged to the memory account as it grows, by the
 * growth (amortized: a charge per doubling, never per record), and released
 * when the batch is freed. Pooled batches stay charged (their memory is
 * still held); the pool is trimmed first when someone needs room, and holds
 * at most an eighth of memory_limit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define BATCH_ARENA_INITIAL (64 * 1024)

struct spool__durable {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;    /* submitter + writer */
    int done;    /* result is final */
    int result;  /* 0 or -errno */
};

/*
 * A small pool of emptied batches: the pipeline frees a batch in the writer
 * and an input creates the next one, so reusing their arrays and arenas
 * (already faulted in) saves an mmap, page faults and a munmap per batch.
 * Batches with an arena larger than BATCH_POOL_MAX_ARENA are not kept, and
 * the batches kept (arenas and arrays) add up to at most BATCH_POOL_MAX_BYTES
 * (an aggregator's http input builds batches of several MiB per request).
 */
#define BATCH_POOL_SIZE 8
#define BATCH_POOL_MAX_ARENA (16u << 20)
#define BATCH_POOL_MAX_BYTES (96u << 20)
#define BATCH_POOL_LIMIT_SHARE 8 /* the pool holds at most memory_limit / 8 */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static spool_batch *pool[BATCH_POOL_SIZE];
static size_t pool_count;
static size_t pool_bytes; /* sum of the pooled batches' batch_footprint() */

/* Bytes a batch keeps allocated: arena and arrays. */
static size_t batch_footprint(const spool_batch *b)
{
    return b->acap + b->cap * sizeof(*b->recs) + b->hcap * sizeof(*b->hdrs) +
           b->views_cap * sizeof(*b->views) + b->hviews_cap * sizeof(*b->hviews);
}

spool_batch *spool_batch_create(spool_instance *ins)
{
    spool_batch *b = NULL;
    pthread_mutex_lock(&pool_lock);
    if (pool_count) {
        b = pool[--pool_count];
        pool_bytes -= batch_footprint(b);
    }
    pthread_mutex_unlock(&pool_lock);
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b) {
            return NULL;
        }
    }
    b->ins = ins;
    b->topic = ins ? ins->topic : 0;
    return b;
}

/* Empties b for reuse, keeping its allocations. */
static void batch_free(spool_batch *b)
{
    spool__mem_release(batch_footprint(b));
    free(b->pos);
    free(b->recs);
    free(b->hdrs);
    free(b->arena);
    free(b->views);
    free(b->hviews);
    free(b);
}

size_t spool__batch_pool_trim(void)
{
    spool_batch *gone[BATCH_POOL_SIZE];
    size_t n, bytes;
    pthread_mutex_lock(&pool_lock);
    n = pool_count;
    bytes = pool_bytes;
    for (size_t i = 0; i < n; i++) {
        gone[i] = pool[i];
    }
    pool_count = 0;
    pool_bytes = 0;
    pthread_mutex_unlock(&pool_lock);
    for (size_t i = 0; i < n; i++) {
        batch_free(gone[i]);
    }
    return bytes;
}

static void batch_reset(spool_batch *b)
{
    for (size_t i = 0; i < b->npos; i++) {
        free(b->pos[i].source);
        free(b->pos[i].pos);
    }
    b->npos = 0;
    if (b->durable) {
        spool__durable_release(b->durable);
        b->durable = NULL;
    }
    memset(&b->link, 0, sizeof(b->link));
    b->ins = NULL;
    b->topic = 0;
    b->count = 0;
    b->hcount = 0;
    b->alen = 0;
    b->bytes = 0;
}

void spool_batch_destroy(spool_batch *b)
{
    if (!b) {
        return;
    }
    batch_reset(b);
    size_t max_bytes = BATCH_POOL_MAX_BYTES;
    int64_t limit = spool__mem_limit();
    if (limit && (size_t)limit / BATCH_POOL_LIMIT_SHARE < max_bytes) {
        max_bytes = (size_t)limit / BATCH_POOL_LIMIT_SHARE;
    }
    if (b->acap <= BATCH_POOL_MAX_ARENA) {
        pthread_mutex_lock(&pool_lock);
        size_t fp = batch_footprint(b);
        if (pool_count < BATCH_POOL_SIZE && pool_bytes + fp <= max_bytes) {
            pool[pool_count++] = b;
            pool_bytes += fp;
            b = NULL;
        }
        pthread_mutex_unlock(&pool_lock);
        if (!b) {
            return;
        }
    }
    batch_free(b);
}

/* Grows *p to hold need elements (doubling). Growth of the arrays in
 * batch_footprint is charged to the memory account (charge = 1). */
static int grow_acct(void **p, size_t *cap, size_t need, size_t elem, size_t initial, int charge)
{
    if (need <= *cap) {
        return 0;
    }
    size_t n = *cap ? *cap : initial;
    while (n < need) {
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (!q) {
        return -ENOMEM;
    }
    if (charge) {
        spool__mem_charge((n - *cap) * elem);
    }
    *p = q;
    *cap = n;
    return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, size_t initial)
{
    return grow_acct(p, cap, need, elem, initial, 1);
}

/* Copies n bytes into the arena; *off gets their offset. */
static int arena_put(spool_batch *b, const void *src, size_t n, uint32_t *off)
{
    if (b->alen + n > UINT32_MAX) {
        return -E2BIG;
    }
    if (grow((void **)&b->arena, &b->acap, b->alen + n, 1, BATCH_ARENA_INITIAL) < 0) {
        return -ENOMEM;
    }
    *off = (uint32_t)b->alen;
    if (n) {
        memcpy(b->arena + b->alen, src, n);
    }
    b->alen += n;
    return 0;
}

int spool_batch_append(spool_batch *b, const spool_record *r)
{
    size_t alen0 = b->alen, hcount0 = b->hcount;
    spool__brec *br;
    int rc;

    if ((rc = grow((void **)&b->recs, &b->cap, b->count + 1, sizeof(*b->recs), 256)) < 0) {
        return rc;
    }
    if ((rc = grow((void **)&b->hdrs, &b->hcap, b->hcount + r->header_count, sizeof(*b->hdrs),
                   256)) < 0) {
        return rc;
    }
    br = &b->recs[b->count];
    br->key_len = r->key ? r->key_len : -1;
    br->value_len = r->value ? r->value_len : -1;
    br->key_off = br->value_off = 0;
    if (br->key_len > 0 && (rc = arena_put(b, r->key, (size_t)r->key_len, &br->key_off)) < 0) {
        goto fail;
    }
    if (br->value_len > 0 &&
        (rc = arena_put(b, r->value, (size_t)r->value_len, &br->value_off)) < 0) {
        goto fail;
    }
    br->hdr_first = (uint32_t)b->hcount;
    br->hdr_count = r->header_count;
    size_t bytes = (size_t)(br->key_len > 0 ? br->key_len : 0) +
                   (size_t)(br->value_len > 0 ? br->value_len : 0);
    for (uint32_t i = 0; i < r->header_count; i++) {
        const spool_header *h = &r->headers[i];
        spool__bhdr *bh = &b->hdrs[b->hcount];
        bh->key_len = h->key_len;
        bh->value_len = h->value ? h->value_len : -1;
        bh->value_off = 0;
        if ((rc = arena_put(b, h->key, h->key_len, &bh->key_off)) < 0) {
            goto fail;
        }
        if (bh->value_len > 0 &&
            (rc = arena_put(b, h->value, (size_t)h->value_len, &bh->value_off)) < 0) {
            goto fail;
        }
        bytes += h->key_len + (size_t)(bh->value_len > 0 ? bh->value_len : 0);
        b->hcount++;
    }
    br->timestamp = r->timestamp ? r->timestamp : spool_now_ms();
    b->bytes += bytes;
    b->count++;
    return 0;
fail:
    b->alen = alen0;
    b->hcount = hcount0;
    return rc;
}

size_t spool_batch_count(const spool_batch *b)
{
    return b->count;
}

size_t spool_batch_bytes(const spool_batch *b)
{
    return b->bytes;
}

static void fill_view(const spool_batch *b, size_t i, spool_record *out, spool_header *hv)
{
    const spool__brec *br = &b->recs[i];
    out->key_len = br->key_len;
    out->key = br->key_len >= 0 ? b->arena + br->key_off : NULL;
    if (br->key_len == 0) {
        out->key = (const uint8_t *)"";
    }
    out->value_len = br->value_len;
    out->value = br->value_len > 0 ? b->arena + br->value_off
                                   : (br->value_len == 0 ? (const uint8_t *)"" : NULL);
    out->headers = hv;
    out->header_count = br->hdr_count;
    out->timestamp = br->timestamp;
    out->partition = -1;
    out->offset = -1;
}

static int build_hviews(spool_batch *b)
{
    if (grow((void **)&b->hviews, &b->hviews_cap, b->hcount ? b->hcount : 1, sizeof(*b->hviews),
             64) < 0) {
        return -ENOMEM;
    }
    for (size_t j = 0; j < b->hcount; j++) {
        const spool__bhdr *bh = &b->hdrs[j];
        spool_header *h = &b->hviews[j];
        h->key = (const char *)b->arena + bh->key_off;
        h->key_len = bh->key_len;
        h->value_len = bh->value_len;
        h->value = bh->value_len > 0 ? b->arena + bh->value_off
                                     : (bh->value_len == 0 ? (const uint8_t *)"" : NULL);
    }
    return 0;
}

void spool_batch_get(const spool_batch *b, size_t i, spool_record *out)
{
    /* Views of headers are rebuilt each call so they follow arena moves;
     * the cast is safe: only derived, cached data changes. */
    spool_batch *mb = (spool_batch *)b;
    if (build_hviews(mb) < 0) {
        memset(out, 0, sizeof(*out));
        return;
    }
    fill_view(b, i, out, mb->hviews + b->recs[i].hdr_first);
}

int spool__batch_views(spool_batch *b, spool_record **recs)
{
    if (build_hviews(b) < 0 ||
        grow((void **)&b->views, &b->views_cap, b->count ? b->count : 1, sizeof(*b->views), 64) <
            0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->count; i++) {
        fill_view(b, i, &b->views[i], b->hviews + b->recs[i].hdr_first);
    }
    *recs = b->views;
    return 0;
}

int spool_batch_set_key(spool_batch *b, size_t i, const void *key, int32_t key_len)
{
    uint32_t off = 0;
    if (key && key_len > 0) {
        int rc = arena_put(b, key, (size_t)key_len, &off);
        if (rc < 0) {
            return rc;
        }
    }
    spool__brec *br = &b->recs[i];
    if (br->key_len > 0) {
        b->bytes -= (size_t)br->key_len;
    }
    br->key_off = off;
    br->key_len = key ? key_len : -1;
    if (key_len > 0) {
        b->bytes += (size_t)key_len;
    }
    return 0;
}

int spool_batch_set_position(spool_batch *b, const char *source, const void *pos, size_t len)
{
    const char *iname = b->ins ? b->ins->name : "";
    size_t slen = strlen(iname) + 1 + strlen(source) + 1;
    char *full = malloc(slen);
    void *copy = NULL;
    if (!full) {
        return -ENOMEM;
    }
    snprintf(full, slen, "%s/%s", iname, source);
    if (pos && len) {
        copy = malloc(len);
        if (!copy) {
            free(full);
            return -ENOMEM;
        }
        memcpy(copy, pos, len);
    }
    for (size_t i = 0; i < b->npos; i++) {
        if (strcmp(b->pos[i].source, full) == 0) {
            free(full);
            free(b->pos[i].pos);
            b->pos[i].pos = copy;
            b->pos[i].len = copy ? len : 0;
            return 0;
        }
    }
    if (grow_acct((void **)&b->pos, &b->pos_cap, b->npos + 1, sizeof(*b->pos), 4, 0) < 0) {
        free(full);
        free(copy);
        return -ENOMEM;
    }
    b->pos[b->npos].source = full;
    b->pos[b->npos].pos = copy;
    b->pos[b->npos].len = copy ? len : 0;
    b->npos++;
    return 0;
}

const spool_header *spool_record_header(const spool_record *r, const char *name)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < r->header_count; i++) {
        if (r->headers[i].key_len == n && memcmp(r->headers[i].key, name, n) == 0) {
            return &r->headers[i];
        }
    }
    return NULL;
}

/* ---- durable acknowledgement ---- */

spool__durable *spool__durable_new(void)
{
    spool__durable *d = calloc(1, sizeof(*d));
    if (!d) {
        return NULL;
    }
    pthread_mutex_init(&d->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cond, &ca);
    pthread_condattr_destroy(&ca);
    d->refs = 2;
    return d;
}

void spool__durable_done(spool__durable *d, int result)
{
    pthread_mutex_lock(&d->lock);
    if (!d->done) {
        d->done = 1;
        d->result = result;
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
}

void spool__durable_release(spool__durable *d)
{
    pthread_mutex_lock(&d->lock);
    int left = --d->refs;
    pthread_mutex_unlock(&d->lock);
    if (left == 0) {
        pthread_mutex_destroy(&d->lock);
        pthread_cond_destroy(&d->cond);
        free(d);
    }
}

/* Waits for the result at most timeout_ms (-1 forever); -ETIMEDOUT. */
int spool__durable_wait(spool__durable *d, int64_t timeout_ms)
{
    struct timespec dl;
    int rc;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (timeout_ms % 1000) * 1000000;
        if (dl.tv_nsec >= 1000000000) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&d->lock);
    while (!d->done) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&d->cond, &d->lock);
        } else if (pthread_cond_timedwait(&d->cond, &d->lock, &dl) == ETIMEDOUT) {
            break;
        }
    }
    rc = d->done ? d->result : -ETIMEDOUT;
    pthread_mutex_unlock(&d->lock);
    return rc;
}
