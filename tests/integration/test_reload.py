"""Reload on SIGHUP (issue 8), against the real binary.

A writer thread appends numbered lines to a file that a `tail` input
follows, the whole time. Reloads change the outputs while records flow:

  config 1: output A (file, raw)
  config 2: A changes its format to json, output B (file, raw) is added
  config 3: A is removed, B stays

What must hold:
- the log holds every line exactly once, in order (the tail position is
  kept across both reloads: nothing is read again from the start);
- A has a gap-free, duplicate-free prefix 1..M of the stream (its cursor was
  kept across the first reload; the stop before a reload delivers up to the
  log's end, so M is at least the log's end offset seen just before the
  second SIGHUP); lines up to the first reload are raw, later ones JSON;
- B, a new output with no cursor, starts at the log's beginning offset: it
  delivers everything still in the log, i.e. the whole stream from line 1;
- output cursors survive (A's cursor in the data dir equals what A got).

A broken file on reload (YAML syntax error; unknown key plus unknown topic)
is refused: every error is logged with file:line:col, the old configuration
keeps running and records keep flowing; a later valid reload works.
"""
import json
import os
import re
import select
import signal
import threading
import time

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
RATE = 2000 if spoolt.SANITIZE else 10000  # lines per second written
PHASE = 1.5 if spoolt.SANITIZE else 2.0      # seconds of writing between steps
# A phase between two steps ends once an output delivered this many lines
# written after the step: records flowed through the new configuration.
PHASE_LINES = int(RATE * PHASE)


class Writer(threading.Thread):
    """Appends "<n>\\n" lines to path at about `rate` lines/s until stopped."""

    def __init__(self, path, rate):
        super().__init__(daemon=True)
        self.path = path
        self.rate = rate
        self.n = 0
        self.halt = threading.Event()

    def run(self):
        t0 = time.monotonic()
        with open(self.path, "ab", buffering=0) as f:
            while not self.halt.is_set():
                due = int((time.monotonic() - t0) * self.rate)
                if due > self.n:
                    k = min(due - self.n, 5000)
                    f.write("".join("%d\n" % i for i in range(self.n + 1, self.n + k + 1))
                            .encode())
                    self.n += k
                time.sleep(0.005)  # rate-limits the generator; not synchronization

    def stop(self):
        self.halt.set()
        self.join(10)
        return self.n


def conf_text(tmp, outputs, extra_input=""):
    return f"""service:
  data_dir: {tmp}/data
  log_level: info
  shutdown_timeout: 30s
topics:
  app:
    fsync: 1s
inputs:
  - type: tail
    name: src
    topic: app
    paths: [{tmp}/src.log]
    read_from: beginning
{extra_input}outputs:
{outputs}"""


def out_a(tmp, fmt):
    return f"""  - type: file
    name: A
    topics: [app]
    path: {tmp}/a.txt
    format: {fmt}
"""


def out_b(tmp):
    return f"""  - type: file
    name: B
    topics: [app]
    path: {tmp}/b.txt
"""


def log_values(cfg):
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"], timeout=300)
    check(r.returncode == 0, "spool read failed: %s" % r.stderr[-2000:])
    return [int(v) for v in r.stdout.split(b"\n")[:-1]]


def topic_info(cfg):
    r = spoolt.run(["topics", "--json", "-c", cfg], timeout=60)
    check(r.returncode == 0, "spool topics failed: %s" % r.stderr[-2000:])
    return json.loads(r.stdout)["topics"][0]["partitions"][0]


def exactly_1_to_n(vals, n, what):
    st = spoolt.seq_check(vals, n)
    check(st["lost"] == 0 and st["dup"] == 0 and st["disorder"] == 0 and st["count"] == n,
          "%s: expected 1..%d exactly once in order, got %r (first %r, last %r)" %
          (what, n, st, vals[:3], vals[-3:]))


def wait_reloaded(s, count, timeout=60):
    """Waits until the count-th reload has started the new configuration."""
    spoolt.wait_for(lambda: s.stderr().count("reload: starting the new configuration") >= count,
                    timeout=timeout, what="reload #%d" % count)
    spoolt.wait_for(lambda: s.stderr().count(" running: ") >= count + 1, timeout=timeout,
                    what="running after reload #%d" % count)


def flowed(w, delivered, what, lines=PHASE_LINES):
    """Waits until delivered() (a count of lines an output wrote) passes what
    the writer w had written when called, plus `lines`: records written after
    the last step went through the pipeline."""
    n0 = w.n
    spoolt.wait_for(lambda: delivered() >= n0 + lines, timeout=60 + 2 * lines / RATE,
                    interval=0.1, what="%s to get %d lines (past %d)" % (what, n0 + lines, n0))


