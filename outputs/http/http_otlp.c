/*
 * http_otlp.c: the `otlp` format of the http output: OTLP/HTTP logs in
 * the protobuf JSON mapping (POST /v1/logs, application/json):
 *   {"resourceLogs":[{"resource":{"attributes":[{"key":"service.name",
 *     "value":{"stringValue":"web"}}]},"scopeLogs":[{"scope":{"name":"spool"},
 *     "logRecords":[{"timeUnixNano":"..","observedTimeUnixNano":"..",
 *     "severityNumber":9,"severityText":"info","body":{"stringValue":".."},
 *     "attributes":[{"key":"..","value":{"stringValue":".."}}]}]}]}]}
 * Resource attributes come from the `resource` option (name -> template);
 * records with the same resource share one resourceLogs entry (in order of
 * first appearance, records in offset order inside). Every other field
 * (header) becomes a log record attribute (the first of a repeated name),
 * except the fields the resource templates and severity_field read. Times
 * are the record's timestamp in ns (observed = the same: when spool first
 * stored it). Severity: severity_field's value mapped per the OTel data
 * model (trace 1, debug 5, info 9, warn 13, error 17, fatal 21, and the
 * syslog names and numbers 0-7), severityText the value as it is.
 *
 * Response: 2xx is delivered; a partialSuccess with rejectedLogRecords > 0
 * is reported (the caller logs and counts it: OTLP does not say which
 * records); 429, 502, 503, 504 retry, other 4xx reject (the generic rule).
 */
#define _GNU_SOURCE /* qsort_r, strncasecmp */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_fmt.h"

int httpo_otlp_check(spool_instance *ins, const httpo_fmt *f)
{
    int rc = 0;
    for (size_t i = 0; i < f->resource.count; i++) {
        const char *err = NULL;
        spool_template *t = spool_template_compile(f->resource.values[i], &err);
        if (!t) {
            spool_config_error(ins, "resource", "%s: %s: %s", f->resource.keys[i],
                               f->resource.values[i], err);
            rc = -EINVAL;
        }
        spool_template_destroy(t);
    }
    if (f->severity_field && !f->severity_field[0]) {
        spool_config_error(ins, "severity_field", "an empty field name");
        rc = -EINVAL;
    }
    return rc;
}

static int add_used(httpo_fmt *f, const char *s, size_t n)
{
    char **u = realloc(f->used, (f->nused + 1) * sizeof(*u));
    if (!u) {
        return -ENOMEM;
    }
    f->used = u;
    if (!(u[f->nused] = strndup(s, n))) {
        return -ENOMEM;
    }
    f->nused++;
    return 0;
}

/* The fields the resource templates and severity_field read. */
int httpo_otlp_init(httpo_fmt *f)
{
    for (size_t i = 0; i < f->resource.count; i++) {
        const char *p = f->resource.values[i];
        while ((p = strstr(p, "{{")) != NULL) {
            const char *q = strstr(p, "}}");
            if (!q) {
                break;
            }
            const char *a = p + 2, *b = q;
            while (a < b && (*a == ' ' || *a == '\t')) {
                a++;
            }
            while (b > a && (b[-1] == ' ' || b[-1] == '\t')) {
                b--;
            }
            if (add_used(f, a, (size_t)(b - a)) < 0) {
                return -ENOMEM;
            }
            p = q + 2;
        }
    }
    if (f->severity_field && add_used(f, f->severity_field, strlen(f->severity_field)) < 0) {
        return -ENOMEM;
    }
    return 0;
}

