/*
 * validate.c: fills plugin contexts from a YAML mapping by declarative
 * option tables (spool_config_fill), reporting every problem it finds.
 *
 * Matching: a key matches the option of the same name in one of the
 * tables; a key that is the first part of dotted option names
 * ("multiline" for "multiline.start") must hold a mapping, whose keys are
 * matched against the rest of those names, recursively. Anything else is
 * an unknown key, with a did-you-mean over the names valid at that level.
 * When two tables define the same name, the first table wins.
 *
 * Values: a null value (`key:` or `key: ~`) counts as absent, so the
 * default applies (a required option then reports a missing value). A
 * scalar whose ${VAR} substitution failed was already reported by the
 * loader and is skipped here without a default. A required LIST must have
 * at least one item. Defaults are parsed by the same parsers as the user's
 * text (a LIST default is a one-item list; MAP and TABLE options take no
 * default; a TABLE is a list of mappings of scalars, keys not checked); a
 * default that does not parse is a bug in the table and is reported as an
 * error too. A ctx of NULL validates without storing anything.
 *
 * Storing replaces (and frees) what the field held, so ctx must start
 * zeroed. Thread-safe as long as the tree and contexts are not shared.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

typedef struct entry {
    const spool_option *opt;
    void *ctx;
    const spool_cnode *node; /* the value given, NULL if absent */
} entry;

typedef struct filler {
    const char *file;
    const char *path; /* error path prefix, "" for none */
    const char *what; /* the mapping's name in messages, NULL for none */
    const char *const *ignore;
    spool_errors *errs;
    entry *entries;
    size_t count;
} filler;

typedef struct value {
    int64_t i; /* INT, SIZE, DURATION, BOOL, ENUM */
    char *s;   /* STRING */
    spool_strlist list;
    spool_strmap map;
    spool_strmaplist table;
} value;

static void join(char *buf, size_t cap, const char *base, const char *name)
{
    snprintf(buf, cap, "%s%s%s", base, base[0] != '\0' && name[0] != '\0' ? "." : "", name);
}

static void fail(filler *f, int line, int column, const char *opt_path, const char *fmt, ...)
    SPOOL_PRINTF(5, 6);
static void fail(filler *f, int line, int column, const char *opt_path, const char *fmt, ...)
{
    char path[512];
    join(path, sizeof(path), f->path, opt_path);
    va_list ap;
    va_start(ap, fmt);
    spool_errors_addv(f->errs, f->file, line, column, path, fmt, ap);
    va_end(ap);
}

/* " in inputs[0] (tail)", or "" when the mapping has no name. */
static void where(const filler *f, char *buf, size_t cap)
{
    const char *w = f->what != NULL && f->what[0] != '\0' ? f->what : f->path;
    snprintf(buf, cap, "%s%s", w[0] != '\0' ? " in " : "", w);
}

static void map_free(spool_strmap *m)
{
    for (size_t i = 0; i < m->count; i++) {
        free(m->keys[i]);
        free(m->values[i]);
    }
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof(*m));
}

static void value_free(value *v)
{
    for (size_t i = 0; i < v->table.count; i++) {
        map_free(&v->table.items[i]);
    }
    free(v->table.items);
    free(v->s);
    for (size_t i = 0; i < v->list.count; i++) {
        free(v->list.items[i]);
    }
    free(v->list.items);
    for (size_t i = 0; i < v->map.count; i++) {
        free(v->map.keys[i]);
        free(v->map.values[i]);
    }
    free(v->map.keys);
    free(v->map.values);
    memset(v, 0, sizeof(*v));
}

static const char *expected(const spool_option *o)
{
    switch (o->type) {
    case SPOOL_OPT_STRING:
        return "a string";
    case SPOOL_OPT_INT:
        return "an integer";
    case SPOOL_OPT_BOOL:
        return "a boolean (true or false)";
    case SPOOL_OPT_SIZE:
        return "a size (e.g. 64MiB)";
    case SPOOL_OPT_DURATION:
        return "a duration (e.g. 5s)";
    case SPOOL_OPT_LIST:
        return "a list of strings";
    case SPOOL_OPT_MAP:
        return "a mapping of strings to strings";
    case SPOOL_OPT_ENUM:
        return "a single value";
    case SPOOL_OPT_TABLE:
        return "a list of mappings";
    }
    return "?";
}

