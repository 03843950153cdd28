#!/usr/bin/env bash
# A real single-node SLURM cluster on one Debian machine, for CI and for trying the SLURM path locally:
# munged, MariaDB, slurmdbd, slurmctld and slurmd, run without systemd or cgroups, stopped by PID.
#
#   bash slurm/local-cluster.sh up       install what is missing, start everything, wait until a job can run
#   bash slurm/local-cluster.sh status   print what runs (exit 0 when the whole cluster is up, 3 otherwise)
#   bash slurm/local-cluster.sh stop     cancel jobs and stop the daemons this script started
#
# Environment (all optional):
#   VICE_SLURM_DIR      state dir: configs, PID files, logs, controller state, database (default /var/tmp/vice-slurm)
#   VICE_SLURM_CLUSTER  cluster name (default vice)
#   VICE_SLURM_DB_PORT  TCP port of the private MariaDB on 127.0.0.1 (default 3307)
#
# Every daemon listens on 127.0.0.1 only (slurmctld 6817, slurmd 6818, slurmdbd 6819, MariaDB), provided
# the host name resolves to 127.0.0.1; otherwise `up` warns and the SLURM daemons listen on every interface.
#
# Every `up` from a stopped cluster wipes the controller state and the accounting database together:
# job ids restart at 1, and an old database would otherwise report a new job 1 as already finished.
set -euo pipefail

STATE_DIR=${VICE_SLURM_DIR:-/var/tmp/vice-slurm}
CLUSTER=${VICE_SLURM_CLUSTER:-vice}
DB_PORT=${VICE_SLURM_DB_PORT:-3307}
PARTITION=debug
ACCOUNT=vice
DB_USER=slurm
DB_PASS=vice-local-slurm
DB_NAME=slurm_acct_db
HOST=$(hostname -s)
SYSTEM_CONF=/etc/slurm/slurm.conf

ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOG=$STATE_DIR/log
CONF=$ETC/slurm.conf
DB_DIR=$STATE_DIR/mysql
DB_SOCK=$STATE_DIR/mysql-run/mysqld.sock
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
export SLURM_CONF=$CONF

die() {
    echo "local-cluster: error: $*" >&2
    exit 1
}

say() { echo "local-cluster: $*"; }

pid_of() { # the live PID recorded for daemon $1, or nothing
    local file=$RUN/$1.pid pid
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

show_log() { # last lines of daemon $1's log, to explain a failure
    local file=$LOG/$1.log
    if [[ -f $file ]]; then
        echo "---- last lines of $file ----" >&2
        tail -n 20 "$file" >&2
    fi
}

wait_until() { # wait_until DESCRIPTION TIMEOUT_S DAEMON CMD...: poll CMD until it succeeds, fail if DAEMON dies
    local what=$1 timeout=$2 daemon=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $daemon && -z $(pid_of "$daemon") ]]; then
            show_log "$daemon"
            die "$daemon exited while waiting for $what (log: $LOG/$daemon.log)"
        fi
        if ((SECONDS >= deadline)); then
            show_log "$daemon"
            die "timed out after ${timeout}s waiting for $what (log: $LOG/$daemon.log)"
        fi
        sleep 0.2
    done
}

launch() { # launch NAME CMD...: start CMD in the background, record its PID, log its output to $LOG/NAME.log
    local name=$1
    shift
    "$@" >>"$LOG/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sinfo >/dev/null || missing+=(slurm-client)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and no apt-get: install slurmctld, slurmd, slurmdbd, munge and mariadb-server"
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q -o DPkg::Lock::Timeout=300 update >"$LOG/apt.log" 2>&1 ||
        { tail -n 20 "$LOG/apt.log" >&2; die "apt-get update failed (log: $LOG/apt.log)"; }
    apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 ||
        { tail -n 20 "$LOG/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $LOG/apt.log)"; }
}

link_system_conf() { # clients (sinfo, sbatch, submitit) read /etc/slurm/slurm.conf: point it at ours
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    if [[ -e $SYSTEM_CONF && ! -L $SYSTEM_CONF ]]; then
        die "$SYSTEM_CONF exists and was not written by this script: move it away, or stop the SLURM it belongs to"
    fi
    ln -sfn "$CONF" "$SYSTEM_CONF"
}

host_address() { getent ahostsv4 "$HOST" | awk 'NR == 1 {print $1}'; }

bind_line() { # bind_line OPTIONS: the CommunicationParameters line that keeps a daemon off the network
    # With these options the daemons bind to the address the host name resolves to instead of every
    # interface; the configs name 127.0.0.1, so that is only right when the name resolves there.
    if [[ $(host_address) == 127.0.0.1 ]]; then
        echo "# Listen on 127.0.0.1 (what $HOST resolves to) only, not on every interface."
        echo "CommunicationParameters=$1"
    else
        echo "# $HOST resolves to $(host_address), not 127.0.0.1: listening on every interface."
    fi
}

listening() { # the local addresses of the daemons' TCP ports (6817 slurmctld, 6818 slurmd, 6819 slurmdbd)
    command -v ss >/dev/null || return 0
    ss -ltnH '( sport = :6817 or sport = :6818 or sport = :6819 )' | awk '{print $4}' | sort | xargs
}

