"""spoolt: shared helpers for spool's integration tests.

Each test is a plain Python script run by ctest (tests/CMakeLists.txt sets
SPOOL_BIN, SPOOL_SRC, SPOOL_BUILD). Tests drive the real binary in a
temporary directory, bound every wait in time, and print a closing line
"N passed, N failed, N skipped". Use:

    import spoolt
    t = spoolt.Suite(__file__)

    @t.case
    def seq_to_file(tmp):
        ...

    t.main()

A case that cannot run here calls spoolt.skip("reason") (or
spoolt.require_root("what needs it")): it is reported as SKIP with its reason,
and the script exits SKIP_CODE (77) when nothing failed, which ctest reports
as "Skipped" (tests/CMakeLists.txt sets SKIP_RETURN_CODE). Skip only for a
reason CI cannot have: CI runs as root with every package installed.

Never sleep to let something happen: wait for what can be observed
(wait_for on a file's content, a log line, a metric; poke_until when the
condition needs an action repeated, such as a probe message).
"""
import json
import os
import signal
import socket
import urllib.request
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("SPOOL_BIN", "")
SRC = os.environ.get("SPOOL_SRC", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("SPOOL_BUILD", os.path.join(SRC, "build"))
TSAN = os.environ.get("SPOOL_TSAN", "0") in ("1", "ON", "TRUE", "true")
# An instrumented (sanitizer) build, ASan/UBSan or TSan: several times slower,
# so tests scale their loads down and their timeouts up.
SANITIZE = os.environ.get("SPOOL_SANITIZE", "0") in ("1", "ON", "TRUE", "true") or TSAN
SKIP_CODE = 77  # the exit status ctest's SKIP_RETURN_CODE maps to "Skipped"

if not BIN:
    BIN = os.path.join(BUILD, "spool")

ENV = dict(os.environ)
ENV.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
ENV.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
ENV.setdefault("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1:suppressions=%s"
               % os.path.join(SRC, "tests", "tsan.supp"))

# What a sanitizer prints when it found something (the process may have been
# told not to abort, or may have been killed before it could).
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer", "runtime error:")


class Failure(AssertionError):
    pass


class Skipped(Exception):
    """Raised by skip(): the case cannot run on this machine."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def skip(reason):
    """Ends the current case as SKIP with `reason` (printed, and counted)."""
    raise Skipped(reason)


def require_root(what):
    """Skips the case unless running as root (CI is root: it never skips there)."""
    if os.geteuid() != 0:
        skip("not root: %s needs root" % what)


def sanitizer_report(text):
    """The first line of a sanitizer report in text, or None."""
    for line in text.splitlines():
        if any(m in line for m in SANITIZER_REPORTS):
            return line
    return None


def murmur2_partition(key, n):
    """Kafka's default partition for key: murmur2 as the Java client computes it,
    written from its description (independent of spool's C code)."""
    m, r = 0x5bd1e995, 24
    h = (0x9747b28c ^ len(key)) & 0xffffffff
    i = 0
    while len(key) - i >= 4:
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & 0xffffffff
        k ^= k >> r
        k = (k * m) & 0xffffffff
        h = (h * m) & 0xffffffff
        h ^= k
        i += 4
    rest = len(key) - i
    if rest == 3:
        h ^= key[i + 2] << 16
    if rest >= 2:
        h ^= key[i + 1] << 8
    if rest >= 1:
        h ^= key[i]
        h = (h * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return (h & 0x7fffffff) % n


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


def poke_until(poke, pred, timeout=30.0, every=0.5, interval=0.05, what="condition"):
    """Calls poke(), then polls pred() for `every` seconds; repeats until pred()
    is true, at most `timeout` seconds in all. For conditions that need an
    action repeated until the other side is ready (a probe message sent until
    it arrives), instead of sleeping "long enough" before acting once."""
    deadline = time.monotonic() + timeout
    while True:
        poke()
        until = min(deadline, time.monotonic() + every)
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > until:
                break
            time.sleep(interval)
        if time.monotonic() > deadline:
            raise Failure("timed out after %.1fs waiting for %s" % (timeout, what))


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


def metric(port, name, labels=()):
    """The value of the first series of `name` whose line contains every string of labels
    (e.g. 'reason="filter"'), read from spool's /metrics on 127.0.0.1:port; None if absent."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        body = r.read().decode()
    for ln in body.splitlines():
        if (ln.startswith(name + "{") or ln.startswith(name + " ")) and \
                all(lab in ln for lab in labels):
            return int(float(ln.split()[-1]))
    return None


def read_json_lines(path):
    """The JSON documents of the complete lines of path ([] if it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(x) for x in data.split(b"\n")[:-1]]


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
        self.stderr_start = self.stderr_f.tell()  # earlier runs' lines come before
        e = dict(ENV)
        if env:
            e.update(env)
        self.proc = subprocess.Popen([BIN, "run", "-c", config_path] + list(args),
                                     stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if stdin is not None else None,
                                     stderr=self.stderr_f, env=e, cwd=cwd)

    def stderr(self):
        """Everything in the stderr file: this run's and earlier runs' with the
        same config (it is appended to)."""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def run_stderr(self):
        """What this process wrote to stderr so far."""
        with open(self.stderr_path, "rb") as f:
            f.seek(self.stderr_start)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout=60):
        """Waits until this process logged `text`; fails early if it exited."""
        def seen():
            if text in self.run_stderr():
                return True
            if self.proc.poll() is not None:
                raise Failure("spool exited (%s) before logging %r:\n%s"
                              % (self.proc.returncode, text, self.run_stderr()[-3000:]))
            return False
        return wait_for(seen, timeout, what="%r in spool's log" % text)

    def wait_running(self, timeout=60):
        """Waits until this process logged that it runs (every input started)."""
        return self.wait_log(" running: ", timeout)

    def terminate(self, timeout=60):
        """SIGTERM, then wait; returns the exit code. A sanitizer report in
        spool's stderr fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        report = sanitizer_report(self.stderr())
        if report is not None:
            raise Failure("sanitizer report in spool's stderr: %s\n%s"
                          % (report, self.stderr()[-6000:]))
        return rc

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
        if only:
            unknown = [n for n in only if n not in [fn.__name__ for fn in self.cases]]
            if unknown:
                print("no such case in %s: %s" % (self.name, ", ".join(unknown)), flush=True)
                sys.exit(2)
        passed = failed = skipped = 0
        for fn in self.cases:
            if only and fn.__name__ not in only:
                continue
            tmp = tempfile.mkdtemp(prefix="spool-%s-" % fn.__name__)
            t0 = time.monotonic()
            try:
                fn(tmp)
                passed += 1
                print("ok   %s (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
            except Skipped as e:
                skipped += 1
                print("SKIP %s: %s" % (fn.__name__, e), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
                traceback.print_exc()
                print("     (files kept in %s)" % tmp, flush=True)
                continue
            subprocess.run(["rm", "-rf", tmp])
        print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
        sys.exit(1 if failed else SKIP_CODE if skipped else 0)
