/*
 * test_tail_decomp.c: the tail input's decompressor (inputs/tail/tail_decomp.c):
 * gzip with several members, zstd with several frames, a file still being
 * written (input that ends inside a member), corrupt input.
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
#include <zlib.h>
#include <zstd.h>

#include <cmocka.h>

#include "../../inputs/tail/tail.h"

typedef struct sink {
    uint8_t *p;
    size_t len, cap;
} sink;

static int take(void *arg, const uint8_t *p, size_t n)
{
    sink *s = arg;
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->p = realloc(s->p, s->cap);
        assert_non_null(s->p);
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
    return 0;
}

/* Numbered lines "<i> xxxx...\n" for i in [a, b]. */
static size_t lines(char *buf, size_t cap, int a, int b)
{
    size_t n = 0;
    for (int i = a; i <= b; i++) {
        n += (size_t)snprintf(buf + n, cap - n, "%d %s\n", i,
                              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    }
    return n;
}

/* One gzip member of p into out; returns its length. */
static size_t gzip_member(const char *p, size_t n, uint8_t *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t len = cap - zs.avail_out;
    deflateEnd(&zs);
    return len;
}

static int tmpfile_with(const uint8_t *p, size_t n, char *path)
{
    strcpy(path, "/tmp/spool-tail-dz-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    return fd;
}

static void run_all(tail_dz *z, int fd, sink *s, int want_complete)
{
    uint8_t out[4096]; /* small blocks: several calls of fn per member */
    int r, rounds = 0;
    while ((r = tail_dz_run(z, fd, out, sizeof(out), 1 << 16, take, s)) == 1) {
        assert_true(++rounds < 10000);
    }
    assert_int_equal(r, 0);
    assert_int_equal(tail_dz_complete(z), want_complete);
}

static void gzip_members_and_partial(void **state)
{
    (void)state;
    static char text[200000];
    size_t half = lines(text, sizeof(text), 1, 1000);
    size_t all = half + lines(text + half, sizeof(text) - half, 1001, 2000);
    static uint8_t gz[200000];
    size_t m1 = gzip_member(text, half, gz, sizeof(gz));
    size_t m2 = gzip_member(text + half, all - half, gz + m1, sizeof(gz) - m1);
    char path[64];
    /* Being written: only part of the second member is there yet. */
    int fd = tmpfile_with(gz, m1 + m2 / 2, path);
    tail_dz *z = tail_dz_new(TAIL_KIND_GZIP);
    assert_non_null(z);
    sink s = {0};
    run_all(z, fd, &s, 0);
    assert_true(s.len >= half && s.len < all);
    assert_memory_equal(s.p, text, s.len);
    /* The rest comes: the same decompressor goes on. */
    assert_int_equal(pwrite(fd, gz + m1 + m2 / 2, m2 - m2 / 2, (off_t)(m1 + m2 / 2)),
                     (ssize_t)(m2 - m2 / 2));
    run_all(z, fd, &s, 1);
    assert_int_equal(s.len, all);
    assert_memory_equal(s.p, text, all);
    assert_int_equal(tail_dz_out(z), (int64_t)all);
    tail_dz_free(z);
    close(fd);
    unlink(path);
    free(s.p);
}

static void zstd_frames(void **state)
{
    (void)state;
    static char text[200000];
    size_t half = lines(text, sizeof(text), 1, 1000);
    size_t all = half + lines(text + half, sizeof(text) - half, 1001, 2000);
    static uint8_t zs[200000];
    size_t f1 = ZSTD_compress(zs, sizeof(zs), text, half, 3);
    assert_false(ZSTD_isError(f1));
    size_t f2 = ZSTD_compress(zs + f1, sizeof(zs) - f1, text + half, all - half, 3);
    assert_false(ZSTD_isError(f2));
    char path[64];
    int fd = tmpfile_with(zs, f1 + f2, path);
    tail_dz *z = tail_dz_new(TAIL_KIND_ZSTD);
    assert_non_null(z);
    sink s = {0};
    run_all(z, fd, &s, 1);
    assert_int_equal(s.len, all);
    assert_memory_equal(s.p, text, all);
    tail_dz_free(z);
    close(fd);
    unlink(path);
    free(s.p);
}

static void corrupt(void **state)
{
    (void)state;
    uint8_t bad[64] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0x03};
    memset(bad + 10, 0xff, sizeof(bad) - 10);
    char path[64];
    int fd = tmpfile_with(bad, sizeof(bad), path);
    tail_dz *z = tail_dz_new(TAIL_KIND_GZIP);
    uint8_t out[4096];
    sink s = {0};
    assert_int_equal(tail_dz_run(z, fd, out, sizeof(out), 1 << 16, take, &s), -EBADMSG);
    tail_dz_free(z);
    tail_dz_free(NULL);
    close(fd);
    unlink(path);
    free(s.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gzip_members_and_partial),
        cmocka_unit_test(zstd_frames),
        cmocka_unit_test(corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
