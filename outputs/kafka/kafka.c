/*
 * kafka.c: the `kafka` output. It produces the records of each chunk the
 * core hands to flush() into Kafka with librdkafka: the record key as the
 * Kafka key, its headers as Kafka headers, its timestamp as the message
 * timestamp, into `kafka_topic` (a name, or a template rendered per record)
 * and the partition `partitioner` picks: murmur2 of the key as the Java
 * client does (librdkafka's murmur2_random; unkeyed records go to a sticky
 * random partition), or `same`, spool's own partition number.
 *
 * flush() returns SPOOL_PENDING; delivery reports (kafka_delivery.c)
 * complete the chunk. librdkafka retries retriable errors itself, for ever
 * by default (message_timeout 0), with the idempotent producer so a
 * producer session writes each record once and in order. Invariants:
 * records of one spool partition are produced in offset order by the one
 * output thread; a chunk completes exactly once.
 *
 * Not done here: transactions (exactly-once across restarts): a restart
 * or a retried chunk may duplicate records already acknowledged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kafka_int.h"

static const char *const kafka_partitioner_names[] = {"murmur2", "same", NULL};

static const spool_option kafka_options[] = {
    SPOOL_OPT_STRLIST("brokers", kafka_ctx, brokers, 1, "bootstrap brokers, host:port"),
    SPOOL_OPT_STR("kafka_topic", kafka_ctx, kafka_topic, NULL, 1,
                  "Kafka topic: a name or a template such as logs.{{ input }}"),
    SPOOL_OPT_CHOICE("partitioner", kafka_ctx, partitioner, "murmur2", kafka_partitioner_names,
                     "murmur2 (the key's partition, as Kafka's Java client) or same (spool's)"),
    SPOOL_OPT_CHOICE("compression", kafka_ctx, compression, "none", kafka_compression_names,
                     "compression of message batches: none, gzip, snappy, lz4, zstd"),
    SPOOL_OPT_CHOICE("acks", kafka_ctx, acks, "all", kafka_acks_names,
                     "acknowledgements the leader waits for: all, 1, 0"),
    SPOOL_OPT_FLAG("idempotence", kafka_ctx, idempotence, "true",
                   "idempotent producer: no duplicates or reordering within a session"),
    SPOOL_OPT_TIME("kafka_linger", kafka_ctx, kafka_linger, "5ms", 0, 900000,
                   "librdkafka linger.ms: wait this long to fill a message batch"),
    SPOOL_OPT_BYTES("batch_size", kafka_ctx, batch_size, "1MiB", 1, 2147483647,
                    "librdkafka batch.size: bytes per message batch"),
    SPOOL_OPT_INTEGER("batch_records", kafka_ctx, batch_records, "10000", 1, 1000000,
                      "librdkafka batch.num.messages: records per message batch"),
    SPOOL_OPT_TIME("message_timeout", kafka_ctx, message_timeout, "0", 0, 2147483647,
                   "give up on a record after this long (0 = retry for ever)"),
    SPOOL_OPT_BYTES("queue_bytes", kafka_ctx, queue_bytes, "256MiB", 1024, 2147483647LL * 1024,
                    "librdkafka's producer queue limit in bytes"),
    SPOOL_OPT_STRMAP("properties", kafka_ctx, properties,
                     "further librdkafka properties (security.protocol, sasl.*, ssl.*...)"),
    SPOOL_OPT_END,
};

int kafka_producer_create(kafka_ctx *ctx)
{
    rd_kafka_conf_t *conf = NULL;
    char errstr[512];

    if (kafka_conf_build(ctx, ctx->ins, 0, &conf)) {
        return -EINVAL;
    }
    rd_kafka_conf_set_opaque(conf, ctx);
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    ctx->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!ctx->rk) {
        rd_kafka_conf_destroy(conf);
        spool_log_error(ctx->ins, "cannot create the Kafka producer: %s", errstr);
        return -EINVAL;
    }
    return 0;
}

static void kafka_topics_clear(kafka_ctx *ctx)
{
    for (size_t i = 0; i < ctx->topic_count; i++) {
        rd_kafka_topic_destroy(ctx->topics[i].rkt);
        free(ctx->topics[i].name);
    }
    ctx->topic_count = 0;
    ctx->topic_last = 0;
}

/* The cached handle of topic `name`, created on first use. NULL on ENOMEM
 * or if librdkafka refuses the name (*err says which). Output thread. */
