/*
 * fuzz_parse_kv.c: libFuzzer target for parse_kv (processors/parse_text.c); the checks
 * are in fuzz_parse_common.h. The first byte picks the separators (field: space, ',',
 * ';', '|', tab, '&'; key/value: '=' or ':'), the rest is the line. The round trip writes
 * every field as "key"="value" with '"' and '\' escaped, which must parse to the same
 * fields.
 */
#include "fuzz_parse_common.h"

static int parse(const uint8_t *in, size_t n, const void *opt, parse_scratch *sc, fbuf *out,
                 parse_error *err)
{
    return parse_kv(in, n, opt, sc, record_field, out, err);
}

static void put_quoted(fbuf *out, const uint8_t *p, size_t n)
{
    fb_byte(out, '"');
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            fb_byte(out, '\\');
        }
        fb_byte(out, p[i]);
    }
    fb_byte(out, '"');
}

static void encode(const fbuf *fields, const void *opt, fbuf *out)
{
    const parse_kv_options *o = opt;
    size_t at = 0;
    const uint8_t *name;
    const uint8_t *val;
    size_t name_len;
    size_t val_len;
    while (next_field(fields, &at, &name, &name_len, &val, &val_len)) {
        put_quoted(out, name, name_len);
        fb_byte(out, (uint8_t)o->kv_sep);
        put_quoted(out, val, val_len);
        fb_byte(out, (uint8_t)o->field_sep);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char field_seps[] = " ,;|\t&";
    if (size == 0) {
        return 0;
    }
    parse_kv_options opt = {.field_sep = field_seps[(data[0] & 0x7f) % 6],
                            .kv_sep = data[0] & 0x80 ? ':' : '='};
    check_parser(data + 1, size - 1, parse, encode, &opt);
    return 0;
}
