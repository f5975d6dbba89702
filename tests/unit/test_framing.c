/*
 * test_framing.c: newline and octet-counting framing (inputs/socket/framing.c).
 *
 * Every case is fed three ways (whole, one byte at a time, and in chunks
 * of 7) and must give the same frames with the same flags: framing must
 * not depend on how the kernel cut the stream.
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

#include "../../inputs/socket/framing.h"

#define MAX_FRAMES 64

typedef struct got {
    char frames[MAX_FRAMES][256];
    unsigned flags[MAX_FRAMES];
    size_t n;
    const uint8_t *in_lo; /* input range, to see zero-copy frames */
    const uint8_t *in_hi;
    size_t in_place;
} got;

static int collect(void *arg, const uint8_t *p, size_t n, unsigned flags)
{
    got *g = arg;
    assert_true(g->n < MAX_FRAMES);
    assert_true(n < sizeof(g->frames[0]));
    memcpy(g->frames[g->n], p, n);
    g->frames[g->n][n] = '\0';
    g->flags[g->n] = flags;
    g->n++;
    if (p >= g->in_lo && p < g->in_hi) {
        g->in_place++;
    }
    return 0;
}

/* Feeds `in` with the given chunk size (0 = whole); returns feed's result. */
static int run(sock_frame_mode mode, sock_frame_long on_long, size_t max, const char *in,
               size_t len, size_t chunk, int finish, got *g, sock_framer *out_stats)
{
    sock_framer f;
    memset(g, 0, sizeof(*g));
    g->in_lo = (const uint8_t *)in;
    g->in_hi = (const uint8_t *)in + len;
    sock_framer_init(&f, mode, on_long, max);
    int rc = 0;
    if (chunk == 0) {
        chunk = len ? len : 1;
    }
    for (size_t off = 0; off < len && rc == 0; off += chunk) {
        size_t k = len - off < chunk ? len - off : chunk;
        rc = sock_framer_feed(&f, (const uint8_t *)in + off, k, collect, g);
    }
    if (rc == 0 && finish) {
        rc = sock_framer_finish(&f, collect, g);
    }
    if (out_stats != NULL) {
        *out_stats = f;
    }
    sock_framer_free(&f);
    return rc;
}

typedef struct expect {
    const char *frame;
    unsigned flags;
} expect;

static void check_all_chunkings(sock_frame_mode mode, sock_frame_long on_long, size_t max,
                                const char *in, size_t len, int finish, const expect *want,
                                size_t nwant, int want_rc)
{
    static const size_t chunks[] = {0, 1, 7};
    for (size_t c = 0; c < 3; c++) {
        got g;
        int rc = run(mode, on_long, max, in, len, chunks[c], finish, &g, NULL);
        if (rc != want_rc || g.n != nwant) {
            fail_msg("chunk %zu: rc %d (want %d), %zu frames (want %zu) for \"%s\"", chunks[c], rc,
                     want_rc, g.n, nwant, in);
        }
        for (size_t i = 0; i < nwant; i++) {
            assert_string_equal(g.frames[i], want[i].frame);
            assert_int_equal(g.flags[i], want[i].flags);
        }
    }
}

#define CHECK(mode, lg, max, in, fin, rc, ...)                                                     \
    do {                                                                                           \
        static const expect w_[] = {__VA_ARGS__};                                                  \
        check_all_chunkings(mode, lg, max, in, sizeof(in) - 1, fin, w_,                            \
                            sizeof(w_) / sizeof(w_[0]) - 1, rc);                                   \
    } while (0)
#define END                                                                                        \
    {                                                                                              \
        NULL, 0                                                                                    \
    }

static void newline_basic(void **state)
{
    (void)state;
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 100, "a\nbb\r\nccc\n", 0, 0, {"a", 0}, {"bb", 0},
          {"ccc", 0}, END);
    /* Empty lines and lone CRs are skipped. */
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 100, "\n\na\n\r\n\nb\n", 0, 0, {"a", 0}, {"b", 0},
          END);
    /* A last line without LF comes out at finish, not before. */
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 100, "x\ntail", 1, 0, {"x", 0}, {"tail", 0}, END);
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 100, "x\ntail", 0, 0, {"x", 0}, END);
    /* Digits are just text in newline mode. */
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 100, "5 hello\n", 0, 0, {"5 hello", 0}, END);
}

