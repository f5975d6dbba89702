/*
 * http_in_workers.c: the worker pool of the `http` input (http_in.c). The
 * server thread hands a complete request to the workers with its
 * connection suspended; a worker decompresses, decodes, submits and waits
 * for durability (up to ack_timeout), then resumes the connection, and the
 * server thread sends the answer. So a slow log never stalls the event loop.
 * A native request with a producer id holds its producer/topic/partition
 * key (http_in_idem.c) from before decoding until its outcome is known, and
 * its batch carries the key's new next offset as the input's position.
 *
 * Invariants: a request (httpi_req) is owned by the server thread, except
 * between being queued and resumed, when exactly one worker owns it; the
 * job queue and the idle list are touched only under ctx->jobs_lock; jobs
 * go to the most recently idle worker, so with little concurrency the same
 * few workers (and their scratch buffers) serve; a worker's scratch buffers
 * are its own (thread-specific), kept warm between requests (up to
 * HTTPI_KEEP_BYTES each, charged to memory_limit) and freed when it ends.
 *
 * What it does not do: route, authenticate or read requests, or answer
 * them (http_in.c, on the server thread); starting the workers is part of
 * the input's start (http_in.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "http_in.h"
#include "spool/wire.h"

#define HTTPI_MAX_HEADERS 256 /* headers per record this input keeps, plus `agent` */
/* A worker keeps its decompression and JSON buffers between requests up to
 * this size each (a default 1 MiB chunk decompresses to ~1.3 MiB; 4 MiB
 * chunks fit too), charged to memory_limit: freeing and faulting them in
 * again per request cost the aggregator ~15% of its CPU (bench/http). */
#define HTTPI_KEEP_BYTES ((size_t)8 << 20)
/* The record reader's own decompression buffer (batches a sender's topic
 * stores compressed) is not in the account: it is kept only up to this. */
#define HTTPI_READER_KEEP_BYTES ((size_t)64 << 10)

/* Appends records to a batch, with their headers but `agent`, then agent.
 * Stream ticks (header spool.tick) are dropped and counted: they mark the
 * sending agent's time, not this one's (docs/streams.md, "Time"). */
typedef struct httpi_sink {
    spool_batch *batch;
    const char *agent;
    int32_t agent_len;
    size_t ticks; /* tick records dropped */
    spool_header hdrs[HTTPI_MAX_HEADERS + 1];
} httpi_sink;

/*
 * Per-worker scratch space: a request is decoded on one worker thread, so
 * the buffers are reused across requests without locks; the thread-key
 * destructor frees them when the worker ends.
 */
typedef struct httpi_scratch {
    spool_buf plain;          /* decompressed body */
    spool_wire_reader *dec;   /* native records */
    spool_wire_parser parser; /* JSON records */
    httpi_sink sink;
    size_t held; /* bytes of kept buffers charged to the memory account */
} httpi_scratch;

static pthread_key_t httpi_scratch_key;
static pthread_once_t httpi_scratch_once = PTHREAD_ONCE_INIT;

static void httpi_scratch_free(void *p)
{
    httpi_scratch *sc = p;
    if (!sc) {
        return;
    }
    spool_buf_free(&sc->plain);
    spool_memory_release(sc->held);
    spool_wire_reader_destroy(sc->dec);
    spool_wire_parser_free(&sc->parser);
    free(sc);
}

static void httpi_scratch_key_init(void)
{
    pthread_key_create(&httpi_scratch_key, httpi_scratch_free);
}

/* This thread's scratch, created on first use. NULL on ENOMEM. */
static httpi_scratch *httpi_scratch_get(void)
{
    pthread_once(&httpi_scratch_once, httpi_scratch_key_init);
    httpi_scratch *sc = pthread_getspecific(httpi_scratch_key);
    if (!sc) {
        sc = calloc(1, sizeof(*sc));
        if (!sc) {
            return NULL;
        }
        sc->dec = spool_wire_reader_create();
        if (!sc->dec || pthread_setspecific(httpi_scratch_key, sc) != 0) {
            httpi_scratch_free(sc);
            return NULL;
        }
    }
    return sc;
}

/*
 * After a request: keep the buffers for the next one (warm: no page faults)
 * unless one grew beyond HTTPI_KEEP_BYTES or memory_limit has no room for
 * what is kept; what is kept stays charged to the memory account.
 */
