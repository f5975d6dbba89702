/*
 * listener.c: the listener's loop, its batch and its backpressure.
 *
 * One libuv loop per listener, run on the input's run() thread; stop()
 * wakes it with uv_async. All connections of a listener append to one
 * batch (so records of one connection stay in arrival order), which is
 * submitted when it holds SOCK_BATCH_RECORDS or SOCK_BATCH_BYTES, or
 * SOCK_LINGER_MS after its first record. Submission never blocks the loop
 * for long: when the pipeline refuses a batch (-EAGAIN) the listener
 * pauses, that is, stream connections stop reading (uv_read_stop: the
 * kernel's buffers fill and TCP pushes back on the senders, nothing is
 * lost) and datagram sockets stop being read (the kernel drops what no
 * longer fits; its per-socket drop counter is read with SO_MEMINFO and
 * reported as SPOOL_COUNT_DROPPED), and a timer retries until the batch is
 * taken, then everything resumes.
 *
 * It does not: parse messages (the emit callback does), or know TLS (tls.c).
 */
#include "listener_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sock_url_parse(const char *url, sock_url *out, const char **why)
{
    static const struct {
        const char *scheme;
        sock_kind kind;
        int tls;
    } schemes[] = {
        {"tcp://", SOCK_TCP, 0},   {"tls://", SOCK_TCP, 1},           {"udp://", SOCK_UDP, 0},
        {"unix://", SOCK_UNIX, 0}, {"unixgram://", SOCK_UNIXGRAM, 0},
    };
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (url == NULL) {
        *why = "no URL";
        return -EINVAL;
    }
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t k = strlen(schemes[i].scheme);
        if (strncmp(url, schemes[i].scheme, k) == 0) {
            out->kind = schemes[i].kind;
            out->tls = schemes[i].tls;
            rest = url + k;
            break;
        }
    }
    if (rest == NULL) {
        *why = "expected tcp://, tls://, udp://, unix:// or unixgram://";
        return -EINVAL;
    }
    if (out->kind == SOCK_UNIX || out->kind == SOCK_UNIXGRAM) {
        size_t n = strlen(rest);
        if (n == 0) {
            *why = "no socket path";
            return -EINVAL;
        }
        if (n >= sizeof(out->path)) {
            *why = "socket path longer than 107 bytes";
            return -EINVAL;
        }
        memcpy(out->path, rest, n + 1);
        return 0;
    }
    /* *why points at static strings; a parse error's text lives here, per
     * thread, until this thread's next call. */
    static __thread char why_buf[256];
    int port;
    if (spool_parse_address(rest, SPOOL_ADDR_LISTEN, out->host, sizeof(out->host), &port, why_buf,
                            sizeof(why_buf)) < 0) {
        *why = why_buf;
        return -EINVAL;
    }
    if (out->host[0] == '\0') {
        strcpy(out->host, "0.0.0.0");
    }
    out->port = port;
    return 0;
}

spool_batch *sock__batch(sock_listener *l)
{
    if (l->batch == NULL) {
        l->batch = spool_batch_create(l->ins);
    }
    return l->batch;
}

void sock__account_framer(sock_listener *l, sock_framer *f)
{
    if (f->split_msgs > 0) {
        spool_counter_add(l->c_split, f->split_msgs);
        f->split_msgs = 0;
    }
    if (f->truncated_msgs > 0) {
        spool_counter_add(l->c_truncated, f->truncated_msgs);
        f->truncated_msgs = 0;
    }
}

int sock__on_frame(void *arg, const uint8_t *p, size_t n, unsigned flags)
{
    sock_frame_ctx *fc = arg;
    sock_listener *l = fc->l;
    spool_batch *b = sock__batch(l);
    if (b == NULL || l->cfg.emit(l->cfg.emit_arg, b, fc->peer, p, n, flags) != 0) {
        /* Out of memory: the record is lost, and counted. */
        l->dropped++;
        l->drops_unreported++;
        spool_count(l->ins, SPOOL_COUNT_DROPPED, 1);
        return 0;
    }
    return 0;
}

static void lst_pause(sock_listener *l)
{
    if (l->paused) {
        return;
    }
    l->paused = 1;
    spool_log_debug(l->ins, "pipeline full: pausing reads");
    sock__conns_pause(l);
    sock__dgram_pause(l);
}

static void lst_resume(sock_listener *l)
{
    if (!l->paused) {
        return;
    }
    l->paused = 0;
    spool_log_debug(l->ins, "pipeline has room: resuming reads");
    uv_timer_stop(&l->retry);
    if (!l->stopping) {
        sock__conns_resume(l);
        sock__dgram_resume(l);
    }
}

/* Tries to hand the batch over; timeout_ms 0 never blocks. 0 if the batch
 * was taken (or was empty), -EAGAIN, -ESHUTDOWN. */
