/*
 * fleetgen.c: a fleet of simulated agents for the aggregator (issue 18,
 * "Fleet scale"). One process, one epoll loop, no thread per agent: each
 * simulated agent is a keep-alive HTTP/1.1 connection that speaks the agent
 * -> aggregator protocol (docs/protocol.md) exactly as an agent's `http`
 * output does with its defaults: native RecordBatch v2 bodies compressed as
 * a whole with zstd level 1 (compression: auto), Spool-Topic,
 * Spool-Partition, Spool-First-Offset, Spool-Next-Offset and a producer id
 * of its own (idempotent: true), one request in flight per agent
 * (max_in_flight 1: the next batch only after the previous one was
 * acknowledged), 503 retried after Retry-After with the same body.
 *
 * Batches are encoded with spool's own encoder (spool_wire_batch_encode,
 * the bytes an agent's log holds). Agent i's k-th batch covers source
 * offsets [k*B, (k+1)*B) for every agent, so the k-th body is encoded and
 * compressed once and shared by all agents (the generator stays cheap next
 * to the aggregator it measures); what differs per agent is its producer
 * id, its connection and, with the default --spread, its source address
 * (127.1.x.y: every agent has its own IP address, as in a real fleet).
 * Records carry the headers the tail input sets (host, path); the lines are
 * ~120 bytes of nginx-, key=value- and JSON-style text with a unique number.
 *
 * Pacing: closed loop (the default: each agent sends its next batch as soon
 * as the previous one is acknowledged) or open loop (--rate R records/s per
 * agent: batch k of an agent is due at its phase + k*B/R; a batch due while
 * the previous one is unacknowledged waits for it and is counted late).
 * Agents start spread over the first interval (open loop) or the first
 * 100 ms (closed loop), in a deterministic order.
 *
 * Measured: per-request acknowledgement latency (from the batch's first
 * send to its 200; log-linear histogram, ~3% resolution: p50, p90, p99,
 * p99.9, max), records acknowledged per second, duplicates, 503s,
 * connection errors, refusals (any other status). Exit 1 if anything was
 * refused, an answer did not acknowledge exactly the records sent, or
 * batches were left unacknowledged at the end.
 *
 * Invariants: one request per agent at a time, on that agent's connection;
 * every loop is bounded by the agent count or by the bytes at hand; the run
 * ends by -n or -d plus -D seconds at most, or when one batch stays
 * unacknowledged for -D seconds (an aggregator gone: the agents left count
 * as unfinished).
 *
 * usage: fleetgen -p PORT [-a AGENTS] [-n RECORDS | -d SECONDS] [options]
 * (fleetgen -h lists them). Prints "key value" lines on stdout at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/wire.h"

#define RESP_CAP 4096               /* bytes of one answer kept */
#define HIST_BUCKETS (64 + 40 * 32) /* log-linear, 32 sub-buckets per power of two */
#define BACKOFF_MIN_NS 100000000LL  /* 100 ms after a connection error */
#define BACKOFF_MAX_NS 2000000000LL /* at most 2 s */
#define MAX_EVENTS 256

enum { A_IDLE = 0, A_CONNECTING, A_SENDING, A_READING, A_DONE };

typedef struct agent {
    int fd;
    int state;
    int heap_pos;    /* index in the due heap, -1 when not in it */
    int64_t due;     /* ns: when its next send may start */
    int64_t sched;   /* ns: open loop, when the current batch was due */
    uint32_t k;      /* current batch index */
    int64_t t_first; /* ns: first send of the current batch */
    int attempts;    /* sends of the current batch */
    int64_t backoff; /* ns: next reconnect backoff */
    char hdr[640];   /* current request header */
    size_t hdr_len;
    size_t sent;         /* bytes of header + body written */
    char resp[RESP_CAP]; /* the answer so far */
    size_t resp_len;
    struct sockaddr_in src; /* source address (sin_addr 0: any) */
    char producer[33];
} agent;

typedef struct body {
    uint8_t *data;
    size_t len;
} body;

