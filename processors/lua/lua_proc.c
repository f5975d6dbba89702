/*
 * lua_proc.c: the `lua` processor: a user's Lua 5.4 function run on every
 * record (mode: record) or on every batch (mode: batch), which may change,
 * drop, split or add records (the contract: lua_record.c and
 * docs/processors-lua.md).
 *
 * One lua_State per instance, used only by the processor thread. Unless
 * `unsafe: true` the state is a sandbox: base (without dofile, loadfile,
 * and with load limited to text chunks), string (without dump), table,
 * math, utf8, coroutine, and os.time/date/clock/difftime; no io, os.execute,
 * require, package or debug. print() goes to spool's log. A custom
 * allocator holds the state to memory_limit, and a count hook to
 * max_instructions per record, so neither a runaway loop nor a runaway
 * allocation can wedge or sink the pipeline: both are errors of that call.
 *
 * Errors: a script that does not compile, fails at its top level or lacks
 * the function is a config error (check() loads it: `spool check` finds
 * it, with the script's file:line). A call that fails is counted
 * (spool_errors_total of the processor, one per record), logged once per
 * streak of failures, and its records are kept unchanged with a lua_error
 * header (or also sent to dead_letter_topic): never lost.
 *
 * Invariant: every Lua call that may raise (on memory) runs under
 * lua_pcall; the state's stack holds the PLUA_* values at its bottom and
 * nothing else between calls.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua_proc.h"

static const char *const plua_modes[] = {"record", "batch", NULL};
static const char *const plua_on_errors[] = {"keep", "dead_letter", NULL};

static const spool_option plua_options[] = {
    SPOOL_OPT_STR("script", plua_ctx, script, NULL, 0, "Lua file to run (or `code`)"),
    SPOOL_OPT_STR("code", plua_ctx, code, NULL, 0, "Lua source, inline (or `script`)"),
    SPOOL_OPT_STR("function", plua_ctx, function, "process", 0,
                  "the global function called for each record (or batch)"),
    SPOOL_OPT_CHOICE("mode", plua_ctx, mode, "record", plua_modes,
                     "record: function(record) per record; batch: function(records) per batch"),
    SPOOL_OPT_FLAG("unsafe", plua_ctx, unsafe, "false",
                   "open every Lua library (io, os, require, debug...): no sandbox"),
    SPOOL_OPT_CHOICE("on_error", plua_ctx, on_error, "keep", plua_on_errors,
                     "a failing call keeps its records with a lua_error header; dead_letter also "
                     "sends them to dead_letter_topic"),
    SPOOL_OPT_STR("dead_letter_topic", plua_ctx, dead_letter_topic, NULL, 0,
                  "topic for the records of failing calls (on_error: dead_letter)"),
    SPOOL_OPT_INTEGER("max_instructions", plua_ctx, max_instructions, "10000000", 0, INT_MAX,
                      "Lua instructions a call may run per record, then it fails (0 = no limit)"),
    SPOOL_OPT_BYTES("memory_limit", plua_ctx, memory_limit, "64MiB", 1 << 20, 1LL << 30,
                    "memory the script's Lua state may hold"),
    SPOOL_OPT_END,
};

static plua_ctx *ctx_of(lua_State *L)
{
    return *(plua_ctx **)lua_getextraspace(L);
}

/* lua_Alloc within ctx->mem.limit: a refused growth is Lua's memory error. */
static void *plua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    plua_mem *m = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        m->used -= old;
        return NULL;
    }
    if (m->limit && nsize > old && m->used + (nsize - old) > m->limit) {
        return NULL;
    }
    void *np = realloc(ptr, nsize);
    if (np) {
        m->used = m->used - old + nsize;
    }
    return np;
}

/* The count hook: the call ran out of instructions. From then on every
 * instruction fails, so a script's own pcall cannot swallow the limit. */
static void plua_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    plua_ctx *ctx = ctx_of(L);
    if (!ctx->expired) {
        ctx->expired = 1;
        lua_sethook(L, plua_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "instruction limit exceeded (max_instructions: %I per record)",
               (lua_Integer)ctx->max_instructions);
}

static void set_budget(plua_ctx *ctx, size_t records)
{
    ctx->expired = 0;
    if (ctx->max_instructions > 0) {
        int64_t n = ctx->max_instructions * (int64_t)(records ? records : 1);
        if (n > INT_MAX || n / (int64_t)(records ? records : 1) != ctx->max_instructions) {
            n = INT_MAX;
        }
        lua_sethook(ctx->L, plua_hook, LUA_MASKCOUNT, (int)n);
    }
}

