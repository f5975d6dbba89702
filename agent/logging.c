/*
 * logging.c: spool's own log, to stderr, one line per message:
 *   2026-11-24T09:35:06.123Z warn  [input:tail:app-logs] message
 * or, with service.log_format: json, one JSON object per line.
 *
 * Levels filter messages; a message repeated (same component, same format
 * string) more than SPOOL__LOG_BURST times within a window of
 * SPOOL__LOG_WINDOW_MS is suppressed and a summary of how many were
 * suppressed is printed when the window ends. Writes are single write(2)
 * calls of a whole line, so lines from threads never interleave.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define SPOOL__LOG_WINDOW_MS 10000
#define SPOOL__LOG_BURST 5
#define SPOOL__LOG_SLOTS 64
#define SPOOL__LOG_PROBE 4

static _Atomic int log_level = SPOOL_LOG_INFO;
static _Atomic int log_format = SPOOL_LOGFMT_TEXT;

typedef struct log_slot {
    const void *ins;      /* component */
    const char *fmt;      /* format string identity */
    int64_t window_start; /* monotonic ms */
    uint32_t count;       /* messages in this window */
} log_slot;

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static log_slot slots[SPOOL__LOG_SLOTS];

static const char *level_names[] = {"error", "warn", "info", "debug"};

void spool__log_configure(int level, int format)
{
    atomic_store(&log_level, level);
    atomic_store(&log_format, format);
}

int spool_log_enabled(int level)
{
    return level <= atomic_load(&log_level);
}

/* Returns how many earlier messages were suppressed (to report), or -1 to
 * suppress this one. */
static long rate_limit(const void *ins, const char *fmt)
{
    /* Mixed: aligned pointers modulo 64 would share a handful of slots. */
    uint64_t x = (uint64_t)(uintptr_t)ins * 31u + (uint64_t)(uintptr_t)fmt;
    size_t h = (size_t)(((x ^ (x >> 29)) * 0x9E3779B97F4A7C15ull) >> 58) % SPOOL__LOG_SLOTS;
    int64_t now = spool_monotonic_ms();
    long suppressed = 0;

    pthread_mutex_lock(&slots_lock);
    /* Probe a few slots: two messages that hash alike must not keep
     * evicting each other (that reset both counts: an unlimited flood).
     * Take the matching slot, else a free or expired one, else the oldest. */
    log_slot *s = NULL, *spare = NULL;
    for (size_t k = 0; k < SPOOL__LOG_PROBE; k++) {
        log_slot *c = &slots[(h + k) % SPOOL__LOG_SLOTS];
        if (c->ins == ins && c->fmt == fmt) {
            s = c;
            break;
        }
        if (!spare || (spare->fmt && (!c->fmt || c->window_start < spare->window_start))) {
            spare = c;
        }
    }
    if (!s) {
        s = spare;
    }
    if (s->ins != ins || s->fmt != fmt || now - s->window_start > SPOOL__LOG_WINDOW_MS) {
        if (s->ins == ins && s->fmt == fmt && s->count > SPOOL__LOG_BURST) {
            suppressed = (long)(s->count - SPOOL__LOG_BURST);
        }
        s->ins = ins;
        s->fmt = fmt;
        s->window_start = now;
        s->count = 0;
    }
    s->count++;
    if (s->count > SPOOL__LOG_BURST) {
        suppressed = -1;
    }
    pthread_mutex_unlock(&slots_lock);
    return suppressed;
}

/* Escapes s into dst and NUL-terminates it; cap must hold 6 bytes per byte
 * of s plus one, so nothing is cut in the middle of an escape. */
static size_t json_str(char *dst, size_t cap, const char *s)
{
    size_t n = spool_json_escape(dst, cap - 1, (const uint8_t *)s, strlen(s));
    n = n < cap - 1 ? n : cap - 1;
    dst[n] = '\0';
    return n;
}

static void log_emit(const spool_instance *ins, int level, int limited, const char *fmt, va_list ap)
{
    if (!spool_log_enabled(level)) {
        return;
    }
    long suppressed = limited ? rate_limit(ins, fmt) : 0;
    if (suppressed < 0) {
        return;
    }
    char msg[2048];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000));
    const char *comp = ins ? ins->label : "core";
    int json = atomic_load(&log_format) == SPOOL_LOGFMT_JSON;
    char esc[sizeof(msg) * 6 + 1]; /* worst case: 6 bytes a byte (\ufffd) */
    char cesc[6 * 128 + 1];
    char ctrunc[128];
    char line[sizeof(esc) + sizeof(cesc) + 256];
    size_t len;
    if (json) {
        json_str(esc, sizeof(esc), msg);
        snprintf(ctrunc, sizeof(ctrunc), "%s", comp);
        json_str(cesc, sizeof(cesc), ctrunc);
        len = (size_t)snprintf(line, sizeof(line),
                               "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"%s\","
                               "\"message\":\"%s\"}\n",
                               when, level_names[level], cesc, esc);
    } else {
        len = (size_t)snprintf(line, sizeof(line), "%s %-5s [%s] %s\n", when, level_names[level],
                               comp, msg);
    }
    if (len >= sizeof(line)) {
        len = sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    if (suppressed > 0) {
        char note[sizeof(cesc) + 256];
        int m = json ? snprintf(note, sizeof(note),
                                "{\"time\":\"%s\",\"level\":\"%s\","
                                "\"component\":\"%s\",\"message\":\"(%ld similar messages "
                                "suppressed)\"}\n",
                                when, level_names[level], cesc, suppressed)
                     : snprintf(note, sizeof(note),
                                "%s %-5s [%s] (%ld similar messages "
                                "suppressed)\n",
                                when, level_names[level], comp, suppressed);
        if (m > 0) {
            ssize_t w = write(STDERR_FILENO, note, (size_t)m);
            (void)w;
        }
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void spool_log_writev(const spool_instance *ins, int level, const char *fmt, va_list ap)
{
    log_emit(ins, level, 1, fmt, ap);
}

void spool__log_unlimited(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(NULL, level, 0, fmt, ap);
    va_end(ap);
}

void spool_log_write(const spool_instance *ins, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    spool_log_writev(ins, level, fmt, ap);
    va_end(ap);
}

int64_t spool_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t spool_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