static struct {
    const char *host;
    int port;
    int agents;
    int64_t records; /* total, 0 = duration mode */
    double duration; /* s */
    double drain;    /* s after the end to wait for answers */
    int batch;       /* records per batch */
    int line;        /* bytes per line */
    double rate;     /* records/s per agent, 0 = closed loop */
    int compress;    /* SPOOL_COMPRESS_* */
    int level;
    int spread; /* distinct source addresses */
    const char *token;
    const char *topic;
    uint32_t seed;
    int progress; /* seconds between progress lines on stderr, 0 = none */
} opt = {
    .host = "127.0.0.1",
    .agents = 10,
    .duration = 20,
    .drain = 60,
    .batch = 300,
    .line = 120,
    .compress = SPOOL_COMPRESS_ZSTD,
    .level = 1,
    .spread = 1,
    .topic = "app",
    .seed = 1,
    .progress = 5,
};

static agent *agents;
static int *heap; /* agents waiting for their due time, min-heap on due */
static int heap_n;
static int epfd = -1;
static struct sockaddr_in dst;
static body *bodies;
static size_t nbodies, capbodies;
static uint32_t batches_per_agent; /* count mode; UINT32_MAX in duration mode */
static int64_t t_start, t_stop_sending, t_hard_end;
static int64_t t_last_scan; /* ns: the last check for a batch stuck longer than -D */
static uint64_t hist[HIST_BUCKETS];
static int64_t lat_max_us, lat_sum_us;
static uint64_t lat_n;
static uint64_t n_acked, n_batches, n_dup_records, n_dup_batches, n_busy, n_refused, n_conn_err,
    n_mismatch, n_late, n_idle_closed, n_reconnects, body_bytes_total;
static int agents_done;
static volatile sig_atomic_t interrupted;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- latency histogram ---- */

static int hist_index(int64_t us)
{
    if (us < 64) {
        return us < 0 ? 0 : (int)us;
    }
    int e = 63 - __builtin_clzll((unsigned long long)us); /* >= 6 */
    int sub = (int)((us >> (e - 5)) & 31);
    int idx = 64 + (e - 6) * 32 + sub;
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of bucket idx, in us. */
static double hist_value(int idx)
{
    if (idx < 64) {
        return idx;
    }
    int e = (idx - 64) / 32 + 6;
    int sub = (idx - 64) % 32;
    double lo = (double)((int64_t)(32 + sub) << (e - 5));
    return lo + (double)((int64_t)1 << (e - 5)) / 2;
}

static double hist_pct(double p)
{
    if (lat_n == 0) {
        return 0;
    }
    uint64_t want = (uint64_t)(p / 100.0 * (double)lat_n);
    if (want >= lat_n) {
        want = lat_n - 1;
    }
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want) {
            double v = hist_value(i);
            return v > (double)lat_max_us ? (double)lat_max_us : v;
        }
    }
    return (double)lat_max_us;
}

/* ---- the due heap ---- */

static void heap_swap(int i, int j)
{
    int a = heap[i], b = heap[j];
    heap[i] = b;
    heap[j] = a;
    agents[b].heap_pos = i;
    agents[a].heap_pos = j;
}

static void heap_push(int ai)
{
    int i = heap_n++;
    heap[i] = ai;
    agents[ai].heap_pos = i;
    while (i > 0 && agents[heap[(i - 1) / 2]].due > agents[heap[i]].due) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static int heap_pop(void)
{
    int top = heap[0];
    heap_n--;
    if (heap_n > 0) {
        heap[0] = heap[heap_n];
        agents[heap[0]].heap_pos = 0;
        int i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap_n && agents[heap[l]].due < agents[heap[m]].due) {
                m = l;
            }
            if (r < heap_n && agents[heap[r]].due < agents[heap[m]].due) {
                m = r;
            }
            if (m == i) {
                break;
            }
            heap_swap(i, m);
            i = m;
        }
    }
    agents[top].heap_pos = -1;
    return top;
}

/* ---- bodies ---- */

