#!/usr/bin/env bash
# Bring up the real batch schedulers for the tests: Slurm (slurm_up.sh), Grid
# Engine (sge_up.sh) and OpenPBS (pbs_up.sh, built from source the first time:
# ~5 min), one after the other (all use apt/dpkg).
# Each script's output goes to a log file; on failure its tail is printed.
# Exits non-zero if any fails. Idempotent, like the scripts it runs.
#   usage: tests/schedulers/up.sh            # all three
#          tests/schedulers/up.sh slurm      # only some (slurm | sge | pbs)
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
LOG_DIR="${SCHEDULERS_LOG_DIR:-/tmp/cluster-func-schedulers}"
mkdir -p "$LOG_DIR"
which=("$@")
[ ${#which[@]} -gt 0 ] || which=(slurm sge pbs)

status=0
total_start=$(date +%s.%N)
for s in "${which[@]}"; do
    script="$HERE/${s}_up.sh"
    log="$LOG_DIR/${s}_up.log"
    if [ ! -x "$script" ]; then
        echo "[up] unknown scheduler '$s' (no $script)" >&2
        status=1
        continue
    fi
    start=$(date +%s.%N)
    if "$script" >"$log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc = 0 ]; then
        echo "[up] $s: ready in ${secs}s (log $log)"
    else
        echo "[up] $s: FAILED (exit $rc) after ${secs}s; last lines of $log:" >&2
        tail -n 60 "$log" >&2
        status=1
    fi
done
secs=$(awk -v a="$total_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
echo "[up] total ${secs}s"
exit $status
