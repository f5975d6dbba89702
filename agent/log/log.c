/*
 * log.c: opening and closing the partition log, topics, append and group
 * commit, publication and waiting, source positions.
 *
 * Invariants (log_int.h has the locking): offsets in a partition strictly
 * increase; a segment file only ever holds whole batches up to seg->size
 * (an append that fails is truncated away, and retried truncation blocks
 * further appends until it works); the checkpoint written by a commit
 * lists every partition's end and every staged source position, and
 * readers see a partition's data only once a commit published it, which
 * for fsync: always/interval topics means after fdatasync of the data and
 * of the checkpoint. It does not decide when to commit (the writer stage
 * does) and does not retry failed I/O itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log_int.h"

#define DEFAULT_SEGMENT_BYTES (64LL << 20)
#define DEFAULT_INDEX_INTERVAL 4096

static void conf_defaults(spool_topic_conf *c)
{
    if (c->partitions < 1) {
        c->partitions = 1;
    }
    if (c->segment_bytes <= 0) {
        c->segment_bytes = DEFAULT_SEGMENT_BYTES;
    }
    if (c->index_interval_bytes <= 0) {
        c->index_interval_bytes = DEFAULT_INDEX_INTERVAL;
    }
    if (c->fsync_mode == SPOOL_FSYNC_INTERVAL && c->fsync_interval_ms <= 0) {
        c->fsync_interval_ms = 1000;
    }
}

static int add_topic(spool_plog *log, const spool_topic_conf *c, int discovered)
{
    spool__topic *n = realloc(log->topics, (log->ntopics + 1) * sizeof(*n));
    if (n == NULL) {
        return -ENOMEM;
    }
    log->topics = n;
    spool__topic *t = &n[log->ntopics];
    memset(t, 0, sizeof(*t));
    t->conf = *c;
    t->conf.name = strdup(c->name);
    if (t->conf.name == NULL) {
        return -ENOMEM;
    }
    conf_defaults(&t->conf);
    t->discovered = discovered;
    log->ntopics++;
    return 0;
}

/* Topics under data_dir/topics that the config does not name. */
static int discover_topics(spool_plog *log)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/topics", log->data_dir);
    DIR *d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || spool_plog_topic_index(log, e->d_name) >= 0) {
            continue;
        }
        char tdir[4096 + 256];
        snprintf(tdir, sizeof(tdir), "%s/%s", path, e->d_name);
        DIR *pd = opendir(tdir);
        if (pd == NULL) {
            continue;
        }
        int32_t parts = 0;
        struct dirent *pe;
        while ((pe = readdir(pd)) != NULL) {
            if (pe->d_name[0] != '\0' && strspn(pe->d_name, "0123456789") == strlen(pe->d_name)) {
                long v = strtol(pe->d_name, NULL, 10);
                if (v >= 0 && v < 100000 && v + 1 > parts) {
                    parts = (int32_t)v + 1;
                }
            }
        }
        closedir(pd);
        if (parts == 0) {
            continue;
        }
        spool_topic_conf c = {.name = e->d_name, .partitions = parts};
        if ((rc = add_topic(log, &c, 1)) < 0) {
            break;
        }
    }
    closedir(d);
    return rc;
}

static int take_lock(spool_plog *log)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/lock", log->data_dir);
    log->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (log->lock_fd < 0) {
        int rc = -errno;
        snprintf(log->last_error, sizeof(log->last_error), "cannot open %s: %s", path,
                 strerror(-rc));
        return rc;
    }
    if (flock(log->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        snprintf(log->last_error, sizeof(log->last_error),
                 "%s is locked: another spool is using data_dir %s", path, log->data_dir);
        return rc;
    }
    return 0;
}

