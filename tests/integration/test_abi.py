"""The plugin boundary's exports and ABI (docs/plugins.md, "ABI and loading").

- the binary exports exactly the functions spool.h declares (hidden
  visibility, SPOOL_API), nothing internal;
- a plugin built against ABI 1's header, frozen in tests/helpers/abi_v1, is
  still loaded and runs; plugins with a wrong abi_signature or abi_version
  are refused with a message naming the file, what it was built against and
  what spool expects;
- `cmake --install` gives a spool.pc with which a plugin builds out of tree
  against the installed header only, and that plugin loads and runs.
"""
import os
import re
import shutil
import socket
import subprocess

import spoolt
from spoolt import check, write

t = spoolt.Suite(__file__)
HEADER = os.path.join(spoolt.SRC, "agent", "include", "spool", "spool.h")
# The public headers besides spool.h (spool/wire.h: the wire format).
MORE_HEADERS = [os.path.join(os.path.dirname(HEADER), "wire.h")]
PLUGINS = os.path.join(spoolt.BUILD, "test-plugins")
# Declared in spool.h for plugins to define, not by the core.
PLUGIN_SIDE = {"spool_plugin_register"}


def header_functions(path):
    """Names of the functions spool.h declares, and those declared without SPOOL_API."""
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"#ifdef __cplusplus.*?#endif", " ", text, flags=re.S)
    text = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)
    names, unmarked = set(), set()
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
        elif ch == ";" and depth == 0:
            stmt = text[start:i].strip()
            start = i + 1
            if not stmt or re.match(r"(typedef|struct|enum|union)\b", stmt):
                continue
            m = re.search(r"(\w+)\s*\(", stmt)
            if m:
                names.add(m.group(1))
                if not stmt.startswith("SPOOL_API"):
                    unmarked.add(m.group(1))
    check(depth == 0, "unbalanced parentheses or braces parsing %s" % path)
    return names, unmarked


def exported_symbols(binary):
    out = subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        name = line.split()[-1]
        # Linker and C runtime symbols (_start, _edata, __bss_start, data_start,
        # _IO_stdin_used, sanitizer runtime hooks) and libc data copied into the
        # binary (stdout@GLIBC_2.2.5): not spool's.
        if name.startswith("_") or "@" in name or name in ("data_start", "main"):
            continue
        names.add(name)
    return names


@t.case
def exports_are_exactly_spool_h(tmp):
    declared, unmarked = header_functions(HEADER)
    for h in MORE_HEADERS:
        more, more_unmarked = header_functions(h)
        declared, unmarked = declared | more, unmarked | more_unmarked
    check(len(declared) > 40, "parsed only %d functions from %s: %s"
          % (len(declared), HEADER, sorted(declared)))
    check(not unmarked, "spool.h declares functions without SPOOL_API: %s" % sorted(unmarked))
    api = declared - PLUGIN_SIDE
    exported = exported_symbols(spoolt.BIN)
    extra = sorted(exported - api)
    missing = sorted(api - exported)
    check(not extra and not missing,
          "the binary's exports differ from spool.h's API\n"
          "  exported but not in spool.h (%d): %s\n"
          "  in spool.h but not exported (%d): %s" % (len(extra), " ".join(extra),
                                                       len(missing), " ".join(missing)))
    check(not (exported & PLUGIN_SIDE), "the binary defines %s" % (exported & PLUGIN_SIDE))


def plugin_config(tmp, plugdir, out, type_, prefix):
    return write(os.path.join(tmp, "spool-%s.yaml" % type_), f"""
service:
  data_dir: {tmp}/data-{type_}
  plugin_dir: {plugdir}
topics:
  app: {{}}
inputs:
  - type: stdin
    name: in
    topic: app
outputs:
  - type: {type_}
    name: ext
    topics: [app]
    path: {out}
    prefix: {prefix}
""")


def run_lines(cfg, out):
    c = spoolt.run(["check", "-c", cfg])
    check(c.returncode == 0, "check failed: %s" % c.stderr.decode(errors="replace"))
    p = spoolt.run(["run", "-c", cfg], input=b"one\ntwo\nthree\n", timeout=60)
    check(p.returncode == 0, p.stderr.decode(errors="replace"))
    return spoolt.read_lines(out)


@t.case
def abi1_plugin_still_loads_and_runs(tmp):
    """Built against spool.h as it stood at 9cd97c0 (no abi_signature field)."""
    plugdir = os.path.join(PLUGINS, "abi_v1_plugin")
    so = os.path.join(plugdir, "abi_v1_plugin.so")
    pl = spoolt.run(["plugins", "--plugin-dir", plugdir])
    check(pl.returncode == 0 and b"refused" not in pl.stderr, pl.stderr)
    check(("output abi_v1 (%s)" % so).encode() in pl.stdout, pl.stdout[-3000:])
    check(b"    every " in pl.stdout, "option table of the ABI 1 plugin not listed")
    out = os.path.join(tmp, "v1.txt")
    lines = run_lines(plugin_config(tmp, plugdir, out, "abi_v1", "old"), out)
    # Records, their headers and the option values all arrive intact: the
    # strides of spool_record, spool_header and spool_option agree.
    check(len(lines) == 3, lines)
    for i, (line, value) in enumerate(zip(lines, (b"one", b"two", b"three"))):
        check(re.fullmatch(rb"old 0:%d:%s host=[^,=]+,input=in" % (i, value), line),
              "line %d: %r" % (i, line))


