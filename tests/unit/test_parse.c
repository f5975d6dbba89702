/*
 * test_parse.c: the `parse` processor (processors/parse/): each format through the real
 * plugin (a config file loaded by the core's loader, init, process on a batch), each
 * timestamp format (time zones, fractions, year-less syslog times), on_error keep, drop
 * and dead_letter, prefix, source from a header, keep_original, collisions with the
 * record's own parts, malformed lines, and `spool check`'s errors with their positions.
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

#include "../../processors/parse/parse_time.h"

/* ---- fixture: a service with one stdin input, topics main and dead, one parse ---- */

typedef struct fx {
    char path[64];
    spool_service_conf conf;
    spool_errors errs;
    spool_service svc;
    spool_instance *proc;
    int nerr;
    int inited;
    char *rendered; /* the errors as `spool check` prints them */
} fx;

/* Loads a config whose only processor is `parse` with the option lines in opts (each
 * "    name: value\n"). Returns the number of config errors. */
static int fx_load(fx *f, const char *opts)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "/tmp/spool-test-parse-XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    assert_non_null(fp);
    fprintf(fp,
            "service: { data_dir: /tmp/spool-test-parse-no-such-dir }\n"
            "topics:\n"
            "  main: { partitions: 1 }\n"
            "  dead: { partitions: 1 }\n"
            "inputs:\n"
            "  - type: stdin\n"
            "    topic: main\n"
            "processors:\n"
            "  - type: parse\n"
            "%s",
            opts);
    fclose(fp);
    f->nerr = spool_service_conf_load(f->path, &f->conf, &f->errs);
    size_t len = 0;
    FILE *ms = open_memstream(&f->rendered, &len);
    spool_errors_print(&f->errs, ms);
    fclose(ms);
    return f->nerr;
}

/* Loads and inits; fails the test on any config error. */
static void fx_start(fx *f, const char *opts)
{
    if (fx_load(f, opts) != 0) {
        fprintf(stderr, "unexpected config errors:\n%s", f->rendered);
        fail();
    }
    f->svc.conf = &f->conf;
    f->proc = f->conf.processors[0];
    f->proc->svc = &f->svc;
    f->conf.inputs[0]->svc = &f->svc;
    f->conf.inputs[0]->topic = 0;
    assert_int_equal(f->proc->plugin->init(f->proc, f->proc->ctx), 0);
    f->inited = 1;
}

static void fx_end(fx *f)
{
    if (f->inited) {
        f->proc->plugin->destroy(f->proc, f->proc->ctx);
    }
    spool_service_conf_free(&f->conf);
    spool_errors_free(&f->errs);
    free(f->rendered);
    unlink(f->path);
}

/* Expects config errors, one of which contains `want` (e.g. ":12:14: processors[0].pattern:
 * bad regex at position 3"). */
static void expect_config_error(const char *opts, const char *want)
{
    fx f;
    assert_true(fx_load(&f, opts) > 0);
    if (!strstr(f.rendered, want)) {
        fprintf(stderr, "wanted \"%s\" in:\n%s", want, f.rendered);
        fail();
    }
    fx_end(&f);
}

/* A batch of records (values; NULL = a null value), each with header src=hsrc when hsrc
 * is given, processed by the fixture's parse. Dropped records are gone afterwards. */
static spool_batch *run_hdr(fx *f, const char *const *values, size_t n, const char *hsrc)
{
    spool_batch *b = spool_batch_create(f->conf.inputs[0]);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        spool_header h = {"src", 3, (const uint8_t *)hsrc, hsrc ? (int32_t)strlen(hsrc) : -1};
        spool_record r = {0};
        r.key = (const uint8_t *)"k1";
        r.key_len = 2;
        r.value = (const uint8_t *)values[i];
        r.value_len = values[i] ? (int32_t)strlen(values[i]) : -1;
        r.headers = hsrc ? &h : NULL;
        r.header_count = hsrc ? 1 : 0;
        r.timestamp = 1000;
        assert_int_equal(spool_batch_append(b, &r), 0);
    }
    spool__batch_begin_process(b, f->proc);
    assert_int_equal(f->proc->plugin->process(f->proc, f->proc->ctx, b), 0);
    assert_int_equal(spool__batch_end_process(b), 0);
    return b;
}

static spool_batch *run1(fx *f, const char *line)
{
    const char *v[1] = {line};
    return run_hdr(f, v, 1, NULL);
}

