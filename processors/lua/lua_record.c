/*
 * lua_record.c: the `lua` processor's records as Lua tables, and the
 * script's answer turned back into changes of the batch.
 *
 * A record is a plain table {key, value, timestamp, topic, fields}, fields
 * mapping each header name to its value (the first header of a name; a
 * null value is `false`). The tables live in a pool and are reused from
 * call to call, and the part names are interned once, so filling a record
 * costs its strings and one table for its fields.
 *
 * The answer (docs/processors-lua.md) is nothing/true (keep every record of
 * the call with the changes made to its table), false (drop them all), one
 * record table, or a list of record tables. A list is matched against the
 * call's originals: an original that appears in increasing order is kept in
 * its own slot (only what differs from the batch is changed); an original
 * missing from the list is dropped, reason "lua"; any other table (a new
 * one, or an original repeated or out of order) takes the next free slot
 * or is emitted after the last slot used, so the batch ends up in the
 * list's order. A part left out of a new table (nil) is copied from its
 * source: the original last seen before it in the list, else the slot it
 * takes, else the call's first original.
 *
 * Invariants: the whole answer is validated before anything changes, so a
 * bad answer leaves the batch as it was; a slot's topic is set before its
 * other parts, so a record sent to an unknown topic is left unchanged;
 * strings handed to the batch stay on the Lua stack (or in a table on it)
 * until the batch has copied them. Every Lua call here may raise on memory:
 * lua_proc.c runs this protected.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lua_proc.h"

struct plua_kv {
    spool_header h;
    size_t rank; /* position among the record's headers, else past them */
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        nc *= 2;
    }
    void *np = realloc(*p, nc * size);
    if (!np) {
        return -ENOMEM;
    }
    *p = np;
    *cap = nc;
    return 0;
}

void plua_push_record(plua_ctx *ctx, spool_batch *b, size_t i, size_t j)
{
    lua_State *L = ctx->L;
    spool_record r;
    if (lua_rawgeti(L, PLUA_POOL, (lua_Integer)j + 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 5);
        lua_pushvalue(L, -1);
        lua_rawseti(L, PLUA_POOL, (lua_Integer)j + 1);
        lua_pushvalue(L, -1);
        lua_pushinteger(L, (lua_Integer)j);
        lua_rawset(L, PLUA_IDX);
    }
    int t = lua_gettop(L);
    spool_batch_get(b, i, &r); /* nothing below changes the batch */
    lua_pushvalue(L, PLUA_KEY);
    if (r.key) {
        lua_pushlstring(L, (const char *)r.key, (size_t)r.key_len);
    } else {
        lua_pushnil(L);
    }
    lua_rawset(L, t);
    lua_pushvalue(L, PLUA_VALUE);
    if (r.value) {
        lua_pushlstring(L, (const char *)r.value, (size_t)r.value_len);
    } else {
        lua_pushnil(L);
    }
    lua_rawset(L, t);
    lua_pushvalue(L, PLUA_TIMESTAMP);
    lua_pushinteger(L, (lua_Integer)r.timestamp);
    lua_rawset(L, t);
    const char *tp = spool_batch_topic(b, i);
    lua_pushvalue(L, PLUA_TOPIC);
    if (!tp) {
        lua_pushnil(L);
    } else if (lua_rawgetp(L, PLUA_IDX, tp) != LUA_TSTRING) {
        /* The core's topic names live as long as its config: cached by address. */
        lua_pop(L, 1);
        lua_pushstring(L, tp);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, PLUA_IDX, tp);
    }
    lua_rawset(L, t);
    lua_pushvalue(L, PLUA_FIELDS);
    /* The pool entry's own fields table (at -(j+1)), emptied and refilled. */
    if (lua_rawgeti(L, PLUA_POOL, -(lua_Integer)j - 1) == LUA_TTABLE) {
        int f = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, f)) { /* setting existing fields to nil is allowed */
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, f);
        }
    } else {
        lua_pop(L, 1);
        lua_createtable(L, 0, (int)r.header_count);
        lua_pushvalue(L, -1);
        lua_rawseti(L, PLUA_POOL, -(lua_Integer)j - 1);
    }
    for (uint32_t k = r.header_count; k-- > 0;) { /* backwards: the first of a name wins */
        const spool_header *h = &r.headers[k];
        lua_pushlstring(L, h->key, h->key_len);
        if (h->value_len >= 0) {
            lua_pushlstring(L, (const char *)h->value, (size_t)h->value_len);
        } else {
            lua_pushboolean(L, 0);
        }
        lua_rawset(L, -3);
    }
    lua_rawset(L, t);
}

