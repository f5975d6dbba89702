/*
 * fuzz_framing.c: libFuzzer target for stream and datagram framing
 * (inputs/socket/framing.c).
 *
 * The first two bytes choose the mode, the long-line policy, max_bytes
 * (1..64) and a chunk size; the rest is the stream. It is framed twice,
 * in one feed and in chunks, and the two runs must give the same frames
 * with the same flags and the same result (framing must not depend on how
 * reads cut the stream); no frame may exceed max_bytes and the carry
 * buffer may not exceed max_bytes + 1. Then the same bytes go through the
 * datagram path. Any violation aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct digest {
    uint64_t h; /* FNV-1a over frames, lengths and flags */
    size_t count;
    size_t max;
} digest;

static int on_frame(void *arg, const uint8_t *p, size_t n, unsigned flags)
{
    digest *d = arg;
    if (n == 0 || n > d->max) {
        abort();
    }
    uint64_t h = d->h;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 1099511628211ULL;
    }
    h = (h ^ n) * 1099511628211ULL;
    h = (h ^ flags) * 1099511628211ULL;
    d->h = h;
    d->count++;
    return 0;
}

static int frame_all(sock_frame_mode mode, sock_frame_long lg, size_t max, const uint8_t *p,
                     size_t n, size_t chunk, digest *d)
{
    sock_framer f;
    sock_framer_init(&f, mode, lg, max);
    memset(d, 0, sizeof(*d));
    d->h = 1469598103934665603ULL;
    d->max = max;
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        rc = sock_framer_feed(&f, p + off, k, on_frame, d);
        if (f.cap > max + 1 || f.len > max + 1) {
            abort();
        }
    }
    if (rc == 0) {
        rc = sock_framer_finish(&f, on_frame, d);
    }
    sock_framer_free(&f);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    sock_frame_mode mode = (sock_frame_mode)(data[0] % 3); /* newline, octet, auto */
    sock_frame_long lg = (data[0] >> 2) & 1 ? SOCK_LONG_TRUNCATE : SOCK_LONG_SPLIT;
    size_t max = (size_t)(data[0] >> 3) * 2 + 1; /* 1..63 */
    size_t chunk = (size_t)(data[1] % 13) + 1;
    const uint8_t *p = data + 2;
    size_t n = size - 2;

    digest whole;
    digest pieces;
    int rc1 = frame_all(mode, lg, max, p, n, n ? n : 1, &whole);
    int rc2 = frame_all(mode, lg, max, p, n, chunk, &pieces);
    if (rc1 != rc2 || whole.h != pieces.h || whole.count != pieces.count) {
        abort();
    }

    sock_framer f;
    digest d;
    memset(&d, 0, sizeof(d));
    d.max = max;
    sock_framer_init(&f, (data[1] & 0x80) ? SOCK_FRAME_NONE : SOCK_FRAME_NEWLINE, lg, max);
    sock_framer_datagram(&f, p, n, on_frame, &d);
    sock_framer_free(&f);
    return 0;
}
