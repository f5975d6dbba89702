/*
 * engine_bench.c: events per CPU-second of the stream engine (issue 16's
 * goal: at least 1 million) over pre-built records, each run after an
 * untimed warm-up of 1e6 events (every key exists, buffers have grown):
 *   threshold  count 5 within 1m, key {{ ip }} over 100,000 keys
 *   snapshot   that state written and restored (time, image size)
 *   replay     the restored state fed the next events without emitting (the
 *              state rebuild after a restart; issue goal 2 million/s)
 *   view       tumbling 1m, group_by {{ endpoint }} (200 keys), count + p99
 * Prints events/s of CPU time, CPU ns per event, keys and state bytes
 * (bounded by max_keys). Usage: engine_bench [events] (default 2e6).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

#define NREC 1000000

typedef struct rec {
    char ip[20], ep[16], lat[12];
    spool_header h[3];
    spool_record r;
} rec;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rs = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static int count_emit(void *arg, const spool_record *ev)
{
    (*(uint64_t *)arg)++;
    return 0;
}

static void hset(spool_header *h, const char *k, const char *v)
{
    h->key = k;
    h->key_len = (uint32_t)strlen(k);
    h->value = (const uint8_t *)v;
    h->value_len = (int32_t)strlen(v);
}

static sx_def *compile(const char *name, const sx_opt *o, size_t no)
{
    sx_def *d;
    sx_error err;
    if (sx_def_compile(o, no, &d, &err)) {
        fprintf(stderr, "%s: %s: %s\n", name, err.option, err.message);
        exit(1);
    }
    return d;
}

/* Feeds events [from, from + n) (timestamps from their index). */
static double feed(sx_state *s, rec *recs, long from, long n, int emit, uint64_t *matches)
{
    double t0 = cpu_now();
    for (long i = from; i < from + n; i++) {
        rec *r = &recs[i % NREC];
        r->r.timestamp = 1700000000000 + i / 20; /* 20,000 events per second of event time */
        if (sx_process(s, &r->r, "in", emit ? count_emit : NULL, matches) < 0) {
            fprintf(stderr, "sx_process failed\n");
            exit(1);
        }
    }
    return cpu_now() - t0;
}

static void report(const char *name, const sx_state *s, long events, double cpu)
{
    sx_stats_t st;
    sx_stats(s, &st);
    printf("%-10s %10.0f events/CPU-s  %7.1f ns/event  %ld events  %llu keys  %.1f MiB state\n",
           name, (double)events / cpu, cpu * 1e9 / (double)events, events,
           (unsigned long long)st.keys, (double)st.bytes / 1048576.0);
}

/* Warm-up (every key created, buffers grown: untimed), then `events` timed;
 * for the pattern also the state rebuild: restore a snapshot, replay. */
static void run(const char *name, const sx_opt *o, size_t no, rec *recs, long events, int rebuild)
{
    sx_def *d = compile(name, o, no);
    sx_state *s = sx_state_new(d);
    uint64_t matches = 0;
    feed(s, recs, 0, NREC, 1, &matches);
    double cpu = feed(s, recs, NREC, events, 1, &matches);
    report(name, s, events, cpu);
    if (rebuild) {
        spool_buf img = {0};
        double t0 = cpu_now();
        if (sx_snapshot(s, &img) != 0) {
            exit(1);
        }
        double t1 = cpu_now();
        sx_state *r = sx_state_new(d);
        if (sx_restore(r, img.data, img.len) != 0) {
            exit(1);
        }
        double t2 = cpu_now();
        printf("snapshot   %.1f MiB: written in %.0f ms, restored in %.0f ms\n",
               (double)img.len / 1048576.0, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
        /* Replay without emitting, as after a restart: the next events. */
        double rc = feed(r, recs, NREC + events, events, 0, &matches);
        report("replay", r, events, rc);
        spool_buf_free(&img);
        sx_state_free(r);
    }
    sx_state_free(s);
    sx_def_free(d);
}

int main(int argc, char **argv)
{
    long events = argc > 1 ? atol(argv[1]) : 2000000;
    rec *recs = calloc(NREC, sizeof(*recs));
    if (recs == NULL) {
        return 1;
    }
    for (long i = 0; i < NREC; i++) {
        rec *r = &recs[i];
        uint64_t k = rnd() % 100000;
        snprintf(r->ip, sizeof(r->ip), "10.%u.%u.%u", (unsigned)(k >> 16), (unsigned)(k >> 8 & 255),
                 (unsigned)(k & 255));
        snprintf(r->ep, sizeof(r->ep), "/api/%u", (unsigned)(rnd() % 200));
        snprintf(r->lat, sizeof(r->lat), "%u", (unsigned)(rnd() % 5000 + 1));
        hset(&r->h[0], "ip", r->ip);
        hset(&r->h[1], "endpoint", r->ep);
        hset(&r->h[2], "latency", r->lat);
        r->r = (spool_record){.key_len = -1,
                              .value_len = -1,
                              .headers = r->h,
                              .header_count = 3,
                              .partition = 0,
                              .offset = i};
    }
    const sx_opt thr[] = {{"key", "{{ ip }}"},
                          {"pattern.type", "threshold"},
                          {"pattern.count", "5"},
                          {"pattern.within", "1m"},
                          {"max_keys", "100000"}};
    const sx_opt view[] = {{"view.group_by", "{{ endpoint }}"},
                           {"view.window.tumbling", "1m"},
                           {"view.aggregates[0]", "count"},
                           {"view.aggregates[1]", "p99(latency)"}};
    run("threshold", thr, 5, recs, events, 1);
    run("view", view, 4, recs, events, 0);
    free(recs);
    return 0;
}
