/*
 * syslog_parse.h: RFC 5424 and RFC 3164 syslog messages, parsed in place.
 *
 * syslog_parse() fills a syslog_msg whose fields are spans pointing into
 * the caller's buffer: it never allocates and never writes to the input.
 * A message is RFC 5424 when "<PRI>1 " is followed by a timestamp or "-";
 * any other message with a valid PRI is read as RFC 3164 (leniently, as
 * relays do: timestamp, hostname and tag are each optional). Without a
 * valid PRI the message is unparseable: format SYSLOG_FMT_NONE, `error`
 * says why and `msg` is the whole input.
 */
#ifndef SOCK_SYSLOG_PARSE_H
#define SOCK_SYSLOG_PARSE_H

#include <stddef.h>
#include <stdint.h>

typedef struct syslog_span {
    const uint8_t *p; /* into the parsed buffer; NULL when absent */
    size_t n;         /* bytes */
} syslog_span;

typedef enum syslog_format {
    SYSLOG_FMT_NONE = 0,    /* not syslog: see error */
    SYSLOG_FMT_RFC3164 = 1, /* BSD syslog */
    SYSLOG_FMT_RFC5424 = 2, /* IETF syslog */
} syslog_format;

typedef struct syslog_time {
    int year; /* 4 digits; 0 when the message has none (RFC 3164) */
    int mon;  /* 1..12 */
    int day;  /* 1..31 */
    int hour, min, sec;
    int usec;          /* microseconds, 0..999999 */
    int tz_known;      /* 1 if tz_offset_min is meaningful; else the sender's local time */
    int tz_offset_min; /* minutes east of UTC */
} syslog_time;

typedef struct syslog_msg {
    syslog_format format;
    int facility; /* 0..23, -1 when there is no PRI */
    int severity; /* 0..7, -1 when there is no PRI */
    int has_time; /* 1 if `time` holds the message's timestamp */
    syslog_time time;
    syslog_span hostname; /* p NULL when absent or "-" */
    syslog_span appname;  /* RFC 3164: the TAG */
    syslog_span procid;   /* RFC 3164: the [pid] after the tag */
    syslog_span msgid;
    syslog_span sd;    /* raw STRUCTURED-DATA ("[id k=\"v\"]..."), p NULL when "-" */
    syslog_span msg;   /* the MSG, without a UTF-8 BOM; the whole input when unparseable */
    int has_bom;       /* RFC 5424: MSG began with a UTF-8 BOM (removed from msg) */
    const char *error; /* static reason when format is SYSLOG_FMT_NONE, else NULL */
} syslog_msg;

/* Parses p[0..n). Trailing CR, LF and NUL bytes are ignored. Returns 0, or
 * -EINVAL when the message is not syslog (m->error says why, m->msg is the
 * whole input). Pure: no allocation, no global state. Any thread. */
int syslog_parse(const uint8_t *p, size_t n, syslog_msg *m);

/*
 * The message's timestamp in ms since the epoch, or 0 when it has none.
 * RFC 3164 times have no year and no zone: they are read as local time in
 * now's year, or the year before when that would put them more than a week
 * in the future (a December message read in January), or the year after
 * when they would be more than 358 days old. Thread-safe.
 */
int64_t syslog_time_ms(const syslog_msg *m, int64_t now_ms);

/* Iterates the parameters of raw structured data (syslog_msg.sd). */
typedef struct syslog_sd_iter {
    const uint8_t *p; /* current position */
    const uint8_t *end;
    syslog_span id; /* the current element's SD-ID */
    int in_element; /* inside [...] */
} syslog_sd_iter;

void syslog_sd_begin(syslog_sd_iter *it, syslog_span sd);
/* Next parameter: its element id, name and escaped value (between the
 * quotes). Elements without parameters are reported once with name.p
 * NULL. Returns 1, or 0 at the end (or on malformed data). */
int syslog_sd_next(syslog_sd_iter *it, syslog_span *id, syslog_span *name, syslog_span *value);
/* Removes the \" \\ \] escapes of a PARAM-VALUE; out has room for n bytes.
 * Returns the unescaped length. */
size_t syslog_sd_unescape(const uint8_t *p, size_t n, uint8_t *out);

#endif /* SOCK_SYSLOG_PARSE_H */
