/*
 * expr_parse.c: the condition language's front end (docs/conditions.md): the lexer, a
 * recursive-descent parser that compiles an expression into the flat program of
 * expr_int.h, and the positioned error messages. expr_eval.c runs the program.
 *
 * Invariants:
 * - The program (nodes, operands, literal bytes, field names, PCRE2 codes) is immutable
 *   after spool_expr_compile returns, and shared by every handle cloned from it.
 * - 'and'/'or' chains are n-ary nodes (sibling lists), and the parser refuses more than
 *   SPOOL_EXPR_MAX_DEPTH levels of '(' and 'not', so the evaluator's recursion is bounded.
 * - Every error carries a 1-based column inside the expression (0 only for "out of
 *   memory"); a failed compile frees everything it made.
 * - Every allocation goes through EXPR_MALLOC/EXPR_FREE (PCRE2's too, through a general
 *   context), so the unit test can count them and make each one fail. The exception: the
 *   JIT's executable memory (PCRE2 maps it).
 *
 * Not done: arithmetic, functions other than exists() and field(), regexes that are not
 * literals (a pattern read from a field would need a compile per record).
 */
#define _GNU_SOURCE /* memmem */
#include "expr_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Makes room for one more element of `size` bytes in *arr (n used, *cap allocated). */
static int grow(void **arr, uint32_t n, uint32_t *cap, size_t size)
{
    if (n < *cap) {
        return 0;
    }
    uint32_t ncap = *cap ? *cap * 2 : 8;
    void *a = EXPR_REALLOC(*arr, (size_t)ncap * size);
    if (!a) {
        return -ENOMEM;
    }
    *arr = a;
    *cap = ncap;
    return 0;
}

/* ---- the lexer ---- */

typedef enum tok_type {
    T_END,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_MATCH,
    T_NMATCH,
    T_AND,
    T_OR,
    T_NOT,
    T_IN,
    T_TRUE,
    T_FALSE,
    T_IDENT,
    T_STRING,
    T_NUMBER,
} tok_type;

typedef struct token {
    tok_type type;
    size_t start; /* byte offset in the source */
    size_t len;   /* bytes in the source, quotes included */
} token;

typedef struct parser {
    const char *src;
    size_t len;
    size_t pos; /* where the next token starts to be looked for */
    token tok;  /* the current token */
    prog *p;
    spool_expr_error *err;
    int depth;      /* open '(' and 'not' */
    uint32_t *hash; /* field index + 1 per slot, open addressing; 0 = empty */
    uint32_t hash_cap;
} parser;

static int syntax_error(parser *ps, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int syntax_error(parser *ps, size_t offset, const char *fmt, ...)
{
    if (ps->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ps->err->message, sizeof(ps->err->message), fmt, ap);
        va_end(ap);
        ps->err->column = offset + 1;
    }
    return -EINVAL;
}

