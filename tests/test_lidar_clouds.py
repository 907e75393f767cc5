"""LiDAR readers and pillar grids (domains/lidar): formats, bad files, labels, the scatter."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jepactl.domains.lidar.clouds import PointClouds, cloud_labels, find_clouds, read_cloud
from jepactl.domains.lidar.pillars import (
    PILLAR_FEATURES,
    PillarGrid,
    collate_clouds,
    fit_to_window,
    flip_rotate_scale,
    scatter_pillars,
)
from jepactl.errors import DataError, UserError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidar"
POINTS = np.array(
    [[1.5, -2.25, 0.5, 0.1], [3.0, 4.0, -1.0, 0.7], [-0.5, 0.25, 2.0, 0.0]], dtype=np.float32
)


def write_text(path, rows, sep=" ", first=None):
    lines = ([first] if first is not None else []) + [sep.join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_format_reads_back_the_points_it_was_written_with(tmp_path):
    POINTS.tofile(tmp_path / "a.bin")
    np.save(tmp_path / "a.npy", POINTS)
    np.savez(tmp_path / "a.npz", points=POINTS, other=np.zeros(3))
    write_text(tmp_path / "a.txt", POINTS.tolist(), sep=",")
    write_text(tmp_path / "a.pts", POINTS.tolist(), first="3")
    for name in ("a.bin", "a.npy", "a.npz", "a.txt", "a.pts"):
        points, has_intensity = read_cloud(tmp_path / name)
        assert points.dtype == np.float32 and has_intensity, name
        np.testing.assert_allclose(points, POINTS, rtol=1e-6, err_msg=name)


def test_three_columns_read_with_zero_intensity(tmp_path):
    write_text(tmp_path / "a.xyz", POINTS[:, :3].tolist())
    np.save(tmp_path / "b.npy", POINTS[:, :3].astype(np.float64))
    for name in ("a.xyz", "b.npy"):
        points, has_intensity = read_cloud(tmp_path / name)
        assert points.shape == (3, 4) and not has_intensity
        np.testing.assert_allclose(points[:, :3], POINTS[:, :3], rtol=1e-6)
        assert (points[:, 3] == 0).all()


def test_ply_reads_vertices_and_reflectance(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    vertices = np.array(
        [tuple(p) for p in POINTS.tolist()],
        dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("reflectance", "f4")],
    )
    plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")]).write(tmp_path / "a.ply")
    points, has_intensity = read_cloud(tmp_path / "a.ply")
    assert has_intensity
    np.testing.assert_allclose(points, POINTS, rtol=1e-6)


def test_las_reads_scaled_coordinates_and_intensity(tmp_path):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([1000.0, 2000.0, 0.0])
    las = laspy.LasData(header)
    las.x, las.y, las.z = POINTS[:, 0] + 1000, POINTS[:, 1] + 2000, POINTS[:, 2]
    las.intensity = np.array([10, 700, 0], dtype=np.uint16)
    las.write(tmp_path / "a.las")
    points, has_intensity = read_cloud(tmp_path / "a.las")
    assert has_intensity and points.shape == (3, 4)
    np.testing.assert_allclose(points[:, :3] - [1000, 2000, 0], POINTS[:, :3], atol=2e-3)
    assert points[:, 3].tolist() == [10, 700, 0]


def test_ply_without_plyfile_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "plyfile", None)  # import plyfile now raises ImportError
    (tmp_path / "a.ply").write_text("ply\n")
    with pytest.raises(UserError, match=r"plyfile: pip install \"jepactl\[lidar\]\""):
        read_cloud(tmp_path / "a.ply")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.xyz", "", "no points"),
        ("short.bin", bytes(20), "20 bytes is not a multiple of 16"),
        ("two.txt", "1 2\n3 4\n", "2 columns"),
        ("nan.xyz", "1 2 3\nnan 2 3\n", "NaN"),
        ("words.xyz", "a b c\n", "non-numeric"),
        ("ragged.xyz", "1 2 3\n1 2 3 4\n", "different column counts"),
        ("bad.npy", b"not numpy", "unreadable"),
    ],
)
def test_bad_files_raise_a_data_error_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=reason) as caught:
        read_cloud(path)
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_find_clouds_recurses_sorted_and_names_an_empty_folder(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/z.bin", "a.XYZ", "notes.md", "c.pts"):
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in find_clouds(tmp_path)] == [
        "a.XYZ",
        "b/z.bin",
        "c.pts",
    ]
    assert find_clouds(tmp_path / "c.pts") == [tmp_path / "c.pts"]
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="none"):
        find_clouds(tmp_path / "none")


def test_point_clouds_skip_and_count_bad_files_and_reread_on_access(tmp_path):
    POINTS.tofile(tmp_path / "a.bin")
    write_text(tmp_path / "b.xyz", POINTS[:, :3].tolist())
    (tmp_path / "c.bin").write_bytes(bytes(20))
    (tmp_path / "d.xyz").write_text("")
    far = POINTS.copy()
    far[:, 0] += 1000
    far.tofile(tmp_path / "e.bin")

    clouds = PointClouds(tmp_path)
    assert len(clouds) == 3 and clouds.without_intensity == 1
    assert [s.split(":")[0] for s in clouds.skipped] == ["c.bin", "d.xyz"]
    np.testing.assert_array_equal(clouds[0], POINTS)

    ranged = PointClouds(tmp_path, point_range=[-10, -10, -10, 10, 10, 10])
    assert [p.name for p in ranged.paths] == ["a.bin", "b.xyz"]
    assert ranged.skipped[-1] == "e.bin: no point inside the range"


def test_point_clouds_raise_when_no_cloud_is_usable(tmp_path):
    (tmp_path / "c.bin").write_bytes(bytes(20))
    (tmp_path / "d.xyz").write_text("")
    with pytest.raises(DataError, match=r"no usable point clouds .* \(2 skipped: c.bin: 20 bytes"):
        PointClouds(tmp_path)


def test_labels_from_folders_csv_and_dales_numbers(tmp_path):
    paths = []
    for name in ("tree/1.bin", "car/x/2.bin", "car/3.bin"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
        paths.append(tmp_path / name)
    assert cloud_labels(paths, tmp_path, "folder") == ([1, 0, 0], ["car", "tree"])
    assert cloud_labels(paths, tmp_path, "auto") == ([1, 0, 0], ["car", "tree"])

    table = tmp_path / "labels.csv"
    table.write_text("file,label\ntree/1.bin,b\ncar/x/2.bin,a\n3.bin,c\nabsent.bin,z\n")
    assert cloud_labels(paths, tmp_path, "csv", table) == ([1, 0, 2], ["a", "b", "c"])
    assert cloud_labels(paths, tmp_path, "auto", table) == ([1, 0, 2], ["a", "b", "c"])
    table.write_text("tree/1.bin,b\n3.bin,c\n")
    with pytest.raises(DataError, match="car/x/2.bin"):
        cloud_labels(paths, tmp_path, "csv", table)

    dales = [tmp_path / "007.xyz", tmp_path / "150.xyz", tmp_path / "499.xyz"]
    expected = ([0, 1, 4], ["building", "car", "fence", "pole", "tree"])
    assert cloud_labels(dales, tmp_path, "dales") == expected
    assert cloud_labels(dales, tmp_path, "auto") == expected
    with pytest.raises(UserError, match="labels"):
        cloud_labels([tmp_path / "a.xyz", tmp_path / "007.xyz"], tmp_path, "auto")
    with pytest.raises(UserError, match="source"):
        cloud_labels(dales, tmp_path, "colour")


def test_pillar_grid_size_and_validation():
    grid = PillarGrid()
    assert (grid.width, grid.height) == (176, 200)
    grid.validate()
    with pytest.raises(UserError, match="'data.grid.cell'"):
        PillarGrid(cell=0).validate()
    with pytest.raises(UserError, match="'data.grid.point_range'.*y1"):
        PillarGrid(point_range=[0, 5, -3, 10, 5, 1]).validate()


def test_scatter_pillars_puts_exact_statistics_in_the_right_cells():
    grid = PillarGrid(point_range=[0, -2, -1, 4, 2, 1], cell=1.0)  # W = 4 (x), H = 4 (y)
    points = torch.tensor(
        [
            [0.2, -1.9, 0.5, 0.4],  # cloud 0, row 0, col 0
            [0.6, -1.1, -0.5, 0.8],  # cloud 0, row 0, col 0
            [3.5, 1.5, 0.0, 1.0],  # cloud 1, row 3, col 3
            [4.0, 0.0, 0.0, 1.0],  # x == x1: outside
            [1.0, 0.0, 1.0, 1.0],  # z == z1: outside
            [-0.1, 0.0, 0.0, 1.0],  # x < x0: outside
        ]
    )
    batch = torch.tensor([0, 0, 1, 0, 1, 1])
    features, counts = scatter_pillars(points, batch, 2, grid)
    assert features.shape == (2, PILLAR_FEATURES, 4, 4) and counts.shape == (2, 4, 4)
    assert counts.sum() == 3 and counts[0, 0, 0] == 2 and counts[1, 3, 3] == 1
    expected = [0.4, -1.5, 0.0, 0.4 - 0.5, -1.5 + 1.5, 0.6, 0.5, -0.5, math.log(3)]
    torch.testing.assert_close(features[0, :, 0, 0], torch.tensor(expected))
    expected = [3.5, 1.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, math.log(2)]
    torch.testing.assert_close(features[1, :, 3, 3], torch.tensor(expected))
    features[0, :, 0, 0] = 0
    features[1, :, 3, 3] = 0
    assert (features == 0).all()


def reference_pillars(points, batch, batch_size, grid):
    """The pillar features computed one point and one pillar at a time."""
    x0, y0, z0, x1, y1, z1 = grid.point_range
    groups = {}
    for point, b in zip(points.tolist(), batch.tolist()):
        x, y, z, _ = point
        if x0 <= x < x1 and y0 <= y < y1 and z0 <= z < z1:
            col, row = math.floor((x - x0) / grid.cell), math.floor((y - y0) / grid.cell)
            groups.setdefault((b, row, col), []).append(point)
    features = np.zeros((batch_size, PILLAR_FEATURES, grid.height, grid.width))
    counts = np.zeros((batch_size, grid.height, grid.width), dtype=np.int64)
    for (b, row, col), members in groups.items():
        p = np.array(members)
        centre = np.array([x0 + (col + 0.5) * grid.cell, y0 + (row + 0.5) * grid.cell])
        mean = p.mean(axis=0)
        features[b, :, row, col] = [
            *mean[:3],
            *(mean[:2] - centre),
            mean[3],
            p[:, 2].max(),
            p[:, 2].min(),
            math.log1p(len(p)),
        ]
        counts[b, row, col] = len(p)
    return features, counts


def test_scatter_pillars_matches_a_per_pillar_loop_on_a_random_batch():
    rng = np.random.default_rng(0)
    grid = PillarGrid(point_range=[-4, -3, -2, 4, 3, 2], cell=0.5)  # 16 x 12 pillars
    clouds = [(rng.normal(size=(n, 4)) * [3, 2.5, 1.5, 1]).astype(np.float32) for n in (1800, 1400)]
    points, batch = collate_clouds(clouds)
    assert points.shape == (3200, 4) and batch.tolist() == [0] * 1800 + [1] * 1400
    features, counts = scatter_pillars(points, batch, 2, grid)
    expected_features, expected_counts = reference_pillars(points.numpy(), batch.numpy(), 2, grid)
    assert 0 < counts.sum() < 3200  # some points fall outside, some inside
    np.testing.assert_array_equal(counts.numpy(), expected_counts)
    np.testing.assert_allclose(features.numpy(), expected_features, atol=2e-5)


def cross(points):
    """z of the cross product of the first two points' x, y: rotations keep its sign."""
    return points[0, 0] * points[1, 1] - points[0, 1] * points[1, 0]


