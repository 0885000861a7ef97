#!/usr/bin/env bash
# Bring up a single-host (Son of) Grid Engine 8.1.9 cluster on this machine:
# sge_qmaster + sge_execd, queue all.q on `hostname`, for the real-scheduler
# tests. Configured through files given to qconf -M*/-A* (never an editor).
#
# Idempotent: safe to run again while the daemons of an earlier run are up;
# daemons are checked through their pid files and only started when needed.
# Needs root and Debian 12 (gridengine-master, gridengine-exec,
# gridengine-client). Stop with tests/schedulers/sge_down.sh.
set -euo pipefail

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
HOST="$(hostname)"
SLOTS="${SGE_UP_SLOTS:-4}"
SPOOL=/var/spool/gridengine
QMASTER_PID="$SPOOL/qmaster/qmaster.pid"
QMASTER_LOG="$SPOOL/qmaster/messages"
# sge_execd names its spool directory after the name it resolves for itself,
# which here is "localhost" (127.0.0.1), not $HOST: look in every directory.
EXECD_LOG="$SPOOL/execd/*/messages"
COMMON="$SGE_ROOT/$SGE_CELL/common"
# lib.sh: pid_alive, wait_pidfile, wait_gone and MARK_DIR, where each daemon
# this script starts gets its pid recorded (sge_down.sh stops only those).
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
READY_TIMEOUT="${SGE_UP_READY_TIMEOUT:-60}"
WORK="$(mktemp -d /tmp/sge_up.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# Daemons start with a clean environment, as under an init system: sge_execd
# hands its own environment to every job, so whatever the caller's shell had
# would leak into jobs.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

log() { echo "[sge_up] $*"; }

fail() {
    echo "[sge_up] ERROR: $*" >&2
    local f
    for f in "$QMASTER_LOG" $EXECD_LOG /tmp/sge_up.qmaster.out /tmp/sge_up.execd.out; do
        case "$f" in /tmp/*) [ -s "$f" ] || continue ;; esac
        echo "----- log: $f (last 30 lines) -----" >&2
        if [ -r "$f" ]; then tail -n 30 "$f" >&2; else echo "(missing)" >&2; fi
    done
    echo "[sge_up] logs: $QMASTER_LOG $EXECD_LOG (daemon start-up output: /tmp/sge_up.qmaster.out /tmp/sge_up.execd.out)" >&2
    exit 1
}

# execd_alive: true (and prints the pid file) if an execd pid file names a
# live sge_execd.
execd_alive() {
    local f
    for f in "$SPOOL"/execd/*/execd.pid; do
        if pid_alive "$f" sge_execd; then echo "$f"; return 0; fi
    done
    return 1
}