static void make_line(char *out, int len, uint64_t seq)
{
    static const char *const words[] = {"GET", "POST", "PUT", "DELETE"};
    static const char *const paths[] = {"/api/v1/orders", "/api/v1/users/42", "/static/app.js",
                                        "/healthz", "/api/v2/search?q=spool"};
    static const int status[] = {200, 200, 200, 304, 404, 500, 201};
    char tmp[1024];
    int n;
    switch (seq % 3) {
    case 0:
        n = snprintf(tmp, sizeof(tmp),
                     "10.%u.%u.%u - - [01/Dec/2026:19:00:%02u +0000] \"%s %s HTTP/1.1\" %d %u "
                     "\"-\" \"curl/7.88\" seq=%010" PRIu64,
                     (unsigned)(seq % 200), (unsigned)(seq / 7 % 250), (unsigned)(seq % 251),
                     (unsigned)(seq % 60), words[seq % 4], paths[seq % 5], status[seq % 7],
                     (unsigned)(seq * 37 % 100000), seq);
        break;
    case 1:
        n = snprintf(tmp, sizeof(tmp),
                     "ts=2026-12-01T19:00:%02u.%03uZ level=%s svc=checkout user=%u "
                     "latency_ms=%u msg=\"order placed\" seq=%010" PRIu64,
                     (unsigned)(seq % 60), (unsigned)(seq % 1000), seq % 11 == 0 ? "warn" : "info",
                     (unsigned)(seq * 13 % 9973), (unsigned)(seq % 997), seq);
        break;
    default:
        n = snprintf(tmp, sizeof(tmp),
                     "{\"time\":\"2026-12-01T19:00:%02uZ\",\"level\":\"info\",\"path\":\"%s\","
                     "\"status\":%d,\"bytes\":%u,\"seq\":%" PRIu64 "}",
                     (unsigned)(seq % 60), paths[seq % 5], status[seq % 7],
                     (unsigned)(seq * 31 % 65536), seq);
        break;
    }
    if (n < 0) {
        n = 0;
    }
    if (n > len) {
        n = len;
    }
    memcpy(out, tmp, (size_t)n);
    memset(out + n, ' ', (size_t)(len - n));
}

/* The k-th body (records k*B .. k*B+B-1), encoded once. NULL on ENOMEM. */
static const body *get_body(uint32_t k)
{
    if (k < nbodies && bodies[k].data) {
        return &bodies[k];
    }
    if (k >= capbodies) {
        size_t cap = capbodies ? capbodies : 64;
        while (cap <= k) {
            cap *= 2;
        }
        body *nb = realloc(bodies, cap * sizeof(*nb));
        if (!nb) {
            return NULL;
        }
        memset(nb + capbodies, 0, (cap - capbodies) * sizeof(*nb));
        bodies = nb;
        capbodies = cap;
    }
    if (k >= nbodies) {
        nbodies = (size_t)k + 1;
    }
    int b = opt.batch;
    char *lines = malloc((size_t)b * (size_t)opt.line);
    spool_record *recs = calloc((size_t)b, sizeof(*recs));
    spool_header *hdrs = calloc(2, sizeof(*hdrs));
    spool_buf raw = {0}, packed = {0};
    const body *ret = NULL;
    static const char host[] = "fleet-agent", path[] = "/var/log/app/app.log";
    if (!lines || !recs || !hdrs) {
        goto out;
    }
    hdrs[0] = (spool_header){"host", 4, (const uint8_t *)host, (int32_t)strlen(host)};
    hdrs[1] = (spool_header){"path", 4, (const uint8_t *)path, (int32_t)strlen(path)};
    int64_t ts = spool_now_ms();
    for (int i = 0; i < b; i++) {
        uint64_t seq = (uint64_t)k * (uint64_t)b + (uint64_t)i;
        char *l = lines + (size_t)i * (size_t)opt.line;
        make_line(l, opt.line, seq);
        recs[i] = (spool_record){.key = NULL,
                                 .key_len = -1,
                                 .value = (const uint8_t *)l,
                                 .value_len = opt.line,
                                 .headers = hdrs,
                                 .header_count = 2,
                                 .timestamp = ts,
                                 .partition = 0};
    }
    if (spool_wire_batch_encode(&raw, (int64_t)k * b, recs, (size_t)b, ts, SPOOL_COMPRESS_NONE, 0) <
        0) {
        goto out;
    }
    if (opt.compress != SPOOL_COMPRESS_NONE) {
        if (spool_compress(&packed, opt.compress, opt.level, raw.data, raw.len) < 0) {
            goto out;
        }
        bodies[k].data = packed.data;
        bodies[k].len = packed.len;
        packed.data = NULL;
    } else {
        bodies[k].data = raw.data;
        bodies[k].len = raw.len;
        raw.data = NULL;
    }
    ret = &bodies[k];
out:
    spool_buf_free(&raw);
    spool_buf_free(&packed);
    free(lines);
    free(recs);
    free(hdrs);
    return ret;
}

