/*
 * tcp.c: the `tcp` and `syslog` output plugins.
 *
 * Both send a chunk of records over one long-lived TCP (or TLS)
 * connection (conn.c): `tcp` as newline-delimited raw values or JSON
 * objects, `syslog` as RFC 5424 messages with RFC 6587 octet counting (or
 * newline framing), which rsyslog's imptcp/imtcp and syslog-ng accept.
 *
 * Delivery: the chunk is formatted whole, then written; flush returns
 * SPOOL_OK once every byte was handed to the kernel, and the cursor moves.
 * Any connect or write error closes the connection and returns
 * SPOOL_RETRY: the runner waits (retry_backoff, doubling to
 * retry_backoff_max) and calls flush again with the same chunk, which is
 * written whole on a new connection. So records are delivered at least
 * once as far as spool can see, and a chunk cut by a write error is
 * resent whole (the receiver may see its first part twice). Plain TCP has
 * no application acknowledgement: bytes in the kernel's buffers, or in the
 * receiver's, when the receiver crashes are lost without spool knowing.
 * docs/tcp-syslog.md says this to users.
 *
 * Syslog fields come from the record's headers when present (facility,
 * severity, hostname or host, appname, procid, msgid, sd: the names the
 * syslog input writes), else from the options; the timestamp is the
 * record's, in UTC with milliseconds; MSG is the value.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "spool/spool.h"

#include "conn.h"

typedef struct tcpout {
    /* Options. */
    char *url;
    int format;              /* tcp: 0 raw, 1 json, 2 fields */
    int framing;             /* syslog: 0 octet_counting, 1 newline */
    char *facility;          /* syslog: default facility (name or number) */
    char *severity;          /* syslog: default severity */
    char *appname;           /* syslog: default APP-NAME */
    int64_t connect_timeout; /* ms */
    int64_t write_timeout;   /* ms */
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    int tls_verify;
    char *tls_server_name;
    /* State. */
    spool_instance *ins;
    int is_syslog;
    int def_facility;
    int def_severity;
    tcpout_conn conn;
    int was_connected;
    spool_buf out;    /* the formatted chunk */
    spool_buf line;   /* syslog: one message before its length prefix */
    time_t ts_sec;    /* cached second of ts_text */
    char ts_text[32]; /* "2026-11-24T09:43:07" */
} tcpout;

static const char *const tcp_formats[] = {"raw", "json", "fields", NULL};
static const char *const syslog_framings[] = {"octet_counting", "newline", NULL};

#define TCPOUT_COMMON_OPTIONS                                                                      \
    SPOOL_OPT_STR("url", tcpout, url, NULL, 1, "tcp://host:port, or tls://host:port for TLS"),     \
        SPOOL_OPT_TIME("connect_timeout", tcpout, connect_timeout, "10s", 1, 3600000,              \
                       "TCP connect plus TLS handshake"),                                          \
        SPOOL_OPT_TIME("write_timeout", tcpout, write_timeout, "30s", 1, 3600000,                  \
                       "a write blocked this long fails the chunk (then reconnect and resend)"),   \
        SPOOL_OPT_STR("tls.ca", tcpout, tls_ca, NULL, 0,                                           \
                      "PEM CA bundle to verify the server (default: the system store)"),           \
        SPOOL_OPT_STR("tls.cert", tcpout, tls_cert, NULL, 0,                                       \
                      "PEM client certificate (mutual TLS)"),                                      \
        SPOOL_OPT_STR("tls.key", tcpout, tls_key, NULL, 0, "PEM key of tls.cert"),                 \
        SPOOL_OPT_FLAG("tls.verify", tcpout, tls_verify, "true",                                   \
                       "verify the server certificate and name"),                                  \
        SPOOL_OPT_STR("tls.server_name", tcpout, tls_server_name, NULL, 0,                         \
                      "name to verify and send as SNI (default: the URL's host)")