write_configs() {
    local node
    if [[ $(host_address) != 127.0.0.1 ]]; then
        say "warning: $HOST resolves to '$(host_address)', not 127.0.0.1, so slurmctld, slurmd and slurmdbd" \
            "listen on every interface; add '127.0.0.1 $HOST' to /etc/hosts to keep them on 127.0.0.1"
    fi
    node=$(slurmd -C | head -n 1)
    [[ $node == NodeName=* ]] || die "\`slurmd -C\` printed '$node' instead of a NodeName line"
    cat >"$CONF" <<EOF
# Written by slurm/local-cluster.sh; rewritten on every fresh \`up\`.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$RUN/slurmctld.daemon.pid
SlurmdPidFile=$RUN/slurmd.daemon.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
KillWait=5
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
$(bind_line NoCtldInAddrAny,NoInAddrAny)
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by slurm/local-cluster.sh.
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
$(bind_line NoInAddrAny)
SlurmUser=root
PidFile=$RUN/slurmdbd.daemon.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        say "munged already runs (not started by this script): using it"
        return 0
    fi
    if [[ ! -f /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    # setpriv execs munged directly, so the recorded PID is munged's own (runuser would stay as its parent).
    launch munged setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged --foreground
    wait_until "munge credentials to work" 20 munged munge_works
}

start_mariadb() {
    rm -rf "$DB_DIR"
    install -d -o mysql -g mysql -m 750 "$DB_DIR"
    install -d -o mysql -g mysql -m 755 "$(dirname "$DB_SOCK")"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --skip-test-db \
        --auth-root-authentication-method=socket >>"$LOG/mariadbd.log" 2>&1 ||
        { show_log mariadbd; die "mariadb-install-db failed (log: $LOG/mariadbd.log)"; }
    launch mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" \
        --socket="$DB_SOCK" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$(dirname "$DB_SOCK")/mariadbd.pid" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900
    wait_until "MariaDB on 127.0.0.1:$DB_PORT" 60 mariadbd \
        mariadb-admin --no-defaults --socket="$DB_SOCK" -u root ping
    mariadb --no-defaults --socket="$DB_SOCK" -u root <<EOF
CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF
}

register_accounting() { # cluster before slurmctld registers; account and user for job records
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="vice local cluster" >/dev/null
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
}

node_idle() { [[ $(sinfo -h -n "$HOST" -o %t) == idle ]]; }

all_running() {
    local d
    for d in slurmdbd slurmctld slurmd mariadbd; do
        [[ -n $(pid_of "$d") ]] || return 1
    done
    munge_works
}

cmd_up() {
    [[ $EUID -eq 0 ]] || die "must run as root (it installs packages and starts daemons): sudo bash $0 up"
    mkdir -p "$ETC" "$RUN" "$LOG"
    chmod 755 "$STATE_DIR"
    if all_running && sinfo -h >/dev/null 2>&1; then
        say "already up (state dir $STATE_DIR)"
        return 0
    fi
    local t0=$SECONDS
    stop_daemons quiet
    install_packages
    link_system_conf
    rm -rf "$STATE_DIR/ctld" "$STATE_DIR/spool" "${LOG:?}"/*.log
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/spool"
    write_configs
    start_munge
    start_mariadb
    launch slurmdbd /usr/sbin/slurmdbd -D
    wait_until "slurmdbd on 127.0.0.1:6819" 60 slurmdbd sacctmgr -n list cluster
    register_accounting
    launch slurmctld /usr/sbin/slurmctld -D -i -f "$CONF"
    wait_until "slurmctld to answer" 60 slurmctld scontrol ping
    launch slurmd /usr/sbin/slurmd -D -f "$CONF"
    wait_until "node $HOST to be idle in partition $PARTITION" 60 slurmd node_idle
    wait_until "sacct to answer" 30 slurmdbd sacct -n -X
    say "up in $((SECONDS - t0))s: cluster $CLUSTER, partition $PARTITION, state dir $STATE_DIR"
    say "listening on $(listening)"
}

stop_daemons() { # stop_daemons [quiet]: cancel jobs, then stop our daemons in reverse start order, by PID
    local quiet=${1:-} i d pid deadline
    if [[ -n $(pid_of slurmctld) ]]; then
        scancel --full --quiet --user=root 2>/dev/null || true
        scancel --full --quiet --state=RUNNING 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [[ -n $(squeue -h -o %A 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.5; done
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${DAEMONS[i]}
        pid=$(pid_of "$d")
        if [[ -n $pid ]]; then
            kill -TERM "$pid"
            deadline=$((SECONDS + 20))
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
            [[ -n $quiet ]] || say "stopped $d (pid $pid)"
        fi
        rm -f "$RUN/$d.pid"
    done
}

cmd_stop() {
    [[ $EUID -eq 0 ]] || die "must run as root: sudo bash $0 stop"
    [[ -d $RUN ]] || {
        say "nothing to stop (no state dir $STATE_DIR)"
        return 0
    }
    stop_daemons
}

cmd_status() {
    local d pid up=0
    for d in "${DAEMONS[@]}"; do
        pid=$(pid_of "$d")
        if [[ -n $pid ]]; then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        elif [[ $d == munged ]] && munge_works; then
            printf '%-10s running (not started by this script)\n' "$d"
        else
            printf '%-10s stopped\n' "$d"
            up=3
        fi
    done
    if ((up == 0)); then
        sinfo
        echo "listening: $(listening)"
    fi
    echo "state dir: $STATE_DIR"
    return "$up"
}

case ${1:-} in
up) cmd_up ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: bash $0 up|stop|status" >&2
    exit 2
    ;;
esac