static int open_partitions(spool_plog *log, const spool__ckpt *ck, int have_ckpt)
{
    for (size_t t = 0; t < log->ntopics; t++) {
        spool__topic *tp = &log->topics[t];
        tp->parts = calloc((size_t)tp->conf.partitions, sizeof(*tp->parts));
        if (tp->parts == NULL) {
            return -ENOMEM;
        }
        for (int32_t i = 0; i < tp->conf.partitions; i++) {
            spool__part *p = &tp->parts[i];
            char dir[4096];
            p->log = log;
            p->topic = (int)t;
            p->partition = i;
            pthread_rwlock_init(&p->lock, NULL);
            snprintf(dir, sizeof(dir), "%s/topics/%s/%d", log->data_dir, tp->conf.name, i);
            p->dir = strdup(dir);
            if (p->dir == NULL) {
                return -ENOMEM;
            }
            int rc;
            if (!log->read_only && (rc = spool__mkdirs(dir)) < 0) {
                snprintf(log->last_error, sizeof(log->last_error), "cannot create %s: %s", dir,
                         strerror(-rc));
                return rc;
            }
            int found = 0;
            int64_t e = have_ckpt ? spool__ckpt_end(ck, tp->conf.name, i, &found) : 0;
            /* A partition the checkpoint does not list never committed anything;
             * a reader shows what it holds (data the writer does not manage). */
            int use = have_ckpt && (found || !log->read_only);
            if ((rc = spool__part_recover(log, p, use, found ? e : 0)) < 0) {
                snprintf(log->last_error, sizeof(log->last_error), "cannot recover %s: %s", dir,
                         strerror(-rc));
                return rc;
            }
        }
    }
    return 0;
}

/* What a writable open refuses before it changes anything (preflight.c):
 * starting without positions while the log holds data, and partitions
 * beyond a topic's count that hold undelivered records. */
static int refusals(spool_plog *log, const spool_plog_options *opt, const spool__ckpt *ck,
                    int have_ckpt)
{
    int rc;
    if (!have_ckpt) {
        char *msg = NULL;
        if ((rc = spool__positions_lost(log->data_dir, log->io, &msg)) < 0) {
            return rc;
        }
        if (rc > 0 && !(spool_plog_overrides() & SPOOL_PLOG_RESET_POSITIONS)) {
            /* Refused: the caller reports it (the one line). */
            snprintf(log->last_error, sizeof(log->last_error), "refusing to start: %s", msg);
            free(msg);
            return -ESTALE;
        }
        if (rc > 0) {
            spool_log_warn(NULL,
                           "log: no valid checkpoint in %s/state and --reset-positions "
                           "given: source positions start afresh, every tailed file is read "
                           "again from its beginning",
                           log->data_dir);
        } else if (ck->damaged) {
            spool_log_warn(NULL,
                           "log: no valid checkpoint in %s/state (both slots are damaged) and "
                           "the log holds no data: source positions start afresh",
                           log->data_dir);
        }
        free(msg);
    }
    return spool__shrink_apply(log, opt->topics, opt->topic_count, opt->consumers,
                               opt->consumer_count);
}

