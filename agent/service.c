/*
 * service.c: `spool run`: bring the service up from a validated
 * configuration, wait for signals, and take it down without losing what
 * was accepted.
 *
 * Start order: log (recovery) -> HTTP API -> instances' init -> pipeline
 * stages -> output runners -> inputs -> READY=1. Stop order (SIGTERM,
 * SIGINT, or a plugin's spool_service_shutdown): inputs stop and are
 * joined -> queues drain into the log -> final commit -> outputs deliver up
 * to the end offsets -> cursors saved -> everything destroyed. All of it is
 * bounded by one deadline, shutdown_timeout after the stop began (plus
 * SPOOL_SHUTDOWN_SLACK_MS for interrupting blocked flushes and closing):
 * records from sources that cannot replay them that missed it are counted
 * and named in one final line. SIGHUP reloads: the new file is validated first;
 * if it has errors they are logged and the old configuration keeps
 * running; otherwise the service stops as above (every position and cursor
 * is durable) and starts again on the new file, in the same process.
 *
 * Health (/health, the watchdog's reason) is decided here, from what the
 * stages report: the writer's heartbeat and refusal, the processor's
 * heartbeat, and each output runner's spool_output_report. Nothing here
 * calls into a runner.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "service/http_api.h"
#include "service/systemd.h"

/* A stage whose heartbeat is older than this is stuck (ms). */
#define STAGE_STUCK_MS 30000
/* An output whose destination has failed for this long is unhealthy (ms). */
#define OUTPUT_FAILING_MS 1000

static _Atomic int stop_requested;
static pthread_t main_thread;

/* 1 if the output's report says it delivers, else 0 and the reason. */
static int output_healthy(spool_instance *ins, int64_t now, char *reason, size_t cap)
{
    spool_output_report *rep = &ins->report;
    int64_t since = atomic_load(&rep->failing_since);
    if (!since || now - since < OUTPUT_FAILING_MS) {
        return 1;
    }
    pthread_mutex_lock(&rep->lock);
    snprintf(reason, cap, "output %s: destination failing for %llds%s%s", ins->name,
             (long long)((now - since) / 1000), rep->last_error[0] ? ": " : "", rep->last_error);
    pthread_mutex_unlock(&rep->lock);
    return 0;
}

int spool_service_health(spool_service *svc, char *reason, size_t cap)
{
    if (!svc) {
        snprintf(reason, cap, "not running");
        return 0;
    }
    int64_t now = spool_monotonic_ms();
    if (atomic_load(&svc->writer_blocked)) {
        snprintf(reason, cap, "log writer: %s", svc->writer_error);
        return 0;
    }
    int64_t hb = atomic_load(&svc->writer_heartbeat);
    if (svc->writer_running && now - hb > STAGE_STUCK_MS) {
        snprintf(reason, cap, "log writer stuck for %llds", (long long)((now - hb) / 1000));
        return 0;
    }
    hb = atomic_load(&svc->processor_heartbeat);
    if (svc->processor_running && now - hb > STAGE_STUCK_MS) {
        snprintf(reason, cap, "processor stage stuck for %llds", (long long)((now - hb) / 1000));
        return 0;
    }
    for (size_t i = 0; svc->conf && i < svc->conf->noutputs; i++) {
        if (!output_healthy(svc->conf->outputs[i], now, reason, cap)) {
            return 0;
        }
    }
    snprintf(reason, cap, "ok");
    return 1;
}

void spool__service_request_stop(void)
{
    atomic_store(&stop_requested, 1);
    pthread_kill(main_thread, SIGUSR2);
}

void spool_service_shutdown(const char *reason)
{
    spool_log_info(NULL, "shutdown requested: %s", reason ? reason : "by a plugin");
    spool__service_request_stop();
}

static void *input_thread(void *arg)
{
    spool_instance *ins = arg;
    int rc = ins->plugin->run(ins, ins->ctx);
    if (rc < 0 && !atomic_load(&ins->stopping)) {
        spool_log_error(ins, "input stopped: %s", strerror(-rc));
    }
    return NULL;
}

static void stop_inputs(spool_service *svc)
{
    spool_service_conf *conf = svc->conf;
    atomic_store(&svc->stopping, 1);
    for (size_t i = 0; i < conf->ninputs; i++) {
        spool_instance *ins = conf->inputs[i];
        atomic_store(&ins->stopping, 1);
        if (ins->started && ins->plugin->stop) {
            ins->plugin->stop(ins, ins->ctx);
        }
    }
    for (size_t i = 0; i < conf->ninputs; i++) {
        spool_instance *ins = conf->inputs[i];
        if (ins->thread_running) {
            pthread_join(ins->thread, NULL);
            ins->thread_running = 0;
        }
    }
}

