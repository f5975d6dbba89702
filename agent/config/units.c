/*
 * units.c: sizes, durations and booleans as users write them, and back.
 *
 * Sizes (result in bytes, 0..INT64_MAX):
 *   a number, optional blanks, an optional unit, matched case-insensitively:
 *     (none), B                    1
 *     K, KB      M, MB      G, GB      T, TB      1000^1..4 (SI, as disks)
 *     Ki, KiB    Mi, MiB    Gi, GiB    Ti, TiB    1024^1..4 (IEC)
 *   "4096" = "4096B" = 4096; "4k" = "4KB" = 4000; "64MiB" = 67108864.
 *   The number may have a fraction ("1.5GiB"); the result is rounded down
 *   to a whole byte. No sign, no exponent, no thousands separators.
 *
 * Durations (result in milliseconds, 0..INT64_MAX):
 *   one or more <number><unit> parts, optionally separated by blanks, with
 *   units matched case-sensitively: us, ms, s, m (minute), h, d, w (7 days).
 *   "1h30m", "250ms", "7d", "1.5s". Parts add up; the total is rounded up
 *   to a whole millisecond ("250us" = 1ms), so a non-zero duration never
 *   becomes 0. A bare number is rejected ("duration needs a unit"), except
 *   "0", which is 0 in any unit.
 *
 * Booleans: true/false, yes/no, on/off, case-insensitive.
 *
 * Every overflow of int64 is an error (-ERANGE), never a wrap. Pure
 * functions, thread-safe.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"

typedef unsigned __int128 u128;

/* A decimal number as written: whole + frac / frac_div. */
typedef struct number {
    u128 whole;    /* integer part */
    u128 frac;     /* fraction digits as an integer */
    u128 frac_div; /* 10^(number of fraction digits) */
} number;

/* Parses "<digits>[.<digits>]" at *p and advances *p past it. Returns 0,
 * -EINVAL when there is no number there, -ERANGE when it is absurdly large. */
static int parse_number(const char **p, number *n)
{
    const char *s = *p;
    n->whole = 0;
    n->frac = 0;
    n->frac_div = 1;
    if (!isdigit((unsigned char)*s)) {
        return -EINVAL;
    }
    while (isdigit((unsigned char)*s)) {
        n->whole = n->whole * 10 + (u128)(*s - '0');
        if (n->whole > (u128)INT64_MAX * 1000000) {
            return -ERANGE;
        }
        s++;
    }
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s)) {
            return -EINVAL;
        }
        while (isdigit((unsigned char)*s)) {
            if (n->frac_div < (u128)1000000000000000000ULL) { /* 18 digits are plenty */
                n->frac = n->frac * 10 + (u128)(*s - '0');
                n->frac_div *= 10;
            }
            s++;
        }
    }
    *p = s;
    return 0;
}

/* whole*mult + floor(frac*mult/frac_div), or -ERANGE beyond `limit`. */
static int scale(const number *n, uint64_t mult, u128 limit, u128 *out)
{
    if (n->whole > limit / mult) {
        return -ERANGE;
    }
    u128 v = n->whole * mult + n->frac * mult / n->frac_div;
    if (v > limit) {
        return -ERANGE;
    }
    *out = v;
    return 0;
}

static void skip_blanks(const char **p)
{
    while (**p == ' ' || **p == '\t') {
        (*p)++;
    }
}

static const struct {
    const char *unit;
    uint64_t mult;
} size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1000ULL},
    {"kb", 1000ULL},
    {"m", 1000000ULL},
    {"mb", 1000000ULL},
    {"g", 1000000000ULL},
    {"gb", 1000000000ULL},
    {"t", 1000000000000ULL},
    {"tb", 1000000000000ULL},
    {"ki", 1ULL << 10},
    {"kib", 1ULL << 10},
    {"mi", 1ULL << 20},
    {"mib", 1ULL << 20},
    {"gi", 1ULL << 30},
    {"gib", 1ULL << 30},
    {"ti", 1ULL << 40},
    {"tib", 1ULL << 40},
};

