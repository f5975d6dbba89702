"""Integration tests of the `parse` processor (processors/parse/) through the real binary:
JSON lines with nested objects -> parse -> `file` output (field documents) read back;
generated nginx combined lines -> parse -> per-topic counts against the test's own count,
malformed lines dead-lettered; `spool check` errors with their positions (a bad regex, a
bad time format, dead_letter without a topic)."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402

t = spoolt.Suite(__file__)


def config(tmp, processor, outputs, topics=("main",)):
    path = os.path.join(tmp, "spool.yaml")
    lines = ["service: { data_dir: %s }" % os.path.join(tmp, "data"), "topics:"]
    for name in topics:
        lines.append("  %s: { partitions: 1, fsync: never }" % name)
    lines += ["inputs:", "  - type: stdin", "    topic: main", "processors:", processor,
              "outputs:", outputs]
    spoolt.write(path, "\n".join(lines) + "\n")
    return path


def feed(cfg, data, files_and_counts):
    """Runs spool with `data` on stdin (kept open), waits until each file has its number
    of lines, then stops spool cleanly."""
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    try:
        s.wait_running()
        s.proc.stdin.write(data)
        s.proc.stdin.flush()

        def complete():
            for path, n in files_and_counts:
                if not os.path.exists(path) or len(spoolt.read_lines(path)) < n:
                    return False
            return True
        spoolt.wait_for(complete, 60, what="every record in the output files")
        s.proc.stdin.close()
        spoolt.check(s.terminate() == 0, "spool exited non-zero:\n" + s.stderr()[-3000:])
    finally:
        s.kill()


@t.case
def json_nested_to_file(tmp):
    out = os.path.join(tmp, "out.json")
    cfg = config(tmp, """  - type: parse
    format: json
    timestamp: { field: time, format: rfc3339 }""", """  - type: file
    topics: [main]
    path: %s
    format: fields""" % out)
    docs = []
    for i in range(200):
        docs.append({"time": "2024-03-01T12:00:%02d.%03d+01:00" % (i % 60, i),
                     "level": ["info", "warn", "error"][i % 3],
                     "http": {"status": 200 + (i % 4) * 100, "req": {"path": "/p/%d" % i,
                                                                   "ua": "t \"%d\"" % i}},
                     "tags": ["a", i], "n": i})
    data = "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs).encode()
    data += b"this is not json\n"
    feed(cfg, data, [(out, len(docs) + 1)])
    got = [json.loads(line) for line in spoolt.read_lines(out)]
    spoolt.check(len(got) == len(docs) + 1, "expected %d records, got %d"
                 % (len(docs) + 1, len(got)))
    for d, g in zip(docs, got):
        spoolt.check(g["level"] == d["level"], "level of %r: %r" % (d, g))
        spoolt.check(g["http"]["status"] == d["http"]["status"], "status: %r" % g)
        spoolt.check(g["http"]["req"]["path"] == d["http"]["req"]["path"], "path: %r" % g)
        spoolt.check(g["http"]["req"]["ua"] == d["http"]["req"]["ua"], "ua: %r" % g)
        spoolt.check(g["n"] == d["n"], "n: %r" % g)
        # Arrays are kept as their JSON text.
        spoolt.check(json.loads(g["tags"]) == d["tags"], "tags: %r" % g)
        # The value keeps the line (keep_original defaults to true).
        spoolt.check(json.loads(g["value"]) == d, "value: %r" % g)
        # The record's timestamp comes from the time field (+01:00).
        sec, ms = d["n"] % 60, d["n"]
        want = 1709290800000 + sec * 1000 + ms  # 2024-03-01T11:00:00Z
        spoolt.check(g["timestamp"] == want, "timestamp %r, want %r" % (g["timestamp"], want))
    last = got[-1]
    spoolt.check(last["value"] == "this is not json", "last: %r" % last)
    spoolt.check(last["parse_error"].startswith("json: expected a JSON object"),
                 "parse_error: %r" % last)


def nginx_line(rng, i):
    status = rng.choice([200, 200, 200, 204, 301, 304, 404, 500, 502, 503])
    path = rng.choice(["/", "/api/v1/items?id=%d" % i, "/health", "/static/app.js"])
    agent = rng.choice(["curl/8.1.2", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                        "kube-probe/1.28"])
    line = ('10.0.%d.%d - - [01/Mar/2024:12:%02d:%02d +0000] "GET %s HTTP/1.1" %d %d "-" "%s"'
            % (i // 256 % 256, i % 256, i // 60 % 60, i % 60, path, status, rng.randrange(5000),
               agent))
    return line, status


@t.case
def nginx_counts(tmp):
    rng = random.Random(15)
    lines, want = [], {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "bad": 0}
    for i in range(3000):
        if i % 97 == 13:
            lines.append("garbage line %d without the access log shape" % i)
            want["bad"] += 1
            continue
        line, status = nginx_line(rng, i)
        lines.append(line)
        want["%dxx" % (status // 100)] += 1
    main_out = os.path.join(tmp, "main.json")
    bad_out = os.path.join(tmp, "bad.json")
    cfg = config(tmp, """  - type: parse
    format: nginx_combined
    timestamp: { field: time, format: "%d/%b/%Y:%H:%M:%S %z" }
    on_error: dead_letter
    dead_letter_topic: bad""", """  - type: file
    topics: [main]
    path: %s
    format: fields
  - type: file
    topics: [bad]
    path: %s
    format: json""" % (main_out, bad_out), topics=("main", "bad"))
    good = len(lines) - want["bad"]
    feed(cfg, ("\n".join(lines) + "\n").encode(), [(main_out, good), (bad_out, want["bad"])])
    got = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    recs = [json.loads(x) for x in spoolt.read_lines(main_out)]
    spoolt.check(len(recs) == good, "main: %d records, want %d" % (len(recs), good))
    for r in recs:
        got["%dxx" % (r["status"] // 100)] += 1
        spoolt.check(r["method"] == "GET" and r["protocol"] == "HTTP/1.1", "request: %r" % r)
        spoolt.check(r["client"].startswith("10.0."), "client: %r" % r)
        spoolt.check(r["timestamp"] // 1000 % 60 == int(r["time"][18:20]), "time: %r" % r)
    for k in got:
        spoolt.check(got[k] == want[k], "%s: spool counted %d, the test %d" % (k, got[k], want[k]))
    bad = [json.loads(x) for x in spoolt.read_lines(bad_out)]
    spoolt.check(len(bad) == want["bad"], "bad: %d, want %d" % (len(bad), want["bad"]))
    for r in bad:
        spoolt.check(r["value"].startswith("garbage line"), "bad record: %r" % r)
        spoolt.check(r["headers"]["parse_error"].startswith("nginx_combined: "),
                     "parse_error: %r" % r)


@t.case
def nginx_chain_per_input(tmp):
    """The issue's pipeline on one input's own chain: parse -> drop health checks ->
    route 5xx to `errors` -> redact client IPs; the rest stays in `access`, malformed
    lines go to `bad`. Counts per topic against the test's own."""
    rng = random.Random(1515)
    lines, want = [], {"access": 0, "errors": 0, "bad": 0, "health": 0}
    for i in range(2000):
        if i % 89 == 7:
            lines.append("%d not an access log line" % i)
            want["bad"] += 1
            continue
        line, status = nginx_line(rng, i)
        lines.append(line)
        if '"GET /health ' in line:
            want["health"] += 1
        elif status >= 500:
            want["errors"] += 1
        else:
            want["access"] += 1
    spoolt.check(min(want.values()) > 0, "the generator covers every case: %r" % want)
    outs = {name: os.path.join(tmp, name + ".json") for name in ("access", "errors", "bad")}
    path = os.path.join(tmp, "spool.yaml")
    spoolt.write(path, """service: { data_dir: %s }
topics:
  access: { partitions: 2, fsync: never }
  errors: { partitions: 1, fsync: never }
  bad: { partitions: 1, fsync: never }
inputs:
  - type: stdin
    topic: access
    key: "{{ host }}"
    processors:
      - type: parse
        format: nginx_combined
        on_error: dead_letter
        dead_letter_topic: bad
      - type: filter
        drop_when: 'path == "/health"'
      - type: route
        rules:
          - {when: 'status >= 500', topic: errors}
      - type: redact
        fields: [client, value]
        builtins: [ipv4]
        replacement: "<ip>"
outputs:
  - {type: file, topics: [access], path: %s, format: fields}
  - {type: file, topics: [errors], path: %s, format: fields}
  - {type: file, topics: [bad], path: %s, format: fields}
""" % (os.path.join(tmp, "data"), outs["access"], outs["errors"], outs["bad"]))
    feed(path, ("\n".join(lines) + "\n").encode(),
         [(outs[k], want[k]) for k in ("access", "errors", "bad")])
    for topic in ("access", "errors", "bad"):
        recs = [json.loads(x) for x in spoolt.read_lines(outs[topic])]
        spoolt.check(len(recs) == want[topic], "%s: %d records, the test counted %d"
                     % (topic, len(recs), want[topic]))
        for r in recs:
            if topic == "bad":
                spoolt.check("parse_error" in r and "client" not in r, "bad: %r" % r)
                continue
            spoolt.check((r["status"] >= 500) == (topic == "errors"), "%s: %r" % (topic, r))
            spoolt.check(r["path"] != "/health", "health check kept: %r" % r)
            spoolt.check(r["client"] == "<ip>" and r["value"].startswith("<ip> - - ["),
                         "client not redacted: %r" % r)
            spoolt.check(r["key"] == r["host"], "key %r, host %r" % (r.get("key"), r["host"]))


