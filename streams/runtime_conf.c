/*
 * runtime_conf.c: the `streams:` section of the configuration (DESIGN.md
 * "Streams", docs/streams.md): each entry's option table, its checks
 * (topics exist, the input topic keyed by the stream's key, names safe as
 * file names) and the engine definition compiled from its `pattern` or
 * `view`, all reported at file:line:column. `spool check` and `spool run`
 * load it alike; runtime.c runs what was loaded.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_int.h"

static const spool_option stream_options[] = {
    SPOOL_OPT_STR("name", stream_opts, name, NULL, 1, "the stream's unique name"),
    SPOOL_OPT_STR("from", stream_opts, from, NULL, 1, "the topic the stream reads"),
    SPOOL_OPT_STR("key", stream_opts, key, NULL, 1, "template: the state key, e.g. {{ ip }}"),
    SPOOL_OPT_STR("when", stream_opts, when, NULL, 0, "condition: records the stream considers"),
    SPOOL_OPT_STR("emit.topic", stream_opts, emit_topic, NULL, 1, "topic of the derived records"),
    SPOOL_OPT_STR("emit.key", stream_opts, emit_key, "{{ key }}", 0,
                  "template over the match: the derived record's key"),
    SPOOL_OPT_STR("emit.value", stream_opts, emit_value, NULL, 0,
                  "template over the match: the value (default: the match's fields as JSON)"),
    SPOOL_OPT_TIME("allowed_lateness", stream_opts, allowed_lateness, "0", 0, INT64_MAX / 4,
                   "event time a record may lag the partition's newest"),
    SPOOL_OPT_STR("late_topic", stream_opts, late_topic, NULL, 0,
                  "topic for records later than that (none = count only)"),
    SPOOL_OPT_TIME("idle_close", stream_opts, idle_close, "0", 0, INT64_MAX / 4,
                   "wall time without input after which a tick advances time (0 = never)"),
    SPOOL_OPT_STR("snapshot_every", stream_opts, snapshot_every, "10000", 0,
                  "records (a number) or a duration between state snapshots"),
    SPOOL_OPT_INTEGER("max_keys", stream_opts, max_keys, "100000", 1, INT64_MAX / 4,
                      "keys held per partition state; the oldest is evicted beyond"),
    SPOOL_OPT_END,
};

static const spool_plugin stream_plugin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "stream",
    .description = "a stream (streams:): emits derived records",
    .options = stream_options,
    .context_size = sizeof(stream_opts),
};

static int topic_index(const spool_service_conf *conf, const char *name)
{
    for (size_t t = 0; name && t < conf->ntopics; t++) {
        if (strcmp(conf->topics[t].name, name) == 0) {
            return (int)t;
        }
    }
    return -1;
}

static void check_topic(spool_instance *ins, const spool_service_conf *conf, const char *option,
                        const char *topic)
{
    if (topic && topic_index(conf, topic) < 0) {
        spool_config_error(ins, option, "unknown topic '%s' (declare it under topics:)", topic);
    }
}

/* Warns (spool check prints it) when the input's keys are not the stream's. */
static void check_keyed(spool_instance *ins, const spool_service_conf *conf, const char *from,
                        const char *key)
{
    for (size_t i = 0; i < conf->ninputs; i++) {
        const spool_instance *in = conf->inputs[i];
        if (in->in.topic && strcmp(in->in.topic, from) == 0 && strcmp(key, "{{ key }}") != 0) {
            /* No key template: the records keep the producer's keys (http). */
            if (in->in.key && strcmp(in->in.key, key) != 0) {
                spool_log_warn(ins,
                               "input '%s' writes topic '%s' with key '%s', not the stream's key "
                               "'%s': a key's records may be spread over partitions, each with "
                               "its own state",
                               in->name, from, in->in.key, key);
            }
        }
    }
}

/* ---- the engine's definition: the entry's options as (dotted name, value) ---- */

