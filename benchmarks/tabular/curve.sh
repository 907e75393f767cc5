#!/usr/bin/env bash
# Issue 23: learning curve of T-JEPA on Adult. Probe accuracy against pretraining steps, one
# pretraining run per seed (train.seed=s) with checkpoints kept at the curve points, each probed
# with the same protocol as run.sh (probe.seed=s, one probe seed per run), plus an untrained
# encoder of the same shape (--random-init, step 0) per seed; the probe JSON also carries the
# raw-feature baseline. Sequential, one job at a time.
# --random-init builds the untrained encoder from torch seed 0 whatever the seed (probe.seed
# changes the heads only), so the script also probes each seed's own initial weights: a 1-step
# run with train.seed=s, whose one step has lr 0 (linear warmup from optim.start_lr 0), keeps
# the encoder at its seed-s initialisation (files adult-s$s-init*).
# PHASES="curve init" (default) runs both parts; PHASES=init the second alone.
# Usage, from the repository root:
#   OMP_NUM_THREADS=1 taskset -c 0 env STEPS=2000 SEEDS="0 1 2" POINTS="250 500 1000 2000" \
#       bash benchmarks/tabular/curve.sh /tmp/tjepa-curve
#   .venv/bin/python benchmarks/tabular/curve.py /tmp/tjepa-curve
set -euo pipefail
OUT=${1:-${OUT:-/tmp/tjepa-curve}}
STEPS=${STEPS:-2000}
SEEDS=${SEEDS:-"0 1 2"}
POINTS=${POINTS:-"250 500 1000 2000"}
PHASES=${PHASES:-"curve init"}
EVERY=${EVERY:-250}  # checkpoint period; every point must be a multiple of it
DATA=$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/tabular/adult
J=${JEPACTL:-.venv/bin/jepactl}
PROBE_FAST="probe.mlp_batch_size=1024 probe.mlp_patience=4 probe.mlp_max_epochs=40"
KEEP=$((STEPS / EVERY + 1))
mkdir -p "$OUT"

probe() {  # $1 = run, $2 = seed, $3 = output name, rest = extra probe arguments
  local run=$1 s=$2 name=$3
  shift 3
  $J probe "$OUT/$run" --data "$DATA/adult.data" --test "$DATA/adult.test" \
      --target ltgt50k --seeds 1 --json "$@" probe.seed="$s" $PROBE_FAST \
      > "$OUT/$name.probe.json" 2> "$OUT/$name.probe.log"
}

for s in $SEEDS; do
  [[ " $PHASES " == *" curve "* ]] || continue
  echo "$(date -u +%T) seed $s: pretrain $STEPS steps"
  $J pretrain tabular/tjepa-cpu --data "$DATA/adult.data" --out "$OUT/adult-s$s" --quiet \
      --max-steps "$STEPS" data.target=ltgt50k train.seed="$s" \
      train.checkpoint_every="$EVERY" checkpoint.keep="$KEEP" > "$OUT/adult-s$s.log" 2>&1
  echo "$(date -u +%T) seed $s: probe random init"
  probe "adult-s$s" "$s" "adult-s$s-step0" --random-init
  for p in $POINTS; do
    echo "$(date -u +%T) seed $s: probe step $p"
    probe "adult-s$s" "$s" "adult-s$s-step$p" --checkpoint "$p"
  done
done
for s in $SEEDS; do
  [[ " $PHASES " == *" init "* ]] || continue
  echo "$(date -u +%T) seed $s: 1-step run at lr 0 (the seed's initial weights), probe"
  $J pretrain tabular/tjepa-cpu --data "$DATA/adult.data" --out "$OUT/adult-s$s-init" --quiet \
      --max-steps 1 data.target=ltgt50k train.seed="$s" > "$OUT/adult-s$s-init.log" 2>&1
  probe "adult-s$s-init" "$s" "adult-s$s-init"
done
echo "$(date -u +%T) done"
