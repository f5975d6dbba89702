/*
 * core.h: core-private types shared by the files of agent/: instances,
 * batches, the bounded queue, the plugin registry, the service's parsed
 * configuration and the running service. Plugins never include this.
 */
#ifndef SPOOL_CORE_H
#define SPOOL_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"
#include "config/config.h"
#include "log/log.h"

struct spool_service;

/* ---- logging ---- */

enum spool_log_format { SPOOL_LOGFMT_TEXT = 0, SPOOL_LOGFMT_JSON = 1 };
void spool__log_configure(int level, int format);
/* Logs a core message that the rate limiter never suppresses: lifecycle
 * lines and every error of a refused reload. Any thread. */
void spool__log_unlimited(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- metrics (agent/metrics.c) ---- */

struct spool_counter {
    struct spool_counter *next; /* registry list */
    char *name;                 /* full metric name */
    char *help;
    char *labels; /* preformatted label set */
    int gauge;    /* 1 = gauge */
    _Atomic int64_t value;
};

/* Registers a counter or gauge under a full metric name with labels. */
spool_counter *spool__metric_register(const char *name, const char *help, const char *labels,
                                      int gauge);
/* Unlinks and frees every counter whose labels equal `labels` (instance removal). */
void spool__metric_unregister_labels(const char *labels);

/* ---- bounded queue (agent/queue.c) ---- */

typedef struct spool_queue_item {
    struct spool_queue_item *next;
    size_t weight; /* bytes, as given to push */
} spool_queue_item;

typedef struct spool_queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    spool_queue_item *head, *tail;
    size_t count;     /* items queued */
    size_t bytes;     /* bytes queued (as pushed) */
    size_t max_count; /* items; 0 = no limit */
    size_t max_bytes; /* bytes; an item larger than this still passes alone */
    int closed;       /* push refuses; pop drains then returns NULL */
    spool_queue_item *urgent_head, *urgent_tail; /* urgent lane (unbounded, FIFO) */
    spool_counter *depth;                        /* gauge: items */
    spool_counter *depth_bytes;
} spool_queue;

int spool_queue_init(spool_queue *q, size_t max_count, size_t max_bytes);
void spool_queue_destroy(spool_queue *q);
/* Blocks while full, at most timeout_ms (-1 = forever). 0, -EAGAIN (timed
 * out), -ESHUTDOWN (closed). `bytes` is the item's weight. */
int spool_queue_push(spool_queue *q, spool_queue_item *item, size_t bytes, int64_t timeout_ms);
/* Pops the oldest item, waiting at most timeout_ms. NULL on timeout or when
 * closed and empty. *bytes gets the weight given at push. */
spool_queue_item *spool_queue_pop(spool_queue *q, int64_t timeout_ms, size_t *bytes);
void spool_queue_close(spool_queue *q);
size_t spool_queue_count(spool_queue *q);
/* 1 once the queue is closed and empty (the urgent lane is not counted). */
int spool_queue_drained(spool_queue *q);
/* Urgent lane: never blocks, ignores the bounds and close; a waiting
 * spool_queue_pop returns NULL at once while an urgent item is queued. */
void spool_queue_push_urgent(spool_queue *q, spool_queue_item *item);
/* The oldest urgent item, or NULL at once. */
spool_queue_item *spool_queue_pop_urgent(spool_queue *q);

/* ---- batches (agent/batch.c) ---- */

typedef struct spool__brec {
    uint32_t key_off; /* arena offset */
    int32_t key_len;  /* -1 = no key */
    uint32_t value_off;
    int32_t value_len;  /* -1 = null */
    uint32_t hdr_first; /* index into hdrs: the record's current header run */
    uint32_t hdr_count;
    int64_t timestamp; /* ms */
    int32_t topic;     /* log topic index; -1 = the batch's topic */
    uint32_t flags;    /* SPOOL__BREC_* */
    size_t parent;     /* emitted records: the index of the record that emitted them */
} spool__brec;

#define SPOOL__BREC_DROPPED 1u /* dropped by a processor: gone when process() returns */
#define SPOOL__BREC_EMITTED 2u /* emitted during this process(): placed after parent then */

/* Memory a mutation during process() replaced: kept until the call ends so
 * the pointers a processor got from getters stay valid. */
