"""tailt: helpers shared by the tail input's integration tests (test_tail*.py).

A config with one tail input, a `file` output (raw or json) and a topic;
a sequenced writer that appends numbered lines ("<n> xxxx...") in whole-line
write() calls, optionally reopening its path when it was rotated (create
mode); readers for the log (`spool read`) and the output file; and the
sequence checker (lost, duplicated, out of order within a file).
"""
import atexit
import json
import os
import subprocess
import sys
import time

import spoolt
from spoolt import check

PAD = "x" * 100  # lines of ~110 bytes

_started = []


def spool(cfg):
    """Starts `spool run -c cfg`; a failed test leaves no spool behind."""
    s = spoolt.Spool(cfg)
    _started.append(s)
    return s


@atexit.register
def _kill_leftovers():
    for s in _started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(30)


def config(tmp, paths, extra="", topic_extra="", out_format="raw", partitions=1,
           log_level="info", key=None, fsync="1s"):
    """Writes <tmp>/spool.yaml; returns its path. `extra` is YAML text added to
    the tail input (indented 4 spaces)."""
    os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
    cfg = os.path.join(tmp, "spool.yaml")
    lines = [
        "service: {data_dir: %s/data, log_level: %s, shutdown_timeout: 20s}" % (tmp, log_level),
        "topics:",
        "  t: {partitions: %d, fsync: %s%s}" % (partitions, fsync, topic_extra),
        "inputs:",
        "  - type: tail",
        "    name: tl",
        "    topic: t",
        "    paths: [%s]" % ", ".join(paths),
    ]
    if key:
        lines.append("    key: \"%s\"" % key)
    for l in extra.strip("\n").splitlines():
        lines.append("    " + l)
    lines += [
        "outputs:",
        "  - type: file",
        "    name: out",
        "    topics: [t]",
        "    path: %s/out.txt" % tmp,
        "    format: %s" % out_format,
    ]
    spoolt.write(cfg, "\n".join(lines) + "\n")
    return cfg


def log_values(cfg, topic="t"):
    """Every value in the log, in partition/offset order, via `spool read`."""
    r = spoolt.run(["read", topic, "-c", cfg, "--format", "%v\\n"], timeout=300)
    check(r.returncode == 0, "spool read failed (%d): %s" % (r.returncode, r.stderr[-2000:]))
    out = r.stdout
    return out.split(b"\n")[:-1] if out else []


def out_values(tmp):
    return spoolt.read_lines(os.path.join(tmp, "out.txt"))


def out_json(tmp):
    recs = []
    for l in spoolt.read_lines(os.path.join(tmp, "out.txt")):
        recs.append(json.loads(l))
    return recs


def seqs(values):
    """Sequence numbers of lines "<n> ..."; non-numbered lines raise."""
    out = []
    for v in values:
        head = v.split(b" ", 1)[0]
        check(head.isdigit(), "unexpected line in the log: %r" % v[:80])
        out.append(int(head))
    return out


def wait_lines(tmp, n, timeout=120, what="output"):
    """Waits until the output file has at least n lines."""
    path = os.path.join(tmp, "out.txt")

    def count():
        try:
            with open(path, "rb") as f:
                return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0
    last = [0]

    def enough():
        last[0] = count()
        return last[0] >= n
    try:
        spoolt.wait_for(enough, timeout=timeout, interval=0.1, what=what)
    except spoolt.Failure:
        raise spoolt.Failure("timed out waiting for %d lines in %s, have %d" % (n, path, last[0]))


WRITER = r"""
import os, sys, time
path, n, rate, mode, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
pad = "x" * 100
chunk = 100
def open_it():
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return fd, os.fstat(fd).st_ino
fd, ino = open_it()
i = start
t0 = time.monotonic()
k = 0
while i < start + n:
    end = min(start + n, i + chunk)
    os.write(fd, "".join("%d %s\n" % (s, pad) for s in range(i, end)).encode())
    i = end
    k += 1
    if mode == "create" and k % 4 == 0:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None  # renamed, not yet re-created: keep writing to the old file
        if st is not None and st.st_ino != ino:
            os.close(fd)
            fd, ino = open_it()
    if rate > 0:
        ahead = (i - start) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
os.close(fd)
print(i - start, flush=True)
"""


