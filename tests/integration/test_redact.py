"""The redact, sample and throttle processors in a real `spool run`:

- redact with every built-in: generated lines holding e-mail addresses, IPv4 and IPv6
  addresses, Luhn-valid card numbers and bearer tokens, next to look-alikes that must stay
  (Luhn-invalid numbers, times, MAC addresses, versions, block ids), go stdin -> redact -> log
  -> file output. The test builds each line from parts it knows to be sensitive or not, so the
  expected output comes from the generator, not from a second implementation of the patterns:
  every line must come out byte-identical to the expected one (nothing sensitive left,
  everything else untouched), and spool_redact_redactions_total must equal the number of
  sensitive parts;
- sample (1 in 3) then throttle (10 per hour) over numbered lines: exactly lines 1, 4, ..., 28
  reach the file, and spool_processor_dropped_total counts 66 for reason "sample" and 24 for
  reason "throttle";
- `spool check` reports a bad pattern at its file:line:column with PCRE2's offset.
"""
import os
import random
import re
import subprocess
import urllib.request

import spoolt
from spoolt import check, wait_for

t = spoolt.Suite(__file__)

TIMEOUT = 120 if spoolt.SANITIZE else 60


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode("utf-8")


def sample(text, metric, **labels):
    """The value of the sample `metric` whose labels include `labels`, or None."""
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def api_up(port):
    try:
        metrics(port)
        return True
    except OSError:
        return False


def config(tmp, port, processors, out):
    return spoolt.write(os.path.join(tmp, "spool.yaml"), """
service:
  data_dir: %s/data
  http:
    listen: 127.0.0.1:%d
topics:
  t:
    partitions: 1
inputs:
  - type: stdin
    name: in
    topic: t
processors:
%s
outputs:
  - type: file
    name: copy
    topics: [t]
    path: %s
    format: raw
""" % (tmp, port, processors, out))


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card(rng, valid):
    """A 16-digit number starting with 4 that passes Luhn iff valid, grouped one of 3 ways."""
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    last = next(d for d in "0123456789" if luhn_ok(body + d) == valid)
    digits = body + last
    sep = rng.choice(["", " ", "-"])
    return sep.join(digits[i:i + 4] for i in range(0, 16, 4))


def generate(n, seed=15):
    """n lines as lists of (text, sensitive) parts; sensitive parts become [REDACTED]."""
    rng = random.Random(seed)
    hexd = "0123456789abcdef"
    lines = []
    for i in range(n):
        parts = [("%06d" % i, False)]

        def add(label, text, sensitive):
            parts.append((" %s " % label, False))
            parts.append((text, sensitive))

        kind = i % 7
        if kind == 0:
            add("user", "%s.%d@%s.example.com" % (rng.choice(["ann", "bob", "c_d"]), i,
                                                  rng.choice(["mail", "corp-1"])), True)
            add("at", "%02d:%02d:%02d" % (rng.randrange(24), rng.randrange(60), rng.randrange(60)),
                False)
        elif kind == 1:
            add("from", "%d.%d.%d.%d" % tuple(rng.randrange(256) for _ in range(4)), True)
            add("version", "v%d.%d.%d" % (rng.randrange(10), rng.randrange(10), rng.randrange(10)),
                False)
        elif kind == 2:
            add("v6", "2001:db8:%x::%x" % (rng.randrange(1, 65536), rng.randrange(1, 65536)), True)
            add("mac", ":".join("".join(rng.choice(hexd) for _ in range(2)) for _ in range(6)), False)
        elif kind == 3:
            add("mapped", "::ffff:10.%d.%d.%d" % tuple(rng.randrange(256) for _ in range(3)), True)
            add("link", "fe80::%x%%eth0" % rng.randrange(1, 65536), True)
        elif kind == 4:
            add("card", card(rng, True), True)
            add("other", card(rng, False), False)
        elif kind == 5:
            parts.append((" Authorization: Bearer ", False))
            parts.append(("".join(rng.choice("abcdefXYZ0123456789-_.") for _ in range(24)), True))
            add("block", "blk_-%d" % rng.randrange(10 ** 18, 10 ** 19), False)
        else:
            add("plain", "nothing to see here; pid=%d" % rng.randrange(100000), False)
        parts.append((" end", False))
        lines.append(parts)
    return lines