static size_t list_enum(const spool_option *o, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; o->enum_values != NULL && o->enum_values[i] != NULL; i++) {
        int n = snprintf(buf + len, cap - len, "%s%s", i > 0 ? ", " : "", o->enum_values[i]);
        if (n < 0 || (size_t)n >= cap - len) {
            break;
        }
        len += (size_t)n;
    }
    return len;
}

static void format_bound(const spool_option *o, int64_t v, char *buf, size_t cap)
{
    if (o->type == SPOOL_OPT_SIZE) {
        spool_format_size(v, buf, cap);
    } else if (o->type == SPOOL_OPT_DURATION) {
        spool_format_duration(v, buf, cap);
    } else {
        snprintf(buf, cap, "%" PRId64, v);
    }
}

static int check_range(const spool_option *o, const char *text, int64_t v, char *msg, size_t cap)
{
    if (o->min > o->max || (v >= o->min && v <= o->max)) {
        return 0;
    }
    char lo[64], hi[64];
    format_bound(o, o->min, lo, sizeof(lo));
    format_bound(o, o->max, hi, sizeof(hi));
    if (o->max == INT64_MAX) {
        snprintf(msg, cap, "out of range: '%s' (must be at least %s)", text, lo);
    } else if (o->min == INT64_MIN) {
        snprintf(msg, cap, "out of range: '%s' (must be at most %s)", text, hi);
    } else {
        snprintf(msg, cap, "out of range: '%s' (must be between %s and %s)", text, lo, hi);
    }
    return -1;
}

