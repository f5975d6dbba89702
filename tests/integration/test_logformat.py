"""service.log_format (issue 8): `json` makes every line spool writes to
stderr a JSON object with time, level, component and message; `text` (the
default) is `TIME LEVEL [COMPONENT] message`. Also: special characters in a
message stay valid JSON, the rate limiter's "similar messages suppressed"
note follows the format, and a reload switches the format."""
import json
import os
import re
import signal
import subprocess

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)

TEXT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) "
                     r"\[[^\]]+\] .*$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def config(tmp, data_dir, fmt_line, out_block, extra=""):
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: '{data_dir}'
  log_level: debug
  shutdown_timeout: 1s
  {fmt_line}
  {extra}
topics:
  app: {{}}
inputs:
  - type: stdin
    name: in
    topic: app
    exit_on_eof: false
outputs:
{out_block}
""")
    return cfg


def file_out(path, name="out"):
    return f"""  - type: file
    name: {name}
    topics: [app]
    path: {path}
"""


def json_lines(text):
    """Parses every non-empty stderr line as JSON; returns the objects."""
    objs = []
    for i, line in enumerate(text.split("\n")):
        if not line:
            continue
        try:
            o = json.loads(line)
        except ValueError:
            raise spoolt.Failure("stderr line %d is not JSON: %r" % (i + 1, line[:300]))
        check(isinstance(o, dict), "line %d is not an object: %r" % (i + 1, line[:300]))
        for k in ("time", "level", "component", "message"):
            check(isinstance(o.get(k), str), "line %d has no string %r: %r" % (i + 1, k, line))
        check(TIME_RE.match(o["time"]), "bad time %r" % o["time"])
        check(o["level"] in ("error", "warn", "info", "debug"), "bad level %r" % o["level"])
        check(o["component"] != "", "empty component: %r" % line)
        objs.append(o)
    return objs


def run_stdin(cfg, data, wait_for_line=None, timeout=30, out=None):
    """Runs spool with stdin fed `data`, waits until stderr contains
    wait_for_line (or until `out` has every line of data, or else until spool
    logged that it is running), then SIGTERMs. Returns stderr."""
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    s.proc.stdout.close()
    s.proc.stdin.write(data)
    s.proc.stdin.flush()
    if wait_for_line:
        spoolt.wait_for(lambda: wait_for_line in s.stderr(), timeout=timeout, what=wait_for_line)
    elif out:
        n = data.count(b"\n")
        spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= n, timeout=timeout,
                        what="%d lines delivered" % n)
    else:
        s.wait_running(timeout)
    s.proc.stdin.close()
    rc = s.terminate()
    check(rc == 0, "spool exited %d: %s" % (rc, s.stderr()[-2000:]))
    return s.stderr()


@t.case
def json_every_line_is_an_object(tmp):
    # A data_dir with a quote, a backslash and non-ASCII text ends up in a
    # message: it must come out escaped, still one valid JSON object.
    data_dir = os.path.join(tmp, 'd"q\\x-\u00e9')
    out = os.path.join(tmp, "out.txt")
    cfg = config(tmp, data_dir, "log_format: json", file_out(out))
    data = "".join("%d\n" % i for i in range(1, 101)).encode()
    err = run_stdin(cfg, data, out=out)
    objs = json_lines(err)
    check(len(objs) >= 3, "expected several log lines, got %r" % err)
    running = [o for o in objs if "running" in o["message"]]
    check(running, "no 'running' line in %r" % err)
    check(data_dir in running[0]["message"], "data_dir not escaped faithfully: %r" %
          running[0]["message"])
    check(running[0]["component"] == "core", "component %r" % running[0]["component"])
    check(any(o["message"] == "stopped" and o["component"] == "core" for o in objs),
          "no clean 'stopped' line: %r" % err[-1000:])
    check(len(spoolt.read_lines(out)) == 100, "the file output did not get the records")


@t.case
def json_levels_components_and_suppression_note(tmp):
    # An output whose destination refuses connections logs a warning per
    # attempt; retries every ~10ms trip the rate limiter, whose summary line
    # (printed when the 10s window ends) must be JSON as well.
    port = spoolt.free_port()
    out = f"""  - type: tcp
    name: dead
    topics: [app]
    url: tcp://127.0.0.1:{port}
    retry_backoff: 10ms
    retry_backoff_max: 20ms
