"""tail input: what a record holds.

Multiline with a real-looking Java stack trace and Python traceback (one
record each), a 10 MiB line (one record with a large max_line_bytes; split
into max_line_bytes pieces by default, truncated on request), NUL bytes and
invalid UTF-8 passed through untouched, an incomplete last line emitted
after flush_partial_after, and '\\r' stripping.

No case sleeps to let spool catch up: each waits for the file's last record
in the output, then stops spool and compares the output and the log.
"""
import os
import time

import spoolt
import tailt
from spoolt import check

t = spoolt.Suite(__file__)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
START = r"^\d{4}-\d\d-\d\d "


def start(cfg):
    s = tailt.spool(cfg)
    s.wait_log("following", timeout=30)  # this run's line, not an earlier run's
    return s


def stop(s):
    rc = s.terminate(60)
    check(rc == 0, "spool exited with %s: %s" % (rc, s.stderr()[-3000:]))


def expected_records(path):
    """The sample's records: a line matching START begins one."""
    import re
    recs = []
    with open(path) as f:
        for line in f.read().split("\n")[:-1]:
            if re.match(START, line) or not recs:
                recs.append(line)
            else:
                recs[-1] += "\n" + line
    return recs


@t.case
def multiline_java_and_python(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    cfg = tailt.config(tmp, ["%s/*.log" % logs], out_format="json", extra="""
multiline:
  start: '%s'
  timeout: 500ms
""" % START)
    s = start(cfg)
    want = {}
    for name in ("java_trace.log", "python_trace.log"):
        with open(os.path.join(DATA, name)) as f:
            text = f.read()
        dst = os.path.join(logs, name)
        # Written in pieces, as an application would, cutting lines in two.
        with open(dst, "w") as f:
            for i in range(0, len(text), 333):
                f.write(text[i:i + 333])
                f.flush()
                time.sleep(0.02)  # pacing the writer (not a wait): any pace gives the same
        want[dst] = expected_records(os.path.join(DATA, name))
    tailt.wait_lines(tmp, 9, timeout=30)  # the last record of each comes after the timeout
    stop(s)
    got = {}
    for r in tailt.out_json(tmp):
        hdr = r["headers"]
        if isinstance(hdr, list):
            hdr = {h["key"]: h["value"] for h in hdr}
        got.setdefault(hdr["path"], []).append(r["value"])
    for path, recs in want.items():
        check(got.get(path) == recs, "%s: records differ:\n got %r\nwant %r"
              % (os.path.basename(path), got.get(path), recs))
    java = want[os.path.join(logs, "java_trace.log")]
    check(len(java) == 5 and java[2].count("\n") == 18, "java sample: %d records" % len(java))
    py = want[os.path.join(logs, "python_trace.log")]
    check(len(py) == 4 and "KeyError: 5521" in py[1], "python sample: %d records" % len(py))
    r = spoolt.run(["read", "t", "-c", cfg, "--format", "%v\\n@@END@@\\n"])
    check(r.returncode == 0, "spool read: %s" % r.stderr)
    log = r.stdout.split(b"\n@@END@@\n")[:-1]  # values hold '\n'
    check(sorted(log) == sorted(v.encode() for v in sum(want.values(), [])),
          "the log does not hold the same records: %r" % log)


def big_line_file(path, size):
    line = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * (size // 62 + 1))[:size]
    with open(path, "wb") as f:
        f.write(b"before\n")
        f.write(line)
        f.write(b"\nafter\n")
    return line


@t.case
def ten_mib_line_whole(tmp):
    path = os.path.join(tmp, "big.log")
    cfg = tailt.config(tmp, [path], extra="read_from: beginning\nmax_line_bytes: 16MiB")
    line = big_line_file(path, 10 << 20)
    s = start(cfg)
    tailt.wait_lines(tmp, 3, timeout=60)  # "after" is the file's last line
    stop(s)
    out = tailt.out_values(tmp)
    check(len(out) == 3 and out[0] == b"before" and out[2] == b"after",
          "output: %d records" % len(out))
    check(out[1] == line, "the 10 MiB line differs (%d bytes)" % len(out[1]))
    log = tailt.log_values(cfg)
    check(len(log) == 3 and log[1] == line, "log: %d records" % len(log))


@t.case
def ten_mib_line_split_and_truncated(tmp):
    path = os.path.join(tmp, "big.log")
    line = big_line_file(path, 10 << 20)
    cfg = tailt.config(tmp, [path], extra="read_from: beginning")  # default 64KiB, split
    s = start(cfg)
    pieces = (len(line) + 65535) // 65536
    tailt.wait_lines(tmp, pieces + 2, timeout=60)
    stop(s)
    out = tailt.out_values(tmp)
    check(len(out) == pieces + 2, "split: %d records, want %d" % (len(out), pieces + 2))
    check(b"".join(out[1:-1]) == line and all(len(p) <= 65536 for p in out[1:-1]),
          "the pieces do not make up the line")
    check(s.stderr().count("longer than max_line_bytes") == 1,
          "want exactly one warning: %s" % s.stderr()[-2000:])

    tmp2 = os.path.join(tmp, "trunc")
    os.makedirs(tmp2)
    cfg = tailt.config(tmp2, [path], extra="read_from: beginning\nlong_lines: truncate")
    s = start(cfg)
    tailt.wait_lines(tmp2, 3, timeout=60)
    stop(s)
    out = tailt.out_values(tmp2)
    check(len(out) == 3 and out[1] == line[:65536] and out[2] == b"after",
          "truncate: %d records" % len(out))


@t.case
def nul_and_invalid_utf8(tmp):
    path = os.path.join(tmp, "bin.log")
    lines = [b"plain", b"nul\x00in\x00the\x00middle", b"\x00", b"latin1 caf\xe9",
             b"bad \xc3\x28 seq \xff\xfe", b"truncated utf8 \xe2\x82", b"valid caf\xc3\xa9 \xe2\x82\xac",
             b"\x80\x81\x82\x83", b""]
    cfg = tailt.config(tmp, [path], extra="read_from: beginning", out_format="raw")
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    s = start(cfg)
    tailt.wait_lines(tmp, len(lines))
    stop(s)
    check(tailt.out_values(tmp) == lines, "output: %r" % tailt.out_values(tmp))
    check(tailt.log_values(cfg) == lines, "log: %r" % tailt.log_values(cfg))


@t.case
def partial_line_and_cr(tmp):
    path = os.path.join(tmp, "p.log")
    cfg = tailt.config(tmp, [path], extra="read_from: beginning\nflush_partial_after: 700ms\n"
                       "strip_cr: true")
    with open(path, "wb") as f:
        f.write(b"dos line\r\nunix line\nno newline yet")
    t0 = time.monotonic()  # spool reads the partial line after this
    s = start(cfg)
    tailt.wait_lines(tmp, 2)
    # The partial line may go out only flush_partial_after (700ms) after it
    # was read, so never before t0 + 0.7s: seeing it earlier is a failure. (A
    # slow machine only sees it later, which cannot fail.)
    def partial_out():
        n = len(tailt.out_values(tmp))
        check(n < 3 or time.monotonic() - t0 >= 0.7,
              "the incomplete line went out %.2fs after start, before flush_partial_after"
              % (time.monotonic() - t0))
        return n >= 3
    spoolt.wait_for(partial_out, timeout=10, interval=0.02, what="the incomplete line")
    with open(path, "ab") as f:
        f.write(b" and its end\r\n")
    tailt.wait_lines(tmp, 4)
    stop(s)
    want = [b"dos line", b"unix line", b"no newline yet", b" and its end"]
    check(tailt.out_values(tmp) == want, "output: %r" % tailt.out_values(tmp))
    # A restart does not send any of it again: a line appended after the
    # restart comes out right after the old ones, with nothing between.
    s = start(cfg)
    with open(path, "ab") as f:
        f.write(b"after restart\n")
    tailt.wait_lines(tmp, 5)
    stop(s)
    check(tailt.out_values(tmp) == want + [b"after restart"], "output after restart: %r"
          % tailt.out_values(tmp))
    check(tailt.log_values(cfg) == want + [b"after restart"], "log: %r" % tailt.log_values(cfg))


t.main()
