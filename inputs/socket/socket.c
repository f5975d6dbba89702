/*
 * socket.c: the `socket` and `syslog` input plugins.
 *
 * Both are a listener (listener.c: tcp://, tls://, udp://, unix://,
 * unixgram://) plus a function that turns a frame into a record. `socket`
 * keeps the frame as the value. `syslog` parses it (syslog_parse.c) and
 * puts the fields into headers: facility and severity (names such as
 * "local0" and "err"), hostname, appname, procid, msgid, sd (the raw
 * structured data) and one header per SD parameter named
 * "sd.<SD-ID>.<PARAM-NAME>" with its unescaped value; the record's
 * timestamp is the message's; the value is the MSG. A frame that is not
 * syslog is kept whole with a `syslog.error` header saying why. Every
 * record carries `host`, `input` and `peer` (address:port, or the socket
 * path), and `tls.subject` for a client with a certificate.
 *
 * Invariants: a frame never turns into zero records; the per-instance
 * scratch space bounds SD headers (the raw `sd` header always has all).
 * It does not: decode character sets or resolve peer names.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

#include "listener.h"
#include "syslog_parse.h"

#define SOCK_MAX_HEADERS 64
#define SOCK_SD_NAMES_BYTES 8192 /* scratch for "sd.<id>.<param>" header names */

typedef struct sock_input {
    /* Options. */
    char *listen;
    int64_t max_connections;
    int64_t idle_timeout;   /* ms */
    int64_t max_line_bytes; /* bytes */
    int long_lines;         /* sock_frame_long */
    int framing;            /* index into framing_names */
    char *mode;             /* unix socket permissions, octal text */
    int64_t receive_buffer; /* bytes */
    char *tls_cert;
    char *tls_key;
    char *tls_client_ca;
    /* State. */
    spool_instance *ins;
    int is_syslog;
    sock_listener *l;
    const char *host;
    size_t host_len;
    const char *name;
    size_t name_len;
    uint8_t *scratch;   /* SD names and unescaped values */
    size_t scratch_cap; /* bytes */
} sock_input;

static const char *const long_names[] = {"split", "truncate", NULL};
static const char *const framing_names[] = {"newline", "octet_counting", "auto", NULL};
static const sock_frame_mode framing_modes[] = {SOCK_FRAME_NEWLINE, SOCK_FRAME_OCTET,
                                                SOCK_FRAME_AUTO};

#define SOCK_COMMON_OPTIONS                                                                        \
    SPOOL_OPT_STR("listen", sock_input, listen, NULL, 1,                                           \
                  "tcp://host:port, tls://host:port, udp://host:port, unix:///path or "            \
                  "unixgram:///path"),                                                             \
        SPOOL_OPT_INTEGER("max_connections", sock_input, max_connections, "1024", 1, 1000000,      \
                          "stream sockets: connections at once; more are refused"),                \
        SPOOL_OPT_TIME("idle_timeout", sock_input, idle_timeout, "0", 0, 86400000LL * 365,         \
                       "stream sockets: close a connection silent this long (0 = never)"),         \
        SPOOL_OPT_BYTES("max_line_bytes", sock_input, max_line_bytes, "64KiB", 16,                 \
                        64LL * 1024 * 1024,                                                        \
                        "longest message; longer ones are split or truncated"),                    \
        SPOOL_OPT_CHOICE("long_lines", sock_input, long_lines, "split", long_names,                \
                         "what to do with a message longer than max_line_bytes (counted)"),        \
        SPOOL_OPT_STR("mode", sock_input, mode, NULL, 0,                                           \
                      "unix sockets: file permissions in octal, e.g. \"0660\""),                   \
        SPOOL_OPT_BYTES("receive_buffer", sock_input, receive_buffer, "8MiB", 0, 1LL << 30,        \
                        "datagram sockets: kernel receive buffer (0 = system default)"),           \
        SPOOL_OPT_STR("tls.cert", sock_input, tls_cert, NULL, 0,                                   \
                      "TCP: PEM certificate chain; enables TLS"),                                  \
        SPOOL_OPT_STR("tls.key", sock_input, tls_key, NULL, 0, "TCP: PEM private key"),            \
        SPOOL_OPT_STR("tls.client_ca", sock_input, tls_client_ca, NULL, 0,                         \
                      "TCP: PEM CA bundle; clients must present a certificate it signed")

