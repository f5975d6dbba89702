/*
 * http_out.c: the `http` output. Each chunk the output runner hands to
 * flush() becomes one HTTP POST: the native `spool` format (the log's own
 * RecordBatch v2 bytes, sent as they are), `ndjson` or `json`, optionally
 * compressed (zstd or gzip) as a whole body with Content-Encoding.
 *
 * The destination formats elasticsearch, loki and otlp (http_fmt.h) encode
 * their own bodies and read their own responses, which may refuse records
 * one by one (spool_output_reject_record).
 *
 * flush() prepares the body and the headers on the runner's thread and
 * returns SPOOL_PENDING; the sender thread (http_out_send.c) runs the POSTs
 * on a curl multi handle, several at once (the runner's max_in_flight, at
 * most one per partition so partitions stay in order), and answers with
 * spool_output_complete(): 2xx -> SPOOL_OK; 5xx, 408, 425, 429 and
 * transport errors -> SPOOL_RETRY (with spool_output_retry_after() for a
 * Retry-After); any other status -> SPOOL_REJECT with "HTTP <status>:
 * <response body>" as the dead-letter reason.
 *
 * What it does not do: follow redirects, split a chunk that the
 * destination found too large (413 is a rejection), or keep chunks in
 * memory beyond their completion.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http_out.h"
#include "spool/spool.h"
#include "spool/wire.h"

#define HTTPO_TOKEN_RECHECK_MS 1000 /* token_file mtime checked at most this often */

#define FMT_SPOOL HTTPO_FMT_SPOOL
#define FMT_JSON HTTPO_FMT_JSON
#define COMP_AUTO HTTPO_COMP_AUTO
#define COMP_NONE HTTPO_COMP_NONE
#define COMP_GZIP HTTPO_COMP_GZIP
#define COMP_ZSTD HTTPO_COMP_ZSTD

static const char *const httpo_formats[] = {"spool",         "ndjson", "json", "fields",
                                            "elasticsearch", "loki",   "otlp", NULL};
static const char *const httpo_actions[] = {"create", "index", NULL};
static const char *const httpo_ids[] = {"auto", "none", NULL};
static const char *const httpo_lines[] = {"value", "json", NULL};
static const char *const httpo_compressions[] = {"auto", "none", "gzip", "zstd", NULL};

