/*
 * preflight.c: the two things a writable open refuses to do silently, and
 * the read-only look that lets `spool check`, `spool run` and a reload
 * refuse them first, with the configuration's outputs at hand.
 *
 * 1. Starting without source positions. The checkpoint (state/checkpoint.0
 *    and .1) holds every tailed file's position next to the partition ends
 *    it describes. If no slot is valid (deleted, or both damaged) while
 *    partitions hold data, starting would read every tailed file again from
 *    its beginning and duplicate what the log already holds: refused unless
 *    `spool run --reset-positions` accepts it.
 * 2. Lowering a topic's partition count. Records sit in a partition until
 *    every output has read them; a partition beyond the new count would
 *    never be read again (Kafka refuses to shrink a topic for the same
 *    reason). Refused while such a partition holds records an output reading
 *    the topic has not read (any record when no output reads it), unless
 *    `spool run --drop-partitions`. A partition with nothing undelivered is
 *    emptied at open: its files go and one empty segment named by its end
 *    offset stays, so if the count is raised again offsets continue there
 *    and an old cursor never points past new records.
 *
 * The preflight judges "delivered" by the configured outputs (an output
 * that never saved a cursor has read nothing); so does the open when its
 * options carry them (spool_plog_options.consumers), else by every cursor
 * file that names the topic, refusing when none does. Nothing here writes
 * except spool__shrink_apply.
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

static int overrides;

void spool_plog_set_overrides(int flags)
{
    overrides = flags;
}

int spool_plog_overrides(void)
{
    return overrides;
}

/* ---- a small string builder ---- */

/* The text of a buffer filled by spool_buf_printf ("" when empty). */
static const char *text_of(const spool_buf *b)
{
    return b->data ? (const char *)b->data : "";
}

/* ---- 1. positions ---- */

/* 1 if name is all digits. */
static int numeric(const char *name)
{
    return name[0] != '\0' && strspn(name, "0123456789") == strlen(name);
}

/* Sums the bytes of every segment file under data_dir/topics and names the
 * first partitions that hold some in `where`. */
static int64_t log_bytes(const char *data_dir, spool_buf *where, int *nparts)
{
    char path[4096];
    int64_t total = 0;
    *nparts = 0;
    snprintf(path, sizeof(path), "%s/topics", data_dir);
    DIR *d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    struct dirent *te;
    while ((te = readdir(d)) != NULL) {
        if (te->d_name[0] == '.') {
            continue;
        }
        char tdir[4400];
        snprintf(tdir, sizeof(tdir), "%s/%s", path, te->d_name);
        DIR *td = opendir(tdir);
        if (td == NULL) {
            continue;
        }
        struct dirent *pe;
        while ((pe = readdir(td)) != NULL) {
            if (!numeric(pe->d_name)) {
                continue;
            }
            char pdir[4700];
            snprintf(pdir, sizeof(pdir), "%s/%s", tdir, pe->d_name);
            DIR *pd = opendir(pdir);
            if (pd == NULL) {
                continue;
            }
            int64_t bytes = 0;
            struct dirent *se;
            while ((se = readdir(pd)) != NULL) {
                size_t len = strlen(se->d_name);
                char f[5000];
                struct stat st;
                if (len < 5 || strcmp(se->d_name + len - 4, ".log") != 0) {
                    continue;
                }
                snprintf(f, sizeof(f), "%s/%s", pdir, se->d_name);
                if (stat(f, &st) == 0) {
                    bytes += st.st_size;
                }
            }
            closedir(pd);
            if (bytes > 0) {
                (*nparts)++;
                if (*nparts <= 4) {
                    (void)spool_buf_printf(where, "%s%s/%s", *nparts > 1 ? ", " : "", te->d_name,
                                           pe->d_name); /* shorter if out of memory */
                } else if (*nparts == 5) {
                    (void)spool_buf_printf(where, ", ...");
                }
                total += bytes;
            }
        }
        closedir(td);
    }
    closedir(d);
    return total;
}

