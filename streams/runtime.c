/*
 * runtime.c: the stream runtime (DESIGN.md "Streams", docs/streams.md). It
 * drives the engine (streams/engine.h: pure state machines) over the log:
 * one thread per stream reads the stream's `from` topic at its own offset,
 * one engine state per input partition, and appends what the engine emits
 * to the `emit` topic (and late records to `late_topic`).
 *
 * Exactly once by construction. After each read of one partition the
 * runtime hands the log writer ONE batch holding every record that read
 * produced and the position "stream.<name>/<topic>/<partition>" = the next
 * input offset; the writer's atomic direct lane (writer.c) appends the
 * records and records the position in the same commit. The position in the
 * log's checkpoint is the only cursor the runtime trusts: on start it loads
 * the partition's snapshot (data_dir/streams/<name>/<partition>.snap,
 * written tmp + fsync + rename, naming the input offset it reflects, taken
 * only at an offset already durable), replays the input from that offset to
 * the durable position without emitting, then goes on emitting. So after a
 * kill -9 or a power loss every input record is applied to the state once
 * and its derived records are in the log once.
 *
 * Ticks. A stream whose partition got no input for `idle_close` of wall
 * time appends one tick record to that partition of the input topic (key
 * chosen to hash there, header `spool.tick: <stream>`, timestamp = the wall
 * clock, value empty); every stream reading the topic applies any tick as
 * sx_advance(timestamp) and never as data, at the tick's place in the
 * partition, so replay sees the same ticks at the same place. One tick per
 * quiet period (the next waits for new input).
 *
 * Threads: a stream's thread owns its states; a query (HTTP API) takes the
 * partition's lock, which the thread holds while it applies one read.
 * Hot path: the read buffer, the decoder and the emit buffers are reused;
 * no allocation or syscall per record (one commit per read).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "engine.h"

#define READ_BYTES (4u << 20)    /* raw bytes read (one commit) per round and partition */
#define WAIT_MS 200              /* longest sleep without new input */
#define RETRY_MS 100             /* a refused commit is retried after this */
#define TICK_HEADER "spool.tick" /* marks tick records */
#define SNAP_MAGIC "SPSXSNP1"    /* snapshot file: magic, offset, length, crc, state */
#define SNAP_HDR (8 + 8 + 8 + 4)

/* ---- configuration ---- */

typedef struct stream_opts {
    char *name;
    char *from;
    char *key;
    char *when;
    char *emit_topic;
    char *emit_key;
    char *emit_value;
    int64_t allowed_lateness;
    char *late_topic;
    int64_t idle_close;
    char *snapshot_every;
    int64_t max_keys;
} stream_opts;

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

typedef struct stream_conf {
    spool_instance *ins; /* name "stream.<name>", ctx = stream_opts */
    sx_def *def;
    spool_template *emit_key, *emit_value;
    int64_t snap_records; /* 0 = by time */
    int64_t snap_ms;
} stream_conf;