static const spool_option httpo_options[] = {
    SPOOL_OPT_STR("url", httpo_ctx, url, NULL, 0,
                  "destination URL, e.g. http://127.0.0.1:8080/v1/batches (or urls)"),
    SPOOL_OPT_STRLIST("urls", httpo_ctx, urls, 0,
                      "destination URLs: the first is preferred, the next used when it keeps "
                      "failing"),
    SPOOL_OPT_INTEGER("failover_after", httpo_ctx, failover_after, "3", 1, 1000000,
                      "with urls: consecutive failed requests before switching to the next URL"),
    SPOOL_OPT_TIME("failback_interval", httpo_ctx, failback_interval, "10s", 100, 86400000,
                   "with urls: how often the preferred URL is probed (GET /health) while "
                   "another is in use"),
    SPOOL_OPT_CHOICE("format", httpo_ctx, format, "spool", httpo_formats,
                     "body format: spool (native batches), ndjson, json (array), fields (ndjson of "
                     "field documents), elasticsearch (bulk API), loki (push API), otlp (OTLP/HTTP "
                     "JSON logs)"),
    SPOOL_OPT_STR("index", httpo_ctx, fmt.index, "spool-%Y.%m.%d", 0,
                  "elasticsearch: index, a template over fields with strftime of the record's "
                  "time in UTC"),
    SPOOL_OPT_CHOICE("action", httpo_ctx, fmt.action, "create", httpo_actions,
                     "elasticsearch: bulk action, create (data streams; idempotent) or index"),
    SPOOL_OPT_CHOICE("id", httpo_ctx, fmt.id, "auto", httpo_ids,
                     "elasticsearch: _id, auto (from the record's log position and content: a "
                     "resend is idempotent) or none"),
    SPOOL_OPT_STR("timestamp_field", httpo_ctx, fmt.timestamp_field, "@timestamp", 0,
                  "elasticsearch: document field with the record's time in RFC 3339, empty for "
                  "none"),
    SPOOL_OPT_STRMAP("labels", httpo_ctx, fmt.labels,
                     "loki: stream labels, name -> template over fields (few, low cardinality)"),
    SPOOL_OPT_CHOICE("line_format", httpo_ctx, fmt.line_format, "value", httpo_lines,
                     "loki: the log line, the record's value or its field document (json)"),
    SPOOL_OPT_STRMAP("structured_metadata", httpo_ctx, fmt.meta,
                     "loki: structured metadata per entry, name -> template over fields"),
    SPOOL_OPT_STRMAP("resource", httpo_ctx, fmt.resource,
                     "otlp: resource attributes, name -> template over fields"),
    SPOOL_OPT_STR("severity_field", httpo_ctx, fmt.severity_field, NULL, 0,
                  "otlp: the field holding the level (info, warn, error, syslog names)"),
    SPOOL_OPT_CHOICE("compression", httpo_ctx, compression, "auto", httpo_compressions,
                     "body compression: auto (zstd for spool, none otherwise), none, gzip, zstd"),
    SPOOL_OPT_INTEGER("compression_level", httpo_ctx, compression_level, "1", 1, 19,
                      "zstd level (1-19) or gzip level (1-9)"),
    SPOOL_OPT_STRMAP("headers", httpo_ctx, headers, "extra request headers"),
    SPOOL_OPT_STR("token", httpo_ctx, token, NULL, 0, "bearer token (Authorization header)"),
    SPOOL_OPT_STR("token_file", httpo_ctx, token_file, NULL, 0,
                  "file holding the bearer token; re-read when it changes"),
    SPOOL_OPT_STR("tls.ca_file", httpo_ctx, ca_file, NULL, 0,
                  "CA certificates (PEM) to verify the server with"),
    SPOOL_OPT_STR("tls.cert_file", httpo_ctx, cert_file, NULL, 0,
                  "client certificate (PEM) for mutual TLS"),
    SPOOL_OPT_STR("tls.key_file", httpo_ctx, key_file, NULL, 0,
                  "client private key (PEM) for mutual TLS"),
    SPOOL_OPT_FLAG("tls.verify", httpo_ctx, verify, "true",
                   "verify the server's certificate and host name"),
    SPOOL_OPT_FLAG("idempotent", httpo_ctx, idempotent, "true",
                   "format spool: send this node's producer id so that the aggregator appends "
                   "each record once (exactly once; docs/protocol.md)"),
    SPOOL_OPT_TIME("connect_timeout", httpo_ctx, connect_timeout, "10s", 1, 3600000,
                   "TCP/TLS connect timeout"),
    SPOOL_OPT_TIME("timeout", httpo_ctx, timeout, "60s", 1, 86400000, "timeout of a whole request"),
    SPOOL_OPT_END,
};

/* ---------------------------------------------------------------------- */

static pthread_once_t httpo_curl_once = PTHREAD_ONCE_INIT;

static void httpo_curl_global(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Reads the first line of path into a new string (trimmed). */
static int httpo_read_token(const char *path, char **out, struct timespec *mtime)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return -errno;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0) {
        *mtime = st.st_mtim;
    }
    char line[4096];
    int rc = 0;
    if (!fgets(line, sizeof(line), f)) {
        line[0] = '\0';
    }
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t')) {
        line[--n] = '\0';
    }
    char *s = line;
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    if (*s == '\0') {
        rc = -ENODATA;
        goto out;
    }
    char *dup = strdup(s);
    if (!dup) {
        rc = -ENOMEM;
        goto out;
    }
    free(*out);
    *out = dup;
out:
    fclose(f);
    return rc;
}

/* Re-reads token_file when its mtime changed; at most once a second. */
static void httpo_token_refresh(spool_instance *ins, httpo_ctx *c)
{
    if (!c->token_file) {
        return;
    }
    int64_t now = spool_monotonic_ms();
    if (now - c->token_checked_ms < HTTPO_TOKEN_RECHECK_MS) {
        return;
    }
    c->token_checked_ms = now;
    struct stat st;
    if (stat(c->token_file, &st) != 0) {
        return;
    }
    if (st.st_mtim.tv_sec == c->token_mtime.tv_sec &&
        st.st_mtim.tv_nsec == c->token_mtime.tv_nsec) {
        return;
    }
    int rc = httpo_read_token(c->token_file, &c->token_value, &c->token_mtime);
    if (rc < 0) {
        spool_log_warn(ins, "token_file %s: %s; keeping the previous token", c->token_file,
                       strerror(-rc));
    } else {
        spool_log_info(ins, "token_file %s re-read", c->token_file);
    }
}

