/*
 * test_log_crash.c: the crash test of issue 3. A child process appends
 * batches to a log with fsync: always, commits after each, sets a source
 * position naming the end offset, and reports every acknowledged end
 * offset on a pipe. The parent SIGKILLs it at a random moment, reopens the
 * log and checks: no acknowledged record missing, no gap, no garbage,
 * strictly increasing offsets, each record's content as appended
 * (deterministic by offset), and the durable position equal to the end
 * offset (positions describe exactly the data that survived). Repeated for
 * at least 50 rounds on the same data_dir, bounded in time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"

#define ROUNDS 60
#define MAX_SECONDS 60

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static size_t value_for(int64_t offset, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "crash-%" PRId64 ":", offset);
    size_t len = (size_t)n + (size_t)((offset * 7919) % 200);
    for (size_t i = (size_t)n; i < len && i < cap; i++) {
        buf[i] = (char)('A' + (offset * 31 + (int64_t)i) % 58);
    }
    return len;
}

static spool_topic_conf topic_conf(void)
{
    return (spool_topic_conf){
        .name = "crash",
        .partitions = 2,
        .segment_bytes = 64 * 1024,
        .fsync_mode = SPOOL_FSYNC_ALWAYS,
        .index_interval_bytes = 1024,
    };
}

/* The child: append, commit, acknowledge, forever (until SIGKILL). */
static void child_main(const char *dir, int ack_fd, unsigned seed)
{
    spool_topic_conf tc = topic_conf();
    spool_plog_options opt = {.data_dir = dir, .topics = &tc, .topic_count = 1};
    spool_plog *log = NULL;
    if (spool_plog_open(&opt, &log) != 0) {
        _exit(3);
    }
    srand(seed);
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    int64_t end = info.end_offset;
    char vals[32][256];
    spool_record recs[32];
    for (;;) {
        int n = 1 + rand() % 32;
        for (int i = 0; i < n; i++) {
            size_t len = value_for(end + i, vals[i], sizeof(vals[i]));
            recs[i] = (spool_record){.key_len = -1,
                                     .value = (const uint8_t *)vals[i],
                                     .value_len = (int32_t)len,
                                     .partition = -1,
                                     .offset = -1};
        }
        int64_t base;
        if (spool_plog_append(log, 0, 0, recs, (size_t)n, &base) != 0 || base != end) {
            _exit(4);
        }
        end += n;
        char pos[32];
        int pl = snprintf(pos, sizeof(pos), "%" PRId64, end);
        if (spool_plog_position_set(log, "src", pos, (size_t)pl) != 0 ||
            spool_plog_commit(log, 0, 0, NULL) != 0) {
            _exit(5);
        }
        if (write(ack_fd, &end, sizeof(end)) != sizeof(end)) {
            _exit(6);
        }
    }
}

/* Reads the whole partition and checks it. Returns the records seen. */
static int64_t verify(spool_plog *log, int64_t *end_out)
{
    spool_buf buf = {0};
    spool_rb_decoded d = {0};
    spool_partition_info info;
    assert_int_equal(spool_plog_partition_info(log, 0, 0, &info), 0);
    int64_t next = 0, expect = 0;
    for (int guard = 0; guard < 10000000; guard++) {
        buf.len = 0;
        int64_t n2;
        long n = spool_plog_read(log, 0, 0, next, 256 * 1024, &buf, &n2);
        assert_true(n >= 0);
        if (n == 0) {
            break;
        }
        spool_rb_decoded_reset(&d);
        for (size_t off = 0; off < buf.len;) {
            spool_rb_info bi;
            long sz = spool_rb_parse_header(buf.data + off, buf.len - off, 1, &bi);
            assert_true(sz > 0);
            assert_true(spool_rb_decode(buf.data + off, (size_t)sz, 0, 0, &d) > 0);
            off += (size_t)sz;
        }
        for (size_t i = 0; i < d.count; i++) {
            char want[256];
            size_t len = value_for(d.records[i].offset, want, sizeof(want));
            assert_int_equal(d.records[i].offset, expect); /* no gap, increasing */
            assert_int_equal(d.records[i].value_len, (int32_t)len);
            assert_memory_equal(d.records[i].value, want, len);
            expect++;
        }
        next = n2;
    }
    assert_int_equal(expect, info.end_offset);
    *end_out = info.end_offset;
    spool_buf_free(&buf);
    spool_rb_decoded_free(&d);
    return expect;
}

static void test_crash_kill9(void **state)
{
    (void)state;
    char dir[] = "/tmp/spool-test-crash-XXXXXX";
    assert_non_null(mkdtemp(dir));
    srand((unsigned)time(NULL));
    time_t start = time(NULL);
    int rounds = 0;
    int64_t total_acked = 0;
    spool_topic_conf tc = topic_conf();
    spool_plog_options opt = {.data_dir = dir, .topics = &tc, .topic_count = 1};
    for (rounds = 0; rounds < ROUNDS && time(NULL) - start < MAX_SECONDS; rounds++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_main(dir, fds[1], (unsigned)rand());
        }
        close(fds[1]);
        /* Let it run a random while: from at once to ~50 ms. */
        int mode = rand() % 4;
        if (mode == 0) {
            int64_t v;
            (void)!read(fds[0], &v, sizeof(v)); /* right after the first ack */
        } else {
            struct timespec ts = {0, (long)(rand() % 50000) * 1000L};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* not an early exit with an error */
        int64_t acked = -1, v;
        while (read(fds[0], &v, sizeof(v)) == sizeof(v)) {
            assert_true(v > acked);
            acked = v;
        }
        close(fds[0]);
        spool_plog *log = NULL;
        assert_int_equal(spool_plog_open(&opt, &log), 0);
        int64_t end;
        verify(log, &end);
        if (acked >= 0) {
            assert_true(end >= acked); /* no acknowledged record missing */
            total_acked = acked;
        }
        char pos[64];
        size_t len = 0;
        if (end > 0) {
            assert_int_equal(spool_plog_position_get(log, "src", pos, sizeof(pos) - 1, &len), 0);
            pos[len] = '\0';
            assert_int_equal(strtoll(pos, NULL, 10), end); /* positions match the data */
        }
        spool_plog_recovery_stats st;
        spool_plog_recovery_get(log, &st);
        assert_int_equal(st.corrupt_moved, 0);
        assert_int_equal(st.ckpt_missing, 0);
        spool_plog_close(log);
    }
    print_message("crash test: %d rounds in %ld s, %" PRId64 " records acknowledged\n", rounds,
                  (long)(time(NULL) - start), total_acked);
    assert_true(rounds >= 50);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_kill9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
