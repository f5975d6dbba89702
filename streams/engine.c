/*
 * streams/engine.c: running a stream definition over one input partition:
 * the key table, the timer heap, the patterns (threshold, sequence,
 * absence) and the views' windows (docs/streams.md, "What the engine
 * computes", has the semantics).
 *
 * Invariants: a state is a pure function of the records and ticks it was
 * given, in order; nothing here reads a clock or does I/O. Keys live in a
 * dense array addressed by id, found through an open-addressing table of ids
 * (linear probing, backward-shift deletion, the hash's high half in each
 * slot); each key carries the counter value of its last update, and at
 * max_keys the least recently updated key is evicted (lru_victim). A key has at most one
 * timer (absence deadline, or the end of its earliest open window); the heap
 * orders timers by (time, key bytes), so firing order never depends on
 * allocation or hashing. A record is applied only if its timestamp is at
 * least the watermark (max timestamp seen - allowed_lateness), so an open
 * window never receives a record after it was closed and emitted.
 * No allocation per record for an existing key once its buffers have grown
 * (closed windows go to a free list with their sketches).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

/* A table slot: the hash's high half (compared before touching the key),
 * then the id. */
#define SLOT(hash, id) (((hash)&0xffffffff00000000ULL) | (uint64_t)(id))
#define SLOT_ID(e) ((uint32_t)(e))

/* ---- keys ---------------------------------------------------------------- */

static int table_grow(sx_state *s)
{
    uint32_t cap = s->table_cap ? s->table_cap * 2 : 1024;
    uint64_t *t = malloc((size_t)cap * sizeof(uint64_t));
    if (t == NULL) {
        return -ENOMEM;
    }
    memset(t, 0xff, (size_t)cap * sizeof(uint64_t));
    for (uint32_t id = 0; id < s->nkeys_alloc; id++) {
        if (!s->keys[id].live) {
            continue;
        }
        uint32_t i = (uint32_t)s->keys[id].hash & (cap - 1);
        while (SLOT_ID(t[i]) != SX_NONE) {
            i = (i + 1) & (cap - 1);
        }
        t[i] = SLOT(s->keys[id].hash, id);
    }
    free(s->table);
    s->table = t;
    s->table_cap = cap;
    return 0;
}

static int cmp_cand(const void *a, const void *b)
{
    const struct sx_cand *x = a, *y = b;
    return x->touch < y->touch ? -1 : x->touch > y->touch;
}

/* The least recently updated key, or SX_NONE on ENOMEM. Keys carry the
 * time of their last update (touch); a scan keeps the oldest sixteenth of
 * them, sorted. A candidate whose touch is unchanged is older than every
 * key outside the list (those were newer at the scan and touches only
 * grow), so the first unchanged one is exactly the LRU key; when none is
 * left, scan again. No list to maintain per record. */
static uint32_t lru_victim(sx_state *s)
{
    for (int pass = 0; pass < 2; pass++) {
        while (s->cand_pos < s->ncand) {
            const struct sx_cand *c = &s->cand[s->cand_pos++];
            const sx_key *k = &s->keys[c->id];
            if (k->live && k->touch == c->touch) {
                return c->id;
            }
        }
        struct sx_cand *all = malloc((size_t)(s->nkeys ? s->nkeys : 1) * sizeof(*all));
        if (all == NULL) {
            return SX_NONE;
        }
        uint32_t n = 0;
        for (uint32_t id = 0; id < s->nkeys_alloc; id++) {
            if (s->keys[id].live) {
                all[n++] = (struct sx_cand){s->keys[id].touch, id};
            }
        }
        qsort(all, n, sizeof(*all), cmp_cand);
        uint32_t keep = n / 16 < 16 ? (n < 16 ? n : 16) : n / 16;
        free(s->cand);
        s->cand = realloc(all, (size_t)(keep ? keep : 1) * sizeof(*all));
        if (s->cand == NULL) {
            s->cand = all;
        }
        s->ncand = keep;
        s->cand_pos = 0;
    }
    return SX_NONE;
}

static void key_free_state(sx_state *s, sx_key *k)
{
    free(k->kb);
    free(k->ts);
    spool_buf_free(&k->first_rec);
    for (uint32_t i = 0; i < k->nwin; i++) {
        sx__window_release(s, k->win[i]);
    }
    free(k->win);
}

