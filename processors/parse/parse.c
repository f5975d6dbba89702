/*
 * parse.c: the `parse` processor (issue 15, docs/processors-parse.md): reads one field of
 * each record (the value by default), parses it as json, logfmt, kv, csv, a PCRE2 regex
 * with named groups, syslog, or an Apache/nginx access log line, and writes the fields it
 * found as headers (optionally prefixed), optionally sets the record's timestamp from one
 * of them, and on failure keeps, drops or dead-letters the record.
 *
 * Invariants:
 * - A record is changed all or nothing: the parser's fields are collected into the
 *   context first (the source bytes point into the batch, which changes as soon as a
 *   header is set), and written only once the parse and the timestamp succeeded. A record
 *   that fails gets only a `parse_error` header (on_error: keep or dead_letter).
 * - A parsed field replaces the first header of the same name (spool_batch_set_header);
 *   several fields of one name (json duplicates) leave the last one. Names that are the
 *   record's own parts (key, value, timestamp, topic) are written as headers too, but
 *   conditions and templates read the record part for them: `prefix` makes them
 *   reachable.
 * - No allocation per record once the buffers (fields, names and values, the parsers'
 *   scratch) have grown to the largest record seen. Everything here runs on the one
 *   processor thread, so the buffers live in the context.
 * - Every failure is counted (spool_parse_errors_total); drops also as
 *   spool_processor_dropped_total{reason="parse_error"}, dead letters as
 *   spool_parse_dead_lettered_total.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "spool/spool.h"

#include "../parse_text.h"
#include "parse_formats.h"
#include "parse_time.h"

enum parse_format {
    FMT_JSON,
    FMT_LOGFMT,
    FMT_KV,
    FMT_REGEX,
    FMT_CSV,
    FMT_SYSLOG,
    FMT_APACHE_COMMON,
    FMT_APACHE_COMBINED,
    FMT_NGINX_COMBINED,
};

static const char *const format_names[] = {
    "json",           "logfmt", "kv", "regex", "csv", "syslog", "apache_common", "apache_combined",
    "nginx_combined", NULL};

#define PARSE_MATCH_LIMIT 1000000 /* PCRE2 match limit per record (backtracking steps) */

enum on_error { ON_ERROR_KEEP, ON_ERROR_DROP, ON_ERROR_DEAD_LETTER };
static const char *const on_error_names[] = {"keep", "drop", "dead_letter", NULL};

enum source_kind { SRC_VALUE, SRC_KEY, SRC_TIMESTAMP, SRC_TOPIC, SRC_HEADER };

/* One collected field: offsets into parse_ctx.buf. */
typedef struct parse_field {
    size_t name_off; /* NUL-terminated, prefix included */
    size_t name_len; /* bytes, prefix included */
    size_t val_off;
    size_t val_len; /* bytes */
    uint32_t hash;  /* FNV-1a of the name (without the prefix) */
    int replaces;   /* 1: the record may already have a header of this name */
} parse_field;

/* A named group of the regex. */
typedef struct parse_group {
    uint32_t number;
    const char *name; /* points into the compiled pattern's name table */
    size_t name_len;
} parse_group;

