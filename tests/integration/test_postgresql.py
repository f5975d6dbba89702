"""postgresql output against a real PostgreSQL 15 started by the test.

spool-test-requires: postgresql, tail

A server is made with initdb in the case's temporary directory (as the
`postgres` user when run as root, as CI does) and listens on 127.0.0.1 on a
free port, with synchronous_commit off (the output turns it on for its own
session, or an immediate restart would lose acknowledged rows). Records
come from a tail input (value = a sequence number; the host and path
headers and the timestamp are mapped too), and the test counts the rows by
sequence number in the database:

- exactly_once_through_kill9: 200,000 lines, spool killed with SIGKILL three
  times mid-stream and restarted: every number exactly once. Then a second
  output under another name (so no cursor: it reads the log from the
  beginning) with the same offsets_id: it skips every record (the offsets
  table says they are there) and inserts nothing: the mechanism that makes a
  resend after a crash harmless, exercised deterministically.
- server_restart_retried: PostgreSQL stopped mid-stream and started again:
  the output retries and nothing is lost or duplicated.
- frozen_server_shutdown_bounded: PostgreSQL frozen (SIGSTOP) mid-stream:
  SIGTERM still stops spool within shutdown_timeout + 2s; nothing lost or
  duplicated after it thaws.
- transient_error_keeps_order: one chunk fails once (serialization failure)
  while the next ones are in the log: nothing committed past it before its
  retry (failed before the output runner's fix: 1,000 records lost).
- missing_table_or_column: `spool run` stops with a clear message naming the
  table or column; `spool check` (which does not connect) accepts it, and
  refuses a broken conninfo.
- escaping_and_types: tabs, newlines, backslashes, UTF-8, a missing header
  (NULL), the timestamp as timestamptz, a bytea column: round trip exact.
- bad_value_dead_lettered: a value the column type refuses rejects its
  chunk to the dead-letter topic with the server's message; the rest go on.
"""
import atexit
import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import spoolt
from spoolt import check

t = spoolt.Suite(__file__)
PGBIN = "/usr/lib/postgresql/15/bin"
N = 50000 if spoolt.SANITIZE else 200000
_servers = []


