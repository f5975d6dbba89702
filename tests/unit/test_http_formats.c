/*
 * test_http_formats.c: the destination formats of the http output
 * (outputs/http/http_fmt.h): the exact request bodies for a fixed set of
 * records (elasticsearch bulk, loki push, otlp logs), and the published
 * response shapes, partial failures included: Elasticsearch bulk items
 * mixing 201/409/429/400, Loki's 400 naming a stream, OTLP's
 * partialSuccess. Also the check of the options (templates, strftime,
 * label names, options of another format).
 *
 * spool-test-requires: http
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../outputs/http/http_fmt.h"

/* ---- a fixed chunk ---- */

#define H(k, v)                                                                                    \
    {                                                                                              \
        k, sizeof(k) - 1, (const uint8_t *)v, sizeof(v) - 1                                        \
    }

static const spool_header h0[] = {H("host", "web1"), H("level", "info"), H("http.status", "200")};
static const spool_header h1[] = {H("host", "web2"), H("level", "ERROR"), H("app", "api")};
static const spool_header h2[] = {H("host", "web1"), H("level", "warning")};
static const spool_header h3[] = {H("host", "web1")};

/* 2024-01-02T03:04:05.678Z and around; record 2 is older than record 0. */
static const spool_record recs[] = {
    {NULL, -1, (const uint8_t *)"GET /a", 6, h0, 3, 1704164645678, 0, 40},
    {(const uint8_t *)"k1", 2, (const uint8_t *)"boom \"x\"", 8, h1, 3, 1704164645679, 0, 41},
    {NULL, -1, (const uint8_t *)"slow", 4, h2, 2, 1704164645000, 0, 42},
    {NULL, -1, (const uint8_t *)"next day", 8, h3, 1, 1704240000000, 0, 43},
};

static spool_chunk chunk(void)
{
    spool_chunk c;
    memset(&c, 0, sizeof(c));
    c.topic = "app";
    c.partition = 0;
    c.first_offset = 40;
    c.next_offset = 44;
    c.records = recs;
    c.count = 4;
    return c;
}

static const char golden_es[] =
    "{\"create\":{\"_index\":\"logs-web1-2024.01.02\",\"_id\":\"0-40-9e71f638fd319bd8\"}}\n"
    "{\"@timestamp\":\"2024-01-02T03:04:05.678Z\",\"timestamp\":1704164645678,\"value\":\"GET "
    "/a\",\"host\":\"web1\",\"level\":\"info\",\"http\":{\"status\":200}}\n"
    "{\"create\":{\"_index\":\"logs-web2-2024.01.02\",\"_id\":\"0-41-ecbc69d21c8d0b6c\"}}\n"
    "{\"@timestamp\":\"2024-01-02T03:04:05.679Z\",\"timestamp\":1704164645679,\"key\":\"k1\","
    "\"value\":\"boom \\\"x\\\"\",\"host\":\"web2\",\"level\":\"ERROR\",\"app\":\"api\"}\n"
    "{\"create\":{\"_index\":\"logs-web1-2024.01.02\",\"_id\":\"0-42-226a83a132983cac\"}}\n"
    "{\"@timestamp\":\"2024-01-02T03:04:05.000Z\",\"timestamp\":1704164645000,\"value\":\"slow\","
    "\"host\":\"web1\",\"level\":\"warning\"}\n"
    "{\"create\":{\"_index\":\"logs-web1-2024.01.03\",\"_id\":\"0-43-1222e559a51a44c4\"}}\n"
    "{\"@timestamp\":\"2024-01-03T00:00:00.000Z\",\"timestamp\":1704240000000,\"value\":\"next "
    "day\",\"host\":\"web1\"}\n";
static const char golden_loki[] = "{\"streams\":[{\"stream\":{\"host\":\"web1\",\"job\":\"spool\"},"
                                  "\"values\":[[\"1704164645000000000\",\"sl"
                                  "ow\"],[\"1704164645678000000\",\"GET "
                                  "/a\"],[\"1704240000000000000\",\"next day\"]]},{\"stream\":{\"h"
                                  "ost\":\"web2\",\"job\":\"spool\"},\"values\":[["
                                  "\"1704164645679000000\",\"boom \\\"x\\\"\"]]}]}";
