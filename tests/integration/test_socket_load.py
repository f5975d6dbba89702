"""The socket inputs under load and under backpressure.

- 100 concurrent TCP senders, each sending numbered lines: every line
  arrives, and each connection's lines keep their order (key {{ peer }}
  over 4 partitions).
- A blocked output (the topic's max_bytes reached with on_full: block, the
  tcp output's destination down): TCP senders block (the kernel pushes
  back), spool's memory stays bounded; once the destination is up every
  line arrives, none lost.
- UDP under the same block: datagrams the kernel could not queue are
  counted exactly: records delivered + spool_dropped_total == datagrams
  sent, and the stop message says the same.
"""
import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import sockt
import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)


@t.case
def hundred_senders_all_arrive_in_order(tmp):
    port = spoolt.free_port()
    conns, lines = 100, 300 if spoolt.SANITIZE else 1000
    inputs = ("  - type: socket\n    name: many\n    topic: t\n    listen: tcp://127.0.0.1:%d\n"
              "    key: \"{{ peer }}\"\n" % port)
    topics = "  t:\n    partitions: 4\n    fsync: 200ms\n"
    s = sockt.start(sockt.config(tmp, inputs, topics=topics))
    errors = []

    def sender(i):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
                for start in range(0, lines, 100):
                    c.sendall(b"".join(b"c%d %d\n" % (i, n)
                                       for n in range(start, min(lines, start + 100))))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(conns)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        check(not errors, errors[:3])
        recs = sockt.wait_records(tmp, conns * lines, timeout=180 * sockt.SLOW)
    finally:
        sockt.stop(s)
    per = {}
    for r in recs:
        c, n = r["value"].split()
        per.setdefault(c, []).append(int(n))
    check(len(per) == conns, "%d connections seen" % len(per))
    for c, ns in per.items():
        check(ns == list(range(lines)), "%s: %d lines, first out of order at %s" % (
            c, len(ns), next((k for k, v in enumerate(ns) if v != k), None)))
    check(len(recs) == conns * lines, "no duplicates: %d" % len(recs))


# max_bytes must exceed one input batch (up to 1 MiB): a batch never fits
# a partition smaller than itself.
BLOCKED_TOPIC = ("  t:\n    partitions: 1\n    fsync: never\n    segment_bytes: 512KiB\n"
                 "    max_bytes: 3MiB\n    on_full: block\n")


