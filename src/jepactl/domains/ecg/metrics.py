"""ECG metrics: per-class sensitivity and PPV, macro-F1 and balanced accuracy for beats
(AAMI EC57 reporting; plain accuracy hides the rare S, V and F classes), macro AUC for
multi-label record tasks (as sklearn's ``roc_auc_score(average="macro")`` in ECG-JEPA).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def confusion_matrix(
    pred: torch.Tensor, labels: torch.Tensor, classes: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the (true, predicted) count matrix; ``weights`` count each item that many times."""
    w = torch.ones(len(labels)) if weights is None else weights.float()
    matrix = torch.zeros(classes * classes)
    matrix.index_add_(0, labels.long() * classes + pred.long(), w)
    return matrix.reshape(classes, classes)


def beat_metrics(
    pred: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """Return sensitivity/PPV per class, macro-F1 and balanced accuracy over present classes.

    A class absent from ``labels`` has no sensitivity and is left out of the macro averages
    (AAMI reports do the same for Q on DS2 when it has no beats). PPV of a class never
    predicted is 0.
    """
    cm = confusion_matrix(pred, labels, len(classes), weights)
    true = cm.sum(1)
    predicted = cm.sum(0)
    hits = cm.diag()
    out: dict[str, float] = {}
    f1s, recalls = [], []
    for i, name in enumerate(classes):
        if true[i] <= 0:
            continue
        sens = float(hits[i] / true[i])
        ppv = float(hits[i] / predicted[i]) if predicted[i] > 0 else 0.0
        out[f"sens_{name}"] = sens
        out[f"ppv_{name}"] = ppv
        f1s.append(2 * sens * ppv / (sens + ppv) if sens + ppv > 0 else 0.0)
        recalls.append(sens)
    out["macro_f1"] = float(np.mean(f1s))
    out["balanced_accuracy"] = float(np.mean(recalls))
    out["accuracy"] = float(hits.sum() / cm.sum())
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Return the area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """Return (mean AUC over classes with positives and negatives, how many classes counted)."""
    s, t = scores.float().numpy(), targets.numpy() > 0.5
    aucs = [roc_auc(s[:, k], t[:, k]) for k in range(t.shape[1])]
    valid = [a for a in aucs if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), len(valid)


def average_by_group(logits: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """Return the mean of each group's rows (sliding crops of one record -> one logit row)."""
    sums = torch.zeros(count, logits.shape[1]).index_add_(0, groups, logits.float())
    sizes = torch.zeros(count).index_add_(0, groups, torch.ones(len(groups)))
    return sums / sizes.clamp_min(1)[:, None]
