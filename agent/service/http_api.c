/*
 * http_api.c: the read-only HTTP API of a running agent (/metrics, /health,
 * /api/v1/topics) on libmicrohttpd.
 *
 * Invariants: one libmicrohttpd daemon with one internal polling thread, so
 * requests are served one at a time and every hook runs on that thread; at
 * most HTTP_MAX_CONNECTIONS connections of at most HTTP_CONN_MEMORY bytes
 * each, idle ones closed after HTTP_CONN_TIMEOUT_S, and a response body is
 * built whole in memory (its size is proportional to the number of metric
 * samples or topics, never to traffic) before it is queued, so no core lock
 * is held while a slow client reads. Request bodies are never read.
 * Not done here: deciding what is healthy (the service does), producing
 * metric samples (the registry) or the topics document (the CLI's code);
 * TLS and authentication (bind it to 127.0.0.1, the default).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core.h"
#include "service/http_api.h"

#define HTTP_MAX_CONNECTIONS 16u      /* concurrent connections */
#define HTTP_CONN_TIMEOUT_S 10u       /* idle connection timeout, seconds */
#define HTTP_CONN_MEMORY (32u * 1024) /* per-connection buffer, bytes */
#define HTTP_REASON_MAX 512           /* health reason, bytes */

#define CT_PROM "text/plain; version=0.0.4; charset=utf-8"
#define CT_JSON "application/json"
#define CT_TEXT "text/plain; charset=utf-8"

struct spool_http_api {
    struct MHD_Daemon *daemon;
    spool_http_api_hooks hooks;
    uint16_t port; /* bound TCP port */
};

/* ------------------------------------------------------------------------ */
/* Small buffer helpers.                                                    */
/* ------------------------------------------------------------------------ */

static int buf_puts(spool_buf *b, const char *s)
{
    return spool_buf_append(b, s, strlen(s));
}

/* Appends s as the inside of a JSON string (spool_json_escape: invalid
 * UTF-8 becomes U+FFFD). */
static int json_escape(spool_buf *b, const char *s)
{
    size_t n = strlen(s);
    int rc = spool_buf_reserve(b, n * 6); /* the escape's worst case */
    if (rc < 0) {
        return rc;
    }
    b->len += spool_json_escape((char *)b->data + b->len, b->cap - b->len, (const uint8_t *)s, n);
    return 0;
}

int spool_prom_escape_label_value(spool_buf *out, const char *v)
{
    int rc = 0;
    for (const char *p = v; *p && rc == 0; p++) {
        if (*p == '\\') {
            rc = buf_puts(out, "\\\\");
        } else if (*p == '"') {
            rc = buf_puts(out, "\\\"");
        } else if (*p == '\n') {
            rc = buf_puts(out, "\\n");
        } else {
            rc = spool_buf_append(out, p, 1);
        }
    }
    return rc;
}

/* HELP text escaping: only backslash and newline. */
static int prom_escape_help(spool_buf *out, const char *v)
{
    int rc = 0;
    for (const char *p = v; *p && rc == 0; p++) {
        if (*p == '\\') {
            rc = buf_puts(out, "\\\\");
        } else if (*p == '\n') {
            rc = buf_puts(out, "\\n");
        } else {
            rc = spool_buf_append(out, p, 1);
        }
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Prometheus text format.                                                  */
/* ------------------------------------------------------------------------ */

typedef struct msample {
    char *name;   /* sanitised metric name */
    char *help;   /* raw; escaped on output */
    char *type;   /* counter|gauge|histogram|summary|untyped */
    char *labels; /* as given by the registry; rewritten on output */
    int64_t ivalue;
    double fvalue;
    int is_float; /* 1: fvalue, 0: ivalue */
    size_t seq;   /* arrival order, to keep the sort stable */
} msample;

typedef struct mcollect {
    msample *v;
    size_t n;
    size_t cap;
    int err; /* first error, sticky */
} mcollect;

static int name_char_ok(char c, int first, int colon_ok)
{
    if (isalpha((unsigned char)c) || c == '_' || (colon_ok && c == ':')) {
        return 1;
    }
    return !first && isdigit((unsigned char)c);
}

/* A copy of `s` with every character outside the Prometheus name grammar
 * replaced by '_'; NULL for an empty name or on ENOMEM. */
static char *sanitize_name(const char *s, size_t len, int colon_ok)
{
    if (len == 0) {
        return NULL;
    }
    char *r = malloc(len + 1);
    if (!r) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        r[i] = name_char_ok(s[i], i == 0, colon_ok) ? s[i] : '_';
    }
    r[len] = '\0';
    return r;
}

/* The exported name of a sample: sanitised, and for a counter ending in
 * "_total" as the format's conventions and spool.h promise (promtool flags
 * a counter without it). NULL on ENOMEM or for an empty name. */
static char *metric_name(const char *name, const char *type)
{
    size_t len = strlen(name);
    char *r = sanitize_name(name, len, 1);
    if (!r || strcmp(type, "counter") != 0 || (len >= 6 && strcmp(r + len - 6, "_total") == 0)) {
        return r;
    }
    char *t = realloc(r, len + 7);
    if (!t) {
        free(r);
        return NULL;
    }
    memcpy(t + len, "_total", 7);
    return t;
}

static const char *known_type(const char *t)
{
    static const char *const types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
    for (size_t i = 0; t && i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(t, types[i]) == 0) {
            return types[i];
        }
    }
    return "untyped";
}

