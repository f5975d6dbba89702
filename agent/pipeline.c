/*
 * pipeline.c: the staged pipeline from inputs to the log (DESIGN.md, "The
 * pipeline"): inputs submit batches into the input queue; the processor
 * stage runs processor plugins and renders record keys; the log writer
 * (writer.c) assigns partitions, appends, group-commits, and acknowledges
 * durable batches. Each stage has its own thread and bounded queue; a full
 * queue blocks the stage before it, down to the inputs, which stop reading.
 * The processor stage runs, for each batch, its input's own chain (the
 * input entry's `processors:`), then the top-level chain (conf->processors
 * without a chain_owner), each processor in order; a processor's failure
 * is counted and logged, and the batch goes on to the next.
 * This file holds the submission path (input threads), the processor stage,
 * and starting and stopping the stages; the lanes they share with the writer
 * are declared in pipeline_int.h.
 *
 * A batch the log refuses is parked by the writer in its topic's FIFO, and
 * submit() holds that topic's inputs (the gate) so what is parked stays
 * bounded. Stopping has one deadline (svc->shutdown_deadline): submits,
 * parked batches and the final commit all end by it; records that miss it
 * from a source without positions are counted per input and named in one
 * final line.
 *
 * Invariants: a batch is owned by exactly one stage at a time; records of
 * one input batch keep their order inside each partition; a batch that is
 * given up never moves its source's position. The writer's own invariants
 * (order of parked batches, positions after records, nothing appended
 * twice) are stated in writer.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline_int.h"

#define KEY_BUF 1024

/* Bytes (batch_weight) each of the two queues holds at most: a few input
 * batches (the tail and socket inputs cut them at 256 KiB). Deeper queues
 * bought no throughput on 2 cores and held ~16 MiB resident (issue 18). */
#define PIPELINE_QUEUE_MAX_BYTES (1u << 20)

/* ---- lanes: topic gates (the submission side) ---- */

static int topic_gated(spool_service *svc, int topic)
{
    spool__wlanes *l = svc->lanes;
    return l && topic >= 0 && (size_t)topic < l->ntopics && atomic_load(&l->blocked[topic]);
}

/* ---- submission (input threads) ---- */

static size_t batch_weight(const spool_batch *b)
{
    return b->alen + b->count * sizeof(spool__brec) + b->hcount * sizeof(spool__bhdr) + 256;
}

/* Waits at most `ms` for the topic's gate to open (or the shutdown clock to
 * start, which ends the wait so the caller sees the deadline). */
static void gate_wait(spool_service *svc, int topic, int64_t ms)
{
    spool__wlanes *l = svc->lanes;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&l->mu);
    if (atomic_load(&l->blocked[topic])) {
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    pthread_mutex_unlock(&l->mu);
}

/* 1 while queued batches will free memory when the writer takes them. */
static int pipeline_holds_batches(void *arg)
{
    spool_service *svc = arg;
    return spool_queue_count(&svc->in_queue) + spool_queue_count(&svc->write_queue) > 0;
}

static int submit(spool_instance *ins, spool_batch *b, int64_t timeout_ms)
{
    spool_service *svc = ins->svc;
    int64_t start = spool_monotonic_ms();
    if (!svc) {
        return -ESHUTDOWN;
    }
    b->topic = ins->topic;
    size_t n = b->count, bytes = b->bytes;
    for (;;) {
        int64_t now = spool_monotonic_ms();
        int64_t slice = 200;
        int64_t dl = spool__deadline_of(svc);
        if (dl && now >= dl) {
            /* The shutdown deadline passed: the caller keeps (and drops) the
             * batch; a source that cannot replay it has lost it. */
            if (!b->durable && b->npos == 0) {
                spool__lost_add(svc, ins, (int64_t)n);
            }
            return -ESHUTDOWN;
        }
        if (dl && dl - now < slice) {
            slice = dl - now;
        }
        if (timeout_ms >= 0) {
            int64_t left = timeout_ms - (now - start);
            if (left <= 0) {
                left = 0;
            }
            slice = left < slice ? left : slice;
        }
        int rc;
        if (topic_gated(svc, b->topic)) {
            /* Its topic refuses appends: hold the input here, so what the
             * writer parks for the topic stays bounded. */
            if (slice > 0) {
                gate_wait(svc, b->topic, slice);
            }
            rc = -EAGAIN;
        } else {
            /* Over memory_limit: the input waits (stops reading) until the
             * writer has freed queued batches (memory.c). */
            rc = spool__mem_wait_room(slice, pipeline_holds_batches, svc);
            if (rc == 0) {
                rc = spool_queue_push(&svc->in_queue, &b->link, batch_weight(b), slice);
            }
        }
        if (rc == 0) {
            spool_count(ins, SPOOL_COUNT_RECORDS_IN, n);
            spool_count(ins, SPOOL_COUNT_BYTES_IN, bytes);
            return 0;
        }
        if (rc == -ESHUTDOWN) {
            if (!b->durable && b->npos == 0) {
                spool__lost_add(svc, ins, (int64_t)n);
            }
            return rc;
        }
        if (timeout_ms >= 0 && spool_monotonic_ms() - start >= timeout_ms) {
            return -EAGAIN;
        }
    }
}

