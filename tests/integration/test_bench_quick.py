"""test_bench_quick: `bench/run --quick` as a smoke test of spool's delivery promises.

This runs `bench/run --quick --agents spool --no-install`: every workload (W1..W6)
on a small input (100,000 lines), one round, spool only (about half a minute; the
peers and the baseline add about two minutes and only matter for the figures, so CI
leaves them out and cannot fail or time out because of them). bench/run exits 1
only if spool lost a line (W1, W2, W5 rename rotation, W6 kill -9) or duplicated one
(W1, W2, W5). It never fails on speed. First, the sink's own
counting is checked on a stream with a known gap and a known duplicate, so a
sink that cannot see a loss does not make the smoke test pass.

Not run in the sanitizer builds (SPOOL_SANITIZE, SPOOL_TSAN): a benchmark of an
instrumented binary measures nothing and takes several times longer; there
tests/CMakeLists.txt registers only the sink's self-check, and a run by hand
reports the benchmark case as skipped.
"""
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402

BENCH = os.path.join(spoolt.SRC, "bench")
sys.path.insert(0, os.path.join(BENCH, "lib"))
import benchlib  # noqa: E402

t = spoolt.Suite(__file__)


@t.case
def sink_sees_loss_and_duplicates(tmp):
    tools = benchlib.build_tools(os.path.join(tmp, "bin"))
    sink = benchlib.Sink(tools["tcp_sink"], 10, os.path.join(tmp, "stats"),
                         os.path.join(tmp, "sink.log"))
    try:
        s = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
        # 1..10 without 4 and 7, 5 twice, one line without a number, last line unterminated
        body = b"".join(b"x seq=%010d y\n" % i for i in (1, 2, 3, 5, 5, 6, 8, 9))
        s.sendall(body + b"no number here\nlast seq=0000000010")
        s.close()
        st = spoolt.wait_for(lambda: (lambda d: d if d["lines"] >= 10 else None)(sink.stats()),
                             timeout=20, what="sink stats")
    finally:
        sink.close()
    spoolt.check(st["uniq"] == 8 and st["dup"] == 1 and st["bad"] == 1,
                 "sink counted %r" % st)
    with open(os.path.join(tmp, "stats.missing")) as f:
        spoolt.check(f.read().split() == ["4-4", "7-7"], "missing ranges wrong")


@t.case
def quick_bench_spool_keeps_its_promises(tmp):
    if spoolt.SANITIZE:
        spoolt.skip("sanitizer build: a benchmark of an instrumented binary measures nothing")
    env = dict(os.environ, SPOOL_BIN=spoolt.BIN)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run"), "--quick", "--no-install",
                        "--agents", "spool", "--workdir", os.path.join(tmp, "work")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=170, env=env)
    out = r.stdout.decode(errors="replace")
    print(out)
    print("     bench/run --quick took %.0fs" % (time.monotonic() - t0))
    spoolt.check(r.returncode == 0, "bench/run --quick exit %d" % r.returncode)
    spoolt.check("OK: spool lost and duplicated nothing" in out, "no verdict line")
    for wl in ("W1", "W2", "W5", "W6"):
        spoolt.check("r0 %s spool" % wl in out, "spool did not run %s" % wl)


t.main()
