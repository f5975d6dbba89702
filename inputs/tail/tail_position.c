/*
 * tail_position.c: what the tail input stores per file in the durable
 * position store, and the fingerprint that makes identity safe.
 *
 * A file is known by (st_dev, st_ino) plus a fingerprint: an FNV-1a hash of
 * its first fp_len (<= TAIL_FP_MAX) bytes. An inode number reused by a new
 * file gives a different fingerprint, so it is read from the beginning and
 * not from the old file's offset. The source key is "file:<dev>:<ino>".
 *
 * The position also carries a hash of the bytes just before `offset` (up to
 * TAIL_FP_MAX of them): a file truncated and rewritten past the offset
 * while spool was stopped keeps its beginning (a constant header) and its
 * size, but not those bytes, so a restart does not resume in the middle of
 * other content; and a copy of the file (copytruncate) is recognised by its
 * beginning and by those bytes at the same offset.
 *
 * Blob (little endian): "TPOS" u32 version u64 dev u64 ino i64 offset
 * u64 fp_hash u32 fp_len, then version 2 only: u64 bk_hash u32 bk_len; then
 * u32 path_len and path_len bytes of path. Version 1 blobs (no bk_*) still
 * load, with bk_len 0 (the check is skipped until the next position).
 *
 * The core stores the blob atomically with the batch that carries it, so
 * `offset` is exactly the end of what the log holds for the file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tail.h"

uint64_t tail_fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Reads up to `want` bytes from the start of fd: bytes read, or -errno. */
static ssize_t read_head(int fd, uint8_t *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)got);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int tail_fingerprint(int fd, uint32_t want, uint64_t *hash, uint32_t *len)
{
    uint8_t buf[TAIL_FP_MAX];
    if (want > TAIL_FP_MAX) {
        want = TAIL_FP_MAX;
    }
    ssize_t got = read_head(fd, buf, want);
    if (got < 0) {
        return (int)got;
    }
    *hash = tail_fnv1a(buf, (size_t)got);
    *len = (uint32_t)got;
    return 0;
}

int tail_head_hashes(int fd, uint64_t pre[TAIL_FP_MAX + 1], uint32_t *len)
{
    uint8_t buf[TAIL_FP_MAX];
    ssize_t r = read_head(fd, buf, TAIL_FP_MAX);
    if (r < 0) {
        return (int)r;
    }
    size_t got = (size_t)r;
    uint64_t h = 14695981039346656037ULL; /* tail_fnv1a, one prefix at a time */
    pre[0] = h;
    for (size_t i = 0; i < got; i++) {
        h ^= buf[i];
        h *= 1099511628211ULL;
        pre[i + 1] = h;
    }
    *len = (uint32_t)got;
    return 0;
}

int tail_back_hash(int fd, int64_t off, uint64_t *hash, uint32_t *len)
{
    uint8_t buf[TAIL_FP_MAX];
    uint32_t want = off < TAIL_FP_MAX ? (uint32_t)off : TAIL_FP_MAX;
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)(off - want + (int64_t)got));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -ENODATA; /* the file is shorter than off */
        }
        got += (size_t)n;
    }
    *hash = tail_fnv1a(buf, want);
    *len = want;
    return 0;
}

void tail_pos_source(uint64_t dev, uint64_t ino, char *buf, size_t cap)
{
    snprintf(buf, cap, "file:%" PRIu64 ":%" PRIu64, dev, ino);
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

size_t tail_pos_encode(const tail_pos *pos, uint8_t *buf)
{
    size_t pl = strnlen(pos->path, sizeof(pos->path) - 1);
    uint8_t *p = buf;
    memcpy(p, "TPOS", 4);
    p += 4;
    p = put_u32(p, 2);
    p = put_u64(p, pos->dev);
    p = put_u64(p, pos->ino);
    p = put_u64(p, (uint64_t)pos->offset);
    p = put_u64(p, pos->fp_hash);
    p = put_u32(p, pos->fp_len);
    p = put_u64(p, pos->bk_hash);
    p = put_u32(p, pos->bk_len);
    p = put_u32(p, (uint32_t)pl);
    memcpy(p, pos->path, pl);
    p += pl;
    return (size_t)(p - buf);
}

int tail_pos_decode(const void *blob, size_t len, tail_pos *pos)
{
    const uint8_t *p = blob;
    if (len < 48 || memcmp(p, "TPOS", 4) != 0) {
        return -EINVAL;
    }
    uint32_t version = get_u32(p + 4);
    size_t head = version == 1 ? 48 : 60;
    if ((version != 1 && version != 2) || len < head) {
        return -EINVAL;
    }
    pos->dev = get_u64(p + 8);
    pos->ino = get_u64(p + 16);
    pos->offset = (int64_t)get_u64(p + 24);
    pos->fp_hash = get_u64(p + 32);
    pos->fp_len = get_u32(p + 40);
    pos->bk_hash = version == 1 ? 0 : get_u64(p + 44);
    pos->bk_len = version == 1 ? 0 : get_u32(p + 52);
    uint32_t pl = get_u32(p + head - 4);
    if (pl != len - head || pl >= sizeof(pos->path) || pos->fp_len > TAIL_FP_MAX ||
        pos->bk_len > TAIL_FP_MAX || (int64_t)pos->bk_len > pos->offset || pos->offset < 0) {
        return -EINVAL;
    }
    memcpy(pos->path, p + head, pl);
    pos->path[pl] = '\0';
    return 0;
}