int spool_plog_open(const spool_plog_options *opt, spool_plog **out)
{
    int rc = 0;
    spool__ckpt ck = {0};
    *out = NULL;
    if (opt == NULL || opt->data_dir == NULL) {
        return -EINVAL;
    }
    if (opt->error != NULL && opt->error_cap > 0) {
        opt->error[0] = '\0';
    }
    spool_plog *log = calloc(1, sizeof(*log));
    if (log == NULL) {
        return -ENOMEM;
    }
    log->lock_fd = -1;
    log->ckpt_fd[0] = log->ckpt_fd[1] = -1;
    log->io = opt->io ? opt->io : &spool_plog_io_posix;
    log->read_only = opt->read_only;
    pthread_mutex_init(&log->pub_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->pub_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&log->cur_mu, NULL);
    pthread_mutex_init(&log->flush_mu, NULL);
    log->data_dir = strdup(opt->data_dir);
    if (log->data_dir == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    if (!log->read_only) {
        const char *subs[] = {"", "/topics", "/state", "/cursors"};
        for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
            char path[4096];
            snprintf(path, sizeof(path), "%s%s", log->data_dir, subs[i]);
            if ((rc = spool__mkdirs(path)) < 0) {
                snprintf(log->last_error, sizeof(log->last_error), "cannot create %s: %s", path,
                         strerror(-rc));
                goto fail;
            }
        }
        if ((rc = take_lock(log)) < 0) {
            goto fail;
        }
    } else if (access(log->data_dir, R_OK | X_OK) < 0) {
        rc = -errno;
        goto fail;
    }
    for (size_t i = 0; i < opt->topic_count; i++) {
        if (spool_plog_topic_index(log, opt->topics[i].name) >= 0) {
            continue;
        }
        if ((rc = add_topic(log, &opt->topics[i], 0)) < 0) {
            goto fail;
        }
    }
    if ((rc = discover_topics(log)) < 0) {
        goto fail;
    }
    int have = spool__ckpt_load(log, &ck);
    if (have < 0) {
        rc = have;
        goto fail;
    }
    log->ckpt_seq = have ? ck.seq : 0;
    if (!log->read_only && (rc = refusals(log, opt, &ck, have)) < 0) {
        goto fail;
    }
    if ((rc = open_partitions(log, &ck, have)) < 0) {
        goto fail;
    }
    if (have) {
        for (size_t i = 0; i < ck.positions.count; i++) {
            const spool__pos *ps = &ck.positions.items[i];
            if (spool__pos_table_set(&log->pos_durable, ps->source, ps->data, ps->len) < 0 ||
                spool__pos_table_set(&log->pos_staged, ps->source, ps->data, ps->len) < 0) {
                rc = -ENOMEM;
                goto fail;
            }
        }
    }
    /* Recovery may have cut or rebased partitions: record that at once, so
     * a fresh log has a commit point before its first append. */
    if (!log->read_only && (rc = spool__ckpt_write(log, 1)) < 0) {
        goto fail;
    }
    spool__ckpt_free(&ck);
    *out = log;
    return 0;
fail:
    /* The caller reports the failure, with what could not be done. */
    if (opt->error != NULL && opt->error_cap > 0) {
        snprintf(opt->error, opt->error_cap, "%s", log->last_error);
    } else if (log->last_error[0]) {
        spool_log_error(NULL, "log: %s", log->last_error);
    }
    spool__ckpt_free(&ck);
    spool_plog_close(log);
    return rc;
}

void spool_plog_close(spool_plog *log)
{
    if (log == NULL) {
        return;
    }
    for (size_t t = 0; t < log->ntopics; t++) {
        spool__topic *tp = &log->topics[t];
        for (int32_t i = 0; tp->parts != NULL && i < tp->conf.partitions; i++) {
            spool__part *p = &tp->parts[i];
            for (size_t k = 0; k < p->nsegs; k++) {
                spool__seg_free(log, p->segs[k]);
            }
            free(p->segs);
            free(p->bad);
            free(p->dir);
            if (p->log != NULL) {
                pthread_rwlock_destroy(&p->lock);
            }
        }
        free(tp->parts);
        free(tp->conf.name);
    }
    free(log->topics);
    spool__cursors_free(log);
    spool__pos_table_free(&log->pos_staged);
    spool__pos_table_free(&log->pos_durable);
    spool_buf_free(&log->enc);
    spool_buf_free(&log->ckpt_buf);
    for (int i = 0; i < 2; i++) {
        if (log->ckpt_fd[i] >= 0) {
            log->io->close(log->ckpt_fd[i]);
        }
    }
    if (log->lock_fd >= 0) {
        close(log->lock_fd);
    }
    pthread_mutex_destroy(&log->pub_mu);
    pthread_cond_destroy(&log->pub_cv);
    pthread_mutex_destroy(&log->cur_mu);
    pthread_mutex_destroy(&log->flush_mu);
    free(log->data_dir);
    free(log);
}

const char *spool_plog_commit_error(const spool_plog *log)
{
    return log->last_error;
}

int spool_plog_topic_index(const spool_plog *log, const char *name)
{
    for (size_t i = 0; log != NULL && name != NULL && i < log->ntopics; i++) {
        if (strcmp(log->topics[i].conf.name, name) == 0) {
            return (int)i;
        }
    }
    return -ENOENT;
}

size_t spool_plog_topic_count(const spool_plog *log)
{
    return log ? log->ntopics : 0;
}

const spool_topic_conf *spool_plog_topic_conf(const spool_plog *log, int topic)
{
    if (log == NULL || topic < 0 || (size_t)topic >= log->ntopics) {
        return NULL;
    }
    return &log->topics[topic].conf;
}

void spool_plog_recovery_get(const spool_plog *log, spool_plog_recovery_stats *out)
{
    *out = log->stats;
}

/* ---- append ---- */

