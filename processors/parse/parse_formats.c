/*
 * parse_formats.c: the syslog and access-log scanners of the `parse` processor
 * (parse_formats.h). Single pass, no allocation except the scratch that unescaped
 * structured-data values and their dotted names are built in.
 *
 * Invariants:
 * - Every read is bounds-checked against the input length; the input need not be
 *   NUL-terminated.
 * - Emitted names and values point into the input, into static names, or into the
 *   scratch; the scratch is reserved once per parse (bounded by twice the input plus a
 *   constant), so a pointer into it never moves during the parse.
 * - An error names the offset of the byte that made it one.
 *
 * Not done: RFC 3164's many vendor variants beyond "time host tag: message" and
 * "time tag: message"; RFC 5424 PARAM-VALUE UTF-8 validation.
 */
#include "parse_formats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

#ifndef PARSE_REALLOC
#define PARSE_REALLOC(p, n) realloc((p), (n))
#endif

/* One parse's state. */
typedef struct scan {
    const uint8_t *in;
    size_t n;
    size_t pos; /* next byte to read */
    parse_emit_fn emit;
    void *arg;
    parse_error *err;
} scan;

static int bad(scan *s, size_t off, const char *msg)
{
    s->err->offset = off > s->n ? s->n : off;
    snprintf(s->err->message, sizeof(s->err->message), "%s", msg);
    return -EINVAL;
}

static int put(scan *s, const char *name, const uint8_t *val, size_t len)
{
    return s->emit(s->arg, name, strlen(name), val, len);
}

/* Emits a token unless it is the RFC 5424 nil value "-". */
static int put_unless_nil(scan *s, const char *name, const uint8_t *val, size_t len)
{
    if (len == 1 && val[0] == '-') {
        return 0;
    }
    return put(s, name, val, len);
}

/* Reads bytes up to the next space (or the end); returns the token's length. */
static size_t token(scan *s)
{
    size_t start = s->pos;
    while (s->pos < s->n && s->in[s->pos] != ' ') {
        s->pos++;
    }
    return s->pos - start;
}

/* Consumes exactly one space; -EINVAL naming `what` comes next otherwise. */
static int space(scan *s, const char *what)
{
    if (s->pos >= s->n || s->in[s->pos] != ' ') {
        char msg[96];
        snprintf(msg, sizeof(msg), "expected a space before %s", what);
        return bad(s, s->pos, msg);
    }
    s->pos++;
    return 0;
}

static int sc_reserve(parse_scratch *sc, size_t need)
{
    if (need <= sc->cap) {
        return 0;
    }
    size_t cap = sc->cap ? sc->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t *p = PARSE_REALLOC(sc->data, cap);
    if (!p) {
        return -ENOMEM;
    }
    sc->data = p;
    sc->cap = cap;
    return 0;
}

/* ---- syslog ---- */

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* "<PRI>": emits facility and severity. Called with s->pos at '<'. */
static int syslog_pri(scan *s)
{
    size_t start = s->pos++;
    int pri = 0, digits = 0;
    while (s->pos < s->n && is_digit(s->in[s->pos]) && digits < 3) {
        pri = pri * 10 + (s->in[s->pos++] - '0');
        digits++;
    }
    if (digits == 0 || s->pos >= s->n || s->in[s->pos] != '>' || pri > 191) {
        return bad(s, start, "bad <PRI>: expected '<' then a number 0-191 then '>'");
    }
    s->pos++;
    const char *fac = spool_syslog_facility_name(pri >> 3);
    const char *sev = spool_syslog_severity_name(pri & 7);
    int rc = put(s, "facility", (const uint8_t *)fac, strlen(fac));
    return rc ? rc : put(s, "severity", (const uint8_t *)sev, strlen(sev));
}