/* Asserts header `name` of record i is `want` (NULL: absent). */
static void expect_hdr(spool_batch *b, size_t i, const char *name, const char *want)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    const spool_header *h = spool_record_header(&r, name);
    if (!want) {
        if (h) {
            fprintf(stderr, "header %s: expected none, got '%.*s'\n", name, (int)h->value_len,
                    (const char *)h->value);
            fail();
        }
        return;
    }
    if (!h || h->value_len != (int32_t)strlen(want) || memcmp(h->value, want, strlen(want))) {
        fprintf(stderr, "header %s: expected '%s', got '%.*s'\n", name, want,
                h ? (int)h->value_len : 6, h ? (const char *)h->value : "(none)");
        fail();
    }
}

/* Asserts record i has a parse_error header containing `part`, and no other new field. */
static void expect_error(spool_batch *b, size_t i, const char *part)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    const spool_header *h = spool_record_header(&r, "parse_error");
    assert_non_null(h);
    char msg[300];
    snprintf(msg, sizeof(msg), "%.*s", (int)h->value_len, (const char *)h->value);
    if (!strstr(msg, part)) {
        fprintf(stderr, "parse_error '%s' lacks '%s'\n", msg, part);
        fail();
    }
}

static size_t header_count(spool_batch *b, size_t i)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    return r.header_count;
}

static int64_t ts_of(spool_batch *b, size_t i)
{
    spool_record r;
    spool_batch_get(b, i, &r);
    return r.timestamp;
}

/* ---- formats ---- */

static void test_json(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: json\n");
    spool_batch *b =
        run1(&f, "{\"msg\":\"a \\\"b\\\"\",\"http\":{\"status\":503,\"req\":{\"path\":\"/x\"}},"
                 "\"ok\":true,\"n\":null,\"tags\":[1,\"x\"],\"e\":{}}");
    expect_hdr(b, 0, "msg", "a \"b\"");
    expect_hdr(b, 0, "http.status", "503");
    expect_hdr(b, 0, "http.req.path", "/x");
    expect_hdr(b, 0, "ok", "true");
    expect_hdr(b, 0, "n", "null");
    expect_hdr(b, 0, "tags", "[1,\"x\"]");
    expect_hdr(b, 0, "e", "{}");
    expect_hdr(b, 0, "parse_error", NULL);
    /* keep_original defaults to true: the value is the line. */
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.value[0], '{');
    spool_batch_destroy(b);
    /* Malformed: nothing but the error, the value kept. */
    b = run1(&f, "{\"a\":1,\"b\":}");
    expect_error(b, 0, "json: ");
    expect_error(b, 0, "at byte 11");
    expect_hdr(b, 0, "a", NULL);
    assert_int_equal(header_count(b, 0), 1);
    spool_batch_destroy(b);
    fx_end(&f);
}

static void test_logfmt_kv_csv(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: logfmt\n");
    spool_batch *b = run1(&f, "level=info msg=\"hello world\" dur=1.5ms flag");
    expect_hdr(b, 0, "level", "info");
    expect_hdr(b, 0, "msg", "hello world");
    expect_hdr(b, 0, "dur", "1.5ms");
    expect_hdr(b, 0, "flag", "true");
    spool_batch_destroy(b);
    b = run1(&f, "a=\"unterminated");
    expect_error(b, 0, "logfmt: ");
    spool_batch_destroy(b);
    fx_end(&f);

    fx_start(&f, "    format: kv\n    separator: ','\n    kv_separator: ':'\n");
    b = run1(&f, "user: alice, id:42,role:'admin team'");
    expect_hdr(b, 0, "user", "alice");
    expect_hdr(b, 0, "id", "42");
    expect_hdr(b, 0, "role", "admin team");
    spool_batch_destroy(b);
    fx_end(&f);

    fx_start(&f, "    format: csv\n    columns: [time, level, msg]\n    separator: ';'\n");
    b = run1(&f, "2024-01-01;WARN;\"disk; 91%\";extra");
    expect_hdr(b, 0, "time", "2024-01-01");
    expect_hdr(b, 0, "level", "WARN");
    expect_hdr(b, 0, "msg", "disk; 91%");
    expect_hdr(b, 0, "_4", "extra");
    spool_batch_destroy(b);
    b = run1(&f, "a;\"b\"c");
    expect_error(b, 0, "csv: ");
    spool_batch_destroy(b);
    fx_end(&f);
}

