#!/usr/bin/env bash
# slurm-up.sh [DIR]: starts a single-node SLURM for the cr_slurm test (and for trying cr_slurm
# by hand): installs slurm-wlm and munge with apt-get when missing, writes a configuration for
# this one node into DIR (default ${TMPDIR:-/tmp}/crest-slurm), starts munged (unless one
# runs), slurmctld and slurmd, and waits until the node is idle. Prints the line
# SLURM_CONF=DIR/slurm.conf: the clients (sbatch, scontrol, squeue) need it in the environment.
# The daemons talk over the loopback (127.0.0.1), so the host name need not resolve.
# scripts/slurm-down.sh DIR stops what this started. Runs as root (the daemons and the jobs
# then run as root too); nothing but DIR, /run/munge and munged's own files is written.
#
# The configuration is for tests: no cgroups, no accounting database, up to 4 jobs sharing a
# CPU, and a requeued job may start again after about 15 s (cred_expire=10, scheduler every
# 5 s) instead of 2 minutes.
set -euo pipefail
dir=${1:-${TMPDIR:-/tmp}/crest-slurm}
[ "$(id -u)" = 0 ] || { echo "slurm-up: run as root (it starts munged, slurmctld and slurmd)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { echo "slurm-up: slurm-wlm and munge are missing and there is no apt-get; install SLURM and munge by hand" >&2; exit 1; }
  echo "slurm-up: installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  echo "slurm-up: SLURM already runs from $dir (scripts/slurm-down.sh $dir stops it)" >&2
  echo "SLURM_CONF=$conf"
  exit 0
fi
node=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/^MemTotal:/ { print int($2 / 1024 / 2) }' /proc/meminfo)
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
cat >"$conf" <<CONF
# Written by crest's scripts/slurm-up.sh: one node, for tests.
ClusterName=crest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
KillWait=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF=$conf
# munge: the package made /etc/munge/munge.key; munged runs as the munge user.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$dir/munged.ours"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { echo "slurm-up: munged does not answer" >&2; exit 1; }
fi
/usr/sbin/slurmctld -f "$conf"
/usr/sbin/slurmd -f "$conf"
for _ in $(seq 100); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1 || true)
  # "idle*" (with the star) is a node that has not answered yet.
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "${state:-}" != idle ]; then
  echo "slurm-up: node $node is '${state:-unknown}', not idle, after 20 s; see $dir/log/" >&2
  exit 1
fi
echo "slurm-up: node $node idle ($cpus CPUs); logs in $dir/log" >&2
echo "SLURM_CONF=$conf"
