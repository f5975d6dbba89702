/*
 * http_out_send.c: the sender thread of the `http` output. It runs the
 * POSTs that flush() prepared on one curl multi handle (connections are
 * kept alive and shared), classifies each answer and reports it with
 * spool_output_complete().
 *
 * Order: at most one request per partition is on the wire at a time; the
 * others of that partition wait, lowest offsets first. When one fails (SPOOL_RETRY), the
 * requests waiting behind it in its partition are completed as SPOOL_RETRY
 * without being sent, so a later chunk never overtakes an earlier one that
 * is to be retried. And since the runner may flush those followers again
 * before the chunk that failed first, a partition with a failed chunk keeps
 * a "floor" (that chunk's first offset): later chunks of the partition wait
 * until a chunk at or below the floor succeeds or is rejected, or until
 * HTTPO_HOLD_MAX_MS passed since the floor chunk last failed (the runner
 * may have given it up under max_retry_time without flushing it again).
 * Different partitions go in parallel, up to the runner's max_in_flight.
 *
 * Never spins: the thread sleeps in curl_multi_poll until a socket is
 * ready, a timer of curl's is due, or flush/stop wakes it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_out.h"

/* Longest a chunk waits behind a failed earlier chunk of its partition,
 * counted from that chunk's last failure: longer than any retry delay
 * (Retry-After is capped at 5 minutes, the default retry_backoff_max is
 * 30 s). */
#define HTTPO_HOLD_MAX_MS (6 * 60 * 1000)

/* A partition with a chunk to be retried (sender-thread state). */
typedef struct httpo_floor {
    const char *topic; /* the chunk's topic (the runner's string) */
    int32_t partition;
    int64_t first;    /* first offset of the earliest failed chunk */
    int64_t since_ms; /* monotonic ms of its last failure */
} httpo_floor;

typedef struct httpo_floors {
    httpo_floor *items;
    size_t count, cap;
} httpo_floors;

static int floor_match(const httpo_floor *f, const spool_chunk *ch)
{
    return f->partition == ch->partition &&
           (f->topic == ch->topic || (f->topic && ch->topic && strcmp(f->topic, ch->topic) == 0));
}

static httpo_floor *floor_find(httpo_floors *fl, const spool_chunk *ch)
{
    for (size_t i = 0; i < fl->count; i++) {
        if (floor_match(&fl->items[i], ch)) {
            return &fl->items[i];
        }
    }
    return NULL;
}

/* Records a failed chunk. On ENOMEM the floor is not kept (order may then
 * suffer on a retry, nothing is lost). */
static void floor_raise(httpo_floors *fl, const spool_chunk *ch, int64_t now)
{
    httpo_floor *f = floor_find(fl, ch);
    if (f) {
        if (ch->first_offset <= f->first) {
            f->first = ch->first_offset;
            f->since_ms = now;
        }
        return;
    }
    if (fl->count == fl->cap) {
        size_t cap = fl->cap ? fl->cap * 2 : 8;
        httpo_floor *n = realloc(fl->items, cap * sizeof(*n));
        if (!n) {
            return;
        }
        fl->items = n;
        fl->cap = cap;
    }
    fl->items[fl->count++] = (httpo_floor){ch->topic, ch->partition, ch->first_offset, now};
}

/* A chunk at or below the floor was delivered or rejected: lift it. */
static void floor_lift(httpo_floors *fl, const spool_chunk *ch)
{
    httpo_floor *f = floor_find(fl, ch);
    if (f && ch->first_offset <= f->first) {
        *f = fl->items[--fl->count];
    }
}

/* 1 if ch must wait for an earlier failed chunk of its partition. */
static int floor_holds(httpo_floors *fl, const spool_chunk *ch, int64_t now)
{
    httpo_floor *f = floor_find(fl, ch);
    if (!f || ch->first_offset <= f->first) {
        return 0;
    }
    if (now - f->since_ms > HTTPO_HOLD_MAX_MS) {
        *f = fl->items[--fl->count];
        return 0;
    }
    return 1;
}

