/*
 * cli_top.c: `spool top`, a live terminal view of a running spool.
 *
 * It reads the agent's HTTP API (service.http.listen) once per interval:
 * GET /metrics (Prometheus text) and GET /health, and turns the samples into
 * one row per input, processor, processor drop reason, output and topic with
 * the counters' totals and their rates between the last two reads. It draws
 * with plain ANSI escape sequences (alternate screen, cursor home, clear to
 * end of line), so it needs no terminfo and works over SSH; the terminal is
 * put in non-canonical no-echo mode and restored on every exit path (q,
 * Ctrl-C, SIGTERM, SIGHUP). With --once, or when stdout is not a terminal,
 * it prints one plain-text snapshot (two reads, an interval apart, so the
 * rates are real) and exits.
 *
 * Invariants: nothing here touches the agent's state (the API is read-only);
 * every network wait is bounded (connect 1 s, the whole request 3 s), so a
 * hung agent never freezes the screen or the q key for longer than that;
 * an unreachable agent is retried every interval and the screen says since
 * when it is unreachable, keeping the last figures it had, marked stale.
 * Rates are per second over the monotonic time between the two reads; a
 * counter that went down (the agent restarted) gives rate 0, not negative.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "cli_top.h"

#define TOP_CONNECT_MS 1000      /* connect timeout */
#define TOP_REQUEST_MS 3000      /* whole request timeout */
#define TOP_BODY_MAX (64u << 20) /* largest response read */
#define TOP_NAME_MAX 128         /* row names are cut to this */
#define TOP_DEFAULT_URL "http://127.0.0.1:2020"

enum row_kind { R_INPUT, R_PROCESSOR, R_DROP, R_OUTPUT, R_TOPIC, R_TOPIC_OUT, R__MAX };
static const char *const kind_names[R__MAX] = {"input",  "processor", "drop",
                                               "output", "topic",     "(topic-output)"};

/* The cumulative values a row carries. */
enum { V_IN, V_OUT, V_ERR, V_RETRY, V_DROP, V_DEAD, V_LAG, V_BYTES, V__MAX };

typedef struct top_row {
    int kind;
    char name[TOP_NAME_MAX];
    char plugin[TOP_NAME_MAX]; /* a drop row: its reason; a topic-output row: the output */
    double v[V__MAX];
    double rate_in, rate_out, rate_err; /* rate_err: errors + retries per second */
    int has_rate;
    int failing; /* the /health reason names it */
} top_row;

typedef struct top_snap {
    top_row *rows;
    size_t n, cap;
    int64_t at_ms; /* monotonic time of the read */
    double rss, mem_reserved, mem_limit;
    char version[64];
} top_snap;

enum sort_mode { S_RATE, S_NAME, S_LAG, S_ERRORS, S__MAX };
static const char *const sort_names[S__MAX] = {"rate", "name", "lag", "errors"};

typedef struct top_state {
    char url[512];
    char host[256];
    int port;
    int64_t interval_ms;
    top_snap cur, prev;
    int have_data;
    int reachable;
    time_t unreachable_since; /* wall clock, 0 while reachable */
    char error[256];
    int healthy;
    char health[512];
    int sort;
    int rows, cols; /* terminal size */
} top_state;

static volatile sig_atomic_t g_quit;
static volatile sig_atomic_t g_resized;

/* ------------------------------------------------------------------------ */
/* HTTP GET over a plain socket, every wait bounded.                        */
/* ------------------------------------------------------------------------ */

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - spool_monotonic_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0) {
            return 0;
        }
        if (rc < 0 && errno != EINTR) {
            return -errno;
        }
        if (rc < 0 && g_quit) {
            return -EINTR;
        }
    }
}

static int connect_to(const char *host, int port, int64_t deadline)
{
    char ps[16];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0) {
        return -EHOSTUNREACH;
    }
    int rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            if (errno != EINPROGRESS) {
                rc = -errno;
                close(fd);
                continue;
            }
            int64_t cdl = spool_monotonic_ms() + TOP_CONNECT_MS;
            rc = wait_fd(fd, POLLOUT, cdl < deadline ? cdl : deadline);
            int err = 0;
            socklen_t len = sizeof(err);
            if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
                rc = -err;
            }
            if (rc < 0) {
                close(fd);
                continue;
            }
        }
        freeaddrinfo(res);
        return fd;
    }
    freeaddrinfo(res);
    return rc;
}