static const spool_option socket_options[] = {
    SOCK_COMMON_OPTIONS,
    SPOOL_OPT_CHOICE("framing", sock_input, framing, "newline", framing_names,
                     "stream sockets: newline, octet_counting (RFC 6587) or auto"),
    SPOOL_OPT_END,
};

static const spool_option syslog_options[] = {
    SOCK_COMMON_OPTIONS,
    SPOOL_OPT_CHOICE("framing", sock_input, framing, "auto", framing_names,
                     "stream sockets: newline, octet_counting (RFC 6587) or auto (per message)"),
    SPOOL_OPT_END,
};

static void hdr_set(spool_header *h, const char *k, const void *v, size_t vn)
{
    h->key = k;
    h->key_len = (uint32_t)strlen(k);
    h->value = v;
    h->value_len = (int32_t)vn;
}

static uint32_t base_headers(sock_input *s, spool_header *h, const sock_peer *peer)
{
    uint32_t n = 0;
    h[n++] = (spool_header){"host", 4, (const uint8_t *)s->host, (int32_t)s->host_len};
    h[n++] = (spool_header){"input", 5, (const uint8_t *)s->name, (int32_t)s->name_len};
    hdr_set(&h[n++], "peer", peer->addr, peer->addr_len);
    if (peer->tls_subject != NULL) {
        hdr_set(&h[n++], "tls.subject", peer->tls_subject, strlen(peer->tls_subject));
    }
    return n;
}

static int emit_raw(void *arg, spool_batch *b, const sock_peer *peer, const uint8_t *p, size_t n,
                    unsigned flags)
{
    sock_input *s = arg;
    (void)flags;
    spool_header h[8];
    spool_record r;
    memset(&r, 0, sizeof(r));
    r.headers = h;
    r.header_count = base_headers(s, h, peer);
    r.key_len = -1;
    r.value = p;
    r.value_len = (int32_t)n;
    r.timestamp = peer->recv_ms;
    return spool_batch_append(b, &r);
}

static void span_header(spool_header *h, uint32_t *n, const char *k, syslog_span v)
{
    if (v.p != NULL && v.n > 0) {
        hdr_set(&h[(*n)++], k, v.p, v.n);
    }
}

/* One header per SD parameter, names and values in the scratch space. */
static void sd_headers(sock_input *s, const syslog_msg *m, spool_header *h, uint32_t *n)
{
    syslog_sd_iter it;
    syslog_span id;
    syslog_span name;
    syslog_span value;
    size_t used = 0;
    syslog_sd_begin(&it, m->sd);
    while (*n < SOCK_MAX_HEADERS && syslog_sd_next(&it, &id, &name, &value)) {
        if (name.p == NULL) {
            continue;
        }
        size_t kn = 3 + id.n + 1 + name.n;
        if (used + kn + value.n > s->scratch_cap) {
            break;
        }
        uint8_t *k = s->scratch + used;
        memcpy(k, "sd.", 3);
        memcpy(k + 3, id.p, id.n);
        k[3 + id.n] = '.';
        memcpy(k + 4 + id.n, name.p, name.n);
        used += kn;
        uint8_t *v = s->scratch + used;
        size_t vn = syslog_sd_unescape(value.p, value.n, v);
        used += vn;
        spool_header *x = &h[(*n)++];
        x->key = (const char *)k;
        x->key_len = (uint32_t)kn;
        x->value = v;
        x->value_len = (int32_t)vn;
    }
}

