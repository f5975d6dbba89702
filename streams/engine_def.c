/*
 * streams/engine_def.c: compiling a stream definition from its options
 * (engine.h lists them). Every refusal names the option and, inside a
 * condition, the column, so the runtime can report file:line:column. A
 * compiled sx_def is immutable; its fingerprint hashes the options sorted by
 * name, so a snapshot taken under another definition is refused.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

static int fail(sx_error *err, const char *opt, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(sx_error *err, const char *opt, size_t col, const char *fmt, ...)
{
    if (err) {
        snprintf(err->option, sizeof(err->option), "%s", opt ? opt : "");
        err->column = col;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

void sx_def_free(sx_def *d)
{
    if (d == NULL) {
        return;
    }
    spool_template_destroy(d->key);
    spool_expr_free(d->when);
    for (uint32_t i = 0; i < d->nsteps; i++) {
        spool_expr_free(d->steps[i].when);
    }
    free(d->steps);
    spool_expr_free(d->first);
    spool_expr_free(d->then);
    for (uint32_t i = 0; i < d->naggs; i++) {
        free(d->aggs[i].field);
        free(d->aggs[i].name);
    }
    free(d->aggs);
    free(d);
}

int sx_def_is_view(const sx_def *d)
{
    return d->kind == SX_VIEW;
}

uint64_t sx_def_fingerprint(const sx_def *d)
{
    return d->fingerprint;
}

/* "500ms", "10s", "1m", "2h", "7d", "250" (ms). */
static int parse_duration(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || errno || n < 0) {
        return -EINVAL;
    }
    int64_t mul = 1;
    if (*end == 0 || strcmp(end, "ms") == 0) {
        mul = 1;
    } else if (strcmp(end, "s") == 0) {
        mul = 1000;
    } else if (strcmp(end, "m") == 0) {
        mul = 60000;
    } else if (strcmp(end, "h") == 0) {
        mul = 3600000;
    } else if (strcmp(end, "d") == 0) {
        mul = 86400000;
    } else {
        return -EINVAL;
    }
    if (n > INT64_MAX / 4 / mul) {
        return -EINVAL;
    }
    *out = n * mul;
    return 0;
}

static int parse_uint(const char *v, uint32_t lo, uint32_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v)) {
        return -EINVAL;
    }
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || errno || n < lo || n >= UINT32_MAX) {
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}

static int compile_expr(const sx_opt *o, spool_expr **out, sx_error *err)
{
    if (*out) {
        return fail(err, o->name, 0, "given twice");
    }
    spool_expr_error e = {0};
    int rc = spool_expr_compile(o->value, strlen(o->value), out, &e);
    if (rc == -EINVAL) {
        return fail(err, o->name, e.column, "%s", e.message);
    }
    return rc;
}

/* "name[i].rest": i and rest; -1 when name is not of that form. */
static long indexed(const char *name, const char *prefix, const char **rest)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] != '[' ||
        !isdigit((unsigned char)name[pl + 1])) {
        return -1;
    }
    char *end;
    long i = strtol(name + pl + 1, &end, 10);
    if (*end != ']' || i < 0 || i > 255) {
        return -1;
    }
    *rest = end + 1;
    return i;
}

