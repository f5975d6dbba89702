/*
 * listener_int.h: what listener.c, stream.c, dgram.c and tls.c share.
 * Private to inputs/socket; everything here runs on the listener's loop
 * thread unless a comment says otherwise.
 */
#ifndef SOCK_LISTENER_INT_H
#define SOCK_LISTENER_INT_H

#include <openssl/ssl.h>
#include <uv.h>

#include "listener.h"

#define SOCK_READ_BUF (64 * 1024)      /* one read from a stream socket, bytes */
#define SOCK_DGRAM_BUF (64 * 1024 + 1) /* one datagram (+1 detects truncation) */
#define SOCK_BATCH_RECORDS 4096        /* submit when the batch holds this many */
#define SOCK_BATCH_BYTES (256 * 1024)  /* ... or this many bytes */
#define SOCK_LINGER_MS 50              /* submit a non-empty batch after this long */
#define SOCK_RETRY_MS 5                /* retry a refused submit this often */
#define SOCK_DROP_WARN_MS 10000        /* at most one drop warning per this long */

typedef struct sock_conn sock_conn;

struct sock_conn {
    sock_listener *l;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    sock_framer fr;
    char peer[112]; /* "addr:port" or the socket path */
    size_t peer_len;
    int64_t last_active_ms; /* monotonic ms of the last read */
    int reading;            /* uv_read_start is in effect */
    int closing;            /* uv_close was called */
    SSL *ssl;               /* TLS session, NULL for plain text */
    BIO *rbio;              /* ciphertext from the peer (owned by ssl) */
    BIO *wbio;              /* ciphertext to the peer (owned by ssl) */
    int tls_first_seen;     /* the first bytes were checked for a TLS record */
    char *tls_subject;      /* client certificate subject (mutual TLS), or NULL */
    sock_conn *prev;
    sock_conn *next;
};

struct sock_listener {
    spool_instance *ins;
    sock_listener_cfg cfg; /* strings below are our own copies */
    sock_url url;
    uv_loop_t loop;
    int loop_ready;
    uv_async_t wake;   /* stop() */
    uv_timer_t linger; /* submits a trickling batch */
    uv_timer_t retry;  /* retries a refused submit */
    uv_timer_t tick;   /* idle sweep, datagram drop accounting */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_poll_t poll;
    } server;
    int server_ready;
    int dgram_fd; /* datagram socket, -1 for stream listeners */
    int dgram_polling;
    char unix_bound[108]; /* socket file we created, unlinked on destroy */
    int port;             /* bound TCP/UDP port */

    sock_conn *conns; /* open connections */
    size_t n_conns;
    spool_batch *batch;         /* being filled, NULL when none */
    int paused;                 /* the pipeline refused the batch: not reading */
    int stopping;               /* the loop began to stop */
    _Atomic int stop_requested; /* set by sock_listener_stop (any thread) */
    _Atomic int loop_done;      /* run() finished: the wake handle is closed */
    int shutdown;               /* the pipeline is gone: nothing more can be submitted */
    SSL_CTX *ssl_ctx;

    uint8_t rbuf[SOCK_READ_BUF];
    uint8_t tbuf[SOCK_READ_BUF]; /* TLS plaintext */
    uint8_t *dbuf;               /* datagram buffer, SOCK_DGRAM_BUF bytes */
    sock_framer dgram_fr;
    char dpeer[112]; /* last datagram sender, formatted */
    size_t dpeer_len;
    uint8_t dpeer_addr[128]; /* ... and its raw address, to skip reformatting */
    uint32_t dpeer_addr_len;

    uint64_t accepted;         /* connections accepted */
    uint64_t refused;          /* connections over max_connections */
    uint64_t datagrams;        /* datagrams received */
    uint64_t dropped;          /* datagrams/records lost (kernel or ours) */
    uint64_t kernel_drops;     /* last SO_MEMINFO drop counter seen */
    uint64_t drops_unreported; /* dropped since the last warning */
    int64_t last_drop_warn_ms;
    uint64_t split_seen; /* framer counters already exported */
    uint64_t trunc_seen;

    spool_counter *c_split;     /* messages split at max_line_bytes */
    spool_counter *c_truncated; /* messages truncated at max_line_bytes */
    spool_counter *c_refused;   /* connections refused (max_connections) */
    spool_counter *c_tls_fail;  /* TLS handshakes failed or plain text on TLS */
    spool_counter *c_framing;   /* framing errors (connection closed) */
};

/* listener.c */
/* The batch being filled, created on demand; NULL on ENOMEM. */
spool_batch *sock__batch(sock_listener *l);
/* Called after input was appended: submits a full batch, arms the linger timer. */
void sock__after_input(sock_listener *l);
/* Adds the framers' split/truncate counts to the exported counters. */
void sock__account_framer(sock_listener *l, sock_framer *f);
/* Frame callback for sock_framer_*: arg is a sock_frame_ctx. */
typedef struct sock_frame_ctx {
    sock_listener *l;
    const sock_peer *peer;
} sock_frame_ctx;
int sock__on_frame(void *arg, const uint8_t *p, size_t n, unsigned flags);

/* stream.c */
int sock__stream_listen(sock_listener *l);
void sock__conn_close(sock_conn *c);
void sock__conns_pause(sock_listener *l);
void sock__conns_resume(sock_listener *l);
/* Stop: reads what the kernel still holds, emits partial frames, closes. */
void sock__conns_drain_close(sock_listener *l);
void sock__conns_idle_sweep(sock_listener *l, int64_t now_ms);
/* Unix socket files: remove a stale socket (only a socket), apply `mode`. */
int sock__unix_prepare(sock_listener *l, const char *path);
int sock__unix_chmod(sock_listener *l, const char *path);

/* dgram.c */
int sock__dgram_open(sock_listener *l);
void sock__dgram_pause(sock_listener *l);
void sock__dgram_resume(sock_listener *l);
/* Reads the kernel's drop counter and reports new drops. */
void sock__dgram_account(sock_listener *l, int final);
/* Stop: reads what is queued, then stops polling (handle closed by listener.c). */
void sock__dgram_drain(sock_listener *l);

/* tls.c */
/* Builds the server context from cfg; 0 or -EINVAL (logged). */
int sock__tls_ctx_create(sock_listener *l);
/* Sets up TLS on an accepted connection; 0 or -ENOMEM. */
int sock__tls_conn_init(sock_conn *c);
/* Handles ciphertext from the peer; returns 0, or -1 if the connection
 * must be closed (already logged). */
int sock__tls_conn_data(sock_conn *c, const uint8_t *p, size_t n);
void sock__tls_conn_free(sock_conn *c);

/* Frame one stream chunk of plaintext for connection c; 0 or -1 (close; logged). */
int sock__conn_plain(sock_conn *c, const uint8_t *p, size_t n);

#endif /* SOCK_LISTENER_INT_H */