static void destroy_all(spool_service *svc)
{
    spool_service_conf *conf = svc->conf;
    spool_instance **lists[3] = {conf->inputs, conf->processors, conf->outputs};
    size_t counts[3] = {conf->ninputs, conf->nprocessors, conf->noutputs};
    for (size_t i = 0; i < conf->noutputs; i++) {
        spool_instance *ins = conf->outputs[i];
        atomic_store(&ins->stopping, 1);
        if (ins->started && ins->plugin->stop) {
            ins->plugin->stop(ins, ins->ctx);
        }
    }
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            spool_instance *ins = lists[k][i];
            if (ins->initialized && ins->plugin->destroy) {
                ins->plugin->destroy(ins, ins->ctx);
            }
            ins->initialized = 0;
            if (k == 2) {
                spool__output_free(ins);
            }
        }
    }
}

static int run_conf(spool_service_conf *conf, const char *config_path, spool_service_conf **next)
{
    spool_service svc_s;
    spool_service *svc = &svc_s;
    spool_plog_options lo = {0};
    spool_http_api *api = NULL;
    int rc, result = 0;

    memset(svc, 0, sizeof(*svc));
    svc->conf = conf;
    *next = NULL;
    if ((rc = spool_mkdirs(conf->data_dir, 0750)) < 0) {
        spool_log_error(NULL, "cannot create data_dir %s: %s", conf->data_dir, strerror(-rc));
        return -1;
    }
    lo.data_dir = conf->data_dir;
    lo.topics = conf->topics;
    lo.topic_count = conf->ntopics;
    /* The outputs, so the log judges "delivered" by what is configured,
     * not by cursor files a removed output may have left. */
    spool_plog_consumer_conf *cons = NULL;
    if (spool__config_consumers(conf, &cons) == 0) {
        lo.consumers = cons;
        lo.consumer_count = conf->noutputs;
    }
    char why[8448] = ""; /* a refusal names partitions, counts and what to do */
    lo.error = why;
    lo.error_cap = sizeof(why);
    rc = spool_plog_open(&lo, &svc->log);
    spool_config_consumers_free(cons, conf->noutputs);
    if (rc < 0) {
        spool_log_error(NULL, "cannot open the log in %s: %s", conf->data_dir,
                        why[0] ? why : strerror(-rc));
        return -1;
    }
    spool_instance **lists[3] = {conf->inputs, conf->processors, conf->outputs};
    size_t counts[3] = {conf->ninputs, conf->nprocessors, conf->noutputs};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            spool_instance *ins = lists[k][i];
            ins->svc = svc;
            if (!ins->counters[0] && spool__instance_metrics(ins) < 0) {
                result = -1;
                goto out;
            }
        }
    }
    if (conf->http_listen && (rc = spool_http_api_start(conf->http_listen, svc, &api)) < 0) {
        spool_log_error(NULL, "cannot serve the HTTP API on %s: %s", conf->http_listen,
                        strerror(-rc));
        result = -1;
        goto out;
    }
    /* init: outputs and processors first, so nothing is read that cannot go anywhere. */
    for (int k = 2; k >= 0; k--) {
        for (size_t i = 0; i < counts[k]; i++) {
            spool_instance *ins = lists[k][i];
            if (ins->plugin->init && (rc = ins->plugin->init(ins, ins->ctx)) < 0) {
                spool_log_error(ins, "cannot start: %s", strerror(-rc));
                if (ins->plugin->destroy) {
                    ins->plugin->destroy(ins, ins->ctx);
                }
                result = -1;
                continue; /* init the others too: report every failure at once */
            }
            ins->initialized = 1;
        }
    }
    if (result < 0) {
        goto out;
    }
    if ((rc = spool__pipeline_start(svc)) < 0) {
        spool_log_error(NULL, "cannot start the pipeline: %s", strerror(-rc));
        result = -1;
        goto out;
    }
    for (size_t i = 0; i < conf->noutputs; i++) {
        spool_instance *ins = conf->outputs[i];
        if (ins->plugin->start && (rc = ins->plugin->start(ins, ins->ctx)) < 0) {
            spool_log_error(ins, "cannot start: %s", strerror(-rc));
            result = -1;
            goto out_pipeline;
        }
        ins->started = 1;
        if ((rc = spool__output_start(svc, ins)) < 0) {
            spool_log_error(ins, "cannot start the output runner: %s", strerror(-rc));
            result = -1;
            goto out_pipeline;
        }
    }
    if ((rc = spool__streams_start(svc)) < 0) {
        result = -1;
        goto out_pipeline;
    }
    for (size_t i = 0; i < conf->ninputs; i++) {
        spool_instance *ins = conf->inputs[i];
        if (ins->plugin->start && (rc = ins->plugin->start(ins, ins->ctx)) < 0) {
            spool_log_error(ins, "cannot start: %s", strerror(-rc));
            result = -1;
            goto out_pipeline;
        }
        ins->started = 1;
        if (ins->plugin->run) {
            if (pthread_create(&ins->thread, NULL, input_thread, ins) != 0) {
                result = -1;
                goto out_pipeline;
            }
            ins->thread_running = 1;
        }
    }
    spool__log_unlimited(SPOOL_LOG_INFO,
                         "spool %s running: %zu topics, %zu inputs, %zu outputs, "
                         "data in %s",
                         SPOOL_VERSION, conf->ntopics, conf->ninputs, conf->noutputs,
                         conf->data_dir);
    spool_sd_ready();
    spool_sd_status("running: %zu inputs, %zu outputs", conf->ninputs, conf->noutputs);

    /* Wait for a signal, pinging the watchdog while every stage makes progress. */
    int64_t wd_ms = 0;
    int wd = spool_sd_watchdog_enabled(&wd_ms) > 0 && wd_ms > 0;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR2);
    while (!atomic_load(&stop_requested)) {
        int64_t tick = wd ? wd_ms / 3 : 1000;
        struct timespec ts = {tick / 1000, (tick % 1000) * 1000000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (wd) {
            char reason[256];
            int64_t now = spool_monotonic_ms();
            if (now - atomic_load(&svc->writer_heartbeat) < STAGE_STUCK_MS &&
                now - atomic_load(&svc->processor_heartbeat) < STAGE_STUCK_MS) {
                spool_sd_watchdog_ping();
            } else {
                spool_service_health(svc, reason, sizeof(reason));
                spool_log_error(NULL, "a stage is stuck (%s): not pinging the watchdog", reason);
            }
        }
        if (sig == SIGTERM || sig == SIGINT) {
            spool_log_info(NULL, "%s received: shutting down",
                           sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) {
            spool_errors errs = {0};
            spool_service_conf *nc = calloc(1, sizeof(*nc));
            spool__log_unlimited(SPOOL_LOG_INFO, "SIGHUP: reloading %s",
                                 config_path ? config_path : "the embedded config");
            spool_sd_reloading();
            int n = nc ? spool_service_conf_load(config_path, nc, &errs) : 1;
            if (n > 0) {
                for (size_t i = 0; i < errs.count; i++) {
                    spool_error *e = &errs.items[i];
                    spool__log_unlimited(SPOOL_LOG_ERROR, "reload: %s:%d:%d: %s%s%s", e->file,
                                         e->line, e->column, e->path ? e->path : "",
                                         e->path && e->path[0] ? ": " : "", e->message);
                }
                spool__log_unlimited(SPOOL_LOG_ERROR,
                                     "reload refused: %d error%s; the running "
                                     "configuration stays in force",
                                     n, n == 1 ? "" : "s");
                if (nc) {
                    spool_service_conf_free(nc);
                    free(nc);
                }
                spool_errors_free(&errs);
                spool_sd_ready();
                continue;
            }
            spool_errors_free(&errs);
            *next = nc;
            result = 1;
            break;
        }
    }
    if (result != 1) {
        spool_sd_stopping();
    }
    spool_sd_status("stopping");

out_pipeline:
    /* One deadline for the whole stop: inputs' submits, the writer (parked
     * batches, the final commit) and the outputs' delivery all end by it. */
    spool__streams_stop(svc); /* they commit through the writer: before it stops */
    spool__pipeline_begin_stop(svc);
    stop_inputs(svc);
    spool__pipeline_finish(svc);
    svc->drain_deadline = atomic_load(&svc->shutdown_deadline);
    atomic_store(&svc->draining, 1);
    spool_plog_wake(svc->log);
    for (size_t i = 0; i < conf->noutputs; i++) {
        spool__output_join(svc, conf->outputs[i]);
    }
out:
    spool_http_api_stop(api);
    destroy_all(svc);
    if (svc->processor_running || svc->writer_running) {
        spool__pipeline_finish(svc);
    }
    spool__pipeline_free(svc);
    spool_plog_close(svc->log);
    if (svc->in_queue.max_count) {
        spool_queue_destroy(&svc->in_queue);
        spool_queue_destroy(&svc->write_queue);
    }
    spool__metric_unregister_labels("stage=\"processors\"");
    spool__metric_unregister_labels("stage=\"log_writer\"");
    return result;
}

int spool_service_run(const char *config_path)
{
    spool_errors errs = {0};
    spool_service_conf *conf = calloc(1, sizeof(*conf));
    int rc;
    sigset_t set;

    if (!conf) {
        return 1;
    }
    main_thread = pthread_self();
    /* Every thread inherits this mask; only the main thread takes signals. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    spool_registry_init();
    if (spool_service_conf_load(config_path, conf, &errs) > 0) {
        spool_errors_print(&errs, stderr);
        fprintf(stderr, "spool: %zu error%s in %s; not started\n", errs.count,
                errs.count == 1 ? "" : "s", config_path ? config_path : "the embedded config");
        spool_errors_free(&errs);
        spool_service_conf_free(conf);
        free(conf);
        return 2;
    }
    spool_errors_free(&errs);
    for (;;) {
        spool_service_conf *next = NULL;
        spool__log_configure(conf->log_level, conf->log_format);
        rc = run_conf(conf, config_path, &next);
        spool_service_conf_free(conf);
        free(conf);
        if (rc != 1) {
            break;
        }
        conf = next;
        spool__log_unlimited(SPOOL_LOG_INFO, "reload: starting the new configuration");
    }
    spool_log_info(NULL, "stopped");
    return rc < 0 ? 1 : 0;
}
