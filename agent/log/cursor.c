/*
 * cursor.c: output cursors. A consumer (an output) has one committed offset
 * per topic/partition, kept in memory and written to cursors/<consumer>.cursor.
 *
 * The file has two fixed-size slots. Each slot: "SPCURS2\n", slot size,
 * payload length, generation (u32, u32, u64, little endian), CRC-32C of
 * those 16 bytes and the payload, then the payload: one "topic partition
 * offset" line per committed cursor. A reader takes the valid slot with the
 * highest generation. spool_plog_cursor_write puts the new state into the
 * slot that does not hold the last fsynced state, with one pwrite and no
 * fsync (it reaches the page cache, so it survives kill -9);
 * spool_plog_cursor_flush does the same and fsyncs, making that slot the
 * synced one. So one slot always holds a complete fsynced state and a torn
 * write (power loss) can only damage the other. The first write of a
 * process (or one that outgrows the slots) creates the file anew: write a
 * .tmp with the state in slot 0, fsync, rename, fsync the directory.
 * The old format (text lines then "crc <8 hex digits>") is still read and
 * replaced at the first write. A damaged file is detected and ignored (with
 * an error) rather than trusted. Registered consumers hold retention back on
 * the partitions they have a cursor on (retention.c asks for the minimum).
 * Any thread: the table is guarded by log->cur_mu, file writes by
 * log->flush_mu (taken first).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log_int.h"

#define CURSOR_MAX_FILE (4 << 20)
#define SLOT_MAGIC "SPCURS2\n"
#define SLOT_HDR 28 /* magic 8, slot size 4, payload length 4, generation 8, crc 4 */
#define SLOT_MIN 4096