int spool_input_submit(spool_instance *ins, spool_batch *b, int64_t timeout_ms)
{
    if (b->count == 0 && b->npos == 0) {
        spool_batch_destroy(b);
        return 0;
    }
    return submit(ins, b, timeout_ms);
}

int spool_input_submit_durable(spool_instance *ins, spool_batch *b, int64_t timeout_ms)
{
    spool__durable *d = spool__durable_new();
    int64_t start = spool_monotonic_ms();
    int rc;
    if (!d) {
        return -ENOMEM;
    }
    b->durable = d; /* the batch holds the writer's reference */
    rc = submit(ins, b, timeout_ms);
    if (rc < 0) {
        b->durable = NULL;
        spool__durable_release(d); /* the writer's reference */
        spool__durable_release(d); /* ours */
        return rc;
    }
    int64_t left = timeout_ms < 0 ? -1 : timeout_ms - (spool_monotonic_ms() - start);
    rc = spool__durable_wait(d, left < 0 && timeout_ms >= 0 ? 0 : left);
    spool__durable_release(d);
    return rc;
}

int spool_input_get_position(spool_instance *ins, const char *source, void *buf, size_t cap,
                             size_t *len)
{
    spool_service *svc = ins->svc;
    char full[1024];
    if (!svc || !svc->log) {
        return -ENOENT;
    }
    snprintf(full, sizeof(full), "%s/%s", ins->name, source);
    return spool_plog_position_get(svc->log, full, buf, cap, len);
}

typedef struct pos_iter {
    void (*fn)(void *arg, const char *source, const void *pos, size_t len);
    void *arg;
    size_t skip; /* prefix length "<input>/" */
} pos_iter;

static void pos_iter_fn(void *arg, const char *source, const void *pos, size_t len)
{
    pos_iter *it = arg;
    it->fn(it->arg, source + it->skip, pos, len);
}

int spool_input_foreach_position(spool_instance *ins,
                                 void (*fn)(void *arg, const char *source, const void *pos,
                                            size_t len),
                                 void *arg)
{
    spool_service *svc = ins->svc;
    char prefix[600];
    if (!svc || !svc->log) {
        return -ENOENT;
    }
    snprintf(prefix, sizeof(prefix), "%s/", ins->name);
    pos_iter it = {fn, arg, strlen(prefix)};
    return spool_plog_position_foreach(svc->log, prefix, pos_iter_fn, &it);
}

/* ---- processor stage ---- */

/* Renders the input's key template for every record without a key. Keys
 * are rendered from one set of views into a side buffer first, then set,
 * because setting a key may move the batch's arena under the views. */
