"""The `journald` input on journal files written by systemd-journal-remote.

CI machines run no journald, so each test writes its own journal files:
systemd-journal-remote turns journal export format on stdin into a
.journal file (and appends to an existing one). spool reads them with
`files:` and `directory:`.

- entries, `units` and `match` filters, fields as headers, MESSAGE as the
  value, the entry's realtime timestamp as the record's;
- read_from: end takes only entries written after the start;
- entries appended while spool runs arrive; the cursor survives kill -9
  and a restart: the log holds every entry exactly once, in order.

Nothing here waits a fixed time: a journal ends with an "end" entry every
input takes, and a case is complete when each input's "end" arrived (the
journal is read in order, so everything before it was read and filtered).
"""
import os
import subprocess

import sockt
import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)

REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote",
                           "/usr/lib/systemd/systemd-journal-remote") if os.path.exists(p)), None)
BASE_US = 1700000000000000


def write_journal(path, entries):
    """Appends entries (dicts of field -> value) to the journal file at path."""
    if REMOTE is None:
        raise spoolt.Failure("systemd-journal-remote not installed (Debian package "
                             "systemd-journal-remote)")
    out = []
    for e in entries:
        for k, v in e.items():
            out.append("%s=%s\n" % (k, v))
        out.append("\n")
    p = subprocess.run([REMOTE, "-o", path, "-"], input="".join(out).encode(),
                       capture_output=True, timeout=60)
    check(p.returncode == 0, "journal-remote: %s" % p.stderr.decode(errors="replace"))


def entries(a, b, unit=lambda i: "app.service", prio=lambda i: 6):
    return [{"__REALTIME_TIMESTAMP": BASE_US + i * 1000, "__MONOTONIC_TIMESTAMP": 1000 + i,
             "_BOOT_ID": "0123456789abcdef0123456789abcdef", "_HOSTNAME": "jhost",
             "_SYSTEMD_UNIT": unit(i), "PRIORITY": prio(i), "SYSLOG_IDENTIFIER": "tester",
             "MESSAGE": "entry %d" % i} for i in range(a, b)]


END = {"__REALTIME_TIMESTAMP": BASE_US + 999000, "__MONOTONIC_TIMESTAMP": 999999,
       "_BOOT_ID": "0123456789abcdef0123456789abcdef", "_HOSTNAME": "jhost",
       "_SYSTEMD_UNIT": "a.service", "PRIORITY": 3, "SYSLOG_IDENTIFIER": "tester",
       "MESSAGE": "end"}  # taken by every input and filter of these cases


def wait_end(tmp, inputs):
    """Waits until each input in `inputs` delivered the END entry; returns
    every record delivered."""
    def done():
        recs = sockt.out_records(tmp)
        ends = {r["headers"]["input"] for r in recs if r["value"] == "end"}
        return recs if ends >= set(inputs) else None
    return wait_for(done, sockt.TIMEOUT, 0.1, what="the end entry from %s" % ", ".join(inputs))


def jd_input(name, topic="t", extra=""):
    return "  - type: journald\n    name: %s\n    topic: %s\n%s" % (name, topic, extra)


def start(cfg):
    """Starts spool and waits until it is running (its inputs started)."""
    s = spoolt.Spool(cfg)
    try:
        s.wait_running(sockt.TIMEOUT)
    except spoolt.Failure:
        s.kill()
        raise
    return s


def log_values(cfg, topic="t"):
    p = spoolt.run(["read", topic, "-c", cfg, "--format", "%v\n"])
    check(p.returncode == 0, "spool read: %s" % p.stderr.decode(errors="replace"))
    return p.stdout.decode().splitlines()


