/*
 * test_processors_core.c: the processor chains (agent/config_load.c: an input's own
 * `processors:`, the top-level section, scoped names, aliases) and the processors
 * filter, set and route (processors/), driven as the processor stage drives them: a
 * configuration loaded from a file, instances initialised, batches lent to each
 * processor of the chain in order (begin, process, end), then the records checked.
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

#include "core.h"

typedef struct loaded {
    char dir[64];
    char path[128];
    spool_service_conf conf;
    spool_service svc;
    spool_errors errs;
    int nerr;
} loaded;

static const char *const base_yaml = "service:\n"
                                     "  data_dir: %s/data\n"
                                     "topics:\n"
                                     "  access: {}\n"
                                     "  errors: {}\n"
                                     "  other: {}\n";

/* Writes base_yaml then `rest` to a file and loads it; initialises every processor
 * when it is valid. */
static loaded *load(const char *rest)
{
    loaded *L = calloc(1, sizeof(*L));
    assert_non_null(L);
    snprintf(L->dir, sizeof(L->dir), "/tmp/spool-proc-XXXXXX");
    assert_non_null(mkdtemp(L->dir));
    snprintf(L->path, sizeof(L->path), "%s/spool.yaml", L->dir);
    FILE *f = fopen(L->path, "w");
    assert_non_null(f);
    fprintf(f, base_yaml, L->dir);
    fputs(rest, f);
    fclose(f);
    spool_registry_init();
    L->nerr = spool_service_conf_load(L->path, &L->conf, &L->errs);
    L->svc.conf = &L->conf;
    if (L->nerr == 0) {
        for (size_t i = 0; i < L->conf.ninputs; i++) {
            L->conf.inputs[i]->svc = &L->svc;
        }
        for (size_t i = 0; i < L->conf.nprocessors; i++) {
            spool_instance *p = L->conf.processors[i];
            p->svc = &L->svc;
            if (p->plugin->init) {
                assert_int_equal(p->plugin->init(p, p->ctx), 0);
            }
            p->initialized = 1;
        }
    }
    return L;
}

static void unload(loaded *L)
{
    for (size_t i = 0; i < L->conf.nprocessors; i++) {
        spool_instance *p = L->conf.processors[i];
        if (p->initialized && p->plugin->destroy) {
            p->plugin->destroy(p, p->ctx);
        }
    }
    spool_service_conf_free(&L->conf);
    spool_errors_free(&L->errs);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", L->dir);
    assert_int_equal(system(cmd), 0);
    free(L);
}

/* "file:line:col: path: message\n" for every error, without the file name. */
static char *render_errors(const loaded *L)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    for (size_t i = 0; i < L->errs.count; i++) {
        const spool_error *e = &L->errs.items[i];
        fprintf(f, "%d:%d: %s: %s\n", e->line, e->column, e->path, e->message);
    }
    fclose(f);
    return out;
}

static spool_instance *input_named(loaded *L, const char *name)
{
    for (size_t i = 0; i < L->conf.ninputs; i++) {
        if (strcmp(L->conf.inputs[i]->name, name) == 0) {
            return L->conf.inputs[i];
        }
    }
    fail_msg("no input %s", name);
    return NULL;
}

static void run_one(spool_instance *p, spool_batch *b)
{
    spool__batch_begin_process(b, p);
    assert_true(p->plugin->process(p, p->ctx, b) >= 0);
    assert_int_equal(spool__batch_end_process(b), 0);
}

/* What the processor stage does: the input's chain, then the top-level one. */
static void run_chains(loaded *L, spool_batch *b)
{
    for (size_t i = 0; i < b->ins->nchain; i++) {
        run_one(b->ins->chain[i], b);
    }
    for (size_t i = 0; i < L->conf.nprocessors; i++) {
        if (!L->conf.processors[i]->chain_owner) {
            run_one(L->conf.processors[i], b);
        }
    }
}

static void add(spool_batch *b, const char *value, const char *status, const char *path)
{
    spool_header h[2] = {{"status", 6, (const uint8_t *)status, (int32_t)strlen(status)},
                         {"path", 4, (const uint8_t *)path, (int32_t)strlen(path)}};
    spool_record r = {.key_len = -1,
                      .value = (const uint8_t *)value,
                      .value_len = (int32_t)strlen(value),
                      .headers = h,
                      .header_count = 2,
                      .timestamp = 1000};
    assert_int_equal(spool_batch_append(b, &r), 0);
}

