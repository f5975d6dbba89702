/*
 * kafka_in.c: the `kafka` input. A librdkafka consumer in the consumer
 * group `group_id` reads `topics` and turns each Kafka message into a
 * spool record: Kafka key -> key, value -> value, headers -> headers,
 * Kafka timestamp -> timestamp. The run thread takes messages from the
 * consumer queue (up to 1000 per call), fills one batch (up to
 * batch_records records or batch_wait), and submits it without waiting for
 * durability (the next batch is read meanwhile).
 *
 * Positions: each batch carries, per Kafka (topic, partition) it holds,
 * the source position "<topic>/<partition>" = the next offset (decimal
 * text), so spool's checkpoint stores it atomically with the records: after
 * a kill -9 the log holds exactly the records before the stored offsets.
 * Offsets are committed to Kafka asynchronously once the position store
 * shows them durable (read back after each batch and when idle), for lag
 * tools and for the next owner of a partition.
 *
 * Assignment (the rebalance callback on the run thread): a partition starts
 * at max(spool's durable position, the group's committed offset); with
 * neither, at start_from (auto.offset.reset). Kafka's offset is never ahead
 * of a durable position of the node that committed it (commits follow
 * durability), so a larger committed offset means another node made those
 * records durable, and a larger local position means this node made them
 * durable but died before committing: either way no record is read twice.
 * Revocation: the batch being filled is submitted, everything submitted is
 * waited for until durable, its offsets are committed to Kafka
 * SYNCHRONOUSLY, then the partitions are unassigned; so the next owner
 * starts exactly after what this node holds.
 *
 * The group uses incremental (cooperative-sticky) rebalancing: a partition
 * moves only when it must, and a node killed -9 and restarted before its
 * session timeout gets back exactly the partitions it held (they had no
 * other owner meanwhile: the dead member keeps them until its session
 * expires), so it resumes at its own durable positions even for records it
 * had not yet committed to Kafka; the other nodes keep their partitions and
 * are not even revoked. Under eager rebalancing ("range") a restarted node
 * gets a new member id and often another node's partitions, whose durable
 * but uncommitted records are then read twice. The one window left is a
 * node down longer than session_timeout: its partitions move at Kafka's
 * committed offsets, and the records it had made durable but not yet
 * committed (at most about one batch: commits follow each batch) are read
 * again by the new owner (docs/kafka.md).
 *
 * Invariants: only the run thread touches the consumer, the batch and the
 * partition table; no malloc per record beyond spool_batch_append (the
 * header array grows only to the largest header count seen).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "spool/spool.h"

typedef struct kin_part {
    char *topic;
    int32_t partition;
    int64_t next;    /* next offset after the records read into the batch; -1 none */
    int64_t sent;    /* next offset after the records submitted to the pipeline; -1 none */
    int64_t durable; /* next offset after the records durable in the log; -1 none */
    int committed;   /* durable was committed to Kafka */
    int64_t acked;   /* the offset Kafka confirmed committed (or the start); -1 none */
} kin_part;

typedef struct kin_ctx {
    /* options */
    spool_strlist brokers;
    spool_strlist topics;
    char *group_id;
    int start_from; /* 0 earliest, 1 latest */
    int64_t batch_records;
    int64_t batch_wait;
    int64_t commit_timeout;
    int64_t session_timeout;
    spool_strmap rdkafka;
    /* state */
    spool_instance *ins;
    rd_kafka_t *rk;
    spool_batch *batch;
    kin_part *parts;
    size_t nparts, cap_parts;
    size_t last_part;
    spool_header *hdrs;
    size_t cap_hdrs;
    int fatal;
    int closed;         /* rd_kafka_consumer_close done */
    spool_counter *lag; /* gauge: records read whose offsets Kafka has not confirmed */
    spool_counter *commit_errors;
    spool_counter *assigned; /* gauge: partitions assigned to this node */
} kin_ctx;

