"""Exactly once from agent to aggregator (issue 17): an agent tails a file of
numbered lines and ships it with the `http` output (native format, producer
id) to an aggregator (a second spool process, `http` input). The agent and
the aggregator are each killed -9 three times, in a seeded random order, at
seeded random points of the stream; after each kill the process is started
again. At the end the aggregator's log, read back with `spool read`, holds
every line exactly once.

Kill points are counts of distinct lines the aggregator has written out
(its `file` output, read incrementally), spread over the first 90% of the
stream; the writer parks there until the last kill. Each point is always
reachable (distinct lines only grow, and every line before the gate arrives
however slowly the machine runs or late a kill lands), so the kills happen
in order, mid-stream or at the gate, never waiting for lines that cannot
come. (Counting records since the last restart, as this test once did, could
ask for more lines than were left before the gate after a late kill.)
Set SPOOL_EO_SEED to replay a run.

spool-test-requires: http, tail
"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
from test_http_e2e import metric_sum, stop_all  # noqa: E402

SLOW = 3.0 if spoolt.SANITIZE else 1.0
N = 60000 if spoolt.SANITIZE else 500000
SEED = int(os.environ.get("SPOOL_EO_SEED", "17"))


def aggregator_config(tmp, name, port, api, out):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "spool.yaml")
    spoolt.write(cfg, """
service:
  data_dir: %(d)s/data
  log_level: info
  http: { listen: 127.0.0.1:%(api)d }
topics:
  logs:
    partitions: 2
    fsync: always
inputs:
  - type: http
    name: ingest
    topic: logs
    listen: 127.0.0.1:%(port)d
outputs:
  - type: file
    name: progress
    topics: [logs]
    path: %(out)s
    format: raw
""" % {"d": d, "port": port, "api": api, "out": out})
    return cfg


def agent_config(tmp, name, logdir, urls_yaml, extra=""):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "spool.yaml")
    spoolt.write(cfg, """
service:
  data_dir: %(d)s/data
  log_level: info
topics:
  app:
    partitions: 2
    fsync: 100ms
inputs:
  - type: tail
    name: files
    topic: app
    paths: ["%(logdir)s/*.log"]
    read_from: beginning
outputs:
  - type: http
    name: ship
    topics: [app]
    %(urls)s
    max_bytes: 128KiB
    max_in_flight: 2
    retry_backoff: 50ms
    retry_backoff_max: 300ms
%(extra)s
""" % {"d": d, "logdir": logdir, "urls": urls_yaml, "extra": extra})
    return cfg


class Writer(threading.Thread):
    """Appends lines "<seq>" 1..n to <logdir>/app.log, `batch` at a time;
    parks at gate_at until release() (bounded)."""

    def __init__(self, logdir, n, gate_at, batch=5000, pause=0.01):
        super().__init__(daemon=True)
        os.makedirs(logdir, exist_ok=True)
        self.path = os.path.join(logdir, "app.log")
        self.n, self.gate_at, self.batch, self.pause = n, gate_at, batch, pause
        self.gate = threading.Event()

    def release(self):
        self.gate.set()

    def run(self):
        with open(self.path, "ab") as f:
            seq = 1
            while seq <= self.n:
                end = min(self.n, seq + self.batch - 1)
                if seq <= self.gate_at < end:
                    end = self.gate_at
                f.write(b"".join(b"%d\n" % i for i in range(seq, end + 1)))
                f.flush()
                seq = end + 1
                if end == self.gate_at:
                    self.gate.wait(600)
                # Rate-limits the generator (a stream, not one burst); not synchronization.
                time.sleep(self.pause)


def unique_in(path):
    seen = set()
    for line in spoolt.read_lines(path):
        if line.isdigit():
            seen.add(int(line))
    return len(seen)


class UniqueCounter:
    """Distinct numbered lines in an append-only file, read incrementally."""

    def __init__(self, path):
        self.path, self.off, self.rest, self.seen = path, 0, b"", set()

    def count(self):
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
            self.off += len(data)
            lines = (self.rest + data).split(b"\n")
            self.rest = lines.pop()
            self.seen.update(int(x) for x in lines if x.isdigit())
        return len(self.seen)


def read_log(cfg, topic="logs"):
    """Every value in the topic, via `spool read` (the process must be stopped)."""
    r = spoolt.run(["read", topic, "-c", cfg, "--format", "%v\\n"], timeout=300)
    check(r.returncode == 0, "spool read failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    return [int(v) for v in r.stdout.split()]


def count_log(values, n):
    seen = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    lost = sum(1 for i in range(1, n + 1) if i not in seen)
    dup = sum(c - 1 for c in seen.values())
    return lost, dup


def agg_records(api):
    """Records the aggregator's http input took since it started (its /metrics)."""
    v = metric_sum(api, "spool_records_in_total", kind="input", name="ingest")
    return v or 0


def wait_all(out, n, procs, timeout):
    def done():
        for p in procs:
            if p.proc.poll() is not None:
                raise spoolt.Failure("spool exited early (%s); stderr:\n%s"
                                     % (p.proc.returncode, p.stderr()[-3000:]))
        return unique_in(out) >= n
    spoolt.wait_for(done, timeout=timeout * SLOW, interval=0.5,
                    what="%d unique records at the aggregator" % n)


t = spoolt.Suite(__file__)


