"""Experiment trackers through Accelerate: ``train.trackers: [tensorboard, wandb, ...]``.

The trainer hands each name to ``Accelerator(log_with=...)``; the trackers write under
``RUN/trackers/`` (TensorBoard event files, MLflow's store; W&B and trackio keep their own
places too), get the resolved recipe as hyper-parameters (``section.key`` names) and, at every
``train.log_every`` step, the same scalars as ``metrics.jsonl``. ``metrics.jsonl`` stays the
record of truth: a tracker is a view of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from jepactl.errors import UserError
from jepactl.typed_config import to_dict

# Tracker name (Accelerate's) -> the package it needs, which is also the jepactl extra's name.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "trackio": "trackio",
}


def check_trackers(names: list[str]) -> list[str]:
    """Return ``names`` if each is known and installed; else one UserError naming the fix."""
    for name in names:
        if name not in TRACKER_PACKAGES:
            raise UserError(
                f"recipe key 'train.trackers': unknown tracker '{name}' "
                f"(known: {', '.join(TRACKER_PACKAGES)})"
            )
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise UserError(
                f'train.trackers: {name} is not installed: pip install "jepactl[{name}]"'
            )
    return list(names)


def hyperparameters(recipe) -> dict[str, Any]:
    """The resolved recipe as flat ``section.key`` -> int, float, str or bool (lists and None as
    text: TensorBoard's hparams take scalars only)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    walk("", to_dict(recipe))
    return flat


def tracker_folder(run_dir: Path) -> Path:
    return run_dir / "trackers"


def start_trackers(accelerator, names: list[str], run_dir: Path, recipe) -> None:
    """Open the trackers for this run (named after its folder) with the recipe as config."""
    if not names:
        return
    folder = tracker_folder(run_dir)
    init_kwargs = {"wandb": {"dir": str(folder)}} if "wandb" in names else {}
    accelerator.init_trackers(run_dir.name, config=hyperparameters(recipe), init_kwargs=init_kwargs)
