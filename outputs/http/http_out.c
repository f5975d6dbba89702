/*
 * http_out.c: the `http` output. Each chunk the output runner hands to
 * flush() becomes one HTTP POST (libcurl, one easy handle per instance, so
 * connections are kept alive): the native `spool` format (the log's own
 * RecordBatch v2 bytes, sent as they are), `ndjson` or `json`, optionally
 * compressed (zstd or gzip) as a whole body with Content-Encoding.
 *
 * Results: 2xx -> SPOOL_OK; 5xx, 408, 425, 429 and transport errors ->
 * SPOOL_RETRY (Retry-After is honoured, see http_out_retry_after); any
 * other status -> SPOOL_REJECT with "HTTP <status>: <response body>" as the
 * dead-letter reason.
 *
 * Invariants: flush runs on the runner's one thread per instance, so the
 * context needs no lock; the request is synchronous (one chunk in flight
 * per output instance, whatever max_in_flight says); no request outlives a
 * flush call.
 *
 * What it does not do: follow redirects, split a chunk that the
 * destination found too large (413 is a rejection), or keep chunks in
 * memory across flushes.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <zlib.h>
#include <zstd.h>

#include "http_format.h"
#include "spool/spool.h"

/* Until the core implements it, a weak reference: NULL when absent. */
#pragma weak spool_output_retry_after

#define HTTPO_RESP_MAX 2048           /* response bytes kept for a reject reason */
#define HTTPO_MAX_RETRY_AFTER 300000  /* ms; a larger Retry-After is capped */
#define HTTPO_TOKEN_RECHECK_MS 1000   /* token_file mtime checked at most this often */

enum { FMT_SPOOL = 0, FMT_NDJSON = 1, FMT_JSON = 2 };
enum { COMP_AUTO = 0, COMP_NONE = 1, COMP_GZIP = 2, COMP_ZSTD = 3 };

static const char *const httpo_formats[] = {"spool", "ndjson", "json", NULL};
static const char *const httpo_compressions[] = {"auto", "none", "gzip", "zstd", NULL};

typedef struct httpo_ctx {
    /* options (filled by the core) */
    char *url;                 /* destination URL */
    int format;                /* FMT_* */
    int compression;           /* COMP_*; auto = zstd for spool, none for JSON */
    int64_t compression_level; /* zstd 1-19, gzip 1-9 */
    spool_strmap headers;      /* extra request headers */
    char *token;               /* bearer token */
    char *token_file;          /* file holding the bearer token */
    char *ca_file;             /* tls.ca_file: CA bundle to verify the server */
    char *cert_file;           /* tls.cert_file: client certificate (PEM) */
    char *key_file;            /* tls.key_file: client key (PEM) */
    int verify;                /* tls.verify: check the server's certificate and name */
    int64_t connect_timeout;   /* ms */
    int64_t timeout;           /* ms, whole request */

    /* state, owned by the flush thread */
    CURL *curl;
    int comp;                  /* resolved COMP_NONE/GZIP/ZSTD */
    char *token_value;         /* current bearer token, NULL for none */
    struct timespec token_mtime; /* of token_file when read */
    int64_t token_checked_ms;  /* monotonic ms of the last stat */
    spool_buf body;            /* encoded body */
    spool_buf packed;          /* compressed body */
    spool_buf resp;            /* first HTTPO_RESP_MAX bytes of the response */
    int64_t retry_after_ms;    /* from the last response, -1 if none */
    ZSTD_CCtx *zc;
    char errbuf[CURL_ERROR_SIZE];
} httpo_ctx;

static const spool_option httpo_options[] = {
    SPOOL_OPT_STR("url", httpo_ctx, url, NULL, 1,
                  "destination URL, e.g. http://127.0.0.1:8080/v1/batches"),
    SPOOL_OPT_CHOICE("format", httpo_ctx, format, "spool", httpo_formats,
                     "body format: spool (native batches), ndjson, json (array)"),
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
    SPOOL_OPT_TIME("connect_timeout", httpo_ctx, connect_timeout, "10s", 1, 3600000,
                   "TCP/TLS connect timeout"),
    SPOOL_OPT_TIME("timeout", httpo_ctx, timeout, "60s", 1, 86400000,
                   "timeout of a whole request"),
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
    if (c->url && strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0) {
        spool_config_error(ins, "url", "must start with http:// or https://");
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
    return rc;
}

static size_t httpo_on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    httpo_ctx *c = arg;
    size_t n = size * nmemb;
    if (c->resp.len < HTTPO_RESP_MAX) {
        size_t take = n < HTTPO_RESP_MAX - c->resp.len ? n : HTTPO_RESP_MAX - c->resp.len;
        if (spool_buf_append(&c->resp, ptr, take) < 0) {
            return 0;
        }
    }
    return n;
}

