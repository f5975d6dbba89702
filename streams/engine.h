/*
 * streams/engine.h: the stream engine of issue 16 (patterns and views), a pure
 * library: deterministic, single-threaded per state, no I/O, no wall clock, no
 * core internals (only spool/spool.h). The runtime (streams/runtime*.c) reads
 * a topic at the stream's cursor, feeds records to sx_process, commits what
 * emit gave it together with the cursor, and snapshots the state.
 *
 * Threads: an sx_def is immutable once compiled and may be shared by the
 * states of several partitions, but each sx_state (it evaluates the def's
 * conditions) must be used by one thread at a time, and states sharing a
 * def must run on one thread. A runtime that runs partitions in parallel
 * compiles one def per thread (compiling is cheap).
 *
 * Semantics (threshold, sequence, absence, windows, aggregates, sketches):
 * docs/streams.md, "What the engine computes".
 */
#ifndef SPOOL_STREAMS_ENGINE_H
#define SPOOL_STREAMS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

typedef struct sx_def sx_def;     /* a compiled stream definition (immutable) */
typedef struct sx_state sx_state; /* the state of one stream over one input partition */

/* One option of a stream definition, as the runtime took it from YAML:
 * name is a dotted path, value its scalar text. Names:
 *   "key"                       template: the state key ("{{ ip }}"); default "" (one key)
 *   "when"                      condition: records failing it are skipped
 *   "allowed_lateness"          duration (default 0)
 *   "max_keys"                  integer (default 100000)
 *   "pattern.type"              threshold | sequence | absence
 *   "pattern.count"             threshold: integer >= 1
 *   "pattern.within"            duration > 0 (every pattern)
 *   "pattern.steps[i].when"     sequence: condition of step i (i = 0, 1, ... dense)
 *   "pattern.steps[i].min"      sequence: integer >= 1 (default 1)
 *   "pattern.steps[i].max"      sequence: integer >= min (default unbounded)
 *   "pattern.first"             absence: condition
 *   "pattern.then"              absence: condition
 *   "view.window.tumbling"      duration
 *   "view.window.hopping"       duration (with view.window.every)
 *   "view.window.every"         duration dividing hopping
 *   "view.group_by"             template (default: "key")
 *   "view.aggregates[i]"        "count" | "sum(f)" | "min(f)" | "max(f)" | "avg(f)" |
 *                               "distinct(f)" | "p50(f)" | "p90(f)" | "p99(f)" | "last(f)",
 *                               optionally followed by " as NAME"; the default name is
 *                               "count" or "<fn>_<f>" (sum_bytes, p99_latency)
 * Durations: an integer with unit ms, s, m, h or d ("500ms", "1m"); a bare
 * integer is milliseconds. Exactly one of pattern.type / view.window.* is
 * required. Unknown names are refused (the runtime should not pass keys it
 * handles itself: name, from, emit, ...). */
typedef struct sx_opt {
    const char *name;  /* NUL-terminated */
    const char *value; /* NUL-terminated */
} sx_opt;

/* Why a compile failed. */
typedef struct sx_error {
    char option[96];   /* the option's name as given ("pattern.steps[1].when"), "" if none */
    size_t column;     /* 1-based byte column inside the option's value; 0 = whole value */
    char message[256]; /* one line, no trailing period */
} sx_error;

/* Compiles a definition from n options. 0 and *out (free with sx_def_free);
 * -EINVAL with *err filled (err may be NULL); -ENOMEM. Any thread. */
int sx_def_compile(const sx_opt *opts, size_t n, sx_def **out, sx_error *err);
/* Frees a definition after every state made from it is freed. Accepts NULL. */
void sx_def_free(sx_def *d);
/* 1 if d is a view (queryable windows), 0 if a pattern. */
int sx_def_is_view(const sx_def *d);
/* A hash of the definition's semantics (options, normalised): snapshots
 * carry it, and a state refuses an image made under another definition. */
