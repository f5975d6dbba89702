/*
 * queue.c: the bounded queue between pipeline stages.
 *
 * A FIFO of intrusive items bounded by item count and by bytes. A producer
 * blocks while the queue is full (backpressure travels to the stage before);
 * a single item heavier than max_bytes is still accepted when the queue is
 * empty, so nothing can deadlock on size. Closing wakes everyone: pushes
 * fail with -ESHUTDOWN, pops drain what is left and then return NULL.
 *
 * An urgent lane sits beside the FIFO (the log writer's direct lane): urgent
 * items are never bounded, never block, are accepted after close, and are
 * taken only by spool_queue_pop_urgent; a waiting spool_queue_pop returns
 * NULL early when one arrives, so its consumer can serve it first.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "core.h"

static void deadline_from(struct timespec *ts, int64_t timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (timeout_ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int spool_queue_init(spool_queue *q, size_t max_count, size_t max_bytes)
{
    pthread_condattr_t ca;
    memset(q, 0, sizeof(*q));
    q->max_count = max_count;
    q->max_bytes = max_bytes;
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

void spool_queue_destroy(spool_queue *q)
{
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
}

static int queue_full(const spool_queue *q, size_t bytes)
{
    if (q->count == 0) {
        return 0;
    }
    if (q->max_count && q->count >= q->max_count) {
        return 1;
    }
    return q->max_bytes && q->bytes + bytes > q->max_bytes;
}

static void queue_gauges(spool_queue *q)
{
    if (q->depth) {
        spool_gauge_set(q->depth, (int64_t)q->count);
    }
    if (q->depth_bytes) {
        spool_gauge_set(q->depth_bytes, (int64_t)q->bytes);
    }
}

int spool_queue_push(spool_queue *q, spool_queue_item *item, size_t bytes, int64_t timeout_ms)
{
    struct timespec dl;
    int rc = 0;

    if (timeout_ms > 0) {
        deadline_from(&dl, timeout_ms);
    }
    pthread_mutex_lock(&q->lock);
    while (!q->closed && queue_full(q, bytes)) {
        if (timeout_ms == 0) {
            rc = -EAGAIN;
            goto out;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&q->not_full, &q->lock);
        } else if (pthread_cond_timedwait(&q->not_full, &q->lock, &dl) == ETIMEDOUT) {
            if (queue_full(q, bytes) && !q->closed) {
                rc = -EAGAIN;
                goto out;
            }
        }
    }
    if (q->closed) {
        rc = -ESHUTDOWN;
        goto out;
    }
    item->next = NULL;
    item->weight = bytes;
    if (q->tail) {
        q->tail->next = item;
    } else {
        q->head = item;
    }
    q->tail = item;
    q->count++;
    q->bytes += bytes;
    queue_gauges(q);
    pthread_cond_signal(&q->not_empty);
out:
    pthread_mutex_unlock(&q->lock);
    return rc;
}

spool_queue_item *spool_queue_pop(spool_queue *q, int64_t timeout_ms, size_t *bytes)
{
    struct timespec dl;
    spool_queue_item *it = NULL;

    if (timeout_ms > 0) {
        deadline_from(&dl, timeout_ms);
    }
    pthread_mutex_lock(&q->lock);
    while (!q->head && !q->closed) {
        if (timeout_ms == 0 || q->urgent_head) {
            goto out;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&q->not_empty, &q->lock);
        } else if (pthread_cond_timedwait(&q->not_empty, &q->lock, &dl) == ETIMEDOUT) {
            break;
        }
    }
    it = q->head;
    if (it) {
        q->head = it->next;
        if (!q->head) {
            q->tail = NULL;
        }
        q->count--;
        q->bytes -= it->weight;
        if (bytes) {
            *bytes = it->weight;
        }
        queue_gauges(q);
        pthread_cond_broadcast(&q->not_full);
    }
out:
    pthread_mutex_unlock(&q->lock);
    return it;
}

void spool_queue_close(spool_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

size_t spool_queue_count(spool_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->count;
    pthread_mutex_unlock(&q->lock);
    return n;
}

int spool_queue_drained(spool_queue *q)
{
    pthread_mutex_lock(&q->lock);
    int done = q->closed && q->count == 0;
    pthread_mutex_unlock(&q->lock);
    return done;
}

void spool_queue_push_urgent(spool_queue *q, spool_queue_item *item)
{
    pthread_mutex_lock(&q->lock);
    item->next = NULL;
    item->weight = 0;
    if (q->urgent_tail) {
        q->urgent_tail->next = item;
    } else {
        q->urgent_head = item;
    }
    q->urgent_tail = item;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

spool_queue_item *spool_queue_pop_urgent(spool_queue *q)
{
    pthread_mutex_lock(&q->lock);
    spool_queue_item *it = q->urgent_head;
    if (it) {
        q->urgent_head = it->next;
        if (!q->urgent_head) {
            q->urgent_tail = NULL;
        }
        it->next = NULL;
    }
    pthread_mutex_unlock(&q->lock);
    return it;
}
