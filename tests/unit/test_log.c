/*
 * test_log.c: unit tests of the partition log (agent/log): append/read
 * across rolls, index lookups, time lookups, index rebuild, torn tails,
 * corruption, the checkpoint cut, positions, cursors, retention, on_full,
 * injected I/O failures, a concurrent reader, locking, read_only readers
 * and topic discovery. Every test works in its own temporary data_dir.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log.h"

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct fixture {
    char dir[256];
    spool_topic_conf topic;
    spool_plog_options opt;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/spool-test-log-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->topic = (spool_topic_conf){
        .name = "app",
        .partitions = 2,
        .segment_bytes = 4096,
        .fsync_mode = SPOOL_FSYNC_NEVER,
        .index_interval_bytes = 512,
    };
    f->opt = (spool_plog_options){.data_dir = f->dir, .topics = &f->topic, .topic_count = 1};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rm_rf(f->dir);
    free(f);
    return 0;
}

static spool_plog *open_log(fixture *f)
{
    spool_plog *log = NULL;
    int rc = spool_plog_open(&f->opt, &log);
    assert_int_equal(rc, 0);
    assert_non_null(log);
    return log;
}

/* The value of the record at `offset`: deterministic, variable length. */
static size_t value_for(int64_t offset, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "record-%" PRId64 "-", offset);
    size_t len = (size_t)n + (size_t)(offset % 37) * 3;
    for (size_t i = (size_t)n; i < len && i < cap; i++) {
        buf[i] = (char)('a' + (offset + (int64_t)i) % 26);
    }
    return len;
}

/* Appends a batch of n records starting at the partition's end. */
static int append_n(spool_plog *log, int32_t part, int64_t expect_base, int n, int64_t ts)
{
    char vals[64][256];
    spool_record recs[64];
    spool_header hdr = {.key = "h", .key_len = 1, .value = (const uint8_t *)"v", .value_len = 1};
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        size_t len = value_for(expect_base + i, vals[i], sizeof(vals[i]));
        recs[i] = (spool_record){
            .key = (const uint8_t *)"k",
            .key_len = 1,
            .value = (const uint8_t *)vals[i],
            .value_len = (int32_t)len,
            .headers = &hdr,
            .header_count = 1,
            .timestamp = ts ? ts + (expect_base + i) : 0,
            .partition = -1,
            .offset = -1,
        };
    }
    int64_t base = -1;
    int rc = spool_plog_append(log, 0, part, recs, (size_t)n, &base);
    if (rc == 0) {
        assert_int_equal(base, expect_base);
    }
    return rc;
}

/* Reads [from, end) and checks every record's content and order.
 * Returns the number of records seen. */
static int64_t read_check(spool_plog *log, int32_t part, int64_t from, int64_t *last_next)
{
    spool_buf buf = {0};
    spool_rb_decoded d = {0};
    int64_t next = from, expect = from, seen = 0;
    for (int guard = 0; guard < 100000; guard++) {
        buf.len = 0;
        int64_t n2;
        long n = spool_plog_read(log, 0, part, next, 1000, &buf, &n2);
        assert_true(n >= 0);
        if (n == 0) {
            break;
        }
        spool_rb_decoded_reset(&d);
        size_t off = 0;
        while (off < buf.len) {
            spool_rb_info info;
            long sz = spool_rb_parse_header(buf.data + off, buf.len - off, 1, &info);
            assert_true(sz > 0);
            assert_true(spool_rb_decode(buf.data + off, (size_t)sz, part, next, &d) >= 0);
            off += (size_t)sz;
        }
        for (size_t i = 0; i < d.count; i++) {
            char want[256];
            size_t len = value_for(d.records[i].offset, want, sizeof(want));
            assert_true(d.records[i].offset >= expect);
            assert_int_equal(d.records[i].value_len, (int32_t)len);
            assert_memory_equal(d.records[i].value, want, len);
            expect = d.records[i].offset + 1;
            seen++;
        }
        assert_true(n2 > next);
        next = n2;
    }
    if (last_next != NULL) {
        *last_next = next;
    }
    spool_buf_free(&buf);
    spool_rb_decoded_free(&d);
    return seen;
}