uint64_t sx_def_fingerprint(const sx_def *d);

/* A new empty state for d (d must outlive it). NULL on ENOMEM. */
sx_state *sx_state_new(const sx_def *d);
/* Accepts NULL. */
void sx_state_free(sx_state *s);

/* Results of sx_process (besides -errno). */
enum {
    SX_OK = 0,      /* applied */
    SX_LATE = 1,    /* older than the watermark: not applied, counted */
    SX_SKIPPED = 2, /* `when` false: not applied (its timestamp still moves event time) */
};

/* A derived event, valid during the call only. `ev` is a record view:
 *   key        the state key (view: the group key)
 *   value      pattern: the value of the record that completed the match
 *              (absence: of the `first` record); view: the window as one JSON
 *              object, as in sx_query
 *   timestamp  pattern: last_ts (absence: first_ts + within); view: window_end
 *   headers    first the engine's: "stream.kind" (threshold|sequence|absence|
 *              view), "count", "first_ts", "last_ts", and for views
 *              "window_start", "window_end" and one per aggregate by name;
 *              then the headers of the record that completed the match
 *              (absence: of the `first` record). Engine headers come first, so
 *              they win for templates (spool_record_field takes the first).
 * Return 0, or a negative errno: the engine finishes updating its state and
 * the sx_process/sx_advance call returns the first such error. */
typedef int (*sx_emit_fn)(void *arg, const spool_record *ev);

/* Feeds one record (event time = r->timestamp; beyond +-2^62 ms: late)
 * read from `topic` (may be NULL). Calls emit for each derived event, in a deterministic order.
 * Returns SX_OK, SX_LATE, SX_SKIPPED, or -errno (-ENOMEM: the record may be partly applied, so the
 * runtime must rebuild the state from its snapshot and the log; an emit error: see sx_emit_fn). */
int sx_process(sx_state *s, const spool_record *r, const char *topic, sx_emit_fn emit, void *arg);
/* Advances event time without a record (a tick from the log): max event
 * time becomes max(current, event_time_ms); closes windows and fires
 * absences whose time has passed. 0 or an emit error. */
int sx_advance(sx_state *s, int64_t event_time_ms, sx_emit_fn emit, void *arg);
/* The current watermark (max event time seen - allowed_lateness), INT64_MIN
 * before the first record. */
int64_t sx_watermark(const sx_state *s);

/* Snapshots: a self-describing, versioned, checksummed byte image of the
 * state, appended to out. Deterministic: the same inputs give the same bytes.
 * 0 or -ENOMEM. */
int sx_snapshot(const sx_state *s, spool_buf *out);
/* Replaces s's contents with the image. 0; -EBADMSG for a corrupt,
 * truncated or foreign (other definition, other version) image, s then
 * unchanged; -ENOMEM (s unchanged). */
int sx_restore(sx_state *s, const void *buf, size_t len);

/* Views: the open windows for key (NULL = all keys) overlapping [from, to)
 * (0 = unbounded on that side), appended to out as one JSON array of
 * {"key":..,"window_start":..,"window_end":..,"count":..,<aggregates>},
 * sorted by key bytes then window_start. Patterns: "[]". 0 or -ENOMEM. */
int sx_query(const sx_state *s, const char *key, int64_t from, int64_t to, spool_buf *out);

/* Counters for /metrics. */
typedef struct sx_stats_t {
    uint64_t records;   /* records given to sx_process */
    uint64_t skipped;   /* `when` false */
    uint64_t late;      /* older than the watermark, not applied */
    uint64_t matches;   /* events emitted (pattern matches, closed windows) */
    uint64_t evictions; /* keys evicted because max_keys was reached */
    uint64_t keys;      /* keys held now */
    uint64_t windows;   /* open windows now (views) */
    uint64_t bytes;     /* state bytes now (approximate: allocations the state owns) */
} sx_stats_t;
void sx_stats(const sx_state *s, sx_stats_t *out);

#endif
