"""tail input at the edges of rotation (issue 13), each case with numbered lines.

- copytruncate with the copies in the globs (`app.log*`), with compress and
  delaycompress, under Debian's logrotate: a copy is recognised by content
  and continued from where the original was read: 0 lost, 0 duplicated, in
  order. Rotations are driven by the test between known writes (no writer
  runs during logrotate's copy, so no line is lost by copytruncate itself);
  spool is held with SIGSTOP in some rounds so it is behind at truncation,
  whatever the machine's speed.
- the interleavings of logrotate's copy, truncate, gzip and delete with
  what spool sees, driven step by step (SIGSTOP, /proc fd offsets, log
  lines; no sleeps): the copy seen after the truncation and the .gz after
  it (the CI duplicate), a partly written .gz, a .gz continuing more than a
  read cycle before the new lines, an incomplete line at the truncation
  (never a torn record, never emitted twice).
- copytruncate with only the live file followed: the unread bytes are
  skipped, with a warning naming how many and where they are.
- compressed files (gzip, bzip2, xz, zstd by magic bytes, whatever their
  name) are skipped with one notice each, never read as text.
- truncated and rewritten past the position (a constant header), while
  spool was stopped and while it runs: read again from the beginning, with a
  warning; no line skipped, no torn fragment.
- order across rotation (create): renamed files with large backlogs (one
  created and rotated away unseen) are read to their ends, oldest first,
  before the new file, live (SIGSTOP) and across a restart.
"""
import bz2
import gzip
import lzma
import os
import random
import signal
import subprocess
import time

import spoolt
import tailt
from spoolt import check

t = spoolt.Suite(__file__)
LINE = len("%d %s\n" % (1, tailt.PAD))  # numbers below 10 only: see line_bytes


def line_bytes(first, last):
    return sum(len("%d %s\n" % (s, tailt.PAD)) for s in range(first, last + 1))


def start(cfg):
    s = tailt.spool(cfg)
    spoolt.wait_for(lambda: "following" in s.stderr() or s.proc.poll() is not None,
                    timeout=30, what="tail to start")
    check(s.proc.poll() is None, "spool exited: %s" % s.stderr()[-3000:])
    return s


def all_threads_stopped(pid):
    task = "/proc/%d/task" % pid
    for tid in os.listdir(task):
        try:
            with open("%s/%s/stat" % (task, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue  # the thread ended
        if state not in ("T", "t"):
            return False
    return True


def stopped(s):
    """Context: spool frozen (SIGSTOP) inside, so it is behind what happens."""
    class Ctx:
        def __enter__(self):
            os.kill(s.proc.pid, signal.SIGSTOP)
            # kill() returns before every thread has stopped: a reader still
            # running could read what the test writes next. Wait until each
            # thread's state is T (stopped).
            spoolt.wait_for(lambda: all_threads_stopped(s.proc.pid), timeout=30,
                            interval=0.001, what="spool's threads to stop (SIGSTOP)")

        def __exit__(self, *a):
            os.kill(s.proc.pid, signal.SIGCONT)
    return Ctx()


def stop(s):
    rc = s.terminate(60)
    check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))


def copytruncate_rounds(tmp, directives, extra="", name="copytruncate, copies in the glob"):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    open(path, "w").close()
    conf, state = tailt.logrotate_conf(tmp, path, directives)
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrotate_wait: 1s\n" + extra,
                       log_level=os.environ.get("TAIL_LOG_LEVEL", "info"))
    s = start(cfg)
    seed = int(os.environ.get("TAIL_SEED") or random.randrange(1 << 30))
    print("     seed %d" % seed, flush=True)
    rnd = random.Random(seed)
    tailt.append_seq(path, 1, 100)
    n = 100
    rounds = 8
    for k in range(rounds):
        chunk = rnd.randrange(2000, 30000)
        # spool has read something of the file since its last truncation (else
        # nothing tells the copy from a new file: see docs/tail.md)
        tailt.append_seq(path, n + 1, n + 10)
        tailt.wait_seen(tmp, 1, first=n + 1)
        n += 10
        if k % 2 == 0:
            # spool frozen: the lines of this chunk are unread at truncation,
            # only the copy has them
            with stopped(s):
                tailt.append_seq(path, n + 1, n + chunk)
                tailt.logrotate(conf, state)
        else:
            tailt.append_seq(path, n + 1, n + chunk)
            tailt.logrotate(conf, state)  # spool anywhere in the chunk
        n += chunk
    tailt.append_seq(path, n + 1, n + 1000)
    n += 1000
    tailt.wait_seen(tmp, n, timeout=180)
    stop(s)
    err = s.stderr()
    tailt.check_seqs(cfg, tmp, n, name, out_dup_ok=False, rounds=rounds)
    check("a copy of %s (copytruncate)" % path in err, "no copy recognised: %s" % err[-2000:])
    check("gzip-compressed" in err, "no notice for the compressed copies: %s" % err[-2000:])
    return err


