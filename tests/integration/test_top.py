"""`spool top` in a real terminal (tmux, Debian package `tmux`) against a running
spool with traffic (a tail input with a dropping filter, a file output):

- the screen shows a row per input, processor, drop reason, output and topic,
  and the rates move between two captures; keys change the sort; a resize
  redraws at the new size; `q` and
  Ctrl-C exit with status 0 and the terminal is restored (normal screen,
  canonical mode and echo back on);
- a spool that is not reachable shows "unreachable since ...", and top picks
  it up once it starts;
- --once prints one text snapshot; --once against nothing exits 1;
- an output whose destination is down shows FAILING and /health's reason.

spool-test-requires: tail, socket
"""
import os
import re
import shutil
import subprocess
import threading

import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)

TIMEOUT = 120 if spoolt.SANITIZE else 60


class Tmux:
    """A private tmux server (its own socket) running one command in a 160x40 pane."""

    count = 0

    def __init__(self, tmp, command):
        check(shutil.which("tmux") is not None, "tmux not found: install the Debian package `tmux`")
        # A socket of its own per server: a killed server may still hold the
        # previous one for a moment.
        Tmux.count += 1
        self.sock = os.path.join(tmp, "tmux%d.sock" % Tmux.count)
        # After top exits the pane shows its status and the terminal's mode,
        # then waits (cat) so the screen can still be captured.
        script = os.path.join(tmp, "pane.sh")
        # The shell survives a Ctrl-C as an interactive one would (a trap
        # with a command: top itself gets the default disposition).
        spoolt.write(script, "trap 'echo' INT\n%s\necho TOP-EXITED rc=$?\nstty -a | tr ' ;' '\\n\\n' | "
                     "grep -E '^-?(icanon|echo)$' | tr '\\n' ' '; echo\nexec cat\n" % command)
        self.tmux("new-session", "-d", "-x", "160", "-y", "40", "sh " + script)

    def tmux(self, *args):
        r = subprocess.run(["tmux", "-S", self.sock] + list(args), capture_output=True, timeout=30)
        check(r.returncode == 0, "tmux %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
        return r.stdout.decode("utf-8", "replace")

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "0")

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "0", *keys)

    def wait_screen(self, pred, what):
        def ok():
            s = self.screen()
            return s if pred(s) else None
        try:
            return wait_for(ok, TIMEOUT, what=what)
        except spoolt.Failure:
            raise spoolt.Failure("%s; the screen:\n%s" % (what, self.screen()))

    def close(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=30)


class Feeder:
    """Appends lines to a tailed file in bursts until stopped (bounded): a
    changing load so the rates on the screen move."""

    def __init__(self, path, max_bursts=20000):
        self.path = path
        self.stop = threading.Event()
        self.max_bursts = max_bursts
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        n = 0
        with open(self.path, "a") as f:
            for burst in range(self.max_bursts):
                if self.stop.is_set():
                    break
                size = 50 + (burst * 37) % 400  # varies burst to burst
                lines = []
                for _ in range(size):
                    n += 1
                    lines.append("line %d\n" % n)
                lines.append("GET /health %d\n" % burst)  # dropped by the filter
                f.write("".join(lines))
                f.flush()
                self.stop.wait(0.02)  # pacing the load, not synchronisation

    def close(self):
        self.stop.set()
        self.th.join(30)


def config(tmp, port):
    return spoolt.write(os.path.join(tmp, "spool.yaml"), """
service:
  data_dir: %s/data
  http:
    listen: 127.0.0.1:%d
topics:
  app:
    partitions: 2
inputs:
  - type: tail
    name: app
    topic: app
    paths: [%s/app.log]
    read_from: beginning
    processors:
      - type: filter
        name: nohealth
        drop_when: 'value =~ "GET /health"'
outputs:
  - type: file
    name: copy
    topics: [app]
    path: %s/out.txt
    format: raw
""" % (tmp, port, tmp, tmp))


def row(screen, kind, name):
    """The fields of the row `kind name` on the screen, or None."""
    for line in screen.splitlines():
        f = line.split()
        if len(f) >= 11 and f[0] == kind and f[1] == name:
            return f
    return None