typedef struct spool__retired {
    void *p;
    size_t bytes;
} spool__retired;

typedef struct spool__bhdr {
    uint32_t key_off, key_len;
    uint32_t value_off;
    int32_t value_len;
} spool__bhdr;

typedef struct spool__bpos {
    char *source; /* namespaced "<input>/<source>" */
    void *pos;    /* NULL = forget */
    size_t len;
} spool__bpos;

typedef struct spool__durable spool__durable;
typedef struct spool__bgroup spool__bgroup;

struct spool_batch {
    spool_queue_item link; /* must stay first */
    spool_instance *ins;   /* the input that made it */
    int topic;             /* log topic index */
    spool__brec *recs;
    size_t count, cap;
    spool__bhdr *hdrs;
    size_t hcount, hcap;
    uint8_t *arena;
    size_t alen, acap; /* bytes */
    size_t bytes;      /* payload bytes (keys, values, headers) */
    spool__bpos *pos;
    size_t npos, pos_cap;
    spool__durable *durable; /* non-NULL for submit_durable */
    spool__bgroup *group;    /* a part of a split batch with positions, or NULL */
    int group_done;          /* this part's records are all appended */
    /* Materialized views for readers (writer, processors). hviews is
     * parallel to hdrs: entries below hviews_n are built, for the arena at
     * hviews_base (a header run is never changed once written). */
    spool_record *views;
    spool_header *hviews;
    size_t views_cap, hviews_cap;
    size_t hviews_n;
    const uint8_t *hviews_base;
    /* During process() (spool__batch_begin/end_process). */
    spool_instance *proc; /* the processor the batch is lent to, or NULL */
    size_t nvisible;      /* records process() sees (those before its emits) */
    int topics_changed;   /* a record has its own topic */
    spool__retired *retired;
    size_t nretired, retired_cap;
    spool__brec *scratch; /* reordering after process() */
    size_t scratch_cap;
    size_t *scratch_idx;
    size_t scratch_idx_cap;
};

/* Builds views of every record (valid until the batch changes). */
int spool__batch_views(spool_batch *b, spool_record **recs);

/* Lends b to processor `proc`: mutations keep replaced memory until end. */
void spool__batch_begin_process(spool_batch *b, spool_instance *proc);
/* Ends the loan: removes dropped records, places emitted ones after the
 * record that emitted them (in emit order), frees retired memory. On
 * -ENOMEM nothing is lost: dropped records stay in the batch and emitted
 * ones stay at its end. */
int spool__batch_end_process(spool_batch *b);
/* Splits b by record topic into per-topic batches, in order of each
 * topic's first record. No record changed topic: *parts = NULL, *n = 1,
 * b goes on as it is. Else b is consumed and *parts (malloc'd, the caller
 * frees the array) holds *n batches sharing b's positions (recorded by the
 * part the writer finishes last, see spool__batch_records_written) and its
 * durable handle (done when every part is). On -ENOMEM b is unchanged. */
int spool__batch_split(spool_batch *b, spool_batch ***parts, size_t *n);
/* The writer calls this once every record of b is appended, before it
 * records b's positions: the last part of a split batch to get there
 * takes the positions of the whole batch. Idempotent. 0 or -ENOMEM (call
 * again later). */
int spool__batch_records_written(spool_batch *b);
/* 1 if b's source can replay its records: it carries positions, or is a
 * part of a split batch that does. */
int spool__batch_replayable(const spool_batch *b);
/* The durable handle waits for one more part before it is done. */
void spool__durable_add_part(spool__durable *d);

/* Durable acknowledgement of a batch, shared by submitter and writer
 * (created with two references). */
spool__durable *spool__durable_new(void);
int spool__durable_wait(spool__durable *d, int64_t timeout_ms);
void spool__durable_done(spool__durable *d, int result);
void spool__durable_release(spool__durable *d);

/* Frees the emptied batches kept for reuse; returns the bytes given back. */
size_t spool__batch_pool_trim(void);

/* ---- the memory account (agent/memory.c, docs/memory.md) ---- */

/* Sets service.memory_limit (bytes, 0 = none); registers the metrics once. */
void spool__mem_init(int64_t limit);
int64_t spool__mem_limit(void);
int64_t spool__mem_reserved(void);
int64_t spool__mem_peak(void); /* highest reserved since start, bytes */
/* Counts bytes held or that must be taken to lose nothing; never fails,
 * may go over the limit. Any thread, lock-free. */
