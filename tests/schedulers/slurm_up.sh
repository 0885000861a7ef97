#!/usr/bin/env bash
# Bring up a single-node Slurm cluster (slurmctld + slurmd + munged) on this
# machine, system-wide (/etc/slurm/slurm.conf), for the real-scheduler tests.
#
# Idempotent: safe to run again while the daemons of an earlier run are up;
# daemons are checked through their pid files and only started when needed.
# Needs root and Debian 12 (packages slurm-wlm and munge).
# Stop with tests/schedulers/slurm_down.sh.
set -euo pipefail

HOST="$(hostname -s)"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
STATE_DIR=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
# lib.sh: pid_alive, wait_pidfile, wait_gone and MARK_DIR, where each daemon
# this script starts gets its pid recorded (slurm_down.sh stops only those).
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
READY_TIMEOUT="${SLURM_UP_READY_TIMEOUT:-90}"

# Daemons start with a clean environment, as under an init system, so that
# nothing of the caller's shell can reach a job through them.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

log() { echo "[slurm_up] $*"; }

fail() {
    echo "[slurm_up] ERROR: $*" >&2
    for f in "$CTLD_LOG" "$SLURMD_LOG" "$MUNGE_LOG"; do
        echo "----- log: $f (last 30 lines) -----" >&2
        if [ -r "$f" ]; then tail -n 30 "$f" >&2; else echo "(missing)" >&2; fi
    done
    echo "[slurm_up] logs: $CTLD_LOG $SLURMD_LOG $MUNGE_LOG; config: $CONF" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || { echo "[slurm_up] must run as root" >&2; exit 1; }

# --- packages -------------------------------------------------------------
PKGS=(slurm-wlm munge)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt does not know a candidate.
    need_update=0
    for p in "${missing[@]}"; do
        cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
        if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
    done
    if [ $need_update = 1 ]; then
        log "apt-get update"
        apt-get update -q >/dev/null
    fi
    log "installing ${missing[*]}"
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/slurm_up.apt.log 2>&1; then
        # Stale lists (404 on download) -> refresh once and retry.
        log "install failed, retrying after apt-get update"
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/slurm_up.apt.log 2>&1 \
            || { tail -n 30 /tmp/slurm_up.apt.log >&2; fail "apt-get install ${missing[*]} failed (log /tmp/slurm_up.apt.log)"; }
    fi
fi
for c in slurmctld slurmd munged srun sbatch; do
    command -v "$c" >/dev/null || fail "command $c not found after install"
done

mkdir -p "$MARK_DIR"

# --- munge ----------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge

if pid_alive "$MUNGE_PID" munged; then
    log "munged already running (pid $(cat "$MUNGE_PID"))"
else
    log "starting munged"
    rm -f "$MUNGE_PID"
    "${CLEAN_ENV[@]}" runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" \
        || fail "munged failed to start"
    wait_pidfile "$MUNGE_PID" munged 10 || fail "munged did not write $MUNGE_PID"
    cat "$MUNGE_PID" >"$MARK_DIR/munged"
fi
munge -n | unmunge >/dev/null || fail "munge -n | unmunge failed"

# --- fake GPUs ------------------------------------------------------------
# Two character devices with NVIDIA's major number are enough for Slurm to
# schedule GPUs (gres.conf, AutoDetect=off): each job then gets
# CUDA_VISIBLE_DEVICES set to the GPUs it was given. No GPU or driver needed.
GRES_CONF="$CONF_DIR/gres.conf"
for i in 0 1; do
    if [ ! -c "/dev/nvidia$i" ]; then
        log "creating fake GPU device /dev/nvidia$i"
        rm -f "/dev/nvidia$i"
        mknod "/dev/nvidia$i" c 195 "$i"
    fi
done

# --- slurm.conf -----------------------------------------------------------
mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
real_mem=$((mem_mb * 8 / 10))
[ "$real_mem" -ge 256 ] || real_mem=256

mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SLURMD_SPOOL"
tmp_conf="$(mktemp)"
cat >"$tmp_conf" <<EOF
# Written by cluster-func tests/schedulers/slurm_up.sh: single-node test cluster.
ClusterName=clusterfunc
GresTypes=gpu
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${CTLD_LOG}
SlurmdLogFile=${SLURMD_LOG}
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=8 RealMemory=${real_mem} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if ! cmp -s "$tmp_conf" "$CONF"; then
    log "writing $CONF"
    install -m 644 "$tmp_conf" "$CONF"
    conf_changed=1
fi
rm -f "$tmp_conf"

tmp_gres="$(mktemp)"
cat >"$tmp_gres" <<EOF
# Written by cluster-func tests/schedulers/slurm_up.sh: two fake GPUs.
AutoDetect=off
Name=gpu File=/dev/nvidia[0-1]
EOF
if ! cmp -s "$tmp_gres" "$GRES_CONF"; then
    log "writing $GRES_CONF"
    install -m 644 "$tmp_gres" "$GRES_CONF"
    conf_changed=1
fi
rm -f "$tmp_gres"

# A changed config while the daemons run: restart them so they pick it up.
if [ $conf_changed = 1 ]; then
    for pf in "$SLURMD_PID:slurmd" "$CTLD_PID:slurmctld"; do
        f=${pf%%:*}; c=${pf##*:}
        if pid_alive "$f" "$c"; then
            pid="$(tr -dc '0-9' <"$f")"
            log "config changed: stopping $c (pid $pid)"
            kill -TERM "$pid" || true
            wait_gone "$pid" "$c" 20 || fail "$c (pid $pid) did not stop"
        fi
    done
fi

# --- daemons --------------------------------------------------------------
if pid_alive "$CTLD_PID" slurmctld; then
    log "slurmctld already running (pid $(cat "$CTLD_PID"))"
else
    log "starting slurmctld"
    rm -f "$CTLD_PID"
    # setsid: detach from the caller's session so the daemon outlives it.
    setsid "${CLEAN_ENV[@]}" slurmctld -f "$CONF" </dev/null >>"$CTLD_LOG" 2>&1 || fail "slurmctld failed to start"
    wait_pidfile "$CTLD_PID" slurmctld 15 || fail "slurmctld did not come up ($CTLD_PID)"
    cat "$CTLD_PID" >"$MARK_DIR/slurmctld"
fi

if pid_alive "$SLURMD_PID" slurmd; then
    log "slurmd already running (pid $(cat "$SLURMD_PID"))"
else
    log "starting slurmd"
    rm -f "$SLURMD_PID"
    setsid "${CLEAN_ENV[@]}" slurmd -f "$CONF" </dev/null >>"$SLURMD_LOG" 2>&1 || fail "slurmd failed to start"
    wait_pidfile "$SLURMD_PID" slurmd 15 || fail "slurmd did not come up ($SLURMD_PID)"
    cat "$SLURMD_PID" >"$MARK_DIR/slurmd"
fi

# --- readiness --------------------------------------------------------------
# A node left DOWN/DRAIN by an earlier run would never take jobs.
node_state="$(timeout 15 sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1 || true)"
case "$node_state" in
    down* | drain* | fail*)
        log "node $HOST is $node_state: resuming"
        scontrol update NodeName="$HOST" State=RESUME || true
        ;;
esac

log "waiting for a job to run (srun -t 1 true)"
deadline=$((SECONDS + READY_TIMEOUT))
until timeout 60 srun -t 1 true >/tmp/slurm_up.srun.log 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        cat /tmp/slurm_up.srun.log >&2 || true
        fail "srun did not succeed within ${READY_TIMEOUT}s"
    fi
    sleep 0.5
done
log "ready: node $HOST, partition debug (conf $CONF)"
