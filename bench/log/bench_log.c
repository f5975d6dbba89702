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
 * same number of bytes with one fdatasync at the end, in the same directory.
 *
 * usage: bench_log [DIR] [MB per run] [producers]
 * Prints one line per figure, and a markdown table on stdout at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include <errno.h>
#include <ftw.h>
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
    double append_mbs, append_rps, read_gbs, seconds;
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
    spool_plog_options opt = {.data_dir = dir, .topics = &tc, .topic_count = 1};
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
    b.batches_per_producer = total_bytes / per_batch / producers;
    b.value = malloc(value_size);
    for (size_t i = 0; i < value_size; i++) {
        b.value[i] = (uint8_t)("0123456789abcdefghijklmnopqrstuvwxyz ."[i % 38]);
    }
    b.q.producers_left = producers;
    pthread_t th[64];
    double t0 = now_s();
    for (int i = 0; i < producers; i++) {
        pthread_create(&th[i], NULL, producer, &b);
    }
    int64_t records = 0, since_commit = 0;
    for (;;) {
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

static double run_dd(const char *dir, int64_t bytes)
{
    char cmd[4096 + 128];
    int64_t mb = (bytes + (1 << 20) - 1) >> 20;
    snprintf(cmd, sizeof(cmd),
             "dd if=/dev/zero of=%s/dd.bin bs=1M count=%" PRId64 " conv=fdatasync 2>/dev/null", dir,
             mb);
    double t0 = now_s();
    int rc = system(cmd);
    double t1 = now_s();
    snprintf(cmd, sizeof(cmd), "%s/dd.bin", dir);
    unlink(cmd);
    return rc == 0 ? (double)mb / (t1 - t0) : -1;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "./bench-log-data";
    int64_t mb = argc > 2 ? atoll(argv[2]) : 256;
    int producers = argc > 3 ? atoi(argv[3]) : 4;
    if (producers < 1 || producers > 64 || mb < 1) {
        fprintf(stderr, "usage: bench_log [DIR] [MB per run] [producers 1..64]\n");
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
    printf("| record | fsync | producers | MB | append MB/s | records/s | dd MB/s | append/dd "
           "| read GB/s |\n|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        result r;
        if (run_append(data, runs[i].size, runs[i].mode, mb << 20, producers, &r) < 0) {
            return 1;
        }
        double dd = run_dd(dir, r.bytes);
        printf("| %zu B | %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f%% | %.2f |\n", runs[i].size,
               runs[i].name, producers, (double)r.bytes / (1 << 20), r.append_mbs, r.append_rps, dd,
               dd > 0 ? 100.0 * r.append_mbs / dd : 0.0, r.read_gbs);
        fflush(stdout);
    }
    nftw(data, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
