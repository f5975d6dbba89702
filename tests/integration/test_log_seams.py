"""The partition log's seams with the CLI and the configuration (issues 12.3,
12.4, 12.10, 13.6), against the real binary.

- spool read on a partition with a corrupt batch in the middle of a segment
  prints every intact record, names the skipped range (offsets, segment file,
  byte positions) on stderr and exits 3; --from inside the range says so;
  `spool run` moves only the corrupt bytes aside (the batches after them
  stay deliverable) and read still names the range.
- spool topics -c shows the lag of a configured output that never saved a
  cursor (the whole partition), in text and --json.
- lowering a topic's partition count while the partitions beyond it hold
  records an output has not read is refused by `spool check`, `spool run`
  (restart) and a SIGHUP reload (the old configuration keeps running), with
  the topic, partitions, record counts and output in the message; once
  drained (lag 0) the lower count starts and the extra partitions are
  removed; every record was delivered exactly once.
- the checkpoint deleted while the log holds data: check and run refuse and
  name --reset-positions, in one line; with the flag, spool starts and says
  so in one line.
"""
import json
import os
import re
import signal
import struct
import subprocess

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
RUNNING = []


def start(cfg, **kw):
    """spoolt.Spool, killed at the end of the case whatever happens."""
    s = spoolt.Spool(cfg, **kw)
    RUNNING.append(s)
    return s


def case(fn):
    def wrapped(tmp):
        try:
            fn(tmp)
        finally:
            while RUNNING:
                s = RUNNING.pop()
                if s.proc.poll() is None:
                    s.kill()
    wrapped.__name__ = fn.__name__
    return t.case(wrapped)


def topics_json(cfg):
    """spool topics --json; {"topics": []} while the data dir does not exist yet."""
    if not os.path.isdir(os.path.join(os.path.dirname(cfg), "data")):
        return {"topics": []}
    r = spoolt.run(["topics", "-c", cfg, "--json"])
    check(r.returncode == 0, "spool topics failed: %s" % r.stderr)
    return json.loads(r.stdout)


def partition_ends(cfg, topic="app"):
    for tp in topics_json(cfg)["topics"]:
        if tp["name"] == topic:
            return {p["partition"]: p["end"] for p in tp["partitions"]}
    return {}


def batches(path):
    """(position, base offset, last offset, size) of each batch of a segment."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 61 <= len(data):
        base, length = struct.unpack(">qi", data[pos:pos + 12])
        delta = struct.unpack(">i", data[pos + 23:pos + 27])[0]
        out.append((pos, base, base + delta, 12 + length))
        pos += 12 + length
    return out


# ---- 12.4: spool read and corruption ----

def stdin_conf(tmp):
    return write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {tmp}/data
topics:
  app:
    partitions: 1
    fsync: always
inputs:
  - type: stdin
    name: in
    topic: app
""")


def fill_three_batches(tmp, cfg, n_per_run=5000, runs=3):
    """Three runs append at least three batches; returns all values."""
    values = []
    for k in range(runs):
        chunk = list(range(k * n_per_run + 1, (k + 1) * n_per_run + 1))
        p = spoolt.run(["run", "-c", cfg], input="".join("%d\n" % v for v in chunk).encode())
        check(p.returncode == 0, "spool run failed: %s" % p.stderr[-2000:])
        values += chunk
    return values


def read_values(cfg, *args):
    r = spoolt.run(["read", "app", "-c", cfg] + list(args))
    return r, [int(x) for x in r.stdout.split()]


