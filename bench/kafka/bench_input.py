#!/usr/bin/env python3
"""Kafka input benchmark: librdkafka's mock cluster (3 brokers) holding N
records of 120 bytes (a key each) in a topic of 16 partitions (the mock
keeps ~5 MiB per partition: the default fills ~2.3 MiB of each), read by
`kcat -C` to the end (the librdkafka speed limit) and by spool's kafka input
into spool's log (1 partition, fsync 1s). Prints records/s, MiB/s, CPU
seconds per million records and peak RSS for both, and appends them to
bench/RESULTS.md.

spool's wall time runs from its first partition assignment (the group join
is logged, and kcat -C without a group has none) until /metrics counts N
records in; its CPU is the whole process's (join and shutdown included).

Each round uses a new mock cluster and runs kcat then spool on it; the
ratio reported is the median of the rounds' spool/kcat ratios (the
machine is shared: compare within a round).

Usage: bench/kafka/bench_input.py [--records 300000] [--rounds 3] [--build DIR]
                                  [--no-append]
Not a test: nothing is asserted; figures depend on the machine.
"""
import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (make_file, kafka_count, wait_rusage, free_port, row)

PARTS = 16
IN_OPTS = []


def fill(kcat, bootstrap, path, n):
    """Produces the file's lines with keys (key-<i % 64>) to bench.in."""
    keyed = path + ".keyed"
    with open(path, "rb") as f, open(keyed, "wb") as out:
        for i, line in enumerate(f):
            out.write(b"key-%d\t" % (i % 64) + line)
    subprocess.run([kcat, "-b", bootstrap, "-P", "-t", "bench.in", "-K", "\t", "-l", keyed],
                   check=True, timeout=600)
    got = bench.kafka_count(kcat, bootstrap, "bench.in")
    if got != n:
        sys.exit("Kafka holds %d records, want %d" % (got, n))


def run_kcat(kcat, bootstrap, n):
    t0 = time.monotonic()
    p = subprocess.Popen([kcat, "-b", bootstrap, "-C", "-t", "bench.in", "-o", "beginning",
                          "-e", "-q", "-f", "%k %s\n"], stdout=subprocess.DEVNULL)
    ru = bench.wait_rusage(p)
    wall = time.monotonic() - t0
    return {"who": "kcat -C", "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
            "rss_kib": ru.ru_maxrss, "n": n, "want": n}


def records_in(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return -1
    for line in body.splitlines():
        if (line.startswith("spool_records_in_total{") and 'kind="input"' in line and
                'name="fromkafka"' in line):
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


def run_spool(spool, bootstrap, n, tmp, timeout):
    cfg = os.path.join(tmp, "spool.yaml")
    port = bench.free_port()
    with open(cfg, "w") as f:
        f.write("""service:
  data_dir: %s/data
  log_level: info
  http:
    listen: 127.0.0.1:%d
topics:
  app:
    partitions: 1
    fsync: 1s
    segment_bytes: 256MiB
inputs:
  - type: kafka
    name: fromkafka
    topic: app
    brokers: [%s]
    topics: [bench.in]
    group_id: bench
""" % (tmp, port, ", ".join(bootstrap.split(","))) + "".join("    %s\n" % o for o in IN_OPTS)
            + "outputs: []\n")
    errpath = os.path.join(tmp, "spool.stderr")
    err = open(errpath, "wb")
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=err)
    deadline = time.monotonic() + timeout
    t0 = None
    while time.monotonic() < deadline:
        time.sleep(0.02)  # poll pacing; bounded by the deadline
        if os.waitpid(p.pid, os.WNOHANG)[0] != 0:
            sys.exit("spool exited early: see %s" % errpath)
        if t0 is None:
            with open(errpath, "rb") as f:
                if re.search(rb"assigned \d+ partition", f.read()):
                    t0 = time.monotonic()
            continue
        if records_in(port) >= n:
            break
    wall = time.monotonic() - (t0 or deadline)
    got = records_in(port)
    p.send_signal(signal.SIGTERM)
    ru = bench.wait_rusage(p)
    return {"who": "spool kafka input -> log", "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
            "rss_kib": ru.ru_maxrss, "n": got, "want": n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300000)
    ap.add_argument("--build", default=os.environ.get("SPOOL_BUILD",
                                                      os.path.join(bench.SRC, "build")))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--in-opt", action="append", default=[],
                    help="extra kafka input option, 'name: value' (repeatable)")
    a = ap.parse_args()
    IN_OPTS.extend(a.in_opt)
    spool = os.path.join(a.build, "spool")
    mock = os.path.join(a.build, "tests", "helpers", "kafka_mock", "kafka_mock")
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    for need in (spool, mock, kcat):
        if not need or not os.path.exists(need):
            sys.exit("missing: %s" % need)
    tmp = tempfile.mkdtemp(prefix="spool-bench-kafka-in-")
    path = os.path.join(tmp, "input.log")
    n = bench.make_file(path, a.records * bench.LINE)
    rows, ratios, loads = [], [], []
    for rnd in range(a.rounds):
        m = subprocess.Popen([mock, "bench.in:%d" % PARTS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        bootstrap = m.stdout.readline().strip()
        rtmp = os.path.join(tmp, "round%d" % rnd)
        os.makedirs(rtmp)
        try:
            fill(kcat, bootstrap, path, n)
            loads.append(open("/proc/loadavg").read().split()[0])
            k = run_kcat(kcat, bootstrap, n)
            s = run_spool(spool, bootstrap, n, rtmp, a.timeout)
        finally:
            m.stdin.close()
            m.wait(60)
        ratio = (s["n"] / s["wall"]) / (k["n"] / k["wall"]) if s["wall"] and k["wall"] else 0
        ratios.append(ratio)
        for r in (k, s):
            r["who"] = "%d: %s" % (rnd + 1, r["who"])
            rows.append(bench.row(r, bench.LINE))
        print(rows[-2] + "\n" + rows[-1] + "\n   ratio %.0f%%" % (ratio * 100), flush=True)
        shutil.rmtree(rtmp, ignore_errors=True)
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    med = sorted(ratios)[len(ratios) // 2]
    text = "\n".join([
        "",
        "### kafka input (bench/kafka/bench_input.py): %s" % (
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")),
        "",
        "%d CPUs (%s), load average %s at the rounds' starts. %d records of %d bytes with "
        "keys in %d partitions of librdkafka's mock cluster (3 brokers), a new cluster per "
        "round; kcat -C -e to the end; spool: kafka input (consumer group, cooperative-sticky, "
        "batches of 10000) -> log (1 partition, fsync 1s), timed from its first assignment. "
        "Mock cluster, spool and kcat share the machine." % (
            os.cpu_count(), cpu, ", ".join(loads), n, bench.LINE, PARTS),
        "",
        "| round: consumer | records | wall s | records/s | MiB/s | CPU s per 1M records "
        "| peak RSS MiB |\n|---|---|---|---|---|---|---|",
        "\n".join(rows),
        "",
        "spool/kcat record rate per round: %s; median %.0f%% (goal: 80%%)." % (
            ", ".join("%.0f%%" % (r * 100) for r in ratios), med * 100),
        "",
    ])
    print(text)
    if not a.no_append:
        with open(os.path.join(bench.SRC, "bench", "RESULTS.md"), "a") as f:
            f.write(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
