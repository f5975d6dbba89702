/*
 * test_expr.c: the condition language (agent/expr_parse.c, agent/expr_eval.c,
 * docs/conditions.md).
 *
 * Both are compiled into this file with their allocations routed to cmocka's test_malloc,
 * so every test fails on a leaked block, and the out-of-memory test makes each
 * allocation of a compile (PCRE2's included) fail in turn. The symbols defined here take
 * the place of spool_core's expr_parse.o and expr_eval.o, which the linker then leaves out.
 *
 * Records are arrays of (name, value) pairs read by a field accessor that counts its
 * calls. The timing test prints ns per evaluation; it asserts nothing about speed.
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

static long alloc_countdown = -1; /* allocations left before one fails; -1 = none fails */

static void *counted_malloc(size_t n)
{
    if (alloc_countdown == 0) {
        return NULL;
    }
    if (alloc_countdown > 0) {
        alloc_countdown--;
    }
    return test_malloc(n);
}

static void *counted_realloc(void *p, size_t n)
{
    if (alloc_countdown == 0) {
        return NULL;
    }
    if (alloc_countdown > 0) {
        alloc_countdown--;
    }
    return test_realloc(p, n);
}

#define EXPR_MALLOC(n) counted_malloc(n)
#define EXPR_REALLOC(p, n) counted_realloc((p), (n))
#define EXPR_FREE(p) test_free(p)
#include "../../agent/expr_eval.c"
#include "../../agent/expr_parse.c"

/* ---- records ---- */

#define MAX_FIELDS 16

typedef struct rec {
    const char *name[MAX_FIELDS];
    const char *val[MAX_FIELDS];
    size_t len[MAX_FIELDS];
    size_t n;
    unsigned calls; /* accessor calls */
} rec;

static int rec_get(void *ctx, const char *name, size_t name_len, const uint8_t **val,
                   size_t *val_len)
{
    rec *r = ctx;
    r->calls++;
    assert_int_equal(strlen(name), name_len); /* NUL-terminated, as documented */
    for (size_t i = 0; i < r->n; i++) {
        if (strlen(r->name[i]) == name_len && memcmp(r->name[i], name, name_len) == 0) {
            *val = (const uint8_t *)r->val[i];
            *val_len = r->len[i];
            return 1;
        }
    }
    return 0;
}

/* R(&r, "status", "503", "path", "/api", NULL) */
static rec *R(rec *r, ...)
{
    va_list ap;
    memset(r, 0, sizeof(*r));
    va_start(ap, r);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        assert_true(r->n < MAX_FIELDS);
        r->name[r->n] = name;
        r->val[r->n] = va_arg(ap, const char *);
        r->len[r->n] = strlen(r->val[r->n]);
        r->n++;
    }
    va_end(ap);
    return r;
}

static spool_expr *compile_ok(const char *src)
{
    spool_expr *e = NULL;
    spool_expr_error err;
    int rc = spool_expr_compile(src, strlen(src), &e, &err);
    if (rc != 0) {
        fail_msg("compile '%s': %d at column %zu: %s", src, rc, err.column, err.message);
    }
    return e;
}

/* Compiles, evaluates against r, frees. */
static int ev(const char *src, rec *r)
{
    spool_expr *e = compile_ok(src);
    int res = spool_expr_eval(e, rec_get, r);
    spool_expr_free(e);
    return res;
}

#define EXPECT(src, r, want)                                                                       \
    do {                                                                                           \
        int got_ = ev((src), (r));                                                                 \
        if (got_ != (want)) {                                                                      \
            fail_msg("'%s' gave %d, want %d", (src), got_, (want));                                \
        }                                                                                          \
    } while (0)

/* ---- tests ---- */

static void test_precedence(void **state)
{
    rec r;
    R(&r, "a", "1", "b", "0", "c", "0", NULL);
    EXPECT("true or false and false", &r, 1); /* and before or */
    EXPECT("(true or false) and false", &r, 0);
    EXPECT("false and false or true", &r, 1);
    EXPECT("not false and false", &r, 0); /* (not false) and false */
    EXPECT("not (false and false)", &r, 1);
    EXPECT("false or not false", &r, 1);
    EXPECT("not not true", &r, 1);
    EXPECT("not exists(zz) and a == 1", &r, 1);
    EXPECT("a == 1 or b == 2 and c == 3", &r, 1);
    EXPECT("(a == 1 or b == 2) and c == 3", &r, 0);
    EXPECT("a == 1 and (b == 0 or c == 9) and not (c == 0 and b == 1)", &r, 1);
    EXPECT("((((a == 1))))", &r, 1);
    EXPECT("true", &r, 1);
    EXPECT("false", &r, 0);
    EXPECT("a==1 and b==0", &r, 1); /* no spaces needed */
    EXPECT("a == 0 or a == 2 or a == 1", &r, 1);
    EXPECT("a == 1 and b == 0 and c == 1", &r, 0);
}

