/*
 * compress.c: compression of a RecordBatch's records section: zstd (encode
 * and decode) and gzip (encode and decode through zlib; decode also takes
 * a zlib stream). zstd contexts are kept per thread (pthread key with a
 * destructor) so encoding a batch does not allocate a multi-MiB context
 * each time. Decompression output is bounded by SPOOL_RB_MAX_DECOMPRESSED
 * (a zip bomb is a bad message, not an out-of-memory). Snappy and lz4 are
 * not supported (-ENOTSUP). Also the public spool_compress/spool_decompress
 * (spool.h): whole buffers, with a caller's output limit.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "codec/codec_internal.h"

static pthread_once_t zctx_once = PTHREAD_ONCE_INIT;
static pthread_key_t cctx_key; /* ZSTD_CCtx * per thread */
static pthread_key_t dctx_key; /* ZSTD_DCtx * per thread */

static void cctx_free(void *p)
{
    ZSTD_freeCCtx(p);
}

static void dctx_free(void *p)
{
    ZSTD_freeDCtx(p);
}

static void zctx_init(void)
{
    pthread_key_create(&cctx_key, cctx_free);
    pthread_key_create(&dctx_key, dctx_free);
}

static ZSTD_CCtx *thread_cctx(void)
{
    pthread_once(&zctx_once, zctx_init);
    ZSTD_CCtx *c = pthread_getspecific(cctx_key);
    if (!c) {
        c = ZSTD_createCCtx();
        if (c && pthread_setspecific(cctx_key, c) != 0) {
            ZSTD_freeCCtx(c);
            c = NULL;
        }
    }
    return c;
}

static ZSTD_DCtx *thread_dctx(void)
{
    pthread_once(&zctx_once, zctx_init);
    ZSTD_DCtx *c = pthread_getspecific(dctx_key);
    if (!c) {
        c = ZSTD_createDCtx();
        if (c && pthread_setspecific(dctx_key, c) != 0) {
            ZSTD_freeDCtx(c);
            c = NULL;
        }
    }
    return c;
}

size_t spool__compress_bound(int compression, size_t n)
{
    switch (compression) {
    case SPOOL_COMPRESS_ZSTD:
        return ZSTD_compressBound(n);
    case SPOOL_COMPRESS_GZIP:
        /* deflateBound plus the gzip header and trailer. */
        return n + n / 1000 + (n >> 12) + (n >> 14) + (n >> 25) + 64;
    default:
        return n;
    }
}

static long gzip_compress(int level, uint8_t *dst, size_t cap, const uint8_t *src, size_t n)
{
    z_stream zs = {0};
    long rc = -EIO;
    if (n > UINT_MAX || cap > UINT_MAX) {
        return -EINVAL;
    }
    if (level < 1 || level > 9) {
        level = Z_DEFAULT_COMPRESSION;
    }
    int zrc = deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    if (zrc != Z_OK) {
        return zrc == Z_MEM_ERROR ? -ENOMEM : -EIO;
    }
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    zs.next_out = dst;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) == Z_STREAM_END) {
        rc = (long)zs.total_out;
    }
    deflateEnd(&zs);
    return rc;
}

long spool__compress(int compression, int level, uint8_t *dst, size_t cap, const uint8_t *src,
                     size_t n)
{
    if (compression == SPOOL_COMPRESS_GZIP) {
        return gzip_compress(level, dst, cap, src, n);
    }
    if (compression != SPOOL_COMPRESS_ZSTD) {
        return -EINVAL;
    }
    ZSTD_CCtx *c = thread_cctx();
    if (!c) {
        return -ENOMEM;
    }
    size_t r = ZSTD_compressCCtx(c, dst, cap, src, n, level);
    if (ZSTD_isError(r)) {
        return -EIO;
    }
    return (long)r;
}