def rate(screen, kind, name, col=3):
    """IN/s (col 3) or OUT/s (col 4) of a row as a float; None if absent or '-'."""
    f = row(screen, kind, name)
    if not f or f[col] == "-":
        return None
    m = re.match(r"^([0-9.]+)([kMGT]?)$", f[col])
    check(m is not None, "unparseable rate %r in %r" % (f[col], f))
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]


def start_spool(tmp, port):
    spoolt.write(os.path.join(tmp, "app.log"), "")
    s = spoolt.Spool(config(tmp, port))
    s.wait_running(TIMEOUT)
    return s


def check_restored(tm, what):
    screen = tm.wait_screen(lambda s: "TOP-EXITED" in s, "top to exit after " + what)
    check("TOP-EXITED rc=0" in screen, "top's exit status after %s: %s" % (what, screen))
    check("KIND" not in screen and "spool top -" not in screen,
          "top's screen still shown after %s (alternate screen not left):\n%s" % (what, screen))
    modes = tm.wait_screen(lambda s: "icanon" in s, "the terminal's modes")
    check(re.search(r"(^|\s)icanon(\s|$)", modes) and re.search(r"(^|\s)echo(\s|$)", modes),
          "terminal not restored after %s (icanon/echo off):\n%s" % (what, modes))


@t.case
def live_rows_rates_keys_quit(tmp):
    port = spoolt.free_port()
    s = start_spool(tmp, port)
    feeder = Feeder(os.path.join(tmp, "app.log"))
    tm = Tmux(tmp, "%s top -c %s" % (spoolt.BIN, os.path.join(tmp, "spool.yaml")))
    try:
        def rows_with_rates(sc):
            return (all(row(sc, k, n) for k, n in [("input", "app"), ("processor", "app.nohealth"),
                                                   ("drop", "app.nohealth"), ("output", "copy"),
                                                   ("topic", "app")])
                    and "health: ok" in sc and (rate(sc, "input", "app") or 0) > 0
                    and (rate(sc, "output", "copy", 4) or 0) > 0)
        first = tm.wait_screen(rows_with_rates, "every row with a rate above 0")
        check(row(first, "drop", "app.nohealth")[2] == "reason=filter",
              "drop row: %s" % row(first, "drop", "app.nohealth"))
        check("KIND" in first and "LAG" in first and "DEAD" in first and "HEALTH" in first,
              "column header missing:\n" + first)
        a = rate(first, "input", "app")
        tm.wait_screen(lambda sc: rate(sc, "input", "app") not in (None, a),
                       "the input's IN/s to move from %s" % a)
        tm.keys("l")
        tm.wait_screen(lambda sc: "sort: lag" in sc, "sort: lag after key l")
        tm.keys("n")
        tm.wait_screen(lambda sc: "sort: name" in sc, "sort: name after key n")
        # A resize (SIGWINCH) redraws at the new size: lines cut to the
        # width, the rows that do not fit counted.
        tm.tmux("resize-window", "-t", "0", "-x", "70", "-y", "8")
        tm.wait_screen(lambda sc: "more rows" in sc and "KIND" in sc
                       and max(len(x) for x in sc.splitlines()) <= 70,
                       "the screen redrawn at 70x8")
        tm.tmux("resize-window", "-t", "0", "-x", "160", "-y", "40")
        tm.wait_screen(lambda sc: "more rows" not in sc and row(sc, "topic", "app"),
                       "the screen redrawn at 160x40")
        tm.keys("q")
        check_restored(tm, "q")
    finally:
        tm.close()
        feeder.close()
        s.terminate()

    # Ctrl-C exits as cleanly (spool is not needed for that).
    tm = Tmux(tmp, "%s top --url http://127.0.0.1:%d" % (spoolt.BIN, spoolt.free_port()))
    try:
        tm.wait_screen(lambda sc: "spool top -" in sc, "top's screen")
        tm.keys("C-c")
        check_restored(tm, "Ctrl-C")
    finally:
        tm.close()