static void seg_file(fixture *f, int part, int64_t base, const char *ext, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/topics/app/%d/%020" PRId64 "%s", f->dir, part, base, ext);
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- tests ---- */

/* Position of the batch with base offset `base` in partition 0's first
 * segment (found by walking its headers). */
static int64_t batch_pos(fixture *f, int64_t base)
{
    char path[512];
    seg_file(f, 0, 0, ".log", path, sizeof(path));
    int fd = open(path, O_RDONLY);
    int64_t pos = 0, found = -1;
    uint8_t h[12];
    while (fd >= 0 && pread(fd, h, 12, pos) == 12) {
        int64_t b = 0;
        for (int i = 0; i < 8; i++) {
            b = (b << 8) | h[i];
        }
        uint32_t len =
            ((uint32_t)h[8] << 24) | ((uint32_t)h[9] << 16) | ((uint32_t)h[10] << 8) | h[11];
        if (b == base) {
            found = pos;
            break;
        }
        pos += 12 + (int64_t)len;
    }
    close(fd);
    return found;
}

static void flip_byte(fixture *f, int64_t pos)
{
    char path[512];
    seg_file(f, 0, 0, ".log", path, sizeof(path));
    int fd = open(path, O_RDWR);
    uint8_t b = 0;
    assert_true(pread(fd, &b, 1, pos) == 1);
    b ^= 0xff;
    assert_true(pwrite(fd, &b, 1, pos) == 1);
    close(fd);
}

static void test_roundtrip_rolls(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    int64_t end = 0;
    for (int b = 0; b < 120; b++) {
        int n = 1 + b % 7;
        assert_int_equal(append_n(log, 1, end, n, 0), 0);
        end += n;
    }
    spool_partition_info info;
    assert_int_equal(spool_plog_partition_info(log, 0, 1, &info), 0);
    assert_int_equal(info.end_offset, 0); /* nothing committed yet */
    assert_int_equal(spool_plog_commit(log, 0, 1, NULL), 0);
    assert_int_equal(spool_plog_partition_info(log, 0, 1, &info), 0);
    assert_int_equal(info.end_offset, end);
    assert_int_equal(info.begin_offset, 0);
    assert_true(info.segments > 3);
    int64_t next;
    assert_int_equal(read_check(log, 1, 0, &next), end);
    assert_int_equal(next, end);
    /* Every start offset, including ones inside batches. */
    for (int64_t o = 0; o < end; o += 13) {
        assert_int_equal(read_check(log, 1, o, NULL), end - o);
    }
    /* The other partition is empty. */
    assert_int_equal(read_check(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    /* And after reopening. */
    log = open_log(f);
    assert_int_equal(read_check(log, 1, 0, NULL), end);
    assert_int_equal(append_n(log, 1, end, 3, 0), 0);
    spool_plog_close(log);
}

static void test_read_mid_batch(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 0, 0, 10, 0), 0);
    assert_int_equal(append_n(log, 0, 10, 10, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_buf buf = {0};
    int64_t next;
    long n = spool_plog_read(log, 0, 0, 15, 1, &buf, &next); /* max_bytes 1: one batch anyway */
    assert_true(n > 0);
    assert_int_equal(next, 20);
    spool_rb_info bi;
    assert_int_equal(spool_rb_parse_header(buf.data, buf.len, 1, &bi), n);
    assert_int_equal(bi.base_offset, 10);
    /* At the end: nothing, next unchanged. */
    buf.len = 0;
    assert_int_equal(spool_plog_read(log, 0, 0, 20, 1 << 20, &buf, &next), 0);
    assert_int_equal(next, 20);
    spool_buf_free(&buf);
    spool_plog_close(log);
}

static void test_offset_for_time(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    int64_t end = 0;
    for (int b = 0; b < 100; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 1000000), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    int64_t off;
    assert_int_equal(spool_plog_offset_for_time(log, 0, 0, 1000000 + 333, &off), 0);
    assert_int_equal(off, 333);
    assert_int_equal(spool_plog_offset_for_time(log, 0, 0, 0, &off), 0);
    assert_int_equal(off, 0);
    assert_int_equal(spool_plog_offset_for_time(log, 0, 0, 9000000, &off), 0);
    assert_int_equal(off, end);
    spool_plog_close(log);
}

static void test_index_rebuild(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    int64_t end = 0;
    for (int b = 0; b < 60; b++) {
        assert_int_equal(append_n(log, 0, end, 4, 0), 0);
        end += 4;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    char path[512];
    seg_file(f, 0, 0, ".index", path, sizeof(path));
    int64_t isize = file_size(path);
    assert_true(isize >= 16);
    assert_int_equal(unlink(path), 0);
    log = open_log(f);
    spool_plog_recovery_stats st;
    spool_plog_recovery_get(log, &st);
    assert_true(st.index_rebuilt >= 1);
    assert_int_equal(st.torn_cuts + st.corrupt_moved, 0);
    assert_int_equal(file_size(path), isize);
    for (int64_t o = 0; o < end; o += 7) {
        assert_int_equal(read_check(log, 0, o, NULL), end - o);
    }
    spool_plog_close(log);
    /* A stale index (garbage) is rebuilt too. */
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(write(fd, "\0\0\0\0\0\0\0\0\0\0\0\5\0\0\xff\xff", 16) == 16);
    close(fd);
    log = open_log(f);
    spool_plog_recovery_get(log, &st);
    assert_true(st.index_rebuilt >= 1);
    assert_int_equal(file_size(path), isize);
    assert_int_equal(read_check(log, 0, 0, NULL), end);
    spool_plog_close(log);
}

static void test_torn_tail(void **state)
{
    fixture *f = *state;
    f->topic.segment_bytes = 1 << 20;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 0, 0, 10, 0), 0);
    assert_int_equal(append_n(log, 0, 10, 10, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    char path[512];
    seg_file(f, 0, 0, ".log", path, sizeof(path));
    int64_t good = file_size(path);
    /* Half of a copy of the first batch, as a torn write leaves it. */
    uint8_t buf[4096];
    int fd = open(path, O_RDWR);
    assert_true(pread(fd, buf, 200, 0) == 200);
    assert_true(pwrite(fd, buf, 100, good) == 100);
    close(fd);
    log = open_log(f);
    spool_plog_recovery_stats st;
    spool_plog_recovery_get(log, &st);
    assert_int_equal(st.torn_cuts, 1);
    assert_int_equal(st.torn_bytes, 100);
    assert_int_equal(st.corrupt_moved, 0);
    assert_int_equal(file_size(path), good);
    assert_int_equal(read_check(log, 0, 0, NULL), 20);
    assert_int_equal(append_n(log, 0, 20, 5, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(read_check(log, 0, 0, NULL), 25);
    spool_plog_close(log);
    /* A whole last batch with a bad CRC (a torn page inside it) is a torn tail too. */
    good = file_size(path);
    fd = open(path, O_RDWR);
    uint8_t b = 0;
    assert_true(pread(fd, &b, 1, good - 5) == 1);
    b ^= 0x55;
    assert_true(pwrite(fd, &b, 1, good - 5) == 1);
    close(fd);
    log = open_log(f);
    spool_plog_recovery_get(log, &st);
    assert_int_equal(st.torn_cuts, 1);
    assert_int_equal(st.corrupt_moved, 0);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, 25); /* the checkpoint's end: offsets are not reused */
    assert_int_equal(read_check(log, 0, 0, NULL), 20);
    spool_plog_close(log);
}

static void test_corrupt_middle(void **state)
{
    fixture *f = *state;
    f->topic.segment_bytes = 1 << 20;
    spool_plog *log = open_log(f);
    int64_t end = 0;
    for (int b = 0; b < 30; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    /* Find the position of the batch holding offset 75. */
    spool_buf buf = {0};
    int64_t next;
    assert_true(spool_plog_read(log, 0, 0, 0, 1 << 20, &buf, &next) > 0);
    size_t off = 0;
    spool_rb_info bi;
    for (;;) {
        long sz = spool_rb_parse_header(buf.data + off, buf.len - off, 1, &bi);
        assert_true(sz > 0);
        if (bi.base_offset == 75) {
            break;
        }
        off += (size_t)sz;
    }
    spool_buf_free(&buf);
    spool_plog_close(log);
    char path[512], corrupt[600];
    seg_file(f, 0, 0, ".log", path, sizeof(path));
    int64_t size = file_size(path);
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_true(pread(fd, &b, 1, (off_t)off + 70) == 1);
    b ^= 0xff;
    assert_true(pwrite(fd, &b, 1, (off_t)off + 70) == 1);
    close(fd);
    int64_t bad = batch_pos(f, 80) - (int64_t)off; /* the corrupt batch's size */
    assert_true(bad > 0);
    log = open_log(f);
    spool_plog_recovery_stats st;
    spool_plog_recovery_get(log, &st);
    assert_int_equal(st.corrupt_moved, 1);
    assert_int_equal(st.corrupt_bytes, bad);
    /* Only the corrupt batch is moved aside; every batch after it stays. */
    snprintf(corrupt, sizeof(corrupt), "%s.corrupt", path);
    assert_int_equal(file_size(corrupt), bad);
    assert_int_equal(file_size(path), size - bad);
    assert_int_equal(read_check(log, 0, 0, &next), end - 5);
    assert_int_equal(read_check(log, 0, 75, NULL), end - 80); /* from inside the gap */
    /* Appends go on after the checkpoint's end. */
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, end);
    assert_int_equal(append_n(log, 0, end, 3, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(read_check(log, 0, 0, NULL), end - 5 + 3);
    spool_plog_close(log);
    /* Reopened: nothing more to do. */
    log = open_log(f);
    spool_plog_recovery_get(log, &st);
    assert_int_equal(st.corrupt_moved + st.torn_cuts, 0);
    assert_int_equal(read_check(log, 0, 0, NULL), end - 5 + 3);
    spool_plog_close(log);
}

static void test_checkpoint_cut(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 0, 0, 10, 0), 0);
    spool_plog_close(log); /* no commit */
    log = open_log(f);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, 0);
    assert_int_equal(read_check(log, 0, 0, NULL), 0);
    int64_t end = 0;
    for (int b = 0; b < 40; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    for (int b = 0; b < 40; b++) { /* uncommitted, across several rolls */
        assert_int_equal(append_n(log, 0, end + b * 5, 5, 0), 0);
    }
    spool_plog_close(log);
    log = open_log(f);
    spool_plog_recovery_stats st;
    spool_plog_recovery_get(log, &st);
    assert_true(st.ckpt_cut_bytes > 0);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, end);
    assert_int_equal(read_check(log, 0, 0, NULL), end);
    assert_int_equal(append_n(log, 0, end, 5, 0), 0);
    spool_plog_close(log);
}

static void test_positions(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    char buf[64];
    size_t len = 0;
    assert_int_equal(spool_plog_position_get(log, "tail:a", buf, sizeof(buf), &len), -ENOENT);
    assert_int_equal(append_n(log, 0, 0, 3, 0), 0);
    assert_int_equal(spool_plog_position_set(log, "tail:a", "pos-3", 5), 0);
    assert_int_equal(spool_plog_position_set(log, "tail:b", "pos-b", 5), 0);
    /* Not durable before the commit. */
    assert_int_equal(spool_plog_position_get(log, "tail:a", buf, sizeof(buf), &len), -ENOENT);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(spool_plog_position_get(log, "tail:a", buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "pos-3", 5);
    assert_int_equal(append_n(log, 0, 3, 3, 0), 0);
    assert_int_equal(spool_plog_position_set(log, "tail:a", "pos-6", 5), 0);
    assert_int_equal(spool_plog_position_set(log, "tail:b", NULL, 0), 0);
    spool_plog_close(log); /* the second batch and position were never committed */
    log = open_log(f);
    assert_int_equal(spool_plog_position_get(log, "tail:a", buf, sizeof(buf), &len), 0);
    assert_memory_equal(buf, "pos-3", 5);
    assert_int_equal(spool_plog_position_get(log, "tail:b", buf, sizeof(buf), &len), 0);
    assert_int_equal(read_check(log, 0, 0, NULL), 3);
    assert_int_equal(append_n(log, 0, 3, 3, 0), 0);
    assert_int_equal(spool_plog_position_set(log, "tail:a", "pos-6", 5), 0);
    assert_int_equal(spool_plog_position_set(log, "tail:b", NULL, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    log = open_log(f);
    assert_int_equal(spool_plog_position_get(log, "tail:a", buf, sizeof(buf), &len), 0);
    assert_memory_equal(buf, "pos-6", 5);
    assert_int_equal(spool_plog_position_get(log, "tail:b", buf, sizeof(buf), &len), -ENOENT);
    assert_int_equal(read_check(log, 0, 0, NULL), 6);
    spool_plog_close(log);
}

typedef struct cursor_seen {
    int count;
    int64_t offset;
} cursor_seen;

static void on_cursor(void *arg, const char *consumer, const char *topic, int32_t partition,
                      int64_t offset)
{
    cursor_seen *s = arg;
    if (strcmp(consumer, "out.1") == 0 && strcmp(topic, "app") == 0 && partition == 1) {
        s->offset = offset;
    }
    s->count++;
}

static void test_cursors(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 1, 0, 10, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(spool_plog_cursor_register(log, "out.1"), 0);
    assert_int_equal(spool_plog_cursor_get(log, "out.1", 0, 1), 0);
    assert_int_equal(spool_plog_cursor_set(log, "out.1", 0, 1, 7), 0);
    assert_int_equal(spool_plog_cursor_set(log, "nobody", 0, 1, 7), -ENOENT);
    assert_int_equal(spool_plog_cursor_flush(log, "out.1"), 0);
    assert_int_equal(spool_plog_cursor_set(log, "out.1", 0, 1, 9), 0); /* not flushed */
    spool_plog_close(log);
    log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "out.1"), 0);
    assert_int_equal(spool_plog_cursor_get(log, "out.1", 0, 1), 7);
    assert_int_equal(spool_plog_cursor_get(log, "out.1", 0, 0), 0);
    cursor_seen seen = {0, -1};
    assert_int_equal(spool_plog_cursor_foreach(log, on_cursor, &seen), 0);
    assert_int_equal(seen.count, 1);
    assert_int_equal(seen.offset, 7);
    spool_plog_close(log);
    /* A damaged cursor file is not trusted. */
    char path[512];
    snprintf(path, sizeof(path), "%s/cursors/out.1.cursor", f->dir);
    FILE *fp = fopen(path, "r+");
    assert_non_null(fp);
    fputc('9', fp);
    fclose(fp);
    log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "out.1"), 0);
    assert_int_equal(spool_plog_cursor_get(log, "out.1", 0, 1), 0);
    spool_plog_close(log);
}

static void test_retention_bytes_cursor(void **state)
{
    fixture *f = *state;
    f->topic.retention_bytes = 8192;
    spool_plog *log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "out"), 0);
    assert_int_equal(spool_plog_cursor_set(log, "out", 0, 0, 0), 0);
    int64_t end = 0;
    for (int b = 0; b < 100; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    int32_t segs = info.segments;
    assert_true(segs > 4);
    assert_int_equal(spool_plog_retention_run(log, 1), 0);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.segments, segs); /* the cursor holds everything */
    assert_int_equal(info.begin_offset, 0);
    assert_int_equal(spool_plog_cursor_set(log, "out", 0, 0, 250), 0);
    assert_int_equal(spool_plog_retention_run(log, 1), 0);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_true(info.begin_offset > 0);
    assert_true(info.begin_offset <= 250);
    assert_true(info.segments < segs);
    assert_int_equal(read_check(log, 0, info.begin_offset, NULL), end - info.begin_offset);
    assert_int_equal(spool_plog_cursor_set(log, "out", 0, 0, end), 0);
    assert_int_equal(spool_plog_retention_run(log, 1), 0);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_true(info.bytes <= 8192 + 4096);
    assert_true(info.bytes >= 8192);
    int64_t begin = info.begin_offset;
    spool_plog_close(log);
    log = open_log(f);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.begin_offset, begin);
    assert_int_equal(read_check(log, 0, 0, NULL), end - begin); /* below begin reads from begin */
    spool_plog_close(log);
}