static long zstd_decompress(const uint8_t *src, size_t n, spool_rb_decoded *d, size_t start)
{
    ZSTD_DCtx *c = thread_dctx();
    if (!c) {
        return -ENOMEM;
    }
    ZSTD_DCtx_reset(c, ZSTD_reset_session_only);
    unsigned long long hint = ZSTD_getFrameContentSize(src, n);
    size_t want = n * 4 + 256;
    if (hint != ZSTD_CONTENTSIZE_UNKNOWN && hint != ZSTD_CONTENTSIZE_ERROR) {
        want = hint < SPOOL_RB_MAX_DECOMPRESSED ? (size_t)hint + 1 : SPOOL_RB_MAX_DECOMPRESSED;
    }
    ZSTD_inBuffer in = {src, n, 0};
    size_t last = 1;
    for (;;) {
        size_t produced = d->scratch.len - start;
        if (produced >= SPOOL_RB_MAX_DECOMPRESSED) {
            return -EBADMSG;
        }
        if (d->scratch.cap - d->scratch.len < 256) {
            size_t grow = want > produced ? want - produced : produced;
            if (grow > SPOOL_RB_MAX_DECOMPRESSED - produced) {
                grow = SPOOL_RB_MAX_DECOMPRESSED - produced;
            }
            if (grow < 256) {
                grow = 256;
            }
            int rc = spool__decoded_scratch_reserve(d, grow);
            if (rc < 0) {
                return rc;
            }
        }
        size_t room = d->scratch.cap - d->scratch.len;
        if (room > SPOOL_RB_MAX_DECOMPRESSED - produced + 1) {
            room = SPOOL_RB_MAX_DECOMPRESSED - produced + 1;
        }
        ZSTD_outBuffer out = {d->scratch.data + d->scratch.len, room, 0};
        last = ZSTD_decompressStream(c, &out, &in);
        if (ZSTD_isError(last)) {
            return -EBADMSG;
        }
        d->scratch.len += out.pos;
        if (in.pos == in.size && out.pos < out.size) {
            break; /* all input consumed and flushed */
        }
        if (out.pos == 0 && in.pos == in.size) {
            break;
        }
    }
    if (last != 0) {
        return -EBADMSG; /* truncated frame */
    }
    if (d->scratch.len - start > SPOOL_RB_MAX_DECOMPRESSED) {
        return -EBADMSG;
    }
    return 0;
}

static long gzip_decompress(const uint8_t *src, size_t n, spool_rb_decoded *d, size_t start)
{
    z_stream zs = {0};
    long rc = -EBADMSG;
    if (n > UINT_MAX) {
        return -EBADMSG;
    }
    int zrc = inflateInit2(&zs, 15 + 32); /* gzip or zlib header */
    if (zrc != Z_OK) {
        return zrc == Z_MEM_ERROR ? -ENOMEM : -EIO;
    }
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    for (;;) {
        size_t produced = d->scratch.len - start;
        if (produced > SPOOL_RB_MAX_DECOMPRESSED) {
            goto out;
        }
        if (d->scratch.cap - d->scratch.len < 256) {
            size_t grow = produced > n * 4 ? produced : n * 4 + 256;
            if (grow > SPOOL_RB_MAX_DECOMPRESSED + 1 - produced) {
                grow = SPOOL_RB_MAX_DECOMPRESSED + 1 - produced;
            }
            if (grow < 256) {
                grow = 256;
            }
            int r = spool__decoded_scratch_reserve(d, grow);
            if (r < 0) {
                rc = r;
                goto out;
            }
        }
        size_t room = d->scratch.cap - d->scratch.len;
        if (room > UINT_MAX) {
            room = UINT_MAX;
        }
        zs.next_out = d->scratch.data + d->scratch.len;
        zs.avail_out = (uInt)room;
        zrc = inflate(&zs, Z_NO_FLUSH);
        d->scratch.len += room - zs.avail_out;
        if (zrc == Z_STREAM_END) {
            /* Kafka writes one gzip member; trailing bytes are invalid. */
            rc = zs.avail_in == 0 ? 0 : -EBADMSG;
            break;
        }
        if (zrc == Z_MEM_ERROR) {
            rc = -ENOMEM;
            goto out;
        }
        if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            goto out;
        }
        if (zrc == Z_BUF_ERROR && zs.avail_in == 0) {
            goto out; /* truncated stream */
        }
    }
    if (d->scratch.len - start > SPOOL_RB_MAX_DECOMPRESSED) {
        rc = -EBADMSG;
    }
out:
    inflateEnd(&zs);
    return rc;
}

long spool__decompress(int compression, const uint8_t *src, size_t n, spool_rb_decoded *d,
                       size_t *out_len)
{
    size_t start = d->scratch.len;
    long rc;
    switch (compression) {
    case SPOOL_COMPRESS_ZSTD:
        rc = zstd_decompress(src, n, d, start);
        break;
    case SPOOL_COMPRESS_GZIP:
        rc = gzip_decompress(src, n, d, start);
        break;
    case 2: /* snappy */
    case 3: /* lz4 */
        return -ENOTSUP;
    default:
        return -EBADMSG;
    }
    if (rc < 0) {
        d->scratch.len = start;
        return rc;
    }
    *out_len = d->scratch.len - start;
    return (long)start;
}

/* ---------------------------------------------------------------------- */
/* Public: compression to and from a spool_buf (spool.h).                 */
/* ---------------------------------------------------------------------- */

