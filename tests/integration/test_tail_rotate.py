"""tail input under Debian's real logrotate.

A writer appends numbered lines as fast as it can while `logrotate -f`
rotates the file again and again:
- create mode (rename + create; the writer reopens its path when it sees
  the new inode, as an application does after its postrotate signal):
  0 lost and 0 duplicated in the log, 0 lost in the `file` output;
- copytruncate mode: logrotate copies the file, then truncates it. Lines
  the writer appends between the end of the copy and the truncation are in
  neither file: nobody can ship them. Lines that are in the copy but that
  tail had not read yet when the file was truncated are lost for tail too
  (it follows the original file, not the copy; spool warns with the count).
  The test reports both counts, and checks: no duplicates, the output lost
  nothing the log has, and every line of the file as it is at the end is in
  the log.
At least 3 rotations happen whatever the machine's speed: if the writer
finishes first, the test appends numbered lines and rotates itself.
"""
import os
import random
import time

import spoolt
import tailt
from spoolt import check

t = spoolt.Suite(__file__)
N = 400000 if spoolt.SANITIZE else 1500000
MAX_ROTATIONS = 60
MIN_ROTATIONS = 3


def start(cfg):
    s = tailt.spool(cfg)
    spoolt.wait_for(lambda: "following" in s.stderr() or s.proc.poll() is not None,
                    timeout=30, what="tail to start")
    check(s.proc.poll() is None, "spool exited: %s" % s.stderr()[-3000:])
    return s


def rotate_while_writing(tmp, mode):
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    path = os.path.join(logs, "app.log")
    open(path, "w").close()
    conf = os.path.join(tmp, "logrotate.conf")
    spoolt.write(conf, "%s {\n    rotate 1000\n    %s\n    missingok\n    nocompress\n}\n"
                 % (path, mode))
    state = os.path.join(tmp, "logrotate.state")
    cfg = tailt.config(tmp, [path], extra="read_from: beginning\nrotate_wait: 2s")
    s = start(cfg)
    w = tailt.start_writer(path, N, rate=0, mode="create" if mode == "create" else "append")
    rotations = 0
    rnd = random.Random(4)
    # Rotations while the writer runs, and at least MIN_ROTATIONS whatever the
    # machine's speed: a fast writer may finish first; the rest then rotate
    # a file between known writes (the test appends numbered lines itself).
    while w.poll() is None and rotations < MAX_ROTATIONS:
        time.sleep(rnd.uniform(0.005, 0.03))  # random rotation pace; not a wait
        tailt.logrotate(conf, state)
        rotations += 1
    out, _ = w.communicate(timeout=300)
    written = int(out.decode().strip())
    check(written == N, "writer wrote %d" % written)
    extra = 0
    while rotations < MIN_ROTATIONS:
        tailt.append_seq(path, N + extra + 1, N + extra + 1000)
        extra += 1000
        tailt.logrotate(conf, state)
        rotations += 1
    tailt.append_seq(path, N + extra + 1, N + extra + 1000)  # a live file to read at the end
    extra += 1000
    return s, cfg, path, rotations, N + extra


@t.case
def logrotate_create(tmp):
    s, cfg, path, rotations, n = rotate_while_writing(tmp, "create")
    tailt.wait_seen(tmp, n, timeout=240)
    # terminate() drains the outputs: nothing to wait for before it
    rc = s.terminate(60)
    check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
    log = spoolt.seq_check(tailt.seqs(tailt.log_values(cfg)), expected_n=n)
    out = spoolt.seq_check(tailt.seqs(tailt.out_values(tmp)), expected_n=n)
    tailt.report("logrotate create", rotations=rotations, lines=n, log_lost=log["lost"],
                 log_dup=log["dup"], log_disorder=log["disorder"], out_lost=out["lost"],
                 out_dup=out["dup"])
    check(log["lost"] == 0 and log["dup"] == 0, "log: %s" % log)
    check(log["disorder"] == 0, "log out of order: %s" % log)
    check(out["lost"] == 0, "output: %s" % out)


@t.case
def logrotate_copytruncate(tmp):
    s, cfg, path, rotations, n = rotate_while_writing(tmp, "copytruncate")
    # Lines are lost here by design, so not every line can be waited for; the
    # last 1000, appended to the live file after the last rotation, are read
    # after everything before them (one file, in order): when they are in
    # the output, spool is done. (Waiting for the output to stay quiet for a
    # while stopped spool early on a loaded machine.)
    tailt.wait_seen(tmp, 1000, first=n - 999, timeout=240)
    # terminate() drains the outputs: nothing to wait for before it
    rc = s.terminate(60)
    check(rc == 0, "spool exit %s: %s" % (rc, s.stderr()[-2000:]))
    logv = tailt.seqs(tailt.log_values(cfg))
    log = spoolt.seq_check(logv, expected_n=n)
    out = spoolt.seq_check(tailt.seqs(tailt.out_values(tmp)), expected_n=n)
    # Why is each missing line missing? In no file at all: written between
    # copy and truncate. In a rotated copy: tail was behind at truncation.
    on_disk = set()
    logs = os.path.dirname(path)
    for name in os.listdir(logs):
        with open(os.path.join(logs, name), "rb") as f:
            for l in f.read().split(b"\n"):
                head = l.split(b" ", 1)[0]
                if head.isdigit():
                    on_disk.add(int(head))
    with open(path, "rb") as f:
        current = [int(l.split(b" ", 1)[0]) for l in f.read().split(b"\n") if l]
    in_log = set(logv)
    missing = [i for i in range(1, n + 1) if i not in in_log]
    behind = [i for i in missing if i in on_disk]
    tailt.report("logrotate copytruncate", rotations=rotations, lines=n,
                 log_lost=log["lost"], lost_between_copy_and_truncate=len(missing) - len(behind),
                 lost_copied_before_tail_read_them=len(behind), log_dup=log["dup"],
                 log_disorder=log["disorder"], out_lost=out["lost"], out_dup=out["dup"])
    check(log["dup"] == 0, "log: %s" % log)
    check(out["lost"] == log["lost"], "the output lost more than the log: %s vs %s" % (out, log))
    not_read = [i for i in current if i not in in_log]
    check(not not_read, "lines of the live file missing from the log: %d (first %s)"
          % (len(not_read), not_read[:10]))

t.main()
