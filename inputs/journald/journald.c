/*
 * journald.c: the `journald` input: systemd journal entries as records.
 *
 * Reads the local journal, or given journal files (`files:`) or a
 * directory of them (`directory:`), through libsystemd's sd-journal API,
 * filtered by `units` (_SYSTEMD_UNIT=...) and `match` ("FIELD=value";
 * libsystemd ORs matches on one field and ANDs different fields). Each
 * entry becomes one record: MESSAGE is the value, every other field a
 * header under its journal name (_SYSTEMD_UNIT, PRIORITY, _PID, ...), plus
 * `host` and `input`; the timestamp is the entry's realtime timestamp.
 *
 * Position: the cursor of the last entry of each batch is attached to the
 * batch (spool_batch_set_position, source "journal"), so it becomes
 * durable together with the records. On start the stored cursor is sought
 * and its entry skipped: no entry is lost or repeated across a restart or
 * a kill -9. Without a stored cursor, `read_from` says where to begin.
 * A batch that could not be handed over at stop is simply not recorded:
 * its entries are read again next time.
 *
 * It does not: follow journal namespaces, or read remote journals.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-journal.h>

#include "spool/spool.h"

#define JD_SOURCE "journal"
#define JD_BATCH_RECORDS 5000
#define JD_BATCH_BYTES (1024 * 1024)
#define JD_WAIT_USEC 200000 /* sd_journal_wait timeout: bounds stop latency */
#define JD_MAX_HEADERS 128

typedef struct jd_input {
    /* Options. */
    spool_strlist files;
    char *directory;
    spool_strlist units;
    spool_strlist match;
    int read_from; /* 0 beginning, 1 end */
    /* State. */
    spool_instance *ins;
    sd_journal *j;
    char *cursor;                     /* cursor of the last entry appended, owned */
    int have_current;                 /* the journal is positioned on an unread entry */
    spool_buf scratch;                /* copies of the entry's fields */
    size_t field_off[JD_MAX_HEADERS]; /* offsets in scratch of field name / value */
    size_t field_nlen[JD_MAX_HEADERS];
    size_t field_vlen[JD_MAX_HEADERS];
} jd_input;

static const char *const read_from_names[] = {"beginning", "end", NULL};

static const spool_option jd_options[] = {
    SPOOL_OPT_STRLIST("files", jd_input, files, 0,
                      "journal files to read instead of the local journal"),
    SPOOL_OPT_STR("directory", jd_input, directory, NULL, 0,
                  "a directory of journal files to read instead of the local journal"),
    SPOOL_OPT_STRLIST("units", jd_input, units, 0, "only entries of these systemd units"),
    SPOOL_OPT_STRLIST("match", jd_input, match, 0,
                      "only entries matching FIELD=value (same field: OR; different: AND)"),
    SPOOL_OPT_CHOICE("read_from", jd_input, read_from, "end", read_from_names,
                     "with no stored cursor: beginning of the journal, or only new entries"),
    SPOOL_OPT_END,
};

static int jd_check(spool_instance *ins, void *ctx)
{
    jd_input *s = ctx;
    int rc = 0;
    if (s->files.count > 0 && s->directory != NULL) {
        spool_config_error(ins, "directory", "give files or directory, not both");
        rc = -EINVAL;
    }
    for (size_t i = 0; i < s->files.count; i++) {
        if (spool_check_file(ins, "files", s->files.items[i]) < 0) {
            rc = -EINVAL;
            continue;
        }
        /* Opened as init opens them, one by one to name the bad one. */
        const char *one[2] = {s->files.items[i], NULL};
        sd_journal *j = NULL;
        int e = sd_journal_open_files(&j, one, 0);
        if (e < 0) {
            spool_config_error(ins, "files", "%s is not a readable journal file: %s",
                               s->files.items[i], strerror(-e));
            rc = -EINVAL;
        } else {
            sd_journal_close(j);
        }
    }
    if (spool_check_directory(ins, "directory", s->directory) < 0) {
        rc = -EINVAL;
    }
    for (size_t i = 0; i < s->match.count; i++) {
        const char *eq = strchr(s->match.items[i], '=');
        if (eq == NULL || eq == s->match.items[i]) {
            spool_config_error(ins, "match", "'%s' is not FIELD=value", s->match.items[i]);
            rc = -EINVAL;
        }
    }
    return rc;
}