/* RFC 5424 structured data: "-" or one or more [ID PARAM="VALUE" ...]. */
static int syslog_sd(scan *s, parse_scratch *sc)
{
    size_t start = s->pos;
    int rc;
    if (s->pos < s->n && s->in[s->pos] == '-') {
        s->pos++;
        return 0;
    }
    if (s->pos >= s->n || s->in[s->pos] != '[') {
        return bad(s, s->pos, "expected structured data: '-' or '['");
    }
    /* Names are "sd." ID "." PARAM, values at most the input: both fit in 2n + 8. */
    rc = sc_reserve(sc, 2 * s->n + 8);
    if (rc < 0) {
        return rc;
    }
    while (s->pos < s->n && s->in[s->pos] == '[') {
        size_t id_at = ++s->pos;
        while (s->pos < s->n && s->in[s->pos] > ' ' && s->in[s->pos] != ']' &&
               s->in[s->pos] != '=' && s->in[s->pos] != '"') {
            s->pos++;
        }
        size_t id_len = s->pos - id_at;
        if (id_len == 0) {
            return bad(s, id_at, "expected an SD-ID after '['");
        }
        while (s->pos < s->n && s->in[s->pos] == ' ') {
            s->pos++;
            size_t p_at = s->pos;
            while (s->pos < s->n && s->in[s->pos] > ' ' && s->in[s->pos] != ']' &&
                   s->in[s->pos] != '=' && s->in[s->pos] != '"') {
                s->pos++;
            }
            size_t p_len = s->pos - p_at;
            if (p_len == 0 || s->pos + 1 >= s->n || s->in[s->pos] != '=' ||
                s->in[s->pos + 1] != '"') {
                return bad(s, p_at, "expected PARAM=\"VALUE\" in structured data");
            }
            s->pos += 2;
            /* Name: sd.ID.PARAM, then the unescaped value, in the scratch. */
            uint8_t *name = sc->data;
            size_t name_len = 0;
            memcpy(name, "sd.", 3);
            name_len = 3;
            memcpy(name + name_len, s->in + id_at, id_len);
            name_len += id_len;
            name[name_len++] = '.';
            memcpy(name + name_len, s->in + p_at, p_len);
            name_len += p_len;
            uint8_t *val = name + name_len;
            size_t val_len = 0, q_at = s->pos - 1;
            for (;;) {
                if (s->pos >= s->n) {
                    return bad(s, q_at, "unterminated PARAM-VALUE in structured data");
                }
                uint8_t c = s->in[s->pos++];
                if (c == '"') {
                    break;
                }
                if (c == '\\' && s->pos < s->n &&
                    (s->in[s->pos] == '"' || s->in[s->pos] == '\\' || s->in[s->pos] == ']')) {
                    c = s->in[s->pos++];
                }
                val[val_len++] = c;
            }
            rc = s->emit(s->arg, (const char *)name, name_len, val, val_len);
            if (rc) {
                return rc;
            }
        }
        if (s->pos >= s->n || s->in[s->pos] != ']') {
            return bad(s, s->pos, "expected ']' closing an SD-ELEMENT");
        }
        s->pos++;
    }
    return put(s, "sd", s->in + start, s->pos - start);
}

static int syslog_5424(scan *s, parse_scratch *sc)
{
    static const char *const names[] = {"time", "host", "app", "procid", "msgid"};
    int rc;
    while (s->pos < s->n && is_digit(s->in[s->pos])) {
        s->pos++; /* VERSION */
    }
    for (size_t k = 0; k < 5; k++) {
        if ((rc = space(s, names[k])) < 0) {
            return rc;
        }
        size_t at = s->pos, len = token(s);
        if (len == 0) {
            char msg[64];
            snprintf(msg, sizeof(msg), "expected the %s field (or '-')", names[k]);
            return bad(s, at, msg);
        }
        if ((rc = put_unless_nil(s, names[k], s->in + at, len)) != 0) {
            return rc;
        }
    }
    if ((rc = space(s, "structured data")) < 0) {
        return rc;
    }
    if ((rc = syslog_sd(s, sc)) != 0) {
        return rc;
    }
    if (s->pos < s->n) {
        if (s->in[s->pos] != ' ') {
            return bad(s, s->pos, "expected a space after structured data");
        }
        s->pos++;
        if (s->n - s->pos >= 3 && memcmp(s->in + s->pos, "\xef\xbb\xbf", 3) == 0) {
            s->pos += 3;
        }
        return put(s, "message", s->in + s->pos, s->n - s->pos);
    }
    return 0;
}

/* "Mmm dd hh:mm:ss" (day space-padded or not): its length, or 0. */
static size_t bsd_time_len(const uint8_t *p, size_t n)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (n < 14) {
        return 0;
    }
    int month = 0;
    for (int m = 0; m < 12; m++) {
        month |= memcmp(p, months + 3 * m, 3) == 0;
    }
    if (!month || p[3] != ' ') {
        return 0;
    }
    size_t i = 4;
    if (p[i] == ' ') {
        i++;
    }
    if (!is_digit(p[i])) {
        return 0;
    }
    i++;
    if (i < n && is_digit(p[i])) {
        i++;
    }
    if (i + 9 > n || p[i] != ' ') {
        return 0;
    }
    const uint8_t *t = p + i + 1;
    if (!is_digit(t[0]) || !is_digit(t[1]) || t[2] != ':' || !is_digit(t[3]) || !is_digit(t[4]) ||
        t[5] != ':' || !is_digit(t[6]) || !is_digit(t[7])) {
        return 0;
    }
    return i + 9;
}

