/*
 * log_int.h: internals shared by the files of the partition log (agent/log/).
 * Not a contract: only the .c files of agent/log include it.
 *
 * Locking, in one place:
 *   - The writer thread is the only mutator of partitions (append, roll,
 *     commit, retention) and of the staged position table. It reads its own
 *     structures without locks.
 *   - part->lock (rwlock) guards the segment array and every segment's index
 *     array. The writer takes it for writing only to change them (roll,
 *     delete, index entry); readers hold it for reading across lookup+pread,
 *     so a segment's fd is never closed under a reader.
 *   - seg->size, seg->durable_size, part->durable_end, part->dropped are
 *     atomics: readers never look past durable_size / durable_end, which
 *     only move after the data (and the checkpoint describing it) is
 *     written and, per policy, synced.
 *   - log->pub_mu + pub_cv: publication generations for spool_plog_wait,
 *     and the durable position table.
 *   - log->cur_mu: the consumer (cursor) table.
 */
#ifndef SPOOL_PLOG_INT_H
#define SPOOL_PLOG_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "log/log.h"

#define SPOOL__SEG_NAME_LEN 20      /* digits of a segment's base offset */
#define SPOOL__BATCH_PEEK 43        /* header bytes up to maxTimestamp */
#define SPOOL__MAX_BATCH (64 << 20) /* sanity bound for one batch */

typedef struct spool__idx_entry {
    uint32_t rel; /* batch base offset - segment base */
    uint32_t pos; /* byte position of the batch in the segment */
} spool__idx_entry;

typedef struct spool__seg {
    int64_t base;                 /* first offset (the file name) */
    int fd;                       /* the .log file; O_RDWR (writer) or O_RDONLY */
    int index_fd;                 /* the .index file, -1 if none (read_only) */
    _Atomic int64_t size;         /* bytes of complete batches written */
    _Atomic int64_t durable_size; /* bytes readers may see */
    int64_t synced_size;          /* bytes known fdatasynced (writer) */
    int64_t end;                  /* one past the last offset held (writer) */
    _Atomic int64_t max_ts;       /* largest batch maxTimestamp, ms; -1 unknown */
    int64_t created_ms;           /* wall clock when created/opened, for segment_ms */
    int64_t last_index_pos;       /* position of the last index entry, -1 none */
    spool__idx_entry *idx;        /* nidx sorted entries (guarded by part->lock) */
    size_t nidx, idx_cap;
    size_t idx_on_disk; /* entries already in the .index file */
} spool__seg;

/* read_only: a range of a partition recovery could not read (set at open,
 * then constant, so readers need no lock). */
typedef struct spool__bad {
    int64_t seg_base;         /* segment holding it */
    int64_t pos_from, pos_to; /* byte range in the segment; equal when moved aside */
    int64_t off_from, off_to; /* offsets [off_from, off_to) that cannot be read */
    int moved;                /* moved to a .corrupt file by an earlier `spool run` */
} spool__bad;

typedef struct spool__part {
    struct spool_plog *log;
    int topic;
    int32_t partition;
    char *dir;             /* topics/<topic>/<partition> */
    pthread_rwlock_t lock; /* segs array and index arrays */
    spool__seg **segs;     /* nsegs, ascending base; last = active */
    size_t nsegs, segs_cap;
    int64_t end;                 /* next offset to assign (writer) */
    _Atomic int64_t durable_end; /* one past the last published offset */
    _Atomic int64_t dropped;     /* records dropped by drop_oldest */
    int64_t bytes;               /* sum of segment sizes (writer) */
    int64_t committed_end;       /* end in the last written checkpoint */
    int64_t last_sync_ms;        /* monotonic ms of the last fdatasync */
    int unsynced;                /* appended since the last sync */
    int unpublished;             /* appended since the last publication */
    int dir_dirty;               /* a segment file was created since the last sync */
    int needs_truncate;          /* a failed append left bytes past size */
    int publish;                 /* commit scratch: may publish this round */
    spool__bad *bad;             /* read_only: unreadable ranges found by recovery */
    size_t nbad;
} spool__part;

typedef struct spool__topic {
    spool_topic_conf conf; /* name owned */
    int discovered;        /* found on disk, not configured */
    spool__part *parts;    /* conf.partitions entries */
    uint64_t gen;          /* publications (guarded by pub_mu) */
} spool__topic;

typedef struct spool__pos {
    char *source;
    uint8_t *data;
    size_t len;
} spool__pos;

