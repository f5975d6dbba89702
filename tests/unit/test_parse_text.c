/*
 * test_parse_text.c: the json, logfmt, kv and csv parsers of the `parse` processor
 * (processors/parse_text.c, compiled into this file with its allocations routed to
 * cmocka's test_realloc so a leaked scratch fails the test and allocations can be counted
 * or made to fail).
 *
 * Fields are collected as "name=value|" strings and compared with the expected text.
 * Each error case checks the reported byte offset and a part of the message. The timing
 * test prints ns per ~200-byte line for each parser; it asserts nothing about speed.
 */
#define _GNU_SOURCE
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

static long alloc_calls;        /* reallocations made so far */
static long alloc_fail_at = -1; /* the reallocation (alloc_calls value) that fails; -1 none */

static void *counted_realloc(void *p, size_t n)
{
    if (alloc_calls++ == alloc_fail_at) {
        return NULL;
    }
    return test_realloc(p, n);
}

#define PARSE_REALLOC(p, n) counted_realloc((p), (n))
#define PARSE_FREE(p) test_free(p)
#include "../../processors/parse_text.c"

/* ---- collecting fields ---- */

typedef struct sink {
    char text[4096]; /* "name=value|" per field */
    size_t len;
    int calls;
    int stop_at; /* return -ENOSPC from this call (1-based); 0 = never */
} sink;

static int collect(void *arg, const char *name, size_t name_len, const uint8_t *val, size_t val_len)
{
    sink *s = arg;
    s->calls++;
    assert_true(name_len + val_len + 2 < sizeof(s->text) - s->len);
    assert_null(memchr(name, '\0', name_len));
    memcpy(s->text + s->len, name, name_len);
    s->len += name_len;
    s->text[s->len++] = '=';
    memcpy(s->text + s->len, val, val_len);
    s->len += val_len;
    s->text[s->len++] = '|';
    s->text[s->len] = '\0';
    return s->calls == s->stop_at ? -ENOSPC : 0;
}

enum { F_JSON, F_LOGFMT, F_KV, F_CSV };

static const char *const abc[] = {"a", "b", "c"};

static int run(int fmt, const char *in, size_t n, const void *opt, sink *s, parse_error *err)
{
    parse_scratch sc = {0};
    int rc;
    switch (fmt) {
    case F_JSON:
        rc = parse_json((const uint8_t *)in, n, &sc, collect, s, err);
        break;
    case F_LOGFMT:
        rc = parse_logfmt((const uint8_t *)in, n, &sc, collect, s, err);
        break;
    case F_KV:
        rc = parse_kv((const uint8_t *)in, n, opt, &sc, collect, s, err);
        break;
    default:
        rc = parse_csv((const uint8_t *)in, n, opt, &sc, collect, s, err);
        break;
    }
    parse_scratch_free(&sc);
    return rc;
}

/* Parses `in` and checks the fields; `want` NULL means "expect an error". */
static void check_ok(int fmt, const void *opt, const char *in, size_t n, const char *want)
{
    sink s = {0};
    parse_error err = {0};
    int rc = run(fmt, in, n, opt, &s, &err);
    if (rc != 0) {
        fail_msg("%s: unexpected error at byte %zu: %s", in, err.offset, err.message);
    }
    if (strcmp(s.text, want) != 0) {
        fail_msg("input  %s\nfields %s\nwanted %s", in, s.text, want);
    }
}

#define OK(fmt, opt, in, want) check_ok((fmt), (opt), (in), sizeof(in) - 1, (want))

typedef struct bad_case {
    const char *in;
    size_t offset;
    const char *msg; /* a part of the message */
} bad_case;

static void check_bad(int fmt, const void *opt, const bad_case *cases, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        sink s = {0};
        parse_error err = {0};
        int rc = run(fmt, cases[i].in, strlen(cases[i].in), opt, &s, &err);
        if (rc != -EINVAL || err.offset != cases[i].offset || !strstr(err.message, cases[i].msg)) {
            fail_msg("input %s: rc %d offset %zu message \"%s\"; wanted -EINVAL, offset %zu, "
                     "\"%s\"",
                     cases[i].in, rc, err.offset, err.message, cases[i].offset, cases[i].msg);
        }
    }
}

