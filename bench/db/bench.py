#!/usr/bin/env python3
"""Database outputs benchmark: records/s and CPU per million records from
spool's log into PostgreSQL (the `postgresql` output: COPY per chunk) and
ClickHouse (the `clickhouse` output: INSERT ... FORMAT JSONEachRow over HTTP),
next to each database's own bulk load of the same rows as the ceiling:
`psql \\copy` of a TSV file, and `clickhouse-client` inserting the same rows
(TabSeparated, the native client's fastest text path; JSONEachRow too).

Both servers are started here in a temporary directory on 127.0.0.1, as the
integration tests start them (tests/integration/test_postgresql.py and
test_clickhouse.py). The records are first written to spool's log (a tail
input, a file output to /dev/null), then spool is restarted with one
database output under a new name (no cursor: it reads the whole log): the
time is from spool's "running" line (the log open, the output connected and
its table checked) until the output's lag is 0 (`spool topics`, every 50 ms:
its cursor moves only once the database acknowledged; no database query
competes with the load), so the figure is the output's: reading the log,
encoding, the database's work. Not the tail input's. The CPU figure is
spool's over that time (the `spool topics` polls are not counted). CPU is spool's own (user + system); the ceiling's CPU
is the client's (psql or clickhouse-client). The server's CPU is the same
work in both and is not counted.

Usage: bench/db/bench.py [--records N] [--rounds R] [--build DIR] [--keep]
                         [--only postgresql|clickhouse]
Each figure is the fastest of R rounds (3), spool and the ceiling
alternating, so a busy machine skews both alike.
Needs a build with the spool binary (build/ by default), PostgreSQL 15 and
clickhouse-server/clickhouse-client (scripts/install-deps). Not a test:
nothing is asserted; the figures depend on the machine.
"""
import argparse
import calendar
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
HOST = "bench-host-01"
ROUNDS = 3
LOG_LEVEL = "info"  # the "running" line
# Chunks as docs/outputs/*.md recommend for databases: big inserts.
CHUNK = "    max_records: 100000\n    max_bytes: 16MiB\n"


def lines(n):
    """n log lines of about 120 bytes, each with a unique sequence number."""
    for i in range(n):
        yield "%012d GET /api/v1/items/%d?page=%d HTTP/1.1 200 %d \"curl/7.88\" rt=0.%03d" % (
            i, i % 9973, i % 17, 100 + i % 9000, i % 1000)


