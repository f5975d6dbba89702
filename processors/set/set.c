/*
 * set.c: the `set` processor: changes a record's fields. In this order,
 * each step seeing the record as the steps before left it:
 *   1. rename: {old: new}   a header renamed (its value kept; missing: no-op)
 *   2. remove: [a, b]       headers removed (every header of that name)
 *   3. fields: {name: tpl}  headers added or overwritten, in file order,
 *                           from templates (`"{{ app }}-x"`, or plain text)
 *   4. key: tpl             the record's key, from a template
 *   5. value: tpl           the record's value, from a template, or
 *      value_json: [f, ...] the value rebuilt as one JSON object of those
 *                           fields ({"f":"v",...}; values are JSON strings,
 *                           missing fields left out, names as written)
 * Templates read the fields conditions read (key, value, timestamp, topic,
 * headers). `key`, `value`, `timestamp` and `topic` are the record's own
 * parts, not headers: check() refuses them in rename/remove/fields (use
 * `key:`/`value:` here, `route` for topics).
 *
 * No allocation per record once the scratch buffers have grown to the
 * largest rendering (one processor thread owns the context).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

typedef struct set_ctx {
    spool_strmap fields;        /* option: header name -> template */
    spool_strmap rename;        /* option: old header name -> new */
    spool_strlist remove;       /* option: header names */
    char *key;                  /* option: key template */
    char *value;                /* option: value template */
    spool_strlist value_json;   /* option: fields of the JSON value */
    spool_template **field_tpl; /* fields.count, from init */
    spool_template *key_tpl;
    spool_template *value_tpl;
    spool_buf out;  /* a rendering */
    spool_buf copy; /* a header value being renamed */
    char scratch[SPOOL_FIELD_SCRATCH];
} set_ctx;

static const spool_option set_options[] = {
    SPOOL_OPT_STRMAP("fields", set_ctx, fields,
                     "headers to add or overwrite: {name: template}, in order"),
    SPOOL_OPT_STRMAP("rename", set_ctx, rename, "headers to rename: {old: new}"),
    SPOOL_OPT_STRLIST("remove", set_ctx, remove, 0, "headers to remove"),
    SPOOL_OPT_STR("key", set_ctx, key, NULL, 0, "the record key, from a template"),
    SPOOL_OPT_STR("value", set_ctx, value, NULL, 0, "the record value, from a template"),
    SPOOL_OPT_STRLIST("value_json", set_ctx, value_json, 0,
                      "the value rebuilt as a JSON object of these fields"),
    SPOOL_OPT_END,
};

static int is_own_part(const char *name)
{
    return strcmp(name, "key") == 0 || strcmp(name, "value") == 0 ||
           strcmp(name, "timestamp") == 0 || strcmp(name, "topic") == 0;
}

/* Refuses a header name that is one of the record's own parts, or empty. */
static int check_name(spool_instance *ins, const char *opt, const char *name)
{
    if (!name[0]) {
        spool_config_error(ins, opt, "a field name cannot be empty");
        return -EINVAL;
    }
    if (is_own_part(name)) {
        const char *how = strcmp(name, "topic") == 0       ? "the `route` processor sets it"
                          : strcmp(name, "timestamp") == 0 ? "the input or `parse` sets it"
                                                           : "set it with this processor's `";
        int opt_hint = name[0] == 'k' || name[0] == 'v';
        spool_config_error(ins, opt, "'%s' is the record's own %s, not a header: %s%s%s", name,
                           name, how, opt_hint ? name : "", opt_hint ? ":` option" : "");
        return -EINVAL;
    }
    return 0;
}

static int compile_tpl(spool_instance *ins, const char *opt, const char *text, spool_template **out)
{
    const char *err = NULL;
    spool_template *t = spool_template_compile(text, &err);
    if (!t) {
        spool_config_error(ins, opt, "invalid template: %s", err ? err : "out of memory");
        return -EINVAL;
    }
    if (out) {
        *out = t;
    } else {
        spool_template_destroy(t);
    }
    return 0;
}

