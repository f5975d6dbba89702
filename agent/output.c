/*
 * output.c: the output runner, one thread per output instance (DESIGN.md:
 * "The log is the buffer").
 *
 * The runner reads the output's topics from its committed cursor, cuts
 * chunks of one partition (max_records, max_bytes, linger), hands them to
 * the plugin's flush(), and commits a partition's cursor only past chunks
 * the destination accepted, strictly in offset order. With max_in_flight
 * > 1 and SPOOL_PENDING several chunks are outstanding; completions may
 * arrive from any thread in any order, the cursor still moves in order.
 *
 * Invariants: a partition never has a chunk in flight that starts after a
 * chunk waiting to be retried (so the destination sees each partition in
 * order); the runner never spins: with nothing to do it sleeps in
 * spool_plog_wait until new data, a completion, or the next retry is due.
 * Rejected chunks go to the dead-letter topic (durably, through the log
 * writer's direct lane, never the ingest queues) before the cursor moves
 * past them; if the dead-letter topic refuses (full, disk), the chunk is
 * kept and the dead-letter write retried with backoff, holding back only
 * its own partition. A chunk answered SPOOL_OK may carry records the
 * destination refused one by one (spool_output_reject_record): exactly
 * those go to the dead-letter topic, the same way, before the cursor moves;
 * an answer other than SPOOL_OK clears the marks (the chunk is resent or
 * dead-lettered whole). Every cursor move reaches the page cache at once
 * (spool_plog_cursor_write, survives kill -9) and is fsynced every
 * CURSOR_FLUSH_MS (power loss).
 *
 * Threads: the runner thread owns the slots; a plugin may complete a chunk
 * from any thread. A slot's `state` is atomic: the runner moves it FREE ->
 * INFLIGHT -> (DONE) -> WAIT_RETRY -> FREE, a completion moves it INFLIGHT ->
 * DONE after writing `result` and `reason` under `lock` (release); the
 * runner reads those only after it saw DONE (acquire).
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

#define CURSOR_FLUSH_MS 200 /* bounds what a kill -9 makes an output resend */
#define DL_RETRY_MIN_MS 50
#define DL_RETRY_MAX_MS 2000

enum slot_state {
    SLOT_FREE = 0,
    SLOT_INFLIGHT,   /* flush called, answer pending */
    SLOT_DONE,       /* answer in `result` */
    SLOT_WAIT_RETRY, /* to be flushed again at retry_at */
};

typedef struct chunk_slot {
    spool_chunk chunk;    /* what the plugin sees; must stay first */
    _Atomic int state;    /* enum slot_state (see the threads note above) */
    int result;           /* SPOOL_OK / RETRY / REJECT when DONE */
    int part;             /* index into runner->parts */
    uint64_t seq;         /* order of creation inside its partition */
    char *reason;         /* rejection reason */
    char **marks;         /* per-record reject reasons (chunk.count entries), NULL = none */
    size_t nmarked;       /* records marked in marks */
    spool_buf raw;        /* batches read from the log */
    spool_rb_decoded dec; /* records decoded from raw */
    int64_t first_fail;   /* monotonic ms of the first failure, 0 = none */
    int64_t backoff;      /* ms of the next retry delay */
    int64_t retry_at;     /* monotonic ms */
    int64_t dl_retry_at;  /* monotonic ms: next dead-letter attempt, 0 = now */
    int64_t dl_backoff;   /* ms */
    size_t mem;           /* bytes charged to the memory account (memory.c) */
} chunk_slot;

typedef struct part_state {
    int topic;
    int32_t partition;
    const char *topic_name;
    int64_t committed;     /* cursor: next offset not yet acknowledged */
    int64_t read_pos;      /* next offset to read */
    uint64_t next_seq;     /* seq for the next chunk */
    uint64_t commit_seq;   /* seq of the next chunk to commit */
    int64_t pending_since; /* monotonic ms data first waited (linger), 0 = none */
    int64_t corrupt_until; /* back off after a corrupt read */
} part_state;

typedef struct spool_output_runner {
    spool_service *svc;
    spool_instance *ins;
    pthread_mutex_t lock; /* slot states and results; completions from any thread */
    chunk_slot *slots;
    size_t nslots;
    part_state *parts;
    size_t nparts;
    size_t rr; /* round-robin start */
    char consumer[300];
    int cursor_dirty;
    int cursor_failing;   /* saving the cursor failed last time (log once per streak) */
    int cursor_unwritten; /* moved since the last write to the page cache */
    int dl_failing;       /* the dead-letter topic refused (log once per streak) */
    int64_t last_cursor_flush;
    int64_t retry_after_ms; /* set by spool_output_retry_after during flush */
    spool_instance *dl;     /* dead-letter pseudo input, NULL = none */
    pthread_t thread;
    int running;
} spool_output_runner;

/* ---- dead letters ---- */

static int dl_start(spool_instance *ins, void *ctx)
{
    return 0;
}

