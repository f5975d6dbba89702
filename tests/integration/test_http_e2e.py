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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402

SLOW = 3.0 if spoolt.SANITIZE else 1.0
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
topics:
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
%(json)s%(outputs_extra)s""" % {"d": d, "port": port, "out": out_path,
       "extra_input": extra_input, "topic_extra": topic_extra, "outputs_extra": outputs_extra,
       "json": ("  - type: file\n    name: as-json\n    topics: [logs]\n    path: %s\n"
                "    format: json\n" % json_out) if json_out else ""})
    return cfg


def agent_config(tmp, name, port, logdir, extra_output="", topics_extra="", outputs_extra="",
                 scheme="http"):
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
       "topics_extra": topics_extra, "outputs_extra": outputs_extra, "scheme": scheme})
    return cfg


# ---------------------------------------------------------------- data

class Writer(threading.Thread):
    """Appends "<key> <seq>" lines to <dir>/<key>.log for each key, `n` per
    key, `batch` lines at a time with a pause between: a stream."""

    def __init__(self, logdir, keys, n, batch=200, pause=0.01):
        super().__init__(daemon=True)
        self.logdir, self.keys, self.n, self.batch, self.pause = logdir, keys, n, batch, pause
        os.makedirs(logdir, exist_ok=True)
        self.written = 0

    def run(self):
        files = {k: open(os.path.join(self.logdir, "%s.log" % k), "ab") for k in self.keys}
        seq = 1
        while seq <= self.n:
            end = min(self.n, seq + self.batch - 1)
            for k, f in files.items():
                f.write(b"".join(b"%s %d\n" % (k.encode(), i) for i in range(seq, end + 1)))
                f.flush()
            self.written = end
            seq = end + 1
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
    w = Writer(logdir, keys, n, batch=200, pause=0.05)
    agg_cfg = aggregator_config(tmp, port, out)
    agg = spoolt.Spool(agg_cfg)
    agent = spoolt.Spool(agent_config(tmp, "agent", port, logdir,
                                      extra_output="    max_in_flight: 4\n"))
    try:
        w.start()
        spoolt.wait_for(lambda: unique_count(out) > 2000, timeout=60 * SLOW,
                        what="the stream to start")
        check(w.is_alive(), "the writer finished before the kill: not mid-stream")
        agg.kill()  # SIGKILL mid-stream
        time.sleep(1.0)
        agg = spoolt.Spool(agg_cfg)
        w.join(120)
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
    w = Writer(logdir, keys, n, batch=200, pause=0.05)
    agent_cfg = agent_config(tmp, "agent", port, logdir)
    agg = spoolt.Spool(aggregator_config(tmp, port, out))
    agent = spoolt.Spool(agent_cfg)
    try:
        w.start()
        spoolt.wait_for(lambda: unique_count(out) > 2000, timeout=60 * SLOW,
                        what="the stream to start")
        check(w.is_alive(), "the writer finished before the kill: not mid-stream")
        agent.kill()
        time.sleep(0.5)
        agent = spoolt.Spool(agent_cfg)
        w.join(120)
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
    agent = spoolt.Spool(agent_config(tmp, "agent", port, logdir))
    agg = None
    try:
        # Let the agent read everything into its log and fail a few POSTs.
        time.sleep(2.0 * SLOW)
        check(agent.proc.poll() is None, "agent exited: %s" % agent.stderr()[-2000:])
        c0 = cpu_seconds(agent.proc.pid)
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
