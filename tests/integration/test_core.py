"""Integration tests of the foundation: stdin -> log -> file, clean shutdown,
external plugins, `spool check` messages, and the command line."""
import json
import os
import re
import signal
import subprocess
import time

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
N = 20000 if spoolt.SANITIZE else 100000


def stdin_to_file(tmp, out, fmt="raw", extra_service="", partitions=1, key=None):
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service:
  data_dir: {tmp}/data
  log_level: info
  {extra_service}
topics:
  app:
    partitions: {partitions}
    fsync: 1s
inputs:
  - type: stdin
    name: in
    topic: app
    {"key: " + repr(key) if key else ""}
outputs:
  - type: file
    name: out
    topics: [app]
    path: {out}
    format: {fmt}
""")
    return cfg


@t.case
def seq_into_file_output_in_order(tmp):
    out = os.path.join(tmp, "out.txt")
    cfg = stdin_to_file(tmp, out)
    data = "".join("%d\n" % i for i in range(1, N + 1)).encode()
    p = spoolt.run(["run", "-c", cfg], input=data, timeout=300)
    check(p.returncode == 0, "spool run exited %d: %s" % (p.returncode, p.stderr[-3000:]))
    lines = spoolt.read_lines(out)
    check(len(lines) == N, "expected %d lines, got %d" % (N, len(lines)))
    check(lines == [b"%d" % i for i in range(1, N + 1)], "lines differ from the input or order")
    # The log holds the same records, readable after the run.
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"])
    check(r.returncode == 0, "spool read failed: %s" % r.stderr)
    check(r.stdout.split(b"\n")[:-1] == lines, "the log differs from the file output")


@t.case
def sigterm_mid_stream_loses_nothing_read(tmp):
    out = os.path.join(tmp, "out.txt")
    cfg = stdin_to_file(tmp, out, extra_service="shutdown_timeout: 60s")
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    s.proc.stdout.close()
    sent = 0
    deadline = time.monotonic() + 30
    # Write until spool has delivered some, then SIGTERM while still writing.
    while time.monotonic() < deadline:
        chunk = "".join("%d\n" % i for i in range(sent + 1, sent + 1001)).encode()
        s.proc.stdin.write(chunk)
        s.proc.stdin.flush()
        sent += 1000
        if sent >= 5000 and os.path.exists(out) and os.path.getsize(out) > 0:
            break
    s.proc.send_signal(signal.SIGTERM)
    try:
        for _ in range(20):
            s.proc.stdin.write(b"x\n" * 100)
    except BrokenPipeError:
        pass
    except OSError:
        pass
    rc = s.wait(120)
    check(rc == 0, "spool exited %d after SIGTERM: %s" % (rc, s.stderr()[-3000:]))
    lines = spoolt.read_lines(out)
    r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"])
    logged = r.stdout.split(b"\n")[:-1]
    check(len(logged) > 0, "nothing reached the log")
    check(lines == logged, "file output (%d lines) differs from the log (%d records): a record "
          "accepted was not delivered" % (len(lines), len(logged)))
    nums = [int(x) for x in lines if x != b"x"]
    check(nums == list(range(1, len(nums) + 1)), "lines lost or reordered before shutdown")


@t.case
def json_format_escapes_invalid_utf8(tmp):
    out = os.path.join(tmp, "out.json")
    cfg = stdin_to_file(tmp, out, fmt="json", key="{{ input }}")
    data = b'plain\n"quoted" \\ back\n\xff\xfe bad \xc3\x28 utf8\nnul\x00byte\n\xe2\x82\xac euro\n'
    p = spoolt.run(["run", "-c", cfg], input=data, timeout=60)
    check(p.returncode == 0, p.stderr.decode(errors="replace"))
    objs = [json.loads(l) for l in spoolt.read_lines(out)]
    check(len(objs) == 5, "expected 5 records, got %d" % len(objs))
    check(objs[0]["value"] == "plain" and objs[0]["key"] == "in", objs[0])
    check(objs[1]["value"] == '"quoted" \\ back', objs[1])
    check(objs[2]["value"] == "\ufffd\ufffd bad \ufffd( utf8", objs[2])
    check(objs[3]["value"] == "nul\x00byte", objs[3])
    check(objs[4]["value"] == "\u20ac euro", objs[4])
    for i, o in enumerate(objs):
        check(o["offset"] == i and o["topic"] == "app" and o["partition"] == 0, o)
        check(o["headers"]["input"] == "in" and "host" in o["headers"], o)
        check(abs(o["timestamp"] / 1000 - time.time()) < 600, o)


@t.case
def fields_format_writes_fields_at_top_level(tmp):
    out = os.path.join(tmp, "out.json")
    cfg = stdin_to_file(tmp, out, fmt="fields", key="{{ input }}")
    data = b'one\n{"not": "parsed"}\n\xff bad\n'
    p = spoolt.run(["run", "-c", cfg], input=data, timeout=60)
    check(p.returncode == 0, p.stderr.decode(errors="replace"))
    objs = [json.loads(l) for l in spoolt.read_lines(out)]
    check([o["value"] for o in objs] == ["one", '{"not": "parsed"}', "\ufffd bad"], objs)
    for o in objs:
        check(o["key"] == "in" and o["input"] == "in" and o["host"], o)
        check("headers" not in o and "offset" not in o, o)
        check(abs(o["timestamp"] / 1000 - time.time()) < 600, o)


@t.case
def keyed_records_partition_by_murmur2(tmp):
    out = os.path.join(tmp, "out.json")
    cfg = stdin_to_file(tmp, out, fmt="json", partitions=4, key="k{{ input }}")
    p = spoolt.run(["run", "-c", cfg], input=b"a\nb\nc\n", timeout=60)
    check(p.returncode == 0, p.stderr.decode(errors="replace"))
    objs = [json.loads(l) for l in spoolt.read_lines(out)]
    # murmur2("kin") & 0x7fffffff % 4, computed independently (spoolt).
    want = spoolt.murmur2_partition(b"kin", 4)
    check(len(objs) == 3 and all(o["partition"] == want for o in objs), objs)


@t.case
def external_plugin_receives_records(tmp):
    plugdir = os.path.join(spoolt.BUILD, "test-plugins", "test_plugin")
    out = os.path.join(tmp, "ext.txt")
    cfg = write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {tmp}/data
  plugin_dir: {plugdir}
topics:
  app: {{}}
inputs:
  - type: stdin
    topic: app
outputs:
  - type: test_ext
    name: ext
    topics: [app]
    path: {out}
    prefix: got
""")
    c = spoolt.run(["check", "-c", cfg])
    check(c.returncode == 0, "check failed: %s" % c.stderr)
    pl = spoolt.run(["plugins", "--plugin-dir", plugdir])
    check(b"test_ext" in pl.stdout and plugdir.encode() in pl.stdout, pl.stdout[-2000:])
    p = spoolt.run(["run", "-c", cfg], input=b"one\ntwo\nthree\n", timeout=60)
    check(p.returncode == 0, p.stderr.decode(errors="replace"))
    check(spoolt.read_lines(out) == [b"got 0:0:one", b"got 0:1:two", b"got 0:2:three"],
          spoolt.read_lines(out))