/* ---- json ---- */

static void json_values(void **state)
{
    (void)state;
    OK(F_JSON, NULL, "{\"a\":\"x\",\"b\":1,\"c\":true,\"d\":null,\"e\":-1.5e3,\"f\":false,\"g\":0}",
       "a=x|b=1|c=true|d=null|e=-1.5e3|f=false|g=0|");
    OK(F_JSON, NULL, " \t\r\n{ \"a\" : \"\" , \"b\" :\n2 } \n", "a=|b=2|");
    OK(F_JSON, NULL, "{}", "");
    OK(F_JSON, NULL, "{\"a\":1,\"a\":2}", "a=1|a=2|");
    OK(F_JSON, NULL, "{\"\":1}", "=1|");
    OK(F_JSON, NULL, "{\"n\":0.5E+10,\"m\":-0,\"k\":12e-2}", "n=0.5E+10|m=-0|k=12e-2|");
}

static void json_nested(void **state)
{
    (void)state;
    OK(F_JSON, NULL, "{\"http\":{\"status\":500,\"req\":{\"path\":\"/a\"}},\"x\":1}",
       "http.status=500|http.req.path=/a|x=1|");
    OK(F_JSON, NULL, "{\"a\":{},\"b\":{\"c\":{}},\"d\":1}", "a={}|b.c={}|d=1|");
    OK(F_JSON, NULL, "{\"a\":{ },\"b\":2}", "a={ }|b=2|");
    OK(F_JSON, NULL, "{\"a\":[1,{\"b\":[2]},\"s\"],\"c\":[],\"d\":[ ]}",
       "a=[1,{\"b\":[2]},\"s\"]|c=[]|d=[ ]|");
    OK(F_JSON, NULL, "{\"a\\\"b\":{\"c\\nd\":\"v\\u0041\"}}", "a\"b.c\nd=vA|");
    OK(F_JSON, NULL, "{\"o\":{\"p\":{\"q\":\"x\\ty\"},\"r\":\"z\"},\"s\":{\"t\":1}}",
       "o.p.q=x\ty|o.r=z|s.t=1|");
}

static void json_escapes(void **state)
{
    (void)state;
    OK(F_JSON, NULL, "{\"s\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"}", "s=a\"b\\c/d\b\f\n\r\t|");
    OK(F_JSON, NULL, "{\"u\":\"\\u00e9\\u20AC\\ud83d\\ude00\",\"k\\u0041\":1}",
       "u=\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|kA=1|");
    OK(F_JSON, NULL, "{\"u\":\"\\u0024\\u07ff\\uffff\\udbff\\udfff\"}",
       "u=$\xdf\xbf\xef\xbf\xbf\xf4\x8f\xbf\xbf|");
    OK(F_JSON, NULL, "{\"raw\":\"\xc3\xa9\"}", "raw=\xc3\xa9|");

    /* \u0000 in a value is a NUL byte in the value. */
    sink s = {0};
    const char in[] = "{\"z\":\"a\\u0000b\"}";
    assert_int_equal(run(F_JSON, in, sizeof(in) - 1, NULL, &s, NULL), 0);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.text, "z=a\0b|", 6);
}