@t.case
def copytruncate_copies_in_glob(tmp):
    copytruncate_rounds(tmp, ["copytruncate", "compress", "delaycompress"])


@t.case
def copytruncate_compress_decompress(tmp):
    """decompress: true; compress without delaycompress: the copy is only ever
    compressed, and is recognised by its decompressed content."""
    err = copytruncate_rounds(tmp, ["copytruncate", "compress"], extra="decompress: true",
                              name="copytruncate + compress, decompress: true")
    check("gzip-compressed (by its first bytes), read decompressed" in err, err[-2000:])


@t.case
def copytruncate_delaycompress_decompress(tmp):
    """decompress: true with delaycompress: the .gz of a copy already read is
    recognised by content and not read twice."""
    copytruncate_rounds(tmp, ["copytruncate", "compress", "delaycompress"],
                        extra="decompress: true",
                        name="copytruncate + delaycompress, decompress: true")


@t.case
def copytruncate_copy_then_gzip_seen_late(tmp):
    """The CI duplicate (copytruncate + compress, decompress: true), driven
    step by step. logrotate creates the copy app.log.1 empty, fills it,
    truncates app.log, then gzips app.log.1 into app.log.1.gz and deletes
    app.log.1. Here spool sees the truncation first, then the plain copy
    (continued from where app.log was read), while the .gz holds only its
    header (app.log's restart waits for it: it may be the copy); when the
    .gz is complete it is the same content again. It must not continue
    app.log a second time (it did: every unread line was appended twice),
    and app.log's restart must not warn that bytes were skipped (they were
    not: the copy has them)."""
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    # rescans only on events (none periodic in the test's time); the .gz may
    # stay undecided for the whole test
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrotate_wait: 120s\n"
                       "rescan_interval: 24h\ndecompress: true", log_level="debug")
    tailt.append_seq(path, 1, 100)
    s = start(cfg)
    tailt.wait_seen(tmp, 100)
    # logrotate's files exist, empty, and spool follows them (nothing to
    # compare yet: an empty file is not taken for a copy)
    open(path + ".1", "w").close()
    open(path + ".1.gz", "w").close()
    for p in (path + ".1", path + ".1.gz"):
        s.wait_log("%s: following" % p)
    with stopped(s):
        tailt.append_seq(path, 101, 2000)  # unread at truncation: only in the copies
        with open(path, "rb") as f:
            content = f.read()
        with open(path + ".1", "wb") as f:
            f.write(content)
        os.truncate(path, 0)
        gz = gzip.compress(content)
        with open(path + ".1.gz", "wb") as f:
            f.write(gz[:10])  # gzip's header only: nothing to decompress yet
    # no scan runs before app.log is read (no entry was created): spool sees
    # the truncation, then the copy (read after app.log), and continues it
    s.wait_log("app.log.1: a copy of %s (copytruncate); continuing it" % path)
    with open(path + ".1.gz", "ab") as f:
        f.write(gz[10:])
    os.unlink(path + ".1")
    tailt.append_seq(path, 2001, 2100)
    tailt.wait_seen(tmp, 2100)
    # the .gz is looked at on every scan while undecided: once complete, it is
    # decided within a scan or two; a line written after that proves it
    spoolt.wait_for(lambda: "app.log.1.gz: same content as" in s.stderr() or
                    "app.log.1.gz: a copy of" in s.stderr(), timeout=60,
                    what="the .gz to be compared with the files followed")
    tailt.append_seq(path, 2101, 2200)
    tailt.wait_seen(tmp, 2200)
    stop(s)
    err = s.stderr()
    tailt.check_seqs(tmp=tmp, cfg=cfg, n=2200, name="copy seen after truncation, .gz late",
                     out_dup_ok=False)
    check("not read yet and are skipped" not in err, "false warning: %s" % err[-3000:])


