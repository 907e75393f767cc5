#!/usr/bin/env bash
# seq-JEPA on CIFAR-10 at a CPU budget (benchmarks/seq/RESULTS.md): seq-JEPA with and without
# action conditioning, random init of the same shape, and I-JEPA (image/ijepa-cpu), two seeds.
# Pretraining reads the 30,000 CIFAR-10 training images; every probe reads the same seeded,
# class-balanced 5,000 / 2,000 subset (benchmarks/dmt/subset_cifar.py), to bound probe time.
#
#   bash benchmarks/seq/run.sh OUT [SEEDS] [CORE]
#
# Runs one seed list on one core; two calls on cores 0 and 1 with SEEDS "0" and "1" split the
# work (about 100 minutes each on this 2-core machine). Results: OUT/<arm>-s<seed>.json.
set -euo pipefail
out=${1:?usage: run.sh OUT [SEEDS] [CORE]}
seeds=${2:-"0 1"}
core=${3:-0}
shared=${SHARED:-../shared/data}
jepactl=${JEPACTL:-jepactl}
python=${PYTHON:-python}
run() { OMP_NUM_THREADS=1 taskset -c "$core" "$jepactl" "$@"; }
mkdir -p "$out"
subset="$out/cifar10-5k-2k"
[ -d "$subset" ] || "$python" benchmarks/dmt/subset_cifar.py "$shared/images/cifar10" "$subset" \
  --train 5000 --test 2000 --seed 0
for seed in $seeds; do
  for arm in seq-jepa-cpu seq-jepa-no-actions-cpu; do
    name="$arm-s$seed"
    [ -f "$out/$name.json" ] && continue
    /usr/bin/time -f "%e s %M KB" -o "$out/$name.time" \
      bash -c "OMP_NUM_THREADS=1 taskset -c $core $jepactl pretrain views/$arm \
        --data $shared/images/cifar10 --out $out/$name train.seed=$seed --quiet"
    run probe "$out/$name" --data "$subset" --views 1,3,5 probe.seed="$seed" --json \
      > "$out/$name.json"
  done
  name="random-init-s$seed"
  [ -f "$out/$name.json" ] || run probe "$out/seq-jepa-cpu-s$seed" --random-init --data "$subset" \
    --views 1,3,5 probe.seed="$seed" --json > "$out/$name.json"
  name="ijepa-cpu-s$seed"
  if [ ! -f "$out/$name.json" ]; then
    /usr/bin/time -f "%e s %M KB" -o "$out/$name.time" \
      bash -c "OMP_NUM_THREADS=1 taskset -c $core $jepactl pretrain image/ijepa-cpu \
        --data $shared/images/cifar10 --out $out/$name train.seed=$seed \
        data.mean=[0.4914,0.4822,0.4465] data.std=[0.247,0.2435,0.2616] --quiet"
    run probe "$out/$name" --data "$subset" probe.seed="$seed" --json > "$out/$name.json"
  fi
done
