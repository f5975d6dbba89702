/*
 * test_http_idem.c: the `http` input's idempotent ingest bookkeeping
 * (inputs/http/http_in_idem.c): a new key, a duplicate, a partial overlap,
 * a gap, expiry (in memory and of stored positions), a write of unknown fate
 * (pending until the durable store shows it), the stored position's
 * encoding, key validation, and two threads racing on one key (only one
 * may append a range).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../inputs/http/http_in_idem.c"

#define DAY (86400LL * 1000)

static int64_t store_next = -1; /* what the fake durable store holds */

static int fake_durable(void *arg, const char *key, int64_t *next)
{
    (void)arg;
    (void)key;
    if (store_next < 0) {
        return -ENOENT;
    }
    *next = store_next;
    return 0;
}

static int64_t far(void)
{
    return idem_mono_ms() + 10000;
}

static void new_then_duplicate_overlap_gap(void **state)
{
    (void)state;
    httpi_idem t;
    httpi_idem_ticket tk;
    assert_int_equal(httpi_idem_init(&t, 7 * DAY, 1000, NULL, NULL), 0);
    int64_t now = 1000 * DAY;

    /* A new key: everything appended. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 0, 100, now, far(), &tk), HTTPI_IDEM_APPEND);
    assert_int_equal(tk.from, 0);
    assert_false(tk.gap || tk.overlap);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);

    /* The same range again (a lost acknowledgement): a duplicate. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 0, 100, now, far(), &tk), HTTPI_IDEM_DUP);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_NOT_SENT);
    /* A range inside the accepted one: a duplicate too. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 40, 60, now, far(), &tk), HTTPI_IDEM_DUP);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_NOT_SENT);
    assert_int_equal(t.duplicates, 2);

    /* Overlap: only offsets >= 100 are taken. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 50, 150, now, far(), &tk), HTTPI_IDEM_APPEND);
    assert_int_equal(tk.from, 100);
    assert_true(tk.overlap);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);

    /* Gap: the sender's retention dropped 150..199; accepted and counted. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 200, 250, now, far(), &tk), HTTPI_IDEM_APPEND);
    assert_int_equal(tk.from, 200);
    assert_true(tk.gap);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
    assert_int_equal(t.gaps, 1);
    assert_int_equal(t.overlaps, 1);

    /* A request that was not queued changes nothing. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 250, 300, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_NOT_SENT);
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 250, 300, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);

    /* Other partitions and producers are separate. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/1", 0, 100, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
    assert_int_equal(httpi_idem_begin(&t, "q/app/0", 0, 100, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
    httpi_idem_destroy(&t);
}

static void loaded_positions_and_expiry(void **state)
{
    (void)state;
    httpi_idem t;
    httpi_idem_ticket tk;
    uint8_t pos[HTTPI_IDEM_POS_LEN];
    int64_t now = 1000 * DAY;
    assert_int_equal(httpi_idem_init(&t, 7 * DAY, 1000, NULL, NULL), 0);

    /* After a restart the stored offsets are loaded: a resend is a duplicate. */
    httpi_idem_pos_encode(pos, 500, now - DAY);
    assert_int_equal(httpi_idem_load(&t, "p/app/0", pos, sizeof(pos), now), 0);
    int64_t n, seen;
    assert_int_equal(httpi_idem_pos_decode(pos, sizeof(pos), &n, &seen), 0);
    assert_int_equal(n, 500);
    assert_int_equal(seen, now - DAY);
    assert_int_equal(httpi_idem_pos_decode(pos, 3, &n, &seen), -EINVAL);
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 400, 500, now, far(), &tk), HTTPI_IDEM_DUP);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_NOT_SENT);

    /* A stored entry idle longer than the expiry is not loaded, and is to
     * be removed from the store. */
    httpi_idem_pos_encode(pos, 900, now - 8 * DAY);
    assert_int_equal(httpi_idem_load(&t, "old/app/0", pos, sizeof(pos), now), 0);
    char *gone[4];
    assert_int_equal(httpi_idem_take_forgotten(&t, gone, 4), 1);
    assert_string_equal(gone[0], "old/app/0");
    free(gone[0]);
    assert_int_equal(httpi_idem_begin(&t, "old/app/0", 0, 10, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);

    /* In memory: 8 days later every idle entry is swept out. */
    assert_int_equal(httpi_idem_begin(&t, "z/app/0", 0, 10, now + 8 * DAY, far(), &tk),
                     HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
    assert_int_equal(httpi_idem_take_forgotten(&t, gone, 4), 2);
    free(gone[0]);
    free(gone[1]);
    /* p/app/0 is gone: its old range is new again (at least once after expiry). */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 400, 500, now + 8 * DAY, far(), &tk),
                     HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
    assert_int_equal(t.expired, 3);
    httpi_idem_destroy(&t);
}