static int httpo_check(spool_instance *ins, void *vctx)
{
    httpo_ctx *c = vctx;
    int rc = 0;
    static const char *const schemes[] = {"http", "https", NULL};
    if (!c->url && c->urls.count == 0) {
        spool_config_error(ins, NULL, "the http output needs url or urls");
        rc = -EINVAL;
    } else if (c->url && c->urls.count > 0) {
        spool_config_error(ins, "urls", "give url or urls, not both");
        rc = -EINVAL;
    } else if (c->url &&
               spool_check_url(ins, "url", c->url, schemes, SPOOL_ADDR_PORT_OPTIONAL) < 0) {
        rc = -EINVAL;
    }
    for (size_t i = 0; i < c->urls.count; i++) {
        char opt[32];
        snprintf(opt, sizeof(opt), "urls[%zu]", i);
        if (spool_check_url(ins, opt, c->urls.items[i], schemes, SPOOL_ADDR_PORT_OPTIONAL) < 0) {
            rc = -EINVAL;
        }
    }
    if (c->token_file && spool_check_file(ins, "token_file", c->token_file) < 0) {
        rc = -EINVAL;
    } else if (c->token_file) {
        /* Read it as init does: the first line, trimmed, must not be empty. */
        char *tok = NULL;
        struct timespec mt;
        int e = httpo_read_token(c->token_file, &tok, &mt);
        if (e < 0) {
            spool_config_error(ins, "token_file", "%s: %s", c->token_file,
                               e == -ENODATA ? "no token on its first line" : strerror(-e));
            rc = -EINVAL;
        }
        free(tok);
    }
    if (spool_check_tls_files(ins, "tls.cert_file", c->cert_file, "tls.key_file", c->key_file,
                              "tls.ca_file", c->ca_file) < 0) {
        rc = -EINVAL;
    }
    if (c->token && c->token_file) {
        spool_config_error(ins, "token_file", "give either token or token_file, not both");
        rc = -EINVAL;
    }
    if ((c->cert_file != NULL) != (c->key_file != NULL)) {
        spool_config_error(ins, c->cert_file ? "tls.key_file" : "tls.cert_file",
                           "tls.cert_file and tls.key_file go together");
        rc = -EINVAL;
    }
    if (c->compression == COMP_GZIP && c->compression_level > 9) {
        spool_config_error(ins, "compression_level", "gzip levels are 1-9");
        rc = -EINVAL;
    }
    for (size_t i = 0; i < c->headers.count; i++) {
        const char *k = c->headers.keys[i];
        if (strpbrk(k, ": \t\r\n") || strpbrk(c->headers.values[i], "\r\n")) {
            spool_config_error(ins, "headers", "invalid header %s", k);
            rc = -EINVAL;
        }
    }
    c->fmt.format = c->format;
    if (httpo_fmt_check(ins, &c->fmt) < 0) {
        rc = -EINVAL;
    }
    return rc;
}

static size_t httpo_on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    httpo_req *r = arg;
    size_t n = size * nmemb;
    size_t max = r->c->resp_max;
    if (r->resp.len < max) {
        size_t take = n < max - r->resp.len ? n : max - r->resp.len;
        if (spool_buf_append(&r->resp, ptr, take) < 0) {
            return 0;
        }
    }
    return n;
}