def start_writer(path, n, rate=0, mode="append", start=1):
    """Starts a writer of n numbered lines (start..start+n-1) at `rate` lines/s
    (0 = as fast as it can); mode "create" reopens the path when its inode
    changed (the application's side of logrotate's create mode)."""
    return subprocess.Popen([sys.executable, "-c", WRITER, path, str(n), str(rate), mode,
                             str(start)], stdout=subprocess.PIPE)


def append_seq(path, first, last, mode="a"):
    with open(path, mode) as f:
        for s in range(first, last + 1):
            f.write("%d %s\n" % (s, PAD))


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmHWM:"):
                return int(l.split()[1])
    return 0


def open_fds(pid):
    """Targets of the process's open fds."""
    out = []
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            out.append(os.readlink(os.path.join(d, name)))
        except OSError:
            pass
    return out


def report(name, **kv):
    print("     %s: %s" % (name, ", ".join("%s=%s" % (k, v) for k, v in kv.items())), flush=True)


def wait_seen(tmp, n, timeout=120, first=1):
    """Waits until the output holds every sequence number first..first+n-1
    (lines not starting with a number are ignored). Returns the set seen."""
    path = os.path.join(tmp, "out.txt")
    seen = set()
    st = {"pos": 0, "rest": b""}
    if n <= 0:
        return seen

    def more():
        if not os.path.exists(path):
            return False
        with open(path, "rb") as f:
            f.seek(st["pos"])
            data = f.read()
        st["pos"] += len(data)
        lines = (st["rest"] + data).split(b"\n")
        st["rest"] = lines.pop()
        for l in lines:
            head = l.split(b" ", 1)[0]
            if head.isdigit():
                seen.add(int(head))
        return all(i in seen for i in range(first, first + n))
    try:
        spoolt.wait_for(more, timeout=timeout, interval=0.1, what="lines in the output")
    except spoolt.Failure:
        missing = [i for i in range(first, first + n) if i not in seen]
        raise spoolt.Failure("output lacks %d of lines %d..%d after %ds (first missing %s)"
                             % (len(missing), first, first + n - 1, timeout, missing[:5]))
    return seen


def logrotate(conf, state):
    """Runs `logrotate -f` once (Debian's real logrotate)."""
    r = subprocess.run(["logrotate", "-f", "-s", state, conf], capture_output=True, timeout=60)
    check(r.returncode == 0, "logrotate failed: %s" % r.stderr.decode())


def logrotate_conf(tmp, path, directives):
    """Writes a logrotate config for path; returns (conf, state)."""
    conf = os.path.join(tmp, "logrotate.conf")
    spoolt.write(conf, "%s {\n    rotate 1000\n    missingok\n%s}\n"
                 % (path, "".join("    %s\n" % d for d in directives)))
    return conf, os.path.join(tmp, "logrotate.state")


def check_seqs(cfg, tmp, n, name, out_dup_ok=True, **extra):
    """The log holds 1..n once each, in order; the output lost none (and has
    them in order); reports the figures."""
    log = spoolt.seq_check(seqs(log_values(cfg)), expected_n=n)
    out = spoolt.seq_check(seqs(out_values(tmp)), expected_n=n)
    report(name, lines=n, log_lost=log["lost"], log_dup=log["dup"],
           log_disorder=log["disorder"], out_lost=out["lost"], out_dup=out["dup"],
           out_disorder=out["disorder"], **extra)
    check(log["lost"] == 0 and log["dup"] == 0 and log["count"] == n, "log: %s" % log)
    check(log["disorder"] == 0, "log out of order: %s" % log)
    check(out["lost"] == 0, "output: %s" % out)
    if not out_dup_ok:
        check(out["dup"] == 0 and out["disorder"] == 0, "output: %s" % out)
    return log, out
