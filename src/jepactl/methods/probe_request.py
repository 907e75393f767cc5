"""What ``jepactl probe`` was asked to do; methods with their own protocol read the same object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jepactl.errors import UserError


@dataclass
class ProbeRequest:
    run: Path
    data: str | None = None  # labelled training data (default: the run's data)
    test: str | None = None  # labelled test data (default: test split or a seeded split)
    labels_fraction: float = 1.0
    random_init: bool = False
    which: str | None = None  # target (EMA) or context encoder
    seeds: int = 1  # repeat seeded parts (label subsets, few-shot draws, heads) N times
    shots: int | None = None  # few-shot: labelled samples per class
    target: str | None = None  # tabular: target column
    task: str | None = None  # classification, regression or multilabel (detected when None)
    head: str | None = None  # method-specific: e.g. linear, attentive, mlp, all
    overrides: list[str] = field(default_factory=list)  # probe.key=value
    labels: str | None = None  # a label CSV for data and test: record,label (ECG), file,label
    views: str | None = None  # views aggregated per image, "1,3,5" (seq-JEPA)
    rollouts: int | None = None  # closed-loop episodes in the simulator (policies)
    checkpoint: str = "last"  # a run's checkpoint: last, best (online probe) or a step number

    def given_options(self, *options: str) -> list[str]:
        """Return which of ``options`` (``--test``, ``--shots``, ...) the user gave, in order."""
        values = {
            "--data": self.data,
            "--test": self.test,
            "--shots": self.shots,
            "--target": self.target,
            "--task": self.task,
            "--head": self.head,
            "--which": self.which,
            "--labels-fraction": None if self.labels_fraction == 1.0 else self.labels_fraction,
            "--labels": self.labels,
            "--views": self.views,
            "--rollouts": self.rollouts,
            "--checkpoint": None if str(self.checkpoint).strip() == "last" else self.checkpoint,
        }
        return [option for option in options if values[option] is not None]

    def refuse_options(self, *options: str, probe: str, why: str) -> None:
        """Raise "``probe`` does not use --x, --y: ``why``" if any of ``options`` was given."""
        given = self.given_options(*options)
        if given:
            raise UserError(f"{probe} does not use {', '.join(given)}: {why}")
