"""The `tcp` output (and the connection code it shares with `syslog`).

- raw and json newline-delimited records reach a TCP receiver, in order;
- the destination down at start: the output retries with backoff, then
  delivers everything once it is up;
- the receiver goes away between chunks: the output notices the closed
  connection, reconnects and loses nothing;
- TLS (tls://) to a Python ssl server: verified with tls.ca; a server
  certificate from another CA is refused with the reason logged and
  nothing sent; mutual TLS with tls.cert/tls.key.
"""
import json
import os
import ssl

import sockt
import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)


def feed_input(port):
    return "  - type: socket\n    name: feed\n    topic: t\n    listen: tcp://127.0.0.1:%d\n" % port


def tcp_output(name, url, extra=""):
    return ("  - type: tcp\n    name: %s\n    topics: [t]\n    url: %s\n"
            "    retry_backoff: 100ms\n    retry_backoff_max: 1s\n%s" % (name, url, extra))


class Receiver(sockt.LineReceiver):
    """A LineReceiver that also counts the connections it read to their end
    (EOF or error): once eofs == accepted, every byte sent is in lines()."""

    def __init__(self, port=0, ssl_ctx=None):
        self.eofs = 0  # before the base class starts its accept thread
        super().__init__(port, ssl_ctx)

    def _read(self, c, idx):
        super()._read(c, idx)
        with self.lock:
            self.eofs += 1


def established_to(port):
    """How many TCP connections to 127.0.0.1:port are ESTABLISHED on the
    connecting side (from /proc/net/tcp)."""
    want = ":%04X" % port
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[2].endswith(want) and parts[3] == "01":
                n += 1
    return n


def count_log(s, *parts):
    """Lines of this run's log that contain every one of parts."""
    return sum(all(p in ln for p in parts) for ln in s.run_stderr().splitlines())


def lines_payload(a, b):
    return b"".join(b"line %d\n" % i for i in range(a, b))


def wait_lines(recv, n):
    return wait_for(lambda: len(recv.lines()) >= n and recv.lines(), sockt.TIMEOUT, 0.1,
                    what="%d lines at the receiver" % n)


@t.case
def raw_and_json(tmp):
    feed = spoolt.free_port()
    raw = sockt.LineReceiver()
    js = sockt.LineReceiver()
    outputs = (tcp_output("raw", "tcp://127.0.0.1:%d" % raw.port) +
               tcp_output("json", "tcp://127.0.0.1:%d" % js.port, "    format: json\n"))
    s = sockt.start(sockt.config(tmp, feed_input(feed), outputs))
    try:
        sockt.send_tcp(feed, lines_payload(0, 5000))
        got = wait_lines(raw, 5000)
        jl = wait_lines(js, 5000)
    finally:
        sockt.stop(s)
        raw.close()
        js.close()
    check(got == [b"line %d" % i for i in range(5000)], "raw lines in order")
    objs = [json.loads(x) for x in jl]
    check([o["value"] for o in objs] == ["line %d" % i for i in range(5000)], "json values")
    check([o["offset"] for o in objs] == list(range(5000)), "offsets")
    check(objs[0]["topic"] == "t" and objs[0]["headers"]["input"] == "feed", objs[0])


@t.case
def destination_down_then_up(tmp):
    feed = spoolt.free_port()
    dest = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, feed_input(feed), tcp_output("late",
                                                                   "tcp://127.0.0.1:%d" % dest)))
    recv = None
    try:
        sockt.send_tcp(feed, lines_payload(0, 1000))
        # Refused, then refused again after its backoff: it keeps retrying.
        wait_for(lambda: count_log(s, "connect 127.0.0.1:%d: Connection refused" % dest) >= 2,
                 sockt.TIMEOUT, what="two refused connects")
        recv = sockt.LineReceiver(dest)
        got = wait_lines(recv, 1000)
        sockt.wait_log(s, "connected to 127.0.0.1:%d" % dest)
    finally:
        err = sockt.stop(s)
        if recv:
            recv.close()
    check(got == [b"line %d" % i for i in range(1000)], "all, in order, once")
    check("Connection refused" in err, "the refusal was logged")


