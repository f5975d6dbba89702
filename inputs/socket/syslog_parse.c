/*
 * syslog_parse.c: RFC 5424 (strict) and RFC 3164 (lenient) syslog parsing.
 *
 * Invariants: every span points inside the input; nothing is allocated and
 * the input is never written; every index is checked against the end
 * before it is read (the parser is fuzzed). RFC 5424 field limits are the
 * RFC's (HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32, SD-NAME 32
 * printable US-ASCII bytes). An RFC 5424 message that breaks a rule is
 * reported as unparseable with the rule in `error`, not guessed at.
 *
 * RFC 3164 is a description of practice, not a grammar: we accept
 * "<PRI>", then optionally "Mmm dd hh:mm:ss " (or an RFC 3339 timestamp,
 * as rsyslog's forwarding template writes it), then optionally a hostname,
 * then optionally "TAG[PID]: ", and the rest is the MSG. A token right
 * after the timestamp that ends in ':' or holds '[' is the tag, not a host
 * (local senders such as logger(1) on /dev/log send no hostname).
 *
 * It does not: validate UTF-8, convert character sets, or resolve names.
 */
#include "syslog_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct cur {
    const uint8_t *p;
    const uint8_t *end;
} cur;

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static int is_print(uint8_t c)
{
    return c >= 33 && c <= 126;
}

/* Reads exactly k digits into *v. */
static int rd_digits(cur *c, int k, int *v)
{
    if (c->end - c->p < k) {
        return -1;
    }
    int x = 0;
    for (int i = 0; i < k; i++) {
        if (!is_digit(c->p[i])) {
            return -1;
        }
        x = x * 10 + (c->p[i] - '0');
    }
    c->p += k;
    *v = x;
    return 0;
}

static int rd_char(cur *c, uint8_t ch)
{
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 0;
    }
    return -1;
}

static int days_in_month(int year, int mon)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon == 2 && year > 0 && (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))) {
        return 29;
    }
    if (mon == 2 && year == 0) {
        return 29;
    }
    return d[mon - 1];
}

static int time_valid(const syslog_time *t)
{
    return t->mon >= 1 && t->mon <= 12 && t->day >= 1 && t->day <= days_in_month(t->year, t->mon) &&
           t->hour <= 23 && t->min <= 59 && t->sec <= 60;
}

/* RFC 3339 as RFC 5424 restricts it: YYYY-MM-DDTHH:MM:SS[.1-6 digits](Z|+HH:MM). */
static int rd_rfc3339(cur *c, syslog_time *t)
{
    memset(t, 0, sizeof(*t));
    if (rd_digits(c, 4, &t->year) || rd_char(c, '-') || rd_digits(c, 2, &t->mon) ||
        rd_char(c, '-') || rd_digits(c, 2, &t->day)) {
        return -1;
    }
    if (c->p >= c->end || (*c->p != 'T' && *c->p != 't')) {
        return -1;
    }
    c->p++;
    if (rd_digits(c, 2, &t->hour) || rd_char(c, ':') || rd_digits(c, 2, &t->min) ||
        rd_char(c, ':') || rd_digits(c, 2, &t->sec)) {
        return -1;
    }
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        int k = 0;
        int us = 0;
        while (c->p < c->end && is_digit(*c->p)) {
            if (k < 6) {
                us = us * 10 + (*c->p - '0');
            }
            k++;
            c->p++;
        }
        if (k == 0 || k > 9) {
            return -1;
        }
        for (int i = k; i < 6; i++) {
            us *= 10;
        }
        t->usec = us;
    }
    if (c->p >= c->end) {
        return -1;
    }
    if (*c->p == 'Z' || *c->p == 'z') {
        c->p++;
        t->tz_known = 1;
    } else if (*c->p == '+' || *c->p == '-') {
        int sign = *c->p == '-' ? -1 : 1;
        int hh;
        int mm;
        c->p++;
        if (rd_digits(c, 2, &hh) || rd_char(c, ':') || rd_digits(c, 2, &mm) || hh > 23 || mm > 59) {
            return -1;
        }
        t->tz_known = 1;
        t->tz_offset_min = sign * (hh * 60 + mm);
    } else {
        return -1;
    }
    return time_valid(t) ? 0 : -1;
}