"""
    cfg = config(tmp, os.path.join(tmp, "data"), "log_format: json", out)
    err = run_stdin(cfg, b"a\nb\n", wait_for_line="similar messages suppressed", timeout=25)
    objs = json_lines(err)
    levels = {o["level"] for o in objs}
    check({"info", "warn", "debug"} <= levels, "levels seen: %r" % levels)
    comps = {o["component"] for o in objs}
    check("core" in comps and "output:tcp:dead" in comps, "components seen: %r" % comps)
    # The limiter works (5 per message per 10s): hundreds of retries, few lines.
    dead = [o for o in objs if o["component"] == "output:tcp:dead"]
    check(len(dead) < 60, "%d lines from the failing output: the rate limiter let a flood "
          "through" % len(dead))
    notes = [o for o in objs if "similar messages suppressed" in o["message"]]
    check(notes and all(o["component"] == "output:tcp:dead" for o in notes),
          "suppression notes: %r" % notes)


@t.case
def text_is_the_default(tmp):
    out = os.path.join(tmp, "out.txt")
    cfg = config(tmp, os.path.join(tmp, "data"), "", file_out(out))
    err = run_stdin(cfg, b"1\n2\n", out=out)
    lines = [l for l in err.split("\n") if l]
    check(len(lines) >= 3, "expected several lines: %r" % err)
    for l in lines:
        check(TEXT_RE.match(l), "not a text log line: %r" % l)
    check(any("[core] spool" in l and "running" in l for l in lines), "no running line: %r" % err)
    # An explicit `text` is the same.
    cfg = config(tmp, os.path.join(tmp, "data"), "log_format: text", file_out(out))
    err2 = run_stdin(cfg, b"3\n")
    for l in (l for l in err2.split("\n") if l):
        check(TEXT_RE.match(l), "not a text log line: %r" % l)


@t.case
def bad_log_format_is_a_config_error(tmp):
    cfg = config(tmp, os.path.join(tmp, "data"), "log_format: xml",
                 file_out(os.path.join(tmp, "o")))
    r = spoolt.run(["check", cfg])
    check(r.returncode != 0, "spool check accepted log_format: xml")
    msg = (r.stdout + r.stderr).decode("utf-8", "replace")
    check("log_format" in msg, "the error does not name log_format: %r" % msg)


@t.case
def reload_switches_text_to_json(tmp):
    out = os.path.join(tmp, "out.txt")
    data_dir = os.path.join(tmp, "data")
    cfg = config(tmp, data_dir, "log_format: text", file_out(out))
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    s.proc.stdout.close()
    try:
        s.proc.stdin.write(b"1\n")
        s.proc.stdin.flush()
        spoolt.wait_for(lambda: "running" in s.stderr(), timeout=20, what="start")
        config(tmp, data_dir, "log_format: json", file_out(out))
        s.proc.send_signal(signal.SIGHUP)
        spoolt.wait_for(lambda: "starting the new configuration" in s.stderr(), timeout=30,
                        what="reload")
        spoolt.wait_for(lambda: '"message":"spool' in s.stderr(), timeout=20,
                        what="the JSON 'running' line after the reload")
        s.proc.stdin.write(b"2\n")
        s.proc.stdin.close()
        spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= 2, timeout=30,
                        what="both records delivered")
        rc = s.terminate()
        check(rc == 0, "exit %d" % rc)
    finally:
        s.kill()
    err = s.stderr()
    lines = [l for l in err.split("\n") if l]
    idx = next(i for i, l in enumerate(lines) if "starting the new configuration" in l)
    for l in lines[:idx + 1]:
        check(TEXT_RE.match(l), "before the reload, not text: %r" % l)
    json_lines("\n".join(lines[idx + 1:]))
    check(spoolt.read_lines(out) == [b"1", b"2"], "records: %r" % spoolt.read_lines(out))


t.main()
