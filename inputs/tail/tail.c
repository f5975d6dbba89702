/*
 * tail.c: the `tail` input: follows files through rotation, truncation and
 * restarts, and turns their lines into records.
 *
 * One thread per input (run()): poll() on the inotify fd and an eventfd
 * that stop() writes, with a timeout from the nearest timer (incomplete
 * line, multiline record, rotated file's rotate_wait, rescan); no timer is
 * shorter than what the options ask, so an idle input sleeps. Each cycle:
 * handle events (rescan if entries changed, mark written files dirty), read
 * rotated files and continued copies first (a rotated file's tail precedes
 * its successor's head), then dirty files, each up to a budget so one busy
 * file does not starve the others (a successor whose predecessor still has
 * unread bytes waits a cycle), fire timers, and submit the batch.
 *
 * Batches: one batch accumulates records of every file; it is submitted at
 * TAIL_BATCH_BYTES / TAIL_BATCH_RECORDS (256 KiB / 4096) and at the end of
 * every cycle, with the position of every file that has records in it.
 * spool_input_submit blocks while the pipeline is full (backpressure):
 * reading simply pauses, the data waits in the files.
 *
 * Not done here: the core renders the `key` template from the headers this
 * input sets (host, path, input); `file` is the basename of `path`.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tail.h"

#define TAIL_READ_BUDGET_BLOCKS 16  /* read_buffer blocks per file per cycle */
#define TAIL_ROTATED_RECHECK_MS 200 /* re-read rotated files this often while they last */
#define TAIL_COALESCE_MS 10         /* gather inotify events this long after an idle wakeup */
#define TAIL_COALESCE_FILES 100     /* ... plus 1 ms per this many followed files */
#define TAIL_COALESCE_MAX_MS 100

static const char *const read_from_values[] = {"beginning", "end", NULL};
static const char *const watcher_values[] = {"inotify", "poll", NULL};
static const char *const long_values[] = {"split", "truncate", NULL};

static const spool_option tail_options[] = {
    SPOOL_OPT_STRLIST("paths", tail_ctx, paths, 1,
                      "absolute glob patterns of files to follow (*, ?, [..], ** for subdirs)"),
    SPOOL_OPT_STRLIST("exclude", tail_ctx, exclude, 0,
                      "globs of files to skip (without '/': matched against the file name)"),
    SPOOL_OPT_CHOICE("read_from", tail_ctx, read_from, "end", read_from_values,
                     "where files found at the very first start begin (later ones: beginning)"),
    SPOOL_OPT_CHOICE("watcher", tail_ctx, watcher, "inotify", watcher_values,
                     "inotify, or poll for filesystems where inotify does not fire (NFS)"),
    SPOOL_OPT_TIME("poll_interval", tail_ctx, poll_interval_ms, "1s", 10, 3600000,
                   "poll watcher: how often files are checked for growth and rotation"),
    SPOOL_OPT_TIME("rescan_interval", tail_ctx, rescan_interval_ms, "10s", 100, 86400000,
                   "inotify watcher: safety rescan of the globs and file sizes"),
    SPOOL_OPT_BYTES("read_buffer", tail_ctx, read_buffer, "128KiB", 4096, 64 << 20,
                    "bytes per read() call"),
    SPOOL_OPT_FLAG("strip_cr", tail_ctx, strip_cr, "false", "drop a '\\r' before each '\\n'"),
    SPOOL_OPT_TIME("flush_partial_after", tail_ctx, flush_partial_after_ms, "5s", 1, 86400000,
                   "emit a last line without its newline after this long"),
    SPOOL_OPT_BYTES("max_line_bytes", tail_ctx, max_line_bytes, "64KiB", 1, 256 << 20,
                    "longest record; longer lines are split or truncated (long_lines)"),
    SPOOL_OPT_CHOICE("long_lines", tail_ctx, long_lines, "split", long_values,
                     "what happens to a line longer than max_line_bytes"),
    SPOOL_OPT_STR("multiline.start", tail_ctx, ml_start, NULL, 0,
                  "PCRE2 pattern of a line that starts a record; other lines are appended"),
    SPOOL_OPT_INTEGER("multiline.max_lines", tail_ctx, ml_max_lines, "500", 1, 1000000,
                      "emit a multiline record after this many lines"),
    SPOOL_OPT_TIME("multiline.timeout", tail_ctx, ml_timeout_ms, "2s", 1, 3600000,
                   "emit a pending multiline record when no line came for this long"),
    SPOOL_OPT_INTEGER("max_open_files", tail_ctx, max_open_files, "1024", 1, 1000000,
                      "file descriptors held at most; idle files are closed first"),
    SPOOL_OPT_TIME("close_inactive", tail_ctx, close_inactive_ms, "5m", 1, 86400000LL * 365,
                   "close a file that did not grow for this long (reopened when it grows)"),
    SPOOL_OPT_TIME("rotate_wait", tail_ctx, rotate_wait_ms, "5s", 0, 3600000,
                   "keep reading a renamed-away file until it stopped growing this long"),
    SPOOL_OPT_FLAG("decompress", tail_ctx, decompress, "false",
                   "read gzip and zstd files (by their magic bytes) decompressed; else skip "
                   "compressed files"),
    SPOOL_OPT_END,
};