void sx__key_drop(sx_state *s, uint32_t id)
{
    sx_key *k = &s->keys[id];
    sx__timer_clear(s, id);
    /* Backward-shift deletion from the table. */
    uint32_t mask = s->table_cap - 1;
    uint32_t i = (uint32_t)k->hash & mask;
    while (SLOT_ID(s->table[i]) != id) {
        i = (i + 1) & mask;
    }
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (SLOT_ID(s->table[j]) == SX_NONE) {
            break;
        }
        uint32_t home = (uint32_t)s->keys[SLOT_ID(s->table[j])].hash & mask;
        /* Move j to i if its home is not in (i, j] cyclically. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            s->table[i] = s->table[j];
            i = j;
        }
    }
    s->table[i] = UINT64_MAX;
    key_free_state(s, k);
    memset(k, 0, sizeof(*k));
    k->heap_pos = -1;
    k->free_next = s->free_id;
    s->free_id = id;
    s->nkeys--;
}

/* Finds the key (kb, klen); with create, makes it (evicting the least
 * recently used key at max_keys). Touches it (LRU tail). NULL: not found
 * (create false) or -ENOMEM. The pointer lives until the next key is made. */
sx_key *sx__key_get(sx_state *s, const char *kb, size_t klen, bool create, uint32_t *idp)
{
    uint64_t h = sx_hash64(kb, klen, 0x6b65792d68617368ULL);
    uint32_t mask = s->table_cap - 1;
    uint32_t i = (uint32_t)h & mask;
    uint64_t tag = h & 0xffffffff00000000ULL;
    for (uint64_t e; SLOT_ID(e = s->table[i]) != SX_NONE; i = (i + 1) & mask) {
        if ((e & 0xffffffff00000000ULL) != tag) {
            continue;
        }
        sx_key *k = &s->keys[SLOT_ID(e)];
        if (k->hash == h && k->klen == klen && memcmp(sx__kb(k), kb, klen) == 0) {
            uint32_t id = SLOT_ID(e);
            if (create) {
                k->touch = ++s->touch_seq;
            }
            *idp = id;
            return k;
        }
    }
    if (!create) {
        return NULL;
    }
    if (s->nkeys >= s->def->max_keys && s->nkeys > 0) {
        uint32_t victim = lru_victim(s);
        if (victim == SX_NONE) {
            return NULL;
        }
        sx__key_drop(s, victim);
        s->st.evictions++;
    }
    if ((uint64_t)(s->nkeys + 1) * 2 > s->table_cap && table_grow(s) < 0) {
        return NULL;
    }
    char *copy = NULL;
    if (klen >= SX_KEY_INLINE) {
        if ((copy = malloc(klen)) == NULL) {
            return NULL;
        }
        memcpy(copy, kb, klen);
    }
    uint32_t id = s->free_id;
    if (id == SX_NONE) {
        uint32_t n = s->nkeys_alloc ? s->nkeys_alloc * 2 : 64;
        /* Cache-line aligned (sx_key's first line is the hot one). */
        sx_key *ks = aligned_alloc(64, (size_t)n * sizeof(*ks));
        if (ks == NULL) {
            free(copy);
            return NULL;
        }
        if (s->nkeys_alloc) {
            memcpy(ks, s->keys, (size_t)s->nkeys_alloc * sizeof(*ks));
        }
        free(s->keys);
        s->keys = ks;
        for (uint32_t j = n; j-- > s->nkeys_alloc;) {
            memset(&ks[j], 0, sizeof(ks[j]));
            ks[j].heap_pos = -1;
            ks[j].free_next = s->free_id;
            s->free_id = j;
        }
        s->nkeys_alloc = n;
        id = s->free_id;
    }
    sx_key *k = &s->keys[id];
    s->free_id = k->free_next;
    memset(k, 0, sizeof(*k));
    k->heap_pos = -1;
    k->hash = h;
    k->kb = copy;
    if (copy == NULL && klen) {
        memcpy(k->kin, kb, klen);
    }
    k->klen = (uint32_t)klen;
    k->live = true;
    mask = s->table_cap - 1;
    i = (uint32_t)h & mask;
    while (SLOT_ID(s->table[i]) != SX_NONE) {
        i = (i + 1) & mask;
    }
    s->table[i] = SLOT(h, id);
    k->touch = ++s->touch_seq;
    s->nkeys++;
    *idp = id;
    return k;
}

/* ---- timers -------------------------------------------------------------- */

static bool timer_less(const sx_state *s, uint32_t a, uint32_t b)
{
    const sx_key *x = &s->keys[a];
    const sx_key *y = &s->keys[b];
    if (x->timer_at != y->timer_at) {
        return x->timer_at < y->timer_at;
    }
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(sx__kb(x), sx__kb(y), n);
    return c < 0 || (c == 0 && x->klen < y->klen);
}

static void heap_place(sx_state *s, uint32_t pos, uint32_t id)
{
    s->heap[pos] = id;
    s->keys[id].heap_pos = (int32_t)pos;
}

static void heap_up(sx_state *s, uint32_t pos)
{
    uint32_t id = s->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!timer_less(s, id, s->heap[parent])) {
            break;
        }
        heap_place(s, pos, s->heap[parent]);
        pos = parent;
    }
    heap_place(s, pos, id);
}

