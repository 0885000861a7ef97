#!/usr/bin/env bash
# Bring up a single-host OpenPBS 23.06.06 server on this machine: pbs_server,
# pbs_sched, pbs_comm, pbs_mom (and PBS's own PostgreSQL on port 15007), queue
# workq, for the real-scheduler tests. The facts this follows (build fix,
# loopback host names, scp, acl_roots...) are in ../shared/docs/pbs.md.
#
# Installs into /opt/pbs, PBS_HOME /var/spool/pbs, configuration /etc/pbs.conf.
# The commands are used by their full path (/opt/pbs/bin/qsub...): /usr/bin/qsub
# is Grid Engine's and stays first on PATH (PBS's /etc/profile.d/pbs.sh appends).
#
# If /opt/pbs/sbin/pbs_server is missing, OpenPBS is built from the source
# tarball $PBS_TARBALL (default: ../shared/vendor/openpbs-23.06.06.tar.gz next
# to the repository), ~5 minutes on 2 cores.
#
# Idempotent: safe to run again while the daemons of an earlier run are up;
# `pbs_init.d start` starts only the daemons that are not running.
# Needs root and Debian 12. Stop with tests/schedulers/pbs_down.sh.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PBS_VERSION=23.06.06
PBS_EXEC=/opt/pbs
PBS_HOME=/var/spool/pbs
PBS_CONF=/etc/pbs.conf
INIT="$PBS_EXEC/libexec/pbs_init.d"
NCPUS="${PBS_UP_NCPUS:-8}"
NGPUS="${PBS_UP_NGPUS:-2}"
READY_TIMEOUT="${PBS_UP_READY_TIMEOUT:-90}"
BUILD_LOG=/tmp/pbs_up.build.log
START_LOG=/tmp/pbs_up.start.log
# lib.sh: pid_live and MARK_DIR, where this script records the pid of the
# pbs_server it started (pbs_down.sh stops PBS only when that marker is live).
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# Daemons start with a clean environment, as under an init system. (pbs_mom
# itself replaces its environment with $PBS_HOME/pbs_environment, but the
# server, the scheduler, hooks and PBS's PostgreSQL would keep the caller's.)
# The build gets one too: configure would otherwise find pyenv's python3 and
# whatever else the caller's PATH holds.
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CLEAN_ENV=(env -i PATH="$STD_PATH" LANG=C.UTF-8)

log() { echo "[pbs_up] $*"; }

