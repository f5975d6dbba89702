"""Agent -> aggregator over HTTP, end to end, with two (or more) real spool
processes: agents tail files and ship with the `http` output (native
format), the aggregator takes them with the `http` input, makes them durable
(fsync: always) and writes them with the `file` output. A sequence checker
counts lost, duplicated and out-of-order records per key.

Cases: all records arrive in per-key order; kill -9 of the aggregator
mid-stream (0 lost, duplicates counted); kill -9 of the agent mid-stream
(0 lost); the aggregator down for a while (the agent buffers, uses no CPU,
then delivers everything); ten agents into one aggregator.

The helpers at the top are shared with test_http_errors.py.
"""
import os
import re
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402

SLOW = 3.0 if spoolt.SANITIZE else 1.0
# In a build with the http plugins as external modules (-DSPOOL_WITH_HTTP=MODULE,
# scripts/test stage plugins-off) tests/CMakeLists.txt sets SPOOL_PLUGIN_DIR to
# where they are, and every config names it; with http built in it is unset.
PLUGIN_DIR = os.environ.get("SPOOL_PLUGIN_DIR", "")
SERVICE_EXTRA = "  plugin_dir: %s\n" % PLUGIN_DIR if PLUGIN_DIR else ""
LINE_RE = re.compile(rb"^(\S+) (\d+)$")


# ---------------------------------------------------------------- configs

def aggregator_config(tmp, port, out_path, extra_input="", name="agg", topic_extra="",
                      json_out=None, outputs_extra=""):
    """An aggregator: http input -> topic `logs` (fsync: always) -> `file`
    output (raw) at out_path, and with json_out a second file output
    writing JSON (key, headers...)."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "spool.yaml")
    spoolt.write(cfg, """
service:
  data_dir: %(d)s/data
  log_level: info
%(service_extra)stopics:
  logs:
    partitions: 4
    fsync: always
%(topic_extra)s
inputs:
  - type: http
    name: ingest
    topic: logs
    listen: 127.0.0.1:%(port)d
%(extra_input)s
outputs:
  - type: file
    name: archive
    topics: [logs]
    path: %(out)s
    format: raw
