#!/usr/bin/env bash
# Throughput and peak memory of `jepactl bench image/tiny` (bf16) against batch size, and
# against data-set size: MNIST's 8,000 training files (1x) vs a folder of 80,000 (10x, the same
# files linked ten times). Memory must not grow with the data-set size: image folders are read
# lazily, one file per sample, and only the file list is held.
# Usage, from the repository root on an otherwise idle machine:
#   bash benchmarks/perf/scaling.sh [OUT_DIR]        (~15 min on 2 CPU cores)
set -euo pipefail
OUT=${1:-benchmarks/perf/results}
J=${JEPACTL:-.venv/bin/jepactl}
MNIST=$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/images/mnist/train
mkdir -p "$OUT"

for batch in 16 32 64 128; do
  "$J" bench image/tiny --batch-size "$batch" --steps 8 --repeats 3 --json \
      > "$OUT/scaling-batch$batch.json"
done

TENX=$(mktemp -d)
trap 'rm -rf "$TENX"' EXIT
for copy in $(seq 0 9); do
  for class in "$MNIST"/*/; do
    name=$(basename "$class")
    mkdir -p "$TENX/$name"
    for file in "$class"*; do ln -s "$file" "$TENX/$name/c${copy}_$(basename "$file")"; done
  done
done
"$J" bench image/tiny --data "$MNIST" --steps 8 --repeats 3 --json > "$OUT/scaling-data1x.json"
"$J" bench image/tiny --data "$TENX" --steps 8 --repeats 3 --json > "$OUT/scaling-data10x.json"

.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | batch | samples/s (median of 3) | peak memory MB | data wait |")
print("|---|---|---|---|---|")
for name in ["batch16", "batch32", "batch64", "batch128", "data1x", "data10x"]:
    r = json.loads((out / f"scaling-{name}.json").read_text())
    print(f"| {name} | {r['batch_size']} | {r['samples_per_s']:.1f} | {r['peak_memory_mb']:.0f} | "
          f"{100 * r['data_wait_fraction']:.1f} % |")
PY
