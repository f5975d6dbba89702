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
 * Processors change records in place (docs/plugins.md, "Processors"):
 * every mutation copies the new bytes into the arena and leaves the old
 * ones where they are (the arena only grows while a batch lives). A
 * record's headers are one run of `hdrs`; a header mutation writes a new
 * run for that record only, so the header views (hviews, parallel to hdrs)
 * stay valid and are built incrementally, never all again per call (only
 * after the arena moved). While a batch is lent to a processor
 * (spool__batch_begin/end_process) memory a mutation replaces (a grown
 * arena, a grown view array) is kept until the call ends, so pointers the
 * processor got from getters stay valid until then. Drops are flags and
 * emitted records are appended behind the visible ones; when process()
 * returns, the batch is compacted into its final order. Records given a
 * topic of their own are split into per-topic batches after the chain.
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

#include "codec/codec.h"
#include "core.h"

#define BATCH_ARENA_INITIAL (64 * 1024)

/* The positions of a batch split by topic: recorded only once every part
 * has all its records appended (a part parked behind a full topic holds
 * them back; a part given up keeps them from ever being recorded, so the
 * source replays). */
struct spool__bgroup {
    pthread_mutex_t lock;
    int refs; /* parts alive */
    int left; /* parts whose records are not all appended yet */
    spool__bpos *pos;
    size_t npos, pos_cap;
};