fail() {
    echo "[pbs_up] ERROR: $*" >&2
    local f
    for f in "$START_LOG" "$PBS_HOME/server_logs/$(date +%Y%m%d)" "$PBS_HOME/mom_logs/$(date +%Y%m%d)" \
        "$PBS_HOME/comm_logs/$(date +%Y%m%d)" "$PBS_HOME/sched_logs/$(date +%Y%m%d)"; do
        [ -e "$f" ] || continue
        echo "----- log: $f (last 20 lines) -----" >&2
        tail -n 20 "$f" >&2 || true
    done
    echo "[pbs_up] logs: $PBS_HOME/{server,mom,sched,comm}_logs/; start-up output $START_LOG; build $BUILD_LOG" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || { echo "[pbs_up] must run as root" >&2; exit 1; }

# --- build (only when not installed) ------------------------------------------
BUILD_PKGS=(gcc g++ make libtool autoconf automake pkg-config perl swig libhwloc-dev libx11-dev
    libxt-dev libedit-dev libical-dev libncurses-dev libpq-dev python3-dev tcl-dev tk-dev
    libexpat1-dev libssl-dev libxext-dev libxft-dev libcjson-dev postgresql postgresql-contrib expat
    libedit2 python3 tcl tk libical3)

install_packages() {
    local p cand need_update=0 missing=()
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    export DEBIAN_FRONTEND=noninteractive
    for p in "${missing[@]}"; do
        cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
        if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
    done
    if [ $need_update = 1 ]; then
        log "apt-get update"
        apt-get update -q >/dev/null
    fi
    log "installing ${missing[*]}"
    # --no-upgrade: leave the installed Slurm / Grid Engine packages alone.
    if ! apt-get install -y -q --no-install-recommends --no-upgrade "${missing[@]}" >/tmp/pbs_up.apt.log 2>&1; then
        log "install failed, retrying after apt-get update"
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends --no-upgrade "${missing[@]}" >/tmp/pbs_up.apt.log 2>&1 \
            || { tail -n 30 /tmp/pbs_up.apt.log >&2; fail "apt-get install failed (log /tmp/pbs_up.apt.log)"; }
    fi
}

build_pbs() {
    local tarball="${PBS_TARBALL:-$ROOT/../shared/vendor/openpbs-$PBS_VERSION.tar.gz}"
    # Relative to the caller's directory if relative; symlinks and .. resolved.
    tarball="$(readlink -m -- "$tarball")"
    if [ ! -f "$tarball" ]; then
        echo "[pbs_up] ERROR: OpenPBS is not installed ($PBS_EXEC/sbin/pbs_server missing) and the" >&2
        echo "[pbs_up] source tarball $tarball does not exist: set PBS_TARBALL to openpbs-$PBS_VERSION.tar.gz" >&2
        exit 1
    fi
    install_packages "${BUILD_PKGS[@]}"
    local work src t0
    work="$(mktemp -d /tmp/pbs_build.XXXXXX)"
    log "building OpenPBS from $tarball in $work (log $BUILD_LOG; ~5 min)"
    : >"$BUILD_LOG"
    tar -xzf "$tarball" -C "$work"
    src="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)"
    [ -f "$src/autogen.sh" ] || fail "no autogen.sh in $tarball"
    # Python 3.11 removed <eval.h>; nothing in the file needs it.
    sed -i '/#include <eval.h>/d' "$src/src/lib/Libpython/pbs_python_external.c"
    run_step() {  # run_step NAME CMD...: in $src, clean environment, output to the build log
        t0=$SECONDS
        echo "===== $1" >>"$BUILD_LOG"
        (cd "$src" && "${CLEAN_ENV[@]}" HOME=/root "${@:2}") >>"$BUILD_LOG" 2>&1 \
            || { tail -n 40 "$BUILD_LOG" >&2; fail "build step '$1' failed (log $BUILD_LOG, sources $src)"; }
        log "  $1: $((SECONDS - t0)) s"
    }
    run_step autogen ./autogen.sh
    # --with-python=/usr: else configure takes the first python3 on PATH.
    run_step configure ./configure --prefix="$PBS_EXEC" --with-python=/usr
    run_step make make -j2
    run_step install make install
    rm -rf "$work"
}

if [ ! -x "$PBS_EXEC/sbin/pbs_server" ]; then
    build_pbs
fi
[ -x "$PBS_EXEC/sbin/pbs_server" ] || fail "$PBS_EXEC/sbin/pbs_server missing after the build"
# make install does not set the setuid bits the packaged PBS has; without them
# a non-root qsub fails with "pbs_iff: cannot connect to host".
chmod 4755 "$PBS_EXEC/sbin/pbs_iff" "$PBS_EXEC/sbin/pbs_rcp"

mkdir -p "$MARK_DIR"

# --- host name ----------------------------------------------------------------
# PBS refuses a host name that resolves to a loopback address ("Could not find
# any usable IP address"). Where `hostname` does, give this machine's first
# non-loopback IPv4 the alias <hostname>-pbs in /etc/hosts and use that name.
HOST="$(hostname)"
addr="$(getent ahostsv4 "$HOST" 2>/dev/null | awk 'NR == 1 {print $1}' || true)"
case "$addr" in
    "" | 127.*)
        NAME="$HOST-pbs"
        ip="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -n1 || true)"
        [ -n "$ip" ] || fail "$HOST resolves to '${addr:-nothing}' and hostname -I has no non-loopback IPv4 for PBS"
        if ! awk -v ip="$ip" -v n="$NAME" '$1 == ip { for (i = 2; i <= NF; i++) if ($i == n) found = 1 } END { exit !found }' /etc/hosts; then
            log "adding '$ip $NAME' to /etc/hosts ($HOST resolves to ${addr:-nothing})"
            # Drop a stale line for the alias (the address changed), keep the rest.
            # (Written in place: /etc/hosts may be a bind mount.)
            hosts="$(awk -v n="$NAME" '{ for (i = 2; i <= NF; i++) if ($i == n) next; print }' /etc/hosts)"
            printf '%s\n%s %s\n' "$hosts" "$ip" "$NAME" >/etc/hosts
        fi
        ;;
    *) NAME="$HOST" ;;
