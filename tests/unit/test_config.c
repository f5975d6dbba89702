/*
 * test_config.c: the YAML tree, units, environment substitution and
 * option-table validation (agent/config), against fixtures in
 * tests/config/good and tests/config/bad and the test's own option tables.
 * Every bad fixture asserts the exact line:column, path and message of
 * every error it must produce (and that there are no others). Leaks are
 * caught by running this binary under ASan (SPOOL_SANITIZE=ON): the module
 * allocates with malloc, not through cmocka.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

/* ---- test option tables: a core "common" table and a plugin table ---- */

typedef struct core_ctx {
    char *name;
    char *topic;
    char *key;
} core_ctx;

typedef struct tail_ctx {
    spool_strlist paths;
    int64_t partitions;
    int verbose;
    int64_t segment_bytes;
    int64_t flush;
    int format;
    spool_strmap headers;
    char *ml_start;
    int64_t ml_timeout;
} tail_ctx;

static const char *const formats[] = {"raw", "json", "logfmt", NULL};

static const spool_option core_opts[] = {
    SPOOL_OPT_STR("name", core_ctx, name, NULL, 0, "instance name"),
    SPOOL_OPT_STR("topic", core_ctx, topic, "default", 0, "topic"),
    SPOOL_OPT_STR("key", core_ctx, key, NULL, 0, "record key template"),
    SPOOL_OPT_END,
};

static const spool_option tail_opts[] = {
    SPOOL_OPT_STRLIST("paths", tail_ctx, paths, 1, "files to follow"),
    SPOOL_OPT_INTEGER("partitions", tail_ctx, partitions, "1", 1, 1024, "partitions"),
    SPOOL_OPT_FLAG("verbose", tail_ctx, verbose, "false", "verbose"),
    SPOOL_OPT_BYTES("segment_bytes", tail_ctx, segment_bytes, "64MiB", 4096, 1LL << 30, "seg"),
    SPOOL_OPT_TIME("flush", tail_ctx, flush, "1s", 0, INT64_MAX, "flush interval"),
    SPOOL_OPT_CHOICE("format", tail_ctx, format, "raw", formats, "format"),
    SPOOL_OPT_STRMAP("headers", tail_ctx, headers, "extra headers"),
    SPOOL_OPT_STR("multiline.start", tail_ctx, ml_start, NULL, 0, "first-line regex"),
    SPOOL_OPT_TIME("multiline.timeout", tail_ctx, ml_timeout, "500ms", 1, 3600000, "flush"),
    SPOOL_OPT_END,
};

static const char *const ignore_keys[] = {"type", NULL};

#define MAX_INPUTS 8

typedef struct loaded {
    spool_cdoc doc;
    spool_errors errs;
    int load_rc;
    size_t n;
    core_ctx core[MAX_INPUTS];
    tail_ctx tail[MAX_INPUTS];
} loaded;

static void fixture_path(const char *rel, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/config/%s", SPOOL_TEST_DATA, rel);
}

/* Loads a fixture and fills every inputs[i] with (core, tail) tables. */
static void load(const char *rel, loaded *L)
{
    char path[1024];
    fixture_path(rel, path, sizeof(path));
    memset(L, 0, sizeof(*L));
    L->load_rc = spool_cdoc_load_file(path, &L->doc, &L->errs);
    const spool_cnode *inputs = spool_cnode_get(L->doc.root, "inputs");
    if (inputs == NULL || inputs->type != SPOOL_CNODE_SEQUENCE) {
        return;
    }
    for (size_t i = 0; i < inputs->count && i < MAX_INPUTS; i++) {
        const spool_option *const tables[] = {core_opts, tail_opts};
        void *const ctxs[] = {&L->core[i], &L->tail[i]};
        char p[64], what[64];
        snprintf(p, sizeof(p), "inputs[%zu]", i);
        snprintf(what, sizeof(what), "inputs[%zu] (tail)", i);
        spool_config_fill(&L->doc, inputs->items[i], tables, ctxs, 2, ignore_keys, p, what,
                          &L->errs);
        L->n++;
    }
}

static void unload(loaded *L)
{
    for (size_t i = 0; i < L->n; i++) {
        spool_options_free(core_opts, &L->core[i]);
        spool_options_free(tail_opts, &L->tail[i]);
    }
    spool_cdoc_free(&L->doc);
    spool_errors_free(&L->errs);
}

/* "LINE:COL: PATH: MESSAGE\n" per error (the file is checked separately). */
static char *render(const spool_errors *e)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    for (size_t i = 0; i < e->count; i++) {
        fprintf(f, "%d:%d: %s: %s\n", e->items[i].line, e->items[i].column, e->items[i].path,
                e->items[i].message);
    }
    fclose(f);
    return out;
}

static void expect_errors(const char *rel, const char *expected)
{
    loaded L;
    load(rel, &L);
    char *got = render(&L.errs);
    if (strcmp(got, expected) != 0) {
        print_error("%s:\n--- expected\n%s--- got\n%s", rel, expected, got);
    }
    assert_string_equal(got, expected);
    /* Every error names the fixture file, except an unreadable file's. */
    char path[1024];
    fixture_path(rel, path, sizeof(path));
    for (size_t i = 0; i < L.errs.count; i++) {
        assert_string_equal(L.errs.items[i].file, path);
    }
    free(got);
    unload(&L);
}