static const spool_plugin dead_letter_plugin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "dead_letter",
    .description = "records an output's destination rejected",
    .start = dl_start,
};

/* Drops the per-record marks. Under r->lock, or on the runner's own slot. */
static void slot_clear_marks(chunk_slot *s)
{
    if (s->marks) {
        for (size_t i = 0; i < s->chunk.count; i++) {
            free(s->marks[i]);
        }
        free(s->marks);
        s->marks = NULL;
    }
    s->nmarked = 0;
}

/* Writes the rejected chunk, or with marked_only its marked records (each
 * with its own reason), to the dead-letter topic. */
static int dead_letter(spool_output_runner *r, chunk_slot *s, int marked_only)
{
    spool_instance *ins = r->ins;
    const spool_chunk *c = &s->chunk;
    const char *reason = s->reason ? s->reason : "rejected by the destination";
    size_t n = c->count;
    if (marked_only) {
        n = s->nmarked;
        for (size_t i = 0; i < c->count; i++) {
            if (s->marks[i]) {
                reason = s->marks[i]; /* the first one, for the log */
                break;
            }
        }
    }
    if (!r->dl) {
        spool_log_warn(ins,
                       "destination rejected %zu of %zu records (topic %s, partition %d, offsets "
                       "%lld-%lld): %s; no dead_letter_topic is set, so they are skipped",
                       n, c->count, c->topic, c->partition, (long long)c->first_offset,
                       (long long)c->next_offset - 1, reason);
        return 0;
    }
    spool_batch *b = spool_batch_create(r->dl);
    if (!b) {
        return -EAGAIN;
    }
    b->topic = r->dl->topic;
    char part[16], off[32];
    snprintf(part, sizeof(part), "%d", c->partition);
    for (size_t i = 0; i < c->count; i++) {
        if (marked_only && !s->marks[i]) {
            continue;
        }
        const spool_record *rec = &c->records[i];
        spool_header h[64 + 5];
        uint32_t nh = rec->header_count < 64 ? rec->header_count : 64;
        if (nh) {
            memcpy(h, rec->headers, nh * sizeof(*h)); /* headers may be NULL when none */
        }
        snprintf(off, sizeof(off), "%lld", (long long)rec->offset);
        const char *names[5] = {"dead_letter.reason", "dead_letter.output", "dead_letter.topic",
                                "dead_letter.partition", "dead_letter.offset"};
        const char *vals[5] = {marked_only ? s->marks[i] : reason, ins->name, c->topic, part, off};
        for (int k = 0; k < 5; k++) {
            h[nh].key = names[k];
            h[nh].key_len = (uint32_t)strlen(names[k]);
            h[nh].value = (const uint8_t *)vals[k];
            h[nh].value_len = (int32_t)strlen(vals[k]);
            nh++;
        }
        spool_record dr = *rec;
        dr.headers = h;
        dr.header_count = nh;
        if (spool_batch_append(b, &dr) < 0) {
            spool_batch_destroy(b);
            return -EAGAIN;
        }
    }
    /* The direct lane: the writer appends and commits it, or refuses at
     * once; it never queues behind ingest or waits for room. */
    int rc = spool__writer_append_direct(r->svc, b);
    if (rc < 0) {
        if (!r->dl_failing && rc != -ESHUTDOWN) {
            spool_log_warn(ins,
                           "dead-letter topic %s refuses %zu rejected records (topic %s, "
                           "partition %d, offsets %lld-%lld): %s; they are kept and the write "
                           "retried, and this partition waits",
                           ins->out.dead_letter_topic, n, c->topic, c->partition,
                           (long long)c->first_offset, (long long)c->next_offset - 1,
                           rc == -EAGAIN ? "it is full or the log refuses appends" : strerror(-rc));
            r->dl_failing = 1;
        }
        return rc;
    }
    if (r->dl_failing) {
        spool_log_info(ins, "dead-letter topic %s accepts records again",
                       ins->out.dead_letter_topic);
        r->dl_failing = 0;
    }
    spool_log_warn(ins,
                   "destination rejected %zu of %zu records (topic %s, partition %d, offsets "
                   "%lld-%lld): %s; written to dead-letter topic %s",
                   n, c->count, c->topic, c->partition, (long long)c->first_offset,
                   (long long)c->next_offset - 1, reason, ins->out.dead_letter_topic);
    return 0;
}

/* ---- health reports (read by the service, spool_service_health) ---- */

/* A retry: the destination is failing since now, unless it already was. */
static void report_failing(spool_instance *ins, int64_t now)
{
    int64_t since = 0;
    atomic_compare_exchange_strong(&ins->report.failing_since, &since, now);
}

/* The reason the plugin gave for a retry (copied; NULL or "" = none). */
static void report_error(spool_instance *ins, const char *reason)
{
    if (reason && reason[0]) {
        pthread_mutex_lock(&ins->report.lock);
        snprintf(ins->report.last_error, sizeof(ins->report.last_error), "%s", reason);
        pthread_mutex_unlock(&ins->report.lock);
    }
}

