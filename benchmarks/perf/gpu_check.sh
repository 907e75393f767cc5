#!/usr/bin/env bash
# The prepared GPU check (issue "Clusters", item 7): one call on a machine with one NVIDIA GPU
# that writes every figure to $OUT/gpu_check.json, in under 8 minutes (each stage has its own
# time limit; the limits sum to 7.4 minutes and a stage that runs out is recorded, not fatal):
#   1. the suite's GPU tests (`pytest -m gpu`: precision choice, a step in bf16/fp16/fp32, the
#      CUDA memory meter, fused AdamW);
#   2. `jepactl bench image/ijepa --precision bf16`: samples/s and MFU against the measured
#      matmul rate and the card's data-sheet peak;
#   3. two processes on the one GPU (`accelerate launch --num_processes 2`), if the device
#      allows it (NCCL refuses two ranks on one card; the error is recorded);
#   4. the ECG and image paper recipes (ecg/ecg-jepa, image/ijepa) for a few hundred steps:
#      samples/s, the micro-batch the planner chose and the first step's peak memory.
#
# Through the device tool, from a source checkout (the device image has torch, timm,
# accelerate, typer, rich, safetensors, pyyaml; pytest is used when present):
#   run(command="bash benchmarks/perf/gpu_check.sh", timeout_s=540)
# `bash benchmarks/perf/gpu_check.sh --smoke DIR` takes the same path on a CPU with the -cpu
# recipes and a few steps (tests/test_perf_smoke.py); its figures mean nothing.
set -uo pipefail
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; shift; fi
out=${OUT:-${1:-runs/gpu-check}}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}


if ((smoke)); then
  steps=3 bench_recipe=image/ijepa-cpu ecg_recipe=ecg/ecg-jepa-cpu image_recipe=image/ijepa-cpu
  small=(model.embed_dim=32 model.depth=1 model.num_heads=2 predictor.embed_dim=16
    predictor.depth=1 predictor.num_heads=2 train.batch_size=8)
  ecg_small=(train.batch_size=16)
  bench_args=(--steps 1 --warmup 0 --repeats 1 --batch-size 8 "${small[@]}")
  limit_tests=120 limit_bench=120 limit_two=120 limit_ecg=180 limit_image=120
else
  steps=300 bench_recipe=image/ijepa ecg_recipe=ecg/ecg-jepa image_recipe=image/ijepa
  small=() ecg_small=()
  bench_args=(--steps 20 --warmup 10 --repeats 3)
  limit_tests=75 limit_bench=105 limit_two=45 limit_ecg=100 limit_image=110
fi

stage() {  # stage NAME LIMIT CMD...: run CMD under a time limit, keep its output and exit code
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.out" 2>"$out/$name.err"
  local rc=$?
  printf '{"rc": %d, "seconds": %d, "limit_s": %d}\n' "$rc" $((SECONDS - start)) "$limit" \
    >"$out/$name.status.json"
  echo "[gpu_check] $name: exit $rc in $((SECONDS - start)) s" >&2
}

"$py" -c "import torch; print(torch.__version__); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')" \
  >"$out/device.txt" 2>&1
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv >>"$out/device.txt"

if "$py" -c "import pytest" 2>/dev/null; then
  stage tests "$limit_tests" "$py" -m pytest -q -m gpu -p no:cacheprovider \
    --junitxml="$out/tests.xml" "$here/tests/test_gpu.py"
else
  echo '{"rc": null, "skipped": "pytest is not installed here"}' >"$out/tests.status.json"
fi

stage bench "$limit_bench" "$py" -m jepactl bench "$bench_recipe" --precision bf16 --json "${bench_args[@]}"

stage two_processes "$limit_two" "$py" -m accelerate.commands.launch --multi_gpu --num_processes 2 \
  --num_machines 1 --mixed_precision no --dynamo_backend no -m jepactl pretrain \
  image/ijepa-cpu --out "$out/two-processes" --max-steps 20 --quiet --json "${small[@]}"

stage ecg "$limit_ecg" "$py" -m jepactl pretrain "$ecg_recipe" --out "$out/ecg" --max-steps "$steps" \
  --quiet --json "${ecg_small[@]}" eval.every=0
stage image "$limit_image" "$py" -m jepactl pretrain "$image_recipe" --data builtin:shapes \
  --out "$out/image" --max-steps "$steps" --quiet --json "${small[@]}" eval.every=0

"$py" "$here/benchmarks/perf/gpu_check_summary.py" "$out" | tee "$out/gpu_check.json"
