"""What ``jepactl probe`` was asked to do; methods with their own protocol read the same object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
