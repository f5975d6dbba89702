/*
 * http_in.h: pieces of the `http` input shared between its files: the
 * bearer-token set and request body decompression (http_in_auth.c), the
 * connection accounting against floods (http_in_conn.c), and the input's
 * state with its requests, which the server side (http_in.c) and the worker
 * pool (http_in_workers.c) share. Private to inputs/http/.
 */
#ifndef SPOOL_HTTP_IN_H
#define SPOOL_HTTP_IN_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "http_in_idem.h"
#include "spool/spool.h"

/* Bearer tokens read from tokens_file, re-read when its mtime changes. */
typedef struct httpi_tokens {
    pthread_mutex_t lock; /* guards everything below */
    char *path;           /* tokens_file (borrowed from the options) */
    char **items;         /* count tokens */
    size_t count;
    struct timespec mtime; /* of the file when last read */
    int64_t checked_ms;    /* monotonic ms of the last stat */
    int lock_init;         /* 1 once lock is initialised */
} httpi_tokens;

/* Loads path into t (first load: errors are returned). 0 or -errno. */
int httpi_tokens_init(httpi_tokens *t, const char *path);
void httpi_tokens_destroy(httpi_tokens *t);

enum httpi_auth {
    HTTPI_AUTH_OK = 0,
    HTTPI_AUTH_MISSING = 1, /* no bearer token: 401 */
    HTTPI_AUTH_WRONG = 2,   /* a token that is not in the file: 403 */
};

/* Checks an Authorization header value (may be NULL) against the tokens,
 * re-reading the file first if its mtime changed (stat at most once a
 * second). Any thread. */
int httpi_tokens_check(httpi_tokens *t, spool_instance *ins, const char *authorization);

/* ---- connections (http_in_conn.c); server thread only ---- */

enum httpi_phase {
    HTTPI_PHASE_HEADERS = 0, /* a new connection, waiting for a complete request header */
    HTTPI_PHASE_KEPT = 4,    /* kept alive after an answer: idle, or reading the next header */
    HTTPI_PHASE_BODY = 1,    /* header done, reading the body */
    HTTPI_PHASE_BUSY = 2,    /* request being processed or answered: no deadline */
    HTTPI_PHASE_CLOSING = 3, /* shut down after a deadline, MHD closes it */
};

typedef struct httpi_conn httpi_conn;
struct httpi_ipcount;

typedef struct httpi_conns {
    int64_t max_total;                      /* max_connections */
    int64_t max_per_client;                 /* max_connections_per_client */
    int64_t header_timeout_ms;              /* a request header must be complete within this */
    int64_t body_timeout_ms;                /* a body must be complete within this of its header */
    int64_t read_timeout_ms;                /* MHD closes a connection silent this long */
    size_t open;                            /* connections open now */
    httpi_conn *head;                       /* the open connections */
    struct httpi_ipcount **buckets;         /* open connections per client address */
    uint64_t refused_total, refused_client; /* since the last warning */
    uint64_t timed_header, timed_body, timed_idle; /* since the last warning */
    int64_t last_warn_ms;  /* monotonic ms of the last warning, 0 = none yet */
    int64_t last_sweep_ms; /* monotonic ms of the last deadline sweep */
    spool_counter *c_refused, *c_timed_out, *g_open;
} httpi_conns;

/* Set the limits first, then init (registers the metrics). 0 or -ENOMEM. */
int httpi_conns_init(httpi_conns *cs, spool_instance *ins);
void httpi_conns_destroy(httpi_conns *cs);
/* MHD's accept policy: 1 to accept a connection from sa, 0 refused (counted). */
int httpi_conns_admit(httpi_conns *cs, const struct sockaddr *sa);
/* MHD started a connection: track it (in HEADERS). NULL on ENOMEM (untracked). */
httpi_conn *httpi_conns_opened(httpi_conns *cs, int fd, const struct sockaddr *sa, int64_t now);
/* MHD closed it. Accepts NULL. */
void httpi_conns_closed(httpi_conns *cs, httpi_conn *hc);
/* Moves hc (may be NULL) to a phase, with that phase's deadline from now.
 * KEPT gets read_timeout + header_timeout: a kept-alive connection that is
 * merely idle is closed quietly by MHD at read_timeout; one that dribbles
 * its next header is cut (and counted) later. */
void httpi_conn_phase(httpi_conns *cs, httpi_conn *hc, int phase, int64_t now);
/* MHD closed a request for inactivity (read_timeout): count it. */
void httpi_conns_idle_timeout(httpi_conns *cs);
/* Shuts down connections past their deadline and warns (rate limited)
 * about refusals and timeouts. Returns ms until it wants to run again. */
int64_t httpi_conns_tick(httpi_conns *cs, spool_instance *ins, int64_t now);

/* ---- the input's state (http_in.c) and its workers (http_in_workers.c) ---- */

struct MHD_Daemon;
struct MHD_Connection;