static void cursor_path(const spool_plog *log, const char *consumer, const char *ext, char *buf,
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

static spool__consumer *find_consumer(spool_plog *log, const char *name)
{
    for (size_t i = 0; i < log->nconsumers; i++) {
        if (strcmp(log->consumers[i].name, name) == 0) {
            return &log->consumers[i];
        }
    }
    return NULL;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Fills a slot header for payload[0..len) (the payload follows the header). */
static void slot_header(uint8_t *hdr, uint32_t slot_size, const uint8_t *payload, uint32_t len,
                        uint64_t gen)
{
    memcpy(hdr, SLOT_MAGIC, 8);
    put32(hdr + 8, slot_size);
    put32(hdr + 12, len);
    put64(hdr + 16, gen);
    uint32_t crc = spool_crc32c(0, hdr + 8, 16);
    put32(hdr + 24, spool_crc32c(crc, payload, len));
}

/* A valid slot at p (avail bytes): its payload and generation. */
static int slot_valid(const uint8_t *p, size_t avail, const uint8_t **payload, uint32_t *len,
                      uint64_t *gen)
{
    if (avail < SLOT_HDR || memcmp(p, SLOT_MAGIC, 8) != 0) {
        return 0;
    }
    uint32_t n = get32(p + 12);
    if (n > avail - SLOT_HDR) {
        return 0;
    }
    uint32_t crc = spool_crc32c(0, p + 8, 16);
    if (spool_crc32c(crc, p + SLOT_HDR, n) != get32(p + 24)) {
        return 0;
    }
    *payload = p + SLOT_HDR;
    *len = n;
    *gen = get64(p + 16);
    return 1;
}

static void parse_lines(char *text,
                        void (*fn)(void *arg, const char *topic, int32_t partition, int64_t offset),
                        void *arg)
{
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

/* The old single-slot text format. */
static int parse_old(char *text,
                     void (*fn)(void *arg, const char *topic, int32_t partition, int64_t offset),
                     void *arg)
{
    char *crcline = NULL;
    for (char *p = text; (p = strstr(p, "crc ")) != NULL; p++) {
        if (p == text || p[-1] == '\n') {
            crcline = p;
        }
    }
    unsigned want = 0;
    if (crcline == NULL || sscanf(crcline, "crc %8x", &want) != 1 ||
        spool_crc32c(0, text, (size_t)(crcline - text)) != want) {
        return -EBADMSG;
    }
    *crcline = '\0';
    parse_lines(text, fn, arg);
    return 0;
}

/*
 * Reads a cursor file and calls fn per valid line. 0, -ENOENT, or -EBADMSG
 * (no valid slot, CRC mismatch or garbage; nothing is reported then).
 * *gen_out (may be NULL) gets the generation read (0 for the old format).
 */
static int parse_file(const char *path,
                      void (*fn)(void *arg, const char *topic, int32_t partition, int64_t offset),
                      void *arg, uint64_t *gen_out)
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
    const uint8_t *u = (const uint8_t *)text;
    if (n >= 2 * SLOT_HDR &&
        (memcmp(u, SLOT_MAGIC, 8) == 0 || memcmp(u + n / 2, SLOT_MAGIC, 8) == 0)) {
        const uint8_t *best = NULL, *pl;
        uint32_t best_len = 0, len;
        uint64_t best_gen = 0, gen;
        size_t half = n / 2;
        if (slot_valid(u, half, &pl, &len, &gen)) {
            best = pl;
            best_len = len;
            best_gen = gen;
        }
        if (slot_valid(u + half, n - half, &pl, &len, &gen) && (!best || gen > best_gen)) {
            best = pl;
            best_len = len;
            best_gen = gen;
        }
        if (best) {
            char *lines = malloc((size_t)best_len + 1);
            if (lines == NULL) {
                free(text);
                return -ENOMEM;
            }
            memcpy(lines, best, best_len);
            lines[best_len] = '\0';
            parse_lines(lines, fn, arg);
            free(lines);
            if (gen_out) {
                *gen_out = best_gen;
            }
            rc = 0;
        }
    } else {
        rc = parse_old(text, fn, arg);
        if (rc == 0 && gen_out) {
            *gen_out = 0;
        }
    }
    free(text);
    return rc;
}

typedef struct load_ctx {
    spool_plog *log;
    spool__consumer *c;
} load_ctx;

static void load_one(void *arg, const char *topic, int32_t partition, int64_t offset)
{
    load_ctx *lc = arg;
    int t = spool_plog_topic_index(lc->log, topic);
    if (t >= 0 && partition >= 0 && partition < lc->log->topics[t].conf.partitions) {
        lc->c->offsets[t][partition] = offset;
    }
}

int spool_plog_cursor_register(spool_plog *log, const char *consumer)
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
    c->fd = -1;
    c->synced_slot = -1;
    c->last_slot = -1;
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
    load_ctx lc = {log, c};
    int prc = parse_file(path, load_one, &lc, &c->gen);
    if (prc == -EBADMSG) {
        spool_log_error(NULL,
                        "log: cursor file %s is damaged (CRC mismatch); %s starts from "
                        "the beginning of each partition",
                        path, consumer);
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

int64_t spool_plog_cursor_get(spool_plog *log, const char *consumer, int topic, int32_t partition)
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
        spool_plog_partition_info(log, topic, partition, &info);
        v = info.begin_offset;
    }
    return v;
}

int spool_plog_cursor_set(spool_plog *log, const char *consumer, int topic, int32_t partition,
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

/* Creates the file anew with `payload` in slot 0 (tmp, fsync, rename,
 * directory fsync) and opens it. flush_mu held. 0 or -errno. */
static int cursor_create(spool_plog *log, const char *path, const uint8_t *payload, uint32_t len,
                         uint64_t gen, uint32_t slot_size, int *fd_out)
{
    char tmp[4200], dir[4096];
    int rc = 0;
    uint8_t *img = calloc(2, slot_size);
    if (img == NULL) {
        return -ENOMEM;
    }
    memcpy(img + SLOT_HDR, payload, len);
    slot_header(img, slot_size, payload, len, gen);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    errno = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || write(fd, img, 2 * (size_t)slot_size) != (ssize_t)(2 * (size_t)slot_size) ||
        fsync(fd) < 0) {
        rc = errno ? -errno : -ENOSPC;
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto out;
    }
    snprintf(dir, sizeof(dir), "%s/cursors", log->data_dir);
    if ((rc = spool__fsync_dir(dir)) < 0) {
        goto out;
    }
    *fd_out = open(path, O_RDWR | O_CLOEXEC);
    if (*fd_out < 0) {
        rc = -errno;
    }
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(img);
    return rc;
}

/* Writes the consumer's state to its file; fsyncs if `sync`. */
static int cursor_save(spool_plog *log, const char *consumer, int sync)
{
    char path[4096];
    spool_buf b = {0};
    int rc = 0;
    pthread_mutex_lock(&log->flush_mu);
    pthread_mutex_lock(&log->cur_mu);
    spool__consumer *c = find_consumer(log, consumer);
    if (c == NULL) {
        pthread_mutex_unlock(&log->cur_mu);
        pthread_mutex_unlock(&log->flush_mu);
        return -ENOENT;
    }
    int dirty = c->dirty, fd = c->fd, synced = c->synced_slot, last = c->last_slot;
    uint32_t slot_size = c->slot_size;
    uint64_t gen = c->gen + 1;
    int slot = last;
    if (!dirty && !(sync && c->unsynced)) {
        pthread_mutex_unlock(&log->cur_mu);
        pthread_mutex_unlock(&log->flush_mu);
        return 0;
    }
    if (dirty) {
        rc = spool_buf_reserve(&b, SLOT_HDR);
        b.len = rc == 0 ? SLOT_HDR : 0;
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
        c->dirty = 0; /* a set from now on marks it again */
    }
    pthread_mutex_unlock(&log->cur_mu);
    if (rc < 0) {
        goto fail;
    }
    cursor_path(log, consumer, ".cursor", path, sizeof(path));
    if (dirty) {
        uint32_t len = (uint32_t)(b.len - SLOT_HDR);
        if (fd < 0 || b.len > slot_size) {
            /* First write of this process, or the state outgrew the slots. */
            uint32_t need = (uint32_t)b.len * 2;
            slot_size = SLOT_MIN;
            while (slot_size < need) {
                slot_size *= 2;
            }
            int nfd = -1;
            if ((rc = cursor_create(log, path, b.data + SLOT_HDR, len, gen, slot_size, &nfd)) < 0) {
                goto fail;
            }
            if (fd >= 0) {
                close(fd);
            }
            fd = nfd;
            slot = synced = 0;
        } else {
            slot = synced == 0 ? 1 : 0;
            slot_header(b.data, slot_size, b.data + SLOT_HDR, len, gen);
            errno = 0;
            ssize_t w = pwrite(fd, b.data, b.len, (off_t)slot * slot_size);
            if (w != (ssize_t)b.len) {
                rc = errno ? -errno : -ENOSPC;
                goto fail;
            }
        }
    }
    if (sync && slot >= 0 && slot != synced) {
        if (fdatasync(fd) < 0) {
            rc = -errno;
            goto fail;
        }
        synced = slot;
    }
    pthread_mutex_lock(&log->cur_mu);
    if ((c = find_consumer(log, consumer)) != NULL) {
        c->fd = fd;
        c->slot_size = slot_size;
        c->synced_slot = synced;
        c->last_slot = slot;
        if (dirty) {
            c->gen = gen;
        }
        c->unsynced = synced != slot;
    }
    pthread_mutex_unlock(&log->cur_mu);
    goto out;
fail:
    /* The caller (the output runner) reports the failure, once per streak. */
    spool_log_debug(NULL, "log: cannot write cursor file of %s: %s", consumer, strerror(-rc));
    pthread_mutex_lock(&log->cur_mu);
    if ((c = find_consumer(log, consumer)) != NULL) {
        c->dirty = 1;
        if (fd >= 0 && c->fd < 0) {
            c->fd = fd; /* a new file was made: keep it */
            c->slot_size = slot_size;
            c->synced_slot = synced;
            c->last_slot = slot;
        }
    }
    pthread_mutex_unlock(&log->cur_mu);
out:
    spool_buf_free(&b);
    pthread_mutex_unlock(&log->flush_mu);
    return rc;
}

int spool_plog_cursor_write(spool_plog *log, const char *consumer)
{
    return cursor_save(log, consumer, 0);
}

int spool_plog_cursor_flush(spool_plog *log, const char *consumer)
{
    return cursor_save(log, consumer, 1);
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

int spool_plog_cursor_foreach(spool_plog *log,
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
        each_ctx ec = {name, fn, arg};
        parse_file(path, each_one, &ec, NULL);
    }
    closedir(d);
    return 0;
}

int spool_plog_cursor_lines_add(spool_plog_cursor_lines *l, const char *consumer, const char *topic,
                                int32_t partition, int64_t offset)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        spool_plog_cursor_line *n = realloc(l->items, cap * sizeof(*n));
        if (n == NULL) {
            l->oom = 1;
            return -ENOMEM;
        }
        l->items = n;
        l->cap = cap;
    }
    spool_plog_cursor_line *c = &l->items[l->count];
    c->consumer = strdup(consumer);
    c->topic = strdup(topic);
    if (c->consumer == NULL || c->topic == NULL) {
        free(c->consumer);
        free(c->topic);
        l->oom = 1;
        return -ENOMEM;
    }
    c->partition = partition;
    c->offset = offset;
    l->count++;
    return 0;
}