/* ---- validation ---- */

static int bad(plua_ctx *ctx, size_t k, const char *what, const char *name)
{
    snprintf(ctx->err, sizeof(ctx->err), "record %zu: %.300s%.150s", k, what, name ? name : "");
    return -EINVAL;
}

/* A string part (key, value, a field's value): string, number, or false/nil. */
static int string_like(lua_State *L, int idx, int allow_nil)
{
    int ty = lua_type(L, idx);
    return ty == LUA_TSTRING || ty == LUA_TNUMBER || (ty == LUA_TNIL && allow_nil) ||
           (ty == LUA_TBOOLEAN && !lua_toboolean(L, idx));
}

static int timestamp_ok(lua_State *L, int idx)
{
    if (lua_isinteger(L, idx)) {
        return 1;
    }
    lua_Number v = lua_tonumber(L, idx);
    return isfinite(v) && v > -9.2e18 && v < 9.2e18;
}

/* 1 if the field at the stack's top (name at -2, value at -1, both
 * validated) is the first header of that name in r, with the same value. */
static int field_same(lua_State *L, const spool_record *r)
{
    size_t nl, vl = 0;
    const char *name = lua_tolstring(L, -2, &nl);
    int ty = lua_type(L, -1);
    if (ty == LUA_TNUMBER) {
        return 0; /* becomes a string: compare after conversion, on the slow path */
    }
    const char *v = ty == LUA_TSTRING ? lua_tolstring(L, -1, &vl) : NULL;
    for (uint32_t q = 0; q < r->header_count; q++) {
        const spool_header *h = &r->headers[q];
        if (h->key_len == nl && memcmp(h->key, name, nl) == 0) {
            if (!v) {
                return h->value_len < 0;
            }
            return h->value_len >= 0 && (size_t)h->value_len == vl && memcmp(h->value, v, vl) == 0;
        }
    }
    return 0;
}

/* Checks the table at t (element k of the answer, 1-based) has parts of
 * the right types. With cmp (the record the table stands for), *same says
 * whether its fields are exactly cmp's headers (then applying skips them). */
static int validate(plua_ctx *ctx, int t, size_t k, const spool_record *cmp, int *same)
{
    lua_State *L = ctx->L;
    int rc = 0;
    int top = lua_gettop(L);
    lua_pushvalue(L, PLUA_KEY);
    lua_rawget(L, t);
    if (!string_like(L, -1, 1)) {
        rc = bad(ctx, k, "key must be a string, a number or false", NULL);
        goto out;
    }
    lua_pushvalue(L, PLUA_VALUE);
    lua_rawget(L, t);
    if (!string_like(L, -1, 1)) {
        rc = bad(ctx, k, "value must be a string, a number or false", NULL);
        goto out;
    }
    lua_pushvalue(L, PLUA_TIMESTAMP);
    int ty = lua_rawget(L, t);
    if (ty != LUA_TNIL && (ty != LUA_TNUMBER || !timestamp_ok(L, -1))) {
        rc = bad(ctx, k, "timestamp must be a number (milliseconds since the epoch)", NULL);
        goto out;
    }
    lua_pushvalue(L, PLUA_TOPIC);
    ty = lua_rawget(L, t);
    if (ty != LUA_TNIL && ty != LUA_TSTRING) {
        rc = bad(ctx, k, "topic must be a string", NULL);
        goto out;
    }
    if (ty == LUA_TSTRING && !spool_topic_exists(ctx->ins, lua_tostring(L, -1))) {
        rc = bad(ctx, k, "topic does not exist: ", lua_tostring(L, -1));
        goto out;
    }
    lua_pushvalue(L, PLUA_FIELDS);
    ty = lua_rawget(L, t);
    if (same) {
        *same = 0;
    }
    if (ty == LUA_TTABLE) {
        int f = lua_gettop(L);
        int all_same = cmp != NULL;
        uint32_t count = 0;
        lua_pushnil(L);
        while (lua_next(L, f)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                rc = bad(ctx, k, "fields: names must be strings", NULL);
                goto out;
            }
            if (!string_like(L, -1, 0)) {
                rc = bad(ctx, k, "fields: a value must be a string, a number or false: ",
                         lua_tostring(L, -2));
                goto out;
            }
            if (all_same) {
                all_same = ++count <= cmp->header_count && field_same(L, cmp);
            }
            lua_pop(L, 1);
        }
        if (same) {
            *same = all_same && count == cmp->header_count;
        }
    } else if (ty != LUA_TNIL) {
        rc = bad(ctx, k, "fields must be a table", NULL);
    }
