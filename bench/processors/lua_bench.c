/*
 * lua_bench.c: CPU cost per record of the `lua` processor (issue 15's
 * "trivial lua script" figure), in record mode and batch mode.
 *
 * The processor is configured from YAML as spool loads it, then run on
 * batches of 256 records built beforehand (a 200-byte line, headers host
 * and input as the stdin/tail inputs add), each batch processed once,
 * exactly as the processor stage does (begin, process, end). Scripts: a
 * no-op (the cost of crossing into Lua), adding one field (the issue's
 * trivial script), and rewriting the value. The time is the process's CPU
 * time over the processing only (batch building excluded).
 *
 * usage: lua_bench [records [case]]   (default 200000 records, every case;
 *        case: a substring of "<mode> <label>", e.g. "record no-op")
 * Prints one line per case: ns/record and records/s of CPU.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core.h"

#define BATCH 256

static const spool_plugin bench_input = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "bench_in",
};

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench(const char *label, const char *mode, const char *code, size_t nrec)
{
    char dir[] = "/tmp/spool-lua-bench-XXXXXX", path[128], cmd[160];
    spool_service_conf conf;
    spool_errors errs = {0};
    spool_service svc;
    int rc = 1;
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/spool.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    fprintf(f,
            "service:\n  data_dir: %s/data\ntopics:\n  app: {}\n"
            "inputs:\n  - type: stdin\n    topic: app\n"
            "processors:\n  - type: lua\n    mode: %s\n    code: |\n%s\n"
            "outputs:\n  - type: file\n    topics: [app]\n    path: %s/out\n",
            dir, mode, code, dir);
    fclose(f);
    memset(&svc, 0, sizeof(svc));
    if (spool_service_conf_load(path, &conf, &errs) != 0) {
        spool_errors_print(&errs, stderr);
        goto out_conf;
    }
    svc.conf = &conf;
    spool_instance *pi = conf.processors[0];
    pi->svc = &svc;
    spool_instance *in = spool__instance_new(&bench_input, SPOOL_PLUGIN_INPUT, 0, "in");
    if (!in || spool__instance_metrics(pi) < 0 || pi->plugin->init(pi, pi->ctx) < 0) {
        fprintf(stderr, "%s: init failed\n", label);
        goto out_in;
    }
    in->svc = &svc;
    in->topic = 0;
    size_t nb = (nrec + BATCH - 1) / BATCH;
    spool_batch **bs = calloc(nb, sizeof(*bs));
    char line[256];
    for (size_t k = 0; k < nb; k++) {
        bs[k] = spool_batch_create(in);
        for (size_t i = 0; i < BATCH; i++) {
            int n = snprintf(line, sizeof(line),
                             "127.0.0.1 - - [01/Dec/2026:16:00:00 +0000] \"GET /api/v1/items/%zu "
                             "HTTP/1.1\" 200 %zu \"-\" \"Mozilla/5.0 (X11; Linux x86_64) "
                             "bench\" rt=0.004 id=",
                             k * BATCH + i, 1000 + i);
            while (n < 200) {
                line[n++] = 'x';
            }
            spool_header h[2] = {{"host", 4, (const uint8_t *)"bench-host", 10},
                                 {"input", 5, (const uint8_t *)"in", 2}};
            spool_record r = {.key_len = -1,
                              .value = (const uint8_t *)line,
                              .value_len = n,
                              .headers = h,
                              .header_count = 2,
                              .timestamp = 1000};
            if (spool_batch_append(bs[k], &r) < 0) {
                fprintf(stderr, "out of memory\n");
                goto out_batches;
            }
        }
    }
    double t0 = cpu_now();
    for (size_t k = 0; k < nb; k++) {
        spool__batch_begin_process(bs[k], pi);
        if (pi->plugin->process(pi, pi->ctx, bs[k]) < 0) {
            fprintf(stderr, "%s: process failed\n", label);
            goto out_batches;
        }
        spool__batch_end_process(bs[k]);
    }
    double cpu = cpu_now() - t0;
    size_t done = nb * BATCH;
    /* The script must have run: a field it adds, or the value it rewrites. */
    spool_record r;
    spool_batch_get(bs[nb - 1], BATCH - 1, &r);
    if (strstr(code, "env") && !spool_record_header(&r, "env")) {
        fprintf(stderr, "%s: the script's change is missing\n", label);
        goto out_batches;
    }
    printf("lua %-6s %-28s %8.0f ns/record  %10.0f records/s of CPU\n", mode, label,
           cpu * 1e9 / (double)done, (double)done / cpu);
    rc = 0;
out_batches:
    for (size_t k = 0; k < nb; k++) {
        spool_batch_destroy(bs[k]);
    }
    free(bs);
    pi->plugin->destroy(pi, pi->ctx);
out_in:
    spool__instance_free(in);
out_conf:
    spool_service_conf_free(&conf);
    spool_errors_free(&errs);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    if (n < BATCH) {
        n = BATCH;
    }
    if (spool_registry_init() < 0) {
        return 1;
    }
    static const struct {
        const char *label, *record, *batch;
    } cases[] = {
        {"no-op", "      function process(r) end", "      function process(rs) end"},
        {"add one field", "      function process(r) r.fields.env = 'prod' end",
         "      function process(rs)\n"
         "        for _, r in ipairs(rs) do r.fields.env = 'prod' end\n"
         "      end"},
        {"rewrite the value (upper)", "      function process(r) r.value = r.value:upper() end",
         "      function process(rs)\n"
         "        for _, r in ipairs(rs) do r.value = r.value:upper() end\n"
         "      end"},
    };
    int rc = 0;
    const char *only = argc > 2 ? argv[2] : NULL;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char name[2][64];
        snprintf(name[0], sizeof(name[0]), "record %s", cases[c].label);
        snprintf(name[1], sizeof(name[1]), "batch %s", cases[c].label);
        if (!only || strstr(name[0], only)) {
            rc |= bench(cases[c].label, "record", cases[c].record, n);
        }
        if (!only || strstr(name[1], only)) {
            rc |= bench(cases[c].label, "batch", cases[c].batch, n);
        }
    }
    return rc;
}
