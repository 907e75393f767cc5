#!/usr/bin/env bash
# Issue 23, ECG: choose the pretraining length on a validation split cut from DS1 (DS2, the
# test records, is never read). 15 DS1 records pretrain (no labels) and fit the probes; the 7
# other DS1 records score them. Per seed: one run of STEPS steps with checkpoints at every POINT,
# linear + attentive probes of each, and of the seed's own untrained encoder (1 step, lr 0).
# Usage, from the repository root:
#   OMP_NUM_THREADS=1 taskset -c 0 env STEPS=2000 POINTS="400 2000" \
#       bash benchmarks/curves/ecg_validation.sh ../shared/data/ecg/mitdb OUT
#   .venv/bin/python benchmarks/curves/ecg_summary.py OUT   # one table per point
set -euo pipefail
MITDB=$1
OUT=$2
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-2000}
POINTS=${POINTS:-"400 2000"}
EVERY=${EVERY:-400}  # checkpoint period; every point must be a multiple of it
J=${JEPACTL:-.venv/bin/jepactl}
# validation records (S, V and F beats among them: 209, 223, 201 S; 119, 106, 223 V; 223 F)
SPLIT=("data.train_records=[101,108,112,114,116,118,122,124,203,205,207,208,215,220,230]"
       "data.test_records=[106,109,115,119,201,209,223]")
mkdir -p "$OUT"
probe() {  # $1 = run, $2 = seed, $3 = output name, rest = extra probe arguments
  local run=$1 s=$2 name=$3
  shift 3
  $J probe "$OUT/$run" --data "$MITDB" --head linear,attentive --json probe.seed="$s" "$@" \
      > "$OUT/$name.probe.json" 2> "$OUT/$name.probe.log"
}
for s in $SEEDS; do
  echo "$(date -u +%T) seed $s: pretrain $STEPS steps on the 15 fitting records"
  $J pretrain ecg/ecg-jepa-cpu --data "$MITDB" --out "$OUT/run-s$s" --quiet --resume-if-exists \
      --max-steps "$STEPS" train.seed="$s" train.num_workers=0 eval.every=0 \
      train.checkpoint_every="$EVERY" checkpoint.keep=$((STEPS / EVERY + 1)) "${SPLIT[@]}" \
      > "$OUT/run-s$s.log" 2>&1
  for p in $POINTS; do
    echo "$(date -u +%T) seed $s: probe step $p"
    mkdir -p "$OUT/step$p"
    probe "run-s$s" "$s" "step$p/s$s" --checkpoint "$p"
  done
  echo "$(date -u +%T) seed $s: the seed's initial weights"
  $J pretrain ecg/ecg-jepa-cpu --data "$MITDB" --out "$OUT/init-s$s" --quiet --resume-if-exists \
      --max-steps 1 train.seed="$s" optim.lr=0 optim.start_lr=0 eval.every=0 \
      train.num_workers=0 "${SPLIT[@]}" > "$OUT/init-s$s.log" 2>&1
  probe "init-s$s" "$s" "init-s$s"
  for p in $POINTS; do cp "$OUT/init-s$s.probe.json" "$OUT/step$p/s$s-init.probe.json"; done
done
echo "$(date -u +%T) done"