@t.case
def redact_builtins_to_file(tmp):
    n = 1400
    lines = generate(n)
    raw = ["".join(p for p, _ in parts) for parts in lines]
    want = ["".join("[REDACTED]" if s else p for p, s in parts) for parts in lines]
    secrets = [p for parts in lines for p, s in parts if s]
    nsecrets = len(secrets)
    port = spoolt.free_port()
    out = os.path.join(tmp, "out.txt")
    cfg = config(tmp, port, """
  - type: redact
    name: red
    builtins: [all]
""", out)
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    try:
        wait_for(lambda: api_up(port) or s.proc.poll() is not None, TIMEOUT, what="the HTTP API")
        check(s.proc.poll() is None, "spool exited:\n" + s.stderr()[-4000:])
        s.proc.stdin.write("".join(l + "\n" for l in raw).encode())
        s.proc.stdin.flush()
        wait_for(lambda: len(spoolt.read_lines(out)) >= n, TIMEOUT, what="%d lines in %s" % (n, out))
        got = [l.decode() for l in spoolt.read_lines(out)]
        check(len(got) == n, "%d lines out, want %d" % (len(got), n))
        bad = [(i, raw[i], want[i], got[i]) for i in range(n) if got[i] != want[i]]
        check(not bad, "%d lines differ; first ones:\n%s" % (len(bad), "\n".join(
            "line %d\n  in   %s\n  want %s\n  got  %s" % b for b in bad[:5])))
        text = "\n".join(got)
        left = [x for x in secrets if x in text]
        check(not left, "sensitive parts left in the output: %s" % left[:5])

        def counted():
            v = sample(metrics(port), "spool_redact_redactions_total", name="red")
            return v == nsecrets or None
        try:
            wait_for(counted, 30, what="spool_redact_redactions_total == %d" % nsecrets)
        except spoolt.Failure:
            raise spoolt.Failure("spool_redact_redactions_total = %s, want %d" % (
                sample(metrics(port), "spool_redact_redactions_total", name="red"), nsecrets))
        changed = sample(metrics(port), "spool_redact_records_changed_total", name="red")
        want_changed = sum(1 for parts in lines if any(s for _, s in parts))
        check(changed == want_changed, "records_changed %s, want %d" % (changed, want_changed))
    finally:
        try:
            s.proc.stdin.close()
        except OSError:
            pass
        rc = s.terminate(TIMEOUT)
    check(rc == 0, "spool exited %s:\n%s" % (rc, s.stderr()[-4000:]))


@t.case
def sample_then_throttle_counts(tmp):
    n = 100
    port = spoolt.free_port()
    out = os.path.join(tmp, "out.txt")
    cfg = config(tmp, port, """
  - type: sample
    name: smp
    rate: 3
  - type: throttle
    name: thr
    limit: 10
    window: 1h
""", out)
    s = spoolt.Spool(cfg, stdin=subprocess.PIPE)
    want = ["line %d" % i for i in range(1, n + 1, 3)][:10]
    try:
        wait_for(lambda: api_up(port) or s.proc.poll() is not None, TIMEOUT, what="the HTTP API")
        check(s.proc.poll() is None, "spool exited:\n" + s.stderr()[-4000:])
        # One line at a time, in several writes: batches of every size; the result may not
        # depend on how the lines were cut into batches.
        data = "".join("line %d\n" % i for i in range(1, n + 1)).encode()
        for k in range(0, len(data), 97):
            s.proc.stdin.write(data[k:k + 97])
            s.proc.stdin.flush()

        def settled():
            body = metrics(port)
            smp = sample(body, "spool_processor_dropped_total", processor="smp", reason="sample")
            thr = sample(body, "spool_processor_dropped_total", processor="thr", reason="throttle")
            return (smp, thr) if smp == 66 and thr == 24 else None
        try:
            wait_for(settled, TIMEOUT, what="drop counters 66 (sample) and 24 (throttle)")
        except spoolt.Failure:
            body = metrics(port)
            raise spoolt.Failure("dropped: sample %s (want 66), throttle %s (want 24)" % (
                sample(body, "spool_processor_dropped_total", processor="smp", reason="sample"),
                sample(body, "spool_processor_dropped_total", processor="thr",
                       reason="throttle")))
        wait_for(lambda: len(spoolt.read_lines(out)) >= len(want), TIMEOUT,
                 what="%d lines in %s" % (len(want), out))
    finally:
        try:
            s.proc.stdin.close()
        except OSError:
            pass
        rc = s.terminate(TIMEOUT)
    check(rc == 0, "spool exited %s:\n%s" % (rc, s.stderr()[-4000:]))
    got = [l.decode() for l in spoolt.read_lines(out)]
    check(got == want, "kept %s, want %s" % (got, want))


@t.case
def check_reports_bad_pattern(tmp):
    cfg = spoolt.write(os.path.join(tmp, "bad.yaml"), """topics:
  t: {partitions: 1}
inputs:
  - type: stdin
    topic: t
processors:
  - type: redact
    builtins: [email, phone]
    patterns:
      'id=(\\d+': '<id>'
  - type: throttle
    limit: 5
outputs:
  - type: file
    topics: [t]
    path: %s/out
""" % tmp)
    r = spoolt.run(["check", "-c", cfg])
    err = r.stderr.decode()
    check(r.returncode == 2, "spool check exited %d:\n%s" % (r.returncode, err))
    for want in ["bad.yaml:8:15: processors[0].builtins: unknown built-in pattern 'phone'",
                 "bad.yaml:10:18: processors[0].patterns.id=(\\d+: bad regular expression "
                 "id=(\\d+: missing closing parenthesis at offset 7",
                 "bad.yaml:11:5: processors[1]: missing required option 'window'"]:
        check(want in err, "%r not in spool check's output:\n%s" % (want, err))


t.main()
