#!/usr/bin/env bash
# ACT-JEPA vs ACT alone on the Push-T demonstrations, at equal steps
# (benchmarks/act/RESULTS.md): per seed, pretrain both arms, then score each with 50 rollouts
# in gym_pusht/PushT-v0 and the future-state probe on the held-out episodes. Baselines: a random
# policy, replaying the nearest demonstration, and the future-state probe on random init.
#
#   [OBS=state|image] bash benchmarks/act/run.sh OUT [SEEDS] [CORE]
#
# One call runs its seeds on one core; results: OUT/<arm>-s<seed>.json. OBS picks the recipes
# policy/act-jepa-OBS-cpu and policy/act-jepa-OBS-act-only-cpu (default state).
set -euo pipefail
out=${1:?usage: run.sh OUT [SEEDS] [CORE]}
seeds=${2:-"0 1 2"}
core=${3:-0}
obs=${OBS:-state}
shared=${SHARED:-../shared/data}
jepactl=${JEPACTL:-jepactl}
data="$shared/robot/pusht/pusht_cchi_v7_replay.zarr"
run() { OMP_NUM_THREADS=1 taskset -c "$core" "$jepactl" "$@"; }
mkdir -p "$out"
for seed in $seeds; do
  for arm in "act-jepa-$obs-cpu" "act-jepa-$obs-act-only-cpu"; do
    name="$arm-s$seed"
    [ -f "$out/$name.json" ] && continue
    /usr/bin/time -f "%e s %M KB" -o "$out/$name.time" \
      bash -c "OMP_NUM_THREADS=1 taskset -c $core $jepactl pretrain policy/$arm --data $data \
        --out $out/$name train.seed=$seed --quiet"
    run probe "$out/$name" --rollouts 50 probe.seed="$seed" --json > "$out/$name.json"
  done
  run_dir="$out/act-jepa-$obs-cpu-s$seed"
  for policy in random nearest_demo; do
    name="$policy-s$seed"
    [ "$obs" = state ] || continue  # the baselines do not observe anything
    [ -f "$out/$name.json" ] || run probe "$run_dir" --rollouts 50 probe.policy=$policy \
      probe.seed="$seed" --json > "$out/$name.json"
  done
  name="random-init-$obs-s$seed"
  [ -f "$out/$name.json" ] || run probe "$run_dir" --random-init --rollouts 0 \
    probe.seed="$seed" --json > "$out/$name.json"
done
