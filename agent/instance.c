/*
 * instance.c: one configured plugin entry (an input, processor or output)
 * and the small API plugins call about themselves.
 *
 * The instance owns its context block (context_size bytes) whose option
 * fields the config loader fills; on free, option values are released by
 * the plugin's table and the core's common table, after the plugin's own
 * destroy.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

const spool_option spool__input_common_options[] = {
    SPOOL_OPT_STR("topic", spool_input_common, topic, "default", 0,
                  "topic of the log the records go to"),
    SPOOL_OPT_STR("key", spool_input_common, key, NULL, 0,
                  "record key template, e.g. \"{{ host }}\"; none = unkeyed"),
    SPOOL_OPT_END,
};

const spool_option spool__output_common_options[] = {
    {"topics", SPOOL_OPT_LIST, NULL, 1, SPOOL__FIELD(spool_output_common, topics, spool_strlist), 1,
     0, NULL, "topics of the log this output delivers"},
    SPOOL_OPT_INTEGER("max_records", spool_output_common, max_records, "10000", 1, 10000000,
                      "records per chunk handed to the output"),
    SPOOL_OPT_BYTES("max_bytes", spool_output_common, max_bytes, "512KiB", 1, 1LL << 30,
                    "payload bytes per chunk (a single larger batch still passes alone)"),
    SPOOL_OPT_TIME("linger", spool_output_common, linger, "0", 0, 3600000,
                   "wait up to this long to fill a chunk before sending"),
    SPOOL_OPT_INTEGER("max_in_flight", spool_output_common, max_in_flight, "2", 1, 1024,
                      "chunks outstanding at once (outputs that answer asynchronously)"),
    SPOOL_OPT_TIME("max_retry_time", spool_output_common, max_retry_time, "0", 0, INT64_MAX / 2,
                   "give up on a chunk after retrying this long (0 = never give up)"),
    SPOOL_OPT_TIME("retry_backoff", spool_output_common, retry_backoff, "100ms", 1, 3600000,
                   "first retry delay; doubles with jitter"),
    SPOOL_OPT_TIME("retry_backoff_max", spool_output_common, retry_backoff_max, "30s", 1, 86400000,
                   "longest retry delay"),
    SPOOL_OPT_STR("dead_letter_topic", spool_output_common, dead_letter_topic, NULL, 0,
                  "topic for chunks the destination rejected (none = log and skip)"),
    SPOOL_OPT_END,
};

spool_instance *spool__instance_new(const spool_plugin *p, spool_plugin_kind kind, int index,
                                    const char *name)
{
    static const char *kinds[] = {"", "input", "processor", "output"};
    spool_instance *ins = calloc(1, sizeof(*ins));
    char buf[512];
    if (!ins) {
        return NULL;
    }
    pthread_mutex_init(&ins->report.lock, NULL);
    ins->plugin = p;
    ins->kind = kind;
    ins->index = index;
    if (name) {
        ins->name = strdup(name);
    } else {
        snprintf(buf, sizeof(buf), "%s.%d", p->name, index);
        ins->name = strdup(buf);
    }
    snprintf(buf, sizeof(buf), "%s:%s:%s", kinds[kind], p->name, ins->name ? ins->name : "");
    ins->label = strdup(buf);
    ins->ctx = calloc(1, p->context_size ? p->context_size : 1);
    if (!ins->name || !ins->label || !ins->ctx) {
        spool__instance_free(ins);
        return NULL;
    }
    return ins;
}

int spool__instance_metrics(spool_instance *ins)
{
    static const char *kinds[] = {"", "input", "processor", "output"};
    static const struct {
        const char *name, *help;
    } std[SPOOL_COUNT__MAX] = {
        {"spool_records_in_total", "Records received"},
        {"spool_bytes_in_total", "Payload bytes received"},
        {"spool_records_out_total", "Records delivered"},
        {"spool_bytes_out_total", "Payload bytes delivered"},
        {"spool_errors_total", "Errors"},
        {"spool_retries_total", "Retries"},
        {"spool_dropped_total", "Records dropped"},
        {"spool_rejected_total", "Records rejected by the destination"},
    };
    char labels[512];
    snprintf(labels, sizeof(labels), "kind=\"%s\",plugin=\"%s\",name=\"%s\"", kinds[ins->kind],
             ins->plugin->name, ins->name);
    for (int k = 0; k < SPOOL_COUNT__MAX; k++) {
        ins->counters[k] = spool__metric_register(std[k].name, std[k].help, labels, 0);
        if (!ins->counters[k]) {
            return -ENOMEM;
        }
    }
    return 0;
}

void spool__instance_free(spool_instance *ins)
{
    if (!ins) {
        return;
    }
    if (ins->ctx && ins->plugin && ins->plugin->options) {
        spool_options_free(ins->plugin->options, ins->ctx);
    }
    spool_options_free(spool__input_common_options, &ins->in);
    spool_options_free(spool__output_common_options, &ins->out);
    if (ins->counters[0]) {
        static const char *kinds[] = {"", "input", "processor", "output"};
        char labels[512];
        snprintf(labels, sizeof(labels), "kind=\"%s\",plugin=\"%s\",name=\"%s\"", kinds[ins->kind],
                 ins->plugin->name, ins->name);
        spool__metric_unregister_labels(labels);
    }
    spool_template_destroy(ins->key_tpl);
    free(ins->reject_reason);
    free(ins->ctx);
    free(ins->chain);
    free(ins->name);
    free(ins->path);
    free(ins->label);
    pthread_mutex_destroy(&ins->report.lock);
    free(ins);
}

const char *spool_instance_name(const spool_instance *ins)
{
    return ins->name;
}

const char *spool_instance_type(const spool_instance *ins)
{
    return ins->plugin->name;
}

const char *spool_instance_topic(const spool_instance *ins)
{
    return ins->in.topic;
}

int spool_topic_exists(const spool_instance *ins, const char *name)
{
    const spool_service_conf *conf = ins->conf;
    if (!conf && ins->svc) {
        conf = ins->svc->conf;
    }
    for (size_t i = 0; conf && name && i < conf->ntopics; i++) {
        if (strcmp(conf->topics[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

const char *spool_instance_data_dir(const spool_instance *ins)
{
    if (ins->svc && ins->svc->conf) {
        return ins->svc->conf->data_dir;
    }
    return ".";
}

int spool_instance_stopping(const spool_instance *ins)
{
    return atomic_load(&ins->stopping);
}

static char host_name[256];

static void host_name_init(void)
{
    if (gethostname(host_name, sizeof(host_name) - 1) != 0) {
        host_name[0] = '\0';
    }
}

const char *spool_hostname(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, host_name_init);
    return host_name[0] ? host_name : "localhost";
}

/* Adds one config error of ins: at `option`'s value, or inside it at byte
 * column `column` (1-based; 0 = the value itself). */