/* ---- agents ---- */

static void set_events(agent *a, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)(a - agents)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, a->fd, &e) < 0) {
        fprintf(stderr, "fleetgen: epoll_ctl: %s\n", strerror(errno));
    }
}

static void close_conn(agent *a)
{
    if (a->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, a->fd, NULL);
        close(a->fd);
        a->fd = -1;
    }
}

static void schedule(agent *a, int64_t due)
{
    a->state = A_IDLE;
    a->due = due;
    heap_push((int)(a - agents));
}

static void finish(agent *a)
{
    close_conn(a);
    a->state = A_DONE;
    agents_done++;
}

/* A connection failed: reconnect after a backoff, resend the same batch. */
static void conn_error(agent *a, const char *what, int err)
{
    if (n_conn_err < 5) {
        fprintf(stderr, "fleetgen: agent %d: %s: %s\n", (int)(a - agents), what, strerror(err));
    }
    n_conn_err++;
    close_conn(a);
    int64_t t = now_ns();
    schedule(a, t + a->backoff);
    a->backoff = a->backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : a->backoff * 2;
}

static int open_conn(agent *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (a->src.sin_addr.s_addr != 0) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)&a->src, sizeof(a->src)) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    a->fd = fd;
    struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)(a - agents)};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        int err = errno;
        close(fd);
        a->fd = -1;
        return -err;
    }
    if (connect(fd, (const struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close_conn(a);
        return -err;
    }
    a->state = A_CONNECTING;
    return 0;
}

static void try_send(agent *a);

/* Starts (or restarts) the current batch's request. */
static void start_request(agent *a, int64_t t)
{
    const body *b = get_body(a->k);
    if (!b) {
        fprintf(stderr, "fleetgen: out of memory encoding batch %u\n", a->k);
        exit(1);
    }
    if (a->attempts == 0) {
        a->t_first = t;
    }
    a->attempts++;
    int64_t first = (int64_t)a->k * opt.batch;
    int n = snprintf(a->hdr, sizeof(a->hdr),
                     "POST " SPOOL_WIRE_PATH " HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: " SPOOL_WIRE_CT_BATCH "\r\n%s"
                     "Content-Length: %zu\r\n" SPOOL_WIRE_HDR_TOPIC
                     ": %s\r\n" SPOOL_WIRE_HDR_PARTITION ": 0\r\n" SPOOL_WIRE_HDR_FIRST_OFFSET
                     ": %" PRId64 "\r\n" SPOOL_WIRE_HDR_NEXT_OFFSET ": %" PRId64
                     "\r\n" SPOOL_WIRE_HDR_PRODUCER_ID ": %s\r\n%s%s%s\r\n",
                     opt.host, opt.port,
                     opt.compress == SPOOL_COMPRESS_ZSTD   ? "Content-Encoding: zstd\r\n"
                     : opt.compress == SPOOL_COMPRESS_GZIP ? "Content-Encoding: gzip\r\n"
                                                           : "",
                     b->len, opt.topic, first, first + opt.batch, a->producer,
                     opt.token ? "Authorization: Bearer " : "", opt.token ? opt.token : "",
                     opt.token ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(a->hdr)) {
        fprintf(stderr, "fleetgen: request header too long\n");
        exit(2);
    }
    a->hdr_len = (size_t)n;
    a->sent = 0;
    a->resp_len = 0;
    if (a->fd < 0) {
        int rc = open_conn(a);
        if (rc < 0) {
            conn_error(a, "connect", -rc);
        }
        return; /* sent once connected */
    }
    a->state = A_SENDING;
    try_send(a);
}

static void try_send(agent *a)
{
    const body *b = get_body(a->k);
    size_t total = a->hdr_len + b->len;
    while (a->sent < total) {
        struct iovec iov[2];
        int n = 0;
        if (a->sent < a->hdr_len) {
            iov[n++] = (struct iovec){a->hdr + a->sent, a->hdr_len - a->sent};
            iov[n++] = (struct iovec){b->data, b->len};
        } else {
            size_t off = a->sent - a->hdr_len;
            iov[n++] = (struct iovec){b->data + off, b->len - off};
        }
        ssize_t w = writev(a->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                set_events(a, EPOLLOUT);
                return;
            }
            conn_error(a, "send", errno);
            return;
        }
        a->sent += (size_t)w;
    }
    body_bytes_total += b->len;
    a->state = A_READING;
    set_events(a, EPOLLIN);
}

