/*
 * streams/engine_snap.c: snapshots, restores and view queries.
 *
 * Image layout (all integers little-endian, doubles as their IEEE-754 bits):
 *   "SXSNAP01" | u32 version (1) | u32 kind | u64 definition fingerprint |
 *   u64 payload length | payload | u64 checksum (sx_hash64 of all before)
 * The payload holds the clock, the counters and every key in LRU order
 * (least recently used first) with its pattern or window state; timers are
 * not stored, they follow from the keys (absence deadline, earliest window
 * end). The same state always gives the same bytes, and a restored state
 * snapshots to the bytes it was restored from. Restore checks every length
 * and value against the definition before touching the target state.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

#define SNAP_MAGIC "SXSNAP01"
#define SNAP_VERSION 1
#define SNAP_HEAD 32 /* magic, version, kind, fingerprint, payload length */

/* ---- writing ------------------------------------------------------------- */

typedef struct wr {
    spool_buf *b;
    int rc;
} wr;

static void put(wr *w, const void *p, size_t n)
{
    if (w->rc == 0) {
        w->rc = spool_buf_append(w->b, p, n);
    }
}

static void put_u64(wr *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    put(w, b, 8);
}

static void put_u32(wr *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    put(w, b, 4);
}

static void put_f64(wr *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(w, u);
}

static void put_cell(wr *w, const sx_agg *a, const sx_cell *c)
{
    switch (a->fn) {
    case AGG_COUNT:
        break;
    case AGG_LAST:
        put_u64(w, c->n);
        put_u64(w, (uint64_t)c->last_ts);
        put_u32(w, c->last_len);
        put(w, c->last, c->last_len);
        break;
    case AGG_DISTINCT:
        put(w, c->hll->reg, SX_HLL_M);
        break;
    case AGG_QUANT:
        put_u64(w, c->dds.zero);
        put_u32(w, c->dds.pos.n);
        put_u32(w, (uint32_t)c->dds.pos.offset);
        for (uint32_t i = 0; i < c->dds.pos.n; i++) {
            put_u64(w, c->dds.pos.counts[i]);
        }
        put_u32(w, c->dds.neg.n);
        put_u32(w, (uint32_t)c->dds.neg.offset);
        for (uint32_t i = 0; i < c->dds.neg.n; i++) {
            put_u64(w, c->dds.neg.counts[i]);
        }
        break;
    default:
        put_u64(w, c->n);
        put_f64(w, c->v);
        break;
    }
}

static void put_key(wr *w, const sx_def *d, const sx_key *k)
{
    put_u32(w, k->klen);
    put(w, sx__kb(k), k->klen);
    switch (d->kind) {
    case SX_THRESHOLD:
        put_u32(w, k->nts);
        for (uint32_t i = 0; i < k->nts; i++) {
            put_u64(w, (uint64_t)sx__ts((sx_key *)k)[i]);
        }
        break;
    case SX_SEQUENCE:
        put_u32(w, k->active);
        put_u32(w, k->step);
        put_u32(w, k->step_count);
        put_u32(w, k->run_total);
        put_u64(w, (uint64_t)k->run_min);
        put_u64(w, (uint64_t)k->run_max);
        break;
    case SX_ABSENCE:
        put_u32(w, k->pending);
        put_u64(w, (uint64_t)k->first_ts);
        put_u32(w, (uint32_t)k->first_rec.len);
        put(w, k->first_rec.data, k->first_rec.len);
        break;
    default:
        put_u32(w, k->nwin);
        for (uint32_t i = 0; i < k->nwin; i++) {
            const sx_window *win = k->win[i];
            put_u64(w, (uint64_t)win->start);
            put_u64(w, win->count);
            put_u64(w, (uint64_t)win->first_ts);
            put_u64(w, (uint64_t)win->last_ts);
            for (uint32_t j = 0; j < d->naggs; j++) {
                put_cell(w, &d->aggs[j], &win->cells[j]);
            }
        }
        break;
    }
}

static void put_head(wr *w, const sx_def *d, uint64_t payload_len)
{
    put(w, SNAP_MAGIC, 8);
    put_u32(w, SNAP_VERSION);
    put_u32(w, (uint32_t)d->kind);
    put_u64(w, d->fingerprint);
    put_u64(w, payload_len);
}

static void put_sum(wr *w, size_t start)
{
    if (w->rc == 0) {
        put_u64(w, sx_hash64(w->b->data + start, w->b->len - start, 0x736e617073756d31ULL));
    }
}

static int cmp_touch(const void *a, const void *b)
{
    const struct sx_cand *x = a, *y = b;
    return x->touch < y->touch ? -1 : x->touch > y->touch;
}

