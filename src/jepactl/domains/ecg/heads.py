"""ECG evaluation: linear probe, attentive probe and fine-tuning, with the metrics ECG papers use.

``jepactl probe RUN`` on an ECG-JEPA run lands here (``run_probe``). The encoder is evaluated
on ``probe.crop_seconds`` windows (ECG-JEPA: 2.5 s, the same weights with a shorter position
table): a window centred on each annotated beat, or sliding crops over each record (stride
``probe.crop_stride_seconds``) whose logits are averaged per record.

Heads (``--head linear,attentive,finetune`` or ``all``; default ``probe.heads``):

* ``linear``: L2-regularised logistic regression (softmax, or one-vs-rest for multi-label) on
  frozen, standardised pooled features; for beats the pooled vector is the mean of all tokens
  joined with the mean of the tokens over the centre beat (+-0.1 s), because the label belongs
  to the centre beat and a window also holds its neighbours. L2 is chosen on 10% of the
  training windows.
* ``attentive``: the paper's frozen-encoder attentive probe (attentive_probe.py).
* ``finetune``: encoder + attentive head trained end to end (the paper's
  finetune-after-linear schedule: warmup, cosine, no weight decay). With ``--random-init`` it
  is the same model trained from scratch with labels.

Beat classes are imbalanced (MIT-BIH DS1: 45,866 N vs 415 F), so trainable heads use
class-balanced loss weights (``probe.class_balanced``), and ``probe.max_train_per_class`` /
``probe.max_test_per_class`` cap windows per class. Capped test windows carry weights (count
/ kept) so sensitivity, PPV, F1 and balanced accuracy estimate the full test set's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from jepactl.domains.ecg.metrics import beat_metrics, macro_auc
from jepactl.evaluate.attentive_probe import (
    AttentiveClassifier,
    classification_loss,
    train_classifier,
)
from jepactl.evaluate.probe import fit_logistic, standardise_and_hold_out
from jepactl.micro_batch import loader_workers
from jepactl.precision import autocast as autocast_for
from jepactl.recipe import ProbeConfig

HEADS = ("linear", "attentive", "finetune")


@dataclass
class ECGProbeConfig(ProbeConfig):
    """ECG-JEPA evaluation (configs/eval/{linear,finetune_after_linear}.yaml of the paper)."""

    heads: tuple[str, ...] = ("linear", "attentive")
    crop_seconds: float = 2.5
    crop_stride_seconds: float = 1.25
    max_train_per_class: int = 0  # 0: every window
    max_test_per_class: int = 0
    class_balanced: bool = True
    num_workers: int = 2
    attentive_steps: int = 5000
    attentive_batch_size: int = 128
    attentive_lr: float = 1e-3
    attentive_weight_decay: float = 0.1
    finetune_steps: int = 5000
    finetune_batch_size: int = 128
    finetune_lr: float = 1e-4
    finetune_final_lr: float = 1e-6
    finetune_warmup_steps: int = 200
    finetune_weight_decay: float = 0.0


@torch.no_grad()
def encode_tokens(
    encoder: nn.Module, dataset, batch_size: int, num_workers: int, precision: str = "bf16"
) -> torch.Tensor:
    """Return the encoder's final patch tokens (N, T, D) as bfloat16, in dataset order."""
    encoder = encoder.eval()
    device = next(encoder.parameters()).device
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(num_workers)
    )
    autocast = autocast_for(device, precision)
    out = []
    for signals, _ in loader:
        with autocast:
            out.append(encoder(signals.to(device)).to(torch.bfloat16).cpu())
    return torch.cat(out)