@t.case
def copytruncate_copy_continued_at_its_end(tmp):
    """spool had read all of app.log when it was copied and truncated: the
    copy (created empty by logrotate, so followed before it had a
    beginning to fingerprint) continues at its end, with nothing to read.
    Its .gz is then a copy of it, not a new file (it was read again from
    its beginning: test_tail_edges copytruncate_compress_decompress under
    load, 14,761 duplicates)."""
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrotate_wait: 120s\n"
                       "rescan_interval: 24h\ndecompress: true", log_level="debug")
    tailt.append_seq(path, 1, 1000)
    s = start(cfg)
    tailt.wait_seen(tmp, 1000)
    open(path + ".1", "w").close()  # logrotate's copy, empty at first
    s.wait_log("%s.1: following" % path)
    with stopped(s):
        with open(path, "rb") as f:
            content = f.read()
        with open(path + ".1", "wb") as f:
            f.write(content)
        os.truncate(path, 0)
    s.wait_log("app.log.1: a copy of %s (copytruncate); continuing it" % path)
    with open(os.path.join(tmp, "gz"), "wb") as f:
        f.write(gzip.compress(content))
    os.rename(os.path.join(tmp, "gz"), path + ".1.gz")
    os.unlink(path + ".1")
    s.wait_log("app.log.1.gz: gzip-compressed")  # compared in the same call
    tailt.append_seq(path, 1001, 1100)
    tailt.wait_seen(tmp, 100, first=1001)
    stop(s)
    tailt.check_seqs(tmp=tmp, cfg=cfg, n=1100, name="copy continued at its end, then its .gz",
                     out_dup_ok=False)


@t.case
def copytruncate_gzip_partial_after_truncation(tmp):
    """The plain copy is known (held) when app.log is truncated; the .gz of
    that copy is first seen partly written, holding less than what spool had
    read of app.log (gzip writes in 16 KiB blocks). It can only be compared
    with app.log's old bytes, which are gone from app.log but are in the
    plain copy: it is a copy, not a new file read from its beginning (it
    was: every line in it appended again)."""
    import zlib
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrotate_wait: 120s\n"
                       "rescan_interval: 24h\ndecompress: true", log_level="debug")
    tailt.append_seq(path, 1, 1000)
    s = start(cfg)
    tailt.wait_seen(tmp, 1000)
    with stopped(s):
        tailt.append_seq(path, 1001, 3000)
        with open(path, "rb") as f:
            content = f.read()
        with open(os.path.join(tmp, "copy"), "wb") as f:
            f.write(content)
        os.rename(os.path.join(tmp, "copy"), path + ".1")  # complete when it appears
    s.wait_log("app.log.1: same content as %s" % path)  # held: app.log still has it
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    first = z.compress(content[:2000]) + z.flush(zlib.Z_SYNC_FLUSH)  # 2000 bytes' worth
    rest = z.compress(content[2000:]) + z.flush()
    with stopped(s):
        os.truncate(path, 0)
        with open(os.path.join(tmp, "gz"), "wb") as f:
            f.write(first)
        os.rename(os.path.join(tmp, "gz"), path + ".1.gz")
    # its kind is logged when it is first compared (same call)
    s.wait_log("app.log.1.gz: gzip-compressed")
    with open(path + ".1.gz", "ab") as f:
        f.write(rest)
    os.unlink(path + ".1")
    tailt.append_seq(path, 3001, 3100)
    tailt.wait_seen(tmp, 3100)
    stop(s)
    tailt.check_seqs(tmp=tmp, cfg=cfg, n=3100, name="partial .gz after truncation",
                     out_dup_ok=False)


@t.case
def truncated_after_torn_read(tmp):
    """spool read a line while it was being written (its first part); the
    write completed and the file was truncated (`> file`, or copytruncate
    without the copies followed) before spool looked again. The piece read
    is not a line: it must not be emitted as a record (it was, whenever the
    file had never been seen longer: test_tail_rotate logrotate_copytruncate
    under load logged records "2255" and "205646 xxx")."""
    path = os.path.join(tmp, "app.log")
    cfg = tailt.config(tmp, [path], extra="read_from: beginning\nrescan_interval: 24h")
    tailt.append_seq(path, 1, 100)
    line = "101 %s\n" % tailt.PAD
    with open(path, "a") as f:
        f.write(line[:30])  # the first part of a write()
    size = os.path.getsize(path)
    s = start(cfg)
    tailt.wait_seen(tmp, 100)
    spoolt.wait_for(lambda: fd_pos(s.proc.pid, path) == size, timeout=60,
                    what="spool to read the piece of line 101")
    with stopped(s):
        with open(path, "a") as f:
            f.write(line[30:])
        tailt.append_seq(path, 102, 200)
        os.truncate(path, 0)
        tailt.append_seq(path, 201, 210)  # less than spool had read: truncated
    tailt.wait_seen(tmp, 10, first=201)
    stop(s)
    vals = tailt.log_values(cfg)
    torn = [v for v in vals if not v.endswith(tailt.PAD.encode())]
    check(not torn, "torn records in the log: %r" % torn[:3])
    got = tailt.seqs(vals)
    check(got == list(range(1, 101)) + list(range(201, 211)), "log: %s" % got[95:110])
    check("bytes written before that were not read yet and are skipped" in s.stderr(),
          "no warning: %s" % s.stderr()[-2000:])