static int parse_agg(const sx_opt *o, sx_agg *a, sx_error *err)
{
    static const struct {
        const char *name;
        int fn;
        double q;
    } fns[] = {{"sum", AGG_SUM, 0},     {"min", AGG_MIN, 0},           {"max", AGG_MAX, 0},
               {"avg", AGG_AVG, 0},     {"distinct", AGG_DISTINCT, 0}, {"p50", AGG_QUANT, 0.5},
               {"p90", AGG_QUANT, 0.9}, {"p99", AGG_QUANT, 0.99},      {"last", AGG_LAST, 0}};
    const char *v = o->value;
    const char *as = strstr(v, " as ");
    size_t len = as ? (size_t)(as - v) : strlen(v);
    while (len && v[len - 1] == ' ') {
        len--;
    }
    char buf[256];
    if (len >= sizeof(buf)) {
        return fail(err, o->name, 1, "aggregate too long");
    }
    memcpy(buf, v, len);
    buf[len] = 0;
    char name[300];
    if (strcmp(buf, "count") == 0 || strcmp(buf, "count()") == 0) {
        a->fn = AGG_COUNT;
        snprintf(name, sizeof(name), "count");
    } else {
        char *lp = strchr(buf, '(');
        size_t n = strlen(buf);
        if (lp == NULL || n < 3 || buf[n - 1] != ')' || lp + 1 == buf + n - 1) {
            return fail(err, o->name, 1,
                        "expected count, sum(f), min(f), max(f), avg(f), distinct(f), "
                        "p50(f), p90(f), p99(f) or last(f)");
        }
        *lp = 0;
        buf[n - 1] = 0;
        size_t k;
        for (k = 0; k < sizeof(fns) / sizeof(fns[0]); k++) {
            if (strcmp(fns[k].name, buf) == 0) {
                break;
            }
        }
        if (k == sizeof(fns) / sizeof(fns[0])) {
            return fail(err, o->name, 1, "unknown aggregate '%s'", buf);
        }
        const char *f = lp + 1;
        for (const char *c = f; *c; c++) {
            if (!(isalnum((unsigned char)*c) || *c == '_' || *c == '.' || *c == '-')) {
                return fail(err, o->name, (size_t)(c - buf) + 1, "bad field name");
            }
        }
        a->fn = fns[k].fn;
        a->q = fns[k].q;
        a->field = strdup(f);
        if (a->field == NULL) {
            return -ENOMEM;
        }
        snprintf(name, sizeof(name), "%s_%s", fns[k].name, f);
    }
    if (as) {
        const char *nm = as + 4;
        while (*nm == ' ') {
            nm++;
        }
        if (*nm == 0) {
            return fail(err, o->name, (size_t)(nm - v) + 1, "expected a name after 'as'");
        }
        for (const char *c = nm; *c; c++) {
            if (!(isalnum((unsigned char)*c) || *c == '_' || *c == '.' || *c == '-')) {
                return fail(err, o->name, (size_t)(c - v) + 1, "bad aggregate name");
            }
        }
        snprintf(name, sizeof(name), "%s", nm);
    }
    a->name = strdup(name);
    return a->name ? 0 : -ENOMEM;
}

static int cmp_opt(const void *a, const void *b)
{
    const sx_opt *x = *(const sx_opt *const *)a;
    const sx_opt *y = *(const sx_opt *const *)b;
    return strcmp(x->name, y->name);
}

static uint64_t fingerprint(const sx_opt *opts, size_t n)
{
    const sx_opt **v = malloc((n ? n : 1) * sizeof(*v));
    uint64_t h = 0x73782d6465663031ULL; /* "sx-def01" */
    if (v == NULL) {
        return h;
    }
    for (size_t i = 0; i < n; i++) {
        v[i] = &opts[i];
    }
    qsort(v, n, sizeof(*v), cmp_opt);
    for (size_t i = 0; i < n; i++) {
        h = sx_hash64(v[i]->name, strlen(v[i]->name), h);
        h = sx_hash64(v[i]->value, strlen(v[i]->value), h);
    }
    free(v);
    return h;
}

/* Edit distance of a and b, capped at 9 (names are short). */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) {
        return 9;
    }
    int row[41];
    for (size_t j = 0; j <= lb; j++) {
        row[j] = (int)j;
    }
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            best = up + 1 < best ? up + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] < 9 ? row[lb] : 9;
}

