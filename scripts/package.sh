#!/usr/bin/env bash
# Build the Debian package of this tree: target/debian/postdesk_VERSION_amd64.deb.
# Usage: scripts/package.sh   (installs cargo-deb when missing; needs a C compiler)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\b"; then
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
# The `dist` profile: release code without debug info (cargo-deb strips what is left).
exec cargo deb --locked --profile dist "$@"
