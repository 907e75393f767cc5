#!/usr/bin/env bash
# DMT-JEPA vs I-JEPA at equal budget on CIFAR-10 (methods.md §1 success criterion).
# Both arms use image/tiny's budget (600 steps of 128, 32 px, patch 4, ViT 192 x 6); DMT's
# recipe (image/dmt-tiny) only adds the local aggregation head. Both are probed with the same
# protocol: `jepactl probe RUN --json` (linear = L-BFGS logistic regression, kNN k=20) on the
# parquet train/test splits.
# Each pretraining call is cut into chunks of CHUNK seconds (SIGTERM saves a checkpoint and
# the next call resumes exactly), so no single job runs longer than a few minutes on a shared
# CPU. The I-JEPA arm reuses runs/bench-cifar when it exists (the lead's run of image/tiny).
# Usage: benchmarks/dmt/run.sh [DATA]  (default ../shared/data/images/cifar10)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/images/cifar10}
OUT=benchmarks/dmt/out
CHUNK=${CHUNK:-420}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
JEPACTL=${JEPACTL:-.venv/bin/jepactl}

pretrain_in_chunks() {  # RECIPE RUN
  local recipe=$1 run=$2
  if [ ! -f "$run/checkpoints/last.pt" ]; then
    timeout -s TERM "$CHUNK" "$JEPACTL" pretrain "$recipe" --data "$DATA" --out "$run" --quiet \
      --json > "$OUT/last-chunk.json" || true
  fi
  until grep -q '"finished": true' "$OUT/last-chunk.json" 2>/dev/null; do
    timeout -s TERM "$CHUNK" "$JEPACTL" pretrain "$run" --out "$run" --resume --quiet --json \
      > "$OUT/last-chunk.json" || true
  done
  rm -f "$OUT/last-chunk.json"
}

IJEPA_RUN=${IJEPA_RUN:-runs/bench-cifar}
[ -f "$IJEPA_RUN/checkpoints/last.pt" ] || pretrain_in_chunks image/tiny "$IJEPA_RUN"
pretrain_in_chunks image/dmt-tiny runs/bench-dmt-cifar
"$JEPACTL" probe "$IJEPA_RUN" --json > "$OUT/probe-ijepa.json"
"$JEPACTL" probe runs/bench-dmt-cifar --json > "$OUT/probe-dmt.json"
