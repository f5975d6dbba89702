/* test_queue.c: the bounded queue between stages: order, blocking when
 * full (count and bytes), wake-up of a blocked producer, timeouts, close. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"

typedef struct item {
    spool_queue_item link;
    int value;
} item;

static void fifo_order(void **state)
{
    spool_queue q;
    item it[5];
    spool_queue_init(&q, 10, 0);
    for (int i = 0; i < 5; i++) {
        it[i].value = i;
        assert_int_equal(spool_queue_push(&q, &it[i].link, 1, 0), 0);
    }
    assert_int_equal(spool_queue_count(&q), 5);
    for (int i = 0; i < 5; i++) {
        size_t w = 0;
        item *x = (item *)spool_queue_pop(&q, 0, &w);
        assert_non_null(x);
        assert_int_equal(x->value, i);
        assert_int_equal(w, 1);
    }
    assert_null(spool_queue_pop(&q, 0, NULL));
    spool_queue_destroy(&q);
}

static void full_by_count_and_bytes(void **state)
{
    spool_queue q;
    item a, b, c;
    spool_queue_init(&q, 2, 100);
    assert_int_equal(spool_queue_push(&q, &a.link, 10, 0), 0);
    assert_int_equal(spool_queue_push(&q, &b.link, 10, 0), 0);
    assert_int_equal(spool_queue_push(&q, &c.link, 10, 0), -EAGAIN);  /* count */
    assert_int_equal(spool_queue_push(&q, &c.link, 10, 50), -EAGAIN); /* times out */
    spool_queue_pop(&q, 0, NULL);
    spool_queue_pop(&q, 0, NULL);
    assert_int_equal(spool_queue_push(&q, &a.link, 60, 0), 0);
    assert_int_equal(spool_queue_push(&q, &b.link, 60, 0), -EAGAIN); /* bytes */
    spool_queue_pop(&q, 0, NULL);
    /* An item heavier than max_bytes still passes alone: no deadlock. */
    assert_int_equal(spool_queue_push(&q, &b.link, 500, 0), 0);
    assert_int_equal(q.bytes, 500);
    spool_queue_pop(&q, 0, NULL);
    assert_int_equal(q.bytes, 0);
    spool_queue_destroy(&q);
}

typedef struct producer {
    spool_queue *q;
    item items[3];
    int results[3];
    _Atomic int pushed;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    for (int i = 0; i < 3; i++) {
        p->results[i] = spool_queue_push(p->q, &p->items[i].link, 1, -1);
        atomic_fetch_add(&p->pushed, 1);
    }
    return NULL;
}

static void blocked_producer_wakes_up(void **state)
{
    spool_queue q;
    producer p = {.q = &q};
    pthread_t t;
    spool_queue_init(&q, 1, 0);
    pthread_create(&t, NULL, produce, &p);
    /* The first push passes, the second blocks until we pop. */
    for (int i = 0; i < 200 && atomic_load(&p.pushed) < 1; i++) {
        usleep(5000);
    }
    usleep(50000);
    assert_int_equal(atomic_load(&p.pushed), 1);
    assert_non_null(spool_queue_pop(&q, 1000, NULL));
    for (int i = 0; i < 200 && atomic_load(&p.pushed) < 2; i++) {
        usleep(5000);
    }
    assert_int_equal(atomic_load(&p.pushed), 2);
    /* Closing wakes the third push with -ESHUTDOWN. */
    spool_queue_close(&q);
    pthread_join(t, NULL);
    assert_int_equal(p.results[0], 0);
    assert_int_equal(p.results[1], 0);
    assert_int_equal(p.results[2], -ESHUTDOWN);
    /* Pop drains what is left after close, then returns NULL at once. */
    assert_non_null(spool_queue_pop(&q, -1, NULL));
    assert_null(spool_queue_pop(&q, -1, NULL));
    spool_queue_destroy(&q);
}

static void *consume_later(void *arg)
{
    spool_queue *q = arg;
    static item x;
    usleep(50000);
    spool_queue_push(q, &x.link, 1, -1);
    return NULL;
}

static void pop_waits_for_push(void **state)
{
    spool_queue q;
    pthread_t t;
    spool_queue_init(&q, 4, 0);
    assert_null(spool_queue_pop(&q, 20, NULL)); /* times out empty */
    pthread_create(&t, NULL, consume_later, &q);
    assert_non_null(spool_queue_pop(&q, 10000, NULL));
    pthread_join(t, NULL);
    spool_queue_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fifo_order),
        cmocka_unit_test(full_by_count_and_bytes),
        cmocka_unit_test(blocked_producer_wakes_up),
        cmocka_unit_test(pop_waits_for_push),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