/* ---- the batch ---- */

int tail_batch_get(tail_rt *rt)
{
    if (!rt->batch && !(rt->batch = spool_batch_create(rt->ins))) {
        return -ENOMEM;
    }
    return 0;
}

int tail_batch_forget(tail_rt *rt, const char *source)
{
    int r = tail_batch_get(rt);
    if (r == 0) {
        r = spool_batch_set_position(rt->batch, source, NULL, 0);
    }
    if (r == 0) {
        rt->batch_pos = 1;
    }
    return r;
}

static int batch_set_positions(tail_rt *rt)
{
    uint8_t blob[TAIL_POS_BLOB_MAX];
    tail_pos pos;
    int r = 0;
    for (size_t i = 0; i < rt->ntouched && r == 0; i++) {
        tail_file *f = rt->touched[i];
        memset(&pos, 0, offsetof(tail_pos, path));
        pos.dev = f->dev;
        pos.ino = f->ino;
        pos.offset = f->sp.emit_off;
        pos.fp_hash = f->fp_hash;
        pos.fp_len = f->fp_len;
        if (!f->trunc_pending) {
            tail_file_update_back(f);
        }
        if (f->bk_off == f->sp.emit_off) {
            pos.bk_hash = f->bk_hash;
            pos.bk_len = f->bk_len;
        }
        snprintf(pos.path, sizeof(pos.path), "%s", f->path);
        size_t len = tail_pos_encode(&pos, blob);
        r = spool_batch_set_position(rt->batch, f->source, blob, len);
    }
    if (r == 0 && !rt->marker_sent) {
        r = spool_batch_set_position(rt->batch, TAIL_MARKER_SOURCE, "1", 1);
    }
    return r;
}

int tail_batch_submit(tail_rt *rt)
{
    if (rt->batch ? spool_batch_count(rt->batch) == 0 && rt->ntouched == 0 && !rt->batch_pos
                  : rt->ntouched == 0) {
        return 0;
    }
    int r = tail_batch_get(rt); /* positions alone (a new empty file) go too */
    if (r == 0) {
        r = batch_set_positions(rt);
    }
    if (r < 0) {
        return r;
    }
    for (;;) {
        r = spool_input_submit(rt->ins, rt->batch, 1000);
        if (r == 0) {
            break;
        }
        if (r == -EAGAIN && !spool_instance_stopping(rt->ins)) {
            continue; /* backpressure: keep waiting, the data waits in the files */
        }
        return r == -EAGAIN ? -ESHUTDOWN : r;
    }
    rt->batch = NULL;
    rt->batch_pos = 0;
    rt->marker_sent = 1;
    for (size_t i = 0; i < rt->ntouched; i++) {
        rt->touched[i]->in_batch = 0;
    }
    rt->ntouched = 0;
    return 0;
}

/* ---- the loop ---- */

static void on_watch(void *arg, int what, const char *path, uint32_t cookie)
{
    tail_rt *rt = arg;
    if (what == TAIL_WATCH_MOVED_FROM) {
        tail_scan_moved_from(rt, path, cookie);
        return;
    }
    if (what == TAIL_WATCH_MOVED_TO) {
        tail_scan_moved_to(rt, path, cookie);
        return;
    }
    if (what == TAIL_WATCH_MODIFIED) {
        tail_file *f = tail_scan_by_real(rt, path);
        if (f) {
            f->dirty = 1;
        }
        return;
    }
    rt->need_rescan = 1;
    if (what == TAIL_WATCH_OVERFLOW) {
        rt->check_all = 1;
    }
}

/* Marks files whose size differs from what was read (poll mode, safety). */
static void check_sizes(tail_rt *rt)
{
    struct stat st;
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        int ok = f->fd >= 0 ? fstat(f->fd, &st) == 0 : stat(f->path, &st) == 0;
        if (ok && st.st_size != f->read_off) {
            f->dirty = 1;
        }
    }
}