static void json_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"", 0, "expected a JSON object"},
        {"   ", 3, "the end of the line"},
        {"[1]", 0, "expected a JSON object ('{'), found '['"},
        {"\"a\"", 0, "expected a JSON object"},
        {"{\"a\":1} x", 8, "unexpected 'x' after the JSON object"},
        {"{\"a\":1}{}", 7, "after the JSON object"},
        {"{\"a\":1,}", 7, "expected a key"},
        {"{a:1}", 1, "expected a key (a string), found 'a'"},
        {"{\"a\" 1}", 5, "expected ':' after a key"},
        {"{\"a\":01}", 6, "expected ',' or '}' after a value, found '1'"},
        {"{\"a\":1.}", 7, "digit after '.'"},
        {"{\"a\":-}", 6, "expected a digit"},
        {"{\"a\":1e}", 7, "exponent"},
        {"{\"a\":+1}", 5, "expected a value, found '+'"},
        {"{\"a\":tru}", 5, "expected a value"},
        {"{\"a\":}", 5, "expected a value, found '}'"},
        {"{\"a\":", 5, "expected a value, found the end of the line"},
        {"{\"a\":1", 6, "expected ',' or '}' after a value, found the end of the line"},
        {"{\"a\":\"x\\q\"}", 7, "invalid escape: backslash followed by 'q'"},
        {"{\"a\":\"x\\", 5, "unterminated string"},
        {"{\"a\":\"\\u12\"}", 6, "expected 4 hex digits"},
        {"{\"a\":\"\\u12g4\"}", 6, "expected 4 hex digits"},
        {"{\"a\":\"\\ud83d\"}", 6, "unpaired surrogate \\ud83d"},
        {"{\"a\":\"\\ude00\"}", 6, "unpaired surrogate \\ude00"},
        {"{\"a\":\"\\ud83d\\u0041\"}", 6, "unpaired surrogate"},
        {"{\"a\":\"\\ud83dx\"}", 6, "unpaired surrogate"},
        {"{\"a\":\"x", 5, "unterminated string"},
        {"{\"a", 1, "unterminated string"},
        {"{\"a\":\"x\ty\"}", 7, "control byte 0x09"},
        {"{\"a\":[1,2}", 9, "expected ',' or ']'"},
        {"{\"a\":[1,]}", 8, "expected a value"},
        {"{\"a\":[{\"b\" 1}]}", 11, "expected ':'"},
        {"{\"a\":[\"\\x\"]}", 7, "invalid escape"},
        {"{\"a\":[tru]}", 6, "expected a value"},
        {"{\"a\":{\"b\":1,}}", 12, "expected a key"},
        {"{\"\\u0000\":1}", 1, "NUL"},
        {"{\"a\":{\"b\\u0000\":1}}", 6, "NUL"},
        {"{\"a\":1}\x01", 7, "unexpected byte 0x01"},
    };
    check_bad(F_JSON, NULL, cases, sizeof(cases) / sizeof(cases[0]));
}