static void heap_down(sx_state *s, uint32_t pos)
{
    uint32_t id = s->heap[pos];
    for (;;) {
        uint32_t c = 2 * pos + 1;
        if (c >= s->nheap) {
            break;
        }
        if (c + 1 < s->nheap && timer_less(s, s->heap[c + 1], s->heap[c])) {
            c++;
        }
        if (!timer_less(s, s->heap[c], id)) {
            break;
        }
        heap_place(s, pos, s->heap[c]);
        pos = c;
    }
    heap_place(s, pos, id);
}

void sx__timer_clear(sx_state *s, uint32_t id)
{
    int32_t pos = s->keys[id].heap_pos;
    if (pos < 0) {
        return;
    }
    s->keys[id].heap_pos = -1;
    uint32_t last = s->heap[--s->nheap];
    if ((uint32_t)pos < s->nheap) {
        heap_place(s, (uint32_t)pos, last);
        heap_up(s, (uint32_t)pos);
        heap_down(s, (uint32_t)s->keys[last].heap_pos);
    }
}

/* The heap has room for every key (grown with the key array), so setting a
 * timer never allocates... except when the key array grew: then here. */
void sx__timer_set(sx_state *s, uint32_t id, int64_t at)
{
    sx_key *k = &s->keys[id];
    if (k->heap_pos >= 0) {
        k->timer_at = at;
        heap_up(s, (uint32_t)k->heap_pos);
        heap_down(s, (uint32_t)k->heap_pos);
        return;
    }
    k->timer_at = at;
    heap_place(s, s->nheap++, id);
    heap_up(s, s->nheap - 1);
}

static int heap_reserve(sx_state *s)
{
    if (s->heap_cap >= s->nkeys_alloc) {
        return 0;
    }
    uint32_t *h = realloc(s->heap, (size_t)s->nkeys_alloc * sizeof(uint32_t));
    if (h == NULL) {
        return -ENOMEM;
    }
    s->heap = h;
    s->heap_cap = s->nkeys_alloc;
    return 0;
}

/* ---- emitting ------------------------------------------------------------ */

static const char *const kind_names[] = {"threshold", "sequence", "absence", "view"};

static int hdrs_reserve(sx_state *s, uint32_t n)
{
    if (n <= s->hdr_cap) {
        return 0;
    }
    uint32_t cap = s->hdr_cap ? s->hdr_cap : 32;
    while (cap < n) {
        cap *= 2;
    }
    spool_header *h = realloc(s->hdrs, (size_t)cap * sizeof(*h));
    if (h == NULL) {
        return -ENOMEM;
    }
    s->hdrs = h;
    s->hdr_cap = cap;
    return 0;
}

/* Appends header `name` with text value (len -1: null) at slot *nh; the value
 * is stored as an offset into s->text until the text is complete. */
static int hdr_add(sx_state *s, uint32_t *nh, const char *name, const void *v, int len)
{
    spool_header *h = &s->hdrs[(*nh)++];
    h->key = name;
    h->key_len = (uint32_t)strlen(name);
    if (len < 0) {
        h->value = NULL;
        h->value_len = -1;
        return 0;
    }
    h->value = (const uint8_t *)(uintptr_t)(s->text.len + 1); /* +1: never NULL */
    h->value_len = len;
    return spool_buf_append(&s->text, v, (size_t)len);
}

