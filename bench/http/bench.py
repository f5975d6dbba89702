#!/usr/bin/env python3
"""HTTP benchmark: an agent tails a file of fixed-size lines (1 GiB by
default) -> its log -> the `http` output (native format, zstd) -> an
aggregator's `http` input -> the aggregator's log (fsync: always unless
--agg-fsync says otherwise), both processes on this machine over loopback.

Prints and (unless --no-append) appends to bench/RESULTS.md: records/s and
MiB/s end to end (from the agent's start to the last record durable in the
aggregator's log), CPU seconds per million records for each process, and
the peak RSS of each.

With --idempotent both (the default) it runs the http output with
idempotent: false and true alternately (--rounds each, the order swapped
every round) and prints the cost of the exactly-once bookkeeping
(throughput, CPU per million records on each side, peak RSS; means and
medians). Also reported: minor page faults per record of each process
(memory freed and faulted in again per request shows there).
bench/http/idem_bench measures the bookkeeping alone, per request.
The chunk size defaults to the http output's own defaults (max_bytes 1MiB,
max_records 10000).

Usage: bench/http/bench.py [--idempotent true|false|both] [--rounds 3] [--bytes 1GiB] [--line 120] [--build DIR] [--no-append]
       [--max-bytes 1MiB] [--max-records 10000] [--max-in-flight 4] [--partitions 4] [--agg-fsync always]
       [--compression zstd] [--agent-compression none] [--agg-compression none]
       [--agg-memory-limit 64MiB] [--agent-memory-limit 64MiB]
       [--keep] [--dir DIR]
Not a test: nothing is asserted; figures depend on the machine.
"""
import argparse
import datetime
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def parse_size(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[:-len(u)]) * m)
    return int(s)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_file(path, size, line):
    n = size // line
    if os.path.exists(path) and os.path.getsize(path) == n * line:
        return n
    pad = b"x" * (line - 14)
    with open(path, "wb") as f:
        for start in range(0, n, 20000):
            f.write(b"".join(b"%012d " % i + pad + b"\n" for i in range(start, min(n, start + 20000))))
    return n


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minor_faults(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def metric_sum(port, name, label_filter=""):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    total = 0
    for line in text.splitlines():
        if line.startswith(name + "{") and label_filter in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def run_once(args, spool, work, data, n, mib, idem):
    """One agent -> aggregator run; returns its figures."""
    port, agg_api, agent_api = free_port(), free_port(), free_port()
    for d in ("agg-data", "agent-data"):
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    agg_cfg = os.path.join(work, "aggregator.yaml")
    with open(agg_cfg, "w") as f:
        f.write("""
service: {data_dir: %(w)s/agg-data, log_level: warn, http: {listen: "127.0.0.1:%(api)d"}%(ml)s}
topics:
  logs: {partitions: %(parts)d, fsync: %(fsync)s, segment_bytes: 256MiB, compression: %(comp)s}
inputs:
  - {type: http, name: ingest, topic: logs, listen: "127.0.0.1:%(port)d", max_body_bytes: 256MiB}
outputs: []
""" % {"w": work, "api": agg_api, "port": port, "parts": args.partitions,
       "fsync": args.agg_fsync, "comp": args.agg_compression,
       "ml": ", memory_limit: %s" % args.agg_memory_limit if args.agg_memory_limit else ""})
    agent_cfg = os.path.join(work, "agent.yaml")
    with open(agent_cfg, "w") as f:
        f.write("""
service: {data_dir: %(w)s/agent-data, log_level: warn, http: {listen: "127.0.0.1:%(api)d"}%(ml)s}
topics:
  app: {partitions: %(parts)d, fsync: 1s, segment_bytes: 256MiB, compression: %(tcomp)s}
inputs:
  - type: tail
    name: file
    topic: app
    paths: ["%(data)s"]
    read_from: beginning
    read_buffer: 1MiB
outputs:
  - type: http
    name: ship
    topics: [app]
    url: http://127.0.0.1:%(port)d/v1/batches
    format: spool
    compression: %(comp)s
    max_bytes: %(mb)s
    max_records: %(mr)d
    max_in_flight: %(mif)d
    idempotent: %(idem)s
""" % {"idem": idem, "w": work, "api": agent_api, "port": port, "data": data, "mb": args.max_bytes,
       "mif": args.max_in_flight, "mr": args.max_records, "parts": args.partitions, "comp": args.compression,
       "tcomp": args.agent_compression,
       "ml": ", memory_limit: %s" % args.agent_memory_limit if args.agent_memory_limit else ""})

    err_agg = open(os.path.join(work, "aggregator.stderr"), "wb")
    err_agent = open(os.path.join(work, "agent.stderr"), "wb")
    load_start = os.getloadavg()[0]
    agg = subprocess.Popen([spool, "run", "-c", agg_cfg], stderr=err_agg)
    time.sleep(0.5)
    t0 = time.monotonic()
    agent = subprocess.Popen([spool, "run", "-c", agent_cfg], stderr=err_agent)
    agent_done = None
    last_print = t0
    try:
        while True:
            if agg.poll() is not None or agent.poll() is not None:
                raise SystemExit("a spool process exited; see %s" % work)
            got = metric_sum(agg_api, "spool_partition_end_offset", 'topic="logs"')
            if agent_done is None:
                a = metric_sum(agent_api, "spool_partition_end_offset", 'topic="app"')
                if a >= n:
                    agent_done = time.monotonic() - t0
            if got >= n:
                break
            now = time.monotonic()
            if now - last_print > 5:
                print("  %.0fs: %d / %d records in the aggregator's log" % (now - t0, got, n),
                      flush=True)
                last_print = now
            if now - t0 > 3600:
                raise SystemExit("gave up after an hour")
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        cpu_agent, cpu_agg = cpu_seconds(agent.pid), cpu_seconds(agg.pid)
        rss_agent, rss_agg = peak_rss_mib(agent.pid), peak_rss_mib(agg.pid)
        flt_agent, flt_agg = minor_faults(agent.pid), minor_faults(agg.pid)
        wire = metric_sum(agg_api, "spool_http_body_bytes_total")
    finally:
        for p in (agent, agg):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        err_agg.close()
        err_agent.close()

    mrec = n / 1e6
    return {"idempotent": idem,
        "records": n, "mib": mib, "elapsed": elapsed, "rps": n / elapsed, "mibps": mib / elapsed,
        "agent_tail_s": agent_done or float("nan"),
        "cpu_agent": cpu_agent / mrec, "cpu_agg": cpu_agg / mrec,
        "rss_agent": rss_agent, "rss_agg": rss_agg,
        "flt_agent_rec": flt_agent / float(n), "flt_agg_rec": flt_agg / float(n),
        "wire_ratio": (wire / float(n * args.line)) if wire > 0 else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", default="1GiB")
    ap.add_argument("--line", type=int, default=120)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--max-bytes", default="1MiB",
                    help="the http output's max_bytes (chunk size; default: the output's)")
    ap.add_argument("--max-records", type=int, default=10000,
                    help="the http output's max_records (default: the output's)")
    ap.add_argument("--max-in-flight", type=int, default=4, help="the http output's max_in_flight")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of both topics")
    ap.add_argument("--agg-fsync", default="always",
                    help="fsync policy of the aggregator's topic (always, never or a duration)")
    ap.add_argument("--agg-memory-limit", default="",
                    help="the aggregator's service.memory_limit (default: spool's default)")
    ap.add_argument("--agent-memory-limit", default="",
                    help="the agent's service.memory_limit (default: spool's default)")
    ap.add_argument("--agent-compression", default="none", choices=["none", "zstd"],
                    help="compression of the agent's topic on disk")
    ap.add_argument("--agg-compression", default="none", choices=["none", "zstd"],
                    help="compression of the aggregator's topic on disk")
    ap.add_argument("--compression", default="zstd", choices=["auto", "none", "gzip", "zstd"],
                    help="the http output's body compression")
    ap.add_argument("--idempotent", default="both", choices=["true", "false", "both"],
                    help="the http output's idempotent option (producer id, exactly once); "
                         "both: runs off/on alternately --rounds times each and compares")
    ap.add_argument("--rounds", type=int, default=3, help="with --idempotent both")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()

    spool = os.path.join(args.build, "spool")
    work = args.dir or tempfile.mkdtemp(prefix="spool-bench-http-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "input.log")
    size = parse_size(args.bytes)
    print("generating %s of %d-byte lines in %s ..." % (args.bytes, args.line, data), flush=True)
    n = make_file(data, size, args.line)
    mib = n * args.line / float(1 << 20)

    load_start = os.getloadavg()[0]
    modes = ("false", "true") if args.idempotent == "both" else (args.idempotent,)
    rounds = args.rounds if args.idempotent == "both" else 1
    runs = []
    for r in range(rounds):
        # The order alternates (off, on; on, off; ...): a run after another
        # one inherits its dirty page cache and writeback.
        for idem in (modes if r % 2 == 0 else tuple(reversed(modes))):
            res = run_once(args, spool, work, data, n, mib, idem)
            res["round"] = r + 1
            runs.append(res)
            print("  round %d idempotent %s: %.0f records/s (%.1f MiB/s), CPU s/M rec agent "
                  "%.3f, aggregator %.3f; peak RSS agent %.0f, aggregator %.0f MiB; page faults per "
                  "record agent %.3f, aggregator %.3f"
                  % (r + 1, idem, res["rps"], res["mibps"], res["cpu_agent"], res["cpu_agg"],
                     res["rss_agent"], res["rss_agg"], res["flt_agent_rec"], res["flt_agg_rec"]),
                  flush=True)
    load_end = os.getloadavg()[0]

    def stat(idem, k):
        xs = sorted(x[k] for x in runs if x["idempotent"] == idem)
        return sum(xs) / len(xs), xs[len(xs) // 2] if len(xs) % 2 else (
            xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2.0

    def pct(on, off):
        return (on - off) / off * 100 if off else float("nan")
    summary = []
    if args.idempotent == "both":
        for k, what in (("rps", "records/s"), ("mibps", "MiB/s"),
                        ("cpu_agent", "agent CPU s/M rec"),
                        ("cpu_agg", "aggregator CPU s/M rec"),
                        ("rss_agent", "agent peak RSS MiB"),
                        ("rss_agg", "aggregator peak RSS MiB")):
            (off, off_med), (on, on_med) = stat("false", k), stat("true", k)
            summary.append((what, off, on, pct(on, off), off_med, on_med, pct(on_med, off_med)))
            print("%s: idempotent off %.3f, on %.3f (%+.1f%%); medians %.3f, %.3f (%+.1f%%)"
                  % summary[-1])
    print("load average: %.1f at the start, %.1f at the end" % (load_start, load_end))

    if not args.no_append:
        machine = "%d CPUs (%s), load average %.1f at the start, %.1f at the end" % (
            os.cpu_count(), cpu_model(), load_start, load_end)
        if os.environ.get("GLIBC_TUNABLES"):
            machine += ", GLIBC_TUNABLES=%s" % os.environ["GLIBC_TUNABLES"]
        with open(os.path.join(SRC, "bench", "RESULTS.md"), "a") as f:
            f.write("\n### http (agent -> aggregator): %s\n\n" %
                    datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%MZ"))
            f.write("Machine: %s. `bench/http/bench.py --bytes %s --line %d --max-bytes %s "
                    "--max-records %d --max-in-flight %d --partitions %d --agg-fsync %s "
                    "--compression %s --agent-compression %s --agg-compression %s "
                    "--idempotent %s --rounds %d%s`: agent tails one file (read_from: beginning, "
                    "topic fsync 1s) -> `http` output (format spool) -> aggregator `http` "
                    "input -> topic with as many partitions. Timed from the agent's start to "
                    "the last record durable in the aggregator's log.\n\n"
                    % (machine, args.bytes, args.line, args.max_bytes, args.max_records,
                       args.max_in_flight, args.partitions, args.agg_fsync, args.compression,
                       args.agent_compression, args.agg_compression, args.idempotent, rounds,
                       (" --agg-memory-limit " + args.agg_memory_limit
                        if args.agg_memory_limit else "") +
                       (" --agent-memory-limit " + args.agent_memory_limit
                        if args.agent_memory_limit else "")))
            f.write("| round | idempotent | records | seconds | records/s | MiB/s | "
                    "agent CPU s/M rec | aggregator CPU s/M rec | agent peak RSS MiB | "
                    "aggregator peak RSS MiB | agent faults/rec | aggregator faults/rec | "
                    "wire/input bytes |\n" + "|---" * 13 + "|\n")
            for res in runs:
                f.write("| %(round)d | %(idempotent)s | %(records)d | %(elapsed).1f | %(rps).0f | "
                        "%(mibps).1f | %(cpu_agent).3f | %(cpu_agg).3f | %(rss_agent).0f | "
                        "%(rss_agg).0f | %(flt_agent_rec).3f | %(flt_agg_rec).3f | "
                        "%(wire_ratio).3f |\n" % res)
            if summary:
                f.write("\n| | mean off | mean on | on vs off | median off | median on | "
                        "on vs off |\n" + "|---" * 7 + "|\n")
                for row in summary:
                    f.write("| %s | %.3f | %.3f | %+.1f%% | %.3f | %.3f | %+.1f%% |\n" % row)
    if not args.keep and not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