static void test_regex(void **state)
{
    (void)state;
    fx f;
    fx_start(&f,
             "    format: regex\n"
             "    pattern: '^(?<level>[A-Z]+) +(?<comp>\\S+): (?<msg>.*?)(?: id=(?<id>\\d+))?$'\n");
    const char *v[2] = {"INFO  dfs.DataNode: PacketResponder 1 terminating id=7",
                        "WARN net: link down"};
    spool_batch *b = run_hdr(&f, v, 2, NULL);
    expect_hdr(b, 0, "level", "INFO");
    expect_hdr(b, 0, "comp", "dfs.DataNode");
    expect_hdr(b, 0, "msg", "PacketResponder 1 terminating");
    expect_hdr(b, 0, "id", "7");
    expect_hdr(b, 1, "msg", "link down");
    expect_hdr(b, 1, "id", NULL); /* an optional group that did not match: no field */
    spool_batch_destroy(b);
    b = run1(&f, "lowercase: nope");
    expect_error(b, 0, "regex: the pattern did not match");
    spool_batch_destroy(b);
    fx_end(&f);
    /* Catastrophic backtracking fails the record, within the match limit. */
    fx_start(&f, "    format: regex\n    pattern: '(?<a>(a+)+)$'\n");
    b = run1(&f, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab");
    expect_error(b, 0, "regex: matching failed: match limit exceeded");
    spool_batch_destroy(b);
    fx_end(&f);
}

static void test_syslog(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: syslog\n");
    const char *v[4] = {
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        "[exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ication\"][x@1 a=\"]\"] "
        "\xef\xbb\xbf"
        "An application event",
        "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8",
        "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; uid=0",
        "Jun  4 05:06:07 kernel: oops"};
    spool_batch *b = run_hdr(&f, v, 4, NULL);
    expect_hdr(b, 0, "facility", "local4");
    expect_hdr(b, 0, "severity", "notice");
    expect_hdr(b, 0, "time", "2003-10-11T22:14:15.003Z");
    expect_hdr(b, 0, "host", "mymachine.example.com");
    expect_hdr(b, 0, "app", "evntslog");
    expect_hdr(b, 0, "procid", NULL); /* "-" */
    expect_hdr(b, 0, "msgid", "ID47");
    expect_hdr(b, 0, "sd.exampleSDID@32473.iut", "3");
    expect_hdr(b, 0, "sd.exampleSDID@32473.eventSource", "Appl\"ication");
    expect_hdr(b, 0, "sd.x@1.a", "]");
    expect_hdr(b, 0, "message", "An application event");
    expect_hdr(b, 1, "facility", "auth");
    expect_hdr(b, 1, "severity", "crit");
    expect_hdr(b, 1, "time", "Oct 11 22:14:15");
    expect_hdr(b, 1, "host", "mymachine");
    expect_hdr(b, 1, "app", "su");
    expect_hdr(b, 1, "procid", "123");
    expect_hdr(b, 1, "message", "'su root' failed for lonvick on /dev/pts/8");
    expect_hdr(b, 2, "facility", NULL);
    expect_hdr(b, 2, "host", "combo");
    expect_hdr(b, 2, "app", "sshd(pam_unix)");
    expect_hdr(b, 2, "procid", "19939");
    expect_hdr(b, 2, "message", "authentication failure; uid=0");
    expect_hdr(b, 3, "time", "Jun  4 05:06:07");
    expect_hdr(b, 3, "host", NULL);
    expect_hdr(b, 3, "app", "kernel");
    expect_hdr(b, 3, "message", "oops");
    spool_batch_destroy(b);
    const char *badv[3] = {"<999>Oct 11 22:14:15 h a: m", "hello world",
                           "<1>1 2003-10-11T22:14:15Z h a p m [bad"};
    b = run_hdr(&f, badv, 3, NULL);
    expect_error(b, 0, "bad <PRI>");
    expect_error(b, 1, "expected a syslog timestamp");
    expect_error(b, 2, "expected ']' closing an SD-ELEMENT at byte 38");
    spool_batch_destroy(b);
    fx_end(&f);
}

static const char *const nginx_line =
    "203.0.113.9 - alice [10/Oct/2023:13:55:36 +0200] \"GET /api/v1/items?id=3 HTTP/1.1\" 503 "
    "1234 \"https://example.com/a \\\"q\\\"\" \"curl/8.1 (x86_64)\"";

static void test_access_logs(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: nginx_combined\n"
                 "    timestamp: { field: time, format: '%d/%b/%Y:%H:%M:%S %z' }\n");
    spool_batch *b = run1(&f, nginx_line);
    expect_hdr(b, 0, "client", "203.0.113.9");
    expect_hdr(b, 0, "ident", NULL);
    expect_hdr(b, 0, "user", "alice");
    expect_hdr(b, 0, "time", "10/Oct/2023:13:55:36 +0200");
    expect_hdr(b, 0, "request", "GET /api/v1/items?id=3 HTTP/1.1");
    expect_hdr(b, 0, "method", "GET");
    expect_hdr(b, 0, "path", "/api/v1/items?id=3");
    expect_hdr(b, 0, "protocol", "HTTP/1.1");
    expect_hdr(b, 0, "status", "503");
    expect_hdr(b, 0, "size", "1234");
    expect_hdr(b, 0, "referer", "https://example.com/a \\\"q\\\"");
    expect_hdr(b, 0, "agent", "curl/8.1 (x86_64)");
    assert_int_equal(ts_of(b, 0), 1696938936000LL); /* 2023-10-10T11:55:36Z */
    spool_batch_destroy(b);
    const char *bad[4] = {"203.0.113.9 - - [10/Oct/2023:13:55:36 +0200] \"GET / HTTP/1.1\" 5xx 1 "
                          "\"-\" \"-\"",
                          "203.0.113.9 - - [10/Oct/2023:13:55:36 +0200] \"GET / HTTP/1.1", "",
                          "203.0.113.9 - - [10/Oct/2023:13:55:36 +0200] \"-\" 400 0 \"-\" "
                          "\"-\" trailing"};
    b = run_hdr(&f, bad, 4, NULL);
    expect_error(b, 0, "expected a 3-digit status at byte 62");
    expect_error(b, 1, "unterminated the request");
    expect_error(b, 2, "expected the client address");
    expect_error(b, 3, "unexpected bytes after the last field");
    spool_batch_destroy(b);
    fx_end(&f);

    fx_start(&f, "    format: apache_common\n");
    b = run1(&f, "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" "
                 "200 2326\r\n");
    expect_hdr(b, 0, "client", "127.0.0.1");
    expect_hdr(b, 0, "ident", "-");
    expect_hdr(b, 0, "user", "frank");
    expect_hdr(b, 0, "path", "/apache_pb.gif");
    expect_hdr(b, 0, "size", "2326");
    expect_hdr(b, 0, "referer", NULL);
    spool_batch_destroy(b);
    fx_end(&f);

    fx_start(&f, "    format: apache_combined\n    prefix: http.\n");
    b = run1(&f, "::1 - - [10/Oct/2000:13:55:36 -0700] \"-\" 408 - \"-\" \"-\"");
    expect_hdr(b, 0, "http.client", "::1");
    expect_hdr(b, 0, "http.request", "-");
    expect_hdr(b, 0, "http.method", NULL); /* not "METHOD TARGET" */
    expect_hdr(b, 0, "http.status", "408");
    expect_hdr(b, 0, "http.size", "-");
    expect_hdr(b, 0, "http.agent", "-");
    expect_hdr(b, 0, "client", NULL);
    spool_batch_destroy(b);
    fx_end(&f);
}

