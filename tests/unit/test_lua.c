/*
 * test_lua.c: the `lua` processor (processors/lua) through its plugin
 * struct, configured from YAML as `spool check` and `spool run` load it:
 * the contract (keep, change each part, drop, split into two, replace,
 * batch mode), errors (runtime error -> lua_error header, dead letter, a bad
 * answer, an unknown topic, counted), the sandbox (no io, os.execute,
 * require, dofile, binary chunks; unsafe opens them), the instruction and
 * memory limits, and config errors with positions.
 *
 * spool-test-requires: lua
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "core.h"
#include "metrics.h"

static const spool_plugin fake_input = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "fake_in",
};

typedef struct lt {
    char dir[64];
    char path[128];
    spool_service_conf conf;
    spool_errors errs;
    int nerr;
    spool_service svc;
    spool_instance *in; /* the input the batches come from, topic "app" */
    spool_instance *pi; /* the lua processor */
} lt;

/* Loads a service whose one processor is `type: lua` with `opts` (YAML
 * lines, indented by 4). */
static lt *lt_load(const char *opts)
{
    lt *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    snprintf(t->dir, sizeof(t->dir), "/tmp/spool-lua-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/spool.yaml", t->dir);
    FILE *f = fopen(t->path, "w");
    assert_non_null(f);
    fprintf(f,
            "service:\n  data_dir: %s/data\n"
            "topics:\n  app: {}\n  other: {}\n  dlq: {}\n"
            "inputs:\n  - type: stdin\n    name: in\n    topic: app\n"
            "processors:\n  - type: lua\n    name: lua1\n%s\n"
            "outputs:\n  - type: file\n    name: out\n    topics: [app]\n    path: %s/out\n",
            t->dir, opts, t->dir);
    fclose(f);
    t->nerr = spool_service_conf_load(t->path, &t->conf, &t->errs);
    return t;
}

static void lt_free(lt *t)
{
    if (t->pi && t->pi->plugin->destroy && t->svc.conf) {
        t->pi->plugin->destroy(t->pi, t->pi->ctx);
    }
    if (t->in) {
        spool__instance_free(t->in);
    }
    spool_service_conf_free(&t->conf);
    spool_errors_free(&t->errs);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
    assert_int_equal(system(cmd), 0);
    free(t);
}

static void print_errors(lt *t)
{
    for (size_t i = 0; i < t->errs.count; i++) {
        fprintf(stderr, "config error: %d:%d %s: %s\n", t->errs.items[i].line,
                t->errs.items[i].column, t->errs.items[i].path, t->errs.items[i].message);
    }
}

/* Loads and inits the processor (the config must be valid). */
static lt *lt_start(const char *opts)
{
    lt *t = lt_load(opts);
    if (t->nerr) {
        print_errors(t);
    }
    assert_int_equal(t->nerr, 0);
    assert_int_equal(t->conf.nprocessors, 1);
    t->svc.conf = &t->conf;
    t->pi = t->conf.processors[0];
    t->pi->svc = &t->svc;
    assert_int_equal(spool__instance_metrics(t->pi), 0);
    assert_int_equal(t->pi->plugin->init(t->pi, t->pi->ctx), 0);
    t->in = spool__instance_new(&fake_input, SPOOL_PLUGIN_INPUT, 0, "in");
    assert_non_null(t->in);
    t->in->svc = &t->svc;
    t->in->topic = 0; /* app */
    assert_string_equal(t->conf.topics[0].name, "app");
    return t;
}

static void add(spool_batch *b, const char *key, const char *value, const char *hk, const char *hv)
{
    spool_header h = {hk, hk ? (uint32_t)strlen(hk) : 0, (const uint8_t *)hv,
                      hv ? (int32_t)strlen(hv) : -1};
    spool_record r = {0};
    r.key = (const uint8_t *)key;
    r.key_len = key ? (int32_t)strlen(key) : -1;
    r.value = (const uint8_t *)value;
    r.value_len = (int32_t)strlen(value);
    r.headers = hk ? &h : NULL;
    r.header_count = hk ? 1 : 0;
    r.timestamp = 1000;
    assert_int_equal(spool_batch_append(b, &r), 0);
}

