#!/usr/bin/env bash
# The team tracking server: `mlflow server` with a PostgreSQL backend store, served artifacts and
# MLflow's basic-auth app, bound to loopback.
#
#   MLFLOW_AUTH_ADMIN_PASSWORD=... scripts/mlflow_server.sh start   # init (first time) and start
#   scripts/mlflow_server.sh status                                  # exit 0 when both run
#   scripts/mlflow_server.sh stop                                    # stop both, by PID
#
# Everything lives in one folder this script owns, $LIGHTSWEEP_SERVER_DIR (default: .mlflow-server/
# at the repo root, git-ignored): pg/ (the PostgreSQL cluster), artifacts/, logs, PID files, the
# generated basic_auth.ini and the generated database password (mode 600). No secret is committed:
# the admin password comes from MLflow's own MLFLOW_AUTH_ADMIN_PASSWORD, used once to create the
# admin user (later changes go through MLflow's update-password API or UI).
#
# Settings (environment):
#   MLFLOW_AUTH_ADMIN_PASSWORD   required for `start`; MLFLOW_AUTH_ADMIN_USERNAME (default admin)
#   LIGHTSWEEP_SERVER_DIR        state folder (default <repo>/.mlflow-server)
#   LIGHTSWEEP_SERVER_HOST       interface to bind (default 127.0.0.1; see docs/team-server.md before changing)
#   LIGHTSWEEP_SERVER_PORT       MLflow port (default 5000)
#   LIGHTSWEEP_PG_PORT           PostgreSQL port, on 127.0.0.1 only (default 5433)
#   LIGHTSWEEP_SERVER_WORKERS    MLflow worker processes (default 2)
#   LIGHTSWEEP_DEFAULT_PERMISSION  what a signed-in user may do on others' experiments (default EDIT)
#   LIGHTSWEEP_ALLOWED_HOSTS     extra Host headers to accept (MLflow's --allowed-hosts)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  session key; generated once into the state folder when unset
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

STATE=${LIGHTSWEEP_SERVER_DIR:-$ROOT/.mlflow-server}
HOST=${LIGHTSWEEP_SERVER_HOST:-127.0.0.1}
PORT=${LIGHTSWEEP_SERVER_PORT:-5000}
PG_PORT=${LIGHTSWEEP_PG_PORT:-5433}
WORKERS=${LIGHTSWEEP_SERVER_WORKERS:-2}
PERMISSION=${LIGHTSWEEP_DEFAULT_PERMISSION:-EDIT}
ADMIN=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
PY=${LIGHTSWEEP_PYTHON:-$ROOT/.venv/bin/python}
DB_USER=mlflow

PGDATA=$STATE/pg
PG_PIDFILE=$STATE/postgres.pid
MLFLOW_PIDFILE=$STATE/mlflow.pid
PGPASSFILE_PATH=$STATE/pgpass

die() { echo "mlflow_server: error: $*" >&2; exit 2; }
say() { echo "mlflow_server: $*"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

url() {
    case $HOST in 0.0.0.0|::) echo "http://127.0.0.1:$PORT" ;; *) echo "http://$HOST:$PORT" ;; esac
}

healthy() {
    "$PY" - "$(url)/health" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

port_in_use() {  # HOST PORT: something accepts connections there
    "$PY" - "$1" "$2" <<'EOF' 2>/dev/null
import socket, sys
host = "127.0.0.1" if sys.argv[1] in ("0.0.0.0", "::") else sys.argv[1]
with socket.socket() as s:
    s.settimeout(2)
    sys.exit(0 if s.connect_ex((host, int(sys.argv[2]))) == 0 else 1)
EOF
}

pg_bindir() {
    if [ -n "${LIGHTSWEEP_PG_BIN:-}" ]; then echo "$LIGHTSWEEP_PG_BIN"; return; fi
    # Debian keeps initdb/pg_ctl off PATH, under /usr/lib/postgresql/<major>/bin.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    die "PostgreSQL is not installed: run \`make server-deps\` (apt-get install -y postgresql) or set LIGHTSWEEP_PG_BIN"
}

# PostgreSQL refuses to run as root: as root, run its server programs as the `postgres` user
# (created by Debian's postgresql package) in a folder that user owns.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_client() {  # psql/createdb as the cluster's own superuser, over TCP on loopback
    PGPASSFILE=$PGPASSFILE_PATH "$BIN/$1" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "${@:2}"
}