/* Parses Retry-After: delta-seconds or an HTTP-date. */
static size_t httpo_on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    httpo_req *r = arg;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
        char v[128];
        size_t vl = n - (sizeof(name) - 1);
        if (vl >= sizeof(v)) {
            vl = sizeof(v) - 1;
        }
        memcpy(v, ptr + sizeof(name) - 1, vl);
        v[vl] = '\0';
        char *s = v;
        while (*s == ' ' || *s == '\t') {
            s++;
        }
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) {
            *--e = '\0';
        }
        char *end = NULL;
        long long secs = strtoll(s, &end, 10);
        if (end != s && *end == '\0' && secs >= 0) {
            r->retry_after_ms =
                secs > HTTPO_MAX_RETRY_AFTER / 1000 ? HTTPO_MAX_RETRY_AFTER : secs * 1000;
        } else {
            time_t t = curl_getdate(s, NULL);
            if (t != (time_t)-1) {
                int64_t ms = ((int64_t)t * 1000) - spool_now_ms();
                ms = ms < 0 ? 0 : ms;
                r->retry_after_ms = ms > HTTPO_MAX_RETRY_AFTER ? HTTPO_MAX_RETRY_AFTER : ms;
            }
        }
    }
    return n;
}

/*
 * The node's producer id: data_dir/producer.id holds it with the identity
 * of the directory it was made in (device:inode of data_dir, and the
 * machine id, or the host name without one). A file whose recorded
 * identity differs belongs to a copy of another node's data directory: a
 * new id is made, so two nodes never share an id (a shared id would make
 * the aggregator drop one node's records as duplicates of the other's).
 * The file is written to a temporary name, fsynced and renamed. One id per
 * process and directory (cached), so every http output of a node sends
 * the same one.
 */
static pthread_mutex_t httpo_pid_lock = PTHREAD_MUTEX_INITIALIZER;
static char httpo_pid_dir[4096];
static char httpo_pid_value[33];

static void httpo_machine(char *buf, size_t cap)
{
    FILE *f = fopen("/etc/machine-id", "r");
    buf[0] = '\0';
    if (f) {
        if (fgets(buf, (int)cap, f)) {
            buf[strcspn(buf, "\r\n")] = '\0';
        }
        fclose(f);
    }
    if (!buf[0]) {
        snprintf(buf, cap, "host:%s", spool_hostname());
    }
}

static int httpo_producer_id(spool_instance *ins, char out[33])
{
    const char *dir = spool_instance_data_dir(ins);
    char path[4200], tmp[4300], ident[512], machine[256], line[1024];
    struct stat st;
    int rc = 0;
    if (!dir || stat(dir, &st) < 0) {
        spool_log_error(ins, "data directory %s: %s", dir ? dir : "?", strerror(errno));
        return -EIO;
    }
    pthread_mutex_lock(&httpo_pid_lock);
    if (httpo_pid_value[0] && strcmp(httpo_pid_dir, dir) == 0) {
        memcpy(out, httpo_pid_value, 33);
        goto out;
    }
    httpo_machine(machine, sizeof(machine));
    snprintf(ident, sizeof(ident), "%llu:%llu %s", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, machine);
    snprintf(path, sizeof(path), "%s/producer.id", dir);
    char id[33] = "", had[1024] = "";
    FILE *f = fopen(path, "r");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (strncmp(line, "id ", 3) == 0 && strlen(line + 3) == 32) {
                memcpy(id, line + 3, 33);
            } else if (strncmp(line, "dir ", 4) == 0) {
                snprintf(had, sizeof(had), "%s", line + 4);
            }
        }
        fclose(f);
        if (id[0] && strcmp(had, ident) != 0) {
            spool_log_warn(ins,
                           "%s was made for another data directory or machine (%s, here %s): a "
                           "copy of a data directory gets a new producer id",
                           path, had, ident);
            id[0] = '\0';
        }
    }
    if (!id[0]) {
        uint8_t rnd[16];
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
            rc = -errno;
            spool_log_error(ins, "getrandom: %s", strerror(errno));
            goto out;
        }
        for (int i = 0; i < 16; i++) {
            snprintf(id + 2 * i, 3, "%02x", rnd[i]);
        }
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int n = snprintf(line, sizeof(line), "spool producer id\nid %s\ndir %s\n", id, ident);
        if (fd < 0 || write(fd, line, (size_t)n) != n || fsync(fd) < 0 || rename(tmp, path) < 0) {
            rc = -errno;
            spool_log_error(ins, "writing %s: %s", path, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            goto out;
        }
        close(fd);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        spool_log_info(ins, "new producer id %s (in %s)", id, path);
    }
    memcpy(out, id, 33);
    memcpy(httpo_pid_value, id, 33);
    snprintf(httpo_pid_dir, sizeof(httpo_pid_dir), "%s", dir);
