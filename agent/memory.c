/*
 * memory.c: the service's one byte account (service.memory_limit).
 *
 * Every large, data-proportional buffer of the process is counted here:
 * batches (their arenas and arrays, while an input builds them, while they
 * are queued, processed and written, and while they sit in the batch pool),
 * the output runners' chunks (raw bytes read from the log, decoded records,
 * and an estimate of the plugin's copy), the http input's request bodies,
 * the tail input's read buffers. What is not counted is the fixed part
 * (binary, libraries, thread stacks, the log's indexes, per-file and
 * per-connection bookkeeping, malloc's own overhead): docs/memory.md
 * measures it.
 *
 * Two ways in. A *charge* (spool__mem_charge) counts memory already held,
 * or memory that must be taken so that no accepted data is lost (a batch
 * growing under an input that already read the bytes, the log writer); it
 * never fails and may push the account over its limit. A *reservation*
 * (spool__mem_reserve, spool__mem_try_reserve) is an admission: it
 * succeeds only if the account stays within its limit, and is how a
 * consumer that can push back asks first (http answers 503, tail stops
 * reading, an output runner sends fewer chunks at once). Inputs also wait
 * at submission while the account is over its limit and the pipeline holds
 * batches that will free memory (spool__mem_wait_room), so charges made
 * over the limit are paid back before more is read.
 *
 * Invariants: `reserved` is the sum of every live charge and reservation
 * minus releases (never negative: a release is always of bytes counted
 * before). Waiting is bounded by the caller's timeout, and only on a
 * condition that progress elsewhere clears without needing memory: the log
 * writer and the processors never wait here, so the queued batches always
 * drain and release what they hold (no deadlock through the account).
 *
 * The hot path is one relaxed atomic add per batch growth or chunk, never
 * per record; the lock is taken only to sleep and to wake sleepers.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "core.h"

/* Large allocations at or above this size are mmap()ed by glibc and given
 * back to the kernel when freed. Set once so glibc's dynamic threshold
 * (which rises up to 32 MiB after a large free) does not keep freed batch
 * arenas and chunks resident in the heap, outside the account. */
#define MEM_MMAP_THRESHOLD (256 * 1024)

static struct {
    _Atomic int64_t reserved; /* bytes counted now */
    _Atomic int64_t limit;    /* bytes; 0 = no limit */
    _Atomic int64_t peak;     /* highest `reserved` seen, bytes */
    _Atomic int waiters;      /* threads sleeping in reserve/wait_room */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; signalled by releases */
    int cond_ready;
    spool_counter *g_reserved; /* spool_memory_reserved_bytes */
    spool_counter *g_limit;    /* spool_memory_limit_bytes */
    spool_counter *c_waits;    /* spool_memory_waits_total */
    spool_counter *c_refused;  /* spool_memory_refusals_total */
} acct = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t acct_once = PTHREAD_ONCE_INIT;

static void acct_init_once(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&acct.cond, &ca);
    pthread_condattr_destroy(&ca);
    acct.cond_ready = 1;
    mallopt(M_MMAP_THRESHOLD, MEM_MMAP_THRESHOLD);
    acct.g_reserved = spool__metric_register("spool_memory_reserved_bytes",
                                             "Bytes counted against service.memory_limit", "", 1);
    acct.g_limit =
        spool__metric_register("spool_memory_limit_bytes", "service.memory_limit", "", 1);
    acct.c_waits = spool__metric_register("spool_memory_waits_total",
                                          "Times a reader waited for memory_limit room", "", 0);
    acct.c_refused = spool__metric_register(
        "spool_memory_refusals_total",
        "Reservations refused for lack of memory_limit room (503, fewer chunks)", "", 0);
}

static void gauge_update(int64_t v)
{
    int64_t p = atomic_load_explicit(&acct.peak, memory_order_relaxed);
    while (v > p && !atomic_compare_exchange_weak(&acct.peak, &p, v)) {
    }
    if (acct.g_reserved) {
        atomic_store_explicit(&acct.g_reserved->value, v, memory_order_relaxed);
    }
}

void spool__mem_init(int64_t limit)
{
    pthread_once(&acct_once, acct_init_once);
    atomic_store(&acct.limit, limit > 0 ? limit : 0);
    if (acct.g_limit) {
        atomic_store(&acct.g_limit->value, limit > 0 ? limit : 0);
    }
    gauge_update(atomic_load(&acct.reserved));
    /* A larger limit may let sleepers in. */
    pthread_mutex_lock(&acct.lock);
    if (acct.cond_ready) {
        pthread_cond_broadcast(&acct.cond);
    }
    pthread_mutex_unlock(&acct.lock);
}

int64_t spool__mem_limit(void)
{
    return atomic_load_explicit(&acct.limit, memory_order_relaxed);
}

int64_t spool__mem_reserved(void)
{
    return atomic_load_explicit(&acct.reserved, memory_order_relaxed);
}

int64_t spool__mem_peak(void)
{
    return atomic_load_explicit(&acct.peak, memory_order_relaxed);
}

void spool__mem_charge(size_t bytes)
{
    if (bytes) {
        gauge_update(atomic_fetch_add(&acct.reserved, (int64_t)bytes) + (int64_t)bytes);
    }
}

