/*
 * parse_bench.c: CPU cost of the `parse` processor per line (issue 15's goal: at most
 * 0.5 us of CPU per 200-byte line for `parse json` and `parse regex` on nginx combined
 * lines). Generated lines of about 200 bytes (no log data from outside), batches of 1,000
 * records built the way an input builds them, and the real plugin loaded from a config
 * file by the core's loader, run through process() as the processor thread runs it. Only
 * process() is timed, with the thread's CPU clock; building and freeing the batches is
 * not counted. The machine may be shared: each case runs in ROUNDS rounds and prints the
 * fastest round (the least disturbed), the median round, and the fastest single batch of
 * 1,000 lines (the cost when nothing else ran on that core).
 *
 * usage: parse_bench [LINES (default 500000)]
 * prints one line per case: name, bytes per line, ns of CPU per line, lines per second.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core.h"

#include "../../processors/parse/parse_formats.h"

#define BATCH 1000
#define ROUNDS 7
#define LINE_MAX_BYTES 512

static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static unsigned rng_state = 12345;
static unsigned rnd(unsigned n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

/* A JSON line of about 200 bytes with a nested object. */
static int gen_json(char *buf, size_t cap, unsigned i)
{
    static const char *const levels[] = {"info", "warn", "error", "debug"};
    return snprintf(
        buf, cap,
        "{\"time\":\"2024-03-01T12:%02u:%02u.%03uZ\",\"level\":\"%s\",\"msg\":\"request "
        "served in %u ms\",\"http\":{\"method\":\"GET\",\"status\":%u,\"path\":\"/api/"
        "v1/items/%u\"},\"user\":\"u%05u\",\"trace\":\"%08x%08x\"}",
        i / 60 % 60, i % 60, i % 1000, levels[i % 4], rnd(900), 200 + rnd(4) * 100, rnd(100000),
        rnd(100000), rnd(0xffffffffu), rnd(0xffffffffu));
}

/* An nginx combined line of about 200 bytes. */
static int gen_nginx(char *buf, size_t cap, unsigned i)
{
    static const char *const agents[] = {
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "curl/8.1.2 (x86_64-pc-linux-gnu) libcurl/8.1.2 OpenSSL/3.0.11",
        "kube-probe/1.28 (linux/amd64) kubernetes/health-check agent v1"};
    return snprintf(buf, cap,
                    "10.%u.%u.%u - - [01/Mar/2024:12:%02u:%02u +0000] \"GET /api/v1/items?id=%u "
                    "HTTP/1.1\" %u %u \"https://example.com/\" \"%s\"",
                    rnd(256), rnd(256), rnd(256), i / 60 % 60, i % 60, rnd(100000),
                    200 + rnd(4) * 100, rnd(50000), agents[i % 3]);
}

typedef struct bench_case {
    const char *name;
    const char *options; /* the parse entry's option lines */
    int (*gen)(char *buf, size_t cap, unsigned i);
} bench_case;

static const bench_case cases[] = {
    {"json", "    format: json\n", gen_json},
    {"json+timestamp", "    format: json\n    timestamp: { field: time, format: rfc3339 }\n",
     gen_json},
    {"nginx_combined", "    format: nginx_combined\n", gen_nginx},
    {"regex (nginx combined)",
     "    format: regex\n"
     "    pattern: '^(?<client>\\S+) \\S+ (?<user>\\S+) \\[(?<time>[^\\]]+)\\] "
     "\"(?<method>\\S+) (?<path>\\S+) (?<protocol>[^\"]+)\" (?<status>\\d{3}) (?<size>\\S+) "
     "\"(?<referer>[^\"]*)\" \"(?<agent>[^\"]*)\"$'\n",
     gen_nginx},
    {"nginx_combined+timestamp",
     "    format: nginx_combined\n    timestamp: { field: time, format: '%d/%b/%Y:%H:%M:%S %z' }\n",
     gen_nginx},
};