static int is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(int c)
{
    return is_ident_start(c) || is_digit(c) || c == '.' || c == '-';
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Copies src[start, start+n) for a message: printable ASCII, '?' else, at most 40. */
static const char *excerpt(const parser *ps, size_t start, size_t n, char *buf, size_t cap)
{
    size_t max = cap - 4;
    size_t k = 0;
    for (; k < n && k < max; k++) {
        unsigned char c = (unsigned char)ps->src[start + k];
        buf[k] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (k < n) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

/* "field 'status'", "'=='", "end of expression": what a token is, for messages. */
static const char *describe(const parser *ps, const token *t, char *buf, size_t cap)
{
    char ex[48];
    excerpt(ps, t->start, t->len, ex, sizeof(ex));
    switch (t->type) {
    case T_END:
        snprintf(buf, cap, "end of expression");
        break;
    case T_IDENT:
        snprintf(buf, cap, "field '%s'", ex);
        break;
    case T_STRING:
        snprintf(buf, cap, "string %s", ex);
        break;
    case T_NUMBER:
        snprintf(buf, cap, "number %s", ex);
        break;
    default:
        snprintf(buf, cap, "'%s'", ex);
        break;
    }
    return buf;
}

static int keyword(const char *s, size_t n, tok_type *type)
{
    static const struct {
        const char *word;
        tok_type type;
    } words[] = {{"and", T_AND}, {"or", T_OR},     {"not", T_NOT},
                 {"in", T_IN},   {"true", T_TRUE}, {"false", T_FALSE}};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strlen(words[i].word) == n && memcmp(words[i].word, s, n) == 0) {
            *type = words[i].type;
            return 1;
        }
    }
    return 0;
}

static int lex_string(parser *ps, size_t at, token *t)
{
    char q = ps->src[at];
    size_t i = at + 1;
    while (i < ps->len && ps->src[i] != q) {
        i += ps->src[i] == '\\' ? 2 : 1;
    }
    if (i >= ps->len) {
        return syntax_error(ps, at, "unterminated string: no closing %c", q);
    }
    t->type = T_STRING;
    t->len = i + 1 - at;
    return 0;
}

static int lex_number(parser *ps, size_t at, token *t)
{
    const char *s = ps->src;
    size_t i = at;
    if (s[i] == '-') {
        i++;
    }
    while (i < ps->len && is_digit(s[i])) {
        i++;
    }
    if (i < ps->len && s[i] == '.') {
        for (i++; i < ps->len && is_digit(s[i]); i++) {
        }
    }
    if (i < ps->len && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < ps->len && (s[j] == '+' || s[j] == '-')) {
            j++;
        }
        if (j < ps->len && is_digit(s[j])) {
            for (i = j; i < ps->len && is_digit(s[i]); i++) {
            }
        }
    }
    int bad = 0;
    while (i < ps->len && is_ident_char(s[i])) {
        bad = 1;
        i++;
    }
    num n;
    char ex[48];
    if (bad || !spool__expr_parse_num((const uint8_t *)s + at, i - at, &n)) {
        if (i - at <= NUM_MAX_LEN) {
            return syntax_error(ps, at, "invalid number '%s'",
                                excerpt(ps, at, i - at, ex, sizeof(ex)));
        }
        return syntax_error(ps, at, "number '%s' out of range or longer than %d bytes",
                            excerpt(ps, at, i - at, ex, sizeof(ex)), NUM_MAX_LEN);
    }
    t->type = T_NUMBER;
    t->len = i - at;
    return 0;
}

static int lex_ident(parser *ps, size_t at, token *t)
{
    const char *s = ps->src;
    size_t i = at;
    while (i < ps->len && is_ident_char(s[i])) {
        if (s[i] == '.' && (i + 1 >= ps->len || !is_ident_char(s[i + 1]) || s[i + 1] == '.')) {
            char ex[48];
            return syntax_error(ps, i, "invalid field name '%s': a '.' must separate two names",
                                excerpt(ps, at, i + 1 - at, ex, sizeof(ex)));
        }
        i++;
    }
    t->len = i - at;
    if (!keyword(s + at, t->len, &t->type)) {
        t->type = T_IDENT;
    }
    return 0;
}

/* Reads the token at or after `pos` into *t; *end is where it stops. */
static int lex_at(parser *ps, size_t pos, token *t, size_t *end)
{
    const char *s = ps->src;
    while (pos < ps->len && is_space(s[pos])) {
        pos++;
    }
    t->start = pos;
    t->len = 1;
    int rc = 0;
    if (pos >= ps->len) {
        t->type = T_END;
        t->len = 0;
        *end = pos;
        return 0;
    }
    char c = s[pos];
    char c2 = pos + 1 < ps->len ? s[pos + 1] : '\0';
    switch (c) {
    case '(':
        t->type = T_LPAREN;
        break;
    case ')':
        t->type = T_RPAREN;
        break;
    case '[':
        t->type = T_LBRACK;
        break;
    case ']':
        t->type = T_RBRACK;
        break;
    case ',':
        t->type = T_COMMA;
        break;
    case '=':
        if (c2 != '=' && c2 != '~') {
            return syntax_error(ps, pos, "unknown operator '='; did you mean '=='?");
        }
        t->type = c2 == '=' ? T_EQ : T_MATCH;
        t->len = 2;
        break;
    case '!':
        if (c2 != '=' && c2 != '~') {
            return syntax_error(ps, pos, "unknown operator '!'; write 'not'");
        }
        t->type = c2 == '=' ? T_NE : T_NMATCH;
        t->len = 2;
        break;
    case '<':
    case '>':
        t->type = c == '<' ? (c2 == '=' ? T_LE : T_LT) : (c2 == '=' ? T_GE : T_GT);
        t->len = c2 == '=' ? 2 : 1;
        break;
    case '&':
        return syntax_error(ps, pos, "unknown operator '%s'; write 'and'", c2 == '&' ? "&&" : "&");
    case '|':
        return syntax_error(ps, pos, "unknown operator '%s'; write 'or'", c2 == '|' ? "||" : "|");
    case '"':
    case '\'':
        rc = lex_string(ps, pos, t);
        break;
    default:
        if (is_digit(c) || ((c == '-' || c == '.') && (is_digit(c2) || (c2 == '.' && c == '-')))) {
            rc = lex_number(ps, pos, t);
        } else if (is_ident_start(c)) {
            rc = lex_ident(ps, pos, t);
        } else if (c >= 0x20 && c < 0x7f) {
            return syntax_error(ps, pos, "unexpected character '%c'", c);
        } else {
            return syntax_error(ps, pos, "unexpected byte 0x%02x", (unsigned char)c);
        }
        break;
    }
    *end = t->start + t->len;
    return rc;
}