static void expect_clean(const char *rel, loaded *L)
{
    load(rel, L);
    if (L->errs.count > 0) {
        spool_errors_print(&L->errs, stderr);
    }
    assert_int_equal(L->load_rc, 0);
    assert_int_equal(L->errs.count, 0);
}

/* ---- units ---- */

static void test_parse_size(void **state)
{
    static const struct {
        const char *text;
        int64_t v;
    } ok[] = {
        {"0", 0},
        {"4096", 4096},
        {"4096B", 4096},
        {"4096 b", 4096},
        {"4k", 4000},
        {"4K", 4000},
        {"4KB", 4000},
        {"10MB", 10000000},
        {"2G", 2000000000},
        {"1TB", 1000000000000LL},
        {"512KiB", 524288},
        {"512Ki", 524288},
        {"64MiB", 67108864},
        {"64mib", 67108864},
        {"10GiB", 10737418240LL},
        {"1TiB", 1099511627776LL},
        {"1.5GiB", 1610612736LL},
        {"1.5KB", 1500},
        {"0.1KiB", 102}, /* 102.4 rounded down */
        {"9223372036854775807", INT64_MAX},
        {"8388607TiB", 8388607LL << 40},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (spool_parse_size(ok[i].text, &v) != 0 || v != ok[i].v) {
            fail_msg("size '%s': got %lld", ok[i].text, (long long)v);
        }
    }
    static const char *const bad[] = {"",     "MiB", "-1",  "+1",    "1.",    ".5K",
                                      "10XB", "1 2", "1e3", "1,000", "1KiBB", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        if (spool_parse_size(bad[i], &v) != -EINVAL) {
            fail_msg("size '%s' accepted", bad[i]);
        }
    }
    int64_t v;
    assert_int_equal(spool_parse_size("9223372036854775808", &v), -ERANGE);
    assert_int_equal(spool_parse_size("8388608TiB", &v), -ERANGE);
    assert_int_equal(spool_parse_size("99999999999999999999999999999999999", &v), -ERANGE);
}

static void test_parse_duration(void **state)
{
    static const struct {
        const char *text;
        int64_t v;
    } ok[] = {
        {"0", 0},
        {"0s", 0},
        {"250ms", 250},
        {"2s", 2000},
        {"1m", 60000},
        {"1h", 3600000},
        {"1h30m", 5400000},
        {"1h 30m", 5400000},
        {"7d", 604800000},
        {"1w", 604800000},
        {"1.5s", 1500},
        {"250us", 1}, /* rounded up */
        {"1001us", 2},
        {"1m30s500ms", 90500},
        {"106751991167d", 106751991167LL * 86400000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (spool_parse_duration(ok[i].text, &v) != 0 || v != ok[i].v) {
            fail_msg("duration '%s': got %lld", ok[i].text, (long long)v);
        }
    }
    static const char *const bad[] = {"",   "5",   "10",   "s",    "5S", "5 seconds",
                                      "1H", "-1s", "5sec", "1h30", "0.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        if (spool_parse_duration(bad[i], &v) != -EINVAL) {
            fail_msg("duration '%s' accepted", bad[i]);
        }
    }
    int64_t v;
    assert_int_equal(spool_parse_duration("106751991168d", &v), -ERANGE);
    assert_int_equal(spool_parse_duration("106751991167d 1d", &v), -ERANGE);
}

static void test_parse_bool(void **state)
{
    static const char *const yes[] = {"true", "True", "YES", "on"};
    static const char *const no[] = {"false", "FALSE", "no", "Off"};
    int b;
    for (size_t i = 0; i < 4; i++) {
        b = -1;
        assert_int_equal(spool_parse_bool(yes[i], &b), 0);
        assert_int_equal(b, 1);
        assert_int_equal(spool_parse_bool(no[i], &b), 0);
        assert_int_equal(b, 0);
    }
    assert_int_equal(spool_parse_bool("1", &b), -EINVAL);
    assert_int_equal(spool_parse_bool("y", &b), -EINVAL);
    assert_int_equal(spool_parse_bool("", &b), -EINVAL);
}

static void test_format_units(void **state)
{
    char buf[64];
    spool_format_size(67108864, buf, sizeof(buf));
    assert_string_equal(buf, "64MiB");
    spool_format_size(10000000000LL, buf, sizeof(buf));
    assert_string_equal(buf, "10GB");
    spool_format_size(1500, buf, sizeof(buf));
    assert_string_equal(buf, "1500B");
    spool_format_size(0, buf, sizeof(buf));
    assert_string_equal(buf, "0B");
    spool_format_duration(5400000, buf, sizeof(buf));
    assert_string_equal(buf, "1h30m");
    spool_format_duration(604800000, buf, sizeof(buf));
    assert_string_equal(buf, "7d");
    spool_format_duration(1500, buf, sizeof(buf));
    assert_string_equal(buf, "1s500ms");
    spool_format_duration(0, buf, sizeof(buf));
    assert_string_equal(buf, "0s");
    /* Round trip. */
    int64_t v;
    assert_int_equal(spool_parse_duration("1s500ms", &v), 0);
    assert_int_equal(v, 1500);
}