static void test_numeric_vs_string(void **state)
{
    rec r;
    R(&r, "status", "503", "big", "1000", "neg", "-1.5e3", "word", "abc", "one", "1", NULL);
    EXPECT("status >= 500", &r, 1);
    EXPECT("status < 500", &r, 0);
    EXPECT("big > 500", &r, 1);     /* numeric, though "1000" < "500" as bytes */
    EXPECT("big > \"500\"", &r, 0); /* a quoted literal is a string: bytewise */
    EXPECT("big == \"1000\"", &r, 1);
    EXPECT("status == \"503\"", &r, 1);
    EXPECT("neg < 0", &r, 1);
    EXPECT("neg == -1500", &r, 1);
    EXPECT("neg == -1.5e3", &r, 1);
    EXPECT("one == 1.0", &r, 1);
    EXPECT("one == 1e0", &r, 1);
    EXPECT("one == \"1.0\"", &r, 0);
    EXPECT("word > 500", &r, 1); /* not a number: "abc" > "500" bytewise */
    EXPECT("word == 500", &r, 0);
    EXPECT("word < \"abd\"", &r, 1);
    EXPECT("word <= \"abc\" and word >= \"abc\"", &r, 1);
    EXPECT("1 < 2 and 10 > 9 and \"10\" < \"9\"", &r, 1);
    EXPECT("-0 == 0 and .5 == 0.5 and 5. == 5", &r, 1);

    /* Field against field: numeric only when both are numbers. */
    R(&r, "a", "10", "b", "9", "c", "9x", NULL);
    EXPECT("a > b", &r, 1);
    EXPECT("a > c", &r, 0); /* "10" < "9x" bytewise */
    EXPECT("a != b", &r, 1);

    /* What a number is: complete, decimal, finite, at most 127 bytes. */
    static const struct {
        const char *val;
        const char *expr;
        int want;
    } cases[] = {
        {"5", "v == 5", 1},
        {" 5", "v == 5", 0},
        {"5 ", "v == 5", 0},
        {"+5", "v == 5", 0},
        {"0x10", "v == 16", 0},
        {"1e", "v == 1", 0},
        {"1e+2", "v == 100", 1},
        {"1E2", "v == 100", 1},
        {"-.5", "v == -0.5", 1},
        {"007", "v == 7", 1},
        {"inf", "v > 1", 1}, /* bytewise: "inf" > "1" */
        {"nan", "v == 0", 0},
        {"1e999", "v > 1", 1}, /* not finite: bytewise "1e999" > "1" */
        {"", "v == 0", 0},
        {"-", "v == 0", 0},
        {".", "v == 0", 0},
        {"1.2.3", "v > 1", 1},                            /* bytewise */
        {"9007199254740993", "v == 9007199254740992", 0}, /* exact int64 */
        {"9007199254740993", "v > 9007199254740992", 1},
        {"9223372036854775807", "v == 9223372036854775807", 1},
        {"-9223372036854775808", "v < -9223372036854775807", 1},
        {"9223372036854775808", "v > 9223372036854775807", 0}, /* a double: 2^63 both */
        {"18446744073709551616", "v > 1.8e19", 1},
        {"12.50", "v == 12.5", 1},
        {"1", "v == 1.0000000000000001", 1}, /* doubles */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        R(&r, "v", cases[i].val, NULL);
        int got = ev(cases[i].expr, &r);
        if (got != cases[i].want) {
            fail_msg("v=\"%s\": '%s' gave %d", cases[i].val, cases[i].expr, got);
        }
    }
    /* A 200-byte value is a string, not a number (longer than 127 bytes). */
    char digits[201];
    memset(digits, '0', 199);
    digits[199] = '1';
    digits[200] = '\0';
    R(&r, "v", digits, NULL);
    EXPECT("v == 1", &r, 0);
    EXPECT("v < 1", &r, 1); /* bytewise */
    digits[73] = '\0';
    R(&r, "v", digits, NULL);
    EXPECT("v == 0", &r, 1); /* 73 zeros: a number */
}

