/*
 * listener.h: the socket listener shared by the `socket` and `syslog` inputs.
 *
 * One listener = one listening socket given by URL (tcp://, udp://,
 * unix://, unixgram://), one libuv loop on the input's run() thread, the
 * connections it accepted, and one batch being filled. Frames go through a
 * callback that turns them into records (raw lines or parsed syslog), so
 * the two input types share everything but that callback.
 */
#ifndef SOCK_LISTENER_H
#define SOCK_LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

#include "framing.h"

typedef enum sock_kind {
    SOCK_TCP = 0,
    SOCK_UDP = 1,
    SOCK_UNIX = 2,     /* unix stream */
    SOCK_UNIXGRAM = 3, /* unix datagram */
} sock_kind;

/* A parsed listen URL. */
typedef struct sock_url {
    sock_kind kind;
    int tls;        /* tls:// scheme (TCP with TLS) */
    char host[256]; /* TCP/UDP: address without brackets */
    int port;       /* TCP/UDP */
    char path[108]; /* unix: socket path */
} sock_url;

/* Parses "tcp://127.0.0.1:5140", "udp://[::]:514", "unix:///run/x.sock",
 * "unixgram:///run/x.sock", "tls://0.0.0.0:6514". 0 or -EINVAL with a static
 * reason in *why. Pure. */
int sock_url_parse(const char *url, sock_url *out, const char **why);

/* Where a frame came from; valid during the callback only. */
typedef struct sock_peer {
    const char *addr; /* "127.0.0.1:40512", "[::1]:40512" or the socket path */
    size_t addr_len;
    const char *tls_subject; /* mutual TLS: the client certificate's subject, else NULL */
    int64_t recv_ms;         /* wall clock when the bytes were read, ms since the epoch */
} sock_peer;

/* Turns one frame into records appended to b. Returns 0 or -ENOMEM. Runs
 * on the listener thread. */
typedef int (*sock_emit_fn)(void *arg, spool_batch *b, const sock_peer *peer, const uint8_t *p,
                            size_t n, unsigned frame_flags);

typedef struct sock_listener_cfg {
    const char *url;
    int64_t max_connections;        /* stream sockets: connections at once */
    int64_t idle_timeout_ms;        /* stream sockets: close after this long silent, 0 = never */
    int64_t max_line_bytes;         /* longest record value */
    sock_frame_long on_long;        /* split or truncate */
    sock_frame_mode stream_framing; /* framing on stream sockets */
    sock_frame_mode dgram_framing;  /* framing inside one datagram */
    const char *unix_mode;          /* octal permissions for unix socket files, NULL = umask */
    int64_t receive_buffer;         /* SO_RCVBUF for datagram sockets, 0 = system default */
    const char *tls_cert;           /* PEM certificate chain; enables TLS on TCP */
    const char *tls_key;            /* PEM private key */
    const char *tls_client_ca;      /* PEM CA bundle: require client certificates signed by it */
    sock_emit_fn emit;
    void *emit_arg;
} sock_listener_cfg;

typedef struct sock_listener sock_listener;

/* Creates the listening socket (bound and listening when this returns, so
 * port and permission errors surface at init) and the loop. The config's
 * strings are copied. 0 or negative errno; errors are logged. init thread. */
int sock_listener_create(spool_instance *ins, const sock_listener_cfg *cfg, sock_listener **out);
/* Runs the loop until sock_listener_stop(); flushes the last batch. The
 * input's run() thread. 0 or negative errno. */
int sock_listener_run(sock_listener *l);
/* Wakes the loop to stop. Any thread, any number of times. */
void sock_listener_stop(sock_listener *l);
/* Frees everything; the loop must not be running. Accepts NULL. */
void sock_listener_destroy(sock_listener *l);

/* The bound port (TCP/UDP, useful with port 0), or -1. */
int sock_listener_port(const sock_listener *l);

#endif /* SOCK_LISTENER_H */