void spool__mem_release(size_t bytes)
{
    if (!bytes) {
        return;
    }
    gauge_update(atomic_fetch_sub(&acct.reserved, (int64_t)bytes) - (int64_t)bytes);
    if (atomic_load(&acct.waiters) > 0) {
        pthread_mutex_lock(&acct.lock);
        pthread_cond_broadcast(&acct.cond);
        pthread_mutex_unlock(&acct.lock);
    }
}

void spool__mem_adjust(size_t *charged, size_t now)
{
    if (now > *charged) {
        spool__mem_charge(now - *charged);
    } else if (now < *charged) {
        spool__mem_release(*charged - now);
    }
    *charged = now;
}

int spool__mem_room(size_t bytes, int percent)
{
    int64_t limit = spool__mem_limit();
    if (!limit) {
        return 1;
    }
    return spool__mem_reserved() + (int64_t)bytes <= limit * percent / 100;
}

/* One attempt: adds bytes if the account stays within its limit. */
static int try_add(size_t bytes)
{
    int64_t limit = spool__mem_limit();
    int64_t cur = atomic_load(&acct.reserved); /* seq_cst: pairs with release()'s waiters check */
    for (;;) {
        if (limit && cur + (int64_t)bytes > limit) {
            return -EAGAIN;
        }
        if (atomic_compare_exchange_weak(&acct.reserved, &cur, cur + (int64_t)bytes)) {
            gauge_update(cur + (int64_t)bytes);
            return 0;
        }
    }
}

int spool__mem_try_reserve(size_t bytes)
{
    if (try_add(bytes) == 0) {
        return 0;
    }
    /* Emptied batches kept for reuse are the first to go. */
    if (spool__batch_pool_trim() && try_add(bytes) == 0) {
        return 0;
    }
    return -EAGAIN;
}

static void deadline_after(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Sleeps until a release or the deadline. 0, or ETIMEDOUT. Lock held. */
static int sleep_locked(const struct timespec *dl, int forever)
{
    if (forever) {
        return pthread_cond_wait(&acct.cond, &acct.lock);
    }
    return pthread_cond_timedwait(&acct.cond, &acct.lock, dl);
}

int spool__mem_reserve(size_t bytes, int64_t timeout_ms)
{
    int64_t limit = spool__mem_limit();
    if (limit && (int64_t)bytes > limit) {
        spool_counter_add(acct.c_refused, 1);
        return -ENOMEM; /* could never fit */
    }
    if (spool__mem_try_reserve(bytes) == 0) {
        return 0;
    }
    if (timeout_ms == 0) {
        spool_counter_add(acct.c_refused, 1);
        return -EAGAIN;
    }
    pthread_once(&acct_once, acct_init_once);
    spool_counter_add(acct.c_waits, 1);
    struct timespec dl;
    deadline_after(&dl, timeout_ms > 0 ? timeout_ms : 0);
    int rc = -EAGAIN;
    pthread_mutex_lock(&acct.lock);
    atomic_fetch_add(&acct.waiters, 1);
    for (;;) {
        if (try_add(bytes) == 0) {
            rc = 0;
            break;
        }
        if (sleep_locked(&dl, timeout_ms < 0) == ETIMEDOUT) {
            rc = try_add(bytes) == 0 ? 0 : -EAGAIN;
            break;
        }
    }
    atomic_fetch_sub(&acct.waiters, 1);
    pthread_mutex_unlock(&acct.lock);
    if (rc < 0) {
        spool_counter_add(acct.c_refused, 1);
    }
    return rc;
}

int spool__mem_wait_room(int64_t timeout_ms, int (*frees)(void *arg), void *arg)
{
    int64_t limit = spool__mem_limit();
    if (!limit || spool__mem_reserved() <= limit) {
        return 0;
    }
    spool__batch_pool_trim();
    if (spool__mem_reserved() <= limit || !frees(arg)) {
        return 0; /* nothing in flight would pay it back: waiting cannot help */
    }
    if (timeout_ms == 0) {
        return -EAGAIN;
    }
    pthread_once(&acct_once, acct_init_once);
    spool_counter_add(acct.c_waits, 1);
    struct timespec dl;
    deadline_after(&dl, timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0;
    pthread_mutex_lock(&acct.lock);
    atomic_fetch_add(&acct.waiters, 1);
    while (spool__mem_reserved() > spool__mem_limit() && frees(arg)) {
        /* A release wakes us; the bounded slice re-checks `frees`, which
         * changes without a release (a queue emptied into the writer). */
        struct timespec slice;
        deadline_after(&slice, 100);
        if (timeout_ms >= 0 && (slice.tv_sec > dl.tv_sec ||
                                (slice.tv_sec == dl.tv_sec && slice.tv_nsec > dl.tv_nsec))) {
            slice = dl;
        }
        pthread_cond_timedwait(&acct.cond, &acct.lock, &slice);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (timeout_ms >= 0 &&
            (now.tv_sec > dl.tv_sec || (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec))) {
            rc = spool__mem_reserved() > spool__mem_limit() && frees(arg) ? -EAGAIN : 0;
            break;
        }
    }
    atomic_fetch_sub(&acct.waiters, 1);
    pthread_mutex_unlock(&acct.lock);
    return rc;
}

/* ---- the plugin API (spool.h) ---- */

int spool_memory_reserve(size_t bytes, int64_t timeout_ms)
{
    return spool__mem_reserve(bytes, timeout_ms);
}

void spool_memory_adjust(size_t *held, size_t now)
{
    spool__mem_adjust(held, now);
}

void spool_memory_release(size_t bytes)
{
    spool__mem_release(bytes);
}