@case
def read_names_corrupt_range_and_exits_3(tmp):
    cfg = stdin_conf(tmp)
    values = fill_three_batches(tmp, cfg)
    seg = os.path.join(tmp, "data/topics/app/0/00000000000000000000.log")
    bs = batches(seg)
    check(len(bs) >= 3, "expected 3 batches or more, got %d" % len(bs))
    mid = len(bs) // 2
    pos, first, last, size = bs[mid]
    lost = set(values[first:last + 1])
    with open(seg, "r+b") as f:  # a byte in the records: the CRC fails
        f.seek(pos + size // 2)
        b = f.read(1)
        f.seek(pos + size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    r, got = read_values(cfg)
    err = r.stderr.decode()
    check(r.returncode == 3, "exit %d, want 3; stderr: %s" % (r.returncode, err))
    check(got == [v for v in values if v not in lost],
          "read %d records, want every intact one (%d)" % (len(got), len(values) - len(lost)))
    want = "app/0: offsets %d..%d" % (first, last)
    check(want in err and seg in err and ("bytes %d.." % pos) in err,
          "stderr does not name %s, the segment and position %d: %s" % (want, pos, err))
    # --from inside the range: said, and reading starts after it.
    r, got = read_values(cfg, "--from", str(first + 3))
    err = r.stderr.decode()
    check(r.returncode == 3, "exit %d with --from in the range" % r.returncode)
    check("--from %d falls in an unreadable range" % (first + 3) in err, err)
    check(got and got[0] == values[last + 1], "first record %r, want %d" % (got[:1],
                                                                           values[last + 1]))
    # The batch header broken too (its length): the same range, the rest still read.
    with open(seg, "r+b") as f:
        f.seek(pos + 8)
        f.write(b"\x7f\xff\xff\x00")
    r, got = read_values(cfg)
    err = r.stderr.decode()
    check(r.returncode == 3 and want in err, "broken header: exit %d, %s" % (r.returncode, err))
    check(got == [v for v in values if v not in lost], "broken header: %d records" % len(got))
    # spool run moves the corrupt bytes aside and keeps the batches after
    # them (outputs deliver those); read still names the range.
    p = spoolt.run(["run", "-c", cfg], input=b"")
    check(p.returncode == 0, "spool run after corruption: %s" % p.stderr[-2000:])
    check(("corrupt data at offsets %d..%d" % (first, last)).encode() in p.stderr,
          "spool run did not report the corruption: %s" % p.stderr[-2000:])
    r, got = read_values(cfg)
    err = r.stderr.decode()
    check(r.returncode == 3 and want in err and "moved aside" in err,
          "after the move: exit %d, %s" % (r.returncode, err))
    check(got == [v for v in values if v not in lost],
          "after the move: %d records, want every intact one" % len(got))


@case
def read_clean_log_exits_0(tmp):
    cfg = stdin_conf(tmp)
    values = fill_three_batches(tmp, cfg, n_per_run=100)
    r, got = read_values(cfg)
    check(r.returncode == 0 and r.stderr == b"", "exit %d: %s" % (r.returncode, r.stderr))
    check(got == values, "records differ")


# ---- 12.10: lag of an output that never saved a cursor ----

@case
def topics_lag_of_output_without_cursor(tmp):
    """An output added to the config that has not run yet (no cursor file):
    `spool topics -c` shows its lag as the whole partition."""
    port = spoolt.free_port()  # nobody listens: the output never delivers
    head = f"""
service:
  data_dir: {tmp}/data
  shutdown_timeout: 1s
topics:
  app:
    partitions: 1
inputs:
  - type: stdin
    name: in
    topic: app
"""
    cfg = write(os.path.join(tmp, "spool.yaml"), head)
    p = spoolt.run(["run", "-c", cfg], input=b"".join(b"%d\n" % i for i in range(1000)))
    check(p.returncode == 0, p.stderr[-2000:])
    write(cfg, head + f"""outputs:
  - type: http
    name: down
    topics: [app]
    url: http://127.0.0.1:{port}/x
""")
    check(not os.path.exists(os.path.join(tmp, "data/cursors/output.down.cursor")),
          "the output saved a cursor; the case needs one that never did")
    r = spoolt.run(["topics", "-c", cfg])
    check(r.returncode == 0, r.stderr)
    check(re.search(rb"app\s+0\s+0\s+1000\s.*output\.down=1000", r.stdout), r.stdout)
    lag = topics_json(cfg)["topics"][0]["partitions"][0]["lag"]
    check(lag == {"output.down": 1000}, "json lag %r" % lag)


@case
def api_topics_lag_of_output_without_cursor(tmp):
    """/api/v1/topics of a running spool shows the stuck output's lag too."""
    import urllib.request
    port, api = spoolt.free_port(), spoolt.free_port()
    src = write(os.path.join(tmp, "src.log"), "".join("%d\n" % i for i in range(500)))
    cfg = write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {tmp}/data
  shutdown_timeout: 1s
  http:
    listen: 127.0.0.1:{api}
topics:
  app:
    partitions: 1
inputs:
  - type: tail
    name: src
    topic: app
    paths: [{src}]
    read_from: beginning
outputs:
  - type: http
    name: down
    topics: [app]
    url: http://127.0.0.1:{port}/x
""")
    s = start(cfg)

    def lag():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/topics" % api,
                                        timeout=5) as r:
                doc = json.loads(r.read())
        except OSError:
            return None
        parts = doc["topics"][0]["partitions"] if doc["topics"] else []
        return parts and parts[0]["end"] == 500 and parts[0]["lag"]
    got = spoolt.wait_for(lag, what="/api/v1/topics with 500 records")
    check(got == {"output.down": 500}, "lag %r" % got)
    check(s.terminate() == 0, s.stderr()[-2000:])


# ---- 12.3: lowering a topic's partition count ----

def keyed_files(tmp, n_parts=4):
    """One file per partition: names whose murmur2 lands on 0..n-1."""
    names = {}
    i = 0
    while len(names) < n_parts and i < 10000:
        name = "f%d.log" % i
        p = spoolt.murmur2_partition(name.encode(), n_parts)
        names.setdefault(p, name)
        i += 1
    os.makedirs(os.path.join(tmp, "in"), exist_ok=True)
    return [os.path.join(tmp, "in", names[p]) for p in range(n_parts)]


def part_conf(tmp, parts, output):
    return f"""
service:
  data_dir: {tmp}/data
  shutdown_timeout: 2s
topics:
  app:
    partitions: {parts}
inputs:
  - type: tail
    name: src
    topic: app
    paths: [{tmp}/in/*.log]
    read_from: beginning
    key: "{{{{ file }}}}"
outputs:
{output}
"""


def dead_output(port):
    return f"""  - type: http
    name: out
    topics: [app]
    url: http://127.0.0.1:{port}/x
"""


def file_output(path):
    return f"""  - type: file
    name: out
    topics: [app]
    path: {path}
"""


def write_lines(files, per_file, start=0):
    for k, f in enumerate(files):
        with open(f, "a") as fh:
            fh.write("".join("%d-%d\n" % (k, i) for i in range(start, start + per_file)))


@case
def lower_partitions_by_restart(tmp):
    files = keyed_files(tmp)
    per = 2000
    write_lines(files, per)
    cfg = os.path.join(tmp, "spool.yaml")
    port = spoolt.free_port()
    write(cfg, part_conf(tmp, 4, dead_output(port)))
    s = start(cfg)
    spoolt.wait_for(lambda: partition_ends(cfg) == {0: per, 1: per, 2: per, 3: per},
                    what="every line in the log")
    check(s.terminate() == 0, s.stderr()[-2000:])
    # Two partitions while 2 and 3 hold records the output never read: refused.
    write(cfg, part_conf(tmp, 2, dead_output(port)))
    for cmd in (["check", cfg], ["run", "-c", cfg]):
        r = spoolt.run(cmd, timeout=60)
        err = r.stderr.decode()
        check(r.returncode == 2, "spool %s: exit %d, want 2: %s" % (cmd[0], r.returncode, err))
        for want in ("topics.app.partitions", "topic 'app' has 4 partitions on disk",
                     "partitions 2-3 with %d records" % (2 * per), "output.out has not read %d"
                     % per, "spool topics", "--drop-partitions"):
            check(want in err, "spool %s: %r not in %s" % (cmd[0], want, err))
    check(partition_ends(os.path.join(tmp, "spool.yaml")) == {0: per, 1: per},
          "the refused run changed the log")
    # Drain with four partitions and a working output, then lower the count.
    out = os.path.join(tmp, "out.txt")
    write(cfg, part_conf(tmp, 4, file_output(out)))
    s = start(cfg)
    spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= 4 * per, what="output drained")

    def drained():
        tps = topics_json(cfg)["topics"]
        return tps and all(p["lag"].get("output.out") == 0 for p in tps[0]["partitions"])
    spoolt.wait_for(drained, what="lag 0 in spool topics")
    check(s.terminate() == 0, s.stderr()[-2000:])
    write(cfg, part_conf(tmp, 2, file_output(out)))
    r = spoolt.run(["check", cfg])
    check(r.returncode == 0, "check after draining: %s" % r.stderr)
    s = start(cfg)
    spoolt.wait_for(lambda: "partition removed" in s.stderr(), what="removal logged")
    write_lines(files, 10, start=per)  # new lines land in partitions 0 and 1
    spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= 4 * per + 40, what="new lines")
    check(s.terminate() == 0, s.stderr()[-2000:])
    err = s.stderr()
    check(err.count("partition removed") == 2 and "app/2" in err and "app/3" in err, err)
    lines = spoolt.read_lines(out)
    want = sorted(b"%d-%d" % (k, i) for k in range(4) for i in range(per + 10))
    check(sorted(lines) == want, "delivered %d lines, want %d exactly once" % (len(lines),
                                                                              len(want)))


@case
def lower_partitions_by_reload_is_refused(tmp):
    files = keyed_files(tmp)
    per = 1000
    write_lines(files, per)
    cfg = os.path.join(tmp, "spool.yaml")
    port = spoolt.free_port()
    write(cfg, part_conf(tmp, 4, dead_output(port)))
    s = start(cfg)
    try:
        spoolt.wait_for(lambda: partition_ends(cfg) == {0: per, 1: per, 2: per, 3: per},
                        what="every line in the log")
        write(cfg, part_conf(tmp, 2, dead_output(port)))
        s.proc.send_signal(signal.SIGHUP)
        spoolt.wait_for(lambda: "reload refused" in s.stderr(), what="reload refused")
        err = s.stderr()
        check("topics.app.partitions" in err and "partitions 2-3 with %d records" % (2 * per)
              in err and "output.out" in err, err)
        check(s.proc.poll() is None, "spool exited after the refused reload")
        # The old configuration (four partitions) keeps running: new lines land.
        write(cfg, part_conf(tmp, 4, dead_output(port)))  # what is running
        write_lines(files, 5, start=per)
        spoolt.wait_for(lambda: partition_ends(cfg) == {p: per + 5 for p in range(4)},
                        what="new lines in all four partitions")
    finally:
        check(s.terminate() == 0, s.stderr()[-2000:])


@case
def cli_config_errors_one_line_each(tmp):
    # spool topics / read with a config that cannot be loaded: each error once,
    # where it is found (file:line:column), no second line repeating it.
    bad = write(os.path.join(tmp, "bad.yaml"), "service:\n  data_dir: 5: x\n")
    for cmd in (["topics", "-c", bad], ["read", "app", "-c", bad],
                ["topics", "-c", os.path.join(tmp, "missing.yaml")]):
        r = spoolt.run(cmd)
        lines = [ln for ln in r.stderr.decode().splitlines() if ln.strip()]
        check(r.returncode == 2 and len(lines) == 1, "spool %s: exit %d, stderr %r"
              % (" ".join(cmd), r.returncode, lines))


# ---- 13.6: the checkpoint deleted ----

@case
def deleted_checkpoint_refused_until_reset(tmp):
    src = os.path.join(tmp, "src.log")
    write(src, "".join("%d\n" % i for i in range(1, 1001)))
    out = os.path.join(tmp, "out.txt")
    cfg = write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {tmp}/data
topics:
  app:
    partitions: 1
inputs:
  - type: tail
    name: src
    topic: app
    paths: [{src}]
    read_from: beginning
outputs:
  - type: file
    name: out
    topics: [app]
    path: {out}
""")
    s = start(cfg)
    spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= 1000, what="1000 lines out")
    check(s.terminate() == 0, s.stderr()[-2000:])
    for slot in (0, 1):
        p = os.path.join(tmp, "data/state/checkpoint.%d" % slot)
        if os.path.exists(p):
            os.unlink(p)
    for cmd in (["check", cfg], ["run", "-c", cfg]):
        r = spoolt.run(cmd, timeout=60)
        err = r.stderr.decode()
        check(r.returncode == 2, "spool %s: exit %d, want 2: %s" % (cmd[0], r.returncode, err))
        check("no valid checkpoint" in err and "source positions" in err and
              "spool run --reset-positions" in err and "app/0" in err, err)
        # One refusal, one line (logged by the layer that decides, not also by its caller).
        check(err.count("no valid checkpoint") == 1, "spool %s: %s" % (cmd[0], err))
    check(len(spoolt.read_lines(out)) == 1000, "the refused run delivered something")
    # Both slots damaged: the same refusal.
    os.makedirs(os.path.join(tmp, "data/state"), exist_ok=True)
    for slot in (0, 1):
        write(os.path.join(tmp, "data/state/checkpoint.%d" % slot), "garbage" * 10)
    r = spoolt.run(["run", "-c", cfg], timeout=60)
    check(r.returncode == 2 and b"both slots are damaged" in r.stderr, r.stderr)
    check(r.stderr.count(b"no valid checkpoint") == 1, r.stderr)
    # With the flag: starts, and (as it says) reads the file again.
    s = start(cfg, args=["--reset-positions"])
    spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= 2000, what="the re-read")
    check(s.terminate() == 0, s.stderr()[-2000:])
    check("--reset-positions given" in s.stderr(), s.stderr())
    # The damaged checkpoint overridden: one line says so (not the checkpoint
    # loader and the opener each).
    check(s.stderr().count("no valid checkpoint") == 1, s.stderr())
    # The checkpoint exists again: a plain start is accepted.
    r = spoolt.run(["check", cfg])
    check(r.returncode == 0, r.stderr)


t.main()