/* The known option nearest to an unknown one (at most 2 edits), or NULL. */
static const char *nearest_option(const char *name)
{
    static const char *const known[] = {"key",
                                        "when",
                                        "allowed_lateness",
                                        "max_keys",
                                        "pattern.type",
                                        "pattern.count",
                                        "pattern.within",
                                        "pattern.first",
                                        "pattern.then",
                                        "view.group_by",
                                        "view.window.tumbling",
                                        "view.window.hopping",
                                        "view.window.every"};
    const char *best = NULL;
    int bd = 3;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        int dist = distance(name, known[i]);
        if (dist < bd) {
            bd = dist;
            best = known[i];
        }
    }
    return best;
}

typedef struct seen {
    const sx_opt *count, *within, *first, *then, *tumbling, *hopping, *every, *group_by, *key;
    const sx_opt *type, *steps_any, *aggs_any;
} seen;

static int one_opt(sx_def *d, const sx_opt *o, seen *sn, sx_error *err)
{
    const char *nm = o->name;
    const char *v = o->value;
    const char *rest;
    long i;
#define ONCE(slot)                                                                                 \
    do {                                                                                           \
        if (sn->slot) {                                                                            \
            return fail(err, nm, 0, "given twice");                                                \
        }                                                                                          \
        sn->slot = o;                                                                              \
    } while (0)
    if (strcmp(nm, "key") == 0) {
        ONCE(key);
    } else if (strcmp(nm, "view.group_by") == 0) {
        ONCE(group_by);
    } else if (strcmp(nm, "when") == 0) {
        return compile_expr(o, &d->when, err);
    } else if (strcmp(nm, "allowed_lateness") == 0) {
        if (parse_duration(v, &d->lateness) < 0) {
            return fail(err, nm, 1, "expected a duration (500ms, 10s, 1m, 2h, 7d)");
        }
    } else if (strcmp(nm, "max_keys") == 0) {
        if (parse_uint(v, 1, &d->max_keys) < 0 || d->max_keys > 100000000) {
            return fail(err, nm, 1, "expected an integer from 1 to 100000000");
        }
    } else if (strcmp(nm, "pattern.type") == 0) {
        ONCE(type);
        if (strcmp(v, "threshold") == 0) {
            d->kind = SX_THRESHOLD;
        } else if (strcmp(v, "sequence") == 0) {
            d->kind = SX_SEQUENCE;
        } else if (strcmp(v, "absence") == 0) {
            d->kind = SX_ABSENCE;
        } else {
            return fail(err, nm, 1, "expected threshold, sequence or absence");
        }
    } else if (strcmp(nm, "pattern.count") == 0) {
        ONCE(count);
        if (parse_uint(v, 1, &d->count) < 0 || d->count > 1000000) {
            return fail(err, nm, 1, "expected an integer from 1 to 1000000");
        }
    } else if (strcmp(nm, "pattern.within") == 0) {
        ONCE(within);
        if (parse_duration(v, &d->within) < 0 || d->within == 0) {
            return fail(err, nm, 1, "expected a duration above 0 (500ms, 10s, 1m, 2h, 7d)");
        }
    } else if (strcmp(nm, "pattern.first") == 0) {
        ONCE(first);
        return compile_expr(o, &d->first, err);
    } else if (strcmp(nm, "pattern.then") == 0) {
        ONCE(then);
        return compile_expr(o, &d->then, err);
    } else if ((i = indexed(nm, "pattern.steps", &rest)) >= 0) {
        sn->steps_any = o;
        if ((uint32_t)i >= d->nsteps) {
            sx_step *s = realloc(d->steps, (size_t)(i + 1) * sizeof(*s));
            if (s == NULL) {
                return -ENOMEM;
            }
            memset(s + d->nsteps, 0, (size_t)(i + 1 - d->nsteps) * sizeof(*s));
            d->steps = s;
            d->nsteps = (uint32_t)i + 1;
        }
        sx_step *st = &d->steps[i];
        if (strcmp(rest, ".when") == 0) {
            return compile_expr(o, &st->when, err);
        } else if (strcmp(rest, ".min") == 0) {
            if (st->min || parse_uint(v, 1, &st->min) < 0) {
                return fail(err, nm, 1, "expected one integer of at least 1");
            }
        } else if (strcmp(rest, ".max") == 0) {
            if (st->max || parse_uint(v, 1, &st->max) < 0) {
                return fail(err, nm, 1, "expected one integer of at least 1");
            }
        } else {
            return fail(err, nm, 0, "unknown step option (when, min, max)");
        }
    } else if (strcmp(nm, "view.window.tumbling") == 0) {
        ONCE(tumbling);
        if (parse_duration(v, &d->size) < 0 || d->size == 0) {
            return fail(err, nm, 1, "expected a duration above 0 (10s, 1m, 1h)");
        }
    } else if (strcmp(nm, "view.window.hopping") == 0) {
        ONCE(hopping);
        if (parse_duration(v, &d->size) < 0 || d->size == 0) {
            return fail(err, nm, 1, "expected a duration above 0 (10s, 1m, 1h)");
        }
    } else if (strcmp(nm, "view.window.every") == 0) {
        ONCE(every);
        if (parse_duration(v, &d->every) < 0 || d->every == 0) {
            return fail(err, nm, 1, "expected a duration above 0 (10s, 1m, 1h)");
        }
    } else if ((i = indexed(nm, "view.aggregates", &rest)) >= 0 && *rest == 0) {
        sn->aggs_any = o;
        if ((uint32_t)i >= d->naggs) {
            sx_agg *a = realloc(d->aggs, (size_t)(i + 1) * sizeof(*a));
            if (a == NULL) {
                return -ENOMEM;
            }
            memset(a + d->naggs, 0, (size_t)(i + 1 - d->naggs) * sizeof(*a));
            d->aggs = a;
            d->naggs = (uint32_t)i + 1;
        }
        if (d->aggs[i].name) {
            return fail(err, nm, 0, "given twice");
        }
        return parse_agg(o, &d->aggs[i], err);
    } else {
        const char *near = nearest_option(nm);
        if (near) {
            return fail(err, nm, 0, "unknown stream option '%s', did you mean '%s'?", nm, near);
        }
        return fail(err, nm, 0, "unknown stream option '%s'", nm);
    }
#undef ONCE
    return 0;
}

