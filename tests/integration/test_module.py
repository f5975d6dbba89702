"""spool's optional plugins as external modules (issue 14, "plugins that stand
alone"): in a build with -DSPOOL_WITH_KAFKA=MODULE -DSPOOL_WITH_JOURNALD=MODULE
-DSPOOL_WITH_HTTP=MODULE they are <build>/plugins/spool-<type>.so (http: one
file per kind, spool-http-in.so and spool-http-out.so), and

- an agent whose config does not name them maps neither the .so nor its
  library (librdkafka, libcurl); one whose config names kafka or http loads
  and runs it;
- a config naming a plugin whose .so is not in plugin_dir fails `spool check`
  with a message naming the file and the package that ships it;
- `spool plugins` lists the modules present but not loaded, without loading
  them.

Registered only in such builds (tests/CMakeLists.txt: test_module:kafka-module,
journald-module,http-module).
"""
import os
import subprocess

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
MODULES = os.path.join(spoolt.BUILD, "plugins")


def config(tmp, plugin_dir, outputs="", inputs=""):
    path = os.path.join(tmp, "spool.yaml")
    write(path, """service:
  data_dir: %s
  plugin_dir: %s
inputs:
  - type: stdin
    exit_on_eof: false
%soutputs:
  - type: file
    path: %s
    topics: [default]
%s""" % (os.path.join(tmp, "data"), plugin_dir, inputs, os.path.join(tmp, "out.log"), outputs))
    return path


KAFKA = """  - type: kafka
    brokers: [127.0.0.1:1]
    kafka_topic: t
    topics: [default]
"""


def maps(proc):
    with open("/proc/%d/maps" % proc.pid) as f:
        return f.read()


@t.case
def kafka_module_mapped_only_when_named(tmp):
    for named in (False, True):
        path = config(tmp, MODULES, KAFKA if named else "")
        c = spoolt.run(["check", "-c", path])
        check(c.returncode == 0, c)
        s = spoolt.Spool(path, stdin=subprocess.PIPE)
        try:
            s.wait_running()
            m = maps(s.proc)
            check(("spool-kafka.so" in m) == named, "spool-kafka.so mapped: %s" % m)
            check(("librdkafka" in m) == named, "librdkafka mapped: %s" % m)
            s.proc.stdin.write(b"one\n")
            s.proc.stdin.flush()
            out = os.path.join(tmp, "out.log")
            spoolt.wait_for(lambda: os.path.exists(out) and b"one" in open(out, "rb").read(),
                            what="the record in the file output")
            s.proc.stdin.close()
            check(s.terminate() == 0, s.stderr())
        finally:
            s.kill()
        os.unlink(os.path.join(tmp, "out.log"))


HTTP_OUT = """  - type: http
    url: http://127.0.0.1:1/
    topics: [default]
"""


@t.case
def http_module_mapped_only_when_named(tmp):
    for named in (False, True):
        path = config(tmp, MODULES, HTTP_OUT if named else "")
        c = spoolt.run(["check", "-c", path])
        check(c.returncode == 0, c)
        s = spoolt.Spool(path, stdin=subprocess.PIPE)
        try:
            s.wait_running()
            m = maps(s.proc)
            check(("spool-http-out.so" in m) == named, "spool-http-out.so mapped: %s" % m)
            check(("libcurl" in m) == named, "libcurl mapped: %s" % m)
            check("spool-http-in.so" not in m, "spool-http-in.so mapped: %s" % m)
            s.proc.stdin.write(b"one\n")
            s.proc.stdin.flush()
            out = os.path.join(tmp, "out.log")
            spoolt.wait_for(lambda: os.path.exists(out) and b"one" in open(out, "rb").read(),
                            what="the record in the file output")
            s.proc.stdin.close()
            check(s.terminate() == 0, s.stderr())
        finally:
            s.kill()
        os.unlink(os.path.join(tmp, "out.log"))


@t.case
def http_input_module_loads_by_name(tmp):
    path = config(tmp, MODULES, inputs="  - type: http\n    listen: 127.0.0.1:0\n")
    c = spoolt.run(["check", "-c", path])
    check(c.returncode == 0, c)


@t.case
def plugins_lists_modules_without_loading(tmp):
    c = spoolt.run(["plugins", "--plugin-dir", MODULES])
    out = c.stdout.decode()
    check(c.returncode == 0, c)
    for kind, name, f in (("output", "kafka", "spool-kafka.so"),
                          ("input", "kafka", "spool-kafka-in.so"),
                          ("input", "journald", "spool-journald.so"),
                          ("input", "http", "spool-http-in.so"),
                          ("output", "http", "spool-http-out.so")):
        line = "%s %s (%s/%s): loaded on demand" % (kind, name, MODULES, f)
        check(line in out, "%r not in:\n%s" % (line, out))
    # A config naming the http output loads it (its options are listed), the
    # others stay listed as modules.
    path = config(tmp, MODULES, HTTP_OUT)
    c = spoolt.run(["plugins", "-c", path])
    out = c.stdout.decode()
    check(c.returncode == 0, c)
    check("output http (%s/spool-http-out.so): " % MODULES in out, out)
    check("loaded on demand" not in out.split("output http (")[1].split("\n")[0], out)
    check("input http (%s/spool-http-in.so): loaded on demand" % MODULES in out, out)
    check("    url " in out, "the http output's options are not listed:\n" + out)


@t.case
def journald_module_loads_by_name(tmp):
    path = config(tmp, MODULES, inputs="  - type: journald\n")
    c = spoolt.run(["check", "-c", path])
    check(c.returncode == 0, c)


@t.case
def missing_module_names_the_package(tmp):
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    for inputs, outputs, name, f in (
            ("", KAFKA, "kafka", "kafka"), ("  - type: journald\n", "", "journald", "journald"),
            ("", HTTP_OUT, "http", "http-out"),
            ("  - type: http\n    listen: 127.0.0.1:0\n", "", "http", "http-in")):
        path = config(tmp, empty, outputs, inputs)
        c = spoolt.run(["check", "-c", path])
        err = c.stderr.decode()
        check(c.returncode == 2, c)
        check("the '%s' plugin is not installed: %s/spool-%s.so not found (install the package "
              "spool-plugin-%s" % (name, empty, f, name) in err, err)


if __name__ == "__main__":
    t.main()
