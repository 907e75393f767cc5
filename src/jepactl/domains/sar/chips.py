"""Single-channel SAR chips: JPEG/PNG, TIFF amplitude and ``.npy`` arrays in class folders.

Layout: ``root/<CLASS>/*.jpeg`` (labels from the folder names), optionally under ``train/`` and
``test/`` split folders (MSTAR SOC: 17° train, 15° test). Chips without a class folder are
unlabelled, which is fine for pretraining.

Every chip is **centre-cropped to ``data.crop_size`` first**, before any resize or augmentation.
MSTAR chips range from 128 to 193 px depending on the class, so anything that looked at the
whole chip (a resize, a random crop of the full chip) would hand the label to the model through
the scale of the target. A chip smaller than the crop is skipped and listed in ``skipped``.

Intensities are not normalised by default (SAR-JEPA trains on ToTensor values in [0, 1]):
8-bit images are divided by 255, 16-bit by 65535, float TIFF/npy amplitudes are kept as they
are. ``data.intensity: mean_std`` standardises the model input with ``data.mean``/``data.std``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from jepactl.data.image_transforms import sample_crop_box
from jepactl.data.labelled_source import LabelledSourceDataset
from jepactl.data.sampling import SampleKey
from jepactl.errors import DataError

log = logging.getLogger("jepactl")

CHIP_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".npy"}
SPLIT_NAMES = {"train": ("train", "training"), "test": ("test", "testing", "val", "validation")}
INTEGER_SCALE = {"L": 255.0, "P": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0}


@dataclass
class SarDataConfig:
    """Where chips come from and how they become (1, S, S) tensors."""

    path: str | None = None  # folder of class folders, optionally with train/ and test/
    crop_size: int = 128  # centre crop in pixels, applied to every chip before anything else
    image_size: int = 224  # the centre crop is resized to this (bicubic) when they differ
    intensity: Literal["none", "mean_std"] = "none"  # SAR-JEPA: none (values as read)
    mean: float = 0.0  # used by intensity: mean_std
    std: float = 1.0
    pretrain_split: str = "train"  # with split folders, pretrain on this one only
    # Pretraining augmentation (SAR-JEPA main_pretrain.py): RandomResizedCrop(scale 0.2-1),
    # horizontal flip, ColorJitter(contrast=0.5). Applied inside the centre crop.
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    flip: bool = True
    contrast: float = 0.5


@dataclass
class SarChipSource:
    """A list of chip files with integer labels (-1 when unlabelled) and class names."""

    name: str
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    crop_size: int
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """Return chip ``index`` centre-cropped to (1, crop, crop) float32."""
        return load_chip(self.paths[index], self.crop_size)


# ------------------------------------------------------------------------------ files


def chip_shape(path: Path) -> tuple[int, int]:
    """Return (height, width) of a single-channel chip from its header; raise ValueError."""
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        shape = _single_channel_shape(array.shape, path)
        return shape
    with Image.open(path) as img:
        width, height = img.size
        if img.mode not in ("L", "P", "I", "F", "I;16", "I;16B", "I;16L", "RGB", "RGBA", "LA"):
            raise ValueError(f"unsupported image mode {img.mode}")
        return height, width


def _single_channel_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    squeezed = tuple(s for s in shape if s != 1) if len(shape) > 2 else tuple(shape)
    if len(squeezed) != 2:
        raise ValueError(f"array of shape {shape} is not a single-channel 2-D chip")
    return squeezed[0], squeezed[1]


def _to_amplitude(img: Image.Image) -> np.ndarray:
    """Return float32 (H, W): 8/16-bit scaled to [0, 1], float and 32-bit int kept as read."""
    if img.mode in ("RGB", "RGBA", "LA"):  # grey chips saved as colour JPEGs
        img = img.convert("L")
    if img.mode == "P":
        img = img.convert("L")
    array = np.asarray(img)
    scale = INTEGER_SCALE.get(img.mode, 1.0)
    return array.astype(np.float32) / np.float32(scale)


def centre_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """Return (top, left) of the central size x size square."""
    return (height - size) // 2, (width - size) // 2


def load_chip(path: Path, crop: int) -> torch.Tensor:
    """Return the chip at ``path`` centre-cropped to (1, crop, crop) float32."""
    if path.suffix.lower() == ".npy":
        raw = np.load(path, allow_pickle=False)
        height, width = _single_channel_shape(raw.shape, path)
        # Complex SLC arrays are read as their amplitude.
        values = np.abs(raw) if np.iscomplexobj(raw) else raw
        array = np.asarray(values, dtype=np.float32).reshape(height, width)
    else:
        with Image.open(path) as img:
            img.load()
            array = _to_amplitude(img)
        height, width = array.shape
    if height < crop or width < crop:
        raise ValueError(f"chip {height}x{width} is smaller than data.crop_size={crop}")
    top, left = centre_crop_box(height, width, crop)
    chip = np.ascontiguousarray(array[top : top + crop, left : left + crop])
    return torch.from_numpy(chip).unsqueeze(0)


def split_folder(root: Path, split: str) -> Path | None:
    for alias in SPLIT_NAMES.get(split, (split,)):
        if (root / alias).is_dir():
            return root / alias
    return None


def has_split(path: str, split: str) -> bool:
    return split_folder(Path(path), split) is not None


def open_chips(path: str, split: str | None, crop_size: int) -> SarChipSource:
    """Return the chips under ``path`` (or its ``split`` folder); sub-folders are classes."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"SAR data path '{root}' is not a folder")
    if split is not None:
        folder = split_folder(root, split)
        if folder is None:
            raise DataError(f"SAR data folder '{root}' has no '{split}' split folder")
        root = folder
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"SAR data folder '{root}' is empty")
    chips, skipped = [], []
    for p in files:
        if p.suffix.lower() not in CHIP_SUFFIXES:
            skipped.append(f"{p} (not a chip format: {', '.join(sorted(CHIP_SUFFIXES))})")
            continue
        try:
            height, width = chip_shape(p)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            skipped.append(f"{p} ({err})")
            continue
        if height < crop_size or width < crop_size:
            skipped.append(f"{p} ({height}x{width} is smaller than data.crop_size={crop_size})")
            continue
        chips.append(p)
    if not chips:
        first = skipped[0] if skipped else "none"
        raise DataError(
            f"SAR data folder '{root}' has no readable chips of at least "
            f"{crop_size}x{crop_size} px ({len(skipped)} skipped, first: {first})"
        )
    if skipped:
        log.warning("skipped %d files under %s (first: %s)", len(skipped), root, skipped[0])
    class_of = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in chips
    ]
    classes = sorted({c for c in class_of if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] if c is not None else -1 for c in class_of], dtype=np.int64)
    if (labels < 0).any():
        classes = []  # a mix of labelled and loose chips is treated as unlabelled
        labels[:] = -1
    return SarChipSource(str(root), chips, labels, classes, crop_size, skipped)


