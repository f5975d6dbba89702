/*
 * engine_bench.c: events per CPU-second of the stream engine (issue 16's
 * goal: at least 1 million). Three runs over pre-built records (the records'
 * construction is not timed):
 *   threshold  count 5 within 1m, key {{ ip }} over 100,000 keys
 *   replay     the same with no emit callback (state rebuild after restart)
 *   view       tumbling 1m, group_by {{ endpoint }} (200 keys), count + p99
 * Prints events/s of CPU time, CPU ns per event, matches, keys and state
 * bytes (bounded by max_keys). Usage: engine_bench [events] (default 2e6).
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

static void run(const char *name, const sx_opt *o, size_t no, rec *recs, long events, int emit)
{
    sx_def *d;
    sx_error err;
    if (sx_def_compile(o, no, &d, &err)) {
        fprintf(stderr, "%s: %s: %s\n", name, err.option, err.message);
        exit(1);
    }
    sx_state *s = sx_state_new(d);
    uint64_t matches = 0;
    double t0 = cpu_now();
    int64_t ts0 = 1700000000000;
    for (long i = 0; i < events; i++) {
        rec *r = &recs[i % NREC];
        r->r.timestamp = ts0 + i / 20; /* 20,000 events per second of event time */
        if (sx_process(s, &r->r, "in", emit ? count_emit : NULL, &matches) < 0) {
            fprintf(stderr, "%s: sx_process failed\n", name);
            exit(1);
        }
    }
    double cpu = cpu_now() - t0;
    sx_stats_t st;
    sx_stats(s, &st);
    printf("%-10s %10.0f events/CPU-s  %7.1f ns/event  %ld events  %llu emitted  %llu keys  "
           "%.1f MiB state\n",
           name, (double)events / cpu, cpu * 1e9 / (double)events, events,
           (unsigned long long)st.matches, (unsigned long long)st.keys,
           (double)st.bytes / 1048576.0);
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
    run("replay", thr, 5, recs, events, 0);
    run("view", view, 4, recs, events, 1);
    free(recs);
    return 0;
}