static int hdr_num(sx_state *s, uint32_t *nh, const char *name, long long v)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%lld", v);
    return hdr_add(s, nh, name, b, n);
}

static int emit_event(sx_state *s, uint32_t id, uint64_t count, int64_t first_ts, int64_t last_ts,
                      int64_t ts, const sx_window *w, const ev_src *src, sx_emit_fn emit, void *arg)
{
    const sx_def *d = s->def;
    const sx_key *k = &s->keys[id];
    s->st.matches++;
    if (emit == NULL) {
        return 0;
    }
    uint32_t nsrc = src ? src->nh : 0;
    int rc = hdrs_reserve(s, 6 + d->naggs + nsrc);
    if (rc < 0) {
        return rc;
    }
    s->text.len = 0;
    uint32_t nh = 0;
    const char *kind = kind_names[d->kind];
    rc = hdr_add(s, &nh, "stream.kind", kind, (int)strlen(kind));
    rc = rc ? rc : hdr_num(s, &nh, "count", (long long)count);
    rc = rc ? rc : hdr_num(s, &nh, "first_ts", (long long)first_ts);
    rc = rc ? rc : hdr_num(s, &nh, "last_ts", (long long)last_ts);
    if (w) {
        rc = rc ? rc : hdr_num(s, &nh, "window_start", (long long)w->start);
        rc = rc ? rc : hdr_num(s, &nh, "window_end", (long long)(w->start + d->size));
        for (uint32_t i = 0; i < d->naggs && rc == 0; i++) {
            const sx_agg *a = &d->aggs[i];
            if (a->fn == AGG_COUNT && strcmp(a->name, "count") == 0) {
                continue;
            }
            if (a->fn == AGG_LAST) {
                const sx_cell *c = &w->cells[i];
                rc = hdr_add(s, &nh, a->name, c->last, c->n ? (int)c->last_len : -1);
                continue;
            }
            char b[64];
            int n = sx__agg_format(d, w, i, b, sizeof(b));
            rc = hdr_add(s, &nh, a->name, b, n);
        }
    }
    if (rc < 0) {
        return rc;
    }
    for (uint32_t i = 0; i < nh; i++) {
        if (s->hdrs[i].value) {
            s->hdrs[i].value = s->text.data + ((uintptr_t)s->hdrs[i].value - 1);
        }
    }
    for (uint32_t i = 0; i < nsrc; i++) {
        s->hdrs[nh++] = src->h[i];
    }
    spool_record ev = {
        .key = (const uint8_t *)sx__kb(k),
        .key_len = (int32_t)k->klen,
        .value = NULL,
        .value_len = -1,
        .headers = s->hdrs,
        .header_count = nh,
        .timestamp = ts,
        .partition = -1,
        .offset = -1,
    };
    if (w) {
        s->json.len = 0;
        rc = sx__window_json(d, sx__kb(k), k->klen, w, &s->json);
        if (rc < 0) {
            return rc;
        }
        ev.value = s->json.data;
        ev.value_len = (int32_t)s->json.len;
    } else if (src) {
        ev.value = src->value;
        ev.value_len = src->value_len;
    }
    rc = emit(arg, &ev);
    if (rc < 0 && s->emit_rc == 0) {
        s->emit_rc = rc;
    }
    return 0;
}

static void src_of_record(ev_src *src, const spool_record *r)
{
    src->value = r->value;
    src->value_len = r->value ? r->value_len : -1;
    src->h = r->headers;
    src->nh = r->header_count;
}

/* The absence's `first` record, encoded: i32 value_len, value, u32 count,
 * then per header u32 key_len, key, i32 value_len, value. */
static int record_encode(spool_buf *b, const spool_record *r)
{
    b->len = 0;
    int32_t vl = r->value ? r->value_len : -1;
    int rc = spool_buf_append(b, &vl, 4);
    rc = rc ? rc : spool_buf_append(b, r->value, vl > 0 ? (size_t)vl : 0);
    rc = rc ? rc : spool_buf_append(b, &r->header_count, 4);
    for (uint32_t i = 0; i < r->header_count && rc == 0; i++) {
        const spool_header *h = &r->headers[i];
        int32_t hl = h->value ? h->value_len : -1;
        rc = spool_buf_append(b, &h->key_len, 4);
        rc = rc ? rc : spool_buf_append(b, h->key, h->key_len);
        rc = rc ? rc : spool_buf_append(b, &hl, 4);
        rc = rc ? rc : spool_buf_append(b, h->value, hl > 0 ? (size_t)hl : 0);
    }
    return rc;
}