static void json_depth(void **state)
{
    (void)state;
    char buf[1024];
    size_t n = 0;
    /* 64 nested objects are accepted; the name has 63 dots. */
    for (int i = 0; i < 64; i++) {
        n += (size_t)sprintf(buf + n, "{\"k\":");
    }
    n -= 5;
    n += (size_t)sprintf(buf + n, "{\"v\":1");
    for (int i = 0; i < 64; i++) {
        buf[n++] = '}';
    }
    buf[n] = '\0';
    sink s = {0};
    parse_error err = {0};
    /* 63 "{"k": and one {"v":1 are 64 levels. */
    assert_int_equal(run(F_JSON, buf, n, NULL, &s, &err), 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(strlen(s.text), 63 * 2 + 1 + 2 + 1);

    /* 65 levels: the 65th '{' is the error. */
    n = 0;
    for (int i = 0; i < 65; i++) {
        n += (size_t)sprintf(buf + n, "{\"k\":");
    }
    n += (size_t)sprintf(buf + n, "1");
    for (int i = 0; i < 65; i++) {
        buf[n++] = '}';
    }
    buf[n] = '\0';
    memset(&s, 0, sizeof(s));
    assert_int_equal(run(F_JSON, buf, n, NULL, &s, &err), -EINVAL);
    assert_int_equal(err.offset, 64 * 5);
    assert_non_null(strstr(err.message, "deeper than 64"));

    /* Arrays count too: an object holding 63 nested arrays is 64 levels, 64 are 65. */
    for (int arrays = 63; arrays <= 64; arrays++) {
        n = (size_t)sprintf(buf, "{\"a\":");
        for (int i = 0; i < arrays; i++) {
            buf[n++] = '[';
        }
        for (int i = 0; i < arrays; i++) {
            buf[n++] = ']';
        }
        buf[n++] = '}';
        buf[n] = '\0';
        memset(&s, 0, sizeof(s));
        int rc = run(F_JSON, buf, n, NULL, &s, &err);
        if (arrays == 63) {
            assert_int_equal(rc, 0);
            assert_int_equal(s.calls, 1);
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_int_equal(err.offset, 5 + 63);
        }
    }
}

/* Fields before an error are emitted; a callback's non-zero return stops the parse. */
static void json_partial_and_stop(void **state)
{
    (void)state;
    sink s = {0};
    parse_error err = {0};
    const char bad[] = "{\"a\":1,\"b\":x}";
    assert_int_equal(run(F_JSON, bad, sizeof(bad) - 1, NULL, &s, &err), -EINVAL);
    assert_string_equal(s.text, "a=1|");
    assert_int_equal(err.offset, 11);

    const char good[] = "{\"a\":1,\"b\":{\"c\":2},\"d\":3}";
    memset(&s, 0, sizeof(s));
    s.stop_at = 2;
    assert_int_equal(run(F_JSON, good, sizeof(good) - 1, NULL, &s, NULL), -ENOSPC);
    assert_int_equal(s.calls, 2);
    assert_string_equal(s.text, "a=1|b.c=2|");
}

/* After the first line, parsing lines no longer than it allocates nothing. */
static void scratch_steady_state(void **state)
{
    (void)state;
    const char line[] = "{\"user\":{\"na\\u006de\":\"j\\u00f6rg\",\"id\":7},\"msg\":\"a\\nb\"}";
    parse_scratch sc = {0};
    sink s = {0};
    alloc_calls = 0;
    assert_int_equal(parse_json((const uint8_t *)line, sizeof(line) - 1, &sc, collect, &s, NULL),
                     0);
    long first = alloc_calls;
    assert_true(first >= 1 && first <= 2);
    for (int i = 0; i < 100; i++) {
        s.len = 0;
        s.calls = 0;
        assert_int_equal(
            parse_json((const uint8_t *)line, sizeof(line) - 1, &sc, collect, &s, NULL), 0);
        assert_int_equal(
            parse_logfmt((const uint8_t *)"a=\"x\\ty\" b=2", 12, &sc, collect, &s, NULL), 0);
        assert_int_equal(parse_kv((const uint8_t *)"a='x\\'y'", 8, NULL, &sc, collect, &s, NULL),
                         0);
        assert_int_equal(
            parse_csv((const uint8_t *)"\"a\"\"b\",c", 8, NULL, &sc, collect, &s, NULL), 0);
    }
    assert_int_equal(alloc_calls, first);
    parse_scratch_free(&sc);
    parse_scratch_free(&sc); /* twice is fine */
    parse_scratch_free(NULL);
}

static void out_of_memory(void **state)
{
    (void)state;
    const char line[] = "{\"a\":{\"b\":\"x\\ny\"}}";
    for (int fmt = F_JSON; fmt <= F_CSV; fmt++) {
        sink s = {0};
        alloc_calls = 0;
        alloc_fail_at = 0;
        assert_int_equal(run(fmt, line, sizeof(line) - 1, NULL, &s, NULL), -ENOMEM);
        assert_int_equal(s.calls, 0);
        alloc_fail_at = -1;
    }
}

/* ---- logfmt ---- */

static void logfmt_values(void **state)
{
    (void)state;
    OK(F_LOGFMT, NULL, "key=value key2=\"quoted \\\" value\" flag a= b=\"\" c=x",
       "key=value|key2=quoted \" value|flag=true|a=|b=|c=x|");
    OK(F_LOGFMT, NULL, "  \tlevel=info   msg=\"a=b c\"\t", "level=info|msg=a=b c|");
    OK(F_LOGFMT, NULL, "", "");
    OK(F_LOGFMT, NULL, "   ", "");
    OK(F_LOGFMT, NULL, "a=\"x\"b=1", "a=x|b=1|");
    OK(F_LOGFMT, NULL, "u=\"\\u00e9\\n\" k.x/y:z=1", "u=\xc3\xa9\n|k.x/y:z=1|");
    OK(F_LOGFMT, NULL, "\xc3\xa9t\xc3\xa9=\xe2\x82\xac", "\xc3\xa9t\xc3\xa9=\xe2\x82\xac|");
    OK(F_LOGFMT, NULL, "a=1\nb=2", "a=1|b=2|");
    OK(F_LOGFMT, NULL, "a", "a=true|");
}

static void logfmt_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"a=b\"c", 3, "unexpected '\"' in an unquoted value"},
        {"a=b=c", 3, "unexpected '='"},
        {"=x", 0, "a key is missing"},
        {"ok=1 =x", 5, "a key is missing"},
        {"a\"b=1", 1, "unexpected '\"' in a key"},
        {"\"a\"=1", 0, "unexpected '\"' in a key"},
        {"a=\"x", 2, "unterminated string"},
        {"a=1 b=\"\\q\"", 7, "invalid escape"},
        {"a=\"x\ty\"", 4, "control byte"},
    };
    check_bad(F_LOGFMT, NULL, cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- kv ---- */

static void kv_values(void **state)
{
    (void)state;
    OK(F_KV, NULL, "a=1 b=\"two words\" c  d=x=y e='it\\'s' f= g=\"C:\\dir\\\\\"",
       "a=1|b=two words|c=true|d=x=y|e=it's|f=|g=C:\\dir\\|");
    OK(F_KV, NULL, "\ta=1\t\tb=2 ", "a=1|b=2|");
    OK(F_KV, NULL, "", "");
    OK(F_KV, NULL, "'k k'=v \"q\"", "k k=v|q=true|");
    parse_kv_options comma = {.field_sep = ',', .kv_sep = ':'};
    OK(F_KV, &comma, "a:1, b : 2 ,c:\"x,y\" ,d,,e: ' z '", "a=1|b=2|c=x,y|d=true|e= z |");
    OK(F_KV, &comma, "msg:hello world,n:1", "msg=hello world|n=1|");
    parse_kv_options pipe = {.field_sep = '|'};
    OK(F_KV, &pipe, "a=1|b=2", "a=1|b=2|");
    parse_kv_options tab = {.field_sep = '\t'};
    OK(F_KV, &tab, "a=x y\tb=2", "a=x y|b=2|");
    OK(F_KV, &tab, "a=\tb= 1 \t c", "a=|b=1|c=true|");
    parse_kv_options amp = {.field_sep = '&', .kv_sep = ':'};
    OK(F_KV, &amp, "user:bob&id:7&q:\"a&b\"", "user=bob|id=7|q=a&b|");
}

static void kv_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"=1", 0, "empty key"},
        {"a=1 =2", 4, "empty key"},
        {"\"\"=1", 0, "empty key"},
        {"a=\"x", 2, "unterminated quote"},
        {"a='x\\'", 2, "unterminated quote"},
        {"a=\"x\"y", 5, "expected a separator after a quoted value, found 'y'"},
        {"\"k\"x=1", 3, "expected '=' or a separator after a quoted key"},
    };
    check_bad(F_KV, NULL, cases, sizeof(cases) / sizeof(cases[0]));

    parse_kv_options comma = {.field_sep = ','};
    static const bad_case comma_cases[] = {
        {"a=\"x\" y,b=1", 6, "expected a separator after a quoted value, found 'y'"},
        {"a=1, =2", 5, "empty key"},
    };
    check_bad(F_KV, &comma, comma_cases, sizeof(comma_cases) / sizeof(comma_cases[0]));

    static const parse_kv_options clash[] = {
        {.field_sep = '=', .kv_sep = '='},
        {.field_sep = ',', .kv_sep = ','},
        {.field_sep = '"'},
        {.kv_sep = '\''},
        {.kv_sep = ' '},
        {.kv_sep = '\t'},
    };
    for (size_t i = 0; i < sizeof(clash) / sizeof(clash[0]); i++) {
        sink s = {0};
        parse_error err = {0};
        assert_int_equal(run(F_KV, "a=1", 3, &clash[i], &s, &err), -EINVAL);
        assert_non_null(strstr(err.message, "invalid separators"));
        assert_int_equal(s.calls, 0);
    }

    sink s = {0};
    parse_error err = {0};
    assert_int_equal(run(F_KV, "a\0b=1", 5, NULL, &s, &err), -EINVAL);
    assert_int_equal(err.offset, 0);
    assert_non_null(strstr(err.message, "NUL"));
    memset(&s, 0, sizeof(s));
    assert_int_equal(run(F_KV, "x=1 \"a\0b\"=1", 11, NULL, &s, &err), -EINVAL);
    assert_int_equal(err.offset, 4);
    assert_non_null(strstr(err.message, "NUL"));
    memset(&s, 0, sizeof(s));
    assert_int_equal(run(F_KV, "a=x\0y", 5, NULL, &s, &err), 0);
    assert_int_equal(s.len, 6);
    assert_memory_equal(s.text, "a=x\0y|", 6);
}

