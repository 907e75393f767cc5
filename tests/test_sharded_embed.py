"""``jepactl embed`` on several processes (one part per rank, merged or kept as a parquet data
set) and ``jepactl probe --features`` on what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app
from jepactl.errors import DataError, UserError
from jepactl.evaluate.embed import (
    Rows,
    check_output,
    merge_parts,
    publish_folder,
    run_embed,
    shard_range,
    staged_parts,
    staging_folder,
)
from jepactl.evaluate.embedding_files import (
    MANIFEST,
    ParquetRows,
    output_form,
    part_name,
    read_embeddings,
)

# ------------------------------------------------------------------------------- the split


@pytest.mark.parametrize("samples", [0, 1, 2, 5, 7, 100, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 4, 256])
def test_shards_are_whole_batches_disjoint_and_cover_the_input_in_order(samples, world, batch_size):
    shards = [shard_range(samples, rank, world, batch_size) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(samples))  # once each, in order
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
    # a slice starts where one process's batch starts: the same batches, the same embeddings
    assert all(shard.start % batch_size == 0 for shard in shards if len(shard))
    batches = [-(-len(shard) // batch_size) for shard in shards]
    assert max(batches) - min(batches) <= 1 and sum(batches) == -(-samples // batch_size)


def test_slices_of_a_real_size():
    sizes = [len(shard_range(1_000_000, r, 8, 256)) for r in range(8)]  # 3907 batches
    assert sizes == [124_928, 124_928, 125_184, 124_928, 124_928, 125_184, 124_928, 124_992]
    assert sum(sizes) == 1_000_000


def test_shard_of_a_rank_outside_the_world_is_an_error():
    with pytest.raises(ValueError):
        shard_range(10, 2, 2)


@pytest.mark.parametrize(
    "out, form",
    [
        ("e.npy", "npy"),
        ("e.parquet", "parquet"),
        ("embeddings", "folder"),
        ("x.parquet/", "folder"),
        ("runs/emb/", "folder"),
    ],
)
def test_out_names_the_form(out, form):
    assert output_form(out) == form


def test_an_unknown_suffix_is_refused():
    with pytest.raises(UserError, match="--out must be a .npy or .parquet file, or a folder"):
        output_form("emb.csv")


# ------------------------------------------------------------------------------- parts and merge


class Vectors(torch.utils.data.Dataset):
    """``n`` labelled 6-vectors named like files, as an evaluation data set is."""

    classes = ["cat", "dog", "owl"]

    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i]

    def sample_ids(self) -> list[str]:
        return [f"data/{i:04d}.png" for i in range(len(self))]


class Pooler(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.proj = torch.nn.Linear(6, 4)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


META = {"encoder": "step3-target", "run": "/runs/r", "classes": Vectors.classes}


def embed_like_ranks(
    dataset, staging: Path, world: int, group_rows: int = 2, seen: list[int] | None = None
) -> list[Path]:
    """What each rank of ``run_embed`` does, batches of 2: embed its slice into its part, a row
    group every ``group_rows`` rows; then rank 0's check of the parts. ``seen``: how many
    samples each rank found (default: the data set's length)."""
    rows = Rows(dataset, Pooler(), batch_size=2, device=torch.device("cpu"))
    for rank in range(world):
        shard = shard_range(len(dataset), rank, world, 2)
        if len(shard):
            path = staging / part_name(rank, world)
            staging.mkdir(exist_ok=True)
            found = seen[rank] if seen else len(dataset)
            with ParquetRows(path, {**META, "rows": found}, group_rows) as sink:
                rows.write(shard, sink, None)
    return staged_parts(staging, len(dataset), world, 2)


def embed_in_one(dataset, out: Path) -> None:
    rows = Rows(dataset, Pooler(), batch_size=5, device=torch.device("cpu"))
    with ParquetRows(out, {**META, "rows": len(dataset)}) as sink:
        rows.write(range(len(dataset)), sink, None)


def test_parts_merge_and_publish_to_the_rows_of_one_process(tmp_path):
    dataset = Vectors(11)
    embed_in_one(dataset, tmp_path / "one.parquet")
    one = read_embeddings(tmp_path / "one.parquet")
    assert one.features.shape == (11, 4) and one.ids == dataset.sample_ids()
    assert one.class_names[:4] == ["cat", "dog", "owl", "cat"] and one.metadata == {
        **META,
        "rows": 11,
    }

    parts = embed_like_ranks(dataset, tmp_path / "staging", world=3)
    assert [p.name for p in parts] == [part_name(r, 3) for r in range(3)]
    assert [pq.read_metadata(p).num_rows for p in parts] == [4, 4, 3]  # 2 + 2 + 2 batches
    assert pq.ParquetFile(parts[1]).num_row_groups == 2  # written as it came, 2 rows a group
    assert pq.read_table(parts[2]).column("index").to_pylist() == [8, 9, 10]

    merge_parts(parts, tmp_path / "m.parquet", "parquet", {**META, "rows": 11}, 11)
    merge_parts(parts, tmp_path / "m.npy", "npy", {**META, "rows": 11}, 11)
    written = publish_folder(parts, tmp_path / "folder", {**META, "rows": 11, "processes": 3})
    assert written["parts"] == 3 and written["dim"] == 4
    assert not any(p.exists() for p in parts)  # moved, not copied

    for form in ("m.parquet", "m.npy", "folder"):
        got = read_embeddings(tmp_path / form)
        assert np.array_equal(got.features, one.features), form
        assert got.ids == one.ids and got.class_names == one.class_names, form
        assert got.labels.tolist() == [i % 3 for i in range(11)], form
    assert read_embeddings(tmp_path / "m.parquet").metadata["encoder"] == "step3-target"
    csv_rows = (tmp_path / "m.index.csv").read_text().splitlines()
    assert csv_rows[:2] == ["index,id,label,class", "0,data/0000.png,0,cat"] and len(csv_rows) == 12

    # the folder, as other tools read it: every row once, in input order by file name
    frame = pd.read_parquet(tmp_path / "folder")
    assert frame["index"].tolist() == list(range(11))
    assert frame["id"].tolist() == dataset.sample_ids()
    manifest = json.loads((tmp_path / "folder" / MANIFEST).read_text())
    assert manifest["parts"] == [part_name(r, 3) for r in range(3)]
    assert manifest["part_rows"] == [4, 4, 3] and manifest["rows"] == 11


def test_fewer_inputs_than_processes_leave_the_idle_ranks_without_a_part(tmp_path):
    parts = embed_like_ranks(Vectors(5), tmp_path / "staging", world=4)  # 3 batches
    assert [p.name for p in parts] == [part_name(r, 4) for r in (1, 2, 3)]  # rank 0's slice: []
    publish_folder(parts, tmp_path / "out", {**META, "rows": 5})
    assert read_embeddings(tmp_path / "out").ids == [f"data/{i:04d}.png" for i in range(5)]
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_a_missing_or_short_part_is_named(tmp_path):
    dataset = Vectors(10)
    staging = tmp_path / "staging"
    parts = embed_like_ranks(dataset, staging, world=2)
    parts[1].unlink()
    with pytest.raises(DataError, match=r"part-00001-of-00002.parquet' is missing: rank 1"):
        staged_parts(staging, len(dataset), 2, batch_size=2)
    with pytest.raises(DataError, match=r"holds 4 rows, expected 5"):
        staged_parts(staging, 10, 2, batch_size=1)  # rank 0: 5 batches of 1, not 2 of 2
    # the rows fit, but rank 1 listed another number of samples than rank 0
    with pytest.raises(DataError, match="rank 1 found 11 samples in the data, rank 0 10"):
        embed_like_ranks(dataset, tmp_path / "other", world=2, seen=[10, 11])


def test_a_new_embedding_replaces_a_previous_ones_parts_and_never_foreign_files(tmp_path):
    out = tmp_path / "emb"
    old = embed_like_ranks(Vectors(9), tmp_path / "old", world=5)
    publish_folder(old, out, {**META, "rows": 9})
    check_output(out, "folder")  # a previous embedding: may be replaced
    new = embed_like_ranks(Vectors(7), tmp_path / "new", world=2)
    publish_folder(new, out, {**META, "rows": 7})
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, *(part_name(r, 2) for r in (0, 1))]
    assert len(read_embeddings(out).ids) == 7

    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files that are not embedding parts"):
        check_output(out, "folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_output(out / "notes.txt", "folder")


def test_staging_sits_hidden_beside_the_output(tmp_path):
    assert staging_folder(tmp_path / "emb.parquet", 4) == tmp_path / ".emb.parquet.parts-of-4"


def test_features_with_rows_missing_or_repeated_are_refused(tmp_path):
    dataset = Vectors(8)
    out = tmp_path / "emb"
    publish_folder(embed_like_ranks(dataset, tmp_path / "s", world=2), out, {**META, "rows": 8})
    (out / MANIFEST).rename(tmp_path / "manifest")
    with pytest.raises(DataError, match="has no _manifest.json"):
        read_embeddings(out)
    (tmp_path / "manifest").rename(out / MANIFEST)
    shutil.copy(out / part_name(0, 2), tmp_path / "part0")
    (out / part_name(0, 2)).unlink()
    with pytest.raises(DataError, match="lists missing part-00000-of-00002"):
        read_embeddings(out)
    # the same rows twice: a file that is not one embedding
    table = pq.read_table(tmp_path / "part0")
    twice = pq.ParquetWriter(tmp_path / "twice.parquet", table.schema)
    twice.write_table(table)
    twice.write_table(table)
    twice.close()
    with pytest.raises(DataError, match=r"not 0..7 once each \(4 repeated"):
        read_embeddings(tmp_path / "twice.parquet")
    # rows missing at the end: the count embed recorded says so
    with pytest.raises(DataError, match="hold 4 rows, but embed wrote 8"):
        read_embeddings(tmp_path / "part0")


def test_multi_label_rows_keep_their_label_lists(tmp_path):
    class MultiLabel(Vectors):
        def __getitem__(self, i):
            return self.x[i], torch.tensor([1, 0, i % 2])

    parts = embed_like_ranks(MultiLabel(5), tmp_path / "s", world=2)
    merge_parts(parts, tmp_path / "m.parquet", "parquet", {}, 5)
    rows = read_embeddings(tmp_path / "m.parquet")
    assert rows.labels.tolist()[:2] == [[1, 0, 0], [1, 0, 1]] and rows.class_names[0] == ""


# ------------------------------------------------------------------------------- with a run


def write_images(root: Path, per_class: int, seed: int) -> None:
    """Class folders of 16x16 PNGs whose colour says the class (0 red, 1 green, 2 blue)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(3):
        (root / str(c)).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (16, 16, 3))
            pixels[..., c] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / str(c) / f"{i:03d}.png")


@pytest.fixture(scope="module")
def images_and_run(tmp_path_factory):
    from jepactl.recipe import load_recipe
    from jepactl.train import pretrain

    root = tmp_path_factory.mktemp("sharded")
    write_images(root / "train", 12, seed=0)
    write_images(root / "test", 5, seed=1)
    run = root / "run"
    overrides = [
        *TINY_IMAGE_OVERRIDES,
        "train.max_steps=2",
        "probe.batch_size=8",  # 36 training images: 5 batches, 2 for rank 0 and 3 for rank 1
        f"data.path={root / 'train'}",
    ]
    pretrain(load_recipe("image/ijepa-cpu", overrides), run, quiet=True)
    return root, run


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_probe_on_embed_output_equals_the_probe_that_computes_features(images_and_run, tmp_path):
    root, run = images_and_run
    train, test = root / "train", root / "test"
    run_embed(run, str(train), tmp_path / "train.parquet")
    run_embed(run, str(test), tmp_path / "test")  # a folder
    run_embed(run, str(train), tmp_path / "train.npy")

    direct = cli("probe", run, "--data", train, "--test", test, "--json")
    cached = cli(
        "probe", run, "--features", tmp_path / "train.parquet", "--test-features",
        tmp_path / "test", "--json",
    )  # fmt: skip
    assert set(cached) == {"command", "run", "recipe", "results", "settings"}
    assert cached["settings"]["features"] == str(tmp_path / "train.parquet")
    assert cached["results"]["encoder"] == direct["results"]["encoder"] == "step2-target"
    assert cached["results"]["train_samples"] == 36 and cached["results"]["test_samples"] == 15
    same = {k: v for k, v in direct["results"].items() if k != "data"}
    assert {k: v for k, v in cached["results"].items() if k != "data"} == same

    # no test features: the seeded split the direct probe draws, on either file form
    split = cli("probe", run, "--data", train, "--seeds", 2, "--json")["results"]
    for features in ("train.parquet", "train.npy"):
        got = cli("probe", run, "--features", tmp_path / features, "--seeds", 2, "--json")
        assert got["results"]["test_samples"] == 7  # 20% of 36
        assert {k: v for k, v in got["results"].items() if k not in ("data", "encoder")} == {
            k: v for k, v in split.items() if k not in ("data", "encoder")
        }

    # labels from a CSV keyed like the images: the rows it lists, as the direct probe keeps
    labels = tmp_path / "labels.csv"
    listed = [f"{c}/{i:03d}.png,{'warm' if c == '0' else 'cold'}" for c in "012" for i in range(6)]
    labels.write_text("file,label\n" + "\n".join(listed) + "\n")
    direct = cli("probe", run, "--data", train, "--labels", labels, "--json")["results"]
    cached = cli(
        "probe", run, "--features", tmp_path / "train.parquet", "--labels", labels, "--json"
    )
    assert cached["results"]["train_classes"] == direct["train_classes"] == "cold=8 warm=6"
    assert cached["results"]["test_classes"] == "cold=4 warm=0"
    assert {k: v for k, v in cached["results"].items() if k not in ("data",)} == {
        k: v for k, v in direct.items() if k not in ("data",)
    }


def test_probe_on_features_refuses_options_that_need_the_encoder(images_and_run, tmp_path):
    root, run = images_and_run
    run_embed(run, str(root / "test"), tmp_path / "t.parquet")
    runner = CliRunner()
    given = runner.invoke(app, ["probe", str(run), "--features", str(tmp_path / "t.parquet"),
                                "--data", str(root)])  # fmt: skip
    assert given.exit_code == 2 and "probe --features does not use --data" in given.stderr
    alone = runner.invoke(app, ["probe", str(run), "--test-features", str(tmp_path / "t.parquet")])
    assert alone.exit_code == 2 and "--test-features needs --features" in alone.stderr
    missing = runner.invoke(app, ["probe", str(run), "--features", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "none' do not exist" in missing.stderr


# ------------------------------------------------------------------------------- 2 processes


@pytest.mark.slow
def test_two_processes_embed_every_input_once_in_order_and_probe_the_same(images_and_run, tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate launcher not installed")
    root, run = images_and_run
    train = root / "train"
    files = sorted(str(p) for p in train.rglob("*.png"))  # the image folder's input order
    base = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "jepactl", "embed",
            str(run), "--data", str(train), "--json", "--out"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    documents = {}
    for out in ("emb/", "emb.npy"):
        done = subprocess.run(
            [*base, str(tmp_path / out)], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        documents[out] = json.loads(done.stdout)  # rank 0 alone prints
    assert documents["emb/"]["results"]["processes"] == 2
    assert (
        documents["emb/"]["results"]["parts"] == 2 and documents["emb/"]["results"]["samples"] == 36
    )

    run_embed(run, str(train), tmp_path / "one.parquet")
    one = pd.read_parquet(tmp_path / "one.parquet")
    sharded = pd.read_parquet(tmp_path / "emb")
    assert len(sharded) == len(files) == 36
    assert sharded["index"].tolist() == list(range(36))  # every input once, in input order
    assert sharded["id"].tolist() == files == one["id"].tolist()
    assert sharded["class"].tolist() == [str(i // 12) for i in range(36)]
    expected = np.stack(one["embedding"])
    assert np.allclose(np.stack(sharded["embedding"]), expected, atol=1e-5)
    assert np.allclose(np.load(tmp_path / "emb.npy"), expected, atol=1e-5)
    # whole batches per rank: each batch is the one process's batch, so equal to the bit here
    assert np.array_equal(np.stack(sharded["embedding"]), expected)
    index_csv = pd.read_csv(tmp_path / "emb.index.csv")
    assert index_csv["index"].tolist() == list(range(36)) and index_csv["id"].tolist() == files
    manifest = json.loads((tmp_path / "emb" / MANIFEST).read_text())
    assert manifest["part_rows"] == [16, 20] and manifest["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "emb",
        "emb.index.csv",
        "emb.npy",
        "one.parquet",
    ]  # fmt: skip  -- no staging folder left

    run_embed(run, str(root / "test"), tmp_path / "test.parquet")
    direct = cli("probe", run, "--data", train, "--test", root / "test", "--json")["results"]
    for features in ("emb", "emb.npy"):
        cached = cli("probe", run, "--features", tmp_path / features, "--test-features",
                     tmp_path / "test.parquet", "--json")["results"]  # fmt: skip
        for metric in ("linear_accuracy", "knn_accuracy", "linear_balanced_accuracy"):
            assert cached[metric] == pytest.approx(direct[metric], abs=1e-6), (features, metric)


@pytest.mark.slow
def test_a_process_that_fails_stops_the_job_and_leaves_the_previous_output(
    images_and_run, tmp_path
):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate launcher not installed")
    root, run = images_and_run
    out = tmp_path / "emb.parquet"
    run_embed(run, str(root / "train"), out)
    before = out.read_bytes()
    # rank 1 cannot write its part: a folder sits where the part goes
    (staging_folder(out, 2) / part_name(1, 2)).mkdir(parents=True)
    done = subprocess.run(
        [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "jepactl", "embed", str(run),
         "--data", str(root / "train"), "--which", "context", "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    # the failing rank's one line; rank 0 adds its own unless the launcher, which stops the
    # job when one process fails, terminates it first (a race that a loaded machine loses)
    cannot = [e for e in errors if e.startswith("error: cannot write '") and "Is a directory" in e]
    rank0 = [e for e in errors if "rank 0: another process stopped before writing its part" in e]
    assert len(cannot) == 1 and len(rank0) <= 1 and len(errors) == len(cannot) + len(rank0)
    assert "src/jepactl" not in done.stderr  # no traceback of ours
    assert out.read_bytes() == before  # nothing published
