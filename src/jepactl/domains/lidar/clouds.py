"""Point-cloud readers: one (N, 4) float32 array of x, y, z, intensity per file, whatever format.

LiDAR data comes as KITTI ``.bin`` scans, numpy arrays, text exports (``.xyz``, ``.txt``,
``.pts``), ``.ply`` meshes and ``.las`` / ``.laz`` surveys. Every reader returns the same thing,
the points and whether the file had an intensity channel (when it has none the column is zeros,
so a model sees a constant rather than a shifted input). Intensity is returned as stored: its
range differs between sensors (KITTI 0-1, LAS 0-65535), which the recipe has to live with.

:class:`PointClouds` holds only the file paths: a data set of scans is far bigger than memory,
so each sample is read again when asked for and memory is bounded by the batch. Labels for
probes come from sub-folders, a ``file,label`` CSV or DALES object file numbers
(:func:`cloud_labels`).
"""

from __future__ import annotations

import csv as csv_module
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from jepactl.errors import DataError, UserError

SUFFIXES = (".bin", ".npy", ".npz", ".xyz", ".txt", ".pts", ".ply", ".las", ".laz")
TEXT_SUFFIXES = (".xyz", ".txt", ".pts")
LIDAR_EXTRA = 'pip install "jepactl[lidar]"'
DALES_CLASSES = ["building", "car", "fence", "pole", "tree"]
# PLY writers name the intensity channel differently (CloudCompare: scalar_intensity).
PLY_INTENSITY = ("intensity", "reflectance", "scalar_intensity")
LABEL_SOURCES = ("auto", "folder", "csv", "dales")


class _BadCloud(Exception):
    """A file's content is unusable; the message is the reason, without the file name."""


def read_cloud(path: Path) -> tuple[np.ndarray, bool]:
    """Return the points of ``path`` as (N, 4) float32 x, y, z, intensity and has_intensity.

    Raises a DataError naming the file when it is unreadable, empty or has NaN / inf values,
    and a UserError when its format needs an optional package that is not installed.
    """
    path = Path(path)
    try:
        points, has_intensity = _read(path)
    except _BadCloud as err:
        raise DataError(f"point cloud '{path}': {err}") from None
    return points, has_intensity