static const spool_option tcp_options[] = {
    TCPOUT_COMMON_OPTIONS,
    SPOOL_OPT_CHOICE("format", tcpout, format, "raw", tcp_formats,
                     "raw: the value and a newline; json: one object per line; fields: one "
                     "document of its fields per line"),
    SPOOL_OPT_END,
};

static const spool_option syslog_options[] = {
    TCPOUT_COMMON_OPTIONS,
    SPOOL_OPT_CHOICE("framing", tcpout, framing, "octet_counting", syslog_framings,
                     "octet_counting (RFC 6587 \"LEN SP MSG\") or newline"),
    SPOOL_OPT_STR("facility", tcpout, facility, "user", 0,
                  "facility when the record has no `facility` header (name or 0-23)"),
    SPOOL_OPT_STR("severity", tcpout, severity, "notice", 0,
                  "severity when the record has no `severity` header (name or 0-7)"),
    SPOOL_OPT_STR("appname", tcpout, appname, "spool", 0,
                  "APP-NAME when the record has no `appname` header"),
    SPOOL_OPT_END,
};

static int put(tcpout *t, const void *p, size_t n)
{
    return spool_buf_append(&t->out, p, n);
}

/* Appends to t->line. */
static int line_put(tcpout *t, const void *p, size_t n)
{
    return spool_buf_append(&t->line, p, n);
}

/* A header field as RFC 5424 wants it: printable US-ASCII, at most max
 * bytes, "-" when absent or empty. */
static int line_field(tcpout *t, const spool_record *r, const char *name, const char *def,
                      size_t max)
{
    const spool_header *h = spool_record_header(r, name);
    const uint8_t *v = (const uint8_t *)def;
    size_t n = def ? strlen(def) : 0;
    if (h != NULL && h->value != NULL && h->value_len > 0) {
        v = h->value;
        n = (size_t)h->value_len;
    }
    if (n == 0) {
        return line_put(t, "-", 1);
    }
    if (n > max) {
        n = max;
    }
    if (spool_buf_reserve(&t->line, n) < 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = v[i];
        t->line.data[t->line.len++] = ch >= 33 && ch <= 126 ? ch : '_';
    }
    return 0;
}

static int header_code(const spool_record *r, const char *name, int (*parse)(const char *), int def)
{
    const spool_header *h = spool_record_header(r, name);
    if (h == NULL || h->value == NULL || h->value_len <= 0 || h->value_len > 15) {
        return def;
    }
    char tmp[16];
    memcpy(tmp, h->value, (size_t)h->value_len);
    tmp[h->value_len] = '\0';
    int v = parse(tmp);
    return v >= 0 ? v : def;
}

static int format_syslog(tcpout *t, const spool_record *r)
{
    int rc = 0;
    char head[96];
    int fac = header_code(r, "facility", spool_syslog_facility_from_name, t->def_facility);
    int sev = header_code(r, "severity", spool_syslog_severity_from_name, t->def_severity);
    t->line.len = 0;
    int n = snprintf(head, sizeof(head), "<%d>1 ", fac * 8 + sev);
    rc |= line_put(t, head, (size_t)n);
    if (r->timestamp > 0) {
        time_t s = (time_t)(r->timestamp / 1000);
        if (s != t->ts_sec || t->ts_text[0] == '\0') {
            struct tm tm;
            gmtime_r(&s, &tm);
            strftime(t->ts_text, sizeof(t->ts_text), "%Y-%m-%dT%H:%M:%S", &tm);
            t->ts_sec = s;
        }
        n = snprintf(head, sizeof(head), "%s.%03dZ ", t->ts_text, (int)(r->timestamp % 1000));
        rc |= line_put(t, head, (size_t)n);
    } else {
        rc |= line_put(t, "- ", 2);
    }
    const spool_header *hn = spool_record_header(r, "hostname");
    rc |= line_field(t, r, hn && hn->value_len > 0 ? "hostname" : "host", spool_hostname(), 255);
    rc |= line_put(t, " ", 1);
    rc |= line_field(t, r, "appname", t->appname, 48);
    rc |= line_put(t, " ", 1);
    rc |= line_field(t, r, "procid", NULL, 128);
    rc |= line_put(t, " ", 1);
    rc |= line_field(t, r, "msgid", NULL, 32);
    rc |= line_put(t, " ", 1);
    const spool_header *sd = spool_record_header(r, "sd");
    if (sd != NULL && sd->value_len >= 3 && sd->value[0] == '[' &&
        sd->value[sd->value_len - 1] == ']') {
        rc |= line_put(t, sd->value, (size_t)sd->value_len);
    } else {
        rc |= line_put(t, "-", 1);
    }
    if (r->value_len > 0) {
        rc |= line_put(t, " ", 1);
        rc |= line_put(t, r->value, (size_t)r->value_len);
    }
    if (rc != 0) {
        return -ENOMEM;
    }
    if (t->framing == 0) {
        n = snprintf(head, sizeof(head), "%zu ", t->line.len);
        rc |= put(t, head, (size_t)n);
        rc |= put(t, t->line.data, t->line.len);
    } else {
        rc |= put(t, t->line.data, t->line.len);
        rc |= put(t, "\n", 1);
    }
    return rc ? -ENOMEM : 0;
}

