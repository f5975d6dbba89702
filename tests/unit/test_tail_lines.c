/*
 * test_tail_lines.c: the tail input's pure parts on buffers: the line
 * splitter (lines, '\r', incomplete lines, long lines, multiline with real
 * Java and Python traces, positions), the glob matcher and expander, and
 * the position blob.
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

#include "../../inputs/tail/tail.h"

/* ---- a record collector ---- */

#define MAXREC 4096

typedef struct coll {
    char *rec[MAXREC];
    size_t len[MAXREC];
    size_t n;
} coll;

static int collect(void *arg, const uint8_t *p, size_t n)
{
    coll *c = arg;
    assert_true(c->n < MAXREC);
    c->rec[c->n] = malloc(n + 1);
    memcpy(c->rec[c->n], p, n);
    c->rec[c->n][n] = '\0';
    c->len[c->n] = n;
    c->n++;
    return 0;
}

static void coll_free(coll *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->rec[i]);
    }
    c->n = 0;
}

static tail_split_conf conf_plain(void)
{
    tail_split_conf c = {.strip_cr = 0, .max_line = 65536, .truncate = 0};
    return c;
}

static void feed(tail_splitter *sp, const tail_split_conf *c, const char *s, coll *out)
{
    assert_int_equal(tail_split_feed(sp, c, (const uint8_t *)s, strlen(s), 1, collect, out), 0);
}

/* ---- lines ---- */

static void lines_basic(void **state)
{
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    coll out = {0};
    tail_split_reset(&sp, 0);
    feed(&sp, &c, "one\ntwo\nthr", &out);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.rec[0], "one");
    assert_string_equal(out.rec[1], "two");
    assert_int_equal(sp.emit_off, 8);
    assert_int_equal(sp.off, 11);
    assert_true(tail_split_pending(&sp));
    assert_int_equal(sp.carry_since_ms, 1);
    feed(&sp, &c, "ee\n\nfour\n", &out);
    assert_int_equal(out.n, 5);
    assert_string_equal(out.rec[2], "three");
    assert_string_equal(out.rec[3], "");
    assert_string_equal(out.rec[4], "four");
    assert_int_equal(sp.emit_off, 20);
    assert_false(tail_split_pending(&sp));
    assert_int_equal(sp.carry_since_ms, 0);
    coll_free(&out);
    tail_split_free(&sp);
}

static void lines_cr(void **state)
{
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    coll out = {0};
    tail_split_reset(&sp, 0);
    feed(&sp, &c, "a\r\nb\r", &out);
    c.strip_cr = 1;
    feed(&sp, &c, "\nc\rd\n", &out);
    assert_int_equal(out.n, 3);
    assert_string_equal(out.rec[0], "a\r"); /* strip_cr was off for it */
    assert_string_equal(out.rec[1], "b");   /* '\r' and '\n' in different feeds */
    assert_string_equal(out.rec[2], "c\rd");
    coll_free(&out);
    tail_split_free(&sp);
}

static void lines_partial_flush(void **state)
{
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    coll out = {0};
    tail_split_reset(&sp, 100);
    feed(&sp, &c, "x\nhalf", &out);
    assert_int_equal(sp.emit_off, 102);
    assert_int_equal(tail_split_flush_partial(&sp, &c, 5, collect, &out), 0);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.rec[1], "half");
    assert_int_equal(sp.emit_off, 106);
    assert_false(tail_split_pending(&sp));
    /* What follows is a new line. */
    feed(&sp, &c, " more\n", &out);
    assert_string_equal(out.rec[2], " more");
    assert_int_equal(sp.emit_off, 112);
    assert_int_equal(tail_split_flush_partial(&sp, &c, 5, collect, &out), 0);
    assert_int_equal(out.n, 3);
    coll_free(&out);
    tail_split_free(&sp);
}

static void lines_binary(void **state)
{
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    coll out = {0};
    tail_split_reset(&sp, 0);
    const uint8_t data[] = {'a', 0, 'b', 0xff, 0xfe, 0xc3, '\n', 0, '\n'};
    assert_int_equal(tail_split_feed(&sp, &c, data, sizeof(data), 0, collect, &out), 0);
    assert_int_equal(out.n, 2);
    assert_int_equal(out.len[0], 6);
    assert_memory_equal(out.rec[0], data, 6);
    assert_int_equal(out.len[1], 1);
    assert_int_equal(out.rec[1][0], 0);
    coll_free(&out);
    tail_split_free(&sp);
}