def cpu_of(pid):
    """user + system seconds of a live process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def spool_config(work, output_yaml):
    cfg = os.path.join(work, "spool-%d.yaml" % (hash(output_yaml) & 0xffff))
    with open(cfg, "w") as f:
        f.write("service: {data_dir: %s/data, log_level: %s, shutdown_timeout: 20s}\n"
                "topics:\n  t: {partitions: 1, fsync: 1s, segment_bytes: 256MiB}\n"
                "inputs:\n  - {type: tail, name: tl, topic: t, paths: [%s/app.log], "
                "read_from: beginning}\n"
                "outputs:\n%s" % (work, LOG_LEVEL, work, output_yaml))
    return cfg


def fill_log(spool, work, n):
    """Writes the lines to spool's log through the tail input (a file output to
    /dev/null, so the log is read once and its cursor is not ours)."""
    cfg = spool_config(work, "  - {type: file, name: devnull, topics: [t], path: /dev/null}\n")
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=open(cfg + ".stderr", "w"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit("spool exited: %s" % open(cfg + ".stderr").read()[-2000:])
        r = subprocess.run([spool, "topics", "-c", cfg, "--json"], capture_output=True)
        if r.returncode == 0:
            parts = json.loads(r.stdout)["topics"][0]["partitions"]
            if sum(x["end"] for x in parts) >= n:
                break
        time.sleep(0.2)  # polling a figure, not synchronising a test
    p.terminate()
    p.wait(60)


def log_time(line):
    """Seconds since the epoch of a spool log line (2026-12-01T16:36:31.151Z ...)."""
    stamp = line.split(" ", 1)[0]
    t = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t) + int(stamp[20:23]) / 1000.0


def output_lag(spool, cfg, name):
    """The output's lag over every partition (`spool topics`: reads the cursor
    files, no database query), or None while unknown."""
    r = subprocess.run([spool, "topics", "-c", cfg, "--json"], capture_output=True)
    if r.returncode != 0:
        return None
    lag = 0
    for topic in json.loads(r.stdout)["topics"]:
        for part in topic["partitions"]:
            v = part["lag"].get("output." + name)
            if v is None:
                return None
            lag += v
    return lag


def run_output(spool, work, output_yaml, name, n):
    """Starts spool with one database output; seconds and CPU from its
    "running" line (the log open, the output connected and its table
    checked) until its lag is 0 (`spool topics`, polled every 50 ms: the
    cursor moves only once the database acknowledged; no query competes with
    the load)."""
    cfg = spool_config(work, output_yaml)
    err = cfg + ".stderr"
    p = subprocess.Popen([spool, "run", "-c", cfg], stderr=open(err, "w"))
    deadline = time.monotonic() + 900
    t0 = t1 = None
    cpu0 = cpu = 0.0
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit("spool exited: see %s" % err)
        if t0 is None:
            with open(err) as f:
                for line in f:
                    if " running: " in line:
                        t0 = log_time(line)
                        cpu0 = cpu_of(p.pid)
                        break
        else:
            cpu = cpu_of(p.pid)
            if output_lag(spool, cfg, name) == 0:
                t1 = time.time()
                break
        time.sleep(0.05)  # polling a figure, not synchronising a test
    p.terminate()
    p.wait(60)
    if t1 is None:
        raise SystemExit("spool did not deliver %d records: see %s" % (n, err))
    return t1 - t0, cpu - cpu0


def timed(cmd, stdin=None):
    c0 = children_cpu()
    t0 = time.monotonic()
    subprocess.run(cmd, stdin=stdin, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0, children_cpu() - c0


def row(name, n, secs, cpu):
    return {"name": name, "rps": n / secs, "secs": secs, "cpu_per_m": cpu / n * 1e6}


def keep_best(best, r):
    """The fastest of the rounds (the machine may be shared: less noise)."""
    if r["name"] not in best or r["secs"] < best[r["name"]]["secs"]:
        best[r["name"]] = r


def bench_postgresql(spool, work, n, ts):
    import test_postgresql as tp
    pg = tp.PgServer(work)
    try:
        # No autovacuum: it would run on the first load while the second one
        # is measured.
        pg.sql("CREATE TABLE logs (msg text, host text, path text, ts timestamptz) "
               "WITH (autovacuum_enabled = false)")
        tsv = os.path.join(work, "rows.tsv")
        with open(tsv, "w") as f:
            for l in lines(n):
                f.write("%s\t%s\t%s/app.log\t%s\n" % (l, HOST, work, ts))
        best = {}
        for r in range(ROUNDS):
            pg.sql("TRUNCATE logs")
            secs, cpu = timed(["psql", "-X", "-q", "-d", pg.url, "-c",
                               "\\copy logs FROM '%s'" % tsv])
            keep_best(best, row("psql \\copy (TSV)", n, secs, cpu))
            pg.sql("TRUNCATE logs")
            # A new output name each round: no cursor, no stored progress.
            out = ("  - type: postgresql\n    name: pg%d\n    topics: [t]\n%s"
                   "    conninfo: %s\n    table: logs\n"
                   "    columns: {msg: value, host: host, path: path, ts: timestamp}\n"
                   % (r, CHUNK, pg.url))
            secs, cpu = run_output(spool, work, out, "pg%d" % r, n)
            keep_best(best, row("spool postgresql output", n, secs, cpu))
        return [best["spool postgresql output"], best["psql \\copy (TSV)"]]
    finally:
        pg.stop("fast")


def bench_clickhouse(spool, work, n, ts):
    import test_clickhouse as tc
    ch = tc.ChServer(work)
    client = shutil.which("clickhouse-client")
    tcp = int(open(ch.config).read().split("<tcp_port>")[1].split("<")[0])
    try:
        ch.query("CREATE TABLE logs (msg String, host String, path String, ts DateTime) "
                 "ENGINE = MergeTree ORDER BY ts")
        tsv = os.path.join(work, "rows.tsv")
        ndjson = os.path.join(work, "rows.ndjson")
        secs_ts = int(time.time())
        with open(tsv, "w") as f, open(ndjson, "w") as g:
            for l in lines(n):
                f.write("%s\t%s\t%s/app.log\t%d\n" % (l, HOST, work, secs_ts))
                g.write(json.dumps({"msg": l, "host": HOST, "path": work + "/app.log",
                                    "ts": str(secs_ts)}) + "\n")
        best = {}
        for r in range(ROUNDS):
            for fmt, path in (("TabSeparated", tsv), ("JSONEachRow", ndjson)):
                ch.query("TRUNCATE TABLE logs")
                with open(path) as f:
                    secs, cpu = timed([client, "--host", "127.0.0.1", "--port", str(tcp),
                                       "--query", "INSERT INTO logs FORMAT %s" % fmt], stdin=f)
                keep_best(best, row("clickhouse-client (%s)" % fmt, n, secs, cpu))
            ch.query("TRUNCATE TABLE logs")
            out = ("  - type: clickhouse\n    name: ch%d\n    topics: [t]\n%s"
                   "    url: %s\n    table: logs\n"
                   "    columns: {msg: value, host: host, path: path, ts: timestamp}\n"
                   % (r, CHUNK, ch.url))
            secs, cpu = run_output(spool, work, out, "ch%d" % r, n)
            keep_best(best, row("spool clickhouse output", n, secs, cpu))
        return [best["spool clickhouse output"], best["clickhouse-client (TabSeparated)"],
                best["clickhouse-client (JSONEachRow)"]]
    finally:
        ch.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1000000)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--only", choices=("postgresql", "clickhouse"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each; the fastest is shown")
    args = ap.parse_args()
    global ROUNDS
    ROUNDS = args.rounds
    spool = os.environ.get("SPOOL_BIN") or os.path.join(args.build, "spool")
    n = args.records
    work = tempfile.mkdtemp(prefix="spool-bench-db-")
    os.chmod(work, 0o755)
    try:
        with open(os.path.join(work, "app.log"), "w") as f:
            for l in lines(n):
                f.write(l + "\n")
        fill_log(spool, work, n)
        ts = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
        results = []
        for name, fn in (("postgresql", bench_postgresql), ("clickhouse", bench_clickhouse)):
            if args.only and args.only != name:
                continue
            sub = os.path.join(work, name)
            os.makedirs(sub)
            os.chmod(sub, 0o755)
            for d in ("data",):
                os.symlink(os.path.join(work, d), os.path.join(sub, d))
            os.symlink(os.path.join(work, "app.log"), os.path.join(sub, "app.log"))
            rs = fn(spool, sub, n, ts)
            ceiling = max(r["rps"] for r in rs[1:])
            print("\n%s, %d records of ~120 bytes (4 columns), %d CPUs, best of %d, load %.1f:"
                  % (name, n, os.cpu_count(), ROUNDS, os.getloadavg()[0]))
            print("  %-30s %12s %9s %14s %10s" % ("", "records/s", "seconds", "CPU s/M rec",
                                                  "of ceiling"))
            for r in rs:
                print("  %-30s %12.0f %9.2f %14.2f %9.0f%%" % (
                    r["name"], r["rps"], r["secs"], r["cpu_per_m"], 100 * r["rps"] / ceiling))
            sys.stdout.flush()
    finally:
        if args.keep:
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
