"""The HTTP API of a real `spool run` (service.http.listen):

- /metrics passes `promtool check metrics` (Debian package `prometheus`) and
  its counters equal what the test sent: N records through the stdin input
  and out of the file output;
- /health is 503 (naming the output) while an http output's destination is
  down, and 200 again once it is up and has the records;
- /api/v1/topics is JSON; unknown paths 404, other methods 405.
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)

TIMEOUT = 120 if spoolt.SANITIZE else 60


def call(port, path, method="GET", data=None):
    """Returns (status, body) of one request; never raises on an HTTP status."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def api_up(port):
    try:
        return call(port, "/metrics")[0] == 200
    except OSError:
        return False


def sample(text, metric, **labels):
    """The value of the sample `metric` whose labels include `labels`, or None."""
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def promtool_check(text):
    tool = shutil.which("promtool")
    check(tool is not None, "promtool not found: install the Debian package `prometheus`")
    r = subprocess.run([tool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    check(r.returncode == 0, "promtool check metrics exited %d:\n%s\n--- page:\n%s"
          % (r.returncode, out, text[:6000]))


def config(tmp, port, inputs, outputs):
    return spoolt.write(os.path.join(tmp, "spool.yaml"), """
service:
  data_dir: %s/data
  log_level: info
  http:
    listen: 127.0.0.1:%d
topics:
  t:
    partitions: 2
inputs:
%s
outputs:
%s
""" % (tmp, port, inputs, outputs))


@t.case
def metrics_match_and_pass_promtool(tmp):
    n = 2500
    port = spoolt.free_port()
    out = os.path.join(tmp, "out.txt")
    cfg = config(tmp, port, """
  - type: stdin
    name: in
    topic: t
""", """
  - type: file
    name: copy
    topics: [t]
    path: %s
    format: raw
""" % out)
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    try:
        wait_for(lambda: api_up(port) or s.proc.poll() is not None, TIMEOUT, what="the HTTP API")
        check(s.proc.poll() is None, "spool exited:\n" + s.stderr()[-4000:])
        s.proc.stdin.write(b"".join(b"line %d\n" % i for i in range(1, n + 1)))
        s.proc.stdin.flush()
        wait_for(lambda: len(spoolt.read_lines(out)) >= n, TIMEOUT, what="%d lines in %s" % (n, out))

        def counters_settled():
            status, body = call(port, "/metrics")
            check(status == 200, "/metrics: HTTP %d" % status)
            got_in = sample(body, "spool_records_in_total", kind="input", name="in")
            got_out = sample(body, "spool_records_out_total", kind="output", name="copy")
            return body if (got_in == n and got_out == n) else None

        try:
            body = wait_for(counters_settled, 30, what="records counters to reach %d" % n)
        except spoolt.Failure:
            body = call(port, "/metrics")[1]
            raise spoolt.Failure("counters: in=%s out=%s (want %d)\n%s" % (
                sample(body, "spool_records_in_total", kind="input", name="in"),
                sample(body, "spool_records_out_total", kind="output", name="copy"), n, body[:6000]))
        promtool_check(body)
        check(body.count("# TYPE spool_records_in_total counter\n") == 1,
              "TYPE of spool_records_in_total not exactly once")
        check(sample(body, "spool_build_info") == 1, "no spool_build_info")
        rss = sample(body, "process_resident_memory_bytes")
        check(rss is not None and rss > 0, "no process_resident_memory_bytes")
        bytes_in = sample(body, "spool_bytes_in_total", kind="input", name="in")
        check(bytes_in is not None and bytes_in >= sum(len("line %d" % i) for i in range(1, n + 1)),
              "spool_bytes_in_total=%s" % bytes_in)

        status, text = call(port, "/health")
        check(status == 200 and json.loads(text) == {"status": "ok"}, "/health: %d %s" % (status, text))
        status, text = call(port, "/api/v1/topics")
        check(status == 200, "/api/v1/topics: HTTP %d %s" % (status, text))
        doc = json.loads(text)
        check("t" in json.dumps(doc), "/api/v1/topics does not mention topic t: %s" % text)
        check(call(port, "/nope")[0] == 404, "/nope is not 404")
        check(call(port, "/metrics", method="POST", data=b"x")[0] == 405, "POST /metrics is not 405")
    finally:
        try:
            s.proc.stdin.close()
        except OSError:
            pass
        rc = s.terminate(TIMEOUT)
    check(rc == 0, "spool exited %s:\n%s" % (rc, s.stderr()[-4000:]))


class Sink(http.server.ThreadingHTTPServer):
    """An HTTP destination that counts the ndjson lines POSTed to it."""

    def __init__(self, port):
        self.lines = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), SinkHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


class SinkHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.lines += sum(1 for l in body.split(b"\n") if l.strip())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@t.case
def health_follows_destination(tmp):
    n = 50
    port = spoolt.free_port()
    dest_port = spoolt.free_port()  # nothing listens here yet
    cfg = config(tmp, port, """
  - type: stdin
    name: in
    topic: t
""", """
  - type: http
    name: dest
    topics: [t]
    url: http://127.0.0.1:%d/ingest
    format: ndjson
    compression: none
    connect_timeout: 1s
    timeout: 5s
    retry_backoff: 100ms
    retry_backoff_max: 500ms
""" % dest_port)
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    sink = None
    try:
        wait_for(lambda: api_up(port) or s.proc.poll() is not None, TIMEOUT, what="the HTTP API")
        check(s.proc.poll() is None, "spool exited:\n" + s.stderr()[-4000:])
        s.proc.stdin.write(b"".join(b"record %d\n" % i for i in range(1, n + 1)))
        s.proc.stdin.flush()

        def unhealthy():
            status, text = call(port, "/health")
            return (status, text) if status == 503 else None

        status, text = wait_for(unhealthy, TIMEOUT, what="/health to turn 503")
        doc = json.loads(text)
        check(doc.get("status") == "unhealthy", "503 body: %s" % text)
        check("dest" in doc.get("reason", ""), "the reason does not name the output: %s" % text)
        status, body = call(port, "/metrics")
        check(status == 200, "/metrics while unhealthy: HTTP %d" % status)
        promtool_check(body)

        sink = Sink(dest_port)
        wait_for(lambda: call(port, "/health")[0] == 200, TIMEOUT, what="/health back to 200")
        wait_for(lambda: sink.lines >= n, TIMEOUT, what="%d records at the destination" % n)
        check(sink.lines == n, "destination got %d lines, sent %d" % (sink.lines, n))
        status, text = call(port, "/health")
        check(status == 200 and json.loads(text)["status"] == "ok", "/health: %d %s" % (status, text))
        body = call(port, "/metrics")[1]
        out = sample(body, "spool_records_out_total", kind="output", name="dest")
        check(out == n, "spool_records_out_total for dest = %s, want %d" % (out, n))
        retries = sample(body, "spool_retries_total", kind="output", name="dest")
        check(retries is not None and retries >= 1, "spool_retries_total for dest = %s" % retries)
    finally:
        try:
            s.proc.stdin.close()
        except OSError:
            pass
        rc = s.terminate(TIMEOUT)
        if sink:
            sink.stop()
    check(rc == 0, "spool exited %s:\n%s" % (rc, s.stderr()[-4000:]))


t.main()
