/*
 * redact.c: the `redact` processor (issue 15): replaces what PCRE2 patterns match in named
 * fields (`fields`, default the value) before the record reaches the log.
 *
 * Patterns, applied in this order to each field: the built-ins chosen in `builtins` (in the
 * fixed order bearer_token, email, ipv6, ipv4, credit_card, so that an IPv4-mapped IPv6
 * address goes as one), then the user's `patterns` (regex -> replacement, PCRE2 syntax with
 * $1 / ${name}) in file order. Each pattern is one global pass over the field as the previous
 * pass left it; a replacement is never re-scanned by its own pattern, but a later pattern
 * sees it. A built-in's match is replaced by `replacement` (default "[REDACTED]") or by its
 * entry in `replacements` (per kind, e.g. {email: "<email>"}); bearer_token replaces only the
 * token after "Bearer ". credit_card matches a whole run of 13 to 19 digits, bare or grouped
 * as cards are printed (4-4-4-4, 4-6-5, ...; one kind of separator, space or dash), and
 * replaces it only if the digits pass the Luhn check (a PCRE2 callout rejects the others).
 *
 * Invariants: every pattern is compiled (and JIT-compiled when PCRE2 has JIT) once, at init;
 * a field nothing matches is left untouched (no set call, no copy); the passes alternate
 * between two buffers of the context, reused from record to record, so the hot path allocates
 * only when a field is longer than any before it (the buffers are counted in the memory
 * account). Before a built-in runs, a quick scan (its gate) looks for what every match needs
 * ('@', a dotted quad, ...): most fields skip most patterns. Built-ins run in byte mode (ASCII);
 * user patterns in UTF-8 mode that also accepts invalid UTF-8 (as conditions' =~ does).
 *
 * A pattern that fails at run time (PCRE2's match limit) leaves that field as the earlier
 * passes made it, is counted as an error and logged; the next patterns and records go on.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spool/spool.h>

/* ---- the built-in patterns ---- */

#define RX_OCTET "(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
#define RX_IPV4_CORE "(?:" RX_OCTET "\\.){3}" RX_OCTET
#define RX_H "[0-9A-Fa-f]{1,4}"

typedef struct redact_builtin {
    const char *name;    /* as `builtins` names it */
    const char *pattern; /* PCRE2, byte mode */
    /* A quick scan for what every match needs: 0 = the pattern cannot match here (skip it),
     * 1 = it may. Never 0 where the pattern matches. NULL = always run the pattern. */
    int (*gate)(const uint8_t *s, size_t len);
    int luhn; /* 1: (?C1) at the end checks the digits with Luhn */
} redact_builtin;

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* email: an '@'. */
static int gate_email(const uint8_t *s, size_t len)
{
    return memchr(s, '@', len) != NULL;
}

/* ipv4: digits, then three times a dot and digits. */
static int gate_ipv4(const uint8_t *s, size_t len)
{
    const uint8_t *end = s + len, *p = s;
    while ((p = memchr(p, '.', (size_t)(end - p))) != NULL) {
        if (p == s || !is_digit(p[-1])) {
            p++;
            continue;
        }
        const uint8_t *q = p;
        int dots = 0;
        while (q + 1 < end && *q == '.' && is_digit(q[1])) {
            dots++;
            for (q++; q < end && is_digit(*q); q++) {
            }
        }
        if (dots >= 3) {
            return 1;
        }
        p = q > p ? q : p + 1;
    }
    return 0;
}

/* ipv6: "::", or at least 6 colons (the full form has 7, the full form ending with an IPv4
 * address 6). */
static int gate_ipv6(const uint8_t *s, size_t len)
{
    const uint8_t *end = s + len, *p = s;
    int colons = 0;
    while ((p = memchr(p, ':', (size_t)(end - p))) != NULL) {
        if (++colons >= 6 || (p + 1 < end && p[1] == ':')) {
            return 1;
        }
        p++;
    }
    return 0;
}

/* 1 for a byte a card number is made of: a digit, a space or a dash. */
static int card_byte(uint8_t c)
{
    return (uint8_t)(c - '0') <= 9 || c == ' ' || c == '-';
}

/* credit_card: 13 digits in a row, one space or dash allowed between two of them. Such a run
 * spans at least 13 bytes of digits, spaces and dashes, so it covers a multiple of 12: only
 * the stretches of those bytes around every 12th byte are looked at (most lines are decided
 * by 17 probes of a 200-byte line). */
