#!/usr/bin/env bash
# Submit a list of shell command lines as ONE Slurm job array: task i runs line i+1 of
# TASK_FILE (in the repository root).  Used by imp_exec.sh and cifar_exec.sh with --slurm.
#
#   scripts/slurm_submit.sh TASK_FILE LOG_DIR JOB_NAME [sbatch options ...]
#
# Writes LOG_DIR/JOB_NAME.sbatch (the array script) and prints the job id; each task's
# output goes to LOG_DIR/JOB_NAME-<jobid>_<task>.out.  Exit 2 on bad arguments or when
# sbatch is missing or refuses the job.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 TASK_FILE LOG_DIR JOB_NAME [sbatch options ...]" >&2; exit 2; }
tasks=$(realpath "$1"); log_dir=$(realpath -m "$2"); name=$3; shift 3
command -v sbatch >/dev/null || { echo "error: --slurm: sbatch not found (is this a Slurm login node?)" >&2; exit 2; }
count=$(grep -c '' "$tasks" || true)
[ "$count" -gt 0 ] || { echo "error: --slurm: no tasks in $tasks" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$log_dir"
script="$log_dir/$name.sbatch"
cat > "$script" <<SCRIPT
#!/usr/bin/env bash
# $count tasks, one per line of $tasks
set -euo pipefail
line=\$(sed -n "\$((SLURM_ARRAY_TASK_ID + 1))p" "$tasks")
echo "task \$SLURM_ARRAY_TASK_ID on \$(hostname): \$line"
cd "$repo"
exec bash -c "\$line"
SCRIPT
out=$(sbatch --parsable --job-name="$name" --array="0-$((count - 1))" \
    --output="$log_dir/$name-%A_%a.out" "$@" "$script" 2>&1) \
    || { echo "error: --slurm: sbatch refused the job: $out" >&2; exit 2; }
job=${out%%;*}
echo "submitted Slurm job array $job: $count task(s) ($tasks); logs: $log_dir/$name-${job}_<task>.out"