/* Messages taken from the consumer queue per call. */
#define KIN_POLL_MAX 1000

static const char *const kin_start_names[] = {"earliest", "latest", NULL};

static const spool_option kin_options[] = {
    SPOOL_OPT_STRLIST("brokers", kin_ctx, brokers, 1, "bootstrap brokers, host:port"),
    SPOOL_OPT_STRLIST("topics", kin_ctx, topics, 1, "Kafka topics to consume"),
    SPOOL_OPT_STR("group_id", kin_ctx, group_id, NULL, 1, "Kafka consumer group id"),
    SPOOL_OPT_CHOICE("start_from", kin_ctx, start_from, "earliest", kin_start_names,
                     "where a partition without any stored offset starts: earliest or latest"),
    SPOOL_OPT_INTEGER("batch_records", kin_ctx, batch_records, "10000", 1, 1000000,
                      "records per batch submitted to the log"),
    SPOOL_OPT_TIME("batch_wait", kin_ctx, batch_wait, "100ms", 1, 60000,
                   "submit a partly filled batch after this long"),
    SPOOL_OPT_TIME("commit_timeout", kin_ctx, commit_timeout, "10s", 1, 600000,
                   "how long a rebalance waits for the synchronous commit to Kafka"),
    SPOOL_OPT_TIME("session_timeout", kin_ctx, session_timeout, "45s", 1000, 1800000,
                   "a node silent this long leaves the group and its partitions move; one "
                   "restarted sooner gets them back and stays exactly once"),
    SPOOL_OPT_STRMAP("librdkafka", kin_ctx, rdkafka,
                     "further librdkafka consumer properties (security.protocol, ssl.*, sasl.*)"),
    SPOOL_OPT_END,
};

/* Properties the input sets itself: overriding them would break positions. */
static const char *const kin_reserved[] = {
    "enable.auto.commit", "enable.auto.offset.store",
    "group.id",           "bootstrap.servers",
    "auto.offset.reset",  "partition.assignment.strategy",
    "session.timeout.ms", NULL,
};