out:
    lua_settop(L, top);
    return rc;
}

/* ---- applying ---- */

/* Pushes part `name` of the table at t, or of src (0 = none) when t's is nil. */
static int get_part(lua_State *L, int t, int src, int name)
{
    lua_pushvalue(L, name);
    int ty = lua_rawget(L, t);
    if (ty == LUA_TNIL && src) {
        lua_pop(L, 1);
        lua_pushvalue(L, name);
        ty = lua_rawget(L, src);
    }
    return ty;
}

/* The string at idx (a number is converted in place): 1, or 0 for
 * nil/false (none). */
static int str_part(lua_State *L, int idx, const char **s, size_t *len)
{
    int ty = lua_type(L, idx);
    if (ty != LUA_TSTRING && ty != LUA_TNUMBER) {
        *s = NULL;
        *len = 0;
        return 0;
    }
    *s = lua_tolstring(L, idx, len);
    return 1;
}

static int64_t to_ms(lua_State *L, int idx)
{
    if (lua_isinteger(L, idx)) {
        return (int64_t)lua_tointeger(L, idx);
    }
    return (int64_t)floor(lua_tonumber(L, idx));
}

static int kv_cmp(const void *a, const void *b)
{
    const struct plua_kv *x = a, *y = b;
    if (x->rank != y->rank) {
        return x->rank < y->rank ? -1 : 1;
    }
    uint32_t n = x->h.key_len < y->h.key_len ? x->h.key_len : y->h.key_len;
    int c = memcmp(x->h.key, y->h.key, n);
    return c ? c : (x->h.key_len > y->h.key_len) - (x->h.key_len < y->h.key_len);
}

/*
 * Collects the pairs of the fields table at f into ctx->kv (*n of them),
 * sorted: the names `order` has, in its order, then the others by name.
 * With changed_only, a pair equal to the first header of its name in
 * `order` is left out, and *matched counts the pairs whose name `order`
 * has. The converted values stay on the stack (the caller resets it).
 * -EINVAL (a name or value of the wrong type, ctx->err set) or -ENOMEM.
 */
static int collect_fields(plua_ctx *ctx, int f, const spool_record *order, int changed_only,
                          size_t *n, size_t *matched)
{
    lua_State *L = ctx->L;
    size_t k = 0, nmatched = 0;
    lua_pushnil(L);
    /* A changed pair's key and value stay on the stack; a copy of the key
     * drives next, which pops it at the end. */
    while (lua_next(L, f)) {
        size_t nl, vl = 0;
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(ctx->err, sizeof(ctx->err), "fields: names must be strings");
            return -EINVAL;
        }
        if (!string_like(L, -1, 0)) {
            snprintf(ctx->err, sizeof(ctx->err),
                     "fields: a value must be a string, a number or false: %s",
                     lua_tostring(L, -2));
            return -EINVAL;
        }
        const char *name = lua_tolstring(L, -2, &nl);
        const uint8_t *v = NULL;
        int32_t vlen = -1;
        if (lua_type(L, -1) != LUA_TBOOLEAN) {
            v = (const uint8_t *)lua_tolstring(L, -1, &vl);
            vlen = (int32_t)vl;
        }
        size_t rank = SIZE_MAX;
        for (uint32_t q = 0; order && q < order->header_count; q++) {
            const spool_header *h = &order->headers[q];
            if (h->key_len == nl && memcmp(h->key, name, nl) == 0) {
                rank = q;
                nmatched++;
                if (changed_only && h->value_len == vlen &&
                    (vlen <= 0 || memcmp(h->value, v, (size_t)vlen) == 0)) {
                    rank = SIZE_MAX - 1; /* unchanged: left out */
                }
                break;
            }
        }
        if (rank == SIZE_MAX - 1) {
            lua_pop(L, 1);
            continue;
        }
        if (grow((void **)&ctx->kv, &ctx->kv_cap, k + 1, sizeof(*ctx->kv)) < 0 ||
            !lua_checkstack(L, 8)) {
            return -ENOMEM;
        }
        struct plua_kv *kv = &ctx->kv[k++];
        kv->h.key = name;
        kv->h.key_len = (uint32_t)nl;
        kv->h.value = v;
        kv->h.value_len = vlen;
        kv->rank = rank;
        lua_pushvalue(L, -2);
    }
    *n = k;
    if (matched) {
        *matched = nmatched;
    }
    if (k > 1) {
        qsort(ctx->kv, k, sizeof(*ctx->kv), kv_cmp);
    }
    return 0;
}