static int advance(parser *ps)
{
    return lex_at(ps, ps->pos, &ps->tok, &ps->pos);
}

/* The token after the current one; T_END when it cannot be read (the error shows
 * when the parser gets there). */
static tok_type peek(parser *ps)
{
    token t;
    size_t end;
    spool_expr_error *saved = ps->err;
    ps->err = NULL;
    int rc = lex_at(ps, ps->pos, &t, &end);
    ps->err = saved;
    return rc ? T_END : t.type;
}

static int tok_is(const parser *ps, const char *word)
{
    return ps->tok.len == strlen(word) && memcmp(ps->src + ps->tok.start, word, ps->tok.len) == 0;
}

static int is_cmp_op(tok_type t)
{
    return (t >= T_EQ && t <= T_NMATCH) || t == T_IN;
}

/* ---- building the program ---- */

static int add_node(parser *ps, uint8_t kind, uint8_t op, uint32_t *idx)
{
    prog *p = ps->p;
    if (grow((void **)&p->nodes, p->n_nodes, &p->cap_nodes, sizeof(node))) {
        return -ENOMEM;
    }
    node *n = &p->nodes[p->n_nodes];
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->op = op;
    n->first = NONE;
    n->next = NONE;
    *idx = p->n_nodes++;
    return 0;
}

static int add_operand(parser *ps, const operand *o, uint32_t *idx)
{
    prog *p = ps->p;
    if (grow((void **)&p->ops, p->n_ops, &p->cap_ops, sizeof(operand))) {
        return -ENOMEM;
    }
    p->ops[p->n_ops] = *o;
    *idx = p->n_ops++;
    return 0;
}

/* Reserves n + 1 bytes in prog.bytes; *off is where they start. */
static int reserve_bytes(parser *ps, size_t n, size_t *off)
{
    prog *p = ps->p;
    if (p->n_bytes + n + 1 > p->cap_bytes) {
        size_t cap = p->cap_bytes ? p->cap_bytes : 64;
        while (cap < p->n_bytes + n + 1) {
            cap *= 2;
        }
        uint8_t *b = EXPR_REALLOC(p->bytes, cap);
        if (!b) {
            return -ENOMEM;
        }
        p->bytes = b;
        p->cap_bytes = cap;
    }
    *off = p->n_bytes;
    return 0;
}

/* Decodes string token t (escapes \" \' \\ \n \t \r; any other backslash stays as
 * written, so "\d+" reaches PCRE2 as \d+) into prog.bytes. */
static int add_string(parser *ps, const token *t, size_t *off, size_t *len)
{
    int rc = reserve_bytes(ps, t->len, off);
    if (rc) {
        return rc;
    }
    uint8_t *out = ps->p->bytes + *off;
    size_t n = 0;
    for (size_t i = t->start + 1; i < t->start + t->len - 1; i++) {
        char c = ps->src[i];
        if (c == '\\') {
            char e = ps->src[++i];
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case '"':
            case '\'':
            case '\\':
                c = e;
                break;
            default:
                out[n++] = '\\';
                c = e;
                break;
            }
        }
        out[n++] = (uint8_t)c;
    }
    out[n] = '\0';
    ps->p->n_bytes += n + 1;
    *len = n;
    return 0;
}

/* The source offset of decoded byte `at` of string token t (for regex errors). */
static size_t string_offset(const parser *ps, const token *t, size_t at)
{
    size_t n = 0;
    size_t i = t->start + 1;
    while (i < t->start + t->len - 1 && n < at) {
        if (ps->src[i] == '\\') {
            char e = ps->src[i + 1];
            n += strchr("nrt\"'\\", e) && e != '\0' ? 1 : 2;
            i += 2;
        } else {
            n++;
            i++;
        }
    }
    return i;
}

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    }
    return h;
}

