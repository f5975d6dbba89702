/*
 * http_in.c: the `http` input, the aggregator's ingest endpoint
 * (libmicrohttpd, event driven).
 *
 * Threads: one server thread runs MHD's epoll loop (external polling, so
 * the deadlines of http_in_conn.c are enforced on the thread that owns the
 * sockets) and does only non-blocking work: accepting, reading headers and
 * bodies, answering. A complete request is handed to a small pool of
 * `workers` with its connection suspended; a worker decompresses, decodes,
 * submits and waits for durability (up to ack_timeout), then resumes the
 * connection, and the server thread sends the answer. So a slow log or
 * thousands of slow clients never stall the event loop, and each open
 * connection costs a socket and a small struct, not a thread.
 * The workers are in http_in_workers.c, the connection deadlines and
 * flood limits in http_in_conn.c; their shared state is in http_in.h.
 *
 * POST /v1/batches with
 *   Content-Type: application/vnd.spool.batch  RecordBatch v2 bytes as an
 *     agent's log holds them (CRCs checked; Spool-First-Offset and
 *     Spool-Next-Offset headers, when present, bound the records taken from
 *     them), or
 *   Content-Type: application/x-ndjson | application/json  records as JSON
 *     (spool/wire.h, docs/protocol.md), ndjson or one array;
 * optionally Content-Encoding: zstd | gzip. One request becomes one batch
 * of the pipeline; the response is 200 only once that batch is durable in
 * the log (spool_input_submit_durable returned 0).
 *
 * Spool-First-Offset, Spool-Next-Offset and Spool-Partition, when present,
 * must be decimal integers >= 0, with first < next; otherwise, or when a
 * native body holds records but none in [first, next), the answer is 400
 * with the reason (never "200 ok 0 records" for a body that was dropped).
 *
 * Statuses: 400 bad payload (one-line reason), 401 no token, 403 wrong
 * token or client certificate not trusted, 404/405 other paths/methods,
 * 413 body over max_body_bytes (or decompressing beyond 8x that), 503 with
 * Retry-After when the pipeline pushes back, memory_limit has no room for
 * the body (docs/memory.md), or the batch is not durable in time.
 *
 * Records keep their key, value, timestamp and headers; a header `agent`
 * with the peer's IP address replaces any `agent` header they had. The core
 * partitions them by key. Stream ticks (header spool.tick, in the raw
 * batches an agent's http output sends unchanged) are dropped, counted in
 * ticks_dropped: they are the sender's time; a body of ticks only is
 * "ok 0 records".
 *
 * A native request with Spool-Producer-Id (and Topic, Partition, First and
 * Next) is idempotent: http_in_idem.c keeps per producer/topic/partition
 * the next source offset, stored as this input's position with the batch,
 * so a resent batch is acknowledged without being appended again, even
 * after a crash of either side. JSON bodies stay at least once.
 *
 * What it does not do: chunked responses, HTTP/2.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "http_in.h"
#include "spool/wire.h"

#define HTTPI_PATH SPOOL_WIRE_PATH
/* memory_limit (docs/memory.md): a request is admitted when three times
 * its body (the body, and the batch made of it: arena and record index)
 * fits the memory account (a body over a third of the limit: itself).
 * The server thread never waits: with no room the answer is 503 with
 * Retry-After at once (the agent keeps its records and retries), also for
 * a body that can never fit (with a warning). */
#define HTTPI_MEM_FACTOR 3

