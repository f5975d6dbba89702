"""memory_limit holds: RSS <= memory_limit + a fixed overhead (issue 12 item 6).

service.memory_limit is one byte account (agent/memory.c, docs/memory.md):
batches (built, queued, written, pooled), the output runners' chunks, the
http input's request bodies and the tail input's read buffers all count
against it, and what is refused pushes back (tail stops reading, http
answers 503 with Retry-After, an output sends fewer chunks at once). The
promise is that spool's resident memory stays within memory_limit plus a
fixed overhead, OVERHEAD_MIB below, documented in README and
docs/memory.md (binary, libraries, thread stacks, the log, per-file and
per-connection bookkeeping, malloc's slack). Each case drives heavy input
through a slow writer (`fsync: always`, zstd) so the pipeline's queues fill
up, samples VmRSS from /proc/<pid>/status every 100 ms (a bounded loop for
the life of the process), asserts the bound, and then asserts that nothing
accepted was lost.

(a) a stalled output with heavy stdin input: an HTTP server that accepts
    connections and never answers (requests pile up to max_in_flight), and
    a TCP listener that never reads (the tcp output blocks in write, fails
    after write_timeout, reconnects and blocks again; write_timeout is short
    because a blocked write() is not interrupted by shutdown_timeout);
(b) an aggregator: several concurrent clients post ndjson bodies near
    max_body_bytes to the http input;
(c) 1,000 tailed files being appended;
(d) the default settings moving a file to TCP (bench/run's W1, issue 18):
    every byte arrives; the peak RSS (VmHWM) is printed, not asserted (memory
    targets are measured by bench/, never asserted in tests).

Under sanitizers the RSS bound is not asserted (ASan's shadow memory and
quarantine are not spool's); the workloads still run, smaller, and every
no-loss assertion holds.
"""
import http.client
import os
import socket
import subprocess
import threading
import time
import urllib.request

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
LIMIT_MIB = 64
# The fixed overhead documented in README and docs/memory.md: RSS stays at
# most memory_limit + OVERHEAD_MIB.
OVERHEAD_MIB = 32
BOUND_MIB = LIMIT_MIB + OVERHEAD_MIB
if spoolt.SANITIZE:
    TOTAL_MIB = 60
else:
    TOTAL_MIB = 300
LINE = 200  # bytes per line, newline included
ASAN_ENV = {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:quarantine_size_mb=16:"
                            "thread_local_quarantine_size_kb=256"}


class Sink(threading.Thread):
    """Accepts connections on 127.0.0.1 and never answers. With read=True it
    reads (and discards) what arrives, like a server that never replies; with
    read=False it never reads, so the sender's socket buffers fill up."""

    def __init__(self, read):
        super().__init__(daemon=True)
        self.read = read
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.received = 0
        self.halt = False

    def run(self):
        self.ls.settimeout(0.2)
        while not self.halt:
            try:
                c, _ = self.ls.accept()
                if not self.read:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.conns.append(c)
            except socket.timeout:
                pass
            except OSError:
                break
            if self.read:
                for c in list(self.conns):
                    c.setblocking(False)
                    try:
                        while True:
                            d = c.recv(1 << 20)
                            if not d:
                                break
                            self.received += len(d)
                    except (BlockingIOError, OSError):
                        pass

    def close(self):
        self.halt = True
        self.join(5)
        for c in self.conns:
            c.close()
        self.ls.close()


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return 0


class Sampler(threading.Thread):
    """VmRSS every 100 ms while the process lives (or until halted); with
    api, also the memory account's gauge from /metrics (for the report)."""

    def __init__(self, pid, api=None):
        super().__init__(daemon=True)
        self.pid = pid
        self.api = api
        self.max_kib = 0
        self.max_reserved = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            v = rss_kib(self.pid)
            if v is None:
                break
            self.samples += 1
            self.max_kib = max(self.max_kib, v)
            if self.api:
                self.max_reserved = max(self.max_reserved,
                                        metrics_value(self.api, "spool_memory_reserved_bytes")
                                        or 0)
            time.sleep(0.1)  # the sampling period; not synchronization