static int copy_name(plua_ctx *ctx, const char *name, size_t len)
{
    if (grow((void **)&ctx->name, &ctx->name_cap, len + 1, 1) < 0) {
        return -ENOMEM;
    }
    memcpy(ctx->name, name, len);
    ctx->name[len] = '\0';
    return 0;
}

/* Sets the n pairs collect_fields left in ctx->kv on record i, then, with
 * `remove`, removes the headers whose name the fields table at f lacks
 * (f = 0: every header). */
static int apply_kv(plua_ctx *ctx, spool_batch *b, size_t i, int f, size_t n, int remove)
{
    lua_State *L = ctx->L;
    spool_record r;
    int rc;
    for (size_t k = 0; k < n; k++) {
        const spool_header *want = &ctx->kv[k].h;
        if ((rc = copy_name(ctx, want->key, want->key_len)) < 0 ||
            (rc = spool_batch_set_header(b, i, ctx->name, want->value, want->value_len)) < 0) {
            return rc;
        }
    }
    /* Each pass removes at least one header. */
    while (remove) {
        spool_batch_get(b, i, &r);
        const spool_header *gone = NULL;
        for (uint32_t q = 0; q < r.header_count && !gone; q++) {
            const spool_header *h = &r.headers[q];
            if (f) {
                lua_pushlstring(L, h->key, h->key_len);
                int present = lua_rawget(L, f) != LUA_TNIL;
                lua_pop(L, 1);
                if (present) {
                    continue;
                }
            }
            gone = h;
        }
        if (!gone) {
            return 0;
        }
        if ((rc = copy_name(ctx, gone->key, gone->key_len)) < 0 ||
            (rc = spool_batch_remove_header(b, i, ctx->name)) < 0) {
            return rc;
        }
    }
    return 0;
}

/*
 * Makes record i what the table at t (element k of the answer; parts
 * missing there: from src) says. Everything is checked before anything
 * changes: -EINVAL (ctx->err set) for a part of the wrong type, -ENOENT
 * for an unknown topic, both leaving the record as it was; -ENOMEM.
 * fields_same: validate found its fields unchanged.
 */
