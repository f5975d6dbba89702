#!/bin/sh
# Prints the path of the spool binary to benchmark: $SPOOL_BIN if set, else
# <repo>/build-bench/spool, configured (RelWithDebInfo) and built here if missing.
# Progress goes to stderr; only the path goes to stdout.
set -e
if [ -n "$SPOOL_BIN" ]; then
    echo "$SPOOL_BIN"
    exit 0
fi
repo=$(cd "$(dirname "$0")/../../.." && pwd)
bin="$repo/build-bench/spool"
if [ ! -x "$bin" ]; then
    echo "bench: building spool in $repo/build-bench" >&2
    cmake -S "$repo" -B "$repo/build-bench" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
    cmake --build "$repo/build-bench" -j"$(nproc)" --target spool >&2
fi
echo "$bin"
