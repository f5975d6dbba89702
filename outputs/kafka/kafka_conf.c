/*
 * kafka_conf.c: the kafka output's librdkafka configuration. The plugin's
 * options become librdkafka properties (bootstrap.servers, acks,
 * enable.idempotence, compression.codec, linger.ms, batch.size, ...), then
 * each entry of `properties:` is applied on top, so a user may override
 * anything. The same builder serves `spool check` (every rejected setting
 * reported with its option's position, nothing connected anywhere) and
 * init (the real producer).
 *
 * It does not validate broker reachability: a wrong broker address is only
 * known at runtime, where librdkafka's error callback logs it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_int.h"

const char *const kafka_compression_names[] = {"none", "gzip", "snappy", "lz4", "zstd", NULL};
const char *const kafka_acks_names[] = {"all", "1", "0", NULL};
static const char *const kafka_acks_values[] = {"-1", "1", "0"};

/* Reports a rejected setting: in check mode through spool_config_error
 * (the core prints the position), otherwise in the log. */
static void kafka_conf_report(spool_instance *ins, int report, const char *option, const char *msg)
{
    if (report) {
        spool_config_error(ins, option, "%s", msg);
    } else {
        spool_log_error(ins, "%s: %s", option, msg);
    }
}

/* Sets one property; on rejection reports it against `option`. */
static int kafka_conf_put(rd_kafka_conf_t *conf, spool_instance *ins, int report,
                          const char *option, const char *name, const char *value)
{
    char errstr[512];
    char msg[700];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK) {
        return 0;
    }
    errstr[strcspn(errstr, "\r\n")] = '\0'; /* some messages end with a newline */
    snprintf(msg, sizeof(msg), "librdkafka rejects %s=%s: %s", name, value, errstr);
    kafka_conf_report(ins, report, option, msg);
    return -EINVAL;
}

/* Joins the broker list with commas into a new string; NULL on ENOMEM. */
static char *kafka_brokers_join(const spool_strlist *l)
{
    size_t n = 1;
    char *s;

    for (size_t i = 0; i < l->count; i++) {
        n += strlen(l->items[i]) + 1;
    }
    s = malloc(n);
    if (!s) {
        return NULL;
    }
    s[0] = '\0';
    for (size_t i = 0; i < l->count; i++) {
        if (i) {
            strcat(s, ",");
        }
        strcat(s, l->items[i]);
    }
    return s;
}

int kafka_conf_build(kafka_ctx *ctx, spool_instance *ins, int report, rd_kafka_conf_t **out)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char num[32];
    char *brokers = NULL;
    int rc = 0;

    *out = NULL;
    if (!conf) {
        return -ENOMEM;
    }
    brokers = kafka_brokers_join(&ctx->brokers);
    if (!brokers) {
        rc = -ENOMEM;
        goto cleanup;
    }
    if (ctx->brokers.count == 0) {
        kafka_conf_report(ins, report, "brokers", "at least one broker (host:port) is needed");
        rc = -EINVAL;
    } else if (kafka_conf_put(conf, ins, report, "brokers", "bootstrap.servers", brokers)) {
        rc = -EINVAL;
    }
    if (kafka_conf_put(conf, ins, report, "idempotence", "enable.idempotence",
                       ctx->idempotence ? "true" : "false")) {
        rc = -EINVAL;
    }
    if (ctx->idempotence && ctx->acks != 0) {
        kafka_conf_report(ins, report, "acks",
                          "the idempotent producer needs acks: all (or set idempotence: false)");
        rc = -EINVAL;
    } else if (kafka_conf_put(conf, ins, report, "acks", "acks", kafka_acks_values[ctx->acks])) {
        rc = -EINVAL;
    }
    if (kafka_conf_put(conf, ins, report, "compression", "compression.codec",
                       kafka_compression_names[ctx->compression])) {
        rc = -EINVAL;
    }
    snprintf(num, sizeof(num), "%lld", (long long)ctx->kafka_linger);
    if (kafka_conf_put(conf, ins, report, "kafka_linger", "linger.ms", num)) {
        rc = -EINVAL;
    }
    snprintf(num, sizeof(num), "%lld", (long long)ctx->batch_size);
    if (kafka_conf_put(conf, ins, report, "batch_size", "batch.size", num)) {
        rc = -EINVAL;
    }
    snprintf(num, sizeof(num), "%lld", (long long)ctx->batch_records);
    if (kafka_conf_put(conf, ins, report, "batch_records", "batch.num.messages", num)) {
        rc = -EINVAL;
    }
    snprintf(num, sizeof(num), "%lld", (long long)ctx->message_timeout);
    if (kafka_conf_put(conf, ins, report, "message_timeout", "message.timeout.ms", num)) {
        rc = -EINVAL;
    }
    snprintf(num, sizeof(num), "%lld", (long long)(ctx->queue_bytes / 1024));
    if (kafka_conf_put(conf, ins, report, "queue_bytes", "queue.buffering.max.kbytes", num)) {
        rc = -EINVAL;
    }
    /* Kafka's Java client partitions keyed records by murmur2; unkeyed ones
     * go to a sticky random partition (sticky.partitioning.linger.ms). */
    if (kafka_conf_put(conf, ins, report, "partitioner", "partitioner", "murmur2_random")) {
        rc = -EINVAL;
    }
    for (size_t i = 0; i < ctx->properties.count; i++) {
        char option[600];
        snprintf(option, sizeof(option), "properties.%s", ctx->properties.keys[i]);
        if (kafka_conf_put(conf, ins, report, option, ctx->properties.keys[i],
                           ctx->properties.values[i])) {
            rc = -EINVAL;
        }
    }

