/*
 * tail.h: internals shared by the files of the tail input (not a public API).
 *
 * tail.c           callbacks, option table, registration, the run loop
 * tail_lines.c     line splitting, long lines, multiline: pure functions over buffers
 * tail_glob.c      glob matching and expansion (`*`, `?`, `[...]`, `**`), exclude
 * tail_watch.c     the watcher: inotify on directories, or nothing (poll mode)
 * tail_file.c      file state: identity, open/close, reading, rotation, truncation
 * tail_position.c  the position blob (identity + offset) and its fingerprint
 *
 * Threads: everything here runs on the input's run() thread, except
 * tail_stop's wakeup (an eventfd write).
 */
#ifndef SPOOL_TAIL_H
#define SPOOL_TAIL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <limits.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "spool/spool.h"

/* A batch is submitted once its payload reaches TAIL_BATCH_BYTES or it holds
 * TAIL_BATCH_RECORDS records (checked after each read() block, so it ends
 * at most one read_buffer above), and at the end of every read cycle. Small
 * batches keep the pipeline's resident memory small and their buffers warm
 * in the batch pool (docs/memory.md); larger ones bought no throughput. */
#define TAIL_BATCH_BYTES (256u << 10)
#define TAIL_BATCH_RECORDS 4096
#define tail_batch_full(b)                                                                         \
    (spool_batch_bytes(b) >= TAIL_BATCH_BYTES || spool_batch_count(b) >= TAIL_BATCH_RECORDS)

/* ------------------------------------------------------------------------ */
/* Lines (tail_lines.c).                                                    */
/* ------------------------------------------------------------------------ */

/* How lines are cut; shared by every file of an input, read-only. */
typedef struct tail_split_conf {
    int strip_cr;               /* drop one '\r' before '\n' */
    size_t max_line;            /* longest record in bytes (>= 1) */
    int truncate;               /* long lines: 1 = truncate, 0 = split */
    const pcre2_code *ml_start; /* multiline: a line matching this starts a record; NULL = off */
    pcre2_match_data *ml_md;    /* match data for ml_start (owned by the caller) */
    uint32_t ml_max_lines;      /* multiline: emit a record after this many lines */
} tail_split_conf;

/*
 * The per-file state of the splitter. Offsets are file offsets: `off` is
 * one past the last byte fed, `emit_off` one past the bytes covered by the
 * last emitted record (the position that may be made durable): the bytes
 * of an incomplete line or of a pending multiline record are never covered.
 */
typedef struct tail_splitter {
    spool_buf carry;        /* the current incomplete line */
    int discarding;         /* truncate mode: dropping the rest of a long line */
    int long_counted;       /* the current line was counted in long_lines */
    int64_t carry_since_ms; /* monotonic ms the incomplete line began, 0 if none */
    spool_buf rec;          /* multiline: the pending record */
    uint32_t rec_lines;     /* lines in rec */
    int64_t rec_end;        /* file offset after the last line of rec */
    int64_t rec_since_ms;   /* monotonic ms of the last line added to rec */
    int64_t off;            /* file offset after the last byte fed */
    int64_t emit_off;       /* file offset after the last emitted record */
    uint64_t long_lines;    /* lines split or truncated so far */
    uint64_t records;       /* records emitted so far */
} tail_splitter;

/* Receives one record (a view valid only during the call). 0 or -errno;
 * an error stops the feed and is returned by it. */
typedef int (*tail_emit_fn)(void *arg, const uint8_t *p, size_t n);

/* Resets the splitter to an empty state at file offset `off` (keeps buffers). */
void tail_split_reset(tail_splitter *sp, int64_t off);
/* Frees the splitter's buffers. */
void tail_split_free(tail_splitter *sp);
/* Feeds n bytes that follow sp->off in the file; emits every record they
 * complete. now_ms is a monotonic clock (for the timers). 0 or the first
 * error of emit (the splitter is then inconsistent: reset it). */
int tail_split_feed(tail_splitter *sp, const tail_split_conf *c, const uint8_t *p, size_t n,
                    int64_t now_ms, tail_emit_fn emit, void *arg);
/* Emits the incomplete line as a line (flush_partial_after, file close). */
int tail_split_flush_partial(tail_splitter *sp, const tail_split_conf *c, int64_t now_ms,
                             tail_emit_fn emit, void *arg);
/* Emits the pending multiline record (multiline.timeout, file close). */
int tail_split_flush_record(tail_splitter *sp, const tail_split_conf *c, tail_emit_fn emit,
                            void *arg);
/* 1 if bytes were fed that no record covers yet. */
int tail_split_pending(const tail_splitter *sp);