/* Finishes rotated files that are done: deleted, or quiet for rotate_wait. */
static int finish_rotated(tail_rt *rt)
{
    for (size_t i = 0; i < rt->nfiles;) {
        tail_file *f = rt->files[i];
        if (f->state != TAIL_ROTATED || (f->fd >= 0 && !f->eof)) {
            i++;
            continue;
        }
        /* Renamed or deleted alike: a writer may still append to it until it
         * reopens its path, so it is finished only once quiet for rotate_wait
         * (a deleted file's space is not held longer than its writer holds it). */
        if (f->fd >= 0 && rt->now_ms - f->last_grow_ms < rt->ctx->rotate_wait_ms) {
            i++;
            continue;
        }
        int r = tail_file_finish(rt, f);
        if (r < 0) {
            return r;
        }
        spool_log_info(rt->ins, "%s: finished at offset %" PRId64 ", closed (%s)", f->path,
                       f->read_off, f->source);
        tail_file_free(rt, f, 1);
        rt->index_stale = 1;
    }
    return 0;
}

static void close_inactive(tail_rt *rt)
{
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        if (f->fd >= 0 && f->state == TAIL_ACTIVE && f->eof && !f->sp.carry_since_ms &&
            !f->sp.rec_lines && rt->now_ms - f->last_grow_ms >= rt->ctx->close_inactive_ms) {
            spool_log_debug(rt->ins, "%s: inactive, closing", f->path);
            tail_file_close(rt, f);
        }
    }
}

/* Takes in pending inotify events between two files of a long read cycle,
 * so a busy backlog does not delay noticing rotations (a file created and
 * rotated away before any scan saw it would need the rename chain). */
static void events_now(tail_rt *rt)
{
    if (!rt->watch) {
        return;
    }
    struct pollfd p = {.fd = tail_watch_fd(rt->watch), .events = POLLIN};
    if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
        tail_watch_read(rt->watch, on_watch, rt);
        tail_scan_adopt_moved(rt);
    }
    if (rt->need_rescan) {
        rt->need_rescan = 0;
        tail_scan(rt);
    }
}

/* Reads what the files have. Returns 0 or -ESHUTDOWN. */
static int read_cycle(tail_rt *rt)
{
    size_t budget = (size_t)rt->ctx->read_buffer * TAIL_READ_BUDGET_BLOCKS;
    int r;
    rt->more = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < rt->nfiles; i++) {
            tail_file *f = rt->files[i];
            int rotated = f->state == TAIL_ROTATED;
            /* First the files whose lines precede others': rotated ones, and
             * copies continued from their original's position. */
            if (pass == 0 ? !(rotated && f->fd >= 0) && !(f->prio && f->dirty)
                          : rotated || f->prio || !f->dirty) {
                continue;
            }
            f->dirty = 0;
            int64_t before = f->read_off;
            r = tail_file_read(rt, f, budget);
            if (r < 0) {
                return r;
            }
            if (r > 0) {
                f->dirty = 1;
                rt->more = 1;
            }
            if (f->read_off - before > (int64_t)rt->ctx->read_buffer) {
                events_now(rt);
            }
        }
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        if ((f->sp.carry_since_ms || f->sp.rec_lines) && (r = tail_file_timers(rt, f)) < 0) {
            return r;
        }
    }
    return finish_rotated(rt);
}

static int64_t next_wakeup(tail_rt *rt, int64_t next_scan)
{
    if (rt->more || rt->need_rescan || rt->check_all) {
        return 0;
    }
    int64_t t = next_scan;
    for (size_t i = 0; i < rt->nfiles; i++) {
        const tail_file *f = rt->files[i];
        int64_t d = tail_file_next_timer(rt, f);
        if (f->state == TAIL_ROTATED) {
            /* Late writes to a rotated file may come without an event. */
            d = d < rt->now_ms + TAIL_ROTATED_RECHECK_MS ? d : rt->now_ms + TAIL_ROTATED_RECHECK_MS;
        } else if (f->fd >= 0) {
            int64_t c = f->last_grow_ms + rt->ctx->close_inactive_ms;
            d = c < d ? c : d;
        }
        t = d < t ? d : t;
    }
    int64_t ms = t - rt->now_ms;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : ms;
}

/* How long events gather after an idle wakeup, for n followed files. */
int tail_coalesce_ms(size_t n)
{
    size_t ms = TAIL_COALESCE_MS + n / TAIL_COALESCE_FILES;
    return (int)(ms < TAIL_COALESCE_MAX_MS ? ms : TAIL_COALESCE_MAX_MS);
}