static void clear_budget(plua_ctx *ctx)
{
    if (ctx->max_instructions > 0) {
        lua_sethook(ctx->L, NULL, 0, 0);
    }
}

/* print(...): one line to spool's log, the values separated by tabs. */
static int plua_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int i = 1; i <= n; i++) {
        if (i > 1) {
            luaL_addchar(&buf, '\t');
        }
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    spool_log_info(ctx_of(L)->ins, "print: %s", lua_tostring(L, -1));
    return 0;
}

/* load(chunk [, chunkname [, mode [, env]]]) for text chunks only. */
static int plua_load_text(lua_State *L)
{
    int n = lua_gettop(L);
    lua_settop(L, 4);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (n >= 4) {
        lua_pushvalue(L, 4);
    }
    lua_call(L, n >= 4 ? 4 : 3, LUA_MULTRET);
    return lua_gettop(L) - 4;
}

/* Opens the libraries (protected: it allocates). */
static int plua_open(lua_State *L)
{
    static const luaL_Reg safe[] = {
        {LUA_GNAME, luaopen_base},
        {LUA_COLIBNAME, luaopen_coroutine},
        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string},
        {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},
        {NULL, NULL},
    };
    static const char *const os_safe[] = {"clock", "date", "difftime", "time", NULL};
    if (ctx_of(L)->unsafe) {
        luaL_openlibs(L);
    } else {
        for (const luaL_Reg *lib = safe; lib->name; lib++) {
            luaL_requiref(L, lib->name, lib->func, 1);
            lua_pop(L, 1);
        }
        luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
        lua_createtable(L, 0, 4);
        for (const char *const *f = os_safe; *f; f++) {
            lua_getfield(L, -2, *f);
            lua_setfield(L, -2, *f);
        }
        lua_setglobal(L, LUA_OSLIBNAME);
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_setglobal(L, "dofile");
        lua_pushnil(L);
        lua_setglobal(L, "loadfile");
        lua_getglobal(L, "load");
        lua_pushcclosure(L, plua_load_text, 1);
        lua_setglobal(L, "load");
        lua_getglobal(L, LUA_STRLIBNAME);
        lua_pushnil(L);
        lua_setfield(L, -2, "dump");
        lua_pop(L, 1);
    }
    lua_pushcfunction(L, plua_print);
    lua_setglobal(L, "print");
    return 0;
}