/* ------------------------------------------------------------------------ */
/* Globs (tail_glob.c).                                                     */
/* ------------------------------------------------------------------------ */

/* 1 if `path` matches `pattern` ('/'-separated; `*`, `?`, `[...]` inside one
 * component, `**` as a whole component for zero or more directories). A
 * pattern without '/' is matched against the basename of path. */
int tail_glob_match(const char *pattern, const char *path);
/* 1 if the text has glob characters. */
int tail_glob_has_magic(const char *s);

/* Called for each regular file (after following symlinks) a pattern finds. */
typedef void (*tail_glob_file_fn)(void *arg, const char *path, const struct stat *st);
/* Called for each directory the expansion looked into; `name_filter` is NULL
 * for a directory whose entries matter, or the one entry name whose creation
 * matters (the nearest existing ancestor of a missing literal prefix). */
typedef void (*tail_glob_dir_fn)(void *arg, const char *dir, const char *name_filter);
/* Expands an absolute pattern. Bounded recursion (depth 64). */
void tail_glob_expand(const char *pattern, tail_glob_file_fn on_file, tail_glob_dir_fn on_dir,
                      void *arg);

/* ------------------------------------------------------------------------ */
/* Watcher (tail_watch.c): inotify on directories.                          */
/* ------------------------------------------------------------------------ */

typedef struct tail_watch tail_watch;

/* What the watcher tells the run loop about one event. */
enum tail_watch_what {
    TAIL_WATCH_RESCAN = 1,     /* entries appeared, moved or vanished: rescan the globs */
    TAIL_WATCH_MODIFIED = 2,   /* file `path` was written or truncated */
    TAIL_WATCH_OVERFLOW = 3,   /* events were lost: rescan and check every file */
    TAIL_WATCH_MOVED_FROM = 4, /* entry `path` was renamed away (cookie pairs it) */
    TAIL_WATCH_MOVED_TO = 5,   /* entry `path` is the new name of a rename (cookie) */
};
typedef void (*tail_watch_fn)(void *arg, int what, const char *path, uint32_t cookie);

/* Creates an inotify watcher; NULL with *err = errno on failure. */
tail_watch *tail_watch_create(int *err);
void tail_watch_destroy(tail_watch *w);
/* The fd to poll for POLLIN. */
int tail_watch_fd(const tail_watch *w);
/* Marks every watch unused (before a rescan re-adds the ones still wanted). */
void tail_watch_begin(tail_watch *w);
/* Watches dir (idempotent). name_filter: see tail_glob_dir_fn. 0 or -errno. */
int tail_watch_add(tail_watch *w, const char *dir, const char *name_filter);
/* Removes the watches not re-added since tail_watch_begin. */
void tail_watch_end(tail_watch *w);
/* Reads the pending events and reports them. 0 or -errno. */
int tail_watch_read(tail_watch *w, tail_watch_fn fn, void *arg);
size_t tail_watch_count(const tail_watch *w);

/* ------------------------------------------------------------------------ */
/* Positions (tail_position.c).                                             */
/* ------------------------------------------------------------------------ */

#define TAIL_FP_MAX 256 /* bytes of the file's beginning in its fingerprint */

typedef struct tail_pos {
    uint64_t dev;     /* st_dev */
    uint64_t ino;     /* st_ino */
    int64_t offset;   /* bytes of the file covered by records in the log */
    uint64_t fp_hash; /* FNV-1a 64 of the first fp_len bytes */
    uint32_t fp_len;  /* bytes hashed, <= TAIL_FP_MAX */
    uint64_t bk_hash; /* FNV-1a 64 of the bk_len bytes just before offset */
    uint32_t bk_len;  /* min(offset, TAIL_FP_MAX); 0 = unknown (version 1 blob) */
    char path[4096];  /* the path it was last known by */
} tail_pos;

#define TAIL_POS_BLOB_MAX (60 + 4096)

/* Encodes p into buf (TAIL_POS_BLOB_MAX bytes); returns the length. */
size_t tail_pos_encode(const tail_pos *p, uint8_t *buf);
/* Decodes a blob; 0 or -EINVAL. */
int tail_pos_decode(const void *blob, size_t len, tail_pos *p);
/* The source name of a file in the position store: "file:<dev>:<ino>". */
void tail_pos_source(uint64_t dev, uint64_t ino, char *buf, size_t cap);
/* Fingerprint of the first up to TAIL_FP_MAX bytes of fd (pread). 0 or -errno. */
int tail_fingerprint(int fd, uint32_t want, uint64_t *hash, uint32_t *len);
uint64_t tail_fnv1a(const uint8_t *p, size_t n);
/* pre[i] = the fingerprint hash of fd's first i bytes, for i = 0..*len, where
 * *len = min(size, TAIL_FP_MAX) (one pread): compares one file's beginning
 * with many fingerprints of any length without reading it again. 0 or -errno. */
