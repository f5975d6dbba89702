"""Processor chains (issue 15: the framework, filter, set, route) against the real binary.

- chain_set_filter_route: a tail input with its own chain set -> filter -> route to two
  topics, a top-level processor after it, file outputs in JSON; the records per topic,
  their headers and the drop counter in /metrics match the test's own count exactly.
- check_positions: `spool check` reports a bad condition at file:line:column with the
  column inside the expression, and an unknown route topic at its value; exit 2.
- reload_changed_chain: SIGHUP with a changed chain: records before the reload went
  through the old chain, records after it through the new one; nothing lost.

spool-test-requires: tail
"""
import os
import re
import signal

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
jl = spoolt.read_json_lines
N = 600  # lines per phase


def line(i):
    """The i-th test line: status cycles 200, 404, 503, 500, 301; every 7th is a health check."""
    status = (200, 404, 503, 500, 301)[i % 5]
    path = "/health" if i % 7 == 0 else "/api/%d" % i
    return "n=%d status=%d path=%s" % (i, status, path)


def expected(lo, hi):
    """What the chain of chain_yaml does to lines lo..hi: (access, errors, dropped)."""
    access, errors, dropped = [], [], 0
    for i in range(lo, hi + 1):
        ln = line(i)
        if "path=/health" in ln:
            dropped += 1
        elif re.search(r"status=5\d\d", ln):
            errors.append(i)
        else:
            access.append(i)
    return access, errors, dropped


def conf(tmp, chain, port=None):
    http = "  http: {listen: 127.0.0.1:%d}\n" % port if port else ""
    return f"""service:
  data_dir: {tmp}/data
  shutdown_timeout: 30s
{http}topics:
  access: {{fsync: never}}
  errors: {{fsync: never}}
inputs:
  - type: tail
    name: web
    topic: access
    paths: [{tmp}/src.log]
    read_from: beginning
    processors:
{chain}processors:
  - type: set
    fields: {{last: "{{{{ topic }}}}"}}
outputs:
  - type: file
    name: out-access
    topics: [access]
    path: {tmp}/access.json
    format: json
  - type: file
    name: out-errors
    topics: [errors]
    path: {tmp}/errors.json
    format: json
"""


CHAIN = """      - type: set
        fields: {env: prod, n: "{{ value }}"}
      - type: filter
        drop_when: 'value =~ "path=/health$"'
      - type: route
        rules:
          - when: 'value =~ "status=5[0-9][0-9] "'
            topic: errors
        default: access
"""


def numbers(recs):
    return [int(r["value"].split()[0][2:]) for r in recs]


@t.case
def chain_set_filter_route(tmp):
    write(os.path.join(tmp, "src.log"), "".join(line(i) + "\n" for i in range(1, N + 1)))
    port = spoolt.free_port()
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, conf(tmp, CHAIN, port))
    access, errors, dropped = expected(1, N)
    s = spoolt.Spool(cfg)
    try:
        s.wait_running()
        spoolt.wait_for(lambda: len(jl(os.path.join(tmp, "access.json"))) >= len(access)
                        and len(jl(os.path.join(tmp, "errors.json"))) >= len(errors),
                        timeout=60, what="every record delivered")
        spoolt.wait_for(lambda: spoolt.metric(port, "spool_processor_dropped_total",
                                       ['processor="web.filter"', 'reason="filter"']) == dropped,
                        timeout=30, what="%d drops counted for web.filter" % dropped)
        check(spoolt.metric(port, "spool_records_in_total",
                     ['kind="processor"', 'name="web.route"']) == N - dropped,
              "web.route's records in")
    finally:
        rc = s.terminate()
    check(rc == 0, "spool exited %d" % rc)
    got_a = jl(os.path.join(tmp, "access.json"))
    got_e = jl(os.path.join(tmp, "errors.json"))
    check(numbers(got_a) == access, "access: %d records, want %d" % (len(got_a), len(access)))
    check(numbers(got_e) == errors, "errors: %d records, want %d" % (len(got_e), len(errors)))
    for r, topic in [(x, "access") for x in got_a] + [(x, "errors") for x in got_e]:
        h = r["headers"]
        check(h.get("env") == "prod" and h.get("n") == r["value"], "set's fields: %r" % r)
        # The top-level chain ran after the input's own, on the routed record.
        check(h.get("last") == topic and r["topic"] == topic, "topic of %r" % r)


