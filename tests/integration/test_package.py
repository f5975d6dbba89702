"""The Debian packages: packaging/build-deb builds spool, spool-plugin-kafka,
spool-plugin-journald, spool-plugin-http and spool-dev; spool installs alone with dpkg -i, the
installed binary validates the packaged config (as root and as the `spool`
user), a config naming kafka fails with a message naming spool-plugin-kafka
until that package is installed (likewise http and spool-plugin-http), systemd-analyze accepts the installed unit,
logrotate accepts its file, and dpkg --purge leaves the machine as it was.

Installing a package changes the machine, so this runs only as root (CI runs
as root on a throwaway machine); otherwise it is skipped (exit 77, reported by
ctest) with the reason. As root, a missing tool is a failure, not a skip.
"""
import os
import pwd
import shutil
import stat
import subprocess

import spoolt
from spoolt import check

t = spoolt.Suite(__file__)


def sh(args, timeout=300, ok=True):
    r = subprocess.run(args, capture_output=True, timeout=timeout)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    if ok:
        check(r.returncode == 0, "%s exited %d:\n%s" % (" ".join(args), r.returncode, out[-4000:]))
    return r.returncode, out


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True)
    return r.returncode == 0 and b"installed" in r.stdout


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


PLUGIN_PKGS = ("spool-plugin-kafka", "spool-plugin-journald", "spool-plugin-http")
KAFKA_CONFIG = """service:
  data_dir: %s
inputs:
  - type: stdin
outputs:
  - type: kafka
    brokers: [127.0.0.1:9092]
    kafka_topic: t
    topics: [default]
"""
HTTP_CONFIG = """service:
  data_dir: %s
inputs:
  - type: stdin
outputs:
  - type: http
    url: http://127.0.0.1:1/
    topics: [default]
"""


