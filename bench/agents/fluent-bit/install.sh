#!/bin/sh
# Prints the path of a Fluent Bit binary. Fluent Bit is not packaged in Debian 12,
# and nothing of it is kept in this repository: point this script at a binary you
# built (FLUENT_BIT_BIN) or at a source tree (FLUENT_BIT_SRC, e.g. a checkout of
# github.com/fluent/fluent-bit at v5.1.1), which it builds once under
# $BENCH_CACHE/fluent-bit with Debian's libraries. Progress goes to stderr; only
# the path goes to stdout. Exits 1 (the agent shows as n/a) when neither is given.
set -e
cache=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spool-bench}
if [ -n "$FLUENT_BIT_BIN" ]; then
    echo "$FLUENT_BIT_BIN"
    exit 0
fi
bin="$cache/fluent-bit/build/bin/fluent-bit"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
if [ -z "$FLUENT_BIT_SRC" ] || [ ! -f "$FLUENT_BIT_SRC/CMakeLists.txt" ]; then
    echo "bench: set FLUENT_BIT_BIN to a fluent-bit binary or FLUENT_BIT_SRC to its source tree" >&2
    exit 1
fi
if [ -n "$BENCH_NO_INSTALL" ]; then
    echo "bench: not built and BENCH_NO_INSTALL is set" >&2
    exit 1
fi
missing=""
for p in cmake flex bison libyaml-dev libssl-dev libsqlite3-dev libsystemd-dev pkg-config g++; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2
fi
echo "bench: building Fluent Bit from $FLUENT_BIT_SRC in $cache/fluent-bit/build" >&2
mkdir -p "$cache/fluent-bit/build"
# v5.1.1: the bundled sqlite3.c may be absent from a snapshot (use Debian's); AWS and
# SIGV4 must stay on (it does not compile without them); simdutf does not build with
# Debian 12's gcc 12, so the UTF-16 encoder that needs it is off.
cmake -S "$FLUENT_BIT_SRC" -B "$cache/fluent-bit/build" -DCMAKE_BUILD_TYPE=Release \
    -DFLB_PREFER_SYSTEM_LIB_SQLITE=On -DFLB_AWS=On -DFLB_SIGNV4=On \
    -DFLB_UNICODE_ENCODER=Off -DFLB_USE_SIMDUTF=Off -DFLB_TESTS_RUNTIME=Off \
    -DFLB_TESTS_INTERNAL=Off -DFLB_EXAMPLES=Off -DFLB_SHARED_LIB=Off -DFLB_WASM=Off >&2
cmake --build "$cache/fluent-bit/build" -j"$(nproc)" --target fluent-bit-bin >&2
echo "$bin"