@t.case
def check_positions(tmp):
    chain = """      - type: set
        fields: {env: prod}
      - type: filter
        drop_when: 'status >= 500 and path =~ "^/api" or'
      - type: route
        rules:
          - {when: 'status >= 500', topic: erors}
"""
    cfg = os.path.join(tmp, "spool.yaml")
    text = conf(tmp, chain)
    write(cfg, text)
    r = spoolt.run(["check", "-c", cfg])
    out = r.stderr.decode() + r.stdout.decode()
    check(r.returncode == 2, "spool check exited %d: %s" % (r.returncode, out))
    lines = text.split("\n")
    ln = next(i for i, x in enumerate(lines) if "drop_when" in x)
    # The column of the end of the expression (after "or"), inside the quotes.
    col = lines[ln].index("or'") + 3
    want = "%s:%d:%d: inputs[0].processors[1].drop_when: invalid condition:" % (cfg, ln + 1, col)
    check(want in out, "expected %r in:\n%s" % (want, out))
    ln = next(i for i, x in enumerate(lines) if "erors" in x)
    col = lines[ln].index("erors") + 1
    want = ("%s:%d:%d: inputs[0].processors[2].rules[0].topic: topic 'erors' is not defined"
            % (cfg, ln + 1, col))
    check(want in out, "expected %r in:\n%s" % (want, out))
    check("2 errors" in out, "two errors: %s" % out)


@t.case
def reload_changed_chain(tmp):
    src = os.path.join(tmp, "src.log")
    write(src, "".join(line(i) + "\n" for i in range(1, N + 1)))
    cfg = os.path.join(tmp, "spool.yaml")
    write(cfg, conf(tmp, CHAIN))
    access1, errors1, _ = expected(1, N)
    s = spoolt.Spool(cfg)
    try:
        s.wait_running()
        spoolt.wait_for(lambda: len(jl(os.path.join(tmp, "access.json"))) >= len(access1)
                        and len(jl(os.path.join(tmp, "errors.json"))) >= len(errors1),
                        timeout=60, what="phase 1 delivered")
        # The new chain: no filter, no route (everything stays on access), another field.
        write(cfg, conf(tmp, """      - type: set
        fields: {env: staging}
"""))
        s.proc.send_signal(signal.SIGHUP)
        spoolt.wait_for(lambda: "reload: starting the new configuration" in s.run_stderr(),
                        timeout=60, what="the reload")
        s.wait_log(" running: ")
        with open(src, "a") as f:
            f.write("".join(line(i) + "\n" for i in range(N + 1, 2 * N + 1)))
        spoolt.wait_for(lambda: len(jl(os.path.join(tmp, "access.json"))) >=
                        len(access1) + N, timeout=60, what="phase 2 delivered")
    finally:
        rc = s.terminate()
    check(rc == 0, "spool exited %d" % rc)
    got_a = jl(os.path.join(tmp, "access.json"))
    got_e = jl(os.path.join(tmp, "errors.json"))
    check(numbers(got_e) == errors1, "errors: only phase 1's 5xx")
    check(numbers(got_a) == access1 + list(range(N + 1, 2 * N + 1)),
          "access: phase 1 filtered and routed, then every line of phase 2")
    for r in got_a:
        n = int(r["value"].split()[0][2:])
        want = "prod" if n <= N else "staging"
        check(r["headers"].get("env") == want, "record %d: env %r, want %s" % (n, r, want))
        check(n <= N or "n" not in r["headers"], "phase 2 has no 'n' field: %r" % r)


t.main()
