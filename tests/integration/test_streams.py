"""Streams (issue 16: docs/streams.md) against the real binary.

- ssh_alerts_kill9: the issue's pipeline. OpenSSH auth lines generated here (known
  attackers among normal users; rsyslog's high-precision time stamps) are appended to a file
  that `tail` follows; `parse` (format regex) gives each record the fields time, event, user
  and ip and the line's time as timestamp, and the input's `key: "{{ ip }}"` keys it by the
  client address. Three streams read the topic: `threshold` (5 failed logins within 1m),
  `sequence` (>= 5 failed then an accepted login within 10m) and a 1-minute count view.
  The lines are appended in 10 rounds and spool is killed with SIGKILL after each round at a
  random moment (seeded), whatever tail had read by then. The alerts topic
  must equal a Python reference (written here from docs/streams.md, over the input exactly as
  the log stored it) exactly: none missing, none repeated; the closed windows emitted likewise;
  and after each restart, once the streams caught up, `spool query` and GET /api/v1/views
  answer the reference's open windows. Before one restart two snapshots are damaged: they
  are refused and those states rebuilt from the log, with the same results.
- access_view: generated access lines -> a view per path over 1-minute windows with count,
  sum(bytes), p99(latency) and distinct(client): counts and sums exact, p99 within the
  sketch's stated 1% relative error, distinct within the HyperLogLog's stated error (1.625%,
  checked at 4 standard errors).
- idle_tick: a quiet partition gets one tick in the input log after idle_close, which closes
  its windows; a kill -9 replay sees the tick (nothing emitted twice, no second tick).
- late_records: records older than the watermark are counted and copied to late_topic.
- check_positions: `spool check` reports stream errors at file:line:column (an unknown topic,
  a bad condition inside a step with its column, a missing pattern/view), exit 2.

spool-test-requires: http, tail
spool-test-labels: threaded
"""
import json
import os
import random
import re
import signal
import time
import urllib.request

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)

T0 = 1_700_000_000_000
MIN = 60_000


# ---- the auth log ----------------------------------------------------------------------

def auth_lines(seed, n):
    """n (ts_ms, line) in time order: normal users and brute-forcing attackers. The time
    stamp is rsyslog's RSYSLOG_FileFormat (RFC 3339, here to the millisecond)."""
    rnd = random.Random(seed)
    users = ["alice", "bob", "carol", "dave", "erin"]
    normal = ["10.0.%d.%d" % (i // 200, i % 200 + 1) for i in range(60)]
    attackers = ["203.0.113.%d" % i for i in range(1, 9)]
    out, ts = [], T0
    burst = []  # pending attacker events
    while len(out) < n:
        ts += rnd.randint(0, 4000)
        if burst:
            ip, ev = burst.pop(0)
        elif rnd.random() < 0.06:
            ip = rnd.choice(attackers)
            k = rnd.randint(3, 9)
            burst = [(ip, "failed")] * k
            if rnd.random() < 0.5:
                burst.append((ip, "accepted"))
            ip, ev = burst.pop(0)
        else:
            ip = rnd.choice(normal)
            ev = "failed" if rnd.random() < 0.2 else "accepted"
        user = "root" if ip.startswith("203.") else rnd.choice(users)
        stamp = "%s.%03d+00:00" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)),
                                   ts % 1000)
        if ev == "failed":
            line = "%s web1 sshd[%d]: Failed password for %s from %s port %d ssh2" % (
                stamp, 1000 + len(out), user, ip, rnd.randint(1024, 65535))
        else:
            line = "%s web1 sshd[%d]: Accepted password for %s from %s port %d ssh2" % (
                stamp, 1000 + len(out), user, ip, rnd.randint(1024, 65535))
        out.append((ts, line))
    return out


# The parse processor's pattern: each named group becomes a field of the record.
AUTH_PATTERN = (r"^(?<time>\S+) \S+ sshd\[\d+\]: (?<event>Failed|Accepted) password for "
                r"(?<user>\S+) from (?<ip>\S+) port \d+")


