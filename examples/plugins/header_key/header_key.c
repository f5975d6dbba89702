/*
 * header_key.c: an example processor plugin, built out of tree against the
 * installed spool/spool.h (see Makefile and docs/plugins.md).
 *
 * It sets each record's key to the value of one of its headers (`header`),
 * upper-cased if `uppercase` is set. A record without that header keeps its
 * key, or gets `default_key` if that is set. The key decides the partition
 * a record goes to, so this groups records by a header.
 *
 * What a processor can change today is the key (spool_batch_set_key); it
 * sees every batch of every input, on the processor thread, before the log
 * writer assigns partitions. An input with a `key:` template renders its
 * keys after the processors and so replaces the key set here.
 *
 * Invariant: a record view from spool_batch_get points into the batch and
 * is invalid once the batch changes, so the header's value is copied out
 * before spool_batch_set_key.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <spool/spool.h>

typedef struct header_key_ctx {
    /* Options: filled by the core from the table below, freed by it after destroy. */
    char *header; /* required */
    int uppercase;
    char *default_key; /* NULL = leave records without the header alone */
    /* The plugin's own state, used only on the processor thread. */
    char *buf; /* the key being built */
    size_t cap;
    spool_counter *missing; /* records without the header */
} header_key_ctx;

static const spool_option header_key_options[] = {
    SPOOL_OPT_STR("header", header_key_ctx, header, NULL, 1, "header whose value becomes the key"),
    SPOOL_OPT_FLAG("uppercase", header_key_ctx, uppercase, "false", "upper-case the key"),
    SPOOL_OPT_STR("default_key", header_key_ctx, default_key, NULL, 0,
                  "key of records without the header (none = keep their key)"),
    SPOOL_OPT_END,
};

/* Semantic checks the table cannot express. No side effects: `spool check`
 * calls only this, and `spool run` calls it before init. */
static int header_key_check(spool_instance *ins, void *vctx)
{
    header_key_ctx *ctx = vctx;
    if (!ctx->header || ctx->header[0] == '\0') {
        spool_config_error(ins, "header", "must name a header");
        return -EINVAL;
    }
    return 0;
}

static int header_key_init(spool_instance *ins, void *vctx)
{
    header_key_ctx *ctx = vctx;
    ctx->missing =
        spool_counter_register(ins, "missing", "Records without the header that makes the key");
    return ctx->missing ? 0 : -ENOMEM;
}

/* Makes room for n bytes in ctx->buf. */
static int reserve(header_key_ctx *ctx, size_t n)
{
    if (n <= ctx->cap) {
        return 0;
    }
    size_t cap = ctx->cap ? ctx->cap : 64;
    while (cap < n) {
        cap *= 2;
    }
    char *p = realloc(ctx->buf, cap);
    if (!p) {
        return -ENOMEM;
    }
    ctx->buf = p;
    ctx->cap = cap;
    return 0;
}

static int header_key_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    header_key_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    uint64_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        spool_record r;
        spool_batch_get(b, i, &r); /* a view: valid until the batch changes */
        const spool_header *h = spool_record_header(&r, ctx->header);
        const char *src;
        size_t len;
        if (h && h->value_len >= 0) {
            src = (const char *)h->value;
            len = (size_t)h->value_len;
        } else if (ctx->default_key) {
            missing++;
            src = ctx->default_key;
            len = strlen(ctx->default_key);
        } else {
            missing++;
            continue;
        }
        if (len > INT32_MAX || reserve(ctx, len ? len : 1) < 0) {
            return -ENOMEM; /* the core counts it and keeps the records as they are */
        }
        /* Copied out before the batch changes: h points into the batch. */
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)src[k];
            ctx->buf[k] = (char)(ctx->uppercase ? toupper(c) : c);
        }
        int rc = spool_batch_set_key(b, i, ctx->buf, (int32_t)len); /* copies the key */
        if (rc < 0) {
            return rc;
        }
    }
    if (missing) {
        spool_counter_add(ctx->missing, missing);
    }
    return 0;
}

static void header_key_destroy(spool_instance *ins, void *vctx)
{
    header_key_ctx *ctx = vctx;
    free(ctx->buf);
    ctx->buf = NULL;
    ctx->cap = 0;
    /* header and default_key are options: the core frees them after destroy;
     * the counter belongs to the core too. */
}

static const spool_plugin header_key_plugin = {
    SPOOL_PLUGIN_ABI, /* abi_version, struct_size, abi_signature */
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "header_key",
    .description = "example: sets each record's key from one of its headers",
    .options = header_key_options,
    .context_size = sizeof(header_key_ctx),
    .check = header_key_check,
    .init = header_key_init,
    .process = header_key_process,
    .destroy = header_key_destroy,
};

const spool_plugin *spool_plugin_register(void)
{
    return &header_key_plugin;
}
