/*
 * options_free.c: spool_options_free, the release of every value an option
 * table filled into a context (strings, lists, maps, tables). Scalars need nothing.
 * Freed fields are reset to NULL / empty, so calling it twice is harmless.
 * Does not free ctx itself.
 */
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"

static void map_free(spool_strmap *m)
{
    for (size_t i = 0; i < m->count; i++) {
        free(m->keys[i]);
        free(m->values[i]);
    }
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof(*m));
}

void spool_options_free(const spool_option *table, void *ctx)
{
    if (table == NULL || ctx == NULL) {
        return;
    }
    for (const spool_option *o = table; o->name != NULL; o++) {
        char *field = (char *)ctx + o->offset;
        if (o->type == SPOOL_OPT_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (o->type == SPOOL_OPT_LIST) {
            spool_strlist *l = (spool_strlist *)field;
            for (size_t i = 0; i < l->count; i++) {
                free(l->items[i]);
            }
            free(l->items);
            memset(l, 0, sizeof(*l));
        } else if (o->type == SPOOL_OPT_MAP) {
            map_free((spool_strmap *)field);
        } else if (o->type == SPOOL_OPT_TABLE) {
            spool_strmaplist *t = (spool_strmaplist *)field;
            for (size_t i = 0; i < t->count; i++) {
                map_free(&t->items[i]);
            }
            free(t->items);
            memset(t, 0, sizeof(*t));
        }
    }
}
