#!/usr/bin/env bash
# Private, real mail servers for Postdesk integration tests:
# Dovecot (IMAP, IMAPS, LMTP) + Postfix (SMTP with STARTTLS, SMTPS with AUTH),
# all on 127.0.0.1, all state under one directory, free ports picked per run,
# so several test runs can run side by side.
#
#   mailservers.sh start  DIR   -> last stdout line: "ready DIR/env"
#   mailservers.sh stop   DIR   -> never fails if already stopped
#   mailservers.sh status DIR
#
# Must run as root: Postfix's master(8) refuses anything else.
# Facts behind the choices: /work/shared/docs/MAIL-SERVERS.md and
# tests/harness/README.md.
set -euo pipefail

readonly DOMAIN=example.test
readonly PASSWORD=secret
readonly MAIL_UID=5000
readonly MAIL_GID=5000
readonly DEFAULT_USERS="support billing agent agent2 alice bob carol mallory vacation external"
readonly READY_TIMEOUT=15 # seconds to wait for the greetings
readonly STOP_TIMEOUT=10  # seconds to wait for processes to exit

log() { printf 'mailservers: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: mailservers.sh start DIR    start private Dovecot + Postfix, write DIR/env
       mailservers.sh stop DIR     stop them (no error if not running)
       mailservers.sh status DIR   show whether they run
env:   EXTRA_USERS="name1 name2"   more users @example.test (password "secret")
       OAUTH_URL=http://127.0.0.1:PORT/introspect
                                   also offer SASL XOAUTH2 and OAUTHBEARER, checking bearer
                                   tokens at this RFC 7662 introspection endpoint (kept in
                                   DIR/oauth-url, so a restart of DIR keeps it)
EOF
    exit 2
}

