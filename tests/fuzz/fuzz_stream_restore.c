/*
 * fuzz_stream_restore.c: sx_restore (streams/engine_snap.c) on arbitrary
 * bytes. Input: byte 0 picks the definition (threshold, sequence, absence,
 * hopping view with every aggregate), byte 1 the mode: even = the rest is a
 * payload wrapped in a valid header and checksum (so the fuzzer reaches the
 * parser behind the checksum), odd = the rest is the image as is. A restore
 * must refuse (-EBADMSG) or give a state that snapshots, restores again to
 * the same bytes, takes records and answers queries without a sanitizer
 * report.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "engine_int.h"

static sx_def *defs[4];

static sx_def *def_of(int i)
{
    static const sx_opt thr[] = {{"key", "{{ k }}"},
                                 {"pattern.type", "threshold"},
                                 {"pattern.count", "3"},
                                 {"pattern.within", "10s"},
                                 {"max_keys", "50"}};
    static const sx_opt seq[] = {{"key", "{{ k }}"},
                                 {"pattern.type", "sequence"},
                                 {"pattern.within", "10s"},
                                 {"pattern.steps[0].when", "s == \"a\""},
                                 {"pattern.steps[0].min", "2"},
                                 {"pattern.steps[1].when", "s == \"b\""},
                                 {"max_keys", "50"}};
    static const sx_opt abs[] = {{"key", "{{ k }}"},
                                 {"pattern.type", "absence"},
                                 {"pattern.within", "10s"},
                                 {"pattern.first", "s == \"a\""},
                                 {"pattern.then", "s == \"b\""},
                                 {"max_keys", "50"}};
    static const sx_opt view[] = {{"view.group_by", "{{ k }}"},
                                  {"view.window.hopping", "10s"},
                                  {"view.window.every", "5s"},
                                  {"allowed_lateness", "1s"},
                                  {"view.aggregates[0]", "count"},
                                  {"view.aggregates[1]", "sum(v)"},
                                  {"view.aggregates[2]", "min(v)"},
                                  {"view.aggregates[3]", "max(v)"},
                                  {"view.aggregates[4]", "avg(v)"},
                                  {"view.aggregates[5]", "distinct(s)"},
                                  {"view.aggregates[6]", "p90(v)"},
                                  {"view.aggregates[7]", "last(s)"},
                                  {"max_keys", "50"}};
    static const struct {
        const sx_opt *o;
        size_t n;
    } all[4] = {{thr, 5}, {seq, 7}, {abs, 6}, {view, 13}};
    if (defs[i] == NULL) {
        sx_error err;
        if (sx_def_compile(all[i].o, all[i].n, &defs[i], &err) != 0) {
            abort();
        }
    }
    return defs[i];
}

static int sink(void *arg, const spool_record *ev)
{
    (void)arg;
    (void)ev;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    const sx_def *d = def_of(data[0] & 3);
    spool_buf img = {0};
    const uint8_t *p = data + 2;
    size_t len = size - 2;
    if ((data[1] & 1) == 0) {
        if (sx__snapshot_wrap(d, p, len, &img) != 0) {
            return 0;
        }
        p = img.data;
        len = img.len;
    }
    sx_state *s = sx_state_new(d);
    if (s == NULL) {
        abort();
    }
    int rc = sx_restore(s, p, len);
    if (rc != 0 && rc != -EBADMSG && rc != -ENOMEM) {
        abort();
    }
    if (rc == 0) {
        spool_buf a = {0}, b = {0};
        sx_state *t = sx_state_new(d);
        if (sx_snapshot(s, &a) || sx_restore(t, a.data, a.len) || sx_snapshot(t, &b) ||
            a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
            abort();
        }
        spool_header h[3] = {{"k", 1, (const uint8_t *)"x", 1},
                             {"s", 1, (const uint8_t *)"a", 1},
                             {"v", 1, (const uint8_t *)"5", 1}};
        spool_record r = {.key_len = -1, .value_len = -1, .headers = h, .header_count = 3};
        for (int i = 0; i < 4; i++) {
            int64_t w = sx_watermark(s);
            r.timestamp = w == INT64_MIN ? 0 : w > INT64_MAX / 2 ? w : w + i * 3000;
            h[1].value = (const uint8_t *)(i & 1 ? "b" : "a");
            sx_process(s, &r, NULL, sink, NULL);
        }
        spool_buf q = {0};
        sx_query(s, NULL, 0, 0, &q);
        sx_advance(s, INT64_MAX / 2, sink, NULL);
        sx_stats_t st;
        sx_stats(s, &st);
        spool_buf_free(&q);
        spool_buf_free(&a);
        spool_buf_free(&b);
        sx_state_free(t);
    }
    sx_state_free(s);
    spool_buf_free(&img);
    return 0;
}
