/*
 * crc32c.c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of Kafka RecordBatch v2 and of the partition log's framing.
 *
 * Two implementations behind one entry point: the SSE4.2 `crc32`
 * instruction (x86-64 only, chosen at first call through cpuid) and a
 * portable slice-by-8 table fallback. Both give identical results; the
 * unit test checks the standard vector and chaining. The tables are built
 * once under pthread_once. The function is pure and thread-safe.
 * It does not do hardware CRC on other architectures (ARMv8 crc32c could be
 * added the same way).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC_HAVE_SSE42 1
#include <nmmintrin.h>
#endif

#define CRC32C_POLY 0x82F63B78u

typedef uint32_t (*crc_impl_fn)(uint32_t crc, const uint8_t *p, size_t len);

static uint32_t crc_table[8][256]; /* slice-by-8 tables, built by crc_init */
static crc_impl_fn crc_impl;       /* set once by crc_init */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* Reads 8 bytes little-endian without alignment assumptions. */
static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Portable slice-by-8: eight bytes per step through eight 1 KiB tables. */
static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t v = load_le64(p) ^ crc;
        crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
              crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
              crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
              crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    return crc;
}

#ifdef CRC_HAVE_SSE42
/* Multiplies a and b modulo the CRC polynomial (reflected bit order: bit
 * 31 is x^0). Shifting a CRC register state over n zero bytes multiplies
 * it by x^(8n); that is how three streams are joined (crc_hw). */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
    uint32_t m = (uint32_t)1 << 31;
    uint32_t p = 0;
    for (int i = 0; i < 32; i++) {
        if (a & m) {
            p ^= b;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return p;
}

/* x^(8n) modulo the polynomial, by repeated squaring (n bytes of zeros). */
static uint32_t x8nmodp(uint64_t n)
{
    uint32_t p = (uint32_t)1 << 31;  /* x^0 */
    uint32_t sq = (uint32_t)1 << 23; /* x^8 */
    while (n) {
        if (n & 1) {
            p = multmodp(sq, p);
        }
        sq = multmodp(sq, sq);
        n >>= 1;
    }
    return p;
}

/* Bytes per stream of the three-way loop: the crc32 instruction has a
 * latency of 3 cycles and a throughput of 1, so three independent streams
 * over adjacent blocks run about 3x faster than one; the three register
 * states are then joined by shifting (multmodp by x^(8 * CRC_STREAM) and
 * x^(16 * CRC_STREAM), computed once in crc_init). */
#define CRC_STREAM 4096
static uint32_t crc_shift1, crc_shift2;

/* The SSE4.2 instruction: 8 bytes per instruction. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 3 * CRC_STREAM) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_STREAM; i += 8) {
            uint64_t v0, v1, v2;
            memcpy(&v0, p + i, 8);
            memcpy(&v1, p + CRC_STREAM + i, 8);
            memcpy(&v2, p + 2 * CRC_STREAM + i, 8);
            c = _mm_crc32_u64(c, v0);
            c1 = _mm_crc32_u64(c1, v1);
            c2 = _mm_crc32_u64(c2, v2);
        }
        c = multmodp(crc_shift2, (uint32_t)c) ^ multmodp(crc_shift1, (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CRC_STREAM;
        len -= 3 * CRC_STREAM;
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    return (uint32_t)c;
}
#endif

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
        }
    }
    crc_impl = crc_sw;
#ifdef CRC_HAVE_SSE42
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_impl = crc_hw;
        crc_shift1 = x8nmodp(CRC_STREAM);
        crc_shift2 = x8nmodp(2 * CRC_STREAM);
    }
#endif
}

uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_impl(~crc, (const uint8_t *)buf, len);
}

/* Table-only variant, for tests to compare the two implementations. */
uint32_t spool__crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_sw(~crc, (const uint8_t *)buf, len);
}