def with_label_file(source: SarChipSource, label_path: str, data_path: str) -> SarChipSource:
    """Return ``source`` restricted to the chips a ``file,label`` CSV lists, with its labels.

    Keys are paths relative to ``data_path`` (or to the split folder read), or bare file names
    when unique (``data/label_files.py``); chips the CSV leaves out are dropped with a notice.
    """
    from jepactl.data.label_files import match_files, read_label_file

    data_root = Path(data_path).expanduser()
    table = read_label_file(label_path, "file", base=data_root)
    keep, labels, classes = match_files(
        table, source.paths, [data_root, Path(source.name)], source.name
    )
    return SarChipSource(
        source.name,
        [source.paths[i] for i in keep],
        labels,
        classes,
        source.crop_size,
        source.skipped,
    )


# ------------------------------------------------------------------------------ transforms


def resize(chip: torch.Tensor, size: int) -> torch.Tensor:
    """Return (1, size, size): bicubic with antialiasing, unchanged when already that size."""
    if chip.shape[-1] == size and chip.shape[-2] == size:
        return chip
    out = F.interpolate(
        chip[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True
    )[0]
    return out.clamp_min(0.0)  # bicubic overshoot must not make an amplitude negative


def normalise(chip: torch.Tensor, config: SarDataConfig) -> torch.Tensor:
    if config.intensity == "mean_std":
        return (chip - config.mean) / config.std
    return chip


def random_resized_crop(
    chip: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> torch.Tensor:
    """Return a random crop (``sample_crop_box``) resized to size^2; the whole chip if none fits."""
    box = sample_crop_box(chip.shape[-2], chip.shape[-1], scale, ratio, rng)
    if box is None:
        return resize(chip, size)
    top, left, h, w = box
    return resize(chip[:, top : top + h, left : left + w], size)


def augment(chip: torch.Tensor, config: SarDataConfig, rng: np.random.Generator) -> torch.Tensor:
    """Return SAR-JEPA's pretraining view of a centre-cropped chip (before normalisation)."""
    x = random_resized_crop(chip, config.image_size, config.crop_scale, config.crop_ratio, rng)
    if config.flip and rng.random() < 0.5:
        x = x.flip(-1)
    if config.contrast > 0:
        # ColorJitter(contrast=c): blend with the chip's mean by a factor in [1-c, 1+c]. Only
        # the lower bound is clamped: float amplitudes have no upper bound of 1.
        factor = rng.uniform(max(0.0, 1 - config.contrast), 1 + config.contrast)
        mean = x.mean()
        x = ((x - mean) * factor + mean).clamp_min(0.0)
    return x


# ------------------------------------------------------------------------------ datasets


class SarPretrainDataset(Dataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {"images": (1, S, S), "batch_seed": int}."""

    def __init__(self, source: SarChipSource, config: SarDataConfig) -> None:
        self.source, self.config = source, config

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: SampleKey) -> dict:
        index, sample_seed, batch_seed = key
        rng = np.random.default_rng(sample_seed)
        view = augment(self.source.load(index), self.config, rng)
        return {"images": normalise(view, self.config), "batch_seed": batch_seed}


class SarEvalDataset(LabelledSourceDataset):
    """Item ``i`` -> ((1, S, S) tensor, label): the centre crop resized, no augmentation."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        chip = resize(self.source.load(index), self.config.image_size)
        return normalise(chip, self.config), int(self.source.labels[index])


class SarAugmentDataset(SarEvalDataset):
    """Item ``i`` -> (augmented view, label) for fine-tuning; set ``epoch`` to vary the views."""

    def __init__(self, source: SarChipSource, config: SarDataConfig, seed: int) -> None:
        super().__init__(source, config)
        self.seed, self.epoch = seed, 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        view = augment(self.source.load(index), self.config, rng)
        return normalise(view, self.config), int(self.source.labels[index])
