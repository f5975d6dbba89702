"""packaging/grafana/spool-dashboard.json against a real spool:

- it is Grafana dashboard JSON as import expects it: schemaVersion, a
  datasource variable DS_PROMETHEUS every panel uses as ${DS_PROMETHEUS}, a
  templated `instance` every expression filters on, unique panel ids, grid
  positions inside 24 columns;
- every PromQL expression is valid (`promtool check rules`, Debian package
  `prometheus`) and names only metrics a running spool with traffic (tail
  input, a filter that drops, a file output) exports on /metrics; and the
  dashboard covers what it must (throughput, lag, errors, retries, drops,
  dead letters, disk usage, memory, health).

spool-test-requires: tail
"""
import json
import os
import re
import shutil
import subprocess
import urllib.request

import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)

TIMEOUT = 120 if spoolt.SANITIZE else 60
DASHBOARD = os.path.join(spoolt.SRC, "packaging", "grafana", "spool-dashboard.json")

# PromQL words that are not metric names.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}

# Metric families the dashboard must chart (issue 19).
REQUIRED = {"spool_records_in_total", "spool_records_out_total", "spool_output_lag_records",
            "spool_errors_total", "spool_retries_total", "spool_processor_dropped_total",
            "spool_rejected_total", "spool_partition_bytes", "process_resident_memory_bytes",
            "spool_healthy", "spool_partition_end_offset"}


def panels(dash):
    for p in dash["panels"]:
        yield p
        for q in p.get("panels", []):
            yield q


def expressions(dash):
    """Every PromQL expression: the panels' targets and the query variables'."""
    out = []
    for p in panels(dash):
        for tg in p.get("targets", []):
            out.append(tg["expr"])
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.match(r"^label_values\((\w+),\s*\w+\)$", q)
            check(m is not None, "variable %s: unexpected query %r" % (v["name"], q))
            out.append(m.group(1))
    return out


def metric_names(expr):
    """The metric names an expression reads."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)        # strings
    e = re.sub(r"\{[^}]*\}", "", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                       # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("("):
            continue                                        # a function
        if m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def promql_for_promtool(expr):
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


@t.case
def dashboard_json_shape(tmp):
    with open(DASHBOARD) as f:
        dash = json.load(f)
    check(isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 30,
          "schemaVersion: %r" % dash.get("schemaVersion"))
    check(dash.get("title") and dash.get("uid"), "title/uid missing")
    inputs = {i["name"]: i for i in dash.get("__inputs", [])}
    check(inputs.get("DS_PROMETHEUS", {}).get("pluginId") == "prometheus",
          "__inputs has no DS_PROMETHEUS prometheus datasource")
    var = {v["name"]: v for v in dash["templating"]["list"]}
    check(var.get("DS_PROMETHEUS", {}).get("type") == "datasource"
          and var["DS_PROMETHEUS"].get("query") == "prometheus", "no DS_PROMETHEUS variable")
    check(var.get("instance", {}).get("type") == "query", "no templated instance variable")
    ids = [p["id"] for p in panels(dash)]
    check(len(ids) == len(set(ids)), "panel ids not unique: %s" % ids)
    for p in panels(dash):
        g = p["gridPos"]
        check(g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, "panel %s: gridPos %s"
              % (p["title"], g))
        if p["type"] == "row":
            continue
        check(p.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}",
              "panel %s: datasource %s" % (p["title"], p.get("datasource")))
        check(p.get("targets"), "panel %s has no query" % p["title"])
        for tg in p["targets"]:
            check('instance=~"$instance"' in tg["expr"],
                  "panel %s: %r does not filter on $instance" % (p["title"], tg["expr"]))
    # promtool validates every expression's PromQL.
    tool = shutil.which("promtool")
    check(tool is not None, "promtool not found: install the Debian package `prometheus`")
    rules = os.path.join(tmp, "rules.yml")
    with open(rules, "w") as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, e in enumerate(expressions(dash)):
            f.write("      - record: dashboard:expr%d\n        expr: %s\n"
                    % (i, json.dumps(promql_for_promtool(e))))
    r = subprocess.run([tool, "check", "rules", rules], capture_output=True, timeout=60)
    check(r.returncode == 0, "promtool check rules: %s" % (r.stdout + r.stderr).decode())
    # The name extraction itself, on known shapes.
    check(metric_names('sum by (instance, name) (rate(a_total{kind="x",b=~"$i"}[5m]))')
          == {"a_total"}, "metric_names: nested")
    check(metric_names("x{a=\"b\"} / on (c) y") == {"x", "y"}, "metric_names: binary")


@t.case
def dashboard_names_exported_metrics(tmp):
    with open(DASHBOARD) as f:
        dash = json.load(f)
    used = set()
    for e in expressions(dash):
        used |= metric_names(e)
    missing = REQUIRED - used
    check(not missing, "the dashboard charts none of: %s" % sorted(missing))

    port = spoolt.free_port()
    log = os.path.join(tmp, "app.log")
    spoolt.write(log, "")
    cfg = spoolt.write(os.path.join(tmp, "spool.yaml"), """
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
    paths: [%s]
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
""" % (tmp, port, log, tmp))
    s = spoolt.Spool(cfg)
    try:
        s.wait_running(TIMEOUT)
        spoolt.write(log, "".join("line %d\nGET /health\n" % i for i in range(1, 101)), "a")
        out = os.path.join(tmp, "out.txt")
        wait_for(lambda: len(spoolt.read_lines(out)) >= 100, TIMEOUT, what="100 lines delivered")

        def scrape():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
                return r.read().decode()
        page = wait_for(lambda: (lambda p: p if "spool_processor_dropped_total{" in p else None)(
            scrape()), TIMEOUT, what="processor drops on /metrics")
    finally:
        s.terminate()
    exported = set()
    values = {}
    for line in page.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and not line.startswith("#"):
            exported.add(m.group(1))
            values.setdefault(m.group(1), float(m.group(3)))
    unknown = used - exported
    check(not unknown, "the dashboard names metrics spool does not export: %s\nexported: %s"
          % (sorted(unknown), sorted(exported)))
    check(values.get("spool_healthy") == 1, "spool_healthy = %r on a healthy spool"
          % values.get("spool_healthy"))


if __name__ == "__main__":
    t.main()
