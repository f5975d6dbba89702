/*
 * spool.h: the public plugin interface of spool.
 *
 * This is the only header an input, processor or output plugin includes,
 * built in or external. It declares the record model (Kafka's: key, value,
 * headers, timestamp, partition, offset), the plugin struct the core loads,
 * the declarative option table that drives config validation, defaults and
 * `spool plugins`, and the calls a plugin makes back into the core.
 *
 * docs/plugins.md is the guide (lifecycle, threads, ownership, ordering),
 * with three complete examples in examples/plugins/.
 *
 * Conventions: calls return 0 or a negative errno; results go through out
 * parameters. Output callbacks return SPOOL_OK, SPOOL_RETRY, SPOOL_REJECT or
 * SPOOL_PENDING. Every pointer a plugin receives in a callback is valid only
 * for that callback unless its comment says otherwise; every pointer it
 * passes in is only read during the call (the core copies what it keeps).
 * Each prototype's comment names the thread it may be called from: "any
 * thread", or a callback ("from check", "from flush"). The callbacks run on
 * these threads: check, init, start, stop and destroy on spool's main
 * thread; run on a thread of its own per input; process on the one
 * processor thread; flush and drain on the output's runner thread.
 *
 * Topics, in order: output results; records; option tables; instances and
 * config checks; logging; metrics; memory; batches (inputs build them);
 * processors: changing records; positions and submitting (inputs); chunks and
 * completion (outputs); the plugin struct and its ABI; helpers.
 *
 * ABI (docs/plugins.md, "ABI and loading"): an external plugin exports
 * `spool_plugin_register`, a function returning its `const spool_plugin *`.
 * The loader refuses it unless abi_version equals SPOOL_ABI_VERSION,
 * struct_size is at least the size spool_plugin had when ABI 1 was frozen,
 * and abi_signature (the sizes of the structs both sides index, as the
 * plugin was compiled) matches the core's. A plugin built against ABI 1's
 * header, which has no abi_signature, is loaded while those structs keep
 * ABI 1's sizes. Only the functions marked SPOOL_API are exported by the
 * spool binary: they are the whole interface a plugin may call.
 */
#ifndef SPOOL_SPOOL_H
#define SPOOL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPOOL_ABI_VERSION 1
#define SPOOL_PLUGIN_SYMBOL "spool_plugin_register"

#if defined(__GNUC__)
#define SPOOL_PRINTF(a, b) __attribute__((format(printf, a, b)))
/* Marks the core's public API: the binary is built with hidden visibility
 * and exports exactly the functions declared with SPOOL_API. */
#define SPOOL_API __attribute__((visibility("default")))
#else
#define SPOOL_PRINTF(a, b)
#define SPOOL_API
#endif

/* ------------------------------------------------------------------------ */
/* Results of output callbacks.                                             */
/* ------------------------------------------------------------------------ */

enum spool_result {
    SPOOL_OK = 0,      /* the destination accepted the chunk: commit it */
    SPOOL_RETRY = 1,   /* transient failure: the core retries with backoff */
    SPOOL_REJECT = 2,  /* never acceptable: dead-letter topic, then move on */
    SPOOL_PENDING = 3, /* flush only: answer later with spool_output_complete() */
};

/* ------------------------------------------------------------------------ */
/* Records.                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct spool_header {
    const char *key;      /* header name, not NUL-terminated */
    uint32_t key_len;     /* bytes */
    const uint8_t *value; /* header value, may be NULL for a null value */
    int32_t value_len;    /* bytes, -1 for a null value */
} spool_header;

/* A record as plugins see it: a view, it owns none of its bytes. */
typedef struct spool_record {
    const uint8_t *key;          /* NULL for no key */
    int32_t key_len;             /* bytes, -1 for no key */
    const uint8_t *value;        /* the payload, usually the line */
    int32_t value_len;           /* bytes, -1 for a null value */
    const spool_header *headers; /* header_count entries, in order */
    uint32_t header_count;
    int64_t timestamp; /* ms since the Unix epoch; 0 = stamp at append */
    int32_t partition; /* -1 until the log assigns it */
    int64_t offset;    /* -1 until the log assigns it */
} spool_record;

/* Returns the first header named `name` (NUL-terminated) of `r`, or NULL;
 * the result points into r's headers and lives as long as they do. Any
 * thread. */
SPOOL_API const spool_header *spool_record_header(const spool_record *r, const char *name);
/* The header that marks a stream's tick record (docs/streams.md, "Time"):
 * such records advance a stream's event time; outputs never deliver them
 * (the core strips them from chunks) and the http input drops them. */
#define SPOOL_TICK_HEADER "spool.tick"

/*
 * Fields (DESIGN.md, "Processing records"): what conditions, templates and
 * processors read. `key`, `value`, `timestamp` (decimal ms since the epoch)
 * and `topic` name the record's own parts and always win; any other name is
 * the record's first header of that name. A null key or value, or a header
 * with a null value, is missing. Returns 1 and sets *val and *len (pointing
 * into r, into `topic`, or, for `timestamp`, into `scratch`), or 0 when the
 * field is missing. `name` is name_len bytes (need not be NUL-terminated);
 * `topic` may be NULL (then the field is missing). Any thread, no allocation.
 */
#define SPOOL_FIELD_SCRATCH 24
SPOOL_API int spool_record_field(const spool_record *r, const char *topic, const char *name,
                                 size_t name_len, char scratch[SPOOL_FIELD_SCRATCH],
                                 const uint8_t **val, size_t *len);

/* ------------------------------------------------------------------------ */
/* Declarative option tables.                                               */
/* ------------------------------------------------------------------------ */

typedef enum spool_opt_type {
    SPOOL_OPT_STRING,   /* char * (NULL when unset and no default) */
    SPOOL_OPT_INT,      /* int64_t */
    SPOOL_OPT_BOOL,     /* int, 0 or 1 */
    SPOOL_OPT_SIZE,     /* int64_t bytes; "64MiB", "10GB", "4096" */
    SPOOL_OPT_DURATION, /* int64_t milliseconds; "500ms", "7d", "1h30m" */
    SPOOL_OPT_LIST,     /* spool_strlist; a YAML sequence of scalars, or one scalar */
    SPOOL_OPT_MAP,      /* spool_strmap; a YAML mapping of scalar to scalar */
    SPOOL_OPT_ENUM,     /* int: index into enum_values */
    SPOOL_OPT_TABLE,    /* spool_strmaplist; a YAML sequence of mappings of scalar to scalar */
} spool_opt_type;