int sx__record_decode(const uint8_t *p, size_t len, ev_src *src, spool_header *hdrs, uint32_t cap,
                      uint32_t *count)
{
    size_t o = 0;
    int32_t vl;
    uint32_t n;
    if (len < 8) {
        return -EBADMSG;
    }
    memcpy(&vl, p, 4);
    o = 4;
    if (vl < -1 || (vl > 0 && (size_t)vl > len - o)) {
        return -EBADMSG;
    }
    if (src) {
        src->value = vl >= 0 ? p + o : NULL;
        src->value_len = vl;
    }
    o += vl > 0 ? (size_t)vl : 0;
    if (len - o < 4) {
        return -EBADMSG;
    }
    memcpy(&n, p + o, 4);
    o += 4;
    if (n > (len - o) / 8) {
        return -EBADMSG;
    }
    *count = n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t kl;
        int32_t hl;
        if (len - o < 4) {
            return -EBADMSG;
        }
        memcpy(&kl, p + o, 4);
        o += 4;
        if (kl > len - o || len - o - kl < 4) {
            return -EBADMSG;
        }
        const uint8_t *kp = p + o;
        o += kl;
        memcpy(&hl, p + o, 4);
        o += 4;
        if (hl < -1 || (hl > 0 && (size_t)hl > len - o)) {
            return -EBADMSG;
        }
        if (hdrs && i < cap) {
            hdrs[i].key = (const char *)kp;
            hdrs[i].key_len = kl;
            hdrs[i].value = hl >= 0 ? p + o : NULL;
            hdrs[i].value_len = hl;
        }
        o += hl > 0 ? (size_t)hl : 0;
    }
    return o == len ? 0 : -EBADMSG;
}

/* ---- patterns ------------------------------------------------------------ */

static int64_t watermark(const sx_state *s)
{
    if (!s->has_time) {
        return INT64_MIN;
    }
    int64_t l = s->def->lateness;
    return s->max_ts < INT64_MIN + l ? INT64_MIN : s->max_ts - l;
}

int64_t sx_watermark(const sx_state *s)
{
    return watermark(s);
}

static int threshold_apply(sx_state *s, uint32_t id, const spool_record *r, sx_emit_fn emit,
                           void *arg)
{
    const sx_def *d = s->def;
    sx_key *k = &s->keys[id];
    int64_t ts = r->timestamp;
    int64_t w = watermark(s);
    /* Prune what no future record can share a window with. */
    int64_t *t = sx__ts(k);
    if (w != INT64_MIN && k->nts && t[0] <= w - d->within) {
        uint32_t drop = 0;
        while (drop < k->nts && t[drop] <= w - d->within) {
            drop++;
        }
        memmove(t, t + drop, (size_t)(k->nts - drop) * sizeof(int64_t));
        k->nts -= drop;
    }
    if (k->nts == (k->ts ? k->ts_cap : SX_TS_INLINE)) {
        uint32_t cap = k->ts ? k->ts_cap * 2 : 2 * SX_TS_INLINE;
        int64_t *g = k->ts ? realloc(k->ts, (size_t)cap * sizeof(int64_t))
                           : malloc((size_t)cap * sizeof(int64_t));
        if (g == NULL) {
            return -ENOMEM;
        }
        if (k->ts == NULL) {
            memcpy(g, k->ts_in, sizeof(k->ts_in));
        }
        k->ts = t = g;
        k->ts_cap = cap;
    }
    /* Insert after the entries with the same timestamp. */
    uint32_t lo = 0, hi = k->nts;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (t[mid] <= ts) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    memmove(t + lo + 1, t + lo, (size_t)(k->nts - lo) * sizeof(int64_t));
    t[lo] = ts;
    k->nts++;
    uint32_t c = d->count;
    if (k->nts < c) {
        return 0;
    }
    uint32_t s0 = lo + 1 >= c ? lo + 1 - c : 0;
    for (; s0 <= lo && s0 + c <= k->nts; s0++) {
        if (t[s0 + c - 1] - t[s0] < d->within) {
            int64_t first = t[s0], last = t[s0 + c - 1];
            k->nts = 0;
            ev_src src;
            src_of_record(&src, r);
            return emit_event(s, id, c, first, last, last, NULL, &src, emit, arg);
        }
    }
    return 0;
}

