/*
 * log.h: the durable partition log (DESIGN.md, "The partition log on disk").
 *
 * Layout under data_dir:
 *   topics/<topic>/<partition>/<20-digit base offset>.log     RecordBatch v2 batches
 *   topics/<topic>/<partition>/<20-digit base offset>.index   sparse offset -> position
 *   state/checkpoint.0, state/checkpoint.1                    the commit point (below)
 *   cursors/<output>.cursor                                   output cursors (two slots)
 *
 * The commit point. One writer thread appends to every partition. After a
 * run of appends it calls spool_plog_commit(), which syncs what the topics'
 * fsync policies ask for and then writes a checkpoint: every partition's
 * end offset and byte size, and every source position attached to the
 * appended batches, in one CRC-protected file written alternately to two
 * slots. The durable end offset readers see moves only then. On open,
 * recovery keeps the longest valid prefix of each partition and cuts it to
 * the checkpoint's end offset, so the positions in the checkpoint describe
 * exactly the data in the log: a restart neither loses nor duplicates.
 *
 * Threads: one writer thread calls append/commit/retention; any number of
 * reader threads call read/offsets/wait; cursor calls from any thread.
 */
#ifndef SPOOL_PLOG_H
#define SPOOL_PLOG_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"
#include "codec/codec.h"

typedef struct spool_plog spool_plog;

enum spool_fsync_mode {
    SPOOL_FSYNC_NEVER = 0,    /* leave it to the OS */
    SPOOL_FSYNC_ALWAYS = 1,   /* fdatasync before every commit returns */
    SPOOL_FSYNC_INTERVAL = 2, /* at most fsync_interval_ms apart, and when idle */
};

enum spool_on_full {
    SPOOL_ON_FULL_BLOCK = 0,       /* stop accepting until outputs catch up */
    SPOOL_ON_FULL_DROP_OLDEST = 1, /* delete oldest segments, count drops */
};

/* A topic as configured (the core fills it from the `topics:` section). */
typedef struct spool_topic_conf {
    char *name;
    int32_t partitions;           /* >= 1 */
    int64_t segment_bytes;        /* roll when a segment reaches this size */
    int64_t segment_ms;           /* roll when the active segment is this old; 0 = never */
    int64_t retention_ms;         /* delete delivered segments older; 0 = keep */
    int64_t retention_bytes;      /* delete delivered segments beyond; 0 = keep */
    int64_t max_bytes;            /* hard limit per partition; 0 = none (on_full applies) */
    int fsync_mode;               /* enum spool_fsync_mode */
    int64_t fsync_interval_ms;    /* for SPOOL_FSYNC_INTERVAL */
    int on_full;                  /* enum spool_on_full */
    int compression;              /* enum spool_compression: NONE or ZSTD */
    int64_t index_interval_bytes; /* bytes between index entries (4096) */
} spool_topic_conf;

/* The I/O the log does, through a table a test can replace (STYLE.md). */
typedef struct spool_plog_io {
    int (*open)(const char *path, int flags, int mode);
    long (*pwrite)(int fd, const void *buf, size_t len, int64_t off);
    long (*pread)(int fd, void *buf, size_t len, int64_t off);
    int (*fdatasync)(int fd);
    int (*ftruncate)(int fd, int64_t len);
    int (*close)(int fd);
} spool_plog_io;

/* The real system calls. */
extern const spool_plog_io spool_plog_io_posix;

typedef struct spool_plog_options {
    const char *data_dir;           /* created if missing */
    const spool_topic_conf *topics; /* copied */
    size_t topic_count;
    const spool_plog_io *io; /* NULL = spool_plog_io_posix */
    int read_only;           /* CLI readers: no recovery writes, no locks */
    const struct spool_plog_consumer_conf *consumers; /* the configured outputs, to judge
                                                       * what is delivered; NULL = judge
                                                       * by the cursor files */
    size_t consumer_count;
    char *error;      /* if set: on failure, what could not be done or why the open is
                       * refused (a file and the system error; the lost checkpoint, the
                       * partitions with undelivered records), "" if it has no detail, for
                       * the caller's one message (the log logs none); if NULL the log
                       * logs it itself, one line */
    size_t error_cap; /* bytes at error */
} spool_plog_options;

