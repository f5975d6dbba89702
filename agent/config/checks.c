/*
 * checks.c: what plugins' check() callbacks (and the service section) use
 * to find, at `spool check` time, the errors `spool run` would otherwise
 * meet only when it starts: addresses and URLs (syntax, port range,
 * IPv4/IPv6 literals, scheme), files that must be readable, directories
 * that must exist, and TLS material loaded with OpenSSL as a TLS endpoint
 * loads it (certificate chain, private key, that they match, CA bundle).
 *
 * Each spool_check_* reports at most one error, on its option, through
 * spool_config_error (so with the option's file:line:column), and returns
 * -EINVAL; 0 when fine. Nothing here connects, and only addresses to
 * listen on are resolved (spool__listen_resolvable): elsewhere a name that
 * is well formed passes (DNS may differ between check and run).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config/config.h"

/* A host name: dot-separated labels of letters, digits and '-' (not at
 * either end of a label), each 1-63 bytes, 253 in all; a final dot allowed. */
static int hostname_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253) {
        return 0;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        if (ch == '.') {
            if (label == 0 || h[i - 1] == '-') {
                return 0;
            }
            label = 0;
            continue;
        }
        int alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && !(ch == '-' && label > 0) && ch != '_') {
            return 0;
        }
        if (++label > 63) {
            return 0;
        }
    }
    return h[n - 1] != '-';
}

/* Only digits and dots: meant as an IPv4 literal. */
static int looks_ipv4(const char *h, size_t n)
{
    int digits = 0;
    for (size_t i = 0; i < n; i++) {
        if (h[i] >= '0' && h[i] <= '9') {
            digits = 1;
        } else if (h[i] != '.') {
            return 0;
        }
    }
    return digits;
}

static void add_why(char *why, size_t cap, const char *fmt, const char *a, size_t alen)
{
    size_t used = strlen(why);
    if (used >= cap) {
        return;
    }
    snprintf(why + used, cap - used, fmt, used ? "; " : "", (int)alen, a);
}

int spool_parse_address(const char *text, int flags, char *host_out, size_t host_cap, int *port_out,
                        char *why, size_t cap)
{
    char host[256];
    const char *h, *port;
    size_t hn;
    long p = -1;
    why[0] = '\0';
    if (!text || !*text) {
        snprintf(why, cap, "empty address, expected host:port");
        return -EINVAL;
    }
    if (text[0] == '[') {
        const char *e = strchr(text, ']');
        if (!e) {
            snprintf(why, cap, "missing ']' after the IPv6 address");
            return -EINVAL;
        }
        h = text + 1;
        hn = (size_t)(e - h);
        if (e[1] != ':') {
            if (e[1] == '\0' && (flags & SPOOL_ADDR_PORT_OPTIONAL)) {
                port = NULL;
            } else {
                snprintf(why, cap, "expected [IPv6]:port");
                return -EINVAL;
            }
        } else {
            port = e + 2;
        }
        if (hn == 0 || hn >= sizeof(host)) {
            add_why(why, cap, "%s'%.*s' is not a valid IPv6 address", h, hn);
        } else {
            struct in6_addr a6;
            memcpy(host, h, hn);
            host[hn] = '\0';
            if (inet_pton(AF_INET6, host, &a6) != 1) {
                add_why(why, cap, "%s'%.*s' is not a valid IPv6 address", h, hn);
            }
        }
    } else {
        const char *colon = strchr(text, ':');
        if (colon && strchr(colon + 1, ':')) {
            snprintf(why, cap, "an IPv6 address goes in brackets, as [::1]:port");
            return -EINVAL;
        }
        if (!colon && !(flags & SPOOL_ADDR_PORT_OPTIONAL)) {
            snprintf(why, cap, "no port, expected host:port");
            return -EINVAL;
        }
        h = text;
        hn = colon ? (size_t)(colon - text) : strlen(text);
        port = colon ? colon + 1 : NULL;
        if (hn == 1 && h[0] == '*' && (flags & SPOOL_ADDR_LISTEN)) {
            hn = 0; /* "*:port": every address, as an empty host */
        } else if (hn == 0) {
            if (!(flags & SPOOL_ADDR_LISTEN)) {
                add_why(why, cap, "%sno host before ':'%.*s", "", 0);
            }
        } else if (looks_ipv4(h, hn)) {
            struct in_addr a4;
            if (hn >= sizeof(host)) {
                add_why(why, cap, "%s'%.*s' is not a valid IPv4 address", h, hn);
            } else {
                memcpy(host, h, hn);
                host[hn] = '\0';
                if (inet_pton(AF_INET, host, &a4) != 1) {
                    add_why(why, cap, "%s'%.*s' is not a valid IPv4 address", h, hn);
                }
            }
        } else if (!hostname_ok(h, hn)) {
            add_why(why, cap, "%s'%.*s' is not a valid host name", h, hn);
        }
    }
    if (port) {
        char *end = NULL;
        errno = 0;
        p = (*port >= '0' && *port <= '9') ? strtol(port, &end, 10) : -1;
        long lo = (flags & SPOOL_ADDR_LISTEN) ? 0 : 1;
        if (p < 0 || *end != '\0' || errno) {
            p = -1;
            add_why(why, cap, "%sport '%.*s' is not a number", port, strlen(port));
        } else if (p < lo || p > 65535) {
            add_why(why, cap,
                    lo ? "%sport %.*s is out of range (1 to 65535)"
                       : "%sport %.*s is out of range (0 to 65535)",
                    port, strlen(port));
        }
    }
    if (why[0]) {
        return -EINVAL;
    }
    if (host_out) {
        if (hn >= host_cap) {
            snprintf(why, cap, "host name longer than %zu bytes", host_cap ? host_cap - 1 : 0);
            return -EINVAL;
        }
        memcpy(host_out, h, hn);
        host_out[hn] = '\0';
    }
    if (port_out) {
        *port_out = port ? (int)p : -1;
    }
    return 0;
}

