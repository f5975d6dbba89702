#!/usr/bin/env python3
"""bench/tail/bench.py: the tail input's benchmark (issue 4).

1. One file of `--bytes` (default 1 GiB) of `--line`-byte lines (default 120,
   newline included), tailed from the beginning into the log (topic fsync 1s,
   1 partition, no outputs). Timed from spool's start until the log's durable
   end offset equals the number of lines (`spool topics --json`, polled every
   100 ms). Reports lines/s, MiB/s, CPU seconds per million lines and peak RSS.
2. `--files` (default 10,000) files in one directory, `--busy` (default 10) of
   them appended at `--rate` lines/s in total (the others stay as they are).
   CPU is measured over a fixed window of `--seconds` once start-up is over
   (spool's CPU over the last second below 5% of one CPU, at most 60 s),
   then over the same window with every file quiet (idle CPU); peak RSS of
   the whole run. Every line written must be in the log at the end.

Each part runs `--rounds` times (default 3); tables show the median of each
figure (and the range of the headline one). Load average is recorded before
and after.

Results are printed; with --append they are appended to bench/RESULTS.md under
a "tail" heading. Not a test: nothing is asserted.

Usage: bench/tail/bench.py [--bin build/spool] [--bytes 1GiB] [--files 10000] [--busy 10]
                           [--rounds 3] [--workdir DIR] [--append]
"""
import argparse
import json
import os
import platform
import shutil
import statistics
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


def big_file(spool, work, path, lines):
    size = os.path.getsize(path)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL)  # into the page cache
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
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
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
    return {"lines": lines, "mib": size / (1 << 20), "seconds": secs,
            "lines_per_s": lines / secs, "mib_per_s": size / (1 << 20) / secs,
            "cpu_s_per_m": cpu / (lines / 1e6), "peak_rss_mib": hwm / (1 << 20)}


def settle(pid, limit_s=60, below=0.05):
    """Waits until pid's CPU over one second is below `below` of one CPU
    (start-up over), at most limit_s seconds. Returns the seconds waited."""
    t0 = time.monotonic()
    c = benchlib.proc_cpu(pid)
    while time.monotonic() - t0 < limit_s:
        time.sleep(1)
        c2 = benchlib.proc_cpu(pid)
        if c is None or c2 is None:
            break
        if c2 - c < below:
            break
        c = c2
    return time.monotonic() - t0


