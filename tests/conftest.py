"""Shared test fixtures: the shared real-data folder and tiny recipes that train in seconds."""

from __future__ import annotations

import os
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