static const spool_option httpi_options[] = {
    SPOOL_OPT_STR("listen", httpi_ctx, listen, NULL, 1, "address to listen on, host:port"),
    SPOOL_OPT_STR("tokens_file", httpi_ctx, tokens_file, NULL, 0,
                  "bearer tokens, one per line; re-read when the file changes"),
    SPOOL_OPT_STR("tls.cert", httpi_ctx, tls_cert, NULL, 0, "server certificate (PEM)"),
    SPOOL_OPT_STR("tls.key", httpi_ctx, tls_key, NULL, 0, "server private key (PEM)"),
    SPOOL_OPT_STR("tls.client_ca", httpi_ctx, tls_client_ca, NULL, 0,
                  "require client certificates issued by this CA (PEM): mutual TLS"),
    SPOOL_OPT_BYTES("max_body_bytes", httpi_ctx, max_body_bytes, "64MiB", 1024, (int64_t)1 << 31,
                    "largest request body accepted (413 beyond)"),
    SPOOL_OPT_TIME("ack_timeout", httpi_ctx, ack_timeout, "30s", 1, 3600000,
                   "how long a request waits for its batch to be durable before 503"),
    SPOOL_OPT_TIME("retry_after", httpi_ctx, retry_after, "1s", 1000, 3600000,
                   "Retry-After sent with 503"),
    SPOOL_OPT_INTEGER("max_connections", httpi_ctx, max_connections, "4096", 1, 1000000,
                      "concurrent connections; more are refused at accept (and counted)"),
    SPOOL_OPT_INTEGER("max_connections_per_client", httpi_ctx, max_per_client, "64", 1, 1000000,
                      "concurrent connections from one IP address; more are refused"),
    SPOOL_OPT_TIME("header_timeout", httpi_ctx, header_timeout, "20s", 100, 3600000,
                   "a request header must be complete this long after the connection opens "
                   "(read_timeout + this after the previous answer on a kept-alive one)"),
    SPOOL_OPT_TIME("body_timeout", httpi_ctx, body_timeout, "5m", 100, 86400000,
                   "a request body must be complete within this of its header"),
    SPOOL_OPT_TIME("read_timeout", httpi_ctx, read_timeout, "30s", 1000, 3600000,
                   "close a connection that sends nothing for this long (idle keep-alive "
                   "included)"),
    SPOOL_OPT_INTEGER("workers", httpi_ctx, workers, "16", 1, 1024,
                      "threads that decode requests and wait for their durability"),
    SPOOL_OPT_TIME("producer_expiry", httpi_ctx, producer_expiry, "7d", 60000, INT64_MAX / 4,
                   "idempotent ingest: forget a producer/topic/partition idle this long"),
    SPOOL_OPT_END,
};

/* ---------------------------------------------------------------------- */

static enum MHD_Result httpi_respond(struct MHD_Connection *conn, httpi_ctx *c, unsigned status,
                                     const char *text)
{
    char line[1200];
    snprintf(line, sizeof(line), "%s\n", text);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(line), line, MHD_RESPMEM_MUST_COPY);
    if (!r) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_UNAUTHORIZED) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    }
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) {
        char ra[32];
        snprintf(ra, sizeof(ra), "%" PRId64, (c->retry_after + 999) / 1000);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
        spool_counter_add(c->c_busy, 1);
    } else if (status >= 400) {
        spool_counter_add(c->c_bad, 1);
        spool_count(c->ins, SPOOL_COUNT_ERRORS, 1);
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* 1 if the TLS peer presented a certificate that chains to client_ca. */
static int httpi_client_cert_ok(struct MHD_Connection *conn, const char **why)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session) {
        *why = "no TLS session";
        return 0;
    }
    gnutls_session_t s = (gnutls_session_t)ci->tls_session;
    unsigned int n = 0;
    if (!gnutls_certificate_get_peers(s, &n) || n == 0) {
        *why = "no client certificate";
        return 0;
    }
    unsigned int status = 0;
    if (gnutls_certificate_verify_peers2(s, &status) < 0 || status != 0) {
        *why = (status & (GNUTLS_CERT_EXPIRED | GNUTLS_CERT_NOT_ACTIVATED))
                   ? "client certificate expired or not yet valid"
                   : "client certificate not trusted";
        return 0;
    }
    return 1;
}

static int content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static int64_t header_int(struct MHD_Connection *conn, const char *name, int64_t dflt)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
    if (!v) {
        return dflt;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || errno) {
        return dflt;
    }
    return (int64_t)x;
}

/*
 * A numeric header of the native protocol: absent -> *out = dflt and 0;
 * a decimal integer in [0, max] (blanks around allowed) -> 0; anything else
 * -> -EINVAL with the reason in why (a static string, name included).
 */
static int header_offset(struct MHD_Connection *conn, const char *name, int64_t max, int64_t dflt,
                         int64_t *out, char *why, size_t whycap)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
    *out = dflt;
    if (!v) {
        return 0;
    }
    const char *p = v;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p < '0' || *p > '9') {
        snprintf(why, whycap, "%s must be a decimal integer >= 0, got '%.64s'", name, v);
        return -EINVAL;
    }
    char *end;
    errno = 0;
    long long x = strtoll(p, &end, 10);
    while (*end == ' ' || *end == '\t') {
        end++;
    }
    if (*end != '\0') {
        snprintf(why, whycap, "%s must be a decimal integer >= 0, got '%.64s'", name, v);
        return -EINVAL;
    }
    if (errno == ERANGE || x > max) {
        snprintf(why, whycap, "%s out of range (0 to %lld), got '%.64s'", name, (long long)max, v);
        return -EINVAL;
    }
    *out = (int64_t)x;
    return 0;
}

