/*
 * bytes.c: big-endian readers and writers for plugins that handle binary
 * formats (Kafka's RecordBatch, length-prefixed frames). Unaligned access
 * is safe: bytes are assembled one at a time. Pure, any thread.
 */
#include "spool/spool.h"

uint16_t spool_get_be16(const void *src)
{
    const uint8_t *p = src;
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

uint32_t spool_get_be32(const void *src)
{
    const uint8_t *p = src;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t spool_get_be64(const void *src)
{
    const uint8_t *p = src;
    return (uint64_t)spool_get_be32(p) << 32 | spool_get_be32(p + 4);
}

void spool_put_be16(void *dst, uint16_t v)
{
    uint8_t *p = dst;
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

void spool_put_be32(void *dst, uint32_t v)
{
    uint8_t *p = dst;
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void spool_put_be64(void *dst, uint64_t v)
{
    uint8_t *p = dst;
    spool_put_be32(p, (uint32_t)(v >> 32));
    spool_put_be32(p + 4, (uint32_t)v);
}
