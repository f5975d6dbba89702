"""The out-of-tree example plugins (examples/plugins/, docs/plugins.md).

The examples are built the way a third party builds a plugin: against the
spool/spool.h and spool.pc that `cmake --install` puts under a prefix, found
with pkg-config only (PKG_CONFIG_PATH to that prefix, no -I into this source
tree, sources copied out of it), the input and the processor with their
Makefiles, the asynchronous output with its CMakeLists.txt. Then one spool
runs counter (input, durable position) -> header_key (processor, sets keys)
-> file_async (output, SPOOL_PENDING completed from its own thread), is
killed with SIGKILL and started again with a larger count: the input resumes
after the last record in the log, so the log holds every seq exactly once
and the file every record at least once, in order, with its key and headers.
"""
import atexit
import json
import os
import shutil
import subprocess
import tempfile

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
EXAMPLES = os.path.join(spoolt.SRC, "examples", "plugins")
TIMEOUT = 120 if spoolt.SANITIZE else 60
_built = {}


def sh(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    check(r.returncode == 0, "%s failed (%d):\n%s%s" % (" ".join(args), r.returncode, r.stdout,
                                                         r.stderr))
    return r


def build_examples():
    """Installs spool's dev files into a temporary prefix, builds the three
    examples against them and installs the plugins into one plugin_dir.
    Done once per run; returns that plugin_dir."""
    if "plugdir" in _built:
        return _built["plugdir"]
    root = tempfile.mkdtemp(prefix="spool-examples-")
    atexit.register(shutil.rmtree, root, True)
    prefix = os.path.join(root, "prefix")
    sh(["cmake", "--install", spoolt.BUILD, "--prefix", prefix, "--component", "dev"])
    pcdir = os.path.join(prefix, "share", "pkgconfig")
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir, PKG_CONFIG_LIBDIR=pcdir)
    for var in ("CPATH", "C_INCLUDE_PATH"):
        env.pop(var, None)
    cflags = sh(["pkg-config", "--cflags", "spool"], env=env).stdout.split()
    check(cflags == ["-I" + os.path.join(prefix, "include")], "cflags: %r" % cflags)
    # Out of the source tree: only the installed spool/spool.h can be found.
    src = os.path.join(root, "src")
    shutil.copytree(EXAMPLES, src)
    plugdir = os.path.join(root, "plugins")
    cc = os.environ.get("CC", "cc")
    strict = "-O2 -g -Werror -Wshadow"
    if spoolt.TSAN:
        strict += " -fsanitize=thread -fno-omit-frame-pointer"
    elif spoolt.SANITIZE:
        # The plugins instrumented like the binary that loads them, so a
        # use of a chunk after its completion or a leak in them fails here.
        strict += (" -fsanitize=address,undefined -fno-omit-frame-pointer"
                   " -fno-sanitize-recover=undefined")
    for name in ("counter", "header_key"):
        d = os.path.join(src, name)
        sh(["make", "-C", d, "CC=" + cc, "CFLAGS=" + strict], env=env)
        sh(["make", "-C", d, "install", "PLUGINDIR=" + plugdir], env=env)
    d = os.path.join(src, "file_async")
    b = os.path.join(root, "build-file_async")
    sh(["cmake", "-S", d, "-B", b, "-DCMAKE_C_COMPILER=" + cc, "-DCMAKE_C_FLAGS=" + strict,
        "-DSPOOL_PLUGIN_DIR=" + plugdir], env=env)
    sh(["cmake", "--build", b], env=env)
    sh(["cmake", "--install", b], env=env)
    so = sorted(os.listdir(plugdir))
    check(so == ["counter.so", "file_async.so", "header_key.so"], so)
    for f in so:
        # Each exports its register function and nothing else.
        nm = sh(["nm", "-D", "--defined-only", os.path.join(plugdir, f)]).stdout.split()
        check(nm[-1] == "spool_plugin_register" and nm.count("T") == 1,
              "%s exports: %s" % (f, " ".join(nm)))
    _built["plugdir"] = plugdir
    return plugdir


def config(tmp, plugdir, count, out, extra_input="", extra_output=""):
    return write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {tmp}/data
  plugin_dir: {plugdir}
topics:
  events: {{}}
inputs:
  - type: counter
    name: ticks
    topic: events
    count: {count}
    batch: 50
    interval: 0s
{extra_input}
processors:
  - type: header_key
    header: parity
    uppercase: true
