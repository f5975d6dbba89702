"""The http output's destination formats (elasticsearch, loki, otlp) end to
end: a real spool (http input -> topic -> http output) against small Python
servers on 127.0.0.1 that answer with the published response shapes. No
Elasticsearch, Loki or OpenTelemetry collector is packaged here: these check
the wire format and the handling of the documented answers, not a live
server.

- elasticsearch: the bulk body (action + document lines, _index from the
  template and the record's UTC date, @timestamp); one item 429
  (es_rejected_execution_exception) -> the chunk is resent, and what was
  created meanwhile answers 409 -> each record is created exactly once;
  items 400 (mapper_parsing_exception) -> exactly those records reach the
  dead-letter topic with the item's error as the reason (read back with
  `spool read`).
- loki: streams by label set, entries sorted by time; a 400 naming one
  stream -> that stream's records in the dead-letter topic, the rest
  delivered, nothing resent.
- otlp: resource attributes, severity numbers; a 503 is retried, a
  partialSuccess is logged as a warning.
- spool check: bad template, bad strftime, bad index name, bad label name,
  an option of another format, an unknown format: each at file:line:col.

spool-test-requires: http
spool-test-labels: threaded (the sender thread marks records the runner dead-letters)
"""
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402
import test_http_e2e as e2e  # noqa: E402
import test_http_errors as he  # noqa: E402

SLOW = e2e.SLOW
T0 = 1704164645678  # 2024-01-02T03:04:05.678Z

t = spoolt.Suite(__file__)


def config(tmp, in_port, url, output_extra):
    d = os.path.join(tmp, "spool")
    os.makedirs(d, exist_ok=True)
    dead_out = os.path.join(d, "dead.out")
    cfg = spoolt.write(os.path.join(d, "spool.yaml"), """
service:
  data_dir: %(d)s/data
  log_level: info
topics:
  app:
    partitions: 1
  dead:
    partitions: 1
inputs:
  - type: http
    topic: app
    listen: 127.0.0.1:%(port)d
outputs:
  - type: http
    name: dest
    topics: [app]
    url: %(url)s
    retry_backoff: 10ms
    retry_backoff_max: 50ms
    dead_letter_topic: dead
%(extra)s
  - type: file
    name: dead-file
    topics: [dead]
    path: %(dead)s
    format: json
""" % {"d": d, "port": in_port, "url": url, "extra": output_extra, "dead": dead_out})
    return cfg, dead_out


def send(port, recs):
    """Posts records (dicts of the JSON record shape) as ndjson to the input."""
    body = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    he.wait_port(port)
    st, resp, _ = he.post("http://127.0.0.1:%d/v1/batches" % port, body, he.NDJSON)
    check(st == 200, "ingest answered %s %s" % (st, resp))


def rec(value, ts, **headers):
    return {"key": None, "value": value, "headers": headers, "timestamp": ts}


def read_dead(cfg):
    """The dead-letter topic through `spool read`: (value, reason) pairs."""
    r = spoolt.run(["read", "dead", "-c", cfg, "--format", "%v\\t%h\\n"])
    check(r.returncode == 0, "spool read: %s" % r.stderr)
    out = []
    for line in r.stdout.decode().splitlines():
        v, h = line.split("\t", 1)
        reason = h.split("dead_letter.reason=", 1)[1].split(",dead_letter.output=", 1)[0]
        out.append((v, reason))
    return out


def run(cfg, in_port, recs, until, what):
    sp = spoolt.Spool(cfg)
    try:
        sp.wait_running()
        send(in_port, recs)
        spoolt.wait_for(until, timeout=30 * SLOW, what=what)
        rc = sp.terminate()
        check(rc == 0, "spool exit %s: %s" % (rc, sp.stderr()[-2000:]))
        return sp
    finally:
        sp.kill()


