/*
 * file.c: the `file` and `stdout` outputs.
 *
 * Each chunk is formatted into one buffer and written with as few write(2)
 * calls as there are destination files in it; `raw` writes the value and a
 * newline, `json` one object per line, as spool_json_append_record writes
 * it (the one field order of docs/protocol.md; bytes that are not UTF-8
 * become U+FFFD). The `file` path may be a template over record
 * fields ("{{ host }}") and strftime conversions of the record's timestamp
 * in UTC ("%Y-%m-%d"), so an aggregator can write one file per host and
 * day; open files are cached (max_open_files) and closed when idle.
 *
 * Delivery is at least once: the cursor moves after write() returned (and
 * after fdatasync with `fsync: true`); a restart after a crash may repeat
 * the records written after the last saved cursor.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spool/spool.h"

static const char *const formats[] = {"raw", "json", "fields", NULL};
enum { FMT_RAW = 0, FMT_JSON = 1, FMT_FIELDS = 2 };

#define FILE_MAX_OPEN_DEFAULT "64"

typedef struct open_file {
    char *path;
    int fd;
    int64_t last_used; /* monotonic ms */
} open_file;

typedef struct file_ctx {
    char *path;             /* option: path template */
    int format;             /* option */
    int fsync;              /* option */
    int64_t max_open_files; /* option */
    int64_t idle_close;     /* option, ms */
    int is_stdout;
    spool_template *tpl; /* compiled path */
    int has_strftime;    /* path contains '%' */
    open_file *files;
    size_t nfiles;
    spool_buf out;   /* formatted output */
    int last_failed; /* log an error once per failure streak */
} file_ctx;

static const spool_option file_options[] = {
    SPOOL_OPT_STR("path", file_ctx, path, NULL, 1,
                  "file to append to; may use {{ field }} and strftime %Y-%m-%d (UTC)"),
    SPOOL_OPT_CHOICE("format", file_ctx, format, "raw", formats,
                     "raw: the value and a newline; json: one object per record; fields: one "
                     "document of its fields per record"),
    SPOOL_OPT_FLAG("fsync", file_ctx, fsync, "false",
                   "fdatasync before acknowledging (slower, survives power loss)"),
    SPOOL_OPT_INTEGER("max_open_files", file_ctx, max_open_files, FILE_MAX_OPEN_DEFAULT, 1, 65536,
                      "open file descriptors kept for templated paths"),
    SPOOL_OPT_TIME("idle_close", file_ctx, idle_close, "60s", 0, 86400000,
                   "close a file not written for this long"),
    SPOOL_OPT_END,
};

static const spool_option stdout_options[] = {
    SPOOL_OPT_CHOICE("format", file_ctx, format, "raw", formats,
                     "raw: the value and a newline; json: one object per record; fields: one "
                     "document of its fields per record"),
    SPOOL_OPT_END,
};

static int file_check(spool_instance *ins, void *vctx)
{
    file_ctx *ctx = vctx;
    const char *err;
    spool_template *t = spool_template_compile(ctx->path, &err);
    if (!t) {
        spool_config_error(ins, "path", "%s", err);
        return -EINVAL;
    }
    spool_template_destroy(t);
    return 0;
}

static int file_init(spool_instance *ins, void *vctx)
{
    file_ctx *ctx = vctx;
    const char *err;
    ctx->tpl = spool_template_compile(ctx->path, &err);
    if (!ctx->tpl) {
        spool_log_error(ins, "path: %s", err);
        return -EINVAL;
    }
    ctx->has_strftime = strchr(ctx->path, '%') != NULL;
    if (ctx->format == FMT_RAW && spool_template_is_literal(ctx->tpl)) {
        spool_output_values_only(ins); /* the value, the timestamp for strftime */
    }
    ctx->files = calloc((size_t)ctx->max_open_files, sizeof(*ctx->files));
    return ctx->files ? 0 : -ENOMEM;
}

static int stdout_init(spool_instance *ins, void *vctx)
{
    file_ctx *ctx = vctx;
    ctx->is_stdout = 1;
    if (ctx->format == FMT_RAW) {
        spool_output_values_only(ins);
    }
    return 0;
}

static int format_record(file_ctx *ctx, const spool_chunk *c, const spool_record *r)
{
    if (ctx->format == FMT_JSON || ctx->format == FMT_FIELDS) {
        int rc = ctx->format == FMT_JSON ? spool_json_append_record(&ctx->out, r, c->topic)
                                         : spool_json_append_fields(&ctx->out, r, SPOOL_JSON_TYPED);
        return rc ? rc : spool_buf_append(&ctx->out, "\n", 1);
    }
    int rc = spool_buf_reserve(&ctx->out, (size_t)(r->value_len > 0 ? r->value_len : 0) + 1);
    if (rc < 0) {
        return rc;
    }
    if (r->value_len > 0) {
        spool_buf_append(&ctx->out, r->value, (size_t)r->value_len);
    }
    ctx->out.data[ctx->out.len++] = '\n';
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* mkdir -p of the directory path is in. */
static int mkdirs_for(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        return 0;
    }
    *slash = '\0';
    return spool_mkdirs(dir, 0755);
}

static void close_file(open_file *f)
{
    if (f->path) {
        close(f->fd);
        free(f->path);
        f->path = NULL;
    }
}