/* A batch of records v1..vn, each with header path=/p<i>. */
static spool_batch *batch_of(lt *t, int n)
{
    spool_batch *b = spool_batch_create(t->in);
    assert_non_null(b);
    for (int i = 1; i <= n; i++) {
        char v[32], p[32];
        snprintf(v, sizeof(v), "v%d", i);
        snprintf(p, sizeof(p), "/p%d", i);
        add(b, NULL, v, "path", p);
    }
    return b;
}

static int run(lt *t, spool_batch *b)
{
    spool__batch_begin_process(b, t->pi);
    int rc = t->pi->plugin->process(t->pi, t->pi->ctx, b);
    assert_int_equal(spool__batch_end_process(b), 0);
    return rc;
}

static void assert_value(spool_batch *b, size_t i, const char *v)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    if (!v) {
        assert_null(r.value);
        return;
    }
    assert_non_null(r.value);
    if ((size_t)r.value_len != strlen(v) || memcmp(r.value, v, strlen(v)) != 0) {
        fail_msg("record %zu: value '%.*s', expected '%s'", i, (int)r.value_len, r.value, v);
    }
}

/* The header `name` of record i as a NUL-terminated string in buf, or NULL. */
static const char *hdr(spool_batch *b, size_t i, const char *name, char *buf, size_t cap)
{
    const spool_header *h = spool_batch_header(b, i, name);
    if (!h || h->value_len < 0) {
        return NULL;
    }
    snprintf(buf, cap, "%.*s", (int)h->value_len, h->value);
    return buf;
}

static void assert_hdr(spool_batch *b, size_t i, const char *name, const char *want)
{
    char buf[600];
    const char *got = hdr(b, i, name, buf, sizeof(buf));
    if (!want) {
        if (got) {
            fail_msg("record %zu: header %s is '%s', expected none", i, name, got);
        }
        return;
    }
    if (!got || strcmp(got, want) != 0) {
        fail_msg("record %zu: header %s is '%s', expected '%s'", i, name, got ? got : "(none)",
                 want);
    }
}

static void assert_hdr_contains(spool_batch *b, size_t i, const char *name, const char *part)
{
    char buf[600];
    const char *got = hdr(b, i, name, buf, sizeof(buf));
    if (!got || !strstr(got, part)) {
        fail_msg("record %zu: header %s is '%s', expected it to contain '%s'", i, name,
                 got ? got : "(none)", part);
    }
}

typedef struct mq {
    const char *name, *labels;
    int64_t value;
} mq;

static void metric_fn(void *arg, const spool_metric_sample *s)
{
    mq *q = arg;
    if (strcmp(s->name, q->name) == 0 && strstr(s->labels, q->labels)) {
        q->value += s->value;
    }
}

static int64_t metric(lt *t, const char *name, const char *labels)
{
    mq q = {name, labels, 0};
    spool_metrics_foreach(&t->svc, metric_fn, &q);
    return q.value;
}

/* ---- the contract ---- */

