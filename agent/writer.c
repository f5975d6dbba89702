/*
 * writer.c: the log writer stage of the pipeline (pipeline.c; DESIGN.md,
 * "The pipeline"), on its own thread: it takes batches from the write queue,
 * assigns partitions, appends, group-commits, and acknowledges durable
 * batches. pipeline.c creates the lanes (pipeline_int.h), starts this
 * stage's thread and joins it; this file does not.
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

#include "pipeline_int.h"

#define WRITER_COMMIT_BYTES (8u << 20) /* commit at least every 8 MiB appended */
#define WRITER_COMMIT_BATCHES 256      /* ... or every 256 batches */

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

/* ---- lanes: shutdown deadline, lost records ---- */

static int deadline_passed(spool_service *svc)
{
    int64_t dl = spool__deadline_of(svc);
    return dl && spool_monotonic_ms() >= dl;
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
    spool__lost_entry *e = NULL;
    for (size_t i = 0; i < l->nlost; i++) {
        if (strcmp(l->lost[i].input, name) == 0) {
            e = &l->lost[i];
        }
    }
    if (!e && l->nlost == l->lost_cap) {
        size_t nc = l->lost_cap ? l->lost_cap * 2 : 8;
        spool__lost_entry *ne = realloc(l->lost, nc * sizeof(*ne));
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

void spool__lost_add(spool_service *svc, const spool_instance *ins, int64_t n)
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
    } else if (!spool__batch_replayable(b)) {
        spool__lost_add(svc, b->ins, (int64_t)b->count);
    }
    spool_batch_destroy(b);
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
#define PARK_RETRY_FULL_MS 100  /* topic full or no memory: an output may free it any time */
#define PARK_RETRY_DISK_MS 1000 /* disk full or failing */
#define PARK_BURST 64           /* parked batches written per topic per pass */

typedef struct wprog {
    int32_t sticky;    /* unkeyed records' partition, -1 = not chosen yet */
    int32_t next_part; /* partitions below this are appended */
    size_t next_pos;   /* positions below this are recorded */
} wprog;

typedef struct wtopic {
    spool_batch *head, *tail; /* parked FIFO (link.next) */
    size_t nparked;
    wprog prog;        /* progress of head */
    int64_t retry_at;  /* monotonic ms */
    int64_t backoff;   /* ms */
    int refusing;      /* the log refuses this topic (parked or a direct append failed) */
    int rc;            /* the refusal */
    int32_t partition; /* where */
} wtopic;

typedef struct writer_state {
    spool_service *svc;
    int32_t *sticky; /* per topic: the unkeyed partition of the next batch */
    wtopic *topics;
    size_t ntopics;
    spool_record *grouped; /* records reordered by partition */
    int32_t *parts;        /* partition of each record */
    size_t grouped_cap;
    spool__durable **pending; /* acknowledged at the next commit */
    size_t npending, pending_cap;
    size_t batches_since_commit;
    int64_t next_commit_ms; /* monotonic deadline, -1 = none */
    int commit_failing;     /* the last commit failed */
    int commit_rc;
    spool__lost_entry *uncommitted; /* per input: records appended since the last commit that */
    size_t nuncommitted, uncommitted_cap; /* no source can replay */
    int health_shown;                     /* writer_blocked is set */
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
    if (spool__batch_replayable(b) || b->durable || !b->count) {
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
        spool__lost_entry *ne = realloc(w->uncommitted, nc * sizeof(*ne));
        if (!ne) {
            return; /* only the count of a failed final commit is at stake */
        }
        w->uncommitted = ne;
        w->uncommitted_cap = nc;
    }
    spool__lost_entry *e = &w->uncommitted[w->nuncommitted++];
    memset(e, 0, sizeof(*e));
    snprintf(e->input, sizeof(e->input), "%s", name);
    snprintf(e->type, sizeof(e->type), "%s", b->ins && b->ins->plugin ? b->ins->plugin->name : "?");
    e->n = (int64_t)b->count;
}

static int writer_commit(writer_state *w, int force, int idle)
{
    spool_service *svc = w->svc;
    int64_t next = -1;
    int rc = spool_plog_commit(svc->log, force, idle, &next);
    if (rc < 0) {
        if (!w->commit_failing || w->commit_rc != rc) {
            const char *why = spool_plog_commit_error(svc->log);
            spool_log_error(NULL,
                            "log writer: commit failed: %s; appended records wait until "
                            "it works",
                            why[0] ? why : strerror(-rc));
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

/* What the writer makes of a refused append: the retryable refusals as
 * they are (-EDQUOT as -ENOSPC), anything else -EIO. */
static int append_refusal(int rc)
{
    return rc == -ENOSPC || rc == -EAGAIN || rc == -ENOMEM || rc == -EDQUOT
               ? (rc == -EDQUOT ? -ENOSPC : rc)
               : -EIO;
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
        if (injected_enomem(0) || spool__batch_views(b, &recs) < 0) {
            return -ENOMEM;
        }
        if (nparts == 1) {
            /* One partition: the views go to the log as they are (no
             * grouping copy). */
            int64_t base;
            if ((rc = spool_plog_append(svc->log, b->topic, 0, recs, b->count, &base)) < 0) {
                pg->next_part = 0;
                *where = 0;
                return append_refusal(rc);
            }
        } else {
            if (ensure_cap(w, b->count) < 0) {
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
                int32_t p = recs[i].key ? spool_partition_for_key(recs[i].key,
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
                if (n && (rc = spool_plog_append(svc->log, b->topic, p, w->grouped + starts[p], n,
                                                 &base)) < 0) {
                    pg->next_part = p;
                    *where = p;
                    return append_refusal(rc);
                }
            }
        }
        pg->next_part = nparts;
        uncommitted_add(w, b);
    }
    pg->next_part = nparts;
    /* Positions only after every record of the batch was appended: the
     * commit that makes them durable makes their records durable too. A
     * part of a split batch records the batch's positions if it is the
     * last part to get here. */
    if (spool__batch_records_written(b) < 0) {
        return -ENOMEM;
    }
    for (; pg->next_pos < b->npos; pg->next_pos++) {
        const spool__bpos *ps = &b->pos[pg->next_pos];
        if (injected_enomem(1) ||
            spool_plog_position_set(svc->log, ps->source, ps->pos, ps->len) < 0) {
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
        spool_plog_retention_run(w->svc->log, 1); /* frees delivered segments */
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
                    : recs[i].key
                        ? spool_partition_for_key(recs[i].key, (size_t)recs[i].key_len, nparts)
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
        spool_log_warn(NULL,
                       "log writer: shutdown deadline: %zu batches of topic %s were not "
                       "written (%s); sources that keep positions read them again at the next "
                       "start",
                       wt->nparked, w->svc->conf->topics[t].name, refusal(wt->rc));
        int partial = wt->prog.next_part > 0 || wt->prog.next_pos > 0;
        if (partial && !wt->head->durable && !spool__batch_replayable(wt->head)) {
            /* Part of the head is in the log: count only what is not. */
            spool__lost_add(w->svc, wt->head->ins, unwritten(w, wt->head, &wt->prog));
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

/*
 * The direct lane, atomic form (streams: streams/runtime.c): a batch that
 * carries positions or records for several topics. Every record goes to
 * its own topic and its key's partition (runs of records with the same
 * topic and partition are appended as one batch each, in order), then the
 * positions are recorded, then one commit makes all of it durable at once:
 * no commit can fall between the records and the positions. An empty batch
 * with positions just moves them. On a refusal nothing is recorded and the
 * caller gets -EAGAIN; runs appended before the refusal stay in the log
 * uncommitted (a later commit makes them durable: a disk full in the middle
 * of one such batch can repeat those records once).
 */
static void writer_direct_atomic(writer_state *w, spool_batch *b)
{
    spool_service *svc = w->svc;
    spool__durable *d = b->durable;
    spool_record *recs = NULL;
    int rc = 0, t = b->topic;
    int32_t p = 0;
    int64_t base;

    if (ensure_pending(w) < 0 || (b->count && spool__batch_views(b, &recs) < 0)) {
        rc = -ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < b->count;) {
        t = b->recs[i].topic >= 0 ? b->recs[i].topic : b->topic;
        if ((size_t)t >= w->ntopics) {
            rc = -EINVAL;
            break;
        }
        int32_t np = svc->conf->topics[t].partitions;
        p = recs[i].key ? spool_partition_for_key(recs[i].key, (size_t)recs[i].key_len, np)
                        : w->sticky[t];
        size_t j = i + 1;
        while (j < b->count) {
            int tj = b->recs[j].topic >= 0 ? b->recs[j].topic : b->topic;
            int32_t pj = recs[j].key
                             ? spool_partition_for_key(recs[j].key, (size_t)recs[j].key_len, np)
                             : w->sticky[t];
            if (tj != t || pj != p) {
                break;
            }
            j++;
        }
        rc = spool_plog_append(svc->log, t, p, recs + i, j - i, &base);
        i = j;
    }
    for (size_t k = 0; rc == 0 && k < b->npos; k++) {
        const spool__bpos *ps = &b->pos[k];
        rc = spool_plog_position_set(svc->log, ps->source, ps->pos, ps->len);
    }
    if (rc < 0) {
        if (rc != -EINVAL && rc != -ENOMEM) {
            topic_refusing(w, t, rc == -EDQUOT ? -ENOSPC : rc, p);
        }
        spool__durable_done(d, rc == -EINVAL ? -EINVAL : -EAGAIN);
        spool_batch_destroy(b);
        return;
    }
    if (b->count && w->topics[t].refusing) {
        topic_accepting(w, t);
    }
    w->pending[w->npending++] = d;
    b->durable = NULL;
    w->batches_since_commit++;
    spool_batch_destroy(b);
    writer_commit(w, 0, 1);
}

/* The direct lane: one dead-letter batch, written now or refused now. */
static void writer_direct(writer_state *w, spool_batch *b)
{
    spool_service *svc = w->svc;
    int32_t nparts;
    spool__durable *d = b->durable;
    spool_record *recs;
    int rc;
    int32_t p = 0;
    int64_t base;

    if ((size_t)b->topic < w->ntopics && (b->npos || b->topics_changed)) {
        writer_direct_atomic(w, b);
        return;
    }
    if ((size_t)b->topic >= w->ntopics || b->count == 0) {
        /* No topic table (out of memory at start), or nothing to write. */
        spool__durable_done(d, b->count ? -EAGAIN : 0);
        spool_batch_destroy(b);
        return;
    }
    nparts = svc->conf->topics[b->topic].partitions;
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
        rc = spool_plog_append(svc->log, b->topic, p, recs, b->count, &base);
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

void *spool__writer_main(void *arg)
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
            spool_plog_retention_run(svc->log, 0);
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
            int64_t dl = spool__deadline_of(svc);
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
            spool_log_error(b->ins, "log writer: batch for unknown topic %d not written", b->topic);
            batch_abandon(svc, b, -EINVAL);
        } else if (deadline_passed(svc) && w.topics[b->topic].refusing) {
            batch_abandon(svc, b, -ESHUTDOWN);
        } else {
            writer_take(&w, b);
        }
        if (w.batches_since_commit >= WRITER_COMMIT_BATCHES ||
            spool_plog_uncommitted_bytes(svc->log) >= WRITER_COMMIT_BYTES) {
            writer_commit(&w, 0, 0);
        }
    }
    /* Final commit: everything accepted becomes durable before exit, tried
     * until the shutdown deadline (at least once). */
    for (;;) {
        if (writer_commit(&w, 1, 1) == 0) {
            break;
        }
        int64_t dl = spool__deadline_of(svc);
        if (!dl || spool_monotonic_ms() >= dl) {
            for (size_t i = 0; i < w.nuncommitted; i++) {
                spool__lost_entry *e = &w.uncommitted[i];
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
    spool_plog_wake(svc->log);
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
