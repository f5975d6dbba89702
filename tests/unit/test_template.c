/*
 * test_template.c: "{{ field }}" templates (agent/template.c): compile errors, and
 * rendering over the same fields conditions read (spool_record_field: key, value,
 * timestamp, topic, then headers, dotted names included), the extras input/host/file
 * when no field of that name exists, missing fields, truncation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spool/spool.h"

static spool_header hdr(const char *k, const char *v)
{
    spool_header h = {k, (uint32_t)strlen(k), (const uint8_t *)v, v ? (int32_t)strlen(v) : -1};
    return h;
}

static void expect_render(const char *text, const spool_record *r, const char *topic,
                          const char *input, const char *want)
{
    const char *err = NULL;
    spool_template *t = spool_template_compile(text, &err);
    char buf[256];
    assert_non_null(t);
    size_t n = spool_template_render(t, r, topic, input, buf, sizeof(buf));
    assert_true(n < sizeof(buf));
    buf[n] = '\0';
    if (strcmp(buf, want) != 0) {
        print_error("'%s': expected '%s', got '%s'\n", text, want, buf);
    }
    assert_string_equal(buf, want);
    spool_template_destroy(t);
}

static void test_fields(void **state)
{
    (void)state;
    spool_header h[] = {hdr("http.status", "503"), hdr("app", "web"), hdr("path", "/var/log/a.log"),
                        hdr("nullh", NULL), hdr("input", "from-header")};
    spool_record r = {.key = (const uint8_t *)"k1",
                      .key_len = 2,
                      .value = (const uint8_t *)"GET / 503",
                      .value_len = 9,
                      .headers = h,
                      .header_count = 5,
                      .timestamp = 1700000000123,
                      .partition = -1,
                      .offset = -1};
    expect_render("{{ value }}", &r, "t", "in", "GET / 503");
    expect_render("{{key}}/{{ timestamp }}", &r, "t", "in", "k1/1700000000123");
    expect_render("{{ topic }}:{{ http.status }}", &r, "access", "in", "access:503");
    expect_render("{{ app }}-x", &r, NULL, NULL, "web-x");
    /* A header named like an extra wins over the extra. */
    expect_render("{{ input }}", &r, NULL, "in", "from-header");
    expect_render("{{ file }}", &r, NULL, NULL, "a.log");
    expect_render("{{ host }}", &r, NULL, NULL, spool_hostname());
    /* Missing: absent header, null header, topic NULL, null key. */
    expect_render("[{{ nope }}{{ nullh }}{{ topic }}]", &r, NULL, NULL, "[]");
    r.key = NULL;
    r.key_len = -1;
    r.header_count = 2;
    expect_render("[{{ key }}]{{ input }}", &r, NULL, "in", "[]in");
    expect_render("plain", &r, NULL, NULL, "plain");
}

static void test_compile_and_truncation(void **state)
{
    (void)state;
    const char *err = NULL;
    assert_null(spool_template_compile("{{ a", &err));
    assert_string_equal(err, "unclosed '{{' in template");
    assert_null(spool_template_compile("{{  }}", &err));
    assert_string_equal(err, "empty field name in template");
    assert_null(spool_template_compile("{{ a b }}", &err));
    assert_string_equal(err, "invalid character in template field name");

    spool_template *t = spool_template_compile("abc{{ value }}", &err);
    assert_non_null(t);
    assert_false(spool_template_is_literal(t));
    spool_record r = {.key_len = -1, .value = (const uint8_t *)"0123456789", .value_len = 10};
    char buf[5];
    assert_int_equal(spool_template_render(t, &r, NULL, NULL, buf, sizeof(buf)), 13);
    assert_memory_equal(buf, "abc01", 5);
    spool_template_destroy(t);
    t = spool_template_compile("lit", &err);
    assert_true(spool_template_is_literal(t));
    spool_template_destroy(t);
    spool_template_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_compile_and_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
