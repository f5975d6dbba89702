/*
 * cli_log.h: the `spool topics` and `spool read` commands (agent/cli_log.c).
 * Both take the arguments after the command name (argv[0] is the first
 * option, not the program) and return the exit status: 0 ok, 1 runtime
 * error, 2 usage error. They open the log read_only, so they are safe to
 * run while spool is running, and find it through --data-dir DIR or
 * -c FILE (the config `spool run` uses).
 */
#ifndef SPOOL_CLI_LOG_H
#define SPOOL_CLI_LOG_H

#include <stddef.h>

#include "log/log.h"

int spool_cli_topics(int argc, char **argv);
int spool_cli_read(int argc, char **argv);

/* The topics of an open log as JSON (the shape of `spool topics --json`,
 * also served at /api/v1/topics): per partition begin, end, bytes,
 * segments, dropped, and each consumer's lag from its saved cursor; a
 * consumer of `consumers` (the configured outputs, may be NULL) that saved
 * none for a partition of a topic it reads lags by the whole partition.
 * Appends to out. 0 or -ENOMEM. Any thread. */
int spool_plog_topics_json(spool_plog *log, const spool_plog_consumer_conf *consumers,
                           size_t nconsumers, spool_buf *out);

/*
 * Provided by the core (config_load.c): loads config_path and copies its
 * service.data_dir into out (cap bytes); if topics is not NULL, hands over
 * the configured topics (names and the array malloc'd; the caller frees
 * each name, then the array); if consumers is not NULL, the outputs as
 * consumers ("output.<name>" and their topics; free with
 * spool_config_consumers_free). 0 or negative errno (errors printed).
 */
extern int spool_config_data_dir(const char *config_path, char *out, size_t cap,
                                 spool_topic_conf **topics, size_t *ntopics,
                                 spool_plog_consumer_conf **consumers, size_t *nconsumers);
/* Frees what spool_config_data_dir handed over as consumers. Accepts NULL. */
extern void spool_config_consumers_free(spool_plog_consumer_conf *consumers, size_t n);

#endif /* SPOOL_CLI_LOG_H */
