/*
 * http_fmt.c: what the destination formats of the `http` output share
 * (http_fmt.h): the dispatch to elasticsearch, loki and otlp; templates
 * whose literal text holds strftime conversions of the record's UTC
 * timestamp; RFC 3339 timestamps; and a small JSON scanner, enough to walk
 * the responses (Elasticsearch's bulk items, OTLP's partialSuccess).
 *
 * Invariants: a timed template is expanded with strftime over the whole
 * option text (a field name cannot hold '%', so `{{ }}` parts pass through
 * unchanged) and recompiled only when the expansion changes (once a day for
 * an index per day): no allocation per record. The scanner never reads
 * past its end pointer and never allocates.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_fmt.h"

/* ---- strftime templates ---- */

/* Conversions glibc's strftime knows (with the E and O modifiers, flags and
 * a width in front). */
static const char strftime_convs[] = "aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ%+";

int httpo_tfmt_check(spool_instance *ins, const char *option, const char *text)
{
    const char *err = NULL;
    spool_template *t = spool_template_compile(text, &err);
    if (!t) {
        spool_config_error(ins, option, "%s: %s", text, err);
        return -EINVAL;
    }
    spool_template_destroy(t);
    for (const char *p = text; *p; p++) {
        if (*p != '%') {
            continue;
        }
        p++;
        while (*p && strchr("_-0^#", *p)) {
            p++;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
        if (*p == 'E' || *p == 'O') {
            p++;
        }
        if (!*p || !strchr(strftime_convs, *p)) {
            spool_config_error(ins, option, "%s: unknown strftime conversion '%%%c'", text,
                               *p ? *p : ' ');
            return -EINVAL;
        }
    }
    return 0;
}

int httpo_tfmt_init(httpo_tfmt *t, const char *text)
{
    memset(t, 0, sizeof(*t));
    t->src = strdup(text);
    if (!t->src) {
        return -ENOMEM;
    }
    t->timed = strchr(text, '%') != NULL;
    t->last_sec = INT64_MIN;
    if (!t->timed) {
        const char *err = NULL;
        t->tpl = spool_template_compile(text, &err);
        if (!t->tpl) {
            return err && strcmp(err, "out of memory") == 0 ? -ENOMEM : -EINVAL;
        }
    }
    return 0;
}

void httpo_tfmt_free(httpo_tfmt *t)
{
    free(t->src);
    free(t->last);
    spool_template_destroy(t->tpl);
    memset(t, 0, sizeof(*t));
}

size_t httpo_tfmt_render(httpo_tfmt *t, const spool_record *r, const char *topic, char *buf,
                         size_t cap)
{
    if (t->timed) {
        int64_t ms = r->timestamp;
        int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
        if (sec != t->last_sec) {
            char x[HTTPO_FMT_NAME_MAX];
            time_t tt = (time_t)sec;
            struct tm tm;
            gmtime_r(&tt, &tm);
            size_t n = strftime(x, sizeof(x), t->src, &tm);
            x[n < sizeof(x) ? n : sizeof(x) - 1] = '\0';
            if (!t->last || strcmp(x, t->last) != 0) {
                const char *err = NULL;
                spool_template *nt = spool_template_compile(x, &err);
                char *nl = strdup(x);
                if (!nt || !nl) {
                    spool_template_destroy(nt);
                    free(nl);
                    buf[0] = '\0';
                    return 0;
                }
                spool_template_destroy(t->tpl);
                free(t->last);
                t->tpl = nt;
                t->last = nl;
            }
            t->last_sec = sec;
        }
    }
    if (!t->tpl || cap == 0) {
        return 0;
    }
    size_t n = spool_template_render(t->tpl, r, topic, NULL, buf, cap - 1);
    if (n > cap - 1) {
        n = cap - 1;
    }
    buf[n] = '\0';
    return n;
}

void httpo_rfc3339(int64_t ms, char out[64])
{
    int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int frac = (int)(ms - sec * 1000);
    time_t tt = (time_t)sec;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* ---- JSON scanning ---- */

const char *hj_ws(const char *p, const char *e)
{
    while (p && p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

const char *hj_str(const char *p, const char *e, const char **s, size_t *n)
{
    if (!p || p >= e || *p != '"') {
        return NULL;
    }
    const char *a = ++p;
    while (p < e && *p != '"') {
        if (*p == '\\') {
            p++;
        }
        p++;
    }
    if (p >= e) {
        return NULL;
    }
    *s = a;
    *n = (size_t)(p - a);
    return p + 1;
}

/* Skips a value; nesting is bounded by the response size (iterative). */
const char *hj_skip(const char *p, const char *e)
{
    p = hj_ws(p, e);
    if (!p || p >= e) {
        return NULL;
    }
    if (*p == '"') {
        const char *s;
        size_t n;
        return hj_str(p, e, &s, &n);
    }
    if (*p != '{' && *p != '[') {
        while (p < e && !strchr(",}] \t\r\n", *p)) {
            p++;
        }
        return p;
    }
    size_t depth = 0;
    while (p < e) {
        if (*p == '"') {
            const char *s;
            size_t n;
            p = hj_str(p, e, &s, &n);
            if (!p) {
                return NULL;
            }
            continue;
        }
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth == 0) {
                return p + 1;
            }
        }
        p++;
    }
    return NULL;
}

const char *hj_open(const char *p, const char *e, char c)
{
    p = hj_ws(p, e);
    if (!p || p >= e || *p != c) {
        return NULL;
    }
    return p + 1;
}

const char *hj_key(const char *p, const char *e, const char **k, size_t *kn, const char **end)
{
    *end = NULL;
    p = hj_ws(p, e);
    if (!p || p >= e) {
        return NULL;
    }
    if (*p == '}') {
        *end = p + 1;
        return NULL;
    }
    if (*p == ',') {
        p = hj_ws(p + 1, e);
    }
    p = hj_str(p, e, k, kn);
    p = hj_ws(p, e);
    if (!p || p >= e || *p != ':') {
        return NULL;
    }
    return hj_ws(p + 1, e);
}

const char *hj_item(const char *p, const char *e, const char **end)
{
    *end = NULL;
    p = hj_ws(p, e);
    if (!p || p >= e) {
        return NULL;
    }
    if (*p == ']') {
        *end = p + 1;
        return NULL;
    }
    if (*p == ',') {
        p = hj_ws(p + 1, e);
    }
    return p < e ? p : NULL;
}

httpo_ent *httpo_ents(httpo_fmt *f, size_t n)
{
    if (f->ents_cap < n) {
        httpo_ent *e = realloc(f->ents, n * sizeof(*e));
        if (!e) {
            return NULL;
        }
        f->ents = e;
        f->ents_cap = n;
    }
    return f->ents;
}

int httpo_ent_cmp(const void *a, const void *b, void *arg)
{
    const httpo_ent *x = a, *y = b;
    const uint8_t *base = arg;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(base + x->off, base + y->off, n);
    if (c) {
        return c;
    }
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    if (x->ts != y->ts) {
        return x->ts < y->ts ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int httpo_ent_same(const uint8_t *base, const httpo_ent *a, const httpo_ent *b)
{
    return a->len == b->len && memcmp(base + a->off, base + b->off, a->len) == 0;
}

int hj_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

void hj_copy(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < n) {
            char x = s[++i];
            c = x == 'n' ? ' ' : x == 't' ? ' ' : x == 'r' ? ' ' : x;
            if (x == 'u') {
                c = '?';
                i += i + 4 < n ? 4 : 0;
            }
        }
        out[o++] = c;
    }
    out[o < cap ? o : cap - 1] = '\0';
}

/* ---- dispatch ---- */

int httpo_es_check(spool_instance *ins, const httpo_fmt *f);
int httpo_es_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *body);
void httpo_es_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                       size_t len, httpo_verdict *v, httpo_reject_fn reject, void *arg);
int httpo_loki_check(spool_instance *ins, const httpo_fmt *f);
int httpo_loki_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *body, spool_buf *aux);
void httpo_loki_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                         size_t len, const spool_buf *aux, httpo_verdict *v, httpo_reject_fn reject,
                         void *arg);
