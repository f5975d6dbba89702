/*
 * expr_eval.c: the condition language's back end (docs/conditions.md): numbers, handles
 * (clone, free) and the evaluator that walks a compiled program (expr_int.h, made by
 * expr_parse.c) against a record read through a field accessor.
 *
 * Invariants:
 * - Evaluation never allocates: the PCRE2 match data (one ovector pair: only match or
 *   no match matters) and the field cache belong to the handle, made at compile/clone.
 * - A field is read through the accessor at most once per evaluation, and parsed as a
 *   number at most once, and only when the other side of a comparison may be a number.
 * - The compiled program is shared, reference-counted, by every handle cloned from it;
 *   it goes with its last handle. Allocations go through EXPR_MALLOC/EXPR_FREE, except
 *   the "C" locale for strtod_l, made once per process.
 */
#define _GNU_SOURCE /* strtod_l, newlocale, memmem */
#include "expr_int.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ---- numbers ---- */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

void spool__expr_numbers_init(void)
{
    pthread_once(&c_locale_once, c_locale_init);
}

int spool__expr_parse_num(const uint8_t *p, size_t n, num *out)
{
    size_t i = 0;
    int neg = 0;
    if (n == 0 || n > NUM_MAX_LEN) {
        return 0;
    }
    if (p[0] == '-') {
        neg = 1;
        i = 1;
    }
    uint64_t acc = 0;
    int big = 0;
    size_t digits = 0;
    for (; i < n && is_digit(p[i]); i++, digits++) {
        if (acc > (UINT64_MAX - 9) / 10) {
            big = 1;
        } else {
            acc = acc * 10 + (uint64_t)(p[i] - '0');
        }
    }
    int is_float = 0;
    if (i < n && p[i] == '.') {
        is_float = 1;
        for (i++; i < n && is_digit(p[i]); i++) {
            digits++;
        }
    }
    if (digits == 0) {
        return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        is_float = 1;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) {
            i++;
        }
        size_t exp_digits = 0;
        for (; i < n && is_digit(p[i]); i++) {
            exp_digits++;
        }
        if (exp_digits == 0) {
            return 0;
        }
    }
    if (i != n) {
        return 0;
    }
    if (!is_float && !big) {
        if (!neg && acc <= (uint64_t)INT64_MAX) {
            out->is_int = 1;
            out->i = (int64_t)acc;
            out->d = 0;
            return 1;
        }
        if (neg && acc <= (uint64_t)INT64_MAX + 1) {
            out->is_int = 1;
            out->i = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
            out->d = 0;
            return 1;
        }
    }
    char buf[NUM_MAX_LEN + 1];
    memcpy(buf, p, n);
    buf[n] = '\0';
    double d = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
    if (!isfinite(d)) {
        return 0;
    }
    out->is_int = 0;
    out->i = 0;
    out->d = d;
    return 1;
}

static int num_cmp(const num *a, const num *b)
{
    if (a->is_int && b->is_int) {
        return (a->i > b->i) - (a->i < b->i);
    }
    double x = a->is_int ? (double)a->i : a->d;
    double y = b->is_int ? (double)b->i : b->d;
    return (x > y) - (x < y);
}

/* ---- handles ---- */

void spool__expr_prog_free(prog *p)
{
    if (!p) {
        return;
    }
    for (uint32_t i = 0; i < p->n_rxs; i++) {
        pcre2_code_free(p->rxs[i].code);
    }
    pcre2_match_context_free(p->mctx);
    pcre2_compile_context_free(p->cctx);
    pcre2_general_context_free(p->gctx);
    gc_free(p->rxs, NULL);
    gc_free(p->fields, NULL);
    gc_free(p->bytes, NULL);
    gc_free(p->ops, NULL);
    gc_free(p->nodes, NULL);
    EXPR_FREE(p);
}