static int emit_syslog(void *arg, spool_batch *b, const sock_peer *peer, const uint8_t *p, size_t n,
                       unsigned flags)
{
    sock_input *s = arg;
    (void)flags;
    spool_header h[SOCK_MAX_HEADERS];
    spool_record r;
    syslog_msg m;
    memset(&r, 0, sizeof(r));
    r.headers = h;
    r.key_len = -1;
    r.timestamp = peer->recv_ms; /* unless the message has its own */
    uint32_t hn = base_headers(s, h, peer);
    if (syslog_parse(p, n, &m) != 0) {
        hdr_set(&h[hn++], "syslog.error", m.error, strlen(m.error));
    } else {
        const char *fac = spool_syslog_facility_name(m.facility);
        const char *sev = spool_syslog_severity_name(m.severity);
        hdr_set(&h[hn++], "facility", fac, strlen(fac));
        hdr_set(&h[hn++], "severity", sev, strlen(sev));
        span_header(h, &hn, "hostname", m.hostname);
        span_header(h, &hn, "appname", m.appname);
        span_header(h, &hn, "procid", m.procid);
        span_header(h, &hn, "msgid", m.msgid);
        span_header(h, &hn, "sd", m.sd);
        if (m.sd.p != NULL) {
            sd_headers(s, &m, h, &hn);
        }
        int64_t ts = m.has_time ? syslog_time_ms(&m, peer->recv_ms) : 0;
        if (ts > 0) {
            r.timestamp = ts;
        }
    }
    r.header_count = hn;
    r.value = m.msg.p;
    r.value_len = (int32_t)m.msg.n;
    return spool_batch_append(b, &r);
}

static int sock_check(spool_instance *ins, void *ctx)
{
    sock_input *s = ctx;
    sock_url url;
    const char *why = NULL;
    int rc = 0;
    if (sock_url_parse(s->listen, &url, &why) != 0) {
        /* A bad host:port is reported as spool_check_address words it. */
        const char *l = s->listen ? s->listen : "";
        int inet = strncmp(l, "tcp://", 6) == 0 || strncmp(l, "tls://", 6) == 0 ||
                   strncmp(l, "udp://", 6) == 0;
        if (inet && spool_check_address(ins, "listen", l + 6, SPOOL_ADDR_LISTEN) < 0) {
            return -EINVAL;
        }
        spool_config_error(ins, "listen", "invalid listen URL '%s': %s", s->listen ? s->listen : "",
                           why);
        return -EINVAL;
    }
    int tls = url.tls || s->tls_cert != NULL || s->tls_key != NULL;
    if (tls && url.kind != SOCK_TCP) {
        spool_config_error(ins, "tls.cert", "TLS is only available on tcp:// listeners");
        rc = -EINVAL;
    }
    if (tls && (s->tls_cert == NULL || s->tls_key == NULL)) {
        spool_config_error(ins, s->tls_cert ? "tls.key" : "tls.cert",
                           "TLS needs both tls.cert and tls.key");
        rc = -EINVAL;
    }
    if (s->tls_client_ca != NULL && !tls) {
        spool_config_error(ins, "tls.client_ca", "tls.client_ca needs tls.cert and tls.key");
        rc = -EINVAL;
    }
    if (url.kind != SOCK_UNIX && url.kind != SOCK_UNIXGRAM) {
        /* host:port after the scheme: literals and port range. */
        const char *hp = strstr(s->listen, "://");
        if (hp && spool_check_address(ins, "listen", hp + 3, SPOOL_ADDR_LISTEN) < 0) {
            rc = -EINVAL;
        }
    } else {
        /* The socket's directory must exist for bind() at start. */
        char dir[sizeof(url.path)];
        snprintf(dir, sizeof(dir), "%s", url.path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            if (spool_check_directory(ins, "listen", dir) < 0) {
                rc = -EINVAL;
            }
        }
    }
    if (spool_check_tls_files(ins, "tls.cert", s->tls_cert, "tls.key", s->tls_key, "tls.client_ca",
                              s->tls_client_ca) < 0) {
        rc = -EINVAL;
    }
    if (s->mode != NULL) {
        char *end = NULL;
        unsigned long v = strtoul(s->mode, &end, 8);
        if (*s->mode == '\0' || *end != '\0' || v > 07777) {
            spool_config_error(ins, "mode", "expected octal permissions such as \"0660\"");
            rc = -EINVAL;
        } else if (url.kind != SOCK_UNIX && url.kind != SOCK_UNIXGRAM) {
            spool_config_error(ins, "mode", "mode applies to unix:// and unixgram:// only");
            rc = -EINVAL;
        }
    }
    return rc;
}

