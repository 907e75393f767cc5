"""AD-L-JEPA's BEV-guided masking, on the encoder's output cells, for a whole batch at once.

Reference (HaoranZhuExplorer/AD-L-JEPA-Release, ad_l_jepa.py; methods.md section 5): voxel
coordinates are floor-divided by the backbone's stride and height is collapsed, giving each
sample's non-empty BEV cells. ``1 - mask_ratio`` of the non-empty cells (exactly that share,
rounded, at least one) are drawn as context, the rest are targets; every empty cell draws
``rand < 1 - mask_ratio`` to be a context-empty cell, the rest are target-empty. The context
encoder sees only the points in context cells and the target encoder only those in target cells.

Here a cell is ``downsample`` x ``downsample`` pillars, and a cell is non-empty when any of its
pillars has a point. One argsort of random scores per batch draws every sample's context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COUNT_CHANNEL = 8  # the pillar grid's log1p(count) channel (pillars.py)


def occupied_cells(grids: torch.Tensor, downsample: int) -> torch.Tensor:
    """Return (B, ceil(H / s), ceil(W / s)) bool: which output cells hold a point."""
    full = (grids[:, COUNT_CHANNEL : COUNT_CHANNEL + 1] > 0).float()
    if downsample == 1:
        return full[:, 0] > 0
    return F.max_pool2d(full, downsample, downsample, ceil_mode=True)[:, 0] > 0


def draw_cell_masks(
    occupied: torch.Tensor, mask_ratio: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Return the four disjoint (B, h, w) bool masks ``context_cells``, ``target_cells`` (the
    non-empty ones), ``context_empty`` and ``target_empty`` that tile every sample's cells."""
    flat = occupied.flatten(1)
    count = flat.sum(1)
    keep = (count.double() * (1.0 - mask_ratio)).round().long()
    keep = torch.where(count > 0, keep.clamp(1, None), keep)
    scores = torch.rand(flat.shape, generator=generator)
    scores = torch.where(flat, scores, torch.full_like(scores, 2.0))  # empty cells rank last
    rank = scores.argsort(1).argsort(1)
    context = flat & (rank < keep[:, None])
    empty_context = ~flat & (torch.rand(flat.shape, generator=generator) < 1.0 - mask_ratio)
    shape = occupied.shape
    return {
        "context_cells": context.view(shape),
        "target_cells": (flat & ~context).view(shape),
        "context_empty": empty_context.view(shape),
        "target_empty": (~flat & ~empty_context).view(shape),
    }


def cells_to_pillars(cells: torch.Tensor, downsample: int, height: int, width: int):
    """Return the (B, H, W) pillar mask of a (B, h, w) cell mask (each cell covers s x s)."""
    if downsample == 1:
        return cells
    up = cells.repeat_interleave(downsample, 1).repeat_interleave(downsample, 2)
    return up[:, :height, :width]
