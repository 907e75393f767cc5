#!/usr/bin/env bash
# MIT-BIH inter-patient benchmark (de Chazal et al. 2004) at CPU scale, recipe ecg/cpu:
#   1. pretrain ECG-JEPA on the DS1 records, no labels (data.pretrain_split=train);
#   2. probe the frozen encoder (linear + attentive) on DS1 beats, test on DS2 beats;
#   3. the same probes on a random-init encoder of the same shape;
#   4. the same model (encoder + attentive head) trained from scratch with labels.
# Usage: benchmarks/ecg/mitdb_inter_patient.sh [MITDB] [OUT]; results in OUT/*.json.
set -euo pipefail
MITDB=${1:-../shared/data/ecg/mitdb}
OUT=${2:-runs/ecg-mitdb}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
[ -f "$OUT/jepa/checkpoints/last.pt" ] || \
  .venv/bin/jepactl pretrain ecg/cpu --data "$MITDB" --out "$OUT/jepa" --json > "$OUT/pretrain.json"
.venv/bin/jepactl probe "$OUT/jepa" --data "$MITDB" --head linear,attentive --json \
  > "$OUT/probe-jepa.json"
.venv/bin/jepactl probe "$OUT/jepa" --data "$MITDB" --head linear,attentive --random-init --json \
  > "$OUT/probe-random.json"
.venv/bin/jepactl probe "$OUT/jepa" --data "$MITDB" --head finetune --random-init --json \
  > "$OUT/supervised-scratch.json"