int sx_snapshot(const sx_state *s, spool_buf *out)
{
    size_t start = out->len;
    wr w = {out, 0};
    put_head(&w, s->def, 0);
    size_t pstart = out->len;
    put_u32(&w, s->has_time);
    put_u64(&w, (uint64_t)s->max_ts);
    put_u64(&w, s->st.records);
    put_u64(&w, s->st.skipped);
    put_u64(&w, s->st.late);
    put_u64(&w, s->st.matches);
    put_u64(&w, s->st.evictions);
    put_u32(&w, s->nkeys);
    /* Keys least recently updated first: restoring them in this order
     * gives the same eviction order. */
    struct sx_cand *order = malloc((size_t)(s->nkeys ? s->nkeys : 1) * sizeof(*order));
    if (order == NULL) {
        out->len = start;
        return -ENOMEM;
    }
    uint32_t n = 0;
    for (uint32_t id = 0; id < s->nkeys_alloc; id++) {
        if (s->keys[id].live) {
            order[n++] = (struct sx_cand){s->keys[id].touch, id};
        }
    }
    qsort(order, n, sizeof(*order), cmp_touch);
    for (uint32_t i = 0; i < n; i++) {
        put_key(&w, s->def, &s->keys[order[i].id]);
    }
    free(order);
    if (w.rc == 0) {
        uint64_t plen = out->len - pstart;
        for (int i = 0; i < 8; i++) {
            out->data[pstart - 8 + i] = (uint8_t)(plen >> (8 * i));
        }
    }
    put_sum(&w, start);
    if (w.rc) {
        out->len = start;
    }
    return w.rc;
}

int sx__snapshot_wrap(const sx_def *d, const void *payload, size_t len, spool_buf *out)
{
    size_t start = out->len;
    wr w = {out, 0};
    put_head(&w, d, len);
    put(&w, payload, len);
    put_sum(&w, start);
    if (w.rc) {
        out->len = start;
    }
    return w.rc;
}

