/*
 * config_load.c: the sections of spool's YAML file (DESIGN.md, "The
 * configuration surface") validated into a spool_service_conf.
 *
 * The generic machinery (tree, positions, units, option tables, errors)
 * is in agent/config/; this file knows the sections: `service`, `topics`,
 * `inputs`, `processors`, `outputs`, the core options every input and
 * output has, cross-references (an input's topic, an output's topics and
 * dead-letter topic must exist; names are unique), and runs each plugin's
 * own check(). Every error is collected; nothing is printed here.
 *
 * Processor chains: an input's own `processors:` list is its chain; the
 * top-level `processors:` section is the chain run for every input, after
 * the input's own. conf->processors holds every processor instance (the
 * top-level ones first, in file order, then each input's chain in input
 * order), so starting and stopping treat them alike; an instance of an
 * input's chain has chain_owner set and the input lists it in ins->chain.
 * Names in a chain are scoped by the input: `<input>.<name>`, or, without
 * a name, `<input>.<type>` when the type is alone in the chain, else
 * `<input>.processors[i]` (the entry's path, which errors show).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const on_full_names[] = {"block", "drop_oldest", NULL};
static const char *const compression_names[] = {"none", "zstd", NULL};

typedef struct service_opts {
    char *data_dir;
    int log_level;
    int log_format;
    char *plugin_dir;
    char *http_listen;
    int64_t memory_limit;
    int64_t shutdown_timeout;
} service_opts;

static const spool_option service_options[] = {
    SPOOL_OPT_STR("data_dir", service_opts, data_dir, "/var/lib/spool", 0,
                  "where topics, positions and cursors live"),
    SPOOL_OPT_CHOICE("log_level", service_opts, log_level, "info", log_levels,
                     "error | warn | info | debug"),
    SPOOL_OPT_CHOICE("log_format", service_opts, log_format, "text", log_formats,
                     "format of spool's own log on stderr: text | json"),
    SPOOL_OPT_STR("plugin_dir", service_opts, plugin_dir, "/usr/lib/spool/plugins", 0,
                  "directory of external plugins (*.so)"),
    SPOOL_OPT_STR("http.listen", service_opts, http_listen, NULL, 0,
                  "address:port of /metrics, /health and /api/v1 (none = off)"),
    SPOOL_OPT_BYTES("memory_limit", service_opts, memory_limit, "64MiB", 4 << 20, 1LL << 40,
                    "data held in memory (batches, queues, output chunks, request bodies); "
                    "RSS stays within it plus a fixed overhead (docs/memory.md)"),
    SPOOL_OPT_TIME("shutdown_timeout", service_opts, shutdown_timeout, "10s", 0, 3600000,
                   "how long outputs may take to deliver on a clean shutdown"),
    SPOOL_OPT_END,
};

typedef struct topic_opts {
    int64_t partitions;
    int64_t segment_bytes;
    int64_t segment_age;
    int64_t retention_age;
    int64_t retention_bytes;
    int64_t max_bytes;
    char *fsync;
    int on_full;
    int compression;
    int64_t index_interval;
} topic_opts;

static const spool_option topic_options[] = {
    SPOOL_OPT_INTEGER("partitions", topic_opts, partitions, "1", 1, 4096, "number of partitions"),
    SPOOL_OPT_BYTES("segment_bytes", topic_opts, segment_bytes, "64MiB", 4096, 1LL << 31,
                    "roll to a new segment file at this size"),
    SPOOL_OPT_TIME("segment_age", topic_opts, segment_age, "1d", 0, INT64_MAX / 2,
                   "roll to a new segment file at this age (0 = never)"),
    SPOOL_OPT_TIME("retention.age", topic_opts, retention_age, "7d", 0, INT64_MAX / 2,
                   "delete delivered segments older than this (0 = keep)"),
    SPOOL_OPT_BYTES("retention.bytes", topic_opts, retention_bytes, "0", 0, INT64_MAX / 2,
                    "delete delivered segments beyond this size per partition (0 = keep)"),
    SPOOL_OPT_BYTES("max_bytes", topic_opts, max_bytes, "0", 0, INT64_MAX / 2,
                    "hard size limit per partition where on_full applies (0 = none)"),
    SPOOL_OPT_STR("fsync", topic_opts, fsync, "1s", 0,
                  "always | never | a duration: how much data may be at risk"),
    SPOOL_OPT_CHOICE("on_full", topic_opts, on_full, "block", on_full_names,
                     "at max_bytes: block the inputs, or drop_oldest undelivered segments"),
    SPOOL_OPT_CHOICE("compression", topic_opts, compression, "none", compression_names,
                     "compression of record batches on disk: none | zstd"),
    SPOOL_OPT_BYTES("index_interval", topic_opts, index_interval, "4KiB", 64, 1 << 30,
                    "bytes of log between sparse index entries"),
    SPOOL_OPT_END,
};

static const char *const section_names[] = {"service", "topics", "inputs", "processors", "outputs"};

static void add_err(spool_errors *errs, const spool_cdoc *doc, const spool_cnode *n,
                    const char *path, const char *fmt, const char *a, const char *b)
{
    spool_errors_add(errs, doc->file, n ? n->line : 0, n ? n->column : 0, path, fmt, a, b);
}

static void key_pos(const spool_cnode *map, size_t i, int *line, int *col)
{
    *line = map->key_lines ? map->key_lines[i] : map->line;
    *col = map->key_columns ? map->key_columns[i] : map->column;
}

static int load_service(spool_service_conf *conf, const spool_cnode *root, spool_errors *errs)
{
    service_opts so = {0};
    const spool_cnode *svc = spool_cnode_get(root, "service");
    const spool_cnode empty = {.type = SPOOL_CNODE_MAPPING, .line = 1, .column = 1};
    const spool_option *tables[1] = {service_options};
    void *ctxs[1] = {&so};
    int n;

    if (svc && svc->type != SPOOL_CNODE_MAPPING) {
        add_err(errs, &conf->doc, svc, "service", "%s%s", "'service' must be a mapping", "");
        svc = NULL;
    }
    n = spool_config_fill(&conf->doc, svc ? svc : &empty, tables, ctxs, 1, NULL, "service",
                          "service", errs);
    conf->log_level = so.log_level;
    conf->log_format = so.log_format;
    conf->memory_limit = so.memory_limit;
    conf->shutdown_timeout = so.shutdown_timeout;
    conf->plugin_dir = so.plugin_dir;
    conf->http_listen = so.http_listen;
    if (so.http_listen) {
        char why[512];
        if (spool__address_valid(so.http_listen, SPOOL_ADDR_LISTEN, why, sizeof(why)) < 0 ||
            spool__listen_resolvable(so.http_listen, why, sizeof(why)) < 0) {
            int l = svc ? svc->line : 0, c = svc ? svc->column : 0;
            spool_config_option_pos(svc, "http.listen", &l, &c);
            spool_errors_add(errs, conf->doc.file, l, c, "service.http.listen",
                             "invalid address '%s': %s", so.http_listen, why);
            n++;
        }
    }
    conf->data_dir = NULL;
    if (so.data_dir) {
        if (so.data_dir[0] == '/') {
            conf->data_dir = so.data_dir;
        } else {
            char cwd[PATH_MAX], full[PATH_MAX * 2];
            if (!getcwd(cwd, sizeof(cwd))) {
                snprintf(cwd, sizeof(cwd), ".");
            }
            snprintf(full, sizeof(full), "%s/%s", cwd, so.data_dir);
            conf->data_dir = strdup(full);
            free(so.data_dir);
        }
    }
    return n;
}

static int parse_fsync(const char *text, spool_topic_conf *tc)
{
    if (strcmp(text, "always") == 0) {
        tc->fsync_mode = SPOOL_FSYNC_ALWAYS;
        return 0;
    }
    if (strcmp(text, "never") == 0) {
        tc->fsync_mode = SPOOL_FSYNC_NEVER;
        return 0;
    }
    if (spool_parse_duration(text, &tc->fsync_interval_ms) == 0 && tc->fsync_interval_ms > 0) {
        tc->fsync_mode = SPOOL_FSYNC_INTERVAL;
        return 0;
    }
    return -EINVAL;
}

static int add_topic(spool_service_conf *conf, const char *name, const topic_opts *to)
{
    spool_topic_conf *t = realloc(conf->topics, (conf->ntopics + 1) * sizeof(*t));
    if (!t) {
        return -ENOMEM;
    }
    conf->topics = t;
    t = &conf->topics[conf->ntopics];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    t->partitions = (int32_t)to->partitions;
    t->segment_bytes = to->segment_bytes;
    t->segment_ms = to->segment_age;
    t->retention_ms = to->retention_age;
    t->retention_bytes = to->retention_bytes;
    t->max_bytes = to->max_bytes;
    t->on_full = to->on_full;
    t->compression = to->compression == 1 ? SPOOL_COMPRESS_ZSTD : SPOOL_COMPRESS_NONE;
    t->index_interval_bytes = to->index_interval;
    if (to->fsync) {
        parse_fsync(to->fsync, t);
    }
    conf->ntopics++;
    return t->name ? 0 : -ENOMEM;
}

static int valid_topic_name(const char *s)
{
    if (!*s || strlen(s) > 200 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-')) {
            return 0;
        }
    }
    return 1;
}

static int load_topics(spool_service_conf *conf, const spool_cnode *root, spool_errors *errs)
{
    const spool_cnode *topics = spool_cnode_get(root, "topics");
    int nerr = 0;
    char path[512];

    if (!topics) {
        /* No topics section: one topic "default" with every default. */
        topic_opts to = {0};
        const spool_cnode empty = {.type = SPOOL_CNODE_MAPPING, .line = 1, .column = 1};
        const spool_option *tables[1] = {topic_options};
        void *ctxs[1] = {&to};
        nerr += spool_config_fill(&conf->doc, &empty, tables, ctxs, 1, NULL, "topics.default",
                                  "topic 'default'", errs);
        add_topic(conf, "default", &to);
        spool_options_free(topic_options, &to);
        return nerr;
    }
    if (topics->type != SPOOL_CNODE_MAPPING) {
        add_err(errs, &conf->doc, topics, "topics", "%s%s",
                "'topics' must be a mapping of topic names to their settings", "");
        return 1;
    }
    for (size_t i = 0; i < topics->count; i++) {
        const char *name = topics->keys[i];
        const spool_cnode *tn = topics->items[i];
        const spool_cnode empty = {
            .type = SPOOL_CNODE_MAPPING, .line = tn->line, .column = tn->column};
        topic_opts to = {0};
        const spool_option *tables[1] = {topic_options};
        void *ctxs[1] = {&to};
        char what[300];
        snprintf(path, sizeof(path), "topics.%s", name);
        snprintf(what, sizeof(what), "topic '%s'", name);
        if (!valid_topic_name(name)) {
            int l, c;
            key_pos(topics, i, &l, &c);
            spool_errors_add(errs, conf->doc.file, l, c, path,
                             "invalid topic name '%s' (letters, digits, '.', '_', '-')", name);
            nerr++;
            continue;
        }
        if (tn->type == SPOOL_CNODE_SCALAR && tn->is_null) {
            tn = &empty;
        } else if (tn->type != SPOOL_CNODE_MAPPING) {
            add_err(errs, &conf->doc, tn, path, "%s%s", "a topic's settings must be a mapping", "");
            nerr++;
            continue;
        }
        int n = spool_config_fill(&conf->doc, tn, tables, ctxs, 1, NULL, path, what, errs);
        nerr += n;
        if (to.fsync) {
            spool_topic_conf tmp;
            if (parse_fsync(to.fsync, &tmp) < 0) {
                int l = tn->line, c = tn->column;
                spool_config_option_pos(tn, "fsync", &l, &c);
                spool_errors_add(errs, conf->doc.file, l, c, path,
                                 "fsync must be always, never or a duration like 1s, not '%s'",
                                 to.fsync);
                nerr++;
            }
        }
        if (n == 0 && to.max_bytes > 0 && to.max_bytes < 2 * to.segment_bytes) {
            int l = tn->line, c = tn->column;
            spool_config_option_pos(tn, "max_bytes", &l, &c);
            spool_errors_add(errs, conf->doc.file, l, c, path,
                             "max_bytes must be at least twice segment_bytes (%lld bytes): "
                             "retention frees whole segments, never the one being written",
                             (long long)to.segment_bytes);
            nerr++;
        }
        if (add_topic(conf, name, &to) < 0) {
            nerr++;
        }
        spool_options_free(topic_options, &to);
    }
    return nerr;
}

