"""Batched mask samplers: whole batches with tensor ops, no per-sample Python loop.

``MultiBlockMask2D`` is I-JEPA's multi-block sampler (facebookresearch/ijepa,
src/masks/multiblock.py) with two deliberate differences, both recorded in the recipes:

* Ragged context masks are **not** truncated to the batch minimum in raster order (ijepa
  issue #60, which biases the context towards the top-left and throws context away). The
  context keeps every patch it was given; rows are padded to the longest row in the batch and
  a validity mask travels with them, so attention ignores the padding.
* The reference draws the block scale and aspect ratio from one shared uniform number; here
  they are independent draws, as the paper describes the two ranges.

Like the reference, one target-block size is drawn per batch (so target tensors stack without
padding) and positions are drawn per sample. The context block is re-drawn up to ``tries``
times per sample until it keeps ``min_keep`` patches outside the targets; a sample that still
fails keeps the whole grid minus its targets, so sampling always terminates (the reference
hangs on 8x8 grids, methods.md quirk 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from jepactl.errors import RecipeError


@dataclass
class MultiBlockMaskConfig:
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 10
    tries: int = 20
    # "pad": every context keeps all its patches, rows padded to the batch's longest (unbiased).
    # "truncate": the reference collator's behaviour, every row cut to the batch's shortest in
    # raster order (less compute, biased to the top-left; for parity runs and peer benchmarks).
    ragged_context: Literal["pad", "truncate"] = "pad"


@dataclass
class MultiBlockMasks:
    """Token indices for one batch; ``context_valid`` is None when no row needed padding."""

    context: torch.Tensor  # (B, K) long, padded rows repeat a valid index
    context_valid: torch.Tensor | None  # (B, K) bool
    targets: torch.Tensor  # (B, M, T) long


def _block_size(grid: tuple[int, int], scale: float, aspect: float) -> tuple[int, int]:
    """Return (h, w) of a block covering ``scale`` of the grid with aspect ratio h/w."""
    height, width = grid
    area = height * width * scale
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    return max(1, min(h, height)), max(1, min(w, width))


def _uniform(low_high: tuple[float, float], gen: torch.Generator) -> float:
    low, high = low_high
    return low + (high - low) * torch.rand((), generator=gen).item()


def block_masks(
    tops: torch.Tensor, lefts: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Return boolean masks (*tops.shape, H*W) of h x w blocks at the given corners."""
    height, width = grid
    h, w = size
    rows = torch.arange(height)
    cols = torch.arange(width)
    in_rows = (rows >= tops[..., None]) & (rows < tops[..., None] + h)
    in_cols = (cols >= lefts[..., None]) & (cols < lefts[..., None] + w)
    return (in_rows[..., :, None] & in_cols[..., None, :]).flatten(-2)


def block_indices(
    tops: torch.Tensor, lefts: torch.Tensor, size: tuple[int, int], width: int
) -> torch.Tensor:
    """Return raster indices (*tops.shape, h*w) of h x w blocks at the given corners."""
    h, w = size
    rows = tops[..., None, None] + torch.arange(h)[:, None]
    cols = lefts[..., None, None] + torch.arange(w)[None, :]
    return (rows * width + cols).flatten(-2)


def raster_order(keep: torch.Tensor) -> torch.Tensor:
    """Return every row's positions (B, N), kept ones first, each group in raster order."""
    return torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices


def truncate_rows(keep: torch.Tensor) -> torch.Tensor:
    """Return indices (B, K) of each row's first K kept positions, K the smallest row count."""
    return raster_order(keep)[:, : int(keep.sum(dim=1).min())]


def pad_rows(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (indices (B, K), valid (B, K) or None) for a boolean keep mask (B, N).

    K is the largest row count. Indices come in raster order; padded slots repeat the row's
    first index so gathers stay in range, and ``valid`` marks them False.
    """
    counts = keep.sum(dim=1)
    longest = int(counts.max())
    order = raster_order(keep)[:, :longest]
    valid = torch.arange(longest)[None, :] < counts[:, None]
    order = torch.where(valid, order, order[:, :1])
    return order, (None if bool(valid.all()) else valid)


class MultiBlockMask2D:
    """Samples I-JEPA context and target blocks for a batch on a (H, W) token grid."""

    def __init__(self, grid: tuple[int, int], config: MultiBlockMaskConfig) -> None:
        if config.ragged_context not in ("pad", "truncate"):
            raise RecipeError(
                f"recipe key 'mask.ragged_context' must be pad or truncate, got "
                f"'{config.ragged_context}'"
            )
        self.grid = grid
        self.config = config

    def sample_keep(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (context keep mask (B, N) bool, target indices (B, M, T))."""
        cfg, grid = self.config, self.grid
        height, width = grid
        t_size = _block_size(
            grid, _uniform(cfg.target_scale, gen), _uniform(cfg.target_aspect, gen)
        )
        c_size = _block_size(
            grid, _uniform(cfg.context_scale, gen), _uniform(cfg.context_aspect, gen)
        )

        shape = (batch, cfg.num_targets)
        t_tops = torch.randint(0, height - t_size[0] + 1, shape, generator=gen)
        t_lefts = torch.randint(0, width - t_size[1] + 1, shape, generator=gen)
        targets = block_indices(t_tops, t_lefts, t_size, width)  # (B, M, T)
        covered = block_masks(t_tops, t_lefts, t_size, grid).any(dim=1)  # (B, N)

        # All candidate context blocks at once; each sample takes its first good candidate.
        c_tops = torch.randint(0, height - c_size[0] + 1, (batch, cfg.tries), generator=gen)
        c_lefts = torch.randint(0, width - c_size[1] + 1, (batch, cfg.tries), generator=gen)
        candidates = block_masks(c_tops, c_lefts, c_size, grid) & ~covered[:, None, :]
        good = candidates.sum(dim=2) >= cfg.min_keep  # (B, tries)
        first = good.to(torch.uint8).argmax(dim=1)
        chosen = candidates[torch.arange(batch), first]
        keep = torch.where(good.any(dim=1)[:, None], chosen, ~covered)
        return keep, targets

    def __call__(self, batch: int, gen: torch.Generator) -> MultiBlockMasks:
        keep, targets = self.sample_keep(batch, gen)
        if self.config.ragged_context == "truncate":
            return MultiBlockMasks(context=truncate_rows(keep), context_valid=None, targets=targets)
        context, valid = pad_rows(keep)
        return MultiBlockMasks(context=context, context_valid=valid, targets=targets)