/* Puts the active segment back to its last good size after a failed write. */
static int repair_tail(spool_plog *log, spool__part *p)
{
    spool__seg *s = p->segs[p->nsegs - 1];
    if (log->io->ftruncate(s->fd, s->size) < 0) {
        p->needs_truncate = 1;
        return -errno;
    }
    p->needs_truncate = 0;
    return 0;
}

int spool_plog_append(spool_plog *log, int topic, int32_t partition, const spool_record *recs,
                      size_t n, int64_t *base_offset)
{
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL || recs == NULL || n == 0 || n > INT32_MAX) {
        return -EINVAL;
    }
    if (log->read_only) {
        return -EROFS;
    }
    const spool_topic_conf *c = &log->topics[topic].conf;
    int rc;
    if (p->needs_truncate && (rc = repair_tail(log, p)) < 0) {
        return rc == -ENOSPC ? rc : -EIO;
    }
    log->enc.len = 0;
    int64_t now = spool_now_ms();
    if ((rc = spool_rb_encode(&log->enc, p->end, recs, n, now, c->compression, 3)) < 0) {
        return rc;
    }
    int64_t len = (int64_t)log->enc.len;
    spool__seg *s = p->segs[p->nsegs - 1];
    int64_t size = atomic_load(&s->size);
    if (size > 0 && (size + len > c->segment_bytes ||
                     (c->segment_ms > 0 && now - s->created_ms >= c->segment_ms) ||
                     p->end + (int64_t)n - s->base > INT32_MAX)) {
        if ((rc = spool__part_roll(log, p)) < 0) {
            return rc;
        }
    }
    /* An empty partition takes any batch, so a batch larger than max_bytes
     * cannot block the writer for ever. */
    if (c->max_bytes > 0 && p->bytes > 0 && p->bytes + len > c->max_bytes &&
        (rc = spool__retention_make_room(log, p, len)) < 0) {
        return rc;
    }
    s = p->segs[p->nsegs - 1];
    size = atomic_load(&s->size);
    long w = log->io->pwrite(s->fd, log->enc.data, (size_t)len, size);
    if (w != len) {
        int err = w < 0 ? errno : ENOSPC; /* a short write means the disk is full */
        if (err != ENOSPC && err != EDQUOT) {
            err = EIO;
        }
        repair_tail(log, p);
        return -err;
    }
    if (spool__seg_index_due(log, p, s, size)) {
        pthread_rwlock_wrlock(&p->lock);
        rc = spool__seg_index_add(log, s, p->end, size);
        pthread_rwlock_unlock(&p->lock);
        if (rc < 0) {
            return rc; /* written but not counted: truncated by the next append */
        }
    }
    const uint8_t *h = log->enc.data;
    int64_t max_ts = 0;
    for (int i = 35; i < 43; i++) {
        max_ts = (max_ts << 8) | h[i];
    }
    if (max_ts > atomic_load(&s->max_ts)) {
        atomic_store(&s->max_ts, max_ts);
    }
    atomic_store(&s->size, size + len);
    *base_offset = p->end;
    p->end += (int64_t)n;
    s->end = p->end;
    p->bytes += len;
    p->unsynced = 1;
    p->unpublished = 1;
    log->uncommitted += (uint64_t)len;
    log->ckpt_dirty = 1;
    return 0;
}

uint64_t spool_plog_uncommitted_bytes(const spool_plog *log)
{
    return log->uncommitted;
}

/* ---- commit ---- */

static int sync_partition(spool_plog *log, spool__part *p)
{
    for (size_t k = p->nsegs; k-- > 0;) {
        spool__seg *s = p->segs[k];
        int64_t size = atomic_load(&s->size);
        if (s->synced_size == size) {
            if (k + 1 < p->nsegs) {
                break; /* older segments were synced before */
            }
            continue;
        }
        if (log->io->fdatasync(s->fd) < 0) {
            int rc = -errno;
            snprintf(log->last_error, sizeof(log->last_error),
                     "%s/%d: fdatasync of segment %020" PRId64 " failed: %s",
                     log->topics[p->topic].conf.name, p->partition, s->base, strerror(-rc));
            return rc;
        }
        s->synced_size = size;
    }
    if (p->dir_dirty) {
        int rc = spool__fsync_dir(p->dir);
        if (rc < 0) {
            snprintf(log->last_error, sizeof(log->last_error),
                     "%s/%d: fsync of the partition directory failed: %s",
                     log->topics[p->topic].conf.name, p->partition, strerror(-rc));
            return rc;
        }
        p->dir_dirty = 0;
    }
    return 0;
}