static int render_keys(spool_instance *ins, spool_batch *b, const char *topic, spool_buf *keys)
{
    spool_record *recs;
    int rc;
    keys->len = 0;
    if ((rc = spool__batch_views(b, &recs)) < 0) {
        return rc;
    }
    size_t *ends = malloc((b->count ? b->count : 1) * sizeof(*ends));
    if (!ends) {
        return -ENOMEM;
    }
    int literal = spool_template_is_literal(ins->key_tpl);
    for (size_t i = 0; i < b->count; i++) {
        if (recs[i].key) {
            ends[i] = SIZE_MAX;
            continue;
        }
        if (!literal || i == 0 || keys->len == 0) {
            size_t start = keys->len;
            if ((rc = spool_buf_reserve(keys, KEY_BUF)) < 0) {
                goto out;
            }
            size_t n = spool_template_render(ins->key_tpl, &recs[i], topic, ins->name,
                                             (char *)keys->data + start, keys->cap - start);
            if (n > keys->cap - start) {
                if ((rc = spool_buf_reserve(keys, n)) < 0) {
                    goto out;
                }
                spool_template_render(ins->key_tpl, &recs[i], topic, ins->name,
                                      (char *)keys->data + start, keys->cap - start);
            }
            keys->len = start + n;
        }
        ends[i] = keys->len;
    }
    size_t prev_end = 0;
    for (size_t i = 0; i < b->count; i++) {
        if (ends[i] == SIZE_MAX) {
            continue;
        }
        /* A literal template renders once: every record shares that key. */
        size_t start = literal ? 0 : prev_end;
        if ((rc = spool_batch_set_key(b, i, keys->data + start, (int32_t)(ends[i] - start))) < 0) {
            goto out;
        }
        prev_end = ends[i];
    }
    rc = 0;
out:
    free(ends);
    return rc;
}

/* Lends b to one processor: counts records in and out, applies its drops
 * and emits; a failure is counted and logged, and the batch goes on. */
static void run_processor(spool_instance *pi, spool_batch *b)
{
    spool_count(pi, SPOOL_COUNT_RECORDS_IN, b->count);
    spool__batch_begin_process(b, pi);
    if (pi->plugin->process(pi, pi->ctx, b) < 0) {
        spool_count(pi, SPOOL_COUNT_ERRORS, 1);
        spool_log_warn(pi,
                       "processing a batch of %zu records failed; the changes it made so far "
                       "are kept",
                       b->count);
    }
    if (spool__batch_end_process(b) < 0) {
        spool_log_error(pi, "out of memory applying drops and emitted records; dropped records "
                            "kept, emitted ones placed at the end of their batch");
    }
    spool_count(pi, SPOOL_COUNT_RECORDS_OUT, b->count);
}

static void *processor_main(void *arg)
{
    spool_service *svc = arg;
    spool_buf keys = {0};
    for (;;) {
        atomic_store(&svc->processor_heartbeat, spool_monotonic_ms());
        spool_queue_item *it = spool_queue_pop(&svc->in_queue, 1000, NULL);
        if (!it) {
            if (spool_queue_drained(&svc->in_queue)) {
                break;
            }
            continue;
        }
        spool_batch *b = (spool_batch *)it;
        size_t weight = it->weight;
        if (b->ins) {
            for (size_t p = 0; p < b->ins->nchain; p++) {
                run_processor(b->ins->chain[p], b);
            }
        }
        for (size_t p = 0; p < svc->conf->nprocessors; p++) {
            if (!svc->conf->processors[p]->chain_owner) {
                run_processor(svc->conf->processors[p], b);
            }
        }
        /* Records sent to other topics: one batch per topic, in order;
         * positions and the durable handle ride on the last one. */
        spool_batch **parts = NULL;
        size_t nparts = 1;
        if (spool__batch_split(b, &parts, &nparts) < 0) {
            spool_log_error(b->ins,
                            "out of memory splitting a batch by topic; its %zu records "
                            "stay in topic %s",
                            b->count, svc->conf->topics[b->topic].name);
        }
        for (size_t k = 0; k < nparts; k++) {
            spool_batch *pb = parts ? parts[k] : b;
            if (pb->ins && pb->ins->key_tpl &&
                render_keys(pb->ins, pb, svc->conf->topics[pb->topic].name, &keys) < 0) {
                spool_log_error(pb->ins, "out of memory rendering record keys; records kept "
                                         "unkeyed");
            }
            /* The writer queue closes only after this thread exits, so this
             * cannot fail with -ESHUTDOWN; it blocks while the writer is full. */
            spool_queue_push(&svc->write_queue, &pb->link, parts ? batch_weight(pb) : weight, -1);
        }
        free(parts);
    }
    spool_queue_close(&svc->write_queue);
    spool_buf_free(&keys);
    return NULL;
}