/* Feeding in any chunking gives the same records and end position. */
static void lines_chunking(void **state)
{
    char text[8192];
    size_t n = 0;
    srand(42);
    while (n < sizeof(text) - 200) {
        int len = rand() % 150;
        for (int i = 0; i < len; i++) {
            text[n++] = (char)('a' + rand() % 26);
        }
        text[n++] = (rand() % 7 == 0) ? '\r' : 'z';
        text[n++] = '\n';
    }
    for (int strip = 0; strip < 2; strip++) {
        for (size_t maxl = 40; maxl <= 200; maxl += 160) {
            for (int trunc = 0; trunc < 2; trunc++) {
                tail_split_conf c = conf_plain();
                c.strip_cr = strip;
                c.max_line = maxl;
                c.truncate = trunc;
                coll whole = {0}, parts = {0};
                tail_splitter a = {0}, b = {0};
                tail_split_reset(&a, 0);
                tail_split_reset(&b, 0);
                assert_int_equal(tail_split_feed(&a, &c, (uint8_t *)text, n, 0, collect, &whole),
                                 0);
                size_t pos = 0;
                while (pos < n) {
                    size_t k = 1 + (size_t)rand() % 97;
                    if (k > n - pos) {
                        k = n - pos;
                    }
                    assert_int_equal(
                        tail_split_feed(&b, &c, (uint8_t *)text + pos, k, 0, collect, &parts), 0);
                    pos += k;
                }
                assert_int_equal(whole.n, parts.n);
                for (size_t i = 0; i < whole.n; i++) {
                    if (whole.len[i] != parts.len[i]) {
                        fprintf(stderr, "strip %d max %zu trunc %d rec %zu: '%s' vs '%s'\n", strip,
                                maxl, trunc, i, whole.rec[i], parts.rec[i]);
                    }
                    assert_int_equal(whole.len[i], parts.len[i]);
                    assert_memory_equal(whole.rec[i], parts.rec[i], whole.len[i]);
                    assert_true(whole.len[i] <= maxl);
                }
                assert_int_equal(a.emit_off, (int64_t)n);
                assert_int_equal(b.emit_off, (int64_t)n);
                assert_int_equal(a.long_lines, b.long_lines);
                coll_free(&whole);
                coll_free(&parts);
                tail_split_free(&a);
                tail_split_free(&b);
            }
        }
    }
}

static void long_split(void **state)
{
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    c.max_line = 4;
    coll out = {0};
    tail_split_reset(&sp, 0);
    feed(&sp, &c, "abcd\nabcdefghij\nxy", &out);
    assert_int_equal(out.n, 4);
    assert_string_equal(out.rec[0], "abcd"); /* exactly max: not long */
    assert_string_equal(out.rec[1], "abcd");
    assert_string_equal(out.rec[2], "efgh");
    assert_string_equal(out.rec[3], "ij");
    assert_int_equal(sp.long_lines, 1);
    assert_int_equal(sp.emit_off, 16);
    /* A long incomplete line is split as it comes, each piece positioned. */
    feed(&sp, &c, "zzzzz", &out);
    assert_int_equal(out.n, 5);
    assert_string_equal(out.rec[4], "xyzz");
    assert_int_equal(sp.emit_off, 20);
    feed(&sp, &c, "zz\n", &out);
    assert_string_equal(out.rec[5], "zzzz");
    assert_int_equal(sp.emit_off, 26);
    assert_int_equal(sp.long_lines, 2);
    coll_free(&out);
    tail_split_free(&sp);
}

static void long_truncate(void **state)
{
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    c.max_line = 4;
    c.truncate = 1;
    coll out = {0};
    tail_split_reset(&sp, 0);
    feed(&sp, &c, "abcdefghij\nok\nlo", &out);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.rec[0], "abcd");
    assert_string_equal(out.rec[1], "ok");
    assert_int_equal(sp.emit_off, 14);
    feed(&sp, &c, "nger", &out);
    assert_int_equal(out.n, 2);
    /* The position does not pass the long line until its newline. */
    assert_int_equal(sp.emit_off, 14);
    feed(&sp, &c, "tail\nnext\n", &out);
    assert_int_equal(out.n, 4);
    assert_string_equal(out.rec[2], "long");
    assert_string_equal(out.rec[3], "next");
    assert_int_equal(sp.emit_off, 30);
    assert_int_equal(sp.long_lines, 2);
    coll_free(&out);
    tail_split_free(&sp);
}