/* Parses Retry-After: delta-seconds or an HTTP-date. */
static size_t httpo_on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    httpo_ctx *c = arg;
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
            c->retry_after_ms = secs > HTTPO_MAX_RETRY_AFTER / 1000 ? HTTPO_MAX_RETRY_AFTER
                                                                    : secs * 1000;
        } else {
            time_t t = curl_getdate(s, NULL);
            if (t != (time_t)-1) {
                int64_t ms = ((int64_t)t * 1000) - spool_now_ms();
                ms = ms < 0 ? 0 : ms;
                c->retry_after_ms = ms > HTTPO_MAX_RETRY_AFTER ? HTTPO_MAX_RETRY_AFTER : ms;
            }
        }
    }
    return n;
}

static int httpo_init(spool_instance *ins, void *vctx)
{
    httpo_ctx *c = vctx;
    int rc = httpo_check(ins, vctx);
    if (rc < 0) {
        return rc;
    }
    pthread_once(&httpo_curl_once, httpo_curl_global);
    c->comp = c->compression;
    if (c->comp == COMP_AUTO) {
        c->comp = c->format == FMT_SPOOL ? COMP_ZSTD : COMP_NONE;
    }
    if (c->comp == COMP_ZSTD) {
        c->zc = ZSTD_createCCtx();
        if (!c->zc) {
            return -ENOMEM;
        }
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
    c->curl = curl_easy_init();
    if (!c->curl) {
        return -ENOMEM;
    }
    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, httpo_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, httpo_on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
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
    return 0;
}

/* Compresses c->body into c->packed. 0 or -EIO/-ENOMEM. */
static int httpo_compress(httpo_ctx *c, const uint8_t *src, size_t len)
{
    c->packed.len = 0;
    if (c->comp == COMP_ZSTD) {
        size_t bound = ZSTD_compressBound(len);
        int rc = spool_buf_reserve(&c->packed, bound);
        if (rc < 0) {
            return rc;
        }
        size_t n = ZSTD_compressCCtx(c->zc, c->packed.data, bound, src, len,
                                     (int)c->compression_level);
        if (ZSTD_isError(n)) {
            return -EIO;
        }
        c->packed.len = n;
        return 0;
    }
    /* gzip */
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    int level = c->compression_level > 9 ? 9 : (int)c->compression_level;
    if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -ENOMEM;
    }
    uLong bound = deflateBound(&zs, (uLong)len) + 32;
    int rc = spool_buf_reserve(&c->packed, bound);
    if (rc == 0) {
        zs.next_in = (Bytef *)src;
        zs.avail_in = (uInt)len;
        zs.next_out = c->packed.data;
        zs.avail_out = (uInt)bound;
        rc = deflate(&zs, Z_FINISH) == Z_STREAM_END ? 0 : -EIO;
        c->packed.len = zs.total_out;
    }
    deflateEnd(&zs);
    return rc;
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

/* Waits up to ms for a Retry-After when the core has no API for it,
 * waking every 100 ms to notice a shutdown. */
static void httpo_wait(spool_instance *ins, int64_t ms)
{
    int64_t until = spool_monotonic_ms() + ms;
    while (!spool_instance_stopping(ins)) {
        int64_t left = until - spool_monotonic_ms();
        if (left <= 0) {
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void httpo_retry_after(spool_instance *ins, httpo_ctx *c)
{
    if (c->retry_after_ms <= 0) {
        return;
    }
    if (spool_output_retry_after) {
        spool_output_retry_after(ins, c->retry_after_ms);
    } else {
        httpo_wait(ins, c->retry_after_ms);
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

    httpo_token_refresh(ins, c);
    c->body.len = 0;
    if (c->format == FMT_SPOOL && chunk->raw && chunk->raw_len > 0) {
        payload = chunk->raw;
        payload_len = chunk->raw_len;
    } else if (c->format == FMT_SPOOL) {
        /* No log bytes at hand: encode the records once. */
        if (chunk->count == 0) {
            return SPOOL_OK;
        }
        rc = spool_batch_encode(&c->body, chunk->first_offset, chunk->records, chunk->count,
                                spool_now_ms(), SPOOL_COMPRESS_NONE, 0);
        if (rc < 0) {
            spool_log_error(ins, "encoding a batch: %s", strerror(-rc));
            return SPOOL_RETRY;
        }
        next = chunk->first_offset + (int64_t)chunk->count;
        payload = c->body.data;
        payload_len = c->body.len;
    } else {
        if (chunk->count == 0) {
            return SPOOL_OK;
        }
        rc = httpfmt_encode(&c->body, c->format == FMT_JSON ? HTTPFMT_JSON : HTTPFMT_NDJSON,
                            chunk->records, chunk->count, chunk->topic);
        if (rc < 0) {
            return SPOOL_RETRY;
        }
        payload = c->body.data;
        payload_len = c->body.len;
    }
    if (c->comp != COMP_NONE) {
        rc = httpo_compress(c, payload, payload_len);
        if (rc < 0) {
            spool_log_error(ins, "compressing %zu bytes failed", payload_len);
            return SPOOL_RETRY;
        }
        payload = c->packed.data;
        payload_len = c->packed.len;
    }

    int failed = 0;
    struct curl_slist *hl = NULL;
    static const char *const ctypes[] = {"application/vnd.spool.batch", "application/x-ndjson",
                                         "application/json"};
    hl = httpo_add(hl, &failed, "Content-Type: %s", ctypes[c->format]);
    hl = httpo_add(hl, &failed, "Expect:");
    if (c->comp == COMP_ZSTD) {
        hl = httpo_add(hl, &failed, "Content-Encoding: zstd");
    } else if (c->comp == COMP_GZIP) {
        hl = httpo_add(hl, &failed, "Content-Encoding: gzip");
    }
    if (c->format == FMT_SPOOL) {
        hl = httpo_add(hl, &failed, "Spool-First-Offset: %" PRId64, first);
        hl = httpo_add(hl, &failed, "Spool-Next-Offset: %" PRId64, next);
    }
    hl = httpo_add(hl, &failed, "Spool-Topic: %s", chunk->topic ? chunk->topic : "");
    hl = httpo_add(hl, &failed, "Spool-Partition: %" PRId32, chunk->partition);
    if (c->token_value) {
        hl = httpo_add(hl, &failed, "Authorization: Bearer %s", c->token_value);
    }
    for (size_t i = 0; i < c->headers.count; i++) {
        hl = httpo_add(hl, &failed, "%s: %s", c->headers.keys[i], c->headers.values[i]);
    }
    if (failed) {
        curl_slist_free_all(hl);
        return SPOOL_RETRY;
    }

    c->resp.len = 0;
    c->retry_after_ms = -1;
    c->errbuf[0] = '\0';
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, (const char *)payload);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)payload_len);
    CURLcode cc = curl_easy_perform(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);

    if (cc != CURLE_OK) {
        spool_log_warn(ins, "POST %s: %s", c->url, c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
        spool_count(ins, SPOOL_COUNT_ERRORS, 1);
        return SPOOL_RETRY;
    }
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        return SPOOL_OK;
    }

    /* The response body, on one line, for logs and dead letters. */
    char body[HTTPO_RESP_MAX + 1];
    size_t bl = c->resp.len;
    memcpy(body, c->resp.data ? (const char *)c->resp.data : "", bl);
    body[bl] = '\0';
    for (size_t i = 0; i < bl; i++) {
        if (body[i] == '\n' || body[i] == '\r') {
            body[i] = ' ';
        }
    }
    while (bl > 0 && body[bl - 1] == ' ') {
        body[--bl] = '\0';
    }
    if (status >= 500 || status == 408 || status == 425 || status == 429) {
        spool_log_warn(ins, "POST %s: HTTP %ld %s (Retry-After: %" PRId64 " ms)", c->url, status,
                       body, c->retry_after_ms);
        spool_count(ins, SPOOL_COUNT_ERRORS, 1);
        httpo_retry_after(ins, c);
        return SPOOL_RETRY;
    }
    char reason[HTTPO_RESP_MAX + 64];
    snprintf(reason, sizeof(reason), "HTTP %ld: %s", status, body);
    spool_log_error(ins, "POST %s rejected %zu records of %s[%" PRId32 "] at offset %" PRId64
                    ": %s", c->url, chunk->count, chunk->topic ? chunk->topic : "?",
                    chunk->partition, chunk->first_offset, reason);
    spool_output_set_reject_reason(ins, reason);
    return SPOOL_REJECT;
}

static void httpo_destroy(spool_instance *ins, void *vctx)
{
    httpo_ctx *c = vctx;
    if (c->curl) {
        curl_easy_cleanup(c->curl);
        c->curl = NULL;
    }
    ZSTD_freeCCtx(c->zc);
    c->zc = NULL;
    free(c->token_value);
    c->token_value = NULL;
    spool_buf_free(&c->body);
    spool_buf_free(&c->packed);
    spool_buf_free(&c->resp);
}

const spool_plugin spool_plugin_http_out = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "http",
    .description = "POST chunks to an HTTP endpoint (a spool aggregator, or any JSON sink)",
    .options = httpo_options,
    .context_size = sizeof(httpo_ctx),
    .check = httpo_check,
    .init = httpo_init,
    .flush = httpo_flush,
    .destroy = httpo_destroy,
};
