"""spool's optional plugins as external modules (issue 14, "plugins that stand
alone"): in a build with -DSPOOL_WITH_KAFKA=MODULE -DSPOOL_WITH_JOURNALD=MODULE
they are <build>/plugins/spool-<type>.so, and

- an agent whose config does not name them maps neither the .so nor its
  library (librdkafka); one whose config names kafka loads and runs it;
- a config naming a plugin whose .so is not in plugin_dir fails `spool check`
  with a message naming the file and the package that ships it.

Registered only in such builds (tests/CMakeLists.txt: test_module:kafka-module).
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


@t.case
def journald_module_loads_by_name(tmp):
    path = config(tmp, MODULES, inputs="  - type: journald\n")
    c = spoolt.run(["check", "-c", path])
    check(c.returncode == 0, c)


@t.case
def missing_module_names_the_package(tmp):
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    for inputs, outputs, name in (("", KAFKA, "kafka"), ("  - type: journald\n", "", "journald")):
        path = config(tmp, empty, outputs, inputs)
        c = spoolt.run(["check", "-c", path])
        err = c.stderr.decode()
        check(c.returncode == 2, c)
        check("the '%s' plugin is not installed: %s/spool-%s.so not found (install the package "
              "spool-plugin-%s" % (name, empty, name, name) in err, err)


if __name__ == "__main__":
    t.main()