int httpo_otlp_check(spool_instance *ins, const httpo_fmt *f);
int httpo_otlp_init(httpo_fmt *f);
int httpo_otlp_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *body);
void httpo_otlp_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                         size_t len, httpo_verdict *v);

/* Options that belong to another format: an error, not silently ignored. */
static int foreign(spool_instance *ins, const httpo_fmt *f)
{
    int rc = 0;
    if (f->labels.count && f->format != HTTPO_FMT_LOKI) {
        spool_config_error(ins, "labels", "labels belong to format loki");
        rc = -EINVAL;
    }
    if (f->resource.count && f->format != HTTPO_FMT_OTLP) {
        spool_config_error(ins, "resource", "resource belongs to format otlp");
        rc = -EINVAL;
    }
    if (f->meta.count && f->format != HTTPO_FMT_LOKI) {
        spool_config_error(ins, "structured_metadata",
                           "structured_metadata belongs to format loki");
        rc = -EINVAL;
    }
    if (f->severity_field && f->format != HTTPO_FMT_OTLP) {
        spool_config_error(ins, "severity_field", "severity_field belongs to format otlp");
        rc = -EINVAL;
    }
    return rc;
}

int httpo_fmt_check(spool_instance *ins, const httpo_fmt *f)
{
    int rc = foreign(ins, f);
    int r2 = 0;
    switch (f->format) {
    case HTTPO_FMT_ES:
        r2 = httpo_es_check(ins, f);
        break;
    case HTTPO_FMT_LOKI:
        r2 = httpo_loki_check(ins, f);
        break;
    case HTTPO_FMT_OTLP:
        r2 = httpo_otlp_check(ins, f);
        break;
    default:
        break;
    }
    return rc < 0 ? rc : r2;
}