static void msample_free(msample *m)
{
    free(m->name);
    free(m->help);
    free(m->type);
    free(m->labels);
}

static int collect_add(mcollect *c, const char *name, const char *help, const char *type,
                       const char *labels, int64_t iv, double fv, int is_float)
{
    if (c->err) {
        return c->err;
    }
    if (!name || !*name) {
        return 0; /* nothing sensible to export */
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        msample *v = realloc(c->v, cap * sizeof(*v));
        if (!v) {
            c->err = -ENOMEM;
            return c->err;
        }
        c->v = v;
        c->cap = cap;
    }
    msample m = {
        .name = metric_name(name, known_type(type)),
        .help = strdup(help ? help : ""),
        .type = strdup(known_type(type)),
        .labels = strdup(labels ? labels : ""),
        .ivalue = iv,
        .fvalue = fv,
        .is_float = is_float,
        .seq = c->n,
    };
    if (!m.name || !m.help || !m.type || !m.labels) {
        msample_free(&m);
        c->err = -ENOMEM;
        return c->err;
    }
    c->v[c->n++] = m;
    return 0;
}

static void collect_cb(void *arg, const spool_metric_sample *s)
{
    collect_add(arg, s->name, s->help, s->type, s->labels, s->value, 0.0, 0);
}

static int collect_has(const mcollect *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int msample_cmp(const void *a, const void *b)
{
    const msample *x = a;
    const msample *y = b;
    int r = strcmp(x->name, y->name);
    if (r != 0) {
        return r;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Reads a small /proc file into buf, NUL-terminated (cut at cap - 1). */
static int proc_read(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return -errno;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0 ? 0 : -EIO;
}

static long long proc_btime(void)
{
    char buf[8192];
    if (proc_read("/proc/stat", buf, sizeof(buf)) < 0) {
        return -1;
    }
    const char *p = strstr(buf, "\nbtime ");
    return p ? atoll(p + 7) : -1;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* The standard process_* metrics client libraries export, from /proc/self,
 * and spool_healthy (the /health verdict as a gauge, for dashboards and
 * alerts), unless the registry already provides one of the same name. Best effort:
 * a file that cannot be read leaves its metric out. */
static void collect_process(mcollect *c, const spool_http_api_hooks *hooks)
{
    long page = sysconf(_SC_PAGESIZE);
    long tck = sysconf(_SC_CLK_TCK);
    char buf[1024];
    unsigned long long vsz, rss;
    if (proc_read("/proc/self/statm", buf, sizeof(buf)) == 0 &&
        sscanf(buf, "%llu %llu", &vsz, &rss) == 2 && page > 0) {
        if (!collect_has(c, "process_resident_memory_bytes")) {
            collect_add(c, "process_resident_memory_bytes", "Resident memory size in bytes.",
                        "gauge", "", (int64_t)(rss * (unsigned long long)page), 0, 0);
        }
        if (!collect_has(c, "process_virtual_memory_bytes")) {
            collect_add(c, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
                        "", (int64_t)(vsz * (unsigned long long)page), 0, 0);
        }
    }
    const char *rp;
    if (tck > 0 && proc_read("/proc/self/stat", buf, sizeof(buf)) == 0 &&
        (rp = strrchr(buf, ')')) != NULL) {
        /* Fields after "(comm)": state is field 3; utime 14, stime 15,
         * starttime 22. */
        unsigned long long utime = 0, stime = 0, start = 0;
        int field = 2;
        for (const char *p = rp + 1; *p; p++) {
            if (*p == ' ') {
                field++;
                if (field == 14) {
                    utime = strtoull(p + 1, NULL, 10);
                } else if (field == 15) {
                    stime = strtoull(p + 1, NULL, 10);
                } else if (field == 22) {
                    start = strtoull(p + 1, NULL, 10);
                    break;
                }
            }
        }
        if (!collect_has(c, "process_cpu_seconds_total")) {
            collect_add(c, "process_cpu_seconds_total",
                        "Total user and system CPU time spent in seconds.", "counter", "", 0,
                        (double)(utime + stime) / (double)tck, 1);
        }
        long long btime = proc_btime();
        if (btime >= 0 && start > 0 && !collect_has(c, "process_start_time_seconds")) {
            collect_add(c, "process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.", "gauge", "", 0,
                        (double)btime + (double)start / (double)tck, 1);
        }
    }
    int fds = count_open_fds();
    if (fds >= 0 && !collect_has(c, "process_open_fds")) {
        collect_add(c, "process_open_fds", "Number of open file descriptors.", "gauge", "", fds, 0,
                    0);
    }
    if (hooks->health_check && !collect_has(c, "spool_healthy")) {
        char reason[HTTP_REASON_MAX];
        collect_add(c, "spool_healthy", "1 when /health answers ok, else 0.", "gauge", "",
                    hooks->health_check(hooks->ctx, reason, sizeof(reason)) == 1, 0, 0);
    }
    if (!collect_has(c, "spool_build_info")) {
        spool_buf l = {0};
        if (buf_puts(&l, "version=\"") == 0 &&
            spool_prom_escape_label_value(&l, SPOOL_VERSION) == 0 &&
            spool_buf_append(&l, "\"", 2) == 0) { /* the quote and a NUL */
            collect_add(c, "spool_build_info", "The spool version this agent runs, as a label.",
                        "gauge", (const char *)l.data, 1, 0, 0);
        } else {
            c->err = c->err ? c->err : -ENOMEM;
        }
        spool_buf_free(&l);
    }
}

/* Whether [p, p + n) is a correctly escaped label value. */
static int label_value_escaped(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || p[i] == '"') {
            return 0;
        }
        if (p[i] == '\\') {
            if (i + 1 >= n || (p[i + 1] != '\\' && p[i + 1] != '"' && p[i + 1] != 'n')) {
                return 0;
            }
            i++;
        }
    }
    return 1;
}

/* Whether a closing quote may stand just before p: end of string, or a
 * comma followed by the end or by the next `name="`. */
static int closes_value(const char *p)
{
    if (*p == '\0') {
        return 1;
    }
    if (*p != ',') {
        return 0;
    }
    p++;
    while (*p == ' ') {
        p++;
    }
    if (*p == '\0') {
        return 1;
    }
    const char *s = p;
    while (*p && *p != '=' && *p != '"' && *p != ',') {
        p++;
    }
    return p > s && p[0] == '=' && p[1] == '"';
}

/* Finds the quote that closes a label value starting at v: first reading
 * backslashes as escapes, then (for a value with raw quotes or a trailing
 * backslash) without. NULL if there is none. */
static const char *find_value_end(const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == '"' && closes_value(p + 1)) {
            return p;
        }
    }
    for (const char *p = v; *p; p++) {
        if (*p == '"' && closes_value(p + 1)) {
            return p;
        }
    }
    return NULL;
}

