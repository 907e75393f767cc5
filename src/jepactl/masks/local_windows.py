"""LoMaR local-window masks, sampled for a whole batch with tensor ops.

LoMaR (Chen et al. 2022) and SAR-JEPA (methods.md §3) train on small windows instead of the full
image: each sample gets ``num_windows`` windows of ``window_size`` x ``window_size`` patches, and
inside each window ``int(window_size**2 * mask_ratio)`` patches are replaced by a mask token.
The encoder sees every token of its window (mask tokens included), one sequence per window.

Difference from the reference (models_lomar.py): window corners are drawn per sample and per
window here, where the reference draws one set of corners for the whole batch; per-sample
corners give every batch more distinct views at the same cost. The number of masked patches
per window is fixed, so windows stack without padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LocalWindowMaskConfig:
    num_windows: int = 4
    window_size: int = 7  # patches per side
    mask_ratio: float = 0.8  # fraction of each window's patches replaced by the mask token


@dataclass
class LocalWindowMasks:
    """Token indices of each window and which of them are masked."""

    windows: torch.Tensor  # (B, W, n) long raster indices of the window's patches, row by row
    masked: torch.Tensor  # (B, W, n) bool, exactly ``masked_per_window`` True per window


class LocalWindowMask:
    """Samples LoMaR windows and their masked patches on a (H, W) token grid."""

    def __init__(self, grid: tuple[int, int], config: LocalWindowMaskConfig) -> None:
        height, width = grid
        size = config.window_size
        if size < 1 or size > min(height, width):
            raise ValueError(
                f"mask.window_size={size} does not fit the {height}x{width} patch grid"
            )
        if config.num_windows < 1:
            raise ValueError(f"mask.num_windows must be positive, got {config.num_windows}")
        self.grid, self.config = grid, config
        self.masked_per_window = int(size * size * config.mask_ratio)
        if not 1 <= self.masked_per_window < size * size:
            raise ValueError(
                f"mask.mask_ratio={config.mask_ratio} masks "
                f"{self.masked_per_window} of {size * size} patches per window; "
                "it must mask at least one and keep at least one"
            )

    def __call__(self, batch: int, gen: torch.Generator) -> LocalWindowMasks:
        height, width = self.grid
        size, count = self.config.window_size, self.config.num_windows
        tops = torch.randint(0, height - size + 1, (batch, count), generator=gen)
        lefts = torch.randint(0, width - size + 1, (batch, count), generator=gen)
        rows = tops[..., None, None] + torch.arange(size)[:, None]
        cols = lefts[..., None, None] + torch.arange(size)[None, :]
        windows = (rows * width + cols).flatten(-2)  # (B, W, n)
        # A random permutation per window: its first ``masked_per_window`` entries are masked.
        ranks = torch.rand(batch, count, size * size, generator=gen).argsort(dim=-1).argsort(dim=-1)
        masked = ranks < self.masked_per_window
        return LocalWindowMasks(windows=windows, masked=masked)
