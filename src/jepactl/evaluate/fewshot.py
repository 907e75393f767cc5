"""Few-shot classification: K labelled samples per class, repeated over seeds, mean and std.

SAR-JEPA's protocol (waterdisappear/SAR-JEPA few_shot_classification, Dassl ``MIM_linear`` and
``MIM_finetune``; methods.md §3): for each seed, draw K training samples per class, train a head
``BatchNorm1d(D, affine=False) + Linear`` (weights trunc-normal 0.01) with AdamW (lr 1e-3, wd
5e-4, batch 50) for 40 epochs, the first 2 at a constant 1e-5, then cosine; report accuracy on
the whole test split. Fine-tuning trains the encoder and the same head with the same optimizer.

Linear probing trains on frozen features, so the features of the train and test splits are
computed once (and cached in the run folder) and every seed only trains a head: seeds cost
milliseconds. Features are the mean of the final tokens (``encoder.pooled``), where the
reference uses a cls token, which jepactl's encoders do not have.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from jepactl.data.label_files import label_file_digest
from jepactl.errors import UserError
from jepactl.evaluate.features import cached_features, default_device
from jepactl.evaluate.metrics import accuracy
from jepactl.evaluate.probe import class_counts, knn_predict
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import Subset, labelled_splits, request_encoder
from jepactl.methods.probe_request import ProbeRequest
from jepactl.micro_batch import loader_workers
from jepactl.precision import autocast as autocast_for
from jepactl.recipe import ProbeConfig, Recipe
from jepactl.schedules import cosine

HEADS = ("linear", "finetune", "all")


@dataclass
class FewShotProbeConfig(ProbeConfig):
    """Few-shot probe settings; ``jepactl probe --shots K --seeds S --head linear|finetune|all``."""

    shots: int = 10  # labelled samples per class when --shots is not given; 0 uses all
    head: Literal["linear", "finetune", "all"] = "linear"  # when --head is not given
    epochs: int = 40
    head_batch_size: int = 50
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 2  # constant warmup (Dassl ConstantWarmupScheduler)
    warmup_lr: float = 1e-5
    finetune_epochs: int = 40
    finetune_lr: float = 1e-3  # SAR-JEPA uses the linear probe's optimizer for fine-tuning
    finetune_weight_decay: float = 5e-4


class BatchNormLinearHead(nn.Module):
    """SAR-JEPA's probe head: parameter-free BatchNorm, then a linear classifier."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


def draw_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Return sorted indices of ``shots`` samples per class (all of a smaller class), seeded."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        picked.append(idx if shots <= 0 else idx[:shots])
    return torch.cat(picked).sort().values