static int sequence_fire(sx_state *s, uint32_t id, const spool_record *r, sx_emit_fn emit,
                         void *arg)
{
    sx_key *k = &s->keys[id];
    k->active = false;
    ev_src src;
    src_of_record(&src, r);
    return emit_event(s, id, k->run_total, k->run_min, k->run_max, k->run_max, NULL, &src, emit,
                      arg);
}

static void run_take(sx_key *k, int64_t ts)
{
    k->run_total++;
    if (ts < k->run_min) {
        k->run_min = ts;
    }
    if (ts > k->run_max) {
        k->run_max = ts;
    }
}

static int sequence_apply(sx_state *s, uint32_t id, const spool_record *r, const char *topic,
                          sx_emit_fn emit, void *arg)
{
    const sx_def *d = s->def;
    sx_key *k = &s->keys[id];
    int64_t ts = r->timestamp;
    if (k->active) {
        int64_t lo = ts < k->run_min ? ts : k->run_min;
        int64_t hi = ts > k->run_max ? ts : k->run_max;
        if (hi - lo >= d->within) {
            k->active = false; /* expired: r may start a new run */
        }
    }
    if (k->active) {
        const sx_step *cur = &d->steps[k->step];
        bool last = k->step + 1 == d->nsteps;
        if (k->step_count < cur->max && spool_expr_eval_record(cur->when, r, topic)) {
            k->step_count++;
            run_take(k, ts);
            if (last && k->step_count == cur->min) {
                return sequence_fire(s, id, r, emit, arg);
            }
            return 0;
        }
        if (!last && k->step_count >= cur->min &&
            spool_expr_eval_record(d->steps[k->step + 1].when, r, topic)) {
            k->step++;
            k->step_count = 1;
            run_take(k, ts);
            if (k->step + 1 == d->nsteps && d->steps[k->step].min == 1) {
                return sequence_fire(s, id, r, emit, arg);
            }
            return 0;
        }
    }
    if (!spool_expr_eval_record(d->steps[0].when, r, topic)) {
        return 0; /* no step: ignored (an active run goes on) */
    }
    k->active = true;
    k->step = 0;
    k->step_count = 1;
    k->run_total = 1;
    k->run_min = k->run_max = ts;
    if (d->nsteps == 1 && d->steps[0].min == 1) {
        return sequence_fire(s, id, r, emit, arg);
    }
    return 0;
}

static int absence_apply(sx_state *s, uint32_t id, const spool_record *r, const char *topic)
{
    const sx_def *d = s->def;
    sx_key *k = &s->keys[id];
    int64_t ts = r->timestamp;
    if (k->pending) {
        if (ts >= k->first_ts && ts - k->first_ts < d->within &&
            spool_expr_eval_record(d->then, r, topic)) {
            k->pending = false;
            k->first_rec.len = 0;
            sx__timer_clear(s, id);
        }
        return 0;
    }
    if (!spool_expr_eval_record(d->first, r, topic)) {
        return 0;
    }
    int rc = record_encode(&k->first_rec, r);
    if (rc < 0) {
        return rc;
    }
    k->pending = true;
    k->first_ts = ts;
    sx__timer_set(s, id, ts + d->within);
    return 0;
}

