/*
 * keytable.h: a bounded table of per-key state for the `sample` and `throttle` processors
 * (issue 15). It maps a key (any bytes) to two int64 slots the caller interprets (sample: a
 * record counter; throttle: a window start and a count).
 *
 * Bounded: at most max_keys keys. A new key when the table is full evicts the least recently
 * used key (its state is forgotten, as if never seen) and counts one eviction. Lookups are
 * O(1) on average (open addressing, linear probing, backward-shift deletion). Memory grows
 * with the number of distinct keys (doubling, up to max_keys), and a key's bytes are copied
 * once, when it enters; an evicted entry's buffer is reused by the key that replaces it, so
 * steady state allocates nothing.
 *
 * Not thread-safe: one table per processor instance, used on the processor thread.
 */
#ifndef SPOOL_PROCESSORS_KEYTABLE_H
#define SPOOL_PROCESSORS_KEYTABLE_H

#include <stddef.h>
#include <stdint.h>

#include <spool/spool.h>

typedef struct keytable_entry {
    uint64_t hash;    /* of the key's bytes */
    uint8_t *key;     /* key_len bytes, owned; key_cap allocated */
    uint32_t key_len; /* bytes */
    uint32_t key_cap; /* bytes */
    uint32_t prev;    /* LRU list: more recently used entry, UINT32_MAX = none */
    uint32_t next;    /* LRU list: less recently used entry, UINT32_MAX = none */
    int64_t slot[2];  /* the caller's state; zero when the key enters */
} keytable_entry;

typedef struct keytable {
    keytable_entry *entries; /* count used of cap */
    size_t count;            /* keys held */
    size_t cap;              /* entries allocated */
    size_t max_keys;         /* bound on count */
    uint32_t *index;         /* index_size buckets: entry number + 1, 0 = empty */
    size_t index_size;       /* a power of two, at least twice cap */
    uint32_t head;           /* most recently used entry, UINT32_MAX = none */
    uint32_t tail;           /* least recently used entry, UINT32_MAX = none */
    uint64_t evictions;      /* keys forgotten to admit new ones, since init */
} keytable;

/* Prepares an empty table holding at most max_keys (>= 1, < UINT32_MAX) keys. Allocates
 * nothing yet. */
void keytable_init(keytable *t, size_t max_keys);
/* Frees everything the table holds; t is left empty (keytable_init again to reuse). Accepts a
 * zeroed table. */
void keytable_free(keytable *t);
/*
 * The state slots of `key` (len bytes), marking it most recently used. A key not in the table
 * enters with both slots 0 and *fresh set to 1 (else 0); if the table was full, the least
 * recently used key is evicted first (t->evictions grows by one). Returns NULL only on ENOMEM
 * (nothing changed). The pointer is valid until the next keytable_get.
 */
int64_t *keytable_get(keytable *t, const void *key, size_t len, int *fresh);

/*
 * The key a record is counted under: `tpl` rendered (into buf, which grows as needed and is
 * reused from record to record), or with tpl NULL the record's own key (a record without a
 * key has the empty key: all such records share one). Sets *key and *len (valid until buf or
 * the record changes). 0 or -ENOMEM.
 */
int keytable_record_key(const spool_template *tpl, const spool_record *r, const char *topic,
                        spool_buf *buf, const uint8_t **key, size_t *len);

/*
 * Per-key state of a processor, as sample and throttle keep it: the `key` template (NULL = the
 * record's key), the bounded table, the rendered key's buffer and the evictions counter.
 */
typedef struct keyed {
    spool_template *tpl;      /* compiled `key`, NULL = the record key */
    keytable keys;            /* key -> the caller's two slots */
    spool_buf keybuf;         /* the rendered key */
    uint64_t evictions_seen;  /* keys.evictions already added to the counter */
    spool_counter *evictions; /* keys forgotten for new ones */
} keyed;

/* check(): reports a bad `key` template (option "key"). 0 or -EINVAL. */
int keyed_check(spool_instance *ins, const char *key_template);
/* init(): compiles the template, sizes the table, registers the evictions counter. 0,
 * -EINVAL (bad template, reported) or -ENOMEM. */
int keyed_init(keyed *k, spool_instance *ins, const char *key_template, int64_t max_keys);
/* The slots of record i's key (see keytable_get); NULL on ENOMEM. */
int64_t *keyed_slots(keyed *k, spool_batch *b, size_t i, int *fresh);
/* After a batch: adds the evictions since the last call to the counter. */
void keyed_flush(keyed *k);
/* destroy(): frees what init made. Accepts a half-built one. */
void keyed_destroy(keyed *k);

#endif /* SPOOL_PROCESSORS_KEYTABLE_H */
