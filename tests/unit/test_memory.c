/* test_memory.c: the memory account (agent/memory.c): charges and releases,
 * admission within the limit, a blocked reservation woken by a release,
 * bounded waits, the batch pool counted and trimmed first, batches charged
 * as they grow and released when freed, and the submission gate that only
 * waits while something in flight will pay memory back. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core.h"

#define MIB (1024 * 1024)

/* Every test starts from an empty account with a 16 MiB limit. */
static int setup(void **state)
{
    spool__batch_pool_trim();
    spool__mem_init(16 * MIB);
    assert_int_equal(spool__mem_reserved(), 0);
    return 0;
}

static void charge_release_adjust(void **state)
{
    spool__mem_charge(1000);
    assert_int_equal(spool__mem_reserved(), 1000);
    /* A charge never fails, even over the limit. */
    spool__mem_charge(20 * MIB);
    assert_true(spool__mem_reserved() > spool__mem_limit());
    assert_true(spool__mem_peak() >= 20 * MIB + 1000);
    spool__mem_release(20 * MIB);
    size_t held = 0;
    spool__mem_adjust(&held, 5000);
    assert_int_equal(held, 5000);
    assert_int_equal(spool__mem_reserved(), 6000);
    spool__mem_adjust(&held, 2000);
    assert_int_equal(spool__mem_reserved(), 3000);
    spool__mem_adjust(&held, 0);
    spool__mem_release(1000);
    assert_int_equal(spool__mem_reserved(), 0);
}

static void reserve_within_limit(void **state)
{
    assert_int_equal(spool__mem_try_reserve(10 * MIB), 0);
    assert_int_equal(spool__mem_try_reserve(6 * MIB), 0);
    assert_int_equal(spool__mem_try_reserve(1), -EAGAIN);
    assert_int_equal(spool__mem_reserve(1, 0), -EAGAIN);
    assert_int_equal(spool__mem_reserve(1, 20), -EAGAIN); /* waits, times out */
    assert_true(spool__mem_room(0, 100));
    assert_false(spool__mem_room(0, 50));
    spool__mem_release(6 * MIB);
    assert_int_equal(spool__mem_reserve(6 * MIB, 0), 0);
    spool__mem_release(16 * MIB);
    /* More than the limit itself can never be admitted. */
    assert_int_equal(spool__mem_reserve(17 * MIB, -1), -ENOMEM);
    assert_int_equal(spool__mem_reserved(), 0);
}

typedef struct waiter {
    size_t bytes;
    int rc;
    _Atomic int done;
} waiter;

static void *reserve_thread(void *arg)
{
    waiter *w = arg;
    w->rc = spool__mem_reserve(w->bytes, -1);
    atomic_store(&w->done, 1);
    return NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void release_wakes_a_waiter(void **state)
{
    assert_int_equal(spool__mem_try_reserve(12 * MIB), 0);
    waiter w = {.bytes = 8 * MIB};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reserve_thread, &w), 0);
    /* The waiter cannot get in while 12 MiB are held (checked a few times,
     * bounded; this is not synchronization, the release below is). */
    for (int i = 0; i < 5; i++) {
        sleep_ms(5);
        assert_int_equal(atomic_load(&w.done), 0);
    }
    spool__mem_release(12 * MIB);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(spool__mem_reserved(), 8 * MIB);
    spool__mem_release(8 * MIB);
}

static spool_batch *big_batch(size_t value_bytes)
{
    static uint8_t v[4 * MIB];
    spool_batch *b = spool_batch_create(NULL);
    assert_non_null(b);
    spool_record r = {.value = v, .value_len = (int32_t)value_bytes, .key_len = -1, .timestamp = 1};
    assert_int_equal(spool_batch_append(b, &r), 0);
    return b;
}

