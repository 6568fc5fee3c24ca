#!/usr/bin/env bash
# A one-node SLURM cluster with accounting on this machine: where cluster sweeps
# (hydra/launcher=slurm) run for real in the tests, and where a team rehearses one.
#
#   scripts/slurm_cluster.sh start    # (make slurm) start, or finish starting, everything; idempotent
#   scripts/slurm_cluster.sh status   # exit 0 when every daemon runs and the node answers
#   scripts/slurm_cluster.sh stop     # (make slurm-stop) cancel the jobs, end the daemons by PID, wait
#
# Daemons, all run as root without systemd, each in its own session, PIDs in $STATE/pids/:
# munged (a private key and socket), mariadbd (as the mysql user, on 127.0.0.1 only), slurmdbd
# (accounting: without it a job that dies without writing its result is never seen as finished),
# slurmctld and slurmd (one node: this host, its CPUs and most of its memory).
# Everything lives in one folder this script owns, $LIGHTSWEEP_SLURM_DIR (default: .slurm-cluster/
# at the repo root, git-ignored): etc/ (slurm.conf, slurmdbd.conf), munge/ (key, socket), mysql/
# (the database), state/, spool/, log/, pids/. The database password is generated once into
# etc/db-password and etc/slurmdbd.conf (both mode 600); it never appears on a command line.
#
# Clients (sbatch, squeue, sacct, and sweeps launched with hydra/launcher=slurm) find the
# cluster through SLURM_CONF: `start` prints the export line.
#
# Settings (environment):
#   LIGHTSWEEP_SLURM_DIR          state folder (default <repo>/.slurm-cluster)
#   LIGHTSWEEP_SLURM_CLUSTER      cluster name in the accounting database (default lightsweep)
#   LIGHTSWEEP_SLURMCTLD_PORT     slurmctld port (default 6817)
#   LIGHTSWEEP_SLURMD_PORT        slurmd port (default 6818)
#   LIGHTSWEEP_SLURMDBD_PORT      slurmdbd port (default 6819)
#   LIGHTSWEEP_SLURM_DB_PORT      MariaDB port, on 127.0.0.1 only (default 3307)
#   LIGHTSWEEP_SLURM_KILL_WAIT    seconds between SIGTERM and SIGKILL at a job's time limit (default 10)
#   LIGHTSWEEP_SLURM_CRED_EXPIRE  job credential lifetime, also how long a requeued job waits before it
#                                 may start again (default 10; SLURM's own default is 120)
#   LIGHTSWEEP_SLURM_START_TIMEOUT  seconds each daemon gets to come up (default 120)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