@t.case
def unreachable_then_up(tmp):
    port = spoolt.free_port()
    tm = Tmux(tmp, "%s top --url http://127.0.0.1:%d/" % (spoolt.BIN, port))
    s = None
    try:
        sc = tm.wait_screen(lambda x: "unreachable since" in x, "the unreachable message")
        check("127.0.0.1:%d" % port in sc, "the URL is not named:\n" + sc)
        s = start_spool(tmp, port)
        tm.wait_screen(lambda x: "unreachable" not in x and "health: ok" in x
                       and row(x, "output", "copy") is not None, "top to find spool once it runs")
        tm.keys("q")
        check_restored(tm, "q")
    finally:
        tm.close()
        if s:
            s.terminate()


@t.case
def once_text_and_unreachable_status(tmp):
    port = spoolt.free_port()
    r = spoolt.run(["top", "--once", "--url", "http://127.0.0.1:%d" % port, "--interval", "0.1"])
    err = r.stderr.decode()
    check(r.returncode == 1 and "unreachable" in err, "--once, nothing there: %d %s" % (r.returncode, err))
    s = start_spool(tmp, port)
    try:
        spoolt.write(os.path.join(tmp, "app.log"), "a\nGET /health\nb\n", "a")
        wait_for(lambda: len(spoolt.read_lines(os.path.join(tmp, "out.txt"))) >= 2, TIMEOUT,
                 what="2 lines delivered")

        def snapshot():
            r = spoolt.run(["top", "--once", "-c", os.path.join(tmp, "spool.yaml"),
                            "--interval", "0.2"])
            check(r.returncode == 0, "--once: %d %s" % (r.returncode, r.stderr.decode()))
            out = r.stdout.decode()
            f = row(out, "output", "copy")
            return out if f and f[5] == "0" else None  # the cursor saved after the write
        out = wait_for(snapshot, TIMEOUT, what="output copy at lag 0")
        check("\033" not in out, "--once printed escape sequences:\n" + out)
        drop = row(out, "drop", "app.nohealth")
        check(drop is not None and drop[8] == "1", "drop row (1 dropped): %s\n%s" % (drop, out))
        outp = row(out, "output", "copy")
        check(outp is not None and outp[5] == "0", "output row, lag 0: %s\n%s" % (outp, out))
        check(row(out, "topic", "app") is not None and "health: ok" in out, out)
        bad = spoolt.run(["top", "--url", "ftp://x:1", "--once"])
        check(bad.returncode == 2 and b"http://" in bad.stderr, "ftp URL: %r" % bad.stderr)
    finally:
        s.terminate()


@t.case
def failing_output_named(tmp):
    """An output whose destination is down: its row says FAILING, the health
    line gives /health's reason, and its errors or retries count."""
    port, dead_port = spoolt.free_port(), spoolt.free_port()
    cfg = config(tmp, port)
    with open(cfg) as f:
        text = f.read()
    file_output = """  - type: file
    name: copy
    topics: [app]
    path: %s/out.txt
    format: raw
""" % tmp
    check(file_output in text, "config() changed: " + text)
    spoolt.write(cfg, text.replace(file_output, """  - type: tcp
    name: down
    topics: [app]
    url: tcp://127.0.0.1:%d
    format: raw
""" % dead_port))
    spoolt.write(os.path.join(tmp, "app.log"), "a\nb\n")
    s = spoolt.Spool(cfg)
    try:
        s.wait_running(TIMEOUT)

        def snapshot():
            r = spoolt.run(["top", "--once", "-c", cfg, "--interval", "0.1"])
            check(r.returncode == 0, "--once: %d %s" % (r.returncode, r.stderr.decode()))
            out = r.stdout.decode()
            f = row(out, "output", "down")
            return out if f and f[-1] == "FAILING" else None
        out = wait_for(snapshot, TIMEOUT, what="output down shown FAILING")
        check("health: output down: destination failing" in out, "health line:\n" + out)
        f = row(out, "output", "down")
        check(f[2] == "tcp" and f[5] == "2", "output row (tcp, lag 2): %s" % f)
        check(int(f[6]) + int(f[7]) > 0, "no errors nor retries counted: %s" % f)
    finally:
        s.terminate()


if __name__ == "__main__":
    t.main()