typedef struct httpi_ctx {
    /* options */
    char *listen;            /* host:port */
    char *tokens_file;       /* bearer tokens, one a line */
    char *tls_cert;          /* tls.cert: server certificate (PEM file) */
    char *tls_key;           /* tls.key: server key (PEM file) */
    char *tls_client_ca;     /* tls.client_ca: CA (PEM) client certificates must chain to */
    int64_t max_body_bytes;  /* bytes of a request body as received */
    int64_t ack_timeout;     /* ms to wait for durability before 503 */
    int64_t retry_after;     /* ms, the Retry-After of a 503 (rounded up to s) */
    int64_t max_connections; /* concurrent connections */
    int64_t max_per_client;  /* concurrent connections from one address */
    int64_t header_timeout;  /* ms for a complete request header */
    int64_t body_timeout;    /* ms for a complete body after its header */
    int64_t read_timeout;    /* ms without any byte from the client */
    int64_t workers;         /* threads that decode, submit and wait for durability */
    int64_t producer_expiry; /* ms: idle producer entries are forgotten after this */

    /* state */
    spool_instance *ins;
    struct MHD_Daemon *daemon;
    char *cert_pem, *key_pem, *ca_pem; /* file contents for MHD */
    int use_tokens;
    httpi_tokens tokens;
    struct sockaddr_storage addr;
    spool_counter *c_bad;                     /* 4xx answered */
    spool_counter *c_busy;                    /* 503 answered */
    spool_counter *c_body;                    /* request body bytes as received (compressed) */
    spool_counter *c_ticks;                   /* stream tick records dropped on ingest */
    spool_counter *c_dup, *c_overlap, *c_gap; /* idempotent ingest (http_in_idem.c) */
    httpi_idem idem;                          /* per producer/topic/partition next offset */
    int idem_init;                            /* 1 once idem is initialised */
    int idem_loaded;                          /* 1 once the stored offsets are in idem */
    httpi_conns conns; /* open connections, limits, deadlines (server thread) */
    int conns_init;    /* 1 once conns is initialised */
    pthread_t server;  /* runs MHD's loop */
    int server_started;
    int wake_fd;         /* eventfd: wakes the server thread to stop */
    atomic_int stopping; /* stop() began */
    /* requests waiting for a worker; everything below under jobs_lock */
    pthread_mutex_t jobs_lock;
    struct httpi_req *jobs_head, *jobs_tail;
    int jobs_init;
    struct httpi_worker *wk;    /* workers threads */
    size_t nworkers;            /* started */
    struct httpi_worker **idle; /* waiting workers, the most recent last */
    size_t nidle;
} httpi_ctx;

/* A worker. Jobs go to the most recently idle one, so with little
 * concurrency the same few workers (and their scratch buffers) serve. */
typedef struct httpi_worker {
    pthread_t thread;
    pthread_cond_t cond; /* signalled when it is given work or must stop */
    int waiting;         /* 1 while in ctx->idle */
    httpi_ctx *c;
} httpi_worker;

enum { KIND_NATIVE = 1, KIND_JSON = 2 };

enum { REQ_BODY = 0, REQ_QUEUED = 1, REQ_DONE = 2 };

/* One request's state (MHD's con_cls). Owned by the server thread, except
 * between being queued and resumed, when one worker owns it. */
typedef struct httpi_req {
    struct httpi_req *next_job;  /* in ctx->jobs */
    struct MHD_Connection *conn; /* suspended while queued */
    int state;                   /* REQ_* */
    int kind;                    /* KIND_* */
    int enc;                     /* SPOOL_COMPRESS_* (Content-Encoding) */
    int too_big;                 /* body exceeded max_body_bytes */
    int no_memory;               /* a chunked body outgrew what the account allows */
    size_t mem;                  /* bytes held in the memory account */
    int64_t first;               /* Spool-First-Offset, INT64_MIN if absent */
    int64_t next;                /* Spool-Next-Offset, INT64_MAX if absent */
    int64_t queued_ms;           /* monotonic ms it was handed to the workers */
    char idem_key[HTTPI_IDEM_MAX_PRODUCER + 320]; /* producer/topic/partition, "" = none */
    spool_buf body;                               /* request body as received */
    unsigned status;                              /* REQ_DONE: the answer */
    char why[1024];                               /* REQ_DONE: its one-line reason */
    char agent[INET6_ADDRSTRLEN];
} httpi_req;

/* A worker thread (arg: its httpi_worker): serves queued requests (decode,
 * submit, wait for durability, resume the connection) until c->stopping is
 * set and no job is left. */
void *httpi_worker_main(void *arg);
/* Wakes the server thread (its poll on MHD's epoll fd and wake_fd): after
 * MHD_resume_connection, and to stop. Any thread. */
void httpi_wake_server(httpi_ctx *c);
/* Wakes and joins the workers (set c->stopping first; queued requests are
 * answered 503 by them) and frees the pool. Any thread but a worker. */
void httpi_workers_stop(httpi_ctx *c);

#endif /* SPOOL_HTTP_IN_H */