void spool__mem_charge(size_t bytes);
/* Gives back bytes counted before by a charge or a reservation. */
void spool__mem_release(size_t bytes);
/* Moves a holder's count from *charged to now (charge or release the
 * difference) and stores now in *charged. */
void spool__mem_adjust(size_t *charged, size_t now);
/* 1 if bytes more keep the account within percent of its limit. */
int spool__mem_room(size_t bytes, int percent);
/* Admission: 0 if bytes fit within the limit (the batch pool is trimmed
 * first), else -EAGAIN. */
int spool__mem_try_reserve(size_t bytes);
/* Like try_reserve, waiting at most timeout_ms (-1 = forever) for releases.
 * -EAGAIN on timeout, -ENOMEM if bytes exceed the limit itself. */
int spool__mem_reserve(size_t bytes, int64_t timeout_ms);
/* Waits, at most timeout_ms, while the account is over its limit and
 * frees(arg) says something in flight will release memory. 0 or -EAGAIN. */
int spool__mem_wait_room(int64_t timeout_ms, int (*frees)(void *arg), void *arg);

/* ---- instances (agent/instance.c) ---- */

typedef struct spool_input_common {
    char *topic;
    char *key;
} spool_input_common;

typedef struct spool_output_common {
    spool_strlist topics;
    int64_t max_records;
    int64_t max_bytes;
    int64_t linger; /* ms */
    int64_t max_in_flight;
    int64_t max_retry_time;    /* ms, 0 = forever */
    int64_t retry_backoff;     /* ms */
    int64_t retry_backoff_max; /* ms */
    char *dead_letter_topic;
    int values_only; /* not an option: spool_output_values_only() */
} spool_output_common;

extern const spool_option spool__input_common_options[];
extern const spool_option spool__output_common_options[];

struct spool_output_runner;

/*
 * What an output's runner reports about its destination, for the service's
 * health check (spool_service_health). It lives in the output's instance,
 * which the service owns; the runner writes it, any thread reads it.
 */
typedef struct spool_output_report {
    _Atomic int64_t failing_since; /* monotonic ms of the streak's first retry, 0 = delivering */
    pthread_mutex_t lock;          /* guards last_error */
    char last_error[256];          /* the latest retry's reason, "" = none given */
} spool_output_report;

struct spool_instance {
    const spool_plugin *plugin;
    spool_plugin_kind kind;
    char *name;  /* given or "<type>.<index>" */
    char *label; /* "input:tail:app-logs" */
    int index;   /* position in its section (or in its input's chain) */
    char *path;  /* config path for errors ("inputs[0].processors[1]"); NULL = "<section>[index]" */
    void *ctx;   /* context_size bytes, option fields filled */
    struct spool_service *svc;
    /* config positions, valid while the document lives */
    const spool_cdoc *doc;
    const spool_cnode *node;
    spool_errors *errs; /* during check/init */
    int config_errors;  /* reported by spool_config_error */
    /* inputs */
    spool_input_common in;
    int topic;                     /* log topic index */
    spool_template *key_tpl;       /* NULL = none */
    struct spool_instance **chain; /* the entry's own `processors:` (owned by conf->processors) */
    size_t nchain;
    /* processors: the input whose chain this is; NULL = the top-level chain */
    struct spool_instance *chain_owner;
    const struct spool_service_conf *conf; /* the configuration it belongs to */
    /* outputs */
    spool_output_common out;
    struct spool_output_runner *runner;
    char *reject_reason;        /* set by spool_output_set_reject_reason */
    spool_output_report report; /* the runner's health report */
    /* state */
    _Atomic int stopping;
    int initialized; /* init succeeded */
    int started;
    pthread_t thread;
    int thread_running;
    spool_counter *counters[SPOOL_COUNT__MAX];
};

spool_instance *spool__instance_new(const spool_plugin *p, spool_plugin_kind kind, int index,
                                    const char *name);
/* Registers the instance's standard counters. */
int spool__instance_metrics(spool_instance *ins);
/* Frees the context (option values via the tables) and the instance. */
void spool__instance_free(spool_instance *ins);

/* ---- registry (agent/registry.c) ---- */

