/*
 * sinkcommon.h: the shared part of the benchmark sinks (tcp_sink.c, http_sink.c).
 *
 * A sink counts the records it receives by the sequence number each one carries
 * ("seq=NNNNNNNNNN", written by gen.c): unique, duplicated, and lines without a
 * valid number ("bad"). It writes its counters to a stats file (write to a temporary
 * name, then rename) every 20 ms while they change and once more at SIGTERM/SIGINT,
 * so the harness can poll it without talking to the sink. Times are CLOCK_MONOTONIC
 * seconds, the same clock as Python's time.monotonic(). Single-threaded; header-only.
 */
#ifndef BENCH_SINKCOMMON_H
#define BENCH_SINKCOMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct sink_stats {
    unsigned long long lines, uniq, dup, bad, bytes, conns, requests;
    double t_first, t_last_new, t_last;
    uint8_t *seen; /* bitmap, 1 bit per sequence number 1..max */
    unsigned long long max;
    const char *path;
    int dirty;
} sink_stats;

static volatile sig_atomic_t sink_stop;

static void sink_on_signal(int sig)
{
    (void)sig;
    sink_stop = 1;
}

static double sink_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Records one received record (a line or a JSON object) of `len` bytes. */
static void sink_record(sink_stats *s, const char *p, size_t len)
{
    double t = sink_now();
    s->lines++;
    s->dirty = 1;
    if (s->t_first == 0) {
        s->t_first = t;
    }
    s->t_last = t;
    const char *m = memmem(p, len, "seq=", 4);
    if (m == NULL) {
        s->bad++;
        return;
    }
    m += 4;
    const char *end = p + len;
    unsigned long long v = 0;
    int digits = 0;
    while (m < end && *m >= '0' && *m <= '9' && digits < 19) {
        v = v * 10 + (unsigned long long)(*m - '0');
        m++;
        digits++;
    }
    if (digits == 0 || v == 0 || v > s->max) {
        s->bad++;
        return;
    }
    uint8_t bit = (uint8_t)(1u << (v & 7));
    if (s->seen[v >> 3] & bit) {
        s->dup++;
    } else {
        s->seen[v >> 3] |= bit;
        s->uniq++;
        s->t_last_new = t;
    }
}

static void sink_write_stats(sink_stats *s)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return;
    }
    fprintf(f,
            "lines %llu\nuniq %llu\ndup %llu\nbad %llu\nbytes %llu\nconns %llu\nrequests %llu\n"
            "t_first %.6f\nt_last_new %.6f\nt_last %.6f\n",
            s->lines, s->uniq, s->dup, s->bad, s->bytes, s->conns, s->requests, s->t_first,
            s->t_last_new, s->t_last);
    fclose(f);
    rename(tmp, s->path);
    s->dirty = 0;
}

/* At exit: writes STATSFILE.missing, the ranges of sequence numbers never received
 * (at most 1000 ranges), for diagnosis. */
static void sink_write_missing(sink_stats *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s.missing", s->path);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return;
    }
    int ranges = 0;
    unsigned long long v = 1;
    while (v <= s->max && ranges < 1000) {
        if (s->seen[v >> 3] & (1u << (v & 7))) {
            v++;
            continue;
        }
        unsigned long long lo = v;
        while (v <= s->max && !(s->seen[v >> 3] & (1u << (v & 7)))) {
            v++;
        }
        fprintf(f, "%llu-%llu\n", lo, v - 1);
        ranges++;
    }
    fclose(f);
}

/* Parses "-p PORT -n MAX -s STATSFILE"; returns the listening socket (prints "port N"). */
static int sink_setup(int argc, char **argv, sink_stats *s)
{
    int port = 0;
    int opt;
    memset(s, 0, sizeof(*s));
    while ((opt = getopt(argc, argv, "p:n:s:")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'n':
            s->max = strtoull(optarg, NULL, 10);
            break;
        case 's':
            s->path = optarg;
            break;
        default:
            fprintf(stderr, "usage: %s -p PORT -n MAX_SEQ -s STATSFILE\n", argv[0]);
            exit(2);
        }
    }
    if (s->max == 0 || s->path == NULL) {
        fprintf(stderr, "usage: %s -p PORT -n MAX_SEQ -s STATSFILE\n", argv[0]);
        exit(2);
    }
    s->seen = calloc(s->max / 8 + 1, 1);
    if (s->seen == NULL) {
        exit(1);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sink_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 128) != 0) {
        perror("bind/listen");
        exit(1);
    }
    socklen_t al = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    sink_write_stats(s);
    return fd;
}

#define SINK_CONN_MAX 4096  /* connections with a larger fd are closed at once */
#define SINK_RBUF (1 << 20) /* each connection's read buffer */

/* What a sink does with its connections; each is named by its fd. */
typedef struct sink_conn_ops {
    /* A new connection: allocates its SINK_RBUF read buffer; 0, or -1 to close it. */
    int (*open)(int fd);
    /* Where the next read goes in the connection's buffer, and its room. */
    char *(*rbuf)(int fd, size_t *room);
    /* r > 0 bytes were read into it: 0 to go on, -1 to drop the connection. */
    int (*data)(sink_stats *s, int fd, size_t r);
    /* The connection ended (peer closed, error or dropped; fd already closed):
     * counts what it still holds if the sink wants, and frees it. */
    void (*close)(sink_stats *s, int fd);
} sink_conn_ops;

/* The sinks' event loop: accepts on lfd, reads each connection (up to 16
 * reads per wakeup), writes the stats every 20 ms while they change, until
 * SIGTERM/SIGINT; then the final stats and the missing ranges. */
static void sink_serve(sink_stats *s, int lfd, const sink_conn_ops *ops)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    double last_write = 0;
    while (!sink_stop) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 20);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (cfd >= SINK_CONN_MAX || ops->open(cfd) != 0) {
                        close(cfd);
                        continue;
                    }
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ce);
                    s->conns++;
                    s->dirty = 1;
                }
                continue;
            }
            for (int reads = 0; reads < 16; reads++) {
                size_t room;
                char *b = ops->rbuf(fd, &room);
                ssize_t r = read(fd, b, room);
                if (r > 0) {
                    s->bytes += (unsigned long long)r;
                    if (ops->data(s, fd, (size_t)r) == 0) {
                        continue;
                    }
                } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                    break;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                ops->close(s, fd);
                break;
            }
        }
        double t = sink_now();
        if (s->dirty && t - last_write >= 0.02) {
            sink_write_stats(s);
            last_write = t;
        }
    }
    sink_write_stats(s);
    sink_write_missing(s);
    close(ep);
}

#endif