static int compile_map(httpo_fmt *f, const spool_strmap *m)
{
    if (!m->count) {
        return 0;
    }
    f->tpls = calloc(m->count, sizeof(*f->tpls));
    f->order = calloc(m->count, sizeof(*f->order));
    if (!f->tpls || !f->order) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->count; i++) {
        const char *err = NULL;
        f->tpls[i] = spool_template_compile(m->values[i], &err);
        if (!f->tpls[i]) {
            return -EINVAL;
        }
        f->order[i] = i;
    }
    /* Sorted by name (insertion sort: a handful of entries). */
    for (size_t i = 1; i < m->count; i++) {
        for (size_t j = i; j > 0 && strcmp(m->keys[f->order[j - 1]], m->keys[f->order[j]]) > 0;
             j--) {
            size_t x = f->order[j];
            f->order[j] = f->order[j - 1];
            f->order[j - 1] = x;
        }
    }
    return 0;
}

int httpo_fmt_init(httpo_fmt *f)
{
    switch (f->format) {
    case HTTPO_FMT_ES:
        return httpo_tfmt_init(&f->index_t, f->index ? f->index : "spool-%Y.%m.%d");
    case HTTPO_FMT_LOKI: {
        int rc = compile_map(f, &f->labels);
        if (rc == 0 && f->meta.count) {
            f->mtpls = calloc(f->meta.count, sizeof(*f->mtpls));
            if (!f->mtpls) {
                return -ENOMEM;
            }
            for (size_t i = 0; i < f->meta.count; i++) {
                const char *err = NULL;
                f->mtpls[i] = spool_template_compile(f->meta.values[i], &err);
                if (!f->mtpls[i]) {
                    return -EINVAL;
                }
            }
        }
        return rc;
    }
    case HTTPO_FMT_OTLP: {
        int rc = compile_map(f, &f->resource);
        return rc < 0 ? rc : httpo_otlp_init(f);
    }
    default:
        return 0;
    }
}

void httpo_fmt_free(httpo_fmt *f)
{
    httpo_tfmt_free(&f->index_t);
    size_t n = f->format == HTTPO_FMT_LOKI ? f->labels.count : f->resource.count;
    for (size_t i = 0; f->tpls && i < n; i++) {
        spool_template_destroy(f->tpls[i]);
    }
    free(f->tpls);
    f->tpls = NULL;
    for (size_t i = 0; f->mtpls && i < f->meta.count; i++) {
        spool_template_destroy(f->mtpls[i]);
    }
    free(f->mtpls);
    f->mtpls = NULL;
    free(f->order);
    f->order = NULL;
    for (size_t i = 0; i < f->nused; i++) {
        free(f->used[i]);
    }
    free(f->used);
    f->used = NULL;
    f->nused = 0;
    spool_buf_free(&f->s1);
    spool_buf_free(&f->s2);
    free(f->ents);
    f->ents = NULL;
    f->ents_cap = 0;
}

const char *httpo_fmt_content_type(const httpo_fmt *f)
{
    return f->format == HTTPO_FMT_ES ? "application/x-ndjson" : "application/json";
}

int httpo_fmt_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *body, spool_buf *aux)
{
    aux->len = 0;
    switch (f->format) {
    case HTTPO_FMT_ES:
        return httpo_es_encode(f, ch, body);
    case HTTPO_FMT_LOKI:
        return httpo_loki_encode(f, ch, body, aux);
    case HTTPO_FMT_OTLP:
        return httpo_otlp_encode(f, ch, body);
    default:
        return -EINVAL;
    }
}

void httpo_fmt_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                        size_t len, const spool_buf *aux, httpo_verdict *v, httpo_reject_fn reject,
                        void *arg)
{
    memset(v, 0, sizeof(*v));
    v->result = -1;
    switch (f->format) {
    case HTTPO_FMT_ES:
        httpo_es_response(f, ch, status, body, len, v, reject, arg);
        break;
    case HTTPO_FMT_LOKI:
        httpo_loki_response(f, ch, status, body, len, aux, v, reject, arg);
        break;
    case HTTPO_FMT_OTLP:
        httpo_otlp_response(f, ch, status, body, len, v);
        break;
    default:
        break;
    }
}