/* Looks a plugin up by kind and name; NULL if none. */
const spool_plugin *spool_registry_find(spool_plugin_kind kind, const char *name);
/* Calls fn for each registered plugin (built-in and loaded). */
void spool_registry_foreach(void (*fn)(void *arg, const spool_plugin *p, const char *origin),
                            void *arg);
/* Validates and registers one plugin. origin: "built-in" or the .so path.
 * -EEXIST for a duplicate (kind, name); -EINVAL with *why set for a bad one. */
int spool_registry_add(const spool_plugin *p, const char *origin, const char **why);
/* Registers the built-ins once. */
int spool_registry_init(void);
/* Loads every *.so of dir. Errors go to errs with the file's path. */
int spool_registry_load_dir(const char *dir, spool_errors *errs);
/* Loads dir/spool-<name>.so (spool's optional plugins, which load_dir skips)
 * when a config names a type no loaded plugin has. 0 when the plugin is now
 * registered; -ENOENT with errbuf empty when there is no such file and name
 * is not one of spool's packaged plugins; otherwise -errno and the reason in
 * errbuf (for a packaged plugin not installed: which package to install). */
int spool_registry_load_type(const char *dir, spool_plugin_kind kind, const char *name,
                             char *errbuf, size_t cap);
/* Loads one shared object. 0 or -errno with a message in errbuf. */
int spool_registry_load_file(const char *path, char *errbuf, size_t cap);
/* Calls fn for each of spool's optional plugins whose file is in dir and
 * that is not registered yet (`spool plugins`), without loading it. */
void spool_registry_modules(const char *dir,
                            void (*fn)(void *arg, spool_plugin_kind kind, const char *name,
                                       const char *path),
                            void *arg);
/* The ABI checks of an external plugin's struct (version, frozen minimum
 * struct_size, abi_signature): 0, or -EINVAL with the reason in errbuf. */
int spool_registry_check_abi(const spool_plugin *p, char *errbuf, size_t cap);
/* Names of registered plugins of one kind (for did-you-mean); static array. */
size_t spool_registry_names(spool_plugin_kind kind, const char **names, size_t cap);
#define REGISTRY_NAMES_MAX 256
/* Forgets every plugin (tests). Does not dlclose. */
void spool_registry_reset(void);

/* ---- configuration (agent/config_load.c) ---- */

typedef struct spool_service_conf {
    spool_cdoc doc;
    char *data_dir;
    int log_level;
    int log_format;
    char *plugin_dir;
    char *http_listen;
    int64_t memory_limit;     /* bytes over all queues and buffers */
    int64_t shutdown_timeout; /* ms */
    char *hostname;
    spool_topic_conf *topics;
    size_t ntopics;
    spool_instance **inputs;
    size_t ninputs;
    spool_instance **processors;
    size_t nprocessors;
    spool_instance **outputs;
    size_t noutputs;
    struct spool__streams_conf *streams; /* the `streams:` section (streams/runtime.c) */
} spool_service_conf;

/* Loads and validates a configuration (from a file, or the embedded default
 * if path is NULL). Calls each plugin's check(). Returns the number of
 * errors (0 = valid). The conf must be freed with spool_service_conf_free
 * in any case. */
int spool_service_conf_load(const char *path, spool_service_conf *conf, spool_errors *errs);
void spool_service_conf_free(spool_service_conf *conf);
/* The configured outputs as the log's consumers (service.c passes them to
 * spool_plog_open); free with spool_config_consumers_free(*out,
 * conf->noutputs). 0 or -ENOMEM. */
int spool__config_consumers(const spool_service_conf *conf, spool_plog_consumer_conf **out);
void spool_config_consumers_free(spool_plog_consumer_conf *consumers, size_t n);

extern const char spool_default_config[];
extern const size_t spool_default_config_len;

/* ---- the running service (agent/service.c, pipeline.c, writer.c, output.c) ---- */

