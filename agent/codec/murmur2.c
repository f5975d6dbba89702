/*
 * murmur2.c: Kafka's default partitioner hash. This is MurmurHash2 as the
 * Java client's Utils.murmur2 computes it (seed 0x9747b28c, the length
 * mixed into the seed, the tail read little-endian); librdkafka's
 * "murmur2" partitioner computes the same, so a key lands on the same
 * partition number here, in Kafka's Java producer and in librdkafka.
 * Pure functions, thread-safe.
 */
#include <stdint.h>
#include <string.h>

#include "codec/codec.h"

uint32_t spool_murmur2(const void *key, size_t len)
{
    const uint32_t seed = 0x9747b28cu;
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    const uint8_t *p = (const uint8_t *)key;
    /* The Java client hashes an int length; keys are far below 2 GiB. */
    uint32_t h = seed ^ (uint32_t)len;
    size_t blocks = len / 4;

    for (size_t i = 0; i < blocks; i++) {
        const uint8_t *b = p + i * 4;
        uint32_t k =
            (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = p + blocks * 4;
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

int32_t spool_partition_for_key(const void *key, size_t len, int32_t n)
{
    if (n <= 0) {
        return -1;
    }
    return (int32_t)((spool_murmur2(key, len) & 0x7fffffffu) % (uint32_t)n);
}
