"""The `socket` input with real clients: TCP, UDP, unix stream (file
permissions) and unix datagram listeners; max_line_bytes split and
truncate (counted); max_connections; idle_timeout; TLS with `openssl
s_client` and socat, a plain-text client on the TLS port rejected with a
logged reason, and mutual TLS (no client certificate: rejected; a
certificate from the CA: accepted, its subject in a header).
"""
import os
import socket
import stat
import subprocess
import time

import sockt
import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)


def socket_input(listen, name="in", extra=""):
    return "  - type: socket\n    name: %s\n    topic: t\n    listen: %s\n%s" % (name, listen, extra)


@t.case
def tcp_lines_and_headers(tmp):
    port = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, socket_input("tcp://127.0.0.1:%d" % port)))
    try:
        c1 = socket.create_connection(("127.0.0.1", port))
        c2 = socket.create_connection(("127.0.0.1", port))
        c1.sendall(b"".join(b"a %d\n" % i for i in range(500)))
        c2.sendall(b"".join(b"b %d\r\n" % i for i in range(500)) + b"no newline at end")
        c1.close()
        c2.close()
        recs = sockt.wait_records(tmp, 1001)
    finally:
        sockt.stop(s)
    vals = [r["value"] for r in recs]
    check([v for v in vals if v.startswith("a ")] == ["a %d" % i for i in range(500)], "a order")
    check([v for v in vals if v.startswith("b ")] == ["b %d" % i for i in range(500)],
          "b order (CR removed)")
    check("no newline at end" in vals, "last partial line kept at EOF")
    h = recs[0]["headers"]
    check(h["input"] == "in" and h["host"] and h["peer"].startswith("127.0.0.1:"), h)
    check(len({r["headers"]["peer"] for r in recs}) == 2, "two peers")


@t.case
def udp_datagrams(tmp):
    port = spoolt.free_port(socket.SOCK_DGRAM)
    s = sockt.start(sockt.config(tmp, socket_input("udp://127.0.0.1:%d" % port)))
    try:
        sockt.send_udp(port, [b"one\n", b"two\nthree\n", b"four"])
        subprocess.run(["socat", "-u", "-", "UDP-SENDTO:127.0.0.1:%d" % port], input=b"five\n",
                       timeout=30, check=True)
        recs = sockt.wait_records(tmp, 5)
    finally:
        err = sockt.stop(s)
    check(sorted(r["value"] for r in recs) == sorted(["one", "two", "three", "four", "five"]),
          recs)
    check("5 datagrams received" not in err, "4 datagrams, not 5")
    check("4 datagrams received, 0 dropped" in err, err[-1000:])


@t.case
def unix_stream_with_mode(tmp):
    path = os.path.join(tmp, "app.sock")
    s = sockt.start(sockt.config(tmp, socket_input("unix://" + path, extra="    mode: \"0600\"\n")))
    try:
        st = os.stat(path)
        check(stat.S_ISSOCK(st.st_mode), "a socket")
        check(stat.S_IMODE(st.st_mode) == 0o600, "mode %o" % stat.S_IMODE(st.st_mode))
        subprocess.run(["socat", "-u", "-", "UNIX-CONNECT:" + path],
                       input=b"".join(b"u %d\n" % i for i in range(100)), timeout=30, check=True)
        recs = sockt.wait_records(tmp, 100)
    finally:
        sockt.stop(s)
    check([r["value"] for r in recs] == ["u %d" % i for i in range(100)], "order")
    check(recs[0]["headers"]["peer"] == path, recs[0]["headers"])
    check(not os.path.exists(path), "socket file removed at exit")