@t.case
def files_units_and_match(tmp):
    f = os.path.join(tmp, "j", "a.journal")
    os.makedirs(os.path.dirname(f))
    write_journal(f, entries(0, 40, unit=lambda i: "a.service" if i % 2 else "b.service",
                             prio=lambda i: 3 if i % 5 == 0 else 6) + [END])
    inputs = (jd_input("units", extra="    files: [%s]\n    units: [a.service]\n"
                       "    read_from: beginning\n" % f) +
              jd_input("match", extra="    directory: %s\n    match: [PRIORITY=3]\n"
                       "    read_from: beginning\n" % os.path.dirname(f)))
    s = start(sockt.config(tmp, inputs))
    try:
        recs = wait_end(tmp, ["units", "match"])
    finally:
        sockt.stop(s)
    units = [r for r in recs if r["headers"]["input"] == "units" and r["value"] != "end"]
    match = [r for r in recs if r["headers"]["input"] == "match" and r["value"] != "end"]
    check([r["value"] for r in units] == ["entry %d" % i for i in range(1, 40, 2)], units[:3])
    check([r["value"] for r in match] == ["entry %d" % i for i in range(0, 40, 5)], match[:3])
    h = units[0]["headers"]
    check(h["_SYSTEMD_UNIT"] == "a.service" and h["PRIORITY"] == "6", h)
    check(h["_HOSTNAME"] == "jhost" and h["SYSLOG_IDENTIFIER"] == "tester" and h["host"], h)
    check("MESSAGE" not in h, "MESSAGE is the value, not a header")
    check(units[0]["timestamp"] == (BASE_US + 1000) // 1000, units[0]["timestamp"])


@t.case
def read_from_end(tmp):
    d = os.path.join(tmp, "j")
    os.makedirs(d)
    f = os.path.join(d, "x.journal")
    write_journal(f, entries(0, 10))
    s = start(sockt.config(tmp, jd_input("tail", extra="    directory: %s\n" % d)))
    try:
        # The input seeks to the journal's end in its own thread: append
        # probes until one arrives; from then on every new entry is read.
        probes = [0]

        def probe():
            probes[0] += 1
            write_journal(f, [dict(END, MESSAGE="probe %d" % probes[0])])
        spoolt.poke_until(probe, lambda: sockt.out_records(tmp), sockt.TIMEOUT,
                          every=0.5 * sockt.SLOW, what="a probe entry read from the end")
        write_journal(f, entries(10, 15) + [END])
        recs = wait_end(tmp, ["tail"])
    finally:
        sockt.stop(s)
    vals = [r["value"] for r in recs if not r["value"].startswith("probe ")]
    check(vals == ["entry %d" % i for i in range(10, 15)] + ["end"], recs)


@t.case
def appended_entries_and_cursor_across_kill9(tmp):
    d = os.path.join(tmp, "j")
    os.makedirs(d)
    f = os.path.join(d, "app.journal")
    write_journal(f, entries(0, 3000))
    topics = "  t:\n    partitions: 1\n    fsync: always\n"
    cfg = sockt.config(tmp, jd_input("jd", extra="    directory: %s\n    read_from: beginning\n"
                                     % d), topics=topics)
    s = start(cfg)
    # kill -9 as soon as the first records are out: most likely mid-journal.
    wait_for(lambda: os.path.exists(os.path.join(tmp, "out.json")) and
             os.path.getsize(os.path.join(tmp, "out.json")) > 0, sockt.TIMEOUT, 0.01,
             what="first records")
    s.kill()
    s = start(cfg)
    try:
        s.wait_log("resuming after the stored journal cursor", sockt.TIMEOUT)
        write_journal(f, entries(3000, 3100))  # while running
        wait_for(lambda: any(r["value"] == "entry 3099"
                             for r in sockt.out_records(tmp, strict=False)),
                 sockt.TIMEOUT, 0.2, what="appended entries")
    finally:
        s.kill()
    write_journal(f, entries(3100, 3200))  # while stopped
    s = start(cfg)
    try:
        wait_for(lambda: any(r["value"] == "entry 3199"
                             for r in sockt.out_records(tmp, strict=False)),
                 sockt.TIMEOUT, 0.2, what="entries written while stopped")
    finally:
        sockt.stop(s)
    vals = log_values(cfg)
    nums = [int(v.split()[1]) for v in vals]
    st = spoolt.seq_check(nums, 3200, start=0)
    check(st["lost"] == 0 and st["dup"] == 0 and st["disorder"] == 0,
          "log: %s (%d records)" % (st, len(nums)))


t.main()