static void test_did_you_mean(void **state)
{
    const char *const c[] = {"paths", "partitions", "format", "name"};
    assert_string_equal(spool_did_you_mean("pahts", c, 4), "paths");
    assert_string_equal(spool_did_you_mean("path", c, 4), "paths");
    assert_string_equal(spool_did_you_mean("Format", c, 4), "format");
    assert_string_equal(spool_did_you_mean("partitons", c, 4), "partitions");
    assert_null(spool_did_you_mean("xyzzy", c, 4));
    assert_null(spool_did_you_mean("q", c, 4));
}

/* ---- good fixtures ---- */

static void test_good_types(void **state)
{
    loaded L;
    expect_clean("good/types.yaml", &L);
    assert_int_equal(L.n, 1);
    assert_string_equal(L.core[0].name, "app-logs");
    assert_string_equal(L.core[0].topic, "app");
    assert_string_equal(L.core[0].key, "{{ host }}");
    tail_ctx *t = &L.tail[0];
    assert_int_equal(t->paths.count, 2);
    assert_string_equal(t->paths.items[0], "/var/log/app/*.log");
    assert_string_equal(t->paths.items[1], "/var/log/other.log");
    assert_int_equal(t->partitions, 12);
    assert_int_equal(t->verbose, 1);
    assert_int_equal(t->segment_bytes, 64 << 20);
    assert_int_equal(t->flush, 250);
    assert_int_equal(t->format, 1);
    assert_int_equal(t->headers.count, 2);
    assert_string_equal(t->headers.keys[0], "env");
    assert_string_equal(t->headers.values[0], "prod");
    assert_string_equal(t->headers.keys[1], "team");
    assert_string_equal(t->headers.values[1], "core");
    assert_null(t->ml_start);
    assert_int_equal(t->ml_timeout, 500);
    unload(&L);
}

static void test_good_units(void **state)
{
    loaded L;
    expect_clean("good/units.yaml", &L);
    assert_int_equal(L.n, 4);
    assert_int_equal(L.tail[0].segment_bytes, 1572864);
    assert_int_equal(L.tail[0].flush, 5400000);
    assert_int_equal(L.tail[1].segment_bytes, 10000000);
    assert_int_equal(L.tail[1].flush, 7 * 86400000LL);
    assert_int_equal(L.tail[2].segment_bytes, 4096);
    assert_int_equal(L.tail[2].flush, 0);
    assert_int_equal(L.tail[3].segment_bytes, 8000);
    assert_int_equal(L.tail[3].flush, 7 * 86400000LL);
    unload(&L);
}

static void test_good_env(void **state)
{
    setenv("SPOOL_TEST_NAME", "web", 1);
    setenv("SPOOL_TEST_DIR", "/srv/logs", 1);
    setenv("SPOOL_TEST_PARTS", "3", 1);
    setenv("SPOOL_TEST_EMPTY", "", 1);
    unsetenv("SPOOL_TEST_UNSET_VAR");
    loaded L;
    expect_clean("good/env.yaml", &L);
    assert_string_equal(L.core[0].name, "web");
    assert_string_equal(L.core[0].topic, "fallback");
    assert_string_equal(L.core[0].key, "{{ host }}-empty");
    assert_int_equal(L.tail[0].paths.count, 2);
    assert_string_equal(L.tail[0].paths.items[0], "/srv/logs/web.log");
    assert_string_equal(L.tail[0].paths.items[1], "${NOT_A_VAR} costs $5");
    assert_int_equal(L.tail[0].partitions, 3);
    unload(&L);
}

static void test_good_nested(void **state)
{
    loaded L;
    expect_clean("good/nested.yaml", &L);
    assert_string_equal(L.tail[0].ml_start, "^\\d{4}-");
    assert_int_equal(L.tail[0].ml_timeout, 2000);
    assert_string_equal(L.tail[1].ml_start, "^\\S");
    assert_int_equal(L.tail[1].ml_timeout, 500);
    int line = 0, col = 0;
    const spool_cnode *in0 = spool_cnode_get(L.doc.root, "inputs")->items[0];
    assert_int_equal(spool_config_option_pos(in0, "multiline.timeout", &line, &col), 0);
    assert_int_equal(line, 6);
    assert_int_equal(col, 16);
    assert_int_equal(spool_config_option_pos(in0, "paths", &line, &col), 0);
    assert_int_equal(line, 3);
    assert_int_equal(col, 12);
    assert_int_equal(spool_config_option_pos(in0, "multiline.nope", &line, &col), -ENOENT);
    assert_int_equal(spool_config_option_pos(in0, "paths.x", &line, &col), -ENOENT);
    unload(&L);
}

static void test_good_lists(void **state)
{
    loaded L;
    expect_clean("good/lists.yaml", &L);
    assert_int_equal(L.tail[0].paths.count, 1);
    assert_string_equal(L.tail[0].paths.items[0], "/var/log/one.log");
    assert_int_equal(L.tail[1].paths.count, 3);
    assert_string_equal(L.tail[1].paths.items[2], "/var/log/c.log");
    assert_int_equal(L.tail[2].paths.count, 1);
    assert_string_equal(L.tail[2].paths.items[0], "*.log");
    unload(&L);
}