/*
 * Opens (creating) the log and recovers every partition: a torn tail is cut
 * and logged with topic, partition, offset and bytes; a corrupt batch in
 * the middle is logged, the rest of that segment moved to <segment>.corrupt;
 * a missing or stale index is rebuilt. Takes an exclusive lock on data_dir
 * (-EBUSY if another spool holds it) unless read_only. Topics found on
 * disk but not configured stay readable. Refuses (-ESTALE) a lost
 * checkpoint while the log holds data, and (-ENOTEMPTY) fewer partitions
 * than hold undelivered records, unless spool_plog_set_overrides says
 * otherwise. 0 or negative errno; *out NULL on failure.
 */
int spool_plog_open(const spool_plog_options *opt, spool_plog **out);
/* Closes everything. Does not commit. Accepts NULL. */
void spool_plog_close(spool_plog *log);

/* Index of topic `name` or -ENOENT. */
int spool_plog_topic_index(const spool_plog *log, const char *name);
size_t spool_plog_topic_count(const spool_plog *log);
const spool_topic_conf *spool_plog_topic_conf(const spool_plog *log, int topic);

/* ---- writer thread ---- */

/*
 * Appends recs[0..n) to one partition as one RecordBatch v2, assigning
 * offsets from the partition's end. The batch is written but not yet
 * visible to readers until spool_plog_commit(). On *base_offset the first
 * offset assigned. Returns 0; -ENOSPC or -EIO (nothing of the batch is left
 * in the file: a short write is truncated away; retry later); -EAGAIN if
 * the topic is full under on_full: block (retry after outputs advance).
 * Rolls the segment first when it is full or old.
 */
int spool_plog_append(spool_plog *log, int topic, int32_t partition, const spool_record *recs,
                      size_t n, int64_t *base_offset);

/* Records a source position to be made durable by the next commit
 * (len 0 = forget the source). Copies. 0 or -ENOMEM. */
int spool_plog_position_set(spool_plog *log, const char *source, const void *pos, size_t len);

/*
 * Group commit: fdatasync the partitions whose policy asks for it (all of
 * them if `force`), write the checkpoint, and publish the durable end
 * offsets (waking readers). `idle` tells the log the writer ran out of
 * work, which triggers the sync of interval topics. Sets *next_ms to the
 * milliseconds after which commit must be called again for an interval
 * topic with unsynced data (-1 if none). 0 or negative errno (then nothing
 * new was published; data stays, retry).
 */
int spool_plog_commit(spool_plog *log, int force, int idle, int64_t *next_ms);

/*
 * What the last failed spool_plog_commit could not do, naming the file or
 * partition and the system error (e.g. "app/0: fdatasync of segment
 * 00000000000000000000 failed: Input/output error"); "" if it gave no
 * detail. The log does not log commit failures: its caller decides and
 * reports them once. Valid until the next commit; the committing thread.
 */
const char *spool_plog_commit_error(const spool_plog *log);

/* Bytes appended since the last commit (to size group commits). */
uint64_t spool_plog_uncommitted_bytes(const spool_plog *log);

/*
 * Retention: deletes whole segments by age and size, never past the lowest
 * cursor of the partition (unless on_full: drop_oldest at max_bytes, when
 * drops are counted and logged). Rolls aged segments. Writer thread,
 * cheap to call often (it checks at most once a second unless force).
 */
int spool_plog_retention_run(spool_plog *log, int force);

/* ---- positions (any thread) ---- */

/* Copies the durable position of source into buf. -ENOENT if none. */
int spool_plog_position_get(spool_plog *log, const char *source, void *buf, size_t cap,
                            size_t *len);
/* Calls fn for each durable position whose source starts with prefix. */
int spool_plog_position_foreach(spool_plog *log, const char *prefix,
                                void (*fn)(void *arg, const char *source, const void *pos,
                                           size_t len),
                                void *arg);

/* ---- readers (any thread) ---- */

/* Durable beginning and end offsets, bytes and segments of one partition. */
typedef struct spool_partition_info {
    int64_t begin_offset; /* first readable offset */
    int64_t end_offset;   /* one past the last durable record */
    int64_t bytes;        /* on disk, all segments */
    int32_t segments;
    int64_t dropped; /* records dropped by drop_oldest since start */
} spool_partition_info;

int spool_plog_partition_info(spool_plog *log, int topic, int32_t partition,
                              spool_partition_info *info);

/*
 * Reads whole batches of one partition starting with the batch that holds
 * `offset` (or the first batch after it, if offset fell in a gap or below
 * the beginning), up to max_bytes (at least one batch, whatever its size),
 * never past the durable end. Appends the bytes to out. Sets *next to the
 * offset after the last batch read (== offset if nothing new). Returns
 * bytes read (0 at the end), -EBADMSG if a batch is corrupt (not logged:
 * the caller reports it with the offset, and may skip it with
 * spool_plog_skip_corrupt), or another negative errno.
 */
