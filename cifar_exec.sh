#!/usr/bin/env bash
# The Gem-Miner grid on CIFAR-10 / ResNet-20: every density × trial, each with its inverted
# sanity run (invert_sanity_check: BottomK removes the highest scores instead).
#
#   ./cifar_exec.sh [extra main.py options ...]        e.g. ./cifar_exec.sh --data /data
#
# Environment:
#   DENSITIES  densities in % (default "50 20 5 3.72 1.44 0.59"; configs/cifar10/resnet20/
#              gem_miner_<density>.yml must exist)
#   TRIALS     trials per density (default 3; trial t runs with --trial-num t)
#   GPUS       GPU indices to use (default: every GPU nvidia-smi lists, else none = CPU)
#   DRY_RUN=1  print the commands instead of running them
#   PYTHON     interpreter (default: the project's .venv, created on first use)
#
# With GPUs the runs are spread round-robin over one worker per GPU (each worker runs its
# share one after another with --gpu N); without GPUs they run one after another on the CPU.
# Finished runs are skipped (main.py reports them as already finished), and an interrupted
# run resumes, so re-running this script completes a partial grid.  Logs: runs/grid_logs/.
#
# On a Slurm cluster, --slurm submits the grid as ONE job array (task i = run i) instead of
# running it here; resources go to sbatch (these flags are not passed to main.py):
#   ./cifar_exec.sh --slurm --partition gpu --time 12:00:00 --gpus-per-task 1 \
#                   --cpus-per-task 8 --mem 32G [--sbatch-args "--qos=high"] --data /data
# A task whose run is finished exits at once (main.py skips it).  With --gpus-per-task N > 1
# each task runs torchrun --nproc_per_node=N.  DRY_RUN=1 prints the tasks, submits nothing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

densities=(${DENSITIES:-50 20 5 3.72 1.44 0.59})
trials=${TRIALS:-3}
extra=()
slurm=0
sbatch_args=()
gpus_per_task=0
while [ $# -gt 0 ]; do
    case "$1" in
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
    if [ "${DRY_RUN:-0}" != 1 ]; then
        source scripts/ensure_env.sh
    fi
    PYTHON=.venv/bin/python
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

jobs=()
for density in "${densities[@]}"; do
    config="configs/cifar10/resnet20/gem_miner_${density}.yml"
    if [ ! -f "$config" ]; then
        echo "error: no config for density $density: $config" >&2
        exit 2
    fi
    for trial in $(seq 1 "$trials"); do
        name="gem_miner_${density}_trial${trial}"
        jobs+=("--config $config --trial-num $trial --name $name")
        jobs+=("--config $config --trial-num $trial --invert-sanity-check true --name ${name}_inverted")
    done
done

if [ $slurm = 1 ]; then
    launcher=("$PYTHON" main.py)
    if [ "$gpus_per_task" -gt 1 ]; then
        launcher=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$gpus_per_task" main.py)
    fi
    lines=()
    for job in "${jobs[@]}"; do
        # shellcheck disable=SC2086
        line=$(printf '%q ' "${launcher[@]}" $job "${extra[@]}" --quiet)
        lines+=("${line% }")
    done
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "would submit ${#jobs[@]} tasks: sbatch --array=0-$((${#jobs[@]} - 1)) ${sbatch_args[*]}"
        printf '%s\n' "${lines[@]}"
        exit 0
    fi
    mkdir -p runs/grid_logs
    task_file="runs/grid_logs/cifar_grid-$(date +%Y%m%d-%H%M%S)-$$.tasks"
    printf '%s\n' "${lines[@]}" > "$task_file"
    exec bash scripts/slurm_submit.sh "$task_file" runs/grid_logs cifar_grid "${sbatch_args[@]}"
fi

run_job() {  # run_job WORKER_LABEL GPU_ARGS JOB (JOB and GPU_ARGS: words without spaces)
    local label=$1 gpu_args=$2 job=$3
    local cmd=("$PYTHON" main.py $job $gpu_args "${extra[@]}" --quiet)
    if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "[$label] ${cmd[*]}"
        return 0
    fi
    mkdir -p runs/grid_logs
    local log="runs/grid_logs/$(echo "$job" | tr -c 'A-Za-z0-9._-' '_').log"
    echo "[$label] ${cmd[*]}  (log: $log)"
    "${cmd[@]}" >"$log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "[$label] FAILED (exit $rc): ${cmd[*]}  (see $log)" >&2
        return 1
    fi
}

failed=0
if [ ${#gpus[@]} -eq 0 ]; then
    for job in "${jobs[@]}"; do
        run_job cpu "--device cpu" "$job" || failed=1
    done
else
    pids=()
    for slot in "${!gpus[@]}"; do
        (
            status=0
            for index in "${!jobs[@]}"; do
                if [ $((index % ${#gpus[@]})) -eq "$slot" ]; then
                    run_job "gpu ${gpus[$slot]}" "--device cuda --gpu ${gpus[$slot]}" \
                        "${jobs[$index]}" || status=1
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
echo "grid: ${#jobs[@]} runs (${#densities[@]} densities × $trials trials × {normal, inverted})"
exit $failed
