"""tail input: discovery and the life of files.

Globs with ** and exclude matching files created after start; read_from;
a file deleted while open, truncated, replaced by a new inode, a symlink
re-pointed; restart with positions (files changed, added and removed while
stopped); the poll watcher; 1,000 files at once with max_open_files, idle
CPU and close_inactive. Each case checks the log (`spool read`) for exactly
once and the `file` output for nothing lost.

No case sleeps to let spool catch up: each waits for something it can see
(the last line written in the output, a log line, open files).
"""
import os
import time

import spoolt
import tailt
from spoolt import check

t = spoolt.Suite(__file__)
SCALE = 0.3 if spoolt.SANITIZE else 1.0


def start(cfg):
    s = tailt.spool(cfg)
    s.wait_log("following", timeout=30)  # this run's line, not an earlier run's
    return s


def stop(s):
    rc = s.terminate(60)
    check(rc == 0, "spool exited with %s: %s" % (rc, s.stderr()[-3000:]))


def exactly(values, expected, what):
    got = sorted(values)
    check(got == sorted(expected), "%s: expected %d values, got %d (first differences: %s)"
          % (what, len(expected), len(got),
             sorted(set(expected) ^ set(got))[:10] if set(expected) != set(got)
             else "duplicates"))


def log_seqs_exact(cfg, n, what="log", start=1):
    st = spoolt.seq_check(tailt.seqs(tailt.log_values(cfg)), expected_n=n, start=start)
    check(st["lost"] == 0 and st["dup"] == 0 and st["count"] == n, "%s: %s" % (what, st))
    return st


