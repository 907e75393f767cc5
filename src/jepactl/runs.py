"""Run folders: where a run's recipe, metrics, checkpoints and environment live.

Layout: ``recipe.yaml`` (fully resolved), ``metrics.jsonl``,
``checkpoints/step-00000123.safetensors`` (the newest ``checkpoint.keep``; see checkpoint.py),
``checkpoints/best.safetensors`` (where the run has an online probe: its best step),
``env.json``, and after ``jepactl export``: ``export/model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jepactl.checkpoint import (
    BEST_NAME,
    atomic_write_text,
    checkpoint_choice,
    find_checkpoints,
    load_checkpoint_choice,
    load_model_state,
)
from jepactl.errors import UserError
from jepactl.recipe import Recipe, dump_recipe, read_yaml, recipe_from_dict

CHECKPOINT_DIR = Path("checkpoints")


def default_run_dir(recipe: Recipe) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe.name.replace('/', '-')}-{stamp}"


def write_run_files(
    run_dir: Path, recipe: Recipe, world_size: int, device: str, setup: dict[str, Any] | None = None
) -> None:
    """Write recipe.yaml and env.json; ``setup`` is what the trainer chose for this machine
    (micro-batch, accumulation, loader workers), kept in env.json and noted in recipe.yaml,
    whose ``auto`` keys stay ``auto`` so that the recipe adapts on the next machine."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = dump_recipe(recipe)
    micro = (setup or {}).get("micro_batch")
    if micro:
        text += (
            f"# chosen on {socket.gethostname()} for this run: train.micro_batch_size="
            f"{micro['micro_batch_size']} ({micro['accumulation']} micro-batch(es) per "
            f"optimizer step, {micro['chosen_by']}); train.num_workers="
            f"{setup.get('num_workers')}\n"
        )
    atomic_write_text(text, run_dir / "recipe.yaml")
    atomic_write_text(
        json.dumps({**environment(world_size, device), **(setup or {})}, indent=2) + "\n",
        run_dir / "env.json",
    )


SLURM_KEYS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_JOB_NODELIST",
    "SLURM_NNODES",
    "SLURM_NODEID",
)


def environment(world_size: int, device: str) -> dict[str, Any]:
    """Return versions, device and git state, enough to tell two runs' setups apart."""
    import timm

    from jepactl.version import __version__

    env = {
        "jepactl": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "world_size": world_size,
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # The scheduler's job, so a requeued run's env.json says which job wrote it.
        "slurm": {k: os.environ[k] for k in SLURM_KEYS if k in os.environ} or None,
    }
    source = Path(__file__).resolve().parent
    try:
        env["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        env["git_dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain"],
                cwd=source,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def is_run_dir(path: Path) -> bool:
    return (path / "recipe.yaml").is_file()


def read_run_recipe(run_dir: Path) -> Recipe:
    if not run_dir.exists():
        raise UserError(f"run folder '{run_dir}' does not exist")
    if not is_run_dir(run_dir):
        raise UserError(f"'{run_dir}' is not a run folder (no recipe.yaml)")
    return recipe_from_dict(read_yaml(run_dir / "recipe.yaml"))


@dataclass
class TrainedMethod:
    """A run's method with one checkpoint's weights, and which checkpoint that was."""

    recipe: Recipe
    method: Any  # the method's nn.Module, in eval mode
    step: int
    path: Path  # the checkpoint file loaded
    selected_by: dict[str, Any] | None  # best.safetensors: {"metric", "value"}; else None

    @property
    def is_best(self) -> bool:
        return self.path.name == BEST_NAME


def open_trained_method(
    run_dir: Path, recipe: Recipe | None = None, checkpoint: str = "last"
) -> TrainedMethod:
    """Return the run's method with the weights of ``checkpoint``: "last" (the newest readable
    step checkpoint), "best" (best.safetensors, by the online probe) or a step number as text."""
    from jepactl.registry import method_spec

    choice = checkpoint_choice(checkpoint)  # a malformed choice fails before the model is built
    recipe = recipe or read_run_recipe(run_dir)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    if not find_checkpoints(checkpoint_dir) and not (
        choice == "best" and (checkpoint_dir / BEST_NAME).is_file()
    ):
        raise UserError(
            f"run folder '{run_dir}' has no checkpoint (in {CHECKPOINT_DIR}/); "
            "pretrain it first or resume it with --resume"
        )
    method = method_spec(recipe.method).require("build")(recipe)
    state, path = load_checkpoint_choice(checkpoint_dir, checkpoint)
    load_model_state(method, state["model"], path)
    selected_by = state.get("selected_by") if isinstance(state, dict) else None
    return TrainedMethod(recipe, method.eval(), int(state["step"]), path, selected_by)


def load_trained_method(run_dir: Path, recipe: Recipe | None = None, checkpoint: str = "last"):
    """Return (recipe, method with the weights of ``checkpoint``, the loaded checkpoint's step).

    ``checkpoint``: "last" (the newest readable checkpoint), "best" or a step number as text;
    see ``open_trained_method``.
    """
    trained = open_trained_method(run_dir, recipe, checkpoint)
    return trained.recipe, trained.method, trained.step
