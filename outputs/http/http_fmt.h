/*
 * http_fmt.h: the destination formats of the `http` output (not an API):
 * `elasticsearch` (http_es.c), `loki` (http_loki.c) and `otlp`
 * (http_otlp.c), and what they share (http_fmt.c): templates with strftime,
 * a small JSON scanner for responses, the verdict a response turns into.
 *
 * Encoding runs on the output runner's thread (flush) and uses the state's
 * scratch buffers; reading a response runs on the sender thread and only
 * reads the state, the chunk (still pending) and the request's aux bytes
 * that encoding wrote. Both are pure: no logging, no I/O, so the unit test
 * drives them with fixed records and published responses.
 */
#ifndef SPOOL_HTTP_FMT_H
#define SPOOL_HTTP_FMT_H

#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

/* The http output's formats (format option order). */
enum {
    HTTPO_FMT_SPOOL = 0,
    HTTPO_FMT_NDJSON = 1,
    HTTPO_FMT_JSON = 2,
    HTTPO_FMT_FIELDS = 3,
    HTTPO_FMT_ES = 4,
    HTTPO_FMT_LOKI = 5,
    HTTPO_FMT_OTLP = 6,
};
enum { HTTPO_ES_CREATE = 0, HTTPO_ES_INDEX = 1 };
enum { HTTPO_ID_AUTO = 0, HTTPO_ID_NONE = 1 };
enum { HTTPO_LINE_VALUE = 0, HTTPO_LINE_JSON = 1 };

#define HTTPO_FMT_NAME_MAX 1024 /* a rendered index name or label value */

/* A template over fields whose literal text may hold strftime conversions,
 * expanded with the record's timestamp in UTC ("logs-{{ host }}-%Y.%m.%d"). */
typedef struct httpo_tfmt {
    char *src;           /* the option text */
    int timed;           /* has a % conversion */
    spool_template *tpl; /* compiled src, or (timed) compiled `last` */
    char *last;          /* timed: the expansion tpl was compiled from */
    int64_t last_sec;    /* timed: the second `last` was expanded for */
} httpo_tfmt;

/* The options of the formats (filled by the core into httpo_ctx, which
 * embeds this) and the state built from them at init. */
typedef struct httpo_fmt {
    int format; /* HTTPO_FMT_ES / LOKI / OTLP (http_out.h) */
    /* elasticsearch */
    char *index;           /* template + strftime */
    int action;            /* HTTPO_ES_* */
    int id;                /* HTTPO_ID_* */
    char *timestamp_field; /* "@timestamp"; "" = none */
    /* loki */
    spool_strmap labels; /* label name -> template */
    int line_format;     /* HTTPO_LINE_* */
    spool_strmap meta;   /* structured metadata: name -> template */
    /* otlp */
    spool_strmap resource; /* attribute name -> template */
    char *severity_field;  /* field holding the level, NULL = none */

    /* built at init */
    httpo_tfmt index_t;
    spool_template **tpls;  /* labels or resource, one per entry */
    spool_template **mtpls; /* loki: structured metadata, one per entry */
    size_t *order;          /* labels: entries sorted by name */
    char **used;            /* otlp: field names the resource templates read */
    size_t nused;
    /* runner-thread scratch (encode) */
    spool_buf s1, s2;
    struct httpo_ent *ents;
    size_t ents_cap;
} httpo_fmt;

/* loki and otlp: a record of a chunk grouped by a key, the bytes [off,
 * off + len) of a scratch buffer (its label set, its resource). */
typedef struct httpo_ent {
    size_t off, len;
    int64_t ts; /* loki: the record's timestamp; otlp: 0 */
    size_t idx; /* the record's index in the chunk */
} httpo_ent;

/* What a response means for its chunk. */
typedef struct httpo_verdict {
    int result;       /* SPOOL_OK / SPOOL_RETRY / SPOOL_REJECT, -1 = the generic rule */
    size_t rejected;  /* records refused one by one (through reject()) */
    size_t retried;   /* items asking for a retry */
    int64_t partial;  /* otlp: rejectedLogRecords the server reported */
    char reason[512]; /* for a retry or a whole rejection; or the first item error */
} httpo_verdict;

typedef void (*httpo_reject_fn)(void *arg, size_t i, const char *reason);

/* Check: the format's options (templates, strftime, label names). Reports
 * with spool_config_error; warns about many labels. 0 or -EINVAL. */
int httpo_fmt_check(spool_instance *ins, const httpo_fmt *f);
/* Init: compiles the templates. 0 or -ENOMEM / -EINVAL. */
int httpo_fmt_init(httpo_fmt *f);
/* Frees what init built. Accepts a never-initialised state. */
void httpo_fmt_free(httpo_fmt *f);
/* The Content-Type of the format's bodies. */
const char *httpo_fmt_content_type(const httpo_fmt *f);
/* Appends the request body for the chunk's records to body, and to aux what
 * reading the response needs later. 0 or -ENOMEM. */
int httpo_fmt_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *body, spool_buf *aux);
/* Reads a response (body NUL-terminated at len). Calls reject(arg, i,
 * reason) for records the destination refused one by one. Sets v. */
void httpo_fmt_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                        size_t len, const spool_buf *aux, httpo_verdict *v, httpo_reject_fn reject,
                        void *arg);

/* ---- shared by the three (http_fmt.c) ---- */
/* f->ents with room for n entries, or NULL (out of memory). */
httpo_ent *httpo_ents(httpo_fmt *f, size_t n);
/* qsort_r order of httpo_ent, arg the keys' buffer: by key bytes (a prefix
 * first), then ts, then idx. */
int httpo_ent_cmp(const void *a, const void *b, void *arg);
/* 1 if a and b have the same key in base, else 0. */
int httpo_ent_same(const uint8_t *base, const httpo_ent *a, const httpo_ent *b);

int httpo_tfmt_check(spool_instance *ins, const char *option, const char *text);
int httpo_tfmt_init(httpo_tfmt *t, const char *text);
void httpo_tfmt_free(httpo_tfmt *t);
/* Renders for r into buf (cap bytes, NUL-terminated, truncated). Returns the length. */
size_t httpo_tfmt_render(httpo_tfmt *t, const spool_record *r, const char *topic, char *buf,
                         size_t cap);

/* RFC 3339 UTC with milliseconds: "2024-01-02T03:04:05.678Z" (24 chars + NUL; 64 for any year). */
void httpo_rfc3339(int64_t ms, char out[64]);

/* JSON scanning over [p, e): each returns the position after what it read,
 * or NULL when the text is not what it expects. */
const char *hj_ws(const char *p, const char *e);
const char *hj_skip(const char *p, const char *e);
/* A string at p (at its quote): *s and *n are its raw bytes (escapes kept). */
const char *hj_str(const char *p, const char *e, const char **s, size_t *n);
/* Objects: hj_open(p, '{') enters; hj_key gives the next key (returns the
 * position of its value) or NULL with *end set at the end of the object. */
const char *hj_open(const char *p, const char *e, char c);
const char *hj_key(const char *p, const char *e, const char **k, size_t *kn, const char **end);
/* Arrays: hj_item gives the position of the next element, or NULL with *end
 * set after the ']'. */
const char *hj_item(const char *p, const char *e, const char **end);
int hj_eq(const char *s, size_t n, const char *lit);
/* Copies a JSON string's raw bytes into out (cap), decoding the simple escapes. */
void hj_copy(char *out, size_t cap, const char *s, size_t n);

#endif /* SPOOL_HTTP_FMT_H */
