/*
 * throttle.c: the `throttle` processor (issue 15): lets at most `limit` records per `window`
 * through for each key and drops the rest, counted as
 * spool_processor_dropped_total{reason="throttle"}.
 *
 * Fixed windows per key, not a token bucket: a key's window opens at the first record it
 * sees (after its previous window ended) and lasts `window`; within it the first `limit`
 * records pass and the others are dropped; the next record after the window ends opens a new
 * window. So a window never passes more than `limit` records (over any span of `window` at
 * most 2 * limit can pass, across a window boundary).
 *
 * Time is the monotonic clock (spool_monotonic_ms; tests replace it through throttle.h), read
 * once per batch: the records of one batch share one instant. It is the time of processing,
 * not the records' timestamps (records replayed from a file after a restart are throttled as
 * they arrive).
 *
 * Bounded state: at most `max_keys` keys (processors/keytable.h); a new key when full forgets
 * the least recently used one (counted in spool_throttle_evictions_total), which then starts
 * a fresh window: eviction can only let more records through, never fewer.
 *
 * Hot path: one template render into a reused buffer and one hash lookup per record; no
 * allocation except when a key is first seen.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <spool/spool.h>

#include "../keytable.h"
#include "throttle.h"

typedef struct throttle_ctx {
    /* Options, filled and freed by the core. */
    int64_t limit;    /* records per window per key */
    int64_t window;   /* ms */
    char *key;        /* template, NULL = the record key */
    int64_t max_keys; /* bound on the keys remembered */
    /* State, on the processor thread. */
    keyed state; /* key -> slot[0] window start (ms), slot[1] records passed */
} throttle_ctx;

static throttle_clock_fn throttle_clock; /* NULL = spool_monotonic_ms */

void throttle_set_clock(throttle_clock_fn fn)
{
    throttle_clock = fn;
}

static const spool_option throttle_options[] = {
    /* Required: SPOOL_OPT_INTEGER and SPOOL_OPT_TIME have no `required` argument. */
    {"limit", SPOOL_OPT_INT, NULL, 1, SPOOL__FIELD(throttle_ctx, limit, int64_t), 1, INT64_MAX,
     NULL, "records let through per window per key; the rest are dropped"},
    {"window", SPOOL_OPT_DURATION, NULL, 1, SPOOL__FIELD(throttle_ctx, window, int64_t), 1,
     INT64_MAX, NULL,
     "length of a key's window (fixed, opened by the key's first record), e.g. \"1s\", \"1m\""},
    SPOOL_OPT_STR("key", throttle_ctx, key, NULL, 0,
                  "template naming the key records are counted by, e.g. \"{{ host }}\" "
                  "(default: the record's key)"),
    SPOOL_OPT_INTEGER("max_keys", throttle_ctx, max_keys, "10000", 1, 100000000,
                      "keys remembered at most; the least recently used is forgotten"),
    SPOOL_OPT_END,
};

static int throttle_check(spool_instance *ins, void *vctx)
{
    return keyed_check(ins, ((throttle_ctx *)vctx)->key);
}

static int throttle_init(spool_instance *ins, void *vctx)
{
    throttle_ctx *ctx = vctx;
    return keyed_init(&ctx->state, ins, ctx->key, ctx->max_keys);
}

static int throttle_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    throttle_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    int64_t now = throttle_clock ? throttle_clock() : spool_monotonic_ms();
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int fresh;
        int64_t *w = keyed_slots(&ctx->state, b, i, &fresh);
        if (!w) {
            rc = -ENOMEM; /* this and later records are kept */
            break;
        }
        if (fresh || now - w[0] >= ctx->window) {
            w[0] = now; /* a new window opens with this record */
            w[1] = 0;
        }
        if (w[1] < ctx->limit) {
            w[1]++;
        } else if ((rc = spool_batch_drop(b, i, "throttle")) < 0) {
            break;
        }
    }
    keyed_flush(&ctx->state);
    return rc;
}

static void throttle_destroy(spool_instance *ins, void *vctx)
{
    keyed_destroy(&((throttle_ctx *)vctx)->state);
}

const spool_plugin spool_plugin_throttle = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "throttle",
    .description = "lets at most `limit` records per `window` through per key (fixed windows); "
                   "drops counted with reason \"throttle\"",
    .options = throttle_options,
    .context_size = sizeof(throttle_ctx),
    .check = throttle_check,
    .init = throttle_init,
    .process = throttle_process,
    .destroy = throttle_destroy,
};