/* Validates every option; with `keep`, keeps the compiled templates. */
static int set_load(spool_instance *ins, set_ctx *ctx, int keep)
{
    char opt[300];
    int rc = 0;
    for (size_t i = 0; i < ctx->rename.count; i++) {
        snprintf(opt, sizeof(opt), "rename.%s", ctx->rename.keys[i]);
        if (check_name(ins, opt, ctx->rename.keys[i]) < 0 ||
            check_name(ins, opt, ctx->rename.values[i]) < 0) {
            rc = -EINVAL;
        }
    }
    for (size_t i = 0; i < ctx->remove.count; i++) {
        snprintf(opt, sizeof(opt), "remove[%zu]", i);
        if (check_name(ins, opt, ctx->remove.items[i]) < 0) {
            rc = -EINVAL;
        }
    }
    for (size_t i = 0; i < ctx->fields.count; i++) {
        snprintf(opt, sizeof(opt), "fields.%s", ctx->fields.keys[i]);
        if (check_name(ins, opt, ctx->fields.keys[i]) < 0 ||
            compile_tpl(ins, opt, ctx->fields.values[i], keep ? &ctx->field_tpl[i] : NULL) < 0) {
            rc = -EINVAL;
        }
    }
    if (ctx->key && compile_tpl(ins, "key", ctx->key, keep ? &ctx->key_tpl : NULL) < 0) {
        rc = -EINVAL;
    }
    if (ctx->value && compile_tpl(ins, "value", ctx->value, keep ? &ctx->value_tpl : NULL) < 0) {
        rc = -EINVAL;
    }
    if (ctx->value && ctx->value_json.count) {
        spool_config_error(ins, "value_json", "give one of value and value_json, not both");
        rc = -EINVAL;
    }
    if (!ctx->fields.count && !ctx->rename.count && !ctx->remove.count && !ctx->key &&
        !ctx->value && !ctx->value_json.count) {
        spool_config_error(ins, NULL,
                           "nothing to set: give fields, rename, remove, key, value or "
                           "value_json");
        rc = -EINVAL;
    }
    return rc;
}

static int set_check(spool_instance *ins, void *vctx)
{
    return set_load(ins, vctx, 0);
}

static int set_init(spool_instance *ins, void *vctx)
{
    set_ctx *ctx = vctx;
    ctx->field_tpl = calloc(ctx->fields.count ? ctx->fields.count : 1, sizeof(*ctx->field_tpl));
    if (!ctx->field_tpl) {
        return -ENOMEM;
    }
    return set_load(ins, ctx, 1);
}

static void set_destroy(spool_instance *ins, void *vctx)
{
    set_ctx *ctx = vctx;
    (void)ins;
    for (size_t i = 0; ctx->field_tpl && i < ctx->fields.count; i++) {
        spool_template_destroy(ctx->field_tpl[i]);
    }
    free(ctx->field_tpl);
    ctx->field_tpl = NULL;
    spool_template_destroy(ctx->key_tpl);
    spool_template_destroy(ctx->value_tpl);
    ctx->key_tpl = ctx->value_tpl = NULL;
    spool_buf_free(&ctx->out);
    spool_buf_free(&ctx->copy);
}

/* Renders t over record i into ctx->out. 0 or -ENOMEM. */
static int render(set_ctx *ctx, const spool_template *t, spool_batch *b, size_t i)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    const char *topic = spool_batch_topic(b, i);
    const char *input = NULL;
    ctx->out.len = 0;
    if (ctx->out.cap < 256 && spool_buf_reserve(&ctx->out, 256) < 0) {
        return -ENOMEM;
    }
    size_t n = spool_template_render(t, &r, topic, input, (char *)ctx->out.data, ctx->out.cap);
    if (n > ctx->out.cap) {
        if (spool_buf_reserve(&ctx->out, n) < 0) {
            return -ENOMEM;
        }
        n = spool_template_render(t, &r, topic, input, (char *)ctx->out.data, ctx->out.cap);
    }
    ctx->out.len = n;
    return 0;
}

