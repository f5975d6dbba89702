#!/usr/bin/env python3
"""Kafka output benchmark: tail a file of 120-byte lines -> spool's log ->
the kafka output -> librdkafka's mock cluster (3 brokers), and, in the same
run against the same cluster, `kcat -P` producing the same file (the
librdkafka speed limit). Prints records/s, MiB/s, CPU seconds per million
records and peak RSS for both, and appends them to bench/RESULTS.md. kcat
runs twice: plain (the issue's reference) and with the three headers
spool's tail input puts on every record (host, path, input), which is the
same Kafka traffic as spool's.

Each round starts a fresh mock cluster and runs kcat, kcat -H and spool in
turn; the table shows the median of each figure over --rounds (default 3)
and the ratios are medians of the per-round ratios (range in brackets).

Usage: bench/kafka/bench.py [--bytes 1GiB] [--rounds 3] [--build DIR] [--no-append]
Needs a build with the spool binary and tests/helpers/kafka_mock, and kcat.
Not a test: nothing is asserted; figures depend on the machine.
"""
import argparse
import datetime
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
LINE = 120
OUT_OPTS = []


def out_options():
    opts = {"max_in_flight": "8"}
    opts.update(dict(o.split("=", 1) for o in OUT_OPTS))
    return opts


def parse_size(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "": 1}
    for u in ("KiB", "MiB", "GiB"):
        if s.endswith(u):
            return int(float(s[:-len(u)]) * units[u])
    return int(s)


def make_file(path, size):
    """size bytes of 120-byte lines (119 characters and a newline)."""
    if os.path.exists(path) and os.path.getsize(path) == size // LINE * LINE:
        return size // LINE
    n = size // LINE
    with open(path, "wb") as f:
        block = []
        for i in range(n):
            block.append(b"%012d " % i + b"x" * (LINE - 14) + b"\n")
            if len(block) == 10000:
                f.write(b"".join(block))
                block = []
        f.write(b"".join(block))
    return n


def kafka_count(kcat, bootstrap, topic):
    """Messages in topic: sum over partitions of (last offset + 1)."""
    r = subprocess.run([kcat, "-b", bootstrap, "-C", "-t", topic, "-o", "-1", "-e", "-q",
                        "-f", "%p %o\n"], capture_output=True, timeout=120)
    last = {}
    for line in r.stdout.decode().splitlines():
        p, o = line.split()
        last[int(p)] = max(last.get(int(p), -1), int(o))
    return sum(o + 1 for o in last.values())


def wait_rusage(proc):
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru


def run_kcat(kcat, bootstrap, path, n, topic="bench.kcat", headers=False):
    """kcat -P -l; with headers, every message carries the three headers
    spool's tail input puts on each record (host, path, input), so the
    messages are the same as spool's."""
    cmd = [kcat, "-b", bootstrap, "-P", "-t", topic, "-l", path,
           "-X", "enable.idempotence=true", "-X", "acks=all"]
    if headers:
        cmd += ["-H", "host=" + socket.gethostname(), "-H", "path=" + path, "-H", "input=bench"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd)
    ru = wait_rusage(p)
    wall = time.monotonic() - t0
    got = kafka_count(kcat, bootstrap, topic)
    return {"who": "kcat -P" + (" -H x3 (spool's headers)" if headers else ""), "wall": wall,
            "cpu": ru.ru_utime + ru.ru_stime, "rss_kib": ru.ru_maxrss, "n": got, "want": n}


def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def records_out(port):
    """The kafka output's delivered-records counter from /metrics (counted
    when the cursor passes acknowledged chunks), or -1 while unavailable.
    Polling it costs the machine far less than starting a kcat consumer."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return -1
    for line in body.splitlines():
        if (line.startswith("spool_records_out_total{") and 'kind="output"' in line and
                'name="tokafka"' in line):
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


def run_spool(spool, kcat, bootstrap, path, n, tmp, timeout):
    cfg = os.path.join(tmp, "spool.yaml")
    port = free_port()
    with open(cfg, "w") as f:
        f.write("""service:
  data_dir: %s/data
  log_level: warn
  http:
    listen: 127.0.0.1:%d
topics:
  app:
    partitions: 4
    fsync: 1s
    segment_bytes: 256MiB
inputs:
  - type: tail
    name: bench
    topic: app
    paths: [%s]
    read_from: beginning
outputs:
  - type: kafka
    name: tokafka
    topics: [app]
    brokers: [%s]
    kafka_topic: bench.spool