static void httpi_scratch_release(httpi_scratch *sc)
{
    spool_buf *bufs[] = {&sc->plain, &sc->parser.scratch};
    size_t n = sizeof(bufs) / sizeof(bufs[0]);
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        if (bufs[i]->cap > HTTPI_KEEP_BYTES) {
            spool_buf_free(bufs[i]);
        }
        bufs[i]->len = 0;
        keep += bufs[i]->cap;
    }
    if (keep > sc->held && spool_memory_reserve(keep - sc->held, 0) < 0) {
        for (size_t i = 0; i < n; i++) {
            spool_buf_free(bufs[i]);
        }
        keep = 0;
    } else if (keep > sc->held) {
        sc->held = keep; /* charged by the reserve above */
    }
    if (keep < sc->held) {
        spool_memory_release(sc->held - keep);
        sc->held = keep;
    }
    spool_wire_reader_reset(sc->dec, HTTPI_READER_KEEP_BYTES);
}

static int httpi_sink_add(void *arg, const spool_record *r)
{
    httpi_sink *s = arg;
    uint32_t n = 0;
    if (r->header_count && spool_record_header(r, SPOOL_TICK_HEADER)) {
        s->ticks++;
        return 0;
    }
    for (uint32_t i = 0; i < r->header_count && n < HTTPI_MAX_HEADERS; i++) {
        const spool_header *h = &r->headers[i];
        if (h->key_len == 5 && memcmp(h->key, "agent", 5) == 0) {
            continue;
        }
        s->hdrs[n++] = *h;
    }
    if (r->header_count > HTTPI_MAX_HEADERS) {
        return -E2BIG;
    }
    s->hdrs[n].key = "agent";
    s->hdrs[n].key_len = 5;
    s->hdrs[n].value = (const uint8_t *)s->agent;
    s->hdrs[n].value_len = s->agent_len;
    n++;
    spool_record copy = *r;
    copy.headers = s->hdrs;
    copy.header_count = n;
    copy.partition = -1;
    copy.offset = -1;
    return spool_batch_append(s->batch, &copy);
}

/* Decodes native batches from body into the sink. 0 or a status with why. */
static unsigned httpi_decode_native(const httpi_req *req, int64_t first, const spool_buf *body,
                                    httpi_sink *sink, spool_wire_reader *rd, char *why,
                                    size_t whycap)
{
    unsigned status = 0;
    size_t pos = 0;
    while (pos < body->len) {
        /* The CRC is checked once, by spool_wire_reader_read (below). */
        long n = spool_wire_batch_size(body->data + pos, body->len - pos, 0, NULL);
        if (n == 0) {
            snprintf(why, whycap, "truncated batch at byte %zu", pos);
            status = MHD_HTTP_BAD_REQUEST;
            break;
        }
        if (n < 0) {
            snprintf(why, whycap, "corrupt batch at byte %zu: bad header", pos);
            status = MHD_HTTP_BAD_REQUEST;
            break;
        }
        spool_wire_reader_reset(rd, SIZE_MAX);
        int m = spool_wire_reader_read(rd, body->data + pos, (size_t)n, -1, first);
        if (m < 0) {
            /* Tell a CRC mismatch from other damage (error path only). */
            int crc_bad =
                m == -EBADMSG && spool_wire_batch_size(body->data + pos, (size_t)n, 1, NULL) < 0;
            if (m == -ENOMEM) {
                snprintf(why, whycap, "out of memory");
                status = MHD_HTTP_SERVICE_UNAVAILABLE;
                break;
            }
            snprintf(why, whycap, "corrupt batch at byte %zu: %s", pos,
                     m == -ENOTSUP ? "unsupported compression"
                     : crc_bad     ? "CRC mismatch"
                                   : "malformed records");
            status = MHD_HTTP_BAD_REQUEST;
            break;
        }
        size_t count;
        const spool_record *recs = spool_wire_reader_records(rd, &count);
        for (size_t i = 0; i < count; i++) {
            if (recs[i].offset >= req->next) {
                break;
            }
            int rc = httpi_sink_add(sink, &recs[i]);
            if (rc < 0) {
                snprintf(why, whycap, "%s",
                         rc == -E2BIG ? "too many headers in a record" : "out of memory");
                status = rc == -E2BIG ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_SERVICE_UNAVAILABLE;
                break;
            }
        }
        if (status) {
            break;
        }
        pos += (size_t)n;
    }
    if (status == 0 && pos > 0 && spool_batch_count(sink->batch) == 0 && sink->ticks == 0 &&
        (req->first != INT64_MIN || req->next != INT64_MAX)) {
        snprintf(why, whycap,
                 "no record of the body is in [Spool-First-Offset, Spool-Next-Offset) = "
                 "[%" PRId64 ", %" PRId64 "): the body would be dropped",
                 first == INT64_MIN ? 0 : first, req->next);
        status = MHD_HTTP_BAD_REQUEST;
    }
    return status;
}