static void expect_field(spool_batch *b, size_t i, const char *name, const char *want)
{
    spool_record r;
    char scratch[SPOOL_FIELD_SCRATCH];
    const uint8_t *v;
    size_t len;
    spool_batch_get(b, i, &r);
    int found =
        spool_record_field(&r, spool_batch_topic(b, i), name, strlen(name), scratch, &v, &len);
    if (!want) {
        assert_int_equal(found, 0);
        return;
    }
    assert_int_equal(found, 1);
    if (len != strlen(want) || memcmp(v, want, len) != 0) {
        fail_msg("record %zu field %s: want '%s', got '%.*s'", i, name, want, (int)len, v);
    }
}

/* ---- the chains ---- */

static const char *const chain_yaml =
    "inputs:\n"
    "  - type: stdin\n"
    "    name: web\n"
    "    topic: access\n"
    "    processors: &web\n"
    "      - type: set\n"
    "        fields: {env: prod, tag: \"{{ status }}-{{ path }}\"}\n"
    "      - type: filter\n"
    "        drop_when: path == \"/health\"\n"
    "      - type: route\n"
    "        rules:\n"
    "          - {when: 'status >= 500', topic: errors}\n"
    "          - {when: 'path =~ \"^/api\"', topic: other}\n"
    "  - type: stdin\n"
    "    name: web2\n"
    "    topic: access\n"
    "    processors: *web\n"
    "  - type: stdin\n"
    "    name: plain\n"
    "    topic: other\n"
    "    processors:\n"
    "      - {type: set, name: a, fields: {x: '1'}}\n"
    "      - {type: set, fields: {y: '2'}}\n"
    "      - {type: set, fields: {z: '3'}}\n"
    "processors:\n"
    "  - type: set\n"
    "    fields: {seen: \"{{ env }}/{{ topic }}\"}\n";

static void test_chain_names_and_order(void **state)
{
    (void)state;
    loaded *L = load(chain_yaml);
    if (L->nerr) {
        fail_msg("%s", render_errors(L));
    }
    /* Top-level first, then each input's chain in input order. */
    static const char *const names[] = {
        "set.0",       "web.set",    "web.filter", "web.route",           "web2.set",
        "web2.filter", "web2.route", "plain.a",    "plain.processors[1]", "plain.processors[2]"};
    assert_int_equal(L->conf.nprocessors, 10);
    for (size_t i = 0; i < 10; i++) {
        assert_string_equal(L->conf.processors[i]->name, names[i]);
    }
    spool_instance *web = input_named(L, "web");
    assert_int_equal(web->nchain, 3);
    assert_ptr_equal(web->chain[0], L->conf.processors[1]);
    assert_ptr_equal(web->chain[0]->chain_owner, web);
    assert_null(L->conf.processors[0]->chain_owner);
    assert_string_equal(web->chain[2]->path, "inputs[0].processors[2]");
    assert_int_equal(input_named(L, "plain")->nchain, 3);
    unload(L);
}

static void test_chain_set_filter_route(void **state)
{
    (void)state;
    loaded *L = load(chain_yaml);
    assert_int_equal(L->nerr, 0);
    spool_instance *web = input_named(L, "web2");
    spool_batch *b = spool_batch_create(web);
    add(b, "l0", "200", "/");
    add(b, "l1", "503", "/api/x");
    add(b, "l2", "200", "/health");
    add(b, "l3", "404", "/api/y");
    add(b, "l4", "500", "/health");
    add(b, "l5", "302", "/login");
    run_chains(L, b);
    assert_int_equal(spool_batch_count(b), 4);
    static const char *const values[] = {"l0", "l1", "l3", "l5"};
    static const char *const topics[] = {"access", "errors", "other", "access"};
    static const char *const tags[] = {"200-/", "503-/api/x", "404-/api/y", "302-/login"};
    for (size_t i = 0; i < 4; i++) {
        expect_field(b, i, "value", values[i]);
        assert_string_equal(spool_batch_topic(b, i), topics[i]);
        expect_field(b, i, "env", "prod");
        expect_field(b, i, "tag", tags[i]);
    }
    /* The top-level chain ran after the input's own: it saw env and the new topic. */
    expect_field(b, 1, "seen", "prod/errors");
    expect_field(b, 3, "seen", "prod/access");
    spool_batch_destroy(b);

    /* Another input: its own chain only, then the top-level one. */
    spool_instance *plain = input_named(L, "plain");
    b = spool_batch_create(plain);
    add(b, "p0", "500", "/health");
    run_chains(L, b);
    assert_int_equal(spool_batch_count(b), 1);
    assert_string_equal(spool_batch_topic(b, 0), "other");
    expect_field(b, 0, "x", "1");
    expect_field(b, 0, "z", "3");
    expect_field(b, 0, "seen", "/other");
    expect_field(b, 0, "env", NULL);
    spool_batch_destroy(b);
    unload(L);
}

