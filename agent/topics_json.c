/*
 * topics_json.c: the running service's topics for /api/v1/topics, in the
 * same shape as `spool topics --json` (agent/cli_log.c builds both), with
 * the configured outputs, so one that never saved a cursor shows its lag.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "cli_log.h"

int spool_topics_json(spool_service *svc, spool_buf *out)
{
    if (!svc || !svc->log) {
        return spool_buf_append(out, "{\"topics\":[]}", 13);
    }
    size_t n = svc->conf ? svc->conf->noutputs : 0;
    spool_plog_consumer_conf *cons = calloc(n ? n : 1, sizeof(*cons));
    char(*names)[300] = calloc(n ? n : 1, sizeof(*names));
    int rc = -ENOMEM;
    if (cons != NULL && names != NULL) {
        for (size_t i = 0; i < n; i++) {
            const spool_instance *ins = svc->conf->outputs[i];
            snprintf(names[i], sizeof(names[i]), "output.%s", ins->name);
            cons[i].name = names[i];
            cons[i].topics = (const char *const *)ins->out.topics.items;
            cons[i].topic_count = ins->out.topics.count;
        }
        rc = spool_plog_topics_json(svc->log, cons, n, out);
    }
    free(names);
    free(cons);
    return rc;
}