/* OTel SeverityNumber for a level name or a syslog severity 0-7; 0 = unknown. */
static int severity_number(const uint8_t *s, size_t n)
{
    static const struct {
        const char *name;
        int num;
    } map[] = {
        {"trace", 1},   {"debug", 5},     {"info", 9},     {"information", 9}, {"informational", 9},
        {"notice", 10}, {"warn", 13},     {"warning", 13}, {"error", 17},      {"err", 17},
        {"crit", 21},   {"critical", 21}, {"alert", 22},   {"emerg", 23},      {"emergency", 23},
        {"fatal", 21},  {"panic", 23},
    };
    /* syslog numbers: 0 emerg .. 7 debug */
    static const int sys[8] = {23, 22, 21, 17, 13, 10, 9, 5};
    if (n == 1 && s[0] >= '0' && s[0] <= '7') {
        return sys[s[0] - '0'];
    }
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strlen(map[i].name) == n && strncasecmp((const char *)s, map[i].name, n) == 0) {
            return map[i].num;
        }
    }
    return 0;
}

static int put(spool_buf *b, const char *s)
{
    return spool_buf_append(b, s, strlen(s));
}

static int put_kv(spool_buf *b, const void *k, size_t kn, const void *v, size_t vn)
{
    int rc = put(b, "{\"key\":");
    rc |= spool_json_append_string(b, k, kn);
    rc |= put(b, ",\"value\":{\"stringValue\":");
    rc |= spool_json_append_string(b, v, vn);
    rc |= put(b, "}}");
    return rc;
}

static int is_used(const httpo_fmt *f, const spool_header *h)
{
    for (size_t i = 0; i < f->nused; i++) {
        if (strlen(f->used[i]) == h->key_len && memcmp(f->used[i], h->key, h->key_len) == 0) {
            return 1;
        }
    }
    return 0;
}

static int put_record(httpo_fmt *f, spool_buf *b, const spool_record *r)
{
    char tmp[128];
    int64_t t = r->timestamp < 0 ? 0 : r->timestamp;
    snprintf(tmp, sizeof(tmp),
             "{\"timeUnixNano\":\"%" PRId64 "000000\",\"observedTimeUnixNano\":\"%" PRId64
             "000000\",",
             t, t);
    int rc = put(b, tmp);
    const spool_header *sev = f->severity_field ? spool_record_header(r, f->severity_field) : NULL;
    if (sev && sev->value_len > 0) {
        int num = severity_number(sev->value, (size_t)sev->value_len);
        if (num) {
            snprintf(tmp, sizeof(tmp), "\"severityNumber\":%d,", num);
            rc |= put(b, tmp);
        }
        rc |= put(b, "\"severityText\":");
        rc |= spool_json_append_string(b, sev->value, (size_t)sev->value_len);
        rc |= put(b, ",");
    }
    rc |= put(b, "\"body\":{\"stringValue\":");
    rc |= spool_json_append_string(b, r->value_len > 0 ? (const char *)r->value : "",
                                   r->value_len > 0 ? (size_t)r->value_len : 0);
    rc |= put(b, "},\"attributes\":[");
    int first = 1;
    for (uint32_t i = 0; i < r->header_count; i++) {
        const spool_header *h = &r->headers[i];
        if (h->value_len < 0 || is_used(f, h)) {
            continue;
        }
        int dup = 0;
        for (uint32_t j = 0; j < i && !dup; j++) {
            dup = r->headers[j].key_len == h->key_len &&
                  memcmp(r->headers[j].key, h->key, h->key_len) == 0;
        }
        if (dup) {
            continue;
        }
        rc |= put(b, first ? "" : ",");
        first = 0;
        rc |= put_kv(b, h->key, h->key_len, h->value ? (const char *)h->value : "",
                     (size_t)h->value_len);
    }
    rc |= put(b, "]}");
    return rc;
}