static const char *const month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* RFC 3164: "Mmm dd hh:mm:ss" with dd space- or zero-padded. */
static int rd_bsd_time(cur *c, syslog_time *t)
{
    memset(t, 0, sizeof(*t));
    if (c->end - c->p < 15) {
        return -1;
    }
    int mon = 0;
    for (int i = 0; i < 12; i++) {
        if (memcmp(c->p, month_names[i], 3) == 0) {
            mon = i + 1;
            break;
        }
    }
    if (mon == 0 || c->p[3] != ' ') {
        return -1;
    }
    c->p += 4;
    int day;
    if (*c->p == ' ') {
        c->p++;
        if (rd_digits(c, 1, &day)) {
            return -1;
        }
    } else if (rd_digits(c, 2, &day)) {
        return -1;
    }
    t->mon = mon;
    t->day = day;
    if (rd_char(c, ' ') || rd_digits(c, 2, &t->hour) || rd_char(c, ':') ||
        rd_digits(c, 2, &t->min) || rd_char(c, ':') || rd_digits(c, 2, &t->sec)) {
        return -1;
    }
    return time_valid(t) ? 0 : -1;
}

/* A printable token of 1..max bytes up to SP or the end; "-" means nil. */
static int rd_field(cur *c, size_t max, syslog_span *out)
{
    const uint8_t *s = c->p;
    while (c->p < c->end && *c->p != ' ') {
        if (!is_print(*c->p)) {
            return -1;
        }
        c->p++;
    }
    size_t n = (size_t)(c->p - s);
    if (n == 0 || n > max) {
        return -1;
    }
    if (n == 1 && s[0] == '-') {
        out->p = NULL;
        out->n = 0;
    } else {
        out->p = s;
        out->n = n;
    }
    return 0;
}

/* SD-NAME: 1..32 printable bytes except '=', SP, ']' and '"'. */
static int rd_sd_name(cur *c)
{
    const uint8_t *s = c->p;
    while (c->p < c->end && is_print(*c->p) && *c->p != '=' && *c->p != ']' && *c->p != '"') {
        c->p++;
    }
    size_t n = (size_t)(c->p - s);
    return n >= 1 && n <= 32 ? 0 : -1;
}

/* A quoted PARAM-VALUE; leaves c after the closing quote. */
static int rd_sd_value(cur *c)
{
    if (rd_char(c, '"')) {
        return -1;
    }
    while (c->p < c->end) {
        uint8_t ch = *c->p;
        if (ch == '\\' && c->end - c->p >= 2 &&
            (c->p[1] == '"' || c->p[1] == '\\' || c->p[1] == ']')) {
            c->p += 2;
            continue;
        }
        c->p++;
        if (ch == '"') {
            return 0;
        }
    }
    return -1;
}

/* STRUCTURED-DATA: "-" or one or more SD-ELEMENTs. */
static const char *rd_sd(cur *c, syslog_span *sd)
{
    if (c->p < c->end && *c->p == '-') {
        c->p++;
        sd->p = NULL;
        sd->n = 0;
        return NULL;
    }
    const uint8_t *s = c->p;
    if (c->p >= c->end || *c->p != '[') {
        return "rfc5424: invalid STRUCTURED-DATA";
    }
    while (c->p < c->end && *c->p == '[') {
        c->p++;
        if (rd_sd_name(c)) {
            return "rfc5424: invalid SD-ID";
        }
        while (c->p < c->end && *c->p == ' ') {
            c->p++;
            if (rd_sd_name(c) || rd_char(c, '=') || rd_sd_value(c)) {
                return "rfc5424: invalid SD-PARAM";
            }
        }
        if (rd_char(c, ']')) {
            return "rfc5424: unterminated SD-ELEMENT";
        }
    }
    sd->p = s;
    sd->n = (size_t)(c->p - s);
    return NULL;
}

/* "<PRI>": returns 0 and the value, or a reason. */
static const char *rd_pri(cur *c, int *pri)
{
    if (c->p >= c->end || *c->p != '<') {
        return "no PRI: message does not start with '<'";
    }
    c->p++;
    int v = 0;
    int k = 0;
    const uint8_t *s = c->p;
    while (c->p < c->end && is_digit(*c->p) && k < 4) {
        v = v * 10 + (*c->p - '0');
        c->p++;
        k++;
    }
    if (k == 0 || k > 3 || c->p >= c->end || *c->p != '>') {
        return "invalid PRI: expected 1-3 digits and '>'";
    }
    if (k > 1 && s[0] == '0') {
        return "invalid PRI: leading zero";
    }
    if (v > 191) {
        return "invalid PRI: greater than 191";
    }
    c->p++;
    *pri = v;
    return NULL;
}