/* ---- filter ---- */

static void test_filter(void **state)
{
    (void)state;
    loaded *L = load("inputs:\n"
                     "  - type: stdin\n"
                     "    topic: access\n"
                     "    processors:\n"
                     "      - type: filter\n"
                     "        keep_when: status in [\"500\", \"503\"] or not exists(path)\n");
    assert_int_equal(L->nerr, 0);
    spool_batch *b = spool_batch_create(L->conf.inputs[0]);
    add(b, "a", "500", "/x");
    add(b, "b", "200", "/x");
    add(b, "c", "503", "/x");
    spool_record r = {.key_len = -1, .value = (const uint8_t *)"d", .value_len = 1};
    assert_int_equal(spool_batch_append(b, &r), 0);
    run_chains(L, b);
    assert_int_equal(spool_batch_count(b), 3);
    expect_field(b, 0, "value", "a");
    expect_field(b, 1, "value", "c");
    expect_field(b, 2, "value", "d");
    spool_batch_destroy(b);
    unload(L);
}

/* ---- set ---- */

static void test_set(void **state)
{
    (void)state;
    loaded *L = load("inputs:\n"
                     "  - type: stdin\n"
                     "    topic: access\n"
                     "    processors:\n"
                     "      - type: set\n"
                     "        rename: {path: url, nope: x}\n"
                     "        remove: [status]\n"
                     "        fields: {svc: \"{{ url }}-x\", again: \"[{{ svc }}]\", st: "
                     "\"{{ status }}\"}\n"
                     "        key: \"{{ svc }}\"\n"
                     "        value_json: [url, svc, missing, value, key]\n"
                     "      - type: set\n"
                     "        value: \"{{ value }} / {{ timestamp }}\"\n");
    if (L->nerr) {
        fail_msg("%s", render_errors(L));
    }
    spool_batch *b = spool_batch_create(L->conf.inputs[0]);
    add(b, "line \"one\"", "200", "/a");
    add(b, "two", "404", "/b");
    run_chains(L, b);
    expect_field(b, 0, "path", NULL);
    expect_field(b, 0, "status", NULL);
    expect_field(b, 0, "url", "/a");
    expect_field(b, 0, "svc", "/a-x");
    expect_field(b, 0, "again", "[/a-x]"); /* fields see the ones set before them */
    expect_field(b, 0, "st", "");
    expect_field(b, 0, "key", "/a-x");
    expect_field(b, 0, "value",
                 "{\"url\":\"/a\",\"svc\":\"/a-x\",\"value\":\"line \\\"one\\\"\",\"key\":\"/a-x\"}"
                 " / 1000");
    expect_field(b, 1, "key", "/b-x");
    spool_batch_destroy(b);
    unload(L);
}

/* ---- route ---- */

static void test_route(void **state)
{
    (void)state;
    loaded *L = load("inputs:\n"
                     "  - type: stdin\n"
                     "    topic: access\n"
                     "    processors:\n"
                     "      - type: route\n"
                     "        rules:\n"
                     "          - {when: 'status >= 500', topic: errors}\n"
                     "          - {when: 'status >= 400', topic: other}\n"
                     "          - {when: 'status >= 300', topic: errors}\n"
                     "        default: access\n");
    assert_int_equal(L->nerr, 0);
    spool_batch *b = spool_batch_create(L->conf.inputs[0]);
    add(b, "a", "500", "/");
    add(b, "b", "450", "/");
    add(b, "c", "301", "/");
    add(b, "d", "100", "/");
    run_chains(L, b);
    assert_string_equal(spool_batch_topic(b, 0), "errors");
    assert_string_equal(spool_batch_topic(b, 1), "other"); /* first match wins */
    assert_string_equal(spool_batch_topic(b, 2), "errors");
    assert_string_equal(spool_batch_topic(b, 3), "access");
    spool_batch **parts = NULL;
    size_t nparts = 0;
    assert_int_equal(spool__batch_split(b, &parts, &nparts), 0);
    assert_int_equal(nparts, 3);
    for (size_t i = 0; i < nparts; i++) {
        spool_batch_destroy(parts[i]);
    }
    free(parts);
    unload(L);
}

