/*
 * http_es.c: the `elasticsearch` format of the http output (also
 * OpenSearch): the bulk API. Per record an action line and a document
 * line (application/x-ndjson):
 *   {"create":{"_index":"logs-web1-2024.01.02","_id":"0-17-9f3c..."}}
 *   {"@timestamp":"2024-01-02T03:04:05.678Z","timestamp":..,"value":..,<fields>}
 * The index is a template over fields whose literal text may hold strftime
 * conversions of the record's timestamp in UTC. The _id (id: auto) is the
 * record's partition and offset in spool's log and a 64-bit FNV-1a hash of
 * its topic, timestamp, key and value: the same record always gets the
 * same _id, so a resent chunk is idempotent (with action create, 409
 * version_conflict means "already there" and counts as delivered).
 *
 * Response: a 2xx with "errors":false is delivered. Otherwise each item
 * (one per record, in order) is read: 2xx, and 409 on create, are
 * delivered; 429, 5xx and es_rejected_execution_exception make the whole
 * chunk retried (delivered items come back as 409 or are overwritten by
 * the same _id); any other status refuses that record alone
 * (spool_output_reject_record, reason "HTTP <status> <type>: <reason>").
 * A non-2xx answer to the whole request follows the generic rule.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_fmt.h"

static const char es_bad_chars[] = "\\/*?\"<>| ,#:";

int httpo_es_check(spool_instance *ins, const httpo_fmt *f)
{
    const char *idx = f->index ? f->index : "spool-%Y.%m.%d";
    if (httpo_tfmt_check(ins, "index", idx) < 0) {
        return -EINVAL;
    }
    /* The literal text must make a valid index name (fields are the data's). */
    int in_field = 0;
    for (const char *p = idx; *p; p++) {
        if (!in_field && p[0] == '{' && p[1] == '{') {
            in_field = 1;
            p++;
            continue;
        }
        if (in_field) {
            if (p[0] == '}' && p[1] == '}') {
                in_field = 0;
                p++;
            }
            continue;
        }
        if (*p == '%') {
            p++; /* a conversion, checked above */
            continue;
        }
        if ((*p >= 'A' && *p <= 'Z') || strchr(es_bad_chars, *p)) {
            spool_config_error(ins, "index",
                               "%s: an index name is lowercase and has none of \\ / * ? \" < > | "
                               "space , # :",
                               idx);
            return -EINVAL;
        }
        if (p == idx && strchr("-_+", *p)) {
            spool_config_error(ins, "index", "%s: an index name cannot start with -, _ or +", idx);
            return -EINVAL;
        }
    }
    if (f->timestamp_field && strpbrk(f->timestamp_field, "\"\\")) {
        spool_config_error(ins, "timestamp_field", "a field name without quotes or backslashes");
        return -EINVAL;
    }
    return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int put(spool_buf *b, const char *s)
{
    return spool_buf_append(b, s, strlen(s));
}

int httpo_es_encode(httpo_fmt *f, const spool_chunk *ch, spool_buf *b)
{
    char idx[HTTPO_FMT_NAME_MAX];
    char tmp[256];
    const char *topic = ch->topic ? ch->topic : "";
    int rc = 0;
    for (size_t i = 0; i < ch->count && rc == 0; i++) {
        const spool_record *r = &ch->records[i];
        size_t n = httpo_tfmt_render(&f->index_t, r, ch->topic, idx, sizeof(idx));
        rc |= put(b, f->action == HTTPO_ES_INDEX ? "{\"index\":{\"_index\":"
                                                 : "{\"create\":{\"_index\":");
        rc |= spool_json_append_string(b, idx, n);
        if (f->id == HTTPO_ID_AUTO) {
            uint64_t h = fnv(14695981039346656037ULL, topic, strlen(topic) + 1);
            h = fnv(h, &r->timestamp, sizeof(r->timestamp));
            if (r->key_len > 0) {
                h = fnv(h, r->key, (size_t)r->key_len);
            }
            h = fnv(h, "\0", 1);
            if (r->value_len > 0) {
                h = fnv(h, r->value, (size_t)r->value_len);
            }
            snprintf(tmp, sizeof(tmp), ",\"_id\":\"%" PRId32 "-%" PRId64 "-%016" PRIx64 "\"",
                     ch->partition, r->offset, h);
            rc |= put(b, tmp);
        }
        rc |= put(b, "}}\n");
        if (f->timestamp_field && f->timestamp_field[0]) {
            f->s1.len = 0;
            rc |= spool_json_append_fields(&f->s1, r, SPOOL_JSON_TYPED);
            char ts[64];
            httpo_rfc3339(r->timestamp, ts);
            rc |= put(b, "{");
            rc |= spool_json_append_string(b, f->timestamp_field, strlen(f->timestamp_field));
            snprintf(tmp, sizeof(tmp), ":\"%s\",", ts);
            rc |= put(b, tmp);
            if (rc == 0 && f->s1.len > 1) {
                rc |= spool_buf_append(b, f->s1.data + 1, f->s1.len - 1);
            }
        } else {
            rc |= spool_json_append_fields(b, r, SPOOL_JSON_TYPED);
        }
        rc |= put(b, "\n");
    }
    return rc ? -ENOMEM : 0;
}