/* ---- csv ---- */

static void csv_values(void **state)
{
    (void)state;
    parse_csv_options cols = {.columns = abc, .n_columns = 3};
    OK(F_CSV, &cols, "1,\"two, 2\",\"say \"\"hi\"\"\",4,", "a=1|b=two, 2|c=say \"hi\"|_4=4|_5=|");
    OK(F_CSV, &cols, "\"x\ny\",z", "a=x\ny|b=z|");
    OK(F_CSV, &cols, "1,2\r\n", "a=1|b=2|");
    OK(F_CSV, &cols, "1,2\n", "a=1|b=2|");
    OK(F_CSV, &cols, "1", "a=1|");
    OK(F_CSV, &cols, "", "a=|");
    OK(F_CSV, &cols, ",,", "a=|b=|c=|");
    OK(F_CSV, &cols, "\"\",\"\"\"\"", "a=|b=\"|");
    OK(F_CSV, &cols, "a\rb,c", "a=a\rb|b=c|");
    OK(F_CSV, &cols, "\"q\"\r\n", "a=q|");
    OK(F_CSV, NULL, "x,y", "_1=x|_2=y|");
    parse_csv_options semi = {.sep = ';', .columns = abc, .n_columns = 2};
    OK(F_CSV, &semi, "1,5;\"a;b\";c", "a=1,5|b=a;b|_3=c|");
    parse_csv_options tab = {.sep = '\t', .columns = abc, .n_columns = 3};
    OK(F_CSV, &tab, "a b\t\"c\td\"", "a=a b|b=c\td|");
}

