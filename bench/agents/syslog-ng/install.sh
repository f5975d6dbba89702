#!/bin/sh
# Prints the path of a syslog-ng binary with the http() module.
# Uses the system's syslog-ng if it has the http module. Otherwise it does NOT
# `apt-get install syslog-ng-core`: Debian's syslog-ng-core conflicts with rsyslog
# (both provide system-log-daemon), so installing it would remove rsyslog. Instead
# it downloads syslog-ng-core and syslog-ng-mod-http with `apt-get download`,
# installs their library dependencies with apt-get, unpacks both packages under
# $BENCH_CACHE/syslog-ng (nothing runs as a service) and prints a wrapper that runs
# the unpacked binary with its own library and module paths.
set -e
cache=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spool-bench}
if command -v syslog-ng >/dev/null 2>&1 && \
   ls /usr/lib/syslog-ng/*/libhttp.so >/dev/null 2>&1; then
    command -v syslog-ng
    exit 0
fi
if [ -n "$BENCH_NO_INSTALL" ] && [ ! -x "$cache/syslog-ng/syslog-ng" ]; then
    echo "bench: not installed and BENCH_NO_INSTALL is set" >&2
    exit 1
fi
root="$cache/syslog-ng/root"
wrapper="$cache/syslog-ng/syslog-ng"
if [ ! -x "$wrapper" ]; then
    echo "bench: unpacking syslog-ng-core + syslog-ng-mod-http under $cache/syslog-ng" >&2
    mkdir -p "$cache/syslog-ng/debs" "$root"
    cd "$cache/syslog-ng/debs"
    if ! apt-get download syslog-ng-core syslog-ng-mod-http >&2; then
        apt-get update >&2
        apt-get download syslog-ng-core syslog-ng-mod-http >&2
    fi
    deps=""
    for d in ./*.deb; do
        # first alternative of each dependency, without version constraints
        for p in $(dpkg-deb -f "$d" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g'); do
            case "$p" in syslog-ng*|"") ;; *) deps="$deps $p" ;; esac
        done
    done
    missing=""
    for p in $deps; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2
    fi
    for d in ./*.deb; do
        dpkg-deb -x "$d" "$root"
    done
    moddir=$(dirname "$(ls "$root"/usr/lib/syslog-ng/*/libaffile.so | head -1)")
    cat > "$wrapper" <<EOW
#!/bin/sh
export LD_LIBRARY_PATH="$root/usr/lib/syslog-ng\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$root/usr/sbin/syslog-ng" --module-path="$moddir" "\$@"
EOW
    chmod +x "$wrapper"
fi
echo "$wrapper"