def check_rss(sampler, what):
    """The bound, asserted unless under sanitizers (the figure is printed)."""
    check(sampler.samples >= 5, "too few RSS samples (%d)" % sampler.samples)
    max_mib = sampler.max_kib / 1024.0
    print("     %s: max RSS %.1f MiB over %d samples (bound %d MiB = memory_limit %d + "
          "overhead %d%s)%s" % (what, max_mib, sampler.samples, BOUND_MIB, LIMIT_MIB,
                                OVERHEAD_MIB, ", not asserted under sanitizers"
                                if spoolt.SANITIZE else "",
                                ", max counted %.1f MiB" % (sampler.max_reserved / 1048576.0)
                                if sampler.api else ""), flush=True)
    if not spoolt.SANITIZE:
        check(max_mib <= BOUND_MIB, "max RSS %.1f MiB exceeds memory_limit %d MiB + overhead "
              "%d MiB" % (max_mib, LIMIT_MIB, OVERHEAD_MIB))


def run_stalled(tmp, output_yaml):
    cfg = os.path.join(tmp, "spool.yaml")
    api = spoolt.free_port()
    write(cfg, f"""
service:
  data_dir: {tmp}/data
  log_level: info
  memory_limit: {LIMIT_MIB}MiB
  shutdown_timeout: 1s
  http: {{ listen: 127.0.0.1:{api} }}
topics:
  app:
    fsync: always
    compression: zstd
    segment_bytes: 32MiB
inputs:
  - type: stdin
    name: in
    topic: app
outputs:
{output_yaml}
""")
    n = TOTAL_MIB * 1024 * 1024 // LINE
    env = ASAN_ENV
    gen = subprocess.Popen(["seq", "-f", "%%0%d.0f" % (LINE - 1), "1", str(n)],
                           stdout=subprocess.PIPE)
    s = spoolt.Spool(cfg, stdin=gen.stdout, env=env)
    gen.stdout.close()
    sampler = Sampler(s.proc.pid, api)
    sampler.start()
    try:
        # exit_on_eof: at the end of the input spool drains into the log
        # and stops (the stalled output's shutdown_timeout is 1s).
        rc = s.wait(timeout=600 if spoolt.SANITIZE else 240)
        check(rc == 0, "spool exited %d: %s" % (rc, s.stderr()[-2000:]))
        check(gen.wait(10) == 0, "seq failed")
    finally:
        sampler.halt.set()
        sampler.join(5)
        s.kill()
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    check_rss(sampler, "fed %d MiB" % TOTAL_MIB)
    # Everything fed is in the log, once, in order.
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"], timeout=300)
    check(r.returncode == 0, "spool read failed: %s" % r.stderr[-2000:])
    vals = r.stdout.split(b"\n")[:-1]
    check(len(vals) == n, "the log has %d records, %d were fed" % (len(vals), n))
    bad = next((i for i, v in enumerate(vals) if len(v) != LINE - 1 or int(v) != i + 1), None)
    check(bad is None, "record %r at index %s out of sequence" % (
        vals[bad][-20:] if bad is not None else None, bad))
    return cfg


@t.case
def http_destination_never_answers(tmp):
    sink = Sink(read=True)
    sink.start()
    try:
        run_stalled(tmp, f"""  - type: http
    name: stalled
    topics: [app]
    url: http://127.0.0.1:{sink.port}/v1/batches
    format: ndjson
    timeout: 1h
    max_bytes: 4MiB
    max_in_flight: 16
""")
        check(sink.received > 0, "the HTTP sink received nothing: was the output stalled there?")
    finally:
        sink.close()


@t.case
def tcp_destination_never_reads(tmp):
    sink = Sink(read=False)
    sink.start()
    try:
        run_stalled(tmp, f"""  - type: tcp
    name: stalled
    topics: [app]
    url: tcp://127.0.0.1:{sink.port}
    write_timeout: 2s
    max_bytes: 4MiB
""")
        check(sink.conns, "the TCP sink got no connection")
    finally:
        sink.close()



# ---------------------------------------------------------------- (b) aggregator


def metrics_value(port, name, label_part=""):
    """Sum of the samples of one metric on /metrics (None if unreachable)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and label_part in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def slow_topic():
    # A writer slower than the inputs, so the queues in front of it fill up.
    return """topics:
  app:
    fsync: always
    compression: zstd
    segment_bytes: 32MiB
