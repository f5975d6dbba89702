"""Integration tests of the kafka input: Kafka -> spool's log.

The Kafka cluster is librdkafka's mock cluster (tests/helpers/kafka_mock).
Records are produced into it by a spool node (http ingest -> kafka output,
checked by test_kafka.py), so each record's key, two headers and timestamp
are known; kcat confirms what Kafka holds before the consumers' logs are
compared with it. The consumer nodes' logs are read back with `spool read`.

Checked: two nodes in one consumer group, one killed -9 and restarted while
records arrive: every record in exactly one node's log, none lost, none
duplicated, keys, headers and timestamps kept; one node killed -9 and
restarted: none lost or duplicated; config errors a user sees.
spool-test-requires: kafka, http
"""
import os
import re
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
import test_kafka as tk  # noqa: E402  (the mock, the producer node, kcat helpers)

t = spoolt.Suite(__file__)

N = 40000 if spoolt.SANITIZE else 200000
CHUNK = 5000
PARTS = 6


API_PORTS = {}


def consumer_config(tmp, name, bootstrap, extra=None, session="6s"):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "spool.yaml")
    API_PORTS[cfg] = spoolt.free_port()
    lines = ["service:",
             "  data_dir: %s/data" % d,
             "  log_level: info",
             "  http:",
             "    listen: 127.0.0.1:%d" % API_PORTS[cfg],
             "  shutdown_timeout: 10s",
             "topics:",
             "  in:",
             "    partitions: 1",
             "inputs:",
             "  - type: kafka",
             "    name: fromkafka",
             "    topic: in",
             "    brokers: [%s]" % ", ".join(bootstrap.split(",")),
             "    topics: [src]",
             "    group_id: spool-test",
             "    start_from: earliest",
             "    session_timeout: %s" % session]
    if extra:
        lines.append("    librdkafka:")
    for k, v in (extra or {}).items():
        lines.append("      %s: \"%s\"" % (k, v))
    lines.append("outputs: []")
    return spoolt.write(cfg, "\n".join(lines) + "\n")


def uncommitted(cfg):
    """The node's gauge of records whose offsets Kafka has not confirmed; None
    while its API does not answer."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % API_PORTS[cfg],
                                    timeout=10) as r:
            body = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^spool_kafka_uncommitted_records(?:\{[^}]*\})? (\d+)", body, re.M)
    return int(m.group(1)) if m else None


def read_log(cfg):
    """The consumer's log: a list of (key, timestamp, headers dict, value)."""
    r = spoolt.run(["read", "in", "-c", cfg, "-p", "0", "--format", "%k\\t%T\\t%h\\t%v\\n"],
                   timeout=120)
    spoolt.check(r.returncode == 0, "spool read failed: %s" % r.stderr.decode()[-2000:])
    out = []
    for line in r.stdout.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        k, ts, h, v = line.split("\t", 3)
        headers = dict(kv.partition("=")[::2] for kv in h.split(",")) if h else {}
        out.append((k, int(ts), headers, v))
    return out


def seqs(log):
    return [int(v.split("=", 1)[1]) for (_, _, _, v) in log]


def check_records(log):
    for k, ts, headers, v in log:
        i = int(v.split("=", 1)[1])
        want = tk.record(i)
        spoolt.check(k == want["key"], "seq %d: key %r, want %r" % (i, k, want["key"]))
        spoolt.check(ts == want["timestamp"], "seq %d: timestamp %d, want %d"
                     % (i, ts, want["timestamp"]))
        for hk, hv in want["headers"].items():
            spoolt.check(headers.get(hk) == hv, "seq %d: header %s=%r, want %r"
                         % (i, hk, headers.get(hk), hv))


def produce(tmp, mock, first, count):
    """Posts records first..first+count-1 to the producer node (durable there)."""
    for i in range(first, first + count, CHUNK):
        tk.post(produce.port, i, min(CHUNK, first + count - i))


def start_producer(tmp, mock):
    d = os.path.join(tmp, "producer")
    os.makedirs(d, exist_ok=True)
    produce.port = spoolt.free_port()
    cfg = tk.config(d, mock.bootstrap, produce.port, kafka_topic="src", partitions=PARTS)
    return tk.run_spool(d, cfg, produce.port)


def start(cfg):
    sp = spoolt.Spool(cfg)
    tk.RUNNING.append(sp)
    return sp


def count_in(cfg):
    r = spoolt.run(["read", "in", "-c", cfg, "-p", "0", "--format", "x\\n"], timeout=60)
    return r.stdout.count(b"\n") if r.returncode == 0 else 0


def wait_kafka_holds(mock, n):
    msgs = tk.wait_unique(mock.bootstrap, "src", n, timeout=120)
    spoolt.check(len(msgs) == n and len(set(tk.seqs_of(msgs))) == n,
                 "Kafka holds %d messages (%d distinct), want %d"
                 % (len(msgs), len(set(tk.seqs_of(msgs))), n))
    spoolt.check(len({m["partition"] for m in msgs}) == PARTS, "not every partition used")


# ------------------------------------------------------------------ tests --