def epoch_lr(epoch: int, cfg: FewShotProbeConfig, base_lr: float, epochs: int) -> float:
    """Return the learning rate of ``epoch``: constant warmup, then cosine over all epochs."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return cosine(epoch / epochs, base_lr, 0.0)


def train_head(
    features: torch.Tensor, labels: torch.Tensor, classes: int, cfg: FewShotProbeConfig, seed: int
) -> BatchNormLinearHead:
    """Return a BatchNorm+Linear head trained on frozen ``features`` (N, D)."""
    torch.manual_seed(seed)
    head = BatchNormLinearHead(features.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    batch = max(2, min(cfg.head_batch_size, len(features)))  # BatchNorm needs 2 per batch
    head.train()
    for epoch in range(cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(epoch, cfg, cfg.lr, cfg.epochs)
        order = torch.randperm(len(features), generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.eval()


class EncoderClassifier(nn.Module):
    """Encoder (pooled tokens) followed by the BatchNorm+Linear head, trained end to end."""

    def __init__(self, encoder: nn.Module, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = BatchNormLinearHead(encoder.embed_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.pooled(x).float())


def finetune_few_shot(
    encoder: nn.Module,
    train_set,
    indices: torch.Tensor,
    test_set,
    classes: int,
    cfg: FewShotProbeConfig,
    seed: int,
    precision: str,
) -> float:
    """Return test accuracy after fine-tuning a copy of ``encoder`` on ``indices`` of train_set."""
    torch.manual_seed(seed)
    device = default_device()
    # A target encoder may come frozen (an EMA copy): fine-tuning must train all of its copy.
    model = EncoderClassifier(copy.deepcopy(encoder).train().requires_grad_(True), classes).to(
        device
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.finetune_lr, weight_decay=cfg.finetune_weight_decay
    )
    autocast = autocast_for(device, precision)
    subset = Subset(train_set, indices)
    batch = max(2, min(cfg.head_batch_size, len(subset)))
    loader = DataLoader(
        subset,
        batch_size=batch,
        shuffle=True,
        drop_last=len(subset) > batch,
        generator=torch.Generator().manual_seed(seed),
        num_workers=0,
    )
    for epoch in range(cfg.finetune_epochs):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(epoch, cfg, cfg.finetune_lr, cfg.finetune_epochs)
        for x, y in loader:
            if len(y) < 2:
                continue
            with autocast:
                logits = model(x.to(device))
            loss = F.cross_entropy(logits.float(), torch.as_tensor(y).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(test_set, batch_size=cfg.batch_size, num_workers=loader_workers(2)):
            with autocast:
                preds.append(model(x.to(device)).float().argmax(1).cpu())
            labels.append(torch.as_tensor(y))
    return accuracy(torch.cat(preds), torch.cat(labels))


def run_fewshot_probe(request: ProbeRequest, recipe: Recipe) -> dict:
    """Return few-shot accuracy (mean, std, per seed) of the linear probe and/or fine-tuning."""
    cfg = recipe.probe
    if not isinstance(cfg, FewShotProbeConfig):
        raise UserError(f"recipe '{recipe.name}' has no few-shot probe settings")
    shots = cfg.shots if request.shots is None else request.shots
    head = request.head or cfg.head
    if head not in HEADS:
        raise UserError(f"--head must be one of {', '.join(HEADS)} for this method, got '{head}'")
    source = request_encoder(request, recipe)
    train_set, test_set, described = labelled_splits(
        source.recipe,
        request.data,
        request.test,
        cfg.test_fraction,
        cfg.seed,
        labels=request.labels,
        label_option="--labels",
    )
    classes = len(train_set.classes)
    seeds = [cfg.seed + s for s in range(request.seeds)]
    result = {
        "data": described,
        "encoder": "random-init" if request.random_init else source.tag,
        "shots": shots if shots > 0 else "all",
        "seeds": len(seeds),
        "train_pool": len(train_set),
        "test_samples": len(test_set),
    }
    if request.labels is not None:  # what the label file gave: samples per class
        result["train_classes"] = class_counts(train_set.labels, train_set.classes)
        result["test_classes"] = class_counts(test_set.labels, train_set.classes)
    described += label_file_digest(request.labels)  # feature-cache keys follow the file
    if head in ("linear", "all"):
        train_x, train_y = cached_features(
            source.encoder,
            train_set,
            source.cache_dir,
            f"{source.tag}|{described}|train",
            cfg.batch_size,
            recipe.train.precision,
        )
        test_x, test_y = cached_features(
            source.encoder,
            test_set,
            source.cache_dir,
            f"{source.tag}|{described}|test",
            cfg.batch_size,
            recipe.train.precision,
        )
        rows = []
        for seed in seeds:
            idx = draw_shots(train_y, shots, seed)
            probe = train_head(train_x[idx], train_y[idx], classes, cfg, seed)
            with torch.no_grad():
                linear = accuracy(probe(test_x).argmax(1), test_y)
            k = min(cfg.knn_k, len(idx))
            rows.append(
                {
                    "linear_accuracy": linear,
                    "knn_accuracy": accuracy(
                        knn_predict(
                            train_x[idx], train_y[idx], test_x, classes, k, cfg.knn_temperature
                        ),
                        test_y,
                    ),
                }
            )
        result.update(aggregate(rows))
    if head in ("finetune", "all"):
        labels = train_set.labels
        result.update(
            aggregate(
                [
                    {
                        "finetune_accuracy": finetune_few_shot(
                            source.encoder,
                            train_set,
                            draw_shots(labels, shots, seed),
                            test_set,
                            classes,
                            cfg,
                            seed,
                            recipe.train.precision,
                        )
                    }
                    for seed in seeds
                ]
            )
        )
    return result