static void group_release(spool__bgroup *g)
{
    pthread_mutex_lock(&g->lock);
    int left = --g->refs;
    pthread_mutex_unlock(&g->lock);
    if (left) {
        return;
    }
    for (size_t i = 0; i < g->npos; i++) {
        free(g->pos[i].source);
        free(g->pos[i].pos);
    }
    free(g->pos);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

struct spool__durable {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;   /* submitter + writer (+ one per extra part of a split batch) */
    int parts;  /* parts not yet durable; done when 0 (or at the first failure) */
    int done;   /* result is final */
    int result; /* 0 or -errno */
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
           b->views_cap * sizeof(*b->views) + b->hviews_cap * sizeof(*b->hviews) +
           b->scratch_cap * sizeof(*b->scratch) + b->scratch_idx_cap * sizeof(*b->scratch_idx);
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
    free(b->scratch);
    free(b->scratch_idx);
    free(b->retired);
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
    if (b->group) {
        group_release(b->group);
        b->group = NULL;
    }
    b->group_done = 0;
    if (b->durable) {
        spool__durable_release(b->durable);
        b->durable = NULL;
    }
    memset(&b->link, 0, sizeof(b->link));
    b->proc = NULL; /* a loan never outlives process(): nothing is retired here */
    b->nvisible = 0;
    b->topics_changed = 0;
    b->hviews_n = 0;
    b->hviews_base = NULL;
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

/* Like grow(), but while the batch is lent to a processor the old block
 * is kept (retired) until process() returns: the processor may still hold
 * pointers into it. `used` bytes are copied. */
static int grow_keep(spool_batch *b, void **p, size_t *cap, size_t need, size_t elem,
                     size_t initial, size_t used)
{
    if (!b->proc || need <= *cap || !*p) {
        return grow(p, cap, need, elem, initial);
    }
    if (grow_acct((void **)&b->retired, &b->retired_cap, b->nretired + 1, sizeof(*b->retired), 4,
                  0) < 0) {
        return -ENOMEM;
    }
    size_t n = *cap;
    while (n < need) {
        n *= 2;
    }
    void *q = malloc(n * elem);
    if (!q) {
        return -ENOMEM;
    }
    memcpy(q, *p, used);
    spool__mem_charge(n * elem); /* the old block stays charged until retired */
    b->retired[b->nretired].p = *p;
    b->retired[b->nretired].bytes = *cap * elem;
    b->nretired++;
    *p = q;
    *cap = n;
    return 0;
}

/* Copies n bytes into the arena; *off gets their offset. */
static int arena_put(spool_batch *b, const void *src, size_t n, uint32_t *off)
{
    if (b->alen + n > UINT32_MAX) {
        return -E2BIG;
    }
    if (grow_keep(b, (void **)&b->arena, &b->acap, b->alen + n, 1, BATCH_ARENA_INITIAL, b->alen) <
        0) {
        return -ENOMEM;
    }
    *off = (uint32_t)b->alen;
    if (n) {
        memcpy(b->arena + b->alen, src, n);
    }
    b->alen += n;
    return 0;
}

/* Copies n bytes to the arena at *at (room reserved by the caller); returns
 * their offset. */
static inline uint32_t arena_copy(spool_batch *b, size_t *at, const void *src, size_t n)
{
    uint32_t off = (uint32_t)*at;
    if (n) {
        spool__copy(b->arena + *at, src, n);
        *at += n;
    }
    return off;
}

/* One record: its bytes are summed first and the arena grown once, then
 * copied (a line's value and its headers: no check per field). */
int spool_batch_append(spool_batch *b, const spool_record *r)
{
    spool__brec *br;
    int rc;

    if (b->count + 1 > b->cap &&
        (rc = grow((void **)&b->recs, &b->cap, b->count + 1, sizeof(*b->recs), 256)) < 0) {
        return rc;
    }
    if (b->hcount + r->header_count > b->hcap &&
        (rc = grow((void **)&b->hdrs, &b->hcap, b->hcount + r->header_count, sizeof(*b->hdrs),
                   256)) < 0) {
        return rc;
    }
    int32_t key_len = r->key ? r->key_len : -1;
    int32_t value_len = r->value ? r->value_len : -1;
    size_t bytes = (size_t)(key_len > 0 ? key_len : 0) + (size_t)(value_len > 0 ? value_len : 0);
    size_t hbytes = 0;
    for (uint32_t i = 0; i < r->header_count; i++) {
        const spool_header *h = &r->headers[i];
        hbytes += h->key_len + (size_t)(h->value && h->value_len > 0 ? h->value_len : 0);
    }
    size_t need = bytes + hbytes;
    if (b->alen + need > UINT32_MAX) {
        return -E2BIG;
    }
    if (b->alen + need > b->acap && grow_keep(b, (void **)&b->arena, &b->acap, b->alen + need, 1,
                                              BATCH_ARENA_INITIAL, b->alen) < 0) {
        return -ENOMEM;
    }
    size_t at = b->alen;
    br = &b->recs[b->count];
    br->key_len = key_len;
    br->value_len = value_len;
    br->key_off = key_len > 0 ? arena_copy(b, &at, r->key, (size_t)key_len) : 0;
    br->value_off = value_len > 0 ? arena_copy(b, &at, r->value, (size_t)value_len) : 0;
    br->hdr_first = (uint32_t)b->hcount;
    br->hdr_count = r->header_count;
    for (uint32_t i = 0; i < r->header_count; i++) {
        const spool_header *h = &r->headers[i];
        spool__bhdr *bh = &b->hdrs[b->hcount + i];
        bh->key_len = h->key_len;
        bh->value_len = h->value ? h->value_len : -1;
        bh->key_off = arena_copy(b, &at, h->key, h->key_len);
        bh->value_off = bh->value_len > 0 ? arena_copy(b, &at, h->value, (size_t)bh->value_len) : 0;
    }
    b->alen = at;
    b->hcount += r->header_count;
    br->timestamp = r->timestamp ? r->timestamp : spool_now_ms();
    br->topic = -1;
    br->flags = b->proc ? SPOOL__BREC_EMITTED : 0;
    br->parent = SIZE_MAX; /* appended during process(): after every record */
    b->bytes += bytes + hbytes;
    b->count++;
    return 0;
}

size_t spool_batch_count(const spool_batch *b)
{
    return b->proc ? b->nvisible : b->count;
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

/* Builds the header views not built yet: all of them only after the arena
 * moved (amortized: the arena doubles), else those of runs written since. */
static int build_hviews(spool_batch *b)
{
    if (b->hviews_base != b->arena) {
        b->hviews_n = 0;
        b->hviews_base = b->arena;
    }
    if (b->hviews_n == b->hcount && b->hviews) {
        return 0;
    }
    if (grow_keep(b, (void **)&b->hviews, &b->hviews_cap, b->hcount ? b->hcount : 1,
                  sizeof(*b->hviews), 64, b->hviews_n * sizeof(*b->hviews)) < 0) {
        return -ENOMEM;
    }
    for (size_t j = b->hviews_n; j < b->hcount; j++) {
        const spool__bhdr *bh = &b->hdrs[j];
        spool_header *h = &b->hviews[j];
        h->key = (const char *)b->arena + bh->key_off;
        h->key_len = bh->key_len;
        h->value_len = bh->value_len;
        h->value = bh->value_len > 0 ? b->arena + bh->value_off
                                     : (bh->value_len == 0 ? (const uint8_t *)"" : NULL);
    }
    b->hviews_n = b->hcount;
    return 0;
}

void spool_batch_get(const spool_batch *b, size_t i, spool_record *out)
{
    /* Header views are built for what changed since the last call; the
     * cast is safe: only derived, cached data changes. */
    spool_batch *mb = (spool_batch *)b;
    if (build_hviews(mb) < 0) {
        memset(out, 0, sizeof(*out));
        return;
    }
    fill_view(b, i, out, mb->hviews + b->recs[i].hdr_first);
}

int spool__batch_views(spool_batch *b, spool_record **recs)
{
    if (build_hviews(b) < 0 || grow((void **)&b->views, &b->views_cap, b->count ? b->count : 1,
                                    sizeof(*b->views), 64) < 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->count; i++) {
        fill_view(b, i, &b->views[i], b->hviews + b->recs[i].hdr_first);
    }
    *recs = b->views;
    return 0;
}

static int rec_check(const spool_batch *b, size_t i);

int spool_batch_set_key(spool_batch *b, size_t i, const void *key, int32_t key_len)
{
    uint32_t off = 0;
    int crc = rec_check(b, i);
    if (crc < 0) {
        return crc;
    }
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

/* 0 if record i may be changed now: it exists (during process(): among
 * the records the processor sees) and was not dropped. */
static int rec_check(const spool_batch *b, size_t i)
{
    if (i >= (b->proc ? b->nvisible : b->count)) {
        return -EINVAL;
    }
    return b->recs[i].flags & SPOOL__BREC_DROPPED ? -ENOENT : 0;
}

static size_t hdr_bytes(const spool__bhdr *bh)
{
    return bh->key_len + (size_t)(bh->value_len > 0 ? bh->value_len : 0);
}

int spool_batch_set_value(spool_batch *b, size_t i, const void *value, int32_t value_len)
{
    uint32_t off = 0;
    int rc;
    if ((rc = rec_check(b, i)) < 0) {
        return rc;
    }
    if (value && value_len < 0) {
        return -EINVAL;
    }
    if (value && value_len > 0 && (rc = arena_put(b, value, (size_t)value_len, &off)) < 0) {
        return rc;
    }
    spool__brec *br = &b->recs[i];
    if (br->value_len > 0) {
        b->bytes -= (size_t)br->value_len;
    }
    br->value_off = off;
    br->value_len = value ? value_len : -1;
    if (br->value_len > 0) {
        b->bytes += (size_t)br->value_len;
    }
    return 0;
}

int spool_batch_set_timestamp(spool_batch *b, size_t i, int64_t timestamp_ms)
{
    int rc = rec_check(b, i);
    if (rc < 0) {
        return rc;
    }
    b->recs[i].timestamp = timestamp_ms ? timestamp_ms : spool_now_ms();
    return 0;
}

/* Header mutations. A record's headers are the run hdrs[hdr_first ..
 * hdr_first + hdr_count); a mutation writes a new run at the end of hdrs
 * (the old entries keep their offsets into the arena, no byte is copied)
 * and points the record at it. Earlier runs are never changed, so views of
 * them stay valid. */
enum { HDR_SET, HDR_ADD, HDR_REMOVE };

static int header_edit(spool_batch *b, size_t i, int op, const char *name, const void *value,
                       int32_t value_len)
{
    size_t nlen;
    int rc;
    if ((rc = rec_check(b, i)) < 0) {
        return rc;
    }
    if (!name || (value && value_len < 0) || (nlen = strlen(name)) > UINT32_MAX) {
        return -EINVAL;
    }
    spool__brec *br = &b->recs[i];
    size_t first = br->hdr_first, count = br->hdr_count, match = SIZE_MAX, nmatch = 0;
    for (size_t j = first; op != HDR_ADD && j < first + count; j++) { /* add: no match */
        if (b->hdrs[j].key_len == nlen && memcmp(b->arena + b->hdrs[j].key_off, name, nlen) == 0) {
            match = match == SIZE_MAX ? j : match;
            nmatch++;
        }
    }
    if (op == HDR_REMOVE && nmatch == 0) {
        return 0;
    }
    if (b->hcount + count + 1 > UINT32_MAX) {
        return -E2BIG;
    }
    if ((rc = grow((void **)&b->hdrs, &b->hcap, b->hcount + count + 1, sizeof(*b->hdrs), 256)) <
        0) {
        return rc;
    }
    spool__bhdr nh = {0};
    if (op != HDR_REMOVE) {
        size_t alen0 = b->alen;
        nh.key_len = (uint32_t)nlen;
        nh.value_len = value ? value_len : -1;
        if ((rc = arena_put(b, name, nlen, &nh.key_off)) < 0) {
            return rc;
        }
        if (nh.value_len > 0 &&
            (rc = arena_put(b, value, (size_t)nh.value_len, &nh.value_off)) < 0) {
            b->alen = alen0;
            return rc;
        }
    }
    if ((op == HDR_ADD || (op == HDR_SET && match == SIZE_MAX)) && first + count == b->hcount) {
        /* The record's run is the last one (a processor adding several fields to one
         * record): append to it in place, O(1), instead of copying the run. The slots
         * before stay as they are, so views already built stay valid. */
        b->hdrs[b->hcount++] = nh;
        br->hdr_first = (uint32_t)first;
        br->hdr_count = (uint32_t)(count + 1);
        b->bytes += hdr_bytes(&nh);
        return 0;
    }
    size_t start = b->hcount, n = 0;
    for (size_t j = first; j < first + count; j++) {
        if (j == match && op == HDR_SET) {
            b->bytes -= hdr_bytes(&b->hdrs[j]);
            b->hdrs[start + n++] = nh;
            b->bytes += hdr_bytes(&nh);
        } else if (j == match || (op == HDR_REMOVE && nmatch && b->hdrs[j].key_len == nlen &&
                                  memcmp(b->arena + b->hdrs[j].key_off, name, nlen) == 0)) {
            if (op == HDR_REMOVE) {
                b->bytes -= hdr_bytes(&b->hdrs[j]);
            } else {
                b->hdrs[start + n++] = b->hdrs[j];
            }
        } else {
            b->hdrs[start + n++] = b->hdrs[j];
        }
    }
    if (op == HDR_ADD || (op == HDR_SET && match == SIZE_MAX)) {
        b->hdrs[start + n++] = nh;
        b->bytes += hdr_bytes(&nh);
    }
    b->hcount += n;
    br->hdr_first = (uint32_t)start;
    br->hdr_count = (uint32_t)n;
    return 0;
}

int spool_batch_add_headers(spool_batch *b, size_t i, const spool_header *h, size_t n)
{
    size_t bytes = 0;
    int rc;
    if ((rc = rec_check(b, i)) < 0) {
        return rc;
    }
    if (n == 0) {
        return 0;
    }
    if (!h) {
        return -EINVAL;
    }
    for (size_t k = 0; k < n; k++) {
        if (!h[k].key || h[k].value_len < -1 || (h[k].value_len > 0 && !h[k].value)) {
            return -EINVAL;
        }
        bytes += h[k].key_len + (size_t)(h[k].value_len > 0 ? h[k].value_len : 0);
    }
    spool__brec *br = &b->recs[i];
    size_t first = br->hdr_first, count = br->hdr_count;
    int in_place = first + count == b->hcount; /* the record's run is the last one */
    size_t need = b->hcount + (in_place ? 0 : count) + n;
    if (need > UINT32_MAX || b->alen + bytes > UINT32_MAX) {
        return -E2BIG;
    }
    if ((rc = grow((void **)&b->hdrs, &b->hcap, need, sizeof(*b->hdrs), 256)) < 0 ||
        (rc = grow_keep(b, (void **)&b->arena, &b->acap, b->alen + bytes, 1, BATCH_ARENA_INITIAL,
                        b->alen)) < 0) {
        return rc;
    }
    if (!in_place) {
        /* A new run at the end: the old slots stay as they are, as do views of them. */
        memcpy(b->hdrs + b->hcount, b->hdrs + first, count * sizeof(*b->hdrs));
        first = b->hcount;
        b->hcount += count;
    }
    for (size_t k = 0; k < n; k++) {
        spool__bhdr nh = {0};
        nh.key_len = h[k].key_len;
        nh.key_off = (uint32_t)b->alen;
        memcpy(b->arena + b->alen, h[k].key, h[k].key_len);
        b->alen += h[k].key_len;
        nh.value_len = h[k].value ? h[k].value_len : -1;
        if (nh.value_len > 0) {
            nh.value_off = (uint32_t)b->alen;
            memcpy(b->arena + b->alen, h[k].value, (size_t)nh.value_len);
            b->alen += (size_t)nh.value_len;
        }
        b->hdrs[b->hcount++] = nh;
        b->bytes += hdr_bytes(&nh);
    }
    br->hdr_first = (uint32_t)first;
    br->hdr_count = (uint32_t)(count + n);
    return 0;
}

int spool_batch_set_header(spool_batch *b, size_t i, const char *name, const void *value,
                           int32_t value_len)
{
    return header_edit(b, i, HDR_SET, name, value, value_len);
}

int spool_batch_add_header(spool_batch *b, size_t i, const char *name, const void *value,
                           int32_t value_len)
{
    return header_edit(b, i, HDR_ADD, name, value, value_len);
}

int spool_batch_remove_header(spool_batch *b, size_t i, const char *name)
{
    return header_edit(b, i, HDR_REMOVE, name, NULL, -1);
}

const spool_header *spool_batch_header(const spool_batch *b, size_t i, const char *name)
{
    spool_batch *mb = (spool_batch *)b; /* only cached views change */
    if (i >= b->count || !name || build_hviews(mb) < 0) {
        return NULL;
    }
    const spool__brec *br = &b->recs[i];
    size_t n = strlen(name);
    for (size_t j = br->hdr_first; j < (size_t)br->hdr_first + br->hdr_count; j++) {
        const spool_header *h = &mb->hviews[j];
        if (h->key_len == n && memcmp(h->key, name, n) == 0) {
            return h;
        }
    }
    return NULL;
}

static spool_service *batch_service(const spool_batch *b)
{
    return b->ins ? b->ins->svc : NULL; /* every instance has its service */
}

/* Points record i (any record of the batch) at the topic named `topic`. */
static int point_at_topic(spool_batch *b, size_t i, const char *topic)
{
    spool_service *svc = batch_service(b);
    if (!topic || !svc || !svc->conf) {
        return -ENOENT;
    }
    for (size_t t = 0; t < svc->conf->ntopics; t++) {
        if (strcmp(svc->conf->topics[t].name, topic) == 0) {
            b->recs[i].topic = (int32_t)t == b->topic ? -1 : (int32_t)t;
            b->topics_changed |= (int)t != b->topic;
            return 0;
        }
    }
    return -ENOENT;
}

int spool_batch_set_topic(spool_batch *b, size_t i, const char *topic)
{
    int rc = rec_check(b, i);
    return rc < 0 ? rc : point_at_topic(b, i, topic);
}

const char *spool_batch_topic(const spool_batch *b, size_t i)
{
    spool_service *svc = batch_service(b);
    if (i >= b->count || !svc || !svc->conf) {
        return NULL;
    }
    int t = b->recs[i].topic >= 0 ? b->recs[i].topic : b->topic;
    return t >= 0 && (size_t)t < svc->conf->ntopics ? svc->conf->topics[t].name : NULL;
}

/* ---- drops: counted per processor and reason ---- */

#define DROP_REASONS_MAX 256 /* distinct (processor, reason) series; then "other" */

typedef struct drop_series {
    char *processor, *reason;
    spool_counter *counter;
} drop_series;

static pthread_mutex_t drop_lock = PTHREAD_MUTEX_INITIALIZER;
static drop_series drops[DROP_REASONS_MAX];
static size_t ndrops;

/* Writes s as a Prometheus label value (\\, \" and \n escaped). */
static void label_escape(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            dst[o++] = '\\';
            dst[o++] = *s;
        } else if (*s == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *s;
        }
    }
    dst[o] = '\0';
}

static void drop_count(const spool_instance *proc, const char *reason)
{
    const char *pname = proc ? proc->name : "";
    spool_counter *c = NULL;
    pthread_mutex_lock(&drop_lock);
    for (int pass = 0; pass < 2 && !c; pass++) {
        for (size_t k = 0; k < ndrops; k++) {
            if (strcmp(drops[k].processor, pname) == 0 && strcmp(drops[k].reason, reason) == 0) {
                c = drops[k].counter;
                break;
            }
        }
        if (c || ndrops == DROP_REASONS_MAX) {
            if (!c && pass == 0) {
                reason = "other"; /* too many distinct reasons: one series for the rest */
                continue;
            }
            break;
        }
        char lp[256], lr[256], labels[600];
        label_escape(lp, sizeof(lp), pname);
        label_escape(lr, sizeof(lr), reason);
        snprintf(labels, sizeof(labels), "processor=\"%s\",reason=\"%s\"", lp, lr);
        drop_series *d = &drops[ndrops];
        d->processor = strdup(pname);
        d->reason = strdup(reason);
        d->counter = spool__metric_register("spool_processor_dropped_total",
                                            "Records dropped by processors, by reason", labels, 0);
        if (!d->processor || !d->reason || !d->counter) {
            free(d->processor);
            free(d->reason);
            break; /* out of memory: the instance's dropped counter still counts it */
        }
        ndrops++;
        c = d->counter;
    }
    pthread_mutex_unlock(&drop_lock);
    if (c) {
        spool_counter_add(c, 1);
    }
}

int spool_batch_drop(spool_batch *b, size_t i, const char *reason)
{
    int rc = rec_check(b, i);
    if (rc < 0) {
        return rc;
    }
    spool__brec *br = &b->recs[i];
    br->flags |= SPOOL__BREC_DROPPED;
    b->bytes -= (size_t)(br->key_len > 0 ? br->key_len : 0) +
                (size_t)(br->value_len > 0 ? br->value_len : 0);
    for (size_t j = br->hdr_first; j < (size_t)br->hdr_first + br->hdr_count; j++) {
        b->bytes -= hdr_bytes(&b->hdrs[j]);
    }
    if (b->proc) {
        spool_count(b->proc, SPOOL_COUNT_DROPPED, 1);
    }
    drop_count(b->proc, reason && *reason ? reason : "unspecified");
    return 0;
}

int spool_batch_emit(spool_batch *b, size_t after, const spool_record *r)
{
    if (!b->proc) {
        return -EINVAL; /* outside process(): spool_batch_append */
    }
    if (after >= b->nvisible) {
        return -EINVAL;
    }
    int rc = spool_batch_append(b, r);
    if (rc == 0) {
        b->recs[b->count - 1].parent = after;
    }
    return rc;
}

int spool_batch_emit_to(spool_batch *b, size_t after, const spool_record *r, const char *topic)
{
    spool_service *svc = batch_service(b);
    int found = !topic;
    for (size_t t = 0; !found && svc && svc->conf && t < svc->conf->ntopics; t++) {
        found = strcmp(svc->conf->topics[t].name, topic) == 0;
    }
    if (!found) {
        return -ENOENT; /* checked first: nothing is emitted */
    }
    int rc = spool_batch_emit(b, after, r);
    return rc < 0 || !topic ? rc : point_at_topic(b, b->count - 1, topic);
}

void spool__batch_begin_process(spool_batch *b, spool_instance *proc)
{
    b->proc = proc;
    b->nvisible = b->count;
}

int spool__batch_end_process(spool_batch *b)
{
    size_t nvis = b->nvisible, nemit = b->count - nvis, ndrop = 0;
    int rc = 0;
    for (size_t i = 0; i < nvis; i++) {
        ndrop += (b->recs[i].flags & SPOOL__BREC_DROPPED) != 0;
    }
    if (ndrop || nemit) {
        /* Emitted records grouped by parent (counting sort, stable), then
         * merged behind their parents; parent nvis = appended at the end. */
        if (grow((void **)&b->scratch, &b->scratch_cap, b->count ? b->count : 1,
                 sizeof(*b->scratch), 256) < 0 ||
            grow((void **)&b->scratch_idx, &b->scratch_idx_cap, nvis + 2 + nemit,
                 sizeof(*b->scratch_idx), 256) < 0) {
            rc = -ENOMEM;
            goto out;
        }
        size_t *start = b->scratch_idx, *sorted = b->scratch_idx + nvis + 2;
        memset(start, 0, (nvis + 2) * sizeof(*start));
        for (size_t e = nvis; e < b->count; e++) {
            size_t k = b->recs[e].parent < nvis ? b->recs[e].parent : nvis;
            start[k + 1]++;
        }
        for (size_t k = 0; k <= nvis; k++) {
            start[k + 1] += start[k];
        }
        for (size_t e = nvis; e < b->count; e++) {
            size_t k = b->recs[e].parent < nvis ? b->recs[e].parent : nvis;
            sorted[start[k]++] = e; /* start[k] ends as the end of k's children */
        }
        size_t o = 0, c = 0;
        for (size_t k = 0; k <= nvis; k++) {
            if (k < nvis && !(b->recs[k].flags & SPOOL__BREC_DROPPED)) {
                b->scratch[o++] = b->recs[k];
            }
            for (; c < start[k]; c++) {
                b->scratch[o] = b->recs[sorted[c]];
                b->scratch[o++].flags &= ~SPOOL__BREC_EMITTED;
            }
        }
        spool__brec *t = b->recs;
        size_t tcap = b->cap;
        b->recs = b->scratch;
        b->cap = b->scratch_cap;
        b->scratch = t;
        b->scratch_cap = tcap;
        b->count = o;
    }
out:
    for (size_t k = 0; k < b->nretired; k++) {
        free(b->retired[k].p);
        spool__mem_release(b->retired[k].bytes);
    }
    b->nretired = 0;
    b->proc = NULL;
    b->nvisible = 0;
    return rc;
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

static int name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(name, lit, n) == 0;
}

/* A key, value or header value as a field: -1 (null) is missing. */
static int bytes_field(const uint8_t *p, int32_t n, const uint8_t **val, size_t *len)
{
    if (n < 0) {
        return 0;
    }
    *val = p ? p : (const uint8_t *)"";
    *len = (size_t)n;
    return 1;
}

int spool_record_field(const spool_record *r, const char *topic, const char *name, size_t name_len,
                       char scratch[SPOOL_FIELD_SCRATCH], const uint8_t **val, size_t *len)
{
    if (name_is(name, name_len, "value")) {
        return bytes_field(r->value, r->value_len, val, len);
    }
    if (name_is(name, name_len, "key")) {
        return bytes_field(r->key, r->key_len, val, len);
    }
    if (name_is(name, name_len, "timestamp")) {
        int n = snprintf(scratch, SPOOL_FIELD_SCRATCH, "%lld", (long long)r->timestamp);
        *val = (const uint8_t *)scratch;
        *len = n > 0 ? (size_t)n : 0;
        return 1;
    }
    if (name_is(name, name_len, "topic")) {
        if (!topic) {
            return 0;
        }
        *val = (const uint8_t *)topic;
        *len = strlen(topic);
        return 1;
    }
    for (uint32_t i = 0; i < r->header_count; i++) {
        const spool_header *h = &r->headers[i];
        if (h->key_len == name_len && memcmp(h->key, name, name_len) == 0) {
            return bytes_field(h->value, h->value_len, val, len);
        }
    }
    return 0;
}

/* ---- splitting by topic (after the processor chain) ---- */

int spool__batch_split(spool_batch *b, spool_batch ***parts, size_t *n)
{
    spool_batch **ps = NULL;
    size_t np = 0;
    spool_record *views;
    int rc = 0;

    *parts = NULL;
    *n = 1;
    if (!b->topics_changed) {
        return 0;
    }
    int any = 0;
    for (size_t i = 0; i < b->count && !any; i++) {
        any = b->recs[i].topic >= 0 && b->recs[i].topic != b->topic;
    }
    if (!any) {
        b->topics_changed = 0;
        return 0;
    }
    if ((rc = spool__batch_views(b, &views)) < 0) {
        return rc;
    }
    for (size_t i = 0; i < b->count; i++) {
        int t = b->recs[i].topic >= 0 ? b->recs[i].topic : b->topic;
        size_t k = 0;
        while (k < np && ps[k]->topic != t) {
            k++;
        }
        if (k == np) {
            spool_batch **q = realloc(ps, (np + 1) * sizeof(*ps));
            if (!q) {
                rc = -ENOMEM;
                goto fail;
            }
            ps = q;
            if (!(ps[np] = spool_batch_create(b->ins))) {
                rc = -ENOMEM;
                goto fail;
            }
            ps[np++]->topic = t;
        }
        if ((rc = spool_batch_append(ps[k], &views[i])) < 0) {
            goto fail;
        }
    }
    /* The positions go to a group every part shares: the part whose records
     * are appended last records them (spool__batch_records_written). */
    spool_batch *last = ps[np - 1];
    if (b->npos) {
        spool__bgroup *g = calloc(1, sizeof(*g));
        if (!g) {
            rc = -ENOMEM;
            goto fail;
        }
        pthread_mutex_init(&g->lock, NULL);
        g->refs = g->left = (int)np;
        g->pos = b->pos;
        g->npos = b->npos;
        g->pos_cap = b->pos_cap;
        b->pos = NULL;
        b->npos = b->pos_cap = 0;
        for (size_t k = 0; k < np; k++) {
            ps[k]->group = g;
        }
    }
    if (b->durable) {
        for (size_t k = 0; k + 1 < np; k++) {
            spool__durable_add_part(b->durable);
            ps[k]->durable = b->durable;
        }
        last->durable = b->durable;
        b->durable = NULL;
    }
    spool_batch_destroy(b);
    *parts = ps;
    *n = np;
    return 0;
fail:
    for (size_t k = 0; k < np; k++) {
        spool_batch_destroy(ps[k]);
    }
    free(ps);
    return rc;
}

int spool__batch_records_written(spool_batch *b)
{
    spool__bgroup *g = b->group;
    int rc = 0;
    if (!g || b->group_done) {
        return 0;
    }
    pthread_mutex_lock(&g->lock);
    if (g->left > 1) {
        g->left--;
        b->group_done = 1;
    } else if (grow_acct((void **)&b->pos, &b->pos_cap, b->npos + g->npos, sizeof(*b->pos), 4, 0) <
               0) {
        rc = -ENOMEM; /* the writer retries this part later */
    } else {
        /* The last part: the positions are recorded with its own. */
        memcpy(b->pos + b->npos, g->pos, g->npos * sizeof(*g->pos));
        b->npos += g->npos;
        g->npos = 0;
        g->left = 0;
        b->group_done = 1;
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}

int spool__batch_replayable(const spool_batch *b)
{
    return b->npos > 0 || b->group != NULL;
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
    d->parts = 1;
    return d;
}

void spool__durable_done(spool__durable *d, int result)
{
    pthread_mutex_lock(&d->lock);
    if (!d->done && (result < 0 || --d->parts == 0)) {
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

void spool__durable_add_part(spool__durable *d)
{
    pthread_mutex_lock(&d->lock);
    d->refs++;
    d->parts++;
    pthread_mutex_unlock(&d->lock);
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