/*
 * Idempotent ingest: the key's new next offset goes with the batch, as the
 * input's position (durable exactly with the records), with the removal of
 * keys that expired. 0, or 503 on ENOMEM.
 */
static unsigned httpi_idem_attach(httpi_ctx *c, spool_batch *b, const httpi_idem_ticket *tk)
{
    uint8_t pos[HTTPI_IDEM_POS_LEN];
    httpi_idem_pos_encode(pos, tk->next, spool_now_ms());
    if (spool_batch_set_position(b, tk->key, pos, sizeof(pos)) < 0) {
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    char *gone[16];
    size_t n = httpi_idem_take_forgotten(&c->idem, gone, sizeof(gone) / sizeof(gone[0]));
    for (size_t i = 0; i < n; i++) {
        if (spool_batch_set_position(b, gone[i], NULL, 0) < 0) {
            /* still in the store: it expires again at the next start */
        }
        free(gone[i]);
    }
    return 0;
}

/* A worker's job: decode, submit, wait for durability. Sets req->status
 * and req->why. Runs on a worker thread. */
static void httpi_process(httpi_ctx *c, httpi_req *req)
{
    char *why = req->why;
    size_t whycap = sizeof(req->why);
    unsigned status = 0;
    spool_batch *b = NULL;
    httpi_scratch *sc = httpi_scratch_get();
    const spool_buf *plain = &req->body;
    httpi_idem_ticket tk = {0};
    int outcome = HTTPI_IDEM_NOT_SENT;

    why[0] = '\0';
    if (!sc) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(why, whycap, "out of memory");
        goto out;
    }
    if (atomic_load(&c->stopping)) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(why, whycap, "shutting down, retry later");
        goto out;
    }
    if (req->enc != SPOOL_COMPRESS_NONE) {
        size_t limit = (size_t)c->max_body_bytes * 8;
        sc->plain.len = 0;
        int rc = spool_decompress(&sc->plain, req->enc, req->body.data, req->body.len, limit);
        if (rc == -EFBIG) {
            status = MHD_HTTP_CONTENT_TOO_LARGE;
            snprintf(why, whycap, "decompressed body larger than 8 x max_body_bytes");
            goto out;
        } else if (rc < 0) {
            status = rc == -ENOMEM ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_REQUEST;
            snprintf(why, whycap, "%s",
                     rc == -ENOMEM ? "out of memory" : "corrupt compressed body");
            goto out;
        }
        plain = &sc->plain;
    }
    b = spool_batch_create(c->ins);
    if (!b) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(why, whycap, "out of memory");
        goto out;
    }
    httpi_sink *sink = &sc->sink;
    sink->batch = b;
    sink->agent = req->agent;
    sink->agent_len = (int32_t)strlen(req->agent);
    sink->ticks = 0;
    if (req->kind == KIND_NATIVE && req->idem_key[0]) {
        int v = httpi_idem_begin(&c->idem, req->idem_key, req->first, req->next, spool_now_ms(),
                                 req->queued_ms + c->ack_timeout, &tk);
        if (v < 0) {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            snprintf(why, whycap, "%s",
                     v == -ENOMEM ? "out of memory"
                                  : "busy: an earlier request of this producer and partition is "
                                    "still being written, retry later");
            goto out;
        }
        if (v == HTTPI_IDEM_DUP) {
            spool_counter_add(c->c_dup, 1);
            status = MHD_HTTP_OK;
            snprintf(why, whycap,
                     "ok 0 records (duplicate: offsets before %" PRId64 " were accepted before)",
                     req->next);
            goto out;
        }
        if (tk.overlap || tk.gap) {
            spool_counter_add(tk.overlap ? c->c_overlap : c->c_gap, 1);
        }
        status = httpi_decode_native(req, tk.from, plain, sink, sc->dec, why, whycap);
        if (status == 0 && (status = httpi_idem_attach(c, b, &tk)) != 0) {
            snprintf(why, whycap, "out of memory");
        }
    } else if (req->kind == KIND_NATIVE) {
        status = httpi_decode_native(req, req->first, plain, sink, sc->dec, why, whycap);
    } else {
        long n = spool_wire_json_parse(&sc->parser, plain->data ? plain->data : (const uint8_t *)"",
                                       plain->len, httpi_sink_add, sink, why, whycap);
        if (n == -E2BIG) {
            snprintf(why, whycap, "too many headers in a record");
        }
        if (n == -ENOMEM) {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            snprintf(why, whycap, "out of memory");
        } else if (n < 0) {
            status = MHD_HTTP_BAD_REQUEST;
            if (!why[0]) {
                snprintf(why, whycap, "malformed body");
            }
        }
    }
    if (status) {
        goto out;
    }
    spool_counter_add(c->c_ticks, sink->ticks);
    size_t count = spool_batch_count(b);
    if (count == 0) {
        status = MHD_HTTP_OK;
        snprintf(why, whycap, "ok 0 records");
        goto out;
    }
    /* ack_timeout bounds the whole wait, time in the workers' queue included. */
    int64_t left = c->ack_timeout - (spool_monotonic_ms() - req->queued_ms);
    if (left <= 0) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(why, whycap, "busy: every worker was waiting for the log, retry later");
        goto out;
    }
    spool_counter_add(c->c_body, req->body.len);
    /* The batch holds the records now (and counts itself): give back the
     * body and this thread's buffers before waiting for durability. */
    spool_buf_free(&req->body);
    httpi_scratch_release(sc);
    spool_memory_release(req->mem);
    req->mem = 0;
    int rc = spool_input_submit_durable(c->ins, b, left);
    outcome = rc == -EAGAIN || rc == -ESHUTDOWN || rc == -ENOMEM ? HTTPI_IDEM_NOT_SENT
              : rc == 0                                          ? HTTPI_IDEM_DURABLE
                                                                 : HTTPI_IDEM_UNKNOWN;
    if (rc == 0) {
        b = NULL;
        status = MHD_HTTP_OK;
        snprintf(why, whycap, "ok %zu records", count);
    } else if (rc == -EAGAIN || rc == -ESHUTDOWN) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(why, whycap, "%s",
                 rc == -EAGAIN ? "busy: the pipeline is full, retry later"
                               : "shutting down, retry later");
    } else {
        /* Queued but not (yet) durable: the core owns the batch now. */
        b = NULL;
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        if (rc == -ETIMEDOUT) {
            snprintf(why, whycap,
                     "busy: not durable within ack_timeout (the log is full "
                     "or slow), retry later");
        } else {
            snprintf(why, whycap, "the log failed the batch: %s", strerror(-rc));
        }
    }
