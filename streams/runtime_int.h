/*
 * runtime_int.h: what the stream runtime's two halves share: the
 * configuration (runtime_conf.c: the `streams:` section, checked and
 * compiled at load) and the running streams (runtime.c: reading, emitting,
 * snapshots, queries). Core-internal.
 */
#ifndef SPOOL_STREAMS_RUNTIME_INT_H
#define SPOOL_STREAMS_RUNTIME_INT_H

#include "core.h"
#include "engine.h"

/* One `streams:` entry's options (the option table in runtime_conf.c). */
typedef struct stream_opts {
    char *name;
    char *from;
    char *key;
    char *when;
    char *emit_topic;
    char *emit_key;
    char *emit_value;
    int64_t allowed_lateness;
    char *late_topic;
    int64_t idle_close;
    char *snapshot_every;
    int64_t max_keys;
} stream_opts;

/* One stream as loaded: its instance, definition and emit templates. */
typedef struct stream_conf {
    spool_instance *ins; /* name "stream.<name>", ctx = stream_opts */
    sx_def *def;
    spool_template *emit_key, *emit_value;
    int64_t snap_records; /* 0 = by time */
    int64_t snap_ms;
} stream_conf;

typedef struct spool__streams_conf {
    stream_conf *items;
    size_t count;
} spool__streams_conf;

/* Compiles the engine definition of the `streams:` entry `entry` (errors
 * reported on ins at their positions). 0 or -EINVAL / -ENOMEM. Each
 * partition of a running stream compiles its own (a definition is used by
 * one thread at a time). */
int spool__stream_compile(spool_instance *ins, const spool_cnode *entry, sx_def **out);

#endif
