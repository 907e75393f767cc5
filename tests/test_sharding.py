"""Sharded data: the ranks of one epoch see every sample once, and only the last batch repeats.

``BatchPlan`` pads each epoch's permutation to whole batches on every rank (no sample is
dropped); these tests run the plan of two ranks through each domain's real pretraining reader
(``MethodSpec.pretrain_data``) and identify every sample the reader returns, by its content
wherever the content says which sample it is (a constant image's level, a cloud's point count,
a table row, a demonstration state) and by the reader's own record/window map for ECG crops.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jepactl.data.sampling import BatchPlan
from jepactl.errors import DataError
from jepactl.recipe import load_recipe
from jepactl.registry import method_spec

WORLD = 2


def epoch_keys(size: int, batch_size: int, world: int, seed: int = 5, epoch: int = 0):
    """Return, per rank, epoch ``epoch``'s batches of ``SampleKey`` (each rank's own plan)."""
    out = []
    for rank in range(world):
        per_epoch = BatchPlan(size, batch_size, seed, rank, world).batches_per_epoch
        batches = iter(BatchPlan(size, batch_size, seed, rank, world, start=epoch * per_epoch))
        out.append([next(batches) for _ in range(per_epoch)])
    return out


def check_epoch(per_rank, identify, everything, batch_size: int) -> None:
    """Assert one epoch of ``per_rank`` batches covers ``everything``, each sample once but for
    the padding: repeats of samples seen earlier in the epoch, all in the ranks' last batches;
    and that the ranks share no sample but a padded one."""
    size, world = len(everything), len(per_rank)
    padding = -(-size // (batch_size * world)) * batch_size * world - size
    seen = [[[identify(key) for key in batch] for batch in batches] for batches in per_rank]
    assert all(len(batch) == batch_size for batches in seen for batch in batches)
    steps = len(seen[0])
    assert all(len(batches) == steps for batches in seen)
    first, repeats = set(), []  # in training order: step by step, rank by rank
    for step in range(steps):
        for rank in range(world):
            for sample in seen[rank][step]:
                if sample in first:
                    repeats.append((step, sample))
                first.add(sample)
    assert first == set(everything)  # the union is the whole data set
    assert len(repeats) == padding and all(step == steps - 1 for step, _ in repeats)
    assert len({sample for _, sample in repeats}) == padding  # each padded once at most
    ranks = [{s for batch in batches for s in batch} for batches in seen]
    padded = {sample for _, sample in repeats}
    assert all(a & b <= padded for i, a in enumerate(ranks) for b in ranks[i + 1 :])


def nearest(table: np.ndarray, tolerance: float):
    """Return ``fingerprint -> row index of table`` that refuses anything not close to a row."""
    gaps = np.abs(table[:, None, :] - table[None, :, :]).max(-1) + np.eye(len(table)) * 1e9
    assert gaps.min() > 10 * tolerance, "fingerprints must tell the samples apart"

    def find(fingerprint: np.ndarray) -> int:
        distance = np.abs(table - fingerprint[None]).max(-1)
        best = int(distance.argmin())
        assert distance[best] <= tolerance
        return best

    return find


def by_content(dataset, fingerprint, tolerance: float = 1e-4):
    """Identify samples by ``fingerprint(dataset[key])``, against each index's own sample."""
    table = np.stack([fingerprint(dataset[(i, 0, 0)]) for i in range(len(dataset))])
    find = nearest(table, tolerance)
    return lambda key: find(fingerprint(dataset[key]))


# ------------------------------------------------------------------------------ the plan


