#!/usr/bin/env bash
# Start a throw-away single-node Slurm cluster for tests: munge (with a key generated here) +
# slurmctld + slurmd, this host being the controller and the only node (2 CPUs, partition
# "debug").  Everything lives in DIR; nothing under /etc is changed.
#
#   sudo scripts/start_test_slurm.sh DIR     # then: export SLURM_CONF=DIR/slurm.conf
#   sudo scripts/stop_test_slurm.sh DIR      # always, also after a failure
#
# Needs root and Debian's packages `slurmctld slurmd slurm-client munge`.  Ports: 6817/6818,
# or SLURM_TEST_PORT and SLURM_TEST_PORT+1.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: $0 must run as root (it starts the daemons)" >&2; exit 2; }
for tool in munged slurmctld slurmd sinfo; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null \
        || { echo "error: $tool not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 2; }
done
export PATH="$PATH:/usr/sbin:/sbin"
dir=$(realpath -m "$1")
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 755 "$dir"
host=$(hostname -s)
port=${SLURM_TEST_PORT:-6817}

# munge: a fresh key, its socket and files in DIR/munge, run as the munge user
key="$dir/munge/munge.key"
dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
chown -R munge:munge "$dir/munge"
chmod 700 "$dir/munge"
chmod 400 "$key"
runuser -u munge -- munged --force --key-file="$key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
chmod 755 "$dir/munge"   # slurm's daemons and the job's commands reach the socket

cat > "$dir/slurm.conf" <<CONF
ClusterName=testcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
    if [ "$state" = idle ]; then
        echo "slurm up: SLURM_CONF=$SLURM_CONF (node $host idle)"
        exit 0
    fi
    sleep 0.5
done
echo "error: the test node did not become idle (state: ${state:-none}); logs in $dir/log" >&2
tail -n 20 "$dir/log/"*.log >&2 || true
exit 1