typedef struct parse_ctx {
    /* Options (filled by the core, freed by it after destroy). */
    int format;              /* enum parse_format */
    char *source;            /* the field parsed */
    char *pattern;           /* regex only */
    spool_strlist columns;   /* csv only */
    char *separator;         /* csv, kv: one byte */
    char *kv_separator;      /* kv: one byte */
    char *prefix;            /* prepended to every field name; NULL = none */
    int keep_original;       /* 0: the source is removed after a successful parse */
    char *ts_field;          /* timestamp.field */
    char *ts_format;         /* timestamp.format */
    int on_error;            /* enum on_error */
    char *dead_letter_topic; /* on_error: dead_letter */
    /* Compiled at init. */
    int source_kind;         /* enum source_kind */
    size_t source_len;       /* bytes of source */
    size_t prefix_len;       /* bytes of prefix */
    pcre2_code *re;          /* regex */
    pcre2_match_data *md;    /* regex: reused for every record */
    pcre2_match_context *mc; /* regex: the match limit */
    parse_group *groups;     /* regex: named groups */
    size_t ngroups;
    parse_kv_options kv;
    parse_csv_options csv;
    parse_time_format tf; /* valid when ts_field */
    /* Per record, reused (the processor thread only). */
    parse_scratch sc;    /* the text parsers' scratch */
    spool_buf buf;       /* collected names (NUL-terminated) and values */
    parse_field *fields; /* nfields collected of cap_fields */
    spool_header *added; /* cap_fields: the fields written with one spool_batch_add_headers */
    spool_record *views; /* cap_views: every record of the batch, read before any change */
    size_t cap_views;
    size_t nfields;
    size_t cap_fields;
    long ts_index;         /* field holding the timestamp, -1 = none yet */
    int name_error;        /* a field name held a NUL byte */
    spool_counter *errors; /* records whose parse failed */
    spool_counter *dead;   /* of them, sent to dead_letter_topic */
} parse_ctx;

#define OPT_REQUIRED_CHOICE(n, T, f, values, desc)                                                 \
    {                                                                                              \
        n, SPOOL_OPT_ENUM, NULL, 1, SPOOL__FIELD(T, f, int), 1, 0, values, desc                    \
    }

static const spool_option parse_options[] = {
    OPT_REQUIRED_CHOICE("format", parse_ctx, format, format_names,
                        "how the source field is written"),
    SPOOL_OPT_STR("source", parse_ctx, source, "value", 0,
                  "field to parse: value, key, or a header name"),
    SPOOL_OPT_STR("pattern", parse_ctx, pattern, NULL, 0,
                  "regex: PCRE2 pattern; its named groups (?<name>...) become fields"),
    SPOOL_OPT_STRLIST("columns", parse_ctx, columns, 0,
                      "csv: names of the columns (later ones are named _N)"),
    SPOOL_OPT_STR("separator", parse_ctx, separator, NULL, 0,
                  "csv: field separator (default ','); kv: pair separator (default ' ')"),
    SPOOL_OPT_STR("kv_separator", parse_ctx, kv_separator, NULL, 0,
                  "kv: separator between key and value (default '=')"),
    SPOOL_OPT_STR("prefix", parse_ctx, prefix, NULL, 0,
                  "prepended to every field name, e.g. 'http.'"),
    SPOOL_OPT_FLAG("keep_original", parse_ctx, keep_original, "true",
                   "false: remove the source after a successful parse (the value becomes "
                   "null)"),
    SPOOL_OPT_STR("timestamp.field", parse_ctx, ts_field, NULL, 0,
                  "parsed field that sets the record's timestamp"),
    SPOOL_OPT_STR("timestamp.format", parse_ctx, ts_format, "rfc3339", 0,
                  "rfc3339, unix, unix_ms, unix_us, unix_ns or a strptime format (%f: "
                  "fraction, %z: offset)"),
    SPOOL_OPT_CHOICE("on_error", parse_ctx, on_error, "keep", on_error_names,
                     "keep (with a parse_error header), drop, or dead_letter"),
    SPOOL_OPT_STR("dead_letter_topic", parse_ctx, dead_letter_topic, NULL, 0,
                  "on_error: dead_letter: the topic failed records go to"),
    SPOOL_OPT_END,
};

/* ---- configuration ---- */

static int group_cmp(const void *a, const void *b)
{
    const parse_group *x = a, *y = b;
    return x->number < y->number ? -1 : x->number > y->number;
}

/* Compiles the pattern and lists its named groups. On error reports it (ins may be NULL:
 * then silently) and returns -EINVAL. */
