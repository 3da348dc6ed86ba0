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
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

densities=(${DENSITIES:-50 20 5 3.72 1.44 0.59})
trials=${TRIALS:-3}
extra=("$@")

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
