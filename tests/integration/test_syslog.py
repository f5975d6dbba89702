"""The `syslog` input and output with real syslog software.

- util-linux `logger` sending RFC 5424 and RFC 3164 over TCP (newline and
  octet-counted framing), UDP and unix datagram and stream sockets: the parsed
  fields arrive as headers, the message timestamp as the record's.
- A message that is not syslog is kept whole with a `syslog.error` header.
- Debian's rsyslog (rsyslogd -n, its own work dir) forwarding to spool
  with omfwd over TCP: octet-counted RFC 5424, and newline-framed RFC 3164
  (RSYSLOG_ForwardFormat).
- spool's `syslog` output (RFC 5424, octet counting) accepted by a real
  rsyslog listening with imptcp, fields intact.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import sockt
import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)


def syslog_input(listen, name="sys", extra=""):
    return "  - type: syslog\n    name: %s\n    topic: t\n    listen: %s\n%s" % (name, listen, extra)


def logger(*args, msg):
    p = subprocess.run(["logger"] + list(args) + ["--", msg], capture_output=True, timeout=30)
    check(p.returncode == 0, "logger %s: %s" % (args, p.stderr))


def by_value(recs):
    return {r["value"]: r for r in recs}


@t.case
def logger_tcp_udp_unix(tmp):
    tport = spoolt.free_port()
    uport = spoolt.free_port(socket.SOCK_DGRAM)
    path = os.path.join(tmp, "log.sock")
    spath = os.path.join(tmp, "stream.sock")
    inputs = (syslog_input("unix://" + spath, "ustream") +syslog_input("tcp://127.0.0.1:%d" % tport, "tcp") +
              syslog_input("udp://127.0.0.1:%d" % uport, "udp",
                           "    key: \"{{ facility }}-{{ appname }}\"\n") +
              syslog_input("unixgram://" + path, "unix"))
    s = sockt.start(sockt.config(tmp, inputs), listeners=4)
    t0 = int(time.time() * 1000)
    try:
        srv = ["--server", "127.0.0.1", "--port"]
        logger(*srv, str(tport), "--tcp", "--rfc5424", "-t", "app5424", "--id=4242", "-p",
               "local3.err", "--msgid", "ID47", "--sd-id", "origin@32473",
               "--sd-param", 'ip="10.0.0.1"', msg="tcp 5424 message")
        logger(*srv, str(tport), "--tcp", "--rfc3164", "-t", "app3164", "-p", "auth.warning",
               msg="tcp 3164 message")
        logger(*srv, str(tport), "--tcp", "--octet-count", "--rfc5424", "-t", "octet",
               msg="octet counted\nwith a newline inside")
        logger(*srv, str(uport), "--udp", "--rfc5424", "-t", "udpapp", "-p", "daemon.info",
               msg="udp 5424 message")
        logger(*srv, str(uport), "--udp", "--rfc3164", "-t", "udp3164", msg="udp 3164 message")
        logger("--socket", path, "-t", "localapp", "--id=77", "-p", "mail.notice",
               msg="unix socket message")
        # A stream socket: logger falls back to SOCK_STREAM by itself.
        logger("--socket", spath, "-t", "streamapp", msg="unix stream message")
        recs = sockt.wait_records(tmp, 7)
    finally:
        sockt.stop(s)
    v = by_value(recs)
    r = v["tcp 5424 message"]["headers"]
    check(r["facility"] == "local3" and r["severity"] == "err", r)
    check(r["appname"] == "app5424" and r["procid"] == "4242" and r["msgid"] == "ID47", r)
    check(r["hostname"] and r["input"] == "tcp" and r["peer"].startswith("127.0.0.1:"), r)
    check('origin@32473 ip="10.0.0.1"' in r["sd"], r)
    check(r["sd.origin@32473.ip"] == "10.0.0.1", r)
    ts = v["tcp 5424 message"]["timestamp"]
    check(abs(ts - t0) < 60000, "timestamp from the message: %d vs %d" % (ts, t0))
    r = v["tcp 3164 message"]["headers"]
    check(r["facility"] == "auth" and r["severity"] == "warning" and r["appname"] == "app3164", r)
    check("octet counted\nwith a newline inside" in v, "octet framing keeps the newline")
    r = v["udp 5424 message"]["headers"]
    check(r["facility"] == "daemon" and r["severity"] == "info" and r["appname"] == "udpapp", r)
    check(r["input"] == "udp", r)
    check(v["udp 5424 message"]["key"] == "daemon-udpapp", "key template over parsed fields: %s"
          % v["udp 5424 message"]["key"])
    r = v["udp 3164 message"]["headers"]
    check(r["appname"] == "udp3164" and r["severity"] == "notice", r)
    r = v["unix socket message"]["headers"]
    check(r["appname"] == "localapp" and r["procid"] == "77" and r["facility"] == "mail", r)
    check(r["peer"] == path, r)
    r = v["unix stream message"]["headers"]
    check(r["appname"] == "streamapp" and r["input"] == "ustream" and r["peer"] == spath, r)


@t.case
def garbage_kept_with_reason(tmp):
    port = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, syslog_input("tcp://127.0.0.1:%d" % port,
                                                   extra="    framing: newline\n")))
    try:
        sockt.send_tcp(port, b"this is not syslog\n<999>bad pri\n<14>1 2020-13-01T00:00:00Z h a"
                             b" p m - bad month\n<14>ok 3164\n")
        recs = sockt.wait_records(tmp, 4)
    finally:
        sockt.stop(s)
    v = by_value(recs)
    check("no PRI" in v["this is not syslog"]["headers"]["syslog.error"], recs[0])
    check("PRI" in v["<999>bad pri"]["headers"]["syslog.error"], recs)
    bad = v["<14>1 2020-13-01T00:00:00Z h a p m - bad month"]["headers"]
    check("TIMESTAMP" in bad["syslog.error"] and "facility" not in bad, bad)
    ok = v["ok 3164"]["headers"]
    check("syslog.error" not in ok and ok["facility"] == "user", ok)


def rsyslog(tmp, name, conf_body):
    """Starts `rsyslogd -n` with its own config, pid file and work dir."""
    if shutil.which("rsyslogd") is None:
        raise spoolt.Failure("rsyslogd not installed (Debian package rsyslog)")
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "work"), exist_ok=True)
    conf = os.path.join(d, "rsyslog.conf")
    spoolt.write(conf, 'global(workDirectory="%s/work")\n%s' % (d, conf_body))
    p = subprocess.run(["rsyslogd", "-N1", "-f", conf], capture_output=True, timeout=60)
    check(p.returncode == 0, "rsyslog config check: %s" % p.stderr.decode(errors="replace"))
    log = open(os.path.join(d, "rsyslogd.out"), "wb")
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", conf, "-i", os.path.join(d, "pid")],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, d


def stop_rsyslog(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@t.case
def rsyslog_omfwd_to_spool(tmp):
    oc_port = spoolt.free_port()
    nl_port = spoolt.free_port()
    rs_port = spoolt.free_port(socket.SOCK_DGRAM)
    inputs = (syslog_input("tcp://127.0.0.1:%d" % oc_port, "octet",
                           "    framing: octet_counting\n") +
              syslog_input("tcp://127.0.0.1:%d" % nl_port, "legacy"))
    s = sockt.start(sockt.config(tmp, inputs), listeners=2)
    proc, _ = rsyslog(tmp, "rs", """
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="%d")
action(type="omfwd" target="127.0.0.1" port="%d" protocol="tcp" TCP_Framing="octet-counted"
       template="RSYSLOG_SyslogProtocol23Format")
