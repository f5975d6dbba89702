/*
 * bench_log.c: throughput of the partition log (issue 3's benchmark).
 *
 * Append: P producer threads build batches of records (100 B or 1 KiB
 * values) and push them into a bounded queue; one writer thread pops, appends
 * each batch and commits whenever the queue runs dry (idle) or after 64
 * batches (group commit, as the writer stage does), under fsync: 1s
 * (interval 1000 ms) or always. Time runs until the final forced commit,
 * so every byte counted is durable. Read: the same partition read back
 * sequentially in 1 MiB chunks from the page cache. Baseline: dd writing the
 * same number of bytes in the same directory right after each append run,
 * under the same durability: `conv=fdatasync` (one sync at the end) against
 * fsync 1s, and `oflag=dsync` with 4 MiB blocks (a sync per 4 MiB, the most
 * the writer groups into one commit) against fsync always. The log's I/O
 * goes through a counting wrapper of the posix table: the table reports how
 * many fdatasync calls the log made and the time spent in them.
 *
 * Each configuration runs `rounds` times (append, then dd); the table shows
 * the median of each figure, and of append/dd taken per round.
 *
 * With 0 producers the writer thread builds nothing per batch: it appends the
 * same ~64 KiB batch of records over and over (the log's append path alone,
 * no queue hand-off), committing every 64 batches and at the end.
 *
 * usage: bench_log [DIR] [MB per run] [producers] [rounds]
 * Prints a markdown table on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include <errno.h>
#include <ftw.h>
#include <stddef.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"

#define QCAP 64
#define MAX_ROUNDS 15

/* Counts the log's fdatasync calls and their time (one writer thread). */
static long n_syncs;
static double sync_s;

static double now_s(void);

static int counting_fdatasync(int fd)
{
    double t0 = now_s();
    int rc = spool_plog_io_posix.fdatasync(fd);
    sync_s += now_s() - t0;
    n_syncs++;
    return rc;
}

static spool_plog_io counting_io;

typedef struct job {
    spool_record *recs;
    size_t n;
} job;

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    job items[QCAP];
    size_t head, count;
    int producers_left;
} queue;