/* The index of field `name`, added to prog.fields on first use. */
static int add_field(parser *ps, const char *name, size_t n, uint32_t *id)
{
    prog *p = ps->p;
    if (p->n_fields * 2 >= ps->hash_cap) {
        uint32_t cap = ps->hash_cap ? ps->hash_cap * 2 : 16;
        uint32_t *h = EXPR_MALLOC((size_t)cap * sizeof(*h));
        if (!h) {
            return -ENOMEM;
        }
        memset(h, 0, (size_t)cap * sizeof(*h));
        for (uint32_t f = 0; f < p->n_fields; f++) {
            const char *fn = (const char *)p->bytes + p->fields[f].off;
            uint32_t k = name_hash(fn, p->fields[f].len) & (cap - 1);
            while (h[k]) {
                k = (k + 1) & (cap - 1);
            }
            h[k] = f + 1;
        }
        gc_free(ps->hash, NULL);
        ps->hash = h;
        ps->hash_cap = cap;
    }
    uint32_t k = name_hash(name, n) & (ps->hash_cap - 1);
    for (; ps->hash[k]; k = (k + 1) & (ps->hash_cap - 1)) {
        const field_name *f = &p->fields[ps->hash[k] - 1];
        if (f->len == n && memcmp(p->bytes + f->off, name, n) == 0) {
            *id = ps->hash[k] - 1;
            return 0;
        }
    }
    size_t off;
    if (grow((void **)&p->fields, p->n_fields, &p->cap_fields, sizeof(field_name)) ||
        reserve_bytes(ps, n, &off)) {
        return -ENOMEM;
    }
    memcpy(p->bytes + off, name, n);
    p->bytes[off + n] = '\0';
    p->n_bytes += n + 1;
    p->fields[p->n_fields] = (field_name){.off = off, .len = n};
    ps->hash[k] = p->n_fields + 1;
    *id = p->n_fields++;
    return 0;
}

/*
 * "^/api" and "error" are literals: a prefix compare or memmem finds them faster than
 * pcre2_jit_match, with the same result (printable ASCII only, so UTF-8 and case
 * folding cannot differ; no metacharacter, so no option can change the meaning).
 */
static void literal_regex(const uint8_t *pat, size_t len, regex *r)
{
    size_t start = len > 0 && pat[0] == '^' ? 1 : 0;
    r->kind = RX_PCRE;
    for (size_t i = start; i < len; i++) {
        if (pat[i] < 0x20 || pat[i] >= 0x7f || strchr("\\^$.[]|()?*+{}", pat[i])) {
            return;
        }
    }
    r->kind = start ? RX_PREFIX : RX_SUBSTRING;
    r->off = start;
    r->len = len - start;
}

static int compile_regex(parser *ps, const token *t, uint32_t *idx)
{
    size_t off;
    size_t len;
    prog *p = ps->p;
    int rc = add_string(ps, t, &off, &len);
    if (rc) {
        return rc;
    }
    if (grow((void **)&p->rxs, p->n_rxs, &p->cap_rxs, sizeof(regex))) {
        return -ENOMEM;
    }
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile(p->bytes + off, len,
                                   PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C,
                                   &code, &at, p->cctx);
    if (!re) {
        if (code == PCRE2_ERROR_HEAP_FAILED) {
            return -ENOMEM;
        }
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0) {
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        }
        return syntax_error(ps, string_offset(ps, t, at), "invalid regex: %s at offset %zu",
                            (const char *)msg, (size_t)at);
    }
    /* Without JIT (not built, or out of executable memory) the interpreter matches. */
    regex *r = &p->rxs[p->n_rxs];
    r->code = re;
    literal_regex(p->bytes + off, len, r);
    r->off += off;
    r->jit = r->kind == RX_PCRE && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    *idx = p->n_rxs++;
    return 0;
}

/* ---- the parser ---- */

static int parse_or(parser *ps, uint32_t *out);

static int nest(parser *ps, size_t at)
{
    if (++ps->depth > SPOOL_EXPR_MAX_DEPTH) {
        return syntax_error(ps, at,
                            "expression nested too deeply: more than %d levels of '(' and 'not'",
                            SPOOL_EXPR_MAX_DEPTH);
    }
    return 0;
}

