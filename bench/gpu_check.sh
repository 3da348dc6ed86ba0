#!/usr/bin/env bash
# The one-call GPU check (issue 12): graph-vs-eager equivalence, training speed of every path
# against the plain reference, and main.py seconds per epoch — in under 8 minutes on one H100
# or H200, with no network and no install (it uses the machine's own python3: torch 2.11 +
# torchvision 0.26 there).  Everything printed also goes to $OUT/gpu_check.txt when $OUT is
# set (the device tool brings $OUT back).
#
#   bash bench/gpu_check.sh            # on the GPU machine
#   SMOKE=1 bash bench/gpu_check.sh    # tiny sizes on CPU: checks the script itself
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1   # a stage stopped by its time limit still shows what it printed
OUT_DIR=${OUT:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.txt") 2>&1
RUNS=$(mktemp -d)
keep_logs() {   # the runs' small files come back too (under $OUT), for a post-mortem
    [ -n "${OUT:-}" ] && (cd "$RUNS" && find . -maxdepth 2 \( -name log.txt -o -name '*.csv' \
        -o -name summary.json -o -name '*.out' \) -print0 | tar -czf "$OUT/runs.tgz" --null -T -)
    rm -rf "$RUNS"; }
trap keep_logs EXIT
started=$(date +%s)
BUDGET=${BUDGET:-540}     # seconds for the whole script: the device tool stops a call at 600
step() { echo; echo "== $1 ($(( $(date +%s) - started )) s elapsed)"; }
# limit WANT: WANT seconds, or what is left of BUDGET if less (0: skip the stage)
limit() { local left=$(( BUDGET - ($(date +%s) - started) )); local want=$1
          [ "$left" -lt "$want" ] && want=$left; [ "$want" -lt 15 ] && want=0; echo "$want"; }
timed() { local t; t=$(limit "$1"); shift
          if [ "$t" = 0 ]; then
              echo "skipped (the ${BUDGET} s budget is spent): ${*:2:2} ..."; return 124; fi
          timeout "$t" "$@"; }

if [ "${SMOKE:-0}" = 1 ]; then        # the script's own test: CPU, tiny sizes
    DEV=cpu; IMAGES=600; VAL=100; STEPS=4; WARM=1; EPOCHS=2; M=2; PATHS=eager; REPL=1,2
    CPATHS=eager
    GRAPH_STEPS=3; WORKERS=1; BENCH_IMAGES=1000; REWIND=2
else
    DEV=cuda; IMAGES=50000; VAL=5000; STEPS=300; WARM=30; EPOCHS=4; M=8
    PATHS=eager,graph; CPATHS=graph,compile+graph; REPL=1,8; GRAPH_STEPS=40; WORKERS=4
    BENCH_IMAGES=20000
    REWIND=100
fi

step "environment"
date -u
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
$PY -c "import sys, torch, torchvision; print('python', sys.version.split()[0], '| torch',
torch.__version__, '| cuda', torch.version.cuda, '| torchvision', torchvision.__version__,
'| device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
git log -1 --format='commit %h %s' 2>/dev/null || true

step "1. graph vs eager: same losses and weights (bench/graph_check.py)"
timed 120 $PY bench/graph_check.py --device $DEV --steps $GRAPH_STEPS
echo "graph_check exit $?"

speed() {   # bench/train_speed.py with the common sizes, then its arguments
    timed "$1" $PY bench/train_speed.py --device $DEV --steps $STEPS --warmup $WARM \
        --workers $WORKERS --images $BENCH_IMAGES "${@:2}"
    echo "train_speed exit $?"; }
step "2. training speed, ResNet-20 batch 128 (bench/train_speed.py; compile comes in stage 4)"
speed 150 --paths $PATHS --replicates $REPL --packings streams,vmap

common=(--arch resnet20 --dataset synthetic --synthetic-size $IMAGES --val-size $VAL
        --batch-size 128 --optimizer sgd --lr 0.1 --momentum 0.9 --wd 5e-4
        --lr-policy cosine_lr --device $DEV --quiet --log-dir "$RUNS")
run() {   # label, then main.py arguments (the run's name: $NAME, else the label)
    local label=$1; shift
    local t0=$(date +%s%N)
    timed 120 $PY main.py "${common[@]}" --name "${NAME:-$label}" "$@" > "$RUNS/$label.out" 2>&1
    local rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf '%-26s exit %s, %d.%01d s wall\n' "$label" $rc $((ms / 1000)) $((ms % 1000 / 100))
    [ $rc = 0 ] || tail -5 "$RUNS/$label.out"
}
step "3. main.py end to end (45k train + 5k val + 10k test per epoch)"
# most important first: a stage that does not fit the budget is skipped, the table still prints
run train-graph --algo training --epochs $EPOCHS
run train-eager --algo training --epochs $EPOCHS --cuda-graphs false
imp=(--algo imp_wr --iter-period 2 --target-sparsity 80 --imp-rewind-iter $REWIND --seed 1)
run imp_wr-2levels-x$M "${imp[@]}" --replicates $M
# copy 1 (seed 2) run alone, in its own folder (where the packed copy's would be found done):
# it should equal the packed copy within bf16 rounding (bit for bit on the CPU)
NAME=imp_wr-2levels-x$M run imp_wr-copy2-alone "${imp[@]}" --seed 2 --log-dir "$RUNS/single"
timed 60 $PY bench/compare_runs.py "$(ls -d "$RUNS"/imp_wr-2levels-x$M-*-s2-* | head -1)" \
    "$(ls -d "$RUNS"/single/imp_wr-2levels-x$M-*-s2-* | head -1)"
run hc_iter --algo hc_iter --epochs 2 --iter-period 1 --target-sparsity 50 \
    --skip-fine-tune true --skip-sanity-checks true --score-init unif --lr 0.1

# compile last: its set-up time is the unknown
step "4. compile: training speed with compiled kernels in the graph, and main.py with compile"
speed 150 --paths $CPATHS --replicates ''
run train-compile --algo training --epochs $EPOCHS --compile true

step "5. seconds per epoch (first epoch: capture/compile; median: the later ones; graphs and
eager start from the same weights and batches: their losses agree to bf16 rounding)"
dirs() { ls -d "$RUNS"/$1-* 2>/dev/null | paste -sd, -; }
$PY bench/epoch_times.py "training, graphs=$(dirs train-graph)" \
    "training, eager=$(dirs train-eager)" \
    "training, graphs + compile=$(dirs train-compile)" \
    "imp_wr x$M packed (sum of copies)=$(dirs imp_wr-2levels-x$M)" \
    "hc_iter=$(dirs hc_iter)"
