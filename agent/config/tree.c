/*
 * tree.c: YAML text -> spool_cnode tree, through libyaml's event API.
 *
 * Every node keeps its 1-based line and column, and every mapping key its
 * own. While building, it reports (and keeps going, so one run shows every
 * problem): duplicate keys in a mapping (the first one wins, the second is
 * dropped), non-scalar keys, an alias of an anchor not defined before it
 * (an error; it becomes a null scalar), a second document in the file, and
 * environment substitution errors.
 *
 * Anchors and aliases (`chain: &web [...]`, `processors: *web`): an alias
 * is a deep copy of the anchored node as it was completed, keeping the
 * anchor's positions (an error inside it points at the anchor's text). A
 * later anchor of the same name replaces the earlier one, as YAML says. The
 * nodes aliases copy are bounded (ALIAS_NODES_MAX, against "billion laughs"
 * files); merge keys (`<<`) are not supported (an unknown key). A YAML syntax error stops the
 * parser: libyaml reports only the first one, with its position.
 *
 * Environment substitution, in scalar values only (never in keys):
 *   ${VAR}            the value of VAR; an error if VAR is not set
 *   ${VAR:-default}   the value of VAR, or `default` when VAR is unset or
 *                     empty (shell semantics); `default` is literal text up
 *                     to the first '}', it is not itself substituted
 *   $${               a literal "${" (any other '$' is literal as it is)
 * VAR is [A-Za-z_][A-Za-z0-9_]*. A scalar may hold several references. The
 * result is not parsed as YAML again: it stays one scalar. "{{ field }}"
 * templates are not touched. A scalar whose substitution failed is flagged
 * (spool_cnode.bad) so validation does not report it a second time.
 *
 * Not thread-safe in itself; a tree is immutable once loaded and may then
 * be read from any thread.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config/config.h"

#define ALIAS_NODES_MAX 100000 /* nodes all aliases of one file may copy */

typedef struct frame {
    spool_cnode *node;
    char *anchor; /* the node's anchor (owned), NULL for none */
    int have_key; /* MAPPING: a key was read, its value is being built */
    int skip;     /* MAPPING: the pending key was invalid, drop its value */
    char *key;    /* MAPPING: the pending key (owned) */
    int key_line, key_column;
} frame;

typedef struct builder {
    const char *file;
    spool_errors *errs;
    size_t errs_before;
    frame *stack;
    size_t depth, cap;
    spool_cnode *root;
    int oom;
    struct anchor {
        char *name;
        spool_cnode *node; /* a copy, owned */
    } * anchors;
    size_t nanchors;
    size_t alias_nodes; /* nodes copied by aliases so far */
} builder;

void spool_cnode_free(spool_cnode *n)
{
    if (n == NULL) {
        return;
    }
    free(n->value);
    for (size_t i = 0; i < n->count; i++) {
        spool_cnode_free(n->items[i]);
        if (n->keys != NULL) {
            free(n->keys[i]);
        }
    }
    free(n->items);
    free(n->keys);
    free(n->key_lines);
    free(n->key_columns);
    free(n);
}

/* A deep copy of n (NULL on ENOMEM); *budget is decremented per node and
 * the copy fails (NULL, *budget 0) when it runs out. */
static spool_cnode *cnode_copy(const spool_cnode *n, size_t *budget)
{
    if (*budget == 0) {
        return NULL;
    }
    (*budget)--;
    spool_cnode *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    *c = *n;
    c->value = NULL;
    c->items = NULL;
    c->keys = NULL;
    c->key_lines = NULL;
    c->key_columns = NULL;
    c->count = 0;
    if (n->value != NULL && (c->value = strdup(n->value)) == NULL) {
        goto fail;
    }
    if (n->count > 0) {
        size_t cap = (n->count + 7) / 8 * 8;
        c->items = calloc(cap, sizeof(*c->items));
        if (c->items == NULL) {
            goto fail;
        }
        if (n->keys != NULL) {
            c->keys = calloc(cap, sizeof(*c->keys));
            c->key_lines = calloc(cap, sizeof(*c->key_lines));
            c->key_columns = calloc(cap, sizeof(*c->key_columns));
            if (c->keys == NULL || c->key_lines == NULL || c->key_columns == NULL) {
                goto fail;
            }
        }
        for (size_t i = 0; i < n->count; i++) {
            if (n->keys != NULL) {
                if ((c->keys[i] = strdup(n->keys[i])) == NULL) {
                    goto fail;
                }
                c->key_lines[i] = n->key_lines[i];
                c->key_columns[i] = n->key_columns[i];
            }
            c->count = i + 1;
            if ((c->items[i] = cnode_copy(n->items[i], budget)) == NULL) {
                goto fail;
            }
        }
    }
    return c;
fail:
    spool_cnode_free(c);
    return NULL;
}

