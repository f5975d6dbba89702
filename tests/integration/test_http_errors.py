"""The http input's and the http output's error paths, and the http output
against a generic JSON endpoint that is not spool.

Input (a real aggregator, requests from Python): 401 without a token, 403
with a wrong one, tokens_file re-read when it changes, 413 for an
oversized body, 400 for a bad CRC / truncated batch / malformed ndjson /
unknown Content-Type, 200 for valid native and ndjson bodies (with
Spool-First/Next-Offset honoured), mutual TLS (trusted, untrusted and
missing client certificates), and the agent's output over TLS.

Output (a real agent, stdin input): the JSON shape a generic endpoint
receives (ndjson and json, gzip); a 400 lands in the dead-letter topic
with its status and body as the reason; a 429 with Retry-After is honoured.
"""
import gzip
import http.server
import json
import os
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
import test_http_e2e as e2e  # noqa: E402

SLOW = e2e.SLOW

# ---------------------------------------------------------------- RecordBatch v2 in Python

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(v):
    v = (v << 1) ^ (v >> 63)  # zigzag
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_batch(base_offset, records, ts=1700000000000):
    """records: list of (key bytes|None, value bytes, [(hk, hv)])."""
    body = bytearray()
    for i, (k, v, hdrs) in enumerate(records):
        r = bytearray(b"\x00")  # attributes
        r += varint(0) + varint(i)
        r += varint(-1) if k is None else varint(len(k)) + k
        r += varint(len(v)) + v
        r += varint(len(hdrs))
        for hk, hv in hdrs:
            r += varint(len(hk)) + hk + varint(len(hv)) + hv
        body += varint(len(r)) + r
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, ts, ts, -1, -1, -1, len(records))
    after_crc += bytes(body)
    crc = crc32c(after_crc)
    rest = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(rest)) + rest


# ---------------------------------------------------------------- HTTP client

def post(url, body, headers=None, ctx=None, timeout=30):
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