@t.case
def package_installs_verifies_and_purges(tmp):
    spoolt.require_root("dpkg -i")
    for tool in ("dpkg-deb", "dpkg", "systemd-analyze"):
        if not shutil.which(tool):
            raise spoolt.Failure("%s not found (Debian packages dpkg, systemd)" % tool)
    for extra in PLUGIN_PKGS + ("spool-dev",):
        if installed(extra):
            sh(["dpkg", "--purge", extra])  # left over from an interrupted run
    if installed("spool"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Maintainer}", "spool"], capture_output=True)
        check(b"spool developers" in r.stdout,
              "a spool package from elsewhere is installed; refusing to replace it")
        sh(["dpkg", "--purge", "spool"])  # left over from an interrupted run of this test
    user_before = user_exists("spool")

    # Shared by the normal and the sanitizer test runs: the second build is
    # incremental.
    build_dir = os.path.join(spoolt.SRC, "build-deb")
    out_dir = os.path.join(tmp, "dist")
    r = subprocess.run([os.path.join(spoolt.SRC, "packaging", "build-deb"), "--build-dir",
                        build_dir, "--out-dir", out_dir], capture_output=True, timeout=1500)
    check(r.returncode == 0, "build-deb failed:\n%s" % r.stderr.decode("utf-8", "replace")[-6000:])
    lines = r.stdout.decode().strip().splitlines()
    debs = {os.path.basename(l).split("_")[0]: l for l in lines}
    for name in ("spool", "spool-dev") + PLUGIN_PKGS:
        check(name in debs and os.path.isfile(debs[name]), "build-deb printed %r" % lines)
    deb = lines[-1]
    check(deb == debs["spool"], "build-deb printed %r: spool's .deb is not last" % lines)

    _, info = sh(["dpkg-deb", "--info", deb])
    check("Package: spool" in info and "Depends:" in info, "control:\n" + info)
    for dep in ("libyaml-0-2", "libmicrohttpd12", "libsystemd0", "adduser"):
        check(dep in info, "Depends lacks %s:\n%s" % (dep, info))
    check("rdkafka" not in info, "spool depends on librdkafka:\n" + info)
    _, contents = sh(["dpkg-deb", "--contents", deb])
    for path in ("./usr/bin/spool", "/systemd/system/spool.service", "./etc/spool/spool.yaml",
                 "./etc/logrotate.d/spool"):
        check(path in contents, "%s missing from the package:\n%s" % (path, contents))
    for path in ("spool-kafka.so", "spool-journald.so", "spool-http-in.so", "spool-http-out.so",
                 "spool.h"):
        check(path not in contents, "%s is in the spool package:\n%s" % (path, contents))
    for name, path, dep in (("spool-plugin-kafka", "./usr/lib/spool/plugins/spool-kafka.so",
                             "librdkafka"),
                            ("spool-plugin-journald", "./usr/lib/spool/plugins/spool-journald.so",
                             "libsystemd0"),
                            ("spool-plugin-http", "./usr/lib/spool/plugins/spool-http-in.so",
                             "libmicrohttpd"),
                            ("spool-plugin-http", "./usr/lib/spool/plugins/spool-http-out.so",
                             "libcurl"),
                            ("spool-dev", "./usr/include/spool/spool.h", "spool (= ")):
        _, pinfo = sh(["dpkg-deb", "--info", debs[name]])
        check(dep in pinfo and "spool (= " in pinfo, "%s's Depends:\n%s" % (name, pinfo))
        _, pcontents = sh(["dpkg-deb", "--contents", debs[name]])
        check(path in pcontents, "%s missing from %s:\n%s" % (path, name, pcontents))
    ctrl = os.path.join(tmp, "ctrl")
    sh(["dpkg-deb", "--control", deb, ctrl])
    with open(os.path.join(ctrl, "conffiles")) as f:
        check("/etc/spool/spool.yaml" in f.read().split(), "spool.yaml is not a conffile")

    try:
        sh(["dpkg", "-i", deb])
        check(installed("spool"), "dpkg -i did not leave spool installed")

        # The system user and the state directory.
        check(user_exists("spool"), "postinst did not create the spool user")
        pw = pwd.getpwnam("spool")
        check(pw.pw_dir == "/var/lib/spool", "spool's home is %s" % pw.pw_dir)
        check(pw.pw_uid < 1000, "spool is not a system user (uid %d)" % pw.pw_uid)
        st = os.stat("/var/lib/spool")
        check(st.st_uid == pw.pw_uid and stat.S_IMODE(st.st_mode) == 0o750,
              "/var/lib/spool: uid %d mode %o" % (st.st_uid, stat.S_IMODE(st.st_mode)))
        st = os.stat("/etc/spool/spool.yaml")
        check(st.st_gid == pw.pw_gid and stat.S_IMODE(st.st_mode) == 0o640,
              "/etc/spool/spool.yaml: gid %d mode %o" % (st.st_gid, stat.S_IMODE(st.st_mode)))

        # The installed binary accepts the packaged config, as root and as
        # the user the unit runs it as.
        code, out = sh(["/usr/bin/spool", "check", "-c", "/etc/spool/spool.yaml"], ok=False)
        check(code == 0, "spool check of the packaged config exited %d:\n%s" % (code, out))
        if shutil.which("runuser"):
            code, out = sh(["runuser", "-u", "spool", "--", "/usr/bin/spool", "check", "-c",
                            "/etc/spool/spool.yaml"], ok=False)
            check(code == 0, "spool check as user spool exited %d:\n%s" % (code, out))

        # The unit: systemd-analyze verify exits 0 even for unknown keys and
        # unparseable values (it only warns), so any line about our unit
        # fails the test too.
        unit = None
        for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
            if os.path.exists(os.path.join(d, "spool.service")):
                unit = os.path.join(d, "spool.service")
                break
        check(unit is not None, "spool.service not installed")
        code, out = sh(["systemd-analyze", "verify", "--man=no", unit], ok=False)
        bad = [l for l in out.splitlines() if "spool" in l]
        check(code == 0 and not bad, "systemd-analyze verify (exit %d):\n%s" % (code, out))
        code, out = sh(["systemd-analyze", "security", "--offline=yes", "--threshold=30", unit],
                       ok=False)
        check(code == 0, "systemd-analyze security: exposure above 3.0 (exit %d):\n%s"
              % (code, out[-3000:]))

        # spool alone: a config naming kafka says which package to install;
        # with spool-plugin-kafka installed the same config is accepted.
        kcfg = os.path.join(tmp, "kafka.yaml")
        with open(kcfg, "w") as f:
            f.write(KAFKA_CONFIG % os.path.join(tmp, "data"))
        code, out = sh(["/usr/bin/spool", "check", "-c", kcfg], ok=False)
        check(code == 2 and "install the package spool-plugin-kafka" in out
              and "/usr/lib/spool/plugins/spool-kafka.so" in out,
              "spool check of a kafka config without the plugin (exit %d):\n%s" % (code, out))
        sh(["dpkg", "-i", debs["spool-plugin-kafka"]])
        code, out = sh(["/usr/bin/spool", "check", "-c", kcfg], ok=False)
        check(code == 0, "spool check with spool-plugin-kafka installed (exit %d):\n%s"
              % (code, out))
        sh(["dpkg", "-r", "spool-plugin-kafka"])
        check(not os.path.exists("/usr/lib/spool/plugins/spool-kafka.so"),
              "dpkg -r spool-plugin-kafka left the .so")

        # Likewise http: its output is in spool-plugin-http.
        hcfg = os.path.join(tmp, "http.yaml")
        with open(hcfg, "w") as f:
            f.write(HTTP_CONFIG % os.path.join(tmp, "data"))
        code, out = sh(["/usr/bin/spool", "check", "-c", hcfg], ok=False)
        check(code == 2 and "install the package spool-plugin-http" in out
              and "/usr/lib/spool/plugins/spool-http-out.so" in out,
              "spool check of an http config without the plugin (exit %d):\n%s" % (code, out))
        sh(["dpkg", "-i", debs["spool-plugin-http"]])
        code, out = sh(["/usr/bin/spool", "check", "-c", hcfg], ok=False)
        check(code == 0, "spool check with spool-plugin-http installed (exit %d):\n%s"
              % (code, out))
        sh(["dpkg", "-r", "spool-plugin-http"])
        check(not os.path.exists("/usr/lib/spool/plugins/spool-http-out.so"),
              "dpkg -r spool-plugin-http left the .so")

        if shutil.which("logrotate"):
            code, out = sh(["logrotate", "-d", "/etc/logrotate.d/spool"], ok=False)
            check(code == 0 and "error:" not in out, "logrotate -d:\n" + out)

        # Reinstall with a locally edited conffile: the edit is kept.
        with open("/etc/spool/spool.yaml", "a") as f:
            f.write("# local edit kept by reinstall\n")
        sh(["dpkg", "-i", "--force-confold", deb])
        with open("/etc/spool/spool.yaml") as f:
            check("# local edit kept by reinstall" in f.read(), "reinstall lost a conffile edit")

        # Remove keeps the config, purge removes config and state.
        sh(["dpkg", "-r", "spool"])
        check(not os.path.exists("/usr/bin/spool"), "dpkg -r left /usr/bin/spool")
        check(os.path.exists("/etc/spool/spool.yaml"), "dpkg -r removed the conffile")
    finally:
        for extra in PLUGIN_PKGS + ("spool-dev",):
            subprocess.run(["dpkg", "--purge", extra], capture_output=True, timeout=300)
        subprocess.run(["dpkg", "--purge", "spool"], capture_output=True, timeout=300)
        if not user_before and user_exists("spool"):
            subprocess.run(["userdel", "spool"], capture_output=True)
            subprocess.run(["groupdel", "spool"], capture_output=True)
    for path in ("/usr/bin/spool", "/etc/spool/spool.yaml", "/var/lib/spool", "/var/log/spool",
                 "/etc/logrotate.d/spool"):
        check(not os.path.exists(path), "dpkg --purge left %s" % path)
    check(not installed("spool"), "spool still installed after purge")


t.main()