out:
    httpi_idem_end(&c->idem, &tk, outcome);
    if (status >= 400 && status != MHD_HTTP_SERVICE_UNAVAILABLE) {
        spool_log_warn(c->ins, "%s: HTTP %u: %s", req->agent, status, why);
    }
    spool_batch_destroy(b);
    if (sc) {
        httpi_scratch_release(sc);
    }
    req->status = status;
}

void *httpi_worker_main(void *arg)
{
    httpi_worker *w = arg;
    httpi_ctx *c = w->c;
    for (;;) {
        pthread_mutex_lock(&c->jobs_lock);
        while (!c->jobs_head && !atomic_load(&c->stopping)) {
            if (!w->waiting) {
                c->idle[c->nidle++] = w;
                w->waiting = 1;
            }
            pthread_cond_wait(&w->cond, &c->jobs_lock);
        }
        if (w->waiting) { /* woken by stop, or work found on its own */
            for (size_t i = 0; i < c->nidle; i++) {
                if (c->idle[i] == w) {
                    c->idle[i] = c->idle[--c->nidle];
                    break;
                }
            }
            w->waiting = 0;
        }
        httpi_req *req = c->jobs_head;
        if (!req) {
            pthread_mutex_unlock(&c->jobs_lock);
            return NULL; /* stopping and nothing left */
        }
        c->jobs_head = req->next_job;
        if (!c->jobs_head) {
            c->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&c->jobs_lock);
        httpi_process(c, req);
        req->state = REQ_DONE;
        /* From here the server thread owns req again. */
        MHD_resume_connection(req->conn);
        /* MHD's own signal does not wake our poll on its epoll fd: without
         * this the answer waits for the next timeout (up to 200 ms). */
        httpi_wake_server(c);
    }
}

void httpi_workers_stop(httpi_ctx *c)
{
    if (c->jobs_init) {
        pthread_mutex_lock(&c->jobs_lock);
        for (size_t i = 0; i < c->nworkers; i++) {
            pthread_cond_signal(&c->wk[i].cond);
        }
        pthread_mutex_unlock(&c->jobs_lock);
    }
    for (size_t i = 0; i < c->nworkers; i++) {
        pthread_join(c->wk[i].thread, NULL);
        pthread_cond_destroy(&c->wk[i].cond);
    }
    c->nworkers = 0;
    c->nidle = 0;
    free(c->wk);
    free(c->idle);
    c->wk = NULL;
    c->idle = NULL;
}