%(json)s%(outputs_extra)s""" % {"d": d, "port": port, "out": out_path, "service_extra": SERVICE_EXTRA,
       "extra_input": extra_input, "topic_extra": topic_extra, "outputs_extra": outputs_extra,
       "json": ("  - type: file\n    name: as-json\n    topics: [logs]\n    path: %s\n"
                "    format: json\n" % json_out) if json_out else ""})
    return cfg


def agent_config(tmp, name, port, logdir, extra_output="", topics_extra="", outputs_extra="",
                 scheme="http", api_port=None):
    """An agent: tail <logdir>/*.log -> topic `app` -> `http` output `ship`
    to the aggregator on port; with api_port, its /metrics there."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "spool.yaml")
    spoolt.write(cfg, """
service:
  data_dir: %(d)s/data
  log_level: info
%(service_extra)s%(api)s
topics:
  app:
    partitions: 2
    fsync: 200ms
%(topics_extra)s
inputs:
  - type: tail
    name: files
    topic: app
    paths: ["%(logdir)s/*.log"]
    read_from: beginning
    key: "{{ file }}"
outputs:
  - type: http
    name: ship
    topics: [app]
    url: %(scheme)s://127.0.0.1:%(port)d/v1/batches
    max_bytes: 256KiB
    retry_backoff: 50ms
    retry_backoff_max: 500ms
%(extra_output)s
%(outputs_extra)s
""" % {"d": d, "port": port, "logdir": logdir, "extra_output": extra_output,
       "service_extra": SERVICE_EXTRA,
       "topics_extra": topics_extra, "outputs_extra": outputs_extra, "scheme": scheme,
       "api": "  http: { listen: 127.0.0.1:%d }" % api_port if api_port else ""})
    return cfg


def metric_sum(api_port, metric, **labels):
    """The sum of the samples of `metric` whose labels include `labels`
    on spool's /metrics at api_port; None while it does not answer."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % api_port, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def ship_errors(api_port):
    """Failed POSTs of the agent's `ship` output so far (waits, bounded, for
    its /metrics to answer)."""
    got = []

    def answered():
        v = metric_sum(api_port, "spool_errors_total", kind="output", name="ship")
        if v is not None:
            got.append(v)
        return v is not None
    spoolt.wait_for(answered, timeout=30 * SLOW, what="the agent's /metrics")
    return got[-1]


# ---------------------------------------------------------------- data

class Writer(threading.Thread):
    """Appends "<key> <seq>" lines to <dir>/<key>.log for each key, `n` per
    key, `batch` lines at a time with a pause between: a stream. With
    gate_at, it stops once it wrote that many per key and waits for
    release(): a test kills a process "mid-stream" while the writer is
    parked there, so the stream goes on after the kill however slow the
    machine is."""

    def __init__(self, logdir, keys, n, batch=200, pause=0.01, gate_at=None):
        super().__init__(daemon=True)
        self.logdir, self.keys, self.n, self.batch, self.pause = logdir, keys, n, batch, pause
        self.gate_at = gate_at
        self.gate = threading.Event()
        self.parked = threading.Event()
        os.makedirs(logdir, exist_ok=True)
        self.written = 0

    def release(self):
        self.gate.set()

    def run(self):
        files = {k: open(os.path.join(self.logdir, "%s.log" % k), "ab") for k in self.keys}
        seq = 1
        while seq <= self.n:
            end = min(self.n, seq + self.batch - 1)
            if self.gate_at is not None and seq <= self.gate_at < end:
                end = self.gate_at
            for k, f in files.items():
                f.write(b"".join(b"%s %d\n" % (k.encode(), i) for i in range(seq, end + 1)))
                f.flush()
            self.written = end
            seq = end + 1
            if end == self.gate_at:
                self.parked.set()
                self.gate.wait(600)  # bounded; the test releases it right after its kill
            # Rate-limits the generator (a stream, not one burst); not synchronization.
            time.sleep(self.pause)
        for f in files.values():
            f.close()


def write_all(logdir, keys, n):
    w = Writer(logdir, keys, n, batch=n, pause=0)
    w.run()


def parse_out(path):
    """{key: [seq, ...]} in file order, plus the count of unparsable lines."""
    per = {}
    bad = 0
    for line in spoolt.read_lines(path):
        m = LINE_RE.match(line)
        if not m:
            bad += 1
            continue
        per.setdefault(m.group(1).decode(), []).append(int(m.group(2)))
    return per, bad


def check_seq(per, keys, n):
    """Per key: lost, duplicated, and order of first occurrences."""
    res = {"lost": 0, "dup": 0, "disorder": 0, "count": 0}
    for k in keys:
        vals = per.get(k, [])
        seen = set()
        last_first = 0
        for v in vals:
            res["count"] += 1
            if v in seen:
                res["dup"] += 1
                continue
            seen.add(v)
            if v < last_first:
                res["disorder"] += 1
            last_first = v
        res["lost"] += sum(1 for i in range(1, n + 1) if i not in seen)
    return res


def read_json(path):
    import json
    return [json.loads(line) for line in spoolt.read_lines(path)]


def unique_count(path):
    per, _ = parse_out(path)
    return sum(len(set(v)) for v in per.values())


def wait_unique(path, total, timeout, procs=()):
    def done():
        for p in procs:
            if p.proc.poll() is not None:
                raise spoolt.Failure("spool exited early (%s); stderr:\n%s"
                                     % (p.proc.returncode, p.stderr()[-3000:]))
        return unique_count(path) >= total
    spoolt.wait_for(done, timeout=timeout * SLOW, interval=0.2,
                    what="%d unique records in %s (have %d)" % (total, path, unique_count(path)))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the comm field: state is [0]; utime is field 14 -> index 11, stime 15 -> 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_all(*procs):
    for p in procs:
        if p is not None and p.proc.poll() is None:
            rc = p.terminate(60)
            check(rc == 0, "spool exit code %s; stderr:\n%s" % (rc, p.stderr()[-3000:]))


# ---------------------------------------------------------------- cases

t = spoolt.Suite(__file__)


@t.case
def all_records_arrive_in_order(tmp):
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    keys = ["k1", "k2", "k3"]
    n = 3000
    logdir = os.path.join(tmp, "logs")
    write_all(logdir, keys, n)
    jout = os.path.join(tmp, "agg.json")
    agg = spoolt.Spool(aggregator_config(tmp, port, out, json_out=jout))
    # Several requests in flight (one per partition at a time): order still holds.
    agent = spoolt.Spool(agent_config(tmp, "agent", port, logdir,
                                      extra_output="    max_in_flight: 4\n"))
    try:
        wait_unique(out, n * len(keys), 60, (agg, agent))
        stop_all(agent, agg)
        per, bad = parse_out(out)
        res = check_seq(per, keys, n)
        print("     %s" % res)
        check(bad == 0, "%d unparsable lines" % bad)
        check(res["lost"] == 0, "lost %s" % res)
        check(res["disorder"] == 0, "per-key order broken: %s" % res)
        check(res["dup"] == 0, "duplicates without any failure: %s" % res)
        # The aggregator kept the agent's key and headers and added its address.
        recs = read_json(jout)
        check(len(recs) == n * len(keys), "json output has %d records" % len(recs))
        r0 = recs[0]
        check(r0["headers"].get("agent") == "127.0.0.1", "agent header: %s" % r0)
        check(r0["headers"].get("path", "").startswith(logdir), "path header: %s" % r0)
        check("host" in r0["headers"] and "input" in r0["headers"], "headers: %s" % r0)
        check(r0["key"] == r0["value"].split()[0] + ".log", "key not kept: %s" % r0)
        # The aggregator partitions by the agent's key: one partition per key.
        parts = {}
        for r in recs:
            parts.setdefault(r["key"], set()).add(r["partition"])
        check(all(len(p) == 1 for p in parts.values()), "a key spread over partitions: %s" % parts)
    finally:
        agent.kill()
        agg.kill()


@t.case
def kill9_aggregator_mid_stream(tmp):
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    keys = ["a", "b"]
    n = 20000
    logdir = os.path.join(tmp, "logs")
    # The writer parks at n/2 until after the kill: the kill is mid-stream
    # (the second half is written after it) on any machine.
    w = Writer(logdir, keys, n, batch=200, pause=0.05, gate_at=n // 2)
    agg_cfg = aggregator_config(tmp, port, out)
    api = spoolt.free_port()
    agg = spoolt.Spool(agg_cfg)
    agent = spoolt.Spool(agent_config(tmp, "agent", port, logdir, api_port=api,
                                      extra_output="    max_in_flight: 4\n"))
    try:
        w.start()
        spoolt.wait_for(lambda: unique_count(out) > 2000, timeout=60 * SLOW,
                        what="the stream to start")
        errors0 = ship_errors(api)
        agg.kill()  # SIGKILL mid-stream
        print("     killed the aggregator with %d of %d unique records delivered"
              % (unique_count(out), n * len(keys)))
        # The rest of the stream is written while the aggregator is down, and
        # the agent sees it gone (a failed POST) before it comes back.
        w.release()
        spoolt.wait_for(lambda: ship_errors(api) > errors0, timeout=60 * SLOW,
                        what="the agent to count a failed POST after the kill")
        agg = spoolt.Spool(agg_cfg)
        w.join(120 * SLOW)
        check(not w.is_alive(), "the writer did not finish")
        wait_unique(out, n * len(keys), 120, (agg, agent))
        stop_all(agent, agg)
        per, bad = parse_out(out)
        res = check_seq(per, keys, n)
        print("     kill -9 aggregator: %s (duplicates are allowed)" % res)
        check(res["lost"] == 0, "lost records: %s" % res)
        check(res["disorder"] == 0, "per-key order broken: %s" % res)
    finally:
        agent.kill()
        agg.kill()


@t.case
def kill9_agent_mid_stream(tmp):
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    keys = ["a", "b"]
    n = 20000
    logdir = os.path.join(tmp, "logs")
    # The writer parks at n/2 until after the kill (see Writer).
    w = Writer(logdir, keys, n, batch=200, pause=0.05, gate_at=n // 2)
    agent_cfg = agent_config(tmp, "agent", port, logdir)
    agg = spoolt.Spool(aggregator_config(tmp, port, out))
    agent = spoolt.Spool(agent_cfg)
    try:
        w.start()
        spoolt.wait_for(lambda: unique_count(out) > 2000, timeout=60 * SLOW,
                        what="the stream to start")
        agent.kill()  # SIGKILL; returns once the process is reaped (its lock is free)
        print("     killed the agent with %d of %d unique records delivered"
              % (unique_count(out), n * len(keys)))
        agent = spoolt.Spool(agent_cfg)
        w.release()
        w.join(120 * SLOW)
        check(not w.is_alive(), "the writer did not finish")
        wait_unique(out, n * len(keys), 120, (agg, agent))
        stop_all(agent, agg)
        per, bad = parse_out(out)
        res = check_seq(per, keys, n)
        print("     kill -9 agent: %s (duplicates are allowed)" % res)
        check(res["lost"] == 0, "lost records: %s" % res)
        check(res["disorder"] == 0, "per-key order broken: %s" % res)
    finally:
        agent.kill()
        agg.kill()


@t.case
def aggregator_down_agent_buffers_without_cpu(tmp):
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    keys = ["x"]
    n = 5000
    logdir = os.path.join(tmp, "logs")
    write_all(logdir, keys, n)
    api = spoolt.free_port()
    agent = spoolt.Spool(agent_config(tmp, "agent", port, logdir, api_port=api))
    agg = None
    try:
        # The agent has read everything into its log and failed a few POSTs.
        def settled():
            if agent.proc.poll() is not None:
                raise spoolt.Failure("agent exited: %s" % agent.stderr()[-2000:])
            end = metric_sum(api, "spool_partition_end_offset", topic="app")
            return end is not None and end >= n and ship_errors(api) >= 3
        spoolt.wait_for(settled, timeout=60 * SLOW, interval=0.1,
                        what="the agent to log %d records and fail 3 POSTs" % n)
        c0 = cpu_seconds(agent.proc.pid)
        # Not synchronization: a measurement over a fixed span (CPU used while
        # nothing can happen but retries).
        time.sleep(5.0)
        c1 = cpu_seconds(agent.proc.pid)
        used = c1 - c0
        print("     agent CPU while the aggregator was down: %.3f s over 5 s" % used)
        check(used < 0.5 * SLOW, "agent used %.2f s CPU in 5 s waiting (spinning?)" % used)
        check(not os.path.exists(out) or unique_count(out) == 0, "records arrived early?")
        agg = spoolt.Spool(aggregator_config(tmp, port, out))
        wait_unique(out, n, 60, (agg, agent))
        stop_all(agent, agg)
        res = check_seq(parse_out(out)[0], keys, n)
        check(res["lost"] == 0 and res["disorder"] == 0, "after the outage: %s" % res)
    finally:
        agent.kill()
        if agg:
            agg.kill()


@t.case
def ten_agents_one_aggregator(tmp):
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    n = 2000
    agents = []
    agg = spoolt.Spool(aggregator_config(tmp, port, out))
    try:
        keys_all = []
        for i in range(10):
            logdir = os.path.join(tmp, "logs%d" % i)
            keys = ["agent%d" % i]
            keys_all += keys
            write_all(logdir, keys, n)
            # Half of them keep their log compressed: those batches travel as stored.
            agents.append(spoolt.Spool(agent_config(
                tmp, "agent%d" % i, port, logdir,
                topics_extra="    compression: zstd\n" if i % 2 else "")))
        wait_unique(out, n * 10, 120, [agg] + agents)
        stop_all(*agents)
        stop_all(agg)
        per, bad = parse_out(out)
        res = check_seq(per, keys_all, n)
        print("     ten agents: %s" % res)
        check(res["lost"] == 0 and res["disorder"] == 0 and bad == 0, "ten agents: %s" % res)
    finally:
        for a in agents:
            a.kill()
        agg.kill()


if __name__ == "__main__":
    t.main()