/* Remembers a copy of the completed node n under anchor `name`. */
static int anchor_add(builder *b, const char *name, const spool_cnode *n)
{
    size_t budget = SIZE_MAX;
    spool_cnode *copy = cnode_copy(n, &budget);
    if (copy == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->nanchors; i++) {
        if (strcmp(b->anchors[i].name, name) == 0) {
            spool_cnode_free(b->anchors[i].node);
            b->anchors[i].node = copy;
            return 0;
        }
    }
    struct anchor *a = realloc(b->anchors, (b->nanchors + 1) * sizeof(*a));
    if (a == NULL) {
        spool_cnode_free(copy);
        return -ENOMEM;
    }
    b->anchors = a;
    a[b->nanchors].name = strdup(name);
    a[b->nanchors].node = copy;
    if (a[b->nanchors].name == NULL) {
        spool_cnode_free(copy);
        return -ENOMEM;
    }
    b->nanchors++;
    return 0;
}

static const spool_cnode *anchor_find(const builder *b, const char *name)
{
    for (size_t i = 0; i < b->nanchors; i++) {
        if (strcmp(b->anchors[i].name, name) == 0) {
            return b->anchors[i].node;
        }
    }
    return NULL;
}

static void anchors_free(builder *b)
{
    for (size_t i = 0; i < b->nanchors; i++) {
        free(b->anchors[i].name);
        spool_cnode_free(b->anchors[i].node);
    }
    free(b->anchors);
    b->anchors = NULL;
    b->nanchors = 0;
}

/* The path of the slot the top of the stack is filling ("inputs[2].paths"). */
static void stack_path(const builder *b, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < b->depth && len < cap; i++) {
        const frame *f = &b->stack[i];
        int w;
        if (f->node->type == SPOOL_CNODE_MAPPING) {
            if (!f->have_key || f->key == NULL) {
                break;
            }
            w = snprintf(buf + len, cap - len, "%s%s", len > 0 ? "." : "", f->key);
        } else {
            w = snprintf(buf + len, cap - len, "[%zu]", f->node->count);
        }
        if (w < 0) {
            break;
        }
        len += (size_t)w;
    }
}

static void build_error(builder *b, int line, int column, const char *fmt, ...) SPOOL_PRINTF(4, 5);
static void build_error(builder *b, int line, int column, const char *fmt, ...)
{
    char path[512];
    stack_path(b, path, sizeof(path));
    va_list ap;
    va_start(ap, fmt);
    spool_errors_addv(b->errs, b->file, line, column, path, fmt, ap);
    va_end(ap);
}

/* A growable string for substitution. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sbuf_add(sbuf *s, const char *src, size_t n)
{
    if (s->oom) {
        return;
    }
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap != 0 ? s->cap : 64;
        while (cap < s->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(s->p, cap);
        if (p == NULL) {
            s->oom = 1;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, src, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static int valid_var_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) {
            return 0;
        }
    }
    return 1;
}

/* Substitutes ${...} in in[0..n); sets *bad on a reported error. Returns a
 * malloc'd string, or NULL on ENOMEM. */