static void unknown_fate_waits_for_the_store(void **state)
{
    (void)state;
    httpi_idem t;
    httpi_idem_ticket tk;
    int64_t now = 1000 * DAY;
    assert_int_equal(httpi_idem_init(&t, 7 * DAY, 60000, fake_durable, NULL), 0);
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 0, 100, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_DURABLE);
    store_next = 100;
    /* Queued, not durable within ack_timeout: the key is pending. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 100, 200, now, far(), &tk), HTTPI_IDEM_APPEND);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_UNKNOWN);
    /* The resend must not be appended while the first copy may still land. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 100, 200, now, far(), &tk), -EAGAIN);
    /* Once the store shows it, the resend is a duplicate. */
    store_next = 200;
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 100, 200, now, far(), &tk), HTTPI_IDEM_DUP);
    httpi_idem_end(&t, &tk, HTTPI_IDEM_NOT_SENT);
    store_next = -1;
    httpi_idem_destroy(&t);
}

static void keys_are_checked(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(httpi_idem_key(buf, sizeof(buf), "abc123", "app", 3), 0);
    assert_string_equal(buf, "abc123/app/3");
    assert_int_equal(httpi_idem_key(buf, sizeof(buf), "", "app", 3), -EINVAL);
    assert_int_equal(httpi_idem_key(buf, sizeof(buf), "a/b", "app", 3), -EINVAL);
    assert_int_equal(httpi_idem_key(buf, sizeof(buf), "a b", "app", 3), -EINVAL);
    assert_int_equal(httpi_idem_key(buf, 8, "abc123", "app", 3), -ENAMETOOLONG);
}

/* Many threads send the same ranges of one key at once, each range several
 * times: each range is appended exactly once. */
typedef struct racer {
    httpi_idem *t;
    int appended;
} racer;

#define RACE_RANGES 200

static void *race(void *arg)
{
    racer *r = arg;
    for (int64_t i = 0; i < RACE_RANGES; i++) {
        httpi_idem_ticket tk;
        int v = httpi_idem_begin(r->t, "p/app/0", i * 10, i * 10 + 10, 1000 * DAY, far(), &tk);
        assert_true(v == HTTPI_IDEM_APPEND || v == HTTPI_IDEM_DUP);
        if (v == HTTPI_IDEM_APPEND) {
            assert_int_equal(tk.from, i * 10);
            r->appended++;
        }
        httpi_idem_end(r->t, &tk,
                       v == HTTPI_IDEM_APPEND ? HTTPI_IDEM_DURABLE : HTTPI_IDEM_NOT_SENT);
    }
    return NULL;
}

static void concurrent_copies_append_once(void **state)
{
    (void)state;
    httpi_idem t;
    assert_int_equal(httpi_idem_init(&t, 7 * DAY, 1000, NULL, NULL), 0);
    pthread_t th[4];
    racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){&t, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += r[i].appended;
    }
    assert_int_equal(total, RACE_RANGES);
    assert_int_equal(t.duplicates + (uint64_t)total, 4 * RACE_RANGES);
    httpi_idem_destroy(&t);
}

static void busy_key_times_out(void **state)
{
    (void)state;
    httpi_idem t;
    httpi_idem_ticket a, b;
    assert_int_equal(httpi_idem_init(&t, 7 * DAY, 1000, NULL, NULL), 0);
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 0, 10, 1000 * DAY, far(), &a),
                     HTTPI_IDEM_APPEND);
    /* Held by a: a second copy waits until its deadline, then gives up. */
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 0, 10, 1000 * DAY, idem_mono_ms() + 20, &b),
                     -ETIMEDOUT);
    httpi_idem_end(&t, &a, HTTPI_IDEM_DURABLE);
    assert_int_equal(httpi_idem_begin(&t, "p/app/0", 0, 10, 1000 * DAY, far(), &b), HTTPI_IDEM_DUP);
    httpi_idem_end(&t, &b, HTTPI_IDEM_NOT_SENT);
    httpi_idem_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_then_duplicate_overlap_gap),
        cmocka_unit_test(loaded_positions_and_expiry),
        cmocka_unit_test(unknown_fate_waits_for_the_store),
        cmocka_unit_test(keys_are_checked),
        cmocka_unit_test(concurrent_copies_append_once),
        cmocka_unit_test(busy_key_times_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
