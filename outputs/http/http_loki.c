/*
 * http_loki.c: the `loki` format of the http output: Loki's push API in
 * JSON (POST /loki/api/v1/push):
 *   {"streams":[{"stream":{"host":"web1","job":"spool"},
 *                "values":[["<unix ns>","<line>"],...]},...]}
 * Labels come from the `labels` option (name -> template over fields); a
 * label that renders empty is left out. Records with the same label set
 * form one stream, streams in the order of their label sets, entries sorted
 * by time inside a stream (ties keep offset order). The line is the
 * record's value, or with line_format: json its field document; with
 * structured_metadata, a third element {"name":"value"} per entry (Loki 3,
 * names -> templates; left out when every one renders empty).
 *
 * Response: 2xx is delivered; 429 and 5xx retry (the generic rule); 400
 * (entry out of order, too far behind, bad labels) refuses the records of
 * every stream the message names ({host="web1", job="spool"}, as Loki
 * prints them), or of the whole chunk when it names none, each with the
 * message as the reason. What encoding leaves in aux for that: per stream
 * [u32 len][label string][u32 n][u32 record index]*n.
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_fmt.h"

#define LOKI_MANY_LABELS 10

int httpo_loki_check(spool_instance *ins, const httpo_fmt *f)
{
    int rc = 0;
    for (size_t i = 0; i < f->labels.count; i++) {
        const char *k = f->labels.keys[i];
        int ok = k[0] && !(k[0] >= '0' && k[0] <= '9');
        for (const char *p = k; *p && ok; p++) {
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '_';
        }
        if (!ok) {
            spool_config_error(ins, "labels",
                               "label name %s: letters, digits and _, not starting with a digit",
                               k);
            rc = -EINVAL;
        }
        const char *err = NULL;
        spool_template *t = spool_template_compile(f->labels.values[i], &err);
        if (!t) {
            spool_config_error(ins, "labels", "label %s: %s: %s", k, f->labels.values[i], err);
            rc = -EINVAL;
        }
        spool_template_destroy(t);
    }
    for (size_t i = 0; i < f->meta.count; i++) {
        const char *err = NULL;
        spool_template *t = spool_template_compile(f->meta.values[i], &err);
        if (!t) {
            spool_config_error(ins, "structured_metadata", "%s: %s: %s", f->meta.keys[i],
                               f->meta.values[i], err);
            rc = -EINVAL;
        }
        spool_template_destroy(t);
    }
    if (f->labels.count == 0) {
        spool_config_error(ins, "labels",
                           "format loki needs at least one label, e.g. "
                           "labels: {job: spool}");
        rc = -EINVAL;
    }
    if (f->labels.count > LOKI_MANY_LABELS) {
        spool_log_warn(ins,
                       "%zu labels: every distinct label set is a stream in Loki; keep labels few "
                       "and of low cardinality (put the rest in the line)",
                       f->labels.count);
    }
    return rc;
}

static int put(spool_buf *b, const char *s)
{
    return spool_buf_append(b, s, strlen(s));
}

/* The label set of r as a JSON object (names sorted) appended to out; with
 * prom, as Loki prints it instead: {a="x", b="y"}. */
static int lk_labels(httpo_fmt *f, const spool_record *r, const char *topic, spool_buf *out,
                     int prom)
{
    char v[HTTPO_FMT_NAME_MAX];
    int rc = put(out, "{");
    int first = 1;
    for (size_t j = 0; j < f->labels.count; j++) {
        size_t k = f->order[j];
        size_t n = spool_template_render(f->tpls[k], r, topic, NULL, v, sizeof(v));
        if (n == 0) {
            continue;
        }
        n = n > sizeof(v) ? sizeof(v) : n;
        rc |= put(out, first ? "" : prom ? ", " : ",");
        first = 0;
        if (prom) {
            rc |= put(out, f->labels.keys[k]);
            rc |= put(out, "=");
        } else {
            rc |= spool_json_append_string(out, f->labels.keys[k], strlen(f->labels.keys[k]));
            rc |= put(out, ":");
        }
        rc |= spool_json_append_string(out, v, n);
    }
    rc |= put(out, "}");
    return rc;
}

/* Structured metadata: ,{"name":"value",...} of the entries that render
 * non-empty; nothing when none does. */
static int lk_meta(httpo_fmt *f, const spool_record *r, const char *topic, spool_buf *out)
{
    char v[HTTPO_FMT_NAME_MAX];
    int rc = 0, first = 1;
    for (size_t k = 0; k < f->meta.count; k++) {
        size_t n = spool_template_render(f->mtpls[k], r, topic, NULL, v, sizeof(v));
        if (n == 0) {
            continue;
        }
        rc |= put(out, first ? ",{" : ",");
        first = 0;
        rc |= spool_json_append_string(out, f->meta.keys[k], strlen(f->meta.keys[k]));
        rc |= put(out, ":");
        rc |= spool_json_append_string(out, v, n > sizeof(v) ? sizeof(v) : n);
    }
    if (!first) {
        rc |= put(out, "}");
    }
    return rc;
}