/* A delivery: the destination works again. */
static void report_delivering(spool_instance *ins)
{
    if (atomic_exchange(&ins->report.failing_since, 0) != 0) {
        pthread_mutex_lock(&ins->report.lock);
        ins->report.last_error[0] = '\0';
        pthread_mutex_unlock(&ins->report.lock);
    }
}

/* ---- plugin-facing ---- */

void spool_output_complete(spool_instance *ins, const spool_chunk *chunk, int result,
                           const char *reason)
{
    spool_output_runner *r = ins->runner;
    spool_plog *log = r->svc->log; /* read before DONE: the runner may free the slot after */
    chunk_slot *s = (chunk_slot *)chunk;
    pthread_mutex_lock(&r->lock);
    s->result = result;
    if (result != SPOOL_OK) {
        slot_clear_marks(s);
    }
    if (reason && result == SPOOL_REJECT) {
        free(s->reason);
        s->reason = strdup(reason);
    } else if (result == SPOOL_RETRY) {
        report_error(ins, reason);
    }
    atomic_store(&s->state, SLOT_DONE);
    pthread_mutex_unlock(&r->lock);
    spool_plog_wake(log);
}

int spool_output_reject_record(spool_instance *ins, const spool_chunk *chunk, size_t i,
                               const char *reason)
{
    spool_output_runner *r = ins->runner;
    chunk_slot *s = (chunk_slot *)chunk;
    if (i >= chunk->count) {
        return -EINVAL;
    }
    char *why = strdup(reason && reason[0] ? reason : "rejected by the destination");
    if (!why) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&r->lock);
    if (!s->marks) {
        s->marks = calloc(chunk->count, sizeof(*s->marks));
        if (!s->marks) {
            pthread_mutex_unlock(&r->lock);
            free(why);
            return -ENOMEM;
        }
    }
    if (s->marks[i]) {
        free(s->marks[i]);
    } else {
        s->nmarked++;
    }
    s->marks[i] = why;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

void spool_output_set_reject_reason(spool_instance *ins, const char *reason)
{
    free(ins->reject_reason);
    ins->reject_reason = reason ? strdup(reason) : NULL;
}

int spool_output_flush_report(spool_instance *ins, const spool_chunk *chunk, int rc,
                              const char *reason, int *failing)
{
    if (rc == SPOOL_OK) {
        if (*failing) {
            spool_log_info(ins, "delivering again");
            *failing = 0;
        }
        return rc;
    }
    spool_output_set_reject_reason(ins, reason);
    if (rc == SPOOL_REJECT) {
        spool_log_warn(ins, "%s/%" PRId32 " offsets %" PRId64 "-%" PRId64 " rejected: %s",
                       chunk->topic, chunk->partition, chunk->first_offset, chunk->next_offset - 1,
                       reason);
    } else if (!*failing) {
        spool_log_warn(ins, "%s; retrying", reason);
        *failing = 1;
    }
    return rc == SPOOL_REJECT ? SPOOL_REJECT : SPOOL_RETRY;
}

void spool_output_retry_after(spool_instance *ins, int64_t ms)
{
    spool_output_runner *r = ins->runner;
    pthread_mutex_lock(&r->lock);
    if (ms > r->retry_after_ms) {
        r->retry_after_ms = ms;
    }
    pthread_mutex_unlock(&r->lock);
}

void spool_output_values_only(spool_instance *ins)
{
    ins->out.values_only = 1;
}

/* ---- the runner ---- */

static void call_flush(spool_output_runner *r, chunk_slot *s)
{
    spool_instance *ins = r->ins;
    free(ins->reject_reason);
    ins->reject_reason = NULL;
    atomic_store(&s->state, SLOT_INFLIGHT);
    int rc = ins->plugin->flush(ins, ins->ctx, &s->chunk);
    if (rc == SPOOL_PENDING) {
        return;
    }
    pthread_mutex_lock(&r->lock);
    s->result = rc == SPOOL_OK || rc == SPOOL_REJECT ? rc : SPOOL_RETRY;
    if (s->result != SPOOL_OK) {
        slot_clear_marks(s);
    }
    if (rc == SPOOL_REJECT && ins->reject_reason) {
        free(s->reason);
        s->reason = ins->reject_reason;
        ins->reject_reason = NULL;
    } else if (s->result == SPOOL_RETRY) {
        report_error(ins, ins->reject_reason);
    }
    atomic_store(&s->state, SLOT_DONE);
    pthread_mutex_unlock(&r->lock);
}

/* Memory (memory.c): a slot is charged its buffers plus chunk.bytes, an
 * estimate of the plugin's copy of the chunk in flight. Slot 0 keeps its
 * buffers (every output can always send one chunk: no deadlock); the
 * others keep theirs for reuse only while the account is below half its
 * limit, and are only filled then, so stalled outputs never starve the
 * inputs. */