def post(port, recs, timeout=60):
    """Posts records until the input answers 200 (durable); retries while spool restarts."""
    body = "".join(json.dumps(r) + "\n" for r in recs).encode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d/v1/batches" % port, data=body,
                                         headers={"Content-Type": "application/x-ndjson"})
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise spoolt.Failure("http input never accepted the batch")
        time.sleep(0.1)  # a retry pause while spool starts, not a synchronization


# ---- the reference (docs/streams.md semantics, independent of the engine) ---------------

def reference(records, nparts):
    """records: the stored input [(partition, offset, ts, key, event)]. Returns (alerts,
    closed, open_windows) as sorted lists of strings / tuples."""
    alerts, closed, open_w = [], [], []
    for p in range(nparts):
        recs = sorted(r for r in records if r[0] == p)
        # threshold: when event == failed; 5 within 60s, then the window restarts.
        th, maxts = {}, None
        for _, _, ts, key, ev in recs:
            if ev == "failed":
                if maxts is None or ts >= maxts:
                    lst = th.setdefault(key, [])
                    lst.append(ts)
                    lst.sort()
                    if len(lst) >= 5 and lst[-1] - lst[-5] < MIN:
                        alerts.append("threshold %s 5 %d %d" % (key, lst[-5], lst[-1]))
                        th[key] = []
            maxts = ts if maxts is None else max(maxts, ts)
        # sequence: >= 5 failed then accepted, all within 10m; a run that spans 10m ends.
        runs, maxts = {}, None
        for _, _, ts, key, ev in recs:
            if maxts is not None and ts < maxts:
                continue  # late (no lateness allowed): not applied
            maxts = ts if maxts is None else max(maxts, ts)
            r = runs.get(key)
            if r and max(ts, r["hi"]) - min(ts, r["lo"]) >= 10 * MIN:
                r = runs[key] = None
            if r:
                take = False
                if r["step"] == 0 and ev == "failed":
                    r["n"] += 1
                    take = True
                elif r["step"] == 0 and ev == "accepted" and r["n"] >= 5:
                    r["step"] = 1
                    take = True
                if take:
                    r["total"] += 1
                    r["lo"], r["hi"] = min(r["lo"], ts), max(r["hi"], ts)
                    if r["step"] == 1:
                        alerts.append("sequence %s %d %d %d" % (key, r["total"], r["lo"], r["hi"]))
                        runs[key] = None
                    continue
            if ev == "failed":
                runs[key] = {"step": 0, "n": 1, "total": 1, "lo": ts, "hi": ts}
        # the view: 1-minute tumbling windows per key; closed when watermark >= end.
        wins, maxts = {}, None
        for _, _, ts, key, ev in recs:
            if maxts is not None and ts < maxts:
                continue
            maxts = ts if maxts is None else max(maxts, ts)
            st = ts // MIN * MIN
            wins[(key, st)] = wins.get((key, st), 0) + 1
            for (k, s) in [w for w in wins if w[1] + MIN <= maxts]:
                closed.append("%s %d %d" % (k, s, wins.pop((k, s))))
        open_w += [(k, s, c) for (k, s), c in wins.items()]
    return sorted(alerts), sorted(closed), sorted(open_w)


# ---- running spool ---------------------------------------------------------------------

