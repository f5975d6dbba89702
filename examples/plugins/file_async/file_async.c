/*
 * file_async.c: an example asynchronous output plugin, built out of tree
 * against the installed spool/spool.h (see CMakeLists.txt and
 * docs/plugins.md).
 *
 * It appends every record as one JSON line (topic, partition, offset,
 * timestamp, key, value, headers) to the file `path`. flush() does not
 * write: it queues the chunk and returns SPOOL_PENDING; a worker thread of
 * the plugin writes the queued chunks in the order flush received them and
 * answers each with spool_output_complete(). With the output's
 * max_in_flight above 1, the runner hands over the next chunks while the
 * worker writes.
 *
 * Invariants: a chunk (and its records) stays valid from flush until this
 * plugin completes it, and not a moment longer: the worker reads nothing of
 * a chunk after completing it. Each chunk is completed exactly once, or not
 * at all when the plugin is stopped first (then its records stay in the log
 * and are delivered again after the next start). A chunk is appended whole
 * or not at all: a failed write is cut off again (ftruncate) and the chunk
 * answered SPOOL_RETRY, so a retry does not leave half a chunk behind.
 *
 * Threads: check, init, start, stop and destroy run on spool's main thread;
 * flush and drain on the output's runner thread; the worker is this
 * plugin's own thread, started in start and joined in destroy. `lock`
 * guards the queue and the flags.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <spool/spool.h>

typedef struct pending {
    const spool_chunk *chunk; /* the pointer flush received: spool_output_complete needs it */
    struct pending *next;
} pending;

typedef struct file_async_ctx {
    /* Options: filled by the core from the table below, freed by it after destroy. */
    char *path;
    int fsync;
    /* The plugin's own state. */
    spool_instance *ins; /* for the worker's spool_output_complete calls */
    int fd;              /* -1 until init opened it */
    int sync_ready;      /* lock and conds initialised */
    int worker_started;
    pthread_t worker;
    pthread_mutex_t lock;
    pthread_cond_t work;  /* a chunk was queued, or stop */
    pthread_cond_t idle;  /* the queue ran empty */
    pending *head, *tail; /* under lock */
    size_t queued;        /* under lock: queued or being written */
    int stop;             /* under lock */
    /* Worker thread only. */
    char *buf;
    size_t len, cap;
    int failing;            /* the last write failed (log once per streak) */
    spool_counter *depth;   /* gauge: chunks queued or being written */
    spool_counter *written; /* counter: chunks written */
} file_async_ctx;

static const spool_option file_async_options[] = {
    SPOOL_OPT_STR("path", file_async_ctx, path, NULL, 1, "file the JSON lines are appended to"),
    SPOOL_OPT_FLAG("fsync", file_async_ctx, fsync, "false",
                   "fdatasync the file before answering each chunk"),
    SPOOL_OPT_END,
};

/* ---- writing (worker thread) ---- */

static int grow(file_async_ctx *ctx, size_t more)
{
    if (ctx->len + more <= ctx->cap) {
        return 0;
    }
    size_t cap = ctx->cap ? ctx->cap : 4096;
    while (cap < ctx->len + more) {
        cap *= 2;
    }
    char *p = realloc(ctx->buf, cap);
    if (!p) {
        return -ENOMEM;
    }
    ctx->buf = p;
    ctx->cap = cap;
    return 0;
}

static int put(file_async_ctx *ctx, const char *s, size_t n)
{
    if (grow(ctx, n) < 0) {
        return -ENOMEM;
    }
    memcpy(ctx->buf + ctx->len, s, n);
    ctx->len += n;
    return 0;
}

/* Appends "text" (quoted, JSON-escaped with spool's escaper), or null. */
static int put_string(file_async_ctx *ctx, const void *p, int64_t n)
{
    if (n < 0 || !p) {
        return put(ctx, "null", 4);
    }
    if (put(ctx, "\"", 1) < 0) {
        return -ENOMEM;
    }
    size_t need = spool_json_escape(ctx->buf + ctx->len, ctx->cap - ctx->len, p, (size_t)n);
    if (need > ctx->cap - ctx->len) {
        if (grow(ctx, need) < 0) {
            return -ENOMEM;
        }
        spool_json_escape(ctx->buf + ctx->len, ctx->cap - ctx->len, p, (size_t)n);
    }
    ctx->len += need;
    return put(ctx, "\"", 1);
}

