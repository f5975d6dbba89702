/*
 * cli_log.c: `spool topics` and `spool read`, the command-line readers of
 * the partition log. They open it read_only (no lock, no writes), so they
 * show only what the running spool committed (its checkpoint's end
 * offsets) and stop at a batch still being written. `read -f` follows by
 * re-reading the checkpoint every 100 ms until SIGINT, SIGTERM or a closed
 * pipe. Exit status: 0 ok, 1 runtime error, 2 usage, 3 (read) records
 * were skipped: every range that could not be read (corrupt bytes, data
 * moved aside by an earlier recovery, or lost before a sync) is named on
 * stderr with its offsets, segment file and byte positions.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_log.h"

typedef struct cli_common {
    const char *data_dir;
    const char *config;
    char dir_buf[4096];
    spool_topic_conf *topics;
    size_t ntopics;
    spool_plog_consumer_conf *consumers; /* the config's outputs (with -c) */
    size_t nconsumers;
} cli_common;

/* Consumes --data-dir/-c at argv[*i]; 1 if taken, 0 if not ours, -1 usage. */
static int common_arg(cli_common *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--data-dir") == 0 || strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "spool: %s needs a value\n", a);
            return -1;
        }
        if (a[1] == '-' && a[2] == 'd') {
            c->data_dir = argv[++*i];
        } else {
            c->config = argv[++*i];
        }
        return 1;
    }
    if (strncmp(a, "--data-dir=", 11) == 0) {
        c->data_dir = a + 11;
        return 1;
    }
    return 0;
}

static void common_free(cli_common *c)
{
    for (size_t i = 0; i < c->ntopics; i++) {
        free(c->topics[i].name);
    }
    free(c->topics);
    spool_config_consumers_free(c->consumers, c->nconsumers);
}

/* Opens the log read_only. Returns an exit status (0 ok). */
static int common_open(cli_common *c, spool_plog **log)
{
    if (c->data_dir == NULL && c->config == NULL) {
        fprintf(stderr, "spool: give --data-dir DIR or -c FILE\n");
        return 2;
    }
    if (c->data_dir == NULL) {
        if (spool_config_data_dir(c->config, c->dir_buf, sizeof(c->dir_buf), &c->topics,
                                  &c->ntopics, &c->consumers, &c->nconsumers) < 0) {
            return 2; /* spool_config_data_dir printed why (file:line:column) */
        }
        c->data_dir = c->dir_buf;
    }
    char why[512] = "";
    spool_plog_options opt = {.data_dir = c->data_dir,
                              .topics = c->topics,
                              .topic_count = c->ntopics,
                              .read_only = 1,
                              .error = why,
                              .error_cap = sizeof(why)};
    int rc = spool_plog_open(&opt, log);
    if (rc < 0) {
        fprintf(stderr, "spool: cannot open the log in %s: %s\n", c->data_dir,
                why[0] ? why : strerror(-rc));
        return 1;
    }
    return 0;
}

/* ---- spool topics ---- */

/* Adds a cursor at the partition's beginning (offset -1) for every
 * configured consumer with none saved: an output that never saved a
 * cursor starts at the beginning, so its lag is the whole partition. */
static void add_configured(spool_plog *log, spool_plog_cursor_lines *l,
                           const spool_plog_consumer_conf *cons, size_t ncons)
{
    for (size_t i = 0; i < ncons; i++) {
        for (size_t k = 0; k < cons[i].topic_count; k++) {
            int t = spool_plog_topic_index(log, cons[i].topics[k]);
            const spool_topic_conf *tc = spool_plog_topic_conf(log, t);
            for (int32_t p = 0; tc != NULL && p < tc->partitions; p++) {
                if (!spool_plog_cursor_lines_find(l, cons[i].name, tc->name, p)) {
                    (void)spool_plog_cursor_lines_add(l, cons[i].name, tc->name, p, -1);
                }
            }
        }
    }
}

/* The saved cursors and the configured consumers without one; a line
 * that could not be stored (out of memory) is left out of the lag. */
static void collect_lags(spool_plog *log, spool_plog_cursor_lines *l,
                         const spool_plog_consumer_conf *cons, size_t ncons)
{
    (void)spool_plog_cursor_lines_read(log, l);
    add_configured(log, l, cons, ncons);
}