typedef struct spool__streams_conf {
    stream_conf *items;
    size_t count;
} spool__streams_conf;

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
static int stream_compile(spool_instance *ins, const spool_cnode *entry, sx_def **out)
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
    } else if (stream_compile(ins, entry, &sc->def) < 0 && ins->config_errors == before) {
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

/* ---- running ---- */

typedef struct spart {
    int32_t partition;
    sx_def *def; /* one per partition: a query thread never shares it */
    sx_state *st;
    pthread_mutex_t lock; /* st, for queries */
    int64_t next;         /* next input offset to apply */
    int64_t replay_until; /* records below are applied without emitting */
    int64_t since_snap;   /* records applied since the last snapshot */
    int64_t snap_mono;    /* monotonic ms of the last snapshot (taken or loaded) */
    int64_t last_input;   /* monotonic ms of the last input record (not a tick) */
    int ticked;           /* a tick was appended since the last input */
    int seen;             /* any input record applied since start */
    char tick_key[64];    /* a key that hashes to this partition */
} spart;

typedef struct srun {
    spool_service *svc;
    struct spool__streams_rt *rt;
    stream_conf *sc;
    const stream_opts *o;
    spool_instance *ins;
    int from, emit, late;
    const char *from_name, *emit_name;
    spart *parts;
    int32_t nparts;
    pthread_t thread;
    int running;
    spool_buf raw;
    spool_rb_decoded dec;
    spool_batch *out; /* what one read emits */
    int emitting;
    int is_view; /* default value: the window's JSON (patterns: the match's fields) */
    spool_buf kbuf, vbuf;
    char dir[4096];
    /* metrics */
    spool_counter *m_in, *m_matches, *m_late, *m_keys, *m_bytes, *m_lag, *m_snap_age, *m_evict;
    char labels[300];
} srun;

typedef struct spool__streams_rt {
    srun *runs;
    size_t count;
    _Atomic int stop;
    _Atomic int ready; /* every stream set up: queries may look */
} spool__streams_rt;

static int render(const spool_template *t, const spool_record *m, const char *topic, spool_buf *b)
{
    b->len = 0;
    size_t need = spool_template_render(t, m, topic, NULL, (char *)b->data, b->cap);
    if (need > b->cap) {
        if (spool_buf_reserve(b, need) < 0) {
            return -ENOMEM;
        }
        need = spool_template_render(t, m, topic, NULL, (char *)b->data, b->cap);
    }
    b->len = need;
    return 0;
}

/* The engine's emit callback: one derived record into the read's batch. */
static int on_emit(void *arg, const spool_record *m)
{
    srun *r = arg;
    if (!r->emitting) {
        return 0;
    }
    spool_record rec = *m;
    int rc;
    if (r->sc->emit_key) {
        if ((rc = render(r->sc->emit_key, m, r->emit_name, &r->kbuf)) < 0) {
            return rc;
        }
        rec.key = r->kbuf.data;
        rec.key_len = (int32_t)r->kbuf.len;
    }
    r->vbuf.len = 0;
    if (r->sc->emit_value) {
        rc = render(r->sc->emit_value, m, r->emit_name, &r->vbuf);
    } else if (r->is_view) {
        rc = m->value_len > 0 ? spool_buf_append(&r->vbuf, m->value, (size_t)m->value_len) : 0;
    } else {
        rc = spool_json_append_fields(&r->vbuf, m, SPOOL_JSON_TYPED);
    }
    if (rc < 0) {
        return rc;
    }
    rec.value = r->vbuf.data ? r->vbuf.data : (const uint8_t *)"";
    rec.value_len = (int32_t)r->vbuf.len;
    rec.partition = -1;
    rec.offset = -1;
    if ((rc = spool_batch_append(r->out, &rec)) < 0) {
        return rc;
    }
    spool_counter_add(r->m_matches, 1);
    return 0;
}

static int is_tick(const spool_record *rec)
{
    return rec->header_count && spool_record_header(rec, TICK_HEADER) != NULL;
}

/* ---- snapshots ---- */

static void snap_path(const srun *r, int32_t p, const char *ext, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%" PRId32 ".snap%s", r->dir, p, ext);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes the state of partition p as of input offset `offset` (durable). */
static int snap_write(srun *r, spart *sp)
{
    spool_buf b = {0};
    char path[4200], tmp[4200];
    int rc, fd = -1;
    uint8_t hdr[SNAP_HDR];
    pthread_mutex_lock(&sp->lock);
    rc = sp->st ? sx_snapshot(sp->st, &b) : -ENOMEM;
    pthread_mutex_unlock(&sp->lock);
    if (rc < 0) {
        goto out;
    }
    memcpy(hdr, SNAP_MAGIC, 8);
    put64(hdr + 8, (uint64_t)sp->next);
    put64(hdr + 16, b.len);
    uint32_t crc = spool_crc32c(0, hdr, 24);
    crc = spool_crc32c(crc, b.data, b.len);
    for (int i = 0; i < 4; i++) {
        hdr[24 + i] = (uint8_t)(crc >> (8 * i));
    }
    snap_path(r, sp->partition, "", path, sizeof(path));
    snap_path(r, sp->partition, ".tmp", tmp, sizeof(tmp));
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = write_all(fd, hdr, sizeof(hdr))) < 0 || (rc = write_all(fd, b.data, b.len)) < 0) {
        goto out;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        rc = -errno;
        fd = -1;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto out;
    }
    int dfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    sp->since_snap = 0;
    sp->snap_mono = spool_monotonic_ms();
out:
    if (fd >= 0) {
        close(fd);
    }
    spool_buf_free(&b);
    if (rc < 0) {
        spool_log_warn(r->ins, "partition %" PRId32 ": cannot write snapshot %s: %s", sp->partition,
                       path, strerror(-rc));
    }
    return rc;
}