static void test_retention_age(void **state)
{
    fixture *f = *state;
    f->topic.retention_ms = 60000;
    spool_plog *log = open_log(f);
    int64_t end = 0;
    int64_t old = 1000; /* 1970: far older than the retention */
    for (int b = 0; b < 60; b++) {
        assert_int_equal(append_n(log, 0, end, 5, b < 40 ? old : 0), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    int32_t segs = info.segments;
    assert_int_equal(spool_plog_retention_run(log, 1), 0); /* no consumer: free to delete */
    spool_plog_partition_info(log, 0, 0, &info);
    assert_true(info.segments < segs);
    assert_true(info.begin_offset > 0 && info.begin_offset <= 200);
    assert_int_equal(read_check(log, 0, info.begin_offset, NULL), end - info.begin_offset);
    spool_plog_close(log);
}

static void test_drop_oldest(void **state)
{
    fixture *f = *state;
    f->topic.max_bytes = 16384;
    f->topic.on_full = SPOOL_ON_FULL_DROP_OLDEST;
    spool_plog *log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "slow"), 0);
    assert_int_equal(spool_plog_cursor_set(log, "slow", 0, 0, 0), 0);
    int64_t end = 0;
    for (int b = 0; b < 200; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
        assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    }
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_true(info.bytes <= 16384);
    assert_true(info.dropped > 0);
    assert_int_equal(info.dropped, info.begin_offset); /* every dropped record counted once */
    assert_int_equal(read_check(log, 0, info.begin_offset, NULL), end - info.begin_offset);
    spool_plog_close(log);
}