def conf(tmp, http_port, extra=""):
    return f"""service:
  data_dir: {tmp}/data
  shutdown_timeout: 20s
  http: {{listen: 127.0.0.1:{http_port}}}
topics:
  auth: {{partitions: 2}}
  alerts: {{partitions: 1}}
  windows: {{partitions: 1}}
inputs:
  - type: tail
    name: sshd
    topic: auth
    paths: [{tmp}/auth.log]
    read_from: beginning
    key: "{{{{ ip }}}}"
    processors:
      - type: parse
        format: regex
        pattern: '{AUTH_PATTERN}'
        timestamp: {{field: time, format: rfc3339}}
        on_error: drop
streams:
  - name: bruteforce
    from: auth
    key: "{{{{ ip }}}}"
    when: 'event == "Failed"'
    pattern: {{type: threshold, count: 5, within: 1m}}
    emit:
      topic: alerts
      key: "{{{{ key }}}}"
      value: "threshold {{{{ key }}}} {{{{ count }}}} {{{{ first_ts }}}} {{{{ last_ts }}}}"
    snapshot_every: 97
  - name: breakin
    from: auth
    key: "{{{{ ip }}}}"
    pattern:
      type: sequence
      within: 10m
      steps:
        - {{when: 'event == "Failed"', min: 5}}
        - {{when: 'event == "Accepted"'}}
    emit:
      topic: alerts
      value: "sequence {{{{ key }}}} {{{{ count }}}} {{{{ first_ts }}}} {{{{ last_ts }}}}"
    snapshot_every: 151
  - name: perip
    from: auth
    key: "{{{{ ip }}}}"
    view:
      window: {{tumbling: 1m}}
      aggregates: [count]
    emit:
      topic: windows
      value: "{{{{ key }}}} {{{{ window_start }}}} {{{{ count }}}}"
    snapshot_every: 200ms
{extra}"""


def metric(port, name, stream):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except Exception:
        return None
    m = re.search(r'^%s\{stream="%s"\} (-?\d+)' % (name, stream), text, re.M)
    return int(m.group(1)) if m else None


def caught_up(port, streams):
    return all(metric(port, "spool_stream_lag_records", s) == 0 for s in streams)


def read_topic(cfg, topic, fmt):
    r = spoolt.run(["read", topic, "-c", cfg, "--format", fmt])
    check(r.returncode == 0, "spool read %s: %s" % (topic, r.stderr.decode()))
    return [l for l in r.stdout.decode().split("\n") if l]


def stored_input(cfg):
    out = []
    for l in read_topic(cfg, "auth", "%p\t%o\t%T\t%k\t%h\n"):
        p, o, ts, k, h = l.split("\t")
        ev = "failed" if "event=Failed" in h else "accepted"
        out.append((int(p), int(o), int(ts), k, ev))
    return out


def query_cli(cfg):
    r = spoolt.run(["query", "perip", "-c", cfg, "--json"])
    check(r.returncode == 0, "spool query: %s" % r.stderr.decode())
    return sorted((w["key"], w["window_start"], w["count"]) for w in json.loads(r.stdout))


