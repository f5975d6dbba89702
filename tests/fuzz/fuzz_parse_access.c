/*
 * fuzz_parse_access.c: libFuzzer target for parse_access (processors/parse/
 * parse_formats.c). The first byte picks the format (Apache common, Apache combined,
 * nginx combined), the rest is the line. Checks (fuzz_parse_formats_common.h): every name
 * is a documented field, every value is bytes of the input, a status is 3 digits.
 */
#include "fuzz_parse_formats_common.h"

static const char *const access_names[] = {"client",  "ident", "user",     "time",   "request",
                                           "method",  "path",  "protocol", "status", "size",
                                           "referer", "agent", NULL};

static int check_field(void *arg, const char *name, size_t name_len, const uint8_t *val,
                       size_t val_len)
{
    const formats_opt *o = arg;
    check_name((const uint8_t *)name, name_len, access_names, NULL);
    check_substring(o, val, val_len);
    if (name_len == 6 && memcmp(name, "status", 6) == 0) {
        if (val_len != 3 || val[0] < '0' || val[0] > '9' || val[1] < '0' || val[1] > '9' ||
            val[2] < '0' || val[2] > '9') {
            abort();
        }
    }
    if (name_len == 5 && memcmp(name, "ident", 5) == 0 && o->kind == PARSE_ACCESS_NGINX) {
        abort();
    }
    return 0;
}

static int parse(const uint8_t *in, size_t n, const void *opt, parse_scratch *sc, fbuf *out,
                 parse_error *err)
{
    (void)sc;
    const formats_opt *o = opt;
    return parse_access(in, n, (parse_access_kind)o->kind, record_field, out, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    formats_opt o = {data + 1, size - 1, data[0] % 3};
    parse_error err;
    int rc = parse_access(o.in, o.n, (parse_access_kind)o.kind, check_field, &o, &err);
    if (rc != 0 && rc != -EINVAL) {
        abort();
    }
    check_parser(o.in, o.n, parse, encode_identity, &o);
    return 0;
}