def refused(tmp, name, so_name, expect):
    plugdir = os.path.join(PLUGINS, name)
    so = os.path.join(plugdir, so_name).encode()
    cfg = write(os.path.join(tmp, name + ".yaml"), f"""
service:
  data_dir: {tmp}/data
  plugin_dir: {plugdir}
inputs:
  - type: stdin
""")
    c = spoolt.run(["check", "-c", cfg])
    check(c.returncode == 2, "check should refuse %s: %r" % (name, c))
    line = [l for l in c.stderr.splitlines() if so in l]
    check(line, "no message naming %s in: %s" % (so, c.stderr))
    for e in expect:
        check(e in line[0], "expected %r in %r" % (e, line[0]))
    r = spoolt.run(["run", "-c", cfg], input=b"")
    check(r.returncode == 2, "run should refuse %s: %r" % (name, r))
    check(any(so in l and expect[0] in l for l in r.stderr.splitlines()), r.stderr)
    pl = spoolt.run(["plugins", "--plugin-dir", plugdir])
    check(so in pl.stderr and expect[0] in pl.stderr, pl.stderr)
    check(so not in pl.stdout, "a refused plugin is listed: %s" % pl.stdout[-2000:])
    return line[0]


@t.case
def wrong_signature_is_refused(tmp):
    """Its abi_signature says spool_chunk was 8 bytes larger where it was built."""
    msg = refused(tmp, "abi_bad_signature", "abi_bad_signature.so",
                  [b"refused: ABI signature mismatch", b"built against a spool.h with record ",
                   b"this spool expects record ", b"rebuild it against this spool's spool/spool.h"])
    sizes = re.findall(rb"record (\d+), header (\d+), option (\d+), chunk (\d+), plugin (\d+)",
                       msg)
    check(len(sizes) == 2, msg)
    theirs, ours = [list(map(int, s)) for s in sizes]
    check(theirs[:3] == ours[:3] and theirs[4] == ours[4] and theirs[3] == ours[3] + 8,
          "sizes in the message: built against %r, expects %r" % (theirs, ours))


@t.case
def wrong_abi_version_is_refused(tmp):
    refused(tmp, "bad_abi_plugin", "bad_abi_plugin.so",
            [b"refused: built against spool ABI version 42",
             b"this spool expects ABI version 1"])


@t.case
def out_of_tree_plugin_builds_with_pkg_config(tmp):
    """Installs the dev component into a temporary prefix and builds
    tests/helpers/test_plugin's source against the installed header only."""
    prefix = os.path.join(tmp, "prefix")
    inst = subprocess.run(["cmake", "--install", spoolt.BUILD, "--prefix", prefix,
                           "--component", "dev"], capture_output=True, text=True)
    check(inst.returncode == 0, inst.stdout + inst.stderr)
    pcdir = os.path.join(prefix, "share", "pkgconfig")
    check(os.path.exists(os.path.join(pcdir, "spool.pc")), os.listdir(prefix))
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir, PKG_CONFIG_LIBDIR=pcdir)
    pc = subprocess.run(["pkg-config", "--cflags", "spool"], capture_output=True, text=True,
                        env=env)
    check(pc.returncode == 0, pc.stderr)
    cflags = pc.stdout.split()
    check(cflags == ["-I" + os.path.join(prefix, "include")], "cflags: %r" % cflags)
    installed = os.path.join(prefix, "include", "spool", "spool.h")
    check(open(installed, "rb").read() == open(HEADER, "rb").read(), "installed header differs")
    for h in MORE_HEADERS:
        inst = os.path.join(prefix, "include", "spool", os.path.basename(h))
        check(os.path.exists(inst) and open(inst, "rb").read() == open(h, "rb").read(),
              "installed %s differs" % os.path.basename(h))
    ver = subprocess.run(["pkg-config", "--modversion", "spool"], capture_output=True, text=True,
                         env=env)
    check(ver.returncode == 0 and re.match(r"\d+\.\d+", ver.stdout), ver.stdout + ver.stderr)
    # A copy of the source outside the tree, so no "spool/spool.h" but the
    # installed one can be found; hidden visibility, as careful plugin
    # builds use: spool.h's declaration still exports spool_plugin_register.
    src = os.path.join(tmp, "plugin", "test_plugin.c")
    os.makedirs(os.path.dirname(src))
    shutil.copy(os.path.join(spoolt.SRC, "tests", "helpers", "test_plugin", "test_plugin.c"), src)
    plugdir = os.path.join(tmp, "plugins")
    os.makedirs(plugdir)
    so = os.path.join(plugdir, "test_plugin.so")
    cc = os.environ.get("CC", "cc")
    b = subprocess.run([cc] + cflags + ["-std=gnu11", "-Wall", "-Wextra", "-Werror",
                                        "-Wno-unused-parameter", "-fvisibility=hidden",
                                        "-shared", "-fPIC", "-o", so, src],
                       capture_output=True, text=True, cwd=os.path.dirname(src))
    check(b.returncode == 0, b.stderr)
    pl = spoolt.run(["plugins", "--plugin-dir", plugdir])
    check(("output test_ext (%s)" % so).encode() in pl.stdout, pl.stderr + pl.stdout[-2000:])
    out = os.path.join(tmp, "ext.txt")
    lines = run_lines(plugin_config(tmp, plugdir, out, "test_ext", "oot"), out)
    check(lines == [b"oot 0:0:one", b"oot 0:1:two", b"oot 0:2:three"], lines)


t.main()