static int apply_slot(plua_ctx *ctx, spool_batch *b, size_t i, int t, int src, size_t k,
                      int fields_same)
{
    lua_State *L = ctx->L;
    spool_record r;
    const char *s;
    size_t len, n = 0, matched = 0;
    int rc = 0, remove = 0;
    int top = lua_gettop(L);
    const int key = top + 1, value = top + 2, ts = top + 3, topic = top + 4, fields = top + 5;
    get_part(L, t, src, PLUA_KEY);
    get_part(L, t, src, PLUA_VALUE);
    int tsty = get_part(L, t, src, PLUA_TIMESTAMP);
    int tpty = get_part(L, t, src, PLUA_TOPIC);
    int fty = get_part(L, t, src, PLUA_FIELDS);
    if (!string_like(L, key, 1)) {
        rc = bad(ctx, k, "key must be a string, a number or false", NULL);
        goto out;
    }
    if (!string_like(L, value, 1)) {
        rc = bad(ctx, k, "value must be a string, a number or false", NULL);
        goto out;
    }
    if (tsty != LUA_TNIL && (tsty != LUA_TNUMBER || !timestamp_ok(L, ts))) {
        rc = bad(ctx, k, "timestamp must be a number (milliseconds since the epoch)", NULL);
        goto out;
    }
    if (tpty != LUA_TNIL && tpty != LUA_TSTRING) {
        rc = bad(ctx, k, "topic must be a string", NULL);
        goto out;
    }
    if (fty != LUA_TNIL && fty != LUA_TTABLE) {
        rc = bad(ctx, k, "fields must be a table", NULL);
        goto out;
    }
    if (!fields_same) {
        spool_batch_get(b, i, &r);
        if (fty == LUA_TTABLE) {
            if ((rc = collect_fields(ctx, fields, &r, 1, &n, &matched)) < 0) {
                if (rc == -EINVAL) {
                    char why[320];
                    snprintf(why, sizeof(why), "%.300s", ctx->err);
                    bad(ctx, k, why, NULL);
                }
                goto out;
            }
            /* Nothing to remove when each header matched a distinct name. */
            remove = matched != r.header_count;
        } else {
            remove = r.header_count > 0;
        }
    }
    if (tpty == LUA_TSTRING) {
        const char *tp = lua_tostring(L, topic);
        const char *cur = spool_batch_topic(b, i);
        if (!cur || strcmp(cur, tp) != 0) {
            rc = spool_batch_set_topic(b, i, tp);
            if (rc == -ENOENT) {
                snprintf(ctx->err, sizeof(ctx->err), "topic '%s' does not exist", tp);
                goto out;
            }
            if (rc < 0) {
                goto out;
            }
        }
    }
    spool_batch_get(b, i, &r);
    if (!str_part(L, key, &s, &len)) {
        if (r.key && (rc = spool_batch_set_key(b, i, NULL, -1)) < 0) {
            goto out;
        }
    } else if (!r.key || (size_t)r.key_len != len || memcmp(r.key, s, len) != 0) {
        if ((rc = spool_batch_set_key(b, i, s, (int32_t)len)) < 0) {
            goto out;
        }
    }
    spool_batch_get(b, i, &r);
    if (!str_part(L, value, &s, &len)) {
        if (r.value && (rc = spool_batch_set_value(b, i, NULL, -1)) < 0) {
            goto out;
        }
    } else if (!r.value || (size_t)r.value_len != len || memcmp(r.value, s, len) != 0) {
        if ((rc = spool_batch_set_value(b, i, s, (int32_t)len)) < 0) {
            goto out;
        }
    }
    if (tsty == LUA_TNUMBER) {
        int64_t ms = to_ms(L, ts);
        spool_batch_get(b, i, &r);
        if (ms != r.timestamp && (rc = spool_batch_set_timestamp(b, i, ms)) < 0) {
            goto out;
        }
    }
    if (!fields_same) {
        rc = apply_kv(ctx, b, i, fty == LUA_TTABLE ? fields : 0, n, remove);
    }
out:
    lua_settop(L, top);
    return rc;
}

/* Emits the table at t (parts missing there: from src) after record `after`. */
static int emit_after(plua_ctx *ctx, spool_batch *b, size_t after, int t, int src)
{
    lua_State *L = ctx->L;
    spool_record r = {0}, anchor;
    const char *s;
    size_t len, n = 0;
    int rc = 0;
    int top = lua_gettop(L);
    /* the topic string stays on the stack (so valid) until the settop below */
    const char *topic = get_part(L, t, src, PLUA_TOPIC) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    get_part(L, t, src, PLUA_KEY);
    if (str_part(L, -1, &s, &len)) {
        r.key = (const uint8_t *)s;
        r.key_len = (int32_t)len;
    } else {
        r.key_len = -1;
    }
    get_part(L, t, src, PLUA_VALUE);
    if (str_part(L, -1, &s, &len)) {
        r.value = (const uint8_t *)s;
        r.value_len = (int32_t)len;
    } else {
        r.value_len = -1;
    }
    if (get_part(L, t, src, PLUA_TIMESTAMP) == LUA_TNUMBER) {
        r.timestamp = to_ms(L, -1);
    }
    if (get_part(L, t, src, PLUA_FIELDS) == LUA_TTABLE) {
        spool_batch_get(b, after, &anchor);
        if ((rc = collect_fields(ctx, lua_gettop(L), &anchor, 0, &n, NULL)) < 0) {
            goto out;
        }
        if (grow((void **)&ctx->hdrs, &ctx->hdrs_cap, n + 1, sizeof(*ctx->hdrs)) < 0) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t k = 0; k < n; k++) {
            ctx->hdrs[k] = ctx->kv[k].h;
        }
        r.headers = ctx->hdrs;
        r.header_count = (uint32_t)n;
    }
    rc = spool_batch_emit_to(b, after, &r, topic); /* the topic was checked with the answer */