static void test_regex(void **state)
{
    rec r;
    R(&r, "path", "/api/users/42", "ua", "Mozilla/5.0 (X11)", "u", "caf\xc3\xa9", "bad",
      "a\xff\xfe"
      "b",
      "empty", "", NULL);
    EXPECT("path =~ \"^/api\"", &r, 1);
    EXPECT("path !~ \"^/api\"", &r, 0);
    EXPECT("path =~ \"^/health\"", &r, 0);
    EXPECT("path !~ \"^/health\"", &r, 1);
    EXPECT("path =~ \"/\\\\d+$\"", &r, 1); /* "\\d" decodes to \d */
    EXPECT("path =~ \"/\\d+$\"", &r, 1);   /* "\d" is kept as written */
    EXPECT("path =~ '^/API' ", &r, 0);
    EXPECT("path =~ \"(?i)^/API\"", &r, 1);
    EXPECT("ua =~ \"\\\\(X11\\\\)\"", &r, 1);
    EXPECT("u =~ \"^caf.$\"", &r, 1);   /* UTF-8: . is one character */
    EXPECT("u =~ \"^\\\\w+$\"", &r, 0); /* \w is ASCII without PCRE2_UCP */
    EXPECT("bad =~ \"b$\"", &r, 1);     /* invalid UTF-8 in the subject: no error */
    EXPECT("bad =~ \"^a\"", &r, 1);
    EXPECT("empty =~ \"^$\"", &r, 1);
    EXPECT("empty =~ \"x\"", &r, 0);
    EXPECT("\"literal\" =~ \"^lit\"", &r, 1);
    EXPECT("path =~ \"\"", &r, 1);

    /* Several regexes in one expression share the match data. */
    EXPECT("path =~ \"^/api\" and ua =~ \"Mozilla\" and not (u =~ \"x\")", &r, 1);

    /* Literal patterns skip PCRE2: same answers as PCRE2 gives for them. */
    static const char *const lits[] = {"^/api", "^", "", "api", "/users/4", "^/users", "# x-y"};
    static const char *const subjects[] = {"/api/users/42", "", "/ap", "x/api", "# x-y", "/users/"};
    for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
        char src[64];
        snprintf(src, sizeof(src), "s =~ \"%s\"", lits[i]);
        spool_expr *e = compile_ok(src);
        assert_int_not_equal(e->p->rxs[0].kind, RX_PCRE);
        for (size_t j = 0; j < sizeof(subjects) / sizeof(subjects[0]); j++) {
            R(&r, "s", subjects[j], NULL);
            e->p->rxs[0].kind = RX_PCRE; /* the interpreter: no JIT for literals */
            int want = spool_expr_eval(e, rec_get, &r);
            e->p->rxs[0].kind = lits[i][0] == '^' ? RX_PREFIX : RX_SUBSTRING;
            if (spool_expr_eval(e, rec_get, &r) != want) {
                fail_msg("'%s' on \"%s\": the literal path disagrees with PCRE2", src, subjects[j]);
            }
        }
        spool_expr_free(e);
    }

    /* Catastrophic backtracking stops at the match limit: no match, counted. */
    char subject[64];
    memset(subject, 'a', 40);
    subject[40] = 'b';
    subject[41] = '\0';
    R(&r, "s", subject, NULL);
    spool_expr *e = compile_ok("s =~ \"^(a+)+$\"");
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 0);
    assert_int_equal(spool_expr_match_errors(e), 1);
    spool_expr_free(e);
}

static void test_in_lists(void **state)
{
    rec r;
    R(&r, "level", "error", "code", "200.0", "flag", "true", "e", "", NULL);
    EXPECT("level in [\"error\", \"fatal\"]", &r, 1);
    EXPECT("level in ['warn', 'fatal']", &r, 0);
    EXPECT("level in [\"error\",]", &r, 1); /* trailing comma */
    EXPECT("level in []", &r, 0);
    EXPECT("code in [200, 304]", &r, 1); /* numeric: 200.0 == 200 */
    EXPECT("code in [\"200\", 304]", &r, 0);
    EXPECT("code in [\"200.0\"]", &r, 1);
    EXPECT("flag in [true]", &r, 1);
    EXPECT("flag == true and flag != false", &r, 1);
    EXPECT("e in [\"\"]", &r, 1);
    EXPECT("e in [0]", &r, 0);
    EXPECT("level in [\"err\", \"errors\", \"error\"]", &r, 1);
    EXPECT("missing in [\"a\", 1]", &r, 0);
    EXPECT("not (missing in [\"a\"])", &r, 1);
    EXPECT("3 in [1, 2, 3]", &r, 1);
}

