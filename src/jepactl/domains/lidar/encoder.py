"""The dense BEV encoder: a 2-D CNN over the pillar grid (the dense approximation).

The AD-L-JEPA reference encodes voxels with SECOND's sparse 3-D convolutions (spconv, GPU only)
and collapses height into a 256-channel BEV map at 8x downsampling. jepactl runs on CPUs and
GPUs without spconv, so the grid is PointPillars-style: pillars with fixed features
(pillars.py), then stages of 3x3 convolutions, each stage's first with its stride. Masked
points are removed by zeroing their pillars, which a dense convolution reads as empty space,
as a sparse one would. This is an approximation: a dense convolution also writes features into
empty cells near points, where a sparse one computes nothing.

GroupNorm rather than the reference's BatchNorm: per-sample statistics make the gradient of a
batch the same whether it is split into micro-batches or not, and leave no running statistics
for the EMA target to track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from jepactl.domains.lidar.bev_masks import occupied_cells
from jepactl.domains.lidar.pillars import PILLAR_FEATURES


@dataclass
class BEVEncoderConfig:
    """The recipe's ``model`` section: one stage per entry of ``channels`` and ``strides``."""

    channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    strides: list[int] = field(default_factory=lambda: [1, 2, 1])
    blocks: int = 2  # 3x3 convolutions per stage


def conv_block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.GroupNorm(min(32, c_out // 4) or 1, c_out),
        nn.ReLU(inplace=True),
    ]


class BEVEncoder(nn.Module):
    """(B, 9, H, W) pillar grid -> (B, C, ceil(H / s), ceil(W / s)) BEV map."""

    def __init__(self, config: BEVEncoderConfig) -> None:
        super().__init__()
        if len(config.channels) != len(config.strides) or not config.channels:
            raise ValueError("model.channels and model.strides need one entry per stage")
        layers: list[nn.Module] = []
        c_in = PILLAR_FEATURES
        for c_out, stride in zip(config.channels, config.strides, strict=True):
            for block in range(config.blocks):
                layers += conv_block(c_in, c_out, stride if block == 0 else 1)
                c_in = c_out
        self.body = nn.Sequential(*layers)
        self.dim = c_in
        self.downsample = math.prod(config.strides)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.body(grid)

    def pooled(self, grid: torch.Tensor) -> torch.Tensor:
        """Return (B, 2C): the mean and the max of the BEV map over the cells holding points."""
        bev = self.forward(grid).float()
        occupied = occupied_cells(grid, self.downsample)[:, None]
        occupied = occupied[..., : bev.shape[-2], : bev.shape[-1]]
        count = occupied.sum((2, 3)).clamp_min(1)
        mean = (bev * occupied).sum((2, 3)) / count
        peak = bev.masked_fill(~occupied, float("-inf")).amax((2, 3))
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        return torch.cat([mean, peak], dim=1)
