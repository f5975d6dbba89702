/*
 * parse_time.c: timestamps of the `parse` processor (parse_time.h).
 *
 * RFC 3339 and the Unix formats are read by hand (they are the common case and cost a
 * few nanoseconds). So are strptime formats made only of the conversions of access and
 * application logs (%Y %m %d %e %H %M %S %y %b %h %B %z %f %T %F %R %n %t %%), with
 * strptime's rules (blanks in the format match any run of blanks, numbers may be preceded
 * by blanks and stop before exceeding their range, month names in English, either
 * length; a fuzz target checks both agree); glibc's
 * strptime(3) is several times slower (locale-aware name matching). Other formats go
 * through strptime on a NUL-terminated copy of at most PARSE_TIME_TEXT_MAX bytes, split
 * at `%f`, which strptime lacks. The
 * broken-down time becomes epoch milliseconds through days_from_civil (no timegm, no
 * time zone database: a time without an offset is UTC).
 *
 * Not done: time zone names (%Z is read and ignored by strptime, the time stays UTC),
 * leap seconds (":60" is one second after ":59", i.e. the next minute's ":00").
 */
#define _GNU_SOURCE /* strptime, tm_gmtoff */
#include "parse_time.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define YEAR_UNSET (-100000) /* tm_year before strptime: "the format has no year" */
#define DAY_MS 86400000LL

