"""The SAR chip reader: formats, centre crop first, class folders, splits, no normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jepactl.domains.sar.chips import (
    SarDataConfig,
    SarEvalDataset,
    SarPretrainDataset,
    has_split,
    load_chip,
    open_chips,
)
from jepactl.errors import DataError


def centre_marked(size: int, value: int = 200) -> np.ndarray:
    """A dark chip with a bright 4x4 square exactly at its centre."""
    chip = np.full((size, size), 10, dtype=np.uint8)
    mid = size // 2
    chip[mid - 2 : mid + 2, mid - 2 : mid + 2] = value
    return chip


def test_every_format_is_read_single_channel_and_centre_cropped(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.fromarray(centre_marked(20)).save(png)
    rgb = tmp_path / "b.jpeg"
    Image.fromarray(np.stack([centre_marked(24)] * 3, -1)).save(rgb, quality=100)
    tif16 = tmp_path / "c.tif"
    Image.fromarray((centre_marked(22).astype(np.uint16) * 257)).save(tif16)
    tif_float = tmp_path / "d.tiff"
    Image.fromarray(centre_marked(20).astype(np.float32) * 3.5).save(tif_float)
    npy = tmp_path / "e.npy"
    np.save(npy, centre_marked(21).astype(np.float32)[None] / 100.0)  # (1, H, W)

    assert load_chip(png, 8).shape == (1, 8, 8)
    png_chip = load_chip(png, 8)[0]
    assert png_chip[2:6, 2:6].min() == pytest.approx(200 / 255)  # bright square in the middle
    assert png_chip[0, 0] == pytest.approx(10 / 255)  # 8-bit: ToTensor scale, no normalisation
    assert load_chip(rgb, 8)[0, 3:5, 3:5].min() > 0.7
    assert load_chip(tif16, 8)[0, 3, 3] == pytest.approx(200 / 255, rel=1e-4)  # 16-bit / 65535
    assert load_chip(tif_float, 8)[0, 3, 3] == pytest.approx(700.0)  # float amplitude as read
    assert load_chip(npy, 8)[0, 3, 3] == pytest.approx(2.0)


def test_chips_of_different_sizes_give_the_same_crop_of_the_target(tmp_path: Path) -> None:
    # Two classes whose chips differ only in size: after the centre crop they must be equal,
    # so chip size cannot leak the class.
    for name, size in (("small", 16), ("large", 30)):
        (tmp_path / name).mkdir()
        Image.fromarray(centre_marked(size)).save(tmp_path / name / "x.png")
    source = open_chips(str(tmp_path), None, crop_size=12)
    config = SarDataConfig(crop_size=12, image_size=12)
    dataset = SarEvalDataset(source, config)
    (a, label_a), (b, label_b) = dataset[0], dataset[1]
    assert source.classes == ["large", "small"] and {label_a, label_b} == {0, 1}
    assert torch.equal(a, b)


def test_chips_smaller_than_the_crop_and_other_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    Image.fromarray(centre_marked(16)).save(tmp_path / "t" / "ok.png")
    Image.fromarray(centre_marked(8)).save(tmp_path / "t" / "tiny.png")
    (tmp_path / "t" / "notes.txt").write_text("hello")
    (tmp_path / "t" / "broken.jpeg").write_bytes(b"not a jpeg")
    np.save(tmp_path / "t" / "rgb.npy", np.zeros((16, 16, 3), np.float32))
    source = open_chips(str(tmp_path), None, crop_size=12)
    assert [p.name for p in source.paths] == ["ok.png"]
    assert len(source.skipped) == 4
    assert any("smaller than data.crop_size=12" in s for s in source.skipped)
    with pytest.raises(DataError, match="no readable chips"):
        open_chips(str(tmp_path), None, crop_size=32)


def test_split_folders_and_pretraining_views(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("A", "B"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(centre_marked(20 + i)).save(folder / f"{i}.png")
    assert has_split(str(tmp_path), "train") and has_split(str(tmp_path), "test")
    source = open_chips(str(tmp_path), "train", crop_size=16)
    assert len(source) == 6 and source.classes == ["A", "B"]
    config = SarDataConfig(crop_size=16, image_size=8)
    views = SarPretrainDataset(source, config)
    one, again, other = views[(0, 5, 9)], views[(0, 5, 9)], views[(0, 6, 9)]
    assert one["images"].shape == (1, 8, 8) and one["batch_seed"] == 9
    assert torch.equal(one["images"], again["images"])  # the sample seed fixes the view
    assert not torch.equal(one["images"], other["images"])
    assert one["images"].min() >= 0  # amplitudes stay non-negative
    standardised = SarEvalDataset(
        source, SarDataConfig(crop_size=16, image_size=16, intensity="mean_std", mean=0.5, std=0.25)
    )
    raw = SarEvalDataset(source, SarDataConfig(crop_size=16, image_size=16))
    assert torch.allclose(standardised[0][0], (raw[0][0] - 0.5) / 0.25)


def test_complex_npy_chips_are_read_as_amplitude(tmp_path: Path) -> None:
    slc = np.full((10, 10), 3.0 + 4.0j, dtype=np.complex64)
    np.save(tmp_path / "slc.npy", slc)
    chip = load_chip(tmp_path / "slc.npy", 6)
    assert chip.shape == (1, 6, 6) and torch.allclose(chip, torch.full((1, 6, 6), 5.0))