def cached_tokens(
    encoder, dataset, cache_dir, key: str, cfg: ECGProbeConfig, precision: str = "bf16"
) -> torch.Tensor:
    """Return ``encode_tokens`` results, reusing ``cache_dir/ecg-tokens-<hash>.pt``."""
    if cache_dir is None:
        return encode_tokens(encoder, dataset, cfg.batch_size, cfg.num_workers, precision)
    digest = hashlib.sha1(
        f"{key}|{len(dataset)}|{dataset.windows[:3]}|{dataset.windows[-3:]}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"ecg-tokens-{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    tokens = encode_tokens(encoder, dataset, cfg.batch_size, cfg.num_workers, precision)
    from jepactl.checkpoint import atomic_save

    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(tokens, path)
    return tokens


def pooled_features(tokens: torch.Tensor, beats: bool, centre_tokens: int) -> torch.Tensor:
    """Return (N, D) mean tokens, or (N, 2D) mean + centre-beat mean for beat windows."""
    x = tokens.float()
    mean = x.mean(dim=1)
    if not beats:
        return mean
    mid, half = x.shape[1] // 2, max(1, centre_tokens // 2)
    return torch.cat([mean, x[:, mid - half : mid + half].mean(dim=1)], dim=1)


def fit_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    multilabel: bool,
    class_weights: torch.Tensor | None,
    l2: float,
    max_iter: int = 300,
) -> nn.Linear:
    """Return a linear classifier fitted by full-batch L-BFGS with an L2 penalty."""
    return fit_logistic(x, y, classes, l2, max_iter, classification_loss(multilabel, class_weights))


def score_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    multilabel: bool,
    classes: list[str],
    weights: torch.Tensor | None,
) -> tuple[float, dict[str, float]]:
    """Return (selection score, metrics): macro AUC for multi-label, else balanced accuracy."""
    if multilabel:
        auc, counted = macro_auc(torch.sigmoid(logits), labels)
        return auc, {"macro_auc": auc, "auc_classes": counted}
    metrics = beat_metrics(logits.argmax(1), labels, classes, weights)
    if len(classes) > 1:
        one_hot = F.one_hot(labels, len(classes)).float()
        metrics["macro_auc"] = macro_auc(torch.softmax(logits.float(), 1), one_hot)[0]
    return metrics["balanced_accuracy"], metrics


def linear_head(train_x, train_y, test_x, multilabel, classes, class_weights, seed):
    """Return test logits of the linear probe, L2 chosen on a seeded 10% validation split."""
    train_x, test_x, val, fit = standardise_and_hold_out(train_x, test_x, seed)
    best, best_score = 1e-3, -1.0
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        head = fit_linear(train_x[fit], train_y[fit], len(classes), multilabel, class_weights, l2)
        with torch.no_grad():
            score, _ = score_logits(head(train_x[val]), train_y[val], multilabel, classes, None)
        if score > best_score:
            best, best_score = l2, score
    head = fit_linear(train_x, train_y, len(classes), multilabel, class_weights, best)
    with torch.no_grad():
        return head(test_x)


def _token_batches(tokens: torch.Tensor, labels: torch.Tensor, batch_size: int):
    def draw(gen: torch.Generator):
        idx = torch.randint(0, len(tokens), (batch_size,), generator=gen)
        return tokens[idx].float(), labels[idx]

    return draw


def window_batches(dataset, batch_size: int):
    def draw(gen: torch.Generator):
        idx = torch.randint(0, len(dataset), (batch_size,), generator=gen).tolist()
        return torch.stack([dataset[i][0] for i in idx]), dataset.labels[idx]

    return draw


class FinetuneModel(nn.Module):
    def __init__(self, encoder: nn.Module, head: AttentiveClassifier) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(signals))


def attentive_head(
    setup,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    multilabel: bool,
    class_weights: torch.Tensor | None,
    seed: int,
) -> AttentiveClassifier:
    """Return the attentive probe trained on frozen ``tokens`` (the paper's "linear" protocol)."""
    cfg = setup.recipe.probe
    torch.manual_seed(seed)
    model = AttentiveClassifier(setup.encoder.embed_dim, setup.encoder.config.num_heads, classes)
    return train_classifier(
        model,
        _token_batches(tokens, labels, cfg.attentive_batch_size),
        classification_loss(multilabel, class_weights),
        cfg.attentive_steps,
        cfg.attentive_lr,
        cfg.attentive_weight_decay,
        seed=seed,
        precision=setup.recipe.train.precision,
    )


@torch.no_grad()
def encode_logits(
    model: nn.Module, dataset, cfg: ECGProbeConfig, precision: str = "bf16"
) -> torch.Tensor:
    """Return the fine-tuned model's logits for every window of ``dataset``."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=loader_workers(cfg.num_workers),
    )
    out = []
    for signals, _ in loader:
        with autocast_for(device, precision):
            out.append(model(signals.to(device)).float().cpu())
    return torch.cat(out)
