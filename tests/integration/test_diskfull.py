"""Disk full for real (issue 3): the log on a tiny tmpfs runs out of space.

As root, a tmpfs of 8 MiB is mounted, mostly filled with a filler file, and
holds data_dir. stdin is fed from a pipe until the log's appends fail with
ENOSPC. Then:
- spool does not crash, and logs the condition once (no flood);
- /health answers 503 with a reason naming the log writer;
- the input is paused (backpressure): spool stops reading stdin, so the
  test's writes into the pipe stop making progress;
- when the filler is deleted, appends resume by themselves, the file output
  catches up and /health is 200 again;
- afterwards the log holds every record fed exactly once and in order, and
  the `file` output (on another filesystem) has them all.
The tmpfs is always unmounted at the end. Mounting needs root: without root
the test is skipped (exit 77, reported by ctest) with the reason; as root
(CI) a refused mount is a failure, not a skip.
"""
import fcntl
import json
import os
import subprocess
import termios
import threading
import time
import urllib.error
import urllib.request

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
FS_MIB = 8
FREE_KIB = 1536        # space left on the tmpfs after the filler
REC = 100              # bytes per record, newline included
N = 5 * 1024 * 1024 // REC  # 5 MiB fed: more than the free space plus spool's queues


def health(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError as e:
        return None, str(e)


def pipe_bytes(f):
    """Bytes waiting in the pipe f writes to (FIONREAD works on either end)."""
    buf = fcntl.ioctl(f.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, "little")


def pipe_capacity(f):
    return fcntl.fcntl(f.fileno(), fcntl.F_GETPIPE_SZ)


class Feeder(threading.Thread):
    """Writes N numbered records into spool's stdin in small writes; `sent`
    counts bytes the pipe accepted."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.sent = 0
        self.done = False
        self.error = None

    def run(self):
        pad = "y" * (REC - 9)
        try:
            for start in range(1, N + 1, 160):
                block = "".join("%08d%s\n" % (i, pad)
                                for i in range(start, min(N + 1, start + 160))).encode()
                self.pipe.write(block)
                self.pipe.flush()
                self.sent += len(block)
            self.pipe.close()
            self.done = True
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


@t.case
def log_on_a_full_tmpfs(tmp):
    spoolt.require_root("mounting a tmpfs")
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % FS_MIB, "tmpfs", mnt],
                       capture_output=True)
    check(r.returncode == 0, "mount -t tmpfs refused although root: %s"
          % r.stderr.decode().strip())
    s = None
    feeder = None
    try:
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * ((FS_MIB * 1024 - FREE_KIB) * 1024))
        st = os.statvfs(mnt)
        print("     tmpfs free after the filler: %d KiB" % (st.f_bavail * st.f_frsize // 1024),
              flush=True)
        port = spoolt.free_port()
        out = os.path.join(tmp, "out.txt")
        cfg = os.path.join(tmp, "spool.yaml")
        write(cfg, f"""
service:
  data_dir: {mnt}/data
  log_level: info
  memory_limit: 4MiB
  shutdown_timeout: 30s
  http:
    listen: 127.0.0.1:{port}
topics:
  app:
    fsync: 200ms
    segment_bytes: 1MiB
inputs:
  - type: stdin
    name: in
    topic: app
    exit_on_eof: false
outputs:
  - type: file
    name: out
    topics: [app]
    path: {out}
""")
        s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
        s.proc.stdout.close()
        spoolt.wait_for(lambda: health(port)[0] == 200, timeout=30, what="/health 200 at start")
        feeder = Feeder(s.proc.stdin)
        feeder.start()

        # The log fills up: /health turns 503 and names the log writer.
        code, body = spoolt.wait_for(lambda: (lambda h: h if h[0] == 503 else None)(health(port)),
                                     timeout=60, what="/health 503 on a full disk")
        check("log writer" in body, "/health 503 without naming the log writer: %r" % body)
        json.loads(body)  # the reason is JSON
        check(s.proc.poll() is None, "spool died on ENOSPC: %s" % s.stderr()[-2000:])

        # Backpressure: spool stops reading stdin once its queues are full, so
        # the pipe fills up and the feeder blocks. Everything fed (5 MiB) is
        # more than the free space plus spool's queues: if spool kept reading
        # (buffering or dropping), the feeder would finish instead.
        def pipe_full():
            check(not feeder.done, "spool read all of stdin although the log is full")
            return pipe_bytes(s.proc.stdin) >= pipe_capacity(s.proc.stdin) - 4096
        spoolt.wait_for(pipe_full, timeout=60, what="stdin to stop being read (the pipe full)")
        check(feeder.sent < N * REC, "everything was read although the log is full")
        print("     stdin paused after %d of %d bytes; /health: %s" % (feeder.sent, N * REC,
                                                                      body[:200]), flush=True)
        check(health(port)[0] == 503, "/health no longer 503 while still full")
        # Not a synchronization: a window of exposure for a negative property.
        # The writer keeps retrying meanwhile and must not flood the log; a
        # slower machine only retries less, it cannot make this fail.
        time.sleep(3)
        check(s.proc.poll() is None, "spool died while the disk was full")

        # Free space: appends resume by themselves, everything gets in.
        os.unlink(filler)
        feeder.join(120)
        check(feeder.done, "the feeder did not finish after space returned (sent %d of %d, "
              "error %r)" % (feeder.sent, N * REC, feeder.error))
        spoolt.wait_for(lambda: len(spoolt.read_lines(out)) >= N, timeout=120,
                        what="the file output to get all %d records" % N)
        code, body = health(port)
        check(code == 200, "/health %r after space returned: %r" % (code, body))
        rc = s.terminate()
        check(rc == 0, "spool exited %d: %s" % (rc, s.stderr()[-3000:]))
        err = s.stderr()
        blocked = [l for l in err.split("\n") if "log writer:" in l and " error " in l]
        check(len(blocked) == 1, "the full disk was logged %d times, expected once:\n%s" %
              (len(blocked), "\n".join(blocked[:20])))
        check("No space left on device" in blocked[0], "no ENOSPC in %r" % blocked[0])
        print("     %s" % blocked[0][:300], flush=True)
        resumed = [l for l in err.split("\n") if "appends succeed again" in l]
        check(len(resumed) == 1, "resume logged %d times" % len(resumed))
        errors = [l for l in err.split("\n") if " error " in l]
        check(len(errors) <= 6, "an error flood while the disk was full (%d lines):\n%s" %
              (len(errors), "\n".join(errors[:30])))

        # Every record exactly once, in order, in the log and in the file.
        expect = ["%08d" % i for i in range(1, N + 1)]
        r = spoolt.run(["read", "app", "-c", cfg, "--format", "%v\\n"], timeout=120)
        check(r.returncode == 0, "spool read failed: %s" % r.stderr[-2000:])
        got = [v[:8].decode() for v in r.stdout.split(b"\n")[:-1]]
        check(got == expect, "the log differs: %d records (expected %d), first difference at "
              "%s" % (len(got), N, next((i for i, (a, b) in enumerate(zip(got, expect))
                                         if a != b), min(len(got), N))))
        outv = [v[:8].decode() for v in spoolt.read_lines(out)]
        check(outv == expect, "the file output differs: %d records (expected %d)" %
              (len(outv), N))
    finally:
        if s is not None:
            s.kill()
        subprocess.run(["umount", "-l", mnt])


t.main()
