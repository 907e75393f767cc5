"""Image readers: class folders, greyscale, corrupt files, HF parquet, seeded crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jepactl.data.image_dataset import ImageDataConfig, ImagePretrainDataset
from jepactl.data.images import has_split, open_images
from jepactl.data.sampling import BatchPlan
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
    rows = {"image": [Image.new("RGB", (10, 10), (i * 20, 0, 0)) for i in range(6)],
            "label": [0, 1, 2, 0, 1, 2]}
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["x", "y", "z"])})
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
