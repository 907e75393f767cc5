#!/usr/bin/env bash
# DMT-JEPA vs I-JEPA at equal budget on CIFAR-10 (methods.md §1 success criterion).
# By default both arms use image/ijepa-cpu's budget (600 steps of 128, 32 px, patch 4, ViT 192 x 6);
# DMT's recipe (image/dmt-jepa-cpu) only adds the local aggregation head. Both are probed with the
# same protocol, `jepactl probe RUN --json` (linear = L-BFGS logistic regression, kNN k=20).
# Each pretraining call is cut into chunks of CHUNK seconds (SIGTERM saves a checkpoint and
# the next call resumes exactly), so no single job runs longer than a few minutes on a shared
# CPU; rerunning the script continues where it stopped. The I-JEPA arm reuses IJEPA_RUN when
# it already has a checkpoint (default runs/bench-cifar, the lead's run of image/ijepa-cpu).
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

chunk() {  # run one pretraining call for at most CHUNK seconds; fail on anything but a timeout
  # --foreground: SIGTERM goes to jepactl alone, which saves a checkpoint and exits. Without it
  # timeout signals the whole process group, the DataLoader workers die first and the run
  # crashes before it can save.
  local rc=0
  timeout --foreground -s TERM "$CHUNK" "$JEPACTL" "$@" > "$STATE" || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then echo "pretrain failed ($rc): $*" >&2; exit "$rc"; fi
}

pretrain_in_chunks() {  # RECIPE RUN
  local recipe=$1 run=$2
  STATE="$OUT/chunk-$TAG-$(basename "$run").json"
  rm -f "$STATE"
  if [ ! -f "$run/checkpoints/last.pt" ]; then
    chunk pretrain "$recipe" --data "$DATA" --out "$run" --quiet --json "${EXTRA[@]}"
  fi
  until grep -q '"finished": true' "$STATE" 2>/dev/null; do
    chunk pretrain "$run" --out "$run" --resume --quiet --json
  done
  rm -f "$STATE"
}

# ARMS="ijepa dmt" (default) runs both arms in turn; one arm per call runs them side by side.
for arm in ${ARMS:-ijepa dmt}; do
  case $arm in
    ijepa) recipe=image/ijepa-cpu; run=$IJEPA_RUN ;;
    dmt) recipe=image/dmt-jepa-cpu; run=$DMT_RUN ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  pretrain_in_chunks "$recipe" "$run"
  "$JEPACTL" probe "$run" "${PROBE[@]}" --json > "$OUT/probe-$arm-$TAG.json"
done
