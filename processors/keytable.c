/*
 * keytable.c: the bounded key -> state table of the `sample` and `throttle` processors
 * (keytable.h). Invariants: every used entry (0..count-1) is in the index exactly once and in
 * the LRU list exactly once; the index has at least twice as many buckets as entries
 * allocated, so probing always ends at an empty bucket; count <= max_keys.
 *
 * An evicted entry keeps its array position and key buffer: the new key takes both, so the
 * entry array never has holes and a full table allocates nothing more.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keytable.h"

#define KT_NONE UINT32_MAX

/* FNV-1a, then a final mix so the low bits (the bucket) depend on every byte. */
static uint64_t kt_hash(const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

void keytable_init(keytable *t, size_t max_keys)
{
    memset(t, 0, sizeof(*t));
    t->max_keys = max_keys ? max_keys : 1;
    t->head = KT_NONE;
    t->tail = KT_NONE;
}

void keytable_free(keytable *t)
{
    for (size_t i = 0; i < t->count; i++) {
        free(t->entries[i].key);
    }
    free(t->entries);
    free(t->index);
    size_t max = t->max_keys;
    keytable_init(t, max);
}

static void lru_unlink(keytable *t, uint32_t e)
{
    keytable_entry *x = &t->entries[e];
    if (x->prev != KT_NONE) {
        t->entries[x->prev].next = x->next;
    } else {
        t->head = x->next;
    }
    if (x->next != KT_NONE) {
        t->entries[x->next].prev = x->prev;
    } else {
        t->tail = x->prev;
    }
    x->prev = x->next = KT_NONE;
}

static void lru_push_front(keytable *t, uint32_t e)
{
    keytable_entry *x = &t->entries[e];
    x->prev = KT_NONE;
    x->next = t->head;
    if (t->head != KT_NONE) {
        t->entries[t->head].prev = e;
    }
    t->head = e;
    if (t->tail == KT_NONE) {
        t->tail = e;
    }
}

/* Puts entry e in its bucket (index has room). */
static void index_insert(keytable *t, uint32_t e)
{
    size_t mask = t->index_size - 1;
    size_t b = (size_t)t->entries[e].hash & mask;
    while (t->index[b] != 0) {
        b = (b + 1) & mask;
    }
    t->index[b] = e + 1;
}

/* Removes entry e from the index, shifting later members of its probe run back so that no
 * lookup meets a hole before its key. */
static void index_remove(keytable *t, uint32_t e)
{
    size_t mask = t->index_size - 1;
    size_t b = (size_t)t->entries[e].hash & mask;
    while (t->index[b] != e + 1) {
        b = (b + 1) & mask;
    }
    size_t hole = b;
    for (size_t j = (hole + 1) & mask; t->index[j] != 0; j = (j + 1) & mask) {
        size_t home = (size_t)t->entries[t->index[j] - 1].hash & mask;
        /* The member at j may move to the hole if its home is not in (hole, j]. */
        int movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            t->index[hole] = t->index[j];
            t->index[j] = 0;
            hole = j;
        }
    }
    t->index[hole] = 0;
}

/* Makes room for one more entry: grows the entry array and, with it, the index. */
static int grow(keytable *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    if (cap > t->max_keys) {
        cap = t->max_keys;
    }
    keytable_entry *ne = realloc(t->entries, cap * sizeof(*ne));
    if (!ne) {
        return -ENOMEM;
    }
    t->entries = ne;
    t->cap = cap;
    if (t->index_size >= 2 * cap) {
        return 0;
    }
    size_t size = 16;
    while (size < 2 * cap) {
        size *= 2;
    }
    uint32_t *ni = calloc(size, sizeof(*ni));
    if (!ni) {
        return -ENOMEM; /* the larger entry array is kept: harmless */
    }
    free(t->index);
    t->index = ni;
    t->index_size = size;
    for (size_t i = 0; i < t->count; i++) {
        index_insert(t, (uint32_t)i);
    }
    return 0;
}