/* GETs path; on success returns the HTTP status and body holds the body
 * (NUL-terminated). Negative errno when the agent cannot be reached. */
static int http_get(const top_state *st, const char *path, spool_buf *body)
{
    int64_t deadline = spool_monotonic_ms() + TOP_REQUEST_MS;
    char req[1024];
    spool_buf raw = {0};
    int rc, fd = connect_to(st->host, st->port, deadline);
    if (fd < 0) {
        return fd;
    }
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: spool-top\r\n"
                     "Connection: close\r\n\r\n",
                     path, st->host, st->port);
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0) {
                goto out;
            }
            continue;
        }
        if (w < 0) {
            rc = -errno;
            goto out;
        }
        off += (size_t)w;
    }
    for (;;) {
        if ((rc = spool_buf_reserve(&raw, 16384)) < 0) {
            goto out;
        }
        ssize_t r = recv(fd, raw.data + raw.len, raw.cap - raw.len - 1, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            if ((rc = wait_fd(fd, POLLIN, deadline)) < 0) {
                goto out;
            }
            continue;
        }
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0) {
            break;
        }
        raw.len += (size_t)r;
        if (raw.len > TOP_BODY_MAX) {
            rc = -EFBIG;
            goto out;
        }
    }
    raw.data[raw.len] = '\0';
    const char *text = (const char *)raw.data;
    const char *hdr_end = strstr(text, "\r\n\r\n");
    int status = 0;
    if (strncmp(text, "HTTP/1.", 7) != 0 || !hdr_end || sscanf(text + 8, " %d", &status) != 1) {
        rc = -EPROTO;
        goto out;
    }
    const char *b = hdr_end + 4;
    size_t blen = raw.len - (size_t)(b - text);
    body->len = 0;
    if ((rc = spool_buf_reserve(body, blen + 1)) < 0) {
        goto out;
    }
    memcpy(body->data, b, blen);
    body->len = blen;
    body->data[blen] = '\0';
    rc = status;
out:
    close(fd);
    spool_buf_free(&raw);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Prometheus text into rows.                                               */
/* ------------------------------------------------------------------------ */

/* Copies the (unescaped) value of label `key` in `labels` (the text between
 * the braces) to out; 0 if present, -1 if not. */
static int label_get(const char *labels, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    const char *p = labels;
    while (*p) {
        while (*p == ',' || *p == ' ') {
            p++;
        }
        const char *eq = strchr(p, '=');
        if (!eq || eq[1] != '"') {
            return -1;
        }
        int match = (size_t)(eq - p) == klen && strncmp(p, key, klen) == 0;
        size_t o = 0;
        for (p = eq + 2; *p && *p != '"'; p++) {
            char c = *p;
            if (c == '\\' && p[1]) {
                p++;
                c = *p == 'n' ? '\n' : *p;
            }
            if (match && o + 1 < cap) {
                out[o++] = c;
            }
        }
        if (match) {
            out[o] = '\0';
            return 0;
        }
        if (*p == '"') {
            p++;
        }
    }
    return -1;
}

static top_row *row_get(top_snap *s, int kind, const char *name, const char *plugin)
{
    for (size_t i = 0; i < s->n; i++) {
        top_row *r = &s->rows[i];
        if (r->kind == kind && strcmp(r->name, name) == 0 &&
            (kind == R_INPUT || kind == R_PROCESSOR || kind == R_OUTPUT || kind == R_TOPIC ||
             strcmp(r->plugin, plugin) == 0)) {
            if (!r->plugin[0] && plugin[0]) {
                snprintf(r->plugin, sizeof(r->plugin), "%s", plugin);
            }
            return r;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        top_row *v = realloc(s->rows, cap * sizeof(*v));
        if (!v) {
            return NULL;
        }
        s->rows = v;
        s->cap = cap;
    }
    top_row *r = &s->rows[s->n++];
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->plugin, sizeof(r->plugin), "%s", plugin);
    return r;
}

static int kind_of(const char *k)
{
    if (strcmp(k, "input") == 0) {
        return R_INPUT;
    }
    if (strcmp(k, "processor") == 0) {
        return R_PROCESSOR;
    }
    if (strcmp(k, "output") == 0) {
        return R_OUTPUT;
    }
    return -1;
}

