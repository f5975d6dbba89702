/*
 * conn.c: a blocking TCP (optionally TLS) client connection.
 *
 * Connect is non-blocking with a poll for connect_timeout, then the socket
 * is made blocking with SO_SNDTIMEO = write_timeout, so a destination that
 * stops reading fails the write instead of hanging the output. Before each
 * use the connection is checked: if the peer closed it (EOF, RST) it is
 * re-opened first, so a restarted server does not silently swallow the
 * first chunk written into a dead socket. Data a server sends us (a TLS
 * session ticket, a banner) is read and discarded.
 *
 * It does not: wait for any acknowledgement (plain TCP has none), retry
 * (the output runner does, with backoff), or resolve names asynchronously.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "spool/spool.h"

static void ssl_err(char *err, size_t cap, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "unknown error";
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
    }
    ERR_clear_error();
    snprintf(err, cap, "%s: %s", what, buf);
}

int tcpout_parse_url(const char *url, const char *const *schemes, spool_url *u, char *why,
                     size_t cap)
{
    if (spool_parse_url(url, schemes, 0, u, why, cap) < 0) {
        return -EINVAL;
    }
    if (u->path[0] != '\0' && strcmp(u->path, "/") != 0) {
        snprintf(why, cap, "a tcp:// or tls:// URL has no path ('%s')", u->path);
        return -EINVAL;
    }
    return 0;
}

int tcpout_conn_init(tcpout_conn *c, const char *url, const tcpout_tls_opts *opts, char *err,
                     size_t cap)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    static const char *const schemes[] = {"tcp", "tls", NULL};
    spool_url u;
    int rc = tcpout_parse_url(url, schemes, &u, err, cap);
    if (rc < 0) {
        return rc;
    }
    c->tls = u.scheme == 1;
    int port = u.port;
    snprintf(c->host, sizeof(c->host), "%s", u.host);
    snprintf(c->port, sizeof(c->port), "%d", port);
    snprintf(c->peer, sizeof(c->peer), "%s:%d", c->host, port);
    if (!c->tls) {
        return 0;
    }
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL) {
        ssl_err(err, cap, "SSL_CTX_new");
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    if (opts->ca != NULL) {
        if (SSL_CTX_load_verify_locations(c->ctx, opts->ca, NULL) != 1) {
            ssl_err(err, cap, "tls.ca");
            return -EINVAL;
        }
    } else {
        SSL_CTX_set_default_verify_paths(c->ctx);
    }
    if (opts->cert != NULL) {
        if (SSL_CTX_use_certificate_chain_file(c->ctx, opts->cert) != 1) {
            ssl_err(err, cap, "tls.cert");
            return -EINVAL;
        }
        if (SSL_CTX_use_PrivateKey_file(c->ctx, opts->key ? opts->key : opts->cert,
                                        SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(c->ctx) != 1) {
            ssl_err(err, cap, "tls.key");
            return -EINVAL;
        }
    }
    SSL_CTX_set_verify(c->ctx, opts->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    /* The name to verify and send; the address to connect stays the URL's. */
    snprintf(c->name, sizeof(c->name), "%s", opts->server_name ? opts->server_name : c->host);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Non-blocking connect to one address within the deadline. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *out)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
        return -errno;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (rc != 0) {
        struct pollfd p = {fd, POLLOUT, 0};
        int64_t left = deadline - mono_ms();
        rc = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (rc <= 0) {
            close(fd);
            return rc == 0 ? -ETIMEDOUT : -errno;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr != 0) {
            close(fd);
            return -soerr;
        }
    }
    *out = fd;
    return 0;
}