/* The windows containing ts: starts from the last (largest) down. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int view_apply(sx_state *s, uint32_t id, const spool_record *r, const char *topic)
{
    const sx_def *d = s->def;
    sx_key *k = &s->keys[id];
    int64_t ts = r->timestamp;
    int64_t last = floor_div(ts, d->every) * d->every;
    for (int64_t st = last; st > ts - d->size; st -= d->every) {
        /* Find or insert the window starting at st (ascending starts). */
        uint32_t i = k->nwin;
        while (i > 0 && k->win[i - 1]->start > st) {
            i--;
        }
        sx_window *w;
        if (i > 0 && k->win[i - 1]->start == st) {
            w = k->win[i - 1];
        } else {
            if (k->nwin == k->win_cap) {
                uint32_t cap = k->win_cap ? k->win_cap * 2 : 4;
                sx_window **v = realloc(k->win, (size_t)cap * sizeof(*v));
                if (v == NULL) {
                    return -ENOMEM;
                }
                k->win = v;
                k->win_cap = cap;
            }
            w = sx__window_new(s, st);
            if (w == NULL) {
                return -ENOMEM;
            }
            memmove(k->win + i + 1, k->win + i, (size_t)(k->nwin - i) * sizeof(*k->win));
            k->win[i] = w;
            k->nwin++;
        }
        int rc = sx__window_apply(d, w, r, topic);
        if (rc < 0) {
            return rc;
        }
    }
    if (k->nwin) {
        int64_t at = k->win[0]->start + d->size;
        if (k->heap_pos < 0 || k->timer_at != at) {
            sx__timer_set(s, id, at);
        }
    }
    return 0;
}

/* Fires the earliest timer: an absence deadline, or a view's earliest window. */
static int timer_fire(sx_state *s, sx_emit_fn emit, void *arg)
{
    const sx_def *d = s->def;
    uint32_t id = s->heap[0];
    sx_key *k = &s->keys[id];
    int rc;
    if (d->kind == SX_ABSENCE) {
        ev_src src;
        uint32_t nh = 0;
        rc = sx__record_decode(k->first_rec.data, k->first_rec.len, &src, NULL, 0, &nh);
        if (rc == 0) {
            spool_header *h = malloc((nh ? nh : 1) * sizeof(*h));
            if (h == NULL) {
                return -ENOMEM;
            }
            sx__record_decode(k->first_rec.data, k->first_rec.len, &src, h, nh, &nh);
            src.h = h;
            src.nh = nh;
            rc = emit_event(s, id, 1, k->first_ts, k->first_ts, k->first_ts + d->within, NULL, &src,
                            emit, arg);
            free(h);
        }
        sx__key_drop(s, id);
        return rc;
    }
    sx_window *w = k->win[0];
    rc = emit_event(s, id, w->count, w->first_ts, w->last_ts, w->start + d->size, w, NULL, emit,
                    arg);
    k = &s->keys[id];
    memmove(k->win, k->win + 1, (size_t)(k->nwin - 1) * sizeof(*k->win));
    k->nwin--;
    sx__window_release(s, w);
    if (k->nwin) {
        sx__timer_set(s, id, k->win[0]->start + d->size);
    } else {
        sx__key_drop(s, id);
    }
    return rc;
}