def topic_full(mport):
    """/health says the log writer waits on the full topic (on_full: block)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % mport, timeout=10) as r:
            return False
    except urllib.error.HTTPError as e:
        return e.code == 503 and "topic is full" in e.read().decode(errors="replace")


def blocked_output(port):
    return ("  - type: tcp\n    name: down\n    topics: [t]\n    url: tcp://127.0.0.1:%d\n"
            "    retry_backoff: 100ms\n    retry_backoff_max: 500ms\n" % port)


@t.case
def blocked_output_blocks_tcp_senders(tmp):
    port = spoolt.free_port()
    dest = spoolt.free_port()
    mport = spoolt.free_port()
    inputs = "  - type: socket\n    name: bp\n    topic: t\n    listen: tcp://127.0.0.1:%d\n" % port
    s = sockt.start(sockt.config(tmp, inputs, blocked_output(dest), topics=BLOCKED_TOPIC,
                                 service_extra="  memory_limit: 8MiB\n"
                                               "  http: { listen: 127.0.0.1:%d }\n" % mport))
    n = 300000
    pad = b"x" * 80
    payload = b"".join(b"%d %s\n" % (i, pad) for i in range(1, n + 1))
    recv = None
    try:
        c = socket.create_connection(("127.0.0.1", port))
        c.setblocking(False)
        sent = 0
        blocked_since = None
        deadline = time.monotonic() + 120
        while sent < len(payload) and time.monotonic() < deadline:
            _, w, _ = select.select([], [c], [], 0.2)
            if w:
                try:
                    k = c.send(payload[sent:sent + 65536])
                    sent += k
                    blocked_since = None
                    continue
                except BlockingIOError:
                    pass
            # Blocked: the topic is full (/health says so) and the socket
            # has stayed unwritable for a second since (spool's queues full
            # too, so it stopped reading); a slow reader only delays this.
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 1.0 and topic_full(mport):
                break
        check(sent < len(payload), "sender was never blocked (sent all %d bytes)" % sent)
        check(topic_full(mport), "the sender blocked but the topic is not full")
        rss_mib = sockt.proc_rss_kib(s.proc.pid) / 1024
        limit = 600 if spoolt.SANITIZE else 150
        check(rss_mib < limit, "spool RSS %.0f MiB while blocked" % rss_mib)
        print("     blocked after %.1f of %.1f MiB; spool RSS %.0f MiB" % (
            sent / 2**20, len(payload) / 2**20, rss_mib), flush=True)
        # Still blocked over a two-second window of exposure (not a wait for
        # anything): nothing moves while the output is down.
        more = 0
        t_end = time.monotonic() + 2
        while time.monotonic() < t_end:
            select.select([], [c], [], 0.05)
            try:
                more += c.send(payload[sent + more:sent + more + 65536])
            except BlockingIOError:
                pass
        check(more < 2 * 2**20, "still blocked (%d bytes more went in)" % more)
        sent += more
        # The destination comes up: everything flows, nothing is lost.
        recv = sockt.LineReceiver(dest)
        c.setblocking(True)
        c.settimeout(120)
        c.sendall(payload[sent:])
        c.close()
        wait_for(lambda: len(recv.lines()) >= n, 180 * sockt.SLOW, 0.2,
                 what="%d lines at the destination" % n)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
            metrics = r.read().decode()
    finally:
        sockt.stop(s)
        if recv:
            recv.close()
    got = [int(line.split()[0]) for line in recv.lines()]
    st = spoolt.seq_check(got, n)
    check(st["lost"] == 0 and st["disorder"] == 0, st)
    dropped = sockt.metric(metrics, "spool_dropped_total", name="bp")
    check(dropped == 0, "TCP input dropped %s" % dropped)


@t.case
def udp_drops_counted_exactly(tmp):
    uport = spoolt.free_port(socket.SOCK_DGRAM)
    dest = spoolt.free_port()
    mport = spoolt.free_port()
    inputs = ("  - type: syslog\n    name: udpin\n    topic: t\n    listen: udp://127.0.0.1:%d\n"
              "    receive_buffer: 256KiB\n" % uport)
    s = sockt.start(sockt.config(tmp, inputs, blocked_output(dest), topics=BLOCKED_TOPIC,
                                 service_extra="  memory_limit: 4MiB\n"
                                               "  http: { listen: 127.0.0.1:%d }\n" % mport))
    n = 100000
    recv = None
    try:
        pad = "y" * 100
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for i in range(1, n + 1):
                c.sendto(b"<14>1 - h app - - - %d %s" % (i, pad.encode()), ("127.0.0.1", uport))
        recv = sockt.LineReceiver(dest)

        def settled():
            # Delivered + dropped reaches n once the kernel's counter was read.
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
                m = r.read().decode()
            d = sockt.metric(m, "spool_dropped_total", name="udpin") or 0
            return (d, len(recv.lines())) if d + len(recv.lines()) >= n else None
        dropped, delivered = wait_for(settled, 180 * sockt.SLOW, 0.5,
                                      what="delivered + dropped == sent")

        def received_all_sent():
            # What spool counts as delivered has all reached the receiver.
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
                m = r.read().decode()
            out = sockt.metric(m, "spool_records_out_total", name="down") or 0
            got = len(recv.lines())
            return (out, got) if got >= out else None
        sent_out, delivered = wait_for(received_all_sent, 60 * sockt.SLOW, 0.2,
                                       what="the receiver to get what spool sent")
        check(sent_out == delivered, "spool counts %d records out, the receiver got %d"
              % (sent_out, delivered))
    finally:
        err = sockt.stop(s)
        if recv:
            recv.close()
    print("     %d sent, %d delivered, %d dropped" % (n, delivered, dropped), flush=True)
    check(dropped > 0, "the block made the kernel drop datagrams")
    check(delivered + dropped == n, "delivered %d + dropped %d != sent %d" % (
        delivered, dropped, n))
    check("%d datagrams received, %d dropped" % (n - int(dropped), int(dropped)) in err or
          "dropped %d in total" % int(dropped) in err, err[-2000:])
    check("dropped" in err and "receive buffer full" in err, "a drop warning was logged")


t.main()