static int kin_reserved_prop(const char *k)
{
    for (size_t i = 0; kin_reserved[i]; i++) {
        if (strcmp(kin_reserved[i], k) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Builds the consumer configuration; errors go to spool_config_error. */
static int kin_conf_build(kin_ctx *ctx, spool_instance *ins, rd_kafka_conf_t **out)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512], servers[4096], session[32], heartbeat[32];
    size_t used = 0;
    int rc = -EINVAL;

    servers[0] = '\0';
    for (size_t i = 0; i < ctx->brokers.count; i++) {
        if (spool_check_address(ins, "brokers", ctx->brokers.items[i], 0)) {
            goto out;
        }
        int n = snprintf(servers + used, sizeof(servers) - used, "%s%s", i ? "," : "",
                         ctx->brokers.items[i]);
        if (n < 0 || (size_t)n >= sizeof(servers) - used) {
            spool_config_error(ins, "brokers", "the broker list is too long");
            goto out;
        }
        used += (size_t)n;
    }
    /* The heartbeat a third of the session (librdkafka's default 3 s at most):
     * a live node is never taken for dead. */
    int64_t hb = ctx->session_timeout / 3 < 3000 ? ctx->session_timeout / 3 : 3000;
    snprintf(session, sizeof(session), "%" PRId64, ctx->session_timeout);
    snprintf(heartbeat, sizeof(heartbeat), "%" PRId64, hb);
    const char *fixed[][2] = {
        {"bootstrap.servers", servers},
        {"group.id", ctx->group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", ctx->start_from ? "latest" : "earliest"},
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"session.timeout.ms", session},
        {"heartbeat.interval.ms", heartbeat},
        {"client.id", spool_instance_name(ins)},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            spool_config_error(ins, NULL, "librdkafka refused %s: %s", fixed[i][0], errstr);
            goto out;
        }
    }
    for (size_t i = 0; i < ctx->rdkafka.count; i++) {
        const char *k = ctx->rdkafka.keys[i];
        char opt[300];

        snprintf(opt, sizeof(opt), "librdkafka.%s", k);
        if (kin_reserved_prop(k)) {
            spool_config_error(ins, opt,
                               "'%s' is set by the kafka input itself (use brokers, group_id, "
                               "start_from, session_timeout)",
                               k);
            goto out;
        }
        if (rd_kafka_conf_set(conf, k, ctx->rdkafka.values[i], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            spool_config_error(ins, opt, "%s", errstr);
            goto out;
        }
    }
    rc = 0;
out:
    if (rc || !out) {
        rd_kafka_conf_destroy(conf);
    } else {
        *out = conf;
    }
    return rc;
}

static int kin_check(spool_instance *ins, void *vctx)
{
    kin_ctx *ctx = vctx;

    if (ctx->group_id && ctx->group_id[0] == '\0') {
        spool_config_error(ins, "group_id", "the consumer group id must not be empty");
        return -EINVAL;
    }
    for (size_t i = 0; i < ctx->topics.count; i++) {
        if (ctx->topics.items[i][0] == '\0' || strchr(ctx->topics.items[i], '/')) {
            spool_config_error(ins, "topics", "'%s' is not a Kafka topic name",
                               ctx->topics.items[i]);
            return -EINVAL;
        }
    }
    return kin_conf_build(ctx, ins, NULL);
}

/* The table entry of (topic, partition); added when absent (NULL on ENOMEM). */
static kin_part *kin_part_get(kin_ctx *ctx, const char *topic, int32_t partition, int add)
{
    size_t i = ctx->last_part;

    if (i < ctx->nparts && ctx->parts[i].partition == partition &&
        strcmp(ctx->parts[i].topic, topic) == 0) {
        return &ctx->parts[i];
    }
    for (i = 0; i < ctx->nparts; i++) {
        if (ctx->parts[i].partition == partition && strcmp(ctx->parts[i].topic, topic) == 0) {
            ctx->last_part = i;
            return &ctx->parts[i];
        }
    }
    if (!add) {
        return NULL;
    }
    if (ctx->nparts == ctx->cap_parts) {
        size_t cap = ctx->cap_parts ? ctx->cap_parts * 2 : 16;
        kin_part *p = realloc(ctx->parts, cap * sizeof(*p));
        if (!p) {
            return NULL;
        }
        ctx->parts = p;
        ctx->cap_parts = cap;
    }
    kin_part *p = &ctx->parts[ctx->nparts];
    p->topic = strdup(topic);
    if (!p->topic) {
        return NULL;
    }
    p->partition = partition;
    p->next = -1;
    p->sent = -1;
    p->durable = -1;
    p->committed = 1;
    p->acked = -1;
    ctx->last_part = ctx->nparts++;
    return p;
}

static void kin_part_remove(kin_ctx *ctx, const char *topic, int32_t partition)
{
    kin_part *p = kin_part_get(ctx, topic, partition, 0);

    if (!p) {
        return;
    }
    free(p->topic);
    *p = ctx->parts[--ctx->nparts];
    ctx->last_part = 0;
}

static void kin_source(char *buf, size_t cap, const char *topic, int32_t partition)
{
    snprintf(buf, cap, "%s/%" PRId32, topic, partition);
}

/* The gauge of records read but not yet confirmed committed by Kafka: a
 * node with 0 has told Kafka everything its log holds (tests wait on it). */
static void kin_lag_update(kin_ctx *ctx)
{
    int64_t sum = 0;

    for (size_t i = 0; i < ctx->nparts; i++) {
        const kin_part *p = &ctx->parts[i];
        if (p->next >= 0 && p->acked >= 0 && p->next > p->acked) {
            sum += p->next - p->acked;
        }
    }
    spool_gauge_set(ctx->lag, sum);
}

/* Spool's durable next offset of (topic, partition), or -1. */
static int64_t kin_local_offset(kin_ctx *ctx, const char *topic, int32_t partition)
{
    char src[512], buf[32];
    size_t len = 0;
    char *end;

    kin_source(src, sizeof(src), topic, partition);
    if (spool_input_get_position(ctx->ins, src, buf, sizeof(buf) - 1, &len) || len == 0 ||
        len >= sizeof(buf)) {
        return -1;
    }
    buf[len] = '\0';
    long long v = strtoll(buf, &end, 10);
    return (*end || v < 0) ? -1 : (int64_t)v;
}

static void kin_refresh(kin_ctx *ctx);

/*
 * Commits the durable offsets not yet committed (only those of `only`'s
 * partitions when given) to Kafka; async or sync. Returns Kafka's answer
 * to a synchronous commit (0 for an async one or nothing to commit).
 */
static rd_kafka_resp_err_t kin_commit(kin_ctx *ctx, const rd_kafka_topic_partition_list_t *only,
                                      int async)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

    kin_refresh(ctx);
    l = rd_kafka_topic_partition_list_new((int)ctx->nparts + 1);

    for (size_t i = 0; i < ctx->nparts; i++) {
        kin_part *p = &ctx->parts[i];
        if (p->durable < 0 || p->committed) {
            continue;
        }
        if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->partition)) {
            continue;
        }
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->durable;
        p->committed = 1;
    }
    if (l->cnt > 0) {
        /* The outcome (sync or async) reaches kin_commit_cb from a poll. */
        err = rd_kafka_commit(ctx->rk, l, async);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return async ? RD_KAFKA_RESP_ERR_NO_ERROR : err;
}