action(type="omfwd" target="127.0.0.1" port="%d" protocol="tcp"
       template="RSYSLOG_ForwardFormat")
""" % (rs_port, oc_port, nl_port))
    try:
        # rsyslog listens on UDP and connects its forwards when it is ready:
        # send probes until one came through each forward, then the test's
        # messages (UDP on the loopback is not lost once it listens).
        def relayed_probes():
            got = {r["headers"]["input"] for r in sockt.out_records(tmp)
                   if r["value"].strip().startswith("probe")}
            return got >= {"octet", "legacy"}
        spoolt.poke_until(lambda: logger("--server", "127.0.0.1", "--port", str(rs_port),
                                         "--udp", "--rfc3164", "-t", "probe", msg="probe"),
                          relayed_probes, sockt.TIMEOUT, every=0.5 * sockt.SLOW,
                          what="a probe relayed by rsyslog to both inputs")
        n = 50
        for i in range(n):
            logger("--server", "127.0.0.1", "--port", str(rs_port), "--udp", "--rfc3164",
                   "-t", "relayed", "--id=%d" % (1000 + i), "-p", "local5.warning",
                   msg="via rsyslog %d" % i)

        def all_relayed():
            r = [r for r in sockt.out_records(tmp) if not r["value"].strip().startswith("probe")]
            return r if len(r) >= 2 * n else None
        recs = wait_for(all_relayed, sockt.TIMEOUT, 0.1, what="%d relayed messages" % (2 * n))
    finally:
        stop_rsyslog(proc)
        sockt.stop(s)
    for inp in ("octet", "legacy"):
        mine = [r for r in recs if r["headers"]["input"] == inp]
        check(sorted(r["value"].strip() for r in mine) ==
              sorted("via rsyslog %d" % i for i in range(n)), (inp, mine[:3]))
        h = mine[0]["headers"]
        check(h["facility"] == "local5" and h["severity"] == "warning", h)
        check(h["appname"] == "relayed" and h["procid"].isdigit(), h)
        check("syslog.error" not in h, h)


@t.case
def syslog_output_to_rsyslog_imptcp(tmp):
    rs_port = spoolt.free_port()
    uport = spoolt.free_port(socket.SOCK_DGRAM)
    out = os.path.join(tmp, "rs", "received.txt")
    proc, _ = rsyslog(tmp, "rs", """