typedef struct bench {
    queue q;
    size_t value_size;
    size_t batch_records;
    int64_t batches_per_producer;
    uint8_t *value;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *producer(void *arg)
{
    bench *b = arg;
    for (int64_t i = 0; i < b->batches_per_producer; i++) {
        job j = {calloc(b->batch_records, sizeof(spool_record)), b->batch_records};
        for (size_t k = 0; k < j.n; k++) {
            j.recs[k] = (spool_record){.key_len = -1,
                                       .value = b->value,
                                       .value_len = (int32_t)b->value_size,
                                       .partition = -1,
                                       .offset = -1};
        }
        pthread_mutex_lock(&b->q.mu);
        while (b->q.count == QCAP) {
            pthread_cond_wait(&b->q.not_full, &b->q.mu);
        }
        b->q.items[(b->q.head + b->q.count) % QCAP] = j;
        b->q.count++;
        pthread_cond_signal(&b->q.not_empty);
        pthread_mutex_unlock(&b->q.mu);
    }
    pthread_mutex_lock(&b->q.mu);
    b->q.producers_left--;
    pthread_cond_signal(&b->q.not_empty);
    pthread_mutex_unlock(&b->q.mu);
    return NULL;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

typedef struct result {
    double append_mbs, append_rps, read_gbs, seconds, dd_mbs, ratio, syncs, sync_s;
    int64_t bytes, records;
} result;

static int run_append(const char *dir, size_t value_size, int fsync_mode, int64_t total_bytes,
                      int producers, result *res)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    spool_topic_conf tc = {.name = "bench",
                           .partitions = 1,
                           .segment_bytes = 64LL << 20,
                           .fsync_mode = fsync_mode,
                           .fsync_interval_ms = 1000};
    counting_io = spool_plog_io_posix;
    counting_io.fdatasync = counting_fdatasync;
    n_syncs = 0;
    sync_s = 0;
    spool_plog_options opt = {.data_dir = dir, .topics = &tc, .topic_count = 1, .io = &counting_io};
    spool_plog *log = NULL;
    int rc = spool_plog_open(&opt, &log);
    if (rc < 0) {
        fprintf(stderr, "open %s: %s\n", dir, strerror(-rc));
        return rc;
    }
    bench b = {0};
    pthread_mutex_init(&b.q.mu, NULL);
    pthread_cond_init(&b.q.not_empty, NULL);
    pthread_cond_init(&b.q.not_full, NULL);
    b.value_size = value_size;
    b.batch_records = (64 * 1024) / value_size; /* ~64 KiB batches */
    int64_t per_batch = (int64_t)(b.batch_records * value_size);
    b.batches_per_producer = producers > 0 ? total_bytes / per_batch / producers : 0;
    b.value = malloc(value_size);
    for (size_t i = 0; i < value_size; i++) {
        b.value[i] = (uint8_t)("0123456789abcdefghijklmnopqrstuvwxyz ."[i % 38]);
    }
    b.q.producers_left = producers;
    pthread_t th[64];
    int64_t records = 0, since_commit = 0;
    double t0 = now_s();
    if (producers == 0) {
        /* One thread, no queue: the log's own append path, as dd is one
         * process writing. Commits every 64 batches (not idle: fsync 1s
         * syncs when a second has passed), a forced one at the end. */
        spool_record *recs = calloc(b.batch_records, sizeof(spool_record));
        for (size_t k = 0; k < b.batch_records; k++) {
            recs[k] = (spool_record){.key_len = -1,
                                     .value = b.value,
                                     .value_len = (int32_t)value_size,
                                     .partition = -1,
                                     .offset = -1};
        }
        int64_t nbatches = total_bytes / per_batch;
        for (int64_t i = 0; i < nbatches; i++) {
            int64_t base;
            if ((rc = spool_plog_append(log, 0, 0, recs, b.batch_records, &base)) < 0) {
                fprintf(stderr, "append: %s\n", strerror(-rc));
                return rc;
            }
            records += (int64_t)b.batch_records;
            if (++since_commit >= 64) {
                spool_plog_commit(log, 0, 0, NULL);
                since_commit = 0;
            }
        }
        free(recs);
    }
    for (int i = 0; i < producers; i++) {
        pthread_create(&th[i], NULL, producer, &b);
    }
    for (; producers > 0;) {
        pthread_mutex_lock(&b.q.mu);
        while (b.q.count == 0 && b.q.producers_left > 0) {
            pthread_mutex_unlock(&b.q.mu);
            if (since_commit > 0) { /* idle: commit what we have */
                spool_plog_commit(log, 0, 1, NULL);
                since_commit = 0;
            }
            pthread_mutex_lock(&b.q.mu);
            if (b.q.count == 0 && b.q.producers_left > 0) {
                pthread_cond_wait(&b.q.not_empty, &b.q.mu);
            }
        }
        if (b.q.count == 0) {
            pthread_mutex_unlock(&b.q.mu);
            break;
        }
        job j = b.q.items[b.q.head];
        b.q.head = (b.q.head + 1) % QCAP;
        b.q.count--;
        int more = b.q.count > 0;
        pthread_cond_signal(&b.q.not_full);
        pthread_mutex_unlock(&b.q.mu);
        int64_t base;
        if ((rc = spool_plog_append(log, 0, 0, j.recs, j.n, &base)) < 0) {
            fprintf(stderr, "append: %s\n", strerror(-rc));
            return rc;
        }
        records += (int64_t)j.n;
        free(j.recs);
        if (++since_commit >= 64 || !more) {
            spool_plog_commit(log, 0, !more, NULL);
            since_commit = 0;
        }
    }
    spool_plog_commit(log, 1, 1, NULL);
    double t1 = now_s();
    for (int i = 0; i < producers; i++) {
        pthread_join(th[i], NULL);
    }
    spool_partition_info info;
    spool_plog_partition_info(log, 0, 0, &info);
    res->bytes = info.bytes;
    res->records = records;
    res->seconds = t1 - t0;
    res->append_mbs = (double)info.bytes / (1 << 20) / (t1 - t0);
    res->append_rps = (double)records / (t1 - t0);
    res->syncs = (double)n_syncs;
    res->sync_s = sync_s;
    /* Sequential read from the page cache. */
    spool_buf buf = {0};
    spool_buf_reserve(&buf, 2 << 20);
    int64_t next = 0, got = 0;
    double r0 = now_s();
    for (;;) {
        buf.len = 0;
        int64_t n2;
        long n = spool_plog_read(log, 0, 0, next, 1 << 20, &buf, &n2);
        if (n <= 0) {
            break;
        }
        got += n;
        next = n2;
    }
    double r1 = now_s();
    res->read_gbs = (double)got / 1e9 / (r1 - r0);
    spool_buf_free(&buf);
    free(b.value);
    spool_plog_close(log);
    return 0;
}

/* dd of the same bytes (rounded up to MiB) in dir: one fdatasync at the
 * end, or (always) a synchronous write per 4 MiB block. MB/s. */
static double run_dd(const char *dir, int64_t bytes, int always)
{
    char cmd[4096 + 128];
    int64_t mb = (bytes + (1 << 20) - 1) >> 20;
    if (always) {
        snprintf(cmd, sizeof(cmd),
                 "dd if=/dev/zero of=%s/dd.bin bs=4M count=%" PRId64 " oflag=dsync 2>/dev/null",
                 dir, (mb + 3) / 4);
        mb = (mb + 3) / 4 * 4;
    } else {
        snprintf(cmd, sizeof(cmd),
                 "dd if=/dev/zero of=%s/dd.bin bs=1M count=%" PRId64 " conv=fdatasync 2>/dev/null",
                 dir, mb);
    }
    double t0 = now_s();
    int rc = system(cmd);
    double t1 = now_s();
    snprintf(cmd, sizeof(cmd), "%s/dd.bin", dir);
    unlink(cmd);
    return rc == 0 ? (double)mb / (t1 - t0) : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of field at byte offset off over n results. */
static double median(const result *r, int n, size_t off)
{
    double v[MAX_ROUNDS];
    for (int i = 0; i < n; i++) {
        memcpy(&v[i], (const char *)&r[i] + off, sizeof(double));
    }
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MED(r, n, field) median(r, n, offsetof(result, field))

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "./bench-log-data";
    int64_t mb = argc > 2 ? atoll(argv[2]) : 256;
    int producers = argc > 3 ? atoi(argv[3]) : 4;
    int rounds = argc > 4 ? atoi(argv[4]) : 3;
    if (producers < 0 || producers > 64 || mb < 1 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench_log [DIR] [MB per run] [producers 0..64] [rounds 1..%d]\n",
                MAX_ROUNDS);
        return 2;
    }
    mkdir(dir, 0750);
    char data[4096 + 16];
    snprintf(data, sizeof(data), "%s/log", dir);
    struct {
        size_t size;
        int mode;
        const char *name;
    } runs[] = {
        {100, SPOOL_FSYNC_INTERVAL, "fsync 1s"},
        {1024, SPOOL_FSYNC_INTERVAL, "fsync 1s"},
        {100, SPOOL_FSYNC_ALWAYS, "fsync always"},
        {1024, SPOOL_FSYNC_ALWAYS, "fsync always"},
    };
    printf("| record | fsync | MB | append MB/s | records/s | dd MB/s | append/dd (min-max) "
           "| log syncs | s in sync | read GB/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        result r[MAX_ROUNDS];
        double lo = 1e9, hi = 0;
        int always = runs[i].mode == SPOOL_FSYNC_ALWAYS;
        for (int k = 0; k < rounds; k++) {
            if (run_append(data, runs[i].size, runs[i].mode, mb << 20, producers, &r[k]) < 0) {
                return 1;
            }
            r[k].dd_mbs = run_dd(dir, r[k].bytes, always);
            r[k].ratio = r[k].dd_mbs > 0 ? 100.0 * r[k].append_mbs / r[k].dd_mbs : 0.0;
            lo = r[k].ratio < lo ? r[k].ratio : lo;
            hi = r[k].ratio > hi ? r[k].ratio : hi;
            fprintf(stderr,
                    "%zu B %s round %d: append %.0f MB/s, dd %.0f MB/s, %.0f%%, %.0f syncs "
                    "%.2f s, read %.2f GB/s\n",
                    runs[i].size, runs[i].name, k + 1, r[k].append_mbs, r[k].dd_mbs, r[k].ratio,
                    r[k].syncs, r[k].sync_s, r[k].read_gbs);
        }
        printf("| %zu B | %s | %.0f | %.0f | %.0f | %.0f | %.0f%% (%.0f-%.0f%%) | %.0f | %.2f | "
               "%.2f |\n",
               runs[i].size, runs[i].name, (double)r[0].bytes / (1 << 20),
               MED(r, rounds, append_mbs), MED(r, rounds, append_rps), MED(r, rounds, dd_mbs),
               MED(r, rounds, ratio), lo, hi, MED(r, rounds, syncs), MED(r, rounds, sync_s),
               MED(r, rounds, read_gbs));
        fflush(stdout);
    }
    nftw(data, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
