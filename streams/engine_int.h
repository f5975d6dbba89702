/*
 * streams/engine_int.h: what the engine's files share (engine_def.c compiles
 * definitions, engine.c runs them, engine_snap.c snapshots, restores and
 * queries states). Not for the runtime: it includes engine.h only.
 */
#ifndef SPOOL_STREAMS_ENGINE_INT_H
#define SPOOL_STREAMS_ENGINE_INT_H

#include <stdbool.h>

#include "engine.h"
#include "sketch.h"

enum sx_kind { SX_THRESHOLD, SX_SEQUENCE, SX_ABSENCE, SX_VIEW };
enum sx_fn { AGG_COUNT, AGG_SUM, AGG_MIN, AGG_MAX, AGG_AVG, AGG_DISTINCT, AGG_QUANT, AGG_LAST };

typedef struct sx_agg {
    int fn;      /* enum sx_fn */
    double q;    /* AGG_QUANT: 0.5, 0.9, 0.99 */
    char *field; /* the field read (NULL for count) */
    char *name;  /* header / JSON member name */
} sx_agg;

typedef struct sx_step {
    spool_expr *when;
    uint32_t min; /* >= 1 */
    uint32_t max; /* >= min; UINT32_MAX = unbounded */
} sx_step;

struct sx_def {
    int kind;            /* enum sx_kind */
    spool_template *key; /* state key (view: group_by, else key); NULL = "" */
    spool_expr *when;    /* NULL = every record */
    int64_t lateness;    /* ms */
    uint32_t max_keys;
    uint32_t count;    /* threshold */
    int64_t within;    /* ms, patterns */
    sx_step *steps;    /* sequence */
    uint32_t nsteps;   /* sequence */
    spool_expr *first; /* absence */
    spool_expr *then;  /* absence */
    int64_t size;      /* ms, views: window length */
    int64_t every;     /* ms, views: hop (== size for tumbling) */
    sx_agg *aggs;      /* views */
    uint32_t naggs;
    uint64_t fingerprint;
};

/* One aggregate's state in one window. */
typedef struct sx_cell {
    uint64_t n;        /* values taken (numeric, or present for last) */
    double v;          /* sum (sum, avg), min, max */
    int64_t last_ts;   /* last: timestamp of the value kept */
    uint8_t *last;     /* last: the value's bytes (heap) */
    uint32_t last_len; /* bytes */
    uint32_t last_cap; /* bytes allocated */
    sx_hll *hll;       /* distinct */
    sx_dds dds;        /* quantiles */
} sx_cell;

typedef struct sx_window {
    int64_t start;    /* ms, inclusive */
    uint64_t count;   /* records */
    int64_t first_ts; /* smallest timestamp in it */
    int64_t last_ts;  /* largest timestamp in it */
    struct sx_window *next_free;
    sx_cell cells[]; /* naggs */
} sx_window;

#define SX_NONE UINT32_MAX
/* Timestamps beyond +-2^62 ms (146 million years) are treated as late: with
 * durations at most INT64_MAX / 4, no time arithmetic can overflow. */
#define SX_TS_LIMIT ((int64_t)1 << 62)
#define SX_TS_OK(t) ((t) >= -SX_TS_LIMIT && (t) <= SX_TS_LIMIT)
#define SX_KEY_INLINE 24
#define SX_TS_INLINE                                                                               \
    6 /* threshold timestamps kept inside sx_key */ /* keys shorter than this live inside sx_key   \
                                                     */

typedef struct sx_key {
    /* First cache line: what finding, touching and a threshold need. */
    _Alignas(64) uint64_t hash;
    char kin[SX_KEY_INLINE]; /* key bytes when shorter (read both through sx__kb) */
    uint32_t klen;           /* bytes */
    uint32_t free_next;      /* free slots: the next free id, SX_NONE at the end */
    uint64_t touch;          /* when last updated (state's touch counter): LRU order */
    uint32_t nts;            /* threshold: timestamps held */
    int64_t *ts;             /* threshold: timestamps on the heap, NULL = in ts_in */
    uint32_t ts_cap;         /* threshold: timestamps allocated on the heap */
    bool live;               /* slot in use */
    /* threshold: the key's pending timestamps, ascending, here while they
     * fit (next to the hot line: usually fetched with it). sx__ts. */
    int64_t ts_in[SX_TS_INLINE];
    /* Then the rest. */
    char *kb;         /* key bytes (heap) when klen >= SX_KEY_INLINE, else NULL */
    int32_t heap_pos; /* position in the timer heap, -1 if none */
    int64_t timer_at; /* ms: when the timer fires (watermark >= timer_at) */
    /* sequence: the one partial run */
    bool active;
    uint32_t step, step_count, run_total;
    int64_t run_min, run_max;
    /* absence */
    bool pending;
    int64_t first_ts;
    spool_buf first_rec; /* the `first` record: value and headers, encoded */
    /* views: open windows, ascending start */
    sx_window **win;
    uint32_t nwin, win_cap;
} sx_key;

