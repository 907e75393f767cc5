"""Gradient descent with a fixed learning rate on every model at once, with records and resume.

Time is reported as t = step × lr, the gradient-flow time of methods.md's ODEs, so critical
times compare across learning rates. Each objective has its own fixed learning rate: MAE's
curvature at its fixed point, about λ(L+1)ρ^{2L/(L+1)}, caps its stable step near 0.1–0.4,
while JEPA's, λρ^{2L}, allows about 1; JEPA's plateaus last 10⁴–10⁵ time units, so its larger
step is what makes a run take seconds instead of minutes. Orders are compared within an
objective only (methods.md), so the two clocks never need to agree. Records are taken at
``log_points`` log-spaced steps (the plateaus span decades: early dynamics need every step,
late ones every few percent) plus every ``log_every`` steps; critical times interpolate
between records.

A checkpoint (``checkpoints/step-*.safetensors``: weights, EMA target, step, the records) is
written every ``checkpoint_every`` steps and when SIGTERM/SIGUSR1 arrives; population mode
is deterministic and samples mode draws each epoch's order from (seed, epoch), so a resumed
run continues the same trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from jepactl.domains.linear.deep_linear import DeepLinearModels
from jepactl.domains.linear.features import MiniBatchMoments, Moments
from jepactl.domains.linear.measure import feature_gains, probe_r2


def record_schedule(max_steps: int, log_points: int, log_every: int) -> list[int]:
    """Return the sorted steps to record: 0, ``log_points`` log-spaced steps, every log_every."""
    geometric = np.round(np.geomspace(1, max_steps, max(log_points, 2))).astype(int).tolist()
    linear = range(0, max_steps + 1, log_every)
    return sorted({0, max_steps, *geometric, *linear})


@dataclass
class Trajectory:
    """Recorded steps with, per step, gains (P, d), losses (P,) and probe R² (P,)."""

    steps: list[int] = field(default_factory=list)
    gains: list[np.ndarray] = field(default_factory=list)
    losses: list[np.ndarray] = field(default_factory=list)
    probe: list[np.ndarray] = field(default_factory=list)

    def state(self) -> dict:
        return {
            "steps": list(self.steps),
            "gains": np.array(self.gains),
            "losses": np.array(self.losses),
            "probe": np.array(self.probe),
        }

    @staticmethod
    def from_state(state: dict) -> "Trajectory":
        return Trajectory(
            list(state["steps"]), list(state["gains"]), list(state["losses"]), list(state["probe"])
        )


class Simulation:
    """Advances ``models`` on population moments or on a mini-batch stream, recording as it goes.

    Losses are measured on ``loss_moments`` (the population, or all N pairs in samples mode:
    the training objective's full-data value); the probe on ``probe_moments`` (the population:
    the R² a probe reaches on unlimited held-out data).
    """

    def __init__(
        self,
        models: DeepLinearModels,
        train: Moments | MiniBatchMoments,
        loss_moments: Moments,
        probe_moments: Moments,
        probe_components: int,
    ) -> None:
        self.models, self.train = models, train
        self.eval = loss_moments if models.algebra.diagonal else loss_moments.dense()
        self.probe_eval = probe_moments.dense()
        self.probe_components = probe_components
        self.trajectory = Trajectory()
        self.step = 0

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "step": self.step,
            "names": list(self.models.names),
            "layers": self.models.layers,
            "ema_layers": self.models.ema_layers,
            "trajectory": self.trajectory.state(),
        }

    def load_state(self, state: dict) -> None:
        if list(state["names"]) != list(self.models.names) or (
            state["layers"].shape != self.models.layers.shape
        ):
            raise ValueError("checkpoint models differ from the recipe's")
        self.step = int(state["step"])
        self.models.layers = np.array(state["layers"])
        if state["ema_layers"] is not None:
            self.models.ema_layers = np.array(state["ema_layers"])
        self.trajectory = Trajectory.from_state(state["trajectory"])

    # ------------------------------------------------------------------ records

    def record(self) -> None:
        encoders = self.models.algebra.dense(self.models.encoders())
        e = self.eval
        self.trajectory.steps.append(self.step)
        self.trajectory.gains.append(feature_gains(encoders))
        self.trajectory.losses.append(self.models.losses(e.xx, e.yx, e.yy))
        self.trajectory.probe.append(probe_r2(encoders, self.probe_eval, self.probe_components))

    # ------------------------------------------------------------------ the loop

    def _advance(self, until: int) -> None:
        descend = self.models.descend
        if isinstance(self.train, Moments):
            xx, yx = self.train.xx, self.train.yx
            for _ in range(until - self.step):
                descend(xx, yx)
        else:
            for step in range(self.step, until):
                xx, yx, _ = self.train.at(step)
                descend(xx, yx)
        self.step = until

    def run(
        self,
        max_steps: int,
        schedule: list[int],
        checkpoint_every: int,
        save: Callable[[], None],
        on_progress: Callable[[int], None],
        should_stop: Callable[[], bool],
        stop_at: int | None = None,
    ) -> bool:
        """Run to ``max_steps``; return False when stopped early (saved): by ``should_stop``
        (checked about 100 times a run) or exactly at step ``stop_at``."""
        pending = [s for s in schedule if s > self.step or (s == 0 and not self.trajectory.steps)]
        if pending and pending[0] == self.step:
            self.record()
            pending.pop(0)
        chunk = max(1, max_steps // 100)  # progress and stop checks ~100 times a run
        while self.step < max_steps:
            next_record = pending[0] if pending else max_steps
            next_checkpoint = (self.step // checkpoint_every + 1) * checkpoint_every
            until = min(next_record, next_checkpoint, self.step + chunk, max_steps)
            if stop_at is not None and stop_at > self.step:
                until = min(until, stop_at)
            self._advance(until)
            if pending and self.step == pending[0]:
                self.record()
                pending.pop(0)
            on_progress(self.step)
            if self.step % checkpoint_every == 0 and self.step < max_steps:
                save()
            if should_stop() or self.step == stop_at:
                save()
                return False
        save()
        return True

    # ------------------------------------------------------------------ results

    def times(self) -> np.ndarray:
        """Return each record's gradient-flow time per model, (R, P): step × the model's lr."""
        return np.outer(
            np.asarray(self.trajectory.steps, dtype=np.float64), self.models.learning_rates
        )

    def metrics_lines(self, feature_names: tuple[str, ...]) -> list[dict]:
        """Return one metrics.jsonl object per record: per objective its time, and per model
        its loss, gains and probe R²."""
        lines = []
        t = self.trajectory
        rates = dict(zip(self.models.objectives, self.models.learning_rates))
        for i, step in enumerate(t.steps):
            line: dict = {"step": step}
            line.update({f"{objective}_time": step * float(lr) for objective, lr in rates.items()})
            for p, name in enumerate(self.models.names):
                line[f"{name}_loss"] = float(t.losses[i][p])
                for f, feature in enumerate(feature_names):
                    line[f"{name}_gain_{feature}"] = float(t.gains[i][p, f])
                line[f"{name}_probe_r2"] = float(t.probe[i][p])
            lines.append(line)
        return lines
