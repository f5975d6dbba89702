/*
 * tcp_sink.c: the benchmark's TCP sink. Accepts any number of connections on
 * 127.0.0.1, splits each stream on '\n' and counts every line by the sequence
 * number it carries (see sinkcommon.h). A line cut by the peer closing is still
 * counted. It never writes back. One thread, epoll, 1 MiB read buffer per
 * connection; it does not parse syslog framing (octet counting) - the agents are
 * configured to send newline-delimited lines.
 */
#include "sinkcommon.h"

#define CONN_MAX 4096
#define BUF_SIZE (1 << 20)

typedef struct conn {
    char *buf;
    size_t len;
} conn;

static conn conns[CONN_MAX];

static void consume(sink_stats *s, conn *c, int eof)
{
    size_t off = 0;
    for (;;) {
        char *nl = memchr(c->buf + off, '\n', c->len - off);
        if (nl == NULL) {
            break;
        }
        size_t l = (size_t)(nl - (c->buf + off));
        sink_record(s, c->buf + off, l);
        off += l + 1;
    }
    if (eof && off < c->len) {
        sink_record(s, c->buf + off, c->len - off);
        off = c->len;
    }
    if (off > 0) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
    if (c->len == BUF_SIZE) { /* a line longer than the buffer: count it as it is */
        sink_record(s, c->buf, c->len);
        c->len = 0;
    }
}

int main(int argc, char **argv)
{
    sink_stats s;
    int lfd = sink_setup(argc, argv, &s);
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
                    if (cfd >= CONN_MAX) {
                        close(cfd);
                        continue;
                    }
                    conns[cfd].buf = malloc(BUF_SIZE);
                    conns[cfd].len = 0;
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ce);
                    s.conns++;
                    s.dirty = 1;
                }
                continue;
            }
            conn *c = &conns[fd];
            for (int reads = 0; reads < 16; reads++) {
                ssize_t r = read(fd, c->buf + c->len, BUF_SIZE - c->len);
                if (r > 0) {
                    s.bytes += (unsigned long long)r;
                    c->len += (size_t)r;
                    consume(&s, c, 0);
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                    break;
                }
                consume(&s, c, 1);
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                free(c->buf);
                c->buf = NULL;
                c->len = 0;
                break;
            }
        }
        double t = sink_now();
        if (s.dirty && t - last_write >= 0.02) {
            sink_write_stats(&s);
            last_write = t;
        }
    }
    sink_write_stats(&s);
    sink_write_missing(&s);
    return 0;
}
