/*
 * runtime_cli.c: `spool query VIEW` (docs/streams.md). It asks the running
 * spool's HTTP API (GET /api/v1/views/VIEW), found with -c FILE
 * (service.http.listen) or given with --http HOST:PORT, and prints the open
 * windows: one line per window (`key=... window_start=... count=...`), or
 * the API's JSON array with --json. Exit 0, 1 if the service cannot be
 * asked or answers an error, 2 for a usage error.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core.h"

static const char query_usage[] =
    "usage: spool query VIEW [-c FILE | --http HOST:PORT] [--key K] [--from MS] [--to MS] "
    "[--json]\n"
    "  prints the open windows of a running stream's view; --from/--to bound window times\n"
    "  (ms since the epoch), --key selects one group key\n";

/* service.http.listen of the config file, copied into buf. */
static int listen_of(const char *file, char *buf, size_t cap)
{
    spool_cdoc doc = {0};
    spool_errors errs = {0};
    int rc = spool_cdoc_load_file(file, &doc, &errs);
    const spool_cnode *svc = doc.root ? spool_cnode_get(doc.root, "service") : NULL;
    const spool_cnode *http = svc ? spool_cnode_get(svc, "http") : NULL;
    const spool_cnode *l = http ? spool_cnode_get(http, "listen") : NULL;
    if (rc < 0 && !doc.root) {
        spool_errors_print(&errs, stderr);
    }
    if (l && l->type == SPOOL_CNODE_SCALAR && !l->is_null) {
        snprintf(buf, cap, "%s", l->value);
        rc = 0;
    } else {
        if (doc.root) {
            fprintf(stderr, "spool: %s has no service.http.listen: the API is not served\n", file);
        }
        rc = -ENOENT;
    }
    spool_cdoc_free(&doc);
    spool_errors_free(&errs);
    return rc;
}

static void urlenc(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* GET path from the API at addr: the HTTP status, body in out; <0 if unreachable. */
static int http_get(const char *addr, const char *path, spool_buf *out)
{
    char host[256], port[16], why[256];
    int p;
    if (spool_parse_address(addr, SPOOL_ADDR_LISTEN, host, sizeof(host), &p, why, sizeof(why)) <
        0) {
        fprintf(stderr, "spool: bad address '%s': %s\n", addr, why);
        return -EINVAL;
    }
    if (!host[0] || strcmp(host, "0.0.0.0") == 0) {
        snprintf(host, sizeof(host), "127.0.0.1");
    } else if (strcmp(host, "::") == 0) {
        snprintf(host, sizeof(host), "::1");
    }
    snprintf(port, sizeof(port), "%d", p);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        fprintf(stderr, "spool: cannot resolve %s\n", host);
        return -EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {10, 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        fprintf(stderr, "spool: cannot reach the running spool at %s: %s\n", addr, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(res);
        return -ECONNREFUSED;
    }
    freeaddrinfo(res);
    char req[8192];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    int rc = 0;
    if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        rc = -EIO;
    }
    char buf[65536];
    ssize_t got;
    while (rc == 0 && (got = recv(fd, buf, sizeof(buf), 0)) > 0) {
        rc = spool_buf_append(out, buf, (size_t)got);
    }
    close(fd);
    if (rc < 0 || out->len < 12 || memcmp(out->data, "HTTP/1.", 7) != 0) {
        fprintf(stderr, "spool: no valid answer from %s\n", addr);
        return -EIO;
    }
    int status = atoi((const char *)out->data + 9);
    spool_buf_append(out, "", 1);
    const char *body = strstr((const char *)out->data, "\r\n\r\n");
    size_t off = body ? (size_t)(body + 4 - (const char *)out->data) : out->len - 1;
    memmove(out->data, out->data + off, out->len - off);
    out->len -= off; /* keeps the NUL */
    return status;
}

/* Prints a JSON array of flat objects as one `name=value ...` line each. */
static void print_lines(const char *s)
{
    int depth = 0, in_str = 0, esc = 0, at_key = 0;
    for (; *s; s++) {
        char c = *s;
        if (in_str) {
            if (esc) {
                putchar(c);
                esc = 0;
            } else if (c == '\\') {
                esc = 1;
            } else if (c == '"') {
                in_str = 0;
            } else {
                putchar(c);
            }
            continue;
        }
        switch (c) {
        case '"':
            in_str = 1;
            break;
        case '{':
            if (++depth == 1) {
                at_key = 1;
            } else {
                putchar(c);
            }
            break;
        case '}':
            if (--depth == 0) {
                putchar('\n');
            } else {
                putchar(c);
            }
            break;
        case ':':
            putchar(depth == 1 && at_key ? '=' : c);
            at_key = 0;
            break;
        case ',':
            if (depth == 1) {
                putchar(' ');
                at_key = 1;
            } else if (depth > 1) {
                putchar(c);
            }
            break;
        case '[':
        case ']':
            if (depth > 0) {
                putchar(c);
            }
            break;
        case ' ':
        case '\n':
        case '\r':
        case '\t':
            break;
        default:
            if (depth > 0) {
                putchar(c);
            }
        }
    }
}

int spool__cli_query(int argc, char **argv)
{
    const char *view = NULL, *config = NULL, *http = NULL, *key = NULL, *from = NULL, *to = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(query_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            slot = &config;
        } else if (!strcmp(a, "--http")) {
            slot = &http;
        } else if (!strcmp(a, "--key")) {
            slot = &key;
        } else if (!strcmp(a, "--from")) {
            slot = &from;
        } else if (!strcmp(a, "--to")) {
            slot = &to;
        } else if (a[0] == '-' || view) {
            fprintf(stderr, "spool: query: unexpected '%s'\n%s", a, query_usage);
            return 2;
        } else {
            view = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "spool: query: %s needs a value\n", a);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!view || (!config && !http)) {
        fputs(query_usage, stderr);
        return 2;
    }
    char addr[512], path[4096], enc[1536];
    if (!http) {
        if (listen_of(config, addr, sizeof(addr)) < 0) {
            return 1;
        }
        http = addr;
    }
    urlenc(enc, sizeof(enc), view);
    size_t n = (size_t)snprintf(path, sizeof(path), "/api/v1/views/%s?", enc);
    const char *names[3] = {"key", "from", "to"};
    const char *vals[3] = {key, from, to};
    for (int k = 0; k < 3 && n < sizeof(path); k++) {
        if (vals[k]) {
            urlenc(enc, sizeof(enc), vals[k]);
            n += (size_t)snprintf(path + n, sizeof(path) - n, "%s=%s&", names[k], enc);
        }
    }
    spool_buf out = {0};
    int status = http_get(http, path, &out);
    if (status < 0) {
        spool_buf_free(&out);
        return 1;
    }
    const char *body = out.data ? (const char *)out.data : "";
    if (status != 200) {
        fprintf(stderr, "spool: query %s: %d %s", view, status, body);
        spool_buf_free(&out);
        return 1;
    }
    if (json) {
        fputs(body, stdout);
    } else {
        print_lines(body);
    }
    spool_buf_free(&out);
    return 0;
}
