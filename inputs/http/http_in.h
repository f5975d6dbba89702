/*
 * http_in.h: pieces of the `http` input shared between its files: the
 * instance context, the bearer-token set (http_in_auth.c) and request body
 * decoding (http_in_body.c). Private to inputs/http/.
 */
#ifndef SPOOL_HTTP_IN_H
#define SPOOL_HTTP_IN_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "codec/codec.h"
#include "spool/spool.h"

/* Bearer tokens read from tokens_file, re-read when its mtime changes. */
typedef struct httpi_tokens {
    pthread_mutex_t lock; /* guards everything below */
    char *path;           /* tokens_file (borrowed from the options) */
    char **items;         /* count tokens */
    size_t count;
    struct timespec mtime; /* of the file when last read */
    int64_t checked_ms;    /* monotonic ms of the last stat */
    int lock_init;         /* 1 once lock is initialised */
} httpi_tokens;

/* Loads path into t (first load: errors are returned). 0 or -errno. */
int httpi_tokens_init(httpi_tokens *t, const char *path);
void httpi_tokens_destroy(httpi_tokens *t);

enum httpi_auth {
    HTTPI_AUTH_OK = 0,
    HTTPI_AUTH_MISSING = 1, /* no bearer token: 401 */
    HTTPI_AUTH_WRONG = 2,   /* a token that is not in the file: 403 */
};

/* Checks an Authorization header value (may be NULL) against the tokens,
 * re-reading the file first if its mtime changed (stat at most once a
 * second). Any thread. */
int httpi_tokens_check(httpi_tokens *t, spool_instance *ins, const char *authorization);

/* Content-Encoding of a body. */
enum httpi_encoding { HTTPI_ENC_NONE = 0, HTTPI_ENC_ZSTD = 1, HTTPI_ENC_GZIP = 2 };

/*
 * Decompresses src into out (cleared first), refusing to produce more than
 * limit bytes. dctx is a ZSTD_DCtx to reuse, or NULL. 0, -EFBIG (over the
 * limit), -EBADMSG (corrupt), -ENOMEM.
 */
int httpi_decompress(int enc, void *dctx, const uint8_t *src, size_t len, size_t limit,
                     spool_buf *out);

#endif /* SPOOL_HTTP_IN_H */