@t.case
def two_nodes_one_killed_every_record_in_exactly_one_log(tmp):
    mock = tk.Mock(["src:%d" % PARTS])
    try:
        start_producer(tmp, mock)
        cfg1 = consumer_config(tmp, "node1", mock.bootstrap)
        cfg2 = consumer_config(tmp, "node2", mock.bootstrap)
        n1 = start(cfg1)
        n2 = start(cfg2)
        third = N // 3
        produce(tmp, mock, 0, third)
        spoolt.wait_for(lambda: count_in(cfg1) > 0 and count_in(cfg2) > 0, timeout=60,
                        what="both nodes consuming")
        produce(tmp, mock, third, third)
        # Kill node1 once Kafka confirmed the offsets of everything its log
        # holds: a partition it had then goes to node2 exactly after it. (A
        # kill between a batch's durability and that confirmation leaves the
        # batch in both logs when another node takes the partition over:
        # docs/kafka.md, "The one window".)
        spoolt.wait_for(lambda: count_in(cfg1) + count_in(cfg2) >= 2 * third
                        and uncommitted(cfg1) == 0, timeout=60,
                        what="node1 with every durable offset committed to Kafka")
        n1.kill()
        tk.RUNNING.remove(n1)
        # node2 takes node1's partitions over (after session.timeout.ms) at
        # Kafka's committed offsets and reads the rest of the second third.
        # node1 rejoins once node2 has committed all it holds: librdkafka's
        # mock refuses offset commits while a rebalance is in progress
        # (REBALANCE_IN_PROGRESS; a real broker accepts them from the
        # current generation while it prepares the rebalance), so a revoke
        # on the mock cannot tell Kafka what is durable. Then the last
        # third arrives while both nodes run.
        spoolt.wait_for(lambda: count_in(cfg1) + count_in(cfg2) >= 2 * third
                        and uncommitted(cfg2) == 0, timeout=90,
                        what="node2 holding and having committed the first two thirds")
        n1 = start(cfg1)
        n1.wait_log("assigned src/", timeout=90)
        spoolt.wait_for(lambda: uncommitted(cfg1) == 0 and uncommitted(cfg2) == 0, timeout=60,
                        what="both nodes with every offset committed after the rebalance")
        produce(tmp, mock, 2 * third, N - 2 * third)
        wait_kafka_holds(mock, N)
        spoolt.wait_for(lambda: count_in(cfg1) + count_in(cfg2) >= N, timeout=120,
                        what="both logs together holding %d records" % N)
        for sp in (n1, n2):
            rc = sp.terminate()
            spoolt.check(rc == 0, "spool exit %s:\n%s" % (rc, sp.stderr()[-3000:]))
        l1, l2 = read_log(cfg1), read_log(cfg2)
        s1, s2 = seqs(l1), seqs(l2)
        both = set(s1) & set(s2)
        st = spoolt.seq_check(s1 + s2, expected_n=N, start=0)
        print("     %d records: node1 %d, node2 %d, in both %d, lost %d, duplicates %d"
              % (N, len(s1), len(s2), len(both), st["lost"], st["dup"]))
        spoolt.check(len(s1) > 0 and len(s2) > 0, "one node consumed nothing")
        spoolt.check(st["lost"] == 0 and st["dup"] == 0 and not both,
                     "lost %d, duplicated %d (%d in both logs)"
                     % (st["lost"], st["dup"], len(both)))
        check_records(l1)
        check_records(l2)
    finally:
        tk.kill_leftovers()
        mock.close()


@t.case
def one_node_kill9_restart_exactly_once(tmp):
    mock = tk.Mock(["src:%d" % PARTS])
    try:
        start_producer(tmp, mock)
        n = N // 4
        cfg = consumer_config(tmp, "node", mock.bootstrap)
        sp = start(cfg)
        produce(tmp, mock, 0, n // 2)
        spoolt.wait_for(lambda: count_in(cfg) > 0, timeout=60, what="consuming")
        sp.kill()
        tk.RUNNING.remove(sp)
        produce(tmp, mock, n // 2, n - n // 2)
        sp = start(cfg)
        wait_kafka_holds(mock, n)
        spoolt.wait_for(lambda: count_in(cfg) >= n, timeout=120, what="%d records" % n)
        rc = sp.terminate()
        spoolt.check(rc == 0, "spool exit %s:\n%s" % (rc, sp.stderr()[-3000:]))
        log = read_log(cfg)
        st = spoolt.seq_check(seqs(log), expected_n=n, start=0)
        print("     %d records: lost %d, duplicates %d" % (n, st["lost"], st["dup"]))
        spoolt.check(st["lost"] == 0 and st["dup"] == 0,
                     "lost %d, duplicated %d" % (st["lost"], st["dup"]))
        check_records(log)
    finally:
        tk.kill_leftovers()
        mock.close()


@t.case
def config_errors(tmp):
    cfg = consumer_config(tmp, "bad", "127.0.0.1:9",
                          extra={"enable.auto.commit": "true"})
    r = spoolt.run(["check", "-c", cfg])
    err = r.stderr.decode()
    spoolt.check(r.returncode == 2 and "enable.auto.commit" in err and "spool.yaml:" in err,
                 "check of a reserved property: %d %s" % (r.returncode, err))
    cfg = consumer_config(tmp, "bad2", "127.0.0.1:9", extra={"no.such.property": "1"})
    r = spoolt.run(["check", "-c", cfg])
    err = r.stderr.decode()
    spoolt.check(r.returncode == 2 and "no.such.property" in err,
                 "check of an unknown property: %d %s" % (r.returncode, err))


if __name__ == "__main__":
    if not tk.KCAT or not os.path.exists(tk.MOCK):
        print("kcat or kafka_mock missing (%s, %s)" % (tk.KCAT, tk.MOCK))
        sys.exit(1)
    t.main()