static int scan_interval(const tail_rt *rt)
{
    return (int)(rt->watch && !rt->watch_degraded ? rt->ctx->rescan_interval_ms
                                                  : rt->ctx->poll_interval_ms);
}

static int tail_run(spool_instance *ins, void *vctx)
{
    tail_ctx *ctx = vctx;
    tail_rt *rt = ctx->rt;
    int r;
    rt->now_ms = spool_monotonic_ms();
    if ((r = tail_scan_restore(rt)) < 0) {
        spool_log_error(ins, "cannot read positions: %s", strerror(-r));
        return r;
    }
    rt->initial = 1;
    tail_scan(rt);
    rt->initial = 0;
    tail_scan_restore_leftovers(rt);
    spool_log_info(ins, "following %zu files (%s)", rt->nfiles,
                   rt->first_start ? "first start" : "resuming from stored positions");
    /* The positions of what the first scan found (and forgot) go first, on
     * their own, so they are durable before the first backlog is read. */
    if ((r = tail_batch_submit(rt)) < 0) {
        return r == -ESHUTDOWN ? 0 : r;
    }
    int64_t next_scan = rt->now_ms + scan_interval(rt);
    r = 0;
    while (!spool_instance_stopping(ins)) {
        rt->now_ms = spool_monotonic_ms();
        if ((r = read_cycle(rt)) < 0 || (r = tail_batch_submit(rt)) < 0) {
            break;
        }
        struct pollfd pfd[2] = {{.fd = rt->wake_fd, .events = POLLIN}, {.fd = -1}};
        int nfd = 1;
        if (rt->watch) {
            pfd[1].fd = tail_watch_fd(rt->watch);
            pfd[1].events = POLLIN;
            nfd = 2;
        }
        int64_t timeout = next_wakeup(rt, next_scan);
        if (poll(pfd, (nfds_t)nfd, (int)timeout) < 0 && errno != EINTR) {
            r = -errno;
            spool_log_error(ins, "poll failed: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(rt->wake_fd, &v, sizeof(v)) < 0) {
                /* nothing: the eventfd is non-blocking */
            }
        }
        if (nfd == 2 && (pfd[1].revents & POLLIN)) {
            if (timeout > 0) {
                /* Woken from sleep by a write: let more events gather for a
                 * moment, so 1,000 files written one line each cost a few
                 * cycles, not 1,000. A cycle costs O(files) (it walks every
                 * file, the commit stores every position), so the moment
                 * grows with the files: 10,000 files, 10 of them written
                 * continuously, cost 10 cycles a second, not 100. */
                struct pollfd w = {.fd = rt->wake_fd, .events = POLLIN};
                poll(&w, 1, tail_coalesce_ms(rt->nfiles));
            }
            tail_watch_read(rt->watch, on_watch, rt);
            tail_scan_adopt_moved(rt);
        }
        rt->now_ms = spool_monotonic_ms();
        if (rt->now_ms >= next_scan) {
            rt->need_rescan = 1;
            rt->check_all = 1;
            next_scan = rt->now_ms + scan_interval(rt);
        }
        close_inactive(rt);
        if (rt->need_rescan) {
            rt->need_rescan = 0;
            tail_scan(rt);
        }
        if (rt->check_all) {
            rt->check_all = 0;
            check_sizes(rt);
        }
    }
    /* Stopping: hand over what was read; if the pipeline is gone, the data
     * is still in the files and the stored positions do not cover it. */
    if (r == 0 && rt->batch && batch_set_positions(rt) == 0 &&
        spool_input_submit(ins, rt->batch, 1000) == 0) {
        rt->batch = NULL;
    }
    return r == -ESHUTDOWN ? 0 : r;
}

/* ---- callbacks ---- */

static int compile_multiline(tail_ctx *ctx, pcre2_code **re, const char **errmsg, char *buf,
                             size_t cap)
{
    int code;
    PCRE2_SIZE erroff;
    *re = pcre2_compile((PCRE2_SPTR)ctx->ml_start, PCRE2_ZERO_TERMINATED, 0, &code, &erroff, NULL);
    if (!*re) {
        pcre2_get_error_message(code, (PCRE2_UCHAR *)buf, cap);
        *errmsg = buf;
        return -EINVAL;
    }
    return 0;
}