static int fail(char *why, size_t cap, const char *msg)
{
    snprintf(why, cap, "%s", msg);
    return -EINVAL;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The year (Gregorian) of a time in ms since the epoch. */
static int64_t year_of(int64_t ms)
{
    int64_t z = (ms >= 0 ? ms / DAY_MS : (ms - DAY_MS + 1) / DAY_MS) + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    return yoe + era * 400 + (m <= 2);
}

static int64_t civil_ms(int64_t y, int mon, int d, int h, int mi, int s)
{
    return ((days_from_civil(y, mon, d) * 24 + h) * 60 + mi) * 60000LL + s * 1000LL;
}

static int digits(const uint8_t *p, size_t n, size_t at, size_t count, int *v)
{
    int x = 0;
    if (at + count > n) {
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        if (p[at + i] < '0' || p[at + i] > '9') {
            return -1;
        }
        x = x * 10 + (p[at + i] - '0');
    }
    *v = x;
    return 0;
}

/* A fraction of a second at p[*at]: 1-9 digits, more are read and ignored. Returns ms. */
static int fraction_ms(const uint8_t *p, size_t n, size_t *at)
{
    int ms = 0, k = 0;
    while (*at < n && p[*at] >= '0' && p[*at] <= '9') {
        if (k < 3) {
            ms = ms * 10 + (p[*at] - '0');
        }
        k++;
        (*at)++;
    }
    for (; k < 3; k++) {
        ms *= 10;
    }
    return ms;
}

static int parse_rfc3339(const uint8_t *s, size_t n, int64_t *ms, char *why, size_t cap)
{
    int y, mo, d, h, mi, se;
    size_t at = 19;
    if (n < 19 || digits(s, n, 0, 4, &y) || s[4] != '-' || digits(s, n, 5, 2, &mo) || s[7] != '-' ||
        digits(s, n, 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        digits(s, n, 11, 2, &h) || s[13] != ':' || digits(s, n, 14, 2, &mi) || s[16] != ':' ||
        digits(s, n, 17, 2, &se)) {
        return fail(why, cap, "not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.frac][Z|+hh:mm])");
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
        return fail(why, cap, "RFC 3339 time out of range");
    }
    int frac = 0;
    if (at < n && (s[at] == '.' || s[at] == ',')) {
        at++;
        size_t f0 = at;
        frac = fraction_ms(s, n, &at);
        if (at == f0) {
            return fail(why, cap, "RFC 3339 time: expected digits after the decimal point");
        }
    }
    int64_t off = 0;
    if (at < n && (s[at] == 'Z' || s[at] == 'z')) {
        at++;
    } else if (at < n && (s[at] == '+' || s[at] == '-')) {
        int oh, om;
        int sign = s[at] == '-' ? -1 : 1;
        if (digits(s, n, at + 1, 2, &oh)) {
            return fail(why, cap, "RFC 3339 time: bad offset");
        }
        at += 3;
        if (at < n && s[at] == ':') {
            at++;
        }
        if (digits(s, n, at, 2, &om) || oh > 23 || om > 59) {
            return fail(why, cap, "RFC 3339 time: bad offset");
        }
        at += 2;
        off = sign * (oh * 3600000LL + om * 60000LL);
    }
    if (at != n) {
        return fail(why, cap, "RFC 3339 time: unexpected text after the time");
    }
    *ms = civil_ms(y, mo, d, h, mi, se) + frac - off;
    return 0;
}

/* Unix time in units of 10^-scale seconds (scale 0, 3, 6, 9), with an optional fraction. */
static int parse_unix(const uint8_t *s, size_t n, int scale, int64_t *ms, char *why, size_t cap)
{
    size_t at = 0;
    int neg = 0;
    int64_t whole = 0;
    if (at < n && s[at] == '-') {
        neg = 1;
        at++;
    }
    size_t w0 = at;
    while (at < n && s[at] >= '0' && s[at] <= '9') {
        int d = s[at++] - '0';
        if (whole > (INT64_MAX - d) / 10) {
            return fail(why, cap, "Unix time out of range");
        }
        whole = whole * 10 + d;
    }
    if (at == w0) {
        return fail(why, cap, "not a Unix time (digits, with an optional fraction)");
    }
    int64_t frac_ms = 0;
    if (at < n && s[at] == '.') {
        at++;
        size_t f0 = at;
        frac_ms = fraction_ms(s, n, &at);
        if (at == f0) {
            return fail(why, cap, "Unix time: expected digits after the decimal point");
        }
    }
    if (at != n) {
        return fail(why, cap, "Unix time: unexpected text after the number");
    }
    int64_t v;
    switch (scale) {
    case 0:
        if (whole > INT64_MAX / 1000) {
            return fail(why, cap, "Unix time out of range");
        }
        v = whole * 1000 + frac_ms;
        break;
    case 3:
        v = whole;
        break;
    case 6:
        v = whole / 1000;
        break;
    default:
        v = whole / 1000000;
        break;
    }
    *ms = neg ? -v : v;
    return 0;
}

int parse_time_compile(const char *text, parse_time_format *out, char *why, size_t why_cap,
                       size_t *column)
{
    size_t col_unused;
    if (!column) {
        column = &col_unused;
    }
    *column = 0;
    static const struct {
        const char *name;
        parse_time_kind kind;
    } named[] = {{"rfc3339", PARSE_TIME_RFC3339},
                 {"unix", PARSE_TIME_UNIX},
                 {"unix_ms", PARSE_TIME_UNIX_MS},
                 {"unix_us", PARSE_TIME_UNIX_US},
                 {"unix_ns", PARSE_TIME_UNIX_NS}};
    static const char allowed[] = "aAbBcCdDeFgGhHIjmMnpRStTuUVwWyYzZ%f";
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        if (strcmp(text, named[i].name) == 0) {
            out->kind = named[i].kind;
            return 0;
        }
    }
    out->kind = PARSE_TIME_STRPTIME;
    size_t len = strlen(text), convs = 0, f_at = 0;
    if (len >= PARSE_TIME_FMT_MAX) {
        snprintf(why, why_cap, "the format is longer than %d bytes", PARSE_TIME_FMT_MAX - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '%') {
            continue;
        }
        size_t at = i++;
        if (i < len && (text[i] == 'E' || text[i] == 'O')) {
            i++;
        }
        if (i >= len || !strchr(allowed, text[i]) || text[i] == '\0') {
            snprintf(why, why_cap,
                     "unknown conversion '%.*s' at position %zu of the format (rfc3339, unix, "
                     "unix_ms, unix_us, unix_ns, or strptime conversions plus %%f)",
                     (int)(i < len ? i - at + 1 : i - at), text + at, at + 1);
            *column = at + 1;
            return -EINVAL;
        }
        if (text[i] == 'f') {
            if (out->has_frac) {
                snprintf(why, why_cap, "%%f appears twice (position %zu of the format)", at + 1);
                *column = at + 1;
                return -EINVAL;
            }
            out->has_frac = 1;
            f_at = at;
        }
        if (text[i] == 's') {
            snprintf(why, why_cap, "use the format 'unix' for epoch seconds, not %%s");
            *column = at + 1;
            return -EINVAL;
        }
        convs += text[i] != '%';
    }
    if (convs == 0) {
        snprintf(why, why_cap,
                 "unknown time format '%s': expected rfc3339, unix, unix_ms, unix_us, unix_ns "
                 "or a strptime format such as %%d/%%b/%%Y:%%H:%%M:%%S %%z",
                 text);
        return -EINVAL;
    }
    memcpy(out->whole, text, len + 1);
    out->fast = 1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '%') {
            i++;
            out->fast &= strchr("YmdeHMSybhBzfTFRnt%", text[i]) != NULL;
        }
    }
    if (out->has_frac) {
        memcpy(out->before, text, f_at);
        out->before[f_at] = '\0';
        snprintf(out->after, sizeof(out->after), "%s", text + f_at + 2);
    } else {
        memcpy(out->before, text, len + 1);
    }
    return 0;
}