static char *substitute(builder *b, const char *in, size_t n, int line, int column, int *bad)
{
    sbuf out = {0};
    sbuf_add(&out, "", 0);
    size_t i = 0;
    while (i < n) {
        const char *dollar = memchr(in + i, '$', n - i);
        if (dollar == NULL) {
            sbuf_add(&out, in + i, n - i);
            break;
        }
        size_t at = (size_t)(dollar - in);
        sbuf_add(&out, in + i, at - i);
        if (at + 2 < n && in[at + 1] == '$' && in[at + 2] == '{') {
            sbuf_add(&out, "${", 2);
            i = at + 3;
            continue;
        }
        if (at + 1 >= n || in[at + 1] != '{') {
            sbuf_add(&out, "$", 1);
            i = at + 1;
            continue;
        }
        const char *start = in + at + 2;
        const char *close = memchr(start, '}', n - (at + 2));
        if (close == NULL) {
            build_error(b, line, column, "unterminated '${' (write '$${' for a literal '${')");
            *bad = 1;
            sbuf_add(&out, in + at, n - at);
            break;
        }
        size_t inner = (size_t)(close - start);
        const char *colon = memchr(start, ':', inner);
        size_t name_len = colon != NULL ? (size_t)(colon - start) : inner;
        i = (size_t)(close - in) + 1;
        if (!valid_var_name(start, name_len) ||
            (colon != NULL && (colon + 1 >= close || colon[1] != '-'))) {
            build_error(b, line, column,
                        "bad substitution '${%.*s}' (use ${VAR} or ${VAR:-default})", (int)inner,
                        start);
            *bad = 1;
            continue;
        }
        char name[256];
        if (name_len >= sizeof(name)) {
            build_error(b, line, column, "environment variable name too long");
            *bad = 1;
            continue;
        }
        memcpy(name, start, name_len);
        name[name_len] = '\0';
        const char *val = getenv(name);
        if (colon != NULL && (val == NULL || val[0] == '\0')) {
            sbuf_add(&out, colon + 2, (size_t)(close - (colon + 2)));
        } else if (val != NULL) {
            sbuf_add(&out, val, strlen(val));
        } else {
            build_error(b, line, column,
                        "environment variable '%s' is not set (use ${%s:-default} for a default)",
                        name, name);
            *bad = 1;
        }
    }
    if (out.oom) {
        free(out.p);
        return NULL;
    }
    return out.p;
}

static int push(builder *b, spool_cnode *n)
{
    if (b->depth == b->cap) {
        size_t cap = b->cap != 0 ? b->cap * 2 : 16;
        frame *s = realloc(b->stack, cap * sizeof(*s));
        if (s == NULL) {
            return -ENOMEM;
        }
        b->stack = s;
        b->cap = cap;
    }
    b->stack[b->depth++] = (frame){.node = n};
    return 0;
}

static int append_child(spool_cnode *p, spool_cnode *child, char *key, int kline, int kcol)
{
    if (p->count % 8 == 0) {
        size_t cap = p->count + 8;
        spool_cnode **items = realloc(p->items, cap * sizeof(*items));
        if (items == NULL) {
            return -ENOMEM;
        }
        p->items = items;
        if (p->type == SPOOL_CNODE_MAPPING) {
            char **keys = realloc(p->keys, cap * sizeof(*keys));
            if (keys == NULL) {
                return -ENOMEM;
            }
            p->keys = keys;
            int *kl = realloc(p->key_lines, cap * sizeof(*kl));
            if (kl == NULL) {
                return -ENOMEM;
            }
            p->key_lines = kl;
            int *kc = realloc(p->key_columns, cap * sizeof(*kc));
            if (kc == NULL) {
                return -ENOMEM;
            }
            p->key_columns = kc;
        }
    }
    p->items[p->count] = child;
    if (p->type == SPOOL_CNODE_MAPPING) {
        p->keys[p->count] = key;
        p->key_lines[p->count] = kline;
        p->key_columns[p->count] = kcol;
    }
    p->count++;
    return 0;
}

/* Attaches a complete node to the top of the stack (or makes it the root).
 * Takes ownership of n in every case. */
static int attach(builder *b, spool_cnode *n)
{
    if (b->depth == 0) {
        spool_cnode_free(b->root);
        b->root = n;
        return 0;
    }
    frame *f = &b->stack[b->depth - 1];
    spool_cnode *p = f->node;
    if (p->type == SPOOL_CNODE_SEQUENCE) {
        if (append_child(p, n, NULL, 0, 0) < 0) {
            spool_cnode_free(n);
            return -ENOMEM;
        }
        return 0;
    }
    if (!f->have_key) {
        f->have_key = 1;
        f->key_line = n->line;
        f->key_column = n->column;
        if (n->type != SPOOL_CNODE_SCALAR) {
            build_error(b, n->line, n->column, "a mapping key must be a scalar");
            f->skip = 1;
        } else {
            f->key = n->value;
            n->value = NULL;
            f->skip = 0;
            for (size_t i = 0; i < p->count; i++) {
                if (strcmp(p->keys[i], f->key) == 0) {
                    /* The path shows the key itself. */
                    build_error(b, n->line, n->column, "duplicate key '%s' (first at line %d)",
                                f->key, p->key_lines[i]);
                    f->skip = 1;
                    break;
                }
            }
        }
        spool_cnode_free(n);
        return 0;
    }
    int rc = 0;
    if (f->skip) {
        spool_cnode_free(n);
        free(f->key);
    } else if (append_child(p, n, f->key, f->key_line, f->key_column) < 0) {
        spool_cnode_free(n);
        free(f->key);
        rc = -ENOMEM;
    }
    f->key = NULL;
    f->have_key = 0;
    f->skip = 0;
    return rc;
}

