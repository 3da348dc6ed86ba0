#!/usr/bin/env bash
# Run a grid of IMP experiments: every config × rewind point × seed.
#
#   ./imp_exec.sh                                   # the grid below
#   ./imp_exec.sh --configs "configs/cifar10/resnet20/imp_wr.yml configs/cifar10/resnet20/imp_lrr.yml" \
#                 --rewinds "0 250 2000" --seeds "1 2 3" -- --data /data/cifar
#   DRY_RUN=1 ./imp_exec.sh ...                     # print the plan and the commands only
#
# Options: --configs "A.yml B.yml" (default configs/cifar10/resnet20/imp_wr.yml),
# --rewinds "ITERS ..." (imp_rewind_iter values, e.g. "0 250 2000" or "0 1ep"; default 2000),
# --seeds "S ..." (default "1 2 3"); arguments after `--` go to every main.py call.
#
# First it prints every run with its status and run directory ([new], [resume], [extend]:
# a finished run asked for more, [finished]); finished runs are skipped (their logs are left
# as they are), so the script can simply be run again after an interruption.  Runs go one
# per visible GPU at a time (CUDA_VISIBLE_DEVICES or nvidia-smi), one after the other on a
# CPU-only machine.  Each run's output is appended to <runs folder>/grid-logs/<run dir>.log
# (the runs folder is --log-dir, default runs/).  Environment: DRY_RUN=1 (plan only,
# nothing written), PYTHON (interpreter; default .venv/bin/python, else python3).
#
# On a Slurm cluster, --slurm submits the unfinished runs as ONE job array (task i = run i)
# instead of running them here; resources go to sbatch:
#   ./imp_exec.sh --configs "..." --seeds "1 2 3" --slurm --partition gpu --time 08:00:00 \
#                 --gpus-per-task 1 --cpus-per-task 8 --mem 32G [--sbatch-args "--qos=high"] -- ...
# With --gpus-per-task N > 1 each task runs torchrun --nproc_per_node=N (README: Scaling out).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/grid_lib.sh

CONFIGS="configs/cifar10/resnet20/imp_wr.yml"
REWINDS="2000"
SEEDS="1 2 3"
EXTRA=()
SLURM=0
SBATCH=()
GPUS_PER_TASK=0
DRY=${DRY_RUN:-0}
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
        -h|--help) grid_help "$0"; exit 0 ;;
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

JOBS=()
for config in $CONFIGS; do
    [ -f "$config" ] || { echo "error: config file not found: $config" >&2; exit 2; }
    for rewind in $REWINDS; do
        for seed in $SEEDS; do
            JOBS+=("$(grid_job --config "$config" --imp-rewind-iter "$rewind" --seed "$seed" ${EXTRA[@]+"${EXTRA[@]}"})")
        done
    done
done

if [ $SLURM = 1 ]; then
    echo "${#JOBS[@]} runs (Slurm job array)"
else
    echo "${#JOBS[@]} runs on ${#gpus[@]} GPU(s)$([ ${#gpus[@]} -eq 0 ] && echo ' (CPU: one after the other)')"
fi
grid_plan "$PY" || exit 2
grid_show_plan || exit 2
grid_unfinished

if [ $SLURM = 1 ]; then
    if ! grid_slurm_lines "$PY" "$GPUS_PER_TASK"; then
        echo "nothing to submit: all ${#JOBS[@]} runs are finished"
        exit 0
    fi
    if [ "$DRY" = 1 ]; then
        echo "would submit ${#LINES[@]} tasks: sbatch --array=0-$((${#LINES[@]} - 1)) ${SBATCH[*]}"
        printf '%s\n' "${LINES[@]}"
        exit 0
    fi
    log_dir="$(dirname "$(grid_log "${PLAN_DIR[${TODO[0]}]}")")"
    mkdir -p "$log_dir"
    task_file="$log_dir/imp_grid-$(date +%Y%m%d-%H%M%S)-$$.tasks"
    printf '%s\n' "${LINES[@]}" > "$task_file"
    exec bash scripts/slurm_submit.sh "$task_file" "$log_dir" imp_grid ${SBATCH[@]+"${SBATCH[@]}"}
fi

if [ "$DRY" = 1 ]; then
    echo "DRY_RUN=1: would run ${#TODO[@]} of ${#JOBS[@]} runs (the others are finished):"
    for i in "${TODO[@]}"; do
        echo "  $PY main.py $(grid_words "${JOBS[$i]}") --quiet  >> $(grid_log "${PLAN_DIR[$i]}")"
    done
    exit 0
fi

failed=0
run_job() {  # $1: job index, $2: GPU index or empty
    local log words
    log=$(grid_log "${PLAN_DIR[$1]}")
    eval "words=(${JOBS[$1]})"
    if [ -n "$2" ]; then
        CUDA_VISIBLE_DEVICES="$2" grid_run_logged "$log" "$PY" main.py "${words[@]}" --gpu 0 --quiet
    else
        grid_run_logged "$log" "$PY" main.py "${words[@]}" --quiet
    fi
}

for i in "${!JOBS[@]}"; do
    [ "${PLAN_STATUS[$i]}" = finished ] && echo "finished, skipped: $(grid_words "${JOBS[$i]}")"
done
if [ ${#gpus[@]} -eq 0 ]; then
    for i in ${TODO[@]+"${TODO[@]}"}; do
        if run_job "$i" ""; then echo "done: $(grid_words "${JOBS[$i]}")"
        else echo "FAILED: $(grid_words "${JOBS[$i]}") (see $(grid_log "${PLAN_DIR[$i]}"))"; failed=1; fi
    done
else
    declare -A slot_pid=()
    next=0
    while [ $next -lt ${#TODO[@]} ] || [ ${#slot_pid[@]} -gt 0 ]; do
        for gpu in "${gpus[@]}"; do
            pid="${slot_pid[$gpu]:-}"
            if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
                wait "$pid" || failed=1
                unset "slot_pid[$gpu]"
                pid=""
            fi
            if [ -z "$pid" ] && [ $next -lt ${#TODO[@]} ]; then
                echo "start on GPU $gpu: $(grid_words "${JOBS[${TODO[$next]}]}")"
                run_job "${TODO[$next]}" "$gpu" &
                slot_pid[$gpu]=$!
                next=$((next + 1))
            fi
        done
        sleep 2
    done
fi
echo "results: the run directories above (summary.json, levels.csv, controls.csv); tables and"
echo "figures over them: python -m analysis.report <runs folder>"
exit $failed