#define SLOT_MEM_PERCENT 50

static size_t slot_footprint(const chunk_slot *s, int inflight)
{
    return s->raw.cap + s->dec.cap * sizeof(spool_record) +
           s->dec.header_cap * sizeof(spool_header) + s->dec.scratch.cap +
           (inflight ? s->chunk.bytes : 0);
}

static void slot_release_memory(spool_output_runner *r, chunk_slot *s)
{
    if (s != &r->slots[0] && !spool__mem_room(0, SLOT_MEM_PERCENT)) {
        spool_buf_free(&s->raw);
        spool_rb_decoded_free(&s->dec);
    }
    spool__mem_adjust(&s->mem, slot_footprint(s, 0));
}

static void slot_release(chunk_slot *s)
{
    slot_clear_marks(s);
    free(s->reason);
    s->reason = NULL;
    s->first_fail = 0;
    s->backoff = 0;
    s->dl_retry_at = 0;
    s->dl_backoff = 0;
    atomic_store(&s->state, SLOT_FREE);
    s->raw.len = 0;
    spool_rb_decoded_reset(&s->dec);
}

static int64_t jitter(int64_t ms)
{
    /* +-20% so many agents do not retry in lockstep. */
    int64_t span = ms / 5;
    return span > 0 ? ms - span + (int64_t)((uint64_t)rand() % (uint64_t)(2 * span + 1)) : ms;
}

/* Turns answers into cursor moves, retries and dead letters. Returns 1 if
 * anything changed; *next_wake gets the next dead-letter retry. */
static int settle(spool_output_runner *r, int64_t *next_wake)
{
    spool_instance *ins = r->ins;
    int changed = 0;
    int64_t now = spool_monotonic_ms();
    for (size_t i = 0; i < r->nslots; i++) {
        chunk_slot *s = &r->slots[i];
        pthread_mutex_lock(&r->lock);
        int st = s->state, res = s->result;
        int64_t ra = r->retry_after_ms;
        if (st == SLOT_DONE && res == SPOOL_RETRY) {
            r->retry_after_ms = 0;
        }
        pthread_mutex_unlock(&r->lock);
        if (st != SLOT_DONE || res != SPOOL_RETRY) {
            continue;
        }
        changed = 1;
        spool_count(ins, SPOOL_COUNT_RETRIES, 1);
        if (!s->first_fail) {
            s->first_fail = now;
            s->backoff = ins->out.retry_backoff;
        }
        report_failing(ins, now);
        if (ins->out.max_retry_time && now - s->first_fail >= ins->out.max_retry_time) {
            pthread_mutex_lock(&r->lock);
            s->result = SPOOL_REJECT;
            free(s->reason);
            s->reason = strdup("gave up after max_retry_time");
            pthread_mutex_unlock(&r->lock);
            continue;
        }
        int64_t delay = jitter(s->backoff);
        if (ra > delay) {
            delay = ra;
        }
        s->backoff = s->backoff * 2 > ins->out.retry_backoff_max ? ins->out.retry_backoff_max
                                                                 : s->backoff * 2;
        s->retry_at = now + delay;
        atomic_store(&s->state, SLOT_WAIT_RETRY);
        spool_log_debug(ins,
                        "chunk of topic %s partition %d offsets %lld-%lld will be retried in "
                        "%lldms",
                        s->chunk.topic, s->chunk.partition, (long long)s->chunk.first_offset,
                        (long long)s->chunk.next_offset - 1, (long long)delay);
    }
    /* Commit in order: per partition, the chunk with the next commit seq. */
    for (size_t p = 0; p < r->nparts; p++) {
        part_state *ps = &r->parts[p];
        for (;;) {
            chunk_slot *head = NULL;
            for (size_t i = 0; i < r->nslots; i++) {
                chunk_slot *s = &r->slots[i];
                if (atomic_load(&s->state) != SLOT_FREE && s->part == (int)p &&
                    s->seq == ps->commit_seq) {
                    head = s;
                    break;
                }
            }
            if (!head) {
                break;
            }
            pthread_mutex_lock(&r->lock);
            int done = atomic_load(&head->state) == SLOT_DONE && head->result != SPOOL_RETRY;
            int res = head->result;
            size_t nmarked = res == SPOOL_OK ? head->nmarked : 0;
            pthread_mutex_unlock(&r->lock);
            if (!done) {
                break;
            }
            if (res == SPOOL_REJECT || nmarked > 0) {
                if (head->dl_retry_at && now < head->dl_retry_at) {
                    if (*next_wake < 0 || head->dl_retry_at < *next_wake) {
                        *next_wake = head->dl_retry_at;
                    }
                    break; /* this partition waits; the others go on */
                }
                if (dead_letter(r, head, nmarked > 0) < 0) {
                    /* Kept: the cursor stays before it, retried with backoff. */
                    head->dl_backoff = head->dl_backoff ? head->dl_backoff * 2 : DL_RETRY_MIN_MS;
                    if (head->dl_backoff > DL_RETRY_MAX_MS) {
                        head->dl_backoff = DL_RETRY_MAX_MS;
                    }
                    head->dl_retry_at = spool_monotonic_ms() + head->dl_backoff;
                    if (*next_wake < 0 || head->dl_retry_at < *next_wake) {
                        *next_wake = head->dl_retry_at;
                    }
                    break;
                }
                spool_count(ins, SPOOL_COUNT_REJECTED, nmarked ? nmarked : head->chunk.count);
            }
            if (res == SPOOL_OK) {
                spool_count(ins, SPOOL_COUNT_RECORDS_OUT, head->chunk.count - nmarked);
                spool_count(ins, SPOOL_COUNT_BYTES_OUT, head->chunk.bytes);
                report_delivering(ins);
            }
            ps->committed = head->chunk.next_offset;
            spool_plog_cursor_set(r->svc->log, r->consumer, ps->topic, ps->partition,
                                  ps->committed);
            r->cursor_dirty = 1;
            r->cursor_unwritten = 1;
            ps->commit_seq++;
            slot_release(head);
            slot_release_memory(r, head);
            changed = 1;
        }
    }
    return changed;
}

