#!/usr/bin/env bash
# AD-L-JEPA (dense pillar approximation) against occupancy reconstruction, random init, the raw
# pillar grid and hand-made shape features (benchmarks/lidar/RESULTS.md).
#
#   bash benchmarks/lidar/run.sh OUT objects [SEEDS] [CORE]   # (b) DALES: pretrain + probe
#   bash benchmarks/lidar/run.sh OUT kitti [SEEDS] [CORE]     # (a) KITTI scans + transfer
#   bash benchmarks/lidar/run.sh OUT cost [CORE]              # (c) step time and memory
#
# One call runs on one core; results: OUT/<name>.json. Probe seeds follow pretraining seeds:
# probe.seed picks the stratified 80/20 split, so the spread includes the split's.
set -euo pipefail
out=${1:?usage: run.sh OUT objects|kitti|cost [SEEDS] [CORE]}
what=${2:?usage: run.sh OUT objects|kitti|cost [SEEDS] [CORE]}
shared=${SHARED:-../shared/data}
jepactl=${JEPACTL:-jepactl}
dales="$shared/lidar/dales_objects"
kitti="$shared/lidar/kitti_sample"
mkdir -p "$out"
if [ "$what" = cost ]; then
  core=${3:-0}
else
  seeds=${3:-"0 1 2"}
  core=${4:-0}
fi
run() { OMP_NUM_THREADS=1 taskset -c "$core" "$jepactl" "$@"; }
pretrain() {  # recipe name seed data [overrides...]
  local recipe=$1 name=$2 seed=$3 data=$4
  shift 4
  [ -s "$out/$name.pretrain.json" ] && return
  /usr/bin/time -f "%e s %M KB" -o "$out/$name.time" \
    env OMP_NUM_THREADS=1 taskset -c "$core" "$jepactl" pretrain "$recipe" --data "$data" \
    --out "$out/$name" train.seed="$seed" "$@" --quiet --json > "$out/$name.pretrain.json"
}
probe() {  # name output-name [probe args...]
  local name=$1 result=$2
  shift 2
  [ -f "$out/$result.json" ] || run probe "$out/$name" --data "$dales" "$@" --json \
    > "$out/$result.json"
}
# The DALES objects probed with a KITTI-scan encoder: centred in metres, 50 m x 50 m x 40 m.
TRANSFER=(probe.objects=centre "probe.grid.point_range=[-25,-25,0,25,25,40]" probe.grid.cell=0.8)

case $what in
objects)
  for seed in $seeds; do
    for arm in ad-l-jepa occupancy-mae; do
      pretrain "lidar/$arm-objects-cpu" "$arm-objects-s$seed" "$seed" "$dales"
      probe "$arm-objects-s$seed" "$arm-objects-s$seed" probe.seed="$seed"
    done
    run_dir="ad-l-jepa-objects-s$seed"
    probe "$run_dir" "ad-l-jepa-objects-context-s$seed" --which context probe.seed="$seed"
    probe "$run_dir" "random-init-objects-s$seed" --random-init probe.seed="$seed"
    probe "$run_dir" "handcrafted-s$seed" probe.features=handcrafted probe.seed="$seed"
    probe "$run_dir" "pillars-s$seed" probe.features=pillars probe.seed="$seed"
  done
  ;;
kitti)
  for seed in $seeds; do
    for arm in ad-l-jepa occupancy-mae; do
      pretrain "lidar/$arm-cpu" "$arm-kitti-s$seed" "$seed" "$kitti"
      probe "$arm-kitti-s$seed" "$arm-kitti-to-dales-s$seed" probe.seed="$seed" "${TRANSFER[@]}"
    done
    probe "ad-l-jepa-kitti-s$seed" "random-init-kitti-to-dales-s$seed" --random-init \
      probe.seed="$seed" "${TRANSFER[@]}"
  done
  ;;
cost)
  # Same encoder, same real scans, same batch: the CPU recipes, then the paper-sized grid
  # (0.2 m pillars, 64-128-256 channels) at batch 1.
  for arm in ad-l-jepa occupancy-mae; do
    [ -f "$out/cost-$arm-cpu.json" ] || run bench "lidar/$arm-cpu" --data "$kitti" \
      --steps 20 --warmup 3 --repeats 3 --json > "$out/cost-$arm-cpu.json"
    [ -f "$out/cost-$arm-paper-grid.json" ] || run bench "lidar/$arm-cpu" --data "$kitti" \
      data.grid.cell=0.2 "model.channels=[64,128,256]" --batch-size 1 \
      --steps 3 --warmup 1 --repeats 3 --json > "$out/cost-$arm-paper-grid.json"
  done
  ;;
*)
  echo "unknown part '$what' (objects, kitti or cost)" >&2
  exit 2
  ;;
esac
