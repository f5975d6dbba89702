/*
 * tcp_sink.c: the benchmark's TCP sink. Accepts any number of connections on
 * 127.0.0.1, splits each stream on '\n' and counts every line by the sequence
 * number it carries (see sinkcommon.h). A line cut by the peer closing is still
 * counted. It never writes back. One thread, epoll, 1 MiB read buffer per
 * connection; it does not parse syslog framing (octet counting) - the agents are
 * configured to send newline-delimited lines.
 */
#include "sinkcommon.h"

#define BUF_SIZE SINK_RBUF

typedef struct conn {
    char *buf;
    size_t len;
} conn;

static conn conns[SINK_CONN_MAX];

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

static int tcp_open(int fd)
{
    conns[fd].buf = malloc(BUF_SIZE);
    conns[fd].len = 0;
    return conns[fd].buf ? 0 : -1;
}

static char *tcp_rbuf(int fd, size_t *room)
{
    *room = BUF_SIZE - conns[fd].len;
    return conns[fd].buf + conns[fd].len;
}

static int tcp_data(sink_stats *s, int fd, size_t r)
{
    conns[fd].len += r;
    consume(s, &conns[fd], 0);
    return 0;
}

static void tcp_close(sink_stats *s, int fd)
{
    consume(s, &conns[fd], 1);
    free(conns[fd].buf);
    conns[fd].buf = NULL;
    conns[fd].len = 0;
}

int main(int argc, char **argv)
{
    static const sink_conn_ops ops = {tcp_open, tcp_rbuf, tcp_data, tcp_close};
    sink_stats s;
    int lfd = sink_setup(argc, argv, &s);
    sink_serve(&s, lfd, &ops);
    return 0;
}