static int advance(sx_state *s, int64_t ts, sx_emit_fn emit, void *arg)
{
    if (!s->has_time || ts > s->max_ts) {
        s->max_ts = ts;
        s->has_time = true;
    }
    int64_t w = watermark(s);
    while (s->nheap && s->keys[s->heap[0]].timer_at <= w) {
        int rc = timer_fire(s, emit, arg);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static int render_key(sx_state *s, const spool_record *r, const char *topic, size_t *len)
{
    if (s->def->key == NULL) {
        *len = 0;
        return 0;
    }
    size_t n =
        spool_template_render(s->def->key, r, topic, NULL, (char *)s->keybuf.data, s->keybuf.cap);
    if (n > s->keybuf.cap) {
        if (spool_buf_reserve(&s->keybuf, n) < 0) {
            return -ENOMEM;
        }
        n = spool_template_render(s->def->key, r, topic, NULL, (char *)s->keybuf.data,
                                  s->keybuf.cap);
    }
    *len = n;
    return 0;
}

int sx_process(sx_state *s, const spool_record *r, const char *topic, sx_emit_fn emit, void *arg)
{
    const sx_def *d = s->def;
    s->st.records++;
    s->emit_rc = 0;
    int64_t ts = r->timestamp;
    int rc;
    if (!SX_TS_OK(ts)) {
        s->st.late++;
        return SX_LATE;
    }
    if (d->when && !spool_expr_eval_record(d->when, r, topic)) {
        s->st.skipped++;
        rc = advance(s, ts, emit, arg);
        return rc < 0 ? rc : s->emit_rc < 0 ? s->emit_rc : SX_SKIPPED;
    }
    if (s->has_time && ts < watermark(s)) {
        s->st.late++;
        return SX_LATE;
    }
    size_t klen;
    rc = render_key(s, r, topic, &klen);
    if (rc < 0) {
        return rc;
    }
    uint32_t id;
    if (sx__key_get(s, (const char *)s->keybuf.data, klen, true, &id) == NULL ||
        heap_reserve(s) < 0) {
        return -ENOMEM;
    }
    switch (d->kind) {
    case SX_THRESHOLD:
        rc = threshold_apply(s, id, r, emit, arg);
        break;
    case SX_SEQUENCE:
        rc = sequence_apply(s, id, r, topic, emit, arg);
        break;
    case SX_ABSENCE:
        rc = absence_apply(s, id, r, topic);
        break;
    default:
        rc = view_apply(s, id, r, topic);
        break;
    }
    rc = rc < 0 ? rc : advance(s, ts, emit, arg);
    return rc < 0 ? rc : s->emit_rc < 0 ? s->emit_rc : SX_OK;
}

int sx_advance(sx_state *s, int64_t event_time_ms, sx_emit_fn emit, void *arg)
{
    s->emit_rc = 0;
    if (event_time_ms > SX_TS_LIMIT) {
        event_time_ms = SX_TS_LIMIT;
    }
    if (event_time_ms < -SX_TS_LIMIT) {
        return 0;
    }
    int rc = advance(s, event_time_ms, emit, arg);
    return rc < 0 ? rc : s->emit_rc;
}

/* ---- lifecycle and stats ------------------------------------------------- */

sx_state *sx_state_new(const sx_def *d)
{
    sx_state *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->def = d;
    s->free_id = SX_NONE;
    if (table_grow(s) < 0 || spool_buf_reserve(&s->keybuf, 256) < 0) {
        sx_state_free(s);
        return NULL;
    }
    return s;
}

/* Frees every key and window, keeping the state usable and empty. */
void sx__state_clear(sx_state *s)
{
    for (uint32_t id = 0; id < s->nkeys_alloc; id++) {
        if (s->keys[id].live) {
            key_free_state(s, &s->keys[id]);
        }
    }
    free(s->keys);
    s->keys = NULL;
    s->nkeys_alloc = 0;
    s->nkeys = 0;
    s->free_id = SX_NONE;
    memset(s->table, 0xff, (size_t)s->table_cap * sizeof(uint64_t));
    s->nheap = 0;
    s->touch_seq = 0;
    s->ncand = s->cand_pos = 0;
    s->has_time = false;
    s->max_ts = 0;
    memset(&s->st, 0, sizeof(s->st));
}

void sx_state_free(sx_state *s)
{
    if (s == NULL) {
        return;
    }
    sx__state_clear(s);
    while (s->free_windows) {
        sx_window *w = s->free_windows;
        s->free_windows = w->next_free;
        sx__window_destroy(s->def, w);
    }
    free(s->table);
    free(s->heap);
    free(s->cand);
    free(s->hdrs);
    spool_buf_free(&s->keybuf);
    spool_buf_free(&s->text);
    spool_buf_free(&s->json);
    free(s);
}

void sx_stats(const sx_state *s, sx_stats_t *out)
{
    *out = s->st;
    out->keys = s->nkeys;
    size_t bytes = sizeof(*s) + (size_t)s->nkeys_alloc * sizeof(sx_key) + (size_t)s->table_cap * 4 +
                   (size_t)s->heap_cap * 4;
    size_t wsize = sizeof(sx_window) + s->def->naggs * sizeof(sx_cell);
    uint64_t windows = 0;
    for (uint32_t id = 0; id < s->nkeys_alloc; id++) {
        const sx_key *k = &s->keys[id];
        if (!k->live) {
            continue;
        }
        bytes += (k->kb ? k->klen : 0) + (k->ts ? (size_t)k->ts_cap * 8 : 0) + k->first_rec.cap +
                 (size_t)k->win_cap * sizeof(void *);
        windows += k->nwin;
        for (uint32_t i = 0; i < k->nwin; i++) {
            bytes += wsize;
            for (uint32_t j = 0; j < s->def->naggs; j++) {
                const sx_cell *c = &k->win[i]->cells[j];
                bytes += c->last_cap + (c->hll ? sizeof(sx_hll) : 0) + sx_dds_bytes(&c->dds);
            }
        }
    }
    out->windows = windows;
    out->bytes = bytes;
}