@pytest.mark.parametrize(
    ("size", "batch_size", "world"), [(40, 4, 2), (37, 4, 2), (23, 3, 3), (50, 8, 1), (8, 4, 2)]
)
def test_one_epoch_of_the_plan_covers_every_index_with_padding_only_last(size, batch_size, world):
    plan = BatchPlan(size, batch_size, 0, 0, world)
    assert plan.batches_per_epoch == -(-size // (batch_size * world))
    assert plan.padding == plan.batches_per_epoch * batch_size * world - size
    for epoch in (0, 3):
        per_rank = epoch_keys(size, batch_size, world, epoch=epoch)
        if world == 2:
            check_epoch(per_rank, lambda key: key[0], range(size), batch_size)
        flat = [k[0] for batches in per_rank for batch in batches for k in batch]
        assert sorted(set(flat)) == list(range(size)) and len(flat) == size + plan.padding


def test_the_padding_repeats_the_epochs_first_indices_and_steps_are_contiguous():
    plan = BatchPlan(37, 4, seed=9, world=2)
    order = plan.epoch_order(1)
    assert plan.padding == 3 and order[-3:].tolist() == order[:3].tolist()
    per_rank = epoch_keys(37, 4, 2, seed=9, epoch=1)
    for step in range(plan.batches_per_epoch):  # global step s = positions [8s, 8s + 8)
        together = sorted(k[0] for rank in per_rank for k in rank[step])
        assert together == sorted(order[8 * step : 8 * step + 8].tolist())
    # Each repeat has its own augmentation seed: no two keys of the epoch are equal.
    keys = [k for rank in per_rank for batch in rank for k in batch]
    assert len({k[1] for k in keys}) == len(keys)


def test_resuming_anywhere_continues_the_same_padded_plan_on_every_rank():
    for rank in range(2):
        full = iter(BatchPlan(37, 4, seed=3, rank=rank, world=2))
        batches = [next(full) for _ in range(13)]  # 5 batches per epoch: crosses two ends
        for start in (1, 5, 7, 11):
            resumed = iter(BatchPlan(37, 4, seed=3, rank=rank, world=2, start=start))
            assert [next(resumed) for _ in range(13 - start)] == batches[start:]


def test_one_process_no_longer_drops_the_remainder():
    plan = BatchPlan(50, 8, seed=0)
    assert plan.batches_per_epoch == 7 and plan.padding == 6  # was 6 batches, 2 samples dropped
    epoch = [k[0] for _, batch in zip(range(7), plan) for k in batch]
    assert set(epoch) == set(range(50))


def test_less_than_a_batch_per_rank_is_still_a_data_error():
    with pytest.raises(DataError, match="fewer than one batch of 4 per process"):
        BatchPlan(7, 4, seed=0, world=2)


# ------------------------------------------------------------------------------ readers


def grey_png(level: int, size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), level).save(buffer, "PNG")
    return buffer.getvalue()


IMAGE = ["data.image_size=8", "model.patch_size=4", "data.channels=1", "data.mean=[0]"]
IMAGE += ["data.std=[1]"]


def image_fingerprint(sample) -> np.ndarray:
    return np.array([float(sample["images"].mean())])


def test_image_folder_shards_cover_every_file(tmp_path):
    count, batch = 29, 4
    for i in range(count):
        (tmp_path / f"c{i % 3}").mkdir(exist_ok=True)
        (tmp_path / f"c{i % 3}" / f"{i:03d}.png").write_bytes(grey_png(8 * i))
    recipe = load_recipe("image/ijepa-cpu", IMAGE)
    dataset, _, source = method_spec("ijepa").pretrain_data(recipe, str(tmp_path))
    assert len(dataset) == count and not source.skipped
    identify = by_content(dataset, image_fingerprint, tolerance=1e-3)
    check_epoch(epoch_keys(count, batch, WORLD), identify, range(count), batch)
    # The content lookup agrees with the files the reader listed (level 8 i <-> file i).
    levels = [round(image_fingerprint(dataset[(i, 0, 0)])[0] * 255 / 8) for i in range(count)]
    assert levels == [int(p.stem) for p in source.files]


def test_image_parquet_shards_cover_every_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    count, batch = 27, 4
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": grey_png(9 * i), "path": None} for i in range(count)]}
    rows["label"] = list(range(count))
    data = datasets.Dataset.from_dict(rows, features=features)
    data.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    recipe = load_recipe("image/ijepa-cpu", IMAGE)
    dataset, _, source = method_spec("ijepa").pretrain_data(recipe, str(tmp_path))
    assert len(dataset) == count and source.labels.tolist() == list(range(count))
    identify = by_content(dataset, image_fingerprint, tolerance=1e-3)
    check_epoch(epoch_keys(count, batch, WORLD), identify, range(count), batch)


def test_sar_chip_shards_cover_every_chip(tmp_path):
    count, batch = 21, 4
    for i in range(count):
        folder = tmp_path / "train" / f"k{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{i:03d}.npy", np.full((36, 36), 1.0 + i, dtype=np.float32))
    recipe = load_recipe("sar/sar-jepa-cpu", ["data.crop_size=32", "data.image_size=32"])
    dataset, _, source = method_spec("sar-jepa").pretrain_data(recipe, str(tmp_path))
    assert len(dataset) == count

    def fingerprint(sample) -> np.ndarray:
        return np.array([float(sample["images"].mean())])

    identify = by_content(dataset, fingerprint, tolerance=1e-3)
    check_epoch(epoch_keys(count, batch, WORLD), identify, range(count), batch)


