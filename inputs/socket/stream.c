/*
 * stream.c: TCP and unix stream listeners and their connections.
 *
 * Each accepted connection has its own framer (so a frame split across
 * reads is reassembled per connection) and, on a TLS listener, its own
 * TLS session (tls.c). Reads go into the listener's one read buffer: the
 * loop is single-threaded and a read is fully processed before the next.
 * Connections over max_connections are accepted and closed at once with a
 * warning. An idle connection (no bytes for idle_timeout) is closed, but
 * never while the listener is paused by backpressure: then silence is ours.
 *
 * It does not: write to peers (except TLS handshake bytes), or retry a
 * bind; the socket file of a unix listener is removed first only if it is
 * a socket (a stale one from a previous run), never another kind of file.
 */
#include "listener_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void conn_free(uv_handle_t *h)
{
    sock_conn *c = h->data;
    sock_framer_free(&c->fr);
    sock__tls_conn_free(c);
    free(c);
}

void sock__conn_close(sock_conn *c)
{
    if (c->closing) {
        return;
    }
    sock_listener *l = c->l;
    c->closing = 1;
    sock__account_framer(l, &c->fr);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        l->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    l->n_conns--;
    uv_close(&c->h.handle, conn_free);
}

/* Frames of a connection's plaintext go to the batch. */
int sock__conn_plain(sock_conn *c, const uint8_t *p, size_t n)
{
    sock_listener *l = c->l;
    sock_peer peer = {c->peer, c->peer_len, c->tls_subject, spool_now_ms()};
    sock_frame_ctx fc = {l, &peer};
    int rc = sock_framer_feed(&c->fr, p, n, sock__on_frame, &fc);
    if (rc == -EPROTO) {
        spool_counter_add(l->c_framing, 1);
        spool_log_warn(l->ins,
                       "closing %.*s: invalid octet-counting frame (expected \"LEN SP MSG\")",
                       (int)c->peer_len, c->peer);
        return -1;
    }
    if (rc < 0) {
        spool_log_error(l->ins, "closing %.*s: %s", (int)c->peer_len, c->peer, strerror(-rc));
        return -1;
    }
    return 0;
}

static void conn_finish(sock_conn *c)
{
    sock_peer peer = {c->peer, c->peer_len, c->tls_subject, spool_now_ms()};
    sock_frame_ctx fc = {c->l, &peer};
    sock_framer_finish(&c->fr, sock__on_frame, &fc);
}

static void conn_data(sock_conn *c, const uint8_t *p, size_t n)
{
    c->last_active_ms = spool_monotonic_ms();
    int rc = c->ssl != NULL ? sock__tls_conn_data(c, p, n) : sock__conn_plain(c, p, n);
    if (rc < 0) {
        conn_finish(c);
        sock__conn_close(c);
    }
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    sock_conn *c = h->data;
    buf->base = (char *)c->l->rbuf;
    buf->len = sizeof(c->l->rbuf);
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sock_conn *c = s->data;
    sock_listener *l = c->l;
    if (nread > 0) {
        conn_data(c, (const uint8_t *)buf->base, (size_t)nread);
    } else if (nread < 0) {
        if (nread != UV_EOF) {
            spool_log_debug(l->ins, "connection %.*s: %s", (int)c->peer_len, c->peer,
                            uv_strerror((int)nread));
        }
        conn_finish(c);
        sock__conn_close(c);
    }
    sock__after_input(l);
}

static void conn_start(sock_conn *c)
{
    if (!c->reading && !c->closing) {
        if (uv_read_start(&c->h.stream, conn_alloc, conn_read) == 0) {
            c->reading = 1;
        }
    }
}

void sock__conns_pause(sock_listener *l)
{
    for (sock_conn *c = l->conns; c != NULL; c = c->next) {
        if (c->reading) {
            uv_read_stop(&c->h.stream);
            c->reading = 0;
        }
    }
}

void sock__conns_resume(sock_listener *l)
{
    int64_t now = spool_monotonic_ms();
    for (sock_conn *c = l->conns; c != NULL; c = c->next) {
        c->last_active_ms = now;
        conn_start(c);
    }
}

void sock__conns_idle_sweep(sock_listener *l, int64_t now_ms)
{
    sock_conn *next;
    for (sock_conn *c = l->conns; c != NULL; c = next) {
        next = c->next;
        if (now_ms - c->last_active_ms >= l->cfg.idle_timeout_ms) {
            spool_log_info(l->ins, "closing %.*s: idle for %lld ms", (int)c->peer_len, c->peer,
                           (long long)(now_ms - c->last_active_ms));
            conn_finish(c);
            sock__conn_close(c);
        }
    }
    sock__after_input(l);
}

void sock__conns_drain_close(sock_listener *l)
{
    sock_conn *next;
    for (sock_conn *c = l->conns; c != NULL; c = next) {
        next = c->next;
        /* What the peer sent before we stopped is in the kernel: take it. */
        uv_os_fd_t fd;
        if (uv_fileno(&c->h.handle, &fd) == 0) {
            for (int i = 0; i < 1024 && !c->closing; i++) {
                ssize_t r = recv(fd, l->rbuf, sizeof(l->rbuf), MSG_DONTWAIT);
                if (r <= 0) {
                    break;
                }
                conn_data(c, l->rbuf, (size_t)r);
            }
        }
        if (!c->closing) {
            conn_finish(c);
            sock__conn_close(c);
        }
    }
}

