"""The trainer's use of online probes: starting them (with their step-0 and raw-input
baselines) and keeping the best checkpoint by their score (or, without them, by the loss)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from jepactl.checkpoint import save_best_checkpoint
from jepactl.evaluate.online import OnlineProbe, resolve_every


def start_online_probe(recipe, run_dir: Path, total: int, accelerator, progress, step0):
    """Return (the run's online probe or None, its period in steps); say once why there is none.

    ``step0`` is None on a resumed run, else (the encoder the probes score, the precision):
    the raw-input and step-0 baselines are measured on it here, before the first step, once
    per run; a resumed run keeps the first ones.
    """
    every = resolve_every(recipe.eval.every, recipe.train.log_every, total)
    if not every or not accelerator.is_main_process:
        return None, every
    data = getattr(getattr(recipe, "data", None), "path", None)
    online, why = OnlineProbe.for_run(recipe, data, recipe.eval)
    if online is None:
        progress.message(f"no online probe: {why}")
        return None, every
    online.materialise()
    if step0 is not None:
        online.measure_baselines(*step0)
    online.write(run_dir, every)
    return online, every


class BestCheckpoint:
    """Keeps ``checkpoints/best.safetensors`` at the best value of ``eval.select``.

    Candidates: every record carrying an online probe's score, or without one the logged loss
    at each checkpoint step. A resumed run starts from the best of its earlier records.
    """

    def __init__(self, recipe, online: bool, earlier: list[dict]) -> None:
        select = recipe.eval.select
        self.metric = (
            select if select != "auto" else ("online_linear_accuracy" if online else "loss")
        )
        self.higher = not self.metric.endswith("loss")
        self.online = online
        self.checkpoint_every, self.total = recipe.train.checkpoint_every, recipe.train.max_steps
        self.value: float | None = None
        for record in earlier:
            step = record.get("step", 0)
            self.improves(record, step % self.checkpoint_every == 0 or step == self.total)

    def improves(self, record: dict, checkpointed: bool) -> bool:
        """Whether ``record`` beats the best so far (and becomes it): a scored online probe, or
        without one the loss at a checkpoint step."""
        value = record.get(self.metric)
        if value is None or (not self.online and not checkpointed):
            return False
        if self.value is not None and (value <= self.value if self.higher else value >= self.value):
            return False
        self.value = float(value)
        return True

    def save(self, checkpoint_dir: Path, step: int, model: nn.Module) -> None:
        state = {"model": model.state_dict(), "step": step}
        save_best_checkpoint(checkpoint_dir, step, state, self.metric, float(self.value))