/*
 * Appends `{labels}` (nothing for an empty string), with label names
 * sanitised and values escaped unless they already are. Returns 0,
 * -EBADMSG for a string that is not a label list, or -ENOMEM.
 */
static int write_labels(spool_buf *out, const char *labels)
{
    const char *p = labels;
    while (*p == ' ') {
        p++;
    }
    if (*p == '\0') {
        return 0;
    }
    size_t mark = out->len;
    int rc = buf_puts(out, "{");
    int first = 1;
    while (rc == 0 && *p) {
        const char *ns = p;
        while (*p && *p != '=') {
            p++;
        }
        size_t nlen = (size_t)(p - ns);
        while (nlen > 0 && ns[nlen - 1] == ' ') {
            nlen--;
        }
        if (*p != '=' || p[1] != '"' || nlen == 0) {
            rc = -EBADMSG;
            break;
        }
        const char *vs = p + 2;
        const char *ve = find_value_end(vs);
        if (!ve) {
            rc = -EBADMSG;
            break;
        }
        char *name = sanitize_name(ns, nlen, 0);
        if (!name) {
            rc = -ENOMEM;
            break;
        }
        rc = first ? 0 : buf_puts(out, ",");
        rc = rc ? rc : buf_puts(out, name);
        rc = rc ? rc : buf_puts(out, "=\"");
        free(name);
        size_t vlen = (size_t)(ve - vs);
        if (rc == 0 && label_value_escaped(vs, vlen)) {
            rc = spool_buf_append(out, vs, vlen);
        } else if (rc == 0) {
            for (size_t i = 0; i < vlen && rc == 0; i++) {
                char one[2] = {vs[i], '\0'};
                rc = spool_prom_escape_label_value(out, one);
            }
        }
        rc = rc ? rc : buf_puts(out, "\"");
        first = 0;
        p = ve + 1;
        if (*p == ',') {
            p++;
        }
        while (*p == ' ') {
            p++;
        }
    }
    if (rc == 0) {
        rc = buf_puts(out, "}");
    }
    if (rc == -EBADMSG) {
        out->len = mark;
    }
    return rc;
}