static int sock_init_common(spool_instance *ins, sock_input *s, int is_syslog)
{
    int rc = sock_check(ins, s);
    if (rc < 0) {
        return rc;
    }
    s->ins = ins;
    s->is_syslog = is_syslog;
    s->host = spool_hostname();
    s->host_len = strlen(s->host);
    s->name = spool_instance_name(ins);
    s->name_len = strlen(s->name);
    if (is_syslog) {
        s->scratch_cap = (size_t)s->max_line_bytes + SOCK_SD_NAMES_BYTES;
        s->scratch = malloc(s->scratch_cap);
        if (s->scratch == NULL) {
            return -ENOMEM;
        }
    }
    sock_listener_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.url = s->listen;
    cfg.max_connections = s->max_connections;
    cfg.idle_timeout_ms = s->idle_timeout;
    cfg.max_line_bytes = s->max_line_bytes;
    cfg.on_long = s->long_lines == 1 ? SOCK_LONG_TRUNCATE : SOCK_LONG_SPLIT;
    cfg.stream_framing = framing_modes[s->framing >= 0 && s->framing < 3 ? s->framing : 0];
    /* One datagram is one syslog message (RFC 5426); raw datagrams split on LF. */
    cfg.dgram_framing = is_syslog ? SOCK_FRAME_NONE : SOCK_FRAME_NEWLINE;
    cfg.unix_mode = s->mode;
    cfg.receive_buffer = s->receive_buffer;
    cfg.tls_cert = s->tls_cert;
    cfg.tls_key = s->tls_key;
    cfg.tls_client_ca = s->tls_client_ca;
    cfg.emit = is_syslog ? emit_syslog : emit_raw;
    cfg.emit_arg = s;
    return sock_listener_create(ins, &cfg, &s->l);
}

static int socket_init(spool_instance *ins, void *ctx)
{
    return sock_init_common(ins, ctx, 0);
}

static int syslog_init(spool_instance *ins, void *ctx)
{
    return sock_init_common(ins, ctx, 1);
}

static int sock_run(spool_instance *ins, void *ctx)
{
    sock_input *s = ctx;
    (void)ins;
    return sock_listener_run(s->l);
}

static void sock_stop(spool_instance *ins, void *ctx)
{
    sock_input *s = ctx;
    (void)ins;
    sock_listener_stop(s->l);
}

static void sock_destroy(spool_instance *ins, void *ctx)
{
    sock_input *s = ctx;
    (void)ins;
    sock_listener_destroy(s->l);
    s->l = NULL;
    free(s->scratch);
    s->scratch = NULL;
}

const spool_plugin spool_plugin_socket = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "socket",
    .description = "lines from TCP (optionally TLS), UDP or unix sockets, one record per line",
    .options = socket_options,
    .context_size = sizeof(sock_input),
    .check = sock_check,
    .init = socket_init,
    .run = sock_run,
    .stop = sock_stop,
    .destroy = sock_destroy,
};

const spool_plugin spool_plugin_syslog = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_INPUT,
    .name = "syslog",
    .description = "RFC 3164 and RFC 5424 syslog over TCP (optionally TLS), UDP or unix sockets",
    .options = syslog_options,
    .context_size = sizeof(sock_input),
    .check = sock_check,
    .init = syslog_init,
    .run = sock_run,
    .stop = sock_stop,
    .destroy = sock_destroy,
};
