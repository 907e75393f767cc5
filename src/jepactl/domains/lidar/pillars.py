"""Pillar bird's-eye-view grids (PointPillars-style) and the point-cloud augmentations.

A cloud becomes an image the encoder can patch: the x-y plane inside ``point_range`` is cut into
``cell`` x ``cell`` pillars (vertical columns) and each pillar gets :data:`PILLAR_FEATURES`
hand-made channels summarising its points. Fixed statistics instead of PointPillars' learned
PointNet keep the grid a pure function of the data, computed once per batch by one scatter on
the batch's device, so the JEPA's targets never depend on a learned point encoder.

Augmentations follow the AD-L-JEPA reference (flip, rotation about z, uniform scaling);
:func:`fit_to_window` brings small object clouds (DALES' aerial objects) into a fixed window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from jepactl.errors import UserError

# mean x, y, z; mean offset from the pillar's centre in x, y; mean intensity; max z; min z;
# log1p(point count). Empty pillars are all zeros.
PILLAR_FEATURES = 9


@dataclass
class PillarGrid:
    """The region turned into pillars and the pillars' size; KITTI's detection range by default."""

    # [x0, y0, z0, x1, y1, z1] in metres: points at x0 <= x < x1 (same for y, z) are kept.
    point_range: list[float] = field(default_factory=lambda: [0.0, -40.0, -3.0, 70.4, 40.0, 1.0])
    cell: float = 0.4  # metres per pillar in x and y

    @property
    def width(self) -> int:
        """Pillars along x (the grid's columns)."""
        return round((self.point_range[3] - self.point_range[0]) / self.cell)

    @property
    def height(self) -> int:
        """Pillars along y (the grid's rows)."""
        return round((self.point_range[4] - self.point_range[1]) / self.cell)

    def validate(self) -> None:
        """Raise a UserError naming the recipe key when the grid is impossible."""
        if not self.cell > 0:
            raise UserError(f"recipe key 'data.grid.cell' must be positive, got {self.cell}")
        key = "recipe key 'data.grid.point_range'"
        if len(self.point_range) != 6:
            raise UserError(
                f"{key} needs 6 numbers [x0, y0, z0, x1, y1, z1], got {list(self.point_range)}"
            )
        for axis, low, high in zip("xyz", self.point_range[:3], self.point_range[3:]):
            if not high > low:
                raise UserError(f"{key}: {axis}1 ({high}) must be above {axis}0 ({low})")
        if self.width < 1 or self.height < 1:
            raise UserError(
                f"'data.grid.cell' {self.cell} is larger than {key} {list(self.point_range)}"
            )


def scatter_pillars(
    points: torch.Tensor, batch_index: torch.Tensor, batch_size: int, grid: PillarGrid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the pillar features (B, 9, H, W) and point counts (B, H, W) of a batch of clouds.

    ``points`` (P, 4) x, y, z, intensity of all clouds back to back and ``batch_index`` (P,)
    each point's cloud; row = y, column = x. Points outside ``grid.point_range`` are dropped.
    One scatter over the flat index b*H*W + row*W + col serves the whole batch.
    """
    height, width = grid.height, grid.width
    x0, y0, z0, x1, y1, z1 = (float(v) for v in grid.point_range)
    points = points.to(torch.float32)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    col = torch.floor((x - x0) / grid.cell).long()
    row = torch.floor((y - y0) / grid.cell).long()
    # width/height are rounded, so the last pillar can end short of x1/y1: check both.
    keep = (x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (z >= z0) & (z < z1)
    keep &= (col >= 0) & (col < width) & (row >= 0) & (row < height)
    points, col, row = points[keep], col[keep], row[keep]
    flat = batch_index.to(points.device)[keep].long() * (height * width) + row * width + col

    cells = batch_size * height * width
    counts = torch.bincount(flat, minlength=cells)
    centre_x = x0 + (col.to(torch.float32) + 0.5) * grid.cell
    centre_y = y0 + (row.to(torch.float32) + 0.5) * grid.cell
    # x, y, z, offset x, offset y, intensity: summed together, divided by the count below.
    summed = torch.stack(
        [points[:, 0], points[:, 1], points[:, 2], points[:, 0] - centre_x,
         points[:, 1] - centre_y, points[:, 3]],
        dim=1,
    )  # fmt: skip
    sums = torch.zeros(cells, 6, device=points.device).index_add_(0, flat, summed)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(torch.float32)
    # include_self=False: a pillar's max/min are its points' only; empty ones keep the zero.
    z_max = torch.zeros(cells, device=points.device).scatter_reduce_(
        0, flat, points[:, 2], "amax", include_self=False
    )
    z_min = torch.zeros(cells, device=points.device).scatter_reduce_(
        0, flat, points[:, 2], "amin", include_self=False
    )
    features = torch.cat(
        [means, z_max[:, None], z_min[:, None], torch.log1p(counts.to(torch.float32))[:, None]],
        dim=1,
    )
    features = features.view(batch_size, height, width, PILLAR_FEATURES).permute(0, 3, 1, 2)
    return features.contiguous(), counts.view(batch_size, height, width)


def flip_rotate_scale(
    points: np.ndarray,
    rng: np.random.Generator,
    flip: bool = True,
    rotation: float = math.pi / 4,
    scale: tuple[float, float] = (0.95, 1.05),
) -> np.ndarray:
    """Return a copy of ``points`` flipped along x (y -> -y, p = 0.5), rotated about z by
    U(-rotation, rotation) and scaled by U(scale); intensity is unchanged."""
    out = np.array(points, dtype=np.float64)
    if flip and rng.random() < 0.5:
        out[:, 1] = -out[:, 1]
    angle = rng.uniform(-rotation, rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    x, y = out[:, 0].copy(), out[:, 1].copy()
    out[:, 0] = cos * x - sin * y
    out[:, 1] = sin * x + cos * y
    out[:, :3] *= rng.uniform(scale[0], scale[1])
    return out.astype(np.float32)


def fit_to_window(points: np.ndarray, half_width: float) -> np.ndarray:
    """Return a copy of an object cloud centred in x, y, standing on z = 0, scaled to the window.

    x, y are centred on the centroid, the lowest point is put at z = 0 and x, y, z are scaled by
    one factor so the object fits a cylinder of radius ``half_width`` (a radius, not a square,
    so a later rotation keeps the object inside) and height ``2 * half_width``: a pole is as
    tall as the window, not fifty windows tall. Absolute size is lost by
    design: a 40 m building and a 1 m pole would otherwise not share a window, and size alone
    would dominate small windows. A single-point or zero-extent cloud is only centred.
    """
    if not half_width > 0:
        raise UserError(f"the window's half width must be positive, got {half_width}")
    out = np.array(points, dtype=np.float64)
    if len(out) == 0:
        return out.astype(np.float32)
    out[:, :2] -= out[:, :2].mean(axis=0)
    out[:, 2] -= out[:, 2].min()
    radius = float(np.sqrt((out[:, :2] ** 2).sum(axis=1)).max())
    extent = max(radius, float(out[:, 2].max()) / 2)
    if extent > 0:
        out[:, :3] *= half_width / extent
    return out.astype(np.float32)


def collate_clouds(clouds: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the clouds back to back as (P, 4) float32 and each point's cloud index (P,)."""
    if not clouds:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    points = torch.from_numpy(np.concatenate(clouds).astype(np.float32, copy=False))
    lengths = torch.tensor([len(cloud) for cloud in clouds])
    return points, torch.repeat_interleave(torch.arange(len(clouds)), lengths)