static int topic_exists(const spool_service_conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->ntopics; i++) {
        if (strcmp(conf->topics[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void topic_error(spool_service_conf *conf, const spool_cnode *entry, const char *option,
                        const char *path, const char *name, spool_errors *errs)
{
    const char *cands[256];
    size_t n = 0;
    int l = entry->line, c = entry->column;
    for (size_t i = 0; i < conf->ntopics && n < 256; i++) {
        cands[n++] = conf->topics[i].name;
    }
    const char *dym = spool_did_you_mean(name, cands, n);
    spool_config_option_pos(entry, option, &l, &c);
    if (dym) {
        spool_errors_add(errs, conf->doc.file, l, c, path,
                         "topic '%s' is not defined in topics, did you mean '%s'?", name, dym);
    } else {
        spool_errors_add(errs, conf->doc.file, l, c, path, "topic '%s' is not defined in topics",
                         name);
    }
}

static int name_taken(spool_service_conf *conf, const char *name)
{
    spool_instance **lists[3] = {conf->inputs, conf->processors, conf->outputs};
    size_t counts[3] = {conf->ninputs, conf->nprocessors, conf->noutputs};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            if (strcmp(lists[k][i]->name, name) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* How many entries of the sequence `chain` have type `type`. */
static size_t type_count(const spool_cnode *chain, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; chain && i < chain->count; i++) {
        const spool_cnode *t = spool_cnode_get(chain->items[i], "type");
        n += t && t->type == SPOOL_CNODE_SCALAR && t->value && strcmp(t->value, type) == 0;
    }
    return n;
}

/* One entry of a section (or, with `owner`, of that input's chain, the
 * sequence `chain`, whose path is `section`). */
static int load_entry(spool_service_conf *conf, spool_plugin_kind kind, const char *section,
                      size_t index, const spool_cnode *entry, spool_errors *errs,
                      spool_instance *owner, const spool_cnode *chain, spool_instance **out)
{
    static const char *const kind_names[] = {"", "input", "processor", "output"};
    static const char *const ignore_plain[] = {"type", "name", NULL};
    static const char *const ignore_input[] = {"type", "name", "processors", NULL};
    const char *const *ignore = kind == SPOOL_PLUGIN_INPUT ? ignore_input : ignore_plain;
    char scoped[600];
    const char *iname;
    char path[400], what[500];
    const spool_cnode *type, *name;
    const spool_plugin *p;
    spool_instance *ins;
    int nerr = 0;

    *out = NULL;
    snprintf(path, sizeof(path), "%s[%zu]", section, index);
    if (entry->type != SPOOL_CNODE_MAPPING) {
        add_err(errs, &conf->doc, entry, path, "%s%s",
                "each entry must be a mapping with at least 'type'", "");
        return 1;
    }
    type = spool_cnode_get(entry, "type");
    if (!type || type->type != SPOOL_CNODE_SCALAR || type->is_null) {
        add_err(errs, &conf->doc, type ? type : entry, path, "%s%s",
                type ? "'type' must be a plugin name" : "missing required option 'type'", "");
        return 1;
    }
    p = spool_registry_find(kind, type->value);
    if (!p && conf->plugin_dir) {
        /* spool's optional plugins load only when a config names them. */
        char lerr[600];
        if (spool_registry_load_type(conf->plugin_dir, kind, type->value, lerr, sizeof(lerr)) ==
            0) {
            p = spool_registry_find(kind, type->value);
        } else if (lerr[0]) {
            char tpath[500];
            snprintf(tpath, sizeof(tpath), "%s.type", path);
            spool_errors_add(errs, conf->doc.file, type->line, type->column, tpath, "%s", lerr);
            return 1;
        }
    }
    if (!p) {
        const char *names[REGISTRY_NAMES_MAX];
        size_t n = spool_registry_names(kind, names, REGISTRY_NAMES_MAX);
        const char *dym = spool_did_you_mean(type->value, names, n);
        char tpath[500];
        snprintf(tpath, sizeof(tpath), "%s.type", path);
        if (dym) {
            spool_errors_add(errs, conf->doc.file, type->line, type->column, tpath,
                             "unknown %s plugin type '%s', did you mean '%s'?", kind_names[kind],
                             type->value, dym);
        } else {
            spool_errors_add(errs, conf->doc.file, type->line, type->column, tpath,
                             "unknown %s plugin type '%s' (see `spool plugins`)", kind_names[kind],
                             type->value);
        }
        return 1;
    }
    name = spool_cnode_get(entry, "name");
    if (name && (name->type != SPOOL_CNODE_SCALAR || name->is_null || !name->value[0])) {
        add_err(errs, &conf->doc, name, path, "%s%s", "'name' must be a non-empty string", "");
        nerr++;
        name = NULL;
    }
    iname = name ? name->value : NULL;
    if (owner) {
        if (name) {
            snprintf(scoped, sizeof(scoped), "%s.%s", owner->name, name->value);
        } else if (type_count(chain, p->name) == 1) {
            snprintf(scoped, sizeof(scoped), "%s.%s", owner->name, p->name);
        } else {
            snprintf(scoped, sizeof(scoped), "%s.processors[%zu]", owner->name, index);
        }
        iname = scoped;
    }
    if (iname && name_taken(conf, iname)) {
        char npath[500];
        snprintf(npath, sizeof(npath), "%s.name", path);
        const spool_cnode *at = name ? name : entry;
        spool_errors_add(errs, conf->doc.file, at->line, at->column, name ? npath : path,
                         "duplicate name '%s': names must be unique", iname);
        nerr++;
    }
    ins = spool__instance_new(p, kind, (int)index, iname);
    if (!ins) {
        return nerr + 1;
    }
    ins->doc = &conf->doc;
    ins->node = entry;
    ins->conf = conf;
    ins->chain_owner = owner;
    if (owner && !(ins->path = strdup(path))) {
        spool__instance_free(ins);
        return nerr + 1;
    }
    snprintf(what, sizeof(what), "%s (%s)", path, p->name);
    const spool_option *tables[2] = {p->options, NULL};
    void *ctxs[2] = {ins->ctx, NULL};
    size_t ntables = p->options ? 1 : 0;
    if (!p->options) {
        tables[0] = NULL;
    }
    if (kind == SPOOL_PLUGIN_INPUT) {
        tables[ntables] = spool__input_common_options;
        ctxs[ntables++] = &ins->in;
    } else if (kind == SPOOL_PLUGIN_OUTPUT) {
        tables[ntables] = spool__output_common_options;
        ctxs[ntables++] = &ins->out;
    }
    nerr += spool_config_fill(&conf->doc, entry, tables, ctxs, ntables, ignore, path, what, errs);
    /* Until the plugin's check() runs, the errors of the entry itself: an
     * entry with none is checked even when others have errors. */
    ins->config_errors = nerr;
    *out = ins;
    return nerr;
}

static int check_refs(spool_service_conf *conf, spool_errors *errs)
{
    int nerr = 0;
    char path[300];
    for (size_t i = 0; i < conf->ninputs; i++) {
        spool_instance *ins = conf->inputs[i];
        snprintf(path, sizeof(path), "inputs[%d].topic", ins->index);
        if (!ins->in.topic || (ins->topic = topic_exists(conf, ins->in.topic)) < 0) {
            topic_error(conf, ins->node, "topic", path, ins->in.topic ? ins->in.topic : "", errs);
            nerr++;
        }
        if (ins->in.key) {
            const char *err;
            ins->key_tpl = spool_template_compile(ins->in.key, &err);
            if (!ins->key_tpl) {
                int l = ins->node->line, c = ins->node->column;
                snprintf(path, sizeof(path), "inputs[%d].key", ins->index);
                spool_config_option_pos(ins->node, "key", &l, &c);
                spool_errors_add(errs, conf->doc.file, l, c, path, "%s", err);
                nerr++;
            }
        }
    }
    for (size_t i = 0; i < conf->noutputs; i++) {
        spool_instance *ins = conf->outputs[i];
        for (size_t k = 0; k < ins->out.topics.count; k++) {
            if (topic_exists(conf, ins->out.topics.items[k]) < 0) {
                snprintf(path, sizeof(path), "outputs[%d].topics", ins->index);
                topic_error(conf, ins->node, "topics", path, ins->out.topics.items[k], errs);
                nerr++;
            }
        }
        if (ins->out.dead_letter_topic && topic_exists(conf, ins->out.dead_letter_topic) < 0) {
            snprintf(path, sizeof(path), "outputs[%d].dead_letter_topic", ins->index);
            topic_error(conf, ins->node, "dead_letter_topic", path, ins->out.dead_letter_topic,
                        errs);
            nerr++;
        }
    }
    return nerr;
}

static int load_section(spool_service_conf *conf, const spool_cnode *root, int which,
                        spool_plugin_kind kind, spool_instance ***list, size_t *count,
                        spool_errors *errs)
{
    const char *section = section_names[which];
    const spool_cnode *seq = spool_cnode_get(root, section);
    int nerr = 0;
    if (!seq || (seq->type == SPOOL_CNODE_SCALAR && seq->is_null)) {
        return 0;
    }
    if (seq->type != SPOOL_CNODE_SEQUENCE) {
        add_err(errs, &conf->doc, seq, section, "'%s' must be a list of entries (- type: ...)%s",
                section, "");
        return 1;
    }
    *list = calloc(seq->count ? seq->count : 1, sizeof(**list));
    if (!*list) {
        return 1;
    }
    for (size_t i = 0; i < seq->count; i++) {
        spool_instance *ins;
        nerr += load_entry(conf, kind, section, i, seq->items[i], errs, NULL, NULL, &ins);
        if (ins) {
            (*list)[(*count)++] = ins;
        }
    }
    return nerr;
}

/* Each input's own `processors:` chain, appended to conf->processors. */
static int load_chains(spool_service_conf *conf, spool_errors *errs)
{
    int nerr = 0;
    char section[300];
    for (size_t i = 0; i < conf->ninputs; i++) {
        spool_instance *in = conf->inputs[i];
        const spool_cnode *seq = spool_cnode_get(in->node, "processors");
        if (!seq || (seq->type == SPOOL_CNODE_SCALAR && (seq->is_null || seq->bad))) {
            continue;
        }
        snprintf(section, sizeof(section), "inputs[%d].processors", in->index);
        if (seq->type != SPOOL_CNODE_SEQUENCE) {
            add_err(errs, &conf->doc, seq, section,
                    "'processors' must be a list of processor entries (- type: ...), got %s",
                    spool_cnode_type_name(seq), "");
            nerr++;
            continue;
        }
        size_t total = conf->nprocessors + seq->count;
        spool_instance **all = realloc(conf->processors, (total ? total : 1) * sizeof(*all));
        in->chain = calloc(seq->count ? seq->count : 1, sizeof(*in->chain));
        if (all) {
            conf->processors = all;
        }
        if (!all || !in->chain) {
            return nerr + 1;
        }
        for (size_t k = 0; k < seq->count; k++) {
            spool_instance *ins;
            nerr += load_entry(conf, SPOOL_PLUGIN_PROCESSOR, section, k, seq->items[k], errs, in,
                               seq, &ins);
            if (ins) {
                conf->processors[conf->nprocessors++] = ins;
                in->chain[in->nchain++] = ins;
            }
        }
    }
    return nerr;
}

/* ---- refusals of the log, found before the run (agent/log/preflight.c) ---- */

typedef struct preflight_ctx {
    spool_service_conf *conf;
    const spool_cnode *root;
    spool_errors *errs;
} preflight_ctx;

static void preflight_problem(void *arg, int problem, const char *topic, const char *msg)
{
    preflight_ctx *pc = arg;
    char path[300];
    int l = 1, c = 1;
    const spool_cnode *n = spool_cnode_get(pc->root, topic ? "topics" : "service");
    if (n != NULL) {
        l = n->line;
        c = n->column;
    }
    if (problem == SPOOL_PLOG_PARTITIONS_CUT && topic != NULL) {
        const spool_cnode *tn = n ? spool_cnode_get(n, topic) : NULL;
        snprintf(path, sizeof(path), "topics.%s.partitions", topic);
        if (tn != NULL) {
            l = tn->line;
            c = tn->column;
            spool_config_option_pos(tn, "partitions", &l, &c);
        }
    } else {
        snprintf(path, sizeof(path), "service.data_dir");
        if (n != NULL) {
            spool_config_option_pos(n, "data_dir", &l, &c);
        }
    }
    spool_errors_add(pc->errs, pc->conf->doc.file, l, c, path, "%s", msg);
}

void spool_config_consumers_free(spool_plog_consumer_conf *cons, size_t n)
{
    for (size_t i = 0; cons != NULL && i < n; i++) {
        for (size_t k = 0; k < cons[i].topic_count; k++) {
            free((char *)cons[i].topics[k]);
        }
        free((char **)cons[i].topics);
        free((char *)cons[i].name);
    }
    free(cons);
}

/* The outputs as the log names its consumers ("output.<name>"), copied;
 * free with spool_config_consumers_free(*out, conf->noutputs). 0 or -ENOMEM. */
int spool__config_consumers(const spool_service_conf *conf, spool_plog_consumer_conf **out)
{
    spool_plog_consumer_conf *cons = calloc(conf->noutputs ? conf->noutputs : 1, sizeof(*cons));
    *out = NULL;
    if (cons == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < conf->noutputs; i++) {
        const spool_instance *ins = conf->outputs[i];
        size_t len = strlen(ins->name) + 8;
        char *name = malloc(len);
        char **topics = calloc(ins->out.topics.count ? ins->out.topics.count : 1, sizeof(*topics));
        cons[i].name = name;
        cons[i].topics = (const char *const *)topics;
        if (name == NULL || topics == NULL) {
            spool_config_consumers_free(cons, i + 1);
            return -ENOMEM;
        }
        snprintf(name, len, "output.%s", ins->name);
        for (size_t k = 0; k < ins->out.topics.count; k++) {
            if ((topics[k] = strdup(ins->out.topics.items[k])) == NULL) {
                spool_config_consumers_free(cons, i + 1);
                return -ENOMEM;
            }
            cons[i].topic_count = k + 1;
        }
    }
    *out = cons;
    return 0;
}

static int preflight(spool_service_conf *conf, const spool_cnode *root, spool_errors *errs)
{
    spool_plog_consumer_conf *cons = NULL;
    if (spool__config_consumers(conf, &cons) < 0) {
        return 1;
    }
    preflight_ctx pc = {conf, root, errs};
    int n = spool_plog_preflight(conf->data_dir, conf->topics, conf->ntopics, cons, conf->noutputs,
                                 preflight_problem, &pc);
    if (n < 0) {
        spool_errors_add(errs, conf->doc.file, 1, 1, "service.data_dir",
                         "cannot inspect the log in %s: %s", conf->data_dir, strerror(-n));
        n = 1;
    }
    spool_config_consumers_free(cons, conf->noutputs);
    return n;
}

int spool_service_conf_load(const char *path, spool_service_conf *conf, spool_errors *errs)
{
    static const char *const top_keys[] = {"service",    "topics",  "inputs",
                                           "processors", "outputs", "streams"};
    int nerr = 0, rc;
    memset(conf, 0, sizeof(*conf));
    if (path) {
        rc = spool_cdoc_load_file(path, &conf->doc, errs);
    } else {
        rc = spool_cdoc_load_buffer("<embedded conf/spool.yaml>", spool_default_config,
                                    spool_default_config_len, &conf->doc, errs);
    }
    if (rc < 0) {
        nerr += errs->count ? (int)errs->count : 1;
        if (!conf->doc.root) {
            return nerr; /* unreadable or not YAML: nothing to validate */
        }
        /* Duplicate keys, unset ${VAR}...: reported; validate the rest too. */
    }
    const spool_cnode *root = conf->doc.root;
    const spool_cnode empty = {.type = SPOOL_CNODE_MAPPING, .line = 1, .column = 1};
    if (!root || (root->type == SPOOL_CNODE_SCALAR && root->is_null)) {
        if (path) {
            /* Most likely the wrong file, or one truncated by mistake. */
            spool_errors_add(errs, conf->doc.file, 1, 1, "",
                             "the file is empty (nothing but blanks or comments): expected "
                             "service, topics, inputs and outputs");
            return nerr + 1;
        }
        root = &empty;
    }
    if (root->type != SPOOL_CNODE_MAPPING) {
        add_err(errs, &conf->doc, root, "", "%s%s",
                "the file must be a mapping with service, topics, inputs and outputs", "");
        return 1;
    }
    for (size_t i = 0; i < root->count; i++) {
        int known = 0;
        for (size_t k = 0; k < 6; k++) {
            known |= strcmp(root->keys[i], top_keys[k]) == 0;
        }
        if (!known) {
            int l, c;
            const char *dym = spool_did_you_mean(root->keys[i], top_keys, 6);
            key_pos(root, i, &l, &c);
            if (dym) {
                spool_errors_add(errs, conf->doc.file, l, c, root->keys[i],
                                 "unknown section '%s', did you mean '%s'?", root->keys[i], dym);
            } else {
                spool_errors_add(errs, conf->doc.file, l, c, root->keys[i],
                                 "unknown section '%s' (service, topics, inputs, processors, "
                                 "outputs, streams)",
                                 root->keys[i]);
            }
            nerr++;
        }
    }
    nerr += load_service(conf, root, errs);
    if (conf->plugin_dir) {
        if (spool_registry_load_dir(conf->plugin_dir, errs) < 0) {
            nerr++;
        }
    }
    nerr += load_topics(conf, root, errs);
    nerr += load_section(conf, root, 2, SPOOL_PLUGIN_INPUT, &conf->inputs, &conf->ninputs, errs);
    nerr += load_section(conf, root, 3, SPOOL_PLUGIN_PROCESSOR, &conf->processors,
                         &conf->nprocessors, errs);
    nerr += load_chains(conf, errs);
    nerr += load_section(conf, root, 4, SPOOL_PLUGIN_OUTPUT, &conf->outputs, &conf->noutputs, errs);
    nerr += check_refs(conf, errs);
    nerr += spool__streams_load(conf, root, errs);
    {
        /* Plugins' own checks (files, addresses, semantics), on every entry
         * whose own options were valid, so one run reports every error. */
        spool_instance **lists[3] = {conf->inputs, conf->processors, conf->outputs};
        size_t counts[3] = {conf->ninputs, conf->nprocessors, conf->noutputs};
        for (int k = 0; k < 3; k++) {
            for (size_t i = 0; i < counts[k]; i++) {
                spool_instance *ins = lists[k][i];
                if (ins->config_errors == 0 && ins->plugin->check) {
                    ins->errs = errs;
                    ins->config_errors = 0;
                    if (ins->plugin->check(ins, ins->ctx) < 0 && ins->config_errors == 0) {
                        spool_config_error(ins, NULL, "invalid configuration");
                    }
                    nerr += ins->config_errors;
                    ins->errs = NULL;
                }
            }
        }
    }
    if (nerr == 0 && conf->data_dir) {
        /* What the log would refuse at start: lost positions, dropped partitions. */
        nerr += preflight(conf, root, errs);
    }
    spool_errors_sort(errs); /* in file order, whichever check found them */
    return nerr;
}

void spool_service_conf_free(spool_service_conf *conf)
{
    spool__streams_free(conf);
    spool_instance **lists[3] = {conf->inputs, conf->processors, conf->outputs};
    size_t counts[3] = {conf->ninputs, conf->nprocessors, conf->noutputs};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            spool__instance_free(lists[k][i]);
        }
        free(lists[k]);
    }
    for (size_t i = 0; i < conf->ntopics; i++) {
        free(conf->topics[i].name);
    }
    free(conf->topics);
    free(conf->data_dir);
    free(conf->plugin_dir);
    free(conf->http_listen);
    spool_cdoc_free(&conf->doc);
    memset(conf, 0, sizeof(*conf));
}

/* For the log CLI (agent/cli_log.h): the data_dir, topics and outputs of a
 * config file. Topics move to the caller (free each name and the array). */
int spool_config_data_dir(const char *config_path, char *out, size_t cap, spool_topic_conf **topics,
                          size_t *ntopics, spool_plog_consumer_conf **consumers, size_t *nconsumers)
{
    spool_errors errs = {0};
    spool_service_conf conf;
    spool_registry_init();
    int n = spool_service_conf_load(config_path, &conf, &errs);
    if (n > 0 && !conf.data_dir) {
        spool_errors_print(&errs, stderr);
        spool_errors_free(&errs);
        spool_service_conf_free(&conf);
        return -EINVAL;
    }
    spool_errors_free(&errs);
    snprintf(out, cap, "%s", conf.data_dir);
    if (topics) {
        *topics = conf.topics;
        *ntopics = conf.ntopics;
        conf.topics = NULL;
        conf.ntopics = 0;
    }
    if (consumers) {
        *nconsumers = spool__config_consumers(&conf, consumers) == 0 ? conf.noutputs : 0;
    }
    spool_service_conf_free(&conf);
    return 0;
}