static void test_block_eagain(void **state)
{
    fixture *f = *state;
    f->topic.max_bytes = 16384;
    spool_plog *log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "slow"), 0);
    assert_int_equal(spool_plog_cursor_set(log, "slow", 0, 0, 0), 0);
    int64_t end = 0;
    int rc = 0;
    for (int b = 0; b < 200 && rc == 0; b++) {
        rc = append_n(log, 0, end, 5, 0);
        if (rc == 0) {
            end += 5;
        }
        assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    }
    assert_int_equal(rc, -EAGAIN);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_true(info.bytes <= 16384);
    assert_int_equal(info.begin_offset, 0);
    assert_int_equal(info.dropped, 0);
    /* The output catches up: room again. */
    assert_int_equal(spool_plog_cursor_set(log, "slow", 0, 0, end), 0);
    assert_int_equal(append_n(log, 0, end, 5, 0), 0);
    spool_plog_close(log);
}

/* ---- injected I/O failures ---- */

static int fail_mode;  /* 0 none, 1 ENOSPC, 2 EIO, 3 short write */
static int fail_trunc; /* ftruncate fails once */

static long failing_pwrite(int fd, const void *buf, size_t len, int64_t off)
{
    if (fail_mode == 1) {
        errno = ENOSPC;
        return -1;
    }
    if (fail_mode == 2) {
        errno = EIO;
        return -1;
    }
    if (fail_mode == 3 && len > 8) {
        return spool_plog_io_posix.pwrite(fd, buf, len / 2, off);
    }
    return spool_plog_io_posix.pwrite(fd, buf, len, off);
}

