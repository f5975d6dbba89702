/*
 * http_in_idem.c: idempotent ingest for the `http` input. For each
 * (producer id, source topic, source partition) of a native request it
 * keeps the next source offset the aggregator expects; a request covering
 * [first, next) is a duplicate when next <= stored (acknowledged, nothing
 * appended), an overlap when first < stored < next (only offsets >= stored
 * are taken), a gap when stored < first (the agent's retention dropped the
 * records in between: accepted and counted).
 *
 * Invariants: the stored offset of an entry is what the input's durable
 * position store holds for its key (the worker attaches the new offset to
 * the batch with spool_batch_set_position, so it becomes durable exactly
 * with the records, and only then updates the entry); one request at a time
 * holds a key (busy), others wait on cond up to their deadline, so two
 * copies of a batch can never both be appended; a write whose fate is
 * unknown (queued, not durable within ack_timeout) leaves the entry
 * "pending": later requests for the key read the durable store and answer
 * 503 until it shows the write (or pending_ms passed, then the store is
 * trusted); entries idle for expiry_ms (wall clock) are dropped from memory
 * and their keys removed from the store with a later batch.
 *
 * Everything is under one mutex, held for a hash lookup per request (not
 * per record). Any thread.
 */
#include "http_in_idem.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct httpi_idem_entry {
    httpi_idem_entry *next_e; /* bucket chain */
    int64_t next;             /* next expected offset (durable) */
    int64_t seen_ms;          /* wall ms of the last request */
    int64_t pending;          /* next offset of a write of unknown fate; -1 none */
    int64_t pending_mono;     /* monotonic ms it became pending */
    int busy;                 /* a request holds the key */
    char key[];
};

