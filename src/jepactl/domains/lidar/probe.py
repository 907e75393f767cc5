"""``jepactl probe RUN`` on a LiDAR run: frozen pooled BEV features or hand-made shape features.

``probe.features: encoder`` (default) is the shared classification probe (evaluate/probe.py):
the encoder's pooled BEV map (mean and max over the cells holding points) -> logistic
regression and kNN, on a seeded stratified split (``probe.test_fraction`` of every class held
out, ``probe.seed``), accuracy and balanced accuracy.

``probe.features: handcrafted`` scores the same classifiers on the same split with features a
point-cloud person computes without learning anything: per object, from its raw cloud (real
size kept, whereas ``data.objects: fit`` scales it away for the encoder),

* the covariance eigenvalues l1 >= l2 >= l3 of xyz: linearity (l1 - l2) / l1, planarity
  (l2 - l3) / l1, sphericity l3 / l1, omnivariance (l1 l2 l3)^(1/3) / l1, change of curvature
  l3 / (l1 + l2 + l3), and the verticality of the first and last eigenvectors (|z|);
* height: range, std, and the 10/50/90th percentiles above the lowest point;
* horizontal extent (both axes of the xy covariance, as std), point count (log) and point
  density (log points per m^2 of the xy footprint).

``probe.features: pillars`` is the raw input: the encoder's own pillar grid, average-pooled to
8 x 8 cells per channel (576 numbers), through the same classifiers.

``probe.grid`` / ``probe.objects`` place the probe's clouds differently from the run's data
(a KITTI-scan encoder probed on object clouds needs an object window); unset, the run's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from jepactl.domains.lidar.pillars import PillarGrid
from jepactl.evaluate.probe import classification_probe, score_classifiers
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import labelled_splits
from jepactl.methods.probe_request import ProbeRequest
from jepactl.recipe import ProbeConfig


@dataclass
class LidarProbeConfig(ProbeConfig):
    features: Literal["encoder", "handcrafted", "pillars"] = "encoder"
    grid: PillarGrid | None = None  # None: the run's data.grid
    objects: Literal["none", "centre", "fit"] | None = None  # None: the run's data.objects


HANDCRAFTED = (
    "linearity planarity sphericity omnivariance curvature verticality_first verticality_last "
    "height_range height_std height_p10 height_p50 height_p90 extent_major extent_minor "
    "log_points log_density"
).split()


def handcrafted_features(points: np.ndarray) -> np.ndarray:
    """Return the :data:`HANDCRAFTED` shape and height features of one cloud (N, >= 3)."""
    xyz = np.asarray(points[:, :3], dtype=np.float64)
    centred = xyz - xyz.mean(0)
    cov = centred.T @ centred / max(1, len(xyz) - 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    l3, l2, l1 = np.maximum(values, 1e-12)
    total = l1 + l2 + l3
    height = xyz[:, 2] - xyz[:, 2].min()
    xy_values = np.maximum(np.linalg.eigvalsh(cov[:2, :2]), 0.0)
    extent_minor, extent_major = np.sqrt(xy_values)
    area = max(4.0 * extent_major * extent_minor, 1e-2)  # +-1 std rectangle, at least 0.1 m^2
    p10, p50, p90 = np.percentile(height, [10, 50, 90])
    return np.array(
        [
            (l1 - l2) / l1,
            (l2 - l3) / l1,
            l3 / l1,
            np.cbrt(l1 * l2 * l3) / l1,
            l3 / total,
            abs(vectors[2, 2]),  # the first (largest) eigenvector's z
            abs(vectors[2, 0]),  # the normal's z: 1 for a roof, 0 for a wall
            float(np.ptp(height)),
            float(height.std()),
            p10,
            p50,
            p90,
            extent_major,
            extent_minor,
            np.log(len(xyz)),
            np.log(len(xyz) / area),
        ],
        dtype=np.float32,
    )


def handcrafted_table(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (features (N, 16), labels (N,)) of a labelled cloud set (or a Subset of one)."""
    rows = [handcrafted_features(dataset.cloud(i)) for i in range(len(dataset))]
    return torch.from_numpy(np.stack(rows)), dataset.labels.clone()


RAW_CELLS = 8  # the raw-input baseline's pooled grid side


def pillar_table(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (the pillar grids average-pooled to 8 x 8, flattened (N, 576), labels (N,))."""
    rows = []
    for i in range(len(dataset)):
        grid, _ = dataset[i]
        rows.append(F.adaptive_avg_pool2d(grid[None], RAW_CELLS).flatten())
    return torch.stack(rows), dataset.labels.clone()


def with_probe_placement(recipe):
    """Return the recipe with ``probe.grid`` / ``probe.objects`` put into its data section."""
    cfg: LidarProbeConfig = recipe.probe
    changes = {}
    if cfg.grid is not None:
        changes["grid"] = cfg.grid
    if cfg.objects is not None:
        changes["objects"] = cfg.objects
    if not changes:
        return recipe
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, **changes))


def run_probe(request: ProbeRequest, recipe) -> dict:
    request.refuse_options(
        "--views",
        "--rollouts",
        "--shots",
        "--target",
        "--task",
        "--head",
        probe="the LiDAR probe",
        why="it classifies whole clouds with linear and kNN heads",
    )
    recipe = with_probe_placement(recipe)
    cfg: LidarProbeConfig = recipe.probe
    if cfg.features == "encoder":
        return classification_probe(request, recipe)
    train_set, test_set, described = labelled_splits(
        recipe, request.data, request.test, cfg.test_fraction, cfg.seed
    )
    table = handcrafted_table if cfg.features == "handcrafted" else pillar_table
    train_x, train_y = table(train_set)
    test_x, test_y = table(test_set)
    rows, train_samples = score_classifiers(
        train_x,
        train_y,
        test_x,
        test_y,
        len(train_set.classes),
        cfg,
        request.seeds,
        request.labels_fraction,
    )
    report = {
        "data": described,
        "encoder": cfg.features,
        "train_samples": train_samples,
        "test_samples": len(test_y),
    }
    return {**report, **aggregate(rows)}
