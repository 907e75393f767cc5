#!/usr/bin/env bash
# Issue 23: learning curves from online probes. One pretraining run per seed (train.seed=s),
# each scoring its frozen encoder every EVERY steps with the online probe (linear + centred
# kNN, evaluate/online.py); the probe also scores, once per run, the raw inputs and the encoder
# before its first step (that seed's random init). Then `jepactl report` overlays the seeds
# (online_probe.png: step 0 = random init, dashed line = raw input) and summary.py tabulates
# mean +- std over seeds per step. Sequential, one run at a time: pin it to one core.
# Usage, from the repository root:
#   OMP_NUM_THREADS=1 taskset -c 0 env STEPS=1500 EVERY=250 SEEDS="0 1 2" \
#       bash benchmarks/curves/curve.sh image/ijepa-cpu ../shared/data/images/mnist OUT \
#       eval.fit_samples=8000 eval.score_samples=2000
#   .venv/bin/python benchmarks/curves/summary.py OUT > OUT/summary.md
set -euo pipefail
RECIPE=$1
DATA=$2
OUT=$3
shift 3
STEPS=${STEPS:-1000}
EVERY=${EVERY:-250}
SEEDS=${SEEDS:-"0 1 2"}
J=${JEPACTL:-.venv/bin/jepactl}
mkdir -p "$OUT"
for s in $SEEDS; do
  echo "$(date -u +%T) $RECIPE seed $s: $STEPS steps, online probe every $EVERY"
  $J pretrain "$RECIPE" --data "$DATA" --out "$OUT/s$s" --quiet --resume-if-exists \
      --max-steps "$STEPS" train.seed="$s" eval.every="$EVERY" train.num_workers=0 \
      train.checkpoint_every="$EVERY" "$@" > "$OUT/s$s.log" 2>&1
done
runs=()
for s in $SEEDS; do runs+=("$OUT/s$s"); done
$J report "${runs[@]}" --out "$OUT/report" > /dev/null
echo "$(date -u +%T) done: $OUT/report/online_probe.png"
