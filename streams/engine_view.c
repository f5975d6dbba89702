/*
 * streams/engine_view.c: the windows of views and their aggregates: opening
 * (from the state's free list: closed windows keep their sketches and
 * buffers for reuse, so a steady stream allocates nothing per record),
 * applying a record, formatting an aggregate and a window as JSON.
 *
 * Invariants: a window's count is the number of records applied to it;
 * cell i holds aggregate i's state (sketch.h for distinct and quantiles);
 * an aggregate skips a record whose field is missing (numeric ones: not a
 * finite number). Formatting is deterministic: integral doubles print as
 * integers, others with the shortest of %.15g / %.17g that reads back.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

#define FREE_WINDOWS_MAX 4096

/* ---- windows ------------------------------------------------------------- */

sx_window *sx__window_new(sx_state *s, int64_t start)
{
    const sx_def *d = s->def;
    sx_window *w = s->free_windows;
    if (w) {
        s->free_windows = w->next_free;
        s->nfree_windows--;
    } else {
        w = calloc(1, sizeof(*w) + d->naggs * sizeof(sx_cell));
        if (w == NULL) {
            return NULL;
        }
    }
    w->start = start;
    w->count = 0;
    w->first_ts = INT64_MAX;
    w->last_ts = INT64_MIN;
    w->next_free = NULL;
    for (uint32_t i = 0; i < d->naggs; i++) {
        sx_cell *c = &w->cells[i];
        c->n = 0;
        c->v = 0;
        c->last_ts = INT64_MIN;
        c->last_len = 0;
        if (d->aggs[i].fn == AGG_DISTINCT) {
            if (c->hll == NULL && (c->hll = malloc(sizeof(sx_hll))) == NULL) {
                sx__window_release(s, w);
                return NULL;
            }
            sx_hll_clear(c->hll);
        }
        sx_dds_clear(&c->dds);
    }
    return w;
}

void sx__window_destroy(const sx_def *d, sx_window *w)
{
    for (uint32_t i = 0; i < d->naggs; i++) {
        free(w->cells[i].last);
        free(w->cells[i].hll);
        sx_dds_free(&w->cells[i].dds);
    }
    free(w);
}

void sx__window_release(sx_state *s, sx_window *w)
{
    if (s->nfree_windows >= FREE_WINDOWS_MAX) {
        sx__window_destroy(s->def, w);
        return;
    }
    w->next_free = s->free_windows;
    s->free_windows = w;
    s->nfree_windows++;
}

static int cell_set_last(sx_cell *c, const uint8_t *v, size_t len)
{
    if (len > c->last_cap) {
        uint8_t *b = realloc(c->last, len);
        if (b == NULL) {
            return -ENOMEM;
        }
        c->last = b;
        c->last_cap = (uint32_t)len;
    }
    if (len) {
        memcpy(c->last, v, len);
    }
    c->last_len = (uint32_t)len;
    return 0;
}

/* A field as a finite number: 1 and *x, else 0. */
static int field_number(const uint8_t *v, size_t len, double *x)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf)) {
        return 0;
    }
    memcpy(buf, v, len);
    buf[len] = 0;
    char *end;
    double n = strtod(buf, &end);
    if (*end || !isfinite(n)) {
        return 0;
    }
    *x = n;
    return 1;
}