/* Cross-option rules, once every option is in. */
static int check_def(sx_def *d, const seen *sn, sx_error *err)
{
    bool view = sn->tumbling || sn->hopping;
    if (view && sn->type) {
        return fail(err, sn->type->name, 0, "a stream has one pattern or one view, not both");
    }
    if (!view && !sn->type) {
        return fail(err, "", 0, "a stream needs a pattern (pattern.type) or a view (view.window)");
    }
    if (view) {
        d->kind = SX_VIEW;
        const sx_opt *p = sn->count    ? sn->count
                          : sn->within ? sn->within
                          : sn->first  ? sn->first
                          : sn->then   ? sn->then
                                       : sn->steps_any;
        if (p) {
            return fail(err, p->name, 0, "pattern options do not apply to a view");
        }
        if (sn->tumbling && sn->hopping) {
            return fail(err, sn->hopping->name, 0, "a window is tumbling or hopping, not both");
        }
        if (sn->tumbling) {
            if (sn->every) {
                return fail(err, sn->every->name, 0, "every applies to hopping windows only");
            }
            d->every = d->size;
        } else {
            if (!sn->every) {
                return fail(err, sn->hopping->name, 0, "a hopping window needs every");
            }
            if (d->every > d->size || d->size % d->every != 0) {
                return fail(err, sn->every->name, 1, "every must divide the hopping length");
            }
            if (d->size / d->every > 1024) {
                return fail(err, sn->every->name, 1, "at most 1024 windows per record");
            }
        }
        if (d->naggs == 0) {
            d->aggs = calloc(1, sizeof(*d->aggs));
            if (d->aggs == NULL) {
                return -ENOMEM;
            }
            d->naggs = 1;
            d->aggs[0].fn = AGG_COUNT;
            d->aggs[0].name = strdup("count");
            if (d->aggs[0].name == NULL) {
                return -ENOMEM;
            }
        }
        for (uint32_t i = 0; i < d->naggs; i++) {
            if (d->aggs[i].name == NULL) {
                return fail(err, sn->aggs_any->name, 0, "view.aggregates[%u] is missing", i);
            }
            for (uint32_t j = 0; j < i; j++) {
                if (strcmp(d->aggs[i].name, d->aggs[j].name) == 0) {
                    return fail(err, sn->aggs_any->name, 0,
                                "two aggregates named '%s' (use 'as NAME')", d->aggs[i].name);
                }
            }
        }
        return 0;
    }
    if (sn->aggs_any || sn->every || sn->group_by) {
        const sx_opt *p = sn->aggs_any ? sn->aggs_any : sn->every ? sn->every : sn->group_by;
        return fail(err, p->name, 0, "view options do not apply to a pattern");
    }
    if (!sn->within) {
        return fail(err, sn->type->name, 0, "a pattern needs pattern.within");
    }
    const char *kind = sn->type->value;
    if (d->kind != SX_THRESHOLD && sn->count) {
        return fail(err, sn->count->name, 0, "count applies to threshold patterns only");
    }
    if (d->kind != SX_SEQUENCE && sn->steps_any) {
        return fail(err, sn->steps_any->name, 0, "steps apply to sequence patterns only");
    }
    if (d->kind != SX_ABSENCE && (sn->first || sn->then)) {
        return fail(err, (sn->first ? sn->first : sn->then)->name, 0,
                    "first and then apply to absence patterns only");
    }
    if (d->kind == SX_THRESHOLD && !sn->count) {
        return fail(err, sn->type->name, 0, "a %s pattern needs pattern.count", kind);
    }
    if (d->kind == SX_ABSENCE && (!d->first || !d->then)) {
        return fail(err, sn->type->name, 0,
                    "an absence pattern needs pattern.first and pattern.then");
    }
    if (d->kind == SX_SEQUENCE) {
        if (d->nsteps == 0) {
            return fail(err, sn->type->name, 0, "a sequence pattern needs pattern.steps");
        }
        for (uint32_t i = 0; i < d->nsteps; i++) {
            sx_step *st = &d->steps[i];
            if (st->when == NULL) {
                return fail(err, sn->steps_any->name, 0, "pattern.steps[%u].when is missing", i);
            }
            if (st->min == 0) {
                st->min = 1;
            }
            if (st->max == 0) {
                st->max = UINT32_MAX;
            }
            if (st->max < st->min) {
                return fail(err, sn->steps_any->name, 0, "pattern.steps[%u]: max is below min", i);
            }
        }
    }
    return 0;
}

int sx_def_compile(const sx_opt *opts, size_t n, sx_def **out, sx_error *err)
{
    *out = NULL;
    if (err) {
        memset(err, 0, sizeof(*err));
    }
    sx_def *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return -ENOMEM;
    }
    d->max_keys = 100000;
    seen sn = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = one_opt(d, &opts[i], &sn, err);
    }
    if (rc == 0) {
        rc = check_def(d, &sn, err);
    }
    const sx_opt *kopt = d->kind == SX_VIEW && sn.group_by ? sn.group_by : sn.key;
    if (rc == 0 && kopt && *kopt->value) {
        const char *terr = NULL;
        d->key = spool_template_compile(kopt->value, &terr);
        if (d->key == NULL) {
            rc = fail(err, kopt->name, 0, "%s", terr ? terr : "bad template");
        }
    }
    if (rc < 0) {
        sx_def_free(d);
        return rc;
    }
    d->fingerprint = fingerprint(opts, n);
    *out = d;
    return 0;
}
