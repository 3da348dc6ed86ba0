#!/usr/bin/env bash
# Stop the daemons scripts/start_test_slurm.sh started in DIR (slurmd, slurmctld, munged),
# by the process ids they recorded there.  Safe to call twice or after a failed start.
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$(realpath -m "$1")
pids=()
for file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$file" ] || continue
    pid=$(cat "$file" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
done
for _ in $(seq 40); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && exit 0
    sleep 0.25
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
exit 0
