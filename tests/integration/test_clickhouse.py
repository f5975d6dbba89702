"""clickhouse output against a real clickhouse-server (Debian 12's 18.16.1)
started by the test.

spool-test-requires: clickhouse, tail

The server runs from a generated config in the case's temporary directory,
its HTTP interface on 127.0.0.1 on a free port. Records come from a tail
input (value = a sequence number; host, path and the timestamp mapped too)
and the test counts rows by sequence number in ClickHouse.

Delivery into ClickHouse 18.16 is at least once (no insert deduplication
token; block deduplication only in Replicated tables, which need
ZooKeeper): a kill -9 of spool can resend the chunk whose insert ClickHouse
acknowledged just before spool recorded its cursor. So the cases require 0
lost and count the duplicates, bounded by one chunk (max_records) per kill
with max_in_flight: 1 (the output answers each chunk inside flush, but the
runner may hand it up to max_in_flight chunks before it records the cursor
of the first: a larger max_in_flight widens the window, up to that many
chunks per kill):

- at_least_once_through_kill9: 200,000 lines, spool killed three times.
- server_restart_retried: clickhouse-server killed (SIGKILL) mid-stream and
  started again: retried, nothing lost.
- frozen_server_shutdown_bounded: clickhouse-server frozen (SIGSTOP): SIGTERM
  still stops spool within shutdown_timeout + 2s; nothing lost after.
- missing_table_or_column: `spool run` stops with a message naming the
  table or column; `spool check` (which does not connect) accepts it.
- types_and_escaping: JSON escaping of tabs, quotes, backslashes, UTF-8;
  DateTime, Date, Int64 from the timestamp; Nullable and default columns.
- bad_value_dead_lettered: a value the column refuses rejects its chunk to
  the dead-letter topic with ClickHouse's message; the rest go on.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import spoolt
from spoolt import check

t = spoolt.Suite(__file__)
N = 50000 if spoolt.SANITIZE else 200000
SERVER = shutil.which("clickhouse-server") or "/usr/bin/clickhouse-server"
MAX_RECORDS = 10000
_procs = []

CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err</errorlog>
        <console>0</console></logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>64</max_connections>
    <keep_alive_timeout>30</keep_alive_timeout>
    <max_concurrent_queries>16</max_concurrent_queries>
    <uncompressed_cache_size>104857600</uncompressed_cache_size>
    <mark_cache_size>104857600</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
"""
USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
"""


class ChServer:
    """A clickhouse-server with its data in <tmp>/ch, HTTP on 127.0.0.1:<port>."""

    def __init__(self, tmp):
        if not os.path.exists(SERVER):
            spoolt.skip("clickhouse-server is not installed (scripts/install-deps)")
        self.dir = os.path.join(tmp, "ch")
        os.makedirs(self.dir)
        self.port = spoolt.free_port()
        tcp = spoolt.free_port()
        self.config = os.path.join(self.dir, "config.xml")
        spoolt.write(self.config, CONFIG.format(d=self.dir, http=self.port, tcp=tcp))
        spoolt.write(os.path.join(self.dir, "users.xml"), USERS)
        self.proc = None
        self.start()

    def start(self):
        self.out = open(os.path.join(self.dir, "stdout"), "ab")
        self.proc = subprocess.Popen([SERVER, "--config-file=" + self.config], stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        _procs.append(self.proc)

        def up():
            if self.proc.poll() is not None:
                raise spoolt.Failure("clickhouse-server exited: %s" % self.log())
            try:
                return self.query("SELECT 1").strip() == "1"
            except (OSError, spoolt.Failure):
                return False
        spoolt.wait_for(up, timeout=60, interval=0.1, what="clickhouse-server up")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.out.close()

    def log(self):
        text = ""
        for name in ("stdout", "server.err"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")[-2000:]
        return text

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def query(self, q):
        url = "%s/?query=%s" % (self.url, urllib.parse.quote(q))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=b""), timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise spoolt.Failure("query %r: HTTP %d %s" % (q, e.code, e.read().decode()))

    def count(self, table="logs"):
        return int(self.query("SELECT count() FROM %s" % table).strip())


def cleanup():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    del _procs[:]


def spool_run(cfg):
    s = spoolt.Spool(cfg)
    _procs.append(s.proc)
    return s


def config(tmp, ch, path, table="logs", columns=None, extra_out="", extra_top="",
           outputs_extra="", shutdown_timeout="20s"):
    cols = columns or "{seq: value, host: host, path: path, ts: timestamp, tsms: timestamp}"
    cfg = os.path.join(tmp, "spool.yaml")
    spoolt.write(cfg, "\n".join([
        "service: {data_dir: %s/data, log_level: info, shutdown_timeout: %s}"
        % (tmp, shutdown_timeout),
        "topics:",
        "  t: {partitions: 1, fsync: 200ms}",
        extra_top,
        "inputs:",
        "  - {type: tail, name: tl, topic: t, paths: [%s], read_from: beginning}" % path,
        "outputs:",
        "  - type: clickhouse",
        "    name: ch",
        "    topics: [t]",
        "    max_records: %d" % MAX_RECORDS,
        "    max_in_flight: 1",
        "    retry_backoff_max: 500ms",
        "    url: %s" % ch.url,
        "    table: %s" % table,
        "    columns: %s" % cols,
        extra_out,
        outputs_extra,
    ]) + "\n")
    return cfg


def write_seq(path, first, last):
    with open(path, "a") as f:
        for i in range(first, last + 1):
            f.write("%d\n" % i)


def seq_stats(ch, table="logs"):
    row = ch.query("SELECT count(), uniqExact(seq), min(seq), max(seq) FROM %s" % table)
    count, distinct, lo, hi = (int(x) for x in row.split())
    return {"rows": count, "distinct": distinct, "dup": count - distinct, "min": lo, "max": hi}


LOGS = ("CREATE TABLE logs (seq UInt64, host String, path String, ts DateTime, tsms Int64) "
        "ENGINE = MergeTree ORDER BY seq")


@t.case
def at_least_once_through_kill9(tmp):
    try:
        ch = ChServer(tmp)
        ch.query(LOGS)
        path = os.path.join(tmp, "app.log")
        write_seq(path, 1, N)
        cfg = config(tmp, ch, path)
        s = spool_run(cfg)
        kills = 0
        at_kill = []
        for target in (N // 5, 2 * N // 5, 3 * N // 5):
            spoolt.wait_for(lambda: ch.count() >= target or s.proc.poll() is not None,
                            timeout=120, interval=0.1, what="%d rows" % target)
            check(s.proc.poll() is None, "spool exited: %s" % s.run_stderr()[-2000:])
            s.kill()
            kills += 1
            at_kill.append(ch.count())
            s = spool_run(cfg)
        print("     rows when killed: %s" % at_kill, flush=True)
        check(at_kill[0] < N, "the first kill came after the end of the stream")
        spoolt.wait_for(lambda: seq_stats(ch)["distinct"] >= N, timeout=180, interval=0.2,
                        what="%d distinct rows" % N)
        s.wait_running()  # a SIGTERM before spool handles signals would kill it (-15)
        rc = s.terminate(60)
        check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
        st = seq_stats(ch)
        print("     %d records, %d kills -9: %d rows, %d distinct, %d duplicated (bound %d: one "
              "chunk per kill), %d lost" % (N, kills, st["rows"], st["distinct"], st["dup"],
                                            kills * MAX_RECORDS, N - st["distinct"]), flush=True)
        check(st["distinct"] == N and st["min"] == 1 and st["max"] == N, "lost rows: %s" % st)
        check(st["dup"] <= kills * MAX_RECORDS, "more duplicates than one chunk per kill: %s" % st)
        bad = ch.query("SELECT count() FROM logs WHERE host = '' OR path != '%s' OR "
                       "toUInt64(ts) != intDiv(tsms, 1000) OR ts < now() - 3600" % path).strip()
        check(bad == "0", "%s rows with a wrong host, path or time" % bad)
    finally:
        cleanup()


@t.case
def server_restart_retried(tmp):
    try:
        ch = ChServer(tmp)
        ch.query(LOGS)
        path = os.path.join(tmp, "app.log")
        n = N // 2
        write_seq(path, 1, n // 2)
        cfg = config(tmp, ch, path)
        s = spool_run(cfg)
        spoolt.wait_for(lambda: ch.count() >= n // 4, timeout=120, interval=0.1, what="rows")
        ch.kill()
        write_seq(path, n // 2 + 1, n)
        s.wait_log("retrying", timeout=60)
        ch.start()
        spoolt.wait_for(lambda: seq_stats(ch)["distinct"] >= n, timeout=120, interval=0.2,
                        what="%d distinct rows" % n)
        s.wait_log("delivering again", timeout=60)
        s.wait_running()  # a SIGTERM before spool handles signals would kill it (-15)
        rc = s.terminate(60)
        check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
        st = seq_stats(ch)
        print("     %d records, clickhouse-server killed and restarted: %d rows, %d duplicated, "
              "%d lost" % (n, st["rows"], st["dup"], n - st["distinct"]), flush=True)
        check(st["distinct"] == n and st["min"] == 1 and st["max"] == n, "lost rows: %s" % st)
        check(st["dup"] <= MAX_RECORDS, "more than one chunk duplicated: %s" % st)
    finally:
        cleanup()


@t.case
def frozen_server_shutdown_bounded(tmp):
    """clickhouse-server stops answering (SIGSTOP) mid-stream: spool's SIGTERM
    still ends within shutdown_timeout (3s) + 2s (stop() aborts the request
    through curl's progress callback). After SIGCONT a restart delivers the
    rest: nothing lost."""
    ch = None
    try:
        ch = ChServer(tmp)
        ch.query(LOGS)
        path = os.path.join(tmp, "app.log")
        n = N // 4
        write_seq(path, 1, n)
        cfg = config(tmp, ch, path, shutdown_timeout="3s", extra_out="    timeout: 10m")
        spoolt.write(cfg, open(cfg).read().replace("max_records: %d" % MAX_RECORDS,
                                                   "max_records: 1000"))
        s = spool_run(cfg)
        spoolt.wait_for(lambda: ch.count() >= n // 10, timeout=120, interval=0.1, what="rows")
        ch.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
        ch.proc.send_signal(signal.SIGCONT)
        check(s.proc.poll() is not None, "spool still running %.1fs after SIGTERM" % took)
        print("     SIGTERM with the server frozen: spool exited in %.1fs" % took, flush=True)
        check(took < 3 + 2 + 3, "shutdown took %.1fs" % took)
        s = spool_run(cfg)
        spoolt.wait_for(lambda: seq_stats(ch)["distinct"] >= n, timeout=120, interval=0.2,
                        what="%d distinct rows" % n)
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        st = seq_stats(ch)
        check(st["distinct"] == n and st["max"] == n, "rows: %s" % st)
    finally:
        if ch and ch.proc and ch.proc.poll() is None:
            ch.proc.send_signal(signal.SIGCONT)
        cleanup()


@t.case
def missing_table_or_column(tmp):
    try:
        ch = ChServer(tmp)
        ch.query("CREATE TABLE logs (seq UInt64, host String) ENGINE = MergeTree ORDER BY seq")
        path = os.path.join(tmp, "app.log")
        write_seq(path, 1, 10)
        cfg = config(tmp, ch, path, columns="{seq: value, host: host, nope: path}")
        r = spoolt.run(["check", "-c", cfg])
        check(r.returncode == 0, "spool check connects? %s" % r.stderr.decode())
        r = spoolt.run(["run", "-c", cfg], timeout=60)
        err = r.stderr.decode()
        check(r.returncode != 0, "spool run started with a missing column")
        check("columns: table `logs` has no column nope" in err, "message: %s" % err[-1500:])
        cfg = config(tmp, ch, path, table="nolog")
        r = spoolt.run(["run", "-c", cfg], timeout=60)
        err = r.stderr.decode()
        check(r.returncode != 0 and "table: no table `nolog`: Code: 60" in err,
              "missing table: %s" % err[-1500:])
        cfg = config(tmp, ch, path, columns="{'bad col': value}")
        r = spoolt.run(["check", "-c", cfg])
        check(r.returncode == 2 and "plain identifier" in r.stderr.decode(), r.stderr.decode())
    finally:
        cleanup()


@t.case
def types_and_escaping(tmp):
    try:
        ch = ChServer(tmp)
        ch.query("CREATE TABLE logs (msg String, ts DateTime, day Date, tsms Int64, "
                 "nohdr Nullable(String), dflt String DEFAULT 'd', topic String) "
                 "ENGINE = MergeTree ORDER BY tsms")
        path = os.path.join(tmp, "app.log")
        lines = ["a\tb", "quote \" back\\slash", "caf\u00e9 \u2603", "{\"json\": 1}", "",
                 "x" * 5000]
        with open(path, "w") as f:
            for l in lines:
                f.write(l + "\n")
        cfg = config(tmp, ch, path, columns="{msg: value, ts: timestamp, day: timestamp, "
                     "tsms: timestamp, nohdr: nosuchheader, dflt: nosuchheader, topic: topic}")
        s = spool_run(cfg)
        spoolt.wait_for(lambda: ch.count() >= len(lines), timeout=60, what="rows")
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        got = ch.query("SELECT hex(msg), toUInt64(ts) = intDiv(tsms, 1000), "
                       "day = toDate(ts), isNull(nohdr), dflt, topic FROM logs FORMAT TSV")
        rows = [r.split("\t") for r in got.strip("\n").split("\n")]
        check(len(rows) == len(lines), "rows: %s" % str(rows)[:2000])
        check(sorted(r[0].lower() for r in rows) == sorted(l.encode().hex() for l in lines),
              "text round trip: %s" % str(rows)[:2000])
        # 18.16 fills a column left out of a JSONEachRow row with its type's
        # default ('' here), not its DEFAULT expression (newer servers do,
        # with input_format_defaults_for_omitted_fields).
        check(all(r[1:] == ["1", "1", "1", "", "t"] for r in rows), "types: %s"
              % [r[1:] for r in rows])
    finally:
        cleanup()


@t.case
def bad_value_dead_lettered(tmp):
    try:
        ch = ChServer(tmp)
        ch.query(LOGS)
        path = os.path.join(tmp, "app.log")
        with open(path, "w") as f:
            for i in range(1, 31):
                f.write("%s\n" % (i if i != 17 else "seventeen"))
        dead = os.path.join(tmp, "dead.out")
        cfg = config(tmp, ch, path, extra_out="    dead_letter_topic: dead",
                     extra_top="  dead: {partitions: 1}",
                     outputs_extra="  - {type: file, topics: [dead], path: %s, format: json}"
                     % dead)
        spoolt.write(cfg, open(cfg).read().replace("max_records: %d" % MAX_RECORDS,
                                                   "max_records: 10"))
        s = spool_run(cfg)
        spoolt.wait_for(lambda: len(spoolt.read_lines(dead)) + ch.count() >= 30,
                        timeout=60, what="30 rows and dead letters")
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        recs = [json.loads(l) for l in spoolt.read_lines(dead)]
        reason = recs[0]["headers"].get("dead_letter.reason", "")
        check("HTTP 500: Code: 27" in reason and "seventeen" in reason, "reason: %r" % reason)
        values = [r["value"] for r in recs]
        check("seventeen" in values and len(values) <= 10, "dead letters: %s" % values)
        st = seq_stats(ch)
        check(st["rows"] == 30 - len(values) and st["dup"] == 0, "rows: %s" % st)
    finally:
        cleanup()


if __name__ == "__main__":
    t.main()