/* ---- config errors, with positions ---- */

static void test_errors(void **state)
{
    (void)state;
    loaded *L = load("inputs:\n"
                     "  - type: stdin\n"
                     "    topic: access\n"
                     "    processors:\n"
                     "      - type: filter\n"
                     "        drop_when: status >= 500 and (path == \"/x\"\n"
                     "      - type: filter\n"
                     "        keep_when: a\n"
                     "        drop_when: b\n"
                     "      - type: route\n"
                     "        rules:\n"
                     "          - {when: 'status > 1', topic: erors}\n"
                     "          - {when: 'a =~ \"[\"', topic: errors, to: x}\n"
                     "          - {topic: errors}\n"
                     "      - type: set\n"
                     "        fields: {value: x, ok: '{{ a'}\n"
                     "        value: v\n"
                     "        value_json: [a]\n"
                     "      - type: fitler\n"
                     "  - type: stdin\n"
                     "    processors: {type: set}\n"
                     "processors:\n"
                     "  - type: route\n"
                     "    default: nope\n");
    char *got = render_errors(L);
    const char *want =
        "12:51: inputs[0].processors[0].drop_when: invalid condition: expected ')' to close '(' at "
        "column 19, found end of expression\n"
        "15:20: inputs[0].processors[1].drop_when: give exactly one of keep_when and drop_when\n"
        "18:41: inputs[0].processors[2].rules[0].topic: topic 'erors' is not defined in topics\n"
        "19:28: inputs[0].processors[2].rules[1].when: invalid condition: invalid regex: missing "
        "terminating ] for character class at offset 1\n"
        "19:51: inputs[0].processors[2].rules[1].to: unknown key 'to' in a route rule (when, "
        "topic)\n"
        "20:13: inputs[0].processors[2].rules[2]: a route rule needs both 'when' and 'topic'\n"
        "22:25: inputs[0].processors[3].fields.value: 'value' is the record's own value, not a "
        "header: set it with this processor's `value:` option\n"
        "22:32: inputs[0].processors[3].fields.ok: invalid template: unclosed '{{' in template\n"
        "24:21: inputs[0].processors[3].value_json: give one of value and value_json, not both\n"
        "25:15: inputs[0].processors[4].type: unknown processor plugin type 'fitler', did you mean "
        "'filter'?\n"
        "26:5: inputs[1].topic: topic 'default' is not defined in topics\n"
        "27:17: inputs[1].processors: 'processors' must be a list of processor entries (- type: "
        "...), got a mapping\n"
        "30:14: processors[0].default: topic 'nope' is not defined in topics\n";
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "--- want\n%s--- got\n%s", want, got);
        fail();
    }
    free(got);
    unload(L);
}

/* Inside a value the file does not hold verbatim (escapes, a block scalar):
 * the value's start, and the column inside it in the message. */
static void test_error_not_verbatim(void **state)
{
    (void)state;
    loaded *L = load("inputs:\n"
                     "  - type: stdin\n"
                     "    topic: access\n"
                     "    processors:\n"
                     "      - type: filter\n"
                     "        drop_when: \"a =~ \\\"(\\\"\"\n"
                     "      - type: filter\n"
                     "        keep_when: |\n"
                     "          a == 1 and\n");
    char *got = render_errors(L);
    const char *want =
        "12:20: inputs[0].processors[0].drop_when: invalid condition: invalid regex: "
        "missing closing parenthesis at offset 1 (at column 8 of the value)\n"
        "14:20: inputs[0].processors[1].keep_when: invalid condition: expected a "
        "condition, found end of expression (at column 12 of the "
        "value)\n";
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "--- want\n%s--- got\n%s", want, got);
        fail();
    }
    free(got);
    unload(L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_names_and_order),
        cmocka_unit_test(test_chain_set_filter_route),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_not_verbatim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