static void set_blocking(int fd, int64_t snd_ms, int64_t rcv_ms)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = {(time_t)(snd_ms / 1000), (suseconds_t)((snd_ms % 1000) * 1000)};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct timeval rv = {(time_t)(rcv_ms / 1000), (suseconds_t)((rcv_ms % 1000) * 1000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rv, sizeof(rv));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

static int tls_start(tcpout_conn *c, char *err, size_t cap)
{
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL) {
        ssl_err(err, cap, "SSL_new");
        return -ENOMEM;
    }
    SSL_set_fd(c->ssl, c->fd);
    struct in6_addr a6;
    struct in_addr a4;
    int is_ip = inet_pton(AF_INET, c->name, &a4) == 1 || inet_pton(AF_INET6, c->name, &a6) == 1;
    if (!is_ip) {
        SSL_set_tlsext_host_name(c->ssl, c->name);
    }
    if (SSL_CTX_get_verify_mode(c->ctx) & SSL_VERIFY_PEER) {
        if (is_ip) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->name);
        } else {
            SSL_set1_host(c->ssl, c->name);
        }
    }
    if (SSL_connect(c->ssl) != 1) {
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK) {
            snprintf(err, cap, "TLS handshake with %s: certificate: %s", c->peer,
                     X509_verify_cert_error_string(vr));
            ERR_clear_error();
        } else {
            char what[340];
            snprintf(what, sizeof(what), "TLS handshake with %s", c->peer);
            ssl_err(err, cap, what);
        }
        return -EPROTO;
    }
    return 0;
}

static int conn_open(tcpout_conn *c, char *err, size_t cap)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0) {
        snprintf(err, cap, "resolving %s: %s", c->host, gai_strerror(g));
        return -EHOSTUNREACH;
    }
    int64_t deadline = mono_ms() + c->connect_timeout_ms;
    int rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = connect_one(ai, deadline, &c->fd);
        if (rc == 0) {
            break;
        }
    }
    freeaddrinfo(res);
    if (rc < 0) {
        snprintf(err, cap, "connect %s: %s", c->peer, strerror(-rc));
        c->fd = -1;
        return rc;
    }
    set_blocking(c->fd, c->write_timeout_ms, c->connect_timeout_ms);
    if (c->tls) {
        rc = tls_start(c, err, cap);
        if (rc < 0) {
            tcpout_conn_close(c);
            return rc;
        }
    }
    return 0;
}

/* 1 if the peer closed the connection, after discarding what it sent. */
static int conn_closed_by_peer(tcpout_conn *c)
{
    char buf[4096];
    for (int i = 0; i < 64; i++) {
        struct pollfd p = {c->fd, POLLIN, 0};
        int r = poll(&p, 1, 0);
        if (r <= 0) {
            return 0;
        }
        if (p.revents & (POLLERR | POLLHUP)) {
            return 1;
        }
        if (c->ssl == NULL) {
            ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                return 1;
            }
            if (n < 0) {
                return 0;
            }
            continue;
        }
        /* TLS: a session ticket, or an alert and close. */
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
        int n = SSL_read(c->ssl, buf, sizeof(buf));
        int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
        fcntl(c->fd, F_SETFL, fl);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ) {
            return 0;
        }
        if (e != SSL_ERROR_NONE) {
            return 1;
        }
    }
    return 0;
}

int tcpout_conn_ensure(tcpout_conn *c, char *err, size_t cap)
{
    if (c->fd >= 0 && conn_closed_by_peer(c)) {
        tcpout_conn_close(c);
    }
    if (c->fd >= 0) {
        return 0;
    }
    int rc = conn_open(c, err, cap);
    return rc < 0 ? rc : 1;
}

int tcpout_conn_write(tcpout_conn *c, const void *p, size_t n, char *err, size_t cap)
{
    const uint8_t *b = p;
    while (n > 0) {
        if (c->ssl != NULL) {
            int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
            int w = SSL_write(c->ssl, b, chunk);
            if (w <= 0) {
                int e = SSL_get_error(c->ssl, w);
                if (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    snprintf(err, cap, "write to %s: timed out", c->peer);
                } else {
                    char what[340];
                    snprintf(what, sizeof(what), "TLS write to %s", c->peer);
                    ssl_err(err, cap, what);
                }
                tcpout_conn_close(c);
                return -EIO;
            }
            b += w;
            n -= (size_t)w;
            continue;
        }
        ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            int e = errno;
            snprintf(err, cap, "write to %s: %s", c->peer,
                     e == EAGAIN || e == EWOULDBLOCK ? "timed out" : strerror(e));
            tcpout_conn_close(c);
            return -e;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

void tcpout_conn_close(tcpout_conn *c)
{
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

void tcpout_conn_free(tcpout_conn *c)
{
    if (c == NULL) {
        return;
    }
    tcpout_conn_close(c);
    if (c->ctx != NULL) {
        SSL_CTX_free(c->ctx);
        c->ctx = NULL;
    }
}
