#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real mail servers the
# integration tests start (Dovecot, Postfix, mutt) when missing, then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the integration tests start a private Postfix, which must run as root" >&2
    exit 1
fi
bash scripts/install-test-deps.sh
cargo test --locked --lib --bins --tests "$@"