static void long_big_line(void **state)
{
    /* A 10 MiB line through 256 KiB reads with a large max_line: one record. */
    size_t big = 10u << 20;
    uint8_t *buf = malloc(big + 1);
    for (size_t i = 0; i < big; i++) {
        buf[i] = (uint8_t)('A' + i % 26);
    }
    buf[big] = '\n';
    tail_splitter sp = {0};
    tail_split_conf c = conf_plain();
    c.max_line = 16u << 20;
    coll out = {0};
    tail_split_reset(&sp, 0);
    for (size_t pos = 0; pos < big + 1; pos += 256 * 1024) {
        size_t k = big + 1 - pos < 256 * 1024 ? big + 1 - pos : 256 * 1024;
        assert_int_equal(tail_split_feed(&sp, &c, buf + pos, k, 0, collect, &out), 0);
    }
    assert_int_equal(out.n, 1);
    assert_int_equal(out.len[0], big);
    assert_memory_equal(out.rec[0], buf, big);
    coll_free(&out);
    tail_split_free(&sp);
    free(buf);
}

/* ---- multiline ---- */

static pcre2_code *compile(const char *pat)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    assert_non_null(re);
    return re;
}

static char *slurp(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/integration/data/%s", SPOOL_TEST_DATA, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void ml_run(const char *file, const char *pat, coll *out, tail_splitter *sp)
{
    pcre2_code *re = compile(pat);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    tail_split_conf c = conf_plain();
    c.ml_start = re;
    c.ml_md = md;
    c.ml_max_lines = 500;
    size_t len;
    char *text = slurp(file, &len);
    tail_split_reset(sp, 0);
    /* Odd chunks, as reads would cut it. */
    for (size_t pos = 0; pos < len; pos += 77) {
        size_t k = len - pos < 77 ? len - pos : 77;
        assert_int_equal(tail_split_feed(sp, &c, (uint8_t *)text + pos, k, 10, collect, out), 0);
    }
    /* The last record waits for the next start or the timeout. */
    assert_int_equal(sp->rec_lines, 1);
    assert_true(sp->emit_off < (int64_t)len);
    assert_int_equal(tail_split_flush_record(sp, &c, collect, out), 0);
    assert_int_equal(sp->emit_off, (int64_t)len);
    free(text);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
}

static size_t count_lines(const char *s)
{
    size_t n = 1;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

static void ml_java(void **state)
{
    coll out = {0};
    tail_splitter sp = {0};
    ml_run("java_trace.log", "^\\d{4}-\\d\\d-\\d\\d ", &out, &sp);
    assert_int_equal(out.n, 5);
    assert_non_null(strstr(out.rec[2], "Servlet.service()"));
    assert_non_null(strstr(out.rec[2], "\tat com.zaxxer.hikari.pool.HikariPool.getConnection"));
    assert_non_null(strstr(out.rec[2], "Caused by: java.sql.SQLException"));
    assert_int_equal(count_lines(out.rec[2]), 19);
    assert_true(strncmp(out.rec[3], "2026-11-24 09:12:07.644 WARN", 28) == 0);
    assert_int_equal(count_lines(out.rec[4]), 1);
    coll_free(&out);
    tail_split_free(&sp);
}

static void ml_python(void **state)
{
    coll out = {0};
    tail_splitter sp = {0};
    ml_run("python_trace.log", "^\\d{4}-\\d\\d-\\d\\d ", &out, &sp);
    assert_int_equal(out.n, 4);
    assert_non_null(strstr(out.rec[1], "Traceback (most recent call last):"));
    assert_non_null(strstr(out.rec[1], "\n\nDuring handling of the above exception"));
    assert_non_null(strstr(out.rec[1], "KeyError: 5521"));
    assert_int_equal(count_lines(out.rec[1]), 20);
    coll_free(&out);
    tail_split_free(&sp);
}

static void ml_positions_and_limits(void **state)
{
    pcre2_code *re = compile("^START");
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    tail_split_conf c = conf_plain();
    c.ml_start = re;
    c.ml_md = md;
    c.ml_max_lines = 3;
    coll out = {0};
    tail_splitter sp = {0};
    tail_split_reset(&sp, 0);
    feed(&sp, &c, "orphan\nSTART 1\n a\n", &out);
    /* A first line that is no start still begins a record. */
    assert_int_equal(out.n, 1);
    assert_string_equal(out.rec[0], "orphan");
    assert_int_equal(sp.emit_off, 7); /* the pending record is not covered */
    assert_int_equal(sp.rec_lines, 2);
    feed(&sp, &c, " b\n c\n", &out);
    assert_int_equal(out.n, 2); /* max_lines = 3 */
    assert_string_equal(out.rec[1], "START 1\n a\n b");
    assert_int_equal(sp.emit_off, 21);
    feed(&sp, &c, "START 2\npart", &out);
    assert_string_equal(out.rec[2], " c");
    assert_int_equal(sp.emit_off, 24);
    /* flush_partial turns the incomplete line into a line of the record. */
    assert_int_equal(tail_split_flush_partial(&sp, &c, 20, collect, &out), 0);
    assert_int_equal(out.n, 3);
    assert_int_equal(sp.rec_lines, 2);
    assert_int_equal(sp.rec_since_ms, 20);
    assert_int_equal(tail_split_flush_record(&sp, &c, collect, &out), 0);
    assert_string_equal(out.rec[3], "START 2\npart");
    assert_int_equal(sp.emit_off, 36);
    /* A record never grows past max_line. */
    c.max_line = 10;
    feed(&sp, &c, "START 3\n 12345\n", &out);
    assert_string_equal(out.rec[4], "START 3");
    assert_int_equal(sp.rec_lines, 1);
    coll_free(&out);
    tail_split_free(&sp);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
}

/* ---- globs ---- */

static void glob_match(void **state)
{
    assert_true(tail_glob_match("/var/log/*.log", "/var/log/app.log"));
    assert_false(tail_glob_match("/var/log/*.log", "/var/log/sub/app.log"));
    assert_false(tail_glob_match("/var/log/*.log", "/var/log/.hidden.log"));
    assert_true(tail_glob_match("/var/log/app?.log", "/var/log/app1.log"));
    assert_false(tail_glob_match("/var/log/app?.log", "/var/log/app12.log"));
    assert_true(tail_glob_match("/var/log/app[0-9].log", "/var/log/app7.log"));
    assert_false(tail_glob_match("/var/log/app[!0-9].log", "/var/log/app7.log"));
    assert_true(tail_glob_match("/var/log/**/*.log", "/var/log/app.log"));
    assert_true(tail_glob_match("/var/log/**/*.log", "/var/log/a/b/c/app.log"));
    assert_false(tail_glob_match("/var/log/**/*.log", "/var/lib/a/app.log"));
    assert_true(tail_glob_match("/var/**/app/*.log", "/var/x/y/app/z.log"));
    assert_true(tail_glob_match("/var/log/**", "/var/log/a/b"));
    assert_true(tail_glob_match("*.gz", "/var/log/a/app.log.1.gz"));
    assert_false(tail_glob_match("*.gz", "/var/log/a/app.log"));
    assert_true(tail_glob_has_magic("a*"));
    assert_false(tail_glob_has_magic("/var/log/app.log"));
}

typedef struct found_set {
    char paths[64][512];
    int n;
    int dirs;
} found_set;

static void on_found(void *arg, const char *path, const struct stat *st)
{
    found_set *fs = arg;
    assert_true(fs->n < 64);
    snprintf(fs->paths[fs->n++], 512, "%s", path);
}

static void on_dir(void *arg, const char *dir, const char *filter)
{
    ((found_set *)arg)->dirs++;
}

static int has(const found_set *fs, const char *suffix)
{
    for (int i = 0; i < fs->n; i++) {
        size_t a = strlen(fs->paths[i]), b = strlen(suffix);
        if (a >= b && strcmp(fs->paths[i] + a - b, suffix) == 0) {
            return 1;
        }
    }
    return 0;
}

static void touch(const char *root, const char *rel)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
}

static void glob_expand(void **state)
{
    char root[] = "/tmp/test_tail_glob.XXXXXX";
    assert_non_null(mkdtemp(root));
    char p[1024];
    const char *dirs[] = {"a", "a/b", "a/b/c", "x", ".hid"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(p, sizeof(p), "%s/%s", root, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    touch(root, "top.log");
    touch(root, "top.txt");
    touch(root, "a/one.log");
    touch(root, "a/b/c/deep.log");
    touch(root, "x/x.log");
    touch(root, ".hid/h.log");
    snprintf(p, sizeof(p), "%s/a/b/c/deep.log", root);
    char l[1024];
    snprintf(l, sizeof(l), "%s/x/link.log", root);
    assert_int_equal(symlink(p, l), 0);

    found_set fs = {0};
    snprintf(p, sizeof(p), "%s/**/*.log", root);
    tail_glob_expand(p, on_found, on_dir, &fs);
    assert_int_equal(fs.n, 5); /* top, one, deep, x, link (not .hid) */
    assert_true(has(&fs, "/top.log") && has(&fs, "/a/one.log") && has(&fs, "/a/b/c/deep.log"));
    assert_true(has(&fs, "/x/x.log") && has(&fs, "/x/link.log"));
    assert_true(fs.dirs >= 5);

    memset(&fs, 0, sizeof(fs));
    snprintf(p, sizeof(p), "%s/*/*.log", root);
    tail_glob_expand(p, on_found, on_dir, &fs);
    assert_int_equal(fs.n, 3);

    memset(&fs, 0, sizeof(fs));
    snprintf(p, sizeof(p), "%s/missing/dir/*.log", root);
    tail_glob_expand(p, on_found, on_dir, &fs);
    assert_int_equal(fs.n, 0);
    assert_int_equal(fs.dirs, 1); /* the nearest existing ancestor */

    snprintf(p, sizeof(p), "rm -rf '%s'", root);
    assert_int_equal(system(p), 0);
}

/* ---- positions ---- */

static void position_blob(void **state)
{
    tail_pos a, b;
    memset(&a, 0, sizeof(a));
    a.dev = 2049;
    a.ino = 1234567890123ULL;
    a.offset = 987654321;
    a.fp_hash = tail_fnv1a((const uint8_t *)"hello", 5);
    a.fp_len = 5;
    a.bk_hash = 0x1122334455667788ULL;
    a.bk_len = 256;
    snprintf(a.path, sizeof(a.path), "/var/log/app.log");
    uint8_t blob[TAIL_POS_BLOB_MAX];
    size_t len = tail_pos_encode(&a, blob);
    assert_int_equal(len, 60 + strlen(a.path));
    assert_int_equal(tail_pos_decode(blob, len, &b), 0);
    assert_int_equal(b.dev, a.dev);
    assert_int_equal(b.ino, a.ino);
    assert_int_equal(b.offset, a.offset);
    assert_int_equal(b.fp_hash, a.fp_hash);
    assert_int_equal(b.fp_len, 5);
    assert_int_equal(b.bk_hash, a.bk_hash);
    assert_int_equal(b.bk_len, 256);
    assert_string_equal(b.path, a.path);
    /* A version 1 blob (no hash of the bytes before the offset) still loads. */
    uint8_t v1[TAIL_POS_BLOB_MAX];
    memcpy(v1, blob, 44);
    v1[4] = 1;
    memcpy(v1 + 44, blob + 56, len - 56);
    assert_int_equal(tail_pos_decode(v1, len - 12, &b), 0);
    assert_int_equal(b.offset, a.offset);
    assert_int_equal(b.fp_hash, a.fp_hash);
    assert_int_equal(b.bk_len, 0);
    assert_string_equal(b.path, a.path);
    v1[4] = 3; /* an unknown version */
    assert_int_equal(tail_pos_decode(v1, len - 12, &b), -EINVAL);
    assert_int_equal(tail_pos_decode(blob, len - 1, &b), -EINVAL);
    blob[0] = 'X';
    assert_int_equal(tail_pos_decode(blob, len, &b), -EINVAL);
    char src[64];
    tail_pos_source(1, 2, src, sizeof(src));
    assert_string_equal(src, "file:1:2");
    /* The fingerprint is FNV-1a 64 (known vector). */
    assert_int_equal(tail_fnv1a((const uint8_t *)"a", 1), 0xaf63dc4c8601ec8cULL);
}

/* The hash of the bytes before an offset: what a restart compares. */
static void position_back_hash(void **state)
{
    (void)state;
    char path[] = "/tmp/spool-tail-bk-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)('a' + i % 26);
    }
    assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    uint64_t h;
    uint32_t len;
    assert_int_equal(tail_back_hash(fd, 600, &h, &len), 0);
    assert_int_equal(len, TAIL_FP_MAX);
    assert_int_equal(h, tail_fnv1a(buf + 600 - TAIL_FP_MAX, TAIL_FP_MAX));
    assert_int_equal(tail_back_hash(fd, 100, &h, &len), 0);
    assert_int_equal(len, 100);
    assert_int_equal(h, tail_fnv1a(buf, 100));
    assert_int_equal(tail_back_hash(fd, 1001, &h, &len), -ENODATA);
    close(fd);
    unlink(path);
}

/* A file's beginning hashed at every length at once: what link_copy
 * compares with every followed file's fingerprint (tail_fingerprint). */
static void position_head_hashes(void **state)
{
    (void)state;
    char path[] = "/tmp/spool-tail-hh-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)('a' + i * 7 % 26);
    }
    uint64_t pre[TAIL_FP_MAX + 1], h;
    uint32_t len, flen;
    assert_int_equal(tail_head_hashes(fd, pre, &len), 0); /* empty */
    assert_int_equal(len, 0);
    assert_int_equal(pre[0], tail_fnv1a(NULL, 0));
    assert_int_equal(write(fd, buf, 100), 100);
    assert_int_equal(tail_head_hashes(fd, pre, &len), 0); /* shorter than TAIL_FP_MAX */
    assert_int_equal(len, 100);
    for (uint32_t i = 0; i <= len; i++) {
        assert_int_equal(pre[i], tail_fnv1a(buf, i));
    }
    assert_int_equal(write(fd, buf + 100, 200), 200);
    assert_int_equal(tail_head_hashes(fd, pre, &len), 0);
    assert_int_equal(len, TAIL_FP_MAX);
    for (uint32_t i = 0; i <= len; i++) {
        assert_int_equal(pre[i], tail_fnv1a(buf, i));
    }
    assert_int_equal(tail_fingerprint(fd, 77, &h, &flen), 0);
    assert_int_equal(h, pre[77]);
    assert_int_equal(tail_fingerprint(fd, TAIL_FP_MAX, &h, &flen), 0);
    assert_int_equal(h, pre[TAIL_FP_MAX]);
    assert_int_equal(tail_head_hashes(-1, pre, &len), -EBADF);
    close(fd);
    unlink(path);
}

/* Events gather longer with more files (a cycle costs O(files)), within
 * bounds: 10 ms for a few files, at most 100 ms. */
static void coalesce_grows_with_files(void **state)
{
    (void)state;
    assert_int_equal(tail_coalesce_ms(0), 10);
    assert_int_equal(tail_coalesce_ms(99), 10);
    assert_int_equal(tail_coalesce_ms(1000), 20);
    assert_int_equal(tail_coalesce_ms(5000), 60);
    assert_int_equal(tail_coalesce_ms(9000), 100);
    assert_int_equal(tail_coalesce_ms(1000000), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lines_basic),
        cmocka_unit_test(position_back_hash),
        cmocka_unit_test(lines_cr),
        cmocka_unit_test(lines_partial_flush),
        cmocka_unit_test(lines_binary),
        cmocka_unit_test(lines_chunking),
        cmocka_unit_test(long_split),
        cmocka_unit_test(long_truncate),
        cmocka_unit_test(long_big_line),
        cmocka_unit_test(ml_java),
        cmocka_unit_test(ml_python),
        cmocka_unit_test(ml_positions_and_limits),
        cmocka_unit_test(glob_match),
        cmocka_unit_test(glob_expand),
        cmocka_unit_test(position_blob),
        cmocka_unit_test(position_head_hashes),
        cmocka_unit_test(coalesce_grows_with_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
