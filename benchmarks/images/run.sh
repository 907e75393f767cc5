#!/usr/bin/env bash
# I-JEPA on MNIST (class folders) and CIFAR-10 (HF parquet): pretrain image/ijepa-cpu, then linear and
# kNN probes of the pretrained encoder and of a random-init encoder of the same shape.
# Usage: bash benchmarks/images/run.sh [STEPS]   (from the repository root; ../shared/data beside it)
set -euo pipefail
steps=${1:-400}
data=../shared/data/images
common=(--max-steps "$steps" train.batch_size=64 train.checkpoint_every=100 optim.warmup_steps=40)

/usr/bin/time -v jepactl pretrain image/ijepa-cpu --data $data/mnist/train --out runs/bench-mnist "${common[@]}"
jepactl probe runs/bench-mnist --data $data/mnist/train --test $data/mnist/test --json
jepactl probe runs/bench-mnist --data $data/mnist/train --test $data/mnist/test --random-init --json

/usr/bin/time -v jepactl pretrain image/ijepa-cpu --data $data/cifar10 --out runs/bench-cifar "${common[@]}"
jepactl probe runs/bench-cifar --json                 # CIFAR's own train (30k) / test (10k) splits
jepactl probe runs/bench-cifar --random-init --json