static int all_digits(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

/* Parses one scalar for option o (any type but MAP). 0, or -1 with a
 * message in msg; -ENOMEM. */
static int parse_scalar(const spool_option *o, const char *text, value *out, char *msg, size_t cap)
{
    int rc, b;
    char *end;
    switch (o->type) {
    case SPOOL_OPT_STRING:
        out->s = strdup(text);
        return out->s != NULL ? 0 : -ENOMEM;
    case SPOOL_OPT_LIST:
        out->list.items = malloc(sizeof(char *));
        if (out->list.items == NULL || (out->list.items[0] = strdup(text)) == NULL) {
            return -ENOMEM;
        }
        out->list.count = 1;
        return 0;
    case SPOOL_OPT_INT:
        errno = 0;
        out->i = strtoll(text, &end, 10);
        if (end == text || *end != '\0' || text[0] == ' ' || text[0] == '\t') {
            snprintf(msg, cap, "not a number: '%s'", text);
            return -1;
        }
        if (errno == ERANGE) {
            snprintf(msg, cap, "number too large: '%s'", text);
            return -1;
        }
        return check_range(o, text, out->i, msg, cap);
    case SPOOL_OPT_SIZE:
        rc = spool_parse_size(text, &out->i);
        if (rc == -ERANGE) {
            snprintf(msg, cap, "size too large: '%s'", text);
            return -1;
        }
        if (rc < 0) {
            snprintf(msg, cap,
                     "bad size '%s' (units: B, KB, MB, GB, TB = 1000^n; KiB, MiB, GiB, TiB = "
                     "1024^n; e.g. 64MiB)",
                     text);
            return -1;
        }
        return check_range(o, text, out->i, msg, cap);
    case SPOOL_OPT_DURATION:
        rc = spool_parse_duration(text, &out->i);
        if (rc == -ERANGE) {
            snprintf(msg, cap, "duration too large: '%s'", text);
            return -1;
        }
        if (rc < 0 && all_digits(text)) {
            snprintf(msg, cap, "duration '%s' needs a unit, e.g. %ss", text, text);
            return -1;
        }
        if (rc < 0) {
            snprintf(msg, cap, "bad duration '%s' (units: us, ms, s, m, h, d, w; e.g. 1h30m)",
                     text);
            return -1;
        }
        return check_range(o, text, out->i, msg, cap);
    case SPOOL_OPT_BOOL:
        if (spool_parse_bool(text, &b) < 0) {
            snprintf(msg, cap, "not a boolean: '%s' (use true or false)", text);
            return -1;
        }
        out->i = b;
        return 0;
    case SPOOL_OPT_ENUM: {
        size_t n = 0;
        for (; o->enum_values != NULL && o->enum_values[n] != NULL; n++) {
            if (strcmp(o->enum_values[n], text) == 0) {
                out->i = (int64_t)n;
                return 0;
            }
        }
        char allowed[512];
        list_enum(o, allowed, sizeof(allowed));
        const char *dym = n > 0 ? spool_did_you_mean(text, o->enum_values, n) : NULL;
        if (dym != NULL) {
            snprintf(msg, cap, "invalid value '%s' (expected one of: %s), did you mean '%s'?", text,
                     allowed, dym);
        } else {
            snprintf(msg, cap, "invalid value '%s' (expected one of: %s)", text, allowed);
        }
        return -1;
    }
    case SPOOL_OPT_MAP:
        snprintf(msg, cap, "a map option cannot be written as a single value");
        return -1;
    case SPOOL_OPT_TABLE:
        snprintf(msg, cap, "a table option cannot be written as a single value");
        return -1;
    }
    return -1;
}

/* Parses a mapping of scalars (a MAP option, or one item of a TABLE) at
 * `name` into *m. 0, 1 = error reported, -ENOMEM. */
static int parse_map(filler *f, const spool_cnode *n, const char *name, spool_strmap *m)
{
    int errors = 0;
    char ipath[600];
    size_t cap = n->count != 0 ? n->count : 1;
    m->keys = calloc(cap, sizeof(char *));
    m->values = calloc(cap, sizeof(char *));
    if (m->keys == NULL || m->values == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n->count; i++) {
        const spool_cnode *it = n->items[i];
        join(ipath, sizeof(ipath), name, n->keys[i]);
        if (it->type != SPOOL_CNODE_SCALAR) {
            fail(f, it->line, it->column, ipath, "expected a string value, got %s",
                 spool_cnode_type_name(it));
            errors = 1;
            continue;
        }
        if (it->bad) {
            errors = 1;
            continue;
        }
        size_t k = m->count++;
        m->keys[k] = strdup(n->keys[i]);
        m->values[k] = strdup(it->value);
        if (m->keys[k] == NULL || m->values[k] == NULL) {
            return -ENOMEM;
        }
    }
    return errors;
}

/* Parses the node given for e into out. 0, 1 = error reported or skip,
 * -ENOMEM. */
static int parse_node(filler *f, const entry *e, value *out)
{
    const spool_option *o = e->opt;
    const spool_cnode *n = e->node;
    char msg[1024];
    char ipath[512];
    if (o->type == SPOOL_OPT_LIST && n->type == SPOOL_CNODE_SEQUENCE) {
        int errors = 0;
        out->list.items = calloc(n->count != 0 ? n->count : 1, sizeof(char *));
        if (out->list.items == NULL) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < n->count; i++) {
            const spool_cnode *it = n->items[i];
            snprintf(ipath, sizeof(ipath), "%s[%zu]", o->name, i);
            if (it->type != SPOOL_CNODE_SCALAR || it->is_null) {
                fail(f, it->line, it->column, ipath, "expected a string in list '%s', got %s",
                     o->name, spool_cnode_type_name(it));
                errors = 1;
                continue;
            }
            if (it->bad) {
                errors = 1;
                continue;
            }
            out->list.items[out->list.count] = strdup(it->value);
            if (out->list.items[out->list.count++] == NULL) {
                return -ENOMEM;
            }
        }
        if (errors == 0 && o->required && n->count == 0) {
            fail(f, n->line, n->column, o->name, "option '%s' needs at least one value", o->name);
            errors = 1;
        }
        return errors;
    }
    if (o->type == SPOOL_OPT_MAP && n->type == SPOOL_CNODE_MAPPING) {
        return parse_map(f, n, o->name, &out->map);
    }
    if (o->type == SPOOL_OPT_TABLE && n->type == SPOOL_CNODE_SEQUENCE) {
        int errors = 0;
        out->table.items = calloc(n->count != 0 ? n->count : 1, sizeof(spool_strmap));
        if (out->table.items == NULL) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < n->count; i++) {
            const spool_cnode *it = n->items[i];
            snprintf(ipath, sizeof(ipath), "%s[%zu]", o->name, i);
            if (it->type != SPOOL_CNODE_MAPPING) {
                fail(f, it->line, it->column, ipath, "expected a mapping in list '%s', got %s",
                     o->name, spool_cnode_type_name(it));
                errors = 1;
                continue;
            }
            int rc = parse_map(f, it, ipath, &out->table.items[out->table.count++]);
            if (rc < 0) {
                return rc;
            }
            errors |= rc;
        }
        if (errors == 0 && o->required && n->count == 0) {
            fail(f, n->line, n->column, o->name, "option '%s' needs at least one item", o->name);
            errors = 1;
        }
        return errors;
    }
    if (n->type != SPOOL_CNODE_SCALAR || o->type == SPOOL_OPT_MAP || o->type == SPOOL_OPT_TABLE) {
        fail(f, n->line, n->column, o->name, "expected %s, got %s", expected(o),
             spool_cnode_type_name(n));
        return 1;
    }
    if (n->bad) {
        return 1;
    }
    int rc = parse_scalar(o, n->value, out, msg, sizeof(msg));
    if (rc == -1) {
        fail(f, n->line, n->column, o->name, "%s", msg);
        return 1;
    }
    return rc;
}