# set_keys FILE KEY VALUE [KEY VALUE ...]: rewrite a qconf listing with the
# given keys set. Backslash-continued lines are joined first, every line is
# normalised to "key value" (so two listings compare equal when their values
# are); keys that are absent are appended.
set_keys() {
    local file=$1; shift
    awk -v kv="$(printf '%s\037' "$@")" '
        BEGIN {
            n = split(kv, a, "\037")
            for (i = 1; i + 1 <= n; i += 2) if (a[i] != "") { want[a[i]] = a[i + 1]; order[++m] = a[i] }
        }
        {
            line = $0
            while (line ~ /\\$/ && (getline nxt) > 0) {
                sub(/\\$/, "", line); sub(/^[ \t]+/, "", nxt); line = line nxt
            }
            if (line ~ /^[ \t]*$/ || line ~ /^#/) { print line; next }
            key = line; sub(/[ \t].*$/, "", key)
            val = line; sub(/^[^ \t]+[ \t]*/, "", val); gsub(/[ \t]+/, " ", val); sub(/ $/, "", val)
            if (key in want) { val = want[key]; done[key] = 1 }
            printf "%-28s %s\n", key, val
        }
        END { for (i = 1; i <= m; i++) if (!(order[i] in done)) printf "%-28s %s\n", order[i], want[order[i]] }
    ' "$file" >"$file.new"
    mv "$file.new" "$file"
}

[ "$(id -u)" = 0 ] || { echo "[sge_up] must run as root" >&2; exit 1; }

# --- packages -------------------------------------------------------------
PKGS=(gridengine-master gridengine-exec gridengine-client)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    command -v debconf-set-selections >/dev/null || fail "debconf-set-selections missing"
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $HOST
EOF
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
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/sge_up.apt.log 2>&1; then
        log "install failed, retrying after apt-get update"
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/sge_up.apt.log 2>&1 \
            || { tail -n 30 /tmp/sge_up.apt.log >&2; fail "apt-get install ${missing[*]} failed (log /tmp/sge_up.apt.log)"; }
    fi
fi
[ -f "$COMMON/bootstrap" ] || fail "$COMMON/bootstrap missing: the gridengine-master package did not create the cell (debconf preseed?)"
[ -x /usr/lib/gridengine/sge_qmaster ] || fail "sge_qmaster not installed"

mkdir -p "$MARK_DIR"

# --- before the daemons -------------------------------------------------------
# 127.0.0.1 reverse-resolves to "localhost": alias it to this host, or every
# qconf is refused with "access denied".
aliases="$HOST localhost"
if [ "$(cat "$COMMON/host_aliases" 2>/dev/null || true)" != "$aliases" ]; then
    echo "$aliases" >"$COMMON/host_aliases"
    chown sgeadmin:sgeadmin "$COMMON/host_aliases"
fi
mkdir -p /var/run/gridengine "$SPOOL/execd"
chown sgeadmin:sgeadmin /var/run/gridengine "$SPOOL/execd"

# --- qmaster ----------------------------------------------------------------
if pid_alive "$QMASTER_PID" sge_qmaster; then
    log "sge_qmaster already running (pid $(cat "$QMASTER_PID"))"
else
    log "starting sge_qmaster"
    rm -f "$QMASTER_PID"
    (cd / && setsid "${CLEAN_ENV[@]}" /usr/sbin/sge_qmaster </dev/null >>/tmp/sge_up.qmaster.out 2>&1) \
        || fail "sge_qmaster failed to start (output /tmp/sge_up.qmaster.out)"
    wait_pidfile "$QMASTER_PID" sge_qmaster 20 || fail "sge_qmaster did not come up ($QMASTER_PID)"
    cat "$QMASTER_PID" >"$MARK_DIR/sge_qmaster"
fi
# Wait until qmaster answers.
deadline=$((SECONDS + 30))
until timeout 10 qconf -sh >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "qmaster does not answer qconf -sh within 30 s"
    sleep 0.2
done

# --- configuration (files, never an editor) ---------------------------------
cd "$WORK"

# Global configuration: the file must be named after the configuration.
# shellcheck disable=SC2094 # "global" is the configuration name, not the file
qconf -sconf global >global
set_keys global \
    min_uid 0 \
    min_gid 0 \
    load_report_time 00:00:05 \
    reporting_params "accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00"
qconf -sconf global >global.cur
set_keys global.cur   # normalise the same way for the comparison
if ! cmp -s global global.cur; then
    log "setting global configuration"
    qconf -Mconf global >>qconf.log 2>&1 || { cat qconf.log >&2; fail "qconf -Mconf global failed"; }
fi

# Scheduler: pass every second instead of every 15 s.
qconf -ssconf >sched
set_keys sched schedule_interval 0:0:1 flush_submit_sec 1 flush_finish_sec 1
qconf -ssconf >sched.cur
set_keys sched.cur
if ! cmp -s sched sched.cur; then
    log "setting scheduler configuration"
    qconf -Msconf sched >>qconf.log 2>&1 || { cat qconf.log >&2; fail "qconf -Msconf failed"; }
fi

# Submit host.
if ! qconf -ss 2>/dev/null | grep -qx "$HOST"; then
    log "adding submit host $HOST"
    qconf -as "$HOST" >>qconf.log 2>&1 || { cat qconf.log >&2; fail "qconf -as failed"; }
fi

# Execution host, from a file.
cat >exechost <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
if ! qconf -se "$HOST" >/dev/null 2>&1; then
    log "adding execution host $HOST"
    qconf -Ae exechost >>qconf.log 2>&1 || { cat qconf.log >&2; fail "qconf -Ae failed"; }
fi

# Queue all.q from the template.
qconf -sq >queue
set_keys queue \
    qname all.q \
    hostlist "$HOST" \
    slots "$SLOTS" \
    pe_list NONE \
    load_thresholds NONE \
    shell /bin/bash
if qconf -sq all.q >queue.cur 2>/dev/null; then
    # Compare only the keys we set.
    keys='^(qname|hostlist|slots|pe_list|load_thresholds|shell)$'
    want="$(awk -v k="$keys" '$1 ~ k {print $1, $2}' queue)"
    have="$(awk -v k="$keys" '$1 ~ k {print $1, $2}' queue.cur)"
    if [ "$want" != "$have" ]; then
        log "updating queue all.q"
        qconf -Mq queue >>qconf.log 2>&1 || { cat qconf.log >&2; fail "qconf -Mq failed"; }
    fi
else
    log "adding queue all.q"
    qconf -Aq queue >>qconf.log 2>&1 || { cat qconf.log >&2; fail "qconf -Aq failed"; }
fi
cd /

# --- execd ------------------------------------------------------------------
if f="$(execd_alive)"; then
    log "sge_execd already running (pid $(cat "$f"))"
else
    log "starting sge_execd"
    rm -f "$SPOOL"/execd/*/execd.pid
    (cd / && setsid "${CLEAN_ENV[@]}" /usr/sbin/sge_execd </dev/null >>/tmp/sge_up.execd.out 2>&1) \
        || fail "sge_execd failed to start (output /tmp/sge_up.execd.out)"
    for ((i = 0; ; i++)); do
        execd_alive >/dev/null && break
        [ $i -lt 200 ] || fail "sge_execd did not come up (no live $SPOOL/execd/*/execd.pid)"
        sleep 0.1
    done
    cat "$(execd_alive)" >"$MARK_DIR/sge_execd"
