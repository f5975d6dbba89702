"""benchlib: process, sink and measurement helpers for bench/run.

Everything here runs on 127.0.0.1 under one work folder. Processes are started
by the harness and ended by their pid only. CPU time is user+sys from
/proc/<pid>/stat (all threads) sampled while the process runs, or from wait4()'s
rusage once it has exited; peak RSS is VmHWM from /proc/<pid>/status, or
ru_maxrss after exit.
"""
import json
import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)


def log(msg):
    print("bench: " + msg, flush=True)


def build_tools(bindir):
    """Compiles bench/sinks/*.c (gen, tcp_sink, http_sink) into bindir when stale."""
    os.makedirs(bindir, exist_ok=True)
    src = os.path.join(BENCH, "sinks")
    out = {}
    for name in ("gen", "tcp_sink", "http_sink"):
        c = os.path.join(src, name + ".c")
        exe = os.path.join(bindir, name)
        deps = [c, os.path.join(src, "sinkcommon.h")]
        if not os.path.exists(exe) or os.path.getmtime(exe) < max(os.path.getmtime(d)
                                                                   for d in deps):
            cc = os.environ.get("CC", "cc")
            subprocess.run([cc, "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wshadow",
                            "-o", exe, c], check=True)
        out[name] = exe
    return out


def proc_cpu(pid):
    """user+sys seconds of a live process (all threads), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid):
    """{VmHWM, RssAnon, RssFile, Threads} of a live process (bytes; count), or None."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(line.split()[1]) * 1024
                elif k == "Threads":
                    out[k] = int(line.split()[1])
    except OSError:
        return None
    return out or None


def proc_hwm(pid):
    """VmHWM (peak RSS) in bytes of a live process, or None."""
    m = proc_mem(pid)
    return m.get("VmHWM") if m else None


def listening(port):
    """True when something listens on 127.0.0.1:port (TCP), from /proc/net/tcp."""
    want = "%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1].endswith(":" + want) and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    """A child process measured by pid: CPU and peak RSS, sampled and at exit."""

    def __init__(self, argv, cwd=None, stdout=None, stderr=None, env=None):
        self.argv = argv
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=stderr, env=env,
                                  start_new_session=True)
        self.pid = self.p.pid
        self.t_start = time.monotonic()
        self.cpu = 0.0
        self.hwm = 0
        self.anon = self.file = self.threads = 0
        self.exited = None  # exit status once reaped
        self.rusage = None

    def sample(self):
        if self.exited is not None:
            return
        c = proc_cpu(self.pid)
        m = proc_mem(self.pid)
        if c is not None:
            self.cpu = max(self.cpu, c)
        if m:
            self.hwm = max(self.hwm, m.get("VmHWM", 0))
            # largest anonymous / file-backed resident parts seen (what VmHWM is made of)
            self.anon = max(self.anon, m.get("RssAnon", 0))
            self.file = max(self.file, m.get("RssFile", 0) + m.get("RssShmem", 0))
            self.threads = max(self.threads, m.get("Threads", 0))
        self.poll()

    def poll(self):
        if self.exited is not None:
            return self.exited
        try:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.exited = -1
            return self.exited
        if pid == 0:
            return None
        self._reaped(status, ru)
        return self.exited

    def _reaped(self, status, ru):
        self.exited = os.waitstatus_to_exitcode(status)
        self.p.returncode = self.exited
        self.rusage = ru
        self.cpu = max(self.cpu, ru.ru_utime + ru.ru_stime)
        if self.hwm == 0:
            # only when /proc was never sampled: ru_maxrss also counts the forked
            # harness's pages before exec(), VmHWM does not
            self.hwm = ru.ru_maxrss * 1024

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Signals the process (by pid) and reaps it; SIGKILL after timeout."""
        if self.poll() is not None:
            return self.exited
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 10
            time.sleep(0.02)  # pacing of the reap poll (SIGKILL at the deadline); not a wait
        return self.exited

    def kill9(self):
        self.sample()
        return self.stop(signal.SIGKILL, timeout=10)


class Sink:
    """A tcp_sink or http_sink process and its stats file."""

    def __init__(self, exe, max_seq, statsfile, logfile):
        self.statsfile = statsfile
        with open(logfile, "wb") as lf:
            self.proc = Proc([exe, "-p", "0", "-n", str(max_seq), "-s", statsfile],
                             stdout=subprocess.PIPE, stderr=lf)
        line = self.proc.p.stdout.readline().decode()
        if not line.startswith("port "):
            raise RuntimeError("sink did not start: %r" % line)
        self.port = int(line.split()[1])

    def stats(self):
        d = {}
        try:
            with open(self.statsfile) as f:
                for line in f:
                    k, v = line.split()
                    d[k] = float(v) if "." in v else int(v)
        except (OSError, ValueError):
            pass
        for k in ("lines", "uniq", "dup", "bad", "bytes", "conns", "requests"):
            d.setdefault(k, 0)
        for k in ("t_first", "t_last_new", "t_last"):
            d.setdefault(k, 0.0)
        return d

    def close(self):
        self.proc.sample()
        self.proc.stop()
        return self.stats()


def fill(template, values):
    for k, v in values.items():
        template = template.replace("@@%s@@" % k, str(v))
    if "@@" in template:
        raise ValueError("unfilled placeholder in: " + template[template.index("@@"):][:40])
    return template


def load_agents(names=None):
    """Agent folders under bench/agents: {name: dict from agent.json + 'dir'}."""
    root = os.path.join(BENCH, "agents")
    out = {}
    for name in sorted(os.listdir(root)):
        j = os.path.join(root, name, "agent.json")
        if not os.path.exists(j):
            continue
        if names and name not in names:
            continue
        with open(j) as f:
            a = json.load(f)
        a["name"] = name
        a["dir"] = os.path.join(root, name)
        out[name] = a
    return out


def children(pid):
    """pids of the direct children of pid."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def machine():
    cores = os.cpu_count()
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": cores, "mem_gib": mem / 2**30, "kernel": os.uname().release,
            "cpu": model}
