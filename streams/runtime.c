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

#include "runtime_int.h"

#define READ_BYTES (4u << 20) /* raw bytes read (one commit) per round and partition */
#define WAIT_MS 200           /* longest sleep without new input */
#define RETRY_MS 100          /* a refused commit is retried after this */
#define SNAP_MAGIC "SPSXSNP1" /* snapshot file: magic, offset, length, crc, state */
#define SNAP_HDR (8 + 8 + 8 + 4)

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
    return rec->header_count && spool_record_header(rec, SPOOL_TICK_HEADER) != NULL;
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
    spool_header h = {SPOOL_TICK_HEADER, (uint32_t)strlen(SPOOL_TICK_HEADER),
                      (const uint8_t *)r->o->name, (int32_t)strlen(r->o->name)};
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
    int rc = spool__stream_compile(r->ins, r->ins->node, &sp->def);
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
