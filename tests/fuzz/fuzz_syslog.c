/*
 * fuzz_syslog.c: libFuzzer target for the syslog parser
 * (inputs/socket/syslog_parse.c).
 *
 * Parses the input, walks its structured data and unescapes every value,
 * computes the timestamp, and checks that every span lies inside the input
 * and that an unparseable message keeps the input whole. Any violation
 * aborts. Built with clang (-fsanitize=fuzzer); replay.c runs the corpus
 * through the same function in gcc builds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool/spool.h"
#include "syslog_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void in_input(syslog_span s, const uint8_t *data, size_t size)
{
    if (s.p == NULL) {
        return;
    }
    if (s.p < data || s.p + s.n > data + size) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t scratch[1 << 17];
    syslog_msg m;
    int rc = syslog_parse(data, size, &m);
    in_input(m.hostname, data, size);
    in_input(m.appname, data, size);
    in_input(m.procid, data, size);
    in_input(m.msgid, data, size);
    in_input(m.sd, data, size);
    in_input(m.msg, data, size);
    if (rc != 0) {
        if (m.error == NULL || m.msg.p != data || m.format != SYSLOG_FMT_NONE) {
            abort();
        }
        return 0;
    }
    if (m.facility < 0 || m.facility > 23 || m.severity < 0 || m.severity > 7 ||
        spool_syslog_facility_name(m.facility) == NULL ||
        spool_syslog_severity_name(m.severity) == NULL) {
        abort();
    }
    syslog_sd_iter it;
    syslog_span id;
    syslog_span name;
    syslog_span value;
    syslog_sd_begin(&it, m.sd);
    while (syslog_sd_next(&it, &id, &name, &value)) {
        in_input(id, data, size);
        in_input(name, data, size);
        in_input(value, data, size);
        if (value.p != NULL && value.n <= sizeof(scratch)) {
            if (syslog_sd_unescape(value.p, value.n, scratch) > value.n) {
                abort();
            }
        }
    }
    (void)syslog_time_ms(&m, 1795514400000LL);
    return 0;
}