/* Builds {"f":"v",...} of the value_json fields of record i in ctx->out. */
static int build_json(set_ctx *ctx, spool_batch *b, size_t i)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    const char *topic = spool_batch_topic(b, i);
    int first = 1;
    ctx->out.len = 0;
    if (spool_buf_append(&ctx->out, "{", 1) < 0) {
        return -ENOMEM;
    }
    for (size_t k = 0; k < ctx->value_json.count; k++) {
        const char *name = ctx->value_json.items[k];
        const uint8_t *v;
        size_t len;
        if (!spool_record_field(&r, topic, name, strlen(name), ctx->scratch, &v, &len)) {
            continue;
        }
        if ((!first && spool_buf_append(&ctx->out, ",", 1) < 0) ||
            spool_json_append_string(&ctx->out, name, strlen(name)) < 0 ||
            spool_buf_append(&ctx->out, ":", 1) < 0 ||
            spool_json_append_string(&ctx->out, v, len) < 0) {
            return -ENOMEM;
        }
        first = 0;
    }
    return spool_buf_append(&ctx->out, "}", 1);
}

static int set_record(set_ctx *ctx, spool_batch *b, size_t i)
{
    int rc;
    for (size_t k = 0; k < ctx->rename.count; k++) {
        const spool_header *h = spool_batch_header(b, i, ctx->rename.keys[k]);
        if (!h) {
            continue;
        }
        int32_t len = h->value_len;
        ctx->copy.len = 0;
        if (len > 0 && spool_buf_append(&ctx->copy, h->value, (size_t)len) < 0) {
            return -ENOMEM;
        }
        const void *val = ctx->copy.data ? (const void *)ctx->copy.data : "";
        if ((rc = spool_batch_remove_header(b, i, ctx->rename.keys[k])) < 0 ||
            (rc = spool_batch_set_header(b, i, ctx->rename.values[k], len < 0 ? NULL : val,
                                         len < 0 ? -1 : len)) < 0) {
            return rc;
        }
    }
    for (size_t k = 0; k < ctx->remove.count; k++) {
        if ((rc = spool_batch_remove_header(b, i, ctx->remove.items[k])) < 0) {
            return rc;
        }
    }
    for (size_t k = 0; k < ctx->fields.count; k++) {
        if ((rc = render(ctx, ctx->field_tpl[k], b, i)) < 0 ||
            (rc = spool_batch_set_header(b, i, ctx->fields.keys[k],
                                         ctx->out.data ? (const void *)ctx->out.data : "",
                                         (int32_t)ctx->out.len)) < 0) {
            return rc;
        }
    }
    if (ctx->key_tpl) {
        if ((rc = render(ctx, ctx->key_tpl, b, i)) < 0 ||
            (rc = spool_batch_set_key(b, i, ctx->out.data ? (const void *)ctx->out.data : "",
                                      (int32_t)ctx->out.len)) < 0) {
            return rc;
        }
    }
    if (ctx->value_tpl || ctx->value_json.count) {
        rc = ctx->value_tpl ? render(ctx, ctx->value_tpl, b, i) : build_json(ctx, b, i);
        if (rc < 0 ||
            (rc = spool_batch_set_value(b, i, ctx->out.data ? (const void *)ctx->out.data : "",
                                        (int32_t)ctx->out.len)) < 0) {
            return rc;
        }
    }
    return 0;
}

static int set_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    set_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    int rc = 0;
    (void)ins;
    for (size_t i = 0; i < n; i++) {
        int r = set_record(ctx, b, i);
        if (r < 0 && r != -ENOENT) {
            rc = r; /* counted and logged once per batch by the core; the rest go on */
        }
    }
    return rc;
}

const spool_plugin spool_plugin_set = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "set",
    .description = "add, overwrite, rename and remove fields; set the key or value from templates",
    .options = set_options,
    .context_size = sizeof(set_ctx),
    .check = set_check,
    .init = set_init,
    .destroy = set_destroy,
    .process = set_process,
};