static void test_exists_and_missing(void **state)
{
    rec r;
    R(&r, "a", "1", "user agent", "curl", "http.status", "404", "x-forwarded-for", "10.0.0.1",
      NULL);
    EXPECT("exists(a)", &r, 1);
    EXPECT("exists(b)", &r, 0);
    EXPECT("not exists(b)", &r, 1);
    EXPECT("exists(field(\"user agent\"))", &r, 1);
    EXPECT("field(\"user agent\") == \"curl\"", &r, 1);
    EXPECT("field('http.status') == 404 and http.status == 404", &r, 1);
    EXPECT("x-forwarded-for =~ \"^10\\\\.\"", &r, 1);
    EXPECT("exists == 1 or a == 1", &r, 1); /* a field may be called exists */

    /* A comparison with a missing field is false, except != and !~ (not == / not =~). */
    static const struct {
        const char *expr;
        int want;
    } cases[] = {
        {"m == 1", 0},   {"m != 1", 1},       {"m < 1", 0},     {"m <= 1", 0},    {"m > 1", 0},
        {"m >= 1", 0},   {"m == \"\"", 0},    {"m != \"\"", 1}, {"m =~ \"\"", 0}, {"m !~ \"x\"", 1},
        {"m in [1]", 0}, {"1 == m", 0},       {"m == m", 0},    {"m != m", 1},    {"m == a", 0},
        {"a != m", 1},   {"not (m == 1)", 1}, {"exists(m)", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = ev(cases[i].expr, &r);
        if (got != cases[i].want) {
            fail_msg("'%s' with m missing gave %d", cases[i].expr, got);
        }
    }
}

static void test_escapes(void **state)
{
    rec r;
    R(&r, "q", "a\"b", "s", "it's", "bs", "C:\\dir", "ws", "a\nb\tc\r", "d", "\\d", NULL);
    EXPECT("q == \"a\\\"b\"", &r, 1);
    EXPECT("q == 'a\"b'", &r, 1);
    EXPECT("s == 'it\\'s'", &r, 1);
    EXPECT("s == \"it's\"", &r, 1);
    EXPECT("bs == \"C:\\\\dir\"", &r, 1);
    EXPECT("ws == \"a\\nb\\tc\\r\"", &r, 1);
    EXPECT("d == \"\\d\"", &r, 1); /* unknown escape: kept as written */
    EXPECT("d == \"\\\\d\"", &r, 1);

    /* Bytes after a NUL still count, in values and in literals. */
    rec z;
    memset(&z, 0, sizeof(z));
    z.name[0] = "v";
    z.val[0] = "a\0b";
    z.len[0] = 3;
    z.n = 1;
    static const char lit[] = "v == \"a\0b\"";
    spool_expr *e = NULL;
    assert_int_equal(spool_expr_compile(lit, sizeof(lit) - 1, &e, NULL), 0);
    assert_int_equal(spool_expr_eval(e, rec_get, &z), 1);
    spool_expr_free(e);
    EXPECT("v == \"a\"", &z, 0);
}

typedef struct err_case {
    const char *src;
    size_t column;
    const char *message; /* a substring of the message */
} err_case;

static void test_syntax_errors(void **state)
{
    static const err_case cases[] = {
        {"", 1, "empty expression"},
        {"   ", 4, "empty expression"},
        {"(a == 1", 8, "expected ')' to close '(' at column 1, found end of expression"},
        {"(a == 1 b", 9, "expected ')' to close '(' at column 1, found field 'b'"},
        {"a == 1)", 7, "unexpected ')'"},
        {"a ==", 5, "expected a field, string or number after '==', found end of expression"},
        {"a == and", 6, "after '=='"},
        {"a = 1", 3, "unknown operator '='; did you mean '=='?"},
        {"a === 1", 5, "unknown operator '='"},
        {"a ! b", 3, "unknown operator '!'; write 'not'"},
        {"a == 1 && b == 2", 8, "unknown operator '&&'; write 'and'"},
        {"a == 1 || b == 2", 8, "unknown operator '||'; write 'or'"},
        {"exist(a)", 1, "unknown function 'exist', did you mean 'exists'?"},
        {"a == feild(\"x\")", 6, "unknown function 'feild', did you mean 'field'?"},
        {"lower(a) == \"x\"", 1,
         "unknown function 'lower'; the functions are exists() and field()"},
        {"exists(1)", 8, "exists() takes a field name, found number 1"},
        {"exists(a", 9, "expected ')' to close '(' at column 7"},
        {"exists(a) == 1", 11, "exists() is a condition and cannot be compared"},
        {"a =~ b", 6, "the right side of '=~' must be a quoted regex, found field 'b'"},
        {"a !~ 1", 6, "the right side of '!~' must be a quoted regex"},
        {"a =~ \"(\"", 8, "invalid regex: missing closing parenthesis at offset 1"},
        {"a =~ \"ab\\\\q(\"", 11, "invalid regex: unrecognized character follows \\ at offset 3"},
        {"a =~ \"x{2,1}\"", 12, "invalid regex: numbers out of order in {} quantifier"},
        {"a =~ \"x\xff\"", 8, "invalid regex: UTF-8 error"},
        {"a == \"abc", 6, "unterminated string: no closing \""},
        {"a == 'abc\\'", 6, "unterminated string: no closing '"},
        {"a in \"x\"", 6, "expected '[' after 'in', found string \"x\""},
        {"a in [1, ", 10, "expected ']' to close '[' at column 6, found end of expression"},
        {"a in [b]", 7, "list items must be strings or numbers, found field 'b'"},
        {"a in [1 2]", 9, "expected ',' or ']' to close '[' at column 6, found number 2"},
        {"a == 1 b == 2", 8, "expected 'and', 'or' or the end of the expression, found field 'b'"},
        {"a < b < c", 7, "comparisons cannot be chained"},
        {"a == 1 == 2", 8, "comparisons cannot be chained"},
        {"not a == 1", 1, "'not' applies to the condition right after it"},
        {"not \"x\" == a", 1, "'not' applies"},
        {"not true == a", 1, "'not' applies"},
        {"status", 1,
         "'status' is a field, not a condition: compare it (status == \"...\") or "
         "test exists(status)"},
        {"a == 1 and b", 12, "'b' is a field, not a condition"},
        {"(b) and a == 1", 2, "'b' is a field, not a condition"},
        {"\"x\"", 1, "'\"x\"' is a value, not a condition"},
        {"5 or true", 1, "is a value, not a condition"},
        {"a 5", 3,
         "expected an operator (==, !=, <, <=, >, >=, =~, !~, in) after 'a', found "
         "number 5"},
        {"a == 1 AND b == 2", 8, "operators are lowercase: write 'and'"},
        {"(a == 1 Or b == 2)", 9, "operators are lowercase: write 'or'"},
        {"a NOT == 1", 3, "operators are lowercase: write 'not'"},
        {"a # b", 3, "unexpected character '#'"},
        {"a == 1 $", 8, "unexpected character '$'"},
        {"a == \x01", 6, "unexpected byte 0x01"},
        {"a == 12abc", 6, "invalid number '12abc'"},
        {"a == 1.2.3", 6, "invalid number '1.2.3'"},
        {"a == 1e999", 6, "invalid number '1e999'"},
        {"a == -x", 6, "unexpected character '-'"},
        {"a. == 1", 2, "invalid field name 'a.': a '.' must separate two names"},
        {"a..b == 1", 2, "invalid field name"},
        {"field(a) == 1", 7, "field() takes a quoted name, found field 'a'"},
        {"field(\"\") == 1", 7, "field() takes a non-empty name"},
        {"field(\"a\" == 1", 11, "expected ')' to close '(' at column 6"},
        {"(a == 1) == true", 10, "a condition cannot be compared"},
        {"()", 2, "expected a condition, found ')'"},
        {"a == 1 and", 11, "expected a condition, found end of expression"},
        {"and", 1, "expected a condition, found 'and'"},
        {"not", 4, "expected a condition, found end of expression"},
        {"a in [1] in [2]", 10, "comparisons cannot be chained"},
        {"[1] == a", 1, "expected a condition, found '['"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        spool_expr *e = (spool_expr *)1;
        spool_expr_error err;
        int rc = spool_expr_compile(cases[i].src, strlen(cases[i].src), &e, &err);
        if (rc != -EINVAL || e != NULL) {
            fail_msg("'%s' compiled (rc %d)", cases[i].src, rc);
        }
        if (err.column != cases[i].column || strstr(err.message, cases[i].message) == NULL) {
            fail_msg("'%s': got column %zu \"%s\", want column %zu \"%s\"", cases[i].src,
                     err.column, err.message, cases[i].column, cases[i].message);
        }
    }
    /* err may be NULL. */
    spool_expr *e;
    assert_int_equal(spool_expr_compile("a ==", 4, &e, NULL), -EINVAL);
    assert_null(e);
}

/* "(((...(a == 1)...)))" with n levels, or "not not ... true". */
static char *nested(size_t n, int nots)
{
    char *s = test_malloc(n * 4 + 16);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (nots) {
            memcpy(s + k, "not ", 4);
            k += 4;
        } else {
            s[k++] = '(';
        }
    }
    if (nots) {
        memcpy(s + k, "true", 4);
        k += 4;
    } else {
        memcpy(s + k, "a == 1", 6);
        k += 6;
        memset(s + k, ')', n);
        k += n;
    }
    s[k] = '\0';
    return s;
}

static void test_nesting_limit(void **state)
{
    rec r;
    R(&r, "a", "1", NULL);
    char *s = nested(64, 0);
    EXPECT(s, &r, 1);
    test_free(s);
    s = nested(64, 1);
    EXPECT(s, &r, 1); /* 64 nots: even */
    test_free(s);

    size_t sizes[] = {65, 1000, 200000};
    for (size_t i = 0; i < 3; i++) {
        for (int nots = 0; nots <= 1; nots++) {
            s = nested(sizes[i], nots);
            spool_expr *e;
            spool_expr_error err;
            assert_int_equal(spool_expr_compile(s, strlen(s), &e, &err), -EINVAL);
            assert_non_null(strstr(err.message, "nested too deeply: more than 64 levels"));
            assert_int_equal(err.column, nots ? 64 * 4 + 1 : 65);
            test_free(s);
        }
    }
    /* Mixed: 32 '(' each with a 'not' is 64 levels; one more refused. */
    char buf[512];
    size_t k = 0;
    for (int i = 0; i < 32; i++) {
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "(not ");
    }
    k += (size_t)snprintf(buf + k, sizeof(buf) - k, "false");
    for (int i = 0; i < 32; i++) {
        buf[k++] = ')';
    }
    buf[k] = '\0';
    EXPECT(buf, &r, 0);
    memmove(buf + 4, buf, k + 1);
    memcpy(buf, "not ", 4);
    spool_expr *e;
    spool_expr_error err;
    assert_int_equal(spool_expr_compile(buf, strlen(buf), &e, &err), -EINVAL);
}

