"""Bounded memory under a stalled output (issue 8).

A fast input (stdin fed by `seq`, a few hundred MiB of 200-byte numbered
lines) and an output whose destination never answers. The topic has
`fsync: always` and zstd compression so the log writer is slower than the
input: the queues in front of it fill up to their bound, which is what
memory_limit is about (with a writer that keeps up, nothing would ever
queue; with memory_limit: 2GiB this run peaks at ~540 MiB). Then spool's resident memory must stay near
service.memory_limit for the whole run (the log absorbs the rest), and
everything fed must be in the log afterwards. RSS is sampled from
/proc/<pid>/status every 100 ms; the bound is generous (limit + 64 MiB, and
more under sanitizers whose shadow memory and quarantine are not spool's);
the exact figure belongs in a benchmark.

Two stalls: an HTTP server that accepts connections and never answers
(requests pile up to max_in_flight), and a TCP listener that never reads
(the tcp output blocks in write, fails after write_timeout, reconnects and
blocks again). write_timeout is short because a flush blocked in write()
is not interrupted by shutdown_timeout: the tcp output has no stop() that
would wake it, so spool's exit waits for the write to time out.
"""
import os
import socket
import subprocess
import threading
import time

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
LIMIT_MIB = 64
if spoolt.SANITIZE:
    TOTAL_MIB = 60
    SLACK_MIB = 128  # ASan shadow memory and the (reduced) quarantine; observed ~80
else:
    TOTAL_MIB = 300
    SLACK_MIB = 32  # observed ~30 MiB in all; 256MiB+ if the queues were unbounded
LINE = 200  # bytes per line, newline included


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
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.max_kib = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            v = rss_kib(self.pid)
            if v is None:
                break
            self.samples += 1
            self.max_kib = max(self.max_kib, v)
            time.sleep(0.1)


def run_stalled(tmp, output_yaml):
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: {tmp}/data
  log_level: info
  memory_limit: {LIMIT_MIB}MiB
  shutdown_timeout: 1s
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
    env = {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:quarantine_size_mb=16:"
                           "thread_local_quarantine_size_kb=256"}
    gen = subprocess.Popen(["seq", "-f", "%%0%d.0f" % (LINE - 1), "1", str(n)],
                           stdout=subprocess.PIPE)
    s = spoolt.Spool(cfg, stdin=gen.stdout, env=env)
    gen.stdout.close()
    sampler = Sampler(s.proc.pid)
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
    check(sampler.samples > 10, "too few RSS samples (%d)" % sampler.samples)
    max_mib = sampler.max_kib / 1024.0
    bound = LIMIT_MIB + SLACK_MIB
    print("     fed %d MiB, max RSS %.1f MiB over %d samples (bound %d MiB)" %
          (TOTAL_MIB, max_mib, sampler.samples, bound), flush=True)
    check(max_mib < bound, "max RSS %.1f MiB exceeds %d MiB (memory_limit %d MiB)" %
          (max_mib, bound, LIMIT_MIB))
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
    max_in_flight: 4
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


t.main()