/* The broken-down time the hand-written reader fills. */
typedef struct fast_tm {
    int64_t year; /* YEAR_UNSET until read */
    int mon;      /* 1-12 */
    int mday, hour, min, sec, frac_ms;
    int64_t off_ms; /* the zone's offset east of UTC */
} fast_tm;

static int is_blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* A number of 1 to `width` digits in [lo, hi], after optional blanks (as strptime). */
static int fast_num(const uint8_t *s, size_t n, size_t *at, int width, int lo, int hi, int *v)
{
    int x = 0, k = 0;
    while (*at < n && is_blank(s[*at])) {
        (*at)++;
    }
    /* As glibc: stop at `width` digits, or when one more digit would exceed hi. */
    while (k < width && *at < n && s[*at] >= '0' && s[*at] <= '9' && (k == 0 || x * 10 <= hi)) {
        x = x * 10 + (s[(*at)++] - '0');
        k++;
    }
    if (k == 0 || x < lo || x > hi) {
        return -1;
    }
    *v = x;
    return 0;
}

/* An English month name, full or abbreviated, any case: its index, or -1. */
static int fast_name(const uint8_t *s, size_t n, size_t *at, const char *const *names, int count)
{
    if (n - *at < 3) {
        return -1;
    }
    /* The names' first three letters differ: at most one candidate, whose full name is
     * taken when it is there (strptime takes the longest match). */
    uint8_t a = s[*at] | 0x20, b = s[*at + 1] | 0x20, c = s[*at + 2] | 0x20;
    for (int k = 0; k < count; k++) {
        const char *m = names[k];
        if ((uint8_t)m[0] == a && (uint8_t)m[1] == b && (uint8_t)m[2] == c) {
            size_t full = strlen(m);
            if (n - *at >= full && strncasecmp((const char *)s + *at, m, full) == 0) {
                *at += full;
            } else {
                *at += 3;
            }
            return k;
        }
    }
    return -1;
}

/* %z as glibc reads it: "Z", or a sign and hh, hhmm or hh:mm (hours up to 99). */
static int fast_zone(const uint8_t *s, size_t n, size_t *at, int64_t *off)
{
    int val = 0, k = 0;
    while (*at < n && is_blank(s[*at])) {
        (*at)++;
    }
    if (*at < n && s[*at] == 'Z') {
        (*at)++;
        *off = 0;
        return 0;
    }
    if (*at >= n || (s[*at] != '+' && s[*at] != '-')) {
        return -1;
    }
    int sign = s[(*at)++] == '-' ? -1 : 1;
    while (k < 4 && *at < n && s[*at] >= '0' && s[*at] <= '9') {
        val = val * 10 + (s[(*at)++] - '0');
        k++;
        if (k == 2 && *at + 1 < n && s[*at] == ':' && s[*at + 1] >= '0' && s[*at + 1] <= '9') {
            (*at)++;
        }
    }
    if (k == 2) {
        val *= 100;
    } else if (k != 4 || val % 100 >= 60) {
        return -1;
    }
    *off = sign * ((val / 100) * 3600000LL + (val % 100) * 60000LL);
    return 0;
}