static int write_sample(spool_buf *out, const msample *m)
{
    size_t mark = out->len;
    int rc = buf_puts(out, m->name);
    if (rc == 0) {
        rc = write_labels(out, m->labels);
    }
    if (rc == 0) {
        rc = m->is_float ? spool_buf_printf(out, " %.3f\n", m->fvalue)
                         : spool_buf_printf(out, " %" PRId64 "\n", m->ivalue);
    }
    if (rc == -EBADMSG) {
        /* A malformed label string must not make the page unparseable: the
         * sample is replaced by a comment saying so. */
        out->len = mark;
        rc = buf_puts(out, "# skipped a sample of ");
        rc = rc ? rc : buf_puts(out, m->name);
        rc = rc ? rc : buf_puts(out, ": malformed labels\n");
    }
    return rc;
}

int spool_http_api_render_metrics(const spool_http_api_hooks *hooks, spool_buf *out)
{
    mcollect c = {0};
    int rc = 0;
    if (hooks->metrics_foreach) {
        hooks->metrics_foreach(hooks->ctx, collect_cb, &c);
    }
    if (hooks->process_metrics) {
        collect_process(&c, hooks);
    }
    if (c.err) {
        rc = c.err;
        goto out;
    }
    qsort(c.v, c.n, sizeof(*c.v), msample_cmp);
    for (size_t i = 0; i < c.n && rc == 0; i++) {
        const msample *m = &c.v[i];
        if (i == 0 || strcmp(c.v[i - 1].name, m->name) != 0) {
            rc = buf_puts(out, "# HELP ");
            rc = rc ? rc : buf_puts(out, m->name);
            rc = rc ? rc : buf_puts(out, " ");
            rc = rc ? rc : prom_escape_help(out, m->help);
            rc = rc ? rc : buf_puts(out, "\n# TYPE ");
            rc = rc ? rc : buf_puts(out, m->name);
            rc = rc ? rc : buf_puts(out, " ");
            rc = rc ? rc : buf_puts(out, m->type);
            rc = rc ? rc : buf_puts(out, "\n");
        }
        rc = rc ? rc : write_sample(out, m);
    }
out:
    for (size_t i = 0; i < c.n; i++) {
        msample_free(&c.v[i]);
    }
    free(c.v);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Requests.                                                                */
/* ------------------------------------------------------------------------ */

/* Queues `body` (taken: freed here or by libmicrohttpd) with `status`. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *ctype,
                               spool_buf *body, const char *allow)
{
    struct MHD_Response *r;
    if (body->len == 0) {
        spool_buf_free(body);
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_buffer(body->len, body->data, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            spool_buf_free(body);
        }
        *body = (spool_buf){0};
    }
    if (!r) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status, const char *text,
                                    const char *allow)
{
    spool_buf b = {0};
    if (buf_puts(&b, text) < 0) {
        spool_buf_free(&b);
        return MHD_NO;
    }
    return respond(conn, status, CT_TEXT, &b, allow);
}

static enum MHD_Result serve_metrics(spool_http_api *api, struct MHD_Connection *conn)
{
    spool_buf b = {0};
    int rc = spool_http_api_render_metrics(&api->hooks, &b);
    if (rc < 0) {
        spool_buf_free(&b);
        return respond_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
    }
    return respond(conn, MHD_HTTP_OK, CT_PROM, &b, NULL);
}

static enum MHD_Result serve_health(spool_http_api *api, struct MHD_Connection *conn)
{
    char reason[HTTP_REASON_MAX] = "";
    int healthy = 0;
    if (api->hooks.health_check) {
        healthy = api->hooks.health_check(api->hooks.ctx, reason, sizeof(reason)) == 1;
        reason[sizeof(reason) - 1] = '\0';
    } else {
        snprintf(reason, sizeof(reason), "health check not available");
    }
    if (!healthy && reason[0] == '\0') {
        snprintf(reason, sizeof(reason), "unhealthy (no reason given)");
    }
    spool_buf b = {0};
    int rc;
    if (healthy) {
        rc = buf_puts(&b, "{\"status\":\"ok\"}\n");
    } else {
        rc = buf_puts(&b, "{\"status\":\"unhealthy\",\"reason\":\"");
        rc = rc ? rc : json_escape(&b, reason);
        rc = rc ? rc : buf_puts(&b, "\"}\n");
    }
    if (rc < 0) {
        spool_buf_free(&b);
        return MHD_NO;
    }
    return respond(conn, healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, CT_JSON, &b, NULL);
}

static enum MHD_Result serve_topics(spool_http_api *api, struct MHD_Connection *conn)
{
    spool_buf b = {0};
    if (!api->hooks.topics_json) {
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "topics not available\n", NULL);
    }
    int err = api->hooks.topics_json(api->hooks.ctx, &b);
    if (err < 0) {
        spool_buf_free(&b);
        int rc = buf_puts(&b, "{\"error\":\"");
        rc = rc ? rc : json_escape(&b, strerror(-err));
        rc = rc ? rc : buf_puts(&b, "\"}\n");
        if (rc < 0) {
            spool_buf_free(&b);
            return MHD_NO;
        }
        return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, CT_JSON, &b, NULL);
    }
    return respond(conn, MHD_HTTP_OK, CT_JSON, &b, NULL);
}

/* GET /api/v1/views/<name>: a stream's open windows (docs/streams.md). */
static enum MHD_Result serve_view(spool_http_api *api, struct MHD_Connection *conn,
                                  const char *name)
{
    spool_buf b = {0};
    if (!api->hooks.view_query) {
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "views not available\n", NULL);
    }
    const char *key = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "key");
    const char *from = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "from");
    const char *to = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "to");
    char *end;
    long long f = 0, t = 0;
    if (from && from[0] && ((f = strtoll(from, &end, 10)), *end != '\0')) {
        return respond_text(conn, MHD_HTTP_BAD_REQUEST, "from: expected ms since the epoch\n",
                            NULL);
    }
    if (to && to[0] && ((t = strtoll(to, &end, 10)), *end != '\0')) {
        return respond_text(conn, MHD_HTTP_BAD_REQUEST, "to: expected ms since the epoch\n", NULL);
    }
    int err = api->hooks.view_query(api->hooks.ctx, name, key && key[0] ? key : NULL, f, t, &b);
    if (err == -ENOENT) {
        spool_buf_free(&b);
        return respond_text(conn, MHD_HTTP_NOT_FOUND, "no such stream\n", NULL);
    }
    if (err == -EAGAIN) {
        spool_buf_free(&b);
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "streams starting\n", NULL);
    }
    if (err < 0) {
        spool_buf_free(&b);
        return respond_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, strerror(-err), NULL);
    }
    return respond(conn, MHD_HTTP_OK, CT_JSON, &b, NULL);
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    spool_http_api *api = cls;
    enum { P_NONE, P_METRICS, P_HEALTH, P_TOPICS, P_VIEW } path = P_NONE;
    if (strcmp(url, "/metrics") == 0) {
        path = P_METRICS;
    } else if (strcmp(url, "/health") == 0) {
        path = P_HEALTH;
    } else if (strcmp(url, "/api/v1/topics") == 0) {
        path = P_TOPICS;
    } else if (strncmp(url, "/api/v1/views/", 14) == 0 && url[14] && !strchr(url + 14, '/')) {
        path = P_VIEW;
    }
    /* Every answer is queued on the first call, before any request body is
     * read: libmicrohttpd then discards the body or closes the connection. */
    if (path == P_NONE) {
        return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, HEAD");
    }
    switch (path) {
    case P_METRICS:
        return serve_metrics(api, conn);
    case P_HEALTH:
        return serve_health(api, conn);
    case P_VIEW:
        return serve_view(api, conn, url + 14);
    default:
        return serve_topics(api, conn);
    }
}