static int put_u32(spool_buf *b, size_t v)
{
    uint32_t x = (uint32_t)v;
    return spool_buf_append(b, &x, sizeof(x));
}

int httpo_loki_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *b, spool_buf *aux)
{
    int rc = 0;
    httpo_ent *ents = httpo_ents(f, ch->count);
    if (!ents) {
        return -ENOMEM;
    }
    f->s1.len = 0;
    for (size_t i = 0; i < ch->count; i++) {
        size_t at = f->s1.len;
        rc |= lk_labels(f, &ch->records[i], ch->topic, &f->s1, 0);
        ents[i] = (httpo_ent){at, f->s1.len - at, ch->records[i].timestamp, i};
    }
    if (rc) {
        return -ENOMEM;
    }
    qsort_r(ents, ch->count, sizeof(*ents), httpo_ent_cmp, f->s1.data);
    rc |= put(b, "{\"streams\":[");
    size_t count_at = 0, nrec = 0;
    for (size_t i = 0; i < ch->count; i++) {
        const httpo_ent *x = &ents[i];
        const spool_record *r = &ch->records[x->idx];
        if (i == 0 || !httpo_ent_same(f->s1.data, x, &ents[i - 1])) {
            if (i > 0 && rc == 0) {
                rc |= put(b, "]},");
                memcpy(aux->data + count_at, &(uint32_t){(uint32_t)nrec}, 4);
            }
            rc |= put(b, "{\"stream\":");
            rc |= spool_buf_append(b, f->s1.data + x->off, x->len);
            rc |= put(b, ",\"values\":[");
            size_t at = aux->len;
            rc |= put_u32(aux, 0);
            rc |= lk_labels(f, r, ch->topic, aux, 1);
            if (rc == 0) {
                memcpy(aux->data + at, &(uint32_t){(uint32_t)(aux->len - at - 4)}, 4);
            }
            count_at = aux->len;
            rc |= put_u32(aux, 0);
            nrec = 0;
        } else {
            rc |= put(b, ",");
        }
        rc |= put_u32(aux, x->idx);
        nrec++;
        char ns[48];
        int64_t t = r->timestamp < 0 ? 0 : r->timestamp;
        snprintf(ns, sizeof(ns), "[\"%" PRId64 "000000\",", t);
        rc |= put(b, ns);
        if (f->line_format == HTTPO_LINE_JSON) {
            f->s2.len = 0;
            rc |= spool_json_append_fields(&f->s2, r, SPOOL_JSON_TYPED);
            rc |= spool_json_append_string(b, f->s2.data, f->s2.len);
        } else {
            rc |= spool_json_append_string(b, r->value_len > 0 ? (const char *)r->value : "",
                                           r->value_len > 0 ? (size_t)r->value_len : 0);
        }
        rc |= lk_meta(f, r, ch->topic, b);
        rc |= put(b, "]");
        if (rc) {
            return -ENOMEM;
        }
    }
    if (ch->count > 0 && rc == 0) {
        rc |= put(b, "]}");
        memcpy(aux->data + count_at, &(uint32_t){(uint32_t)nrec}, 4);
    }
    rc |= put(b, "]}");
    return rc ? -ENOMEM : 0;
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

void httpo_loki_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                         size_t len, const spool_buf *aux, httpo_verdict *v, httpo_reject_fn reject,
                         void *arg)
{
    (void)f;
    if (status != 400) {
        return; /* 2xx delivered, 429/5xx retried, other 4xx rejected: the generic rule */
    }
    /* The message on one line, for the reason. */
    char why[300];
    size_t n = len < sizeof(why) - 1 ? len : sizeof(why) - 1;
    for (size_t i = 0; i < n; i++) {
        why[i] = body[i] == '\n' || body[i] == '\r' ? ' ' : body[i];
    }
    while (n > 0 && why[n - 1] == ' ') {
        n--;
    }
    why[n] = '\0';
    char reason[340];
    snprintf(reason, sizeof(reason), "HTTP 400: %s", why);
    size_t matched = 0;
    for (int pass = 0; pass < 2 && matched == 0; pass++) {
        size_t at = 0;
        while (aux && at + 8 <= aux->len) {
            uint32_t ln = get_u32(aux->data + at);
            const char *lbl = (const char *)aux->data + at + 4;
            uint32_t cnt = get_u32(aux->data + at + 4 + ln);
            const uint8_t *idx = aux->data + at + 8 + ln;
            /* pass 0: the streams the message names; pass 1: all of them. */
            int hit = pass == 1 || memmem(body, len, lbl, ln) != NULL;
            for (uint32_t k = 0; hit && k < cnt; k++) {
                size_t i = get_u32(idx + 4 * (size_t)k);
                if (i < ch->count) {
                    reject(arg, i, reason);
                    v->rejected++;
                    matched++;
                }
            }
            at += 8 + ln + 4 * (size_t)cnt;
        }
    }
    v->result = SPOOL_OK;
    snprintf(v->reason, sizeof(v->reason), "%s", reason);
}
