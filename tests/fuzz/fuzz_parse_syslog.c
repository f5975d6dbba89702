/*
 * fuzz_parse_syslog.c: libFuzzer target for parse_syslog (processors/parse/parse_formats.c);
 * the checks are in fuzz_parse_formats_common.h: every name is one of the documented
 * fields or sd.<ID>.<PARAM>, every value but structured-data parameters (which are
 * unescaped) is bytes of the input, and facility and severity are valid names.
 */
#include "fuzz_parse_formats_common.h"

static const char *const syslog_names[] = {"facility", "severity", "time",    "host", "app",
                                           "procid",   "msgid",    "message", "sd",   NULL};

static int check_field(void *arg, const char *name, size_t name_len, const uint8_t *val,
                       size_t val_len)
{
    const formats_opt *o = arg;
    check_name((const uint8_t *)name, name_len, syslog_names, "sd.");
    if (name_len > 3 && memcmp(name, "sd.", 3) == 0) {
        return 0;
    }
    if (name_len == 8 && (memcmp(name, "facility", 8) == 0 || memcmp(name, "severity", 8) == 0)) {
        char text[32];
        if (val_len == 0 || val_len >= sizeof(text)) {
            abort();
        }
        memcpy(text, val, val_len);
        text[val_len] = '\0';
        int code = name[0] == 'f' ? spool_syslog_facility_from_name(text)
                                  : spool_syslog_severity_from_name(text);
        if (code < 0) {
            abort();
        }
        return 0;
    }
    check_substring(o, val, val_len);
    return 0;
}

static int parse(const uint8_t *in, size_t n, const void *opt, parse_scratch *sc, fbuf *out,
                 parse_error *err)
{
    (void)opt;
    return parse_syslog(in, n, sc, record_field, out, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    formats_opt o = {data, size, 0};
    parse_scratch sc = {0};
    parse_error err;
    int rc = parse_syslog(data, size, &sc, check_field, &o, &err);
    if (rc != 0 && rc != -EINVAL) {
        abort();
    }
    parse_scratch_free(&sc);
    check_parser(data, size, parse, encode_identity, &o);
    return 0;
}