typedef struct spool_strlist {
    char **items; /* count NUL-terminated strings */
    size_t count;
} spool_strlist;

typedef struct spool_strmap {
    char **keys;   /* count NUL-terminated keys, in file order */
    char **values; /* count NUL-terminated values */
    size_t count;
} spool_strmap;

/* SPOOL_OPT_TABLE: a list of mappings (`rules: [{when: ..., topic: ...}]`).
 * Each item's keys are free (the plugin checks them in check()); errors about
 * an item's value name it as "rules[1].when" (spool_config_error,
 * spool_config_error_at), which points at that value in the file. */
typedef struct spool_strmaplist {
    spool_strmap *items; /* count mappings, in file order */
    size_t count;
} spool_strmaplist;

/*
 * One row of an option table. A dotted name ("multiline.start") is the key
 * `start` inside the mapping `multiline`. Defaults are text parsed by the
 * same parser as the user's file. Tables end with SPOOL_OPT_END. The values
 * the core fills into the context (strings, lists, maps) belong to the
 * instance and are freed by the core after destroy: plugins never free them.
 */
typedef struct spool_option {
    const char *name; /* key in the YAML mapping, dotted for nesting */
    spool_opt_type type;
    const char *def;                /* default as text, NULL for none */
    int required;                   /* 1 if the user must give it */
    size_t offset;                  /* offsetof the field in the plugin context */
    int64_t min, max;               /* bounds for INT/SIZE/DURATION; min > max = none */
    const char *const *enum_values; /* ENUM only: NULL-terminated names */
    const char *desc;               /* one line for `spool plugins` */
} spool_option;

/* Compile-time check that `field` of `T` has type `FT`. */
#define SPOOL__FIELD(T, field, FT) (offsetof(T, field) + 0 * sizeof((FT *)0 == &((T *)0)->field))

#define SPOOL_OPT_STR(n, T, f, d, req, desc)                                                       \
    {                                                                                              \
        n, SPOOL_OPT_STRING, d, req, SPOOL__FIELD(T, f, char *), 1, 0, NULL, desc                  \
    }
#define SPOOL_OPT_INTEGER(n, T, f, d, lo, hi, desc)                                                \
    {                                                                                              \
        n, SPOOL_OPT_INT, d, 0, SPOOL__FIELD(T, f, int64_t), lo, hi, NULL, desc                    \
    }
#define SPOOL_OPT_FLAG(n, T, f, d, desc)                                                           \
    {                                                                                              \
        n, SPOOL_OPT_BOOL, d, 0, SPOOL__FIELD(T, f, int), 1, 0, NULL, desc                         \
    }
#define SPOOL_OPT_BYTES(n, T, f, d, lo, hi, desc)                                                  \
    {                                                                                              \
        n, SPOOL_OPT_SIZE, d, 0, SPOOL__FIELD(T, f, int64_t), lo, hi, NULL, desc                   \
    }
#define SPOOL_OPT_TIME(n, T, f, d, lo, hi, desc)                                                   \
    {                                                                                              \
        n, SPOOL_OPT_DURATION, d, 0, SPOOL__FIELD(T, f, int64_t), lo, hi, NULL, desc               \
    }
#define SPOOL_OPT_STRLIST(n, T, f, req, desc)                                                      \
    {                                                                                              \
        n, SPOOL_OPT_LIST, NULL, req, SPOOL__FIELD(T, f, spool_strlist), 1, 0, NULL, desc          \
    }
#define SPOOL_OPT_STRMAP(n, T, f, desc)                                                            \
    {                                                                                              \
        n, SPOOL_OPT_MAP, NULL, 0, SPOOL__FIELD(T, f, spool_strmap), 1, 0, NULL, desc              \
    }
#define SPOOL_OPT_MAPLIST(n, T, f, req, desc)                                                      \
    {                                                                                              \
        n, SPOOL_OPT_TABLE, NULL, req, SPOOL__FIELD(T, f, spool_strmaplist), 1, 0, NULL, desc      \
    }
#define SPOOL_OPT_CHOICE(n, T, f, d, values, desc)                                                 \
    {                                                                                              \
        n, SPOOL_OPT_ENUM, d, 0, SPOOL__FIELD(T, f, int), 1, 0, values, desc                       \
    }
#define SPOOL_OPT_END                                                                              \
    {                                                                                              \
        NULL, SPOOL_OPT_STRING, NULL, 0, 0, 1, 0, NULL, NULL                                       \
    }

/* Frees every value an option table filled into `ctx` (strings, lists,
 * maps) and clears the fields. The core calls it for each instance after
 * destroy: a plugin needs it only for a context it filled itself. Any
 * thread, for a ctx no other thread uses. */
SPOOL_API void spool_options_free(const spool_option *table, void *ctx);

/* ------------------------------------------------------------------------ */
/* Instances: one configured entry of the inputs/processors/outputs lists.  */
/* The core owns every instance; `ins` stays valid from check to the end of */
/* destroy. Strings returned here belong to the core and live as long.      */
/* ------------------------------------------------------------------------ */

typedef struct spool_instance spool_instance;
typedef struct spool_batch spool_batch;
typedef struct spool_chunk spool_chunk;

/* The instance's name: its `name`, or "<type>.<index>" when none was given.
 * Any thread. */
SPOOL_API const char *spool_instance_name(const spool_instance *ins);
/* The plugin type name ("tail"). Any thread. */
SPOOL_API const char *spool_instance_type(const spool_instance *ins);
/* Inputs: the topic records go to. Any thread. */
SPOOL_API const char *spool_instance_topic(const spool_instance *ins);
/* 1 if the service's configuration has a log topic named `name` (what
 * spool_batch_set_topic will accept), else 0. From check on; any thread. */
SPOOL_API int spool_topic_exists(const spool_instance *ins, const char *name);
/* The service's data directory (absolute path); plugins keep state below
 * it. From init on (not in check: the service is not open then); any
 * thread. */
SPOOL_API const char *spool_instance_data_dir(const spool_instance *ins);
/* This host's name, as the `host` header carries it; lives as long as the
 * process. Any thread. */
SPOOL_API const char *spool_hostname(void);
/* 1 once the core asked the instance to stop; any thread. */
SPOOL_API int spool_instance_stopping(const spool_instance *ins);
/* Wall-clock now in ms since the epoch, and a monotonic clock in ms. Any
 * thread. */