void httpo_req_free(httpo_req *r)
{
    if (!r) {
        return;
    }
    if (r->easy) {
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->hl);
    spool_buf_free(&r->body);
    spool_buf_free(&r->packed);
    spool_buf_free(&r->resp);
    spool_buf_free(&r->aux);
    free(r);
}

static int same_partition(const httpo_req *a, const httpo_req *b)
{
    return a->chunk->partition == b->chunk->partition &&
           (a->chunk->topic == b->chunk->topic ||
            (a->chunk->topic && b->chunk->topic && strcmp(a->chunk->topic, b->chunk->topic) == 0));
}

/* Reports the outcome, then returns the request for reuse. */
static void finish(httpo_ctx *c, httpo_req *r, int result, const char *reason)
{
    const spool_chunk *chunk = r->chunk;
    curl_slist_free_all(r->hl);
    r->hl = NULL;
    r->chunk = NULL;
    if (result == SPOOL_RETRY && r->retry_after_ms > 0) {
        spool_output_retry_after(c->ins, r->retry_after_ms);
    }
    spool_output_complete(c->ins, chunk, result, reason);
    pthread_mutex_lock(&c->lock);
    r->next = c->free_reqs;
    c->free_reqs = r;
    c->outstanding--;
    pthread_cond_broadcast(&c->idle);
    pthread_mutex_unlock(&c->lock);
}

typedef struct reject_arg {
    httpo_ctx *c;
    const spool_chunk *chunk;
    int failed;
} reject_arg;

static void reject_one(void *arg, size_t i, const char *reason)
{
    reject_arg *a = arg;
    if (spool_output_reject_record(a->c->ins, a->chunk, i, reason) < 0) {
        a->failed = 1;
    }
}

/* A destination format reads the response (http_fmt.h): records refused
 * one by one are marked for the dead-letter topic. -1: the generic rule. */
static int classify_fmt(httpo_ctx *c, httpo_req *r, long status, char *reason, size_t cap)
{
    const spool_chunk *ch = r->chunk;
    if (spool_buf_reserve(&r->resp, 1) < 0) {
        return SPOOL_RETRY;
    }
    r->resp.data[r->resp.len] = '\0';
    httpo_verdict v;
    reject_arg a = {c, ch, 0};
    httpo_fmt_response(&c->fmt, ch, status, (const char *)r->resp.data, r->resp.len, &r->aux, &v,
                       reject_one, &a);
    if (v.result < 0) {
        return -1;
    }
    if (a.failed) {
        spool_log_error(c->ins, "out of memory marking refused records: the chunk is retried");
        return SPOOL_RETRY;
    }
    if (v.result == SPOOL_RETRY) {
        spool_log_warn(c->ins,
                       "POST %s: HTTP %ld: %s; the chunk of %s[%" PRId32 "] at offset %" PRId64
                       " is retried",
                       httpo_url(c), status, v.reason, ch->topic ? ch->topic : "?", ch->partition,
                       ch->first_offset);
        spool_count(c->ins, SPOOL_COUNT_ERRORS, 1);
        return SPOOL_RETRY;
    }
    if (v.result == SPOOL_REJECT) {
        snprintf(reason, cap, "%s", v.reason);
        return SPOOL_REJECT;
    }
    if (v.rejected) {
        spool_log_warn(c->ins,
                       "POST %s: the destination refused %zu of %zu records of %s[%" PRId32
                       "] at offset %" PRId64 " (first: %s): to the dead-letter topic",
                       httpo_url(c), v.rejected, ch->count, ch->topic ? ch->topic : "?",
                       ch->partition, ch->first_offset, v.reason);
    }
    if (v.partial > 0) {
        spool_log_warn(c->ins,
                       "POST %s: the collector rejected %" PRId64
                       " of %zu log records of %s[%" PRId32 "] at offset %" PRId64
                       " (it does not say which): %s",
                       httpo_url(c), v.partial, ch->count, ch->topic ? ch->topic : "?",
                       ch->partition, ch->first_offset, v.reason[0] ? v.reason : "no message");
        spool_count(c->ins, SPOOL_COUNT_REJECTED, (uint64_t)v.partial);
    }
    return SPOOL_OK;
}