static void store(const entry *e, value *v)
{
    if (e->ctx == NULL) {
        value_free(v);
        return;
    }
    char *field = (char *)e->ctx + e->opt->offset;
    switch (e->opt->type) {
    case SPOOL_OPT_STRING:
        free(*(char **)field);
        *(char **)field = v->s;
        v->s = NULL;
        break;
    case SPOOL_OPT_INT:
    case SPOOL_OPT_SIZE:
    case SPOOL_OPT_DURATION:
        *(int64_t *)field = v->i;
        break;
    case SPOOL_OPT_BOOL:
    case SPOOL_OPT_ENUM:
        *(int *)field = (int)v->i;
        break;
    case SPOOL_OPT_LIST: {
        value old = {.list = *(spool_strlist *)field};
        value_free(&old);
        *(spool_strlist *)field = v->list;
        memset(&v->list, 0, sizeof(v->list));
        break;
    }
    case SPOOL_OPT_MAP: {
        value old = {.map = *(spool_strmap *)field};
        value_free(&old);
        *(spool_strmap *)field = v->map;
        memset(&v->map, 0, sizeof(v->map));
        break;
    }
    case SPOOL_OPT_TABLE: {
        value old = {.table = *(spool_strmaplist *)field};
        value_free(&old);
        *(spool_strmaplist *)field = v->table;
        memset(&v->table, 0, sizeof(v->table));
        break;
    }
    }
    value_free(v);
}

/* Is `name` (a full option name) below `prefix` ("multiline.")? Then the
 * component at that level goes to *comp / *comp_len. */
static int below(const char *name, const char *prefix, const char **comp, size_t *comp_len)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0) {
        return 0;
    }
    *comp = name + pl;
    const char *dot = strchr(*comp, '.');
    *comp_len = dot != NULL ? (size_t)(dot - *comp) : strlen(*comp);
    return 1;
}

static void unknown_key(filler *f, const spool_cnode *map, size_t i, const char *prefix,
                        const char *full)
{
    /* Candidates: every distinct component at this level, and the ignored keys. */
    const char *cands[256];
    char store_buf[256][64];
    size_t n = 0;
    for (size_t k = 0; k < f->count && n < 256; k++) {
        const char *comp;
        size_t len;
        if (below(f->entries[k].opt->name, prefix, &comp, &len) && len < 64) {
            memcpy(store_buf[n], comp, len);
            store_buf[n][len] = '\0';
            cands[n] = store_buf[n];
            n++;
        }
    }
    for (size_t k = 0; prefix[0] == '\0' && f->ignore != NULL && f->ignore[k] != NULL && n < 256;
         k++) {
        cands[n++] = f->ignore[k];
    }
    const char *dym = spool_did_you_mean(map->keys[i], cands, n);
    char in[512], nested[300] = "";
    where(f, in, sizeof(in));
    if (prefix[0] != '\0') {
        snprintf(nested, sizeof(nested), " '%.*s'", (int)strlen(prefix) - 1, prefix);
    }
    char msg[1024];
    snprintf(msg, sizeof(msg), "unknown key '%s'", map->keys[i]);
    if (nested[0] != '\0') {
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), " in%s%s%s", nested,
                 in[0] != '\0' ? " of" : "", in[0] != '\0' ? in + 3 : "");
    } else {
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s", in);
    }
    if (dym != NULL) {
        fail(f, map->key_lines[i], map->key_columns[i], full, "%s, did you mean '%s'?", msg, dym);
    } else {
        fail(f, map->key_lines[i], map->key_columns[i], full, "%s", msg);
    }
}