long spool_plog_read(spool_plog *log, int topic, int32_t partition, int64_t offset,
                     size_t max_bytes, spool_buf *out, int64_t *next);

/* First offset >= the first record with timestamp >= ts_ms, or the end. */
int spool_plog_offset_for_time(spool_plog *log, int topic, int32_t partition, int64_t ts_ms,
                               int64_t *offset);

/* Blocks until a commit publishes new data in any partition of `topic` (-1 =
 * any topic), the log is woken, or timeout_ms passes. Returns 0 woken or
 * new data, -ETIMEDOUT. */
int spool_plog_wait(spool_plog *log, int topic, int64_t timeout_ms);
/* Wakes every waiter (shutdown). */
void spool_plog_wake(spool_plog *log);

/* ---- output cursors (any thread) ---- */

/* A named consumer (an output): one committed offset per topic/partition,
 * stored in cursors/<name>.cursor, written atomically. Registering makes
 * retention respect it. 0 or -errno. */
int spool_plog_cursor_register(spool_plog *log, const char *consumer);
/* The committed offset (the next offset to deliver); the partition's
 * beginning if none was committed. */
int64_t spool_plog_cursor_get(spool_plog *log, const char *consumer, int topic, int32_t partition);
/* Advances the in-memory cursor; durable after spool_plog_cursor_flush. */
int spool_plog_cursor_set(spool_plog *log, const char *consumer, int topic, int32_t partition,
                          int64_t offset);
/* Writes the consumer's cursors to the page cache (no fsync): survives a
 * kill -9 of the process, not a power loss. Cheap: one pwrite. 0 or -errno. */
int spool_plog_cursor_write(spool_plog *log, const char *consumer);
/* Writes the consumer's cursors and fsyncs them (power loss). 0 or -errno. */
int spool_plog_cursor_flush(spool_plog *log, const char *consumer);

/* Reads every cursor file under data_dir (for `spool topics` lag). */
int spool_plog_cursor_foreach(spool_plog *log,
                              void (*fn)(void *arg, const char *consumer, const char *topic,
                                         int32_t partition, int64_t offset),
                              void *arg);

/* The saved cursors, as a list (`spool topics` lag, the partition-cut
 * preflight). A zeroed struct is empty; strings are owned by the list. */
typedef struct spool_plog_cursor_line {
    char *consumer;
    char *topic;
    int32_t partition;
    int64_t offset; /* next offset to read; -1: none saved (added by the caller) */
} spool_plog_cursor_line;
typedef struct spool_plog_cursor_lines {
    spool_plog_cursor_line *items;
    size_t count, cap;
    int oom; /* a line could not be stored: the list is incomplete */
} spool_plog_cursor_lines;
/* Appends every cursor file line under data_dir. 0, -ENOMEM (l->oom) or
 * another negative errno. */
int spool_plog_cursor_lines_read(spool_plog *log, spool_plog_cursor_lines *l);
/* Appends one line (copies the strings). 0 or -ENOMEM (l->oom set). */
int spool_plog_cursor_lines_add(spool_plog_cursor_lines *l, const char *consumer, const char *topic,
                                int32_t partition, int64_t offset);
/* The consumer's line for topic/partition, or NULL. */
const spool_plog_cursor_line *spool_plog_cursor_lines_find(const spool_plog_cursor_lines *l,
                                                           const char *consumer, const char *topic,
                                                           int32_t partition);
/* Frees the lines; accepts an empty list; l is empty (zeroed) afterwards. */
void spool_plog_cursor_lines_free(spool_plog_cursor_lines *l);

/* ---- additions (log module, additive) ---- */

/* What recovery did on open (for tests, metrics and `spool topics`). */
typedef struct spool_plog_recovery_stats {
    int64_t torn_cuts;      /* torn tails truncated */
    int64_t torn_bytes;     /* bytes cut from torn tails */
    int64_t corrupt_moved;  /* corrupt regions moved to .corrupt files */
    int64_t corrupt_bytes;  /* bytes moved */
    int64_t ckpt_cut_bytes; /* bytes beyond the checkpoint truncated */
    int64_t ckpt_missing;   /* partitions holding less than the checkpoint says */
    int64_t index_rebuilt;  /* indexes rebuilt (missing or stale) */
} spool_plog_recovery_stats;

/* Copies the recovery statistics of the last open. Any thread. */
void spool_plog_recovery_get(const spool_plog *log, spool_plog_recovery_stats *out);

