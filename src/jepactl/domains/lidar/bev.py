"""Point-cloud data sets as pillar BEV grids: pretraining batches and labelled probe sets.

A cloud is read from disk when its sample is drawn (memory is bounded by the batch), placed
(``data.objects``: scans stay where the sensor saw them; object clouds are centred, or centred
and fitted into the grid's window), augmented for pretraining as the AD-L-JEPA reference does
(flip, rotation, scaling), and scattered into the grid of ``data.grid`` (pillars.py).

The grid's channels are scaled to about [0, 1] here (:func:`normalise_pillars`), because KITTI's
coordinates run to 70 m and a count channel to log(100): positions relative to the range,
offsets relative to the pillar, heights relative to the z range. Intensity is kept as read
(KITTI's reflectance is already 0-1). Empty pillars stay exactly 0,
which is how the encoders (and the masking, bev_masks.py) tell an empty pillar from a full one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from jepactl.domains.lidar.bev_masks import COUNT_CHANNEL, draw_cell_masks, occupied_cells
from jepactl.domains.lidar.clouds import PointClouds, cloud_labels
from jepactl.domains.lidar.pillars import (
    PillarGrid,
    collate_clouds,
    fit_to_window,
    flip_rotate_scale,
    scatter_pillars,
)
from jepactl.errors import UserError


@dataclass
class LidarDataConfig:
    """The recipe's ``data`` section."""

    path: str | None = None  # a point-cloud file or a folder of them (searched recursively)
    grid: PillarGrid = field(default_factory=PillarGrid)
    # none: scans in the sensor's frame (KITTI); centre: objects centred on their centroid and
    # standing on z = 0, in metres; fit: centred and scaled into the grid's window
    # (pillars.fit_to_window), for object clouds whose sizes differ by 50x (DALES).
    objects: Literal["none", "centre", "fit"] = "none"
    augment: bool = True  # pretraining: flip along x, rotation +-pi/4, scaling 0.95-1.05
    # Probe labels (clouds.cloud_labels): auto, folder (sub-folder names), csv
    # (``labels_csv``: file,label rows), dales (file number // 100).
    labels: Literal["auto", "folder", "csv", "dales"] = "auto"
    labels_csv: str | None = None

    def validate(self) -> None:
        self.grid.validate()
        if self.objects == "fit":
            x0, y0, z0, x1, y1, z1 = self.grid.point_range
            if not (x0 < 0 < x1 and y0 < 0 < y1 and z0 <= 0 < z1):
                raise UserError(
                    "recipe key 'data.grid.point_range' must contain the origin (x, y around 0, "
                    f"z from 0) to fit objects into it (data.objects=fit), got {[x0, y0, z0]}"
                )


def window_half_width(grid: PillarGrid) -> float:
    """The largest object (radius, and half its height) that :func:`fit_to_window` keeps inside."""
    x0, y0, z0, x1, y1, z1 = grid.point_range
    return 0.999 * min(-x0, x1, -y0, y1, z1 / 2)


def place(points: np.ndarray, config: LidarDataConfig) -> np.ndarray:
    """Return the cloud as ``data.objects`` places it (a copy when it moves)."""
    if config.objects == "fit":
        return fit_to_window(points, window_half_width(config.grid))
    if config.objects == "centre":
        out = points.astype(np.float32, copy=True)
        out[:, :2] -= out[:, :2].mean(axis=0)
        out[:, 2] -= out[:, 2].min()
        return out
    return points


def normalise_pillars(features: torch.Tensor, grid: PillarGrid) -> torch.Tensor:
    """Scale scatter_pillars' channels (B, 9, H, W) to about [0, 1]; empty pillars stay 0."""
    x0, y0, z0, x1, y1, z1 = (float(v) for v in grid.point_range)
    half = grid.cell / 2  # offsets from the pillar's centre lie in [-cell / 2, cell / 2)
    low = features.new_tensor([x0, y0, z0, -half, -half, 0, z0, z0, 0]).view(1, -1, 1, 1)
    span = features.new_tensor(
        [x1 - x0, y1 - y0, z1 - z0, grid.cell, grid.cell, 1, z1 - z0, z1 - z0, np.log(100.0)]
    ).view(1, -1, 1, 1)
    full = (features[:, COUNT_CHANNEL : COUNT_CHANNEL + 1] > 0).to(features.dtype)
    return (features - low) / span * full