/* Loads partition p's snapshot if it reflects an offset <= durable: the
 * offset to replay from, or -1 (none usable: start from the beginning). */
static int64_t snap_load(srun *r, spart *sp, int64_t durable)
{
    char path[4200];
    snap_path(r, sp->partition, "", path, sizeof(path));
    FILE *f = fopen(path, "rbe");
    uint8_t hdr[SNAP_HDR];
    int64_t off = -1;
    uint8_t *data = NULL;
    if (!f) {
        return -1;
    }
    if (fread(hdr, 1, sizeof(hdr), f) != sizeof(hdr) || memcmp(hdr, SNAP_MAGIC, 8) != 0) {
        spool_log_warn(r->ins, "snapshot %s is not a snapshot: rebuilding from the log", path);
        goto out;
    }
    uint64_t len = get64(hdr + 16);
    int64_t at = (int64_t)get64(hdr + 8);
    uint32_t want = (uint32_t)hdr[24] | (uint32_t)hdr[25] << 8 | (uint32_t)hdr[26] << 16 |
                    (uint32_t)hdr[27] << 24;
    if (len > (1ull << 34) || !(data = malloc(len ? len : 1)) || fread(data, 1, len, f) != len) {
        spool_log_warn(r->ins, "snapshot %s is truncated: rebuilding from the log", path);
        goto out;
    }
    uint32_t crc = spool_crc32c(spool_crc32c(0, hdr, 24), data, len);
    if (crc != want) {
        spool_log_warn(r->ins, "snapshot %s fails its checksum: rebuilding from the log", path);
        goto out;
    }
    if (at > durable) {
        spool_log_warn(r->ins,
                       "snapshot %s is at offset %" PRId64 ", past the committed %" PRId64
                       " (the log was reset?): rebuilding from the log",
                       path, at, durable);
        goto out;
    }
    if (sx_restore(sp->st, data, len) < 0) {
        spool_log_warn(r->ins,
                       "snapshot %s does not match this stream's definition: rebuilding from "
                       "the log",
                       path);
        sx_state_free(sp->st);
        sp->st = sx_state_new(sp->def);
        goto out;
    }
    off = at;
out:
    free(data);
    fclose(f);
    return off;
}

/* ---- the loop ---- */

static void position_name(const srun *r, int32_t p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%" PRId32, r->from_name, p);
}

static int stopping(const srun *r)
{
    return atomic_load(&r->rt->stop);
}

/* Commits the read's batch (records + new position) atomically; retries a
 * refusal until it works or the stream stops. 0 or -ESHUTDOWN. */