int tail_head_hashes(int fd, uint64_t pre[TAIL_FP_MAX + 1], uint32_t *len);
/* Hash of the min(off, TAIL_FP_MAX) bytes before off (pread). 0, -ENODATA
 * if the file is shorter than off, or -errno. */
int tail_back_hash(int fd, int64_t off, uint64_t *hash, uint32_t *len);

/* ------------------------------------------------------------------------ */
/* The input (tail.c) and its files (tail_file.c).                          */
/* ------------------------------------------------------------------------ */

enum { TAIL_FROM_BEGINNING = 0, TAIL_FROM_END = 1 };
enum { TAIL_WATCHER_INOTIFY = 0, TAIL_WATCHER_POLL = 1 };
enum { TAIL_LONG_SPLIT = 0, TAIL_LONG_TRUNCATE = 1 };

/* What a file's first bytes say it is (magic bytes, not its name). */
enum tail_file_kind {
    TAIL_KIND_UNKNOWN = 0, /* not looked at yet, or too short to tell */
    TAIL_KIND_TEXT = 1,
    TAIL_KIND_SKIP = 2, /* compressed: not read (noticed once) */
    TAIL_KIND_GZIP = 3, /* read decompressed (decompress: true) */
    TAIL_KIND_ZSTD = 4,
};

/* ------------------------------------------------------------------------ */
/* Decompression (tail_decomp.c): gzip and zstd files read as text.          */
/* ------------------------------------------------------------------------ */

typedef struct tail_dz tail_dz;
/* A decompressor for kind (TAIL_KIND_GZIP, TAIL_KIND_ZSTD); NULL: no memory. */
tail_dz *tail_dz_new(int kind);
void tail_dz_free(tail_dz *z);
/* Decompresses fd from where the last call stopped (pread: the fd's offset
 * is not used) into out (cap bytes), calling fn for each block, until about
 * budget bytes came out or the input ends. 1 if more may follow, 0 at the
 * end of the input for now, -EBADMSG on corrupt data, fn's error, -errno. */
int tail_dz_run(tail_dz *z, int fd, uint8_t *out, size_t cap, size_t budget,
                int (*fn)(void *arg, const uint8_t *p, size_t n), void *arg);
/* Decompressed bytes produced so far (fn's block ends there). */
int64_t tail_dz_out(const tail_dz *z);
/* 1 if the input read so far ends at the end of a member or frame (after a
 * run that returned 0: the file is complete, not being written). */
int tail_dz_complete(const tail_dz *z);

enum tail_file_state {
    TAIL_ACTIVE = 0,  /* found at its path by the globs */
    TAIL_ROTATED = 1, /* no longer at a matched path (renamed, replaced): finish it */
};

typedef struct tail_rt tail_rt;
typedef struct tail_file tail_file;

/* Open-addressing table from a 64-bit hash to a file (tail_scan.c). */
typedef struct tail_map_slot {
    uint64_t h;
    tail_file *f; /* NULL = empty slot */
} tail_map_slot;
typedef struct tail_map {
    tail_map_slot *s;
    size_t cap, n; /* cap is a power of two */
} tail_map;

/* The position source that says this input ran before (read_from applies once). */
#define TAIL_MARKER_SOURCE "tail:started"

