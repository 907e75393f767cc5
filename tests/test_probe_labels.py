"""`jepactl probe RUN --data D --labels FILE.csv`: labels given at probe time, from a CSV of
`file,label` (images, SAR chips) or `record,label` (ECG) rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_ecg_method import TINY as TINY_ECG
from test_sar_method import TINY_SAR, speckled_chips
from test_tabular_method import TINY as TINY_TABULAR
from test_tabular_method import synthetic
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app
from jepactl.data.label_files import read_label_file
from jepactl.errors import DataError, UserError
from jepactl.registry import METHODS, method_spec


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def json_of(*args) -> dict:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def images(folder: Path, names: list[str]) -> None:
    """Flat, unlabelled 16 px images: names starting with 'd' dark, the others light."""
    rng = np.random.default_rng(0)
    for name in names:
        base = 40 if Path(name).name.startswith("d") else 210
        pixels = np.clip(base + rng.normal(0, 10, (16, 16, 3)), 0, 255).astype(np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """An image/ijepa-cpu run pretrained (2 steps) on a folder without class sub-folders."""
    root = tmp_path_factory.mktemp("labels")
    data = root / "imgs"
    images(
        data,
        [f"d{i}.png" for i in range(10)]
        + [f"l{i}.png" for i in range(10)]
        + ["more/d10.png", "more/l10.png", "x0.png", "x1.png"],
    )
    json_of(
        "pretrain",
        "image/ijepa-cpu",
        "--data",
        data,
        "--out",
        root / "run",
        "--max-steps",
        2,
        "--quiet",
        "--json",
        *TINY_IMAGE_OVERRIDES,
    )
    return root, data


def test_an_unlabelled_image_folder_probes_on_the_csv_classes(image_run, caplog):
    root, data = image_run
    rows = (
        ["file,label"]
        + [f"d{i}.png,dark" for i in range(10)]
        + [f"l{i}.png,light" for i in range(10)]
        + ["more/d10.png,dark", "./more/l10.png,light"]
    )
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        out = json_of(
            "probe",
            root / "run",
            "--data",
            data,
            "--labels",
            root / "labels.csv",
            "probe.batch_size=64",
            "--json",
        )
    results = out["results"]
    assert out["settings"]["labels"] == str(root / "labels.csv")
    assert "labels=" in results["data"]
    # x0.png and x1.png are not in the CSV: left out, with one notice giving the count.
    notices = [r.getMessage() for r in caplog.records if "not in label file" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("2 of 24 files")
    train = dict(kv.split("=") for kv in results["train_classes"].split())
    test = dict(kv.split("=") for kv in results["test_classes"].split())
    assert list(train) == list(test) == ["dark", "light"]
    assert sum(map(int, train.values())) == results["train_samples"]
    assert sum(map(int, test.values())) == results["test_samples"]
    assert results["train_samples"] + results["test_samples"] == 22
    for key in ("linear_accuracy", "knn_accuracy", "linear_balanced_accuracy"):
        assert 0.0 <= results[key] <= 1.0


def test_one_csv_labels_both_data_and_test(image_run, tmp_path):
    root, _ = image_run
    train, test = tmp_path / "train", tmp_path / "test"
    images(train, [f"d{i}.png" for i in range(6)] + [f"l{i}.png" for i in range(6)])
    images(test, ["d100.png", "d101.png", "l100.png"])
    names = [p.name for p in sorted(train.glob("*.png")) + sorted(test.glob("*.png"))]
    # No header row; the bare names are unique in each folder.
    (tmp_path / "labels.csv").write_text(
        "".join(f"{n},{'dark' if n.startswith('d') else 'light'}\n" for n in names)
    )
    results = json_of(
        "probe",
        root / "run",
        "--data",
        train,
        "--test",
        test,
        "--labels",
        tmp_path / "labels.csv",
        "--json",
    )["results"]
    assert results["train_classes"] == "dark=6 light=6"
    assert results["test_classes"] == "dark=2 light=1"
    assert results["test_samples"] == 3


def test_a_csv_naming_no_file_of_the_data_is_one_line(image_run, tmp_path):
    root, data = image_run
    (tmp_path / "labels.csv").write_text("file,label\nnope.png,dark\nother/x.png,light\n")
    result = cli("probe", root / "run", "--data", data, "--labels", tmp_path / "labels.csv")
    assert result.exit_code == 2
    assert "no file under" in result.output and "labels.csv" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text, why",
    [
        ("file,label\nd0.png,dark\nd1.png\n", "line 3: expected 'file,label'"),
        ("file,label\nd0.png,dark,extra\n", "line 2: expected 'file,label'"),
        ("d0.png,\n", "line 1: expected 'file,label'"),
        ("", "is empty"),
        ("file,label\n\n", "is empty"),
        ("d0.png,dark\nd0.png,light\n", "line 2: 'd0.png' is labelled 'light' but line 1"),
    ],
)
def test_a_malformed_csv_is_one_line_naming_the_file_and_line(image_run, tmp_path, text, why):
    root, data = image_run
    (tmp_path / "bad.csv").write_text(text)
    result = cli("probe", root / "run", "--data", data, "--labels", tmp_path / "bad.csv")
    assert result.exit_code == 2, result.output
    assert why in result.output and str(tmp_path / "bad.csv") in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_label_file_is_one_line(image_run, tmp_path):
    root, data = image_run
    result = cli("probe", root / "run", "--data", data, "--labels", tmp_path / "none.csv")
    assert (
        result.exit_code == 2
        and "label file" in result.output
        and "does not exist" in result.output
    )


def test_headers_are_detected_and_keys_normalised(tmp_path):
    (tmp_path / "a.csv").write_text("Record,Label\r\n./g1\\r7, AF \r\nr8,N\r\n")
    table = read_label_file(tmp_path / "a.csv", "record")
    assert table.labels == {"g1/r7": "AF", "r8": "N"} and table.classes == ["AF", "N"]
    (tmp_path / "b.csv").write_text("r1,AF\n")  # no header: the first row is data
    assert read_label_file(tmp_path / "b.csv", "record").labels == {"r1": "AF"}
    with pytest.raises(DataError, match="line 1"):
        (tmp_path / "c.csv").write_text("r1;AF\n")
        read_label_file(tmp_path / "c.csv", "record")


@pytest.mark.slow
def test_ecg_records_take_labels_from_a_record_label_csv(tmp_path, caplog):
    run = tmp_path / "run"
    json_of(
        "pretrain",
        "ecg/ecg-jepa-cpu",
        "--out",
        run,
        "--max-steps",
        2,
        "--quiet",
        "--json",
        *TINY_ECG,
    )
    # The embedded MIT-BIH sample has .atr beat annotations; --labels replaces them with
    # per-record classes. Record 232 is not listed: left out with a notice.
    records = ["118", "119", "124", "200", "208", "209", "213", "223", "233"]
    labels = tmp_path / "records.csv"
    labels.write_text(
        "record,label\n" + "".join(f"{r},{'even' if int(r) % 2 == 0 else 'odd'}\n" for r in records)
    )
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        out = json_of(
            "probe",
            run,
            "--labels",
            labels,
            "--head",
            "linear",
            "probe.max_train_per_class=20",
            "probe.max_test_per_class=20",
            "probe.num_workers=0",
            "--json",
        )
    results = out["results"]
    assert out["settings"]["labels"] == str(labels)
    assert results["task"] == "record labels" and "train_beats" not in results
    train = dict(kv.split("=") for kv in results["train_records"].split())
    test = dict(kv.split("=") for kv in results["test_records"].split())
    assert list(train) == list(test) == ["even", "odd"]
    # A seeded 80/20 split of the 9 listed records.
    assert sum(map(int, train.values())) == 7 and sum(map(int, test.values())) == 2
    assert 0.0 <= results["linear_accuracy"] <= 1.0
    notices = [r.getMessage() for r in caplog.records if "not in label file" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("1 of 10 records")


def test_sar_chips_take_labels_from_a_csv_of_paths_relative_to_the_data_folder(tmp_path):
    chips = speckled_chips(tmp_path / "chips")  # train/ and test/ splits with class folders
    run = tmp_path / "run"
    json_of(
        "pretrain",
        "sar/sar-jepa-cpu",
        "--data",
        chips,
        *TINY_SAR,
        "--out",
        run,
        "--max-steps",
        2,
        "--quiet",
        "--json",
    )
    # The CSV replaces the class folders: chips 0-1 are "small", 2-3 "large", whatever the
    # folder. Bare names repeat across folders, so the keys are relative paths.
    rows = [
        f"{p.relative_to(chips).as_posix()},{'small' if int(p.stem) < 2 else 'large'}"
        for p in sorted(chips.rglob("*.png"))
    ]
    (tmp_path / "chips.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    out = json_of(
        "probe", run, "--data", chips, "--labels", tmp_path / "chips.csv", "--shots", 2, "--json"
    )
    results = out["results"]
    assert results["train_classes"] == "large=4 small=4"
    assert results["test_classes"] == "large=4 small=4"
    assert out["settings"]["labels"] == str(tmp_path / "chips.csv")
    assert 0.0 <= results["linear_accuracy"] <= 1.0


def test_labels_on_a_tabular_run_are_refused_naming_the_target_column(tmp_path):
    train = synthetic(tmp_path / "train.csv", 200, 0)
    run = tmp_path / "run"
    json_of(
        "pretrain",
        "tabular/tjepa-cpu",
        "--data",
        train,
        "data.target=label",
        *TINY_TABULAR,
        "--out",
        run,
        "--max-steps",
        2,
        "--quiet",
        "--json",
    )
    (tmp_path / "labels.csv").write_text("file,label\nx,y\n")
    result = cli("probe", run, "--labels", tmp_path / "labels.csv")
    assert result.exit_code == 2
    assert "--labels" in result.output and "--target COLUMN" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_takes_a_label_file_or_says_what_to_use_instead(name):
    spec = method_spec(name)
    if spec.label_file:
        assert spec.require_label_file() in ("file,label", "record,label")
    else:
        assert spec.labels_from
        with pytest.raises(UserError, match=f"method '{name}' takes no label file: "):
            spec.require_label_file()