def test_flip_rotate_scale_keeps_distances_to_the_z_axis_up_to_the_scale():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(500, 4)).astype(np.float32)
    flipped = 0
    for _ in range(20):
        out = flip_rotate_scale(points, rng, scale=(0.9, 1.1))
        assert out is not points and out.dtype == np.float32
        ratio = np.hypot(out[:, 0], out[:, 1]) / np.hypot(points[:, 0], points[:, 1])
        scale = out[:, 2] / points[:, 2]
        np.testing.assert_allclose(ratio, scale[0], rtol=1e-4)
        np.testing.assert_allclose(scale, scale[0], rtol=1e-4)
        assert 0.9 <= scale[0] <= 1.1
        np.testing.assert_array_equal(out[:, 3], points[:, 3])
        # A flip reverses the orientation, a rotation or positive scale does not.
        flipped += np.sign(cross(out)) != np.sign(cross(points))
    assert 0 < flipped < 20
    unchanged = flip_rotate_scale(points, rng, flip=False, rotation=0.0, scale=(1.0, 1.0))
    np.testing.assert_allclose(unchanged, points, rtol=1e-6)


def test_fit_to_window_centres_grounds_and_scales_an_object():
    rng = np.random.default_rng(2)
    points = (rng.normal(size=(300, 4)) * [8, 3, 5, 1] + [500, -20, 40, 0]).astype(np.float32)
    out = fit_to_window(points, half_width=2.0)
    radius = np.hypot(out[:, 0], out[:, 1])
    assert radius.max() == pytest.approx(2.0, rel=1e-5)
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0, atol=1e-5)
    assert out[:, 2].min() == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(out[:, 3], points[:, 3])
    pole = np.array([[0, 0, 0, 0], [0.1, 0, 0, 0], [0, 0, 10, 0]], np.float32)
    tall = fit_to_window(pole, half_width=2.0)  # height, not radius, sets the scale
    assert tall[:, 2].max() == pytest.approx(4.0) and np.hypot(tall[:, 0], tall[:, 1]).max() < 2
    single = fit_to_window(np.array([[5.0, 6.0, 7.0, 0.3]], np.float32), 2.0)
    np.testing.assert_array_equal(single, np.array([[0.0, 0.0, 0.0, 0.3]], np.float32))


def test_a_real_kitti_scan_and_a_dales_object_read():
    kitti = sorted((DATA / "kitti_sample" / "training" / "velodyne").glob("*.bin"))
    dales = DATA / "dales_objects" / "000.xyz"
    if not kitti or not dales.is_file():
        pytest.skip("the shared LiDAR samples are not here")
    points, has_intensity = read_cloud(kitti[0])
    assert points.shape[1] == 4 and len(points) > 100_000 and has_intensity
    assert 0 <= points[:, 3].min() and points[:, 3].max() <= 1
    points, has_intensity = read_cloud(dales)
    assert len(points) > 0 and not has_intensity and (points[:, 3] == 0).all()