@t.case
def kill9_both_sides_three_times(tmp):
    rng = random.Random(SEED)
    port, api = spoolt.free_port(), spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    logdir = os.path.join(tmp, "logs")
    agg_cfg = aggregator_config(tmp, "agg", port, api, out)
    agent_cfg = agent_config(tmp, "agent", logdir,
                             "url: http://127.0.0.1:%d/v1/batches" % port)
    gate = N * 9 // 10
    w = Writer(logdir, N, gate_at=gate)
    agg = spoolt.Spool(agg_cfg)
    agent = spoolt.Spool(agent_cfg)
    order = ["agent", "agg"] * 3
    rng.shuffle(order)
    span = gate // (len(order) + 1)
    points = [(k + 1) * span + rng.randint(-span // 4, span // 4) for k in range(len(order))]
    seen = UniqueCounter(out)
    try:
        w.start()
        for who, point in zip(order, points):
            spoolt.wait_for(lambda: seen.count() >= point, timeout=120 * SLOW,
                            interval=0.02, what="%d distinct lines at the aggregator" % point)
            at = seen.count()
            if who == "agent":
                agent.kill()
                agent = spoolt.Spool(agent_cfg)
            else:
                agg.kill()
                agg = spoolt.Spool(agg_cfg)
            print("     killed -9 the %s at %d distinct lines out; started it again" % (who, at))
        w.release()
        wait_all(out, N, (agg, agent), 120)
        dups = metric_sum(api, "spool_http_duplicates_total", name="ingest")
        overlaps = metric_sum(api, "spool_http_overlaps_total", name="ingest")
        stop_all(agent, agg)
        values = read_log(agg_cfg)
        lost, dup = count_log(values, N)
        print("     %d records in the aggregator's log: %d lost, %d duplicated "
              "(requests acknowledged as duplicates since the last restart: %s, overlaps: %s)"
              % (len(values), lost, dup, dups, overlaps))
        check(lost == 0, "%d records lost" % lost)
        check(dup == 0, "%d records duplicated" % dup)
    finally:
        w.release()
        agent.kill()
        agg.kill()


@t.case
def copied_data_dir_gets_a_new_producer_id(tmp):
    """A copy of an agent's data directory must not pass for the same
    producer: the original and the copy would send different records at the
    same offsets, and the aggregator would drop the copy's as duplicates."""
    import shutil
    port, api = spoolt.free_port(), spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    logdir, logdir2 = os.path.join(tmp, "logs"), os.path.join(tmp, "logs2")
    os.makedirs(logdir)
    os.makedirs(logdir2)
    spoolt.write(os.path.join(logdir, "app.log"), "".join("%d\n" % i for i in range(1, 101)))
    agg = spoolt.Spool(aggregator_config(tmp, "agg", port, api, out))
    cfg = agent_config(tmp, "agent", logdir, "url: http://127.0.0.1:%d/v1/batches" % port)
    # One partition: the original's and the copy's new records share offsets.
    spoolt.write(cfg, open(cfg).read().replace("partitions: 2", "partitions: 1"))
    agent = spoolt.Spool(cfg)
    copy = None
    try:
        spoolt.wait_for(lambda: unique_in(out) >= 100, timeout=60 * SLOW, what="100 records")
        stop_all(agent)
        idfile = os.path.join(tmp, "agent", "data", "producer.id")
        first = open(idfile).read()
        check(first.startswith("spool producer id\nid "), "producer.id: %r" % first)
        shutil.copytree(os.path.join(tmp, "agent"), os.path.join(tmp, "copy"))
        # The original goes on with lines 101..150 (its log offsets 100..149),
        # in a file the copy does not follow.
        spoolt.write(os.path.join(logdir, "b.log"), "".join("%d\n" % i for i in range(101, 151)))
        agent = spoolt.Spool(cfg)
        spoolt.wait_for(lambda: unique_in(out) >= 150, timeout=60 * SLOW, what="150 records")
        stop_all(agent)
        check(open(idfile).read() == first, "the id changed across a restart")
        # The copy reads a file of its own: 1001..1050, also at offsets 100..149.
        ccfg = os.path.join(tmp, "copy", "spool.yaml")
        spoolt.write(ccfg, open(cfg).read().replace(os.path.join(tmp, "agent"),
                                                    os.path.join(tmp, "copy"))
                     .replace(logdir, logdir2))
        spoolt.write(os.path.join(logdir2, "app.log"),
                     "".join("%d\n" % i for i in range(1001, 1051)))
        copy = spoolt.Spool(ccfg)
        spoolt.wait_for(lambda: unique_in(out) >= 200, timeout=60 * SLOW,
                        what="the copy's 50 records at the aggregator (have %d of 200)"
                        % unique_in(out))
        print("     duplicates acknowledged: %s, gaps: %s" % (
            metric_sum(api, "spool_http_duplicates_total", name="ingest"),
            metric_sum(api, "spool_http_gaps_total", name="ingest")))
        stop_all(copy)
        second = open(os.path.join(tmp, "copy", "data", "producer.id")).read()
        check(second.split("\n")[1] != first.split("\n")[1],
              "the copy kept the producer id: %r" % second)
        check("new producer id" in copy.stderr(), "no new id logged:\n%s" % copy.stderr()[-2000:])
    finally:
        agent.kill()
        agg.kill()
        if copy:
            copy.kill()


if __name__ == "__main__":
    t.main()
