/*
 * filter.c: the `filter` processor: keeps the records a condition selects
 * (`keep_when`) or drops those it selects (`drop_when`); exactly one of the
 * two is given. Conditions are the language of docs/conditions.md over the
 * record's fields (spool_record_field, the topic included), compiled once in
 * init; check() compiles them too, so a bad one is a config error at its
 * file:line:column, the column inside the expression.
 *
 * Every record it removes is dropped with reason "filter" (counted in
 * spool_processor_dropped_total{processor,reason="filter"}). No allocation
 * per record: evaluation uses the handle's own state (one processor thread).
 */
#include <errno.h>
#include <string.h>

#include "spool/spool.h"

typedef struct filter_ctx {
    char *keep_when;  /* option: a condition; records for which it is false are dropped */
    char *drop_when;  /* option: a condition; records for which it is true are dropped */
    spool_expr *expr; /* compiled at init */
    int keep;         /* 1 = keep_when, 0 = drop_when */
} filter_ctx;

static const spool_option filter_options[] = {
    SPOOL_OPT_STR("keep_when", filter_ctx, keep_when, NULL, 0,
                  "condition: keep only the records it holds for (docs/conditions.md)"),
    SPOOL_OPT_STR("drop_when", filter_ctx, drop_when, NULL, 0,
                  "condition: drop the records it holds for"),
    SPOOL_OPT_END,
};

/* Compiles the one condition given; reports what is wrong as a config
 * error. 0, -EINVAL or -ENOMEM. */
static int filter_compile(spool_instance *ins, filter_ctx *ctx, spool_expr **out)
{
    spool_expr_error err;
    const char *opt = ctx->keep_when ? "keep_when" : "drop_when";
    const char *text = ctx->keep_when ? ctx->keep_when : ctx->drop_when;
    *out = NULL;
    if ((ctx->keep_when != NULL) == (ctx->drop_when != NULL)) {
        spool_config_error(ins, ctx->keep_when ? "drop_when" : NULL,
                           "give exactly one of keep_when and drop_when");
        return -EINVAL;
    }
    int rc = spool_expr_compile(text, strlen(text), out, &err);
    if (rc == -EINVAL) {
        spool_config_error_at(ins, opt, err.column, "invalid condition: %s", err.message);
    }
    return rc;
}

static int filter_check(spool_instance *ins, void *vctx)
{
    spool_expr *e = NULL;
    int rc = filter_compile(ins, vctx, &e);
    spool_expr_free(e);
    return rc;
}

static int filter_init(spool_instance *ins, void *vctx)
{
    filter_ctx *ctx = vctx;
    ctx->keep = ctx->keep_when != NULL;
    return filter_compile(ins, ctx, &ctx->expr);
}

static void filter_destroy(spool_instance *ins, void *vctx)
{
    filter_ctx *ctx = vctx;
    (void)ins;
    spool_expr_free(ctx->expr);
    ctx->expr = NULL;
}

static int filter_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    filter_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    (void)ins;
    for (size_t i = 0; i < n; i++) {
        spool_record r;
        spool_batch_get(b, i, &r);
        int holds = spool_expr_eval_record(ctx->expr, &r, spool_batch_topic(b, i));
        if (holds != ctx->keep) {
            spool_batch_drop(b, i, "filter");
        }
    }
    return 0;
}

const spool_plugin spool_plugin_filter = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "filter",
    .description = "keep or drop records by a condition (keep_when or drop_when)",
    .options = filter_options,
    .context_size = sizeof(filter_ctx),
    .check = filter_check,
    .init = filter_init,
    .destroy = filter_destroy,
    .process = filter_process,
};
