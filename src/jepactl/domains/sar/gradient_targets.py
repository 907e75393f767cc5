"""SAR-JEPA's target: the multi-scale gradient-by-ratio of a SAR amplitude image, per patch.

For each scale r (SAR-JEPA: 5, 9, 13, 17) the image is reflect-padded by r and offset by 0.01;
over the (2r+1) x (2r+1) window around each pixel, the horizontal gradient is the log ratio of
the left and right half-window sums, the vertical one the log ratio of the top and bottom sums,
and the feature is their magnitude sqrt(gx^2 + gy^2). A ratio of local means is the classic SAR
edge detector: multiplicative speckle cancels in the ratio where a difference would amplify it
(waterdisappear/SAR-JEPA, Pretraining/models_lomar.py ``GF``; methods.md §3).

The reference convolves with full (2r+1)^2 box kernels. Every half-window kernel is an outer
product of a row profile and a column profile (box, or box times a Gaussian), so here each one
is two 1-D convolutions, and all scales' profiles run as one grouped convolution per axis and
scale: O(r) work per pixel instead of O(r^2), still batched on the input's device.

Two kernel families (recipe ``target.gradient_kernel``):

* ``box`` (the paper's main result): half windows of r+1 rows/columns that share the centre
  line, unweighted.
* ``gaussian`` (the "SAR-JEPA (Gaussian kernel)" checkpoint; the reference's commented-out
  ``creat_gauss_kernel``): half windows of r rows/columns that exclude the centre line, weighted
  by a Gaussian with OpenCV's default sigma 0.3 * (r - 1) + 0.8.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SAR_GRADIENT_SCALES = (5, 9, 13, 17)
RATIO_OFFSET = 0.01  # added after padding, as the reference does, so log(0/0) never happens


def half_window_profiles(
    radius: int, kernel: Literal["box", "gaussian"]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return 1-D profiles (full, low half, high half) of length 2r+1, float64.

    ``low`` covers offsets -r..0 (box) or -r..-1 (gaussian), ``high`` 0..r or 1..r; ``full``
    covers the whole window. A 2-D half-window kernel is the outer product of two profiles.
    """
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    if kernel == "box":
        weight = torch.ones_like(offsets)
        low, high = (offsets <= 0).double(), (offsets >= 0).double()
    elif kernel == "gaussian":
        sigma = 0.3 * ((2 * radius + 1 - 1) * 0.5 - 1) + 0.8
        weight = torch.exp(-(offsets**2) / (2 * sigma**2))
        low, high = (offsets < 0).double(), (offsets > 0).double()
    else:
        raise ValueError(f"unknown gradient kernel {kernel!r}; known: box, gaussian")
    return weight, weight * low, weight * high


class GradientByRatio(nn.Module):
    """Map single-channel amplitude images (B, 1, H, W) to gradient magnitudes (B, S, H, W)."""

    def __init__(
        self,
        scales: tuple[int, ...] = SAR_GRADIENT_SCALES,
        kernel: Literal["box", "gaussian"] = "box",
    ) -> None:
        super().__init__()
        if not scales or any(r < 1 for r in scales):
            raise ValueError(f"gradient scales must be positive radii, got {scales}")
        self.scales = tuple(int(r) for r in scales)
        self.kernel = kernel
        for r in self.scales:
            full, low, high = half_window_profiles(r, kernel)
            # Row pass: 3 profiles (full, top, bottom); column pass applied to each row result.
            self.register_buffer(
                f"profiles_{r}", torch.stack([full, low, high]).float(), persistent=False
            )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W) amplitude images, got {tuple(images.shape)}")
        x = images.float()
        maps = [self._one_scale(x, r, getattr(self, f"profiles_{r}")) for r in self.scales]
        return torch.cat(maps, dim=1)

    @staticmethod
    def _one_scale(x: torch.Tensor, radius: int, profiles: torch.Tensor) -> torch.Tensor:
        size = 2 * radius + 1
        if min(x.shape[-2:]) <= radius:
            raise ValueError(
                f"image {tuple(x.shape[-2:])} is too small for gradient radius "
                f"{radius} (reflect padding needs size > radius)"
            )
        padded = F.pad(x, (radius,) * 4, mode="reflect") + RATIO_OFFSET
        # Vertical pass: rows weighted by full / top / bottom profiles -> 3 channels.
        rows = F.conv2d(padded, profiles.view(3, 1, size, 1))
        full_rows, top_rows, bottom_rows = rows[:, 0:1], rows[:, 1:2], rows[:, 2:3]
        # Horizontal pass: left/right halves of the full-height window; full width of the
        # top/bottom halves. Four outputs in one grouped conv.
        stacked = torch.cat([full_rows, full_rows, top_rows, bottom_rows], dim=1)
        cols = torch.stack([profiles[1], profiles[2], profiles[0], profiles[0]])
        sums = F.conv2d(stacked, cols.view(4, 1, 1, size), groups=4)
        left, right, top, bottom = sums.unbind(dim=1)
        gx = torch.log(left / right)
        gy = torch.log(top / bottom)
        return torch.sqrt(gx * gx + gy * gy).unsqueeze(1)


def patchify(maps: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Return (B, N, C*p*p) raster-order patches of (B, C, H, W) maps, channel-major per patch.

    Channel-major means a patch's vector is [channel 0's p*p values, channel 1's, ...]: for the
    gradient maps that is the reference's concatenation of per-scale patchified targets.
    """
    b, c, h, w = maps.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"maps {h}x{w} are not divisible by patch size {p}")
    x = maps.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def gradient_patch_targets(
    operator: GradientByRatio, amplitude: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """Return the per-patch SAR-JEPA targets (B, N, S*p*p) for amplitude images (B, 1, H, W)."""
    return patchify(operator(amplitude), patch_size)