static int tail_check(spool_instance *ins, void *vctx)
{
    tail_ctx *ctx = vctx;
    int bad = 0;
    for (size_t i = 0; i < ctx->paths.count; i++) {
        if (ctx->paths.items[i][0] != '/') {
            spool_config_error(ins, "paths", "'%s' is not an absolute path", ctx->paths.items[i]);
            bad = 1;
        }
    }
    if (ctx->paths.count == 0) {
        spool_config_error(ins, "paths", "at least one path is needed");
        bad = 1;
    }
    if (ctx->ml_start) {
        pcre2_code *re = NULL;
        const char *msg = NULL;
        char buf[256];
        if (compile_multiline(ctx, &re, &msg, buf, sizeof(buf)) < 0) {
            spool_config_error(ins, "multiline.start", "invalid pattern: %s", msg);
            bad = 1;
        }
        pcre2_code_free(re);
    }
    return bad ? -EINVAL : 0;
}

static int tail_init(spool_instance *ins, void *vctx)
{
    tail_ctx *ctx = vctx;
    int r = tail_check(ins, vctx);
    if (r < 0) {
        return r;
    }
    tail_rt *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        return -ENOMEM;
    }
    ctx->rt = rt;
    rt->ins = ins;
    rt->ctx = ctx;
    rt->wake_fd = -1;
    rt->split.strip_cr = ctx->strip_cr;
    rt->split.max_line = (size_t)ctx->max_line_bytes;
    rt->split.truncate = ctx->long_lines == TAIL_LONG_TRUNCATE;
    rt->split.ml_max_lines = (uint32_t)ctx->ml_max_lines;
    if (ctx->ml_start) {
        const char *msg;
        char buf[256];
        if ((r = compile_multiline(ctx, &rt->ml_re, &msg, buf, sizeof(buf))) < 0) {
            return r;
        }
        pcre2_jit_compile(rt->ml_re, PCRE2_JIT_COMPLETE); /* faster if available */
        rt->ml_md = pcre2_match_data_create_from_pattern(rt->ml_re, NULL);
        if (!rt->ml_md) {
            return -ENOMEM;
        }
        rt->split.ml_start = rt->ml_re;
        rt->split.ml_md = rt->ml_md;
    }
    rt->rbuf_cap = (size_t)ctx->read_buffer;
    rt->rbuf = malloc(rt->rbuf_cap);
    if (!rt->rbuf) {
        return -ENOMEM;
    }
    spool_memory_adjust(&rt->rbuf_mem, rt->rbuf_cap); /* memory_limit (docs/memory.md) */
    rt->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->wake_fd < 0) {
        return -errno;
    }
    if (ctx->watcher == TAIL_WATCHER_INOTIFY) {
        int err = 0;
        rt->watch = tail_watch_create(&err);
        if (!rt->watch) {
            spool_log_warn(ins, "inotify unavailable (%s); polling every %" PRId64 " ms",
                           strerror(err), ctx->poll_interval_ms);
        }
    }
    rt->c_long = spool_counter_register(ins, "long_lines",
                                        "lines split or truncated at "
                                        "max_line_bytes");
    rt->c_rot = spool_counter_register(ins, "rotations",
                                       "files rotated away, replaced or "
                                       "deleted while followed");
    rt->c_trunc = spool_counter_register(ins, "truncations", "files truncated while followed");
    rt->c_open = spool_counter_register(ins, "open_files", "files held open");
    return 0;
}

static void tail_stop(spool_instance *ins, void *vctx)
{
    tail_ctx *ctx = vctx;
    if (ctx->rt && ctx->rt->wake_fd >= 0) {
        uint64_t one = 1;
        if (write(ctx->rt->wake_fd, &one, sizeof(one)) < 0) {
            /* the counter is already set: poll wakes anyway */
        }
    }
}

static void tail_destroy(spool_instance *ins, void *vctx)
{
    tail_ctx *ctx = vctx;
    tail_rt *rt = ctx->rt;
    if (!rt) {
        return;
    }
    while (rt->nfiles > 0) {
        tail_file_free(rt, rt->files[rt->nfiles - 1], 0);
    }
    free(rt->files);
    free(rt->touched);
    spool_batch_destroy(rt->batch);
    tail_scan_restore_free(rt);
    tail_scan_maps_free(rt);
    tail_scan_moves_free(rt);
    tail_watch_destroy(rt->watch);
    if (rt->wake_fd >= 0) {
        close(rt->wake_fd);
    }
    pcre2_match_data_free(rt->ml_md);
    pcre2_code_free(rt->ml_re);
    free(rt->rbuf);
    spool_memory_release(rt->rbuf_mem);
    free(rt);
    ctx->rt = NULL;
}

const spool_plugin spool_plugin_tail = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "tail",
    .description = "follow files through rotation, truncation and restarts",
    .options = tail_options,
    .context_size = sizeof(tail_ctx),
    .check = tail_check,
    .init = tail_init,
    .run = tail_run,
    .stop = tail_stop,
    .destroy = tail_destroy,
};