/* The next consumer at or after *k reading topic/partition, with its lag
 * in *lag (records from its cursor, or from the beginning, to the end);
 * NULL after the last. */
static const spool_plog_cursor_line *next_lag(const spool_plog_cursor_lines *l, size_t *k,
                                              const char *topic, int32_t partition,
                                              const spool_partition_info *info, int64_t *lag)
{
    for (; *k < l->count; (*k)++) {
        const spool_plog_cursor_line *e = &l->items[*k];
        if (e->partition != partition || strcmp(e->topic, topic) != 0) {
            continue;
        }
        int64_t from = e->offset > info->begin_offset ? e->offset : info->begin_offset;
        *lag = info->end_offset > from ? info->end_offset - from : 0;
        (*k)++;
        return e;
    }
    return NULL;
}

static int buf_json_str(spool_buf *out, const char *s)
{
    return spool_json_append_string(out, s, strlen(s));
}

int spool_plog_topics_json(spool_plog *log, const spool_plog_consumer_conf *consumers,
                           size_t nconsumers, spool_buf *out)
{
    spool_plog_cursor_lines lags = {0};
    int rc = 0;
    collect_lags(log, &lags, consumers, nconsumers);
    rc |= spool_buf_printf(out, "{\"topics\":[");
    for (size_t t = 0; t < spool_plog_topic_count(log); t++) {
        const spool_topic_conf *tc = spool_plog_topic_conf(log, (int)t);
        rc |= spool_buf_printf(out, "%s{\"name\":", t ? "," : "");
        rc |= buf_json_str(out, tc->name);
        rc |= spool_buf_printf(out, ",\"partitions\":[");
        int firstp = 1;
        for (int32_t p = 0; p < tc->partitions; p++) {
            spool_partition_info info;
            if (spool_plog_partition_info(log, (int)t, p, &info) < 0) {
                continue;
            }
            rc |= spool_buf_printf(out,
                                   "%s{\"partition\":%d,\"begin\":%" PRId64 ",\"end\":%" PRId64
                                   ",\"bytes\":%" PRId64 ",\"segments\":%d,\"dropped\":%" PRId64
                                   ",\"lag\":{",
                                   firstp ? "" : ",", p, info.begin_offset, info.end_offset,
                                   info.bytes, info.segments, info.dropped);
            firstp = 0;
            int first = 1;
            size_t k = 0;
            int64_t lag;
            const spool_plog_cursor_line *e;
            while ((e = next_lag(&lags, &k, tc->name, p, &info, &lag)) != NULL) {
                rc |= spool_buf_printf(out, "%s", first ? "" : ",");
                rc |= buf_json_str(out, e->consumer);
                rc |= spool_buf_printf(out, ":%" PRId64, lag);
                first = 0;
            }
            rc |= spool_buf_printf(out, "}}");
        }
        rc |= spool_buf_printf(out, "]}");
    }
    rc |= spool_buf_printf(out, "]}");
    spool_plog_cursor_lines_free(&lags);
    return rc ? -ENOMEM : 0;
}

static const char topics_usage[] =
    "usage: spool topics [-c FILE | --data-dir DIR] [--json]\n"
    "  per partition: beginning and end offsets, bytes, segments, and each output's lag\n"
    "  (with -c, also the config's outputs that never saved a cursor: lag from the beginning)\n";