/*
 * Submits the batch being filled (with its positions) and waits until it is
 * durable. 0 when durable or nothing to do; negative when the batch could
 * not be made durable (shutdown): its records are dropped and, their
 * positions never stored, read again after restart.
 */
static int kin_flush(kin_ctx *ctx, int durable)
{
    char src[512], pos[32];
    int rc = 0;

    if (!ctx->batch || spool_batch_count(ctx->batch) == 0) {
        return 0;
    }
    kin_lag_update(ctx);
    for (size_t i = 0; i < ctx->nparts; i++) {
        kin_part *p = &ctx->parts[i];
        if (p->next < 0 || p->next == p->sent) {
            continue;
        }
        kin_source(src, sizeof(src), p->topic, p->partition);
        int n = snprintf(pos, sizeof(pos), "%" PRId64, p->next);
        rc = spool_batch_set_position(ctx->batch, src, pos, (size_t)n);
        if (rc) {
            goto fail;
        }
    }
    for (;;) {
        rc = durable ? spool_input_submit_durable(ctx->ins, ctx->batch, 30000)
                     : spool_input_submit(ctx->ins, ctx->batch, 1000);
        if (rc == -EAGAIN && !spool_instance_stopping(ctx->ins)) {
            continue; /* the pipeline is full: wait (backpressure) */
        }
        break;
    }
    if (rc == 0) {
        ctx->batch = NULL;
        for (size_t i = 0; i < ctx->nparts; i++) {
            kin_part *p = &ctx->parts[i];
            p->sent = p->next;
            if (durable && p->next >= 0 && p->next != p->durable) {
                p->durable = p->next;
                p->committed = 0;
            }
        }
        return 0;
    }
    if (rc == -EAGAIN || rc == -ESHUTDOWN || rc == -ENOMEM) {
        goto fail; /* not queued: the batch is still ours */
    }
    /* Queued but not known durable (-ETIMEDOUT, -EIO): the core owns it;
     * its positions become durable with it or not at all. */
    ctx->batch = NULL;
    spool_log_warn(ctx->ins, "a batch was not confirmed durable: %s", strerror(-rc));
    for (size_t i = 0; i < ctx->nparts; i++) {
        ctx->parts[i].sent = ctx->parts[i].next;
    }
    return rc;
fail:
    /* Dropped: read again after a restart from the stored positions. */
    spool_batch_destroy(ctx->batch);
    ctx->batch = NULL;
    for (size_t i = 0; i < ctx->nparts; i++) {
        ctx->parts[i].next = ctx->parts[i].sent;
    }
    return rc;
}