/* Validates the native protocol's numeric headers into req. 0 or -EINVAL
 * with why. */
static int httpi_offsets(struct MHD_Connection *conn, httpi_req *req, char *why, size_t whycap)
{
    int64_t partition;
    if (header_offset(conn, SPOOL_WIRE_HDR_FIRST_OFFSET, INT64_MAX - 1, INT64_MIN, &req->first, why,
                      whycap) < 0 ||
        header_offset(conn, SPOOL_WIRE_HDR_NEXT_OFFSET, INT64_MAX, INT64_MAX, &req->next, why,
                      whycap) < 0 ||
        header_offset(conn, SPOOL_WIRE_HDR_PARTITION, INT32_MAX, -1, &partition, why, whycap) < 0) {
        return -EINVAL;
    }
    if (req->first != INT64_MIN && req->next != INT64_MAX && req->first >= req->next) {
        snprintf(why, whycap,
                 "Spool-First-Offset (%" PRId64 ") must be below Spool-Next-Offset (%" PRId64
                 "): the range of records to take is empty",
                 req->first, req->next);
        return -EINVAL;
    }
    req->idem_key[0] = '\0';
    const char *producer =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, SPOOL_WIRE_HDR_PRODUCER_ID);
    if (producer && req->kind == KIND_NATIVE) {
        /* Idempotent ingest: the range and its source must be complete. */
        const char *topic =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, SPOOL_WIRE_HDR_TOPIC);
        if (req->first == INT64_MIN || req->next == INT64_MAX || partition < 0 || !topic) {
            snprintf(why, whycap, "%s needs %s, %s, %s and %s", SPOOL_WIRE_HDR_PRODUCER_ID,
                     SPOOL_WIRE_HDR_TOPIC, SPOOL_WIRE_HDR_PARTITION, SPOOL_WIRE_HDR_FIRST_OFFSET,
                     SPOOL_WIRE_HDR_NEXT_OFFSET);
            return -EINVAL;
        }
        int rc = httpi_idem_key(req->idem_key, sizeof(req->idem_key), producer, topic, partition);
        if (rc < 0) {
            req->idem_key[0] = '\0';
            snprintf(why, whycap, "%s",
                     rc == -EINVAL ? "Spool-Producer-Id must be 1 to 64 printable characters "
                                     "without '/' or blanks"
                                   : "Spool-Topic too long");
            return -EINVAL;
        }
    }
    return 0;
}

/* The first call of a request: route, authenticate, classify. Returns a
 * status to answer with now, or 0 to go on reading the body. */