def check_errors(tmp, processor):
    cfg = config(tmp, processor, """  - type: file
    topics: [main]
    path: %s""" % os.path.join(tmp, "out"), topics=("main", "bad"))
    p = spoolt.run(["check", "-c", cfg])
    spoolt.check(p.returncode == 2, "spool check exited %d, want 2: %s"
                 % (p.returncode, p.stderr.decode()))
    return cfg, (p.stdout + p.stderr).decode()


@t.case
def check_errors_positioned(tmp):
    # Line 9 is `- type: parse`; the pattern is on line 11, its value at column 14: the
    # error points at the pattern's end (column 14 + 23), where the ')' is missing.
    cfg, text = check_errors(tmp, """  - type: parse
    format: regex
    pattern: '^(?<ip>\\S+) (?<rest>.*'""")
    want = "%s:11:37: processors[0].pattern: bad regex at position 23 of the pattern: " \
        "missing closing parenthesis" % cfg
    spoolt.check(want in text, "want %r in:\n%s" % (want, text))
    cfg, text = check_errors(tmp, """  - type: parse
    format: json
    timestamp: { field: t, format: "%Y-%m-%d %k" }
    on_error: dead_letter
    separator: ';;'""")
    for want in ["%s:11:46: processors[0].timestamp.format: unknown conversion '%%k' at "
                 "position 10 of the format" % cfg,
                 "processors[0].on_error: dead_letter needs dead_letter_topic",
                 "processors[0].separator: only used with format: csv or kv"]:
        spoolt.check(want in text, "want %r in:\n%s" % (want, text))
    # A good configuration passes.
    cfg = config(tmp, """  - type: parse
    format: regex
    pattern: '^(?<ip>\\S+) (?<rest>.*)$'""", """  - type: file
    topics: [main]
    path: %s""" % os.path.join(tmp, "out"))
    p = spoolt.run(["check", "-c", cfg])
    spoolt.check(p.returncode == 0, "spool check: %s" % (p.stdout + p.stderr).decode())


t.main()
