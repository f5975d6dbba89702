/*
 * kafka_delivery.c: librdkafka's delivery reports drive the kafka output's
 * cursor. Each chunk flush() produced has a kafka_pending; every report
 * for one of its records counts down; when the last one arrives the chunk
 * is completed with spool_output_complete(): SPOOL_OK if Kafka
 * acknowledged every record, SPOOL_REJECT if a record can never be
 * accepted (too large, invalid topic), otherwise SPOOL_RETRY, so the core
 * backs off and sends the chunk again (at least once: records of that chunk
 * already acknowledged are then duplicated in Kafka, and counted in
 * `redelivered`). The core commits cursors in offset order, so the cursor
 * passes a record only once it and every record before it were acked.
 *
 * One thread of ours serves rd_kafka_poll(); librdkafka's own threads call
 * the log and error callbacks. The poll thread holds ctx->rk_lock for
 * reading while it polls, so flush() may replace the producer after a
 * fatal error under the write lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_int.h"

kafka_pending *kafka_pending_new(kafka_ctx *ctx, const spool_chunk *chunk, size_t n)
{
    kafka_pending *p = calloc(1, sizeof(*p));

    if (!p) {
        return NULL;
    }
    p->ctx = ctx;
    p->chunk = chunk;
    atomic_init(&p->remaining, n + 1);
    atomic_init(&p->acked, 0);
    atomic_init(&p->result, SPOOL_OK);
    atomic_init(&p->first_err, 0);
    p->started_ms = spool_monotonic_ms();
    atomic_fetch_add(&ctx->outstanding, 1);
    return p;
}

/* Completes the chunk once the last reference is gone. */
static void kafka_pending_finish(kafka_pending *p)
{
    kafka_ctx *ctx = p->ctx;
    spool_instance *ins = ctx->ins;
    int result = atomic_load(&p->result);
    rd_kafka_resp_err_t err = (rd_kafka_resp_err_t)atomic_load(&p->first_err);
    size_t acked = atomic_load(&p->acked);
    char reason[256];

    if (result != SPOOL_OK) {
        snprintf(reason, sizeof(reason), "kafka: %s: %s", rd_kafka_err2name(err),
                 rd_kafka_err2str(err));
        if (result == SPOOL_RETRY) {
            spool_count(ins, SPOOL_COUNT_RETRIES, 1);
            if (acked && ctx->redelivered) {
                spool_counter_add(ctx->redelivered, acked);
            }
        }
        if (err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION && ctx->partitioner == KAFKA_PART_SAME) {
            spool_log_error(ins,
                            "Kafka topic %s has no partition %d: partitioner: same needs at "
                            "least as many Kafka partitions as the spool topic %s has",
                            p->err_topic, (int)p->chunk->partition, p->chunk->topic);
        }
        spool_log_error(ins,
                        "%zu of %zu records of %s[%d] offsets %lld..%lld not delivered to "
                        "Kafka topic %s: %s%s",
                        p->chunk->count - acked, p->chunk->count, p->chunk->topic,
                        (int)p->chunk->partition, (long long)p->chunk->first_offset,
                        (long long)p->chunk->next_offset - 1, p->err_topic, reason,
                        result == SPOOL_RETRY ? "; the chunk will be sent again"
                                              : "; the chunk goes to the dead-letter topic");
    }
    spool_log_debug(ins, "%s[%d] offsets %lld..%lld: %zu records acknowledged in %lld ms",
                    p->chunk->topic, (int)p->chunk->partition, (long long)p->chunk->first_offset,
                    (long long)p->chunk->next_offset - 1, acked,
                    (long long)(spool_monotonic_ms() - p->started_ms));
    if (atomic_load(&ctx->complete_allowed)) {
        spool_output_complete(ins, p->chunk, result, result == SPOOL_OK ? NULL : reason);
    }
    atomic_fetch_sub(&ctx->outstanding, 1);
    free(p);
}

void kafka_pending_release(kafka_pending *p, size_t n)
{
    if (n && atomic_fetch_sub(&p->remaining, n) == n) {
        kafka_pending_finish(p);
    }
}

/* 1 for errors no retry can fix: the record itself is unacceptable. */
static int kafka_err_is_reject(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

void kafka_pending_fail(kafka_pending *p, rd_kafka_resp_err_t err, const char *ktopic, size_t n)
{
    int want = kafka_err_is_reject(err) ? SPOOL_REJECT : SPOOL_RETRY;
    int cur = atomic_load(&p->result);
    int expected = 0;

    while (cur < want && !atomic_compare_exchange_weak(&p->result, &cur, want)) {
    }
    if (atomic_compare_exchange_strong(&p->first_err, &expected, (int)err)) {
        snprintf(p->err_topic, sizeof(p->err_topic), "%s", ktopic ? ktopic : "?");
    }
    kafka_pending_release(p, n);
}

void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kafka_pending *p = m->_private;
    kafka_ctx *ctx = opaque;

    if (!p) {
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(&p->acked, 1);
        kafka_pending_release(p, 1);
        return;
    }
    /* Purges happen on shutdown and after fatal errors: not the broker's
     * fault, so not counted as errors. The chunk's outcome is logged once
     * when it completes. */
    if (m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE && m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        spool_count(ctx->ins, SPOOL_COUNT_ERRORS, 1);
    }
    kafka_pending_fail(p, m->err, rd_kafka_topic_name(m->rkt), 1);
}

void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_ctx *ctx = opaque;
    char fatal[512];
    rd_kafka_resp_err_t ferr;

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        ferr = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        spool_log_error(ctx->ins, "fatal producer error %s: %s; the producer will be recreated",
                        rd_kafka_err2name(ferr), fatal);
        spool_count(ctx->ins, SPOOL_COUNT_ERRORS, 1);
        if (ctx->fatal_errors) {
            spool_counter_add(ctx->fatal_errors, 1);
        }
        atomic_store(&ctx->fatal, 1);
        return;
    }
    /* Connection problems are retried by librdkafka: warn (rate-limited by
     * the core), with the error's name so users can look it up. */
    spool_log_warn(ctx->ins, "kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kafka_ctx *ctx = rd_kafka_opaque(rk);
    spool_instance *ins = ctx ? ctx->ins : NULL;

    /* syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug. */
    if (level <= 3) {
        spool_log_error(ins, "librdkafka %s: %s", fac, buf);
    } else if (level == 4) {
        spool_log_warn(ins, "librdkafka %s: %s", fac, buf);
    } else if (level <= 6) {
        spool_log_info(ins, "librdkafka %s: %s", fac, buf);
    } else {
        spool_log_debug(ins, "librdkafka %s: %s", fac, buf);
    }
}

static void *kafka_poll_main(void *arg)
{
    kafka_ctx *ctx = arg;

    while (!atomic_load(&ctx->poll_stop)) {
        pthread_rwlock_rdlock(&ctx->rk_lock);
        if (ctx->rk) {
            rd_kafka_poll(ctx->rk, 100);
        }
        pthread_rwlock_unlock(&ctx->rk_lock);
    }
    return NULL;
}

int kafka_poll_start(kafka_ctx *ctx)
{
    int rc;

    atomic_store(&ctx->poll_stop, 0);
    rc = pthread_create(&ctx->poll_thread, NULL, kafka_poll_main, ctx);
    if (rc) {
        return -rc;
    }
    ctx->poll_running = 1;
    return 0;
}

void kafka_poll_stop(kafka_ctx *ctx)
{
    if (!ctx->poll_running) {
        return;
    }
    atomic_store(&ctx->poll_stop, 1);
    pthread_join(ctx->poll_thread, NULL);
    ctx->poll_running = 0;
}
