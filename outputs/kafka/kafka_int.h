/*
 * kafka_int.h: internals of the kafka output shared by its files:
 * kafka.c (callbacks, option table, flush), kafka_conf.c (librdkafka
 * configuration and `spool check`), kafka_delivery.c (delivery reports,
 * the poll thread, per-chunk accounting).
 */
#ifndef SPOOL_KAFKA_INT_H
#define SPOOL_KAFKA_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "spool/spool.h"

enum kafka_partitioner {
    KAFKA_PART_MURMUR2 = 0, /* the Java client's default: murmur2 of the key */
    KAFKA_PART_SAME = 1,    /* spool's partition number */
};

/* A Kafka topic handle, cached by name (templates render many names). */
typedef struct kafka_topic {
    char *name;
    rd_kafka_topic_t *rkt;
} kafka_topic;

/*
 * Accounting for one chunk handed to flush() that returned SPOOL_PENDING.
 * `remaining` starts at the record count plus one guard the flush thread
 * drops when it has produced everything; whoever brings it to zero (the
 * poll thread's last delivery report, or flush itself) completes the chunk
 * and frees this.
 */
typedef struct kafka_pending {
    struct kafka_ctx *ctx;
    const spool_chunk *chunk; /* valid until spool_output_complete */
    atomic_size_t remaining;  /* reports still expected + 1 guard */
    atomic_size_t acked;      /* records Kafka acknowledged */
    atomic_int result;        /* worst outcome so far: OK < RETRY < REJECT */
    atomic_int first_err;     /* rd_kafka_resp_err_t of the first failure, 0 = none */
    int64_t started_ms;       /* monotonic ms when flush began producing */
    char err_topic[128];      /* Kafka topic of the first failure (written by its winner) */
} kafka_pending;

typedef struct kafka_ctx {
    /* Filled from the option table (owned by the core). */
    spool_strlist brokers;   /* host:port list */
    char *kafka_topic;       /* topic name or template */
    int partitioner;         /* enum kafka_partitioner */
    int compression;         /* index into kafka_compression_names */
    int acks;                /* index into kafka_acks_names */
    int idempotence;         /* enable.idempotence */
    int64_t kafka_linger;    /* linger.ms, milliseconds */
    int64_t batch_size;      /* batch.size, bytes */
    int64_t batch_records;   /* batch.num.messages */
    int64_t message_timeout; /* message.timeout.ms, milliseconds; 0 = forever */
    int64_t queue_bytes;     /* queue.buffering.max.kbytes, bytes */
    spool_strmap properties; /* any further librdkafka property */

    /* Runtime (owned by the plugin). */
    spool_instance *ins;
    spool_template *topic_tpl; /* NULL when kafka_topic is a literal */
    rd_kafka_t *rk;
    pthread_rwlock_t rk_lock; /* write-held only to replace rk after a fatal error */
    int rk_lock_init;
    kafka_topic *topics; /* cache of topic handles */
    size_t topic_count;
    size_t topic_cap;
    size_t topic_last; /* index of the last topic used */
    pthread_t poll_thread;
    int poll_running;
    atomic_int poll_stop;
    atomic_size_t outstanding;   /* chunks pending completion */
    atomic_int fatal;            /* 1 after librdkafka reported a fatal error */
    atomic_int complete_allowed; /* 0 during destroy: do not call back into the core */
    spool_counter *redelivered;  /* records acked in chunks that were then retried */
    spool_counter *fatal_errors;
    char *scratch; /* topic name rendering buffer */
    size_t scratch_cap;
} kafka_ctx;

extern const char *const kafka_compression_names[];
extern const char *const kafka_acks_names[];

/*
 * Builds the librdkafka configuration from the options: defaults first,
 * then `properties`. With ins_for_errors set (spool check), every rejected
 * setting is reported with spool_config_error and building continues; at
 * runtime errors are logged. On success *out owns a conf (callbacks not
 * set). Returns 0 or -EINVAL. Any thread.
 */
int kafka_conf_build(kafka_ctx *ctx, spool_instance *ins, int report, rd_kafka_conf_t **out);

/* The check() callback: options, template and librdkafka settings. */
int kafka_check(spool_instance *ins, void *vctx);

/* Creates the producer (ctx->rk) with callbacks. 0 or -EINVAL. Output thread. */
int kafka_producer_create(kafka_ctx *ctx);

/* Starts/stops the thread serving delivery reports. */
int kafka_poll_start(kafka_ctx *ctx);
void kafka_poll_stop(kafka_ctx *ctx);

/* Delivery report callback (rd_kafka_conf_set_dr_msg_cb). Poll thread. */
void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
/* Error and log callbacks routing librdkafka's messages to spool's log. */
void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);
void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* A new pending record for a chunk of n records. NULL on ENOMEM. */
kafka_pending *kafka_pending_new(kafka_ctx *ctx, const spool_chunk *chunk, size_t n);
/* Records the failure of `n` records of p with err (classifying it), then
 * drops n references; the last one completes the chunk. Any thread. */
void kafka_pending_fail(kafka_pending *p, rd_kafka_resp_err_t err, const char *ktopic, size_t n);
/* Drops n references after success; the last completes the chunk. */
void kafka_pending_release(kafka_pending *p, size_t n);

#endif /* SPOOL_KAFKA_INT_H */