int spool__pipeline_start(spool_service *svc)
{
    /* memory_limit is one account (memory.c) that batches, the batch pool,
     * output chunks, request bodies and read buffers count against; the two
     * queues also hold at most an eighth of it each, and at most
     * PIPELINE_QUEUE_MAX_BYTES (a few batches are all a stage needs to stay
     * busy; more only adds resident memory). */
    size_t qbytes = (size_t)svc->conf->memory_limit / 8;
    if (qbytes > PIPELINE_QUEUE_MAX_BYTES) {
        qbytes = PIPELINE_QUEUE_MAX_BYTES;
    }
    spool__mem_init(svc->conf->memory_limit);
    spool__wlanes *l = calloc(1, sizeof(*l));
    if (!l) {
        return -ENOMEM;
    }
    l->ntopics = svc->conf->ntopics;
    l->blocked = calloc(l->ntopics ? l->ntopics : 1, sizeof(*l->blocked));
    if (!l->blocked) {
        free(l);
        return -ENOMEM;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    svc->lanes = l;
    spool_queue_init(&svc->in_queue, 64, qbytes);
    spool_queue_init(&svc->write_queue, 64, qbytes);
    svc->in_queue.depth =
        spool__metric_register("spool_queue_depth", "Batches queued", "stage=\"processors\"", 1);
    svc->in_queue.depth_bytes =
        spool__metric_register("spool_queue_bytes", "Bytes queued", "stage=\"processors\"", 1);
    svc->write_queue.depth =
        spool__metric_register("spool_queue_depth", "Batches queued", "stage=\"log_writer\"", 1);
    svc->write_queue.depth_bytes =
        spool__metric_register("spool_queue_bytes", "Bytes queued", "stage=\"log_writer\"", 1);
    atomic_store(&svc->writer_heartbeat, spool_monotonic_ms());
    atomic_store(&svc->processor_heartbeat, spool_monotonic_ms());
    if (pthread_create(&svc->writer_thread, NULL, spool__writer_main, svc) != 0) {
        l->closed = 1;
        return -EAGAIN;
    }
    svc->writer_running = 1;
    if (pthread_create(&svc->processor_thread, NULL, processor_main, svc) != 0) {
        spool_queue_close(&svc->write_queue);
        return -EAGAIN;
    }
    svc->processor_running = 1;
    return 0;
}

void spool__pipeline_begin_stop(spool_service *svc)
{
    int64_t zero = 0;
    atomic_compare_exchange_strong(&svc->shutdown_deadline, &zero,
                                   spool_monotonic_ms() + svc->conf->shutdown_timeout);
    spool__wlanes *l = svc->lanes;
    if (l) {
        pthread_mutex_lock(&l->mu);
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
}

/* The one final line naming every input that lost records (and why). */
static void report_lost(spool_service *svc)
{
    spool__wlanes *l = svc->lanes;
    char line[2048];
    size_t at = 0;
    int64_t total = 0;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->nlost; i++) {
        const spool__lost_entry *e = &l->lost[i];
        int n = snprintf(line + at, sizeof(line) - at, "%s%lld records from input %s (%s)",
                         i ? ", " : "", (long long)e->n, e->input, e->type);
        if (n > 0) {
            at = at + (size_t)n < sizeof(line) ? at + (size_t)n : sizeof(line) - 1;
        }
        total += e->n;
    }
    pthread_mutex_unlock(&l->mu);
    if (total) {
        spool__log_unlimited(SPOOL_LOG_ERROR,
                             "shutdown: %s were accepted but not written to the "
                             "log: their topic refused appends (full, or the disk) until the "
                             "shutdown deadline (shutdown_timeout %llds) and their sources cannot "
                             "replay them",
                             line, (long long)(svc->conf->shutdown_timeout / 1000));
    }
}

void spool__pipeline_finish(spool_service *svc)
{
    spool__pipeline_begin_stop(svc);
    spool_queue_close(&svc->in_queue);
    if (svc->processor_running) {
        pthread_join(svc->processor_thread, NULL);
        svc->processor_running = 0;
    } else if (svc->lanes) {
        spool_queue_close(&svc->write_queue);
    }
    if (svc->writer_running) {
        pthread_join(svc->writer_thread, NULL);
        svc->writer_running = 0;
    }
    if (svc->lanes) {
        report_lost(svc);
    }
}

void spool__pipeline_free(spool_service *svc)
{
    spool__wlanes *l = svc->lanes;
    if (!l) {
        return;
    }
    for (size_t i = 0; i < l->nlost; i++) {
        /* Retired, not freed: a reload's next run continues the count. */
        char labels[300];
        snprintf(labels, sizeof(labels), "input=\"%s\"", l->lost[i].input);
        spool__metric_unregister_labels(labels);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->blocked);
    free(l->lost);
    free(l);
    svc->lanes = NULL;
}
