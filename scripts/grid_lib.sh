# Shared by imp_exec.sh and cifar_exec.sh (sourced, not run).  A job is one main.py call,
# kept as one line of shell-quoted words (printf %q), so paths with spaces survive.
#
# Conventions of both grids:
#   - the plan comes first: every job, its run directory and status (new, resume, extend,
#     finished) from scripts/grid_plan.py, in one Python process, writing nothing;
#   - DRY_RUN=1 prints the plan and the commands and stops (nothing written);
#   - finished runs are skipped without starting main.py, so their logs stay as they are;
#   - each run's output is appended to <folder of its run directory>/grid-logs/<run>.log
#     (one log per run directory, named after it).

# grid_help FILE: the comment block at the top of FILE, without the '#'.
grid_help() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# grid_job WORD...: one job line (the words shell-quoted).
grid_job() {
    local line
    line=$(printf '%q ' "$@")
    printf '%s' "${line% }"
}

# grid_plan PYTHON: plans the jobs of JOBS; sets PLAN_STATUS, PLAN_DIR, PLAN_MSG (one entry
# per job).
grid_plan() {
    local py=$1 out status dir msg
    out=$(printf '%s\n' "${JOBS[@]}" | "$py" scripts/grid_plan.py) || {
        echo "error: could not plan the grid with $py (scripts/grid_plan.py failed)" >&2
        return 2
    }
    PLAN_STATUS=() PLAN_DIR=() PLAN_MSG=()
    while IFS=$'\t' read -r status dir msg; do
        PLAN_STATUS+=("$status") PLAN_DIR+=("$dir") PLAN_MSG+=("$msg")
    done <<< "$out"
    if [ ${#PLAN_STATUS[@]} -ne ${#JOBS[@]} ]; then
        echo "error: the grid plan has ${#PLAN_STATUS[@]} lines for ${#JOBS[@]} jobs" >&2
        return 2
    fi
}

# grid_log RUN_DIR: the log file of a run directory (the first copy's, for replicates).
grid_log() {
    local dir=${1%% | *} name
    name=$(basename "$dir" | tr -c 'A-Za-z0-9._=+-' '_')
    printf '%s/grid-logs/%s.log' "$(dirname "$dir")" "${name%_}"
}

# grid_words JOB_LINE: the job's words, space-separated (for messages).
grid_words() {
    eval "local words=($1)"
    printf '%s' "${words[*]}"
}

# grid_show_plan: print the jobs of JOBS with their PLAN_* entries; status 2 if one is
# invalid (each such job is reported on stderr).
grid_show_plan() {
    local i bad=0
    for i in "${!JOBS[@]}"; do
        if [ "${PLAN_STATUS[$i]}" = error ]; then
            echo "error: ${PLAN_MSG[$i]} (job: $(grid_words "${JOBS[$i]}"))" >&2
            bad=1
            continue
        fi
        printf '  %-10s %s  ->  %s\n' "[${PLAN_STATUS[$i]}]" "$(grid_words "${JOBS[$i]}")" \
            "${PLAN_DIR[$i]}"
    done
    return $((bad * 2))
}

# grid_run_logged LOG WORD...: run a command, appending a header and its output to LOG.
grid_run_logged() {
    local log=$1
    shift
    mkdir -p "$(dirname "$log")"
    {
        echo "=== $(date '+%Y-%m-%d %H:%M:%S') $*"
        "$@"
    } >> "$log" 2>&1
}

# grid_unfinished: sets TODO to the indices of the jobs of JOBS whose plan is not finished.
grid_unfinished() {
    local i
    TODO=()
    for i in "${!JOBS[@]}"; do
        [ "${PLAN_STATUS[$i]}" = finished ] || TODO+=("$i")
    done
}

# grid_slurm_lines PYTHON GPUS_PER_TASK: sets LINES to the Slurm array's commands, one per
# unfinished job (torchrun with several GPUs per task); status 1 when none is left.
grid_slurm_lines() {
    local py=$1 gpus=$2 i launcher
    launcher=("$py" main.py)
    if [ "$gpus" -gt 1 ]; then
        launcher=("$py" -m torch.distributed.run --standalone --nproc_per_node="$gpus" main.py)
    fi
    LINES=()
    for i in "${TODO[@]}"; do
        LINES+=("$(grid_job "${launcher[@]}") ${JOBS[$i]} --quiet")
    done
    [ ${#LINES[@]} -gt 0 ]
}