/* Re-flushes chunks whose retry time came. Inside a partition, chunks are
 * re-sent in their original order: only the earliest waiting chunk of a
 * partition is eligible, so a later chunk never overtakes an earlier one. */
static int retry_due(spool_output_runner *r, int64_t *next_wake)
{
    int64_t now = spool_monotonic_ms();
    int did = 0;
    for (size_t i = 0; i < r->nslots; i++) {
        chunk_slot *s = &r->slots[i];
        if (atomic_load(&s->state) != SLOT_WAIT_RETRY) {
            continue;
        }
        int earliest = 1;
        for (size_t j = 0; j < r->nslots && earliest; j++) {
            const chunk_slot *o = &r->slots[j];
            earliest = !(atomic_load(&o->state) == SLOT_WAIT_RETRY && o->part == s->part &&
                         o->seq < s->seq);
        }
        if (!earliest) {
            continue;
        }
        if (now >= s->retry_at) {
            call_flush(r, s);
            did = 1;
        } else if (*next_wake < 0 || s->retry_at < *next_wake) {
            *next_wake = s->retry_at;
        }
    }
    return did;
}

static int part_blocked(spool_output_runner *r, size_t p)
{
    for (size_t i = 0; i < r->nslots; i++) {
        /* A chunk waiting for a retry (also one just answered SPOOL_RETRY,
         * not settled yet: flush answers synchronously), or for the
         * dead-letter topic to take it: read no further in this partition;
         * the others go on. */
        int st = atomic_load(&r->slots[i].state);
        if (r->slots[i].part == (int)p &&
            (st == SLOT_WAIT_RETRY ||
             (st == SLOT_DONE && (r->slots[i].dl_retry_at || r->slots[i].result == SPOOL_RETRY)))) {
            return 1;
        }
    }
    return 0;
}

/* Reads the next chunk of partition p into slot s. 1 = filled, 0 = nothing
 * to send now, <0 error. */