/* Value of header `name` in the answer's header block, or NULL. */
static const char *resp_header(const char *hdrs, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(hdrs, "\r\n");
    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') {
                v++;
            }
            size_t n = strcspn(v, "\r");
            if (n >= cap) {
                n = cap - 1;
            }
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

/* The current batch is done (acknowledged or refused): the next one. */
static void next_batch(agent *a, int64_t t)
{
    a->k++;
    a->attempts = 0;
    a->backoff = BACKOFF_MIN_NS;
    if (a->k >= batches_per_agent || t >= t_stop_sending || interrupted) {
        finish(a);
        return;
    }
    if (opt.rate > 0) {
        int64_t interval = (int64_t)((double)opt.batch / opt.rate * 1e9);
        a->sched += interval;
        if (a->sched < t) {
            n_late++;
            a->sched = t; /* the schedule moves: open loop per agent, not a backlog */
        }
        schedule(a, a->sched);
    } else {
        a->state = A_IDLE;
        start_request(a, t);
    }
}

/* A complete answer is in a->resp. */
static void on_answer(agent *a, int status, const char *text, int keep, int64_t t)
{
    if (!keep) {
        close_conn(a);
    }
    if (status == 200) {
        long got = -1;
        if (sscanf(text, "ok %ld records", &got) != 1) {
            got = -1;
        }
        int64_t us = (t - a->t_first) / 1000;
        hist[hist_index(us)]++;
        lat_n++;
        lat_sum_us += us;
        if (us > lat_max_us) {
            lat_max_us = us;
        }
        n_batches++;
        n_acked += (uint64_t)opt.batch;
        if (got == opt.batch) {
            /* acknowledged as appended */
        } else if (got == 0 && strstr(text, "duplicate")) {
            n_dup_batches++;
            n_dup_records += (uint64_t)opt.batch;
        } else {
            n_mismatch++;
            if (n_mismatch <= 5) {
                fprintf(stderr, "fleetgen: agent %d batch %u: unexpected answer '%.100s'\n",
                        (int)(a - agents), a->k, text);
            }
        }
        next_batch(a, t);
        return;
    }
    if (status == 503) {
        char ra[32];
        int64_t wait_ns = 1000000000LL;
        if (resp_header(a->resp, "Retry-After", ra, sizeof(ra))) {
            wait_ns = (int64_t)atoi(ra) * 1000000000LL;
        }
        if (wait_ns < BACKOFF_MIN_NS) {
            wait_ns = BACKOFF_MIN_NS;
        }
        n_busy++;
        schedule(a, t + wait_ns);
        return;
    }
    n_refused++;
    if (n_refused <= 5) {
        fprintf(stderr, "fleetgen: agent %d batch %u: HTTP %d: %.200s\n", (int)(a - agents), a->k,
                status, text);
    }
    next_batch(a, t);
}

static void try_read(agent *a, int64_t t)
{
    for (;;) {
        if (a->resp_len >= RESP_CAP - 1) {
            conn_error(a, "answer too large", EMSGSIZE);
            return;
        }
        ssize_t r = read(a->fd, a->resp + a->resp_len, RESP_CAP - 1 - a->resp_len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return;
            }
            conn_error(a, "receive", errno);
            return;
        }
        if (r == 0) {
            conn_error(a, "receive", ECONNRESET);
            return;
        }
        a->resp_len += (size_t)r;
        a->resp[a->resp_len] = '\0';
        char *end = strstr(a->resp, "\r\n\r\n");
        if (!end) {
            continue;
        }
        int status = 0;
        if (sscanf(a->resp, "HTTP/1.%*d %d", &status) != 1) {
            conn_error(a, "malformed answer", EPROTO);
            return;
        }
        char v[64];
        size_t clen = 0;
        if (resp_header(a->resp, "Content-Length", v, sizeof(v))) {
            clen = (size_t)strtoul(v, NULL, 10);
        }
        size_t have = a->resp_len - (size_t)(end + 4 - a->resp);
        if (have < clen) {
            continue;
        }
        int keep =
            !(resp_header(a->resp, "Connection", v, sizeof(v)) && strcasecmp(v, "close") == 0);
        /* NUL-terminates the header block for resp_header, the text follows */
        end[2] = '\0';
        char *text = end + 4;
        text[clen] = '\0';
        on_answer(a, status, text, keep, t);
        return;
    }
}