/* ---- reading ------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len, off;
    int bad;
} rd;

static const uint8_t *get(rd *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static uint64_t get_u64(rd *r)
{
    const uint8_t *p = get(r, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static uint32_t get_u32(rd *r)
{
    const uint8_t *p = get(r, 4);
    uint32_t v = 0;
    for (int i = 0; p && i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static double get_f64(rd *r)
{
    uint64_t u = get_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

static int get_store(rd *r, sx_dds_store *st, uint64_t *total)
{
    uint32_t n = get_u32(r);
    int32_t off = (int32_t)get_u32(r);
    if (r->bad || n > SX_DDS_MAX_BINS || off < -100000 || off > 100000 ||
        (size_t)n * 8 > r->len - r->off) {
        return -EBADMSG;
    }
    uint64_t *c = malloc((n ? n : 1) * sizeof(uint64_t));
    if (c == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        c[i] = get_u64(r);
        *total += c[i];
    }
    int rc = sx_dds_store_set(st, off, c, n);
    free(c);
    return rc;
}

static int get_cell(rd *r, const sx_agg *a, sx_cell *c)
{
    int rc;
    const uint8_t *p;
    switch (a->fn) {
    case AGG_COUNT:
        return 0;
    case AGG_LAST:
        c->n = get_u64(r);
        c->last_ts = (int64_t)get_u64(r);
        c->last_len = 0;
        uint32_t len = get_u32(r);
        p = get(r, len);
        if (p == NULL) {
            return -EBADMSG;
        }
        if (len > c->last_cap) {
            uint8_t *b = realloc(c->last, len);
            if (b == NULL) {
                return -ENOMEM;
            }
            c->last = b;
            c->last_cap = len;
        }
        if (len) {
            memcpy(c->last, p, len);
        }
        c->last_len = len;
        return 0;
    case AGG_DISTINCT:
        p = get(r, SX_HLL_M);
        if (p == NULL) {
            return -EBADMSG;
        }
        for (uint32_t i = 0; i < SX_HLL_M; i++) {
            if (p[i] > 64 - SX_HLL_P + 1) {
                return -EBADMSG;
            }
        }
        memcpy(c->hll->reg, p, SX_HLL_M);
        return 0;
    case AGG_QUANT: {
        uint64_t total = get_u64(r);
        c->dds.zero = total;
        rc = get_store(r, &c->dds.pos, &total);
        rc = rc ? rc : get_store(r, &c->dds.neg, &total);
        c->dds.total = total;
        return rc;
    }
    default:
        c->n = get_u64(r);
        c->v = get_f64(r);
        return r->bad ? -EBADMSG : 0;
    }
}

static int get_key(rd *r, sx_state *s)
{
    const sx_def *d = s->def;
    uint32_t klen = get_u32(r);
    const uint8_t *kb = get(r, klen);
    if (kb == NULL) {
        return -EBADMSG;
    }
    uint32_t id;
    if (sx__key_get(s, (const char *)kb, klen, false, &id)) {
        return -EBADMSG; /* twice */
    }
    sx_key *k = sx__key_get(s, (const char *)kb, klen, true, &id);
    if (k == NULL) {
        return -ENOMEM;
    }
    if (s->heap_cap < s->nkeys_alloc) {
        uint32_t *h = realloc(s->heap, (size_t)s->nkeys_alloc * sizeof(uint32_t));
        if (h == NULL) {
            return -ENOMEM;
        }
        s->heap = h;
        s->heap_cap = s->nkeys_alloc;
    }
    switch (d->kind) {
    case SX_THRESHOLD: {
        uint32_t n = get_u32(r);
        if (r->bad || (size_t)n * 8 > r->len - r->off) {
            return -EBADMSG;
        }
        if (n > SX_TS_INLINE) {
            if ((k->ts = malloc((size_t)n * sizeof(int64_t))) == NULL) {
                return -ENOMEM;
            }
            k->ts_cap = n;
        }
        int64_t *t = sx__ts(k);
        for (uint32_t i = 0; i < n; i++) {
            t[i] = (int64_t)get_u64(r);
            if ((i && t[i] < t[i - 1]) || !SX_TS_OK(t[i])) {
                return -EBADMSG;
            }
        }
        k->nts = n;
        return 0;
    }
    case SX_SEQUENCE: {
        uint32_t active = get_u32(r);
        k->step = get_u32(r);
        k->step_count = get_u32(r);
        k->run_total = get_u32(r);
        k->run_min = (int64_t)get_u64(r);
        k->run_max = (int64_t)get_u64(r);
        if (r->bad || active > 1 ||
            (active &&
             (k->step >= d->nsteps || k->step_count == 0 || k->step_count > d->steps[k->step].max ||
              k->run_min > k->run_max || !SX_TS_OK(k->run_min) || !SX_TS_OK(k->run_max)))) {
            return -EBADMSG;
        }
        k->active = active;
        return 0;
    }
    case SX_ABSENCE: {
        uint32_t pending = get_u32(r);
        k->first_ts = (int64_t)get_u64(r);
        uint32_t len = get_u32(r);
        const uint8_t *p = get(r, len);
        uint32_t nh;
        if (p == NULL || pending > 1 ||
            (pending &&
             (sx__record_decode(p, len, NULL, NULL, 0, &nh) || !SX_TS_OK(k->first_ts)))) {
            return -EBADMSG;
        }
        if (spool_buf_append(&k->first_rec, p, len) < 0) {
            return -ENOMEM;
        }
        k->pending = pending;
        if (pending) {
            sx__timer_set(s, id, k->first_ts + d->within);
        }
        return 0;
    }
    default: {
        uint32_t n = get_u32(r);
        if (r->bad || n > 1u << 20 || n > r->len - r->off) {
            return -EBADMSG;
        }
        k->win = calloc(n ? n : 1, sizeof(*k->win));
        if (k->win == NULL) {
            return -ENOMEM;
        }
        k->win_cap = n ? n : 1;
        for (uint32_t i = 0; i < n; i++) {
            int64_t start = (int64_t)get_u64(r);
            if (r->bad || (i && start <= k->win[i - 1]->start) || !SX_TS_OK(start) ||
                start % d->every != 0) {
                return -EBADMSG;
            }
            sx_window *w = sx__window_new(s, start);
            if (w == NULL) {
                return -ENOMEM;
            }
            k->win[k->nwin++] = w;
            w->count = get_u64(r);
            w->first_ts = (int64_t)get_u64(r);
            w->last_ts = (int64_t)get_u64(r);
            for (uint32_t j = 0; j < d->naggs; j++) {
                int rc = get_cell(r, &d->aggs[j], &w->cells[j]);
                if (rc < 0) {
                    return rc;
                }
            }
            if (r->bad) {
                return -EBADMSG;
            }
        }
        if (n) {
            sx__timer_set(s, id, k->win[0]->start + d->size);
        }
        return 0;
    }
    }
}

