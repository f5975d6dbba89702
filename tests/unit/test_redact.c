/*
 * test_redact.c: the `redact` processor (processors/redact/redact.c) through the real config
 * loader: each built-in pattern on lines that must and must not match (Luhn-valid and
 * -invalid card numbers, IPv6 forms, look-alikes such as times, MAC addresses, versions and
 * block ids), per-kind replacements, user patterns with numbered and named groups, several
 * fields (value, key, headers), records nothing matches left untouched (not even copied),
 * invalid UTF-8, values longer than any buffer so far, the counters, and option errors with
 * their positions.
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

#include "core.h"
#include "predact_harness.h"

typedef struct redact_case {
    const char *in;
    const char *out; /* NULL: unchanged */
} redact_case;

/* Runs each case as one record of one batch through h and compares the values. */
static void run_cases(ph *h, const redact_case *cs, size_t n)
{
    spool_batch *b = ph_batch(h);
    for (size_t i = 0; i < n; i++) {
        ph_add(b, cs[i].in, NULL, NULL, NULL, NULL, NULL);
    }
    assert_int_equal(ph_process(h, b), 0);
    assert_int_equal(spool_batch_count(b), n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const char *want = cs[i].out ? cs[i].out : cs[i].in;
        const char *got = ph_value(b, i);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "case %zu: in   '%s'\n         want '%s'\n         got  '%s'\n", i,
                    cs[i].in, want, got);
            bad++;
        }
    }
    spool_batch_destroy(b);
    assert_int_equal(bad, 0);
}

#define RUN(h, cs) run_cases((h), (cs), sizeof(cs) / sizeof((cs)[0]))

static void test_email(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [email]\n");
    static const redact_case cs[] = {
        {"from john.doe@example.com to x", "from [REDACTED] to x"},
        {"<a+b_c%d@sub.mail-host.co.uk>, cc bob@x.org.", "<[REDACTED]>, cc [REDACTED]."},
        {"user=First.Last@Example.COM;", "user=[REDACTED];"},
        {"two: a@b.io b@c.io", "two: [REDACTED] [REDACTED]"},
        {"root@localhost has no domain", NULL},
        {"@example.com alone", NULL},
        {"foo@bar and x@-bad.com", NULL},
        {"a@b.c (one-letter tld)", NULL},
        {"no at sign here at all", NULL},
        {"", NULL},
    };
    RUN(h, cs);
    ph_free(h);
}

static void test_ipv4(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [ipv4]\n");
    static const redact_case cs[] = {
        {"client 10.0.0.1 connected", "client [REDACTED] connected"},
        {"ip=192.168.001.010:8080/x", "ip=[REDACTED]:8080/x"},
        {"255.255.255.255,0.0.0.0", "[REDACTED],[REDACTED]"},
        {"net 10.0.0.0/8.", "net [REDACTED]/8."},
        {"rhost=218.188.2.4  user=root", "rhost=[REDACTED]  user=root"},
        {"256.1.1.1 is not an address", NULL},
        {"1.2.3.4.5 is a longer dotted run", NULL},
        {"10.0.0 has three parts", NULL},
        {"v10.0.0.1 and 10.0.0.1a are glued", NULL},
        {"1000.1.1.1", NULL},
    };
    RUN(h, cs);
    ph_free(h);
}

static void test_ipv6(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [ipv6]\n    replacement: \"<ip>\"\n");
    static const redact_case cs[] = {
        {"from 2001:db8::1 port 22", "from <ip> port 22"},
        {"2001:0db8:85a3:0000:0000:8a2e:0370:7334", "<ip>"},
        {"lo ::1, any ::", "lo <ip>, any ::"},
        {"link fe80::1%eth0 up", "link <ip> up"},
        {"mapped ::ffff:192.168.0.1 ok", "mapped <ip> ok"},
        {"nat64 64:ff9b::192.0.2.33", "nat64 <ip>"},
        {"full v4 0:0:0:0:0:ffff:192.168.1.1 x", "full v4 <ip> x"},
        {"[2001:db8::2]:443", "[<ip>]:443"},
        {"trailing fe80:: end", "trailing <ip> end"},
        {"FE80::ABCD:1234", "<ip>"},
        {"at 12:30:45 today", NULL},
        {"mac 00:1a:2b:3c:4d:5e", NULL},
        {"std::vector and a :: b", NULL},
        {"2001:db8:1", NULL},
    };
    RUN(h, cs);
    ph_free(h);
}