static void on_event(agent *a, uint32_t ev, int64_t t)
{
    if (a->state == A_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_error(a, "connect", err);
            return;
        }
        if (a->attempts > 1 || a->k > 0) {
            n_reconnects++;
        }
        a->state = A_SENDING;
        try_send(a);
        return;
    }
    if (a->state == A_SENDING) {
        try_send(a);
        return;
    }
    if (a->state == A_READING) {
        try_read(a, t);
        return;
    }
    if (a->state == A_IDLE && a->fd >= 0 && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) {
        /* the aggregator closed an idle keep-alive connection (read_timeout) */
        n_idle_closed++;
        close_conn(a);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: fleetgen -p PORT [options]\n"
               "  -H HOST       aggregator address (default 127.0.0.1)\n"
               "  -p PORT       aggregator http input port\n"
               "  -a N          simulated agents (default 10)\n"
               "  -n RECORDS    total records (split evenly; rounded up to whole batches)\n"
               "  -d SECONDS    or send for this long (default 20), then wait for the answers\n"
               "  -D SECONDS    at most this long for the last answers, and without any\n"
               "                acknowledgement before giving up (default 60)\n"
               "  -b RECORDS    records per batch (default 300)\n"
               "  -l BYTES      bytes per line (default 120)\n"
               "  -r RATE       open loop: records/s per agent (default 0: closed loop)\n"
               "  -c CODEC      body compression: zstd (default, level 1), gzip, none\n"
               "  -1            every agent from 127.0.0.1 (default: each its own 127.1.x.y)\n"
               "  -T TOKEN      bearer token\n"
               "  -t TOPIC      Spool-Topic (default app)\n"
               "  -s SEED       producer ids and start order (default 1)\n"
               "  -P SECONDS    progress on stderr every SECONDS (default 5, 0 = none)\n");
}

static int parse_args(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "H:p:a:n:d:D:b:l:r:c:1T:t:s:P:h")) != -1) {
        switch (ch) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'a':
            opt.agents = atoi(optarg);
            break;
        case 'n':
            opt.records = strtoll(optarg, NULL, 10);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'D':
            opt.drain = atof(optarg);
            break;
        case 'b':
            opt.batch = atoi(optarg);
            break;
        case 'l':
            opt.line = atoi(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'c':
            if (strcmp(optarg, "zstd") == 0) {
                opt.compress = SPOOL_COMPRESS_ZSTD;
            } else if (strcmp(optarg, "gzip") == 0) {
                opt.compress = SPOOL_COMPRESS_GZIP;
                opt.level = 6;
            } else if (strcmp(optarg, "none") == 0) {
                opt.compress = SPOOL_COMPRESS_NONE;
            } else {
                fprintf(stderr, "fleetgen: -c takes zstd, gzip or none\n");
                return -1;
            }
            break;
        case '1':
            opt.spread = 0;
            break;
        case 'T':
            opt.token = optarg;
            break;
        case 't':
            opt.topic = optarg;
            break;
        case 's':
            opt.seed = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'P':
            opt.progress = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.agents < 1 || opt.agents > 60000 ||
        opt.batch < 1 || opt.batch > 1000000 || opt.line < 8 || opt.line > 1000 || opt.rate < 0 ||
        opt.duration <= 0 || opt.records < 0) {
        fprintf(stderr, "fleetgen: bad arguments (-p required; 1 <= -a <= 60000, -b >= 1, "
                        "8 <= -l <= 1000)\n");
        usage(stderr);
        return -1;
    }
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) {
        fprintf(stderr, "fleetgen: -H takes an IPv4 address, got '%s'\n", opt.host);
        return -1;
    }
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)opt.port);
    return 0;
}