static rd_kafka_topic_t *kafka_topic_get(kafka_ctx *ctx, const char *name, rd_kafka_resp_err_t *err)
{
    kafka_topic *t;

    if (ctx->topic_last < ctx->topic_count && !strcmp(ctx->topics[ctx->topic_last].name, name)) {
        return ctx->topics[ctx->topic_last].rkt;
    }
    for (size_t i = 0; i < ctx->topic_count; i++) {
        if (!strcmp(ctx->topics[i].name, name)) {
            ctx->topic_last = i;
            return ctx->topics[i].rkt;
        }
    }
    if (ctx->topic_count == ctx->topic_cap) {
        size_t cap = ctx->topic_cap ? ctx->topic_cap * 2 : 8;
        kafka_topic *n = realloc(ctx->topics, cap * sizeof(*n));
        if (!n) {
            *err = RD_KAFKA_RESP_ERR__FAIL;
            return NULL;
        }
        ctx->topics = n;
        ctx->topic_cap = cap;
    }
    t = &ctx->topics[ctx->topic_count];
    t->name = strdup(name);
    if (!t->name) {
        *err = RD_KAFKA_RESP_ERR__FAIL;
        return NULL;
    }
    t->rkt = rd_kafka_topic_new(ctx->rk, name, NULL);
    if (!t->rkt) {
        *err = rd_kafka_last_error();
        spool_log_error(ctx->ins, "Kafka topic '%s': %s", name, rd_kafka_err2str(*err));
        free(t->name);
        return NULL;
    }
    ctx->topic_last = ctx->topic_count++;
    return t->rkt;
}

/* The topic handle for record r: the literal topic, or the template
 * rendered over r. NULL with *err set when it cannot be had. */
static rd_kafka_topic_t *kafka_topic_for(kafka_ctx *ctx, const spool_chunk *chunk,
                                         const spool_record *r, rd_kafka_resp_err_t *err)
{
    size_t n;

    if (!ctx->topic_tpl) {
        return kafka_topic_get(ctx, ctx->kafka_topic, err);
    }
    n = spool_template_render(ctx->topic_tpl, r, chunk->topic, NULL, ctx->scratch,
                              ctx->scratch_cap);
    if (n >= ctx->scratch_cap) {
        char *s = realloc(ctx->scratch, n + 1);
        if (!s) {
            *err = RD_KAFKA_RESP_ERR__FAIL;
            return NULL;
        }
        ctx->scratch = s;
        ctx->scratch_cap = n + 1;
        spool_template_render(ctx->topic_tpl, r, chunk->topic, NULL, ctx->scratch,
                              ctx->scratch_cap);
    }
    ctx->scratch[n] = '\0'; /* the renderer does not terminate */
    /* Kafka topic names: 1 to 249 characters. */
    if (n == 0 || n > 249) {
        spool_log_error(ctx->ins, "kafka_topic renders to %s name (%zu bytes) for offset %lld",
                        n ? "a too long" : "an empty", n, (long long)r->offset);
        *err = RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION;
        return NULL;
    }
    return kafka_topic_get(ctx, ctx->scratch, err);
}

/* Produces record r; returns 0 or the error (then the record is not
 * queued). Waits while librdkafka's queue is full, unless stopping. */
static rd_kafka_resp_err_t kafka_produce_one(kafka_ctx *ctx, const spool_chunk *chunk,
                                             const spool_record *r, kafka_pending *p)
{
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_t *rkt = kafka_topic_for(ctx, chunk, r, &err);
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_vu_t vu[8];
    size_t n = 0;

    if (!rkt) {
        return err;
    }
    vu[n].vtype = RD_KAFKA_VTYPE_RKT;
    vu[n++].u.rkt = rkt;
    vu[n].vtype = RD_KAFKA_VTYPE_PARTITION;
    vu[n++].u.i32 = ctx->partitioner == KAFKA_PART_SAME ? chunk->partition : RD_KAFKA_PARTITION_UA;
    /* No copy: the value points into the chunk, which stays valid until
     * spool_output_complete, and that comes only after every record's
     * delivery report (or purge). librdkafka copies the key itself. */
    vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[n++].u.i = 0;
    vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[n].u.mem.ptr = r->value_len >= 0 ? (void *)r->value : NULL;
    vu[n++].u.mem.size = r->value_len >= 0 ? (size_t)r->value_len : 0;
    if (r->key && r->key_len >= 0) {
        vu[n].vtype = RD_KAFKA_VTYPE_KEY;
        vu[n].u.mem.ptr = (void *)r->key;
        vu[n++].u.mem.size = (size_t)r->key_len;
    }
    if (r->timestamp > 0) {
        vu[n].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
        vu[n++].u.i64 = r->timestamp;
    }
    vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[n++].u.ptr = p;
    for (;;) {
        rd_kafka_error_t *e;
        size_t used = n;
        if (r->header_count) {
            hdrs = rd_kafka_headers_new(r->header_count);
            for (uint32_t i = 0; i < r->header_count; i++) {
                const spool_header *h = &r->headers[i];
                rd_kafka_header_add(hdrs, h->key, (ssize_t)h->key_len,
                                    h->value_len >= 0 ? h->value : NULL,
                                    h->value_len >= 0 ? (ssize_t)h->value_len : 0);
            }
            vu[used].vtype = RD_KAFKA_VTYPE_HEADERS;
            vu[used++].u.headers = hdrs;
        }
        e = rd_kafka_produceva(ctx->rk, vu, used);
        if (!e) {
            return RD_KAFKA_RESP_ERR_NO_ERROR; /* librdkafka owns hdrs now */
        }
        err = rd_kafka_error_code(e);
        rd_kafka_error_destroy(e);
        rd_kafka_headers_destroy(hdrs);
        hdrs = NULL;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || spool_instance_stopping(ctx->ins) ||
            atomic_load(&ctx->fatal)) {
            return err;
        }
        usleep(2000); /* the poll thread frees room as reports arrive */
    }
}

