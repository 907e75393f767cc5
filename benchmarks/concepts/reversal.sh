#!/usr/bin/env bash
# The reversal-curse comparison (methods.md §8), each run sized to train in minutes on 2 CPU cores:
#   single-token entities:  causal LM, tied and untied output layer (concepts/lm,
#                           concepts/lm-untied)  vs  concept-JEPA (concepts/default)
#   entangled names:        concept-JEPA without memory (concepts/entangled)  vs  with (concepts/entangled-memory)
# Usage: benchmarks/concepts/reversal.sh [OUT_DIR] [RECIPE ...]   (default: all five recipes)
# Writes OUT_DIR/<recipe>/ (the run), OUT_DIR/<recipe>.json (the MRR table) and prints a summary.
set -euo pipefail
out=${1:-runs/bench-concepts}
shift || true
recipes=("$@")
[ ${#recipes[@]} -eq 0 ] && recipes=(concepts/lm concepts/lm-untied concepts/default concepts/entangled concepts/entangled-memory)
jepactl=${JEPACTL:-jepactl}
mkdir -p "$out"
for recipe in "${recipes[@]}"; do
  name=${recipe//\//-}
  start=$(date +%s)
  "$jepactl" pretrain "$recipe" --out "$out/$name" --quiet > /dev/null
  seconds=$(( $(date +%s) - start ))
  "$jepactl" probe "$out/$name" --json > "$out/$name.json"
  python3 - "$out/$name.json" "$recipe" "$seconds" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(f"{sys.argv[2]:28s} train {r['train_mrr']:.3f}  atomic {r['atomic_mrr']:.3f}  "
      f"test {r['test_mrr']:.3f}  chance {r['chance_mrr']:.4f}  ({r['ranked']} MRR, "
      f"{sys.argv[3]} s training)")
PY
done