def _read(path: Path) -> tuple[np.ndarray, bool]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise _BadCloud(f"unsupported suffix '{path.suffix}' (supported: {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise _BadCloud("no such file")
    try:
        if suffix == ".bin":
            columns = _read_bin(path)
        elif suffix in (".npy", ".npz"):
            columns = _read_numpy(path)
        elif suffix in TEXT_SUFFIXES:
            columns = _read_text(path)
        elif suffix == ".ply":
            columns = _read_ply(path)
        else:
            columns = _read_las(path)
    except (_BadCloud, UserError):
        raise
    except Exception as err:  # each format's library raises its own types for corrupt files
        raise _BadCloud(f"unreadable ({type(err).__name__}: {err})") from None
    points = np.asarray(columns, dtype=np.float32)
    has_intensity = points.shape[1] == 4
    if not has_intensity:
        points = np.concatenate([points, np.zeros((len(points), 1), np.float32)], axis=1)
    if len(points) == 0:
        raise _BadCloud("no points")
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise _BadCloud(f"NaN or infinite values ({int((~finite).sum())} points, first {first})")
    return points, has_intensity


def _read_bin(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size % 16:
        raise _BadCloud(
            f"{size} bytes is not a multiple of 16 (a KITTI .bin holds float32 x, y, z, "
            "intensity rows)"
        )
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def _read_numpy(path: Path) -> np.ndarray:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if not loaded.files:
                raise _BadCloud("the .npz holds no array")
            array = loaded[loaded.files[0]]
    else:
        array = loaded
    if array.ndim != 2 or array.shape[1] not in (3, 4):
        raise _BadCloud(f"array of shape {array.shape}, expected N x 3 or N x 4")
    return array


def _read_text(path: Path) -> np.ndarray:
    rows = [line.replace(",", " ").split() for line in path.read_text().splitlines()]
    rows = [row for row in rows if row and not row[0].startswith(("#", "//"))]
    # A .pts file starts with its point count; a lone number never is a point.
    if rows and len(rows[0]) == 1:
        rows = rows[1:]
    if not rows:
        return np.zeros((0, 3))
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise _BadCloud(f"rows have different column counts ({sorted(widths)})")
    width = widths.pop()
    if width not in (3, 4):
        raise _BadCloud(f"{width} columns, expected 3 (x y z) or 4 (x y z intensity)")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        raise _BadCloud("non-numeric values") from None


def _read_ply(path: Path) -> np.ndarray:
    try:
        import plyfile
    except ImportError:
        raise UserError(f"reading .ply needs plyfile: {LIDAR_EXTRA}") from None
    ply = plyfile.PlyData.read(str(path))
    if "vertex" not in ply:
        raise _BadCloud("the .ply has no vertex element")
    vertex = ply["vertex"]
    names = [prop.name for prop in vertex.properties]
    missing = [axis for axis in "xyz" if axis not in names]
    if missing:
        raise _BadCloud(f"the .ply vertices have no {', '.join(missing)}")
    columns = [np.asarray(vertex[axis], np.float64) for axis in "xyz"]
    intensity = next((name for name in PLY_INTENSITY if name in names), None)
    if intensity is not None:
        columns.append(np.asarray(vertex[intensity], np.float64))
    return np.stack(columns, axis=1)


def _read_las(path: Path) -> np.ndarray:
    try:
        import laspy
    except ImportError:
        raise UserError(f"reading {path.suffix.lower()} needs laspy: {LIDAR_EXTRA}") from None
    las = laspy.read(str(path))
    columns = [np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)]
    # Every LAS point record has an intensity field; writers without a sensor value store 0.
    if "intensity" in las.point_format.dimension_names:
        intensity = np.asarray(las.intensity, np.float64)
        if intensity.any():
            columns.append(intensity)
    return np.stack(columns, axis=1)


# The text folders of the KITTI layout beside velodyne/: boxes, calibration, split lists. A
# user points --data at the data set's root; these are not clouds and are not reported as bad.
KITTI_SIDE_FOLDERS = frozenset({"label_2", "calib", "ImageSets", "planes"})


def find_clouds(root: Path) -> list[Path]:
    """Return ``root`` if it is a cloud file, else the cloud files under it (recursive, sorted,
    outside KITTI's label_2/, calib/, ImageSets/ and planes/ folders)."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in SUFFIXES:
            raise DataError(
                f"'{root}' is not a point cloud (supported suffixes: {', '.join(SUFFIXES)})"
            )
        return [root]
    if not root.is_dir():
        raise DataError(f"'{root}' does not exist")
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in SUFFIXES
        and p.is_file()
        and not KITTI_SIDE_FOLDERS & set(p.relative_to(root).parts[:-1])
    )
    if not paths:
        raise DataError(f"no point clouds in '{root}' (suffixes: {', '.join(SUFFIXES)})")
    return paths


def cloud_labels(
    paths: Sequence[Path], root: Path, source: str, csv: Path | None = None
) -> tuple[list[int], list[str]]:
    """Return the class index of each path and the class names (sorted; DALES: fixed order).

    ``source`` picks the scheme:

    * ``"folder"``: the class is the name of the first sub-folder under ``root``
      (``root/car/a.bin`` is a car), as ImageFolder does;
    * ``"csv"``: a ``file,label`` CSV (``csv``), file relative to ``root`` or a bare file name;
      a header row is allowed, a listed file may be absent, a path missing from the CSV is a
      DataError;
    * ``"dales"``: DALES object files ``NNN.xyz``, class = NNN // 100 in building, car, fence,
      pole, tree;
    * ``"auto"``: ``csv`` when a CSV is given, else ``folder`` when every file is in a
      sub-folder (not when those are only split folders such as KITTI's training/ and
      testing/), else ``dales`` when every file is named like DALES' ``NNN.xyz``, else a
      UserError.
    """
    root = Path(root)
    base = root if root.is_dir() else root.parent
    paths = [Path(p) for p in paths]
    if source not in LABEL_SOURCES:
        raise UserError(f"unknown label source '{source}' (choose from {', '.join(LABEL_SOURCES)})")
    if source == "auto":
        source = _guess_source(paths, base, csv)
    if source == "csv":
        if csv is None:
            raise UserError("labels from a CSV need the CSV file (file,label rows)")
        names = _csv_labels(paths, base, Path(csv))
    elif source == "folder":
        names = []
        for path in paths:
            parts = _relative(path, base).parts
            if len(parts) < 2:
                raise DataError(f"'{path}' is not in a class sub-folder of '{base}'")
            names.append(parts[0])
    else:
        return _dales_labels(paths), list(DALES_CLASSES)
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return [index[name] for name in names], classes


def _relative(path: Path, base: Path) -> Path:
    try:
        return path.relative_to(base)
    except ValueError:
        return Path(path.name)


SPLIT_FOLDERS = frozenset({"train", "training", "test", "testing", "val", "validation"})


def _guess_source(paths: list[Path], base: Path, csv: Path | None) -> str:
    if csv is not None:
        return "csv"
    folders = {_relative(p, base).parts[0] for p in paths if len(_relative(p, base).parts) >= 2}
    in_folders = paths and all(len(_relative(p, base).parts) >= 2 for p in paths)
    # KITTI's training/ and testing/ are splits, not classes: scans stay unlabelled.
    if in_folders and not folders <= SPLIT_FOLDERS:
        return "folder"
    # DALES' own pattern only: KITTI's 000000.bin scans are numbered too, and are not objects.
    if paths and all(p.suffix == ".xyz" and len(p.stem) == 3 and p.stem.isdigit() for p in paths):
        return "dales"
    raise UserError(
        f"cannot tell the classes of the clouds in '{base}': put each class in its own "
        "sub-folder or pass labels as a file,label CSV"
    )


def _csv_labels(paths: list[Path], base: Path, csv: Path) -> list[str]:
    if not csv.is_file():
        raise DataError(f"label CSV '{csv}' does not exist")
    with csv.open(newline="") as handle:
        rows = [[cell.strip() for cell in row] for row in csv_module.reader(handle)]
    rows = [row for row in rows if any(row)]
    keys = {_relative(p, base).as_posix() for p in paths} | {p.name for p in paths}
    table: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0] or not row[1]:
            raise DataError(f"label CSV '{csv}' line {number}: expected file,label, got {row}")
        key = Path(row[0].replace("\\", "/")).as_posix()
        # A header ("file,label") names no cloud; a data row for an absent file is harmless.
        if number == 1 and key not in keys:
            continue
        if table.get(key, row[1]) != row[1]:
            raise DataError(f"label CSV '{csv}' gives '{key}' two labels")
        table[key] = row[1]
    names = []
    for path in paths:
        relative = _relative(path, base).as_posix()
        label = table.get(relative, table.get(path.name))
        if label is None:
            raise DataError(f"label CSV '{csv}' has no row for '{relative}'")
        names.append(label)
    return names


def _dales_labels(paths: list[Path]) -> list[int]:
    labels = []
    for path in paths:
        if not path.stem.isdigit():
            raise DataError(f"'{path}' is not a DALES object file (its name must be a number)")
        label = int(path.stem) // 100
        if label >= len(DALES_CLASSES):
            raise DataError(
                f"'{path}': DALES object numbers run to {len(DALES_CLASSES) * 100 - 1} "
                f"(class = number // 100: {', '.join(DALES_CLASSES)})"
            )
        labels.append(label)
    return labels


class PointClouds(Dataset):
    """The usable clouds under ``root``; item i is file i's (N, 4) float32 points, re-read.

    Every file is read once here so a corrupt one is skipped (and listed in ``skipped``) now
    rather than failing a training step hours later; with ``point_range`` [x0, y0, z0, x1, y1,
    z1] a cloud with no point inside it is skipped too, since it would give an empty grid.
    """

    def __init__(self, root: str | Path, point_range: Sequence[float] | None = None) -> None:
        self.root = Path(root)
        if point_range is not None and len(point_range) != 6:
            raise UserError(
                f"point_range needs 6 numbers [x0, y0, z0, x1, y1, z1], got {list(point_range)}"
            )
        base = self.root if self.root.is_dir() else self.root.parent
        self.paths: list[Path] = []
        self.skipped: list[str] = []
        self.without_intensity = 0
        for path in find_clouds(self.root):
            name = _relative(path, base).as_posix()
            try:
                points, has_intensity = _read(path)
            except _BadCloud as err:
                self.skipped.append(f"{name}: {err}")
                continue
            if point_range is not None and not _any_inside(points, point_range):
                self.skipped.append(f"{name}: no point inside the range")
                continue
            self.paths.append(path)
            self.without_intensity += not has_intensity
        if not self.paths:
            first = self.skipped[0] if self.skipped else "none found"
            raise DataError(
                f"no usable point clouds in '{self.root}' ({len(self.skipped)} skipped: {first})"
            )

    @property
    def notices(self) -> list[str]:
        """What the reader filled in, for the trainer to print once."""
        if not self.without_intensity:
            return []
        return [
            f"{self.without_intensity} of {len(self.paths)} clouds have no intensity channel: "
            "read as 0"
        ]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_cloud(self.paths[index])[0]


def _any_inside(points: np.ndarray, point_range: Sequence[float]) -> bool:
    """Whether a point lies in [x0, x1) x [y0, y1) x [z0, z1), the pillar grid's convention."""
    low = np.asarray(point_range[:3], np.float32)
    high = np.asarray(point_range[3:], np.float32)
    xyz = points[:, :3]
    return bool(((xyz >= low) & (xyz < high)).all(axis=1).any())