int spool_cli_topics(int argc, char **argv)
{
    cli_common c = {0};
    int json = 0;
    for (int i = 0; i < argc; i++) {
        int r = common_arg(&c, argc, argv, &i);
        if (r < 0) {
            return 2;
        }
        if (r > 0) {
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(topics_usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "spool topics: unknown argument '%s'\n%s", argv[i], topics_usage);
            return 2;
        }
    }
    spool_plog *log = NULL;
    int rc = common_open(&c, &log);
    if (rc != 0) {
        common_free(&c);
        return rc;
    }
    if (json) {
        spool_buf jb = {0};
        rc = spool_plog_topics_json(log, c.consumers, c.nconsumers, &jb);
        if (rc == 0) {
            fwrite(jb.data, 1, jb.len, stdout);
            fputc('\n', stdout);
        }
        spool_buf_free(&jb);
        spool_plog_close(log);
        common_free(&c);
        return rc == 0 && fflush(stdout) == 0 ? 0 : 1;
    }
    spool_plog_cursor_lines lags = {0};
    collect_lags(log, &lags, c.consumers, c.nconsumers);
    printf("%-20s %5s %12s %12s %14s %8s  %s\n", "TOPIC", "PART", "BEGIN", "END", "BYTES",
           "SEGMENTS", "LAG");
    for (size_t t = 0; t < spool_plog_topic_count(log); t++) {
        const spool_topic_conf *tc = spool_plog_topic_conf(log, (int)t);
        for (int32_t p = 0; p < tc->partitions; p++) {
            spool_partition_info info;
            if (spool_plog_partition_info(log, (int)t, p, &info) < 0) {
                continue;
            }
            printf("%-20s %5d %12" PRId64 " %12" PRId64 " %14" PRId64 " %8d  ", tc->name, p,
                   info.begin_offset, info.end_offset, info.bytes, info.segments);
            int first = 1;
            size_t k = 0;
            int64_t lag;
            const spool_plog_cursor_line *e;
            while ((e = next_lag(&lags, &k, tc->name, p, &info, &lag)) != NULL) {
                printf("%s%s=%" PRId64, first ? "" : " ", e->consumer, lag);
                first = 0;
            }
            printf("%s\n", first ? "-" : "");
        }
    }
    spool_plog_cursor_lines_free(&lags);
    spool_plog_close(log);
    common_free(&c);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- spool read ---- */

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static const char read_usage[] =
    "usage: spool read TOPIC [-c FILE | --data-dir DIR] [-p N]\n"
    "                  [--from beginning|end|OFFSET|@TIMESTAMP_MS] [-n COUNT] [-f]\n"
    "                  [--format FMT]\n"
    "  FMT tokens: %k key, %v value, %o offset, %p partition, %T timestamp (ms),\n"
    "  %h headers (k=v,...), %t topic, %% percent; escapes \\n \\t \\\\. Default \"%v\\n\".\n"
    "  Exit status 3 when a range could not be read (corrupt, moved aside or lost):\n"
    "  each is named on stderr with its offsets, segment file and byte positions.\n";

static void put_bytes(const void *p, int32_t len)
{
    if (p != NULL && len > 0) {
        fwrite(p, 1, (size_t)len, stdout);
    }
}

static void print_record(const char *fmt, const char *topic, const spool_record *r)
{
    for (const char *f = fmt; *f; f++) {
        if (*f == '\\' && f[1]) {
            f++;
            putchar(*f == 'n' ? '\n' : *f == 't' ? '\t' : *f == 'r' ? '\r' : *f == '0' ? '\0' : *f);
            continue;
        }
        if (*f != '%' || !f[1]) {
            putchar(*f);
            continue;
        }
        f++;
        switch (*f) {
        case 'k':
            put_bytes(r->key, r->key_len);
            break;
        case 'v':
            put_bytes(r->value, r->value_len);
            break;
        case 'o':
            printf("%" PRId64, r->offset);
            break;
        case 'p':
            printf("%d", r->partition);
            break;
        case 'T':
            printf("%" PRId64, r->timestamp);
            break;
        case 't':
            fputs(topic, stdout);
            break;
        case 'h':
            for (uint32_t i = 0; i < r->header_count; i++) {
                const spool_header *h = &r->headers[i];
                if (i > 0) {
                    putchar(',');
                }
                fwrite(h->key, 1, h->key_len, stdout);
                putchar('=');
                put_bytes(h->value, h->value_len);
            }
            break;
        case '%':
            putchar('%');
            break;
        default:
            putchar('%');
            putchar(*f);
            break;
        }
    }
}

typedef struct read_opts {
    const char *topic;
    int32_t partition; /* -1 = all */
    const char *from;
    int64_t count; /* -1 = no limit */
    int follow;
    const char *format;
} read_opts;

static int parse_read_args(int argc, char **argv, cli_common *c, read_opts *o)
{
    o->partition = -1;
    o->from = "beginning";
    o->count = -1;
    o->format = "%v\\n";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int r = common_arg(c, argc, argv, &i);
        if (r < 0) {
            return 2;
        }
        if (r > 0) {
            continue;
        }
        int has_val = i + 1 < argc;
        char *end = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(read_usage, stdout);
            return -1;
        } else if (strcmp(a, "-p") == 0 || strcmp(a, "--partition") == 0) {
            if (!has_val) {
                goto missing;
            }
            long v = strtol(argv[++i], &end, 10);
            if (*end != '\0' || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "spool read: bad partition '%s'\n", argv[i]);
                return 2;
            }
            o->partition = (int32_t)v;
        } else if (strcmp(a, "--from") == 0 || strcmp(a, "-o") == 0) {
            if (!has_val) {
                goto missing;
            }
            o->from = argv[++i];
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "--count") == 0) {
            if (!has_val) {
                goto missing;
            }
            long long v = strtoll(argv[++i], &end, 10);
            if (*end != '\0' || v < 0) {
                fprintf(stderr, "spool read: bad count '%s'\n", argv[i]);
                return 2;
            }
            o->count = v;
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0) {
            o->follow = 1;
        } else if (strcmp(a, "--format") == 0) {
            if (!has_val) {
                goto missing;
            }
            o->format = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "spool read: unknown option '%s'\n%s", a, read_usage);
            return 2;
        } else if (o->topic == NULL) {
            o->topic = a;
        } else {
            fprintf(stderr, "spool read: unexpected argument '%s'\n%s", a, read_usage);
            return 2;
        }
        continue;
    missing:
        fprintf(stderr, "spool read: %s needs a value\n", a);
        return 2;
    }
    if (o->topic == NULL) {
        fprintf(stderr, "spool read: which topic?\n%s", read_usage);
        return 2;
    }
    const char *f = o->from;
    if (strcmp(f, "beginning") && strcmp(f, "end")) {
        char *end = NULL;
        strtoll(f[0] == '@' ? f + 1 : f, &end, 10);
        if (end == (f[0] == '@' ? f + 1 : f) || *end != '\0') {
            fprintf(stderr, "spool read: bad --from '%s' (beginning, end, OFFSET or @MS)\n", f);
            return 2;
        }
    }
    return 0;
}