typedef struct spool__pos_table {
    spool__pos *items;
    size_t count, cap;
    uint32_t *index;  /* open addressing: item index + 1, 0 = empty */
    size_t index_cap; /* slots, a power of two, > 2 * count */
} spool__pos_table;

typedef struct spool__consumer {
    char *name;
    int64_t **offsets; /* [topic][partition], -1 = none committed */
    int dirty;         /* changed since the last write to the file */
    /* The two-slot cursor file (cursor.c), guarded by flush_mu and cur_mu. */
    int fd;             /* open after the first write, -1 before */
    uint32_t slot_size; /* bytes per slot */
    uint64_t gen;       /* highest generation read or written */
    int synced_slot;    /* slot holding the last fsynced state, -1 none */
    int last_slot;      /* slot written last */
    int unsynced;       /* written to the page cache since the last fsync */
} spool__consumer;

struct spool_plog {
    char *data_dir;
    const spool_plog_io *io;
    int read_only;
    int lock_fd;
    spool__topic *topics;
    size_t ntopics;

    spool_buf enc;               /* reusable encode buffer (writer) */
    uint64_t uncommitted;        /* bytes appended since the last commit */
    int ckpt_dirty;              /* something the checkpoint holds changed */
    uint64_t ckpt_seq;           /* sequence of the last checkpoint written */
    int ckpt_fd[2];              /* the two slots, opened on first write */
    int ckpt_unsynced;           /* the newest slot was written without fdatasync */
    spool_buf ckpt_buf;          /* a checkpoint being built, kept warm between commits */
    spool__pos_table pos_ckpt;   /* positions of the last checkpoint, to publish */
    int pos_published_dirty;     /* pos_ckpt holds a table to publish */
    spool__pos_table pos_staged; /* positions set since open (writer) */
    int pos_dirty;
    int64_t last_retention_ms; /* monotonic */
    char last_error[8448];     /* what the last failed open step or commit could not do */

    pthread_mutex_t pub_mu;
    pthread_cond_t pub_cv;
    uint64_t gen_all;             /* any publication */
    uint64_t wake_gen;            /* spool_plog_wake calls */
    spool__pos_table pos_durable; /* committed positions */

    pthread_mutex_t cur_mu;
    pthread_mutex_t flush_mu; /* serialises cursor file writes */
    spool__consumer *consumers;
    size_t nconsumers;

    spool_plog_recovery_stats stats;
    int64_t ckpt_mtime_ns; /* read_only refresh: last checkpoint seen */
};

/* ---- segment.c ---- */
void spool__seg_path(char *buf, size_t cap, const char *dir, int64_t base, const char *ext);
/* Creates a new empty segment file (and index) at base. */
int spool__seg_create(spool_plog *log, spool__part *p, int64_t base, spool__seg **out);
/* Opens an existing segment (fd only; sizes from fstat). */
int spool__seg_open(spool_plog *log, spool__part *p, int64_t base, spool__seg **out);
void spool__seg_free(spool_plog *log, spool__seg *s);
/* Adds an index entry in memory (caller holds the wrlock or is alone) and
 * appends it to the .index file when there is one. */
int spool__seg_index_add(spool_plog *log, spool__seg *s, int64_t offset, int64_t pos);
/* 1 if a batch at pos should get an index entry. */
int spool__seg_index_due(spool_plog *log, spool__part *p, spool__seg *s, int64_t pos);
/* Rewrites the .index file from memory (not in read_only mode). */
int spool__seg_index_write(spool_plog *log, spool__seg *s);
/* Loads the .index file; 1 if it looks valid, 0 if missing/stale. */
int spool__seg_index_load(spool_plog *log, spool__part *p, spool__seg *s, int64_t file_size);
/* Reads the batch header at pos (up to limit): returns batch size, 0 if
 * incomplete, -EBADMSG if invalid. */
long spool__seg_peek(spool_plog *log, spool__seg *s, int64_t pos, int64_t limit,
                     spool_rb_info *info);
/* Position of the first batch whose last offset >= offset, bounded by limit;
 * sets *pos (== limit if none). Caller holds the rdlock. */
int spool__seg_find(spool_plog *log, spool__seg *s, int64_t offset, int64_t limit, int64_t *pos);
/* The first position in [from, limit) where a valid batch (CRC checked)
 * with base offset >= min_base starts, its base on *base; -1 if none (or
 * out of memory). Reads 1 MiB windows: for recovery and skipping. */
int64_t spool__seg_resync(spool_plog *log, spool__seg *s, int64_t from, int64_t limit,
                          int64_t min_base, int64_t *base);

