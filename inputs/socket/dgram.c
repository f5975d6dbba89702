/*
 * dgram.c: UDP and unix datagram listeners.
 *
 * The socket is ours (not a uv_udp_t) so that we can read the kernel's
 * per-socket drop counter (SO_MEMINFO, SK_MEMINFO_DROPS): every datagram
 * the kernel threw away because the receive buffer was full is counted
 * exactly, whether we were paused by backpressure or simply too slow. The
 * counter is read every tick and at stop, and each increase is added to
 * SPOOL_COUNT_DROPPED with at most one warning per SOCK_DROP_WARN_MS.
 * A datagram is one message for syslog (RFC 5426) and is split on
 * newlines for the socket input (dgram_framing).
 *
 * It does not: reassemble anything across datagrams, or reply to senders.
 */
#include "listener_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sock_diag.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

static void dgram_peer(sock_listener *l, const struct sockaddr_storage *ss, socklen_t len)
{
    if (l->dpeer_len > 0 && len == l->dpeer_addr_len && len <= sizeof(l->dpeer_addr) &&
        memcmp(ss, l->dpeer_addr, len) == 0) {
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    int n = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        n = snprintf(l->dpeer, sizeof(l->dpeer), "%s:%d", ip, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        n = snprintf(l->dpeer, sizeof(l->dpeer), "[%s]:%d", ip, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_un *u = (const struct sockaddr_un *)ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (ss->ss_family == AF_UNIX && len > off + 1 && u->sun_path[0] != '\0') {
            n = snprintf(l->dpeer, sizeof(l->dpeer), "%.*s", (int)(len - off), u->sun_path);
        } else {
            n = snprintf(l->dpeer, sizeof(l->dpeer), "%s", l->url.path);
        }
    }
    l->dpeer_len = n < 0 ? 0 : (size_t)n >= sizeof(l->dpeer) ? sizeof(l->dpeer) - 1 : (size_t)n;
    if (len <= sizeof(l->dpeer_addr)) {
        memcpy(l->dpeer_addr, ss, len);
        l->dpeer_addr_len = len;
    } else {
        l->dpeer_addr_len = 0;
    }
}

/* Reads up to `max` datagrams; stops early when the listener pauses,
 * unless `all` (at stop: what is queued is taken, or counted as dropped). */
static void dgram_read(sock_listener *l, int max, int all)
{
    for (int i = 0; i < max && (all || !l->paused); i++) {
        struct sockaddr_storage ss;
        socklen_t slen = sizeof(ss);
        ssize_t r = recvfrom(l->dgram_fd, l->dbuf, SOCK_DGRAM_BUF, MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&ss, &slen);
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                spool_log_warn(l->ins, "recvfrom: %s", strerror(errno));
            }
            break;
        }
        size_t n = (size_t)r;
        if (n > SOCK_DGRAM_BUF) {
            n = SOCK_DGRAM_BUF; /* the kernel cut it; the framer counts the rest as truncated */
            spool_counter_add(l->c_truncated, 1);
        }
        l->datagrams++;
        dgram_peer(l, &ss, slen);
        sock_peer peer = {l->dpeer, l->dpeer_len, NULL, spool_now_ms()};
        sock_frame_ctx fc = {l, &peer};
        sock_framer_datagram(&l->dgram_fr, l->dbuf, n, sock__on_frame, &fc);
        sock__after_input(l);
    }
    sock__account_framer(l, &l->dgram_fr);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    sock_listener *l = p->data;
    (void)events;
    if (status < 0) {
        spool_log_warn(l->ins, "poll: %s", uv_strerror(status));
        return;
    }
    dgram_read(l, 1024, 0);
}

void sock__dgram_pause(sock_listener *l)
{
    if (l->dgram_polling) {
        uv_poll_stop(&l->server.poll);
        l->dgram_polling = 0;
    }
}

void sock__dgram_resume(sock_listener *l)
{
    if (l->dgram_fd >= 0 && !l->dgram_polling && !l->stopping) {
        if (uv_poll_start(&l->server.poll, UV_READABLE, on_readable) == 0) {
            l->dgram_polling = 1;
        }
    }
}

void sock__dgram_drain(sock_listener *l)
{
    dgram_read(l, 1000000, 1);
    sock__dgram_pause(l);
    sock__dgram_account(l, 0);
}