NATIVE = {"Content-Type": "application/vnd.spool.batch"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def wait_port(port, timeout=30):
    import socket

    def ok():
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()
    spoolt.wait_for(ok, timeout=timeout * SLOW, what="port %d" % port)


t = spoolt.Suite(__file__)


@t.case
def input_statuses(tmp):
    port = spoolt.free_port()
    tokens = spoolt.write(os.path.join(tmp, "tokens"), "# agents\nsecret-1\n\n  secret-2  \n")
    out = os.path.join(tmp, "agg.out")
    jout = os.path.join(tmp, "agg.json")
    cfg = e2e.aggregator_config(tmp, port, out, json_out=jout, extra_input=(
        "    tokens_file: %s\n    max_body_bytes: 4KiB\n" % tokens))
    agg = spoolt.Spool(cfg)
    url = "http://127.0.0.1:%d/v1/batches" % port
    auth = {"Authorization": "Bearer secret-1"}
    try:
        wait_port(port)
        good = encode_batch(100, [(b"k", b"native-1", [(b"host", b"h1")]),
                                  (b"k", b"native-2", [(b"agent", b"spoofed")])])
        st, body, hdr = post(url, good, NATIVE)
        check(st == 401, "no token: %s %s" % (st, body))
        check(hdr.get("WWW-Authenticate") == "Bearer", "401 without WWW-Authenticate: %s" % hdr)
        st, body, _ = post(url, good, dict(NATIVE, Authorization="Bearer nope"))
        check(st == 403, "wrong token: %s %s" % (st, body))
        st, body, _ = post(url, good, dict(NATIVE, **auth))
        check(st == 200, "good batch: %s %s" % (st, body))
        st, body, _ = post(url, good, dict(NATIVE, Authorization="Bearer secret-2"))
        check(st == 200, "second token (trimmed): %s %s" % (st, body))

        # Offsets headers: only offsets in [first, next) are taken.
        three = encode_batch(10, [(None, b"skip-me", []), (None, b"take-me", []),
                                  (None, b"skip-too", [])])
        st, body, _ = post(url, three, dict(NATIVE, **auth, **{"Spool-First-Offset": "11",
                                                                "Spool-Next-Offset": "12"}))
        check(st == 200 and "ok 1 records" in body, "offset headers: %s %s" % (st, body))

        # Corrupt CRC, truncated batch, unknown format, bad encoding.
        bad = bytearray(good)
        bad[-1] ^= 0x55
        st, body, _ = post(url, bytes(bad), dict(NATIVE, **auth))
        check(st == 400 and "CRC" in body, "bad CRC: %s %s" % (st, body))
        check("\n" not in body.strip(), "reason is not one line: %r" % body)
        st, body, _ = post(url, good[:-3], dict(NATIVE, **auth))
        check(st == 400 and "truncated" in body, "truncated: %s %s" % (st, body))
        st, body, _ = post(url, b"hello", {"Content-Type": "text/plain", **auth})
        check(st == 400 and "unknown format" in body, "unknown format: %s %s" % (st, body))
        st, body, _ = post(url, b"\"x\"", dict(NDJSON, **auth, **{"Content-Encoding": "br"}))
        check(st == 415, "unknown encoding: %s %s" % (st, body))

        # ndjson: good, malformed (with its line number), zstd-free gzip.
        lines = b'{"key":"j","value":"json-1","headers":{"host":"h2"},"timestamp":5}\n"json-2"\n'
        st, body, _ = post(url, lines, dict(NDJSON, **auth))
        check(st == 200 and "ok 2 records" in body, "ndjson: %s %s" % (st, body))
        st, body, _ = post(url, b'"ok"\n{"value": }\n', dict(NDJSON, **auth))
        check(st == 400 and body.startswith("line 2:"), "malformed ndjson: %s %s" % (st, body))
        st, body, _ = post(url, gzip.compress(b'["gz-1","gz-2"]'),
                           {"Content-Type": "application/json", "Content-Encoding": "gzip",
                            **auth})
        check(st == 200 and "ok 2 records" in body, "gzip json array: %s %s" % (st, body))

        # Oversized: by Content-Length, and a small gzip body that expands too far.
        st, body, _ = post(url, b"\"" + b"x" * 5000 + b"\"", dict(NDJSON, **auth))
        check(st == 413, "oversized: %s %s" % (st, body))
        bomb = gzip.compress(b"\"" + b"y" * 40000 + b"\"")
        check(len(bomb) < 4096, "test bomb too big")
        st, body, _ = post(url, bomb, dict(NDJSON, **auth, **{"Content-Encoding": "gzip"}))
        check(st == 413, "decompression limit: %s %s" % (st, body))

        # Paths and methods.
        st, _, _ = post("http://127.0.0.1:%d/v2/other" % port, b"x", dict(NDJSON, **auth))
        check(st == 404, "other path: %s" % st)

        # tokens_file is re-read when it changes (checked at most once a second,
        # on a request): the new token is refused until a request finds the
        # new mtime, then accepted.
        spoolt.write(tokens, "rotated\n")
        os.utime(tokens, (time.time() + 5, time.time() + 5))
        answers = []

        def post_rotated():
            answers.append(post(url, b'"after-rotation"',
                                dict(NDJSON, Authorization="Bearer rotated"))[:2])
        spoolt.poke_until(post_rotated, lambda: answers[-1][0] == 200, timeout=30 * SLOW,
                          every=0.25, what="the rotated token to be accepted")
        check(all(st == 403 for st, _ in answers[:-1]), "before the re-read: %s" % answers)
        agg.wait_log("tokens_file %s re-read: 1 tokens" % tokens)
        st, body, _ = post(url, b'"x"', dict(NDJSON, **auth))
        check(st == 403, "old token after rotation: %s %s" % (st, body))

        e2e.stop_all(agg)
        recs = e2e.read_json(jout)
        vals = [r["value"] for r in recs]
        for want in ["native-1", "native-2", "take-me", "json-1", "json-2", "gz-1",
                     "after-rotation"]:
            check(want in vals, "%s missing from the aggregator's log: %s" % (want, vals))
        check("skip-me" not in vals and "skip-too" not in vals, "offset headers ignored: %s" % vals)
        # Key and headers kept, `agent` replaced by the peer address, timestamps kept.
        by_val = {r["value"]: r for r in recs}
        n1, n2, j1 = by_val["native-1"], by_val["native-2"], by_val["json-1"]
        check(n1["key"] == "k" and n1["headers"].get("host") == "h1", "native-1: %s" % n1)
        check(n1["timestamp"] == 1700000000000, "native timestamp: %s" % n1)
        check(n2["headers"].get("agent") == "127.0.0.1", "agent not replaced: %s" % n2)
        check(j1["key"] == "j" and j1["headers"] == {"host": "h2", "agent": "127.0.0.1"}
              and j1["timestamp"] == 5, "json-1: %s" % j1)
    finally:
        agg.kill()


@t.case
def input_offset_headers_validated(tmp):
    """Spool-First-Offset, Spool-Next-Offset and Spool-Partition must be
    integers >= 0 with first < next; a range that holds none of the body's
    records is refused too: 400 with the reason, never "200 ok 0 records"
    for a body that was dropped (issue 13 item 9)."""
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    agg = spoolt.Spool(e2e.aggregator_config(tmp, port, out))
    url = "http://127.0.0.1:%d/v1/batches" % port
    try:
        wait_port(port)
        three = encode_batch(10, [(None, b"r10", []), (None, b"r11", []), (None, b"r12", [])])
        cases = [
            ({"Spool-Next-Offset": "-5"}, "Spool-Next-Offset must be a decimal integer"),
            ({"Spool-First-Offset": "-1"}, "Spool-First-Offset must be a decimal integer"),
            ({"Spool-First-Offset": "abc"}, "Spool-First-Offset must be a decimal integer"),
            ({"Spool-Next-Offset": "12x"}, "Spool-Next-Offset must be a decimal integer"),
            ({"Spool-Next-Offset": ""}, "Spool-Next-Offset must be a decimal integer"),
            ({"Spool-Next-Offset": "99999999999999999999"}, "Spool-Next-Offset out of range"),
            ({"Spool-Partition": "-2"}, "Spool-Partition must be a decimal integer"),
            ({"Spool-Partition": "4294967296"}, "Spool-Partition out of range"),
            ({"Spool-First-Offset": "12", "Spool-Next-Offset": "11"},
             "Spool-First-Offset (12) must be below Spool-Next-Offset (11)"),
            ({"Spool-First-Offset": "11", "Spool-Next-Offset": "11"},
             "Spool-First-Offset (11) must be below Spool-Next-Offset (11)"),
            ({"Spool-First-Offset": "20", "Spool-Next-Offset": "30"},
             "no record of the body is in"),
            ({"Spool-First-Offset": "0", "Spool-Next-Offset": "5"},
             "no record of the body is in"),
        ]
        for hdrs, want in cases:
            st, body, _ = post(url, three, dict(NATIVE, **hdrs))
            check(st == 400 and want in body, "%s: %s %r (want 400 %r)" % (hdrs, st, body, want))
            check("\n" not in body.strip(), "reason is not one line: %r" % body)
        # Valid values still work, blanks around the number allowed.
        st, body, _ = post(url, three, dict(NATIVE, **{"Spool-First-Offset": " 11",
                                                       "Spool-Next-Offset": "13 ",
                                                       "Spool-Partition": "3"}))
        check(st == 200 and "ok 2 records" in body, "valid offsets: %s %s" % (st, body))
        st, body, _ = post(url, three, dict(NATIVE, **{"Spool-Next-Offset": "11"}))
        check(st == 200 and "ok 1 records" in body, "next only: %s %s" % (st, body))
        e2e.stop_all(agg)
        vals = sorted(spoolt.read_lines(out))
        check(vals == [b"r10", b"r11", b"r12"], "records in the log: %s" % vals)
        check("Spool-Next-Offset must be a decimal integer" in agg.stderr(),
              "refusal not logged: %s" % agg.stderr()[-2000:])
    finally:
        agg.kill()


@t.case
def input_tokens_reread_on_sighup(tmp):
    """SIGHUP reloads the service in place (the core restarts every
    instance), which re-reads tokens_file even when its mtime did not
    change; the listener comes back on the same port."""
    port = spoolt.free_port()
    tokens = spoolt.write(os.path.join(tmp, "tokens"), "old-token\n")
    st0 = os.stat(tokens)
    out = os.path.join(tmp, "agg.out")
    agg = spoolt.Spool(e2e.aggregator_config(tmp, port, out,
                                             extra_input="    tokens_file: %s\n" % tokens))
    url = "http://127.0.0.1:%d/v1/batches" % port
    try:
        wait_port(port)
        st, body, _ = post(url, b'"one"', dict(NDJSON, Authorization="Bearer old-token"))
        check(st == 200, "old token: %s %s" % (st, body))
        spoolt.write(tokens, "new-token\n")
        os.utime(tokens, ns=(st0.st_atime_ns, st0.st_mtime_ns))  # same mtime: no auto re-read
        # Not synchronization: a negative check. Past the 1 s recheck window
        # the next request does stat the file, and must not re-read it.
        time.sleep(1.1)
        st, body, _ = post(url, b'"two"', dict(NDJSON, Authorization="Bearer new-token"))
        check(st == 403, "re-read without SIGHUP or mtime change? %s %s" % (st, body))
        agg.proc.send_signal(signal.SIGHUP)

        def new_token_ok():
            try:
                st, _, _ = post(url, b'"three"', dict(NDJSON, Authorization="Bearer new-token"))
                return st == 200
            except OSError:
                return False
        spoolt.wait_for(new_token_ok, timeout=30 * SLOW, interval=0.2,
                        what="the new token to work after SIGHUP")
        e2e.stop_all(agg)
        vals = [r for r in spoolt.read_lines(out)]
        check(b"one" in vals and b"three" in vals and b"two" not in vals, "values %s" % vals)
    finally:
        agg.kill()


@t.case
def input_503_when_the_log_pushes_back(tmp):
    """A topic at its hard size limit (on_full: block) stops the pipeline:
    requests get 503 with Retry-After instead of hanging."""
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    cfg = e2e.aggregator_config(
        tmp, port, out,
        topic_extra="    max_bytes: 64KiB\n    segment_bytes: 16KiB\n    on_full: block\n",
        extra_input="    ack_timeout: 500ms\n    retry_after: 2s\n",
        # An output that never delivers, so nothing may be deleted.
        outputs_extra=("  - type: http\n    name: nowhere\n    topics: [logs]\n"
                       "    url: http://127.0.0.1:%d/v1/batches\n" % spoolt.free_port()))
    agg = spoolt.Spool(cfg)
    url = "http://127.0.0.1:%d/v1/batches" % port
    try:
        wait_port(port)
        body = b"".join(b'"%s"\n' % (b"r%05d-" % i + b"z" * 200) for i in range(20))
        statuses = []
        deadline = time.monotonic() + 60 * SLOW
        while time.monotonic() < deadline and len(statuses) < 400:
            st, text, hdr = post(url, body, NDJSON)
            statuses.append(st)
            if st == 503:
                check(hdr.get("Retry-After") == "2", "503 without Retry-After: %s" % hdr)
                check(text.strip() != "", "503 without a reason")
                print("     503 after %d requests: %s" % (len(statuses), text.strip()))
                break
            check(st == 200, "unexpected status %s: %s" % (st, text))
        check(statuses and statuses[-1] == 503, "no 503 in %d requests" % len(statuses))
        check(agg.proc.poll() is None, "aggregator died: %s" % agg.stderr()[-2000:])
    finally:
        agg.kill()


@t.case
def agent_with_wrong_token_dead_letters(tmp):
    """An agent whose token the aggregator refuses: 403 is a rejection, so
    the chunk lands in the agent's dead-letter topic with the status and
    the aggregator's reason, and nothing reaches the aggregator."""
    port = spoolt.free_port()
    tokens = spoolt.write(os.path.join(tmp, "tokens"), "right\n")
    out = os.path.join(tmp, "agg.out")
    agg = spoolt.Spool(e2e.aggregator_config(tmp, port, out,
                                             extra_input="    tokens_file: %s\n" % tokens))
    logdir = os.path.join(tmp, "logs")
    e2e.write_all(logdir, ["t"], 10)
    dead_out = os.path.join(tmp, "dead.out")
    agent = spoolt.Spool(e2e.agent_config(
        tmp, "agent", port, logdir,
        extra_output="    token: wrong\n    dead_letter_topic: dead\n",
        topics_extra="  dead:\n    partitions: 1\n",
        outputs_extra=("  - type: file\n    topics: [dead]\n    path: %s\n    format: json\n"
                       % dead_out)))
    try:
        spoolt.wait_for(lambda: len(spoolt.read_lines(dead_out)) >= 10, timeout=30 * SLOW,
                        what="10 dead letters")
        recs = e2e.read_json(dead_out)
        reason = recs[0]["headers"].get("dead_letter.reason", "")
        check(reason == "HTTP 403: invalid token", "dead letter reason: %r" % recs[0])
        check(sorted(r["value"] for r in recs) == sorted("t %d" % i for i in range(1, 11)),
              "dead letters: %s" % [r["value"] for r in recs])
        check(e2e.unique_count(out) == 0, "records reached the aggregator with a wrong token")
        e2e.stop_all(agent, agg)
    finally:
        agent.kill()
        agg.kill()


def make_pki(d):
    """A CA, a server cert for 127.0.0.1, a client cert from the CA, an
    expired one from the CA, and a client cert from another CA. Returns a
    dict of paths."""
    os.makedirs(d, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

    for ca in ("ca", "evil"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key",
            "-out", ca + ".pem", "-days", "2", "-subj", "/CN=%s" % ca)
    spoolt.write(os.path.join(d, "san.ext"), "subjectAltName=IP:127.0.0.1\n")
    for name, ca, ext in (("server", "ca", True), ("client", "ca", False),
                          ("badclient", "evil", False), ("expiredclient", "ca", False)):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=%s" % name)
        days = "-1" if name.startswith("expired") else "2"  # -1: notAfter in the past
        args = ["x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-out", name + ".pem", "-days", days]
        if ext:
            args += ["-extfile", "san.ext"]
        run(*args)
    return {k: os.path.join(d, k) for k in os.listdir(d)}


@t.case
def mutual_tls(tmp):
    pki = make_pki(os.path.join(tmp, "pki"))
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    cfg = e2e.aggregator_config(tmp, port, out, extra_input=(
        "    tls:\n      cert: %s\n      key: %s\n      client_ca: %s\n"
        % (pki["server.pem"], pki["server.key"], pki["ca.pem"])))
    agg = spoolt.Spool(cfg)
    url = "https://127.0.0.1:%d/v1/batches" % port
    try:
        wait_port(port)

        def ctx(cert):
            c = ssl.create_default_context(cafile=pki["ca.pem"])
            if cert:
                c.load_cert_chain(pki[cert + ".pem"], pki[cert + ".key"])
            return c

        st, body, _ = post(url, b'"tls-ok"', NDJSON, ctx=ctx("client"))
        check(st == 200, "trusted client cert: %s %s" % (st, body))
        for cert, want in (("badclient", "not trusted"), ("expiredclient", "expired"),
                           (None, "no client certificate")):
            try:
                st, body, _ = post(url, b'"tls-bad"', NDJSON, ctx=ctx(cert))
                check(st == 403 and want in body, "client cert %s: %s %s" % (cert, st, body))
            except (urllib.error.URLError, ssl.SSLError, ConnectionError) as e:
                print("     client cert %s refused in the handshake: %s" % (cert, e))

        # The agent's http output over mutual TLS, and with the wrong CA.
        logdir = os.path.join(tmp, "logs")
        e2e.write_all(logdir, ["t"], 500)
        agent = spoolt.Spool(e2e.agent_config(tmp, "agent", port, logdir, scheme="https",
                                              extra_output=(
            "    tls:\n      ca_file: %s\n      cert_file: %s\n      key_file: %s\n"
            % (pki["ca.pem"], pki["client.pem"], pki["client.key"]))))
        e2e.wait_unique(out, 500, 60, (agg, agent))
        e2e.stop_all(agent)

        # Wrong CA on the agent: nothing is delivered, the agent keeps retrying.
        logdir2 = os.path.join(tmp, "logs2")
        e2e.write_all(logdir2, ["w"], 50)
        api2 = spoolt.free_port()
        bad_cfg = e2e.agent_config(tmp, "agent2", port, logdir2, scheme="https", api_port=api2,
                                   extra_output="    tls:\n      ca_file: %s\n" % pki["evil.pem"])
        agent2 = spoolt.Spool(bad_cfg)

        def tls_refused_twice():
            check(agent2.proc.poll() is None, "agent2 exited: %s" % agent2.stderr()[-2000:])
            return e2e.ship_errors(api2) >= 2
        spoolt.wait_for(tls_refused_twice, timeout=30 * SLOW, interval=0.1,
                        what="the agent to fail (and retry) the handshake")
        per, _ = e2e.parse_out(out)
        check("w" not in per, "delivered despite an untrusted server certificate")
        err = agent2.run_stderr().lower()
        check("certificate" in err or "ssl" in err, "no TLS error logged: %s" % err[-2000:])
        agent2.kill()
        e2e.stop_all(agg)
    finally:
        agg.kill()


# ---------------------------------------------------------------- generic endpoint

class Endpoint:
    """A small HTTP server: records every request; answers from `plan`
    (a list of (status, headers, body) used in order, then 200), or from
    `decide(index, headers, body)` returning (status, headers, body)."""

    def __init__(self, plan=(), decide=None):
        self.requests = []
        self.plan = list(plan)
        self.decide = decide
        self.lock = threading.Lock()
        ep = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with ep.lock:
                    ep.requests.append((time.monotonic(), dict(self.headers), body))
                    if ep.decide:
                        st, hdrs, resp = ep.decide(len(ep.requests) - 1, self.headers, body)
                    else:
                        st, hdrs, resp = ep.plan.pop(0) if ep.plan else (200, {}, b"ok")
                if 200 <= st < 300:
                    with ep.lock:
                        ep.accepted.append(body)
                self.send_response(st)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp)))
                self.end_headers()
                self.wfile.write(resp)

            def log_message(self, *a):
                pass

        self.accepted = []  # bodies answered 2xx, in answer order
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def stdin_agent_config(tmp, url, output_extra="", outputs_extra="", topics_extra=""):
    d = os.path.join(tmp, "agent")
    os.makedirs(d, exist_ok=True)
    return spoolt.write(os.path.join(d, "spool.yaml"), """
service:
  data_dir: %(d)s/data
  log_level: info
topics:
  app:
    partitions: 1
    fsync: never
%(topics_extra)s
inputs:
  - type: stdin
    topic: app
    key: "k-{{ input }}"
outputs:
  - type: http
    name: generic
    topics: [app]
    url: %(url)s
    retry_backoff: 10ms
    retry_backoff_max: 50ms
%(output_extra)s
%(outputs_extra)s
""" % {"d": d, "url": url, "output_extra": output_extra, "outputs_extra": outputs_extra,
       "topics_extra": topics_extra})


