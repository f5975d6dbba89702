/*
 * test_plugin.c: an external output plugin used by the integration tests.
 * It appends "<partition>:<offset>:<value>" lines to the file named by its
 * `path` option, proving the core loads it, validates its options and
 * feeds it records.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

typedef struct tp_ctx {
    char *path;   /* option */
    char *prefix; /* option */
    FILE *f;
    spool_counter *seen;
} tp_ctx;

static const spool_option tp_options[] = {
    SPOOL_OPT_STR("path", tp_ctx, path, NULL, 1, "file the records are appended to"),
    SPOOL_OPT_STR("prefix", tp_ctx, prefix, "ext", 0, "text written before each record"),
    SPOOL_OPT_END,
};

static int tp_init(spool_instance *ins, void *vctx)
{
    tp_ctx *ctx = vctx;
    ctx->f = fopen(ctx->path, "a");
    if (!ctx->f) {
        return -errno;
    }
    ctx->seen = spool_counter_register(ins, "seen", "records seen by the test plugin");
    spool_log_info(ins, "external test plugin writing to %s", ctx->path);
    return 0;
}

static int tp_flush(spool_instance *ins, void *vctx, const spool_chunk *c)
{
    tp_ctx *ctx = vctx;
    for (size_t i = 0; i < c->count; i++) {
        const spool_record *r = &c->records[i];
        fprintf(ctx->f, "%s %d:%lld:%.*s\n", ctx->prefix, c->partition, (long long)r->offset,
                r->value_len > 0 ? r->value_len : 0, r->value ? (const char *)r->value : "");
    }
    spool_counter_add(ctx->seen, c->count);
    return fflush(ctx->f) == 0 ? SPOOL_OK : SPOOL_RETRY;
}

static void tp_destroy(spool_instance *ins, void *vctx)
{
    tp_ctx *ctx = vctx;
    if (ctx->f) {
        fclose(ctx->f);
    }
}

static const spool_plugin tp_plugin = {
    SPOOL_PLUGIN_ABI, /* abi_version, struct_size, abi_signature */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "test_ext",
    .description = "test plugin: writes partition:offset:value lines",
    .options = tp_options,
    .context_size = sizeof(tp_ctx),
    .init = tp_init,
    .flush = tp_flush,
    .destroy = tp_destroy,
};

const spool_plugin *spool_plugin_register(void)
{
    return &tp_plugin;
}
