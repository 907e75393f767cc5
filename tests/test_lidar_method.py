"""AD-L-JEPA and the occupancy baseline (domains/lidar): masks, losses, probes, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.domains.lidar.bev import (
    BEVMaskCollate,
    LidarDataConfig,
    normalise_pillars,
    place,
    stratified_split,
    to_grid,
)
from jepactl.domains.lidar.bev_masks import cells_to_pillars, draw_cell_masks, occupied_cells
from jepactl.domains.lidar.clouds import find_clouds
from jepactl.domains.lidar.method import masked_inputs, variance_hinge
from jepactl.domains.lidar.pillars import PillarGrid
from jepactl.domains.lidar.probe import HANDCRAFTED, handcrafted_features
from jepactl.recipe import load_recipe

OBJECTS = "lidar/ad-l-jepa-objects-cpu"
TINY = [
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.blocks=1",
    "data.grid.cell=0.25",  # 8 x 8 pillars, 4 x 4 cells
    "train.batch_size=4",
    "train.num_workers=0",
    "train.precision=fp32",
    "train.log_every=1",
]


def object_folder(root, per_class=6, seed=0):
    """Two classes a point-cloud person tells apart: vertical poles and flat slabs."""
    rng = np.random.default_rng(seed)
    for name in ("pole", "slab"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            n = 200
            if name == "pole":
                xyz = np.c_[rng.normal(0, 0.1, (n, 2)), rng.uniform(0, 8, n)]
            else:
                xyz = np.c_[rng.uniform(-4, 4, (n, 2)), rng.normal(0, 0.05, n)]
            np.savetxt(root / name / f"{i}.xyz", xyz + rng.normal(0, 50, 3))
    return root


def batch_of(grid_cells=8, downsample=2, seed=0, ratio=0.5):
    rng = np.random.default_rng(seed)
    grid = PillarGrid(point_range=[0, 0, 0, grid_cells, grid_cells, 2], cell=1.0)
    clouds = [
        np.c_[rng.uniform(0, grid_cells, (60, 2)), rng.uniform(0, 2, (60, 2))].astype(np.float32)
        for _ in range(3)
    ]
    samples = [{"points": c, "batch_seed": 11} for c in clouds]
    return BEVMaskCollate(grid, downsample, ratio)(samples), grid


def test_cell_masks_tile_every_sample_and_keep_the_reference_share_of_non_empty_cells():
    occupied = torch.zeros(3, 4, 5, dtype=torch.bool)
    occupied[0, :2] = True  # 10 non-empty cells
    occupied[1, 0, 0] = True  # 1: it stays context (at least one)
    masks = draw_cell_masks(occupied, 0.5, torch.Generator().manual_seed(0))
    stacked = torch.stack(list(masks.values())).long()
    assert bool((stacked.sum(0) == 1).all())  # disjoint, and they cover every cell
    assert masks["context_cells"].flatten(1).sum(1).tolist() == [5, 1, 0]
    assert bool((masks["context_cells"] | masks["target_cells"]).eq(occupied).all())
    assert not bool((masks["context_empty"] & occupied).any())
    again = draw_cell_masks(occupied, 0.5, torch.Generator().manual_seed(0))
    assert all(torch.equal(masks[k], again[k]) for k in masks)  # a resumed run draws the same
    big = draw_cell_masks(torch.zeros(1, 100, 100, dtype=torch.bool), 0.5, torch.Generator())
    assert 0.45 < big["context_empty"].float().mean() < 0.55


def test_occupied_cells_and_their_pillars_round_up_an_odd_grid():
    grids = torch.zeros(1, 9, 5, 5)
    grids[0, 8, 4, 4] = 1.0  # the last pillar: its own, partial cell
    cells = occupied_cells(grids, 2)
    assert cells.shape == (1, 3, 3) and cells.nonzero().tolist() == [[0, 2, 2]]
    pillars = cells_to_pillars(cells, 2, 5, 5)
    assert pillars.shape == (1, 5, 5) and pillars.nonzero().tolist() == [[0, 4, 4]]


def test_the_context_encoder_never_sees_a_target_point_and_the_target_never_a_context_one():
    batch, _ = batch_of()
    context = masked_inputs(batch, 2, "context_cells")
    target = masked_inputs(batch, 2, "target_cells")
    full = batch["grid"][:, 8] > 0
    seen_context = context[:, 8] > 0
    seen_target = target[:, 8] > 0
    assert not bool((seen_context & seen_target).any())
    assert bool((seen_context | seen_target).eq(full).all())  # every point goes to one side
    assert bool(seen_context.any()) and bool(seen_target.any())


def test_normalised_pillars_lie_in_the_unit_range_and_empty_pillars_stay_zero():
    grid = PillarGrid(point_range=[0, -4, -1, 8, 4, 1], cell=1.0)
    rng = np.random.default_rng(1)
    cloud = np.c_[
        rng.uniform(0, 4, (500, 1)),
        rng.uniform(-4, 4, (500, 1)),
        rng.uniform(-1, 1, (500, 1)),
        rng.uniform(0, 1, (500, 1)),
    ]
    features = to_grid([cloud.astype(np.float32)], grid)
    full = features[:, 8] > 0
    assert features.min() >= 0 and features.max() <= 1.0 + 1e-6
    assert bool(full[..., :4].all()) and not bool(full[..., 4:].any())  # x in [0, 4) only
    assert float(features[..., 4:].abs().sum()) == 0.0
    raw = torch.ones(1, 9, 1, 1) * 2.0
    raw[:, 8] = 0.0  # an empty pillar with stray values is zeroed
    assert float(normalise_pillars(raw, grid).abs().sum()) == 0.0


def test_objects_are_centred_or_fitted_into_the_window():
    config = LidarDataConfig(objects="fit", grid=PillarGrid([-1, -1, 0, 1, 1, 2], 0.125))
    cloud = np.array([[100, 200, 50, 0], [110, 200, 50, 0], [100, 200, 90, 0]], np.float32)
    fitted = place(cloud, config)
    assert np.abs(fitted[:, :2]).max() < 1 and fitted[:, 2].min() == 0 and fitted[:, 2].max() < 2
    config.objects = "centre"
    centred = place(cloud, config)
    assert centred[:, 2].max() == pytest.approx(40.0)  # metres kept
    assert np.allclose(centred[:, :2].mean(0), 0, atol=1e-4)


def test_the_variance_hinge_matches_its_closed_form():
    constant = torch.ones(2, 3, 4, 4)
    cells = torch.ones(2, 4, 4, dtype=torch.bool)
    expected = 1 / 16 - np.sqrt(1e-4)  # zero variance: floor - sqrt(eps) in every channel
    assert variance_hinge(constant, cells, 1 / 16).item() == pytest.approx(expected, rel=1e-5)
    spread = torch.randn(2, 3, 4, 4) * 10
    assert variance_hinge(spread, cells, 1 / 16).item() == 0.0
    one_cell = torch.zeros(2, 4, 4, dtype=torch.bool)
    one_cell[:, 0, 0] = True  # fewer than two cells: no variance to measure
    assert variance_hinge(constant, one_cell, 1 / 16).item() == 0.0


def test_ad_l_jepa_trains_predictor_and_tokens_but_not_the_target_and_is_zero_at_the_target():
    from jepactl.domains.lidar.method import build

    recipe = load_recipe("lidar/ad-l-jepa-cpu", [*TINY[:3]])
    model = build(recipe)
    batch, _ = batch_of()
    out = model(batch)
    out["loss"].backward()
    assert model.empty_token.grad.abs().sum() > 0  # through the target-empty cells
    assert model.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert set(out) >= {"jepa_loss", "nonempty_loss", "empty_loss", "variance_loss"}
    model.zero_grad()
    # A predictor that returns the target exactly leaves only the variance hinge.
    target = model.target_encoder(masked_inputs(batch, 2, "target_cells")).detach()
    target = torch.where(
        batch["target_empty"][:, None], model.empty_token.view(1, -1, 1, 1), target
    )
    model.predictor = Returns(target)
    out = model(batch)
    assert out["jepa_loss"].item() == pytest.approx(0.0, abs=1e-5)


def test_occupancy_loss_is_the_bce_and_density_error_on_masked_pillars_only():
    from jepactl.domains.lidar.occupancy import build

    recipe = load_recipe("lidar/occupancy-mae-cpu", [*TINY[:3]])
    model = build(recipe)
    batch, _ = batch_of()
    fixed = torch.randn(3, 2, 8, 8)
    model.to_pillars = Returns(fixed)
    out = model(batch)
    masked = batch["target_cells"] | batch["target_empty"]
    region = cells_to_pillars(masked, 2, 8, 8)
    counts = batch["grid"][:, 8]
    occupied = counts > 0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        fixed[:, 0][region], occupied[region].float()
    )
    density = (fixed[:, 1] - counts)[region & occupied].abs().mean()
    assert out["occupancy_loss"].item() == pytest.approx(bce.item(), rel=1e-5)
    assert out["density_loss"].item() == pytest.approx(density.item(), rel=1e-5)


def test_handcrafted_features_tell_a_pole_from_a_roof():
    rng = np.random.default_rng(0)
    pole = np.c_[rng.normal(0, 0.05, (300, 2)), rng.uniform(0, 10, 300)]
    roof = np.c_[rng.uniform(-5, 5, (300, 2)), rng.normal(0, 0.02, 300)]
    named = lambda cloud: dict(zip(HANDCRAFTED, handcrafted_features(cloud)))  # noqa: E731
    p, r = named(pole), named(roof)
    assert len(handcrafted_features(pole)) == len(HANDCRAFTED)
    assert p["linearity"] > 0.95 and p["verticality_first"] > 0.99
    assert r["planarity"] > 0.9 and r["verticality_last"] > 0.99
    assert p["height_range"] == pytest.approx(10, abs=0.2) and r["height_range"] < 0.3


def test_the_stratified_split_holds_out_the_same_share_of_every_class():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    train, test = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[test]).tolist() == [10, 6, 4]
    assert sorted(np.r_[train, test].tolist()) == list(range(100))
    assert not np.array_equal(test, stratified_split(labels, 0.2, seed=4)[1])


def test_kitti_side_folders_are_not_taken_for_clouds(tmp_path):
    (tmp_path / "training" / "velodyne").mkdir(parents=True)
    (tmp_path / "training" / "label_2").mkdir()
    np.zeros((5, 4), np.float32).tofile(tmp_path / "training" / "velodyne" / "000000.bin")
    (tmp_path / "training" / "label_2" / "000000.txt").write_text("Car 0 0 0 0 0 0 0\n")
    assert [p.name for p in find_clouds(tmp_path)] == ["000000.bin"]
    from jepactl.domains.lidar.clouds import cloud_labels
    from jepactl.errors import UserError

    with pytest.raises(UserError, match="cannot tell the classes"):  # training/ is a split
        cloud_labels(find_clouds(tmp_path), tmp_path, "auto")


class Returns(torch.nn.Module):
    """A stand-in head that returns a fixed tensor, whatever its input."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, _):
        return self.value


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_cli_pretrains_probes_three_ways_and_embeds_one_vector_per_cloud(tmp_path):
    data = object_folder(tmp_path / "objects")
    run = tmp_path / "run"
    done = invoke("pretrain", OBJECTS, "--data", data, *TINY, "--out", run, "--max-steps", 3)
    assert done.exit_code == 0, done.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert "12 of 12 clouds have no intensity channel" in " ".join(done.output.split())
    results = {}
    for features in ("encoder", "handcrafted", "pillars"):
        probed = invoke(
            "probe", run, f"probe.features={features}", "probe.test_fraction=0.5", "--json"
        )
        assert probed.exit_code == 0, probed.output
        out = json.loads(probed.stdout)["results"]
        assert out["encoder"] != "encoder" and out["test_samples"] == 6
        results[features] = out
    # A scan-sized window in metres (objects up to 8 m, centred): new features, cached apart.
    cached = len(list((run / "cache").glob("features-*")))
    moved = invoke(
        "probe",
        run,
        "probe.objects=centre",
        "probe.grid.point_range=[-10,-10,0,10,10,20]",
        "probe.grid.cell=1.0",
        "probe.test_fraction=0.5",
        "--json",
    )
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["results"]["test_samples"] == 6
    assert len(list((run / "cache").glob("features-*"))) == cached + 2  # train and test
    # Poles and slabs: the hand-made shape features separate them perfectly.
    assert results["handcrafted"]["linear_balanced_accuracy"] == 1.0
    embedded = invoke("embed", run, "--data", data, "--out", tmp_path / "vectors.npy")
    assert embedded.exit_code == 0, embedded.output
    assert np.load(tmp_path / "vectors.npy").shape == (12, 2 * 16)  # mean and max of 16 channels
    rows = (tmp_path / "vectors.index.csv").read_text().splitlines()[1:]
    assert rows[0] == f"0,{data / 'pole' / '0.xyz'},0,pole" and rows[-1].endswith(",1,slab")
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):  # unlabelled clouds embed too
        np.random.default_rng(i).uniform(-1, 1, (50, 4)).astype(np.float32).tofile(
            scans / f"{i}.bin"
        )
    embedded = invoke("embed", run, "--data", scans, "--out", tmp_path / "scans.npy")
    assert embedded.exit_code == 0, embedded.output
    assert np.load(tmp_path / "scans.npy").shape == (2, 32)
    index = (tmp_path / "scans.index.csv").read_text().splitlines()
    assert index[0] == "index,id,label,class" and index[2].startswith(f"1,{scans / '1.bin'},-1,")


def test_a_folder_without_a_usable_cloud_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.xyz").write_text("")
    (bad / "short.bin").write_bytes(b"\0" * 20)
    done = invoke("pretrain", OBJECTS, "--data", bad, *TINY, "--out", tmp_path / "run")
    assert done.exit_code == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no usable point clouds" in lines[0], lines