def run_stdin_agent(cfg, lines, until, timeout=30):
    """Feeds lines on stdin, waits for until(), then closes stdin (clean exit)."""
    agent = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    try:
        agent.proc.stdin.write(b"".join(l + b"\n" for l in lines))
        agent.proc.stdin.flush()
        spoolt.wait_for(until, timeout=timeout * SLOW, what="the endpoint to get the records")
        agent.proc.stdin.close()
        rc = agent.wait(60)
        check(rc == 0, "agent exit %s: %s" % (rc, agent.stderr()[-2000:]))
        return agent
    finally:
        agent.kill()


@t.case
def generic_endpoint_json_shapes(tmp):
    for fmt, comp in (("ndjson", "none"), ("json", "gzip")):
        ep = Endpoint()
        try:
            sub = os.path.join(tmp, fmt)
            cfg = stdin_agent_config(sub, "http://127.0.0.1:%d/ingest" % ep.port, output_extra=(
                "    format: %s\n    compression: %s\n    headers: { X-Test: yes }\n"
                "    token: tok-1\n" % (fmt, comp)))
            lines = [b"line %d \"quoted\" \\ caf\xc3\xa9" % i for i in range(1, 301)]

            def got_all():
                recs = []
                for _, hdrs, body in list(ep.requests):
                    if hdrs.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    if fmt == "json":
                        recs += json.loads(body)
                    else:
                        check(body.endswith(b"\n"), "ndjson body does not end in a newline")
                        recs += [json.loads(l) for l in body.split(b"\n") if l]
                return recs if len(recs) >= 300 else None

            run_stdin_agent(cfg, lines, got_all)
            recs = got_all()
            _, hdrs, _ = ep.requests[0]
            want_ct = "application/x-ndjson" if fmt == "ndjson" else "application/json"
            check(hdrs.get("Content-Type") == want_ct, "Content-Type %s" % hdrs)
            check(hdrs.get("Authorization") == "Bearer tok-1", "token %s" % hdrs)
            check(hdrs.get("X-Test") == "yes", "custom header %s" % hdrs)
            check([r["value"] for r in recs] == [l.decode() for l in lines],
                  "values/order differ: %s" % recs[:3])
            r0 = recs[0]
            check(set(r0) == {"key", "value", "headers", "timestamp", "topic", "partition",
                              "offset"}, "fields %s" % sorted(r0))
            check(isinstance(r0["headers"], dict) and isinstance(r0["timestamp"], int)
                  and r0["timestamp"] > 1500000000000, "shape %s" % r0)
            check(r0["topic"] == "app" and r0["partition"] == 0, "where %s" % r0)
            check(isinstance(r0["key"], str) and r0["key"].startswith("k-"), "key %s" % r0)
            offs = [r["offset"] for r in recs]
            check(offs == sorted(offs) and len(set(offs)) == 300, "offsets %s" % offs[:5])
        finally:
            ep.close()