/* "and" when the current token is AND (or And, ...): a user writing SQL. */
static const char *uppercase_keyword(const parser *ps)
{
    static const char *const words[] = {"and", "or", "not", "in"};
    if (ps->tok.type != T_IDENT) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (ps->tok.len == strlen(words[i]) &&
            strncasecmp(ps->src + ps->tok.start, words[i], ps->tok.len) == 0) {
            return words[i];
        }
    }
    return NULL;
}

static int expect_tok(parser *ps, tok_type type, const char *what, size_t open)
{
    if (ps->tok.type == type) {
        return advance(ps);
    }
    const char *kw = uppercase_keyword(ps);
    if (kw) {
        return syntax_error(ps, ps->tok.start, "operators are lowercase: write '%s'", kw);
    }
    char d[96];
    describe(ps, &ps->tok, d, sizeof(d));
    if (open == SIZE_MAX) {
        return syntax_error(ps, ps->tok.start, "expected %s, found %s", what, d);
    }
    return syntax_error(ps, ps->tok.start, "expected %s to close '%c' at column %zu, found %s",
                        what, ps->src[open], open + 1, d);
}

static size_t edit_distance(const char *a, size_t n, const char *b, size_t m)
{
    size_t row[16];
    if (m >= sizeof(row) / sizeof(row[0])) {
        return SIZE_MAX;
    }
    for (size_t j = 0; j <= m; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = up + 1 < best ? up + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            diag = up;
            row[j] = best;
        }
    }
    return row[m];
}

static int unknown_function(parser *ps)
{
    static const char *const funcs[] = {"exists", "field"};
    const char *name = ps->src + ps->tok.start;
    char ex[48];
    excerpt(ps, ps->tok.start, ps->tok.len, ex, sizeof(ex));
    for (size_t i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++) {
        if (ps->tok.len < 32 && edit_distance(name, ps->tok.len, funcs[i], strlen(funcs[i])) <= 2) {
            return syntax_error(ps, ps->tok.start, "unknown function '%s', did you mean '%s'?", ex,
                                funcs[i]);
        }
    }
    return syntax_error(ps, ps->tok.start,
                        "unknown function '%s'; the functions are exists() and field()", ex);
}

/* field NAME or field("any name"); the current token is the name or `field`. */
static int parse_field(parser *ps, uint32_t *id)
{
    if (ps->tok.type == T_IDENT && peek(ps) != T_LPAREN) {
        int rc = add_field(ps, ps->src + ps->tok.start, ps->tok.len, id);
        return rc ? rc : advance(ps);
    }
    if (ps->tok.type == T_IDENT && !tok_is(ps, "field")) {
        return unknown_function(ps);
    }
    if (ps->tok.type != T_IDENT) {
        char d[96];
        return syntax_error(ps, ps->tok.start, "expected a field name, found %s",
                            describe(ps, &ps->tok, d, sizeof(d)));
    }
    int rc = advance(ps);
    size_t open = ps->tok.start;
    if (rc || (rc = advance(ps))) { /* the '(' peek() saw */
        return rc;
    }
    if (ps->tok.type != T_STRING) {
        char d[96];
        return syntax_error(ps, ps->tok.start, "field() takes a quoted name, found %s",
                            describe(ps, &ps->tok, d, sizeof(d)));
    }
    size_t off;
    size_t len;
    token name = ps->tok;
    if ((rc = add_string(ps, &name, &off, &len))) {
        return rc;
    }
    ps->p->n_bytes -= len + 1; /* only the copy add_field makes stays */
    if (len == 0) {
        return syntax_error(ps, name.start, "field() takes a non-empty name");
    }
    char *tmp = EXPR_MALLOC(len);
    if (!tmp) {
        return -ENOMEM;
    }
    memcpy(tmp, ps->p->bytes + off, len);
    rc = add_field(ps, tmp, len, id);
    EXPR_FREE(tmp);
    if (rc || (rc = advance(ps))) {
        return rc;
    }
    return expect_tok(ps, T_RPAREN, "')'", open);
}