static int failing_ftruncate(int fd, int64_t len)
{
    if (fail_trunc > 0) {
        fail_trunc--;
        errno = EIO;
        return -1;
    }
    return spool_plog_io_posix.ftruncate(fd, len);
}

/* Runs fn(arg) with stderr sent to a file; returns how many bytes it wrote. */
static long stderr_bytes(void (*fn)(void *arg), void *arg)
{
    char path[] = "/tmp/spool-unit-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) == 2);
    fn(arg);
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    long n = (long)lseek(fd, 0, SEEK_END);
    close(fd);
    unlink(path);
    return n;
}

static void read_and_skip_corrupt(void *arg)
{
    spool_plog *log = arg;
    spool_buf buf = {0};
    int64_t next = -1;
    assert_int_equal(spool_plog_read(log, 0, 0, 5, 1 << 20, &buf, &next), -EBADMSG);
    assert_int_equal(spool_plog_skip_corrupt(log, 0, 0, 5, &next), 0);
    assert_int_equal(next, 10);
    spool_buf_free(&buf);
}

/* A corrupt batch met while running is returned, not logged: the caller (an
 * output, `spool read`) decides and reports it once, with its context. */
static void test_runtime_corrupt_not_logged(void **state)
{
    fixture *f = *state;
    f->topic.segment_bytes = 1 << 20;
    spool_plog *log = open_log(f);
    for (int64_t end = 0; end < 15; end += 5) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    int64_t pos = batch_pos(f, 5);
    assert_true(pos > 0);
    flip_byte(f, pos + 16); /* the batch's magic byte */
    assert_int_equal(stderr_bytes(read_and_skip_corrupt, log), 0);
    spool_plog_close(log);
}

static void test_io_failures(void **state)
{
    fixture *f = *state;
    f->topic.segment_bytes = 1 << 20;
    spool_plog_io io = spool_plog_io_posix;
    io.pwrite = failing_pwrite;
    io.ftruncate = failing_ftruncate;
    f->opt.io = &io;
    spool_plog *log = open_log(f);
    char path[512];
    seg_file(f, 0, 0, ".log", path, sizeof(path));
    int64_t end = 0;
    int expect[] = {-ENOSPC, -EIO, -ENOSPC};
    for (int mode = 1; mode <= 3; mode++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
        int64_t size = file_size(path);
        fail_mode = mode;
        assert_int_equal(append_n(log, 0, end, 5, 0), expect[mode - 1]);
        fail_mode = 0;
        assert_int_equal(file_size(path), size); /* no half batch left */
    }
    /* A failing truncate is repaired before the next append. */
    fail_mode = 3;
    fail_trunc = 1;
    assert_int_equal(append_n(log, 0, end, 5, 0), -ENOSPC);
    fail_mode = 0;
    assert_int_equal(append_n(log, 0, end, 5, 0), 0);
    end += 5;
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(read_check(log, 0, 0, NULL), end);
    spool_plog_close(log);
    log = open_log(f);
    spool_plog_recovery_stats st;
    spool_plog_recovery_get(log, &st);
    assert_int_equal(st.torn_cuts + st.corrupt_moved + st.ckpt_cut_bytes, 0);
    assert_int_equal(read_check(log, 0, 0, NULL), end);
    /* A failing checkpoint write fails the commit and publishes nothing. */
    assert_int_equal(append_n(log, 0, end, 5, 0), 0);
    fail_mode = 1;
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), -ENOSPC);
    fail_mode = 0;
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, end);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, end + 5);
    spool_plog_close(log);
}

static void commit_enospc(void *arg)
{
    fail_mode = 1;
    assert_int_equal(spool_plog_commit(arg, 0, 0, NULL), -ENOSPC);
    fail_mode = 0;
}

/* A failed commit is returned with its detail, not logged: the writer
 * decides and reports it once per streak, with that detail. */
static void test_commit_failure_not_logged(void **state)
{
    fixture *f = *state;
    spool_plog_io io = spool_plog_io_posix;
    io.pwrite = failing_pwrite;
    f->opt.io = &io;
    spool_plog *log = open_log(f);
    assert_string_equal(spool_plog_commit_error(log), "");
    assert_int_equal(append_n(log, 0, 0, 5, 0), 0);
    assert_int_equal(stderr_bytes(commit_enospc, log), 0);
    const char *why = spool_plog_commit_error(log);
    assert_non_null(strstr(why, "cannot write checkpoint slot "));
    assert_non_null(strstr(why, "/state: No space left on device"));
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_string_equal(spool_plog_commit_error(log), "");
    spool_plog_close(log);
}

typedef struct open_try {
    spool_plog_options opt;
    char why[512];
    int rc;
} open_try;