static void match_mapping(filler *f, const spool_cnode *map, const char *prefix)
{
    for (size_t i = 0; i < map->count; i++) {
        const char *key = map->keys[i];
        const spool_cnode *v = map->items[i];
        char full[512];
        snprintf(full, sizeof(full), "%s%s", prefix, key);
        if (prefix[0] == '\0' && f->ignore != NULL) {
            size_t k = 0;
            while (f->ignore[k] != NULL && strcmp(f->ignore[k], key) != 0) {
                k++;
            }
            if (f->ignore[k] != NULL) {
                continue;
            }
        }
        entry *hit = NULL;
        int is_prefix = 0;
        size_t fl = strlen(full);
        for (size_t k = 0; k < f->count; k++) {
            const char *name = f->entries[k].opt->name;
            if (strcmp(name, full) == 0) {
                hit = &f->entries[k];
                break;
            }
            if (strncmp(name, full, fl) == 0 && name[fl] == '.') {
                is_prefix = 1;
            }
        }
        if (hit != NULL) {
            if (hit->node == NULL) { /* the first table wins */
                hit->node = v;
            }
        } else if (is_prefix) {
            if (v->type == SPOOL_CNODE_MAPPING) {
                char sub[520];
                snprintf(sub, sizeof(sub), "%s.", full);
                match_mapping(f, v, sub);
            } else if (!(v->type == SPOOL_CNODE_SCALAR && (v->is_null || v->bad))) {
                fail(f, v->line, v->column, full, "expected a mapping, got %s",
                     spool_cnode_type_name(v));
            }
        } else {
            unknown_key(f, map, i, prefix, full);
        }
    }
}

/* A value the user wrote (a failed substitution counts: it was reported). */
static int is_given(const spool_cnode *n)
{
    return n != NULL && !(n->type == SPOOL_CNODE_SCALAR && n->is_null && !n->bad);
}

static void fill_given(filler *f, const entry *e)
{
    value v = {0};
    if (e->node->type == SPOOL_CNODE_SCALAR && e->node->bad) {
        return;
    }
    int rc = parse_node(f, e, &v);
    if (rc == -ENOMEM) {
        fail(f, 0, 0, e->opt->name, "out of memory");
    } else if (rc == 0) {
        store(e, &v);
    }
    value_free(&v);
}

/* An option not given (or given as null): required error, or default. */
static void fill_absent(filler *f, const entry *e, int map_line, int map_column)
{
    const spool_option *o = e->opt;
    value v = {0};
    char in[512], msg[1024];
    if (o->required) {
        where(f, in, sizeof(in));
        if (e->node != NULL) {
            fail(f, e->node->line, e->node->column, o->name,
                 "missing value for required option '%s'", o->name);
        } else {
            fail(f, map_line, map_column, "", "missing required option '%s'%s", o->name, in);
        }
        return;
    }
    if (o->def == NULL) {
        return;
    }
    int structured = o->type == SPOOL_OPT_MAP || o->type == SPOOL_OPT_TABLE;
    int rc = structured ? -1 : parse_scalar(o, o->def, &v, msg, sizeof(msg));
    if (rc == -1) {
        fail(f, map_line, map_column, o->name, "bad default '%s' for option '%s': %s", o->def,
             o->name, structured ? "map and table options take no default" : msg);
    } else if (rc == -ENOMEM) {
        fail(f, 0, 0, o->name, "out of memory");
    } else {
        store(e, &v);
    }
    value_free(&v);
}