int spool__expr_handle_new(prog *p, spool_expr **out)
{
    spool_expr *e = EXPR_MALLOC(sizeof(*e));
    expr_state *st = EXPR_MALLOC(sizeof(*st) + (size_t)p->n_fields * sizeof(slot));
    pcre2_match_data *md = p->n_rxs ? pcre2_match_data_create(1, p->gctx) : NULL;
    if (!e || !st || (p->n_rxs && !md)) {
        gc_free(e, NULL);
        gc_free(st, NULL);
        pcre2_match_data_free(md);
        return -ENOMEM;
    }
    memset(st, 0, sizeof(*st) + (size_t)p->n_fields * sizeof(slot));
    st->gen = 1;
    st->md = md;
    e->p = p;
    e->st = st;
    *out = e;
    return 0;
}

int spool_expr_clone(const spool_expr *e, spool_expr **out)
{
    *out = NULL;
    int rc = spool__expr_handle_new(e->p, out);
    if (rc == 0) {
        atomic_fetch_add(&e->p->refs, 1);
    }
    return rc;
}

void spool_expr_free(spool_expr *e)
{
    if (!e) {
        return;
    }
    pcre2_match_data_free(e->st->md);
    EXPR_FREE(e->st);
    if (atomic_fetch_sub(&e->p->refs, 1) == 1) {
        spool__expr_prog_free(e->p);
    }
    EXPR_FREE(e);
}