/* Returns the fd for path, opening (and evicting the least recently used)
 * as needed; negative errno on failure. */
static int get_fd(spool_instance *ins, file_ctx *ctx, const char *path)
{
    int64_t now = spool_monotonic_ms();
    open_file *lru = NULL, *empty = NULL;
    for (size_t i = 0; i < (size_t)ctx->max_open_files; i++) {
        open_file *f = &ctx->files[i];
        if (!f->path) {
            empty = empty ? empty : f;
            continue;
        }
        if (strcmp(f->path, path) == 0) {
            f->last_used = now;
            return f->fd;
        }
        if (!lru || f->last_used < lru->last_used) {
            lru = f;
        }
    }
    if (empty) {
        lru = empty;
    }
    close_file(lru);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT && mkdirs_for(path) == 0) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        return -errno;
    }
    lru->path = strdup(path);
    if (!lru->path) {
        close(fd);
        return -ENOMEM;
    }
    lru->fd = fd;
    lru->last_used = now;
    return fd;
}

static size_t render_path(file_ctx *ctx, const spool_chunk *c, const spool_record *r, char *out,
                          size_t cap)
{
    char tmp[4096];
    size_t n = spool_template_render(ctx->tpl, r, c->topic, NULL, tmp, sizeof(tmp));
    if (n >= sizeof(tmp)) {
        n = sizeof(tmp) - 1;
    }
    tmp[n] = '\0';
    if (!ctx->has_strftime) {
        snprintf(out, cap, "%s", tmp);
        return strlen(out);
    }
    time_t secs = (time_t)(r->timestamp / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t m = strftime(out, cap, tmp, &tm);
    if (m == 0) {
        snprintf(out, cap, "%s", tmp);
    }
    return strlen(out);
}

static int flush_to(spool_instance *ins, file_ctx *ctx, int fd)
{
    int rc = write_all(fd, (const char *)ctx->out.data, ctx->out.len);
    if (rc == 0 && ctx->fsync && !ctx->is_stdout) {
        rc = fdatasync(fd) < 0 ? -errno : 0;
    }
    ctx->out.len = 0;
    return rc;
}

static int file_flush(spool_instance *ins, void *vctx, const spool_chunk *c)
{
    file_ctx *ctx = vctx;
    char path[4096], cur[4096] = "";
    int rc = 0, fd = 1;
    int templated = !ctx->is_stdout && (ctx->has_strftime || !spool_template_is_literal(ctx->tpl));

    ctx->out.len = 0;
    if (!ctx->is_stdout && !templated) {
        render_path(ctx, c, &c->records[0], cur, sizeof(cur));
    }
    for (size_t i = 0; i < c->count && rc == 0; i++) {
        const spool_record *r = &c->records[i];
        if (templated) {
            render_path(ctx, c, r, path, sizeof(path));
            if (strcmp(path, cur) != 0) {
                if (ctx->out.len && (fd = get_fd(ins, ctx, cur)) >= 0) {
                    rc = flush_to(ins, ctx, fd);
                } else if (ctx->out.len) {
                    rc = fd;
                }
                snprintf(cur, sizeof(cur), "%s", path);
            }
        }
        if (rc == 0) {
            rc = format_record(ctx, c, r);
        }
    }
    if (rc == 0 && ctx->out.len) {
        fd = ctx->is_stdout ? 1 : get_fd(ins, ctx, cur);
        rc = fd < 0 ? fd : flush_to(ins, ctx, fd);
    }
    if (rc < 0) {
        if (!ctx->last_failed) {
            spool_log_error(ins, "writing %s: %s; retrying", ctx->is_stdout ? "stdout" : cur,
                            strerror(-rc));
        }
        ctx->last_failed = 1;
        spool_count(ins, SPOOL_COUNT_ERRORS, 1);
        return SPOOL_RETRY;
    }
    if (ctx->last_failed) {
        spool_log_info(ins, "writing works again");
        ctx->last_failed = 0;
    }
    if (!ctx->is_stdout && ctx->idle_close > 0) {
        int64_t now = spool_monotonic_ms();
        for (size_t i = 0; i < (size_t)ctx->max_open_files; i++) {
            if (ctx->files[i].path && now - ctx->files[i].last_used > ctx->idle_close) {
                close_file(&ctx->files[i]);
            }
        }
    }
    return SPOOL_OK;
}

static void file_destroy(spool_instance *ins, void *vctx)
{
    file_ctx *ctx = vctx;
    if (ctx->files) {
        for (size_t i = 0; i < (size_t)ctx->max_open_files; i++) {
            close_file(&ctx->files[i]);
        }
        free(ctx->files);
        ctx->files = NULL;
    }
    spool_template_destroy(ctx->tpl);
    ctx->tpl = NULL;
    spool_buf_free(&ctx->out);
}

const spool_plugin spool_plugin_file = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "file",
    .description = "append records to a file (raw lines or JSON), per-record paths by template",
    .options = file_options,
    .context_size = sizeof(file_ctx),
    .check = file_check,
    .init = file_init,
    .flush = file_flush,
    .destroy = file_destroy,
};

const spool_plugin spool_plugin_stdout = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "stdout",
    .description = "write records to standard output (raw lines or JSON)",
    .options = stdout_options,
    .context_size = sizeof(file_ctx),
    .init = stdout_init,
    .flush = file_flush,
    .destroy = file_destroy,
};