static void test_good_maps(void **state)
{
    loaded L;
    expect_clean("good/maps.yaml", &L);
    assert_int_equal(L.tail[0].headers.count, 3);
    assert_string_equal(L.tail[0].headers.keys[1], "region");
    assert_string_equal(L.tail[0].headers.values[1], "eu-west-1");
    assert_string_equal(L.tail[0].headers.values[2], "");
    assert_int_equal(L.tail[1].headers.count, 0);
    assert_null(L.tail[1].headers.keys);
    unload(&L);
}

static void test_good_defaults(void **state)
{
    loaded L;
    expect_clean("good/defaults.yaml", &L);
    assert_null(L.core[0].name);
    assert_string_equal(L.core[0].topic, "default");
    assert_int_equal(L.tail[0].partitions, 1);
    assert_int_equal(L.tail[0].verbose, 0);
    assert_int_equal(L.tail[0].segment_bytes, 64 << 20);
    assert_int_equal(L.tail[0].flush, 1000);
    assert_int_equal(L.tail[0].format, 0);
    assert_int_equal(L.tail[0].ml_timeout, 500);
    unload(&L);
}

/* ---- bad fixtures: one error kind each ---- */

static void test_bad_unknown_key(void **state)
{
    expect_errors("bad/unknown_key.yaml",
                  "3:5: inputs[0].pahts: unknown key 'pahts' in inputs[0] (tail), "
                  "did you mean 'paths'?\n"
                  "2:5: inputs[0]: missing required option 'paths' in inputs[0] (tail)\n");
    expect_errors("bad/unknown_nested_key.yaml",
                  "5:7: inputs[0].multiline.strat: unknown key 'strat' in 'multiline' of "
                  "inputs[0] (tail), did you mean 'start'?\n");
}

static void test_bad_wrong_type(void **state)
{
    expect_errors("bad/not_a_number.yaml", "4:17: inputs[0].partitions: not a number: 'abc'\n");
    expect_errors("bad/wrong_type_mapping.yaml",
                  "4:11: inputs[0].name: expected a string, got a mapping\n");
    expect_errors("bad/not_a_bool.yaml",
                  "4:14: inputs[0].verbose: not a boolean: 'maybe' (use true or false)\n");
    expect_errors("bad/nested_not_mapping.yaml",
                  "4:16: inputs[0].multiline: expected a mapping, got a scalar\n");
    expect_errors("bad/map_not_mapping.yaml",
                  "4:14: inputs[0].headers: expected a mapping of strings to strings, "
                  "got a list\n");
    expect_errors("bad/number_too_large.yaml",
                  "4:17: inputs[0].partitions: number too large: '99999999999999999999'\n");
}

static void test_bad_missing_required(void **state)
{
    expect_errors("bad/missing_required.yaml",
                  "2:5: inputs[0]: missing required option 'paths' in inputs[0] (tail)\n");
    expect_errors("bad/required_null.yaml",
                  "3:11: inputs[0].paths: missing value for required option 'paths'\n");
    expect_errors("bad/required_empty_list.yaml",
                  "3:12: inputs[0].paths: option 'paths' needs at least one value\n");
}

static void test_bad_unit(void **state)
{
    expect_errors("bad/bad_size_unit.yaml",
                  "4:20: inputs[0].segment_bytes: bad size '10XB' (units: B, KB, MB, GB, TB = "
                  "1000^n; KiB, MiB, GiB, TiB = 1024^n; e.g. 64MiB)\n");
    expect_errors("bad/duration_no_unit.yaml",
                  "4:12: inputs[0].flush: duration '5' needs a unit, e.g. 5s\n");
    expect_errors("bad/bad_duration_unit.yaml",
                  "4:12: inputs[0].flush: bad duration '5 seconds' (units: us, ms, s, m, h, d, "
                  "w; e.g. 1h30m)\n");
}

static void test_bad_enum(void **state)
{
    expect_errors("bad/bad_enum.yaml",
                  "4:13: inputs[0].format: invalid value 'jsn' (expected one of: raw, json, "
                  "logfmt), did you mean 'json'?\n");
}

static void test_bad_out_of_range(void **state)
{
    expect_errors("bad/out_of_range.yaml",
                  "4:17: inputs[0].partitions: out of range: '0' (must be between 1 and 1024)\n");
    expect_errors("bad/size_out_of_range.yaml",
                  "4:20: inputs[0].segment_bytes: out of range: '2GiB' (must be between 4KiB "
                  "and 1GiB)\n");
}

static void test_bad_duplicate_key(void **state)
{
    expect_errors("bad/duplicate_key.yaml",
                  "5:5: inputs[0].paths: duplicate key 'paths' (first at line 3)\n");
    /* The first value wins. */
    loaded L;
    load("bad/duplicate_key.yaml", &L);
    assert_int_equal(L.load_rc, -EINVAL);
    assert_non_null(L.doc.root);
    assert_string_equal(L.tail[0].paths.items[0], "/x");
    unload(&L);
}

static void test_bad_invalid_yaml(void **state)
{
    expect_errors("bad/invalid_yaml.yaml",
                  "4:4: : invalid YAML: did not find expected '-' indicator (while parsing a "
                  "block collection at line 2, column 3)\n");
    loaded L;
    load("bad/invalid_yaml.yaml", &L);
    assert_int_equal(L.load_rc, -EINVAL);
    assert_null(L.doc.root);
    unload(&L);
}

