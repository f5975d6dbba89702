/*
 * expr_int.h: the compiled program of the condition language, shared by expr_parse.c
 * (lexer, parser, compile) and expr_eval.c (numbers, handles, evaluation). Private to
 * those two files and to tests/unit/test_expr.c, which compiles both into itself.
 *
 * Every allocation goes through EXPR_MALLOC/EXPR_REALLOC/EXPR_FREE; a file that includes
 * this header may define them first (the unit test routes them to cmocka).
 */
#ifndef SPOOL_EXPR_INT_H
#define SPOOL_EXPR_INT_H

#include "expr.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#ifndef EXPR_MALLOC
#define EXPR_MALLOC(n) malloc(n)
#define EXPR_REALLOC(p, n) realloc((p), (n))
#define EXPR_FREE(p) free(p)
#endif

#define EXPR_MAX_LEN (1u << 20) /* bytes of source a compile accepts */
#define NUM_MAX_LEN 127         /* longer values are never numbers */
#define NONE UINT32_MAX         /* no node */
#define RX_HEAP_LIMIT_KIB 4096  /* PCRE2 backtracking memory per match, without JIT */
#define RX_MATCH_LIMIT 1000000  /* PCRE2 match limit: bounds the CPU one match may take */

/* ---- the program ---- */

typedef struct num {
    int is_int; /* 1: i holds the value exactly; 0: d holds it */
    int64_t i;
    double d;
} num;

enum { OP_FIELD, OP_STR, OP_NUM };

typedef struct operand {
    uint8_t kind;   /* OP_FIELD, OP_STR (always compared as bytes), OP_NUM */
    uint32_t field; /* OP_FIELD: index into prog.fields */
    size_t off;     /* OP_STR, OP_NUM: the literal's bytes in prog.bytes (NUM: as written) */
    size_t len;     /* their length */
    num n;          /* OP_NUM: the value, parsed at compile */
} operand;

enum { N_CONST, N_AND, N_OR, N_NOT, N_CMP, N_MATCH, N_IN, N_EXISTS };
enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE };

typedef struct node {
    uint8_t kind;   /* N_* */
    uint8_t op;     /* N_CONST: the value; N_CMP: CMP_*; N_MATCH: 1 = '!~' */
    uint32_t first; /* N_AND, N_OR, N_NOT: first child */
    uint32_t next;  /* next sibling in the parent's list, NONE at the end */
    uint32_t a;     /* N_CMP, N_MATCH, N_IN: left operand; N_EXISTS: field index */
    uint32_t b;     /* N_CMP: right operand; N_MATCH: regex index; N_IN: first item */
    uint32_t count; /* N_IN: items (operands b .. b + count - 1) */
} node;

typedef struct field_name {
    size_t off; /* in prog.bytes, NUL-terminated */
    size_t len;
} field_name;

enum { RX_PCRE, RX_PREFIX, RX_SUBSTRING };

typedef struct regex {
    pcre2_code *code;
    int jit;    /* 1 = JIT-compiled: pcre2_jit_match */
    int kind;   /* RX_PCRE, or a literal matched without PCRE2: "^abc" or "abc" */
    size_t off; /* RX_PREFIX, RX_SUBSTRING: the literal in prog.bytes */
    size_t len;
} regex;

typedef struct prog {
    atomic_uint refs; /* handles sharing this program */
    node *nodes;
    uint32_t n_nodes, cap_nodes;
    operand *ops;
    uint32_t n_ops, cap_ops;
    uint8_t *bytes; /* literals and field names */
    size_t n_bytes, cap_bytes;
    field_name *fields;
    uint32_t n_fields, cap_fields;
    regex *rxs;
    uint32_t n_rxs, cap_rxs;
    uint32_t root;
    pcre2_general_context *gctx; /* routes PCRE2's allocations to EXPR_MALLOC */
    pcre2_compile_context *cctx;
    pcre2_match_context *mctx; /* limits; NULL when there is no regex */
} prog;

/* The per-handle state that evaluation changes. */
typedef struct slot {
    uint32_t gen;    /* evaluation this slot was filled in; stale when != expr_state.gen */
    int8_t found;    /* 1 = the field exists */
    int8_t numstate; /* 0 = not parsed yet, 1 = a number (n), 2 = not a number */
    const uint8_t *val;
    size_t len;
    num n;
} slot;

typedef struct expr_state {
    uint32_t gen;          /* current evaluation, never 0 */
    uint64_t match_errors; /* regex matches that ended in an error */
    pcre2_match_data *md;  /* NULL when there is no regex */
    slot slots[];          /* one per prog.fields entry */
} expr_state;

struct spool_expr {
    prog *p;
    expr_state *st;
};

/* PCRE2's allocator callbacks (a general context), routed to EXPR_MALLOC/EXPR_FREE. */
static inline void *gc_malloc(size_t n, void *data)
{
    (void)data;
    return EXPR_MALLOC(n);
}

static inline void gc_free(void *ptr, void *data)
{
    (void)data;
    if (ptr) {
        EXPR_FREE(ptr);
    }
}

static inline int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* ---- expr_eval.c ---- */

/* Makes the "C" locale that number parsing uses; once per process, any thread. */
void spool__expr_numbers_init(void);

/*
 * Parses a complete decimal number: -?(D+(.D*)?|.D+)([eE][+-]?D+)? with nothing around
 * it, at most NUM_MAX_LEN bytes, finite. Integers that fit stay exact (int64).
 * Returns 1 and *out, or 0 when the bytes are not such a number.
 */
int spool__expr_parse_num(const uint8_t *p, size_t n, num *out);

/* Frees a program and everything it owns; accepts NULL and a half-built program. */
void spool__expr_prog_free(prog *p);

/* A new handle on `p` (the caller accounts for the reference): 0 or -ENOMEM. */
int spool__expr_handle_new(prog *p, spool_expr **out);

#endif