esac

# --- /etc/pbs.conf and PBS_HOME -------------------------------------------------
write_conf() {
    local tmp
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
PBS_EXEC=$PBS_EXEC
PBS_SERVER=$NAME
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_HOME=$PBS_HOME
PBS_LEAF_NAME=$NAME
PBS_MOM_NODE_NAME=$NAME
PBS_SERVER_HOST_NAME=$NAME
EOF
    if cmp -s "$tmp" "$PBS_CONF"; then
        rm -f "$tmp"
        return 1
    fi
    install -m 644 "$tmp" "$PBS_CONF"
    rm -f "$tmp"
    return 0
}

# Creates the PBS_HOME skeleton and /etc/init.d/pbs.
postinstall() {
    log "pbs_postinstall (PBS_HOME $PBS_HOME)"
    # Complaints about update-rc.d/systemctl are harmless (no init system here).
    "${CLEAN_ENV[@]}" "$PBS_EXEC/libexec/pbs_postinstall" server "$PBS_VERSION" "$PBS_EXEC" "$PBS_HOME" postgres \
        >/tmp/pbs_up.postinstall.log 2>&1 || { cat /tmp/pbs_up.postinstall.log >&2; fail "pbs_postinstall failed"; }
    # It may have appended to pbs.conf: write ours again.
    write_conf || true
}

# mom: copy job output with cp, not scp (no ssh here: 90 s of retries, then
# the output is left in undelivered/). Returns 0 if it changed the config.
MOM_CONF="$PBS_HOME/mom_priv/config"
ensure_usecp() {
    grep -qxF '$usecp *:/ /' "$MOM_CONF" 2>/dev/null && return 1
    log "adding \$usecp to $MOM_CONF"
    echo '$usecp *:/ /' >>"$MOM_CONF"
}

# Written once PBS has run a job; a PBS_HOME without it never came up.
OK_MARK="$PBS_HOME/cluster-func-up.ok"

conf_changed=0
write_conf && conf_changed=1
if [ ! -f "$PBS_HOME/pbs_environment" ] || [ ! -d "$PBS_HOME/server_priv" ] || [ ! -x /etc/init.d/pbs ]; then
    postinstall
fi
mom_changed=0
ensure_usecp && mom_changed=1

# --- daemons --------------------------------------------------------------------
# `pbs_init.d status` always exits 0; one line per running daemon: "pbs_server
# is pid N", ... but "pbs_comm is N" (no "pid").
running() { "${CLEAN_ENV[@]}" "$INIT" status 2>/dev/null | grep -Ec '^pbs_(server|mom|sched|comm) is (pid )?[0-9]+$' || true; }
server_pid() { "${CLEAN_ENV[@]}" "$INIT" status 2>/dev/null | awk '/^pbs_server is pid/ {print $4}'; }

