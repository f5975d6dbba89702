/*
 * idem_bench.c: the cost of the http input's idempotent-ingest bookkeeping
 * per request (inputs/http/http_in_idem.c), without HTTP, decoding or the
 * log: httpi_idem_key + httpi_idem_begin + httpi_idem_end + the position
 * encoding the worker attaches to the batch, for requests spread over P
 * producer keys (1, 1,000 and 100,000: one agent, a fleet, a huge fleet).
 * One thread; the mutex is uncontended, as with one request per key in
 * flight. Not a test: it prints ns per request; divide by the records per
 * request (10,000 with the http output's defaults) for the cost per record.
 *
 * Built with the benchmarks (SPOOL_BENCH=ON): build/bench/http/idem_bench.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "http_in_idem.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void run(size_t producers, size_t requests)
{
    httpi_idem t;
    if (httpi_idem_init(&t, INT64_MAX / 4, 300000, NULL, NULL) < 0) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    int64_t *next = calloc(producers, sizeof(*next));
    char key[HTTPI_IDEM_MAX_PRODUCER + 320];
    char producer[40];
    uint8_t pos[HTTPI_IDEM_POS_LEN];
    int64_t wall = 1700000000000;
    int64_t t0 = now_ns();
    for (size_t i = 0; i < requests; i++) {
        size_t p = i % producers;
        snprintf(producer, sizeof(producer), "%032zx", p * 2654435761u);
        if (httpi_idem_key(key, sizeof(key), producer, "app", (int64_t)(i & 3)) < 0) {
            fprintf(stderr, "key\n");
            exit(1);
        }
        httpi_idem_ticket tk;
        int64_t first = next[p], last = next[p] + 10000;
        int v = httpi_idem_begin(&t, key, first, last, wall, INT64_MAX / 4, &tk);
        if (v != HTTPI_IDEM_APPEND) {
            fprintf(stderr, "unexpected verdict %d\n", v);
            exit(1);
        }
        httpi_idem_pos_encode(pos, tk.next, wall);
        httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
        next[p] = last;
    }
    int64_t ns = now_ns() - t0;
    printf("%7zu producer keys: %7.0f ns per request, %.4f ns per record at 10,000 records a "
           "request\n",
           producers, (double)ns / (double)requests, (double)ns / (double)requests / 10000.0);
    free(next);
    httpi_idem_destroy(&t);
}

int main(void)
{
    run(1, 2000000);
    run(1000, 2000000);
    run(100000, 2000000);
    return 0;
}
