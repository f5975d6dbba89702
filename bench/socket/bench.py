#!/usr/bin/env python3
"""Socket input benchmark: TCP lines -> log, and UDP syslog loss at a fixed rate.

    bench/socket/bench.py [--spool build/spool] [--lines 2000000] [--append bench/RESULTS.md]

1. TCP in -> log: N lines of 100 bytes sent over 1 connection and over 50
   connections (pre-built buffers, sendall) to a `socket` input; the clock
   stops when the topic's end offsets (from /metrics) reach N. Reports
   lines/s and spool's CPU seconds (user+system, /proc) per million lines.
2. UDP syslog at fixed offered rates (RFC 5424 datagrams of ~120 bytes to a
   `syslog` input, paced in 1 ms slices) for a few seconds each: loss % from
   spool_dropped_total (the kernel's exact drop count) and checked against
   the records that reached the log.

No output plugin runs: this measures the input and the log (fsync 1s).
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def metric_sum(text, metric_name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric_name + "{") and not line.startswith(metric_name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Run:
    def __init__(self, spool, tmp, inputs, partitions):
        self.mport = free_port()
        self.cfg = os.path.join(tmp, "spool.yaml")
        with open(self.cfg, "w") as f:
            f.write("service:\n  data_dir: %s/data\n  log_level: warn\n"
                    "  http: { listen: 127.0.0.1:%d }\n"
                    "topics:\n  t:\n    partitions: %d\n    fsync: 1s\n    segment_bytes: 256MiB\n"
                    "inputs:\n%soutputs: []\n" % (tmp, self.mport, partitions, inputs))
        self.err = open(os.path.join(tmp, "stderr"), "wb")
        self.proc = subprocess.Popen([spool, "run", "-c", self.cfg], stderr=self.err)
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics(self.mport)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("spool did not start: see %s/stderr" % tmp)
                time.sleep(0.05)

    def end_offsets(self):
        return metric_sum(metrics(self.mport), "spool_partition_end_offset", topic="t")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.err.close()


def bench_tcp(spool, n, conns, kind="socket"):
    with tempfile.TemporaryDirectory(prefix="spool-bench-socket-") as tmp:
        port = free_port()
        run = Run(spool, tmp, "  - type: %s\n    topic: t\n    listen: tcp://127.0.0.1:%d\n"
                  % (kind, port), 4)
        try:
            return tcp_once(run, port, n, conns, kind)
        finally:
            run.stop()


def tcp_once(run, port, n, conns, kind):
    per = n // conns
    if kind == "syslog":
        # RFC 5424 with structured data, about 150 bytes.
        fmt = (b"<134>1 2026-11-24T10:00:00.123Z web%02d nginx 4242 ACCESS [req@1 id=\"%09d\"]"
               b" GET /index.html 200 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
        payloads = [b"".join(fmt % (c, i) for i in range(per)) for c in range(conns)]
    else:
        pad = b"x" * 80
        payloads = [b"".join(b"c%02d %09d %s\n" % (c, i, pad) for i in range(per))
                    for c in range(conns)]
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    cpu0 = cpu_seconds(run.proc.pid)
    t0 = time.monotonic()
    threads = [threading.Thread(target=s.sendall, args=(p,)) for s, p in zip(socks, payloads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in socks:
        s.close()
    total = per * conns
    while run.end_offsets() < total:
        time.sleep(0.01)
        if time.monotonic() - t0 > 600:
            raise SystemExit("timed out")
    wall = time.monotonic() - t0
    cpu = cpu_seconds(run.proc.pid) - cpu0
    return {"kind": kind, "conns": conns, "lines": total, "mb": total * len(payloads[0]) / per / 1e6,
            "secs": wall, "lines_s": total / wall, "cpu_per_m": cpu / (total / 1e6)}


def bench_udp(spool, rate, secs, rcvbuf):
    with tempfile.TemporaryDirectory(prefix="spool-bench-udp-") as tmp:
        port = free_port(socket.SOCK_DGRAM)
        run = Run(spool, tmp, "  - type: syslog\n    name: udp\n    topic: t\n"
                  "    listen: udp://127.0.0.1:%d\n    receive_buffer: %s\n" % (port, rcvbuf), 4)
        try:
            return udp_once(run, port, rate, secs)
        finally:
            run.stop()


def udp_once(run, port, rate, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    msgs = [b"<14>1 2026-11-24T10:00:00.000Z bench app 1 - - message number %09d xxxxxxxxx"
            b"xxxxxxxxxxxxxxxxxxxxxxx" % i for i in range(1000)]
    sent = 0
    t0 = time.monotonic()
    slice_n = max(1, rate // 1000)
    while True:
        now = time.monotonic() - t0
        if now >= secs:
            break
        due = int(now * rate)
        while sent < due:
            for _ in range(min(slice_n, due - sent)):
                s.sendto(msgs[sent % 1000], ("127.0.0.1", port))
                sent += 1
        time.sleep(0.0005)
    offered = sent / (time.monotonic() - t0)
    deadline = time.monotonic() + 60
    while True:
        m = metrics(run.mport)
        dropped = metric_sum(m, "spool_dropped_total", name="udp")
        logged = metric_sum(m, "spool_partition_end_offset", topic="t")
        if dropped + logged >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"rate": rate, "offered": offered, "sent": sent, "logged": int(logged),
            "dropped": int(dropped), "loss": 100.0 * dropped / sent if sent else 0,
            "balanced": int(logged + dropped) == sent}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spool", default=os.path.join(ROOT, "build", "spool"))
    ap.add_argument("--lines", type=int, default=2000000)
    ap.add_argument("--udp-secs", type=int, default=5)
    ap.add_argument("--udp-rates", default="20000,50000,100000")
    ap.add_argument("--udp-rcvbuf", default="0,8MiB",
                    help="receive_buffer values to try (0 = the system default)")
    ap.add_argument("--skip-tcp", action="store_true")
    ap.add_argument("--append", help="append the results to this markdown file")
    a = ap.parse_args()
    out = []
    out.append("### socket: %s\n" % time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()))
    out.append("Machine: %d CPUs, Linux %s. `bench/socket/bench.py --lines %d`: 100-byte lines "
               "into a `socket` input, and ~150-byte RFC 5424 messages with structured data into "
               "a `syslog` input (topic of 4 partitions, fsync 1s, no output); senders are "
               "Python threads on the same machine.\n" % (os.cpu_count(), os.uname().release,
                                                         a.lines))
    out.append("| input | connections | lines | MB | seconds | lines/s "
               "| spool CPU s per million lines |")
    out.append("|---|---|---|---|---|---|---|")
    runs = [("socket", 1), ("socket", 50), ("syslog", 1), ("syslog", 50)]
    for kind, conns in ([] if a.skip_tcp else runs):
        r = bench_tcp(a.spool, a.lines, conns, kind)
        out.append("| %s | %d | %d | %.0f | %.2f | %.0f | %.2f |" % (
            r["kind"], r["conns"], r["lines"], r["mb"], r["secs"], r["lines_s"], r["cpu_per_m"]))
        print(out[-1], flush=True)
    out.append("")
    out.append("UDP syslog (RFC 5424, ~120 B datagrams), %d s per rate and receive_buffer; "
               "loss from spool_dropped_total (the socket's kernel drop counter); logged + "
               "dropped checked against sent:\n" % a.udp_secs)
    out.append("| receive_buffer | offered msg/s | sent | logged | dropped | loss % "
               "| logged+dropped == sent |")
    out.append("|---|---|---|---|---|---|---|")
    for rcvbuf in a.udp_rcvbuf.split(","):
        for rate in [int(x) for x in a.udp_rates.split(",")]:
            r = bench_udp(a.spool, rate, a.udp_secs, rcvbuf)
            out.append("| %s | %.0f | %d | %d | %d | %.2f | %s |" % (
                rcvbuf if rcvbuf != "0" else "system default", r["offered"], r["sent"],
                r["logged"], r["dropped"], r["loss"], "yes" if r["balanced"] else "NO"))
            print(out[-1], flush=True)
    text = "\n".join(out) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