/* One sample line into the snapshot. */
static void take_sample(top_snap *s, const char *name, const char *labels, double v)
{
    static const struct {
        const char *metric;
        int slot;
    } per_instance[] = {
        {"spool_records_in_total", V_IN}, {"spool_records_out_total", V_OUT},
        {"spool_errors_total", V_ERR},    {"spool_retries_total", V_RETRY},
        {"spool_dropped_total", V_DROP},  {"spool_rejected_total", V_DEAD},
    };
    char a[TOP_NAME_MAX], b[TOP_NAME_MAX], c[TOP_NAME_MAX];
    top_row *r;
    for (size_t i = 0; i < sizeof(per_instance) / sizeof(per_instance[0]); i++) {
        if (strcmp(name, per_instance[i].metric) == 0) {
            int kind;
            if (label_get(labels, "kind", a, sizeof(a)) < 0 || (kind = kind_of(a)) < 0 ||
                label_get(labels, "name", b, sizeof(b)) < 0 ||
                label_get(labels, "plugin", c, sizeof(c)) < 0) {
                return;
            }
            if ((r = row_get(s, kind, b, c)) != NULL) {
                r->v[per_instance[i].slot] += v;
            }
            return;
        }
    }
    if (strcmp(name, "spool_processor_dropped_total") == 0) {
        if (label_get(labels, "processor", a, sizeof(a)) == 0 &&
            label_get(labels, "reason", b, sizeof(b)) == 0 &&
            (r = row_get(s, R_DROP, a, b)) != NULL) {
            r->v[V_DROP] += v;
        }
    } else if (strcmp(name, "spool_output_lag_records") == 0) {
        if (label_get(labels, "output", a, sizeof(a)) == 0 &&
            label_get(labels, "topic", b, sizeof(b)) == 0) {
            if ((r = row_get(s, R_OUTPUT, a, "")) != NULL) {
                r->v[V_LAG] += v;
            }
            if ((r = row_get(s, R_TOPIC_OUT, b, a)) != NULL) {
                r->v[V_LAG] += v;
            }
        }
    } else if (strncmp(name, "spool_partition_", 16) == 0) {
        if (label_get(labels, "topic", a, sizeof(a)) < 0 || !(r = row_get(s, R_TOPIC, a, ""))) {
            return;
        }
        if (strcmp(name + 16, "end_offset") == 0) {
            r->v[V_IN] += v;
        } else if (strcmp(name + 16, "bytes") == 0) {
            r->v[V_BYTES] += v;
        } else if (strcmp(name + 16, "dropped_records_total") == 0) {
            r->v[V_DROP] += v;
        }
    } else if (strcmp(name, "process_resident_memory_bytes") == 0) {
        s->rss = v;
    } else if (strcmp(name, "spool_memory_reserved_bytes") == 0) {
        s->mem_reserved = v;
    } else if (strcmp(name, "spool_memory_limit_bytes") == 0) {
        s->mem_limit = v;
    } else if (strcmp(name, "spool_build_info") == 0) {
        label_get(labels, "version", s->version, sizeof(s->version));
    }
}

/* Parses a /metrics page into s (emptied first). */
static void parse_metrics(top_snap *s, char *text)
{
    s->n = 0;
    s->rss = s->mem_reserved = s->mem_limit = 0;
    s->version[0] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        char *name = line, *labels = (char *)"", *rest;
        char *brace = strchr(line, '{');
        char *sp = strchr(line, ' ');
        if (!sp) {
            continue;
        }
        if (brace && brace < sp) {
            *brace = '\0';
            labels = brace + 1;
            char *close = strrchr(labels, '}');
            if (!close) {
                continue;
            }
            *close = '\0';
            rest = close + 1;
        } else {
            *sp = '\0';
            rest = sp + 1;
        }
        char *end;
        double v = strtod(rest, &end);
        if (end == rest) {
            continue;
        }
        take_sample(s, name, labels, v);
    }
    /* A topic's lag is its most lagging output's; its "out" is what that
     * output has read (end offsets minus its lag). */
    for (size_t i = 0; i < s->n; i++) {
        if (s->rows[i].kind != R_TOPIC_OUT) {
            continue;
        }
        top_row *t = row_get(s, R_TOPIC, s->rows[i].name, "");
        if (t && s->rows[i].v[V_LAG] > t->v[V_LAG]) {
            t->v[V_LAG] = s->rows[i].v[V_LAG];
        }
    }
    for (size_t i = 0; i < s->n; i++) {
        if (s->rows[i].kind == R_TOPIC) {
            s->rows[i].v[V_OUT] = s->rows[i].v[V_IN] - s->rows[i].v[V_LAG];
        }
    }
}

