#!/usr/bin/env bash
# The Gem-Miner grid on CIFAR-10 / ResNet-20: every density × trial, each with its inverted
# sanity run (invert_sanity_check: BottomK removes the highest scores instead).
#
#   ./cifar_exec.sh [extra main.py options ...]        e.g. ./cifar_exec.sh --data /data
#   DRY_RUN=1 ./cifar_exec.sh ...                      # print the plan and the commands only
#   ./cifar_exec.sh --help
#
# Environment:
#   DENSITIES  densities in % (default "50 20 5 3.72 1.44 0.59"; configs/cifar10/resnet20/
#              gem_miner_<density>.yml must exist)
#   TRIALS     trials per density (default 3; trial t runs with --trial-num t)
#   GPUS       GPU indices to use (default: every GPU nvidia-smi lists, else none = CPU)
#   DRY_RUN=1  print the plan and the commands, run and write nothing
#   PYTHON     interpreter (default: the project's .venv, created on first use)
#
# First it prints every run with its status and run directory ([new], [resume],
# [finished]); finished runs are skipped (their logs are left as they are) and an
# interrupted run resumes, so re-running this script completes a partial grid.  With GPUs
# the runs are spread round-robin over one worker per GPU (each worker runs its share one
# after another with --gpu N); without GPUs they run one after another on the CPU.  Each
# run's output is appended to <runs folder>/grid-logs/<run dir>.log (the runs folder is
# --log-dir, default runs/).
#
# On a Slurm cluster, --slurm submits the unfinished runs as ONE job array (task i = run i)
# instead of running them here; resources go to sbatch (these flags are not passed to
# main.py):
#   ./cifar_exec.sh --slurm --partition gpu --time 12:00:00 --gpus-per-task 1 \
#                   --cpus-per-task 8 --mem 32G [--sbatch-args "--qos=high"] --data /data
# With --gpus-per-task N > 1 each task runs torchrun --nproc_per_node=N.  DRY_RUN=1 prints
# the tasks, submits nothing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/grid_lib.sh

densities=(${DENSITIES:-50 20 5 3.72 1.44 0.59})
trials=${TRIALS:-3}
dry=${DRY_RUN:-0}
extra=()
slurm=0
sbatch_args=()
gpus_per_task=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) grid_help "$0"; exit 0 ;;
        --slurm) slurm=1; shift ;;
        --partition|--time|--cpus-per-task|--mem|--gpus-per-task|--sbatch-args)
            if [ -z "${2:-}" ]; then echo "error: $1 needs a value" >&2; exit 2; fi
            case "$1" in
                --gpus-per-task)
                    if ! [[ "$2" =~ ^[0-9]+$ ]]; then
                        echo "error: --gpus-per-task must be a whole number, got $2" >&2; exit 2
                    fi
                    gpus_per_task=$2; [ "$2" -gt 0 ] && sbatch_args+=("$1=$2") ;;
                --sbatch-args) read -r -a more <<< "$2"; sbatch_args+=("${more[@]}") ;;
                *) sbatch_args+=("$1=$2") ;;
            esac
            shift 2 ;;
        *) extra+=("$1"); shift ;;
    esac