/* A new state with its libraries, or NULL (ctx->err says why). */
static lua_State *plua_state(plua_ctx *ctx)
{
    ctx->mem.used = 0;
    ctx->mem.limit = (size_t)ctx->memory_limit;
    lua_State *L = lua_newstate(plua_alloc, &ctx->mem);
    if (!L) {
        snprintf(ctx->err, sizeof(ctx->err), "cannot create a Lua state: out of memory");
        return NULL;
    }
    *(plua_ctx **)lua_getextraspace(L) = ctx;
    /* Most garbage is a record's, dead after its call: generational GC. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_pushcfunction(L, plua_open);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        snprintf(ctx->err, sizeof(ctx->err), "cannot open the Lua libraries: %s",
                 lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
        lua_close(L);
        return NULL;
    }
    return L;
}

static void copy_error(plua_ctx *ctx, lua_State *L, const char *prefix)
{
    const char *msg = lua_tostring(L, -1);
    if (msg) {
        snprintf(ctx->err, sizeof(ctx->err), "%s%s", prefix, msg);
    } else {
        snprintf(ctx->err, sizeof(ctx->err), "%s(error object is a %s value)", prefix,
                 luaL_typename(L, -1));
    }
}

/* Loads the script, runs its top level, and pushes its function. 0, or
 * -EINVAL with ctx->err set and *opt the option to blame. */
static int plua_load_script(plua_ctx *ctx, lua_State *L, const char **opt)
{
    const char *mode = ctx->unsafe ? "bt" : "t";
    int rc;
    if (ctx->script) {
        *opt = "script";
        rc = luaL_loadfilex(L, ctx->script, mode);
    } else {
        *opt = "code";
        rc = luaL_loadbufferx(L, ctx->code, strlen(ctx->code), "=code", mode);
    }
    if (rc != LUA_OK) {
        copy_error(ctx, L, "");
        lua_pop(L, 1);
        return -EINVAL;
    }
    set_budget(ctx, 1);
    rc = lua_pcall(L, 0, 0, 0);
    clear_budget(ctx);
    if (rc != LUA_OK) {
        copy_error(ctx, L, "running the script's top level: ");
        lua_pop(L, 1);
        return -EINVAL;
    }
    if (lua_getglobal(L, ctx->function) != LUA_TFUNCTION) {
        snprintf(ctx->err, sizeof(ctx->err), "the script defines no global function '%s'%s",
                 ctx->function, strcmp(ctx->function, "process") == 0 ? " (see `function`)" : "");
        lua_pop(L, 1);
        return -EINVAL;
    }
    return 0;
}

static int plua_check(spool_instance *ins, void *vctx)
{
    plua_ctx *ctx = vctx;
    const char *opt = NULL;
    int rc = 0;
    if (ctx->script && ctx->code) {
        spool_config_error(ins, "code", "give either script or code, not both");
        return -EINVAL;
    }
    if (!ctx->script && !ctx->code) {
        spool_config_error(ins, NULL, "needs script (a Lua file) or code (Lua source)");
        return -EINVAL;
    }
    if (!ctx->function || !ctx->function[0]) {
        spool_config_error(ins, "function", "must name the script's function");
        return -EINVAL;
    }
    if (ctx->on_error == PLUA_ON_ERROR_DEAD_LETTER && !ctx->dead_letter_topic) {
        spool_config_error(ins, "on_error", "dead_letter needs dead_letter_topic");
        return -EINVAL;
    }
    if (ctx->on_error != PLUA_ON_ERROR_DEAD_LETTER && ctx->dead_letter_topic) {
        spool_config_error(ins, "dead_letter_topic", "is used only with on_error: dead_letter");
        return -EINVAL;
    }
    if (ctx->dead_letter_topic && !spool_topic_exists(ins, ctx->dead_letter_topic)) {
        spool_config_error(ins, "dead_letter_topic", "topic '%s' is not defined in topics",
                           ctx->dead_letter_topic);
        return -EINVAL;
    }
    if (ctx->script && spool_check_file(ins, "script", ctx->script) < 0) {
        return -EINVAL;
    }
    /* The script is loaded and its top level run, as init does. */
    ctx->ins = ins;
    lua_State *L = plua_state(ctx);
    if (!L) {
        spool_config_error(ins, NULL, "%s", ctx->err);
        return -EINVAL;
    }
    ctx->L = L;
    if (plua_load_script(ctx, L, &opt) < 0) {
        spool_config_error(ins, opt, "%s", ctx->err);
        rc = -EINVAL;
    }
    ctx->L = NULL;
    lua_close(L);
    return rc;
}

/* The values every call passes to plua_run (protected: it allocates). */
static int plua_setup(lua_State *L)
{
    lua_newtable(L); /* PLUA_POOL */
    lua_newtable(L); /* PLUA_IDX */
    lua_pushliteral(L, "key");
    lua_pushliteral(L, "value");
    lua_pushliteral(L, "timestamp");
    lua_pushliteral(L, "topic");
    lua_pushliteral(L, "fields");
    return PLUA_BASE - PLUA_FN;
}

static int plua_init(spool_instance *ins, void *vctx)
{
    plua_ctx *ctx = vctx;
    const char *opt = NULL;
    ctx->ins = ins;
    ctx->L = plua_state(ctx);
    if (!ctx->L) {
        spool_log_error(ins, "%s", ctx->err);
        return -ENOMEM;
    }
    if (plua_load_script(ctx, ctx->L, &opt) < 0) { /* at PLUA_FN */
        spool_config_error(ins, opt, "%s", ctx->err);
        return -EINVAL;
    }
    lua_pushcfunction(ctx->L, plua_setup);
    if (lua_pcall(ctx->L, 0, PLUA_BASE - PLUA_FN, 0) != LUA_OK) {
        spool_log_error(ins, "cannot set up the Lua state: out of memory");
        return -ENOMEM;
    }
    ctx->dead_lettered = spool_counter_register(
        ins, "dead_lettered", "Records of failing script calls sent to the dead-letter topic");
    return ctx->dead_lettered ? 0 : -ENOMEM;
}

/* Record i of a failing call: kept unchanged, with a lua_error header, and
 * sent to the dead-letter topic if so configured. Counted; logged once per
 * streak. */
static void plua_fail_record(plua_ctx *ctx, spool_batch *b, size_t i)
{
    const char *dl = ctx->on_error == PLUA_ON_ERROR_DEAD_LETTER ? ctx->dead_letter_topic : NULL;
    spool_count(ctx->ins, SPOOL_COUNT_ERRORS, 1);
    ctx->call_failed = 1;
    if (ctx->streak++ == 0) {
        spool_log_warn(ctx->ins,
                       "%s; the call's records are kept unchanged%s with a lua_error header; "
                       "further failures are counted (spool_errors_total) but not logged until "
                       "a call succeeds",
                       ctx->err, dl ? ", in the dead-letter topic," : "");
    }
    if (spool_batch_set_header(b, i, "lua_error", ctx->err, (int32_t)strlen(ctx->err)) < 0) {
        return; /* out of memory: the record goes on unmarked */
    }
    if (dl) {
        int rc = spool_batch_set_topic(b, i, dl);
        if (rc == 0) {
            spool_counter_add(ctx->dead_lettered, 1);
        } else if (rc == -ENOENT && !ctx->warned_dead_letter) {
            ctx->warned_dead_letter = 1;
            spool_log_error(ctx->ins,
                            "dead_letter_topic '%s' is not a topic of this service: records of "
                            "failing calls stay in their topic",
                            dl);
        }
    }
}

/* The protected body of a call: the PLUA_* values are its arguments. */
static int plua_run(lua_State *L)
{
    plua_ctx *ctx = ctx_of(L);
    spool_batch *b = ctx->call_b;
    size_t first = ctx->call_first, n = ctx->call_n;
    lua_pushvalue(L, PLUA_FN);
    if (ctx->mode == PLUA_MODE_BATCH) {
        lua_createtable(L, n < INT_MAX ? (int)n : INT_MAX, 0);
        for (size_t j = 0; j < n; j++) {
            plua_push_record(ctx, b, first + j, j);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
    } else {
        plua_push_record(ctx, b, first, 0);
    }
    lua_call(L, 1, 1);
    clear_budget(ctx); /* applying is C: only the script's instructions count */
    ctx->call_applying = 1;
    ctx->call_rc = plua_apply(ctx, b, first, n, lua_gettop(L), plua_fail_record);
    return 0;
}

/* Runs the function on records first..first+n-1 of b. 0, or -ENOMEM. */
static int plua_call(plua_ctx *ctx, spool_batch *b, size_t first, size_t n)
{
    lua_State *L = ctx->L;
    ctx->call_b = b;
    ctx->call_first = first;
    ctx->call_n = n;
    ctx->call_applying = 0;
    ctx->call_rc = 0;
    ctx->call_failed = 0;
    lua_pushcfunction(L, plua_run);
    for (int k = PLUA_FN; k <= PLUA_BASE; k++) {
        lua_pushvalue(L, k);
    }
    set_budget(ctx, n);
    int rc = lua_pcall(L, PLUA_BASE, 0, 0);
    clear_budget(ctx);
    if (rc != LUA_OK) {
        /* Raised by the script, or (out of memory) while reading it records
         * or applying its answer: then some records may be half changed. */
        copy_error(ctx, L, ctx->call_applying ? "applying the script's answer: " : "");
        lua_settop(L, PLUA_BASE);
        for (size_t j = 0; j < n; j++) {
            plua_fail_record(ctx, b, first + j);
        }
        return 0;
    }
    if (ctx->call_rc == -EINVAL) {
        for (size_t j = 0; j < n; j++) {
            plua_fail_record(ctx, b, first + j);
        }
        return 0;
    }
    if (ctx->call_rc < 0) {
        return ctx->call_rc;
    }
    if (ctx->streak && !ctx->call_failed) {
        spool_log_info(ctx->ins, "calls succeed again, after %llu records in error",
                       (unsigned long long)ctx->streak);
        ctx->streak = 0;
    }
    return 0;
}

static int plua_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    plua_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    (void)ins;
    if (n == 0) {
        return 0;
    }
    if (ctx->mode == PLUA_MODE_BATCH) {
        return plua_call(ctx, b, 0, n);
    }
    for (size_t i = 0; i < n; i++) {
        int rc = plua_call(ctx, b, i, 1);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static void plua_destroy(spool_instance *ins, void *vctx)
{
    plua_ctx *ctx = vctx;
    (void)ins;
    if (ctx->L) {
        lua_close(ctx->L);
        ctx->L = NULL;
    }
    free(ctx->orig);
    free(ctx->inpl);
    free(ctx->slot_inpl);
    free(ctx->slot_same);
    free(ctx->kv);
    free(ctx->hdrs);
    free(ctx->name);
}

const spool_plugin spool_plugin_lua = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "lua",
    .description = "runs a Lua 5.4 function on each record or batch: change, drop, split, add",
    .options = plua_options,
    .context_size = sizeof(plua_ctx),
    .check = plua_check,
    .init = plua_init,
    .process = plua_process,
    .destroy = plua_destroy,
};