"""


if spoolt.SANITIZE:
    CLIENTS, BODIES, BODY_MIB = 4, 3, 6
else:
    CLIENTS, BODIES, BODY_MIB = 6, 6, 7
REC = 200  # bytes per ndjson line, newline included


class Client(threading.Thread):
    """Posts BODIES ndjson bodies of about BODY_MIB MiB, each record a JSON
    string "c<client>-b<body>-<seq>" padded to REC bytes. A 503 (busy) is
    retried after a short pause, as an agent would after Retry-After, as is
    a connection the server closed (it may answer 503 before reading the
    body). Every attempt is bounded."""

    def __init__(self, port, cid, start=None):
        super().__init__(daemon=True)
        self.port = port
        self.cid = cid
        self.start_together = start  # a Barrier: every client's first POST at once
        self.done = 0
        self.busy = 0
        self.not_durable = 0
        self.error = None

    def body(self, b):
        n = BODY_MIB * 1024 * 1024 // REC
        lines = []
        for i in range(n):
            v = "c%d-b%d-%07d" % (self.cid, b, i)
            lines.append('"%s"\n' % v.ljust(REC - 3, "x"))
        return "".join(lines).encode()

    def run(self):
        try:
            for b in range(BODIES):
                data = self.body(b)
                if b == 0 and self.start_together:
                    self.start_together.wait(120)
                for attempt in range(3000):
                    status, text = self.post(data)
                    if status == 200:
                        break
                    if status == 503:
                        self.busy += 1
                        if b"ack_timeout" in text:
                            self.not_durable += 1
                    elif status is not None:
                        raise AssertionError("HTTP %s: %r" % (status, text[:200]))
                    time.sleep(0.1)  # retry pacing (Retry-After), not synchronization
                else:
                    raise AssertionError("body %d never accepted" % b)
                self.done += 1
        except Exception as e:  # reported by the test
            self.error = repr(e)

    def post(self, data):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request("POST", "/v1/batches", body=data,
                      headers={"Content-Type": "application/x-ndjson"})
            r = c.getresponse()
            return r.status, r.read()
        except (ConnectionError, http.client.HTTPException, OSError):
            return None, b""
        finally:
            c.close()


@t.case
def aggregator_large_http_batches(tmp):
    port, api = spoolt.free_port(), spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: {tmp}/data
  log_level: info
  memory_limit: {LIMIT_MIB}MiB
  shutdown_timeout: 2s
  http: {{ listen: 127.0.0.1:{api} }}
{slow_topic()}
inputs:
  - type: http
    name: ingest
    topic: app
    listen: 127.0.0.1:{port}
    max_body_bytes: 8MiB
outputs:
  - type: file
    name: archive
    topics: [app]
    path: {tmp}/out.txt
""")
    s = spoolt.Spool(cfg, env=ASAN_ENV)
    sampler = Sampler(s.proc.pid, api)
    sampler.start()
    clients = []
    waits = None
    try:
        spoolt.wait_for(lambda: metrics_value(api, "spool_memory_limit_bytes") is not None,
                        timeout=60, what="the HTTP API")
        together = threading.Barrier(CLIENTS)
        clients = [Client(port, i, together) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(900)
        check(all(not c.is_alive() for c in clients), "clients did not finish")
        errors = [c.error for c in clients if c.error]
        check(not errors, "client errors: %s" % errors)
        peak = metrics_value(api, "spool_memory_reserved_bytes")
        waits = (metrics_value(api, "spool_memory_waits_total") or 0) + \
            (metrics_value(api, "spool_memory_refusals_total") or 0)
        # The first bodies, posted at once, need 3 x CLIENTS x BODY_MIB > memory_limit
        # to be admitted together: the account pushed some of them back (the
        # http input's event loop never waits: it answers 503 at once).
        assert 3 * CLIENTS * BODY_MIB > LIMIT_MIB
        check(waits > 0, "no request was pushed back by memory_limit (waits+refusals %s)" %
              waits)
        rc = s.terminate(timeout=120)
        check(rc == 0, "spool exited %d: %s" % (rc, s.stderr()[-2000:]))
    finally:
        sampler.halt.set()
        sampler.join(5)
        s.kill()
    busy = sum(c.busy for c in clients)
    check_rss(sampler, "%d clients x %d bodies of %d MiB, %d answered 503" %
              (CLIENTS, BODIES, BODY_MIB, busy))
    print("     memory account at the end: %s bytes, %s waits" % (peak, waits), flush=True)
    # Every record of every accepted body is in the log.
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"], timeout=600)
    check(r.returncode == 0, "spool read failed: %s" % r.stderr[-2000:])
    got = {}
    for v in r.stdout.split(b"\n")[:-1]:
        k = v.rstrip(b"x")
        got[k] = got.get(k, 0) + 1
    n = BODY_MIB * 1024 * 1024 // REC
    missing = [(c, b) for c in range(CLIENTS) for b in range(BODIES)
               if any(("c%d-b%d-%07d" % (c, b, i)).encode() not in got for i in (0, n // 2, n - 1))]
    check(not missing, "bodies missing from the log: %s" % missing[:10])
    total = CLIENTS * BODIES * n
    check(len(got) == total, "the log has %d distinct records, %d were accepted" %
          (len(got), total))
    dups = sum(v - 1 for v in got.values())
    # A 503 for "not durable within ack_timeout" is the one case where the
    # same body may land twice (at least once); none is expected here.
    check(dups == 0 or sum(c.not_durable for c in clients) > 0,
          "%d duplicated records without an ack_timeout 503" % dups)


# ---------------------------------------------------------------- (c) 1,000 files


if spoolt.SANITIZE:
    NFILES, ROUNDS, LINES_PER = 1000, 3, 20
else:
    NFILES, ROUNDS, LINES_PER = 1000, 10, 100
TLINE = 120  # bytes per line, newline included


@t.case
def tail_1000_files(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    api = spoolt.free_port()
    paths = [os.path.join(logs, "f%04d.log" % i) for i in range(NFILES)]
    sink = Sink(read=True)  # a second output, stalled: its chunks pile up
    sink.start()
    for p in paths:
        open(p, "w").close()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: {tmp}/data
  log_level: info
  memory_limit: {LIMIT_MIB}MiB
  shutdown_timeout: 2s
  http: {{ listen: 127.0.0.1:{api} }}
{slow_topic()}
inputs:
  - type: tail
    name: files
    topic: app
    paths: [{logs}/*.log]
    read_from: beginning
    max_open_files: 400
outputs:
  - type: file
    name: archive
    topics: [app]
    path: {tmp}/out.txt
  - type: http
    name: stalled
    topics: [app]
    url: http://127.0.0.1:{sink.port}/v1/batches
    format: ndjson
    timeout: 1h
    max_bytes: 4MiB
    max_in_flight: 16
""")
    s = spoolt.Spool(cfg, env=ASAN_ENV)
    sampler = Sampler(s.proc.pid, api)
    sampler.start()
    total = NFILES * ROUNDS * LINES_PER
    try:
        spoolt.wait_for(lambda: metrics_value(api, "spool_memory_limit_bytes") is not None,
                        timeout=60, what="the HTTP API")
        # Appended round by round while spool reads.
        for r in range(ROUNDS):
            for i, p in enumerate(paths):
                with open(p, "a") as f:
                    f.write("".join(("f%04d-%07d" % (i, r * LINES_PER + k)).ljust(TLINE - 1, "x")
                                    + "\n" for k in range(LINES_PER)))
        spoolt.wait_for(lambda: (metrics_value(api, "spool_records_in_total",
                                               'name="files"') or 0) >= total,
                        timeout=600, interval=0.5, what="%d lines read" % total)
        rc = s.terminate(timeout=120)
        check(rc == 0, "spool exited %d: %s" % (rc, s.stderr()[-2000:]))
    finally:
        sampler.halt.set()
        sampler.join(5)
        s.kill()
        sink.close()
    check_rss(sampler, "%d files, %d MiB appended" % (NFILES, total * TLINE >> 20))
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"], timeout=600)
    check(r.returncode == 0, "spool read failed: %s" % r.stderr[-2000:])
    per = {}
    for v in r.stdout.split(b"\n")[:-1]:
        f, _, n = v.rstrip(b"x").partition(b"-")
        per.setdefault(f, []).append(int(n))
    check(len(per) == NFILES, "lines of %d files in the log, %d written" % (len(per), NFILES))
    for f, vals in per.items():
        st = spoolt.seq_check(vals, ROUNDS * LINES_PER, start=0)
        check(st["lost"] == 0 and st["dup"] == 0 and st["disorder"] == 0,
              "%s: %s" % (f.decode(), st))


@t.case
def body_larger_than_memory_limit_is_503(tmp):
    """A body that can never fit memory_limit gets 503 (the sender keeps its
    records and retries) and a warning naming the fix, never 413 (which an
    agent treats as a rejection); a small one still gets 200."""
    port = spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: {tmp}/data
  memory_limit: 4MiB
topics:
  app: {{}}
inputs:
  - type: http
    name: ingest
    topic: app
    listen: 127.0.0.1:{port}
    max_body_bytes: 16MiB
""")
    s = spoolt.Spool(cfg)
    try:
        c = Client(port, 0)
        spoolt.wait_for(lambda: c.post(b'"hello"\n')[0] == 200, timeout=60,
                        what="a small body accepted")
        # The answer comes before the body is read: send the headers only.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as so:
            so.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/x-ndjson\r\nContent-Length: %d\r\n\r\n" % (6 << 20))
            text = b""
            while len(text) < 65536:  # until the server closes (the body stays unread)
                d = so.recv(4096)
                if not d:
                    break
                text += d
        status = int(text.split(b" ", 2)[1]) if text.startswith(b"HTTP/") else None
        check(status == 503, "a 6 MiB body with memory_limit 4MiB: %r" % text[:300])
        check(b"memory_limit" in text, "the 503 does not say why: %r" % text)
        check(c.post(b'"world"\n')[0] == 200, "a small body after the big one was refused")
        rc = s.terminate(timeout=60)
        check(rc == 0, "spool exited %d" % rc)
    finally:
        s.kill()
    check("raise service.memory_limit" in s.stderr(), "no warning in the log:\n%s" %
          s.stderr()[-2000:])
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"], timeout=60)
    check(r.stdout == b"hello\nworld\n", "the log holds %r" % r.stdout[:200])


# ---------------------------------------------------------------- (d) the defaults

def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class CountingSink(threading.Thread):
    """Accepts one connection and reads until it has `want` bytes (or EOF)."""

    def __init__(self, want):
        super().__init__(daemon=True)
        self.want = want
        self.received = 0
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.ls.settimeout(120)
        self.port = self.ls.getsockname()[1]

    def run(self):
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        with c:
            c.settimeout(120)
            while self.received < self.want:
                try:
                    d = c.recv(1 << 20)
                except OSError:
                    break
                if not d:
                    break
                self.received += len(d)


@t.case
def defaults_file_to_tcp_stay_small(tmp):
    nlines = 50000 if spoolt.SANITIZE else 400000
    line = b"%s host=web-01 method=GET path=/api/v1/orders status=200 bytes=5123 " \
           b"duration_ms=12 user_agent=curl/8.0 seq=%010d\n"
    src = os.path.join(tmp, "app.log")
    size = 0
    with open(src, "wb") as f:
        for i in range(nlines):
            b = line % (b"2026-12-01T19:00:00Z", i)
            f.write(b)
            size += len(b)
    sink = CountingSink(size)
    sink.start()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: {tmp}/data
topics:
  logs:
    fsync: never
inputs:
  - type: tail
    topic: logs
    paths: [{src}]
    read_from: beginning
outputs:
  - type: tcp
    topics: [logs]
    url: tcp://127.0.0.1:{sink.port}
    format: raw
""")
    s = spoolt.Spool(cfg, env=ASAN_ENV)
    try:
        spoolt.wait_for(lambda: sink.received >= size or s.proc.poll() is not None,
                        timeout=240, what="the sink has every line")
        check(sink.received == size, "the sink has %d of %d bytes" % (sink.received, size))
        hwm = vm_hwm_kib(s.proc.pid) / 1024.0
        # Issue 18's target is 24 MiB (17 measured when the defaults were sized
        # for it; 48-54 before): bench/run measures it, this only reports it.
        print("     defaults, %d lines file -> tcp: peak RSS %.1f MiB" % (nlines, hwm),
              flush=True)
        rc = s.terminate(timeout=60)
        check(rc == 0, "spool exited %d" % rc)
    finally:
        s.kill()
        sink.ls.close()
        sink.join(5)


t.main()
