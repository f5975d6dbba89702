"""Processors end to end (issue 15's integration tests), against the real binary.

- nginx_pipeline: nginx combined access lines from two virtual hosts' log files -> parse
  (the virtual host from the file's path, then nginx_combined, whose `path` replaces the
  file's) -> drop health checks ->
  redact client IPs -> route 5xx to `errors`, 2xx/3xx to `access` (4xx stay on `web`) ->
  key by virtual host. Records per topic, their keys, their parsed fields and the drop
  counter match the test's own count of the generated lines; no client IP is left.
- nested_json_to_fields: JSON lines with nested objects -> parse json -> `file` output in
  the `fields` format -> the test parses each document back and finds the source's
  structure (nesting, numbers, booleans, strings).
- config_errors: a bad regex, a bad Lua script and an unknown processor option are each a
  `spool check` error at file:line:column, and `spool run` refuses the same file.

The lines are generated here (seeded), not taken from real logs.

spool-test-requires: tail lua
"""
import json
import os
import random
import re

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
jl = spoolt.read_json_lines

VHOSTS = ("shop.example.com", "api.example.com")
PATHS = ("/", "/cart", "/api/v1/orders", "/static/app.js", "/healthz", "/login")
STATUSES = (200, 201, 204, 301, 302, 304, 400, 401, 404, 500, 502, 503)


