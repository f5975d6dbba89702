/*
 * gen.c: writes the benchmark input: N lines of realistic log text (web access
 * logs, application key=value lines, JSON lines, kernel/daemon lines), about 120
 * bytes on average, each with a unique sequence number "seq=%010llu" counting from
 * 1, newline-terminated. Deterministic (fixed PRNG seed), so every run and every
 * machine gets the same bytes. Usage: gen N OUTFILE. Writes nothing else.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rs = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)((rs >> 11) % n);
}

static const char *hosts[] = {"web-01", "web-02", "web-03", "api-7", "db-primary", "cache-2"};
static const char *methods[] = {"GET", "GET", "GET", "POST", "PUT", "DELETE"};
static const char *paths[] = {"/api/v1/orders", "/api/v1/users", "/static/app.js", "/healthz",
                              "/api/v2/search", "/login",        "/cart/items"};
static const int codes[] = {200, 200, 200, 200, 201, 204, 301, 404, 500};
static const char *levels[] = {"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"};
static const char *comps[] = {"billing", "auth", "scheduler", "indexer", "mailer"};
static const char *msgs[] = {"request completed", "cache miss",   "retrying upstream",
                             "token refreshed",   "job finished", "slow query"};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen N OUTFILE\n");
        return 2;
    }
    unsigned long long n = strtoull(argv[1], NULL, 10);
    FILE *f = fopen(argv[2], "w");
    if (f == NULL) {
        perror(argv[2]);
        return 1;
    }
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof(buf));
    for (unsigned long long i = 1; i <= n; i++) {
        unsigned ms = (unsigned)((i * 7) % 86400000ull);
        char ts[40];
        snprintf(ts, sizeof(ts), "2026-11-24T%02u:%02u:%02u.%03uZ", ms / 3600000 % 24,
                 ms / 60000 % 60, ms / 1000 % 60, ms % 1000);
        const char *host = hosts[rnd(6)];
        switch (rnd(4)) {
        case 0:
            fprintf(
                f,
                "%s %s nginx[%u]: 10.%u.%u.%u \"%s %s/%u HTTP/1.1\" %d %u rt=0.%03u seq=%010llu\n",
                ts, host, 1000 + rnd(9000), rnd(256), rnd(256), rnd(256), methods[rnd(6)],
                paths[rnd(7)], rnd(100000), codes[rnd(9)], rnd(60000), rnd(1000), i);
            break;
        case 1:
            fprintf(
                f,
                "%s %s app[%u]: level=%s component=%s msg=\"%s\" user=%u dur_ms=%u seq=%010llu\n",
                ts, host, 1000 + rnd(9000), levels[rnd(6)], comps[rnd(5)], msgs[rnd(6)],
                rnd(1000000), rnd(5000), i);
            break;
        case 2:
            fprintf(f,
                    "{\"ts\":\"%s\",\"host\":\"%s\",\"lvl\":\"%s\",\"svc\":\"%s\",\"msg\":\"%s\","
                    "\"req\":\"seq=%010llu\"}\n",
                    ts, host, levels[rnd(6)], comps[rnd(5)], msgs[rnd(6)], i);
            break;
        default:
            fprintf(f,
                    "%s %s kernel: [%u.%06u] eth0: link up, 10000 Mbps, full duplex, flow ctl "
                    "rx/tx seq=%010llu\n",
                    ts, host, rnd(100000), rnd(1000000), i);
            break;
        }
    }
    if (fclose(f) != 0) {
        perror("fclose");
        return 1;
    }
    return 0;
}
