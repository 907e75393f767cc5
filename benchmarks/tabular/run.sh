#!/usr/bin/env bash
# T-JEPA on Adult and California housing at CPU scale: raw features vs T-JEPA embeddings
# (linear + MLP heads, 5 seeds) and the [REG] ablation (model.num_registers=0 vs 1).
# The three runs go in parallel (each is single-threaded).
# Usage, from the repository root:
#   OMP_NUM_THREADS=1 STEPS=150 bash benchmarks/tabular/run.sh /tmp/tjepa-bench
set -euo pipefail
OUT=${1:-/tmp/tjepa-bench}
STEPS=${STEPS:-150}
SEEDS=${SEEDS:-5}
DATA=$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/tabular
J=${JEPACTL:-.venv/bin/jepactl}
# Cheaper MLP training for CPU time (recorded in RESULTS.md).
PROBE_FAST="probe.mlp_batch_size=1024 probe.mlp_patience=4 probe.mlp_max_epochs=40"
mkdir -p "$OUT"

# California: a fixed 80/20 split (seed 0) written once; pretraining sees the 80% only.
.venv/bin/python benchmarks/tabular/split_csv.py "$DATA/california_housing/housing.csv" \
    "$OUT/california" 0.2 0

adult() {  # $1 = number of [REG] tokens
  $J pretrain tabular/tjepa-cpu --data "$DATA/adult/adult.data" --out "$OUT/adult-reg$1" --quiet \
      --max-steps "$STEPS" data.target=ltgt50k model.num_registers=$1
  $J probe "$OUT/adult-reg$1" --data "$DATA/adult/adult.data" --test "$DATA/adult/adult.test" \
      --target ltgt50k --seeds "$SEEDS" --json $PROBE_FAST > "$OUT/adult-reg$1.probe.json"
}
california() {
  $J pretrain tabular/tjepa-cpu --data "$OUT/california/train.csv" --out "$OUT/california-reg1" \
      --quiet --max-steps "$STEPS" data.target=median_house_value
  $J probe "$OUT/california-reg1" --data "$OUT/california/train.csv" \
      --test "$OUT/california/test.csv" --target median_house_value --seeds "$SEEDS" --json \
      $PROBE_FAST > "$OUT/california-reg1.probe.json"
}
random_init() {  # control: the same probe on an untrained encoder of the same shape
  $J probe "$OUT/$1-reg1" --data "$2" --test "$3" --target "$4" --seeds "$SEEDS" --json \
      --random-init $PROBE_FAST > "$OUT/$1-random.probe.json"
}
adult 1 > "$OUT/adult-reg1.log" 2>&1 &
adult 0 > "$OUT/adult-reg0.log" 2>&1 &
california > "$OUT/california.log" 2>&1 &
wait
random_init adult "$DATA/adult/adult.data" "$DATA/adult/adult.test" ltgt50k &
random_init california "$OUT/california/train.csv" "$OUT/california/test.csv" \
    median_house_value &
wait
.venv/bin/python benchmarks/tabular/summarise.py "$OUT"