def complete_lines(path):
    """Lines of a file being written: an unterminated last line is left out."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return data.split(b"\n")[:-1]


def a_values(tmp):
    """A's lines: raw integers then JSON objects. Returns (raw, json) lists."""
    raw, js = [], []
    for line in complete_lines(os.path.join(tmp, "a.txt")):
        if line.startswith(b"{"):
            js.append(int(json.loads(line)["value"]))
        else:
            check(not js, "a raw line after JSON lines in A: %r" % line)
            raw.append(int(line))
    return raw, js


@t.case
def outputs_change_while_records_flow(tmp):
    cfg = os.path.join(tmp, "spool.yaml")
    write(os.path.join(tmp, "src.log"), "")
    write(cfg, conf_text(tmp, out_a(tmp, "raw")))
    w = Writer(os.path.join(tmp, "src.log"), RATE)
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: " running: " in s.stderr(), timeout=30, what="start")
        w.start()
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "a.txt"))) > 0,
                        timeout=30, what="A delivering")
        flowed(w, lambda: len(complete_lines(os.path.join(tmp, "a.txt"))), "A")

        # Reload 1: A becomes json, B is added.
        write(cfg, conf_text(tmp, out_a(tmp, "json") + out_b(tmp)))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        spoolt.wait_for(lambda: a_values(tmp)[1], timeout=30, what="A writing JSON")
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) > 0,
                        timeout=30, what="B delivering")
        flowed(w, lambda: sum(map(len, a_values(tmp))), "A")

        # Reload 2: A is removed. Everything in the log now must reach A first.
        end_before = topic_info(cfg)["end"]
        write(cfg, conf_text(tmp, out_b(tmp)))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 2)
        a_after_removal = spoolt.read_lines(os.path.join(tmp, "a.txt"))
        flowed(w, lambda: len(complete_lines(os.path.join(tmp, "b.txt"))), "B")
        n = w.stop()

        # Everything written reaches the log and B.
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= n,
                        timeout=120, what="B to get all %d lines" % n)
        check(spoolt.read_lines(os.path.join(tmp, "a.txt")) == a_after_removal,
              "A was written after it was removed")
        rc = s.terminate()
        check(rc == 0, "spool exited %d" % rc)
    finally:
        w.halt.set()
        s.kill()
    err = s.stderr()
    check(" error " not in err and "reload refused" not in err, "errors logged:\n%s" % err[-3000:])

    # The log: every line once, in order (tail positions kept).
    exactly_1_to_n(log_values(cfg), n, "log")
    # B: a new output starts at the beginning offset, so it has all of it.
    exactly_1_to_n([int(v) for v in spoolt.read_lines(os.path.join(tmp, "b.txt"))], n, "B")
    # A: raw part then JSON part, together a prefix 1..M, nothing lost.
    raw, js = a_values(tmp)
    check(raw and js, "A should have raw and JSON lines: %d raw, %d json" % (len(raw), len(js)))
    m = len(raw) + len(js)
    exactly_1_to_n(raw + js, m, "A")
    check(m >= end_before, "A stopped at %d but the log already had %d records before it was "
          "removed" % (m, end_before))
    # A's cursor stays in the data dir (same name, kept for a later re-add)
    # and equals what it delivered; B's cursor is at the end.
    info = topic_info(cfg)
    check(info["end"] == n, "end offset %d, expected %d" % (info["end"], n))
    lag = info.get("lag", {})
    check(lag.get("B", lag.get("output.B")) == 0, "B's lag: %r" % lag)


@t.case
def readding_an_output_resumes_from_its_cursor(tmp):
    # An output removed by a reload keeps its durable cursor; added back
    # later it resumes there, not from the beginning.
    cfg = os.path.join(tmp, "spool.yaml")
    src = os.path.join(tmp, "src.log")
    write(src, "".join("%d\n" % i for i in range(1, 1001)))
    write(cfg, conf_text(tmp, out_a(tmp, "raw") + out_b(tmp)))
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "a.txt"))) >= 1000,
                        timeout=30, what="A to get 1000")
        write(cfg, conf_text(tmp, out_b(tmp)))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        with open(src, "a") as f:
            f.write("".join("%d\n" % i for i in range(1001, 2001)))
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= 2000,
                        timeout=30, what="B to get 2000")
        write(cfg, conf_text(tmp, out_a(tmp, "raw") + out_b(tmp)))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 2)
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "a.txt"))) >= 2000,
                        timeout=30, what="A to catch up to 2000")
        # A's saved cursor reaches the end: it has nothing more to send (a
        # restart from the beginning would have written past 2000 by then).
        spoolt.wait_for(lambda: topic_info(cfg).get("lag", {}).get("output.A") == 0,
                        timeout=30, interval=0.2, what="A's cursor at the log's end")
        rc = s.terminate()
        check(rc == 0, "spool exited %d" % rc)
    finally:
        s.kill()
    exactly_1_to_n([int(v) for v in spoolt.read_lines(os.path.join(tmp, "a.txt"))], 2000, "A")
    exactly_1_to_n([int(v) for v in spoolt.read_lines(os.path.join(tmp, "b.txt"))], 2000, "B")
    exactly_1_to_n(log_values(cfg), 2000, "log")