init_cluster() {
    [ -f "$PGDATA/PG_VERSION" ] && return
    say "initialising a PostgreSQL cluster in $PGDATA"
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    local password pwfile
    password=$("$PY" -c "import secrets; print(secrets.token_urlsafe(24))")
    (umask 077; echo "127.0.0.1:*:*:$DB_USER:$password" > "$PGPASSFILE_PATH")
    pwfile=$STATE/.initdb-password  # initdb reads the superuser's password from a file
    (umask 077; echo "$password" > "$pwfile")
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run PostgreSQL as (root is refused): install Debian's postgresql package"
        chown -R postgres: "$PGDATA" "$pwfile"
        runuser -u postgres -- test -x "$STATE" \
            || die "the postgres user cannot reach $STATE: set LIGHTSWEEP_SERVER_DIR to a folder outside private home dirs"
    fi
    # No Unix socket (only TCP on 127.0.0.1) and passwords (SCRAM) for every connection.
    as_pg "$BIN/initdb" -D "$PGDATA" -U "$DB_USER" --pwfile="$pwfile" --auth-host=scram-sha-256 \
        --auth-local=scram-sha-256 -E UTF8 --locale=C >"$STATE/initdb.log" 2>&1 \
        || { rm -f "$pwfile"; cat "$STATE/initdb.log" >&2 || true; die "initdb failed (log: $STATE/initdb.log)"; }
    rm -f "$pwfile"
}

start_postgres() {
    if alive "$PG_PIDFILE"; then return; fi
    local opts="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=''"
    touch "$STATE/postgres.log"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE/postgres.log"
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$STATE/postgres.log" -o "$opts" -w -t 60 start >/dev/null \
        || { tail -20 "$STATE/postgres.log" >&2 || true; die "PostgreSQL did not start (log: $STATE/postgres.log); is port $PG_PORT free? (LIGHTSWEEP_PG_PORT)"; }
    head -1 "$PGDATA/postmaster.pid" > "$PG_PIDFILE"
    for db in mlflow mlflow_auth; do
        if [ -z "$(pg_client psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'")" ]; then
            pg_client createdb "$db"
        fi
    done
}

write_auth_config() {
    local ini=$STATE/basic_auth.ini
    (umask 077; cat > "$ini" <<EOF
# Generated by scripts/mlflow_server.sh: no password in here (MLFLOW_AUTH_ADMIN_PASSWORD).
[mlflow]
default_permission = $PERMISSION
database_uri = postgresql+psycopg2://$DB_USER@127.0.0.1:$PG_PORT/mlflow_auth
admin_username = $ADMIN
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
)
    echo "$ini"
}