static int64_t start_offset(spool_plog *log, int t, int32_t p, const char *from)
{
    spool_partition_info info;
    spool_plog_partition_info(log, t, p, &info);
    if (strcmp(from, "beginning") == 0) {
        return info.begin_offset;
    }
    if (strcmp(from, "end") == 0) {
        return info.end_offset;
    }
    if (from[0] == '@') {
        int64_t off = info.end_offset;
        spool_plog_offset_for_time(log, t, p, strtoll(from + 1, NULL, 10), &off);
        return off;
    }
    int64_t off = strtoll(from, NULL, 10);
    return off < info.begin_offset ? info.begin_offset : off;
}

/* State of one `spool read`: what was skipped, and what was reported. */
typedef struct read_ctx {
    spool_plog *log;
    const read_opts *o;
    const char *data_dir;
    int topic;
    int64_t *reported; /* from_offset of each range reported, per partition pair */
    int32_t *reported_part;
    size_t nreported, cap;
    int skipped;      /* a range was skipped: exit status 3 */
    uint8_t *started; /* per partition: read once already */
} read_ctx;

static int was_reported(read_ctx *rc, int32_t p, int64_t from)
{
    for (size_t i = 0; i < rc->nreported; i++) {
        if (rc->reported_part[i] == p && rc->reported[i] == from) {
            return 1;
        }
    }
    if (rc->nreported == rc->cap) {
        size_t cap = rc->cap ? rc->cap * 2 : 16;
        int64_t *a = realloc(rc->reported, cap * sizeof(*a));
        if (a != NULL) {
            rc->reported = a;
        }
        int32_t *b = realloc(rc->reported_part, cap * sizeof(*b));
        if (b != NULL) {
            rc->reported_part = b;
        }
        if (a == NULL || b == NULL) {
            return 0;
        }
        rc->cap = cap;
    }
    rc->reported[rc->nreported] = from;
    rc->reported_part[rc->nreported++] = p;
    return 0;
}