static int lst_submit(sock_listener *l, int64_t timeout_ms)
{
    if (l->batch == NULL || spool_batch_count(l->batch) == 0) {
        return 0;
    }
    int rc = spool_input_submit(l->ins, l->batch, timeout_ms);
    if (rc == 0) {
        l->batch = NULL;
        uv_timer_stop(&l->linger);
        return 0;
    }
    if (rc == -ESHUTDOWN && !l->shutdown) {
        l->shutdown = 1;
        spool_log_warn(l->ins, "pipeline stopped; no more input is accepted");
    }
    return rc;
}

static void on_retry(uv_timer_t *t)
{
    sock_listener *l = t->data;
    int rc = lst_submit(l, 20);
    if (rc == 0) {
        lst_resume(l);
    } else if (rc == -ESHUTDOWN) {
        uv_timer_stop(&l->retry);
    }
}

static void lst_try_submit(sock_listener *l)
{
    if (l->paused) {
        return; /* the retry timer owns submission meanwhile */
    }
    int rc = lst_submit(l, 0);
    if (rc == -EAGAIN) {
        lst_pause(l);
        uv_timer_start(&l->retry, on_retry, SOCK_RETRY_MS, SOCK_RETRY_MS);
    } else if (rc == -ESHUTDOWN) {
        lst_pause(l);
    }
}

static void on_linger(uv_timer_t *t)
{
    lst_try_submit(t->data);
}

void sock__after_input(sock_listener *l)
{
    if (l->batch == NULL) {
        return;
    }
    size_t n = spool_batch_count(l->batch);
    if (n == 0) {
        return;
    }
    if (n >= SOCK_BATCH_RECORDS || spool_batch_bytes(l->batch) >= SOCK_BATCH_BYTES) {
        lst_try_submit(l);
    } else if (!uv_is_active((uv_handle_t *)&l->linger)) {
        uv_timer_start(&l->linger, on_linger, SOCK_LINGER_MS, 0);
    }
}

static void on_tick(uv_timer_t *t)
{
    sock_listener *l = t->data;
    if (l->dgram_fd >= 0) {
        sock__dgram_account(l, 0);
    }
    if (l->cfg.idle_timeout_ms > 0 && !l->paused) {
        sock__conns_idle_sweep(l, spool_monotonic_ms());
    }
}