done
if [ $slurm = 0 ] && { [ ${#sbatch_args[@]} -gt 0 ] || [ "$gpus_per_task" != 0 ]; }; then
    echo "error: --partition/--time/--gpus-per-task/--cpus-per-task/--mem/--sbatch-args need --slurm" >&2
    exit 2
fi

if [ -z "${PYTHON:-}" ]; then
    if [ "$dry" != 1 ]; then
        source scripts/ensure_env.sh
    fi
    PYTHON=.venv/bin/python
    [ -x "$PYTHON" ] || PYTHON=python3
fi

count_visible_gpus() {  # CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        echo "${CUDA_VISIBLE_DEVICES}" | tr ',' '\n' | grep -c '[^[:space:]]'
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU'
    else
        echo 0
    fi
}

if [ -n "${GPUS+set}" ]; then
    gpus=(${GPUS})
else
    gpus=($(seq 0 $(($(count_visible_gpus) - 1))))
fi

RUNS=()   # each run's own options; JOBS: with the extra main.py options (what is planned)
for density in "${densities[@]}"; do
    config="configs/cifar10/resnet20/gem_miner_${density}.yml"
    if [ ! -f "$config" ]; then
        echo "error: no config for density $density: $config" >&2
        exit 2
    fi
    for trial in $(seq 1 "$trials"); do
        name="gem_miner_${density}_trial${trial}"
        RUNS+=("$(grid_job --config "$config" --trial-num "$trial" --name "$name")")
        RUNS+=("$(grid_job --config "$config" --trial-num "$trial" --invert-sanity-check true \
                           --name "${name}_inverted")")
    done
done
EXTRA_LINE=$(grid_job ${extra[@]+"${extra[@]}"})
JOBS=()
for run in "${RUNS[@]}"; do
    JOBS+=("$run${EXTRA_LINE:+ $EXTRA_LINE}")
done

echo "grid: ${#JOBS[@]} runs (${#densities[@]} densities × $trials trials × {normal, inverted})"
grid_plan "$PYTHON" || exit 2
grid_show_plan || exit 2
grid_unfinished

if [ $slurm = 1 ]; then
    if ! grid_slurm_lines "$PYTHON" "$gpus_per_task"; then
        echo "nothing to submit: all ${#JOBS[@]} runs are finished"
        exit 0
    fi
    if [ "$dry" = 1 ]; then
        echo "would submit ${#LINES[@]} tasks: sbatch --array=0-$((${#LINES[@]} - 1)) ${sbatch_args[*]}"
        printf '%s\n' "${LINES[@]}"
        exit 0
    fi
    log_dir="$(dirname "$(grid_log "${PLAN_DIR[${TODO[0]}]}")")"
    mkdir -p "$log_dir"
    task_file="$log_dir/cifar_grid-$(date +%Y%m%d-%H%M%S)-$$.tasks"
    printf '%s\n' "${LINES[@]}" > "$task_file"
    exec bash scripts/slurm_submit.sh "$task_file" "$log_dir" cifar_grid ${sbatch_args[@]+"${sbatch_args[@]}"}
fi

run_job() {  # run_job WORKER_LABEL JOB_INDEX GPU_ARG...
    local label=$1 index=$2 log words rc
    shift 2
    log=$(grid_log "${PLAN_DIR[$index]}")
    eval "words=(${RUNS[$index]})"
    local cmd=("$PYTHON" main.py "${words[@]}" "$@" ${extra[@]+"${extra[@]}"} --quiet)
    if [ "$dry" = 1 ]; then
        echo "[$label] ${cmd[*]}  >> $log"
        return 0
    fi
    echo "[$label] ${cmd[*]}  (log: $log)"
    grid_run_logged "$log" "${cmd[@]}"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "[$label] FAILED (exit $rc): ${cmd[*]}  (see $log)" >&2
        return 1
    fi
}

[ "$dry" = 1 ] && echo "DRY_RUN=1: would run ${#TODO[@]} of ${#JOBS[@]} runs (the others are finished):"
failed=0
if [ ${#gpus[@]} -eq 0 ]; then
    for index in ${TODO[@]+"${TODO[@]}"}; do
        run_job cpu "$index" --device cpu || failed=1
    done
else
    pids=()
    for slot in "${!gpus[@]}"; do
        (
            status=0
            for k in "${!TODO[@]}"; do
                if [ $((k % ${#gpus[@]})) -eq "$slot" ]; then
                    run_job "gpu ${gpus[$slot]}" "${TODO[$k]}" --device cuda --gpu "${gpus[$slot]}" \
                        || status=1
                fi
            done
            exit $status
        ) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
fi
[ "$dry" = 1 ] && exit 0
echo "grid done: ${#TODO[@]} run(s) this time, $((${#JOBS[@]} - ${#TODO[@]})) already finished;"
echo "tables and figures over them: python -m analysis.report <runs folder>"
exit $failed