/* ---- timestamps ---- */

static int64_t tparse(const char *fmt, const char *text, int64_t now_ms)
{
    parse_time_format tf;
    char why[200];
    int64_t ms = 0;
    assert_int_equal(parse_time_compile(fmt, &tf, why, sizeof(why), NULL), 0);
    if (parse_time(&tf, (const uint8_t *)text, strlen(text), now_ms, &ms, why, sizeof(why)) < 0) {
        return INT64_MIN;
    }
    return ms;
}

static void test_time_formats(void **state)
{
    (void)state;
    const int64_t base = 1696938936000LL; /* 2023-10-10T11:55:36Z */
    assert_int_equal(tparse("rfc3339", "2023-10-10T11:55:36Z", 0), base);
    assert_int_equal(tparse("rfc3339", "2023-10-10t11:55:36.5z", 0), base + 500);
    assert_int_equal(tparse("rfc3339", "2023-10-10T13:55:36.123456+02:00", 0), base + 123);
    assert_int_equal(tparse("rfc3339", "2023-10-10T06:25:36-0530", 0), base);
    assert_int_equal(tparse("rfc3339", "2023-10-10 11:55:36", 0), base); /* no zone: UTC */
    assert_int_equal(tparse("rfc3339", "2023-13-10T11:55:36Z", 0), INT64_MIN);
    assert_int_equal(tparse("rfc3339", "2023-10-10T11:55:36Zjunk", 0), INT64_MIN);
    assert_int_equal(tparse("rfc3339", "2023-10-10T11:55:36.Z", 0), INT64_MIN);
    assert_int_equal(tparse("unix", "1696938936", 0), base);
    assert_int_equal(tparse("unix", "1696938936.25", 0), base + 250);
    assert_int_equal(tparse("unix", "16969x", 0), INT64_MIN);
    assert_int_equal(tparse("unix_ms", "1696938936007", 0), base + 7);
    assert_int_equal(tparse("unix_us", "1696938936007999", 0), base + 7);
    assert_int_equal(tparse("unix_ns", "1696938936007999999", 0), base + 7);
    /* strptime, with %z in its forms and %f (1 to 9 digits). */
    assert_int_equal(tparse("%d/%b/%Y:%H:%M:%S %z", "10/Oct/2023:13:55:36 +0200", 0), base);
    assert_int_equal(tparse("%d/%b/%Y:%H:%M:%S %z", "10/Oct/2023:03:55:36 -08:00", 0), base);
    assert_int_equal(tparse("%Y-%m-%dT%H:%M:%S%z", "2023-10-10T11:55:36Z", 0), base);
    assert_int_equal(tparse("%Y-%m-%d %H:%M:%S,%f", "2023-10-10 11:55:36,747", 0), base + 747);
    assert_int_equal(tparse("%Y-%m-%d %H:%M:%S.%f %z", "2023-10-10 13:55:36.5 +0200", 0),
                     base + 500);
    assert_int_equal(tparse("%y%m%d %H%M%S", "231010 115536", 0), base);
    assert_int_equal(tparse("%d/%b/%Y:%H:%M:%S %z", "10/Oct/2023:13:55:36", 0), INT64_MIN);
    assert_int_equal(tparse("%Y-%m-%d", "2023-10-10 extra", 0), INT64_MIN);
    /* Without a year: the closest year before now (a day of slack). */
    assert_int_equal(tparse("%b %d %H:%M:%S", "Oct 10 11:55:36", base + 3600000), base);
    assert_int_equal(tparse("%b %d %H:%M:%S", "Oct 10 11:55:36", base - 3600000), base);
    const int64_t dec31_2022 = 1672487999000LL; /* 2022-12-31T11:59:59Z */
    assert_int_equal(tparse("%b %d %H:%M:%S", "Dec 31 11:59:59", 1672704000000LL /* Jan 3 */),
                     dec31_2022);
    /* Formats the hand-written reader does not know go through glibc's strptime. */
    assert_int_equal(tparse("%d/%b/%Y %I:%M:%S %p", "10/Oct/2023 11:55:36 AM", 0), base);
    assert_int_equal(tparse("%Y %j %H:%M:%S", "2023 283 11:55:36", 0), base);
    assert_int_equal(tparse("%a %b %d %H:%M:%S %Y", "Tue Oct 10 11:55:36 2023", 0), base);
    /* Formats refused at compile time. */
    parse_time_format tf;
    char why[200];
    assert_int_equal(parse_time_compile("%Y-%Q", &tf, why, sizeof(why), NULL), -EINVAL);
    assert_non_null(strstr(why, "'%Q' at position 4"));
    assert_int_equal(parse_time_compile("iso8601", &tf, why, sizeof(why), NULL), -EINVAL);
    assert_non_null(strstr(why, "unknown time format 'iso8601'"));
    assert_int_equal(parse_time_compile("%s", &tf, why, sizeof(why), NULL), -EINVAL);
    assert_int_equal(parse_time_compile("%S.%f.%f", &tf, why, sizeof(why), NULL), -EINVAL);
    assert_int_equal(parse_time_compile("%Y%", &tf, why, sizeof(why), NULL), -EINVAL);
}