static void test_bad_unset_env(void **state)
{
    unsetenv("SPOOL_TEST_SURELY_UNSET");
    expect_errors("bad/unset_env.yaml",
                  "3:17: inputs[0].paths[1]: environment variable 'SPOOL_TEST_SURELY_UNSET' is "
                  "not set (use ${SPOOL_TEST_SURELY_UNSET:-default} for a default)\n");
}

static void test_bad_alias(void **state)
{
    expect_errors("bad/alias.yaml",
                  "7:12: inputs[2].paths: alias '*q' names no anchor defined before it ('&q')\n");
}

/* Anchors and aliases: deep copies (a chain reused by two inputs), the
 * anchor's positions, the latest anchor of a name, the expansion bound. */
static void test_aliases(void **state)
{
    (void)state;
    static const char text[] = "chain: &c\n"
                               "  - {type: filter, drop_when: 'a == 1'}\n"
                               "  - type: set\n"
                               "inputs:\n"
                               "  - processors: *c\n"
                               "  - processors: *c\n"
                               "x: &s one\n"
                               "y: *s\n"
                               "x2: &s two\n"
                               "y2: *s\n";
    spool_cdoc doc;
    spool_errors errs = {0};
    assert_int_equal(spool_cdoc_load_buffer("a.yaml", text, strlen(text), &doc, &errs), 0);
    const spool_cnode *in = spool_cnode_get(doc.root, "inputs");
    for (size_t i = 0; i < 2; i++) {
        const spool_cnode *chain = spool_cnode_get(in->items[i], "processors");
        assert_int_equal(chain->type, SPOOL_CNODE_SEQUENCE);
        assert_int_equal(chain->count, 2);
        const spool_cnode *dw = spool_cnode_get(chain->items[0], "drop_when");
        assert_string_equal(dw->value, "a == 1");
        assert_int_equal(dw->line, 2);
        assert_int_equal(dw->column, 31);
        assert_true(dw->verbatim);
        assert_string_equal(spool_cnode_get(chain->items[1], "type")->value, "set");
    }
    assert_ptr_not_equal(spool_cnode_get(in->items[0], "processors"),
                         spool_cnode_get(in->items[1], "processors"));
    assert_string_equal(spool_cnode_get(doc.root, "y")->value, "one");
    assert_string_equal(spool_cnode_get(doc.root, "y2")->value, "two");
    spool_cdoc_free(&doc);

    /* "Billion laughs": each level doubles; the copies stop at the bound. */
    char big[4096];
    size_t len = (size_t)snprintf(big, sizeof(big), "l0: &l0 [a, a]\n");
    for (int i = 1; i < 30; i++) {
        len += (size_t)snprintf(big + len, sizeof(big) - len, "l%d: &l%d [*l%d, *l%d]\n", i, i,
                                i - 1, i - 1);
    }
    assert_int_equal(spool_cdoc_load_buffer("b.yaml", big, len, &doc, &errs), -EINVAL);
    assert_true(errs.count >= 1);
    assert_non_null(strstr(errs.items[0].message, "aliases expand to more than 100000 nodes"));
    spool_errors_free(&errs);
    spool_cdoc_free(&doc);
}

static void test_bad_unreadable(void **state)
{
    loaded L;
    load("bad/does-not-exist.yaml", &L);
    assert_int_equal(L.load_rc, -ENOENT);
    assert_null(L.doc.root);
    assert_int_equal(L.errs.count, 1);
    char path[1024], msg[1200];
    fixture_path("bad/does-not-exist.yaml", path, sizeof(path));
    snprintf(msg, sizeof(msg), "cannot read %s: No such file or directory", path);
    assert_string_equal(L.errs.items[0].message, msg);
    assert_null(L.errs.items[0].file);
    assert_int_equal(L.errs.items[0].line, 0);
    unload(&L);
}

/* ---- all errors of a file in one run ---- */

static void test_all_errors_reported(void **state)
{
    expect_errors("bad/three_errors.yaml",
                  "3:5: inputs[0].pahts: unknown key 'pahts' in inputs[0] (tail), did you mean "
                  "'paths'?\n"
                  "4:20: inputs[0].segment_bytes: bad size '64 megs' (units: B, KB, MB, GB, TB "
                  "= 1000^n; KiB, MiB, GiB, TiB = 1024^n; e.g. 64MiB)\n"
                  "5:13: inputs[0].format: invalid value 'xml' (expected one of: raw, json, "
                  "logfmt)\n"
                  "2:5: inputs[0]: missing required option 'paths' in inputs[0] (tail)\n");
    unsetenv("SPOOL_TEST_SURELY_UNSET");
    expect_errors("bad/many_errors.yaml",
                  "3:11: inputs[0].name: environment variable 'SPOOL_TEST_SURELY_UNSET' is not "
                  "set (use ${SPOOL_TEST_SURELY_UNSET:-default} for a default)\n"
                  "5:5: inputs[0].paths: duplicate key 'paths' (first at line 4)\n"
                  "6:12: inputs[0].flush: duration '10' needs a unit, e.g. 10s\n"
                  "8:14: inputs[1].verbose: not a boolean: '2' (use true or false)\n"
                  "7:5: inputs[1]: missing required option 'paths' in inputs[1] (tail)\n");
}

/* ---- buffers, substitution details, printing, sorting ---- */