/* After a fatal error: once every chunk of the old producer is completed,
 * replace it. Returns 0 when a usable producer is in place. */
static int kafka_producer_recover(kafka_ctx *ctx)
{
    int rc;

    if (atomic_load(&ctx->outstanding) > 0) {
        if (ctx->rk) {
            rd_kafka_purge(ctx->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        }
        return -EAGAIN;
    }
    pthread_rwlock_wrlock(&ctx->rk_lock);
    if (ctx->rk) {
        kafka_topics_clear(ctx);
        rd_kafka_destroy(ctx->rk);
        ctx->rk = NULL;
    }
    atomic_store(&ctx->fatal, 0);
    rc = kafka_producer_create(ctx);
    pthread_rwlock_unlock(&ctx->rk_lock);
    if (rc == 0) {
        spool_log_info(ctx->ins, "Kafka producer recreated after a fatal error");
    }
    return rc;
}

static int kafka_flush(spool_instance *ins, void *vctx, const spool_chunk *chunk)
{
    kafka_ctx *ctx = vctx;
    kafka_pending *p;
    size_t one = 1;
    int result;

    if ((atomic_load(&ctx->fatal) || !ctx->rk) && kafka_producer_recover(ctx)) {
        spool_count(ins, SPOOL_COUNT_RETRIES, 1);
        return SPOOL_RETRY;
    }
    if (chunk->count == 0) {
        return SPOOL_OK;
    }
    p = kafka_pending_new(ctx, chunk, chunk->count);
    if (!p) {
        return SPOOL_RETRY;
    }
    for (size_t i = 0; i < chunk->count; i++) {
        rd_kafka_resp_err_t err = kafka_produce_one(ctx, chunk, &chunk->records[i], p);
        if (err) {
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                spool_count(ins, SPOOL_COUNT_ERRORS, 1);
                spool_log_error(ins, "cannot produce %s[%d] offset %lld: %s (%s)", chunk->topic,
                                (int)chunk->partition, (long long)chunk->records[i].offset,
                                rd_kafka_err2name(err), rd_kafka_err2str(err));
            }
            /* The rest of the chunk is not produced: it is sent again. */
            kafka_pending_fail(p, err, ctx->topic_tpl ? ctx->scratch : ctx->kafka_topic,
                               chunk->count - i);
            break;
        }
    }
    /* Drop the guard. If nothing is outstanding any more, answer now. */
    if (atomic_compare_exchange_strong(&p->remaining, &one, 0)) {
        result = atomic_load(&p->result);
        if (result == SPOOL_RETRY) {
            spool_count(ins, SPOOL_COUNT_RETRIES, 1);
            if (atomic_load(&p->acked) && ctx->redelivered) {
                spool_counter_add(ctx->redelivered, atomic_load(&p->acked));
            }
        } else if (result == SPOOL_REJECT) {
            spool_output_set_reject_reason(
                ins, rd_kafka_err2str((rd_kafka_resp_err_t)atomic_load(&p->first_err)));
        }
        atomic_fetch_sub(&ctx->outstanding, 1);
        free(p);
        return result;
    }
    spool_log_debug(ins, "%s[%d] offsets %lld..%lld: %zu records produced in %lld ms", chunk->topic,
                    (int)chunk->partition, (long long)chunk->first_offset,
                    (long long)chunk->next_offset - 1, chunk->count,
                    (long long)(spool_monotonic_ms() - p->started_ms));
    kafka_pending_release(p, 1);
    return SPOOL_PENDING;
}

