#!/usr/bin/env bash
# The GPU checks of issues 18 and 25 in one run that fits in 8 minutes on one H100/H200; nothing is downloaded
# (random-init ResNets, the demo model trained here on the built-in synthetic data). Every step has its own time
# limit, capped by what is left of the whole budget, and a failed or timed-out step does not stop the next one; a
# summary of every step's outcome ends the run.
#
#   bash benchmarks/gpu_check.sh --out "$OUT"                  # CUDA: the real sizes, 490 s budget
#   bash benchmarks/gpu_check.sh --device cpu --out /tmp/gc    # tiny sizes: proves the script runs (~15 min on 2 cores)
#   bash benchmarks/gpu_check.sh --only "cli_fit cli_attack cli_report"   # some steps only (setup always runs)
#
# Packages the GPU machine lacks (mlflow, jsonargparse, pycocotools, advertorch and their closure) come from the
# wheel folder .gpu-wheels/ (benchmarks/README.md says how it is made) and are installed into a temporary --target
# folder when one of mlflow, jsonargparse, pycocotools, advertorch is not installed. What comes back under --out: summary.md
# (every step's tables), logs.tar.gz (every step's whole log) and the demo model's state dict is not kept.
#
# Steps, most important first (a step whose limit no longer fits is skipped and says so):
#   setup          the wheels, if needed; python, torch, GPU
#   pytest_cuda    pytest -m cuda: strict = AdverTorch on CUDA, bf16 table within 1 pp on ResNet-101 (random init),
#                  ML-DP / MLA-LP reference variants equal to their CPU result
#   cli_fit/attack/report  the end-to-end CLI: fit the demo at bf16-mixed, attack it with the nine attacks, report
#   attack_speed   every attack on ResNet-101 448² batch 32 (ms per sample-iteration of iterations that ran)
#   jacobian       vmap / loop / is_grads_batched per-label Jacobians, ResNet-101 and EfficientNet-Lite0 448²
#   study_estimate iterations per sample on the trained demo victim, paper and fast mode, x attack_speed's costs
#   loop_demo      fast loop vs strict vs AdverTorch on the demo ML-GCN (64², the small-model case), fp32 and bf16
#   loop_resnet    the same on ResNet-101 448², with the roofline (TF32 / bf16 peaks)
#   compile_*      torch.compile default and reduce-overhead (CUDA graphs) of the fast loop's network
set -uo pipefail

DEVICE=cuda
OUT_DIR=${OUT:-gpu_check_out}  # the device runner's $OUT when set
BUDGET=
ONLY=  # space-separated step names: run only those (setup always runs)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--out DIR] [--budget SECONDS] [--only 'STEP ...']" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=$REPO/.venv/bin/python
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d -t gpu_check.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
SUMMARY=$OUT_DIR/summary.md
: > "$SUMMARY"
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlruns/mlflow.db"
mkdir -p "$WORK/mlruns"
DEMO_CKPT=${DEMO_CKPT:-$WORK/demo.pt}  # the demo state dict: trained by study_estimate when absent
START=$(date +%s)
RESULTS=()

say() { echo "$*" | tee -a "$SUMMARY"; }

finish() {  # the summary and the logs, also when the run itself is stopped from outside
  say ""
  say "== summary ($(( $(date +%s) - START )) s on $DEVICE, budget ${BUDGET}s)"
  for r in "${RESULTS[@]}"; do say "   $r"; done
  tar czf "$OUT_DIR/logs.tar.gz" -C "$WORK" logs $( [[ -d $WORK/report ]] && echo report ) 2>/dev/null
  rm -rf "$WORK"
}
trap 'RESULTS+=("stopped from outside"); finish; exit 1' INT TERM
trap finish EXIT

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit capped by the budget left; log; keep going
  local name=$1 limit=$2; shift 2
  if [[ -n $ONLY && $name != setup && " $ONLY " != *" $name "* ]]; then return; fi
  local left=$(( BUDGET - ($(date +%s) - START) ))
  (( limit > left )) && limit=$left
  if (( limit < 10 )); then
    say "== $name: SKIPPED (${left}s of the ${BUDGET}s budget left)"
    RESULTS+=("$name: skipped, budget spent")
    return
  fi
  say "== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$? secs=$(( $(date +%s) - t0 ))
  # tables (markdown rows and the lines around them) and the summary lines go to the summary; the log keeps all
  grep -E '^\||^[A-Za-z].*(floor|ms/sample|GFLOP|device-hours|bf16 vs|default on|error| ok:|installed)|^=* ?[0-9]+ (passed|failed|skipped)' \
    "$LOGS/$name.log" | grep -v '^|---' | head -80 | tee -a "$SUMMARY"
  if (( rc == 124 || rc == 137 )); then
    local why="timed out after ${limit}s"
    [[ $name == compile_* ]] && why+=": torch.compile was still compiling or running (Inductor compiles every graph break and batch size; see the log's last lines)"
    say "   !! $name $why"
    RESULTS+=("$name: TIMEOUT ${secs}s")
  elif (( rc != 0 )); then
    say "   !! $name exited $rc after ${secs}s; its last lines:"
    tail -5 "$LOGS/$name.log" | sed 's/^/      /' | tee -a "$SUMMARY"
    RESULTS+=("$name: FAILED rc=$rc ${secs}s")
  else
    RESULTS+=("$name: ok ${secs}s")
  fi
  say "   ($(( $(date +%s) - START )) s so far)"
}