static int format_record(tcpout *t, const spool_chunk *c, const spool_record *r)
{
    if (t->is_syslog) {
        return format_syslog(t, r);
    }
    if (t->format == 1 || t->format == 2) {
        int rc = t->format == 1 ? spool_json_append_record(&t->out, r, c->topic)
                                : spool_json_append_fields(&t->out, r, SPOOL_JSON_TYPED);
        return rc ? rc : put(t, "\n", 1);
    }
    /* raw: the value and a newline, one reservation per record. */
    size_t n = r->value_len > 0 ? (size_t)r->value_len : 0;
    if (t->out.cap - t->out.len < n + 1 && spool_buf_reserve(&t->out, n + 1) < 0) {
        return -ENOMEM;
    }
    uint8_t *d = t->out.data + t->out.len;
    if (n) {
        memcpy(d, r->value, n);
    }
    d[n] = '\n';
    t->out.len += n + 1;
    return 0;
}

static int tcpout_check(spool_instance *ins, void *ctx)
{
    tcpout *t = ctx;
    int rc = 0;
    static const char *const schemes[] = {"tcp", "tls", NULL};
    char why[512];
    spool_url u;
    if (tcpout_parse_url(t->url, schemes, &u, why, sizeof(why)) < 0) {
        spool_config_error(ins, "url", "invalid URL '%s': %s", t->url ? t->url : "", why);
        rc = -EINVAL;
    }
    if (spool_check_tls_files(ins, "tls.cert", t->tls_cert, "tls.key", t->tls_key, "tls.ca",
                              t->tls_ca) < 0) {
        rc = -EINVAL;
    }
    if ((t->tls_cert != NULL) != (t->tls_key != NULL)) {
        spool_config_error(ins, t->tls_cert ? "tls.key" : "tls.cert",
                           "mutual TLS needs both tls.cert and tls.key");
        rc = -EINVAL;
    }
    if (t->facility != NULL && spool_syslog_facility_from_name(t->facility) < 0) {
        spool_config_error(ins, "facility",
                           "unknown facility '%s' (kern, user, ... local7, or 0-23)", t->facility);
        rc = -EINVAL;
    }
    if (t->severity != NULL && spool_syslog_severity_from_name(t->severity) < 0) {
        spool_config_error(ins, "severity",
                           "unknown severity '%s' (emerg, alert, crit, err, warning, notice, "
                           "info, debug, or 0-7)",
                           t->severity);
        rc = -EINVAL;
    }
    return rc;
}