/*
 * read_only logs (the CLI): re-reads the checkpoint a running spool writes
 * and extends every partition to its new durable end (new segments
 * included). Cheap when nothing changed. 0 or negative errno. Not for a
 * writable log (returns -EINVAL).
 */
int spool_plog_refresh(spool_plog *log);

/*
 * After spool_plog_read returned -EBADMSG at `offset`: sets *next to the
 * offset where reading may resume past the corrupt batch (the next batch
 * if its header is sane, else the next segment, else the durable end).
 * Not logged: the caller reports the skip (topic, partition, offsets).
 * 0 or -errno.
 */
int spool_plog_skip_corrupt(spool_plog *log, int topic, int32_t partition, int64_t offset,
                            int64_t *next);

/* Publication counter of `topic` (-1 = any topic), for a race-free wait:
 * read it, check for data, then spool_plog_wait_since(). Any thread. */
uint64_t spool_plog_generation(spool_plog *log, int topic);
/* Like spool_plog_wait, but returns at once if the generation moved past
 * `gen` already. 0 or -ETIMEDOUT. */
int spool_plog_wait_since(spool_plog *log, int topic, uint64_t gen, int64_t timeout_ms);

/* ---- refusals and their overrides (issue 12.3, 13.6) ---- */

/*
 * Process-wide overrides of two refusals of a writable open, set once by
 * `spool run --reset-positions / --drop-partitions` (main.c) before the
 * service starts; read by every later writable open and by
 * spool_plog_preflight. Not thread-safe: call before any log is opened.
 */
#define SPOOL_PLOG_RESET_POSITIONS 0x1 /* start although the checkpoint is lost */
#define SPOOL_PLOG_DROP_PARTITIONS 0x2 /* remove extra partitions with undelivered data */
void spool_plog_set_overrides(int flags);
int spool_plog_overrides(void);

/* A configured consumer (an output) and the topics it reads. */
typedef struct spool_plog_consumer_conf {
    const char *name;          /* its cursor name ("output.<name>") */
    const char *const *topics; /* topic_count names */
    size_t topic_count;
} spool_plog_consumer_conf;

enum spool_plog_problem {
    SPOOL_PLOG_POSITIONS_LOST = 1, /* no valid checkpoint, but the log holds data */
    SPOOL_PLOG_PARTITIONS_CUT = 2, /* fewer partitions configured than hold undelivered data */
    SPOOL_PLOG_DATA_DIR = 3,       /* data_dir cannot be created: a file is in the way */
};

/*
 * What a writable open of data_dir with these topics would refuse, found
 * without writing (it opens the log read_only): a lost checkpoint while
 * partitions hold data, and a topic whose partition count is lowered
 * while the partitions beyond it hold records that one of `consumers`
 * reading the topic has not read (or any record, when none reads it).
 * Calls fn once per problem with a message for the user (what is at
 * stake, how to resolve it); topic is NULL but for
 * SPOOL_PLOG_PARTITIONS_CUT. A missing data_dir is no problem, unless a
 * file stands where it or a folder above it would be created
 * (SPOOL_PLOG_DATA_DIR). Honours spool_plog_overrides(). Returns
 * the number of problems or a negative errno. Any thread.
 */
int spool_plog_preflight(const char *data_dir, const spool_topic_conf *topics, size_t ntopics,
                         const spool_plog_consumer_conf *consumers, size_t nconsumers,
                         void (*fn)(void *arg, int problem, const char *topic, const char *msg),
                         void *arg);

/* ---- unreadable ranges (read_only logs: `spool read`) ---- */

/* A range of a partition a read_only log cannot return: corrupt bytes
 * still in a segment, or data an earlier `spool run` moved aside to
 * <segment>.log.corrupt. */
typedef struct spool_plog_bad_range {
    int64_t from_offset;  /* first offset that cannot be read */
    int64_t to_offset;    /* where reading resumes */
    int64_t segment_base; /* the segment file (its 20-digit name) */
    int64_t from_pos;     /* byte range in that file; equal when moved aside */
    int64_t to_pos;
    int moved; /* 1: moved to <segment>.log.corrupt by `spool run` */
} spool_plog_bad_range;

/* Copies the k-th unreadable range of a partition known so far (found on
 * open, or by spool_plog_skip_corrupt). 0, or -ENOENT past the last. */
int spool_plog_bad_range_get(spool_plog *log, int topic, int32_t partition, size_t k,
                             spool_plog_bad_range *out);

#endif /* SPOOL_PLOG_H */
