"""Table reading, column roles, fitted preprocessing and target coding (data/tables.py, ...)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import pretrain_error
from jepactl.data.tables import TableDataConfig, column_roles, read_table
from jepactl.domains.tabular.preprocess import (
    MISSING_CODE,
    UNSEEN_CODE,
    TablePreprocessor,
    TargetCoding,
)
from jepactl.errors import DataError, RecipeError
from jepactl.recipe import load_recipe

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_sniffs_delimiter_strips_whitespace_and_reads_missing_markers(tmp_path):
    path = write(tmp_path / "t.csv", " a ; b ;c\n1; x ;?\n NA ;y; 2.5\n3;;NA\n")
    table = read_table(path, TableDataConfig())
    assert list(table.frame.columns) == ["a", "b", "c"]
    assert table.frame["b"].isna().tolist() == [False, False, True]
    assert table.frame["b"][:2].tolist() == ["x", "y"]
    assert table.frame["c"].isna().tolist() == [True, False, True]
    roles = column_roles(table, TableDataConfig())
    assert roles.numeric == ["a", "c"] and roles.categorical == ["b"]


def test_recipe_overrides_roles_and_target_is_never_a_feature(tmp_path):
    path = write(tmp_path / "t.csv", "id,code,v,y\n1,10,a,0\n2,20,b,1\n")
    cfg = TableDataConfig(target="y", categorical=["code"], drop=["id"])
    roles = column_roles(read_table(path, cfg), cfg)
    assert roles.numeric == [] and roles.categorical == ["code", "v"]
    with pytest.raises(RecipeError, match="data.numeric.*'nope'"):
        column_roles(read_table(path, cfg), TableDataConfig(numeric=["nope"]))


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("a,b\n", "header but no rows"),
        ("y\n1\n0\n", "no feature columns"),
    ],
)
def test_unusable_files_raise_one_line_data_errors(tmp_path, text, message):
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=message) as err:
        column_roles(read_table(path, TableDataConfig(target="y")), TableDataConfig(target="y"))
    assert "\n" not in str(err.value)


def test_missing_target_column_names_the_file_and_columns(tmp_path):
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="no target column 'income'.*columns: a, b"):
        column_roles(read_table(path, TableDataConfig()), TableDataConfig(target="income"))


def test_parquet_reads_and_nested_columns_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, None, 3.0], "c": ["a", "?", "b"]}), tmp_path / "f.parquet")
    table = read_table(str(tmp_path / "f.parquet"), TableDataConfig())
    assert table.frame["c"].isna().tolist() == [False, True, False]
    assert np.isnan(table.frame["x"][1])
    pq.write_table(pa.table({"x": [1, 2], "n": [[1, 2], [3]]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="column 'n' is nested"):
        read_table(str(tmp_path / "n.parquet"), TableDataConfig())


def test_datasets_folder_with_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {
            "train": Dataset.from_dict({"x": [1, 2, 3], "y": [0, 1, 0]}),
            "test": Dataset.from_dict({"x": [4], "y": [1]}),
        }
    ).save_to_disk(tmp_path / "ds")
    assert len(read_table(str(tmp_path / "ds"), TableDataConfig()).frame) == 3
    assert read_table(str(tmp_path / "ds"), TableDataConfig(), "test").frame["x"].tolist() == [4]


def test_preprocessing_imputes_median_flags_missing_and_reuses_training_stats(tmp_path):
    cfg = TableDataConfig()
    train = read_table(write(tmp_path / "a.csv", "n,c\n1,u\n3,v\n,u\n5,\n"), cfg)
    pre = TablePreprocessor.fit(train, column_roles(train, cfg))
    x = pre.transform(train)
    assert pre.token_names == ["n", "n__missing", "c"] and pre.cardinalities == [4]
    filled = np.array([1, 3, 3, 5.0])  # median of 1, 3, 5 fills the blank
    assert torch.allclose(x[:, 0], torch.tensor((filled - filled.mean()) / filled.std()).float())
    assert x[:, 1].tolist() == [0, 0, 1, 0]
    assert x[:, 2].tolist() == [2, 3, 2, MISSING_CODE]
    # New file: training statistics unchanged, an unseen category has its own code.
    new = read_table(write(tmp_path / "b.csv", "n,c\n3,w\n"), cfg)
    restored = TablePreprocessor(json.loads(json.dumps(pre.to_dict())))
    y = restored.transform(new)
    assert y[0, 0].item() == pytest.approx((3 - filled.mean()) / filled.std(), abs=1e-6)
    assert y[0, 2].item() == UNSEEN_CODE
    with pytest.raises(DataError, match="column 'n' row 2: 'abc' is not a number"):
        restored.transform(read_table(write(tmp_path / "c.csv", "n,c\n1,u\nabc,u\n"), cfg))


def test_quantile_transform_is_monotone_and_roughly_normal(tmp_path):
    values = np.random.default_rng(0).exponential(size=2000)
    path = tmp_path / "q.csv"
    pd.DataFrame({"v": values, "w": values * 2}).to_csv(path, index=False)
    table = read_table(str(path), TableDataConfig())
    pre = TablePreprocessor.fit(table, column_roles(table, TableDataConfig()), "quantile", 100)
    z = pre.transform(table)[:, 0]
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.1
    assert bool((z[np.argsort(values)].diff() >= -1e-6).all())


def test_target_coding_detects_task_and_reads_uci_trailing_periods(tmp_path):
    cfg = TableDataConfig()
    train = read_table(write(tmp_path / "a.csv", "x,y\n1,<=50K\n2,>50K\n"), cfg)
    test = read_table(write(tmp_path / "b.csv", "x,y\n1,>50K.\n2,<=50K.\n"), cfg)
    coding = TargetCoding.fit(train, "y")
    assert coding.task == "classification"
    assert coding.encode(test, "y")[0].tolist() == [1, 0]
    numbers = "\n".join(f"{i},{i * 1.5}" for i in range(60))
    reg = TargetCoding.fit(read_table(write(tmp_path / "r.csv", "x,y\n" + numbers), cfg), "y")
    assert reg.task == "regression" and reg.mean == pytest.approx(44.25)


@pytest.mark.skipif(not (SHARED / "tabular").is_dir(), reason="shared data not present")
def test_adult_columns_and_missing_counts():
    cfg = TableDataConfig(target="ltgt50k")
    table = read_table(str(SHARED / "tabular/adult/adult.data"), cfg)
    roles = column_roles(table, cfg)
    assert len(table.frame) == 32561
    assert len(roles.numeric) == 6 and len(roles.categorical) == 8
    assert int(table.frame["workclass"].isna().sum()) == 1836


def headerless_tsv(path: Path, rows: int = 40) -> list[list[str]]:
    """Write a benchmark-style TSV: no header, 0/1 label first, four float columns."""
    rng = np.random.default_rng(0)
    cells = [
        [str(int(rng.integers(2)))] + [f"{v:.3f}" for v in rng.normal(size=4)] for _ in range(rows)
    ]
    cells[0][2] = "?"  # a missing value in the first row is still data
    path.write_text("".join("\t".join(row) + "\n" for row in cells))
    return cells


def test_headerless_tsv_keeps_every_row_and_takes_the_target_by_position(tmp_path, caplog):
    cells = headerless_tsv(tmp_path / "h.tsv")
    cfg = TableDataConfig(target=0)
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        table = read_table(str(tmp_path / "h.tsv"), cfg)
    assert len(table.frame) == 40
    assert list(table.frame.columns) == ["col0", "col1", "col2", "col3", "col4"]
    assert table.frame["col1"][0] == cells[0][1] and pd.isna(table.frame["col2"][0])
    assert cfg.target == "col0"  # the position became the name the run's recipe records
    roles = column_roles(table, cfg)
    assert roles.numeric == ["col1", "col2", "col3", "col4"] and roles.categorical == []
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1
    assert (
        "'" + str(tmp_path / "h.tsv") + "' has no header row (first row is all numbers): "
        "columns named col0..col4; data.target=0 is col0" == notices[0]
    )
    last = TableDataConfig(target=-1)
    assert column_roles(read_table(str(tmp_path / "h.tsv"), last), last).numeric[-1] == "col3"
    assert TargetCoding.fit(table, cfg.target).classes == ["0", "1"]


def test_header_rows_are_kept_and_data_header_forces_either_reading(tmp_path, caplog):
    headed = write(tmp_path / "a.csv", "a,b,y\n1.5,2,0\n2.5,3,1\n")
    pandas_names = write(tmp_path / "p.csv", "0,1,2\n0.5,1.5,2.5\n3.5,4.5,5.5\n")
    mixed = write(tmp_path / "m.csv", "x,colour\n1,red\n2,blue\n")
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        for path, columns in (
            (headed, ["a", "b", "y"]),
            (pandas_names, ["0", "1", "2"]),
            (mixed, ["x", "colour"]),
        ):
            table = read_table(path, TableDataConfig())
            assert list(table.frame.columns) == columns and len(table.frame) == 2
        assert column_roles(
            read_table(headed, TableDataConfig(target=2)), TableDataConfig(target="y")
        ).numeric == ["a", "b"]
        forced = read_table(headed, TableDataConfig(header=False))
        assert list(forced.frame.columns) == ["col0", "col1", "col2"] and len(forced.frame) == 3
        assert forced.frame["col0"][0] == "a"
        headerless_tsv(tmp_path / "h.tsv")
        named = read_table(str(tmp_path / "h.tsv"), TableDataConfig(header=True))
        assert len(named.frame) == 39
    assert not caplog.records  # only an auto decision for "no header" is announced


def test_recipe_reads_target_positions_as_integers_and_header_as_a_switch():
    data = load_recipe("tabular", ["data.target=0", "data.header=false"]).data
    assert data.target == 0 and data.header is False
    data = load_recipe("tabular", ["data.target=income"]).data
    assert data.target == "income" and data.header == "auto"
    with pytest.raises(RecipeError, match="data.header"):
        load_recipe("tabular", ["data.header=maybe"])


def test_target_position_out_of_range_is_one_data_error(tmp_path):
    headerless_tsv(tmp_path / "h.tsv")
    with pytest.raises(DataError, match=r"data.target=7 is out of range: .* has 5 columns") as err:
        read_table(str(tmp_path / "h.tsv"), TableDataConfig(target=7))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_corrupt_parquet_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    broken = tmp_path / "data" / "train-00000.parquet"
    broken.write_bytes(os.urandom(3000))
    with pytest.raises(DataError, match=f"cannot read parquet '{broken}': .*magic bytes"):
        read_table(str(tmp_path / "data"), TableDataConfig())
    result = pretrain_error("tabular/tjepa-cpu", tmp_path / "data", tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read parquet '{broken}': ")