static void add_line(void *arg, const char *consumer, const char *topic, int32_t partition,
                     int64_t offset)
{
    (void)spool_plog_cursor_lines_add(arg, consumer, topic, partition, offset);
}

int spool_plog_cursor_lines_read(spool_plog *log, spool_plog_cursor_lines *l)
{
    int rc = spool_plog_cursor_foreach(log, add_line, l);
    return rc < 0 ? rc : l->oom ? -ENOMEM : 0;
}

const spool_plog_cursor_line *spool_plog_cursor_lines_find(const spool_plog_cursor_lines *l,
                                                           const char *consumer, const char *topic,
                                                           int32_t partition)
{
    for (size_t i = 0; i < l->count; i++) {
        const spool_plog_cursor_line *c = &l->items[i];
        if (c->partition == partition && strcmp(c->consumer, consumer) == 0 &&
            strcmp(c->topic, topic) == 0) {
            return c;
        }
    }
    return NULL;
}

void spool_plog_cursor_lines_free(spool_plog_cursor_lines *l)
{
    for (size_t i = 0; i < l->count; i++) {
        free(l->items[i].consumer);
        free(l->items[i].topic);
    }
    free(l->items);
    memset(l, 0, sizeof(*l));
}

int64_t spool__cursor_min(spool_plog *log, int topic, int32_t partition)
{
    int64_t m = INT64_MAX;
    pthread_mutex_lock(&log->cur_mu);
    for (size_t i = 0; i < log->nconsumers; i++) {
        int64_t v = log->consumers[i].offsets[topic][partition];
        if (v >= 0 && v < m) { /* -1: this consumer does not read the partition */
            m = v;
        }
    }
    pthread_mutex_unlock(&log->cur_mu);
    return m;
}

void spool__cursors_free(spool_plog *log)
{
    for (size_t i = 0; i < log->nconsumers; i++) {
        for (size_t t = 0; t < log->ntopics; t++) {
            free(log->consumers[i].offsets[t]);
        }
        free(log->consumers[i].offsets);
        free(log->consumers[i].name);
        if (log->consumers[i].fd >= 0) {
            close(log->consumers[i].fd);
        }
    }
    free(log->consumers);
    log->consumers = NULL;
    log->nconsumers = 0;
}