int spool__positions_lost(const char *data_dir, const spool_plog_io *io, char **msg)
{
    spool_plog probe;
    spool__ckpt ck;
    char slot[4200];
    *msg = NULL;
    snprintf(slot, sizeof(slot), "%s/state", data_dir);
    if (access(slot, R_OK | X_OK) != 0 && errno != ENOENT) {
        return 0; /* not ours to read (another user's spool): cannot judge */
    }
    for (int i = 0; i < 2; i++) {
        snprintf(slot, sizeof(slot), "%s/state/checkpoint.%d", data_dir, i);
        if (access(slot, F_OK) == 0 && access(slot, R_OK) != 0) {
            return 0; /* not ours to read (another user's spool): cannot judge */
        }
    }
    memset(&probe, 0, sizeof(probe));
    probe.data_dir = (char *)data_dir;
    probe.io = io ? io : &spool_plog_io_posix;
    probe.read_only = 1;
    *msg = NULL;
    int have = spool__ckpt_load(&probe, &ck);
    spool__ckpt_free(&ck);
    if (have != 0) {
        return have < 0 ? have : 0;
    }
    spool_buf where = {0};
    int nparts = 0;
    int64_t bytes = log_bytes(data_dir, &where, &nparts);
    if (bytes == 0) {
        spool_buf_free(&where);
        return 0;
    }
    char ck0[4200];
    snprintf(ck0, sizeof(ck0), "%s/state/checkpoint.0", data_dir);
    int present = access(ck0, F_OK) == 0;
    snprintf(ck0, sizeof(ck0), "%s/state/checkpoint.1", data_dir);
    present |= access(ck0, F_OK) == 0;
    spool_buf m = {0};
    int rc = spool_buf_printf(
        &m,
        "no valid checkpoint in %s/state (%s) but the log holds %" PRId64
        " bytes in %d partition%s (%s): the source positions (how far each tailed file "
        "was read) are lost, so starting would read every tailed file again from its "
        "beginning and duplicate what the log already holds; restore "
        "state/checkpoint.0 and .1 if you have a copy, or accept the re-read with "
        "`spool run --reset-positions`",
        data_dir, present ? "both slots are damaged" : "the files are missing", bytes, nparts,
        nparts == 1 ? "" : "s", text_of(&where));
    spool_buf_free(&where);
    if (rc < 0) {
        spool_buf_free(&m);
        return rc;
    }
    *msg = (char *)m.data; /* the caller frees it */
    return 1;
}

/* ---- 2. partitions ---- */

/* One past the highest partition directory of topic under data_dir. */
static int32_t disk_partitions(const char *data_dir, const char *topic)
{
    char path[4400];
    int32_t n = 0;
    snprintf(path, sizeof(path), "%s/topics/%s", data_dir, topic);
    DIR *d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (numeric(e->d_name)) {
            long v = strtol(e->d_name, NULL, 10);
            if (v >= 0 && v < 100000 && v + 1 > n) {
                n = (int32_t)v + 1;
            }
        }
    }
    closedir(d);
    return n;
}

/* The consumer's saved cursor for topic/partition, -1 if none. */
static int64_t cursor_of(const spool_plog_cursor_lines *l, const char *consumer, const char *topic,
                         int32_t partition)
{
    const spool_plog_cursor_line *c = spool_plog_cursor_lines_find(l, consumer, topic, partition);
    return c ? c->offset : -1;
}

/* The names judged for topic: the configured consumers reading it, or
 * (cons == NULL) every consumer with a cursor file line for it. */
static size_t readers_of(const spool_plog_cursor_lines *l, const spool_plog_consumer_conf *cons,
                         size_t ncons, const char *topic, const char **out, size_t cap)
{
    size_t n = 0;
    if (cons != NULL) {
        for (size_t i = 0; i < ncons && n < cap; i++) {
            for (size_t k = 0; k < cons[i].topic_count; k++) {
                if (strcmp(cons[i].topics[k], topic) == 0) {
                    out[n++] = cons[i].name;
                    break;
                }
            }
        }
        return n;
    }
    for (size_t i = 0; i < l->count && n < cap; i++) {
        if (strcmp(l->items[i].topic, topic) != 0) {
            continue;
        }
        size_t k = 0;
        while (k < n && strcmp(out[k], l->items[i].consumer) != 0) {
            k++;
        }
        if (k == n) {
            out[n++] = l->items[i].consumer;
        }
    }
    return n;
}