SPOOL_API int64_t spool_now_ms(void);
SPOOL_API int64_t spool_monotonic_ms(void);

/* Asks the whole service for a clean shutdown, as SIGTERM does (for
 * example stdin at end of file). Any thread. */
SPOOL_API void spool_service_shutdown(const char *reason);

/* From check (or init): report a config error about `option` (NULL: the
 * entry itself) of this instance; the core prints it with the option's
 * file:line:column, and `spool check` and `spool run` exit 2. From init it
 * is logged as an error instead. The message is copied. */
SPOOL_API void spool_config_error(spool_instance *ins, const char *option, const char *fmt, ...)
    SPOOL_PRINTF(3, 4);
/*
 * The same, pointing inside the option's value: `column` is the 1-based
 * byte column inside the value's text (a spool_expr_error's column, say; 0
 * = the value's start). `option` may name an item of a list or table
 * ("rules[1].when") or a key of a map option ("fields.env"). Exact for a
 * plain or quoted scalar on one line whose text is the file's text
 * (no escapes, no ${VAR}); otherwise (block scalars `|` and `>`, escapes,
 * multi-line or substituted values) the position is the value's start and
 * the message ends with "(at column N of the value)". From check (or init).
 */
SPOOL_API void spool_config_error_at(spool_instance *ins, const char *option, size_t column,
                                     const char *fmt, ...) SPOOL_PRINTF(4, 5);

/*
 * For check(): find at `spool check` time what init would fail on. Each
 * reports at most one spool_config_error on `option` and returns -EINVAL,
 * or 0 (also when the value is NULL: an unset option). Nothing is resolved
 * or connected to. From check (or init); the strings are only read.
 *  - address: host:port, [IPv6]:port; IPv4/IPv6 literals must be valid, a
 *    name well formed, the port a number in 1-65535 (flags below);
 *  - url: scheme (one of `schemes`, NULL-terminated, without "://") then
 *    an address as above; user@ and a path are allowed;
 *  - file: opens it for reading; directory: exists and is one;
 *  - tls_files: each given file readable and loaded with OpenSSL: the
 *    certificate chain (PEM), the private key (PEM, no passphrase) and that
 *    it matches the certificate, the CA bundle (PEM).
 */
#define SPOOL_ADDR_LISTEN 1        /* empty host = every address; port 0 allowed */
#define SPOOL_ADDR_PORT_OPTIONAL 2 /* the port may be left out (URLs with a default) */
SPOOL_API int spool_check_address(spool_instance *ins, const char *option, const char *text,
                                  int flags);
/* Parses an address by the rules spool_check_address checks (the same
 * code): "host:port", "[IPv6]:port"; with SPOOL_ADDR_LISTEN an empty host
 * or "*" means every address (host ""). host gets the host without
 * brackets (NUL-terminated, host_cap bytes; may be NULL), *port the port
 * (-1 when SPOOL_ADDR_PORT_OPTIONAL and absent; port may be NULL). 0, or
 * -EINVAL with a one-line reason in why. Pure, any thread. */
SPOOL_API int spool_parse_address(const char *text, int flags, char *host, size_t host_cap,
                                  int *port, char *why, size_t why_cap);
/* A URL as spool_parse_url splits it. */
typedef struct spool_url {
    int scheme;       /* index of the URL's scheme in `schemes` */
    char host[256];   /* without brackets, NUL-terminated */
    int port;         /* -1 when absent (SPOOL_ADDR_PORT_OPTIONAL) */
    const char *path; /* into the URL: what follows host[:port] ("/...", "?...", "#..." or "") */
} spool_url;
/* Parses "scheme://[userinfo@]host[:port][path]": the scheme (compared
 * without case) must be one of `schemes` (NULL-terminated, without "://"),
 * host[:port] follows spool_parse_address's rules (flags as there, except
 * SPOOL_ADDR_LISTEN, ignored). out may be NULL. 0, or -EINVAL with a
 * one-line reason in why. spool_check_url reports the same reasons. Pure,
 * any thread. */
SPOOL_API int spool_parse_url(const char *url, const char *const *schemes, int flags,
                              spool_url *out, char *why, size_t why_cap);
SPOOL_API int spool_check_url(spool_instance *ins, const char *option, const char *url,
                              const char *const *schemes, int flags);
/* A mapping option of column: field (the database outputs): at least one
 * entry, no empty field name, no column twice. Reports each fault with
 * spool_config_error. 0 or -EINVAL. */
SPOOL_API int spool_check_column_map(spool_instance *ins, const char *option,
                                     const spool_strmap *map);
SPOOL_API int spool_check_file(spool_instance *ins, const char *option, const char *path);
SPOOL_API int spool_check_directory(spool_instance *ins, const char *option, const char *path);
SPOOL_API int spool_check_tls_files(spool_instance *ins, const char *cert_opt, const char *cert,
                                    const char *key_opt, const char *key, const char *ca_opt,
                                    const char *ca);

/* ------------------------------------------------------------------------ */
/* Logging: "[input:tail:app-logs] message"; rate-limits repeats.           */
/* ------------------------------------------------------------------------ */

enum spool_log_level {
    SPOOL_LOG_ERROR = 0,
    SPOOL_LOG_WARN = 1,
    SPOOL_LOG_INFO = 2,
    SPOOL_LOG_DEBUG = 3,
};

/* One line to spool's log, prefixed with the instance's kind, plugin and
 * name; `ins` may be NULL for core messages. Filtered by service.log_level;
 * the same format from the same instance more than a few times in a short
 * while is suppressed, then summarised. Any thread. */
SPOOL_API void spool_log_write(const spool_instance *ins, int level, const char *fmt, ...)
    SPOOL_PRINTF(3, 4);
SPOOL_API void spool_log_writev(const spool_instance *ins, int level, const char *fmt, va_list ap);
SPOOL_API int spool_log_enabled(int level);

#define spool_log_error(ins, ...)                                                                  \
    do {                                                                                           \
        spool_log_write((ins), SPOOL_LOG_ERROR, __VA_ARGS__);                                      \
    } while (0)
#define spool_log_warn(ins, ...)                                                                   \
    do {                                                                                           \
        spool_log_write((ins), SPOOL_LOG_WARN, __VA_ARGS__);                                       \
    } while (0)
#define spool_log_info(ins, ...)                                                                   \
    do {                                                                                           \
        spool_log_write((ins), SPOOL_LOG_INFO, __VA_ARGS__);                                       \
    } while (0)