@t.case
def unix_stream_stale_socket_and_refuse_regular_file(tmp):
    path = os.path.join(tmp, "stale.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()  # a stale socket file from a crashed run
    s = sockt.start(sockt.config(tmp, socket_input("unix://" + path)))
    sockt.stop(s)
    spoolt.write(path, "not a socket")
    cfg = sockt.config(tmp, socket_input("unix://" + path))
    p = subprocess.run([spoolt.BIN, "run", "-c", cfg], capture_output=True, timeout=60,
                       env=spoolt.ENV)
    check(p.returncode != 0, "refuses to start")
    check(b"not a socket" in p.stderr, p.stderr[-2000:])
    check(open(path).read() == "not a socket", "regular file left alone")


@t.case
def unixgram(tmp):
    path = os.path.join(tmp, "dgram.sock")
    s = sockt.start(sockt.config(tmp, socket_input("unixgram://" + path,
                                                   extra="    mode: \"0666\"\n")))
    try:
        check(stat.S_IMODE(os.stat(path).st_mode) == 0o666, "mode")
        for i in range(50):
            subprocess.run(["socat", "-u", "-", "UNIX-SENDTO:" + path], input=b"g %d\n" % i,
                           timeout=30, check=True)
        recs = sockt.wait_records(tmp, 50)
    finally:
        sockt.stop(s)
    check([r["value"] for r in recs] == ["g %d" % i for i in range(50)], "order")


@t.case
def long_lines_split_and_truncate(tmp):
    p1 = spoolt.free_port()
    p2 = spoolt.free_port()
    mport = spoolt.free_port()
    inputs = (socket_input("tcp://127.0.0.1:%d" % p1, "split", "    max_line_bytes: 100\n") +
              socket_input("tcp://127.0.0.1:%d" % p2, "trunc",
                           "    max_line_bytes: 100\n    long_lines: truncate\n"))
    s = sockt.start(sockt.config(tmp, inputs, service_extra="  http: { listen: 127.0.0.1:%d }\n"
                                 % mport), listeners=2)
    try:
        line = b"x" * 250 + b"\n" + b"short\n"
        sockt.send_tcp(p1, line)
        sockt.send_tcp(p2, line)
        recs = sockt.wait_records(tmp, 6)
        import urllib.request

        def counted():
            # The counters are bumped by the listener thread; wait until both
            # show up rather than for "a while".
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
                m = r.read().decode()
            return m if (sockt.metric(m, "spool_socket_split_messages_total", name="split") and
                         sockt.metric(m, "spool_socket_truncated_messages_total", name="trunc")) \
                else None
        metrics = wait_for(counted, sockt.TIMEOUT, 0.1, what="the split and truncated counters")
    finally:
        sockt.stop(s)
    split = [r["value"] for r in recs if r["headers"]["input"] == "split"]
    trunc = [r["value"] for r in recs if r["headers"]["input"] == "trunc"]
    check(split == ["x" * 100, "x" * 100, "x" * 50, "short"], split)
    check(trunc == ["x" * 100, "short"], trunc)
    check(sockt.metric(metrics, "spool_socket_split_messages_total", name="split") == 1,
          [l for l in metrics.splitlines() if "split" in l])
    check(sockt.metric(metrics, "spool_socket_truncated_messages_total", name="trunc") == 1,
          [l for l in metrics.splitlines() if "trunc" in l])


def peer_closed(sock):
    """True when the other end closed sock (EOF or reset), without blocking."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@t.case
def max_connections_refuses_extra(tmp):
    port = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, socket_input("tcp://127.0.0.1:%d" % port,
                                                   extra="    max_connections: 2\n")))
    try:
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        a.sendall(b"from a\n")
        b.sendall(b"from b\n")
        sockt.wait_records(tmp, 2)
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(10)
        try:
            got = c.recv(10)
        except ConnectionResetError:
            got = b""
        check(got == b"", "third connection closed")
        sockt.wait_log(s, "max_connections (2) reached")
        a.close()
        # spool frees a's slot when it sees the close: until then a new
        # connection is refused (closed at once). Connect until one is
        # accepted; each attempt ends observably, accepted or closed.
        deadline = time.monotonic() + sockt.TIMEOUT
        d = None
        while d is None:
            check(time.monotonic() < deadline, "no connection accepted after a closed")
            x = socket.create_connection(("127.0.0.1", port))
            try:
                x.sendall(b"from d\n")
            except OSError:
                x.close()
                continue
            outcome = wait_for(lambda: "accepted" if any(r["value"] == "from d" for r in
                                                         sockt.out_records(tmp))
                               else "refused" if peer_closed(x) else None,
                               sockt.TIMEOUT, 0.02, what="the connection accepted or refused")
            if outcome == "accepted":
                d = x
            else:
                x.close()
        recs = sockt.wait_records(tmp, 3)
        b.close()
        c.close()
        d.close()
    finally:
        sockt.stop(s)
    check(sorted(r["value"] for r in recs) == ["from a", "from b", "from d"], recs)


@t.case
def idle_timeout_closes(tmp):
    port = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, socket_input("tcp://127.0.0.1:%d" % port,
                                                   extra="    idle_timeout: 300ms\n")))
    try:
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"hello\npartial")
        c.settimeout(20)
        t0 = time.monotonic()
        check(c.recv(10) == b"", "closed by spool")
        check(time.monotonic() - t0 < 15, "within a reasonable time")
        recs = sockt.wait_records(tmp, 2)
        sockt.wait_log(s, "idle for")
    finally:
        sockt.stop(s)
    check([r["value"] for r in recs] == ["hello", "partial"], recs)


def tls_input(port, pki, client_ca=False):
    extra = "    tls:\n      cert: %s\n      key: %s\n" % (pki["server"], pki["server_key"])
    if client_ca:
        extra += "      client_ca: %s\n" % pki["ca"]
    return socket_input("tcp://127.0.0.1:%d" % port, "tlsin", extra)


def s_client(port, pki, data, cert=None):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", pki["ca"],
           "-verify_return_error", "-quiet", "-no_ign_eof", "-servername", "localhost"]
    if cert:
        cmd += ["-cert", pki[cert], "-key", pki[cert + "_key"]]
    return subprocess.run(cmd, input=data, capture_output=True, timeout=60)


@t.case
def tls_with_s_client_socat_and_plain_rejected(tmp):
    pki = sockt.make_certs(tmp)
    port = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, tls_input(port, pki)))
    try:
        p = s_client(port, pki, b"".join(b"tls %d\n" % i for i in range(200)))
        check(p.returncode == 0, p.stderr[-2000:])
        subprocess.run(["socat", "-u", "-", "OPENSSL:127.0.0.1:%d,cafile=%s,commonname=localhost"
                        % (port, pki["ca"])], input=b"via socat\n", timeout=60, check=True)
        recs = sockt.wait_records(tmp, 201)
        # A plain-text client: rejected, with the reason in the log.
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"<13>plain text line\n")
        c.settimeout(20)
        try:
            check(c.recv(100) == b"", "plain client closed")
        except ConnectionResetError:
            pass
        c.close()
        sockt.wait_log(s, "plain text on a TLS listener")
    finally:
        err = sockt.stop(s)
    vals = [r["value"] for r in recs]
    check(vals[:200] == ["tls %d" % i for i in range(200)] or
          [v for v in vals if v.startswith("tls")] == ["tls %d" % i for i in range(200)], "order")
    check("via socat" in vals, vals[-3:])
    check("plain text line" not in "".join(vals), "plain text not taken")
    check("<13>plain text" in err, "first bytes shown in the log")


@t.case
def mutual_tls(tmp):
    pki = sockt.make_certs(tmp)
    port = spoolt.free_port()
    s = sockt.start(sockt.config(tmp, tls_input(port, pki, client_ca=True)))
    try:
        p = s_client(port, pki, b"no cert\n")
        sockt.wait_log(s, "TLS handshake with 127.0.0.1")
        p = s_client(port, pki, b"with cert\n", cert="client")
        check(p.returncode == 0, p.stderr[-2000:])
        recs = sockt.wait_records(tmp, 1)
    finally:
        sockt.stop(s)
    check([r["value"] for r in recs] == ["with cert"], recs)
    check("client-one" in recs[0]["headers"].get("tls.subject", ""), recs[0]["headers"])


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as x:
            x.bind(("::1", 0))
        return True
    except OSError:
        return False


@t.case
def ipv6_tcp_and_udp(tmp):
    if not ipv6_loopback():
        spoolt.skip("no IPv6 loopback (::1) on this machine")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as x:
        x.bind(("::1", 0))
        tport = x.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as x:
        x.bind(("::1", 0))
        uport = x.getsockname()[1]
    inputs = (socket_input("tcp://[::1]:%d" % tport, "t6") +
              socket_input("udp://[::1]:%d" % uport, "u6"))
    s = sockt.start(sockt.config(tmp, inputs), listeners=2)
    try:
        with socket.create_connection(("::1", tport)) as c:
            c.sendall(b"over tcp6\n")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.sendto(b"over udp6", ("::1", uport))
        recs = sockt.wait_records(tmp, 2)
    finally:
        sockt.stop(s)
    v = {r["value"]: r["headers"] for r in recs}
    check(v["over tcp6"]["peer"].startswith("[::1]:"), v)
    check(v["over udp6"]["peer"].startswith("[::1]:"), v)


@t.case
def config_errors(tmp):
    cfg = sockt.config(tmp, socket_input("sctp://127.0.0.1:1") +
                       socket_input("udp://127.0.0.1:5", "u", "    tls:\n      cert: /x\n"
                                    "      key: /y\n") +
                       socket_input("tcp://127.0.0.1:5", "m", "    mode: \"0999\"\n"))
    p = spoolt.run(["check", "-c", cfg])
    err = p.stderr.decode() + p.stdout.decode()
    check(p.returncode == 2, "exit 2, got %d: %s" % (p.returncode, err))
    check("listen" in err and "sctp" in err, err)
    check("only available on tcp" in err, err)
    check("octal" in err, err)


t.main()