/* ------------------------------------------------------------------------ */
/* Lifecycle.                                                               */
/* ------------------------------------------------------------------------ */

/* Splits "host:port", "[v6]:port" or ":port" and resolves it. */
static int resolve_listen(const char *listen, struct addrinfo **res)
{
    char host[256], port[8], why[256];
    int p;
    if (!listen || spool_parse_address(listen, SPOOL_ADDR_LISTEN, host, sizeof(host), &p, why,
                                       sizeof(why)) < 0) {
        return -EINVAL;
    }
    if (host[0] == '\0') {
        snprintf(host, sizeof(host), "0.0.0.0");
    }
    snprintf(port, sizeof(port), "%d", p);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    int rc = getaddrinfo(host, port, &hints, res);
    if (rc != 0) {
        return rc == EAI_MEMORY ? -ENOMEM : -EINVAL;
    }
    return 0;
}

/* After libmicrohttpd failed to start: why (bind's errno if bind fails). */
static int probe_bind_error(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ? -errno : -EIO;
    close(fd);
    return rc;
}

static void mhd_quiet_log(void *cls, const char *fmt, va_list ap)
{
    /* The caller reports start failures; per-connection noise is dropped. */
}

/* The core's data sources, on the service ctx. */
static void core_metrics(void *ctx, void (*fn)(void *arg, const spool_metric_sample *s), void *arg)
{
    spool_metrics_foreach(ctx, fn, arg);
}