@t.case
def copytruncate_gzip_copy_before_new_lines(tmp):
    """Only the .gz is left of the copy (logrotate ran while spool was
    frozen), and what spool had not read of the original is more than one
    read cycle's budget: the .gz continues the original to its end before
    the original's new lines (order in a one-partition topic)."""
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    # read_buffer 4KiB: a read cycle's budget is 64 KiB per file
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrotate_wait: 120s\n"
                       "decompress: true\nread_buffer: 4KiB")
    tailt.append_seq(path, 1, 100)
    s = start(cfg)
    tailt.wait_seen(tmp, 100)
    with stopped(s):
        tailt.append_seq(path, 101, 5000)  # ~530 KB unread: several cycles
        with open(path, "rb") as f:
            content = f.read()
        os.truncate(path, 0)
        with open(path + ".1.gz", "wb") as f:
            f.write(gzip.compress(content))
        tailt.append_seq(path, 5001, 5100)
    tailt.wait_seen(tmp, 5100)
    stop(s)
    tailt.check_seqs(tmp=tmp, cfg=cfg, n=5100, name="gz copy before the new lines",
                     out_dup_ok=False)


def fd_pos(pid, path):
    """The file offset of pid's descriptor of path (None if it has none)."""
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, name)) != path:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, name)) as f:
                for l in f:
                    if l.startswith("pos:"):
                        return int(l.split()[1])
        except OSError:
            continue
    return None


@t.case
def copytruncate_partial_line_stale(tmp):
    """A line incomplete when spool read it, still incomplete (on disk: the
    writer stalled) when the file was copied and truncated, the copy seen
    after the truncation: the copy continues at that line's beginning and
    holds it whole. The truncated file's flush_partial_after timer must not
    emit its torn beginning too (it did: one numbered line twice, CI's
    `count: n+1`). spool is held (SIGSTOP) past flush_partial_after: the
    time the writer stalled."""
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    partial = 3.0
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrotate_wait: 120s\n"
                       "rescan_interval: 24h\nflush_partial_after: %ds" % partial,
                       log_level="debug")
    tailt.append_seq(path, 1, 100)
    line = "101 %s\n" % tailt.PAD
    with open(path, "a") as f:
        f.write(line[:40])
    size = os.path.getsize(path)
    s = start(cfg)
    open(path + ".1", "w").close()  # logrotate's copy, empty at first
    s.wait_log("%s.1: following" % path)
    tailt.wait_seen(tmp, 100)
    # spool read the incomplete line (its descriptor is at the end of it):
    # the flush_partial_after timer runs from now
    spoolt.wait_for(lambda: fd_pos(s.proc.pid, path) == size, timeout=60,
                    what="spool to read the incomplete line")
    t0 = time.monotonic()
    with stopped(s):
        check(time.monotonic() - t0 < partial, "too slow to stop spool before its timer")
        with open(path, "a") as f:
            f.write(line[40:])
        tailt.append_seq(path, 102, 2000)
        with open(path, "rb") as f:
            content = f.read()
        with open(path + ".1", "wb") as f:
            f.write(content)
        os.truncate(path, 0)
        # the writer's stall: the incomplete line's timer is due when spool
        # runs again (a duration the scenario needs, not a synchronization)
        time.sleep(partial + 0.5)
    s.wait_log("app.log.1: a copy of %s (copytruncate); continuing it" % path)
    tailt.append_seq(path, 2001, 2100)
    tailt.wait_seen(tmp, 2100)
    stop(s)
    err = s.stderr()
    tailt.check_seqs(tmp=tmp, cfg=cfg, n=2100, name="incomplete line at truncation, stale",
                     out_dup_ok=False)
    check("not read yet and are skipped" not in err, "false warning: %s" % err[-3000:])


