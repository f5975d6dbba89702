/*
 * fuzz_parse_time.c: libFuzzer target for the timestamps of the parse processor
 * (processors/parse/parse_time.c). The first byte picks a format, the rest is the time
 * text. Checks: the hand-written reader of strptime formats and glibc's strptime(3) (the
 * same compiled format with the fast flag off) agree on success and on the result; the
 * named formats (rfc3339, unix...) return 0 or -EINVAL with a reason.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse/parse_time.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const formats[] = {
    "%d/%b/%Y:%H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S,%f",
    "%Y-%m-%dT%H:%M:%S%z",
    "%b %d %H:%M:%S",
    "%b %e %T %Y",
    "%y%m%d %H%M%S",
    "%F %T.%f %z",
    "%B %d, %Y",
    "rfc3339",
    "unix",
    "unix_ms",
    "unix_ns",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    size_t nf = sizeof(formats) / sizeof(formats[0]);
    parse_time_format f, slow;
    char why[200];
    int64_t a = 0, b = 0;
    const int64_t now = 1700000000000LL;
    if (parse_time_compile(formats[data[0] % nf], &f, why, sizeof(why), NULL) != 0) {
        abort();
    }
    int ra = parse_time(&f, data + 1, size - 1, now, &a, why, sizeof(why));
    if (ra != 0 && (ra != -EINVAL || why[0] == '\0')) {
        abort();
    }
    if (f.kind == PARSE_TIME_STRPTIME && memchr(data + 1, '\0', size - 1) == NULL &&
        size - 1 <= PARSE_TIME_TEXT_MAX) {
        slow = f;
        slow.fast = 0;
        int rb = parse_time(&slow, data + 1, size - 1, now, &b, why, sizeof(why));
        if (ra != rb || (ra == 0 && a != b)) {
            abort();
        }
    }
    return 0;
}
