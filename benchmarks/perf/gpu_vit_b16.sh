#!/usr/bin/env bash
# The one prepared GPU check of the performance issue: `jepactl bench` for I-JEPA ViT-B/16 at
# 224 px in bf16 (recipe image/ijepa: batch 128 per GPU as the reference, predictor 384 x 6,
# 8 loader workers), reporting samples/s, the step breakdown, and MFU against both the matmul
# rate measured in the same run (`mfu`) and the card's data-sheet bf16 dense peak
# (`mfu_vs_spec`; 989.4 TFLOP/s for an H100 SXM). Target: mfu_vs_spec >= 0.40.
#
# Runs from a source checkout without installing: the device image already has torch, timm,
# accelerate, typer, rich, safetensors and pyyaml; `datasets` is only imported for real data.
# Through the device tool, one call of about 3 minutes:
#   run(command="bash benchmarks/perf/gpu_vit_b16.sh", timeout_s=420)
# Writes $OUT/gpu.txt, $OUT/bench-vitb16-bf16.json and $OUT/bench-vitb16-bf16-compile.json.
set -euo pipefail
out=${OUT:-${1:-runs/gpu}}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/gpu.txt"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv | tee -a "$out/gpu.txt"
python3 -m jepactl bench image/ijepa --precision bf16 --steps 20 --warmup 10 --repeats 3 \
  --json | tee "$out/bench-vitb16-bf16.json"
# torch.compile is a recipe key and was slower on CPU; on the GPU it is measured, not assumed.
python3 -m jepactl bench image/ijepa --precision bf16 --steps 20 --warmup 10 --repeats 3 \
  --json train.compile=true | tee "$out/bench-vitb16-bf16-compile.json"