static void test_substitution_buffer(void **state)
{
    setenv("SPOOL_T_A", "alpha", 1);
    setenv("SPOOL_T_B", "beta", 1);
    unsetenv("SPOOL_T_NONE");
    static const char text[] = "a: ${SPOOL_T_A}${SPOOL_T_B}-${SPOOL_T_NONE:-x}$\n"
                               "b: $SPOOL_T_A $${SPOOL_T_A} $$ {{ path }}\n"
                               "${SPOOL_T_A}: key not substituted\n"
                               "c: [ok, \"${SPOOL_T_A\"]\n"
                               "d: ${1BAD}\n"
                               "e: ${SPOOL_T_A:+x}\n";
    spool_cdoc doc;
    spool_errors errs = {0};
    assert_int_equal(spool_cdoc_load_buffer("mem.yaml", text, strlen(text), &doc, &errs), -EINVAL);
    assert_non_null(doc.root);
    assert_string_equal(spool_cnode_get(doc.root, "a")->value, "alphabeta-x$");
    assert_string_equal(spool_cnode_get(doc.root, "b")->value,
                        "$SPOOL_T_A ${SPOOL_T_A} $$ {{ path }}");
    assert_non_null(spool_cnode_get(doc.root, "${SPOOL_T_A}"));
    const spool_cnode *c = spool_cnode_get(doc.root, "c");
    assert_int_equal(c->items[1]->bad, 1);
    assert_int_equal(spool_cnode_get(doc.root, "d")->bad, 1);
    char *got = render(&errs);
    assert_string_equal(got, "4:9: c[1]: unterminated '${' (write '$${' for a literal '${')\n"
                             "5:4: d: bad substitution '${1BAD}' (use ${VAR} or ${VAR:-default})\n"
                             "6:4: e: bad substitution '${SPOOL_T_A:+x}' (use ${VAR} or "
                             "${VAR:-default})\n");
    free(got);
    spool_errors_free(&errs);
    spool_cdoc_free(&doc);
}

static void test_tree_positions(void **state)
{
    static const char text[] = "# comment\n"
                               "top:\n"
                               "  list:\n"
                               "    - one\n"
                               "    - \"3\"\n"
                               "  flow: {k: v, n: ~}\n"
                               "  empty:\n";
    spool_cdoc doc;
    spool_errors errs = {0};
    assert_int_equal(spool_cdoc_load_buffer("mem.yaml", text, strlen(text), &doc, &errs), 0);
    const spool_cnode *top = spool_cnode_get(doc.root, "top");
    assert_int_equal(top->type, SPOOL_CNODE_MAPPING);
    assert_int_equal(doc.root->key_lines[0], 2);
    assert_int_equal(doc.root->key_columns[0], 1);
    assert_int_equal(top->key_lines[1], 6);
    assert_int_equal(top->key_columns[1], 3);
    const spool_cnode *list = spool_cnode_get(top, "list");
    assert_int_equal(list->type, SPOOL_CNODE_SEQUENCE);
    assert_int_equal(list->count, 2);
    assert_int_equal(list->items[1]->line, 5);
    assert_int_equal(list->items[1]->column, 7);
    assert_int_equal(list->items[1]->quoted, 1);
    assert_int_equal(list->items[0]->quoted, 0);
    const spool_cnode *flow = spool_cnode_get(top, "flow");
    assert_int_equal(flow->line, 6);
    assert_int_equal(flow->column, 9);
    assert_int_equal(spool_cnode_get(flow, "n")->is_null, 1);
    assert_int_equal(spool_cnode_get(flow, "k")->is_null, 0);
    assert_int_equal(spool_cnode_get(top, "empty")->is_null, 1);
    assert_null(spool_cnode_get(top, "missing"));
    assert_null(spool_cnode_get(list, "one"));
    spool_cdoc_free(&doc);

    /* Empty document; second document rejected. */
    assert_int_equal(spool_cdoc_load_buffer("e.yaml", "", 0, &doc, &errs), 0);
    assert_null(doc.root);
    spool_cdoc_free(&doc);
    static const char two[] = "a: 1\n---\nb: 2\n";
    assert_int_equal(spool_cdoc_load_buffer("two.yaml", two, strlen(two), &doc, &errs), -EINVAL);
    assert_non_null(spool_cnode_get(doc.root, "a"));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].message, "only one YAML document per file is supported");
    assert_int_equal(errs.items[0].line, 2);
    spool_cdoc_free(&doc);
    spool_errors_free(&errs);
}