static void test_long_inputs(void **state)
{
    rec r;
    R(&r, "a", "7", NULL);
    /* A 60,000-term 'or' chain: flat, so evaluation does not recurse per term. */
    size_t terms = 60000;
    char *s = test_malloc(1u << 20);
    size_t k = 0;
    for (size_t i = 0; i < terms; i++) {
        k += (size_t)sprintf(s + k, "%sa == %zu", i ? " or " : "", terms - i);
    }
    assert_true(k < (1u << 20));
    spool_expr *e = compile_ok(s);
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
    assert_int_equal(r.calls, 1); /* one field, read once */
    spool_expr_free(e);
    test_free(s);

    /* A 512 KiB string literal and a 100,000-item list. */
    size_t big = 512 * 1024;
    s = test_malloc(1u << 20);
    k = (size_t)sprintf(s, "a != \"");
    memset(s + k, 'x', big);
    k += big;
    memcpy(s + k, "\"", 2);
    EXPECT(s, &r, 1);
    k = (size_t)sprintf(s, "a in [");
    for (size_t i = 0; i < 100000; i++) {
        k += (size_t)sprintf(s + k, "%zu,", 100000 - i);
    }
    memcpy(s + k, "]", 2);
    EXPECT(s, &r, 1);

    /* 20,000 distinct fields. */
    k = 0;
    for (size_t i = 0; i < 20000; i++) {
        k += (size_t)sprintf(s + k, "%sf%zu == 1", i ? " or " : "", i);
    }
    k += (size_t)sprintf(s + k, " or a == 7");
    EXPECT(s, &r, 1);
    test_free(s);

    /* Over 1 MiB: refused. */
    size_t huge = (1u << 20) + 1;
    s = test_malloc(huge);
    memset(s, ' ', huge);
    spool_expr_error err;
    assert_int_equal(spool_expr_compile(s, huge, &e, &err), -EINVAL);
    assert_non_null(strstr(err.message, "expression too long"));
    test_free(s);
}