fi

# --- readiness ----------------------------------------------------------------
# Ready when `qstat -f` lists all.q@HOST with an empty state column
# (columns: queuename qtype resv/used/tot. load_avg arch [states]).
log "waiting for all.q@$HOST to be ready"
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
    line="$(qstat -f -q "all.q@$HOST" 2>/dev/null | awk -v q="all.q@$HOST" '$1 == q' || true)"
    if [ -n "$line" ]; then
        states="$(awk '{print $6}' <<<"$line")"
        [ -z "$states" ] && break
        # An error state (E) left over from an earlier run never clears itself.
        if [[ "$states" == *E* ]]; then
            log "clearing error state '$states' of all.q@$HOST"
            qmod -c "all.q@$HOST" >/dev/null 2>&1 || true
        fi
        # A queue disabled by hand (d) stays so across restarts.
        if [[ "$states" == *d* ]]; then
            log "enabling disabled all.q@$HOST"
            qmod -e "all.q@$HOST" >/dev/null 2>&1 || true
        fi
    fi
    if [ $SECONDS -ge $deadline ]; then
        qstat -f >&2 || true
        fail "all.q@$HOST not ready within ${READY_TIMEOUT}s (qstat line: '${line}')"
    fi
    sleep 0.5
done

log "submitting a test job (qsub -sync y -b y true)"
if ! timeout 60 qsub -sync y -b y -j y -o /dev/null -N sge_up_check true >"$WORK/qsub.out" 2>&1; then
    cat "$WORK/qsub.out" >&2 || true
    qstat -f >&2 || true
    fail "test job failed"
fi
log "ready: queue all.q@$HOST ($SLOTS slots), SGE_ROOT=$SGE_ROOT"