/* The hand-written reader and glibc's strptime agree (same format, fast flag off). */
static void test_time_fast_vs_strptime(void **state)
{
    (void)state;
    static const struct {
        const char *fmt, *text;
    } cases[] = {
        {"%d/%b/%Y:%H:%M:%S %z", "10/Oct/2023:13:55:36 +0200"},
        {"%d/%b/%Y:%H:%M:%S %z", "01/jan/1999:00:00:00 -1130"},
        {"%d/%b/%Y:%H:%M:%S %z", "1/February/2024:23:59:60 +00:00"},
        {"%d/%b/%Y:%H:%M:%S %z", "10/Oct/2023:13:55:36"},
        {"%d/%b/%Y:%H:%M:%S %z", "10/Okt/2023:13:55:36 +0200"},
        {"%d/%b/%Y:%H:%M:%S %z", "32/Oct/2023:13:55:36 +0200"},
        {"%Y-%m-%d %H:%M:%S", "2023-10-10   11:55:36"},
        {"%Y-%m-%d %H:%M:%S", "2023-10-10 11:55"},
        {"%Y-%m-%d %H:%M:%S", " 2023-1-2 3:4:5"},
        {"%b %e %T %Y", "Dec  4 04:47:44 2005"},
        {"%B %e %T %Y", "December 4 04:47:44 2005"},
        {"%F %T", "2015-07-29 17:41:44"},
        {"%y%m%d %H%M%S", "081109 203615"},
        {"%y%m%d %H%M%S", "691109 203615"},
        {"%b %d %H:%M:%S", "Jun 14 15:16:01"},
        {"%b %d %H:%M:%S", "Jun 14 15:16:01 x"},
        {"%Y-%m-%dT%H:%M:%S%z", "2023-10-10T11:55:36Z"},
        {"%Y-%m-%dT%H:%M:%S%z", "2023-10-10T11:55:36-0330"},
        {"%H:%M:%S %%", "11:55:36 %"},
    };
    const int64_t now = 1700000000000LL;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        parse_time_format fast, slow;
        char why[200];
        int64_t a = -1, b = -1;
        assert_int_equal(parse_time_compile(cases[k].fmt, &fast, why, sizeof(why), NULL), 0);
        assert_true(fast.fast);
        slow = fast;
        slow.fast = 0;
        size_t len = strlen(cases[k].text);
        int ra = parse_time(&fast, (const uint8_t *)cases[k].text, len, now, &a, why, sizeof(why));
        int rb = parse_time(&slow, (const uint8_t *)cases[k].text, len, now, &b, why, sizeof(why));
        if (ra != rb || (ra == 0 && a != b)) {
            fprintf(stderr, "'%s' by '%s': fast %d %lld, strptime %d %lld\n", cases[k].text,
                    cases[k].fmt, ra, (long long)a, rb, (long long)b);
            fail();
        }
    }
}

