#!/usr/bin/env bash
# The paper recipes (issue 16's four, then ACT-JEPA's and AD-L-JEPA's), two steps each, as a new user types them on a 2-core,
# 24 GB machine: wall time, peak RSS (GNU time) and the micro-batch each run chose.
# Usage: bash benchmarks/robustness/paper_recipes.sh [OUT_DIR] [NAMES]   (about 15 minutes)
# NAMES (default all): a space-separated subset of ecg image tabular sar policy lidar.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/jepactl-paper-recipes}
names=${2:-"ecg image tabular sar policy lidar"}
data=../shared/data
jepactl=${JEPACTL:-jepactl}
mkdir -p "$out"
run() {
  local name=$1; shift
  case " $names " in *" $name "*) ;; *) return ;; esac
  rm -rf "${out:?}/$name"
  /usr/bin/time -f "%e %M" -o "$out/$name.time" "$jepactl" pretrain "$@" --out "$out/$name" \
    --max-steps 2 --quiet > "$out/$name.stdout" 2> "$out/$name.stderr"
  local rc=$?
  python3 - "$out" "$name" "$rc" <<'PY'
import json, sys
out, name, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
wall, kib = open(f"{out}/{name}.time").read().split()[-2:]
try:
    micro = json.load(open(f"{out}/{name}/env.json"))["micro_batch"]
except (OSError, KeyError):
    micro = {}
print(f"| {name} | {rc} | {float(wall):.0f} | {int(kib) / 2**20:.1f} | "
      f"{micro.get('batch_size')} = {micro.get('accumulation')} x {micro.get('micro_batch_size')} "
      f"| {micro.get('predicted_peak_gib')} | {micro.get('first_step_peak_gib')} |")
PY
}
echo "| run | exit | wall s | peak RSS GiB | batch = pieces x micro | predicted GiB | first step GiB |"
echo "|---|---|---|---|---|---|---|"
run ecg ecg
run image image --data "$data/images/mnist/train"
run tabular tabular --data "$data/tabular/adult/adult.data" data.target=ltgt50k
run sar sar --data "$data/sar/mstar10"
run policy policy --data "$data/robot/pusht/pusht_cchi_v7_replay.zarr"
run lidar lidar --data "$data/lidar/kitti_sample"