/* ---- random and/or/not trees against their own evaluation ---- */

static const char *const tree_leaves[] = {
    "a == 1", "a != 1",          "b < 10",     "b =~ \"x$\"", "m == 1",
    "m != 1", "m !~ \"q\"",      "exists(a)",  "exists(m)",   "true",
    "false",  "a in [2, \"1\"]", "b >= \"9\"",
};
#define N_LEAVES (sizeof(tree_leaves) / sizeof(tree_leaves[0]))

typedef struct tree_gen {
    uint64_t seed;
    char *out; /* the expression being written */
    size_t len;
    size_t cap;
    int leaf[N_LEAVES]; /* each leaf's value, evaluated alone */
} tree_gen;

static unsigned rnd(tree_gen *g, unsigned n)
{
    g->seed = g->seed * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(g->seed >> 33) % n;
}

static void put(tree_gen *g, const char *s)
{
    size_t n = strlen(s);
    assert_true(g->len + n < g->cap);
    memcpy(g->out + g->len, s, n + 1);
    g->len += n;
}

/*
 * Writes a random tree with the fewest parentheses precedence allows (ctx: 0 top,
 * 1 inside 'or', 2 inside 'and', 3 after 'not') and returns its value, computed here
 * from the leaves' values, not by the code under test.
 */
