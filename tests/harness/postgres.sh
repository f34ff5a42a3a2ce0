#!/usr/bin/env bash
# A private PostgreSQL cluster for Postdesk's tests and benchmarks: initdb into DIR as an
# unprivileged user, listening on 127.0.0.1 only, on a free port picked per run, its socket in
# DIR, so several runs can go side by side. Debian's binaries (/usr/lib/postgresql/N/bin, the
# newest N installed, 15 or later). Never touches a system cluster or /var/lib/postgresql.
#
#   postgres.sh start  DIR   -> stdout: KEY=value lines (also written to DIR/env),
#                               last line "ready DIR/env"
#   postgres.sh stop   DIR   -> fast shutdown, then removes what start made in DIR (and DIR
#                               when that leaves it empty); never fails if already stopped
#   postgres.sh status DIR
#
# env:  PG_OWNER_PID=PID  stop the cluster (as `stop` does) once process PID has ended, however
#                         it ended (kill -9 included): a watcher started with the cluster
#       PG_KEEP=1         `stop` keeps DIR (data and log) for a look afterwards; `start DIR`
#                         later starts the same data again (same port if still free)
#       PG_BIN=DIR        the PostgreSQL binaries to use (default: newest under /usr/lib/postgresql)
#
# Run as root (CI), the server runs as the system user `postdesk-test` (created if missing;
# `nobody` when it cannot be): initdb and postgres refuse root. Run as anyone else, as that user.
# See tests/harness/README.md, "PostgreSQL".
set -euo pipefail

readonly OS_USER_WANTED=postdesk-test
readonly DB_USER=postdesk        # the role tests log in as: LOGIN CREATEDB, owns its databases
readonly SUPERUSER=postgres      # the bootstrap superuser (initdb -U)
readonly MIN_MAJOR=15
readonly START_TIMEOUT=60        # seconds pg_ctl waits for "ready to accept connections"
readonly STOP_TIMEOUT=30         # seconds a fast shutdown may take before SIGQUIT/SIGKILL
SELF=$(readlink -f "$0")
readonly SELF

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: postgres.sh start DIR    initdb (first time) and start a private cluster, write DIR/env
       postgres.sh stop DIR     fast shutdown; remove DIR's cluster (PG_KEEP=1: keep it)
       postgres.sh status DIR   whether it runs
env:   PG_OWNER_PID=PID         stop the cluster once process PID has ended
       PG_KEEP=1                stop keeps the data (a later start reuses it)
       PG_BIN=/usr/lib/postgresql/N/bin
