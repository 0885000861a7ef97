# Shared by slurm_down.sh and sge_down.sh (sourced, not run).
# Stops only daemons whose pid an up script recorded in $MARK_DIR/<name>.
MARK_DIR=/run/cluster-func-schedulers

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
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null \
        || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]; then
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
    for ((i = 0; i < ${STOP_TIMEOUT:-40} * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
        echo "[$LOG_TAG] $name (pid $pid) still running after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$marker"
}