static void test_credit_card(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [credit_card]\n");
    static const redact_case cs[] = {
        {"card 4111111111111111 ok", "card [REDACTED] ok"},
        {"card 4111 1111 1111 1111.", "card [REDACTED]."},
        {"card=4111-1111-1111-1111;", "card=[REDACTED];"},
        {"amex 378282246310005", "amex [REDACTED]"},
        {"amex 3782 822463 10005, diners 3056-930902-5904.", "amex [REDACTED], diners [REDACTED]."},
        {"visa 4222222222222 x", "visa [REDACTED] x"},
        {"maestro 6304000000000000000", "maestro [REDACTED]"},
        {"mc 5500 0055 5555 5559 and 6011111111111117", "mc [REDACTED] and [REDACTED]"},
        /* Luhn fails */
        {"card 4111111111111112", NULL},
        {"id 12345678901234", NULL},
        {"card 4111 1111 1111 1112 x", NULL},
        /* the run is longer than the card: 17 and 20 digits, Luhn fails on the whole run */
        {"4111 1111 1111 1111 2", NULL},
        {"41111111111111110000", NULL},
        /* too short; part of a block id, a decimal, a phone number */
        {"79927398713", NULL},
        {"blk_-6304000000000000000 served", NULL},
        {"blk_6304000000000000000", NULL},
        {"x 1.4111111111111111", NULL},
        {"tel +4111111111111111", NULL},
        {"time 2015-10-18 18:01:47,978", NULL},
        /* grouped unlike a card (HDFS: date time pid), or with mixed separators; Luhn-valid */
        {"081109 203615 100 INFO dfs.DataNode", NULL},
        {"mixed 4111 1111-1111 1111", NULL},
        /* a digit and a space before the run: it continues a number ("visa13 4222...") */
        {"visa13 4222222222222", NULL},
    };
    RUN(h, cs);
    ph_free(h);
}

/* The quick scans that skip a pattern (redact.c's gates) must never skip a line the pattern
 * matches: a card, an IPv4 and an IPv6 address at every offset after every kind of prefix. */
static void test_gates_miss_nothing(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [credit_card, ipv4, ipv6]\n");
    static const char *const prefixes[] = {"", "x ", "1.2 z ", "12-3 z ", "a:b ", "99 z "};
    static const char *const secrets[] = {"4111 1111 1111 1111", "4111-1111-1111-1111",
                                          "4222222222222",       "10.0.0.1",
                                          "2001:db8::1",         "1:2:3:4:5:6:7:8"};
    spool_batch *b = ph_batch(h);
    char line[128], want[128];
    size_t n = 0;
    for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
        for (size_t k = 0; k < sizeof(secrets) / sizeof(secrets[0]); k++) {
            for (int off = 0; off < 30; off++) {
                snprintf(line, sizeof(line), "%.*s %s%s end", off, "abcdefghijklmnopqrstuvwxyzabcd",
                         prefixes[p], secrets[k]);
                ph_add(b, line, NULL, NULL, NULL, NULL, NULL);
                n++;
            }
        }
    }
    assert_int_equal(ph_process(h, b), 0);
    size_t i = 0;
    for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
        for (size_t k = 0; k < sizeof(secrets) / sizeof(secrets[0]); k++) {
            for (int off = 0; off < 30; off++, i++) {
                snprintf(want, sizeof(want), "%.*s %s[REDACTED] end", off,
                         "abcdefghijklmnopqrstuvwxyzabcd", prefixes[p]);
                if (strcmp(ph_value(b, i), want) != 0) {
                    fprintf(stderr, "want '%s'\ngot  '%s'\n", want, ph_value(b, i));
                }
                assert_string_equal(ph_value(b, i), want);
            }
        }
    }
    assert_int_equal(i, n);
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_bearer_token(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [bearer_token]\n");
    static const redact_case cs[] = {
        {"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc-_d= next",
         "Authorization: Bearer [REDACTED] next"},
        {"auth bearer xyz", "auth bearer [REDACTED]"},
        {"BEARER\tAbC/dE+f==", "BEARER\t[REDACTED]"},
        {"bearerxyz has no space", NULL},
        {"sub-bearer xyz is not the word", "sub-bearer [REDACTED] is not the word"},
        {"nobearer xyz", NULL},
    };
    RUN(h, cs);
    ph_free(h);
}

