"""spoolt: shared helpers for spool's integration tests.

Each test is a plain Python script run by ctest (tests/CMakeLists.txt sets
SPOOL_BIN, SPOOL_SRC, SPOOL_BUILD). Tests drive the real binary in a
temporary directory, bound every wait in time, and print a closing line
"N passed, N failed". Use:

    import spoolt
    t = spoolt.Suite(__file__)

    @t.case
    def seq_to_file(tmp):
        ...

    t.main()
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("SPOOL_BIN", "")
SRC = os.environ.get("SPOOL_SRC", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("SPOOL_BUILD", os.path.join(SRC, "build"))
SANITIZE = os.environ.get("SPOOL_SANITIZE", "0") in ("1", "ON", "TRUE", "true")

if not BIN:
    BIN = os.path.join(BUILD, "spool")

ENV = dict(os.environ)
ENV.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
ENV.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_for(pred, timeout=30.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return path


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n") if data else []


def seq_check(values, expected_n=None, start=1):
    """Counts lost, duplicated and out-of-order sequence numbers.

    values: an iterable of ints (in the order they arrived).
    Returns dict(lost, dup, disorder, count)."""
    seen = set()
    dup = 0
    disorder = 0
    last = None
    count = 0
    for v in values:
        count += 1
        if v in seen:
            dup += 1
        else:
            seen.add(v)
        if last is not None and v < last and v not in (None,):
            disorder += 1
        last = v
    lost = 0
    if expected_n is not None:
        lost = sum(1 for i in range(start, start + expected_n) if i not in seen)
    return {"lost": lost, "dup": dup, "disorder": disorder, "count": count}


class Spool:
    """A running `spool run -c CONFIG` process."""

    def __init__(self, config_path, stdin=None, args=(), env=None, cwd=None):
        self.config = config_path
        self.stderr_path = config_path + ".stderr"
        self.stderr_f = open(self.stderr_path, "ab")
        e = dict(ENV)
        if env:
            e.update(env)
        self.proc = subprocess.Popen([BIN, "run", "-c", config_path] + list(args),
                                     stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if stdin is not None else None,
                                     stderr=self.stderr_f, env=e, cwd=cwd)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def terminate(self, timeout=60):
        """SIGTERM, then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.stderr_f.close()

    def wait(self, timeout=60):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise Failure("spool did not exit within %ss; stderr:\n%s" % (timeout, self.stderr()[-4000:]))
        self.stderr_f.close()
        return rc


def run(args, input=None, timeout=120, env=None, cwd=None):
    """Runs the spool binary with args to completion; returns CompletedProcess (bytes)."""
    e = dict(ENV)
    if env:
        e.update(env)
    return subprocess.run([BIN] + list(args), input=input, capture_output=True, timeout=timeout,
                          env=e, cwd=cwd)


class Suite:
    def __init__(self, file):
        self.name = os.path.basename(file)
        self.cases = []

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def main(self):
        only = sys.argv[1:] or None
        passed = failed = 0
        for fn in self.cases:
            if only and fn.__name__ not in only:
                continue
            tmp = tempfile.mkdtemp(prefix="spool-%s-" % fn.__name__)
            t0 = time.monotonic()
            try:
                fn(tmp)
                passed += 1
                print("ok   %s (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
                traceback.print_exc()
                print("     (files kept in %s)" % tmp, flush=True)
                continue
            subprocess.run(["rm", "-rf", tmp])
        print("%d passed, %d failed" % (passed, failed), flush=True)
        sys.exit(1 if failed else 0)