int spool_config_fill(const spool_cdoc *doc, const spool_cnode *map,
                      const spool_option *const *tables, void *const *ctxs, size_t ntables,
                      const char *const *ignore, const char *path, const char *what,
                      spool_errors *errs)
{
    size_t before = errs->count;
    filler f = {
        .file = doc != NULL ? doc->file : NULL,
        .path = path != NULL ? path : "",
        .what = what,
        .ignore = ignore,
        .errs = errs,
    };
    size_t total = 0;
    for (size_t t = 0; t < ntables; t++) {
        for (const spool_option *o = tables[t]; o != NULL && o->name != NULL; o++) {
            total++;
        }
    }
    f.entries = calloc(total != 0 ? total : 1, sizeof(*f.entries));
    if (f.entries == NULL) {
        spool_errors_add(errs, f.file, 0, 0, f.path, "out of memory");
        return (int)(errs->count - before);
    }
    for (size_t t = 0; t < ntables; t++) {
        for (const spool_option *o = tables[t]; o != NULL && o->name != NULL; o++) {
            f.entries[f.count++] = (entry){.opt = o, .ctx = ctxs != NULL ? ctxs[t] : NULL};
        }
    }
    int map_line = map != NULL ? map->line : 0, map_column = map != NULL ? map->column : 0;
    if (map != NULL && map->type == SPOOL_CNODE_MAPPING) {
        match_mapping(&f, map, "");
    } else if (map != NULL && !(map->type == SPOOL_CNODE_SCALAR && map->is_null)) {
        fail(&f, map->line, map->column, "", "expected a mapping, got %s",
             spool_cnode_type_name(map));
        goto out;
    }
    /* Values given, in file order, then absent options in table order. */
    size_t *order = malloc((f.count != 0 ? f.count : 1) * sizeof(*order));
    if (order == NULL) {
        fail(&f, 0, 0, "", "out of memory");
        goto out;
    }
    size_t ngiven = 0;
    for (size_t k = 0; k < f.count; k++) {
        if (is_given(f.entries[k].node)) {
            size_t j = ngiven++;
            const spool_cnode *n = f.entries[k].node;
            while (j > 0 && (f.entries[order[j - 1]].node->line > n->line ||
                             (f.entries[order[j - 1]].node->line == n->line &&
                              f.entries[order[j - 1]].node->column > n->column))) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = k;
        }
    }
    for (size_t k = 0; k < ngiven; k++) {
        fill_given(&f, &f.entries[order[k]]);
    }
    for (size_t k = 0; k < f.count; k++) {
        if (!is_given(f.entries[k].node)) {
            fill_absent(&f, &f.entries[k], map_line, map_column);
        }
    }
    free(order);
out:
    free(f.entries);
    return (int)(errs->count - before);
}

/* The node `option` names below map: dotted keys, and "[i]" after a
 * component for an item of a list ("rules[1].when"). A key may itself
 * contain dots (properties: {linger.ms: 5}): the rest of the name as one
 * key wins over descending further. NULL if absent. */
static const spool_cnode *option_node(const spool_cnode *map, const char *option)
{
    const spool_cnode *n = map;
    const char *p = option;
    while (n != NULL) {
        size_t len = strcspn(p, ".[");
        const spool_cnode *next = NULL;
        if (n->type != SPOOL_CNODE_MAPPING) {
            return NULL;
        }
        for (size_t i = 0; p[len] != '\0' && i < n->count; i++) {
            if (strcmp(n->keys[i], p) == 0) {
                return n->items[i];
            }
        }
        for (size_t i = 0; i < n->count; i++) {
            if (strlen(n->keys[i]) == len && strncmp(n->keys[i], p, len) == 0) {
                next = n->items[i];
                break;
            }
        }
        p += len;
        /* Indexes: "[1]", possibly several ("[1][0]"). */
        while (next != NULL && *p == '[') {
            char *end;
            unsigned long idx = strtoul(p + 1, &end, 10);
            if (end == p + 1 || *end != ']' || next->type != SPOOL_CNODE_SEQUENCE ||
                idx >= next->count) {
                return NULL;
            }
            next = next->items[idx];
            p = end + 1;
        }
        if (next == NULL || *p == '\0') {
            return next;
        }
        if (*p != '.') {
            return NULL;
        }
        n = next;
        p++;
    }
    return NULL;
}

int spool_config_option_pos(const spool_cnode *map, const char *option, int *line, int *column)
{
    const spool_cnode *n = option_node(map, option);
    if (n == NULL) {
        return -ENOENT;
    }
    *line = n->line;
    *column = n->column;
    return 0;
}

int spool_config_value_pos(const spool_cnode *map, const char *option, size_t offset, int *line,
                           int *column)
{
    const spool_cnode *n = option_node(map, option);
    if (n == NULL) {
        return -ENOENT;
    }
    *line = n->line;
    *column = n->column;
    if (n->type != SPOOL_CNODE_SCALAR || !n->verbatim || offset > strlen(n->value)) {
        return 0;
    }
    *column = n->column + (n->quoted ? 1 : 0) + (int)offset;
    return 1;
}