static int fill_chunk(spool_output_runner *r, size_t p, chunk_slot *s, int64_t *next_wake)
{
    spool_instance *ins = r->ins;
    part_state *ps = &r->parts[p];
    spool_partition_info pi;
    int64_t now = spool_monotonic_ms();

    if (ps->corrupt_until > now) {
        if (*next_wake < 0 || ps->corrupt_until < *next_wake) {
            *next_wake = ps->corrupt_until;
        }
        return 0;
    }
    if (spool_plog_partition_info(r->svc->log, ps->topic, ps->partition, &pi) < 0) {
        return 0;
    }
    if (ps->read_pos < pi.begin_offset) {
        spool_log_warn(ins,
                       "topic %s partition %d: offsets %lld-%lld were removed by retention "
                       "before this output delivered them",
                       ps->topic_name, ps->partition, (long long)ps->read_pos,
                       (long long)pi.begin_offset - 1);
        ps->read_pos = pi.begin_offset;
        if (ps->committed < pi.begin_offset) {
            ps->committed = pi.begin_offset;
        }
    }
    if (ps->read_pos >= pi.end_offset) {
        ps->pending_since = 0;
        return 0;
    }
    if (ins->out.linger > 0 && !atomic_load(&r->svc->draining)) {
        if (!ps->pending_since) {
            ps->pending_since = now;
        }
        /* Only wait when what is there cannot fill a chunk anyway. */
        if (pi.end_offset - ps->read_pos < ins->out.max_records &&
            now - ps->pending_since < ins->out.linger) {
            int64_t at = ps->pending_since + ins->out.linger;
            if (*next_wake < 0 || at < *next_wake) {
                *next_wake = at;
            }
            return 0;
        }
    }
    int64_t next = ps->read_pos;
    s->raw.len = 0;
    spool_rb_decoded_reset(&s->dec);
    long n = spool_plog_read(r->svc->log, ps->topic, ps->partition, ps->read_pos,
                             (size_t)ins->out.max_bytes, &s->raw, &next);
    if (n == -EBADMSG) {
        spool_log_error(ins, "topic %s partition %d: corrupt batch at offset %lld; retrying in 5s",
                        ps->topic_name, ps->partition, (long long)ps->read_pos);
        spool_count(ins, SPOOL_COUNT_ERRORS, 1);
        ps->corrupt_until = now + 5000;
        return 0;
    }
    if (n <= 0) {
        return n < 0 ? (int)n : 0;
    }
    size_t off = 0;
    while (off < s->raw.len) {
        spool_rb_info bi;
        long sz = spool_rb_parse_header(s->raw.data + off, s->raw.len - off, 0, &bi);
        if (sz <= 0) {
            break;
        }
        /* An output of values only gets no header views, but ticks keep
         * theirs so they are still left out below. */
        int rc =
            ins->out.values_only
                ? spool_rb_decode_keep(s->raw.data + off, (size_t)sz, ps->partition, ps->read_pos,
                                       SPOOL_TICK_HEADER, sizeof(SPOOL_TICK_HEADER) - 1, &s->dec)
                : spool_rb_decode(s->raw.data + off, (size_t)sz, ps->partition, ps->read_pos,
                                  &s->dec);
        if (rc < 0) {
            spool_log_error(ins, "topic %s partition %d: cannot decode batch at offset %lld: %s",
                            ps->topic_name, ps->partition, (long long)bi.base_offset,
                            strerror(-rc));
            spool_count(ins, SPOOL_COUNT_ERRORS, 1);
            ps->corrupt_until = now + 5000;
            return 0;
        }
        off += (size_t)sz;
        /* Decode one chunk's worth only: compressed batches expand far
         * beyond max_bytes (the bound of the raw read), and what is decoded
         * stays allocated in the slot (memory_limit). */
        if (off < s->raw.len && (s->dec.count >= (size_t)ins->out.max_records ||
                                 s->dec.scratch.len >= (size_t)ins->out.max_bytes)) {
            next = bi.base_offset + bi.last_offset_delta + 1;
            break;
        }
    }
    size_t raw_len = off; /* whole batches, ending at `next` */
    size_t count = s->dec.count;
    if (count > (size_t)ins->out.max_records) {
        count = (size_t)ins->out.max_records;
        next = s->dec.records[count].offset;
        raw_len = 0; /* the batches hold records past next: no raw bytes (spool.h) */
    }
    if (count == 0) {
        ps->read_pos = next; /* a gap (compacted or skipped offsets) */
        return 0;
    }
    /* Stream ticks (header spool.tick) are never delivered: they leave
     * `records` but stay covered by the chunk's offsets (and stay in `raw`,
     * which a receiving http input drops). A chunk of ticks only is settled
     * without a flush (fill_chunk's caller). */
    int64_t first = s->dec.records[0].offset;
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        const spool_record *rec = &s->dec.records[i];
        if (rec->header_count && spool_record_header(rec, SPOOL_TICK_HEADER)) {
            continue;
        }
        if (kept != i) {
            s->dec.records[kept] = *rec;
        }
        kept++;
    }
    count = kept;
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++) {
        const spool_record *rec = &s->dec.records[i];
        bytes += (size_t)(rec->key_len > 0 ? rec->key_len : 0) +
                 (size_t)(rec->value_len > 0 ? rec->value_len : 0);
        for (uint32_t h = 0; h < rec->header_count; h++) {
            bytes += rec->headers[h].key_len +
                     (size_t)(rec->headers[h].value_len > 0 ? rec->headers[h].value_len : 0);
        }
    }
    s->chunk = (spool_chunk){
        .topic = ps->topic_name,
        .partition = ps->partition,
        .first_offset = first,
        .next_offset = next,
        .records = s->dec.records,
        .count = count,
        .bytes = bytes,
        .raw = raw_len ? s->raw.data : NULL,
        .raw_len = raw_len,
    };
    spool__mem_adjust(&s->mem, slot_footprint(s, 1));
    s->part = (int)p;
    s->seq = ps->next_seq++;
    ps->read_pos = next;
    ps->pending_since = 0;
    return 1;
}

static chunk_slot *free_slot(spool_output_runner *r, int64_t *next_wake)
{
    size_t busy = 0;
    chunk_slot *s = NULL;
    for (size_t i = 0; i < r->nslots; i++) {
        if (atomic_load(&r->slots[i].state) != SLOT_FREE) {
            busy++;
        } else if (!s) {
            s = &r->slots[i];
        }
    }
    /* A second chunk in flight only while memory_limit has room (above). */
    if (s && busy && !spool__mem_room((size_t)r->ins->out.max_bytes * 2, SLOT_MEM_PERCENT)) {
        int64_t at = spool_monotonic_ms() + 100;
        if (*next_wake < 0 || at < *next_wake) {
            *next_wake = at;
        }
        return NULL;
    }
    return s;
}