static const char golden_otlp[] = "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":"
                                  "\"host.name\",\"value\":{\"stringValue\":\"w"
                                  "eb1\"}}]},\"scopeLogs\":[{\"scope\":{\"name\":\"spool\"},"
                                  "\"logRecords\":[{\"timeUnixNano\":\"170416464"
                                  "5678000000\",\"observedTimeUnixNano\":\"1704164645678000000\","
                                  "\"severityNumber\":9,\"severityTex"
                                  "t\":\"info\",\"body\":{\"stringValue\":\"GET "
                                  "/a\"},\"attributes\":[{\"key\":\"http.status\",\"value\":{\"s"
                                  "tringValue\":\"200\"}}]},{\"timeUnixNano\":"
                                  "\"1704164645000000000\",\"observedTimeUnixNano\":\"1704"
                                  "164645000000000\",\"severityNumber\":13,\"severityText\":"
                                  "\"warning\",\"body\":{\"stringValue\":\"slo"
                                  "w\"},\"attributes\":[]},{\"timeUnixNano\":"
                                  "\"1704240000000000000\",\"observedTimeUnixNano\":\"17042"
                                  "40000000000000\",\"body\":{\"stringValue\":\"next "
                                  "day\"},\"attributes\":[]}]}]},{\"resource\":{\"att"
                                  "ributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
                                  "\"api\"}},{\"key\":\"host.name\",\"value"
                                  "\":{\"stringValue\":\"web2\"}}]},\"scopeLogs\":[{\"scope\":{"
                                  "\"name\":\"spool\"},\"logRecords\":[{\"timeU"
                                  "nixNano\":\"1704164645679000000\",\"observedTimeUnixNano\":"
                                  "\"1704164645679000000\",\"severityNum"
                                  "ber\":17,\"severityText\":\"ERROR\",\"body\":{\"stringValue\":"
                                  "\"boom \\\"x\\\"\"},\"attributes\":[]}]}]}]"
                                  "}";

static char *encode(httpo_fmt *f)
{
    spool_chunk c = chunk();
    spool_buf body = {0}, aux = {0};
    assert_int_equal(httpo_fmt_init(f), 0);
    assert_int_equal(httpo_fmt_encode(f, &c, &body, &aux), 0);
    char *s = strndup((const char *)body.data, body.len);
    spool_buf_free(&body);
    spool_buf_free(&aux);
    return s;
}

static void print_body(const char *name, const char *s)
{
    if (getenv("SHOW")) {
        printf("%s:\n%s\n", name, s);
    }
}

static void es_body(void **state)
{
    (void)state;
    httpo_fmt f = {.format = HTTPO_FMT_ES,
                   .index = "logs-{{ host }}-%Y.%m.%d",
                   .timestamp_field = "@timestamp"};
    char *s = encode(&f);
    print_body("es", s);
    assert_string_equal(s, golden_es);
    free(s);
    httpo_fmt_free(&f);
}

static void loki_body(void **state)
{
    (void)state;
    char *k[] = {"job", "host"}, *v[] = {"spool", "{{ host }}"};
    httpo_fmt f = {.format = HTTPO_FMT_LOKI, .labels = {k, v, 2}};
    char *s = encode(&f);
    print_body("loki", s);
    assert_string_equal(s, golden_loki);
    free(s);
    httpo_fmt_free(&f);
}

static void otlp_body(void **state)
{
    (void)state;
    char *k[] = {"service.name", "host.name"}, *v[] = {"{{ app }}", "{{ host }}"};
    httpo_fmt f = {.format = HTTPO_FMT_OTLP, .resource = {k, v, 2}, .severity_field = "level"};
    char *s = encode(&f);
    print_body("otlp", s);
    assert_string_equal(s, golden_otlp);
    free(s);
    httpo_fmt_free(&f);
}