static void format_peer(const struct sockaddr_storage *ss, char *out, size_t cap, size_t *len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    int n;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        n = snprintf(out, cap, "%s:%d", ip, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        n = snprintf(out, cap, "[%s]:%d", ip, port);
    } else {
        n = snprintf(out, cap, "unknown");
    }
    *len = n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void on_connection(uv_stream_t *server, int status)
{
    sock_listener *l = server->data;
    if (status < 0) {
        spool_log_warn(l->ins, "accept: %s", uv_strerror(status));
        return;
    }
    sock_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        spool_log_error(l->ins, "accept: out of memory");
        return;
    }
    c->l = l;
    c->h.handle.data = c;
    if (l->url.kind == SOCK_TCP) {
        uv_tcp_init(&l->loop, &c->h.tcp);
    } else {
        uv_pipe_init(&l->loop, &c->h.pipe, 0);
    }
    c->h.handle.data = c;
    /* Linked first so that sock__conn_close can unlink it on any path. */
    c->next = l->conns;
    if (l->conns != NULL) {
        l->conns->prev = c;
    }
    l->conns = c;
    l->n_conns++;
    sock_framer_init(&c->fr, l->cfg.stream_framing, l->cfg.on_long, (size_t)l->cfg.max_line_bytes);
    if (uv_accept(server, &c->h.stream) != 0) {
        sock__conn_close(c);
        return;
    }
    if (l->url.kind == SOCK_TCP) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len);
        format_peer(&ss, c->peer, sizeof(c->peer), &c->peer_len);
    } else {
        snprintf(c->peer, sizeof(c->peer), "%s", l->url.path);
        c->peer_len = strlen(c->peer);
    }
    if (l->stopping || (int64_t)l->n_conns > l->cfg.max_connections) {
        l->refused++;
        spool_counter_add(l->c_refused, 1);
        spool_log_warn(l->ins, "refusing %.*s: max_connections (%lld) reached", (int)c->peer_len,
                       c->peer, (long long)l->cfg.max_connections);
        sock__conn_close(c);
        return;
    }
    if (l->ssl_ctx != NULL && sock__tls_conn_init(c) < 0) {
        spool_log_error(l->ins, "TLS setup for %.*s: out of memory", (int)c->peer_len, c->peer);
        sock__conn_close(c);
        return;
    }
    l->accepted++;
    spool_log_debug(l->ins, "accepted %.*s", (int)c->peer_len, c->peer);
    c->last_active_ms = spool_monotonic_ms();
    if (!l->paused) {
        conn_start(c);
    }
}

static int parse_mode(const char *s, unsigned *mode)
{
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 8);
    if (*s == '\0' || *end != '\0' || v > 07777) {
        return -1;
    }
    *mode = (unsigned)v;
    return 0;
}

/* Removes a stale socket file; refuses to touch anything else. */
int sock__unix_prepare(sock_listener *l, const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            spool_log_error(l->ins, "%s exists and is not a socket; not replacing it", path);
            return -EEXIST;
        }
        if (unlink(path) != 0) {
            int e = errno;
            spool_log_error(l->ins, "removing stale socket %s: %s", path, strerror(e));
            return -e;
        }
    }
    return 0;
}

/* Applies `mode` to the socket file of a unix listener. */
int sock__unix_chmod(sock_listener *l, const char *path)
{
    if (l->cfg.unix_mode == NULL) {
        return 0;
    }
    unsigned mode;
    if (parse_mode(l->cfg.unix_mode, &mode) != 0) {
        spool_log_error(l->ins, "mode '%s': expected octal permissions such as 0660",
                        l->cfg.unix_mode);
        return -EINVAL;
    }
    if (chmod(path, (mode_t)mode) != 0) {
        int e = errno;
        spool_log_error(l->ins, "chmod %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

int sock__stream_listen(sock_listener *l)
{
    int rc;
    l->server.handle.data = l;
    if (l->url.kind == SOCK_TCP) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        if (uv_ip4_addr(l->url.host, l->url.port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(l->url.host, l->url.port, (struct sockaddr_in6 *)&ss) != 0) {
            spool_log_error(l->ins, "listen %s: '%s' is not an IP address", l->cfg.url,
                            l->url.host);
            return -EINVAL;
        }
        uv_tcp_init(&l->loop, &l->server.tcp);
        l->server.handle.data = l;
        l->server_ready = 1;
        rc = uv_tcp_bind(&l->server.tcp, (struct sockaddr *)&ss, 0);
        if (rc == 0) {
            rc = uv_listen(&l->server.stream, 511, on_connection);
        }
        if (rc < 0) {
            spool_log_error(l->ins, "listen %s: %s", l->cfg.url, uv_strerror(rc));
            return rc;
        }
        int len = sizeof(ss);
        if (uv_tcp_getsockname(&l->server.tcp, (struct sockaddr *)&ss, &len) == 0) {
            l->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        spool_log_info(l->ins, "listening on %s://%s:%d%s", l->ssl_ctx ? "tls" : "tcp", l->url.host,
                       l->port, l->ssl_ctx ? " (TLS)" : "");
        return 0;
    }
    rc = sock__unix_prepare(l, l->url.path);
    if (rc < 0) {
        return rc;
    }
    uv_pipe_init(&l->loop, &l->server.pipe, 0);
    l->server.handle.data = l;
    l->server_ready = 1;
    rc = uv_pipe_bind(&l->server.pipe, l->url.path);
    if (rc < 0) {
        spool_log_error(l->ins, "listen %s: %s", l->cfg.url, uv_strerror(rc));
        return rc;
    }
    snprintf(l->unix_bound, sizeof(l->unix_bound), "%s", l->url.path);
    rc = sock__unix_chmod(l, l->url.path);
    if (rc < 0) {
        return rc;
    }
    rc = uv_listen(&l->server.stream, 511, on_connection);
    if (rc < 0) {
        spool_log_error(l->ins, "listen %s: %s", l->cfg.url, uv_strerror(rc));
        return rc;
    }
    spool_log_info(l->ins, "listening on unix://%s", l->url.path);
    return 0;
}
