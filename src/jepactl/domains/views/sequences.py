"""Sequences of transformed views from any image source jepactl reads.

A sample is one image, centre-cropped and resized to ``data.image_size`` with values in [0, 1];
the collate turns one optimizer step's images into sequences of ``views.seq_len + 1`` views
with their latents and relative actions (transforms.py), drawn in batched tensor ops from a
generator seeded with the step's batch seed, so a resumed run makes the same views and the
trainer can cut the batch into micro-batches along dim 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jepactl.data.image_transforms import center_resize, to_tensor
from jepactl.data.images import ImageSource, load_or_neighbour
from jepactl.data.labelled_source import LabelledSourceDataset
from jepactl.data.sampling import SampleKey
from jepactl.domains.views.transforms import (
    ViewsConfig,
    apply_views,
    draw_views,
    relative_actions,
)


@dataclass
class SeqDataConfig:
    """Where the images come from and their size; the views' transformations are ``views``."""

    path: str | None = None  # folder, parquet file/folder, arrow dir, or builtin:shapes
    image_size: int = 32
    channels: int = 3  # 3: greyscale is repeated to RGB; 1: colour is converted to grey
    # Applied to every view after its transformations (CIFAR statistics).
    mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
    image_column: str | None = None  # HF datasets: detected when null
    label_column: str | None = None


def base_image(source: ImageSource, index: int, config: SeqDataConfig) -> tuple[torch.Tensor, int]:
    """Return (image (C, S, S) in [0, 1], index used: an unreadable file's neighbour)."""
    img, used = load_or_neighbour(source, index)
    img = center_resize(img.convert("RGB" if config.channels == 3 else "L"), config.image_size)
    zeros, ones = (0.0,) * config.channels, (1.0,) * config.channels
    return to_tensor(img, config.channels, zeros, ones), used


class BaseImages(LabelledSourceDataset):
    """Item ``i`` -> (image (C, S, S) in [0, 1], label): the image views are made from."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, used = base_image(self.source, index, self.config)
        return image, int(self.source.labels[used])


class SequencePretrainDataset(LabelledSourceDataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {"images": (C, S, S), "batch_seed": int}."""

    def __getitem__(self, key: SampleKey) -> dict:
        index, _, batch_seed = key
        image, _ = base_image(self.source, index, self.config)
        return {"images": image, "batch_seed": batch_seed}


def normalise(views: torch.Tensor, config: SeqDataConfig) -> torch.Tensor:
    """Return ``views`` (..., C, H, W) in [0, 1] standardised with the data's mean and std."""
    mean = torch.tensor(config.mean, dtype=views.dtype)[:, None, None]
    std = torch.tensor(config.std, dtype=views.dtype)[:, None, None]
    return (views - mean) / std


def make_sequences(
    images: torch.Tensor,
    views: ViewsConfig,
    data: SeqDataConfig,
    count: int,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Return ``count`` views of each image with their latents and relative actions.

    ``views`` (B, count, C, S, S) standardised; ``latents`` (B, count, P); ``actions``
    (B, count - 1, P): the relative action from view j to view j + 1.
    """
    draw = draw_views(views, (images.shape[0], count), gen)
    latents = draw.latent(views, data.channels)
    return {
        "views": normalise(apply_views(images, draw), data),
        "latents": latents,
        "actions": relative_actions(latents, views, data.channels),
    }


class SequenceCollate:
    """Stack one step's images and make their sequences of ``seq_len + 1`` views (picklable)."""

    def __init__(self, views: ViewsConfig, data: SeqDataConfig) -> None:
        self.views, self.data = views, data

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        images = torch.stack([s["images"] for s in samples])
        gen = torch.Generator().manual_seed(samples[0]["batch_seed"])
        return make_sequences(images, self.views, self.data, self.views.seq_len + 1, gen)