static void open_second(void *arg)
{
    open_try *t = arg;
    spool_plog *log = NULL;
    t->opt.error = t->why;
    t->opt.error_cap = sizeof(t->why);
    t->rc = spool_plog_open(&t->opt, &log);
    assert_null(log);
}

/* An open that fails hands its detail to the caller (who reports it once,
 * e.g. "cannot open the log in DIR: DIR/lock is locked: ...") and logs
 * nothing itself. */
static void test_open_failure_not_logged(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    open_try t = {.opt = f->opt};
    assert_int_equal(stderr_bytes(open_second, &t), 0);
    assert_int_equal(t.rc, -EBUSY);
    assert_non_null(strstr(t.why, "/lock is locked: another spool is using data_dir "));
    spool_plog_close(log);
}

/* ---- concurrency ---- */

typedef struct reader_arg {
    spool_plog *log;
    _Atomic int stop;
    int64_t seen;
    int errors;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *ra = p;
    spool_buf buf = {0};
    spool_rb_decoded d = {0};
    int64_t next = 0;
    while (!ra->stop || next < 3000) {
        buf.len = 0;
        int64_t n2;
        long n = spool_plog_read(ra->log, 0, 0, next, 4096, &buf, &n2);
        if (n < 0) {
            ra->errors++;
            break;
        }
        if (n == 0) {
            if (ra->stop) {
                spool_partition_info info;
                spool_plog_partition_info(ra->log, 0, 0, &info);
                if (next >= info.end_offset) {
                    break;
                }
            }
            spool_plog_wait(ra->log, 0, 10);
            continue;
        }
        spool_rb_decoded_reset(&d);
        for (size_t off = 0; off < buf.len;) {
            spool_rb_info bi;
            long sz = spool_rb_parse_header(buf.data + off, buf.len - off, 1, &bi);
            if (sz <= 0 || spool_rb_decode(buf.data + off, (size_t)sz, 0, next, &d) < 0) {
                ra->errors++;
                goto out;
            }
            off += (size_t)sz;
        }
        for (size_t i = 0; i < d.count; i++) {
            char want[256];
            size_t len = value_for(d.records[i].offset, want, sizeof(want));
            if (d.records[i].offset != ra->seen || d.records[i].value_len != (int32_t)len ||
                memcmp(d.records[i].value, want, len) != 0) {
                ra->errors++;
                goto out;
            }
            ra->seen++;
        }
        spool_partition_info info;
        spool_plog_partition_info(ra->log, 0, 0, &info);
        if (n2 > info.end_offset) {
            ra->errors++;
            goto out;
        }
        next = n2;
    }
out:
    spool_buf_free(&buf);
    spool_rb_decoded_free(&d);
    return NULL;
}

static void test_concurrent_reader(void **state)
{
    fixture *f = *state;
    f->topic.retention_bytes = 1 << 30;
    spool_plog *log = open_log(f);
    reader_arg ra = {.log = log};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_main, &ra), 0);
    int64_t end = 0;
    for (int b = 0; b < 600; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
        if (b % 3 == 2) {
            assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
        }
        if (b % 50 == 0) {
            assert_int_equal(spool_plog_retention_run(log, 1), 0);
        }
    }
    assert_int_equal(spool_plog_commit(log, 1, 1, NULL), 0);
    ra.stop = 1;
    pthread_join(th, NULL);
    assert_int_equal(ra.errors, 0);
    assert_int_equal(ra.seen, end);
    spool_plog_close(log);
}

/* ---- locking, read_only, discovery ---- */

static void test_lock_and_read_only(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    spool_plog *other = NULL;
    assert_int_equal(spool_plog_open(&f->opt, &other), -EBUSY);
    assert_null(other);
    assert_int_equal(append_n(log, 0, 0, 10, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(append_n(log, 0, 10, 10, 0), 0); /* written, not committed */
    /* A CLI reader sees what is committed, even without the topic config. */
    spool_plog_options ro = {.data_dir = f->dir, .read_only = 1};
    spool_plog *r = NULL;
    assert_int_equal(spool_plog_open(&ro, &r), 0);
    assert_int_equal(spool_plog_topic_index(r, "app"), 0);
    assert_int_equal(spool_plog_topic_conf(r, 0)->partitions, 2);
    assert_int_equal(read_check(r, 0, 0, NULL), 10);
    int64_t base;
    spool_record rec = {.value = (const uint8_t *)"x", .value_len = 1, .key_len = -1};
    assert_int_equal(spool_plog_append(r, 0, 0, &rec, 1, &base), -EROFS);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    int64_t end = 20;
    for (int b = 0; b < 50; b++) { /* several rolls */
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    assert_int_equal(spool_plog_refresh(r), 0);
    assert_int_equal(read_check(r, 0, 0, NULL), end);
    spool_partition_info info;
    spool_plog_partition_info(r, 0, 0, &info);
    assert_int_equal(info.end_offset, end);
    spool_plog_close(r);
    spool_plog_close(log);
    /* Nothing was changed by the reader: the writer reopens cleanly. */
    log = open_log(f);
    spool_plog_recovery_stats st;
    spool_plog_recovery_get(log, &st);
    assert_int_equal(st.torn_cuts + st.corrupt_moved + st.ckpt_cut_bytes, 0);
    spool_plog_close(log);
}

static void test_discovered_topic(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 1, 0, 10, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    spool_topic_conf other = {.name = "other", .partitions = 1};
    f->opt.topics = &other;
    log = open_log(f);
    assert_int_equal(spool_plog_topic_count(log), 2);
    int t = spool_plog_topic_index(log, "app");
    assert_true(t >= 0);
    spool_partition_info info;
    assert_int_equal(spool_plog_partition_info(log, t, 1, &info), 0);
    assert_int_equal(info.end_offset, 10);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    /* Still there after a checkpoint written by a config without it. */
    f->opt.topics = &f->topic;
    log = open_log(f);
    assert_int_equal(read_check(log, 1, 0, NULL), 10);
    spool_plog_close(log);
}

static void test_fsync_interval_publication(void **state)
{
    fixture *f = *state;
    f->topic.fsync_mode = SPOOL_FSYNC_INTERVAL;
    f->topic.fsync_interval_ms = 60000;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 0, 0, 5, 0), 0);
    int64_t next_ms = 0;
    assert_int_equal(spool_plog_commit(log, 0, 0, &next_ms), 0); /* busy: not due yet */
    assert_true(next_ms > 0);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, 0);
    assert_int_equal(spool_plog_commit(log, 0, 1, &next_ms), 0); /* idle: sync now */
    assert_int_equal(next_ms, -1);
    spool_plog_partition_info(log, 0, 0, &info);
    assert_int_equal(info.end_offset, 5);
    spool_plog_close(log);
}