static void test_all_builtins_and_replacements(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [all]\n    replacement: \"***\"\n"
                     "    replacements: {email: \"<email>\", credit_card: \"<card>\"}\n");
    static const redact_case cs[] = {
        {"u=jo@ex.com ip=10.1.2.3 v6=2001:db8::5 cc=4111111111111111 Bearer abc",
         "u=<email> ip=*** v6=*** cc=<card> Bearer ***"},
        {"::ffff:10.0.0.1 goes as one address", "*** goes as one address"},
        {"mail jo@10.0.0.1 and nothing else 12:00:01", "mail jo@*** and nothing else 12:00:01"},
        {"081109 203615 148 INFO dfs.DataNode$PacketResponder: block blk_38865049064139660", NULL},
    };
    RUN(h, cs);
    ph_free(h);
}

static void test_user_patterns(void **state)
{
    (void)state;
    /* $$ is YAML's escape for a literal "${" (the loader fills ${VAR} from the environment). */
    ph *h = ph_start("  - type: redact\n    patterns:\n"
                     "      '(user|uid)=(\\w+)': '$1=<$2:hidden>'\n"
                     "      '(?<k>token)=\\S+': '$${k}=?'\n"
                     "      'secret': ''\n");
    static const redact_case cs[] = {
        {"login user=bob uid=42 ok", "login user=<bob:hidden> uid=<42:hidden> ok"},
        {"token=abc.def rest", "token=? rest"},
        {"my secret word secret", "my  word "},
        /* patterns run in order, each on the previous one's output: "token=" is gone */
        {"user=token=zzz", "user=<token:hidden>=zzz"},
        {"nothing here", NULL},
        /* invalid UTF-8 around a match (user patterns run in UTF-8 mode) */
        {"\xff\xfe user=x \xc3", "\xff\xfe user=<x:hidden> \xc3"},
        /* \w is ASCII (no UCP): the match stops before a multi-byte character, whole */
        {"caf\xc3\xa9 user=ab\xc3\xa9 x", "caf\xc3\xa9 user=<ab:hidden>\xc3\xa9 x"},
    };
    RUN(h, cs);
    ph_free(h);
}

static void test_fields(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    fields: [value, key, user.email, missing]\n"
                     "    builtins: [email, ipv4]\n");
    spool_batch *b = ph_batch(h);
    ph_add(b, "from 10.0.0.1", "k@example.com", "user.email", "jo@example.com", "path",
           "/var/log/a@b.com");
    ph_add(b, "clean", "clean", "user.email", "nobody", NULL, NULL);
    assert_int_equal(ph_process(h, b), 0);
    spool_record r;
    spool_batch_get(b, 0, &r);
    assert_string_equal(ph_value(b, 0), "from [REDACTED]");
    assert_int_equal(r.key_len, 10);
    assert_memory_equal(r.key, "[REDACTED]", 10);
    const spool_header *hd = spool_record_header(&r, "user.email");
    assert_non_null(hd);
    assert_int_equal(hd->value_len, 10);
    assert_memory_equal(hd->value, "[REDACTED]", 10);
    hd = spool_record_header(&r, "path"); /* not in fields */
    assert_int_equal(hd->value_len, 16);
    assert_memory_equal(hd->value, "/var/log/a@b.com", 16);
    assert_memory_equal(r.headers[0].key, "user.email", 10); /* header order kept */
    spool_batch_destroy(b);
    ph_free(h);
}

/* A record nothing matches is not touched: its value still points where it did (a set_value
 * would have copied it into the batch's arena), and the counters do not move for it. */
static void test_no_match_untouched(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [all]\n    patterns: {'zzz+': x}\n");
    int64_t red0 = ph_metric(h, "spool_redact_redactions_total", "name=\"redact.0\"");
    int64_t rec0 = ph_metric(h, "spool_redact_records_changed_total", "name=\"redact.0\"");
    assert_true(red0 >= 0 && rec0 >= 0);
    spool_batch *b = ph_batch(h);
    ph_add(b, "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown", NULL, NULL,
           NULL, NULL, NULL);
    ph_add(b, "two at a@b.io and c@d.io, zzz", NULL, NULL, NULL, NULL, NULL);
    ph_add(b, "version 1.2.3 at 10:11:12", NULL, NULL, NULL, NULL, NULL);
    spool_record before0, before2, after;
    spool_batch_get(b, 0, &before0);
    spool_batch_get(b, 2, &before2);
    size_t bytes0 = spool_batch_bytes(b);
    assert_int_equal(ph_process(h, b), 0);
    spool_batch_get(b, 0, &after);
    assert_ptr_equal(after.value, before0.value);
    spool_batch_get(b, 2, &after);
    assert_ptr_equal(after.value, before2.value);
    assert_string_equal(ph_value(b, 1), "two at [REDACTED] and [REDACTED], x");
    assert_int_equal(spool_batch_bytes(b),
                     bytes0 - strlen("a@b.io") * 2 - strlen("zzz") + strlen("[REDACTED]") * 2 + 1);
    assert_int_equal(ph_metric(h, "spool_redact_redactions_total", "name=\"redact.0\"") - red0, 3);
    assert_int_equal(ph_metric(h, "spool_redact_records_changed_total", "name=\"redact.0\"") - rec0,
                     1);
    spool_batch_destroy(b);
    ph_free(h);
}