static void newline_long(void **state)
{
    (void)state;
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 4, "abcdefghij\nxy\n", 0, 0,
          {"abcd", SOCK_FRAME_F_SPLIT}, {"efgh", SOCK_FRAME_F_SPLIT}, {"ij", 0}, {"xy", 0}, END);
    /* Exactly max_bytes is not long. */
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 4, "abcd\nefgh\r\n", 0, 0, {"abcd", 0}, {"efgh", 0},
          END);
    CHECK(SOCK_FRAME_NEWLINE, SOCK_LONG_TRUNCATE, 4, "abcdefghij\nxy\n", 0, 0,
          {"abcd", SOCK_FRAME_F_TRUNCATED}, {"xy", 0}, END);

    got g;
    sock_framer st;
    const char *in = "abcdefghij\nxy\n0123456789\n";
    assert_int_equal(run(SOCK_FRAME_NEWLINE, SOCK_LONG_TRUNCATE, 4, in, strlen(in), 3, 0, &g, &st),
                     0);
    assert_int_equal(st.truncated_msgs, 2);
    assert_int_equal(st.dropped_bytes, 12);
    assert_int_equal(run(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 4, in, strlen(in), 3, 0, &g, &st), 0);
    assert_int_equal(st.split_msgs, 2);
    assert_int_equal(g.n, 7);
}

static void zero_copy(void **state)
{
    (void)state;
    got g;
    const char *in = "one\ntwo\nthree\n";
    assert_int_equal(run(SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 64, in, strlen(in), 0, 0, &g, NULL),
                     0);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.in_place, 3);
    const char *oc = "3 one5 three";
    assert_int_equal(run(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 64, oc, strlen(oc), 0, 0, &g, NULL), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.in_place, 2);
}

static void octet_counting(void **state)
{
    (void)state;
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 100, "5 hello3 abc", 0, 0, {"hello", 0}, {"abc", 0},
          END);
    /* The message may hold LFs; LF between frames is tolerated. */
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 100, "12 with\nnewline\n2 ok", 0, 0,
          {"with\nnewline", 0}, {"ok", 0}, END);
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 4, "10 01234567893 abc", 0, 0,
          {"0123", SOCK_FRAME_F_SPLIT}, {"4567", SOCK_FRAME_F_SPLIT}, {"89", 0}, {"abc", 0}, END);
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_TRUNCATE, 4, "10 01234567893 abc", 0, 0,
          {"0123", SOCK_FRAME_F_TRUNCATED}, {"abc", 0}, END);
    /* Cut short by the end of the stream. */
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 100, "10 abc", 1, 0, {"abc", SOCK_FRAME_F_INCOMPLETE},
          END);
    /* Strict mode: not a header. */
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 100, "<13>hi\n", 0, -EPROTO, END);
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 100, "2 ok12x", 0, -EPROTO, {"ok", 0}, END);
    /* Ten digits is more than any message we take. */
    CHECK(SOCK_FRAME_OCTET, SOCK_LONG_SPLIT, 100, "1234567890 x", 0, -EPROTO, END);
}

static void auto_detect(void **state)
{
    (void)state;
    CHECK(SOCK_FRAME_AUTO, SOCK_LONG_SPLIT, 100, "5 hello<13>line one\n3 abc<14>two\n", 0, 0,
          {"hello", 0}, {"<13>line one", 0}, {"abc", 0}, {"<14>two", 0}, END);
    /* Digits without a valid header: the frame is a line after all. */
    CHECK(SOCK_FRAME_AUTO, SOCK_LONG_SPLIT, 100, "123abc\n42\n7 seven!\n", 0, 0, {"123abc", 0},
          {"42", 0}, {"seven!\n", 0}, END);
    CHECK(SOCK_FRAME_AUTO, SOCK_LONG_SPLIT, 100, "99", 1, 0, {"99", 0}, END);
}

