#!/usr/bin/env python3
"""bench/tail/bench.py: the tail input's benchmark (issue 4).

1. One file of `--bytes` (default 1 GiB) of `--line`-byte lines (default 120,
   newline included), tailed from the beginning into the log (topic fsync 1s,
   1 partition, no outputs). Timed from spool's start until the log's durable
   end offset equals the number of lines (`spool topics --json`, polled every
   100 ms). Reports lines/s, MiB/s, CPU seconds per million lines and peak RSS.
2. `--files` (default 1,000) files each growing slowly (`--rate` lines/s in
   total, spread over all files) for `--seconds`: CPU and RSS of spool.
   Then the same files quiet for `--seconds`: idle CPU.

Results are printed; with --append they are appended to bench/RESULTS.md under
a "tail" heading. Not a test: nothing is asserted.

Usage: bench/tail/bench.py [--bin build/spool] [--bytes 1GiB] [--workdir DIR] [--append]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import benchlib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


def parse_size(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[:-len(u)]) * m)
    return int(s)


def gen_file(path, total, line_len):
    """Writes numbered lines of exactly line_len bytes (newline included)."""
    pad = "x" * line_len
    n = 0
    written = 0
    block = 8192
    with open(path, "wb", buffering=1 << 20) as f:
        while written + line_len <= total:
            k = min(block, (total - written) // line_len)
            parts = []
            for i in range(n, n + k):
                head = "%012d " % i
                parts.append(head + pad[:line_len - len(head) - 1] + "\n")
            data = "".join(parts).encode()
            f.write(data)
            written += len(data)
            n += k
    return n


def config(work, paths, extra=""):
    cfg = os.path.join(work, "spool.yaml")
    with open(cfg, "w") as f:
        f.write("""service: {data_dir: %s/data, log_level: warn}
topics:
  t: {partitions: 1, fsync: 1s, segment_bytes: 256MiB}
inputs:
  - type: tail
    topic: t
    paths: [%s]
    read_from: beginning
