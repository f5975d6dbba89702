/*
 * test_syslog.c: the syslog sample table (inputs/socket/syslog_parse.c).
 *
 * Valid RFC 3164 (with and without hostname, pid, timestamp), valid RFC
 * 5424 with and without structured data, with a BOM, nil fields, broken
 * messages and garbage, each with the fields it must yield. Timestamps are
 * checked with TZ=UTC and a fixed "now".
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "spool/spool.h"
#include "../../inputs/socket/syslog_parse.h"

#define NOW_MS 1795514400000LL /* 2026-11-24T10:00:00Z */
#define ABSENT ((const char *)0)
#define BOM "\xEF\xBB\xBF"

typedef struct sample {
    const char *in;
    int format; /* SYSLOG_FMT_* */
    int facility, severity;
    const char *hostname, *appname, *procid, *msgid, *sd;
    const char *msg;
    const char *error; /* substring of m.error, for unparseable samples */
    int64_t time_ms;   /* 0 = no timestamp */
} sample;

static const sample samples[] = {
    /* RFC 3164, the RFC's own example. */
    {"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
     SYSLOG_FMT_RFC3164, 4, 2, "mymachine", "su", ABSENT, ABSENT, ABSENT,
     "'su root' failed for lonvick on /dev/pts/8", ABSENT, 1791756855000LL},
    /* With a pid. */
    {"<13>Nov 24 09:43:07 host1 myapp[1234]: hello world", SYSLOG_FMT_RFC3164, 1, 5, "host1",
     "myapp", "1234", ABSENT, ABSENT, "hello world", ABSENT, 1795513387000LL},
    /* Local sender (logger on /dev/log): no hostname, space-padded day. */
    {"<13>Nov  4 09:43:07 myapp[99]: local msg", SYSLOG_FMT_RFC3164, 1, 5, ABSENT, "myapp", "99",
     ABSENT, ABSENT, "local msg", ABSENT, 1793785387000LL},
    {"<13>Nov 24 09:43:07 tag: with tag only", SYSLOG_FMT_RFC3164, 1, 5, ABSENT, "tag", ABSENT,
     ABSENT, ABSENT, "with tag only", ABSENT, 1795513387000LL},
    /* More than a week in the future this year: last year's. */
    {"<13>Dec 31 23:59:59 h t: old", SYSLOG_FMT_RFC3164, 1, 5, "h", "t", ABSENT, ABSENT, ABSENT,
     "old", ABSENT, 1767225599000LL},
    /* No timestamp: everything after PRI is the message (a tag is still found). */
    {"<13>just a message", SYSLOG_FMT_RFC3164, 1, 5, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "just a message", ABSENT, 0},
    {"<13>app: hi\r\n", SYSLOG_FMT_RFC3164, 1, 5, ABSENT, "app", ABSENT, ABSENT, ABSENT, "hi",
     ABSENT, 0},
    {"<0>", SYSLOG_FMT_RFC3164, 0, 0, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, "", ABSENT, 0},
    /* RFC 3164 framing with an RFC 3339 timestamp (rsyslog's forward format). */
    {"<30>2026-11-24T09:43:07.123+01:00 web01 nginx[5]: GET /", SYSLOG_FMT_RFC3164, 3, 6, "web01",
     "nginx", "5", ABSENT, ABSENT, "GET /", ABSENT, 1795509787123LL},
    /* RFC 5424 example 1: no SD, BOM before the message. */
    {"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - " BOM
     "'su root' failed for lonvick on /dev/pts/8",
     SYSLOG_FMT_RFC5424, 4, 2, "mymachine.example.com", "su", ABSENT, "ID47", ABSENT,
     "'su root' failed for lonvick on /dev/pts/8", ABSENT, 1065910455003LL},
    /* RFC 5424 example 2: offset, no MSGID, no SD. */
    {"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make "
     "the do-nuts.",
     SYSLOG_FMT_RFC5424, 20, 5, "192.0.2.1", "myproc", "8710", ABSENT, ABSENT,
     "%% It's time to make the do-nuts.", ABSENT, 1061727255000LL},
    /* RFC 5424 example 3: structured data and a message. */
    {"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 "
     "iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] " BOM "An application event",
     SYSLOG_FMT_RFC5424, 20, 5, "mymachine.example.com", "evntslog", ABSENT, "ID47",
     "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]",
     "An application event", ABSENT, 1065910455003LL},
    /* RFC 5424 example 4: two SD elements, no message. */
    {"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 "
     "iut=\"3\"][examplePriority@32473 class=\"high\"]",
     SYSLOG_FMT_RFC5424, 20, 5, "mymachine.example.com", "evntslog", ABSENT, "ID47",
     "[exampleSDID@32473 iut=\"3\"][examplePriority@32473 class=\"high\"]", "", ABSENT,
     1065910455003LL},
    /* logger --rfc5424 as util-linux writes it. */
    {"<13>1 2026-11-24T09:43:07.123456+00:00 myhost user - - [timeQuality tzKnown=\"1\" "
     "isSynced=\"0\"] hello",
     SYSLOG_FMT_RFC5424, 1, 5, "myhost", "user", ABSENT, ABSENT,
     "[timeQuality tzKnown=\"1\" isSynced=\"0\"]", "hello", ABSENT, 1795513387123LL},
    /* Every field nil. */
    {"<14>1 - - - - - -", SYSLOG_FMT_RFC5424, 1, 6, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, "",
     ABSENT, 0},
    {"<14>1 - - - - - - msg only", SYSLOG_FMT_RFC5424, 1, 6, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "msg only", ABSENT, 0},
    /* Escapes inside an SD value stay raw in `sd`. */
    {"<14>1 - h a p m [id@1 k=\"a\\\"b\\\\c\\]d\"] x", SYSLOG_FMT_RFC5424, 1, 6, "h", "a", "p", "m",
     "[id@1 k=\"a\\\"b\\\\c\\]d\"]", "x", ABSENT, 0},
    /* Broken RFC 5424: unparseable, kept whole, with the reason. */
    {"<14>1 2003-10-11T22:14:15.003Z host", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT,
     ABSENT, "<14>1 2003-10-11T22:14:15.003Z host", "APP-NAME", 0},
    {"<14>1 2003-13-11T22:14:15Z h a p m - x", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT,
     ABSENT, ABSENT, "<14>1 2003-13-11T22:14:15Z h a p m - x", "TIMESTAMP", 0},
    {"<14>1 - h a p m [unterminated x=\"y\"", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT,
     ABSENT, ABSENT, "<14>1 - h a p m [unterminated x=\"y\"", "SD-ELEMENT", 0},
    {"<14>1 - h a p m [id x=y]", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "<14>1 - h a p m [id x=y]", "SD-PARAM", 0},
    {"<14>1 - h a p m", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "<14>1 - h a p m", "STRUCTURED-DATA", 0},
    {"<14>1 - h appname-longer-than-forty-eight-characters-is-not-allowed p m - x", SYSLOG_FMT_NONE,
     -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "<14>1 - h appname-longer-than-forty-eight-characters-is-not-allowed p m - x", "APP-NAME", 0},
    /* Garbage. */
    {"hello world", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, "hello world",
     "no PRI", 0},
    {"", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, "", "no PRI", 0},
    {"<192>1 - - - - - -", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "<192>1 - - - - - -", "greater than 191", 0},
    {"<013>Oct 11 22:14:15 h t: x", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT,
     "<013>Oct 11 22:14:15 h t: x", "leading zero", 0},
    {"<1a>x", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, "<1a>x",
     "invalid PRI", 0},
    {"<", SYSLOG_FMT_NONE, -1, -1, ABSENT, ABSENT, ABSENT, ABSENT, ABSENT, "<", "invalid PRI", 0},
};

