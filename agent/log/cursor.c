/*
 * cursor.c: output cursors. A consumer (an output) has one committed offset
 * per topic/partition, kept in memory and written on flush to
 * cursors/<consumer>.cursor atomically (write a .tmp, fsync, rename, fsync
 * the directory). The file is text, one "topic partition offset" line per
 * committed cursor, then "crc <8 hex digits>" of the lines before it, so a
 * damaged file is detected and ignored (with an error) rather than trusted.
 * Registered consumers hold retention back (retention.c asks for the
 * minimum). Any thread: the table is guarded by log->cur_mu.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log_int.h"

#define CURSOR_MAX_FILE (4 << 20)

static void cursor_path(const spool_log *log, const char *consumer, const char *ext, char *buf,
                        size_t cap)
{
    int n = snprintf(buf, cap, "%s/cursors/", log->data_dir);
    size_t at = n > 0 ? (size_t)n : 0;
    for (const char *c = consumer; *c && at + 1 < cap; c++) {
        buf[at++] = (*c == '/' || *c == '\0') ? '_' : *c;
    }
    buf[at < cap ? at : cap - 1] = '\0';
    strncat(buf, ext, cap - strlen(buf) - 1);
}

static spool__consumer *find_consumer(spool_log *log, const char *name)
{
    for (size_t i = 0; i < log->nconsumers; i++) {
        if (strcmp(log->consumers[i].name, name) == 0) {
            return &log->consumers[i];
        }
    }
    return NULL;
}

/*
 * Reads a cursor file and calls fn per valid line. 0, -ENOENT, or -EBADMSG
 * (CRC mismatch or garbage; nothing is reported then).
 */
static int parse_file(const char *path,
                      void (*fn)(void *arg, const char *topic, int32_t partition, int64_t offset),
                      void *arg)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return -errno;
    }
    char *text = malloc(CURSOR_MAX_FILE + 1);
    if (text == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(text, 1, CURSOR_MAX_FILE, f);
    fclose(f);
    text[n] = '\0';
    int rc = -EBADMSG;
    char *crcline = NULL;
    for (char *p = text; (p = strstr(p, "crc ")) != NULL; p++) {
        if (p == text || p[-1] == '\n') {
            crcline = p;
        }
    }
    if (crcline != NULL) {
        unsigned want = 0;
        if (sscanf(crcline, "crc %8x", &want) == 1 &&
            spool_crc32c(0, text, (size_t)(crcline - text)) == want) {
            rc = 0;
            *crcline = '\0';
            char *save = NULL;
            for (char *line = strtok_r(text, "\n", &save); line != NULL;
                 line = strtok_r(NULL, "\n", &save)) {
                char topic[256];
                int32_t part;
                int64_t off;
                if (sscanf(line, "%255s %" SCNd32 " %" SCNd64, topic, &part, &off) == 3) {
                    fn(arg, topic, part, off);
                }
            }
        }
    }
    free(text);
    return rc;
}

typedef struct load_ctx {
    spool_log *log;
    spool__consumer *c;
} load_ctx;

static void load_one(void *arg, const char *topic, int32_t partition, int64_t offset)
{
    load_ctx *lc = arg;
    int t = spool_log_topic_index(lc->log, topic);
    if (t >= 0 && partition >= 0 && partition < lc->log->topics[t].conf.partitions) {
        lc->c->offsets[t][partition] = offset;
    }
}

int spool_log_cursor_register(spool_log *log, const char *consumer)
{
    int rc = 0;
    char path[4096];
    if (log == NULL || consumer == NULL || consumer[0] == '\0') {
        return -EINVAL;
    }
    pthread_mutex_lock(&log->cur_mu);
    if (find_consumer(log, consumer) != NULL) {
        goto out;
    }
    spool__consumer *n = realloc(log->consumers, (log->nconsumers + 1) * sizeof(*n));
    if (n == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    log->consumers = n;
    spool__consumer *c = &n[log->nconsumers];
    memset(c, 0, sizeof(*c));
    c->name = strdup(consumer);
    c->offsets = calloc(log->ntopics ? log->ntopics : 1, sizeof(*c->offsets));
    if (c->name == NULL || c->offsets == NULL) {
        rc = -ENOMEM;
        goto undo;
    }
    for (size_t t = 0; t < log->ntopics; t++) {
        c->offsets[t] = malloc((size_t)log->topics[t].conf.partitions * sizeof(int64_t));
        if (c->offsets[t] == NULL) {
            rc = -ENOMEM;
            goto undo;
        }
        for (int32_t i = 0; i < log->topics[t].conf.partitions; i++) {
            c->offsets[t][i] = -1;
        }
    }
    cursor_path(log, consumer, ".cursor", path, sizeof(path));
    load_ctx lc = { log, c };
    int prc = parse_file(path, load_one, &lc);
    if (prc == -EBADMSG) {
        spool_log_error(NULL, "log: cursor file %s is damaged (CRC mismatch); %s starts from "
                        "the beginning of each partition", path, consumer);
    }
    log->nconsumers++;
    goto out;
undo:
    if (c->offsets != NULL) {
        for (size_t t = 0; t < log->ntopics; t++) {
            free(c->offsets[t]);
        }
    }
    free(c->offsets);
    free(c->name);
out:
    pthread_mutex_unlock(&log->cur_mu);
    return rc;
}

int64_t spool_log_cursor_get(spool_log *log, const char *consumer, int topic, int32_t partition)
{
    int64_t v = -1;
    spool__part *p = spool__part_get(log, topic, partition);
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&log->cur_mu);
    spool__consumer *c = find_consumer(log, consumer);
    if (c != NULL) {
        v = c->offsets[topic][partition];
    }
    pthread_mutex_unlock(&log->cur_mu);
    if (v < 0) {
        spool_partition_info info;
        spool_log_partition_info(log, topic, partition, &info);
        v = info.begin_offset;
    }
    return v;
}

