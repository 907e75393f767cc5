#!/usr/bin/env bash
# Issue 23, ECG: MIT-BIH inter-patient (DS1 -> DS2) with 3 seeds. Per seed s:
#   1. pretrain ecg/ecg-jepa-cpu on the DS1 records (no labels) with train.seed=s, the online
#      probe every EVERY steps (its curve; baselines: raw input and the step-0 encoder);
#   2. probe the final encoder, linear + attentive heads, probe.seed=s (balanced accuracy on DS2);
#   3. probe seed s's own untrained encoder with the same heads: a 1-step run at lr 0 keeps the
#      weights train.seed=s drew (`probe --random-init` would always build torch seed 0's).
# Usage, from the repository root:
#   OMP_NUM_THREADS=1 taskset -c 1 bash benchmarks/curves/ecg_seeds.sh ../shared/data/ecg/mitdb OUT
#   .venv/bin/python benchmarks/curves/ecg_summary.py OUT
set -euo pipefail
MITDB=$1
OUT=$2
SEEDS=${SEEDS:-"0 1 2"}
EVERY=${EVERY:-100}
J=${JEPACTL:-.venv/bin/jepactl}
mkdir -p "$OUT"
for s in $SEEDS; do
  echo "$(date -u +%T) seed $s: pretrain"
  $J pretrain ecg/ecg-jepa-cpu --data "$MITDB" --out "$OUT/s$s" --quiet --resume-if-exists \
      train.seed="$s" eval.every="$EVERY" train.num_workers=0 > "$OUT/s$s.log" 2>&1
  echo "$(date -u +%T) seed $s: probe pretrained"
  $J probe "$OUT/s$s" --data "$MITDB" --head linear,attentive --json probe.seed="$s" \
      > "$OUT/s$s.probe.json" 2> "$OUT/s$s.probe.log"
  echo "$(date -u +%T) seed $s: probe the seed's initial weights"
  $J pretrain ecg/ecg-jepa-cpu --data "$MITDB" --out "$OUT/s$s-init" --quiet --resume-if-exists \
      --max-steps 1 train.seed="$s" optim.lr=0 optim.start_lr=0 eval.every=0 \
      train.num_workers=0 > "$OUT/s$s-init.log" 2>&1
  $J probe "$OUT/s$s-init" --data "$MITDB" --head linear,attentive --json probe.seed="$s" \
      > "$OUT/s$s-init.probe.json" 2> "$OUT/s$s-init.probe.log"
done
runs=()
for s in $SEEDS; do runs+=("$OUT/s$s"); done
$J report "${runs[@]}" --out "$OUT/report" > /dev/null
echo "$(date -u +%T) done"
