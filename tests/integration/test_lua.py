"""Integration tests of the `lua` processor with the real binary: a script that
splits one record into two, through the log to the `file` output (exact
records back); failing calls kept with a lua_error header or dead-lettered,
logged once per streak; a bad script is a `spool check` error with the
script's file:line and the config's position.

spool-test-requires: lua
"""
import json
import os

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
N = 2000 if spoolt.SANITIZE else 20000

SPLIT = """
-- Splits "a|b" into two records: "a" (part 1) and "b" (part 2).
function process(r)
  local a, b = r.value:match("^(.-)|(.*)$")
  if not a then
    return
  end
  r.value = a
  r.fields.part = "1"
  return { r, { value = b, fields = { part = "2", input = r.fields.input } } }
end
"""


def config(tmp, script_path, extra_proc="", extra_topics="", extra_outputs="", chain=False):
    """The lua processor in the top-level section, or (chain) in the input's
    own chain (then its entry is indented by 4 more)."""
    proc = f"""  - type: lua
    name: script
    script: {script_path}
{extra_proc}"""
    if chain:
        proc = "".join("    " + l + "\n" for l in proc.splitlines())
    return write(os.path.join(tmp, "spool.yaml"), f"""
service:
  data_dir: {tmp}/data
topics:
  app: {{}}
{extra_topics}
inputs:
  - type: stdin
    name: in
    topic: app
{"    processors:" if chain else "processors:"}
{proc}
outputs:
  - type: file
    name: out
    topics: [app]
    path: {tmp}/out.jsonl
    format: json
{extra_outputs}
""")


@t.case
def split_one_record_into_two(tmp):
    script = write(os.path.join(tmp, "split.lua"), SPLIT)
    cfg = config(tmp, script, chain=True)
    c = spoolt.run(["check", "-c", cfg])
    check(c.returncode == 0, c.stderr.decode(errors="replace"))
    lines, want = [], []
    for i in range(1, N + 1):
        if i % 3 == 0:
            lines.append("plain-%d" % i)
            want.append(("plain-%d" % i, None))
        else:
            lines.append("left-%d|right-%d|x" % (i, i))
            want += [("left-%d" % i, "1"), ("right-%d|x" % i, "2")]
    p = spoolt.run(["run", "-c", cfg], input=("\n".join(lines) + "\n").encode(), timeout=300)
    check(p.returncode == 0, "spool run exited %d: %s" % (p.returncode, p.stderr[-3000:]))
    objs = [json.loads(l) for l in spoolt.read_lines(os.path.join(tmp, "out.jsonl"))]
    got = [(o["value"], o["headers"].get("part")) for o in objs]
    check(len(got) == len(want), "expected %d records, got %d" % (len(want), len(got)))
    check(got == want, "records differ; first difference at %d: %r vs %r" % next(
        ((i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w), (0, None, None)))
    for i, o in enumerate(objs):
        check(o["offset"] == i and o["topic"] == "app", o)
        check(o["headers"].get("input") == "in", o)
        check("lua_error" not in o["headers"], o)


@t.case
def failing_calls_kept_dead_lettered_and_logged_once(tmp):
    script = write(os.path.join(tmp, "fail.lua"), """
function process(r)
  if r.value:find("^bad") then
    error("cannot handle " .. r.value)
  end
  r.fields.seen = "yes"
end
""")
    cfg = config(tmp, script,
                 extra_proc="    on_error: dead_letter\n    dead_letter_topic: dlq\n",
                 extra_topics="  dlq: {}\n",
                 extra_outputs=f"""  - type: file
    name: dead
    topics: [dlq]
    path: {tmp}/dlq.jsonl
    format: json
""")
    # Two streaks of failures (5 and 3 records), separated by good records.
    values = (["good-1"] + ["bad-%d" % i for i in range(1, 6)] + ["good-2"] +
              ["bad-%d" % i for i in range(6, 9)] + ["good-3"])
    p = spoolt.run(["run", "-c", cfg], input=("\n".join(values) + "\n").encode(), timeout=120)
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 0, "spool run exited %d: %s" % (p.returncode, err[-3000:]))
    good = [json.loads(l) for l in spoolt.read_lines(os.path.join(tmp, "out.jsonl"))]
    dead = [json.loads(l) for l in spoolt.read_lines(os.path.join(tmp, "dlq.jsonl"))]
    check([o["value"] for o in good] == ["good-1", "good-2", "good-3"], good)
    check(all(o["headers"]["seen"] == "yes" for o in good), good)
    check([o["value"] for o in dead] == ["bad-%d" % i for i in range(1, 9)], dead)
    for o in dead:
        check("cannot handle " + o["value"] in o["headers"]["lua_error"], o)
        check("seen" not in o["headers"], o)
    # One warning per streak, not one per record.
    warns = [l for l in err.splitlines() if "cannot handle" in l]
    check(len(warns) == 2, "expected 2 warnings (one per streak), got %d:\n%s"
          % (len(warns), "\n".join(warns)))
    check("bad-1" in warns[0] and "bad-6" in warns[1], warns)


@t.case
def bad_script_is_a_check_error(tmp):
    script = write(os.path.join(tmp, "bad.lua"), "function process(r)\n  r.value = = 1\nend\n")
    cfg = config(tmp, script)
    c = spoolt.run(["check", "-c", cfg])
    err = c.stderr.decode(errors="replace")
    check(c.returncode == 2, "check should fail: %d %s" % (c.returncode, err))
    # The config's position of `script` (line 14, column 13), then the script's file:line.
    check("spool.yaml:14:13: processors[0].script: %s:2:" % script in err, err)
    r = spoolt.run(["run", "-c", cfg], input=b"x\n")
    check(r.returncode == 2, "run should refuse it: %d" % r.returncode)
    check(not os.path.exists(os.path.join(tmp, "out.jsonl")), "run delivered records")
    # A script without the function, and inline code with a runtime error at load.
    write(script, "function handle(r) end\n")
    c = spoolt.run(["check", "-c", cfg])
    check(c.returncode == 2 and b"no global function 'process'" in c.stderr, c.stderr)
    cfg = config(tmp, script, extra_proc="    function: handle\n")
    c = spoolt.run(["check", "-c", cfg])
    check(c.returncode == 0, c.stderr)


t.main()
