"""Image readers: class folders, Hugging Face parquet/arrow, and the built-in shapes set.

Every reader produces an :class:`ImageSource`: ``len``, ``load(i) -> PIL.Image``, a label per
item (or -1) and class names. Sources know nothing about models. Splits: a folder with
``train/`` and ``test/`` (or ``val/``) sub-folders, parquet files named ``train-*.parquet`` /
``test-*.parquet``, or a ``datasets`` DatasetDict saved with ``save_to_disk``.

Unreadable data is a one-line DataError at open time, not a traceback mid-training: a folder
must hold at least one image that decodes, and every parquet file's footer must read.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from jepactl.data.shapes import SHAPES_CLASSES, render_shape
from jepactl.errors import DataError

log = logging.getLogger("jepactl")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_ALIASES = {"train": ("train", "training"), "test": ("test", "testing", "val", "validation")}
BUILTIN_PREFIX = "builtin:"


@dataclass
class ImageSource:
    """A random-access list of images with optional integer labels."""

    name: str
    size: int
    loader: Callable[[int], Image.Image]
    labels: np.ndarray  # int64, -1 where unlabelled
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files that could not be read
    files: list[Path] = field(default_factory=list)  # item i's file (folders only)

    def __len__(self) -> int:
        return self.size

    def load(self, index: int) -> Image.Image:
        return self.loader(index)

    @property
    def has_labels(self) -> bool:
        return bool(self.classes) and bool((self.labels >= 0).all())


# ------------------------------------------------------------------------------ folders


def _split_dir(root: Path, split: str) -> Path | None:
    for alias in SPLIT_ALIASES.get(split, (split,)):
        if (root / alias).is_dir():
            return root / alias
    return None


def _has_split_dirs(root: Path) -> bool:
    return _split_dir(root, "train") is not None


def _image_problem(path: Path, decode: bool = False) -> str | None:
    """Return why ``path`` is not a usable image, or None when it is.

    Without ``decode`` only the header is parsed (cheap, done for every file); with it the
    pixels are decoded too, which catches files whose header is fine but whose data is not.
    """
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file"
    try:
        with Image.open(path) as img:
            if decode:
                img.load()
            else:
                img.size  # noqa: B018 - forces header parsing
        return None
    except UnidentifiedImageError:
        return "not a recognised image"
    except Exception as err:  # PIL's decoders raise many types (OSError, SyntaxError, ...)
        return (str(err).splitlines() or [type(err).__name__])[0]


def folder_source(root: Path) -> ImageSource:
    """Return the images under ``root``; immediate sub-folders that hold images are classes."""
    if not root.is_dir():
        raise DataError(f"data path '{root}' is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"data folder '{root}' is empty")
    images, skipped, reasons = [], [], {}
    for path in files:
        problem = _image_problem(path)
        if problem is None:
            images.append(path)
        else:
            skipped.append(path)
            reasons[path] = problem
    # Headers can be fine while the pixels are not (truncated or garbled files): decode images
    # until one works, so a folder with none fails here and not in a loader worker.
    while images:
        problem = _image_problem(images[0], decode=True)
        if problem is None:
            break
        skipped.append(images.pop(0))
        reasons[skipped[-1]] = problem
    skipped.sort()
    if not images:
        first = skipped[0]
        raise DataError(
            f"no readable images under '{root}' ({len(skipped)} files skipped, "
            f"first: {first.relative_to(root)}: {reasons[first]})"
        )
    class_of = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in images
    ]
    classes = sorted({c for c in class_of if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] if c is not None else -1 for c in class_of], dtype=np.int64)
    if skipped:
        log.warning(
            "skipped %d unreadable or non-image files under %s (first: %s: %s)",
            len(skipped),
            root,
            skipped[0],
            reasons[skipped[0]],
        )
    paths = [str(p) for p in images]
    return ImageSource(
        str(root),
        len(paths),
        lambda i: _open_rgb_or_l(paths[i]),
        labels,
        classes if len(classes) > 0 and (labels >= 0).all() else [],
        [str(p) for p in skipped],
        images,
    )


def _open_rgb_or_l(path: str) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


# ------------------------------------------------------------------------------ HF datasets


def _hf_source(
    dataset, name: str, image_column: str | None, label_column: str | None
) -> ImageSource:
    from datasets import ClassLabel
    from datasets import Image as HFImage

    features = dataset.features
    if image_column is None:
        image_column = next((k for k, v in features.items() if isinstance(v, HFImage)), None)
        image_column = image_column or next((k for k in ("image", "img") if k in features), None)
    if image_column not in features:
        raise DataError(
            f"dataset '{name}' has no image column (columns: {', '.join(features)}); "
            "set data.image_column"
        )
    if label_column is None:
        label_column = next((k for k, v in features.items() if isinstance(v, ClassLabel)), None)
        label_column = label_column or ("label" if "label" in features else None)
    classes: list[str] = []
    if label_column is not None and label_column in features:
        # One vectorised read of the column: a plain ``dataset[label_column]`` formats it row
        # by row in Python (14 s per process for 300,000 rows).
        labels = np.asarray(dataset.with_format("numpy")[label_column][:], dtype=np.int64)
        feature = features[label_column]
        classes = (
            list(feature.names)
            if isinstance(feature, ClassLabel)
            else [str(i) for i in range(int(labels.max()) + 1)]
        )
    else:
        labels = np.full(len(dataset), -1, dtype=np.int64)
    # Decode lazily: the arrow table stays memory-mapped, only one image is in memory at once.
    images = (
        dataset.cast_column(image_column, HFImage(decode=False))[image_column]
        if isinstance(features[image_column], HFImage)
        else dataset[image_column]
    )

    def load(i: int) -> Image.Image:
        item = images[i]
        if isinstance(item, dict):
            if item.get("bytes") is not None:
                return Image.open(io.BytesIO(item["bytes"]))
            return _open_rgb_or_l(item["path"])
        return item

    return ImageSource(name, len(dataset), load, labels, classes)


def _parquet_files(root: Path, split: str | None) -> list[Path]:
    if root.is_file():
        return [root]
    files = sorted(root.glob("*.parquet")) + sorted(root.glob("data/*.parquet"))
    if split is None:
        return files
    for alias in SPLIT_ALIASES.get(split, (split,)):
        chosen = [
            p
            for p in files
            if p.name.startswith(alias + "-")
            or p.name.startswith(alias + ".")
            or p.name.startswith(alias + "_")
        ]
        if chosen:
            return chosen
    return []


def parquet_source(
    root: Path, split: str | None, image_column: str | None, label_column: str | None
) -> ImageSource:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    from jepactl.data.tables import parquet_error, quiet_datasets  # pandas: only when needed

    files = _parquet_files(root, split)
    if not files:
        raise DataError(f"no parquet files for split '{split}' in '{root}'")
    # Reading each footer first names the broken file; `datasets` would name only the folder.
    for file in files:
        try:
            pq.read_schema(file)
        except (pa.ArrowException, OSError) as err:
            raise parquet_error(file, err) from None
    try:
        with quiet_datasets():
            dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as err:  # datasets raises many types for unreadable files
        raise DataError(f"cannot read parquet data '{root}': {err}".splitlines()[0]) from None
    return _hf_source(dataset, f"{root}[{split or 'all'}]", image_column, label_column)


def arrow_source(
    root: Path, split: str | None, image_column: str | None, label_column: str | None
) -> ImageSource:
    from jepactl.data.tables import load_saved_split  # pandas: only when needed

    dataset = load_saved_split(root, split)
    return _hf_source(dataset, f"{root}[{split or 'all'}]", image_column, label_column)


# ------------------------------------------------------------------------------ label files


def with_label_file(source: ImageSource, label_path: str, data_path: str) -> ImageSource:
    """Return ``source`` restricted to the files a ``file,label`` CSV lists, with its labels.

    Keys are paths relative to ``data_path`` (or to the split folder read), or bare file names
    when unique (``data/label_files.py``); files the CSV leaves out are dropped with a notice.
    """
    from jepactl.data.label_files import match_files, read_label_file

    if not source.files:
        raise DataError(
            f"--labels needs a folder of image files; '{source.name}' has no file "
            "names (parquet/arrow data take labels from a column: data.label_column)"
        )
    data_root = Path(data_path).expanduser()
    table = read_label_file(label_path, "file", base=data_root)
    keep, labels, classes = match_files(
        table, source.files, [data_root, Path(source.name)], source.name
    )
    load = source.loader
    return ImageSource(
        source.name,
        len(keep),
        lambda i: load(keep[i]),
        labels,
        classes,
        source.skipped,
        [source.files[i] for i in keep],
    )


# ------------------------------------------------------------------------------ entry point


def builtin_source(name: str, split: str | None) -> ImageSource:
    """Return a built-in data set (``builtin:shapes``) generated deterministically in memory."""
    if name != "shapes":
        raise DataError(f"unknown built-in data set 'builtin:{name}' (known: builtin:shapes)")
    size = 2000 if split in (None, "train") else 500
    offset = 0 if split in (None, "train") else 1_000_000
    labels = np.arange(size, dtype=np.int64) % len(SHAPES_CLASSES)
    return ImageSource(
        f"builtin:shapes[{split or 'train'}]",
        size,
        lambda i: render_shape(int(labels[i]), seed=offset + i),
        labels,
        list(SHAPES_CLASSES),
    )


def has_split(path: str, split: str) -> bool:
    """Return True when ``path`` holds the named split (e.g. a ``test/`` folder)."""
    if path.startswith(BUILTIN_PREFIX):
        return True
    root = Path(path)
    if root.is_dir() and (root / "dataset_dict.json").exists():
        import json

        return any(
            a in json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
            for a in SPLIT_ALIASES.get(split, (split,))
        )
    if root.is_dir() and any(root.glob("*.parquet")):
        return bool(_parquet_files(root, split))
    return root.is_dir() and _split_dir(root, split) is not None


def open_images(
    path: str,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> ImageSource:
    """Return the image source at ``path`` (folder, parquet, arrow dir, or ``builtin:NAME``).

    ``split`` picks ``train``/``test`` where the data has splits; ``None`` means the training
    split if there is one, otherwise everything.
    """
    if path.startswith(BUILTIN_PREFIX):
        return builtin_source(path[len(BUILTIN_PREFIX) :], split)
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data path '{path}' does not exist")
    if root.is_file():
        if root.suffix == ".parquet":
            return parquet_source(root, None, image_column, label_column)
        raise DataError(f"data path '{path}' is a file; give a folder of images or a parquet file")
    if (root / "dataset_dict.json").exists() or (root / "dataset_info.json").exists():
        return arrow_source(root, split, image_column, label_column)
    if any(root.glob("*.parquet")) or any(root.glob("data/*.parquet")):
        has_splits = bool(_parquet_files(root, "train"))
        return parquet_source(
            root, (split or "train") if has_splits else None, image_column, label_column
        )
    if _has_split_dirs(root):
        chosen = _split_dir(root, split or "train")
        if chosen is None:
            raise DataError(f"data folder '{path}' has no '{split}' split")
        return folder_source(chosen)
    if split not in (None, "train"):
        raise DataError(f"data folder '{path}' has no '{split}' split")
    return folder_source(root)


def load_or_neighbour(source: ImageSource, index: int):
    """Return (image, index actually used): an image that fails to decode is replaced by the next.

    Headers are checked when the folder is scanned; this catches files truncated mid-data.
    """
    for offset in range(min(len(source), 16)):
        i = (index + offset) % len(source)
        try:
            img = source.load(i)
            img.load()
            return img, i
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable image %d of %s: %s", i, source.name, err)
    raise OSError(f"16 consecutive unreadable images in {source.name} near index {index}")