# start_pbs: `pbs_init.d start` (it starts only the daemons not running) and
# wait until all four run; non-zero if they do not.
start_pbs() {
    local pid i
    # setsid: detach from the caller's session so the daemons outlive it.
    (cd / && setsid "${CLEAN_ENV[@]}" "$INIT" start </dev/null >>"$START_LOG" 2>&1) || return 1
    # The marker (pbs_server's process is named pbs_server.bin) goes down as
    # soon as the server runs, so that pbs_down.sh stops a half-started PBS too.
    pid="$(server_pid)"
    [ -z "$pid" ] || echo "$pid" >"$MARK_DIR/pbs_server"
    for ((i = 0; i < 300; i++)); do
        [ "$(running)" -ge 4 ] && return 0
        sleep 0.1
    done
    "${CLEAN_ENV[@]}" "$INIT" status >&2 || true
    return 1
}

if [ $conf_changed = 1 ] && [ "$(running)" -gt 0 ]; then
    log "$PBS_CONF changed: restarting PBS"
    "${CLEAN_ENV[@]}" "$INIT" stop >>"$START_LOG" 2>&1 || true
fi

n="$(running)"
if [ "$n" -ge 4 ]; then
    log "PBS already running (server pid $(server_pid))"
    if [ $mom_changed = 1 ]; then
        mom_pid="$(tr -dc '0-9' <"$PBS_HOME/mom_priv/mom.lock" 2>/dev/null || true)"
        if pid_live "$mom_pid" pbs_mom; then
            log "mom config changed: HUP to pbs_mom (pid $mom_pid)"
            kill -HUP "$mom_pid"
        fi
    fi
else
    log "starting PBS ($n of 4 daemons running)"
    if ! start_pbs; then
        # A first start that failed half-way leaves a PBS_HOME (and datastore)
        # that later starts trip over: wipe it and start afresh, once.
        [ ! -e "$OK_MARK" ] || fail "PBS did not start (output $START_LOG)"
        log "first start failed: stopping, wiping $PBS_HOME, pbs_postinstall again (output $START_LOG)"
        "${CLEAN_ENV[@]}" "$INIT" stop >>"$START_LOG" 2>&1 || true
        rm -rf "$PBS_HOME"
        postinstall
        ensure_usecp || true
        start_pbs || fail "PBS did not start (output $START_LOG)"
    fi
    pid="$(server_pid)"
    echo "$pid" >"$MARK_DIR/pbs_server"
    log "started (server pid $pid)"
fi

# --- server configuration (qmgr) ----------------------------------------------
QMGR="$PBS_EXEC/bin/qmgr"
deadline=$((SECONDS + 30))
until server_conf="$(timeout 10 "$QMGR" -c 'list server' 2>/dev/null)"; do
    [ $SECONDS -lt $deadline ] || fail "pbs_server does not answer qmgr within 30 s"
    sleep 0.2
done
qm() {  # qm COMMAND: qmgr -c COMMAND, output to the log
    "$QMGR" -c "$1" >/tmp/pbs_up.qmgr.out 2>&1 || { cat /tmp/pbs_up.qmgr.out >&2; return 1; }
}
# root's jobs are refused ("Bad UID for job execution") unless root is in acl_roots.
if ! grep -Eq '^\s*acl_roots = (.*,)?root(@[^,]*)?(,|$)' <<<"$server_conf"; then
    log "qmgr: set server acl_roots += root"
    if ! "$QMGR" -c 'set server acl_roots += root' >/tmp/pbs_up.qmgr.out 2>&1; then
        grep -q 'Duplicate entry' /tmp/pbs_up.qmgr.out || { cat /tmp/pbs_up.qmgr.out >&2; fail "qmgr acl_roots failed"; }
    fi
fi
if ! grep -Eq '^\s*flatuid = True' <<<"$server_conf"; then
    log "qmgr: set server flatuid = True"
    qm 'set server flatuid = True' || fail "qmgr flatuid failed"
fi
# Finished jobs stay visible to `qstat -x` (two weeks by default).
if ! grep -Eq '^\s*job_history_enable = True' <<<"$server_conf"; then
    log "qmgr: set server job_history_enable = True"
    qm 'set server job_history_enable = True' || fail "qmgr job_history_enable failed"
fi