static int format_record(file_async_ctx *ctx, const spool_chunk *c, const spool_record *r)
{
    char num[160];
    int n = snprintf(num, sizeof(num),
                     "{\"partition\":%" PRId32 ",\"offset\":%" PRId64 ",\"timestamp\":%" PRId64
                     ",\"topic\":",
                     c->partition, r->offset, r->timestamp);
    int rc = put(ctx, num, (size_t)n);
    rc = rc ? rc : put_string(ctx, c->topic, (int64_t)strlen(c->topic));
    rc = rc ? rc : put(ctx, ",\"key\":", 7);
    rc = rc ? rc : put_string(ctx, r->key, r->key_len);
    rc = rc ? rc : put(ctx, ",\"value\":", 9);
    rc = rc ? rc : put_string(ctx, r->value, r->value_len);
    rc = rc ? rc : put(ctx, ",\"headers\":[", 12);
    for (uint32_t i = 0; i < r->header_count && rc == 0; i++) {
        const spool_header *h = &r->headers[i];
        rc = put(ctx, i ? ",[" : "[", i ? 2 : 1);
        rc = rc ? rc : put_string(ctx, h->key, h->key_len);
        rc = rc ? rc : put(ctx, ",", 1);
        rc = rc ? rc : put_string(ctx, h->value, h->value_len);
        rc = rc ? rc : put(ctx, "]", 1);
    }
    return rc ? rc : put(ctx, "]}\n", 3);
}

/* Writes one chunk whole; SPOOL_OK or SPOOL_RETRY. */
static int write_chunk(file_async_ctx *ctx, const spool_chunk *c)
{
    const char *what = "formatting";
    int err = 0;
    ctx->len = 0;
    for (size_t i = 0; i < c->count; i++) {
        if ((err = format_record(ctx, c, &c->records[i])) < 0) {
            goto fail;
        }
    }
    what = "writing";
    off_t start = lseek(ctx->fd, 0, SEEK_END);
    size_t done = 0;
    while (done < ctx->len) {
        ssize_t w = write(ctx->fd, ctx->buf + done, ctx->len - done);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            err = w < 0 ? -errno : -EIO;
            if (start >= 0 && ftruncate(ctx->fd, start) < 0) {
                /* The partial chunk stays; the retry appends it again whole. */
            }
            goto fail;
        }
        done += (size_t)w;
    }
    if (ctx->fsync && fdatasync(ctx->fd) < 0) {
        what = "syncing";
        err = -errno;
        goto fail;
    }
    if (ctx->failing) {
        spool_log_info(ctx->ins, "writing %s works again", ctx->path);
        ctx->failing = 0;
    }
    spool_counter_add(ctx->written, 1);
    return SPOOL_OK;
fail:
    if (!ctx->failing) {
        spool_log_warn(ctx->ins, "%s %s: %s; the chunk is retried", what, ctx->path,
                       strerror(-err));
        ctx->failing = 1;
    }
    spool_count(ctx->ins, SPOOL_COUNT_ERRORS, 1);
    return SPOOL_RETRY;
}

static void *worker_main(void *arg)
{
    file_async_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        while (!ctx->stop && !ctx->head) {
            pthread_cond_wait(&ctx->work, &ctx->lock);
        }
        if (ctx->stop) {
            break; /* what is still queued stays uncompleted: destroy frees it */
        }
        pending *p = ctx->head;
        ctx->head = p->next;
        if (!ctx->head) {
            ctx->tail = NULL;
        }
        pthread_mutex_unlock(&ctx->lock);

        const spool_chunk *c = p->chunk;
        free(p);
        int result = write_chunk(ctx, c);
        /* The last use of c: the core may reuse it as soon as this returns. */
        spool_output_complete(ctx->ins, c, result, NULL);

        pthread_mutex_lock(&ctx->lock);
        ctx->queued--;
        spool_gauge_set(ctx->depth, (int64_t)ctx->queued);
        if (ctx->queued == 0) {
            pthread_cond_broadcast(&ctx->idle);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return NULL;
}

/* ---- callbacks ---- */

/* `spool check` and `spool run` (before init): the file's directory must
 * exist. No side effects: nothing is created or opened for writing. */
static int file_async_check(spool_instance *ins, void *vctx)
{
    file_async_ctx *ctx = vctx;
    char dir[4096];
    if (!ctx->path || !ctx->path[0]) {
        spool_config_error(ins, "path", "must name a file");
        return -EINVAL;
    }
    snprintf(dir, sizeof(dir), "%s", ctx->path);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        return 0; /* relative to the working directory */
    }
    if (slash == dir) {
        slash[1] = '\0'; /* "/file" */
    } else {
        *slash = '\0';
    }
    return spool_check_directory(ins, "path", dir);
}