def gen_lines(rnd, n):
    """n nginx combined lines: (line, vhost-independent facts) with IPv4 and IPv6 clients."""
    out = []
    for i in range(n):
        if rnd.random() < 0.2:
            client = "2001:db8::%x" % rnd.randrange(1, 0xffff)
        else:
            client = "198.51.100.%d" % rnd.randrange(1, 255)
        path = rnd.choice(PATHS)
        status = rnd.choice(STATUSES)
        ln = ('%s - - [01/Dec/2026:10:%02d:%02d +0000] "GET %s?n=%d HTTP/1.1" %d %d '
              '"https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"'
              % (client, (i // 60) % 60, i % 60, path, i, status, rnd.randrange(0, 9999)))
        out.append((ln, {"client": client, "path": path, "status": status, "n": i}))
    return out


PIPELINE = """
service:
  data_dir: {tmp}/data
  shutdown_timeout: 30s
  http: {{listen: 127.0.0.1:{port}}}
topics:
  web: {{fsync: never, partitions: 2}}
  access: {{fsync: never, partitions: 2}}
  errors: {{fsync: never}}
inputs:
  - type: tail
    name: nginx
    topic: web
    paths: ["{tmp}/logs/*.access.log"]
    read_from: beginning
    key: "{{{{ vhost }}}}"
    processors:
      - type: parse
        name: vhost
        source: path
        format: regex
        pattern: '(?<vhost>[^/]+)\\.access\\.log$'
      - type: parse
        format: nginx_combined
        on_error: drop
      - type: filter
        drop_when: 'path =~ "^/healthz"'
      - type: redact
        fields: [value, client]
        builtins: [ipv4, ipv6]
        replacement: "[ip]"
      - type: route
        rules:
          - {{when: 'status >= 500', topic: errors}}
          - {{when: 'status >= 200 and status < 400', topic: access}}
outputs:
  - {{type: file, name: o-web, topics: [web], path: "{tmp}/web.json", format: fields}}
  - {{type: file, name: o-access, topics: [access], path: "{tmp}/access.json", format: fields}}
  - {{type: file, name: o-errors, topics: [errors], path: "{tmp}/errors.json", format: fields}}
"""


@t.case
def nginx_pipeline(tmp):
    rnd = random.Random(1515)
    os.makedirs(os.path.join(tmp, "logs"))
    want = {"web": [], "access": [], "errors": []}
    health = 0
    for vh in VHOSTS:
        lines = gen_lines(rnd, 1500)
        write(os.path.join(tmp, "logs", vh + ".access.log"),
              "".join(ln + "\n" for ln, _ in lines))
        for _, f in lines:
            if f["path"] == "/healthz":
                health += 1
                continue
            topic = ("errors" if f["status"] >= 500 else
                     "access" if 200 <= f["status"] < 400 else "web")
            want[topic].append((vh, f["n"], f["status"], f["path"]))
    port = spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, PIPELINE.format(tmp=tmp, port=port))
    s = spoolt.Spool(cfg)
    try:
        s.wait_running()
        spoolt.wait_for(lambda: all(len(jl(os.path.join(tmp, tp + ".json"))) >= len(w)
                                    for tp, w in want.items()),
                        timeout=90, what="every record delivered")
        spoolt.wait_for(lambda: spoolt.metric(port, "spool_processor_dropped_total",
                                       ['processor="nginx.filter"', 'reason="filter"']) == health,
                        timeout=30, what="%d health checks dropped" % health)
    finally:
        rc = s.terminate()
    check(rc == 0, "spool exited %d" % rc)
    ip_re = re.compile(r"198\.51\.100\.\d+|2001:db8::[0-9a-f]+")
    for tp, w in want.items():
        docs = jl(os.path.join(tmp, tp + ".json"))
        got = []
        for d in docs:
            check(d["key"] == d["vhost"] and d["vhost"] in VHOSTS, "key by vhost: %r" % d)
            check(d["client"] == "[ip]" and not ip_re.search(d["value"]), "redacted: %r" % d)
            check(isinstance(d["status"], int) and d["method"] == "GET", "parsed: %r" % d)
            n = int(re.search(r"\?n=(\d+)", d["path"]).group(1))
            got.append((d["vhost"], n, d["status"], d["path"].split("?")[0]))
        # Per virtual host (one file each) the order is the file's; across them it is not.
        check(sorted(got) == sorted(w), "%s: %d records, want %d" % (tp, len(got), len(w)))
        print("     %s: %d records (the test's own count: %d)" % (tp, len(got), len(w)))
    print("     health checks dropped: %d" % health)


@t.case
def nested_json_to_fields(tmp):
    rnd = random.Random(77)
    src = []
    for i in range(500):
        src.append({"msg": "event %d" % i, "level": rnd.choice(["info", "warn", "error"]),
                    "http": {"status": rnd.choice([200, 404, 503]), "method": "GET",
                             "timing": {"ms": rnd.randrange(1, 999), "cached": i % 2 == 0}},
                    "user": {"id": "u%04d" % rnd.randrange(10000), "zip": "0%04d" % i}})
    write(os.path.join(tmp, "app.log"), "".join(json.dumps(o) + "\n" for o in src))
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, f"""
service: {{data_dir: {tmp}/data}}
topics: {{app: {{fsync: never}}}}
inputs:
  - type: tail
    topic: app
    paths: [{tmp}/app.log]
    read_from: beginning
    processors:
      - type: parse
        format: json
outputs:
  - {{type: file, topics: [app], path: "{tmp}/out.json", format: fields}}
""")
    s = spoolt.Spool(cfg)
    try:
        s.wait_running()
        spoolt.wait_for(lambda: len(jl(os.path.join(tmp, "out.json"))) >= len(src),
                        timeout=60, what="every record delivered")
    finally:
        rc = s.terminate()
    check(rc == 0, "spool exited %d" % rc)
    docs = jl(os.path.join(tmp, "out.json"))
    check(len(docs) == len(src), "%d documents, want %d" % (len(docs), len(src)))
    for o, d in zip(src, docs):
        check(json.loads(d["value"]) == o, "the value keeps the line: %r" % d)
        for k in ("msg", "level", "http", "user"):
            check(d[k] == o[k], "field %s: %r, want %r" % (k, d.get(k), o[k]))


@t.case
def config_errors(tmp):
    base = f"""service: {{data_dir: {tmp}/data}}
topics: {{app: {{}}}}
inputs:
  - type: tail
    topic: app
    paths: [{tmp}/x.log]
    processors:
%s
outputs:
  - {{type: file, topics: [app], path: "{tmp}/out"}}
"""
    cases = [
        ("bad regex", """      - type: parse
        format: regex
        pattern: '(?<a>[0-9+'""", "pattern"),
        ("bad lua", """      - type: lua
        code: |
          function process(r)
            return r +
          end""", "code"),
        ("unknown option", """      - type: filter
        drop_wen: 'x == 1'""", "drop_wen"),
    ]
    for name, chain, opt in cases:
        cfg = os.path.join(tmp, name.replace(" ", "_") + ".yaml")
        text = base % chain
        write(cfg, text)
        r = spoolt.run(["check", "-c", cfg])
        out = r.stderr.decode() + r.stdout.decode()
        check(r.returncode == 2, "%s: spool check exited %d: %s" % (name, r.returncode, out))
        ln = next(i for i, x in enumerate(text.split("\n")) if opt + ":" in x) + 1
        check(re.search(r"%s:%d:\d+: inputs\[0\]\.processors\[0\]" % (re.escape(cfg), ln), out),
              "%s: no file:%d:column error in:\n%s" % (name, ln, out))
        r = spoolt.run(["run", "-c", cfg], timeout=60)
        check(r.returncode == 2, "%s: spool run exited %d" % (name, r.returncode))
        print("     %s: %s" % (name, out.strip().splitlines()[0]))


t.main()