grep -h "warning" "$RUNS"/*/log.txt 2>/dev/null | sort | uniq -c | head -20

step "6. inference of pruned networks on the GPU (analysis.speed; issue 16's unmeasured rows)"
# ResNet-20 tickets (1 epoch per level on 2,000 synthetic images: the speed, not the accuracy,
# is measured): 2:4 (the GEMMs of its 32- and 64-channel convolutions take PyTorch's
# semi-structured kernel) and half of its inner channels (exported: a physically smaller net)
spd() { local label=$1; shift
        timed 60 $PY main.py --quiet --log-dir "$RUNS" --device $DEV --name "$label" \
            --algo imp_wr --iter-period 1 --imp-rewind-iter 0 "$@" \
            > "$RUNS/$label.out" 2>&1 || { echo "$label: main.py failed"; tail -3 "$RUNS/$label.out"
                                           return; }
        timed 60 $PY -m analysis.speed "$(dirs "$label")" --device $DEV --batch-size 256; }
small=(--arch resnet20 --dataset synthetic --synthetic-size 2000 --val-size 200)
spd nm24 "${small[@]}" --prune-granularity n:m --imp-rounds 2
spd channel50 "${small[@]}" --prune-granularity channel --prune-rate 0.5 --target-sparsity 50

step "done"
echo "output: $OUT_DIR/gpu_check.txt"
