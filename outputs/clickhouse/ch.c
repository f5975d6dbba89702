/*
 * ch.c: the `clickhouse` output. Each chunk becomes one HTTP POST to
 * ClickHouse's HTTP interface:
 *
 *   POST <url>/?query=INSERT INTO `db`.`table` (`a`, `b`) FORMAT JSONEachRow
 *   {"a":"...","b":"..."}\n ...            (ch_rows.c)
 *
 * on one keep-alive libcurl handle, synchronously on the runner's thread
 * (one chunk at a time per output). Answers: 2xx -> SPOOL_OK; a data error
 * (ClickHouse's parse and type error codes, or another 4xx without a code)
 * -> SPOOL_REJECT with the server's message (dead letter); anything else
 * (5xx, a missing table, authentication, no connection, a timeout) ->
 * SPOOL_RETRY.
 *
 * At init the table is described (DESCRIBE TABLE): a missing table or
 * mapped column stops `spool run` with a clear error when the server
 * answers; when it does not, the check runs before the first insert, and
 * the output retries until it passes.
 *
 * Delivery is at least once. ClickHouse 18.16 (Debian 12) has no
 * insert_deduplication_token, and deduplicates a repeated insert block by
 * its hash only in Replicated*MergeTree tables: there, a chunk retried with
 * the same records is stored once. A restart after a crash resends the
 * chunks after spool's last committed cursor (docs/outputs/clickhouse.md).
 * stop() aborts a running request (the progress callback) so shutdown stays
 * bounded.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "ch_int.h"

#define CH_RESP_MAX 4096   /* response bytes kept (reasons, DESCRIBE) */
#define CH_REASON_MAX 1024 /* bytes of a reject/retry reason */

typedef struct ch_ctx {
    /* options (filled by the core) */
    char *url;               /* http(s)://host:port of the HTTP interface */
    char *table;             /* table or database.table */
    spool_strmap columns;    /* column -> field */
    char *user;              /* HTTP basic authentication */
    char *password;          /* with user */
    int64_t connect_timeout; /* ms */
    int64_t timeout;         /* ms, a whole request */

    /* runner-thread state */
    spool_instance *ins;
    ch_column *cols; /* columns.count entries */
    size_t ncols;
    CURL *easy;                 /* one keep-alive handle */
    struct curl_slist *headers; /* request headers (no Expect: 100-continue) */
    char *insert_url;           /* url?query=INSERT ... FORMAT JSONEachRow */
    char *describe_url;         /* url?query=DESCRIBE TABLE ... */
    char *qtable;               /* the table as written in the queries */
    int schema_ok;              /* the table check passed */
    int failing;                /* the last flush failed (log the recovery once) */
    spool_buf body;             /* the chunk's rows, reused */
    size_t body_held;           /* bytes of body counted in the memory account */
    spool_buf resp;             /* the response's first CH_RESP_MAX bytes */
    char errbuf[CURL_ERROR_SIZE];

    /* shared with stop() on the main thread */
    pthread_mutex_t lock;
    int lock_init;
    int stopping; /* guarded by lock */
} ch_ctx;

static const spool_option ch_options[] = {
    SPOOL_OPT_STR("url", ch_ctx, url, "http://127.0.0.1:8123", 0,
                  "ClickHouse HTTP interface, http(s)://host:port"),
    SPOOL_OPT_STR("table", ch_ctx, table, NULL, 1, "table to insert into (database.table allowed)"),
    SPOOL_OPT_STRMAP("columns", ch_ctx, columns,
                     "column: field (key, value, timestamp, topic or a header name)"),
    SPOOL_OPT_STR("user", ch_ctx, user, NULL, 0, "user (HTTP basic authentication)"),
    SPOOL_OPT_STR("password", ch_ctx, password, NULL, 0, "password of user"),
    SPOOL_OPT_TIME("connect_timeout", ch_ctx, connect_timeout, "10s", 1, 3600000,
                   "TCP/TLS connect timeout"),
    SPOOL_OPT_TIME("timeout", ch_ctx, timeout, "60s", 1, 86400000, "timeout of one insert"),
    SPOOL_OPT_END,
};

static pthread_once_t ch_curl_once = PTHREAD_ONCE_INIT;

