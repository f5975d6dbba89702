/*
 * predact_harness.h: runs one processor plugin the way the service does, for the unit tests
 * of redact, sample and throttle (test_redact.c, test_sample.c, test_throttle.c). The
 * configuration goes through the real loader (a temporary YAML file with one stdin input, the
 * test's processor, one file output), so option parsing, defaults and check() are the ones
 * `spool check` runs; then init, batches from the fake service, process, and the metrics.
 * Header only (static functions); include after cmocka.h and core.h.
 */
#ifndef PREDACT_HARNESS_H
#define PREDACT_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "metrics.h"

#define PH_FN static __attribute__((unused)) /* each test uses a subset */

typedef struct ph {
    char path[64]; /* the YAML file */
    spool_service_conf conf;
    spool_errors errs;
    spool_service svc;
    int nerr;           /* errors the loader (and check) reported */
    spool_instance *in; /* the stdin input */
    spool_instance *pr; /* the processor under test */
    int inited;         /* init succeeded */
} ph;

/* Loads a config whose processors section is `proc` (YAML text of one list item, indented by
 * two spaces, e.g. "  - type: sample\n    rate: 3\n"). */
PH_FN ph *ph_load(const char *proc)
{
    ph *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    snprintf(h->path, sizeof(h->path), "/tmp/spool-ph-XXXXXX.yaml");
    int fd = mkstemps(h->path, 5);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fprintf(f,
            "service:\n  data_dir: /nonexistent/spool-ph\n"
            "topics:\n  main: {partitions: 1}\n"
            "inputs:\n  - type: stdin\n    topic: main\n"
            "processors:\n%s"
            "outputs:\n  - type: file\n    topics: [main]\n    path: /dev/null\n",
            proc);
    fclose(f);
    spool_registry_init();
    h->nerr = spool_service_conf_load(h->path, &h->conf, &h->errs);
    h->svc.conf = &h->conf;
    if (h->conf.ninputs > 0) {
        h->in = h->conf.inputs[0];
        h->in->svc = &h->svc;
    }
    if (h->conf.nprocessors > 0) {
        h->pr = h->conf.processors[0];
        h->pr->svc = &h->svc;
    }
    return h;
}

/* The loader's errors, one "LINE:COL: PATH: MESSAGE" per line (file name left out). The
 * caller frees the string. */
PH_FN char *ph_errors(const ph *h)
{
    size_t cap = 256, len = 0;
    char *s = calloc(1, cap);
    assert_non_null(s);
    for (size_t i = 0; i < h->errs.count; i++) {
        const spool_error *e = &h->errs.items[i];
        char line[1400];
        int n = snprintf(line, sizeof(line), "%d:%d: %s: %s\n", e->line, e->column, e->path,
                         e->message);
        while (len + (size_t)n + 1 > cap) {
            cap *= 2;
            s = realloc(s, cap);
            assert_non_null(s);
        }
        memcpy(s + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    return s;
}

/* Loads `proc`, which must be valid, and inits the processor. */
PH_FN ph *ph_start(const char *proc)
{
    ph *h = ph_load(proc);
    if (h->nerr) {
        char *e = ph_errors(h);
        fprintf(stderr, "unexpected config errors:\n%s", e);
        free(e);
    }
    assert_int_equal(h->nerr, 0);
    assert_non_null(h->pr);
    assert_int_equal(spool__instance_metrics(h->pr), 0); /* errors_total, ... as the service */
    assert_int_equal(h->pr->plugin->init(h->pr, h->pr->ctx), 0);
    h->inited = 1;
    return h;
}

PH_FN void ph_free(ph *h)
{
    if (h->pr && h->inited && h->pr->plugin->destroy) {
        h->pr->plugin->destroy(h->pr, h->pr->ctx);
    }
    spool_service_conf_free(&h->conf);
    spool_errors_free(&h->errs);
    unlink(h->path);
    free(h);
}

/* Appends a record: value (NUL-terminated), key (NULL = none), up to 2 headers. */
PH_FN void ph_add(spool_batch *b, const char *value, const char *key, const char *h1,
                  const char *v1, const char *h2, const char *v2)
{
    spool_header hs[2];
    uint32_t nh = 0;
    if (h1) {
        hs[nh++] =
            (spool_header){h1, (uint32_t)strlen(h1), (const uint8_t *)v1, (int32_t)strlen(v1)};
    }
    if (h2) {
        hs[nh++] =
            (spool_header){h2, (uint32_t)strlen(h2), (const uint8_t *)v2, (int32_t)strlen(v2)};
    }
    spool_record r = {0};
    r.key = (const uint8_t *)key;
    r.key_len = key ? (int32_t)strlen(key) : -1;
    r.value = (const uint8_t *)value;
    r.value_len = (int32_t)strlen(value);
    r.headers = nh ? hs : NULL;
    r.header_count = nh;
    r.timestamp = 1000;
    assert_int_equal(spool_batch_append(b, &r), 0);
}

PH_FN spool_batch *ph_batch(ph *h)
{
    spool_batch *b = spool_batch_create(h->in);
    assert_non_null(b);
    return b;
}

/* Runs the processor over b as the processor stage does; returns process()'s result. */
PH_FN int ph_process(ph *h, spool_batch *b)
{
    spool__batch_begin_process(b, h->pr);
    int rc = h->pr->plugin->process(h->pr, h->pr->ctx, b);
    assert_int_equal(spool__batch_end_process(b), 0);
    b->proc = NULL;
    return rc;
}

/* Record i's value as a NUL-terminated string in a static buffer ("(null)" for none). */
PH_FN const char *ph_value(spool_batch *b, size_t i)
{
    static char buf[4096];
    spool_record r;
    spool_batch_get(b, i, &r);
    if (!r.value) {
        return "(null)";
    }
    size_t n = (size_t)r.value_len < sizeof(buf) - 1 ? (size_t)r.value_len : sizeof(buf) - 1;
    memcpy(buf, r.value, n);
    buf[n] = '\0';
    return buf;
}

typedef struct ph_metric_q {
    const char *name;   /* metric name */
    const char *labels; /* substring the labels must contain */
    int64_t value;      /* sum over matching samples */
    int found;
} ph_metric_q;

static void ph_metric_fn(void *arg, const spool_metric_sample *s)
{
    ph_metric_q *q = arg;
    if (strcmp(s->name, q->name) == 0 && strstr(s->labels, q->labels)) {
        q->value += s->value;
        q->found = 1;
    }
}

/* The value of metric `name` summed over samples whose labels contain `labels`; -1 if none. */
PH_FN int64_t ph_metric(ph *h, const char *name, const char *labels)
{
    ph_metric_q q = {name, labels, 0, 0};
    spool_metrics_foreach(&h->svc, ph_metric_fn, &q);
    return q.found ? q.value : -1;
}

#endif /* PREDACT_HARNESS_H */