static void datagrams(void **state)
{
    (void)state;
    sock_framer f;
    got g;
    memset(&g, 0, sizeof(g));
    sock_framer_init(&f, SOCK_FRAME_NONE, SOCK_LONG_SPLIT, 4);
    assert_int_equal(sock_framer_datagram(&f, (const uint8_t *)"ab\r\n", 4, collect, &g), 0);
    assert_int_equal(sock_framer_datagram(&f, (const uint8_t *)"\n", 1, collect, &g), 0);
    assert_int_equal(sock_framer_datagram(&f, (const uint8_t *)"abcdefghi", 9, collect, &g), 0);
    assert_int_equal(g.n, 4);
    assert_string_equal(g.frames[0], "ab");
    assert_string_equal(g.frames[1], "abcd");
    assert_int_equal(g.flags[1], SOCK_FRAME_F_SPLIT);
    assert_string_equal(g.frames[3], "i");
    assert_int_equal(f.split_msgs, 1);
    sock_framer_free(&f);

    memset(&g, 0, sizeof(g));
    sock_framer_init(&f, SOCK_FRAME_NONE, SOCK_LONG_TRUNCATE, 4);
    assert_int_equal(sock_framer_datagram(&f, (const uint8_t *)"abcdefghi", 9, collect, &g), 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.frames[0], "abcd");
    assert_int_equal(g.flags[0], SOCK_FRAME_F_TRUNCATED);
    assert_int_equal(f.truncated_msgs, 1);
    assert_int_equal(f.dropped_bytes, 5);
    sock_framer_free(&f);

    /* Newline framing inside a datagram; a partial line ends with it. */
    memset(&g, 0, sizeof(g));
    sock_framer_init(&f, SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 64);
    assert_int_equal(sock_framer_datagram(&f, (const uint8_t *)"a\nb\nc", 5, collect, &g), 0);
    assert_int_equal(sock_framer_datagram(&f, (const uint8_t *)"d\n", 2, collect, &g), 0);
    assert_int_equal(g.n, 4);
    assert_string_equal(g.frames[2], "c");
    assert_string_equal(g.frames[3], "d");
    sock_framer_free(&f);
}

static int stop_after_two(void *arg, const uint8_t *p, size_t n, unsigned flags)
{
    int *count = arg;
    (void)p;
    (void)n;
    (void)flags;
    return ++*count == 2 ? 99 : 0;
}

static void callback_stops(void **state)
{
    (void)state;
    sock_framer f;
    int count = 0;
    sock_framer_init(&f, SOCK_FRAME_NEWLINE, SOCK_LONG_SPLIT, 64);
    assert_int_equal(sock_framer_feed(&f, (const uint8_t *)"a\nb\nc\n", 6, stop_after_two, &count),
                     99);
    assert_int_equal(count, 2);
    sock_framer_free(&f);
    sock_framer_free(NULL);
}

/* The carry buffer never exceeds max_bytes whatever arrives. */
static void memory_bounded(void **state)
{
    (void)state;
    sock_framer f;
    got g;
    memset(&g, 0, sizeof(g));
    sock_framer_init(&f, SOCK_FRAME_NEWLINE, SOCK_LONG_TRUNCATE, 100);
    char junk[1000];
    memset(junk, 'x', sizeof(junk));
    for (int i = 0; i < 100; i++) {
        assert_int_equal(sock_framer_feed(&f, (const uint8_t *)junk, sizeof(junk), collect, &g), 0);
        assert_true(f.cap <= 101);
    }
    assert_int_equal(g.n, 1);
    assert_int_equal(f.dropped_bytes, 100 * 1000 - 100);
    sock_framer_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(newline_basic),  cmocka_unit_test(newline_long),
        cmocka_unit_test(zero_copy),      cmocka_unit_test(octet_counting),
        cmocka_unit_test(auto_detect),    cmocka_unit_test(datagrams),
        cmocka_unit_test(callback_stops), cmocka_unit_test(memory_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