typedef struct spool_service {
    spool_service_conf *conf;
    spool_plog *log;
    spool_queue in_queue;    /* inputs -> processors */
    spool_queue write_queue; /* processors -> log writer */
    pthread_t processor_thread, writer_thread;
    _Atomic int processor_running, writer_running; /* read by /health and /metrics (any thread) */
    _Atomic int writer_done;                       /* writer drained and committed */
    _Atomic int64_t writer_heartbeat;              /* monotonic ms of the writer's last loop */
    _Atomic int64_t processor_heartbeat;
    _Atomic int writer_blocked; /* 1 while the log refuses appends (disk full...) */
    char writer_error[256];
    _Atomic int stopping;       /* inputs told to stop */
    _Atomic int draining;       /* outputs finishing up to the end offsets */
    int64_t drain_deadline;     /* monotonic ms */
    spool_instance **dl_inputs; /* one dead-letter pseudo input per output */
    /* The one shutdown deadline (monotonic ms; 0 = not stopping): inputs'
     * submits, the writer, the final commit and the outputs all end by it. */
    _Atomic int64_t shutdown_deadline;
    struct spool__wlanes
        *lanes; /* writer lanes, topic gates, lost counts (writer.c, pipeline_int.h) */
    struct spool__streams_rt *streams; /* running streams (streams/runtime.c) */
} spool_service;

/* Shutdown takes at most shutdown_timeout plus this slack (final commit,
 * interrupting blocked flushes, closing files). Documented in README. */
#define SPOOL_SHUTDOWN_SLACK_MS 2000

/* Pipeline stages. */
int spool__pipeline_start(spool_service *svc);
/* Starts the shutdown clock: sets shutdown_deadline (now + shutdown_timeout)
 * and wakes inputs waiting on a blocked topic. Idempotent. */
void spool__pipeline_begin_stop(spool_service *svc);
/* Closes the input queue and waits for the processor and writer to drain
 * everything queued into the log and commit, at most until the shutdown
 * deadline; what could not be written is counted per input and logged in one
 * line (spool_shutdown_lost_records_total). */
void spool__pipeline_finish(spool_service *svc);
/* Frees the lanes (after spool__pipeline_finish). */
void spool__pipeline_free(spool_service *svc);
/*
 * The log writer's direct lane (dead letters): takes ownership of b (its
 * `topic` set), which the writer serves ahead of ingest, appending every
 * record to one partition of b->topic (the first keyed record's, else the
 * sticky one) and committing before it answers 0. -EAGAIN at once, nothing
 * appended, if the topic is full or the disk or memory refuses; -ESHUTDOWN
 * once the writer stopped. Blocks the caller only for the append and commit.
 * A batch with positions or with records of several topics (streams) is
 * written atomically instead: each record to its own topic and its key's
 * partition, then its positions, in one commit (a batch with no records
 * just moves its positions); -EAGAIN if refused, nothing recorded.
 */
int spool__writer_append_direct(spool_service *svc, spool_batch *b);
/* Test hook (fault injection, tests/unit/test_writer.c): while [k] > 0, the
 * writer's next allocating step fails with -ENOMEM and decrements it; k = 0
 * before a batch's records, k = 1 before its positions. */
extern _Atomic int spool__writer_enomem[2];

/* Output runners. */
int spool__output_start(spool_service *svc, spool_instance *ins);
void spool__output_join(spool_service *svc, spool_instance *ins);
/* Frees the runner; call after the plugin's destroy. Accepts none. */
void spool__output_free(spool_instance *ins);

/* ---- streams (streams/runtime.c, docs/streams.md) ---- */

/* Loads and checks the top-level `streams:` section into conf->streams
 * (topics must be loaded). Returns the number of errors added. */
int spool__streams_load(spool_service_conf *conf, const spool_cnode *root, spool_errors *errs);
void spool__streams_free(spool_service_conf *conf);
/* Starts one thread per stream (after the pipeline); 0 or -errno (logged). */
int spool__streams_start(spool_service *svc);
/* Stops and joins them (before the pipeline stops). Idempotent. */
void spool__streams_stop(spool_service *svc);
/* A view's open windows as a JSON array: -ENOENT for no such stream,
 * -ENOTSUP if it is not a view. Any thread. */
int spool__streams_query(spool_service *svc, const char *name, const char *key, int64_t from,
                         int64_t to, spool_buf *out);
/* `spool query`. */
int spool__cli_query(int argc, char **argv);

/* Requests a shutdown of the running service (signal-safe flag). */
void spool__service_request_stop(void);
/* `spool run`: 0 clean, 1 runtime failure, 2 config error. */
int spool_service_run(const char *config_path);

#endif /* SPOOL_CORE_H */