/* Rates from prev to cur; drop rows' rate is their drops per second. */
static void compute_rates(top_snap *cur, const top_snap *prev)
{
    double dt = (double)(cur->at_ms - prev->at_ms) / 1000.0;
    for (size_t i = 0; i < cur->n; i++) {
        top_row *r = &cur->rows[i];
        r->has_rate = 0;
        r->rate_in = r->rate_out = r->rate_err = 0;
        for (size_t j = 0; dt > 0 && j < prev->n; j++) {
            const top_row *p = &prev->rows[j];
            if (p->kind != r->kind || strcmp(p->name, r->name) != 0 ||
                strcmp(p->plugin, r->plugin) != 0) {
                continue;
            }
            int in = r->kind == R_DROP ? V_DROP : V_IN;
            r->rate_in = r->v[in] >= p->v[in] ? (r->v[in] - p->v[in]) / dt : 0;
            r->rate_out = r->v[V_OUT] >= p->v[V_OUT] ? (r->v[V_OUT] - p->v[V_OUT]) / dt : 0;
            double e = r->v[V_ERR] + r->v[V_RETRY] - p->v[V_ERR] - p->v[V_RETRY];
            r->rate_err = e > 0 ? e / dt : 0;
            r->has_rate = 1;
            break;
        }
    }
}

/* Marks the rows the /health reason names ("output NAME: ..."). */
static void mark_health(top_state *st)
{
    for (size_t i = 0; i < st->cur.n; i++) {
        top_row *r = &st->cur.rows[i];
        char want[TOP_NAME_MAX + 16];
        r->failing = 0;
        if (st->healthy) {
            continue;
        }
        if (r->kind == R_OUTPUT) {
            snprintf(want, sizeof(want), "output %s:", r->name);
            r->failing = strncmp(st->health, want, strlen(want)) == 0;
        } else if (r->kind == R_TOPIC) {
            r->failing = strncmp(st->health, "log writer", 10) == 0;
        } else if (r->kind == R_PROCESSOR) {
            r->failing = strncmp(st->health, "processor stage", 15) == 0;
        }
    }
}

/* One read of the agent: returns 0, or a negative errno with st->error set. */
static int refresh(top_state *st)
{
    spool_buf body = {0};
    int rc = http_get(st, "/metrics", &body);
    if (rc >= 0 && rc != 200) {
        snprintf(st->error, sizeof(st->error), "GET /metrics answered HTTP %d", rc);
        rc = -EPROTO;
        goto out;
    }
    if (rc < 0) {
        snprintf(st->error, sizeof(st->error), "%s", strerror(-rc));
        goto out;
    }
    top_snap t = st->prev;
    st->prev = st->cur;
    st->cur = t;
    st->cur.at_ms = spool_monotonic_ms();
    parse_metrics(&st->cur, (char *)body.data);
    if (st->have_data && st->reachable) {
        compute_rates(&st->cur, &st->prev);
    } else {
        for (size_t i = 0; i < st->cur.n; i++) {
            st->cur.rows[i].has_rate = 0;
        }
    }
    int h = http_get(st, "/health", &body);
    st->healthy = h == 200;
    if (h == 200) {
        snprintf(st->health, sizeof(st->health), "ok");
    } else if (h > 0) {
        /* {"status":"unhealthy","reason":"..."}: the reason, unescaped. */
        const char *p = strstr((const char *)body.data, "\"reason\":\"");
        size_t o = 0;
        for (p = p ? p + 10 : ""; *p && *p != '"' && o + 1 < sizeof(st->health); p++) {
            if (*p == '\\' && p[1]) {
                p++;
            }
            st->health[o++] = *p;
        }
        st->health[o] = '\0';
        if (o == 0) {
            snprintf(st->health, sizeof(st->health), "HTTP %d", h);
        }
    } else {
        snprintf(st->health, sizeof(st->health), "unknown: %s", strerror(-h));
    }
    mark_health(st);
    st->have_data = 1;
    st->reachable = 1;
    st->unreachable_since = 0;
    rc = 0;
out:
    if (rc < 0) {
        if (st->reachable || !st->unreachable_since) {
            st->unreachable_since = time(NULL);
        }
        st->reachable = 0;
    }
    spool_buf_free(&body);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Layout.                                                                  */
/* ------------------------------------------------------------------------ */

static const top_state *g_sort_state;

static double errors_of(const top_row *r)
{
    return r->v[V_ERR] + r->v[V_RETRY] + r->v[V_DEAD] + (r->kind == R_DROP ? 0 : r->v[V_DROP]);
}

static int row_cmp(const void *a, const void *b)
{
    const top_row *x = *(const top_row *const *)a, *y = *(const top_row *const *)b;
    if (x->kind != y->kind) {
        return x->kind - y->kind;
    }
    double kx = 0, ky = 0;
    switch (g_sort_state->sort) {
    case S_RATE:
        kx = x->rate_in + x->rate_out;
        ky = y->rate_in + y->rate_out;
        break;
    case S_LAG:
        kx = x->v[V_LAG];
        ky = y->v[V_LAG];
        break;
    case S_ERRORS:
        kx = errors_of(x);
        ky = errors_of(y);
        break;
    default:
        break;
    }
    if (kx != ky) {
        return kx > ky ? -1 : 1;
    }
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->plugin, y->plugin);
}