static void test_timestamp_field(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: json\n    prefix: j.\n"
                 "    timestamp: { field: j.ts, format: unix_ms }\n");
    const char *v[3] = {"{\"ts\":1696938936007,\"m\":1}", "{\"ts\":\"soon\"}", "{\"m\":2}"};
    spool_batch *b = run_hdr(&f, v, 3, NULL);
    assert_int_equal(ts_of(b, 0), 1696938936007LL);
    expect_hdr(b, 0, "j.m", "1");
    /* A bad or missing time is a parse error: the record keeps its timestamp. */
    assert_int_equal(ts_of(b, 1), 1000);
    expect_error(b, 1, "timestamp: 'soon' (field j.ts)");
    expect_hdr(b, 1, "j.ts", NULL);
    expect_error(b, 2, "timestamp: no field 'j.ts' was parsed");
    spool_batch_destroy(b);
    fx_end(&f);
    /* The name without the prefix works too. */
    fx_start(&f, "    format: logfmt\n    prefix: x_\n"
                 "    timestamp: { field: at, format: '%Y-%m-%dT%H:%M:%S.%f%z' }\n");
    b = run1(&f, "at=2023-10-10T13:55:36.25+02:00 m=1");
    assert_int_equal(ts_of(b, 0), 1696938936250LL);
    spool_batch_destroy(b);
    fx_end(&f);
}

/* ---- options ---- */

/* The value of metric `name` whose labels contain `labels`, summed; 0 if none. */
typedef struct metric_query {
    const char *name, *labels;
    int64_t sum;
} metric_query;

static void metric_add(void *arg, const spool_metric_sample *s)
{
    metric_query *q = arg;
    if (strcmp(s->name, q->name) == 0 && strstr(s->labels, q->labels)) {
        q->sum += s->value;
    }
}

static int64_t metric(const char *name, const char *labels)
{
    metric_query q = {name, labels, 0};
    spool_metrics_foreach(NULL, metric_add, &q);
    return q.sum;
}

static void test_on_error(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: json\n    on_error: drop\n");
    const char *v[3] = {"{\"a\":1}", "oops", "{\"a\":3}"};
    /* Counters of earlier fixtures' instances (same names) may still be registered: deltas. */
    int64_t drops0 = metric("spool_processor_dropped_total", "reason=\"parse_error\"");
    int64_t errors0 = metric("spool_parse_errors_total", "plugin=\"parse\"");
    int64_t dead0 = metric("spool_parse_dead_lettered_total", "plugin=\"parse\"");
    spool_batch *b = run_hdr(&f, v, 3, NULL);
    assert_int_equal(spool_batch_count(b), 2);
    assert_int_equal(metric("spool_processor_dropped_total", "reason=\"parse_error\"") - drops0, 1);
    assert_int_equal(metric("spool_parse_errors_total", "plugin=\"parse\"") - errors0, 1);
    expect_hdr(b, 0, "a", "1");
    expect_hdr(b, 1, "a", "3");
    spool_batch_destroy(b);
    fx_end(&f);

    fx_start(&f, "    format: json\n    on_error: dead_letter\n    dead_letter_topic: dead\n");
    b = run_hdr(&f, v, 3, NULL);
    assert_int_equal(spool_batch_count(b), 3);
    assert_int_equal(metric("spool_parse_dead_lettered_total", "plugin=\"parse\"") - dead0, 1);
    assert_string_equal(spool_batch_topic(b, 0), "main");
    assert_string_equal(spool_batch_topic(b, 1), "dead");
    assert_string_equal(spool_batch_topic(b, 2), "main");
    expect_error(b, 1, "json: expected a JSON object");
    spool_batch_destroy(b);
    fx_end(&f);
}