def compress_to(path, data, tool):
    with open(path, "wb") as f:
        subprocess.run([tool, "-c"], input=data, stdout=f, check=True)


@t.case
def decompress_read_and_resume(tmp):
    """gzip (two members) and zstd files read decompressed; killed while in
    the middle of a large one, the restart resumes in the decompressed stream."""
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")

    def lines(a, b):
        return "".join("%d %s\n" % (i, tailt.PAD) for i in range(a, b + 1)).encode()
    with open(path + ".1.gz", "wb") as f:
        f.write(gzip.compress(lines(1, 500)) + gzip.compress(lines(501, 1000)))
    compress_to(path + ".2", lines(1001, 2000), "zstd")  # no telling name
    compress_to(path + ".3.gz", lines(2001, 202000), "gzip")
    compress_to(path + ".4.xz", lines(300001, 300010), "xz")
    tailt.append_seq(path, 202001, 203000)
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\ndecompress: true",
                       fsync="100ms")
    seed = int(os.environ.get("TAIL_SEED") or random.randrange(1 << 30))
    print("     seed %d" % seed, flush=True)
    rnd = random.Random(seed)
    for _ in range(3):
        s = tailt.spool(cfg)
        spoolt.wait_for(lambda: os.path.exists(os.path.join(tmp, "out.txt")), timeout=60,
                        what="first output")
        time.sleep(rnd.uniform(0.0, 0.3))  # a random moment to rotate at; not a wait
        s.kill()
    s = start(cfg)
    n = 203000
    tailt.wait_seen(tmp, n, timeout=180)
    stop(s)
    log = spoolt.seq_check(tailt.seqs(tailt.log_values(cfg)), expected_n=n)
    tailt.report("decompress, killed 3 times", lines=n, log_lost=log["lost"], log_dup=log["dup"])
    check(log["lost"] == 0 and log["dup"] == 0 and log["count"] == n, "log: %s" % log)
    check("xz-compressed (by its first bytes), not read" in s.stderr(), s.stderr()[-2000:])


