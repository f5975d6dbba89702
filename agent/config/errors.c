/*
 * errors.c: the list of configuration errors, its printing, and the
 * "did you mean" helper used by the validator.
 *
 * Errors are collected, never printed here, except by spool_errors_print
 * when the caller asks. Each error owns copies of its file, path and
 * message. Running out of memory while adding an error drops that error
 * silently (there is nobody left to tell); everything else is exact.
 * Not thread-safe: one spool_errors belongs to one loader.
 */
#define _GNU_SOURCE /* vasprintf */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

void spool_errors_addv(spool_errors *e, const char *file, int line, int column, const char *path,
                       const char *fmt, va_list ap)
{
    if (e->count == e->cap) {
        size_t cap = e->cap != 0 ? e->cap * 2 : 8;
        spool_error *items = realloc(e->items, cap * sizeof(*items));
        if (items == NULL) {
            return;
        }
        e->items = items;
        e->cap = cap;
    }
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) {
        return;
    }
    spool_error *it = &e->items[e->count];
    it->file = file != NULL ? strdup(file) : NULL;
    it->line = line;
    it->column = column;
    it->path = dup_or_empty(path);
    it->message = msg;
    if ((file != NULL && it->file == NULL) || it->path == NULL) {
        free(it->file);
        free(it->path);
        free(it->message);
        return;
    }
    e->count++;
}

void spool_errors_add(spool_errors *e, const char *file, int line, int column, const char *path,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    spool_errors_addv(e, file, line, column, path, fmt, ap);
    va_end(ap);
}

void spool_errors_print(const spool_errors *e, void *stream)
{
    FILE *out = stream;
    for (size_t i = 0; i < e->count; i++) {
        const spool_error *it = &e->items[i];
        if (it->file != NULL && it->file[0] != '\0') {
            fprintf(out, "%s:", it->file);
            if (it->line > 0) {
                fprintf(out, "%d:", it->line);
                if (it->column > 0) {
                    fprintf(out, "%d:", it->column);
                }
            }
            fputc(' ', out);
        }
        if (it->path != NULL && it->path[0] != '\0') {
            fprintf(out, "%s: ", it->path);
        }
        fprintf(out, "%s\n", it->message);
    }
}

static int error_cmp(const void *a, const void *b)
{
    const spool_error *x = a, *y = b;
    int c = strcmp(x->file != NULL ? x->file : "", y->file != NULL ? y->file : "");
    if (c != 0) {
        return c;
    }
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    if (x->column != y->column) {
        return x->column < y->column ? -1 : 1;
    }
    return 0;
}

void spool_errors_sort(spool_errors *e)
{
    /* A stable insertion sort over pointers into a copy: errors at the
     * same position keep the order they were added in. Lists are short. */
    if (e->count < 2) {
        return;
    }
    size_t n = e->count;
    spool_error **idx = malloc(n * sizeof(*idx));
    spool_error *copy = malloc(n * sizeof(*copy));
    if (idx == NULL || copy == NULL) {
        goto out;
    }
    memcpy(copy, e->items, n * sizeof(*copy));
    for (size_t i = 0; i < n; i++) {
        idx[i] = &copy[i];
    }
    for (size_t i = 1; i < n; i++) {
        spool_error *p = idx[i];
        size_t j = i;
        while (j > 0 && error_cmp(idx[j - 1], p) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = p;
    }
    for (size_t i = 0; i < n; i++) {
        e->items[i] = *idx[i];
    }
out:
    free(idx);
    free(copy);
}

void spool_errors_free(spool_errors *e)
{
    if (e == NULL) {
        return;
    }
    for (size_t i = 0; i < e->count; i++) {
        free(e->items[i].file);
        free(e->items[i].path);
        free(e->items[i].message);
    }
    free(e->items);
    e->items = NULL;
    e->count = 0;
    e->cap = 0;
}

/* Optimal string alignment distance (Levenshtein plus adjacent
 * transpositions, so "pahts" is 1 from "paths"), case-insensitive. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64) {
        return (size_t)-1;
    }
    size_t d[65][65];
    for (size_t i = 0; i <= n; i++) {
        d[i][0] = i;
    }
    for (size_t j = 0; j <= m; j++) {
        d[0][j] = j;
    }
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            size_t cost = ca == cb ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) {
                best = d[i][j - 1] + 1;
            }
            if (d[i - 1][j - 1] + cost < best) {
                best = d[i - 1][j - 1] + cost;
            }
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best) {
                best = d[i - 2][j - 2] + 1;
            }
            d[i][j] = best;
        }
    }
    return d[n][m];
}

const char *spool_did_you_mean(const char *word, const char *const *candidates, size_t n)
{
    size_t len = strlen(word);
    /* Allowed edits: 1 for short words, 2 up to 8 characters, then 3. */
    size_t limit = len <= 3 ? 1 : (len <= 8 ? 2 : 3);
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (candidates[i] == NULL) {
            continue;
        }
        size_t d = edit_distance(word, candidates[i]);
        if (d <= limit && d < best_d) {
            best = candidates[i];
            best_d = d;
        }
    }
    return best;
}
