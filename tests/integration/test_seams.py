"""test_seams: the seams between outputs, the log writer and the service
(issue 12 items 1, 2 and 7).

- dead_letter_full_does_not_wedge: an output whose destination rejects
  everything (400) writes to a small dead-letter topic (on_full: block,
  max_in_flight: 1) until it is full; another topic with its own input and
  output keeps flowing, /health names the full topic, and SIGTERM stops
  spool within shutdown_timeout plus the documented slack.
- shutdown_deadline_counts_stdin_losses: a blocked topic fed from stdin;
  SIGTERM stops spool within shutdown_timeout plus slack, and the one final
  line counts the records read from stdin that never reached the log:
  count + records in the log == lines spool read.
- file_output_kill9_duplicates_at_most_one_chunk: kill -9 in the middle of
  a stream to a file output; after the restart, the duplicates are at most
  one chunk (the cursor reaches the page cache at every move).
"""
import http.server
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)

SLOW = 3 if spoolt.SANITIZE else 1
SLACK_S = 2.0       # SPOOL_SHUTDOWN_SLACK_MS
# Signal delivery, process exit, interpreter latency: the machine's share, not
# spool's deadline, so it scales with an instrumented build's slowness.
START_S = 1.0 * SLOW


def health(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError as e:
        return None, str(e)


class Rejecting:
    """An HTTP sink on 127.0.0.1 that answers every POST with 400."""

    def __init__(self):
        self.count = 0
        sink = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                sink.count += 1
                body = b"bad request: refused by the test"
                self.send_response(400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def read_count(data_dir, topic, fmt="%v\n"):
    r = spoolt.run(["read", topic, "--data-dir", data_dir, "--format", fmt])
    check(r.returncode == 0, "spool read %s: %s" % (topic, r.stderr.decode()[-2000:]))
    return r.stdout.split(b"\n")[:-1]


def timed_stop(s, limit):
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait(limit + 30)
    took = time.monotonic() - t0
    check(took <= limit, "shutdown took %.1fs, more than %.1fs; stderr:\n%s"
          % (took, limit, s.stderr()[-3000:]))
    return rc, took


@t.case
def dead_letter_full_does_not_wedge(tmp):
    sink = Rejecting()
    port = spoolt.free_port()
    data = os.path.join(tmp, "data")
    app_log = os.path.join(tmp, "app.log")
    other_log = os.path.join(tmp, "other.log")
    other_out = os.path.join(tmp, "other.out")
    # Enough rejected records to fill the dead-letter topic several times.
    write(app_log, "".join("app-%06d %s\n" % (i, "x" * 200) for i in range(5000)))
    write(other_log, "")
    cfg = write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {data}
  shutdown_timeout: 3s
  http:
    listen: 127.0.0.1:{port}
topics:
  app:
    partitions: 1
  dead:
    partitions: 1
    segment_bytes: 16KiB
    max_bytes: 64KiB
    on_full: block
  other:
    partitions: 1
inputs:
  - type: tail
    name: app-in
    topic: app
    paths: ["{app_log}"]
    read_from: beginning
  - type: tail
    name: other-in
    topic: other
    paths: ["{other_log}"]
    read_from: beginning
outputs:
  - type: http
    name: rejected
    topics: [app]
    url: http://127.0.0.1:{sink.port}/v1/batches
    format: ndjson
    max_in_flight: 1
    max_records: 100
    dead_letter_topic: dead
  - type: file
    name: other-out
    topics: [other]
    path: {other_out}
  # Reads the dead-letter topic but never delivers: nothing may be deleted.
  - type: http
    name: dead-reader
    topics: [dead]
    url: http://127.0.0.1:{spoolt.free_port()}/v1/batches
""")
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: "topic dead" in health(port)[1], timeout=60 * SLOW,
                        what="/health naming the full dead-letter topic")
        st, text = health(port)
        print("     /health: %s %s" % (st, text.strip()), flush=True)
        check(st == 503 and "full" in text, "/health: %s %s" % (st, text))
        # The other topic keeps flowing while the dead-letter topic is full.
        with open(other_log, "a") as f:
            for i in range(1000):
                f.write("other-%06d\n" % i)
        spoolt.wait_for(lambda: len(spoolt.read_lines(other_out)) >= 1000, timeout=30 * SLOW,
                        what="the other topic's 1000 records in its output")
        lines = spoolt.read_lines(other_out)
        seq = spoolt.seq_check((int(x.split(b"-")[1]) for x in lines), 1000, start=0)
        check(seq["lost"] == 0 and seq["dup"] == 0, "other topic: %s" % seq)
        rc, took = timed_stop(s, 3 + SLACK_S + START_S)
        print("     stopped in %.1fs" % took, flush=True)
        check(rc == 0, "exit %s: %s" % (rc, s.stderr()[-2000:]))
    finally:
        s.kill()
        sink.close()
    dead = read_count(data, "dead", "%h\n")
    print("     %d records in the dead-letter topic, %d requests refused" % (len(dead), sink.count),
          flush=True)
    check(len(dead) >= 100, "dead-letter topic holds only %d records" % len(dead))
    check(all(b"dead_letter.reason=" in h for h in dead), "dead letters without a reason")
    check(len(dead) < 5000, "dead-letter topic took everything (%d): not full?" % len(dead))


@t.case
def shutdown_deadline_counts_stdin_losses(tmp):
    data = os.path.join(tmp, "data")
    feed = os.path.join(tmp, "feed")
    n = 100000
    # 100-byte lines: stdin reads about 1.3 MB at a time, so the topic (64 KiB,
    # an empty partition takes one batch of any size) blocks after two reads.
    write(feed, "".join("line-%06d %s\n" % (i, "y" * 88) for i in range(n)))
    port = spoolt.free_port()
    cfg = write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {data}
  shutdown_timeout: 3s
  http:
    listen: 127.0.0.1:{port}
topics:
  app:
    partitions: 2
    segment_bytes: 16KiB
    max_bytes: 64KiB
    on_full: block
inputs:
  - type: stdin
    name: feed
    topic: app
    exit_on_eof: false
outputs:
  - type: http
    name: nowhere
    topics: [app]
    url: http://127.0.0.1:{spoolt.free_port()}/v1/batches
""")
    with open(feed, "rb") as f:
        s = spoolt.Spool(cfg, stdin=f)
        s.proc.stdout.close()
        try:
            spoolt.wait_for(lambda: "topic app" in health(port)[1], timeout=60 * SLOW,
                            what="/health naming the full topic")
            rc, took = timed_stop(s, 3 + SLACK_S + START_S)
            print("     stopped in %.1fs" % took, flush=True)
            check(rc == 0, "exit %s: %s" % (rc, s.stderr()[-2000:]))
        finally:
            s.kill()
        consumed = os.lseek(f.fileno(), 0, os.SEEK_CUR)
    with open(feed, "rb") as f:
        read_lines = f.read(consumed).count(b"\n")
    err = s.stderr()
    m = re.findall(r"shutdown: (\d+) records from input feed \(stdin\) were accepted but not "
                   r"written to the log", err)
    check(len(m) == 1, "no single final line counting the lost records:\n%s" % err[-3000:])
    lost = int(m[0])
    in_log = len(read_count(data, "app"))
    print("     spool read %d lines: %d in the log, %d counted lost" % (read_lines, in_log, lost),
          flush=True)
    check(lost > 0, "nothing counted lost, but the topic was blocked")
    check(in_log + lost == read_lines, "log %d + lost %d != %d lines read"
          % (in_log, lost, read_lines))


@t.case
def file_output_kill9_duplicates_at_most_one_chunk(tmp):
    data = os.path.join(tmp, "data")
    src = os.path.join(tmp, "src.log")
    out = os.path.join(tmp, "out.txt")
    n = 400000
    max_records = 500
    # The first half only: the second is appended after the kill, so the
    # kill lands before the end of the stream however fast delivery is.
    write(src, "".join("%07d\n" % i for i in range(n // 2)))
    cfg = write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {data}
topics:
  app:
    partitions: 1
inputs:
  - type: tail
    name: src
    topic: app
    paths: ["{src}"]
    read_from: beginning
outputs:
  - type: file
    name: out
    topics: [app]
    path: {out}
    max_records: {max_records}
""")
    s = spoolt.Spool(cfg)
    try:
        # Kill in the middle of delivery (not before).
        spoolt.wait_for(lambda: os.path.exists(out) and os.path.getsize(out) > n * 8 // 4,
                        timeout=60 * SLOW, what="a quarter delivered")
        s.proc.send_signal(signal.SIGKILL)
        s.wait(30)
    finally:
        s.kill()
    had = os.path.getsize(out) // 8
    write(src, "".join("%07d\n" % i for i in range(n // 2, n)), mode="a")
    s = spoolt.Spool(cfg)
    try:
        spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= n, timeout=120 * SLOW,
                        what="all lines delivered after the restart")
        rc = s.terminate(60)
        check(rc == 0, "exit %s" % rc)
    finally:
        s.kill()
    seq = spoolt.seq_check((int(x) for x in spoolt.read_lines(out)), n, start=0)
    print("     killed at ~%d lines delivered: %s" % (had, seq), flush=True)
    check(seq["lost"] == 0, "lost records: %s" % seq)
    check(seq["dup"] <= max_records, "%d duplicates: more than one chunk (%d)"
          % (seq["dup"], max_records))


t.main()