@t.case
def copytruncate_live_only_warns(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    open(path, "w").close()
    conf, state = tailt.logrotate_conf(tmp, path, ["copytruncate", "nocompress"])
    cfg = tailt.config(tmp, [path], extra="read_from: beginning")
    s = start(cfg)
    tailt.append_seq(path, 1, 1000)
    tailt.wait_seen(tmp, 1000)
    with stopped(s):
        tailt.append_seq(path, 1001, 3000)  # unread at truncation: only in app.log.1
        tailt.logrotate(conf, state)
        tailt.append_seq(path, 3001, 3100)
    tailt.wait_seen(tmp, 100, first=3001)
    stop(s)
    log = spoolt.seq_check(tailt.seqs(tailt.log_values(cfg)))
    in_log = set(tailt.seqs(tailt.log_values(cfg)))
    err = s.stderr()
    skipped = line_bytes(1001, 3000)
    tailt.report("copytruncate, live file only", skipped_bytes=skipped, dup=log["dup"])
    check(all(i in in_log for i in range(1, 1001)) and all(i in in_log for i in range(3001, 3101)),
          "lines read before or written after the truncation are missing")
    check(log["dup"] == 0, "log: %s" % log)
    check("%d bytes written before that were not read yet and are skipped" % skipped in err,
          "no warning with the byte count (%d): %s" % (skipped, err[-2000:]))
    check("add the rotated copies to `paths`" in err and "app.log.1" in err,
          "no advice: %s" % err[-2000:])


@t.case
def compressed_skipped(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    tailt.append_seq(path, 1, 100)
    junk = "".join("%d %s\n" % (s, tailt.PAD) for s in range(101, 200)).encode()
    with gzip.open(path + ".1.gz", "wb") as f:
        f.write(junk)
    with open(path + ".2", "wb") as f:  # no telling name: magic bytes only
        f.write(lzma.compress(junk))
    with open(path + ".3", "wb") as f:
        f.write(bz2.compress(junk))
    with open(path + ".4", "wb") as f:
        f.write(b"\x28\xb5\x2f\xfd" + os.urandom(64) + b"\n1 fake\n")
    cfg = tailt.config(tmp, [path + "*"], extra="read_from: beginning\nrescan_interval: 100ms")
    s = start(cfg)
    tailt.wait_seen(tmp, 100)
    # rescans (every 100 ms) must not repeat the notices: a new file, read
    tailt.append_seq(path + ".new", 1000, 1000)
    tailt.wait_seen(tmp, 1, first=1000)
    stop(s)
    err = s.stderr()
    vals = tailt.log_values(cfg)
    got = sorted(tailt.seqs(vals))  # raises on any line that is not a numbered one
    check(got == list(range(1, 101)) + [1000], "log: %d records, %s..." % (len(got), got[:5]))
    for name, what in ((".1.gz", "gzip"), (".2", "xz"), (".3", "bzip2"), (".4", "zstd")):
        needle = "%s%s: %s-compressed" % (path, name, what)
        check(err.count(needle) == 1, "notice for %s: %d times: %s"
              % (name, err.count(needle), err[-2000:]))


def header():
    return "".join("# header line %02d %s\n" % (i, "h" * 40) for i in range(6))[:300]


def write_with_header(path, first, last):
    with open(path, "w") as f:
        f.write(header())
        f.write("\n")
        for s in range(first, last + 1):
            f.write("%d %s\n" % (s, tailt.PAD))


def numbered(values):
    return [v for v in values if not v.startswith(b"# ") and v != b""]


def stale_offset(tmp, running):
    path = os.path.join(tmp, "app.log")
    write_with_header(path, 1, 1000)
    cfg = tailt.config(tmp, [path], extra="read_from: beginning")
    s = start(cfg)
    tailt.wait_seen(tmp, 1000)
    # Truncated and rewritten: the same 300-byte header, other lines, larger.
    if running:
        with stopped(s):
            write_with_header(path, 1001, 3000)
    else:
        stop(s)
        write_with_header(path, 1001, 3000)
        s = start(cfg)
    tailt.wait_seen(tmp, 2000, first=1001)
    stop(s)
    log = spoolt.seq_check(tailt.seqs(numbered(tailt.log_values(cfg))), expected_n=3000)
    out = spoolt.seq_check(tailt.seqs(numbered(tailt.out_values(tmp))), expected_n=3000)
    tailt.report("truncated and regrown " + ("while running" if running else "while stopped"),
                 log_lost=log["lost"], log_dup=log["dup"], out_lost=out["lost"])
    check(log["lost"] == 0 and log["dup"] == 0, "log: %s" % log)
    check(out["lost"] == 0 and out["dup"] == 0, "output: %s" % out)
    err = s.stderr()
    want = ("truncated and rewritten past the position" if running else
            "are not the ones read there: truncated and rewritten while spool was stopped")
    check(want in err, "no warning: %s" % err[-2000:])
    check(any(l for l in err.splitlines() if want in l and ("warn" in l.lower())),
          "not at warn level: %s" % err[-2000:])


@t.case
def stale_offset_while_stopped(tmp):
    stale_offset(tmp, False)


@t.case
def stale_offset_while_running(tmp):
    stale_offset(tmp, True)


def order_across_rotation(tmp, live):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    open(path, "w").close()
    cfg = tailt.config(tmp, [path], extra="read_from: beginning\nrotate_wait: 1s")
    s = start(cfg)
    tailt.append_seq(path, 1, 10)
    tailt.wait_seen(tmp, 10)
    big = 120000  # ~13 MB: several read cycles' budget

    def rotate():
        # two rotations: X (known) -> app.log.2, Y (created and rotated away
        # unseen) -> app.log.1, Z at app.log; X and Y with large backlogs
        tailt.append_seq(path, 11, big)
        os.rename(path, path + ".1")
        tailt.append_seq(path, big + 1, 2 * big)
        os.rename(path + ".1", path + ".2")
        os.rename(path, path + ".1")
        tailt.append_seq(path, 2 * big + 1, 2 * big + 20000)
    if live:
        with stopped(s):
            rotate()
    else:
        stop(s)
        rotate()
        s = start(cfg)
    n = 2 * big + 20000
    tailt.wait_seen(tmp, n, timeout=180)
    stop(s)
    tailt.check_seqs(cfg, tmp, n, "order across rotation " + ("live" if live else "restart"),
                     out_dup_ok=False)


@t.case
def order_across_rotation_live(tmp):
    order_across_rotation(tmp, True)


@t.case
def order_across_rotation_restart(tmp):
    order_across_rotation(tmp, False)


t.main()