def many_files(spool, work, nfiles, busy, rate, seconds):
    logs = os.path.join(work, "many")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)
    files = [os.path.join(logs, "f%05d.log" % i) for i in range(nfiles)]
    for f in files:
        with open(f, "w") as h:
            h.write("%s: a line written before spool started\n" % os.path.basename(f))
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
    cfg = config(work, [logs + "/*.log"])
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=open(cfg + ".stderr", "wb"))
    try:
        startup = settle(p.pid)
        c0 = benchlib.proc_cpu(p.pid)
        t0 = time.monotonic()
        n = 0
        step = max(1, nfiles // busy)
        handles = [open(files[i * step], "a", buffering=1) for i in range(busy)]
        while time.monotonic() - t0 < seconds:
            target = int((time.monotonic() - t0) * rate)
            while n < target:
                handles[n % busy].write("%012d slowly growing line from busy file %d\n"
                                        % (n, n % busy))
                n += 1
            time.sleep(0.01)
        busy_secs = time.monotonic() - t0
        busy_cpu = benchlib.proc_cpu(p.pid) - c0
        for h in handles:
            h.close()
        want = nfiles + n
        deadline = time.monotonic() + 60
        got = end_offset(spool, cfg)
        while got < want and time.monotonic() < deadline:
            time.sleep(0.2)
            got = end_offset(spool, cfg)
        settle(p.pid, 10)
        c1 = benchlib.proc_cpu(p.pid)
        t1 = time.monotonic()
        time.sleep(seconds)
        idle_cpu = benchlib.proc_cpu(p.pid) - c1
        idle_secs = time.monotonic() - t1
        hwm = benchlib.proc_hwm(p.pid)
    finally:
        p.terminate()
        p.wait(60)
    shutil.rmtree(logs, ignore_errors=True)
    shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
    return {"files": nfiles, "lines": want, "in_log": got, "startup_s": startup,
            "seconds": busy_secs, "cpu_pct_growing": 100 * busy_cpu / busy_secs,
            "cpu_pct_idle": 100 * idle_cpu / idle_secs, "peak_rss_mib": hwm / (1 << 20)}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("SPOOL_BIN", os.path.join(REPO, "build",
                                                                             "spool")))
    ap.add_argument("--bytes", default="1GiB")
    ap.add_argument("--line", type=int, default=120)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--busy", type=int, default=10, help="files of --files that grow")
    ap.add_argument("--rate", type=int, default=1000, help="lines/s over the busy files")
    ap.add_argument("--seconds", type=int, default=20, help="measuring window")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-many", action="store_true")
    ap.add_argument("--workdir")
    ap.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="spool-bench-tail-")
    os.makedirs(work, exist_ok=True)
    load0 = loadavg()
    bigs, manys = [], []
    if not a.skip_big:
        path = os.path.join(work, "big.log")
        benchlib.log("generating %s of %d-byte lines" % (a.bytes, a.line))
        lines = gen_file(path, parse_size(a.bytes), a.line)
        for i in range(a.rounds):
            bigs.append(big_file(a.bin, work, path, lines))
            benchlib.log("big file round %d: %.1f MiB/s, %.2f CPU s/M lines, %.1f MiB RSS"
                         % (i + 1, bigs[-1]["mib_per_s"], bigs[-1]["cpu_s_per_m"],
                            bigs[-1]["peak_rss_mib"]))
        os.unlink(path)
    if not a.skip_many:
        for i in range(a.rounds):
            manys.append(many_files(a.bin, work, a.files, a.busy, a.rate, a.seconds))
            benchlib.log("many files round %d: %s" % (i + 1, manys[-1]))
    load1 = loadavg()
    stamp = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    text = ("\n### tail: %s\n\nMachine: %d CPUs (%s), %s; load average %s before, %s after. "
            "`bench/tail/bench.py --bytes %s --line %d --files %d --busy %d --rate %d "
            "--seconds %d --rounds %d`, median of %d rounds.\n"
            % (stamp, os.cpu_count(), cpu_model(), platform.platform(), load0, load1, a.bytes,
               a.line, a.files, a.busy, a.rate, a.seconds, a.rounds, a.rounds))
    if bigs:
        text += ("\nOne file tailed from the beginning into the log (1 partition, fsync 1s, no "
                 "outputs), timed from spool's start to the last record durable:\n\n"
                 "| lines | MiB | seconds | lines/s | MiB/s (min-max) | CPU s / M lines "
                 "| peak RSS MiB |\n|---|---|---|---|---|---|---|\n"
                 "| %d | %.0f | %.1f | %.0f | %.1f (%.1f-%.1f) | %.2f | %.1f |\n"
                 % (bigs[0]["lines"], bigs[0]["mib"], med(bigs, "seconds"),
                    med(bigs, "lines_per_s"), med(bigs, "mib_per_s"),
                    min(b["mib_per_s"] for b in bigs), max(b["mib_per_s"] for b in bigs),
                    med(bigs, "cpu_s_per_m"), med(bigs, "peak_rss_mib")))
    if manys:
        text += ("\n%d files in one directory (one line each before the start), %d of them "
                 "appended at %d lines/s in total for %d s after start-up, then all quiet for "
                 "%d s; CPU of spool over each window (100%% = one CPU):\n\n"
                 "| files | start-up s | lines | all in log | CPU %% growing (min-max) | CPU %% idle "
                 "| peak RSS MiB |\n|---|---|---|---|---|---|---|\n"
                 "| %d | %.0f | %d | %s | %.2f (%.2f-%.2f) | %.2f | %.1f |\n"
                 % (a.files, a.busy, a.rate, a.seconds, a.seconds, a.files,
                    med(manys, "startup_s"), med(manys, "lines"),
                    "yes" if all(m["in_log"] == m["lines"] for m in manys) else
                    "NO (%s)" % ", ".join("%d/%d" % (m["in_log"], m["lines"]) for m in manys),
                    med(manys, "cpu_pct_growing"), min(m["cpu_pct_growing"] for m in manys),
                    max(m["cpu_pct_growing"] for m in manys), med(manys, "cpu_pct_idle"),
                    med(manys, "peak_rss_mib")))
    print(text)
    if a.append:
        with open(os.path.join(os.path.dirname(HERE), "RESULTS.md"), "a") as f:
            f.write(text)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