void spool__shrink_free(spool__shrink *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].parts);
        free(s[i].msg);
    }
    free(s);
}

#define MAX_READERS 256

/* Judges the partitions of one topic beyond its configured count. */
static int judge_topic(spool_plog *ro, int t, const spool_topic_conf *tc, int32_t disk,
                       const spool_plog_cursor_lines *lines, const spool_plog_consumer_conf *cons,
                       size_t ncons, spool__shrink *out)
{
    const char *readers[MAX_READERS];
    size_t nr = readers_of(lines, cons, ncons, tc->name, readers, MAX_READERS);
    spool_buf m = {0};
    int oom = 0;
    int64_t at_stake = 0;
    int32_t first_bad = -1, last_bad = -1;
    memset(out, 0, sizeof(*out));
    out->conf_parts = tc->partitions;
    out->disk_parts = disk;
    out->parts = calloc((size_t)(disk - tc->partitions), sizeof(*out->parts));
    if (out->parts == NULL) {
        return -ENOMEM;
    }
    for (int32_t p = tc->partitions; p < disk; p++) {
        spool__shrink_part *sp = &out->parts[out->nparts++];
        spool_partition_info info;
        sp->partition = p;
        if (spool_plog_partition_info(ro, t, p, &info) < 0) {
            continue;
        }
        sp->begin = info.begin_offset;
        sp->end = info.end_offset;
        sp->bytes = info.bytes;
        if (sp->end <= sp->begin) {
            continue;
        }
        int64_t worst = 0;
        spool_buf who = {0};
        for (size_t k = 0; k < nr; k++) {
            int64_t c = cursor_of(lines, readers[k], tc->name, p);
            int64_t from = c > sp->begin ? c : sp->begin;
            int64_t lag = sp->end > from ? sp->end - from : 0;
            if (lag > 0) {
                oom |=
                    spool_buf_printf(&who, "%s%s has not read %" PRId64 "%s", who.len ? ", " : "",
                                     readers[k], lag, c < 0 ? " (no cursor saved yet)" : "") < 0;
                worst = lag > worst ? lag : worst;
            }
        }
        if (nr == 0) {
            worst = sp->end - sp->begin;
            oom |= spool_buf_printf(&who, "no output reads topic '%s'", tc->name) < 0;
        }
        if (worst > 0) {
            sp->undelivered = worst;
            at_stake += worst;
            first_bad = first_bad < 0 ? p : first_bad;
            last_bad = p;
            oom |=
                spool_buf_printf(&m, "%spartition %d: offsets %" PRId64 "..%" PRId64 ", %s",
                                 m.len ? "; " : "", p, sp->begin, sp->end - 1, text_of(&who)) < 0;
        }
        spool_buf_free(&who);
    }
    out->undelivered = at_stake;
    if (at_stake > 0) {
        spool_buf full = {0};
        char range[64];
        if (first_bad == last_bad) {
            snprintf(range, sizeof(range), "partition %d", first_bad);
        } else {
            snprintf(range, sizeof(range), "partitions %d-%d", first_bad, last_bad);
        }
        oom |= spool_buf_printf(
                   &full,
                   "topic '%s' has %d partitions on disk but partitions: %d would leave "
                   "%s with %" PRId64 " records not yet delivered to every output (%s); they "
                   "would never be read again. Drain them first: keep partitions: %d until "
                   "`spool topics` shows lag 0 for %s, then lower it; or discard them with "
                   "`spool run --drop-partitions`",
                   tc->name, disk, tc->partitions, range, at_stake, text_of(&m), disk, range) < 0;
        out->msg = (char *)full.data; /* freed with the result */
    }
    spool_buf_free(&m);
    return oom ? -ENOMEM : 0;
}