/* A short human figure: 999, 12.3k, 4.56M, 7.89G. */
static void human(char *out, size_t cap, double v, int decimals)
{
    static const char *const units[] = {"", "k", "M", "G", "T"};
    size_t u = 0;
    while (fabs(v) >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1000;
        u++;
    }
    if (u == 0) {
        snprintf(out, cap, "%.*f", decimals, v);
    } else {
        snprintf(out, cap, "%.*f%s", fabs(v) < 10 ? 2 : fabs(v) < 100 ? 1 : 0, v, units[u]);
    }
}

static void human_bytes(char *out, size_t cap, double v)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(out, cap, u ? "%.1f%s" : "%.0f%s", v, units[u]);
}

typedef struct lines {
    char **v;
    size_t n, cap;
    size_t header; /* index of the column header line */
} lines;

static void lines_add(lines *l, const char *fmt, ...) SPOOL_PRINTF(2, 3);
static void lines_add(lines *l, const char *fmt, ...)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!s) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    l->v[l->n++] = s;
}

static void lines_free(lines *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
}

#define ROW_FMT "%-9s %-24s %-14s %9s %9s %9s %8s %8s %8s %8s  %s"

/* The screen (or the --once text) as lines, without escape sequences. */
static void layout(const top_state *st, lines *l)
{
    char when[64], a[32], b[32], c[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    lines_add(l, "spool top - %s - %s%s%s - %s - sort: %s", st->url,
              st->cur.version[0] ? "spool " : "", st->cur.version,
              st->cur.version[0] ? "" : "spool", when, sort_names[st->sort]);
    if (!st->reachable) {
        char since[64];
        localtime_r(&st->unreachable_since, &tm);
        strftime(since, sizeof(since), "%Y-%m-%d %H:%M:%S", &tm);
        lines_add(l, "spool unreachable since %s (%llds): %s; %s", since,
                  (long long)(now - st->unreachable_since), st->error,
                  st->have_data ? "the figures below are stale" : "retrying every interval");
    } else {
        human_bytes(a, sizeof(a), st->cur.rss);
        human_bytes(b, sizeof(b), st->cur.mem_reserved);
        human_bytes(c, sizeof(c), st->cur.mem_limit);
        lines_add(l, "health: %s   memory: rss %s, queued %s of %s", st->health, a, b, c);
    }
    if (!st->have_data) {
        return;
    }
    lines_add(l, "%s", "");
    l->header = l->n;
    lines_add(l, ROW_FMT, "KIND", "NAME", "PLUGIN", "IN/s", "OUT/s", "LAG", "ERRORS", "RETRIES",
              "DROPS", "DEAD", "HEALTH");
    const top_row **order = calloc(st->cur.n ? st->cur.n : 1, sizeof(*order));
    if (!order) {
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < st->cur.n; i++) {
        if (st->cur.rows[i].kind != R_TOPIC_OUT) {
            order[n++] = &st->cur.rows[i];
        }
    }
    g_sort_state = st;
    qsort(order, n, sizeof(*order), row_cmp);
    for (size_t i = 0; i < n; i++) {
        const top_row *r = order[i];
        char in[16], out[16], lag[16], err[16], ret[16], drop[16], dead[16],
            plugin[TOP_NAME_MAX + 8];
        const char *dash = "-";
        int instance = r->kind == R_INPUT || r->kind == R_PROCESSOR || r->kind == R_OUTPUT;
        if (r->has_rate) {
            human(in, sizeof(in), r->rate_in, 1);
            human(out, sizeof(out), r->rate_out, 1);
        } else {
            snprintf(in, sizeof(in), "%s", dash);
            snprintf(out, sizeof(out), "%s", dash);
        }
        if (r->kind == R_DROP || (r->kind == R_INPUT && r->v[V_OUT] == 0)) {
            snprintf(out, sizeof(out), "%s", dash); /* inputs hand on, not deliver */
        }
        if (r->kind == R_OUTPUT && r->v[V_IN] == 0) {
            snprintf(in, sizeof(in), "%s", dash);
        }
        human(lag, sizeof(lag), r->v[V_LAG], 0);
        human(err, sizeof(err), r->v[V_ERR], 0);
        human(ret, sizeof(ret), r->v[V_RETRY], 0);
        human(drop, sizeof(drop), r->v[V_DROP], 0);
        human(dead, sizeof(dead), r->v[V_DEAD], 0);
        if (r->kind != R_OUTPUT && r->kind != R_TOPIC) {
            snprintf(lag, sizeof(lag), "%s", dash);
        }
        if (!instance) {
            snprintf(err, sizeof(err), "%s", dash);
            snprintf(ret, sizeof(ret), "%s", dash);
            snprintf(dead, sizeof(dead), "%s", dash);
        }
        if (r->kind == R_DROP) {
            snprintf(plugin, sizeof(plugin), "reason=%s", r->plugin);
        } else if (r->kind == R_TOPIC) {
            human_bytes(plugin, sizeof(plugin), r->v[V_BYTES]);
        } else {
            snprintf(plugin, sizeof(plugin), "%s", r->plugin);
        }
        const char *health = r->failing ? "FAILING" : r->rate_err > 0 ? "errors" : "ok";
        if (r->kind == R_DROP) {
            health = "-";
        } else if (!st->reachable) {
            health = "stale";
        }
        lines_add(l, ROW_FMT, kind_names[r->kind], r->name, plugin, in, out, lag, err, ret, drop,
                  dead, health);
    }
    free(order);
}

/* ------------------------------------------------------------------------ */
/* Terminal.                                                                */
/* ------------------------------------------------------------------------ */

static struct termios g_saved_tio;
static int g_tio_saved;

static void on_quit(int sig)
{
    (void)sig;
    g_quit = 1;
}

static void on_winch(int sig)
{
    (void)sig;
    g_resized = 1;
}

static void term_size(top_state *st)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        st->rows = ws.ws_row;
        st->cols = ws.ws_col;
    } else {
        st->rows = 24;
        st->cols = 80;
    }
}