out:
    lua_settop(L, top);
    return rc;
}

static int prepare_scratch(plua_ctx *ctx, size_t m, size_t n)
{
    size_t cap = ctx->scr_cap;
    if (grow((void **)&ctx->orig, &cap, m + 1, sizeof(*ctx->orig)) < 0) {
        return -ENOMEM;
    }
    cap = ctx->scr_cap;
    if (grow((void **)&ctx->inpl, &cap, m + 1, sizeof(*ctx->inpl)) < 0) {
        return -ENOMEM;
    }
    ctx->scr_cap = cap;
    cap = ctx->slot_cap;
    if (grow((void **)&ctx->slot_inpl, &cap, n + 1, sizeof(*ctx->slot_inpl)) < 0) {
        return -ENOMEM;
    }
    cap = ctx->slot_cap;
    if (grow((void **)&ctx->slot_same, &cap, n + 1, sizeof(*ctx->slot_same)) < 0) {
        return -ENOMEM;
    }
    ctx->slot_cap = cap;
    memset(ctx->slot_inpl, 0, n);
    return 0;
}

/* The original index (0..n-1) of the table at t, or -1. */
static int32_t original_of(lua_State *L, int t, size_t n)
{
    lua_pushvalue(L, t);
    int32_t j = -1;
    if (lua_rawget(L, PLUA_IDX) == LUA_TNUMBER) {
        lua_Integer v = lua_tointeger(L, -1);
        j = v >= 0 && (size_t)v < n ? (int32_t)v : -1;
    }
    lua_pop(L, 1);
    return j;
}