static int tcpout_init_common(spool_instance *ins, tcpout *t, int is_syslog)
{
    char err[256];
    int rc = tcpout_check(ins, t);
    if (rc < 0) {
        return rc;
    }
    t->ins = ins;
    t->is_syslog = is_syslog;
    t->def_facility = t->facility ? spool_syslog_facility_from_name(t->facility) : 1;
    t->def_severity = t->severity ? spool_syslog_severity_from_name(t->severity) : 5;
    tcpout_tls_opts o = {t->tls_ca, t->tls_cert, t->tls_key, t->tls_verify, t->tls_server_name};
    rc = tcpout_conn_init(&t->conn, t->url, &o, err, sizeof(err));
    if (rc < 0) {
        spool_log_error(ins, "url %s: %s", t->url, err);
        return rc;
    }
    t->conn.connect_timeout_ms = t->connect_timeout;
    t->conn.write_timeout_ms = t->write_timeout;
    return 0;
}

static int tcp_init(spool_instance *ins, void *ctx)
{
    tcpout *t = ctx;
    if (t->format == 0) {
        spool_output_values_only(ins); /* raw: the value and a newline */
    }
    return tcpout_init_common(ins, ctx, 0);
}

static int syslog_init(spool_instance *ins, void *ctx)
{
    return tcpout_init_common(ins, ctx, 1);
}

static int tcpout_flush(spool_instance *ins, void *ctx, const spool_chunk *chunk)
{
    tcpout *t = ctx;
    char err[512];
    t->out.len = 0;
    for (size_t i = 0; i < chunk->count; i++) {
        if (format_record(t, chunk, &chunk->records[i]) < 0) {
            spool_log_error(ins, "out of memory formatting %zu records", chunk->count);
            return SPOOL_RETRY;
        }
    }
    int rc = tcpout_conn_ensure(&t->conn, err, sizeof(err));
    if (rc < 0) {
        spool_count(ins, SPOOL_COUNT_ERRORS, 1);
        spool_log_warn(ins, "%s; retrying %s/%d from offset %lld", err, chunk->topic,
                       chunk->partition, (long long)chunk->first_offset);
        return SPOOL_RETRY;
    }
    if (rc == 1) {
        spool_log_info(ins, "connected to %s%s", t->conn.peer, t->conn.tls ? " (TLS)" : "");
    }
    if (tcpout_conn_write(&t->conn, t->out.data, t->out.len, err, sizeof(err)) < 0) {
        spool_count(ins, SPOOL_COUNT_ERRORS, 1);
        spool_log_warn(ins, "%s; reconnecting and resending %s/%d from offset %lld", err,
                       chunk->topic, chunk->partition, (long long)chunk->first_offset);
        return SPOOL_RETRY;
    }
    return SPOOL_OK;
}

/* Called by the core when a flush must give up (shutdown deadline): a
 * shutdown(2) of the socket wakes a write blocked on a peer that does not
 * read; the flush thread then closes it and returns SPOOL_RETRY. */
static void tcpout_stop(spool_instance *ins, void *ctx)
{
    tcpout *t = ctx;
    (void)ins;
    int fd = __atomic_load_n(&t->conn.fd, __ATOMIC_ACQUIRE);
    if (fd >= 0) {
        shutdown(fd, SHUT_RDWR);
    }
}

static void tcpout_destroy(spool_instance *ins, void *ctx)
{
    tcpout *t = ctx;
    (void)ins;
    tcpout_conn_free(&t->conn);
    spool_buf_free(&t->out);
    spool_buf_free(&t->line);
}

const spool_plugin spool_plugin_tcp_out = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "tcp",
    .description = "newline-delimited raw or JSON records over TCP or TLS (no acknowledgement: "
                   "see docs/tcp-syslog.md)",
    .options = tcp_options,
    .context_size = sizeof(tcpout),
    .check = tcpout_check,
    .init = tcp_init,
    .flush = tcpout_flush,
    .stop = tcpout_stop,
    .destroy = tcpout_destroy,
};

const spool_plugin spool_plugin_syslog_out = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "syslog",
    .description = "RFC 5424 syslog with octet counting over TCP or TLS, for rsyslog or "
                   "syslog-ng (no acknowledgement: see docs/tcp-syslog.md)",
    .options = syslog_options,
    .context_size = sizeof(tcpout),
    .check = tcpout_check,
    .init = syslog_init,
    .flush = tcpout_flush,
    .stop = tcpout_stop,
    .destroy = tcpout_destroy,
};
