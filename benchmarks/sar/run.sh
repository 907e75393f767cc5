#!/usr/bin/env bash
# SAR-JEPA vs its pixel-target and EMA-target ablations vs a random-init encoder on MSTAR SOC:
# pretrain each arm on the 17° train chips (labels unused) at the same budget (recipes/sar/sar-jepa-cpu:
# 100 steps of 64 chips), then 10-shot probes over 3 seeds on the whole 15° test split.
# Usage: benchmarks/sar/run.sh [DATA] (default ../shared/data/sar/mstar10). ~8 min per arm
# on a busy 2-core CPU. JSON results go to benchmarks/sar/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/sar/mstar10}
OUT=benchmarks/sar/out
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
JEPACTL=${JEPACTL:-.venv/bin/jepactl}
for arm in cpu pixel-targets ema-targets; do
  run=runs/bench-sar-$arm
  case $arm in cpu) recipe=sar/sar-jepa-cpu ;; *) recipe=sar/sar-jepa-$arm-cpu ;; esac
  if [ ! -f "$run/checkpoints/last.pt" ]; then
    "$JEPACTL" pretrain "$recipe" --data "$DATA" --out "$run" --quiet --json > "$OUT/pretrain-$arm.json"
  fi
  "$JEPACTL" probe "$run" --shots 10 --seeds 3 --json > "$OUT/probe-$arm.json"
  # The paper's head optimiser (40 epochs at 1e-3), for reference.
  "$JEPACTL" probe "$run" --shots 10 --seeds 3 --json probe.epochs=40 probe.lr=1e-3 \
    > "$OUT/probe-$arm-paper-optim.json"
done
"$JEPACTL" probe runs/bench-sar-cpu --random-init --shots 10 --seeds 3 --json > "$OUT/probe-random-init.json"
"$JEPACTL" probe runs/bench-sar-cpu --random-init --shots 10 --seeds 3 --json probe.epochs=40 \
  probe.lr=1e-3 > "$OUT/probe-random-init-paper-optim.json"
