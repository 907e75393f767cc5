"""Classification metrics computed from integer predictions and labels."""

from __future__ import annotations

import torch


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())


def balanced_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the mean per-class recall over the classes present in ``labels``."""
    recalls = [float((pred[labels == c] == c).float().mean()) for c in labels.unique()]
    return sum(recalls) / len(recalls)