static int compile_regex(spool_instance *ins, parse_ctx *ctx)
{
    int code;
    PCRE2_SIZE at;
    ctx->re = pcre2_compile((PCRE2_SPTR)ctx->pattern, PCRE2_ZERO_TERMINATED, 0, &code, &at, NULL);
    if (!ctx->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        spool_config_error_at(ins, "pattern", (size_t)at + 1,
                              "bad regex at position %zu of the pattern: %s", (size_t)at + 1,
                              (const char *)msg);
        return -EINVAL;
    }
    uint32_t count = 0, entry = 0;
    PCRE2_SPTR table;
    pcre2_pattern_info(ctx->re, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(ctx->re, PCRE2_INFO_NAMEENTRYSIZE, &entry);
    pcre2_pattern_info(ctx->re, PCRE2_INFO_NAMETABLE, &table);
    if (count == 0) {
        spool_config_error(ins, "pattern",
                           "the pattern has no named group: name what it captures with "
                           "(?<name>...)");
        return -EINVAL;
    }
    ctx->groups = calloc(count, sizeof(*ctx->groups));
    if (!ctx->groups) {
        return -ENOMEM;
    }
    for (uint32_t k = 0; k < count; k++) {
        PCRE2_SPTR e = table + (size_t)k * entry;
        ctx->groups[k].number = ((uint32_t)e[0] << 8) | e[1];
        ctx->groups[k].name = (const char *)e + 2;
        ctx->groups[k].name_len = strlen((const char *)e + 2);
    }
    ctx->ngroups = count;
    /* PCRE2 sorts its name table by name: write the fields in the pattern's order. */
    qsort(ctx->groups, count, sizeof(*ctx->groups), group_cmp);
    return 0;
}

static void free_regex(parse_ctx *ctx)
{
    pcre2_match_data_free(ctx->md);
    pcre2_match_context_free(ctx->mc);
    pcre2_code_free(ctx->re);
    free(ctx->groups);
    ctx->md = NULL;
    ctx->mc = NULL;
    ctx->re = NULL;
    ctx->groups = NULL;
    ctx->ngroups = 0;
}

/* A one-byte option: its byte, or -1 after reporting what is wrong. */
static int one_byte(spool_instance *ins, const char *option, const char *v, const char *forbid)
{
    if (strlen(v) != 1) {
        spool_config_error(ins, option, "must be exactly one character, got '%s'", v);
        return -1;
    }
    if (strchr(forbid, v[0])) {
        spool_config_error(ins, option, "'%s' cannot be a separator here", v);
        return -1;
    }
    return (unsigned char)v[0];
}

/* Validates every option and fills the derived fields (kv, csv, tf, source_kind). Reports
 * each problem once; returns -EINVAL if there was any. Allocates nothing. */
static int parse_validate(spool_instance *ins, parse_ctx *ctx)
{
    int bad = 0, f = ctx->format;
    const char *fmt = format_names[f];
    if (ctx->pattern && f != FMT_REGEX) {
        spool_config_error(ins, "pattern", "only used with format: regex (format is %s)", fmt);
        bad = 1;
    }
    if (!ctx->pattern && f == FMT_REGEX) {
        spool_config_error(ins, NULL, "format: regex needs a pattern");
        bad = 1;
    }
    if (ctx->columns.count && f != FMT_CSV) {
        spool_config_error(ins, "columns", "only used with format: csv (format is %s)", fmt);
        bad = 1;
    }
    for (size_t k = 0; k < ctx->columns.count; k++) {
        if (ctx->columns.items[k][0] == '\0') {
            spool_config_error(ins, "columns", "column %zu has an empty name", k + 1);
            bad = 1;
        }
    }
    memset(&ctx->kv, 0, sizeof(ctx->kv));
    memset(&ctx->csv, 0, sizeof(ctx->csv));
    if (ctx->separator) {
        if (f == FMT_CSV) {
            int c = one_byte(ins, "separator", ctx->separator, "\"\r\n");
            bad |= c < 0;
            ctx->csv.sep = (char)(c < 0 ? 0 : c);
        } else if (f == FMT_KV) {
            int c = one_byte(ins, "separator", ctx->separator, "\"'");
            bad |= c < 0;
            ctx->kv.field_sep = (char)(c < 0 ? 0 : c);
        } else {
            spool_config_error(ins, "separator", "only used with format: csv or kv (format is %s)",
                               fmt);
            bad = 1;
        }
    }
    if (ctx->kv_separator) {
        if (f != FMT_KV) {
            spool_config_error(ins, "kv_separator", "only used with format: kv (format is %s)",
                               fmt);
            bad = 1;
        } else {
            int c = one_byte(ins, "kv_separator", ctx->kv_separator, "\"' \t");
            bad |= c < 0;
            ctx->kv.kv_sep = (char)(c < 0 ? 0 : c);
            char fs = ctx->kv.field_sep ? ctx->kv.field_sep : ' ';
            if (c >= 0 && c == fs) {
                spool_config_error(ins, "kv_separator", "must differ from the pair separator");
                bad = 1;
            }
        }
    }
    ctx->csv.columns = (const char *const *)ctx->columns.items;
    ctx->csv.n_columns = ctx->columns.count;

    if (!ctx->source || ctx->source[0] == '\0') {
        spool_config_error(ins, "source", "must name a field (value, key, or a header)");
        bad = 1;
    } else {
        ctx->source_len = strlen(ctx->source);
        ctx->source_kind = strcmp(ctx->source, "value") == 0       ? SRC_VALUE
                           : strcmp(ctx->source, "key") == 0       ? SRC_KEY
                           : strcmp(ctx->source, "timestamp") == 0 ? SRC_TIMESTAMP
                           : strcmp(ctx->source, "topic") == 0     ? SRC_TOPIC
                                                                   : SRC_HEADER;
        if (!ctx->keep_original &&
            (ctx->source_kind == SRC_TIMESTAMP || ctx->source_kind == SRC_TOPIC)) {
            spool_config_error(ins, "keep_original",
                               "false cannot remove the record's %s: parse another field or "
                               "keep it",
                               ctx->source);
            bad = 1;
        }
    }
    ctx->prefix_len = ctx->prefix ? strlen(ctx->prefix) : 0;

    if (ctx->ts_field) {
        char why[256];
        if (ctx->ts_field[0] == '\0') {
            spool_config_error(ins, "timestamp.field", "must name a parsed field");
            bad = 1;
        }
        size_t col = 0;
        if (parse_time_compile(ctx->ts_format, &ctx->tf, why, sizeof(why), &col) < 0) {
            spool_config_error_at(ins, "timestamp.format", col, "%s", why);
            bad = 1;
        }
    } else if (ctx->ts_format && strcmp(ctx->ts_format, "rfc3339") != 0) {
        spool_config_error(ins, "timestamp.format",
                           "needs timestamp.field: the parsed field the time is read from");
        bad = 1;
    }

    if (ctx->on_error == ON_ERROR_DEAD_LETTER && !ctx->dead_letter_topic) {
        spool_config_error(ins, "on_error", "dead_letter needs dead_letter_topic");
        bad = 1;
    }
    if (ctx->dead_letter_topic && !spool_topic_exists(ins, ctx->dead_letter_topic)) {
        spool_config_error(ins, "dead_letter_topic", "topic '%s' is not defined in topics",
                           ctx->dead_letter_topic);
        bad = 1;
    }
    if (ctx->dead_letter_topic && ctx->on_error != ON_ERROR_DEAD_LETTER) {
        spool_config_error(ins, "dead_letter_topic",
                           "only used with on_error: dead_letter (on_error is %s)",
                           on_error_names[ctx->on_error]);
        bad = 1;
    }
    return bad ? -EINVAL : 0;
}

static int parse_check(spool_instance *ins, void *vctx)
{
    parse_ctx *ctx = vctx;
    int rc = parse_validate(ins, ctx);
    if (ctx->format == FMT_REGEX && ctx->pattern) {
        int r = compile_regex(ins, ctx);
        free_regex(ctx);
        rc = rc ? rc : r;
    }
    return rc;
}

static int parse_init(spool_instance *ins, void *vctx)
{
    parse_ctx *ctx = vctx;
    int rc = parse_validate(ins, ctx);
    if (rc < 0) {
        return rc;
    }
    if (ctx->format == FMT_REGEX) {
        if ((rc = compile_regex(ins, ctx)) < 0) {
            return rc;
        }
        /* JIT when the platform has it; pcre2_match uses it by itself. */
        (void)pcre2_jit_compile(ctx->re, PCRE2_JIT_COMPLETE);
        ctx->md = pcre2_match_data_create_from_pattern(ctx->re, NULL);
        ctx->mc = pcre2_match_context_create(NULL);
        if (!ctx->md || !ctx->mc) {
            return -ENOMEM;
        }
        /* A pattern that backtracks catastrophically on some line fails that line (a
         * parse error: "match limit exceeded") instead of stalling the processor thread. */
        pcre2_set_match_limit(ctx->mc, PARSE_MATCH_LIMIT);
    }
    ctx->errors = spool_counter_register(ins, "errors", "Records the parse processor failed on");
    ctx->dead = spool_counter_register(ins, "dead_lettered",
                                       "Records the parse processor sent to dead_letter_topic");
    return ctx->errors && ctx->dead ? 0 : -ENOMEM;
}

static void parse_destroy(spool_instance *ins, void *vctx)
{
    parse_ctx *ctx = vctx;
    free_regex(ctx);
    parse_scratch_free(&ctx->sc);
    spool_buf_free(&ctx->buf);
    free(ctx->fields);
    free(ctx->added);
    free(ctx->views);
    ctx->fields = NULL;
    ctx->added = NULL;
    ctx->views = NULL;
    ctx->cap_views = 0;
    ctx->cap_fields = ctx->nfields = 0;
}

/* ---- per record ---- */

/* The parsers' emit callback: copies one field (prefixed name, value) into ctx. */
static int collect(void *arg, const char *name, size_t name_len, const uint8_t *val, size_t val_len)
{
    parse_ctx *ctx = arg;
    if (memchr(name, '\0', name_len)) {
        ctx->name_error = 1;
        return -EILSEQ;
    }
    if (ctx->nfields == ctx->cap_fields) {
        size_t cap = ctx->cap_fields ? ctx->cap_fields * 2 : 32;
        parse_field *p = realloc(ctx->fields, cap * sizeof(*p));
        if (!p) {
            return -ENOMEM;
        }
        ctx->fields = p;
        spool_header *a = realloc(ctx->added, cap * sizeof(*a));
        if (!a) {
            return -ENOMEM;
        }
        ctx->added = a;
        ctx->cap_fields = cap;
    }
    if (spool_buf_reserve(&ctx->buf, ctx->prefix_len + name_len + 1 + val_len) < 0) {
        return -ENOMEM;
    }
    parse_field *fl = &ctx->fields[ctx->nfields];
    uint32_t h = 2166136261u;
    for (size_t k = 0; k < name_len; k++) {
        h = (h ^ (uint8_t)name[k]) * 16777619u;
    }
    fl->hash = h;
    fl->name_len = ctx->prefix_len + name_len;
    fl->replaces = 0;
    uint8_t *p = ctx->buf.data + ctx->buf.len;
    fl->name_off = ctx->buf.len;
    if (ctx->prefix_len) {
        memcpy(p, ctx->prefix, ctx->prefix_len);
    }
    memcpy(p + ctx->prefix_len, name, name_len);
    p[ctx->prefix_len + name_len] = '\0';
    fl->val_off = fl->name_off + ctx->prefix_len + name_len + 1;
    memcpy(ctx->buf.data + fl->val_off, val, val_len);
    fl->val_len = val_len;
    ctx->buf.len = fl->val_off + val_len;
    if (ctx->ts_field && ctx->ts_index < 0) {
        const char *full = (const char *)ctx->buf.data + fl->name_off;
        if ((strlen(ctx->ts_field) == name_len && memcmp(ctx->ts_field, name, name_len) == 0) ||
            strcmp(ctx->ts_field, full) == 0) {
            ctx->ts_index = (long)ctx->nfields;
        }
    }
    ctx->nfields++;
    return 0;
}

static int run_regex(parse_ctx *ctx, const uint8_t *in, size_t n, parse_error *err)
{
    int rc = pcre2_match(ctx->re, (PCRE2_SPTR)in, n, 0, 0, ctx->md, ctx->mc);
    if (rc < 0) {
        err->offset = 0;
        if (rc == PCRE2_ERROR_NOMATCH) {
            snprintf(err->message, sizeof(err->message), "the pattern did not match");
        } else {
            PCRE2_UCHAR msg[100];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            snprintf(err->message, sizeof(err->message), "matching failed: %s", (const char *)msg);
        }
        return -EINVAL;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ctx->md);
    uint32_t pairs = pcre2_get_ovector_count(ctx->md);
    for (size_t k = 0; k < ctx->ngroups; k++) {
        uint32_t g = ctx->groups[k].number;
        if (g >= pairs || ov[2 * g] == PCRE2_UNSET) {
            continue; /* an optional group that did not take part */
        }
        rc = collect(ctx, ctx->groups[k].name, ctx->groups[k].name_len, in + ov[2 * g],
                     ov[2 * g + 1] - ov[2 * g]);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static int run_parser(parse_ctx *ctx, const uint8_t *in, size_t n, parse_error *err)
{
    switch (ctx->format) {
    case FMT_JSON:
        return parse_json(in, n, &ctx->sc, collect, ctx, err);
    case FMT_LOGFMT:
        return parse_logfmt(in, n, &ctx->sc, collect, ctx, err);
    case FMT_KV:
        return parse_kv(in, n, &ctx->kv, &ctx->sc, collect, ctx, err);
    case FMT_CSV:
        return parse_csv(in, n, &ctx->csv, &ctx->sc, collect, ctx, err);
    case FMT_REGEX:
        return run_regex(ctx, in, n, err);
    case FMT_SYSLOG:
        return parse_syslog(in, n, &ctx->sc, collect, ctx, err);
    case FMT_APACHE_COMMON:
        return parse_access(in, n, PARSE_ACCESS_COMMON, collect, ctx, err);
    case FMT_APACHE_COMBINED:
        return parse_access(in, n, PARSE_ACCESS_COMBINED, collect, ctx, err);
    default:
        return parse_access(in, n, PARSE_ACCESS_NGINX, collect, ctx, err);
    }
}

/* The source field of record i: 1 and its bytes, or 0 when the record has none. */
static int source_of(parse_ctx *ctx, spool_batch *b, size_t i, const spool_record *r,
                     char scratch[SPOOL_FIELD_SCRATCH], const uint8_t **val, size_t *len)
{
    if (ctx->source_kind == SRC_VALUE) {
        if (!r->value || r->value_len < 0) {
            return 0;
        }
        *val = r->value;
        *len = (size_t)r->value_len;
        return 1;
    }
    const char *topic = ctx->source_kind == SRC_TOPIC ? spool_batch_topic(b, i) : NULL;
    return spool_record_field(r, topic, ctx->source, ctx->source_len, scratch, val, len);
}

/* A failed record: counted, then kept with a parse_error header, dropped or
 * dead-lettered. -ENOMEM only. */
static int fail_record(spool_instance *ins, parse_ctx *ctx, spool_batch *b, size_t i,
                       const char *why)
{
    int rc = 0;
    spool_counter_add(ctx->errors, 1);
    if (ctx->on_error == ON_ERROR_DROP) {
        rc = spool_batch_drop(b, i, "parse_error");
        return rc == -ENOMEM ? rc : 0;
    }
    rc = spool_batch_set_header(b, i, "parse_error", why, (int32_t)strlen(why));
    if (rc == -ENOMEM) {
        return rc;
    }
    if (ctx->on_error == ON_ERROR_DEAD_LETTER) {
        rc = spool_batch_set_topic(b, i, ctx->dead_letter_topic);
        if (rc == 0) {
            spool_counter_add(ctx->dead, 1);
        } else if (rc == -ENOENT) {
            spool_log_error(ins,
                            "dead_letter_topic '%s' is not a topic of this service: the record "
                            "stays in its topic with its parse_error header",
                            ctx->dead_letter_topic);
        }
    }
    return rc == -ENOMEM ? rc : 0;
}

/* Removes the source field of record i (keep_original: false). */
static int remove_source(parse_ctx *ctx, spool_batch *b, size_t i)
{
    switch (ctx->source_kind) {
    case SRC_VALUE:
        return spool_batch_set_value(b, i, NULL, 0);
    case SRC_KEY:
        return spool_batch_set_key(b, i, NULL, -1);
    case SRC_HEADER:
        return spool_batch_remove_header(b, i, ctx->source);
    default:
        return 0; /* refused by check() */
    }
}

/* Parses record i and writes its fields; a failure is handled by on_error. 0 or
 * -ENOMEM. */
static int parse_record(spool_instance *ins, parse_ctx *ctx, spool_batch *b, size_t i,
                        const spool_record *view, int64_t now_ms)
{
    spool_record r = *view;
    char scratch[SPOOL_FIELD_SCRATCH], why[256];
    const uint8_t *src;
    size_t len;
    parse_error perr;
    int64_t ts = 0;
    int rc;

    if (!source_of(ctx, b, i, &r, scratch, &src, &len)) {
        snprintf(why, sizeof(why), "%s: the record has no field '%s'", format_names[ctx->format],
                 ctx->source);
        return fail_record(ins, ctx, b, i, why);
    }
    ctx->nfields = 0;
    ctx->buf.len = 0;
    ctx->ts_index = -1;
    ctx->name_error = 0;
    rc = run_parser(ctx, src, len, &perr);
    if (rc == -ENOMEM) {
        return rc;
    }
    if (rc < 0) {
        if (ctx->name_error) {
            snprintf(why, sizeof(why), "%s: a field name holds a NUL byte",
                     format_names[ctx->format]);
        } else if (ctx->format == FMT_REGEX) {
            snprintf(why, sizeof(why), "regex: %s", perr.message); /* no position to give */
        } else {
            snprintf(why, sizeof(why), "%s: %s at byte %zu", format_names[ctx->format],
                     perr.message, perr.offset);
        }
        return fail_record(ins, ctx, b, i, why);
    }
    if (ctx->ts_field) {
        char twhy[160];
        if (ctx->ts_index < 0) {
            snprintf(why, sizeof(why), "timestamp: no field '%s' was parsed", ctx->ts_field);
            return fail_record(ins, ctx, b, i, why);
        }
        const parse_field *fl = &ctx->fields[ctx->ts_index];
        if (parse_time(&ctx->tf, ctx->buf.data + fl->val_off, fl->val_len, now_ms, &ts, twhy,
                       sizeof(twhy)) < 0) {
            snprintf(why, sizeof(why), "timestamp: '%.*s' (field %s): %s",
                     (int)(fl->val_len > 64 ? 64 : fl->val_len),
                     (const char *)ctx->buf.data + fl->val_off, ctx->ts_field, twhy);
            return fail_record(ins, ctx, b, i, why);
        }
        if (ts <= 0) {
            snprintf(why, sizeof(why), "timestamp: field %s is at or before 1970-01-01",
                     ctx->ts_field);
            return fail_record(ins, ctx, b, i, why);
        }
    }
    /* A field is added (cheaper) unless a header of its name may exist: one the record had,
     * or an earlier field of the same name (json duplicates), which it then replaces. */
    for (size_t k = 0; k < ctx->nfields; k++) {
        parse_field *fl = &ctx->fields[k];
        const char *name = (const char *)ctx->buf.data + fl->name_off;
        for (uint32_t h = 0; h < r.header_count && !fl->replaces; h++) {
            fl->replaces = r.headers[h].key_len == fl->name_len &&
                           memcmp(r.headers[h].key, name, fl->name_len) == 0;
        }
        for (size_t e = 0; e < k && !fl->replaces; e++) {
            const parse_field *o = &ctx->fields[e];
            fl->replaces = o->hash == fl->hash && o->name_len == fl->name_len &&
                           memcmp(ctx->buf.data + o->name_off, name, fl->name_len) == 0;
        }
    }
    /* src and r point into the record: nothing below reads them. */
    if (!ctx->keep_original && (rc = remove_source(ctx, b, i)) < 0) {
        return rc == -ENOMEM ? rc : 0;
    }
    /* The new names in one call, then those that replace a header (after: a json
     * duplicate replaces its first occurrence, which must be there by then). */
    size_t nadd = 0;
    for (size_t k = 0; k < ctx->nfields; k++) {
        const parse_field *fl = &ctx->fields[k];
        if (!fl->replaces) {
            spool_header *h = &ctx->added[nadd++];
            h->key = (const char *)ctx->buf.data + fl->name_off;
            h->key_len = (uint32_t)fl->name_len;
            h->value = ctx->buf.data + fl->val_off;
            h->value_len = (int32_t)fl->val_len;
        }
    }
    if ((rc = spool_batch_add_headers(b, i, ctx->added, nadd)) < 0) {
        return rc == -ENOMEM ? rc : 0;
    }
    for (size_t k = 0; nadd < ctx->nfields && k < ctx->nfields; k++) {
        const parse_field *fl = &ctx->fields[k];
        if (fl->replaces &&
            (rc = spool_batch_set_header(b, i, (const char *)ctx->buf.data + fl->name_off,
                                         ctx->buf.data + fl->val_off, (int32_t)fl->val_len)) < 0) {
            return rc == -ENOMEM ? rc : 0;
        }
    }
    if (ctx->ts_field && (rc = spool_batch_set_timestamp(b, i, ts)) < 0) {
        return rc == -ENOMEM ? rc : 0;
    }
    return 0;
}

static int parse_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    parse_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    int64_t now_ms = ctx->ts_field ? spool_now_ms() : 0;
    /* Every record's view first: a view stays valid until its own record changes, and
     * reading them all before the first change builds the batch's header views once,
     * instead of again (growing, copying) after each record's new fields. */
    if (n > ctx->cap_views) {
        spool_record *v = realloc(ctx->views, n * sizeof(*v));
        if (!v) {
            return -ENOMEM;
        }
        ctx->views = v;
        ctx->cap_views = n;
    }
    for (size_t i = 0; i < n; i++) {
        spool_batch_get(b, i, &ctx->views[i]);
    }
    for (size_t i = 0; i < n; i++) {
        int rc = parse_record(ins, ctx, b, i, &ctx->views[i], now_ms);
        if (rc < 0) {
            return rc; /* -ENOMEM: the core logs it; records not reached stay as they are */
        }
    }
    return 0;
}

const spool_plugin spool_plugin_parse = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "parse",
    .description = "parses a field (json, logfmt, kv, csv, regex, syslog, access logs) into "
                   "header fields",
    .options = parse_options,
    .context_size = sizeof(parse_ctx),
    .check = parse_check,
    .init = parse_init,
    .process = parse_process,
    .destroy = parse_destroy,
};