static void test_source_keep_original(void **state)
{
    (void)state;
    fx f;
    /* Source from a header, removed after the parse. */
    fx_start(&f, "    format: kv\n    source: src\n    keep_original: false\n");
    const char *v[1] = {"the line"};
    spool_batch *b = run_hdr(&f, v, 1, "a=1 b=2");
    expect_hdr(b, 0, "a", "1");
    expect_hdr(b, 0, "b", "2");
    expect_hdr(b, 0, "src", NULL);
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.value_len, 8); /* the value is not the source: untouched */
    spool_batch_destroy(b);
    b = run1(&f, "no header here");
    expect_error(b, 0, "the record has no field 'src'");
    spool_batch_destroy(b);
    fx_end(&f);

    /* keep_original: false on the value: a null value; kept on failure. */
    fx_start(&f, "    format: logfmt\n    keep_original: false\n");
    const char *w[2] = {"a=1", "a=\"x"};
    b = run_hdr(&f, w, 2, NULL);
    spool_batch_get(b, 0, &r);
    assert_null(r.value);
    assert_int_equal(r.value_len, -1);
    spool_batch_get(b, 1, &r);
    assert_int_equal(r.value_len, 4);
    spool_batch_destroy(b);
    fx_end(&f);

    /* Source: the key. */
    fx_start(&f, "    format: csv\n    source: key\n    columns: [c]\n");
    b = run1(&f, "v");
    expect_hdr(b, 0, "c", "k1");
    spool_batch_destroy(b);
    fx_end(&f);
}

static void test_collisions(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: json\n");
    spool_batch *b = run1(&f, "{\"key\":\"K\",\"value\":\"V\",\"timestamp\":5,\"topic\":\"t\","
                              "\"dup\":1,\"dup\":2}");
    /* Stored as headers; the record's own parts are unchanged. */
    expect_hdr(b, 0, "key", "K");
    expect_hdr(b, 0, "value", "V");
    expect_hdr(b, 0, "timestamp", "5");
    expect_hdr(b, 0, "topic", "t");
    expect_hdr(b, 0, "dup", "2"); /* the last of several */
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.key_len, 2);
    assert_int_equal(r.timestamp, 1000);
    assert_string_equal(spool_batch_topic(b, 0), "main");
    const uint8_t *val;
    size_t len;
    char scratch[SPOOL_FIELD_SCRATCH];
    assert_int_equal(spool_record_field(&r, "main", "key", 3, scratch, &val, &len), 1);
    assert_int_equal(len, 2); /* fields read the record's key */
    spool_batch_destroy(b);
    /* A field named like a header the record has replaces it (one header of that name). */
    const char *v[1] = {"{\"src\":\"new\",\"a\":1,\"src\":\"newer\"}"};
    b = run_hdr(&f, v, 1, "old");
    expect_hdr(b, 0, "src", "newer");
    expect_hdr(b, 0, "a", "1");
    assert_int_equal(header_count(b, 0), 2);
    spool_batch_destroy(b);
    fx_end(&f);
}

/* ---- spool_batch_add_headers (the record API call parse writes its fields with) ---- */

static void test_add_headers(void **state)
{
    (void)state;
    fx f;
    fx_start(&f, "    format: json\n");
    spool_batch *b = spool_batch_create(f.conf.inputs[0]);
    for (int k = 0; k < 2; k++) {
        spool_header h = {"h0", 2, (const uint8_t *)"v0", 2};
        spool_record r = {0};
        r.key_len = -1;
        r.value = (const uint8_t *)"line";
        r.value_len = 4;
        r.headers = &h;
        r.header_count = 1;
        assert_int_equal(spool_batch_append(b, &r), 0);
    }
    spool__batch_begin_process(b, f.proc);
    spool_record before;
    spool_batch_get(b, 0, &before);
    size_t bytes0 = spool_batch_bytes(b);
    /* Record 0's run is not the last one: copied to the end, then appended to. */
    spool_header add[3] = {{"a.b", 3, (const uint8_t *)"1", 1},
                           {"empty", 5, (const uint8_t *)"", 0},
                           {"nul", 3, NULL, -1}};
    assert_int_equal(spool_batch_add_headers(b, 0, add, 3), 0);
    assert_int_equal(spool_batch_bytes(b), bytes0 + 3 + 1 + 5 + 3);
    /* In place now (record 0's run is last). */
    spool_header more[1] = {{"c", 1, (const uint8_t *)"3", 1}};
    assert_int_equal(spool_batch_add_headers(b, 0, more, 1), 0);
    assert_int_equal(spool_batch_add_headers(b, 1, more, 1), 0);
    assert_int_equal(spool_batch_add_headers(b, 1, NULL, 0), 0);
    /* The view taken before still reads what it read. */
    assert_int_equal(before.header_count, 1);
    assert_memory_equal(before.headers[0].key, "h0", 2);
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.header_count, 5);
    static const char *const names[] = {"h0", "a.b", "empty", "nul", "c"};
    for (int k = 0; k < 5; k++) {
        assert_int_equal(r.headers[k].key_len, strlen(names[k]));
        assert_memory_equal(r.headers[k].key, names[k], strlen(names[k]));
    }
    assert_int_equal(r.headers[2].value_len, 0);
    assert_null(r.headers[3].value);
    assert_int_equal(r.headers[3].value_len, -1);
    assert_memory_equal(r.headers[4].value, "3", 1);
    spool_batch_get(b, 1, &r);
    assert_int_equal(r.header_count, 2);
    /* Then set replaces in the new run. */
    assert_int_equal(spool_batch_set_header(b, 0, "a.b", "9", 1), 0);
    spool_batch_get(b, 0, &r);
    assert_int_equal(r.header_count, 5);
    assert_memory_equal(r.headers[1].value, "9", 1);
    /* Bad arguments, a dropped record. */
    spool_header bad[1] = {{"x", 1, NULL, 4}};
    assert_int_equal(spool_batch_add_headers(b, 0, bad, 1), -EINVAL);
    assert_int_equal(spool_batch_add_headers(b, 0, NULL, 1), -EINVAL);
    assert_int_equal(spool_batch_add_headers(b, 2, more, 1), -EINVAL);
    assert_int_equal(spool_batch_drop(b, 1, "test"), 0);
    assert_int_equal(spool_batch_add_headers(b, 1, more, 1), -ENOENT);
    assert_int_equal(spool__batch_end_process(b), 0);
    spool_batch_destroy(b);
    fx_end(&f);
}