static void write_all(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void term_enter(void)
{
    struct termios t;
    if (tcgetattr(STDIN_FILENO, &g_saved_tio) == 0) {
        g_tio_saved = 1;
        t = g_saved_tio;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* keep ISIG: Ctrl-C is SIGINT */
        t.c_cc[VMIN] = 0;
        t.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    /* The alternate screen, cursor hidden. */
    static const char enter[] = "\033[?1049h\033[?25l\033[H\033[2J";
    write_all(enter, sizeof(enter) - 1);
}

static void term_leave(void)
{
    static const char leave[] = "\033[0m\033[?25h\033[?1049l";
    write_all(leave, sizeof(leave) - 1);
    if (g_tio_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_tio);
        g_tio_saved = 0;
    }
}

/* Draws the screen: every line cut to the width, the rest cleared. */
static void draw(const top_state *st)
{
    lines l = {0};
    spool_buf out = {0};
    layout(st, &l);
    size_t height = st->rows > 1 ? (size_t)st->rows - 1 : 1; /* the last row: the key help */
    size_t width = (size_t)st->cols;
    spool_buf_append(&out, "\033[H", 3);
    for (size_t i = 0; i < l.n && i < height; i++) {
        const char *s = l.v[i];
        size_t len = strlen(s);
        if (i + 1 == height && l.n > height) {
            char more[64];
            snprintf(more, sizeof(more), "... %zu more rows (resize the terminal)",
                     l.n - height + 1);
            s = more;
            len = strlen(s);
            spool_buf_append(&out, s, len < width ? len : width);
            spool_buf_append(&out, "\033[K\r\n", 5);
            break;
        }
        int strong = i == 0 || i == l.header || (i == 1 && !st->reachable);
        int alert = (i == 1 && (!st->reachable || !st->healthy));
        if (strong) {
            spool_buf_append(&out, i == l.header ? "\033[7m" : "\033[1m", 4);
        }
        if (alert) {
            spool_buf_append(&out, "\033[31m", 5);
        }
        spool_buf_append(&out, s, len < width ? len : width);
        if (strong || alert) {
            spool_buf_append(&out, "\033[0m", 4);
        }
        spool_buf_append(&out, "\033[K\r\n", 5);
    }
    spool_buf_append(&out, "\033[J", 3);
    char help[160];
    int hn = snprintf(help, sizeof(help),
                      "\033[%d;1Hq quit  s sort (%s)  r rate  n name  l lag  e errors\033[K",
                      st->rows, sort_names[st->sort]);
    spool_buf_append(&out, help, (size_t)hn);
    if (out.data) {
        write_all((const char *)out.data, out.len);
    }
    spool_buf_free(&out);
    lines_free(&l);
}

static void print_plain(const top_state *st)
{
    lines l = {0};
    layout(st, &l);
    for (size_t i = 0; i < l.n; i++) {
        printf("%s\n", l.v[i]);
    }
    fflush(stdout);
    lines_free(&l);
}

/* Handles the keys waiting on stdin. */
static void read_keys(top_state *st)
{
    char buf[64];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    for (ssize_t i = 0; i < n; i++) {
        switch (buf[i]) {
        case 'q':
        case 'Q':
        case 3: /* Ctrl-C, should ISIG be off */
            g_quit = 1;
            break;
        case 's':
            st->sort = (st->sort + 1) % S__MAX;
            break;
        case 'r':
            st->sort = S_RATE;
            break;
        case 'n':
            st->sort = S_NAME;
            break;
        case 'l':
            st->sort = S_LAG;
            break;
        case 'e':
            st->sort = S_ERRORS;
            break;
        default:
            break;
        }
    }
}

static int run_live(top_state *st)
{
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_quit; /* no SA_RESTART: poll() returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    term_enter();
    term_size(st);
    int64_t next = spool_monotonic_ms();
    while (!g_quit) {
        int64_t now = spool_monotonic_ms();
        if (now >= next) {
            refresh(st);
            now = spool_monotonic_ms();
            next = next + st->interval_ms > now ? next + st->interval_ms : now + st->interval_ms;
            if (g_quit) {
                break;
            }
            draw(st);
        }
        if (g_resized) {
            g_resized = 0;
            term_size(st);
            write_all("\033[2J", 4);
            draw(st);
        }
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int64_t wait = next - spool_monotonic_ms();
        int rc = poll(&p, 1, wait > 0 ? (int)wait : 0);
        if (rc > 0 && (p.revents & POLLIN)) {
            int sort = st->sort;
            read_keys(st);
            if (sort != st->sort && !g_quit) {
                draw(st);
            }
        } else if (rc > 0 && (p.revents & (POLLHUP | POLLERR))) {
            g_quit = 1; /* the terminal went away */
        }
    }
    term_leave();
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The command.                                                             */
/* ------------------------------------------------------------------------ */