struct sx_state {
    const sx_def *def;
    sx_key *keys; /* by id */
    uint32_t nkeys_alloc;
    uint32_t nkeys;     /* live */
    uint32_t free_id;   /* first free id (chained through free_next), SX_NONE */
    uint64_t *table;    /* open addressing: (hash >> 32) << 32 | id; id SX_NONE = empty */
    uint32_t table_cap; /* power of two */
    uint64_t touch_seq; /* last touch value given */
    /* Eviction candidates: the oldest keys by touch at the last scan,
     * ascending; one is still the least recently updated key if its touch
     * has not changed (see lru_victim). */
    struct sx_cand {
        uint64_t touch;
        uint32_t id;
    } * cand;
    uint32_t ncand, cand_pos;
    uint32_t *heap; /* ids ordered by (timer_at, key bytes) */
    uint32_t nheap, heap_cap;
    bool has_time;
    int64_t max_ts;
    sx_window *free_windows;
    uint32_t nfree_windows;
    sx_stats_t st;
    size_t bytes;
    /* scratch for emitting */
    spool_buf keybuf;
    spool_buf text;
    spool_buf json;
    spool_header *hdrs;
    uint32_t hdr_cap;
    int emit_rc;
};

/* A derived event's source: the value and headers it carries over. */
typedef struct ev_src {
    const uint8_t *value;
    int32_t value_len;
    const spool_header *h;
    uint32_t nh;
} ev_src;

/* A key's bytes (keys move when the key array grows: never keep this
 * pointer across the creation of a key). */
static inline const char *sx__kb(const sx_key *k)
{
    return k->klen < SX_KEY_INLINE ? k->kin : k->kb;
}

/* A threshold key's timestamps (same rule as sx__kb). */
static inline int64_t *sx__ts(sx_key *k)
{
    return k->ts ? k->ts : k->ts_in;
}

/* engine.c */
/* Decodes an absence's stored `first` record (checked: also used on
 * restored images) into src (may be NULL), headers into hdrs (cap entries,
 * may be NULL); *count = its header count. 0 or -EBADMSG. */
int sx__record_decode(const uint8_t *p, size_t len, ev_src *src, spool_header *hdrs, uint32_t cap,
                      uint32_t *count);
sx_key *sx__key_get(sx_state *s, const char *kb, size_t klen, bool create, uint32_t *id);
void sx__key_drop(sx_state *s, uint32_t id);
void sx__timer_set(sx_state *s, uint32_t id, int64_t at);
void sx__timer_clear(sx_state *s, uint32_t id);
sx_window *sx__window_new(sx_state *s, int64_t start);
void sx__window_release(sx_state *s, sx_window *w);
void sx__state_clear(sx_state *s);

/* engine_view.c */
/* Applies r to w: 0 or -ENOMEM. */
int sx__window_apply(const sx_def *d, sx_window *w, const spool_record *r, const char *topic);
/* Frees a window and its cells' allocations. */
void sx__window_destroy(const sx_def *d, sx_window *w);
/* Formats aggregate i of w into buf: its length, or -1 for null. */
int sx__agg_format(const sx_def *d, const sx_window *w, uint32_t i, char *buf, size_t cap);
int sx__window_json(const sx_def *d, const char *kb, size_t klen, const sx_window *w,
                    spool_buf *out);

/* engine_snap.c: wraps a payload into an image (header, checksum): for the fuzz target. */
int sx__snapshot_wrap(const sx_def *d, const void *payload, size_t len, spool_buf *out);

#endif