@t.case
def generic_order_kept_under_failures(tmp):
    """max_in_flight 4, small chunks, one partition, every third request
    fails with 503 (slowly, so others are in flight meanwhile): what the
    endpoint accepts is still every offset once, in order."""
    def decide(i, headers, body):
        time.sleep(0.02)  # a slow server (others are in flight meanwhile); not synchronization
        return (503, {}, b"flaky") if i % 3 == 1 else (200, {}, b"ok")

    ep = Endpoint(decide=decide)
    try:
        cfg = stdin_agent_config(tmp, "http://127.0.0.1:%d/x" % ep.port, output_extra=(
            "    format: ndjson\n    max_in_flight: 4\n    max_records: 50\n"))
        n = 2000

        def offsets():
            with ep.lock:
                bodies = list(ep.accepted)
            return [json.loads(l)["offset"] for b in bodies for l in b.split(b"\n") if l]

        run_stdin_agent(cfg, [b"v%d" % i for i in range(n)], lambda: len(offsets()) >= n,
                        timeout=60)
        offs = offsets()
        print("     %d requests, %d accepted records" % (len(ep.requests), len(offs)))
        check(offs == list(range(n)), "accepted out of order or with gaps/duplicates: %s"
              % [o for i, o in enumerate(offs) if o != i][:10])
    finally:
        ep.close()