int spool__shrink_find(const char *data_dir, const spool_topic_conf *topics, size_t ntopics,
                       const spool_plog_consumer_conf *cons, size_t ncons, spool__shrink **out,
                       size_t *nout)
{
    *out = NULL;
    *nout = 0;
    int32_t *disk = calloc(ntopics ? ntopics : 1, sizeof(*disk));
    spool_topic_conf *wide = calloc(ntopics ? ntopics : 1, sizeof(*wide));
    spool__shrink *res = NULL;
    spool_plog *ro = NULL;
    spool_plog_cursor_lines lines = {0};
    size_t nres = 0, any = 0;
    int rc = 0;
    if (disk == NULL || wide == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ntopics; i++) {
        int32_t conf = topics[i].partitions < 1 ? 1 : topics[i].partitions;
        disk[i] = disk_partitions(data_dir, topics[i].name);
        wide[i] = topics[i];
        wide[i].partitions = conf;
        if (disk[i] > conf) {
            wide[i].partitions = disk[i];
            any++;
        }
    }
    if (any == 0) {
        goto out;
    }
    spool_plog_options o = {
        .data_dir = data_dir, .topics = wide, .topic_count = ntopics, .read_only = 1};
    if ((rc = spool_plog_open(&o, &ro)) < 0) {
        goto out;
    }
    if ((rc = spool_plog_cursor_lines_read(ro, &lines)) < 0) {
        goto out;
    }
    res = calloc(any, sizeof(*res));
    if (res == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ntopics; i++) {
        if (wide[i].partitions == (topics[i].partitions < 1 ? 1 : topics[i].partitions)) {
            continue;
        }
        spool_topic_conf tc = topics[i];
        tc.partitions = tc.partitions < 1 ? 1 : tc.partitions;
        int t = spool_plog_topic_index(ro, tc.name);
        rc = judge_topic(ro, t, &tc, disk[i], &lines, cons, ncons, &res[nres]);
        res[nres].topic = (int)i;
        nres++;
        if (rc < 0) {
            goto out;
        }
    }
out:
    if (rc < 0) {
        spool__shrink_free(res, nres);
        res = NULL;
        nres = 0;
    }
    spool_plog_cursor_lines_free(&lines);
    spool_plog_close(ro);
    free(wide);
    free(disk);
    *out = res;
    *nout = nres;
    return rc;
}

/* Deletes every file of one partition directory and leaves an empty
 * segment at `end`. */
static int empty_partition(const char *dir, int64_t end)
{
    DIR *d = opendir(dir);
    int rc = 0;
    char keep[64];
    snprintf(keep, sizeof(keep), "%020" PRId64 ".log", end);
    if (d == NULL) {
        return -errno;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[8192];
        if (e->d_name[0] == '.' || strcmp(e->d_name, keep) == 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) < 0 && errno != ENOENT) {
            rc = -errno;
        }
    }
    closedir(d);
    char path[8192];
    snprintf(path, sizeof(path), "%s/%s", dir, keep);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        return -errno;
    }
    close(fd);
    int frc = spool__fsync_dir(dir);
    return rc < 0 ? rc : frc;
}