int httpo_otlp_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *b)
{
    int rc = 0;
    httpo_ent *ents = httpo_ents(f, ch->count);
    if (!ents) {
        return -ENOMEM;
    }
    f->s1.len = 0;
    char v[HTTPO_FMT_NAME_MAX];
    for (size_t i = 0; i < ch->count; i++) {
        size_t at = f->s1.len;
        rc |= put(&f->s1, "[");
        int first = 1;
        for (size_t k = 0; k < f->resource.count; k++) {
            size_t n =
                spool_template_render(f->tpls[k], &ch->records[i], ch->topic, NULL, v, sizeof(v));
            if (n == 0) {
                continue;
            }
            rc |= put(&f->s1, first ? "" : ",");
            first = 0;
            rc |= put_kv(&f->s1, f->resource.keys[k], strlen(f->resource.keys[k]), v,
                         n > sizeof(v) ? sizeof(v) : n);
        }
        rc |= put(&f->s1, "]");
        ents[i] = (httpo_ent){at, f->s1.len - at, 0, i};
    }
    if (rc) {
        return -ENOMEM;
    }
    /* Group by resource; a resource's records stay in offset order. The
     * groups follow the order of their first record. */
    qsort_r(ents, ch->count, sizeof(*ents), httpo_ent_cmp, f->s1.data);
    size_t ngroups = 0;
    for (size_t i = 0; i < ch->count; i++) {
        if (i == 0 || !httpo_ent_same(f->s1.data, &ents[i], &ents[i - 1])) {
            ngroups++;
        }
    }
    rc |= put(b, "{\"resourceLogs\":[");
    /* Emit groups by their first record: repeatedly the group whose first
     * record has the smallest index (ngroups is small: a few resources). */
    size_t emitted = 0;
    size_t last_first = 0;
    while (emitted < ngroups && rc == 0) {
        size_t best = SIZE_MAX, best_at = 0;
        for (size_t i = 0; i < ch->count; i++) {
            int start = i == 0 || !httpo_ent_same(f->s1.data, &ents[i], &ents[i - 1]);
            if (start && (emitted == 0 || ents[i].idx > last_first) && ents[i].idx < best) {
                best = ents[i].idx;
                best_at = i;
            }
        }
        last_first = best;
        rc |=
            put(b, emitted ? ",{\"resource\":{\"attributes\":" : "{\"resource\":{\"attributes\":");
        rc |= spool_buf_append(b, f->s1.data + ents[best_at].off, ents[best_at].len);
        rc |= put(b, "},\"scopeLogs\":[{\"scope\":{\"name\":\"spool\"},\"logRecords\":[");
        for (size_t i = best_at; i < ch->count; i++) {
            if (i > best_at && !httpo_ent_same(f->s1.data, &ents[i], &ents[best_at])) {
                break;
            }
            rc |= put(b, i > best_at ? "," : "");
            rc |= put_record(f, b, &ch->records[ents[i].idx]);
        }
        rc |= put(b, "]}]}");
        emitted++;
    }
    rc |= put(b, "]}");
    return rc ? -ENOMEM : 0;
}

void httpo_otlp_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                         size_t len, httpo_verdict *v)
{
    (void)f;
    (void)ch;
    if (status < 200 || status >= 300) {
        return; /* the generic rule: 429 and 5xx retry, other 4xx reject */
    }
    v->result = SPOOL_OK;
    const char *e = body + len, *end, *k, *val, *k2, *v2, *end2;
    size_t kn, kn2;
    const char *p = hj_open(body, e, '{');
    while (p && (val = hj_key(p, e, &k, &kn, &end)) != NULL) {
        if (hj_eq(k, kn, "partialSuccess") || hj_eq(k, kn, "partial_success")) {
            const char *q = hj_open(val, e, '{');
            while (q && (v2 = hj_key(q, e, &k2, &kn2, &end2)) != NULL) {
                if (hj_eq(k2, kn2, "rejectedLogRecords") ||
                    hj_eq(k2, kn2, "rejected_log_records")) {
                    v->partial = strtoll(*v2 == '"' ? v2 + 1 : v2, NULL, 10);
                } else if ((hj_eq(k2, kn2, "errorMessage") || hj_eq(k2, kn2, "error_message")) &&
                           *v2 == '"') {
                    const char *s;
                    size_t n;
                    if (hj_str(v2, e, &s, &n)) {
                        hj_copy(v->reason, sizeof(v->reason), s, n);
                    }
                }
                q = hj_skip(v2, e);
            }
        }
        p = hj_skip(val, e);
    }
}