static int gen_tree(tree_gen *g, int depth, int ctx)
{
    unsigned kind = depth == 0 ? 0 : rnd(g, 4);
    int extra = rnd(g, 10) == 0; /* redundant parentheses, sometimes */
    if (kind == 0) {
        unsigned i = rnd(g, N_LEAVES);
        const char *s = tree_leaves[i];
        int bare =
            strncmp(s, "exists", 6) == 0 || strcmp(s, "true") == 0 || strcmp(s, "false") == 0;
        int paren = extra || (ctx == 3 && !bare);
        put(g, paren ? "(" : "");
        put(g, s);
        put(g, paren ? ")" : "");
        return g->leaf[i];
    }
    if (kind == 3) {
        put(g, extra ? "(not " : "not ");
        int v = !gen_tree(g, depth - 1, 3);
        put(g, extra ? ")" : "");
        return v;
    }
    int is_and = kind == 1;
    int prec = is_and ? 2 : 1;
    int paren = extra || ctx > prec;
    put(g, paren ? "(" : "");
    int l = gen_tree(g, depth - 1, prec);
    put(g, is_and ? " and " : " or ");
    /* The right operand gets parentheses when it is the same operator: a or (b or c). */
    int r = gen_tree(g, depth - 1, prec + 1 > 3 ? 3 : prec + (rnd(g, 2) ? 1 : 0));
    put(g, paren ? ")" : "");
    return is_and ? (l && r) : (l || r);
}

static void test_random_trees(void **state)
{
    rec r;
    R(&r, "a", "1", "b", "9x", NULL);
    tree_gen g = {.seed = 42, .cap = 1 << 16};
    g.out = test_malloc(g.cap);
    for (size_t i = 0; i < N_LEAVES; i++) {
        g.leaf[i] = ev(tree_leaves[i], &r);
    }
    for (int t = 0; t < 3000; t++) {
        g.len = 0;
        g.out[0] = '\0';
        int want = gen_tree(&g, 1 + (int)rnd(&g, 6), 0);
        int got = ev(g.out, &r);
        if (got != want) {
            fail_msg("'%s' gave %d, want %d", g.out, got, want);
        }
    }
    test_free(g.out);
}

static int collect_field(void *arg, const char *name, size_t len)
{
    char *out = arg;
    assert_int_equal(strlen(name), len);
    strcat(out, name);
    strcat(out, ";");
    return strcmp(name, "stop") == 0 ? 7 : 0;
}

static void test_fields(void **state)
{
    spool_expr *e = compile_ok("status >= 500 and (path =~ \"^/api\" or status == 404) and "
                               "exists(user) and field(\"user agent\") in [\"x\"] and "
                               "not (http.host != path)");
    char got[256] = "";
    assert_int_equal(spool_expr_fields(e, collect_field, got), 0);
    assert_string_equal(got, "status;path;user;user agent;http.host;");
    spool_expr_free(e);

    e = compile_ok("a == 1 or stop == 2 or z == 3");
    got[0] = '\0';
    assert_int_equal(spool_expr_fields(e, collect_field, got), 7);
    assert_string_equal(got, "a;stop;");
    spool_expr_free(e);

    e = compile_ok("true");
    got[0] = '\0';
    assert_int_equal(spool_expr_fields(e, collect_field, got), 0);
    assert_string_equal(got, "");
    spool_expr_free(e);
}

static void test_field_cache_and_clone(void **state)
{
    rec r;
    R(&r, "a", "5", "b", "x", NULL);
    spool_expr *e = compile_ok("(a > 1 and a < 10 and a != 7) or b == \"x\" or a in [1]");
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
    assert_int_equal(r.calls, 1); /* a read once; b not needed */
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
    assert_int_equal(r.calls, 2); /* a new evaluation reads again */
    R(&r, "a", "50", "b", "x", NULL);
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
    assert_int_equal(r.calls, 2);
    R(&r, "a", "50", "b", "y", NULL);
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 0);

    /* Wrapping the generation counter must not reuse stale slots. */
    e->st->gen = UINT32_MAX;
    R(&r, "a", "5", NULL);
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
    R(&r, "a", "500", NULL);
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 0);

    /* A clone evaluates on its own and outlives the original. */
    spool_expr *c;
    assert_int_equal(spool_expr_clone(e, &c), 0);
    spool_expr_free(e);
    R(&r, "a", "5", NULL);
    assert_int_equal(spool_expr_eval(c, rec_get, &r), 1);
    spool_expr_free(c);
    spool_expr_free(NULL);

    /* Clones of an expression with a regex have their own match data. */
    e = compile_ok("a =~ \"^5\"");
    assert_int_equal(spool_expr_clone(e, &c), 0);
    assert_ptr_not_equal(e->st->md, c->st->md);
    assert_int_equal(spool_expr_eval(c, rec_get, &r), 1);
    assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
    spool_expr_free(c);
    spool_expr_free(e);
}