@t.case
def generic_token_file_rotation(tmp):
    """The output's token_file is re-read when it changes: later requests
    carry the new token (a 401 for the old one is a rejection, so the test
    rotates before the endpoint starts refusing)."""
    ep = Endpoint()
    tok = spoolt.write(os.path.join(tmp, "token"), "first-token\n")
    try:
        cfg = stdin_agent_config(tmp, "http://127.0.0.1:%d/x" % ep.port,
                                 output_extra="    format: ndjson\n    token_file: %s\n" % tok)
        agent = spoolt.Spool(cfg, stdin=subprocess.PIPE)
        try:
            agent.proc.stdin.write(b"before\n")
            agent.proc.stdin.flush()
            spoolt.wait_for(lambda: len(ep.requests) >= 1, timeout=30 * SLOW, what="a request")
            spoolt.write(tok, "second-token\n")
            os.utime(tok, (time.time() + 5, time.time() + 5))
            # The file is checked at most once a second, before a request:
            # send records until a request carries the new token.
            sent = [0]

            def send_after():
                sent[0] += 1
                agent.proc.stdin.write(b"after-%d\n" % sent[0])
                agent.proc.stdin.flush()

            def rotated():
                with ep.lock:
                    return any(r[1].get("Authorization") == "Bearer second-token"
                               for r in ep.requests)
            spoolt.poke_until(send_after, rotated, timeout=30 * SLOW, every=0.3,
                              what="a request with the new token")
            agent.proc.stdin.close()
            check(agent.wait(60) == 0, "agent exit: %s" % agent.stderr()[-2000:])
        finally:
            agent.kill()
        auths = [r[1].get("Authorization") for r in ep.requests]
        check(auths[0] == "Bearer first-token", "first request: %s" % auths)
        check(auths[-1] == "Bearer second-token", "after rotation: %s" % auths)
        first_new = auths.index("Bearer second-token")
        check(all(a == "Bearer second-token" for a in auths[first_new:]),
              "the old token came back after the rotation: %s" % auths)
        check("token_file %s re-read" % tok in agent.stderr(), "the re-read is not logged")
    finally:
        ep.close()