static int is_key_slot(const builder *b)
{
    if (b->depth == 0) {
        return 0;
    }
    const frame *f = &b->stack[b->depth - 1];
    return f->node->type == SPOOL_CNODE_MAPPING && !f->have_key;
}

static spool_cnode *new_node(spool_cnode_type type, const yaml_mark_t *m)
{
    spool_cnode *n = calloc(1, sizeof(*n));
    if (n != NULL) {
        n->type = type;
        n->line = (int)m->line + 1;
        n->column = (int)m->column + 1;
    }
    return n;
}

static int on_scalar(builder *b, const yaml_event_t *ev)
{
    const yaml_mark_t *m = &ev->start_mark;
    spool_cnode *n = new_node(SPOOL_CNODE_SCALAR, m);
    if (n == NULL) {
        return -ENOMEM;
    }
    const char *text = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    {
        /* Verbatim: on one line, and as long in the file as in the value. */
        const yaml_mark_t *e = &ev->end_mark;
        int q = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        n->verbatim = (q || ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) &&
                      e->line == m->line && e->index - m->index == len + (q ? 2 : 0);
    }
    if (!n->quoted) {
        n->is_null = len == 0 || strcmp(text, "~") == 0 || strcmp(text, "null") == 0 ||
                     strcmp(text, "Null") == 0 || strcmp(text, "NULL") == 0;
    }
    if (is_key_slot(b)) {
        n->value = strndup(text, len);
    } else {
        n->value = substitute(b, text, len, n->line, n->column, &n->bad);
    }
    if (n->value == NULL) {
        spool_cnode_free(n);
        return -ENOMEM;
    }
    if (n->verbatim && (strlen(n->value) != len || memcmp(n->value, text, len) != 0)) {
        n->verbatim = 0; /* ${VAR} changed it */
    }
    if (ev->data.scalar.anchor != NULL &&
        anchor_add(b, (const char *)ev->data.scalar.anchor, n) < 0) {
        spool_cnode_free(n);
        return -ENOMEM;
    }
    return attach(b, n);
}

static int on_event(builder *b, const yaml_event_t *ev, int *docs)
{
    const yaml_mark_t *m = &ev->start_mark;
    spool_cnode *n;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*docs > 1) {
            build_error(b, (int)m->line + 1, (int)m->column + 1,
                        "only one YAML document per file is supported");
            return 1;
        }
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        const spool_cnode *target = anchor_find(b, name);
        if (target != NULL) {
            size_t budget = ALIAS_NODES_MAX - b->alias_nodes;
            n = cnode_copy(target, &budget);
            if (n != NULL) {
                b->alias_nodes = ALIAS_NODES_MAX - budget;
                return attach(b, n);
            }
            if (budget != 0) {
                return -ENOMEM;
            }
            b->alias_nodes = ALIAS_NODES_MAX;
            build_error(b, (int)m->line + 1, (int)m->column + 1,
                        "aliases expand to more than %d nodes ('*%s')", ALIAS_NODES_MAX, name);
        } else {
            build_error(b, (int)m->line + 1, (int)m->column + 1,
                        "alias '*%s' names no anchor defined before it ('&%s')", name, name);
        }
        n = new_node(SPOOL_CNODE_SCALAR, m);
        if (n == NULL || (n->value = strdup("")) == NULL) {
            spool_cnode_free(n);
            return -ENOMEM;
        }
        n->is_null = 1;
        n->bad = 1;
        return attach(b, n);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        const yaml_char_t *anchor = ev->type == YAML_SEQUENCE_START_EVENT
                                        ? ev->data.sequence_start.anchor
                                        : ev->data.mapping_start.anchor;
        n = new_node(
            ev->type == YAML_SEQUENCE_START_EVENT ? SPOOL_CNODE_SEQUENCE : SPOOL_CNODE_MAPPING, m);
        if (n == NULL) {
            return -ENOMEM;
        }
        if (push(b, n) < 0) {
            spool_cnode_free(n);
            return -ENOMEM;
        }
        if (anchor != NULL &&
            (b->stack[b->depth - 1].anchor = strdup((const char *)anchor)) == NULL) {
            return -ENOMEM;
        }
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        frame f = b->stack[--b->depth];
        free(f.key);
        int rc = f.anchor != NULL ? anchor_add(b, f.anchor, f.node) : 0;
        free(f.anchor);
        if (rc < 0) {
            spool_cnode_free(f.node);
            return rc;
        }
        return attach(b, f.node);
    }
    default:
        return 0;
    }
}

