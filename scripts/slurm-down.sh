#!/usr/bin/env bash
# slurm-down.sh [DIR]: stops the SLURM that scripts/slurm-up.sh DIR started (slurmctld and
# slurmd by their PID files, munged only if slurm-up started it) and removes DIR.
set -uo pipefail
dir=${1:-${TMPDIR:-/tmp}/crest-slurm}
[ -f "$dir/slurm.conf" ] || { echo "slurm-down: no SLURM configuration in $dir" >&2; exit 0; }
export SLURM_CONF=$dir/slurm.conf
# Stop by PID; wait for each to be gone (slurmd ends the jobs it runs).
stop() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
}
stop "$dir/slurmd.pid"
stop "$dir/slurmctld.pid"
if [ -f "$dir/munged.ours" ]; then
  stop /run/munge/munged.pid
fi
rm -rf "$dir"
echo "slurm-down: stopped" >&2