/* A value: a field, field("..."), a string, a number, true or false. */
static int parse_operand(parser *ps, operand *o, const char *after)
{
    memset(o, 0, sizeof(*o));
    char d[96];
    switch (ps->tok.type) {
    case T_IDENT:
        o->kind = OP_FIELD;
        return parse_field(ps, &o->field);
    case T_STRING: {
        o->kind = OP_STR;
        int rc = add_string(ps, &ps->tok, &o->off, &o->len);
        return rc ? rc : advance(ps);
    }
    case T_NUMBER:
    case T_TRUE:
    case T_FALSE: {
        o->kind = ps->tok.type == T_NUMBER ? OP_NUM : OP_STR;
        int rc = reserve_bytes(ps, ps->tok.len, &o->off);
        if (rc) {
            return rc;
        }
        memcpy(ps->p->bytes + o->off, ps->src + ps->tok.start, ps->tok.len);
        ps->p->bytes[o->off + ps->tok.len] = '\0';
        ps->p->n_bytes += ps->tok.len + 1;
        o->len = ps->tok.len;
        if (o->kind == OP_NUM) {
            spool__expr_parse_num(ps->p->bytes + o->off, o->len, &o->n); /* the lexer checked it */
        }
        return advance(ps);
    }
    default:
        if (after) {
            return syntax_error(ps, ps->tok.start,
                                "expected a field, string or number after '%s', found %s", after,
                                describe(ps, &ps->tok, d, sizeof(d)));
        }
        return syntax_error(ps, ps->tok.start, "expected a condition, found %s",
                            describe(ps, &ps->tok, d, sizeof(d)));
    }
}

/* '[' item {',' item} [','] ']' after `in`; items are appended after the left operand. */
static int parse_list(parser *ps, uint32_t *first, uint32_t *count)
{
    char d[96];
    size_t open = ps->tok.start;
    if (ps->tok.type != T_LBRACK) {
        return syntax_error(ps, ps->tok.start, "expected '[' after 'in', found %s",
                            describe(ps, &ps->tok, d, sizeof(d)));
    }
    int rc = advance(ps);
    *first = ps->p->n_ops;
    *count = 0;
    while (rc == 0 && ps->tok.type != T_RBRACK) {
        tok_type t = ps->tok.type;
        if (t != T_STRING && t != T_NUMBER && t != T_TRUE && t != T_FALSE) {
            if (t == T_END) {
                return expect_tok(ps, T_RBRACK, "']'", open);
            }
            return syntax_error(ps, ps->tok.start,
                                "list items must be strings or numbers, found %s",
                                describe(ps, &ps->tok, d, sizeof(d)));
        }
        operand o;
        uint32_t idx;
        if ((rc = parse_operand(ps, &o, "[")) || (rc = add_operand(ps, &o, &idx))) {
            return rc;
        }
        (*count)++;
        if (ps->tok.type == T_COMMA) {
            rc = advance(ps);
        } else if (ps->tok.type != T_RBRACK) {
            return expect_tok(ps, T_RBRACK, "',' or ']'", open);
        }
    }
    return rc ? rc : advance(ps);
}

