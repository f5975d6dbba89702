"""The http input under a connection flood (issue 13 item 8).

slowloris_2000: 2,000 slow connections that send a partial request header
and dribble one more byte every half second, from 31 source addresses
(127.0.0.x: 1,800 from 30 addresses within the per-client limit, which
the server holds open, and 200 from one address, of which all but
max_connections_per_client are refused at accept). Meanwhile a good client
from 127.0.0.2 posts batches: every one must be answered 200, and the
refusals must be reported in a warning with their count.

slow_clients_timed_out: connections that never complete their header
within header_timeout, or their body within body_timeout, are closed by
the server (not kept by dribbling a byte now and then) and reported; on a
kept-alive connection, an idle one is closed quietly at read_timeout and
one dribbling its next header is cut and reported.
"""
import http.client
import os
import re
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
import test_http_e2e as e2e  # noqa: E402

SLOW = e2e.SLOW
PARTIAL = b"POST /v1/batches HTTP/1.1\r\nHost: flood\r\nContent-Type: application/x-ndjson\r\n"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:  # root (CI) may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, want))
            hard = want
        except (ValueError, OSError):
            pass
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(soft >= want, "RLIMIT_NOFILE %d < %d: cannot run the flood" % (soft, want))


def slow_socket(src, port, first=PARTIAL):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(10 * SLOW)
    s.connect(("127.0.0.1", port))
    s.sendall(first)
    s.setblocking(False)
    return s


def closed_by_server(s):
    """True once the server closed (or reset) the connection."""
    try:
        data = s.recv(4096)
        return data == b"" or data.startswith(b"HTTP/1.1 4")
    except BlockingIOError:
        return False
    except OSError:
        return True


class Dribbler(threading.Thread):
    """Sends one header byte on every open socket every interval seconds."""

    def __init__(self, socks, payload=b"X", interval=0.5):
        super().__init__(daemon=True)
        self.socks, self.payload, self.interval = socks, payload, interval
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(self.interval):
            for s in list(self.socks):
                try:
                    s.send(self.payload)
                except OSError:
                    pass


def good_post(port, body, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=("127.0.0.2", 0))
    try:
        conn.request("POST", "/v1/batches", body=body,
                     headers={"Content-Type": "application/x-ndjson"})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


FLOOD_RE = re.compile(
    r"connection flood\? since the last report: refused (\d+) connections \((\d+) over "
    r"max_connections_per_client \d+, (\d+) over max_connections \d+\); closed \d+ slow "
    r"ones \((\d+) without a complete header within header_timeout, (\d+) without their "
    r"body within body_timeout, (\d+) idle beyond read_timeout\)")


def flood_counts(stderr):
    """The flood warnings' counts, summed."""
    keys = ("refused", "per_client", "total", "header", "body", "idle")
    sums = dict.fromkeys(keys, 0)
    for m in FLOOD_RE.finditer(stderr):
        for k, v in zip(keys, m.groups()):
            sums[k] += int(v)
    return sums


t = spoolt.Suite(__file__)


