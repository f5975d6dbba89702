/*
 * counter.c: an example input plugin, built out of tree against the
 * installed spool/spool.h (see Makefile and docs/plugins.md).
 *
 * It produces the records "<message> <seq>" for seq = 0, 1, 2, ... up to
 * `count` (0 = without end), `batch` records per batch, waiting `interval`
 * between batches. Each record carries the headers `seq`, `parity` ("even"
 * or "odd"), `host` and `input`.
 *
 * Invariant: the durable position of the source "seq" is the next seq to
 * produce. It is attached to every batch with spool_batch_set_position, so
 * the core records it atomically with that batch's records: after a
 * restart, even after kill -9, the input resumes exactly after the last
 * record that reached the log, and no seq is produced twice into the log
 * or skipped.
 *
 * Threads: init, start, stop and destroy run on spool's main thread; run
 * runs on a thread of its own. stop only sets a flag and wakes run.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spool/spool.h>

#define POSITION_SOURCE "seq"
#define SUBMIT_SLICE_MS 200 /* how long one submit may block before stop is looked at */

typedef struct counter_ctx {
    /* Options: filled by the core from the table below, freed by it after destroy. */
    int64_t count;    /* records in all, 0 = without end */
    int64_t batch;    /* records per batch */
    int64_t interval; /* ms between batches */
    char *message;    /* the value's text before the number */
    /* The plugin's own state. */
    int64_t next;   /* the next seq to produce; resumed from the durable position */
    int sync_ready; /* lock and wake were initialised (destroy accepts a half-built ctx) */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* signalled by stop */
    int stop;            /* under lock */
} counter_ctx;

static const spool_option counter_options[] = {
    SPOOL_OPT_INTEGER("count", counter_ctx, count, "0", 0, INT64_MAX / 2,
                      "records to produce in all, 0 = without end"),
    SPOOL_OPT_INTEGER("batch", counter_ctx, batch, "100", 1, 100000, "records per batch"),
    SPOOL_OPT_TIME("interval", counter_ctx, interval, "1s", 0, 3600000, "time between two batches"),
    SPOOL_OPT_STR("message", counter_ctx, message, "tick", 0, "text before the number"),
    SPOOL_OPT_END,
};

/* Reads the position the core stored for this input's source "seq". */
static int load_position(spool_instance *ins, counter_ctx *ctx)
{
    char buf[32];
    size_t len = 0;
    int rc = spool_input_get_position(ins, POSITION_SOURCE, buf, sizeof(buf) - 1, &len);
    if (rc == -ENOENT) {
        ctx->next = 0; /* first start */
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    if (len >= sizeof(buf)) {
        spool_log_error(ins, "stored position is %zu bytes, not a number", len);
        return -EINVAL;
    }
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end == buf || *end || v < 0) {
        spool_log_error(ins, "stored position \"%s\" is not a sequence number", buf);
        return -EINVAL;
    }
    ctx->next = v;
    return 0;
}