static int buf_unzstd(const uint8_t *src, size_t len, size_t limit, spool_buf *out)
{
    ZSTD_DCtx *dc = thread_dctx();
    if (!dc) {
        return -ENOMEM;
    }
    ZSTD_DCtx_reset(dc, ZSTD_reset_session_only);
    int rc = 0;
    /* One frame with its size in the header (as the http output writes it):
     * reserve exactly, so the output never moves. */
    unsigned long long fsz = ZSTD_getFrameContentSize(src, len);
    if (fsz != ZSTD_CONTENTSIZE_UNKNOWN && fsz != ZSTD_CONTENTSIZE_ERROR) {
        if (fsz > limit - out->len) {
            rc = -EFBIG;
            goto out;
        }
        if ((rc = spool_buf_reserve(out, (size_t)fsz + 1)) < 0) {
            goto out;
        }
    }
    ZSTD_inBuffer in = {src, len, 0};
    size_t last = 1;
    while (in.pos < in.size || last != 0) {
        if (out->cap - out->len < 65536) {
            size_t want = out->len < 65536 ? 65536 : out->len;
            if ((rc = spool_buf_reserve(out, want)) < 0) {
                goto out;
            }
        }
        ZSTD_outBuffer ob = {out->data + out->len, out->cap - out->len, 0};
        size_t before = in.pos;
        last = ZSTD_decompressStream(dc, &ob, &in);
        if (ZSTD_isError(last)) {
            rc = -EBADMSG;
            goto out;
        }
        out->len += ob.pos;
        if (out->len > limit) {
            rc = -EFBIG;
            goto out;
        }
        if (in.pos == in.size && ob.pos == 0 && before == in.pos && last != 0) {
            rc = -EBADMSG; /* truncated frame */
            goto out;
        }
    }
out:
    return rc;
}

static int buf_gunzip(const uint8_t *src, size_t len, size_t limit, spool_buf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 15 + 32) != Z_OK) {
        return -ENOMEM;
    }
    int rc = 0;
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)len;
    for (;;) {
        if (out->cap - out->len < 65536) {
            size_t want = out->len < 65536 ? 65536 : out->len;
            if ((rc = spool_buf_reserve(out, want)) < 0) {
                break;
            }
        }
        zs.next_out = out->data + out->len;
        zs.avail_out = (uInt)(out->cap - out->len);
        uInt before = zs.avail_out;
        int z = inflate(&zs, Z_NO_FLUSH);
        out->len += before - zs.avail_out;
        if (out->len > limit) {
            rc = -EFBIG;
            break;
        }
        if (z == Z_STREAM_END) {
            break;
        }
        if (z != Z_OK && !(z == Z_BUF_ERROR && zs.avail_out == 0)) {
            rc = -EBADMSG;
            break;
        }
        if (zs.avail_in == 0 && zs.avail_out != 0) {
            rc = -EBADMSG; /* truncated */
            break;
        }
    }
    inflateEnd(&zs);
    return rc;
}

int spool_compress(spool_buf *out, int compression, int level, const void *src, size_t len)
{
    if (compression == SPOOL_COMPRESS_NONE) {
        return spool_buf_append(out, src, len);
    }
    if (compression != SPOOL_COMPRESS_ZSTD && compression != SPOOL_COMPRESS_GZIP) {
        return -EINVAL;
    }
    if (compression == SPOOL_COMPRESS_ZSTD && (level < 1 || level > ZSTD_maxCLevel())) {
        level = ZSTD_CLEVEL_DEFAULT;
    }
    size_t bound = spool__compress_bound(compression, len);
    int rc = spool_buf_reserve(out, bound);
    if (rc < 0) {
        return rc;
    }
    long n = spool__compress(compression, level, out->data + out->len, bound, src, len);
    if (n < 0) {
        return (int)n;
    }
    out->len += (size_t)n;
    return 0;
}

int spool_decompress(spool_buf *out, int compression, const void *src, size_t len, size_t limit)
{
    size_t len0 = out->len;
    int rc;
    /* The helpers below bound out->len: the bytes before ours count too. */
    limit = limit > SIZE_MAX - len0 ? SIZE_MAX : limit + len0;
    if (compression == SPOOL_COMPRESS_ZSTD) {
        rc = buf_unzstd(src, len, limit, out);
    } else if (compression == SPOOL_COMPRESS_GZIP) {
        rc = buf_gunzip(src, len, limit, out);
    } else if (compression == SPOOL_COMPRESS_NONE) {
        rc = len > limit - len0 ? -EFBIG : spool_buf_append(out, src, len);
    } else {
        rc = -EINVAL;
    }
    if (rc < 0) {
        out->len = len0;
    }
    return rc;
}