@t.case
def external_plugin_abi_mismatch_and_missing_symbol(tmp):
    for name, msg in (("bad_abi_plugin", b"ABI version"),
                      ("no_symbol_plugin", b"no symbol 'spool_plugin_register'")):
        plugdir = os.path.join(spoolt.BUILD, "test-plugins", name)
        cfg = write(os.path.join(tmp, name + ".yaml"), f"""
service:
  data_dir: {tmp}/data
  plugin_dir: {plugdir}
inputs:
  - type: stdin
""")
        c = spoolt.run(["check", "-c", cfg])
        check(c.returncode == 2, "check should fail for %s: %r" % (name, c))
        check(msg in c.stderr and name.encode() + b".so" in c.stderr, c.stderr)
        r = spoolt.run(["run", "-c", cfg], input=b"")
        check(r.returncode == 2, "run should refuse %s: %r" % (name, r.returncode))


CHECK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check")


@t.case
def check_reports_positioned_errors(tmp):
    """Each file in check/ starts with '# expect: LINE:COL: TEXT' lines. A file
    naming an optional plugin this build was configured without
    (-DSPOOL_WITH_KAFKA=OFF, ...) is left out."""
    files = sorted(f for f in os.listdir(CHECK_DIR) if f.endswith(".yaml"))
    check(len(files) >= 9, "expected the bad examples in %s" % CHECK_DIR)
    plugins = spoolt.run(["plugins"]).stdout.decode()
    built = set(re.findall(r"^(?:input|output|processor) (\S+) \(", plugins, re.M))
    optional = {"tail", "socket", "syslog", "journald", "http", "tcp", "kafka"}
    ran = 0
    for f in files:
        path = os.path.join(CHECK_DIR, f)
        types = set(re.findall(r"^\s*-?\s*type:\s*(\w+)", open(path).read(), re.M))
        if (types & optional) - built:
            continue
        ran += 1
        expects = [l[len("# expect:"):].strip() for l in open(path) if l.startswith("# expect:")]
        check(expects, "%s has no '# expect:' line" % f)
        c = spoolt.run(["check", "-c", path], env={"SPOOL_TEST_UNSET": ""})
        err = c.stderr.decode()
        check(c.returncode == 2, "%s: exit %d, expected 2; stderr: %s" % (f, c.returncode, err))
        for e in expects:
            check((path + ":" + e) in err, "%s: expected '%s' in:\n%s" % (f, e, err))
    check(ran >= 3, "only %d of the check/ examples apply to this build" % ran)


