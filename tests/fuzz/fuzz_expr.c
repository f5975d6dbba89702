/*
 * fuzz_expr.c: libFuzzer target for the condition language (agent/expr_*.c).
 *
 * Compiles the input as an expression. A refused input must come with a column inside
 * the expression (1 .. size + 1) and a non-empty message. An accepted one is evaluated
 * against a fixed record, twice and through a clone, which must agree; the fields it
 * lists must be non-empty and NUL-terminated. Any violation aborts. Built with clang
 * (-fsanitize=fuzzer); replay.c runs the corpus through the same function in gcc builds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "expr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    const char *value;
} record[] = {
    {"status", "503"},    {"path", "/api/v1/users/42"},   {"level", "error"},
    {"key", "web-1"},     {"value", "GET /api HTTP/1.1"}, {"timestamp", "1700000000000"},
    {"topic", "app"},     {"http.status", "-1.5e3"},      {"empty", ""},
    {"bin", "a\xff\xfe"}, {"user agent", "curl/8.0"},
};

static int get(void *ctx, const char *name, size_t name_len, const uint8_t **val, size_t *val_len)
{
    unsigned *calls = ctx;
    (*calls)++;
    if (name_len == 0 || name[name_len] != '\0') {
        abort();
    }
    for (size_t i = 0; i < sizeof(record) / sizeof(record[0]); i++) {
        if (strlen(record[i].name) == name_len && memcmp(record[i].name, name, name_len) == 0) {
            *val = (const uint8_t *)record[i].value;
            *val_len = strlen(record[i].value);
            return 1;
        }
    }
    return 0;
}

static int field(void *arg, const char *name, size_t len)
{
    size_t *n = arg;
    if (len == 0 || name[len] != '\0') {
        abort();
    }
    (*n)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spool_expr *e = NULL;
    spool_expr_error err;
    int rc = spool_expr_compile((const char *)data, size, &e, &err);
    if (rc != 0) {
        if (e != NULL || (rc != -EINVAL && rc != -ENOMEM) ||
            memchr(err.message, '\0', sizeof(err.message)) == NULL || err.message[0] == '\0') {
            abort();
        }
        if (rc == -EINVAL && (err.column < 1 || err.column > size + 1)) {
            abort();
        }
        return 0;
    }
    unsigned calls = 0;
    int r1 = spool_expr_eval(e, get, &calls);
    int r2 = spool_expr_eval(e, get, &calls);
    size_t fields = 0;
    if (spool_expr_fields(e, field, &fields) != 0 || calls > 2 * fields) {
        abort(); /* at most one accessor call per field per evaluation */
    }
    spool_expr *c = NULL;
    if (spool_expr_clone(e, &c) == 0) {
        spool_expr_free(e);
        e = NULL;
        if (spool_expr_eval(c, get, &calls) != r1) {
            abort();
        }
    }
    if ((r1 != 0 && r1 != 1) || r1 != r2) {
        abort();
    }
    spool_expr_free(c);
    spool_expr_free(e);
    return 0;
}
