#!/usr/bin/env bash
# A throwaway PostgreSQL server for CI's multi-user store tests (tests/vice/launch/test_postgres_store.py):
# an `mlflow server` whose backend store is PostgreSQL, and a vice-tune study stored in it.
#
#   bash .ci/postgres.sh up      install Debian's postgresql if absent, initdb a fresh data dir, start the
#                                server on 127.0.0.1 only, create the login role $PGUSER (CREATEDB)
#   bash .ci/postgres.sh stop    stop the server this script started and delete its data dir
#
# Environment:
#   PGPASSWORD     required by `up`: the role's password. It is read from the environment only (psql gets
#                  it on stdin, never on a command line or in a file); the server stores its SCRAM hash.
#   PGUSER         the login role (default vice)
#   VICE_PG_PORT   TCP port on 127.0.0.1 (default 55432; Debian's own cluster keeps 5432)
#   VICE_PG_DIR    data dir, wiped by `up` and `stop` (default /var/tmp/vice-ci-postgres)
#
# Clients connect with host 127.0.0.1, port $VICE_PG_PORT, user $PGUSER and the password from PGPASSWORD
# (libpq reads it) or from a URL held in an environment variable.
set -euo pipefail

PG_DIR=${VICE_PG_DIR:-/var/tmp/vice-ci-postgres}
PG_PORT=${VICE_PG_PORT:-55432}
PG_ROLE=${PGUSER:-vice}
DATA=$PG_DIR/data
LOG=$PG_DIR/server.log

die() {
    echo "postgres: error: $*" >&2
    exit 1
}

say() { echo "postgres: $*"; }

pg_bin() { # the newest installed server's bin dir (Debian: /usr/lib/postgresql/<major>/bin)
    find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

install_package() {
    [[ -n $(pg_bin) ]] && return 0
    command -v apt-get >/dev/null || die "no PostgreSQL server under /usr/lib/postgresql and no apt-get: install postgresql"
    say "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$PG_DIR"
    apt-get -q -o DPkg::Lock::Timeout=300 update >"$PG_DIR/apt.log" 2>&1 ||
        { tail -n 20 "$PG_DIR/apt.log" >&2; die "apt-get update failed (log: $PG_DIR/apt.log)"; }
    apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends postgresql >>"$PG_DIR/apt.log" 2>&1 ||
        { tail -n 20 "$PG_DIR/apt.log" >&2; die "apt-get install postgresql failed (log: $PG_DIR/apt.log)"; }
    [[ -n $(pg_bin) ]] || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin"
}

as_postgres() { runuser -u postgres -- "$@"; } # the server refuses to run as root

cmd_up() {
    [[ $EUID -eq 0 ]] || die "must run as root (it installs a package and runs the server as user postgres)"
    [[ -n ${PGPASSWORD:-} ]] || die "set PGPASSWORD (the password of role $PG_ROLE) in the environment"
    [[ $PG_ROLE =~ ^[a-z_][a-z0-9_]*$ ]] || die "PGUSER=$PG_ROLE: use lower-case letters, digits and _"
    install_package
    id postgres >/dev/null 2>&1 || die "no user postgres (Debian's postgresql package creates it)"
    local bin t0=$SECONDS
    bin=$(pg_bin)
    cmd_stop quiet
    mkdir -p "$DATA"
    chown -R postgres: "$PG_DIR"
    chmod 700 "$DATA"
    as_postgres "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --no-locale \
        --auth-local=peer --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
        { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed (log: $PG_DIR/initdb.log)"; }
    # 127.0.0.1 only; the Unix socket in the data dir (for the postgres superuser's peer login below);
    # no statement ever copied into the log, so a failed CREATE ROLE cannot log its password.
    cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DATA'
log_min_error_statement = panic
EOF
    as_postgres "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null ||
        { tail -n 20 "$LOG" >&2; die "the server did not start (log: $LOG)"; }
    # The password travels on psql's stdin (printf is a shell builtin: no process carries it as an argument).
    printf "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s';\n" "$PG_ROLE" "${PGPASSWORD//\'/\'\'}" |
        as_postgres "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$DATA" -p "$PG_PORT" -U postgres -d postgres >/dev/null ||
        die "could not create role $PG_ROLE (log: $LOG)"
    PGUSER=$PG_ROLE "$bin/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -c 'SELECT 1' >/dev/null ||
        die "role $PG_ROLE cannot log in with PGPASSWORD on 127.0.0.1:$PG_PORT"
    say "up in $((SECONDS - t0))s: 127.0.0.1:$PG_PORT, role $PG_ROLE, data dir $DATA"
}

cmd_stop() { # cmd_stop [quiet]
    local bin
    bin=$(pg_bin)
    if [[ -n $bin && -f $DATA/postmaster.pid ]]; then
        as_postgres "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || true
        [[ -n ${1:-} ]] || say "stopped the server on 127.0.0.1:$PG_PORT"
    fi
    rm -rf "${PG_DIR:?}"
}

case ${1:-} in
up) cmd_up ;;
stop) cmd_stop ;;
*)
    echo "usage: bash $0 up|stop" >&2
    exit 2
    ;;
esac