@t.case
def elasticsearch_bulk_partial_failures(tmp):
    lock = threading.Lock()
    created = {}  # _id -> times created
    docs = {}  # _id -> (index, doc)
    seen_flaky = []

    def decide(i, headers, body):
        lines = body.decode().split("\n")
        check(lines[-1] == "", "bulk body does not end in a newline")
        items = []
        with lock:
            for a, d in zip(lines[0:-1:2], lines[1:-1:2]):
                meta = json.loads(a)["create"]
                doc = json.loads(d)
                _id = meta["_id"]
                if doc["value"].startswith("bad"):
                    items.append({"create": {"_index": meta["_index"], "_id": _id, "status": 400,
                                             "error": {"type": "mapper_parsing_exception",
                                                       "reason": "failed to parse field [n] of "
                                                       "type [long]"}}})
                elif doc["value"].startswith("flaky") and not seen_flaky:
                    seen_flaky.append(_id)
                    items.append({"create": {"_index": meta["_index"], "_id": _id, "status": 429,
                                             "error": {"type": "es_rejected_execution_exception",
                                                       "reason": "rejected execution"}}})
                elif _id in created:
                    items.append({"create": {"_index": meta["_index"], "_id": _id, "status": 409,
                                             "error": {"type": "version_conflict_engine_exception",
                                                       "reason": "document already exists"}}})
                else:
                    created[_id] = created.get(_id, 0) + 1
                    docs[_id] = (meta["_index"], doc)
                    items.append({"create": {"_index": meta["_index"], "_id": _id,
                                             "result": "created", "status": 201}})
        errors = any(it["create"]["status"] >= 300 for it in items)
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"took": 3, "errors": errors, "items": items}).encode()

    ep = he.Endpoint(decide=decide)
    in_port = spoolt.free_port()
    try:
        cfg, dead_out = config(tmp, in_port, "http://127.0.0.1:%d/_bulk" % ep.port,
                               "    format: elasticsearch\n"
                               "    index: \"logs-{{ host }}-%Y.%m.%d\"\n")
        recs = [rec("ok-1", T0, host="web1", n="1"), rec("bad-1", T0 + 1, host="web1", n="x"),
                rec("flaky-1", T0 + 2, host="web2", n="2"),
                rec("ok-2", T0 + 3, host="web2", **{"http.status": "200"}),
                rec("bad-2", T0 + 4, host="web1", n="y"),
                rec("ok-3", 1704240000000, host="web1", n="3")]

        def done():
            with lock:
                n = len(created)
            return n == 4 and len(spoolt.read_lines(dead_out)) >= 2
        run(cfg, in_port, recs, done, "4 documents created and 2 dead letters")
        check(all(v == 1 for v in created.values()), "created twice: %s" % created)
        by_value = {d["value"]: (idx, d) for idx, d in docs.values()}
        check(sorted(by_value) == ["flaky-1", "ok-1", "ok-2", "ok-3"], "created %s" % by_value)
        idx, d = by_value["ok-1"]
        check(idx == "logs-web1-2024.01.02", "index %s" % idx)
        check(d["@timestamp"] == "2024-01-02T03:04:05.678Z" and d["timestamp"] == T0
              and d["host"] == "web1" and d["n"] == 1, "document %s" % d)
        check(by_value["ok-3"][0] == "logs-web1-2024.01.03", "index %s" % by_value["ok-3"][0])
        check(by_value["ok-2"][1]["http"] == {"status": 200}, "nested %s" % by_value["ok-2"][1])
        check(len(ep.requests) >= 2, "the 429 item was not retried: %d" % len(ep.requests))
        hdrs = ep.requests[0][1]
        check(hdrs.get("Content-Type") == "application/x-ndjson", "Content-Type %s" % hdrs)
        dead = read_dead(cfg)
        check([v for v, _ in dead] == ["bad-1", "bad-2"], "dead letters %s" % dead)
        for _, reason in dead:
            check(reason == "HTTP 400 mapper_parsing_exception: failed to parse field [n] of "
                  "type [long]", "reason %r" % reason)
    finally:
        ep.close()