static const char *parse_5424(cur *c, syslog_msg *m)
{
    /* VERSION "1" SP already consumed. */
    if (c->p < c->end && *c->p == '-') {
        c->p++;
    } else if (rd_rfc3339(c, &m->time)) {
        return "rfc5424: invalid TIMESTAMP";
    } else {
        m->has_time = 1;
    }
    if (rd_char(c, ' ') || rd_field(c, 255, &m->hostname)) {
        return "rfc5424: invalid HOSTNAME";
    }
    if (rd_char(c, ' ') || rd_field(c, 48, &m->appname)) {
        return "rfc5424: invalid APP-NAME";
    }
    if (rd_char(c, ' ') || rd_field(c, 128, &m->procid)) {
        return "rfc5424: invalid PROCID";
    }
    if (rd_char(c, ' ') || rd_field(c, 32, &m->msgid)) {
        return "rfc5424: invalid MSGID";
    }
    if (rd_char(c, ' ')) {
        return "rfc5424: missing STRUCTURED-DATA";
    }
    const char *err = rd_sd(c, &m->sd);
    if (err != NULL) {
        return err;
    }
    if (c->p < c->end) {
        if (*c->p != ' ') {
            return "rfc5424: no space after STRUCTURED-DATA";
        }
        c->p++;
    }
    if (c->end - c->p >= 3 && c->p[0] == 0xEF && c->p[1] == 0xBB && c->p[2] == 0xBF) {
        m->has_bom = 1;
        c->p += 3;
    }
    m->msg.p = c->p;
    m->msg.n = (size_t)(c->end - c->p);
    return NULL;
}

/* RFC 3164 TAG[PID]: at c; on success sets appname/procid and skips ": ". */
static int rd_tag(cur *c, syslog_msg *m)
{
    const uint8_t *s = c->p;
    const uint8_t *q = s;
    while (q < c->end && q - s <= 48 && is_print(*q) && *q != ':' && *q != '[') {
        q++;
    }
    if (q == s || q - s > 48 || q >= c->end) {
        return -1;
    }
    syslog_span tag = {s, (size_t)(q - s)};
    syslog_span pid = {NULL, 0};
    if (*q == '[') {
        const uint8_t *ps = ++q;
        while (q < c->end && *q != ']' && is_print(*q) && q - ps <= 128) {
            q++;
        }
        if (q >= c->end || *q != ']' || q == ps) {
            return -1;
        }
        pid.p = ps;
        pid.n = (size_t)(q - ps);
        q++;
    }
    if (q >= c->end || *q != ':') {
        return -1;
    }
    q++;
    if (q < c->end && *q == ' ') {
        q++;
    }
    m->appname = tag;
    m->procid = pid;
    c->p = q;
    return 0;
}

static void parse_3164(cur *c, syslog_msg *m)
{
    cur t = *c;
    if (rd_bsd_time(&t, &m->time) == 0 && t.p < t.end && *t.p == ' ') {
        m->has_time = 1;
        c->p = t.p + 1;
    } else {
        t = *c;
        if (rd_rfc3339(&t, &m->time) == 0 && t.p < t.end && *t.p == ' ') {
            m->has_time = 1;
            c->p = t.p + 1;
        } else {
            memset(&m->time, 0, sizeof(m->time));
        }
    }
    if (m->has_time) {
        /* A hostname: a token followed by a space that is not itself the tag. */
        const uint8_t *q = c->p;
        int tagish = 0;
        while (q < c->end && *q != ' ') {
            if (*q == '[' || *q == ':' || !is_print(*q)) {
                tagish = 1;
            }
            q++;
        }
        if (!tagish && q > c->p && q < c->end && q - c->p <= 255) {
            m->hostname.p = c->p;
            m->hostname.n = (size_t)(q - c->p);
            c->p = q + 1;
        }
    }
    cur g = *c;
    if (rd_tag(&g, m) == 0) {
        *c = g;
    }
    m->msg.p = c->p;
    m->msg.n = (size_t)(c->end - c->p);
}

int syslog_parse(const uint8_t *p, size_t n, syslog_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->facility = -1;
    m->severity = -1;
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == '\0')) {
        n--;
    }
    cur c = {p, p + n};
    int pri = 0;
    const char *err = rd_pri(&c, &pri);
    if (err == NULL) {
        m->facility = pri >> 3;
        m->severity = pri & 7;
        if (c.end - c.p >= 3 && c.p[0] == '1' && c.p[1] == ' ' &&
            (is_digit(c.p[2]) || c.p[2] == '-')) {
            c.p += 2;
            m->format = SYSLOG_FMT_RFC5424;
            err = parse_5424(&c, m);
        } else {
            m->format = SYSLOG_FMT_RFC3164;
            parse_3164(&c, m);
        }
    }
    if (err != NULL) {
        memset(m, 0, sizeof(*m));
        m->facility = -1;
        m->severity = -1;
        m->format = SYSLOG_FMT_NONE;
        m->error = err;
        m->msg.p = p;
        m->msg.n = n;
        return -EINVAL;
    }
    return 0;
}

