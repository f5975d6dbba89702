/*
 * route.c: the `route` processor: sends each record to the log topic of the
 * first rule whose condition holds (`rules: [{when: ..., topic: ...}]`, in
 * order), else to `default`, else leaves it on its topic. After the chain
 * the core splits the batch by topic, keeping each topic's record order.
 *
 * check() validates everything init relies on, with positions: each rule
 * has exactly `when` and `topic`, the condition compiles (the column points
 * inside it), every topic (and `default`) exists. Rules are compiled once in
 * init; routing a record costs its conditions' evaluations and no
 * allocation (one processor thread, one handle per rule).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

typedef struct route_rule {
    spool_expr *when;  /* compiled condition */
    const char *topic; /* points into the option table's strings */
} route_rule;

typedef struct route_ctx {
    spool_strmaplist rules; /* option: [{when, topic}, ...] */
    char *dflt;             /* option: topic for records no rule matches; NULL = stay */
    route_rule *compiled;   /* rules.count, from init */
    size_t ncompiled;
} route_ctx;

static const spool_option route_options[] = {
    SPOOL_OPT_MAPLIST("rules", route_ctx, rules, 0,
                      "ordered rules {when: condition, topic: name}; the first match wins"),
    SPOOL_OPT_STR("default", route_ctx, dflt, NULL, 0,
                  "topic for records no rule matches (none = they stay on their topic)"),
    SPOOL_OPT_END,
};

/* The value of `key` in one rule, or NULL. */
static const char *rule_get(const spool_strmap *m, const char *key)
{
    for (size_t i = 0; i < m->count; i++) {
        if (strcmp(m->keys[i], key) == 0) {
            return m->values[i];
        }
    }
    return NULL;
}

/* Validates rule i; with `out`, also compiles it. 0 or -EINVAL (reported),
 * -ENOMEM. */
static int rule_load(spool_instance *ins, const spool_strmap *m, size_t i, route_rule *out)
{
    char opt[64];
    int bad = 0;
    for (size_t k = 0; k < m->count; k++) {
        if (strcmp(m->keys[k], "when") != 0 && strcmp(m->keys[k], "topic") != 0) {
            snprintf(opt, sizeof(opt), "rules[%zu].%s", i, m->keys[k]);
            spool_config_error(ins, opt, "unknown key '%s' in a route rule (when, topic)",
                               m->keys[k]);
            bad = 1;
        }
    }
    const char *when = rule_get(m, "when"), *topic = rule_get(m, "topic");
    snprintf(opt, sizeof(opt), "rules[%zu]", i);
    if (!when || !topic) {
        spool_config_error(ins, opt, "a route rule needs both 'when' and 'topic'");
        return -EINVAL;
    }
    if (!spool_topic_exists(ins, topic)) {
        snprintf(opt, sizeof(opt), "rules[%zu].topic", i);
        spool_config_error(ins, opt, "topic '%s' is not defined in topics", topic);
        bad = 1;
    }
    spool_expr_error err;
    spool_expr *e = NULL;
    int rc = spool_expr_compile(when, strlen(when), &e, &err);
    if (rc == -EINVAL) {
        snprintf(opt, sizeof(opt), "rules[%zu].when", i);
        spool_config_error_at(ins, opt, err.column, "invalid condition: %s", err.message);
        return rc;
    }
    if (rc < 0 || bad || !out) {
        spool_expr_free(e);
        return rc < 0 ? rc : bad ? -EINVAL : 0;
    }
    out->when = e;
    out->topic = topic;
    return 0;
}

static int route_load(spool_instance *ins, route_ctx *ctx, route_rule *out)
{
    int rc = 0;
    if (ctx->rules.count == 0 && !ctx->dflt) {
        spool_config_error(ins, NULL, "give 'rules' (and/or 'default'): nothing to route");
        rc = -EINVAL;
    }
    for (size_t i = 0; i < ctx->rules.count; i++) {
        int r = rule_load(ins, &ctx->rules.items[i], i, out ? &out[i] : NULL);
        if (r < 0 && rc != -ENOMEM) {
            rc = r;
        }
    }
    if (ctx->dflt && !spool_topic_exists(ins, ctx->dflt)) {
        spool_config_error(ins, "default", "topic '%s' is not defined in topics", ctx->dflt);
        rc = rc ? rc : -EINVAL;
    }
    return rc;
}

static int route_check(spool_instance *ins, void *vctx)
{
    return route_load(ins, vctx, NULL);
}

static int route_init(spool_instance *ins, void *vctx)
{
    route_ctx *ctx = vctx;
    ctx->compiled = calloc(ctx->rules.count ? ctx->rules.count : 1, sizeof(*ctx->compiled));
    if (!ctx->compiled) {
        return -ENOMEM;
    }
    ctx->ncompiled = ctx->rules.count;
    return route_load(ins, ctx, ctx->compiled);
}

static void route_destroy(spool_instance *ins, void *vctx)
{
    route_ctx *ctx = vctx;
    (void)ins;
    for (size_t i = 0; ctx->compiled && i < ctx->ncompiled; i++) {
        spool_expr_free(ctx->compiled[i].when);
    }
    free(ctx->compiled);
    ctx->compiled = NULL;
}

static int route_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    route_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    int rc = 0;
    (void)ins;
    for (size_t i = 0; i < n; i++) {
        spool_record r;
        const char *to = ctx->dflt;
        spool_batch_get(b, i, &r);
        const char *topic = spool_batch_topic(b, i);
        for (size_t k = 0; k < ctx->ncompiled; k++) {
            if (spool_expr_eval_record(ctx->compiled[k].when, &r, topic)) {
                to = ctx->compiled[k].topic;
                break;
            }
        }
        if (to && (!topic || strcmp(to, topic) != 0)) {
            int r2 = spool_batch_set_topic(b, i, to);
            if (r2 < 0 && r2 != -ENOENT) {
                rc = r2; /* -ENOENT: dropped by an earlier step of this call; none here */
            }
        }
    }
    return rc;
}

const spool_plugin spool_plugin_route = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "route",
    .description = "send records to other topics by ordered rules {when, topic}, and a default",
    .options = route_options,
    .context_size = sizeof(route_ctx),
    .check = route_check,
    .init = route_init,
    .destroy = route_destroy,
    .process = route_process,
};