@t.case
def loki_push_and_400(tmp):
    bodies = []
    lock = threading.Lock()

    def decide(i, headers, body):
        with lock:
            bodies.append(json.loads(body))
        if i == 0:
            return 400, {}, (b"entry with timestamp 2024-01-02 03:04:05.679 +0000 UTC ignored, "
                             b"reason: 'entry out of order' for stream: {host=\"web2\", "
                             b"job=\"spool\"},\ntotal ignored: 2 out of 5\n")
        return 204, {}, b""

    ep = he.Endpoint(decide=decide)
    in_port = spoolt.free_port()
    try:
        cfg, dead_out = config(tmp, in_port, "http://127.0.0.1:%d/loki/api/v1/push" % ep.port,
                               "    format: loki\n"
                               "    labels: {job: spool, host: \"{{ host }}\"}\n")
        recs = [rec("a3", T0 + 3, host="web1"), rec("b1", T0 + 1, host="web2"),
                rec("a1", T0 + 1, host="web1"), rec("b2", T0 + 2, host="web2"),
                rec("a2", T0 + 2, host="web1")]
        run(cfg, in_port, recs, lambda: len(spoolt.read_lines(dead_out)) >= 2,
            "2 dead letters")
        check(len(bodies) == 1, "a 400 was resent: %d requests" % len(bodies))
        streams = bodies[0]["streams"]
        check([s["stream"] for s in streams] == [{"host": "web1", "job": "spool"},
                                                 {"host": "web2", "job": "spool"}],
              "streams %s" % streams)
        check(streams[0]["values"] == [[str((T0 + k) * 1000000), "a%d" % k] for k in (1, 2, 3)],
              "entries not sorted by time: %s" % streams[0]["values"])
        check(ep.requests[0][1].get("Content-Type") == "application/json", "Content-Type")
        dead = read_dead(cfg)
        check(sorted(v for v, _ in dead) == ["b1", "b2"], "dead letters %s" % dead)
        check(all("entry out of order" in r and r.startswith("HTTP 400: ") for _, r in dead),
              "reasons %s" % dead)
    finally:
        ep.close()


@t.case
def otlp_logs_retry_and_partial_success(tmp):
    bodies = []
    lock = threading.Lock()

    def decide(i, headers, body):
        with lock:
            bodies.append(json.loads(body))
        if i == 0:
            return 503, {}, b"unavailable"
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"partialSuccess": {"rejectedLogRecords": "1",
                                "errorMessage": "1 log record had an invalid body"}}).encode()

    ep = he.Endpoint(decide=decide)
    in_port = spoolt.free_port()
    try:
        cfg, _ = config(tmp, in_port, "http://127.0.0.1:%d/v1/logs" % ep.port,
                        "    format: otlp\n"
                        "    resource: {service.name: \"{{ app }}\", host.name: \"{{ host }}\"}\n"
                        "    severity_field: level\n")
        recs = [rec("GET /", T0, app="web", host="h1", level="info", path="/"),
                rec("boom", T0 + 1, app="web", host="h1", level="err"),
                rec("tick", T0 + 2, app="cron", host="h1", level="DEBUG")]
        sp = run(cfg, in_port, recs, lambda: len(bodies) >= 2, "a retry after the 503")
        check(bodies[0] == bodies[1], "the retry sent another body")
        rl = bodies[1]["resourceLogs"]
        attrs = [{a["key"]: a["value"]["stringValue"] for a in r["resource"]["attributes"]}
                 for r in rl]
        check(attrs == [{"service.name": "web", "host.name": "h1"},
                        {"service.name": "cron", "host.name": "h1"}], "resources %s" % attrs)
        lr = rl[0]["scopeLogs"][0]["logRecords"]
        check(rl[0]["scopeLogs"][0]["scope"] == {"name": "spool"}, "scope")
        check([(r["severityNumber"], r["severityText"], r["body"]["stringValue"]) for r in lr]
              == [(9, "info", "GET /"), (17, "err", "boom")], "records %s" % lr)
        check(lr[0]["timeUnixNano"] == str(T0 * 1000000), "time %s" % lr[0])
        # The rest of the fields (the http input adds `agent`), not those of
        # the resource nor the severity field.
        la = {a["key"]: a["value"]["stringValue"] for a in lr[0]["attributes"]}
        check(la.get("path") == "/" and not {"app", "host", "level"} & set(la),
              "attributes %s" % lr[0]["attributes"])
        check(rl[1]["scopeLogs"][0]["logRecords"][0]["severityNumber"] == 5, "DEBUG -> 5")
        err = sp.stderr()
        check("rejected 1 of 3 log records" in err and "invalid body" in err,
              "no partial-success warning: %s" % err[-2000:])
    finally:
        ep.close()