static unsigned httpi_admit(httpi_ctx *c, struct MHD_Connection *conn, const char *url,
                            const char *method, httpi_req *req, const char **why)
{
    req->agent[0] = '\0';
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ai && ai->client_addr) {
        const struct sockaddr *sa = ai->client_addr;
        if (sa->sa_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, req->agent,
                      sizeof(req->agent));
        } else if (sa->sa_family == AF_INET6) {
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, req->agent,
                      sizeof(req->agent));
        }
    }
    if (strcmp(url, "/health") == 0 && strcmp(method, MHD_HTTP_METHOD_GET) == 0) {
        /* The senders' failover probe (no token needed: it says nothing). */
        if (atomic_load(&c->stopping)) {
            *why = "shutting down";
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        *why = "ok";
        return MHD_HTTP_OK;
    }
    if (strcmp(url, HTTPI_PATH) != 0) {
        *why = "not found; POST " HTTPI_PATH;
        return MHD_HTTP_NOT_FOUND;
    }
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        *why = "method not allowed; POST " HTTPI_PATH;
        return MHD_HTTP_METHOD_NOT_ALLOWED;
    }
    if (c->tls_client_ca && !httpi_client_cert_ok(conn, why)) {
        return MHD_HTTP_FORBIDDEN;
    }
    if (c->use_tokens) {
        const char *auth =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        int a = httpi_tokens_check(&c->tokens, c->ins, auth);
        if (a == HTTPI_AUTH_MISSING) {
            *why = "missing bearer token";
            return MHD_HTTP_UNAUTHORIZED;
        }
        if (a != HTTPI_AUTH_OK) {
            *why = "invalid token";
            return MHD_HTTP_FORBIDDEN;
        }
    }
    const char *ct =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct) {
        *why = "unknown format: no Content-Type";
        return MHD_HTTP_BAD_REQUEST;
    }
    if (content_type_is(ct, SPOOL_WIRE_CT_BATCH)) {
        req->kind = KIND_NATIVE;
    } else if (content_type_is(ct, SPOOL_WIRE_CT_NDJSON) ||
               content_type_is(ct, SPOOL_WIRE_CT_JSON) ||
               content_type_is(ct, "application/jsonl")) {
        req->kind = KIND_JSON;
    } else {
        *why = "unknown format: Content-Type must be application/vnd.spool.batch, "
               "application/x-ndjson or application/json";
        return MHD_HTTP_BAD_REQUEST;
    }
    const char *ce =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (!ce || strcasecmp(ce, "identity") == 0) {
        req->enc = SPOOL_COMPRESS_NONE;
    } else if (strcasecmp(ce, "zstd") == 0) {
        req->enc = SPOOL_COMPRESS_ZSTD;
    } else if (strcasecmp(ce, "gzip") == 0) {
        req->enc = SPOOL_COMPRESS_GZIP;
    } else {
        *why = "unsupported Content-Encoding (zstd, gzip or none)";
        return MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
    }
    int64_t cl = header_int(conn, MHD_HTTP_HEADER_CONTENT_LENGTH, -1);
    if (cl > c->max_body_bytes) {
        *why = "body larger than max_body_bytes";
        return MHD_HTTP_CONTENT_TOO_LARGE;
    }
    if (httpi_offsets(conn, req, req->why, sizeof(req->why)) < 0) {
        *why = req->why;
        return MHD_HTTP_BAD_REQUEST;
    }
    return 0;
}

static httpi_conn *httpi_conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (httpi_conn *)ci->socket_context : NULL;
}