static int jd_add_match(jd_input *s, const char *field, const char *value)
{
    size_t n = strlen(field) + strlen(value) + 2;
    char *m = malloc(n);
    if (m == NULL) {
        return -ENOMEM;
    }
    snprintf(m, n, "%s=%s", field, value);
    int rc = sd_journal_add_match(s->j, m, 0);
    if (rc < 0) {
        spool_log_error(s->ins, "match '%s': %s", m, strerror(-rc));
    }
    free(m);
    return rc;
}

static int jd_init(spool_instance *ins, void *ctx)
{
    jd_input *s = ctx;
    int rc = jd_check(ins, s);
    if (rc < 0) {
        return rc;
    }
    s->ins = ins;
    if (s->files.count > 0) {
        const char **paths = calloc(s->files.count + 1, sizeof(*paths));
        if (paths == NULL) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < s->files.count; i++) {
            paths[i] = s->files.items[i];
        }
        rc = sd_journal_open_files(&s->j, paths, 0);
        free(paths);
    } else if (s->directory != NULL) {
        rc = sd_journal_open_directory(&s->j, s->directory, 0);
    } else {
        rc = sd_journal_open(&s->j, SD_JOURNAL_LOCAL_ONLY);
    }
    if (rc < 0) {
        spool_log_error(ins, "opening the journal%s%s: %s", s->directory ? " in " : "",
                        s->directory ? s->directory : "", strerror(-rc));
        s->j = NULL;
        return rc;
    }
    for (size_t i = 0; i < s->units.count && rc >= 0; i++) {
        rc = jd_add_match(s, "_SYSTEMD_UNIT", s->units.items[i]);
    }
    for (size_t i = 0; i < s->match.count && rc >= 0; i++) {
        rc = sd_journal_add_match(s->j, s->match.items[i], 0);
        if (rc < 0) {
            spool_log_error(ins, "match '%s': %s", s->match.items[i], strerror(-rc));
        }
    }
    if (rc < 0) {
        return rc;
    }
    return spool_buf_reserve(&s->scratch, 64 * 1024);
}

/* Positions the journal: after the stored cursor, or per read_from. */
static int jd_seek(jd_input *s)
{
    char buf[1024];
    size_t len = 0;
    int rc = spool_input_get_position(s->ins, JD_SOURCE, buf, sizeof(buf) - 1, &len);
    if (rc == 0 && len < sizeof(buf)) {
        buf[len] = '\0';
        rc = sd_journal_seek_cursor(s->j, buf);
        if (rc >= 0) {
            rc = sd_journal_next(s->j);
            if (rc > 0 && sd_journal_test_cursor(s->j, buf) <= 0) {
                /* The entry itself is gone (vacuumed): this one is unread. */
                s->have_current = 1;
                spool_log_warn(s->ins, "stored journal cursor not found; resuming at the next "
                                       "entry after it");
            }
            s->cursor = strdup(buf);
            spool_log_info(s->ins, "resuming after the stored journal cursor");
            return 0;
        }
        spool_log_warn(s->ins, "stored journal cursor is invalid (%s); using read_from",
                       strerror(-rc));
    }
    if (s->read_from == 0) {
        return sd_journal_seek_head(s->j);
    }
    rc = sd_journal_seek_tail(s->j);
    if (rc >= 0) {
        sd_journal_previous(s->j); /* on the last entry: next() gives only new ones */
    }
    return rc;
}

/* Appends the current entry to b. */
static int jd_append_entry(jd_input *s, spool_batch *b)
{
    const void *data;
    size_t len;
    size_t nf = 0;
    int msg = -1;
    s->scratch.len = 0;
    sd_journal_restart_data(s->j);
    while (sd_journal_enumerate_data(s->j, &data, &len) > 0) {
        const char *eq = memchr(data, '=', len);
        if (eq == NULL || nf >= JD_MAX_HEADERS) {
            continue;
        }
        size_t used = s->scratch.len;
        if (spool_buf_append(&s->scratch, data, len) < 0) {
            return -ENOMEM;
        }
        size_t name_len = (size_t)(eq - (const char *)data);
        if (name_len == 7 && memcmp(data, "MESSAGE", 7) == 0) {
            msg = (int)nf;
        }
        s->field_off[nf] = used;
        s->field_nlen[nf] = name_len;
        s->field_vlen[nf] = len - name_len - 1;
        nf++;
    }
    spool_header h[JD_MAX_HEADERS + 2];
    uint32_t hn = 0;
    const char *host = spool_hostname();
    const char *name = spool_instance_name(s->ins);
    h[hn++] = (spool_header){"host", 4, (const uint8_t *)host, (int32_t)strlen(host)};
    h[hn++] = (spool_header){"input", 5, (const uint8_t *)name, (int32_t)strlen(name)};
    spool_record r;
    memset(&r, 0, sizeof(r));
    r.key_len = -1;
    r.value = (const uint8_t *)"";
    r.value_len = 0;
    for (size_t i = 0; i < nf; i++) {
        const uint8_t *f = s->scratch.data + s->field_off[i];
        if ((int)i == msg) {
            r.value = f + s->field_nlen[i] + 1;
            r.value_len = (int32_t)s->field_vlen[i];
            continue;
        }
        h[hn++] = (spool_header){(const char *)f, (uint32_t)s->field_nlen[i],
                                 f + s->field_nlen[i] + 1, (int32_t)s->field_vlen[i]};
    }
    uint64_t usec = 0;
    if (sd_journal_get_realtime_usec(s->j, &usec) >= 0) {
        r.timestamp = (int64_t)(usec / 1000);
    }
    r.headers = h;
    r.header_count = hn;
    int rc = spool_batch_append(b, &r);
    if (rc < 0) {
        return rc;
    }
    char *c = NULL;
    if (sd_journal_get_cursor(s->j, &c) >= 0) {
        free(s->cursor);
        s->cursor = c;
    }
    return 0;
}