static void csv_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"a\"b", 1, "'\"' in an unquoted field"},
        {"\"a\"b", 3, "expected a separator after the closing quote, found 'b'"},
        {"\"a\" ,b", 3, "expected a separator after the closing quote, found ' '"},
        {"x,\"abc", 2, "unterminated quote"},
        {"\"a\"\"", 0, "unterminated quote"},
        {"a\nb", 1, "a newline outside quotes"},
        {"a,b\n\n", 3, "a newline outside quotes"},
    };
    check_bad(F_CSV, NULL, cases, sizeof(cases) / sizeof(cases[0]));

    static const char bad_seps[] = {'"', '\n', '\r'};
    for (size_t i = 0; i < sizeof(bad_seps); i++) {
        parse_csv_options opt = {.sep = bad_seps[i]};
        sink s = {0};
        parse_error err = {0};
        assert_int_equal(run(F_CSV, "a,b", 3, &opt, &s, &err), -EINVAL);
        assert_non_null(strstr(err.message, "invalid separator"));
        assert_int_equal(s.calls, 0);
    }
}

/* ---- timing (printed, not asserted) ---- */

static int count_fields(void *arg, const char *name, size_t name_len, const uint8_t *val,
                        size_t val_len)
{
    (void)name;
    (void)name_len;
    (void)val;
    *(size_t *)arg += val_len;
    return 0;
}

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void timing(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "{\"time\":\"2026-12-01T13:57:02.123Z\",\"level\":\"error\",\"msg\":\"upstream timed "
        "out\",\"http\":{\"method\":\"GET\",\"path\":\"/api/v1/users/42\",\"status\":504,"
        "\"bytes\":1234},\"duration_ms\":30001.5,\"retry\":false}",
        "time=2026-12-01T13:57:02.123Z level=error msg=\"upstream timed out\" method=GET "
        "path=/api/v1/users/42 status=504 bytes=1234 duration_ms=30001.5 retry=false "
        "host=web-3 trace=4bf92f3577b34da6",
        "time=2026-12-01T13:57:02.123Z level=error msg='upstream timed out' method=GET "
        "path=/api/v1/users/42 status=504 bytes=1234 duration_ms=30001.5 retry=false "
        "host=web-3 trace=4bf92f3577b34da6",
        "2026-12-01T13:57:02.123Z,error,\"upstream timed out\",GET,/api/v1/users/42,504,1234,"
        "30001.5,false,web-3,4bf92f3577b34da6a3ce929d0e0e4736,\"Mozilla/5.0 (X11; Linux "
        "x86_64)\"",
    };
    static const char *const names[] = {"json", "logfmt", "kv", "csv"};
    parse_csv_options cols = {.columns = abc, .n_columns = 3};
    parse_scratch sc = {0};
    enum { BATCHES = 20, LINES = 10000 }; /* the fastest batch is reported: less noise */
    for (int fmt = F_JSON; fmt <= F_CSV; fmt++) {
        const uint8_t *in = (const uint8_t *)lines[fmt];
        size_t n = strlen(lines[fmt]);
        size_t sum = 0;
        double best = 0;
        for (int b = 0; b < BATCHES; b++) {
            double t0 = cpu_ns();
            for (int r = 0; r < LINES; r++) {
                int rc;
                switch (fmt) {
                case F_JSON:
                    rc = parse_json(in, n, &sc, count_fields, &sum, NULL);
                    break;
                case F_LOGFMT:
                    rc = parse_logfmt(in, n, &sc, count_fields, &sum, NULL);
                    break;
                case F_KV:
                    rc = parse_kv(in, n, NULL, &sc, count_fields, &sum, NULL);
                    break;
                default:
                    rc = parse_csv(in, n, &cols, &sc, count_fields, &sum, NULL);
                    break;
                }
                assert_int_equal(rc, 0);
            }
            double ns = (cpu_ns() - t0) / LINES;
            if (b == 0 || ns < best) {
                best = ns;
            }
        }
        assert_true(sum > 0);
        printf("parse %-6s %3zu-byte line: %6.1f ns/line (CPU, best of %d x %d lines)\n",
               names[fmt], n, best, BATCHES, LINES);
    }
    parse_scratch_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_values),
        cmocka_unit_test(json_nested),
        cmocka_unit_test(json_escapes),
        cmocka_unit_test(json_errors),
        cmocka_unit_test(json_depth),
        cmocka_unit_test(json_partial_and_stop),
        cmocka_unit_test(scratch_steady_state),
        cmocka_unit_test(out_of_memory),
        cmocka_unit_test(logfmt_values),
        cmocka_unit_test(logfmt_errors),
        cmocka_unit_test(kv_values),
        cmocka_unit_test(kv_errors),
        cmocka_unit_test(csv_values),
        cmocka_unit_test(csv_errors),
        cmocka_unit_test(timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