/* A value followed by a comparison, '=~'/'!~' and a pattern, or 'in' and a list. */
static int parse_comparison(parser *ps, uint32_t *out)
{
    char d[96];
    char ex[48];
    token lhs_tok = ps->tok;
    operand lhs;
    uint32_t a;
    int rc = parse_operand(ps, &lhs, NULL);
    if (rc || (rc = add_operand(ps, &lhs, &a))) {
        return rc;
    }
    tok_type op = ps->tok.type;
    token op_tok = ps->tok;
    if (!is_cmp_op(op)) {
        size_t end = ps->tok.start;
        while (end > lhs_tok.start && is_space(ps->src[end - 1])) {
            end--;
        }
        excerpt(ps, lhs_tok.start, end - lhs_tok.start, ex, sizeof(ex));
        const char *kw = uppercase_keyword(ps);
        if (kw) {
            return syntax_error(ps, ps->tok.start, "operators are lowercase: write '%s'", kw);
        }
        if (ps->tok.type == T_END || ps->tok.type == T_AND || ps->tok.type == T_OR ||
            ps->tok.type == T_RPAREN) {
            if (lhs.kind == OP_FIELD) {
                return syntax_error(
                    ps, lhs_tok.start,
                    "'%s' is a field, not a condition: compare it (%s == \"...\") or "
                    "test exists(%s)",
                    ex, ex, ex);
            }
            return syntax_error(ps, lhs_tok.start, "'%s' is a value, not a condition", ex);
        }
        return syntax_error(ps, ps->tok.start,
                            "expected an operator (==, !=, <, <=, >, >=, =~, !~, in) "
                            "after '%s', found %s",
                            ex, describe(ps, &ps->tok, d, sizeof(d)));
    }
    if ((rc = advance(ps))) {
        return rc;
    }
    char opname[8];
    excerpt(ps, op_tok.start, op_tok.len, opname, sizeof(opname));
    if (op == T_MATCH || op == T_NMATCH) {
        if (ps->tok.type != T_STRING) {
            return syntax_error(ps, ps->tok.start,
                                "the right side of '%s' must be a quoted regex, found %s", opname,
                                describe(ps, &ps->tok, d, sizeof(d)));
        }
        token pat = ps->tok;
        uint32_t rx = 0;
        if ((rc = compile_regex(ps, &pat, &rx)) ||
            (rc = add_node(ps, N_MATCH, op == T_NMATCH, out))) {
            return rc;
        }
        ps->p->nodes[*out].a = a;
        ps->p->nodes[*out].b = rx;
        rc = advance(ps);
    } else if (op == T_IN) {
        uint32_t first = 0;
        uint32_t count = 0;
        if ((rc = parse_list(ps, &first, &count)) || (rc = add_node(ps, N_IN, 0, out))) {
            return rc;
        }
        ps->p->nodes[*out].a = a;
        ps->p->nodes[*out].b = first;
        ps->p->nodes[*out].count = count;
    } else {
        operand rhs;
        uint32_t b;
        if ((rc = parse_operand(ps, &rhs, opname)) || (rc = add_operand(ps, &rhs, &b)) ||
            (rc = add_node(ps, N_CMP, (uint8_t)(CMP_EQ + (op - T_EQ)), out))) {
            return rc;
        }
        ps->p->nodes[*out].a = a;
        ps->p->nodes[*out].b = b;
    }
    if (rc == 0 && is_cmp_op(ps->tok.type)) {
        return syntax_error(ps, ps->tok.start,
                            "comparisons cannot be chained: join them with 'and'");
    }
    return rc;
}

/* '(' condition ')', exists(f), true, false, or a comparison. */
static int parse_primary(parser *ps, uint32_t *out)
{
    int rc;
    tok_type t = ps->tok.type;
    if (t == T_LPAREN) {
        size_t open = ps->tok.start;
        if ((rc = nest(ps, open)) || (rc = advance(ps)) || (rc = parse_or(ps, out)) ||
            (rc = expect_tok(ps, T_RPAREN, "')'", open))) {
            return rc;
        }
        ps->depth--;
        if (is_cmp_op(ps->tok.type)) {
            return syntax_error(
                ps, ps->tok.start,
                "a condition cannot be compared: '(...)' holds a condition, not a value");
        }
        return 0;
    }
    if ((t == T_TRUE || t == T_FALSE) && !is_cmp_op(peek(ps))) {
        if ((rc = add_node(ps, N_CONST, t == T_TRUE, out))) {
            return rc;
        }
        return advance(ps);
    }
    if (t == T_IDENT && peek(ps) == T_LPAREN) {
        if (tok_is(ps, "field")) {
            return parse_comparison(ps, out);
        }
        if (!tok_is(ps, "exists")) {
            return unknown_function(ps);
        }
        if ((rc = advance(ps))) {
            return rc;
        }
        size_t open = ps->tok.start;
        uint32_t id;
        if ((rc = advance(ps))) {
            return rc;
        }
        if (ps->tok.type != T_IDENT) {
            char d[96];
            return syntax_error(ps, ps->tok.start, "exists() takes a field name, found %s",
                                describe(ps, &ps->tok, d, sizeof(d)));
        }
        if ((rc = parse_field(ps, &id)) || (rc = expect_tok(ps, T_RPAREN, "')'", open)) ||
            (rc = add_node(ps, N_EXISTS, 0, out))) {
            return rc;
        }
        ps->p->nodes[*out].a = id;
        if (is_cmp_op(ps->tok.type)) {
            return syntax_error(ps, ps->tok.start,
                                "exists() is a condition and cannot be compared");
        }
        return 0;
    }
    return parse_comparison(ps, out);
}

