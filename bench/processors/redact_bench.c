/*
 * redact_bench.c: CPU cost of the `redact` processor (issue 15's benchmark), in ns per line.
 *
 * Generates deterministic 200-byte log lines (timestamp, level, request, status, user agent,
 * request id), of which a fixed share carry something to redact: an e-mail address (1 in 10),
 * an IPv4 address (1 in 10), an IPv6 address (1 in 20), a bearer token (1 in 20), a
 * Luhn-valid card number (1 in 50); the rest carry only look-alikes (times, versions,
 * numbers). Each configuration is loaded through the real config loader and run by the
 * processor's own process() over batches of 1000 records, as the processor stage runs it;
 * the time is the thread's CPU time over all batches, after one warm-up pass.
 *
 * Configurations: no pattern matches anything (a pattern that never occurs), each built-in
 * alone, all built-ins, all built-ins over lines with nothing to redact.
 *
 * usage: redact_bench [lines] (default 200000). Prints one line per configuration.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "config/config.h"

#define LINE_LEN 200
#define BATCH 1000

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Line i, exactly LINE_LEN bytes (padded with the request id), deterministic. */
static void make_line(size_t i, int clean, char *out)
{
    static const char *const paths[] = {"/api/v1/items", "/login", "/static/app.js", "/health"};
    char secret[96] = "";
    unsigned r = (unsigned)(i * 2654435761u);
    if (!clean) {
        if (i % 10 == 3) {
            snprintf(secret, sizeof(secret), " user=user%zu@example.com", i % 997);
        } else if (i % 10 == 7) {
            snprintf(secret, sizeof(secret), " client=10.%u.%u.%u", r % 256, (r >> 8) % 256,
                     (r >> 16) % 256);
        } else if (i % 20 == 1) {
            snprintf(secret, sizeof(secret), " peer=2001:db8:%x::%x", r % 65536, (r >> 16) % 65536);
        } else if (i % 20 == 9) {
            snprintf(secret, sizeof(secret), " auth=\"Bearer eyJhbGciOiJIUzI1NiJ9.%08x\"", r);
        } else if (i % 50 == 5) {
            snprintf(secret, sizeof(secret), " card=4111 1111 1111 1111");
        }
    }
    int n = snprintf(out, LINE_LEN + 1,
                     "2026-12-01T16:%02zu:%02zu.%03zuZ INFO [web-%zu] GET %s?page=%zu "
                     "status=%d bytes=%u dur=%ums v=1.%zu.3 at 12:%02zu:07%s req=",
                     (i / 60) % 60, i % 60, i % 1000, i % 8, paths[i % 4], i % 50,
                     i % 13 ? 200 : 503, r % 100000, r % 977, i % 9, i % 60, secret);
    uint32_t x = r | 1; /* the request id: random hex (xorshift32) */
    for (int k = n; k < LINE_LEN; k++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out[k] = "0123456789abcdef"[x & 15];
    }
    out[LINE_LEN] = '\0';
}

static spool_instance *load(const char *yaml_proc, spool_service_conf *conf, spool_errors *errs,
                            spool_service *svc, char *path)
{
    snprintf(path, 64, "/tmp/redact-bench-XXXXXX.yaml");
    int fd = mkstemps(path, 5);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        perror("temp file");
        exit(1);
    }
    fprintf(f,
            "topics:\n  main: {partitions: 1}\ninputs:\n  - type: stdin\n    topic: main\n"
            "processors:\n%soutputs:\n  - type: file\n    topics: [main]\n"
            "    path: /dev/null\n",
            yaml_proc);
    fclose(f);
    if (spool_service_conf_load(path, conf, errs) > 0) {
        spool_errors_print(errs, stderr);
        exit(1);
    }
    svc->conf = conf;
    conf->inputs[0]->svc = svc;
    spool_instance *p = conf->processors[0];
    p->svc = svc;
    if (p->plugin->init(p, p->ctx) < 0) {
        fprintf(stderr, "init failed\n");
        exit(1);
    }
    return p;
}

/* ns per line of one configuration over n lines. */
static double run(const char *name, const char *yaml_proc, size_t n, int clean, uint64_t *changed)
{
    spool_service_conf conf;
    spool_errors errs = {0};
    spool_service svc;
    char path[64];
    memset(&conf, 0, sizeof(conf));
    memset(&svc, 0, sizeof(svc));
    spool_instance *p = load(yaml_proc, &conf, &errs, &svc, path);
    char line[LINE_LEN + 1];
    double spent = 0;
    *changed = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up */
        for (size_t done = 0; done < n; done += BATCH) {
            spool_batch *b = spool_batch_create(conf.inputs[0]);
            for (size_t i = done; i < done + BATCH && i < n; i++) {
                make_line(i, clean, line);
                spool_record r = {0};
                r.key_len = -1;
                r.value = (const uint8_t *)line;
                r.value_len = LINE_LEN;
                r.timestamp = 1;
                spool_batch_append(b, &r);
            }
            spool__batch_begin_process(b, p);
            double t0 = cpu_now();
            p->plugin->process(p, p->ctx, b);
            double t1 = cpu_now();
            spool__batch_end_process(b);
            if (pass == 1) {
                spent += t1 - t0;
                for (size_t i = 0; i < spool_batch_count(b); i++) {
                    spool_record r;
                    spool_batch_get(b, i, &r);
                    *changed += memmem(r.value, (size_t)r.value_len, "[REDACTED]", 10) != NULL;
                }
            }
            spool_batch_destroy(b);
        }
    }
    p->plugin->destroy(p, p->ctx);
    spool_service_conf_free(&conf);
    spool_errors_free(&errs);
    unlink(path);
    double ns = spent * 1e9 / (double)n;
    printf("redact %-28s %8.0f ns/line  %7.2f s CPU per million lines  (%llu of %zu lines "
           "changed)\n",
           name, ns, ns / 1000.0, (unsigned long long)*changed, n);
    fflush(stdout);
    return ns;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 200000;
    uint64_t changed;
    spool__log_configure(SPOOL_LOG_WARN, 0);
    spool_registry_init();
    char sample[LINE_LEN + 1];
    make_line(3, 0, sample);
    printf("%zu lines of %d bytes, batches of %d; e.g.\n  %s\n", n, LINE_LEN, BATCH, sample);
    run("(a pattern never matching)", "  - type: redact\n    patterns: {'QQQ[0-9]+': x}\n", n, 0,
        &changed);
    static const char *const kinds[] = {"email", "ipv4", "ipv6", "credit_card", "bearer_token"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "  - type: redact\n    builtins: [%s]\n", kinds[k]);
        run(kinds[k], yaml, n, 0, &changed);
    }
    run("all built-ins", "  - type: redact\n    builtins: [all]\n", n, 0, &changed);
    run("all built-ins, nothing to find", "  - type: redact\n    builtins: [all]\n", n, 1,
        &changed);
    return 0;
}