static void check_span(const char *what, const char *in, syslog_span got, const char *want)
{
    if (want == ABSENT) {
        if (got.p != NULL) {
            fail_msg("%s: %s should be absent, got \"%.*s\"", in, what, (int)got.n, got.p);
        }
        return;
    }
    if (got.p == NULL && want[0] != '\0') {
        fail_msg("%s: %s absent, want \"%s\"", in, what, want);
    }
    if (got.n != strlen(want) || (got.n > 0 && memcmp(got.p, want, got.n) != 0)) {
        fail_msg("%s: %s is \"%.*s\", want \"%s\"", in, what, (int)got.n, got.p, want);
    }
}

static void sample_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const sample *s = &samples[i];
        syslog_msg m;
        int rc = syslog_parse((const uint8_t *)s->in, strlen(s->in), &m);
        if ((int)m.format != s->format) {
            fail_msg("sample %zu \"%s\": format %d, want %d (error %s)", i, s->in, m.format,
                     s->format, m.error ? m.error : "-");
        }
        assert_int_equal(rc, s->format == SYSLOG_FMT_NONE ? -EINVAL : 0);
        assert_int_equal(m.facility, s->facility);
        assert_int_equal(m.severity, s->severity);
        check_span("hostname", s->in, m.hostname, s->hostname);
        check_span("appname", s->in, m.appname, s->appname);
        check_span("procid", s->in, m.procid, s->procid);
        check_span("msgid", s->in, m.msgid, s->msgid);
        check_span("sd", s->in, m.sd, s->sd);
        check_span("msg", s->in, m.msg, s->msg);
        if (s->error != ABSENT) {
            assert_non_null(m.error);
            if (strstr(m.error, s->error) == NULL) {
                fail_msg("sample %zu: error \"%s\" lacks \"%s\"", i, m.error, s->error);
            }
        } else {
            assert_null(m.error);
        }
        int64_t t = syslog_time_ms(&m, NOW_MS);
        if (t != s->time_ms) {
            fail_msg("sample %zu \"%s\": time %lld, want %lld", i, s->in, (long long)t,
                     (long long)s->time_ms);
        }
    }
}