/* A second encode with the same state gives the same bytes (scratch reuse). */
static void encode_twice(void **state)
{
    (void)state;
    char *k[] = {"job", "host"}, *v[] = {"spool", "{{ host }}"};
    httpo_fmt f = {.format = HTTPO_FMT_LOKI, .labels = {k, v, 2}};
    char *a = encode(&f);
    spool_chunk c = chunk();
    spool_buf body = {0}, aux = {0};
    assert_int_equal(httpo_fmt_encode(&f, &c, &body, &aux), 0);
    assert_int_equal(body.len, strlen(a));
    assert_memory_equal(body.data, a, body.len);
    spool_buf_free(&body);
    spool_buf_free(&aux);
    free(a);
    httpo_fmt_free(&f);
}

/* Line format json and id none, action index, no @timestamp. */
static void options_variants(void **state)
{
    (void)state;
    char *k[] = {"job"}, *v[] = {"spool"};
    httpo_fmt f = {.format = HTTPO_FMT_LOKI, .labels = {k, v, 1}, .line_format = HTTPO_LINE_JSON};
    char *s = encode(&f);
    assert_non_null(strstr(s, "{\"streams\":[{\"stream\":{\"job\":\"spool\"},\"values\":[["
                              "\"1704164645000000000\",\"{\\\"timestamp\\\":1704164645000,"
                              "\\\"value\\\":\\\"slow\\\""));
    free(s);
    httpo_fmt_free(&f);
    httpo_fmt e = {.format = HTTPO_FMT_ES,
                   .index = "plain",
                   .action = HTTPO_ES_INDEX,
                   .id = HTTPO_ID_NONE,
                   .timestamp_field = ""};
    s = encode(&e);
    static const char head[] = "{\"index\":{\"_index\":\"plain\"}}\n{\"timestamp\":1704164645678,";
    assert_memory_equal(s, head, sizeof(head) - 1);
    free(s);
    httpo_fmt_free(&e);
}

/* Structured metadata: a third element where some entry renders. */
static void loki_structured_metadata(void **state)
{
    (void)state;
    char *k[] = {"job"}, *v[] = {"spool"}, *mk[] = {"app", "status"},
         *mv[] = {"{{ app }}", "{{ http.status }}"};
    httpo_fmt f = {.format = HTTPO_FMT_LOKI, .labels = {k, v, 1}, .meta = {mk, mv, 2}};
    char *s = encode(&f);
    assert_string_equal(s, "{\"streams\":[{\"stream\":{\"job\":\"spool\"},\"values\":["
                           "[\"1704164645000000000\",\"slow\"],"
                           "[\"1704164645678000000\",\"GET /a\",{\"status\":\"200\"}],"
                           "[\"1704164645679000000\",\"boom \\\"x\\\"\",{\"app\":\"api\"}],"
                           "[\"1704240000000000000\",\"next day\"]]}]}");
    free(s);
    httpo_fmt_free(&f);
}

/* ---- responses ---- */

typedef struct rejects {
    size_t idx[16];
    char why[16][512];
    size_t n;
} rejects;

static void on_reject(void *arg, size_t i, const char *reason)
{
    rejects *r = arg;
    assert_true(r->n < 16);
    r->idx[r->n] = i;
    snprintf(r->why[r->n], sizeof(r->why[0]), "%s", reason);
    r->n++;
}

static void respond(const httpo_fmt *f, long status, const char *body, const spool_buf *aux,
                    httpo_verdict *v, rejects *rj)
{
    spool_chunk c = chunk();
    memset(rj, 0, sizeof(*rj));
    httpo_fmt_response(f, &c, status, body, strlen(body), aux, v, on_reject, rj);
}

/* Published shapes (Elasticsearch docs, "Bulk API", response body). */
static const char es_ok[] =
    "{\"took\":30,\"errors\":false,\"items\":[{\"create\":{\"_index\":\"x\",\"_id\":\"1\","
    "\"status\":201}}]}";