static int all_delivered(spool_output_runner *r)
{
    for (size_t i = 0; i < r->nslots; i++) {
        if (atomic_load(&r->slots[i].state) != SLOT_FREE) {
            return 0;
        }
    }
    for (size_t p = 0; p < r->nparts; p++) {
        spool_partition_info pi;
        if (spool_plog_partition_info(r->svc->log, r->parts[p].topic, r->parts[p].partition, &pi) ==
                0 &&
            r->parts[p].committed < pi.end_offset) {
            return 0;
        }
    }
    return 1;
}

static void cursor_failed(spool_output_runner *r, int rc)
{
    if (!r->cursor_failing) {
        spool_log_error(r->ins,
                        "cannot save the output cursor: %s (delivery goes on; a "
                        "restart would resend from the last saved cursor)",
                        strerror(-rc));
    }
    r->cursor_failing = 1;
}

/* Every cursor move reaches the page cache at once (no fsync): a kill -9
 * then resends at most the chunks that were in flight. */
static void write_cursors(spool_output_runner *r)
{
    if (!r->cursor_unwritten) {
        return;
    }
    int rc = spool_plog_cursor_write(r->svc->log, r->consumer);
    if (rc < 0) {
        cursor_failed(r, rc);
        return; /* the timer's flush tries again */
    }
    r->cursor_unwritten = 0;
}

static void flush_cursors(spool_output_runner *r, int force)
{
    int64_t now = spool_monotonic_ms();
    if (!r->cursor_dirty || (!force && now - r->last_cursor_flush < CURSOR_FLUSH_MS)) {
        return;
    }
    int rc = spool_plog_cursor_flush(r->svc->log, r->consumer);
    if (rc < 0) {
        cursor_failed(r, rc);
    } else {
        r->cursor_unwritten = 0;
        if (r->cursor_failing) {
            spool_log_info(r->ins, "the output cursor is saved again");
        }
        r->cursor_failing = 0;
        r->cursor_dirty = 0;
    }
    r->last_cursor_flush = now;
}

static void *runner_main(void *arg)
{
    spool_output_runner *r = arg;
    spool_service *svc = r->svc;
    for (;;) {
        int64_t next_wake = -1;
        /* Read before looking at slots and data: a completion or an append
         * after this point ends the wait below at once (no lost wake-up). */
        uint64_t gen = spool_plog_generation(svc->log, -1);
        int busy = settle(r, &next_wake);
        busy |= retry_due(r, &next_wake);
        write_cursors(r);
        flush_cursors(r, 0);
        if (atomic_load(&svc->draining)) {
            if (atomic_load(&svc->writer_done) && all_delivered(r)) {
                break;
            }
            if (spool_monotonic_ms() > svc->drain_deadline) {
                spool_log_warn(r->ins, "shutdown timeout: stopping with undelivered records; "
                                       "they stay in the log and are sent after the next start");
                break;
            }
        }
        chunk_slot *s;
        size_t tried = 0;
        while (tried < r->nparts && (s = free_slot(r, &next_wake))) {
            size_t p = (r->rr + tried) % r->nparts;
            tried++;
            if (part_blocked(r, p)) {
                continue;
            }
            int rc = fill_chunk(r, p, s, &next_wake);
            if (rc == 1 && s->chunk.count == 0) {
                /* Ticks only: nothing to deliver, the cursor moves in order. */
                pthread_mutex_lock(&r->lock);
                s->result = SPOOL_OK;
                atomic_store(&s->state, SLOT_DONE);
                pthread_mutex_unlock(&r->lock);
                busy = 1;
                tried = 0;
                r->rr = (p + 1) % r->nparts;
            } else if (rc == 1) {
                call_flush(r, s);
                busy = 1;
                tried = 0;
                r->rr = (p + 1) % r->nparts;
                if (atomic_load(&s->state) == SLOT_DONE) {
                    /* Answered inside flush (a synchronous output): settle
                     * it first, so the next chunk reuses this slot's warm
                     * buffers rather than filling (and keeping) every slot. */
                    break;
                }
            } else {
                slot_release_memory(r, s);
            }
        }
        if (busy) {
            continue;
        }
        int64_t timeout = 1000;
        int64_t now = spool_monotonic_ms();
        if (next_wake >= 0) {
            timeout = next_wake - now;
        }
        if (r->cursor_dirty) {
            int64_t t = r->last_cursor_flush + CURSOR_FLUSH_MS - now;
            timeout = t < timeout ? t : timeout;
        }
        if (atomic_load(&svc->draining)) {
            timeout = timeout > 100 ? 100 : timeout;
        }
        if (timeout > 0) {
            spool_plog_wait_since(svc->log, -1, gen, timeout);
        }
    }
    if (r->ins->plugin->drain) {
        int64_t left = svc->drain_deadline - spool_monotonic_ms();
        r->ins->plugin->drain(r->ins, r->ins->ctx, left > 0 ? left : 0);
        int64_t ignored = -1;
        settle(r, &ignored);
    }
    flush_cursors(r, 1);
    return NULL;
}

