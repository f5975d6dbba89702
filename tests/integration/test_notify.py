"""`spool run` speaks sd_notify as a Type=notify unit expects: the test plays
systemd with a unixgram socket in NOTIFY_SOCKET and WATCHDOG_USEC, and
checks READY=1 and STATUS= after start, WATCHDOG=1 pings, RELOADING=1 then
READY=1 around a SIGHUP, and STOPPING=1 at SIGTERM.
"""
import os
import signal
import socket
import subprocess
import time

import spoolt
from spoolt import check

t = spoolt.Suite(__file__)

TIMEOUT = 90 if spoolt.SANITIZE else 45


class FakeSystemd:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # every assignment received, in order

    def wait_for(self, pred, timeout, what):
        """Receives until pred(assignment) holds for one of them."""
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if pred(m):
                return m
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode("utf-8", "replace")
            except socket.timeout:
                break
            found = None
            for line in data.split("\n"):
                if line:
                    self.messages.append(line)
                    if found is None and pred(line):
                        found = line
            if found is not None:
                return found
        raise spoolt.Failure("no %s from spool within %ss; got %r" % (what, timeout, self.messages))

    def close(self):
        self.sock.close()


@t.case
def notify_protocol(tmp):
    sd = FakeSystemd(os.path.join(tmp, "notify"))
    cfg = spoolt.write(os.path.join(tmp, "spool.yaml"), """
service:
  data_dir: %s/data
  log_level: info
topics:
  t: {}
inputs:
  - type: stdin
    name: in
    topic: t
outputs:
  - type: file
    name: copy
    topics: [t]
    path: %s/out.txt
""" % (tmp, tmp))
    # WATCHDOG_USEC without WATCHDOG_PID applies to whoever reads it.
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE,  # stdin stays open: no EOF shutdown
                     env={"NOTIFY_SOCKET": sd.path, "WATCHDOG_USEC": "1500000"})
    try:
        sd.wait_for(lambda m: m == "READY=1", TIMEOUT, "READY=1")
        sd.wait_for(lambda m: m.startswith("STATUS="), 10, "STATUS=")
        # Pings at least every half of the 1.5 s timeout: two within 5 s.
        sd.messages = []
        try:
            sd.wait_for(lambda m: m == "WATCHDOG=1" and sd.messages.count(m) >= 2, 5,
                        "two WATCHDOG=1 pings")
        except spoolt.Failure:
            raise spoolt.Failure("fewer than 2 watchdog pings in 5s: %r\n%s"
                                 % (sd.messages, s.stderr()[-3000:]))

        sd.messages = []
        s.proc.send_signal(signal.SIGHUP)
        sd.wait_for(lambda m: m == "RELOADING=1", TIMEOUT, "RELOADING=1 after SIGHUP")
        i = sd.messages.index("RELOADING=1")
        check(i + 1 < len(sd.messages) and sd.messages[i + 1].startswith("MONOTONIC_USEC="),
              "RELOADING=1 without MONOTONIC_USEC: %r" % sd.messages)
        del sd.messages[:i + 1]  # the READY=1 that ends the reload comes after it
        sd.wait_for(lambda m: m == "READY=1", TIMEOUT, "READY=1 after the reload")

        sd.messages = []
        s.proc.send_signal(signal.SIGTERM)
        sd.wait_for(lambda m: m == "STOPPING=1", TIMEOUT, "STOPPING=1 at SIGTERM")
        rc = s.wait(TIMEOUT)
        check(rc == 0, "spool exited %s:\n%s" % (rc, s.stderr()[-4000:]))
    finally:
        if s.proc.poll() is None:
            s.kill()
        sd.close()


t.main()