/* Turns curl's result and the status into SPOOL_OK/RETRY/REJECT; fills
 * reason for a rejection. */
static int classify(httpo_ctx *c, httpo_req *r, CURLcode cc, char *reason, size_t cap)
{
    const spool_chunk *ch = r->chunk;
    if (cc != CURLE_OK) {
        spool_log_warn(c->ins, "POST %s: %s", httpo_url(c),
                       r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
        spool_count(c->ins, SPOOL_COUNT_ERRORS, 1);
        return SPOOL_RETRY;
    }
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (c->fmt.format >= HTTPO_FMT_ES) {
        int res = classify_fmt(c, r, status, reason, cap);
        if (res >= 0) {
            return res;
        }
    }
    if (status >= 200 && status < 300) {
        return SPOOL_OK;
    }
    /* The response body on one line, for logs and dead letters. */
    char body[HTTPO_RESP_MAX + 1];
    size_t bl = r->resp.len < HTTPO_RESP_MAX ? r->resp.len : HTTPO_RESP_MAX;
    memcpy(body, r->resp.data ? (const char *)r->resp.data : "", bl);
    body[bl] = '\0';
    for (size_t i = 0; i < bl; i++) {
        if (body[i] == '\n' || body[i] == '\r') {
            body[i] = ' ';
        }
    }
    while (bl > 0 && body[bl - 1] == ' ') {
        body[--bl] = '\0';
    }
    if (status >= 500 || status == 408 || status == 425 || status == 429) {
        spool_log_warn(c->ins, "POST %s: HTTP %ld %s (Retry-After: %" PRId64 " ms)", httpo_url(c),
                       status, body, r->retry_after_ms);
        spool_count(c->ins, SPOOL_COUNT_ERRORS, 1);
        return SPOOL_RETRY;
    }
    snprintf(reason, cap, "HTTP %ld: %s", status, body);
    spool_log_error(c->ins,
                    "POST %s rejected %zu records of %s[%" PRId32 "] at offset %" PRId64 ": %s",
                    httpo_url(c), ch->count, ch->topic ? ch->topic : "?", ch->partition,
                    ch->first_offset, reason);
    return SPOOL_REJECT;
}

/* Appends r at the end of the list *head. */
static void list_append(httpo_req **head, httpo_req *r)
{
    r->next = NULL;
    while (*head) {
        head = &(*head)->next;
    }
    *head = r;
}

static void list_remove(httpo_req **head, httpo_req *r)
{
    while (*head && *head != r) {
        head = &(*head)->next;
    }
    if (*head) {
        *head = r->next;
    }
    r->next = NULL;
}

static void *sender_main(void *arg)
{
    httpo_ctx *c = arg;
    httpo_req *waiting = NULL; /* FIFO, not yet on the wire */
    httpo_req *active = NULL;  /* on the wire */
    httpo_floors floors = {0};
    char reason[HTTPO_RESP_MAX + 64];

    for (;;) {
        pthread_mutex_lock(&c->lock);
        httpo_req *in = c->incoming;
        c->incoming = NULL;
        int stop = c->stop;
        pthread_mutex_unlock(&c->lock);
        while (in) {
            httpo_req *n = in->next;
            list_append(&waiting, in);
            in = n;
        }
        if (stop) {
            break;
        }
        /* Start each waiting request whose partition has nothing on the wire. */
        int64_t now = spool_monotonic_ms();
        for (httpo_req *w = waiting, *nw; w; w = nw) {
            nw = w->next;
            int busy = floor_holds(&floors, w->chunk, now);
            for (httpo_req *a = active; a && !busy; a = a->next) {
                busy = same_partition(a, w);
            }
            /* A waiting request of the same partition with lower offsets goes first. */
            for (httpo_req *e = waiting; e && !busy; e = e->next) {
                busy = e != w && same_partition(e, w) &&
                       e->chunk->first_offset < w->chunk->first_offset;
            }
            if (busy) {
                continue;
            }
            list_remove(&waiting, w);
            if (curl_multi_add_handle(c->multi, w->easy) != CURLM_OK) {
                finish(c, w, SPOOL_RETRY, NULL);
                continue;
            }
            list_append(&active, w);
        }
        int started_or_done = 0;
        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }
            char *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            httpo_req *r = (httpo_req *)priv;
            CURLcode cc = msg->data.result;
            curl_multi_remove_handle(c->multi, msg->easy_handle);
            list_remove(&active, r);
            reason[0] = '\0';
            int res = classify(c, r, cc, reason, sizeof(reason));
            httpo_target_result(c, r, res);
            if (res == SPOOL_RETRY) {
                floor_raise(&floors, r->chunk, spool_monotonic_ms());
                /* Followers of its partition must not overtake it. */
                for (httpo_req *w = waiting, *nw; w; w = nw) {
                    nw = w->next;
                    if (same_partition(w, r)) {
                        list_remove(&waiting, w);
                        w->retry_after_ms = r->retry_after_ms;
                        finish(c, w, SPOOL_RETRY, NULL);
                    }
                }
            }
            if (res != SPOOL_RETRY) {
                floor_lift(&floors, r->chunk);
            }
            finish(c, r, res, res == SPOOL_REJECT ? reason : NULL);
            started_or_done = 1;
        }
        if (started_or_done && waiting) {
            continue; /* something may start now */
        }
        curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
    }
    /* Stopping: nothing outstanding is lost, it is sent again after a restart. */
    while (active) {
        httpo_req *r = active;
        active = r->next;
        curl_multi_remove_handle(c->multi, r->easy);
        r->retry_after_ms = -1;
        finish(c, r, SPOOL_RETRY, NULL);
    }
    while (waiting) {
        httpo_req *r = waiting;
        waiting = r->next;
        r->retry_after_ms = -1;
        finish(c, r, SPOOL_RETRY, NULL);
    }
    free(floors.items);
    return NULL;
}