static int commit_read(srun *r, spart *sp, int64_t next)
{
    char src[600];
    uint8_t pos[8];
    position_name(r, sp->partition, src, sizeof(src));
    put64(pos, (uint64_t)next);
    for (;;) {
        spool_batch *b = spool_batch_create(r->ins);
        int rc = b ? 0 : -ENOMEM;
        size_t n = spool_batch_count(r->out);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            spool_record rec;
            spool_batch_get(r->out, i, &rec);
            rc = spool_batch_append(b, &rec);
            const char *t = spool_batch_topic(r->out, i);
            if (rc == 0 && t && strcmp(t, r->emit_name) != 0) {
                rc = spool_batch_set_topic(b, i, t);
            }
        }
        if (rc == 0) {
            rc = spool_batch_set_position(b, src, pos, sizeof(pos));
        }
        if (rc == 0) {
            b->topics_changed = 1; /* the atomic lane, even without positions */
            rc = spool__writer_append_direct(r->svc, b);
            b = NULL;
        }
        if (b) {
            spool_batch_destroy(b);
        }
        if (rc == 0) {
            spool_plog_cursor_set(r->svc->log, r->ins->name, r->from, sp->partition, next);
            spool_plog_cursor_write(r->svc->log, r->ins->name);
            return 0;
        }
        if (rc == -ESHUTDOWN || stopping(r)) {
            return -ESHUTDOWN;
        }
        struct timespec ts = {0, RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int part_load(srun *r, spart *sp);

/* Applies one read of partition sp. 1 if records were read, 0 if none, <0. */
static int run_partition(srun *r, spart *sp)
{
    if (!sp->st) {
        pthread_mutex_lock(&sp->lock);
        int lrc = part_load(r, sp);
        pthread_mutex_unlock(&sp->lock);
        if (lrc < 0) {
            return lrc;
        }
    }
    int64_t next = sp->next;
    r->raw.len = 0;
    spool_rb_decoded_reset(&r->dec);
    long n =
        spool_plog_read(r->svc->log, r->from, sp->partition, sp->next, READ_BYTES, &r->raw, &next);
    if (n == -EBADMSG) {
        int64_t skip = next;
        if (spool_plog_skip_corrupt(r->svc->log, r->from, sp->partition, sp->next, &skip) == 0 &&
            skip > sp->next) {
            spool_log_error(r->ins,
                            "topic %s partition %" PRId32 ": corrupt batch at offset %" PRId64
                            ": skipped to %" PRId64,
                            r->from_name, sp->partition, sp->next, skip);
            next = skip;
            n = 0;
        } else {
            return -EBADMSG;
        }
    } else if (n < 0) {
        return (int)n;
    }
    size_t off = 0;
    while (off < r->raw.len) {
        spool_rb_info bi;
        long sz = spool_rb_parse_header(r->raw.data + off, r->raw.len - off, 0, &bi);
        if (sz <= 0) {
            break;
        }
        int rc = spool_rb_decode(r->raw.data + off, (size_t)sz, sp->partition, sp->next, &r->dec);
        if (rc < 0) {
            spool_log_error(r->ins, "topic %s partition %" PRId32 ": cannot decode offset %" PRId64,
                            r->from_name, sp->partition, bi.base_offset);
            return rc;
        }
        off += (size_t)sz;
    }
    if (next == sp->next) {
        return 0;
    }
    spool_batch *out = spool_batch_create(r->ins);
    if (!out) {
        return -ENOMEM;
    }
    out->topic = r->emit;
    r->out = out;
    int64_t late = 0, applied = 0, now = spool_monotonic_ms();
    int rc = 0;
    pthread_mutex_lock(&sp->lock);
    for (size_t i = 0; i < r->dec.count && rc >= 0; i++) {
        const spool_record *rec = &r->dec.records[i];
        r->emitting = rec->offset >= sp->replay_until;
        if (is_tick(rec)) {
            sp->ticked = 1; /* the partition's newest record is a tick: no other */
            rc = sx_advance(sp->st, rec->timestamp, on_emit, r);
            continue;
        }
        sp->last_input = now;
        sp->ticked = 0;
        sp->seen = 1;
        applied++;
        rc = sx_process(sp->st, rec, r->from_name, on_emit, r);
        if (rc == SX_LATE) {
            late++;
            if (r->late >= 0 && r->emitting) {
                spool_record lr = *rec;
                size_t k = spool_batch_count(out);
                rc = spool_batch_append(out, &lr);
                if (rc == 0) {
                    rc = spool_batch_set_topic(out, k, r->o->late_topic);
                }
            }
        }
    }
    pthread_mutex_unlock(&sp->lock);
    r->emitting = 0;
    if (rc < 0) {
        spool_log_error(r->ins,
                        "partition %" PRId32 ": engine failed at offset %" PRId64
                        ": %s; rebuilding the state from the committed position",
                        sp->partition, sp->next, strerror(-rc));
        spool_batch_destroy(out);
        r->out = NULL;
        pthread_mutex_lock(&sp->lock);
        if (part_load(r, sp) < 0) {
            sp->st = NULL;
        }
        pthread_mutex_unlock(&sp->lock);
        return rc;
    }
    spool_counter_add(r->m_in, (uint64_t)applied);
    spool_counter_add(r->m_late, (uint64_t)late);
    sp->since_snap += applied;
    if (next > sp->replay_until || spool_batch_count(out) > 0) {
        rc = commit_read(r, sp, next);
    } else {
        rc = 0; /* replayed input: already committed */
    }
    spool_batch_destroy(out);
    r->out = NULL;
    if (rc < 0) {
        return rc;
    }
    sp->next = next;
    if ((r->sc->snap_records && sp->since_snap >= r->sc->snap_records) ||
        (r->sc->snap_ms && sp->since_snap && now - sp->snap_mono >= r->sc->snap_ms)) {
        if (sp->next >= sp->replay_until) {
            snap_write(r, sp);
        }
    }
    return 1;
}

/* Appends a tick to the input partition (through the log, so replay sees it). */
static void maybe_tick(srun *r, spart *sp, int64_t now)
{
    if (r->o->idle_close <= 0 || sp->ticked || !sp->seen ||
        now - sp->last_input < r->o->idle_close) {
        return;
    }
    spool_batch *b = spool_batch_create(r->ins);
    if (!b) {
        return;
    }
    b->topic = r->from;
    spool_header h = {TICK_HEADER, (uint32_t)strlen(TICK_HEADER), (const uint8_t *)r->o->name,
                      (int32_t)strlen(r->o->name)};
    spool_record rec = {
        .key = (const uint8_t *)sp->tick_key,
        .key_len = (int32_t)strlen(sp->tick_key),
        .value = (const uint8_t *)"",
        .value_len = 0,
        .headers = &h,
        .header_count = 1,
        .timestamp = spool_now_ms(),
        .partition = -1,
        .offset = -1,
    };
    if (spool_batch_append(b, &rec) < 0) {
        spool_batch_destroy(b);
        return;
    }
    if (spool__writer_append_direct(r->svc, b) == 0) {
        sp->ticked = 1;
    }
}

static void update_gauges(srun *r)
{
    int64_t keys = 0, bytes = 0, lag = 0, evict = 0, oldest = -1;
    int64_t now = spool_monotonic_ms();
    for (int32_t p = 0; p < r->nparts; p++) {
        spart *sp = &r->parts[p];
        sx_stats_t s;
        memset(&s, 0, sizeof(s));
        pthread_mutex_lock(&sp->lock);
        if (sp->st) {
            sx_stats(sp->st, &s);
        }
        pthread_mutex_unlock(&sp->lock);
        keys += (int64_t)s.keys;
        bytes += (int64_t)s.bytes;
        evict += (int64_t)s.evictions;
        spool_partition_info pi;
        if (spool_plog_partition_info(r->svc->log, r->from, p, &pi) == 0 &&
            pi.end_offset > sp->next) {
            lag += pi.end_offset - sp->next;
        }
        if (sp->snap_mono && (oldest < 0 || sp->snap_mono < oldest)) {
            oldest = sp->snap_mono;
        }
    }
    spool_gauge_set(r->m_keys, keys);
    spool_gauge_set(r->m_bytes, bytes);
    spool_gauge_set(r->m_lag, lag);
    spool_gauge_set(r->m_evict, evict);
    spool_gauge_set(r->m_snap_age, oldest < 0 ? -1 : (now - oldest) / 1000);
}

static void *stream_main(void *arg)
{
    srun *r = arg;
    int64_t last_gauges = 0;
    while (!stopping(r)) {
        uint64_t gen = spool_plog_generation(r->svc->log, r->from);
        int any = 0, failed = 0;
        for (int32_t p = 0; p < r->nparts && !stopping(r); p++) {
            int rc = run_partition(r, &r->parts[p]);
            if (rc > 0) {
                any = 1;
            } else if (rc < 0) {
                failed = 1;
            } else {
                /* Quiet partition: its tick does not wait for busy ones. */
                maybe_tick(r, &r->parts[p], spool_monotonic_ms());
            }
        }
        int64_t now = spool_monotonic_ms();
        if (now - last_gauges >= 1000 || !any) {
            update_gauges(r);
            last_gauges = now;
        }
        if (any) {
            continue;
        }
        spool_plog_wait_since(r->svc->log, r->from, gen, failed ? 1000 : WAIT_MS);
    }
    update_gauges(r);
    return NULL;
}

/* Sets the partition's state up: snapshot, durable position, replay bound. */
static int part_init(srun *r, spart *sp, int32_t p)
{
    sp->partition = p;
    pthread_mutex_init(&sp->lock, NULL);
    int rc = stream_compile(r->ins, r->ins->node, &sp->def);
    if (rc < 0) {
        return rc;
    }
    for (unsigned k = 0; k < 1000000; k++) {
        snprintf(sp->tick_key, sizeof(sp->tick_key), "spool.tick.%u", k);
        if (spool_partition_for_key(sp->tick_key, strlen(sp->tick_key), r->nparts) == p) {
            break;
        }
    }
    return part_load(r, sp);
}

/* A fresh state for sp: its snapshot, then replay to the durable position.
 * Also after an engine failure part-way through a run (the state may hold
 * records whose output was not committed). */
static int part_load(srun *r, spart *sp)
{
    int32_t p = sp->partition;
    sx_state_free(sp->st);
    if (!(sp->st = sx_state_new(sp->def))) {
        return -ENOMEM;
    }
    char src[700], full[800];
    uint8_t pos[8];
    size_t len = 0;
    position_name(r, p, src, sizeof(src));
    snprintf(full, sizeof(full), "%s/%s", r->ins->name, src);
    spool_partition_info pi = {0};
    spool_plog_partition_info(r->svc->log, r->from, p, &pi);
    int64_t durable = -1;
    if (spool_plog_position_get(r->svc->log, full, pos, sizeof(pos), &len) == 0 && len == 8) {
        durable = (int64_t)get64(pos);
    }
    int64_t from = durable >= 0 ? snap_load(r, sp, durable) : -1;
    if (from < 0) {
        from = pi.begin_offset;
        if (durable > 0 && pi.begin_offset > 0) {
            spool_log_warn(r->ins,
                           "partition %" PRId32
                           ": no usable snapshot and the log begins at %" PRId64
                           ": the state is rebuilt from there",
                           p, pi.begin_offset);
        }
    }
    sp->next = from;
    sp->replay_until = durable >= 0 ? durable : from;
    sp->snap_mono = spool_monotonic_ms();
    sp->last_input = sp->snap_mono;
    spool_log_info(r->ins,
                   "partition %" PRId32 ": state from offset %" PRId64 ", replaying to %" PRId64, p,
                   from, sp->replay_until);
    return 0;
}

static spool_counter *reg(srun *r, const char *name, const char *help, int gauge)
{
    return spool__metric_register(name, help, r->labels, gauge);
}

static int run_start(spool_service *svc, stream_conf *sc, srun *r)
{
    r->svc = svc;
    r->sc = sc;
    r->o = sc->ins->ctx;
    r->ins = sc->ins;
    r->ins->svc = svc;
    r->from = spool_plog_topic_index(svc->log, r->o->from);
    r->emit = spool_plog_topic_index(svc->log, r->o->emit_topic);
    r->late = r->o->late_topic ? spool_plog_topic_index(svc->log, r->o->late_topic) : -1;
    if (r->from < 0 || r->emit < 0) {
        return -ENOENT;
    }
    r->ins->topic = r->emit;
    r->from_name = r->o->from;
    r->emit_name = r->o->emit_topic;
    r->nparts = spool_plog_topic_conf(svc->log, r->from)->partitions;
    snprintf(r->labels, sizeof(r->labels), "stream=\"%s\"", r->o->name);
    snprintf(r->dir, sizeof(r->dir), "%s/streams/%s", svc->conf->data_dir, r->o->name);
    char top[4200];
    snprintf(top, sizeof(top), "%s/streams", svc->conf->data_dir);
    mkdir(top, 0755);
    if (mkdir(r->dir, 0755) < 0 && errno != EEXIST) {
        spool_log_error(r->ins, "cannot create %s: %s", r->dir, strerror(errno));
        return -errno;
    }
    int rc = spool_plog_cursor_register(svc->log, r->ins->name);
    if (rc < 0) {
        return rc;
    }
    if (!(r->parts = calloc((size_t)r->nparts, sizeof(*r->parts)))) {
        return -ENOMEM;
    }
    for (int32_t p = 0; p < r->nparts; p++) {
        if ((rc = part_init(r, &r->parts[p], p)) < 0) {
            return rc;
        }
        spool_plog_cursor_set(svc->log, r->ins->name, r->from, p, r->parts[p].replay_until);
    }
    spool_plog_cursor_write(svc->log, r->ins->name);
    r->is_view = sx_def_is_view(r->parts[0].def);
    /* Registered once the lag is known, and set at once: a reader never
     * sees a lag of 0 before the stream caught up. */
    r->m_in = reg(r, "spool_stream_records_in_total", "Input records applied to the stream", 0);
    r->m_matches = reg(r, "spool_stream_matches_total", "Derived records emitted", 0);
    r->m_late = reg(r, "spool_stream_late_records_total", "Records later than allowed", 0);
    r->m_keys = reg(r, "spool_stream_keys", "Keys held in the stream's state", 1);
    r->m_bytes = reg(r, "spool_stream_state_bytes", "Bytes of the stream's state", 1);
    r->m_snap_age = reg(r, "spool_stream_snapshot_age_seconds", "Age of the oldest snapshot", 1);
    r->m_evict = reg(r, "spool_stream_evicted_keys", "Keys evicted at max_keys", 1);
    int64_t lag0 = 0;
    for (int32_t p = 0; p < r->nparts; p++) {
        spool_partition_info pi;
        if (spool_plog_partition_info(svc->log, r->from, p, &pi) == 0 &&
            pi.end_offset > r->parts[p].next) {
            lag0 += pi.end_offset - r->parts[p].next;
        }
    }
    r->m_lag = reg(r, "spool_stream_lag_records", "Input records not yet applied", 1);
    spool_gauge_set(r->m_lag, lag0);
    update_gauges(r);
    if (pthread_create(&r->thread, NULL, stream_main, r) != 0) {
        return -EAGAIN;
    }
    r->running = 1;
    return 0;
}

/* Guards svc->streams against a query while the streams stop. */
static pthread_mutex_t rt_lock = PTHREAD_MUTEX_INITIALIZER;

int spool__streams_start(spool_service *svc)
{
    spool__streams_conf *sc = svc->conf->streams;
    if (!sc || sc->count == 0) {
        return 0;
    }
    spool__streams_rt *rt = calloc(1, sizeof(*rt));
    if (!rt || !(rt->runs = calloc(sc->count, sizeof(*rt->runs)))) {
        free(rt);
        return -ENOMEM;
    }
    pthread_mutex_lock(&rt_lock);
    svc->streams = rt;
    pthread_mutex_unlock(&rt_lock);
    rt->count = sc->count;
    for (size_t i = 0; i < sc->count; i++) {
        rt->runs[i].rt = rt;
        int rc = run_start(svc, &sc->items[i], &rt->runs[i]);
        if (rc < 0) {
            spool_log_error(sc->items[i].ins, "cannot start: %s", strerror(-rc));
            return rc;
        }
    }
    atomic_store(&rt->ready, 1);
    return 0;
}

void spool__streams_stop(spool_service *svc)
{
    spool__streams_rt *rt = svc->streams;
    if (!rt) {
        return;
    }
    atomic_store(&rt->stop, 1);
    spool_plog_wake(svc->log);
    pthread_mutex_lock(&rt_lock);
    svc->streams = NULL; /* no new query; one running finished */
    pthread_mutex_unlock(&rt_lock);
    for (size_t i = 0; i < rt->count; i++) {
        srun *r = &rt->runs[i];
        if (r->running) {
            pthread_join(r->thread, NULL);
        }
        for (int32_t p = 0; r->parts && p < r->nparts; p++) {
            sx_state_free(r->parts[p].st);
            sx_def_free(r->parts[p].def);
            pthread_mutex_destroy(&r->parts[p].lock);
        }
        free(r->parts);
        spool_buf_free(&r->raw);
        spool_buf_free(&r->kbuf);
        spool_buf_free(&r->vbuf);
        spool_rb_decoded_free(&r->dec);
        if (r->labels[0]) {
            spool__metric_unregister_labels(r->labels);
        }
        if (r->ins) {
            r->ins->svc = NULL;
        }
    }
    free(rt->runs);
    free(rt);
}

static int query_locked(spool_service *svc, const char *name, const char *key, int64_t from,
                        int64_t to, spool_buf *out);

int spool__streams_query(spool_service *svc, const char *name, const char *key, int64_t from,
                         int64_t to, spool_buf *out)
{
    pthread_mutex_lock(&rt_lock);
    int rc = query_locked(svc, name, key, from, to, out);
    pthread_mutex_unlock(&rt_lock);
    return rc;
}

static int query_locked(spool_service *svc, const char *name, const char *key, int64_t from,
                        int64_t to, spool_buf *out)
{
    spool__streams_rt *rt = svc ? svc->streams : NULL;
    srun *r = NULL;
    if (rt && !atomic_load(&rt->ready)) {
        return -EAGAIN;
    }
    for (size_t i = 0; rt && i < rt->count; i++) {
        if (rt->runs[i].o && strcmp(rt->runs[i].o->name, name) == 0) {
            r = &rt->runs[i];
        }
    }
    if (!r || !r->parts) {
        return -ENOENT;
    }
    spool_buf one = {0};
    int rc = spool_buf_append(out, "[", 1), first = 1;
    for (int32_t p = 0; rc == 0 && p < r->nparts; p++) {
        spart *sp = &r->parts[p];
        one.len = 0;
        pthread_mutex_lock(&sp->lock);
        rc = sp->st ? sx_query(sp->st, key, from, to, &one) : -EAGAIN;
        pthread_mutex_unlock(&sp->lock);
        if (rc < 0) {
            break;
        }
        /* Splice the partition's array into one. */
        size_t a = 0, b = one.len;
        while (a < b && one.data[a] != '[') {
            a++;
        }
        while (b > a && one.data[b - 1] != ']') {
            b--;
        }
        if (b - a < 2) {
            continue;
        }
        a++;
        b--;
        size_t s = a;
        while (s < b && (one.data[s] == ' ' || one.data[s] == '\n')) {
            s++;
        }
        if (s == b) {
            continue;
        }
        if (!first) {
            rc = spool_buf_append(out, ",", 1);
        }
        first = 0;
        rc = rc ? rc : spool_buf_append(out, one.data + a, b - a);
    }
    spool_buf_free(&one);
    return rc ? rc : spool_buf_append(out, "]\n", 2);
}
