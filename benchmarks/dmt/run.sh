#!/usr/bin/env bash
# DMT-JEPA vs I-JEPA at equal budget on CIFAR-10 (methods.md §1 success criterion).
# By default both arms use image/tiny's budget (600 steps of 128, 32 px, patch 4, ViT 192 x 6);
# DMT's recipe (image/dmt-tiny) only adds the local aggregation head. Both are probed with the
# same protocol, `jepactl probe RUN --json` (linear = L-BFGS logistic regression, kNN k=20).
# Each pretraining call is cut into chunks of CHUNK seconds (SIGTERM saves a checkpoint and
# the next call resumes exactly), so no single job runs longer than a few minutes on a shared
# CPU; rerunning the script continues where it stopped. The I-JEPA arm reuses IJEPA_RUN when
# it already has a checkpoint (default runs/bench-cifar, the lead's run of image/tiny).
#
# Full budget:    benchmarks/dmt/run.sh
# Reduced budget (what fitted a shared 2-core CPU; see RESULTS.md):
#   python benchmarks/dmt/subset_cifar.py ../shared/data/images/cifar10 /tmp/cifar-sub
#   TAG=r100 MAX_STEPS=100 OVERRIDES="train.batch_size=64 optim.warmup_steps=10" \
#     PROBE_DATA=/tmp/cifar-sub benchmarks/dmt/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/images/cifar10}
TAG=${TAG:-full}
OUT=benchmarks/dmt/out
CHUNK=${CHUNK:-420}
IJEPA_RUN=${IJEPA_RUN:-$([ "$TAG" = full ] && echo runs/bench-cifar || echo "runs/bench-ijepa-cifar-$TAG")}
DMT_RUN=${DMT_RUN:-runs/bench-dmt-cifar-$TAG}
read -r -a EXTRA <<< "${OVERRIDES:-}"
[ -n "${MAX_STEPS:-}" ] && EXTRA+=("train.max_steps=$MAX_STEPS")
PROBE=()
[ -n "${PROBE_DATA:-}" ] && PROBE+=(--data "$PROBE_DATA")
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
JEPACTL=${JEPACTL:-.venv/bin/jepactl}

pretrain_in_chunks() {  # RECIPE RUN
  local recipe=$1 run=$2 state="$OUT/chunk-$TAG.json"
  rm -f "$state"
  if [ ! -f "$run/checkpoints/last.pt" ]; then
    timeout -s TERM "$CHUNK" "$JEPACTL" pretrain "$recipe" --data "$DATA" --out "$run" --quiet \
      --json "${EXTRA[@]}" > "$state" || true
  fi
  until grep -q '"finished": true' "$state" 2>/dev/null; do
    timeout -s TERM "$CHUNK" "$JEPACTL" pretrain "$run" --out "$run" --resume --quiet --json \
      > "$state" || true
  done
  rm -f "$state"
}

pretrain_in_chunks image/tiny "$IJEPA_RUN"
pretrain_in_chunks image/dmt-tiny "$DMT_RUN"
"$JEPACTL" probe "$IJEPA_RUN" "${PROBE[@]}" --json > "$OUT/probe-ijepa-$TAG.json"
"$JEPACTL" probe "$DMT_RUN" "${PROBE[@]}" --json > "$OUT/probe-dmt-$TAG.json"