static int core_health(void *ctx, char *reason, size_t cap)
{
    return spool_service_health(ctx, reason, cap);
}

static int core_topics(void *ctx, spool_buf *out)
{
    return spool_topics_json(ctx, out);
}

static int core_view(void *ctx, const char *name, const char *key, int64_t from, int64_t to,
                     spool_buf *out)
{
    return spool__streams_query(ctx, name, key, from, to, out);
}

static spool_http_api_hooks core_hooks(struct spool_service *svc)
{
    return (spool_http_api_hooks){
        .ctx = svc,
        .metrics_foreach = core_metrics,
        .health_check = core_health,
        .topics_json = core_topics,
        .process_metrics = 1,
        .view_query = core_view,
    };
}

int spool_http_api_start_hooks(const char *listen, const spool_http_api_hooks *hooks,
                               spool_http_api **out)
{
    struct addrinfo *res = NULL;
    spool_http_api *api = NULL;
    int rc;
    *out = NULL;
    rc = resolve_listen(listen, &res);
    if (rc < 0) {
        goto fail;
    }
    api = calloc(1, sizeof(*api));
    if (!api) {
        rc = -ENOMEM;
        goto fail;
    }
    api->hooks = hooks ? *hooks : core_hooks(NULL);
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (res->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    api->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, handle_request, api, MHD_OPTION_EXTERNAL_LOGGER, mhd_quiet_log, NULL,
        MHD_OPTION_SOCK_ADDR, res->ai_addr, MHD_OPTION_CONNECTION_LIMIT, HTTP_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, HTTP_CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY, MHD_OPTION_END);
    if (!api->daemon) {
        rc = probe_bind_error(res);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(api->daemon, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info ? info->port : 0;
    freeaddrinfo(res);
    *out = api;
    return 0;
fail:
    if (res) {
        freeaddrinfo(res);
    }
    free(api);
    return rc;
}

int spool_http_api_start(const char *listen, struct spool_service *svc, spool_http_api **out)
{
    spool_http_api_hooks hooks = core_hooks(svc);
    return spool_http_api_start_hooks(listen, &hooks, out);
}

uint16_t spool_http_api_port(const spool_http_api *api)
{
    return api ? api->port : 0;
}

void spool_http_api_stop(spool_http_api *api)
{
    if (!api) {
        return;
    }
    if (api->daemon) {
        MHD_stop_daemon(api->daemon);
    }
    free(api);
}