cleanup:
    free(brokers);
    if (rc) {
        rd_kafka_conf_destroy(conf);
    } else {
        *out = conf;
    }
    return rc;
}

/* Swallows librdkafka's log lines while `spool check` tries a conf. */
static void kafka_check_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
}

int kafka_check(spool_instance *ins, void *vctx)
{
    kafka_ctx *ctx = vctx;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk;
    const char *terr = NULL;
    spool_template *t;
    char errstr[512];
    int rc = 0;

    if (!ctx->kafka_topic || !ctx->kafka_topic[0]) {
        spool_config_error(ins, "kafka_topic", "a Kafka topic name or template is needed");
        rc = -EINVAL;
    } else {
        t = spool_template_compile(ctx->kafka_topic, &terr);
        if (!t) {
            spool_config_error(ins, "kafka_topic", "bad template: %s", terr ? terr : "syntax");
            rc = -EINVAL;
        }
        spool_template_destroy(t);
    }
    for (size_t i = 0; i < ctx->brokers.count; i++) {
        /* librdkafka takes host[:port], optionally after a protocol://
         * prefix, several in one item separated by commas. */
        char one[512];
        const char *p = ctx->brokers.items[i];
        while (*p) {
            size_t n = strcspn(p, ",");
            snprintf(one, sizeof(one), "%.*s", (int)n, p);
            char *b = one;
            while (*b == ' ') {
                b++;
            }
            char *end = b + strlen(b);
            while (end > b && end[-1] == ' ') {
                *--end = '\0';
            }
            const char *sep = strstr(b, "://");
            if (*b && spool_check_address(ins, "brokers", sep ? sep + 3 : b,
                                          SPOOL_ADDR_PORT_OPTIONAL) < 0) {
                rc = -EINVAL;
            }
            p += n + (p[n] == ',');
        }
    }
    if (kafka_conf_build(ctx, ins, 1, &conf)) {
        return -EINVAL;
    }
    /* Settings that are each valid may still conflict (librdkafka checks
     * combinations when a client is created). Try one that cannot connect:
     * no bootstrap servers, silent log. */
    rd_kafka_conf_set(conf, "bootstrap.servers", "", errstr, sizeof(errstr));
    rd_kafka_conf_set_log_cb(conf, kafka_check_log_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        spool_config_error(ins, ctx->properties.count ? "properties" : "brokers",
                           "librdkafka refuses this configuration: %s", errstr);
        return -EINVAL;
    }
    rd_kafka_destroy(rk);
    return rc;
}