/* Picks up what became durable from the position store (batches submitted
 * without waiting become durable in order, their positions with them). */
static void kin_refresh(kin_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nparts; i++) {
        kin_part *p = &ctx->parts[i];
        if (p->sent < 0 || p->durable >= p->sent) {
            continue;
        }
        int64_t d = kin_local_offset(ctx, p->topic, p->partition);
        if (d > p->durable) {
            p->durable = d;
            p->committed = 0;
        }
    }
}

/* Waits (bounded by commit_timeout) until everything submitted for the
 * partitions of `only` (all when NULL) is durable. 0 or -ETIMEDOUT. */
static int kin_wait_durable(kin_ctx *ctx, const rd_kafka_topic_partition_list_t *only)
{
    int64_t deadline = spool_monotonic_ms() + ctx->commit_timeout;

    for (;;) {
        int behind = 0;
        kin_refresh(ctx);
        for (size_t i = 0; i < ctx->nparts; i++) {
            const kin_part *p = &ctx->parts[i];
            if (p->sent >= 0 && p->durable < p->sent &&
                (!only || rd_kafka_topic_partition_list_find(only, p->topic, p->partition))) {
                behind = 1;
            }
        }
        if (!behind) {
            return 0;
        }
        if (spool_monotonic_ms() >= deadline) {
            spool_log_warn(ctx->ins,
                           "records submitted to the log not durable after %" PRId64
                           " ms; their offsets are not committed to Kafka",
                           ctx->commit_timeout);
            return -ETIMEDOUT;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL); /* the log commits in the background */
    }
}

/* Hands the (incremental or whole) assignment change to librdkafka. */
static void kin_assignment_apply(kin_ctx *ctx, rd_kafka_topic_partition_list_t *l, int assign)
{
    const char *proto = rd_kafka_rebalance_protocol(ctx->rk);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    const char *what = NULL;

    if (proto && strcmp(proto, "COOPERATIVE") == 0) {
        rd_kafka_error_t *e = assign ? rd_kafka_incremental_assign(ctx->rk, l)
                                     : rd_kafka_incremental_unassign(ctx->rk, l);
        if (e) {
            err = rd_kafka_error_code(e);
            spool_log_error(ctx->ins, "%s failed: %s", assign ? "assign" : "unassign",
                            rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            return;
        }
    } else {
        err = rd_kafka_assign(ctx->rk, assign ? l : NULL);
        what = assign ? "assign" : "unassign";
    }
    if (err && what) {
        spool_log_error(ctx->ins, "%s failed: %s", what, rd_kafka_err2str(err));
    }
}

static void kin_assign(kin_ctx *ctx, rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_resp_err_t err;
    char msg[2048];
    size_t used = 0;

    if (l->cnt == 0) {
        kin_assignment_apply(ctx, l, 1); /* an incremental round that moved nothing here */
        return;
    }

    err = rd_kafka_committed(ctx->rk, l, (int)ctx->commit_timeout);
    if (err) {
        spool_log_warn(ctx->ins, "cannot read the group's committed offsets: %s",
                       rd_kafka_err2str(err));
    }
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        int64_t local = kin_local_offset(ctx, tp->topic, tp->partition);
        int64_t kafka = (err || tp->err || tp->offset < 0) ? -1 : tp->offset;
        int64_t start = local > kafka ? local : kafka;
        kin_part *p = kin_part_get(ctx, tp->topic, tp->partition, 1);

        tp->offset = start >= 0 ? start : RD_KAFKA_OFFSET_INVALID;
        if (p) {
            p->next = start;
            p->sent = start;
            p->durable = start;
            p->committed = local <= kafka;
            p->acked = kafka >= 0 ? kafka : start;
        }
        /* One line per rebalance (a line per partition would be rate limited). */
        char at[32];
        snprintf(at, sizeof(at), "%" PRId64, start);
        int n = snprintf(msg + used, sizeof(msg) - used,
                         "%s%s/%d at %s (spool %" PRId64 ", kafka %" PRId64 ")", i ? "; " : "",
                         tp->topic, (int)tp->partition,
                         start >= 0        ? at
                         : ctx->start_from ? "latest"
                                           : "earliest",
                         local, kafka);
        used = n < 0 || (size_t)n >= sizeof(msg) - used ? sizeof(msg) - 1 : used + (size_t)n;
    }
    spool_log_info(ctx->ins, "assigned %d partition(s): %s", l->cnt, msg);
    kin_assignment_apply(ctx, l, 1);
    spool_gauge_set(ctx->assigned, (int64_t)ctx->nparts);
}

