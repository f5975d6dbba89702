/*
 * http_in_conn.c: the `http` input's connection accounting, its defence
 * against connection floods (slowloris and the like).
 *
 * Every connection libmicrohttpd accepts is admitted here first (its accept
 * policy callback): refused when max_connections are open, or when the
 * client's address already holds max_connections_per_client. An admitted
 * connection is tracked from MHD's "started" to its "closed" notification
 * with its phase and a deadline: its request header must be complete within
 * header_timeout of the connection opening (on a kept-alive connection,
 * within read_timeout + header_timeout of the previous answer, so an idle
 * one is closed quietly by MHD's read_timeout first), its body within
 * body_timeout of the header.
 * A connection past its deadline has its socket shut down, which MHD sees
 * as the peer going away and closes it. While a request waits for its batch
 * to be durable (the connection is suspended) it has no deadline: that
 * wait is bounded by ack_timeout.
 *
 * Invariants: every function here runs on the input's server thread (the
 * one running MHD), so nothing is locked; a tracked connection's socket is
 * open until MHD's "closed" notification, which is delivered on that same
 * thread, so shutting it down from the sweep cannot hit a reused fd.
 *
 * Refusals and timeouts are counted (metrics connections_refused and
 * connections_timed_out, gauge connections_open) and reported in one
 * warning at most every HTTPI_WARN_EVERY_MS with the counts since the last
 * one. What it does not do: limit the rate of new connections or require a
 * minimum transfer rate inside a deadline.
 */
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http_in.h"

#define HTTPI_WARN_EVERY_MS 10000 /* at most one flood warning per 10 s */
#define HTTPI_SWEEP_EVERY_MS 200  /* deadlines are checked this often */
#define HTTPI_IP_BUCKETS 1024

/* Connections open per client address. */
typedef struct httpi_ipcount {
    struct httpi_ipcount *next; /* in its bucket */
    uint8_t addr[16];           /* IPv4 in the first 4 bytes */
    int family;
    int64_t count; /* open connections from this address */
} httpi_ipcount;

struct httpi_conn {
    httpi_conn *prev, *next; /* in conns->head */
    int fd;
    int phase;        /* HTTPI_PHASE_* */
    int64_t deadline; /* monotonic ms, INT64_MAX for none */
    httpi_ipcount *ip;
};

static int ip_key(const struct sockaddr *sa, uint8_t key[16], int *family)
{
    memset(key, 0, 16);
    if (!sa) {
        return -EINVAL;
    }
    *family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -EINVAL;
}

static size_t ip_hash(const uint8_t key[16], int family)
{
    uint32_t h = 2166136261u ^ (uint32_t)family;
    for (int i = 0; i < 16; i++) {
        h = (h ^ key[i]) * 16777619u;
    }
    return h % HTTPI_IP_BUCKETS;
}

/* The entry of sa's address, created (count 0) when create is set. */
static httpi_ipcount *ip_find(httpi_conns *cs, const struct sockaddr *sa, int create)
{
    uint8_t key[16];
    int family = 0;
    if (ip_key(sa, key, &family) < 0 || !cs->buckets) {
        return NULL;
    }
    size_t b = ip_hash(key, family);
    for (httpi_ipcount *e = cs->buckets[b]; e; e = e->next) {
        if (e->family == family && memcmp(e->addr, key, 16) == 0) {
            return e;
        }
    }
    if (!create) {
        return NULL;
    }
    httpi_ipcount *e = calloc(1, sizeof(*e));
    if (!e) {
        return NULL;
    }
    memcpy(e->addr, key, 16);
    e->family = family;
    e->next = cs->buckets[b];
    cs->buckets[b] = e;
    return e;
}

static void ip_release(httpi_conns *cs, httpi_ipcount *e)
{
    if (!e || --e->count > 0) {
        return;
    }
    size_t b = ip_hash(e->addr, e->family);
    for (httpi_ipcount **p = &cs->buckets[b]; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            free(e);
            return;
        }
    }
}

int httpi_conns_init(httpi_conns *cs, spool_instance *ins)
{
    cs->buckets = calloc(HTTPI_IP_BUCKETS, sizeof(*cs->buckets));
    if (!cs->buckets) {
        return -ENOMEM;
    }
    cs->c_refused = spool_counter_register(
        ins, "connections_refused",
        "connections refused at accept (max_connections or max_connections_per_client)");
    cs->c_timed_out = spool_counter_register(
        ins, "connections_timed_out",
        "connections closed for not sending a request in time (header, body or read timeout)");
    cs->g_open = spool_gauge_register(ins, "connections_open", "connections open now");
    return 0;
}

void httpi_conns_destroy(httpi_conns *cs)
{
    while (cs->head) {
        httpi_conns_closed(cs, cs->head);
    }
    if (cs->buckets) {
        for (size_t b = 0; b < HTTPI_IP_BUCKETS; b++) {
            while (cs->buckets[b]) {
                httpi_ipcount *e = cs->buckets[b];
                cs->buckets[b] = e->next;
                free(e);
            }
        }
        free(cs->buckets);
        cs->buckets = NULL;
    }
}