static enum MHD_Result httpi_access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    httpi_ctx *c = cls;
    httpi_req *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req) {
            return MHD_NO;
        }
        *con_cls = req;
        req->conn = conn;
        httpi_conn_phase(&c->conns, httpi_conn_of(conn), HTTPI_PHASE_BODY, spool_monotonic_ms());
        const char *why = "";
        unsigned status = httpi_admit(c, conn, url, method, req, &why);
        if (status) {
            httpi_conn_phase(&c->conns, httpi_conn_of(conn), HTTPI_PHASE_BUSY, 0);
            spool_log_debug(c->ins, "%s %s: HTTP %u: %s", method, url, status, why);
            if (status >= 400 && status != MHD_HTTP_UNAUTHORIZED && status != MHD_HTTP_NOT_FOUND) {
                spool_log_warn(c->ins, "%s: HTTP %u: %s", req->agent[0] ? req->agent : "client",
                               status, why);
            }
            return httpi_respond(conn, c, status, why);
        }
        /* Reserve the announced length at once (bounded by max_body_bytes). */
        int64_t cl = header_int(conn, MHD_HTTP_HEADER_CONTENT_LENGTH, -1);
        if (cl > 0) {
            size_t want = (size_t)cl * HTTPI_MEM_FACTOR;
            int mrc = spool_memory_reserve(want, 0);
            if (mrc == -ENOMEM) {
                want = (size_t)cl; /* over a third of the limit: the body alone, when room */
                mrc = spool_memory_reserve(want, 0);
            }
            if (mrc < 0) {
                /* 503, never 413: the sender keeps the records and retries. */
                why = "busy: memory_limit reached, retry later";
                if (mrc == -ENOMEM) {
                    why = "busy: the body is larger than this receiver's memory_limit; raise "
                          "service.memory_limit or lower the sender's max_bytes";
                    spool_log_warn(c->ins, "%s: HTTP 503: %s", req->agent, why);
                }
                httpi_conn_phase(&c->conns, httpi_conn_of(conn), HTTPI_PHASE_BUSY, 0);
                return httpi_respond(conn, c, MHD_HTTP_SERVICE_UNAVAILABLE, why);
            }
            req->mem = want;
        }
        if (cl > 0 && spool_buf_reserve(&req->body, (size_t)cl) < 0) {
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (req->state == REQ_DONE) {
        return httpi_respond(conn, c, req->status, req->why);
    }
    if (*upload_data_size > 0) {
        spool_buf *body = &req->body;
        if (!req->too_big) {
            if (body->len + *upload_data_size > (size_t)c->max_body_bytes) {
                req->too_big = 1;
                spool_buf_free(body);
            } else if (req->no_memory) {
                /* discard: answered 503 at the end of the body */
            } else if (spool_buf_append(body, upload_data, *upload_data_size) < 0) {
                return MHD_NO;
            } else if (body->cap > req->mem) {
                /* A body of unannounced length: admit its growth as it comes. */
                size_t more = body->cap - req->mem;
                if (spool_memory_reserve(more, 0) == 0) {
                    req->mem += more;
                } else {
                    req->no_memory = 1;
                    spool_buf_free(body);
                }
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    httpi_conn_phase(&c->conns, httpi_conn_of(conn), HTTPI_PHASE_BUSY, 0);
    if (req->too_big) {
        return httpi_respond(conn, c, MHD_HTTP_CONTENT_TOO_LARGE,
                             "body larger than max_body_bytes");
    }
    if (req->no_memory) {
        return httpi_respond(conn, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                             "busy: memory_limit reached, retry later");
    }
    /* Hand it to a worker; the connection sleeps until the worker resumes it. */
    pthread_mutex_lock(&c->jobs_lock);
    if (atomic_load(&c->stopping)) {
        /* The workers may be gone: nobody would resume the connection. */
        pthread_mutex_unlock(&c->jobs_lock);
        return httpi_respond(conn, c, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down, retry later");
    }
    req->state = REQ_QUEUED;
    req->queued_ms = spool_monotonic_ms();
    MHD_suspend_connection(conn);
    req->next_job = NULL;
    if (c->jobs_tail) {
        c->jobs_tail->next_job = req;
    } else {
        c->jobs_head = req;
    }
    c->jobs_tail = req;
    if (c->nidle > 0) {
        httpi_worker *w = c->idle[--c->nidle];
        w->waiting = 0;
        pthread_cond_signal(&w->cond);
    }
    pthread_mutex_unlock(&c->jobs_lock);
    return MHD_YES;
}

static void httpi_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    httpi_ctx *c = cls;
    httpi_req *req = *con_cls;
    if (req) {
        spool_buf_free(&req->body);
        spool_memory_release(req->mem);
        free(req);
        *con_cls = NULL;
    }
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED) {
        httpi_conns_idle_timeout(&c->conns);
    }
    /* A kept-alive connection waits for its next request header. */
    httpi_conn_phase(&c->conns, httpi_conn_of(conn), HTTPI_PHASE_KEPT, spool_monotonic_ms());
}

static enum MHD_Result httpi_accept_policy(void *cls, const struct sockaddr *addr,
                                           socklen_t addrlen)
{
    httpi_ctx *c = cls;
    (void)addrlen;
    return httpi_conns_admit(&c->conns, addr) ? MHD_YES : MHD_NO;
}

static void httpi_notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                    enum MHD_ConnectionNotificationCode toe)
{
    httpi_ctx *c = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        *socket_context = NULL;
        if (fi) {
            *socket_context = httpi_conns_opened(&c->conns, fi->connect_fd,
                                                 ai ? ai->client_addr : NULL, spool_monotonic_ms());
        }
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        httpi_conns_closed(&c->conns, *socket_context);
        *socket_context = NULL;
    }
}

static void httpi_mhd_log(void *cls, const char *fmt, va_list ap)
{
    httpi_ctx *c = cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n') {
        line[--n] = '\0';
    }
    spool_log_debug(c->ins, "microhttpd: %s", line);
}

/* ---------------------------------------------------------------------- */