static void kin_revoke(kin_ctx *ctx, rd_kafka_topic_partition_list_t *l)
{
    /* What was read is submitted and made durable, then committed
     * synchronously: the next owner starts right after it. Partitions
     * lost (this node's session expired: another node may own them
     * already) cannot be committed any more. */
    kin_flush(ctx, 1);
    kin_wait_durable(ctx, l);
    if (rd_kafka_assignment_lost(ctx->rk)) {
        spool_log_warn(ctx->ins,
                       "%d partition(s) lost (this node was taken for dead by the group): "
                       "records it made durable but had not committed to Kafka may be read "
                       "again by their new owner",
                       l->cnt);
    } else {
        rd_kafka_resp_err_t err = kin_commit(ctx, l, 0);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            spool_log_warn(ctx->ins,
                           "committing the offsets of revoked partitions failed: %s (their "
                           "next owner may read again what this node holds)",
                           rd_kafka_err2str(err));
        }
    }
    kin_assignment_apply(ctx, l, 0);
    for (int i = 0; i < l->cnt; i++) {
        kin_part_remove(ctx, l->elems[i].topic, l->elems[i].partition);
    }
    spool_gauge_set(ctx->assigned, (int64_t)ctx->nparts);
    kin_lag_update(ctx);
}

/* Kafka answered a commit (on the run thread, from poll). */
static void kin_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t *l, void *opaque)
{
    kin_ctx *ctx = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        return;
    }
    if (err) {
        spool_counter_add(ctx->commit_errors, 1);
        spool_log_warn(ctx->ins,
                       "committing offsets to Kafka failed: %s (spool's own positions "
                       "stay exact; it is retried with the next batch)",
                       rd_kafka_err2str(err));
    }
    for (int i = 0; l && i < l->cnt; i++) {
        kin_part *p = kin_part_get(ctx, l->elems[i].topic, l->elems[i].partition, 0);
        if (!p) {
            continue;
        }
        if (err || l->elems[i].err) {
            p->committed = 0; /* sent again with the next commit */
        } else if (l->elems[i].offset > p->acked) {
            p->acked = l->elems[i].offset;
        }
    }
    kin_lag_update(ctx);
}

static void kin_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *l, void *opaque)
{
    kin_ctx *ctx = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        kin_assign(ctx, l);
    } else {
        kin_revoke(ctx, l);
    }
}

static void kin_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kin_ctx *ctx = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        ctx->fatal = 1;
        spool_log_error(ctx->ins, "fatal Kafka error: %s", reason);
        return;
    }
    spool_log_warn(ctx->ins, "Kafka: %s", reason);
}

static void kin_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kin_ctx *ctx = rd_kafka_opaque(rk);

    if (level <= 3) {
        spool_log_warn(ctx->ins, "librdkafka %s: %s", fac, buf);
    }
}