static void close_handle(uv_handle_t *h)
{
    if (h->loop != NULL && !uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void on_wake(uv_async_t *a)
{
    sock_listener *l = a->data;
    if (l->stopping || (!l->stop_requested && !spool_instance_stopping(l->ins))) {
        return;
    }
    l->stopping = 1;
    if (l->dgram_fd >= 0) {
        sock__dgram_drain(l);
    } else {
        sock__conns_drain_close(l);
    }
    if (l->server_ready) {
        close_handle(&l->server.handle);
    }
    close_handle((uv_handle_t *)&l->linger);
    close_handle((uv_handle_t *)&l->retry);
    close_handle((uv_handle_t *)&l->tick);
    close_handle((uv_handle_t *)&l->wake);
}

static int lst_copy(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL) {
        return 0;
    }
    *dst = strdup(src);
    return *dst ? 0 : -ENOMEM;
}

int sock_listener_create(spool_instance *ins, const sock_listener_cfg *cfg, sock_listener **out)
{
    int rc;
    const char *why = NULL;
    sock_listener *l = calloc(1, sizeof(*l));
    *out = NULL;
    if (l == NULL) {
        return -ENOMEM;
    }
    l->ins = ins;
    l->cfg = *cfg;
    l->dgram_fd = -1;
    l->port = -1;
    char *url = NULL;
    char *mode = NULL;
    char *cert = NULL;
    char *key = NULL;
    char *ca = NULL;
    if (lst_copy(&url, cfg->url) || lst_copy(&mode, cfg->unix_mode) ||
        lst_copy(&cert, cfg->tls_cert) || lst_copy(&key, cfg->tls_key) ||
        lst_copy(&ca, cfg->tls_client_ca)) {
        free(url);
        free(mode);
        free(cert);
        free(key);
        free(ca);
        free(l);
        return -ENOMEM;
    }
    l->cfg.url = url;
    l->cfg.unix_mode = mode;
    l->cfg.tls_cert = cert;
    l->cfg.tls_key = key;
    l->cfg.tls_client_ca = ca;
    if (l->cfg.max_line_bytes <= 0) {
        l->cfg.max_line_bytes = 64 * 1024;
    }

    rc = sock_url_parse(cfg->url, &l->url, &why);
    if (rc < 0) {
        spool_log_error(ins, "listen '%s': %s", cfg->url ? cfg->url : "", why);
        goto fail;
    }
    rc = uv_loop_init(&l->loop);
    if (rc < 0) {
        spool_log_error(ins, "uv_loop_init: %s", uv_strerror(rc));
        goto fail;
    }
    l->loop_ready = 1;
    uv_async_init(&l->loop, &l->wake, on_wake);
    uv_timer_init(&l->loop, &l->linger);
    uv_timer_init(&l->loop, &l->retry);
    uv_timer_init(&l->loop, &l->tick);
    l->wake.data = l;
    l->linger.data = l;
    l->retry.data = l;
    l->tick.data = l;

    l->c_split = spool_counter_register(ins, "split_messages",
                                        "messages split because they exceeded max_line_bytes");
    l->c_truncated = spool_counter_register(
        ins, "truncated_messages", "messages truncated at max_line_bytes or cut by end of stream");
    l->c_refused =
        spool_counter_register(ins, "connections_refused", "connections over max_connections");
    l->c_tls_fail = spool_counter_register(
        ins, "tls_failures", "TLS handshakes that failed, including plain-text clients");
    l->c_framing = spool_counter_register(ins, "framing_errors",
                                          "connections closed for an invalid octet count");

    if (l->url.tls || l->cfg.tls_cert != NULL) {
        if (l->url.kind != SOCK_TCP) {
            spool_log_error(ins, "TLS is only available on tcp:// listeners");
            rc = -EINVAL;
            goto fail;
        }
        rc = sock__tls_ctx_create(l);
        if (rc < 0) {
            goto fail;
        }
    }
    if (l->url.kind == SOCK_UDP || l->url.kind == SOCK_UNIXGRAM) {
        rc = sock__dgram_open(l);
    } else {
        rc = sock__stream_listen(l);
    }
    if (rc < 0) {
        goto fail;
    }
    *out = l;
    return 0;
fail:
    sock_listener_destroy(l);
    return rc;
}

int sock_listener_run(sock_listener *l)
{
    int64_t tick = 1000;
    if (l->cfg.idle_timeout_ms > 0 && l->cfg.idle_timeout_ms / 2 < tick) {
        tick = l->cfg.idle_timeout_ms / 2 > 10 ? l->cfg.idle_timeout_ms / 2 : 10;
    }
    uv_timer_start(&l->tick, on_tick, (uint64_t)tick, (uint64_t)tick);
    if (l->stop_requested || spool_instance_stopping(l->ins)) {
        uv_async_send(&l->wake);
    }
    uv_run(&l->loop, UV_RUN_DEFAULT);
    l->loop_done = 1;

    /* The loop has ended: hand over what is left, waiting at most until the
     * service's shutdown deadline (the core counts what misses it as lost). */
    if (l->batch != NULL && spool_batch_count(l->batch) > 0 && !l->shutdown) {
        int rc = spool_input_submit(l->ins, l->batch, -1);
        if (rc == 0) {
            l->batch = NULL;
        }
    }
    if (l->batch != NULL && spool_batch_count(l->batch) > 0) {
        size_t n = spool_batch_count(l->batch);
        spool_count(l->ins, SPOOL_COUNT_DROPPED, n);
        l->dropped += n;
        spool_log_error(l->ins, "stopping: %zu records could not be handed to the pipeline", n);
    }
    spool_batch_destroy(l->batch);
    l->batch = NULL;
    if (l->dgram_fd >= 0) {
        sock__dgram_account(l, 1);
        spool_log_info(l->ins, "stopped: %llu datagrams received, %llu dropped",
                       (unsigned long long)l->datagrams, (unsigned long long)l->dropped);
    } else {
        spool_log_info(l->ins, "stopped: %llu connections accepted, %llu refused, %llu dropped",
                       (unsigned long long)l->accepted, (unsigned long long)l->refused,
                       (unsigned long long)l->dropped);
    }
    return 0;
}

void sock_listener_stop(sock_listener *l)
{
    if (l != NULL && l->loop_ready) {
        l->stop_requested = 1;
        if (!l->loop_done) {
            uv_async_send(&l->wake);
        }
    }
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

void sock_listener_destroy(sock_listener *l)
{
    if (l == NULL) {
        return;
    }
    if (l->loop_ready) {
        /* Connections are freed by their close callbacks; run them. */
        while (l->conns != NULL) {
            sock__conn_close(l->conns); /* unlinks it */
        }
        uv_walk(&l->loop, walk_close, NULL);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&l->loop) != 0) {
            spool_log_warn(l->ins, "event loop closed with handles still open");
        }
    }
    if (l->dgram_fd >= 0) {
        close(l->dgram_fd);
    }
    if (l->unix_bound[0] != '\0') {
        unlink(l->unix_bound);
    }
    spool_batch_destroy(l->batch);
    sock_framer_free(&l->dgram_fr);
    free(l->dbuf);
    if (l->ssl_ctx != NULL) {
        SSL_CTX_free(l->ssl_ctx);
    }
    free((char *)l->cfg.url);
    free((char *)l->cfg.unix_mode);
    free((char *)l->cfg.tls_cert);
    free((char *)l->cfg.tls_key);
    free((char *)l->cfg.tls_client_ca);
    free(l);
}

int sock_listener_port(const sock_listener *l)
{
    return l ? l->port : -1;
}