out:
    pthread_mutex_unlock(&httpo_pid_lock);
    return rc;
}

static int httpo_init(spool_instance *ins, void *vctx)
{
    httpo_ctx *c = vctx;
    int rc = httpo_check(ins, vctx);
    if (rc < 0) {
        return rc;
    }
    pthread_once(&httpo_curl_once, httpo_curl_global);
    c->resp_max = c->format == HTTPO_FMT_ES     ? HTTPO_RESP_MAX_ES
                  : c->format >= HTTPO_FMT_LOKI ? HTTPO_RESP_MAX_FMT
                                                : HTTPO_RESP_MAX;
    rc = httpo_fmt_init(&c->fmt);
    if (rc < 0) {
        spool_log_error(ins, "format %s: %s", httpo_formats[c->format], strerror(-rc));
        return rc;
    }
    c->comp = c->compression;
    if (c->comp == COMP_AUTO) {
        c->comp = c->format == FMT_SPOOL ? COMP_ZSTD : COMP_NONE;
    }
    if (c->token) {
        c->token_value = strdup(c->token);
        if (!c->token_value) {
            return -ENOMEM;
        }
    } else if (c->token_file) {
        rc = httpo_read_token(c->token_file, &c->token_value, &c->token_mtime);
        if (rc < 0) {
            spool_log_error(ins, "token_file %s: %s", c->token_file, strerror(-rc));
            return rc;
        }
        c->token_checked_ms = spool_monotonic_ms();
    }
    c->ins = ins;
    if (c->url) {
        c->targets = &c->url;
        c->ntargets = 1;
    } else {
        c->targets = c->urls.items;
        c->ntargets = c->urls.count;
        c->c_failovers =
            spool_counter_register(ins, "failovers", "switches from a failing URL to the next one");
    }
    atomic_store(&c->cur, 0);
    c->producer_id[0] = '\0';
    if (c->format == FMT_SPOOL && c->idempotent &&
        (rc = httpo_producer_id(ins, c->producer_id)) < 0) {
        return rc;
    }
    rc = httpo_sender_start(c);
    if (rc < 0) {
        spool_log_error(ins, "cannot start the sender: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

static size_t httpo_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* A new request with its easy handle set up. NULL on ENOMEM. */
static httpo_req *httpo_req_new(httpo_ctx *c)
{
    httpo_req *r = calloc(1, sizeof(*r));
    if (!r) {
        return NULL;
    }
    r->c = c;
    r->easy = curl_easy_init();
    if (!r->easy) {
        free(r);
        return NULL;
    }
    CURL *h = r->easy;
    curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)r);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, httpo_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, httpo_on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "spool/" SPOOL_VERSION);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->verify ? 2L : 0L);
    if (c->ca_file) {
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    }
    if (c->cert_file) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
    }
    return r;
}

static struct curl_slist *httpo_add(struct curl_slist *l, int *failed, const char *fmt, ...)
    SPOOL_PRINTF(3, 4);

static struct curl_slist *httpo_add(struct curl_slist *l, int *failed, const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    struct curl_slist *n = curl_slist_append(l, line);
    if (!n) {
        *failed = 1;
        return l;
    }
    return n;
}

const char *httpo_url(httpo_ctx *c)
{
    return c->targets ? c->targets[atomic_load(&c->cur)] : c->url;
}

void httpo_target_result(httpo_ctx *c, const httpo_req *r, int res)
{
    if (c->ntargets < 2 || r->target != atomic_load(&c->cur)) {
        return; /* sent before a switch: says nothing about the URL in use */
    }
    if (res != SPOOL_RETRY) {
        c->fails = 0; /* it answered (even a rejection says the server is up) */
        return;
    }
    if (++c->fails < c->failover_after) {
        return;
    }
    size_t next = (r->target + 1) % c->ntargets;
    c->fails = 0;
    atomic_store(&c->cur, next);
    spool_counter_add(c->c_failovers, 1);
    spool_log_warn(c->ins, "%s failed %lld times in a row: failing over to %s",
                   c->targets[r->target], (long long)c->failover_after, c->targets[next]);
}