static int file_async_init(spool_instance *ins, void *vctx)
{
    file_async_ctx *ctx = vctx;
    ctx->ins = ins;
    ctx->fd = -1;
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_cond_init(&ctx->work, NULL);
    pthread_cond_init(&ctx->idle, NULL);
    ctx->sync_ready = 1;
    ctx->fd = open(ctx->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (ctx->fd < 0) {
        int err = errno;
        spool_log_error(ins, "cannot open %s: %s", ctx->path, strerror(err));
        return -err;
    }
    ctx->depth = spool_gauge_register(ins, "queued", "Chunks queued or being written");
    ctx->written = spool_counter_register(ins, "chunks_written", "Chunks appended to the file");
    return ctx->depth && ctx->written ? 0 : -ENOMEM;
}

static int file_async_start(spool_instance *ins, void *vctx)
{
    file_async_ctx *ctx = vctx;
    int rc = pthread_create(&ctx->worker, NULL, worker_main, ctx);
    if (rc != 0) {
        return -rc;
    }
    ctx->worker_started = 1;
    return 0;
}

static int file_async_flush(spool_instance *ins, void *vctx, const spool_chunk *chunk)
{
    file_async_ctx *ctx = vctx;
    pending *p = malloc(sizeof(*p));
    if (!p) {
        return SPOOL_RETRY;
    }
    p->chunk = chunk;
    p->next = NULL;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->stop) {
        pthread_mutex_unlock(&ctx->lock);
        free(p);
        return SPOOL_RETRY;
    }
    if (ctx->tail) {
        ctx->tail->next = p;
    } else {
        ctx->head = p;
    }
    ctx->tail = p;
    ctx->queued++;
    spool_gauge_set(ctx->depth, (int64_t)ctx->queued);
    pthread_cond_signal(&ctx->work);
    pthread_mutex_unlock(&ctx->lock);
    return SPOOL_PENDING; /* the worker calls spool_output_complete */
}

/* Shutdown: give the worker until timeout_ms to finish what is queued. */
static void file_async_drain(spool_instance *ins, void *vctx, int64_t timeout_ms)
{
    file_async_ctx *ctx = vctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ctx->lock);
    while (ctx->queued > 0 && !ctx->stop) {
        if (pthread_cond_timedwait(&ctx->idle, &ctx->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
}

/* Must not block: tells the worker to finish the chunk it writes and end. */
static void file_async_stop(spool_instance *ins, void *vctx)
{
    file_async_ctx *ctx = vctx;
    if (!ctx->sync_ready) {
        return;
    }
    pthread_mutex_lock(&ctx->lock);
    ctx->stop = 1;
    pthread_cond_broadcast(&ctx->work);
    pthread_cond_broadcast(&ctx->idle);
    pthread_mutex_unlock(&ctx->lock);
}

/* After every other callback; also right after a failed init. */
static void file_async_destroy(spool_instance *ins, void *vctx)
{
    file_async_ctx *ctx = vctx;
    if (ctx->worker_started) {
        file_async_stop(ins, vctx);
        pthread_join(ctx->worker, NULL);
        ctx->worker_started = 0;
    }
    while (ctx->head) { /* never completed: their records are still in the log */
        pending *p = ctx->head;
        ctx->head = p->next;
        free(p);
    }
    ctx->tail = NULL;
    if (ctx->fd >= 0) {
        close(ctx->fd);
        ctx->fd = -1;
    }
    free(ctx->buf);
    ctx->buf = NULL;
    if (ctx->sync_ready) {
        pthread_cond_destroy(&ctx->idle);
        pthread_cond_destroy(&ctx->work);
        pthread_mutex_destroy(&ctx->lock);
        ctx->sync_ready = 0;
    }
    /* path is an option: the core frees it after destroy; so are the counters. */
}

static const spool_plugin file_async_plugin = {
    SPOOL_PLUGIN_ABI, /* abi_version, struct_size, abi_signature */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "file_async",
    .description = "example: JSON lines written to a file by a worker thread",
    .options = file_async_options,
    .context_size = sizeof(file_async_ctx),
    .check = file_async_check,
    .init = file_async_init,
    .start = file_async_start,
    .flush = file_async_flush,
    .drain = file_async_drain,
    .stop = file_async_stop,
    .destroy = file_async_destroy,
};

const spool_plugin *spool_plugin_register(void)
{
    return &file_async_plugin;
}
