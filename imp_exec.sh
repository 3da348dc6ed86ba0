#!/usr/bin/env bash
# Run a grid of IMP experiments: every config × rewind point × seed.
#
#   ./imp_exec.sh                                   # the grid below
#   ./imp_exec.sh --configs "configs/cifar10/resnet20/imp_wr.yml configs/cifar10/resnet20/imp_lrr.yml" \
#                 --rewinds "0 250 2000" --seeds "1 2 3" -- --data /data/cifar
#
# One job per visible GPU at a time (CUDA_VISIBLE_DEVICES or nvidia-smi), jobs one after the
# other on a CPU-only machine.  Arguments after `--` go to every main.py call.  Before starting
# it prints where each result lives; finished runs are skipped (main.py reports them), so the
# script can simply be run again after an interruption.  Logs: <log_dir>/grid-logs/.
#
# On a Slurm cluster, --slurm submits the unfinished runs as ONE job array (task i = run i)
# instead of running them here; resources go to sbatch:
#   ./imp_exec.sh --configs "..." --seeds "1 2 3" --slurm --partition gpu --time 08:00:00 \
#                 --gpus-per-task 1 --cpus-per-task 8 --mem 32G [--sbatch-args "--qos=high"] -- ...
# With --gpus-per-task N > 1 each task runs torchrun --nproc_per_node=N (README: Scaling out).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CONFIGS="configs/cifar10/resnet20/imp_wr.yml"
REWINDS="2000"
SEEDS="1 2 3"
EXTRA=()
SLURM=0
SBATCH=()
GPUS_PER_TASK=0
need() {  # need OPTION VALUE: a flag's value must be there
    [ -n "${2:-}" ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
    case "$1" in
        --configs) need "$1" "${2:-}"; CONFIGS="$2"; shift 2 ;;
        --rewinds) need "$1" "${2:-}"; REWINDS="$2"; shift 2 ;;
        --seeds) need "$1" "${2:-}"; SEEDS="$2"; shift 2 ;;
        --slurm) SLURM=1; shift ;;
        --partition|--time|--cpus-per-task|--mem)
            need "$1" "${2:-}"; SBATCH+=("$1=$2"); shift 2 ;;
        --gpus-per-task)
            need "$1" "${2:-}"
            [[ "$2" =~ ^[0-9]+$ ]] || { echo "error: --gpus-per-task must be a whole number, got $2" >&2; exit 2; }
            GPUS_PER_TASK=$2; [ "$2" -gt 0 ] && SBATCH+=("$1=$2"); shift 2 ;;
        --sbatch-args) need "$1" "${2:-}"; read -r -a more <<< "$2"; SBATCH+=("${more[@]}"); shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ $SLURM = 0 ] && { [ ${#SBATCH[@]} -gt 0 ] || [ "$GPUS_PER_TASK" != 0 ]; }; then
    echo "error: --partition/--time/--gpus-per-task/--cpus-per-task/--mem/--sbatch-args need --slurm" >&2
    exit 2
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

gpus=()
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=',' read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
    count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    for ((i = 0; i < count; i++)); do gpus+=("$i"); done
fi

jobs_args=()
for config in $CONFIGS; do
    [ -f "$config" ] || { echo "error: config file not found: $config" >&2; exit 2; }
    for rewind in $REWINDS; do
        for seed in $SEEDS; do
            jobs_args+=("--config $config --imp-rewind-iter $rewind --seed $seed")
        done
    done
done

if [ $SLURM = 1 ]; then
    echo "${#jobs_args[@]} runs (Slurm job array)"
else
    echo "${#jobs_args[@]} runs on ${#gpus[@]} GPU(s)$([ ${#gpus[@]} -eq 0 ] && echo ' (CPU: one after the other)')"
fi
log_dir=""
job_dirs=()
job_done=()
for args in "${jobs_args[@]}"; do
    # shellcheck disable=SC2086
    line=$("$PY" main.py $args "${EXTRA[@]}" --dry-run | grep '^run directory: ' || true)
    dir=$(echo "$line" | sed -n 's/^run directory: \(.*\) (.*)$/\1/p')
    [ -n "$dir" ] || { echo "error: main.py rejected: $args ${EXTRA[*]}" >&2; exit 2; }
    echo "  $args  ->  $dir"
    job_dirs+=("$dir")
    case "$line" in *"(finished;"*) job_done+=(1) ;; *) job_done+=(0) ;; esac
    [ -n "$log_dir" ] || log_dir="$(dirname "$dir")"
done
mkdir -p "$log_dir/grid-logs"

if [ $SLURM = 1 ]; then
    launcher=("$PY" main.py)
    if [ "$GPUS_PER_TASK" -gt 1 ]; then
        launcher=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS_PER_TASK" main.py)
    fi
    task_file="$log_dir/grid-logs/imp_grid-$(date +%Y%m%d-%H%M%S)-$$.tasks"
    : > "$task_file"
    for i in "${!jobs_args[@]}"; do
        if [ "${job_done[$i]}" = 1 ]; then echo "finished, skipped: ${jobs_args[$i]}"; continue; fi
        # shellcheck disable=SC2086
        line=$(printf '%q ' "${launcher[@]}" ${jobs_args[$i]} "${EXTRA[@]}" --quiet)
        printf '%s\n' "${line% }" >> "$task_file"
    done
    if [ ! -s "$task_file" ]; then
        rm -f "$task_file"
        echo "nothing to submit: all ${#jobs_args[@]} runs are finished"
        exit 0
    fi
    exec bash scripts/slurm_submit.sh "$task_file" "$log_dir/grid-logs" imp_grid "${SBATCH[@]}"
fi
failed=0
run_job() {  # $1: job index, $2: GPU index or empty
    local args="${jobs_args[$1]}" log="$log_dir/grid-logs/$(basename "${job_dirs[$1]}").log"
    # shellcheck disable=SC2086
    if [ -n "$2" ]; then
        CUDA_VISIBLE_DEVICES="$2" "$PY" main.py $args "${EXTRA[@]}" --gpu 0 --quiet > "$log" 2>&1
    else
        "$PY" main.py $args "${EXTRA[@]}" --quiet > "$log" 2>&1
    fi
}

if [ ${#gpus[@]} -eq 0 ]; then
    for i in "${!jobs_args[@]}"; do
        if run_job "$i" ""; then echo "done: ${jobs_args[$i]}"
        else echo "FAILED: ${jobs_args[$i]} (see $log_dir/grid-logs/)"; failed=1; fi
    done
else
    declare -A slot_pid=()
    next=0
    while [ $next -lt ${#jobs_args[@]} ] || [ ${#slot_pid[@]} -gt 0 ]; do
        for gpu in "${gpus[@]}"; do
            pid="${slot_pid[$gpu]:-}"
            if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
                wait "$pid" || failed=1
                unset "slot_pid[$gpu]"
                pid=""
            fi
            if [ -z "$pid" ] && [ $next -lt ${#jobs_args[@]} ]; then
                echo "start on GPU $gpu: ${jobs_args[$next]}"
                run_job "$next" "$gpu" &
                slot_pid[$gpu]=$!
                next=$((next + 1))
            fi
        done
        sleep 2
    done
fi
echo "results: the run directories listed above (summary.json, levels.csv, controls.csv)"
exit $failed
