#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real mail servers the
# integration tests start (Dovecot, Postfix, mutt) when missing, then runs every test.
# Usage: scripts/test.sh                  every test binary (CI)
#        scripts/test.sh --test faults    only what the arguments select (cargo test args)
# Every selected test binary runs even when an earlier one fails (--no-fail-fast), so one
# failure never hides another; the exit status is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the integration tests start a private Postfix, which must run as root" >&2
    exit 1
fi
bash scripts/install-test-deps.sh
if [ "$#" -eq 0 ]; then
    set -- --lib --bins --tests
fi
cargo test --locked --no-fail-fast "$@"