static int counter_init(spool_instance *ins, void *vctx)
{
    counter_ctx *ctx = vctx;
    int rc = load_position(ins, ctx);
    if (rc < 0) {
        return rc;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_cond_init(&ctx->wake, &ca);
    pthread_condattr_destroy(&ca);
    ctx->sync_ready = 1;
    if (ctx->next > 0) {
        spool_log_info(ins, "resuming at seq %" PRId64, ctx->next);
    }
    return 0;
}

/* Waits up to ms unless stop comes first. Returns 1 when stopping. */
static int pause_ms(counter_ctx *ctx, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ctx->lock);
    while (!ctx->stop) {
        if (pthread_cond_timedwait(&ctx->wake, &ctx->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    int stop = ctx->stop;
    pthread_mutex_unlock(&ctx->lock);
    return stop;
}

/* Appends records [ctx->next, ctx->next + n) to b with the position after them. */
static int fill_batch(spool_instance *ins, counter_ctx *ctx, spool_batch *b, int64_t n)
{
    const char *host = spool_hostname(), *name = spool_instance_name(ins);
    char seq[24], value[512], pos[24];
    for (int64_t i = 0; i < n; i++) {
        int64_t s = ctx->next + i;
        int slen = snprintf(seq, sizeof(seq), "%" PRId64, s);
        int vlen = snprintf(value, sizeof(value), "%s %" PRId64, ctx->message, s);
        if (vlen >= (int)sizeof(value)) {
            vlen = (int)sizeof(value) - 1; /* a very long message is cut */
        }
        const char *parity = s % 2 ? "odd" : "even";
        spool_header h[4] = {
            {"seq", 3, (const uint8_t *)seq, slen},
            {"parity", 6, (const uint8_t *)parity, (int32_t)strlen(parity)},
            {"host", 4, (const uint8_t *)host, (int32_t)strlen(host)},
            {"input", 5, (const uint8_t *)name, (int32_t)strlen(name)},
        };
        spool_record r = {
            .key_len = -1, /* no key */
            .value = (const uint8_t *)value,
            .value_len = vlen,
            .headers = h,
            .header_count = 4,
            .timestamp = 0, /* stamped when appended */
        };
        int rc = spool_batch_append(b, &r); /* copies key, value and headers */
        if (rc < 0) {
            return rc;
        }
    }
    int plen = snprintf(pos, sizeof(pos), "%" PRId64, ctx->next + n);
    return spool_batch_set_position(b, POSITION_SOURCE, pos, (size_t)plen);
}

/* Hands b to the pipeline, waiting while it is full. 0 = the core owns b;
 * otherwise the caller still owns it (stopping, or the pipeline closed). */
static int submit(spool_instance *ins, spool_batch *b)
{
    for (;;) {
        int rc = spool_input_submit(ins, b, SUBMIT_SLICE_MS);
        if (rc != -EAGAIN) {
            return rc;
        }
        if (spool_instance_stopping(ins)) {
            return -ECANCELED; /* not taken: its records come again after a restart */
        }
    }
}

static int counter_run(spool_instance *ins, void *vctx)
{
    counter_ctx *ctx = vctx;
    while (!spool_instance_stopping(ins)) {
        if (ctx->count && ctx->next >= ctx->count) {
            spool_log_info(ins, "produced all %" PRId64 " records; idle until stopped", ctx->count);
            while (!pause_ms(ctx, 1000)) {
            }
            break;
        }
        int64_t n = ctx->batch;
        if (ctx->count && ctx->count - ctx->next < n) {
            n = ctx->count - ctx->next;
        }
        spool_batch *b = spool_batch_create(ins);
        if (!b) {
            return -ENOMEM;
        }
        int rc = fill_batch(ins, ctx, b, n);
        if (rc == 0) {
            rc = submit(ins, b);
        }
        if (rc < 0) {
            spool_batch_destroy(b); /* still ours: not submitted */
            /* Stopping is not an error: the position was not moved, so
             * nothing is lost. Anything else ends the input. */
            return rc == -ESHUTDOWN || rc == -ECANCELED ? 0 : rc;
        }
        ctx->next += n;
        if (ctx->interval > 0 && pause_ms(ctx, ctx->interval)) {
            break;
        }
    }
    return 0;
}

static void counter_stop(spool_instance *ins, void *vctx)
{
    counter_ctx *ctx = vctx;
    if (!ctx->sync_ready) {
        return;
    }
    pthread_mutex_lock(&ctx->lock);
    ctx->stop = 1;
    pthread_cond_signal(&ctx->wake);
    pthread_mutex_unlock(&ctx->lock);
}

static void counter_destroy(spool_instance *ins, void *vctx)
{
    counter_ctx *ctx = vctx;
    if (ctx->sync_ready) {
        pthread_cond_destroy(&ctx->wake);
        pthread_mutex_destroy(&ctx->lock);
        ctx->sync_ready = 0;
    }
    /* message is an option: the core frees it after destroy. */
}

static const spool_plugin counter_plugin = {
    SPOOL_PLUGIN_ABI, /* abi_version, struct_size, abi_signature */
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "counter",
    .description = "example: numbered records with a durable position",
    .options = counter_options,
    .context_size = sizeof(counter_ctx),
    .init = counter_init,
    .run = counter_run,
    .stop = counter_stop,
    .destroy = counter_destroy,
};

const spool_plugin *spool_plugin_register(void)
{
    return &counter_plugin;
}