static const char es_mixed[] =
    "{\"took\":486,\"errors\":true,\"items\":["
    "{\"create\":{\"_index\":\"logs\",\"_id\":\"a\",\"_version\":1,\"result\":\"created\","
    "\"_shards\":{\"total\":2,\"successful\":1,\"failed\":0},\"status\":201,\"_seq_no\":0}},"
    "{\"create\":{\"_index\":\"logs\",\"_id\":\"b\",\"status\":409,\"error\":{\"type\":"
    "\"version_conflict_engine_exception\",\"reason\":\"[b]: version conflict, document already "
    "exists (current version [1])\",\"index\":\"logs\"}}},"
    "{\"create\":{\"_index\":\"logs\",\"_id\":\"c\",\"status\":400,\"error\":{\"type\":"
    "\"mapper_parsing_exception\",\"reason\":\"failed to parse field [http.status] of type [long]"
    "\",\"caused_by\":{\"type\":\"illegal_argument_exception\",\"reason\":\"For input "
    "string: \\\"abc\\\"\"}}}},"
    "{\"create\":{\"_index\":\"logs\",\"_id\":\"d\",\"status\":429,\"error\":{\"type\":"
    "\"es_rejected_execution_exception\",\"reason\":\"rejected execution of coordinating "
    "operation\"}}}]}";