STATE=${LIGHTSWEEP_SLURM_DIR:-$ROOT/.slurm-cluster}
CLUSTER=${LIGHTSWEEP_SLURM_CLUSTER:-lightsweep}
CTLD_PORT=${LIGHTSWEEP_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${LIGHTSWEEP_SLURMD_PORT:-6818}
DBD_PORT=${LIGHTSWEEP_SLURMDBD_PORT:-6819}
DB_PORT=${LIGHTSWEEP_SLURM_DB_PORT:-3307}
KILL_WAIT=${LIGHTSWEEP_SLURM_KILL_WAIT:-10}
CRED_EXPIRE=${LIGHTSWEEP_SLURM_CRED_EXPIRE:-10}
START_TIMEOUT=${LIGHTSWEEP_SLURM_START_TIMEOUT:-120}
PARTITION=debug
DB_USER=slurm
DB_NAME=slurm_acct_db

ETC=$STATE/etc
PIDS=$STATE/pids
LOGS=$STATE/log
CONF=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf
PASSWORD_FILE=$ETC/db-password
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
MUNGE_KEY=$MUNGE_DIR/munge.key
DB_DATA=$STATE/mysql
DB_RUN=$STATE/mysqld
DB_SOCKET=$DB_RUN/mysqld.sock
DAEMONS=(munged mariadb slurmdbd slurmctld slurmd)  # start order; stop goes backwards
export SLURM_CONF=$CONF
export PATH=$PATH:/usr/sbin:/sbin

die() { echo "slurm_cluster: error: $*" >&2; exit 2; }
say() { echo "slurm_cluster: $*"; }

pidfile() { echo "$PIDS/$1.pid"; }
alive() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }
pid_of() { cat "$(pidfile "$1")" 2>/dev/null || true; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {  # FILE: its last lines, on one line
    [ -s "$1" ] || { echo "(empty log)"; return; }
    tail -n 4 "$1" | tr -s '\n\t' '  ' | cut -c1-600
}

node_name() { hostname -s; }

check_requirements() {
    [ "$(id -u)" = 0 ] || die "the cluster's daemons run as root (slurmd starts jobs as their users): run it as root (sudo make slurm)"
    local missing=() bin
    for bin in munged mungekey munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin slurmdbd slurmctld \
               slurmd sbatch squeue sinfo sacct sacctmgr scontrol scancel; do
        command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run \`make team-deps\` (Debian: apt-get install -y slurm-wlm munge slurmdbd mariadb-server)"
    [[ $CLUSTER =~ ^[a-z][a-z0-9_-]{0,39}$ ]] \
        || die "LIGHTSWEEP_SLURM_CLUSTER=$CLUSTER is not a SLURM cluster name: use lowercase letters, digits, - and _ (at most 40)"
    id mysql >/dev/null 2>&1 || die "no 'mysql' user to run MariaDB as: install Debian's mariadb-server (make team-deps)"
    # Unix socket paths are limited to 107 bytes.
    [ ${#DB_SOCKET} -lt 100 ] && [ ${#MUNGE_SOCKET} -lt 100 ] \
        || die "the state folder's path is too long for Unix sockets ($STATE): set LIGHTSWEEP_SLURM_DIR to a shorter path"
}

prepare_state() {
    mkdir -p "$STATE" "$ETC" "$PIDS" "$LOGS" "$MUNGE_DIR" "$STATE/state" "$STATE/spool" "$DB_DATA" "$DB_RUN"
    # munged requires an executable socket folder and a private key; MariaDB runs as mysql.
    chmod 755 "$STATE" "$ETC" "$MUNGE_DIR"
    chmod 700 "$PIDS" "$STATE/state" "$STATE/spool"
    chown mysql: "$DB_DATA" "$DB_RUN"
    chmod 700 "$DB_DATA"
    chmod 755 "$DB_RUN"
    runuser -u mysql -- test -x "$DB_RUN" \
        || die "the mysql user cannot reach $STATE: set LIGHTSWEEP_SLURM_DIR to a folder outside private (0700) folders"
    if [ ! -s "$MUNGE_KEY" ]; then
        mungekey --create --keyfile="$MUNGE_KEY" --bits=1024 >/dev/null 2>&1 \
            || die "mungekey could not create $MUNGE_KEY: is the munge package complete? (make team-deps)"
    fi
    chmod 600 "$MUNGE_KEY"
    if [ ! -s "$PASSWORD_FILE" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 > "$PASSWORD_FILE")
    fi
    chmod 600 "$PASSWORD_FILE"
}

write_configs() {
    # This host as the only node: CPUs and layout as slurmd detects them, most of the memory.
    local node hw mem
    node=$(node_name)
    hw=$(slurmd -C 2>/dev/null | head -1) || true
    [[ $hw == NodeName=* ]] || die "slurmd -C could not read this machine's CPUs and memory: check the slurmd package (make team-deps)"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    hw=$(sed -e 's/^NodeName=[^ ]* //' -e 's/ *RealMemory=[0-9]*//' <<<"$hw")
    mem=$((mem * 90 / 100))
    cat > "$CONF" <<EOF
# Generated by scripts/slurm_cluster.sh for $(node_name): one node, accounting through slurmdbd.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job (time limit, preemption) may start again this many seconds after it stopped.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE
CredType=cred/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/state/slurmctld.pid
SlurmdPidFile=$STATE/spool/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups here: plain process tracking, no task binding, no per-job accounting gather.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# The munge socket for the slurmdbd connection (AuthInfo covers the cluster's own messages only).
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# A requeued job is eligible again cred_expire seconds after it stopped: look for it every few seconds.
SchedulerParameters=bf_interval=5,sched_interval=5
# A job asking for more than the node has is refused at sbatch, not left pending for ever.
EnforcePartLimits=ALL
MpiDefault=none
ReturnToService=2
KillWait=$KILL_WAIT
InactiveLimit=0
MinJobAge=300
Waittime=0
MailProg=/bin/true
NodeName=$node NodeAddr=127.0.0.1 $hw RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$CONF"
    (umask 077; cat > "$DBD_CONF" <<EOF
# Generated by scripts/slurm_cluster.sh (mode 600: it holds the database password).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/state/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$(cat "$PASSWORD_FILE")
StorageLoc=$DB_NAME
EOF
)
    chmod 600 "$DBD_CONF"
}

launch() {  # NAME LOG COMMAND...: in its own session, PID recorded; LIGHTSWEEP_SLURM_STATE marks it
    local name=$1 log=$2
    shift 2
    LIGHTSWEEP_SLURM_STATE=$STATE setsid "$@" >>"$log" 2>&1 </dev/null &
    echo $! > "$(pidfile "$name")"
}

wait_for() {  # NAME LOG WHAT COMMAND...: until COMMAND succeeds; the daemon's death or a timeout is an error
    local name=$1 log=$2 what=$3
    shift 3
    local deadline=$((SECONDS + START_TIMEOUT)) answer
    while ! answer=$("$@" 2>&1); do
        if ! alive "$name"; then
            rm -f "$(pidfile "$name")"
            die "$name exited while starting: $(log_tail "$log") (log: $log)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            answer=$(tail -n 2 <<<"$answer" | tr -s '\n\t' '  ' | cut -c1-300)
            die "$name did not $what within $START_TIMEOUT s (the check said: ${answer:-nothing}); its log: $(log_tail "$log") (log: $log)"
        fi
        sleep 0.5
    done
}

free_port_or_die() {  # NAME PORT VARIABLE
    port_in_use "$2" && die "port $2 on 127.0.0.1 (for $1) is taken: stop what uses it, or choose another with $3"
    return 0
}

munge_works() { munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET"; }
db_works() { mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping; }
dbd_works() { sacctmgr -n -P list cluster format=cluster; }
ctld_works() { scontrol ping | grep -q "is UP"; }
node_idle() { [ "$(sinfo -h -n "$(node_name)" -o %t 2>/dev/null)" = idle ]; }
sacct_works() { sacct -n -X -P -o JobID >/dev/null; }

start_munged() {
    alive munged && return
    launch munged "$LOGS/munged.log" munged -F --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_DIR/munged.pid" --num-threads=10 --seed-file="$MUNGE_DIR/munged.seed" --log-file="$LOGS/munged.log"
    wait_for munged "$LOGS/munged.log" "answer on $MUNGE_SOCKET" munge_works
}

start_mariadb() {
    local log=$LOGS/mariadb.log
    if ! alive mariadb; then
        free_port_or_die MariaDB "$DB_PORT" LIGHTSWEEP_SLURM_DB_PORT
        if [ ! -d "$DB_DATA/mysql" ]; then
            mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DATA" --auth-root-authentication-method=socket \
                --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 \
                || die "mariadb-install-db failed: $(log_tail "$LOGS/mariadb-install.log") (log: $LOGS/mariadb-install.log)"
        fi
        launch mariadb "$log" mariadbd --no-defaults --user=mysql --datadir="$DB_DATA" --bind-address=127.0.0.1 \
            --port="$DB_PORT" --socket="$DB_SOCKET" --pid-file="$DB_RUN/mariadbd.pid" --skip-name-resolve \
            --skip-log-bin --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
        wait_for mariadb "$log" "accept connections" db_works
    fi
    # The accounting database and its user (root signs in through the socket, as the OS root user);
    # the password goes through stdin, never a command line.
    local password
    password=$(cat "$PASSWORD_FILE")
    mariadb --no-defaults --socket="$DB_SOCKET" -u root >/dev/null 2>"$LOGS/mariadb-setup.log" <<EOF \
        || die "could not create the accounting database: $(log_tail "$LOGS/mariadb-setup.log") (log: $LOGS/mariadb-setup.log)"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
EOF
}

start_slurmdbd() {
    if ! alive slurmdbd; then
        free_port_or_die slurmdbd "$DBD_PORT" LIGHTSWEEP_SLURMDBD_PORT
        launch slurmdbd "$LOGS/slurmdbd.out" slurmdbd -D
        wait_for slurmdbd "$LOGS/slurmdbd.log" "answer sacctmgr" dbd_works
    fi
    # slurmctld with accounting needs its cluster in the database before it starts.
    if ! dbd_works | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >"$LOGS/sacctmgr.log" 2>&1 \
            || die "sacctmgr could not add cluster $CLUSTER: $(log_tail "$LOGS/sacctmgr.log")"
    fi
}

start_slurmctld() {
    alive slurmctld && return
    free_port_or_die slurmctld "$CTLD_PORT" LIGHTSWEEP_SLURMCTLD_PORT
    launch slurmctld "$LOGS/slurmctld.out" slurmctld -D -i -f "$CONF"
    wait_for slurmctld "$LOGS/slurmctld.log" "answer scontrol ping" ctld_works
}

start_slurmd() {
    alive slurmd && return
    free_port_or_die slurmd "$SLURMD_PORT" LIGHTSWEEP_SLURMD_PORT
    launch slurmd "$LOGS/slurmd.out" slurmd -D -f "$CONF" -N "$(node_name)"
    wait_for slurmd "$LOGS/slurmd.log" "bring node $(node_name) to idle" node_idle
}

start() {
    check_requirements
    local t0=$SECONDS running=1 name
    for name in "${DAEMONS[@]}"; do alive "$name" || running=0; done
    if [ $running = 1 ] && node_idle_or_busy; then
        say "already running: cluster $CLUSTER, partition $PARTITION on $(node_name) (PIDs: $(pids_line))"
        say "clients: export SLURM_CONF=$CONF"
        return
    fi
    # Every port first: a taken one stops the start before anything runs.
    alive mariadb || free_port_or_die MariaDB "$DB_PORT" LIGHTSWEEP_SLURM_DB_PORT
    alive slurmdbd || free_port_or_die slurmdbd "$DBD_PORT" LIGHTSWEEP_SLURMDBD_PORT
    alive slurmctld || free_port_or_die slurmctld "$CTLD_PORT" LIGHTSWEEP_SLURMCTLD_PORT
    alive slurmd || free_port_or_die slurmd "$SLURMD_PORT" LIGHTSWEEP_SLURMD_PORT
    prepare_state
    alive slurmctld || write_configs
    start_munged
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_for slurmdbd "$LOGS/slurmdbd.log" "answer sacct" sacct_works
    say "cluster $CLUSTER up in $((SECONDS - t0)) s: node $(node_name) idle ($(sinfo -h -o '%c CPUs, %m MB' | head -1)), partition $PARTITION, accounting in MariaDB on 127.0.0.1:$DB_PORT (PIDs: $(pids_line))"
    say "clients: export SLURM_CONF=$CONF"
}

node_idle_or_busy() { sinfo -h -n "$(node_name)" -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc|comp)'; }

pids_line() {
    local name out=()
    for name in "${DAEMONS[@]}"; do alive "$name" && out+=("$name $(pid_of "$name")"); done
    local IFS=,
    echo "${out[*]}"
}

wait_gone() {  # PID SECONDS
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        # A zombie (exited, not yet reaped) is gone for our purposes.
        [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ] && return 0
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

stop_daemon() {  # NAME
    local f pid
    f=$(pidfile "$1")
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 60; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "$1 (PID $pid) did not end after SIGKILL"
        fi
        say "stopped $1 (PID $pid)"
    fi
    rm -f "$f"
}

cluster_processes() {  # PIDs of this cluster: its marked daemons, its slurmstepd processes (slurmd
    # starts them with a clean environment; they keep slurmd's log in $STATE open), and everything
    # below them (what is left of a job).
    local proc pid roots
    roots=$({
        find /proc/[0-9]*/fd -maxdepth 1 -lname "$STATE/*" 2>/dev/null | cut -d/ -f3 | sort -u | while read -r pid; do
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] && echo "$pid"
        done
        for proc in /proc/[0-9]*; do
            { tr '\0' '\n' <"$proc/environ"; } 2>/dev/null | grep -qxF "LIGHTSWEEP_SLURM_STATE=$STATE" && echo "${proc#/proc/}"
        done
    } | sort -u)
    [ -n "$roots" ] || return 0
    ps -eo pid=,ppid= | awk -v roots="$roots" -v me="$$" -v subshell="$BASHPID" '
        BEGIN { n = split(roots, r, "\n"); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2 }
        END {
            changed = 1
            while (changed) { changed = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
            for (p in keep) if (p != me && p != subshell && (p in parent)) print p
        }'
}

cancel_jobs() {
    alive slurmctld || return 0
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    [ -n "${jobs// /}" ] || return 0
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    alive slurmd || return 0  # no slurmd to end them: the leftovers are ended by PID below
    local deadline=$((SECONDS + KILL_WAIT + 30))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
}

stop() {
    if [ ! -d "$STATE" ]; then
        say "not running (no state in $STATE)"
        return
    fi
    if [ -d "$PIDS" ]; then
        cancel_jobs
        local i
        for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
    fi
    # Job steps (slurmstepd) outlive slurmd by design: end what is left of this cluster, by PID.
    local left pid
    left=$(cluster_processes)
    if [ -n "$left" ]; then
        say "ending leftover processes of this cluster: $(echo $left)"
        for pid in $left; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in $left; do wait_gone "$pid" 15 || kill -KILL "$pid" 2>/dev/null || true; done
        for pid in $left; do wait_gone "$pid" 10 || die "process $pid of this cluster did not end after SIGKILL"; done
    fi
    say "stopped (state kept in $STATE)"
}

status() {
    local rc=0 name
    for name in "${DAEMONS[@]}"; do
        if alive "$name"; then say "$name: running (PID $(pid_of "$name"))"; else say "$name: not running"; rc=3; fi
    done
    if [ $rc = 0 ]; then
        local state
        state=$(sinfo -h -n "$(node_name)" -o %t 2>/dev/null || true)
        say "node $(node_name): ${state:-no answer}; clients: export SLURM_CONF=$CONF"
        [ -n "$state" ] || rc=3
    fi
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    *) echo "usage: $0 start|stop|restart|status   (state in $STATE)" >&2; exit 2 ;;
esac
