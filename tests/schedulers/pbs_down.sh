#!/usr/bin/env bash
# Stop the OpenPBS daemons (pbs_server, pbs_sched, pbs_comm, pbs_mom and PBS's
# PostgreSQL) with `pbs_init.d stop`, if pbs_up.sh started them: its marker
# holds the pid of the pbs_server it started. A PBS started by anything else is
# left alone. (Takes ~5 s.)
set -euo pipefail
LOG_TAG=pbs_down
. "$(dirname "$0")/lib.sh"
marker="$MARK_DIR/pbs_server"
if [ ! -s "$marker" ]; then
    echo "[$LOG_TAG] pbs_server: no pid recorded by the up script, nothing to stop"
    exit 0
fi
pid="$(tr -dc '0-9' <"$marker")"
if ! pid_live "$pid" pbs_server.bin; then
    echo "[$LOG_TAG] pbs_server: not running"
    rm -f "$marker"
    exit 0
fi
echo "[$LOG_TAG] stopping PBS (server pid $pid): pbs_init.d stop"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    /opt/pbs/libexec/pbs_init.d stop
wait_gone "$pid" pbs_server.bin "${STOP_TIMEOUT:-40}" || echo "[$LOG_TAG] pbs_server (pid $pid) still running" >&2
rm -f "$marker"
