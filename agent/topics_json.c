/*
 * topics_json.c: the running service's topics as JSON, for /api/v1/topics:
 * per topic and partition the beginning and end offsets, bytes, segments,
 * drops, and each subscribed output's cursor and lag.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

static int appendf(spool_buf *out, const char *fmt, ...) SPOOL_PRINTF(2, 3);

static int appendf(spool_buf *out, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    return spool_buf_append(out, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static int append_str(spool_buf *out, const char *s)
{
    char esc[1024];
    size_t n = spool_json_escape(esc, sizeof(esc), (const uint8_t *)s, strlen(s));
    if (n > sizeof(esc)) {
        n = sizeof(esc);
    }
    int rc = spool_buf_append(out, "\"", 1);
    rc |= spool_buf_append(out, esc, n);
    rc |= spool_buf_append(out, "\"", 1);
    return rc ? -ENOMEM : 0;
}

int spool_topics_json(spool_buf *out)
{
    spool_service *svc = spool__current;
    int rc = 0;
    if (!svc || !svc->log) {
        return spool_buf_append(out, "{\"topics\":[]}", 13);
    }
    rc |= appendf(out, "{\"topics\":[");
    size_t nt = spool_log_topic_count(svc->log);
    for (size_t t = 0; t < nt; t++) {
        const spool_topic_conf *tc = spool_log_topic_conf(svc->log, (int)t);
        rc |= appendf(out, "%s{\"name\":", t ? "," : "");
        rc |= append_str(out, tc->name);
        rc |= appendf(out, ",\"partitions\":[");
        for (int32_t p = 0; p < tc->partitions; p++) {
            spool_partition_info pi = {0};
            spool_log_partition_info(svc->log, (int)t, p, &pi);
            rc |= appendf(out, "%s{\"partition\":%d,\"begin_offset\":%lld,\"end_offset\":%lld,"
                          "\"bytes\":%lld,\"segments\":%d,\"dropped\":%lld,\"outputs\":[",
                          p ? "," : "", p, (long long)pi.begin_offset, (long long)pi.end_offset,
                          (long long)pi.bytes, pi.segments, (long long)pi.dropped);
            int first = 1;
            for (size_t o = 0; o < svc->conf->noutputs; o++) {
                spool_instance *ins = svc->conf->outputs[o];
                int sub = 0;
                for (size_t k = 0; k < ins->out.topics.count; k++) {
                    sub |= strcmp(ins->out.topics.items[k], tc->name) == 0;
                }
                if (!sub) {
                    continue;
                }
                char consumer[300];
                snprintf(consumer, sizeof(consumer), "output.%s", ins->name);
                int64_t cur = spool_log_cursor_get(svc->log, consumer, (int)t, p);
                rc |= appendf(out, "%s{\"name\":", first ? "" : ",");
                rc |= append_str(out, ins->name);
                rc |= appendf(out, ",\"cursor\":%lld,\"lag\":%lld}", (long long)cur,
                              (long long)(pi.end_offset - cur));
                first = 0;
            }
            rc |= appendf(out, "]}");
        }
        rc |= appendf(out, "]}");
    }
    rc |= appendf(out, "]}");
    return rc ? -ENOMEM : 0;
}