static void publish_partition(spool__part *p)
{
    for (size_t k = p->nsegs; k-- > 0;) {
        spool__seg *s = p->segs[k];
        int64_t size = atomic_load(&s->size);
        if (atomic_load(&s->durable_size) == size && k + 1 < p->nsegs) {
            break;
        }
        atomic_store(&s->durable_size, size);
    }
    atomic_store(&p->durable_end, p->end);
    p->unpublished = 0;
}

int spool_plog_commit(spool_plog *log, int force, int idle, int64_t *next_ms)
{
    if (log->read_only) {
        return -EROFS;
    }
    int64_t now = spool_monotonic_ms();
    int64_t next = -1;
    int any_sync = 0;
    int rc;
    log->last_error[0] = '\0';
    /* 1. Sync what the policies ask for; remember what may be published. */
    for (size_t t = 0; t < log->ntopics; t++) {
        spool__topic *tp = &log->topics[t];
        for (int32_t i = 0; i < tp->conf.partitions; i++) {
            spool__part *p = &tp->parts[i];
            p->publish = 0;
            if (!p->unpublished && !p->unsynced) {
                continue;
            }
            int mode = tp->conf.fsync_mode;
            int64_t since = now - p->last_sync_ms;
            int due =
                force || mode == SPOOL_FSYNC_ALWAYS ||
                (mode == SPOOL_FSYNC_INTERVAL && (idle || since >= tp->conf.fsync_interval_ms));
            if (p->unsynced && due) {
                if ((rc = sync_partition(log, p)) < 0) {
                    return rc;
                }
                p->unsynced = 0;
                p->last_sync_ms = now;
                any_sync = 1;
                p->publish = 1;
            } else if (mode == SPOOL_FSYNC_NEVER || !p->unsynced) {
                p->publish = 1;
            } else {
                int64_t left = tp->conf.fsync_interval_ms - since;
                if (left < 0) {
                    left = 0;
                }
                if (next < 0 || left < next) {
                    next = left;
                }
            }
        }
    }
    /* 2. The checkpoint, durable before any synced data is published. */
    if (log->ckpt_dirty || log->pos_dirty) {
        if ((rc = spool__ckpt_write(log, any_sync)) < 0) {
            return rc;
        }
    } else if (any_sync && log->ckpt_unsynced) {
        if (log->io->fdatasync(log->ckpt_fd[log->ckpt_seq & 1]) < 0) {
            rc = -errno;
            snprintf(log->last_error, sizeof(log->last_error),
                     "fdatasync of the checkpoint failed: %s", strerror(-rc));
            return rc;
        }
        log->ckpt_unsynced = 0;
    }
    /* 3. Publish. */
    pthread_mutex_lock(&log->pub_mu);
    int published = 0;
    for (size_t t = 0; t < log->ntopics; t++) {
        spool__topic *tp = &log->topics[t];
        int any = 0;
        for (int32_t i = 0; i < tp->conf.partitions; i++) {
            spool__part *p = &tp->parts[i];
            if (p->publish && p->unpublished) {
                publish_partition(p);
                any = 1;
            }
        }
        if (any) {
            tp->gen++;
            published = 1;
        }
    }
    if (log->pos_published_dirty) {
        spool__pos_table_free(&log->pos_durable);
        log->pos_durable = log->pos_ckpt;
        memset(&log->pos_ckpt, 0, sizeof(log->pos_ckpt));
        log->pos_published_dirty = 0;
    }
    if (published) {
        log->gen_all++;
        pthread_cond_broadcast(&log->pub_cv);
    }
    pthread_mutex_unlock(&log->pub_mu);
    log->uncommitted = 0;
    if (next_ms != NULL) {
        *next_ms = next;
    }
    return 0;
}

/* ---- positions ---- */

int spool_plog_position_set(spool_plog *log, const char *source, const void *pos, size_t len)
{
    if (log == NULL || source == NULL) {
        return -EINVAL;
    }
    int rc = spool__pos_table_set(&log->pos_staged, source, pos, len);
    if (rc == 0) {
        log->pos_dirty = 1;
    }
    return rc;
}