/* Local time in year (since 1900) to ms; 0 if that date does not exist. */
static int64_t bsd_ms(const struct tm *base, int year, int usec)
{
    struct tm x = *base;
    x.tm_year = year;
    x.tm_isdst = -1;
    if (x.tm_mon == 1 && x.tm_mday == 29 && days_in_month(year + 1900, 2) != 29) {
        return 0;
    }
    time_t s = mktime(&x);
    if (s == (time_t)-1) {
        return 0;
    }
    return (int64_t)s * 1000 + usec / 1000;
}

int64_t syslog_time_ms(const syslog_msg *m, int64_t now_ms)
{
    if (!m->has_time) {
        return 0;
    }
    const syslog_time *t = &m->time;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    if (t->year > 0 && t->tz_known) {
        tm.tm_year = t->year - 1900;
        time_t s = timegm(&tm);
        return ((int64_t)s - (int64_t)t->tz_offset_min * 60) * 1000 + t->usec / 1000;
    }
    time_t now = (time_t)(now_ms / 1000);
    struct tm lt;
    localtime_r(&now, &lt);
    /* This year, unless that is more than a week ahead (then last year) or
     * almost a year behind (a January message a little early: next year). */
    for (int dy = 0; dy >= -1; dy--) {
        int64_t ms = bsd_ms(&tm, lt.tm_year + dy, t->usec);
        if (ms == 0) {
            continue;
        }
        if (dy == 0 && ms > now_ms + 7LL * 86400 * 1000) {
            continue;
        }
        if (dy == 0 && ms < now_ms - 358LL * 86400 * 1000) {
            int64_t next = bsd_ms(&tm, lt.tm_year + 1, t->usec);
            return next != 0 ? next : ms;
        }
        return ms;
    }
    return 0;
}

void syslog_sd_begin(syslog_sd_iter *it, syslog_span sd)
{
    it->p = sd.p;
    it->end = sd.p ? sd.p + sd.n : NULL;
    it->id.p = NULL;
    it->id.n = 0;
    it->in_element = 0;
}

int syslog_sd_next(syslog_sd_iter *it, syslog_span *id, syslog_span *name, syslog_span *value)
{
    cur c = {it->p, it->end};
    if (c.p == NULL) {
        return 0;
    }
    for (;;) {
        if (!it->in_element) {
            if (c.p >= c.end || *c.p != '[') {
                it->p = NULL;
                return 0;
            }
            c.p++;
            const uint8_t *s = c.p;
            if (rd_sd_name(&c)) {
                it->p = NULL;
                return 0;
            }
            it->id.p = s;
            it->id.n = (size_t)(c.p - s);
            it->in_element = 1;
            if (c.p < c.end && *c.p == ']') {
                /* An element without parameters. */
                c.p++;
                it->in_element = 0;
                it->p = c.p;
                *id = it->id;
                name->p = NULL;
                name->n = 0;
                value->p = NULL;
                value->n = 0;
                return 1;
            }
        }
        if (c.p < c.end && *c.p == ']') {
            c.p++;
            it->in_element = 0;
            continue;
        }
        if (rd_char(&c, ' ')) {
            it->p = NULL;
            return 0;
        }
        const uint8_t *ns = c.p;
        if (rd_sd_name(&c)) {
            it->p = NULL;
            return 0;
        }
        name->p = ns;
        name->n = (size_t)(c.p - ns);
        if (rd_char(&c, '=')) {
            it->p = NULL;
            return 0;
        }
        const uint8_t *vs = c.p + 1;
        if (rd_sd_value(&c)) {
            it->p = NULL;
            return 0;
        }
        value->p = vs;
        value->n = (size_t)(c.p - 1 - vs);
        *id = it->id;
        it->p = c.p;
        return 1;
    }
}

size_t syslog_sd_unescape(const uint8_t *p, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n && (p[i + 1] == '"' || p[i + 1] == '\\' || p[i + 1] == ']')) {
            i++;
        }
        out[o++] = p[i];
    }
    return o;
}