static int parse_not(parser *ps, uint32_t *out)
{
    if (ps->tok.type != T_NOT) {
        return parse_primary(ps, out);
    }
    size_t at = ps->tok.start;
    int rc;
    if ((rc = nest(ps, at)) || (rc = advance(ps))) {
        return rc;
    }
    tok_type t = ps->tok.type;
    if (t == T_STRING || t == T_NUMBER || (t == T_IDENT && peek(ps) != T_LPAREN) ||
        (t == T_IDENT && tok_is(ps, "field")) ||
        ((t == T_TRUE || t == T_FALSE) && is_cmp_op(peek(ps)))) {
        return syntax_error(ps, at,
                            "'not' applies to the condition right after it and binds tighter "
                            "than comparisons: write 'not (a == b)', or use '!=' / '!~'");
    }
    uint32_t child;
    if ((rc = parse_not(ps, &child)) || (rc = add_node(ps, N_NOT, 0, out))) {
        return rc;
    }
    ps->p->nodes[*out].first = child;
    ps->depth--;
    return 0;
}

/* sub {sep sub}: one node, or an n-ary `kind` node over a sibling list. */
static int parse_chain(parser *ps, tok_type sep, uint8_t kind, int (*sub)(parser *, uint32_t *),
                       uint32_t *out)
{
    uint32_t first;
    int rc = sub(ps, &first);
    if (rc || ps->tok.type != sep) {
        *out = first;
        return rc;
    }
    if ((rc = add_node(ps, kind, 0, out))) {
        return rc;
    }
    ps->p->nodes[*out].first = first;
    uint32_t last = first;
    while (ps->tok.type == sep) {
        uint32_t next;
        if ((rc = advance(ps)) || (rc = sub(ps, &next))) {
            return rc;
        }
        ps->p->nodes[last].next = next;
        last = next;
    }
    return 0;
}

static int parse_and(parser *ps, uint32_t *out)
{
    return parse_chain(ps, T_AND, N_AND, parse_not, out);
}

static int parse_or(parser *ps, uint32_t *out)
{
    return parse_chain(ps, T_OR, N_OR, parse_and, out);
}

static int parse(parser *ps)
{
    int rc = advance(ps);
    if (rc) {
        return rc;
    }
    if (ps->tok.type == T_END) {
        return syntax_error(ps, ps->tok.start, "empty expression");
    }
    if ((rc = parse_or(ps, &ps->p->root))) {
        return rc;
    }
    if (ps->tok.type == T_END) {
        return 0;
    }
    if (ps->tok.type == T_RPAREN) {
        return syntax_error(ps, ps->tok.start, "unexpected ')' without a matching '('");
    }
    const char *kw = uppercase_keyword(ps);
    if (kw) {
        return syntax_error(ps, ps->tok.start, "operators are lowercase: write '%s'", kw);
    }
    char d[96];
    return syntax_error(ps, ps->tok.start,
                        "expected 'and', 'or' or the end of the expression, found %s",
                        describe(ps, &ps->tok, d, sizeof(d)));
}

/* ---- compile ---- */

int spool_expr_compile(const char *src, size_t len, spool_expr **out, spool_expr_error *err)
{
    *out = NULL;
    if (err) {
        err->column = 0;
        err->message[0] = '\0';
    }
    parser ps = {.src = src, .len = len, .err = err};
    if (len > EXPR_MAX_LEN) {
        return syntax_error(&ps, 0, "expression too long: %zu bytes, the limit is %u", len,
                            EXPR_MAX_LEN);
    }
    spool__expr_numbers_init();
    int rc = -ENOMEM;
    prog *p = EXPR_MALLOC(sizeof(*p));
    if (!p) {
        goto out;
    }
    memset(p, 0, sizeof(*p));
    atomic_init(&p->refs, 1);
    ps.p = p;
    p->gctx = pcre2_general_context_create(gc_malloc, gc_free, NULL);
    p->cctx = p->gctx ? pcre2_compile_context_create(p->gctx) : NULL;
    if (!p->cctx) {
        goto out;
    }
    if ((rc = parse(&ps))) {
        goto out;
    }
    rc = -ENOMEM;
    if (p->n_rxs) {
        p->mctx = pcre2_match_context_create(p->gctx);
        if (!p->mctx) {
            goto out;
        }
        pcre2_set_heap_limit(p->mctx, RX_HEAP_LIMIT_KIB);
        pcre2_set_match_limit(p->mctx, RX_MATCH_LIMIT);
    }
    rc = spool__expr_handle_new(p, out);
out:
    gc_free(ps.hash, NULL);
    if (rc) {
        spool__expr_prog_free(p);
        if (rc == -ENOMEM && err) {
            err->column = 0;
            snprintf(err->message, sizeof(err->message), "out of memory");
        }
    }
    return rc;
}
