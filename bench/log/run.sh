#!/bin/sh
# bench/log/run.sh: builds and runs bench_log, prints the figures and appends
# them to bench/RESULTS.md with the machine and date.
# usage: bench/log/run.sh [DIR (on the disk to measure)] [MB per run] [producers] [rounds]
# (producers 0: the writer thread appends alone, no queue hand-off)
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${SPOOL_BUILD:-$SRC/build-bench}
DIR=${1:-$BUILD/bench-log-data}
MB=${2:-256}
PRODUCERS=${3:-4}
ROUNDS=${4:-3}
if [ ! -x "$BUILD/bench/log/bench_log" ]; then
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSPOOL_TESTS=OFF >/dev/null
    cmake --build "$BUILD" --target bench_log -j"$(nproc)" >/dev/null
fi
mkdir -p "$DIR"
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
OUT=$("$BUILD/bench/log/bench_log" "$DIR" "$MB" "$PRODUCERS" "$ROUNDS")
LOAD1=$(cut -d" " -f1-3 /proc/loadavg)
echo "$OUT"
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
FS=$(df -T "$DIR" | awk 'NR == 2 {print $2 " on " $1}')
{
    echo
    echo "### log: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $MEM,"
    echo "Linux $(uname -r), data on $FS; load average $LOAD0 before, $LOAD1 after."
    echo "\`bench/log/run.sh $DIR $MB $PRODUCERS $ROUNDS\`: $PRODUCERS producer threads feed one writer"
    echo "(group commit: when the queue runs dry or every 64 batches of ~64 KiB); dd writes the"
    echo "same bytes in the same directory right after each append run: \`bs=1M conv=fdatasync\`"
    echo "against fsync 1s, \`bs=4M oflag=dsync\` against fsync always. Median of $ROUNDS rounds;"
    echo "append/dd is the median of the per-round ratios (range in brackets)."
    echo
    echo "$OUT"
} >> "$SRC/bench/RESULTS.md"
