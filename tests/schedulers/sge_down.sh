#!/usr/bin/env bash
# Stop the Grid Engine daemons (sge_execd, sge_qmaster) that sge_up.sh
# started, by their pids; daemons started by anything else are left alone.
# (sge_qmaster takes ~10 s for its controlled shutdown.)
set -euo pipefail
LOG_TAG=sge_down
. "$(dirname "$0")/lib.sh"
stop_marked sge_execd sge_execd /var/spool/gridengine/execd/*/execd.pid
stop_marked sge_qmaster sge_qmaster /var/spool/gridengine/qmaster/qmaster.pid
