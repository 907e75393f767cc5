"""Image readers: class folders, greyscale, corrupt files, HF parquet, seeded crops."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pretrain_error
from jepactl.data.images import has_split, open_images
from jepactl.data.sampling import BatchPlan
from jepactl.domains.image.dataset import ImageDataConfig, ImagePretrainDataset
from jepactl.errors import DataError


def write_png(path, mode="RGB", size=(20, 12), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_class_folders_give_labels_and_corrupt_files_are_skipped_and_counted(tmp_path):
    write_png(tmp_path / "cat" / "a.png")
    write_png(tmp_path / "cat" / "b.png", mode="L")
    write_png(tmp_path / "dog" / "c.jpg")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    source = open_images(str(tmp_path))
    assert source.classes == ["cat", "dog"]
    assert sorted(source.labels.tolist()) == [0, 0, 1]
    assert len(source.skipped) == 2 and any("broken.png" in s for s in source.skipped)


def test_unlabelled_folder_is_fine_for_pretraining(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png")
    source = open_images(str(tmp_path))
    assert len(source) == 3 and not source.has_labels


def test_train_test_split_folders(tmp_path):
    write_png(tmp_path / "train" / "a" / "1.png")
    write_png(tmp_path / "test" / "a" / "2.png")
    assert has_split(str(tmp_path), "test")
    assert len(open_images(str(tmp_path))) == 1
    assert len(open_images(str(tmp_path), "test")) == 1


def test_greyscale_and_colour_both_become_the_recipes_channels(tmp_path):
    write_png(tmp_path / "g.png", mode="L", value=128)
    source = open_images(str(tmp_path))
    cfg = ImageDataConfig(image_size=8, channels=3, mean=(0, 0, 0), std=(1, 1, 1))
    item = ImagePretrainDataset(source, cfg)[(0, 1, 2)]
    assert item["images"].shape == (3, 8, 8)
    assert torch.allclose(item["images"], torch.full((3, 8, 8), 128 / 255), atol=1e-6)


def test_hf_parquet_with_image_and_label_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {
        "image": [Image.new("RGB", (10, 10), (i * 20, 0, 0)) for i in range(6)],
        "label": [0, 1, 2, 0, 1, 2],
    }
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y", "z"])}
    )
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    ds.select(range(3)).to_parquet(str(tmp_path / "test-00000-of-00001.parquet"))
    train = open_images(str(tmp_path), "train")
    test = open_images(str(tmp_path), "test")
    assert len(train) == 6 and len(test) == 3 and train.classes == ["x", "y", "z"]
    assert np.asarray(train.load(3).convert("RGB"))[0, 0, 0] == 60


def test_crops_are_a_pure_function_of_the_sample_seed(tmp_path):
    source = open_images("builtin:shapes")
    dataset = ImagePretrainDataset(source, ImageDataConfig(image_size=16))
    a, b, c = dataset[(5, 11, 0)], dataset[(5, 11, 0)], dataset[(5, 12, 0)]
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])


def test_batch_plan_resumes_mid_epoch_and_shards_disjointly():
    full = iter(BatchPlan(40, 4, seed=3))
    batches = [next(full) for _ in range(14)]  # crosses the 10-batch epoch boundary
    resumed = iter(BatchPlan(40, 4, seed=3, start=7))
    assert [next(resumed) for _ in range(7)] == batches[7:]
    rank0 = next(iter(BatchPlan(40, 4, seed=3, rank=0, world=2)))
    rank1 = next(iter(BatchPlan(40, 4, seed=3, rank=1, world=2)))
    assert not {k[0] for k in rank0} & {k[0] for k in rank1}


def test_too_little_data_for_one_batch_is_a_data_error():
    with pytest.raises(DataError, match="fewer than one batch"):
        BatchPlan(3, 8, seed=0)


def png_bytes(size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_folder_of_only_corrupt_images_is_one_data_error(tmp_path):
    for i in range(3):
        (tmp_path / "garbage" / f"{i}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "garbage" / f"{i}.png").write_bytes(os.urandom(400))
    with pytest.raises(
        DataError,
        match=r"no readable images under '.*garbage' \(3 files "
        r"skipped, first: 0.png: not a recognised image\)",
    ):
        open_images(str(tmp_path / "garbage"))
    # A header that parses over pixels that do not: caught when the folder is opened, too.
    (tmp_path / "truncated").mkdir()
    for i in range(2):
        (tmp_path / "truncated" / f"{i}.png").write_bytes(png_bytes()[:60])
    with pytest.raises(DataError, match=r"2 files skipped, first: 0.png: .*truncated"):
        open_images(str(tmp_path / "truncated"))
    write_png(tmp_path / "truncated" / "2.png")
    source = open_images(str(tmp_path / "truncated"))
    assert len(source) == 1 and len(source.skipped) == 2


@pytest.mark.slow
def test_cli_on_a_folder_of_corrupt_images_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "garbage").mkdir()
    for i in range(3):
        (tmp_path / "garbage" / f"{i}.png").write_bytes(os.urandom(400))
    result = pretrain_error("image/ijepa-cpu", tmp_path / "garbage", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no readable images under" in lines[0]


@pytest.mark.slow
def test_corrupt_parquet_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    broken = tmp_path / "data" / "train-00000.parquet"
    broken.write_bytes(os.urandom(3000))
    with pytest.raises(DataError, match=f"cannot read parquet '{broken}': .*magic bytes"):
        open_images(str(tmp_path / "data"))
    result = pretrain_error("image/ijepa-cpu", tmp_path / "data", tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read parquet '{broken}': ")