/* Each agent is a socket: the open-file limit must hold them all. */
static int raise_nofile(void)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)opt.agents + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 0;
    }
    if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
        struct rlimit r2 = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0) {
            rl = r2;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        fprintf(stderr,
                "fleetgen: %d agents need %llu open files, RLIMIT_NOFILE is %llu (hard %llu): "
                "raise it (ulimit -Hn / LimitNOFILE) or use fewer agents\n",
                opt.agents, (unsigned long long)want, (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max);
        return -1;
    }
    return 0;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0) {
        return 2;
    }
    if (raise_nofile() < 0) {
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    agents = calloc((size_t)opt.agents, sizeof(*agents));
    heap = calloc((size_t)opt.agents, sizeof(*heap));
    int *retry = calloc((size_t)opt.agents, sizeof(*retry));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!agents || !heap || !retry || epfd < 0) {
        fprintf(stderr, "fleetgen: out of memory\n");
        return 1;
    }
    if (opt.records > 0) {
        int64_t per = (opt.records + opt.agents - 1) / opt.agents;
        batches_per_agent = (uint32_t)((per + opt.batch - 1) / opt.batch);
    } else {
        batches_per_agent = UINT32_MAX;
    }
    /* Warm the first body before the clock starts. */
    if (!get_body(0)) {
        fprintf(stderr, "fleetgen: out of memory\n");
        return 1;
    }

    uint64_t rs = opt.seed;
    t_start = now_ns();
    t_stop_sending = opt.records > 0 ? INT64_MAX : t_start + (int64_t)(opt.duration * 1e9);
    int64_t spread_ns = opt.rate > 0 ? (int64_t)((double)opt.batch / opt.rate * 1e9) : 100000000LL;
    for (int i = 0; i < opt.agents; i++) {
        agent *a = &agents[i];
        a->fd = -1;
        a->heap_pos = -1;
        a->backoff = BACKOFF_MIN_NS;
        uint64_t hi = splitmix(&rs), lo = splitmix(&rs);
        snprintf(a->producer, sizeof(a->producer), "%016" PRIx64 "%016" PRIx64, hi, lo);
        a->src.sin_family = AF_INET;
        if (opt.spread) {
            /* 127.1.x.y: the whole of 127/8 is this host (loopback) */
            uint32_t ip =
                (127u << 24) | (1u << 16) | ((uint32_t)(i / 250) << 8) | (uint32_t)(i % 250 + 1);
            a->src.sin_addr.s_addr = htonl(ip);
        }
        int64_t phase = (int64_t)(splitmix(&rs) % (uint64_t)spread_ns);
        a->sched = t_start + phase;
        schedule(a, a->sched);
    }
    double cpu0 = cpu_seconds();
    t_last_scan = now_ns();

    struct epoll_event evs[MAX_EVENTS];
    int64_t last_progress = t_start;
    uint64_t last_acked = 0;
    int stop_swept = 0;
    while (agents_done < opt.agents) {
        int64_t t = now_ns();
        if (t_hard_end == 0 && (t >= t_stop_sending || interrupted)) {
            t_hard_end = t + (int64_t)(opt.drain * 1e9);
        }
        if (t_hard_end && t >= t_hard_end) {
            break;
        }
        if (t - t_last_scan > 1000000000LL) {
            /* A batch unacknowledged for -D seconds (aggregator gone): give up. */
            int stuck = -1;
            for (int i = 0; i < opt.agents && stuck < 0; i++) {
                if (agents[i].state != A_DONE && agents[i].attempts > 0 &&
                    t - agents[i].t_first > (int64_t)(opt.drain * 1e9)) {
                    stuck = i;
                }
            }
            if (stuck >= 0) {
                fprintf(stderr,
                        "fleetgen: agent %d: batch %u unacknowledged for %.0f s: giving up\n",
                        stuck, agents[stuck].k, opt.drain);
                break;
            }
            t_last_scan = t;
        }
        if (t_hard_end && !stop_swept) {
            /* Past the end: agents waiting for their next batch stop now;
             * those waiting to retry one (503, connection error) go on. */
            int keep = 0;
            while (heap_n > 0) {
                int ai = heap_pop();
                if (agents[ai].attempts == 0) {
                    finish(&agents[ai]);
                } else {
                    retry[keep++] = ai;
                }
            }
            for (int i = 0; i < keep; i++) {
                heap_push(retry[i]);
            }
            stop_swept = 1;
        }
        /* Due agents start their request. */
        while (heap_n > 0 && agents[heap[0]].due <= t) {
            start_request(&agents[heap_pop()], t);
        }
        if (opt.progress > 0 && t - last_progress >= (int64_t)opt.progress * 1000000000LL) {
            double dt = (double)(t - last_progress) / 1e9;
            fprintf(stderr,
                    "fleetgen: %.0fs: %" PRIu64 " records acknowledged (%.0f/s), %" PRIu64
                    " busy, %" PRIu64 " connection errors\n",
                    (double)(t - t_start) / 1e9, n_acked, (double)(n_acked - last_acked) / dt,
                    n_busy, n_conn_err);
            last_progress = t;
            last_acked = n_acked;
        }
        int64_t wait_ms = 100;
        if (heap_n > 0) {
            int64_t d = (agents[heap[0]].due - t + 999999) / 1000000;
            if (d < wait_ms) {
                wait_ms = d < 0 ? 0 : d;
            }
        }
        int n = epoll_wait(epfd, evs, MAX_EVENTS, (int)wait_ms);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "fleetgen: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        t = now_ns();
        for (int i = 0; i < n; i++) {
            agent *a = &agents[evs[i].data.u32];
            on_event(a, evs[i].events, t);
        }
    }
    int64_t t_end = now_ns();
    double cpu = cpu_seconds() - cpu0;
    int unfinished = opt.agents - agents_done;
    double elapsed = (double)(t_end - t_start) / 1e9;

    printf("agents %d\n", opt.agents);
    printf("batch_records %d\nline_bytes %d\n", opt.batch, opt.line);
    printf("mode %s\nrate_per_agent %.1f\n", opt.rate > 0 ? "open" : "closed", opt.rate);
    printf("elapsed_s %.3f\n", elapsed);
    printf("records_acked %" PRIu64 "\n", n_acked);
    printf("batches_acked %" PRIu64 "\n", n_batches);
    printf("records_per_s %.0f\n", elapsed > 0 ? (double)n_acked / elapsed : 0.0);
    printf("body_bytes %" PRIu64 "\n", body_bytes_total);
    printf("duplicate_batches %" PRIu64 "\n", n_dup_batches);
    printf("busy_503 %" PRIu64 "\n", n_busy);
    printf("refused %" PRIu64 "\n", n_refused);
    printf("mismatched %" PRIu64 "\n", n_mismatch);
    printf("conn_errors %" PRIu64 "\n", n_conn_err);
    printf("reconnects %" PRIu64 "\n", n_reconnects);
    printf("idle_closed %" PRIu64 "\n", n_idle_closed);
    printf("late %" PRIu64 "\n", n_late);
    printf("unfinished_agents %d\n", unfinished);
    printf("lat_mean_ms %.3f\n", lat_n ? (double)lat_sum_us / (double)lat_n / 1000.0 : 0.0);
    printf("lat_p50_ms %.3f\n", hist_pct(50) / 1000.0);
    printf("lat_p90_ms %.3f\n", hist_pct(90) / 1000.0);
    printf("lat_p99_ms %.3f\n", hist_pct(99) / 1000.0);
    printf("lat_p999_ms %.3f\n", hist_pct(99.9) / 1000.0);
    printf("lat_max_ms %.3f\n", (double)lat_max_us / 1000.0);
    printf("gen_cpu_s %.3f\n", cpu);
    printf("distinct_bodies %zu\n", nbodies);
    fflush(stdout);

    for (int i = 0; i < opt.agents; i++) {
        close_conn(&agents[i]);
    }
    for (size_t k = 0; k < nbodies; k++) {
        free(bodies[k].data);
    }
    free(bodies);
    free(agents);
    free(heap);
    free(retry);
    close(epfd);
    if (n_refused || n_mismatch || unfinished) {
        fprintf(stderr,
                "fleetgen: FAILED: %" PRIu64 " refused, %" PRIu64 " answers that did not "
                "acknowledge the batch, %d agents with a batch unacknowledged at the end\n",
                n_refused, n_mismatch, unfinished);
        return 1;
    }
    return 0;
}
