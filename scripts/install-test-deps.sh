#!/usr/bin/env bash
# Install the real mail servers the integration tests run against:
# Dovecot (IMAP + LMTP), Postfix (SMTP), mutt and openssl; Chromium for the report test; and
# PostgreSQL for the PostgreSQL backend's tests.
# Idempotent: does nothing when all binaries are already present.
# Must run as root (apt-get). See tests/harness/README.md.
set -euo pipefail

# cargo-deb builds the Debian package that tests/package.rs installs (pinned: its options are
# part of our scripts). From crates.io, built once (~1.5 min on 2 cores).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\b"; then
    echo "install-test-deps: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# Headless Chromium renders the HTML report in tests/report_browser.rs (which fails, never
# skips, without it). Installed only when missing.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: must run as root to install chromium (apt-get install)" >&2
        exit 1
    fi
    echo "install-test-deps: installing chromium" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

# PostgreSQL server binaries for the PostgreSQL backend's tests and benches: each test binary
# starts a private cluster of its own (tests/harness/postgres.sh: initdb in a temp folder, own
# port on 127.0.0.1, unprivileged user). Debian's `postgresql` brings postgresql-15 (contrib
# included) and psql. Installed only when no /usr/lib/postgresql/*/bin/initdb exists. Debian's
# postinst creates and may start a system cluster `main` (port 5432): left alone, never used.
have_pg_server() {
    local f
    for f in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$f" ] && return 0
    done
    return 1
}
if ! have_pg_server; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: must run as root to install postgresql (apt-get install)" >&2
        exit 1
    fi
    echo "install-test-deps: installing postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    have_pg_server || { echo "install-test-deps: postgresql installed but no initdb under /usr/lib/postgresql/*/bin" >&2; exit 1; }
fi

have_all() {
    command -v dovecot >/dev/null 2>&1 &&
        [ -x /usr/sbin/postfix ] &&
        command -v mutt >/dev/null 2>&1 &&
        command -v openssl >/dev/null 2>&1
}

if have_all; then
    echo "install-test-deps: dovecot, postfix, mutt, openssl already installed" >&2
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: must run as root (apt-get install)" >&2
    exit 1
fi

# Preseed Postfix so the package neither asks questions nor configures
# (and starts) a system-wide mail server we would then have to fight.
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
SEL

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    dovecot-imapd dovecot-lmtpd postfix mutt openssl ca-certificates

# On a normal machine apt starts system-wide daemons on 25/143/993. Our test
# instances use their own ports and dirs, but keep the machine clean anyway.
service dovecot stop >/dev/null 2>&1 || true
service postfix stop >/dev/null 2>&1 || true
# Fallback when there is no init system: signal the system masters by pid file,
# checking /proc/PID/cmdline so a stale pid never hits another process.
stop_pidfile() {
    local pidfile=$1 name=$2 pid
    [ -r "$pidfile" ] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] || return 0
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
}
stop_pidfile /run/dovecot/master.pid dovecot
stop_pidfile /var/spool/postfix/pid/master.pid master

have_all || { echo "install-test-deps: install incomplete" >&2; exit 1; }
echo "install-test-deps: done" >&2
