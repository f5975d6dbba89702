/*
 * stdin.c: the `stdin` input: one record per line of standard input.
 *
 * Reads in large blocks, splits on '\n' (a trailing '\r' is kept: it is
 * data), and submits one batch per block, so the cost per line is a memchr
 * and a memcpy. A line longer than max_line_bytes is split into pieces of
 * that size (counted and warned about once). At end of input the last
 * partial line is emitted; with exit_on_eof (default) spool then shuts
 * down cleanly, delivering everything first: `seq 10 | spool run -c f.yaml`.
 * Standard input outlives an instance: when one stops without end of input
 * (a reload), the unfinished line it read is handed to the next stdin
 * instance of the process (a process-wide carry), so no line is cut.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool/spool.h"

#define STDIN_BLOCK (256 * 1024)

typedef struct stdin_ctx {
    int exit_on_eof;        /* option */
    int64_t max_line_bytes; /* option, bytes */
    int fd;                 /* 0 */
    uint8_t *buf;           /* STDIN_BLOCK + max_line_bytes */
    size_t cap;
    spool_counter *split; /* lines split for length */
    int warned_long;
} stdin_ctx;

/* The unfinished line of a stopped instance, for the next one (reload). */
static pthread_mutex_t carry_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *carry;
static size_t carry_len;

static const spool_option stdin_options[] = {
    SPOOL_OPT_FLAG("exit_on_eof", stdin_ctx, exit_on_eof, "true",
                   "shut spool down cleanly at end of input"),
    SPOOL_OPT_BYTES("max_line_bytes", stdin_ctx, max_line_bytes, "1MiB", 16, 1LL << 30,
                    "longer lines are split into pieces of this size"),
    SPOOL_OPT_END,
};

static int stdin_init(spool_instance *ins, void *vctx)
{
    stdin_ctx *ctx = vctx;
    ctx->fd = 0;
    ctx->cap = STDIN_BLOCK + (size_t)ctx->max_line_bytes;
    ctx->buf = malloc(ctx->cap);
    ctx->split = spool_counter_register(ins, "lines_split", "Lines split at max_line_bytes");
    return ctx->buf ? 0 : -ENOMEM;
}

static int emit(spool_instance *ins, spool_batch *b, const spool_header *hdrs, const uint8_t *p,
                size_t n)
{
    spool_record r = {
        .key_len = -1, .value = p, .value_len = (int32_t)n, .headers = hdrs, .header_count = 2};
    return spool_batch_append(b, &r);
}

static int submit(spool_instance *ins, spool_batch **b)
{
    int rc = spool_input_submit(ins, *b, -1);
    if (rc < 0) {
        spool_batch_destroy(*b);
        *b = NULL;
        return rc;
    }
    *b = spool_batch_create(ins);
    return *b ? 0 : -ENOMEM;
}

static int stdin_run(spool_instance *ins, void *vctx)
{
    stdin_ctx *ctx = vctx;
    const char *host = spool_hostname(), *name = spool_instance_name(ins);
    spool_header hdrs[2] = {
        {"host", 4, (const uint8_t *)host, (int32_t)strlen(host)},
        {"input", 5, (const uint8_t *)name, (int32_t)strlen(name)},
    };
    size_t have = 0; /* bytes of an unfinished line at buf[0..have) */
    size_t max = (size_t)ctx->max_line_bytes;
    spool_batch *b = spool_batch_create(ins);
    int rc = 0, eof = 0;

    if (!b) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&carry_lock);
    if (carry && carry_len <= ctx->cap) {
        memcpy(ctx->buf, carry, carry_len);
        have = carry_len;
    }
    free(carry);
    carry = NULL;
    carry_len = 0;
    pthread_mutex_unlock(&carry_lock);
    while (!spool_instance_stopping(ins) && !eof) {
        struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, 200);
        if (pr == 0 || (pr < 0 && errno == EINTR)) {
            continue;
        }
        ssize_t n = read(ctx->fd, ctx->buf + have, ctx->cap - have);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            spool_log_error(ins, "reading standard input: %s", strerror(errno));
            rc = -errno;
            break;
        }
        if (n == 0) {
            eof = 1;
        }
        size_t len = have + (size_t)n, start = 0;
        for (;;) {
            uint8_t *nl = memchr(ctx->buf + start, '\n', len - start);
            size_t end = nl ? (size_t)(nl - ctx->buf) : len;
            if (!nl && end - start < max && !eof) {
                break;
            }
            if (!nl && end == start) {
                break;
            }
            /* A line (or a max-sized piece of one). */
            size_t piece = end - start > max ? max : end - start;
            if (end - start > max) {
                spool_counter_add(ctx->split, 1);
                if (!ctx->warned_long) {
                    spool_log_warn(ins,
                                   "a line longer than max_line_bytes (%zu) was split; "
                                   "further splits are counted in spool_stdin_lines_split_total",
                                   max);
                    ctx->warned_long = 1;
                }
            }
            if ((rc = emit(ins, b, hdrs, ctx->buf + start, piece)) < 0) {
                goto out;
            }
            start += piece;
            if (nl && start == end) {
                start++; /* the newline */
            }
        }
        have = len - start;
        memmove(ctx->buf, ctx->buf + start, have);
        if (spool_batch_count(b) && (rc = submit(ins, &b)) < 0) {
            goto out;
        }
    }
out:
    if (b && spool_batch_count(b)) {
        if (submit(ins, &b) < 0) {
            b = NULL;
        }
    }
    spool_batch_destroy(b);
    if (!eof && have > 0) {
        pthread_mutex_lock(&carry_lock);
        free(carry);
        carry = malloc(have);
        if (carry) {
            memcpy(carry, ctx->buf, have);
            carry_len = have;
        }
        pthread_mutex_unlock(&carry_lock);
    }
    if (eof && ctx->exit_on_eof) {
        spool_service_shutdown("end of standard input (stdin: exit_on_eof)");
    }
    return rc == -ESHUTDOWN ? 0 : rc;
}

static void stdin_destroy(spool_instance *ins, void *vctx)
{
    stdin_ctx *ctx = vctx;
    free(ctx->buf);
    ctx->buf = NULL;
}

const spool_plugin spool_plugin_stdin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "stdin",
    .description = "one record per line of standard input",
    .options = stdin_options,
    .context_size = sizeof(stdin_ctx),
    .init = stdin_init,
    .run = stdin_run,
    .destroy = stdin_destroy,
};