typedef struct optlist {
    sx_opt *items;
    size_t count, cap;
    char **owned; /* strings to free (names, normalised values) */
    size_t nowned, owned_cap;
} optlist;

static char *own(optlist *l, char *s)
{
    if (!s) {
        return NULL;
    }
    if (l->nowned == l->owned_cap) {
        size_t cap = l->owned_cap ? l->owned_cap * 2 : 16;
        char **n = realloc(l->owned, cap * sizeof(*n));
        if (!n) {
            free(s);
            return NULL;
        }
        l->owned = n;
        l->owned_cap = cap;
    }
    l->owned[l->nowned++] = s;
    return s;
}

static int opt_add(optlist *l, const char *name, const char *value)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        sx_opt *n = realloc(l->items, cap * sizeof(*n));
        if (!n) {
            return -ENOMEM;
        }
        l->items = n;
        l->cap = cap;
    }
    char *nm = own(l, strdup(name));
    if (!nm) {
        return -ENOMEM;
    }
    l->items[l->count++] = (sx_opt){nm, value};
    return 0;
}

static int is_duration_opt(const char *name)
{
    static const char *const tails[] = {".within", ".tumbling", ".hopping", ".every"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        size_t t = strlen(tails[i]);
        if (n >= t && strcmp(name + n - t, tails[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Flattens the `pattern`/`view` tree into dotted options. */
static int flatten(optlist *l, const spool_cnode *n, const char *prefix)
{
    char name[256];
    int rc = 0;
    if (n->type == SPOOL_CNODE_SCALAR) {
        const char *v = n->is_null ? "" : n->value;
        int64_t ms;
        if (is_duration_opt(prefix) && spool_parse_duration(v, &ms) == 0) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%" PRId64, ms);
            if (!(v = own(l, strdup(buf)))) {
                return -ENOMEM;
            }
        }
        return opt_add(l, prefix, v);
    }
    for (size_t i = 0; rc == 0 && i < n->count; i++) {
        if (n->type == SPOOL_CNODE_MAPPING) {
            snprintf(name, sizeof(name), "%s.%s", prefix, n->keys[i]);
        } else {
            snprintf(name, sizeof(name), "%s[%zu]", prefix, i);
        }
        rc = flatten(l, n->items[i], name);
    }
    return rc;
}

static void optlist_free(optlist *l)
{
    for (size_t i = 0; i < l->nowned; i++) {
        free(l->owned[i]);
    }
    free(l->owned);
    free(l->items);
}

/* The option the last failed compile named (config loading is one thread). */
static char last_failed[96];

static int compile_failed_on(spool_instance *ins, const char *option)
{
    (void)ins;
    return strcmp(last_failed, option) == 0;
}

/* Compiles the engine's definition of a stream entry; errors go to ins at
 * the option's position. 0, -EINVAL (reported) or -ENOMEM. */
int spool__stream_compile(spool_instance *ins, const spool_cnode *entry, sx_def **out)
{
    const stream_opts *o = ins->ctx;
    optlist l = {0};
    char lat[32], mk[32];
    int rc = 0;
    *out = NULL;
    snprintf(lat, sizeof(lat), "%" PRId64, o->allowed_lateness);
    snprintf(mk, sizeof(mk), "%" PRId64, o->max_keys);
    rc = opt_add(&l, "key", o->key ? o->key : "");
    rc = rc ? rc : opt_add(&l, "allowed_lateness", lat);
    rc = rc ? rc : opt_add(&l, "max_keys", mk);
    if (rc == 0 && o->when) {
        rc = opt_add(&l, "when", o->when);
    }
    const spool_cnode *p = spool_cnode_get(entry, "pattern");
    const spool_cnode *v = spool_cnode_get(entry, "view");
    if (rc == 0 && p) {
        rc = flatten(&l, p, "pattern");
    }
    if (rc == 0 && v) {
        rc = flatten(&l, v, "view");
    }
    if (rc == 0) {
        sx_error err;
        memset(&err, 0, sizeof(err));
        rc = sx_def_compile(l.items, l.count, out, &err);
        snprintf(last_failed, sizeof(last_failed), "%s", rc == -EINVAL ? err.option : "");
        if (rc == -EINVAL) {
            const char *opt = err.option[0] ? err.option : NULL;
            if (opt && !strcmp(opt, "allowed_lateness")) {
                opt = "allowed_lateness";
            }
            if (err.column) {
                spool_config_error_at(ins, opt, err.column, "%s", err.message);
            } else {
                spool_config_error(ins, opt, "%s", err.message[0] ? err.message : "invalid");
            }
        }
    }
    optlist_free(&l);
    return rc;
}

static int load_one(spool_service_conf *conf, const spool_cnode *entry, size_t index,
                    stream_conf *sc, spool_errors *errs)
{
    static const char *const ignore[] = {"pattern", "view", NULL};
    char path[64], what[96];
    snprintf(path, sizeof(path), "streams[%zu]", index);
    snprintf(what, sizeof(what), "streams[%zu] (stream)", index);
    const spool_cnode *nm = spool_cnode_get(entry, "name");
    char iname[300];
    snprintf(iname, sizeof(iname), "stream.%s",
             nm && nm->type == SPOOL_CNODE_SCALAR && !nm->is_null ? nm->value : "?");
    spool_instance *ins =
        spool__instance_new(&stream_plugin, SPOOL_PLUGIN_INPUT, (int)index, iname);
    if (!ins) {
        return 1;
    }
    sc->ins = ins;
    free(ins->label);
    ins->label = strdup(iname);
    ins->path = strdup(path);
    ins->doc = &conf->doc;
    ins->node = entry;
    ins->conf = conf;
    ins->errs = errs;
    if (!ins->label || !ins->path) {
        return 1;
    }
    const spool_option *tables[1] = {stream_options};
    void *ctxs[1] = {ins->ctx};
    int nerr = spool_config_fill(&conf->doc, entry, tables, ctxs, 1, ignore, path, what, errs);
    ins->config_errors = 0;
    stream_opts *o = ins->ctx;
    if (o->name) {
        size_t bad = strspn(o->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789._-");
        if (o->name[bad] || !strcmp(o->name, ".") || !strcmp(o->name, "..") ||
            strlen(o->name) > 200) {
            spool_config_error(ins, "name",
                               "'%s': a stream name is letters, digits, '.', '_' and '-' (it "
                               "names files under data_dir/streams/), at most 200 bytes",
                               o->name);
        }
    }
    check_topic(ins, conf, "from", o->from);
    check_topic(ins, conf, "emit.topic", o->emit_topic);
    check_topic(ins, conf, "late_topic", o->late_topic);
    if (o->from && o->emit_topic && strcmp(o->from, o->emit_topic) == 0) {
        spool_config_error(ins, "emit.topic", "a stream cannot emit to the topic it reads ('%s')",
                           o->from);
    }
    if (o->snapshot_every) {
        char *end;
        long long n = strtoll(o->snapshot_every, &end, 10);
        if (*end == '\0' && end != o->snapshot_every) {
            if (n < 1) {
                spool_config_error(ins, "snapshot_every", "must be at least 1 record");
            }
            sc->snap_records = n;
        } else if (spool_parse_duration(o->snapshot_every, &sc->snap_ms) < 0 || sc->snap_ms < 1) {
            spool_config_error(ins, "snapshot_every",
                               "'%s' is neither a number of records nor a duration (\"10000\", "
                               "\"30s\")",
                               o->snapshot_every);
        }
    }
    const char *terr = NULL;
    if (o->emit_key && !(sc->emit_key = spool_template_compile(o->emit_key, &terr))) {
        spool_config_error(ins, "emit.key", "%s", terr ? terr : "invalid template");
    }
    if (o->emit_value && !(sc->emit_value = spool_template_compile(o->emit_value, &terr))) {
        spool_config_error(ins, "emit.value", "%s", terr ? terr : "invalid template");
    }
    /* The definition is compiled even when other options had errors (they
     * hold their values or defaults), so one run reports every error. */
    int have_p = spool_cnode_get(entry, "pattern") != NULL;
    int have_v = spool_cnode_get(entry, "view") != NULL;
    int before = ins->config_errors;
    if (have_p == have_v) {
        spool_config_error(ins, NULL, "a stream needs exactly one of 'pattern' or 'view'");
    } else if (spool__stream_compile(ins, entry, &sc->def) < 0 && ins->config_errors == before) {
        spool_config_error(ins, have_p ? "pattern" : "view", "invalid definition");
    }
    /* The engine reports its first error only: the key template too if it was
     * not that one. */
    spool_template *kt = NULL;
    if (o->key && (have_p != have_v) && sc->def == NULL &&
        !(kt = spool_template_compile(o->key, &terr)) && !compile_failed_on(ins, "key")) {
        spool_config_error(ins, "key", "%s", terr ? terr : "invalid template");
    }
    spool_template_destroy(kt);
    if (o->from && o->key && nerr == 0 && ins->config_errors == 0) {
        check_keyed(ins, conf, o->from, o->key);
    }
    nerr += ins->config_errors;
    ins->errs = NULL;
    return nerr;
}

int spool__streams_load(spool_service_conf *conf, const spool_cnode *root, spool_errors *errs)
{
    const spool_cnode *seq = spool_cnode_get(root, "streams");
    if (!seq || (seq->type == SPOOL_CNODE_SCALAR && seq->is_null)) {
        return 0;
    }
    if (seq->type != SPOOL_CNODE_SEQUENCE) {
        spool_errors_add(errs, conf->doc.file, seq->line, seq->column, "streams",
                         "'streams' must be a list of streams, got %s", spool_cnode_type_name(seq));
        return 1;
    }
    spool__streams_conf *sc = calloc(1, sizeof(*sc));
    if (!sc || !(sc->items = calloc(seq->count ? seq->count : 1, sizeof(*sc->items)))) {
        free(sc);
        return 1;
    }
    conf->streams = sc;
    int nerr = 0;
    for (size_t i = 0; i < seq->count; i++) {
        const spool_cnode *e = seq->items[i];
        sc->count = i + 1;
        if (e->type != SPOOL_CNODE_MAPPING) {
            char path[64];
            snprintf(path, sizeof(path), "streams[%zu]", i);
            spool_errors_add(errs, conf->doc.file, e->line, e->column, path,
                             "each stream must be a mapping with name, from, key, emit and a "
                             "pattern or a view");
            nerr++;
            continue;
        }
        nerr += load_one(conf, e, i, &sc->items[i], errs);
        const stream_opts *o = sc->items[i].ins ? sc->items[i].ins->ctx : NULL;
        for (size_t k = 0; o && o->name && k < i; k++) {
            const stream_opts *q = sc->items[k].ins ? sc->items[k].ins->ctx : NULL;
            if (q && q->name && strcmp(q->name, o->name) == 0) {
                int l = e->line, c = e->column;
                spool_config_option_pos(e, "name", &l, &c);
                char path[64];
                snprintf(path, sizeof(path), "streams[%zu].name", i);
                spool_errors_add(errs, conf->doc.file, l, c, path,
                                 "duplicate stream name '%s': names must be unique", o->name);
                nerr++;
            }
        }
    }
    return nerr;
}

void spool__streams_free(spool_service_conf *conf)
{
    spool__streams_conf *sc = conf->streams;
    if (!sc) {
        return;
    }
    for (size_t i = 0; i < sc->count; i++) {
        sx_def_free(sc->items[i].def);
        spool_template_destroy(sc->items[i].emit_key);
        spool_template_destroy(sc->items[i].emit_value);
        spool__instance_free(sc->items[i].ins);
    }
    free(sc->items);
    free(sc);
    conf->streams = NULL;
}