/* Parses "host:port", "[v6]:port" or ":port" into addr. */
static int httpi_parse_listen(const char *listen, struct sockaddr_storage *addr)
{
    char host[256], port[8], why[256];
    int p;
    if (spool_parse_address(listen, SPOOL_ADDR_LISTEN, host, sizeof(host), &p, why, sizeof(why)) <
        0) {
        return -EINVAL;
    }
    snprintf(port, sizeof(port), "%d", p);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0 || !res) {
        return -EINVAL;
    }
    memset(addr, 0, sizeof(*addr));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Syntax, and everything init will read: the TLS files (with OpenSSL, as
 * spool check's stand-in for GnuTLS) and tokens_file, parsed as init does. */
static int httpi_check(spool_instance *ins, void *vctx)
{
    httpi_ctx *c = vctx;
    int rc = 0;
    struct sockaddr_storage ss;
    if (spool_check_address(ins, "listen", c->listen, SPOOL_ADDR_LISTEN) < 0) {
        rc = -EINVAL;
    } else if (c->listen && httpi_parse_listen(c->listen, &ss) < 0) {
        spool_config_error(ins, "listen", "cannot resolve '%s' to an address to listen on",
                           c->listen);
        rc = -EINVAL;
    }
    if ((c->tls_cert != NULL) != (c->tls_key != NULL)) {
        spool_config_error(ins, c->tls_cert ? "tls.key" : "tls.cert",
                           "tls.cert and tls.key go together");
        rc = -EINVAL;
    }
    if (c->tls_client_ca && !c->tls_cert) {
        spool_config_error(ins, "tls.client_ca", "needs tls.cert and tls.key");
        rc = -EINVAL;
    }
    if (spool_check_tls_files(ins, "tls.cert", c->tls_cert, "tls.key", c->tls_key, "tls.client_ca",
                              c->tls_client_ca) < 0) {
        rc = -EINVAL;
    }
    if (c->tokens_file && spool_check_file(ins, "tokens_file", c->tokens_file) < 0) {
        rc = -EINVAL;
    } else if (c->tokens_file) {
        httpi_tokens t;
        memset(&t, 0, sizeof(t));
        int e = httpi_tokens_init(&t, c->tokens_file);
        if (e < 0) {
            spool_config_error(ins, "tokens_file", "%s: %s", c->tokens_file, strerror(-e));
            rc = -EINVAL;
        }
        httpi_tokens_destroy(&t);
    }
    return rc;
}

static int read_file(const char *path, char **out)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return -errno;
    }
    spool_buf b = {0};
    char tmp[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        if ((rc = spool_buf_append(&b, tmp, n)) < 0) {
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        rc = -EIO;
    }
    fclose(f);
    if (rc == 0) {
        rc = spool_buf_append(&b, "", 1);
    }
    if (rc < 0) {
        spool_buf_free(&b);
        return rc;
    }
    *out = (char *)b.data;
    return 0;
}

/* The durable next offset of an idempotent-ingest key (httpi_idem_durable_fn). */
static int httpi_durable_offset(void *arg, const char *key, int64_t *next)
{
    uint8_t pos[HTTPI_IDEM_POS_LEN];
    size_t len = 0;
    int64_t seen;
    int rc = spool_input_get_position(arg, key, pos, sizeof(pos), &len);
    if (rc < 0) {
        return rc;
    }
    return httpi_idem_pos_decode(pos, len, next, &seen);
}

/* spool_input_foreach_position: one stored offset into the table. */
static void httpi_load_offset(void *arg, const char *source, const void *pos, size_t len)
{
    httpi_ctx *c = arg;
    if (httpi_idem_load(&c->idem, source, pos, len, spool_now_ms()) == -EINVAL) {
        spool_log_warn(c->ins, "ignoring a malformed stored offset for %s", source);
    }
}

static int httpi_init(spool_instance *ins, void *vctx)
{
    httpi_ctx *c = vctx;
    c->ins = ins;
    int rc = httpi_check(ins, vctx);
    if (rc < 0) {
        return rc;
    }
    httpi_parse_listen(c->listen, &c->addr);
    struct {
        const char *path, *opt;
        char **dst;
    } files[] = {
        {c->tls_cert, "tls.cert", &c->cert_pem},
        {c->tls_key, "tls.key", &c->key_pem},
        {c->tls_client_ca, "tls.client_ca", &c->ca_pem},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i].path && (rc = read_file(files[i].path, files[i].dst)) < 0) {
            spool_log_error(ins, "%s %s: %s", files[i].opt, files[i].path, strerror(-rc));
            return rc;
        }
    }
    if (c->tokens_file) {
        rc = httpi_tokens_init(&c->tokens, c->tokens_file);
        c->use_tokens = 1;
        if (rc < 0) {
            spool_log_error(ins, "tokens_file %s: %s", c->tokens_file, strerror(-rc));
            return rc;
        }
        c->use_tokens = 1;
    }
    if (!c->tokens_file && !c->tls_client_ca) {
        spool_log_warn(ins,
                       "no tokens_file and no tls.client_ca: anyone who can connect to %s "
                       "may submit records",
                       c->listen);
    }
    c->c_bad = spool_counter_register(ins, "requests_refused", "requests answered 4xx");
    c->c_busy = spool_counter_register(ins, "requests_busy", "requests answered 503");
    c->c_body = spool_counter_register(ins, "body_bytes",
                                       "request body bytes received, as sent (compressed)");
    c->c_ticks = spool_counter_register(
        ins, "ticks_dropped", "stream tick records (header spool.tick) dropped on ingest");
    c->c_dup = spool_counter_register(ins, "duplicates",
                                      "native requests already accepted (acknowledged again)");
    c->c_overlap = spool_counter_register(
        ins, "overlaps", "native requests partly accepted before (only the new records taken)");
    c->c_gap = spool_counter_register(
        ins, "gaps", "native requests starting after the expected offset (sender dropped records)");
    if ((rc = httpi_idem_init(&c->idem, c->producer_expiry, 10 * c->ack_timeout,
                              httpi_durable_offset, ins)) < 0) {
        spool_log_error(ins, "out of memory");
        return rc;
    }
    c->idem_init = 1;
    c->wake_fd = -1;
    if ((rc = httpi_conns_init(&c->conns, ins)) < 0) {
        spool_log_error(ins, "out of memory");
        return rc;
    }
    c->conns_init = 1;
    return 0;
}