static void ch_curl_global(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int ch_is_stopping(ch_ctx *c)
{
    pthread_mutex_lock(&c->lock);
    int s = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return s;
}

static size_t ch_on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    ch_ctx *c = arg;
    size_t n = size * nmemb;
    if (c->resp.len < CH_RESP_MAX) {
        size_t take = n < CH_RESP_MAX - c->resp.len ? n : CH_RESP_MAX - c->resp.len;
        if (spool_buf_append(&c->resp, ptr, take) < 0) {
            return 0;
        }
    }
    return n;
}

static int ch_on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    return ch_is_stopping(arg) ? 1 : 0; /* non-zero aborts the transfer */
}

/* One line of the response body for a reason, without ClickHouse's
 * ", e.what() = DB::Exception" tail. */
static void ch_resp_line(ch_ctx *c, char *dst, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < c->resp.len && n + 1 < cap; i++) {
        char ch = (char)c->resp.data[i];
        dst[n++] = (ch == '\n' || ch == '\r' || ch == '\t') ? ' ' : ch;
    }
    dst[n] = '\0';
    char *what = strstr(dst, ", e.what() = ");
    if (what) {
        *what = '\0';
        n = strlen(dst);
    }
    while (n > 0 && dst[n - 1] == ' ') {
        dst[--n] = '\0';
    }
}

/* POSTs body (NULL: an empty body) to url. Returns the HTTP status (0 if
 * no answer came: errbuf says why); the body is in c->resp. */