module(load="imptcp")
input(type="imptcp" address="127.0.0.1" port="%d" ruleset="in")
template(name="fields" type="string"
         string="%%syslogfacility-text%%|%%syslogseverity-text%%|%%hostname%%|%%app-name%%|%%procid%%|%%msgid%%|%%structured-data%%|%%timereported:::date-rfc3339%%|%%msg%%\\n")
ruleset(name="in") {
  action(type="omfile" file="%s" template="fields")
}
""" % (rs_port, out))
    outputs = ("  - type: syslog\n    name: tors\n    topics: [t]\n    url: tcp://127.0.0.1:%d\n"
               "    retry_backoff: 100ms\n    retry_backoff_max: 1s\n" % rs_port)
    s = sockt.start(sockt.config(tmp, syslog_input("udp://127.0.0.1:%d" % uport), outputs))
    try:
        n = 100
        for i in range(n):
            logger("--server", "127.0.0.1", "--port", str(uport), "--udp", "--rfc5424",
                   "-t", "fwd", "--id=%d" % (1000 + i), "--msgid", "M%d" % i, "-p", "local2.crit",
                   "--sd-id", "ex@1", "--sd-param", 'seq="%d"' % i, msg="line %d" % i)

        def lines():
            if not os.path.exists(out):
                return None
            ls = open(out, encoding="utf-8", errors="replace").read().splitlines()
            return ls if len(ls) >= n else None
        got = wait_for(lines, sockt.TIMEOUT, 0.1, what="rsyslog received %d messages" % n)
    finally:
        sockt.stop(s)
        stop_rsyslog(proc)
    check(len(got) == n, "exactly %d, got %d" % (n, len(got)))
    for i, line in enumerate(sorted(got, key=lambda l: int(l.rsplit(" ", 1)[1]))):
        f = line.split("|")
        check(f[0] == "local2" and f[1] == "crit", line)
        check(f[3] == "fwd" and f[4] == str(1000 + i) and f[5] == "M%d" % i, line)
        check('ex@1 seq="%d"' % i in f[6], line)
        check(f[7].startswith("20"), line)
        check(f[8].strip() == "line %d" % i, line)


t.main()