/*
 * Raises the soft open-file limit to the hard one (each connection is a
 * descriptor) and returns how many connections fit beside the descriptors
 * the rest of spool needs.
 */
static int64_t httpi_fd_budget(spool_instance *ins, int64_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return want;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            rl = raised;
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY) {
        return want;
    }
    int64_t budget = (int64_t)rl.rlim_cur - 256;
    if (budget < 16) {
        budget = 16;
    }
    if (want > budget) {
        spool_log_warn(ins,
                       "max_connections %lld is more than the open-file limit allows "
                       "(RLIMIT_NOFILE %llu); using %lld (raise LimitNOFILE)",
                       (long long)want, (unsigned long long)rl.rlim_cur, (long long)budget);
        return budget;
    }
    return want;
}

void httpi_wake_server(httpi_ctx *c)
{
    uint64_t one = 1;
    if (c->wake_fd >= 0 && write(c->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, the server thread is woken anyway */
    }
}

/* The server thread: MHD's epoll loop, the connection deadlines. */
static void *httpi_server(void *arg)
{
    httpi_ctx *c = arg;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(c->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    int epfd = di ? di->epoll_fd : -1;
    for (;;) {
        int64_t wait = httpi_conns_tick(&c->conns, c->ins, spool_monotonic_ms());
        MHD_UNSIGNED_LONG_LONG to = 0;
        if (MHD_get_timeout(c->daemon, &to) == MHD_YES && (int64_t)to < wait) {
            wait = (int64_t)to;
        }
        struct pollfd pfd[2] = {{.fd = epfd, .events = POLLIN},
                                {.fd = c->wake_fd, .events = POLLIN}};
        int n = poll(pfd, 2, (int)(wait > 1000 ? 1000 : wait));
        if (n < 0 && errno != EINTR) {
            spool_log_error(c->ins, "poll: %s", strerror(errno));
        }
        if (pfd[1].revents & POLLIN) {
            uint64_t v;
            if (read(c->wake_fd, &v, sizeof(v)) < 0) {
                /* nothing to do: the flag below decides */
            }
        }
        MHD_run(c->daemon);
        if (atomic_load(&c->stopping) == 2) {
            return NULL;
        }
    }
}

static void httpi_stop(spool_instance *ins, void *vctx);

static int httpi_start(spool_instance *ins, void *vctx)
{
    httpi_ctx *c = vctx;
    int rc = 0;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (c->addr.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    atomic_store(&c->stopping, 0);
    if (!c->idem_loaded) {
        rc = spool_input_foreach_position(ins, httpi_load_offset, c);
        if (rc < 0) {
            spool_log_error(ins, "reading the stored producer offsets: %s", strerror(-rc));
            return rc;
        }
        c->idem_loaded = 1;
    }
    c->conns.max_total = httpi_fd_budget(ins, c->max_connections);
    c->conns.max_per_client = c->max_per_client;
    c->conns.header_timeout_ms = c->header_timeout;
    c->conns.body_timeout_ms = c->body_timeout;
    c->conns.read_timeout_ms = (c->read_timeout + 999) / 1000 * 1000;
    struct MHD_OptionItem opts[20];
    size_t n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &c->addr};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)httpi_completed, c};
    opts[n++] =
        (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)httpi_notify_connection, c};
    /* Our own limit is enforced by the accept policy, which counts refusals;
     * MHD's (whose default is FD_SETSIZE) only backs it up. */
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                        (intptr_t)(c->conns.max_total + 16), NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                        (intptr_t)((c->read_timeout + 999) / 1000), NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)httpi_mhd_log, c};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
    if (c->cert_pem) {
        flags |= MHD_USE_TLS;
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, c->key_pem};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, c->cert_pem};
        if (c->ca_pem) {
            opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, c->ca_pem};
        }
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        rc = -errno;
        spool_log_error(ins, "eventfd: %s", strerror(-rc));
        goto fail;
    }
    if (!c->jobs_init) {
        pthread_mutex_init(&c->jobs_lock, NULL);
        c->jobs_init = 1;
    }
    c->wk = calloc((size_t)c->workers, sizeof(*c->wk));
    c->idle = calloc((size_t)c->workers, sizeof(*c->idle));
    if (!c->wk || !c->idle) {
        rc = -ENOMEM;
        spool_log_error(ins, "out of memory");
        goto fail;
    }
    for (int64_t i = 0; i < c->workers; i++) {
        httpi_worker *w = &c->wk[c->nworkers];
        w->c = c;
        pthread_cond_init(&w->cond, NULL);
        int e = pthread_create(&w->thread, NULL, httpi_worker_main, w);
        if (e != 0) {
            pthread_cond_destroy(&w->cond);
            rc = -e;
            spool_log_error(ins, "cannot start a worker thread: %s", strerror(e));
            goto fail;
        }
        c->nworkers++;
    }
    c->daemon = MHD_start_daemon(flags, 0, httpi_accept_policy, c, httpi_access, c,
                                 MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!c->daemon) {
        spool_log_error(ins, "cannot listen on %s (address in use, or bad TLS files?)", c->listen);
        rc = -EADDRNOTAVAIL;
        goto fail;
    }
    int e = pthread_create(&c->server, NULL, httpi_server, c);
    if (e != 0) {
        rc = -e;
        spool_log_error(ins, "cannot start the server thread: %s", strerror(e));
        goto fail;
    }
    c->server_started = 1;
    spool_log_info(ins, "listening on %s%s (up to %lld connections, %lld per client)", c->listen,
                   c->cert_pem ? " (TLS)" : "", (long long)c->conns.max_total,
                   (long long)c->max_per_client);
    return 0;
