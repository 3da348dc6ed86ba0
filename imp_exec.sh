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
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CONFIGS="configs/cifar10/resnet20/imp_wr.yml"
REWINDS="2000"
SEEDS="1 2 3"
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --configs) CONFIGS="$2"; shift 2 ;;
        --rewinds) REWINDS="$2"; shift 2 ;;
        --seeds) SEEDS="$2"; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

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

echo "${#jobs_args[@]} runs on ${#gpus[@]} GPU(s)$([ ${#gpus[@]} -eq 0 ] && echo ' (CPU: one after the other)')"
log_dir=""
job_dirs=()
for args in "${jobs_args[@]}"; do
    # shellcheck disable=SC2086
    dir=$("$PY" main.py $args "${EXTRA[@]}" --dry-run | sed -n 's/^run directory: \(.*\) (.*)$/\1/p')
    [ -n "$dir" ] || { echo "error: main.py rejected: $args ${EXTRA[*]}" >&2; exit 2; }
    echo "  $args  ->  $dir"
    job_dirs+=("$dir")
    [ -n "$log_dir" ] || log_dir="$(dirname "$dir")"
done
mkdir -p "$log_dir/grid-logs"
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
