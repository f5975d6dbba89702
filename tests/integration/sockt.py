"""sockt: helpers shared by the socket, syslog, journald and tcp-output tests.

A config writer (inputs and outputs given as YAML text), a running spool
that waits until its listeners are up, readers for the `file` output's JSON
lines, a throwaway CA with server and client certificates made with the
openssl CLI, and small line receivers for the tcp/syslog outputs.
"""
import json
import os
import re
import socket
import subprocess
import threading
import time

import spoolt
from spoolt import check, wait_for

SLOW = 3.0 if spoolt.SANITIZE else 1.0
TIMEOUT = 60 * SLOW


def config(tmp, inputs, outputs=None, topics=None, service_extra="", name="spool.yaml"):
    """Writes a config: topic `t` (1 partition, fsync 100ms) unless `topics`
    is given; `outputs` defaults to a json file output at tmp/out.json."""
    if topics is None:
        topics = "  t:\n    partitions: 1\n    fsync: 100ms\n"
    if outputs is None:
        outputs = ("  - type: file\n    name: out\n    topics: [t]\n"
                   "    path: %s/out.json\n    format: json\n" % tmp)
    cfg = os.path.join(tmp, name)
    spoolt.write(cfg, "service:\n  data_dir: %s/data\n  log_level: info\n%s"
                 "topics:\n%sinputs:\n%soutputs:\n%s" % (tmp, service_extra, topics, inputs,
                                                         outputs))
    return cfg


def start(cfg, listeners=1, env=None):
    """Starts spool and waits until `listeners` inputs logged 'listening on'."""
    s = spoolt.Spool(cfg, env=env)
    try:
        wait_for(lambda: s.stderr().count("listening on") >= listeners or s.proc.poll() is not None,
                 TIMEOUT, what="listeners up")
    except spoolt.Failure:
        s.kill()
        raise
    if s.proc.poll() is not None:
        raise spoolt.Failure("spool exited (%s):\n%s" % (s.proc.returncode, s.stderr()[-3000:]))
    return s


def stop(s):
    rc = s.terminate(60 * SLOW)
    err = s.stderr()
    check(rc == 0, "spool exit code %s:\n%s" % (rc, err[-3000:]))
    check("ERROR: AddressSanitizer" not in err and "runtime error" not in err,
          "sanitizer report:\n" + err[-5000:])
    return err


def out_records(tmp, name="out.json", strict=True):
    """The file output's JSON lines. With strict=False a line that does not
    parse is skipped: after a kill -9 the file output may have left a torn
    last line, which its resend then continues on the same line."""
    path = os.path.join(tmp, name)
    recs = []
    data = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
    # Only complete lines: the output may be writing the next chunk now.
    for line in data.split(b"\n")[:-1]:
        try:
            recs.append(json.loads(line.decode("utf-8")))
        except ValueError:
            if strict:
                raise
    return recs


def wait_records(tmp, n, name="out.json", timeout=None):
    def enough():
        r = out_records(tmp, name)
        return r if len(r) >= n else None
    try:
        return wait_for(enough, timeout or TIMEOUT, 0.1, what="%d records in %s" % (n, name))
    except spoolt.Failure:
        got = out_records(tmp, name)
        raise spoolt.Failure("%d of %d records arrived; last: %s" % (len(got), n, got[-3:]))


def send_tcp(port, data, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=30) as c:
        c.sendall(data)


def send_udp(port, datagrams, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        for d in datagrams:
            c.sendto(d, (host, port))


def run(cmd, input=None, timeout=60, check_rc=True):
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise spoolt.Failure("%s: rc %d\n%s%s" % (" ".join(cmd), p.returncode,
                                                  p.stdout.decode(errors="replace"),
                                                  p.stderr.decode(errors="replace")))
    return p


def make_certs(tmp):
    """A CA, a server certificate for 127.0.0.1/localhost and a client
    certificate (CN=client-one), all signed by the CA; returns a dict of paths."""
    d = os.path.join(tmp, "pki")
    os.makedirs(d, exist_ok=True)
    p = {k: os.path.join(d, k + ".pem") for k in
         ("ca", "ca_key", "server", "server_key", "client", "client_key", "other_ca",
          "other_ca_key")}
    ext = os.path.join(d, "san.ext")
    spoolt.write(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca, key, cn in (("ca", "ca_key", "spool-test-ca"), ("other_ca", "other_ca_key", "other")):
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=%s" % cn, "-keyout", p[key], "-out", p[ca]])
    for who, cn, extra in (("server", "localhost", ["-extfile", ext]), ("client", "client-one", [])):
        csr = os.path.join(d, who + ".csr")
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
             "-keyout", p[who + "_key"], "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", p["ca"], "-CAkey", p["ca_key"],
             "-CAcreateserial", "-days", "2", "-out", p[who]] + extra)
    return p


def metric(text, metric_name, **labels):
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != metric_name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


class LineReceiver:
    """A TCP server on 127.0.0.1 collecting bytes from every connection,
    in a thread; `data()` is everything received so far, per connection
    concatenated in accept order."""

    def __init__(self, port=0, ssl_ctx=None):
        self.ssl_ctx = ssl_ctx
        self.tls_errors = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.chunks = []
        self.conns = []
        self.lock = threading.Lock()
        self.closed = False
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            idx = len(self.chunks)
            self.chunks.append(b"")
            self.conns.append(c)
            threading.Thread(target=self._read, args=(c, idx), daemon=True).start()

    def _read(self, c, idx):
        if self.ssl_ctx is not None:
            try:
                c = self.ssl_ctx.wrap_socket(c, server_side=True)
                self.conns[idx] = c
            except Exception as e:  # noqa: BLE001
                self.tls_errors.append(str(e))
                c.close()
                return
        while True:
            try:
                b = c.recv(65536)
            except OSError:
                return
            if not b:
                return
            with self.lock:
                self.chunks[idx] += b

    def data(self):
        with self.lock:
            return b"".join(self.chunks)

    def lines(self):
        d = self.data()
        return d.split(b"\n")[:-1]

    def close(self):
        self.closed = True
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def wait_log(s, text, timeout=None):
    return wait_for(lambda: text in s.stderr(), timeout or TIMEOUT, 0.05,
                    what="%r in spool's log" % text)


def free_port_udp():
    return spoolt.free_port(socket.SOCK_DGRAM)


def now():
    return time.monotonic()
