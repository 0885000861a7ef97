#!/usr/bin/env bash
# Stop the Slurm daemons (slurmd, slurmctld, munged) that slurm_up.sh started,
# by their pids; daemons started by anything else are left alone.
set -euo pipefail
LOG_TAG=slurm_down
. "$(dirname "$0")/lib.sh"
stop_marked slurmd slurmd /run/slurmd.pid
stop_marked slurmctld slurmctld /run/slurmctld.pid
stop_marked munged munged /run/munge/munged.pid