static const char top_usage[] =
    "usage: spool top [-c FILE | --url URL] [--interval SECONDS] [--once]\n";

static const char top_help[] =
    "usage: spool top [-c FILE | --url URL] [--interval SECONDS] [--once]\n\n"
    "A live view of a running spool through its HTTP API: per input, processor,\n"
    "processor drop reason, output and topic the records/s in and out, lag,\n"
    "errors, retries, drops, dead letters and health; refreshed every interval.\n"
    "  -c FILE        reach the spool run with FILE (its service.http.listen)\n"
    "  --url URL      the API's address (default " TOP_DEFAULT_URL ")\n"
    "  --interval S   seconds between reads (default 1)\n"
    "  --once         print one snapshot as text and exit (two reads an interval\n"
    "                 apart, for the rates); also what happens when stdout is not\n"
    "                 a terminal. Exit status 1 if spool cannot be reached.\n"
    "Keys: q quit, s next sort, r by rate, n by name, l by lag, e by errors.\n";

/* The URL from -c FILE: its service.http.listen, every-address hosts
 * replaced by the loopback one. 0, or the exit status. */
static int url_from_config(const char *path, char *url, size_t cap)
{
    spool_service_conf conf;
    spool_errors errs = {0};
    int rc = 0;
    spool_registry_init();
    if (spool_service_conf_load(path, &conf, &errs) > 0) {
        spool_errors_print(&errs, stderr);
        fprintf(stderr, "spool top: %s is not a valid config\n", path);
        rc = 2;
        goto out;
    }
    if (!conf.http_listen) {
        fprintf(stderr,
                "spool top: %s sets no service.http.listen: spool serves no HTTP API to read\n",
                path);
        rc = 2;
        goto out;
    }
    char host[256], why[256];
    int port;
    if (spool_parse_address(conf.http_listen, SPOOL_ADDR_LISTEN, host, sizeof(host), &port, why,
                            sizeof(why)) < 0) {
        fprintf(stderr, "spool top: %s: service.http.listen: %s\n", path, why);
        rc = 2;
        goto out;
    }
    const char *h = host;
    if (!host[0] || strcmp(host, "0.0.0.0") == 0) {
        h = "127.0.0.1";
    } else if (strcmp(host, "::") == 0) {
        h = "::1";
    }
    snprintf(url, cap, strchr(h, ':') ? "http://[%s]:%d" : "http://%s:%d", h, port);
out:
    spool_errors_free(&errs);
    spool_service_conf_free(&conf);
    return rc;
}

