"""Labelled ECG windows for probes: beats centred in a crop, or each record's sliding crops.

Splits: beat labels split by record name (``data.train_records`` / ``data.test_records``, the
MIT-BIH inter-patient DS1/DS2 by default); PTB-XL by ``strat_fold`` (train 1-8, val 9, test
10); header codes and CSV labels by a seeded 80/20 split of the records (seed 0), so the same
record never lands in both.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from jepactl.domains.ecg.labels import (
    AAMI_CLASSES,
    RecordLabels,
    csv_labels,
    detect_label_kind,
    dx_labels,
    ptbxl_labels,
    read_beats,
)
from jepactl.domains.ecg.records import (
    ECGDataConfig,
    ECGWindowDataset,
    ECGWindowReader,
    sliding_starts,
)
from jepactl.domains.ecg.wfdb import ECGSource
from jepactl.errors import DataError

_PTBXL_FOLDS = {"train": set(range(1, 9)), "val": {9}, "test": {10}}
_TEST_FRACTION = 0.2


def with_label_csv(recipe, labels: str | None):
    """Return ``recipe`` reading its labels from the ``record,label`` CSV ``labels`` (if given).

    ``jepactl probe --labels FILE`` is ``data.labels=csv data.label_csv=FILE`` at probe time.
    """
    if labels is None:
        return recipe
    return replace(recipe, data=replace(recipe.data, labels="csv", label_csv=str(labels)))


def label_kind(source: ECGSource, cfg: ECGDataConfig) -> str | None:
    if cfg.labels not in ("auto", "beats", "dx", "ptbxl", "csv"):
        raise DataError(f"data.labels must be auto, beats, dx, ptbxl or csv, got '{cfg.labels}'")
    return detect_label_kind(source, cfg.label_csv) if cfg.labels == "auto" else cfg.labels


def _records_in(source: ECGSource, names: tuple[str, ...]) -> list[int]:
    wanted = set(names)
    return [
        i for i, r in enumerate(source.records) if r.name in wanted or Path(r.name).name in wanted
    ]


def split_exists(source: ECGSource, cfg: ECGDataConfig, split: str) -> bool:
    """Return whether the labelled data has records in ``split`` (train, val or test)."""
    kind = label_kind(source, cfg)
    if kind == "beats":
        names = {"train": cfg.train_records, "test": cfg.test_records}.get(split, ())
        return bool(_records_in(source, names))
    if kind == "ptbxl":
        return split in _PTBXL_FOLDS
    return kind is not None and split in ("train", "test")


def _record_labels(source: ECGSource, cfg: ECGDataConfig, kind: str) -> RecordLabels:
    if kind == "dx":
        return dx_labels(source)
    if kind == "ptbxl":
        if cfg.ptbxl_task not in ("all", "superdiagnostic"):
            raise DataError(
                f"data.ptbxl_task must be all or superdiagnostic, got '{cfg.ptbxl_task}'"
            )
        return ptbxl_labels(source, cfg.ptbxl_task, cfg.sample_rate)
    if not cfg.label_csv:
        raise DataError("data.labels=csv needs data.label_csv (a record,label file)")
    return csv_labels(source, cfg.label_csv)


def _rows_in_split(labels: RecordLabels, split: str | None) -> list[int]:
    rows = list(range(len(labels.records)))
    if split is None:
        return rows
    if labels.folds is not None:
        if split not in _PTBXL_FOLDS:
            raise DataError(f"unknown split '{split}' (PTB-XL has train, val, test)")
        return [r for r in rows if labels.folds[r] in _PTBXL_FOLDS[split]]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    cut = int(round(len(rows) * (1 - _TEST_FRACTION)))
    chosen = order[:cut] if split == "train" else order[cut:]
    return sorted(chosen)


def records_in_split(source: ECGSource, cfg: ECGDataConfig, split: str) -> list[int]:
    """Return the indices of the records in ``split``; all records when the data has no labels."""
    kind = label_kind(source, cfg)
    if kind is None:
        return list(range(len(source.records)))
    if kind == "beats":
        names = {"train": cfg.train_records, "test": cfg.test_records}.get(split, ())
        return _records_in(source, names)
    labels = _record_labels(source, cfg, kind)
    return sorted(labels.records[r] for r in _rows_in_split(labels, split))


def beat_windows(
    source: ECGSource, cfg: ECGDataConfig, records: list[int], seconds: float
) -> ECGWindowDataset:
    """Return one window of ``seconds`` centred on each AAMI beat of ``records``."""
    n = cfg.samples(seconds)
    windows, labels = [], []
    for index in records:
        fs = source.records[index].fs
        for beat in read_beats(source, index):
            windows.append((index, beat.sample / fs - n / (2 * cfg.sample_rate)))
            labels.append(beat.label)
    if not windows:
        raise DataError(f"no annotated beats in the selected records under '{source.root}'")
    return ECGWindowDataset(
        ECGWindowReader(source, cfg), windows, torch.tensor(labels), list(AAMI_CLASSES), n
    )


def labelled_windows(
    source: ECGSource,
    cfg: ECGDataConfig,
    split: str | None,
    crop_seconds: float,
    stride_seconds: float,
) -> ECGWindowDataset:
    """Return the ``split`` (None: everything) as labelled windows of ``crop_seconds``.

    Beat data: one window per beat. Record labels: sliding crops per record, with ``groups``
    and ``group_labels`` for averaging logits per record. No labels: sliding crops labelled -1.
    """
    kind = label_kind(source, cfg)
    n = cfg.samples(crop_seconds)
    if kind == "beats":
        if split is None:
            records = list(range(len(source.records)))
        else:
            names = {"train": cfg.train_records, "test": cfg.test_records}.get(split)
            if names is None:
                raise DataError(f"beat labels have splits train and test, not '{split}'")
            records = _records_in(source, names)
            if not records:
                raise DataError(
                    f"none of the {split} records (data.{split}_records) is under '{source.root}'"
                )
        dataset = beat_windows(source, cfg, records, crop_seconds)
        dataset.group_labels = dataset.labels
        return dataset
    if kind is None:
        records, targets, classes = list(range(len(source.records))), None, []
    else:
        labels = _record_labels(source, cfg, kind)
        rows = _rows_in_split(labels, split)
        records = [labels.records[r] for r in rows]
        targets, classes = torch.as_tensor(labels.targets[rows]), labels.classes
    windows, groups = [], []
    for group, index in enumerate(records):
        for start in sliding_starts(
            source.records[index].seconds, n / cfg.sample_rate, stride_seconds
        ):
            windows.append((index, start))
            groups.append(group)
    groups_t = torch.tensor(groups, dtype=torch.long)
    if targets is None:
        targets = torch.full((len(records),), -1, dtype=torch.long)
    dataset = ECGWindowDataset(
        ECGWindowReader(source, cfg), windows, targets[groups_t], classes, n, groups_t
    )
    dataset.group_labels = targets
    return dataset


def subsample_per_class(dataset: ECGWindowDataset, cap: int, seed: int) -> ECGWindowDataset:
    """Return at most ``cap`` single-label windows per class, with inverse-fraction weights.

    ``weights`` lets metrics count each kept window for the windows it stands in for, so a
    confusion matrix over the subsample estimates the one over every window (without bias).
    """
    labels = dataset.labels
    if cap <= 0 or labels.ndim != 1:
        dataset.weights = torch.ones(len(dataset.group_labels))
        return dataset
    gen = torch.Generator().manual_seed(seed)
    keep, weights = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        chosen = idx[torch.randperm(len(idx), generator=gen)[:cap]]
        keep.append(chosen)
        weights.append(torch.full((len(chosen),), len(idx) / len(chosen)))
    order = torch.cat(keep).argsort()
    keep_t, weights_t = torch.cat(keep)[order], torch.cat(weights)[order]
    picked = ECGWindowDataset(
        dataset.reader,
        [dataset.windows[i] for i in keep_t.tolist()],
        labels[keep_t],
        dataset.classes,
        dataset.n,
    )
    picked.group_labels, picked.weights = picked.labels, weights_t
    return picked


def class_counts(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    if labels.ndim == 2:
        return {c: int(v) for c, v in zip(classes, labels.sum(0).tolist())}
    return {c: int((labels == i).sum()) for i, c in enumerate(classes)}


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