@t.case
def input_added_and_removed(tmp):
    # A socket input added by a reload starts receiving; removed by the next
    # one, its port closes. The tail input is untouched throughout.
    cfg = os.path.join(tmp, "spool.yaml")
    src = os.path.join(tmp, "src.log")
    port = spoolt.free_port()
    sock_in = f"""  - type: socket
    name: net
    topic: app
    listen: tcp://127.0.0.1:{port}
"""
    write(src, "".join("%d\n" % i for i in range(1, 101)))
    write(cfg, conf_text(tmp, out_b(tmp)))
    s = spoolt.Spool(cfg)
    import socket as so
    try:
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= 100,
                        timeout=30, what="B to get 100")
        write(cfg, conf_text(tmp, out_b(tmp), extra_input=sock_in))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        c = so.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall("".join("%d\n" % i for i in range(101, 201)).encode())
        c.close()
        with open(src, "a") as f:
            f.write("".join("%d\n" % i for i in range(201, 301)))
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= 300,
                        timeout=30, what="B to get 300")
        write(cfg, conf_text(tmp, out_b(tmp)))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 2)
        refused = False
        try:
            so.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            refused = True
        check(refused, "the removed socket input still accepts connections")
        with open(src, "a") as f:
            f.write("".join("%d\n" % i for i in range(301, 401)))
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= 400,
                        timeout=30, what="B to get 400")
        rc = s.terminate()
        check(rc == 0, "spool exited %d" % rc)
    finally:
        s.kill()
    vals = sorted(int(v) for v in spoolt.read_lines(os.path.join(tmp, "b.txt")))
    check(vals == list(range(1, 401)), "B: %d values, expected 1..400 once each" % len(vals))