int httpo_sender_start(httpo_ctx *c)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->idle, NULL);
    c->lock_init = 1;
    c->multi = curl_multi_init();
    if (!c->multi) {
        return -ENOMEM;
    }
    if (pthread_create(&c->thread, NULL, sender_main, c) != 0) {
        return -EAGAIN;
    }
    c->thread_started = 1;
    return 0;
}

void httpo_sender_submit(httpo_ctx *c, httpo_req *r)
{
    pthread_mutex_lock(&c->lock);
    c->outstanding++;
    list_append(&c->incoming, r);
    pthread_mutex_unlock(&c->lock);
    curl_multi_wakeup(c->multi);
}

void httpo_sender_drain(httpo_ctx *c, int64_t timeout_ms)
{
    if (!c->lock_init) {
        return;
    }
    int64_t until = spool_monotonic_ms() + timeout_ms;
    pthread_mutex_lock(&c->lock);
    while (c->outstanding > 0) {
        int64_t left = until - spool_monotonic_ms();
        if (left <= 0) {
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t step = left > 100 ? 100 : left;
        ts.tv_nsec += (long)(step % 1000) * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&c->idle, &c->lock, &ts);
    }
    pthread_mutex_unlock(&c->lock);
}

void httpo_sender_stop(httpo_ctx *c)
{
    if (c->thread_started) {
        pthread_mutex_lock(&c->lock);
        c->stop = 1;
        pthread_mutex_unlock(&c->lock);
        curl_multi_wakeup(c->multi);
        pthread_join(c->thread, NULL);
        c->thread_started = 0;
    }
    if (c->lock_init) {
        pthread_mutex_lock(&c->lock);
        httpo_req *lists[2] = {c->incoming, c->free_reqs};
        c->incoming = c->free_reqs = NULL;
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < 2; i++) {
            while (lists[i]) {
                httpo_req *r = lists[i];
                lists[i] = r->next;
                httpo_req_free(r);
            }
        }
    }
    if (c->multi) {
        curl_multi_cleanup(c->multi);
        c->multi = NULL;
    }
    if (c->lock_init) {
        pthread_cond_destroy(&c->idle);
        pthread_mutex_destroy(&c->lock);
        c->lock_init = 0;
    }
}
