/*
 * test_url.c: spool_parse_url (spool.h), the one URL parser behind
 * spool_check_url and the tcp output: scheme choice (without case),
 * userinfo, host names, IPv4 and IPv6 literals in brackets, optional and
 * required ports, the path that follows, and the reasons for bad URLs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spool/spool.h"

static const char *const http_schemes[] = {"http", "https", NULL};

static void test_good_urls(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        int flags;
        int scheme;
        const char *host;
        int port;
        const char *path;
    } v[] = {
        {"http://example.com:8080/v1/batches", 0, 0, "example.com", 8080, "/v1/batches"},
        {"HTTPS://example.com", SPOOL_ADDR_PORT_OPTIONAL, 1, "example.com", -1, ""},
        {"https://user:secret@10.0.0.1:443?x=1", 0, 1, "10.0.0.1", 443, "?x=1"},
        {"http://[::1]:9000/in", 0, 0, "::1", 9000, "/in"},
        {"http://[2001:db8::42]/x#frag", SPOOL_ADDR_PORT_OPTIONAL, 0, "2001:db8::42", -1,
         "/x#frag"},
        {"http://[fe80::1%25eth0]:80", 0, 0, NULL, 0, NULL}, /* zone id: refused below */
        {"https://a-b.c_d.example.:1/", 0, 1, "a-b.c_d.example.", 1, "/"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        spool_url u;
        char why[256] = "";
        memset(&u, 0x5a, sizeof(u));
        int rc = spool_parse_url(v[i].url, http_schemes, v[i].flags, &u, why, sizeof(why));
        if (v[i].host == NULL) {
            assert_int_equal(rc, -EINVAL);
            continue;
        }
        if (rc != 0) {
            fail_msg("'%s': %s", v[i].url, why);
        }
        assert_int_equal(u.scheme, v[i].scheme);
        assert_string_equal(u.host, v[i].host);
        assert_int_equal(u.port, v[i].port);
        assert_string_equal(u.path, v[i].path);
    }
    /* out may be NULL: a check only. */
    char why[64];
    assert_int_equal(spool_parse_url("http://h:1", http_schemes, 0, NULL, why, sizeof(why)), 0);
}

static void test_bad_urls(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        int flags;
        const char *why; /* a part of the reason */
    } v[] = {
        {"", 0, "empty URL"},
        {"example.com:80", 0, "scheme must be one of http://, https://"},
        {"ftp://example.com:21", 0, "scheme must be one of"},
        {"http:/example.com:80", 0, "scheme must be one of"},
        {"http://", SPOOL_ADDR_PORT_OPTIONAL, "no host"},
        {"http:///path", SPOOL_ADDR_PORT_OPTIONAL, "no host"},
        {"http://user@/x", SPOOL_ADDR_PORT_OPTIONAL, "no host"},
        {"http://example.com/x", 0, "no port"},
        {"http://example.com:0", 0, "out of range (1 to 65535)"},
        {"http://example.com:65536", 0, "out of range"},
        {"http://example.com:http", 0, "is not a number"},
        {"http://exa mple.com:80", 0, "is not a valid host name"},
        {"http://-bad.example:80", 0, "is not a valid host name"},
        {"http://300.1.2.3:80", 0, "is not a valid IPv4 address"},
        {"http://::1:80", 0, "in brackets"},
        {"http://[::1:80", 0, "missing ']'"},
        {"http://[::1]80", 0, "expected [IPv6]:port"},
        {"http://[::g]:80", 0, "is not a valid IPv6 address"},
        {"http://[]:80", 0, "is not a valid IPv6 address"},
        {"http://[::1]", 0, "expected [IPv6]:port"},
        {"http://*:80", 0, "is not a valid host name"}, /* listen-only, ignored here */
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        spool_url u;
        char why[256] = "";
        int rc = spool_parse_url(v[i].url, http_schemes, v[i].flags | SPOOL_ADDR_LISTEN, &u, why,
                                 sizeof(why));
        if (rc != -EINVAL) {
            fail_msg("'%s': rc %d, want -EINVAL", v[i].url, rc);
        }
        if (strstr(why, v[i].why) == NULL) {
            fail_msg("'%s': reason '%s' lacks '%s'", v[i].url, why, v[i].why);
        }
    }
    /* A NULL URL is an error too, not a crash. */
    char why[64];
    assert_int_equal(spool_parse_url(NULL, http_schemes, 0, NULL, why, sizeof(why)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_urls),
        cmocka_unit_test(test_bad_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
