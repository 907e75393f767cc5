#!/usr/bin/env bash
# End-to-end fine-tuning of the T-JEPA encoder (+ linear head) on Adult (classification) and
# California housing (regression, standardised target), from the runs of run.sh and from an
# untrained encoder of the same shape. Recipe finetune defaults: 10 epochs, batch 128, AdamW
# lr 1e-3 with layer-wise decay 0.75, warmup 1 epoch then cosine.
# Usage, from the repository root, after run.sh wrote OUT_DIR:
#   OMP_NUM_THREADS=1 bash benchmarks/tabular/finetune.sh /tmp/tjepa-bench [RUN_SUFFIX]
set -euo pipefail
OUT=${1:-/tmp/tjepa-bench}
SUFFIX=${2:-reg1}
DATA=$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/tabular
J=${JEPACTL:-.venv/bin/jepactl}

for init in pretrained random; do
  flag=""; [ "$init" = random ] && flag="--random-init"
  $J finetune "$OUT/adult-$SUFFIX" --data "$DATA/adult/adult.data" --test "$DATA/adult/adult.test" \
      --out "$OUT/adult-$SUFFIX-ft-$init" --quiet --json $flag > "$OUT/adult-$SUFFIX-ft-$init.json"
  $J finetune "$OUT/california-$SUFFIX" --data "$OUT/california/train.csv" \
      --test "$OUT/california/test.csv" --out "$OUT/california-$SUFFIX-ft-$init" --quiet --json \
      $flag > "$OUT/california-$SUFFIX-ft-$init.json"
done
.venv/bin/python - "$OUT" "$SUFFIX" <<'PY'
import json, sys
from pathlib import Path
out, suffix = Path(sys.argv[1]), sys.argv[2]
for data, keys in (("adult", ("test_accuracy", "test_balanced_accuracy")),
                   ("california", ("test_rmse", "test_rmse_original", "test_r2"))):
    for init in ("pretrained", "random"):
        r = json.loads((out / f"{data}-{suffix}-ft-{init}.json").read_text())
        print(f"{data:10s} {init:10s} " + "  ".join(f"{k} {r[k]:.4f}" for k in keys))
PY