outputs:
  - type: file_async
    name: sink
    topics: [events]
    path: {out}
    max_records: 40
    max_in_flight: 4
{extra_output}
""")


def delivered(out):
    """The distinct offsets in the output file's complete lines (the plugin
    writes from its own thread while this reads: a last line may be partial)."""
    if not os.path.exists(out):
        return set()
    with open(out, "rb") as f:
        data = f.read()
    return {json.loads(line)["offset"] for line in data[:data.rfind(b"\n") + 1].splitlines()}


@t.case
def examples_build_against_installed_package(tmp):
    plugdir = build_examples()
    pl = spoolt.run(["plugins", "--plugin-dir", plugdir])
    check(pl.returncode == 0 and b"refused" not in pl.stderr, pl.stderr)
    for kind, name in (("input", "counter"), ("processor", "header_key"),
                       ("output", "file_async")):
        so = os.path.join(plugdir, name + ".so")
        check(("%s %s (%s)" % (kind, name, so)).encode() in pl.stdout, pl.stdout[-3000:])


@t.case
def check_reports_the_examples_errors(tmp):
    """check() runs at `spool check` with each example's own messages."""
    plugdir = build_examples()
    cfg = config(tmp, plugdir, 10, os.path.join(tmp, "no-such-dir", "out.jsonl"))
    with open(cfg) as f:
        text = f.read().replace("header: parity", 'header: ""')
    write(cfg, text)
    c = spoolt.run(["check", "-c", cfg])
    err = c.stderr.decode(errors="replace")
    check(c.returncode == 2, "check should fail: %r" % c)
    check("processors[0].header: must name a header" in err, err)
    check("outputs[0].path" in err and "no-such-dir" in err, err)
    check(not os.path.exists(os.path.join(tmp, "data")), "check created the data_dir")


@t.case
def pipeline_end_to_end_resumes_after_kill(tmp):
    plugdir = build_examples()
    out = os.path.join(tmp, "out.jsonl")

    runs = []
    try:
        # First run: 300 records, all delivered, then SIGKILL.
        cfg = config(tmp, plugdir, 300, out)
        s = spoolt.Spool(cfg)
        runs.append(s)
        s.wait_log("produced all 300 records", TIMEOUT)
        spoolt.wait_for(lambda: len(delivered(out)) >= 300, TIMEOUT,
                        what="300 records in the file")
        s.kill()
        check("resuming at seq" not in s.run_stderr(), s.run_stderr())

        # Second run, same input name, count raised: it resumes at 300.
        cfg = config(tmp, plugdir, 600, out)
        s = spoolt.Spool(cfg)
        runs.append(s)
        s.wait_log("resuming at seq 300", TIMEOUT)
        s.wait_log("produced all 600 records", TIMEOUT)
        spoolt.wait_for(lambda: len(delivered(out)) >= 600, TIMEOUT,
                        what="600 records in the file")
        rc = s.terminate(TIMEOUT)
        check(rc == 0, "exit %s: %s" % (rc, s.run_stderr()[-3000:]))
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.kill()

    # The log holds each seq once: the position was durable with the records.
    tp = spoolt.run(["topics", "-c", cfg, "--json"])
    check(tp.returncode == 0, tp.stderr)
    part = json.loads(tp.stdout)["topics"][0]["partitions"][0]
    check(part["end"] == 600 and part["lag"]["output.sink"] == 0, part)

    # The file: every offset, in order; a record the kill made the output
    # send twice is the same line twice (at least once delivery).
    lines = spoolt.read_lines(out)
    by_offset, order = {}, []
    for raw in lines:
        rec = json.loads(raw)
        off = rec["offset"]
        if off in by_offset:
            check(by_offset[off] == raw, "offset %d differs on resend:\n%s\n%s"
                  % (off, by_offset[off], raw))
            continue
        by_offset[off] = raw
        order.append(off)
    check(order == list(range(600)), "offsets out of order or missing: %s" % order[:50])
    check(len(lines) - 600 <= 4 * 40, "more resent than max_in_flight chunks: %d lines"
          % len(lines))
    for off in range(600):
        rec = json.loads(by_offset[off])
        headers = dict(rec["headers"])
        want = {"seq": str(off), "parity": "odd" if off % 2 else "even", "input": "ticks"}
        check(rec["topic"] == "events" and rec["partition"] == 0, rec)
        check(rec["value"] == "tick %d" % off, rec)
        check({k: headers.get(k) for k in want} == want and headers.get("host"), rec)
        check(rec["key"] == want["parity"].upper(), rec)
        check(rec["timestamp"] > 0, rec)


t.main()
