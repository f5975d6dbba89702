/*
 * fuzz_parse_formats_common.h: the checks of the libFuzzer targets for the scanners in
 * processors/parse/parse_formats.c (fuzz_parse_syslog.c, fuzz_parse_access.c), on top of
 * fuzz_parse_common.h's (return codes, error offsets, no NUL in names, the same fields
 * from a dirty scratch). These formats have no canonical writer, so instead of a round
 * trip: every value that is not built (unescaped) must be bytes of the input, and every
 * name must be one the format documents.
 */
#ifndef FUZZ_PARSE_FORMATS_COMMON_H
#define FUZZ_PARSE_FORMATS_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <string.h>

#include "fuzz_parse_common.h"
#include "parse/parse_formats.h"
#include "spool/spool.h"

/* What check_parser's round trip re-parses: the input itself (opt points at it). */
typedef struct formats_opt {
    const uint8_t *in;
    size_t n;
    int kind; /* parse_access_kind, for fuzz_parse_access.c */
} formats_opt;

static void encode_identity(const fbuf *fields, const void *opt, fbuf *out)
{
    (void)fields;
    const formats_opt *o = opt;
    fb_put(out, o->in, o->n);
}

/* Aborts unless val is bytes of the input. */
static inline void check_substring(const formats_opt *o, const uint8_t *val, size_t len)
{
    if (len == 0) {
        return;
    }
    if (len > o->n || !memmem(o->in, o->n, val, len)) {
        abort();
    }
}

/* Aborts unless name is one of names (NULL-terminated) or starts with prefix (may be
 * NULL). */
static inline void check_name(const uint8_t *name, size_t len, const char *const *names,
                              const char *prefix)
{
    for (size_t k = 0; names[k]; k++) {
        if (strlen(names[k]) == len && memcmp(names[k], name, len) == 0) {
            return;
        }
    }
    if (prefix && len > strlen(prefix) && memcmp(name, prefix, strlen(prefix)) == 0) {
        return;
    }
    abort();
}

#endif