@t.case
def broken_file_keeps_the_old_config(tmp):
    cfg = os.path.join(tmp, "spool.yaml")
    src = os.path.join(tmp, "src.log")
    good = conf_text(tmp, out_b(tmp))
    write(src, "")
    write(cfg, good)
    w = Writer(src, RATE // 4)
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: " running: " in s.stderr(), timeout=30, what="start")
        w.start()
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) > 0,
                        timeout=30, what="B delivering")

        def refused(count):
            spoolt.wait_for(lambda: s.stderr().count("reload refused") >= count, timeout=30,
                            what="reload refusal #%d" % count)

        def still_flowing():
            n0 = len(spoolt.read_lines(os.path.join(tmp, "b.txt")))
            spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) > n0 + 100,
                            timeout=30, what="records still flowing")
            check(s.proc.poll() is None, "spool exited")

        # 1. A YAML syntax error (an unclosed flow sequence on line 13).
        lines = good.split("\n")
        i_paths = next(i for i, l in enumerate(lines) if "paths:" in l)
        bad = list(lines)
        bad[i_paths] = "    paths: [%s/src.log" % tmp
        write(cfg, "\n".join(bad))
        s.proc.send_signal(signal.SIGHUP)
        refused(1)
        err = s.stderr()
        check(re.search(r"reload: %s:\d+:\d+: " % re.escape(cfg), err),
              "the syntax error is not logged with its position:\n%s" % err[-2000:])
        still_flowing()

        # 2. Two errors: an unknown key in the output (line L1) and an unknown
        #    topic in the input (line L2). Both are logged with their lines.
        bad = list(lines)
        i_fmt = next(i for i, l in enumerate(bad) if "path: %s/b.txt" % tmp in l)
        bad.insert(i_fmt + 1, "    formatt: json")
        i_topic = next(i for i, l in enumerate(bad) if l.strip() == "topic: app")
        bad[i_topic] = "    topic: nosuchtopic"
        write(cfg, "\n".join(bad))
        n_before = len(s.stderr())
        s.proc.send_signal(signal.SIGHUP)
        refused(2)
        err = s.stderr()[n_before:]
        check(re.search(r"reload: %s:%d:\d+: .*formatt" % (re.escape(cfg), i_fmt + 2), err),
              "the unknown key is not logged at line %d:\n%s" % (i_fmt + 2, err))
        check(re.search(r"reload: %s:%d:\d+: .*nosuchtopic" % (re.escape(cfg), i_topic + 1), err),
              "the unknown topic is not logged at line %d:\n%s" % (i_topic + 1, err))
        check("2 errors" in err, "the refusal does not count 2 errors:\n%s" % err)
        still_flowing()

        # 3. Seven unknown keys: all seven are logged (the rate limiter must
        #    not swallow errors of a refused reload), each at its own line.
        bad = list(lines)
        i_out = next(i for i, l in enumerate(bad) if "path: %s/b.txt" % tmp in l)
        for k in range(7):
            bad.insert(i_out + 1, "    bogus_%d: 1" % k)
        write(cfg, "\n".join(bad))
        n_before = len(s.stderr())
        s.proc.send_signal(signal.SIGHUP)
        refused(3)
        err = s.stderr()[n_before:]
        for k in range(7):
            line_no = i_out + 2 + (6 - k)
            check(re.search(r"reload: %s:%d:\d+: .*bogus_%d" % (re.escape(cfg), line_no, k), err),
                  "bogus_%d is not logged at line %d:\n%s" % (k, line_no, err))
        still_flowing()

        # 4. Back to a valid file (A added): the reload goes through.
        write(cfg, conf_text(tmp, out_b(tmp) + out_a(tmp, "raw")))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "a.txt"))) > 0,
                        timeout=30, what="A delivering after the good reload")
        n = w.stop()
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= n and
                        len(spoolt.read_lines(os.path.join(tmp, "a.txt"))) >= n,
                        timeout=60, what="A and B to get all %d" % n)
        rc = s.terminate()
        check(rc == 0, "spool exited %d" % rc)
    finally:
        w.halt.set()
        s.kill()
    exactly_1_to_n(log_values(cfg), n, "log")
    exactly_1_to_n([int(v) for v in spoolt.read_lines(os.path.join(tmp, "b.txt"))], n, "B")
    exactly_1_to_n([int(v) for v in spoolt.read_lines(os.path.join(tmp, "a.txt"))], n, "A")


@t.case
def stdin_lines_survive_reloads(tmp):
    # stdin is one pipe for the life of the process: a reload stops the stdin
    # input and starts a new one on the same fd. Lines cut by a read() at the
    # moment of the reload must not be lost or split into two records.
    import subprocess
    cfg = os.path.join(tmp, "spool.yaml")
    conf = f"""service:
  data_dir: {tmp}/data
  shutdown_timeout: 30s
topics:
  app: {{}}
inputs:
  - type: stdin
    name: in
    topic: app
    exit_on_eof: false
outputs:
"""
    write(cfg, conf + out_b(tmp))
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    s.proc.stdout.close()
    sent = 0
    reloads = 0
    try:
        spoolt.wait_for(lambda: " running: " in s.stderr(), timeout=30, what="start")
        deadline = time.monotonic() + 60
        while reloads < 5 and time.monotonic() < deadline:
            # ~150 KB per write: more than a pipe holds, so reads cut lines.
            chunk = "".join("%d\n" % i for i in range(sent + 1, sent + 20001)).encode()
            s.proc.stdin.write(chunk)
            s.proc.stdin.flush()
            sent += 20000
            if sent % 100000 == 0:
                s.proc.send_signal(signal.SIGHUP)
                reloads += 1
                wait_reloaded(s, reloads)
        s.proc.stdin.close()
        spoolt.wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "b.txt"))) >= sent,
                        timeout=60, what="B to get %d" % sent)
        rc = s.terminate()
        check(rc == 0, "spool exited %d" % rc)
    finally:
        s.kill()
    check(reloads == 5, "only %d reloads" % reloads)
    exactly_1_to_n([int(v) for v in spoolt.read_lines(os.path.join(tmp, "b.txt"))], sent, "B")
    exactly_1_to_n(log_values(cfg), sent, "log")