static void batches_are_charged_and_pool_trimmed(void **state)
{
    spool_batch *b = big_batch(MIB);
    int64_t held = spool__mem_reserved();
    /* The arena (doubled up to 1 MiB) and the arrays. */
    assert_true(held >= MIB);
    assert_true(held <= MIB + 64 * 1024);
    spool_batch_destroy(b); /* pooled: still held, still counted */
    assert_int_equal(spool__mem_reserved(), held);
    /* Someone needing the room gets it: the pool goes first. */
    assert_int_equal(spool__mem_try_reserve(15 * MIB + MIB / 2), 0);
    assert_int_equal(spool__mem_reserved(), 15 * MIB + MIB / 2);
    spool__mem_release(15 * MIB + MIB / 2);
    /* A batch larger than the pool's share (memory_limit / 8) is freed. */
    b = big_batch(3 * MIB);
    spool_batch_destroy(b);
    assert_int_equal(spool__batch_pool_trim(), 0);
    assert_int_equal(spool__mem_reserved(), 0);
    /* Small batches are pooled and reused without a new charge. */
    b = big_batch(1000);
    held = spool__mem_reserved();
    spool_batch_destroy(b);
    b = big_batch(1000);
    assert_int_equal(spool__mem_reserved(), held);
    spool_batch_destroy(b);
    assert_true(spool__batch_pool_trim() > 0);
    assert_int_equal(spool__mem_reserved(), 0);
}

static int frees_flag(void *arg)
{
    return atomic_load((_Atomic int *)arg);
}

typedef struct gate {
    _Atomic int frees;
    int rc;
    _Atomic int done;
} gate;

static void *gate_thread(void *arg)
{
    gate *g = arg;
    g->rc = spool__mem_wait_room(-1, frees_flag, (void *)&g->frees);
    atomic_store(&g->done, 1);
    return NULL;
}

static void gate_waits_only_when_it_can_help(void **state)
{
    _Atomic int no = 0, yes = 1;
    /* Within the limit: no wait. */
    assert_int_equal(spool__mem_wait_room(-1, frees_flag, (void *)&yes), 0);
    spool__mem_charge(20 * MIB);
    /* Over, but nothing in flight would free memory: waiting cannot help. */
    assert_int_equal(spool__mem_wait_room(-1, frees_flag, (void *)&no), 0);
    /* Over, and something will: bounded wait. */
    assert_int_equal(spool__mem_wait_room(30, frees_flag, (void *)&yes), -EAGAIN);
    assert_int_equal(spool__mem_wait_room(0, frees_flag, (void *)&yes), -EAGAIN);
    /* A waiter is let through by a release... */
    gate g = {.frees = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, gate_thread, &g), 0);
    spool__mem_release(10 * MIB);
    pthread_join(t, NULL);
    assert_int_equal(g.rc, 0);
    /* ...or when the pipeline empties without a release. */
    spool__mem_charge(10 * MIB);
    gate g2 = {.frees = 1};
    assert_int_equal(pthread_create(&t, NULL, gate_thread, &g2), 0);
    atomic_store(&g2.frees, 0);
    pthread_join(t, NULL);
    assert_int_equal(g2.rc, 0);
    spool__mem_release(20 * MIB);
    assert_int_equal(spool__mem_reserved(), 0);
}

static void no_limit_admits_everything(void **state)
{
    spool__mem_init(0);
    assert_int_equal(spool__mem_reserve(1LL << 40, 0), 0);
    assert_true(spool__mem_room(1, 1));
    spool__mem_release(1LL << 40);
    spool__mem_init(16 * MIB);
}

static void plugin_api(void **state)
{
    size_t held = 0;
    assert_int_equal(spool_memory_reserve(MIB, 0), 0);
    spool_memory_adjust(&held, 2 * MIB);
    assert_int_equal(spool__mem_reserved(), 3 * MIB);
    spool_memory_release(MIB);
    spool_memory_adjust(&held, 0);
    assert_int_equal(spool__mem_reserved(), 0);
    assert_int_equal(spool_memory_reserve(32 * MIB, 10), -ENOMEM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(charge_release_adjust, setup),
        cmocka_unit_test_setup(reserve_within_limit, setup),
        cmocka_unit_test_setup(release_wakes_a_waiter, setup),
        cmocka_unit_test_setup(batches_are_charged_and_pool_trimmed, setup),
        cmocka_unit_test_setup(gate_waits_only_when_it_can_help, setup),
        cmocka_unit_test_setup(no_limit_admits_everything, setup),
        cmocka_unit_test_setup(plugin_api, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