/* ---- recovery.c ---- */
int spool__part_recover(spool_plog *log, spool__part *p, int have_ckpt, int64_t ckpt_end);
/* read_only: extend a partition to a newer checkpoint end. */
int spool__part_refresh(spool_plog *log, spool__part *p, int64_t ckpt_end);

/* ---- partition.c ---- */
/* read_only: records an unreadable range of p (caller holds the wrlock or
 * is alone). 0 or -ENOMEM. */
int spool__part_add_bad(spool__part *p, const spool__bad *b);
int spool__part_roll(spool_plog *log, spool__part *p);
/* Appends a segment to p's array (caller holds the wrlock or is alone). */
int spool__part_push(spool__part *p, spool__seg *s);
/* Removes segs[0] (not the active one) and deletes its files. */
void spool__part_drop_first(spool_plog *log, spool__part *p);
spool__part *spool__part_get(spool_plog *log, int topic, int32_t partition);

/* ---- checkpoint.c ---- */
typedef struct spool__ckpt_part {
    char *topic;
    int32_t partition;
    int64_t end_offset;
    int64_t size;
} spool__ckpt_part;

typedef struct spool__ckpt {
    uint64_t seq;
    spool__ckpt_part *parts;
    size_t nparts;
    spool__pos_table positions;
    int damaged; /* spool__ckpt_load found none: a slot exists but none is valid */
} spool__ckpt;

/* Loads the newest valid slot. 1 loaded, 0 none (out->damaged: a slot
 * exists but none is valid), negative errno. Logs nothing. */
int spool__ckpt_load(spool_plog *log, spool__ckpt *out);
void spool__ckpt_free(spool__ckpt *c);
int64_t spool__ckpt_end(const spool__ckpt *c, const char *topic, int32_t partition, int *found);
int spool__ckpt_write(spool_plog *log, int sync);

void spool__pos_table_free(spool__pos_table *t);
int spool__pos_table_set(spool__pos_table *t, const char *source, const void *pos, size_t len);
const spool__pos *spool__pos_table_find(const spool__pos_table *t, const char *source);

/* ---- cursor.c ---- */
/* Lowest committed cursor of the registered consumers that have one for
 * this partition (a consumer without one does not read it); INT64_MAX if
 * none has. */
int64_t spool__cursor_min(spool_plog *log, int topic, int32_t partition);
void spool__cursors_free(spool_plog *log);

/* ---- retention.c ---- */
/* Frees space in p until bytes + need <= max_bytes (on_full handling).
 * 0 when it fits, -EAGAIN when it cannot. */
int spool__retention_make_room(spool_plog *log, spool__part *p, int64_t need);

/* ---- preflight.c ---- */
/* 1 (and a malloc'd message on *msg) if data_dir has no valid checkpoint
 * while its segments hold data; 0 if not; negative errno. */
int spool__positions_lost(const char *data_dir, const spool_plog_io *io, char **msg);

typedef struct spool__shrink_part {
    int32_t partition;
    int64_t begin, end;  /* its offsets */
    int64_t bytes;       /* in its segments */
    int64_t undelivered; /* records the laggiest reader has not read */
} spool__shrink_part;

/* A configured topic with partition directories beyond its count. */
typedef struct spool__shrink {
    int topic; /* index in the topics given */
    int32_t conf_parts, disk_parts;
    spool__shrink_part *parts; /* the partitions from conf_parts on */
    size_t nparts;
    int64_t undelivered; /* sum over parts */
    char *msg;           /* for the user, when undelivered > 0 */
} spool__shrink;

/* Finds those topics (read_only). cons NULL: judge by the cursor files. */
int spool__shrink_find(const char *data_dir, const spool_topic_conf *topics, size_t ntopics,
                       const spool_plog_consumer_conf *cons, size_t ncons, spool__shrink **out,
                       size_t *nout);
void spool__shrink_free(spool__shrink *s, size_t n);
/* Writable open: refuses (-ENOTEMPTY, logged) partitions beyond the count
 * holding undelivered records unless overridden; empties the others.
 * cons NULL: judge by the cursor files. */
int spool__shrink_apply(spool_plog *log, const spool_topic_conf *topics, size_t ntopics,
                        const spool_plog_consumer_conf *cons, size_t ncons);

/* ---- misc ---- */
int spool__fsync_dir(const char *path);
int spool__mkdirs(const char *path);

#endif /* SPOOL_PLOG_INT_H */