int64_t *keytable_get(keytable *t, const void *key, size_t len, int *fresh)
{
    uint64_t h = kt_hash(key, len);
    *fresh = 0;
    if (t->index_size) {
        size_t mask = t->index_size - 1;
        for (size_t b = (size_t)h & mask; t->index[b] != 0; b = (b + 1) & mask) {
            uint32_t e = t->index[b] - 1;
            keytable_entry *x = &t->entries[e];
            if (x->hash == h && x->key_len == len && (len == 0 || memcmp(x->key, key, len) == 0)) {
                if (t->head != e) {
                    lru_unlink(t, e);
                    lru_push_front(t, e);
                }
                return x->slot;
            }
        }
    }
    if (len > UINT32_MAX) {
        return NULL;
    }
    uint32_t e;
    int evict = t->count >= t->max_keys;
    if (!evict && t->count == t->cap && grow(t) < 0) {
        return NULL;
    }
    e = evict ? t->tail : (uint32_t)t->count;
    keytable_entry *x = &t->entries[e];
    if (!evict) {
        memset(x, 0, sizeof(*x));
        x->prev = x->next = KT_NONE;
    }
    if (x->key_cap < len || !x->key) {
        size_t cap = len < 16 ? 16 : len;
        uint8_t *k = realloc(x->key, cap);
        if (!k) {
            return NULL; /* an evicted entry is still whole: nothing changed */
        }
        x->key = k;
        x->key_cap = (uint32_t)cap;
    }
    if (evict) {
        index_remove(t, e);
        lru_unlink(t, e);
        t->evictions++;
    } else {
        t->count++;
    }
    if (len) {
        memcpy(x->key, key, len);
    }
    x->key_len = (uint32_t)len;
    x->hash = h;
    x->slot[0] = x->slot[1] = 0;
    index_insert(t, e);
    lru_push_front(t, e);
    *fresh = 1;
    return x->slot;
}

int keytable_record_key(const spool_template *tpl, const spool_record *r, const char *topic,
                        spool_buf *buf, const uint8_t **key, size_t *len)
{
    if (!tpl) {
        *key = r->key_len > 0 ? r->key : (const uint8_t *)"";
        *len = r->key_len > 0 ? (size_t)r->key_len : 0;
        return 0;
    }
    if (buf->cap < 64 && spool_buf_reserve(buf, 64) < 0) {
        return -ENOMEM;
    }
    size_t n = spool_template_render(tpl, r, topic, NULL, (char *)buf->data, buf->cap);
    if (n > buf->cap) {
        buf->len = 0;
        if (spool_buf_reserve(buf, n) < 0) {
            return -ENOMEM;
        }
        n = spool_template_render(tpl, r, topic, NULL, (char *)buf->data, buf->cap);
    }
    *key = buf->data;
    *len = n;
    return 0;
}

/* ---- per-key state of a processor ---- */

static spool_template *key_template(spool_instance *ins, const char *text, int *rc)
{
    const char *err = NULL;
    spool_template *t = spool_template_compile(text, &err);
    if (!t) {
        spool_config_error(ins, "key", "bad template: %s", err ? err : "out of memory");
        *rc = -EINVAL;
    }
    return t;
}

int keyed_check(spool_instance *ins, const char *key_template_text)
{
    int rc = 0;
    if (key_template_text) {
        spool_template_destroy(key_template(ins, key_template_text, &rc));
    }
    return rc;
}

int keyed_init(keyed *k, spool_instance *ins, const char *key_template_text, int64_t max_keys)
{
    int rc = 0;
    keytable_init(&k->keys, (size_t)max_keys);
    if (key_template_text && !(k->tpl = key_template(ins, key_template_text, &rc))) {
        return rc;
    }
    k->evictions = spool_counter_register(
        ins, "evictions", "Keys forgotten (least recently used) to admit new ones at max_keys");
    return k->evictions ? 0 : -ENOMEM;
}

int64_t *keyed_slots(keyed *k, spool_batch *b, size_t i, int *fresh)
{
    spool_record r;
    const uint8_t *key;
    size_t len;
    spool_batch_get(b, i, &r);
    if (keytable_record_key(k->tpl, &r, spool_batch_topic(b, i), &k->keybuf, &key, &len) < 0) {
        return NULL;
    }
    return keytable_get(&k->keys, key, len, fresh);
}

void keyed_flush(keyed *k)
{
    if (k->keys.evictions != k->evictions_seen) {
        spool_counter_add(k->evictions, k->keys.evictions - k->evictions_seen);
        k->evictions_seen = k->keys.evictions;
    }
}

void keyed_destroy(keyed *k)
{
    spool_template_destroy(k->tpl);
    k->tpl = NULL;
    keytable_free(&k->keys);
    spool_buf_free(&k->keybuf);
}