int httpi_conns_admit(httpi_conns *cs, const struct sockaddr *sa)
{
    if ((int64_t)cs->open >= cs->max_total) {
        cs->refused_total++;
        spool_counter_add(cs->c_refused, 1);
        return 0;
    }
    httpi_ipcount *e = ip_find(cs, sa, 0);
    if (e && e->count >= cs->max_per_client) {
        cs->refused_client++;
        spool_counter_add(cs->c_refused, 1);
        return 0;
    }
    return 1;
}

httpi_conn *httpi_conns_opened(httpi_conns *cs, int fd, const struct sockaddr *sa, int64_t now)
{
    httpi_conn *hc = calloc(1, sizeof(*hc));
    if (!hc) {
        return NULL;
    }
    hc->fd = fd;
    hc->ip = ip_find(cs, sa, 1);
    if (hc->ip) {
        hc->ip->count++;
    }
    hc->next = cs->head;
    if (cs->head) {
        cs->head->prev = hc;
    }
    cs->head = hc;
    cs->open++;
    spool_gauge_set(cs->g_open, (int64_t)cs->open);
    httpi_conn_phase(cs, hc, HTTPI_PHASE_HEADERS, now);
    return hc;
}

void httpi_conns_closed(httpi_conns *cs, httpi_conn *hc)
{
    if (!hc) {
        return;
    }
    if (hc->prev) {
        hc->prev->next = hc->next;
    } else {
        cs->head = hc->next;
    }
    if (hc->next) {
        hc->next->prev = hc->prev;
    }
    ip_release(cs, hc->ip);
    cs->open--;
    spool_gauge_set(cs->g_open, (int64_t)cs->open);
    free(hc);
}

void httpi_conn_phase(httpi_conns *cs, httpi_conn *hc, int phase, int64_t now)
{
    if (!hc || hc->phase == HTTPI_PHASE_CLOSING) {
        return;
    }
    hc->phase = phase;
    if (phase == HTTPI_PHASE_HEADERS) {
        hc->deadline = now + cs->header_timeout_ms;
    } else if (phase == HTTPI_PHASE_KEPT) {
        hc->deadline = now + cs->read_timeout_ms + cs->header_timeout_ms;
    } else if (phase == HTTPI_PHASE_BODY) {
        hc->deadline = now + cs->body_timeout_ms;
    } else {
        hc->deadline = INT64_MAX;
    }
}

void httpi_conns_idle_timeout(httpi_conns *cs)
{
    cs->timed_idle++;
    spool_counter_add(cs->c_timed_out, 1);
}

/* Shuts down connections past their deadline. */
static void sweep(httpi_conns *cs, int64_t now)
{
    for (httpi_conn *hc = cs->head; hc; hc = hc->next) {
        if (hc->deadline > now) {
            continue;
        }
        if (hc->phase == HTTPI_PHASE_HEADERS || hc->phase == HTTPI_PHASE_KEPT) {
            cs->timed_header++;
        } else {
            cs->timed_body++;
        }
        spool_counter_add(cs->c_timed_out, 1);
        shutdown(hc->fd, SHUT_RDWR);
        hc->phase = HTTPI_PHASE_CLOSING;
        hc->deadline = INT64_MAX;
    }
}

int64_t httpi_conns_tick(httpi_conns *cs, spool_instance *ins, int64_t now)
{
    if (now - cs->last_sweep_ms >= HTTPI_SWEEP_EVERY_MS) {
        sweep(cs, now);
        cs->last_sweep_ms = now;
    }
    uint64_t refused = cs->refused_total + cs->refused_client;
    uint64_t timed = cs->timed_header + cs->timed_body + cs->timed_idle;
    if ((refused || timed) &&
        (cs->last_warn_ms == 0 || now - cs->last_warn_ms >= HTTPI_WARN_EVERY_MS)) {
        spool_log_warn(
            ins,
            "connection flood? since the last report: refused %llu connections (%llu over "
            "max_connections_per_client %lld, %llu over max_connections %lld); "
            "closed %llu slow ones (%llu without a complete header within "
            "header_timeout, %llu without their body within body_timeout, %llu idle "
            "beyond read_timeout); %zu open",
            (unsigned long long)refused, (unsigned long long)cs->refused_client,
            (long long)cs->max_per_client, (unsigned long long)cs->refused_total,
            (long long)cs->max_total, (unsigned long long)timed,
            (unsigned long long)cs->timed_header, (unsigned long long)cs->timed_body,
            (unsigned long long)cs->timed_idle, cs->open);
        cs->refused_total = cs->refused_client = 0;
        cs->timed_header = cs->timed_body = cs->timed_idle = 0;
        cs->last_warn_ms = now;
    }
    int64_t next = cs->last_sweep_ms + HTTPI_SWEEP_EVERY_MS - now;
    return next < 0 ? 0 : next;
}
