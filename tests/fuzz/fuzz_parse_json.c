/*
 * fuzz_parse_json.c: libFuzzer target for parse_json (processors/parse_text.c); the
 * checks are in fuzz_parse_common.h. The round trip writes the fields as one flat object
 * of strings ({"http.status":"500"}), which must parse to the same names and values.
 */
#include "fuzz_parse_common.h"

static int parse(const uint8_t *in, size_t n, const void *opt, parse_scratch *sc, fbuf *out,
                 parse_error *err)
{
    (void)opt;
    return parse_json(in, n, sc, record_field, out, err);
}

static void encode(const fbuf *fields, const void *opt, fbuf *out)
{
    (void)opt;
    size_t at = 0;
    const uint8_t *name;
    const uint8_t *val;
    size_t name_len;
    size_t val_len;
    fb_byte(out, '{');
    while (next_field(fields, &at, &name, &name_len, &val, &val_len)) {
        if (out->len > 1) {
            fb_byte(out, ',');
        }
        fb_byte(out, '"');
        put_json_escaped(out, name, name_len);
        fb_put(out, "\":\"", 3);
        put_json_escaped(out, val, val_len);
        fb_byte(out, '"');
    }
    fb_byte(out, '}');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_parser(data, size, parse, encode, NULL);
    return 0;
}