struct tail_file {
    char *path;             /* the path the glob matched (the `path` header) */
    char *real;             /* realpath when last found (inotify name lookup) */
    uint64_t dev, ino;      /* identity */
    uint64_t fp_hash;       /* fingerprint of the first fp_len bytes */
    uint32_t fp_len;        /* bytes, < TAIL_FP_MAX while the file is young */
    int fd;                 /* -1 while closed */
    int state;              /* enum tail_file_state */
    int dirty;              /* an event says it may have grown or shrunk */
    int seen;               /* rescan mark */
    int in_batch;           /* its position must be set on the current batch */
    int warned_long;        /* long-line warning given */
    int eof;                /* the last read hit the end of the file */
    int kind;               /* enum tail_file_kind */
    tail_dz *dz;            /* compressed: the decompressor, NULL until read */
    int64_t dz_done_size;   /* compressed: its size when read to a complete end, else -1 */
    int trunc_pending;      /* truncation seen; restarts at the next read (after a rescan) */
    const char *trunc_why;  /* static text: why it restarts */
    int continued;          /* truncated, and a copy continues what it held past its
                             * position: nothing of its old content is read or
                             * emitted from it again, and it is no longer a copy's
                             * original (until it restarts) */
    int64_t trunc_ms;       /* monotonic ms the truncation was seen */
    int prio;               /* read before the others (a copy's tail): until its end */
    int fresh;              /* found new by the current scan */
    int64_t undecided_ms;   /* monotonic ms a compressed copy_check could not tell yet */
    int copy_check;         /* new: compare with the followed files before reading it */
    tail_file *copy_of;     /* a copy of that file (same bytes): not read until that
                             * one is truncated or gone, then continued from its position */
    tail_file *after;       /* the file it replaced (or the copy holding its older
                             * lines): read first while it has unread data */
    int64_t after_since_ms; /* monotonic ms `after` was set */
    int64_t born_ns;        /* birth time (statx), 0 if unknown: rotation order */
    char *renamed_from;     /* the scan: the matched path it had before (then NULL) */
    uint64_t bk_hash;       /* hash of the bk_len bytes before bk_off */
    uint32_t bk_len;        /* 0 = unknown */
    int64_t bk_off;         /* the offset bk_* are for (-1: none) */
    int64_t size_seen;      /* the largest size fstat showed (lost bytes at truncation) */
    int64_t read_off;       /* next byte to read (== splitter's off) */
    int64_t last_grow_ms;   /* monotonic ms data was last read from it */
    int64_t last_use_ms;    /* monotonic ms of the last read attempt (LRU) */
    tail_splitter sp;       /* lines */
    spool_header hdrs[3];   /* host, path, input */
    char source[64];        /* position store key */
};

/* The input's context: option fields first (filled by the core). */
typedef struct tail_ctx {
    spool_strlist paths;            /* globs, required */
    spool_strlist exclude;          /* globs */
    int read_from;                  /* TAIL_FROM_* for files found at the first start */
    int watcher;                    /* TAIL_WATCHER_* */
    int64_t poll_interval_ms;       /* poll watcher: stat period */
    int64_t rescan_interval_ms;     /* inotify watcher: safety rescan period */
    int64_t read_buffer;            /* bytes per read() */
    int strip_cr;                   /* drop '\r' before '\n' */
    int64_t flush_partial_after_ms; /* emit an incomplete line after this long */
    int64_t max_line_bytes;         /* longest record */
    int long_lines;                 /* TAIL_LONG_* */
    char *ml_start;                 /* multiline.start (PCRE2) */
    int64_t ml_max_lines;           /* multiline.max_lines */
    int64_t ml_timeout_ms;          /* multiline.timeout */
    int64_t max_open_files;         /* fds held at most */
    int64_t close_inactive_ms;      /* close a file idle this long */
    int64_t rotate_wait_ms;         /* keep reading a rotated file this long after its last data */
    int decompress;                 /* read gzip/zstd files decompressed (else skip them) */
    tail_rt *rt;                    /* runtime state, made by init */
} tail_ctx;

struct tail_rt {
    spool_instance *ins;
    tail_ctx *ctx;
    tail_split_conf split; /* from the options */
    pcre2_code *ml_re;
    pcre2_match_data *ml_md;
    int wake_fd;       /* eventfd: stop() wakes poll() */
    tail_watch *watch; /* NULL in poll mode */
    tail_file **files; /* tracked files */
    size_t nfiles, cap_files;
    int nopen;     /* files with an fd */
    uint8_t *rbuf; /* read buffer, read_buffer bytes */
    size_t rbuf_cap;
    size_t rbuf_mem;     /* bytes of rbuf counted in the memory account */
    spool_batch *batch;  /* being filled, NULL if none */
    int batch_pos;       /* the batch carries positions to set/forget */
    tail_file **touched; /* files whose position goes with the batch */
    size_t ntouched, cap_touched;
    int64_t now_ms;      /* monotonic, per cycle */
    int64_t now_wall_ms; /* record timestamps, per read */
    int need_rescan;
    int rdir_ok;                  /* rdir_* hold a directory of this scan (tail_scan.c) */
    char rdir_key[PATH_MAX];      /* the directory as the globs spell it */
    char rdir_real[PATH_MAX];     /* its realpath */
    int check_all;                /* stat every file at the next cycle */
    int more;                     /* a file has unread data (read budget): don't sleep */
    int initial;                  /* the first scan after start is running */
    int first_start;              /* no positions existed: read_from applies */
    struct tail_restore *restore; /* positions read at start, by source */
    size_t nrestore;
    int had_marker;          /* TAIL_MARKER_SOURCE was among them */
    int marker_sent;         /* this run put the marker on a batch */
    tail_map by_id;          /* (dev, ino) -> file */
    tail_map by_real;        /* realpath -> file (events) */
    int index_stale;         /* files changed since the maps were built */
    int watch_warned;        /* "cannot watch" was logged */
    int watch_degraded;      /* a watch failed: rescan on poll_interval */
    struct tail_move *moves; /* renames of matched files awaiting their MOVED_TO */
    size_t nmoves;
    char **moved;       /* where matched files were renamed to (to adopt) */
    char **moved_shown; /* the matched path each of them had */
    size_t nmoved;
    spool_counter *c_long, *c_rot, *c_trunc, *c_open;
    uint64_t rotations, truncations;
};

