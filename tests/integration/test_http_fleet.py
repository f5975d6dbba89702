"""The aggregator with 1,000 producers at once (issue 18, fleet scale).

spool-test-requires: http

thousand_producers: 1,000 simulated agents, each with its own source address
(127.1.x.y), keep-alive connection and producer id, all connected at once;
every one sends a native batch of 10 records and only then are the answers
read, so 1,000 requests are in flight together (more than the workers, more
than the default per-client limit would allow from one address). Twice;
then every agent resends its first batch: each is answered as a duplicate
and nothing is appended. After a restart of the aggregator (the 1,000
producer offsets come back from its checkpoint) a resend of the second
batch is again a duplicate and a third batch is appended. The log holds
exactly 1,000 x 30 records at the end.
"""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
import test_http_e2e as e2e  # noqa: E402
import test_http_errors as herr  # noqa: E402
import test_http_flood as flood  # noqa: E402

SLOW = e2e.SLOW
AGENTS = 1000
PER_BATCH = 10

t = spoolt.Suite(__file__)


def source(i):
    return "127.1.%d.%d" % (i // 250, i % 250 + 1)


def connect_all(port):
    socks = []
    for i in range(AGENTS):
        s = socket.socket()
        s.bind((source(i), 0))
        s.settimeout(60 * SLOW)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def request(i, k):
    """Agent i's batch k: source offsets [k*10, k*10+10)."""
    first = k * PER_BATCH
    body = herr.encode_batch(first, [(None, b"agent-%d-%d" % (i, first + j), [(b"host", b"h")])
                                     for j in range(PER_BATCH)])
    head = ("POST /v1/batches HTTP/1.1\r\nHost: agg\r\n"
            "Content-Type: application/vnd.spool.batch\r\nContent-Length: %d\r\n"
            "Spool-Topic: app\r\nSpool-Partition: 0\r\nSpool-First-Offset: %d\r\n"
            "Spool-Next-Offset: %d\r\nSpool-Producer-Id: %032x\r\n\r\n"
            % (len(body), first, first + PER_BATCH, i + 1))
    return head.encode() + body


def answer(s):
    """(status, text) of one HTTP answer on s."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        check(chunk, "connection closed before the answer")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    clen = 0
    for ln in lines[1:]:
        name, _, value = ln.partition(":")
        if name.strip().lower() == "content-length":
            clen = int(value)
    while len(rest) < clen:
        chunk = s.recv(4096)
        check(chunk, "connection closed in the answer's body")
        rest += chunk
    return status, rest[:clen].decode()


def round_trip(socks, k, want):
    """Every agent sends batch k at once, then every answer is read."""
    for i, s in enumerate(socks):
        s.sendall(request(i, k))
    for i, s in enumerate(socks):
        st, text = answer(s)
        check(st == 200 and text.startswith(want),
              "agent %d batch %d: HTTP %d %r (want %r)" % (i, k, st, text, want))


def aggregator(tmp, port, api):
    cfg = os.path.join(tmp, "agg.yaml")
    spoolt.write(cfg, """
service:
  data_dir: %s/data
  log_level: info
  http: { listen: "127.0.0.1:%d" }
%stopics:
  logs: {partitions: 4}
inputs:
  - {type: http, name: ingest, topic: logs, listen: "127.0.0.1:%d"}
outputs: []
""" % (tmp, api, e2e.SERVICE_EXTRA, port))
    return cfg


def in_log(api):
    return e2e.metric_sum(api, "spool_partition_end_offset", topic="logs")


def check_log(api, want):
    """The log's end offsets add up to want (its /metrics may lag the acks a little)."""
    try:
        spoolt.wait_for(lambda: in_log(api) == want, timeout=10 * SLOW, what="%d records" % want)
    except spoolt.Failure:
        pass
    check(in_log(api) == want, "the log holds %s records, want %d" % (in_log(api), want))


@t.case
def thousand_producers(tmp):
    flood.raise_nofile(AGENTS + 512)
    port, api = spoolt.free_port(), spoolt.free_port()
    cfg = aggregator(tmp, port, api)
    agg = spoolt.Spool(cfg)
    socks = []
    try:
        agg.wait_running()
        socks = connect_all(port)
        round_trip(socks, 0, "ok %d records" % PER_BATCH)
        round_trip(socks, 1, "ok %d records" % PER_BATCH)
        round_trip(socks, 0, "ok 0 records (duplicate")
        check_log(api, AGENTS * 2 * PER_BATCH)
        for s in socks:
            s.close()
        socks = []
        check(agg.terminate() == 0, "aggregator exit status")

        agg = spoolt.Spool(cfg)
        agg.wait_running()
        socks = connect_all(port)
        round_trip(socks, 1, "ok 0 records (duplicate")
        round_trip(socks, 2, "ok %d records" % PER_BATCH)
        check_log(api, AGENTS * 3 * PER_BATCH)
        check("connection flood" not in agg.run_stderr(), "connections were refused:\n%s"
              % agg.run_stderr()[-2000:])
    finally:
        for s in socks:
            s.close()
        check(agg.terminate() == 0, "aggregator exit status")


if __name__ == "__main__":
    t.main()
