/*
 * pipeline.c: the staged pipeline from inputs to the log (DESIGN.md, "The
 * pipeline"): inputs submit batches into the input queue; the processor
 * stage runs processor plugins and renders record keys; the log writer
 * assigns partitions, appends, group-commits, and acknowledges durable
 * batches. Each stage has its own thread and bounded queue; a full queue
 * blocks the stage before it, down to the inputs, which stop reading.
 *
 * The writer never waits on one topic: a batch the log refuses (topic full
 * under on_full: block, disk full, I/O error, out of memory) is parked in
 * its topic's FIFO and retried on a short timer while other topics go on,
 * and submit() holds that topic's inputs (the gate) so what is parked stays
 * bounded. Dead letters come through a direct lane (the write queue's urgent
 * lane), served ahead of ingest and answered at once, never parked. Stopping
 * has one deadline (svc->shutdown_deadline): submits, parked batches and the
 * final commit all end by it; records that miss it from a source without
 * positions are counted per input and named in one final line.
 *
 * Invariants: a batch is owned by exactly one stage at a time; records of
 * one input batch keep their order inside each partition, and batches of a
 * topic are appended in the order the writer received them (parking keeps
 * it); positions attached to a batch are recorded in the log only after
 * every record of that batch was appended, so the commit that makes them
 * durable also makes their records durable, and a batch that is given up
 * never moves its source's position; no part of a batch is appended twice.
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
_Atomic int spool__writer_enomem[2];

/* The test hook: 1 if this step must fail as if out of memory. */
static int injected_enomem(int k)
{
    int v = atomic_load(&spool__writer_enomem[k]);
    while (v > 0) {
        if (atomic_compare_exchange_weak(&spool__writer_enomem[k], &v, v - 1)) {
            return 1;
        }
    }
    return 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- lanes: direct lane state, topic gates, lost records ---- */

typedef struct lost_entry {
    char input[200];
    char type[64];
    int64_t n;
    spool_counter *metric; /* spool_shutdown_lost_records_total{input=...} */
} lost_entry;

typedef struct spool__wlanes spool__wlanes;

struct spool__wlanes {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a topic gate opened, or the shutdown clock started */
    int closed;             /* the writer is gone: direct calls answer -ESHUTDOWN */
    size_t ntopics;
    _Atomic int *blocked;   /* per topic: 1 while its batches are parked (gates submit) */
    lost_entry *lost;       /* per input: records accepted but never written */
    size_t nlost, lost_cap;
};

static int64_t deadline_of(spool_service *svc)
{
    return atomic_load(&svc->shutdown_deadline);
}

static int deadline_passed(spool_service *svc)
{
    int64_t dl = deadline_of(svc);
    return dl && spool_monotonic_ms() >= dl;
}

static int topic_gated(spool_service *svc, int topic)
{
    spool__wlanes *l = svc->lanes;
    return l && topic >= 0 && (size_t)topic < l->ntopics && atomic_load(&l->blocked[topic]);
}

/* Counts records of a source that cannot replay them (no positions) that
 * will never reach the log. Any thread. */
static void lost_add_named(spool_service *svc, const char *name, const char *type, int64_t n)
{
    spool__wlanes *l = svc->lanes;
    if (!l || n <= 0) {
        return;
    }
    pthread_mutex_lock(&l->mu);
    lost_entry *e = NULL;
    for (size_t i = 0; i < l->nlost; i++) {
        if (strcmp(l->lost[i].input, name) == 0) {
            e = &l->lost[i];
        }
    }
    if (!e && l->nlost == l->lost_cap) {
        size_t nc = l->lost_cap ? l->lost_cap * 2 : 8;
        lost_entry *ne = realloc(l->lost, nc * sizeof(*ne));
        if (ne) {
            l->lost = ne;
            l->lost_cap = nc;
        }
    }
    if (!e && l->nlost < l->lost_cap) {
        e = &l->lost[l->nlost++];
        memset(e, 0, sizeof(*e));
        snprintf(e->input, sizeof(e->input), "%s", name);
        snprintf(e->type, sizeof(e->type), "%s", type);
    }
    if (e && !e->metric) {
        char labels[300];
        snprintf(labels, sizeof(labels), "input=\"%s\"", name);
        e->metric = spool__metric_register("spool_shutdown_lost_records_total",
                                           "Records accepted from a source that cannot replay "
                                           "them and not written to the log at shutdown",
                                           labels, 0);
    }
    if (!e && l->nlost) {
        e = &l->lost[0]; /* out of memory: still counted, under the first name */
    }
    if (e) {
        e->n += n;
        if (e->metric) {
            atomic_fetch_add(&e->metric->value, n);
        }
    }
    pthread_mutex_unlock(&l->mu);
}

static void lost_add(spool_service *svc, const spool_instance *ins, int64_t n)
{
    lost_add_named(svc, ins ? ins->name : "?", ins && ins->plugin ? ins->plugin->name : "?", n);
}

/* A batch that will not be written: its records count as lost unless its
 * source can replay them (it carries positions, which then stay where they
 * were) or its submitter is told (a durable submit). */
static void batch_abandon(spool_service *svc, spool_batch *b, int rc)
{
    if (b->durable) {
        spool__durable_done(b->durable, rc);
    } else if (b->npos == 0) {
        lost_add(svc, b->ins, (int64_t)b->count);
    }
    spool_batch_destroy(b);
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
    spool_service *svc = ins->svc ? ins->svc : spool__current;
    int64_t start = spool_monotonic_ms();
    if (!svc) {
        return -ESHUTDOWN;
    }
    b->topic = ins->topic;
    size_t n = b->count, bytes = b->bytes;
    for (;;) {
        int64_t now = spool_monotonic_ms();
        int64_t slice = 200;
        int64_t dl = deadline_of(svc);
        if (dl && now >= dl) {
            /* The shutdown deadline passed: the caller keeps (and drops) the
             * batch; a source that cannot replay it has lost it. */
            if (!b->durable && b->npos == 0) {
                lost_add(svc, ins, (int64_t)n);
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
                lost_add(svc, ins, (int64_t)n);
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

/*
 * The writer never waits on one topic: a batch the log refuses (topic full
 * under on_full: block, disk full, I/O error, out of memory) is parked at
 * the head of its topic's FIFO with how far it got, every later batch of
 * that topic queues behind it (order kept), the topic's inputs are gated in
 * submit(), and the head is retried on a short timer while other topics and
 * the direct lane are served. Only the head of a FIFO can be partly written.
 */

#define PARK_RETRY_MIN_MS 20
#define PARK_RETRY_FULL_MS 100   /* topic full or no memory: an output may free it any time */
#define PARK_RETRY_DISK_MS 1000  /* disk full or failing */
#define PARK_BURST 64            /* parked batches written per topic per pass */

typedef struct wprog {
    int32_t sticky;    /* unkeyed records' partition, -1 = not chosen yet */
    int32_t next_part; /* partitions below this are appended */
    size_t next_pos;   /* positions below this are recorded */
} wprog;

typedef struct wtopic {
    spool_batch *head, *tail; /* parked FIFO (link.next) */
    size_t nparked;
    wprog prog;               /* progress of head */
    int64_t retry_at;         /* monotonic ms */
    int64_t backoff;          /* ms */
    int refusing;             /* the log refuses this topic (parked or a direct append failed) */
    int rc;                   /* the refusal */
    int32_t partition;        /* where */
} wtopic;

typedef struct writer_state {
    spool_service *svc;
    int32_t *sticky;          /* per topic: the unkeyed partition of the next batch */
    wtopic *topics;
    size_t ntopics;
    spool_record *grouped;    /* records reordered by partition */
    int32_t *parts;           /* partition of each record */
    size_t grouped_cap;
    spool__durable **pending; /* acknowledged at the next commit */
    size_t npending, pending_cap;
    size_t batches_since_commit;
    int64_t next_commit_ms;   /* monotonic deadline, -1 = none */
    int commit_failing;       /* the last commit failed */
    int commit_rc;
    lost_entry *uncommitted;  /* per input: records appended since the last commit that */
    size_t nuncommitted, uncommitted_cap; /* no source can replay */
    int health_shown;         /* writer_blocked is set */
} writer_state;

static const char *refusal(int rc)
{
    switch (rc) {
    case -EAGAIN:
        return "topic is full (on_full: block) and outputs have not delivered its oldest "
               "segment";
    case -ENOMEM:
        return "out of memory in the log writer";
    case -ENOSPC:
        return "the disk is full";
    default:
        return "appending to the log failed";
    }
}

/* Rebuilds the health text from the writer's state (on transitions only). */
static void writer_health(writer_state *w)
{
    spool_service *svc = w->svc;
    char buf[sizeof(svc->writer_error)];
    size_t nref = 0, first = 0;
    for (size_t t = 0; t < w->ntopics; t++) {
        if (w->topics[t].refusing && nref++ == 0) {
            first = t;
        }
    }
    if (w->commit_failing) {
        snprintf(buf, sizeof(buf), "commit failed: %s; inputs wait until it clears",
                 strerror(-w->commit_rc));
    } else if (nref) {
        const wtopic *wt = &w->topics[first];
        int n = snprintf(buf, sizeof(buf), "topic %s: %s (partition %d): %s", 
                         svc->conf->topics[first].name, refusal(wt->rc), wt->partition,
                         wt->rc == -ENOMEM || wt->rc == -EAGAIN ? "appends to it wait"
                                                               : strerror(-wt->rc));
        if (nref > 1 && n > 0 && (size_t)n < sizeof(buf)) {
            snprintf(buf + n, sizeof(buf) - (size_t)n, "; %zu more topics refused", nref - 1);
        }
    } else {
        buf[0] = '\0';
    }
    if (buf[0]) {
        memcpy(svc->writer_error, buf, sizeof(buf));
        atomic_store(&svc->writer_blocked, 1);
        w->health_shown = 1;
    } else if (w->health_shown) {
        atomic_store(&svc->writer_blocked, 0);
        w->health_shown = 0;
    }
}

static void topic_refusing(writer_state *w, int topic, int rc, int32_t partition)
{
    wtopic *wt = &w->topics[topic];
    if (!wt->refusing || wt->rc != rc) {
        spool_log_error(NULL, "log writer: topic %s, partition %d: %s%s%s; other topics go on",
                        w->svc->conf->topics[topic].name, partition, refusal(rc),
                        rc == -EAGAIN || rc == -ENOMEM ? "" : ": ",
                        rc == -EAGAIN || rc == -ENOMEM ? "" : strerror(-rc));
        wt->refusing = 1;
        wt->rc = rc;
        wt->partition = partition;
        writer_health(w);
    }
}

static void topic_accepting(writer_state *w, int topic)
{
    wtopic *wt = &w->topics[topic];
    if (wt->refusing && !wt->head) {
        spool_log_info(NULL, "log writer: topic %s: appends succeed again; its inputs resume",
                       w->svc->conf->topics[topic].name);
        wt->refusing = 0;
        writer_health(w);
    }
}

static void uncommitted_add(writer_state *w, const spool_batch *b)
{
    if (b->npos || b->durable || !b->count) {
        return;
    }
    const char *name = b->ins ? b->ins->name : "?";
    for (size_t i = 0; i < w->nuncommitted; i++) {
        if (strcmp(w->uncommitted[i].input, name) == 0) {
            w->uncommitted[i].n += (int64_t)b->count;
            return;
        }
    }
    if (w->nuncommitted == w->uncommitted_cap) {
        size_t nc = w->uncommitted_cap ? w->uncommitted_cap * 2 : 8;
        lost_entry *ne = realloc(w->uncommitted, nc * sizeof(*ne));
        if (!ne) {
            return; /* only the count of a failed final commit is at stake */
        }
        w->uncommitted = ne;
        w->uncommitted_cap = nc;
    }
    lost_entry *e = &w->uncommitted[w->nuncommitted++];
    memset(e, 0, sizeof(*e));
    snprintf(e->input, sizeof(e->input), "%s", name);
    snprintf(e->type, sizeof(e->type), "%s", b->ins && b->ins->plugin ? b->ins->plugin->name
                                                                       : "?");
    e->n = (int64_t)b->count;
}

static int writer_commit(writer_state *w, int force, int idle)
{
    spool_service *svc = w->svc;
    int64_t next = -1;
    int rc = spool_log_commit(svc->log, force, idle, &next);
    if (rc < 0) {
        if (!w->commit_failing || w->commit_rc != rc) {
            spool_log_error(NULL, "log writer: commit failed: %s; appended records wait until "
                            "it works", strerror(-rc));
            w->commit_failing = 1;
            w->commit_rc = rc;
            writer_health(w);
        }
        return rc;
    }
    if (w->commit_failing) {
        spool_log_info(NULL, "log writer: commits succeed again");
        w->commit_failing = 0;
        writer_health(w);
    }
    w->next_commit_ms = next >= 0 ? spool_monotonic_ms() + next : -1;
    for (size_t i = 0; i < w->npending; i++) {
        spool__durable_done(w->pending[i], 0);
        spool__durable_release(w->pending[i]);
    }
    w->npending = 0;
    w->batches_since_commit = 0;
    w->nuncommitted = 0;
    return 0;
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

static int ensure_pending(writer_state *w)
{
    if (w->npending < w->pending_cap) {
        return 0;
    }
    size_t nc = w->pending_cap ? w->pending_cap * 2 : 64;
    spool__durable **np = realloc(w->pending, nc * sizeof(*np));
    if (!np) {
        return -ENOMEM;
    }
    w->pending = np;
    w->pending_cap = nc;
    return 0;
}

/*
 * Writes what is left of b (from *pg): its records, partition by partition,
 * then its positions. 0 = all written; else the refusal, with *pg telling
 * how far it got (nothing is ever written twice) and *where the partition.
 */
static int writer_batch(writer_state *w, spool_batch *b, wprog *pg, int32_t *where)
{
    spool_service *svc = w->svc;
    int32_t nparts = svc->conf->topics[b->topic].partitions;
    spool_record *recs;
    int rc;

    *where = pg->next_part < nparts ? pg->next_part : 0;
    if (b->durable && ensure_pending(w) < 0) {
        return -ENOMEM;
    }
    if (b->count && pg->next_part < nparts) {
        if (injected_enomem(0) || spool__batch_views(b, &recs) < 0 ||
            ensure_cap(w, b->count) < 0) {
            return -ENOMEM;
        }
        if (pg->sticky < 0) {
            /* Unkeyed records of one batch stick to one partition; the next
             * batch moves on (Kafka's sticky partitioner, per batch). */
            pg->sticky = w->sticky[b->topic];
            w->sticky[b->topic] = (pg->sticky + 1) % nparts;
        }
        size_t counts[4096 + 1], starts[4096 + 1];
        memset(counts, 0, sizeof(size_t) * (size_t)(nparts + 1));
        for (size_t i = 0; i < b->count; i++) {
            int32_t p = nparts == 1 ? 0
                        : recs[i].key ? spool_partition_for_key(recs[i].key,
                                                                (size_t)recs[i].key_len, nparts)
                                      : pg->sticky;
            w->parts[i] = p;
            counts[p + 1]++;
        }
        for (int32_t p = 0; p < nparts; p++) {
            counts[p + 1] += counts[p];
        }
        memcpy(starts, counts, sizeof(size_t) * (size_t)(nparts + 1));
        for (size_t i = 0; i < b->count; i++) {
            w->grouped[counts[w->parts[i]]++] = recs[i];
        }
        for (int32_t p = pg->next_part; p < nparts; p++) {
            size_t n = starts[p + 1] - starts[p];
            int64_t base;
            if (n && (rc = spool_log_append(svc->log, b->topic, p, w->grouped + starts[p], n,
                                            &base)) < 0) {
                pg->next_part = p;
                *where = p;
                return rc == -ENOSPC || rc == -EAGAIN || rc == -ENOMEM || rc == -EDQUOT
                           ? (rc == -EDQUOT ? -ENOSPC : rc) : -EIO;
            }
        }
        pg->next_part = nparts;
        uncommitted_add(w, b);
    }
    pg->next_part = nparts;
    /* Positions only after every record of the batch was appended: the
     * commit that makes them durable makes their records durable too. */
    for (; pg->next_pos < b->npos; pg->next_pos++) {
        const spool__bpos *ps = &b->pos[pg->next_pos];
        if (injected_enomem(1) || spool_log_position_set(svc->log, ps->source, ps->pos,
                                                         ps->len) < 0) {
            return -ENOMEM;
        }
    }
    if (b->durable) {
        w->pending[w->npending++] = b->durable;
        b->durable = NULL; /* the writer's reference moves to pending */
    }
    w->batches_since_commit++;
    return 0;
}

static void park_retry_in(wtopic *wt, int rc, int fresh)
{
    int64_t cap = rc == -EAGAIN || rc == -ENOMEM ? PARK_RETRY_FULL_MS : PARK_RETRY_DISK_MS;
    if (fresh || wt->backoff < PARK_RETRY_MIN_MS) {
        wt->backoff = PARK_RETRY_MIN_MS;
    } else {
        wt->backoff = wt->backoff * 2 > cap ? cap : wt->backoff * 2;
    }
    wt->retry_at = spool_monotonic_ms() + wt->backoff;
}

static void park_push(writer_state *w, spool_batch *b)
{
    wtopic *wt = &w->topics[b->topic];
    b->link.next = NULL;
    if (wt->tail) {
        wt->tail->link.next = &b->link;
    } else {
        wt->head = b;
    }
    wt->tail = b;
    wt->nparked++;
}

static spool_batch *park_pop(writer_state *w, int topic)
{
    wtopic *wt = &w->topics[topic];
    spool_batch *b = wt->head;
    if (b) {
        wt->head = (spool_batch *)b->link.next;
        if (!wt->head) {
            wt->tail = NULL;
        }
        b->link.next = NULL;
        wt->nparked--;
    }
    wt->prog = (wprog){.sticky = -1};
    return b;
}

static void gate_set(spool_service *svc, int topic, int closed)
{
    spool__wlanes *l = svc->lanes;
    pthread_mutex_lock(&l->mu);
    atomic_store(&l->blocked[topic], closed);
    if (!closed) {
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
}

/* An ingest batch from the queue: written now, or parked behind its topic. */
static void writer_take(writer_state *w, spool_batch *b)
{
    wtopic *wt = &w->topics[b->topic];
    if (wt->head) {
        park_push(w, b);
        return;
    }
    wprog pg = {.sticky = -1};
    int32_t where = 0;
    int topic = b->topic;
    int rc = writer_batch(w, b, &pg, &where);
    if (rc == 0) {
        spool_batch_destroy(b);
        if (wt->refusing) {
            topic_accepting(w, topic);
        }
        return;
    }
    park_push(w, b);
    wt->prog = pg;
    park_retry_in(wt, rc, 1);
    gate_set(w->svc, b->topic, 1);
    topic_refusing(w, b->topic, rc, where);
    /* Keep what was appended before durable while this topic waits. */
    if (w->npending || w->batches_since_commit) {
        writer_commit(w, 0, 1);
    }
}

/* Retries the heads of parked topics whose time came. Sets *next_wake. */
static void writer_retry_parked(writer_state *w, int64_t *next_wake)
{
    int64_t now = spool_monotonic_ms();
    int disk = 0;
    for (size_t t = 0; t < w->ntopics; t++) {
        wtopic *wt = &w->topics[t];
        if (wt->head && now >= wt->retry_at && (wt->rc == -ENOSPC || wt->rc == -EIO)) {
            disk = 1;
        }
    }
    if (disk) {
        spool_log_retention_run(w->svc->log, 1); /* frees delivered segments */
    }
    for (size_t t = 0; t < w->ntopics; t++) {
        wtopic *wt = &w->topics[t];
        if (!wt->head) {
            continue;
        }
        if (now < wt->retry_at) {
            if (*next_wake < 0 || wt->retry_at < *next_wake) {
                *next_wake = wt->retry_at;
            }
            continue;
        }
        int rc = 0;
        int32_t where = 0;
        for (int k = 0; k < PARK_BURST && wt->head; k++) {
            if ((rc = writer_batch(w, wt->head, &wt->prog, &where)) < 0) {
                break;
            }
            spool_batch_destroy(park_pop(w, (int)t));
        }
        if (!wt->head) {
            gate_set(w->svc, (int)t, 0);
            topic_accepting(w, (int)t);
            continue;
        }
        if (rc < 0) {
            park_retry_in(wt, rc, 0);
            topic_refusing(w, (int)t, rc, where);
        } else {
            wt->retry_at = now; /* burst done, more to write: at once after other work */
        }
        if (*next_wake < 0 || wt->retry_at < *next_wake) {
            *next_wake = wt->retry_at;
        }
    }
}

/* Records of a partly written batch that are not in the log yet. */
static int64_t unwritten(writer_state *w, spool_batch *b, const wprog *pg)
{
    int32_t nparts = w->svc->conf->topics[b->topic].partitions;
    spool_record *recs;
    int64_t n = 0;
    if (pg->next_part >= nparts) {
        return 0;
    }
    if (spool__batch_views(b, &recs) < 0) {
        return (int64_t)b->count; /* cannot tell: count them all */
    }
    for (size_t i = 0; i < b->count; i++) {
        int32_t p = nparts == 1 ? 0
                    : recs[i].key ? spool_partition_for_key(recs[i].key, (size_t)recs[i].key_len,
                                                            nparts)
                                  : pg->sticky;
        n += p >= pg->next_part;
    }
    return n;
}

/* At the shutdown deadline: whatever is parked is given up. */
static void writer_abandon_parked(writer_state *w, int rc)
{
    for (size_t t = 0; t < w->ntopics; t++) {
        wtopic *wt = &w->topics[t];
        if (!wt->head) {
            continue;
        }
        spool_log_warn(NULL, "log writer: shutdown deadline: %zu batches of topic %s were not "
                       "written (%s); sources that keep positions read them again at the next "
                       "start", wt->nparked, w->svc->conf->topics[t].name, refusal(wt->rc));
        int partial = wt->prog.next_part > 0 || wt->prog.next_pos > 0;
        if (partial && !wt->head->durable && wt->head->npos == 0) {
            /* Part of the head is in the log: count only what is not. */
            lost_add(w->svc, wt->head->ins, unwritten(w, wt->head, &wt->prog));
        }
        spool_batch *b;
        while ((b = park_pop(w, (int)t)) != NULL) {
            if (partial) {
                partial = 0;
                if (b->durable) {
                    spool__durable_done(b->durable, rc);
                }
                spool_batch_destroy(b);
                continue;
            }
            batch_abandon(w->svc, b, rc);
        }
        gate_set(w->svc, (int)t, 0);
    }
}

/* The direct lane: one dead-letter batch, written now or refused now. */
static void writer_direct(writer_state *w, spool_batch *b)
{
    spool_service *svc = w->svc;
    int32_t nparts = svc->conf->topics[b->topic].partitions;
    spool__durable *d = b->durable;
    spool_record *recs;
    int rc;
    int32_t p = 0;
    int64_t base;

    if ((size_t)b->topic >= w->ntopics || b->count == 0) {
        /* No topic table (out of memory at start), or nothing to write. */
        spool__durable_done(d, b->count ? -EAGAIN : 0);
        spool_batch_destroy(b);
        return;
    }
    if (spool__batch_views(b, &recs) < 0 || ensure_pending(w) < 0) {
        rc = -ENOMEM;
    } else {
        p = w->sticky[b->topic];
        for (size_t i = 0; i < b->count; i++) {
            if (recs[i].key) {
                p = spool_partition_for_key(recs[i].key, (size_t)recs[i].key_len, nparts);
                break;
            }
        }
        rc = spool_log_append(svc->log, b->topic, p, recs, b->count, &base);
        if (rc == 0) {
            w->sticky[b->topic] = (w->sticky[b->topic] + 1) % nparts;
        }
    }
    if (rc < 0) {
        topic_refusing(w, b->topic, rc == -EDQUOT ? -ENOSPC : rc, p);
        spool__durable_done(d, -EAGAIN);
        spool_batch_destroy(b);
        return;
    }
    if (w->topics[b->topic].refusing) {
        topic_accepting(w, b->topic);
    }
    w->pending[w->npending++] = d;
    b->durable = NULL;
    w->batches_since_commit++;
    spool_batch_destroy(b);
    writer_commit(w, 0, 1); /* answered by this commit, or the next that works */
}

static int any_parked(const writer_state *w)
{
    for (size_t t = 0; t < w->ntopics; t++) {
        if (w->topics[t].head) {
            return 1;
        }
    }
    return 0;
}

static void writer_serve_direct(writer_state *w)
{
    spool_queue_item *it;
    while ((it = spool_queue_pop_urgent(&w->svc->write_queue)) != NULL) {
        writer_direct(w, (spool_batch *)it);
    }
}

static void *writer_main(void *arg)
{
    spool_service *svc = arg;
    spool__wlanes *l = svc->lanes;
    writer_state w = {.svc = svc, .next_commit_ms = -1};
    size_t nt = svc->conf->ntopics ? svc->conf->ntopics : 1;
    w.sticky = calloc(nt, sizeof(*w.sticky));
    w.topics = calloc(nt, sizeof(*w.topics));
    w.ntopics = svc->conf->ntopics;
    if (!w.sticky || !w.topics) {
        /* Cannot run without them; the queue still drains so nothing hangs. */
        spool_log_error(NULL, "log writer: out of memory at start");
        w.ntopics = 0;
    }
    for (size_t t = 0; t < w.ntopics; t++) {
        w.topics[t].prog = (wprog){.sticky = -1};
    }
    for (;;) {
        atomic_store(&svc->writer_heartbeat, spool_monotonic_ms());
        int64_t next_wake = -1;
        writer_serve_direct(&w);
        writer_retry_parked(&w, &next_wake);
        if (deadline_passed(svc) && any_parked(&w)) {
            writer_abandon_parked(&w, -ESHUTDOWN);
        }
        spool_queue_item *it = spool_queue_pop(&svc->write_queue, 0, NULL);
        if (!it) {
            /* Out of work: commit now, so a quiet host ships at once. */
            if (w.batches_since_commit || w.npending || w.next_commit_ms >= 0) {
                writer_commit(&w, 0, 1);
            }
            spool_log_retention_run(svc->log, 0);
            if (spool_queue_drained(&svc->write_queue) && !any_parked(&w)) {
                break;
            }
            int64_t now = spool_monotonic_ms(), wait = 1000;
            if (w.next_commit_ms >= 0 && w.next_commit_ms - now < wait) {
                wait = w.next_commit_ms - now;
            }
            if (next_wake >= 0 && next_wake - now < wait) {
                wait = next_wake - now;
            }
            int64_t dl = deadline_of(svc);
            if (dl && any_parked(&w) && dl - now < wait) {
                wait = dl - now;
            }
            wait = wait < 1 ? 1 : wait;
            if (spool_queue_drained(&svc->write_queue)) {
                /* Closed: pop would not wait. Parked batches wait for their
                 * retry or the deadline; look at the direct lane meanwhile. */
                sleep_ms(wait < 10 ? wait : 10);
                continue;
            }
            it = spool_queue_pop(&svc->write_queue, wait, NULL);
            if (!it) {
                continue;
            }
        }
        spool_batch *b = (spool_batch *)it;
        if (b->topic < 0 || (size_t)b->topic >= w.ntopics) {
            spool_log_error(b->ins, "log writer: batch for unknown topic %d not written",
                            b->topic);
            batch_abandon(svc, b, -EINVAL);
        } else if (deadline_passed(svc) && w.topics[b->topic].refusing) {
            batch_abandon(svc, b, -ESHUTDOWN);
        } else {
            writer_take(&w, b);
        }
        if (w.batches_since_commit >= WRITER_COMMIT_BATCHES ||
            spool_log_uncommitted_bytes(svc->log) >= WRITER_COMMIT_BYTES) {
            writer_commit(&w, 0, 0);
        }
    }
    /* Final commit: everything accepted becomes durable before exit, tried
     * until the shutdown deadline (at least once). */
    for (;;) {
        if (writer_commit(&w, 1, 1) == 0) {
            break;
        }
        int64_t dl = deadline_of(svc);
        if (!dl || spool_monotonic_ms() >= dl) {
            for (size_t i = 0; i < w.nuncommitted; i++) {
                lost_entry *e = &w.uncommitted[i];
                lost_add_named(svc, e->input, e->type, e->n);
            }
            break;
        }
        sleep_ms(100);
    }
    pthread_mutex_lock(&l->mu);
    l->closed = 1;
    pthread_mutex_unlock(&l->mu);
    spool_queue_item *it;
    while ((it = spool_queue_pop_urgent(&svc->write_queue)) != NULL) {
        spool_batch *b = (spool_batch *)it;
        spool__durable_done(b->durable, -ESHUTDOWN);
        spool_batch_destroy(b);
    }
    for (size_t i = 0; i < w.npending; i++) {
        spool__durable_done(w.pending[i], -EIO);
        spool__durable_release(w.pending[i]);
    }
    free(w.pending);
    free(w.sticky);
    free(w.topics);
    free(w.grouped);
    free(w.parts);
    free(w.uncommitted);
    atomic_store(&svc->writer_done, 1);
    spool_log_wake(svc->log);
    return NULL;
}

int spool__writer_append_direct(spool_service *svc, spool_batch *b)
{
    spool__wlanes *l = svc ? svc->lanes : NULL;
    if (!l || b->topic < 0 || (size_t)b->topic >= l->ntopics) {
        spool_batch_destroy(b);
        return l ? -EINVAL : -ESHUTDOWN;
    }
    spool__durable *d = spool__durable_new();
    if (!d) {
        spool_batch_destroy(b);
        return -EAGAIN;
    }
    b->durable = d; /* the batch holds the writer's reference */
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        spool_batch_destroy(b);
        spool__durable_release(d);
        return -ESHUTDOWN;
    }
    spool_queue_push_urgent(&svc->write_queue, &b->link);
    pthread_mutex_unlock(&l->mu);
    int rc = spool__durable_wait(d, -1);
    spool__durable_release(d);
    return rc;
}

int spool__pipeline_start(spool_service *svc)
{
    /* memory_limit is one account (memory.c) that batches, the batch pool,
     * output chunks, request bodies and read buffers count against; the two
     * queues also hold at most an eighth of it each (a few batches are all
     * a stage needs to stay busy). */
    size_t qbytes = (size_t)svc->conf->memory_limit / 8;
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
        const lost_entry *e = &l->lost[i];
        int n = snprintf(line + at, sizeof(line) - at, "%s%lld records from input %s (%s)",
                         i ? ", " : "", (long long)e->n, e->input, e->type);
        if (n > 0) {
            at = at + (size_t)n < sizeof(line) ? at + (size_t)n : sizeof(line) - 1;
        }
        total += e->n;
    }
    pthread_mutex_unlock(&l->mu);
    if (total) {
        spool__log_unlimited(SPOOL_LOG_ERROR, "shutdown: %s were accepted but not written to the "
                             "log: their topic refused appends (full, or the disk) until the "
                             "shutdown deadline (shutdown_timeout %llds) and their sources cannot "
                             "replay them", line,
                             (long long)(svc->conf->shutdown_timeout / 1000));
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