static int kafka_init(spool_instance *ins, void *vctx)
{
    kafka_ctx *ctx = vctx;
    const char *terr = NULL;
    pthread_rwlockattr_t attr;
    int rc;

    ctx->ins = ins;
    atomic_init(&ctx->outstanding, 0);
    atomic_init(&ctx->fatal, 0);
    atomic_init(&ctx->complete_allowed, 1);
    atomic_init(&ctx->poll_stop, 0);
    if (!ctx->kafka_topic || !ctx->kafka_topic[0]) {
        spool_config_error(ins, "kafka_topic", "a Kafka topic name or template is needed");
        return -EINVAL;
    }
    ctx->topic_tpl = spool_template_compile(ctx->kafka_topic, &terr);
    if (!ctx->topic_tpl) {
        spool_config_error(ins, "kafka_topic", "bad template: %s", terr ? terr : "syntax");
        return -EINVAL;
    }
    if (spool_template_is_literal(ctx->topic_tpl)) {
        spool_template_destroy(ctx->topic_tpl);
        ctx->topic_tpl = NULL;
    }
    ctx->scratch_cap = 256;
    ctx->scratch = malloc(ctx->scratch_cap);
    if (!ctx->scratch) {
        return -ENOMEM;
    }
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    rc = pthread_rwlock_init(&ctx->rk_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc) {
        return -rc;
    }
    ctx->rk_lock_init = 1;
    ctx->redelivered = spool_counter_register(
        ins, "redelivered_records",
        "records Kafka had acknowledged in chunks that were then sent again (duplicates)");
    ctx->fatal_errors =
        spool_counter_register(ins, "fatal_errors", "fatal producer errors (producer recreated)");
    rc = kafka_producer_create(ctx);
    if (rc) {
        return rc;
    }
    return kafka_poll_start(ctx);
}

/* Waits up to timeout_ms for every pending chunk to be completed. */
static int kafka_wait_outstanding(kafka_ctx *ctx, int64_t timeout_ms)
{
    int64_t deadline = spool_monotonic_ms() + timeout_ms;

    while (atomic_load(&ctx->outstanding) > 0) {
        if (spool_monotonic_ms() >= deadline) {
            return -ETIMEDOUT;
        }
        if (ctx->poll_running) {
            usleep(5000);
        } else {
            rd_kafka_poll(ctx->rk, 10);
        }
    }
    return 0;
}

static void kafka_drain(spool_instance *ins, void *vctx, int64_t timeout_ms)
{
    kafka_ctx *ctx = vctx;
    size_t left;

    if (!ctx->rk) {
        return;
    }
    rd_kafka_flush(ctx->rk, timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms);
    if (kafka_wait_outstanding(ctx, 1000) == 0) {
        return;
    }
    left = (size_t)rd_kafka_outq_len(ctx->rk);
    spool_log_warn(ins,
                   "%zu messages not acknowledged by Kafka at shutdown; their chunks will "
                   "be sent again after restart",
                   left);
    rd_kafka_purge(ctx->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    if (kafka_wait_outstanding(ctx, 5000)) {
        spool_log_error(ins, "%zu chunks still pending after purge",
                        (size_t)atomic_load(&ctx->outstanding));
    }
}

static void kafka_destroy(spool_instance *ins, void *vctx)
{
    kafka_ctx *ctx = vctx;

    if (ctx->rk && atomic_load(&ctx->outstanding) > 0) {
        rd_kafka_purge(ctx->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        kafka_wait_outstanding(ctx, 5000);
    }
    kafka_poll_stop(ctx);
    if (ctx->rk) {
        kafka_topics_clear(ctx);
        rd_kafka_destroy(ctx->rk);
        ctx->rk = NULL;
    }
    free(ctx->topics);
    ctx->topics = NULL;
    spool_template_destroy(ctx->topic_tpl);
    ctx->topic_tpl = NULL;
    free(ctx->scratch);
    ctx->scratch = NULL;
    if (ctx->rk_lock_init) {
        pthread_rwlock_destroy(&ctx->rk_lock);
        ctx->rk_lock_init = 0;
    }
}

const spool_plugin spool_plugin_kafka = {
    SPOOL_PLUGIN_ABI, /* with the signature: also built as an external .so */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "kafka",
    .description = "produce records to Kafka (librdkafka), keys, headers and timestamps kept",
    .options = kafka_options,
    .context_size = sizeof(kafka_ctx),
    .check = kafka_check,
    .init = kafka_init,
    .flush = kafka_flush,
    .drain = kafka_drain,
    .destroy = kafka_destroy,
};
