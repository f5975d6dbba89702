/*
 * kafka_mock: a Kafka cluster for tests, built on librdkafka's mock cluster
 * (rdkafka_mock.h). It starts a cluster of N brokers (default 3), creates
 * the topics named on the command line, prints the bootstrap address as one
 * line on stdout, then reads commands on stdin, one per line, and answers
 * each with one line, "ok" or "error <text>", so a test can synchronise:
 *
 *   down <broker>                       take a broker down (1-based id)
 *   up <broker>                         bring it back
 *   err <apikey> <errcode> <count>      next <count> requests of <apikey> fail
 *   berr <broker> <apikey> <errcode> <count>   the same on one broker only
 *   clear <apikey>                      drop the errors still queued for <apikey>
 *   topic <name> <partitions>           create a topic
 *   topicerr <name> <errcode>           metadata for <name> reports errcode
 *   leader <topic> <partition> <broker> move a partition's leader
 *   rtt <broker> <ms>                   delay a broker's responses
 *   quit                                exit
 *
 * Usage: kafka_mock [-b BROKERS] [TOPIC[:PARTITIONS]]...  (default 4 partitions)
 * The program exits when stdin reaches end of file. Error codes and API
 * keys are numbers as in the Kafka protocol (NOT_LEADER_FOR_PARTITION = 6,
 * REQUEST_TIMED_OUT = 7, Produce = 0, Metadata = 3, InitProducerId = 22).
 * It is a test instrument: no authentication, 127.0.0.1 only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static int mock_topic_create(rd_kafka_mock_cluster_t *mc, const char *spec)
{
    char name[512];
    int parts = 4;
    const char *colon = strrchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);

    if (n == 0 || n >= sizeof(name)) {
        return -EINVAL;
    }
    memcpy(name, spec, n);
    name[n] = '\0';
    if (colon) {
        parts = atoi(colon + 1);
        if (parts <= 0) {
            return -EINVAL;
        }
    }
    return rd_kafka_mock_topic_create(mc, name, parts, 1) ? -EINVAL : 0;
}

/* Runs one command line; returns 1 to quit, 0 on success, -1 on error. */
static int mock_command(rd_kafka_mock_cluster_t *mc, char *line)
{
    char cmd[32], a[512];
    long b = 0, c = 0, d = 0;
    rd_kafka_resp_err_t err;

    if (sscanf(line, "%31s", cmd) != 1) {
        return -1;
    }
    if (!strcmp(cmd, "quit")) {
        return 1;
    }
    if (!strcmp(cmd, "down") && sscanf(line, "%*s %ld", &b) == 1) {
        return rd_kafka_mock_broker_set_down(mc, (int32_t)b) ? -1 : 0;
    }
    if (!strcmp(cmd, "up") && sscanf(line, "%*s %ld", &b) == 1) {
        return rd_kafka_mock_broker_set_up(mc, (int32_t)b) ? -1 : 0;
    }
    if (!strcmp(cmd, "err") && sscanf(line, "%*s %ld %ld %ld", &b, &c, &d) == 3 && d > 0 &&
        d < 100000) {
        rd_kafka_resp_err_t *errs = malloc(sizeof(*errs) * (size_t)d);
        if (!errs) {
            return -1;
        }
        for (long i = 0; i < d; i++) {
            errs[i] = (rd_kafka_resp_err_t)c;
        }
        rd_kafka_mock_push_request_errors_array(mc, (int16_t)b, (size_t)d, errs);
        free(errs);
        return 0;
    }
    if (!strcmp(cmd, "berr")) {
        long e = 0;
        if (sscanf(line, "%*s %ld %ld %ld %ld", &b, &c, &d, &e) != 4 || e <= 0) {
            return -1;
        }
        for (long i = 0; i < e; i++) {
            err = rd_kafka_mock_broker_push_request_error_rtts(mc, (int32_t)b, (int16_t)c, 1,
                                                               (rd_kafka_resp_err_t)d, 0);
            if (err) {
                return -1;
            }
        }
        return 0;
    }
    if (!strcmp(cmd, "clear") && sscanf(line, "%*s %ld", &b) == 1) {
        rd_kafka_mock_clear_request_errors(mc, (int16_t)b);
        return 0;
    }
    if (!strcmp(cmd, "topic") && sscanf(line, "%*s %511s %ld", a, &b) == 2 && b > 0) {
        return rd_kafka_mock_topic_create(mc, a, (int)b, 1) ? -1 : 0;
    }
    if (!strcmp(cmd, "topicerr") && sscanf(line, "%*s %511s %ld", a, &b) == 2) {
        rd_kafka_mock_topic_set_error(mc, a, (rd_kafka_resp_err_t)b);
        return 0;
    }
    if (!strcmp(cmd, "leader") && sscanf(line, "%*s %511s %ld %ld", a, &b, &c) == 3) {
        return rd_kafka_mock_partition_set_leader(mc, a, (int32_t)b, (int32_t)c) ? -1 : 0;
    }
    if (!strcmp(cmd, "rtt") && sscanf(line, "%*s %ld %ld", &b, &c) == 2) {
        return rd_kafka_mock_broker_set_rtt(mc, (int32_t)b, (int)c) ? -1 : 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    char errstr[512];
    char line[1024];
    int brokers = 3;
    int first = 1;
    int rc = 1;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;

    if (argc > 2 && !strcmp(argv[1], "-b")) {
        brokers = atoi(argv[2]);
        first = 3;
    }
    if (brokers < 1) {
        fprintf(stderr, "kafka_mock: bad broker count\n");
        goto cleanup;
    }
    /* The cluster needs an rd_kafka_t for its bookkeeping; this one never
     * connects anywhere. */
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka_mock: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto cleanup;
    }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka_mock: cannot create the mock cluster\n");
        goto cleanup;
    }
    for (int i = first; i < argc; i++) {
        if (mock_topic_create(mc, argv[i]) < 0) {
            fprintf(stderr, "kafka_mock: cannot create topic '%s'\n", argv[i]);
            goto cleanup;
        }
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    while (fgets(line, sizeof(line), stdin)) {
        int r = mock_command(mc, line);
        if (r == 1) {
            break;
        }
        if (r < 0) {
            line[strcspn(line, "\n")] = '\0';
            printf("error %s\n", line);
        } else {
            printf("ok\n");
        }
        fflush(stdout);
    }
    rc = 0;

cleanup:
    if (mc) {
        rd_kafka_mock_cluster_destroy(mc);
    }
    if (rk) {
        rd_kafka_destroy(rk);
    }
    return rc;
}
