#!/usr/bin/env bash
# Measures the release controller running real amphorae on this host (local
# compute and network drivers, our agent, haproxy, keepalived): creates,
# failovers, the ACTIVE_STANDBY traffic gap, memory. Writes the section
# "Controller with local amphorae" of bench/RESULTS.md, leaving the others
# alone. Needs root and haproxy/keepalived. Not part of CI.
#   bench/run-lifecycle.sh [amphora-bench lifecycle options, e.g. --runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p amphora-controller -p amphora-agent -p amphora-bench
# Short: haproxy's socket paths live below it.
work="$(mktemp -d /tmp/lc.XXXXXX)"
teardown() {
    # The bench tears each system down itself; this also covers a crash or
    # an interrupt. Stop the controller it started if still running (its
    # pid is in controller.pid), then delete the fabric.
    for conf in "$work"/*/octavia.conf; do
        [ -f "$conf" ] || continue
        pidfile="$(dirname "$conf")/controller.pid"
        if [ -f "$pidfile" ]; then
            pid="$(cat "$pidfile")"
            if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$conf"; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            fi
        fi
        target/release/amphora-controller --config-file "$conf" local teardown >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap teardown EXIT
target/release/amphora-bench lifecycle --work-dir "$work" "$@"