#define spool_log_debug(ins, ...)                                                                  \
    do {                                                                                           \
        if (spool_log_enabled(SPOOL_LOG_DEBUG)) {                                                  \
            spool_log_write((ins), SPOOL_LOG_DEBUG, __VA_ARGS__);                                  \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Metrics. The core counts records and bytes in and out itself; plugins    */
/* add what only they know (drops, retries, errors, their own counters).    */
/* ------------------------------------------------------------------------ */

typedef enum spool_counter_kind {
    SPOOL_COUNT_RECORDS_IN,
    SPOOL_COUNT_BYTES_IN,
    SPOOL_COUNT_RECORDS_OUT,
    SPOOL_COUNT_BYTES_OUT,
    SPOOL_COUNT_ERRORS,
    SPOOL_COUNT_RETRIES,
    SPOOL_COUNT_DROPPED,
    SPOOL_COUNT_REJECTED,
    SPOOL_COUNT__MAX
} spool_counter_kind;

/* Adds n to one of the instance's standard counters. Any thread, lock-free. */
SPOOL_API void spool_count(spool_instance *ins, spool_counter_kind kind, uint64_t n);

typedef struct spool_counter spool_counter;
/* A plugin-specific counter, exported as spool_<plugin>_<name>_total.
 * Call from init; the core owns it and frees it with the instance (valid
 * until destroy returns). Returns NULL on ENOMEM. */
SPOOL_API spool_counter *spool_counter_register(spool_instance *ins, const char *name,
                                                const char *help);
/* A plugin-specific gauge (a value that goes up and down, such as open
 * connections), exported as spool_<plugin>_<name>; set it with
 * spool_gauge_set. Call from init; the core owns it. NULL on ENOMEM. */
SPOOL_API spool_counter *spool_gauge_register(spool_instance *ins, const char *name,
                                              const char *help);
/* Adds n to a counter. Any thread, lock-free; c may be NULL (no-op). */
SPOOL_API void spool_counter_add(spool_counter *c, uint64_t n);
/* Sets a gauge (e.g. open files). Any thread, lock-free; c may be NULL. */
SPOOL_API void spool_gauge_set(spool_counter *c, int64_t v);

/* ------------------------------------------------------------------------ */
/* Memory: the service's one byte account.                                  */
/* ------------------------------------------------------------------------ */

/*
 * Memory (service.memory_limit, docs/memory.md): a plugin that holds buffers
 * proportional to the data it moves (request bodies, read buffers) counts
 * them in the service's one byte account. Any thread.
 * spool_memory_reserve admits `bytes` if the account stays within the
 * limit, waiting at most timeout_ms (-1 = forever): 0, -EAGAIN (no room in
 * time: push back, e.g. 503), -ENOMEM (larger than the limit itself).
 * spool_memory_adjust moves what the caller holds from *held to `now` bytes
 * without refusing (memory already taken); spool_memory_release gives back
 * bytes reserved or adjusted before. The core already counts batches and
 * output chunks (with chunk.bytes for the output's copy): count only other
 * buffers. Without a memory_limit every reservation succeeds.
 */
SPOOL_API int spool_memory_reserve(size_t bytes, int64_t timeout_ms);
SPOOL_API void spool_memory_adjust(size_t *held, size_t now);
SPOOL_API void spool_memory_release(size_t bytes);

/* ------------------------------------------------------------------------ */
/* Batches: inputs build them, processors read them. A batch is used by    */
/* one thread at a time; its creator owns it until it is submitted, then    */
/* the core (which lends it to each processor during process).              */
/* ------------------------------------------------------------------------ */

/* A new empty batch for this input, owned by the caller. NULL on ENOMEM.
 * Any thread. */
SPOOL_API spool_batch *spool_batch_create(spool_instance *ins);
/* Frees a batch the caller owns (not submitted, or its submit failed).
 * Accepts NULL. Any thread. */
SPOOL_API void spool_batch_destroy(spool_batch *b);
/* Copies the record's key, value and headers into the batch (r stays the
 * caller's). The record's partition and offset are ignored; timestamp 0
 * means "now". -ENOMEM. Any thread. */
SPOOL_API int spool_batch_append(spool_batch *b, const spool_record *r);
/* Number of records and bytes of payload (keys, values, headers) held. Any
 * thread. In process(): the records the processor was given (dropped ones
 * still count, emitted ones not yet). */
SPOOL_API size_t spool_batch_count(const spool_batch *b);
SPOOL_API size_t spool_batch_bytes(const spool_batch *b);
/* Fills `out` with a view of record i: it points into the batch. In
 * process(): valid until the next change to record i, or the end of
 * process(). Elsewhere: until the batch changes. Costs no more than the
 * headers changed since the last call. Inputs (own batch), processors
 * (from process). */
SPOOL_API void spool_batch_get(const spool_batch *b, size_t i, spool_record *out);

/* ------------------------------------------------------------------------ */
/* Processors: changing records. From process(), on the processor thread,  */
/* for the batch it was lent (i < spool_batch_count). Every byte passed in  */
/* is copied into the batch; pointers from getters (spool_batch_get,        */
/* spool_batch_header, spool_batch_topic) stay valid until the next change */
/* to that record or the end of process(). Results: 0; -EINVAL for an index */
/* out of range or a bad argument; -ENOENT for a dropped record; -ENOMEM.   */
/* ------------------------------------------------------------------------ */

/* Replaces the key of record i with a copy of key (NULL: no key). */
SPOOL_API int spool_batch_set_key(spool_batch *b, size_t i, const void *key, int32_t key_len);
/* Replaces the value of record i with a copy of value (NULL: a null
 * value; value_len is then ignored). */
SPOOL_API int spool_batch_set_value(spool_batch *b, size_t i, const void *value, int32_t value_len);
/* Headers, by name (NUL-terminated, compared bytewise). set replaces the
 * first header of that name (its position kept) or adds one at the end;
 * add appends one even if the name exists; remove removes every header of
 * that name (0 also when there was none). value NULL = a null value. */
SPOOL_API int spool_batch_set_header(spool_batch *b, size_t i, const char *name, const void *value,
                                     int32_t value_len);
SPOOL_API int spool_batch_add_header(spool_batch *b, size_t i, const char *name, const void *value,
                                     int32_t value_len);
SPOOL_API int spool_batch_remove_header(spool_batch *b, size_t i, const char *name);
/* Appends n headers to record i at once, in order, as n calls of
 * spool_batch_add_header would (names need no NUL: key_len bytes), at the
 * cost of one: for processors writing many fields (parse). */
SPOOL_API int spool_batch_add_headers(spool_batch *b, size_t i, const spool_header *h, size_t n);
/* The first header of record i named `name`, or NULL; points into the
 * batch (see above). */
SPOOL_API const spool_header *spool_batch_header(const spool_batch *b, size_t i, const char *name);
/* Sets the timestamp of record i (ms since the epoch; 0 = now). */
SPOOL_API int spool_batch_set_timestamp(spool_batch *b, size_t i, int64_t timestamp_ms);
/* Sends record i to the log topic named `topic` (-ENOENT if the service
 * has no such topic). After the processor chain, a batch whose records go
 * to several topics is split into one batch per topic; records keep their
 * order within each topic, and the input's positions (and a durable
 * submit's answer) are recorded only once all of its records are written. */
SPOOL_API int spool_batch_set_topic(spool_batch *b, size_t i, const char *topic);
/* The name of the topic record i goes to; owned by the core, lives as
 * long as the service's configuration. NULL if i is out of range. */
SPOOL_API const char *spool_batch_topic(const spool_batch *b, size_t i);
/* Drops record i: it is removed when process() returns, and counted in
 * /metrics as spool_processor_dropped_total{processor,reason} (reason
 * copied; NULL = "unspecified"; use a few fixed reasons, not per-record
 * text: after 256 distinct series the rest count as "other"). Later
 * changes to a dropped record return -ENOENT. */
SPOOL_API int spool_batch_drop(spool_batch *b, size_t i, const char *reason);
/* Emits a new record (a copy of r, as spool_batch_append; timestamp 0 =
 * now) placed right after record `after` (and after the records emitted
 * for it before, in order) when process() returns. It inherits nothing
 * from `after` (not its topic, headers or key): copy what it needs. It is
 * not visible (nor counted) during this process(); later processors see
 * it. Emitting after a dropped record is allowed (replace one record by
 * several). */
SPOOL_API int spool_batch_emit(spool_batch *b, size_t after, const spool_record *r);
/* As spool_batch_emit, to the log topic named `topic` (NULL: the input's
 * topic). -ENOENT, and nothing emitted, if the service has no such topic. */
SPOOL_API int spool_batch_emit_to(spool_batch *b, size_t after, const spool_record *r,
                                  const char *topic);

/* ------------------------------------------------------------------------ */
/* Inputs: positions, and submitting batches to the pipeline.               */
/* ------------------------------------------------------------------------ */

/*
 * Attaches a source position to the batch: once the batch is durable in the
 * log, `source` maps to `pos` in the durable position store, atomically with
 * the records (DESIGN.md: a position is trusted only if its data survived).
 * A later set for the same source in the same batch replaces the earlier one.
 * len 0 with pos NULL forgets the source. source and pos are copied;
 * positions are kept per input name. -ENOMEM. Any thread.
 */
SPOOL_API int spool_batch_set_position(spool_batch *b, const char *source, const void *pos,
                                       size_t len);

/* Reads the durable position of `source` for this input into buf (up to cap
 * bytes); *len gets its full length. -ENOENT if none. Any thread. */
SPOOL_API int spool_input_get_position(spool_instance *ins, const char *source, void *buf,
                                       size_t cap, size_t *len);
/* Calls fn for every source this input has a position for, on the calling
 * thread; source and pos are valid during that call only. Any thread. */
SPOOL_API int spool_input_foreach_position(spool_instance *ins,
                                           void (*fn)(void *arg, const char *source,
                                                      const void *pos, size_t len),
                                           void *arg);

/*
 * Hands the batch to the pipeline. On 0 the core owns it. Blocks while the
 * next queue is full, for at most timeout_ms (-1 = until space or stop);
 * then -EAGAIN and the caller keeps the batch (backpressure: stop reading).
 * -ESHUTDOWN once the pipeline stopped; the caller keeps the batch. Any
 * thread (run, or the plugin's own threads).
 */
SPOOL_API int spool_input_submit(spool_instance *ins, spool_batch *b, int64_t timeout_ms);

/*
 * Like spool_input_submit, then waits until the batch is durable in the log
 * under its topic's fsync policy (for acknowledging inputs such as the http
 * ingest). 0 = durable; -EAGAIN = the pipeline was full (nothing queued);
 * -ETIMEDOUT = queued but not yet durable after timeout_ms; -EIO or -ENOSPC
 * if the log failed it. Any thread. Once queued (every result but -EAGAIN,
 * -ESHUTDOWN and -ENOMEM) the core owns the batch; otherwise the caller
 * keeps it.
 */
SPOOL_API int spool_input_submit_durable(spool_instance *ins, spool_batch *b, int64_t timeout_ms);

/* ------------------------------------------------------------------------ */
/* Outputs: the core reads the log at the output's cursor and hands chunks  */
/* of one partition to flush(), on the output's runner thread. A chunk and  */
/* everything it points to belong to the core: valid until flush returns,   */
/* or, if flush returned SPOOL_PENDING, until spool_output_complete is      */
/* called for it. A chunk answered SPOOL_RETRY is flushed again later, the  */
/* same pointer with the same records.                                      */
/* ------------------------------------------------------------------------ */

struct spool_chunk {
    const char *topic; /* the log topic */
    int32_t partition;
    int64_t first_offset;        /* records[0]'s offset, or a left-out tick's */
    int64_t next_offset;         /* the cursor moves here when the chunk is done */
    const spool_record *records; /* count records in offset order, stream ticks left out */
    size_t count;
    size_t bytes; /* sum of key, value and header bytes */
    /* raw: the RecordBatch v2 bytes the records came from, for outputs that
     * forward them as they are; they may begin with records before
     * first_offset. NULL and raw_len 0 when those batches also hold records
     * past next_offset (a chunk cut at max_records). Read them with
     * spool/wire.h's reader. */
    const uint8_t *raw;
    size_t raw_len;
    void *output_data; /* free for the output's use while the chunk lives;
                          NULL at the first flush, kept across retries */
};

/* For an output whose flush returned SPOOL_PENDING: report the outcome
 * (SPOOL_OK, SPOOL_RETRY, SPOOL_REJECT) of `chunk`, the very pointer flush
 * received. `reason` (may be NULL; copied) is kept with a rejected chunk in
 * the dead-letter topic; with SPOOL_RETRY it is shown in /health's reason. The chunk may be reused
 * as soon as this is called: read nothing of it afterwards. Any thread, exactly once per pending
 * flush, never after destroy returned. */
SPOOL_API void spool_output_complete(spool_instance *ins, const spool_chunk *chunk, int result,
                                     const char *reason);

/* The destination refused record i of `chunk` (an index into records) and
 * accepted the others: from flush, or before spool_output_complete of a
 * pending chunk. When the chunk then completes with SPOOL_OK, the core
 * writes exactly the marked records, each with its reason (copied; NULL =
 * a generic one), to the dead-letter topic before the cursor moves (or logs
 * and counts them when no dead_letter_topic is set); any other answer
 * clears the marks. 0, -EINVAL (i out of range) or -ENOMEM (then answer
 * SPOOL_RETRY). Any thread. */
SPOOL_API int spool_output_reject_record(spool_instance *ins, const spool_chunk *chunk, size_t i,
                                         const char *reason);

/* An output's chunk was rejected: sets the reason (copied) the dead-letter
 * record carries. From flush, before it returns SPOOL_REJECT (or before
 * SPOOL_RETRY: the reason /health shows while the destination fails). */
SPOOL_API void spool_output_set_reject_reason(spool_instance *ins, const char *reason);

/* For an output's synchronous flush about to return rc (SPOOL_OK,
 * SPOOL_RETRY or SPOOL_REJECT) for `chunk`: reports it the way spool's
 * outputs do and returns it (any other rc counts as SPOOL_RETRY). Not SPOOL_OK: sets `reason` as
 * the reject reason; SPOOL_REJECT logs a warning naming the chunk's offsets; SPOOL_RETRY logs
 * "<reason>; retrying" only at the first failure of a stretch, and the first SPOOL_OK after one
 * logs "delivering again". *failing (0 at first) is the caller's state of that stretch, kept
 * between flushes. */
SPOOL_API int spool_output_flush_report(spool_instance *ins, const spool_chunk *chunk, int rc,
                                        const char *reason, int *failing);

/* From an output's init: this instance reads only the keys, values,
 * timestamps and offsets of its chunks' records (tcp with format raw), so
 * the core builds no header views when it decodes them: records come
 * with header_count 0 (and a chunk's bytes, the bytes_out counter, count
 * keys and values only). Such an output must never reject records
 * (SPOOL_REJECT, spool_output_reject_record): the dead-letter topic would
 * get them without their headers. */
SPOOL_API void spool_output_values_only(spool_instance *ins);

/* For an output about to return SPOOL_RETRY from flush (or to complete a
 * pending chunk with SPOOL_RETRY): the destination asked for at least ms
 * milliseconds before the next attempt (HTTP Retry-After). The runner
 * waits max(ms, its own backoff) before retrying that chunk. Any thread. */
SPOOL_API void spool_output_retry_after(spool_instance *ins, int64_t ms);

/* ------------------------------------------------------------------------ */
/* Plugins: the struct the core loads, and its ABI.                         */
/* ------------------------------------------------------------------------ */

typedef enum spool_plugin_kind {
    SPOOL_PLUGIN_INPUT = 1,
    SPOOL_PLUGIN_PROCESSOR = 2,
    SPOOL_PLUGIN_OUTPUT = 3,
} spool_plugin_kind;

/*
 * A plugin. The core allocates `context_size` zeroed bytes per instance,
 * fills the fields the option table names, and passes that block as `ctx`
 * to every callback. Values the table filled are freed by the core after
 * destroy; anything else in ctx belongs to the plugin.
 *
 * Lifecycle: check? -> init -> start -> [run | flush | process]* -> stop -> destroy.
 * `spool check` calls only check (never init). If init fails, destroy is
 * still called (so it must accept a half-built context).
 */
typedef struct spool_plugin {
    uint32_t abi_version; /* SPOOL_ABI_VERSION */
    uint32_t struct_size; /* sizeof(spool_plugin) as the plugin was compiled */
    spool_plugin_kind kind;
    const char *name;            /* the `type:` users write */
    const char *description;     /* one line */
    const spool_option *options; /* ends with SPOOL_OPT_END; may be NULL */
    size_t context_size;         /* bytes of the per-instance context */

    /* Semantic checks beyond the table, without side effects; always called
     * before init (and alone by `spool check`). Main thread. Report with
     * spool_config_error. Return 0 or -EINVAL. Optional. */
    int (*check)(spool_instance *ins, void *ctx);
    /* Acquire resources (sockets, files, clients). Main thread; outputs
     * first, then processors, then inputs. 0 or negative errno. */
    int (*init)(spool_instance *ins, void *ctx);
    /* Inputs and outputs: begin work, e.g. start the plugin's threads.
     * Main thread. 0 or negative errno. Optional. */
    int (*start)(spool_instance *ins, void *ctx);
    /* Inputs: if set, the core runs it on a thread of its own after start;
     * it returns when spool_instance_stopping() or on a fatal error
     * (logged; the input ends, the service goes on). */
    int (*run)(spool_instance *ins, void *ctx);
    /* Inputs and outputs: asked to stop: wake run(), tell threads to end.
     * Main thread, possibly while run or flush is running. Must not block
     * long. Optional. */
    void (*stop)(spool_instance *ins, void *ctx);
    /* Release everything init and start made; join the plugin's threads.
     * Main thread, after every other callback, or right after a failed
     * init. Accepts a half-built ctx. Optional. */
    void (*destroy)(spool_instance *ins, void *ctx);

    /* Processors: change records in place, drop none silently. The one
     * processor thread, for every batch of the input whose chain holds the
     * instance (every input's, for the top-level section); the batch is
     * lent for the call. 0 or -errno (counted, logged, the batch goes on). */
    int (*process)(spool_instance *ins, void *ctx, spool_batch *batch);

    /* Outputs: deliver a chunk. The output's runner thread. SPOOL_OK,
     * SPOOL_RETRY, SPOOL_REJECT, or SPOOL_PENDING (then call
     * spool_output_complete later; up to max_in_flight chunks pending). */
    int (*flush)(spool_instance *ins, void *ctx, const spool_chunk *chunk);
    /* Outputs: called on shutdown to finish what is pending within
     * timeout_ms. The output's runner thread. Optional. */
    void (*drain)(spool_instance *ins, void *ctx, int64_t timeout_ms);

    /* Fields after drain are absent from plugins built against ABI 1's
     * header (struct_size tells); the core reads them only when present. */

    /* SPOOL_ABI_SIGNATURE as the plugin was compiled. Required in external
     * plugins built against this header; built-ins may leave it 0. */
    uint64_t abi_signature;
} spool_plugin;

/*
 * The sizes of the structs the core and a plugin both index, packed at the
 * plugin's compile time: 4 bits of format (1), then 12 bits each for
 * spool_record, spool_header, spool_option, spool_chunk and spool_plugin.
 * A plugin whose record, header, option or chunk size differs from the
 * core's is refused, with both sets of sizes in the message.
 */
#define SPOOL__SIG(v, shift) ((uint64_t)((v)&0xfff) << (shift))
#define SPOOL_ABI_SIGNATURE                                                                        \
    (((uint64_t)1 << 60) | SPOOL__SIG(sizeof(spool_record), 48) |                                  \
     SPOOL__SIG(sizeof(spool_header), 36) | SPOOL__SIG(sizeof(spool_option), 24) |                 \
     SPOOL__SIG(sizeof(spool_chunk), 12) | SPOOL__SIG(sizeof(spool_plugin), 0))

/* The three ABI fields of an external plugin's struct, as designated
 * initialisers: `static const spool_plugin p = { SPOOL_PLUGIN_ABI, ... };` */
#define SPOOL_PLUGIN_ABI                                                                           \
    .abi_version = SPOOL_ABI_VERSION, .struct_size = sizeof(spool_plugin),                         \
    .abi_signature = SPOOL_ABI_SIGNATURE

/* External plugins define this function (SPOOL_PLUGIN_SYMBOL): it returns
 * the plugin's struct, which must live as long as the shared object. It is
 * declared here with SPOOL_API so that a plugin compiled with
 * -fvisibility=hidden still exports it. The core calls it once, at load. */
SPOOL_API const spool_plugin *spool_plugin_register(void);
typedef const spool_plugin *(*spool_plugin_register_fn)(void);

/* ------------------------------------------------------------------------ */
/* Conditions (docs/conditions.md): `status >= 500 and path =~ "^/api"`,    */
/* `exists(user)`, `level in ["error", "fatal"]`. Compiled once (check or    */
/* init), evaluated per record without allocating.                          */
/* ------------------------------------------------------------------------ */

#define SPOOL_EXPR_MAX_DEPTH 64 /* nesting of '(' and 'not' a compile accepts */

/* A compiled condition. Compiling, cloning and freeing: any thread. One
 * handle is evaluated by one thread at a time (it owns PCRE2 match data and
 * a per-evaluation field cache); spool_expr_clone gives another thread its
 * own handle on the same compiled program. */
typedef struct spool_expr spool_expr;

/* Why a compile failed. No allocation: the message is truncated to fit. */
typedef struct spool_expr_error {
    size_t column;     /* 1-based byte column inside the expression; 0 = not positional */
    char message[256]; /* one line, no trailing period, e.g. "expected ')'" */
} spool_expr_error;

/* Reads field `name` (name_len bytes, also NUL-terminated) of the record in
 * `ctx`: 1 with *val and *val_len (valid until spool_expr_eval returns), or
 * 0 when missing. Called at most once per field per evaluation. */
typedef int (*spool_expr_field_fn)(void *ctx, const char *name, size_t name_len,
                                   const uint8_t **val, size_t *val_len);
/* Called once per distinct field an expression reads, in order of first
 * appearance; a non-zero return stops the walk. */
typedef int (*spool_expr_fields_fn)(void *arg, const char *name, size_t name_len);

/* Compiles the len bytes at src (need not be NUL-terminated). 0 and *out
 * (free with spool_expr_free); -EINVAL on a syntax or regex error, with
 * *err (may be NULL) filled; -ENOMEM. *out is NULL on failure. Any thread.
 * Report a failure from check() with spool_config_error_at(ins, option,
 * err.column, "%s", err.message). */
SPOOL_API int spool_expr_compile(const char *src, size_t len, spool_expr **out,
                                 spool_expr_error *err);
/* 1 if the condition holds for the record `fn` reads from `ctx`, else 0.
 * Never allocates. A regex match that fails for a reason other than "no
 * match" (match limit, JIT stack) counts as no match and is counted in
 * spool_expr_match_errors. The handle's thread. */
SPOOL_API int spool_expr_eval(const spool_expr *e, spool_expr_field_fn fn, void *ctx);
/* spool_expr_eval over a record's fields (spool_record_field): key, value,
 * timestamp, topic (may be NULL), then headers. The handle's thread. */
SPOOL_API int spool_expr_eval_record(const spool_expr *e, const spool_record *r, const char *topic);
/* Lists the distinct fields e reads: 0, or the callback's first non-zero
 * return. Any thread. */
SPOOL_API int spool_expr_fields(const spool_expr *e, spool_expr_fields_fn cb, void *arg);
/* A second handle on the same compiled program, for another thread: 0 or
 * -ENOMEM. Any thread. */
SPOOL_API int spool_expr_clone(const spool_expr *e, spool_expr **out);
/* Regex matches of this handle that ended in an error (counted as no match). */
SPOOL_API uint64_t spool_expr_match_errors(const spool_expr *e);
/* Frees a handle; the program goes with its last handle. Accepts NULL. */
SPOOL_API void spool_expr_free(spool_expr *e);

/* ------------------------------------------------------------------------ */
/* Helpers plugins share.                                                   */
/* ------------------------------------------------------------------------ */

/* Templates: "{{ host }}-{{ path }}" over a record's fields, as
 * spool_record_field reads them (key, value, timestamp, topic, then
 * headers: `{{ http.status }}`), and, when the record has no field of that
 * name, the extras `input` (the input's name), `host` (this host) and
 * `file` (basename of the `path` header). A missing field renders empty. */
typedef struct spool_template spool_template;
/* Compiles text. NULL on syntax error with *err set to a static message.
 * The caller owns the template. Any thread (usually init). */
SPOOL_API spool_template *spool_template_compile(const char *text, const char **err);
/* Frees a template. Accepts NULL. */
SPOOL_API void spool_template_destroy(spool_template *t);
/* Renders into buf (cap bytes, not NUL-terminated); returns the full
 * length needed, so a return > cap means truncated. `input` and `topic`
 * may be NULL. Any thread; a template may be rendered by several at once. */
SPOOL_API size_t spool_template_render(const spool_template *t, const spool_record *r,
                                       const char *topic, const char *input, char *buf, size_t cap);
/* 1 if the template is plain text with no fields. Any thread. */
SPOOL_API int spool_template_is_literal(const spool_template *t);

/* Growable byte buffer: THE buffer of the core and the plugins. A zeroed
 * struct is empty; capacity doubles, so appends are amortised O(1). One
 * owner at a time (no locking); data belongs to the buffer until
 * spool_buf_free (which leaves it zeroed, ready for reuse). */
typedef struct spool_buf {
    uint8_t *data; /* len used bytes of cap */
    size_t len;    /* bytes */
    size_t cap;    /* bytes */
} spool_buf;

/* Makes room for `extra` more bytes past len. 0 or -ENOMEM (b unchanged). */
SPOOL_API int spool_buf_reserve(spool_buf *b, size_t extra);
/* Appends n bytes of p (copied). 0 or -ENOMEM (b unchanged). */
SPOOL_API int spool_buf_append(spool_buf *b, const void *p, size_t n);
/* Appends printf-formatted text; a NUL byte follows it (not counted in
 * len), so data is a C string when only text was appended. 0, -ENOMEM
 * (len unchanged) or -EINVAL (bad format). */
SPOOL_API int spool_buf_printf(spool_buf *b, const char *fmt, ...) SPOOL_PRINTF(2, 3);
SPOOL_API void spool_buf_free(spool_buf *b);

/* JSON. Strings are escaped one way everywhere: valid UTF-8 passes through,
 * `"`, `\` and control bytes are escaped (\n \r \t \b \f, else \u00XX),
 * and each byte of an invalid, overlong, surrogate or truncated UTF-8
 * sequence becomes \ufffd (U+FFFD), so the output is always valid JSON and
 * valid UTF-8. Pure functions, any thread; out is the caller's. */

/* Writes src escaped (without quotes) into dst. Returns the length needed
 * (at most 6 * len); if that exceeds cap, dst holds a truncated prefix. */
SPOOL_API size_t spool_json_escape(char *dst, size_t cap, const uint8_t *src, size_t len);
/* Appends src as a quoted JSON string. 0 or -ENOMEM (out->len unchanged). */
SPOOL_API int spool_json_append_string(spool_buf *out, const void *src, size_t len);
/* Appends one record as one JSON object, no newline, with the one field
 * order every JSON output uses (docs/protocol.md):
 *   {"key":"k"|null,"value":"v"|null,"headers":{"name":"v"|null,...},
 *    "timestamp":ms,"topic":"t","partition":p,"offset":o}
 * topic NULL leaves "topic" out; partition and offset are r's.
 * 0 or -ENOMEM (out->len unchanged). */
SPOOL_API int spool_json_append_record(spool_buf *out, const spool_record *r, const char *topic);
/* Appends one record as a document of its fields (the `fields` format of
 * the file, tcp and http outputs; docs/processors.md "Output shape"):
 *   {"timestamp":ms,"key":"k","value":"v",<headers>}
 * "key" is left out when the key is null. Headers become members in order
 * of first appearance, dotted names nested (`http.status` -> {"http":
 * {"status":..}}) unless a name is also a leaf or has an empty part (then it
 * stays flat); repeated names become an array; a header named key, value or
 * timestamp is written as "_key", "_value", "_timestamp". With
 * SPOOL_JSON_TYPED, a value that is exactly a JSON number, true, false or
 * null is written bare; every other value is a string. 0 or -ENOMEM
 * (out->len unchanged). Any thread. */
#define SPOOL_JSON_TYPED 1
SPOOL_API int spool_json_append_fields(spool_buf *out, const spool_record *r, int flags);

/* Compression to and from a buffer (the codecs of Kafka's attributes). */
enum spool_compression {
    SPOOL_COMPRESS_NONE = 0,
    SPOOL_COMPRESS_GZIP = 1, /* gzip (RFC 1952) framing of deflate */
    SPOOL_COMPRESS_ZSTD = 4, /* one zstd frame with its content size */
};
/* Appends src compressed with `compression` to out. level: zstd 1-22,
 * gzip 1-9, anything else the codec's default. 0, -EINVAL (unknown codec),
 * -ENOMEM or -EIO; out->len unchanged on error. Any thread. */
SPOOL_API int spool_compress(spool_buf *out, int compression, int level, const void *src,
                             size_t len);
/* Appends src decompressed to out, refusing to produce more than limit
 * bytes (a decompression bomb). gzip also takes zlib framing; NONE copies.
 * 0, -EFBIG (over limit), -EBADMSG (corrupt or truncated), -EINVAL
 * (unknown codec), -ENOMEM; out->len unchanged on error. Any thread
 * (a zstd context is kept per thread). */
SPOOL_API int spool_decompress(spool_buf *out, int compression, const void *src, size_t len,
                               size_t limit);

/* Syslog names (RFC 5424), shared by the syslog input and output. Pure,
 * any thread; the strings are static. */
/* "kern", "user", ... "local7"; NULL outside 0..23. */
SPOOL_API const char *spool_syslog_facility_name(int facility);
/* "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug";
 * NULL outside 0..7. */
SPOOL_API const char *spool_syslog_severity_name(int severity);
/* Reverse of the two above, case-insensitive; also a decimal number in
 * range, and "warn" / "error" for severities. -1 if unknown. */
SPOOL_API int spool_syslog_facility_from_name(const char *s);
SPOOL_API int spool_syslog_severity_from_name(const char *s);

/* mkdir -p: creates path and its missing parents with mode (less the
 * umask). 0 when path is a directory at the end (also when it was there),
 * -ENOTDIR if it is something else, -ENAMETOOLONG (4095 bytes at most),
 * -EINVAL (empty), or mkdir's -errno. Any thread. */
SPOOL_API int spool_mkdirs(const char *path, unsigned mode);

/* Big-endian (network order) integers at any alignment: get reads 2/4/8
 * bytes at src, put writes v to dst. Pure, any thread. */
SPOOL_API uint16_t spool_get_be16(const void *src);
SPOOL_API uint32_t spool_get_be32(const void *src);
SPOOL_API uint64_t spool_get_be64(const void *src);
SPOOL_API void spool_put_be16(void *dst, uint16_t v);
SPOOL_API void spool_put_be32(void *dst, uint32_t v);
SPOOL_API void spool_put_be64(void *dst, uint64_t v);

#ifdef __cplusplus
}
#endif

#endif /* SPOOL_SPOOL_H */
