/*
 * http_in_auth.c: bearer tokens of the `http` input.
 *
 * tokens_file holds one token per line; blank lines and lines starting
 * with '#' are ignored, surrounding blanks trimmed. The file is re-read
 * when its mtime changes, checked at most once a second on the request
 * path (there is no reload callback; SIGHUP is not needed). A file that
 * cannot be read on a re-read keeps the previous tokens (logged); an
 * empty file means no token is valid. Comparison is constant-time per
 * token. (Bodies are decompressed with spool_decompress, bounded.)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "http_in.h"

#define HTTPI_TOKEN_RECHECK_MS 1000

static void tokens_free_items(char **items, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(items[i]);
    }
    free(items);
}

/* Reads the file into a new array. 0 or -errno. */
static int tokens_load(const char *path, char ***items_out, size_t *count_out,
                       struct timespec *mtime)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return -errno;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0) {
        *mtime = st.st_mtim;
    }
    char **items = NULL;
    size_t count = 0, cap = 0;
    char line[4096];
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        char *s = line;
        while (*s == ' ' || *s == '\t') {
            s++;
        }
        size_t n = strlen(s);
        while (n > 0 &&
               (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) {
            s[--n] = '\0';
        }
        if (n == 0 || s[0] == '#') {
            continue;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 8;
            char **p = realloc(items, cap * sizeof(*p));
            if (!p) {
                rc = -ENOMEM;
                goto fail;
            }
            items = p;
        }
        items[count] = strdup(s);
        if (!items[count]) {
            rc = -ENOMEM;
            goto fail;
        }
        count++;
    }
    if (ferror(f)) {
        rc = -EIO;
        goto fail;
    }
    fclose(f);
    *items_out = items;
    *count_out = count;
    return 0;
fail:
    fclose(f);
    tokens_free_items(items, count);
    return rc;
}

int httpi_tokens_init(httpi_tokens *t, const char *path)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    t->lock_init = 1;
    t->path = (char *)path;
    t->checked_ms = spool_monotonic_ms();
    return tokens_load(path, &t->items, &t->count, &t->mtime);
}

void httpi_tokens_destroy(httpi_tokens *t)
{
    if (!t || !t->lock_init) {
        return;
    }
    tokens_free_items(t->items, t->count);
    t->items = NULL;
    t->count = 0;
    pthread_mutex_destroy(&t->lock);
    t->lock_init = 0;
}

/* Caller holds t->lock. */
static void tokens_maybe_reload(httpi_tokens *t, spool_instance *ins)
{
    int64_t now = spool_monotonic_ms();
    if (now - t->checked_ms < HTTPI_TOKEN_RECHECK_MS) {
        return;
    }
    t->checked_ms = now;
    struct stat st;
    if (stat(t->path, &st) != 0) {
        spool_log_warn(ins, "tokens_file %s: %s; keeping %zu tokens", t->path, strerror(errno),
                       t->count);
        return;
    }
    if (st.st_mtim.tv_sec == t->mtime.tv_sec && st.st_mtim.tv_nsec == t->mtime.tv_nsec) {
        return;
    }
    char **items = NULL;
    size_t count = 0;
    struct timespec mt = st.st_mtim;
    int rc = tokens_load(t->path, &items, &count, &mt);
    if (rc < 0) {
        spool_log_warn(ins, "tokens_file %s: %s; keeping %zu tokens", t->path, strerror(-rc),
                       t->count);
        return;
    }
    tokens_free_items(t->items, t->count);
    t->items = items;
    t->count = count;
    t->mtime = mt;
    spool_log_info(ins, "tokens_file %s re-read: %zu tokens", t->path, count);
}

static int token_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned diff = alen != blen;
    for (size_t i = 0; i < alen; i++) {
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i < blen ? i : 0];
    }
    return diff == 0;
}

int httpi_tokens_check(httpi_tokens *t, spool_instance *ins, const char *authorization)
{
    if (!authorization) {
        return HTTPI_AUTH_MISSING;
    }
    const char *s = authorization;
    while (*s == ' ') {
        s++;
    }
    if (strncasecmp(s, "Bearer ", 7) != 0) {
        return HTTPI_AUTH_MISSING;
    }
    s += 7;
    while (*s == ' ') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ') {
        n--;
    }
    if (n == 0) {
        return HTTPI_AUTH_MISSING;
    }
    int ok = 0;
    pthread_mutex_lock(&t->lock);
    tokens_maybe_reload(t, ins);
    for (size_t i = 0; i < t->count; i++) {
        ok |= token_equal(s, n, t->items[i]);
    }
    pthread_mutex_unlock(&t->lock);
    return ok ? HTTPI_AUTH_OK : HTTPI_AUTH_WRONG;
}