start() {
    [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] \
        || die "set MLFLOW_AUTH_ADMIN_PASSWORD (the MLflow admin's password, from your secret store; never commit it)"
    [ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -ge 12 ] \
        || die "MLFLOW_AUTH_ADMIN_PASSWORD is too short: MLflow requires at least 12 characters"
    [ -x "$PY" ] || die "no Python environment at $PY: run \`make setup\`"
    "$PY" -c "import mlflow, psycopg2, flask_wtf" 2>/dev/null \
        || die "the server packages are missing from $PY: run \`make setup\` (installs lightsweep[server])"
    if alive "$MLFLOW_PIDFILE" && healthy; then
        say "already running at $(url) (PID $(cat "$MLFLOW_PIDFILE"))"
        return
    fi
    port_in_use "$HOST" "$PORT" && die "port $PORT is taken on $HOST: choose another with LIGHTSWEEP_SERVER_PORT"
    BIN=$(pg_bindir)
    alive "$PG_PIDFILE" || ! port_in_use 127.0.0.1 "$PG_PORT" \
        || die "port $PG_PORT is taken on 127.0.0.1: choose another with LIGHTSWEEP_PG_PORT"
    mkdir -p "$STATE/artifacts"
    init_cluster
    start_postgres

    local secret_file=$STATE/flask-secret
    if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
        [ -s "$secret_file" ] || (umask 077; "$PY" -c "import secrets; print(secrets.token_hex(32))" > "$secret_file")
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$secret_file")
    fi
    local ini allowed=()
    ini=$(write_auth_config)
    [ -n "${LIGHTSWEEP_ALLOWED_HOSTS:-}" ] && allowed=(--allowed-hosts "$LIGHTSWEEP_ALLOWED_HOSTS")
    # Its own session (setsid): the PID is also the process group of the server and its workers.
    MLFLOW_AUTH_CONFIG_PATH=$ini MLFLOW_FLASK_SERVER_SECRET_KEY=$MLFLOW_FLASK_SERVER_SECRET_KEY \
    PGPASSFILE=$PGPASSFILE_PATH MLFLOW_AUTH_ADMIN_USERNAME=$ADMIN \
        setsid "$PY" -m mlflow server \
            --backend-store-uri "postgresql+psycopg2://$DB_USER@127.0.0.1:$PG_PORT/mlflow" \
            --serve-artifacts --artifacts-destination "$STATE/artifacts" \
            --host "$HOST" --port "$PORT" --workers "$WORKERS" --app-name basic-auth "${allowed[@]}" \
            >"$STATE/mlflow.log" 2>&1 </dev/null &
    echo $! > "$MLFLOW_PIDFILE"
    for _ in $(seq 1 180); do
        if healthy; then
            say "MLflow server at $(url) (PID $(cat "$MLFLOW_PIDFILE")), PostgreSQL on 127.0.0.1:$PG_PORT (PID $(cat "$PG_PIDFILE")), artifacts in $STATE/artifacts"
            say "clients: export MLFLOW_TRACKING_URI=$(url) MLFLOW_TRACKING_USERNAME=$ADMIN MLFLOW_TRACKING_PASSWORD=<the admin password>"
            return
        fi
        if ! alive "$MLFLOW_PIDFILE"; then
            tail -25 "$STATE/mlflow.log" >&2 || true
            rm -f "$MLFLOW_PIDFILE"
            die "the MLflow server exited: see the lines above (log: $STATE/mlflow.log)"
        fi
        sleep 1
    done
    die "the MLflow server did not answer $(url)/health within 180 s (log: $STATE/mlflow.log)"
}

wait_gone() {  # PID, seconds
    for _ in $(seq 1 "$2"); do kill -0 "$1" 2>/dev/null || return 0; sleep 1; done
    return 1
}

stop() {
    if [ -f "$MLFLOW_PIDFILE" ]; then
        local pid
        pid=$(cat "$MLFLOW_PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
            wait_gone "$pid" 30 || kill -KILL -- "-$pid" 2>/dev/null || true
            say "stopped the MLflow server (PID $pid)"
        fi
        rm -f "$MLFLOW_PIDFILE"
    fi
    if [ -f "$PG_PIDFILE" ]; then
        local pid
        pid=$(cat "$PG_PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid"  # PostgreSQL's "fast" shutdown
            wait_gone "$pid" 60 || die "PostgreSQL (PID $pid) did not stop within 60 s"
            say "stopped PostgreSQL (PID $pid)"
        fi
        rm -f "$PG_PIDFILE"
    fi
}

status() {
    local rc=0
    if alive "$MLFLOW_PIDFILE" && healthy; then
        say "MLflow server: running at $(url) (PID $(cat "$MLFLOW_PIDFILE"))"
    else
        say "MLflow server: not running"; rc=3
    fi
    if alive "$PG_PIDFILE"; then
        say "PostgreSQL: running on 127.0.0.1:$PG_PORT (PID $(cat "$PG_PIDFILE"))"
    else
        say "PostgreSQL: not running"; rc=3
    fi
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) echo "usage: $0 start|stop|restart|status   (state in ${STATE})" >&2; exit 2 ;;
esac
