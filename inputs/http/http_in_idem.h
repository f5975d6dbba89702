/*
 * http_in_idem.h: the `http` input's idempotent ingest bookkeeping
 * (http_in_idem.c): per (producer id, source topic, source partition) the
 * next source offset the aggregator expects. Private to inputs/http/ (and
 * its unit test, tests/unit/test_http_idem.c).
 */
#ifndef SPOOL_HTTP_IN_IDEM_H
#define SPOOL_HTTP_IN_IDEM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPI_IDEM_POS_LEN 16      /* a stored position: next offset, last seen (ms), big-endian */
#define HTTPI_IDEM_MAX_PRODUCER 64 /* bytes of a producer id */

typedef struct httpi_idem_entry httpi_idem_entry;

/* Reads the durable next offset of key (the input's position store).
 * 0, or -ENOENT when none. */
typedef int (*httpi_idem_durable_fn)(void *arg, const char *key, int64_t *next);

typedef struct httpi_idem {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* broadcast when an entry stops being busy */
    httpi_idem_entry **buckets;
    size_t nbuckets, count;
    int64_t expiry_ms;     /* an entry idle this long (wall clock) is forgotten */
    int64_t last_sweep_ms; /* wall ms of the last expiry sweep */
    int64_t pending_ms;    /* an unresolved pending write is given up after this */
    char **forget;         /* expired keys to remove from the store with the next batch */
    size_t nforget, capforget;
    httpi_idem_durable_fn durable;
    void *durable_arg;
    uint64_t duplicates, overlaps, gaps, expired; /* totals (also in /metrics) */
} httpi_idem;

enum httpi_idem_verdict {
    HTTPI_IDEM_APPEND = 0, /* append the records with offset >= ticket.from */
    HTTPI_IDEM_DUP = 1,    /* everything already accepted: acknowledge, append nothing */
};

/* A request's hold on its key, between begin and end. */
typedef struct httpi_idem_ticket {
    httpi_idem_entry *e;
    const char *key; /* the entry's key (valid until end) */
    int64_t from;    /* take records with offset >= from */
    int64_t next;    /* the request's Spool-Next-Offset */
    int gap;         /* 1 if records between the stored offset and first are missing */
    int overlap;     /* 1 if part of the range was accepted before */
} httpi_idem_ticket;

enum httpi_idem_outcome {
    HTTPI_IDEM_DURABLE = 0,  /* the batch (and its position) is durable */
    HTTPI_IDEM_NOT_SENT = 1, /* nothing was queued: the entry is unchanged */
    HTTPI_IDEM_UNKNOWN = 2,  /* queued, not known durable (ack_timeout): pending */
};

/* expiry_ms: producer_expiry; pending_ms: how long a write of unknown fate
 * blocks its key (then the durable store is trusted). 0 or -errno. */
int httpi_idem_init(httpi_idem *t, int64_t expiry_ms, int64_t pending_ms,
                    httpi_idem_durable_fn durable, void *durable_arg);
void httpi_idem_destroy(httpi_idem *t);

/* Key "<producer>/<topic>/<partition>" into buf. -EINVAL if the producer id
 * is empty, too long or holds '/' or control characters; -ENAMETOOLONG. */
int httpi_idem_key(char *buf, size_t cap, const char *producer, const char *topic,
                   int64_t partition);

/* Encodes / decodes a stored position. decode: 0 or -EINVAL. */
void httpi_idem_pos_encode(uint8_t out[HTTPI_IDEM_POS_LEN], int64_t next, int64_t seen_ms);
int httpi_idem_pos_decode(const void *pos, size_t len, int64_t *next, int64_t *seen_ms);

/* Adds an entry read from the position store at start (an expired one is
 * queued to be forgotten instead). 0 or -ENOMEM / -EINVAL. */
int httpi_idem_load(httpi_idem *t, const char *key, const void *pos, size_t len, int64_t now_ms);

/*
 * Starts a request for key covering source offsets [first, next): waits
 * (until the monotonic deadline) while another request holds the key, then
 * decides. Returns HTTPI_IDEM_APPEND or HTTPI_IDEM_DUP with the key held
 * (call end), or without holding it: -ETIMEDOUT (the key stayed busy),
 * -EAGAIN (an earlier write of this key is of unknown fate: retry later),
 * -ENOMEM. now_ms is wall-clock ms (expiry), deadline a monotonic ms.
 */
int httpi_idem_begin(httpi_idem *t, const char *key, int64_t first, int64_t next, int64_t now_ms,
                     int64_t deadline_mono, httpi_idem_ticket *tk);
/* Ends a request (outcome: HTTPI_IDEM_*) and releases the key. */
void httpi_idem_end(httpi_idem *t, httpi_idem_ticket *tk, int outcome);

/* Moves up to max keys that expired into keys[] (the caller frees them and
 * removes them from the store with its batch). Returns how many. */
size_t httpi_idem_take_forgotten(httpi_idem *t, char **keys, size_t max);

#endif /* SPOOL_HTTP_IN_IDEM_H */
