"""The http input answers as soon as a batch is durable (issue 18, fleet scale).

spool-test-requires: http

A worker resumes the suspended connection once its batch is durable; the
server thread must send the answer then, not at its next timeout. Before
that was fixed every answer waited for the server thread's next deadline
sweep (200 ms): an agent with one request in flight (per partition) got at
most ~5 acknowledgements a second, whatever the batch size, and a fleet of
1,000 agents saw p50 acknowledgement latencies of 200 ms.

sequential_acks_prompt: 30 requests one after the other on one kept-alive
connection to an aggregator whose topic does not fsync (durability costs
nothing here): the median answer time must be far below the 200 ms tick
(it was ~200 ms for every request: the client sends as soon as it has an
answer, so each request starts right after a tick and waits for the next).
The bound (100 ms) is half the tick, so a slow or sanitized build passes
and the old behaviour cannot.
"""
import http.client
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
import test_http_e2e as e2e  # noqa: E402

t = spoolt.Suite(__file__)


@t.case
def sequential_acks_prompt(tmp):
    port = spoolt.free_port()
    cfg = os.path.join(tmp, "agg.yaml")
    spoolt.write(cfg, """
service:
  data_dir: %s/data
  log_level: info
%stopics:
  logs: {partitions: 1, fsync: never}
inputs:
  - {type: http, name: ingest, topic: logs, listen: "127.0.0.1:%d"}
outputs: []
""" % (tmp, e2e.SERVICE_EXTRA, port))
    agg = spoolt.Spool(cfg)
    try:
        agg.wait_running()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = []
        for i in range(30):
            body = ("".join('{"value":"line %d.%d"}\n' % (i, j) for j in range(10))).encode()
            t0 = time.monotonic()
            conn.request("POST", "/v1/batches", body=body,
                         headers={"Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            text = r.read().decode()
            times.append(time.monotonic() - t0)
            check(r.status == 200, "request %d: HTTP %d %s" % (i, r.status, text))
            check(text.startswith("ok 10 records"), "request %d: %r" % (i, text))
        conn.close()
        med = statistics.median(times)
        print("  answer times: median %.1f ms, max %.1f ms" % (med * 1000, max(times) * 1000))
        check(med < 0.100, "median answer time %.0f ms: answers wait for the server thread's "
              "next timeout instead of being sent when the batch is durable" % (med * 1000))
    finally:
        check(agg.terminate() == 0, "aggregator exit status")


if __name__ == "__main__":
    t.main()