/* Names one unreadable range on stderr (once), with where it lies on disk. */
static void report_range(read_ctx *rc, int32_t p, const spool_plog_bad_range *b, const char *lead)
{
    rc->skipped = 1;
    if (was_reported(rc, p, b->from_offset)) {
        return;
    }
    char seg[4500];
    snprintf(seg, sizeof(seg), "%s/topics/%s/%d/%020" PRId64 ".log", rc->data_dir, rc->o->topic, p,
             b->segment_base);
    fprintf(stderr,
            "spool read: %s/%d: %soffsets %" PRId64 "..%" PRId64 " (%" PRId64 " offsets) skipped: ",
            rc->o->topic, p, lead ? lead : "", b->from_offset, b->to_offset - 1,
            b->to_offset - b->from_offset);
    if (b->moved) {
        fprintf(stderr, "moved aside as corrupt by `spool run` (see %s.corrupt*)", seg);
    } else if (b->from_pos == b->to_pos) {
        fprintf(stderr, "missing from %s before byte %" PRId64 " (lost before it was synced)", seg,
                b->from_pos);
    } else {
        fprintf(stderr, "corrupt data in %s, bytes %" PRId64 "..%" PRId64, seg, b->from_pos,
                b->to_pos - 1);
    }
    fprintf(stderr, "; reading resumes at offset %" PRId64 "\n", b->to_offset);
}

/* Reports every unreadable range of p that overlaps [from, to): the
 * offsets a read just passed over or skipped. 1 if one was found. */
static int report_passed(read_ctx *rc, int32_t p, int64_t from, int64_t to, const char *lead)
{
    spool_plog_bad_range b;
    int found = 0;
    for (size_t k = 0; spool_plog_bad_range_get(rc->log, rc->topic, p, k, &b) == 0; k++) {
        if (b.from_offset < to && from < b.to_offset) {
            report_range(rc, p, &b, lead);
            found = 1;
        }
    }
    return found;
}

/* Skips the corrupt data at `at` and reports it; sets *next. */
static void skip_corrupt(read_ctx *rc, int32_t p, int64_t at, int64_t *next)
{
    char lead[128];
    const char *f = rc->o->from;
    lead[0] = '\0';
    if (!rc->started[p] && strcmp(f, "beginning") != 0 && strcmp(f, "end") != 0) {
        snprintf(lead, sizeof(lead), "--from %s falls in an unreadable range: ", f);
    }
    spool_plog_skip_corrupt(rc->log, rc->topic, p, at, next);
    if (!report_passed(rc, p, at, *next > at ? *next : at + 1, lead)) {
        rc->skipped = 1;
        fprintf(stderr,
                "spool read: %s/%d: corrupt batch at offset %" PRId64 " skipped; "
                "reading resumes at offset %" PRId64 "\n",
                rc->o->topic, p, at, *next);
    }
}

/* Reads one chunk of partition p at *next and prints it. Returns records
 * printed (>= 0), or -1 on a runtime error; *moved when *next advanced. */
static int64_t read_chunk(read_ctx *rc, int32_t p, int64_t *next, int64_t budget, spool_buf *buf,
                          spool_rb_decoded *d, int *moved)
{
    const read_opts *o = rc->o;
    int64_t n2;
    int64_t start = *next;
    buf->len = 0;
    long n = spool_plog_read(rc->log, rc->topic, p, *next, 1 << 20, buf, &n2);
    if (n == -EBADMSG) {
        skip_corrupt(rc, p, start, next);
        rc->started[p] = 1;
        *moved = *next != start;
        return 0;
    }
    rc->started[p] = 1;
    if (n < 0) {
        fprintf(stderr, "spool read: %s/%d: %s\n", o->topic, p, strerror((int)-n));
        return -1;
    }
    if (n == 0) {
        /* Nothing readable here: the start of a range with no bytes left
         * (moved aside, or lost before a sync)? */
        spool_plog_bad_range b;
        for (size_t k = 0; spool_plog_bad_range_get(rc->log, rc->topic, p, k, &b) == 0; k++) {
            if (start >= b.from_offset && start < b.to_offset) {
                report_range(rc, p, &b, NULL);
                *next = b.to_offset;
                *moved = 1;
            }
        }
        return 0;
    }
    int64_t printed = 0;
    spool_rb_decoded_reset(d);
    for (size_t off = 0; off < buf->len;) {
        spool_rb_info bi;
        long sz = spool_rb_parse_header(buf->data + off, buf->len - off, 1, &bi);
        if (sz > 0) {
            size_t before = d->count;
            if (spool_rb_decode(buf->data + off, (size_t)sz, p, start, d) < 0) {
                d->count = before;
                int64_t skip_to;
                skip_corrupt(rc, p, bi.base_offset, &skip_to);
            }
            off += (size_t)sz;
            continue;
        }
        /* A bad CRC: a readable header tells which offsets it held. */
        long hsz = spool_rb_parse_header(buf->data + off, buf->len - off, 0, &bi);
        int64_t at = hsz > 0 ? bi.base_offset : n2;
        int64_t skip_to;
        skip_corrupt(rc, p, at, &skip_to);
        if (hsz <= 0) {
            n2 = skip_to > n2 ? skip_to : n2;
            break;
        }
        off += (size_t)hsz;
    }
    for (size_t i = 0; i < d->count && (budget < 0 || printed < budget); i++) {
        print_record(o->format, o->topic, &d->records[i]);
        printed++;
        if (budget >= 0 && printed == budget) {
            n2 = d->records[i].offset + 1;
        }
    }
    report_passed(rc, p, start, n2, NULL);
    *moved = n2 != start;
    *next = n2;
    return printed;
}