static int parse_url(top_state *st, const char *url)
{
    char addr[300], why[256];
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strstr(p, "://")) {
        fprintf(stderr, "spool top: --url %s: only http:// is supported\n", url);
        return -EINVAL;
    }
    size_t n = strcspn(p, "/");
    if (n == 0 || n >= sizeof(addr)) {
        fprintf(stderr, "spool top: --url %s: no host:port\n", url);
        return -EINVAL;
    }
    memcpy(addr, p, n);
    addr[n] = '\0';
    if (spool_parse_address(addr, SPOOL_ADDR_PORT_OPTIONAL, st->host, sizeof(st->host), &st->port,
                            why, sizeof(why)) < 0) {
        fprintf(stderr, "spool top: --url %s: %s\n", url, why);
        return -EINVAL;
    }
    if (st->port < 0) {
        st->port = 80;
    }
    snprintf(st->url, sizeof(st->url), "http://%s%s%s:%d", strchr(st->host, ':') ? "[" : "",
             st->host, strchr(st->host, ':') ? "]" : "", st->port);
    return 0;
}

int spool_cli_top(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"url", required_argument, NULL, 'u'},
        {"interval", required_argument, NULL, 'i'}, {"once", no_argument, NULL, '1'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    static top_state st;
    const char *config = NULL, *url = NULL;
    char conf_url[512];
    int once = 0, c, rc = 0;
    double interval = 1.0;
    memset(&st, 0, sizeof(st));
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:u:i:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'i': {
            char *end;
            interval = strtod(optarg, &end);
            if (*end || !(interval >= 0.1 && interval <= 3600)) {
                fprintf(stderr, "spool top: --interval %s: a number of seconds in 0.1-3600\n",
                        optarg);
                return 2;
            }
            break;
        }
        case '1':
            once = 1;
            break;
        case 'h':
            fputs(top_help, stdout);
            return 0;
        default:
            fputs(top_usage, stderr);
            return 2;
        }
    }
    if (optind < argc || (config && url)) {
        fputs(top_usage, stderr);
        return 2;
    }
    if (config) {
        if ((rc = url_from_config(config, conf_url, sizeof(conf_url))) != 0) {
            return rc;
        }
        url = conf_url;
    }
    if (parse_url(&st, url ? url : TOP_DEFAULT_URL) < 0) {
        return 2;
    }
    st.interval_ms = (int64_t)(interval * 1000);
    st.rows = 24;
    st.cols = 200;
    if (!once && isatty(STDOUT_FILENO) && isatty(STDIN_FILENO)) {
        rc = run_live(&st);
        goto out;
    }
    if (refresh(&st) < 0) {
        fprintf(stderr, "spool top: spool at %s is unreachable: %s\n", st.url, st.error);
        rc = 1;
        goto out;
    }
    struct timespec ts = {.tv_sec = st.interval_ms / 1000,
                          .tv_nsec = (long)(st.interval_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    if (refresh(&st) < 0) {
        fprintf(stderr, "spool top: spool at %s is unreachable: %s\n", st.url, st.error);
        rc = 1;
        goto out;
    }
    print_plain(&st);
out:
    free(st.cur.rows);
    free(st.prev.rows);
    return rc;
}