@t.case
def check_unreadable_file(tmp):
    c = spoolt.run(["check", "-c", os.path.join(tmp, "missing.yaml")])
    check(c.returncode == 2 and b"missing.yaml" in c.stderr and b"No such file" in c.stderr,
          c.stderr)


@t.case
def check_good_examples(tmp):
    c = spoolt.run(["check", "-c", os.path.join(spoolt.SRC, "conf", "spool.yaml")])
    check(c.returncode == 0 and b"ok" in c.stdout, c)
    check(b"inputs   1: stdin (stdin)" in c.stdout, c.stdout)


@t.case
def command_line(tmp):
    r = spoolt.run(["frobnicate"])
    check(r.returncode == 2 and b"unknown command" in r.stderr and b"usage" in r.stderr, r)
    r = spoolt.run([])
    check(r.returncode == 2 and b"usage" in r.stderr, r)
    r = spoolt.run(["help"])
    check(r.returncode == 0 and b"commands:" in r.stdout, r)
    r = spoolt.run(["version"])
    check(r.returncode == 0 and r.stdout.startswith(b"spool "), r)
    for cmd in ("run", "check", "plugins", "topics", "read", "version"):
        r = spoolt.run([cmd, "--help"])
        check(r.returncode == 0 and b"usage" in (r.stdout + r.stderr), (cmd, r))
    r = spoolt.run(["run", "--bogus"])
    check(r.returncode == 2, r)
    r = spoolt.run(["check"])
    check(r.returncode == 2, r)
    r = spoolt.run(["plugins"])
    for name in (b"input stdin", b"output file", b"output stdout"):
        check(name in r.stdout, r.stdout[:3000])
    check(b"max_line_bytes" in r.stdout and b"topics" in r.stdout, r.stdout[:3000])


@t.case
def embedded_default_config(tmp):
    p = spoolt.run(["run"], input=b"hello\nworld\n", cwd=tmp, timeout=60)
    check(p.returncode == 0, p.stderr)
    check(p.stdout == b"hello\nworld\n", p.stdout)
    check(os.path.isdir(os.path.join(tmp, "spool-data", "topics", "default")), os.listdir(tmp))


@t.case
def restart_resumes_output_cursor(tmp):
    """Records already delivered are not delivered again after a restart."""
    out = os.path.join(tmp, "out.txt")
    cfg = stdin_to_file(tmp, out)
    spoolt.run(["run", "-c", cfg], input=b"a\nb\n", timeout=60)
    spoolt.run(["run", "-c", cfg], input=b"c\n", timeout=60)
    check(spoolt.read_lines(out) == [b"a", b"b", b"c"], spoolt.read_lines(out))


if __name__ == "__main__":
    t.main()
