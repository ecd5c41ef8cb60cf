#!/usr/bin/env bash
# The GPU checks of issue 18 in one run: < 8 minutes on one H100/H200, nothing downloaded (random-init ResNets, the
# demo model trained in-process on the built-in synthetic data). Every step has its own time limit, so a slow step
# costs its limit, not the run; the logs land in --out.
#
#   bash benchmarks/gpu_check.sh                      # CUDA: the real sizes
#   bash benchmarks/gpu_check.sh --device cpu         # tiny sizes, a few minutes: proves the script runs
#
# Steps (each prints its own table):
#   1. attack_speed: every attack on ResNet-101 448² at batch 32 (ms per sample-iteration, ratio to the floor)
#   2. GPU-hours for the study grid from step 1 (study_estimate.py: 2 models x 4 datasets x 9 attacks x 1000)
#   3. loop_speed, ResNet-101 448²: AdverTorch vs strict vs fast (exact, folded), fp32 and bf16-mixed (speed-up, largest success
#      difference over n = 0..7), peak CUDA memory per loop
#   4. loop_speed, demo ML-GCN at the study budget and at step 0.01 (early stop fires), fp32 vs bf16
#   5. loop_speed: the fast loop under torch.compile (default) and CUDA graphs (reduce-overhead) beside eager
set -uo pipefail

DEVICE=cuda
OUT=${OUT:-gpu_check_out}  # the device runner's $OUT when set
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--out DIR]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[[ -x .venv/bin/python && -z "${PYTHON:-}" ]] && PY=.venv/bin/python
mkdir -p "$OUT"
DEMO_CKPT=${DEMO_CKPT:-$OUT/demo.pt}  # a trained demo state dict; trained (and saved there) by step 4 when absent
START=$(date +%s)
FAILED=0

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  [[ $rc -ne 0 ]] && { echo "   !! $name exited $rc (see $OUT/$name.log)"; FAILED=1; }
  # the first two tables of the log (speed, memory, equality; the arithmetic ceiling) and the summary lines; the
  # success tables stay in the log
  awk '/^\| attack/ && done < 2 {t = 1} t && /^$/ {t = 0; done++} t {print}
       /^bf16|^study grid|floor|^demo model|^Arithmetic|^[A-Za-z]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ / {print}' "$OUT/$name.log"
  echo "   ($(( $(date +%s) - START )) s so far)"
}

# time limits per step add up to 8 minutes on CUDA: attack_speed 110 + estimate 10 + ResNet loop 110 + demo 90 + 50
# (the first one generates the synthetic data and trains the demo model) + compile 2 x 55 s
if [[ "$DEVICE" == cpu ]]; then  # tiny: ResNet-18 at 64², a handful of samples and steps
  SPEED=(--models resnet18 --batch 2 --iters 2 --repeats 1 --attacks FGSM BIM PGD MIFGSM MLCW)
  BIG=(--models resnet18 --image_size 64 --samples 4 --batch 2 --nb_iter 3)
  DEMO=(--samples 8 --batch 4 --nb_iter 5 --demo_epochs 1 --demo_train 512)  # a weak model: proves the path
  COMPILE=()  # torch.compile on 2 CPU cores costs minutes of compilation: skipped here
  L_SPEED=120 L_LOOP=120 L_DEMO1=240 L_DEMO2=120 L_COMPILE=0
else
  SPEED=(--models resnet101 --batch 32 --iters 5 --repeats 2)
  BIG=(--models resnet101 --samples 32 --batch 32 --nb_iter 10 --warmup)
  DEMO=(--samples 64 --batch 32 --nb_iter 30 --warmup)
  COMPILE=(default reduce-overhead)
  L_SPEED=110 L_LOOP=110 L_DEMO1=90 L_DEMO2=50 L_COMPILE=55
fi

step attack_speed $L_SPEED $PY benchmarks/attack_speed.py --device "$DEVICE" "${SPEED[@]}"
step study_estimate 10 $PY benchmarks/study_estimate.py "$OUT/attack_speed.log"
step loop_resnet $L_LOOP $PY benchmarks/loop_speed.py --device "$DEVICE" "${BIG[@]}" --eps_iter 0.001 \
  --loops advertorch,strict,fast,fast-folded --autocast bf16
step loop_demo_study $L_DEMO1 $PY benchmarks/loop_speed.py --device "$DEVICE" --models demo "${DEMO[@]}" \
  --eps_iter 0.001 --autocast bf16 --demo_checkpoint "$DEMO_CKPT"
step loop_demo_large_step $L_DEMO2 $PY benchmarks/loop_speed.py --device "$DEVICE" --models demo "${DEMO[@]}" \
  --eps_iter 0.01 --autocast bf16 --demo_checkpoint "$DEMO_CKPT"
for mode in "${COMPILE[@]}"; do
  step "loop_compile_$mode" $L_COMPILE $PY benchmarks/loop_speed.py --device "$DEVICE" "${BIG[@]}" \
    --eps_iter 0.01 --attacks PGD,MIFGSM --loops fast,fast-folded --compile "$mode"
done
echo "== done in $(( $(date +%s) - START )) s on $DEVICE; logs in $OUT"
exit $FAILED