/* 12.4: a read_only open keeps reading after a corrupt batch in the middle
 * of a segment and names the range; reads stop at it with -EBADMSG. */
static void test_read_only_bad_range(void **state)
{
    fixture *f = *state;
    f->topic.segment_bytes = 1 << 20;
    spool_plog *log = open_log(f);
    int64_t end = 0;
    for (int b = 0; b < 30; b++) {
        assert_int_equal(append_n(log, 0, end, 5, 0), 0);
        end += 5;
    }
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    for (int header = 0; header < 2; header++) {
        int64_t pos = batch_pos(f, 75);
        int64_t pos80 = batch_pos(f, 80);
        assert_true(pos > 0 && pos80 > pos);
        flip_byte(f, header ? pos + 9 : pos + 70); /* the length, or a record byte */
        spool_plog_options ro = f->opt;
        ro.read_only = 1;
        spool_plog *r = NULL;
        assert_int_equal(spool_plog_open(&ro, &r), 0);
        spool_plog_bad_range b;
        assert_int_equal(spool_plog_bad_range_get(r, 0, 0, 0, &b), 0);
        assert_int_equal(b.from_offset, 75);
        assert_int_equal(b.to_offset, 80);
        assert_int_equal(b.from_pos, pos);
        assert_int_equal(b.to_pos, pos80);
        assert_int_equal(b.moved, 0);
        assert_int_equal(spool_plog_bad_range_get(r, 0, 0, 1, &b), -ENOENT);
        spool_buf buf = {0};
        int64_t n2, at = 0;
        long got;
        for (int guard = 0; guard < 1000; guard++) { /* the reads stop at the range */
            buf.len = 0;
            if ((got = spool_plog_read(r, 0, 0, at, 700, &buf, &n2)) <= 0) {
                break;
            }
            at = n2;
        }
        assert_int_equal(got, -EBADMSG);
        assert_int_equal(at, 75);
        assert_int_equal(spool_plog_skip_corrupt(r, 0, 0, 75, &n2), 0);
        assert_int_equal(n2, 80);
        assert_int_equal(read_check(r, 0, 80, NULL), end - 80); /* every batch after it */
        spool_buf_free(&buf);
        spool_plog_close(r);
        flip_byte(f, header ? pos + 9 : pos + 70); /* repaired for the next round */
    }
    /* A writable open moves the damage aside; a reader names the gap. */
    flip_byte(f, batch_pos(f, 75) + 70);
    log = open_log(f);
    spool_plog_close(log);
    spool_plog_options ro = f->opt;
    ro.read_only = 1;
    spool_plog *r = NULL;
    assert_int_equal(spool_plog_open(&ro, &r), 0);
    spool_plog_bad_range b;
    assert_int_equal(spool_plog_bad_range_get(r, 0, 0, 0, &b), 0);
    assert_int_equal(b.from_offset, 75);
    assert_int_equal(b.to_offset, 80);
    assert_int_equal(b.moved, 1);
    assert_int_equal(read_check(r, 0, 80, NULL), end - 80);
    spool_plog_close(r);
}

static void count_problem(void *arg, int problem, const char *topic, const char *msg)
{
    int *n = arg;
    (void)topic;
    assert_non_null(msg);
    *n += problem == SPOOL_PLOG_PARTITIONS_CUT ? 1 : 100;
}

/* 13.6: no valid checkpoint while the log holds data: refused, unless
 * spool_plog_set_overrides(SPOOL_PLOG_RESET_POSITIONS). */
static void test_lost_checkpoint_refused(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 0, 0, 10, 0), 0);
    assert_int_equal(spool_plog_position_set(log, "src", "10", 2), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    char path[512];
    for (int slot = 0; slot < 2; slot++) {
        snprintf(path, sizeof(path), "%s/state/checkpoint.%d", f->dir, slot);
        unlink(path);
    }
    spool_plog *other = NULL;
    char why[8448] = "";
    f->opt.error = why; /* the refusal goes to the caller, for its one line */
    f->opt.error_cap = sizeof(why);
    assert_int_equal(spool_plog_open(&f->opt, &other), -ESTALE);
    f->opt.error = NULL;
    f->opt.error_cap = 0;
    assert_null(other);
    assert_non_null(strstr(why, "no valid checkpoint"));
    assert_non_null(strstr(why, "--reset-positions"));
    int n = 0;
    assert_int_equal(spool_plog_preflight(f->dir, &f->topic, 1, NULL, 0, count_problem, &n), 1);
    assert_int_equal(n, 100);
    spool_plog_set_overrides(SPOOL_PLOG_RESET_POSITIONS);
    log = open_log(f);
    spool_plog_set_overrides(0);
    assert_int_equal(read_check(log, 0, 0, NULL), 10); /* the data stays */
    char pos[8];
    assert_int_equal(spool_plog_position_get(log, "src", pos, sizeof(pos), NULL), -ENOENT);
    spool_plog_close(log);
    log = open_log(f); /* a checkpoint again */
    spool_plog_close(log);
}

