"""The one collate of every masking method: stack the inputs, draw the batch's masks.

A sampler is any callable ``sampler(batch_size, generator) -> masks`` whose ``masks`` is a
dataclass of batch-first tensors (``MultiBlockMasks``, ``Masks1D``, ``FeatureMasks``,
``LocalWindowMasks``). Its field names are the batch keys the method's ``forward`` reads; a
field that is None (``context_valid`` when no row needed padding) is left out.

The masks come from a generator seeded with the batch seed of the first sample (every sample of
an optimizer step carries the same one, data/sampling.py), so a resumed run draws the same
masks. The trainer slices every returned tensor along dim 0 into micro-batches, so each must be
batch-first; the collate checks that.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Protocol

import torch


class MaskSampler(Protocol):
    def __call__(self, batch: int, gen: torch.Generator) -> Any: ...


class MaskingCollate:
    """Stack samples' ``field`` and add the sampler's masks for the batch (picklable)."""

    def __init__(self, field: str, sampler: MaskSampler) -> None:
        self.field = field
        self.sampler = sampler

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        size = len(samples)
        gen = torch.Generator().manual_seed(samples[0]["batch_seed"])
        masks = self.sampler(size, gen)
        batch = {self.field: torch.stack([s[self.field] for s in samples])}
        for item in fields(masks):
            value = getattr(masks, item.name)
            if value is None:
                continue
            if value.shape[0] != size:
                raise ValueError(
                    f"{type(self.sampler).__name__} returned '{item.name}' of shape "
                    f"{tuple(value.shape)} for a batch of {size}: masks must be "
                    "batch-first"
                )
            batch[item.name] = value
        return batch