@t.case
def ssh_alerts_kill9(tmp):
    http_port = spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    auth_log = os.path.join(tmp, "auth.log")
    write(auth_log, "")
    write(cfg, conf(tmp, http_port))
    rc = spoolt.run(["check", "-c", cfg])
    check(rc.returncode == 0, "spool check: %s" % (rc.stdout + rc.stderr).decode())
    n = 1500 if spoolt.SANITIZE else 6000
    lines = auth_lines(16, n)
    rnd = random.Random(1616)
    rounds = 10
    per = (n + rounds - 1) // rounds
    streams = ["bruteforce", "breakin", "perip"]
    damaged = 0
    sp = spoolt.Spool(cfg)
    try:
        for i in range(rounds):
            chunk = lines[i * per:(i + 1) * per]
            with open(auth_log, "a") as f:
                for k in range(0, len(chunk), 100):
                    f.write("".join(l + "\n" for _, l in chunk[k:k + 100]))
                    f.flush()
            written = min(n, (i + 1) * per)
            time.sleep(rnd.uniform(0, 0.3))  # the kill's random moment, not a synchronization
            sp.kill()
            if i == 4:
                # A damaged snapshot is refused and the state rebuilt from the log.
                for name in ("bruteforce", "breakin"):  # snapshots by record count
                    snap = os.path.join(tmp, "data", "streams", name, "0.snap")
                    if os.path.exists(snap):
                        with open(snap, "r+b") as f:
                            f.seek(os.path.getsize(snap) - 1)
                            last = f.read(1)
                            f.seek(os.path.getsize(snap) - 1)
                            f.write(bytes([last[0] ^ 0xff]))
                        damaged += 1
            sp = spoolt.Spool(cfg)
            sp.wait_running()
            # tail reads what it had not by the kill (exactly once), then the streams catch up.
            spoolt.wait_for(lambda: len(stored_input(cfg)) == written, 120,
                            what="tail stored the %d lines written after restart %d"
                            % (written, i + 1))
            spoolt.wait_for(lambda: caught_up(http_port, streams), 120,
                            what="streams caught up after restart %d" % (i + 1))
            _, _, want_open = reference(stored_input(cfg), 2)
            got = query_cli(cfg)
            check(got == want_open, "round %d: spool query %d windows, reference %d; only in "
                  "the answer: %s; only in the reference: %s"
                  % (i + 1, len(got), len(want_open), sorted(set(got) - set(want_open))[:5],
                     sorted(set(want_open) - set(got))[:5]))
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/views/perip" % http_port,
                                        timeout=10) as r:
                api = sorted((w["key"], w["window_start"], w["count"])
                             for w in json.loads(r.read()))
            check(api == want_open, "round %d: the HTTP view differs from the reference" % (i + 1))
        check(sp.terminate() == 0, "spool did not stop cleanly:\n" + sp.stderr()[-3000:])
    finally:
        sp.kill()
    stored = stored_input(cfg)
    check(len(stored) == n, "the input holds %d records, %d lines written" % (len(stored), n))
    # parse set each record's timestamp from its line, the input's key its address.
    want_in = sorted((ts, re.search(r" from (\S+) port ", l).group(1)) for ts, l in lines)
    check(sorted((r[2], r[3]) for r in stored) == want_in,
          "the stored timestamps and keys are not the lines' times and addresses")
    want_alerts, want_closed, _ = reference(stored, 2)
    got_alerts = sorted(read_topic(cfg, "alerts", "%v\n"))
    got_closed = sorted(read_topic(cfg, "windows", "%v\n"))
    check(len(want_alerts) >= 20, "the generator made too few alerts (%d)" % len(want_alerts))
    check(got_alerts == want_alerts,
          "alerts: %d, reference %d; missing %s; extra %s"
          % (len(got_alerts), len(want_alerts),
             sorted(set(want_alerts) - set(got_alerts))[:5],
             sorted(set(got_alerts) - set(want_alerts))[:5]))
    check(len(set(got_alerts)) == len(got_alerts), "an alert is repeated")
    check(got_closed == want_closed, "closed windows: %d, reference %d"
          % (len(got_closed), len(want_closed)))
    log = sp.stderr()
    check("replaying to" in log, "no restart replayed:\n" + log[-2000:])
    check(damaged == 2, "%d snapshots to damage" % damaged)
    check(log.count("fails its checksum: rebuilding from the log") == 2, log[-3000:])


# ---- access view -------------------------------------------------------------------------

def access_records(seed, n):
    rnd = random.Random(seed)
    paths = ["/", "/api/users", "/api/orders", "/static/app.js"]
    out, ts = [], T0
    for i in range(n):
        ts += rnd.randint(0, 40)
        path = rnd.choice(paths)
        lat = int(rnd.lognormvariate(3, 1)) + 1
        b = rnd.randint(100, 50000)
        client = "c%d" % rnd.randint(0, 2999)
        line = '%s - - "GET %s HTTP/1.1" 200 %d %d' % (client, path, b, lat)
        out.append({"key": path, "value": line, "timestamp": ts,
                    "headers": {"path": path, "bytes": str(b), "latency": str(lat),
                                "client": client}})
    return out


def exact_quantile_range(values, q, slack=0.005):
    v = sorted(values)
    lo = v[max(0, int((q - slack) * (len(v) - 1)))]
    hi = v[min(len(v) - 1, int((q + slack) * (len(v) - 1)) + 1)]
    return lo, hi