@t.case
def glob_late_files_and_headers(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    tailt.append_seq(os.path.join(logs, "a.log"), 1, 50)        # before start: read_from end
    cfg = tailt.config(tmp, ["%s/**/*.log" % logs], extra="""
exclude: ["*.skip.log", "%s/private/**"]
""" % logs, out_format="json", key="{{ file }}")
    s = start(cfg)
    tailt.append_seq(os.path.join(logs, "a.log"), 51, 60)
    tailt.append_seq(os.path.join(logs, "b.log"), 61, 70)          # new file, same dir
    os.makedirs(os.path.join(logs, "sub", "deep"))
    tailt.append_seq(os.path.join(logs, "sub", "deep", "c.log"), 71, 80)  # new directory
    tailt.append_seq(os.path.join(logs, "x.skip.log"), 1001, 1005)  # excluded
    os.makedirs(os.path.join(logs, "private"))
    tailt.append_seq(os.path.join(logs, "private", "p.log"), 2001, 2005)  # excluded
    tailt.append_seq(os.path.join(logs, "c.txt"), 3001, 3005)      # no match
    # Written after the files that must be ignored: once it is out, spool
    # has seen them (and should have skipped them).
    tailt.append_seq(os.path.join(logs, "a.log"), 81, 81)
    tailt.wait_lines(tmp, 31)
    stop(s)
    recs = tailt.out_json(tmp)
    byseq = {}
    for r in recs:
        byseq[int(r["value"].split(" ")[0])] = r
    exactly(list(byseq), list(range(51, 82)), "output")
    check(len(recs) == 31, "output has duplicates: %d records" % len(recs))
    r = byseq[75]
    hdr = r["headers"]
    if isinstance(hdr, list):
        hdr = {h["key"]: h["value"] for h in hdr}
    check(hdr.get("path") == os.path.join(logs, "sub", "deep", "c.log"), "path header: %r" % hdr)
    check(hdr.get("input") == "tl", "input header: %r" % hdr)
    check(hdr.get("host") == os.uname().nodename, "host header: %r (want %s)"
          % (hdr, os.uname().nodename))
    check(r.get("key") == "c.log", "key from {{ file }}: %r" % r.get("key"))
    check(byseq[55].get("key") == "a.log", "key: %r" % byseq[55].get("key"))
    log_seqs_exact(cfg, 31, start=51)


@t.case
def read_from_end_applies_only_at_first_start(tmp):
    path = os.path.join(tmp, "a.log")
    tailt.append_seq(path, 1, 100)
    cfg = tailt.config(tmp, [path])
    s = start(cfg)
    tailt.append_seq(path, 101, 150)
    tailt.wait_lines(tmp, 50)
    stop(s)
    tailt.append_seq(path, 151, 200)  # written while stopped
    s = start(cfg)
    tailt.wait_lines(tmp, 100)  # a re-read from the beginning shows in the log check
    stop(s)
    log_seqs_exact(cfg, 100, start=101)


@t.case
def deleted_while_open(tmp):
    path = os.path.join(tmp, "d.log")
    tailt.append_seq(path, 1, 1000)
    cfg = tailt.config(tmp, [path], extra="read_from: beginning")
    s = start(cfg)
    tailt.wait_lines(tmp, 1000)
    tailt.append_seq(path, 1001, 1500)
    os.unlink(path)
    tailt.wait_lines(tmp, 1500)
    # Read to its end, then closed: spool must not hold the deleted file.
    spoolt.wait_for(lambda: not any("d.log" in f for f in tailt.open_fds(s.proc.pid)),
                    timeout=15, what="the deleted file to be closed")
    tailt.append_seq(path, 1501, 1600)  # a new file at the path: read from its beginning
    tailt.wait_lines(tmp, 1600)
    stop(s)
    log_seqs_exact(cfg, 1600)


@t.case
def truncated(tmp):
    path = os.path.join(tmp, "t.log")
    cfg = tailt.config(tmp, [path], extra="read_from: beginning")
    tailt.append_seq(path, 1, 200)
    s = start(cfg)
    tailt.wait_lines(tmp, 200)
    tailt.append_seq(path, 201, 250, mode="w")  # truncate and write less than before
    tailt.wait_lines(tmp, 250)
    with open(path, "r+") as f:                 # truncate to 0 with ftruncate
        f.truncate(0)
    # spool logs each truncation it sees: wait for the second one before
    # writing again.
    spoolt.wait_for(lambda: s.run_stderr().count(": file truncated") >= 2, timeout=30,
                    what="spool to see the truncation to 0")
    tailt.append_seq(path, 251, 260)
    tailt.wait_lines(tmp, 260)
    stop(s)
    check("truncated" in s.stderr(), "no truncation logged: %s" % s.stderr()[-2000:])
    log_seqs_exact(cfg, 260)


@t.case
def replaced_by_new_inode(tmp):
    path = os.path.join(tmp, "r.log")
    # rotate_wait far longer than the test: the late lines must be read
    # however long this machine takes to write them.
    cfg = tailt.config(tmp, [path], extra="read_from: beginning\nrotate_wait: 5m")
    tailt.append_seq(path, 1, 100)
    s = start(cfg)
    tailt.wait_lines(tmp, 100)
    old = open(path, "a")  # a writer still holding the old file
    tailt.append_seq(path + ".new", 101, 200)
    os.rename(path + ".new", path)
    tailt.wait_lines(tmp, 200)  # spool follows the new file: it saw the rename
    for n in range(201, 211):  # late lines into the replaced file
        old.write("%d %s\n" % (n, tailt.PAD))
    old.close()
    tailt.append_seq(path, 211, 300)
    tailt.wait_lines(tmp, 300)
    stop(s)
    log_seqs_exact(cfg, 300)
    st = spoolt.seq_check(tailt.seqs(tailt.out_values(tmp)), expected_n=300)
    check(st["lost"] == 0, "output lost lines: %s" % st)


@t.case
def symlink_repointed(tmp):
    tgt = os.path.join(tmp, "tgt")
    links = os.path.join(tmp, "links")
    os.makedirs(tgt)
    os.makedirs(links)
    a = os.path.join(tgt, "a.log")
    b = os.path.join(tgt, "b.log")
    link = os.path.join(links, "app.log")
    tailt.append_seq(a, 1, 100)
    os.symlink(a, link)
    cfg = tailt.config(tmp, ["%s/*.log" % links], extra="read_from: beginning\nrotate_wait: 1s",
                       out_format="json")
    s = start(cfg)
    tailt.wait_lines(tmp, 100)
    tailt.append_seq(a, 101, 150)  # written through the target's own path
    tailt.wait_lines(tmp, 150)
    tailt.append_seq(b, 151, 200)
    os.symlink(b, link + ".tmp")
    os.rename(link + ".tmp", link)  # atomic re-point, as `ln -sfn` does
    tailt.wait_lines(tmp, 200)
    tailt.append_seq(b, 201, 250)
    tailt.wait_lines(tmp, 250)
    spoolt.wait_for(lambda: not any(f == a for f in tailt.open_fds(s.proc.pid)), timeout=15,
                    what="the old target to be closed after rotate_wait")
    stop(s)
    recs = tailt.out_json(tmp)
    hdr = recs[-1]["headers"]
    if isinstance(hdr, list):
        hdr = {h["key"]: h["value"] for h in hdr}
    check(hdr.get("path") == link, "path header is the matched (link) path: %r" % hdr)
    log_seqs_exact(cfg, 250)


@t.case
def restart_with_changes_while_stopped(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    cfg = tailt.config(tmp, ["%s/*.log" % logs], extra="read_from: beginning")
    tailt.append_seq(os.path.join(logs, "a.log"), 1, 100)
    tailt.append_seq(os.path.join(logs, "gone.log"), 101, 150)
    s = start(cfg)
    tailt.wait_lines(tmp, 150)
    stop(s)
    tailt.append_seq(os.path.join(logs, "a.log"), 151, 200)   # grew while stopped
    tailt.append_seq(os.path.join(logs, "n.log"), 201, 250)   # appeared while stopped
    os.unlink(os.path.join(logs, "gone.log"))                 # removed while stopped
    s = start(cfg)
    tailt.wait_lines(tmp, 250)  # a file read twice shows in the log check
    stop(s)
    check("removed while spool was stopped" in s.stderr(),
          "no warning for the removed file: %s" % s.stderr()[-2000:])
    log_seqs_exact(cfg, 250)


@t.case
def poll_watcher(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "p.log")
    cfg = tailt.config(tmp, ["%s/*.log" % logs],
                       extra="watcher: poll\npoll_interval: 200ms\nrotate_wait: 5m")
    s = start(cfg)
    tailt.append_seq(path, 1, 100)  # appears after start
    tailt.wait_lines(tmp, 100)
    os.rename(path, path + ".1")
    tailt.append_seq(path + ".1", 101, 120)  # late writes to the renamed file
    tailt.append_seq(path, 121, 200)
    tailt.wait_lines(tmp, 200)  # a line read twice shows in the log check
    stop(s)
    log_seqs_exact(cfg, 200)


@t.case
def thousand_files(tmp):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    nfiles = 1000
    cfg = tailt.config(tmp, ["%s/*.log" % logs],
                       extra="max_open_files: 100\nclose_inactive: 2s\nrescan_interval: 10s")
    s = start(cfg)
    seq = 1
    for i in range(nfiles):  # 1,000 files appear at once
        with open(os.path.join(logs, "f%04d.log" % i), "w") as f:
            for _ in range(5):
                f.write("%d %s\n" % (seq, tailt.PAD))
                seq += 1
    tailt.wait_lines(tmp, 5 * nfiles, timeout=120)
    for i in range(nfiles):  # each grows again
        with open(os.path.join(logs, "f%04d.log" % i), "a") as f:
            f.write("%d %s\n" % (seq, tailt.PAD))
            seq += 1
    tailt.wait_lines(tmp, 6 * nfiles, timeout=120)
    fds = [f for f in tailt.open_fds(s.proc.pid) if f.startswith(logs)]
    check(len(fds) <= 100, "max_open_files exceeded: %d files open" % len(fds))
    # Idle: after close_inactive (2s) nothing is held and no CPU is used.
    spoolt.wait_for(lambda: not [f for f in tailt.open_fds(s.proc.pid) if f.startswith(logs)],
                    timeout=60, interval=0.2, what="close_inactive to close every file")
    c0 = tailt.proc_cpu_seconds(s.proc.pid)
    time.sleep(4)  # a measuring window (CPU used by an idle spool), not a wait
    idle = tailt.proc_cpu_seconds(s.proc.pid) - c0
    rss = tailt.proc_rss_kib(s.proc.pid)
    tailt.report("thousand_files", idle_cpu_s_per_4s=idle, peak_rss_kib=rss)
    check(idle < 0.4, "idle spool with 1,000 quiet files used %.2fs CPU in 4s" % idle)
    stop(s)
    log_seqs_exact(cfg, 6 * nfiles)


@t.case
def many_new_files_read_once(tmp):
    """2,000 files found at start, read from the beginning: each is checked
    for being a copy of one already read (copytruncate) by its beginning,
    read once, not re-read once per other file (N x N preads before). The
    files are the same length: a file shorter than another's fingerprint
    (256 bytes) is still compared with it by reading (a copy being made)."""
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    nfiles = 2000
    for i in range(nfiles):
        spoolt.write(os.path.join(logs, "f%04d.log" % i), "%06d %s\n" % (i + 1, tailt.PAD))
    cfg = tailt.config(tmp, ["%s/*.log" % logs], extra="read_from: beginning\n")
    s = start(cfg)
    tailt.wait_lines(tmp, nfiles, timeout=120)
    with open("/proc/%d/io" % s.proc.pid) as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    reads = int(io["syscr"])
    tailt.report("many_new_files_read_once", read_syscalls=reads, files=nfiles)
    check(reads < 30 * nfiles, "%d read calls for %d one-line files" % (reads, nfiles))
    stop(s)
    log_seqs_exact(cfg, nfiles)


@t.case
def directory_symlink_events(tmp):
    """The globs name a symlinked directory: files are known by their real
    path (dir's realpath + name, resolved once per directory per scan), so
    inotify's events on the real directory find them with no rescan."""
    real = os.path.join(tmp, "real")
    os.makedirs(real)
    dlink = os.path.join(tmp, "dlink")
    os.symlink(real, dlink)
    tailt.append_seq(os.path.join(real, "a.log"), 1, 10)
    os.symlink(os.path.join(real, "a.log"), os.path.join(real, "c.log"))  # a file symlink too
    cfg = tailt.config(tmp, ["%s/*.log" % dlink], extra="read_from: beginning\n"
                       "rescan_interval: 24h\n")
    s = start(cfg)
    tailt.wait_lines(tmp, 10)
    tailt.append_seq(os.path.join(real, "a.log"), 11, 20)
    tailt.append_seq(os.path.join(dlink, "b.log"), 21, 30)  # a new file: a rescan by event
    tailt.wait_lines(tmp, 30, timeout=60)
    tailt.append_seq(os.path.join(real, "b.log"), 31, 40)
    tailt.wait_lines(tmp, 40, timeout=60)
    stop(s)
    log_seqs_exact(cfg, 40)


t.main()