static long ch_post(ch_ctx *c, const char *url, const void *body, size_t len)
{
    c->resp.len = 0;
    c->errbuf[0] = '\0';
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    CURLcode rc = curl_easy_perform(c->easy);
    if (rc != CURLE_OK) {
        if (!c->errbuf[0]) {
            snprintf(c->errbuf, sizeof(c->errbuf), "%s", curl_easy_strerror(rc));
        }
        return 0;
    }
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

/* Describes the table; sets each column's kind. 0; -ENOENT with reason (a
 * missing table or column); -EIO with reason (no answer, another error). */
static int ch_check_schema(ch_ctx *c, char *reason, size_t cap)
{
    long status = ch_post(c, c->describe_url, NULL, 0);
    if (status == 0) {
        snprintf(reason, cap, "describing %s: %s", c->qtable, c->errbuf);
        return -EIO;
    }
    char line[CH_REASON_MAX / 2];
    ch_resp_line(c, line, sizeof(line));
    if (status != 200) {
        int code = ch_error_code((const char *)c->resp.data, c->resp.len);
        if (code == 60 || code == 81) { /* UNKNOWN_TABLE, UNKNOWN_DATABASE */
            snprintf(reason, cap, "no table %s: %s", c->qtable, line);
            return -ENOENT;
        }
        snprintf(reason, cap, "describing %s: HTTP %ld: %s", c->qtable, status, line);
        return -EIO;
    }
    if (c->resp.len >= CH_RESP_MAX) {
        /* Very wide tables: ask only for the mapped columns' types. */
        snprintf(reason, cap, "table %s: DESCRIBE TABLE answer over %d bytes", c->qtable,
                 CH_RESP_MAX);
        return -EIO;
    }
    spool_buf_append(&c->resp, "", 1);
    for (size_t i = 0; i < c->ncols; i++) {
        const char *p = (const char *)c->resp.data;
        size_t cl = strlen(c->cols[i].column);
        int found = 0;
        while (p && *p) {
            if (strncmp(p, c->cols[i].column, cl) == 0 && p[cl] == '\t') {
                char type[128];
                const char *t = p + cl + 1;
                size_t tl = strcspn(t, "\t\n");
                tl = tl < sizeof(type) - 1 ? tl : sizeof(type) - 1;
                memcpy(type, t, tl);
                type[tl] = '\0';
                ch_column_set_type(&c->cols[i], type);
                found = 1;
                break;
            }
            p = strchr(p, '\n');
            p = p ? p + 1 : NULL;
        }
        if (!found) {
            snprintf(reason, cap, "table %s has no column %s", c->qtable, c->cols[i].column);
            return -ENOENT;
        }
    }
    return 0;
}

static int ch_check(spool_instance *ins, void *vctx)
{
    ch_ctx *c = vctx;
    int rc = 0;
    static const char *const schemes[] = {"http", "https", NULL};
    if (spool_check_url(ins, "url", c->url, schemes, SPOOL_ADDR_PORT_OPTIONAL) < 0) {
        rc = -EINVAL;
    } else if (strchr(c->url, '?')) {
        spool_config_error(ins, "url", "no query string: settings go in the server's profile");
        rc = -EINVAL;
    }
    const char *dot = c->table ? strchr(c->table, '.') : NULL;
    if (!c->table || (dot ? !ch_ident_ok(c->table, (size_t)(dot - c->table)) ||
                                !ch_ident_ok(dot + 1, strlen(dot + 1))
                          : !ch_ident_ok(c->table, strlen(c->table)))) {
        spool_config_error(ins, "table",
                           "a table name or database.table, each a plain "
                           "identifier ([A-Za-z_][A-Za-z0-9_]*)");
        rc = -EINVAL;
    }
    if (c->password && !c->user) {
        spool_config_error(ins, "password", "a password needs a user");
        rc = -EINVAL;
    }
    if (spool_check_column_map(ins, "columns", &c->columns) < 0) {
        rc = -EINVAL;
    }
    for (size_t i = 0; i < c->columns.count; i++) {
        const char *k = c->columns.keys[i];
        if (!ch_ident_ok(k, strlen(k))) {
            spool_config_error(ins, "columns",
                               "column \"%s\": a plain identifier ([A-Za-z_][A-Za-z0-9_]*)", k);
            rc = -EINVAL;
        }
    }
    return rc;
}

/* url + "/?query=" + the escaped query, as a new string. */
static char *ch_query_url(ch_ctx *c, const char *query)
{
    char *esc = curl_easy_escape(c->easy, query, 0);
    if (!esc) {
        return NULL;
    }
    size_t ul = strlen(c->url);
    int slash = ul > 0 && c->url[ul - 1] == '/';
    size_t n = ul + strlen(esc) + 16;
    char *s = malloc(n);
    if (s) {
        snprintf(s, n, "%s%s?query=%s", c->url, slash ? "" : "/", esc);
    }
    curl_free(esc);
    return s;
}

static int ch_build(ch_ctx *c)
{
    spool_buf q = {0};
    int e = 0;
    const char *dot = strchr(c->table, '.');
    e |= spool_buf_append(&q, "`", 1);
    if (dot) {
        e |= spool_buf_append(&q, c->table, (size_t)(dot - c->table));
        e |= spool_buf_append(&q, "`.`", 3);
        e |= spool_buf_append(&q, dot + 1, strlen(dot + 1));
    } else {
        e |= spool_buf_append(&q, c->table, strlen(c->table));
    }
    e |= spool_buf_append(&q, "`", 1);
    e |= spool_buf_append(&q, "", 1);
    if (e) {
        spool_buf_free(&q);
        return -ENOMEM;
    }
    c->qtable = (char *)q.data;
    spool_buf s = {0};
    char head[600];
    snprintf(head, sizeof(head), "INSERT INTO %s (", c->qtable);
    e |= spool_buf_append(&s, head, strlen(head));
    for (size_t i = 0; i < c->ncols; i++) {
        e |= spool_buf_append(&s, i ? ", `" : "`", i ? 3 : 1);
        e |= spool_buf_append(&s, c->cols[i].column, strlen(c->cols[i].column));
        e |= spool_buf_append(&s, "`", 1);
    }
    e |= spool_buf_append(&s, ") FORMAT JSONEachRow", 20);
    e |= spool_buf_append(&s, "", 1);
    if (!e) {
        c->insert_url = ch_query_url(c, (const char *)s.data);
    }
    spool_buf_free(&s);
    snprintf(head, sizeof(head), "DESCRIBE TABLE %s FORMAT TabSeparated", c->qtable);
    c->describe_url = ch_query_url(c, head);
    return e || !c->insert_url || !c->describe_url ? -ENOMEM : 0;
}

static int ch_init(spool_instance *ins, void *vctx)
{
    ch_ctx *c = vctx;
    c->ins = ins;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        return -ENOMEM;
    }
    c->lock_init = 1;
    pthread_once(&ch_curl_once, ch_curl_global);
    c->ncols = c->columns.count;
    c->cols = calloc(c->ncols, sizeof(*c->cols));
    c->easy = curl_easy_init();
    if (!c->cols || !c->easy) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->ncols; i++) {
        c->cols[i].column = c->columns.keys[i];
        c->cols[i].field = c->columns.values[i];
        c->cols[i].field_len = strlen(c->columns.values[i]);
    }
    int rc = ch_build(c);
    if (rc < 0) {
        return rc;
    }
    CURL *h = c->easy;
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ch_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, ch_on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "spool");
    /* No "Expect: 100-continue" round trip before large bodies. */
    c->headers = curl_slist_append(NULL, "Expect:");
    if (!c->headers) {
        return -ENOMEM;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    if (c->user) {
        curl_easy_setopt(h, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    char reason[CH_REASON_MAX];
    rc = ch_check_schema(c, reason, sizeof(reason));
    if (rc == -ENOENT) {
        spool_config_error(ins, strncmp(reason, "no table", 8) == 0 ? "table" : "columns", "%s",
                           reason);
        return -EINVAL;
    }
    if (rc < 0) {
        spool_log_warn(ins, "%s; the table is checked again before the first insert", reason);
        return 0;
    }
    c->schema_ok = 1;
    return 0;
}

static int ch_deliver(ch_ctx *c, const spool_chunk *ch, char *reason, size_t cap)
{
    if (!c->schema_ok) {
        int rc = ch_check_schema(c, reason, cap);
        if (rc < 0) {
            if (rc == -ENOENT) {
                spool_log_error(c->ins, "%s", reason);
            }
            return SPOOL_RETRY;
        }
        c->schema_ok = 1;
    }
    c->body.len = 0;
    for (size_t i = 0; i < ch->count; i++) {
        if (ch_row(&c->body, c->cols, c->ncols, &ch->records[i], ch->topic) < 0) {
            snprintf(reason, cap, "out of memory encoding rows");
            return SPOOL_RETRY;
        }
    }
    spool_memory_adjust(&c->body_held, c->body.cap);
    long status = ch_post(c, c->insert_url, c->body.data, c->body.len);
    if (status == 0) {
        snprintf(reason, cap, "inserting into %s: %s", c->qtable, c->errbuf);
        return SPOOL_RETRY;
    }
    int code = ch_error_code((const char *)c->resp.data, c->resp.len);
    int rc = ch_classify(status, code);
    if (rc != SPOOL_OK) {
        char line[CH_REASON_MAX / 2];
        ch_resp_line(c, line, sizeof(line));
        snprintf(reason, cap, "inserting into %s: HTTP %ld: %s", c->qtable, status, line);
        if (code == 16 || code == 60 || code == 81) {
            c->schema_ok = 0; /* a column or the table went away: check again */
        }
    }
    return rc;
}

static int ch_flush(spool_instance *ins, void *vctx, const spool_chunk *ch)
{
    ch_ctx *c = vctx;
    if (ch->count == 0) {
        return SPOOL_OK;
    }
    if (ch_is_stopping(c)) {
        spool_output_set_reject_reason(ins, "stopping");
        return SPOOL_RETRY;
    }
    char reason[CH_REASON_MAX];
    reason[0] = '\0';
    int64_t t0 = spool_monotonic_ms();
    int rc = ch_deliver(c, ch, reason, sizeof(reason));
    spool_log_debug(ins, "%s/%" PRId32 ": %zu records in %" PRId64 " ms (%d)", ch->topic,
                    ch->partition, ch->count, spool_monotonic_ms() - t0, rc);
    if (c->body.cap > (64u << 20)) {
        spool_buf_free(&c->body);
        spool_memory_adjust(&c->body_held, 0);
    }
    return spool_output_flush_report(ins, ch, rc, reason, &c->failing);
}

static void ch_stop(spool_instance *ins, void *vctx)
{
    ch_ctx *c = vctx;
    if (c->lock_init) {
        pthread_mutex_lock(&c->lock);
        c->stopping = 1;
        pthread_mutex_unlock(&c->lock);
    }
}

static void ch_destroy(spool_instance *ins, void *vctx)
{
    ch_ctx *c = vctx;
    if (c->easy) {
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    curl_slist_free_all(c->headers);
    c->headers = NULL;
    if (c->lock_init) {
        pthread_mutex_destroy(&c->lock);
        c->lock_init = 0;
    }
    spool_buf_free(&c->body);
    spool_memory_adjust(&c->body_held, 0);
    spool_buf_free(&c->resp);
    free(c->cols);
    free(c->insert_url);
    free(c->describe_url);
    free(c->qtable);
    c->cols = NULL;
    c->insert_url = c->describe_url = c->qtable = NULL;
}

const spool_plugin spool_plugin_clickhouse = {
    SPOOL_PLUGIN_ABI, /* with the signature: also loadable as an external .so */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "clickhouse",
    .description = "INSERT chunks into a ClickHouse table over HTTP (JSONEachRow), at least once",
    .options = ch_options,
    .context_size = sizeof(ch_ctx),
    .check = ch_check,
    .init = ch_init,
    .flush = ch_flush,
    .stop = ch_stop,
    .destroy = ch_destroy,
};