int sx__window_apply(const sx_def *d, sx_window *w, const spool_record *r, const char *topic)
{
    int64_t ts = r->timestamp;
    w->count++;
    if (ts < w->first_ts) {
        w->first_ts = ts;
    }
    if (ts > w->last_ts) {
        w->last_ts = ts;
    }
    for (uint32_t i = 0; i < d->naggs; i++) {
        const sx_agg *a = &d->aggs[i];
        sx_cell *c = &w->cells[i];
        if (a->fn == AGG_COUNT) {
            continue;
        }
        char scratch[SPOOL_FIELD_SCRATCH];
        const uint8_t *v;
        size_t len;
        if (!spool_record_field(r, topic, a->field, strlen(a->field), scratch, &v, &len)) {
            continue;
        }
        if (a->fn == AGG_DISTINCT) {
            sx_hll_add(c->hll, v, len);
            continue;
        }
        if (a->fn == AGG_LAST) {
            if (c->n == 0 || ts >= c->last_ts) {
                if (cell_set_last(c, v, len) < 0) {
                    return -ENOMEM;
                }
                c->last_ts = ts;
            }
            c->n++;
            continue;
        }
        double x;
        if (!field_number(v, len, &x)) {
            continue;
        }
        switch (a->fn) {
        case AGG_SUM:
        case AGG_AVG:
            c->v += x;
            break;
        case AGG_MIN:
            if (c->n == 0 || x < c->v) {
                c->v = x;
            }
            break;
        case AGG_MAX:
            if (c->n == 0 || x > c->v) {
                c->v = x;
            }
            break;
        case AGG_QUANT:
            if (sx_dds_add(&c->dds, x) < 0) {
                return -ENOMEM;
            }
            break;
        }
        c->n++;
    }
    return 0;
}

static int fmt_num(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 9e15) {
        return snprintf(buf, cap, "%.0f", v == 0 ? 0.0 : v);
    }
    int n = snprintf(buf, cap, "%.15g", v);
    if (strtod(buf, NULL) != v) {
        n = snprintf(buf, cap, "%.17g", v);
    }
    return n;
}

int sx__agg_format(const sx_def *d, const sx_window *w, uint32_t i, char *buf, size_t cap)
{
    const sx_agg *a = &d->aggs[i];
    const sx_cell *c = &w->cells[i];
    switch (a->fn) {
    case AGG_COUNT:
        return snprintf(buf, cap, "%llu", (unsigned long long)w->count);
    case AGG_SUM:
        return fmt_num(buf, cap, c->v);
    case AGG_MIN:
    case AGG_MAX:
        return c->n ? fmt_num(buf, cap, c->v) : -1;
    case AGG_AVG:
        return c->n ? fmt_num(buf, cap, c->v / (double)c->n) : -1;
    case AGG_DISTINCT:
        return fmt_num(buf, cap, c->hll ? floor(sx_hll_estimate(c->hll) + 0.5) : 0);
    case AGG_QUANT:
        return c->dds.total ? fmt_num(buf, cap, sx_dds_quantile(&c->dds, a->q)) : -1;
    default:
        return -1; /* AGG_LAST: the bytes themselves */
    }
}

static int json_member_num(spool_buf *out, const char *name, long long v)
{
    char b[64];
    int n = snprintf(b, sizeof(b), ",\"%s\":%lld", name, v);
    return spool_buf_append(out, b, (size_t)n);
}

int sx__window_json(const sx_def *d, const char *kb, size_t klen, const sx_window *w,
                    spool_buf *out)
{
    int rc = spool_buf_append(out, "{\"key\":", 7);
    rc = rc ? rc : spool_json_append_string(out, kb, klen);
    rc = rc ? rc : json_member_num(out, "window_start", (long long)w->start);
    rc = rc ? rc : json_member_num(out, "window_end", (long long)(w->start + d->size));
    rc = rc ? rc : json_member_num(out, "count", (long long)w->count);
    for (uint32_t i = 0; i < d->naggs && rc == 0; i++) {
        const sx_agg *a = &d->aggs[i];
        if (a->fn == AGG_COUNT && strcmp(a->name, "count") == 0) {
            continue;
        }
        rc = spool_buf_append(out, ",", 1);
        rc = rc ? rc : spool_json_append_string(out, a->name, strlen(a->name));
        rc = rc ? rc : spool_buf_append(out, ":", 1);
        if (rc) {
            break;
        }
        if (a->fn == AGG_LAST) {
            const sx_cell *c = &w->cells[i];
            rc = c->n ? spool_json_append_string(out, c->last, c->last_len)
                      : spool_buf_append(out, "null", 4);
            continue;
        }
        char b[64];
        int n = sx__agg_format(d, w, i, b, sizeof(b));
        rc = n < 0 ? spool_buf_append(out, "null", 4) : spool_buf_append(out, b, (size_t)n);
    }
    return rc ? rc : spool_buf_append(out, "}", 1);
}