# ---------------------------------------------------------------------------
# Paths. DIR must be absolute and free of characters that would need quoting,
# because it lands verbatim in dovecot.conf, main.cf and the KEY=value env file.
# ---------------------------------------------------------------------------
set_paths() {
    DIR=$1
    [[ $DIR == /* ]] || DIR=$PWD/$DIR
    [[ $DIR =~ ^[A-Za-z0-9/._+-]+$ ]] ||
        die "DIR may only contain [A-Za-z0-9/._+-] (it is written unquoted into configs): $DIR"
    TLS=$DIR/tls
    DC=$DIR/dovecot
    DC_CONF=$DC/dovecot.conf
    DC_RUN=$DC/run # base_dir: sockets + master.pid
    DC_LOG=$DC/dovecot.log
    PF=$DIR/postfix
    PF_ETC=$PF/etc
    PF_QUEUE=$PF/queue
    PF_LOG=$PF/postfix.log
    MAIL=$DIR/mail
    MAILDIR_ROOT=$MAIL/$DOMAIN
    ENV_FILE=$DIR/env
}

# Canonicalise an existing DIR (resolves symlinks such as /tmp -> /private/tmp).
canon_dir() {
    DIR=$(cd "$DIR" && pwd -P)
    set_paths "$DIR"
}

# ---------------------------------------------------------------------------
# Process helpers. A pid is identified by "pid:starttime" so that a pid
# recycled by the kernel is never mistaken for ours.
# ---------------------------------------------------------------------------
# Print "STATE STARTTIME" of a pid from /proc/PID/stat (fields 3 and 22).
proc_stat() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # drop "pid (comm) ": comm may contain spaces
    # shellcheck disable=SC2086 # word splitting wanted
    set -- $stat
    printf '%s %s' "$1" "${20}"
}

# pid:starttime still running? A zombie counts as gone: PID 1 in some
# containers reaps orphans only every second or two.
proc_alive() {
    local pid=${1%%:*} st=${1##*:} state now
    read -r state now <<<"$(proc_stat "$pid")" || return 1
    [ -n "$now" ] && [ "$now" = "$st" ] && [ "$state" != Z ] && [ "$state" != X ]
}

proc_cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }

# Dovecot master of this instance: pid file in base_dir, and its cmdline names
# our config file.
dovecot_pid() {
    local pid
    [ -r "$DC_RUN/master.pid" ] || return 1
    pid=$(tr -dc '0-9' <"$DC_RUN/master.pid")
    [ -n "$pid" ] || return 1
    [[ $(proc_cmdline "$pid") == *"dovecot -c $DC_CONF"* ]] || return 1
    printf '%s' "$pid"
}

# Postfix master of this instance: pid file in the queue dir; the master's
# cmdline is just "master -w", so confirm via MAIL_CONFIG in its environment.
postfix_pid() {
    local pid
    [ -r "$PF_QUEUE/pid/master.pid" ] || return 1
    pid=$(tr -dc '0-9' <"$PF_QUEUE/pid/master.pid")
    [ -n "$pid" ] || return 1
    [[ $(proc_cmdline "$pid") == *master* ]] || return 1
    { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "MAIL_CONFIG=$PF_ETC" || return 1
    printf '%s' "$pid"
}

# Print "pid:starttime" for PID and all its descendants.
proc_tree() {
    local pid=$1 state st child
    read -r state st <<<"$(proc_stat "$pid")" || return 0
    [ -n "$st" ] || return 0
    printf '%s:%s\n' "$pid" "$st"
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        proc_tree "$child"
    done
}

# ---------------------------------------------------------------------------
# stop
# ---------------------------------------------------------------------------
cmd_stop() {
    local masters=() tree=() logs=() others=() p deadline left logs_signalled=0
    p=$(dovecot_pid) && masters+=("$p")
    p=$(postfix_pid) && masters+=("$p")
    if [ ${#masters[@]} -eq 0 ]; then
        log "not running: $DIR"
        return 0
    fi
    # Remember the children too: they must be gone before we report stopped.
    for p in "${masters[@]}"; do
        mapfile -t -O "${#tree[@]}" tree < <(proc_tree "$p")
    done
    for p in "${tree[@]}"; do
        if [[ " ${masters[*]} " == *" ${p%%:*} "* ]]; then
            continue
        elif [[ $(proc_cmdline "${p%%:*}") == */log* ]]; then
            logs+=("$p") # Dovecot's log process
        else
            others+=("$p")
        fi
    done

    for p in "${masters[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # Dovecot's master does not signal imap processes that hold a client (an
    # IDLE session kept one alive ~10 s) and waits for them: signal every
    # process of the instance ourselves; each exits at once. Dovecot's log
    # process goes last so the others' final lines still reach the log.
    for p in "${others[@]}"; do
        if proc_alive "$p"; then kill -TERM "${p%%:*}" 2>/dev/null || true; fi
    done

    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        left=()
        for p in "${tree[@]}"; do
            if proc_alive "$p"; then left+=("$p"); fi
        done
        [ ${#left[@]} -eq 0 ] && break
        if [ -n "${MAILSERVERS_DEBUG:-}" ]; then log "${SECONDS}s waiting for: ${left[*]%%:*}"; fi
        if [ $logs_signalled = 0 ] && [ ${#logs[@]} -gt 0 ]; then
            # Only the masters and the log process left (the Dovecot master
            # waits ~1.5 s for its log process otherwise).
            local busy=0
            for p in "${others[@]}"; do
                if proc_alive "$p"; then busy=1; fi
            done
            if [ $busy = 0 ]; then
                for p in "${logs[@]}"; do
                    if proc_alive "$p"; then kill -TERM "${p%%:*}" 2>/dev/null || true; fi
                done
                logs_signalled=1
            fi
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "still running after ${STOP_TIMEOUT}s, sending SIGKILL: ${left[*]%%:*}"
            for p in "${left[@]}"; do
                if proc_alive "$p"; then kill -KILL "${p%%:*}" 2>/dev/null || true; fi
            done
            break
        fi
        sleep 0.05
    done
    log "stopped: $DIR"
}

cmd_status() {
    local rc=0 p
    if p=$(dovecot_pid); then echo "dovecot running pid $p"; else echo "dovecot stopped"; rc=3; fi
    if p=$(postfix_pid); then echo "postfix running pid $p"; else echo "postfix stopped"; rc=3; fi
    [ -r "$ENV_FILE" ] && cat "$ENV_FILE"
    return "$rc"
}

# ---------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------

# Print N distinct free loopback ports. The kernel picks them (bind to port 0,
# all sockets held open together so they are distinct); a small race remains
# until the daemons bind, which start() covers by retrying.
pick_ports() {
    local n=$1 py=
    # Prefer the system python: a pyenv shim costs ~0.1 s of start time.
    if [ -x /usr/bin/python3 ]; then
        py=/usr/bin/python3
    elif command -v python3 >/dev/null 2>&1; then
        py=python3
    fi
    if [ -n "$py" ]; then
        "$py" - "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
    else
        # Fallback: random ports below the ephemeral range, checked with ss.
        local ports=() p
        while [ ${#ports[@]} -lt "$n" ]; do
            p=$((20000 + RANDOM % 12000))
            [[ " ${ports[*]} " == *" $p "* ]] && continue
            ss -Htln "sport = :$p" | grep -q . && continue
            ports+=("$p")
        done
        echo "${ports[*]}"
    fi
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# Private CA + leaf. The leaf must be CA:FALSE: rustls rejects a self-signed
# CA:TRUE certificate used as the server's own (CaUsedAsEndEntity).
# ECDSA P-256 keys: generated in milliseconds (RSA 2048 costs ~0.15 s each).
make_tls() {
    if [ -s "$TLS/ca.pem" ] && [ -s "$TLS/cert.pem" ] && [ -s "$TLS/key.pem" ]; then
        return 0 # restart of an existing DIR: keep the CA clients already trust
    fi
    mkdir -p "$TLS"
    local ossl_log=$TLS/openssl.log
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
            -subj "/CN=Postdesk Test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$TLS/ca.key" -out "$TLS/ca.pem"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -subj "/CN=localhost" \
            -keyout "$TLS/key.pem" -out "$TLS/cert.csr"
        printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$TLS/leaf.ext"
        openssl x509 -req -in "$TLS/cert.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
            -CAcreateserial -days 3650 -sha256 -extfile "$TLS/leaf.ext" -out "$TLS/cert.pem"
    } >"$ossl_log" 2>&1 || {
        cat "$ossl_log" >&2
        die "openssl failed"
    }
    chmod 0600 "$TLS/ca.key" "$TLS/key.pem" # both daemons read keys as root
    chmod 0644 "$TLS/ca.pem" "$TLS/cert.pem"
}

make_users() {
    local users=$1 u
    : >"$DC/users"
    : >"$PF_ETC/vmailbox"
    mkdir -p "$MAILDIR_ROOT"
    for u in $users; do
        [[ $u =~ ^[a-z0-9._-]+$ ]] || die "bad user name '$u' (lowercase [a-z0-9._-] only)"
        # uid/gid/home come from default_fields in dovecot.conf.
        printf '%s@%s:{PLAIN}%s::::::\n' "$u" "$DOMAIN" "$PASSWORD" >>"$DC/users"
        printf '%s@%s OK\n' "$u" "$DOMAIN" >>"$PF_ETC/vmailbox"
        # Pre-create the Maildir so tests can preload it by writing files directly.
        mkdir -p "$MAILDIR_ROOT/$u/Maildir/cur" "$MAILDIR_ROOT/$u/Maildir/new" "$MAILDIR_ROOT/$u/Maildir/tmp"
    done
    # ghost@: Postfix accepts it, Dovecot's LMTP then answers 550 "no such user", and Postfix
    # sends a real DSN back to the sender: how tests get a genuine bounce of our mail.
    printf 'ghost@%s OK\n' "$DOMAIN" >>"$PF_ETC/vmailbox"
    # The auth worker runs as user dovecot: it must be able to read the users
    # file, or Postfix answers "451 Temporary internal error" to AUTH.
    chgrp dovecot "$DC/users"
    chmod 0640 "$DC/users"
    # Dovecot refuses to access mail as root: a numeric uid/gid without a passwd entry.
    chown -R "$MAIL_UID:$MAIL_GID" "$MAIL"
    chmod 0755 "$MAIL"
}

# OAuth2 (MAIL-SERVERS.md, "OAuth2 on a private Dovecot"): with an introspection URL, XOAUTH2
# and OAUTHBEARER are offered besides PLAIN/LOGIN, checked by a second passdb (driver oauth2).
# Tokens are checked only at login. Without one, the config is exactly as before.
oauth_conf() {
    local url=${OAUTH_URL:-}
    if [ -z "$url" ] && [ -r "$DIR/oauth-url" ]; then url=$(cat "$DIR/oauth-url"); fi
    [ -n "$url" ] || return 0
    [[ $url =~ ^http://127\.0\.0\.1:[0-9]+/[A-Za-z0-9/_-]*$ ]] || die "OAUTH_URL must be http://127.0.0.1:PORT/path: $url"
    printf '%s\n' "$url" >"$DIR/oauth-url"
    printf '%s\n' \
        "introspection_mode = post" \
        "introspection_url = $url" \
        "client_id = dovecot" \
        "client_secret = dovecot-test-secret" \
        "username_attribute = username" \
        "username_format = %Lu" \
        "active_attribute = active" \
        "active_value = true" \
        "timeout_msecs = 5000" >"$DC/oauth2.conf.ext"
    chmod 0644 "$DC/oauth2.conf.ext"
    OAUTH_MECHS=" xoauth2 oauthbearer"
    OAUTH_PASSDB="
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DC/oauth2.conf.ext
}"
    PLAIN_ONLY="
  mechanisms = plain login"
}

write_dovecot_conf() {
    local imap_port=$1 imaps_port=$2 instance
    OAUTH_MECHS='' OAUTH_PASSDB='' PLAIN_ONLY=''
    oauth_conf
    # Unique per DIR so `doveadm -i`, ps titles and the instance registry never mix runs.
    instance=postdesk-$(printf '%s' "$DIR" | sha1sum | cut -c1-12)
    cat >"$DC_CONF" <<EOF
# Generated by tests/harness/mailservers.sh - private test instance.
instance_name = $instance
base_dir = $DC_RUN
state_dir = $DC/state
log_path = $DC_LOG
verbose_proctitle = yes

protocols = imap lmtp
listen = 127.0.0.1

ssl = yes
ssl_cert = <$TLS/cert.pem
ssl_key = <$TLS/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
# Tests also log in over plain loopback.
disable_plaintext_auth = no
auth_mechanisms = plain login$OAUTH_MECHS
# "support" logs in as support@$DOMAIN.
auth_default_realm = $DOMAIN
auth_verbose = yes
# Default 2 s per failed login; tests of wrong passwords should be fast.
auth_failure_delay = 0

# Mail belongs to a numeric uid/gid with no passwd entry (Dovecot refuses uid 0).
first_valid_uid = $MAIL_UID
last_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
last_valid_gid = $MAIL_GID
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 100
recipient_delimiter = +
# Keep "support+token@..." in the Received "for" clause, not the stripped address.
lmtp_hdr_delivery_address = original

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu $DC/users$PLAIN_ONLY
}$OAUTH_PASSDB
userdb {
  driver = passwd-file
  args = username_format=%Lu $DC/users
  default_fields = uid=$MAIL_UID gid=$MAIL_GID home=$MAIL/%Ld/%Ln
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  # Postfix's lmtp client (user postfix) writes here.
  unix_listener lmtp {
    mode = 0666
  }
}
service anvil {
  # Dovecot delays every login from an IP after a failed one (auth penalty,
  # 2 s doubling to 15 s). All tests share 127.0.0.1, so one wrong-password
  # test would slow the next ones. An unreachable socket disables the penalty.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  # Postfix smtpd SASL (smtpd_sasl_type = dovecot).
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
protocol lmtp {
  postmaster_address = postmaster@$DOMAIN
}
EOF
}

write_postfix_conf() {
    local smtp_port=$1 smtps_port=$2
    cat >"$PF_ETC/main.cf" <<EOF
# Generated by tests/harness/mailservers.sh - private test instance.
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop

# No syslog here: Postfix is silent on failure unless it logs to a file,
# which must lie under maillog_file_prefixes.
maillog_file = $PF_LOG
maillog_file_prefixes = $PF

myhostname = localhost
mydomain = $DOMAIN
myorigin = \$mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Loopback clients may send without AUTH.
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP Postfix
smtpd_peername_lookup = no
biff = no
append_dot_mydomain = no
readme_directory = no

# Deliver only into Dovecot; nothing can leave the machine.
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$PF_ETC/vmailbox
virtual_transport = lmtp:unix:$DC_RUN/lmtp
recipient_delimiter = +
alias_maps =
alias_database =
local_recipient_maps =
relay_domains =
local_transport = error:local delivery disabled in test harness
default_transport = error:outbound mail disabled in test harness
relay_transport = error:outbound mail disabled in test harness

# Dovecot 2.3 LMTP does not offer SMTPUTF8: with it on, a client asking for
# SMTPUTF8 gets 250 from Postfix and the message then bounces silently at
# delivery. Off, such a client fails at once; raw UTF-8 headers still pass.
smtputf8_enable = no

# Tests send a 25 MB attachment (≈34 MB once base64-encoded).
message_size_limit = 52428800
mailbox_size_limit = 104857600
virtual_mailbox_limit = 104857600

# Keep failing test cases and retries fast.
smtpd_error_sleep_time = 0
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 15s
delay_warning_time = 0

# STARTTLS on the plain port, implicit TLS on the smtps port (master.cf).
smtpd_tls_cert_file = $TLS/cert.pem
smtpd_tls_key_file = $TLS/key.pem
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
smtp_tls_security_level = none

# SASL through Dovecot; AUTH is only offered over TLS.
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DC_RUN/auth-postfix
smtpd_sasl_auth_enable = yes
smtpd_tls_auth_only = yes
EOF

    # Our own master.cf: chroot column "n" everywhere, since Debian's chrooted
    # services cannot see Dovecot's sockets under DIR.
    cat >"$PF_ETC/master.cf" <<EOF
# Generated by tests/harness/mailservers.sh - private test instance.
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$smtp_port inet n - n - - smtpd
127.0.0.1:$smtps_port inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    # Postfix sleeps ~2 s at start when main.cf is from the current second.
    touch -d '-5 seconds' "$PF_ETC/main.cf" "$PF_ETC/master.cf" "$PF_ETC/vmailbox"
}

# Read the first line a server sends on PORT; succeed if it starts with PREFIX.
# Bash's /dev/tcp: no extra tools needed.
greeting_ok() {
    local port=$1 prefix=$2 quit=$3 line=
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    IFS= read -r -t 2 line <&3 || true
    printf '%s\r\n' "$quit" >&3 2>/dev/null || true
    exec 3<&- 3>&-
    [[ $line == "$prefix"* ]]
}

show_logs() {
    local f
    for f in "$DC_LOG" "$DC/stdout.log" "$PF_LOG" "$PF/stdout.log"; do
        [ -s "$f" ] || continue
        log "---- tail $f"
        tail -n 25 "$f" >&2
    done
}

# One launch attempt with the given ports. Returns 2 if a port was taken
# (caller retries with new ports), 1 on any other failure.
launch() {
    local imap=$1 imaps=$2 smtp=$3 smtps=$4 deadline imap_ok=0 smtp_ok=0
    write_dovecot_conf "$imap" "$imaps"
    write_postfix_conf "$smtp" "$smtps"
    : >"$DC_LOG"
    : >"$PF_LOG"

    # Both daemonise but inherit stdout/stderr: redirect, or a harness reading
    # our pipe would never see EOF.
    if ! dovecot -c "$DC_CONF" </dev/null >"$DC/stdout.log" 2>&1; then
        grep -q 'Address already in use' "$DC/stdout.log" "$DC_LOG" && return 2
        return 1
    fi
    # `postfix start` runs `master -w`, which returns once the master is up.
    if ! postfix -c "$PF_ETC" start </dev/null >"$PF/stdout.log" 2>&1; then
        grep -q 'Address already in use' "$PF/stdout.log" "$PF_LOG" && return 2
        return 1
    fi

    # An open port is not readiness: wait for the greetings.
    deadline=$((SECONDS + READY_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        [ $imap_ok = 1 ] || { greeting_ok "$imap" '* OK' 'a LOGOUT' && imap_ok=1; }
        [ $smtp_ok = 1 ] || { greeting_ok "$smtp" '220' 'QUIT' && smtp_ok=1; }
        [ $imap_ok = 1 ] && [ $smtp_ok = 1 ] && return 0
        grep -q 'Address already in use' "$DC_LOG" "$PF_LOG" 2>/dev/null && return 2
        sleep 0.05
    done
    log "timeout after ${READY_TIMEOUT}s (imap ready=$imap_ok smtp ready=$smtp_ok)"
    return 1
}

# Reuse the ports of a previous run in this DIR (so stop+start is a real
# restart that clients can reconnect to) when they are still free.
previous_ports() {
    [ -r "$ENV_FILE" ] || return 1
    local k v imap='' imaps='' smtp='' smtps=''
    while IFS='=' read -r k v; do
        case $k in
        IMAP_PORT) imap=$v ;; IMAPS_PORT) imaps=$v ;;
        SMTP_PORT) smtp=$v ;; SMTPS_PORT) smtps=$v ;;
        esac
    done <"$ENV_FILE"
    [ -n "$imap" ] && [ -n "$imaps" ] && [ -n "$smtp" ] && [ -n "$smtps" ] || return 1
    for v in "$imap" "$imaps" "$smtp" "$smtps"; do port_free "$v" || return 1; done
    echo "$imap $imaps $smtp $smtps"
}

cmd_start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (Postfix master refuses otherwise)"
    if ! command -v dovecot >/dev/null || [ ! -x /usr/sbin/postfix ]; then
        die "dovecot/postfix missing: run scripts/install-test-deps.sh"
    fi

    mkdir -p "$DIR"
    canon_dir
    # A running instance in DIR is restarted, not duplicated.
    if dovecot_pid >/dev/null || postfix_pid >/dev/null; then
        log "instance already running in $DIR: restarting"
        cmd_stop
    fi

    # Dovecot's mail processes (uid $MAIL_UID), its auth worker (dovecot) and
    # Postfix's lmtp client (postfix) all need to traverse DIR; mktemp -d makes it 0700.
    chmod 0711 "$DIR"
    mkdir -p "$DC" "$DC/state" "$PF_ETC" "$PF_QUEUE" "$PF/data" "$MAIL"
    chmod 0755 "$DC" "$PF" "$PF_ETC"
    chown postfix "$PF/data"
    # Stale pid files and sockets from an earlier run would confuse stop and
    # the daemons (and turn the disabled auth-penalty socket into errors).
    rm -rf "$DC_RUN"
    rm -f "$PF_QUEUE/pid/master.pid"

    mkdir -p "$DC_RUN"
    make_tls
    make_users "$DEFAULT_USERS ${EXTRA_USERS:-}"

    # Fail early and clearly if a parent directory blocks traversal.
    setpriv --reuid="$MAIL_UID" --regid="$MAIL_GID" --clear-groups test -w "$MAILDIR_ROOT" ||
        die "uid $MAIL_UID cannot reach $MAILDIR_ROOT: make every parent of DIR world-executable (o+x)"
    runuser -u dovecot -- test -r "$DC/users" ||
        die "user dovecot cannot read $DC/users: make every parent of DIR world-executable (o+x)"

    local ports attempt rc=1 imap imaps smtp smtps
    ports=$(previous_ports) || ports=$(pick_ports 4)
    for attempt in 1 2 3; do
        read -r imap imaps smtp smtps <<<"$ports"
        rc=0
        launch "$imap" "$imaps" "$smtp" "$smtps" || rc=$?
        [ $rc -eq 0 ] && break
        if [ $rc -eq 2 ] && [ $attempt -lt 3 ]; then
            log "port collision (attempt $attempt), retrying with new ports"
            cmd_stop >/dev/null 2>&1
            ports=$(pick_ports 4)
            continue
        fi
        break
    done
    if [ $rc -ne 0 ]; then
        show_logs
        cmd_stop >/dev/null 2>&1 || true
        die "mail servers did not come up in $DIR"
    fi

    # One KEY=value per line, no quotes, no export: sourceable by sh and
    # trivially parsed by the Rust tests.
    cat >"$ENV_FILE.tmp" <<EOF
DIR=$DIR
HOST=127.0.0.1
DOMAIN=$DOMAIN
PASSWORD=$PASSWORD
IMAP_PORT=$imap
IMAPS_PORT=$imaps
SMTP_PORT=$smtp
SMTPS_PORT=$smtps
CA_FILE=$TLS/ca.pem
MAILDIR_ROOT=$MAILDIR_ROOT
LMTP_SOCKET=$DC_RUN/lmtp
DOVECOT_LOG=$DC_LOG
POSTFIX_LOG=$PF_LOG
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    log "imap=$imap imaps=$imaps smtp=$smtp smtps=$smtps dir=$DIR"
    echo "ready $ENV_FILE"
}

main() {
    [ $# -eq 2 ] || usage
    local cmd=$1
    set_paths "$2"
    case $cmd in
    start) cmd_start ;;
    stop)
        [ -d "$DIR" ] || { log "no such dir, nothing to stop: $DIR"; exit 0; }
        canon_dir
        cmd_stop
        ;;
    status)
        [ -d "$DIR" ] || { echo "no such dir: $DIR"; exit 3; }
        canon_dir
        cmd_status
        ;;
    *) usage ;;
    esac
}

main "$@"
