/*
 * lua_proc.h: what the two files of the `lua` processor share (lua_proc.c:
 * options, sandbox, calls and errors; lua_record.c: records to Lua tables
 * and the script's answer back to batch changes). Private to the plugin;
 * its names start with plua_ (lua_ and LUA_ are Lua's own).
 */
#ifndef SPOOL_LUA_PROC_H
#define SPOOL_LUA_PROC_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "spool/spool.h"

enum { PLUA_MODE_RECORD = 0, PLUA_MODE_BATCH = 1 };
enum { PLUA_ON_ERROR_KEEP = 0, PLUA_ON_ERROR_DEAD_LETTER = 1 };

/* The fixed values every call needs: init leaves them at the bottom of the
 * state's stack for the instance's life, and each call passes copies as
 * the arguments of its protected C function, so inside it (and in
 * lua_record.c) they are the stack indices below. */
enum {
    PLUA_FN = 1,    /* the script's function */
    PLUA_POOL,      /* array of the record tables, reused from call to call */
    PLUA_IDX,       /* record table -> its 0-based index in the pool; also the
                       core's topic name (light userdata) -> that name as a string */
    PLUA_KEY,       /* the interned names of a record table's parts: "key" */
    PLUA_VALUE,     /* "value" */
    PLUA_TIMESTAMP, /* "timestamp" */
    PLUA_TOPIC,     /* "topic" */
    PLUA_FIELDS,    /* "fields" */
    PLUA_BASE = PLUA_FIELDS,
};

typedef struct plua_mem {
    size_t used;  /* bytes Lua holds */
    size_t limit; /* 0 = none */
} plua_mem;

struct plua_kv;

typedef struct plua_ctx {
    /* Options (filled by the core, freed by it after destroy). */
    char *script;
    char *code;
    char *function;
    int mode;
    int unsafe;
    int on_error;
    char *dead_letter_topic;
    int64_t max_instructions;
    int64_t memory_limit;
    /* State, processor thread only. */
    spool_instance *ins;
    lua_State *L;
    plua_mem mem;
    int expired;            /* the instruction limit fired during this call */
    uint64_t streak;        /* records in error since the last call that succeeded */
    int warned_dead_letter; /* logged once: the dead-letter topic is unknown */
    char err[512];          /* the current error, for the lua_error header */
    /* The call in progress (read by the protected call in lua_proc.c). */
    spool_batch *call_b;
    size_t call_first, call_n;
    int call_applying; /* the script returned; its answer is being applied */
    int call_rc;       /* apply's result */
    int call_failed;   /* a record of this call got the error treatment */
    /* Scratch, grown as needed (never per record once warm). */
    int32_t *orig;      /* per result element: its original's index or -1 */
    uint8_t *inpl;      /* per result element: kept in its original's slot */
    uint8_t *slot_inpl; /* per original: some element keeps it in place */
    uint8_t *slot_same; /* per original: its fields table matches its headers */
    size_t scr_cap, slot_cap;
    struct plua_kv *kv; /* a fields table's pairs, sorted (lua_record.c) */
    spool_header *hdrs; /* the same as headers, for an emitted record */
    size_t kv_cap, hdrs_cap;
    char *name; /* a header name, NUL-terminated */
    size_t name_cap;
    spool_counter *dead_lettered;
} plua_ctx;

/* Pushes the table of record i of b as original number j of this call
 * (pool entry j, reused). Raises a Lua error on memory: run it protected. */
void plua_push_record(plua_ctx *ctx, spool_batch *b, size_t i, size_t j);

/* Applies the script's answer, at stack index `res`, for the n originals of
 * this call (records first..first+n-1 of b). Raises a Lua error on memory:
 * run it protected. Returns 0; -EINVAL for an answer of the wrong shape
 * (ctx->err says why; nothing was changed); -ENOMEM. A record whose new
 * topic does not exist is left unchanged and passed to on_slot_error with
 * ctx->err set. */
int plua_apply(plua_ctx *ctx, spool_batch *b, size_t first, size_t n, int res,
               void (*on_slot_error)(plua_ctx *ctx, spool_batch *b, size_t i));

#endif /* SPOOL_LUA_PROC_H */