@t.case
def access_view(tmp):
    http_port, in_port = spoolt.free_port(), spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""service:
  data_dir: {tmp}/data
  http: {{listen: 127.0.0.1:{http_port}}}
topics:
  access: {{partitions: 1}}
  stats: {{partitions: 1}}
inputs:
  - type: http
    name: ingest
    topic: access
    listen: 127.0.0.1:{in_port}
streams:
  - name: paths
    from: access
    key: "{{{{ path }}}}"
    view:
      window: {{tumbling: 1m}}
      aggregates: [count, "sum(bytes)", "p99(latency)", "distinct(client)"]
    emit: {{topic: stats}}
""")
    n = 4000 if spoolt.SANITIZE else 30000
    recs = access_records(7, n)
    sp = spoolt.Spool(cfg)
    try:
        sp.wait_running()
        for k in range(0, n, 1000):
            post(in_port, recs[k:k + 1000])
        spoolt.wait_for(lambda: caught_up(http_port, ["paths"]) and
                        metric(http_port, "spool_stream_records_in_total", "paths") == n, 60,
                        what="the view caught up")
        r = spoolt.run(["query", "paths", "-c", cfg, "--json"])
        check(r.returncode == 0, r.stderr.decode())
        open_w = json.loads(r.stdout)
        check(sp.terminate() == 0, "spool did not stop cleanly")
    finally:
        sp.kill()
    closed = [json.loads(v) for v in read_topic(cfg, "stats", "%v\n")]
    wins = {}
    for rec in recs:
        k = (rec["key"], rec["timestamp"] // MIN * MIN)
        wins.setdefault(k, []).append(rec)
    got = {(w["key"], w["window_start"]): w for w in closed + open_w}
    check(set(got) == set(wins), "windows: %d, reference %d" % (len(got), len(wins)))
    wm = recs[-1]["timestamp"]
    check(all(w["window_end"] <= wm for w in closed), "a closed window ends after the watermark")
    hll_err = 4 * 1.04 / 64
    for k, rs in wins.items():
        w = got[k]
        check(w["count"] == len(rs), "%s: count %d != %d" % (k, w["count"], len(rs)))
        s = sum(int(r["headers"]["bytes"]) for r in rs)
        check(w["sum_bytes"] == s, "%s: sum %s != %d" % (k, w["sum_bytes"], s))
        lo, hi = exact_quantile_range([int(r["headers"]["latency"]) for r in rs], 0.99)
        check(lo * 0.99 <= w["p99_latency"] <= hi * 1.01,
              "%s: p99 %s outside [%s, %s] +-1%%" % (k, w["p99_latency"], lo, hi))
        d = len({r["headers"]["client"] for r in rs})
        check(abs(w["distinct_client"] - d) <= max(2, hll_err * d),
              "%s: distinct %s vs %d" % (k, w["distinct_client"], d))


def metric_re(port, pattern):
    """The first sample of /metrics matching pattern (a regex with one group), or None."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except Exception:
        return None
    m = re.search(pattern, text, re.M)
    return int(m.group(1)) if m else None


