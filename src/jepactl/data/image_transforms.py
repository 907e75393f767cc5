"""Image transforms driven by an explicit seed, so crops are reproducible and resumable."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def to_tensor(
    img: Image.Image, channels: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Return a normalised float tensor (C, H, W); greyscale and colour are converted as needed."""
    img = img.convert("L" if channels == 1 else "RGB")
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).reshape(img.size[1], img.size[0], channels).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return (tensor - mean_t) / std_t


def sample_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int] | None:
    """Return (top, left, h, w) of a random crop, or None when 10 tries found none.

    Same sampling as torchvision's RandomResizedCrop (area fraction ``scale``, log-uniform
    aspect ``ratio``), but drawn from ``rng`` instead of the global RNG.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return None


def random_resized_crop(
    img: Image.Image,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> Image.Image:
    """Return a random crop (``sample_crop_box``) resized to size^2; a centre crop if none fits."""
    box = sample_crop_box(img.size[1], img.size[0], scale, ratio, rng)
    if box is None:
        return center_resize(img, size)
    top, left, h, w = box
    return img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))


def center_resize(img: Image.Image, size: int) -> Image.Image:
    """Return the central square of ``img`` resized to size x size (the evaluation transform)."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return img.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