int spool_expr_fields(const spool_expr *e, spool_expr_fields_fn cb, void *arg)
{
    for (uint32_t i = 0; i < e->p->n_fields; i++) {
        const field_name *f = &e->p->fields[i];
        int rc = cb(arg, (const char *)e->p->bytes + f->off, f->len);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

uint64_t spool_expr_match_errors(const spool_expr *e)
{
    return e->st->match_errors;
}

/* ---- evaluation ---- */

typedef struct eval {
    const prog *p;
    expr_state *st;
    spool_expr_field_fn fn;
    void *ctx;
} eval;

typedef struct value {
    const uint8_t *s;
    size_t n;
    slot *slot; /* the field's cache slot, NULL for a literal */
    const operand *o;
} value;

static slot *get_field(const eval *v, uint32_t id)
{
    slot *s = &v->st->slots[id];
    if (s->gen != v->st->gen) {
        const field_name *f = &v->p->fields[id];
        s->gen = v->st->gen;
        s->val = NULL;
        s->len = 0;
        s->numstate = 0;
        s->found = v->fn(v->ctx, (const char *)v->p->bytes + f->off, f->len, &s->val, &s->len) == 1;
        if (s->found && !s->val) {
            s->val = (const uint8_t *)"";
            s->len = 0;
        }
    }
    return s;
}

/* Resolves an operand; 0 when it is a missing field. */
static int get_value(const eval *v, const operand *o, value *out)
{
    out->o = o;
    if (o->kind != OP_FIELD) {
        out->s = v->p->bytes + o->off;
        out->n = o->len;
        out->slot = NULL;
        return 1;
    }
    slot *s = get_field(v, o->field);
    out->s = s->val;
    out->n = s->len;
    out->slot = s;
    return s->found;
}

static int value_num(const value *x, num *out)
{
    if (x->o->kind == OP_NUM) {
        *out = x->o->n;
        return 1;
    }
    if (x->o->kind == OP_STR) {
        return 0;
    }
    slot *s = x->slot;
    if (s->numstate == 0) {
        s->numstate = spool__expr_parse_num(s->val, s->len, &s->n) ? 1 : 2;
    }
    *out = s->n;
    return s->numstate == 1;
}

static int bytes_cmp(const value *a, const value *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->s, b->s, n) : 0;
    if (c) {
        return c;
    }
    return (a->n > b->n) - (a->n < b->n);
}

/* Three-way comparison: numeric when both sides are numbers, else bytewise. */
static int values_cmp(const value *a, const value *b)
{
    num x;
    num y;
    if (a->o->kind != OP_STR && b->o->kind != OP_STR && value_num(a, &x) && value_num(b, &y)) {
        return num_cmp(&x, &y);
    }
    return bytes_cmp(a, b);
}

static int cmp_result(uint8_t op, int c)
{
    switch (op) {
    case CMP_EQ:
        return c == 0;
    case CMP_NE:
        return c != 0;
    case CMP_LT:
        return c < 0;
    case CMP_LE:
        return c <= 0;
    case CMP_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

static int eval_cmp(const eval *v, const node *n)
{
    const operand *oa = &v->p->ops[n->a];
    const operand *ob = &v->p->ops[n->b];
    if (oa->kind == OP_FIELD && ob->kind == OP_NUM) {
        /* The common case, `status >= 500`, without the generic path's indirections. */
        slot *s = get_field(v, oa->field);
        if (!s->found) {
            return n->op == CMP_NE;
        }
        if (s->numstate == 0) {
            s->numstate = spool__expr_parse_num(s->val, s->len, &s->n) ? 1 : 2;
        }
        if (s->numstate == 1) {
            return cmp_result(n->op, num_cmp(&s->n, &ob->n));
        }
    }
    value a;
    value b;
    if (!get_value(v, oa, &a) || !get_value(v, ob, &b)) {
        return n->op == CMP_NE;
    }
    return cmp_result(n->op, values_cmp(&a, &b));
}

static int eval_match(const eval *v, const node *n)
{
    value a;
    if (!get_value(v, &v->p->ops[n->a], &a)) {
        return n->op;
    }
    const regex *r = &v->p->rxs[n->b];
    const uint8_t *s = a.s ? a.s : (const uint8_t *)"";
    if (r->kind == RX_PREFIX) {
        return (a.n >= r->len && memcmp(s, v->p->bytes + r->off, r->len) == 0) ^ n->op;
    }
    if (r->kind == RX_SUBSTRING) {
        return (r->len == 0 || memmem(s, a.n, v->p->bytes + r->off, r->len) != NULL) ^ n->op;
    }
    int rc = r->jit ? pcre2_jit_match(r->code, s, a.n, 0, 0, v->st->md, v->p->mctx)
                    : pcre2_match(r->code, s, a.n, 0, 0, v->st->md, v->p->mctx);
    int matched = rc >= 0;
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        v->st->match_errors++;
    }
    return matched ^ n->op;
}

static int eval_in(const eval *v, const node *n)
{
    value a;
    if (!get_value(v, &v->p->ops[n->a], &a)) {
        return 0;
    }
    for (uint32_t i = 0; i < n->count; i++) {
        value item;
        get_value(v, &v->p->ops[n->b + i], &item);
        if (item.n == a.n || item.o->kind == OP_NUM) {
            if (values_cmp(&a, &item) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

static int eval_node(const eval *v, uint32_t i)
{
    const node *n = &v->p->nodes[i];
    switch (n->kind) {
    case N_CONST:
        return n->op;
    case N_AND:
        for (uint32_t c = n->first; c != NONE; c = v->p->nodes[c].next) {
            if (!eval_node(v, c)) {
                return 0;
            }
        }
        return 1;
    case N_OR:
        for (uint32_t c = n->first; c != NONE; c = v->p->nodes[c].next) {
            if (eval_node(v, c)) {
                return 1;
            }
        }
        return 0;
    case N_NOT:
        return !eval_node(v, n->first);
    case N_CMP:
        return eval_cmp(v, n);
    case N_MATCH:
        return eval_match(v, n);
    case N_IN:
        return eval_in(v, n);
    default:
        return get_field(v, n->a)->found;
    }
}

int spool_expr_eval(const spool_expr *e, spool_expr_field_fn fn, void *ctx)
{
    expr_state *st = e->st;
    if (++st->gen == 0) {
        for (uint32_t i = 0; i < e->p->n_fields; i++) {
            st->slots[i].gen = 0;
        }
        st->gen = 1;
    }
    eval v = {.p = e->p, .st = st, .fn = fn, .ctx = ctx};
    return eval_node(&v, e->p->root);
}