static void test_fill_edge_cases(void **state)
{
    static const char text[] = "plain: 1\n"
                               "list_item_map:\n"
                               "  paths: [/a, {x: 1}]\n"
                               "  headers: {a: [1]}\n"
                               "scalar_entry: oops\n";
    spool_cdoc doc;
    spool_errors errs = {0};
    assert_int_equal(spool_cdoc_load_buffer("m.yaml", text, strlen(text), &doc, &errs), 0);
    tail_ctx t;
    memset(&t, 0, sizeof(t));
    const spool_option *const tables[] = {tail_opts};
    void *const ctxs[] = {&t};
    assert_int_equal(spool_config_fill(&doc, spool_cnode_get(doc.root, "list_item_map"), tables,
                                       ctxs, 1, NULL, "x", NULL, &errs),
                     2);
    assert_int_equal(spool_config_fill(&doc, spool_cnode_get(doc.root, "scalar_entry"), tables,
                                       ctxs, 1, NULL, "y", "the entry", &errs),
                     1);
    /* A NULL map: only the required option is missing; NULL ctx validates only. */
    assert_int_equal(spool_config_fill(&doc, NULL, tables, NULL, 1, NULL, "", NULL, &errs), 1);
    char *got = render(&errs);
    assert_string_equal(got, "3:15: x.paths[1]: expected a string in list 'paths', got a mapping\n"
                             "4:16: x.headers.a: expected a string value, got a list\n"
                             "5:15: y: expected a mapping, got a scalar\n"
                             "0:0: : missing required option 'paths'\n");
    free(got);
    spool_options_free(tail_opts, &t);

    /* A bad default in a table is reported. */
    static const spool_option broken[] = {
        SPOOL_OPT_TIME("every", tail_ctx, flush, "10", 0, INT64_MAX, "bad default"),
        SPOOL_OPT_END,
    };
    const spool_option *const btables[] = {broken};
    spool_errors_free(&errs);
    assert_int_equal(spool_config_fill(&doc, doc.root, btables, NULL, 1, NULL, "", NULL, &errs),
                     4); /* three unknown keys and the default */
    assert_string_equal(errs.items[3].message,
                        "bad default '10' for option 'every': duration '10' needs a unit, e.g. "
                        "10s");

    /* Printing and sorting. */
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    spool_errors_sort(&errs);
    spool_errors_print(&errs, f);
    spool_errors_free(&errs);
    spool_errors_add(&errs, NULL, 0, 0, NULL, "no position");
    spool_errors_add(&errs, "f.yaml", 3, 0, "", "line only");
    spool_errors_add(&errs, "f.yaml", 0, 0, "p", "file only");
    spool_errors_print(&errs, f);
    fclose(f);
    assert_string_equal(out, "m.yaml:1:1: plain: unknown key 'plain'\n"
                             "m.yaml:1:1: every: bad default '10' for option 'every': duration "
                             "'10' needs a unit, e.g. 10s\n"
                             "m.yaml:2:1: list_item_map: unknown key 'list_item_map'\n"
                             "m.yaml:5:1: scalar_entry: unknown key 'scalar_entry'\n"
                             "no position\n"
                             "f.yaml:3: line only\n"
                             "f.yaml: p: file only\n");
    free(out);
    spool_errors_free(&errs);
    spool_errors_free(NULL);
    spool_cdoc_free(&doc);
    spool_cdoc_free(NULL);
}

/* ---- tables (lists of mappings) and positions inside values ---- */

typedef struct route_ctx {
    spool_strmaplist rules;
    char *dflt;
} route_ctx;

static const spool_option route_opts[] = {
    SPOOL_OPT_MAPLIST("rules", route_ctx, rules, 1, "ordered rules"),
    SPOOL_OPT_STR("default", route_ctx, dflt, NULL, 0, "topic"),
    SPOOL_OPT_END,
};

static void test_tables_and_value_pos(void **state)
{
    (void)state;
    static const char text[] = "good:\n"
                               "  rules:\n"
                               "    - {when: 'status >= 500', topic: errors}\n"
                               "    - when: path =~ \"^/api\"\n"
                               "      topic: api\n"
                               "  default: x\n"
                               "bad:\n"
                               "  rules: [{when: [1]}, oops]\n"
                               "empty:\n"
                               "  rules: []\n"
                               "block:\n"
                               "  rules:\n"
                               "    - when: |\n"
                               "        a == 1\n"
                               "    - when: \"a\\tb\"\n";
    spool_cdoc doc;
    spool_errors errs = {0};
    route_ctx r;
    memset(&r, 0, sizeof(r));
    const spool_option *const tables[] = {route_opts};
    void *const ctxs[] = {&r};
    assert_int_equal(spool_cdoc_load_buffer("t.yaml", text, strlen(text), &doc, &errs), 0);
    const spool_cnode *good = spool_cnode_get(doc.root, "good");
    assert_int_equal(spool_config_fill(&doc, good, tables, ctxs, 1, NULL, "g", NULL, &errs), 0);
    assert_int_equal(r.rules.count, 2);
    assert_int_equal(r.rules.items[0].count, 2);
    assert_string_equal(r.rules.items[0].keys[0], "when");
    assert_string_equal(r.rules.items[0].values[0], "status >= 500");
    assert_string_equal(r.rules.items[1].values[0], "path =~ \"^/api\"");
    assert_string_equal(r.rules.items[1].keys[1], "topic");
    assert_string_equal(r.rules.items[1].values[1], "api");

    /* Positions: an item's value, and a byte inside it (quoted and plain). */
    int line = 0, col = 0;
    assert_int_equal(spool_config_option_pos(good, "rules[1].topic", &line, &col), 0);
    assert_int_equal(line, 5);
    assert_int_equal(col, 14);
    assert_int_equal(spool_config_value_pos(good, "rules[0].when", 7, &line, &col), 1);
    assert_int_equal(line, 3);
    assert_int_equal(col, 14 + 1 + 7); /* after the opening quote */
    assert_int_equal(spool_config_value_pos(good, "rules[1].when", 5, &line, &col), 1);
    assert_int_equal(line, 4);
    assert_int_equal(col, 13 + 5);
    assert_int_equal(spool_config_value_pos(good, "rules[2].when", 0, &line, &col), -ENOENT);
    assert_int_equal(spool_config_value_pos(good, "rules[x].when", 0, &line, &col), -ENOENT);
    assert_int_equal(spool_config_value_pos(good, "default", 0, &line, &col), 1);
    /* Block scalars and escapes: the value's start, not exact. */
    const spool_cnode *block = spool_cnode_get(doc.root, "block");
    assert_int_equal(spool_config_value_pos(block, "rules[0].when", 3, &line, &col), 0);
    assert_int_equal(line, 13);
    assert_int_equal(col, 13);
    assert_int_equal(spool_config_value_pos(block, "rules[1].when", 2, &line, &col), 0);
    assert_int_equal(line, 15);
    assert_int_equal(col, 13);

    /* Errors: a non-scalar value in an item, an item that is no mapping, an
     * empty required table, a table given as a scalar. */
    assert_int_equal(spool_config_fill(&doc, spool_cnode_get(doc.root, "bad"), tables, ctxs, 1,
                                       NULL, "b", NULL, &errs),
                     2);
    assert_int_equal(spool_config_fill(&doc, spool_cnode_get(doc.root, "empty"), tables, ctxs, 1,
                                       NULL, "e", NULL, &errs),
                     1);
    char *got = render(&errs);
    assert_string_equal(got, "8:18: b.rules[0].when: expected a string value, got a list\n"
                             "8:24: b.rules[1]: expected a mapping in list 'rules', got a scalar\n"
                             "10:10: e.rules: option 'rules' needs at least one item\n");
    free(got);
    spool_options_free(route_opts, &r);
    assert_int_equal(r.rules.count, 0);
    assert_null(r.rules.items);
    spool_errors_free(&errs);
    spool_cdoc_free(&doc);
}