static void config_error_v(spool_instance *ins, const char *option, size_t column, const char *fmt,
                           va_list ap)
{
    char msg[1024], path[600];
    int line = 0, col = 0, exact = 1;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    ins->config_errors++;
    if (!ins->errs) {
        spool_log_error(ins, "%s: %s", option ? option : "", msg);
        return;
    }
    if (ins->node) {
        line = ins->node->line;
        col = ins->node->column;
        if (option && column > 0) {
            exact = spool_config_value_pos(ins->node, option, column - 1, &line, &col) != 0;
        } else if (option) {
            spool_config_option_pos(ins->node, option, &line, &col);
        }
    }
    if (!exact) {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof(msg) - len, " (at column %zu of the value)", column);
    }
    if (ins->path) {
        snprintf(path, sizeof(path), "%s%s%s", ins->path, option ? "." : "", option ? option : "");
    } else {
        static const char *sections[] = {"", "inputs", "processors", "outputs"};
        snprintf(path, sizeof(path), "%s[%d]%s%s", sections[ins->kind], ins->index,
                 option ? "." : "", option ? option : "");
    }
    spool_errors_add(ins->errs, ins->doc ? ins->doc->file : "", line, col, path, "%s", msg);
}

void spool_config_error(spool_instance *ins, const char *option, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    config_error_v(ins, option, 0, fmt, ap);
    va_end(ap);
}

void spool_config_error_at(spool_instance *ins, const char *option, size_t column, const char *fmt,
                           ...)
{
    va_list ap;
    va_start(ap, fmt);
    config_error_v(ins, option, column, fmt, ap);
    va_end(ap);
}
