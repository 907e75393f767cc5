"""Regression losses between predictions and targets, chosen by the recipe's ``loss.kind``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Return the mean loss: ``smooth_l1`` (Huber, beta 1; I-JEPA), ``l1`` (ECG-JEPA), ``mse``,
    or ``cosine``: 1 - cosine similarity over the last dimension (seq-JEPA)."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(predicted, target)
    if kind == "l1":
        return F.l1_loss(predicted, target)
    if kind == "mse":
        return F.mse_loss(predicted, target)
    if kind == "cosine":
        return (1 - F.cosine_similarity(predicted, target, dim=-1)).mean()
    raise ValueError(f"unknown loss kind {kind!r}")