static int gate_card(const uint8_t *s, size_t len)
{
    size_t done = 0; /* bytes before this are examined */
    for (size_t probe = 0; probe < len; probe += 12) {
        if (probe < done || !card_byte(s[probe])) {
            continue;
        }
        size_t a = probe, b = probe;
        while (a > done && card_byte(s[a - 1])) {
            a--;
        }
        while (b < len && card_byte(s[b])) {
            b++;
        }
        done = b;
        if (b - a < 13) {
            continue;
        }
        size_t run = 0; /* digits in the current run */
        for (size_t i = a; i < b; i++) {
            if ((uint8_t)(s[i] - '0') <= 9) {
                if (++run >= 13) {
                    return 1;
                }
            } else if (run == 0 || i + 1 >= b || (uint8_t)(s[i + 1] - '0') > 9) {
                run = 0;
            }
        }
    }
    return 0;
}

static const redact_builtin redact_builtins[] = {
    /* The token after "Bearer " (any case), as in "Authorization: Bearer <token>". */
    {"bearer_token", "(?i)\\bbearer[ \\t]+\\K[A-Za-z0-9._~+/-]+=*", NULL, 0},
    /* local@domain.tld; (*SKIP) makes a failed local part cost its length once, not squared. */
    {"email",
     "[\\w.%+-]++(*SKIP)@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
     "(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\.[A-Za-z]{2,63}\\b",
     gate_email, 0},
    /* Full, compressed (with at least one hex digit: not a bare "::") and IPv4-embedded forms,
     * an optional %zone; not inside a longer run of hex digits and colons. */
    {"ipv6",
     "(?<![\\w:])(?!::(?![0-9A-Fa-f]))"
     "(?:(?:" RX_H ":){7}" RX_H "|(?:" RX_H ":){6}" RX_IPV4_CORE "|(?:" RX_H "(?::" RX_H
     "){0,6})?::(?:(?:" RX_H ":){0,5}(?:" RX_IPV4_CORE "|" RX_H "))?)"
     "(?:%[\\w.]+)?(?![\\w:]|\\.[0-9])",
     gate_ipv6, 0},
    /* Dotted quad, octets 0-255 (leading zeros allowed); not part of a longer dotted run. */
    {"ipv4", "(?<![\\w.])" RX_IPV4_CORE "(?![\\w]|\\.[0-9])", gate_ipv4, 0},
    /* A whole run of 13-19 digits: without separators, or grouped as cards are printed
     * (4-4-4-4, 4-4-4-4-3, 4-4-4-1..3, 4-6-5, 4-6-4) with one kind of separator (space or
     * dash); not part of a longer run of digits. */
    {"credit_card",
     "(?<![\\w+.-])(?<![0-9] )(?:[0-9]{13,19}"
     "|[0-9]{4}([ -])[0-9]{4}\\1[0-9]{4}\\1[0-9]{1,4}(?:\\1[0-9]{1,3})?"
     "|[0-9]{4}([ -])[0-9]{6}\\2[0-9]{4,5})"
     "(?![\\w]|[ .-][0-9])(?C1)",
     gate_card, 1},
};
#define REDACT_NBUILTINS (sizeof(redact_builtins) / sizeof(redact_builtins[0]))

/* 1 if the decimal digits in p[0..len) (other bytes skipped) pass the Luhn check. */
static int redact_luhn(const uint8_t *p, size_t len)
{
    unsigned sum = 0, ndigits = 0;
    for (size_t i = len; i-- > 0;) {
        if (p[i] < '0' || p[i] > '9') {
            continue;
        }
        unsigned d = p[i] - '0';
        if (ndigits++ & 1) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
    }
    return ndigits > 0 && sum % 10 == 0;
}

/* PCRE2 callout at the end of credit_card: 0 accepts the match, 1 makes PCRE2 backtrack. */
static int redact_luhn_callout(pcre2_callout_block *cb, void *arg)
{
    (void)arg;
    return redact_luhn(cb->subject + cb->start_match, cb->current_position - cb->start_match) ? 0
                                                                                              : 1;
}

/* ---- the plugin ---- */

#define REDACT_MATCH_LIMIT 1000000 /* PCRE2 match limit per field and pattern (default 10M) */

enum redact_field_kind { RF_VALUE, RF_KEY, RF_HEADER };

typedef struct redact_field {
    int kind;         /* redact_field_kind */
    const char *name; /* the option's string (RF_HEADER: the header name) */
} redact_field;

