# shellcheck shell=bash
# Shared by the up and down scripts in this directory (sourced, not run).
# The up scripts record the pid of each daemon they start in $MARK_DIR/<name>;
# the down scripts stop only those.
MARK_DIR=/run/cluster-func-schedulers

# pid_live PID COMM: true if PID is a live (not zombie) process named COMM.
# (A zombie matters here: PID 1 of this machine kind reaps orphans late, so a
# dead daemon can still answer kill -0 for a moment.)
pid_live() {
    local pid=$1 comm=$2 stat
    [ -n "$pid" ] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    [ "${stat#*) }" != "${stat}" ] || return 1
    case "${stat#*) }" in Z* | X*) return 1 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}

# pid_alive PIDFILE COMM: true if PIDFILE names a live process called COMM
# (guards against a stale pid file whose pid was reused).
pid_alive() {
    local pidfile=$1 comm=$2
    [ -s "$pidfile" ] || return 1
    pid_live "$(tr -dc '0-9' <"$pidfile")" "$comm"
}

# wait_pidfile PIDFILE COMM SECONDS: wait until pid_alive.
wait_pidfile() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        pid_alive "$1" "$2" && return 0
        sleep 0.1
    done
    return 1
}

# wait_gone PID COMM SECONDS: wait until PID is no longer a live COMM.
wait_gone() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        pid_live "$1" "$2" || return 0
        sleep 0.1
    done
    return 1
}

# stop_marked NAME COMM [PIDFILE...]: if the up script started NAME (marker
# holds its pid) and that pid is still a live COMM (and, when pid files are
# given, one of them names the same pid), send SIGTERM, wait up to
# ${STOP_TIMEOUT:-40}s, then SIGKILL. Removes the marker.
stop_marked() {
    local name=$1 comm=$2; shift 2
    local marker="$MARK_DIR/$name" pid f match i
    if [ ! -s "$marker" ]; then
        echo "[$LOG_TAG] $name: no pid recorded by the up script, nothing to stop"
        return 0
    fi
    pid="$(tr -dc '0-9' <"$marker")"
    if ! pid_live "$pid" "$comm"; then
        echo "[$LOG_TAG] $name: not running"
        rm -f "$marker"
        return 0
    fi
    if [ $# -gt 0 ]; then
        match=0
        for f in "$@"; do
            [ -s "$f" ] && [ "$(tr -dc '0-9' <"$f")" = "$pid" ] && match=1
        done
        if [ $match = 0 ]; then
            echo "[$LOG_TAG] $name: pid $pid is no longer in its pid file ($*), leaving it alone"
            rm -f "$marker"
            return 0
        fi
    fi
    echo "[$LOG_TAG] stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$comm" "${STOP_TIMEOUT:-40}"; then
        echo "[$LOG_TAG] $name (pid $pid) still running after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" "$comm" 5 || true
    fi
    rm -f "$marker"
}