int spool__address_valid(const char *text, int flags, char *why, size_t cap)
{
    return spool_parse_address(text, flags, NULL, 0, NULL, why, cap);
}

int spool__listen_resolvable(const char *text, char *why, size_t cap)
{
    char host[256];
    const char *h = text, *e;
    if (text[0] == '[') {
        return 0; /* an IPv6 literal, already checked */
    }
    e = strrchr(text, ':');
    if (!e || e == text || (size_t)(e - h) >= sizeof(host)) {
        return 0; /* no host: every address */
    }
    memcpy(host, h, (size_t)(e - h));
    host[e - h] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, "0", &hints, &res);
    if (rc != 0) {
        snprintf(why, cap, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -EINVAL;
    }
    freeaddrinfo(res);
    return 0;
}

int spool_check_address(spool_instance *ins, const char *option, const char *text, int flags)
{
    char why[512];
    if (!text) {
        return 0;
    }
    if (spool__address_valid(text, flags, why, sizeof(why)) < 0) {
        spool_config_error(ins, option, "invalid address '%s': %s", text, why);
        return -EINVAL;
    }
    return 0;
}

int spool_parse_url(const char *url, const char *const *schemes, int flags, spool_url *out,
                    char *why, size_t cap)
{
    char authority[512], list[256] = "";
    why[0] = '\0';
    if (!url || !*url) {
        snprintf(why, cap, "empty URL");
        return -EINVAL;
    }
    const char *sep = strstr(url, "://");
    int scheme = -1;
    for (size_t i = 0; schemes[i]; i++) {
        size_t n = strlen(schemes[i]);
        if (scheme < 0 && sep && (size_t)(sep - url) == n && strncasecmp(url, schemes[i], n) == 0) {
            scheme = (int)i;
        }
        size_t used = strlen(list);
        snprintf(list + used, sizeof(list) - used, "%s%s://", i ? ", " : "", schemes[i]);
    }
    if (scheme < 0) {
        snprintf(why, cap, "the scheme must be one of %s", list);
        return -EINVAL;
    }
    const char *a = sep + 3;
    size_t n = strcspn(a, "/?#");
    const char *path = a + n;
    const char *at = memchr(a, '@', n);
    if (at) { /* user:password@ */
        n -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    if (n == 0) {
        snprintf(why, cap, "no host");
        return -EINVAL;
    }
    if (n >= sizeof(authority)) {
        snprintf(why, cap, "host and port longer than %zu bytes", sizeof(authority) - 1);
        return -EINVAL;
    }
    memcpy(authority, a, n);
    authority[n] = '\0';
    spool_url u = {.scheme = scheme, .path = path};
    if (spool_parse_address(authority, flags & ~SPOOL_ADDR_LISTEN, u.host, sizeof(u.host), &u.port,
                            why, cap) < 0) {
        return -EINVAL;
    }
    if (out) {
        *out = u;
    }
    return 0;
}

int spool_check_url(spool_instance *ins, const char *option, const char *url,
                    const char *const *schemes, int flags)
{
    char why[512];
    if (!url) {
        return 0;
    }
    if (spool_parse_url(url, schemes, flags, NULL, why, sizeof(why)) < 0) {
        spool_config_error(ins, option, "invalid URL '%s': %s", url, why);
        return -EINVAL;
    }
    return 0;
}

int spool_check_column_map(spool_instance *ins, const char *option, const spool_strmap *map)
{
    int rc = 0;
    if (map->count == 0) {
        spool_config_error(ins, option,
                           "required: a mapping column: field, e.g. {ts: timestamp, msg: value}");
        rc = -EINVAL;
    }
    for (size_t i = 0; i < map->count; i++) {
        if (!map->values[i][0]) {
            spool_config_error(ins, option, "column \"%s\": empty field name", map->keys[i]);
            rc = -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(map->keys[i], map->keys[j]) == 0) {
                spool_config_error(ins, option, "column \"%s\" mapped twice", map->keys[i]);
                rc = -EINVAL;
                break;
            }
        }
    }
    return rc;
}