/* An RFC 3339 timestamp token (rsyslog's high precision format): its length, or 0. */
static size_t iso_time_len(const uint8_t *p, size_t n)
{
    if (n < 19 || !is_digit(p[0]) || !is_digit(p[3]) || p[4] != '-' || p[7] != '-' ||
        (p[10] != 'T' && p[10] != 't') || p[13] != ':') {
        return 0;
    }
    size_t i = 19;
    while (i < n && p[i] != ' ') {
        i++;
    }
    return i;
}

/* A tag "app[procid]:" or "app:" ends with ':' (a '[' may hold the procid). */
static int is_tag(const uint8_t *p, size_t len)
{
    return len > 1 && p[len - 1] == ':';
}

static int syslog_tag_message(scan *s)
{
    int rc;
    size_t at = s->pos, len = token(s);
    const uint8_t *t = s->in + at;
    if (!is_tag(t, len)) {
        /* No tag: the rest is the message. */
        return put(s, "message", t, s->n - at);
    }
    size_t app_len = len - 1;
    if (app_len >= 2 && t[app_len - 1] == ']') {
        const uint8_t *open = NULL;
        for (size_t k = app_len - 1; k-- > 0;) {
            if (t[k] == '[') {
                open = t + k;
                break;
            }
        }
        if (open && open > t) {
            size_t pid_len = (size_t)(t + app_len - 1 - (open + 1));
            if ((rc = put(s, "app", t, (size_t)(open - t))) != 0) {
                return rc;
            }
            if ((rc = put(s, "procid", open + 1, pid_len)) != 0) {
                return rc;
            }
            app_len = 0;
        }
    }
    if (app_len && (rc = put(s, "app", t, app_len)) != 0) {
        return rc;
    }
    if (s->pos < s->n) {
        s->pos++; /* the space after the tag */
    }
    return put(s, "message", s->in + s->pos, s->n - s->pos);
}

static int syslog_3164(scan *s)
{
    int rc;
    size_t at = s->pos;
    size_t tl = bsd_time_len(s->in + at, s->n - at);
    if (!tl) {
        tl = iso_time_len(s->in + at, s->n - at);
    }
    if (!tl) {
        return bad(s, at, "expected a syslog timestamp (\"Mmm dd hh:mm:ss\" or RFC 3339)");
    }
    if ((rc = put(s, "time", s->in + at, tl)) != 0) {
        return rc;
    }
    s->pos += tl;
    if ((rc = space(s, "the host name")) < 0) {
        return rc;
    }
    /* The token after the time is the host unless it is already the tag. */
    size_t h_at = s->pos, h_len = token(s);
    if (h_len == 0) {
        return bad(s, h_at, "expected a host name after the timestamp");
    }
    if (is_tag(s->in + h_at, h_len)) {
        s->pos = h_at;
        return syslog_tag_message(s);
    }
    if ((rc = put(s, "host", s->in + h_at, h_len)) != 0) {
        return rc;
    }
    if (s->pos >= s->n) {
        return 0;
    }
    s->pos++;
    return syslog_tag_message(s);
}

int parse_syslog(const uint8_t *in, size_t n, parse_scratch *sc, parse_emit_fn emit, void *arg,
                 parse_error *err)
{
    scan s = {in, n, 0, emit, arg, err};
    int rc;
    while (s.n > 0 && (in[s.n - 1] == '\n' || in[s.n - 1] == '\r')) {
        s.n--;
    }
    if (s.n == 0) {
        return bad(&s, 0, "empty line");
    }
    if (in[0] == '<') {
        if ((rc = syslog_pri(&s)) != 0) {
            return rc;
        }
        if (s.pos < s.n && is_digit(in[s.pos]) && s.pos + 1 < s.n &&
            (in[s.pos + 1] == ' ' || (is_digit(in[s.pos + 1]) && s.pos + 2 < s.n &&
                                      (in[s.pos + 2] == ' ' || is_digit(in[s.pos + 2]))))) {
            return syslog_5424(&s, sc);
        }
    }
    return syslog_3164(&s);
}

/* ---- access logs ---- */

/* A quoted field "...": a backslash escapes the next byte. Sets *at and *len to the bytes
 * between the quotes. */
static int quoted(scan *s, const char *what, size_t *at, size_t *len)
{
    if (s->pos >= s->n || s->in[s->pos] != '"') {
        char msg[64];
        snprintf(msg, sizeof(msg), "expected '\"' opening %s", what);
        return bad(s, s->pos, msg);
    }
    size_t open = s->pos++;
    *at = s->pos;
    for (;;) {
        const uint8_t *q = memchr(s->in + s->pos, '"', s->n - s->pos);
        if (!q) {
            char msg[64];
            snprintf(msg, sizeof(msg), "unterminated %s", what);
            return bad(s, open, msg);
        }
        size_t qi = (size_t)(q - s->in), bs = 0;
        while (qi - bs > *at && s->in[qi - bs - 1] == '\\') {
            bs++;
        }
        s->pos = qi + 1;
        if (bs % 2 == 0) {
            *len = qi - *at;
            return 0;
        }
    }
}

