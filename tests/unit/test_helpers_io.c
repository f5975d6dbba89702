/*
 * test_helpers_io.c: the byte-level public helpers (spool.h): spool_buf
 * growth, compression round trips to and from a buffer (zstd, gzip, none)
 * with the output limit, corrupt and truncated input and appending after
 * existing bytes; big-endian readers/writers; mkdir -p; syslog names;
 * host:port parsing vectors (the rules spool_check_address checks).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool/spool.h"

static void test_buf_grows(void **state)
{
    (void)state;
    spool_buf b = {0};
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(spool_buf_append(&b, "0123456789", 10), 0);
    }
    assert_int_equal(b.len, 10000);
    assert_true(b.cap >= b.len);
    assert_memory_equal(b.data + 9990, "0123456789", 10);
    assert_int_equal(spool_buf_append(&b, NULL, 0), 0);
    assert_int_equal(spool_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(b.len, 10000);
    spool_buf_free(&b);
    assert_null(b.data);
}

static void roundtrip(int codec, int level)
{
    size_t n = 200000;
    uint8_t *src = malloc(n);
    assert_non_null(src);
    for (size_t i = 0; i < n; i++) {
        src[i] = (uint8_t)("spool log line "[i % 15] + (i / 4096));
    }
    spool_buf packed = {0}, plain = {0};
    assert_int_equal(spool_buf_append(&packed, "HDR", 3), 0);
    assert_int_equal(spool_compress(&packed, codec, level, src, n), 0);
    if (codec != SPOOL_COMPRESS_NONE) {
        assert_true(packed.len - 3 < n / 4);
    }
    assert_int_equal(spool_buf_append(&plain, "pre", 3), 0);
    assert_int_equal(spool_decompress(&plain, codec, packed.data + 3, packed.len - 3, n), 0);
    assert_int_equal(plain.len, n + 3);
    assert_memory_equal(plain.data, "pre", 3);
    assert_memory_equal(plain.data + 3, src, n);
    /* One byte under the size: refused, nothing appended. */
    assert_int_equal(spool_decompress(&plain, codec, packed.data + 3, packed.len - 3, n - 1),
                     -EFBIG);
    assert_int_equal(plain.len, n + 3);
    if (codec != SPOOL_COMPRESS_NONE) {
        /* Truncated and corrupt input. */
        assert_int_equal(spool_decompress(&plain, codec, packed.data + 3, (packed.len - 3) / 2, n),
                         -EBADMSG);
        size_t mid = 3 + (packed.len - 3) / 2;
        packed.data[mid] ^= 0x5a;
        packed.data[mid + 1] ^= 0xa5;
        int rc = spool_decompress(&plain, codec, packed.data + 3, packed.len - 3, n);
        /* An error leaves out as it was; a "success" cannot be the input. */
        if (rc < 0) {
            assert_int_equal(plain.len, n + 3);
        } else {
            assert_true(plain.len != 2 * n + 3 || memcmp(plain.data + n + 3, src, n) != 0);
        }
    }
    spool_buf_free(&packed);
    spool_buf_free(&plain);
    free(src);
}

static void test_compress_roundtrips(void **state)
{
    (void)state;
    roundtrip(SPOOL_COMPRESS_ZSTD, 3);
    roundtrip(SPOOL_COMPRESS_ZSTD, 0); /* default level */
    roundtrip(SPOOL_COMPRESS_GZIP, 6);
    roundtrip(SPOOL_COMPRESS_NONE, 0);
    spool_buf b = {0};
    assert_int_equal(spool_compress(&b, 2, 0, "x", 1), -EINVAL); /* snappy */
    assert_int_equal(spool_decompress(&b, 3, "x", 1, 10), -EINVAL);
    assert_int_equal(b.len, 0);
    spool_buf_free(&b);
}