static int run_case(const bench_case *c, long lines)
{
    char path[] = "/tmp/spool-parse-bench-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    FILE *fp = fdopen(fd, "w");
    fprintf(fp,
            "service: { data_dir: /tmp/spool-parse-bench-no-such-dir }\n"
            "topics: { main: { partitions: 1 } }\n"
            "inputs: [ { type: stdin, topic: main } ]\n"
            "processors:\n"
            "  - type: parse\n%s",
            c->options);
    fclose(fp);
    spool_service_conf conf;
    spool_errors errs = {0};
    spool_service svc;
    memset(&svc, 0, sizeof(svc));
    int nerr = spool_service_conf_load(path, &conf, &errs);
    unlink(path);
    if (nerr) {
        spool_errors_print(&errs, stderr);
        return 1;
    }
    svc.conf = &conf;
    spool_instance *in = conf.inputs[0], *proc = conf.processors[0];
    in->svc = proc->svc = &svc;
    if (proc->plugin->init(proc, proc->ctx) < 0) {
        fprintf(stderr, "%s: init failed\n", c->name);
        return 1;
    }
    char line[LINE_MAX_BYTES];
    int64_t bytes = 0, round_ns[ROUNDS], best_batch = INT64_MAX;
    long failed = 0, per_round = lines / ROUNDS < BATCH ? BATCH : lines / ROUNDS;
    unsigned i = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int64_t spent = 0;
        long done = 0;
        while (done < per_round) {
            spool_batch *b = spool_batch_create(in);
            for (int k = 0; k < BATCH; k++, i++) {
                int n = c->gen(line, sizeof(line), i);
                spool_record r = {0};
                r.key_len = -1;
                r.value = (const uint8_t *)line;
                r.value_len = n;
                r.timestamp = 1;
                spool_batch_append(b, &r);
                bytes += n;
            }
            spool__batch_begin_process(b, proc);
            int64_t t0 = cpu_ns();
            proc->plugin->process(proc, proc->ctx, b);
            int64_t dt = cpu_ns() - t0;
            spent += dt;
            best_batch = dt < best_batch ? dt : best_batch;
            spool__batch_end_process(b);
            if (done == 0 && round == 0) {
                for (size_t k = 0; k < spool_batch_count(b); k++) {
                    spool_record r;
                    spool_batch_get(b, k, &r);
                    failed += spool_record_header(&r, "parse_error") != NULL;
                }
            }
            spool_batch_destroy(b);
            done += BATCH;
        }
        round_ns[round] = spent / done;
    }
    qsort(round_ns, ROUNDS, sizeof(round_ns[0]), cmp_i64);
    printf("%-26s %4ld B/line  %5lld ns CPU/line (median round %5lld, best batch %4lld)  "
           "%8.0f lines/s%s\n",
           c->name, (long)(bytes / (per_round * ROUNDS)), (long long)round_ns[0],
           (long long)round_ns[ROUNDS / 2], (long long)(best_batch / BATCH),
           1e9 / (double)round_ns[0], failed ? "  (PARSE ERRORS: the generator is wrong)" : "");
    proc->plugin->destroy(proc, proc->ctx);
    spool_service_conf_free(&conf);
    spool_errors_free(&errs);
    return failed ? 1 : 0;
}

static int count_field(void *arg, const char *name, size_t name_len, const uint8_t *val,
                       size_t val_len)
{
    (void)name;
    (void)val;
    *(size_t *)arg += name_len + val_len;
    return 0;
}

/* The text parser alone on the same lines (no record, no headers): what the processor
 * adds on top of it is the batch's header writes. */
static void run_raw(const char *name, int (*gen)(char *, size_t, unsigned), int json, long lines)
{
    enum { N = 4096 };
    static char text[N][LINE_MAX_BYTES];
    static int len[N];
    parse_scratch sc = {0};
    parse_error err;
    int64_t round_ns[ROUNDS];
    size_t sink = 0;
    for (unsigned i = 0; i < N; i++) {
        len[i] = gen(text[i], LINE_MAX_BYTES, i);
    }
    for (int round = 0; round < ROUNDS; round++) {
        int64_t t0 = cpu_ns();
        for (long k = 0; k < lines / ROUNDS; k++) {
            const uint8_t *in = (const uint8_t *)text[k % N];
            if (json) {
                parse_json(in, (size_t)len[k % N], &sc, count_field, &sink, &err);
            } else {
                parse_access(in, (size_t)len[k % N], PARSE_ACCESS_NGINX, count_field, &sink, &err);
            }
        }
        round_ns[round] = (cpu_ns() - t0) / (lines / ROUNDS);
    }
    qsort(round_ns, ROUNDS, sizeof(round_ns[0]), cmp_i64);
    printf("%-26s       parser only: %5lld ns CPU/line (median %5lld)%s\n", name,
           (long long)round_ns[0], (long long)round_ns[ROUNDS / 2], sink ? "" : " (no fields?)");
    parse_scratch_free(&sc);
}

int main(int argc, char **argv)
{
    long lines = argc > 1 ? atol(argv[1]) : 500000;
    int rc = 0;
    if (lines < BATCH) {
        lines = BATCH;
    }
    if (spool_registry_init() != 0) {
        return 1;
    }
    printf("parse processor, %ld lines per case, batches of %d, process() only\n", lines, BATCH);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        rc |= run_case(&cases[k], lines);
    }
    run_raw("json", gen_json, 1, lines);
    run_raw("nginx_combined", gen_nginx, 0, lines);
    spool_registry_reset();
    return rc;
}