typedef struct redact_pattern {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mctx; /* the context's plain or Luhn one (not owned) */
    const char *label;         /* built-in name, or the user's regex (for messages) */
    const uint8_t *repl;       /* replacement (an option string, not owned) */
    size_t repl_len;
    uint32_t sub_opts;                         /* pcre2_substitute options beyond the common ones */
    int (*gate)(const uint8_t *s, size_t len); /* see redact_builtin */
} redact_pattern;

typedef struct redact_ctx {
    /* Options, filled and freed by the core. */
    spool_strlist fields;      /* field names, empty = [value] */
    spool_strlist builtins;    /* built-in pattern names, or "all" */
    spool_strmap patterns;     /* user regex -> replacement */
    char *replacement;         /* for built-ins */
    spool_strmap replacements; /* built-in name -> its replacement */
    /* State, built by init, used on the processor thread. */
    redact_field *flist; /* nfields */
    size_t nfields;
    redact_pattern *plist; /* npatterns, in application order */
    size_t npatterns;
    pcre2_match_context *mctx_plain; /* no callout */
    pcre2_match_context *mctx_luhn;  /* redact_luhn_callout */
    spool_buf buf[2];                /* the passes' outputs, alternately */
    size_t buf_held;                 /* bytes of buf counted in the memory account */
    spool_counter *redactions;       /* matches replaced */
    spool_counter *records;          /* records with at least one field changed */
} redact_ctx;

static const spool_option redact_options[] = {
    SPOOL_OPT_STRLIST("fields", redact_ctx, fields, 0,
                      "fields to redact: value, key or header names (default [value])"),
    SPOOL_OPT_STRLIST("builtins", redact_ctx, builtins, 0,
                      "built-in patterns: email, ipv4, ipv6, credit_card (Luhn-checked), "
                      "bearer_token, or all"),
    SPOOL_OPT_STRMAP("patterns", redact_ctx, patterns,
                     "user patterns: PCRE2 regex -> replacement ($1 or $name insert a group; "
                     "in YAML write $${name} for ${name})"),
    SPOOL_OPT_STR("replacement", redact_ctx, replacement, "[REDACTED]", 0,
                  "what a built-in pattern's match becomes"),
    SPOOL_OPT_STRMAP("replacements", redact_ctx, replacements,
                     "per built-in replacement, e.g. {email: \"<email>\"} (overrides replacement)"),
    SPOOL_OPT_END,
};

static const redact_builtin *builtin_find(const char *name)
{
    for (size_t k = 0; k < REDACT_NBUILTINS; k++) {
        if (strcmp(redact_builtins[k].name, name) == 0) {
            return &redact_builtins[k];
        }
    }
    return NULL;
}