static void test_out_of_memory(void **state)
{
    static const char *const srcs[] = {
        "status >= 500 and path =~ \"^/api\" or level in [\"error\", 1] or exists(x)",
        "field(\"user agent\") =~ \"(?i)curl\" and not (a == 1 or b == 2 or c == 3)",
    };
    rec r;
    R(&r, "status", "503", "path", "/api", "user agent", "CURL", NULL);
    for (size_t s = 0; s < 2; s++) {
        int succeeded = 0;
        for (long n = 0; n < 10000 && !succeeded; n++) {
            spool_expr *e = (spool_expr *)1;
            spool_expr_error err;
            alloc_countdown = n;
            int rc = spool_expr_compile(srcs[s], strlen(srcs[s]), &e, &err);
            alloc_countdown = -1;
            if (rc == -ENOMEM) {
                assert_null(e);
                assert_int_equal(err.column, 0);
                assert_string_equal(err.message, "out of memory");
                continue;
            }
            assert_int_equal(rc, 0);
            succeeded = 1;
            assert_int_equal(spool_expr_eval(e, rec_get, &r), 1);
            for (long m = 0; m < 10; m++) {
                spool_expr *c = (spool_expr *)1;
                alloc_countdown = m;
                rc = spool_expr_clone(e, &c);
                alloc_countdown = -1;
                if (rc == 0) {
                    assert_int_equal(spool_expr_eval(c, rec_get, &r), 1);
                    spool_expr_free(c);
                    break;
                }
                assert_int_equal(rc, -ENOMEM);
                assert_null(c);
            }
            spool_expr_free(e);
        }
        assert_true(succeeded);
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The accessor of the timing test: what a real record lookup costs, no assertions. */
static int fast_get(void *ctx, const char *name, size_t name_len, const uint8_t **val,
                    size_t *val_len)
{
    rec *r = ctx;
    for (size_t i = 0; i < r->n; i++) {
        if (r->len[MAX_FIELDS - 1 - i] == name_len && memcmp(r->name[i], name, name_len) == 0) {
            *val = (const uint8_t *)r->val[i];
            *val_len = r->len[i];
            return 1;
        }
    }
    return 0;
}

/* Prints the cost of one evaluation; asserts only the results. */
static void test_timing(void **state)
{
    rec r;
    R(&r, "host", "web-1", "level", "info", "status", "503", "path", "/api/v1/users/42", "method",
      "GET", NULL);
    for (size_t i = 0; i < r.n; i++) {
        r.len[MAX_FIELDS - 1 - i] = strlen(r.name[i]); /* name lengths, kept apart */
    }
    static const char *const srcs[] = {
        "status >= 500 and path =~ \"^/api\"",
        "status >= 500 and path =~ \"/users/\\\\d+$\"",
        "level in [\"error\", \"fatal\", \"warn\"] or (method == \"POST\" and status >= 400)",
    };
    for (size_t s = 0; s < 3; s++) {
        spool_expr *e = compile_ok(srcs[s]);
        int want = spool_expr_eval(e, fast_get, &r);
        long n = 1000000;
        int sum = 0;
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            sum += spool_expr_eval(e, fast_get, &r);
        }
        double per = (now_ns() - t0) / (double)n;
        assert_int_equal(sum, want * n);
        const char *how = "no regex";
        if (e->p->n_rxs) {
            how = e->p->rxs[0].kind != RX_PCRE ? "literal regex"
                  : e->p->rxs[0].jit           ? "JIT regex"
                                               : "interpreted regex";
        }
        printf("# %.1f ns of CPU per evaluation (%s): %s\n", per, how, srcs[s]);
        spool_expr_free(e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_numeric_vs_string),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_in_lists),
        cmocka_unit_test(test_exists_and_missing),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_long_inputs),
        cmocka_unit_test(test_random_trees),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_field_cache_and_clone),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
