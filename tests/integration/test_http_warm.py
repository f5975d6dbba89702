"""The http input keeps its workers' buffers warm between requests.

A steady stream of native requests (gzip, ~1 MiB decompressed each, the
size of the http output's default chunk) must not fault in fresh memory
for every request: the worker's decompression buffer is kept (and charged
to memory_limit) instead of being freed and faulted in again. Measured
with the aggregator's minor page faults over 20 requests after a warm-up;
before the buffers were kept, each request faulted in its whole
decompressed body again (one fault per 4 KiB page, ~270 per request here,
on top of what the core faults in for the batch).

The bound is on the decompressed body alone (a quarter of its pages), so
it does not depend on the machine's speed; it does depend on the kernel
faulting 4 KiB pages, hence transparent huge pages for the process are
checked off (THP `always` would fault 2 MiB at a time either way: the test
then only checks the requests succeed).
"""
# spool-test-requires: http
import gzip
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
import test_http_errors as he  # noqa: E402

t = spoolt.Suite(__file__)

RECORDS = 8000
VALUE = 120
WARMUP = 5
MEASURED = 20


def minor_faults(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def thp_always():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@t.case
def decompression_buffer_kept_warm(tmp):
    port = spoolt.free_port()
    d = os.path.join(tmp, "agg")
    os.makedirs(d)
    cfg = spoolt.write(os.path.join(d, "spool.yaml"), """
service:
  data_dir: %s/data
  log_level: info
topics:
  logs: {partitions: 1, fsync: never}
inputs:
  - type: http
    name: ingest
    topic: logs
    listen: 127.0.0.1:%d
    workers: 1
outputs: []
""" % (d, port))
    recs = [(None, b"%08d " % i + b"x" * (VALUE - 9), [(b"host", b"h1")])
            for i in range(RECORDS)]
    plain = he.encode_batch(0, recs)
    body = gzip.compress(plain, 1)
    headers = dict(he.NATIVE, **{"Content-Encoding": "gzip"})
    url = "http://127.0.0.1:%d/v1/batches" % port
    agg = spoolt.Spool(cfg)
    try:
        he.wait_port(port)
        for _ in range(WARMUP):
            st, text, _ = he.post(url, body, headers)
            check(st == 200, "warm-up request: %s %s" % (st, text))
        before = minor_faults(agg.proc.pid)
        for _ in range(MEASURED):
            st, text, _ = he.post(url, body, headers)
            check(st == 200, "request: %s %s" % (st, text))
        per_request = (minor_faults(agg.proc.pid) - before) / float(MEASURED)
        pages = len(plain) / 4096.0
        print("  %.0f minor faults per request (decompressed body: %.0f pages)"
              % (per_request, pages), flush=True)
        if not thp_always():
            check(per_request < pages / 4,
                  "%.0f page faults per request: the worker's buffers are faulted in again "
                  "for every request (decompressed body %.0f pages)" % (per_request, pages))
    finally:
        check(agg.terminate() == 0, "aggregator exit code")


if __name__ == "__main__":
    t.main()