setup() {  # the missing packages from .gpu-wheels, then what runs where
  if ! "$PY" -c "import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ('mlflow', 'jsonargparse', 'pycocotools', 'advertorch')))"; then
    [[ -d $REPO/.gpu-wheels ]] || { echo "no .gpu-wheels/ folder and mlflow etc. missing"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
      "$REPO"/.gpu-wheels/*.whl || return 1
    echo "installed $(ls "$REPO"/.gpu-wheels/*.whl | wc -l) wheels into $WORK/site"
  fi
  "$PY" - <<'EOF'
import mlflow, jsonargparse, torch
print(f"python ok: torch {torch.__version__}, mlflow {mlflow.__version__}, jsonargparse {jsonargparse.__version__}")
if torch.cuda.is_available():
    print(f"device ok: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
EOF
}

if [[ $DEVICE == cpu ]]; then  # tiny sizes: every step runs, nothing is measured that matters
  BUDGET=${BUDGET:-1500}
  PYTEST=(-m cuda)  # all skipped without CUDA: proves collection and the marker
  FIT=(--trainer.max_epochs 1 --trainer.accelerator cpu --trainer.precision bf16-mixed
       --trainer.limit_train_batches 8 --trainer.limit_val_batches 2)
  ATTACK=(--num_samples 4 --precision bf16-mixed)
  SPEED=(--models resnet18 --batch 2 --iters 2 --repeats 1 --attacks FGSM PGD MLCW MLDP MLALP)
  JAC=(--models resnet18 --batch 2 --size 112 --repeats 1)
  EST=(--samples 4 --demo_epochs 1 --attacks FGSM PGD MLCW MLDP)
  DEMO=(--samples 8 --batch 4 --nb_iter 5 --demo_epochs 1 --demo_train 512)
  BIG=(--models resnet18 --image_size 64 --samples 4 --batch 2 --nb_iter 3)
  COMPILE=()  # minutes of compilation on 2 CPU cores: skipped here
  L=(setup=120 pytest=120 fit=300 attack=420 report=150 speed=240 jac=120 est=300 demo=240 resnet=180 compile=0)
else
  BUDGET=${BUDGET:-490}
  PYTEST=(-m cuda -q)
  FIT=(--trainer.max_epochs 6 --trainer.precision bf16-mixed)  # enough correctly predicted samples to attack
  ATTACK=(--num_samples 20 --precision bf16-mixed)
  SPEED=(--models resnet101 --batch 32 --iters 3 --repeats 1)
  JAC=(--models resnet101 effnet_lite0 --batch 32 --size 448 --repeats 2)
  EST=(--samples 20)
  DEMO=(--samples 64 --batch 32 --nb_iter 30 --warmup)
  BIG=(--models resnet101 --samples 32 --batch 32 --nb_iter 10 --warmup)
  COMPILE=(default reduce-overhead)
  L=(setup=30 pytest=50 fit=80 attack=100 report=30 speed=60 jac=35 est=60 demo=35 resnet=60 compile=60)
fi
for kv in "${L[@]}"; do declare "L_${kv%%=*}=${kv#*=}"; done

export PY REPO WORK
export -f setup  # `timeout` runs programs, not shell functions: the step runs it in a child bash
step setup "$L_setup" bash -c setup
[[ -d $WORK/site ]] && export PYTHONPATH=$WORK/site:$REPO
step pytest_cuda "$L_pytest" "$PY" -m pytest "${PYTEST[@]}" tests/cuda -p no:cacheprovider
MLA=("$PY" -m mlattack)
step cli_fit "$L_fit" "${MLA[@]}" fit --config configs/demo.yaml "${FIT[@]}"
step cli_attack "$L_attack" "${MLA[@]}" attack --config configs/attack-demo.yaml \
  --model models:/mlgcn-synthetic@best "${ATTACK[@]}"
step cli_report "$L_report" "${MLA[@]}" report --output_dir "$WORK/report"
step attack_speed "$L_speed" "$PY" benchmarks/attack_speed.py --device "$DEVICE" "${SPEED[@]}"
step jacobian "$L_jac" "$PY" benchmarks/jacobian_speed.py --device "$DEVICE" "${JAC[@]}"
step study_estimate "$L_est" "$PY" benchmarks/study_estimate.py --device "$DEVICE" "${EST[@]}" \
  --speeds "$LOGS/attack_speed.log" --demo_checkpoint "$DEMO_CKPT"
step loop_demo "$L_demo" "$PY" benchmarks/loop_speed.py --device "$DEVICE" --models demo "${DEMO[@]}" \
  --eps_iter 0.001 --autocast bf16 --demo_checkpoint "$DEMO_CKPT"
step loop_resnet "$L_resnet" "$PY" benchmarks/loop_speed.py --device "$DEVICE" "${BIG[@]}" --eps_iter 0.001 \
  --loops advertorch,strict,fast,fast-folded --autocast bf16
for mode in "${COMPILE[@]}"; do
  step "compile_$mode" "$L_compile" "$PY" benchmarks/loop_speed.py --device "$DEVICE" "${BIG[@]}" \
    --eps_iter 0.01 --attacks PGD --loops fast,fast-folded --compile "$mode"
done

trap - EXIT INT TERM
finish
printf '%s\n' "${RESULTS[@]}" | grep -qv ': ok ' && exit 1
exit 0
