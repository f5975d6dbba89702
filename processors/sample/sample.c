/*
 * sample.c: the `sample` processor (issue 15): keeps 1 record in every `rate` per key and
 * drops the others, counted as spool_processor_dropped_total{reason="sample"}.
 *
 * Deterministic, not random: each key has a counter of the records seen; the first record of
 * a key is kept, then every rate-th after it (counter % rate == 0), so the records kept are a
 * pure function of the order in which a key's records arrive. A key is `key` rendered as a
 * template ("{{ host }}"), or by default the record's own key (records without a key share
 * one counter).
 *
 * Bounded state: at most `max_keys` counters (processors/keytable.h); a new key when the table
 * is full forgets the least recently used key, counted in spool_sample_evictions_total. A
 * forgotten key starts again at "keep the next one".
 *
 * Hot path: one template render into a reused buffer and one hash lookup per record; no
 * allocation except when a key is first seen (its bytes are copied into the table).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <spool/spool.h>

#include "../keytable.h"

typedef struct sample_ctx {
    /* Options, filled and freed by the core. */
    int64_t rate;     /* keep 1 in rate */
    char *key;        /* template, NULL = the record key */
    int64_t max_keys; /* bound on the keys remembered */
    /* State, on the processor thread. */
    keyed state; /* key -> slot[0] = records seen */
} sample_ctx;

static const spool_option sample_options[] = {
    /* Required: SPOOL_OPT_INTEGER has no `required` argument. */
    {"rate", SPOOL_OPT_INT, NULL, 1, SPOOL__FIELD(sample_ctx, rate, int64_t), 1, INT64_MAX, NULL,
     "keep 1 record in every `rate` of a key (the first, then every rate-th)"},
    SPOOL_OPT_STR("key", sample_ctx, key, NULL, 0,
                  "template naming the key records are counted by, e.g. \"{{ host }}\" "
                  "(default: the record's key)"),
    SPOOL_OPT_INTEGER("max_keys", sample_ctx, max_keys, "10000", 1, 100000000,
                      "keys remembered at most; the least recently used is forgotten"),
    SPOOL_OPT_END,
};

static int sample_check(spool_instance *ins, void *vctx)
{
    return keyed_check(ins, ((sample_ctx *)vctx)->key);
}

static int sample_init(spool_instance *ins, void *vctx)
{
    sample_ctx *ctx = vctx;
    return keyed_init(&ctx->state, ins, ctx->key, ctx->max_keys);
}

static int sample_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    sample_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int fresh;
        int64_t *seen = keyed_slots(&ctx->state, b, i, &fresh);
        if (!seen) {
            rc = -ENOMEM; /* this and later records are kept */
            break;
        }
        uint64_t nth = (uint64_t)seen[0];
        seen[0] = (int64_t)(nth + 1 == (uint64_t)ctx->rate ? 0 : nth + 1);
        if (nth != 0 && (rc = spool_batch_drop(b, i, "sample")) < 0) {
            break;
        }
    }
    keyed_flush(&ctx->state);
    return rc;
}

static void sample_destroy(spool_instance *ins, void *vctx)
{
    keyed_destroy(&((sample_ctx *)vctx)->state);
}

const spool_plugin spool_plugin_sample = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "sample",
    .description = "keeps 1 record in every N per key (deterministic: the first, then every "
                   "N-th); drops counted with reason \"sample\"",
    .options = sample_options,
    .context_size = sizeof(sample_ctx),
    .check = sample_check,
    .init = sample_init,
    .process = sample_process,
    .destroy = sample_destroy,
};
