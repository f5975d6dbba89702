/*
 * http_sink.c: the benchmark's HTTP sink. Accepts HTTP/1.1 requests (keep-alive,
 * Content-Length or chunked bodies, Expect: 100-continue) on 127.0.0.1, answers each
 * with an empty 200, and counts the records of each body by the sequence numbers
 * in it: every "seq=NNN" occurrence is one record (ndjson, JSON arrays and
 * newline-separated bodies all work). It does not decompress bodies - the agents
 * are configured without compression - and it does not validate JSON.
 * One thread, epoll.
 */
#include "sinkcommon.h"

enum { ST_HDR, ST_BODY, ST_CSIZE, ST_CDATA, ST_CCRLF, ST_TRAILER };

typedef struct conn {
    char *buf; /* unparsed input */
    size_t len;
    char *body;
    size_t body_len, body_cap;
    size_t remaining;
    int state;
} conn;

static conn conns[SINK_CONN_MAX];

static void body_add(conn *c, const char *p, size_t n)
{
    if (c->body_len + n > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : (1 << 20);
        while (cap < c->body_len + n) {
            cap *= 2;
        }
        c->body = realloc(c->body, cap);
        if (c->body == NULL) {
            exit(1);
        }
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            usleep(100);
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void complete(sink_stats *s, int fd, conn *c)
{
    const char *p = c->body;
    const char *end = c->body + c->body_len;
    s->requests++;
    s->dirty = 1;
    while (p < end) {
        const char *m = memmem(p, (size_t)(end - p), "seq=", 4);
        if (m == NULL) {
            break;
        }
        const char *q = m + 4;
        while (q < end && *q >= '0' && *q <= '9') {
            q++;
        }
        sink_record(s, m, (size_t)(q - m));
        p = q;
    }
    c->body_len = 0;
    c->state = ST_HDR;
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    send_all(fd, ok, sizeof(ok) - 1);
}

static int header_has(const char *h, size_t n, const char *name, const char *value)
{
    /* case-insensitive "name:" line containing value (case-insensitive) */
    size_t nl = strlen(name);
    const char *p = h;
    const char *end = h + n;
    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (e == NULL) {
            e = end;
        }
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            if (value == NULL) {
                return (int)(p + nl + 1 - h);
            }
            char line[512];
            size_t ll = (size_t)(e - p) < sizeof(line) - 1 ? (size_t)(e - p) : sizeof(line) - 1;
            memcpy(line, p, ll);
            line[ll] = 0;
            if (strcasestr(line + nl + 1, value) != NULL) {
                return 1;
            }
        }
        p = e + 2;
    }
    return 0;
}

/* Parses what is buffered; returns -1 to drop the connection. */
static int parse(sink_stats *s, int fd, conn *c)
{
    size_t off = 0;
    for (;;) {
        char *p = c->buf + off;
        size_t avail = c->len - off;
        if (c->state == ST_HDR) {
            char *e = memmem(p, avail, "\r\n\r\n", 4);
            if (e == NULL) {
                if (avail > 65536) {
                    return -1;
                }
                break;
            }
            size_t hl = (size_t)(e - p) + 4;
            if (header_has(p, hl, "Expect", "100-continue")) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                send_all(fd, cont, sizeof(cont) - 1);
            }
            if (header_has(p, hl, "Transfer-Encoding", "chunked")) {
                c->state = ST_CSIZE;
            } else {
                int at = header_has(p, hl, "Content-Length", NULL);
                c->remaining = at ? strtoull(p + at, NULL, 10) : 0;
                c->state = ST_BODY;
            }
            off += hl;
            if (c->state == ST_BODY && c->remaining == 0) {
                complete(s, fd, c);
            }
        } else if (c->state == ST_BODY || c->state == ST_CDATA) {
            if (avail == 0) {
                break;
            }
            size_t take = avail < c->remaining ? avail : c->remaining;
            body_add(c, p, take);
            off += take;
            c->remaining -= take;
            if (c->remaining == 0) {
                if (c->state == ST_BODY) {
                    complete(s, fd, c);
                } else {
                    c->state = ST_CCRLF;
                }
            }
        } else if (c->state == ST_CCRLF) {
            if (avail < 2) {
                break;
            }
            off += 2;
            c->state = ST_CSIZE;
        } else if (c->state == ST_CSIZE || c->state == ST_TRAILER) {
            char *e = memmem(p, avail, "\r\n", 2);
            if (e == NULL) {
                break;
            }
            size_t ll = (size_t)(e - p);
            off += ll + 2;
            if (c->state == ST_CSIZE) {
                c->remaining = strtoull(p, NULL, 16);
                c->state = c->remaining == 0 ? ST_TRAILER : ST_CDATA;
            } else if (ll == 0) {
                complete(s, fd, c);
            }
        }
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

static int http_open(int fd)
{
    memset(&conns[fd], 0, sizeof(conns[fd]));
    conns[fd].buf = malloc(SINK_RBUF);
    return conns[fd].buf ? 0 : -1;
}

static char *http_rbuf(int fd, size_t *room)
{
    *room = SINK_RBUF - conns[fd].len;
    return conns[fd].buf + conns[fd].len;
}

static int http_data(sink_stats *s, int fd, size_t r)
{
    conns[fd].len += r;
    return parse(s, fd, &conns[fd]);
}

static void http_close(sink_stats *s, int fd)
{
    (void)s;
    free(conns[fd].buf);
    free(conns[fd].body);
    memset(&conns[fd], 0, sizeof(conns[fd]));
}

int main(int argc, char **argv)
{
    static const sink_conn_ops ops = {http_open, http_rbuf, http_data, http_close};
    sink_stats s;
    int lfd = sink_setup(argc, argv, &s);
    sink_serve(&s, lfd, &ops);
    return 0;
}