class PgServer:
    """A PostgreSQL cluster in <tmp>/pg, listening on 127.0.0.1:<port>."""

    def __init__(self, tmp):
        if not os.path.exists(os.path.join(PGBIN, "initdb")):
            spoolt.skip("PostgreSQL 15 is not installed (scripts/install-deps)")
        self.dir = os.path.join(tmp, "pg")
        self.data = os.path.join(self.dir, "data")
        self.port = spoolt.free_port()
        os.makedirs(self.dir)
        self.as_user = []
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: the postgres user
            # (made by the postgresql package) owns the cluster.
            os.chmod(tmp, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(self.as_user + [PGBIN + "/initdb", "-D", self.data, "-A", "trust",
                                       "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_wal_size = 1GB\n" % (self.port, self.dir))
        _servers.append(self)
        self.start()

    def start(self):
        subprocess.run(self.as_user + [PGBIN + "/pg_ctl", "-D", self.data, "-l",
                                       os.path.join(self.dir, "log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)

    def stop(self, mode="fast"):
        subprocess.run(self.as_user + [PGBIN + "/pg_ctl", "-D", self.data, "-m", mode, "-w",
                                       "-t", "60", "stop"], capture_output=True, timeout=90)

    db = "postgres"

    @property
    def url(self):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, self.db)

    def pids(self):
        """The postmaster and its children: the processes this test started."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                            kids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        return kids + [master]

    def freeze(self, sig):
        """SIGSTOP (a server that stops answering) or SIGCONT the cluster."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # a backend that ended after the listing: nothing to freeze

    def sql(self, q):
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.url,
                            "-c", q], capture_output=True, timeout=120)
        if r.returncode != 0:
            raise spoolt.Failure("psql %r: %s" % (q, r.stderr.decode()))
        return r.stdout.decode()

    def count(self, table="logs"):
        return int(self.sql("SELECT count(*) FROM %s" % table).strip())


def stop_servers():
    for s in _servers:
        s.stop("immediate")
    del _servers[:]


_shared = []


def shared_pg(tmp):
    """A database of its own on a server shared by the cases that neither
    stop nor freeze it (initdb is most of a case's time). Stopped at exit."""
    if not _shared:
        d = tempfile.mkdtemp(prefix="spool-test_postgresql-shared-")
        server = PgServer(d)
        _servers.remove(server)  # not stopped by a case's cleanup()
        _shared.append((server, d))
        atexit.register(_stop_shared)
    server = copy.copy(_shared[0][0])
    server.db = "c_" + os.path.basename(tmp).replace("-", "_").lower()
    server.db = server.db[:60]
    base = copy.copy(server)
    base.db = "postgres"
    base.sql('CREATE DATABASE "%s"' % server.db)
    return server


def _stop_shared():
    for server, d in _shared:
        server.stop("immediate")
        shutil.rmtree(d, ignore_errors=True)


def config(tmp, pg, path, table="logs", columns=None, extra_out="", extra_top="",
           outputs_extra="", log_level="info", shutdown_timeout="20s"):
    cols = columns or "{seq: value, host: host, path: path, ts: timestamp}"
    cfg = os.path.join(tmp, "spool.yaml")
    spoolt.write(cfg, "\n".join([
        "service: {data_dir: %%s/data, log_level: %%s, shutdown_timeout: %s}" % shutdown_timeout
        % (tmp, log_level),
        "topics:",
        "  t: {partitions: 1, fsync: 200ms}",
        extra_top,
        "inputs:",
        "  - {type: tail, name: tl, topic: t, paths: [%s], read_from: beginning}" % path,
        "outputs:",
        "  - type: postgresql",
        "    name: pg",
        "    topics: [t]",
        "    conninfo: %s" % pg.url,
        "    table: %s" % table,
        "    columns: %s" % cols,
        extra_out,
        outputs_extra,
    ]) + "\n")
    return cfg


def lag(cfg, output):
    """The output's lag summed over partitions (None while unknown)."""
    r = spoolt.run(["topics", "-c", cfg, "--json"])
    if r.returncode != 0:
        return None
    total = 0
    for topic in json.loads(r.stdout.decode())["topics"]:
        for p in topic["partitions"]:
            v = p["lag"].get("output." + output)
            if v is None:
                return None
            total += v
    return total


def end_offset(cfg):
    r = spoolt.run(["topics", "-c", cfg, "--json"])
    if r.returncode != 0:
        return -1
    return sum(p["end"] for t in json.loads(r.stdout.decode())["topics"] for p in t["partitions"])


def edit(cfg, old, new):
    with open(cfg) as f:
        text = f.read()
    check(old in text, "%r not in the config" % old)
    spoolt.write(cfg, text.replace(old, new))


def write_seq(path, first, last):
    with open(path, "a") as f:
        for i in range(first, last + 1):
            f.write("%d\n" % i)


def seq_stats(pg, table="logs"):
    row = pg.sql("SELECT count(*), count(DISTINCT seq), coalesce(min(seq), 0), "
                 "coalesce(max(seq), 0) FROM %s" % table).strip().split("|")
    count, distinct, lo, hi = (int(x) for x in row)
    return {"rows": count, "distinct": distinct, "dup": count - distinct, "min": lo, "max": hi}


def spool_run(cfg):
    s = spoolt.Spool(cfg)
    _spools.append(s)
    return s


_spools = []


def cleanup():
    for s in _spools:
        if s.proc.poll() is None:
            s.kill()
    del _spools[:]
    stop_servers()


LOGS = ("CREATE TABLE logs (seq bigint NOT NULL, host text, path text, ts timestamptz, "
        "extra text)")


@t.case
def exactly_once_through_kill9(tmp):
    try:
        pg = shared_pg(tmp)
        pg.sql(LOGS)
        path = os.path.join(tmp, "app.log")
        write_seq(path, 1, N)
        cfg = config(tmp, pg, path)
        s = spool_run(cfg)
        kills = 0
        at_kill = []
        for target in (N // 5, 2 * N // 5, 3 * N // 5):
            spoolt.wait_for(lambda: pg.count() >= target or s.proc.poll() is not None,
                            timeout=120, interval=0.2, what="%d rows" % target)
            check(s.proc.poll() is None, "spool exited: %s" % s.run_stderr()[-2000:])
            s.kill()
            kills += 1
            at_kill.append(pg.count())
            s = spool_run(cfg)
        print("     rows when killed: %s" % at_kill, flush=True)
        check(at_kill[0] < N, "the first kill came after the end of the stream")
        spoolt.wait_for(lambda: pg.count() >= N, timeout=180, interval=0.2, what="%d rows" % N)
        s.wait_running()  # a SIGTERM before spool handles signals would kill it (-15)
        rc = s.terminate(60)
        check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
        st = seq_stats(pg)
        print("     %d records, %d kills -9: %d rows, %d distinct, %d duplicated, %d lost"
              % (N, kills, st["rows"], st["distinct"], st["dup"], N - st["distinct"]), flush=True)
        check(st == {"rows": N, "distinct": N, "dup": 0, "min": 1, "max": N}, "rows: %s" % st)
        hosts = pg.sql("SELECT count(*) FROM logs WHERE host IS NULL OR path <> '%s' "
                       "OR ts IS NULL OR ts < now() - interval '1 hour'" % path).strip()
        check(hosts == "0", "%s rows with a wrong host, path or ts" % hosts)
        stored = pg.sql("SELECT output, topic, partition, last_offset FROM spool_offsets").strip()
        check(stored == "pg|t|0|%d" % (N - 1), "spool_offsets: %r" % stored)
        # A second output with no cursor re-reads the whole log under the same
        # offsets_id: every record is found in the offsets table and skipped.
        edit(cfg, "name: pg\n", "name: pg2\n    offsets_id: pg\n    max_records: 7000\n")
        s = spool_run(cfg)
        spoolt.wait_for(lambda: lag(cfg, "pg2") == 0 or
                        s.proc.poll() is not None, timeout=120, what="pg2 caught up")
        s.wait_running()  # a SIGTERM before spool handles signals would kill it (-15)
        rc = s.terminate(60)
        check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
        st = seq_stats(pg)
        check(st["rows"] == N and st["dup"] == 0, "after a full resend: %s" % st)
    finally:
        cleanup()


@t.case
def server_restart_retried(tmp):
    try:
        pg = PgServer(tmp)
        pg.sql(LOGS)
        path = os.path.join(tmp, "app.log")
        n = N // 2
        write_seq(path, 1, n // 2)
        cfg = config(tmp, pg, path, extra_out="    retry_backoff_max: 500ms")
        s = spool_run(cfg)
        spoolt.wait_for(lambda: pg.count() >= n // 4, timeout=120, what="rows")
        pg.stop("immediate")
        write_seq(path, n // 2 + 1, n)
        s.wait_log("retrying", timeout=60)
        check(s.proc.poll() is None, "spool exited")
        pg.start()
        spoolt.wait_for(lambda: pg.count() >= n, timeout=120, what="%d rows" % n)
        s.wait_log("delivering again", timeout=60)
        s.wait_running()  # a SIGTERM before spool handles signals would kill it (-15)
        rc = s.terminate(60)
        check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
        st = seq_stats(pg)
        print("     %d records, PostgreSQL restarted mid-stream: %d rows, %d duplicated, %d lost"
              % (n, st["rows"], st["dup"], n - st["distinct"]), flush=True)
        check(st == {"rows": n, "distinct": n, "dup": 0, "min": 1, "max": n}, "rows: %s" % st)
    finally:
        cleanup()


@t.case
def frozen_server_shutdown_bounded(tmp):
    """PostgreSQL stops answering (SIGSTOP) mid-stream: spool's SIGTERM still
    ends within shutdown_timeout (3s) + 2s: stop() shuts the socket down
    (libpq's PQcancel would wait for the frozen server for ever). After
    SIGCONT, a restart delivers the rest exactly once."""
    frozen = False
    try:
        pg = PgServer(tmp)
        pg.sql(LOGS)
        path = os.path.join(tmp, "app.log")
        n = N // 4
        write_seq(path, 1, n)
        cfg = config(tmp, pg, path, shutdown_timeout="3s", extra_out="    max_records: 1000")
        s = spool_run(cfg)
        spoolt.wait_for(lambda: pg.count() >= n // 10, timeout=120, interval=0.1, what="rows")
        pg.freeze(signal.SIGSTOP)
        frozen = True
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
        check(s.proc.poll() is not None, "spool still running %.1fs after SIGTERM" % took)
        print("     SIGTERM with the server frozen: spool exited in %.1fs" % took, flush=True)
        check(took < 3 + 2 + 3, "shutdown took %.1fs" % took)
        pg.freeze(signal.SIGCONT)
        frozen = False
        s = spool_run(cfg)
        spoolt.wait_for(lambda: pg.count() >= n, timeout=120, interval=0.2, what="%d rows" % n)
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        st = seq_stats(pg)
        check(st == {"rows": n, "distinct": n, "dup": 0, "min": 1, "max": n}, "rows: %s" % st)
    finally:
        if frozen:
            pg.freeze(signal.SIGCONT)
        cleanup()


@t.case
def transient_error_keeps_order(tmp):
    """One chunk fails once with a serialization failure (40001, raised by a
    trigger the first time it sees seq 5000) while later chunks of the same
    partition are already in the log: they must not be committed before it
    (their offsets would make its retry skip its records). The log is filled
    before the output starts, so the next chunks are there when it fails."""
    try:
        pg = shared_pg(tmp)
        pg.sql(LOGS)
        pg.sql("CREATE SEQUENCE once; CREATE FUNCTION fail_once() RETURNS trigger AS $$ BEGIN "
               "IF NEW.seq = 5000 AND nextval('once') = 1 THEN RAISE EXCEPTION 'transient' "
               "USING ERRCODE = '40001'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; "
               "CREATE TRIGGER fail_once BEFORE INSERT ON logs FOR EACH ROW "
               "EXECUTE FUNCTION fail_once()")
        path = os.path.join(tmp, "app.log")
        n = 20000
        write_seq(path, 1, n)
        cfg = config(tmp, pg, path)
        text = open(cfg).read()
        head, out = text.split("outputs:\n", 1)
        spoolt.write(cfg, head + "outputs:\n  - {type: file, name: devnull, topics: [t], "
                     "path: /dev/null}\n")
        s = spool_run(cfg)
        spoolt.wait_for(lambda: lag(cfg, "devnull") == 0 and end_offset(cfg) >= n, timeout=60,
                        what="the log holds every line")
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        spoolt.write(cfg, head + "outputs:\n" + out.replace("    topics: [t]\n",
                                                           "    topics: [t]\n"
                                                           "    max_records: 1000\n"))
        s = spool_run(cfg)
        spoolt.wait_for(lambda: lag(cfg, "pg") == 0, timeout=60, what="pg caught up")
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        check("SQLSTATE 40001" in s.stderr(), "the transient error did not happen")
        st = seq_stats(pg)
        check(st == {"rows": n, "distinct": n, "dup": 0, "min": 1, "max": n}, "rows: %s" % st)
    finally:
        cleanup()


@t.case
def missing_table_or_column(tmp):
    try:
        pg = shared_pg(tmp)
        pg.sql("CREATE TABLE logs (seq bigint, host text)")
        path = os.path.join(tmp, "app.log")
        write_seq(path, 1, 10)
        cfg = config(tmp, pg, path, columns="{seq: value, host: host, nope: path}")
        r = spoolt.run(["check", "-c", cfg])
        check(r.returncode == 0, "spool check connects? %s" % r.stderr.decode())
        r = spoolt.run(["run", "-c", cfg], timeout=60)
        err = r.stderr.decode()
        check(r.returncode != 0, "spool run started with a missing column")
        check('columns: table "logs" has no column "nope"' in err, "message: %s" % err[-1500:])
        cfg = config(tmp, pg, path, table="nolog")
        r = spoolt.run(["run", "-c", cfg], timeout=60)
        err = r.stderr.decode()
        check(r.returncode != 0 and 'table: no table "nolog" in the database' in err,
              "missing table: %s" % err[-1500:])
        cfg = config(tmp, pg, path)
        edit(cfg, pg.url, "'host=127.0.0.1 port'")
        r = spoolt.run(["check", "-c", cfg])
        err = r.stderr.decode()
        check(r.returncode == 2 and "conninfo: invalid connection string" in err,
              "bad conninfo: %s" % err)
        cfg = config(tmp, pg, path, columns="{}")
        r = spoolt.run(["check", "-c", cfg])
        check(r.returncode == 2 and "columns" in r.stderr.decode(), r.stderr.decode())
    finally:
        cleanup()


@t.case
def escaping_and_types(tmp):
    try:
        pg = shared_pg(tmp)
        pg.sql("CREATE TABLE logs (seq bigint, msg text, raw bytea, ts timestamptz, "
               "day date, tsms bigint, nohdr text, topic text)")
        path = os.path.join(tmp, "app.log")
        lines = ["a\tb", "back\\slash \\N", "caf\u00e9 \u2603", "\\.", "", "x" * 5000]
        with open(path, "w") as f:
            for l in lines:
                f.write(l + "\n")
        t0 = int(time.time() * 1000)
        cfg = config(tmp, pg, path, columns="{msg: value, raw: value, ts: timestamp, "
                     "day: timestamp, tsms: timestamp, nohdr: nosuchheader, topic: topic}")
        s = spool_run(cfg)
        spoolt.wait_for(lambda: pg.count() >= len(lines), timeout=60, what="rows")
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        got = pg.sql("SELECT encode(convert_to(msg, 'UTF8'), 'hex'), encode(raw, 'hex'), "
                     "(extract(epoch from ts) * 1000)::bigint - tsms, day = (ts AT TIME ZONE "
                     "'UTC')::date, nohdr IS NULL, topic FROM logs ORDER BY tsms, length(msg)")
        rows = [r.split("|") for r in got.strip("\n").split("\n")]
        check(len(rows) == len(lines), "rows: %s" % rows)
        want = sorted(l.encode().hex() for l in lines)
        check(sorted(r[0] for r in rows) == want, "text round trip: %s" % rows)
        check(sorted(r[1] for r in rows) == want, "bytea round trip")
        check(all(r[2:] == ["0", "t", "t", "t"] for r in rows), "types: %s" % rows)
        lo = int(pg.sql("SELECT min(tsms) FROM logs").strip())
        check(abs(lo - t0) < 600000, "timestamp %d vs now %d" % (lo, t0))
    finally:
        cleanup()


@t.case
def bad_value_dead_lettered(tmp):
    try:
        pg = shared_pg(tmp)
        pg.sql(LOGS)
        path = os.path.join(tmp, "app.log")
        with open(path, "w") as f:
            for i in range(1, 31):
                f.write("%s\n" % (i if i != 17 else "seventeen"))
        dead = os.path.join(tmp, "dead.out")
        cfg = config(tmp, pg, path, extra_out="    max_records: 10\n    dead_letter_topic: dead",
                     extra_top="  dead: {partitions: 1}",
                     outputs_extra="  - {type: file, topics: [dead], path: %s, format: json}"
                     % dead)
        s = spool_run(cfg)
        spoolt.wait_for(lambda: len(spoolt.read_lines(dead)) + pg.count() >= 30,
                        timeout=60, what="30 rows and dead letters")
        check(s.terminate(60) == 0, s.stderr()[-2000:])
        recs = [json.loads(l) for l in spoolt.read_lines(dead)]
        reason = recs[0]["headers"].get("dead_letter.reason", "")
        check("invalid input syntax for type bigint" in reason and "offset 16" in reason,
              "reason: %r" % reason)
        values = [r["value"] for r in recs]
        check("seventeen" in values and len(values) <= 10, "dead letters: %s" % values)
        st = seq_stats(pg)
        check(st["rows"] == 30 - len(values) and st["dup"] == 0, "rows: %s" % st)
    finally:
        cleanup()


if __name__ == "__main__":
    t.main()
