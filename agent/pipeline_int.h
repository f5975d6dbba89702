/*
 * pipeline_int.h: what the pipeline's two files share (core-internal):
 * pipeline.c (submission, processor stage, start and stop) and writer.c (the
 * log writer stage). The lanes are created and freed by pipeline.c; the
 * writer, submit() and spool__writer_append_direct() use them from their own
 * threads under their mutex.
 */
#ifndef SPOOL_PIPELINE_INT_H
#define SPOOL_PIPELINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

typedef struct spool__lost_entry {
    char input[200];
    char type[64];
    int64_t n;
    spool_counter *metric; /* spool_shutdown_lost_records_total{input=...} */
} spool__lost_entry;

typedef struct spool__wlanes spool__wlanes;

struct spool__wlanes {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a topic gate opened, or the shutdown clock started */
    int closed;        /* the writer is gone: direct calls answer -ESHUTDOWN */
    size_t ntopics;
    _Atomic int *blocked;    /* per topic: 1 while its batches are parked (gates submit) */
    spool__lost_entry *lost; /* per input: records accepted but never written */
    size_t nlost, lost_cap;
};

/* The shutdown deadline: monotonic ms, 0 = not stopping. Any thread. */
static inline int64_t spool__deadline_of(spool_service *svc)
{
    return atomic_load(&svc->shutdown_deadline);
}

/* Counts n records of ins, a source that cannot replay them (no positions),
 * that will never reach the log (writer.c). Any thread. */
void spool__lost_add(spool_service *svc, const spool_instance *ins, int64_t n);

/* The log writer stage's thread (writer.c); arg is the spool_service. Runs
 * until the write queue is closed and drained and nothing is parked, then
 * commits (until the shutdown deadline) and sets svc->writer_done. */
void *spool__writer_main(void *arg);

#endif /* SPOOL_PIPELINE_INT_H */