/* Emits method, path and protocol when the request is "METHOD TARGET [PROTOCOL]". */
static int split_request(scan *s, const uint8_t *r, size_t len)
{
    const uint8_t *sp1 = memchr(r, ' ', len);
    if (!sp1 || sp1 == r) {
        return 0;
    }
    const uint8_t *end = r + len, *target = sp1 + 1, *sp2 = NULL;
    for (const uint8_t *p = end; p-- > target;) {
        if (*p == ' ') {
            sp2 = p;
            break;
        }
    }
    int rc = put(s, "method", r, (size_t)(sp1 - r));
    if (rc) {
        return rc;
    }
    if (sp2 && sp2 > target && end - sp2 > 5 && memcmp(sp2 + 1, "HTTP/", 5) == 0) {
        rc = put(s, "path", target, (size_t)(sp2 - target));
        return rc ? rc : put(s, "protocol", sp2 + 1, (size_t)(end - sp2 - 1));
    }
    return put(s, "path", target, (size_t)(end - target));
}

int parse_access(const uint8_t *in, size_t n, parse_access_kind kind, parse_emit_fn emit, void *arg,
                 parse_error *err)
{
    scan s = {in, n, 0, emit, arg, err};
    size_t at, len;
    int rc;
    while (s.n > 0 && (in[s.n - 1] == '\n' || in[s.n - 1] == '\r' || in[s.n - 1] == ' ')) {
        s.n--;
    }
    at = s.pos;
    if ((len = token(&s)) == 0) {
        return bad(&s, at, "expected the client address");
    }
    if ((rc = put(&s, "client", in + at, len)) != 0) {
        return rc;
    }
    if ((rc = space(&s, "the ident field")) < 0) {
        return rc;
    }
    at = s.pos;
    if ((len = token(&s)) == 0) {
        return bad(&s, at, "expected the ident field ('-' when unknown)");
    }
    if (kind != PARSE_ACCESS_NGINX && (rc = put(&s, "ident", in + at, len)) != 0) {
        return rc;
    }
    if ((rc = space(&s, "the user field")) < 0) {
        return rc;
    }
    at = s.pos;
    if ((len = token(&s)) == 0) {
        return bad(&s, at, "expected the user field ('-' when unknown)");
    }
    if ((rc = put(&s, "user", in + at, len)) != 0) {
        return rc;
    }
    if ((rc = space(&s, "the time")) < 0) {
        return rc;
    }
    if (s.pos >= s.n || in[s.pos] != '[') {
        return bad(&s, s.pos, "expected '[' opening the time");
    }
    at = ++s.pos;
    const uint8_t *close = memchr(in + at, ']', s.n - at);
    if (!close) {
        return bad(&s, at - 1, "unterminated time: no ']'");
    }
    s.pos = (size_t)(close - in) + 1;
    if ((rc = put(&s, "time", in + at, (size_t)(close - (in + at)))) != 0) {
        return rc;
    }
    if ((rc = space(&s, "the request")) < 0 || (rc = quoted(&s, "the request", &at, &len)) < 0) {
        return rc;
    }
    if ((rc = put(&s, "request", in + at, len)) != 0 ||
        (rc = split_request(&s, in + at, len)) != 0) {
        return rc;
    }
    if ((rc = space(&s, "the status")) < 0) {
        return rc;
    }
    at = s.pos;
    len = token(&s);
    if (len != 3 || !is_digit(in[at]) || !is_digit(in[at + 1]) || !is_digit(in[at + 2])) {
        return bad(&s, at, "expected a 3-digit status");
    }
    if ((rc = put(&s, "status", in + at, len)) != 0) {
        return rc;
    }
    if ((rc = space(&s, "the size")) < 0) {
        return rc;
    }
    at = s.pos;
    if ((len = token(&s)) == 0) {
        return bad(&s, at, "expected the response size ('-' when none)");
    }
    if ((rc = put(&s, "size", in + at, len)) != 0) {
        return rc;
    }
    if (kind != PARSE_ACCESS_COMMON) {
        if ((rc = space(&s, "the referer")) < 0 ||
            (rc = quoted(&s, "the referer", &at, &len)) < 0) {
            return rc;
        }
        if ((rc = put(&s, "referer", in + at, len)) != 0) {
            return rc;
        }
        if ((rc = space(&s, "the user agent")) < 0 ||
            (rc = quoted(&s, "the user agent", &at, &len)) < 0) {
            return rc;
        }
        if ((rc = put(&s, "agent", in + at, len)) != 0) {
            return rc;
        }
    }
    if (s.pos != s.n) {
        return bad(&s, s.pos, "unexpected bytes after the last field");
    }
    return 0;
}