/* ---- addresses (checks.c) ---- */

static void expect_address(const char *text, int flags, const char *want_why)
{
    char why[512];
    int rc = spool__address_valid(text, flags, why, sizeof(why));
    if (!want_why) {
        if (rc != 0) {
            print_error("'%s' refused: %s\n", text, why);
        }
        assert_int_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, -EINVAL);
    if (strcmp(why, want_why) != 0) {
        print_error("'%s':\n  expected %s\n  got      %s\n", text, want_why, why);
    }
    assert_string_equal(why, want_why);
}

static void test_addresses(void **state)
{
    (void)state;
    const int L = SPOOL_ADDR_LISTEN, O = SPOOL_ADDR_PORT_OPTIONAL;
    expect_address("127.0.0.1:2020", 0, NULL);
    expect_address("0.0.0.0:0", L, NULL);
    expect_address(":8443", L, NULL);
    expect_address("[::1]:8443", 0, NULL);
    expect_address("[::]:80", L, NULL);
    expect_address("aggregator.example.com:443", 0, NULL);
    expect_address("kafka-1", O, NULL);
    expect_address("[fe80::1]", O, NULL);
    expect_address("999.1.1.1:99999", L,
                   "'999.1.1.1' is not a valid IPv4 address; port 99999 is out of range "
                   "(0 to 65535)");
    expect_address("1.2.3:80", 0, "'1.2.3' is not a valid IPv4 address");
    expect_address("host:0", 0, "port 0 is out of range (1 to 65535)");
    expect_address("host:http", 0, "port 'http' is not a number");
    expect_address("host:", 0, "port '' is not a number");
    expect_address("host:-1", 0, "port '-1' is not a number");
    expect_address(":80", 0, "no host before ':'");
    expect_address("localhost", 0, "no port, expected host:port");
    expect_address("::1:80", 0, "an IPv6 address goes in brackets, as [::1]:port");
    expect_address("[::1:80", 0, "missing ']' after the IPv6 address");
    expect_address("[::1]80", 0, "expected [IPv6]:port");
    expect_address("[1.2.3.4]:80", 0, "'1.2.3.4' is not a valid IPv6 address");
    expect_address("bad host:80", 0, "'bad host' is not a valid host name");
    expect_address("-lead.example:80", 0, "'-lead.example' is not a valid host name");
    expect_address("a..b:80", 0, "'a..b' is not a valid host name");
    expect_address("", 0, "empty address, expected host:port");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_format_units),
        cmocka_unit_test(test_did_you_mean),
        cmocka_unit_test(test_good_types),
        cmocka_unit_test(test_good_units),
        cmocka_unit_test(test_good_env),
        cmocka_unit_test(test_good_nested),
        cmocka_unit_test(test_good_lists),
        cmocka_unit_test(test_good_maps),
        cmocka_unit_test(test_good_defaults),
        cmocka_unit_test(test_bad_unknown_key),
        cmocka_unit_test(test_bad_wrong_type),
        cmocka_unit_test(test_bad_missing_required),
        cmocka_unit_test(test_bad_unit),
        cmocka_unit_test(test_bad_enum),
        cmocka_unit_test(test_bad_out_of_range),
        cmocka_unit_test(test_bad_duplicate_key),
        cmocka_unit_test(test_bad_invalid_yaml),
        cmocka_unit_test(test_bad_unset_env),
        cmocka_unit_test(test_bad_alias),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_bad_unreadable),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_substitution_buffer),
        cmocka_unit_test(test_tree_positions),
        cmocka_unit_test(test_fill_edge_cases),
        cmocka_unit_test(test_tables_and_value_pos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
