"""Failover between aggregators (issue 17): an agent ships a stream of
numbered lines with the `http` output to `urls: [A, B]`. A (preferred) is
killed -9 mid-stream: the agent fails over to B and goes on; A stays down
10 s and until B took a good share of the stream, then comes back, and the agent
returns to A (its GET /health probe). Every record is in A's or B's log
(read back with `spool read`): 0 lost. A record can be in both (sent to A,
acknowledgement lost in the kill, resent to B, which has no record of the
agent's offsets): those duplicates are counted and printed.

spool-test-requires: http, tail
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
from test_http_e2e import metric_sum, stop_all  # noqa: E402
from test_exactly_once import (Writer, agent_config, aggregator_config, agg_records,  # noqa: E402
                               read_log, SLOW)

N = 20000 if spoolt.SANITIZE else 200000
DOWN = 10.0  # seconds A stays down at least

t = spoolt.Suite(__file__)


@t.case
def preferred_aggregator_down_then_back(tmp):
    pa, pb = spoolt.free_port(), spoolt.free_port()
    apia, apib, apig = spoolt.free_port(), spoolt.free_port(), spoolt.free_port()
    outa, outb = os.path.join(tmp, "a.out"), os.path.join(tmp, "b.out")
    cfga = aggregator_config(tmp, "a", pa, apia, outa)
    cfgb = aggregator_config(tmp, "b", pb, apib, outb)
    logdir = os.path.join(tmp, "logs")
    cfg = agent_config(tmp, "agent", logdir,
                       "urls: [http://127.0.0.1:%d/v1/batches, http://127.0.0.1:%d/v1/batches]"
                       % (pa, pb),
                       extra="    failover_after: 2\n    failback_interval: 300ms\n")
    spoolt.write(cfg, open(cfg).read().replace(
        "  log_level: info\n", "  log_level: info\n  http: { listen: 127.0.0.1:%d }\n" % apig))
    # The writer parks at 3/4 of the stream until A is back: the rest of the
    # stream is what brings the agent back to A (it probes while it sends).
    w = Writer(logdir, N, gate_at=N * 3 // 4, batch=1000, pause=0.05)
    a = spoolt.Spool(cfga)
    b = spoolt.Spool(cfgb)
    agent = spoolt.Spool(cfg)
    try:
        w.start()
        spoolt.wait_for(lambda: agg_records(apia) >= N // 10, timeout=60 * SLOW, interval=0.02,
                        what="A to take %d records" % (N // 10))
        a.kill()
        killed_at = time.monotonic()
        print("     killed -9 A (preferred)")
        spoolt.wait_for(lambda: agg_records(apib) > 0, timeout=60 * SLOW,
                        what="the agent to fail over to B")
        # A stays down for at least DOWN seconds (the scenario; a lower
        # bound, not synchronization) and until B took a good share of the
        # stream (the condition).
        spoolt.wait_for(lambda: agg_records(apib) >= N // 4 and
                        time.monotonic() - killed_at >= DOWN, timeout=120 * SLOW, interval=0.05,
                        what="B to take %d records" % (N // 4))
        down = time.monotonic() - killed_at
        a = spoolt.Spool(cfga)
        a.wait_log("listening on", timeout=60 * SLOW)
        w.release()
        # The agent probes A while it sends: the rest of the stream brings it
        # back. Should the stream end first (a slow machine), more lines are
        # added until it is back (numbered after N, counted in `total`).
        total = [N]

        def poke():
            if w.is_alive():
                return
            spoolt.write(w.path, "".join("%d\n" % i for i in range(total[0] + 1, total[0] + 11)),
                         mode="a")
            total[0] += 10
        spoolt.poke_until(poke, lambda: agg_records(apia) > 0, timeout=60 * SLOW, every=0.5,
                          what="the agent to return to A")

        def all_there():
            n = set()
            for path in (outa, outb):
                for line in spoolt.read_lines(path):
                    if line.isdigit():
                        n.add(int(line))
            return len(n) >= total[0]
        spoolt.wait_for(all_there, timeout=120 * SLOW, interval=0.5, what="every record")
        failovers = metric_sum(apig, "spool_http_failovers_total", name="ship")
        dup_a = metric_sum(apia, "spool_http_duplicates_total", name="ingest")
        dup_b = metric_sum(apib, "spool_http_duplicates_total", name="ingest")
        gaps_a = metric_sum(apia, "spool_http_gaps_total", name="ingest")
        stop_all(agent, a, b)
        va, vb = read_log(cfga), read_log(cfgb)
        seen = {}
        for v in va + vb:
            seen[v] = seen.get(v, 0) + 1
        lost = sum(1 for i in range(1, total[0] + 1) if i not in seen)
        dup = sum(c - 1 for c in seen.values())
        within = (len(va) - len(set(va))) + (len(vb) - len(set(vb)))
        print("     %d records; A down %.1f s; A %d records, B %d: %d lost, %d in both logs (across the failover), %d "
              "duplicated within one log; failovers %s; requests acknowledged as duplicates: "
              "A %s, B %s; gaps seen by A on return: %s"
              % (total[0], down, len(va), len(vb), lost, dup - within, within, failovers,
                 dup_a, dup_b, gaps_a))
        check(lost == 0, "%d records lost" % lost)
        check(within == 0, "%d duplicates within one aggregator's log" % within)
        check(failovers and failovers >= 1, "no failover counted")
    finally:
        w.release()
        agent.kill()
        a.kill()
        b.kill()


if __name__ == "__main__":
    t.main()
