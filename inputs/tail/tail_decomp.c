/*
 * tail_decomp.c: reading gzip and zstd files decompressed (`decompress: true`).
 *
 * A compressed file is read with pread() from its own input offset (the fd's
 * file offset is not used) and decompressed in blocks into the caller's
 * buffer; offsets everywhere else (positions, the splitter) are offsets in
 * the decompressed stream. Concatenated members (gzip) and frames (zstd)
 * follow one another. Input that ends inside a member is not an error: the
 * file may still be being written (logrotate compressing); the next call
 * goes on from there. A restart decompresses from the beginning again and
 * skips to the stored position (the caller discards what lies before it).
 *
 * Not done here: bzip2 and xz (not linked), deciding what a file is.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "tail.h"

#define TAIL_DZ_IN (64 * 1024)

struct tail_dz {
    int kind;    /* TAIL_KIND_GZIP or TAIL_KIND_ZSTD */
    z_stream zs; /* gzip */
    int zs_ready;
    ZSTD_DCtx *zd; /* zstd */
    uint8_t in[TAIL_DZ_IN];
    size_t in_len, in_pos; /* unconsumed input: in[in_pos..in_len) */
    int64_t in_off;        /* file offset after in[in_len) */
    int64_t out;           /* decompressed bytes produced so far */
    int member_end;        /* gzip: a member ended: the next byte starts another */
    int boundary;          /* the last bytes decoded ended a member (gzip) or frame (zstd) */
};

tail_dz *tail_dz_new(int kind)
{
    tail_dz *z = calloc(1, sizeof(*z));
    if (!z) {
        return NULL;
    }
    z->kind = kind;
    if (kind == TAIL_KIND_GZIP) {
        if (inflateInit2(&z->zs, 15 + 32) != Z_OK) {
            free(z);
            return NULL;
        }
        z->zs_ready = 1;
    } else if (!(z->zd = ZSTD_createDCtx())) {
        free(z);
        return NULL;
    }
    return z;
}

void tail_dz_free(tail_dz *z)
{
    if (!z) {
        return;
    }
    if (z->zs_ready) {
        inflateEnd(&z->zs);
    }
    ZSTD_freeDCtx(z->zd);
    free(z);
}

int64_t tail_dz_out(const tail_dz *z)
{
    return z->out;
}

int tail_dz_complete(const tail_dz *z)
{
    return z->boundary && z->in_pos == z->in_len;
}

/* Fills the input buffer from the file; 0 at the end of the file for now. */
static ssize_t dz_fill(tail_dz *z, int fd)
{
    if (z->in_pos < z->in_len) {
        return (ssize_t)(z->in_len - z->in_pos);
    }
    for (;;) {
        ssize_t n = pread(fd, z->in, sizeof(z->in), z->in_off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        z->in_len = (size_t)n;
        z->in_pos = 0;
        z->in_off += n;
        return n;
    }
}

int tail_dz_run(tail_dz *z, int fd, uint8_t *out, size_t cap, size_t budget,
                int (*fn)(void *arg, const uint8_t *p, size_t n), void *arg)
{
    size_t total = 0;
    while (total < budget) {
        ssize_t avail = dz_fill(z, fd);
        if (avail < 0) {
            return (int)avail;
        }
        if (avail == 0) {
            return 0; /* the end of the input, for now */
        }
        size_t produced;
        if (z->kind == TAIL_KIND_GZIP) {
            if (z->member_end) {
                inflateReset(&z->zs);
                z->member_end = 0;
            }
            z->zs.next_in = z->in + z->in_pos;
            z->zs.avail_in = (uInt)(z->in_len - z->in_pos);
            z->zs.next_out = out;
            z->zs.avail_out = (uInt)cap;
            int r = inflate(&z->zs, Z_NO_FLUSH);
            if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
                return -EBADMSG;
            }
            z->in_pos = z->in_len - z->zs.avail_in;
            produced = cap - z->zs.avail_out;
            if (r == Z_STREAM_END) {
                z->member_end = 1;
            }
            z->boundary = r == Z_STREAM_END;
            if (r == Z_BUF_ERROR && produced == 0 && z->in_pos < z->in_len) {
                return -EBADMSG; /* no progress with input and room: cannot happen */
            }
        } else {
            ZSTD_inBuffer ib = {z->in, z->in_len, z->in_pos};
            ZSTD_outBuffer ob = {out, cap, 0};
            size_t r = ZSTD_decompressStream(z->zd, &ob, &ib);
            if (ZSTD_isError(r)) {
                return -EBADMSG;
            }
            z->in_pos = ib.pos;
            produced = ob.pos;
            z->boundary = r == 0;
        }
        if (produced > 0) {
            z->out += (int64_t)produced;
            total += produced;
            int r = fn(arg, out, produced);
            if (r < 0) {
                return r;
            }
        }
    }
    return 1;
}
