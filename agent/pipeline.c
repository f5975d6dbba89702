/*
 * pipeline.c: the staged pipeline from inputs to the log (DESIGN.md, "The
 * pipeline"): inputs submit batches into the input queue; the processor
 * stage runs processor plugins and renders record keys; the log writer
 * assigns partitions, appends, group-commits, and acknowledges durable
 * batches. Each stage has its own thread and bounded queue; a full queue
 * blocks the stage before it, down to the inputs, which stop reading.
 *
 * Invariants: a batch is owned by exactly one stage at a time; records of
 * one input batch keep their order inside each partition; positions
 * attached to a batch are recorded in the log only after every record of
 * that batch was appended, so the commit that makes them durable also
 * makes their records durable.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

#define WRITER_COMMIT_BYTES (8u << 20) /* commit at least every 8 MiB appended */
#define WRITER_COMMIT_BATCHES 256      /* ... or every 256 batches */
#define KEY_BUF 1024

spool_service *spool__current;

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- submission (input threads) ---- */

static size_t batch_weight(const spool_batch *b)
{
    return b->alen + b->count * sizeof(spool__brec) + b->hcount * sizeof(spool__bhdr) + 256;
}

static int submit(spool_instance *ins, spool_batch *b, int64_t timeout_ms)
{
    spool_service *svc = ins->svc ? ins->svc : spool__current;
    int64_t start = spool_monotonic_ms();
    if (!svc) {
        return -ESHUTDOWN;
    }
    b->topic = ins->topic;
    size_t n = b->count, bytes = b->bytes;
    for (;;) {
        int64_t slice = 200;
        if (timeout_ms >= 0) {
            int64_t left = timeout_ms - (spool_monotonic_ms() - start);
            if (left <= 0) {
                left = 0;
            }
            slice = left < slice ? left : slice;
        }
        int rc = spool_queue_push(&svc->in_queue, &b->link, batch_weight(b), slice);
        if (rc == 0) {
            spool_count(ins, SPOOL_COUNT_RECORDS_IN, n);
            spool_count(ins, SPOOL_COUNT_BYTES_IN, bytes);
            return 0;
        }
        if (rc == -ESHUTDOWN) {
            return rc;
        }
        if (timeout_ms >= 0 && spool_monotonic_ms() - start >= timeout_ms) {
            return -EAGAIN;
        }
        if (atomic_load(&ins->stopping) &&
            spool_monotonic_ms() - start > svc->conf->shutdown_timeout) {
            return -ESHUTDOWN;
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
    spool_service *svc = ins->svc ? ins->svc : spool__current;
    char full[1024];
    if (!svc || !svc->log) {
        return -ENOENT;
    }
    snprintf(full, sizeof(full), "%s/%s", ins->name, source);
    return spool_log_position_get(svc->log, full, buf, cap, len);
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
    spool_service *svc = ins->svc ? ins->svc : spool__current;
    char prefix[600];
    if (!svc || !svc->log) {
        return -ENOENT;
    }
    snprintf(prefix, sizeof(prefix), "%s/", ins->name);
    pos_iter it = {fn, arg, strlen(prefix)};
    return spool_log_position_foreach(svc->log, prefix, pos_iter_fn, &it);
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
        for (size_t p = 0; p < svc->conf->nprocessors; p++) {
            spool_instance *pi = svc->conf->processors[p];
            spool_count(pi, SPOOL_COUNT_RECORDS_IN, b->count);
            if (pi->plugin->process(pi, pi->ctx, b) < 0) {
                spool_count(pi, SPOOL_COUNT_ERRORS, 1);
                spool_log_warn(pi, "processing a batch of %zu records failed; records kept "
                               "unchanged", b->count);
            }
            spool_count(pi, SPOOL_COUNT_RECORDS_OUT, b->count);
        }
        if (b->ins && b->ins->key_tpl &&
            render_keys(b->ins, b, svc->conf->topics[b->topic].name, &keys) < 0) {
            spool_log_error(b->ins, "out of memory rendering record keys; records kept unkeyed");
        }
        /* The writer queue closes only after this thread exits, so this
         * cannot fail with -ESHUTDOWN; it blocks while the writer is full. */
        spool_queue_push(&svc->write_queue, &b->link, it->weight, -1);
    }
    spool_queue_close(&svc->write_queue);
    spool_buf_free(&keys);
    return NULL;
}

/* ---- log writer stage ---- */

typedef struct writer_state {
    spool_service *svc;
    int32_t *sticky;          /* per topic: the unkeyed partition of the current batch */
    spool_record *grouped;    /* records reordered by partition */
    int32_t *parts;           /* partition of each record */
    size_t grouped_cap;
    spool__durable **pending; /* acknowledged at the next commit */
    size_t npending, pending_cap;
    size_t batches_since_commit;
    int64_t next_commit_ms;   /* monotonic deadline, -1 = none */
    int blocked_logged;
    int append_failing;       /* an append is being retried */
    int commit_failing;       /* the last commit failed */
} writer_state;

static void writer_set_blocked(writer_state *w, int rc, const char *what)
{
    spool_service *svc = w->svc;
    if (!w->blocked_logged) {
        snprintf(svc->writer_error, sizeof(svc->writer_error), "%.200s: %s; inputs are paused until "
                 "it clears", what, strerror(-rc));
        spool_log_error(NULL, "log writer: %s", svc->writer_error);
        w->blocked_logged = 1;
    }
    atomic_store(&svc->writer_blocked, 1);
}

static void writer_clear_blocked(writer_state *w)
{
    if (w->blocked_logged) {
        spool_log_info(NULL, "log writer: appends succeed again; inputs resume");
        w->blocked_logged = 0;
    }
    atomic_store(&w->svc->writer_blocked, 0);
}

static int writer_commit(writer_state *w, int force, int idle)
{
    spool_service *svc = w->svc;
    int64_t next = -1;
    int rc = spool_log_commit(svc->log, force, idle, &next);
    if (rc < 0) {
        w->commit_failing = 1;
        writer_set_blocked(w, rc, "commit failed");
        return rc;
    }
    if (w->commit_failing) {
        /* A failed commit alone never gets an append failure to clear it. */
        w->commit_failing = 0;
        if (!w->append_failing) {
            writer_clear_blocked(w);
        }
    }
    w->next_commit_ms = next >= 0 ? spool_monotonic_ms() + next : -1;
    for (size_t i = 0; i < w->npending; i++) {
        spool__durable_done(w->pending[i], 0);
        spool__durable_release(w->pending[i]);
    }
    w->npending = 0;
    w->batches_since_commit = 0;
    return 0;
}

/* Appends a run of records to one partition, retrying while the log
 * refuses (disk full, I/O error, topic full). Returns 0, or -ESHUTDOWN if
 * it gave up because the service is stopping and the timeout passed. */
static int writer_append(writer_state *w, int topic, int32_t p, const spool_record *recs,
                         size_t n)
{
    spool_service *svc = w->svc;
    int64_t backoff = 50, first_fail = 0;
    for (;;) {
        int64_t base;
        int rc = spool_log_append(svc->log, topic, p, recs, n, &base);
        if (rc == 0) {
            if (first_fail) {
                w->append_failing = 0;
                if (!w->commit_failing) {
                    writer_clear_blocked(w);
                }
            }
            return 0;
        }
        if (!first_fail) {
            first_fail = spool_monotonic_ms();
            w->append_failing = 1;
        }
        const char *what = rc == -EAGAIN ? "topic is full (on_full: block) and outputs have not "
                                           "delivered its oldest segment"
                                         : "appending to the log failed";
        char buf[300];
        snprintf(buf, sizeof(buf), "%s (topic %s, partition %d)", what,
                 svc->conf->topics[topic].name, p);
        writer_set_blocked(w, rc == -EAGAIN ? -ENOSPC : rc, buf);
        /* Keep what was appended before durable while we wait. */
        if (w->npending || w->batches_since_commit) {
            writer_commit(w, 0, 1);
        }
        spool_log_retention_run(svc->log, 1);
        if (atomic_load(&svc->stopping) &&
            spool_monotonic_ms() - first_fail > svc->conf->shutdown_timeout) {
            spool_log_error(NULL, "log writer: giving up on %zu records of topic %s at shutdown "
                            "(%s); inputs that keep positions (tail, journald) will read them "
                            "again at the next start", n, svc->conf->topics[topic].name,
                            strerror(-rc));
            w->append_failing = 0;
            return -ESHUTDOWN;
        }
        atomic_store(&svc->writer_heartbeat, spool_monotonic_ms());
        sleep_ms(backoff);
        /* A full topic frees up as soon as an output moves on: look again
         * often. A full or failing disk gets longer pauses. */
        int64_t cap = rc == -EAGAIN ? 100 : 2000;
        backoff = backoff * 2 > cap ? cap : backoff * 2;
    }
}

static int ensure_cap(writer_state *w, size_t n)
{
    if (n <= w->grouped_cap) {
        return 0;
    }
    size_t cap = w->grouped_cap ? w->grouped_cap : 1024;
    while (cap < n) {
        cap *= 2;
    }
    spool_record *g = realloc(w->grouped, cap * sizeof(*g));
    if (!g) {
        return -ENOMEM;
    }
    w->grouped = g;
    int32_t *pp = realloc(w->parts, cap * sizeof(*pp));
    if (!pp) {
        return -ENOMEM;
    }
    w->parts = pp;
    w->grouped_cap = cap;
    return 0;
}

static int writer_batch(writer_state *w, spool_batch *b)
{
    spool_service *svc = w->svc;
    const spool_topic_conf *tc = &svc->conf->topics[b->topic];
    int32_t nparts = tc->partitions;
    spool_record *recs;
    int rc = 0;

    if (b->count) {
        if (spool__batch_views(b, &recs) < 0 || ensure_cap(w, b->count) < 0) {
            spool_log_error(b->ins, "out of memory in the log writer; batch of %zu records "
                            "not written", b->count);
            return -ENOMEM;
        }
        if (nparts == 1) {
            rc = writer_append(w, b->topic, 0, recs, b->count);
        } else {
            /* Unkeyed records of one batch stick to one partition; the next
             * batch moves on (Kafka's sticky partitioner, per batch). */
            int32_t sticky = w->sticky[b->topic];
            w->sticky[b->topic] = (sticky + 1) % nparts;
            size_t counts[4096 + 1];
            memset(counts, 0, sizeof(size_t) * (size_t)(nparts + 1));
            for (size_t i = 0; i < b->count; i++) {
                int32_t p = recs[i].key ? spool_partition_for_key(recs[i].key,
                                                                  (size_t)recs[i].key_len, nparts)
                                        : sticky;
                w->parts[i] = p;
                counts[p + 1]++;
            }
            for (int32_t p = 0; p < nparts; p++) {
                counts[p + 1] += counts[p];
            }
            size_t starts[4096 + 1];
            memcpy(starts, counts, sizeof(size_t) * (size_t)(nparts + 1));
            for (size_t i = 0; i < b->count; i++) {
                w->grouped[counts[w->parts[i]]++] = recs[i];
            }
            for (int32_t p = 0; p < nparts && rc == 0; p++) {
                size_t n = starts[p + 1] - starts[p];
                if (n) {
                    rc = writer_append(w, b->topic, p, w->grouped + starts[p], n);
                }
            }
        }
    }
    if (rc < 0) {
        return rc;
    }
    for (size_t i = 0; i < b->npos; i++) {
        if (spool_log_position_set(svc->log, b->pos[i].source, b->pos[i].pos, b->pos[i].len) <
            0) {
            spool_log_error(b->ins, "out of memory recording a source position");
        }
    }
    if (b->durable) {
        if (w->npending == w->pending_cap) {
            size_t nc = w->pending_cap ? w->pending_cap * 2 : 64;
            spool__durable **np = realloc(w->pending, nc * sizeof(*np));
            if (!np) {
                spool__durable_done(b->durable, -ENOMEM);
                return 0;
            }
            w->pending = np;
            w->pending_cap = nc;
        }
        w->pending[w->npending++] = b->durable;
        b->durable = NULL; /* the writer's reference moves to pending */
    }
    w->batches_since_commit++;
    return 0;
}

static void *writer_main(void *arg)
{
    spool_service *svc = arg;
    writer_state w = {.svc = svc, .next_commit_ms = -1};
    w.sticky = calloc(svc->conf->ntopics ? svc->conf->ntopics : 1, sizeof(*w.sticky));
    for (;;) {
        atomic_store(&svc->writer_heartbeat, spool_monotonic_ms());
        spool_queue_item *it = spool_queue_pop(&svc->write_queue, 0, NULL);
        if (!it) {
            /* Out of work: commit now, so a quiet host ships at once. */
            if (w.batches_since_commit || w.npending || w.next_commit_ms >= 0) {
                writer_commit(&w, 0, 1);
            }
            spool_log_retention_run(svc->log, 0);
            int64_t wait = 1000;
            if (w.next_commit_ms >= 0) {
                wait = w.next_commit_ms - spool_monotonic_ms();
                wait = wait < 1 ? 1 : wait > 1000 ? 1000 : wait;
            }
            it = spool_queue_pop(&svc->write_queue, wait, NULL);
            if (!it) {
                if (spool_queue_drained(&svc->write_queue)) {
                    break;
                }
                continue;
            }
        }
        spool_batch *b = (spool_batch *)it;
        int rc = writer_batch(&w, b);
        if (rc < 0 && b->durable) {
            spool__durable_done(b->durable, rc);
        }
        spool_batch_destroy(b);
        if (w.batches_since_commit >= WRITER_COMMIT_BATCHES ||
            spool_log_uncommitted_bytes(svc->log) >= WRITER_COMMIT_BYTES) {
            writer_commit(&w, 0, 0);
        }
    }
    /* Final commit: everything accepted becomes durable before exit. */
    for (int tries = 0; tries < 50; tries++) {
        if (writer_commit(&w, 1, 1) == 0) {
            break;
        }
        sleep_ms(100);
    }
    for (size_t i = 0; i < w.npending; i++) {
        spool__durable_done(w.pending[i], -EIO);
        spool__durable_release(w.pending[i]);
    }
    free(w.pending);
    free(w.sticky);
    free(w.grouped);
    free(w.parts);
    atomic_store(&svc->writer_done, 1);
    spool_log_wake(svc->log);
    return NULL;
}

int spool__pipeline_start(spool_service *svc)
{
    /* memory_limit bounds what the service holds in memory: the two queues
     * get an eighth of it each (a few batches are all a stage needs to stay
     * busy), and the rest is for the inputs' read buffers and the outputs'
     * chunks (max_bytes * max_in_flight each) and the batch pool. */
    size_t qbytes = (size_t)svc->conf->memory_limit / 8;
    spool_queue_init(&svc->in_queue, 64, qbytes);
    spool_queue_init(&svc->write_queue, 64, qbytes);
    svc->in_queue.depth = spool__metric_register("spool_queue_depth", "Batches queued",
                                                 "stage=\"processors\"", 1);
    svc->in_queue.depth_bytes = spool__metric_register("spool_queue_bytes", "Bytes queued",
                                                       "stage=\"processors\"", 1);
    svc->write_queue.depth = spool__metric_register("spool_queue_depth", "Batches queued",
                                                    "stage=\"log_writer\"", 1);
    svc->write_queue.depth_bytes = spool__metric_register("spool_queue_bytes", "Bytes queued",
                                                          "stage=\"log_writer\"", 1);
    atomic_store(&svc->writer_heartbeat, spool_monotonic_ms());
    atomic_store(&svc->processor_heartbeat, spool_monotonic_ms());
    if (pthread_create(&svc->writer_thread, NULL, writer_main, svc) != 0) {
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

void spool__pipeline_finish(spool_service *svc)
{
    spool_queue_close(&svc->in_queue);
    if (svc->processor_running) {
        pthread_join(svc->processor_thread, NULL);
        svc->processor_running = 0;
    } else {
        spool_queue_close(&svc->write_queue);
    }
    if (svc->writer_running) {
        pthread_join(svc->writer_thread, NULL);
        svc->writer_running = 0;
    }
}