EOF
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Paths. DIR must be absolute and free of characters that need quoting: it is written into
# postgresql.conf and the KEY=value env file.
# ---------------------------------------------------------------------------------------------
set_paths() {
    DIR=$1
    [[ $DIR == /* ]] || DIR=$PWD/$DIR
    [[ $DIR =~ ^[A-Za-z0-9/._+-]+$ ]] ||
        die "DIR may only contain [A-Za-z0-9/._+-] (it is written unquoted into configs): $DIR"
    case "$DIR/" in
    /var/lib/postgresql/* | /etc/postgresql/* | /run/postgresql/* | /var/run/postgresql/*)
        die "refusing DIR under a system PostgreSQL directory: $DIR" ;;
    esac
    DATA=$DIR/data
    RUN=$DIR/run # unix_socket_directories
    PG_LOGFILE=$DIR/postgres.log
    ENV_FILE=$DIR/env
    MARK=$DIR/.postdesk-pg # written by start: stop removes only what a start made
    WATCH_LOG=$DIR/watch.log
}

canon_dir() {
    DIR=$(cd "$DIR" && pwd -P)
    set_paths "$DIR"
}

# ---------------------------------------------------------------------------------------------
# Binaries: PG_BIN, else the newest /usr/lib/postgresql/N/bin holding initdb, pg_ctl, postgres
# and psql.
# ---------------------------------------------------------------------------------------------
find_bin() {
    local d v best='' best_v=0
    if [ -n "${PG_BIN:-}" ]; then
        best=$PG_BIN
    else
        for d in /usr/lib/postgresql/*/bin; do
            [ -x "$d/initdb" ] || continue
            v=$(basename "$(dirname "$d")")
            [[ $v =~ ^[0-9]+$ ]] || continue
            if [ "$v" -gt "$best_v" ]; then best=$d best_v=$v; fi
        done
    fi
    [ -n "$best" ] ||
        die "no PostgreSQL server binaries (no /usr/lib/postgresql/*/bin/initdb): run scripts/install-test-deps.sh (Debian package postgresql)"
    for v in initdb pg_ctl postgres psql; do
        [ -x "$best/$v" ] || die "$best/$v missing: run scripts/install-test-deps.sh (Debian package postgresql)"
    done
    BIN=$best
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": the first number.
    MAJOR=$("$BIN/postgres" --version | grep -oE '[0-9]+' | head -n 1)
    [[ $MAJOR =~ ^[0-9]+$ ]] || die "cannot read the version of $BIN/postgres"
    [ "$MAJOR" -ge "$MIN_MAJOR" ] || die "PostgreSQL $MAJOR at $BIN; Postdesk's schema needs $MIN_MAJOR or later"
}

# ---------------------------------------------------------------------------------------------
# The OS user the server runs as, and running commands as that user.
# ---------------------------------------------------------------------------------------------
pick_os_user() {
    if [ "$(id -u)" -ne 0 ]; then
        OS_USER=$(id -un)
        return 0
    fi
    if ! id -u "$OS_USER_WANTED" >/dev/null 2>&1 && command -v useradd >/dev/null 2>&1; then
        # Two runs may race to create it: the loser's useradd fails, the user exists anyway.
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            --user-group "$OS_USER_WANTED" >/dev/null 2>&1 || true
    fi
    if id -u "$OS_USER_WANTED" >/dev/null 2>&1; then
        OS_USER=$OS_USER_WANTED
    elif id -u nobody >/dev/null 2>&1; then
        log "cannot create user $OS_USER_WANTED: running the server as nobody"
        OS_USER=nobody
    else
        die "neither user $OS_USER_WANTED (useradd failed) nor nobody exists; initdb refuses root"
    fi
}

# Run a command as OS_USER, in DIR (a cwd the user can enter: pg_ctl and initdb complain
# otherwise), with a clean PostgreSQL environment.
as_user() {
    local -a envclean=(env -u PGDATA -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGOPTIONS
        -u PGSERVICE -u PGPASSWORD -u PGSSLMODE LC_ALL=C LANG=C)
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$DIR" && runuser -u "$OS_USER" -- "${envclean[@]}" "$@")
    else
        (cd "$DIR" && "${envclean[@]}" "$@")
    fi
}

# psql as the bootstrap superuser over the cluster's socket.
psql_super() {
    env -u PGOPTIONS -u PGSERVICE -u PGPASSWORD PGCONNECT_TIMEOUT=10 \
        "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U "$SUPERUSER" -d postgres "$@"
}

# ---------------------------------------------------------------------------------------------
# Processes. The postmaster is ours when DATA/postmaster.pid names a live process whose command
# line holds our data directory: a recycled pid is never mistaken for it.
# ---------------------------------------------------------------------------------------------
proc_cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }

postmaster_pid() {
    local pid
    [ -r "$DATA/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$DATA/postmaster.pid" | tr -dc '0-9')
    [ -n "$pid" ] || return 1
    [[ $(proc_cmdline "$pid") == *"-D $DATA"* ]] || return 1
    local state
    state=$(sed -E 's/^.*\) ([A-Z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] || return 1
    printf '%s' "$pid"
}

# "STARTTIME" of a live pid (field 22 of /proc/PID/stat), to tell a process from a recycled
# pid; fails for a zombie (dead, not yet reaped) or a missing process.
proc_start() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # drop "pid (comm) ": comm may contain spaces
    # shellcheck disable=SC2086 # word splitting wanted
    set -- $stat
    [ "$1" != Z ] && [ "$1" != X ] || return 1
    printf '%s' "${20}"
}

pick_port() {
    local py=
    if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; elif command -v python3 >/dev/null 2>&1; then py=python3; fi
    if [ -n "$py" ]; then
        "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 12000))
            ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
        done
    fi
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# ---------------------------------------------------------------------------------------------
# stop
# ---------------------------------------------------------------------------------------------
cmd_stop() {
    local pid deadline
    if pid=$(postmaster_pid); then
        find_bin
        pick_os_user_of_data
        # Fast: sessions are ended, open transactions rolled back, a checkpoint written.
        as_user "$BIN/pg_ctl" -D "$DATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 || true
        if kill -0 "$pid" 2>/dev/null && [ "$(postmaster_pid 2>/dev/null)" = "$pid" ]; then
            log "still running after ${STOP_TIMEOUT}s: immediate shutdown (SIGQUIT)"
            kill -QUIT "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while postmaster_pid >/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
            if postmaster_pid >/dev/null; then
                log "sending SIGKILL to $pid"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        log "stopped: $DIR"
    else
        log "not running: $DIR"
    fi
    if [ "${PG_KEEP:-}" = 1 ]; then
        log "PG_KEEP=1: keeping $DIR"
        return 0
    fi
    # Only what a start made, and only in a DIR a start marked.
    if [ -e "$MARK" ]; then
        rm -rf -- "$DATA" "$RUN" "$PG_LOGFILE" "$ENV_FILE" "$ENV_FILE.tmp" "$WATCH_LOG" "$MARK"
        rmdir -- "$DIR" 2>/dev/null || true
    fi
}

# The OS user that owns DATA (stop may run in a process that never ran start).
pick_os_user_of_data() {
    OS_USER=$(stat -c %U "$DATA")
    [ "$OS_USER" != root ] || die "$DATA is owned by root: not ours"
}

cmd_status() {
    local pid
    if pid=$(postmaster_pid); then
        echo "postgres running pid $pid"
        [ -r "$ENV_FILE" ] && cat "$ENV_FILE"
        return 0
    fi
    echo "postgres stopped"
    return 3
}

# ---------------------------------------------------------------------------------------------
# watch: stop the cluster once the owner process has ended (started by start, detached).
# ---------------------------------------------------------------------------------------------
cmd_watch() {
    local owner=$1 owner_start=$2
    while :; do
        postmaster_pid >/dev/null || exit 0 # stopped by someone else: nothing to do
        [ "$(proc_start "$owner" 2>/dev/null)" = "$owner_start" ] || break
        sleep 1
    done
    log "owner process $owner ended: stopping $DIR"
    cmd_stop
}

start_watcher() {
    local owner=$1 owner_start
    [[ $owner =~ ^[0-9]+$ ]] || die "PG_OWNER_PID must be a pid: $owner"
    owner_start=$(proc_start "$owner") || die "PG_OWNER_PID $owner: no such process"
    # Detached (own session, no inherited stdio): a caller reading our stdout sees EOF, and a
    # signal to the caller's process group does not reach the watcher.
    setsid bash "$SELF" watch "$DIR" "$owner" "$owner_start" </dev/null >>"$WATCH_LOG" 2>&1 &
}

# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------
write_conf() {
    # Rewritten at every start (the port may change); postgresql.conf includes it.
    cat >"$DATA/postdesk.conf" <<EOF
# Written by tests/harness/postgres.sh at each start - private test cluster.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
unix_socket_permissions = 0777
# Durable as in production: the tests kill nodes and the bench measures real commits.
fsync = on
synchronous_commit = on
full_page_writes = on
wal_sync_method = fdatasync
# Small: many clusters may run side by side on a small machine.
shared_buffers = 32MB
max_connections = 200
# Several test binaries and three-node failover tests each hold a few connections.
max_locks_per_transaction = 128
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_min_error_statement = error
log_lock_waits = on
EOF
    chown "$OS_USER" "$DATA/postdesk.conf"
    chmod 0600 "$DATA/postdesk.conf"
}

do_initdb() {
    log "initdb ($BIN, user $OS_USER): $DATA"
    mkdir -p "$DATA"
    chown "$OS_USER" "$DATA"
    chmod 0700 "$DATA"
    # --no-sync: only initdb's own final flush of the new files is skipped (a throwaway
    # cluster); the server itself runs with fsync = on.
    as_user "$BIN/initdb" -D "$DATA" -U "$SUPERUSER" --locale=C --encoding=UTF8 --auth=trust \
        --no-sync >"$DIR/initdb.log" 2>&1 || {
        cat "$DIR/initdb.log" >&2
        die "initdb failed"
    }
    rm -f "$DIR/initdb.log"
    printf "\n# Postdesk's test settings (tests/harness/postgres.sh)\ninclude 'postdesk.conf'\n" >>"$DATA/postgresql.conf"
}

# One launch on PORT. Returns 2 when the port was taken (caller retries), 1 on other failures.
launch() {
    write_conf
    : >"$PG_LOGFILE"
    chown "$OS_USER" "$PG_LOGFILE"
    if as_user "$BIN/pg_ctl" -D "$DATA" -l "$PG_LOGFILE" -w -t "$START_TIMEOUT" start >"$DIR/pg_ctl.out" 2>&1; then
        rm -f "$DIR/pg_ctl.out"
        return 0
    fi
    if grep -q 'Address already in use' "$PG_LOGFILE" 2>/dev/null; then
        rm -f "$DIR/pg_ctl.out"
        return 2
    fi
    cat "$DIR/pg_ctl.out" >&2
    rm -f "$DIR/pg_ctl.out"
    return 1
}

previous_port() {
    [ -r "$ENV_FILE" ] || return 1
    local p
    p=$(sed -n 's/^PG_PORT=//p' "$ENV_FILE")
    [[ $p =~ ^[0-9]+$ ]] && port_free "$p" || return 1
    echo "$p"
}

cmd_start() {
    find_bin
    mkdir -p "$DIR"
    canon_dir
    if postmaster_pid >/dev/null; then
        # Already running (an earlier start): the same cluster again.
        log "already running: $DIR"
        PORT=$(sed -n 's/^PG_PORT=//p' "$ENV_FILE")
        if [ -n "${PG_OWNER_PID:-}" ]; then start_watcher "$PG_OWNER_PID"; fi
        cat "$ENV_FILE"
        echo "ready $ENV_FILE"
        return 0
    fi

    if [ -e "$DATA/PG_VERSION" ]; then
        pick_os_user_of_data
    else
        pick_os_user
    fi
    : >"$MARK"
    # The server (OS_USER) must traverse DIR; mktemp -d makes it 0700. DIR stays root's.
    [ "$(id -u)" -ne 0 ] || chmod 0711 "$DIR"
    as_user test -x "$DIR" ||
        die "user $OS_USER cannot enter $DIR: make every parent of DIR world-executable (o+x)"
    local sock_name=/.s.PGSQL.65535 sock_len
    sock_len=$((${#RUN} + ${#sock_name}))
    [ "$sock_len" -lt 108 ] || die "DIR too long for a Unix socket path ($sock_len bytes, limit 107): $DIR"
    mkdir -p "$RUN"
    chown "$OS_USER" "$RUN"
    chmod 0755 "$RUN"

    [ -e "$DATA/PG_VERSION" ] || do_initdb

    local attempt rc=1
    PORT=$(previous_port) || PORT=$(pick_port)
    for attempt in 1 2 3 4 5; do
        rc=0
        launch || rc=$?
        [ $rc -eq 0 ] && break
        if [ $rc -eq 2 ] && [ $attempt -lt 5 ]; then
            log "port $PORT taken (attempt $attempt), retrying with another"
            PORT=$(pick_port)
            continue
        fi
        break
    done
    if [ $rc -ne 0 ]; then
        log "---- tail $PG_LOGFILE"
        tail -n 30 "$PG_LOGFILE" >&2 || true
        die "PostgreSQL did not come up in $DIR"
    fi

    # The role the tests use: may create databases (and owns those it creates), nothing more.
    psql_super -c "DO \$\$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
                CREATE ROLE $DB_USER LOGIN CREATEDB;
            END IF;
        END \$\$;" || die "could not create role $DB_USER"

    # One KEY=value per line, no quotes, no export: sourceable by sh, parsed by the Rust tests.
    cat >"$ENV_FILE.tmp" <<EOF
DIR=$DIR
PG_HOST=127.0.0.1
PG_PORT=$PORT
PG_USER=$DB_USER
PG_URL=postgres://$DB_USER@127.0.0.1:$PORT/postgres
PG_SUPERUSER_URL=postgres://$SUPERUSER@127.0.0.1:$PORT/postgres
PG_DATA=$DATA
PG_SOCKET_DIR=$RUN
PG_LOG=$PG_LOGFILE
PG_BIN=$BIN
PG_VERSION=$MAJOR
PG_OS_USER=$OS_USER
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    if [ -n "${PG_OWNER_PID:-}" ]; then start_watcher "$PG_OWNER_PID"; fi
    log "PostgreSQL $MAJOR on 127.0.0.1:$PORT, data $DATA"
    cat "$ENV_FILE"
    echo "ready $ENV_FILE"
}

main() {
    local cmd=${1:-}
    case $cmd in
    start)
        [ $# -eq 2 ] || usage
        set_paths "$2"
        cmd_start
        ;;
    stop)
        [ $# -eq 2 ] || usage
        set_paths "$2"
        [ -d "$DIR" ] || { log "no such dir, nothing to stop: $DIR"; exit 0; }
        canon_dir
        cmd_stop
        ;;
    status)
        [ $# -eq 2 ] || usage
        set_paths "$2"
        [ -d "$DIR" ] || { echo "no such dir: $DIR"; exit 3; }
        canon_dir
        cmd_status
        ;;
    watch) # internal: postgres.sh watch DIR OWNER_PID OWNER_STARTTIME
        [ $# -eq 4 ] || usage
        set_paths "$2"
        canon_dir
        cmd_watch "$3" "$4"
        ;;
    *) usage ;;
    esac
}

main "$@"