/* One item of the bulk response: {"create":{..,"status":201,"error":{..}}}. */
typedef struct es_item {
    long status;
    int create;
    char type[96];
    char reason[320];
} es_item;

static const char *es_read_item(const char *p, const char *e, es_item *it)
{
    memset(it, 0, sizeof(*it));
    const char *end, *k, *v;
    size_t kn;
    p = hj_open(p, e, '{');
    if (!p || !(v = hj_key(p, e, &k, &kn, &end))) {
        return NULL;
    }
    it->create = hj_eq(k, kn, "create");
    const char *q = hj_open(v, e, '{');
    if (!q) {
        return NULL;
    }
    while ((v = hj_key(q, e, &k, &kn, &end)) != NULL) {
        if (hj_eq(k, kn, "status")) {
            it->status = strtol(v, NULL, 10);
        } else if (hj_eq(k, kn, "error") && *v == '"') {
            const char *s;
            size_t n;
            if (hj_str(v, e, &s, &n)) {
                hj_copy(it->reason, sizeof(it->reason), s, n);
            }
        } else if (hj_eq(k, kn, "error") && *v == '{') {
            const char *ek, *ev, *eend, *r = hj_open(v, e, '{');
            size_t ekn;
            while (r && (ev = hj_key(r, e, &ek, &ekn, &eend)) != NULL) {
                const char *s;
                size_t n;
                if ((hj_eq(ek, ekn, "type") || hj_eq(ek, ekn, "reason")) && *ev == '"' &&
                    hj_str(ev, e, &s, &n)) {
                    if (hj_eq(ek, ekn, "type")) {
                        hj_copy(it->type, sizeof(it->type), s, n);
                    } else {
                        hj_copy(it->reason, sizeof(it->reason), s, n);
                    }
                }
                r = hj_skip(ev, e);
            }
        }
        q = hj_skip(v, e);
        if (!q) {
            return NULL;
        }
    }
    if (!end) {
        return NULL;
    }
    /* The item object's end. */
    hj_key(end, e, &k, &kn, &end);
    return end;
}

void httpo_es_response(const httpo_fmt *f, const spool_chunk *ch, long status, const char *body,
                       size_t len, httpo_verdict *v, httpo_reject_fn reject, void *arg)
{
    if (status < 200 || status >= 300) {
        return; /* the generic rule for the whole request */
    }
    const char *e = body + len, *end, *k, *val;
    size_t kn;
    int errors = -1;
    const char *items = NULL;
    const char *p = hj_open(body, e, '{');
    while (p && (val = hj_key(p, e, &k, &kn, &end)) != NULL) {
        if (hj_eq(k, kn, "errors")) {
            errors = strncmp(val, "false", 5) == 0 ? 0 : strncmp(val, "true", 4) == 0 ? 1 : -1;
        } else if (hj_eq(k, kn, "items")) {
            items = val;
        }
        p = hj_skip(val, e);
    }
    if (errors == 0) {
        v->result = SPOOL_OK;
        return;
    }
    v->result = SPOOL_RETRY;
    if (!items || !(p = hj_open(items, e, '['))) {
        snprintf(v->reason, sizeof(v->reason),
                 "bulk response without errors:false or items (%zu bytes; truncated?)", len);
        return;
    }
    size_t i = 0;
    es_item it;
    const char *at;
    char why[512];
    while ((at = hj_item(p, e, &end)) != NULL) {
        p = es_read_item(at, e, &it);
        if (!p || i >= ch->count) {
            snprintf(v->reason, sizeof(v->reason), "bulk response unreadable at item %zu", i);
            return;
        }
        int retry_type = strcmp(it.type, "es_rejected_execution_exception") == 0;
        if ((it.status >= 200 && it.status < 300) ||
            (it.status == 409 && it.create && f->id == HTTPO_ID_AUTO)) {
            /* delivered */
        } else if (it.status == 429 || it.status >= 500 || retry_type || it.status == 0) {
            if (v->retried++ == 0) {
                snprintf(v->reason, sizeof(v->reason), "item %zu: HTTP %ld %s: %s", i, it.status,
                         it.type, it.reason);
            }
        } else {
            snprintf(why, sizeof(why), "HTTP %ld %s: %s", it.status, it.type, it.reason);
            reject(arg, i, why);
            v->rejected++;
        }
        i++;
    }
    if (!end || i != ch->count) {
        snprintf(v->reason, sizeof(v->reason), "bulk response has %zu items for %zu records", i,
                 ch->count);
        return;
    }
    if (v->retried == 0) {
        v->result = SPOOL_OK;
    }
}