static void test_keep(void **state)
{
    (void)state;
    lt *t = lt_start("    code: |\n      n = 0\n      function process(r) n = n + 1 end\n");
    spool_batch *b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_value(b, 0, "v1");
    assert_value(b, 2, "v3");
    assert_hdr(b, 1, "path", "/p2");
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.header_count, 1);
    assert_int_equal(r.timestamp, 1000);
    assert_null(r.key);
    assert_string_equal(spool_batch_topic(b, 0), "app");
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_modify_every_part(void **state)
{
    (void)state;
    lt *t = lt_start("    code: |\n"
                     "      function process(r)\n"
                     "        r.value = r.value:upper() .. '!'\n"
                     "        r.key = r.fields.path\n"
                     "        r.timestamp = r.timestamp + 5\n"
                     "        r.fields.level = 'info'\n"
                     "        r.fields.n = 42\n"
                     "        r.fields.path = nil\n"
                     "        if r.value == 'V2!' then r.topic = 'other' end\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 2);
    add(b, "k", "v3", "env", "prod");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_value(b, 0, "V1!");
    assert_int_equal(r.key_len, 3);
    assert_memory_equal(r.key, "/p1", 3);
    assert_int_equal(r.timestamp, 1005);
    assert_int_equal(r.header_count, 2);
    /* Added fields come in name order after the record's own. */
    assert_memory_equal(r.headers[0].key, "level", 5);
    assert_memory_equal(r.headers[1].key, "n", 1);
    assert_hdr(b, 0, "n", "42");
    assert_hdr(b, 0, "path", NULL);
    assert_string_equal(spool_batch_topic(b, 0), "app");
    assert_string_equal(spool_batch_topic(b, 1), "other");
    /* A record without the field: key set to nil = no key. */
    spool_batch_get(b, 2, &r);
    assert_null(r.key);
    assert_hdr(b, 2, "env", "prod");
    assert_hdr(b, 2, "level", "info");
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_drop(void **state)
{
    (void)state;
    lt *t = lt_start("    code: |\n"
                     "      function process(r)\n"
                     "        if r.value == 'v2' then return false end\n"
                     "        if r.value == 'v4' then return {} end\n"
                     "        return true\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 5);
    int64_t d0 = metric(t, "spool_processor_dropped_total", "reason=\"lua\"");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_value(b, 0, "v1");
    assert_value(b, 1, "v3");
    assert_value(b, 2, "v5");
    assert_int_equal(metric(t, "spool_processor_dropped_total", "reason=\"lua\"") - d0, 2);
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_split_into_two(void **state)
{
    (void)state;
    lt *t = lt_start("    code: |\n"
                     "      function process(r)\n"
                     "        local a, b = r.value:match('^(.-)|(.*)$')\n"
                     "        if not a then return end\n"
                     "        r.value = a\n"
                     "        r.fields.part = '1'\n"
                     "        return { r, { value = b, topic = r.fields.path == '/z' and "
                     "'other' or nil, fields = { part = '2', path = r.fields.path } } }\n"
                     "      end\n");
    spool_batch *b = spool_batch_create(t->in);
    add(b, NULL, "a|b", "path", "/x");
    add(b, NULL, "plain", "path", "/y");
    add(b, "k", "c|d|e", "path", "/z");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 5);
    const char *want[] = {"a", "b", "plain", "c", "d|e"};
    const char *parts[] = {"1", "2", NULL, "1", "2"};
    const char *paths[] = {"/x", "/x", "/y", "/z", "/z"};
    for (size_t i = 0; i < 5; i++) {
        assert_value(b, i, want[i]);
        assert_hdr(b, i, "part", parts[i]);
        assert_hdr(b, i, "path", paths[i]);
        /* an added record goes to the topic its table names (spool_batch_emit_to) */
        assert_string_equal(spool_batch_topic(b, i), i == 4 ? "other" : "app");
    }
    /* The new record inherits what it leaves out (key, timestamp). */
    spool_record r;
    spool_batch_get(b, 4, &r);
    assert_int_equal(r.key_len, 1);
    assert_memory_equal(r.key, "k", 1);
    assert_int_equal(r.timestamp, 1000);
    spool_batch_get(b, 1, &r);
    assert_null(r.key);
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_replace_and_new_records(void **state)
{
    (void)state;
    /* One new table replaces the record (inheriting its fields); a list of
     * new tables fills the record's slot then follows it; false clears. */
    lt *t = lt_start("    code: |\n"
                     "      function process(r)\n"
                     "        if r.value == 'v1' then return { value = 'one' } end\n"
                     "        if r.value == 'v2' then\n"
                     "          return { { value = 'x' }, { value = 'y', key = 'K' }, { value = "
                     "false, fields = {} } }\n"
                     "        end\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 5);
    assert_value(b, 0, "one");
    assert_hdr(b, 0, "path", "/p1");
    assert_value(b, 1, "x");
    assert_hdr(b, 1, "path", "/p2");
    assert_value(b, 2, "y");
    assert_hdr(b, 2, "path", "/p2");
    spool_record r;
    spool_batch_get(b, 2, &r);
    assert_int_equal(r.key_len, 1);
    assert_value(b, 3, NULL);
    spool_batch_get(b, 3, &r);
    assert_int_equal(r.header_count, 0);
    assert_value(b, 4, "v3");
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_batch_mode(void **state)
{
    (void)state;
    /* Drop even values, tag the others, add a summary record at the end. */
    lt *t = lt_start("    mode: batch\n"
                     "    code: |\n"
                     "      function process(records)\n"
                     "        local out = {}\n"
                     "        for i, r in ipairs(records) do\n"
                     "          if i % 2 == 1 then r.fields.odd = 'yes'; out[#out + 1] = r end\n"
                     "        end\n"
                     "        out[#out + 1] = { value = 'total ' .. #records, fields = {} }\n"
                     "        return out\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 5);
    int64_t d0 = metric(t, "spool_processor_dropped_total", "reason=\"lua\"");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 4);
    assert_value(b, 0, "v1");
    assert_value(b, 1, "v3");
    assert_value(b, 2, "v5");
    assert_value(b, 3, "total 5");
    assert_hdr(b, 1, "odd", "yes");
    assert_hdr(b, 3, "odd", NULL);
    assert_int_equal(metric(t, "spool_processor_dropped_total", "reason=\"lua\"") - d0, 2);
    spool_batch_destroy(b);
    /* Nothing returned: every record kept with its changes. */
    lt_free(t);
    t = lt_start("    mode: batch\n"
                 "    code: |\n"
                 "      function process(rs) for _, r in ipairs(rs) do r.value = r.value .. '+' "
                 "end end\n");
    b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_value(b, 2, "v3+");
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_list_order_rules(void **state)
{
    (void)state;
    /* Originals out of order, a new table before the first original, and a
     * repeated original: the batch ends up in the list's order. */
    lt *t = lt_start("    mode: batch\n"
                     "    code: |\n"
                     "      function process(rs)\n"
                     "        if #rs == 3 then return { rs[2], rs[1], { value = 'n' } } end\n"
                     "        return { { value = 'first' }, rs[1], rs[1] }\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_value(b, 0, "v2");
    assert_value(b, 1, "v1");
    assert_value(b, 2, "n");
    assert_hdr(b, 0, "path", "/p2");
    assert_hdr(b, 1, "path", "/p1");
    assert_hdr(b, 2, "path", "/p1"); /* from the original before it in the list */
    spool_batch_destroy(b);
    b = batch_of(t, 1);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_value(b, 0, "first");
    assert_value(b, 1, "v1");
    assert_value(b, 2, "v1");
    for (size_t i = 0; i < 3; i++) {
        assert_hdr(b, i, "path", "/p1");
        assert_hdr(b, i, "lua_error", NULL);
    }
    spool_batch_destroy(b);
    lt_free(t);
}

/* ---- errors ---- */

static void test_runtime_error_keeps_record(void **state)
{
    (void)state;
    lt *t = lt_start("    code: |\n"
                     "      function process(r)\n"
                     "        r.value = 'changed'\n"
                     "        if r.fields.path == '/p2' then error('bad record') end\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 3);
    int64_t e0 = metric(t, "spool_errors_total", "name=\"lua1\"");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_value(b, 0, "changed");
    assert_value(b, 1, "v2"); /* the failed call's changes are not applied */
    assert_hdr_contains(b, 1, "lua_error", "code:3: bad record");
    assert_hdr(b, 0, "lua_error", NULL);
    assert_hdr(b, 2, "lua_error", NULL);
    assert_value(b, 2, "changed");
    assert_string_equal(spool_batch_topic(b, 1), "app");
    assert_int_equal(metric(t, "spool_errors_total", "name=\"lua1\"") - e0, 1);
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_dead_letter(void **state)
{
    (void)state;
    lt *t =
        lt_start("    on_error: dead_letter\n"
                 "    dead_letter_topic: dlq\n"
                 "    code: |\n"
                 "      function process(r) if r.value ~= 'v1' then return r.nothing.x end end\n");
    spool_batch *b = batch_of(t, 3);
    int64_t e0 = metric(t, "spool_errors_total", "name=\"lua1\"");
    int64_t dl0 = metric(t, "spool_lua_dead_lettered_total", "name=\"lua1\"");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_string_equal(spool_batch_topic(b, 0), "app");
    assert_string_equal(spool_batch_topic(b, 1), "dlq");
    assert_string_equal(spool_batch_topic(b, 2), "dlq");
    assert_hdr_contains(b, 2, "lua_error", "attempt to index a nil value");
    assert_value(b, 2, "v3");
    assert_int_equal(metric(t, "spool_lua_dead_lettered_total", "name=\"lua1\"") - dl0, 2);
    assert_int_equal(metric(t, "spool_errors_total", "name=\"lua1\"") - e0, 2);
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_bad_answers(void **state)
{
    (void)state;
    lt *t =
        lt_start("    code: |\n"
                 "      function process(r)\n"
                 "        if r.value == 'v1' then return 42 end\n"
                 "        if r.value == 'v2' then r.value = 'z'; r.fields.x = {}; return end\n"
                 "        if r.value == 'v3' then r.topic = 'nope' ; r.value = 'z'; return end\n"
                 "        if r.value == 'v4' then return { r, 'text' } end\n"
                 "        if r.value == 'v5' then r.timestamp = 'now' end\n"
                 "      end\n");
    spool_batch *b = batch_of(t, 6);
    int64_t e0 = metric(t, "spool_errors_total", "name=\"lua1\"");
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 6);
    assert_hdr_contains(b, 0, "lua_error", "returned a number");
    assert_hdr_contains(b, 1, "lua_error", "fields: a value must be a string");
    assert_hdr_contains(b, 2, "lua_error", "topic 'nope' does not exist");
    assert_value(b, 2, "v3"); /* unchanged */
    assert_hdr_contains(b, 3, "lua_error", "returned record 2 is a string");
    assert_hdr_contains(b, 4, "lua_error", "timestamp must be a number");
    assert_hdr(b, 5, "lua_error", NULL);
    for (size_t i = 0; i < 5; i++) {
        char v[8];
        snprintf(v, sizeof(v), "v%zu", i + 1);
        assert_value(b, i, v);
    }
    assert_int_equal(metric(t, "spool_errors_total", "name=\"lua1\"") - e0, 5);
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_batch_error_marks_every_record(void **state)
{
    (void)state;
    lt *t = lt_start("    mode: batch\n"
                     "    code: |\n"
                     "      function process(rs) rs[1].value = 'x'; error('whole batch') end\n");
    spool_batch *b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    for (size_t i = 0; i < 3; i++) {
        assert_hdr_contains(b, i, "lua_error", "whole batch");
    }
    assert_value(b, 0, "v1");
    spool_batch_destroy(b);
    lt_free(t);
    /* A bad part in the last record: the whole answer is checked before any
     * record changes. */
    t = lt_start("    mode: batch\n"
                 "    code: |\n"
                 "      function process(rs)\n"
                 "        for _, r in ipairs(rs) do r.value = 'x' end\n"
                 "        rs[#rs].fields.bad = {}\n"
                 "      end\n");
    b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    for (size_t i = 0; i < 3; i++) {
        char v[8];
        snprintf(v, sizeof(v), "v%zu", i + 1);
        assert_value(b, i, v);
        assert_hdr_contains(b, i, "lua_error", "record 3: fields: a value must be");
    }
    spool_batch_destroy(b);
    lt_free(t);
}

/* ---- sandbox and limits ---- */

static void test_sandbox(void **state)
{
    (void)state;
    const char *probe = "    code: |\n"
                        "      function process(r)\n"
                        "        r.fields.io = type(io)\n"
                        "        r.fields.execute = type(os.execute)\n"
                        "        r.fields.getenv = type(os.getenv)\n"
                        "        r.fields.require = type(require)\n"
                        "        r.fields.dofile = type(dofile)\n"
                        "        r.fields.loadfile = type(loadfile)\n"
                        "        r.fields.debug = type(debug)\n"
                        "        r.fields.package = type(package)\n"
                        "        r.fields.time = math.type(os.time())\n"
                        "        r.fields.date = os.date('!%Y', 0)\n"
                        "        r.fields.text = load('return 1 + 1')()\n"
                        "        local f, err = load('\\27Lua binary')\n"
                        "        r.fields.binary = tostring(err)\n"
                        "        r.fields.fmt = string.format('%05.1f', 3.14159)\n"
                        "      end\n";
    lt *t = lt_start(probe);
    spool_batch *b = batch_of(t, 1);
    assert_int_equal(run(t, b), 0);
    assert_hdr(b, 0, "lua_error", NULL);
    const char *nils[] = {"io",     "execute",  "getenv", "require",
                          "dofile", "loadfile", "debug",  "package"};
    for (size_t i = 0; i < sizeof(nils) / sizeof(nils[0]); i++) {
        assert_hdr(b, 0, nils[i], "nil");
    }
    assert_hdr(b, 0, "time", "integer");
    assert_hdr(b, 0, "date", "1970");
    assert_hdr(b, 0, "text", "2");
    assert_hdr_contains(b, 0, "binary", "binary chunk");
    assert_hdr(b, 0, "fmt", "003.1");
    spool_batch_destroy(b);
    lt_free(t);

    /* Calling what is not there is a runtime error: the command never runs. */
    char cmd[2048];
    t = lt_start(
        "    code: |\n      function process(r) os.execute('touch /tmp/spool-lua-pwned') end\n");
    unlink("/tmp/spool-lua-pwned");
    b = batch_of(t, 1);
    assert_int_equal(run(t, b), 0);
    assert_hdr_contains(b, 0, "lua_error", "execute");
    assert_int_equal(access("/tmp/spool-lua-pwned", F_OK), -1);
    spool_batch_destroy(b);
    lt_free(t);

    /* unsafe: true opens everything. */
    snprintf(cmd, sizeof(cmd), "    unsafe: true\n%s", probe);
    t = lt_start(cmd);
    b = batch_of(t, 1);
    assert_int_equal(run(t, b), 0);
    assert_hdr(b, 0, "io", "table");
    assert_hdr(b, 0, "execute", "function");
    assert_hdr(b, 0, "require", "function");
    assert_hdr(b, 0, "debug", "table");
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_instruction_limit(void **state)
{
    (void)state;
    /* An endless loop, and one that tries to swallow the limit with pcall:
     * both fail, the record is kept, and the next call works. */
    lt *t = lt_start("    max_instructions: 10000\n"
                     "    code: |\n"
                     "      function process(r)\n"
                     "        if r.value == 'v1' then while true do end end\n"
                     "        if r.value == 'v2' then\n"
                     "          while true do pcall(function() while true do end end) end\n"
                     "        end\n"
                     "        r.value = 'ok'\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 3);
    assert_int_equal(run(t, b), 0);
    assert_int_equal(spool_batch_count(b), 3);
    assert_hdr_contains(b, 0, "lua_error", "instruction limit exceeded");
    assert_hdr_contains(b, 1, "lua_error", "instruction limit exceeded");
    assert_value(b, 0, "v1");
    assert_value(b, 2, "ok");
    assert_hdr(b, 2, "lua_error", NULL);
    spool_batch_destroy(b);
    lt_free(t);
}

static void test_memory_limit(void **state)
{
    (void)state;
    lt *t = lt_start("    memory_limit: 2MiB\n"
                     "    max_instructions: 0\n"
                     "    code: |\n"
                     "      function process(r)\n"
                     "        if r.value == 'v1' then\n"
                     "          local t = {}\n"
                     "          while true do t[#t + 1] = string.rep('x', 1000) .. #t end\n"
                     "        end\n"
                     "        r.value = 'ok'\n"
                     "      end\n");
    spool_batch *b = batch_of(t, 2);
    assert_int_equal(run(t, b), 0);
    assert_hdr_contains(b, 0, "lua_error", "not enough memory");
    assert_value(b, 0, "v1");
    assert_value(b, 1, "ok");
    spool_batch_destroy(b);
    lt_free(t);
}

/* ---- config errors ---- */

static void assert_config_error(const char *opts, int line, const char *path, const char *part)
{
    lt *t = lt_load(opts);
    int found = 0;
    for (size_t i = 0; i < t->errs.count; i++) {
        spool_error *e = &t->errs.items[i];
        if (strstr(e->message, part) && strcmp(e->path, path) == 0 &&
            (line == 0 || e->line == line)) {
            found = 1;
        }
    }
    if (!found) {
        print_errors(t);
        fail_msg("no config error at line %d, %s, containing '%s'", line, path, part);
    }
    lt_free(t);
}

static void test_config_errors(void **state)
{
    (void)state;
    /* processors[0] starts at line 12 ("  - type: lua"); opts at 14. */
    assert_config_error(
        "    code: |\n      function process(r)\n        r.value = = 1\n      end\n", 14,
        "processors[0].code", "code:2:");
    assert_config_error("    code: 'function other(r) end'\n", 14, "processors[0].code",
                        "no global function 'process'");
    assert_config_error("    function: handle\n    code: 'function other(r) end'\n", 15,
                        "processors[0].code", "no global function 'handle'");
    assert_config_error("    code: 'error(\"at load\")'\n", 14, "processors[0].code", "at load");
    assert_config_error("    script: /nonexistent/x.lua\n", 14, "processors[0].script",
                        "/nonexistent/x.lua");
    assert_config_error("    script: /dev/null\n    code: 'x = 1'\n", 0, "processors[0].code",
                        "either script or code");
    assert_config_error("    name: x\n", 0, "processors[0]", "needs script");
    assert_config_error("    on_error: dead_letter\n    code: 'function process() end'\n", 14,
                        "processors[0].on_error", "needs dead_letter_topic");
    assert_config_error("    on_error: dead_letter\n    dead_letter_topic: nope\n"
                        "    code: 'function process() end'\n",
                        15, "processors[0].dead_letter_topic", "topic 'nope' is not defined");
    assert_config_error("    mode: stream\n    code: 'function process() end'\n", 14,
                        "processors[0].mode", "");
    /* A script file: the error names the file and its line. */
    char path[] = "/tmp/spool-lua-script-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *src = "-- header\nfunction process(r)\n  return r.\nend\n";
    assert_int_equal(write(fd, src, strlen(src)), (ssize_t)strlen(src));
    close(fd);
    char opts[256], want[300];
    snprintf(opts, sizeof(opts), "    script: %s\n", path);
    snprintf(want, sizeof(want), "%s:4:", path);
    assert_config_error(opts, 14, "processors[0].script", want);
    unlink(path);
}

int main(void)
{
    assert_int_equal(spool_registry_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep),
        cmocka_unit_test(test_modify_every_part),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_split_into_two),
        cmocka_unit_test(test_replace_and_new_records),
        cmocka_unit_test(test_batch_mode),
        cmocka_unit_test(test_list_order_rules),
        cmocka_unit_test(test_runtime_error_keeps_record),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_bad_answers),
        cmocka_unit_test(test_batch_error_marks_every_record),
        cmocka_unit_test(test_sandbox),
        cmocka_unit_test(test_instruction_limit),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