%s
outputs: []
""" % (work, ", ".join(paths), extra))
    return cfg


def end_offset(spool, cfg):
    r = subprocess.run([spool, "topics", "-c", cfg, "--json"], capture_output=True, timeout=60)
    if r.returncode != 0:
        return -1
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return -1
    total = 0
    for t in doc.get("topics", []):
        for p in t.get("partitions", []):
            total += p.get("end", 0) - p.get("begin", 0)
    return total


def big_file(spool, work, nbytes, line_len):
    path = os.path.join(work, "big.log")
    benchlib.log("generating %d MiB of %d-byte lines" % (nbytes >> 20, line_len))
    lines = gen_file(path, nbytes, line_len)
    size = os.path.getsize(path)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL)  # into the page cache
    cfg = config(work, [path])
    t0 = time.monotonic()
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=open(cfg + ".stderr", "wb"))
    cpu = hwm = 0
    try:
        while True:
            time.sleep(0.1)
            c = benchlib.proc_cpu(p.pid)
            m = benchlib.proc_hwm(p.pid)
            cpu = c if c is not None else cpu
            hwm = max(hwm, m or 0)
            if end_offset(spool, cfg) >= lines:
                break
            if p.poll() is not None or time.monotonic() - t0 > 600:
                raise SystemExit("spool stopped or timed out: see %s.stderr" % cfg)
        secs = time.monotonic() - t0
        cpu = benchlib.proc_cpu(p.pid) or cpu
        hwm = max(hwm, benchlib.proc_hwm(p.pid) or 0)
    finally:
        p.terminate()
        p.wait(60)
    os.unlink(path)
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
    return {"lines": lines, "mib": size / (1 << 20), "seconds": secs,
            "lines_per_s": lines / secs, "mib_per_s": size / (1 << 20) / secs,
            "cpu_s_per_m": cpu / (lines / 1e6), "peak_rss_mib": hwm / (1 << 20)}


def many_files(spool, work, nfiles, rate, seconds):
    logs = os.path.join(work, "many")
    os.makedirs(logs, exist_ok=True)
    files = [os.path.join(logs, "f%04d.log" % i) for i in range(nfiles)]
    for f in files:
        open(f, "w").close()
    cfg = config(work, [logs + "/*.log"])
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=open(cfg + ".stderr", "wb"))
    try:
        time.sleep(2)
        c0 = benchlib.proc_cpu(p.pid)
        t0 = time.monotonic()
        n = 0
        handles = [open(f, "a", buffering=1) for f in files]
        while time.monotonic() - t0 < seconds:
            for h in handles[:]:
                pass
            target = int((time.monotonic() - t0) * rate)
            while n < target:
                handles[n % nfiles].write("%012d slowly growing line from file %d\n"
                                          % (n, n % nfiles))
                n += 1
            time.sleep(0.01)
        for h in handles:
            h.close()
        busy_cpu = benchlib.proc_cpu(p.pid) - c0
        busy_secs = time.monotonic() - t0
        time.sleep(2)
        c1 = benchlib.proc_cpu(p.pid)
        time.sleep(seconds)
        idle_cpu = benchlib.proc_cpu(p.pid) - c1
        hwm = benchlib.proc_hwm(p.pid)
        got = end_offset(spool, cfg)
    finally:
        p.terminate()
        p.wait(60)
    shutil.rmtree(logs, ignore_errors=True)
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
    return {"files": nfiles, "lines": n, "in_log": got, "seconds": busy_secs,
            "cpu_pct_growing": 100 * busy_cpu / busy_secs, "cpu_pct_idle": 100 * idle_cpu / seconds,
            "peak_rss_mib": hwm / (1 << 20)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("SPOOL_BIN", os.path.join(REPO, "build",
                                                                             "spool")))
    ap.add_argument("--bytes", default="1GiB")
    ap.add_argument("--line", type=int, default=120)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=1000, help="lines/s over all files")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--workdir")
    ap.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="spool-bench-tail-")
    os.makedirs(work, exist_ok=True)
    big = big_file(a.bin, work, parse_size(a.bytes), a.line)
    many = many_files(a.bin, work, a.files, a.rate, a.seconds)
    stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    text = ("\n### tail: %s\n\nMachine: %d CPUs, %s. `bench/tail/bench.py --bytes %s --line %d "
            "--files %d --rate %d --seconds %d`.\n\n"
            "One file tailed from the beginning into the log (1 partition, fsync 1s, no "
            "outputs), timed from spool's start to the last record durable:\n\n"
            "| lines | MiB | seconds | lines/s | MiB/s | CPU s / M lines | peak RSS MiB |\n"
            "|---|---|---|---|---|---|---|\n"
            "| %d | %.0f | %.1f | %.0f | %.1f | %.2f | %.1f |\n\n"
            "%d files growing slowly (%d lines/s in total) for %.0f s, then quiet for %d s:\n\n"
            "| files | lines | in log | CPU %% growing | CPU %% idle | peak RSS MiB |\n"
            "|---|---|---|---|---|---|\n"
            "| %d | %d | %d | %.1f | %.2f | %.1f |\n"
            % (stamp, os.cpu_count(), platform.platform(), a.bytes, a.line, a.files, a.rate,
               a.seconds, big["lines"], big["mib"], big["seconds"], big["lines_per_s"],
               big["mib_per_s"], big["cpu_s_per_m"], big["peak_rss_mib"], a.files, a.rate,
               many["seconds"], a.seconds, many["files"], many["lines"], many["in_log"],
               many["cpu_pct_growing"], many["cpu_pct_idle"], many["peak_rss_mib"]))
    print(text)
    if a.append:
        with open(os.path.join(os.path.dirname(HERE), "RESULTS.md"), "a") as f:
            f.write(text)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