""" % (tmp, port, path, ", ".join(bootstrap.split(","))) + "".join("    %s: %s\n" % kv for kv in out_options().items()))
    shutil.rmtree(os.path.join(tmp, "data"), ignore_errors=True)
    err = open(os.path.join(tmp, "spool.stderr"), "wb")
    t0 = time.monotonic()
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=err)
    got = 0
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if os.waitpid(p.pid, os.WNOHANG)[0] != 0:
            sys.exit("spool exited early: see %s/spool.stderr" % tmp)
        if records_out(port) >= n:
            break
    wall = time.monotonic() - t0
    p.send_signal(signal.SIGTERM)
    ru = wait_rusage(p)
    got = kafka_count(kcat, bootstrap, "bench.spool")
    return {"who": "spool tail->log->kafka", "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
            "rss_kib": ru.ru_maxrss, "n": got, "want": n}


def row(r, size_per_rec):
    rps = r["n"] / r["wall"] if r["wall"] else 0
    mib = rps * size_per_rec / (1 << 20)
    cpm = r["cpu"] / r["n"] * 1e6 if r["n"] else 0
    return "| %s | %d/%d | %.1f | %.0f | %.1f | %.2f | %.0f |" % (
        r["who"], r["n"], r["want"], r["wall"], rps, mib, cpm, r["rss_kib"] / 1024)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", default="1GiB")
    ap.add_argument("--build", default=os.environ.get("SPOOL_BUILD", os.path.join(SRC, "build")))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--out-opt", action="append", default=[],
                    help="extra kafka output option, name=value (repeatable)")
    a = ap.parse_args()
    OUT_OPTS.extend(a.out_opt)
    spool = os.path.join(a.build, "spool")
    mock = os.path.join(a.build, "tests", "helpers", "kafka_mock", "kafka_mock")
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    for need in (spool, mock, kcat):
        if not need or not os.path.exists(need):
            sys.exit("missing: %s" % need)
    tmp = tempfile.mkdtemp(prefix="spool-bench-kafka-")
    size = parse_size(a.bytes)
    path = os.path.join(tmp, "input.log")
    n = make_file(path, size)
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    rows = {"k": [], "kh": [], "s": []}
    for rnd in range(a.rounds):
        m = subprocess.Popen([mock, "bench.spool:4", "bench.kcat:4", "bench.kcath:4"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        bootstrap = m.stdout.readline().strip()
        try:
            rows["k"].append(run_kcat(kcat, bootstrap, path, n))
            rows["kh"].append(run_kcat(kcat, bootstrap, path, n, "bench.kcath", headers=True))
            rows["s"].append(run_spool(spool, kcat, bootstrap, path, n, tmp, a.timeout))
        finally:
            m.stdin.close()
            m.wait(60)
        print("round %d: %s" % (rnd + 1, "; ".join(row(rows[w][-1], LINE)
                                                  for w in ("k", "kh", "s"))), flush=True)
    with open("/proc/loadavg") as f:
        load1 = " ".join(f.read().split()[:3])

    def median_row(rs):
        out = dict(rs[0])
        for key in ("wall", "cpu", "rss_kib"):
            out[key] = statistics.median(r[key] for r in rs)
        out["n"] = min(r["n"] for r in rs)
        return out

    def ratios(ref):
        v = []
        for sr, rr in zip(rows["s"], rows[ref]):
            if sr["wall"] and rr["wall"] and rr["n"]:
                v.append((sr["n"] / sr["wall"]) / (rr["n"] / rr["wall"]) * 100)
        return (statistics.median(v), min(v), max(v)) if v else (0, 0, 0)

    k, kh, s = median_row(rows["k"]), median_row(rows["kh"]), median_row(rows["s"])
    head = ("| producer | records in Kafka | wall s | records/s | MiB/s | CPU s per 1M records "
            "| peak RSS MiB |\n|---|---|---|---|---|---|---|")
    text = "\n".join([
        "",
        "### kafka output (bench/kafka/bench.py): %s" % time.strftime("%Y-%m-%dT%H:%MZ",
                                                                      time.gmtime()),
        "",
        "%s, %d CPUs, load average %s before, %s after; %s of %d-byte lines (%d records), "
        "librdkafka mock cluster with 3 brokers (fresh each round); spool: tail -> log "
        "(4 partitions, fsync 1s) -> kafka output (%s, idempotent, acks all); kcat -P -l with "
        "idempotence and acks all. Mock cluster, spool and kcat share the machine. Median of "
        "%d rounds." % (
            datetime.date.today().isoformat(), os.cpu_count(), load0, load1, a.bytes, LINE, n,
            ", ".join("%s %s" % kv for kv in out_options().items()), a.rounds),
        "",
        head,
        row(k, LINE),
        row(kh, LINE),
        row(s, LINE),
        "",
        "spool reaches %.0f%% (%.0f-%.0f%%) of kcat's record rate, %.0f%% (%.0f-%.0f%%) of kcat "
        "sending the same three headers per message as spool (goal: 80%%)." % (
            ratios("k") + ratios("kh")),
        "",
    ])
    print(text)
    if not a.no_append:
        with open(os.path.join(SRC, "bench", "RESULTS.md"), "a") as f:
            f.write(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