int spool_log_cursor_set(spool_log *log, const char *consumer, int topic, int32_t partition,
                         int64_t offset)
{
    int rc = 0;
    if (spool__part_get(log, topic, partition) == NULL || offset < 0) {
        return -EINVAL;
    }
    pthread_mutex_lock(&log->cur_mu);
    spool__consumer *c = find_consumer(log, consumer);
    if (c == NULL) {
        rc = -ENOENT;
    } else if (c->offsets[topic][partition] != offset) {
        c->offsets[topic][partition] = offset;
        c->dirty = 1;
    }
    pthread_mutex_unlock(&log->cur_mu);
    return rc;
}

int spool_log_cursor_flush(spool_log *log, const char *consumer)
{
    char path[4096], tmp[4200], dir[4096];
    spool_buf b = { 0 };
    int rc = 0;
    int fd = -1;
    pthread_mutex_lock(&log->flush_mu);
    pthread_mutex_lock(&log->cur_mu);
    spool__consumer *c = find_consumer(log, consumer);
    if (c == NULL) {
        rc = -ENOENT;
    } else if (!c->dirty) {
        rc = 1;
    } else {
        for (size_t t = 0; t < log->ntopics && rc == 0; t++) {
            for (int32_t i = 0; i < log->topics[t].conf.partitions && rc == 0; i++) {
                if (c->offsets[t][i] >= 0) {
                    char line[512];
                    int n = snprintf(line, sizeof(line), "%s %d %" PRId64 "\n",
                                     log->topics[t].conf.name, i, c->offsets[t][i]);
                    rc = spool_buf_append(&b, line, (size_t)n);
                }
            }
        }
        c->dirty = 0;
    }
    pthread_mutex_unlock(&log->cur_mu);
    if (rc != 0) {
        rc = rc == 1 ? 0 : rc;
        goto out;
    }
    char crc[32];
    int n = snprintf(crc, sizeof(crc), "crc %08x\n", spool_crc32c(0, b.data, b.len));
    if ((rc = spool_buf_append(&b, crc, (size_t)n)) < 0) {
        goto out;
    }
    cursor_path(log, consumer, ".cursor", path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || write(fd, b.data, b.len) != (ssize_t)b.len || fsync(fd) < 0) {
        rc = errno ? -errno : -EIO;
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto fail;
    }
    snprintf(dir, sizeof(dir), "%s/cursors", log->data_dir);
    if ((rc = spool__fsync_dir(dir)) < 0) {
        goto fail;
    }
    goto out;
fail:
    /* The caller (the output runner) reports the failure, once per streak. */
    spool_log_debug(NULL, "log: cannot write cursor file %s: %s", path, strerror(-rc));
    pthread_mutex_lock(&log->cur_mu);
    if ((c = find_consumer(log, consumer)) != NULL) {
        c->dirty = 1;
    }
    pthread_mutex_unlock(&log->cur_mu);
out:
    if (fd >= 0) {
        close(fd);
    }
    spool_buf_free(&b);
    pthread_mutex_unlock(&log->flush_mu);
    return rc;
}

typedef struct each_ctx {
    const char *consumer;
    void (*fn)(void *arg, const char *consumer, const char *topic, int32_t partition,
               int64_t offset);
    void *arg;
} each_ctx;

static void each_one(void *arg, const char *topic, int32_t partition, int64_t offset)
{
    each_ctx *ec = arg;
    ec->fn(ec->arg, ec->consumer, topic, partition, offset);
}

int spool_log_cursor_foreach(spool_log *log,
                             void (*fn)(void *arg, const char *consumer, const char *topic,
                                        int32_t partition, int64_t offset),
                             void *arg)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/cursors", log->data_dir);
    DIR *d = opendir(dir);
    if (d == NULL) {
        return errno == ENOENT ? 0 : -errno;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 7 || strcmp(e->d_name + len - 7, ".cursor") != 0) {
            continue;
        }
        char name[256], path[4096 + 256];
        snprintf(name, sizeof(name), "%.*s", (int)(len - 7), e->d_name);
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        each_ctx ec = { name, fn, arg };
        parse_file(path, each_one, &ec);
    }
    closedir(d);
    return 0;
}

int64_t spool__cursor_min(spool_log *log, int topic, int32_t partition)
{
    int64_t m = INT64_MAX;
    pthread_mutex_lock(&log->cur_mu);
    for (size_t i = 0; i < log->nconsumers; i++) {
        int64_t v = log->consumers[i].offsets[topic][partition];
        if (v < m) {
            m = v;
        }
    }
    pthread_mutex_unlock(&log->cur_mu);
    return m;
}

void spool__cursors_free(spool_log *log)
{
    for (size_t i = 0; i < log->nconsumers; i++) {
        for (size_t t = 0; t < log->ntopics; t++) {
            free(log->consumers[i].offsets[t]);
        }
        free(log->consumers[i].offsets);
        free(log->consumers[i].name);
    }
    free(log->consumers);
    log->consumers = NULL;
    log->nconsumers = 0;
}