int spool_check_file(spool_instance *ins, const char *option, const char *path)
{
    struct stat st;
    if (!path) {
        return 0;
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        spool_config_error(ins, option, "cannot read %s: %s", path, strerror(errno));
        return -EINVAL;
    }
    int rc = 0;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        spool_config_error(ins, option, "%s is a directory, expected a file", path);
        rc = -EINVAL;
    }
    fclose(f);
    return rc;
}

int spool_check_directory(spool_instance *ins, const char *option, const char *path)
{
    struct stat st;
    if (!path) {
        return 0;
    }
    if (stat(path, &st) != 0) {
        spool_config_error(ins, option, "cannot use %s: %s", path, strerror(errno));
        return -EINVAL;
    }
    if (!S_ISDIR(st.st_mode)) {
        spool_config_error(ins, option, "%s is not a directory", path);
        return -EINVAL;
    }
    return 0;
}

/* OpenSSL's last error as text (queue cleared). */
static const char *ssl_why(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (!e) {
        snprintf(buf, cap, "not a PEM file of the expected kind");
    } else {
        const char *r = ERR_reason_error_string(e);
        /* OpenSSL's "PEM lib" says no more than this. */
        snprintf(buf, cap, "%s",
                 !r                          ? "unreadable"
                 : strcmp(r, "PEM lib") == 0 ? "no PEM block of that kind"
                                             : r);
    }
    ERR_clear_error();
    return buf;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

int spool_check_tls_files(spool_instance *ins, const char *cert_opt, const char *cert,
                          const char *key_opt, const char *key, const char *ca_opt, const char *ca)
{
    char why[256];
    int rc = 0, cert_ok = 0, key_ok = 0;
    if (spool_check_file(ins, cert_opt, cert) < 0) {
        rc = -EINVAL;
        cert = NULL;
    }
    if (spool_check_file(ins, key_opt, key) < 0) {
        rc = -EINVAL;
        key = NULL;
    }
    if (spool_check_file(ins, ca_opt, ca) < 0) {
        rc = -EINVAL;
        ca = NULL;
    }
    if (!cert && !key && !ca) {
        return rc;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        return rc; /* cannot judge; run will say */
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            spool_config_error(ins, cert_opt, "%s: not a usable PEM certificate: %s", cert,
                               ssl_why(why, sizeof(why)));
            rc = -EINVAL;
        } else {
            cert_ok = 1;
        }
    }
    if (key) {
        /* Alone first (is it a key at all?), then beside the certificate. */
        SSL_CTX *kctx = SSL_CTX_new(TLS_method());
        if (kctx) {
            SSL_CTX_set_default_passwd_cb(kctx, no_passphrase);
            if (SSL_CTX_use_PrivateKey_file(kctx, key, SSL_FILETYPE_PEM) != 1) {
                spool_config_error(ins, key_opt,
                                   "%s: not a usable PEM private key (or it needs a "
                                   "passphrase): %s",
                                   key, ssl_why(why, sizeof(why)));
                rc = -EINVAL;
            } else {
                key_ok = 1;
            }
            SSL_CTX_free(kctx);
        }
    }
    if (cert_ok && key_ok &&
        (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        spool_config_error(ins, key_opt, "%s does not match the certificate %s", key, cert);
        ERR_clear_error();
        rc = -EINVAL;
    }
    if (ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        spool_config_error(ins, ca_opt, "%s: no usable PEM CA certificate: %s", ca,
                           ssl_why(why, sizeof(why)));
        rc = -EINVAL;
    }
    SSL_CTX_free(ctx);
    return rc;
}