int spool_cli_read(int argc, char **argv)
{
    cli_common c = {0};
    read_opts o = {0};
    int rc = parse_read_args(argc, argv, &c, &o);
    if (rc != 0) {
        return rc < 0 ? 0 : rc;
    }
    spool_plog *log = NULL;
    spool_buf buf = {0};
    spool_rb_decoded d = {0};
    int64_t *next = NULL;
    read_ctx rc_ = {.o = &o};
    read_ctx *rx = &rc_;
    if ((rc = common_open(&c, &log)) != 0) {
        goto out;
    }
    int t = spool_plog_topic_index(log, o.topic);
    if (t < 0) {
        fprintf(stderr, "spool read: no topic '%s' in %s\n", o.topic, c.data_dir);
        rc = 1;
        goto out;
    }
    int32_t nparts = spool_plog_topic_conf(log, t)->partitions;
    if (o.partition >= nparts) {
        fprintf(stderr, "spool read: topic '%s' has %d partitions\n", o.topic, nparts);
        rc = 1;
        goto out;
    }
    next = calloc((size_t)nparts, sizeof(*next));
    if (next == NULL) {
        rc = 1;
        goto out;
    }
    rx->log = log;
    rx->data_dir = c.data_dir;
    rx->topic = t;
    if ((rx->started = calloc((size_t)nparts, 1)) == NULL) {
        rc = 1;
        goto out;
    }
    for (int32_t p = 0; p < nparts; p++) {
        next[p] = start_offset(log, t, p, o.from);
        spool_plog_bad_range b;
        for (size_t k = 0; spool_plog_bad_range_get(log, t, p, k, &b) == 0; k++) {
            if ((o.partition < 0 || o.partition == p) && next[p] >= b.from_offset &&
                next[p] < b.to_offset) {
                char lead[128];
                lead[0] = '\0';
                if (strcmp(o.from, "beginning") != 0 && strcmp(o.from, "end") != 0) {
                    snprintf(lead, sizeof(lead),
                             "--from %s falls in an unreadable range: ", o.from);
                }
                report_range(rx, p, &b, lead);
                next[p] = b.to_offset;
            }
        }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int64_t printed = 0;
    while (!stop_flag && (o.count < 0 || printed < o.count)) {
        int64_t round = 0;
        int progress = 0;
        for (int32_t p = 0; p < nparts && (o.count < 0 || printed < o.count); p++) {
            if (o.partition >= 0 && p != o.partition) {
                continue;
            }
            int moved = 0;
            int64_t got =
                read_chunk(rx, p, &next[p], o.count < 0 ? -1 : o.count - printed, &buf, &d, &moved);
            if (got < 0) {
                rc = 1;
                goto out;
            }
            printed += got;
            round += got;
            progress |= moved;
        }
        if (ferror(stdout) || fflush(stdout) != 0) {
            rc = errno == EPIPE ? 0 : 1;
            goto out;
        }
        if (round == 0 && !progress) {
            if (!o.follow) {
                break;
            }
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
            if (spool_plog_refresh(log) < 0) {
                rc = 1;
                goto out;
            }
        }
    }
    rc = rx->skipped ? 3 : 0;
    if (rx->skipped) {
        fprintf(stderr, "spool read: %s: some records could not be read (exit status 3)\n",
                o.topic);
    }
out:
    free(rx->reported);
    free(rx->reported_part);
    free(rx->started);
    free(next);
    spool_buf_free(&buf);
    spool_rb_decoded_free(&d);
    spool_plog_close(log);
    common_free(&c);
    return rc;
}
