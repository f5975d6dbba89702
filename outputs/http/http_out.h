/*
 * http_out.h: internals shared by the files of the `http` output (not an
 * API): the instance context and the request objects, and the sender
 * thread (http_out_send.c) that runs the requests on a curl multi handle.
 *
 * Threads: flush() and drain() run on the output runner's thread; the
 * sender thread runs curl and calls spool_output_complete(). They share
 * only `incoming`, `free_reqs` and `outstanding`, under `lock`.
 */
#ifndef SPOOL_HTTP_OUT_H
#define SPOOL_HTTP_OUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "http_fmt.h"
#include "spool/spool.h"

#define HTTPO_RESP_MAX 2048          /* response bytes kept for a reject reason */
#define HTTPO_RESP_MAX_ES (64 << 20) /* an Elasticsearch bulk response, read item by item */
#define HTTPO_RESP_MAX_FMT (1 << 20) /* a Loki or OTLP response */
#define HTTPO_MAX_RETRY_AFTER 300000 /* ms; a larger Retry-After is capped */

enum { HTTPO_COMP_AUTO = 0, HTTPO_COMP_NONE = 1, HTTPO_COMP_GZIP = 2, HTTPO_COMP_ZSTD = 3 };

typedef struct httpo_ctx httpo_ctx;

/* One POST: a chunk's body and its curl handle. Reused across chunks. */
typedef struct httpo_req {
    struct httpo_req *next; /* in incoming, the sender's lists, or free_reqs */
    httpo_ctx *c;
    const spool_chunk *chunk; /* the runner's chunk, valid until completed */
    size_t target;            /* index of the URL it was sent to */
    CURL *easy;               /* keeps its options between uses */
    struct curl_slist *hl;    /* this request's headers */
    spool_buf body;           /* encoded body (JSON, or re-encoded native) */
    spool_buf packed;         /* compressed body */
    spool_buf resp;           /* first resp_max bytes of the response */
    spool_buf aux;            /* what the format needs to read the response */
    int64_t retry_after_ms;   /* from the response, -1 if none */
    char errbuf[CURL_ERROR_SIZE];
} httpo_req;

struct httpo_ctx {
    /* options (filled by the core) */
    char *url;                 /* destination URL (or urls) */
    spool_strlist urls;        /* destination URLs: the first preferred, the others standby */
    int64_t failover_after;    /* consecutive failed requests before the next URL is used */
    int64_t failback_interval; /* ms between health probes of the preferred URL */
    int format;                /* HTTPO_FMT_* */
    int compression;           /* HTTPO_COMP_*; auto = zstd for spool, none for JSON */
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
    httpo_fmt fmt;             /* elasticsearch, loki, otlp: their options and state */
    int idempotent;            /* format spool: send Spool-Producer-Id (exactly once) */

    /* runner-thread state */
    spool_instance *ins;
    int comp;                    /* resolved HTTPO_COMP_NONE/GZIP/ZSTD */
    size_t resp_max;             /* response bytes kept (an ES bulk answer is read whole) */
    char *token_value;           /* current bearer token, NULL for none */
    struct timespec token_mtime; /* of token_file when read */
    int64_t token_checked_ms;    /* monotonic ms of the last stat */
    char producer_id[33];        /* this node's producer id (hex), "" when not idempotent */
    char **targets;              /* the URLs, preferred first (url, or the items of urls) */
    size_t ntargets;
    CURL *probe;                /* GET <preferred>/health while failed over */
    int64_t probed_ms;          /* monotonic ms of the last probe */
    spool_counter *c_failovers; /* switches away from a failing URL */
    _Atomic size_t cur;         /* index of the URL in use (any thread) */
    int fails;                  /* consecutive failures of targets[cur] (sender thread) */

    /* shared with the sender thread */
    CURLM *multi;
    pthread_t thread;
    int thread_started;
    int lock_init;
    pthread_mutex_t lock; /* guards the four fields below */
    pthread_cond_t idle;  /* signalled when outstanding drops */
    httpo_req *incoming;  /* flushed, not yet taken by the sender (FIFO) */
    httpo_req *free_reqs; /* finished requests for reuse */
    size_t outstanding;   /* flushed and not yet completed */
    int stop;             /* the sender must finish */
};

/* Creates the multi handle and starts the sender thread. 0 or -errno. */
int httpo_sender_start(httpo_ctx *c);
/* Hands a prepared request to the sender; the chunk is answered later
 * with spool_output_complete from the sender thread. Runner thread. */
void httpo_sender_submit(httpo_ctx *c, httpo_req *r);
/* Waits until nothing is outstanding, at most timeout_ms. Runner thread. */
void httpo_sender_drain(httpo_ctx *c, int64_t timeout_ms);
/* Stops the sender (outstanding chunks are completed as SPOOL_RETRY), joins
 * it and frees every request. Accepts a never-started sender. */
void httpo_sender_stop(httpo_ctx *c);

/* The URL in use now. Any thread. */
const char *httpo_url(httpo_ctx *c);
/* A request's outcome (SPOOL_OK/RETRY/REJECT) for failover: after
 * failover_after consecutive retries of the URL in use, the next one is
 * used. Sender thread. */
void httpo_target_result(httpo_ctx *c, const httpo_req *r, int res);

/* Frees a request and its handle. Accepts NULL. */
void httpo_req_free(httpo_req *r);

#endif /* SPOOL_HTTP_OUT_H */