int plua_apply(plua_ctx *ctx, spool_batch *b, size_t first, size_t n, int res,
               void (*on_slot_error)(plua_ctx *ctx, spool_batch *b, size_t i))
{
    lua_State *L = ctx->L;
    int ty = lua_type(L, res);
    int rc = 0;
    int top = lua_gettop(L);
    if (ty == LUA_TNONE || ty == LUA_TNIL || (ty == LUA_TBOOLEAN && lua_toboolean(L, res))) {
        /* Keep every original with the changes made to its table. */
        if ((rc = prepare_scratch(ctx, 0, n)) < 0) {
            goto out;
        }
        /* One record (record mode): apply_slot checks it all before it
         * changes anything. Several: all are checked before any changes. */
        memset(ctx->slot_same, 0, n);
        for (size_t j = 0; n > 1 && j < n; j++) {
            spool_record r;
            int same;
            spool_batch_get(b, first + j, &r);
            lua_rawgeti(L, PLUA_POOL, (lua_Integer)j + 1);
            if ((rc = validate(ctx, lua_gettop(L), j + 1, &r, &same)) < 0) {
                goto out;
            }
            ctx->slot_same[j] = (uint8_t)same;
            lua_pop(L, 1);
        }
        for (size_t j = 0; j < n; j++) {
            lua_rawgeti(L, PLUA_POOL, (lua_Integer)j + 1);
            rc = apply_slot(ctx, b, first + j, lua_gettop(L), 0, j + 1, ctx->slot_same[j]);
            lua_pop(L, 1);
            if (rc == -ENOENT) {
                on_slot_error(ctx, b, first + j);
            } else if (rc < 0) {
                goto out;
            }
        }
        rc = 0;
        goto out;
    }
    if (ty == LUA_TBOOLEAN) {
        for (size_t j = 0; j < n; j++) {
            if ((rc = spool_batch_drop(b, first + j, "lua")) < 0) {
                goto out;
            }
        }
        goto out;
    }
    if (ty != LUA_TTABLE) {
        snprintf(ctx->err, sizeof(ctx->err),
                 "the function returned a %s: expected nothing, true, false, a record or a list "
                 "of records",
                 luaL_typename(L, res));
        rc = -EINVAL;
        goto out;
    }
    /* A table without element 1 that is not empty is one record. */
    int list = res;
    if (lua_rawgeti(L, res, 1) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushnil(L);
        int empty = !lua_next(L, res);
        lua_settop(L, top);
        if (!empty) {
            lua_createtable(L, 1, 0);
            lua_pushvalue(L, res);
            lua_rawseti(L, -2, 1);
            list = lua_gettop(L);
        }
    } else {
        lua_pop(L, 1);
    }
    size_t m = (size_t)lua_rawlen(L, list);
    if ((rc = prepare_scratch(ctx, m, n)) < 0) {
        goto out;
    }
    /* Pass 1: validate every element, find the originals kept in place. */
    int32_t last = -1;
    for (size_t k = 0; k < m; k++) {
        if (lua_rawgeti(L, list, (lua_Integer)k + 1) != LUA_TTABLE) {
            snprintf(ctx->err, sizeof(ctx->err), "returned record %zu is a %s, not a table", k + 1,
                     luaL_typename(L, -1));
            rc = -EINVAL;
            goto out;
        }
        int t = lua_gettop(L);
        int32_t o = original_of(L, t, n);
        ctx->orig[k] = o;
        /* Slot 0 stays in place only if nothing comes before it: emitted
         * records need a record to follow. */
        ctx->inpl[k] = o > last && (o > 0 || k == 0);
        spool_record r;
        int same = 0;
        if (ctx->inpl[k]) {
            last = o;
            ctx->slot_inpl[o] = 1;
            spool_batch_get(b, first + (size_t)o, &r);
        }
        if ((rc = validate(ctx, t, k + 1, ctx->inpl[k] ? &r : NULL, &same)) < 0) {
            goto out;
        }
        if (ctx->inpl[k]) {
            ctx->slot_same[o] = (uint8_t)same;
        }
        lua_pop(L, 1);
    }
    /* Pass 2: change, drop and emit, in the list's order. */
    size_t next = 0;       /* slots below are decided */
    int64_t anchor = -1;   /* the slot the last element went to */
    lua_Integer src_k = 0; /* the element of the original last seen, 0 = none */
    for (size_t k = 0; k < m; k++) {
        lua_rawgeti(L, list, (lua_Integer)k + 1);
        int t = lua_gettop(L);
        int32_t o = ctx->orig[k];
        if (ctx->inpl[k]) {
            for (; next < (size_t)o; next++) {
                if ((rc = spool_batch_drop(b, first + next, "lua")) < 0) {
                    goto out;
                }
            }
            rc = apply_slot(ctx, b, first + (size_t)o, t, 0, k + 1, ctx->slot_same[o]);
            if (rc == -ENOENT) {
                on_slot_error(ctx, b, first + (size_t)o);
            } else if (rc < 0) {
                goto out;
            }
            anchor = o;
            next = (size_t)o + 1;
        } else {
            int src = 0;
            if (o < 0) { /* a new table: its source fills what it leaves out */
                if (src_k) {
                    lua_rawgeti(L, list, src_k);
                } else {
                    lua_rawgeti(L, PLUA_POOL, (lua_Integer)(next < n ? next : 0) + 1);
                }
                src = lua_gettop(L);
            }
            if (next < n && !ctx->slot_inpl[next]) {
                rc = apply_slot(ctx, b, first + next, t, src, k + 1, 0);
                if (rc == -ENOENT) {
                    on_slot_error(ctx, b, first + next);
                } else if (rc < 0) {
                    goto out;
                }
                anchor = (int64_t)next++;
            } else if ((rc = emit_after(ctx, b, first + (size_t)anchor, t, src)) < 0) {
                goto out;
            }
        }
        if (o >= 0) {
            src_k = (lua_Integer)k + 1;
        }
        lua_settop(L, top + (list != res));
    }
    for (; next < n; next++) {
        if ((rc = spool_batch_drop(b, first + next, "lua")) < 0) {
            goto out;
        }
    }
    rc = 0;
out:
    lua_settop(L, top);
    return rc;
}