@t.case
def generic_400_goes_to_dead_letters(tmp):
    ep = Endpoint(plan=[(400, {}, b"field 'value' not allowed\nsecond line")])
    dead_out = os.path.join(tmp, "dead.out")
    try:
        cfg = stdin_agent_config(
            tmp, "http://127.0.0.1:%d/x" % ep.port,
            output_extra="    format: ndjson\n    dead_letter_topic: dead\n",
            topics_extra="  dead:\n    partitions: 1\n",
            outputs_extra=("  - type: file\n    topics: [dead]\n    path: %s\n    format: json\n"
                           % dead_out))
        lines = [b"doomed-1", b"doomed-2"]

        def dead_arrived():
            return [l for l in spoolt.read_lines(dead_out) if b"doomed" in l]
        run_stdin_agent(cfg, lines, dead_arrived)
        dl = b"\n".join(spoolt.read_lines(dead_out)).decode()
        check("HTTP 400: field 'value' not allowed second line" in dl,
              "dead letter reason missing: %s" % dl[:2000])
        check("dead_letter.reason" in dl, "no dead_letter.reason header: %s" % dl[:2000])
        check(len(ep.requests) == 1, "a 400 was retried: %d requests" % len(ep.requests))
    finally:
        ep.close()


@t.case
def generic_429_retry_after_honoured(tmp):
    ep = Endpoint(plan=[(429, {"Retry-After": "2"}, b"slow down"),
                        (503, {"Retry-After": "1"}, b"busy")])
    try:
        cfg = stdin_agent_config(tmp, "http://127.0.0.1:%d/x" % ep.port,
                                 output_extra="    format: ndjson\n")

        def ok_count():
            return len(ep.requests) >= 3
        run_stdin_agent(cfg, [b"patience"], ok_count)
        t0, t1, t2 = [r[0] for r in ep.requests[:3]]
        print("     gaps after 429 / 503: %.2f s / %.2f s" % (t1 - t0, t2 - t1))
        # Lower bounds only: the agent must not come back before Retry-After.
        check(t1 - t0 >= 1.9, "429 Retry-After: 2 not honoured: %.2f s" % (t1 - t0))
        check(t2 - t1 >= 0.9, "503 Retry-After: 1 not honoured: %.2f s" % (t2 - t1))
        check(ep.requests[2][2] == ep.requests[0][2], "the retried body changed")
    finally:
        ep.close()


if __name__ == "__main__":
    t.main()
