/*
 * tls.c: TLS for TCP listeners, with OpenSSL over memory BIOs.
 *
 * libuv owns the socket; OpenSSL sees only buffers: ciphertext read from
 * the peer is written into the session's read BIO, plaintext comes out of
 * SSL_read and goes to the connection's framer, and whatever OpenSSL
 * wants to send (handshake, alerts) is taken from the write BIO and
 * written with uv_write. The first byte of a connection must be a TLS
 * handshake record (0x16); anything else is a plain-text client and is
 * closed with a warning naming the peer, as is a failed handshake (with
 * OpenSSL's reason, e.g. a missing or untrusted client certificate).
 *
 * It does not: renegotiate, resume sessions, or check client names; with
 * tls_client_ca set any certificate that chains to that CA is accepted.
 */
#include "listener_int.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

static void tls_errstr(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, cap, "unknown error");
    } else {
        ERR_error_string_n(e, buf, cap);
    }
    ERR_clear_error();
}

int sock__tls_ctx_create(sock_listener *l)
{
    char err[256];
    if (l->cfg.tls_cert == NULL || l->cfg.tls_key == NULL) {
        spool_log_error(l->ins, "TLS listener needs tls.cert and tls.key");
        return -EINVAL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, l->cfg.tls_cert) != 1) {
        tls_errstr(err, sizeof(err));
        spool_log_error(l->ins, "tls.cert %s: %s", l->cfg.tls_cert, err);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, l->cfg.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        tls_errstr(err, sizeof(err));
        spool_log_error(l->ins, "tls.key %s: %s", l->cfg.tls_key, err);
        goto fail;
    }
    if (l->cfg.tls_client_ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, l->cfg.tls_client_ca, NULL) != 1) {
            tls_errstr(err, sizeof(err));
            spool_log_error(l->ins, "tls.client_ca %s: %s", l->cfg.tls_client_ca, err);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(l->cfg.tls_client_ca);
        if (names != NULL) {
            SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    l->ssl_ctx = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return -EINVAL;
}

int sock__tls_conn_init(sock_conn *c)
{
    c->ssl = SSL_new(c->l->ssl_ctx);
    if (c->ssl == NULL) {
        return -ENOMEM;
    }
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        SSL_free(c->ssl);
        c->ssl = NULL;
        return -ENOMEM;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    return 0;
}

void sock__tls_conn_free(sock_conn *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl); /* frees both BIOs */
        c->ssl = NULL;
    }
    free(c->tls_subject);
    c->tls_subject = NULL;
}

static void on_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* Sends what OpenSSL queued for the peer. */
static void tls_flush(sock_conn *c)
{
    size_t pending = BIO_ctrl_pending(c->wbio);
    if (pending == 0 || c->closing) {
        return;
    }
    uv_write_t *req = malloc(sizeof(*req) + pending);
    if (req == NULL) {
        return;
    }
    char *data = (char *)(req + 1);
    int n = BIO_read(c->wbio, data, (int)pending);
    if (n <= 0) {
        free(req);
        return;
    }
    uv_buf_t buf = uv_buf_init(data, (unsigned)n);
    if (uv_write(req, &c->h.stream, &buf, 1, on_written) != 0) {
        free(req);
    }
}

static void tls_fail(sock_conn *c, const char *what)
{
    char err[256];
    tls_errstr(err, sizeof(err));
    long vr = SSL_get_verify_result(c->ssl);
    spool_counter_add(c->l->c_tls_fail, 1);
    if (vr != X509_V_OK) {
        spool_log_warn(c->l->ins, "TLS %s with %.*s failed: %s (certificate: %s)", what,
                       (int)c->peer_len, c->peer, err, X509_verify_cert_error_string(vr));
    } else {
        spool_log_warn(c->l->ins, "TLS %s with %.*s failed: %s", what, (int)c->peer_len, c->peer,
                       err);
    }
}

static void tls_note_subject(sock_conn *c)
{
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    if (cert == NULL) {
        return;
    }
    char buf[256];
    X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
    c->tls_subject = strdup(buf);
    X509_free(cert);
}

int sock__tls_conn_data(sock_conn *c, const uint8_t *p, size_t n)
{
    if (!c->tls_first_seen && n > 0) {
        c->tls_first_seen = 1;
        if (p[0] != 0x16) {
            char shown[33];
            size_t k = 0;
            for (size_t i = 0; i < n && k < sizeof(shown) - 1; i++) {
                shown[k++] = (p[i] >= 32 && p[i] < 127) ? (char)p[i] : '.';
            }
            shown[k] = '\0';
            spool_counter_add(c->l->c_tls_fail, 1);
            spool_log_warn(c->l->ins,
                           "rejected %.*s: plain text on a TLS listener (first bytes \"%s\" are "
                           "not a TLS handshake)",
                           (int)c->peer_len, c->peer, shown);
            return -1;
        }
    }
    if (BIO_write(c->rbio, p, (int)n) != (int)n) {
        return -1;
    }
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            tls_flush(c); /* an alert, or the next handshake flight */
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                return 0;
            }
            tls_fail(c, "handshake");
            return -1;
        }
        tls_note_subject(c);
        spool_log_debug(c->l->ins, "TLS session with %.*s: %s %s", (int)c->peer_len, c->peer,
                        SSL_get_version(c->ssl), SSL_get_cipher(c->ssl));
    }
    for (;;) {
        int r = SSL_read(c->ssl, c->l->tbuf, (int)sizeof(c->l->tbuf));
        if (r > 0) {
            if (sock__conn_plain(c, c->l->tbuf, (size_t)r) < 0) {
                return -1;
            }
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        tls_flush(c);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            return 0;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            return -1; /* close_notify: the peer is done */
        }
        tls_fail(c, "read");
        return -1;
    }
}