@t.case
def check_validates_format_options(tmp):
    cfg = spoolt.write(os.path.join(tmp, "bad.yaml"), """service:
  data_dir: %s/data
topics:
  app:
    partitions: 1
inputs:
  - type: stdin
    topic: app
outputs:
  - type: http
    topics: [app]
    url: http://127.0.0.1:9200/_bulk
    format: elasticsearch
    index: "logs-{{ host }-%%Y"
  - type: http
    topics: [app]
    url: http://127.0.0.1:9200/_bulk
    format: elasticsearch
    index: "logs-%%Q"
  - type: http
    topics: [app]
    url: http://127.0.0.1:9200/_bulk
    format: elasticsearch
    index: "Logs-%%Y"
  - type: http
    topics: [app]
    url: http://127.0.0.1:3100/loki/api/v1/push
    format: loki
    labels: {my-label: x}
  - type: http
    topics: [app]
    url: http://127.0.0.1:4318/v1/logs
    format: otlp
    labels: {job: x}
  - type: http
    topics: [app]
    url: http://127.0.0.1:4318/v1/logs
    format: elastic
""" % tmp)
    r = spoolt.run(["check", "-c", cfg])
    err = r.stderr.decode() + r.stdout.decode()
    check(r.returncode == 2, "spool check exit %s: %s" % (r.returncode, err))
    for want in ("bad.yaml:14:12: outputs[0].index: logs-{{ host }-%Y: unclosed '{{'",
                 "bad.yaml:19:12: outputs[1].index: logs-%Q: unknown strftime conversion '%Q'",
                 "bad.yaml:24:12: outputs[2].index: Logs-%Y: an index name is lowercase",
                 "bad.yaml:29:13: outputs[3].labels: label name my-label",
                 "bad.yaml:34:13: outputs[4].labels: labels belong to format loki",
                 "bad.yaml:38:13: outputs[5].format: invalid value 'elastic'"):
        check(want in err, "missing %r in:\n%s" % (want, err))
    good = spoolt.write(os.path.join(tmp, "good.yaml"), """service:
  data_dir: %s/data
topics:
  app:
    partitions: 1
inputs:
  - type: stdin
    topic: app
outputs:
  - type: http
    topics: [app]
    url: http://127.0.0.1:9200/_bulk
    format: elasticsearch
    index: "logs-{{ host }}-%%Y.%%m.%%d"
    action: index
    id: none
  - type: http
    topics: [app]
    url: http://127.0.0.1:3100/loki/api/v1/push
    format: loki
    labels: {job: spool, host: "{{ host }}"}
    line_format: json
    structured_metadata: {trace_id: "{{ trace_id }}"}
  - type: http
    topics: [app]
    url: http://127.0.0.1:4318/v1/logs
    format: otlp
    resource: {service.name: "{{ app }}"}
    severity_field: level
""" % tmp)
    r = spoolt.run(["check", "-c", good])
    check(r.returncode == 0, "spool check of a good file: %s %s" % (r.stdout, r.stderr))


if __name__ == "__main__":
    t.main()
