"""Synthetic inputs of a recipe's shape, for benchmarks that measure the model, not the disk."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from jepactl.data.sampling import SampleKey


class SyntheticImages(Dataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {"images": N(0,1) (C,S,S), "batch_seed"}."""

    def __init__(self, channels: int, size: int, length: int = 100_000) -> None:
        self.channels, self.size, self.length = channels, size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: SampleKey) -> dict:
        _, sample_seed, batch_seed = key
        gen = torch.Generator().manual_seed(sample_seed)
        return {
            "images": torch.randn(self.channels, self.size, self.size, generator=gen),
            "batch_seed": batch_seed,
        }


class SyntheticTensors(Dataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {name: (shape), "batch_seed"}.

    Values are N(0,1), or U(0,1) with ``uniform`` (inputs that must not be negative, e.g. SAR
    amplitudes whose gradient targets take log ratios).
    """

    def __init__(
        self, name: str, shape: tuple[int, ...], uniform: bool = False, length: int = 100_000
    ) -> None:
        self.name, self.shape, self.uniform, self.length = name, tuple(shape), uniform, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: SampleKey) -> dict:
        _, sample_seed, batch_seed = key
        gen = torch.Generator().manual_seed(sample_seed)
        draw = torch.rand if self.uniform else torch.randn
        return {self.name: draw(*self.shape, generator=gen), "batch_seed": batch_seed}