/* A value much longer than the buffers so far, with many matches whose replacement is longer
 * than the match: the output buffer grows mid-substitution and the result is still whole. */
static void test_long_value(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [ipv4]\n"
                     "    replacement: \"<an address was here, now it is gone>\"\n");
    size_t n = 5000;
    char *in = malloc(n * 10 + 1), *want = malloc(n * 40 + 1);
    assert_non_null(in);
    assert_non_null(want);
    in[0] = want[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(in, "1.2.3.4 x ");
    }
    for (size_t i = 0; i < n; i++) {
        strcat(want, "<an address was here, now it is gone> x ");
    }
    spool_batch *b = ph_batch(h);
    ph_add(b, "short 1.1.1.1", NULL, NULL, NULL, NULL, NULL);
    ph_add(b, in, NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(ph_process(h, b), 0);
    spool_record r;
    spool_batch_get(b, 1, &r);
    assert_int_equal(r.value_len, (int32_t)strlen(want));
    assert_memory_equal(r.value, want, strlen(want));
    spool_batch_destroy(b);
    free(in);
    free(want);
    ph_free(h);
}

/* A user pattern that backtracks catastrophically hits the match limit: the field keeps what
 * the earlier patterns made of it, the error is counted, later patterns and records go on. */
static void test_match_limit(void **state)
{
    (void)state;
    ph *h = ph_start("  - type: redact\n    builtins: [email]\n"
                     "    patterns: {'(a+)+$': x, 'tail': T}\n");
    int64_t err0 = ph_metric(h, "spool_errors_total", "name=\"redact.0\"");
    assert_int_equal(err0, 0);
    spool_batch *b = ph_batch(h);
    ph_add(b, "jo@ex.com aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab tail", NULL, NULL, NULL, NULL,
           NULL);
    ph_add(b, "aaa", NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(ph_process(h, b), 0);
    assert_string_equal(ph_value(b, 0), "[REDACTED] aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab T");
    assert_string_equal(ph_value(b, 1), "x");
    assert_int_equal(ph_metric(h, "spool_errors_total", "name=\"redact.0\""), 1);
    spool_batch_destroy(b);
    ph_free(h);
}

static void test_option_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        const char *error;
    } cs[] = {
        {"  - type: redact\n", "9:5: processors[0]: nothing to redact"},
        {"  - type: redact\n    builtins: [email, phone]\n",
         "10:15: processors[0].builtins: unknown built-in pattern 'phone'"},
        {"  - type: redact\n    builtins: [email]\n    fields: [value, timestamp]\n",
         "11:13: processors[0].fields: 'timestamp' cannot be redacted"},
        {"  - type: redact\n    builtins: [email]\n    replacements: {mail: x}\n",
         "processors[0].replacements: unknown built-in pattern 'mail'"},
        {"  - type: redact\n    patterns:\n      'ok': x\n      'a(b[': x\n",
         "12:15: processors[0].patterns.a(b[: bad regular expression a(b[: missing terminating ] "
         "for character class at offset 4"},
        {"  - type: redact\n    patterns: {'(a)(b)': '$3'}\n",
         "processors[0].patterns.(a)(b): bad replacement for (a)(b): $3: the pattern has 2 "
         "capture groups"},
        {"  - type: redact\n    patterns: {'(?<n>a)': '$${m}'}\n",
         "bad replacement for (?<n>a): the pattern has no group named m"},
        {"  - type: redact\n    patterns: {'a': 'x$'}\n", "bad group reference at offset 1"},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        ph *h = ph_load(cs[i].yaml);
        char *e = ph_errors(h);
        if (!strstr(e, cs[i].error)) {
            fprintf(stderr, "case %zu: want '%s' in:\n%s", i, cs[i].error, e);
        }
        assert_non_null(strstr(e, cs[i].error));
        free(e);
        ph_free(h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_credit_card),
        cmocka_unit_test(test_gates_miss_nothing),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_all_builtins_and_replacements),
        cmocka_unit_test(test_user_patterns),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_no_match_untouched),
        cmocka_unit_test(test_long_value),
        cmocka_unit_test(test_match_limit),
        cmocka_unit_test(test_option_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
