"""Shared test fixtures: the shared real-data folder and tiny recipes that train in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Two cores: keep the test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Overrides that shrink image/ijepa-cpu to a model that trains a step in well under a second.
TINY_IMAGE_OVERRIDES = [
    "data.image_size=16",
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "mask.min_keep=2",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.log_every=1",
    "train.precision=fp32",
    "optim.warmup_steps=2",
]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pretrain_error(recipe: str, data: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `jepactl pretrain RECIPE --data DATA` (one step) in a fresh process and return it;
    for the tests of bad input, which must stop with exit 2 and one line on stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    args = [
        "pretrain",
        recipe,
        "--data",
        str(data),
        "--max-steps",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "jepactl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
