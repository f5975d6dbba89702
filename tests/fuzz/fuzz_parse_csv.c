/*
 * fuzz_parse_csv.c: libFuzzer target for parse_csv (processors/parse_text.c); the checks
 * are in fuzz_parse_common.h. The first byte picks the separator (',', ';', tab, '|') and
 * how many columns are named (0 to 3), the rest is the record. The round trip writes every
 * field quoted with '"' doubled, which must parse to the same fields.
 */
#include "fuzz_parse_common.h"

static const char *const columns[] = {"a", "b", "c"};

static int parse(const uint8_t *in, size_t n, const void *opt, parse_scratch *sc, fbuf *out,
                 parse_error *err)
{
    return parse_csv(in, n, opt, sc, record_field, out, err);
}

static void encode(const fbuf *fields, const void *opt, fbuf *out)
{
    const parse_csv_options *o = opt;
    size_t at = 0;
    const uint8_t *name;
    const uint8_t *val;
    size_t name_len;
    size_t val_len;
    int first = 1;
    while (next_field(fields, &at, &name, &name_len, &val, &val_len)) {
        if (!first) {
            fb_byte(out, (uint8_t)o->sep);
        }
        first = 0;
        fb_byte(out, '"');
        for (size_t i = 0; i < val_len; i++) {
            if (val[i] == '"') {
                fb_byte(out, '"');
            }
            fb_byte(out, val[i]);
        }
        fb_byte(out, '"');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char seps[] = ",;\t|";
    if (size == 0) {
        return 0;
    }
    parse_csv_options opt = {
        .sep = seps[data[0] & 3], .columns = columns, .n_columns = (size_t)((data[0] >> 2) & 3)};
    check_parser(data + 1, size - 1, parse, encode, &opt);
    return 0;
}