int spool_parse_size(const char *text, int64_t *bytes)
{
    const char *p = text;
    number n;
    skip_blanks(&p);
    int rc = parse_number(&p, &n);
    if (rc < 0) {
        return rc;
    }
    skip_blanks(&p);
    const char *unit = p;
    size_t ulen = 0;
    while (isalpha((unsigned char)unit[ulen])) {
        ulen++;
    }
    p = unit + ulen;
    skip_blanks(&p);
    if (*p != '\0') {
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
        if (strlen(size_units[i].unit) == ulen &&
            strncasecmp(size_units[i].unit, unit, ulen) == 0) {
            u128 v;
            rc = scale(&n, size_units[i].mult, (u128)INT64_MAX, &v);
            if (rc == 0) {
                *bytes = (int64_t)v;
            }
            return rc;
        }
    }
    return -EINVAL;
}

static const struct {
    const char *unit;
    uint64_t us; /* microseconds per unit */
} duration_units[] = {
    {"us", 1ULL},
    {"ms", 1000ULL},
    {"s", 1000000ULL},
    {"m", 60ULL * 1000000},
    {"h", 3600ULL * 1000000},
    {"d", 86400ULL * 1000000},
    {"w", 7ULL * 86400 * 1000000},
};

int spool_parse_duration(const char *text, int64_t *ms)
{
    const char *p = text;
    const u128 limit = (u128)INT64_MAX * 1000; /* in microseconds */
    u128 total = 0;
    int parts = 0;
    skip_blanks(&p);
    while (*p != '\0') {
        number n;
        int rc = parse_number(&p, &n);
        if (rc < 0) {
            return rc;
        }
        const char *unit = p;
        size_t ulen = 0;
        while (isalpha((unsigned char)unit[ulen])) {
            ulen++;
        }
        p = unit + ulen;
        skip_blanks(&p);
        if (ulen == 0) {
            /* A bare number: only a lone 0 is allowed. */
            if (parts == 0 && *p == '\0' && n.whole == 0 && n.frac == 0) {
                *ms = 0;
                return 0;
            }
            return -EINVAL;
        }
        size_t i, nunits = sizeof(duration_units) / sizeof(duration_units[0]);
        for (i = 0; i < nunits; i++) {
            if (strlen(duration_units[i].unit) == ulen &&
                strncmp(duration_units[i].unit, unit, ulen) == 0) {
                break;
            }
        }
        if (i == nunits) {
            return -EINVAL;
        }
        u128 v;
        rc = scale(&n, duration_units[i].us, limit, &v);
        if (rc < 0) {
            return rc;
        }
        total += v;
        if (total > limit) {
            return -ERANGE;
        }
        parts++;
    }
    if (parts == 0) {
        return -EINVAL;
    }
    *ms = (int64_t)((total + 999) / 1000);
    return 0;
}

int spool_parse_bool(const char *text, int *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

size_t spool_format_size(int64_t bytes, char *buf, size_t cap)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {
        {"TiB", 1LL << 40},      {"GiB", 1LL << 30},   {"MiB", 1LL << 20}, {"KiB", 1LL << 10},
        {"TB", 1000000000000LL}, {"GB", 1000000000LL}, {"MB", 1000000LL},  {"KB", 1000LL},
    };
    int n;
    size_t best = sizeof(units) / sizeof(units[0]);
    /* The unit giving the smallest exact number; binary wins ties. */
    for (size_t i = 0; bytes > 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        if (bytes % units[i].mult == 0 &&
            (best == sizeof(units) / sizeof(units[0]) || units[i].mult > units[best].mult)) {
            best = i;
        }
    }
    if (best < sizeof(units) / sizeof(units[0])) {
        n = snprintf(buf, cap, "%" PRId64 "%s", bytes / units[best].mult, units[best].unit);
        return n < 0 ? 0 : (size_t)n;
    }
    n = snprintf(buf, cap, "%" PRId64 "B", bytes);
    return n < 0 ? 0 : (size_t)n;
}

size_t spool_format_duration(int64_t ms, char *buf, size_t cap)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {
        {"d", 86400000LL}, {"h", 3600000LL}, {"m", 60000LL}, {"s", 1000LL}, {"ms", 1LL},
    };
    size_t len = 0;
    if (ms <= 0) {
        int n = snprintf(buf, cap, ms == 0 ? "0s" : "%" PRId64 "ms", ms);
        return n < 0 ? 0 : (size_t)n;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        int64_t q = ms / units[i].ms;
        if (q == 0) {
            continue;
        }
        ms -= q * units[i].ms;
        int n = snprintf(len < cap ? buf + len : NULL, len < cap ? cap - len : 0, "%" PRId64 "%s",
                         q, units[i].unit);
        if (n < 0) {
            return len;
        }
        len += (size_t)n;
    }
    return len;
}