static int restore_into(sx_state *t, const uint8_t *p, size_t len)
{
    rd r = {p, len, 0, 0};
    uint32_t has_time = get_u32(&r);
    t->max_ts = (int64_t)get_u64(&r);
    t->st.records = get_u64(&r);
    t->st.skipped = get_u64(&r);
    t->st.late = get_u64(&r);
    t->st.matches = get_u64(&r);
    t->st.evictions = get_u64(&r);
    uint32_t nkeys = get_u32(&r);
    if (r.bad || has_time > 1 || nkeys > t->def->max_keys || (!has_time && nkeys) ||
        !SX_TS_OK(t->max_ts)) {
        return -EBADMSG;
    }
    t->has_time = has_time;
    for (uint32_t i = 0; i < nkeys; i++) {
        int rc = get_key(&r, t);
        if (rc < 0) {
            return rc;
        }
    }
    return r.off == len ? 0 : -EBADMSG;
}

int sx_restore(sx_state *s, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    rd h = {p, len, 0, 0};
    const uint8_t *magic = get(&h, 8);
    uint32_t version = get_u32(&h);
    uint32_t kind = get_u32(&h);
    uint64_t fp = get_u64(&h);
    uint64_t plen = get_u64(&h);
    if (h.bad || memcmp(magic, SNAP_MAGIC, 8) != 0 || version != SNAP_VERSION ||
        kind != (uint32_t)s->def->kind || fp != s->def->fingerprint || len < SNAP_HEAD + 8 ||
        plen != len - SNAP_HEAD - 8) {
        return -EBADMSG;
    }
    rd tail = {p, len, len - 8, 0};
    uint64_t sum = get_u64(&tail);
    if (sum != sx_hash64(p, len - 8, 0x736e617073756d31ULL)) {
        return -EBADMSG;
    }
    sx_state *t = sx_state_new(s->def);
    if (t == NULL) {
        return -ENOMEM;
    }
    int rc = restore_into(t, p + SNAP_HEAD, (size_t)plen);
    if (rc == 0) {
        sx_state tmp = *s;
        *s = *t;
        *t = tmp;
    }
    sx_state_free(t);
    return rc;
}

/* ---- queries ------------------------------------------------------------- */

typedef struct qrow {
    const sx_key *k;
    const sx_window *w;
} qrow;

static int cmp_row(const void *a, const void *b)
{
    const qrow *x = a, *y = b;
    size_t n = x->k->klen < y->k->klen ? x->k->klen : y->k->klen;
    int c = memcmp(sx__kb(x->k), sx__kb(y->k), n);
    if (c == 0 && x->k->klen != y->k->klen) {
        c = x->k->klen < y->k->klen ? -1 : 1;
    }
    if (c == 0) {
        c = x->w->start < y->w->start ? -1 : x->w->start > y->w->start;
    }
    return c;
}

static int rows_add(const sx_def *d, const sx_key *k, int64_t from, int64_t to, qrow **rows,
                    size_t *n, size_t *cap)
{
    for (uint32_t i = 0; i < k->nwin; i++) {
        const sx_window *w = k->win[i];
        if ((to != 0 && w->start >= to) || (from != 0 && w->start + d->size <= from)) {
            continue;
        }
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 64;
            qrow *v = realloc(*rows, c * sizeof(*v));
            if (v == NULL) {
                return -ENOMEM;
            }
            *rows = v;
            *cap = c;
        }
        (*rows)[(*n)++] = (qrow){k, w};
    }
    return 0;
}

int sx_query(const sx_state *s, const char *key, int64_t from, int64_t to, spool_buf *out)
{
    const sx_def *d = s->def;
    size_t start = out->len;
    qrow *rows = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    if (d->kind == SX_VIEW) {
        if (key) {
            uint32_t id;
            const sx_key *k = sx__key_get((sx_state *)s, key, strlen(key), false, &id);
            if (k) {
                rc = rows_add(d, k, from, to, &rows, &n, &cap);
            }
        } else {
            for (uint32_t id = 0; id < s->nkeys_alloc && rc == 0; id++) {
                if (s->keys[id].live) {
                    rc = rows_add(d, &s->keys[id], from, to, &rows, &n, &cap);
                }
            }
        }
    }
    if (n > 1) {
        qsort(rows, n, sizeof(*rows), cmp_row);
    }
    rc = rc ? rc : spool_buf_append(out, "[", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i) {
            rc = spool_buf_append(out, ",", 1);
        }
        rc = rc ? rc : sx__window_json(d, sx__kb(rows[i].k), rows[i].k->klen, rows[i].w, out);
    }
    rc = rc ? rc : spool_buf_append(out, "]", 1);
    free(rows);
    if (rc) {
        out->len = start;
    }
    return rc;
}