void sock__dgram_account(sock_listener *l, int final)
{
    uint32_t mem[SK_MEMINFO_VARS];
    socklen_t len = sizeof(mem);
    memset(mem, 0, sizeof(mem));
    if (l->dgram_fd >= 0 && getsockopt(l->dgram_fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0 &&
        len > SK_MEMINFO_DROPS * sizeof(uint32_t)) {
        /* The kernel counter is 32 bits; unsigned arithmetic handles wrap. */
        uint32_t now = mem[SK_MEMINFO_DROPS];
        uint32_t delta = now - (uint32_t)l->kernel_drops;
        l->kernel_drops = now;
        if (delta > 0) {
            l->dropped += delta;
            l->drops_unreported += delta;
            spool_count(l->ins, SPOOL_COUNT_DROPPED, delta);
        }
    }
    int64_t now_ms = spool_monotonic_ms();
    if (l->drops_unreported > 0 && (final || now_ms - l->last_drop_warn_ms >= SOCK_DROP_WARN_MS)) {
        spool_log_warn(l->ins,
                       "dropped %llu datagrams (receive buffer full: %s); %llu dropped in total",
                       (unsigned long long)l->drops_unreported,
                       l->paused ? "pipeline full" : "arriving faster than read",
                       (unsigned long long)l->dropped);
        l->drops_unreported = 0;
        l->last_drop_warn_ms = now_ms;
    }
}

static int dgram_socket_inet(sock_listener *l)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, l->url.host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)l->url.port);
        slen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, l->url.host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)l->url.port);
        slen = sizeof(*a6);
    } else {
        spool_log_error(l->ins, "listen %s: '%s' is not an IP address", l->cfg.url, l->url.host);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    l->dgram_fd = fd;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, slen) != 0) {
        int e = errno;
        spool_log_error(l->ins, "listen %s: %s", l->cfg.url, strerror(e));
        return -e;
    }
    slen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &slen) == 0) {
        l->port = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    }
    return 0;
}

static int dgram_socket_unix(sock_listener *l)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", l->url.path);
    int rc = sock__unix_prepare(l, l->url.path);
    if (rc < 0) {
        return rc;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    l->dgram_fd = fd;
    if (bind(fd, (struct sockaddr *)&un, sizeof(un)) != 0) {
        int e = errno;
        spool_log_error(l->ins, "listen %s: %s", l->cfg.url, strerror(e));
        return -e;
    }
    snprintf(l->unix_bound, sizeof(l->unix_bound), "%s", l->url.path);
    return sock__unix_chmod(l, l->url.path);
}

int sock__dgram_open(sock_listener *l)
{
    int rc;
    l->dbuf = malloc(SOCK_DGRAM_BUF);
    if (l->dbuf == NULL) {
        return -ENOMEM;
    }
    sock_framer_init(&l->dgram_fr, l->cfg.dgram_framing, l->cfg.on_long,
                     (size_t)l->cfg.max_line_bytes);
    rc = l->url.kind == SOCK_UDP ? dgram_socket_inet(l) : dgram_socket_unix(l);
    if (rc < 0) {
        return rc;
    }
    if (l->cfg.receive_buffer > 0) {
        int v = l->cfg.receive_buffer > 0x3fffffff ? 0x3fffffff : (int)l->cfg.receive_buffer;
        /* SO_RCVBUFFORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN). */
        if (setsockopt(l->dgram_fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) != 0) {
            setsockopt(l->dgram_fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
        }
        int got = 0;
        socklen_t glen = sizeof(got);
        /* The kernel reports double the payload it accounts for. */
        if (getsockopt(l->dgram_fd, SOL_SOCKET, SO_RCVBUF, &got, &glen) == 0 && got / 2 < v) {
            spool_log_warn(l->ins,
                           "receive_buffer %d bytes capped to %d by net.core.rmem_max; raise "
                           "it or grant CAP_NET_ADMIN, or bursts will be dropped sooner",
                           v, got / 2);
        }
    }
    rc = uv_poll_init(&l->loop, &l->server.poll, l->dgram_fd);
    if (rc < 0) {
        spool_log_error(l->ins, "uv_poll_init: %s", uv_strerror(rc));
        return rc;
    }
    l->server.handle.data = l;
    l->server_ready = 1;
    sock__dgram_resume(l);
    sock__dgram_account(l, 0); /* start from the kernel's current count */
    if (l->url.kind == SOCK_UDP) {
        spool_log_info(l->ins, "listening on udp://%s:%d", l->url.host, l->port);
    } else {
        spool_log_info(l->ins, "listening on unixgram://%s", l->url.path);
    }
    return 0;
}
