"""Torch datasets over an :class:`ImageSource`: seeded crops for pretraining, fixed for eval."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from jepactl.data.image_transforms import center_resize, random_resized_crop, to_tensor
from jepactl.data.images import ImageSource, load_or_neighbour
from jepactl.data.labelled_source import LabelledSourceDataset
from jepactl.data.sampling import SampleKey

log = logging.getLogger("jepactl")


@dataclass
class ImageDataConfig:
    """Where images come from and how they become tensors."""

    path: str | None = None  # folder, parquet file/folder, arrow dir, or builtin:shapes
    image_size: int = 224
    channels: int = 3  # 3: greyscale is repeated to RGB; 1: colour is converted to grey
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    image_column: str | None = None  # HF datasets: detected when null
    label_column: str | None = None


class ImagePretrainDataset(Dataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {"images": (C,H,W), "batch_seed": int}."""

    def __init__(self, source: ImageSource, config: ImageDataConfig) -> None:
        self.source, self.config = source, config

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: SampleKey) -> dict:
        index, sample_seed, batch_seed = key
        cfg = self.config
        img, _ = load_or_neighbour(self.source, index)
        rng = np.random.default_rng(sample_seed)
        crop = random_resized_crop(
            img.convert("RGB" if cfg.channels == 3 else "L"),
            cfg.image_size,
            cfg.crop_scale,
            cfg.crop_ratio,
            rng,
        )
        return {
            "images": to_tensor(crop, cfg.channels, cfg.mean, cfg.std),
            "batch_seed": batch_seed,
        }


class ImageEvalDataset(LabelledSourceDataset):
    """Item ``i`` -> (image tensor (C,H,W), label): centre crop, no augmentation."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        cfg = self.config
        img, used = load_or_neighbour(self.source, index)
        img = center_resize(img.convert("RGB" if cfg.channels == 3 else "L"), cfg.image_size)
        return to_tensor(img, cfg.channels, cfg.mean, cfg.std), int(self.source.labels[used])


class ImageAugmentDataset(ImageEvalDataset):
    """Item ``i`` -> (randomly cropped and flipped tensor, label), for fine-tuning."""

    def __init__(self, source: ImageSource, config: ImageDataConfig, seed: int) -> None:
        super().__init__(source, config)
        self.seed = seed
        self.epoch = 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        cfg = self.config
        img, used = load_or_neighbour(self.source, index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = random_resized_crop(
            img.convert("RGB" if cfg.channels == 3 else "L"),
            cfg.image_size,
            (max(cfg.crop_scale[0], 0.25), 1.0),
            cfg.crop_ratio,
            rng,
        )
        tensor = to_tensor(img, cfg.channels, cfg.mean, cfg.std)
        if rng.random() < 0.5:
            tensor = tensor.flip(-1)
        return tensor, int(self.source.labels[used])
