/*
 * topics_json.c: the running service's topics for /api/v1/topics, in the
 * same shape as `spool topics --json` (agent/cli_log.c builds both).
 */
#include "core.h"
#include "cli_log.h"

int spool_topics_json(spool_buf *out)
{
    spool_service *svc = spool__current;
    if (!svc || !svc->log) {
        return spool_buf_append(out, "{\"topics\":[]}", 13);
    }
    return spool_log_topics_json(svc->log, out);
}