static int kin_init(spool_instance *ins, void *vctx)
{
    kin_ctx *ctx = vctx;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *subs = NULL;
    char errstr[512];
    rd_kafka_resp_err_t err;
    int rc = -EINVAL;

    ctx->ins = ins;
    ctx->lag = spool_gauge_register(ins, "uncommitted_records",
                                    "records read whose offsets Kafka has not confirmed committed");
    ctx->commit_errors =
        spool_counter_register(ins, "commit_errors", "offset commits to Kafka that failed");
    ctx->assigned =
        spool_gauge_register(ins, "assigned_partitions", "partitions assigned to this node");
    if (kin_conf_build(ctx, ins, &conf)) {
        return -EINVAL;
    }
    rd_kafka_conf_set_opaque(conf, ctx);
    rd_kafka_conf_set_rebalance_cb(conf, kin_rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, kin_error_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, kin_commit_cb);
    rd_kafka_conf_set_log_cb(conf, kin_log_cb);
    ctx->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!ctx->rk) {
        rd_kafka_conf_destroy(conf);
        spool_log_error(ins, "cannot create the Kafka consumer: %s", errstr);
        return -EINVAL;
    }
    rd_kafka_poll_set_consumer(ctx->rk);
    subs = rd_kafka_topic_partition_list_new((int)ctx->topics.count);
    for (size_t i = 0; i < ctx->topics.count; i++) {
        rd_kafka_topic_partition_list_add(subs, ctx->topics.items[i], RD_KAFKA_PARTITION_UA);
    }
    err = rd_kafka_subscribe(ctx->rk, subs);
    if (err) {
        spool_log_error(ins, "cannot subscribe: %s", rd_kafka_err2str(err));
        goto out;
    }
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(subs);
    return rc;
}

/* Appends one message to the batch; 0 or -ENOMEM. */
static int kin_append(kin_ctx *ctx, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hs = NULL;
    spool_record r;
    size_t nh = 0;
    int rc;

    memset(&r, 0, sizeof(r));
    r.key = m->key;
    r.key_len = m->key ? (int32_t)m->key_len : -1;
    r.value = m->payload;
    r.value_len = m->payload ? (int32_t)m->len : -1;
    r.partition = -1;
    r.offset = -1;
    r.timestamp = rd_kafka_message_timestamp(m, NULL);
    if (r.timestamp < 0) {
        r.timestamp = 0;
    }
    if (rd_kafka_message_headers(m, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR && hs) {
        nh = rd_kafka_header_cnt(hs);
        if (nh > ctx->cap_hdrs) {
            spool_header *h = realloc(ctx->hdrs, nh * sizeof(*h));
            if (!h) {
                return -ENOMEM;
            }
            ctx->hdrs = h;
            ctx->cap_hdrs = nh;
        }
        for (size_t i = 0; i < nh; i++) {
            const char *name;
            const void *val;
            size_t vlen;
            rd_kafka_header_get_all(hs, i, &name, &val, &vlen);
            ctx->hdrs[i].key = name;
            ctx->hdrs[i].key_len = (uint32_t)strlen(name);
            ctx->hdrs[i].value = val;
            ctx->hdrs[i].value_len = val ? (int32_t)vlen : -1;
        }
    }
    r.headers = nh ? ctx->hdrs : NULL;
    r.header_count = (uint32_t)nh;
    rc = spool_batch_append(ctx->batch, &r);
    return rc;
}

/* Appends one consumed message (or skips it); 0, or -ENOMEM. */
static int kin_take(kin_ctx *ctx, rd_kafka_message_t *m, int64_t *first_ms)
{
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            spool_log_warn(ctx->ins, "consume error: %s", rd_kafka_message_errstr(m));
        }
        return 0;
    }
    /* Only partitions assigned now: one revoked during this poll is not
     * read here again (its new owner reads it). */
    kin_part *p = kin_part_get(ctx, rd_kafka_topic_name(m->rkt), m->partition, 0);
    if (!p || (p->next >= 0 && m->offset < p->next)) {
        return 0;
    }
    if (spool_batch_count(ctx->batch) == 0) {
        *first_ms = spool_monotonic_ms();
    }
    if (kin_append(ctx, m)) {
        return -ENOMEM;
    }
    if (p->acked < 0) {
        p->acked = m->offset; /* started at earliest/latest */
    }
    p->next = m->offset + 1;
    return 0;
}

