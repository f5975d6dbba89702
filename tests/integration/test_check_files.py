"""`spool check` finds what `spool run` would fail on (issue 12 item 5).

The fixtures in check/ cover missing files and bad addresses with their
positions (test_core.py runs them). These cases need files made at run
time: TLS material loaded with OpenSSL (a good set passes, a key that does
not match its certificate, a key with a passphrase, a CA file without a
certificate fail), token files parsed as run parses them, journal files
opened as run opens them; and `spool run` itself reports every error at
once (at load, exit 2) and every instance's init failure, not only the
first.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spoolt  # noqa: E402
from spoolt import check  # noqa: E402

CHECK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check")

t = spoolt.Suite(__file__)


def openssl(d, *args):
    subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)


def make_tls(d):
    os.makedirs(d, exist_ok=True)
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=ca")
    openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=server")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2")
    openssl(d, "genrsa", "-out", "other.key", "2048")
    openssl(d, "rsa", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out",
            "locked.key")
    return {k: os.path.join(d, k) for k in os.listdir(d)}


def config(tmp, inputs, outputs="  - type: stdout\n    topics: [logs]\n"):
    return spoolt.write(os.path.join(tmp, "spool.yaml"), """service:
  data_dir: %s/data
topics:
  logs:
    partitions: 1
inputs:
%s
outputs:
%s""" % (tmp, inputs, outputs))


def spool_check(cfg):
    c = spoolt.run(["check", "-c", cfg])
    return c.returncode, c.stderr.decode(errors="replace")


@t.case
def tls_material_loaded_with_openssl(tmp):
    tls = make_tls(os.path.join(tmp, "tls"))
    good = config(tmp, """  - type: http
    topic: logs
    listen: 127.0.0.1:0
    tls:
      cert: %(server.pem)s
      key: %(server.key)s
      client_ca: %(ca.pem)s
  - type: socket
    topic: logs
    listen: tcp://127.0.0.1:0
    tls:
      cert: %(server.pem)s
      key: %(server.key)s""" % tls, outputs="""  - type: tcp
    topics: [logs]
    url: tls://127.0.0.1:6514
    tls:
      ca: %(ca.pem)s
      cert: %(server.pem)s
      key: %(server.key)s""" % tls)
    rc, err = spool_check(good)
    check(rc == 0, "good TLS files refused: %s" % err)

    bad = config(tmp, """  - type: http
    topic: logs
    listen: 127.0.0.1:0
    tls:
      cert: %(server.pem)s
      key: %(other.key)s
  - type: socket
    topic: logs
    listen: tcp://127.0.0.1:0
    tls:
      cert: %(server.pem)s
      key: %(locked.key)s
      client_ca: %(server.key)s""" % tls, outputs="""  - type: http
    topics: [logs]
    url: https://127.0.0.1:8443/v1/batches
    tls:
      ca_file: %(ca.key)s
      cert_file: %(server.key)s
      key_file: %(server.key)s""" % tls)
    rc, err = spool_check(bad)
    print("     " + err.replace("\n", "\n     ").rstrip())
    check(rc == 2, "bad TLS files passed check: %s" % err)
    for want in (
        "spool.yaml:12:12: inputs[0].tls.key: %s does not match the certificate %s"
        % (tls["other.key"], tls["server.pem"]),
        "spool.yaml:18:12: inputs[1].tls.key: %s: not a usable PEM private key (or it needs "
        "a passphrase)" % tls["locked.key"],
        "spool.yaml:19:18: inputs[1].tls.client_ca: %s: no usable PEM CA certificate"
        % tls["server.key"],
        "spool.yaml:25:16: outputs[0].tls.ca_file: %s: no usable PEM CA certificate"
        % tls["ca.key"],
        "spool.yaml:26:18: outputs[0].tls.cert_file: %s: not a usable PEM certificate"
        % tls["server.key"],
    ):
        check(want in err, "missing %r in:\n%s" % (want, err))
    check("spool.yaml: 5 errors" in err, "expected exactly 5 errors: %s" % err)


@t.case
def token_and_journal_files_parsed_as_run_does(tmp):
    tokdir = os.path.join(tmp, "tokens.d")
    os.makedirs(tokdir)
    empty_token = spoolt.write(os.path.join(tmp, "token"), "\n   \n")
    journal = spoolt.write(os.path.join(tmp, "bad.journal"), "not a journal\n")
    cfg = config(tmp, """  - type: http
    topic: logs
    listen: 127.0.0.1:0
    tokens_file: %s
  - type: journald
    topic: logs
    files: [%s]""" % (tokdir, journal), outputs="""  - type: http
    topics: [logs]
    url: http://127.0.0.1:8080/v1/batches
    token_file: %s""" % empty_token)
    rc, err = spool_check(cfg)
    check(rc == 2, "passed check: %s" % err)
    for want in ("spool.yaml:10:18: inputs[0].tokens_file: %s is a directory" % tokdir,
                 "spool.yaml:13:12: inputs[1].files: %s is not a readable journal file" % journal,
                 "spool.yaml:18:17: outputs[0].token_file: %s: no token on its first line"
                 % empty_token):
        check(want in err, "missing %r in:\n%s" % (want, err))


@t.case
def run_reports_every_config_error(tmp):
    """What check reports, run reports too, all at once, before starting."""
    path = os.path.join(CHECK_DIR, "missing_files.yaml")
    expects = [l[len("# expect:"):].strip() for l in open(path) if l.startswith("# expect:")]
    r = spoolt.run(["run", "-c", path], input=b"", timeout=60)
    err = r.stderr.decode(errors="replace")
    check(r.returncode == 2, "run exit %d, expected 2: %s" % (r.returncode, err))
    for e in expects:
        check(e in err, "run did not report '%s':\n%s" % (e, err))


@t.case
def run_reports_every_init_failure(tmp):
    """Two outputs that fail only at init (the external test plugin opens
    its file there): both failures are logged before run exits."""
    plugdir = os.path.join(spoolt.BUILD, "test-plugins", "test_plugin")
    cfg = spoolt.write(os.path.join(tmp, "spool.yaml"), """service:
  data_dir: %s/data
  plugin_dir: %s
inputs:
  - type: stdin
outputs:
  - type: test_ext
    name: first
    topics: [default]
    path: /proc/spool-no-such-dir/first.out
  - type: test_ext
    name: second
    topics: [default]
    path: /proc/spool-no-such-dir/second.out
""" % (tmp, plugdir))
    r = spoolt.run(["run", "-c", cfg], input=b"", timeout=60)
    err = r.stderr.decode(errors="replace")
    check(r.returncode != 0, "run succeeded: %s" % err)
    for name in ("first", "second"):
        check("[output:test_ext:%s] cannot start" % name in err,
              "init failure of %s not reported:\n%s" % (name, err))


if __name__ == "__main__":
    t.main()