fail:
    httpi_stop(ins, vctx);
    return rc;
}

static void httpi_stop(spool_instance *ins, void *vctx)
{
    httpi_ctx *c = vctx;
    (void)ins;
    /* Workers first: queued requests are answered 503 and every suspended
     * connection resumed, while the server thread still runs to send the
     * answers; then the server thread, then MHD. */
    atomic_store(&c->stopping, 1);
    httpi_workers_stop(c);
    if (c->server_started) {
        atomic_store(&c->stopping, 2);
        httpi_wake_server(c);
        pthread_join(c->server, NULL);
        c->server_started = 0;
    }
    if (c->daemon) {
        MHD_stop_daemon(c->daemon);
        c->daemon = NULL;
    }
    if (c->wake_fd >= 0 && c->conns_init) {
        close(c->wake_fd);
        c->wake_fd = -1;
    }
}

static void httpi_destroy(spool_instance *ins, void *vctx)
{
    httpi_ctx *c = vctx;
    httpi_stop(ins, vctx);
    if (c->use_tokens) {
        httpi_tokens_destroy(&c->tokens);
        c->use_tokens = 0;
    }
    free(c->cert_pem);
    free(c->key_pem);
    free(c->ca_pem);
    c->cert_pem = c->key_pem = c->ca_pem = NULL;
    if (c->conns_init) {
        httpi_conns_destroy(&c->conns);
        c->conns_init = 0;
    }
    if (c->jobs_init) {
        pthread_mutex_destroy(&c->jobs_lock);
        c->jobs_init = 0;
    }
    if (c->idem_init) {
        httpi_idem_destroy(&c->idem);
        c->idem_init = 0;
    }
}

const spool_plugin spool_plugin_http_in = {
    SPOOL_PLUGIN_ABI, /* with the signature: also built as an external .so */
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "http",
    .description = "receive batches over HTTP (POST /v1/batches): the aggregator's ingest",
    .options = httpi_options,
    .context_size = sizeof(httpi_ctx),
    .check = httpi_check,
    .init = httpi_init,
    .start = httpi_start,
    .stop = httpi_stop,
    .destroy = httpi_destroy,
};