static int kin_run(spool_instance *ins, void *vctx)
{
    kin_ctx *ctx = vctx;
    rd_kafka_message_t *msgs[KIN_POLL_MAX];
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(ctx->rk);
    int64_t first_ms = 0;

    while (!spool_instance_stopping(ins) && !ctx->fatal) {
        if (!ctx->batch) {
            ctx->batch = spool_batch_create(ins);
            if (!ctx->batch) {
                spool_log_error(ins, "out of memory");
                break;
            }
        }
        size_t n = spool_batch_count(ctx->batch);
        int wait = n == 0 ? 100 : (int)(first_ms + ctx->batch_wait - spool_monotonic_ms());
        if (n > 0 && (wait <= 0 || (int64_t)n >= ctx->batch_records)) {
            kin_flush(ctx, 0);
            kin_commit(ctx, NULL, 1);
            continue;
        }
        size_t room = (size_t)ctx->batch_records - n;
        ssize_t got = rd_kafka_consume_batch_queue(q, wait > 100 ? 100 : wait, msgs,
                                                   room < KIN_POLL_MAX ? room : KIN_POLL_MAX);
        int rc = 0;
        for (ssize_t i = 0; i < got; i++) {
            if (rc == 0) {
                rc = kin_take(ctx, msgs[i], &first_ms);
            }
            rd_kafka_message_destroy(msgs[i]);
        }
        if (rc) {
            spool_log_error(ins, "out of memory");
            break;
        }
        if (got <= 0 && n == 0) {
            kin_commit(ctx, NULL, 1); /* idle: tell Kafka what became durable */
        }
    }
    rd_kafka_queue_destroy(q);
    /* Shutdown: what was read becomes durable, then Kafka hears of it. */
    kin_flush(ctx, 1);
    kin_wait_durable(ctx, NULL);
    kin_commit(ctx, NULL, 0);
    /* Leaves the group now (the revoke callback runs while the pipeline
     * still accepts batches), so the others take the partitions over. */
    rd_kafka_consumer_close(ctx->rk);
    ctx->closed = 1;
    return ctx->fatal ? -EIO : 0;
}

static void kin_destroy(spool_instance *ins, void *vctx)
{
    kin_ctx *ctx = vctx;

    (void)ins;
    if (ctx->rk) {
        if (!ctx->closed) {
            rd_kafka_consumer_close(ctx->rk);
        }
        rd_kafka_destroy(ctx->rk);
        ctx->rk = NULL;
    }
    if (ctx->batch) {
        spool_batch_destroy(ctx->batch);
        ctx->batch = NULL;
    }
    for (size_t i = 0; i < ctx->nparts; i++) {
        free(ctx->parts[i].topic);
    }
    free(ctx->parts);
    ctx->parts = NULL;
    ctx->nparts = 0;
    free(ctx->hdrs);
    ctx->hdrs = NULL;
}

const spool_plugin spool_plugin_kafka_in = {
    SPOOL_PLUGIN_ABI, /* with the signature: also built as an external .so */
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "kafka",
    .description = "consume Kafka topics in a consumer group; offsets kept atomically with the log",
    .options = kin_options,
    .context_size = sizeof(kin_ctx),
    .check = kin_check,
    .init = kin_init,
    .run = kin_run,
    .destroy = kin_destroy,
};
