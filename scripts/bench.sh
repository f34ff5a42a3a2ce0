#!/usr/bin/env bash
# Run the benchmarks in release mode and write their figures to a file.
#
#   scripts/bench.sh            every [[bench]] in Cargo.toml (ingest latency scale memory, rules…)
#   scripts/bench.sh ingest     only the ones named
#
# Root on Debian, like scripts/test.sh: the benchmarks start their own private Dovecot and
# Postfix on 127.0.0.1 (tests/harness/mailservers.sh) and stop them at the end. Nothing leaves
# the machine. Parameters (environment): BENCH_INGEST_N, BENCH_ROUNDS, BENCH_LATENCY_M,
# BENCH_SCALE_SIZES, BENCH_SCALE_FRESH, BENCH_BACKLOG — see docs/BENCHMARKS.md.
#
# Output: $BENCH_OUT (default target/bench-results)/bench-UTCSTAMP.txt with the machine and one
# line per figure (also printed), and bench-UTCSTAMP.log with the benchmarks' stderr.
# Not part of CI: the whole run takes ~10–15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "scripts/bench.sh: the benchmarks start a private Postfix, which must run as root" >&2
    exit 1
fi
bash scripts/install-test-deps.sh >&2

if [[ $# -gt 0 ]]; then
    names=("$@")
else
    mapfile -t names < <(awk '/^\[\[bench\]\]/ {b=1; next} /^\[/ {b=0} b && /^name *=/ {gsub(/[" ]/, "", $0); sub(/name=/, "", $0); print}' Cargo.toml)
fi
[[ ${#names[@]} -gt 0 ]] || { echo "scripts/bench.sh: no [[bench]] targets in Cargo.toml" >&2; exit 1; }

out=${BENCH_OUT:-target/bench-results}
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$out/bench-$stamp.txt
log=$out/bench-$stamp.log

args=()
for n in "${names[@]}"; do args+=(--bench "$n"); done
echo "building ${names[*]} (release)…" >&2
cargo bench --locked --no-run "${args[@]}" 2>>"$log"

{
    echo "# postdesk benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "# command: scripts/bench.sh ${*:-}"
    echo "# nproc: $(nproc)"
    echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "# memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
    echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# kernel: $(uname -r); rustc: $(rustc --version | cut -d' ' -f2); dovecot: $(dovecot --version 2>/dev/null | cut -d' ' -f1); postfix: $(postconf -d -h mail_version 2>/dev/null)"
} | tee "$results"

status=0
for n in "${names[@]}"; do
    echo "== $n" | tee -a "$results"
    start=$(date +%s)
    # Each benchmark has its own watchdog (it stops its mail servers when over budget); the
    # timeout here is only the last resort.
    if ! timeout --kill-after=30 1200 cargo bench --locked --bench "$n" 2>>"$log" | tee -a "$results"; then
        echo "$n: FAILED (see $log)" | tee -a "$results"
        status=1
    fi
    echo "# $n took $(($(date +%s) - start))s" | tee -a "$results"
done
echo "results: $results (stderr: $log)" >&2
exit $status
