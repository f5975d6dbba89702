/*
 * expr_record.c: conditions over a record's fields (spool_expr_eval_record), the one
 * field accessor conditions, templates and processors share (spool_record_field).
 *
 * Kept apart from expr_parse.c and expr_eval.c, which build alone (fuzzing, unit tests)
 * without the rest of the core. No allocation: the timestamp's decimal text goes to a
 * scratch buffer on the caller's stack, which lives until the evaluation returns; the
 * evaluator reads each field at most once per evaluation, so one buffer is enough.
 */
#include "expr.h"

typedef struct record_fields {
    const spool_record *r;
    const char *topic;
    char scratch[SPOOL_FIELD_SCRATCH];
} record_fields;

static int read_field(void *ctx, const char *name, size_t name_len, const uint8_t **val,
                      size_t *val_len)
{
    record_fields *rf = ctx;
    return spool_record_field(rf->r, rf->topic, name, name_len, rf->scratch, val, val_len);
}

int spool_expr_eval_record(const spool_expr *e, const spool_record *r, const char *topic)
{
    record_fields rf = {.r = r, .topic = topic};
    return spool_expr_eval(e, read_field, &rf);
}
