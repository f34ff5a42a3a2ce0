#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real mail servers the
# integration tests start (Dovecot, Postfix, mutt) when missing, then runs every test.
# Usage: scripts/test.sh                  every test binary (CI)
#        scripts/test.sh --test faults    only what the arguments select (cargo test args)
# Every selected test binary runs even when an earlier one fails (--no-fail-fast), so one
# failure never hides another; the exit status is non-zero if any failed.
# The suites that drive the store (pipeline, agents, rules, SLA, knowledge, CSAT) then run a
# second time on PostgreSQL (POSTDESK_TEST_BACKEND=postgres: a private cluster started by
# tests/harness/postgres.sh, a fresh database per desk); tests/postgres.rs runs several nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the integration tests start a private Postfix, which must run as root" >&2
    exit 1
fi
bash scripts/install-test-deps.sh
if [ "$#" -gt 0 ]; then
    exec cargo test --locked --no-fail-fast "$@"
fi
status=0
cargo test --locked --no-fail-fast --lib --bins --tests || status=$?
echo "== the store-driven suites again, on PostgreSQL" >&2
POSTDESK_TEST_BACKEND=postgres cargo test --locked --no-fail-fast \
    --test pipeline --test agents --test rules --test sla --test knowledge --test csat || status=$?
exit $status
