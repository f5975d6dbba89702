/*
 * abi_v1_plugin.c: an external output plugin compiled against ABI 1's
 * header, frozen in this folder as it stood at commit 9cd97c0 (so without
 * abi_signature). It indexes every struct the core and a plugin share: its
 * option table (spool_option), the chunk's records (spool_record) and each
 * record's headers (spool_header). For every record it appends
 *     <prefix> <partition>:<offset>:<value> <key>=<value>,<key>=<value>...
 * to the file named by `path`, so a test sees whether those strides still
 * agree with the core's. Never edit spool.h beside it: it is the frozen ABI.
 */
#include <errno.h>
#include <stdio.h>

#include "spool.h" /* the frozen ABI 1 header in this folder */

typedef struct v1_ctx {
    char *path;    /* option: file the records are appended to */
    char *prefix;  /* option: text before each record */
    int64_t every; /* option: unused, exercises an int row of the table */
    FILE *f;
} v1_ctx;

static const spool_option v1_options[] = {
    SPOOL_OPT_STR("path", v1_ctx, path, NULL, 1, "file the records are appended to"),
    SPOOL_OPT_STR("prefix", v1_ctx, prefix, "v1", 0, "text written before each record"),
    SPOOL_OPT_INTEGER("every", v1_ctx, every, "1", 1, 1000, "unused"),
    SPOOL_OPT_END,
};

static int v1_init(spool_instance *ins, void *vctx)
{
    v1_ctx *ctx = vctx;
    ctx->f = fopen(ctx->path, "a");
    if (!ctx->f) {
        return -errno;
    }
    spool_log_info(ins, "ABI 1 plugin writing to %s", ctx->path);
    return 0;
}

static int v1_flush(spool_instance *ins, void *vctx, const spool_chunk *c)
{
    v1_ctx *ctx = vctx;
    for (size_t i = 0; i < c->count; i++) {
        const spool_record *r = &c->records[i];
        fprintf(ctx->f, "%s %d:%lld:%.*s ", ctx->prefix, c->partition, (long long)r->offset,
                r->value_len > 0 ? r->value_len : 0, r->value ? (const char *)r->value : "");
        for (uint32_t j = 0; j < r->header_count; j++) {
            const spool_header *h = &r->headers[j];
            fprintf(ctx->f, "%s%.*s=%.*s", j ? "," : "", (int)h->key_len, h->key,
                    h->value_len > 0 ? (int)h->value_len : 0,
                    h->value ? (const char *)h->value : "");
        }
        fputc('\n', ctx->f);
    }
    return fflush(ctx->f) == 0 ? SPOOL_OK : SPOOL_RETRY;
}

static void v1_destroy(spool_instance *ins, void *vctx)
{
    v1_ctx *ctx = vctx;
    if (ctx->f) {
        fclose(ctx->f);
    }
}

static const spool_plugin v1_plugin = {
    .abi_version = SPOOL_ABI_VERSION,    /* 1 in the frozen header */
    .struct_size = sizeof(spool_plugin), /* 120 on LP64 */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "abi_v1",
    .description = "test plugin built against ABI 1's frozen header",
    .options = v1_options,
    .context_size = sizeof(v1_ctx),
    .init = v1_init,
    .flush = v1_flush,
    .destroy = v1_destroy,
};

const spool_plugin *spool_plugin_register(void)
{
    return &v1_plugin;
}