/* Hands the batch over with its cursor; waits while the pipeline is full.
 * 0 (taken or empty), or -ESHUTDOWN / -ECANCELED (stopping: not taken). */
static int jd_submit(jd_input *s, spool_batch **bp)
{
    spool_batch *b = *bp;
    if (b == NULL || spool_batch_count(b) == 0) {
        return 0;
    }
    if (s->cursor != NULL) {
        int rc = spool_batch_set_position(b, JD_SOURCE, s->cursor, strlen(s->cursor));
        if (rc < 0) {
            return rc;
        }
    }
    for (;;) {
        int rc = spool_input_submit(s->ins, b, spool_instance_stopping(s->ins) ? 5000 : 200);
        if (rc == 0) {
            *bp = NULL;
            return 0;
        }
        if (rc != -EAGAIN || spool_instance_stopping(s->ins)) {
            return rc == -EAGAIN ? -ECANCELED : rc;
        }
    }
}

static int jd_run(spool_instance *ins, void *ctx)
{
    jd_input *s = ctx;
    spool_batch *b = NULL;
    int rc = jd_seek(s);
    if (rc < 0) {
        spool_log_error(ins, "seeking the journal: %s", strerror(-rc));
        return rc;
    }
    int64_t first_ms = 0;
    while (!spool_instance_stopping(ins)) {
        int r = s->have_current ? 1 : sd_journal_next(s->j);
        s->have_current = 0;
        if (r < 0) {
            spool_log_error(ins, "reading the journal: %s", strerror(-r));
            sd_journal_wait(s->j, JD_WAIT_USEC);
            continue;
        }
        if (r == 0) {
            if (jd_submit(s, &b) < 0) {
                break;
            }
            sd_journal_wait(s->j, JD_WAIT_USEC);
            continue;
        }
        if (b == NULL) {
            b = spool_batch_create(ins);
            if (b == NULL) {
                rc = -ENOMEM;
                break;
            }
            first_ms = spool_monotonic_ms();
        }
        if (jd_append_entry(s, b) < 0) {
            spool_log_error(ins, "out of memory reading a journal entry");
            rc = -ENOMEM;
            break;
        }
        if (spool_batch_count(b) >= JD_BATCH_RECORDS || spool_batch_bytes(b) >= JD_BATCH_BYTES ||
            spool_monotonic_ms() - first_ms >= 200) {
            if (jd_submit(s, &b) < 0) {
                break;
            }
        }
    }
    if (b != NULL && jd_submit(s, &b) < 0) {
        spool_log_warn(ins,
                       "stopping: %zu journal entries not handed over; they will be read "
                       "again at the next start",
                       spool_batch_count(b));
    }
    spool_batch_destroy(b);
    return rc;
}

static void jd_destroy(spool_instance *ins, void *ctx)
{
    jd_input *s = ctx;
    (void)ins;
    if (s->j != NULL) {
        sd_journal_close(s->j);
        s->j = NULL;
    }
    free(s->cursor);
    s->cursor = NULL;
    spool_buf_free(&s->scratch);
}

const spool_plugin spool_plugin_journald = {
    SPOOL_PLUGIN_ABI, /* with the signature: also built as an external .so */
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "journald",
    .description = "systemd journal entries (local journal, files or a directory), with a "
                   "durable cursor",
    .options = jd_options,
    .context_size = sizeof(jd_input),
    .check = jd_check,
    .init = jd_init,
    .run = jd_run,
    .destroy = jd_destroy,
};
