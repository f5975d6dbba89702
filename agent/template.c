/*
 * template.c: "{{ field }}" templates rendered per record (keys, Kafka topic
 * names, file paths). A template compiles once into a list of literal and
 * field parts; rendering walks the list with no allocation.
 *
 * Fields: what spool_record_field reads (the record's `key`, `value`,
 * `timestamp` (decimal ms) and `topic`, which always win, then its first
 * header of that name: `{{ http.status }}`), the same fields conditions
 * read; then, when the record has no such field, the extras `input` (the
 * input's name), `host` (this host) and `file` (the basename of the `path`
 * header). A missing field renders as the empty string.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

typedef struct tpl_part {
    int field;  /* 1 = field name, 0 = literal */
    char *text; /* literal text or field name */
    size_t len;
} tpl_part;

struct spool_template {
    tpl_part *parts;
    size_t count;
};

void spool_template_destroy(spool_template *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->count; i++) {
        free(t->parts[i].text);
    }
    free(t->parts);
    free(t);
}

static int add_part(spool_template *t, int field, const char *s, size_t len)
{
    if (len == 0 && !field) {
        return 0;
    }
    tpl_part *p = realloc(t->parts, (t->count + 1) * sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    t->parts = p;
    p = &t->parts[t->count];
    p->text = strndup(s, len);
    if (!p->text) {
        return -ENOMEM;
    }
    p->field = field;
    p->len = len;
    t->count++;
    return 0;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

spool_template *spool_template_compile(const char *text, const char **err)
{
    spool_template *t = calloc(1, sizeof(*t));
    const char *p = text;
    *err = NULL;
    if (!t) {
        *err = "out of memory";
        return NULL;
    }
    while (*p) {
        const char *open = strstr(p, "{{");
        if (!open) {
            if (add_part(t, 0, p, strlen(p)) < 0) {
                goto nomem;
            }
            break;
        }
        if (add_part(t, 0, p, (size_t)(open - p)) < 0) {
            goto nomem;
        }
        const char *close = strstr(open + 2, "}}");
        if (!close) {
            *err = "unclosed '{{' in template";
            goto fail;
        }
        const char *a = open + 2, *b = close;
        while (a < b && (*a == ' ' || *a == '\t')) {
            a++;
        }
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) {
            b--;
        }
        if (a == b) {
            *err = "empty field name in template";
            goto fail;
        }
        for (const char *c = a; c < b; c++) {
            if (!is_name_char(*c)) {
                *err = "invalid character in template field name";
                goto fail;
            }
        }
        if (add_part(t, 1, a, (size_t)(b - a)) < 0) {
            goto nomem;
        }
        p = close + 2;
    }
    return t;
nomem:
    *err = "out of memory";
fail:
    spool_template_destroy(t);
    return NULL;
}

int spool_template_is_literal(const spool_template *t)
{
    for (size_t i = 0; i < t->count; i++) {
        if (t->parts[i].field) {
            return 0;
        }
    }
    return 1;
}

static void put(char *buf, size_t cap, size_t *o, const void *s, size_t n)
{
    if (*o < cap) {
        size_t k = cap - *o < n ? cap - *o : n;
        memcpy(buf + *o, s, k);
    }
    *o += n;
}

static const spool_header *find_header(const spool_record *r, const char *name, size_t len)
{
    for (uint32_t i = 0; r && i < r->header_count; i++) {
        if (r->headers[i].key_len == len && memcmp(r->headers[i].key, name, len) == 0) {
            return &r->headers[i];
        }
    }
    return NULL;
}

size_t spool_template_render(const spool_template *t, const spool_record *r, const char *topic,
                             const char *input, char *buf, size_t cap)
{
    size_t o = 0;
    char scratch[SPOOL_FIELD_SCRATCH];
    for (size_t i = 0; i < t->count; i++) {
        const tpl_part *p = &t->parts[i];
        const uint8_t *v;
        size_t n;
        if (!p->field) {
            put(buf, cap, &o, p->text, p->len);
            continue;
        }
        if (r && spool_record_field(r, topic, p->text, p->len, scratch, &v, &n)) {
            put(buf, cap, &o, v, n);
        } else if (strcmp(p->text, "input") == 0 && input) {
            put(buf, cap, &o, input, strlen(input));
        } else if (strcmp(p->text, "host") == 0) {
            const char *hn = spool_hostname();
            put(buf, cap, &o, hn, strlen(hn));
        } else if (strcmp(p->text, "file") == 0) {
            const spool_header *ph = find_header(r, "path", 4);
            if (ph && ph->value_len > 0) {
                const uint8_t *pv = ph->value;
                size_t len = (size_t)ph->value_len, s = len;
                while (s > 0 && pv[s - 1] != '/') {
                    s--;
                }
                put(buf, cap, &o, pv + s, len - s);
            }
        }
    }
    return o;
}