def test_ecg_record_shards_cover_every_crop_segment(tmp_path):
    seconds = [7.0, 5.2, 2.0, 9.9, 4.1]  # at 2.56 s crops: 2, 2, 1 (shorter), 3, 1 segments
    rng = np.random.default_rng(0)
    for i, length in enumerate(seconds):
        np.save(tmp_path / f"r{i}.npy", rng.normal(size=(2, int(length * 500))).astype("f4"))
    recipe = load_recipe("ecg/ecg-jepa-cpu", ["data.pretrain_split=all", "train.batch_size=2"])
    dataset, _, source = method_spec("ecg-jepa").pretrain_data(recipe, str(tmp_path))
    segments = [(i, k) for i, s in enumerate(seconds) for k in range(max(1, int(s // 2.56)))]
    assert len(dataset) == len(dataset.segment_record) == len(segments) == 9
    names = [record.name for record in source.records]
    assert names == [f"r{i}" for i in range(len(seconds))]

    def identify(key):
        sample = dataset[key]  # the crop the reader cuts for this key: from its segment's record
        assert sample["signals"].shape == (2, 640) and torch.isfinite(sample["signals"]).all()
        record, start = dataset.segment(key[0])
        return record, round(start / dataset.crop_seconds)

    check_epoch(epoch_keys(len(dataset), 2, WORLD), identify, segments, 2)


def test_table_shards_cover_every_row(tmp_path):
    pd = pytest.importorskip("pandas")
    count, batch = 45, 8
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"a": np.arange(count) * 0.5, "b": rng.normal(size=count).round(3)}
        | {"c": rng.choice(["x", "y"], size=count)}
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    recipe = load_recipe("tabular/tjepa-cpu", [f"train.batch_size={batch}"])
    dataset, _, _ = method_spec("tjepa").pretrain_data(recipe, str(tmp_path / "t.csv"))
    assert len(dataset) == count
    identify = by_content(dataset, lambda s: s["features"].numpy().astype(np.float64), 1e-6)
    check_epoch(epoch_keys(count, batch, WORLD), identify, range(count), batch)


def test_point_cloud_shards_cover_every_cloud(tmp_path):
    count, batch = 19, 4
    rng = np.random.default_rng(2)
    for i in range(count):
        points = rng.uniform(-1, 1, size=(20 + 3 * i, 4)).astype(np.float32)
        np.save(tmp_path / f"{i:03d}.npy", points)
    recipe = load_recipe("lidar/ad-l-jepa-objects-cpu")
    dataset, _, clouds = method_spec("ad-l-jepa").pretrain_data(recipe, str(tmp_path))
    assert len(dataset) == count and not clouds.skipped
    identify = by_content(dataset, lambda s: np.array([len(s["points"])], dtype=float), 0.1)
    check_epoch(epoch_keys(count, batch, WORLD), identify, range(count), batch)


def write_replay_buffer(path: Path, lengths) -> Path:
    """A zarr replay buffer whose state at frame t of episode e is (e, t, 0, 0, 0)."""
    zarr = pytest.importorskip("zarr")
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    states = np.concatenate(
        [np.stack([[e, t, 0, 0, 0] for t in range(n)]) for e, n in enumerate(lengths)]
    ).astype(np.float32)
    root.create_array("data/state", data=states)
    root.create_array("data/action", data=states[:, :2] + 1)
    root.create_array("meta/episode_ends", data=np.cumsum(lengths))
    return path


def test_demonstration_shards_cover_every_training_frame(tmp_path):
    data = write_replay_buffer(tmp_path / "d.zarr", (12, 9, 15, 10, 11, 8))
    overrides = ["data.chunk=4", "train.batch_size=4", "data.val_fraction=0.2"]
    recipe = load_recipe("policy/act-jepa-state-cpu", overrides)
    dataset, _, demos = method_spec("act-jepa").pretrain_data(recipe, str(data))
    train = recipe.data.fitted["train_episodes"]
    frames = demos.frames_of(np.asarray(train, dtype=np.int64))
    assert len(dataset) == len(frames) and 0 < len(frames) < 65  # validation episodes held out
    states = demos.states[frames, :2]  # (episode, t) of every training frame
    identify = by_content(dataset, lambda s: s["state"].numpy().astype(np.float64), 1e-5)

    def episode_and_step(key):
        episode, step = states[identify(key)]
        return int(episode), int(step)

    everything = [(int(e), int(t)) for e, t in states]
    check_epoch(epoch_keys(len(dataset), 4, WORLD), episode_and_step, everything, 4)