@t.case
def slowloris_2000(tmp):
    raise_nofile(4096)
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    agg = spoolt.Spool(e2e.aggregator_config(tmp, port, out, extra_input=(
        "    header_timeout: 10m\n    read_timeout: 10m\n")))
    held, extra = [], []
    dribbler = None
    try:
        e2e_wait_port(port)
        for i in range(1800):
            held.append(slow_socket("127.0.0.%d" % (10 + i // 60), port))
        for _ in range(200):
            extra.append(slow_socket("127.0.0.5", port))
        dribbler = Dribbler(held + extra)
        dribbler.start()
        # The per-client limit (64) refuses the rest of 127.0.0.5's connections.
        spoolt.wait_for(lambda: sum(closed_by_server(s) for s in extra) >= 200 - 64,
                        timeout=30 * SLOW, what="136 connections from 127.0.0.5 refused")

        served, failures = 0, []
        for i in range(100):
            body = b"".join(b'"good-%d-%d"\n' % (i, k) for k in range(10))
            try:
                st, text = good_post(port, body, 10 * SLOW)
            except OSError as e:
                st, text = None, repr(e)
            if st == 200:
                served += 1
            else:
                failures.append((i, st, text))
        print("     good requests served during the flood: %d of 100" % served)
        check(served == 100, "good client refused during the flood: %s" % failures[:5])

        with open("/proc/%d/status" % agg.proc.pid) as f:
            status = dict(ln.split(":", 1) for ln in f if ":" in ln)
        print("     aggregator with 1,864 connections open: RSS %s, %s threads"
              % (status.get("VmRSS", "?").strip(), status.get("Threads", "?").strip()))
        still_open = sum(not closed_by_server(s) for s in held)
        print("     slow connections held open by the server: %d of 1800" % still_open)
        check(still_open == 1800, "the server dropped slow connections within the limits")
        # One warning at once, then at most one per 10 s with the counts since.
        spoolt.wait_for(lambda: flood_counts(agg.stderr())["per_client"] == 136,
                        timeout=30 * SLOW, what="warnings counting 136 refusals")
        warn = [ln for ln in agg.stderr().splitlines() if "connection flood?" in ln][0]
        print("     " + warn.strip()[:300])
        dribbler.stop.set()
        for s in held + extra:
            s.close()
        e2e.stop_all(agg)
        vals = spoolt.read_lines(out)
        check(len(vals) == 1000 and len(set(vals)) == 1000, "records in the log: %d" % len(vals))
    finally:
        if dribbler:
            dribbler.stop.set()
        for s in held + extra:
            s.close()
        agg.kill()


@t.case
def slow_clients_timed_out(tmp):
    port = spoolt.free_port()
    out = os.path.join(tmp, "agg.out")
    agg = spoolt.Spool(e2e.aggregator_config(tmp, port, out, extra_input=(
        "    header_timeout: 1s\n    body_timeout: 2s\n    read_timeout: 2s\n")))
    socks, kept = [], []
    dribbler = None
    try:
        e2e_wait_port(port)
        start = time.monotonic()
        for i in range(20):
            socks.append(slow_socket("127.0.0.%d" % (20 + i % 4), port))
        body_head = PARTIAL + b"Content-Length: 1000\r\n\r\n\"x"
        for i in range(5):
            socks.append(slow_socket("127.0.0.30", port, first=body_head))
        # Kept alive after a good request: one dribbles its next header (cut
        # at read_timeout + header_timeout, counted), one is idle (closed
        # quietly by read_timeout, not counted).
        kept = []
        for _ in range(2):
            k = slow_socket("127.0.0.40", port, first=PARTIAL + b"Content-Length: 4\r\n\r\n\"k\"\n")
            k.setblocking(True)
            resp = k.recv(4096)
            check(resp.startswith(b"HTTP/1.1 200"), "kept-alive request: %r" % resp)
            k.setblocking(False)
            kept.append(k)
        k.send(b"POST /v1/batches HTTP/1.1\r\n")
        dribbler = Dribbler(socks + [kept[1]], interval=0.2)
        dribbler.start()
        spoolt.wait_for(lambda: all(closed_by_server(s) for s in socks + kept),
                        timeout=30 * SLOW, what="the server to close 27 slow connections")
        took = time.monotonic() - start
        print("     27 slow or idle connections closed within %.1f s" % took)

        spoolt.wait_for(lambda: flood_counts(agg.stderr()) == {
            "refused": 0, "per_client": 0, "total": 0, "header": 21, "body": 5, "idle": 0},
            timeout=30 * SLOW, what="warnings counting 21 header and 5 body timeouts")
        st, text = good_post(port, b'"still-fine"\n', 10 * SLOW)
        check(st == 200, "good client after the timeouts: %s %s" % (st, text))
        e2e.stop_all(agg)
    finally:
        if dribbler:
            dribbler.stop.set()
        for s in socks + kept:
            s.close()
        agg.kill()


def e2e_wait_port(port):
    def ok():
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()
    spoolt.wait_for(ok, timeout=30 * SLOW, what="port %d" % port)


if __name__ == "__main__":
    t.main()
