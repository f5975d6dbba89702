#!/bin/sh
# Prints the path of rsyslogd. If it is missing: `apt-get install rsyslog`, unless
# syslog-ng-core is installed as the system logger (the two packages conflict, and
# apt would remove it); then rsyslog is downloaded with `apt-get download`, its
# library dependencies installed with apt-get, and it is unpacked under
# $BENCH_CACHE/rsyslog and run through a wrapper with its own module directory (-M).
# Nothing is started as a service.
set -e
cache=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spool-bench}
if command -v rsyslogd >/dev/null 2>&1; then
    command -v rsyslogd
    exit 0
fi
if [ -x /usr/sbin/rsyslogd ]; then
    echo /usr/sbin/rsyslogd
    exit 0
fi
if [ -n "$BENCH_NO_INSTALL" ] && [ ! -x "$cache/rsyslog/rsyslogd" ]; then
    echo "bench: not installed and BENCH_NO_INSTALL is set" >&2
    exit 1
fi
if ! dpkg -s syslog-ng-core >/dev/null 2>&1; then
    echo "bench: apt-get install rsyslog" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rsyslog >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rsyslog >&2
    fi
    # the package may start rsyslog as the system logger; the bench runs its own copy
    echo /usr/sbin/rsyslogd
    exit 0
fi
root="$cache/rsyslog/root"
wrapper="$cache/rsyslog/rsyslogd"
if [ ! -x "$wrapper" ]; then
    mkdir -p "$cache/rsyslog/debs" "$root"
    cd "$cache/rsyslog/debs"
    apt-get download rsyslog >&2 || { apt-get update >&2; apt-get download rsyslog >&2; }
    deps=$(dpkg-deb -f ./rsyslog_*.deb Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g')
    missing=""
    for p in $deps; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2
    fi
    dpkg-deb -x ./rsyslog_*.deb "$root"
    cat > "$wrapper" <<EOW
#!/bin/sh
exec "$root/usr/sbin/rsyslogd" -M "$root/usr/lib/x86_64-linux-gnu/rsyslog" "\$@"
EOW
    chmod +x "$wrapper"
fi
echo "$wrapper"
