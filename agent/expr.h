/*
 * expr.h: the condition language of processors and streams (docs/conditions.md).
 *
 * `status >= 500 and path =~ "^/api"`, `exists(user)`, `level in ["error", "fatal"]`:
 * compiled once (at config load), evaluated per record through a field accessor, so it
 * works on any record representation. Core-internal for now; nothing here depends on
 * core types, so it can move to spool/spool.h unchanged.
 *
 * Threads: compiling, cloning and freeing may happen on any thread. One spool_expr is
 * evaluated by one thread at a time (it owns PCRE2 match data and a per-evaluation field
 * cache); give each further thread its own handle with spool_expr_clone(), which shares
 * the immutable compiled program and allocates only the per-thread state.
 */
#ifndef SPOOL_EXPR_H
#define SPOOL_EXPR_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_EXPR_MAX_DEPTH 64 /* nesting of '(' and 'not' a compile accepts */

typedef struct spool_expr spool_expr;

/* Why a compile failed. Filled by spool_expr_compile on -EINVAL (and on -ENOMEM, with
 * column 0). No allocation: the message is truncated to fit. */
typedef struct spool_expr_error {
    size_t column;     /* 1-based byte column inside the expression; 0 = not positional */
    char message[256]; /* one line, no trailing period, e.g. "expected ')'" */
} spool_expr_error;

/*
 * Reads field `name` (name_len bytes, also NUL-terminated) of the record in `ctx`.
 * Returns 1 and sets *val and *val_len when the field exists (the bytes must stay valid
 * until spool_expr_eval returns), 0 when it is missing. Called at most once per field
 * per evaluation.
 */
typedef int (*spool_expr_field_fn)(void *ctx, const char *name, size_t name_len,
                                   const uint8_t **val, size_t *val_len);

/* Called once per distinct field an expression reads, in order of first appearance.
 * A non-zero return stops the walk and is returned by spool_expr_fields. */
typedef int (*spool_expr_fields_fn)(void *arg, const char *name, size_t name_len);

/*
 * Compiles the `len` bytes at `src` (not necessarily NUL-terminated). On success returns
 * 0 and *out (free with spool_expr_free). On a syntax or regex error returns -EINVAL and
 * fills *err (when err is not NULL) with the 1-based column and a message; on allocation
 * failure returns -ENOMEM. *out is set to NULL on failure.
 */
int spool_expr_compile(const char *src, size_t len, spool_expr **out, spool_expr_error *err);

/*
 * Evaluates `e` against the record that `fn` reads from `ctx`. Returns 1 when the
 * condition holds, 0 when not. `e` is const but not thread-safe: its per-handle state
 * (match data, field cache) changes; one thread per handle. Never allocates (without
 * JIT, PCRE2 may grow the handle's backtracking memory once, see docs/conditions.md).
 * A regex match that fails for a reason other than "no match" (PCRE2's match limit, the
 * JIT stack) counts as no match and is counted in spool_expr_match_errors.
 */
int spool_expr_eval(const spool_expr *e, spool_expr_field_fn fn, void *ctx);

/* Lists the distinct fields `e` reads (see spool_expr_fields_fn). Returns 0, or the
 * callback's first non-zero return. */
int spool_expr_fields(const spool_expr *e, spool_expr_fields_fn cb, void *arg);

/* A second handle on the same compiled program, for another thread: 0 or -ENOMEM. */
int spool_expr_clone(const spool_expr *e, spool_expr **out);

/* Regex matches of this handle that ended in an error (counted as no match). */
uint64_t spool_expr_match_errors(const spool_expr *e);

/* Frees a handle; the compiled program goes with its last handle. Accepts NULL. */
void spool_expr_free(spool_expr *e);

#endif
