"""Frozen-encoder features: computed once per (weights, data), cached in the run folder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from jepactl.micro_batch import loader_workers
from jepactl.precision import autocast as autocast_for
from jepactl.progress import TaskProgress


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset,
    batch_size: int = 256,
    num_workers: int = 2,
    precision: str = "bf16",
    description: str | None = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pooled features (N, D) float32, labels (N,)) in dataset order; progress in
    batches on stderr (``description``; None: silent) for long extractions."""
    feats, labels = [], []
    for batch_feats, batch_labels in iter_features(
        encoder, dataset, batch_size, num_workers, precision, description
    ):
        feats.append(batch_feats)
        labels.append(batch_labels)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def iter_features(
    encoder: nn.Module,
    dataset,
    batch_size: int = 256,
    num_workers: int = 2,
    precision: str = "bf16",
    description: str | None = "features",
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (pooled features (B, D) float32 on the CPU, labels (B,)) batch by batch in dataset
    order, so a caller that writes them as they come holds one batch at a time (``embed``).
    ``device``: where the encoder runs (default: the GPU if there is one; under several
    processes each rank passes its own)."""
    device = device or default_device()
    encoder = encoder.to(device).eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(num_workers),
        pin_memory=device.type == "cuda",
    )
    autocast = autocast_for(device, precision)
    with TaskProgress(description or "", len(loader) if description else 0) as progress:
        for images, target in loader:
            with autocast:
                feats = encoder.pooled(images.to(device)).float().cpu()
            yield feats, torch.as_tensor(target)
            progress.advance()


def cached_features(
    encoder: nn.Module,
    dataset,
    cache_dir: Path | None,
    key: str,
    batch_size: int = 256,
    precision: str = "bf16",
):
    """Return ``extract_features`` results, reusing ``cache_dir/features-<hash>.pt`` if present."""
    if cache_dir is None:
        return extract_features(encoder, dataset, batch_size, precision=precision)
    digest = hashlib.sha1(f"{key}|{len(dataset)}|{precision}".encode()).hexdigest()[:16]
    path = cache_dir / f"features-{digest}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["features"], saved["labels"]
    feats, labels = extract_features(
        encoder,
        dataset,
        batch_size,
        precision=precision,
        description="features " + key.rsplit("|", 1)[-1],
    )
    from jepactl.checkpoint import atomic_save

    atomic_save({"features": feats, "labels": labels, "key": key}, path)
    return feats, labels