static void es_responses(void **state)
{
    (void)state;
    httpo_fmt f = {.format = HTTPO_FMT_ES};
    httpo_verdict v;
    rejects rj;
    respond(&f, 200, es_ok, NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(rj.n, 0);
    /* 201, 409 (create: already there), 400 (refused alone), 429: the chunk
     * is retried; the 400 was marked (the core drops marks on a retry). */
    respond(&f, 200, es_mixed, NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_RETRY);
    assert_int_equal(v.retried, 1);
    assert_int_equal(rj.n, 1);
    assert_int_equal(rj.idx[0], 2);
    assert_string_equal(rj.why[0], "HTTP 400 mapper_parsing_exception: failed to parse field "
                                   "[http.status] of type [long]");
    assert_non_null(strstr(v.reason, "es_rejected_execution_exception"));
    /* Without the 429 item: delivered, record 2 refused. */
    char no429[sizeof(es_mixed)];
    snprintf(no429, sizeof(no429), "%s", es_mixed);
    char *d = strstr(no429, ",{\"create\":{\"_index\":\"logs\",\"_id\":\"d\"");
    assert_non_null(d);
    strcpy(d, ",{\"create\":{\"_id\":\"d\",\"status\":201}}]}");
    respond(&f, 200, no429, NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(v.rejected, 1);
    assert_int_equal(rj.idx[0], 2);
    /* 409 with action index (no create): a real conflict, refused. */
    f.action = HTTPO_ES_INDEX;
    respond(&f, 200, no429, NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(rj.n, 1); /* items say "create": still create semantics */
    f.action = HTTPO_ES_CREATE;
    f.id = HTTPO_ID_NONE; /* 409 cannot mean "already there" without our _id */
    respond(&f, 200, no429, NULL, &v, &rj);
    assert_int_equal(rj.n, 2);
    assert_int_equal(rj.idx[0], 1);
    f.id = HTTPO_ID_AUTO;
    /* Fewer items than records (a truncated answer): retried, nothing marked as
     * delivered wrongly. */
    respond(&f, 200, "{\"errors\":true,\"items\":[{\"create\":{\"status\":201}}]}", NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_RETRY);
    respond(&f, 200, "{\"errors\":true,\"items\":[{\"create\":{\"status\":2", NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_RETRY);
    respond(&f, 200, "<html>", NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_RETRY);
    /* A whole-request error: the generic rule (reject or retry by status). */
    respond(&f, 400, "{\"error\":{\"type\":\"parse_exception\"},\"status\":400}", NULL, &v, &rj);
    assert_int_equal(v.result, -1);
}

static void loki_responses(void **state)
{
    (void)state;
    char *k[] = {"job", "host"}, *v2[] = {"spool", "{{ host }}"};
    httpo_fmt f = {.format = HTTPO_FMT_LOKI, .labels = {k, v2, 2}};
    assert_int_equal(httpo_fmt_init(&f), 0);
    spool_chunk c = chunk();
    spool_buf body = {0}, aux = {0};
    assert_int_equal(httpo_fmt_encode(&f, &c, &body, &aux), 0);
    httpo_verdict v;
    rejects rj;
    respond(&f, 204, "", &aux, &v, &rj);
    assert_int_equal(v.result, -1); /* 2xx: delivered by the generic rule */
    respond(&f, 429, "Ingestion rate limit exceeded", &aux, &v, &rj);
    assert_int_equal(v.result, -1); /* retried by the generic rule */
    /* Loki's message for entries it dropped (pkg/validation): names the stream. */
    respond(&f, 400,
            "entry with timestamp 2024-01-02 03:04:05.679 +0000 UTC ignored, reason: 'entry too "
            "far behind, oldest acceptable timestamp is: 2024-01-02T04:00:00Z' for stream: "
            "{host=\"web2\", job=\"spool\"},\ntotal ignored: 1 out of 4\n",
            &aux, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(rj.n, 1);
    assert_int_equal(rj.idx[0], 1);
    assert_non_null(strstr(rj.why[0], "HTTP 400: entry with timestamp"));
    assert_non_null(strstr(rj.why[0], "total ignored: 1 out of 4"));
    /* A message naming no stream: every record of the chunk. */
    respond(&f, 400, "entry out of order", &aux, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(rj.n, 4);
    assert_string_equal(rj.why[0], "HTTP 400: entry out of order");
    spool_buf_free(&body);
    spool_buf_free(&aux);
    httpo_fmt_free(&f);
}

static void otlp_responses(void **state)
{
    (void)state;
    httpo_fmt f = {.format = HTTPO_FMT_OTLP};
    httpo_verdict v;
    rejects rj;
    respond(&f, 200, "{}", NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(v.partial, 0);
    /* ExportLogsServiceResponse.partial_success (proto3 JSON: int64 as a string). */
    respond(&f, 200,
            "{\"partialSuccess\":{\"rejectedLogRecords\":\"2\",\"errorMessage\":\"2 records "
            "had no body\"}}",
            NULL, &v, &rj);
    assert_int_equal(v.result, SPOOL_OK);
    assert_int_equal(v.partial, 2);
    assert_string_equal(v.reason, "2 records had no body");
    assert_int_equal(rj.n, 0);
    respond(&f, 200, "{\"partial_success\":{\"rejected_log_records\":3}}", NULL, &v, &rj);
    assert_int_equal(v.partial, 3);
    respond(&f, 503, "", NULL, &v, &rj);
    assert_int_equal(v.result, -1);
}

/* Every truncation of the published answers (a response cut by the size
 * limit or the connection): never read past the end (run under ASan), and an
 * Elasticsearch answer cut before its items end is never taken as delivered. */
static void truncated_responses(void **state)
{
    (void)state;
    char *k[] = {"job", "host"}, *v2[] = {"spool", "{{ host }}"};
    httpo_fmt es = {.format = HTTPO_FMT_ES}, lk = {.format = HTTPO_FMT_LOKI, .labels = {k, v2, 2}},
              ot = {.format = HTTPO_FMT_OTLP};
    assert_int_equal(httpo_fmt_init(&lk), 0);
    spool_chunk c = chunk();
    spool_buf body = {0}, aux = {0};
    assert_int_equal(httpo_fmt_encode(&lk, &c, &body, &aux), 0);
    static const char otlp_partial[] =
        "{\"partialSuccess\":{\"rejectedLogRecords\":\"2\",\"errorMessage\":\"x\"}}";
    for (size_t n = 0; n < sizeof(es_mixed) - 1; n++) {
        char *b = malloc(n + 1);
        assert_non_null(b);
        memcpy(b, es_mixed, n);
        b[n] = '\0';
        httpo_verdict v;
        rejects rj;
        memset(&rj, 0, sizeof(rj));
        httpo_fmt_response(&es, &c, 200, b, n, NULL, &v, on_reject, &rj);
        assert_int_equal(v.result, SPOOL_RETRY);
        memset(&rj, 0, sizeof(rj));
        httpo_fmt_response(&lk, &c, 400, b, n, &aux, &v, on_reject, &rj);
        assert_int_equal(rj.n, 4);
        if (n < sizeof(otlp_partial)) {
            memcpy(b, otlp_partial, n);
            b[n] = '\0';
            httpo_fmt_response(&ot, &c, 200, b, n, NULL, &v, on_reject, &rj);
            assert_int_equal(v.result, SPOOL_OK);
        }
        free(b);
    }
    spool_buf_free(&body);
    spool_buf_free(&aux);
    httpo_fmt_free(&lk);
}

/* ---- the pure helpers ---- */

static void strftime_templates(void **state)
{
    (void)state;
    httpo_tfmt t;
    char buf[128];
    assert_int_equal(httpo_tfmt_init(&t, "x-{{ host }}-%Y.%m.%d-%%"), 0);
    assert_int_equal(httpo_tfmt_render(&t, &recs[0], "app", buf, sizeof(buf)), 19);
    assert_string_equal(buf, "x-web1-2024.01.02-%");
    assert_int_equal(httpo_tfmt_render(&t, &recs[3], "app", buf, sizeof(buf)), 19);
    assert_string_equal(buf, "x-web1-2024.01.03-%");
    assert_int_equal(httpo_tfmt_render(&t, &recs[3], "app", buf, 5), 4);
    assert_string_equal(buf, "x-we");
    httpo_tfmt_free(&t);
    char ts[64];
    httpo_rfc3339(1704164645678, ts);
    assert_string_equal(ts, "2024-01-02T03:04:05.678Z");
    httpo_rfc3339(-1, ts);
    assert_string_equal(ts, "1969-12-31T23:59:59.999Z");
}

/* The grouping loki and otlp share: entries ordered by key bytes (a prefix
 * first), then timestamp, then index; equal keys found; the array grows. */
static void grouping_entries(void **state)
{
    (void)state;
    httpo_fmt f = {0};
    const uint8_t keys[] = "abab"
                           "abc"
                           "ab";
    httpo_ent *e = httpo_ents(&f, 2);
    assert_non_null(e);
    e = httpo_ents(&f, 5);
    assert_non_null(e);
    assert_true(f.ents_cap >= 5);
    e[0] = (httpo_ent){0, 2, 7, 0}; /* "ab" ts 7 */
    e[1] = (httpo_ent){4, 3, 0, 1}; /* "abc" */
    e[2] = (httpo_ent){2, 2, 5, 2}; /* "ab" ts 5 */
    e[3] = (httpo_ent){7, 2, 5, 3}; /* "ab" ts 5, a later index */
    e[4] = (httpo_ent){0, 1, 9, 4}; /* "a" */
    qsort_r(e, 5, sizeof(*e), httpo_ent_cmp, (void *)keys);
    size_t order[5];
    for (size_t i = 0; i < 5; i++) {
        order[i] = e[i].idx;
    }
    assert_int_equal(order[0], 4);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 3);
    assert_int_equal(order[3], 0);
    assert_int_equal(order[4], 1);
    assert_true(httpo_ent_same(keys, &e[1], &e[3]));
    assert_false(httpo_ent_same(keys, &e[0], &e[1]));
    assert_false(httpo_ent_same(keys, &e[3], &e[4]));
    free(f.ents);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(es_body),
        cmocka_unit_test(loki_body),
        cmocka_unit_test(otlp_body),
        cmocka_unit_test(encode_twice),
        cmocka_unit_test(options_variants),
        cmocka_unit_test(loki_structured_metadata),
        cmocka_unit_test(es_responses),
        cmocka_unit_test(loki_responses),
        cmocka_unit_test(otlp_responses),
        cmocka_unit_test(truncated_responses),
        cmocka_unit_test(strftime_templates),
        cmocka_unit_test(grouping_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