int spool__output_start(spool_service *svc, spool_instance *ins)
{
    spool_output_runner *r = calloc(1, sizeof(*r));
    int rc;
    if (!r) {
        return -ENOMEM;
    }
    r->svc = svc;
    r->ins = ins;
    pthread_mutex_init(&r->lock, NULL);
    ins->runner = r;
    snprintf(r->consumer, sizeof(r->consumer), "output.%s", ins->name);
    r->nslots = (size_t)ins->out.max_in_flight;
    r->slots = calloc(r->nslots, sizeof(*r->slots));
    for (size_t t = 0; t < ins->out.topics.count; t++) {
        int ti = spool_plog_topic_index(svc->log, ins->out.topics.items[t]);
        if (ti >= 0) {
            r->nparts += (size_t)spool_plog_topic_conf(svc->log, ti)->partitions;
        }
    }
    r->parts = calloc(r->nparts ? r->nparts : 1, sizeof(*r->parts));
    if (!r->slots || !r->parts) {
        return -ENOMEM;
    }
    if ((rc = spool_plog_cursor_register(svc->log, r->consumer)) < 0) {
        spool_log_error(ins, "cannot load the output cursor: %s", strerror(-rc));
        return rc;
    }
    size_t k = 0;
    for (size_t t = 0; t < ins->out.topics.count; t++) {
        int ti = spool_plog_topic_index(svc->log, ins->out.topics.items[t]);
        if (ti < 0) {
            continue;
        }
        const spool_topic_conf *tc = spool_plog_topic_conf(svc->log, ti);
        for (int32_t p = 0; p < tc->partitions; p++) {
            part_state *ps = &r->parts[k++];
            ps->topic = ti;
            ps->partition = p;
            ps->topic_name = tc->name;
            ps->committed = spool_plog_cursor_get(svc->log, r->consumer, ti, p);
            ps->read_pos = ps->committed;
            /* Hold retention from here on (a consumer holds only the
             * partitions it has a cursor on). */
            spool_plog_cursor_set(svc->log, r->consumer, ti, p, ps->committed);
        }
    }
    /* Saved at once, so `spool topics` shows the lag of an output that never
     * delivered anything. */
    r->cursor_dirty = 1;
    r->cursor_unwritten = 1;
    if (ins->out.dead_letter_topic) {
        r->dl = spool__instance_new(&dead_letter_plugin, SPOOL_PLUGIN_INPUT, ins->index, NULL);
        if (!r->dl) {
            return -ENOMEM;
        }
        free(r->dl->name);
        char nm[300];
        snprintf(nm, sizeof(nm), "%s.dead_letter", ins->name);
        r->dl->name = strdup(nm);
        r->dl->svc = svc;
        r->dl->topic = spool_plog_topic_index(svc->log, ins->out.dead_letter_topic);
        r->dl->in.topic = strdup(ins->out.dead_letter_topic);
    }
    if (pthread_create(&r->thread, NULL, runner_main, r) != 0) {
        return -EAGAIN;
    }
    r->running = 1;
    return 0;
}

void spool__output_join(spool_service *svc, spool_instance *ins)
{
    spool_output_runner *r = ins->runner;
    if (!r || !r->running) {
        return;
    }
    /* The runner stops by itself at the drain deadline unless a flush
     * blocks (a destination that accepts but never reads): then the
     * plugin's stop() must break it out, so shutdown_timeout holds. */
    int64_t left = svc->drain_deadline + 500 - spool_monotonic_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (left > 0) {
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
    }
    if (pthread_timedjoin_np(r->thread, NULL, &ts) != 0) {
        spool_log_warn(ins, "still delivering at the shutdown deadline: interrupting it");
        atomic_store(&ins->stopping, 1);
        if (ins->plugin->stop) {
            ins->plugin->stop(ins, ins->ctx);
        }
        pthread_join(r->thread, NULL);
    }
    r->running = 0;
}

/* Frees the runner after the plugin was destroyed (no completion can come). */
void spool__output_free(spool_instance *ins)
{
    spool_output_runner *r = ins->runner;
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->nslots; i++) {
        slot_clear_marks(&r->slots[i]);
        free(r->slots[i].reason);
        spool_buf_free(&r->slots[i].raw);
        spool_rb_decoded_free(&r->slots[i].dec);
        spool__mem_release(r->slots[i].mem);
    }
    free(r->slots);
    free(r->parts);
    spool__instance_free(r->dl);
    pthread_mutex_destroy(&r->lock);
    free(r);
    ins->runner = NULL;
}