@t.case
def receiver_restarts_between_chunks(tmp):
    feed = spoolt.free_port()
    recv = sockt.LineReceiver()
    port = recv.port
    s = sockt.start(sockt.config(tmp, feed_input(feed), tcp_output("re",
                                                                   "tcp://127.0.0.1:%d" % port)))
    recv2 = None
    try:
        sockt.send_tcp(feed, lines_payload(0, 500))
        first = wait_lines(recv, 500)
        recv.close()
        # The receiver's FIN reached spool's side: its connection is no longer
        # established (half-closed, or already closed by spool).
        wait_for(lambda: established_to(port) == 0, sockt.TIMEOUT,
                 what="spool's connection to the receiver to leave ESTABLISHED")
        recv2 = Receiver(port)
        sockt.send_tcp(feed, lines_payload(500, 1000))
        wait_lines(recv2, 500)
    finally:
        sockt.stop(s)
        if recv2:
            # spool has exited: every connection it had reaches EOF, and then
            # everything it sent is in lines() (a late duplicate included).
            wait_for(lambda: recv2.eofs >= recv2.accepted, sockt.TIMEOUT,
                     what="the receiver to read its connections to the end")
            second = recv2.lines()
            recv2.close()
    check(first == [b"line %d" % i for i in range(500)], "first half")
    check(second == [b"line %d" % i for i in range(500, 1000)],
          "second half on the new connection, none lost: %d lines" % len(second))
    check(recv2.accepted == 1, "one reconnect")


def server_ctx(pki, require_client=False, other=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if other:
        # A certificate the client's CA did not sign.
        d = os.path.dirname(pki["ca"])
        ctx.load_cert_chain(pki["other_ca"], pki["other_ca_key"])
    else:
        ctx.load_cert_chain(pki["server"], pki["server_key"])
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki["ca"])
    return ctx


@t.case
def tls_output(tmp):
    pki = sockt.make_certs(tmp)
    feed = spoolt.free_port()
    good = sockt.LineReceiver(ssl_ctx=server_ctx(pki))
    mtls = sockt.LineReceiver(ssl_ctx=server_ctx(pki, require_client=True))
    bad = sockt.LineReceiver(ssl_ctx=server_ctx(pki, other=True))
    outputs = (tcp_output("good", "tls://127.0.0.1:%d" % good.port,
                          "    tls:\n      ca: %s\n" % pki["ca"]) +
               tcp_output("mtls", "tls://localhost:%d" % mtls.port,
                          "    tls:\n      ca: %s\n      cert: %s\n      key: %s\n" % (
                              pki["ca"], pki["client"], pki["client_key"])) +
               tcp_output("bad", "tls://127.0.0.1:%d" % bad.port,
                          "    tls:\n      ca: %s\n" % pki["ca"]))
    s = sockt.start(sockt.config(tmp, feed_input(feed), outputs,
                                 service_extra="  shutdown_timeout: 1s\n"))
    try:
        sockt.send_tcp(feed, lines_payload(0, 2000))
        g = wait_lines(good, 2000)
        m = wait_lines(mtls, 2000)
        # The unverified server is refused, and again on the retry.
        wait_for(lambda: count_log(s, "[output:tcp:bad]", "certificate") >= 2, sockt.TIMEOUT,
                 what="two refused handshakes with the unverified server")
    finally:
        err = sockt.stop(s)
        for r in (good, mtls, bad):
            r.close()
    check(g == [b"line %d" % i for i in range(2000)], "tls lines")
    check(m == [b"line %d" % i for i in range(2000)], "mutual tls lines")
    check(bad.data() == b"", "nothing sent to an unverified server")
    check("[output:tcp:bad]" in err and "certificate" in err, err[-2000:])


@t.case
def config_errors(tmp):
    cfg = sockt.config(tmp, feed_input(1),
                       tcp_output("a", "http://x:1") + tcp_output("b", "tcp://hostonly") +
                       tcp_output("c", "tls://h:1", "    tls:\n      cert: /c.pem\n") +
                       "  - type: syslog\n    name: d\n    topics: [t]\n    url: tcp://h:1\n"
                       "    facility: nope\n")
    p = spoolt.run(["check", "-c", cfg])
    err = p.stderr.decode() + p.stdout.decode()
    check(p.returncode == 2, "exit 2, got %d: %s" % (p.returncode, err))
    for want in ("http://x:1", "no port", "tls.key", "unknown facility"):
        check(want in err, "%r in %s" % (want, err))


t.main()