static void test_big_endian(void **state)
{
    (void)state;
    uint8_t b[9] = {0xee, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    assert_int_equal(spool_get_be16(b + 1), 0x0102);
    assert_int_equal(spool_get_be32(b + 1), 0x01020304);
    assert_true(spool_get_be64(b + 1) == 0x0102030405060708ULL);
    uint8_t o[9] = {0};
    spool_put_be64(o + 1, 0xfffefdfcfbfaf9f8ULL);
    assert_int_equal(spool_get_be32(o + 1), 0xfffefdfc);
    spool_put_be32(o + 1, 0x80000001u);
    assert_int_equal(o[1], 0x80);
    assert_int_equal(o[4], 0x01);
    spool_put_be16(o, 0xabcd);
    assert_int_equal(spool_get_be16(o), 0xabcd);
    assert_int_equal(o[0], 0xab);
}

static void test_mkdirs(void **state)
{
    (void)state;
    char base[] = "/tmp/spool_mkdirs_XXXXXX";
    assert_non_null(mkdtemp(base));
    char path[256], file[256];
    snprintf(path, sizeof(path), "%s/a/b//c/", base);
    assert_int_equal(spool_mkdirs(path, 0755), 0);
    assert_int_equal(spool_mkdirs(path, 0755), 0); /* exists: fine */
    struct stat st;
    snprintf(path, sizeof(path), "%s/a/b/c", base);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    snprintf(file, sizeof(file), "%s/f", base);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(spool_mkdirs(file, 0755), -ENOTDIR);
    snprintf(path, sizeof(path), "%s/f/x", base);
    assert_int_equal(spool_mkdirs(path, 0755), -ENOTDIR);
    assert_int_equal(spool_mkdirs("", 0755), -EINVAL);
    unlink(file);
    const char *dirs[] = {"a/b/c", "a/b", "a"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", base, dirs[i]);
        assert_int_equal(rmdir(path), 0);
    }
    assert_int_equal(rmdir(base), 0);
}

static void test_syslog_names(void **state)
{
    (void)state;
    assert_string_equal(spool_syslog_facility_name(0), "kern");
    assert_string_equal(spool_syslog_facility_name(23), "local7");
    assert_null(spool_syslog_facility_name(24));
    assert_string_equal(spool_syslog_severity_name(4), "warning");
    assert_null(spool_syslog_severity_name(-1));
    for (int i = 0; i < 24; i++) {
        assert_int_equal(spool_syslog_facility_from_name(spool_syslog_facility_name(i)), i);
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(spool_syslog_severity_from_name(spool_syslog_severity_name(i)), i);
    }
    assert_int_equal(spool_syslog_severity_from_name("WARN"), 4);
    assert_int_equal(spool_syslog_facility_from_name("8"), 8);
    assert_int_equal(spool_syslog_facility_from_name(NULL), -1);
}

typedef struct addr_vec {
    const char *text;
    int flags;
    int rc;
    const char *host;
    int port;
} addr_vec;

static void test_parse_address(void **state)
{
    (void)state;
    static const addr_vec v[] = {
        {"example.com:80", 0, 0, "example.com", 80},
        {"10.0.0.1:65535", 0, 0, "10.0.0.1", 65535},
        {"[::1]:514", 0, 0, "::1", 514},
        {"[fe80::1%25]:1", 0, -EINVAL, NULL, 0},
        {"[2001:db8::7]", SPOOL_ADDR_PORT_OPTIONAL, 0, "2001:db8::7", -1},
        {"host", SPOOL_ADDR_PORT_OPTIONAL, 0, "host", -1},
        {":8080", SPOOL_ADDR_LISTEN, 0, "", 8080},
        {"*:0", SPOOL_ADDR_LISTEN, 0, "", 0},
        {"0.0.0.0:0", SPOOL_ADDR_LISTEN, 0, "0.0.0.0", 0},
        {":8080", 0, -EINVAL, NULL, 0},
        {"*:80", 0, -EINVAL, NULL, 0},
        {"host:0", 0, -EINVAL, NULL, 0},
        {"host:65536", 0, -EINVAL, NULL, 0},
        {"host:80x", 0, -EINVAL, NULL, 0},
        {"host", 0, -EINVAL, NULL, 0},
        {"::1:80", 0, -EINVAL, NULL, 0},
        {"[::1:80", 0, -EINVAL, NULL, 0},
        {"[::zz]:80", 0, -EINVAL, NULL, 0},
        {"300.1.1.1:80", 0, -EINVAL, NULL, 0},
        {"bad_-host-:80", 0, -EINVAL, NULL, 0},
        {"", 0, -EINVAL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char host[64] = "unset", why[256] = "";
        int port = -2;
        int rc =
            spool_parse_address(v[i].text, v[i].flags, host, sizeof(host), &port, why, sizeof(why));
        if (rc != v[i].rc) {
            fail_msg("'%s': rc %d, want %d (%s)", v[i].text, rc, v[i].rc, why);
        }
        if (rc == 0) {
            assert_string_equal(host, v[i].host);
            assert_int_equal(port, v[i].port);
        } else {
            assert_true(why[0] != '\0');
        }
    }
    /* A host longer than the caller's buffer is an error, not a cut. */
    char tiny[4], why[128];
    assert_int_equal(spool_parse_address("abcd:1", 0, tiny, sizeof(tiny), NULL, why, sizeof(why)),
                     -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grows),    cmocka_unit_test(test_compress_roundtrips),
        cmocka_unit_test(test_big_endian),   cmocka_unit_test(test_mkdirs),
        cmocka_unit_test(test_syslog_names), cmocka_unit_test(test_parse_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
