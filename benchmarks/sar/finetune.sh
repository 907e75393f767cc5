#!/usr/bin/env bash
# Few-shot fine-tuning on MSTAR SOC (SAR-JEPA's MIM_finetune protocol: encoder + BatchNorm
# head trained end to end, 10 shots per class, 3 seeds, whole 15° test split) for the SAR-JEPA
# run of benchmarks/sar/run.sh and for a random-init encoder of the same shape.
# ~2 min per seed on a busy 2-core CPU. JSON results go to benchmarks/sar/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=benchmarks/sar/out
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
JEPACTL=${JEPACTL:-.venv/bin/jepactl}
"$JEPACTL" probe runs/bench-sar-cpu --head finetune --shots 10 --seeds 3 --json \
  > "$OUT/finetune-cpu.json"
"$JEPACTL" probe runs/bench-sar-cpu --head finetune --random-init --shots 10 --seeds 3 --json \
  > "$OUT/finetune-random-init.json"