/* A data_dir that cannot be created (a file where it, or a folder above
 * it, would be) is a preflight problem, so `spool check` finds what the
 * run's mkdir -p would fail on; a data_dir merely missing is none. */
static void test_data_dir_blocked(void **state)
{
    fixture *f = *state;
    char file[512], below[600], missing[600];
    snprintf(file, sizeof(file), "%s/a-file", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(below, sizeof(below), "%s/data/deeper", file);
    snprintf(missing, sizeof(missing), "%s/not/yet/there", f->dir);
    int n = 0;
    assert_int_equal(spool_plog_preflight(file, &f->topic, 1, NULL, 0, count_problem, &n), 1);
    assert_int_equal(n, 100);
    n = 0;
    assert_int_equal(spool_plog_preflight(below, &f->topic, 1, NULL, 0, count_problem, &n), 1);
    assert_int_equal(n, 100);
    n = 0;
    assert_int_equal(spool_plog_preflight(missing, &f->topic, 1, NULL, 0, count_problem, &n), 0);
    assert_int_equal(n, 0);
}

/* 12.3: fewer partitions than hold undelivered records: refused; once a
 * consumer read them, the extra partition is emptied and its offsets
 * continue if the count goes up again. */
static void test_lower_partitions(void **state)
{
    fixture *f = *state;
    spool_plog *log = open_log(f);
    assert_int_equal(append_n(log, 1, 0, 10, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    f->topic.partitions = 1;
    spool_plog *other = NULL;
    char why[8448] = "";
    f->opt.error = why; /* the refusal goes to the caller, for its one line */
    f->opt.error_cap = sizeof(why);
    assert_int_equal(spool_plog_open(&f->opt, &other), -ENOTEMPTY); /* no cursor at all */
    f->opt.error = NULL;
    f->opt.error_cap = 0;
    assert_non_null(strstr(why, "--drop-partitions"));
    const char *topics[] = {"app"};
    spool_plog_consumer_conf c = {.name = "c", .topics = topics, .topic_count = 1};
    int n = 0;
    assert_int_equal(spool_plog_preflight(f->dir, &f->topic, 1, &c, 1, count_problem, &n), 1);
    assert_int_equal(n, 1);
    /* A consumer reads partition 1 up to 6 of 10: still refused. */
    f->topic.partitions = 2;
    log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "c"), 0);
    assert_int_equal(spool_plog_cursor_set(log, "c", 0, 1, 6), 0);
    assert_int_equal(spool_plog_cursor_flush(log, "c"), 0);
    spool_plog_close(log);
    f->topic.partitions = 1;
    assert_int_equal(spool_plog_open(&f->opt, &other), -ENOTEMPTY);
    n = 0;
    assert_int_equal(spool_plog_preflight(f->dir, &f->topic, 1, &c, 1, count_problem, &n), 1);
    /* Read to the end: accepted, partition 1 emptied. */
    f->topic.partitions = 2;
    log = open_log(f);
    assert_int_equal(spool_plog_cursor_register(log, "c"), 0);
    assert_int_equal(spool_plog_cursor_set(log, "c", 0, 1, 10), 0);
    assert_int_equal(spool_plog_cursor_flush(log, "c"), 0);
    assert_int_equal(spool_plog_cursor_register(log, "gone"), 0); /* no longer configured */
    assert_int_equal(spool_plog_cursor_set(log, "gone", 0, 1, 2), 0);
    assert_int_equal(spool_plog_cursor_flush(log, "gone"), 0);
    spool_plog_close(log);
    f->topic.partitions = 1;
    n = 0;
    assert_int_equal(spool_plog_preflight(f->dir, &f->topic, 1, &c, 1, count_problem, &n), 0);
    /* Judged by the cursor files, "gone" has not read 8; by the configured c, all read. */
    assert_int_equal(spool_plog_open(&f->opt, &other), -ENOTEMPTY);
    f->opt.consumers = &c;
    f->opt.consumer_count = 1;
    log = open_log(f);
    spool_plog_close(log);
    char path[512];
    seg_file(f, 1, 0, ".log", path, sizeof(path));
    assert_int_equal(file_size(path), -1);
    seg_file(f, 1, 10, ".log", path, sizeof(path));
    assert_int_equal(file_size(path), 0);
    /* Raised again: offsets continue at 10 (the cursor stays valid). */
    f->topic.partitions = 2;
    log = open_log(f);
    spool_partition_info info;
    assert_int_equal(spool_plog_partition_info(log, 0, 1, &info), 0);
    assert_int_equal(info.end_offset, 10);
    assert_int_equal(append_n(log, 1, 10, 3, 0), 0);
    assert_int_equal(spool_plog_commit(log, 0, 0, NULL), 0);
    spool_plog_close(log);
    /* The override drops undelivered records. */
    f->topic.partitions = 1;
    assert_int_equal(spool_plog_open(&f->opt, &other), -ENOTEMPTY);
    spool_plog_set_overrides(SPOOL_PLOG_DROP_PARTITIONS);
    log = open_log(f);
    spool_plog_set_overrides(0);
    spool_plog_close(log);
    seg_file(f, 1, 13, ".log", path, sizeof(path));
    assert_int_equal(file_size(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_rolls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_mid_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offset_for_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_bytes_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_eagain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_corrupt_not_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure_not_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_failure_not_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_and_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discovered_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_interval_publication, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_bad_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_checkpoint_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_dir_blocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lower_partitions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