/* Reads s by fmt (conversions of the fast set only). 0, or -1 when s does not match. */
static int fast_read(const char *fmt, const uint8_t *s, size_t n, size_t *at, fast_tm *t)
{
    static const char *const months[] = {"january",   "february", "march",    "april",
                                         "may",       "june",     "july",     "august",
                                         "september", "october",  "november", "december"};
    int v = 0;
    for (const char *f = fmt; *f; f++) {
        if (is_blank((uint8_t)*f)) {
            while (*at < n && is_blank(s[*at])) {
                (*at)++;
            }
            continue;
        }
        if (*f != '%') {
            if (*at >= n || s[*at] != (uint8_t)*f) {
                return -1;
            }
            (*at)++;
            continue;
        }
        int rc = 0;
        switch (*++f) {
        case 'Y':
            rc = fast_num(s, n, at, 4, 0, 9999, &v);
            t->year = v;
            break;
        case 'y':
            rc = fast_num(s, n, at, 2, 0, 99, &v);
            t->year = v < 69 ? 2000 + v : 1900 + v;
            break;
        case 'm':
            rc = fast_num(s, n, at, 2, 1, 12, &t->mon);
            break;
        case 'd':
        case 'e':
            rc = fast_num(s, n, at, 2, 1, 31, &t->mday);
            break;
        case 'H':
            rc = fast_num(s, n, at, 2, 0, 23, &t->hour);
            break;
        case 'M':
            rc = fast_num(s, n, at, 2, 0, 59, &t->min);
            break;
        case 'S':
            rc = fast_num(s, n, at, 2, 0, 61, &t->sec);
            break;
        case 'b':
        case 'h':
        case 'B':
            v = fast_name(s, n, at, months, 12);
            t->mon = v + 1;
            rc = v < 0 ? -1 : 0;
            break;
        case 'z':
            rc = fast_zone(s, n, at, &t->off_ms);
            break;
        case 'f': {
            size_t f0 = *at;
            t->frac_ms = fraction_ms(s, n, at);
            rc = *at == f0 ? -1 : 0;
            break;
        }
        case 'T':
            rc = fast_read("%H:%M:%S", s, n, at, t);
            break;
        case 'F':
            rc = fast_read("%Y-%m-%d", s, n, at, t);
            break;
        case 'R':
            rc = fast_read("%H:%M", s, n, at, t);
            break;
        case 'n':
        case 't':
            while (*at < n && is_blank(s[*at])) {
                (*at)++;
            }
            break;
        default: /* '%' */
            rc = *at < n && s[*at] == '%' ? ((*at)++, 0) : -1;
            break;
        }
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* The time from its parts; a missing year is the one closest before now (a day of
 * slack). */
static int64_t assemble(int64_t year, int mon, int mday, int hour, int min, int sec, int frac,
                        int64_t off, int64_t now_ms)
{
    if (year == YEAR_UNSET) {
        year = year_of(now_ms);
        if (civil_ms(year, mon, mday, hour, min, sec) - off > now_ms + DAY_MS) {
            year--;
        }
    }
    return civil_ms(year, mon, mday, hour, min, sec) + frac - off;
}

static int parse_fast(const parse_time_format *f, const uint8_t *s, size_t n, int64_t now_ms,
                      int64_t *ms, char *why, size_t cap)
{
    fast_tm t = {YEAR_UNSET, 1, 1, 0, 0, 0, 0, 0};
    size_t at = 0;
    if (fast_read(f->whole, s, n, &at, &t) < 0) {
        return fail(why, cap, "does not match the format");
    }
    if (at != n) {
        return fail(why, cap, "unexpected text after the time");
    }
    *ms = assemble(t.year, t.mon, t.mday, t.hour, t.min, t.sec, t.frac_ms, t.off_ms, now_ms);
    return 0;
}

static int parse_strptime(const parse_time_format *f, const uint8_t *s, size_t n, int64_t now_ms,
                          int64_t *ms, char *why, size_t cap)
{
    char buf[PARSE_TIME_TEXT_MAX + 1];
    struct tm tm;
    if (n > PARSE_TIME_TEXT_MAX) {
        return fail(why, cap, "time text too long");
    }
    if (memchr(s, '\0', n)) {
        return fail(why, cap, "time text holds a NUL byte");
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = YEAR_UNSET;
    tm.tm_mday = 1;
    const char *p = f->before[0] ? strptime(buf, f->before, &tm) : buf;
    int frac = 0;
    if (p && f->has_frac) {
        size_t at = (size_t)(p - buf), f0 = at;
        frac = fraction_ms((const uint8_t *)buf, n, &at);
        if (at == f0) {
            return fail(why, cap, "does not match the format: expected digits for %f");
        }
        p = buf + at;
        if (f->after[0]) {
            p = strptime(p, f->after, &tm);
        }
    }
    if (!p) {
        return fail(why, cap, "does not match the format");
    }
    if (*p != '\0') {
        return fail(why, cap, "unexpected text after the time");
    }
    int64_t off = tm.tm_gmtoff * 1000LL;
    if (tm.tm_year == YEAR_UNSET) {
        /* No year: the one that puts the time closest before now (a day of slack). */
        int64_t y = year_of(now_ms);
        int64_t t = civil_ms(y, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (t - off > now_ms + DAY_MS) {
            y--;
        }
        *ms = civil_ms(y, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec) + frac - off;
        return 0;
    }
    *ms =
        civil_ms(tm.tm_year + 1900LL, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec) +
        frac - off;
    return 0;
}

int parse_time(const parse_time_format *f, const uint8_t *s, size_t len, int64_t now_ms,
               int64_t *ms, char *why, size_t why_cap)
{
    switch (f->kind) {
    case PARSE_TIME_RFC3339:
        return parse_rfc3339(s, len, ms, why, why_cap);
    case PARSE_TIME_UNIX:
        return parse_unix(s, len, 0, ms, why, why_cap);
    case PARSE_TIME_UNIX_MS:
        return parse_unix(s, len, 3, ms, why, why_cap);
    case PARSE_TIME_UNIX_US:
        return parse_unix(s, len, 6, ms, why, why_cap);
    case PARSE_TIME_UNIX_NS:
        return parse_unix(s, len, 9, ms, why, why_cap);
    default:
        if (f->fast) {
            return parse_fast(f, s, len, now_ms, ms, why, why_cap);
        }
        return parse_strptime(f, s, len, now_ms, ms, why, why_cap);
    }
}