/* Sets buf to the /health URL of the server of url. 0, or -EINVAL. */
static int httpo_health_url(const char *url, char *buf, size_t cap)
{
    const char *p = strstr(url, "://");
    if (!p) {
        return -EINVAL;
    }
    p += 3;
    size_t hostlen = strcspn(p, "/?#");
    int n = snprintf(buf, cap, "%.*s/health", (int)(p - url + hostlen), url);
    return n < 0 || (size_t)n >= cap ? -EINVAL : 0;
}

/*
 * While failed over: every failback_interval, GET <preferred>/health (the
 * http input answers 200 while it accepts requests); on 200 the preferred
 * URL is used again. The probe runs on the runner's thread, bounded by
 * connect_timeout and 2 s. Runner thread.
 */
static void httpo_failback(httpo_ctx *c)
{
    if (c->ntargets < 2 || atomic_load(&c->cur) == 0) {
        return;
    }
    int64_t now = spool_monotonic_ms();
    if (now - c->probed_ms < c->failback_interval) {
        return;
    }
    c->probed_ms = now;
    char url[2048];
    if (httpo_health_url(c->targets[0], url, sizeof(url)) < 0) {
        return;
    }
    if (!c->probe && !(c->probe = curl_easy_init())) {
        return;
    }
    CURL *h = c->probe;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     (long)(c->connect_timeout < 2000 ? c->connect_timeout : 2000));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, httpo_discard);
    if (c->ca_file) {
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    }
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->verify ? 2L : 0L);
    if (c->cert_file) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
    }
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK &&
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200) {
        atomic_store(&c->cur, 0);
        spool_log_info(c->ins, "%s is healthy again: back to it", c->targets[0]);
    }
}