static void syntax_error(builder *b, const yaml_parser_t *p)
{
    const char *problem = p->problem != NULL ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR) {
        spool_errors_add(b->errs, b->file, 0, 0, "", "invalid YAML: %s at byte %zu", problem,
                         p->problem_offset);
        return;
    }
    int line = (int)p->problem_mark.line + 1, column = (int)p->problem_mark.column + 1;
    if (p->context != NULL) {
        spool_errors_add(b->errs, b->file, line, column, "",
                         "invalid YAML: %s (%s at line %d, column %d)", problem, p->context,
                         (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    } else {
        spool_errors_add(b->errs, b->file, line, column, "", "invalid YAML: %s", problem);
    }
}

int spool_cdoc_load_buffer(const char *name, const char *text, size_t len, spool_cdoc *doc,
                           spool_errors *errs)
{
    builder b = {.file = name, .errs = errs, .errs_before = errs->count};
    yaml_parser_t parser;
    int rc = 0, docs = 0, done = 0;

    doc->root = NULL;
    doc->file = strdup(name != NULL ? name : "");
    if (doc->file == NULL) {
        return -ENOMEM;
    }
    if (!yaml_parser_initialize(&parser)) {
        return -ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.error == YAML_MEMORY_ERROR) {
                rc = -ENOMEM;
            } else {
                syntax_error(&b, &parser);
                rc = -EINVAL;
            }
            break;
        }
        int r = on_event(&b, &ev, &docs);
        done = ev.type == YAML_STREAM_END_EVENT || r != 0;
        yaml_event_delete(&ev);
        if (r < 0) {
            rc = r;
            break;
        }
    }
    yaml_parser_delete(&parser);
    /* After a syntax error the stack holds a partial tree: drop it all. */
    while (b.depth > 0) {
        frame f = b.stack[--b.depth];
        free(f.key);
        free(f.anchor);
        spool_cnode_free(f.node);
    }
    free(b.stack);
    anchors_free(&b);
    if (rc != 0) {
        spool_cnode_free(b.root);
        return rc;
    }
    doc->root = b.root;
    return errs->count > b.errs_before ? -EINVAL : 0;
}

int spool_cdoc_load_file(const char *path, spool_cdoc *doc, spool_errors *errs)
{
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc;
    doc->file = NULL;
    doc->root = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        rc = -errno;
        goto unreadable;
    }
    for (;;) {
        if (len == cap) {
            cap = cap != 0 ? cap * 2 : 4096;
            char *p = realloc(text, cap + 1);
            if (p == NULL) {
                fclose(f);
                free(text);
                return -ENOMEM;
            }
            text = p;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        rc = -EIO;
        fclose(f);
        free(text);
        goto unreadable;
    }
    fclose(f);
    text[len] = '\0';
    rc = spool_cdoc_load_buffer(path, text, len, doc, errs);
    free(text);
    return rc;
unreadable:
    spool_errors_add(errs, NULL, 0, 0, "", "cannot read %s: %s", path, strerror(-rc));
    doc->file = strdup(path);
    return rc;
}

void spool_cdoc_free(spool_cdoc *doc)
{
    if (doc == NULL) {
        return;
    }
    spool_cnode_free(doc->root);
    free(doc->file);
    doc->root = NULL;
    doc->file = NULL;
}

const spool_cnode *spool_cnode_get(const spool_cnode *map, const char *key)
{
    if (map == NULL || map->type != SPOOL_CNODE_MAPPING) {
        return NULL;
    }
    for (size_t i = 0; i < map->count; i++) {
        if (strcmp(map->keys[i], key) == 0) {
            return map->items[i];
        }
    }
    return NULL;
}

const char *spool_cnode_type_name(const spool_cnode *n)
{
    if (n == NULL) {
        return "nothing";
    }
    switch (n->type) {
    case SPOOL_CNODE_SCALAR:
        return n->is_null ? "null" : "a scalar";
    case SPOOL_CNODE_SEQUENCE:
        return "a list";
    case SPOOL_CNODE_MAPPING:
        return "a mapping";
    }
    return "?";
}