static void bom_flag(void **state)
{
    (void)state;
    syslog_msg m;
    const char *in = "<14>1 - - - - - - " BOM "x";
    assert_int_equal(syslog_parse((const uint8_t *)in, strlen(in), &m), 0);
    assert_int_equal(m.has_bom, 1);
    assert_int_equal(m.msg.n, 1);
}

static void sd_iteration(void **state)
{
    (void)state;
    const char *in = "<165>1 - h a - - [exampleSDID@32473 iut=\"3\" eventSource=\"App\"][empty@1]"
                     "[esc@1 v=\"a\\\"b\\\\c\\]d\\x\"] msg";
    syslog_msg m;
    assert_int_equal(syslog_parse((const uint8_t *)in, strlen(in), &m), 0);
    syslog_sd_iter it;
    syslog_span id;
    syslog_span name;
    syslog_span value;
    char buf[64];
    syslog_sd_begin(&it, m.sd);

    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 1);
    assert_int_equal(id.n, strlen("exampleSDID@32473"));
    assert_memory_equal(name.p, "iut", 3);
    assert_memory_equal(value.p, "3", 1);
    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 1);
    assert_memory_equal(name.p, "eventSource", 11);
    assert_int_equal(value.n, 3);
    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 1);
    assert_memory_equal(id.p, "empty@1", 7);
    assert_null(name.p);
    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 1);
    assert_memory_equal(id.p, "esc@1", 5);
    size_t n = syslog_sd_unescape(value.p, value.n, (uint8_t *)buf);
    buf[n] = '\0';
    assert_string_equal(buf, "a\"b\\c]d\\x");
    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 0);
    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 0);

    syslog_span none = {NULL, 0};
    syslog_sd_begin(&it, none);
    assert_int_equal(syslog_sd_next(&it, &id, &name, &value), 0);
}

static void names(void **state)
{
    (void)state;
    assert_string_equal(spool_syslog_facility_name(0), "kern");
    assert_string_equal(spool_syslog_facility_name(16), "local0");
    assert_string_equal(spool_syslog_facility_name(23), "local7");
    assert_null(spool_syslog_facility_name(24));
    assert_null(spool_syslog_facility_name(-1));
    assert_string_equal(spool_syslog_severity_name(3), "err");
    assert_string_equal(spool_syslog_severity_name(7), "debug");
    assert_null(spool_syslog_severity_name(8));
    assert_int_equal(spool_syslog_facility_from_name("local3"), 19);
    assert_int_equal(spool_syslog_facility_from_name("AUTH"), 4);
    assert_int_equal(spool_syslog_facility_from_name("7"), 7);
    assert_int_equal(spool_syslog_facility_from_name("24"), -1);
    assert_int_equal(spool_syslog_facility_from_name("nope"), -1);
    assert_int_equal(spool_syslog_severity_from_name("warning"), 4);
    assert_int_equal(spool_syslog_severity_from_name("warn"), 4);
    assert_int_equal(spool_syslog_severity_from_name("error"), 3);
    assert_int_equal(spool_syslog_severity_from_name(""), -1);
}

/* Every prefix of every sample parses without reading past its end
 * (run under ASan: the copies are exact-size heap blocks). */
static void prefixes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        size_t len = strlen(samples[i].in);
        for (size_t k = 0; k <= len; k++) {
            uint8_t *copy = malloc(k ? k : 1);
            assert_non_null(copy);
            memcpy(copy, samples[i].in, k);
            syslog_msg m;
            syslog_parse(copy, k, &m);
            assert_true(m.msg.n <= k);
            syslog_sd_iter it;
            syslog_span a;
            syslog_span b;
            syslog_span c;
            syslog_sd_begin(&it, m.sd);
            while (syslog_sd_next(&it, &a, &b, &c)) {
            }
            free(copy);
        }
    }
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sample_table), cmocka_unit_test(bom_flag), cmocka_unit_test(sd_iteration),
        cmocka_unit_test(names),        cmocka_unit_test(prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