@t.case
def idle_tick(tmp):
    """A quiet partition: after idle_close a tick in the input log closes the open windows;
    after a kill -9 the replay sees the tick: nothing emitted twice, no second tick.
    Outputs of the input topic never deliver the tick: a file output writes the 500 records
    only, and an http output (native format: the raw batches, tick included, sent as one
    chunk of 501 offsets thanks to max_records and linger) to a second http input, which
    drops the tick on ingest and counts it."""
    http_port, in_port, relay_port = spoolt.free_port(), spoolt.free_port(), spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    out = os.path.join(tmp, "access.ndjson")
    write(cfg, f"""service:
  data_dir: {tmp}/data
  http: {{listen: 127.0.0.1:{http_port}}}
topics:
  access: {{partitions: 1}}
  stats: {{partitions: 1}}
  relay: {{partitions: 1}}
inputs:
  - type: http
    name: ingest
    topic: access
    listen: 127.0.0.1:{in_port}
  - type: http
    name: relay_in
    topic: relay
    listen: 127.0.0.1:{relay_port}
outputs:
  - type: file
    name: archive
    topics: [access]
    path: {out}
    format: json
  - type: http
    name: ship
    topics: [access]
    url: http://127.0.0.1:{relay_port}/v1/batches
    max_records: 501
    linger: 1h
streams:
  - name: paths
    from: access
    key: "{{{{ path }}}}"
    view:
      window: {{tumbling: 1m}}
      aggregates: [count]
    emit: {{topic: stats, value: "{{{{ key }}}} {{{{ window_start }}}} {{{{ count }}}}"}}
    idle_close: 300ms
    snapshot_every: 1000000
""")
    recs = access_records(3, 500)
    want = {}
    for rec in recs:
        k = "%s %d" % (rec["key"], rec["timestamp"] // MIN * MIN)
        want[k] = want.get(k, 0) + 1
    want = sorted("%s %d" % (k, c) for k, c in want.items())

    def archived():
        if not os.path.exists(out):
            return []
        with open(out) as f:
            return [json.loads(l) for l in f if l.strip()]

    def output_lag(name):
        return metric_re(http_port, r'^spool_output_lag_records\{[^}]*output="%s"[^}]*\} (\d+)'
                         % name)

    sp = spoolt.Spool(cfg)
    try:
        sp.wait_running()
        post(in_port, recs)
        spoolt.wait_for(lambda: len(read_topic(cfg, "stats", "%v\n")) >= len(want), 30,
                        what="the tick closed every window")
        check(sorted(read_topic(cfg, "stats", "%v\n")) == want, "closed windows differ")
        ticks = [h for h in read_topic(cfg, "access", "%h\n") if "spool.tick=paths" in h]
        check(len(ticks) == 1, "%d ticks in the input" % len(ticks))
        # Both outputs move their cursors past the tick (offset 500) ...
        spoolt.wait_for(lambda: output_lag("archive") == 0 and output_lag("ship") == 0, 30,
                        what="the outputs delivered the input topic, tick included")
        # ... but the file holds the 500 records only, and the relay drops the tick.
        got = archived()
        check(len(got) == 500 and all("spool.tick" not in json.dumps(r) for r in got),
              "the file output wrote %d records, ticks: %d"
              % (len(got), sum("spool.tick" in json.dumps(r) for r in got)))
        check([r["value"] for r in got] == [r["value"] for r in recs], "file output records")
        relayed = read_topic(cfg, "relay", "%h\n")
        check(len(relayed) == 500 and not [h for h in relayed if "spool.tick" in h],
              "the relay topic holds %d records: %s" % (len(relayed), relayed[-2:]))
        dropped = metric_re(http_port,
                            r'^spool_http_ticks_dropped_total\{[^}]*"relay_in"[^}]*\} (\d+)')
        check(dropped == 1, "ticks dropped by the relay input: %s" % dropped)
        sp.kill()
        sp = spoolt.Spool(cfg)
        sp.wait_log("replaying to")
        spoolt.wait_for(lambda: caught_up(http_port, ["paths"]), 30, what="replayed")
        # A second tick would come after 300ms of quiet: give it three times that
        # (a bounded observation window, not a synchronization).
        time.sleep(1.0)
        ticks = [h for h in read_topic(cfg, "access", "%h\n") if "spool.tick=paths" in h]
        check(len(ticks) == 1, "%d ticks after the restart" % len(ticks))
        check(sorted(read_topic(cfg, "stats", "%v\n")) == want, "the replay emitted again")
        check(sp.terminate() == 0, "spool did not stop cleanly")
    finally:
        sp.kill()
    check(not [r for r in archived() if "spool.tick" in json.dumps(r)],
          "the file output wrote a tick after the restart")


@t.case
def late_records(tmp):
    """Records older than the watermark (newest - allowed_lateness) are not applied, counted,
    and copied to late_topic; the others count in their windows."""
    http_port, in_port = spoolt.free_port(), spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""service:
  data_dir: {tmp}/data
  http: {{listen: 127.0.0.1:{http_port}}}
topics:
  access: {{partitions: 1}}
  stats: {{partitions: 1}}
  late: {{partitions: 1}}
inputs:
  - type: http
    name: ingest
    topic: access
    listen: 127.0.0.1:{in_port}
streams:
  - name: paths
    from: access
    key: "{{{{ path }}}}"
    view:
      window: {{tumbling: 1m}}
      aggregates: [count]
    emit: {{topic: stats}}
    allowed_lateness: 10s
    late_topic: late
""")
    base = T0 - T0 % MIN  # a window boundary

    def rec(ts, n):
        return {"key": "/", "value": "r%d" % n, "timestamp": base + ts, "headers": {"path": "/"}}
    # Newest 100s: watermark 90s. 95s and 90s are in time, 89s and 5s are late.
    recs = [rec(1000, 0), rec(100_000, 1), rec(95_000, 2), rec(90_000, 3), rec(89_000, 4),
            rec(5_000, 5), rec(100_500, 6)]
    sp = spoolt.Spool(cfg)
    try:
        sp.wait_running()
        post(in_port, recs)
        spoolt.wait_for(lambda: caught_up(http_port, ["paths"]), 30, what="caught up")
        check(metric(http_port, "spool_stream_late_records_total", "paths") == 2,
              "late counter %s" % metric(http_port, "spool_stream_late_records_total", "paths"))
        r = spoolt.run(["query", "paths", "-c", cfg, "--json"])
        got = sorted((w["window_start"] - base, w["count"]) for w in json.loads(r.stdout))
        check(got == [(60_000, 4)], "open windows %s" % got)
        check(sp.terminate() == 0, "spool did not stop cleanly")
    finally:
        sp.kill()
    check(sorted(read_topic(cfg, "late", "%v\n")) == ["r4", "r5"], "late topic")
    closed = [json.loads(v) for v in read_topic(cfg, "stats", "%v\n")]
    check([(w["window_start"] - base, w["count"]) for w in closed] == [(0, 1)],
          "closed windows %s" % closed)


@t.case
def check_positions(tmp):
    cfg = os.path.join(tmp, "bad.yaml")
    write(cfg, f"""service:
  data_dir: {tmp}/data
topics:
  auth: {{}}
streams:
  - name: s1
    from: nope
    key: "{{{{ ip }}}}"
    pattern:
      type: sequence
      within: 10m
      steps:
        - {{when: 'event == "failed"', min: 5}}
        - {{when: 'event == = "accepted"'}}
    emit: {{topic: auth2}}
  - name: ../s2
    from: auth
    key: "{{{{ ip }}}}"
    emit: {{topic: auth}}
  - name: s3
    from: auth
    key: k
    when: 'a =='
    pattern: {{type: threshold, count: 2, within: 1m}}
    emit: {{topic: nope3}}
""")
    r = spoolt.run(["check", "-c", cfg])
    out = (r.stdout + r.stderr).decode()
    check(r.returncode == 2, "exit %d:\n%s" % (r.returncode, out))
    check(re.search(r"bad\.yaml:7:11: streams\[0\]\.from: unknown topic 'nope'", out), out)
    check(re.search(r"bad\.yaml:14:28: streams\[0\]\.pattern\.steps\[1\]\.when: ", out), out)
    check(re.search(r"bad\.yaml:15:19: streams\[0\]\.emit\.topic: unknown topic 'auth2'", out),
          out)
    check("streams[1]" in out and "exactly one of 'pattern' or 'view'" in out, out)
    # Every error of a stream at once: the condition and the unknown topic.
    check(re.search(r"bad\.yaml:23:16: streams\[2\]\.when: ", out), out)
    check(re.search(r"bad\.yaml:25:19: streams\[2\]\.emit\.topic: unknown topic", out), out)
    check(re.search(r"bad\.yaml:16:11: streams\[1\]\.name: '\.\./s2': a stream name is", out),
          out)


t.main()