@t.case
def reload_with_a_stalled_output(tmp):
    # An http output whose destination accepts and never answers has chunks
    # in flight at the reload. The stop before the reload gives it
    # shutdown_timeout (2s here), then the new configuration starts anyway;
    # the stalled output keeps its cursor (its records stay in the log) and
    # the other output loses nothing.
    import socket as so
    ls = so.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    conns = []
    halt = threading.Event()

    def accept():
        ls.settimeout(0.2)
        while not halt.is_set():
            try:
                conns.append(ls.accept()[0])
            except OSError:
                pass
    th = threading.Thread(target=accept, daemon=True)
    th.start()
    stalled = f"""  - type: http
    name: S
    topics: [app]
    url: http://127.0.0.1:{ls.getsockname()[1]}/v1/batches
    format: ndjson
    max_in_flight: 4
    max_records: 100
"""
    cfg = os.path.join(tmp, "spool.yaml")
    src = os.path.join(tmp, "src.log")
    write(src, "")

    def conf(fmt):
        return conf_text(tmp, out_a(tmp, fmt) + stalled).replace(
            "shutdown_timeout: 30s", "shutdown_timeout: 2s")
    write(cfg, conf("raw"))
    w = Writer(src, RATE // 4)
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: " running: " in s.stderr(), timeout=30, what="start")
        w.start()
        spoolt.wait_for(lambda: len(conns) > 0 and len(spoolt.read_lines(
            os.path.join(tmp, "a.txt"))) > 0, timeout=30, what="A delivering, S connected")

        def s_request_in_flight():
            # A request S sent sits unanswered in one of the accepted sockets.
            return select.select(list(conns), [], [], 0)[0]
        spoolt.wait_for(s_request_in_flight, timeout=30, what="a request of S in flight")
        write(cfg, conf("json"))
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        took = time.monotonic() - t0
        check(took < 20, "the reload took %.1fs with shutdown_timeout 2s" % took)
        spoolt.wait_for(lambda: a_values(tmp)[1], timeout=30, what="A writing JSON")
        flowed(w, lambda: sum(map(len, a_values(tmp))), "A", lines=RATE // 4)
        n = w.stop()
        spoolt.wait_for(lambda: sum(map(len, a_values(tmp))) >= n, timeout=60,
                        what="A to get all %d" % n)
        check(s.proc.poll() is None, "spool exited")
        s.proc.send_signal(signal.SIGTERM)
        rc = s.wait(60)
        check(rc == 0, "spool exited %d" % rc)
    finally:
        w.halt.set()
        s.kill()
        halt.set()
        th.join(5)
        for c in conns:
            c.close()
        ls.close()
    raw, js = a_values(tmp)
    exactly_1_to_n(raw + js, n, "A")
    exactly_1_to_n(log_values(cfg), n, "log")
    info = topic_info(cfg)
    lag = info.get("lag", {})
    # S never delivered: it has no cursor yet (spool topics lists no lag for
    # it), or one with lag; never a cursor at the end.
    check(lag.get("output.S", 1) > 0, "the stalled output shows no lag: %r" % lag)


@t.case
def counters_continue_across_a_reload(tmp):
    # /metrics: an instance the reload keeps (same name) continues its
    # counters; they do not reset to 0.
    import urllib.request
    port = spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    src = os.path.join(tmp, "src.log")
    write(src, "".join("%d\n" % i for i in range(1, 501)))

    def conf(fmt):
        return conf_text(tmp, out_a(tmp, fmt)).replace(
            "  log_level: info\n", "  log_level: info\n  http:\n    listen: 127.0.0.1:%d\n" % port)

    def metric(name, labels):
        try:
            body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                          timeout=5).read()
        except OSError:
            return None  # not serving yet (start, reload)
        for line in body.decode().split("\n"):
            if line.startswith(name + "{") and labels in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return None
    write(cfg, conf("raw"))
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: metric("spool_records_out_total", 'name="A"') == 500,
                        timeout=30, what="A's records_out at 500")
        check(metric("spool_records_in_total", 'name="src"') == 500, "src's records_in")
        write(cfg, conf("json"))
        s.proc.send_signal(signal.SIGHUP)
        wait_reloaded(s, 1)
        spoolt.wait_for(lambda: metric("spool_records_in_total", 'name="src"') is not None,
                        timeout=30, what="/metrics back after the reload")
        with open(src, "a") as f:
            f.write("".join("%d\n" % i for i in range(501, 601)))
        spoolt.wait_for(lambda: metric("spool_records_out_total", 'name="A"') == 600,
                        timeout=30, what="A's records_out at 600 (not 100: no reset)")
        check(metric("spool_records_in_total", 'name="src"') == 600, "src's records_in")
        rc = s.terminate()
        check(rc == 0, "spool exited %d" % rc)
    finally:
        s.kill()


t.main()