/* ---- config errors (what `spool check` prints) ---- */

static void test_config_errors(void **state)
{
    (void)state;
    /* Line 10 is the first option line of the processor. */
    expect_config_error("    format: regex\n    pattern: 'a(?<x>b'\n",
                        ":11:22: processors[0].pattern: bad regex at position 8 of the pattern: "
                        "missing closing parenthesis");
    expect_config_error("    format: regex\n    pattern: 'a(b)'\n", "has no named group");
    expect_config_error("    format: regex\n", "format: regex needs a pattern");
    expect_config_error("    format: jsn\n", "processors[0].format");
    expect_config_error("    source: value\n", "missing required option 'format'");
    expect_config_error("    format: json\n    pattern: x\n",
                        "processors[0].pattern: only used with format: regex (format is json)");
    expect_config_error("    format: json\n    columns: [a]\n", "only used with format: csv");
    expect_config_error("    format: csv\n    separator: ';;'\n",
                        "processors[0].separator: must be exactly one character");
    expect_config_error("    format: csv\n    separator: '\"'\n", "cannot be a separator");
    expect_config_error("    format: kv\n    separator: ':'\n    kv_separator: ':'\n",
                        "must differ from the pair separator");
    expect_config_error("    format: json\n    kv_separator: ':'\n", "only used with format: kv");
    expect_config_error("    format: json\n    on_error: dead_letter\n",
                        "dead_letter needs dead_letter_topic");
    expect_config_error("    format: json\n    dead_letter_topic: dead\n",
                        "only used with on_error: dead_letter");
    expect_config_error("    format: json\n    on_error: dead_letter\n    dead_letter_topic: ded\n",
                        ":12:24: processors[0].dead_letter_topic: topic 'ded' is not defined in "
                        "topics");
    expect_config_error("    format: json\n    on_error: ignore\n", "processors[0].on_error");
    expect_config_error("    format: json\n    timestamp: { field: t, format: '%Y %Q' }\n",
                        ":11:40: processors[0].timestamp.format: unknown conversion '%Q' at "
                        "position 4");
    expect_config_error("    format: json\n    timestamp: { format: unix }\n",
                        "needs timestamp.field");
    expect_config_error("    format: json\n    source: topic\n    keep_original: false\n",
                        "false cannot remove the record's topic");
    expect_config_error("    format: json\n    source: ''\n", "must name a field");
    expect_config_error("    format: csv\n    columns: [a, '']\n", "column 2 has an empty name");
    expect_config_error("    format: json\n    prefx: a\n", "did you mean 'prefix'");
    /* A valid config loads without errors. */
    fx f;
    assert_int_equal(fx_load(&f, "    format: regex\n    pattern: '(?<a>x)'\n"), 0);
    fx_end(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_logfmt_kv_csv),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_syslog),
        cmocka_unit_test(test_access_logs),
        cmocka_unit_test(test_time_formats),
        cmocka_unit_test(test_time_fast_vs_strptime),
        cmocka_unit_test(test_timestamp_field),
        cmocka_unit_test(test_on_error),
        cmocka_unit_test(test_source_keep_original),
        cmocka_unit_test(test_collisions),
        cmocka_unit_test(test_add_headers),
        cmocka_unit_test(test_config_errors),
    };
    if (spool_registry_init() != 0) {
        return 1;
    }
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    spool_registry_reset();
    return rc;
}