static int httpo_flush(spool_instance *ins, void *vctx, const spool_chunk *chunk)
{
    httpo_ctx *c = vctx;
    const uint8_t *payload;
    size_t payload_len;
    int64_t first = chunk->first_offset;
    int64_t next = chunk->next_offset;
    int rc;

    if (chunk->count == 0) {
        return SPOOL_OK;
    }
    pthread_mutex_lock(&c->lock);
    httpo_req *r = c->free_reqs;
    if (r) {
        c->free_reqs = r->next;
    }
    pthread_mutex_unlock(&c->lock);
    if (!r && !(r = httpo_req_new(c))) {
        return SPOOL_RETRY;
    }
    r->next = NULL;
    r->body.len = 0;
    httpo_token_refresh(ins, c);
    if (c->format == FMT_SPOOL && chunk->raw && chunk->raw_len > 0) {
        payload = chunk->raw;
        payload_len = chunk->raw_len;
    } else if (c->format == FMT_SPOOL) {
        /* No log bytes at hand: encode the records once. */
        rc = spool_wire_batch_encode(&r->body, chunk->first_offset, chunk->records, chunk->count,
                                     spool_now_ms(), SPOOL_COMPRESS_NONE, 0);
        if (rc < 0) {
            spool_log_error(ins, "encoding a batch: %s", strerror(-rc));
            goto retry;
        }
        next = chunk->first_offset + (int64_t)chunk->count;
        payload = r->body.data;
        payload_len = r->body.len;
    } else if (c->format >= HTTPO_FMT_ES) {
        rc = httpo_fmt_encode(&c->fmt, chunk, &r->body, &r->aux);
        if (rc < 0) {
            spool_log_error(ins, "encoding a %s body: %s", httpo_formats[c->format], strerror(-rc));
            goto retry;
        }
        payload = r->body.data;
        payload_len = r->body.len;
    } else {
        rc = spool_wire_json_encode(&r->body,
                                    c->format == FMT_JSON           ? SPOOL_WIRE_JSON
                                    : c->format == HTTPO_FMT_FIELDS ? SPOOL_WIRE_FIELDS
                                                                    : SPOOL_WIRE_NDJSON,
                                    chunk->records, chunk->count, chunk->topic);
        if (rc < 0) {
            goto retry;
        }
        payload = r->body.data;
        payload_len = r->body.len;
    }
    int comp = c->comp;
    if (c->compression == COMP_AUTO && payload == chunk->raw) {
        /* The log's batches are compressed already (topic compression):
         * compressing them again costs CPU and saves nothing. */
        int bc = SPOOL_COMPRESS_NONE;
        if (spool_wire_batch_size(payload, payload_len, 0, &bc) > 0 && bc != SPOOL_COMPRESS_NONE) {
            comp = COMP_NONE;
        }
    }
    if (comp != COMP_NONE) {
        r->packed.len = 0;
        rc = spool_compress(&r->packed,
                            comp == COMP_ZSTD ? SPOOL_COMPRESS_ZSTD : SPOOL_COMPRESS_GZIP,
                            (int)c->compression_level, payload, payload_len);
        if (rc < 0) {
            spool_log_error(ins, "compressing %zu bytes failed", payload_len);
            goto retry;
        }
        payload = r->packed.data;
        payload_len = r->packed.len;
    }

    int failed = 0;
    struct curl_slist *hl = NULL;
    static const char *const ctypes[] = {SPOOL_WIRE_CT_BATCH, SPOOL_WIRE_CT_NDJSON,
                                         SPOOL_WIRE_CT_JSON, SPOOL_WIRE_CT_NDJSON};
    hl = httpo_add(hl, &failed, "Content-Type: %s",
                   c->format >= HTTPO_FMT_ES ? httpo_fmt_content_type(&c->fmt) : ctypes[c->format]);
    hl = httpo_add(hl, &failed, "Expect:");
    if (comp == COMP_ZSTD) {
        hl = httpo_add(hl, &failed, "Content-Encoding: zstd");
    } else if (comp == COMP_GZIP) {
        hl = httpo_add(hl, &failed, "Content-Encoding: gzip");
    }
    if (c->format == FMT_SPOOL) {
        hl = httpo_add(hl, &failed, SPOOL_WIRE_HDR_FIRST_OFFSET ": %" PRId64, first);
        hl = httpo_add(hl, &failed, SPOOL_WIRE_HDR_NEXT_OFFSET ": %" PRId64, next);
    }
    hl = httpo_add(hl, &failed, SPOOL_WIRE_HDR_TOPIC ": %s", chunk->topic ? chunk->topic : "");
    hl = httpo_add(hl, &failed, SPOOL_WIRE_HDR_PARTITION ": %" PRId32, chunk->partition);
    if (c->producer_id[0]) {
        hl = httpo_add(hl, &failed, SPOOL_WIRE_HDR_PRODUCER_ID ": %s", c->producer_id);
    }
    if (c->token_value) {
        hl = httpo_add(hl, &failed, "Authorization: Bearer %s", c->token_value);
    }
    for (size_t i = 0; i < c->headers.count; i++) {
        hl = httpo_add(hl, &failed, "%s: %s", c->headers.keys[i], c->headers.values[i]);
    }
    if (failed) {
        curl_slist_free_all(hl);
        goto retry;
    }
    httpo_failback(c);
    r->target = atomic_load(&c->cur);
    curl_easy_setopt(r->easy, CURLOPT_URL, c->targets[r->target]);
    r->chunk = chunk;
    r->hl = hl;
    r->resp.len = 0;
    r->retry_after_ms = -1;
    r->errbuf[0] = '\0';
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, (const char *)payload);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload_len);
    httpo_sender_submit(c, r);
    return SPOOL_PENDING;

retry:
    pthread_mutex_lock(&c->lock);
    r->next = c->free_reqs;
    c->free_reqs = r;
    pthread_mutex_unlock(&c->lock);
    return SPOOL_RETRY;
}

static void httpo_drain(spool_instance *ins, void *vctx, int64_t timeout_ms)
{
    httpo_sender_drain(vctx, timeout_ms);
}

static void httpo_destroy(spool_instance *ins, void *vctx)
{
    httpo_ctx *c = vctx;
    httpo_sender_stop(c);
    if (c->probe) {
        curl_easy_cleanup(c->probe);
        c->probe = NULL;
    }
    httpo_fmt_free(&c->fmt);
    free(c->token_value);
    c->token_value = NULL;
}

const spool_plugin spool_plugin_http_out = {
    SPOOL_PLUGIN_ABI, /* with the signature: also built as an external .so */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "http",
    .description = "POST chunks to an HTTP endpoint (a spool aggregator, or any JSON sink)",
    .options = httpo_options,
    .context_size = sizeof(httpo_ctx),
    .check = httpo_check,
    .init = httpo_init,
    .flush = httpo_flush,
    .drain = httpo_drain,
    .destroy = httpo_destroy,
};
