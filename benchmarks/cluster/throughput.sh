#!/usr/bin/env bash
# Training throughput of `jepactl pretrain image/tiny` (= image/ijepa-cpu, fp32) under 1 process
# and under 2 processes on this machine (accelerate launch --multi_gpu on CPU: torchrun + gloo).
# Weak scaling: every process keeps the recipe's batch of 64, so 2 processes train a global
# batch of 128 per step; samples/s counts the global batch. The first logged window (steps
# 1-10: start-up, first-step memory check) is left out; the figure is the mean over steps
# 11..STEPS of metrics.jsonl's samples_per_s. CONFIGS lists PROCESSES:THREADS pairs (threads:
# OMP_NUM_THREADS per process; torchrun sets 1 per process when it is unset), run in turn,
# REPEATS times over.
# Usage, from the repository root:
#   [CONFIGS="1:2 1:1 2:1"] bash benchmarks/cluster/throughput.sh [STEPS] [REPEATS]
#   (defaults 40 and 2: about 10 minutes on 2 CPU cores)
set -euo pipefail
STEPS=${1:-40}
REPEATS=${2:-2}
CONFIGS=${CONFIGS:-"1:2 1:1 2:1"}
PY=${PYTHON:-.venv/bin/python}
ACC=$(dirname "$PY")/accelerate
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ARGS=(image/tiny --max-steps "$STEPS" --quiet train.log_every=10 train.checkpoint_every=1000)

for repeat in $(seq 1 "$REPEATS"); do
  for config in $CONFIGS; do
    procs=${config%:*} threads=${config#*:}
    out="$WORK/p${procs}t${threads}-$repeat"
    if [ "$procs" = 1 ]; then
      OMP_NUM_THREADS=$threads "$PY" -m jepactl pretrain "${ARGS[@]}" --out "$out" > /dev/null
    else
      OMP_NUM_THREADS=$threads "$ACC" launch --multi_gpu --num_processes "$procs" \
          --num_machines 1 --main_process_port 0 --mixed_precision no --dynamo_backend no \
          -m jepactl pretrain "${ARGS[@]}" --out "$out" > /dev/null
    fi
  done
done

"$PY" - "$WORK" <<'PY'
import json, statistics, sys
from pathlib import Path
work = Path(sys.argv[1])
print("| processes x threads | global batch | samples/s per run (steps 11+) | mean | s/step |")
print("|---|---|---|---|---|")
runs = {}
for run in sorted(work.iterdir()):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    env = json.loads((run / "env.json").read_text())
    config = run.name.split("-")[0]
    procs = int(config[1:].split("t")[0])
    assert env["world_size"] == procs
    rate = statistics.mean(r["samples_per_s"] for r in rows if r["step"] > 10)
    runs.setdefault(config, []).append(rate)
for config, rates in runs.items():
    procs, threads = config[1:].split("t")
    batch, mean = 64 * int(procs), statistics.mean(rates)
    print(f"| {procs} x {threads} | {batch} | {', '.join(f'{r:.1f}' for r in rates)} | "
          f"{mean:.1f} | {batch / mean:.2f} |")
PY
