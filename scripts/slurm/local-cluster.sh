#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying scripts/slurm/submit.sh without a real cluster
# (and for tests/slurm.rs): munged, slurmctld and slurmd run from DIR with their own keys, config,
# state, logs and pid files, nothing under /etc or systemd. No cgroups (proctrack/linuxproc,
# task/none), so it also runs in containers. Each job gets one core and DefMemPerCPU of memory, so
# jobs run side by side, one per core.
#
# Usage: scripts/slurm/local-cluster.sh start|stop|status [DIR]
#   start   installs Debian's slurm-wlm and munge with apt-get when the daemons are missing (as root),
#           starts the three daemons and waits until the node is idle; prints the line that points
#           Slurm's clients (sbatch, squeue, scontrol) at this cluster: export SLURM_CONF=DIR/slurm.conf
#   stop    kills exactly the daemons whose pids start recorded in DIR, nothing else
#   status  prints each recorded daemon with its pid and whether it runs, and the node's state
# DIR defaults to ./slurm-cluster. The daemons run as root (SlurmUser=root), so start needs root.
set -euo pipefail
usage() { sed -n '/^# Usage/,/^# DIR/p' "$0" | sed 's/^# //' >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
action=$1
dir=${2:-slurm-cluster}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
daemons=(slurmd slurmctld munged)
say() { echo "local-cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

running() { local pid; pid=$(cat "$dir/$1.pid" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

stop() {
    local name pid
    for name in "${daemons[@]}"; do
        pid=$(cat "$dir/$name.pid" 2>/dev/null) || continue
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            say "stopped $name ($pid)"
        fi
        rm -f "$dir/$name.pid"
    done
}

status() {
    local name
    for name in "${daemons[@]}"; do
        if running "$name"; then echo "$name $(cat "$dir/$name.pid") running"; else echo "$name - stopped"; fi
    done
    if running slurmctld; then SLURM_CONF=$dir/slurm.conf sinfo --noheader --Node --format='%N %T'; fi
}

install_slurm() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null ||
        die "slurmctld, slurmd or munged is missing; install Slurm and MUNGE (Debian: slurm-wlm munge) or run as root with apt-get"
    say "installing slurm-wlm and munge"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
}

# a TCP port on localhost that nothing listens on, from $1 upwards (bash's /dev/tcp: no ss or netstat needed)
free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 2)); done
    echo "$port"
}

write_config() {
    local host cpus memory_mb port
    host=$(hostname -s)
    cpus=$(nproc)
    # slurmd drains a node that reports less memory than configured: stay below MemTotal
    memory_mb=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
    port=$(free_port 6817)
    cat > "$dir/slurm.conf" <<EOF
# written by scripts/slurm/local-cluster.sh: a one-node cluster on localhost
ClusterName=nn-tools-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no systemd or cgroups: track job processes through /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
PropagateResourceLimits=NONE
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
# a job gets one core and DefMemPerCPU unless it asks for more, so jobs share the node
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((memory_mb / cpus / 2))
# quick reactions for tests: dependent jobs start within seconds, finished jobs stay visible to
# scontrol for an hour (there is no accounting database to ask afterwards)
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=5
KillWait=5
MinJobAge=3600
InactiveLimit=0
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [[ $(id -u) -eq 0 ]] || die "start needs root: the daemons run as SlurmUser=root"
    install_slurm
    if running slurmctld || running slurmd || running munged; then
        die "$dir: daemons are running already (local-cluster.sh stop $dir first)"
    fi
    mkdir -p "$dir/state" "$dir/spool"
    if [[ ! -f $dir/munge.key ]]; then
        (umask 077 && head -c 1024 /dev/urandom > "$dir/munge.key")
    fi
    chmod 0600 "$dir/munge.key"
    # --force: munged otherwise refuses sockets and keys outside its own root-owned directories
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
    for _ in $(seq 50); do [[ -S $dir/munge.socket ]] && break; sleep 0.1; done
    [[ -S $dir/munge.socket ]] || die "munged did not start: see $dir/munged.log"
    write_config
    export SLURM_CONF=$dir/slurm.conf
    # -i: ignore state left by a previous start (jobs, node states) in DIR/state
    slurmctld -i -f "$SLURM_CONF" || die "slurmctld did not start: see $dir/slurmctld.log"
    slurmd -f "$SLURM_CONF" -N "$(hostname -s)" || die "slurmd did not start: see $dir/slurmd.log"
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo --noheader --Node --format=%T 2>/dev/null || true)
        [[ $state == idle ]] && break
        sleep 0.5
    done
    [[ $state == idle ]] || die "the node is '${state:-unreachable}', not idle, after 60 s: see $dir/slurmctld.log and $dir/slurmd.log"
    say "one-node cluster up: $(hostname -s), $(nproc) CPUs; stop it with: $0 stop $dir"
    echo "export SLURM_CONF=$SLURM_CONF"
}

case $action in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
