/*
 * conn.h: one blocking client connection (plain TCP or TLS) for the `tcp`
 * and `syslog` outputs. Used only from the output's flush thread.
 */
#ifndef TCPOUT_CONN_H
#define TCPOUT_CONN_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

typedef struct tcpout_conn {
    char host[256]; /* from the URL, without brackets */
    char port[8];
    char name[256];             /* TLS: the name verified and sent as SNI */
    int tls;                    /* tls:// */
    int64_t connect_timeout_ms; /* TCP connect plus TLS handshake */
    int64_t write_timeout_ms;   /* one blocked send longer than this fails the chunk */
    SSL_CTX *ctx;               /* TLS client context, NULL for plain TCP */
    SSL *ssl;                   /* the session while connected */
    int fd;                     /* -1 while not connected */
    char peer[300];             /* "host:port" for messages */
} tcpout_conn;

typedef struct tcpout_tls_opts {
    const char *ca;          /* PEM CA bundle to verify the server; NULL = system store */
    const char *cert;        /* client certificate (mutual TLS), or NULL */
    const char *key;         /* its key */
    int verify;              /* 1: verify the server certificate and name */
    const char *server_name; /* name to verify and send as SNI; NULL = URL host */
} tcpout_tls_opts;

/* Parses the output's URL: scheme one of schemes, host and port (required),
 * no path (a lone "/" allowed). 0, or -EINVAL with the reason in why. The
 * one parser behind check() and tcpout_conn_init. Any thread. */
int tcpout_parse_url(const char *url, const char *const *schemes, spool_url *u, char *why,
                     size_t cap);
/* Parses tcp://host:port or tls://host:port into c (not connected); for
 * tls:// builds the TLS context from opts. 0, or -EINVAL with a message in
 * err. init thread. */
int tcpout_conn_init(tcpout_conn *c, const char *url, const tcpout_tls_opts *opts, char *err,
                     size_t cap);
/* Connected and not closed by the peer, reconnecting if needed. 0 if the
 * connection was up, 1 if it was (re)opened, or a negative errno with a
 * message in err (the connection is then closed). */
int tcpout_conn_ensure(tcpout_conn *c, char *err, size_t cap);
/* Writes all n bytes. 0, or a negative errno with a message (then the
 * connection is closed: what part of the bytes arrived is unknown). */
int tcpout_conn_write(tcpout_conn *c, const void *p, size_t n, char *err, size_t cap);
/* Closes the connection (sends a TLS close_notify first). */
void tcpout_conn_close(tcpout_conn *c);
/* Closes and frees the TLS context. Accepts a zeroed struct. */
void tcpout_conn_free(tcpout_conn *c);

#endif /* TCPOUT_CONN_H */