/* 1 if built-in k is selected by `builtins`. */
static int builtin_selected(const redact_ctx *ctx, size_t k)
{
    for (size_t i = 0; i < ctx->builtins.count; i++) {
        const char *s = ctx->builtins.items[i];
        if (strcmp(s, "all") == 0 || strcmp(s, redact_builtins[k].name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Checks a user replacement against its pattern: every $n, ${n}, $name, ${name} must name a
 * group the pattern has; "$$" is a dollar. 0, or -EINVAL with a reason in why. */
static int check_replacement(const pcre2_code *code, const char *repl, char *why, size_t cap)
{
    uint32_t ngroups = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &ngroups);
    for (const char *p = repl; *p; p++) {
        if (*p != '$') {
            continue;
        }
        p++;
        if (*p == '$') {
            continue;
        }
        int braced = *p == '{';
        const char *s = p + braced, *e = s;
        int digits = *s >= '0' && *s <= '9'; /* a number ends at its last digit, as in PCRE2 */
        while ((*e >= '0' && *e <= '9') ||
               (!digits && ((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') || *e == '_'))) {
            e++;
        }
        if (e == s || (braced && *e != '}')) {
            snprintf(why, cap, "bad group reference at offset %zu (write $$ for a dollar)",
                     (size_t)(p - 1 - repl));
            return -EINVAL;
        }
        char name[64];
        size_t n = (size_t)(e - s);
        if (n >= sizeof(name)) {
            n = sizeof(name) - 1;
        }
        memcpy(name, s, n);
        name[n] = '\0';
        if (name[0] >= '0' && name[0] <= '9') {
            char *end;
            unsigned long g = strtoul(name, &end, 10);
            if (*end != '\0' || g > ngroups) {
                snprintf(why, cap, "$%s: the pattern has %u capture group%s", name, ngroups,
                         ngroups == 1 ? "" : "s");
                return -EINVAL;
            }
        } else if (pcre2_substring_number_from_name(code, (PCRE2_SPTR)name) < 0) {
            snprintf(why, cap, "the pattern has no group named %s", name);
            return -EINVAL;
        }
        p = braced ? e : e - 1;
    }
    return 0;
}

/* Compiles one pattern; on error reports it on `option` and returns -EINVAL. */
static pcre2_code *compile_one(spool_instance *ins, const char *option, const char *label,
                               const char *rx, uint32_t opts)
{
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)rx, PCRE2_ZERO_TERMINATED, opts, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        spool_config_error(ins, option, "bad regular expression %s: %s at offset %zu", label,
                           (const char *)msg, (size_t)at);
    }
    return re;
}

static void patterns_free(redact_ctx *ctx)
{
    for (size_t i = 0; i < ctx->npatterns; i++) {
        pcre2_match_data_free(ctx->plist[i].md);
        pcre2_code_free(ctx->plist[i].code);
    }
    free(ctx->plist);
    ctx->plist = NULL;
    ctx->npatterns = 0;
    free(ctx->flist);
    ctx->flist = NULL;
    ctx->nfields = 0;
    pcre2_match_context_free(ctx->mctx_plain);
    pcre2_match_context_free(ctx->mctx_luhn);
    ctx->mctx_plain = ctx->mctx_luhn = NULL;
}

/* Validates the options; with `build`, also keeps the compiled patterns and fields in ctx
 * (init), else frees them (check). 0, -EINVAL (reported) or -ENOMEM. */
static int redact_build(spool_instance *ins, redact_ctx *ctx, int build)
{
    int rc = 0;
    size_t nfields = ctx->fields.count ? ctx->fields.count : 1;
    ctx->flist = calloc(nfields, sizeof(*ctx->flist));
    ctx->plist = calloc(REDACT_NBUILTINS + ctx->patterns.count, sizeof(*ctx->plist));
    ctx->mctx_plain = pcre2_match_context_create(NULL);
    ctx->mctx_luhn = pcre2_match_context_create(NULL);
    if (!ctx->flist || !ctx->plist || !ctx->mctx_plain || !ctx->mctx_luhn) {
        rc = -ENOMEM;
        goto out;
    }
    pcre2_set_callout(ctx->mctx_luhn, redact_luhn_callout, NULL);
    /* A pathological user pattern gives up after this many steps on one field (counted as an
     * error) instead of holding the processor thread for seconds. */
    pcre2_set_match_limit(ctx->mctx_plain, REDACT_MATCH_LIMIT);
    pcre2_set_match_limit(ctx->mctx_luhn, REDACT_MATCH_LIMIT);

    /* Fields. */
    for (size_t i = 0; i < nfields; i++) {
        const char *f = ctx->fields.count ? ctx->fields.items[i] : "value";
        redact_field *rf = &ctx->flist[ctx->nfields++];
        rf->name = f;
        rf->kind = strcmp(f, "value") == 0 ? RF_VALUE : strcmp(f, "key") == 0 ? RF_KEY : RF_HEADER;
        if (f[0] == '\0' || strcmp(f, "timestamp") == 0 || strcmp(f, "topic") == 0) {
            spool_config_error(ins, "fields",
                               "'%s' cannot be redacted: name value, key or a header", f);
            rc = -EINVAL;
        }
    }

    /* Built-ins: names known, replacements for known names. */
    if (ctx->builtins.count == 0 && ctx->patterns.count == 0) {
        spool_config_error(ins, NULL,
                           "nothing to redact: give builtins (email, ipv4, ipv6, credit_card, "
                           "bearer_token or all) and/or patterns");
        rc = -EINVAL;
    }
    for (size_t i = 0; i < ctx->builtins.count; i++) {
        const char *s = ctx->builtins.items[i];
        if (strcmp(s, "all") != 0 && !builtin_find(s)) {
            spool_config_error(ins, "builtins",
                               "unknown built-in pattern '%s' (email, ipv4, ipv6, credit_card, "
                               "bearer_token, all)",
                               s);
            rc = -EINVAL;
        }
    }
    for (size_t i = 0; i < ctx->replacements.count; i++) {
        if (!builtin_find(ctx->replacements.keys[i])) {
            spool_config_error(ins, "replacements",
                               "unknown built-in pattern '%s' (email, ipv4, ipv6, credit_card, "
                               "bearer_token)",
                               ctx->replacements.keys[i]);
            rc = -EINVAL;
        }
    }
    for (size_t k = 0; k < REDACT_NBUILTINS; k++) {
        const redact_builtin *bi = &redact_builtins[k];
        if (!builtin_selected(ctx, k)) {
            continue;
        }
        redact_pattern *p = &ctx->plist[ctx->npatterns];
        p->code = compile_one(ins, "builtins", bi->name, bi->pattern, 0);
        if (!p->code) {
            rc = -EINVAL; /* a bug in the table above: test_redact compiles them all */
            continue;
        }
        ctx->npatterns++;
        const char *repl = ctx->replacement ? ctx->replacement : "";
        for (size_t i = 0; i < ctx->replacements.count; i++) {
            if (strcmp(ctx->replacements.keys[i], bi->name) == 0) {
                repl = ctx->replacements.values[i];
            }
        }
        p->label = bi->name;
        p->repl = (const uint8_t *)repl;
        p->repl_len = strlen(repl);
        p->sub_opts = PCRE2_SUBSTITUTE_LITERAL;
        p->gate = bi->gate;
        p->mctx = bi->luhn ? ctx->mctx_luhn : ctx->mctx_plain;
    }

    /* User patterns. */
    for (size_t i = 0; i < ctx->patterns.count; i++) {
        const char *rx = ctx->patterns.keys[i];
        char opt[600], why[200];
        snprintf(opt, sizeof(opt), "patterns.%s", rx);
        redact_pattern *p = &ctx->plist[ctx->npatterns];
        p->code = compile_one(ins, opt, rx, rx, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF);
        if (!p->code) {
            rc = -EINVAL;
            continue;
        }
        ctx->npatterns++;
        if (check_replacement(p->code, ctx->patterns.values[i], why, sizeof(why)) < 0) {
            spool_config_error(ins, opt, "bad replacement for %s: %s", rx, why);
            rc = -EINVAL;
        }
        p->label = rx;
        p->repl = (const uint8_t *)ctx->patterns.values[i];
        p->repl_len = strlen(ctx->patterns.values[i]);
        p->sub_opts = PCRE2_SUBSTITUTE_UNSET_EMPTY;
        p->mctx = ctx->mctx_plain;
    }
    if (rc < 0 || !build) {
        goto out;
    }
    for (size_t i = 0; i < ctx->npatterns; i++) {
        redact_pattern *p = &ctx->plist[i];
        (void)pcre2_jit_compile(p->code, PCRE2_JIT_COMPLETE); /* no JIT: interpreted */
        p->md = pcre2_match_data_create_from_pattern(p->code, NULL);
        if (!p->md) {
            rc = -ENOMEM;
            goto out;
        }
    }
    return 0;
out:
    patterns_free(ctx);
    return rc;
}

static int redact_check(spool_instance *ins, void *vctx)
{
    int rc = redact_build(ins, vctx, 0);
    return rc == -EINVAL ? rc : 0; /* -ENOMEM in check: init will meet it again */
}

static int redact_init(spool_instance *ins, void *vctx)
{
    redact_ctx *ctx = vctx;
    int rc = redact_build(ins, ctx, 1);
    if (rc < 0) {
        return rc;
    }
    ctx->redactions = spool_counter_register(ins, "redactions", "Matches replaced");
    ctx->records =
        spool_counter_register(ins, "records_changed", "Records with at least one field redacted");
    return ctx->redactions && ctx->records ? 0 : -ENOMEM;
}

/* Makes buffer `which` hold at least n bytes (len stays 0); what the buffers hold is counted
 * in the service's memory account (they grow to the longest field seen). */
static int buf_room(redact_ctx *ctx, int which, size_t n)
{
    spool_buf *b = &ctx->buf[which];
    b->len = 0;
    if (b->cap >= n) {
        return 0;
    }
    if (spool_buf_reserve(b, n) < 0) {
        return -ENOMEM;
    }
    spool_memory_adjust(&ctx->buf_held, ctx->buf[0].cap + ctx->buf[1].cap);
    return 0;
}

/*
 * Runs every pattern over val[0..len). Returns the number of replacements made (0: *out is
 * untouched), with the result in *out / *out_len (a context buffer), or -ENOMEM. A pattern's
 * run-time failure is logged and counted, and skipped.
 */
static int64_t redact_apply(spool_instance *ins, redact_ctx *ctx, const uint8_t *val, size_t len,
                            const uint8_t **out, size_t *out_len)
{
    const uint8_t *cur = val;
    size_t cur_len = len;
    int64_t total = 0;
    int which = 0;
    for (size_t k = 0; k < ctx->npatterns; k++) {
        redact_pattern *p = &ctx->plist[k];
        if (p->gate && !p->gate(cur, cur_len)) {
            continue;
        }
        int rc = pcre2_match(p->code, cur, cur_len, 0, 0, p->md, p->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) {
            continue;
        }
        spool_buf *dst = &ctx->buf[which];
        uint32_t opts = PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH | p->sub_opts;
        PCRE2_SIZE olen = 0;
        if (rc >= 0) {
            if (buf_room(ctx, which, cur_len + cur_len / 2 + p->repl_len + 64) < 0) {
                return -ENOMEM;
            }
            olen = dst->cap;
            rc = pcre2_substitute(p->code, cur, cur_len, 0, opts | PCRE2_SUBSTITUTE_MATCHED, p->md,
                                  p->mctx, p->repl, p->repl_len, dst->data, &olen);
            if (rc == PCRE2_ERROR_NOMEMORY) {
                /* olen is the size needed; the match data was used up: start over. */
                if (buf_room(ctx, which, olen) < 0) {
                    return -ENOMEM;
                }
                olen = dst->cap;
                rc = pcre2_substitute(p->code, cur, cur_len, 0, opts, p->md, p->mctx, p->repl,
                                      p->repl_len, dst->data, &olen);
            }
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            spool_count(ins, SPOOL_COUNT_ERRORS, 1);
            spool_log_warn(ins,
                           "pattern %s failed on a record (%s); that pattern is skipped for "
                           "this field",
                           p->label, (const char *)msg);
            continue;
        }
        if (rc == 0) {
            continue;
        }
        total += rc;
        cur = dst->data;
        cur_len = olen;
        which ^= 1;
    }
    if (total > 0) {
        *out = cur;
        *out_len = cur_len;
    }
    return total;
}

static int redact_process(spool_instance *ins, void *vctx, spool_batch *b)
{
    redact_ctx *ctx = vctx;
    size_t n = spool_batch_count(b);
    uint64_t replaced = 0, changed = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int record_changed = 0;
        for (size_t f = 0; f < ctx->nfields; f++) {
            const redact_field *rf = &ctx->flist[f];
            spool_record r;
            char scratch[SPOOL_FIELD_SCRATCH];
            const uint8_t *val, *res;
            size_t len, res_len;
            spool_batch_get(b, i, &r); /* again per field: a change moves the record */
            if (!spool_record_field(&r, NULL, rf->name, strlen(rf->name), scratch, &val, &len)) {
                continue;
            }
            if (!val) {
                val = (const uint8_t *)""; /* an empty value: still a subject */
            }
            int64_t k = redact_apply(ins, ctx, val, len, &res, &res_len);
            if (k < 0) {
                rc = (int)k;
                break;
            }
            if (k == 0) {
                continue;
            }
            if (res_len > INT32_MAX) {
                rc = -EOVERFLOW;
                break;
            }
            if (rf->kind == RF_VALUE) {
                rc = spool_batch_set_value(b, i, res, (int32_t)res_len);
            } else if (rf->kind == RF_KEY) {
                rc = spool_batch_set_key(b, i, res, (int32_t)res_len);
            } else {
                rc = spool_batch_set_header(b, i, rf->name, res, (int32_t)res_len);
            }
            if (rc < 0) {
                break;
            }
            replaced += (uint64_t)k;
            record_changed = 1;
        }
        changed += (uint64_t)record_changed;
    }
    spool_counter_add(ctx->redactions, replaced);
    spool_counter_add(ctx->records, changed);
    return rc;
}

static void redact_destroy(spool_instance *ins, void *vctx)
{
    redact_ctx *ctx = vctx;
    patterns_free(ctx);
    spool_buf_free(&ctx->buf[0]);
    spool_buf_free(&ctx->buf[1]);
    spool_memory_release(ctx->buf_held);
    ctx->buf_held = 0;
}

const spool_plugin spool_plugin_redact = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_PROCESSOR,
    .name = "redact",
    .description = "replaces what PCRE2 patterns match in chosen fields: built-ins for e-mail, "
                   "IPv4/IPv6, credit cards (Luhn-checked), bearer tokens, and your own",
    .options = redact_options,
    .context_size = sizeof(redact_ctx),
    .check = redact_check,
    .init = redact_init,
    .process = redact_process,
    .destroy = redact_destroy,
};