int spool_plog_position_get(spool_plog *log, const char *source, void *buf, size_t cap, size_t *len)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&log->pub_mu);
    const spool__pos *p = spool__pos_table_find(&log->pos_durable, source);
    if (p != NULL) {
        memcpy(buf, p->data, p->len < cap ? p->len : cap);
        if (len != NULL) {
            *len = p->len;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&log->pub_mu);
    return rc;
}

int spool_plog_position_foreach(spool_plog *log, const char *prefix,
                                void (*fn)(void *arg, const char *source, const void *pos,
                                           size_t len),
                                void *arg)
{
    /* Copy first so fn may call back into the log. */
    spool__pos_table copy = {0};
    int rc = 0;
    size_t plen = prefix ? strlen(prefix) : 0;
    pthread_mutex_lock(&log->pub_mu);
    for (size_t i = 0; i < log->pos_durable.count && rc == 0; i++) {
        const spool__pos *p = &log->pos_durable.items[i];
        if (plen == 0 || strncmp(p->source, prefix, plen) == 0) {
            rc = spool__pos_table_set(&copy, p->source, p->data, p->len);
        }
    }
    pthread_mutex_unlock(&log->pub_mu);
    for (size_t i = 0; i < copy.count && rc == 0; i++) {
        fn(arg, copy.items[i].source, copy.items[i].data, copy.items[i].len);
    }
    spool__pos_table_free(&copy);
    return rc;
}

/* ---- waiting ---- */

uint64_t spool_plog_generation(spool_plog *log, int topic)
{
    pthread_mutex_lock(&log->pub_mu);
    uint64_t g =
        (topic >= 0 && (size_t)topic < log->ntopics) ? log->topics[topic].gen : log->gen_all;
    g += log->wake_gen;
    pthread_mutex_unlock(&log->pub_mu);
    return g;
}

int spool_plog_wait_since(spool_plog *log, int topic, uint64_t gen, int64_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    int rc = 0;
    pthread_mutex_lock(&log->pub_mu);
    for (;;) {
        uint64_t g =
            (topic >= 0 && (size_t)topic < log->ntopics) ? log->topics[topic].gen : log->gen_all;
        if (g + log->wake_gen != gen) {
            break;
        }
        if (pthread_cond_timedwait(&log->pub_cv, &log->pub_mu, &dl) == ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&log->pub_mu);
    return rc;
}

int spool_plog_wait(spool_plog *log, int topic, int64_t timeout_ms)
{
    return spool_plog_wait_since(log, topic, spool_plog_generation(log, topic), timeout_ms);
}

void spool_plog_wake(spool_plog *log)
{
    pthread_mutex_lock(&log->pub_mu);
    log->wake_gen++;
    pthread_cond_broadcast(&log->pub_cv);
    pthread_mutex_unlock(&log->pub_mu);
}

/* ---- read_only refresh ---- */

int spool_plog_refresh(spool_plog *log)
{
    if (!log->read_only) {
        return -EINVAL;
    }
    spool__ckpt ck = {0};
    int have = spool__ckpt_load(log, &ck);
    if (have <= 0 || ck.seq == log->ckpt_seq) {
        spool__ckpt_free(&ck);
        return have < 0 ? have : 0;
    }
    int rc = 0;
    for (size_t t = 0; t < log->ntopics && rc == 0; t++) {
        spool__topic *tp = &log->topics[t];
        for (int32_t i = 0; i < tp->conf.partitions && rc == 0; i++) {
            int found = 0;
            int64_t e = spool__ckpt_end(&ck, tp->conf.name, i, &found);
            if (found) {
                rc = spool__part_refresh(log, &tp->parts[i], e);
            }
        }
    }
    pthread_mutex_lock(&log->pub_mu);
    spool__pos_table_free(&log->pos_durable);
    log->pos_durable = ck.positions;
    memset(&ck.positions, 0, sizeof(ck.positions));
    log->ckpt_seq = ck.seq;
    log->gen_all++;
    pthread_cond_broadcast(&log->pub_cv);
    pthread_mutex_unlock(&log->pub_mu);
    spool__ckpt_free(&ck);
    return rc;
}