int spool__shrink_apply(spool_plog *log, const spool_topic_conf *topics, size_t ntopics,
                        const spool_plog_consumer_conf *cons, size_t ncons)
{
    spool__shrink *res = NULL;
    size_t n = 0;
    int rc = spool__shrink_find(log->data_dir, topics, ntopics, cons, ncons, &res, &n);
    /* Failures and refusals go to log->last_error: the opener's caller
     * reports them, one line. What is done is logged here. */
    if (rc < 0) {
        snprintf(log->last_error, sizeof(log->last_error),
                 "cannot check the partitions beyond the configured count in %s: %s", log->data_dir,
                 strerror(-rc));
        return rc;
    }
    int drop = (spool_plog_overrides() & SPOOL_PLOG_DROP_PARTITIONS) != 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].undelivered > 0 && !drop) {
            size_t used = strlen(log->last_error);
            snprintf(log->last_error + used, sizeof(log->last_error) - used, "%s%s",
                     used ? "; " : "", res[i].msg);
            rc = -ENOTEMPTY;
        }
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const spool__shrink *s = &res[i];
        const char *name = topics[s->topic].name;
        for (size_t k = 0; k < s->nparts; k++) {
            const spool__shrink_part *sp = &s->parts[k];
            char dir[4400];
            if (sp->bytes == 0) {
                continue; /* nothing there (already emptied) */
            }
            snprintf(dir, sizeof(dir), "%s/topics/%s/%d", log->data_dir, name, sp->partition);
            int erc = empty_partition(dir, sp->end);
            if (erc < 0) {
                snprintf(log->last_error, sizeof(log->last_error), "cannot empty %s: %s", dir,
                         strerror(-erc));
                rc = erc;
                break;
            }
            if (sp->undelivered > 0) {
                spool_log_warn(NULL,
                               "log: %s/%d: partition removed by --drop-partitions "
                               "(partitions: %d): %" PRId64 " records not delivered to every "
                               "output discarded (offsets %" PRId64 "..%" PRId64 ")",
                               name, sp->partition, s->conf_parts, sp->undelivered, sp->begin,
                               sp->end - 1);
            } else {
                spool_log_info(NULL,
                               "log: %s/%d: partition removed (partitions: %d): "
                               "every record (offsets %" PRId64 "..%" PRId64 ") was delivered; "
                               "an empty segment at offset %" PRId64 " stays so offsets "
                               "continue if the count is raised again",
                               name, sp->partition, s->conf_parts, sp->begin, sp->end - 1, sp->end);
            }
        }
    }
    spool__shrink_free(res, n);
    return rc;
}

int spool_plog_preflight(const char *data_dir, const spool_topic_conf *topics, size_t ntopics,
                         const spool_plog_consumer_conf *consumers, size_t nconsumers,
                         void (*fn)(void *arg, int problem, const char *topic, const char *msg),
                         void *arg)
{
    struct stat st;
    int problems = 0;
    if (data_dir == NULL) {
        return 0;
    }
    if (stat(data_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        /* What the open's mkdir -p would meet: data_dir or the nearest
         * existing folder above it is not a folder. Nothing else to read. */
        char msg[4200], at[4096];
        snprintf(at, sizeof(at), "%s", data_dir);
        for (int depth = 0;
             depth < 256 && stat(at, &st) < 0 && (errno == ENOENT || errno == ENOTDIR); depth++) {
            char *slash = strrchr(at, '/');
            if (slash == NULL || slash == at) {
                return 0; /* reached the root or a relative start: fine */
            }
            *slash = '\0';
        }
        if (stat(at, &st) == 0 && !S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof(msg), "cannot create data_dir %s: %s is not a directory", data_dir,
                     at);
            fn(arg, SPOOL_PLOG_DATA_DIR, NULL, msg);
            return 1;
        }
        return 0;
    }
    if (!(spool_plog_overrides() & SPOOL_PLOG_RESET_POSITIONS)) {
        char *msg = NULL;
        int rc = spool__positions_lost(data_dir, NULL, &msg);
        if (rc < 0) {
            return rc;
        }
        if (rc > 0) {
            fn(arg, SPOOL_PLOG_POSITIONS_LOST, NULL, msg);
            problems++;
        }
        free(msg);
    }
    if (!(spool_plog_overrides() & SPOOL_PLOG_DROP_PARTITIONS)) {
        static const spool_plog_consumer_conf none = {0};
        spool__shrink *res = NULL;
        size_t n = 0;
        int rc = spool__shrink_find(data_dir, topics, ntopics, consumers ? consumers : &none,
                                    consumers ? nconsumers : 0, &res, &n);
        if (rc < 0) {
            return rc;
        }
        for (size_t i = 0; i < n; i++) {
            if (res[i].undelivered > 0) {
                fn(arg, SPOOL_PLOG_PARTITIONS_CUT, topics[res[i].topic].name, res[i].msg);
                problems++;
            }
        }
        spool__shrink_free(res, n);
    }
    return problems;
}