# --- readiness ----------------------------------------------------------------
log "waiting for node $NAME to be free"
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
    node="$("$PBS_EXEC/bin/pbsnodes" "$NAME" 2>&1 || true)"
    state="$(awk -F' = ' '$1 ~ /^ *state$/ {print $2}' <<<"$node")"
    [ "$state" = free ] && break
    if [ $SECONDS -ge $deadline ]; then
        echo "$node" >&2
        fail "node $NAME not free within ${READY_TIMEOUT}s (state '${state}')"
    fi
    sleep 0.3
done
# Like Slurm's CPUs=8 and Grid Engine's 4 slots: more job slots than the 2 cores,
# so that tests can run several jobs (and ask for ppn > 2) at once.
ncpus="$(awk -F' = ' '$1 ~ /^ *resources_available.ncpus$/ {print $2}' <<<"$node")"
if [ "$ncpus" != "$NCPUS" ]; then
    log "qmgr: set node $NAME resources_available.ncpus = $NCPUS (was ${ncpus:-unset})"
    qm "set node $NAME resources_available.ncpus = $NCPUS" || fail "qmgr set node ncpus failed"
fi
# GPUs: a consumable host-level resource ngpus (this OpenPBS build has none),
# two of them on the node, and the scheduler counting it, so that a job can ask
# for select=1:ngpus=N. (PBS sets no CUDA_VISIBLE_DEVICES without its cgroups hook.)
if ! "$QMGR" -c 'list resource ngpus' >/dev/null 2>&1; then
    log "qmgr: create resource ngpus type=long, flag=nh"
    qm 'create resource ngpus type=long, flag=nh' || fail "qmgr create resource ngpus failed"
fi
ngpus="$(awk -F' = ' '$1 ~ /^ *resources_available.ngpus$/ {print $2}' <<<"$node")"
if [ "$ngpus" != "$NGPUS" ]; then
    log "qmgr: set node $NAME resources_available.ngpus = $NGPUS (was ${ngpus:-unset})"
    qm "set node $NAME resources_available.ngpus = $NGPUS" || fail "qmgr set node ngpus failed"
fi
SCHED_CONF="$PBS_HOME/sched_priv/sched_config"
if ! grep -Eq '^resources: ".*\bngpus\b' "$SCHED_CONF"; then
    log "adding ngpus to the scheduler's resources ($SCHED_CONF)"
    sed -i -E 's/^(resources: "[^"]*)"/\1, ngpus"/' "$SCHED_CONF"
    sched_pid="$(tr -dc '0-9' <"$PBS_HOME/sched_priv/sched.lock" 2>/dev/null || true)"
    if pid_live "$sched_pid" pbs_sched; then
        log "HUP to pbs_sched (pid $sched_pid)"
        kill -HUP "$sched_pid"
    fi
fi

# The job's login shell runs ~/.bashrc; where that runs `pyenv init`, a rehash
# lock left behind by a killed job makes it wait 60 s (see
# tests/scheduler_support.py: clear_stale_pyenv_lock). A rehash holds the lock
# for milliseconds: one older than 10 s is stale.
lock="${HOME:-/root}/.pyenv/shims/.pyenv-shim"
if [ -e "$lock" ] && [ $(($(date +%s) - $(stat -c %Y "$lock"))) -gt 10 ]; then
    log "removing a stale pyenv lock $lock"
    rm -f "$lock"
fi
log "submitting a test job (qsub -W block=true)"
if ! out="$(cd / && timeout 60 "$PBS_EXEC/bin/qsub" -W block=true -N pbs_up_check -j oe -o /dev/null \
    -l walltime=00:01:00 -- /bin/true 2>&1)"; then
    echo "$out" >&2
    "$PBS_EXEC/bin/qstat" -f >&2 2>&1 || true
    fail "test job failed"
fi
touch "$OK_MARK"
log "ready: node $NAME ($NCPUS cpus, $NGPUS gpus), queue workq, commands $PBS_EXEC/bin (conf $PBS_CONF)"