/* tail_file.c */
tail_file *tail_file_new(tail_rt *rt, const char *path, const char *real, const struct stat *st);
/* Closes (if open) and frees. forget: finished for good (its position is
 * forgotten in the current batch, its copies continue); 0: the input stops. */
void tail_file_free(tail_rt *rt, tail_file *f, int forget);
int tail_file_open(tail_rt *rt, tail_file *f);
void tail_file_close(tail_rt *rt, tail_file *f);
/* Reads up to budget bytes; returns 1 if more data may remain, 0 at EOF,
 * -ESHUTDOWN if the pipeline stopped. */
int tail_file_read(tail_rt *rt, tail_file *f, size_t budget);
/* Emits everything f holds: its incomplete line and pending record. */
int tail_file_finish(tail_rt *rt, tail_file *f);
/* Emits timed-out partial lines and multiline records. */
int tail_file_timers(tail_rt *rt, tail_file *f);
/* Earliest monotonic ms a timer of f fires, or INT64_MAX. */
int64_t tail_file_next_timer(const tail_rt *rt, const tail_file *f);
/* ms the loop lets inotify events gather after an idle wakeup, n files
 * followed: 10, plus 1 per 100 files, at most 100 (tail.c). */
int tail_coalesce_ms(size_t n);
/* Marks f's position to go with the current batch. -ENOMEM. */
int tail_file_touch(tail_rt *rt, tail_file *f);
/* A truncation was seen (trunc_pending): restarts f at 0 now (after the
 * scan linked its copies). 0 or -errno. */
int tail_file_restart_pending(tail_rt *rt, tail_file *f);
/* Brings f's bk_* to its emit_off (pread if needed). */
void tail_file_update_back(tail_file *f);
/* A new file read from 0 (copy_check) and not empty: if its beginning and
 * the bytes before a followed file's position are that file's (a copy,
 * copytruncate), it is held (copy_of) until that file is truncated, then
 * continued from its position. 1 if linked, 0 if not, -1 if not known yet
 * (a compressed file still being written: copy_check stays set). */
int tail_file_check_copy(tail_rt *rt, tail_file *f);
/* 1 if the file starts with the magic bytes of gzip, bzip2, xz or zstd. */
int tail_compressed_fd(int fd);
/* 1 if f must wait for f->after to be read first (clears a stale `after`). */
int tail_file_must_wait(tail_rt *rt, tail_file *f);

/* tail_scan.c */
/* Reads the stored positions (before the first scan). 0 or -errno. */
int tail_scan_restore(tail_rt *rt);
/* After the first scan: finish rotated files named by positions, forget the rest. */
void tail_scan_restore_leftovers(tail_rt *rt);
void tail_scan_restore_free(tail_rt *rt);
/* Expands the globs, follows new files, detects rotation, rebuilds watches. */
void tail_scan(tail_rt *rt);
/* The file whose realpath is `real`, or NULL. */
tail_file *tail_scan_by_real(tail_rt *rt, const char *real);
void tail_scan_index(tail_rt *rt);
void tail_scan_maps_free(tail_rt *rt);
/* inotify renames: a matched file renamed away before any scan saw it (two
 * rotations between scans) is adopted as rotated, so its lines are read. */
void tail_scan_moved_from(tail_rt *rt, const char *path, uint32_t cookie);
void tail_scan_moved_to(tail_rt *rt, const char *path, uint32_t cookie);
void tail_scan_adopt_moved(tail_rt *rt);
void tail_scan_moves_free(tail_rt *rt);

/* tail.c: the current batch */
int tail_batch_get(tail_rt *rt);
/* Submits the current batch with positions. 0, -ESHUTDOWN. */
int tail_batch_submit(tail_rt *rt);
/* Forgets a source in the current batch. */
int tail_batch_forget(tail_rt *rt, const char *source);

#endif /* SPOOL_TAIL_H */