static int64_t idem_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t idem_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int httpi_idem_init(httpi_idem *t, int64_t expiry_ms, int64_t pending_ms,
                    httpi_idem_durable_fn durable, void *durable_arg)
{
    memset(t, 0, sizeof(*t));
    t->nbuckets = 64;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (!t->buckets) {
        return -ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    t->expiry_ms = expiry_ms;
    t->pending_ms = pending_ms;
    t->durable = durable;
    t->durable_arg = durable_arg;
    return 0;
}

void httpi_idem_destroy(httpi_idem *t)
{
    if (!t->buckets) {
        return;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        httpi_idem_entry *e = t->buckets[i];
        while (e) {
            httpi_idem_entry *n = e->next_e;
            free(e);
            e = n;
        }
    }
    for (size_t i = 0; i < t->nforget; i++) {
        free(t->forget[i]);
    }
    free(t->forget);
    free(t->buckets);
    t->buckets = NULL;
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

int httpi_idem_key(char *buf, size_t cap, const char *producer, const char *topic,
                   int64_t partition)
{
    size_t n = strlen(producer);
    if (n == 0 || n > HTTPI_IDEM_MAX_PRODUCER) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)producer[i];
        if (ch <= ' ' || ch == '/' || ch >= 0x7f) {
            return -EINVAL;
        }
    }
    /* Measured first: a key that does not fit is refused, never cut. */
    const char *t = topic ? topic : "";
    int w = snprintf(NULL, 0, "%s/%s/%" PRId64, producer, t, partition);
    if (w < 0 || (size_t)w >= cap) {
        return -ENAMETOOLONG;
    }
    snprintf(buf, cap, "%s/%s/%" PRId64, producer, t, partition);
    return 0;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

void httpi_idem_pos_encode(uint8_t out[HTTPI_IDEM_POS_LEN], int64_t next, int64_t seen_ms)
{
    put_be64(out, (uint64_t)next);
    put_be64(out + 8, (uint64_t)seen_ms);
}

int httpi_idem_pos_decode(const void *pos, size_t len, int64_t *next, int64_t *seen_ms)
{
    if (len != HTTPI_IDEM_POS_LEN) {
        return -EINVAL;
    }
    *next = (int64_t)get_be64(pos);
    *seen_ms = (int64_t)get_be64((const uint8_t *)pos + 8);
    return *next < 0 ? -EINVAL : 0;
}

static httpi_idem_entry **idem_slot(httpi_idem *t, const char *key)
{
    httpi_idem_entry **pp = &t->buckets[idem_hash(key) & (t->nbuckets - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0) {
        pp = &(*pp)->next_e;
    }
    return pp;
}

static void idem_grow(httpi_idem *t)
{
    size_t nb = t->nbuckets * 2;
    httpi_idem_entry **b = calloc(nb, sizeof(*b));
    if (!b) {
        return; /* longer chains, still correct */
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        httpi_idem_entry *e = t->buckets[i];
        while (e) {
            httpi_idem_entry *n = e->next_e;
            size_t s = idem_hash(e->key) & (nb - 1);
            e->next_e = b[s];
            b[s] = e;
            e = n;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

/* Drops a key from the forget list (it is in use again). */
static void idem_unforget(httpi_idem *t, const char *key)
{
    for (size_t i = 0; i < t->nforget; i++) {
        if (strcmp(t->forget[i], key) == 0) {
            free(t->forget[i]);
            t->forget[i] = t->forget[--t->nforget];
            return;
        }
    }
}

static void idem_queue_forget(httpi_idem *t, const char *key)
{
    if (t->nforget == t->capforget) {
        size_t cap = t->capforget ? t->capforget * 2 : 16;
        char **f = realloc(t->forget, cap * sizeof(*f));
        if (!f) {
            return; /* forgotten at the next start instead */
        }
        t->forget = f;
        t->capforget = cap;
    }
    char *k = strdup(key);
    if (k) {
        t->forget[t->nforget++] = k;
    }
}

static httpi_idem_entry *idem_add(httpi_idem *t, const char *key, int64_t next, int64_t seen_ms)
{
    if (t->count >= t->nbuckets) {
        idem_grow(t);
    }
    size_t kl = strlen(key);
    httpi_idem_entry *e = calloc(1, sizeof(*e) + kl + 1);
    if (!e) {
        return NULL;
    }
    memcpy(e->key, key, kl + 1);
    e->next = next;
    e->seen_ms = seen_ms;
    e->pending = -1;
    httpi_idem_entry **pp = &t->buckets[idem_hash(key) & (t->nbuckets - 1)];
    e->next_e = *pp;
    *pp = e;
    t->count++;
    return e;
}

int httpi_idem_load(httpi_idem *t, const char *key, const void *pos, size_t len, int64_t now_ms)
{
    int64_t next, seen;
    if (httpi_idem_pos_decode(pos, len, &next, &seen) < 0) {
        return -EINVAL;
    }
    pthread_mutex_lock(&t->lock);
    int rc = 0;
    if (now_ms - seen > t->expiry_ms) {
        idem_queue_forget(t, key);
        t->expired++;
    } else {
        httpi_idem_entry **pp = idem_slot(t, key);
        if (*pp) {
            (*pp)->next = next;
            (*pp)->seen_ms = seen;
        } else if (!idem_add(t, key, next, seen)) {
            rc = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* Drops idle entries, at most once a minute. Under the lock. */
static void idem_sweep(httpi_idem *t, int64_t now_ms)
{
    if (now_ms - t->last_sweep_ms < 60000 && t->last_sweep_ms != 0) {
        return;
    }
    t->last_sweep_ms = now_ms;
    for (size_t i = 0; i < t->nbuckets; i++) {
        httpi_idem_entry **pp = &t->buckets[i];
        while (*pp) {
            httpi_idem_entry *e = *pp;
            if (!e->busy && e->pending < 0 && now_ms - e->seen_ms > t->expiry_ms) {
                *pp = e->next_e;
                idem_queue_forget(t, e->key);
                t->count--;
                t->expired++;
                free(e);
            } else {
                pp = &e->next_e;
            }
        }
    }
}

int httpi_idem_begin(httpi_idem *t, const char *key, int64_t first, int64_t next, int64_t now_ms,
                     int64_t deadline_mono, httpi_idem_ticket *tk)
{
    memset(tk, 0, sizeof(*tk));
    pthread_mutex_lock(&t->lock);
    idem_sweep(t, now_ms);
    httpi_idem_entry *e;
    for (;;) {
        e = *idem_slot(t, key);
        if (!e || !e->busy) {
            break;
        }
        struct timespec ts = {deadline_mono / 1000, (deadline_mono % 1000) * 1000000};
        if (idem_mono_ms() >= deadline_mono ||
            pthread_cond_timedwait(&t->cond, &t->lock, &ts) == ETIMEDOUT) {
            e = *idem_slot(t, key);
            if (e && e->busy) {
                pthread_mutex_unlock(&t->lock);
                return -ETIMEDOUT;
            }
        }
    }
    if (!e) {
        e = idem_add(t, key, -1, now_ms);
        if (!e) {
            pthread_mutex_unlock(&t->lock);
            return -ENOMEM;
        }
        idem_unforget(t, key);
    }
    if (e->pending >= 0) {
        /* An earlier write was queued but not known durable: ask the store. */
        int64_t durable = -1;
        if (t->durable && t->durable(t->durable_arg, key, &durable) == 0 && durable > e->next) {
            e->next = durable;
        }
        if (e->next >= e->pending || idem_mono_ms() - e->pending_mono > t->pending_ms) {
            e->pending = -1;
        } else {
            pthread_mutex_unlock(&t->lock);
            return -EAGAIN;
        }
    }
    e->seen_ms = now_ms;
    tk->e = e;
    tk->key = e->key;
    tk->next = next;
    tk->from = first;
    int verdict = HTTPI_IDEM_APPEND;
    if (e->next >= 0 && next <= e->next) {
        verdict = HTTPI_IDEM_DUP;
        t->duplicates++;
    } else if (e->next >= 0 && first < e->next) {
        tk->from = e->next;
        tk->overlap = 1;
        t->overlaps++;
    } else if (e->next >= 0 && first > e->next) {
        tk->gap = 1;
        t->gaps++;
    }
    e->busy = 1;
    pthread_mutex_unlock(&t->lock);
    return verdict;
}

void httpi_idem_end(httpi_idem *t, httpi_idem_ticket *tk, int outcome)
{
    if (!tk->e) {
        return;
    }
    pthread_mutex_lock(&t->lock);
    httpi_idem_entry *e = tk->e;
    if (outcome == HTTPI_IDEM_DURABLE && tk->next > e->next) {
        e->next = tk->next;
    } else if (outcome == HTTPI_IDEM_UNKNOWN) {
        e->pending = tk->next;
        e->pending_mono = idem_mono_ms();
    }
    e->busy = 0;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    tk->e = NULL;
}

size_t httpi_idem_take_forgotten(httpi_idem *t, char **keys, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    while (n < max && t->nforget > 0) {
        keys[n++] = t->forget[--t->nforget];
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}