def to_grid(clouds: list[np.ndarray], grid: PillarGrid) -> torch.Tensor:
    """Return the normalised pillar grids (B, 9, H, W) of ``clouds`` (one batched scatter)."""
    points, batch_index = collate_clouds(clouds)
    features, _ = scatter_pillars(points, batch_index, len(clouds), grid)
    return normalise_pillars(features, grid)


def open_clouds(path: str | None, config: LidarDataConfig) -> PointClouds:
    if path is None:
        raise UserError("no data: pass --data PATH (a point-cloud file or a folder of them)")
    config.validate()
    # Object clouds are moved into the grid after reading, so only scans are range-checked.
    point_range = config.grid.point_range if config.objects == "none" else None
    return PointClouds(Path(path).expanduser(), point_range)


class PretrainClouds(Dataset):
    """``SampleKey`` -> the placed and (seeded) augmented cloud, for :class:`BEVMaskCollate`."""

    def __init__(self, clouds: PointClouds, config: LidarDataConfig) -> None:
        self.clouds, self.config = clouds, config

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, key) -> dict:
        index, sample_seed, batch_seed = key
        points = place(self.clouds[index], self.config)
        if self.config.augment:
            points = flip_rotate_scale(points, np.random.default_rng(sample_seed))
        return {"points": points, "batch_seed": batch_seed}


class BEVMaskCollate:
    """Samples -> the batch's grids and AD-L-JEPA's four cell masks (bev_masks.py).

    ``downsample`` is the encoder's: masks live on its output cells, as the reference's live on
    the 8x-downsampled BEV map. The masks are drawn from the batch seed, so a resumed run draws
    the same ones.
    """

    def __init__(self, grid: PillarGrid, downsample: int, mask_ratio: float) -> None:
        self.grid, self.downsample, self.mask_ratio = grid, downsample, mask_ratio

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        grids = to_grid([s["points"] for s in samples], self.grid)
        generator = torch.Generator().manual_seed(int(samples[0]["batch_seed"]))
        occupied = occupied_cells(grids, self.downsample)
        return {"grid": grids, **draw_cell_masks(occupied, self.mask_ratio, generator)}


class LabelledClouds(Dataset):
    """Item i -> (normalised pillar grid (9, H, W), label) of the labelled clouds ``indices``."""

    def __init__(
        self,
        clouds: PointClouds,
        config: LidarDataConfig,
        labels: list[int],
        classes: list[str],
        indices: np.ndarray,
    ) -> None:
        self.clouds, self.config, self.indices = clouds, config, np.asarray(indices)
        self.labels = torch.as_tensor(np.asarray(labels)[self.indices], dtype=torch.long)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.indices)

    def sample_ids(self) -> list[str]:
        """Each item's file, for ``jepactl embed``."""
        return [str(self.clouds.paths[int(i)]) for i in self.indices]

    def cloud(self, i: int) -> np.ndarray:
        """The raw cloud (N, 4) of item i, as read (hand-made features use its real size)."""
        return self.clouds[int(self.indices[i])]

    def __getitem__(self, i: int):
        points = place(self.cloud(i), self.config)
        return to_grid([points], self.config.grid)[0], self.labels[i]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """Return (train indices, test indices): ``test_fraction`` of every class, seeded."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_fraction))
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(train), np.sort(test)


def labelled_clouds(
    config: LidarDataConfig, path: str, split: str | None, test_fraction: float, seed: int
) -> LabelledClouds:
    """Return the labelled clouds at ``path``: the ``split`` part of a seeded stratified split
    (``test_fraction`` of each class held out), or all of them for ``split`` None."""
    clouds = open_clouds(path, config)
    csv = Path(config.labels_csv) if config.labels_csv else None
    try:
        labels, classes = cloud_labels(clouds.paths, clouds.root, config.labels, csv)
    except UserError:
        if split is not None or config.labels != "auto":
            raise
        labels, classes = [-1] * len(clouds), []  # unlabelled clouds still embed
    if split is None:
        return LabelledClouds(clouds, config, labels, classes, np.arange(len(labels)))
    train, test = stratified_split(np.asarray(labels), test_fraction, seed)
    return LabelledClouds(clouds, config, labels, classes, train if split == "train" else test)
